//! Running a checked workflow (feature `train`): read the images, train the
//! template's network as the plan says, evaluate after each epoch, embed the
//! images, run the steps, write the run folder.
//!
//! The run reads its hyperparameters from the typed [`Plan`] only (built from
//! the data it loaded); nothing here looks a parameter up by name. The
//! library reports progress through a callback ([`Event`]) and returns
//! errors; it never prints. The same seed on the CPU gives the same numbers:
//! weights are drawn from the seed ([`crate::models::init`]), the order of
//! each epoch and every crop come from (seed, epoch, image).

mod checkpoint;
mod error;
mod event;
mod folder;
#[cfg(feature = "lancedb")]
pub mod lance;
mod metrics;
pub mod model;
mod owner;
#[cfg(feature = "parquet")]
pub mod parquet;
mod pictures;
mod report;
pub mod results;
#[cfg(any(feature = "lancedb", feature = "parquet"))]
pub mod rows;
mod sets;
mod steps;
pub mod sweep;
mod train;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::Device;
use serde::Serialize;

use crate::plan::Plan;
use crate::workflow::Workflow;
use checkpoint::Naming;

pub use error::RunError;
pub use event::Event;
pub use metrics::EvalMetrics;
pub use model::Model;
pub use owner::{LOCK, OUTPUTS};
pub use results::StepMetrics;
pub use steps::StepOutcome;

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the run folder's last checkpoint.
    pub resume: bool,
    /// Clear a previous run's outputs from the run folder first (without it,
    /// or `resume`, a run refuses a folder that holds a checkpoint or model).
    pub fresh: bool,
    /// Set to stop after the current step; a checkpoint of the last finished
    /// epoch is kept and the run can be resumed.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Decoding threads (0: one per core).
    pub workers: usize,
    /// Decode every image before starting and stop on the first pass if any
    /// cannot be read, instead of skipping them as they come.
    pub fail_on_bad_images: bool,
    /// Asked after each epoch but the last: whether training stops there
    /// (a sweep's median rule). A stopped run writes no model.
    pub stop_early: Option<StopRule>,
}

/// Whether training stops after an epoch: called with the 1-based epoch,
/// its mean training loss and its evaluation, it returns why, or `None` to
/// go on.
#[derive(Clone)]
pub struct StopRule(pub Arc<StopFn>);

/// What a [`StopRule`] calls.
pub type StopFn = dyn Fn(u64, f32, &EvalMetrics) -> Option<String> + Send + Sync;

impl std::fmt::Debug for StopRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopRule")
    }
}

/// What a finished run leaves behind.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub output: PathBuf,
    pub epochs: u64,
    pub final_eval: Option<EvalMetrics>,
    pub bad_images: usize,
    /// The downstream steps that ran, in order.
    pub steps: Vec<StepOutcome>,
    /// Steps that could not run: (name, why).
    pub failed_steps: Vec<(String, String)>,
    /// Training stopped after this epoch ([`RunOptions::stop_early`]):
    /// nothing was embedded, no step ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<u64>,
}

/// The device a workflow asked for, as candle opens it.
pub fn open_device(device: crate::workflow::Device) -> Result<Device, RunError> {
    use crate::workflow::Device as Wanted;
    let opened = match device {
        Wanted::Cpu => Ok(Device::Cpu),
        Wanted::Cuda(n) => Device::new_cuda(n),
        Wanted::Metal(n) => Device::new_metal(n),
        Wanted::Auto if candle_core::utils::cuda_is_available() => Device::new_cuda(0),
        Wanted::Auto if candle_core::utils::metal_is_available() => Device::new_metal(0),
        Wanted::Auto => Ok(Device::Cpu),
    };
    opened.map_err(|e| {
        RunError::Unsupported(format!(
            "cannot open `{device}`: {e}; `device = cpu` runs anywhere"
        ))
    })
}

/// Runs `workflow`, calling `on_event` as it goes: plans it on the data it
/// finds, trains its template (or opens its base model), embeds the images,
/// runs the steps and writes the report.
pub fn run(
    workflow: &Workflow,
    options: &RunOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunSummary, RunError> {
    if options.resume && options.fresh {
        return Err(RunError::Unsupported(
            "`--resume` continues the run folder's training and `--fresh` clears it: choose one"
                .into(),
        ));
    }
    let device = open_device(workflow.device)?;
    // Held until the run returns: a second run on this folder is refused.
    let _owner = owner::lock(&workflow.output)?;
    owner::previous_results(&workflow.output, options)?;
    let data = sets::DataSets::load(workflow)?;
    let plan = Plan::with_data(workflow, data.found());
    let workers = match options.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // A base model's image size is its own: no other is advised.
    let size = plan.hyper.image_size;
    let sizes = Some(plan.hyper.image_sizes).filter(|_| plan.base.is_none());
    let contents = sets::survey(&data, size, sizes, options, workers, on_event)?;
    owner::start_fresh(&workflow.output, options, on_event)?;
    let out = &plan.output;
    folder::create(out)?;
    let dir = &workflow.base_dir;
    let basis = checkpoint::Bases {
        main: checkpoint::basis(&plan, &data, &contents, Naming::Workflow(dir)),
        relative: checkpoint::basis(&plan, &data, &contents, Naming::Relative(dir)),
        images: checkpoint::image_list(&data, &contents, Naming::Relative(dir)),
    };
    let as_read = || checkpoint::basis(&plan, &data, &contents, Naming::AsRead);
    write_plan(
        &plan,
        options.resume && workflow.base.is_none(),
        &basis,
        &as_read,
    )?;
    let cx = train::Context {
        workflow,
        options,
        workers,
        device: &device,
    };
    let mut bad_log = sets::BadLog::default();
    let trained = match &workflow.base {
        Some(base) => {
            on_event(&started_base(&plan, &data));
            train::open_base(base, &plan, &device)?
        }
        None => train::train(&cx, &plan, &data, &basis, &mut bad_log, on_event)?,
    };
    if let Some(epoch) = trained.stopped_early {
        return Ok(RunSummary {
            output: out.clone(),
            epochs: epoch,
            final_eval: trained.final_eval,
            bad_images: bad_log.count(),
            steps: Vec::new(),
            failed_steps: Vec::new(),
            stopped_early: Some(epoch),
        });
    }
    stop_if_asked(options, "embedding the images")?;
    let mut embed = |set, split| {
        let mut progress = |done, total| on_event(&Event::Embedding { split, done, total });
        metrics::embed(&trained.net, set, size, workers, &device, &mut progress)
    };
    let (train_emb, eval_emb) = (
        embed(&data.train, "training")?,
        embed(&data.eval, "evaluation")?,
    );
    all_finite(&train_emb, &eval_emb)?;
    bad_log.report(&train_emb.bad, on_event);
    bad_log.report(&eval_emb.bad, on_event);
    metrics::write_embeddings(&train_emb, &eval_emb, &data.concepts, out)?;
    let mut summary = RunSummary {
        output: out.clone(),
        epochs: trained.epochs,
        final_eval: trained.final_eval.clone(),
        bad_images: 0,
        steps: Vec::new(),
        failed_steps: Vec::new(),
        stopped_early: None,
    };
    if workflow.base.is_some() {
        // A base model's embeddings of the held-out images, judged as a
        // trained run's last epoch judges its own.
        let options = crate::steps::judge::JudgeOptions {
            seed: plan.seed,
            ..Default::default()
        };
        let judged = metrics::judge_embedded(&eval_emb, &options)?;
        if judged.is_some() {
            summary
                .final_eval
                .get_or_insert_with(EvalMetrics::default)
                .embeddings = judged;
        }
    }
    match &data.unseen {
        Some(unseen) => judge_unseen(
            &plan,
            &data,
            unseen,
            &trained,
            workers,
            &device,
            &mut summary,
            &mut bad_log,
            on_event,
        )?,
        // A resumed run that no longer names unseen images keeps no figures of them.
        None => match std::fs::remove_file(out.join("unseen.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RunError::Io {
                    path: out.join("unseen.json"),
                    error: e,
                })
            }
            _ => {}
        },
    }
    let inputs = steps::StepInputs {
        seed: plan.seed,
        concepts: &data.concepts,
        train: &train_emb,
        eval: &eval_emb,
        net: &trained.net,
        size,
        workers,
        device: &device,
        out,
    };
    let extras = run_steps(&plan, &inputs, options, &mut summary, on_event)?;
    summary.bad_images = bad_log.count();
    report::write(&plan, &data, [&train_emb, &eval_emb], &summary, &extras)?;
    on_event(&Event::Finished {
        output: out.clone(),
    });
    Ok(summary)
}

/// What a refused `--resume` says to do instead (a sweep says it its way).
pub(crate) const START_OVER: &str = "run with `--fresh` to start over";

/// Writes `plan.json`; resuming, first checks that the checkpoint was made
/// by the same training (a checkpoint continues only that). A checkpoint
/// of an earlier version named its paths as read (`as_read`): one that
/// matches so continues too, and its next save records `basis`.
fn write_plan(
    plan: &Plan,
    resuming: bool,
    basis: &checkpoint::Bases,
    as_read: &dyn Fn() -> String,
) -> Result<(), RunError> {
    let checkpoint = plan.output.join("checkpoint.safetensors");
    if resuming && checkpoint.exists() {
        let refuse = |message: String| RunError::Resume {
            path: checkpoint.clone(),
            message,
        };
        let recorded = checkpoint::recorded_basis(&checkpoint)
            .map_err(|e| refuse(format!("it cannot be read ({e})")))?
            .ok_or_else(|| {
                refuse(format!(
                    "it records no plan to compare this workflow with (an older wfrun made \
                         it): {START_OVER}"
                ))
            })?;
        // The record continues when it is what this run would record with
        // its paths named one of the ways a checkpoint names them (the
        // data beside the workflow's folder moved with it: `relative`; an
        // earlier version's record: as read), and is said against the way
        // that differs least.
        let relative = checkpoint::recorded_relative_basis(&checkpoint)
            .map_err(|e| refuse(format!("it cannot be read ({e})")))?;
        let fewer = |a: Vec<String>, b: Vec<String>| if b.len() < a.len() { b } else { a };
        let mut changes = crate::changed::changes(&recorded, &basis.main);
        if let (false, Some(r)) = (changes.is_empty(), &relative) {
            // On a tie, the record naming the data where it was: the
            // workflow's folder moved with data beside it (the relative
            // record), or away from data named absolutely (the main one),
            // and something else changed says only that.
            let moved_with = crate::changed::changes(r, &basis.relative);
            let fewer = moved_with.len() < changes.len();
            let tie = moved_with.len() == changes.len();
            if fewer
                || tie
                    && crate::changed::same_sources(r, &basis.relative)
                    && !crate::changed::same_sources(&recorded, &basis.main)
            {
                changes = moved_with;
            }
        }
        if !changes.is_empty() {
            changes = fewer(changes, crate::changed::changes(&recorded, &as_read()));
        }
        if !changes.is_empty() {
            // Which images, where the checkpoint lists those it trained on.
            if let Ok(Some(before)) = checkpoint::recorded_images(&checkpoint) {
                changes.extend(crate::changed::image_changes(&before, &basis.images));
            }
            return Err(refuse(format!(
                "the workflow or its data changed since it was made:\n  {}\n\
                 restore them to continue, or {START_OVER}",
                changes.join("\n  ")
            )));
        }
    }
    folder::write_json(&plan.output.join("plan.json"), plan)
}

/// Embeddings that are not finite numbers stop the run: nothing downstream
/// could use them.
fn all_finite(train: &metrics::Embedded, eval: &metrics::Embedded) -> Result<(), RunError> {
    for (split, e) in [("training", train), ("evaluation", eval)] {
        if !e.is_finite()? {
            return Err(RunError::NotFinite {
                epoch: 0,
                what: format!("the embeddings of the {split} images"),
            });
        }
    }
    Ok(())
}

/// After training, a request to stop (Ctrl-C) ends the run before the next
/// part.
fn stop_if_asked(options: &RunOptions, what: &str) -> Result<(), RunError> {
    match &options.cancel {
        Some(c) if c.load(std::sync::atomic::Ordering::SeqCst) => Err(RunError::Stopped {
            what: what.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A base workflow's start: nothing trains.
/// The embeddings judged on the images of unseen concepts by the final
/// model (the last epoch judged them when this run trained it; a base
/// model's, or a resumed finished run's, whose unseen images may have
/// changed since, are judged now), into `unseen.json` and the
/// summary; unreadable images are reported as they are met.
#[allow(clippy::too_many_arguments)]
fn judge_unseen(
    plan: &Plan,
    data: &sets::DataSets,
    unseen: &sets::Images,
    trained: &train::Trained,
    workers: usize,
    device: &Device,
    summary: &mut RunSummary,
    bad_log: &mut sets::BadLog,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), RunError> {
    let judged = match &trained.final_eval {
        Some(last_epoch) if trained.trained_last_epoch => last_epoch.unseen.clone(),
        _ => {
            let options = crate::steps::judge::JudgeOptions {
                seed: plan.seed,
                ..Default::default()
            };
            let size = plan.hyper.image_size;
            let (judged, bad) =
                metrics::judge_unseen(&trained.net, unseen, size, workers, device, &options)?;
            bad_log.report(&bad, on_event);
            judged
        }
    };
    let record = serde_json::json!({
        "unseen": plan.data.unseen.as_ref().map(|u| u.path()),
        "concepts": data.unseen_concepts,
        "listed": unseen.paths.len(),
        "judged": judged,
    });
    folder::write_json(&plan.output.join("unseen.json"), &record)?;
    summary
        .final_eval
        .get_or_insert_with(EvalMetrics::default)
        .unseen = judged;
    Ok(())
}

fn started_base(plan: &Plan, data: &sets::DataSets) -> Event {
    Event::Started {
        workflow: plan.workflow.clone(),
        concepts: data.concepts.len(),
        train_images: data.train.paths.len(),
        eval_images: data.eval.paths.len(),
        epochs: 0,
        steps_per_epoch: 0,
        first_epoch: 1,
        epoch_estimate_s: None,
    }
}

/// Runs each step of the plan. A step that cannot run is reported and the
/// others still run; a file that cannot be written stops the run.
fn run_steps(
    plan: &Plan,
    inputs: &steps::StepInputs,
    options: &RunOptions,
    summary: &mut RunSummary,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Vec<steps::Extras>, RunError> {
    let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    owner::remove_other_steps(inputs.out, &names)?;
    let mut extras = Vec::new();
    for step in &plan.steps {
        stop_if_asked(options, &format!("the step `{}`", step.name))?;
        match steps::run_step(inputs, step) {
            Ok((outcome, extra)) => {
                on_event(&Event::StepFinished {
                    outcome: outcome.clone(),
                });
                summary.steps.push(outcome);
                extras.push(extra);
            }
            Err(e @ RunError::Io { .. }) => return Err(e),
            Err(e) => {
                let message = match e {
                    RunError::Step { message, .. } => message,
                    other => other.to_string(),
                };
                // A step that did not run leaves no folder behind.
                let _ = std::fs::remove_dir_all(inputs.out.join("steps").join(&step.name));
                on_event(&Event::StepFailed {
                    step: step.name.clone(),
                    message: message.clone(),
                });
                summary.failed_steps.push((step.name.clone(), message));
            }
        }
    }
    // No `steps/` when no step ran.
    let _ = std::fs::remove_dir(inputs.out.join("steps"));
    Ok(extras)
}
