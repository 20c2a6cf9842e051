//! The steps' hot loops on the CPU, fused so the data is read once per pass:
//! a block of dot products goes through `gemm` into a buffer that stays in
//! cache, and is consumed at once (argmin and centroid sums for k-means,
//! top-k for search). Blocks are shared among threads.

use super::search::{Neighbours, TopK};
use super::Matrix;

/// Rows of the data per block: a block's dot products fit in the L2 cache.
const ROWS: usize = 2048;

/// `dst = lhs · rhs` (`m × n`, row-major, overwritten) with `lhs` (`m × k`)
/// and `rhs` (`k × n`) given by their row and column strides, on this
/// thread: the steps share their work among threads block by block. The
/// kernels' own wrapper, so models and steps have one (bounds-checked) gemm.
fn sgemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: &[f32],
    lhs_strides: (usize, usize),
    rhs: &[f32],
    rhs_strides: (usize, usize),
) {
    crate::models::cpu::gemm(
        (m, n, k),
        dst,
        n,
        false,
        lhs,
        lhs_strides,
        rhs,
        rhs_strides,
        1,
    );
}

/// `out[i × b_rows + j] = a_i · b_j` for row-major `a` (`a_rows × dim`) and
/// `b` (`b_rows × dim`), on this thread.
pub fn dots(a: &[f32], a_rows: usize, b: &[f32], b_rows: usize, dim: usize, out: &mut [f32]) {
    // bᵀ: element (p, j) is b[j × dim + p].
    sgemm((a_rows, b_rows, dim), out, a, (dim, 1), b, (1, dim));
}

/// `out = lhsᵀ · rhs` for row-major `lhs` (`rows × m`) and `rhs`
/// (`rows × n`): `out` is `m × n`, row-major.
pub fn dots_tn(lhs: &[f32], rhs: &[f32], rows: usize, m: usize, n: usize, out: &mut [f32]) {
    // lhsᵀ: element (i, p) is lhs[p × m + i].
    sgemm((m, n, rows), out, lhs, (1, m), rhs, (n, 1));
}

/// The threads the steps use: the kernels' policy (`RAYON_NUM_THREADS`, or
/// every core).
pub fn threads() -> usize {
    crate::models::cpu::threads()
}

/// One pass of Lloyd's algorithm: each row's nearest centroid, the sums and
/// counts of the rows of each cluster, and the inertia.
pub struct Pass {
    pub assignments: Vec<u32>,
    pub sums: Vec<f64>,
    pub counts: Vec<usize>,
    pub inertia: f64,
}

/// The inertia is left at 0 unless `inertia` is asked for.
pub fn lloyd_pass(x: &Matrix, centroids: &Matrix, inertia: bool) -> Pass {
    let (n, dim, k) = (x.rows, x.cols, centroids.rows);
    let c_sq: Vec<f32> = (0..k)
        .map(|c| centroids.row(c).iter().map(|v| v * v).sum())
        .collect();
    let blocks: Vec<usize> = (0..n).step_by(ROWS).collect();
    let workers = threads().min(blocks.len()).max(1);
    let per = blocks.len().div_ceil(workers);
    let parts: Vec<(usize, Pass)> = std::thread::scope(|scope| {
        let handles: Vec<_> = blocks
            .chunks(per)
            .map(|mine| {
                let c_sq = &c_sq;
                scope.spawn(move || {
                    let first = mine[0];
                    let last = (mine[mine.len() - 1] + ROWS).min(n);
                    let mut pass = Pass {
                        assignments: Vec::with_capacity(last - first),
                        sums: vec![0.0; k * dim],
                        counts: vec![0; k],
                        inertia: 0.0,
                    };
                    let mut buf = vec![0f32; ROWS * k];
                    // A block's sums in f32, added to the f64 totals once per block.
                    let mut block_sums = vec![0f32; k * dim];
                    for &start in mine {
                        let rows = ROWS.min(n - start);
                        let a = &x.data[start * dim..(start + rows) * dim];
                        dots(a, rows, &centroids.data, k, dim, &mut buf);
                        for r in 0..rows {
                            let d = &buf[r * k..(r + 1) * k];
                            let (mut best, mut best_d) = (0, f32::INFINITY);
                            for (c, (&dot, &sq)) in d.iter().zip(c_sq).enumerate() {
                                let v = sq - 2.0 * dot;
                                if v < best_d {
                                    best_d = v;
                                    best = c;
                                }
                            }
                            let row = &a[r * dim..(r + 1) * dim];
                            if inertia {
                                let x_sq: f32 = row.iter().map(|v| v * v).sum();
                                pass.inertia += (x_sq + best_d).max(0.0) as f64;
                            }
                            pass.assignments.push(best as u32);
                            pass.counts[best] += 1;
                            let sums = &mut block_sums[best * dim..(best + 1) * dim];
                            for (s, v) in sums.iter_mut().zip(row) {
                                *s += *v;
                            }
                        }
                        for (t, b) in pass.sums.iter_mut().zip(block_sums.iter_mut()) {
                            *t += *b as f64;
                            *b = 0.0;
                        }
                    }
                    (first, pass)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("k-means worker"))
            .collect()
    });
    let mut total = Pass {
        assignments: Vec::with_capacity(n),
        sums: vec![0.0; k * dim],
        counts: vec![0; k],
        inertia: 0.0,
    };
    for (_, p) in parts {
        total.assignments.extend(p.assignments);
        total
            .sums
            .iter_mut()
            .zip(&p.sums)
            .for_each(|(a, b)| *a += b);
        total
            .counts
            .iter_mut()
            .zip(&p.counts)
            .for_each(|(a, b)| *a += b);
        total.inertia += p.inertia;
    }
    total
}

/// Query rows per block of the search.
const QUERIES: usize = 256;

/// Index rows per block of the search: with [`QUERIES`], a 2 MiB buffer.
const INDEX_ROWS: usize = 2048;

/// The `k` most similar rows of `index` for each row of `queries` (both unit
/// rows), skipping `exclude(q)`.
pub fn search(
    queries: &Matrix,
    index: &Matrix,
    k: usize,
    exclude: &(dyn Fn(usize) -> Option<usize> + Sync),
) -> Vec<Neighbours> {
    let (nq, n, dim) = (queries.rows, index.rows, index.cols);
    let blocks: Vec<usize> = (0..nq).step_by(QUERIES).collect();
    let workers = threads().min(blocks.len()).max(1);
    let per = blocks.len().div_ceil(workers).max(1);
    let parts: Vec<Vec<Neighbours>> = std::thread::scope(|scope| {
        let handles: Vec<_> = blocks
            .chunks(per)
            .map(|mine| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let chunk = INDEX_ROWS;
                    let mut buf = vec![0f32; QUERIES * chunk];
                    for &q0 in mine {
                        let rows = QUERIES.min(nq - q0);
                        let a = &queries.data[q0 * dim..(q0 + rows) * dim];
                        let mut tops: Vec<TopK> = (0..rows).map(|_| TopK::new(k)).collect();
                        let skips: Vec<Option<usize>> =
                            (0..rows).map(|r| exclude(q0 + r)).collect();
                        for start in (0..n).step_by(chunk) {
                            let len = chunk.min(n - start);
                            let b = &index.data[start * dim..(start + len) * dim];
                            dots(a, rows, b, len, dim, &mut buf);
                            for (r, top) in tops.iter_mut().enumerate() {
                                let s = &buf[r * len..(r + 1) * len];
                                for (g, group) in s.chunks(32).enumerate() {
                                    // A vectorised maximum rules out most groups at once.
                                    let mut most = f32::NEG_INFINITY;
                                    for &v in group {
                                        most = if v > most { v } else { most };
                                    }
                                    if !top.admits(most) {
                                        continue;
                                    }
                                    for (jj, &v) in group.iter().enumerate() {
                                        let i = start + g * 32 + jj;
                                        if Some(i) != skips[r] {
                                            top.push(i as u32, v);
                                        }
                                    }
                                }
                            }
                        }
                        out.extend(tops.into_iter().map(TopK::into_vec));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("search worker"))
            .collect()
    });
    parts.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_match_a_direct_loop() {
        let mut rng = crate::data::Rng::new(1);
        let a: Vec<f32> = (0..7 * 5).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..3 * 5).map(|_| rng.normal() as f32).collect();
        let mut out = vec![0f32; 21];
        dots(&a, 7, &b, 3, 5, &mut out);
        for i in 0..7 {
            for j in 0..3 {
                let direct: f32 = (0..5).map(|p| a[i * 5 + p] * b[j * 5 + p]).sum();
                assert!((out[i * 3 + j] - direct).abs() < 1e-5);
            }
        }
    }
}
