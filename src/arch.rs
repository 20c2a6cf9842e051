//! The templates' networks as tables and a walk over their layers' shapes,
//! without candle: what `models` builds its networks from (feature `train`)
//! and what [`crate::cost`] counts, so the two cannot drift apart.
//!
//! [`walk`] visits every layer of a backbone in the order the networks run
//! them, with each layer's geometry and the shapes of its input and output;
//! the networks' own walk (`models::walk::Ops`) is the same order, and a test
//! (`tests/cost.rs`) walks both and compares them layer by layer.

use serde::Serialize;

/// ResNet's depth and widths. `base` is the stem's width and the planes of
/// the first stage (64 in the published networks); tests build the same code
/// small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResNetConfig {
    /// Bottleneck blocks per stage.
    pub layers: [usize; 4],
    /// Groups of the 3x3 convolutions (ResNeXt's cardinality).
    pub groups: usize,
    /// torchvision's `width_per_group`: each 3x3 convolution is
    /// `int(planes · width_per_group / 64) · groups` wide.
    pub width_per_group: usize,
    pub base: usize,
}

/// Bottleneck blocks widen their input fourfold.
pub const EXPANSION: usize = 4;

impl ResNetConfig {
    /// ResNet-101: bottleneck blocks [3, 4, 23, 3], 2048-d features.
    pub fn resnet101() -> ResNetConfig {
        ResNetConfig {
            layers: [3, 4, 23, 3],
            groups: 1,
            width_per_group: 64,
            base: 64,
        }
    }

    /// ResNeXt-50 32x4d: blocks [3, 4, 6, 3], 32 groups of 4 channels, 2048-d features.
    pub fn resnext50_32x4d() -> ResNetConfig {
        ResNetConfig {
            layers: [3, 4, 6, 3],
            groups: 32,
            width_per_group: 4,
            base: 64,
        }
    }

    /// The length of the pooled features.
    pub fn feature_dim(&self) -> usize {
        self.base * 8 * EXPANSION
    }

    /// A bottleneck's 3x3 width: torchvision's `int(planes · width_per_group / 64) · groups`.
    pub fn width(&self, planes: usize) -> usize {
        planes * self.width_per_group / 64 * self.groups
    }

    /// Each block's `(input channels, planes, stride)`, stage by stage.
    pub fn blocks(&self) -> Vec<Vec<(usize, usize, usize)>> {
        let mut in_ch = self.base;
        let mut stages = Vec::with_capacity(4);
        for (i, &blocks) in self.layers.iter().enumerate() {
            let planes = self.base << i;
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if i > 0 && b == 0 { 2 } else { 1 };
                stage.push((in_ch, planes, stride));
                in_ch = planes * EXPANSION;
            }
            stages.push(stage);
        }
        stages
    }
}

/// BN-Inception's widths: every published width divided by `width_div` (1,
/// 2, 4, 8 or 16), so tests can build the same network small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BnInceptionConfig {
    pub width_div: usize,
}

impl BnInceptionConfig {
    pub fn published() -> BnInceptionConfig {
        BnInceptionConfig { width_div: 1 }
    }

    pub fn feature_dim(&self) -> usize {
        1024 / self.width_div
    }
}

/// The pooling branch of an inception module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolBranch {
    /// 3x3 average pooling, stride 1, then a 1x1 projection.
    Avg,
    /// 3x3 max pooling, stride 1, then a 1x1 projection (module 5b).
    Max,
}

/// One inception module's widths, as published.
#[derive(Clone, Copy, Debug)]
pub enum Module {
    /// Four branches: 1x1; 1x1 → 3x3; 1x1 → 3x3 → 3x3; pool → 1x1.
    Standard {
        name: &'static str,
        c1x1: usize,
        c3x3_reduce: usize,
        c3x3: usize,
        double_reduce: usize,
        double: usize,
        pool: PoolBranch,
        pool_proj: usize,
    },
    /// Three branches that halve the size: 1x1 → 3x3/2; 1x1 → 3x3 → 3x3/2; max pool 3x3/2.
    Reduction {
        name: &'static str,
        c3x3_reduce: usize,
        c3x3: usize,
        double_reduce: usize,
        double: usize,
    },
}

const fn standard(name: &'static str, c: [usize; 6], pool: PoolBranch) -> Module {
    Module::Standard {
        name,
        c1x1: c[0],
        c3x3_reduce: c[1],
        c3x3: c[2],
        double_reduce: c[3],
        double: c[4],
        pool,
        pool_proj: c[5],
    }
}

/// BN-Inception's ten inception modules, as published.
pub const MODULES: [Module; 10] = [
    standard("inception_3a", [64, 64, 64, 64, 96, 32], PoolBranch::Avg),
    standard("inception_3b", [64, 64, 96, 64, 96, 64], PoolBranch::Avg),
    Module::Reduction {
        name: "inception_3c",
        c3x3_reduce: 128,
        c3x3: 160,
        double_reduce: 64,
        double: 96,
    },
    standard("inception_4a", [224, 64, 96, 96, 128, 128], PoolBranch::Avg),
    standard(
        "inception_4b",
        [192, 96, 128, 96, 128, 128],
        PoolBranch::Avg,
    ),
    standard(
        "inception_4c",
        [160, 128, 160, 128, 160, 128],
        PoolBranch::Avg,
    ),
    standard(
        "inception_4d",
        [96, 128, 192, 160, 192, 128],
        PoolBranch::Avg,
    ),
    Module::Reduction {
        name: "inception_4e",
        c3x3_reduce: 128,
        c3x3: 192,
        double_reduce: 192,
        double: 256,
    },
    standard(
        "inception_5a",
        [352, 192, 320, 160, 224, 128],
        PoolBranch::Avg,
    ),
    standard(
        "inception_5b",
        [352, 192, 320, 192, 224, 128],
        PoolBranch::Max,
    ),
];

/// BN-Inception's stem: 7x7/2 (`conv1_7x7_s2`), max pool, 1x1
/// (`conv2_3x3_reduce`), 3x3 (`conv2_3x3`), max pool; widths before the divisor.
pub const BN_INCEPTION_STEM: [usize; 3] = [64, 64, 192];

/// A backbone at some width.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Backbone {
    ResNet(ResNetConfig),
    BnInception(BnInceptionConfig),
}

impl Backbone {
    /// The published backbone of a template's architecture.
    pub fn published(arch: crate::spec::Architecture) -> Backbone {
        use crate::spec::Architecture;
        match arch {
            Architecture::Resnet101AngularMargin => Backbone::ResNet(ResNetConfig::resnet101()),
            Architecture::BnInception => Backbone::BnInception(BnInceptionConfig::published()),
            Architecture::Resnext50 => Backbone::ResNet(ResNetConfig::resnext50_32x4d()),
        }
    }

    /// The length of the pooled features.
    pub fn feature_dim(&self) -> usize {
        match self {
            Backbone::ResNet(c) => c.feature_dim(),
            Backbone::BnInception(c) => c.feature_dim(),
        }
    }
}

/// A convolution followed by batch norm (and ReLU when `relu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub relu: bool,
    /// A bias on the convolution (BN-Inception's).
    pub bias: bool,
}

impl Conv {
    fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv {
        Conv {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            groups: 1,
            relu: true,
            bias: false,
        }
    }

    fn stride(self, stride: usize) -> Conv {
        Conv { stride, ..self }
    }

    /// The output's side for an input side `len` (`None`: the kernel does not fit).
    pub fn out_len(&self, len: usize) -> Option<usize> {
        let padded = len + 2 * self.padding;
        (padded >= self.kernel && self.stride > 0).then(|| (padded - self.kernel) / self.stride + 1)
    }

    /// Weights (and the bias) of the convolution, then batch norm's scale and shift.
    pub fn params(&self) -> u64 {
        let per_group = (self.in_channels / self.groups.max(1)) as u64;
        let k2 = (self.kernel * self.kernel) as u64;
        let out = self.out_channels as u64;
        out * per_group * k2 + if self.bias { out } else { 0 } + 2 * out
    }

    /// Multiply-adds per output pixel.
    pub fn macs_per_pixel(&self) -> u64 {
        let per_group = (self.in_channels / self.groups.max(1)) as u64;
        self.out_channels as u64 * per_group * (self.kernel * self.kernel) as u64
    }
}

/// Max or average pooling, PyTorch's arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub max: bool,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub ceil_mode: bool,
}

impl Pool {
    pub const fn max(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Pool {
        Pool {
            max: true,
            kernel,
            stride,
            padding,
            ceil_mode,
        }
    }

    pub const fn avg(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Pool {
        Pool {
            max: false,
            kernel,
            stride,
            padding,
            ceil_mode,
        }
    }

    /// The output's side for an input side `len`, as PyTorch computes it
    /// (`pooling_output_shape`): in ceil mode a last window may hang over
    /// the edge, but must start inside the input or its left padding.
    /// `None` when no window fits (or the padding is over half the window).
    pub fn out_len(&self, len: usize) -> Option<usize> {
        pool_out_len(len, self.kernel, self.stride, self.padding, self.ceil_mode)
    }
}

/// [`Pool::out_len`] for one axis (what `models::pool` uses too).
pub fn pool_out_len(len: usize, k: usize, s: usize, p: usize, ceil_mode: bool) -> Option<usize> {
    if p * 2 > k || s == 0 {
        return None;
    }
    let (len_i, k_i, s_i, p_i) = (len as i64, k as i64, s as i64, p as i64);
    let numerator = len_i + 2 * p_i - (k_i - 1) - 1 + if ceil_mode { s_i - 1 } else { 0 };
    let mut out = numerator.div_euclid(s_i) + 1;
    if ceil_mode && (out - 1) * s_i >= len_i + p_i {
        out -= 1;
    }
    (out >= 1).then_some(out as usize)
}

/// An activation's shape for one image: channels, height, width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub channels: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    /// Values per image.
    pub fn len(&self) -> u64 {
        self.channels as u64 * self.h as u64 * self.w as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a walk over a backbone's layers sees.
pub trait Visit {
    /// The images entering the backbone (3 channels).
    fn enter(&mut self, _images: Shape) {}
    /// Convolution, batch norm, the residual added when `residual`, then ReLU if `conv.relu`.
    fn conv(&mut self, conv: &Conv, input: Shape, output: Shape, residual: bool);
    fn pool(&mut self, pool: &Pool, input: Shape, output: Shape);
    /// Activations joined along the channels.
    fn concat(&mut self, parts: &[Shape], output: Shape);
    /// Mean over height and width: the pooled features.
    fn global_pool(&mut self, input: Shape);
}

/// A layer that does not fit the activation reaching it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooSmall {
    /// The side that reaches the layer.
    pub side: usize,
    pub kernel: usize,
}

impl std::fmt::Display for TooSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {k}x{k} window does not fit the {s}x{s} activation that reaches it; use a larger image_size",
            k = self.kernel,
            s = self.side
        )
    }
}

struct Walker<'v, V: Visit> {
    v: &'v mut V,
}

impl<V: Visit> Walker<'_, V> {
    fn conv(&mut self, c: Conv, x: Shape, residual: bool) -> Result<Shape, TooSmall> {
        let too_small = |side| TooSmall {
            side,
            kernel: c.kernel,
        };
        let out = Shape {
            channels: c.out_channels,
            h: c.out_len(x.h).ok_or(too_small(x.h))?,
            w: c.out_len(x.w).ok_or(too_small(x.w))?,
        };
        self.v.conv(&c, x, out, residual);
        Ok(out)
    }

    fn pool(&mut self, p: Pool, x: Shape) -> Result<Shape, TooSmall> {
        let too_small = |side| TooSmall {
            side,
            kernel: p.kernel,
        };
        let out = Shape {
            channels: x.channels,
            h: p.out_len(x.h).ok_or(too_small(x.h))?,
            w: p.out_len(x.w).ok_or(too_small(x.w))?,
        };
        self.v.pool(&p, x, out);
        Ok(out)
    }

    fn resnet(&mut self, cfg: &ResNetConfig, x: Shape) -> Result<Shape, TooSmall> {
        let stem = Conv {
            padding: 3,
            ..Conv::new(3, cfg.base, 7).stride(2)
        };
        let x = self.conv(stem, x, false)?;
        let mut x = self.pool(Pool::max(3, 2, 1, false), x)?;
        for stage in cfg.blocks() {
            for (in_ch, planes, stride) in stage {
                let width = cfg.width(planes);
                let out = planes * EXPANSION;
                let y = self.conv(Conv::new(in_ch, width, 1), x, false)?;
                let y = self.conv(
                    Conv {
                        groups: cfg.groups,
                        ..Conv::new(width, width, 3).stride(stride)
                    },
                    y,
                    false,
                )?;
                if stride != 1 || in_ch != out {
                    let down = Conv {
                        padding: 0,
                        relu: false,
                        ..Conv::new(in_ch, out, 1).stride(stride)
                    };
                    self.conv(down, x, false)?;
                }
                x = self.conv(Conv::new(width, out, 1), y, true)?;
            }
        }
        self.v.global_pool(x);
        Ok(x)
    }

    fn bn_inception(&mut self, cfg: &BnInceptionConfig, x: Shape) -> Result<Shape, TooSmall> {
        let d = cfg.width_div.max(1);
        let conv = |i: usize, o: usize, k: usize| Conv {
            bias: true,
            ..Conv::new(i, o, k)
        };
        let [c1, c2r, c2] = BN_INCEPTION_STEM.map(|c| c / d);
        let stem = Conv {
            padding: 3,
            ..conv(3, c1, 7).stride(2)
        };
        let x = self.conv(stem, x, false)?;
        let x = self.pool(Pool::max(3, 2, 0, true), x)?;
        let x = self.conv(conv(c1, c2r, 1), x, false)?;
        let x = self.conv(conv(c2r, c2, 3), x, false)?;
        let mut x = self.pool(Pool::max(3, 2, 0, true), x)?;
        for m in &MODULES {
            let mut outs = Vec::with_capacity(4);
            match *m {
                Module::Standard {
                    c1x1,
                    c3x3_reduce,
                    c3x3,
                    double_reduce,
                    double,
                    pool,
                    pool_proj,
                    ..
                } => {
                    let i = x.channels;
                    outs.push(self.conv(conv(i, c1x1 / d, 1), x, false)?);
                    let y = self.conv(conv(i, c3x3_reduce / d, 1), x, false)?;
                    outs.push(self.conv(conv(c3x3_reduce / d, c3x3 / d, 3), y, false)?);
                    let y = self.conv(conv(i, double_reduce / d, 1), x, false)?;
                    let y = self.conv(conv(double_reduce / d, double / d, 3), y, false)?;
                    outs.push(self.conv(conv(double / d, double / d, 3), y, false)?);
                    let p = match pool {
                        PoolBranch::Avg => Pool::avg(3, 1, 1, true),
                        PoolBranch::Max => Pool::max(3, 1, 1, true),
                    };
                    let y = self.pool(p, x)?;
                    outs.push(self.conv(conv(i, pool_proj / d, 1), y, false)?);
                }
                Module::Reduction {
                    c3x3_reduce,
                    c3x3,
                    double_reduce,
                    double,
                    ..
                } => {
                    let i = x.channels;
                    let y = self.conv(conv(i, c3x3_reduce / d, 1), x, false)?;
                    outs.push(self.conv(conv(c3x3_reduce / d, c3x3 / d, 3).stride(2), y, false)?);
                    let y = self.conv(conv(i, double_reduce / d, 1), x, false)?;
                    let y = self.conv(conv(double_reduce / d, double / d, 3), y, false)?;
                    outs.push(self.conv(conv(double / d, double / d, 3).stride(2), y, false)?);
                    // On an odd size the published 3x3/2 ceil-mode pool gives ⌈(H−1)/2⌉ where
                    // the strided convolutions give ⌈H/2⌉: the networks pool with padding then
                    // (`models::bn_inception`), and so does this walk.
                    let mut p = Pool::max(3, 2, 0, true);
                    let first = outs[0];
                    if p.out_len(x.h) != Some(first.h) || p.out_len(x.w) != Some(first.w) {
                        p = Pool::max(3, 2, 1, false);
                    }
                    outs.push(self.pool(p, x)?);
                }
            }
            let out = Shape {
                channels: outs.iter().map(|s| s.channels).sum(),
                ..outs[0]
            };
            self.v.concat(&outs, out);
            x = out;
        }
        self.v.global_pool(x);
        Ok(x)
    }
}

/// Walks `backbone` on square images of side `image_size`, telling `v` each
/// layer in the order the network runs them; the last activation's shape
/// (before global pooling), or the first layer that does not fit.
pub fn walk(backbone: &Backbone, image_size: usize, v: &mut impl Visit) -> Result<Shape, TooSmall> {
    let images = Shape {
        channels: 3,
        h: image_size,
        w: image_size,
    };
    v.enter(images);
    let mut w = Walker { v };
    match backbone {
        Backbone::ResNet(cfg) => w.resnet(cfg, images),
        Backbone::BnInception(cfg) => w.bn_inception(cfg, images),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_follows_pytorch_in_ceil_mode() {
        // 112 → 56 (ResNet's stem pool), BN-Inception's 3x3/2 ceil pools at 224: 112 → 56 → 28.
        assert_eq!(Pool::max(3, 2, 1, false).out_len(112), Some(56));
        assert_eq!(Pool::max(3, 2, 0, true).out_len(112), Some(56));
        assert_eq!(Pool::max(3, 2, 0, true).out_len(7), Some(3));
        // A window that would start past the input is dropped in ceil mode.
        assert_eq!(Pool::max(2, 2, 0, true).out_len(5), Some(3));
        assert_eq!(Pool::max(3, 2, 0, true).out_len(2), Some(1));
        assert_eq!(Pool::max(3, 2, 0, false).out_len(2), None);
        assert_eq!(Pool::max(3, 2, 2, false).out_len(8), None);
    }

    #[test]
    fn widths_are_torchvisions() {
        let r = ResNetConfig::resnext50_32x4d();
        assert_eq!(r.width(64), 128);
        assert_eq!(r.width(512), 1024);
        let r = ResNetConfig::resnet101();
        assert_eq!(r.width(256), 256);
        assert_eq!(r.blocks().iter().map(Vec::len).sum::<usize>(), 33);
    }
}
