//! Progress, as it happens: what a run reports through its callback.

use std::path::PathBuf;

use serde::Serialize;

use super::metrics::EvalMetrics;
use super::steps::StepOutcome;

/// Progress, as it happens.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        workflow: String,
        concepts: usize,
        train_images: usize,
        eval_images: usize,
        epochs: u64,
        steps_per_epoch: u64,
        first_epoch: u64,
        /// The cost model's estimate of an epoch's seconds on this machine
        /// (training and judging; none for a base model or without a
        /// measured throughput for the device).
        epoch_estimate_s: Option<f64>,
    },
    Step {
        epoch: u64,
        step: u64,
        steps: u64,
        loss: f32,
        learning_rate: f64,
        images_per_s: f64,
    },
    BadImage {
        path: PathBuf,
        reason: String,
    },
    /// Images whose shorter side is below `image_size`: they are upscaled.
    SmallImages {
        image_size: usize,
        count: usize,
        /// The smallest few: (path, width, height).
        smallest: Vec<(PathBuf, u32, u32)>,
        /// The median shorter side of all the images.
        median_side: u32,
        /// The largest valid `image_size` at most the median side, when it
        /// is below the one set: half the images would then not be upscaled.
        fitting_size: Option<usize>,
    },
    /// One epoch finished; also the line `metrics.jsonl` holds for it.
    Epoch {
        epoch: u64,
        /// The learning rate the epoch trained at.
        learning_rate: f64,
        /// Optimizer steps taken in the epoch (over the whole epoch when it
        /// was resumed part-way).
        steps: u64,
        /// Images trained on in the epoch.
        images: u64,
        train_loss: f32,
        eval: EvalMetrics,
        seconds: f64,
        /// Share of the epoch's time the network waited for decoded images.
        data_wait: f64,
    },
    /// Images embedded so far of `total` (read or found unreadable): the
    /// run's `split` ("training", "evaluation") or the images a model embeds.
    Embedding {
        split: &'static str,
        done: usize,
        total: usize,
    },
    /// A downstream step finished; its files are in `outcome.folder`.
    StepFinished {
        outcome: StepOutcome,
    },
    /// A downstream step could not run; the others still do.
    StepFailed {
        step: String,
        message: String,
    },
    /// `fresh`: a previous run's outputs (names in the run folder) were removed.
    Cleared {
        output: PathBuf,
        removed: Vec<String>,
    },
    Finished {
        output: PathBuf,
    },
    /// Training stopped after `epoch` of `epochs` (a sweep's median rule):
    /// no model is written, nothing is embedded.
    StoppedEarly {
        epoch: u64,
        epochs: u64,
        reason: String,
    },
    /// A sweep starts its trial `name`, the `index`-th (1-based) of `trials`.
    TrialStarted {
        name: String,
        index: usize,
        trials: usize,
        /// `batch_size = 32, per_item_lrate = 1e-05`.
        values: String,
        /// What ranks the trials (each epoch line can show it).
        objective: crate::sweep::Metric,
    },
    /// A sweep's trial was done before (or runs elsewhere): skipped.
    TrialSkipped {
        name: String,
        why: String,
    },
    /// A sweep's trial ended: finished, stopped early or diverged.
    TrialEnded {
        outcome: super::sweep::TrialOutcome,
    },
}
