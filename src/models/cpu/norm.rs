//! Batch normalisation over (N, C, H, W), optionally followed by ReLU, in one
//! pass forward and one backward.
//!
//! Training normalises with the batch's mean and (biased) variance, which the
//! op keeps for its backward pass and for the running averages;
//! evaluation uses the statistics it is given. Sums are taken in f64.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::profile::{time, Kernel};
use super::{par_chunks, slice, tensor, threads, with_slice, Float};

/// Per-channel statistics: mean and biased variance.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

/// `y = γ · (x − mean) / √(var + eps) + β`, then `max(y, 0)` with `relu`.
#[derive(Debug)]
pub struct BatchNorm {
    pub eps: f64,
    pub relu: bool,
    /// The statistics to normalise with (evaluation), or `None` to use the batch's.
    pub fixed: Option<Stats>,
    /// The statistics the forward pass used.
    used: Mutex<Option<Stats>>,
}

impl BatchNorm {
    pub fn new(eps: f64, relu: bool, fixed: Option<Stats>) -> Arc<BatchNorm> {
        Arc::new(BatchNorm {
            eps,
            relu,
            fixed,
            used: Mutex::new(None),
        })
    }

    /// Normalises `x` (N, C, H, W) with the per-channel `gamma` and `beta`.
    pub fn forward(self: &Arc<Self>, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
        let op: Arc<Box<dyn CustomOp3 + Send + Sync>> = Arc::new(Box::new(Shared(self.clone())));
        x.contiguous()?
            .apply_op3_arc(&gamma.contiguous()?, &beta.contiguous()?, op)
    }

    /// The statistics of the last forward pass (the batch's, in training).
    pub fn used(&self) -> Option<Stats> {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The op as candle holds it: shares the statistics with the layer.
struct Shared(Arc<BatchNorm>);

/// (N, C, P) of a 4-D (or 2-D) input.
fn ncp(dims: &[usize]) -> Result<(usize, usize, usize)> {
    match *dims {
        [n, c] => Ok((n, c, 1)),
        [n, c, h, w] => Ok((n, c, h * w)),
        _ => candle_core::bail!("batch norm takes (N, C) or (N, C, H, W), got {dims:?}"),
    }
}

/// Elements summed in `T` before the partial sums move to f64.
const BLOCK: usize = 1024;

/// `Σ f(x, g, y).0` and `Σ f(x, g, y).1` over three equally long slices,
/// eight lanes at a time (so the compiler vectorises), in blocks of
/// [`BLOCK`] whose sums are added in f64.
#[inline(always)]
fn sums2<T: Float>(x: &[T], g: &[T], y: &[T], f: impl Fn(T, T, T) -> (T, T)) -> (f64, f64) {
    let (mut ta, mut tb) = (0.0f64, 0.0f64);
    for ((x, g), y) in x.chunks(BLOCK).zip(g.chunks(BLOCK)).zip(y.chunks(BLOCK)) {
        let (mut a, mut b) = ([T::ZERO; 8], [T::ZERO; 8]);
        let (xs, gs, ys) = (x.chunks_exact(8), g.chunks_exact(8), y.chunks_exact(8));
        let (xr, gr, yr) = (xs.remainder(), gs.remainder(), ys.remainder());
        for ((x8, g8), y8) in xs.zip(gs).zip(ys) {
            for l in 0..8 {
                let (u, v) = f(x8[l], g8[l], y8[l]);
                a[l] += u;
                b[l] += v;
            }
        }
        for ((&x1, &g1), &y1) in xr.iter().zip(gr).zip(yr) {
            let (u, v) = f(x1, g1, y1);
            a[0] += u;
            b[0] += v;
        }
        ta += a.iter().map(|v| v.to_f64()).sum::<f64>();
        tb += b.iter().map(|v| v.to_f64()).sum::<f64>();
    }
    (ta, tb)
}

/// `f(0) … f(parts − 1)` computed on the team, in order.
fn collect_parts<R: Send>(parts: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let out: Vec<Mutex<Option<R>>> = (0..parts).map(|_| Mutex::new(None)).collect();
    super::team::for_each(parts, &|i| {
        let r = f(i);
        *out[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    out.into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// Per channel `(Σ f(x, g, y, s).0, Σ f(x, g, y, s).1)` over its images and
/// pixels, `s` the channel's `shift`. Large planes are summed one by one;
/// small ones (the deep stages' 4 × 4 … 1 × 1) element by element across a
/// whole image into per-element partial sums, so the loops stay long.
fn channel_sums<T: Float>(
    (n, c, p): (usize, usize, usize),
    (x, g, y): (&[T], &[T], &[T]),
    shift: &[T],
    f: impl Fn(T, T, T, T) -> (T, T) + Sync,
) -> Vec<(f64, f64)> {
    let parallel = threads() > 1 && n > 1 && n * c * p >= 1 << 14;
    let images: Vec<usize> = (0..n).collect();
    let mut total = vec![(0.0, 0.0); c];
    if p >= 64 {
        let per_image = |&ni: &usize| -> Vec<(f64, f64)> {
            (0..c)
                .map(|ci| {
                    let r = (ni * c + ci) * p..(ni * c + ci + 1) * p;
                    let s = shift[ci];
                    sums2(&x[r.clone()], &g[r.clone()], &y[r], |x, g, y| f(x, g, y, s))
                })
                .collect()
        };
        let parts: Vec<Vec<(f64, f64)>> = if parallel {
            collect_parts(n, |ni| per_image(&ni))
        } else {
            images.iter().map(per_image).collect()
        };
        for part in parts {
            for (t, (a, b)) in total.iter_mut().zip(part) {
                t.0 += a;
                t.1 += b;
            }
        }
        return total;
    }
    let len = c * p;
    let shifts: Vec<T> = shift
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, p))
        .collect();
    // Partial sums per element of an image, over a run of images.
    let accumulate = |run: &[usize]| -> (Vec<T>, Vec<T>) {
        let (mut a, mut b) = (vec![T::ZERO; len], vec![T::ZERO; len]);
        for &ni in run {
            let r = ni * len..(ni + 1) * len;
            let (xs, gs, ys) = (&x[r.clone()], &g[r.clone()], &y[r]);
            for (((((a, b), &x), &g), &y), &s) in a
                .iter_mut()
                .zip(b.iter_mut())
                .zip(xs)
                .zip(gs)
                .zip(ys)
                .zip(&shifts)
            {
                let (u, v) = f(x, g, y, s);
                *a += u;
                *b += v;
            }
        }
        (a, b)
    };
    let parts: Vec<(Vec<T>, Vec<T>)> = if parallel {
        let run = n.div_ceil(threads());
        collect_parts(n.div_ceil(run), |i| {
            accumulate(&images[i * run..((i + 1) * run).min(n)])
        })
    } else {
        vec![accumulate(&images)]
    };
    for (a, b) in parts {
        for (ci, t) in total.iter_mut().enumerate() {
            let r = ci * p..(ci + 1) * p;
            t.0 += a[r.clone()].iter().map(|v| v.to_f64()).sum::<f64>();
            t.1 += b[r].iter().map(|v| v.to_f64()).sum::<f64>();
        }
    }
    total
}

/// Per-channel statistics of `x` (N, C, P): one pass, each channel's sums
/// shifted by its first value (so the variance does not cancel).
fn batch_stats<T: Float>(x: &[T], (n, c, p): (usize, usize, usize)) -> Stats {
    let m = (n * p) as f64;
    let shift: Vec<T> = (0..c).map(|ci| x[ci * p]).collect();
    let sums = channel_sums((n, c, p), (x, x, x), &shift, |v, _, _, s| {
        let d = v - s;
        (d, d * d)
    });
    let (mean, var) = sums
        .iter()
        .zip(&shift)
        .map(|(&(sd, sdd), s)| {
            let md = sd / m;
            (s.to_f64() + md, (sdd / m - md * md).max(0.0))
        })
        .unzip();
    Stats { mean, var }
}

impl BatchNorm {
    fn fwd<T: Float>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
        dims: (usize, usize, usize),
    ) -> Result<Vec<T>> {
        let (n, c, p) = dims;
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch norm of {c} channels given {} scales", gamma.len());
        }
        let stats = match &self.fixed {
            Some(s) if s.mean.len() == c && s.var.len() == c => s.clone(),
            Some(_) => candle_core::bail!("batch norm of {c} channels given other statistics"),
            None => batch_stats(x, dims),
        };
        // y = x · scale + shift per channel.
        let scale: Vec<T> = (0..c)
            .map(|ci| T::from_f64(gamma[ci].to_f64() / (stats.var[ci] + self.eps).sqrt()))
            .collect();
        let shift: Vec<T> = (0..c)
            .map(|ci| T::from_f64(beta[ci].to_f64() - stats.mean[ci] * scale[ci].to_f64()))
            .collect();
        let mut y = vec![T::ZERO; n * c * p];
        let relu = self.relu;
        par_chunks(&mut y, c * p, n * c * p, |ni, out| {
            for ci in 0..c {
                let src = &x[(ni * c + ci) * p..][..p];
                let dst = &mut out[ci * p..(ci + 1) * p];
                let (a, b) = (scale[ci], shift[ci]);
                if relu {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        let t = v * a + b;
                        *d = if t > T::ZERO { t } else { T::ZERO };
                    }
                } else {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = v * a + b;
                    }
                }
            }
        });
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        Ok(y)
    }

    /// (dx, dγ, dβ) from the output's gradient `g`, the input `x`, the output `y`.
    fn bwd_impl<T: Float>(
        &self,
        x: &[T],
        gamma: &[T],
        y: &[T],
        g: &[T],
        dims: (usize, usize, usize),
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (n, c, p) = dims;
        let stats = self.used().unwrap_or_else(|| batch_stats(x, dims));
        let invstd: Vec<f64> = stats
            .var
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect();
        let mean: Vec<T> = stats.mean.iter().map(|&m| T::from_f64(m)).collect();
        let relu = self.relu;
        // Per channel: Σ g' and Σ g'·(x − mean), g' the gradient that passes
        // the ReLU (where the output is positive).
        let sums = if relu {
            channel_sums(dims, (x, g, y), &mean, |x, g, y, m| {
                let g = if y > T::ZERO { g } else { T::ZERO };
                (g, g * (x - m))
            })
        } else {
            channel_sums(dims, (x, g, y), &mean, |x, g, _, m| (g, g * (x - m)))
        };
        let count = (n * p) as f64;
        let train = self.fixed.is_none();
        // dx = a·g' + b·(x − mean) + c per channel.
        let coefficients: Vec<(T, T, T)> = (0..c)
            .map(|ci| {
                let k = gamma[ci].to_f64() * invstd[ci];
                if train {
                    let (sg, sgx) = sums[ci];
                    (
                        T::from_f64(k),
                        T::from_f64(-k * invstd[ci] * invstd[ci] * sgx / count),
                        T::from_f64(-k * sg / count),
                    )
                } else {
                    (T::from_f64(k), T::ZERO, T::ZERO)
                }
            })
            .collect();
        let mut dx = vec![T::ZERO; n * c * p];
        par_chunks(&mut dx, c * p, n * c * p, |ni, out| {
            for ci in 0..c {
                let r = (ni * c + ci) * p..(ni * c + ci + 1) * p;
                let (xs, gs, ys) = (&x[r.clone()], &g[r.clone()], &y[r]);
                let (a, b, cc) = coefficients[ci];
                let m = mean[ci];
                let dst = &mut out[ci * p..(ci + 1) * p];
                if relu {
                    for (((d, &x), &g), &y) in dst.iter_mut().zip(xs).zip(gs).zip(ys) {
                        let g = if y > T::ZERO { g } else { T::ZERO };
                        *d = a * g + b * (x - m) + cc;
                    }
                } else {
                    for ((d, &x), &g) in dst.iter_mut().zip(xs).zip(gs) {
                        *d = a * g + b * (x - m) + cc;
                    }
                }
            }
        });
        let dgamma = sums
            .iter()
            .zip(&invstd)
            .map(|(&(_, sgx), is)| T::from_f64(sgx * is))
            .collect();
        let dbeta = sums.iter().map(|&(sg, _)| T::from_f64(sg)).collect();
        (dx, dgamma, dbeta)
    }
}

impl CustomOp3 for Shared {
    fn name(&self) -> &'static str {
        "wfrun-batch-norm"
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
        let dims = ncp(l1.dims())?;
        let bn = &self.0;
        let out = time(Kernel::NormForward, || -> Result<CpuStorage> {
            Ok(match s1 {
                CpuStorage::F32(_) => CpuStorage::F32(bn.fwd(
                    slice::<f32>(s1, l1, "batch norm")?,
                    slice::<f32>(s2, l2, "batch norm")?,
                    slice::<f32>(s3, l3, "batch norm")?,
                    dims,
                )?),
                CpuStorage::F64(_) => CpuStorage::F64(bn.fwd(
                    slice::<f64>(s1, l1, "batch norm")?,
                    slice::<f64>(s2, l2, "batch norm")?,
                    slice::<f64>(s3, l3, "batch norm")?,
                    dims,
                )?),
                other => {
                    candle_core::bail!("batch norm supports f32 and f64, not {:?}", other.dtype())
                }
            })
        })?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = ncp(x.dims())?;
        fn run<T: Float>(
            bn: &BatchNorm,
            dims: (usize, usize, usize),
            x: &Tensor,
            gamma: &Tensor,
            res: &Tensor,
            grad: &Tensor,
        ) -> Result<(Tensor, Tensor, Tensor)> {
            with_slice::<T, _>(x, "batch norm", |xs| {
                with_slice::<T, _>(gamma, "batch norm", |gs| {
                    with_slice::<T, _>(res, "batch norm", |ys| {
                        with_slice::<T, _>(grad, "batch norm", |ds| {
                            let (dx, dg, db) =
                                time(Kernel::NormBackward, || bn.bwd_impl(xs, gs, ys, ds, dims));
                            Ok((
                                tensor(dx, x.shape())?,
                                tensor(dg, gamma.shape())?,
                                tensor(db, gamma.shape())?,
                            ))
                        })
                    })
                })
            })
        }
        let (dx, dg, db) = match x.dtype() {
            candle_core::DType::F32 => run::<f32>(&self.0, dims, x, gamma, res, grad)?,
            candle_core::DType::F64 => run::<f64>(&self.0, dims, x, gamma, res, grad)?,
            other => candle_core::bail!("batch norm supports f32 and f64, not {other:?}"),
        };
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gradcheck::check_gradient;
    use candle_core::Device;

    fn input(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| {
                ((i as u64 * 7919 + seed * 104729) % 1009) as f64 / 97.0 - 5.0 + i as f64 * 1e-4
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn normalises_with_the_batch_and_keeps_its_statistics() {
        let x = input(&[3, 2, 2, 2], 1);
        let gamma = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        let beta = Tensor::new(&[0.0f64, 0.5], &Device::Cpu).unwrap();
        let bn = BatchNorm::new(1e-5, false, None);
        let y = bn.forward(&x, &gamma, &beta).unwrap();
        // Channel 1: mean β = 0.5, standard deviation γ = 2.
        let c1 = y
            .narrow(1, 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let mean = c1.iter().sum::<f64>() / 12.0;
        let var = c1.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 12.0;
        assert!(
            (mean - 0.5).abs() < 1e-12 && (var - 4.0).abs() < 1e-3,
            "{mean} {var}"
        );
        let used = bn.used().unwrap();
        let x1 = x
            .narrow(1, 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!((used.mean[1] - x1.iter().sum::<f64>() / 12.0).abs() < 1e-12);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let gamma = Tensor::new(&[0.7f64, -1.3, 2.0], &Device::Cpu).unwrap();
        let beta = Tensor::new(&[0.1f64, -0.2, 0.3], &Device::Cpu).unwrap();
        for relu in [false, true] {
            for fixed in [
                None,
                Some(Stats {
                    mean: vec![0.5, -1.0, 0.0],
                    var: vec![2.0, 0.5, 1.0],
                }),
            ] {
                for shape in [[2, 3, 3, 2], [4, 3, 1, 1]] {
                    let what = format!("relu {relu}, fixed {}, {shape:?}", fixed.is_some());
                    let x = input(&shape, 2);
                    let op = |x: &Tensor, g: &Tensor, b: &Tensor| {
                        BatchNorm::new(1e-5, relu, fixed.clone()).forward(x, g, b)
                    };
                    check_gradient(&x, |x| op(x, &gamma, &beta), 1e-6, 1e-7)
                        .unwrap_or_else(|e| panic!("input, {what}: {e}"));
                    check_gradient(&gamma, |g| op(&x, g, &beta), 1e-6, 1e-7)
                        .unwrap_or_else(|e| panic!("gamma, {what}: {e}"));
                    check_gradient(&beta, |b| op(&x, &gamma, b), 1e-6, 1e-7)
                        .unwrap_or_else(|e| panic!("beta, {what}: {e}"));
                }
            }
        }
    }
}
