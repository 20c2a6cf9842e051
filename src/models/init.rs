//! Seeded initialisation. candle's CPU random generator cannot be seeded, so
//! wfrun draws every initial weight itself, from the workflow's seed and the
//! variable's name: the same seed gives the same network on any run.
//!
//! The rules are PyTorch's: convolutions Kaiming-normal with fan-out and the
//! ReLU gain (torchvision's ResNet) or, for BN-Inception, PyTorch's default
//! uniform in ±1/√fan_in (`ConvInit`), linear layers and convolution biases
//! uniform in ±1/√fan_in (PyTorch's default), batch norm weight 1, bias 0,
//! running mean 0, running variance 1; the angular margin's class weights
//! Xavier-uniform.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;

use crate::data::Rng;
pub use crate::hyper::ConvInit;

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Re-draws every variable of `map` from `seed`, the convolutions
/// Kaiming-normal with fan-out (torchvision's ResNet).
pub fn seeded(map: &VarMap, seed: u64) -> Result<()> {
    seeded_with(map, seed, ConvInit::KaimingFanOut)
}

/// Re-draws every variable of `map` from `seed`, the convolutions as `conv`
/// says.
pub fn seeded_with(map: &VarMap, seed: u64, conv: ConvInit) -> Result<()> {
    let data = map
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dims_of = |name: &str| data.get(name).map(|v| v.dims().to_vec());
    for (name, var) in data.iter() {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let prefix = name.rsplit_once('.').map_or("", |(p, _)| p);
        let is_bn = dims_of(&format!("{prefix}.running_mean")).is_some();
        let mut rng = Rng::new(name_seed(seed, name));
        let values: Vec<f64> =
            if name.ends_with("running_mean") || (is_bn && name.ends_with(".bias")) {
                vec![0.0; n]
            } else if name.ends_with("running_var") || (is_bn && name.ends_with(".weight")) {
                vec![1.0; n]
            } else if name == "arcface.weight" {
                // Xavier-uniform, as ArcFace implementations initialise class weights.
                let bound = (6.0 / (dims[0] + dims[1]) as f64).sqrt();
                (0..n)
                    .map(|_| bound * (2.0 * rng.next_f64() - 1.0))
                    .collect()
            } else if dims.len() == 4 && conv == ConvInit::FanInUniform {
                // PyTorch's `nn.Conv2d` default: Kaiming uniform with a = √5,
                // which is uniform in ±1/√fan_in.
                let fan_in = (dims[1] * dims[2] * dims[3]) as f64;
                let bound = 1.0 / fan_in.sqrt();
                (0..n)
                    .map(|_| bound * (2.0 * rng.next_f64() - 1.0))
                    .collect()
            } else if dims.len() == 4 {
                let fan_out = (dims[0] * dims[2] * dims[3]) as f64;
                let std = (2.0 / fan_out).sqrt();
                (0..n).map(|_| std * rng.normal()).collect()
            } else {
                // A linear weight, or a bias of a linear layer or convolution: ±1/√fan_in.
                let fan_in = if dims.len() == 2 {
                    dims[1]
                } else {
                    match dims_of(&format!("{prefix}.weight")) {
                        Some(w) => w[1..].iter().product(),
                        None => n,
                    }
                };
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                (0..n)
                    .map(|_| bound * (2.0 * rng.next_f64() - 1.0))
                    .collect()
            };
        let t = Tensor::from_vec(values, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{NetConfig, ResNetConfig, TemplateNet};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    fn build(seed: u64) -> VarMap {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let cfg = NetConfig::ResNext {
            backbone: ResNetConfig {
                layers: [1, 1, 1, 1],
                groups: 2,
                width_per_group: 32,
                base: 8,
            },
            logreg: false,
        };
        TemplateNet::new(&cfg, 3, &vb).unwrap();
        seeded(&map, seed).unwrap();
        map
    }

    fn values(map: &VarMap, name: &str) -> Vec<f32> {
        map.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_network() {
        let (a, b, c) = (build(5), build(5), build(6));
        for name in [
            "conv1.weight",
            "layer2.0.conv2.weight",
            "fc.weight",
            "fc.bias",
        ] {
            assert_eq!(values(&a, name), values(&b, name), "{name}");
            assert_ne!(values(&a, name), values(&c, name), "{name}");
        }
        assert!(values(&a, "bn1.weight").iter().all(|v| *v == 1.0));
        assert!(values(&a, "layer1.0.bn2.running_var")
            .iter()
            .all(|v| *v == 1.0));
        // Kaiming normal, fan-out: conv1 is 8x3x7x7, std √(2 / (8·49)) ≈ 0.0714.
        let w = values(&a, "conv1.weight");
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - 0.0714).abs() < 0.01, "{std}");
        let fc = values(&a, "fc.weight");
        let bound = 1.0 / (256f32).sqrt();
        assert!(fc.iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn pytorchs_default_draws_convolutions_within_one_over_root_fan_in() {
        let map = build(5);
        seeded_with(&map, 5, ConvInit::FanInUniform).unwrap();
        // conv1 is 8x3x7x7: fan-in 147, bound 1/√147 ≈ 0.0825, std bound/√3 ≈ 0.0476.
        let w = values(&map, "conv1.weight");
        let bound = 1.0 / (147f32).sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound));
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - bound / 3f32.sqrt()).abs() < 0.006, "{std}");
        // Everything else as before.
        assert_eq!(values(&map, "fc.weight"), values(&build(5), "fc.weight"));
    }
}
