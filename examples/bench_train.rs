//! One training step (forward, loss, backward, SGD with momentum), timed.
//! Same flags and meaning as `../shared/peer/train_step.py`; prints one JSON line.
//!
//!     cargo run --release --example bench_train -- --model resnet101 --image-size 32 \
//!         --batch 8 --steps 5 --threads 1
//!
//! resnet101: the angular margin template's network (128-d embedding, ArcFace
//! s = 30, m = 0.5); resnext50, bninception: a softmax classifier. 10 concepts,
//! random images, SGD lr 0.01, momentum 0.9, weight decay 5e-4.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::optim::Sgd;
use wfrun::models::{AngularMargin, NetConfig, Targets, TemplateNet};
use wfrun::spec::Architecture;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of this process, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads", 0);
    if threads > 0 {
        // candle's matrix products and rayon read this when they first start.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let model: String = arg(&args, "--model", "resnet101".to_string());
    let size: usize = arg(&args, "--image-size", 32);
    let batch: usize = arg(&args, "--batch", 8);
    let steps: usize = arg(&args, "--steps", 10);
    let warmup: usize = arg(&args, "--warmup", 2);
    let arch = match model.as_str() {
        "resnet101" => Architecture::Resnet101AngularMargin,
        "resnext50" | "resnext50_32x4d" => Architecture::Resnext50,
        "bninception" => Architecture::BnInception,
        other => candle_core::bail!("unknown model `{other}`"),
    };
    let device = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &device);
    let cfg = NetConfig::published(
        arch,
        false,
        128,
        AngularMargin {
            scale: 30.0,
            margin: 0.5,
        },
    );
    let net = TemplateNet::new(&cfg, 10, &vb)?;
    let mut sgd = Sgd::new(&map, 0.01, 0.9, 5e-4);
    let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 10).collect();
    let targets = Targets::Classes(Tensor::new(labels.as_slice(), &device)?);

    let mut times = Vec::new();
    for i in 0..warmup + steps {
        let t = Instant::now();
        let loss = net.loss(&x, &targets, true)?;
        sgd.step(&loss.backward()?)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{{\"bench\":\"train_step\",\"framework\":\"wfrun\",\"model\":\"{model}\",\"image_size\":{size},\"batch\":{batch},\"threads\":{},\"median_ms\":{median:.1},\"min_ms\":{:.1},\"images_per_s\":{:.2},\"peak_rss_mib\":{:.0},\"loadavg\":\"{}\"}}",
        candle_core::utils::get_num_threads(),
        times[0],
        batch as f64 * 1e3 / median,
        peak_rss_mib().unwrap_or(f64::NAN),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}
