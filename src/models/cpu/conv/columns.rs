//! Unfolding images into columns (im2col) and folding column gradients
//! back onto the input (col2im), and the per-thread buffer the columns live in.

use super::*;

/// Unfolds images `[n0, n0 + nc)` of `x` into `col` (`C · kh · kw × nc · P`, row-major).
pub(super) fn im2col<T: Float>(g: &Geometry, x: &[T], n0: usize, nc: usize, col: &mut [T]) {
    time(Kernel::Unfold, || im2col_impl(g, x, n0, nc, col))
}

pub(super) fn im2col_impl<T: Float>(g: &Geometry, x: &[T], n0: usize, nc: usize, col: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    let j = nc * p;
    let taps = g.kh * g.kw;
    // The plane of channel `ci`, image `n`.
    let plane = |ci: usize, n: usize| &x[(ci * g.n + n) * hw..][..hw];
    if g.ow < SHORT_ROWS {
        // Small feature maps: a gather through each tap's sources.
        let sources = g.sources();
        par_chunks(col, j, col.len(), |row, out| {
            let (ci, t) = (row / taps, row % taps);
            let pairs = sources.of(t);
            for ni in 0..nc {
                let plane = plane(ci, n0 + ni);
                let out = &mut out[ni * p..(ni + 1) * p];
                if pairs.len() < p {
                    zero(out);
                }
                for &(q, from) in pairs {
                    out[q as usize] = plane[from as usize];
                }
            }
        });
        return;
    }
    par_chunks(col, j, col.len(), |row, out| {
        let (ci, ky, kx) = (row / taps, row / g.kw % g.kh, row % g.kw);
        let (y0, y1) = g.valid(ky, g.h, g.oh);
        let (x0, x1) = g.valid(kx, g.w, g.ow);
        for ni in 0..nc {
            let plane = plane(ci, n0 + ni);
            let out = &mut out[ni * p..(ni + 1) * p];
            zero(&mut out[..y0 * g.ow]);
            zero(&mut out[y1 * g.ow..]);
            for oy in y0..y1 {
                let orow = &mut out[oy * g.ow..(oy + 1) * g.ow];
                let iy = oy * g.stride + ky - g.pad;
                let irow = &plane[iy * g.w..(iy + 1) * g.w];
                zero(&mut orow[..x0]);
                zero(&mut orow[x1..]);
                if x0 == x1 {
                    continue;
                }
                let ix0 = x0 * g.stride + kx - g.pad;
                if g.stride == 1 {
                    copy(&mut orow[x0..x1], &irow[ix0..ix0 + (x1 - x0)]);
                } else {
                    for (k, v) in orow[x0..x1].iter_mut().enumerate() {
                        *v = irow[ix0 + k * g.stride];
                    }
                }
            }
        }
    });
}

/// `dst = src` element by element: for the short rows of small feature maps a
/// loop beats a call to `memcpy`.
#[inline(always)]
pub(super) fn copy<T: Float>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s;
    }
}

#[inline(always)]
pub(super) fn zero<T: Float>(dst: &mut [T]) {
    for d in dst {
        *d = T::ZERO;
    }
}

/// Adds the columns' gradient `dcol` (`C · kh · kw × nc · P`) onto the input
/// gradient of images `[n0, n0 + nc)`: the transpose of [`im2col`].
pub(super) fn col2im<T: Float>(g: &Geometry, dcol: &[T], n0: usize, nc: usize, dx: &mut [T]) {
    time(Kernel::Fold, || col2im_impl(g, dcol, n0, nc, dx))
}

pub(super) fn col2im_impl<T: Float>(g: &Geometry, dcol: &[T], n0: usize, nc: usize, dx: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    let j = nc * p;
    let taps = g.kh * g.kw;
    let sources = (g.ow < SHORT_ROWS).then(|| g.sources());
    // One channel's planes at a time (all images; this chunk's are touched).
    par_chunks(dx, g.n * hw, dcol.len(), |ci, planes| {
        for ni in 0..nc {
            let plane = &mut planes[(n0 + ni) * hw..(n0 + ni + 1) * hw];
            for t in 0..taps {
                let row = &dcol[(ci * taps + t) * j + ni * p..][..p];
                if let Some(sources) = &sources {
                    for &(q, to) in sources.of(t) {
                        plane[to as usize] += row[q as usize];
                    }
                    continue;
                }
                let (ky, kx) = (t / g.kw, t % g.kw);
                let (y0, y1) = g.valid(ky, g.h, g.oh);
                let (x0, x1) = g.valid(kx, g.w, g.ow);
                if x0 == x1 {
                    continue;
                }
                for oy in y0..y1 {
                    let iy = oy * g.stride + ky - g.pad;
                    let prow = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let grow = &row[oy * g.ow..(oy + 1) * g.ow];
                    let ix0 = x0 * g.stride + kx - g.pad;
                    if g.stride == 1 {
                        for (d, &v) in prow[ix0..ix0 + (x1 - x0)].iter_mut().zip(&grow[x0..x1]) {
                            *d += v;
                        }
                    } else {
                        for (k, &v) in grow[x0..x1].iter().enumerate() {
                            prow[ix0 + k * g.stride] += v;
                        }
                    }
                }
            }
        }
    });
}

/// The unfolding buffer of this thread, at least `len` long: kept between
/// calls, so it is neither allocated nor cleared for every convolution
/// (every element a convolution reads from it, it has written first).
pub(super) fn with_columns<T: Float, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut v = T::take_scratch();
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
    let r = f(&mut v[..len]);
    T::put_scratch(v);
    r
}
