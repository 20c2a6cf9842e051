//! This machine's throughput for the cost model ([`crate::cost::Throughput`]),
//! measured once (`wfrun calibrate`): a few training steps and evaluation
//! batches of the three templates' published networks at small sizes, on the
//! threads a run uses, and the model's terms fitted to them.
//!
//! The model's terms are the work a step does: multiply-adds, activation
//! values, trainable values (SGD) and layers. Each measurement is one row
//! of counts from [`crate::cost::Network::counts`] and a time; the rates are
//! the non-negative least-squares fit of the rows, errors relative to each
//! time, so small and large cases weigh alike.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::optim::Sgd;
use super::{AngularMargin, NetConfig, Targets, TemplateNet};
use crate::cost::{Counts, Head, Network, Throughput};
use crate::spec::Architecture;

/// Image sizes and batches measured: two batches tell the per-image work from
/// the per-step work, two sizes the products from the layers' fixed cost.
const CASES: [(usize, usize); 3] = [(32, 4), (32, 16), (64, 4)];
/// Timed repetitions of each case, after one warm-up.
const REPEATS: usize = 2;

/// One timed case.
struct Measured {
    counts: Counts,
    batch: u64,
    train_s: f64,
    eval_s: f64,
}

/// Measures this machine on `threads` threads (what `cpu::threads` uses);
/// `progress` hears each network as it starts. A few seconds.
pub fn calibrate(threads: usize, progress: &mut dyn FnMut(&str)) -> Result<Throughput> {
    let mut measured = vec![products()?];
    for arch in [
        Architecture::BnInception,
        Architecture::Resnext50,
        Architecture::Resnet101AngularMargin,
    ] {
        progress(arch.network_name());
        measured.extend(measure(arch)?);
    }
    let train: Vec<(Vec<f64>, f64)> = measured
        .iter()
        .map(|m| {
            let c = &m.counts;
            (
                vec![
                    (m.batch * c.macs_train) as f64,
                    (m.batch * c.train_values) as f64,
                    c.params as f64,
                    c.layers as f64,
                ],
                m.train_s,
            )
        })
        .collect();
    let eval: Vec<(Vec<f64>, f64)> = measured
        .iter()
        .map(|m| {
            let c = &m.counts;
            (
                vec![
                    (m.batch * c.macs_forward) as f64,
                    (m.batch * c.eval_written) as f64,
                    c.layers as f64,
                ],
                m.eval_s,
            )
        })
        .collect();
    let t = fit(&train);
    let e = fit(&eval);
    let rate = |s: f64, fallback: f64| if s > 0.0 { 1.0 / s } else { fallback };
    let f = Throughput::FALLBACK;
    Ok(Throughput {
        source: format!(
            "measured by `wfrun calibrate` on {} threads of {}",
            threads,
            crate::cost::calibration::cpu_model()
        ),
        threads,
        // A term the fit leaves at zero costs nothing measurable here: an
        // infinite rate would claim too much, so the fallback's stands in.
        train_macs_per_s: rate(t[0], f.train_macs_per_s),
        train_values_per_s: rate(t[1], f.train_values_per_s * 100.0),
        params_per_s: rate(t[2], f.params_per_s * 100.0),
        train_layer_s: t[3],
        eval_macs_per_s: rate(e[0], f.eval_macs_per_s),
        eval_values_per_s: rate(e[1], f.eval_values_per_s * 100.0),
        eval_layer_s: e[2],
    })
}

/// One wide 3 × 3 convolution with its batch norm: nearly all products, so
/// the fit can tell the products' rate from the memory-bound passes, which
/// grow alongside them in the networks.
fn products() -> Result<Measured> {
    use super::layers::{enter, ConvBn, ConvSpec, Names};
    let device = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &device);
    let (channels, side, batch) = (512, 8, 16);
    let conv = ConvBn::new(
        ConvSpec::new(channels, channels, 3),
        Names::Pair {
            conv: "conv",
            bn: "bn",
        },
        &vb,
    )?;
    super::init::seeded(&map, 0)?;
    let images = Tensor::randn(0f32, 1.0, (batch, channels, side, side), &device)?;
    let x = enter(&images, super::cpu::Kernels::default())?;
    let train_s = median_s(|| {
        let y = conv.forward_t(&x, true)?;
        y.sum_all()?.backward().map(drop)
    })?;
    let eval_s = median_s(|| {
        conv.forward_t(&x, false)?
            .sum_all()?
            .to_scalar::<f32>()
            .map(drop)
    })?;
    let c = crate::arch::Conv {
        in_channels: channels,
        out_channels: channels,
        kernel: 3,
        stride: 1,
        padding: 1,
        groups: 1,
        relu: true,
        bias: false,
    };
    let pixels = (side * side) as u64;
    let macs = pixels * c.macs_per_pixel();
    let values = pixels * channels as u64;
    Ok(Measured {
        counts: Counts {
            image_size: side,
            params: 0,
            buffers: 0,
            macs_forward: macs,
            macs_train: 3 * macs,
            train_values: 2 * values,
            eval_values: 2 * values,
            eval_written: values,
            largest_activation: values,
            layers: 1,
        },
        batch: batch as u64,
        train_s,
        eval_s,
    })
}

fn measure(arch: Architecture) -> Result<Vec<Measured>> {
    let device = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &device);
    let classes = 10;
    let margin = AngularMargin {
        scale: 30.0,
        margin: 0.5,
    };
    let cfg = NetConfig::published(arch, false, 128, margin);
    let net = TemplateNet::new(&cfg, classes, &vb)?;
    super::init::seeded(&map, 0)?;
    let mut sgd = Sgd::new(&map, 0.001, 0.9, 5e-4);
    let model = Network {
        backbone: crate::arch::Backbone::published(arch),
        head: match arch {
            Architecture::Resnet101AngularMargin => Head::AngularMargin {
                embeddings_size: 128,
            },
            _ => Head::Classifier,
        },
        classes: classes as u64,
    };
    let mut out = Vec::new();
    for (size, batch) in CASES {
        let counts = model
            .counts(size)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let x = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device)?;
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % classes as u32).collect();
        let targets = Targets::Classes(Tensor::new(labels.as_slice(), &device)?);
        let train_s = median_s(|| {
            let loss = net.loss(&x, &targets, true)?;
            sgd.step(&loss.backward()?)
        })?;
        let eval_s = median_s(|| net.embed(&x, false)?.to_vec2::<f32>().map(drop))?;
        out.push(Measured {
            counts,
            batch: batch as u64,
            train_s,
            eval_s,
        });
    }
    Ok(out)
}

/// The median time of `REPEATS` runs of `f` after a warm-up.
fn median_s(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Non-negative `x` minimising Σ ((a·x − t) / t)² over the rows `(a, t)`:
/// coordinate descent on the normal equations, columns scaled to one.
pub fn fit(rows: &[(Vec<f64>, f64)]) -> Vec<f64> {
    let n = rows.first().map_or(0, |r| r.0.len());
    // Each row divided by its time: errors relative to the time.
    let a: Vec<Vec<f64>> = rows
        .iter()
        .map(|(r, t)| r.iter().map(|v| v / t.max(1e-12)).collect())
        .collect();
    let scale: Vec<f64> = (0..n)
        .map(|j| {
            let s = a.iter().map(|r| r[j] * r[j]).sum::<f64>().sqrt();
            if s > 0.0 {
                s
            } else {
                1.0
            }
        })
        .collect();
    let a: Vec<Vec<f64>> = a
        .iter()
        .map(|r| r.iter().zip(&scale).map(|(v, s)| v / s).collect())
        .collect();
    let mut x = vec![0.0; n];
    let gram = |i: usize, j: usize| a.iter().map(|r| r[i] * r[j]).sum::<f64>();
    let g: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| gram(i, j)).collect())
        .collect();
    let b: Vec<f64> = (0..n).map(|j| a.iter().map(|r| r[j]).sum()).collect();
    for _ in 0..10_000 {
        let mut moved = 0.0f64;
        for j in 0..n {
            if g[j][j] <= 0.0 {
                continue;
            }
            let rest: f64 = (0..n).filter(|&k| k != j).map(|k| g[j][k] * x[k]).sum();
            let next = ((b[j] - rest) / g[j][j]).max(0.0);
            moved = moved.max((next - x[j]).abs());
            x[j] = next;
        }
        if moved < 1e-12 {
            break;
        }
    }
    x.iter().zip(&scale).map(|(v, s)| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_known_rates() {
        // t = 2e-11 · macs + 5e-9 · values + 1e-4 · layers, exactly.
        let truth = [2e-11, 5e-9, 1e-4];
        let rows: Vec<(Vec<f64>, f64)> = [
            [1e9, 1e6, 100.0],
            [4e9, 4e6, 100.0],
            [1e9, 3e6, 60.0],
            [3e9, 1e6, 50.0],
            [2e8, 2e5, 150.0],
        ]
        .iter()
        .map(|r| {
            let t = r.iter().zip(&truth).map(|(a, b)| a * b).sum();
            (r.to_vec(), t)
        })
        .collect();
        let x = fit(&rows);
        for (got, want) in x.iter().zip(&truth) {
            assert!((got / want - 1.0).abs() < 1e-6, "{x:?}");
        }
    }
}
