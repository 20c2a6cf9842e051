//! Element-wise kernels: the residual `max(a + b, 0)` with its backward, and
//! SGD's step in place, in one pass over weights, gradient and momentum (no
//! tensor allocated per parameter and step).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, InplaceOp2, Layout, Result, Shape, Tensor};

use super::profile::{time, Kernel};
use super::{par_chunks, slice, tensor, with_slice, Float};

/// `max(a + b, 0)` for two tensors of one shape.
#[derive(Clone, Copy, Debug)]
pub struct AddRelu;

impl AddRelu {
    pub fn forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    }
}

fn add_relu<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    time(Kernel::AddRelu, || add_relu_impl(a, b))
}

fn add_relu_impl<T: Float>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; a.len()];
    const BLOCK: usize = 1 << 14;
    par_chunks(&mut out, BLOCK, a.len(), |i, dst| {
        let (a, b) = (&a[i * BLOCK..], &b[i * BLOCK..]);
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            let s = x + y;
            *d = if s > T::ZERO { s } else { T::ZERO };
        }
    });
    out
}

/// `g` where `y > 0`, else 0.
fn relu_grad<T: Float>(y: &[T], g: &[T]) -> Vec<T> {
    y.iter()
        .zip(g)
        .map(|(&y, &g)| if y > T::ZERO { g } else { T::ZERO })
        .collect()
}

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "wfrun-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("add + relu of {:?} and {:?}", l1.shape(), l2.shape());
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(add_relu(
                slice::<f32>(s1, l1, "add + relu")?,
                slice::<f32>(s2, l2, "add + relu")?,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(add_relu(
                slice::<f64>(s1, l1, "add + relu")?,
                slice::<f64>(s2, l2, "add + relu")?,
            )),
            _ => candle_core::bail!("add + relu supports f32 and f64 (both operands alike)"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(res: &Tensor, grad: &Tensor) -> Result<Tensor> {
            with_slice::<T, _>(res, "add + relu", |y| {
                with_slice::<T, _>(grad, "add + relu", |g| tensor(relu_grad(y, g), res.shape()))
            })
        }
        let g = match res.dtype() {
            candle_core::DType::F32 => run::<f32>(res, grad)?,
            candle_core::DType::F64 => run::<f64>(res, grad)?,
            other => candle_core::bail!("add + relu supports f32 and f64, not {other:?}"),
        };
        Ok((Some(g.clone()), Some(g)))
    }
}

/// The elements of a contiguous CPU storage, writable.
fn slice_mut<'a, T: Float>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [T]> {
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        candle_core::Error::Msg("an in-place update needs a contiguous tensor".into())
    })?;
    let all: &mut [T] = match storage {
        CpuStorage::F32(v) => same_type::<f32, T>(v)?,
        CpuStorage::F64(v) => same_type::<f64, T>(v)?,
        other => candle_core::bail!(
            "in-place updates support f32 and f64, not {:?}",
            other.dtype()
        ),
    };
    Ok(&mut all[start..end])
}

/// `&mut [A]` as `&mut [T]` when they are the same type.
fn same_type<A: 'static, T: 'static>(v: &mut [A]) -> Result<&mut [T]> {
    if std::any::TypeId::of::<A>() != std::any::TypeId::of::<T>() {
        candle_core::bail!("an in-place update mixes f32 and f64");
    }
    // SAFETY: A and T are the same type (checked above).
    Ok(unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<T>(), v.len()) })
}

/// An SGD momentum buffer kept on the host, in the parameter's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Velocity {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// One SGD step of a parameter, in place and in one pass (PyTorch's SGD, no
/// dampening): `v ← μ·v + (g + λ·w)`, `w ← w − lr·v`. The parameter is the
/// tensor updated; the gradient the operand; the momentum buffer is held
/// here (created as zeros on the first step).
pub struct SgdStep<'a> {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub velocity: std::sync::Mutex<&'a mut Option<Velocity>>,
}

/// Elements per part of a parallel update.
const UPDATE_BLOCK: usize = 1 << 15;

fn sgd_step<T: Float>(s: &SgdStep, w: &mut [T], g: &[T], v: &mut [T]) {
    let (lr, mu, wd) = (
        T::from_f64(s.lr),
        T::from_f64(s.momentum),
        T::from_f64(s.weight_decay),
    );
    let update = |w: &mut [T], g: &[T], v: &mut [T]| {
        for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
            let vn = mu * *v + (g + wd * *w);
            *v = vn;
            *w -= lr * vn;
        }
    };
    let n = w.len();
    if n < 2 * UPDATE_BLOCK || super::threads() == 1 {
        for ((w, g), v) in w
            .chunks_mut(UPDATE_BLOCK)
            .zip(g.chunks(UPDATE_BLOCK))
            .zip(v.chunks_mut(UPDATE_BLOCK))
        {
            update(w, g, v);
        }
        return;
    }
    let (wp, vp) = (super::DisjointMut::new(w), super::DisjointMut::new(v));
    super::team::for_each(n.div_ceil(UPDATE_BLOCK), &|b| {
        let r = b * UPDATE_BLOCK..((b + 1) * UPDATE_BLOCK).min(n);
        // SAFETY: blocks are disjoint ranges of `w` and `v`, both borrowed
        // mutably until every block has run.
        let (w, v) = unsafe { (wp.range(r.start, r.len()), vp.range(r.start, r.len())) };
        update(w, &g[r], v);
    });
}

impl InplaceOp2 for SgdStep<'_> {
    fn name(&self) -> &'static str {
        "wfrun-sgd"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        if dst_l.shape() != gl.shape() {
            candle_core::bail!("sgd step of mismatched shapes");
        }
        let n = dst_l.shape().elem_count();
        let mut velocity = self.velocity.lock().unwrap_or_else(|e| e.into_inner());
        time(Kernel::Sgd, || {
            match (dst, &mut **velocity) {
                (dst @ CpuStorage::F32(_), v) => {
                    if !matches!(v, Some(Velocity::F32(b)) if b.len() == n) {
                        *v = Some(Velocity::F32(vec![0.0; n]));
                    }
                    let Some(Velocity::F32(v)) = v else {
                        unreachable!()
                    };
                    sgd_step(
                        self,
                        slice_mut::<f32>(dst, dst_l)?,
                        slice::<f32>(g, gl, "sgd")?,
                        v,
                    );
                }
                (dst @ CpuStorage::F64(_), v) => {
                    if !matches!(v, Some(Velocity::F64(b)) if b.len() == n) {
                        *v = Some(Velocity::F64(vec![0.0; n]));
                    }
                    let Some(Velocity::F64(v)) = v else {
                        unreachable!()
                    };
                    sgd_step(
                        self,
                        slice_mut::<f64>(dst, dst_l)?,
                        slice::<f64>(g, gl, "sgd")?,
                        v,
                    );
                }
                (other, _) => {
                    candle_core::bail!("sgd supports f32 and f64, not {:?}", other.dtype())
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gradcheck::check_gradient;
    use candle_core::Device;

    #[test]
    fn add_relu_matches_and_its_gradient_checks() {
        let v: Vec<f64> = (0..24).map(|i| (i as f64 * 0.37).sin() + 0.013).collect();
        let a = Tensor::from_vec(v.clone(), (2, 3, 2, 2), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(
            v.iter().map(|x| x * -0.5 + 0.1).collect(),
            (2, 3, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let ours = AddRelu::forward(&a, &b).unwrap();
        let theirs = (&a + &b).unwrap().relu().unwrap();
        assert_eq!(
            ours.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            theirs.flatten_all().unwrap().to_vec1::<f64>().unwrap()
        );
        check_gradient(&a, |a| AddRelu::forward(a, &b), 1e-6, 1e-8).unwrap();
        check_gradient(&b, |b| AddRelu::forward(&a, b), 1e-6, 1e-8).unwrap();
    }
}
