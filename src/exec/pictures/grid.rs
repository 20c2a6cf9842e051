//! The search grid: each query with its nearest neighbours, as thumbnails
//! embedded in the SVG.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::svg::{esc, svg_open};

/// One query of a search grid: the query image and its neighbours with
/// their scores and whether they share a concept (`None`: unknown).
pub(in crate::exec) struct QueryRow {
    pub query: PathBuf,
    pub neighbours: Vec<(PathBuf, f32, Option<bool>)>,
}

const THUMB: u32 = 72;

/// A square thumbnail as a PNG data URI, or `None` if the image cannot be read.
fn thumbnail(path: &Path) -> Option<String> {
    let img = image::open(path).ok()?.to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let square =
        image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let small =
        image::imageops::resize(&square, THUMB, THUMB, image::imageops::FilterType::Triangle);
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(small)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .ok()?;
    Some(format!("data:image/png;base64,{}", base64(&bytes)))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Queries (left column) and their neighbours, with a green frame for a
/// neighbour sharing the query's concept and a red one for another concept.
pub(in crate::exec) fn search_grid(title: &str, rows: &[QueryRow]) -> String {
    let cols = rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0);
    let (cw, ch) = (THUMB as f64 + 14.0, THUMB as f64 + 30.0);
    let (w, h) = (
        40.0 + cw * (cols + 1) as f64 + 20.0,
        50.0 + ch * rows.len() as f64,
    );
    let mut svg = svg_open(w, h);
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\
         <text x=\"10\" y=\"40\" fill=\"#777\">query, then its nearest neighbours (cosine); green: same concept, red: another</text>",
        esc(title)
    );
    for (i, row) in rows.iter().enumerate() {
        let y = 50.0 + i as f64 * ch;
        let cells = std::iter::once((&row.query, None, None)).chain(
            row.neighbours
                .iter()
                .map(|(p, s, same)| (p, Some(*s), *same)),
        );
        for (j, (path, score, same)) in cells.enumerate() {
            let x = 10.0 + j as f64 * cw + if j > 0 { 30.0 } else { 0.0 };
            let frame = match (j, same) {
                (0, _) => "#333",
                (_, Some(true)) => "#2e9d4b",
                (_, Some(false)) => "#d6343a",
                _ => "#aaa",
            };
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{frame}\" stroke-width=\"3\"/>",
                x - 2.0,
                y - 2.0,
                THUMB + 4,
                THUMB + 4
            );
            match thumbnail(path) {
                Some(uri) => {
                    let _ = writeln!(
                        svg,
                        "<image x=\"{x:.1}\" y=\"{y:.1}\" width=\"{THUMB}\" height=\"{THUMB}\" href=\"{uri}\"/>"
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#999\">unreadable</text>",
                        x + 6.0,
                        y + 36.0
                    );
                }
            }
            let caption = match score {
                Some(s) => format!("{s:.3}"),
                None => "query".to_string(),
            };
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#333\">{caption}</text>",
                x + THUMB as f64 / 2.0,
                y + THUMB as f64 + 16.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
