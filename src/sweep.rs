//! Sweeps: the trials a `sweep { .. }` block asks for, the objective that
//! ranks them and the median stopping rule. Without candle: the checker
//! builds a [`Sweep`] (every candidate checked against its parameter's grid
//! as a written value is), the planner lists its trials, and `exec::sweep`
//! runs them, one run folder each.

use std::sync::Arc;

use serde::Serialize;

use crate::hyper::{Hyper, Loss};
use crate::spec::Num;
use crate::workflow::ResolvedParam;

/// A grid larger than this is an error: its trials could not be listed.
pub const MAX_GRID: u64 = 1_000_000;
/// Trials one sweep may run: more is an error (`trials = N` draws fewer).
pub const MAX_TRIALS: u64 = 10_000;
/// Values one parameter may take in a sweep.
pub const MAX_VALUES: usize = 1_000;

/// The settings of a `sweep` block besides the swept hyperparameters.
pub const SETTINGS: [(&str, &str); 5] = [
    (
        "trials",
        "how many candidates of the grid run, drawn at random from `seed`; default: every candidate",
    ),
    (
        "objective",
        "what ranks the trials: `maximize(METRIC)` or `minimize(METRIC)`, read from each trial's last epoch; default `maximize(map_at_r)`",
    ),
    (
        "early_stop",
        "`median(EPOCH)` or `median(EPOCH, TRIALS)`: from that epoch on, a trial worse than the median of the finished trials at the same epoch stops, once TRIALS finished trials (default 2) reported that epoch",
    ),
    (
        "seed",
        "which candidates `trials` draws; default the workflow's seed",
    ),
    (
        "repeats",
        "how many times each candidate trains, with the workflow's seed, the next one, …; candidates are ranked by the mean of their repeats; default 1",
    ),
];

/// Repeats a candidate may have.
pub const MAX_REPEATS: u64 = 100;

/// How values of a swept parameter are written.
pub const GENERATORS: [(&str, &str); 3] = [
    (
        "range",
        "`range(LOW, HIGH, STEP)`: LOW, LOW + STEP, … up to HIGH",
    ),
    (
        "log_range",
        "`log_range(LOW, HIGH, N)`: N values from LOW to HIGH evenly spaced on a log scale (rounded to whole numbers for an integer parameter)",
    ),
    ("values", "`values(A, B, ..)`: these values"),
];

/// One swept hyperparameter: its values in the order written.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweptParam {
    pub name: Arc<str>,
    pub values: Vec<Num>,
    /// 1-based line of its setting in the `sweep` block.
    pub line: usize,
    /// Written as `log_range(..)`: the report plots it on a log axis.
    pub log: bool,
}

/// One trial: a value for each swept parameter, and the hyperparameters it
/// trains with, typed (the other values are the `use` block's).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trial {
    /// `trial-001`, …: its run folder under the sweep's output.
    pub name: String,
    /// The swept parameters' values, in the `sweep` block's order.
    pub values: Vec<(Arc<str>, Num)>,
    /// Which candidate it is (0-based, in the order drawn) and with which
    /// seed it trains: the workflow's, plus the repeat's number.
    pub candidate: usize,
    pub seed: u64,
    #[serde(skip)]
    pub params: Vec<ResolvedParam>,
    #[serde(skip)]
    pub hyper: Hyper,
}

impl Trial {
    /// `batch_size = 32, per_item_lrate = 1e-05`.
    pub fn describe(&self) -> String {
        self.values
            .iter()
            .map(|(n, v)| format!("{n} = {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the trials are ranked by, read from each trial's last epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    MeanAveragePrecision,
    F1,
    EvalLoss,
    TrainLoss,
    MapAtR,
    PrecisionAt1,
    RPrecision,
    Nmi,
    Ami,
    UnseenMapAtR,
    UnseenPrecisionAt1,
    UnseenRPrecision,
    UnseenNmi,
    UnseenAmi,
}

/// What a metric needs of a trial to be reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// One concept per image (softmax or the angular margin).
    OneConcept,
    /// Sigmoid units.
    Sigmoid,
    /// `data { unseen = .. }`.
    Unseen,
}

impl Metric {
    /// Every metric: its name in the language, what it needs, whether more
    /// is better, and its documentation.
    pub const ALL: [(&'static str, Metric, Needs, bool, &'static str); 15] = [
        (
            "map_at_r",
            Metric::MapAtR,
            Needs::Nothing,
            true,
            "MAP@R of the held-out images' embeddings",
        ),
        (
            "precision_at_1",
            Metric::PrecisionAt1,
            Needs::Nothing,
            true,
            "precision@1 of the held-out images' embeddings",
        ),
        (
            "r_precision",
            Metric::RPrecision,
            Needs::Nothing,
            true,
            "R-precision of the held-out images' embeddings",
        ),
        (
            "nmi",
            Metric::Nmi,
            Needs::Nothing,
            true,
            "NMI of k-means on the held-out images' embeddings",
        ),
        (
            "ami",
            Metric::Ami,
            Needs::Nothing,
            true,
            "AMI of k-means on the held-out images' embeddings",
        ),
        (
            "accuracy",
            Metric::Accuracy,
            Needs::OneConcept,
            true,
            "the network's held-out accuracy (softmax, angular margin)",
        ),
        (
            "mean_average_precision",
            Metric::MeanAveragePrecision,
            Needs::Sigmoid,
            true,
            "the network's held-out mean average precision (sigmoid units)",
        ),
        (
            "f1",
            Metric::F1,
            Needs::Sigmoid,
            true,
            "the network's held-out micro F1 at 0.5 (sigmoid units)",
        ),
        (
            "eval_loss",
            Metric::EvalLoss,
            Needs::Nothing,
            false,
            "the loss on the held-out images",
        ),
        (
            "train_loss",
            Metric::TrainLoss,
            Needs::Nothing,
            false,
            "the last epoch's mean training loss",
        ),
        (
            "unseen_map_at_r",
            Metric::UnseenMapAtR,
            Needs::Unseen,
            true,
            "MAP@R of the unseen concepts' embeddings",
        ),
        (
            "unseen_precision_at_1",
            Metric::UnseenPrecisionAt1,
            Needs::Unseen,
            true,
            "precision@1 of the unseen concepts' embeddings",
        ),
        (
            "unseen_r_precision",
            Metric::UnseenRPrecision,
            Needs::Unseen,
            true,
            "R-precision of the unseen concepts' embeddings",
        ),
        (
            "unseen_nmi",
            Metric::UnseenNmi,
            Needs::Unseen,
            true,
            "NMI of k-means on the unseen concepts' embeddings",
        ),
        (
            "unseen_ami",
            Metric::UnseenAmi,
            Needs::Unseen,
            true,
            "AMI of k-means on the unseen concepts' embeddings",
        ),
    ];

    pub fn from_name(name: &str) -> Option<Metric> {
        Self::ALL
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|(_, m, ..)| *m)
    }

    fn entry(self) -> &'static (&'static str, Metric, Needs, bool, &'static str) {
        Self::ALL
            .iter()
            .find(|(_, m, ..)| *m == self)
            .unwrap_or(&Self::ALL[0])
    }

    pub fn name(self) -> &'static str {
        self.entry().0
    }

    pub fn needs(self) -> Needs {
        self.entry().2
    }

    /// Whether more is better.
    pub fn higher_is_better(self) -> bool {
        self.entry().3
    }

    /// Whether a trial training with `loss` reports it (`unseen`: whether the
    /// workflow names unseen images).
    pub fn reported(self, loss: &Loss, unseen: bool) -> bool {
        match self.needs() {
            Needs::Nothing => true,
            Needs::OneConcept => !matches!(loss, Loss::Sigmoid),
            Needs::Sigmoid => matches!(loss, Loss::Sigmoid),
            Needs::Unseen => unseen,
        }
    }
}

/// `maximize(METRIC)` or `minimize(METRIC)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Objective {
    pub metric: Metric,
    pub maximize: bool,
}

impl Objective {
    /// Whether `a` is better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.maximize {
            a > b
        } else {
            a < b
        }
    }

    /// `maximize(map_at_r)`.
    pub fn describe(&self) -> String {
        let goal = if self.maximize {
            "maximize"
        } else {
            "minimize"
        };
        format!("{goal}({})", self.metric.name())
    }
}

impl Default for Objective {
    fn default() -> Objective {
        Objective {
            metric: Metric::MapAtR,
            maximize: true,
        }
    }
}

/// The median stopping rule: from epoch `after` on, a trial whose objective
/// is worse than the median of the finished trials' at the same epoch stops,
/// once `min_trials` finished trials reported that epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MedianRule {
    pub after: u64,
    pub min_trials: usize,
}

/// Finished trials a median needs, unless the rule says.
pub const MEDIAN_MIN_TRIALS: usize = 2;

impl MedianRule {
    /// Whether a trial at 1-based `epoch` with objective `value` stops, given
    /// the finished trials' objectives at that epoch (`others`).
    pub fn stops(&self, objective: &Objective, epoch: u64, value: f64, others: &[f64]) -> bool {
        if epoch < self.after || others.len() < self.min_trials.max(1) {
            return false;
        }
        let median = median(others);
        !value.is_finite() || objective.better(median, value)
    }
}

/// The median of `values` (not empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A checked sweep: the trials to run and how to rank them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sweep {
    pub swept: Vec<SweptParam>,
    /// Candidates in the whole grid.
    pub grid: u64,
    /// The trials, a sample of the grid when `trials` is below its size.
    pub trials: Vec<Trial>,
    pub objective: Objective,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<MedianRule>,
    /// Which candidates a sample draws.
    pub seed: u64,
    /// Trials of each candidate, each with its own seed.
    pub repeats: usize,
}

/// The name of the `i`-th trial (0-based) of `n`: `trial-001`.
pub fn trial_name(i: usize, n: usize) -> String {
    let width = n.to_string().len().max(3);
    format!("trial-{:0width$}", i + 1)
}

/// The grid's candidate `index`: one value index per parameter, the first
/// parameter varying slowest.
pub fn candidate(mut index: u64, sizes: &[usize]) -> Vec<usize> {
    let mut out = vec![0; sizes.len()];
    for (slot, &size) in out.iter_mut().zip(sizes).rev() {
        let size = size.max(1) as u64;
        *slot = (index % size) as usize;
        index /= size;
    }
    out
}

/// Which candidates of a grid of `grid` run: all of them in grid order, or
/// the first `wanted` of a random order drawn from `seed` (a Fisher–Yates
/// shuffle done only as far as needed). Draws are nested: raising `wanted`
/// keeps the candidates drawn before, in the same order, and adds others.
pub fn chosen(grid: u64, wanted: Option<u64>, seed: u64) -> Vec<u64> {
    match wanted {
        // Even all of the grid is drawn in the seed's order when `trials`
        // is written: raising it to the grid's size keeps the earlier draws.
        Some(n) => {
            let n = n.min(grid);
            let mut rng = crate::data::Rng::new(seed ^ 0x5EED_5EE9);
            // Position → candidate, for the positions the shuffle moved.
            let mut moved: std::collections::HashMap<u64, u64> = Default::default();
            (0..n)
                .map(|i| {
                    let j = i + rng.next_u64() % (grid - i);
                    let at_j = moved.get(&j).copied().unwrap_or(j);
                    let at_i = moved.get(&i).copied().unwrap_or(i);
                    moved.insert(j, at_i);
                    at_j
                })
                .collect()
        }
        None => (0..grid).collect(),
    }
}

/// `n` values from `lo` to `hi`, evenly spaced on a log scale (both ends
/// included), rounded to 10 significant digits so `1e-4` reads as written.
pub fn log_values(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if n < 2 {
        return vec![lo];
    }
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| {
            let x = (a + (b - a) * i as f64 / (n - 1) as f64).exp();
            format!("{x:.9e}").parse().unwrap_or(x)
        })
        .collect()
}

/// `lo, lo + step, …` up to `hi` (a float step tolerates rounding at `hi`).
pub fn range_values(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if step.is_nan() || step <= 0.0 || !lo.is_finite() || !hi.is_finite() {
        return out;
    }
    let mut i = 0u64;
    loop {
        let x = lo + step * i as f64;
        if x > hi + step * 1e-9 || out.len() > MAX_VALUES {
            break;
        }
        out.push(format!("{x:.12e}").parse().unwrap_or(x));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_vary_the_last_parameter_fastest() {
        let all: Vec<Vec<usize>> = (0..6).map(|i| candidate(i, &[2, 3])).collect();
        assert_eq!(
            all,
            [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]].map(|a| a.to_vec())
        );
    }

    #[test]
    fn a_sample_is_distinct_nested_and_seeded() {
        let a = chosen(1000, Some(10), 3);
        assert_eq!(a.len(), 10);
        let distinct: std::collections::BTreeSet<u64> = a.iter().copied().collect();
        assert!(distinct.len() == 10 && a.iter().all(|&c| c < 1000));
        // Asking for more keeps the first draws, in order.
        assert_eq!(chosen(1000, Some(15), 3)[..10], a[..]);
        let all = chosen(20, Some(19), 1);
        let distinct: std::collections::BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 19);
        assert_eq!(a, chosen(1000, Some(10), 3));
        assert_ne!(a, chosen(1000, Some(10), 4));
        let mut whole = chosen(4, Some(9), 0);
        assert_eq!(
            whole[..2],
            chosen(4, Some(2), 0)[..],
            "nested up to the grid"
        );
        whole.sort();
        assert_eq!(whole, [0, 1, 2, 3]);
        assert_eq!(chosen(5, None, 0), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn generated_values_read_as_written() {
        assert_eq!(log_values(1e-5, 1e-3, 3), [1e-5, 1e-4, 1e-3]);
        assert_eq!(range_values(16.0, 70.0, 16.0), [16.0, 32.0, 48.0, 64.0]);
        assert_eq!(range_values(0.1, 0.3, 0.1), [0.1, 0.2, 0.3]);
        assert!(range_values(1.0, 2.0, 0.0).is_empty());
    }

    #[test]
    fn the_median_rule_waits_for_its_epoch_and_trials() {
        let rule = MedianRule {
            after: 2,
            min_trials: 2,
        };
        let up = Objective::default();
        assert!(!rule.stops(&up, 1, 0.1, &[0.5, 0.6]), "before `after`");
        assert!(!rule.stops(&up, 2, 0.1, &[0.5]), "one finished trial");
        assert!(rule.stops(&up, 2, 0.5, &[0.5, 0.7]), "below the median 0.6");
        assert!(!rule.stops(&up, 2, 0.6, &[0.5, 0.7]), "at the median");
        assert!(rule.stops(&up, 3, f64::NAN, &[0.5, 0.7]));
        let down = Objective {
            metric: Metric::TrainLoss,
            maximize: false,
        };
        assert!(rule.stops(&down, 2, 0.9, &[0.5, 0.7]));
        assert!(!rule.stops(&down, 2, 0.4, &[0.5, 0.7]));
    }
}
