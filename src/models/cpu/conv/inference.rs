//! Evaluation's convolution: batch norm folded in, the residual and ReLU
//! applied to each block of the product while it is in cache.

use super::*;

/// What happens to each output value as soon as its block of the product is
/// computed (still in cache): `v · scale + shift` per output channel, plus
/// the residual's value at the same place, then ReLU.
pub(crate) struct After<'a, T> {
    pub scale: Option<&'a [T]>,
    pub shift: Option<&'a [T]>,
    pub residual: Option<&'a [T]>,
    pub relu: bool,
}

impl<T: Float> After<'_, T> {
    /// Output channel `o`'s value at output column `col`.
    #[inline]
    pub(super) fn one(&self, o: usize, col: usize, jt: usize, v: T) -> T {
        let s = self.scale.map_or(T::ONE, |s| s[o]);
        let b = self.shift.map_or(T::ZERO, |b| b[o]);
        let v = v * s + b + self.residual.map_or(T::ZERO, |r| r[o * jt + col]);
        if self.relu && v < T::ZERO {
            T::ZERO
        } else {
            v
        }
    }

    /// Output channel `o`'s values from output column `col` on (of `jt` columns in all).
    #[inline]
    pub(super) fn apply(&self, o: usize, col: usize, jt: usize, values: &mut [T]) {
        let s = self.scale.map_or(T::ONE, |s| s[o]);
        let b = self.shift.map_or(T::ZERO, |b| b[o]);
        let relu = |v: T| if self.relu && v < T::ZERO { T::ZERO } else { v };
        match self.residual {
            Some(r) => {
                let r = &r[o * jt + col..][..values.len()];
                for (v, &r) in values.iter_mut().zip(r) {
                    *v = relu(*v * s + b + r);
                }
            }
            None => values.iter_mut().for_each(|v| *v = relu(*v * s + b)),
        }
    }
}

/// A convolution for evaluation: batch norm with its running statistics
/// folded into a scale and shift per output channel, then optionally a
/// residual added and ReLU, all applied to each block of the product while it
/// is in cache. Evaluation only: its output carries no gradient (train
/// through [`Conv2d`] and `norm::BatchNorm`), and its inputs are freed as soon
/// as the next layer no longer needs them.
#[derive(Clone, Debug)]
pub struct Inference {
    pub conv: Conv2d,
    /// `γ / √(var + eps)` per output channel.
    pub scale: Vec<f64>,
    /// `β − mean · scale` (plus the convolution's bias times the scale).
    pub shift: Vec<f64>,
    pub relu: bool,
    /// Where the layer keeps its transformed weights across calls, when its
    /// weights are fixed (None: derived at each call).
    pub kept: Option<std::sync::Arc<Kept>>,
}

impl Inference {
    /// `x` (C, N, H, W) convolved with `w`, normalised, plus `residual`
    /// (O, N, OH, OW) if given, then ReLU if asked.
    pub fn forward(&self, x: &Tensor, w: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match residual {
            Some(r) => x.apply_op3_no_bwd(&w, &r.contiguous()?, self),
            None => x.apply_op2_no_bwd(&w, self),
        }
    }

    fn run<T: Float>(&self, g: &Geometry, x: &[T], w: &[T], residual: Option<&[T]>) -> Vec<T> {
        let scale: Vec<T> = self.scale.iter().map(|&v| T::from_f64(v)).collect();
        let shift: Vec<T> = self.shift.iter().map(|&v| T::from_f64(v)).collect();
        let after = After {
            scale: Some(&scale),
            shift: Some(&shift),
            residual,
            relu: self.relu,
        };
        // 3 × 3 convolutions of stride 1 on larger maps: Winograd's transform.
        match super::winograd::choose(g) {
            Some(super::winograd::Transform::F2) => {
                return super::winograd::convolve(g, x, w, Some(&after))
            }
            Some(super::winograd::Transform::F4) => {
                return super::winograd4::convolve(g, x, w, self.kept.as_deref(), Some(&after))
            }
            None => {}
        }
        // Grouped ones with few channels a group directly, group by group
        // (`forward`'s choice); any other through matrix products.
        forward(g, x, w, self.kept.as_deref(), Some(&after), None)
    }

    fn fwd(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(self.conv, l1.dims(), l2.dims())?;
        if self.scale.len() != g.o || self.shift.len() != g.o {
            candle_core::bail!(
                "{} scales and {} shifts for {} output channels",
                self.scale.len(),
                self.shift.len(),
                g.o
            );
        }
        if let Some((_, l3)) = residual {
            if l3.dims() != [g.o, g.n, g.oh, g.ow] {
                candle_core::bail!(
                    "a residual of {:?} for an output of {:?}",
                    l3.dims(),
                    g.out_dims()
                );
            }
        }
        let what = "convolution";
        let out = time(Kernel::ConvForward, || -> Result<CpuStorage> {
            Ok(match (s1, s2) {
                (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                    let r = residual
                        .map(|(s, l)| slice::<f32>(s, l, what))
                        .transpose()?;
                    CpuStorage::F32(self.run(&g, slice(s1, l1, what)?, slice(s2, l2, what)?, r))
                }
                (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                    let r = residual
                        .map(|(s, l)| slice::<f64>(s, l, what))
                        .transpose()?;
                    CpuStorage::F64(self.run(&g, slice(s1, l1, what)?, slice(s2, l2, what)?, r))
                }
                _ => candle_core::bail!("convolution supports f32 and f64 (operands alike)"),
            })
        })?;
        Ok((out, Shape::from(g.out_dims())))
    }
}

impl CustomOp2 for Inference {
    fn name(&self) -> &'static str {
        "wfrun-conv2d-bn-inference"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for Inference {
    fn name(&self) -> &'static str {
        "wfrun-conv2d-bn-residual-inference"
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
        self.fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }
}
