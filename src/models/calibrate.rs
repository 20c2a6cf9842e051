//! This machine's throughput for the cost model ([`crate::cost::Throughput`]),
//! measured once (`wfrun calibrate`): a few training steps and evaluation
//! batches of each template's published network at 32 and 64 px, on the
//! threads a run uses, and each network's rates fitted to them.
//!
//! For each network a step's time is a part per multiply-add of the batch
//! ([`crate::cost::Network::counts`]) and a part per step. The two are the
//! non-negative least-squares fit of the measured cases, errors relative to
//! each time, so small and large cases weigh alike. (One model for all three
//! networks, with terms for multiply-adds, activations, weights and layers,
//! was tried first: the networks' activations grow with their multiply-adds
//! almost in proportion, so the fit could not tell the terms apart, and
//! BN-Inception, which moves more memory per multiply-add, and ResNet-101
//! came out 20–40% apart in opposite directions.)

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::optim::Sgd;
use super::{AngularMargin, NetConfig, Targets, TemplateNet};
use crate::cost::{Counts, Head, Network, NetworkRate, Throughput};
use crate::spec::Architecture;

/// Image sizes and batches measured: two batches tell the per-image work from
/// the per-step work, two sizes the products from the layers' fixed cost.
const CASES: [(usize, usize); 3] = [(32, 4), (32, 16), (64, 4)];
/// Timed repetitions of each case, after one warm-up.
const REPEATS: usize = 3;
/// Passes over the three networks.
const PASSES: usize = 2;

/// One timed case.
struct Measured {
    counts: Counts,
    batch: u64,
    train_s: f64,
    eval_s: f64,
}

/// Measures this machine on `threads` threads (what `cpu::threads` uses);
/// `progress` hears each network as it starts. About twenty seconds.
pub fn calibrate(threads: usize, progress: &mut dyn FnMut(&str)) -> Result<Throughput> {
    const ARCHS: [Architecture; 3] = [
        Architecture::BnInception,
        Architecture::Resnext50,
        Architecture::Resnet101AngularMargin,
    ];
    // Two passes over the networks, each case's best time kept: a machine
    // whose speed wanders (a shared or virtual one) is measured at its
    // usual best, not at a moment's slowdown.
    let mut best: Vec<Vec<Measured>> = Vec::new();
    for pass in 0..PASSES {
        for (i, arch) in ARCHS.into_iter().enumerate() {
            progress(&format!(
                "{} ({} of {PASSES})",
                arch.network_name(),
                pass + 1
            ));
            let measured = measure(arch)?;
            match best.get_mut(i) {
                None => best.push(measured),
                Some(kept) => {
                    for (k, m) in kept.iter_mut().zip(measured) {
                        k.train_s = k.train_s.min(m.train_s);
                        k.eval_s = k.eval_s.min(m.eval_s);
                    }
                }
            }
        }
    }
    let mut networks = Vec::new();
    for (arch, measured) in ARCHS.into_iter().zip(best) {
        let rows = |macs: fn(&Counts) -> u64, time: fn(&Measured) -> f64| -> Vec<(Vec<f64>, f64)> {
            measured
                .iter()
                .map(|m| (vec![(m.batch * macs(&m.counts)) as f64 / 1e9, 1.0], time(m)))
                .collect()
        };
        let train = fit(&rows(|c| c.macs_train, |m| m.train_s));
        let embed = fit(&rows(|c| c.macs_forward, |m| m.eval_s));
        networks.push(NetworkRate {
            architecture: arch,
            train_s_per_gmac: train[0],
            train_step_s: train[1],
            embed_s_per_gmac: embed[0],
            embed_batch_s: embed[1],
        });
    }
    let t = Throughput {
        source: format!(
            "`wfrun calibrate` on {} thread(s) of {}",
            threads,
            crate::cost::calibration::cpu_model()
        ),
        threads,
        networks,
    };
    if !t.usable() {
        candle_core::bail!("the measured times gave no usable rates: {t:?}");
    }
    Ok(t)
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
    let mut net = TemplateNet::new(&cfg, classes, &vb)?;
    net.gradients_aside();
    super::init::seeded(&map, 0)?;
    let mut sgd = Sgd::new(&map, 0.001, 0.9, 5e-4);
    let model = Network {
        architecture: arch,
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
        let train_s = best_s(|| {
            let loss = net.loss(&x, &targets, true)?;
            sgd.step(&net.backward(&loss)?)
        })?;
        let eval_s = best_s(|| net.embed(&x, false)?.to_vec2::<f32>().map(drop))?;
        out.push(Measured {
            counts,
            batch: batch as u64,
            train_s,
            eval_s,
        });
    }
    Ok(out)
}

/// The best time of `REPEATS` runs of `f` after a warm-up.
fn best_s(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..REPEATS {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
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
