//! Batch normalisation of channels-first activations (C, N, H, W: each
//! channel's values contiguous), optionally followed by ReLU, in one pass
//! forward and one backward.
//!
//! Training normalises with the batch's mean and (biased) variance, which the
//! op keeps for its backward pass and for the running averages;
//! evaluation uses the statistics it is given. Sums are taken in f64.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::profile::{time, Kernel};
use super::{assume_init, par_chunks, slice, tensor, threads, uninit, with_slice, Float};
use std::mem::MaybeUninit;

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

/// (channels, values per channel) of a (C, N, H, W) or (C, N) input.
fn cm(dims: &[usize]) -> Result<(usize, usize)> {
    match *dims {
        [c, n] => Ok((c, n)),
        [c, n, h, w] => Ok((c, n * h * w)),
        _ => candle_core::bail!("batch norm takes (C, N) or (C, N, H, W), got {dims:?}"),
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

super::widest! {
    /// A channel's `(Σ (v − s), Σ (v − s)²)`.
    fn shifted_sums<T: Float>(row: &[T], s: T) -> (f64, f64) {
        sums2(row, row, row, |v, _, _| {
            let d = v - s;
            (d, d * d)
        })
    }
}

super::widest! {
    /// A channel's output: `x · scale + shift`, through the ReLU if `relu`.
    fn normalise<T: Float>(
        dst: &mut [MaybeUninit<T>],
        src: &[T],
        scale_shift: (T, T),
        relu: bool,
    ) -> () {
        let (scale, shift) = scale_shift;
        if relu {
            for (d, &v) in dst.iter_mut().zip(src) {
                let t = v * scale + shift;
                *d = MaybeUninit::new(if t > T::ZERO { t } else { T::ZERO });
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = MaybeUninit::new(v * scale + shift);
            }
        }
    }
}

super::widest! {
    /// A channel's `(Σ g', Σ g'·(x − mean))`, `g'` the gradient that passes
    /// the ReLU (where the output `y` is positive) if `relu`.
    fn gradient_sums<T: Float>(xgy: (&[T], &[T], &[T]), mean: T, relu: bool) -> (f64, f64) {
        let (xs, gs, ys) = xgy;
        if relu {
            sums2(xs, gs, ys, |x, g, y| {
                let g = if y > T::ZERO { g } else { T::ZERO };
                (g, g * (x - mean))
            })
        } else {
            sums2(xs, gs, ys, |x, g, _| (g, g * (x - mean)))
        }
    }
}

super::widest! {
    /// A channel's input gradient `a·g' + b·(x − mean) + c`.
    fn input_gradient<T: Float>(
        dst: &mut [MaybeUninit<T>],
        xgy: (&[T], &[T], &[T]),
        coefficients: [T; 4],
        relu: bool,
    ) -> () {
        let ((xs, gs, ys), [a, b, cc, mean]) = (xgy, coefficients);
        if relu {
            for (((d, &x), &g), &y) in dst.iter_mut().zip(xs).zip(gs).zip(ys) {
                let g = if y > T::ZERO { g } else { T::ZERO };
                *d = MaybeUninit::new(a * g + b * (x - mean) + cc);
            }
        } else {
            for ((d, &x), &g) in dst.iter_mut().zip(xs).zip(gs) {
                *d = MaybeUninit::new(a * g + b * (x - mean) + cc);
            }
        }
    }
}

/// `f(channel)` for every channel, on the team when there is work enough.
fn per_channel<R: Send>(c: usize, work: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let parts = if threads() > 1 && work >= 1 << 15 {
        threads().min(c)
    } else {
        1
    };
    if parts <= 1 {
        return (0..c).map(f).collect();
    }
    let run = c.div_ceil(parts);
    let out: Vec<Mutex<Vec<R>>> = (0..parts).map(|_| Mutex::new(Vec::new())).collect();
    super::team::for_each(parts, &|i| {
        let r: Vec<R> = (i * run..((i + 1) * run).min(c)).map(&f).collect();
        *out[i].lock().unwrap_or_else(|e| e.into_inner()) = r;
    });
    out.into_iter()
        .flat_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// Per-channel statistics of `x` (C × M): one pass, each channel's sums
/// shifted by its first value (so the variance does not cancel).
fn batch_stats<T: Float>(x: &[T], (c, m): (usize, usize)) -> Stats {
    let count = m as f64;
    let (mean, var) = per_channel(c, c * m, |ci| {
        let row = &x[ci * m..(ci + 1) * m];
        let s = row[0];
        let (sd, sdd) = shifted_sums(row, s);
        let md = sd / count;
        (s.to_f64() + md, (sdd / count - md * md).max(0.0))
    })
    .into_iter()
    .unzip();
    Stats { mean, var }
}

impl BatchNorm {
    fn fwd<T: Float>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
        (c, m): (usize, usize),
    ) -> Result<Vec<T>> {
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch norm of {c} channels given {} scales", gamma.len());
        }
        if m == 0 {
            candle_core::bail!("batch norm of an empty batch");
        }
        let stats = match &self.fixed {
            Some(s) if s.mean.len() == c && s.var.len() == c => s.clone(),
            Some(_) => candle_core::bail!("batch norm of {c} channels given other statistics"),
            None => batch_stats(x, (c, m)),
        };
        // Every value is written below.
        let mut y = uninit::<T>(c * m);
        let relu = self.relu;
        par_chunks(&mut y, m, c * m, |ci, dst| {
            // y = x · scale + shift.
            let a = gamma[ci].to_f64() / (stats.var[ci] + self.eps).sqrt();
            let (scale, shift) = (
                T::from_f64(a),
                T::from_f64(beta[ci].to_f64() - stats.mean[ci] * a),
            );
            normalise(dst, &x[ci * m..(ci + 1) * m], (scale, shift), relu);
        });
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
        // SAFETY: every channel's chunk was written in full.
        Ok(unsafe { assume_init(y) })
    }

    /// (dx, dγ, dβ) from the output's gradient `g`, the input `x`, the output `y`.
    fn bwd_impl<T: Float>(
        &self,
        x: &[T],
        gamma: &[T],
        y: &[T],
        g: &[T],
        (c, m): (usize, usize),
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let stats = self.used().unwrap_or_else(|| batch_stats(x, (c, m)));
        let invstd: Vec<f64> = stats
            .var
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect();
        let relu = self.relu;
        // Per channel: Σ g' and Σ g'·(x − mean), g' the gradient that passes
        // the ReLU (where the output is positive).
        let sums = per_channel(c, c * m, |ci| {
            let r = ci * m..(ci + 1) * m;
            let mean = T::from_f64(stats.mean[ci]);
            gradient_sums((&x[r.clone()], &g[r.clone()], &y[r]), mean, relu)
        });
        let count = m as f64;
        let train = self.fixed.is_none();
        // Every value is written below.
        let mut dx = uninit::<T>(c * m);
        par_chunks(&mut dx, m, c * m, |ci, dst| {
            // dx = a·g' + b·(x − mean) + c.
            let k = gamma[ci].to_f64() * invstd[ci];
            let (a, b, cc) = if train {
                let (sg, sgx) = sums[ci];
                (
                    T::from_f64(k),
                    T::from_f64(-k * invstd[ci] * invstd[ci] * sgx / count),
                    T::from_f64(-k * sg / count),
                )
            } else {
                (T::from_f64(k), T::ZERO, T::ZERO)
            };
            let mean = T::from_f64(stats.mean[ci]);
            let r = ci * m..(ci + 1) * m;
            input_gradient(
                dst,
                (&x[r.clone()], &g[r.clone()], &y[r]),
                [a, b, cc, mean],
                relu,
            );
        });
        let dgamma = sums
            .iter()
            .zip(&invstd)
            .map(|(&(_, sgx), is)| T::from_f64(sgx * is))
            .collect();
        let dbeta = sums.iter().map(|&(sg, _)| T::from_f64(sg)).collect();
        // SAFETY: every channel's chunk was written in full.
        (unsafe { assume_init(dx) }, dgamma, dbeta)
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
        let dims = cm(l1.dims())?;
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
        let dims = cm(x.dims())?;
        fn run<T: Float>(
            bn: &BatchNorm,
            dims: (usize, usize),
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

    /// The loops compiled for the widest vectors give the baseline's values
    /// to the bit (and the dispatch takes the wide path on this machine when
    /// it has one: the test still compares, whichever it takes).
    #[test]
    fn the_widest_loops_give_the_baselines_values() {
        let n = 1000 + 7;
        let f = |i: usize, k: usize| ((i * k % 1013) as f32 / 97.0 - 5.0) * (1.0 + i as f32 * 1e-3);
        let values = |k: usize| (0..n).map(|i| f(i, k)).collect::<Vec<f32>>();
        let (x, g, y) = (values(7919), values(104729), values(31));
        let bits = |v: (f64, f64)| (v.0.to_bits(), v.1.to_bits());
        assert_eq!(
            bits(shifted_sums(&x, x[0])),
            bits(shifted_sums::baseline(&x, x[0]))
        );
        for relu in [false, true] {
            let (mut wide, mut base) = (uninit::<f32>(n), uninit::<f32>(n));
            let same = |a: &[MaybeUninit<f32>], b: &[MaybeUninit<f32>]| {
                // SAFETY: both were written in full before they are compared.
                let bits = |v: &MaybeUninit<f32>| unsafe { v.assume_init() }.to_bits();
                a.iter().zip(b).all(|(a, b)| bits(a) == bits(b))
            };
            normalise(&mut wide, &x, (1.3, -0.2), relu);
            normalise::baseline(&mut base, &x, (1.3, -0.2), relu);
            assert!(same(&wide, &base));
            assert_eq!(
                bits(gradient_sums((&x, &g, &y), 0.37, relu)),
                bits(gradient_sums::baseline((&x, &g, &y), 0.37, relu))
            );
            let k = [0.9, -1e-3, 2e-2, 0.37];
            input_gradient(&mut wide, (&x, &g, &y), k, relu);
            input_gradient::baseline(&mut base, (&x, &g, &y), k, relu);
            assert!(same(&wide, &base));
        }
    }

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
        let x = input(&[2, 3, 2, 2], 1);
        let gamma = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        let beta = Tensor::new(&[0.0f64, 0.5], &Device::Cpu).unwrap();
        let bn = BatchNorm::new(1e-5, false, None);
        let y = bn.forward(&x, &gamma, &beta).unwrap();
        // Channel 1: mean β = 0.5, standard deviation γ = 2.
        let c1 = y
            .narrow(0, 1, 1)
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
            .narrow(0, 1, 1)
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
                for shape in [[3, 2, 3, 2], [3, 4, 1, 1], [3, 2, 8, 9]] {
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
