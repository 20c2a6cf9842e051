//! Embedding extraction (evaluation mode, no gradient), timed per batch.
//! Same flags and meaning as `../shared/peer/embed.py`; prints one JSON line.
//!
//!     cargo run --release --example bench_embed -- --model resnet101 --image-size 64 \
//!         --batch 32 --iters 10 --threads 2
//!
//! What wfrun computes when it embeds a run's images: resnet101, the angular
//! margin template's L2-normalised 128-d projection; resnext50 and
//! bninception, the pooled features (the peer adds a 128-d projection there,
//! a negligible difference). `--profile` prints each kernel's share. The
//! weights are fixed as in a model opened for use (`--per-call`: as the
//! per-epoch evaluation in training, which derives their transforms at each
//! call).

#[path = "common/bench.rs"]
mod bench;

use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    bench::set_threads(&args);
    let model: String = bench::arg(&args, "--model", "resnet101".to_string());
    let size: usize = bench::arg(&args, "--image-size", 32);
    let batch: usize = bench::arg(&args, "--batch", 32);
    let iters: usize = bench::arg(&args, "--iters", 10);
    let warmup: usize = bench::arg(&args, "--warmup", 2);
    let profile = args.iter().any(|a| a == "--profile");
    let map = VarMap::new();
    let mut net = bench::network(&model, &map)?;
    // As a model opened for use (`wfrun embed`): the weights never change,
    // so the transforms derived from them are kept (`--per-call`: derived
    // at each call, as the per-epoch evaluation in training does).
    if !args.iter().any(|a| a == "--per-call") {
        net.fix_weights();
    }
    let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &Device::Cpu)?;
    let mut times = Vec::new();
    for i in 0..warmup + iters {
        if i == warmup {
            wfrun::models::cpu::profile::enable(profile);
        }
        let t = Instant::now();
        let e = net.embed(&x, false)?.detach();
        // The values themselves, as a caller would read them.
        let _ = e.flatten_all()?.to_vec1::<f32>()?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    if profile {
        bench::print_profile(iters, &times);
    }
    bench::report("embed", &model, size, batch, &mut times);
    Ok(())
}
