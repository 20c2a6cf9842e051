//! Evaluation's grouped convolutions with few channels a group (ResNeXt's
//! 3 × 3 convolutions of 32 groups, 4 to 32 channels each), computed
//! directly instead of unfolded into columns: a group's products are too
//! small for the matrix kernels (4 to 32 output channels), and the unfolded
//! columns are nine times the input.
//!
//! A group's input is first laid out images innermost, `C/g × H × W × N'`
//! (`N'` the batch rounded up to 8, 16 or a multiple of [`LANES`]), so that
//! for every output pixel and tap the values of all the images are one run.
//! Each output pixel's sources, the (channel, tap) pairs that read inside
//! the input, are listed once; fused multiply-adds run over them for up to
//! [`LANES`] images and [`BLOCK`] output channels at a time, a loop that
//! vectorises over the images (a single image puts the output channels side
//! by side instead). The outputs go back to the activations' layout through
//! the epilogue. Every output value is the same fused multiply-adds
//! (correctly rounded on every processor) over its sources in the same
//! order, whatever the batch, its width and the processor, so the values
//! these layers give an image depend on none of them.

use super::*;

/// Images computed together.
const LANES: usize = 32;
/// Output channels computed together.
const BLOCK: usize = 4;
/// Input channels per group up to which the direct path is taken (beyond
/// that a group's products are large enough for the matrix kernels).
const MAX_GROUP_CHANNELS: usize = 64;

/// Whether a convolution takes this path: several groups of at most
/// [`MAX_GROUP_CHANNELS`] input channels.
pub(super) fn suits(g: &Geometry) -> bool {
    g.groups > 1 && g.cg() <= MAX_GROUP_CHANNELS
}

/// A convolution as the kernel reads it: its sizes, and the images rounded
/// up to 8, 16 or a multiple of [`LANES`] (the input's innermost length).
#[derive(Clone, Copy)]
struct Shape {
    g: Geometry,
    lanes: usize,
}

/// The convolution of `x` (C, N, H, W) by `w` (O, C/g, kh, kw), through
/// `after`, group by group (side by side on the team).
pub(super) fn forward<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    after: Option<&After<T>>,
) -> Vec<T> {
    let (cg, og, jt, p) = (g.cg(), g.og(), g.jt(), g.p());
    let mut y = uninit::<T>(g.o * jt);
    let out = DisjointMut::new(&mut y);
    let shape = Shape {
        g: *g,
        lanes: match g.n {
            0..=8 => 8,
            9..=16 => 16,
            n => n.next_multiple_of(LANES),
        },
    };
    let lanes = shape.lanes;
    let taps = g.kh * g.kw;
    let hw = g.h * g.w;
    let group = |gi: usize| {
        // This thread's scratch: the group's input images innermost (lanes
        // past the batch zero), its outputs likewise, then one output
        // channel's as the activations hold them, and its weights packed.
        let (xl, yl, wl) = (cg * hw * lanes, og * p * lanes, og * cg * taps);
        with_columns(xl + yl + jt + wl, |buf: &mut [T]| {
            let (xt, rest) = buf.split_at_mut(xl);
            let (yt, rest) = rest.split_at_mut(yl);
            let (images, packed) = rest.split_at_mut(jt);
            for ci in 0..cg {
                let planes = &x[(gi * cg + ci) * g.n * hw..][..g.n * hw];
                let dst = &mut xt[ci * hw * lanes..][..hw * lanes];
                transpose(planes, (g.n, hw), dst, lanes);
                if g.n < lanes {
                    for pixel in dst.chunks_exact_mut(lanes) {
                        pixel[g.n..].fill(T::ZERO);
                    }
                }
            }
            // Weight (oc, ci, tap) at [(ci · taps + tap) · og + oc]: a
            // source's weights for a block of output channels side by side.
            let weights = &w[gi * og * cg * taps..][..og * cg * taps];
            for (oc, kernel) in weights.chunks_exact(cg * taps).enumerate() {
                for (t, &v) in kernel.iter().enumerate() {
                    packed[t * og + oc] = v;
                }
            }
            block(xt, packed, shape, yt);
            for oc in 0..og {
                let values = &yt[oc * p * lanes..][..p * lanes];
                transpose_back(values, lanes, images, (g.n, p));
                if let Some(after) = after {
                    after.apply(gi * og + oc, 0, jt, images);
                }
                // SAFETY: output channel oc's row is this group's alone.
                let row = unsafe { out.range((gi * og + oc) * jt, jt) };
                for (d, &v) in row.iter_mut().zip(images.iter()) {
                    *d = MaybeUninit::new(v);
                }
            }
        });
    };
    if threads() > 1 {
        super::super::team::for_each(g.groups, &group);
    } else {
        (0..g.groups).for_each(group);
    }
    // SAFETY: every group wrote every pixel of its output channels.
    unsafe { assume_init(y) }
}

/// Pixels a side of the transposes' blocks: a block's lines stay in cache
/// between its reads and writes (whole rows of images are a power of two
/// apart, whose lines compete for the same few sets of the cache).
const SPAN: usize = 16;

/// `planes` (`n` images of `p` pixels) into `dst`, pixel by pixel with
/// the images `lanes` apart, a block of [`SPAN`] pixels at a time.
fn transpose<T: Float>(planes: &[T], (n, p): (usize, usize), dst: &mut [T], lanes: usize) {
    for i0 in (0..p).step_by(SPAN) {
        let span = SPAN.min(p - i0);
        for ni in 0..n {
            let src = &planes[ni * p + i0..][..span];
            for (k, &v) in src.iter().enumerate() {
                dst[(i0 + k) * lanes + ni] = v;
            }
        }
    }
}

/// [`transpose`]'s inverse: `values` (pixels, images `lanes` apart) into
/// `images` (`n` images of `p` pixels).
fn transpose_back<T: Float>(values: &[T], lanes: usize, images: &mut [T], (n, p): (usize, usize)) {
    for i0 in (0..p).step_by(SPAN) {
        let span = SPAN.min(p - i0);
        for ni in 0..n {
            let dst = &mut images[ni * p + i0..][..span];
            for (k, d) in dst.iter_mut().enumerate() {
                *d = values[(i0 + k) * lanes + ni];
            }
        }
    }
}

/// The group's `og` output channels at every output pixel, from `xt` (the
/// group's input, images innermost) and `packed` (the weights, output
/// channels innermost) into `yt` (`og` planes of pixels × lanes), on the
/// widest vectors the processor has.
fn block<T: Float>(xt: &[T], packed: &[T], shape: Shape, yt: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F (and so FMA).
            return unsafe { block_avx512(xt, packed, shape, yt) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the processor has AVX2 and FMA.
            return unsafe { block_avx2(xt, packed, shape, yt) };
        }
    }
    block_portable(xt, packed, shape, yt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn block_avx512<T: Float>(xt: &[T], packed: &[T], shape: Shape, yt: &mut [T]) {
    block_portable(xt, packed, shape, yt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<T: Float>(xt: &[T], packed: &[T], shape: Shape, yt: &mut [T]) {
    block_portable(xt, packed, shape, yt)
}

#[inline(always)]
fn block_portable<T: Float>(xt: &[T], packed: &[T], s: Shape, yt: &mut [T]) {
    // Images side by side as many as the batch fills, or for a single image
    // the output channels side by side: each output value is the same
    // multiply-adds in the same order either way.
    if s.g.n == 1 {
        return match s.g.og() {
            32 => outputs::<T, 32>(xt, packed, s, yt),
            16 => outputs::<T, 16>(xt, packed, s, yt),
            8 => outputs::<T, 8>(xt, packed, s, yt),
            4 => outputs::<T, 4>(xt, packed, s, yt),
            _ => images::<T, 8>(xt, packed, s, yt),
        };
    }
    match s.lanes {
        8 => images::<T, 8>(xt, packed, s, yt),
        16 => images::<T, 16>(xt, packed, s, yt),
        _ => images::<T, LANES>(xt, packed, s, yt),
    }
}

#[inline(always)]
fn images<T: Float, const L: usize>(xt: &[T], packed: &[T], s: Shape, yt: &mut [T]) {
    let (lanes, og, oh, ow) = (s.lanes, s.g.og(), s.g.oh, s.g.ow);
    let mut sources: Vec<(usize, usize)> = Vec::with_capacity(s.g.k());
    for oy in 0..oh {
        for ox in 0..ow {
            pixel_sources(&s, og, (oy, ox), &mut sources);
            let pixel = oy * ow + ox;
            for o0 in (0..og).step_by(BLOCK) {
                // A number of output channels known when compiled, so that
                // the accumulators stay in registers.
                let put = |r: usize, n0: usize, values: &[T; L], yt: &mut [T]| {
                    yt[((o0 + r) * oh * ow + pixel) * lanes + n0..][..L].copy_from_slice(values);
                };
                for n0 in (0..lanes).step_by(L) {
                    let put = |r, v: &[T; L]| put(r, n0, v, yt);
                    match BLOCK.min(og - o0) {
                        4 => sum::<T, 4, L>(xt, packed, &sources, (o0, n0), put),
                        3 => sum::<T, 3, L>(xt, packed, &sources, (o0, n0), put),
                        2 => sum::<T, 2, L>(xt, packed, &sources, (o0, n0), put),
                        _ => sum::<T, 1, L>(xt, packed, &sources, (o0, n0), put),
                    }
                }
            }
        }
    }
}

/// A group's `OG` output channels side by side at every output pixel: for a
/// single image.
#[inline(always)]
fn outputs<T: Float, const OG: usize>(xt: &[T], packed: &[T], s: Shape, yt: &mut [T]) {
    let (lanes, oh, ow) = (s.lanes, s.g.oh, s.g.ow);
    let mut sources = Vec::with_capacity(s.g.k());
    for pixel in 0..oh * ow {
        pixel_sources(&s, OG, (pixel / ow, pixel % ow), &mut sources);
        for ni in 0..s.g.n {
            let mut acc = [T::ZERO; OG];
            for &(at, wi) in &sources {
                let x = xt[at + ni];
                let wv: &[T; OG] = packed[wi..][..OG].try_into().expect("OG weights");
                for o in 0..OG {
                    acc[o] = wv[o].mul_add(x, acc[o]);
                }
            }
            for (o, &v) in acc.iter().enumerate() {
                yt[(o * oh * ow + pixel) * lanes + ni] = v;
            }
        }
    }
}

/// Output pixel `(oy, ox)`'s sources into `sources`: where each (channel,
/// tap) inside the input starts in `xt`, and where its weights start in
/// `packed` (`og` output channels a source), the padding left out.
fn pixel_sources(
    s: &Shape,
    og: usize,
    (oy, ox): (usize, usize),
    sources: &mut Vec<(usize, usize)>,
) {
    let g = &s.g;
    let taps = g.kh * g.kw;
    let plane = g.h * g.w * s.lanes;
    let (ky0, ky1) = g.taps(oy, g.kh, g.h);
    let (kx0, kx1) = g.taps(ox, g.kw, g.w);
    sources.clear();
    for ci in 0..g.cg() {
        for ky in ky0..ky1 {
            // Inside the input: oy · stride + ky − pad lies in [0, h).
            let yy = oy * g.stride + ky - g.pad;
            for kx in kx0..kx1 {
                let xx = ox * g.stride + kx - g.pad;
                let at = ci * plane + (yy * g.w + xx) * s.lanes;
                sources.push((at, (ci * taps + ky * g.kw + kx) * og));
            }
        }
    }
}

/// `OB` output channels from `o0` on, for images `n0..n0 + L`, summed over
/// `sources` (multiply-adds in the sources' order), each channel's values
/// handed to `put`.
#[inline(always)]
fn sum<T: Float, const OB: usize, const L: usize>(
    xt: &[T],
    packed: &[T],
    sources: &[(usize, usize)],
    (o0, n0): (usize, usize),
    mut put: impl FnMut(usize, &[T; L]),
) {
    let mut acc = [[T::ZERO; L]; OB];
    for &(at, wi) in sources {
        let src: &[T; L] = xt[at + n0..][..L].try_into().expect("a run of L");
        let wv: &[T; OB] = packed[wi + o0..][..OB].try_into().expect("OB weights");
        for r in 0..OB {
            for l in 0..L {
                acc[r][l] = wv[r].mul_add(src[l], acc[r][l]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        put(r, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct path beside the unfolded one, through the same epilogue,
    /// in f64 and f32, on ResNeXt's shapes (stride 1 and 2) and odd ones;
    /// and an image's values the same to the bit in any batch.
    #[test]
    fn agrees_with_the_unfolded_convolution() {
        for &(n, c, o, groups, k, stride, h, w) in &[
            (2, 8, 8, 2, 3, 1, 4, 4),
            (3, 12, 6, 3, 3, 1, 5, 7),
            (2, 32, 32, 8, 3, 1, 2, 2),
            (1, 6, 9, 3, 1, 1, 3, 3),
            (2, 10, 10, 5, 5, 1, 6, 6),
            (5, 64, 64, 32, 3, 1, 16, 16),
            (33, 64, 64, 32, 3, 2, 8, 8),
            (2, 12, 18, 6, 3, 2, 7, 5),
        ] {
            let conv = Conv2d {
                stride,
                padding: k / 2,
                groups,
            };
            let g = Geometry::new(conv, &[c, n, h, w], &[o, c / groups, k, k]).unwrap();
            assert!(suits(&g));
            let (case, case32) = (Case::new(&g), Case::new(&g).f32());
            let after = case.after(true, true);
            let unfolded = super::super::forward(&g, &case.x, &case.w, None, Some(&after));
            let direct = forward(&g, &case.x, &case.w, Some(&after));
            let worst = super::super::worst(&unfolded, &direct, false);
            assert!(worst < 1e-12, "{n}x{c}x{h}x{w} -> {o} / {groups}: {worst}");

            let direct = forward(&g, &case32.x, &case32.w, None);
            let plain = super::super::forward(&g, &case.x, &case.w, None, None);
            let worst = super::super::worst(&plain, &direct, false);
            assert!(
                worst < 1e-5,
                "f32 {n}x{c}x{h}x{w} -> {o} / {groups}: {worst}"
            );
            // The last image alone gives its values in the batch, to the bit.
            let alone: Vec<f32> = (0..c)
                .flat_map(|ci| {
                    case32.x[(ci * n + n - 1) * h * w..][..h * w]
                        .iter()
                        .copied()
                })
                .collect();
            let g1 = Geometry::new(conv, &[c, 1, h, w], &[o, c / groups, k, k]).unwrap();
            let single = forward(&g1, &alone, &case32.w, None);
            let p = g.p();
            for oc in 0..o {
                let batch = &direct[(oc * n + n - 1) * p..][..p];
                let one = &single[oc * p..][..p];
                assert!(batch
                    .iter()
                    .zip(one)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn only_grouped_convolutions_with_few_channels_a_group() {
        let geometry = |groups: usize, c: usize| {
            let conv = Conv2d {
                stride: 1,
                padding: 1,
                groups,
            };
            Geometry::new(conv, &[c, 2, 8, 8], &[c, c / groups, 3, 3]).unwrap()
        };
        assert!(suits(&geometry(32, 128)));
        assert!(suits(&geometry(32, 1024)));
        assert!(!suits(&geometry(1, 128)));
        assert!(!suits(&geometry(2, 256)));
    }
}
