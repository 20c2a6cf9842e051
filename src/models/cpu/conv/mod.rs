//! 2-D convolution of channels-first activations (`C × N × H × W`: each
//! channel's images side by side), PyTorch's weight layout `O × C/g × kh × kw`,
//! any stride, padding and groups, through matrix products.
//!
//! Channels first, the activations of a whole batch are one matrix `C × N·P`
//! (`P` pixels an image), so per group:
//!
//! - a 1 × 1 convolution of stride 1 is one product, `Y_g = W_g · X_g`, with
//!   no copy of anything, and its gradients likewise (`dX_g = W_gᵀ · dY_g`,
//!   `dW_g = dY_g · X_gᵀ`);
//! - any other unfolds a chunk of images into columns (`K × J`, `K = C/g ·
//!   kh · kw`, `J` the chunk's output pixels, about 512 and the columns under
//!   32 MiB) and writes `Y_g = W_g · col_g` straight into the chunk's columns
//!   of the output; its input gradient folds `dcol_g = W_gᵀ · dY_g` back onto
//!   the input (col2im), its weight gradient sums `dY_g · col_gᵀ` over chunks.
//!   A training convolution of a single group keeps the columns its forward
//!   pass unfolded for its backward pass ([`Columns`]), within a budget a
//!   step; past it, the backward pass unfolds them again.
//!
//! Groups run side by side on threads; a single group's product is cut among
//! them. In the backward pass a single group's weight and input gradients
//! are one pair of products whose blocks the threads share
//! ([`gemm_pair`]); several groups' run side by side.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

mod columns;
mod geometry;
mod grouped;
mod inference;
mod winograd;
mod winograd4;

use super::profile::{time, Kernel, Timer};
use super::{
    assume_init, gemm, gemm_into, gemm_pair, init_mut, par_chunks, slice, tensor, threads, uninit,
    with_slice, DisjointMut, Float, Gemm, Then,
};
use columns::*;
use geometry::*;
pub(crate) use inference::{After, Inference};

/// What evaluation derives from a layer's weights, kept across calls once
/// they are fixed (`TemplateNet::fix_weights`): each derived at the first call
/// that needs it, in the element type of that call, and the same values as
/// derived at each call.
#[derive(Debug, Default)]
pub struct Kept {
    /// Winograd F(4 × 4, 3 × 3)'s transformed weights (`U`): 4× the weights
    /// (36 values for a kernel's 9).
    winograd4: Slot,
    /// The weights taps first (`O × kh · kw · C`), for small maps' classes:
    /// as many as the weights.
    taps_first: Slot,
}

#[derive(Debug, Default)]
struct Slot(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl Slot {
    /// `derive`'s values (timed as `kernel`): kept in `slot` when given,
    /// derived at its first call, else (no slot, or one holding another
    /// element type) derived for this call alone.
    fn or_derive<'a, T: Float>(
        slot: Option<&'a Slot>,
        kernel: Kernel,
        derive: impl Fn() -> Vec<T>,
    ) -> Cow<'a, [T]> {
        let kept = slot.and_then(|s| {
            s.0.get_or_init(|| {
                Box::new(time(kernel, &derive)) as Box<dyn std::any::Any + Send + Sync>
            })
            .downcast_ref::<Vec<T>>()
        });
        match kept {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(time(kernel, derive)),
        }
    }
}

impl Kept {
    /// F(4 × 4, 3 × 3)'s transformed weights, kept in `kept` when given.
    fn winograd4<'a, T: Float>(
        kept: Option<&'a Kept>,
        derive: impl Fn() -> Vec<T>,
    ) -> Cow<'a, [T]> {
        Slot::or_derive(kept.map(|k| &k.winograd4), Kernel::Winograd, derive)
    }

    /// The weights taps first, kept in `kept` when given.
    fn taps_first<'a, T: Float>(
        kept: Option<&'a Kept>,
        derive: impl Fn() -> Vec<T>,
    ) -> Cow<'a, [T]> {
        Slot::or_derive(kept.map(|k| &k.taps_first), Kernel::Unfold, derive)
    }
}

/// A convolution's hyperparameters (square stride and padding, as the networks use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// Runs `f(group, threads)` for every group with a budget of `threads`:
/// groups side by side when there are several, else the one group's product
/// split among the threads.
fn for_groups(groups: usize, threads: usize, f: impl Fn(usize, usize) + Send + Sync) {
    if groups > 1 && threads > 1 {
        super::team::for_each(groups, &|gi| f(gi, 1));
    } else {
        (0..groups).for_each(|gi| f(gi, threads));
    }
}

/// Runs `a` and `b`, side by side when there are threads to spare, each with
/// its share of them.
fn side_by_side<A: Send, B: Send>(
    a: impl FnOnce(usize) -> A + Send,
    b: impl FnOnce(usize) -> B + Send,
) -> (A, B) {
    let t = threads();
    if t > 1 {
        super::team::join(|| a(t / 2), || b(t - t / 2))
    } else {
        (a(1), b(1))
    }
}

/// The forward pass: grouped convolutions with few channels a group
/// directly ([`grouped`]), any other through matrix products.
fn forward<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    kept: Option<&Kept>,
    after: Option<&After<T>>,
    columns: Option<&Columns>,
) -> Vec<T> {
    if grouped::suits(g) {
        return grouped::forward(g, x, w, after);
    }
    by_products(g, x, w, kept, after, columns)
}

/// The forward pass through matrix products: a 1 × 1 convolution's one
/// product, small maps class by class, any other unfolded a chunk of images
/// at a time (into `columns`, for the backward pass, when given and it
/// takes them).
fn by_products<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    kept: Option<&Kept>,
    after: Option<&After<T>>,
    columns: Option<&Columns>,
) -> Vec<T> {
    let (p, k, og, jt) = (g.p(), g.k(), g.og(), g.jt());
    let mut y = uninit::<T>(g.o * jt);
    let out = DisjointMut::new(&mut y);
    // The epilogue of group gi's product whose first column is output column col0.
    let then = |gi: usize, col0: usize| {
        move |r: usize, c: usize, values: &mut [T]| {
            if let Some(after) = after {
                after.apply(gi * og + r, col0 + c, jt, values);
            }
        }
    };
    // Y_g (og × J) = W_g (og × K) · col_g (K × J) for a chunk's columns
    // `col` (a 1 × 1 convolution's are the input itself, all images at once).
    let product = |col: &[T], n0: usize, j: usize| {
        for_groups(g.groups, threads(), |gi, t| {
            // SAFETY: group gi writes only its own og rows (this chunk's columns).
            let dst = unsafe { out.range(gi * og * jt + n0 * p, (og - 1) * jt + j) };
            let then = then(gi, n0 * p);
            gemm_into(
                (og, j, k),
                dst,
                jt,
                &w[gi * og * k..],
                (k, 1),
                &col[gi * k * j..],
                (j, 1),
                t,
                after.map(|_| &then as Then<T>),
            );
        });
    };
    if g.pointwise() {
        product(x, 0, jt);
    } else if let Some(classes) = g.by_classes() {
        forward_by_classes(g, &classes, x, w, kept, after, &out);
    } else {
        let nc_max = g.chunk();
        let all = g.c * g.kh * g.kw * jt;
        let keep = columns.filter(|c| g.groups == 1 && c.reserve(all * std::mem::size_of::<T>()));
        if let Some(columns) = keep {
            // Every chunk's columns, one after another, kept.
            let mut cols = vec![T::ZERO; all];
            for n0 in (0..g.n).step_by(nc_max) {
                let nc = nc_max.min(g.n - n0);
                let j = nc * p;
                let col = &mut cols[k * n0 * p..][..k * j];
                im2col(g, x, n0, nc, col);
                product(col, n0, j);
            }
            columns.put(cols);
        } else {
            with_columns(g.c * g.kh * g.kw * nc_max * p, |cols: &mut [T]| {
                for n0 in (0..g.n).step_by(nc_max) {
                    let nc = nc_max.min(g.n - n0);
                    let j = nc * p;
                    let col = &mut cols[..g.c * g.kh * g.kw * j];
                    im2col(g, x, n0, nc, col);
                    product(col, n0, j);
                }
            });
        }
    }
    // SAFETY: the groups' products cover every output row, the chunks every
    // column of them.
    unsafe { assume_init(y) }
}

/// The forward pass of a single-group convolution on a small map, class by
/// class of output pixels ([`Geometry::classes`]): each class's columns
/// hold only the taps its pixels read inside the input, so no product runs
/// over the padding. The weights are laid out taps first, `O × kh · kw · C`,
/// so a class's taps are runs of whole kernel rows (one run when it reads
/// whole rows); each class's product goes to a buffer, then through `after`
/// to its pixels' places in the output.
fn forward_by_classes<T: Float>(
    g: &Geometry,
    classes: &[Class],
    x: &[T],
    w: &[T],
    kept: Option<&Kept>,
    after: Option<&After<T>>,
    out: &DisjointMut<MaybeUninit<T>>,
) {
    let (c, o) = (g.c, g.o);
    let taps = g.kh * g.kw;
    let k = c * taps;
    // Taps first when a class reads more than one tap (a single tap's
    // weights are a strided matrix of w); kept when the weights are fixed.
    let several = classes
        .iter()
        .any(|class| (class.ky.1 - class.ky.0) * (class.kx.1 - class.kx.0) > 1);
    let wt = several.then(|| Kept::taps_first(kept, || taps_first(w, o, c, taps)));
    let nc_max = g.chunk();
    let mut product = Vec::new();
    let mut sources = Vec::new();
    for n0 in (0..g.n).step_by(nc_max) {
        let nc = nc_max.min(g.n - n0);
        for class in classes {
            let ((ky0, ky1), (kx0, kx1)) = (class.ky, class.kx);
            let j = nc * class.pixels.len();
            let kc = (ky1 - ky0) * (kx1 - kx0) * c;
            product.resize(o * j, T::ZERO);
            with_columns(kc * j, |col: &mut [T]| {
                unfold_class(g, class, x, (n0, nc), col, &mut sources);
                let col = &*col;
                // Y_class (O × J) = Σ over the class's kernel rows ky of
                // W[:, (ky, kx0..kx1, :)] · col[(ky, kx0..kx1, :), :]: one
                // product when the class reads whole kernel rows.
                let whole_rows = kx1 - kx0 == g.kw;
                let runs = if whole_rows { 1 } else { ky1 - ky0 };
                let len = kc / runs;
                for i in 0..runs {
                    let tap = (ky0 + i) * g.kw + kx0;
                    let (lhs, strides) = match &wt {
                        _ if kc == c => (&w[tap..], (k, taps)),
                        Some(wt) => (&wt[tap * c..], (k, 1)),
                        None => {
                            unreachable!("the weights are transposed for classes of several taps")
                        }
                    };
                    gemm(
                        (o, j, len),
                        &mut product,
                        j,
                        i > 0,
                        lhs,
                        strides,
                        &col[i * len * j..],
                        (j, 1),
                        threads(),
                    );
                }
            });
            scatter_class(g, class, &product, (n0, nc), after, out);
        }
    }
}

/// w (O × C × taps) laid out taps first (O × taps × C).
fn taps_first<T: Float>(w: &[T], o: usize, c: usize, taps: usize) -> Vec<T> {
    let k = c * taps;
    let mut wt = uninit::<T>(o * k);
    for (dst, src) in wt.chunks_mut(k).zip(w.chunks(k)) {
        for (ci, src) in src.chunks(taps).enumerate() {
            for (t, &v) in src.iter().enumerate() {
                dst[t * c + ci] = MaybeUninit::new(v);
            }
        }
    }
    // SAFETY: every element was written above.
    unsafe { assume_init(wt) }
}

/// A class's columns for images `n0..n0 + nc`: rows (ky, kx, ci) of its
/// taps, columns (image, pixel); `sources` is scratch for the input pixel
/// each (tap, output pixel) reads.
fn unfold_class<T: Float>(
    g: &Geometry,
    class: &Class,
    x: &[T],
    (n0, nc): (usize, usize),
    col: &mut [T],
    sources: &mut Vec<usize>,
) {
    let ((ky0, ky1), (kx0, kx1)) = (class.ky, class.kx);
    let (c, hw, pc) = (g.c, g.h * g.w, class.pixels.len());
    let j = nc * pc;
    let kc = (ky1 - ky0) * (kx1 - kx0) * c;
    sources.clear();
    for ty in ky0..ky1 {
        for tx in kx0..kx1 {
            sources.extend(class.pixels.iter().map(|&q| {
                let (oy, ox) = (q as usize / g.ow, q as usize % g.ow);
                (oy * g.stride + ty - g.pad) * g.w + ox * g.stride + tx - g.pad
            }));
        }
    }
    let sources = &*sources;
    time(Kernel::Unfold, || {
        par_chunks(col, j, kc * j, |row, dst| {
            let (t, ci) = (row / c, row % c);
            let from = &sources[t * pc..(t + 1) * pc];
            for ni in 0..nc {
                let plane = &x[(ci * g.n + n0 + ni) * hw..][..hw];
                let dst = &mut dst[ni * pc..(ni + 1) * pc];
                for (d, &s) in dst.iter_mut().zip(from) {
                    *d = plane[s];
                }
            }
        })
    });
}

/// A class's product (O × images · pixels) to its pixels of each image in
/// the output, through the epilogue.
fn scatter_class<T: Float>(
    g: &Geometry,
    class: &Class,
    product: &[T],
    (n0, nc): (usize, usize),
    after: Option<&After<T>>,
    out: &DisjointMut<MaybeUninit<T>>,
) {
    let (o, p, jt, pc) = (g.o, g.p(), g.jt(), class.pixels.len());
    let j = nc * pc;
    let rows = |oc: usize| {
        // SAFETY: each output channel's row is written by one part only.
        let row = unsafe { out.range(oc * jt, jt) };
        for ni in 0..nc {
            let base = (n0 + ni) * p;
            let from = &product[oc * j + ni * pc..][..pc];
            for (&q, &v) in class.pixels.iter().zip(from) {
                let col = base + q as usize;
                let v = match after {
                    Some(after) => after.one(oc, col, jt, v),
                    None => v,
                };
                row[col] = MaybeUninit::new(v);
            }
        }
    };
    // A class of a small map is a few columns of every output channel (on
    // 2 × 2 maps, one pixel of each image): little work per call, but many
    // calls, so the channels are shared out from a few thousand values on.
    let t = threads();
    if t > 1 && o * j >= 1 << 12 {
        let per_part = o.div_ceil(t * super::BLOCKS_PER_THREAD);
        super::team::for_each(o.div_ceil(per_part), &|part| {
            (part * per_part..((part + 1) * per_part).min(o)).for_each(rows)
        });
    } else {
        (0..o).for_each(rows);
    }
}

/// The input and weight gradients from the output's gradient `dy`, a chunk
/// of images at a time (a 1 × 1 convolution: all at once, its columns the
/// input itself and its columns' gradient the input's).
fn backward<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    dy: &[T],
    columns: Option<&[T]>,
) -> (Vec<T>, Vec<T>) {
    if grouped::suits(g) {
        return grouped::backward(g, x, w, dy);
    }
    if g.groups == 1 {
        return backward_paired(g, x, w, dy, columns);
    }
    backward_by_products(g, x, w, dy)
}

/// [`backward`] through matrix products, for any convolution: a single
/// group's weight and input gradients as one pair of products
/// ([`backward_paired`]), several groups' side by side.
fn backward_by_products<T: Float>(g: &Geometry, x: &[T], w: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    if g.groups == 1 {
        return backward_paired(g, x, w, dy, None);
    }
    let (p, k, og, jt) = (g.p(), g.k(), g.og(), g.jt());
    let pointwise = g.pointwise();
    // A 1 × 1 convolution's input gradient is its product's output, written
    // in full; any other's is summed onto zeros. The weight gradient is
    // written by the first chunk's products, the others add to it.
    let mut dx = uninit::<T>(g.c * g.n * g.h * g.w);
    if !pointwise {
        dx.fill(MaybeUninit::new(T::ZERO));
    }
    let mut dw = uninit::<T>(g.o * k);
    let nc_max = if pointwise { g.n.max(1) } else { g.chunk() };
    for (chunk, n0) in (0..g.n).step_by(nc_max).enumerate() {
        let nc = nc_max.min(g.n - n0);
        let j = nc * p;
        // This chunk's output gradient: columns [n0·P, n0·P + J) of each row.
        let grads = &dy[n0 * p..];
        // The weight gradient and the input gradient side by side: each
        // reads dY; one unfolds the input, the other folds back its columns.
        let weight_grad = |threads: usize| {
            // dW_g (og × K) += dY_g (og × J) · col_gᵀ (J × K).
            let mut products = |col: &[T]| {
                let rows = DisjointMut::new(&mut dw);
                for_groups(g.groups, threads, |gi, t| {
                    // SAFETY: group gi writes only its own og rows of dW.
                    let dst = unsafe { rows.range(gi * og * k, og * k) };
                    let (lhs, rhs) = (&grads[gi * og * jt..], &col[gi * k * j..]);
                    if chunk == 0 {
                        gemm_into((og, k, j), dst, k, lhs, (jt, 1), rhs, (1, j), t, None);
                    } else {
                        // SAFETY: the first chunk's product wrote these rows.
                        let dst = unsafe { init_mut(dst) };
                        gemm((og, k, j), dst, k, true, lhs, (jt, 1), rhs, (1, j), t);
                    }
                });
            };
            if pointwise {
                products(x);
            } else {
                with_columns(g.c * g.kh * g.kw * j, |col: &mut [T]| {
                    im2col(g, x, n0, nc, col);
                    products(col);
                });
            }
        };
        let input_grad = |threads: usize| {
            // dcol_g (K × J) = W_gᵀ (K × og) · dY_g (og × J), folded onto dx.
            let products = |dcol: &mut [MaybeUninit<T>]| {
                let rows = DisjointMut::new(dcol);
                for_groups(g.groups, threads, |gi, t| {
                    // SAFETY: group gi writes only its own K rows of the columns.
                    let dst = unsafe { rows.range(gi * k * j, k * j) };
                    gemm_into(
                        (k, j, og),
                        dst,
                        j,
                        &w[gi * og * k..],
                        (1, k),
                        &grads[gi * og * jt..],
                        (jt, 1),
                        t,
                        None,
                    );
                });
            };
            if pointwise {
                products(&mut dx);
            } else {
                with_columns(g.c * g.kh * g.kw * j, |dcol: &mut [T]| {
                    // SAFETY: T is a float; a float's bits are a valid
                    // MaybeUninit<T>, and the products write every element.
                    let cols = unsafe { &mut *(dcol as *mut [T] as *mut [MaybeUninit<T>]) };
                    products(cols);
                    // SAFETY: dx was filled with zeros above.
                    col2im(g, dcol, n0, nc, unsafe { init_mut(&mut dx) });
                });
            }
        };
        side_by_side(weight_grad, input_grad);
    }
    if g.n == 0 {
        dw.fill(MaybeUninit::new(T::ZERO));
        dx.fill(MaybeUninit::new(T::ZERO));
    }
    // SAFETY: dx was written in full (the products of a 1 × 1 convolution)
    // or filled with zeros first; dW by the first chunk's products, or with
    // zeros for an empty batch.
    unsafe { (assume_init(dx), assume_init(dw)) }
}

/// A single group's gradients, a chunk of images at a time: the input
/// unfolded into columns on every thread (or its columns as the forward
/// pass kept them, `columns`: every chunk's one after another), then the
/// weight gradient's product and the columns' gradient's as one pair, their
/// blocks shared out among the threads, then the columns' gradient folded
/// back onto the input.
fn backward_paired<T: Float>(
    g: &Geometry,
    x: &[T],
    w: &[T],
    dy: &[T],
    columns: Option<&[T]>,
) -> (Vec<T>, Vec<T>) {
    let (p, k, o, jt) = (g.p(), g.k(), g.o, g.jt());
    let pointwise = g.pointwise();
    // As in `backward_by_products`: a 1 × 1 convolution's input gradient
    // is written in full, any other's summed onto zeros; the first chunk
    // writes the weight gradient, the others add to it.
    let mut dx = uninit::<T>(g.c * g.n * g.h * g.w);
    if !pointwise || g.n == 0 {
        dx.fill(MaybeUninit::new(T::ZERO));
    }
    let mut dw = uninit::<T>(o * k);
    if g.n == 0 {
        dw.fill(MaybeUninit::new(T::ZERO));
    }
    let nc_max = if pointwise { g.n.max(1) } else { g.chunk() };
    for (chunk, n0) in (0..g.n).step_by(nc_max).enumerate() {
        let nc = nc_max.min(g.n - n0);
        let j = nc * p;
        let grads = (&dy[n0 * p..], (jt, 1));
        // dW (O × K) (+)= dY (O × J) · colᵀ (J × K).
        fn weight_grad<'a, T: Float>(
            first: bool,
            (o, k, j): (usize, usize, usize),
            dw: &'a mut [MaybeUninit<T>],
            grads: (&'a [T], (usize, usize)),
            col: &'a [T],
        ) -> Gemm<'a, T> {
            if first {
                Gemm::into((o, k, j), (dw, k), grads, (col, (1, j)))
            } else {
                // SAFETY: the first chunk's product wrote dW.
                Gemm::onto(
                    (o, k, j),
                    (unsafe { init_mut(dw) }, k),
                    true,
                    grads,
                    (col, (1, j)),
                )
            }
        }
        let weights_t = (w, (1, k));
        if pointwise {
            // dX (C × N·P) = Wᵀ (C × O) · dY (O × N·P), all images at once.
            let input_grad = Gemm::into((k, j, o), (&mut dx, j), weights_t, grads);
            gemm_pair(
                weight_grad(chunk == 0, (o, k, j), &mut dw, grads, x),
                input_grad,
                threads(),
            );
            continue;
        }
        let kept = columns.filter(|c| c.len() == k * jt);
        let len = if kept.is_some() { k * j } else { 2 * k * j };
        with_columns(len, |buf: &mut [T]| {
            let (dcol, col) = buf.split_at_mut(k * j);
            let col = match kept {
                Some(all) => &all[k * n0 * p..][..k * j],
                None => {
                    im2col(g, x, n0, nc, col);
                    &*col
                }
            };
            // dcol (K × J) = Wᵀ (K × O) · dY (O × J).
            let input_grad = Gemm::onto((k, j, o), (dcol, j), false, weights_t, grads);
            gemm_pair(
                weight_grad(chunk == 0, (o, k, j), &mut dw, grads, col),
                input_grad,
                threads(),
            );
            // SAFETY: dx was filled with zeros above.
            col2im(g, dcol, n0, nc, unsafe { init_mut(&mut dx) });
        });
    }
    // SAFETY: dx was written in full (a 1 × 1 convolution's products) or
    // filled with zeros first; dW by the first chunk's products, or with
    // zeros for an empty batch.
    unsafe { (assume_init(dx), assume_init(dw)) }
}

impl Conv2d {
    /// `x` (C, N, H, W), channels first, convolved with `w` (O, C/groups, kh,
    /// kw), plus `bias` (O) if given: (O, N, OH, OW).
    pub fn forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match bias {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, Biased(*self)),
            None => x.apply_op2(&w, *self),
        }
    }

    /// [`Conv2d::forward`], its backward pass handing the weights' gradient
    /// to `aside` instead of to candle's gradient store (the input's and the
    /// bias's still go there).
    pub fn forward_aside(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        aside: &Arc<WeightGrads>,
    ) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let op = Aside {
            conv: *self,
            aside: Arc::clone(aside),
            columns: Arc::new(Columns {
                slot: Default::default(),
                kept: Arc::clone(&aside.kept_columns),
            }),
        };
        match bias {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        }
    }
}

/// Weight gradients computed beside candle's graph. candle's backward pass
/// adds every gradient it is given to a tensor of zeros it makes first, so
/// each weight gradient of a step cost two more passes over memory the size
/// of the weights (on ResNet-101, a sixth of a training step). The
/// convolutions' backward passes put theirs here instead, and
/// `TemplateNet::backward` moves them into the gradient store.
#[derive(Debug, Default)]
pub struct WeightGrads {
    grads: std::sync::Mutex<Vec<(Tensor, Tensor)>>,
    /// Bytes of columns the step's convolutions keep ([`Columns`]).
    kept_columns: Arc<AtomicUsize>,
}

/// The most bytes of unfolded columns the convolutions of one training step
/// keep from their forward passes for their backward passes ([`Columns`]):
/// ResNet-101's at 64 px and batch 8 are 58 MiB; at 224 px and batch 32,
/// 2.8 GiB, of which the layers first come keep what fits.
const KEPT_COLUMNS: usize = 256 << 20;

/// The input's columns a training convolution's forward pass unfolded,
/// kept for its backward pass, which would unfold them again (a twentieth
/// of ResNet-101's two-thread step at 64 px), within [`KEPT_COLUMNS`] for
/// all the convolutions of a step.
#[derive(Debug, Default)]
struct Columns {
    slot: std::sync::Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
    kept: Arc<AtomicUsize>,
}

impl Columns {
    /// Whether `bytes` more fit the step's budget (then counted in it).
    fn reserve(&self, bytes: usize) -> bool {
        self.kept
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |kept| {
                (kept + bytes <= KEPT_COLUMNS).then_some(kept + bytes)
            })
            .is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn std::any::Any + Send + Sync>>> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put<T: Float>(&self, columns: Vec<T>) {
        *self.lock() = Some(Box::new(columns));
    }

    /// The columns kept, once (a second backward pass unfolds them again).
    fn take<T: Float>(&self) -> Option<Vec<T>> {
        let kept = self.lock().take()?;
        kept.downcast::<Vec<T>>().ok().map(|v| *v)
    }
}

impl WeightGrads {
    fn push(&self, weight: &Tensor, grad: Tensor) {
        self.lock().push((weight.clone(), grad));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Tensor, Tensor)>> {
        self.grads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The gradients gathered since the last call, each weight's summed
    /// (a weight used twice gets two), as (weight, gradient).
    pub fn take(&self) -> Result<Vec<(Tensor, Tensor)>> {
        self.kept_columns.store(0, Ordering::Relaxed);
        let mut summed: Vec<(Tensor, Tensor)> = Vec::new();
        for (w, g) in std::mem::take(&mut *self.lock()) {
            match summed.iter_mut().find(|(v, _)| v.id() == w.id()) {
                Some((_, sum)) => *sum = sum.add(&g)?,
                None => summed.push((w, g)),
            }
        }
        Ok(summed)
    }

    /// Forgets what was gathered (a backward pass whose gradients were not
    /// taken).
    pub fn clear(&self) {
        self.kept_columns.store(0, Ordering::Relaxed);
        self.lock().clear();
    }
}

/// A training convolution whose weight gradient goes to [`WeightGrads`].
#[derive(Clone, Debug)]
struct Aside {
    conv: Conv2d,
    aside: Arc<WeightGrads>,
    /// This call's columns, kept from its forward pass for its backward pass.
    columns: Arc<Columns>,
}

impl Aside {
    /// The weight gradient handed aside, when `w` is a variable (the only
    /// tensors an optimiser steps); else back to candle, which carries it on.
    fn hand(&self, w: &Tensor, dw: Option<Tensor>) -> Option<Tensor> {
        match dw {
            Some(dw) if w.is_variable() => {
                self.aside.push(w, dw);
                None
            }
            other => other,
        }
    }
}

impl CustomOp2 for Aside {
    fn name(&self) -> &'static str {
        "wfrun-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.conv.fwd(s1, l1, s2, l2, Some(&self.columns))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let _ = res;
        let (dx, dw) = self.conv.grads(x, w, grad, Some(&self.columns))?;
        Ok((Some(dx), self.hand(w, Some(dw))))
    }
}

impl CustomOp3 for Aside {
    fn name(&self) -> &'static str {
        "wfrun-conv2d-bias"
    }

    #[allow(clippy::too_many_arguments)]
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Biased(self.conv).fwd((s1, l1), (s2, l2), (s3, l3), Some(&self.columns))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _ = res;
        let (dx, dw, db) = Biased(self.conv).grads(x, w, b, grad, Some(&self.columns))?;
        Ok((Some(dx), self.hand(w, Some(dw)), Some(db)))
    }
}

/// A convolution with a bias per output channel (BN-Inception's): the bias
/// added in the same op, its gradient the output gradient's sum per channel.
#[derive(Clone, Copy, Debug)]
struct Biased(Conv2d);

fn bias_grad<T: Float>(g: &Geometry, dy: &[T]) -> Vec<T> {
    dy.chunks(g.jt().max(1))
        .map(|channel| T::from_f64(channel_sum(channel)))
        .collect()
}

super::widest! {
    /// A channel's values summed in f64, eight lanes at a time (so that the
    /// sum vectorises rather than wait on one chain of additions).
    fn channel_sum<T: Float>(values: &[T]) -> f64 {
        let mut lanes = [0f64; 8];
        let runs = values.chunks_exact(8);
        let rest = runs.remainder();
        for run in runs {
            for (lane, &v) in lanes.iter_mut().zip(run) {
                *lane += v.to_f64();
            }
        }
        rest.iter().fold(lanes.iter().sum::<f64>(), |total, v| total + v.to_f64())
    }
}

impl Biased {
    /// The forward pass, keeping its columns in `columns` when given.
    fn fwd(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
        columns: Option<&Columns>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(self.0, l1.dims(), l2.dims())?;
        if l3.dims() != [g.o] {
            candle_core::bail!("a bias of {:?} for {} output channels", l3.dims(), g.o);
        }
        fn run<T: Float>(
            g: &Geometry,
            x: &[T],
            w: &[T],
            b: &[T],
            columns: Option<&Columns>,
        ) -> Vec<T> {
            let after = After {
                scale: None,
                shift: Some(b),
                residual: None,
                relu: false,
            };
            forward(g, x, w, None, Some(&after), columns)
        }
        let out = time(Kernel::ConvForward, || -> Result<CpuStorage> {
            Ok(match (s1, s2, s3) {
                (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                    CpuStorage::F32(run(
                        &g,
                        slice::<f32>(s1, l1, "convolution")?,
                        slice::<f32>(s2, l2, "convolution")?,
                        slice::<f32>(s3, l3, "convolution")?,
                        columns,
                    ))
                }
                (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                    CpuStorage::F64(run(
                        &g,
                        slice::<f64>(s1, l1, "convolution")?,
                        slice::<f64>(s2, l2, "convolution")?,
                        slice::<f64>(s3, l3, "convolution")?,
                        columns,
                    ))
                }
                _ => candle_core::bail!("convolution supports f32 and f64 (operands alike)"),
            })
        })?;
        Ok((out, Shape::from(g.out_dims())))
    }

    /// The input's, the weights' and the bias's gradients, from the
    /// columns kept in `columns` when it holds them.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        grad: &Tensor,
        columns: Option<&Columns>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (dx, dw) = self.0.grads(x, w, grad, columns)?;
        let g = Geometry::new(self.0, x.dims(), w.dims())?;
        let db = match x.dtype() {
            candle_core::DType::F32 => with_slice::<f32, _>(grad, "convolution", |gs| {
                tensor(bias_grad(&g, gs), b.shape())
            })?,
            _ => with_slice::<f64, _>(grad, "convolution", |gs| {
                tensor(bias_grad(&g, gs), b.shape())
            })?,
        };
        Ok((dx, dw, db))
    }
}

impl CustomOp3 for Biased {
    fn name(&self) -> &'static str {
        "wfrun-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), (s3, l3), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, b, grad, None)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl Conv2d {
    /// The forward pass, keeping its columns in `columns` when given.
    fn fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        columns: Option<&Columns>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(*self, l1.dims(), l2.dims())?;
        let _grouped = (g.groups > 1).then(|| Timer::start(Kernel::GroupedForward));
        let out = time(Kernel::ConvForward, || -> Result<CpuStorage> {
            Ok(match (s1, s2) {
                (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(forward(
                    &g,
                    slice::<f32>(s1, l1, "convolution")?,
                    slice::<f32>(s2, l2, "convolution")?,
                    None,
                    None,
                    columns,
                )),
                (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(forward(
                    &g,
                    slice::<f64>(s1, l1, "convolution")?,
                    slice::<f64>(s2, l2, "convolution")?,
                    None,
                    None,
                    columns,
                )),
                _ => candle_core::bail!("convolution supports f32 and f64 (both operands alike)"),
            })
        })?;
        Ok((out, Shape::from(g.out_dims())))
    }

    /// The input's and the weights' gradients, from the columns kept in
    /// `columns` when it holds them.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
        columns: Option<&Columns>,
    ) -> Result<(Tensor, Tensor)> {
        let g = Geometry::new(*self, x.dims(), w.dims())?;
        let _grouped = (g.groups > 1).then(|| Timer::start(Kernel::GroupedBackward));
        fn run<T: Float>(
            g: &Geometry,
            x: &Tensor,
            w: &Tensor,
            grad: &Tensor,
            columns: Option<&Columns>,
        ) -> Result<(Tensor, Tensor)> {
            let kept = columns.and_then(Columns::take::<T>);
            with_slice::<T, _>(x, "convolution", |xs| {
                with_slice::<T, _>(w, "convolution", |ws| {
                    with_slice::<T, _>(grad, "convolution", |gs| {
                        let (dx, dw) = time(Kernel::ConvBackward, || {
                            backward(g, xs, ws, gs, kept.as_deref())
                        });
                        Ok((tensor(dx, x.shape())?, tensor(dw, w.shape())?))
                    })
                })
            })
        }
        match x.dtype() {
            candle_core::DType::F32 => run::<f32>(&g, x, w, grad, columns),
            candle_core::DType::F64 => run::<f64>(&g, x, w, grad, columns),
            other => candle_core::bail!("convolution supports f32 and f64, not {other:?}"),
        }
    }
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "wfrun-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, grad, None)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// Evaluation's operands for the tests that set one path beside another:
/// an input, weights, a residual and batch norm's scale and shift per output
/// channel, values of both signs from fixed formulas.
#[cfg(test)]
struct Case<T> {
    x: Vec<T>,
    w: Vec<T>,
    residual: Vec<T>,
    scale: Vec<T>,
    shift: Vec<T>,
}

#[cfg(test)]
impl Case<f64> {
    fn new(g: &Geometry) -> Case<f64> {
        Case {
            x: (0..g.c * g.n * g.h * g.w)
                .map(|i| (i * 7919 % 1009) as f64 / 97.0 - 5.0)
                .collect(),
            w: (0..g.o * g.cg() * g.kh * g.kw)
                .map(|i| (i * 104_729 % 997) as f64 / 331.0 - 1.5)
                .collect(),
            residual: (0..g.o * g.jt())
                .map(|i| ((i * 31 % 17) as f64 - 8.0) / 4.0)
                .collect(),
            scale: (0..g.o).map(|i| 0.5 + i as f64 * 0.25).collect(),
            shift: (0..g.o).map(|i| i as f64 * 0.1 - 0.2).collect(),
        }
    }

    /// The same values rounded to f32.
    fn f32(&self) -> Case<f32> {
        let round = |v: &[f64]| v.iter().map(|&v| v as f32).collect();
        Case {
            x: round(&self.x),
            w: round(&self.w),
            residual: round(&self.residual),
            scale: round(&self.scale),
            shift: round(&self.shift),
        }
    }
}

#[cfg(test)]
impl<T: Float> Case<T> {
    /// The epilogue: scale and shift, the residual if `residual`, ReLU if `relu`.
    fn after(&self, residual: bool, relu: bool) -> After<'_, T> {
        After {
            scale: Some(&self.scale),
            shift: Some(&self.shift),
            residual: residual.then_some(self.residual.as_slice()),
            relu,
        }
    }
}

/// The largest difference between `reference` and `got`, each relative to
/// `1 + |reference|`, or with `of_scale` to the largest `|reference|` (at
/// least 1).
#[cfg(test)]
fn worst<T: Float>(reference: &[f64], got: &[T], of_scale: bool) -> f64 {
    assert_eq!(reference.len(), got.len());
    let scale = reference.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    reference
        .iter()
        .zip(got)
        .map(|(&a, &b)| {
            let d = (a - b.to_f64()).abs();
            if of_scale {
                d / scale
            } else {
                d / (1.0 + a.abs())
            }
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gradcheck::check_gradient;
    use candle_core::{DType, Device};

    /// The convolution of images first (N, C, H, W) tensors, through channels first.
    fn nchw(conv: &Conv2d, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        conv.forward(&x.transpose(0, 1)?, w, b)?.transpose(0, 1)
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f64> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f64 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// (N, C, H, W), (O, C/g, k, k), stride, padding, groups.
    type Case = ([usize; 4], [usize; 4], usize, usize, usize);

    const CASES: [Case; 9] = [
        ([2, 3, 7, 7], [4, 3, 3, 3], 1, 1, 1),
        ([2, 4, 8, 6], [6, 2, 3, 3], 2, 1, 2),
        ([3, 4, 5, 5], [8, 4, 1, 1], 1, 0, 1),
        ([1, 4, 5, 5], [8, 4, 1, 1], 1, 0, 1),
        ([2, 4, 7, 8], [4, 4, 1, 1], 2, 0, 1),
        ([2, 3, 9, 9], [4, 3, 7, 7], 2, 3, 1),
        ([2, 8, 4, 4], [8, 1, 3, 3], 1, 1, 8),
        ([1, 2, 2, 2], [3, 2, 3, 3], 1, 1, 1),
        ([2, 4, 1, 1], [8, 2, 1, 1], 1, 0, 2),
    ];

    #[test]
    fn matches_candle_convolution() {
        for (xs, ws, stride, padding, groups) in CASES {
            let x = random(&xs, 1);
            let w = random(&ws, 2);
            let ours = Conv2d {
                stride,
                padding,
                groups,
            }
            .forward(&x.transpose(0, 1).unwrap(), &w, None)
            .unwrap()
            .transpose(0, 1)
            .unwrap();
            let theirs = x.conv2d(&w, padding, stride, 1, groups).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "{xs:?} {ws:?}");
            let diff = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(diff < 1e-12, "{xs:?} {ws:?}: {diff}");
        }
    }

    #[test]
    fn bias_gradients_sum_alike_on_every_path() {
        let values: Vec<f32> = (0..1003)
            .map(|i| (i * 7919 % 1013) as f32 / 97.0 - 5.0)
            .collect();
        let exact: f64 = values.iter().map(|&v| v as f64).sum();
        let (wide, base) = (channel_sum(&values), channel_sum::baseline(&values));
        assert_eq!(wide.to_bits(), base.to_bits());
        assert!((wide - exact).abs() < 1e-9, "{wide} {exact}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (xs, ws, stride, padding, groups) in CASES {
            let conv = Conv2d {
                stride,
                padding,
                groups,
            };
            let x = random(&xs, 3);
            let w = random(&ws, 4);
            check_gradient(&x, |x| nchw(&conv, x, &w, None), 1e-6, 1e-7)
                .unwrap_or_else(|e| panic!("input, {xs:?} {ws:?}: {e}"));
            check_gradient(&w, |w| nchw(&conv, &x, w, None), 1e-6, 1e-7)
                .unwrap_or_else(|e| panic!("weight, {xs:?} {ws:?}: {e}"));
        }
    }

    #[test]
    fn the_bias_is_added_and_its_gradient_checks() {
        let conv = Conv2d {
            stride: 2,
            padding: 1,
            groups: 1,
        };
        let x = random(&[2, 3, 6, 5], 7);
        let w = random(&[4, 3, 3, 3], 8);
        let b = random(&[4], 9);
        let ours = nchw(&conv, &x, &w, Some(&b)).unwrap();
        let theirs = x
            .conv2d(&w, 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
        check_gradient(&b, |b| nchw(&conv, &x, &w, Some(b)), 1e-6, 1e-7).unwrap();
        check_gradient(&x, |x| nchw(&conv, x, &w, Some(&b)), 1e-6, 1e-7).unwrap();
        check_gradient(&w, |w| nchw(&conv, &x, w, Some(&b)), 1e-6, 1e-7).unwrap();
    }

    #[test]
    fn large_batches_go_in_chunks_and_agree() {
        // 7 images of 64 channels, 64x64: one image a chunk.
        let x = random(&[7, 64, 64, 64], 5).to_dtype(DType::F32).unwrap();
        let w = random(&[8, 64, 3, 3], 6).to_dtype(DType::F32).unwrap();
        let conv = Conv2d {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let g = Geometry::new(conv, &[64, 7, 64, 64], w.dims()).unwrap();
        assert_eq!(g.chunk(), 1);
        let ours = nchw(&conv, &x, &w, None).unwrap();
        let theirs = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let diff = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn gradients_in_chunks_agree_with_candles() {
        // (N, C, H, W), (O, C, k, k), stride, padding: three chunks of one
        // 32 × 32 image (the weight gradient summed over them), a strided
        // one, and a 1 × 1 convolution's one product of all images.
        let cases: [([usize; 4], [usize; 4], usize, usize); 3] = [
            ([3, 4, 32, 32], [5, 4, 3, 3], 1, 1),
            ([3, 6, 40, 40], [7, 6, 3, 3], 2, 1),
            ([5, 8, 6, 6], [16, 8, 1, 1], 1, 0),
        ];
        for (i, (xs, ws, stride, padding)) in cases.into_iter().enumerate() {
            let conv = Conv2d {
                stride,
                padding,
                groups: 1,
            };
            let x = candle_core::Var::from_tensor(&random(&xs, 7 + i as u64)).unwrap();
            let w = candle_core::Var::from_tensor(&random(&ws, 8 + i as u64)).unwrap();
            let ours = nchw(&conv, &x, &w, None).unwrap();
            let theirs = x.conv2d(&w, padding, stride, 1, 1).unwrap();
            let r = random(ours.dims(), 9);
            let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (grads(&ours), grads(&theirs));
            for (name, v) in [("input", &x), ("weight", &w)] {
                let (a, b) = (a.get(v).unwrap(), b.get(v).unwrap());
                let scale = b
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                let diff = diff.to_scalar::<f64>().unwrap();
                assert!(
                    diff <= 1e-12 * scale.max(1.0),
                    "{name}, {xs:?} {ws:?}: {diff}"
                );
            }
        }
    }

    #[test]
    fn kept_columns_give_the_same_gradients() {
        // (C, N, H, W), (O, C, k, k), stride, padding: chunks of one image,
        // a strided convolution, one on a small map unfolded whole.
        let cases: [([usize; 4], [usize; 4], usize, usize); 3] = [
            ([4, 3, 32, 32], [5, 4, 3, 3], 1, 1),
            ([6, 3, 40, 40], [7, 6, 3, 3], 2, 1),
            ([8, 2, 5, 5], [4, 8, 3, 3], 1, 0),
        ];
        for (xs, ws, stride, padding) in cases {
            let conv = Conv2d {
                stride,
                padding,
                groups: 1,
            };
            let x = candle_core::Var::from_tensor(&random(&xs, 11)).unwrap();
            let w = candle_core::Var::from_tensor(&random(&ws, 12)).unwrap();
            let b = candle_core::Var::from_tensor(&random(&ws[..1], 13)).unwrap();
            for bias in [None, Some(b.as_tensor())] {
                let plain = conv.forward(&x, &w, bias).unwrap();
                let r = random(plain.dims(), 14);
                let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap();
                let expected = loss(&plain).backward().unwrap();
                // Kept (the budget is free), and not kept (the budget spent).
                for spent in [0, KEPT_COLUMNS] {
                    let aside = Arc::new(WeightGrads::default());
                    aside.kept_columns.store(spent, Ordering::Relaxed);
                    let y = conv.forward_aside(&x, &w, bias, &aside).unwrap();
                    let kept = aside.kept_columns.load(Ordering::Relaxed);
                    let unfolded =
                        ws[1] * ws[2] * ws[3] * plain.dims()[1..].iter().product::<usize>();
                    assert_eq!(kept, spent.max(8 * unfolded), "{xs:?}, kept {kept}");
                    let got = loss(&y).backward().unwrap();
                    let taken = aside.take().unwrap();
                    assert_eq!(aside.kept_columns.load(Ordering::Relaxed), 0);
                    assert_eq!(taken.len(), 1);
                    let bits = |t: &Tensor| {
                        let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                        v.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&y), bits(&plain));
                    assert_eq!(bits(&taken[0].1), bits(expected.get(&w).unwrap()), "{xs:?}");
                    assert_eq!(bits(got.get(&x).unwrap()), bits(expected.get(&x).unwrap()));
                    if let Some(b) = bias {
                        assert_eq!(bits(got.get(b).unwrap()), bits(expected.get(b).unwrap()));
                    }
                }
            }
        }
    }

    #[test]
    fn small_maps_class_by_class_agree() {
        // (N, C, H, W), (O, C, k, k), stride, padding.
        let cases: [([usize; 4], [usize; 4], usize, usize); 5] = [
            ([16, 3, 4, 4], [5, 3, 3, 3], 1, 1),
            ([32, 5, 7, 6], [4, 5, 3, 3], 2, 1),
            ([3, 4, 1, 1], [6, 4, 3, 3], 1, 1),
            ([40, 2, 3, 3], [3, 2, 5, 5], 1, 2),
            ([20, 3, 2, 5], [4, 3, 3, 3], 1, 1),
        ];
        for (i, (xs, ws, stride, padding)) in cases.into_iter().enumerate() {
            let conv = Conv2d {
                stride,
                padding,
                groups: 1,
            };
            let g = Geometry::new(conv, &[xs[1], xs[0], xs[2], xs[3]], &ws).unwrap();
            assert!(
                g.by_classes().is_some(),
                "{xs:?} {ws:?} goes class by class"
            );
            let x = random(&xs, 10 + i as u64);
            let w = random(&ws, 20 + i as u64);
            let ours = nchw(&conv, &x, &w, None).unwrap();
            let theirs = x.conv2d(&w, padding, stride, 1, 1).unwrap();
            let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "{xs:?} {ws:?}");

            // Evaluation: batch norm folded in, a residual, ReLU.
            let o = ws[0];
            let inference = Inference {
                conv,
                scale: (0..o).map(|c| 0.5 + c as f64 * 0.25).collect(),
                shift: (0..o).map(|c| c as f64 * 0.1 - 0.2).collect(),
                relu: true,
                kept: None,
            };
            let residual = random(theirs.dims(), 30 + i as u64);
            let xc = x.transpose(0, 1).unwrap().contiguous().unwrap();
            let rc = residual.transpose(0, 1).unwrap().contiguous().unwrap();
            let ours = inference
                .forward(&xc, &w, Some(&rc))
                .unwrap()
                .transpose(0, 1)
                .unwrap();
            // Fixed weights keep what they derive (the weights taps first):
            // the same values to the bit, at the first call and after.
            let kept = Inference {
                kept: Some(std::sync::Arc::default()),
                ..inference.clone()
            };
            let bits = |t: &Tensor| -> Vec<u64> {
                let v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            for _ in 0..2 {
                let again = kept.forward(&xc, &w, Some(&rc)).unwrap();
                assert_eq!(bits(&again.transpose(0, 1).unwrap()), bits(&ours), "{xs:?}");
            }
            let shape = (1, o, 1, 1);
            let scale = Tensor::new(inference.scale.as_slice(), &Device::Cpu).unwrap();
            let shift = Tensor::new(inference.shift.as_slice(), &Device::Cpu).unwrap();
            let expected = theirs
                .broadcast_mul(&scale.reshape(shape).unwrap())
                .unwrap()
                .broadcast_add(&shift.reshape(shape).unwrap())
                .unwrap()
                .add(&residual)
                .unwrap()
                .relu()
                .unwrap();
            let diff = (ours - expected).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f64>().unwrap() < 1e-12,
                "inference {xs:?} {ws:?}"
            );
        }
    }

    #[test]
    fn classes_leave_out_the_padding() {
        let conv = Conv2d {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        // ResNet-101's 3 × 3 convolutions at 64 px: 4 × 4 maps.
        let g = Geometry::new(conv, &[256, 32, 4, 4], &[256, 256, 3, 3]).unwrap();
        let (classes, padded) = g.classes();
        assert_eq!(classes.len(), 9);
        assert!((padded - (1.0 - 100.0 / 144.0)).abs() < 1e-12, "{padded}");
        assert_eq!(classes.iter().map(|c| c.pixels.len()).sum::<usize>(), 16);
        // A 1 × 1 map reads the centre tap only.
        let g = Geometry::new(conv, &[512, 8, 1, 1], &[512, 512, 3, 3]).unwrap();
        let (classes, padded) = g.classes();
        assert_eq!(
            (classes.len(), classes[0].ky, classes[0].kx),
            (1, (1, 2), (1, 2))
        );
        assert!((padded - 8.0 / 9.0).abs() < 1e-12);
        // Large maps and grouped convolutions unfold whole.
        assert!(Geometry::new(conv, &[64, 8, 16, 16], &[64, 64, 3, 3])
            .unwrap()
            .by_classes()
            .is_none());
        let grouped = Conv2d { groups: 2, ..conv };
        assert!(Geometry::new(grouped, &[64, 32, 4, 4], &[64, 32, 3, 3])
            .unwrap()
            .by_classes()
            .is_none());
    }

    #[test]
    fn kernels_larger_than_the_input_are_errors() {
        let x = Tensor::zeros((3, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 3, 7, 7), DType::F32, &Device::Cpu).unwrap();
        let e = Conv2d {
            stride: 1,
            padding: 0,
            groups: 1,
        }
        .forward(&x, &w, None)
        .unwrap_err();
        assert!(e.to_string().contains("larger image_size"), "{e}");
    }
}
