//! ResNet and ResNeXt with bottleneck blocks, torchvision's layout and tensor
//! names (`conv1`, `bn1`, `layer1.0.conv2`, `layer1.0.downsample.0`, …), so a
//! converted torchvision state dict loads as it is.

use candle_core::Result;
use candle_nn::VarBuilder;

use super::cpu::Kernels;
use super::layers::{ConvBn, ConvSpec, Names};
use super::pool::Pool2d;
use super::walk::Ops;

pub use crate::arch::{ResNetConfig, EXPANSION};

#[derive(Clone, Debug)]
struct Bottleneck {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(
        cfg: &ResNetConfig,
        (in_ch, planes, stride): (usize, usize, usize),
        kernels: Kernels,
        vb: &VarBuilder,
    ) -> Result<Bottleneck> {
        let width = cfg.width(planes);
        let out = planes * EXPANSION;
        let conv1 = ConvBn::new(
            ConvSpec::new(in_ch, width, 1).kernels(kernels),
            Names::Pair {
                conv: "conv1",
                bn: "bn1",
            },
            vb,
        )?;
        let conv2 = ConvBn::new(
            ConvSpec::new(width, width, 3)
                .stride(stride)
                .groups(cfg.groups)
                .kernels(kernels),
            Names::Pair {
                conv: "conv2",
                bn: "bn2",
            },
            vb,
        )?;
        // Its ReLU comes after the shortcut is added (`forward_residual_t`).
        let conv3 = ConvBn::new(
            ConvSpec::new(width, out, 1).kernels(kernels),
            Names::Pair {
                conv: "conv3",
                bn: "bn3",
            },
            vb,
        )?;
        let downsample = if stride != 1 || in_ch != out {
            Some(ConvBn::new(
                ConvSpec::new(in_ch, out, 1)
                    .stride(stride)
                    .padding(0)
                    .no_relu()
                    .kernels(kernels),
                Names::Pair {
                    conv: "downsample.0",
                    bn: "downsample.1",
                },
                vb,
            )?)
        } else {
            None
        };
        Ok(Bottleneck {
            conv1,
            conv2,
            conv3,
            downsample,
        })
    }

    fn walk<O: Ops>(&self, ops: &mut O, x: &O::Value) -> Result<O::Value> {
        let y = ops.conv_bn(&self.conv1, x, None)?;
        let y = ops.conv_bn(&self.conv2, &y, None)?;
        let shortcut = match &self.downsample {
            Some(d) => ops.conv_bn(d, x, None)?,
            None => x.clone(),
        };
        // conv3 and bn3, + the shortcut, then ReLU.
        ops.conv_bn(&self.conv3, &y, Some(&shortcut))
    }
}

/// The backbone: stem, four stages, global average pooling.
#[derive(Clone, Debug)]
pub struct ResNet {
    stem: ConvBn,
    pool: Pool2d,
    stages: Vec<Vec<Bottleneck>>,
    feature_dim: usize,
    kernels: Kernels,
}

impl ResNet {
    pub fn new(cfg: &ResNetConfig, kernels: Kernels, vb: &VarBuilder) -> Result<ResNet> {
        if cfg.base == 0 || cfg.groups == 0 || cfg.base * cfg.width_per_group < 64 {
            candle_core::bail!(
                "a ResNet needs positive widths (base · width_per_group ≥ 64): {cfg:?}"
            );
        }
        let stem = ConvBn::new(
            ConvSpec::new(3, cfg.base, 7)
                .stride(2)
                .padding(3)
                .kernels(kernels),
            Names::Pair {
                conv: "conv1",
                bn: "bn1",
            },
            vb,
        )?;
        let mut stages = Vec::new();
        for (i, blocks) in cfg.blocks().into_iter().enumerate() {
            let stage_vb = vb.pp(format!("layer{}", i + 1));
            let mut stage = Vec::new();
            for (b, block) in blocks.into_iter().enumerate() {
                stage.push(Bottleneck::new(
                    cfg,
                    block,
                    kernels,
                    &stage_vb.pp(b.to_string()),
                )?);
            }
            stages.push(stage);
        }
        Ok(ResNet {
            stem,
            pool: Pool2d::max(3, 2, 1, false),
            stages,
            feature_dim: cfg.feature_dim(),
            kernels,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// The operations it runs.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The forward pass, layer by layer, through `ops`.
    pub fn walk<O: Ops>(&self, ops: &mut O, x: &O::Value) -> Result<O::Value> {
        let x = ops.enter(x)?;
        let x = ops.conv_bn(&self.stem, &x, None)?;
        let mut x = ops.pool(&self.pool, &x)?;
        for stage in &self.stages {
            for block in stage {
                x = block.walk(ops, &x)?;
            }
        }
        ops.global_avg_pool(&x)
    }
}
