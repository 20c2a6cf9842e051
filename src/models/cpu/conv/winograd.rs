//! Winograd's minimal filtering F(2 × 2, 3 × 3) for evaluation's 3 × 3
//! convolutions of stride 1 and padding 1 (one group): each 2 × 2 block of
//! output pixels ("tile") comes from the 4 × 4 block of input around it
//! through 16 products per pair of channels instead of 36 multiply-adds
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016). With `d` a tile's input, `g` a kernel and `Y` the tile's output:
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`
//!
//! and the sum over input channels moves inside, so for each of the 16
//! positions ξ of the 4 × 4 transforms it is one matrix product
//! `M_ξ (O × tiles) = U_ξ (O × C) · V_ξ (C × tiles)`. The transforms'
//! constants are 0, ±1 and ±½ (exact in binary), so the results differ from
//! the direct product's by rounding only.
//!
//! Every evaluation takes the transform [`choose`] picks from the shapes
//! alone (the per-epoch judging in training as well as a model opened for
//! use), so a run's embeddings and `wfrun embed`'s stay the same to the bit.
//! Most maps of 4 × 4 and up take F(4 × 4, 3 × 3) ([`super::winograd4`]);
//! this one is left where it needs no more products than that one (6 × 6
//! maps). Its weights are transformed at each call: about 40 operations a
//! channel pair against 16 multiply-adds a pair for every tile, a small
//! share but for single images on small maps (one image on a 6 × 6 map, 9
//! tiles: about a seventh), and no memory kept.

use super::*;

/// Output pixels a side of a tile.
const TILE: usize = 2;
/// Positions of a tile's 4 × 4 transforms.
const XI: usize = 16;
/// Transformed values a chunk's input and products may hold together
/// (8 MiB of f32): the transforms' buffers stay in cache between the
/// passes.
const CHUNK_VALUES: usize = 1 << 21;
/// Tiles a chunk aims at at least: enough columns for efficient products.
const MIN_TILES: usize = 256;
/// Sides shorter than this keep the direct product. On 4 × 4 maps this
/// transform cost about what its products saved (ResNet-101 at 64 px, whose
/// layer 3 runs on them, was 2% faster with it only with 88 MiB of
/// transformed weights kept; BENCHMARKS.md); F(4 × 4, 3 × 3) takes them.
const MIN_SIDE: usize = 6;

/// Which transform an evaluation convolution takes, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transform {
    /// F(2 × 2, 3 × 3), this module's.
    F2,
    /// F(4 × 4, 3 × 3), [`super::winograd4`]'s.
    F4,
}

/// Which transform suits a convolution: F(4 × 4, 3 × 3) where it needs
/// fewer products than F(2 × 2, 3 × 3) (36 a tile of 16 pixels against 16 a
/// tile of 4) and clearly fewer multiply-adds than the direct product
/// ([`worth`]'s rule with 36 a tile), else F(2 × 2, 3 × 3) where [`worth`],
/// else none. The choice depends on the shapes only, never on whether the
/// weights are kept, so every evaluation of a network gives the same values.
pub(super) fn choose(g: &Geometry) -> Option<Transform> {
    if !(g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1 && g.groups == 1) {
        return None;
    }
    let inside = (3 * g.h - 2) * (3 * g.w - 2);
    let tiles2 = g.h.div_ceil(TILE) * g.w.div_ceil(TILE);
    let tiles4 = g.h.div_ceil(super::winograd4::TILE) * g.w.div_ceil(super::winograd4::TILE);
    let xi4 = super::winograd4::XI;
    if g.h >= 4 && g.w >= 4 && xi4 * tiles4 < XI * tiles2 && 5 * xi4 * tiles4 <= 4 * inside {
        return Some(Transform::F4);
    }
    worth(g).then_some(Transform::F2)
}

/// Whether F(2 × 2, 3 × 3) does clearly fewer multiply-adds than the direct
/// product over the taps inside the input (on small maps the class-by-class
/// path already leaves the padding out): `16` a tile against the taps of
/// its pixels that read inside the input, at most four fifths of them; and
/// sides of [`MIN_SIDE`] and up.
pub(super) fn worth(g: &Geometry) -> bool {
    if !(g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad == 1 && g.groups == 1) {
        return false;
    }
    if g.h < MIN_SIDE || g.w < MIN_SIDE {
        return false;
    }
    let tiles = g.h.div_ceil(TILE) * g.w.div_ceil(TILE);
    // Taps of a 3 × 3 kernel with padding 1 inside an h-long side: 3h − 2.
    let inside = (3 * g.h - 2) * (3 * g.w - 2);
    5 * XI * tiles <= 4 * inside
}

/// The weights `w` (O × C × 3 × 3) transformed, `U_ξ = G g Gᵀ`: 16
/// matrices O × C, one after another.
fn transform_weights<T: Float>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let mut u = vec![T::ZERO; XI * o * c];
    for oc in 0..o {
        for ci in 0..c {
            let g = &w[(oc * c + ci) * 9..][..9];
            // t = G g (4 × 3): rows g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2.
            let mut t = [[T::ZERO; 3]; 4];
            for k in 0..3 {
                let (g0, g1, g2) = (g[k], g[3 + k], g[6 + k]);
                t[0][k] = g0;
                t[1][k] = (g0 + g1 + g2) * half;
                t[2][k] = (g0 - g1 + g2) * half;
                t[3][k] = g2;
            }
            // t Gᵀ (4 × 4), the same on each row.
            for (i, r) in t.iter().enumerate() {
                let row = [
                    r[0],
                    (r[0] + r[1] + r[2]) * half,
                    (r[0] - r[1] + r[2]) * half,
                    r[2],
                ];
                for (j, v) in row.into_iter().enumerate() {
                    u[((4 * i + j) * o + oc) * c + ci] = v;
                }
            }
        }
    }
    u
}

/// A raw pointer the transforms' parts write disjoint elements through.
#[derive(Clone, Copy)]
pub(super) struct Shared<T>(pub(super) *mut T);
// SAFETY: each part writes only elements no other part touches (see the
// callers), and the buffer outlives the parts.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that closures capture the `Sync` wrapper).
    pub(super) fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// Runs `f(first, last)` over `[0, len)` in blocks, on the team when there
/// is work enough.
pub(super) fn blocks(len: usize, work: usize, f: impl Fn(usize, usize) + Sync) {
    let parts = if threads() > 1 && work >= 1 << 16 {
        (threads() * 4).min(len)
    } else {
        1
    };
    let run = len.div_ceil(parts.max(1));
    let part = |i: usize| f(i * run, ((i + 1) * run).min(len));
    if parts > 1 {
        super::super::team::for_each(len.div_ceil(run), &part);
    } else {
        part(0);
    }
}

/// The convolution of `x` (C, N, H, W) by the weights `w` (O, C, 3, 3),
/// through `after`: the weights transformed, then [`products`].
pub(super) fn convolve<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    after: Option<&After<T>>,
) -> Vec<T> {
    let u = time(Kernel::Winograd, || transform_weights(w, g.o, g.c));
    let tiles = Tiles {
        tile: TILE,
        xi: XI,
        input: transform_input,
        output: transform_output,
    };
    products(g, x, &u, &tiles, after)
}

/// A transform of a chunk of images `(n0, nc)`'s input into `V` (ξ matrices
/// C × tiles).
type Input<T> = fn(&Geometry, &[T], (usize, usize), &mut [T]);
/// A transform of a chunk's products `M` into its output pixels, through the
/// epilogue.
type Output<T> =
    fn(&Geometry, &[T], (usize, usize), Option<&After<T>>, &DisjointMut<MaybeUninit<T>>);

/// What a Winograd transform brings to [`products`]: its tile's side in
/// output pixels, its positions ξ, and its input and output transforms.
pub(super) struct Tiles<T> {
    pub(super) tile: usize,
    pub(super) xi: usize,
    pub(super) input: Input<T>,
    pub(super) output: Output<T>,
}

/// The convolution of `x` (C, N, H, W) by the transformed weights `u` (ξ
/// matrices O × C) through `after`, chunk by chunk of images: the input
/// transform, the ξ products `M_ξ = U_ξ · V_ξ` side by side on the team,
/// the output transform.
pub(super) fn products<T: Float>(
    g: &Geometry,
    x: &[T],
    u: &[T],
    tiles: &Tiles<T>,
    after: Option<&After<T>>,
) -> Vec<T> {
    let (c, o, xis) = (g.c, g.o, tiles.xi);
    assert_eq!(u.len(), xis * o * c, "transformed weights of another shape");
    let mut y = uninit::<T>(o * g.jt());
    let out = DisjointMut::new(&mut y);
    let per_image = g.h.div_ceil(tiles.tile) * g.w.div_ceil(tiles.tile);
    let target = (CHUNK_VALUES / (xis * (c + o))).max(MIN_TILES);
    let nc_max = target.div_ceil(per_image).clamp(1, g.n.max(1));
    let (mut v, mut m) = (Vec::new(), Vec::new());
    for n0 in (0..g.n).step_by(nc_max) {
        let nc = nc_max.min(g.n - n0);
        let j = nc * per_image;
        v.resize(xis * c * j, T::ZERO);
        m.resize(xis * o * j, T::ZERO);
        time(Kernel::Winograd, || (tiles.input)(g, x, (n0, nc), &mut v));
        let mv = Shared(m.as_mut_ptr());
        let product = |xi: usize| {
            // SAFETY: product ξ writes only M_ξ's O × J values.
            let dst = unsafe { std::slice::from_raw_parts_mut(mv.at(xi * o * j), o * j) };
            gemm(
                (o, j, c),
                dst,
                j,
                false,
                &u[xi * o * c..][..o * c],
                (c, 1),
                &v[xi * c * j..][..c * j],
                (j, 1),
                1,
            );
        };
        if threads() > 1 {
            super::super::team::for_each(xis, &product);
        } else {
            (0..xis).for_each(product);
        }
        time(Kernel::Winograd, || {
            (tiles.output)(g, &m, (n0, nc), after, &out)
        });
    }
    // SAFETY: the output transform wrote every output pixel of every chunk.
    unsafe { assume_init(y) }
}

/// `V_ξ = Bᵀ d B` for every input channel and tile of images `n0..n0 + nc`:
/// `v` holds 16 matrices C × J (J the chunk's tiles, image by image, row by
/// row). A row of tiles at a time: `Bᵀ` across the four input rows (whole
/// rows, so it vectorises), the rows split into even and odd columns, then
/// `B` across each tile's columns, tile after tile.
fn transform_input<T: Float>(g: &Geometry, x: &[T], (n0, nc): (usize, usize), v: &mut [T]) {
    let (c, h, w) = (g.c, g.h, g.w);
    let (th, tw) = (h.div_ceil(TILE), w.div_ceil(TILE));
    let j = nc * th * tw;
    // A tile's input rows and columns 2t − 1 .. 2t + 3; those outside the
    // image read zero (the padding, and past an odd side's end).
    let (ph, pw) = (TILE * th + 2, TILE * tw + 2);
    let vs = Shared(v.as_mut_ptr());
    blocks(c, c * nc * h * w, |c0, c1| {
        // Each plane is copied inside a border that stays zero.
        let mut padded = vec![T::ZERO; ph * pw];
        // Bᵀ's four rows, each split into its even and odd columns.
        let half = tw + 1;
        let mut even = vec![T::ZERO; 4 * half];
        let mut odd = vec![T::ZERO; 4 * half];
        for ci in c0..c1 {
            for ni in 0..nc {
                let plane = &x[(ci * g.n + n0 + ni) * h * w..][..h * w];
                for (y, row) in plane.chunks(w).enumerate() {
                    padded[(y + 1) * pw + 1..][..w].copy_from_slice(row);
                }
                for ty in 0..th {
                    let r = |k: usize| &padded[(TILE * ty + k) * pw..][..pw];
                    let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
                    // Bᵀ d: rows d0 − d2, d1 + d2, d2 − d1, d1 − d3.
                    for q in 0..half {
                        for (par, dst) in [(0, &mut even), (1, &mut odd)] {
                            let x = 2 * q + par;
                            let (a, b, cc, d) = (r0[x], r1[x], r2[x], r3[x]);
                            dst[q] = a - cc;
                            dst[half + q] = b + cc;
                            dst[2 * half + q] = cc - b;
                            dst[3 * half + q] = b - d;
                        }
                    }
                    let col0 = ni * th * tw + ty * tw;
                    for i in 0..4 {
                        let (e, o) = (&even[i * half..][..half], &odd[i * half..][..half]);
                        // (Bᵀ d) B across a tile's columns a b c d (even,
                        // odd, next even, next odd): a − c, b + c, c − b, b − d.
                        // SAFETY: channel ci's values are this part's alone,
                        // each of the four rows of tw within V.
                        let row = |k: usize| unsafe {
                            std::slice::from_raw_parts_mut(
                                vs.at(((4 * i + k) * c + ci) * j + col0),
                                tw,
                            )
                        };
                        let (v0, v1, v2, v3) = (row(0), row(1), row(2), row(3));
                        for t in 0..tw {
                            let (a, b, cc, d) = (e[t], o[t], e[t + 1], o[t + 1]);
                            v0[t] = a - cc;
                            v1[t] = b + cc;
                            v2[t] = cc - b;
                            v3[t] = b - d;
                        }
                    }
                }
            }
        }
    });
}

/// `Y = Aᵀ M A` for every output channel and tile, through `after`, into
/// the output pixels that exist (an odd side's last tile is cut). A row of
/// tiles at a time, across the row (so it vectorises).
fn transform_output<T: Float>(
    g: &Geometry,
    m: &[T],
    (n0, nc): (usize, usize),
    after: Option<&After<T>>,
    out: &DisjointMut<MaybeUninit<T>>,
) {
    let (o, h, w) = (g.o, g.h, g.w);
    let (th, tw) = (h.div_ceil(TILE), w.div_ceil(TILE));
    let j = nc * th * tw;
    let (p, jt) = (g.p(), g.jt());
    blocks(o, o * j * XI, |o0, o1| {
        // Aᵀ M's two rows of four, then each output row's pixels.
        let mut s = vec![T::ZERO; 8 * tw];
        let mut line = vec![T::ZERO; TILE * tw];
        for oc in o0..o1 {
            // SAFETY: each output channel's row is written by one part only.
            let row = unsafe { out.range(oc * jt, jt) };
            for ni in 0..nc {
                let base = (n0 + ni) * p;
                for ty in 0..th {
                    let col0 = ni * th * tw + ty * tw;
                    let ms = |xi: usize| &m[(xi * o + oc) * j + col0..][..tw];
                    // Aᵀ M: rows m0 + m1 + m2 and m1 − m2 − m3 (of M's rows).
                    for k in 0..4 {
                        let (a, b, cc, d) = (ms(k), ms(4 + k), ms(8 + k), ms(12 + k));
                        let (top, bottom) = s.split_at_mut(4 * tw);
                        let (top, bottom) = (&mut top[k * tw..][..tw], &mut bottom[k * tw..][..tw]);
                        for t in 0..tw {
                            top[t] = a[t] + b[t] + cc[t];
                            bottom[t] = b[t] - cc[t] - d[t];
                        }
                    }
                    for dy in 0..TILE {
                        let y = TILE * ty + dy;
                        if y >= h {
                            break;
                        }
                        let r = &s[dy * 4 * tw..][..4 * tw];
                        let (r0, r1, r2, r3) =
                            (&r[..tw], &r[tw..2 * tw], &r[2 * tw..3 * tw], &r[3 * tw..]);
                        for t in 0..tw {
                            line[2 * t] = r0[t] + r1[t] + r2[t];
                            line[2 * t + 1] = r1[t] - r2[t] - r3[t];
                        }
                        let at = base + y * w;
                        let values = &mut line[..w];
                        if let Some(after) = after {
                            after.apply(oc, at, jt, values);
                        }
                        for (d, &v) in row[at..at + w].iter_mut().zip(values.iter()) {
                            *d = MaybeUninit::new(v);
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct forward pass beside the transform's, through the same
    /// epilogue, on maps of even and odd sides, in f64 (agreeing to
    /// rounding) and f32.
    #[test]
    fn agrees_with_the_direct_convolution() {
        let conv = Conv2d {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        for &(n, c, o, h, w) in &[
            (2, 3, 5, 4, 4),
            (1, 4, 2, 5, 7),
            (3, 2, 3, 8, 6),
            (2, 5, 4, 9, 9),
            (1, 1, 1, 4, 5),
            (40, 3, 2, 4, 4),
        ] {
            let g = Geometry::new(conv, &[c, n, h, w], &[o, c, 3, 3]).unwrap();
            let (case, case32) = (Case::new(&g), Case::new(&g).f32());
            for (residual, relu) in [(false, false), (true, true)] {
                let after = case.after(residual, relu);
                let direct = super::super::forward(&g, &case.x, &case.w, None, Some(&after), None);
                let y = convolve(&g, &case.x, &case.w, Some(&after));
                let worst = super::super::worst(&direct, &y, false);
                assert!(worst < 1e-12, "{n}x{c}x{h}x{w} -> {o}: {worst}");

                let after = case32.after(residual, relu);
                let y = convolve(&g, &case32.x, &case32.w, Some(&after));
                let worst = super::super::worst(&direct, &y, false);
                assert!(worst < 1e-5, "f32 {n}x{c}x{h}x{w} -> {o}: {worst}");
            }
        }
    }

    #[test]
    fn small_maps_and_other_convolutions_keep_the_direct_path() {
        let conv = Conv2d {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let geometry = |h: usize, w: usize| Geometry::new(conv, &[8, 2, h, w], &[8, 8, 3, 3]);
        assert!(!worth(&geometry(4, 4).unwrap()));
        assert!(worth(&geometry(6, 6).unwrap()));
        assert!(worth(&geometry(7, 7).unwrap()));
        assert!(worth(&geometry(56, 56).unwrap()));
        assert!(!worth(&geometry(2, 2).unwrap()));
        assert!(!worth(&geometry(3, 3).unwrap()));
        let other = |conv: Conv2d, k: usize| {
            worth(&Geometry::new(conv, &[64, 2, 16, 16], &[64, 64 / conv.groups, k, k]).unwrap())
        };
        assert!(other(conv, 3));
        assert!(!other(Conv2d { stride: 2, ..conv }, 3));
        assert!(!other(Conv2d { padding: 0, ..conv }, 3));
        assert!(!other(conv, 1));
        assert!(!other(Conv2d { groups: 32, ..conv }, 3));
    }
}
