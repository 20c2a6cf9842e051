//! Grouped convolutions with few channels a group (ResNeXt's 3 × 3
//! convolutions of 32 groups, 4 to 32 channels each) and their gradients,
//! computed directly instead of unfolded into columns: a group's products are too
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
//!
//! The input gradient is the same kernel run the other way: over the output
//! gradient laid out likewise, each input pixel's readers (output channel,
//! tap) listed instead of its sources. The weight gradient sums, for each
//! weight, output gradient × input over the output pixels whose tap reads
//! inside the input and the images.

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

/// A convolution as the kernel reads it: its sizes, the images rounded up
/// to 8, 16 or a multiple of [`LANES`] (the input's innermost length), and
/// which pass: the forward one (the input's pixels summed into the output's)
/// or the input gradient's (the output gradient's pixels summed into the
/// input's, through the same taps).
#[derive(Clone, Copy)]
struct Shape {
    g: Geometry,
    lanes: usize,
    transposed: bool,
}

/// Each pixel a pass writes, its sources: where each starts in the pass's
/// input, and where its weights start in the packed weights.
struct Table {
    starts: Vec<usize>,
    pairs: Vec<(usize, usize)>,
}

impl Table {
    fn of(&self, pixel: usize) -> &[(usize, usize)] {
        &self.pairs[self.starts[pixel]..self.starts[pixel + 1]]
    }
}

impl Shape {
    fn new(g: &Geometry, transposed: bool) -> Shape {
        Shape {
            g: *g,
            lanes: match g.n {
                0..=8 => 8,
                9..=16 => 16,
                n => n.next_multiple_of(LANES),
            },
            transposed,
        }
    }

    /// The channels a group's pass writes.
    fn outs(&self) -> usize {
        if self.transposed {
            self.g.cg()
        } else {
            self.g.og()
        }
    }

    /// The pixels of each channel the pass writes, rows × columns.
    fn out_hw(&self) -> (usize, usize) {
        if self.transposed {
            (self.g.h, self.g.w)
        } else {
            (self.g.oh, self.g.ow)
        }
    }

    /// Every pixel's sources for this pass, listed once for all the groups.
    fn table(&self) -> Table {
        let (h, w) = self.out_hw();
        let mut table = Table {
            starts: Vec::with_capacity(h * w + 1),
            pairs: Vec::new(),
        };
        let mut sources = Vec::with_capacity(self.g.k().max(self.g.og() * self.g.kh * self.g.kw));
        table.starts.push(0);
        for pixel in 0..h * w {
            self.sources((pixel / w, pixel % w), &mut sources);
            table.pairs.extend_from_slice(&sources);
            table.starts.push(table.pairs.len());
        }
        table
    }

    /// Pixel `at`'s sources for this pass into `sources`.
    fn sources(&self, at: (usize, usize), sources: &mut Vec<(usize, usize)>) {
        if self.transposed {
            gradient_sources(self, at, sources)
        } else {
            pixel_sources(self, at, sources)
        }
    }
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
    let shape = Shape::new(g, false);
    let table = shape.table();
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
            lay_out(
                &x[gi * cg * g.n * hw..][..cg * g.n * hw],
                (g.n, hw),
                xt,
                lanes,
            );
            // Weight (oc, ci, tap) at [(ci · taps + tap) · og + oc]: a
            // source's weights for a block of output channels side by side.
            let weights = &w[gi * og * cg * taps..][..og * cg * taps];
            for (oc, kernel) in weights.chunks_exact(cg * taps).enumerate() {
                for (t, &v) in kernel.iter().enumerate() {
                    packed[t * og + oc] = v;
                }
            }
            block(xt, packed, shape, &table, yt);
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

/// The input and weight gradients from the output's gradient `dy`, group
/// by group (side by side on the team): the input's through the forward
/// pass's kernel run over the output gradient's pixels
/// ([`gradient_sources`]), the weights' as one sum of products over the
/// pixels and images for each weight ([`weight_grads`]). Each value is the
/// same multiply-adds in the same order whatever the batch's width and the
/// processor.
pub(super) fn backward<T: Float>(g: &Geometry, x: &[T], w: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let (cg, og, p) = (g.cg(), g.og(), g.p());
    let (taps, hw) = (g.kh * g.kw, g.h * g.w);
    let mut dx = uninit::<T>(g.c * g.n * hw);
    let mut dw = uninit::<T>(g.o * cg * taps);
    let (dx_out, dw_out) = (DisjointMut::new(&mut dx), DisjointMut::new(&mut dw));
    let shape = Shape::new(g, true);
    let table = shape.table();
    let lanes = shape.lanes;
    let group = |gi: usize| {
        // This thread's scratch: the group's input, output gradient and
        // input gradient, images innermost; one input channel's gradient as
        // the activations hold it; the weights packed.
        let (xl, yl, wl) = (cg * hw * lanes, og * p * lanes, og * cg * taps);
        with_columns(2 * xl + yl + g.n * hw + wl, |buf: &mut [T]| {
            let (xt, rest) = buf.split_at_mut(xl);
            let (dyt, rest) = rest.split_at_mut(yl);
            let (dxt, rest) = rest.split_at_mut(xl);
            let (images, packed) = rest.split_at_mut(g.n * hw);
            lay_out(
                &x[gi * cg * g.n * hw..][..cg * g.n * hw],
                (g.n, hw),
                xt,
                lanes,
            );
            lay_out(
                &dy[gi * og * g.n * p..][..og * g.n * p],
                (g.n, p),
                dyt,
                lanes,
            );
            // Weight (oc, ci, tap) at [(oc · taps + tap) · cg + ci]: a
            // source's weights for a block of input channels side by side.
            let weights = &w[gi * og * cg * taps..][..og * cg * taps];
            for (oc, kernels) in weights.chunks_exact(cg * taps).enumerate() {
                for (ci, kernel) in kernels.chunks_exact(taps).enumerate() {
                    for (t, &v) in kernel.iter().enumerate() {
                        packed[(oc * taps + t) * cg + ci] = v;
                    }
                }
            }
            block(dyt, packed, shape, &table, dxt);
            for ci in 0..cg {
                transpose_back(
                    &dxt[ci * hw * lanes..][..hw * lanes],
                    lanes,
                    images,
                    (g.n, hw),
                );
                // SAFETY: input channel ci's row is this group's alone.
                let row = unsafe { dx_out.range((gi * cg + ci) * g.n * hw, g.n * hw) };
                for (d, &v) in row.iter_mut().zip(images.iter()) {
                    *d = MaybeUninit::new(v);
                }
            }
            // SAFETY: the group's output channels' weights are its own.
            let grads = unsafe { dw_out.range(gi * og * cg * taps, og * cg * taps) };
            weight_grads(xt, dyt, shape, grads);
        });
    };
    if threads() > 1 {
        super::super::team::for_each(g.groups, &group);
    } else {
        (0..g.groups).for_each(group);
    }
    // SAFETY: every group wrote its input channels' gradient and its output
    // channels' weight gradient.
    unsafe { (assume_init(dx), assume_init(dw)) }
}

/// `channels` rows of `n` images × `p` pixels each into `dst`, a channel's
/// pixels one after another with the images `lanes` apart (lanes past the
/// batch zero).
fn lay_out<T: Float>(channels: &[T], (n, p): (usize, usize), dst: &mut [T], lanes: usize) {
    for (planes, dst) in channels
        .chunks_exact(n * p)
        .zip(dst.chunks_exact_mut(p * lanes))
    {
        transpose(planes, (n, p), dst, lanes);
        if n < lanes {
            for pixel in dst.chunks_exact_mut(lanes) {
                pixel[n..].fill(T::ZERO);
            }
        }
    }
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

super::super::widest! {
    /// The group's `og` output channels at every output pixel, from `xt`
    /// (the group's input, images innermost) and `packed` (the weights,
    /// output channels innermost) into `yt` (`og` planes of pixels × lanes),
    /// on the widest vectors the processor has.
    fn block<T: Float>(xt: &[T], packed: &[T], s: Shape, t: &Table, yt: &mut [T]) -> () {
        // Images side by side as many as the batch fills, or for a single
        // image the output channels side by side: each output value is the
        // same multiply-adds in the same order either way.
        if s.g.n == 1 {
            return match s.outs() {
                32 => outputs::<T, 32>(xt, packed, s, t, yt),
                16 => outputs::<T, 16>(xt, packed, s, t, yt),
                8 => outputs::<T, 8>(xt, packed, s, t, yt),
                4 => outputs::<T, 4>(xt, packed, s, t, yt),
                _ => images::<T, 8>(xt, packed, s, t, yt),
            };
        }
        match s.lanes {
            8 => images::<T, 8>(xt, packed, s, t, yt),
            16 => images::<T, 16>(xt, packed, s, t, yt),
            _ => images::<T, LANES>(xt, packed, s, t, yt),
        }
    }
}

#[inline(always)]
fn images<T: Float, const L: usize>(xt: &[T], packed: &[T], s: Shape, t: &Table, yt: &mut [T]) {
    let (lanes, og, (oh, ow)) = (s.lanes, s.outs(), s.out_hw());
    for oy in 0..oh {
        for ox in 0..ow {
            let pixel = oy * ow + ox;
            let sources = t.of(pixel);
            for o0 in (0..og).step_by(BLOCK) {
                // A number of output channels known when compiled, so that
                // the accumulators stay in registers.
                let put = |r: usize, n0: usize, values: &[T; L], yt: &mut [T]| {
                    yt[((o0 + r) * oh * ow + pixel) * lanes + n0..][..L].copy_from_slice(values);
                };
                for n0 in (0..lanes).step_by(L) {
                    let put = |r, v: &[T; L]| put(r, n0, v, yt);
                    match BLOCK.min(og - o0) {
                        4 => sum::<T, 4, L>(xt, packed, sources, (o0, n0), put),
                        3 => sum::<T, 3, L>(xt, packed, sources, (o0, n0), put),
                        2 => sum::<T, 2, L>(xt, packed, sources, (o0, n0), put),
                        _ => sum::<T, 1, L>(xt, packed, sources, (o0, n0), put),
                    }
                }
            }
        }
    }
}

/// A group's `OG` output channels side by side at every output pixel: for a
/// single image.
#[inline(always)]
fn outputs<T: Float, const OG: usize>(xt: &[T], packed: &[T], s: Shape, t: &Table, yt: &mut [T]) {
    let (lanes, (oh, ow)) = (s.lanes, s.out_hw());
    for pixel in 0..oh * ow {
        let sources = t.of(pixel);
        for ni in 0..s.g.n {
            let mut acc = [T::ZERO; OG];
            for &(at, wi) in sources {
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
fn pixel_sources(s: &Shape, (oy, ox): (usize, usize), sources: &mut Vec<(usize, usize)>) {
    let g = &s.g;
    let og = g.og();
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

/// Input pixel `(iy, ix)`'s sources for the input gradient: where each
/// (output channel, tap) whose output pixel reads it starts in the output
/// gradient (laid out as `xt` is), and where its weights start in `packed`
/// (`cg` input channels a source).
fn gradient_sources(s: &Shape, (iy, ix): (usize, usize), sources: &mut Vec<(usize, usize)>) {
    let g = &s.g;
    let (taps, cg) = (g.kh * g.kw, g.cg());
    let plane = g.oh * g.ow * s.lanes;
    // The output index reading input index i through tap k, if any:
    // o · stride + k − pad = i.
    let reader = |i: usize, k: usize, outs: usize| {
        let t = (i + g.pad).checked_sub(k)?;
        (t % g.stride == 0 && t / g.stride < outs).then_some(t / g.stride)
    };
    sources.clear();
    for oc in 0..g.og() {
        for ky in 0..g.kh {
            let Some(oy) = reader(iy, ky, g.oh) else {
                continue;
            };
            for kx in 0..g.kw {
                let Some(ox) = reader(ix, kx, g.ow) else {
                    continue;
                };
                let at = oc * plane + (oy * g.ow + ox) * s.lanes;
                sources.push((at, (oc * taps + ky * g.kw + kx) * cg));
            }
        }
    }
}

super::super::widest! {
    /// The group's weight gradient `dw` (`og × cg × taps`) from `xt` (its
    /// input) and `dyt` (its output gradient), both images innermost: for
    /// each weight, the sum over the output pixels whose tap reads inside
    /// the input and over the images of output gradient × input, on the
    /// widest vectors the processor has.
    fn weight_grads<T: Float>(xt: &[T], dyt: &[T], s: Shape, dw: &mut [MaybeUninit<T>]) -> () {
        match s.lanes {
            8 => weight_grads_of::<T, 8>(xt, dyt, s, dw),
            16 => weight_grads_of::<T, 16>(xt, dyt, s, dw),
            _ => weight_grads_of::<T, LANES>(xt, dyt, s, dw),
        }
    }
}

#[inline(always)]
fn weight_grads_of<T: Float, const L: usize>(
    xt: &[T],
    dyt: &[T],
    s: Shape,
    dw: &mut [MaybeUninit<T>],
) {
    let g = &s.g;
    let (cg, og, taps) = (g.cg(), g.og(), g.kh * g.kw);
    for ci in 0..cg {
        for ky in 0..g.kh {
            let rows = g.valid(ky, g.h, g.oh);
            for kx in 0..g.kw {
                let cols = g.valid(kx, g.w, g.ow);
                let tap = (ci, ky, kx);
                for o0 in (0..og).step_by(BLOCK) {
                    let sums = match BLOCK.min(og - o0) {
                        4 => tap_sums::<T, 4, L>(xt, dyt, &s, tap, (rows, cols), o0),
                        3 => tap_sums::<T, 3, L>(xt, dyt, &s, tap, (rows, cols), o0),
                        2 => tap_sums::<T, 2, L>(xt, dyt, &s, tap, (rows, cols), o0),
                        _ => tap_sums::<T, 1, L>(xt, dyt, &s, tap, (rows, cols), o0),
                    };
                    for (r, &v) in sums.iter().take(BLOCK.min(og - o0)).enumerate() {
                        dw[((o0 + r) * cg + ci) * taps + ky * g.kw + kx] = MaybeUninit::new(v);
                    }
                }
            }
        }
    }
}

/// The weight gradients of `OB` output channels from `o0` on for input
/// channel `ci`'s tap `(ky, kx)`: over output rows `rows` and columns `cols`
/// (those whose tap reads inside the input) and every image, output gradient
/// × input, summed across the images' lanes last.
#[inline(always)]
fn tap_sums<T: Float, const OB: usize, const L: usize>(
    xt: &[T],
    dyt: &[T],
    s: &Shape,
    (ci, ky, kx): (usize, usize, usize),
    ((y0, y1), (x0, x1)): ((usize, usize), (usize, usize)),
    o0: usize,
) -> [T; BLOCK] {
    let g = &s.g;
    let lanes = s.lanes;
    let (plane_x, plane_y) = (g.h * g.w * lanes, g.oh * g.ow * lanes);
    let mut acc = [[T::ZERO; L]; OB];
    for n0 in (0..lanes).step_by(L) {
        for oy in y0..y1 {
            let iy = oy * g.stride + ky - g.pad;
            for ox in x0..x1 {
                let ix = ox * g.stride + kx - g.pad;
                let src: &[T; L] = xt[ci * plane_x + (iy * g.w + ix) * lanes + n0..][..L]
                    .try_into()
                    .expect("a run of L");
                let pixel = (oy * g.ow + ox) * lanes + n0;
                for r in 0..OB {
                    let grad: &[T; L] = dyt[(o0 + r) * plane_y + pixel..][..L]
                        .try_into()
                        .expect("a run of L");
                    for l in 0..L {
                        acc[r][l] = grad[l].mul_add(src[l], acc[r][l]);
                    }
                }
            }
        }
    }
    let mut sums = [T::ZERO; BLOCK];
    for (sum, a) in sums.iter_mut().zip(&acc) {
        *sum = a.iter().fold(T::ZERO, |total, &v| total + v);
    }
    sums
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

    /// A grouped convolution of `n` images of `c` channels (`h × w`) into
    /// `o`, in `groups`, by a `k × k` kernel of `stride` padded by `k / 2`;
    /// and the same of one image.
    fn grouped(
        (n, c, o, groups, k, stride, h, w): (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        ),
    ) -> (Geometry, Geometry) {
        let conv = Conv2d {
            stride,
            padding: k / 2,
            groups,
        };
        let weights = [o, c / groups, k, k];
        let g = Geometry::new(conv, &[c, n, h, w], &weights).unwrap();
        assert!(suits(&g));
        (g, Geometry::new(conv, &[c, 1, h, w], &weights).unwrap())
    }

    /// The last of each channel's `n` images of `p` values.
    fn last_image(values: &[f32], channels: usize, n: usize, p: usize) -> Vec<f32> {
        (0..channels)
            .flat_map(|ch| values[(ch * n + n - 1) * p..][..p].iter().copied())
            .collect()
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// The direct path beside the unfolded one, through the same epilogue,
    /// in f64 and f32, on ResNeXt's shapes (stride 1 and 2) and odd ones;
    /// and an image's values the same to the bit in any batch.
    #[test]
    fn agrees_with_the_unfolded_convolution() {
        for &sizes in &[
            (2, 8, 8, 2, 3, 1, 4, 4),
            (3, 12, 6, 3, 3, 1, 5, 7),
            (2, 32, 32, 8, 3, 1, 2, 2),
            (1, 6, 9, 3, 1, 1, 3, 3),
            (2, 10, 10, 5, 5, 1, 6, 6),
            (5, 64, 64, 32, 3, 1, 16, 16),
            (33, 64, 64, 32, 3, 2, 8, 8),
            (2, 12, 18, 6, 3, 2, 7, 5),
        ] {
            let (n, c, o, groups, _, _, h, w) = sizes;
            let (g, g1) = grouped(sizes);
            let (case, case32) = (Case::new(&g), Case::new(&g).f32());
            let after = case.after(true, true);
            let unfolded =
                super::super::by_products(&g, &case.x, &case.w, None, Some(&after), None);
            let direct = forward(&g, &case.x, &case.w, Some(&after));
            let worst = super::super::worst(&unfolded, &direct, false);
            assert!(worst < 1e-12, "{n}x{c}x{h}x{w} -> {o} / {groups}: {worst}");

            let direct = forward(&g, &case32.x, &case32.w, None);
            let plain = super::super::by_products(&g, &case.x, &case.w, None, None, None);
            let worst = super::super::worst(&plain, &direct, false);
            assert!(
                worst < 1e-5,
                "f32 {n}x{c}x{h}x{w} -> {o} / {groups}: {worst}"
            );
            // The last image alone gives its values in the batch, to the bit.
            let single = forward(&g1, &last_image(&case32.x, c, n, h * w), &case32.w, None);
            assert!(same_bits(&last_image(&direct, o, n, g.p()), &single));
        }
    }

    /// The direct gradients beside the products' ones, in f64 and f32, on
    /// ResNeXt's shapes and odd ones (strides 1, 2 and 3, a 5 × 5 kernel, one
    /// image, a batch past one run of lanes); and an image's input gradient
    /// the same to the bit in any batch.
    #[test]
    fn gradients_agree_with_the_products() {
        for &sizes in &[
            (2, 8, 8, 2, 3, 1, 4, 4),
            (3, 12, 6, 3, 3, 1, 5, 7),
            (2, 32, 32, 8, 3, 1, 2, 2),
            (1, 6, 9, 3, 1, 1, 3, 3),
            (1, 16, 16, 4, 3, 2, 5, 5),
            (2, 10, 10, 5, 5, 1, 6, 6),
            (8, 128, 128, 32, 3, 1, 8, 8),
            (8, 64, 64, 32, 3, 2, 9, 9),
            (33, 64, 64, 32, 3, 2, 8, 8),
            (2, 12, 18, 6, 3, 2, 7, 5),
            (3, 8, 8, 2, 3, 3, 7, 8),
        ] {
            let (n, c, o, groups, _, stride, h, w) = sizes;
            let (g, g1) = grouped(sizes);
            let (case, case32) = (Case::new(&g), Case::new(&g).f32());
            // An output gradient of both signs from a fixed formula.
            let dy: Vec<f64> = (0..o * g.jt())
                .map(|i| (i * 4099 % 1013) as f64 / 101.0 - 5.0)
                .collect();
            let dy32: Vec<f32> = dy.iter().map(|&v| v as f32).collect();
            let (dx_ref, dw_ref) = super::super::backward_by_products(&g, &case.x, &case.w, &dy);
            let (dx, dw) = backward(&g, &case.x, &case.w, &dy);
            let shape = format!("{n}x{c}x{h}x{w} -> {o} / {groups}, stride {stride}");
            let worst = super::super::worst(&dx_ref, &dx, true);
            assert!(worst < 1e-12, "dx {shape}: {worst}");
            let worst = super::super::worst(&dw_ref, &dw, true);
            assert!(worst < 1e-12, "dw {shape}: {worst}");
            let (dx, dw) = backward(&g, &case32.x, &case32.w, &dy32);
            let worst = super::super::worst(&dx_ref, &dx, true);
            assert!(worst < 1e-5, "f32 dx {shape}: {worst}");
            let worst = super::super::worst(&dw_ref, &dw, true);
            assert!(worst < 1e-5, "f32 dw {shape}: {worst}");
            // The last image's output gradient alone gives its input gradient
            // in the batch, to the bit.
            let (single, _) = backward(
                &g1,
                &last_image(&case32.x, c, n, h * w),
                &case32.w,
                &last_image(&dy32, o, n, g.p()),
            );
            assert!(
                same_bits(&last_image(&dx, c, n, h * w), &single),
                "{shape}: an image's input gradient depends on its batch"
            );
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
