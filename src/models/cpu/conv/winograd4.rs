//! Winograd's F(4 × 4, 3 × 3) for evaluation's 3 × 3 convolutions of
//! stride 1 and padding 1 (one group): each 4 × 4 block of output pixels ("tile")
//! comes from the 6 × 6 block of input around it through 36 products per
//! pair of channels instead of 144 multiply-adds (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016, with their
//! interpolation points 0, ±1, ±2). As in [`super::winograd`]'s
//! F(2 × 2, 3 × 3), `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` and the sum over
//! input channels is one product per position ξ of the 6 × 6 transforms,
//! `M_ξ (O × tiles) = U_ξ (O × C) · V_ξ (C × tiles)`.
//!
//! On a 4 × 4 map (ResNet-101's layer 3 at 64 px) one tile covers an image:
//! 36 products a channel pair against the 100 taps the direct path reads
//! inside the input, and against F(2 × 2)'s 64. Its constants (¼, ⅙, 1/12,
//! 1/24, 2, 4, 5, 8) are not all exact in binary, so it rounds a little
//! worse than the direct product (in f32, about 1e-6 of the output's
//! scale a layer; the tests bound it).
//!
//! The transforms work on blocks of [`LANES`] tiles side by side, so each
//! step is a loop over the block that vectorises; the weights' transform
//! likewise over blocks of channel pairs.

use super::winograd::{blocks, products, Shared, Tiles};
use super::*;

/// Output pixels a side of a tile.
pub(super) const TILE: usize = 4;
/// Input pixels a side of a tile's transform.
const ALPHA: usize = 6;
/// Positions of a tile's 6 × 6 transforms.
pub(super) const XI: usize = ALPHA * ALPHA;
/// Tiles (or channel pairs) transformed side by side.
const LANES: usize = 64;

/// `G x` for a column `x` of a kernel: `G`'s rows ¼ (1 0 0), −⅙ (1 1 1),
/// −⅙ (1 −1 1), (1/24 1/12 ⅙), (1/24 −1/12 ⅙), (0 0 1).
#[inline(always)]
fn g6<T: Float>(x0: T, x1: T, x2: T) -> [T; 6] {
    let quarter = T::from_f64(0.25);
    let sixth = T::from_f64(1.0 / 6.0);
    let twelfth = T::from_f64(1.0 / 12.0);
    let twenty_fourth = T::from_f64(1.0 / 24.0);
    let outer = x0 + x2;
    let a = x0 * twenty_fourth + x2 * sixth;
    let b = x1 * twelfth;
    [
        x0 * quarter,
        T::ZERO - (outer + x1) * sixth,
        (x1 - outer) * sixth,
        a + b,
        a - b,
        x2,
    ]
}

/// `Bᵀ d` for six rows `d` of `len` values, into six rows of `out`
/// (`stride` apart): 4d₀ − 5d₂ + d₄, d₃ + d₄ − 4(d₁ + d₂),
/// d₄ − d₃ + 4(d₁ − d₂), d₄ − d₂ + 2(d₃ − d₁), d₄ − d₂ − 2(d₃ − d₁),
/// 4d₁ − 5d₃ + d₅.
#[inline(always)]
fn bt<T: Float>(d: [&[T]; ALPHA], out: &mut [T], stride: usize, len: usize) {
    let (four, five, two) = (T::from_f64(4.0), T::from_f64(5.0), T::from_f64(2.0));
    let [d0, d1, d2, d3, d4, d5] = d.map(|r| &r[..len]);
    let (o0, rest) = out.split_at_mut(stride);
    let (o1, rest) = rest.split_at_mut(stride);
    let (o2, rest) = rest.split_at_mut(stride);
    let (o3, rest) = rest.split_at_mut(stride);
    let (o4, o5) = rest.split_at_mut(stride);
    let (o0, o1, o2, o3, o4, o5) = (
        &mut o0[..len],
        &mut o1[..len],
        &mut o2[..len],
        &mut o3[..len],
        &mut o4[..len],
        &mut o5[..len],
    );
    for t in 0..len {
        let (a, b, c, d, e, f) = (d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]);
        o0[t] = four * a - five * c + e;
        o1[t] = d + e - four * (b + c);
        o2[t] = e - d + four * (b - c);
        let (p, q) = (e - c, two * (d - b));
        o3[t] = p + q;
        o4[t] = p - q;
        o5[t] = four * b - five * d + f;
    }
}

/// `Aᵀ m` for six rows `m` of `len` values, into four rows of `out`
/// (`stride` apart): m₀ + m₁ + m₂ + m₃ + m₄, m₁ − m₂ + 2(m₃ − m₄),
/// m₁ + m₂ + 4(m₃ + m₄), m₁ − m₂ + 8(m₃ − m₄) + m₅.
#[inline(always)]
fn at<T: Float>(m: [&[T]; ALPHA], out: &mut [T], stride: usize, len: usize) {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let [m0, m1, m2, m3, m4, m5] = m.map(|r| &r[..len]);
    let (o0, rest) = out.split_at_mut(stride);
    let (o1, rest) = rest.split_at_mut(stride);
    let (o2, o3) = rest.split_at_mut(stride);
    let (o0, o1, o2, o3) = (
        &mut o0[..len],
        &mut o1[..len],
        &mut o2[..len],
        &mut o3[..len],
    );
    for t in 0..len {
        let (a, b, c, d, e, f) = (m0[t], m1[t], m2[t], m3[t], m4[t], m5[t]);
        let (sum, diff) = (b + c, b - c);
        let (sum2, diff2) = (d + e, d - e);
        o0[t] = a + sum + sum2;
        o1[t] = diff + two * diff2;
        o2[t] = sum + four * sum2;
        o3[t] = diff + eight * diff2 + f;
    }
}

/// The weights `w` (O × C × 3 × 3) transformed, `U_ξ = G g Gᵀ`: 36
/// matrices O × C, one after another; blocks of channel pairs side by side.
fn transform_weights<T: Float>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let pairs = o * c;
    let mut u = uninit::<T>(XI * pairs);
    let us = Shared(u.as_mut_ptr().cast::<T>());
    blocks(pairs.div_ceil(LANES), pairs * XI, |b0, b1| {
        let mut g = [[T::ZERO; LANES]; 9];
        let mut t = [[[T::ZERO; LANES]; 3]; ALPHA];
        for block in b0..b1 {
            let p0 = block * LANES;
            let len = LANES.min(pairs - p0);
            for (l, kernel) in w[p0 * 9..][..len * 9].chunks_exact(9).enumerate() {
                for (k, &v) in kernel.iter().enumerate() {
                    g[k][l] = v;
                }
            }
            // t = G g (6 × 3), a kernel column at a time.
            for k in 0..3 {
                for l in 0..len {
                    let r = g6(g[k][l], g[3 + k][l], g[6 + k][l]);
                    for (i, v) in r.into_iter().enumerate() {
                        t[i][k][l] = v;
                    }
                }
            }
            // U = t Gᵀ (6 × 6), a row of t at a time.
            for (i, ti) in t.iter().enumerate() {
                // SAFETY: the block's pairs are this part's alone, in each
                // of the 36 matrices.
                let rows: [&mut [T]; ALPHA] = std::array::from_fn(|j| unsafe {
                    std::slice::from_raw_parts_mut(us.at((ALPHA * i + j) * pairs + p0), len)
                });
                let [r0, r1, r2, r3, r4, r5] = rows;
                for l in 0..len {
                    let r = g6(ti[0][l], ti[1][l], ti[2][l]);
                    r0[l] = r[0];
                    r1[l] = r[1];
                    r2[l] = r[2];
                    r3[l] = r[3];
                    r4[l] = r[4];
                    r5[l] = r[5];
                }
            }
        }
    });
    // SAFETY: every block wrote its pairs in all 36 matrices.
    unsafe { assume_init(u) }
}

/// The convolution of `x` (C, N, H, W) by the weights `w` (O, C, 3, 3),
/// through `after`; the transformed weights from `kept` when given.
pub(super) fn convolve<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    kept: Option<&Kept>,
    after: Option<&After<T>>,
) -> Vec<T> {
    let u = Kept::winograd4(kept, || transform_weights(w, g.o, g.c));
    let tiles = Tiles {
        tile: TILE,
        xi: XI,
        input: transform_input,
        output: transform_output,
    };
    products(g, x, &u, &tiles, after)
}

/// `V_ξ = Bᵀ d B` for every input channel and tile of images `n0..n0 + nc`:
/// `v` holds 36 matrices C × J (J the chunk's tiles, image by image, row by
/// row). Per channel, the chunk's images are copied inside a zero border,
/// then [`LANES`] tiles at a time are gathered (`d`, 36 rows of a block),
/// transformed across their rows and then their columns.
fn transform_input<T: Float>(g: &Geometry, x: &[T], (n0, nc): (usize, usize), v: &mut [T]) {
    let (c, h, w) = (g.c, g.h, g.w);
    let (th, tw) = (h.div_ceil(TILE), w.div_ceil(TILE));
    let j = nc * th * tw;
    // A tile's input rows and columns 4t − 1 .. 4t + 5; those outside the
    // image read zero (the padding, and past a side's end).
    let (ph, pw) = (TILE * th + 2, TILE * tw + 2);
    let vs = Shared(v.as_mut_ptr());
    blocks(c, c * nc * h * w, |c0, c1| {
        let mut padded = vec![T::ZERO; nc * ph * pw];
        let mut d = [T::ZERO; XI * LANES];
        let mut rows = [T::ZERO; XI * LANES];
        let mut out = [T::ZERO; XI * LANES];
        for ci in c0..c1 {
            for ni in 0..nc {
                let plane = &x[(ci * g.n + n0 + ni) * h * w..][..h * w];
                let image = &mut padded[ni * ph * pw..][..ph * pw];
                for (y, row) in plane.chunks(w).enumerate() {
                    image[(y + 1) * pw + 1..][..w].copy_from_slice(row);
                }
            }
            for col0 in (0..j).step_by(LANES) {
                let len = LANES.min(j - col0);
                for l in 0..len {
                    let tile = col0 + l;
                    let (ni, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
                    let image = &padded[ni * ph * pw..][..ph * pw];
                    for r in 0..ALPHA {
                        let src = &image[(TILE * ty + r) * pw + TILE * tx..][..ALPHA];
                        for (k, &value) in src.iter().enumerate() {
                            d[(ALPHA * r + k) * LANES + l] = value;
                        }
                    }
                }
                // Bᵀ d: for each column k, across the six rows.
                for k in 0..ALPHA {
                    let src = std::array::from_fn(|r| &d[(ALPHA * r + k) * LANES..][..LANES]);
                    bt(src, &mut rows[k * LANES..], ALPHA * LANES, len);
                }
                // (Bᵀ d) B: for each row i, across its six columns.
                for i in 0..ALPHA {
                    let src = std::array::from_fn(|k| &rows[(ALPHA * i + k) * LANES..][..LANES]);
                    bt(src, &mut out[ALPHA * i * LANES..], LANES, len);
                }
                for xi in 0..XI {
                    // SAFETY: channel ci's values are this part's alone, in
                    // each of the 36 matrices.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(vs.at((xi * c + ci) * j + col0), len)
                    };
                    dst.copy_from_slice(&out[xi * LANES..][..len]);
                }
            }
        }
    });
}

/// `Y = Aᵀ M A` for every output channel and tile, through `after`, into
/// the output pixels that exist: per output channel, [`LANES`] tiles at a
/// time across M's rows and then the columns, each tile's 4 × 4 pixels put
/// into the chunk's images, then `after` across them.
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
        let mut rows = [T::ZERO; TILE * ALPHA * LANES];
        let mut y = [T::ZERO; TILE * TILE * LANES];
        let mut images = vec![T::ZERO; nc * p];
        for oc in o0..o1 {
            for col0 in (0..j).step_by(LANES) {
                let len = LANES.min(j - col0);
                // Aᵀ M: for each column k, across the six rows.
                for k in 0..ALPHA {
                    let src =
                        std::array::from_fn(|r| &m[((ALPHA * r + k) * o + oc) * j + col0..][..len]);
                    at(src, &mut rows[k * LANES..], ALPHA * LANES, len);
                }
                // (Aᵀ M) A: for each row i, across its six columns.
                for i in 0..TILE {
                    let src = std::array::from_fn(|k| &rows[(ALPHA * i + k) * LANES..][..LANES]);
                    at(src, &mut y[TILE * i * LANES..], LANES, len);
                }
                for l in 0..len {
                    let tile = col0 + l;
                    let (ni, ty, tx) = (tile / (th * tw), tile / tw % th, tile % tw);
                    let image = &mut images[ni * p..][..p];
                    for dy in 0..TILE.min(h - TILE * ty) {
                        let yy = TILE * ty + dy;
                        for dx in 0..TILE.min(w - TILE * tx) {
                            image[yy * w + TILE * tx + dx] = y[(TILE * dy + dx) * LANES + l];
                        }
                    }
                }
            }
            if let Some(after) = after {
                after.apply(oc, n0 * p, jt, &mut images);
            }
            // SAFETY: each output channel's row is written by one part only.
            let row = unsafe { out.range(oc * jt + n0 * p, nc * p) };
            for (d, &v) in row.iter_mut().zip(images.iter()) {
                *d = MaybeUninit::new(v);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct forward pass beside the transform's, through the same
    /// epilogue, on maps of sides that are and are not multiples of four,
    /// in f64 (agreeing to rounding) and f32.
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
            (6, 2, 3, 17, 13),
            (3, 70, 9, 4, 4),
            (2, 3, 67, 2, 3),
        ] {
            let g = Geometry::new(conv, &[c, n, h, w], &[o, c, 3, 3]).unwrap();
            let (case, case32) = (Case::new(&g), Case::new(&g).f32());
            for (residual, relu) in [(false, false), (true, true)] {
                let after = case.after(residual, relu);
                let direct = super::super::forward(&g, &case.x, &case.w, None, Some(&after), None);
                let y = convolve(&g, &case.x, &case.w, None, Some(&after));
                let worst = super::super::worst(&direct, &y, true);
                assert!(worst < 1e-13, "{n}x{c}x{h}x{w} -> {o}: {worst}");

                let after = case32.after(residual, relu);
                let y = convolve(&g, &case32.x, &case32.w, None, Some(&after));
                // Kept weights give the same values to the bit.
                let kept = Kept::default();
                for _ in 0..2 {
                    let again = convolve(&g, &case32.x, &case32.w, Some(&kept), Some(&after));
                    assert!(again
                        .iter()
                        .zip(&y)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                }
                // About ten times the direct product's rounding in f32 (up
                // to 5.5e-6 of the scale here, against 4.3e-7).
                let worst = super::super::worst(&direct, &y, true);
                assert!(worst < 2e-5, "f32 {n}x{c}x{h}x{w} -> {o}: {worst}");
            }
        }
    }
}
