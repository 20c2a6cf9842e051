//! 2-D max and average pooling with any kernel, stride and padding, ceil
//! mode, and a correct gradient, as candle custom ops (CPU).
//!
//! candle 0.11's own pools scale the max-pool gradient by 1/k² when
//! kernel = stride, refuse a backward pass when kernel ≠ stride, and take no
//! padding or ceil mode; BN-Inception needs all of these. The semantics here
//! are PyTorch's `nn.MaxPool2d` / `nn.AvgPool2d` (dilation 1): the gradient of
//! a max goes to the first maximum of its window; an average divides by the
//! window clipped to the padded input (`count_include_pad = true`) or to the
//! input itself (`false`).

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};

use super::cpu::par_chunks;

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolKind {
    Max,
    Avg { count_include_pad: bool },
}

/// A pooling window: kernel, stride and padding as (height, width).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub ceil_mode: bool,
}

impl Pool2d {
    pub fn max(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Pool2d {
        Pool2d {
            kind: PoolKind::Max,
            kernel: (kernel, kernel),
            stride: (stride, stride),
            padding: (padding, padding),
            ceil_mode,
        }
    }

    pub fn avg(
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Pool2d {
        Pool2d {
            kind: PoolKind::Avg { count_include_pad },
            kernel: (kernel, kernel),
            stride: (stride, stride),
            padding: (padding, padding),
            ceil_mode,
        }
    }

    /// The output length along one axis, exactly as PyTorch computes it
    /// (`pooling_output_shape`): in ceil mode a last window may hang over the
    /// edge, but must start inside the input or its left padding.
    fn out_len(&self, len: usize, k: usize, s: usize, p: usize) -> Result<usize> {
        if p * 2 > k {
            candle_core::bail!("pooling padding {p} is more than half the {k}-pixel window");
        }
        let Some(out) = crate::arch::pool_out_len(len, k, s, p, self.ceil_mode) else {
            candle_core::bail!(
                "pooling a {len}-pixel side with a {k}-pixel window (padding {p}) leaves no output; \
                 use a larger image_size"
            );
        };
        Ok(out)
    }

    /// The output's height and width for an input of `h` × `w`, PyTorch's
    /// (an error when no window fits).
    pub fn out_dims(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((
            self.out_len(h, self.kernel.0, self.stride.0, self.padding.0)?,
            self.out_len(w, self.kernel.1, self.stride.1, self.padding.1)?,
        ))
    }

    /// Pools `x` (N, C, H, W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let op = |t: &Tensor| -> Result<Tensor> {
            let op: Arc<Box<dyn CustomOp1 + Send + Sync>> = Arc::new(Box::new(PoolOp {
                pool: *self,
                // Without a gradient to come (evaluation), no sources to keep.
                sources: t.track_op(),
                argmax: Mutex::new(None),
            }));
            t.contiguous()?.apply_op1_arc(op)
        };
        if !x.device().is_cpu() {
            // The kernels are the CPU's: a CUDA or Metal tensor makes the round
            // trip (differentiably), the rest of the network stays on the device.
            let cpu = x.to_device(&candle_core::Device::Cpu)?;
            return op(&cpu)?.to_device(x.device());
        }
        op(x)
    }

    /// The windows along one axis, one per output index: input rows `[lo, hi)`
    /// and the divisor's span (clipped to the padded input, or to the input
    /// without `count_include_pad`).
    fn windows(&self, len: usize, k: usize, s: usize, p: usize, out: usize) -> Vec<Window> {
        let include_pad = matches!(
            self.kind,
            PoolKind::Avg {
                count_include_pad: true
            }
        );
        (0..out)
            .map(|o| {
                let start = (o * s) as isize - p as isize;
                let end = (start + k as isize).min((len + p) as isize);
                let lo = start.max(0) as usize;
                let hi = (end.max(0) as usize).min(len);
                let span = if include_pad {
                    (end - start) as usize
                } else {
                    hi - lo
                };
                Window { lo, hi, span }
            })
            .collect()
    }

    /// The output ([`Pool2d::fwd_values`]) and, for max pooling with
    /// `sources`, each output's source (index in its plane).
    fn fwd<T: WithDType + num_like::Float>(
        &self,
        x: &[T],
        dims: (usize, usize, usize, usize),
        sources: bool,
    ) -> Result<(Vec<T>, Option<Vec<u32>>)> {
        let out = self.fwd_values(x, dims)?;
        if !(sources && self.kind == PoolKind::Max) {
            return Ok((out, None));
        }
        let (n, c, h, w) = dims;
        let (oh, ow) = self.out_dims(h, w)?;
        let ys = self.windows(h, self.kernel.0, self.stride.0, self.padding.0, oh);
        let xs = self.windows(w, self.kernel.1, self.stride.1, self.padding.1, ow);
        let work = n * c * oh * ow * self.kernel.0 * self.kernel.1;
        let mut argmax = vec![0u32; n * c * oh * ow];
        par_chunks(&mut argmax, oh * ow, work, |q, at| {
            let src = &x[q * h * w..(q + 1) * h * w];
            let maxima = &out[q * oh * ow..(q + 1) * oh * ow];
            for (oy, wy) in ys.iter().enumerate() {
                let row = oy * ow..(oy + 1) * ow;
                for ((a, &m), wx) in at[row.clone()].iter_mut().zip(&maxima[row]).zip(&xs) {
                    // PyTorch's rule: the first maximum in row-major order (a
                    // NaN counts as the maximum), found by looking for the
                    // maximum again: the window read backwards, each match
                    // taking the place of the last one found, without a
                    // branch to mispredict.
                    let nan = m.is_nan();
                    let mut found = wy.lo * w + wx.lo;
                    for yy in (wy.lo..wy.hi).rev() {
                        for xx in (wx.lo..wx.hi).rev() {
                            let v = src[yy * w + xx];
                            let hit = (v == m) | (nan & v.is_nan());
                            found = if hit { yy * w + xx } else { found };
                        }
                    }
                    *a = found as u32;
                }
            }
        });
        Ok((out, Some(argmax)))
    }

    /// The output alone: each window reduced over its rows column by
    /// column, then over its columns, in order.
    /// Small planes (the late layers' 2 × 2 to 8 × 8 maps) are pooled across
    /// a group of planes at once, their values laid out position by position
    /// so that every step is a long run of one operation; larger planes row
    /// by row, through a row padded so that every window is whole.
    fn fwd_values<T: WithDType + num_like::Float>(
        &self,
        x: &[T],
        dims: (usize, usize, usize, usize),
    ) -> Result<Vec<T>> {
        let (n, c, h, w) = dims;
        let (oh, ow) = self.out_dims(h, w)?;
        let ((ky, kx), (sy, sx), (py, px)) = (self.kernel, self.stride, self.padding);
        let ys = self.windows(h, ky, sy, py, oh);
        let xs = self.windows(w, kx, sx, px, ow);
        let planes = n * c;
        let mut out = vec![T::nought(); planes * oh * ow];
        if planes == 0 || oh * ow == 0 {
            return Ok(out);
        }
        let max = self.kind == PoolKind::Max;
        let combine = |acc: &mut [T], values: &[T]| {
            if max {
                for (a, &v) in acc.iter_mut().zip(values) {
                    *a = if above(v, *a) { v } else { *a };
                }
            } else {
                for (a, &v) in acc.iter_mut().zip(values) {
                    *a += v;
                }
            }
        };
        let work = planes * oh * ow * ky * kx;
        let plane = h * w;
        if plane <= SMALL_PLANE {
            let group = (SMALL_GROUP / plane.max(1)).max(1);
            par_chunks(&mut out, group * oh * ow, work, |g, dst| {
                let count = dst.len() / (oh * ow);
                let src = &x[g * group * plane..][..count * plane];
                // t[i · count + p]: value i of plane p; u likewise for the outputs.
                let mut t = vec![T::nought(); plane * count];
                for (i, run) in t.chunks_exact_mut(count).enumerate() {
                    for (v, values) in run.iter_mut().zip(src.chunks_exact(plane)) {
                        *v = values[i];
                    }
                }
                let at = |y: usize, x: usize| &t[(y * w + x) * count..][..count];
                let mut u = vec![T::nought(); oh * ow * count];
                // Per output row, each column's reduction over the window's rows.
                let mut columns = vec![T::nought(); w * count];
                let mut runs = u.chunks_exact_mut(count);
                for wy in &ys {
                    for (xx, column) in columns.chunks_exact_mut(count).enumerate() {
                        column.copy_from_slice(at(wy.lo, xx));
                        for yy in wy.lo + 1..wy.hi {
                            combine(column, at(yy, xx));
                        }
                    }
                    for wx in &xs {
                        let Some(acc) = runs.next() else { break };
                        let column = |xx: usize| &columns[xx * count..][..count];
                        if max {
                            acc.copy_from_slice(column(wx.lo));
                        } else {
                            acc.fill(T::nought());
                            combine(acc, column(wx.lo));
                        }
                        for xx in wx.lo + 1..wx.hi {
                            combine(acc, column(xx));
                        }
                        if !max {
                            let span = T::from_usize((wy.span * wx.span).max(1));
                            acc.iter_mut().for_each(|v| *v /= span);
                        }
                    }
                }
                for (p, outputs) in dst.chunks_exact_mut(oh * ow).enumerate() {
                    for (o, v) in outputs.iter_mut().enumerate() {
                        *v = u[o * count + p];
                    }
                }
            });
            return Ok(out);
        }
        // The row padded: `px` values before it and enough after it for the
        // last window, all of which change no result (−∞ for a maximum, 0
        // for a sum).
        let padded = ((ow - 1) * sx + kx).max(px + w);
        let pad = if max { T::lowest() } else { T::nought() };
        par_chunks(&mut out, oh * ow, work, |q, dst| {
            let src = &x[q * plane..][..plane];
            // Without a NaN, `above` is `>`: a plain maximum.
            let plain = max && !src.iter().fold(false, |nan, v| nan | v.is_nan());
            let mut row = vec![pad; padded];
            for (oy, wy) in ys.iter().enumerate() {
                let inner = &mut row[px..px + w];
                inner.copy_from_slice(&src[wy.lo * w..][..w]);
                for yy in wy.lo + 1..wy.hi {
                    combine(inner, &src[yy * w..][..w]);
                }
                let d = &mut dst[oy * ow..][..ow];
                if plain && kx == 3 {
                    for (ox, d) in d.iter_mut().enumerate() {
                        let window = &row[ox * sx..][..3];
                        let mut b = window[0];
                        b = if window[1] > b { window[1] } else { b };
                        *d = if window[2] > b { window[2] } else { b };
                    }
                } else if plain {
                    for (ox, d) in d.iter_mut().enumerate() {
                        let window = &row[ox * sx..][..kx];
                        let mut b = window[0];
                        for &v in &window[1..] {
                            b = if v > b { v } else { b };
                        }
                        *d = b;
                    }
                } else if max {
                    for (ox, d) in d.iter_mut().enumerate() {
                        let window = &row[ox * sx..][..kx];
                        let mut b = window[0];
                        for &v in &window[1..] {
                            b = if above(v, b) { v } else { b };
                        }
                        *d = b;
                    }
                } else {
                    for ((ox, d), wx) in d.iter_mut().enumerate().zip(&xs) {
                        let mut sum = T::nought();
                        for &v in &row[ox * sx..][..kx] {
                            sum += v;
                        }
                        *d = sum / T::from_usize((wy.span * wx.span).max(1));
                    }
                }
            }
        });
        Ok(out)
    }

    /// The input gradient from the output's: to each window's source (max,
    /// `argmax` from the forward pass) or spread over the window (average).
    fn bwd_impl<T: WithDType + num_like::Float>(
        &self,
        grad: &[T],
        argmax: Option<&[u32]>,
        dims: (usize, usize, usize, usize),
    ) -> Result<Vec<T>> {
        let (n, c, h, w) = dims;
        let (oh, ow) = self.out_dims(h, w)?;
        let mut gx = vec![T::nought(); n * c * h * w];
        let work = n * c * oh * ow * self.kernel.0 * self.kernel.1;
        match (self.kind, argmax) {
            (PoolKind::Max, Some(argmax)) => {
                par_chunks(&mut gx, h * w, work, |q, dst| {
                    let g = &grad[q * oh * ow..(q + 1) * oh * ow];
                    let at = &argmax[q * oh * ow..(q + 1) * oh * ow];
                    for (&i, &go) in at.iter().zip(g) {
                        dst[i as usize] += go;
                    }
                });
            }
            (PoolKind::Max, None) => {
                candle_core::bail!("max pooling's backward pass needs its forward pass")
            }
            (PoolKind::Avg { .. }, _) => {
                let ys = self.windows(h, self.kernel.0, self.stride.0, self.padding.0, oh);
                let xs = self.windows(w, self.kernel.1, self.stride.1, self.padding.1, ow);
                par_chunks(&mut gx, h * w, work, |q, dst| {
                    let g = &grad[q * oh * ow..(q + 1) * oh * ow];
                    for (oy, wy) in ys.iter().enumerate() {
                        for (ox, wx) in xs.iter().enumerate() {
                            let share = g[oy * ow + ox] / T::from_usize((wy.span * wx.span).max(1));
                            for yy in wy.lo..wy.hi {
                                for d in &mut dst[yy * w + wx.lo..yy * w + wx.hi] {
                                    *d += share;
                                }
                            }
                        }
                    }
                });
            }
        }
        Ok(gx)
    }
}

/// Planes of at most this many values are pooled across planes
/// ([`Pool2d::fwd_values`]), in groups of about `SMALL_GROUP` values.
const SMALL_PLANE: usize = 64;
const SMALL_GROUP: usize = 4096;

/// Whether `v` replaces `best` as a maximum: larger, or a NaN over a number
/// (a NaN counts as the maximum, as in PyTorch).
#[inline(always)]
fn above<T: num_like::Float>(v: T, best: T) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// One axis of a pooling window.
#[derive(Clone, Copy, Debug)]
struct Window {
    lo: usize,
    hi: usize,
    span: usize,
}

fn dims4(layout: &Layout) -> Result<(usize, usize, usize, usize)> {
    layout.shape().dims4()
}

fn contiguous<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("pooling needs a contiguous tensor".into()))?;
    Ok(&storage.as_slice::<T>()?[start..end])
}

/// A pooling applied once: keeps the max pool's sources for its backward pass.
struct PoolOp {
    pool: Pool2d,
    /// Whether to keep max pooling's sources (a backward pass may come).
    sources: bool,
    argmax: Mutex<Option<Vec<u32>>>,
}

impl CustomOp1 for PoolOp {
    fn name(&self) -> &'static str {
        "wfrun-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(layout)?;
        let (oh, ow) = self.pool.out_dims(dims.2, dims.3)?;
        let shape = Shape::from((dims.0, dims.1, oh, ow));
        let _timer = super::cpu::profile::Timer::start(super::cpu::profile::Kernel::PoolForward);
        let (out, argmax) = match storage {
            CpuStorage::F32(_) => {
                let (y, a) =
                    self.pool
                        .fwd(contiguous::<f32>(storage, layout)?, dims, self.sources)?;
                (CpuStorage::F32(y), a)
            }
            CpuStorage::F64(_) => {
                let (y, a) =
                    self.pool
                        .fwd(contiguous::<f64>(storage, layout)?, dims, self.sources)?;
                (CpuStorage::F64(y), a)
            }
            other => candle_core::bail!("pooling supports f32 and f64, not {:?}", other.dtype()),
        };
        *self.argmax.lock().unwrap_or_else(|e| e.into_inner()) = argmax;
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let _timer = super::cpu::profile::Timer::start(super::cpu::profile::Kernel::PoolBackward);
        let dims = arg.dims4()?;
        let argmax = self.argmax.lock().unwrap_or_else(|e| e.into_inner());
        let grad = grad_res.contiguous()?;
        let (storage, layout) = grad.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("pooling gradients are computed on the CPU");
        };
        let gx = match cpu {
            CpuStorage::F32(_) => CpuStorage::F32(self.pool.bwd_impl(
                contiguous::<f32>(cpu, layout)?,
                argmax.as_deref(),
                dims,
            )?),
            CpuStorage::F64(_) => CpuStorage::F64(self.pool.bwd_impl(
                contiguous::<f64>(cpu, layout)?,
                argmax.as_deref(),
                dims,
            )?),
            other => candle_core::bail!(
                "pooling gradients support f32 and f64, not {:?}",
                other.dtype()
            ),
        };
        let shape = arg.shape().clone();
        let out = match gx {
            CpuStorage::F32(v) => Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?,
            CpuStorage::F64(v) => Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?,
            _ => unreachable!("built above as f32 or f64"),
        };
        Ok(Some(out))
    }
}

/// The little float arithmetic the kernels need, for f32 and f64.
mod num_like {
    pub trait Float:
        Copy + PartialOrd + std::ops::AddAssign + std::ops::Div<Output = Self> + std::ops::DivAssign
    {
        fn nought() -> Self;
        /// −∞.
        fn lowest() -> Self;
        fn is_nan(self) -> bool;
        fn from_usize(n: usize) -> Self;
    }

    macro_rules! float {
        ($t:ty) => {
            impl Float for $t {
                fn nought() -> Self {
                    0.0
                }
                fn lowest() -> Self {
                    <$t>::NEG_INFINITY
                }
                fn is_nan(self) -> bool {
                    <$t>::is_nan(self)
                }
                fn from_usize(n: usize) -> Self {
                    n as $t
                }
            }
        };
    }
    float!(f32);
    float!(f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gradcheck::check_gradient;
    use candle_core::{DType, Device};

    fn input(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        // Distinct values, so every window has one maximum (the gradient is defined).
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let mut v: Vec<f64> = (0..n)
            .map(|i| ((i as u64 * 7919 + seed * 104729) % 1009) as f64 / 97.0 - 5.0)
            .collect();
        for (i, x) in v.iter_mut().enumerate() {
            *x += i as f64 * 1e-6;
        }
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn output_sizes_follow_pytorch() {
        let p = Pool2d::max(3, 2, 0, true);
        assert_eq!(p.out_dims(112, 112).unwrap(), (56, 56)); // BN-Inception's pool1 at 224
        assert_eq!(p.out_dims(16, 16).unwrap(), (8, 8));
        assert_eq!(p.out_dims(2, 2).unwrap(), (1, 1));
        assert_eq!(
            Pool2d::max(3, 2, 0, false).out_dims(16, 16).unwrap(),
            (7, 7)
        );
        assert_eq!(
            Pool2d::max(3, 2, 1, false).out_dims(112, 112).unwrap(),
            (56, 56)
        ); // ResNet
        assert_eq!(
            Pool2d::avg(3, 1, 1, true, true).out_dims(28, 28).unwrap(),
            (28, 28)
        );
        assert!(Pool2d::max(3, 2, 0, false).out_dims(2, 2).is_err());
    }

    #[test]
    fn forward_matches_hand_computed_values() {
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let max = Pool2d::max(3, 2, 1, false).forward(&x).unwrap();
        assert_eq!(
            max.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [5.0, 7.0, 13.0, 15.0]
        );
        let avg = Pool2d::avg(3, 1, 1, false, true).forward(&x).unwrap();
        let v = avg.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - (0.0 + 1.0 + 4.0 + 5.0) / 9.0).abs() < 1e-6);
        let avg = Pool2d::avg(3, 1, 1, false, false).forward(&x).unwrap();
        let v = avg.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - (0.0 + 1.0 + 4.0 + 5.0) / 4.0).abs() < 1e-6);
        assert!((v[5] - (0.0 + 1.0 + 2.0 + 4.0 + 5.0 + 6.0 + 8.0 + 9.0 + 10.0) / 9.0).abs() < 1e-6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (pool, shape) in [
            (Pool2d::max(3, 2, 0, true), (2, 3, 7, 7)),
            (Pool2d::max(3, 2, 1, false), (1, 2, 8, 8)),
            (Pool2d::max(2, 2, 0, false), (1, 2, 6, 6)),
            (Pool2d::max(3, 1, 1, true), (1, 2, 5, 5)),
            (Pool2d::avg(3, 1, 1, true, true), (2, 2, 6, 6)),
            (Pool2d::avg(3, 1, 1, false, false), (1, 2, 5, 5)),
            (Pool2d::avg(3, 2, 1, true, false), (1, 1, 7, 7)),
        ] {
            let x = input(shape, 3);
            assert_eq!(x.dtype(), DType::F64);
            check_gradient(&x, |x| pool.forward(x), 1e-6, 1e-7)
                .unwrap_or_else(|e| panic!("{pool:?}: {e}"));
        }
    }

    /// Pooling by its definition: each window visited in row-major order.
    fn direct(
        pool: &Pool2d,
        x: &[f64],
        (n, c, h, w): (usize, usize, usize, usize),
    ) -> (Vec<f64>, Vec<u32>) {
        let (oh, ow) = pool.out_dims(h, w).unwrap();
        let ys = pool.windows(h, pool.kernel.0, pool.stride.0, pool.padding.0, oh);
        let xs = pool.windows(w, pool.kernel.1, pool.stride.1, pool.padding.1, ow);
        let (mut out, mut at) = (Vec::new(), Vec::new());
        for q in 0..n * c {
            let src = &x[q * h * w..(q + 1) * h * w];
            for wy in &ys {
                for wx in &xs {
                    let (mut best, mut from, mut sum) = (f64::NEG_INFINITY, None, 0.0);
                    for yy in wy.lo..wy.hi {
                        for xx in wx.lo..wx.hi {
                            let v = src[yy * w + xx];
                            sum += v;
                            if from.is_none() || v > best || (v.is_nan() && !best.is_nan()) {
                                best = v;
                                from = Some(yy * w + xx);
                            }
                        }
                    }
                    match pool.kind {
                        PoolKind::Max => out.push(best),
                        PoolKind::Avg { .. } => out.push(sum / (wy.span * wx.span) as f64),
                    }
                    at.push(from.unwrap() as u32);
                }
            }
        }
        (out, at)
    }

    #[test]
    fn pooling_row_by_row_equals_the_definition() {
        // Planes small (pooled across planes) and large (row by row), odd
        // and even; few distinct values (ties everywhere), some -inf and NaN,
        // or none of either (the plain maximum's path).
        for (dims, special) in [
            ((2, 3, 9, 7), true),
            ((2, 3, 9, 7), false),
            ((2, 3, 13, 11), true),
            ((2, 3, 13, 11), false),
            ((3, 5, 2, 2), true),
            ((1, 700, 4, 4), true),
            ((2, 2, 17, 32), false),
        ] {
            check_against_the_definition(dims, special);
        }
    }

    fn check_against_the_definition(dims: (usize, usize, usize, usize), special: bool) {
        let len = dims.0 * dims.1 * dims.2 * dims.3;
        let x: Vec<f64> = (0..len)
            .map(|i| match (i * 7919) % 23 {
                0 if special => f64::NEG_INFINITY,
                1 if special && i % 5 == 0 => f64::NAN,
                v => (v % 4) as f64,
            })
            .collect();
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12;
        for pool in [
            Pool2d::max(3, 2, 0, true),
            Pool2d::max(3, 2, 1, false),
            Pool2d::max(2, 2, 0, false),
            Pool2d::max(3, 1, 1, true),
            Pool2d::max(3, 2, 0, false),
            Pool2d::avg(3, 1, 1, true, true),
            Pool2d::avg(3, 1, 1, false, false),
            Pool2d::avg(3, 2, 1, true, false),
            Pool2d::avg(2, 2, 0, true, true),
        ] {
            if pool.out_dims(dims.2, dims.3).is_err() {
                continue;
            }
            let (ours, at) = pool.fwd(&x, dims, true).unwrap();
            let (theirs, their_at) = direct(&pool, &x, dims);
            let (values, none) = pool.fwd(&x, dims, false).unwrap();
            assert!(none.is_none());
            for (i, (&a, &b)) in values.iter().zip(&theirs).enumerate() {
                assert!(
                    same(a, b),
                    "{pool:?} {dims:?} at {i}, without sources: {a} vs {b}"
                );
            }
            assert_eq!(ours.len(), theirs.len(), "{pool:?}");
            for (i, (&a, &b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(same(a, b), "{pool:?} {dims:?} at {i}: {a} vs {b}");
            }
            if let Some(at) = at {
                assert_eq!(at, their_at, "{pool:?} {dims:?}: sources");
                // With and without sources, a maximum's values agree exactly.
                for (&a, &b) in ours.iter().zip(&values) {
                    assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                }
            }
        }
    }
}
