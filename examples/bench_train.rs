//! One training step (forward, loss, backward, SGD with momentum), timed.
//! Same flags and meaning as `../shared/peer/train_step.py`; prints one JSON line.
//!
//!     cargo run --release --example bench_train -- --model resnet101 --image-size 32 \
//!         --batch 8 --steps 5 --threads 1
//!
//! resnet101: the angular margin template's network (128-d embedding, ArcFace
//! s = 30, m = 0.5); resnext50, bninception: a softmax classifier. 10 concepts,
//! random images, SGD lr 0.01, momentum 0.9, weight decay 5e-4. `--profile`
//! prints each kernel's share of the step; `--per-step` each step's time.

#[path = "common/bench.rs"]
mod bench;

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use wfrun::models::optim::Sgd;
use wfrun::models::Targets;

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    bench::set_threads(&args);
    let model: String = bench::arg(&args, "--model", "resnet101".to_string());
    let size: usize = bench::arg(&args, "--image-size", 32);
    let batch: usize = bench::arg(&args, "--batch", 8);
    let steps: usize = bench::arg(&args, "--steps", 10);
    let warmup: usize = bench::arg(&args, "--warmup", 2);
    let profile = args.iter().any(|a| a == "--profile");
    let per_step = args.iter().any(|a| a == "--per-step");
    let device = Device::Cpu;
    let map = VarMap::new();
    let mut net = bench::network(&model, &map)?;
    net.gradients_aside();
    let mut sgd = Sgd::new(&map, 0.01, 0.9, 5e-4);
    let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let targets = Targets::Classes(Tensor::new(labels.as_slice(), &device)?);

    let mut times = Vec::new();
    for i in 0..warmup + steps {
        if i == warmup {
            wfrun::models::cpu::profile::enable(profile);
        }
        let t = Instant::now();
        let loss = net.loss(&x, &targets, true)?;
        sgd.step(&net.backward(&loss)?)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if per_step {
                eprintln!("step {:.1} ms", times[times.len() - 1]);
            }
        }
    }
    if profile {
        bench::print_profile(steps, &times);
    }
    bench::report("train_step", &model, size, batch, &mut times);
    Ok(())
}
