//! Training for real, small: each template's network (at a small width) learns
//! generated images whose concept is where a bright square sits; the loss
//! falls and the accuracy on held-out images is far above chance.

#[path = "../examples/overfit.rs"]
#[allow(dead_code)]
mod overfit;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::optim::Sgd;
use wfrun::models::{
    AngularMargin, BnInceptionConfig, NetConfig, ResNetConfig, Targets, TemplateNet,
};

const CLASSES: usize = 4;

/// `n` noisy 32x32 images; image `i` has concept `i % 4`: a bright 10x10
/// square in that quadrant (position jittered).
fn images(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut pixels = vec![0f32; n * 3 * 32 * 32];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASSES;
        labels.push(class as u32);
        let (qy, qx) = (class / 2, class % 2);
        let oy = qy * 16 + (rand() * 5.0) as usize;
        let ox = qx * 16 + (rand() * 5.0) as usize;
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let inside = (oy..oy + 10).contains(&y) && (ox..ox + 10).contains(&x);
                    let v = if inside { 1.5 } else { 0.0 } + (rand() - 0.5);
                    pixels[((i * 3 + c) * 32 + y) * 32 + x] = v;
                }
            }
        }
    }
    let x = Tensor::from_vec(pixels, (n, 3, 32, 32), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(labels, n, &Device::Cpu).unwrap();
    (x, y)
}

fn train_and_evaluate(cfg: NetConfig, lr: f64) -> (f32, f32, f32) {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let net = TemplateNet::new(&cfg, CLASSES, &vb).unwrap();
    let (train_x, train_y) = images(64, 1);
    let (test_x, test_y) = images(40, 2);
    let mut sgd = Sgd::new(&map, lr, 0.9, 5e-4);
    let mut losses = Vec::new();
    // Twelve epochs: batch norm's running averages (momentum 0.1) must catch up with
    // the fast-changing activations before evaluation mode predicts well.
    for epoch in 0..12 {
        for b in 0..4 {
            let x = train_x.narrow(0, b * 16, 16).unwrap();
            let y = train_y.narrow(0, b * 16, 16).unwrap();
            let loss = net.loss(&x, &Targets::Classes(y), true).unwrap();
            let value = loss.to_scalar::<f32>().unwrap();
            assert!(value.is_finite(), "epoch {epoch}: loss {value}");
            losses.push(value);
            sgd.step(&loss.backward().unwrap()).unwrap();
        }
    }
    let predicted = net
        .logits(&test_x, false)
        .unwrap()
        .argmax(D::Minus1)
        .unwrap();
    let correct = predicted
        .eq(&test_y)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .mean_all()
        .unwrap();
    let first: f32 = losses[..4].iter().sum::<f32>() / 4.0;
    let last: f32 = losses[losses.len() - 4..].iter().sum::<f32>() / 4.0;
    (first, last, correct.to_scalar::<f32>().unwrap())
}

fn assert_learns(name: &str, cfg: NetConfig, lr: f64) {
    let (first, last, accuracy) = train_and_evaluate(cfg, lr);
    eprintln!("{name}: loss {first:.3} → {last:.3}, held-out accuracy {accuracy:.2}");
    assert!(
        last < 0.5 * first,
        "{name}: the loss did not fall ({first} → {last})"
    );
    assert!(
        accuracy >= 0.75,
        "{name}: held-out accuracy {accuracy} (chance is 0.25)"
    );
}

#[test]
fn resnext_softmax_learns() {
    let backbone = ResNetConfig {
        layers: [1, 1, 1, 1],
        groups: 4,
        width_per_group: 16,
        base: 8,
    };
    assert_learns(
        "resnext",
        NetConfig::ResNext {
            backbone,
            logreg: false,
        },
        0.05,
    );
}

#[test]
fn resnet_angular_margin_learns() {
    let backbone = ResNetConfig {
        layers: [1, 1, 1, 1],
        groups: 1,
        width_per_group: 64,
        base: 8,
    };
    let cfg = NetConfig::AngularMargin {
        backbone,
        embeddings_size: 32,
        loss: AngularMargin {
            scale: 16.0,
            margin: 0.1,
        },
    };
    assert_learns("resnet + angular margin", cfg, 0.05);
}

#[test]
fn bninception_sigmoid_learns() {
    let cfg = NetConfig::BnInception {
        backbone: BnInceptionConfig { width_div: 16 },
        logreg: true,
    };
    assert_learns("bninception", cfg, 0.1);
}

/// Gradients handed aside (`TemplateNet::gradients_aside`) are candle's to
/// the bit, for every variable of each template (BN-Inception's biased
/// convolutions, ResNeXt's grouped ones, the angular margin's head), and
/// `TemplateNet::backward` gives every variable a gradient as
/// `loss.backward()` does.
#[test]
fn gradients_handed_aside_are_candles() {
    let resnet = |groups, width_per_group| ResNetConfig {
        layers: [1, 1, 1, 1],
        groups,
        width_per_group,
        base: 8,
    };
    let nets = [
        NetConfig::ResNext {
            backbone: resnet(4, 16),
            logreg: false,
        },
        NetConfig::AngularMargin {
            backbone: resnet(1, 64),
            embeddings_size: 32,
            loss: AngularMargin {
                scale: 16.0,
                margin: 0.1,
            },
        },
        NetConfig::BnInception {
            backbone: BnInceptionConfig { width_div: 16 },
            logreg: true,
        },
    ];
    let (x, y) = images(8, 3);
    let targets = Targets::Classes(y);
    for cfg in &nets {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let plain = TemplateNet::new(cfg, CLASSES, &vb).unwrap();
        wfrun::models::init::seeded(&map, 7).unwrap();
        let mut aside = plain.clone();
        aside.gradients_aside();
        let theirs = plain.loss(&x, &targets, true).unwrap().backward().unwrap();
        let loss = aside.loss(&x, &targets, true).unwrap();
        let ours = aside.backward(&loss).unwrap();
        // A loss taken twice leaves nothing behind for the next step.
        let again = aside
            .backward(&aside.loss(&x, &targets, true).unwrap())
            .unwrap();
        // They were handed aside: candle's own store lacks them.
        let direct = aside.loss(&x, &targets, true).unwrap().backward().unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let data = map.data().lock().unwrap();
        let mut convolutions = 0;
        for (name, var) in data.iter() {
            let Some(t) = theirs.get(var.as_tensor()) else {
                assert!(ours.get(var.as_tensor()).is_none(), "{name}");
                continue;
            };
            let o = ours
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient"));
            assert_eq!(bits(o), bits(t), "{name}");
            assert_eq!(bits(again.get(var.as_tensor()).unwrap()), bits(t), "{name}");
            if var.as_tensor().rank() == 4 {
                assert!(direct.get(var.as_tensor()).is_none(), "{name}");
                convolutions += 1;
            }
        }
        assert!(convolutions > 10, "{convolutions} convolutions compared");
    }
}

/// Every network takes any image size the spec allows (32 to 1024, step 16),
/// in training and in evaluation: pooling and strides never run out of pixels.
#[test]
fn every_allowed_image_size_works() {
    let nets = [
        NetConfig::ResNext {
            backbone: ResNetConfig {
                layers: [1, 1, 1, 1],
                groups: 2,
                width_per_group: 32,
                base: 4,
            },
            logreg: false,
        },
        NetConfig::BnInception {
            backbone: BnInceptionConfig { width_div: 16 },
            logreg: true,
        },
    ];
    for cfg in &nets {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let net = TemplateNet::new(cfg, 3, &vb).unwrap();
        for size in (32..=256).step_by(16).chain([512, 1024]) {
            let x = Tensor::randn(0f32, 1.0, (2, 3, size, size), &Device::Cpu).unwrap();
            let labels = Targets::Classes(Tensor::new(&[0u32, 2], &Device::Cpu).unwrap());
            let loss = net
                .loss(&x, &labels, true)
                .unwrap_or_else(|e| panic!("{cfg:?} at {size}px: {e}"));
            assert!(loss.to_scalar::<f32>().unwrap().is_finite());
            let logits = net.logits(&x, false).unwrap();
            assert_eq!(logits.dims(), [2, 3], "{size}px");
        }
    }
}

/// The overfit example draws its weights and its batch from the seed: two
/// runs print the same losses, and each full-size network overfits its batch.
#[test]
fn the_overfit_example_is_repeatable_and_overfits() {
    let arc = wfrun::models::AngularMargin {
        scale: 16.0,
        margin: 0.1,
    };
    for name in ["resnext50", "bninception", "resnet101"] {
        let arch = overfit::architecture(name).unwrap();
        let run = |steps| {
            overfit::losses(
                arch,
                steps,
                0,
                overfit::learning_rate(arch),
                arc,
                &mut |_, _, _| {},
            )
            .unwrap()
        };
        let first = run(3);
        assert_eq!(first, run(3), "{name}: the same seed, the same losses");
        let all = run(40);
        assert_eq!(all[..3], first[..], "{name}");
        let fall = 1.0 - all[39] / all[0];
        assert!(fall > 0.9, "{name}: {} → {}", all[0], all[39]);
    }
}
