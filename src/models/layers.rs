//! Layers the networks share: convolution + batch norm (+ ReLU), batch norm
//! that trains for real, global average pooling.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{Conv2d, Conv2dConfig, Module, ModuleT, VarBuilder};

use super::cpu::conv::{Conv2d as CpuConv2d, Inference, Kept, WeightGrads};
use super::cpu::eltwise::AddRelu;
use super::cpu::norm::{self, Stats};
use super::cpu::Kernels;

/// Batch normalisation over (N, C, H, W) with PyTorch's defaults (eps 1e-5,
/// momentum 0.1). In training it normalises with the batch's statistics and
/// updates the running averages; at evaluation it uses the running averages.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    inner: candle_nn::BatchNorm,
    name: String,
    kernels: Kernels,
}

impl BatchNorm2d {
    pub fn new(channels: usize, kernels: Kernels, vb: VarBuilder) -> Result<BatchNorm2d> {
        let name = vb.prefix();
        let config = candle_nn::BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        Ok(BatchNorm2d {
            inner: candle_nn::batch_norm(channels, config, vb)?,
            name,
            kernels,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_relu_t(x, train, false)
    }

    /// Batch norm, then ReLU when `relu` (fused into one pass on the CPU).
    /// `x` is laid out as [`channels_first`] says for its device.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let (a, b, h, w) = x.dims4()?;
        let n = if channels_first(x.device(), self.kernels) {
            b
        } else {
            a
        };
        if train && n * h * w < 2 {
            // candle would write NaN into the running variance here (PyTorch raises).
            candle_core::bail!(
                "batch norm `{}` sees a single value per channel while training ({n} image(s) of {h}x{w}); \
                 use a batch_size of at least 2 or a larger image_size",
                self.name
            );
        }
        if !self.kernels.takes(x.device()) {
            let y = self.inner.forward_t(x, train)?;
            return if relu { y.relu() } else { Ok(y) };
        }
        let Some((gamma, beta)) = self.inner.weight_and_bias() else {
            candle_core::bail!("batch norm `{}` has no scale and shift", self.name);
        };
        let running = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
        let (mean, var) = (self.inner.running_mean(), self.inner.running_var());
        let fixed = if train {
            None
        } else {
            Some(Stats {
                mean: running(mean)?,
                var: running(var)?,
            })
        };
        let op = norm::BatchNorm::new(self.inner.eps(), relu, fixed);
        let y = op.forward(x, gamma, beta)?;
        if let (true, Some(batch)) = (train, op.used()) {
            // PyTorch's running averages: the variance unbiased.
            let m = self.inner.momentum();
            let count = (n * h * w) as f64;
            let update = |old: &Tensor, new: &[f64], unbias: f64| -> Result<()> {
                let old_values = running(old)?;
                let mixed: Vec<f64> = old_values
                    .iter()
                    .zip(new)
                    .map(|(o, v)| (1.0 - m) * o + m * v * unbias)
                    .collect();
                let len = mixed.len();
                let t = Tensor::from_vec(mixed, len, old.device())?.to_dtype(old.dtype())?;
                Var::from_tensor(old)?.set(&t)
            };
            update(mean, &batch.mean, 1.0)?;
            update(var, &batch.var, count / (count - 1.0))?;
        }
        Ok(y)
    }

    /// Evaluation's normalisation as a scale and shift per channel, `y = x ·
    /// scale + shift`, with a preceding convolution's `bias` folded in.
    fn folded(&self, bias: Option<&Tensor>) -> Result<(Vec<f64>, Vec<f64>)> {
        let Some((gamma, beta)) = self.inner.weight_and_bias() else {
            candle_core::bail!("batch norm `{}` has no scale and shift", self.name);
        };
        let host = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
        let (gamma, beta) = (host(gamma)?, host(beta)?);
        let (mean, var) = (
            host(self.inner.running_mean())?,
            host(self.inner.running_var())?,
        );
        let bias = bias.map(host).transpose()?;
        let eps = self.inner.eps();
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let shift = (0..scale.len())
            .map(|c| beta[c] + (bias.as_ref().map_or(0.0, |b| b[c]) - mean[c]) * scale[c])
            .collect();
        Ok((scale, shift))
    }
}

/// A bias-free convolution followed by batch norm and, optionally, ReLU.
#[derive(Clone, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
    relu: bool,
    kernels: Kernels,
    /// The convolution's name in the weights (`layer1.0.conv1`).
    name: String,
    /// What evaluation derives from the weights, kept once they are fixed
    /// (shared by clones, which share the weights).
    kept: Arc<Kept>,
}

/// Where a [`ConvBn`]'s convolution and batch norm live in the weights.
pub enum Names<'a> {
    /// torchvision: `PREFIX.convN` and `PREFIX.bnN`.
    Pair { conv: &'a str, bn: &'a str },
    /// Cadene's BN-Inception: `NAME` and `NAME_bn`.
    Suffixed(&'a str),
}

#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    /// ReLU last (after the residual, when [`ConvBn::forward_residual_t`] adds one).
    pub relu: bool,
    /// A bias on the convolution (Cadene's BN-Inception has one before each batch norm).
    pub bias: bool,
    /// The operations it runs.
    pub kernels: Kernels,
}

impl ConvSpec {
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> ConvSpec {
        ConvSpec {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            groups: 1,
            relu: true,
            bias: false,
            kernels: Kernels::default(),
        }
    }

    pub fn kernels(self, kernels: Kernels) -> ConvSpec {
        ConvSpec { kernels, ..self }
    }

    pub fn stride(self, stride: usize) -> ConvSpec {
        ConvSpec { stride, ..self }
    }

    pub fn padding(self, padding: usize) -> ConvSpec {
        ConvSpec { padding, ..self }
    }

    pub fn groups(self, groups: usize) -> ConvSpec {
        ConvSpec { groups, ..self }
    }

    pub fn no_relu(self) -> ConvSpec {
        ConvSpec {
            relu: false,
            ..self
        }
    }

    pub fn with_bias(self) -> ConvSpec {
        ConvSpec { bias: true, ..self }
    }
}

impl ConvBn {
    pub fn new(spec: ConvSpec, names: Names, vb: &VarBuilder) -> Result<ConvBn> {
        let config = Conv2dConfig {
            padding: spec.padding,
            stride: spec.stride,
            dilation: 1,
            groups: spec.groups,
            cudnn_fwd_algo: None,
        };
        let (conv_vb, bn_vb) = match names {
            Names::Pair { conv, bn } => (vb.pp(conv), vb.pp(bn)),
            Names::Suffixed(name) => (vb.pp(name), vb.pp(format!("{name}_bn"))),
        };
        let name = conv_vb.prefix();
        let conv = if spec.bias {
            candle_nn::conv2d(
                spec.in_channels,
                spec.out_channels,
                spec.kernel,
                config,
                conv_vb,
            )?
        } else {
            candle_nn::conv2d_no_bias(
                spec.in_channels,
                spec.out_channels,
                spec.kernel,
                config,
                conv_vb,
            )?
        };
        let bn = BatchNorm2d::new(spec.out_channels, spec.kernels, bn_vb)?;
        Ok(ConvBn {
            conv,
            bn,
            relu: spec.relu,
            kernels: spec.kernels,
            name,
            kept: Arc::default(),
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_residual_t(x, None, train)
    }

    /// Convolution and batch norm, then `residual` added (before the ReLU,
    /// as a residual block does) if given. In evaluation on the CPU one op
    /// does it all, and its output carries no gradient.
    pub fn forward_residual_t(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_with(x, residual, train, false, None)
    }

    /// [`ConvBn::forward_residual_t`]; with `fixed` (the weights will not
    /// change again) evaluation keeps its transformed weights for the next
    /// call; with `aside`, training on the CPU hands the weights' gradient
    /// there ([`WeightGrads`]).
    pub fn forward_with(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        train: bool,
        fixed: bool,
        aside: Option<&Arc<WeightGrads>>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let k = self.conv.weight().dim(2)?;
        let p = self.conv.config().padding;
        if h + 2 * p < k || w + 2 * p < k {
            // candle returns an empty tensor here instead of failing.
            candle_core::bail!(
                "a {k}x{k} convolution does not fit a {h}x{w} input; use a larger image_size"
            );
        }
        let cpu = self.kernels.takes(x.device());
        let config = self.conv.config();
        let conv = CpuConv2d {
            stride: config.stride,
            padding: config.padding,
            groups: config.groups,
        };
        if cpu && !train {
            let (scale, shift) = self.bn.folded(self.conv.bias())?;
            let op = Inference {
                conv,
                scale,
                shift,
                relu: self.relu,
                kept: fixed.then(|| Arc::clone(&self.kept)),
            };
            return op.forward(x, self.conv.weight(), residual);
        }
        let y = if let (true, Some(aside)) = (cpu, aside) {
            conv.forward_aside(x, self.conv.weight(), self.conv.bias(), aside)?
        } else if cpu {
            conv.forward(x, self.conv.weight(), self.conv.bias())?
        } else {
            self.conv.forward(x)?
        };
        let Some(residual) = residual else {
            return self.bn.forward_relu_t(&y, train, self.relu);
        };
        let y = self.bn.forward_t(&y, train)?;
        match (cpu, self.relu) {
            (true, true) => AddRelu::forward(&y, residual),
            (_, true) => (y + residual)?.relu(),
            (_, false) => y + residual,
        }
    }
}

/// A [`ConvBn`] in evaluation, in the form an exporter writes it: the
/// convolution's weight and geometry, and batch norm with its running
/// statistics (and the convolution's bias) as a scale and shift per output
/// channel: `y = conv(x, weight) · scale + shift`, then the residual, then
/// ReLU when `relu`.
#[derive(Clone, Debug)]
pub struct FoldedConvBn {
    /// The convolution's name in the weights (`layer1.0.conv1`).
    pub name: String,
    /// (out, in / groups, k, k), as trained.
    pub weight: Tensor,
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub relu: bool,
}

impl ConvBn {
    /// The layer in evaluation, batch norm folded (what the CPU kernels run).
    pub fn folded(&self) -> Result<FoldedConvBn> {
        let (scale, shift) = self.bn.folded(self.conv.bias())?;
        let config = self.conv.config();
        Ok(FoldedConvBn {
            name: self.name.clone(),
            weight: self.conv.weight().clone(),
            scale,
            shift,
            stride: config.stride,
            padding: config.padding,
            groups: config.groups,
            relu: self.relu,
        })
    }
}

/// Whether a backbone holds its activations channels first, (C, N, H, W): on
/// wfrun's CPU kernels, where a 1 × 1 convolution of the whole batch is then
/// one matrix product without a copy, each channel's values are contiguous
/// for batch norm, and concatenating branches appends. candle's own
/// operations (CUDA, Metal, or [`Kernels::Candle`]) take images first, (N, C, H, W).
pub fn channels_first(device: &candle_core::Device, kernels: Kernels) -> bool {
    kernels.takes(device)
}

/// Images (N, C, H, W) in the layout a backbone works in.
pub fn enter(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if channels_first(x.device(), kernels) {
        x.transpose(0, 1)?.contiguous()
    } else {
        Ok(x.clone())
    }
}

/// The dimension holding the channels of a backbone's activations.
pub fn channel_dim(x: &Tensor, kernels: Kernels) -> usize {
    if channels_first(x.device(), kernels) {
        0
    } else {
        1
    }
}

/// Mean over the spatial dimensions of a backbone's activations → (N, C).
pub fn global_avg_pool(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    let pooled = x.mean((2, 3))?;
    if channels_first(x.device(), kernels) {
        pooled.t()?.contiguous()
    } else {
        Ok(pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gradcheck::check_gradient;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn batch_norm_trains_and_tracks_running_statistics() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
        let bn = BatchNorm2d::new(2, Kernels::Wfrun, vb.pp("bn")).unwrap();
        let x = (Tensor::arange(0f64, 32.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 2, 2, 4))
            .unwrap()
            * 0.5)
            .unwrap();
        let y = bn
            .forward_t(&enter(&x, Kernels::Wfrun).unwrap(), true)
            .unwrap();
        // Normalised with the batch statistics: each channel has mean 0, variance 1.
        let m = y
            .transpose(0, channel_dim(&y, Kernels::Wfrun))
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .mean(1)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(m.iter().all(|v| v.abs() < 1e-9), "{m:?}");
        let data = map.data().lock().unwrap();
        let running_mean = data["bn.running_mean"]
            .as_tensor()
            .to_vec1::<f64>()
            .unwrap();
        // Channel 0 holds 0..8 and 16..24 (× 0.5): mean 5.75; momentum 0.1 from 0.
        assert!((running_mean[0] - 0.575).abs() < 1e-9, "{running_mean:?}");
        let running_var = data["bn.running_var"].as_tensor().to_vec1::<f64>().unwrap();
        assert!(
            running_var[0] > 1.0,
            "unbiased batch variance mixed in: {running_var:?}"
        );
    }

    #[test]
    fn batch_norm_refuses_one_value_per_channel() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(3, Kernels::Wfrun, vb.pp("layer4.0.bn1")).unwrap();
        let x = enter(
            &Tensor::ones((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap(),
            Kernels::Wfrun,
        )
        .unwrap();
        let e = bn.forward_t(&x, true).unwrap_err().to_string();
        assert!(
            e.contains("layer4.0.bn1") && e.contains("batch_size"),
            "{e}"
        );
        assert!(bn.forward_t(&x, false).is_ok());
    }

    #[test]
    fn conv_bn_relu_and_pooling_gradients() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
        let cb = ConvBn::new(
            ConvSpec::new(4, 6, 3).stride(2).groups(2),
            Names::Suffixed("c"),
            &vb,
        )
        .unwrap();
        let x = Tensor::randn(0f64, 1.0, (3, 4, 6, 6), &Device::Cpu).unwrap();
        check_gradient(
            &x,
            |x| {
                global_avg_pool(
                    &cb.forward_t(&enter(x, Kernels::Wfrun)?, true)?,
                    Kernels::Wfrun,
                )
            },
            1e-5,
            1e-5,
        )
        .unwrap();
    }

    #[test]
    fn kernels_larger_than_the_input_are_errors() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let cb = ConvBn::new(ConvSpec::new(3, 4, 7).padding(0), Names::Suffixed("c"), &vb).unwrap();
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(cb
            .forward_t(&x, true)
            .unwrap_err()
            .to_string()
            .contains("larger image_size"));
    }
}

#[cfg(test)]
mod against_candle {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The fused CPU batch norm equals candle's in output and running
    /// statistics, training and evaluation, at the sizes the networks use.
    #[test]
    fn batch_norm_equals_candles() {
        for (n, c, h) in [(8, 64, 16), (8, 256, 2), (8, 2048, 1), (3, 5, 9)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, h), &Device::Cpu)
                .unwrap()
                .affine(3.0, 1.5)
                .unwrap();
            let ours_map = VarMap::new();
            let theirs_map = VarMap::new();
            let ours = BatchNorm2d::new(
                c,
                Kernels::Wfrun,
                VarBuilder::from_varmap(&ours_map, DType::F32, &Device::Cpu),
            )
            .unwrap();
            let config = candle_nn::BatchNormConfig {
                eps: 1e-5,
                remove_mean: true,
                affine: true,
                momentum: 0.1,
            };
            let theirs = candle_nn::batch_norm(
                c,
                config,
                VarBuilder::from_varmap(&theirs_map, DType::F32, &Device::Cpu),
            )
            .unwrap();
            let xc = x.transpose(0, 1).unwrap().contiguous().unwrap();
            let back = |t: Tensor| t.transpose(0, 1).unwrap();
            for _ in 0..3 {
                let a = back(ours.forward_t(&xc, true).unwrap());
                let b = theirs.forward_t(&x, true).unwrap();
                assert!(
                    max_diff(&a, &b) < 1e-4,
                    "train {n} {c} {h}: {}",
                    max_diff(&a, &b)
                );
            }
            for stat in ["running_mean", "running_var"] {
                let a = ours_map.data().lock().unwrap()[stat].as_tensor().clone();
                let b = theirs_map.data().lock().unwrap()[stat].as_tensor().clone();
                assert!(
                    max_diff(&a, &b) < 1e-4,
                    "{stat} {n} {c} {h}: {}",
                    max_diff(&a, &b)
                );
            }
            let a = back(ours.forward_t(&xc, false).unwrap());
            let b = theirs.forward_t(&x, false).unwrap();
            assert!(
                max_diff(&a, &b) < 1e-4,
                "eval {n} {c} {h}: {}",
                max_diff(&a, &b)
            );
        }
    }

    /// Grouped convolution at ResNeXt's sizes equals candle's, forward and backward.
    #[test]
    fn grouped_convolution_equals_candles() {
        for (n, c, h, groups, stride) in [
            (8, 128, 8, 32, 1),
            (8, 256, 8, 32, 2),
            (8, 1024, 2, 32, 1),
            (8, 64, 16, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, h), &Device::Cpu).unwrap();
            let w = Tensor::randn(0f32, 0.1, (c, c / groups, 3, 3), &Device::Cpu).unwrap();
            let conv = CpuConv2d {
                stride,
                padding: 1,
                groups,
            };
            let xv = candle_core::Var::from_tensor(&x).unwrap();
            let wv = candle_core::Var::from_tensor(&w).unwrap();
            let ours = conv
                .forward(
                    &xv.as_tensor().transpose(0, 1).unwrap(),
                    wv.as_tensor(),
                    None,
                )
                .unwrap()
                .transpose(0, 1)
                .unwrap();
            let theirs = xv
                .as_tensor()
                .conv2d(wv.as_tensor(), 1, stride, 1, groups)
                .unwrap();
            assert!(
                max_diff(&ours, &theirs) < 1e-3,
                "forward {c} {groups}: {}",
                max_diff(&ours, &theirs)
            );
            let probe = Tensor::randn(0f32, 1.0, ours.shape(), &Device::Cpu).unwrap();
            let g1 = (ours * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (theirs * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (what, v) in [("input", &xv), ("weight", &wv)] {
                let a = g1.get(v.as_tensor()).unwrap();
                let b = g2.get(v.as_tensor()).unwrap();
                let scale = b
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(
                    max_diff(a, b) < 1e-4 * scale.max(1.0),
                    "{what} {c} {groups}: {} of {scale}",
                    max_diff(a, b)
                );
            }
        }
    }
}
