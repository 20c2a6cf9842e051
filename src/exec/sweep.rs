//! Running a sweep: each trial is a whole run ([`super::run`]) into its own
//! folder under the sweep's output (`trial-001`, …), one after another; a
//! trial that finished records `trial.json` beside its results, so a killed
//! sweep continues where it stopped (`resume`) and trials run as separate
//! invocations (`SweepOptions::only`, a scheduler's way to spread them over
//! machines) are collected by the next one. The trials are ranked by the
//! sweep's objective at their last epoch; `best` links to the best finished
//! trial, a run folder a `base` workflow can name.

use crate::paths::ShowPath;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::metrics::{epoch_rows, EvalMetrics};
use super::pictures::{esc, fmt_tick, svg_open, ticks};
use super::{folder, Event, RunError, RunOptions, StopRule};
use crate::spec::{fmt_float, Num};
use crate::sweep::{Metric, Objective, Sweep};
use crate::workflow::{Eval, ImageSource, Workflow};

/// The file a trial's folder holds once the trial is done.
pub const TRIAL_FILE: &str = "trial.json";
/// What a sweep writes at the top of its folder.
pub const SWEEP_OUTPUTS: [&str; 5] = [
    "sweep.json",
    "results.csv",
    "report.html",
    "pictures",
    "best",
];

/// How to run a sweep.
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// Each trial's run options (`resume` continues the sweep, `fresh`
    /// clears it first; `stop_early` is the sweep's own).
    pub run: RunOptions,
    /// Run this trial alone (0-based), as one invocation of several.
    pub only: Option<usize>,
}

/// How a trial ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Trained every epoch; its model, embeddings and steps are in its folder.
    Finished,
    /// Stopped by the median rule; its folder holds its checkpoint and metrics.
    Stopped,
    /// Its loss or outputs stopped being finite numbers.
    Diverged,
}

/// A done trial, as `trial.json` records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    pub name: String,
    pub values: Vec<(String, Num)>,
    /// The seed it trained with (the workflow's, plus its repeat's number).
    #[serde(default)]
    pub seed: u64,
    pub status: TrialStatus,
    /// Epochs trained.
    pub epochs: u64,
    /// The objective at the last epoch trained, with its 95% interval when
    /// the metric has one.
    pub objective: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<(f64, f64)>,
    /// The objective after each epoch (`null` where it was not measured).
    pub curve: Vec<Option<f64>>,
    /// Why it stopped or diverged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What `trial.json` holds: the outcome and what the trial trained with, so
/// a resumed sweep never counts a trial of another workflow.
#[derive(Serialize, Deserialize)]
struct TrialRecord {
    outcome: TrialOutcome,
    /// What training depends on: another one refuses `--resume`.
    basis: serde_json::Value,
    /// What comes after training (the steps, the unseen images): another
    /// one runs the trial again from its trained model.
    #[serde(default)]
    after: serde_json::Value,
    /// `basis` and `after` with every path named relative to the workflow's
    /// folder, through `..` where it must: the same after the workflow's
    /// folder moved together with data beside it (absent from earlier
    /// versions' records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relative: Option<(serde_json::Value, serde_json::Value)>,
}

/// What a sweep leaves behind.
#[derive(Clone, Debug, Serialize)]
pub struct SweepSummary {
    pub output: PathBuf,
    pub objective: Objective,
    /// The done trials, best first (finished ones by objective, then the others).
    pub ranked: Vec<TrialOutcome>,
    /// Trials not done: not run by this invocation, or running elsewhere.
    pub pending: Vec<String>,
    /// The best finished trial's folder (with repeats: the best repeat of
    /// the best candidate).
    pub best: Option<PathBuf>,
    /// With `repeats`: each candidate's repeats together, best first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateResult>,
}

/// A candidate trained with several seeds (`repeats`), as the ranking sees it.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateResult {
    pub values: Vec<(String, Num)>,
    /// Its trials done, in their order.
    pub trials: Vec<String>,
    /// Its finished trials that reported the objective.
    pub finished: usize,
    /// The mean of their objectives, with the lowest and the highest.
    pub mean: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// The objective's value of an epoch, with its interval when it has one.
pub fn objective_value(
    metric: Metric,
    train_loss: f32,
    eval: &EvalMetrics,
) -> Option<(f64, Option<(f64, f64)>)> {
    let plain = |x: Option<f32>| x.map(|v| (v as f64, None));
    let judged =
        |j: &Option<Box<crate::steps::judge::Judged>>,
         pick: fn(&crate::steps::judge::Judged) -> crate::steps::judge::Interval| {
            j.as_deref().map(|j| {
                let i = pick(j);
                (i.value, Some((i.low, i.high)))
            })
        };
    use crate::steps::judge::Judged as J;
    let value = match metric {
        Metric::Accuracy => plain(eval.accuracy),
        Metric::MeanAveragePrecision => plain(eval.mean_average_precision),
        Metric::F1 => plain(eval.f1),
        Metric::EvalLoss => plain(eval.loss),
        Metric::TrainLoss => plain(Some(train_loss)),
        Metric::MapAtR => judged(&eval.embeddings, |j: &J| j.map_at_r),
        Metric::PrecisionAt1 => judged(&eval.embeddings, |j: &J| j.precision_at_1),
        Metric::RPrecision => judged(&eval.embeddings, |j: &J| j.r_precision),
        Metric::Nmi => judged(&eval.embeddings, |j: &J| j.nmi),
        Metric::Ami => judged(&eval.embeddings, |j: &J| j.ami),
        Metric::UnseenMapAtR => judged(&eval.unseen, |j: &J| j.map_at_r),
        Metric::UnseenPrecisionAt1 => judged(&eval.unseen, |j: &J| j.precision_at_1),
        Metric::UnseenRPrecision => judged(&eval.unseen, |j: &J| j.r_precision),
        Metric::UnseenNmi => judged(&eval.unseen, |j: &J| j.nmi),
        Metric::UnseenAmi => judged(&eval.unseen, |j: &J| j.ami),
    };
    value.filter(|(v, _)| v.is_finite())
}

/// How a record names paths: relative to the workflow's folder where they
/// lie inside it, else absolute (this version's `trial.json`); relative to
/// it wherever they lie (its `relative` record); or resolved by the file
/// system (earlier versions').
#[derive(Clone, Copy)]
enum Naming {
    Workflow,
    Relative,
    Resolved,
}

impl Naming {
    fn namer(self, workflow: &Workflow) -> Box<dyn Fn(&PathBuf) -> PathBuf> {
        match self {
            Naming::Workflow => {
                let names = crate::paths::FromWorkflow::new(&workflow.base_dir);
                Box::new(move |p| names.name(p))
            }
            Naming::Relative => {
                let names = crate::paths::FromWorkflow::relative(&workflow.base_dir);
                Box::new(move |p| names.name(p))
            }
            Naming::Resolved => {
                Box::new(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            }
        }
    }
}

/// Whether a record of what a trial trained with is what the workflow
/// gives it now, its paths named either way.
fn trained_with(record: &TrialRecord, workflow: &Workflow, trial: &Workflow) -> bool {
    [Naming::Workflow, Naming::Resolved]
        .into_iter()
        .any(|n| record.basis == basis(workflow, trial, n))
        || record
            .relative
            .as_ref()
            .is_some_and(|(b, _)| *b == basis(workflow, trial, Naming::Relative))
}

/// Whether a record of what came after a trial's training is what the
/// workflow gives it now, its paths named any of the ways.
fn same_after(record: &TrialRecord, workflow: &Workflow) -> bool {
    [Naming::Workflow, Naming::Resolved]
        .into_iter()
        .any(|n| record.after == after(workflow, n))
        || record
            .relative
            .as_ref()
            .is_some_and(|(_, a)| *a == after(workflow, Naming::Relative))
}

/// What a trial trains with, as `trial.json` records it.
fn basis(workflow: &Workflow, trial: &Workflow, naming: Naming) -> serde_json::Value {
    #[derive(Serialize)]
    struct Basis<'a> {
        template: &'a str,
        hyper: &'a crate::hyper::Hyper,
        data: &'a crate::workflow::DataSpec,
        dataset: Option<&'a crate::workflow::DatasetSummary>,
        seed: u64,
    }
    // Paths named the same from any folder, and after the workflow's folder
    // moved with its data: the same sweep.
    let real = naming.namer(workflow);
    let source = |s: &ImageSource| match s {
        ImageSource::Folder(p) => ImageSource::Folder(real(p)),
        ImageSource::Manifest(p) => ImageSource::Manifest(real(p)),
    };
    let d = &workflow.data;
    let data = crate::workflow::DataSpec {
        train: source(&d.train),
        eval: match &d.eval {
            Eval::Images(s) => Eval::Images(source(s)),
            other => other.clone(),
        },
        weights: d.weights.as_ref().map(&real),
        unseen: d.unseen.as_ref().map(source),
        augment: d.augment,
    };
    // The images the checker counted (concepts and their sizes): a trial
    // done on other data is another sweep's.
    let dataset = workflow
        .dataset
        .as_ref()
        .map(|d| crate::workflow::DatasetSummary {
            unseen: None,
            ..d.clone()
        });
    serde_json::to_value(Basis {
        template: &workflow.template.name,
        hyper: &trial.hyper,
        data: &crate::workflow::DataSpec {
            unseen: None,
            ..data
        },
        dataset: dataset.as_ref(),
        seed: trial.seed,
    })
    .unwrap_or_default()
}

/// A trial done with other values (or data) than the workflow now gives it
/// is another sweep's: refused, saying what changed.
fn refuse_other(
    record: &TrialRecord,
    workflow: &Workflow,
    trial: &Workflow,
    name: &str,
    path: PathBuf,
) -> Result<(), RunError> {
    if trained_with(record, workflow, trial) {
        return Ok(());
    }
    let now = basis(workflow, trial, Naming::Workflow);
    let changed = crate::changed::trial_changes(&record.basis, &now);
    Err(RunError::Resume {
        path,
        message: format!(
            "{name} was done with other values than this workflow gives it:\n  {}\n\
             restore them to continue, or run with `--fresh` to start the sweep over",
            changed.join("\n  ")
        ),
    })
}

/// What a trial does after training, as `trial.json` records it: its steps
/// (typed values, not where they are written) and its unseen images.
fn after(workflow: &Workflow, naming: Naming) -> serde_json::Value {
    #[derive(Serialize)]
    struct After<'a> {
        steps: Vec<(&'a str, &'a crate::hyper::StepParams)>,
        unseen: Option<PathBuf>,
        /// The unseen images and concepts the checker counted.
        unseen_counted: Option<(usize, usize)>,
    }
    let unseen = workflow
        .data
        .unseen
        .as_ref()
        .map(|u| naming.namer(workflow)(u.path()));
    serde_json::to_value(After {
        steps: workflow
            .steps
            .iter()
            .map(|s| (s.name.as_str(), &s.typed))
            .collect(),
        unseen,
        unseen_counted: workflow.dataset.as_ref().and_then(|d| d.unseen),
    })
    .unwrap_or_default()
}

fn read_record(path: &Path) -> Result<Option<TrialRecord>, RunError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RunError::Resume {
                path: path.to_path_buf(),
                message: format!(
                "it cannot be read ({e}); remove it to run the trial again, or run with `--fresh`"
            ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RunError::io(path)(e)),
    }
}

/// Runs the sweep of `workflow` (which must have one), calling `on_event`
/// with each trial's progress.
pub fn run(
    workflow: &Workflow,
    options: &SweepOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<SweepSummary, RunError> {
    let Some(sweep) = workflow.sweep.as_ref() else {
        return Err(RunError::Unsupported(
            "this workflow has no `sweep` block".into(),
        ));
    };
    let run = &options.run;
    if run.resume && run.fresh {
        return Err(RunError::Unsupported(
            "`--resume` continues the sweep and `--fresh` clears it: choose one".into(),
        ));
    }
    let out = &workflow.output;
    let n = sweep.trials.len();
    if let Some(i) = options.only.filter(|&i| i >= n) {
        return Err(RunError::Unsupported(format!(
            "this sweep has {n} trials: trial {} is not one of them (`--trial` counts from 1)",
            i + 1
        )));
    }
    // One invocation collects a sweep at a time; a trial run alone locks only its folder.
    let _owner = match options.only {
        None => Some(super::owner::lock(out)?),
        Some(_) => {
            folder::create(out)?;
            None
        }
    };
    // A run of a workflow without a sweep: its report and pictures would be
    // overwritten by the sweep's.
    let run_here: Vec<&str> = ["plan.json", "checkpoint.safetensors", "model.safetensors"]
        .into_iter()
        .filter(|f| out.join(f).exists())
        .collect();
    if !run_here.is_empty() {
        return Err(RunError::Unsupported(format!(
            "`{}` holds a run of its own ({}), not a sweep's trials: give the sweep another \
             `output`, or move that run away",
            out.shown(),
            run_here.join(", ")
        )));
    }
    if options.only.is_none() {
        best_is_ours(out)?;
    }
    let trials: Vec<Workflow> = (0..n).filter_map(|i| workflow.trial(i)).collect();
    let wanted: Vec<usize> = match options.only {
        Some(i) => vec![i],
        None => (0..n).collect(),
    };
    // Trials another process runs now: never cleared, never run twice.
    let mut held = Vec::new();
    let mut busy: Vec<usize> = Vec::new();
    for &i in &wanted {
        let folder = &trials[i].output;
        if !folder.is_dir() {
            continue;
        }
        match super::owner::lock(folder) {
            Ok(owner) => held.push(owner),
            Err(e @ RunError::Busy { .. }) if options.only.is_some() || run.fresh => return Err(e),
            Err(RunError::Busy { .. }) => busy.push(i),
            Err(e) => return Err(e),
        }
    }
    if !run.resume && !run.fresh {
        let previous: Vec<&str> = wanted
            .iter()
            .filter(|i| !busy.contains(i))
            .map(|&i| &trials[i])
            .filter(|t| t.output.join(TRIAL_FILE).exists() || t.output.join("plan.json").exists())
            .map(|t| t.output.file_name().and_then(|n| n.to_str()).unwrap_or("?"))
            .collect();
        if !previous.is_empty() {
            return Err(RunError::Occupied {
                path: out.clone(),
                found: format!("the sweep's trials {}", previous.join(", ")),
            });
        }
    }
    if run.fresh {
        clear(out, options.only.map(|i| &trials[i]), on_event)?;
    } else if options.only.is_some() {
        // A trial run alone joins the trials done before: they must be of
        // this sweep (its data, its values), or the ranking would mix two.
        for (t, spec) in trials.iter().zip(&sweep.trials) {
            let path = t.output.join(TRIAL_FILE);
            if let Some(record) = read_record(&path)? {
                refuse_other(&record, workflow, t, &spec.name, path)?;
            }
        }
    }
    drop(held);
    for &i in &wanted {
        let trial = &trials[i];
        let name = &sweep.trials[i].name;
        if busy.contains(&i) {
            on_event(&Event::TrialSkipped {
                name: name.clone(),
                why: "another process is running it".into(),
            });
            continue;
        }
        let record_path = trial.output.join(TRIAL_FILE);
        let previous = read_record(&record_path)?;
        if let Some(record) = &previous {
            refuse_other(record, workflow, trial, name, record_path.clone())?;
            let finished = record.outcome.status == TrialStatus::Finished;
            let same_after = same_after(record, workflow);
            if same_after || !finished {
                let outcome = refreshed(&record.outcome, &trial.output, sweep.objective.metric);
                on_event(&Event::TrialSkipped {
                    name: name.clone(),
                    why: format!("done before: {}", status_text(&outcome)),
                });
                continue;
            }
            // Its steps (or unseen images) changed: it runs again from its
            // trained model, which `resume` keeps.
        }
        let outcome = match run_trial(workflow, sweep, i, trial, run, on_event) {
            Ok(o) => o,
            // Another invocation took it meanwhile: leave it to that one.
            Err(RunError::Busy { pid, .. }) if options.only.is_none() => {
                on_event(&Event::TrialSkipped {
                    name: name.clone(),
                    why: match pid {
                        Some(p) => format!("running in process {p}"),
                        None => "running elsewhere".into(),
                    },
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let record = TrialRecord {
            outcome: outcome.clone(),
            basis: basis(workflow, trial, Naming::Workflow),
            after: after(workflow, Naming::Workflow),
            relative: Some((
                basis(workflow, trial, Naming::Relative),
                after(workflow, Naming::Relative),
            )),
        };
        folder::write_json(&record_path, &record)?;
        on_event(&Event::TrialEnded { outcome });
    }
    let summary = collect(workflow, sweep, &trials)?;
    if options.only.is_none() {
        write_results(workflow, sweep, &summary)?;
    }
    Ok(summary)
}

/// Runs one trial into its folder, the median rule watching it.
fn run_trial(
    workflow: &Workflow,
    sweep: &Sweep,
    i: usize,
    trial: &Workflow,
    run: &RunOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<TrialOutcome, RunError> {
    let spec = &sweep.trials[i];
    on_event(&Event::TrialStarted {
        name: spec.name.clone(),
        index: i + 1,
        trials: sweep.trials.len(),
        values: spec.describe(),
        objective: sweep.objective.metric,
    });
    let objective = sweep.objective;
    let stop_early = sweep.early_stop.map(|rule| {
        // The finished trials' objective after each epoch, read now.
        let curves: Vec<Vec<Option<f64>>> = (0..sweep.trials.len())
            .filter(|&j| j != i)
            .filter_map(|j| workflow.trial(j))
            .filter_map(|t| {
                let r = read_record(&t.output.join(TRIAL_FILE)).ok().flatten()?;
                (r.outcome.status == TrialStatus::Finished)
                    .then(|| refreshed(&r.outcome, &t.output, objective.metric).curve)
            })
            .collect();
        StopRule(Arc::new(move |epoch, train_loss, eval: &EvalMetrics| {
            let (value, _) = objective_value(objective.metric, train_loss, eval)
                .unwrap_or((f64::NAN, None));
            let others: Vec<f64> = curves
                .iter()
                .filter_map(|c| c.get(epoch as usize - 1).copied().flatten())
                .collect();
            rule.stops(&objective, epoch, value, &others).then(|| {
                format!(
                    "{} {:.4} after epoch {epoch}, worse than the median {:.4} of {} finished trials",
                    objective.metric.name(),
                    value,
                    crate::sweep::median(&others),
                    others.len()
                )
            })
        }))
    });
    // A trial killed after an epoch continues from its checkpoint; one
    // killed before has trained nothing and starts over (the sweep's `fresh`
    // cleared both).
    let trained = trial.output.join("checkpoint.safetensors").exists()
        || trial.output.join("model.safetensors").exists();
    let started = trial.output.join("plan.json").exists();
    let options = RunOptions {
        resume: trained && !run.fresh,
        fresh: run.fresh || (started && !trained),
        stop_early,
        ..run.clone()
    };
    let values: Vec<(String, Num)> = spec
        .values
        .iter()
        .map(|(n, v)| (n.to_string(), *v))
        .collect();
    let mut reason = None;
    let result = super::run(trial, &options, &mut |e| {
        if let Event::StoppedEarly { reason: r, .. } = e {
            reason = Some(r.clone());
        }
        on_event(e)
    });
    let (status, epochs, message) = match result {
        Ok(summary) => match summary.stopped_early {
            Some(epoch) => (TrialStatus::Stopped, epoch, reason),
            None => (TrialStatus::Finished, summary.epochs, None),
        },
        Err(RunError::Diverged { epoch, step, loss }) => (
            TrialStatus::Diverged,
            0,
            Some(format!(
                "the loss became {loss} at epoch {epoch}, step {step}"
            )),
        ),
        Err(RunError::NotFinite { epoch, what }) => (
            TrialStatus::Diverged,
            0,
            Some(if epoch > 0 {
                format!("{what} were not finite numbers after epoch {epoch}")
            } else {
                format!("{what} were not finite numbers")
            }),
        ),
        // A trial's checkpoint of other values: the sweep's way out is `--fresh`.
        Err(RunError::Resume { path, message }) => {
            return Err(RunError::Resume {
                path,
                message: message.replace(
                    super::START_OVER,
                    "run the sweep with `--fresh` to start it over",
                ),
            })
        }
        Err(e) => return Err(e),
    };
    // The objective after each epoch and at the last, as a resumed sweep
    // reads it again.
    let mut outcome = refreshed(
        &TrialOutcome {
            name: spec.name.clone(),
            values,
            seed: spec.seed,
            status,
            epochs,
            objective: None,
            interval: None,
            curve: Vec::new(),
            message,
        },
        &trial.output,
        objective.metric,
    );
    if status == TrialStatus::Diverged {
        // The epochs it finished before its numbers stopped being finite.
        outcome.epochs = outcome.curve.len() as u64;
    }
    Ok(outcome)
}

/// A done trial's objective read again from its `metrics.jsonl`: the sweep's
/// objective may have changed since the trial recorded it.
fn refreshed(outcome: &TrialOutcome, out: &Path, metric: Metric) -> TrialOutcome {
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    let rows = epoch_rows(&log);
    let mut last = rows
        .last()
        .filter(|_| outcome.status != TrialStatus::Diverged)
        .and_then(|r| objective_value(metric, r.train_loss, &r.eval));
    // A finished trial's unseen figures are `unseen.json`'s: they are judged
    // again when its unseen images change, its last epoch's are not.
    if metric.needs() == crate::sweep::Needs::Unseen && outcome.status == TrialStatus::Finished {
        #[derive(Deserialize)]
        struct Unseen {
            judged: Option<Box<crate::steps::judge::Judged>>,
        }
        let judged = std::fs::read_to_string(out.join("unseen.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Unseen>(&t).ok())
            .and_then(|u| u.judged);
        let eval = EvalMetrics {
            unseen: judged,
            ..EvalMetrics::default()
        };
        last = objective_value(metric, f32::NAN, &eval);
    }
    TrialOutcome {
        curve: rows
            .iter()
            .map(|r| objective_value(metric, r.train_loss, &r.eval).map(|(v, _)| v))
            .collect(),
        objective: last.map(|(v, _)| v),
        interval: last.and_then(|(_, i)| i),
        ..outcome.clone()
    }
}

fn status_text(o: &TrialOutcome) -> String {
    match (o.status, o.objective) {
        (TrialStatus::Finished, Some(v)) => format!("finished, {v:.4}"),
        (TrialStatus::Finished, None) => "finished".into(),
        (TrialStatus::Stopped, _) => format!("stopped after epoch {}", o.epochs),
        (TrialStatus::Diverged, _) => "diverged".into(),
    }
}

/// Removes a previous sweep's outputs: its own files and each trial
/// folder's run outputs and `trial.json` (only `trial`'s, for one trial).
fn clear(
    out: &Path,
    trial: Option<&Workflow>,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), RunError> {
    let remove = |path: &Path| -> Result<bool, RunError> {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(false);
        };
        let result = if meta.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        result.map_err(|error| RunError::Remove {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(true)
    };
    let folders: Vec<PathBuf> = match trial {
        Some(t) => vec![t.output.clone()],
        None => {
            let mut removed = Vec::new();
            for name in SWEEP_OUTPUTS {
                if remove(&out.join(name))? {
                    removed.push(name.to_string());
                }
            }
            if !removed.is_empty() {
                on_event(&Event::Cleared {
                    output: out.to_path_buf(),
                    removed,
                });
            }
            // Every trial folder, this sweep's or an earlier, larger one's.
            let mut found: Vec<PathBuf> = std::fs::read_dir(out)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| {
                            e.file_name()
                                .to_str()
                                .is_some_and(|n| n.starts_with("trial-"))
                        })
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            found
        }
    };
    for f in folders {
        let mut removed = Vec::new();
        for name in super::OUTPUTS.iter().chain(&[TRIAL_FILE]) {
            if remove(&f.join(name))? {
                removed.push(name.to_string());
            }
        }
        if !removed.is_empty() {
            on_event(&Event::Cleared {
                output: f.clone(),
                removed,
            });
        }
        // Left when empty (no lock file, nothing of the user's).
        let _ = std::fs::remove_dir(&f);
    }
    Ok(())
}

/// Every done trial of the sweep, ranked.
fn collect(
    workflow: &Workflow,
    sweep: &Sweep,
    trials: &[Workflow],
) -> Result<SweepSummary, RunError> {
    let mut done = Vec::new();
    let mut pending = Vec::new();
    for (spec, t) in sweep.trials.iter().zip(trials) {
        match read_record(&t.output.join(TRIAL_FILE))? {
            Some(r) if trained_with(&r, workflow, t) => {
                done.push(refreshed(&r.outcome, &t.output, sweep.objective.metric))
            }
            _ => pending.push(spec.name.clone()),
        }
    }
    let objective = sweep.objective;
    let rank = |o: &TrialOutcome| match (o.status, o.objective) {
        (TrialStatus::Finished, Some(_)) => 0,
        (TrialStatus::Finished, None) => 1,
        (TrialStatus::Stopped, _) => 2,
        (TrialStatus::Diverged, _) => 3,
    };
    done.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| match (a.objective, b.objective) {
                (Some(x), Some(y)) => {
                    let order = x.total_cmp(&y);
                    if objective.maximize {
                        order.reverse()
                    } else {
                        order
                    }
                }
                _ => std::cmp::Ordering::Equal,
            })
    });
    let mut candidates = Vec::new();
    if sweep.repeats > 1 {
        // Candidates by the mean of their finished repeats; the trials in
        // their candidate's order, each candidate's best first.
        let of = |name: &str| {
            sweep
                .trials
                .iter()
                .find(|t| t.name == name)
                .map_or(usize::MAX, |t| t.candidate)
        };
        let mut by: std::collections::BTreeMap<usize, Vec<&TrialOutcome>> = Default::default();
        for o in &done {
            by.entry(of(&o.name)).or_default().push(o);
        }
        for outcomes in by.values() {
            let scores: Vec<f64> = outcomes
                .iter()
                .filter(|o| rank(o) == 0)
                .filter_map(|o| o.objective)
                .collect();
            let mean =
                (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
            candidates.push(CandidateResult {
                values: outcomes[0].values.clone(),
                trials: outcomes.iter().map(|o| o.name.clone()).collect(),
                finished: scores.len(),
                mean,
                low: scores.iter().copied().reduce(f64::min),
                high: scores.iter().copied().reduce(f64::max),
            });
        }
        candidates.sort_by(|a, b| match (a.mean, b.mean) {
            (Some(x), Some(y)) => {
                let order = x.total_cmp(&y);
                if objective.maximize {
                    order.reverse()
                } else {
                    order
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => std::cmp::Ordering::Equal,
        });
        let place = |name: &str| {
            candidates
                .iter()
                .position(|c| c.trials.iter().any(|t| t == name))
                .unwrap_or(usize::MAX)
        };
        // Stable: within a candidate the order above (finished by objective first) stays.
        done.sort_by_key(|o| place(&o.name));
    }
    let best = match candidates.first() {
        Some(c) if c.mean.is_some() => done
            .iter()
            .find(|o| c.trials.contains(&o.name) && rank(o) == 0)
            .map(|o| workflow.output.join(&o.name)),
        Some(_) => None,
        None => done
            .first()
            .filter(|o| rank(o) == 0)
            .map(|o| workflow.output.join(&o.name)),
    };
    Ok(SweepSummary {
        output: workflow.output.clone(),
        objective,
        ranked: done,
        pending,
        best,
        candidates,
    })
}

/// `sweep.json`, `results.csv`, `report.html` with its pictures, and the
/// `best` link.
fn write_results(
    workflow: &Workflow,
    sweep: &Sweep,
    summary: &SweepSummary,
) -> Result<(), RunError> {
    let out = &workflow.output;
    let best_name = summary
        .best
        .as_ref()
        .and_then(|b| b.file_name())
        .map(|n| n.to_string_lossy().to_string());
    /// `sweep.json`: the sweep as checked and its ranking.
    #[derive(Serialize)]
    struct Record<'a> {
        workflow: &'a str,
        template: &'a str,
        #[serde(flatten)]
        sweep: &'a Sweep,
        ranked: &'a [TrialOutcome],
        #[serde(skip_serializing_if = "<[CandidateResult]>::is_empty")]
        candidates: &'a [CandidateResult],
        pending: &'a [String],
        best: Option<&'a str>,
    }
    folder::write_json(
        &out.join("sweep.json"),
        &Record {
            workflow: &workflow.name,
            template: &workflow.template.name,
            sweep,
            ranked: &summary.ranked,
            candidates: &summary.candidates,
            pending: &summary.pending,
            best: best_name.as_deref(),
        },
    )?;
    let mut csv = String::from("rank,trial");
    for p in &sweep.swept {
        let _ = write!(csv, ",{}", p.name);
    }
    let _ = writeln!(
        csv,
        ",seed,status,epochs,{},low,high",
        sweep.objective.metric.name()
    );
    for (r, o) in summary.ranked.iter().enumerate() {
        let _ = write!(csv, "{},{}", r + 1, o.name);
        for (_, v) in &o.values {
            let _ = write!(csv, ",{v}");
        }
        let _ = write!(csv, ",{}", o.seed);
        let f = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_default();
        let _ = writeln!(
            csv,
            ",{},{},{},{},{}",
            status_word(o.status),
            o.epochs,
            f(o.objective),
            f(o.interval.map(|i| i.0)),
            f(o.interval.map(|i| i.1))
        );
    }
    folder::write(&out.join("results.csv"), csv.as_bytes())?;
    let pictures: Vec<(String, String, String)> = sweep
        .swept
        .iter()
        .map(|p| {
            (
                format!("objective_{}.svg", p.name),
                format!("{} against {}", sweep.objective.metric.name(), p.name),
                objective_plot(
                    &p.name,
                    p.log,
                    sweep.objective,
                    &summary.ranked,
                    best_name.as_deref(),
                ),
            )
        })
        .collect();
    let html = results_table(sweep, summary);
    super::report::write_report(
        out,
        &format!("wfrun sweep: {}", workflow.name),
        &html,
        &pictures,
    )?;
    link_best(out, best_name.as_deref())
}

fn status_word(s: TrialStatus) -> &'static str {
    match s {
        TrialStatus::Finished => "finished",
        TrialStatus::Stopped => "stopped",
        TrialStatus::Diverged => "diverged",
    }
}

/// `out/best` is absent or the link a sweep writes (to one of its trials):
/// checked before any trial trains, so nothing of the user's is replaced.
fn best_is_ours(out: &Path) -> Result<(), RunError> {
    let link = out.join("best");
    let Ok(meta) = std::fs::symlink_metadata(&link) else {
        return Ok(());
    };
    let ours = meta.file_type().is_symlink()
        && std::fs::read_link(&link).is_ok_and(|t| {
            t.components().count() == 1 && t.to_string_lossy().starts_with("trial-")
        });
    if ours {
        return Ok(());
    }
    Err(RunError::Unsupported(format!(
        "`{}` is not the link a sweep writes to its best trial: move it away to let the sweep name its best",
        link.shown()
    )))
}

/// Points `out/best` at the best trial's folder (a relative link, replaced
/// whole), or removes it when no trial finished.
fn link_best(out: &Path, best: Option<&str>) -> Result<(), RunError> {
    let link = out.join("best");
    if let Ok(meta) = std::fs::symlink_metadata(&link) {
        if !meta.file_type().is_symlink() {
            return Err(RunError::Io {
                path: link,
                error: std::io::Error::other(
                    "it is not the link a sweep writes: move it away to let the sweep name its best trial",
                ),
            });
        }
    }
    let Some(best) = best else {
        return match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RunError::io(&link)(e)),
            _ => Ok(()),
        };
    };
    #[cfg(unix)]
    {
        let partial = out.join(".best.partial");
        let _ = std::fs::remove_file(&partial);
        std::os::unix::fs::symlink(best, &partial).map_err(RunError::io(&partial))?;
        std::fs::rename(&partial, &link).map_err(RunError::io(&link))?;
    }
    #[cfg(not(unix))]
    {
        let _ = best;
    }
    Ok(())
}

fn results_table(sweep: &Sweep, summary: &SweepSummary) -> String {
    let metric = sweep.objective.metric.name();
    let mut html = String::new();
    if !summary.candidates.is_empty() {
        let _ = write!(
            html,
            "<p>Each candidate trained {} times, with seeds {}–{}; candidates ranked by the mean of their finished repeats.</p>\n<table><tr><th>rank</th>",
            sweep.repeats,
            sweep.trials.first().map_or(0, |t| t.seed),
            sweep.trials.first().map_or(0, |t| t.seed) + sweep.repeats as u64 - 1
        );
        for p in &sweep.swept {
            let _ = write!(html, "<th>{}</th>", esc(&p.name));
        }
        let _ = writeln!(
            html,
            "<th>finished</th><th>mean {}</th><th>lowest – highest</th><th>trials</th></tr>",
            esc(metric)
        );
        for (r, c) in summary.candidates.iter().enumerate() {
            let _ = write!(html, "<tr><td>{}</td>", r + 1);
            for (_, v) in &c.values {
                let _ = write!(html, "<td>{v}</td>");
            }
            let _ = writeln!(
                html,
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.finished,
                c.mean.map(|v| format!("{v:.4}")).unwrap_or_default(),
                match (c.low, c.high) {
                    (Some(l), Some(h)) => format!("{l:.4} – {h:.4}"),
                    _ => String::new(),
                },
                esc(&c.trials.join(", "))
            );
        }
        html.push_str("</table>\n");
    }
    let _ = write!(
        html,
        "<p>{} of {} trials done, ranked by <b>{}</b> at each trial's last epoch{}.</p>\n<table><tr><th>rank</th><th>trial</th>",
        summary.ranked.len(),
        sweep.trials.len(),
        esc(&sweep.objective.describe()),
        if summary.pending.is_empty() {
            String::new()
        } else {
            format!("; not done: {}", esc(&summary.pending.join(", ")))
        }
    );
    for p in &sweep.swept {
        let _ = write!(html, "<th>{}</th>", esc(&p.name));
    }
    let _ = writeln!(
        html,
        "<th>seed</th><th>status</th><th>epochs</th><th>{}</th><th>95% interval</th></tr>",
        esc(metric)
    );
    for (r, o) in summary.ranked.iter().enumerate() {
        // Stopped and diverged trials write no report: no link to one.
        let cell = if summary.output.join(&o.name).join("report.html").is_file() {
            format!("<a href=\"{n}/report.html\">{n}</a>", n = esc(&o.name))
        } else {
            esc(&o.name)
        };
        let _ = write!(html, "<tr><td>{}</td><td>{cell}</td>", r + 1);
        for (_, v) in &o.values {
            let _ = write!(html, "<td>{v}</td>");
        }
        let _ = write!(html, "<td>{}</td>", o.seed);
        let _ = writeln!(
            html,
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            status_word(o.status),
            o.epochs,
            o.objective.map(|v| format!("{v:.4}")).unwrap_or_default(),
            o.interval
                .map(|(l, h)| format!("{l:.4} – {h:.4}"))
                .unwrap_or_default()
        );
    }
    html.push_str("</table>\n");
    html
}

/// The objective of each done trial against one swept parameter: finished
/// trials filled (the best ringed), stopped ones hollow at their last value.
fn objective_plot(
    name: &str,
    log: bool,
    objective: Objective,
    ranked: &[TrialOutcome],
    best: Option<&str>,
) -> String {
    let (w, h) = (560.0, 360.0);
    let (l, r, t, b) = (64.0, 540.0, 40.0, 310.0);
    let mut svg = svg_open(w, h);
    let points: Vec<(f64, f64, &TrialOutcome)> = ranked
        .iter()
        .filter_map(|o| {
            let x = o.values.iter().find(|(n, _)| n == name)?.1.as_f64();
            let y = o
                .objective
                .or_else(|| o.curve.iter().rev().find_map(|v| *v))?;
            Some((x, y, o))
        })
        .filter(|(x, y, _)| x.is_finite() && y.is_finite() && (!log || *x > 0.0))
        .collect();
    let _ = writeln!(
        svg,
        "<text x=\"{l}\" y=\"24\" font-size=\"14\" font-weight=\"bold\">{} against {}</text>",
        esc(objective.metric.name()),
        esc(name)
    );
    if points.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{l}\" y=\"{}\" fill=\"#777\">no trial reported {}</text>",
            (t + b) / 2.0,
            esc(objective.metric.name())
        );
        svg.push_str("</svg>\n");
        return svg;
    }
    // Values across two orders of magnitude or more read on a log axis.
    let (lo_x, hi_x) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, c), p| (a.min(p.0), c.max(p.0)));
    let log = log || (lo_x > 0.0 && hi_x / lo_x >= 100.0);
    let fx = |x: f64| if log { x.log10() } else { x };
    let (mut x0, mut x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, c), p| {
        (a.min(fx(p.0)), c.max(fx(p.0)))
    });
    let (mut y0, mut y1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, c), p| (a.min(p.1), c.max(p.1)));
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y1 - y0 < 1e-12 {
        y0 -= 0.05;
        y1 += 0.05;
    }
    let pad = |lo: f64, hi: f64| ((hi - lo) * 0.06, (hi - lo) * 0.06);
    let (px, _) = pad(x0, x1);
    let (py, _) = pad(y0, y1);
    let (x0, x1, y0, y1) = (x0 - px, x1 + px, y0 - py, y1 + py);
    let sx = |x: f64| l + (fx(x) - x0) / (x1 - x0) * (r - l);
    let sy = |y: f64| b - (y - y0) / (y1 - y0) * (b - t);
    let _ = writeln!(
        svg,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>",
        r - l,
        b - t
    );
    for v in ticks(y0, y1, 5) {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            l - 6.0,
            sy(v) + 4.0,
            fmt_tick(v)
        );
    }
    let x_ticks: Vec<f64> = if log {
        (x0.ceil() as i32..=x1.floor() as i32)
            .map(|e| 10f64.powi(e))
            .collect()
    } else {
        ticks(x0, x1, 5)
    };
    for v in x_ticks {
        let label = if log || (x1 - x0).abs() < 0.1 {
            fmt_float(v)
        } else {
            fmt_tick(v)
        };
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            sx(v),
            b + 16.0,
            label
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}{}</text>",
        (l + r) / 2.0,
        b + 36.0,
        esc(name),
        if log { " (log scale)" } else { "" }
    );
    for (x, y, o) in &points {
        let (fill, stroke) = match o.status {
            TrialStatus::Finished => ("#4e79a7", "#4e79a7"),
            _ => ("none", "#999"),
        };
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"><title>{}: {}</title></circle>",
            sx(*x),
            sy(*y),
            esc(&o.name),
            fmt_float(*y)
        );
        if best == Some(o.name.as_str()) {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"9\" fill=\"none\" stroke=\"#e15759\" stroke-width=\"2\"/>",
                sx(*x),
                sy(*y)
            );
        }
    }
    let _ = writeln!(
        svg,
        "<text x=\"{l}\" y=\"{}\" fill=\"#777\">filled: finished; hollow: stopped early (last value); ringed: best</text>",
        h - 6.0
    );
    svg.push_str("</svg>\n");
    svg
}
