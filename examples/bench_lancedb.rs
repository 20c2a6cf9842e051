//! LanceDB beside wfrun's exact in-memory search (feature `lancedb`):
//! N × DIM random-normal vectors (or the vectors of an embeddings file that
//! `wfrun embed` wrote) written to a table with an IVF-PQ (or IVF-HNSW-SQ) index; build time,
//! disk size, query latency (p50 / p99) through the index and exactly, and
//! recall@10 of the index against exact search. Prints one JSON line per size.
//!
//! ```sh
//! cargo run --release --features lancedb --example bench_lancedb -- [--rows 10000,100000,1000000] [--dim 512] [--queries 200] [--from FILE.safetensors] [--ann ivf-pq|ivf-hnsw-sq]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use wfrun::exec::lance::{self, Ann, Mode, Table};
use wfrun::exec::model::Embeddings;

fn random(n: usize, dim: usize, seed: u64) -> Embeddings {
    let mut rng = wfrun::data::Rng::new(seed);
    Embeddings {
        paths: (0..n)
            .map(|i| PathBuf::from(format!("v{seed}-{i}")))
            .collect(),
        concepts: vec![Vec::new(); n],
        dim,
        values: (0..n * dim).map(|_| rng.normal() as f32).collect(),
        bad: Vec::new(),
        model: None,
    }
}

/// Each query's time (ms, sorted) and the paths it found.
type Timed = Result<(Vec<f64>, Vec<Vec<PathBuf>>), Box<dyn std::error::Error>>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn folder_size(path: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let sizes: Vec<usize> = arg("--rows")
        .unwrap_or_else(|| "10000,100000,1000000".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let dim: usize = arg("--dim").map_or(Ok(512), |s| s.parse())?;
    let nq: usize = arg("--queries").map_or(Ok(200), |s| s.parse())?;
    let from = arg("--from").map(PathBuf::from);
    let ann = match arg("--ann").as_deref() {
        None | Some("ivf-pq") => Ann::IvfPq,
        Some("ivf-hnsw-sq") => Ann::IvfHnswSq,
        Some(other) => return Err(format!("--ann {other}: ivf-pq or ivf-hnsw-sq").into()),
    };
    let k = 10;
    let work = tempfile::tempdir()?;
    for &n in &sizes {
        let (data, queries) = match &from {
            Some(file) => {
                let all = Embeddings::load(file)?;
                let n = n.min(all.len().saturating_sub(nq));
                let take = |range: std::ops::Range<usize>| Embeddings {
                    paths: all.paths[range.clone()].to_vec(),
                    concepts: all.concepts[range.clone()].to_vec(),
                    dim: all.dim,
                    values: all.values[range.start * all.dim..range.end * all.dim].to_vec(),
                    bad: Vec::new(),
                    model: None,
                };
                (take(0..n), take(n..n + nq))
            }
            None => (random(n, dim, 1), random(nq, dim, 2)),
        };
        let n = data.len();
        let table = Table {
            db: work.path().join("db"),
            name: format!("t{n}"),
        };
        let written = lance::write(&table, &data, Mode::Overwrite, ann)?;
        let disk = folder_size(&table.folder());
        let opened = lance::Opened::open(&table)?;
        let timed = |exact: bool| -> Timed {
            let mut ms = Vec::new();
            let mut found = Vec::new();
            for i in 0..queries.len() {
                let one = Embeddings {
                    paths: vec![queries.paths[i].clone()],
                    concepts: vec![Vec::new()],
                    dim: queries.dim,
                    values: queries.row(i).to_vec(),
                    bad: Vec::new(),
                    model: None,
                };
                let t = Instant::now();
                let hits = opened.search(&one, k, exact)?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                found.push(hits[0].iter().map(|h| h.path.clone()).collect());
            }
            ms.sort_by(f64::total_cmp);
            Ok((ms, found))
        };
        let (ann_ms, ann_found) = timed(false)?;
        let (exact_ms, exact_found) = timed(true)?;
        let shared: usize = ann_found
            .iter()
            .zip(&exact_found)
            .map(|(a, e)| a.iter().filter(|p| e.contains(p)).count())
            .sum();
        // wfrun's own exact search, all queries at once, the index in memory.
        let x = Tensor::from_slice(&data.values, (n, data.dim), &Device::Cpu)?;
        let q = Tensor::from_slice(&queries.values, (queries.len(), queries.dim), &Device::Cpu)?;
        let t = Instant::now();
        let mine = wfrun::steps::search::search(&q, &x, k, &|_| None)?;
        let memory_ms_per_query = t.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
        let mine_shared: usize = mine
            .iter()
            .zip(&exact_found)
            .map(|(m, e)| {
                m.iter()
                    .filter(|(row, _)| e.contains(&data.paths[*row as usize]))
                    .count()
            })
            .sum();
        println!(
            "{}",
            serde_json::json!({
                "rows": n,
                "dim": data.dim,
                "source": from.as_ref().map_or("random normal".to_string(), |f| f.display().to_string()),
                "queries": queries.len(),
                "write_and_index_s": written.seconds,
                "index": written.index,
                "disk_mb": disk as f64 / 1e6,
                "ann_p50_ms": percentile(&ann_ms, 0.5),
                "ann_p99_ms": percentile(&ann_ms, 0.99),
                "exact_p50_ms": percentile(&exact_ms, 0.5),
                "exact_p99_ms": percentile(&exact_ms, 0.99),
                "ann_recall_at_10": shared as f64 / (queries.len() * k) as f64,
                "in_memory_exact_ms_per_query": memory_ms_per_query,
                "in_memory_agrees_with_lancedb_exact": mine_shared as f64 / (queries.len() * k) as f64,
            })
        );
    }
    Ok(())
}
