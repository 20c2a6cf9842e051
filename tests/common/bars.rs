//! Generated images that a network learns in a few steps: three concepts,
//! each a bar of its own hue in its own third of a 36 px square.

use std::path::Path;

/// Writes `per_concept` images of each of the concepts `c0`, `c1`, `c2`
/// under `root`.
pub fn write_bars(root: &Path, per_concept: u32) {
    let hues = [[220u8, 40, 40], [40, 200, 60], [50, 80, 230]];
    for (c, hue) in hues.iter().enumerate() {
        let folder = root.join(format!("c{c}"));
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..per_concept {
            let img = image::RgbImage::from_fn(36, 36, |x, y| {
                if (x / 12) as usize == c && y > 6 + i % 4 && y < 26 {
                    image::Rgb(*hue)
                } else {
                    image::Rgb([(x * 4 % 50) as u8, 20, (y * 3 % 40 + i) as u8])
                }
            });
            img.save(folder.join(format!("{i}.png"))).unwrap();
        }
    }
}
