//! Trains a full-size template network on one small fixed synthetic batch and
//! prints the loss of every step; the loss should fall by over 90%.
//!
//!     cargo run --release --example overfit -- MODEL [--steps N]
//!
//! MODEL: `resnet101` (angular margin loss), `bninception` (sigmoid units) or
//! `resnext50` (softmax). Image size 32, batch 8, 4 concepts, SGD with
//! momentum 0.9.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::optim::Sgd;
use wfrun::models::{AngularMargin, NetConfig, Targets, TemplateNet};
use wfrun::spec::Architecture;

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map(String::as_str).unwrap_or("resnext50");
    let steps: usize = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let (arch, lr) = match model {
        "resnet101" => (Architecture::Resnet101AngularMargin, 0.05),
        "bninception" => (Architecture::BnInception, 0.05),
        "resnext50" => (Architecture::Resnext50, 0.05),
        other => {
            eprintln!("unknown model `{other}`: use resnet101, bninception or resnext50");
            std::process::exit(2);
        }
    };
    let device = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &device);
    let logreg = arch == Architecture::BnInception;
    let cfg = NetConfig::published(
        arch,
        logreg,
        128,
        AngularMargin {
            scale: 16.0,
            margin: 0.1,
        },
    );
    let net = TemplateNet::new(&cfg, 4, &vb)?;

    // A fixed batch: 8 random images, two per concept.
    let images = Tensor::randn(0f32, 1.0, (8, 3, 32, 32), &device)?;
    let labels = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3], &device)?;
    let targets = Targets::Classes(labels);
    let mut sgd = Sgd::new(&map, lr, 0.9, 0.0);

    let mut first = None;
    let mut last = 0.0;
    for step in 1..=steps {
        let started = std::time::Instant::now();
        let loss = net.loss(&images, &targets, true)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            eprintln!("step {step}: the loss is {value}; stopping");
            std::process::exit(1);
        }
        sgd.step(&loss.backward()?)?;
        first.get_or_insert(value);
        last = value;
        println!(
            "step {step:3}  loss {value:.5}  ({} ms)",
            started.elapsed().as_millis()
        );
    }
    let first = first.unwrap_or(0.0);
    let fall = 100.0 * (1.0 - last / first);
    println!("{model}: loss {first:.4} → {last:.4}, down {fall:.1}%");
    if fall < 90.0 {
        std::process::exit(1);
    }
    Ok(())
}
