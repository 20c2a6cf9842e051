//! Decoding and preprocessing images, on worker threads ahead of the
//! training step (feature `train`).
//!
//! Preprocessing: resize so the shorter side is `image_size`, then a random
//! `image_size` square crop and a random horizontal flip for training, or the
//! centre crop for evaluation; scale to [0, 1] and normalise with the ImageNet
//! mean and deviation; channels first. The randomness of each image comes from
//! (seed, epoch, index) alone, so results never depend on thread timing.

use crate::paths::ShowPath;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use image::imageops::FilterType;

use super::Rng;

pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How an image is cropped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Crop {
    /// A random crop drawn from this seed, flipped half the time when `flip`.
    Random {
        seed: u64,
        flip: bool,
    },
    Center,
}

/// An image that could not be read, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct BadImage {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for BadImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read image `{}`: {}",
            self.path.shown(),
            self.reason
        )
    }
}

/// `path` decoded whole. A JPEG whose data ends before its end-of-image
/// marker is refused: the decoder would fill the missing rows in with grey
/// and say nothing, and a network would train on them.
fn decode(path: &Path) -> Result<image::DynamicImage, BadImage> {
    let bad = |reason: String| BadImage {
        path: path.to_path_buf(),
        reason,
    };
    regular(path)?;
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    decode_bytes(path, &bytes)
}

/// The bytes of the image at `path` decoded whole (see [`decode`]).
fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<image::DynamicImage, BadImage> {
    let bad = |reason: String| BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && jpeg_cut_short(bytes) {
        return Err(bad(format!(
            "corrupt JPEG image: the file ends before the image does ({} bytes, no end-of-image marker); copy it again or remove it",
            bytes.len()
        )));
    }
    reader.decode().map_err(|e| match e {
        // More pixels than the decoder may hold: said with the image's size
        // (its header, read again), not as "Memory limit exceeded".
        image::ImageError::Limits(_) => {
            let size = image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_dimensions().ok());
            bad(match size {
                Some((w, h)) => {
                    format!("the image is too large to decode ({w} × {h} pixels); scale it down")
                }
                None => "the image is too large to decode; scale it down".to_string(),
            })
        }
        e => bad(why(e)),
    })
}

/// Whether a JPEG's bytes end before its end-of-image marker. Walks the
/// segments from the start-of-image marker: each marker is `FF xx`, all but
/// the standalone ones followed by a two-byte length; after a start of scan
/// (`FF DA`) comes entropy-coded data, in which `FF` is followed by `00` (a
/// stuffed byte) or a restart marker, until the next marker. Bytes after the
/// end-of-image marker (a phone's appended video, say) are not looked at; a
/// file malformed otherwise is left to the decoder.
fn jpeg_cut_short(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // The next marker, after any fill bytes.
        match b.get(i) {
            None => return true,
            Some(0xFF) => {}
            Some(_) => return false,
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return true;
        };
        i += 1;
        match marker {
            0xD9 => return false,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = b.get(i..i + 2) else {
            return true;
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return false;
        }
        i += len;
        if i > b.len() {
            return true;
        }
        if marker == 0xDA {
            // Entropy-coded data, up to the next marker.
            loop {
                let Some(at) = b[i..].iter().position(|&x| x == 0xFF) else {
                    return true;
                };
                let ff = i + at;
                match b.get(ff + 1) {
                    None => return true,
                    Some(0x00 | 0xD0..=0xD7) => i = ff + 2,
                    Some(_) => {
                        i = ff;
                        break;
                    }
                }
            }
        }
    }
}

/// Refuses what is not a regular, non-empty file: a named pipe or a device
/// would block or never end.
fn regular(path: &Path) -> Result<(), BadImage> {
    let bad = |e: std::io::Error| BadImage {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let m = std::fs::metadata(path).map_err(bad)?;
    if !m.is_file() {
        return Err(BadImage {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    if m.len() == 0 {
        return Err(BadImage {
            path: path.to_path_buf(),
            reason: "the file is empty".into(),
        });
    }
    Ok(())
}

/// Why an image could not be decoded, in words: a file that is no image of
/// a format wfrun reads is said to be so (the decoder's own words quote the
/// extension oddly, `."txt"`), other errors as the decoder says them.
fn why(e: image::ImageError) -> String {
    match e {
        image::ImageError::Unsupported(_) => {
            "not an image of a format wfrun reads (JPEG, PNG, WebP, BMP)".to_string()
        }
        // (A PNG, WebP or BMP cut short; the decoder says only "unexpected
        // end of file".)
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends before the image does (it was cut short); copy it again or remove it"
                .to_string()
        }
        // (Some decoders end their message with a line break.)
        e => tidy(e.to_string().trim_end()),
    }
}

/// A decoder's message in words: `Format error decoding Png: …` as
/// `corrupt PNG image: …`, and the PNG decoder's debug form of a chunk type
/// (`ChunkType { type: IHDR, critical: true, … }`) as its name.
fn tidy(message: &str) -> String {
    let mut text = match message
        .strip_prefix("Format error decoding ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((format, why)) => {
            let format = match format {
                "Png" => "PNG",
                "Jpeg" => "JPEG",
                "Bmp" => "BMP",
                other => other,
            };
            format!("corrupt {format} image: {why}")
        }
        None => message.to_string(),
    };
    const CHUNK: &str = "ChunkType { type: ";
    while let Some(start) = text.find(CHUNK) {
        let after = &text[start + CHUNK.len()..];
        let Some(end) = after.find('}') else { break };
        let name: String = after
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        text.replace_range(start..start + CHUNK.len() + end + 1, &name);
    }
    text
}

/// What [`survey`] found of one image: its width and height, or why it
/// cannot be used; and a digest of the file's bytes ([`contents_digest`]),
/// `None` where the file could not be read.
#[derive(Clone, Debug)]
pub struct Surveyed {
    pub size: Result<(u32, u32), BadImage>,
    pub contents: Option<u64>,
}

/// The width and height of every image of `paths`, in order, and a digest of
/// each file's bytes, read on `workers` threads: each file is read whole
/// once, its size taken from its header, or (`decode`) by decoding the whole
/// image, which also finds files corrupt past their header.
pub fn survey(paths: &[PathBuf], workers: usize, decode: bool) -> Vec<Surveyed> {
    let one = |path: &PathBuf| -> Surveyed {
        let bad = |reason: String| BadImage {
            path: path.clone(),
            reason,
        };
        let bytes =
            regular(path).and_then(|()| std::fs::read(path).map_err(|e| bad(e.to_string())));
        let contents = bytes.as_ref().ok().map(|b| contents_digest(b));
        let size = bytes.and_then(|bytes| {
            let (w, h) = if decode {
                let img = decode_bytes(path, &bytes)?;
                (img.width(), img.height())
            } else {
                image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
                    .with_guessed_format()
                    .map_err(|e| bad(e.to_string()))?
                    .into_dimensions()
                    .map_err(|e| bad(why(e)))?
            };
            if w == 0 || h == 0 {
                return Err(bad("the image is empty".into()));
            }
            if w.max(h) / w.min(h) > MAX_ASPECT {
                return Err(bad(format!(
                    "its sides are {w} × {h}, more than {MAX_ASPECT} to 1; crop it first"
                )));
            }
            Ok((w, h))
        });
        Surveyed { size, contents }
    };
    let chunk = paths.len().div_ceil(workers.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(paths.chunks(chunk))
            .flat_map(|(h, part)| {
                // A worker that panicked leaves its images unread, each said
                // so, rather than shifting the others' results.
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|path| Surveyed {
                            size: Err(BadImage {
                                path: path.clone(),
                                reason: "reading it failed unexpectedly".into(),
                            }),
                            contents: None,
                        })
                        .collect()
                })
            })
            .collect()
    })
}

/// A 64-bit digest of a file's bytes, eight at a time: it tells an image
/// edited or replaced under the same name from the one a checkpoint was
/// trained on (not a cryptographic hash; no one forges an image to fool it).
pub fn contents_digest(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, word: u64| ((h ^ word).wrapping_mul(K)).rotate_left(29);
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = mix(h, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = mix(h, u64::from_le_bytes(tail));
    h ^ (h >> 32)
}

/// The most one side of an image may exceed the other, as a ratio.
pub const MAX_ASPECT: u32 = 64;

/// Reads `path` and returns `3 × size × size` floats, channels first.
pub fn load(path: &Path, size: usize, crop: Crop) -> Result<Vec<f32>, BadImage> {
    let img = decode(path)?;
    preprocess(img.to_rgb8(), size, crop).map_err(|reason| BadImage {
        path: path.to_path_buf(),
        reason,
    })
}

/// What the network sees of a decoded image: the shorter side scaled to
/// `size` (a triangle filter), a `size × size` crop (the centre, or a random
/// one flipped half the time), scaled to 0–1 and normalised with ImageNet's
/// [`MEAN`] and [`STD`], channels first (RGB). The error says why an image
/// cannot be used.
pub fn preprocess(img: image::RgbImage, size: usize, crop: Crop) -> Result<Vec<f32>, String> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err("the image is empty".into());
    }
    // Scaled to a shorter side of `size`, a strip of 1 × 4,000,000 pixels
    // (8 KB as a PNG) would become 32 × 128,000,000: refused before resizing.
    if w.max(h) / w.min(h) > MAX_ASPECT {
        return Err(format!(
            "its sides are {w} × {h}, more than {MAX_ASPECT} to 1; crop it first"
        ));
    }
    let s = u32::try_from(size).map_err(|_| format!("a size of {size} pixels is too large"))?;
    let (nw, nh) = if w <= h {
        (
            s,
            ((h as u64 * s as u64 + w as u64 / 2) / w as u64).max(s as u64) as u32,
        )
    } else {
        (
            ((w as u64 * s as u64 + h as u64 / 2) / h as u64).max(s as u64) as u32,
            s,
        )
    };
    let img = if (nw, nh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, nw, nh, FilterType::Triangle)
    };
    // The crop's corner in the image padded by `pad` black pixels a side.
    let (x0, y0, flip, pad) = match crop {
        Crop::Center => ((nw - s) / 2, (nh - s) / 2, false, 0),
        // An image of exactly `size` leaves a crop no room: as torchvision's
        // CIFAR recipe (and the PyTorch peer's) does, it is padded by
        // `EXACT_PAD` black pixels a side and the crop drawn from that.
        Crop::Random { seed, flip } if (w, h) == (s, s) => {
            let mut rng = Rng::new(seed);
            let room = 2 * EXACT_PAD as usize + 1;
            let x0 = rng.below(room) as u32;
            let y0 = rng.below(room) as u32;
            (x0, y0, rng.next_f64() < 0.5 && flip, EXACT_PAD)
        }
        Crop::Random { seed, flip } => {
            let mut rng = Rng::new(seed);
            let x0 = rng.below((nw - s + 1) as usize) as u32;
            let y0 = rng.below((nh - s + 1) as usize) as u32;
            (x0, y0, rng.next_f64() < 0.5 && flip, 0)
        }
    };
    let black: [f32; 3] = std::array::from_fn(|c| (0.0 - MEAN[c]) / STD[c]);
    let mut out = vec![0f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let sx = if flip { size - 1 - x } else { x };
            let (px, py) = (
                (x0 + sx as u32).checked_sub(pad).filter(|&v| v < nw),
                (y0 + y as u32).checked_sub(pad).filter(|&v| v < nh),
            );
            let p = match (px, py) {
                (Some(px), Some(py)) => Some(img.get_pixel(px, py)),
                _ => None,
            };
            for c in 0..3 {
                out[(c * size + y) * size + x] = match p {
                    Some(p) => (p[c] as f32 / 255.0 - MEAN[c]) / STD[c],
                    None => black[c],
                };
            }
        }
    }
    Ok(out)
}

/// The black border a random crop of an image of exactly `image_size` is
/// drawn within, a side (torchvision's `RandomCrop(size, padding=4)`).
pub const EXACT_PAD: u32 = 4;

/// The randomness of image `index` in `epoch`.
pub fn crop_seed(seed: u64, epoch: u64, index: usize) -> u64 {
    let mut rng = Rng::new(
        seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93),
    );
    rng.next_u64()
}

/// A decoded batch: the pixels of the images that could be read, which
/// samples they are, and the images that could not be read.
#[derive(Debug)]
pub struct Batch {
    pub pixels: Vec<f32>,
    pub indices: Vec<usize>,
    pub bad: Vec<BadImage>,
}

/// What to decode: batches of sample indices into `paths`.
pub struct Job {
    pub paths: Arc<Vec<PathBuf>>,
    pub batches: Vec<Vec<usize>>,
    pub size: usize,
    /// `Some((seed, epoch, flip))`: random crops, flipped half the time
    /// when `flip`; `None`: centre crops.
    pub random: Option<(u64, u64, bool)>,
}

/// Decodes the batches of a [`Job`] on `workers` threads, at most `ahead`
/// batches ahead of the consumer, and yields them in order.
pub struct Prefetch {
    rx: Receiver<(usize, Batch)>,
    pending: BTreeMap<usize, Batch>,
    next: usize,
    total: usize,
    stop: Arc<AtomicBool>,
}

impl Prefetch {
    pub fn start(job: Job, workers: usize, ahead: usize) -> Prefetch {
        let total = job.batches.len();
        let (tx, rx) = sync_channel(ahead.max(1));
        let job = Arc::new(job);
        let claim = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..workers.max(1) {
            let (job, claim, stop, tx) = (job.clone(), claim.clone(), stop.clone(), tx.clone());
            std::thread::spawn(move || loop {
                let b = claim.fetch_add(1, Ordering::SeqCst);
                if b >= job.batches.len() || stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut batch = Batch {
                    pixels: Vec::with_capacity(job.batches[b].len() * 3 * job.size * job.size),
                    indices: Vec::new(),
                    bad: Vec::new(),
                };
                for &i in &job.batches[b] {
                    let crop = match job.random {
                        Some((seed, epoch, flip)) => Crop::Random {
                            seed: crop_seed(seed, epoch, i),
                            flip,
                        },
                        None => Crop::Center,
                    };
                    match load(&job.paths[i], job.size, crop) {
                        Ok(px) => {
                            batch.pixels.extend(px);
                            batch.indices.push(i);
                        }
                        Err(e) => batch.bad.push(e),
                    }
                }
                if tx.send((b, batch)).is_err() {
                    return; // the consumer is gone
                }
            });
        }
        Prefetch {
            rx,
            pending: BTreeMap::new(),
            next: 0,
            total,
            stop,
        }
    }
}

impl Iterator for Prefetch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.total {
            return None;
        }
        while !self.pending.contains_key(&self.next) {
            let (i, batch) = self.rx.recv().ok()?;
            self.pending.insert(i, batch);
        }
        let batch = self.pending.remove(&self.next);
        self.next += 1;
        batch
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
        img.save(path).unwrap();
    }

    #[test]
    fn preprocessing_resizes_crops_flips_and_normalises() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wide.png");
        // 64x32: left half black, right half white.
        write_png(
            &p,
            64,
            32,
            |x, _| if x < 32 { [0, 0, 0] } else { [255, 255, 255] },
        );
        let center = load(&p, 16, Crop::Center).unwrap();
        assert_eq!(center.len(), 3 * 16 * 16);
        // Resized to 32x16, the centre 16x16 crop covers x 8..24: black then white.
        let red = |v: &[f32], x: usize, y: usize| v[y * 16 + x];
        assert!((red(&center, 0, 5) - (0.0 - MEAN[0]) / STD[0]).abs() < 1e-3);
        assert!((red(&center, 15, 5) - (1.0 - MEAN[0]) / STD[0]).abs() < 1e-3);
        // Random crops are reproducible from their seed; some seeds flip.
        let random = |seed, flip| load(&p, 16, Crop::Random { seed, flip }).unwrap();
        assert_eq!(random(3, true), random(3, true));
        let flipped = |v: &[f32]| red(v, 0, 5) > red(v, 15, 5);
        assert!(
            (0..20).any(|s| flipped(&random(s, true))),
            "no seed flipped the image"
        );
        // `augment = crop`: the same crops, never flipped.
        assert!((0..20).all(|s| !flipped(&random(s, false))));
    }

    #[test]
    fn an_image_of_exactly_the_size_is_cropped_from_a_black_border() {
        // As torchvision's RandomCrop(size, padding=4) on a size x size image:
        // the crop moves by up to 4 pixels, and what it shows past the edge is
        // black; the centre crop is the image itself.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("white.png");
        write_png(&p, 16, 16, |_, _| [255, 255, 255]);
        let white = (1.0 - MEAN[0]) / STD[0];
        let black = (0.0 - MEAN[0]) / STD[0];
        let red = |v: &[f32], x: usize, y: usize| v[y * 16 + x];
        let center = load(&p, 16, Crop::Center).unwrap();
        assert!(center[..256].iter().all(|&v| (v - white).abs() < 1e-3));
        let mut shifts = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let v = load(&p, 16, Crop::Random { seed, flip: false }).unwrap();
            // Black columns on the left or right, black rows on top or bottom.
            let black_left = (0..16)
                .take_while(|&x| (red(&v, x, 8) - black).abs() < 1e-3)
                .count();
            let black_right = (0..16)
                .rev()
                .take_while(|&x| (red(&v, x, 8) - black).abs() < 1e-3)
                .count();
            let black_top = (0..16)
                .take_while(|&y| (red(&v, 8, y) - black).abs() < 1e-3)
                .count();
            assert!(black_left <= 4 && black_right <= 4 && black_top <= 4);
            assert!(black_left == 0 || black_right == 0);
            assert!((red(&v, 8, 8) - white).abs() < 1e-3);
            shifts.insert((black_left as i32 - black_right as i32, black_top));
        }
        // Every horizontal shift from -4 to 4 is drawn.
        let xs: std::collections::BTreeSet<i32> = shifts.iter().map(|s| s.0).collect();
        assert_eq!(xs.len(), 9, "{shifts:?}");
    }

    #[test]
    fn corrupt_and_missing_images_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broken.png");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = load(&p, 16, Crop::Center).unwrap_err();
        assert_eq!(e.path, p);
        assert!(e.to_string().contains("broken.png"));
        assert!(load(&dir.path().join("missing.jpg"), 16, Crop::Center).is_err());
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            load(&empty, 16, Crop::Center).unwrap_err().reason,
            "the file is empty"
        );
        // A corrupt PNG is named as one, its chunk by its name.
        let png = dir.path().join("crc.png");
        let mut bytes = Vec::new();
        image::RgbImage::new(4, 4)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes[29] ^= 0xff; // the header chunk's checksum
        std::fs::write(&png, &bytes).unwrap();
        let reason = load(&png, 16, Crop::Center).unwrap_err().reason;
        assert!(
            reason.starts_with("corrupt PNG image: CRC error"),
            "{reason}"
        );
        assert!(
            reason.contains("decoding IHDR chunk") && !reason.contains('{'),
            "{reason}"
        );
        // A PNG cut short says so, in its header or in its pixels.
        let mut whole_png = Vec::new();
        image::RgbImage::from_fn(40, 40, |x, y| image::Rgb([(x * 6) as u8, (y * 6) as u8, 9]))
            .write_to(
                &mut std::io::Cursor::new(&mut whole_png),
                image::ImageFormat::Png,
            )
            .unwrap();
        for keep in [20, whole_png.len() / 2] {
            let cut = dir.path().join(format!("cut{keep}.png"));
            std::fs::write(&cut, &whole_png[..keep]).unwrap();
            assert_eq!(
                load(&cut, 16, Crop::Center).unwrap_err().reason,
                "the file ends before the image does (it was cut short); copy it again or remove it",
                "{keep}"
            );
        }
        // A JPEG cut short is refused (the decoder would fill it with grey);
        // whole, or with bytes after its end (an appended video holding
        // start-of-scan bytes), it is read.
        let mut jpeg = Vec::new();
        image::RgbImage::from_fn(40, 40, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 6) as u8, 90])
        })
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        assert!(jpeg.ends_with(&[0xFF, 0xD9]));
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        assert!(load(&whole, 16, Crop::Center).is_ok());
        let trailed = dir.path().join("trailed.jpg");
        let mut with_trailer = jpeg.clone();
        with_trailer.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 2, 3, 4, 5, 6]);
        std::fs::write(&trailed, &with_trailer).unwrap();
        assert!(load(&trailed, 16, Crop::Center).is_ok());
        for keep in [jpeg.len() - 2, jpeg.len() * 2 / 3, 300] {
            let cut = dir.path().join(format!("cut{keep}.jpg"));
            std::fs::write(&cut, &jpeg[..keep]).unwrap();
            let e = load(&cut, 16, Crop::Center).unwrap_err();
            assert!(
                e.reason
                    .starts_with("corrupt JPEG image: the file ends before the image does"),
                "{keep}: {}",
                e.reason
            );
            let surveyed = survey(std::slice::from_ref(&cut), 1, true);
            assert_eq!(surveyed[0].size.as_ref().unwrap_err().reason, e.reason);
            // Read, though not decodable: its bytes are digested.
            assert_eq!(surveyed[0].contents, Some(contents_digest(&jpeg[..keep])));
        }
        // The digest tells files apart by every byte, and their lengths.
        let digests: std::collections::HashSet<u64> = [
            &jpeg[..],
            &jpeg[..jpeg.len() - 1],
            &with_trailer[..],
            &[][..],
            &[0u8][..],
            &[0u8, 0][..],
        ]
        .iter()
        .map(|b| contents_digest(b))
        .collect();
        assert_eq!(digests.len(), 6);
        let mut flipped = jpeg.clone();
        flipped[jpeg.len() / 2] ^= 1;
        assert_ne!(contents_digest(&flipped), contents_digest(&jpeg));
        assert_eq!(contents_digest(&jpeg.clone()), contents_digest(&jpeg));
        // A file that is no image says so, whatever its extension.
        for name in ["notes.txt", "no_extension"] {
            let p = dir.path().join(name);
            std::fs::write(&p, b"just some words").unwrap();
            let e = load(&p, 16, Crop::Center).unwrap_err();
            assert_eq!(
                e.reason, "not an image of a format wfrun reads (JPEG, PNG, WebP, BMP)",
                "{name}"
            );
        }
    }

    /// A PNG chunk: length, type, data, CRC-32 of type and data.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = 0xffff_ffffu32;
        for &b in kind.iter().chain(data) {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend(kind);
        out.extend(data);
        out.extend((!crc).to_be_bytes());
        out
    }

    #[test]
    fn an_image_too_large_to_decode_says_its_size() {
        // A header claiming 30,000 × 30,000 RGB pixels (2.7 GB decoded).
        let mut header = 30_000u32.to_be_bytes().to_vec();
        header.extend(30_000u32.to_be_bytes());
        header.extend([8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &header));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.png");
        std::fs::write(&p, png).unwrap();
        let e = load(&p, 32, Crop::Center).unwrap_err();
        assert_eq!(
            e.reason,
            "the image is too large to decode (30000 × 30000 pixels); scale it down"
        );
    }

    #[test]
    fn prefetch_yields_every_batch_in_order_and_lists_bad_images() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..10u8 {
            let p = dir.path().join(format!("{i}.png"));
            write_png(&p, 20, 20, |_, _| [i * 20, 0, 0]);
            paths.push(p);
        }
        std::fs::write(&paths[3], b"garbage").unwrap();
        let job = Job {
            paths: Arc::new(paths),
            batches: vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]],
            size: 16,
            random: Some((1, 0, true)),
        };
        let batches: Vec<Batch> = Prefetch::start(job, 3, 2).collect();
        assert_eq!(batches.len(), 4);
        assert_eq!(batches[1].indices, [4, 5]);
        assert_eq!(batches[1].bad.len(), 1);
        assert!(batches[1].bad[0].path.ends_with("3.png"));
        assert_eq!(batches[3].pixels.len(), 3 * 16 * 16);
        // The first pixel's red channel encodes the image index.
        let first = (batches[2].pixels[0] * STD[0] + MEAN[0]) * 255.0;
        assert!((first - 120.0).abs() < 1.0, "{first}");
    }
}
