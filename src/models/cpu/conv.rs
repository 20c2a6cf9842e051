//! 2-D convolution (NCHW, PyTorch's weight layout `O × C/g × kh × kw`, any
//! stride, padding and groups) through matrix products.
//!
//! Images are taken in chunks whose unfolded patches ("columns", `K × J`
//! with `K = C/g · kh · kw` and `J` = the chunk's output pixels) fill a
//! matrix product well: one image when it has many output pixels, the whole
//! batch when the feature maps are small (ResNet's deep stages at 32 px are
//! 2 × 2 and 1 × 1). Per group and chunk:
//!
//! - forward: `Y_g (O/g × J) = W_g (O/g × K) · col_g (K × J)`;
//! - input gradient: `dcol_g = W_gᵀ · dY_g`, folded back onto the input (col2im);
//! - weight gradient: `dW_g += dY_g · col_gᵀ`, summed over chunks.
//!
//! A 1 × 1 convolution of stride 1 on one image needs no unfolding: its
//! columns are the image itself. Groups run side by side on threads; a single
//! group's product is split by gemm itself.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::profile::{time, Kernel};
use super::{gemm, par_chunks, slice, tensor, threads, with_slice, Float};

/// A convolution's hyperparameters (square stride and padding, as the networks use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    oh: usize,
    ow: usize,
}

/// Elements of unfolded columns a chunk may hold (32 MiB of f32).
const COLUMN_BUDGET: usize = 8 << 20;
/// Output rows shorter than this are unfolded through a table of sources
/// rather than row by row.
const SHORT_ROWS: usize = 16;
/// A tap that reads the padding.
const NOWHERE: u32 = u32::MAX;
/// Output pixels a chunk aims at: enough columns for an efficient product.
const TARGET_COLUMNS: usize = 512;

impl Geometry {
    fn new(conv: Conv2d, x: &[usize], w: &[usize]) -> Result<Geometry> {
        let (&[n, c, h, wd], &[o, cg, kh, kw]) = (x, w) else {
            candle_core::bail!("convolution takes (N, C, H, W) images and (O, C/g, kh, kw) weights, got {x:?} and {w:?}");
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
    fn cg(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.groups
    }

    /// Rows of a group's columns: `C/g · kh · kw`.
    fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Output pixels per image.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Images per chunk.
    fn chunk(&self) -> usize {
        let per_image = self.c * self.kh * self.kw * self.p();
        let wanted = TARGET_COLUMNS.div_ceil(self.p().max(1));
        wanted
            .min(COLUMN_BUDGET / per_image.max(1))
            .clamp(1, self.n.max(1))
    }

    /// For each tap (`ky · kw + kx`) and output pixel, the input pixel it
    /// reads (index in the plane), or [`NOWHERE`] in the padding.
    fn sources(&self) -> Vec<u32> {
        let mut table = Vec::with_capacity(self.kh * self.kw * self.p());
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        let iy = (oy * self.stride + ky).wrapping_sub(self.pad);
                        let ix = (ox * self.stride + kx).wrapping_sub(self.pad);
                        table.push(if iy < self.h && ix < self.w {
                            (iy * self.w + ix) as u32
                        } else {
                            NOWHERE
                        });
                    }
                }
            }
        }
        table
    }

    /// A 1 × 1 convolution of stride 1 without padding: columns are the input.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.o, self.oh, self.ow)
    }

    /// The input columns `[lo, hi)` (output column indices) whose tap
    /// `k` (0..kh or 0..kw) reads inside an input side of `len`, and the
    /// input index of column `lo`.
    fn valid(&self, k: usize, len: usize, out: usize) -> (usize, usize) {
        // input = o · stride + k − pad must lie in [0, len).
        let s = self.stride;
        let lo = self.pad.saturating_sub(k).div_ceil(s);
        let hi = ((len + self.pad).saturating_sub(k)).div_ceil(s).min(out);
        (lo.min(hi), hi)
    }
}

/// Unfolds images `[n0, n0 + nc)` of `x` into `col` (`C · kh · kw × nc · P`, row-major).
fn im2col<T: Float>(g: &Geometry, x: &[T], n0: usize, nc: usize, col: &mut [T]) {
    time(Kernel::Unfold, || im2col_impl(g, x, n0, nc, col))
}

fn im2col_impl<T: Float>(g: &Geometry, x: &[T], n0: usize, nc: usize, col: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    let j = nc * p;
    let taps = g.kh * g.kw;
    if g.pointwise() {
        // The columns are the images' planes, side by side.
        par_chunks(col, j, col.len(), |ci, out| {
            for ni in 0..nc {
                copy(
                    &mut out[ni * p..(ni + 1) * p],
                    &x[((n0 + ni) * g.c + ci) * hw..][..hw],
                );
            }
        });
        return;
    }
    if g.ow < SHORT_ROWS {
        // Small feature maps: a gather through each tap's source table.
        let sources = g.sources();
        par_chunks(col, j, col.len(), |row, out| {
            let (ci, t) = (row / taps, row % taps);
            let table = &sources[t * p..(t + 1) * p];
            for ni in 0..nc {
                let plane = &x[((n0 + ni) * g.c + ci) * hw..][..hw];
                for (d, &from) in out[ni * p..(ni + 1) * p].iter_mut().zip(table) {
                    *d = if from == NOWHERE {
                        T::ZERO
                    } else {
                        plane[from as usize]
                    };
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
            let plane = &x[((n0 + ni) * g.c + ci) * hw..][..hw];
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
fn copy<T: Float>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s;
    }
}

#[inline(always)]
fn zero<T: Float>(dst: &mut [T]) {
    for d in dst {
        *d = T::ZERO;
    }
}

/// Adds the columns' gradient `dcol` (`C · kh · kw × nc · P`) onto the input
/// gradient of images `[n0, n0 + nc)`: the transpose of [`im2col`].
fn col2im<T: Float>(g: &Geometry, dcol: &[T], n0: usize, nc: usize, dx: &mut [T]) {
    time(Kernel::Fold, || col2im_impl(g, dcol, n0, nc, dx))
}

fn col2im_impl<T: Float>(g: &Geometry, dcol: &[T], n0: usize, nc: usize, dx: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    let j = nc * p;
    let taps = g.kh * g.kw;
    let planes = &mut dx[n0 * g.c * hw..(n0 + nc) * g.c * hw];
    if g.ow < SHORT_ROWS {
        let sources = g.sources();
        par_chunks(planes, hw, dcol.len(), |q, plane| {
            let (ni, ci) = (q / g.c, q % g.c);
            for t in 0..taps {
                let row = &dcol[(ci * taps + t) * j + ni * p..][..p];
                for (&v, &to) in row.iter().zip(&sources[t * p..(t + 1) * p]) {
                    if to != NOWHERE {
                        plane[to as usize] += v;
                    }
                }
            }
        });
        return;
    }
    par_chunks(planes, hw, dcol.len(), |q, plane| {
        let (ni, ci) = (q / g.c, q % g.c);
        for t in 0..taps {
            let (ky, kx) = (t / g.kw, t % g.kw);
            let (y0, y1) = g.valid(ky, g.h, g.oh);
            let (x0, x1) = g.valid(kx, g.w, g.ow);
            let row = &dcol[(ci * taps + t) * j + ni * p..][..p];
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
    });
}

/// Copies images `[n0, n0 + nc)` of a (N, C, P) tensor into (C, nc · P).
fn regroup<T: Float>(planes: usize, p: usize, nchw: &[T], n0: usize, nc: usize, cj: &mut [T]) {
    let j = nc * p;
    par_chunks(cj, j, planes * j, |c, row| {
        for ni in 0..nc {
            row[ni * p..(ni + 1) * p].copy_from_slice(&nchw[((n0 + ni) * planes + c) * p..][..p]);
        }
    });
}

/// Scatters (C, nc · P) back into images `[n0, n0 + nc)` of a (N, C, P) tensor.
fn ungroup<T: Float>(planes: usize, p: usize, cj: &[T], n0: usize, nc: usize, nchw: &mut [T]) {
    let j = nc * p;
    let dst = &mut nchw[n0 * planes * p..(n0 + nc) * planes * p];
    par_chunks(dst, p, planes * j, |q, out| {
        let (ni, c) = (q / planes, q % planes);
        copy(out, &cj[c * j + ni * p..][..p]);
    });
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

/// A raw pointer that may cross threads: each group writes its own rows.
#[derive(Clone, Copy)]
struct Rows<T>(*mut T, usize);
// SAFETY: used only to hand disjoint row blocks of one buffer to threads.
unsafe impl<T> Send for Rows<T> {}
unsafe impl<T> Sync for Rows<T> {}

impl<T> Rows<T> {
    fn new(s: &mut [T]) -> Rows<T> {
        Rows(s.as_mut_ptr(), s.len())
    }

    /// Rows `[start, start + len)` (in elements).
    ///
    /// SAFETY: callers take disjoint ranges at the same time.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.1);
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

fn forward<T: Float>(g: &Geometry, x: &[T], w: &[T]) -> Vec<T> {
    let (p, k, og, cg) = (g.p(), g.k(), g.og(), g.cg());
    let mut y = vec![T::ZERO; g.n * g.o * p];
    let nc_max = g.chunk();
    let mut col = Vec::new();
    let mut tmp = Vec::new();
    for n0 in (0..g.n).step_by(nc_max) {
        let nc = nc_max.min(g.n - n0);
        let j = nc * p;
        // The columns: the image itself for a pointwise convolution of one image.
        let cols: &[T] = if g.pointwise() && nc == 1 {
            &x[n0 * g.c * p..(n0 + 1) * g.c * p]
        } else {
            col.resize(g.c * g.kh * g.kw * j, T::ZERO);
            im2col(g, x, n0, nc, &mut col);
            &col
        };
        // One image: straight into the output; several: through (O, J).
        let direct = nc == 1;
        if !direct {
            tmp.resize(g.o * j, T::ZERO);
        }
        let out = if direct {
            Rows::new(&mut y[n0 * g.o * p..(n0 + 1) * g.o * p])
        } else {
            Rows::new(&mut tmp)
        };
        for_groups(g.groups, threads(), |gi, t| {
            // SAFETY: group gi writes only its own og rows.
            let dst = unsafe { out.range(gi * og * j, og * j) };
            gemm(
                (og, j, k),
                dst,
                j,
                false,
                &w[gi * og * k..],
                (k, 1),
                &cols[gi * cg * g.kh * g.kw * j..],
                (j, 1),
                t,
            );
        });
        if !direct {
            ungroup(g.o, p, &tmp, n0, nc, &mut y);
        }
    }
    y
}

/// The input and weight gradients from the output's gradient `dy`.
fn backward<T: Float>(g: &Geometry, x: &[T], w: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
    let (p, k, og, cg) = (g.p(), g.k(), g.og(), g.cg());
    let taps = g.kh * g.kw;
    let mut dx = vec![T::ZERO; g.n * g.c * g.h * g.w];
    let mut dw = vec![T::ZERO; g.o * k];
    let nc_max = g.chunk();
    let (mut col, mut dcol, mut dyc) = (Vec::new(), Vec::new(), Vec::new());
    for (chunk, n0) in (0..g.n).step_by(nc_max).enumerate() {
        let nc = nc_max.min(g.n - n0);
        let j = nc * p;
        let direct = nc == 1;
        let grads: &[T] = if direct {
            &dy[n0 * g.o * p..(n0 + 1) * g.o * p]
        } else {
            dyc.resize(g.o * j, T::ZERO);
            regroup(g.o, p, dy, n0, nc, &mut dyc);
            &dyc
        };
        let pointwise = g.pointwise() && direct;
        // The weight gradient and the input gradient side by side: each
        // reads dY; one unfolds the input, the other folds back its columns.
        let weight_grad = |threads: usize| {
            let cols: &[T] = if pointwise {
                &x[n0 * g.c * p..(n0 + 1) * g.c * p]
            } else {
                col.resize(g.c * taps * j, T::ZERO);
                im2col(g, x, n0, nc, &mut col);
                &col
            };
            // dW_g (og × K) += dY_g (og × J) · col_gᵀ (J × K).
            let dw_rows = Rows::new(&mut dw);
            for_groups(g.groups, threads, |gi, t| {
                // SAFETY: group gi writes only its own og rows of dW.
                let dst = unsafe { dw_rows.range(gi * og * k, og * k) };
                gemm(
                    (og, k, j),
                    dst,
                    k,
                    chunk > 0,
                    &grads[gi * og * j..],
                    (j, 1),
                    &cols[gi * cg * taps * j..],
                    (1, j),
                    t,
                );
            });
        };
        let input_grad = |threads: usize| {
            // dcol_g (K × J) = W_gᵀ (K × og) · dY_g (og × J), folded onto dx.
            let dst_all: &mut [T] = if pointwise {
                &mut dx[n0 * g.c * p..(n0 + 1) * g.c * p]
            } else {
                dcol.resize(g.c * taps * j, T::ZERO);
                &mut dcol
            };
            let dcol_rows = Rows::new(dst_all);
            for_groups(g.groups, threads, |gi, t| {
                // SAFETY: group gi writes only its own K rows of the columns.
                let dst = unsafe { dcol_rows.range(gi * k * j, k * j) };
                gemm(
                    (k, j, og),
                    dst,
                    j,
                    false,
                    &w[gi * og * k..],
                    (1, k),
                    &grads[gi * og * j..],
                    (j, 1),
                    t,
                );
            });
            if !pointwise {
                col2im(g, &dcol, n0, nc, &mut dx);
            }
        };
        side_by_side(weight_grad, input_grad);
    }
    (dx, dw)
}

impl Conv2d {
    /// `x` (N, C, H, W) convolved with `w` (O, C/groups, kh, kw), plus `bias` (O) if given.
    pub fn forward(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match bias {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, Biased(*self)),
            None => x.apply_op2(&w, *self),
        }
    }
}

/// A convolution with a bias per output channel (BN-Inception's): the bias
/// added in the same op, its gradient the output gradient's sum per channel.
#[derive(Clone, Copy, Debug)]
struct Biased(Conv2d);

fn add_bias<T: Float>(g: &Geometry, y: &mut [T], b: &[T]) {
    let p = g.p();
    par_chunks(y, p, y.len(), |q, plane| {
        let v = b[q % g.o];
        plane.iter_mut().for_each(|x| *x += v);
    });
}

fn bias_grad<T: Float>(g: &Geometry, dy: &[T]) -> Vec<T> {
    let p = g.p();
    let mut db = vec![0.0f64; g.o];
    for (q, plane) in dy.chunks(p).enumerate() {
        db[q % g.o] += plane.iter().map(|v| v.to_f64()).sum::<f64>();
    }
    db.into_iter().map(T::from_f64).collect()
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
        let g = Geometry::new(self.0, l1.dims(), l2.dims())?;
        if l3.dims() != [g.o] {
            candle_core::bail!("a bias of {:?} for {} output channels", l3.dims(), g.o);
        }
        fn run<T: Float>(g: &Geometry, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
            let mut y = forward(g, x, w);
            add_bias(g, &mut y, b);
            y
        }
        let out = time(Kernel::ConvForward, || -> Result<CpuStorage> {
            Ok(match (s1, s2, s3) {
                (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                    CpuStorage::F32(run(
                        &g,
                        slice::<f32>(s1, l1, "convolution")?,
                        slice::<f32>(s2, l2, "convolution")?,
                        slice::<f32>(s3, l3, "convolution")?,
                    ))
                }
                (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                    CpuStorage::F64(run(
                        &g,
                        slice::<f64>(s1, l1, "convolution")?,
                        slice::<f64>(s2, l2, "convolution")?,
                        slice::<f64>(s3, l3, "convolution")?,
                    ))
                }
                _ => candle_core::bail!("convolution supports f32 and f64 (operands alike)"),
            })
        })?;
        Ok((out, Shape::from(g.out_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.0.bwd(x, w, res, grad)?;
        let g = Geometry::new(self.0, x.dims(), w.dims())?;
        let db = match x.dtype() {
            candle_core::DType::F32 => with_slice::<f32, _>(grad, "convolution", |gs| {
                tensor(bias_grad(&g, gs), b.shape())
            })?,
            _ => with_slice::<f64, _>(grad, "convolution", |gs| {
                tensor(bias_grad(&g, gs), b.shape())
            })?,
        };
        Ok((dx, dw, Some(db)))
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
        let g = Geometry::new(*self, l1.dims(), l2.dims())?;
        let out = time(Kernel::ConvForward, || -> Result<CpuStorage> {
            Ok(match (s1, s2) {
                (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(forward(
                    &g,
                    slice::<f32>(s1, l1, "convolution")?,
                    slice::<f32>(s2, l2, "convolution")?,
                )),
                (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(forward(
                    &g,
                    slice::<f64>(s1, l1, "convolution")?,
                    slice::<f64>(s2, l2, "convolution")?,
                )),
                _ => candle_core::bail!("convolution supports f32 and f64 (both operands alike)"),
            })
        })?;
        Ok((out, Shape::from(g.out_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(*self, x.dims(), w.dims())?;
        fn run<T: Float>(
            g: &Geometry,
            x: &Tensor,
            w: &Tensor,
            grad: &Tensor,
        ) -> Result<(Tensor, Tensor)> {
            with_slice::<T, _>(x, "convolution", |xs| {
                with_slice::<T, _>(w, "convolution", |ws| {
                    with_slice::<T, _>(grad, "convolution", |gs| {
                        let (dx, dw) = time(Kernel::ConvBackward, || backward(g, xs, ws, gs));
                        Ok((tensor(dx, x.shape())?, tensor(dw, w.shape())?))
                    })
                })
            })
        }
        let (dx, dw) = match x.dtype() {
            candle_core::DType::F32 => run::<f32>(&g, x, w, grad)?,
            candle_core::DType::F64 => run::<f64>(&g, x, w, grad)?,
            other => candle_core::bail!("convolution supports f32 and f64, not {other:?}"),
        };
        Ok((Some(dx), Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gradcheck::check_gradient;
    use candle_core::{DType, Device};

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
            .forward(&x, &w, None)
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
    fn gradients_match_finite_differences() {
        for (xs, ws, stride, padding, groups) in CASES {
            let conv = Conv2d {
                stride,
                padding,
                groups,
            };
            let x = random(&xs, 3);
            let w = random(&ws, 4);
            check_gradient(&x, |x| conv.forward(x, &w, None), 1e-6, 1e-7)
                .unwrap_or_else(|e| panic!("input, {xs:?} {ws:?}: {e}"));
            check_gradient(&w, |w| conv.forward(&x, w, None), 1e-6, 1e-7)
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
        let ours = conv.forward(&x, &w, Some(&b)).unwrap();
        let theirs = x
            .conv2d(&w, 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
        check_gradient(&b, |b| conv.forward(&x, &w, Some(b)), 1e-6, 1e-7).unwrap();
        check_gradient(&x, |x| conv.forward(x, &w, Some(&b)), 1e-6, 1e-7).unwrap();
        check_gradient(&w, |w| conv.forward(&x, w, Some(&b)), 1e-6, 1e-7).unwrap();
    }

    #[test]
    fn large_batches_go_in_chunks_and_agree() {
        // 40 images of 24x24 (576 output pixels): one image per chunk.
        let x = random(&[40, 3, 24, 24], 5).to_dtype(DType::F32).unwrap();
        let w = random(&[5, 3, 3, 3], 6).to_dtype(DType::F32).unwrap();
        let conv = Conv2d {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let g = Geometry::new(conv, x.dims(), w.dims()).unwrap();
        assert_eq!(g.chunk(), 1);
        let ours = conv.forward(&x, &w, None).unwrap();
        let theirs = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let diff = (ours - theirs)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn kernels_larger_than_the_input_are_errors() {
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
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
