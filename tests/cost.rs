//! The cost model counts the networks that train: the candle networks walked
//! layer by layer (`models::walk::Ops`) against the candle-free walk of the
//! same tables (`arch::walk`) the cost model counts from, and their variables
//! against its parameter counts.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wfrun::arch::{self, Backbone, BnInceptionConfig, ResNetConfig, Shape, Visit};
use wfrun::cost::{Head, Network};
use wfrun::models::layers::ConvBn;
use wfrun::models::pool::{Pool2d, PoolKind};
use wfrun::models::walk::Ops;
use wfrun::models::{AngularMargin, NetConfig, TemplateNet};
use wfrun::spec::Architecture;

/// One layer as both walks describe it.
#[derive(Debug, PartialEq)]
enum Layer {
    /// in (c, h, w), out channels, kernel, stride, padding, groups, relu, residual
    Conv(
        (usize, usize, usize),
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
        bool,
    ),
    /// max, kernel, stride, padding, ceil, out (h, w)
    Pool(bool, usize, usize, usize, bool, (usize, usize)),
    Concat(usize),
    Global(usize),
}

/// The candle network's walk, on shapes alone: (C, H, W) per image.
#[derive(Default)]
struct Shapes(Vec<Layer>);

impl Ops for Shapes {
    type Value = (usize, usize, usize);

    fn enter(&mut self, x: &Self::Value) -> Result<Self::Value> {
        Ok(*x)
    }

    fn conv_bn(
        &mut self,
        layer: &ConvBn,
        x: &Self::Value,
        residual: Option<&Self::Value>,
    ) -> Result<Self::Value> {
        let f = layer.folded()?;
        let (o, _, k, _) = f.weight.dims4()?;
        let side = |n: usize| (n + 2 * f.padding - k) / f.stride + 1;
        self.0.push(Layer::Conv(
            *x,
            o,
            k,
            f.stride,
            f.padding,
            f.groups,
            f.relu,
            residual.is_some(),
        ));
        Ok((o, side(x.1), side(x.2)))
    }

    fn pool(&mut self, pool: &Pool2d, x: &Self::Value) -> Result<Self::Value> {
        let (h, w) = pool.out_dims(x.1, x.2)?;
        self.0.push(Layer::Pool(
            matches!(pool.kind, PoolKind::Max),
            pool.kernel.0,
            pool.stride.0,
            pool.padding.0,
            pool.ceil_mode,
            (h, w),
        ));
        Ok((x.0, h, w))
    }

    fn concat(&mut self, xs: &[Self::Value]) -> Result<Self::Value> {
        let c = xs.iter().map(|x| x.0).sum();
        self.0.push(Layer::Concat(c));
        Ok((c, xs[0].1, xs[0].2))
    }

    fn spatial(&self, x: &Self::Value) -> Result<(usize, usize)> {
        Ok((x.1, x.2))
    }

    fn global_avg_pool(&mut self, x: &Self::Value) -> Result<Self::Value> {
        self.0.push(Layer::Global(x.0));
        Ok((x.0, 1, 1))
    }
}

/// The cost model's walk, in the same words.
#[derive(Default)]
struct Table(Vec<Layer>);

impl Visit for Table {
    fn conv(&mut self, c: &arch::Conv, input: Shape, _output: Shape, residual: bool) {
        self.0.push(Layer::Conv(
            (input.channels, input.h, input.w),
            c.out_channels,
            c.kernel,
            c.stride,
            c.padding,
            c.groups,
            c.relu,
            residual,
        ));
    }

    fn pool(&mut self, p: &arch::Pool, _input: Shape, output: Shape) {
        self.0.push(Layer::Pool(
            p.max,
            p.kernel,
            p.stride,
            p.padding,
            p.ceil_mode,
            (output.h, output.w),
        ));
    }

    fn concat(&mut self, _parts: &[Shape], output: Shape) {
        self.0.push(Layer::Concat(output.channels));
    }

    fn global_pool(&mut self, input: Shape) {
        self.0.push(Layer::Global(input.channels));
    }
}

fn build(cfg: &NetConfig, classes: usize) -> Result<(TemplateNet, VarMap)> {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let net = TemplateNet::new(cfg, classes, &vb)?;
    Ok((net, map))
}

fn values(map: &VarMap) -> u64 {
    map.all_vars().iter().map(|v| v.elem_count() as u64).sum()
}

/// Every template's published network: the walks agree layer by layer at
/// several sizes (odd ones too, where BN-Inception's reduction pool pads), and
/// the network's variables are the counted parameters and statistics.
#[test]
fn the_cost_model_walks_the_networks_that_train() -> Result<()> {
    let loss = AngularMargin {
        scale: 30.0,
        margin: 0.5,
    };
    let cases = [
        (
            NetConfig::AngularMargin {
                backbone: ResNetConfig::resnet101(),
                embeddings_size: 128,
                loss,
            },
            Backbone::ResNet(ResNetConfig::resnet101()),
            Head::AngularMargin {
                embeddings_size: 128,
            },
            Architecture::Resnet101AngularMargin,
        ),
        (
            NetConfig::ResNext {
                backbone: ResNetConfig::resnext50_32x4d(),
                logreg: false,
            },
            Backbone::ResNet(ResNetConfig::resnext50_32x4d()),
            Head::Classifier,
            Architecture::Resnext50,
        ),
        (
            NetConfig::BnInception {
                backbone: BnInceptionConfig::published(),
                logreg: true,
            },
            Backbone::BnInception(BnInceptionConfig::published()),
            Head::Classifier,
            Architecture::BnInception,
        ),
    ];
    for (cfg, backbone, head, arch) in cases {
        let classes = 7;
        let (net, map) = build(&cfg, classes)?;
        let model = Network {
            architecture: arch,
            backbone: backbone.clone(),
            head,
            classes: classes as u64,
        };
        for size in [32, 48, 57, 64, 97, 224] {
            let mut shapes = Shapes::default();
            net.walk_backbone(&mut shapes, &(3, size, size))?;
            let mut table = Table::default();
            arch::walk(&backbone, size, &mut table).expect("fits");
            assert_eq!(shapes.0.len(), table.0.len(), "{backbone:?} at {size}");
            for (i, (a, b)) in shapes.0.iter().zip(&table.0).enumerate() {
                assert_eq!(a, b, "{backbone:?} at {size} px, layer {i}");
            }
            let counts = model.counts(size).expect("fits");
            assert_eq!(values(&map), counts.params + counts.buffers, "{backbone:?}");
            let convs = shapes
                .0
                .iter()
                .filter(|l| matches!(l, Layer::Conv(..)))
                .count();
            assert_eq!(counts.layers, convs as u64);
        }
    }
    // The forward pass runs at a size the cost model accepts.
    let (net, _) = build(
        &NetConfig::BnInception {
            backbone: BnInceptionConfig { width_div: 16 },
            logreg: false,
        },
        3,
    )?;
    let x = Tensor::zeros((2, 3, 57, 57), DType::F32, &Device::Cpu)?;
    assert_eq!(net.embed(&x, false)?.dims(), &[2, 64]);
    Ok(())
}
