//! k-means (Lloyd's iterations) with k-means++ or random initialisation,
//! several initialisations, an iteration cap and a tolerance; the silhouette
//! score; agreement with known concepts (NMI, ARI).
//!
//! Distances go through one matrix product per iteration on the tensors'
//! device (`‖x‖² − 2x·c + ‖c‖²`); the centroid sums are taken on the host.

use candle_core::{DType, Result, Tensor, D};

use super::Matrix;
use crate::data::Rng;

/// How the first centroids are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// k-means++: each next centroid drawn with probability proportional to
    /// the squared distance to the nearest one chosen so far.
    PlusPlus,
    /// k distinct points drawn uniformly.
    Random,
}

#[derive(Clone, Debug)]
pub struct KMeansOptions {
    pub k: usize,
    /// The most Lloyd iterations of each run.
    pub iterations: usize,
    /// Runs from different initialisations; the lowest inertia is kept.
    pub inits: usize,
    /// A run stops when the centroids' total squared shift is below
    /// `tolerance × (mean variance of the data's columns)` (as scikit-learn).
    pub tolerance: f64,
    pub seed: u64,
    pub init: Init,
}

#[derive(Clone, Debug)]
pub struct KMeans {
    /// Each row's cluster.
    pub assignments: Vec<u32>,
    /// `k × dim`.
    pub centroids: Matrix,
    /// The sum of squared distances of the rows to their centroids.
    pub inertia: f64,
    /// Iterations of the kept run.
    pub iterations: usize,
}

/// Clusters the rows of `x` (`n × dim`, on any device).
pub fn kmeans(x: &Tensor, host: &Matrix, options: &KMeansOptions) -> Result<KMeans> {
    let n = host.rows;
    let k = options.k.min(n).max(1);
    let x_sq = if x.device().is_cpu() {
        0.0 // the CPU pass computes the inertia itself
    } else {
        x.sqr()?
            .sum(1)?
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_scalar::<f64>()?
    };
    // The mean variance of the columns, which the tolerance is relative to.
    let spread = if options.tolerance > 0.0 {
        let mean = host.column_means();
        let mut var = 0.0f64;
        for r in 0..n {
            for (v, m) in host.row(r).iter().zip(&mean) {
                let d = *v as f64 - m;
                var += d * d;
            }
        }
        var / (n.max(1) * host.cols.max(1)) as f64
    } else {
        0.0
    };
    let threshold = options.tolerance * spread;
    let mut best: Option<KMeans> = None;
    for run in 0..options.inits.max(1) {
        let mut rng = Rng::new(options.seed ^ (run as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut centroids = match options.init {
            Init::PlusPlus => plus_plus(host, k, &mut rng),
            Init::Random => {
                let mut idx: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut idx);
                Matrix::from_rows(idx[..k].iter().map(|&i| host.row(i)), host.cols)
            }
        };
        let mut iterations = 0;
        for _ in 0..options.iterations.max(1) {
            iterations += 1;
            let (assignments, sums, counts) = if x.device().is_cpu() {
                let p = super::cpu::lloyd_pass(host, &centroids, false);
                (p.assignments, p.sums, p.counts)
            } else {
                let (a, _) = assign(x, &centroids)?;
                let (sums, counts) = cluster_sums(host, &a, centroids.rows);
                (a, sums, counts)
            };
            let moved = update(host, &assignments, &sums, &counts, &mut centroids);
            if moved <= threshold {
                break;
            }
        }
        // The final assignment and inertia for the final centroids.
        let (assignments, inertia) = if x.device().is_cpu() {
            let p = super::cpu::lloyd_pass(host, &centroids, true);
            (p.assignments, p.inertia)
        } else {
            let (a, partial) = assign(x, &centroids)?;
            (a, (x_sq + partial).max(0.0))
        };
        if best.as_ref().is_none_or(|b| inertia < b.inertia) {
            best = Some(KMeans {
                assignments,
                centroids,
                inertia,
                iterations,
            });
        }
    }
    best.ok_or_else(|| candle_core::Error::Msg("k-means ran no initialisation".into()))
}

/// [`kmeans`] of `x`'s rows scaled to unit length, the directions cosine
/// search compares (the `clustering` step's and the judge's space): what an
/// image's embedding says, not how long it is. Returns the unit rows too.
pub fn kmeans_of_directions(x: &Tensor, options: &KMeansOptions) -> Result<(KMeans, Matrix)> {
    let unit = super::search::unit_matrix(x)?;
    let clusters = kmeans(&unit.to_tensor(x.device())?, &unit, options)?;
    Ok((clusters, unit))
}

/// Each row's nearest centroid, and `Σ (‖c‖² − 2x·c)` over the rows' nearest.
fn assign(x: &Tensor, centroids: &Matrix) -> Result<(Vec<u32>, f64)> {
    let c = centroids.to_tensor(x.device())?;
    let c_sq = c.sqr()?.sum(1)?.unsqueeze(0)?;
    let d = x.matmul(&c.t()?)?.affine(-2.0, 0.0)?.broadcast_add(&c_sq)?;
    let nearest = d.argmin(D::Minus1)?.to_vec1::<u32>()?;
    let partial = d
        .min(D::Minus1)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok((nearest, partial))
}

/// The sums and counts of the rows of each cluster.
fn cluster_sums(host: &Matrix, assignments: &[u32], k: usize) -> (Vec<f64>, Vec<usize>) {
    let dim = host.cols;
    let mut sums = vec![0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (r, &c) in assignments.iter().enumerate() {
        let c = c as usize;
        counts[c] += 1;
        for (s, v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(host.row(r)) {
            *s += *v as f64;
        }
    }
    (sums, counts)
}

/// Moves each centroid to the mean of its rows; an empty cluster takes the row
/// farthest from its own centroid. Returns the total squared shift.
fn update(
    host: &Matrix,
    assignments: &[u32],
    sums: &[f64],
    counts: &[usize],
    centroids: &mut Matrix,
) -> f64 {
    let (k, dim) = (centroids.rows, centroids.cols);
    let old = centroids.clone();
    for c in 0..k {
        if counts[c] == 0 {
            continue;
        }
        let inv = 1.0 / counts[c] as f64;
        for (d, s) in centroids
            .row_mut(c)
            .iter_mut()
            .zip(&sums[c * dim..(c + 1) * dim])
        {
            *d = (*s * inv) as f32;
        }
    }
    for c in (0..k).filter(|&c| counts[c] == 0) {
        let far = (0..host.rows)
            .max_by(|&a, &b| {
                let da = sq_dist(host.row(a), old.row(assignments[a] as usize));
                let db = sq_dist(host.row(b), old.row(assignments[b] as usize));
                da.total_cmp(&db)
            })
            .unwrap_or(0);
        centroids.row_mut(c).copy_from_slice(host.row(far));
    }
    (0..k).map(|c| sq_dist(old.row(c), centroids.row(c))).sum()
}

pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum()
}

/// k-means++ seeding (D² sampling).
fn plus_plus(host: &Matrix, k: usize, rng: &mut Rng) -> Matrix {
    let n = host.rows;
    let mut chosen = vec![rng.below(n)];
    let mut nearest: Vec<f64> = (0..n)
        .map(|r| sq_dist(host.row(r), host.row(chosen[0])))
        .collect();
    while chosen.len() < k {
        let total: f64 = nearest.iter().sum();
        let next = if total <= 0.0 {
            rng.below(n) // every row sits on a centroid already
        } else {
            let mut target = rng.next_f64() * total;
            let mut pick = n - 1;
            for (r, d) in nearest.iter().enumerate() {
                if target < *d {
                    pick = r;
                    break;
                }
                target -= d;
            }
            pick
        };
        chosen.push(next);
        for (r, d) in nearest.iter_mut().enumerate() {
            *d = d.min(sq_dist(host.row(r), host.row(next)));
        }
    }
    Matrix::from_rows(chosen.iter().map(|&i| host.row(i)), host.cols)
}

/// The mean silhouette of the rows (Euclidean distances), computed on at most
/// `sample` rows drawn from `seed` (all of them when there are fewer).
pub fn silhouette(host: &Matrix, assignments: &[u32], sample: usize, seed: u64) -> f64 {
    let mut idx: Vec<usize> = (0..host.rows).collect();
    if idx.len() > sample {
        Rng::new(seed).shuffle(&mut idx);
        idx.truncate(sample);
    }
    let k = assignments
        .iter()
        .map(|&c| c as usize + 1)
        .max()
        .unwrap_or(0);
    if k < 2 {
        return 0.0;
    }
    let mut total = 0.0;
    for &i in &idx {
        let mut sum = vec![0f64; k];
        let mut count = vec![0usize; k];
        for &j in &idx {
            if i != j {
                let c = assignments[j] as usize;
                sum[c] += sq_dist(host.row(i), host.row(j)).sqrt();
                count[c] += 1;
            }
        }
        let own = assignments[i] as usize;
        if count[own] == 0 {
            continue; // a singleton's silhouette is 0
        }
        let a = sum[own] / count[own] as f64;
        let b = (0..k)
            .filter(|&c| c != own && count[c] > 0)
            .map(|c| sum[c] / count[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            total += (b - a) / a.max(b).max(1e-12);
        }
    }
    total / idx.len().max(1) as f64
}

/// The contingency table of two labellings, with what the agreement
/// measures ([`agreement`], `judge::adjusted_mutual_information`) read of it.
pub(super) struct Contingency {
    pub n: usize,
    /// `cells[i * cols.len() + j]`: items labelled `i` in one and `j` in the other.
    pub cells: Vec<usize>,
    /// Items per label of the first labelling (some may be 0).
    pub rows: Vec<usize>,
    /// Items per label of the second.
    pub cols: Vec<usize>,
    /// Mutual information (natural log).
    pub mi: f64,
    /// Entropies of the two labellings.
    pub h_rows: f64,
    pub h_cols: f64,
}

impl Contingency {
    pub fn of(a: &[usize], b: &[usize]) -> Contingency {
        let n = a.len();
        let ka = a.iter().max().map_or(0, |m| m + 1);
        let kb = b.iter().max().map_or(0, |m| m + 1);
        let mut cells = vec![0usize; ka * kb];
        for (&x, &y) in a.iter().zip(b) {
            cells[x * kb + y] += 1;
        }
        let rows: Vec<usize> = (0..ka)
            .map(|i| cells[i * kb..(i + 1) * kb].iter().sum())
            .collect();
        let cols: Vec<usize> = (0..kb)
            .map(|j| (0..ka).map(|i| cells[i * kb + j]).sum())
            .collect();
        let nf = n as f64;
        let entropy = |counts: &[usize]| -> f64 {
            counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| {
                    let p = c as f64 / nf;
                    -p * p.ln()
                })
                .sum()
        };
        let mut mi = 0.0;
        for i in 0..ka {
            for j in 0..kb {
                let c = cells[i * kb + j];
                if c > 0 {
                    let c = c as f64;
                    mi += c / nf * (c * nf / (rows[i] as f64 * cols[j] as f64)).ln();
                }
            }
        }
        let (h_rows, h_cols) = (entropy(&rows), entropy(&cols));
        Contingency {
            n,
            cells,
            rows,
            cols,
            mi,
            h_rows,
            h_cols,
        }
    }
}

/// Normalised mutual information (arithmetic-mean normalisation, as
/// scikit-learn's default) and the adjusted Rand index of two labellings.
pub fn agreement(a: &[usize], b: &[usize]) -> (f64, f64) {
    let t = Contingency::of(a, b);
    let nmi = if t.h_rows + t.h_cols <= 0.0 {
        1.0
    } else {
        (2.0 * t.mi / (t.h_rows + t.h_cols)).clamp(0.0, 1.0)
    };
    let pairs = |c: usize| (c * c.saturating_sub(1)) as f64 / 2.0;
    let index: f64 = t.cells.iter().map(|&c| pairs(c)).sum();
    let sum_a: f64 = t.rows.iter().map(|&c| pairs(c)).sum();
    let sum_b: f64 = t.cols.iter().map(|&c| pairs(c)).sum();
    let expected = sum_a * sum_b / pairs(t.n).max(1.0);
    let max = (sum_a + sum_b) / 2.0;
    let ari = if (max - expected).abs() < 1e-12 {
        1.0
    } else {
        (index - expected) / (max - expected)
    };
    (nmi, ari)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// `k` well-separated Gaussian blobs in `dim` dimensions.
    pub(crate) fn blobs(k: usize, per: usize, dim: usize, seed: u64) -> (Matrix, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let centres: Vec<Vec<f32>> = (0..k)
            .map(|_| (0..dim).map(|_| (rng.normal() * 10.0) as f32).collect())
            .collect();
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..k * per {
            let c = i % k;
            data.extend(centres[c].iter().map(|v| v + rng.normal() as f32));
            labels.push(c);
        }
        (Matrix::new(data, k * per, dim), labels)
    }

    #[test]
    fn separated_blobs_are_found() {
        let (m, labels) = blobs(5, 60, 16, 1);
        let x = m.to_tensor(&Device::Cpu).unwrap();
        for init in [Init::PlusPlus, Init::Random] {
            let r = kmeans(
                &x,
                &m,
                &KMeansOptions {
                    k: 5,
                    iterations: 100,
                    inits: 4,
                    tolerance: 1e-4,
                    seed: 3,
                    init,
                },
            )
            .unwrap();
            let found: Vec<usize> = r.assignments.iter().map(|&c| c as usize).collect();
            let (nmi, ari) = agreement(&found, &labels);
            assert!(nmi > 0.99 && ari > 0.99, "{init:?}: nmi {nmi} ari {ari}");
            assert!(silhouette(&m, &r.assignments, 1000, 0) > 0.7);
            // The inertia is the sum of squared distances to the kept centroids.
            let direct: f64 = (0..m.rows)
                .map(|i| sq_dist(m.row(i), r.centroids.row(r.assignments[i] as usize)))
                .sum();
            assert!(
                (direct - r.inertia).abs() / direct < 1e-4,
                "{direct} vs {}",
                r.inertia
            );
        }
    }

    #[test]
    fn directions_are_clustered_whatever_the_rows_lengths() {
        let (m, labels) = blobs(5, 60, 16, 2);
        // The same rows at lengths of 1 to 2 times, and three (of three
        // blobs) 150 times, as a softmax template's pooled features can be.
        let mut rng = Rng::new(4);
        let mut long = m.clone();
        for r in 0..long.rows {
            let a = if [0, 1, 2].contains(&r) {
                150.0
            } else {
                1.0 + rng.next_f64() as f32
            };
            long.row_mut(r).iter_mut().for_each(|v| *v *= a);
        }
        let options = KMeansOptions {
            k: 5,
            iterations: 100,
            inits: 4,
            tolerance: 1e-4,
            seed: 3,
            init: Init::PlusPlus,
        };
        let nmi = |r: &KMeans| {
            let found: Vec<usize> = r.assignments.iter().map(|&c| c as usize).collect();
            agreement(&found, &labels).0
        };
        let (plain, _) =
            kmeans_of_directions(&m.to_tensor(&Device::Cpu).unwrap(), &options).unwrap();
        let (scaled, unit) =
            kmeans_of_directions(&long.to_tensor(&Device::Cpu).unwrap(), &options).unwrap();
        assert!(nmi(&plain) > 0.99, "{}", nmi(&plain));
        assert_eq!(scaled.assignments, plain.assignments);
        for r in 0..unit.rows {
            let norm: f32 = unit.row(r).iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "row {r}: {norm}");
        }
        // On the raw lengths the three long rows take clusters of their own.
        let x = long.to_tensor(&Device::Cpu).unwrap();
        let raw = kmeans(&x, &long, &options).unwrap();
        assert!(nmi(&raw) < 0.9, "{}", nmi(&raw));
    }

    #[test]
    fn agreement_of_known_labellings() {
        assert_eq!(agreement(&[0, 0, 1, 1], &[1, 1, 0, 0]), (1.0, 1.0));
        let (nmi, ari) = agreement(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]);
        // scikit-learn: normalized_mutual_info_score 0.5158, adjusted_rand_score 0.2424
        assert!((nmi - 0.5158).abs() < 1e-3, "{nmi}");
        assert!((ari - 0.2424).abs() < 1e-3, "{ari}");
    }

    #[test]
    fn more_clusters_than_distinct_points_do_not_fail() {
        let m = Matrix::new(vec![1.0, 1.0, 1.0, 1.0, 5.0, 5.0], 3, 2);
        let x = m.to_tensor(&Device::Cpu).unwrap();
        let r = kmeans(
            &x,
            &m,
            &KMeansOptions {
                k: 3,
                iterations: 10,
                inits: 2,
                tolerance: 0.0,
                seed: 0,
                init: Init::PlusPlus,
            },
        )
        .unwrap();
        assert!(r.inertia.abs() < 1e-6);
    }
}
