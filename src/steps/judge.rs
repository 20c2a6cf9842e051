//! Embeddings judged as the metric-learning field judges them (Musgrave et
//! al., "A Metric Learning Reality Check", 2020; pytorch-metric-learning's
//! `AccuracyCalculator`): every image is a query against all the others
//! (cosine), with
//!
//! - **precision@1**: its nearest other image shares its concept;
//! - **R-precision**: of its R nearest, where R is the number of other images
//!   of its concept, the share of its concept;
//! - **MAP@R**: the mean over the first R of precision at each rank holding
//!   an image of its concept, divided by R;
//! - **recall@k** (k = 1, 2, 4, 8): some image of its concept is among its
//!   k nearest;
//!
//! and the images clustered by k-means with k = the number of concepts:
//! **NMI** and **AMI** (arithmetic-mean normalisation, scikit-learn's
//! default) of the clusters against the concepts. k-means clusters the
//! embeddings scaled to unit length, the directions the retrieval figures
//! compare (as `../shared/peer` and `scripts/judge_pixels.py` cluster them):
//! on their raw lengths a few images far longer than the rest (a softmax
//! template's pooled features can run to over 140 times the median length) take
//! clusters of their own and leave most images in one.
//!
//! A query whose concept has no other image is left out of the retrieval
//! figures, as pytorch-metric-learning leaves out "lone" queries. Each figure
//! comes with a 95% interval: a percentile bootstrap of the queries for the
//! retrieval figures; for NMI and AMI, whose resamples with replacement are
//! biased upwards by the repeated images, ± 1.96 standard deviations of
//! half-samples drawn without replacement. `tests/judge.rs` checks the values against fixtures that
//! `scripts/make_judge_fixtures.py` computed with pytorch-metric-learning and
//! scikit-learn.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::kmeans::{agreement, kmeans, Contingency, Init, KMeansOptions};
use super::search::{search_unit, unit_matrix, Neighbours};
use super::Matrix;
use crate::data::Rng;

/// Queries searched at once.
const QUERY_BLOCK: usize = 256;

/// The ranks recall@k is reported at.
pub const RECALL_AT: [usize; 4] = [1, 2, 4, 8];

/// A figure and its bootstrap 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    fn exact(value: f64) -> Interval {
        Interval {
            value,
            low: value,
            high: value,
        }
    }
}

/// The figures of [`judge`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    /// Images judged.
    pub images: usize,
    /// Their concepts.
    pub concepts: usize,
    /// Queries in the retrieval figures: images whose concept has another image.
    pub queries: usize,
    pub precision_at_1: Interval,
    pub r_precision: Interval,
    pub map_at_r: Interval,
    /// recall@k at [`RECALL_AT`], in that order.
    pub recall_at_k: Vec<RecallAt>,
    pub nmi: Interval,
    pub ami: Interval,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallAt {
    pub k: usize,
    #[serde(flatten)]
    pub at: Interval,
}

#[derive(Clone, Debug)]
pub struct JudgeOptions {
    /// Bootstrap resamples of the retrieval figures.
    pub resamples: usize,
    /// Bootstrap resamples of NMI and AMI (each recomputes the expected
    /// mutual information, the costly part).
    pub cluster_resamples: usize,
    /// Seeds k-means and the resampling.
    pub seed: u64,
}

impl Default for JudgeOptions {
    fn default() -> JudgeOptions {
        JudgeOptions {
            resamples: 1000,
            cluster_resamples: 200,
            seed: 0,
        }
    }
}

/// Each query's retrieval figures ([`per_query`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerQuery {
    pub precision_at_1: Vec<f64>,
    pub r_precision: Vec<f64>,
    pub map_at_r: Vec<f64>,
    /// `recall[j][q]`: recall@[`RECALL_AT`]`[j]` of query `q`.
    pub recall: Vec<Vec<f64>>,
}

/// Judges `x` (`images × dim`, any device) against `labels` (one concept per
/// image). `None` with fewer than two images or fewer than two concepts
/// (there is nothing to tell apart), when no concept has two images (no
/// query has a neighbour to find), or when a value is not a finite number
/// (there are no neighbours to rank).
pub fn judge(x: &Tensor, labels: &[usize], options: &JudgeOptions) -> Result<Option<Judged>> {
    let n = labels.len();
    let concepts = distinct(labels);
    if n < 2 || concepts < 2 {
        return Ok(None);
    }
    // Each image's neighbours, as far as its concept's size needs.
    let mut sizes = vec![0usize; labels.iter().max().map_or(0, |m| m + 1)];
    for &l in labels {
        sizes[l] += 1;
    }
    let deepest = sizes
        .iter()
        .map(|s| s.saturating_sub(1))
        .max()
        .unwrap_or(0)
        .max(RECALL_AT[RECALL_AT.len() - 1])
        .min(n - 1);
    // Queries in blocks, so that only a block's neighbours are held at once.
    let cpu = x.to_device(&candle_core::Device::Cpu)?;
    // A value that is not a finite number leaves its row's unit values not
    // finite either (an infinite length divides infinities).
    let unit = unit_matrix(&cpu)?;
    if unit.data.iter().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let mut q = PerQuery::default();
    for start in (0..n).step_by(QUERY_BLOCK) {
        let len = QUERY_BLOCK.min(n - start);
        let block = Matrix::new(
            unit.data[start * unit.cols..(start + len) * unit.cols].to_vec(),
            len,
            unit.cols,
        );
        let neighbours = search_unit(&block, &unit, deepest, &|r| Some(start + r));
        q.extend(per_query(&neighbours, &labels[start..start + len], labels));
    }
    if q.precision_at_1.is_empty() {
        // Every concept has a single image: no query has a neighbour to find.
        return Ok(None);
    }
    let mut rng = Rng::new(options.seed ^ 0x6a75_6467_6500_0000);
    let mean_ci = |v: &[f64], rng: &mut Rng| bootstrap_mean(v, options.resamples, rng);

    // The unit rows, where the retrieval figures measured their neighbours.
    let unit_x = unit.to_tensor(x.device())?;
    let clusters = kmeans(
        &unit_x,
        &unit,
        &KMeansOptions {
            k: concepts,
            iterations: 300,
            inits: 3,
            tolerance: 1e-4,
            seed: options.seed,
            init: Init::PlusPlus,
        },
    )?;
    let assigned: Vec<usize> = clusters.assignments.iter().map(|&c| c as usize).collect();
    let (nmi, ami) = clustering_intervals(labels, &assigned, options.cluster_resamples, &mut rng);
    Ok(Some(Judged {
        images: n,
        concepts,
        queries: q.precision_at_1.len(),
        precision_at_1: mean_ci(&q.precision_at_1, &mut rng),
        r_precision: mean_ci(&q.r_precision, &mut rng),
        map_at_r: mean_ci(&q.map_at_r, &mut rng),
        recall_at_k: RECALL_AT
            .iter()
            .zip(&q.recall)
            .map(|(&k, v)| RecallAt {
                k,
                at: mean_ci(v, &mut rng),
            })
            .collect(),
        nmi,
        ami,
    }))
}

fn distinct(labels: &[usize]) -> usize {
    let mut seen: Vec<usize> = labels.to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

impl PerQuery {
    fn extend(&mut self, other: PerQuery) {
        self.precision_at_1.extend(other.precision_at_1);
        self.r_precision.extend(other.r_precision);
        self.map_at_r.extend(other.map_at_r);
        self.recall.resize(RECALL_AT.len(), Vec::new());
        for (mine, theirs) in self.recall.iter_mut().zip(other.recall) {
            mine.extend(theirs);
        }
    }
}

/// The retrieval figures of each query that is not alone in its concept,
/// given each query's neighbours among the `index` images (best first, the
/// query itself excluded, at least as many as the other images of its
/// concept). Every query is one of the index images.
pub fn per_query(neighbours: &[Neighbours], queries: &[usize], index: &[usize]) -> PerQuery {
    let mut sizes = vec![0usize; index.iter().max().map_or(0, |m| m + 1)];
    for &l in index {
        sizes[l] += 1;
    }
    let mut out = PerQuery {
        recall: vec![Vec::new(); RECALL_AT.len()],
        ..PerQuery::default()
    };
    for (found, &label) in neighbours.iter().zip(queries) {
        let r = sizes.get(label).map_or(0, |s| s.saturating_sub(1));
        if r == 0 {
            continue;
        }
        let same = |i: usize| {
            found
                .get(i)
                .is_some_and(|&(j, _)| index[j as usize] == label)
        };
        out.precision_at_1.push(f64::from(u8::from(same(0))));
        let (mut hits, mut ap) = (0usize, 0.0);
        for rank in 0..r {
            if same(rank) {
                hits += 1;
                ap += hits as f64 / (rank + 1) as f64;
            }
        }
        out.r_precision.push(hits as f64 / r as f64);
        out.map_at_r.push(ap / r as f64);
        for (j, &k) in RECALL_AT.iter().enumerate() {
            out.recall[j].push(f64::from(u8::from((0..k).any(same))));
        }
    }
    out
}

/// The mean of `values` with a percentile bootstrap 95% interval.
pub fn bootstrap_mean(values: &[f64], resamples: usize, rng: &mut Rng) -> Interval {
    let n = values.len();
    if n == 0 {
        return Interval::exact(0.0);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    percentiles(mean, &mut means)
}

fn percentiles(value: f64, draws: &mut [f64]) -> Interval {
    if draws.is_empty() {
        return Interval::exact(value);
    }
    draws.sort_by(f64::total_cmp);
    let at = |p: f64| draws[((draws.len() - 1) as f64 * p).round() as usize];
    Interval {
        value,
        low: at(0.025).min(value),
        high: at(0.975).max(value),
    }
}

/// NMI and AMI of `clusters` against `labels`, each with a bootstrap interval
/// over resampled (label, cluster) pairs.
fn clustering_intervals(
    labels: &[usize],
    clusters: &[usize],
    resamples: usize,
    rng: &mut Rng,
) -> (Interval, Interval) {
    let n = labels.len();
    let nmi = agreement(labels, clusters).0;
    let ami = adjusted_mutual_information(labels, clusters);
    // E[MI] costs about Σ min(class size, cluster size) over the pairs: with
    // many large concepts, fewer resamples keep judging within seconds.
    let t = Contingency::of(labels, clusters);
    let cost: usize = t
        .rows
        .iter()
        .flat_map(|&a| t.cols.iter().map(move |&b| a.min(b)))
        .sum();
    let resamples = resamples.min(200_000_000 / cost.max(1));
    // Half-samples without replacement: a resample with replacement repeats
    // images, and repeats agree with themselves, so it biases mutual
    // information upwards (its percentiles sat above the estimate). Half of
    // n drawn without replacement varies as much as the whole set does
    // (variance σ²/(n/2) × (1 − 1/2) = σ²/n), so their spread, centred on the
    // estimate, gives the interval.
    let half = n / 2;
    let (mut nmis, mut amis) = (Vec::new(), Vec::new());
    let mut order: Vec<usize> = (0..n).collect();
    if half >= 2 {
        for _ in 0..resamples {
            rng.shuffle(&mut order);
            let a: Vec<usize> = order[..half].iter().map(|&i| labels[i]).collect();
            let b: Vec<usize> = order[..half].iter().map(|&i| clusters[i]).collect();
            nmis.push(agreement(&a, &b).0);
            amis.push(adjusted_mutual_information(&a, &b));
        }
    }
    (
        centred(nmi, &nmis, 0.0, 1.0),
        centred(ami, &amis, -1.0, 1.0),
    )
}

/// `value ± 1.96 × (the draws' standard deviation)`, within `[min, max]`.
fn centred(value: f64, draws: &[f64], min: f64, max: f64) -> Interval {
    let value = value.clamp(min, max);
    if draws.len() < 2 {
        return Interval::exact(value);
    }
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64;
    let half_width = 1.96 * var.sqrt();
    Interval {
        value,
        low: (value - half_width).clamp(min, max),
        high: (value + half_width).clamp(min, max),
    }
}

/// Adjusted mutual information of two labellings, arithmetic-mean
/// normalisation: `(MI - E[MI]) / (mean(H(a), H(b)) - E[MI])`, the expected
/// mutual information under the hypergeometric model of random labellings
/// with the same sizes (Vinh, Epps and Bailey, 2010), as scikit-learn's
/// `adjusted_mutual_info_score`.
pub fn adjusted_mutual_information(a: &[usize], b: &[usize]) -> f64 {
    let t = Contingency::of(a, b);
    let used = |sizes: &[usize]| sizes.iter().filter(|&&c| c > 0).count();
    // scikit-learn: one class and one cluster (or none) agree perfectly.
    let (ka, kb) = (used(&t.rows), used(&t.cols));
    if ka == kb && ka <= 1 {
        return 1.0;
    }
    // Labels of no item add nothing to E[MI] (their range of counts is empty).
    let emi = expected_mutual_information(&t.rows, &t.cols, t.n);
    let normaliser = (t.h_rows + t.h_cols) / 2.0;
    let mut denominator = normaliser - emi;
    // As scikit-learn: keep the sign, away from zero.
    denominator = if denominator < 0.0 {
        denominator.min(-f64::EPSILON)
    } else {
        denominator.max(f64::EPSILON)
    };
    (t.mi - emi) / denominator
}

/// E[MI] of random labellings with these class and cluster sizes.
fn expected_mutual_information(rows: &[usize], cols: &[usize], n: usize) -> f64 {
    // ln k! for k = 0..=n.
    let mut log_fact = vec![0.0f64; n + 1];
    for k in 1..=n {
        log_fact[k] = log_fact[k - 1] + (k as f64).ln();
    }
    let nf = n as f64;
    let mut emi = 0.0;
    for &a in rows {
        for &b in cols {
            let start = (a + b).saturating_sub(n).max(1);
            let end = a.min(b);
            if start > end {
                continue;
            }
            // The hypergeometric probability's parts that do not depend on nij.
            let fixed = log_fact[a] + log_fact[b] + log_fact[n - a] + log_fact[n - b] - log_fact[n];
            for nij in start..=end {
                let term = (nij as f64 / nf) * ((nf * nij as f64) / (a as f64 * b as f64)).ln();
                let log_p = fixed
                    - log_fact[nij]
                    - log_fact[a - nij]
                    - log_fact[b - nij]
                    - log_fact[n + nij - a - b];
                emi += term * log_p.exp();
            }
        }
    }
    emi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_hand_worked_ranking() {
        // Concepts 0 0 0 1 1 2 (concept 2 is a lone query, left out).
        let labels = [0, 0, 0, 1, 1, 2];
        // Image 0's neighbours: 3 (wrong), 1 (right), 2 (right): R = 2.
        // P@1 = 0, R-precision = 1/2, MAP@R = (1/2) / 2 = 0.25.
        let n = |ids: &[u32]| -> Neighbours { ids.iter().map(|&i| (i, 0.0)).collect() };
        let neighbours = vec![
            n(&[3, 1, 2, 4, 5]),
            n(&[0, 2, 3, 4, 5]),
            n(&[5, 4, 3, 1, 0]),
            n(&[4, 0, 1, 2, 5]),
            n(&[0, 1, 2, 5, 3]),
            n(&[0, 1, 2, 3, 4]),
        ];
        let q = per_query(&neighbours, &labels, &labels);
        assert_eq!(q.precision_at_1, [0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(q.r_precision, [0.5, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(q.map_at_r, [0.25, 1.0, 0.0, 1.0, 0.0]);
        // recall@2: image 0 finds 1 second; image 2's first two are wrong.
        assert_eq!(q.recall[1], [1.0, 1.0, 0.0, 1.0, 0.0]);
        // recall@4: image 2 finds 1 fourth; image 4 finds 3 fifth.
        assert_eq!(q.recall[2], [1.0, 1.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn clustering_intervals_are_centred_on_the_estimate() {
        // 25 concepts of two images, clusters half right: resampling with
        // replacement put this AMI at the bottom of its own interval.
        let labels: Vec<usize> = (0..50).map(|i| i / 2).collect();
        let mut rng = Rng::new(9);
        let clusters: Vec<usize> = labels
            .iter()
            .map(|&l| if rng.below(2) == 0 { l } else { rng.below(25) })
            .collect();
        let (nmi, ami) = clustering_intervals(&labels, &clusters, 200, &mut rng);
        for i in [nmi, ami] {
            assert!(i.low < i.value && i.value < i.high, "{i:?}");
            assert!(
                ((i.high - i.value) - (i.value - i.low)).abs() < 1e-9,
                "{i:?}"
            );
        }
    }

    #[test]
    fn a_concept_of_one_image_each_is_not_judged() {
        let x = Tensor::new(
            &[[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(judge(&x, &[0, 1, 2], &JudgeOptions::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn clusters_are_judged_on_directions_whatever_the_rows_lengths() {
        // Four concepts of 40 images, each near its own direction in 16-d.
        let (dim, per) = (16, 40);
        let mut rng = Rng::new(5);
        let mut normal = || rng.normal() as f32;
        let centres: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..dim).map(|_| normal()).collect())
            .collect();
        let labels: Vec<usize> = (0..4 * per).map(|i| i / per).collect();
        let rows: Vec<Vec<f32>> = labels
            .iter()
            .map(|&l| centres[l].iter().map(|c| c + 0.15 * normal()).collect())
            .collect();
        // The same directions at lengths of 1 to 2, and three images (of two
        // concepts) 150 times longer, as a softmax template's pooled
        // features can be.
        let mut lengths = Rng::new(6);
        let scaled: Vec<Vec<f32>> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let a = if [3, 4, 45].contains(&i) {
                    150.0
                } else {
                    1.0 + lengths.next_f64() as f32
                };
                r.iter().map(|v| v * a).collect()
            })
            .collect();
        let tensor = |rows: &[Vec<f32>]| {
            Tensor::from_vec(rows.concat(), (rows.len(), dim), &candle_core::Device::Cpu).unwrap()
        };
        let options = JudgeOptions::default();
        let plain = judge(&tensor(&rows), &labels, &options).unwrap().unwrap();
        let long = judge(&tensor(&scaled), &labels, &options).unwrap().unwrap();
        assert!(plain.nmi.value > 0.95, "{:?}", plain.nmi);
        assert!(
            (long.nmi.value - plain.nmi.value).abs() < 1e-9,
            "{:?}",
            long.nmi
        );
        assert!(
            (long.ami.value - plain.ami.value).abs() < 1e-9,
            "{:?}",
            long.ami
        );
        assert_eq!(long.map_at_r.value, plain.map_at_r.value);
    }

    #[test]
    fn embeddings_that_are_not_numbers_are_not_judged() {
        let x = Tensor::new(
            &[[1.0f32, 0.0], [f32::NAN, 1.0], [0.0, 1.0], [1.0, 0.1]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(judge(&x, &[0, 0, 1, 1], &JudgeOptions::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn ami_is_one_for_equal_labellings_and_near_zero_for_independent_ones() {
        let a: Vec<usize> = (0..300).map(|i| i % 3).collect();
        let renamed: Vec<usize> = a.iter().map(|&x| 2 - x).collect();
        assert!((adjusted_mutual_information(&a, &renamed) - 1.0).abs() < 1e-9);
        let mut rng = Rng::new(3);
        let random: Vec<usize> = (0..300).map(|_| rng.below(4)).collect();
        assert!(adjusted_mutual_information(&a, &random).abs() < 0.02);
    }

    #[test]
    fn ami_of_large_groups_matches_scikit_learn() {
        // A class and a cluster together larger than the set (80 + 90 > 100):
        // scikit-learn 1.9.1 gives 0.044084586424918935.
        let labels: Vec<usize> = (0..100).map(|i| usize::from(i >= 80)).collect();
        let clusters: Vec<usize> = (0..100)
            .map(|i| usize::from((70..80).contains(&i)))
            .collect();
        let ami = adjusted_mutual_information(&labels, &clusters);
        assert!((ami - 0.044084586424918935).abs() < 1e-12, "{ami}");
    }

    #[test]
    fn a_bootstrap_interval_holds_the_mean_and_narrows_with_more_queries() {
        let mut rng = Rng::new(1);
        let few: Vec<f64> = (0..20).map(|i| f64::from(i % 2 == 0)).collect();
        let many: Vec<f64> = (0..2000).map(|i| f64::from(i % 2 == 0)).collect();
        let a = bootstrap_mean(&few, 500, &mut rng);
        let b = bootstrap_mean(&many, 500, &mut rng);
        assert_eq!((a.value, b.value), (0.5, 0.5));
        assert!(a.low < 0.5 && a.high > 0.5);
        assert!(b.high - b.low < (a.high - a.low) / 4.0, "{a:?} {b:?}");
    }
}
