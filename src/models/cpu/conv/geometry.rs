//! A convolution's sizes, how it is cut into chunks of images, and the
//! tables small maps are unfolded and convolved through.

use super::*;

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) groups: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

/// Elements of unfolded columns a chunk may hold (32 MiB of f32).
pub(super) const COLUMN_BUDGET: usize = 8 << 20;
/// Output rows shorter than this are unfolded through each tap's sources
/// rather than row by row.
pub(super) const SHORT_ROWS: usize = 16;
/// Each tap's (output pixel, input pixel) pairs, the padding left out.
pub(super) struct Sources {
    pub(super) starts: Vec<usize>,
    pub(super) pairs: Vec<(u32, u32)>,
}

impl Sources {
    pub(super) fn of(&self, tap: usize) -> &[(u32, u32)] {
        &self.pairs[self.starts[tap]..self.starts[tap + 1]]
    }
}
/// Output pixels of an image that read the same taps of the kernel inside
/// the input: rows `ky` × columns `kx` of it.
#[derive(Debug)]
pub(super) struct Class {
    pub(super) ky: (usize, usize),
    pub(super) kx: (usize, usize),
    pub(super) pixels: Vec<u32>,
}

/// The share of a small map's taps on the padding from which the forward
/// pass leaves them out, class by class (ResNet-101's 3 × 3 convolutions on
/// 4 × 4 maps: 31%).
pub(super) const PADDED_SHARE: f64 = 0.1;

/// Output pixels a chunk aims at: enough columns for an efficient product,
/// few enough that the unfolded columns stay in cache until the product
/// reads them.
pub(super) const TARGET_COLUMNS: usize = 512;

impl Geometry {
    pub(super) fn new(conv: Conv2d, x: &[usize], w: &[usize]) -> Result<Geometry> {
        let (&[c, n, h, wd], &[o, cg, kh, kw]) = (x, w) else {
            candle_core::bail!("convolution takes (C, N, H, W) activations and (O, C/g, kh, kw) weights, got {x:?} and {w:?}");
        };
        let g = conv.groups.max(1);
        if cg * g != c || o % g != 0 || conv.stride == 0 {
            candle_core::bail!(
                "convolution of {c} channels in {g} groups with weights {w:?} and stride {}",
                conv.stride
            );
        }
        if h + 2 * conv.padding < kh || wd + 2 * conv.padding < kw {
            candle_core::bail!(
                "a {kh}x{kw} convolution does not fit a {h}x{wd} input; use a larger image_size"
            );
        }
        Ok(Geometry {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            stride: conv.stride,
            pad: conv.padding,
            groups: g,
            oh: (h + 2 * conv.padding - kh) / conv.stride + 1,
            ow: (wd + 2 * conv.padding - kw) / conv.stride + 1,
        })
    }

    /// Input channels per group.
    pub(super) fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    pub(super) fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of a group's columns: `C/g · kh · kw`.
    pub(super) fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output pixels per image.
    pub(super) fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Images per chunk: enough for about [`TARGET_COLUMNS`] columns, within
    /// the column budget.
    pub(super) fn chunk(&self) -> usize {
        let per_image = self.c * self.kh * self.kw * self.p();
        TARGET_COLUMNS
            .div_ceil(self.p().max(1))
            .min(COLUMN_BUDGET / per_image.max(1))
            .clamp(1, self.n.max(1))
    }

    /// Output columns in all: `N · P`.
    pub(super) fn jt(&self) -> usize {
        self.n * self.p()
    }

    /// For each tap (`ky · kw + kx`), the output pixels it reads an input
    /// pixel for (those over the padding left out) and that pixel.
    pub(super) fn sources(&self) -> Sources {
        let mut starts = Vec::with_capacity(self.kh * self.kw + 1);
        let mut pairs = Vec::with_capacity(self.kh * self.kw * self.p());
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                starts.push(pairs.len());
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        let iy = (oy * self.stride + ky).wrapping_sub(self.pad);
                        let ix = (ox * self.stride + kx).wrapping_sub(self.pad);
                        if iy < self.h && ix < self.w {
                            pairs.push(((oy * self.ow + ox) as u32, (iy * self.w + ix) as u32));
                        }
                    }
                }
            }
        }
        starts.push(pairs.len());
        Sources { starts, pairs }
    }

    /// The taps `[lo, hi)` of a `k`-tap axis that output index `o` reads
    /// inside an input side of `len`.
    pub(super) fn taps(&self, o: usize, k: usize, len: usize) -> (usize, usize) {
        // o · stride + t − pad must lie in [0, len).
        let start = o * self.stride;
        let lo = self.pad.saturating_sub(start).min(k);
        let hi = (len + self.pad).saturating_sub(start).min(k);
        (lo, hi.max(lo))
    }

    /// The output pixels of an image grouped by the taps they read inside
    /// the input (a rectangle of the kernel each), and the share of all
    /// taps that fall on the padding.
    pub(super) fn classes(&self) -> (Vec<Class>, f64) {
        let mut classes: Vec<Class> = Vec::new();
        let mut valid = 0;
        for oy in 0..self.oh {
            let ky = self.taps(oy, self.kh, self.h);
            for ox in 0..self.ow {
                let kx = self.taps(ox, self.kw, self.w);
                valid += (ky.1 - ky.0) * (kx.1 - kx.0);
                let pixel = (oy * self.ow + ox) as u32;
                match classes.iter_mut().find(|c| c.ky == ky && c.kx == kx) {
                    Some(c) => c.pixels.push(pixel),
                    None => classes.push(Class {
                        ky,
                        kx,
                        pixels: vec![pixel],
                    }),
                }
            }
        }
        let all = self.p() * self.kh * self.kw;
        (classes, 1.0 - valid as f64 / all.max(1) as f64)
    }

    /// The classes the forward pass goes by ([`Geometry::classes`]), if it
    /// does: small maps, one group, and enough of the product on the padding.
    pub(super) fn by_classes(&self) -> Option<Vec<Class>> {
        if self.pointwise() || self.ow >= SHORT_ROWS || self.groups > 1 {
            return None;
        }
        let (classes, padded) = self.classes();
        let single_taps = classes
            .iter()
            .all(|c| (c.ky.1 - c.ky.0) * (c.kx.1 - c.kx.0) == 1);
        // The products saved against reordering the weights (about as costly
        // as 64 multiply-adds an element), unless no reordering is needed.
        let worth = padded * (self.n * self.p()) as f64 >= 64.0;
        (padded >= PADDED_SHARE && (single_taps || worth)).then_some(classes)
    }

    /// A 1 × 1 convolution of stride 1 without padding: columns are the input.
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    pub(super) fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.o, self.n, self.oh, self.ow)
    }

    /// The input columns `[lo, hi)` (output column indices) whose tap
    /// `k` (0..kh or 0..kw) reads inside an input side of `len`, and the
    /// input index of column `lo`.
    pub(super) fn valid(&self, k: usize, len: usize, out: usize) -> (usize, usize) {
        // input = o · stride + k − pad must lie in [0, len).
        let s = self.stride;
        let lo = self.pad.saturating_sub(k).div_ceil(s);
        let hi = ((len + self.pad).saturating_sub(k)).div_ceil(s).min(out);
        (lo.min(hi), hi)
    }
}
