//! SGD with momentum and weight decay (PyTorch's `torch.optim.SGD`, no
//! dampening, no Nesterov): `g ← ∇ + λ·w`, `v ← μ·v + g`, `w ← w − lr·v`.
//! Batch-norm running statistics are not parameters: never decayed, never stepped.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

use super::cpu::{
    self,
    eltwise::{SgdStep, Velocity},
};

/// Whether a variable of a [`VarMap`] is a batch-norm running statistic.
pub fn is_running_statistic(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
}

struct Param {
    name: String,
    var: Var,
    /// On the CPU the momentum buffer lives on the host and is updated in
    /// place; on other devices it is a tensor.
    host: Option<Velocity>,
    velocity: Option<Tensor>,
}

pub struct Sgd {
    params: Vec<Param>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    /// Weight decay on weights only: parameters of one dimension (batch
    /// norm's scales and shifts, biases) are not decayed.
    weights_only: bool,
    kernels: cpu::Kernels,
}

impl Sgd {
    /// Every trainable variable of `map` (running statistics excluded), in name order.
    pub fn new(map: &VarMap, lr: f64, momentum: f64, weight_decay: f64) -> Sgd {
        let data = map
            .data()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut params: Vec<Param> = data
            .iter()
            .filter(|(name, _)| !is_running_statistic(name))
            .map(|(name, var)| Param {
                name: name.clone(),
                var: var.clone(),
                host: None,
                velocity: None,
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Sgd {
            params,
            lr,
            momentum,
            weight_decay,
            weights_only: false,
            kernels: cpu::Kernels::default(),
        }
    }

    /// The same optimiser decaying what `decayed` says.
    pub fn decaying(self, decayed: crate::hyper::Decayed) -> Sgd {
        Sgd {
            weights_only: decayed == crate::hyper::Decayed::Weights,
            ..self
        }
    }

    /// The same optimiser stepping with `kernels` (wfrun's in-place update on
    /// the CPU, or candle's operations).
    pub fn with_kernels(self, kernels: cpu::Kernels) -> Sgd {
        Sgd { kernels, ..self }
    }

    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The names of the parameters this optimiser steps.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.name.as_str())
    }

    /// The momentum buffers, by parameter name (for checkpoints).
    pub fn velocities(&self) -> Vec<(&str, Tensor)> {
        self.params
            .iter()
            .filter_map(|p| {
                let shape = p.var.shape();
                let v = match (&p.host, &p.velocity) {
                    (Some(Velocity::F32(v)), _) => Tensor::from_slice(v, shape, p.var.device()),
                    (Some(Velocity::F64(v)), _) => Tensor::from_slice(v, shape, p.var.device()),
                    (None, Some(v)) => Ok(v.clone()),
                    (None, None) => return None,
                };
                Some(v.map(|v| (p.name.as_str(), v)))
            })
            .collect::<Result<Vec<_>>>()
            .unwrap_or_default()
    }

    /// Restores momentum buffers saved with [`Sgd::velocities`].
    pub fn set_velocities(&mut self, saved: impl IntoIterator<Item = (String, Tensor)>) {
        let saved: std::collections::HashMap<String, Tensor> = saved.into_iter().collect();
        for p in &mut self.params {
            let Some(v) = saved.get(&p.name) else {
                continue;
            };
            let Ok(v) = v.to_dtype(p.var.dtype()) else {
                continue;
            };
            if self.kernels.takes(p.var.device()) {
                let flat = v.flatten_all();
                p.host = match p.var.dtype() {
                    candle_core::DType::F32 => flat
                        .and_then(|t| t.to_vec1::<f32>())
                        .ok()
                        .map(Velocity::F32),
                    _ => flat
                        .and_then(|t| t.to_vec1::<f64>())
                        .ok()
                        .map(Velocity::F64),
                };
            } else {
                // A copy: the buffer is replaced each step.
                p.velocity = v.copy().ok();
            }
        }
    }

    /// One update from the gradients of `loss.backward()`. Parameters the loss
    /// does not reach are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for p in &mut self.params {
            let Some(grad) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let w = p.var.as_tensor();
            let weight_decay = if self.weights_only && w.rank() < 2 {
                0.0
            } else {
                self.weight_decay
            };
            if self.kernels.takes(w.device()) {
                // In place, one pass over weights, gradient and momentum.
                if self.momentum == 0.0 {
                    p.host = None;
                }
                let step = SgdStep {
                    lr: self.lr,
                    momentum: self.momentum,
                    weight_decay,
                    velocity: std::sync::Mutex::new(&mut p.host),
                };
                w.inplace_op2(&grad.contiguous()?, &step)?;
                continue;
            }
            let mut g = grad.clone();
            if weight_decay != 0.0 {
                g = (g + (w.detach() * weight_decay)?)?;
            }
            let v = match &p.velocity {
                Some(v) if self.momentum != 0.0 => ((v * self.momentum)? + g)?,
                _ => g,
            };
            p.var.set(&(w.detach() - (&v * self.lr)?)?)?;
            p.velocity = Some(v.detach());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Init, VarBuilder};

    #[test]
    fn follows_pytorch_sgd_and_skips_running_statistics() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
        let w = vb.get_with_hints(2, "w", Init::Const(1.0)).unwrap();
        let stat = vb
            .get_with_hints(2, "bn.running_mean", Init::Const(5.0))
            .unwrap();
        let mut sgd = Sgd::new(&map, 0.1, 0.9, 0.01);
        assert_eq!(sgd.names().collect::<Vec<_>>(), ["w"]);
        // loss = sum(3·w) → gradient 3 for each element.
        for _ in 0..2 {
            let loss = ((&w * 3.0).unwrap().sum_all().unwrap() + stat.sum_all().unwrap()).unwrap();
            sgd.step(&loss.backward().unwrap()).unwrap();
        }
        // Step 1: g = 3 + 0.01 = 3.01, v = 3.01, w = 1 − 0.301 = 0.699.
        // Step 2: g = 3 + 0.00699, v = 0.9·3.01 + 3.00699 = 5.71599, w = 0.699 − 0.571599.
        let got = w.to_vec1::<f64>().unwrap();
        assert!((got[0] - (0.699 - 0.571599)).abs() < 1e-12, "{got:?}");
        assert_eq!(stat.to_vec1::<f64>().unwrap(), [5.0, 5.0]);
    }

    #[test]
    fn decaying_weights_only_leaves_batch_norm_and_biases_alone() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
        let w = vb
            .get_with_hints((1, 2), "fc.weight", Init::Const(1.0))
            .unwrap();
        let b = vb.get_with_hints(2, "bn.weight", Init::Const(1.0)).unwrap();
        let mut sgd = Sgd::new(&map, 0.1, 0.0, 0.5).decaying(crate::hyper::Decayed::Weights);
        // loss = sum(w) + sum(b): a gradient of 1 everywhere.
        let loss = (w.sum_all().unwrap() + b.sum_all().unwrap()).unwrap();
        sgd.step(&loss.backward().unwrap()).unwrap();
        // The weight: 1 − 0.1 · (1 + 0.5 · 1); the 1-d parameter: 1 − 0.1 · 1.
        let got = w.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert!(got.iter().all(|v| (v - 0.85).abs() < 1e-12), "{got:?}");
        let got = b.to_vec1::<f64>().unwrap();
        assert!(got.iter().all(|v| (v - 0.9).abs() < 1e-12), "{got:?}");
    }
}
