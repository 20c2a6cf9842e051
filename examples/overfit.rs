//! Trains a full-size template network on one small fixed synthetic batch and
//! prints the loss of every step; the loss should fall by over 90%.
//! ResNeXt-50 and BN-Inception do on every seed tried (0–7). ResNet-101 with
//! the angular margin loss does on six of them; on seeds 2 and 4 its
//! embeddings collapse within the first steps and the loss stays near 2.2, a
//! from-scratch weakness of the ArcFace loss on a tiny batch that neither a
//! lower rate, a warm-up, more steps nor batch norm on the embedding cured.
//!
//!     cargo run --release --example overfit -- MODEL [--steps N] [--seed S]
//!
//! The weights and the batch are drawn from the seed (default 0): the same
//! seed prints the same losses.
//! MODEL: `resnet101` (angular margin loss), `bninception` (sigmoid units) or
//! `resnext50` (softmax). Image size 32, batch 8, 4 concepts, SGD with
//! momentum 0.9.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::optim::Sgd;
use wfrun::models::{AngularMargin, NetConfig, Targets, TemplateNet};
use wfrun::spec::Architecture;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map(String::as_str).unwrap_or("resnext50");
    let flag = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    let steps = flag("--steps").unwrap_or(40) as usize;
    let seed = flag("--seed").unwrap_or(0);
    let float = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(default)
    };
    let Some(arch) = architecture(model) else {
        eprintln!("unknown model `{model}`: use resnet101, bninception or resnext50");
        std::process::exit(2);
    };
    let lr = float("--lr", learning_rate(arch));
    let arc = AngularMargin {
        scale: float("--scale", 16.0),
        margin: float("--margin", 0.1),
    };
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let mut report = |step: usize, loss: f32, ms: u128| {
        let _ = writeln!(stdout, "step {step:3}  loss {loss:.5}  ({ms} ms)");
    };
    let losses = match losses(arch, steps, seed, lr, arc, &mut report) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{model}: {e}");
            std::process::exit(1);
        }
    };
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    let fall = 100.0 * (1.0 - last / first);
    let _ = writeln!(
        std::io::stdout(),
        "{model} (seed {seed}): loss {first:.4} → {last:.4}, down {fall:.1}%"
    );
    if fall < 90.0 {
        std::process::exit(1);
    }
}

/// SGD's learning rate (momentum 0.9): 0.01, at which ResNeXt-50 and
/// BN-Inception fall over 99% on each of seeds 0–7 (at 0.05 ResNeXt-50
/// diverged on seed 4); 0.05 for ResNet-101 with the angular margin loss,
/// which falls over 90% on seeds 0, 1, 3, 5, 6, 7 at it (three of five at 0.01).
pub fn learning_rate(arch: Architecture) -> f64 {
    match arch {
        Architecture::Resnet101AngularMargin => 0.05,
        _ => 0.01,
    }
}

/// The architecture a command-line name means.
pub fn architecture(model: &str) -> Option<Architecture> {
    match model {
        "resnet101" => Some(Architecture::Resnet101AngularMargin),
        "bninception" => Some(Architecture::BnInception),
        "resnext50" => Some(Architecture::Resnext50),
        _ => None,
    }
}

/// Trains `arch` for `steps` steps on a fixed batch drawn, like the weights,
/// from `seed`; the loss of each step (`report` sees each as it comes, with
/// its time). The same seed gives the same losses.
pub fn losses(
    arch: Architecture,
    steps: usize,
    seed: u64,
    lr: f64,
    arc: AngularMargin,
    report: &mut dyn FnMut(usize, f32, u128),
) -> candle_core::Result<Vec<f32>> {
    let device = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &device);
    let logreg = arch == Architecture::BnInception;
    let cfg = NetConfig::published(arch, logreg, 128, arc);
    let mut net = TemplateNet::new(&cfg, 4, &vb)?;
    net.gradients_aside();
    wfrun::models::init::seeded(&map, seed)?;

    // A fixed batch: 8 images of standard normal pixels, two per concept.
    let mut rng = wfrun::data::Rng::new(seed ^ 0x5EED);
    let pixels: Vec<f32> = (0..8 * 3 * 32 * 32).map(|_| rng.normal() as f32).collect();
    let images = Tensor::from_vec(pixels, (8, 3, 32, 32), &device)?;
    let labels = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3], &device)?;
    let targets = Targets::Classes(labels);
    let mut sgd = Sgd::new(&map, lr, 0.9, 0.0);

    let mut losses = Vec::with_capacity(steps);
    for step in 1..=steps {
        let started = std::time::Instant::now();
        let loss = net.loss(&images, &targets, true)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(candle_core::Error::Msg(format!(
                "step {step}: the loss is {value}"
            )));
        }
        sgd.step(&net.backward(&loss)?)?;
        report(step, value, started.elapsed().as_millis());
        losses.push(value);
    }
    Ok(losses)
}
