//! Runs a workflow's downstream steps on the embeddings and writes their
//! outputs under `steps/NAME/` in the run folder: `head.rs`, `clustering.rs`,
//! `search.rs`, one step kind each, with its typed parameters.

mod clustering;
mod head;
mod search;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::folder;
use super::metrics::Embedded;
use super::pictures::QueryRow;
use super::results::StepMetrics;
use super::RunError;
use crate::hyper::StepParams;
use crate::models::TemplateNet;
use crate::plan::PlannedStep;
use crate::spec::StepKindId;

/// What one step did: its metrics (as written to its `metrics.json`).
#[derive(Clone, Debug, Serialize)]
pub struct StepOutcome {
    pub name: String,
    pub kind: StepKindId,
    pub seconds: f64,
    pub metrics: StepMetrics,
    /// Where its files are.
    pub folder: PathBuf,
}

/// What a step leaves for the pictures.
#[derive(Default)]
pub(in crate::exec) struct Extras {
    /// Clustering: each row's cluster (training rows, then evaluation rows).
    pub assignments: Option<Vec<u32>>,
    /// Search: a few queries with their neighbours.
    pub grid: Option<Vec<QueryRow>>,
}

/// Everything the steps read.
pub(in crate::exec) struct StepInputs<'a> {
    /// The workflow's seed (the head's initialisation and order).
    pub seed: u64,
    pub concepts: &'a [String],
    pub train: &'a Embedded,
    pub eval: &'a Embedded,
    pub net: &'a TemplateNet,
    pub size: usize,
    pub workers: usize,
    pub device: &'a Device,
    pub out: &'a Path,
}

pub(super) fn step_error(step: &PlannedStep, message: impl std::fmt::Display) -> RunError {
    RunError::Step {
        step: step.name.clone(),
        message: message.to_string(),
    }
}

/// Runs one step.
pub(in crate::exec) fn run_step(
    inputs: &StepInputs,
    step: &PlannedStep,
) -> Result<(StepOutcome, Extras), RunError> {
    let started = Instant::now();
    let folder = inputs.out.join("steps").join(&step.name);
    // A step's folder holds this run's results only.
    let _ = std::fs::remove_dir_all(&folder);
    folder::create(&folder)?;
    let mut extras = Extras::default();
    let metrics = match &step.typed {
        StepParams::ClassifierHead(p) => {
            StepMetrics::ClassifierHead(head::run(inputs, step, p, &folder)?)
        }
        StepParams::Clustering(p) => {
            StepMetrics::Clustering(clustering::run(inputs, step, p, &folder, &mut extras)?)
        }
        StepParams::VisualSearch(p) => {
            StepMetrics::VisualSearch(search::run(inputs, step, p, &folder, &mut extras)?)
        }
    };
    folder::write_json(&folder.join("metrics.json"), &metrics)?;
    let outcome = StepOutcome {
        name: step.name.clone(),
        kind: step.kind,
        seconds: started.elapsed().as_secs_f64(),
        metrics,
        folder,
    };
    Ok((outcome, extras))
}

/// The embeddings of a split: its name in the files, and the rows.
pub(super) fn split_of<'a>(inputs: &StepInputs<'a>, train: bool) -> (&'static str, &'a Embedded) {
    if train {
        ("train", inputs.train)
    } else {
        ("eval", inputs.eval)
    }
}
