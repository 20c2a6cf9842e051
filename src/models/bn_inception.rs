//! BN-Inception (Ioffe & Szegedy, 2015) with the layout and tensor names of
//! the widely used PyTorch port (Cadene's `pretrainedmodels`): `conv1_7x7_s2`,
//! `conv1_7x7_s2_bn`, `inception_3a_1x1`, …, so its converted weights load.
//! The embedding is the pooled output of the last inception module (1024-d).

use candle_core::Result;
use candle_nn::VarBuilder;

use super::cpu::Kernels;
use super::layers::{ConvBn, ConvSpec, Names};
use super::pool::Pool2d;
use super::walk::Ops;

pub use crate::arch::BnInceptionConfig;
use crate::arch::{Module, PoolBranch, BN_INCEPTION_STEM, MODULES};

#[derive(Clone, Debug)]
struct Branch(Vec<ConvBn>);

impl Branch {
    fn walk<O: Ops>(&self, ops: &mut O, x: &O::Value) -> Result<O::Value> {
        let mut x = x.clone();
        for c in &self.0 {
            x = ops.conv_bn(c, &x, None)?;
        }
        Ok(x)
    }
}

#[derive(Clone, Debug)]
struct Inception {
    branches: Vec<Branch>,
    pool: Pool2d,
    /// The pooling branch's projection (absent in reduction modules).
    pool_proj: Option<ConvBn>,
    out_channels: usize,
}

/// Where the layers' weights are, and the operations they run.
struct Layers<'a> {
    vb: &'a VarBuilder<'a>,
    kernels: Kernels,
}

fn conv(vb: &Layers, name: &str, spec: ConvSpec) -> Result<ConvBn> {
    let spec = spec.with_bias().kernels(vb.kernels);
    ConvBn::new(spec, Names::Suffixed(name), vb.vb)
}

/// The `1x1 → 3x3` branch (`NAME_3x3_reduce`, `NAME_3x3`), its 3x3 at `stride`.
fn reduce_3x3(
    vb: &Layers,
    name: &str,
    in_ch: usize,
    reduce: usize,
    out: usize,
    stride: usize,
) -> Result<Branch> {
    Ok(Branch(vec![
        conv(
            vb,
            &format!("{name}_3x3_reduce"),
            ConvSpec::new(in_ch, reduce, 1),
        )?,
        conv(
            vb,
            &format!("{name}_3x3"),
            ConvSpec::new(reduce, out, 3).stride(stride),
        )?,
    ]))
}

/// The `1x1 → 3x3 → 3x3` branch (`NAME_double_3x3_reduce`, `_1`, `_2`), its last 3x3 at `stride`.
fn double_3x3(
    vb: &Layers,
    name: &str,
    in_ch: usize,
    reduce: usize,
    out: usize,
    stride: usize,
) -> Result<Branch> {
    Ok(Branch(vec![
        conv(
            vb,
            &format!("{name}_double_3x3_reduce"),
            ConvSpec::new(in_ch, reduce, 1),
        )?,
        conv(
            vb,
            &format!("{name}_double_3x3_1"),
            ConvSpec::new(reduce, out, 3),
        )?,
        conv(
            vb,
            &format!("{name}_double_3x3_2"),
            ConvSpec::new(out, out, 3).stride(stride),
        )?,
    ]))
}

impl Inception {
    fn new(m: &Module, in_ch: usize, d: usize, vb: &Layers) -> Result<Inception> {
        match *m {
            Module::Standard {
                name,
                c1x1,
                c3x3_reduce,
                c3x3,
                double_reduce,
                double,
                pool,
                pool_proj,
            } => {
                let (c1x1, c3r, c3, dr, dd, pp) = (
                    c1x1 / d,
                    c3x3_reduce / d,
                    c3x3 / d,
                    double_reduce / d,
                    double / d,
                    pool_proj / d,
                );
                let branches = vec![
                    Branch(vec![conv(
                        vb,
                        &format!("{name}_1x1"),
                        ConvSpec::new(in_ch, c1x1, 1),
                    )?]),
                    reduce_3x3(vb, name, in_ch, c3r, c3, 1)?,
                    double_3x3(vb, name, in_ch, dr, dd, 1)?,
                ];
                let pool = match pool {
                    PoolBranch::Avg => Pool2d::avg(3, 1, 1, true, true),
                    PoolBranch::Max => Pool2d::max(3, 1, 1, true),
                };
                Ok(Inception {
                    branches,
                    pool,
                    pool_proj: Some(conv(
                        vb,
                        &format!("{name}_pool_proj"),
                        ConvSpec::new(in_ch, pp, 1),
                    )?),
                    out_channels: c1x1 + c3 + dd + pp,
                })
            }
            Module::Reduction {
                name,
                c3x3_reduce,
                c3x3,
                double_reduce,
                double,
            } => {
                let (c3r, c3, dr, dd) = (c3x3_reduce / d, c3x3 / d, double_reduce / d, double / d);
                let branches = vec![
                    reduce_3x3(vb, name, in_ch, c3r, c3, 2)?,
                    double_3x3(vb, name, in_ch, dr, dd, 2)?,
                ];
                Ok(Inception {
                    branches,
                    pool: Pool2d::max(3, 2, 0, true),
                    pool_proj: None,
                    out_channels: c3 + dd + in_ch,
                })
            }
        }
    }

    fn walk<O: Ops>(&self, ops: &mut O, x: &O::Value) -> Result<O::Value> {
        let mut outs = Vec::with_capacity(4);
        for b in &self.branches {
            outs.push(b.walk(ops, x)?);
        }
        let (h, w) = ops.spatial(x)?;
        let mut pool = self.pool;
        if self.pool_proj.is_none() && pool.out_dims(h, w)? != ops.spatial(&outs[0])? {
            // A reduction module on an odd size: the published 3x3/2 ceil-mode pool gives
            // ⌈(H−1)/2⌉ where the strided convolutions give ⌈H/2⌉, and the published network
            // fails (at 48 px, say). A padded pool gives ⌈H/2⌉ and keeps every size the spec
            // allows working; on even sizes (224, 32) the published pool is kept exactly.
            pool = Pool2d::max(3, 2, 1, false);
        }
        let pooled = ops.pool(&pool, x)?;
        outs.push(match &self.pool_proj {
            Some(p) => ops.conv_bn(p, &pooled, None)?,
            None => pooled,
        });
        ops.concat(&outs)
    }
}

/// The backbone: stem, ten inception modules, global average pooling.
#[derive(Clone, Debug)]
pub struct BnInception {
    stem: Vec<ConvBn>,
    pool1: Pool2d,
    pool2: Pool2d,
    modules: Vec<Inception>,
    feature_dim: usize,
    kernels: Kernels,
}

impl BnInception {
    pub fn new(cfg: &BnInceptionConfig, kernels: Kernels, vb: &VarBuilder) -> Result<BnInception> {
        let vb = &Layers { vb, kernels };
        let d = cfg.width_div;
        if ![1, 2, 4, 8, 16].contains(&d) {
            candle_core::bail!("BN-Inception's width divisor must be 1, 2, 4, 8 or 16, not {d}");
        }
        let [c1, c2r, c2] = BN_INCEPTION_STEM.map(|c| c / d);
        let stem = vec![
            conv(
                vb,
                "conv1_7x7_s2",
                ConvSpec::new(3, c1, 7).stride(2).padding(3),
            )?,
            conv(vb, "conv2_3x3_reduce", ConvSpec::new(c1, c2r, 1))?,
            conv(vb, "conv2_3x3", ConvSpec::new(c2r, c2, 3))?,
        ];
        let mut in_ch = c2;
        let mut modules = Vec::new();
        for m in &MODULES {
            let module = Inception::new(m, in_ch, d, vb)?;
            in_ch = module.out_channels;
            modules.push(module);
        }
        debug_assert_eq!(in_ch, cfg.feature_dim());
        Ok(BnInception {
            stem,
            pool1: Pool2d::max(3, 2, 0, true),
            pool2: Pool2d::max(3, 2, 0, true),
            modules,
            feature_dim: in_ch,
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
        let x = ops.conv_bn(&self.stem[0], &x, None)?;
        let x = ops.pool(&self.pool1, &x)?;
        let x = ops.conv_bn(&self.stem[1], &x, None)?;
        let x = ops.conv_bn(&self.stem[2], &x, None)?;
        let mut x = ops.pool(&self.pool2, &x)?;
        for m in &self.modules {
            x = m.walk(ops, &x)?;
        }
        ops.global_avg_pool(&x)
    }
}
