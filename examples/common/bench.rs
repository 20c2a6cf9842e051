//! What the training and embedding benchmarks share: flags as the PyTorch
//! peer's scripts take them, the thread setting, the network, the JSON line.

use candle_core::{DType, Device, Result};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::{AngularMargin, NetConfig, TemplateNet};
use wfrun::spec::Architecture;

/// The value after `name`, or `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--threads N` for wfrun's kernels (and candle's matrix products); read
/// once, when they first start, so this runs before anything else. candle's
/// own element-wise pool is kept to the calling thread and freed memory stays
/// in the process, as `wfrun` does.
pub fn set_threads(args: &[String]) {
    let threads: usize = arg(args, "--threads", 0);
    if threads > 0 {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // As the `wfrun` binary does.
    wfrun::models::cpu::tune_allocator();
}

/// The template network `--model` names (the peer's names accepted): ResNet-101
/// with the angular margin head (128-d embedding, s = 30, m = 0.5), ResNeXt-50
/// 32x4d or BN-Inception with a softmax classifier; 10 concepts, f32, seeded.
pub fn network(model: &str, map: &VarMap) -> Result<TemplateNet> {
    let arch = match model {
        "resnet101" => Architecture::Resnet101AngularMargin,
        "resnext50" | "resnext50_32x4d" => Architecture::Resnext50,
        "bninception" => Architecture::BnInception,
        other => candle_core::bail!("unknown model `{other}` (resnet101, resnext50, bninception)"),
    };
    let vb = VarBuilder::from_varmap(map, DType::F32, &Device::Cpu);
    let loss = AngularMargin {
        scale: 30.0,
        margin: 0.5,
    };
    let net = TemplateNet::new(&NetConfig::published(arch, false, 128, loss), 10, &vb)?;
    wfrun::models::init::seeded(map, 0)?;
    Ok(net)
}

/// Peak resident memory of this process, in MiB (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The cost model's network for `--model` (what [`network`] builds).
pub fn cost_network(model: &str) -> wfrun::cost::Network {
    use wfrun::arch::Backbone;
    use wfrun::cost::{Head, Network};
    let (arch, head) = match model {
        "resnext50" | "resnext50_32x4d" => (Architecture::Resnext50, Head::Classifier),
        "bninception" => (Architecture::BnInception, Head::Classifier),
        _ => (
            Architecture::Resnet101AngularMargin,
            Head::AngularMargin {
                embeddings_size: 128,
            },
        ),
    };
    Network {
        architecture: arch,
        backbone: Backbone::published(arch),
        head,
        classes: 10,
    }
}

/// The JSON line: timings (ms, sorted in place), images per second at the
/// median, peak memory, load average, and the cost model's estimates of the
/// time and the peak (this machine's `wfrun calibrate` figures, or the fallback).
pub fn report(bench: &str, model: &str, size: usize, batch: usize, times: &mut [f64]) {
    use wfrun::cost::{calibration, embed_peak_bytes, estimate, Throughput, Work};
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let net = cost_network(model);
    let t = calibration::load().unwrap_or_else(Throughput::fallback);
    let (est_ms, est_mib) = match (
        net.counts(size),
        estimate(&net, size, batch, Work::default(), None),
    ) {
        (Ok(c), Ok(_)) if bench == "embed" => (
            t.embed_batch_s(&net, &c, batch as u64).unwrap_or(f64::NAN) * 1e3,
            embed_peak_bytes(&net, &c, batch) as f64,
        ),
        (Ok(c), Ok(e)) => (
            t.train_step_s(&net, &c, batch as u64).unwrap_or(f64::NAN) * 1e3,
            e.train_peak_bytes as f64,
        ),
        _ => (f64::NAN, f64::NAN),
    };
    let est_mib = est_mib / (1u64 << 20) as f64;
    println!(
        "{{\"bench\":\"{bench}\",\"framework\":\"wfrun\",\"model\":\"{model}\",\"image_size\":{size},\"batch\":{batch},\"threads\":{},\"median_ms\":{median:.1},\"min_ms\":{:.1},\"images_per_s\":{:.2},\"peak_rss_mib\":{:.0},\"estimated_ms\":{est_ms:.1},\"estimated_peak_mib\":{est_mib:.0},\"loadavg\":\"{}\"}}",
        wfrun::models::cpu::threads(),
        times[0],
        batch as f64 * 1e3 / median,
        peak_rss_mib().unwrap_or(f64::NAN),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

/// With `--profile`: each kernel's share of the timed steps, on stderr.
pub fn print_profile(steps: usize, times: &[f64]) {
    let total: f64 = times.iter().sum();
    for (name, ms, calls) in wfrun::models::cpu::profile::totals() {
        eprintln!(
            "{name:>14}: {:7.1} ms per step ({:4.1}%), {} calls",
            ms / steps as f64,
            100.0 * ms / total,
            calls / steps as u64
        );
    }
}
