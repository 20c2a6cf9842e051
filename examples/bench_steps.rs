//! Times the downstream steps' algorithms on data from files, one JSON line
//! per benchmark, beside the scikit-learn / faiss / numpy peers
//! (`scripts/bench_steps_vs_peer.sh` writes the same data for both).
//!
//! ```text
//! cargo run --release --example bench_steps -- kmeans --x X.f32 --dim 128 --k 64 --iters 20
//! cargo run --release --example bench_steps -- knn --x X.f32 --q Q.f32 --dim 128 --k 10
//! cargo run --release --example bench_steps -- logreg --x X.f32 --y Y.u32 --dim 128 --classes 10 --train N
//! ```
//! Files are raw little-endian `f32` rows (`u32` labels). Without files, the
//! data is drawn here (standard normal).

use std::time::Instant;

use candle_core::{Device, Tensor};
use wfrun::steps::head::{train_head, HeadOptions};
use wfrun::steps::kmeans::{kmeans, Init, KMeansOptions};
use wfrun::steps::search::{search_unit, unit_matrix};
use wfrun::steps::Matrix;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, or: usize) -> usize {
    arg(args, name).and_then(|v| v.parse().ok()).unwrap_or(or)
}

fn read_f32(path: &str, dim: usize) -> Matrix {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let rows = data.len() / dim;
    Matrix::new(data, rows, dim)
}

fn random(rows: usize, dim: usize, seed: u64) -> Matrix {
    let mut rng = wfrun::data::Rng::new(seed);
    Matrix::new(
        (0..rows * dim).map(|_| rng.normal() as f32).collect(),
        rows,
        dim,
    )
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().cloned().unwrap_or_default();
    let dim = num(&args, "--dim", 128);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = |flag: &str, rows: usize, seed: u64| match arg(&args, flag) {
        Some(p) => read_f32(&p, dim),
        None => random(rows, dim, seed),
    };
    let device = Device::Cpu;
    match what.as_str() {
        "kmeans" => {
            let x = load("--x", num(&args, "--n", 100_000), 0);
            let (k, iters) = (num(&args, "--k", 64), num(&args, "--iters", 20));
            let init = match arg(&args, "--init").as_deref() {
                Some("k-means++") => Init::PlusPlus,
                _ => Init::Random,
            };
            let t = x.to_tensor(&device)?;
            let started = Instant::now();
            let r = kmeans(
                &t,
                &x,
                &KMeansOptions {
                    k,
                    iterations: iters,
                    inits: 1,
                    tolerance: 0.0,
                    seed: 0,
                    init,
                },
            )?;
            let s = started.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"bench": "kmeans", "n": x.rows, "dim": dim, "k": k, "iters": r.iterations,
                    "threads": threads, "seconds": s, "s_per_iter": s / r.iterations as f64, "inertia": r.inertia})
            );
        }
        "knn" => {
            let x = load("--x", num(&args, "--n", 100_000), 0);
            let q = load("--q", num(&args, "--queries", 1000), 1);
            let k = num(&args, "--k", 10);
            // As the peers: normalising the index is building it; the
            // queries are normalised within the timed search.
            let index = unit_matrix(&x.to_tensor(&device)?)?;
            let qt = q.to_tensor(&device)?;
            let started = Instant::now();
            let found = search_unit(&unit_matrix(&qt)?, &index, k, &|_| None);
            let s = started.elapsed().as_secs_f64();
            // Recall against an exact search in f64 on the first 50 queries.
            let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let mut hits = 0;
            let checked = 50.min(q.rows);
            for (qi, row) in found.iter().enumerate().take(checked) {
                let qv = q.row(qi);
                let qn = norm(qv);
                let mut all: Vec<(usize, f64)> = (0..x.rows)
                    .map(|i| {
                        let xv = x.row(i);
                        let dot: f64 = qv.iter().zip(xv).map(|(a, b)| *a as f64 * *b as f64).sum();
                        (i, dot / (qn * norm(xv)).max(1e-12))
                    })
                    .collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1));
                let exact: Vec<usize> = all[..k].iter().map(|p| p.0).collect();
                hits += row
                    .iter()
                    .filter(|(i, _)| exact.contains(&(*i as usize)))
                    .count();
            }
            println!(
                "{}",
                serde_json::json!({"bench": "knn_cosine", "n": x.rows, "dim": dim, "queries": q.rows, "k": k,
                    "threads": threads, "search_s": s, "queries_per_s": q.rows as f64 / s,
                    "recall_vs_exact_f64": hits as f64 / (checked * k) as f64})
            );
        }
        "logreg" => {
            let x = read_f32(&arg(&args, "--x").expect("--x"), dim);
            let labels: Vec<usize> = std::fs::read(arg(&args, "--y").expect("--y"))
                .expect("labels")
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .collect();
            let classes = num(&args, "--classes", 10);
            let train = num(&args, "--train", x.rows * 4 / 5);
            let all = x.to_tensor(&device)?;
            let xtr = all.narrow(0, 0, train)?;
            let xte = all.narrow(0, train, x.rows - train)?;
            let concepts: Vec<Vec<usize>> = labels[..train].iter().map(|&c| vec![c]).collect();
            let started = Instant::now();
            let head = train_head(
                &xtr,
                &concepts,
                classes,
                &HeadOptions {
                    logreg: false,
                    epochs: num(&args, "--epochs", 100),
                    learning_rate: 0.1,
                    l2: 1e-4,
                    batch_size: 256,
                    seed: 0,
                },
            )?;
            let s = started.elapsed().as_secs_f64();
            let scores: Tensor = head.scores(&xte)?;
            let predicted = scores.argmax(1)?.to_vec1::<u32>()?;
            let right = predicted
                .iter()
                .zip(&labels[train..])
                .filter(|(p, t)| **p as usize == **t)
                .count();
            println!(
                "{}",
                serde_json::json!({"bench": "logreg", "n": train, "dim": dim, "classes": classes, "threads": threads,
                    "seconds": s, "held_out_accuracy": right as f64 / (x.rows - train) as f64})
            );
        }
        _ => {
            eprintln!("usage: bench_steps kmeans|knn|logreg [--x FILE] [--q FILE] [--y FILE] [--dim D] ...");
            std::process::exit(2);
        }
    }
    Ok(())
}
