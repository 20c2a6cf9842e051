//! Running a checked workflow (feature `train`): read the images, train the
//! template's network, evaluate after each epoch, write the run folder.
//!
//! The library reports progress through a callback ([`Event`]) and returns
//! errors; it never prints. The same seed on the CPU gives the same numbers:
//! weights are drawn from the seed ([`crate::models::init`]), the order of
//! each epoch and every crop come from (seed, epoch, image).

mod metrics;
mod pictures;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use crate::data::images::{Job, Prefetch};
use crate::data::{split, Dataset, Rng};
use crate::models::optim::Sgd;
use crate::models::{init, weights, AngularMargin, NetConfig, Targets, TemplateNet};
use crate::plan::{learning_rate, Plan};
use crate::spec::Architecture;
use crate::workflow::{BaseModel, Eval, ImageSource, ModelMeta, Workflow};

pub use metrics::EvalMetrics;
pub use steps::StepOutcome;

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
    },
    Epoch {
        epoch: u64,
        train_loss: f32,
        eval: EvalMetrics,
        seconds: f64,
        /// Share of the epoch's time the network waited for decoded images.
        data_wait: f64,
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
    Finished {
        output: PathBuf,
    },
}

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the run folder's last checkpoint.
    pub resume: bool,
    /// Set to stop after the current step; a checkpoint of the last finished
    /// epoch is kept and the run can be resumed.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Decoding threads (0: one per core).
    pub workers: usize,
    /// Decode every image before starting and stop on the first pass if any
    /// cannot be read, instead of skipping them as they come.
    pub fail_on_bad_images: bool,
}

/// Why a run stopped.
#[derive(Debug)]
pub enum RunError {
    Data(crate::data::DataError),
    /// The loss became NaN or infinite.
    Diverged {
        epoch: u64,
        step: u64,
        loss: f32,
    },
    /// Stopped on request before `step` of `epoch`; a checkpoint of that point was saved.
    Cancelled {
        epoch: u64,
        step: u64,
    },
    Model(candle_core::Error),
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    Resume {
        path: PathBuf,
        message: String,
    },
    Unsupported(String),
    /// Images that cannot be read, found before the run started.
    BadImages(Vec<crate::data::images::BadImage>),
    /// A downstream step could not run.
    Step {
        step: String,
        message: String,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Data(e) => write!(f, "{e}"),
            RunError::Diverged { epoch, step, loss } => write!(
                f,
                "the loss became {loss} at epoch {epoch}, step {step}; try a smaller `per_item_lrate` \
                 (the last good checkpoint is kept)"
            ),
            RunError::Cancelled { epoch, step } => write!(
                f,
                "stopped before step {step} of epoch {epoch} and saved a checkpoint; `--resume` continues from there"
            ),
            RunError::Model(e) => write!(f, "{e}"),
            RunError::Io { path, error } => write!(f, "cannot write `{}`: {error}", path.display()),
            RunError::Resume { path, message } => write!(f, "cannot resume from `{}`: {message}", path.display()),
            RunError::Unsupported(m) => f.write_str(m),
            RunError::Step { step, message } => write!(f, "step `{step}`: {message}"),
            RunError::BadImages(bad) => {
                match bad.len() {
                    1 => write!(f, "an image cannot be read:")?,
                    n => write!(f, "{n} images cannot be read:")?,
                }
                for b in bad.iter().take(10) {
                    write!(f, "\n  {}: {}", b.path.display(), b.reason)?;
                }
                if bad.len() > 10 {
                    write!(f, "\n  and {} more", bad.len() - 10)?;
                }
                write!(
                    f,
                    "\nremove or replace them; without `--fail-on-bad-images` they are skipped and listed"
                )
            }
        }
    }
}

impl std::error::Error for RunError {}

impl From<candle_core::Error> for RunError {
    fn from(e: candle_core::Error) -> Self {
        RunError::Model(e)
    }
}

impl From<crate::data::DataError> for RunError {
    fn from(e: crate::data::DataError) -> Self {
        RunError::Data(e)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    weights::replace_atomically(path, |tmp| {
        std::fs::write(tmp, bytes)
            .map_err(|e| candle_core::Error::Msg(format!("cannot write `{}`: {e}", path.display())))
    })?;
    Ok(())
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
}

struct Images {
    paths: Arc<Vec<PathBuf>>,
    concepts: Vec<Vec<usize>>,
}

/// The unreadable images met so far: each is reported once, however often
/// an epoch or an embedding pass meets it.
#[derive(Default)]
struct BadLog {
    reported: std::collections::HashSet<PathBuf>,
}

impl BadLog {
    fn report(&mut self, bad: &[crate::data::images::BadImage], on_event: &mut dyn FnMut(&Event)) {
        for b in bad {
            if self.reported.insert(b.path.clone()) {
                on_event(&Event::BadImage {
                    path: b.path.clone(),
                    reason: b.reason.clone(),
                });
            }
        }
    }
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

/// The training and evaluation images of a workflow.
struct DataSets {
    /// The training data's concepts, in the order of the network's outputs.
    concepts: Vec<String>,
    multi_label: bool,
    train: Images,
    eval: Images,
}

impl DataSets {
    fn load(workflow: &Workflow) -> Result<DataSets, RunError> {
        let data = match &workflow.data.train {
            ImageSource::Folder(p) => Dataset::from_folder(p)?,
            ImageSource::Manifest(p) => Dataset::from_manifest(p)?,
        };
        let (train_idx, eval) = match &workflow.data.eval {
            Eval::Fraction(f) => {
                let (t, e) = split(data.samples.len(), *f, workflow.seed);
                (t, Images::select(&data, &e))
            }
            Eval::Images(src) => {
                let eval = match src {
                    ImageSource::Folder(p) => Dataset::from_folder(p)?,
                    ImageSource::Manifest(p) => Dataset::from_manifest(p)?,
                };
                (
                    (0..data.samples.len()).collect(),
                    Images::remap(&eval, &data.concepts),
                )
            }
        };
        Ok(DataSets {
            train: Images::select(&data, &train_idx),
            eval,
            multi_label: data.is_multi_label(),
            concepts: data.concepts,
        })
    }
}

/// Runs `workflow`, calling `on_event` as it goes: trains its template, or
/// embeds with its base model, then writes the embeddings.
pub fn run(
    workflow: &Workflow,
    options: &RunOptions,
    on_event: &mut dyn FnMut(&Event),
) -> Result<RunSummary, RunError> {
    let device = open_device(workflow.device)?;
    let sets = DataSets::load(workflow)?;
    let workers = if options.workers > 0 {
        options.workers
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    };
    survey_images(workflow, &sets, options, workers, on_event)?;
    let out = &workflow.output;
    std::fs::create_dir_all(out).map_err(|error| RunError::Io {
        path: out.clone(),
        error,
    })?;
    write(
        &out.join("plan.json"),
        serde_json::to_string_pretty(&Plan::new(workflow))
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let mut bad_log = BadLog::default();
    let (net, size, mut summary) = match &workflow.base {
        Some(base) => {
            let (net, size) = open_base(base, &device)?;
            on_event(&Event::Started {
                workflow: workflow.name.clone(),
                concepts: sets.concepts.len(),
                train_images: sets.train.paths.len(),
                eval_images: sets.eval.paths.len(),
                epochs: 0,
                steps_per_epoch: 0,
                first_epoch: 1,
            });
            let summary = RunSummary {
                output: out.clone(),
                epochs: 0,
                final_eval: None,
                bad_images: 0,
                steps: Vec::new(),
                failed_steps: Vec::new(),
            };
            (net, size, summary)
        }
        None => train(
            workflow,
            &sets,
            options,
            workers,
            &device,
            &mut bad_log,
            on_event,
        )?,
    };
    let train_emb = metrics::embed(&net, &sets.train, size, workers, &device)?;
    let eval_emb = metrics::embed(&net, &sets.eval, size, workers, &device)?;
    bad_log.report(&train_emb.bad, on_event);
    bad_log.report(&eval_emb.bad, on_event);
    metrics::write_embeddings(&train_emb, &eval_emb, &sets.concepts, out)?;
    let inputs = steps::StepInputs {
        workflow,
        concepts: &sets.concepts,
        train: &train_emb,
        eval: &eval_emb,
        net: &net,
        size,
        workers,
        device: &device,
        out,
    };
    let mut extras = Vec::new();
    for step in &workflow.steps {
        match steps::run_step(&inputs, step) {
            Ok((outcome, extra)) => {
                on_event(&Event::StepFinished {
                    outcome: outcome.clone(),
                });
                summary.steps.push(outcome);
                extras.push(extra);
            }
            // An unwritable run folder stops the run; a step that cannot run does not.
            Err(e @ RunError::Io { .. }) => return Err(e),
            Err(e) => {
                let message = match e {
                    RunError::Step { message, .. } => message,
                    other => other.to_string(),
                };
                on_event(&Event::StepFailed {
                    step: step.name.clone(),
                    message: message.clone(),
                });
                summary.failed_steps.push((step.name.clone(), message));
            }
        }
    }
    summary.bad_images = bad_log.reported.len();
    report(workflow, &sets, &train_emb, &eval_emb, &summary, &extras)?;
    on_event(&Event::Finished {
        output: out.clone(),
    });
    Ok(summary)
}

/// Draws the run's pictures and writes `report.html`.
fn report(
    workflow: &Workflow,
    sets: &DataSets,
    train: &metrics::Embedded,
    eval: &metrics::Embedded,
    summary: &RunSummary,
    extras: &[steps::Extras],
) -> Result<(), RunError> {
    let out = &workflow.output;
    let mut pics: Vec<(String, String, String)> = Vec::new();
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    if workflow.base.is_none() {
        if let Some(svg) = pictures::training_curves(&log) {
            pics.push(("training.svg".into(), "Training".into(), svg));
        }
    }
    let parts: Vec<Tensor> = [train, eval]
        .iter()
        .filter_map(|e| e.matrix.clone())
        .collect();
    if !parts.is_empty() {
        let all = Tensor::cat(&parts, 0)?;
        let points = pictures::pca_2d(&all, workflow.seed)?;
        let concepts: Vec<&Vec<usize>> = train.concepts.iter().chain(&eval.concepts).collect();
        let mut names = sets.concepts.clone();
        let unknown = names.len();
        if concepts.iter().any(|c| c.is_empty()) {
            names.push("no concept".into());
        }
        let groups: Vec<usize> = concepts
            .iter()
            .map(|c| c.first().copied().unwrap_or(unknown))
            .collect();
        pics.push((
            "embeddings_by_concept.svg".into(),
            "Embeddings by concept".into(),
            pictures::scatter("Embeddings coloured by concept", &points, &groups, &names),
        ));
        for (outcome, extra) in summary.steps.iter().zip(extras) {
            if let Some(a) = &extra.assignments {
                let groups: Vec<usize> = a.iter().map(|&c| c as usize).collect();
                let k = groups.iter().max().map_or(0, |m| m + 1);
                let names: Vec<String> = (0..k).map(|c| format!("cluster {c}")).collect();
                pics.push((
                    format!("clusters_{}.svg", outcome.name),
                    format!("Embeddings by cluster ({})", outcome.name),
                    pictures::scatter(
                        &format!("Embeddings coloured by cluster ({})", outcome.name),
                        &points,
                        &groups,
                        &names,
                    ),
                ));
            }
        }
    }
    for (outcome, extra) in summary.steps.iter().zip(extras) {
        if let Some(m) = outcome.metrics["eval"]["confusion"].as_array() {
            let matrix: Vec<Vec<usize>> = m
                .iter()
                .map(|row| {
                    row.as_array()
                        .map(|r| r.iter().map(|v| v.as_u64().unwrap_or(0) as usize).collect())
                        .unwrap_or_default()
                })
                .collect();
            pics.push((
                format!("confusion_{}.svg", outcome.name),
                format!("Confusion matrix ({})", outcome.name),
                pictures::confusion(
                    &format!("Held-out confusion matrix ({})", outcome.name),
                    &matrix,
                    &sets.concepts,
                ),
            ));
        }
        if let Some(rows) = &extra.grid {
            pics.push((
                format!("search_{}.svg", outcome.name),
                format!("Visual search ({})", outcome.name),
                pictures::search_grid(&format!("Nearest neighbours ({})", outcome.name), rows),
            ));
        }
    }
    let mut html = String::from("<table>\n");
    let mut row = |k: &str, v: String| {
        html.push_str(&format!("<tr><th>{k}</th><td>{v}</td></tr>\n"));
    };
    match &workflow.base {
        Some(b) => row("base model", b.weights.display().to_string()),
        None => row(
            "template",
            format!("{} ({} epochs)", workflow.template.name, summary.epochs),
        ),
    }
    row(
        "images",
        format!(
            "{} concepts; {} training, {} evaluation",
            sets.concepts.len(),
            train.rows(),
            eval.rows()
        ),
    );
    if let Some(e) = &summary.final_eval {
        let v = serde_json::to_value(e).unwrap_or_default();
        row("held-out, last epoch", pictures::metrics_text(&v));
    }
    for s in &summary.steps {
        let mut shown = s.metrics.clone();
        if let Some(o) = shown.as_object_mut() {
            o.remove("loss_per_epoch");
            o.remove("cluster_sizes");
            if let Some(e) = o.get_mut("eval").and_then(|e| e.as_object_mut()) {
                e.remove("confusion");
                e.remove("per_concept");
            }
        }
        row(&format!("step {}", s.name), pictures::metrics_text(&shown));
    }
    html.push_str("</table>");
    pictures::write_report(out, &format!("wfrun: {}", workflow.name), &html, &pics)
}

/// Reads every image's size from its header (or decodes it whole with
/// `fail_on_bad_images`): unreadable images stop the run up front with that
/// option, and images smaller than `image_size` are reported.
fn survey_images(
    workflow: &Workflow,
    sets: &DataSets,
    options: &RunOptions,
    workers: usize,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(), RunError> {
    let size = workflow.int("image_size").unwrap_or(0).max(0) as u32;
    let paths: Vec<PathBuf> = sets
        .train
        .paths
        .iter()
        .chain(sets.eval.paths.iter())
        .cloned()
        .collect();
    let found = crate::data::images::survey(&paths, workers, options.fail_on_bad_images);
    let mut bad = Vec::new();
    let mut sides = Vec::new();
    let mut small = Vec::new();
    for (path, r) in paths.iter().zip(found) {
        match r {
            Ok((w, h)) => {
                sides.push(w.min(h));
                if w.min(h) < size {
                    small.push((path.clone(), w, h));
                }
            }
            Err(e) => bad.push(e),
        }
    }
    if !small.is_empty() {
        sides.sort_unstable();
        small.sort_by_key(|(_, w, h)| (*w).min(*h));
        on_event(&Event::SmallImages {
            image_size: size as usize,
            count: small.len(),
            smallest: small.into_iter().take(5).collect(),
            median_side: sides[sides.len() / 2],
        });
    }
    if options.fail_on_bad_images && !bad.is_empty() {
        return Err(RunError::BadImages(bad));
    }
    Ok(())
}

/// The network of a base model with its weights, and the image size it sees.
fn open_base(base: &BaseModel, device: &Device) -> Result<(TemplateNet, usize), RunError> {
    let meta = &base.meta;
    let num = |name: &str, or: f64| meta.param(name).map_or(or, |n| n.as_f64());
    let cfg = NetConfig::published(
        meta.architecture,
        meta.logreg,
        num("embeddings_size", 512.0).max(1.0) as usize,
        AngularMargin {
            scale: num("angular_scale", 64.0),
            margin: num("angular_margin", 0.5),
        },
    );
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, device);
    let net = TemplateNet::new(&cfg, meta.concepts.len().max(1), &vb)?;
    let report = weights::load(&map, &base.weights)?;
    if !report.is_complete() {
        return Err(RunError::Resume {
            path: base.weights.clone(),
            message: format!(
                "the base model's weights do not fit the network `{}` describes ({report})",
                base.meta_path.display()
            ),
        });
    }
    Ok((net, meta.image_size))
}

/// Trains the workflow's template: (the network, its image size, the summary).
fn train(
    workflow: &Workflow,
    sets: &DataSets,
    options: &RunOptions,
    workers: usize,
    device: &Device,
    bad_log: &mut BadLog,
    on_event: &mut dyn FnMut(&Event),
) -> Result<(TemplateNet, usize, RunSummary), RunError> {
    let plan = Plan::new(workflow);
    let int = |name: &str| workflow.int(name).unwrap_or(0);
    let logreg = int("logreg") == 1;
    let (train_set, eval_set) = (&sets.train, &sets.eval);
    if sets.multi_label
        && !logreg
        && workflow.template.architecture != Architecture::Resnet101AngularMargin
    {
        return Err(RunError::Unsupported(
            "some images have several concepts: set `logreg = 1`".into(),
        ));
    }
    let classes = sets.concepts.len();

    // The network, its weights drawn from the seed (or loaded).
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, device);
    let cfg = NetConfig::published(
        workflow.template.architecture,
        logreg,
        int("embeddings_size").max(1) as usize,
        AngularMargin {
            scale: workflow.float("angular_scale").unwrap_or(64.0),
            margin: workflow.float("angular_margin").unwrap_or(0.5),
        },
    );
    let net = TemplateNet::new(&cfg, classes, &vb)?;
    init::seeded(&map, workflow.seed)?;
    if let Some(w) = &workflow.data.weights {
        weights::load(&map, w)?;
    }

    let out = &workflow.output;

    let epochs = int("num_epochs").max(1) as u64;
    let batch = int("batch_size").max(1) as usize;
    let size = int("image_size").max(32) as usize;
    let items = plan.items_per_epoch.unwrap_or(train_set.paths.len() as u64) as usize;
    let steps_per_epoch = items.div_ceil(batch) as u64;
    let mut sgd = Sgd::new(&map, plan.lrate, 0.9, 5e-4);

    let mut first_epoch = 0;
    // Steps of `first_epoch` a cancelled run already trained.
    let mut resume_step = 0;
    let checkpoint = out.join("checkpoint.safetensors");
    if options.resume {
        (first_epoch, resume_step) = resume(&map, &mut sgd, &checkpoint)?;
    }
    on_event(&Event::Started {
        workflow: workflow.name.clone(),
        concepts: classes,
        train_images: train_set.paths.len(),
        eval_images: eval_set.paths.len(),
        epochs,
        steps_per_epoch,
        first_epoch: first_epoch + 1,
    });

    let mut last_eval = None;
    let mut metrics_log = String::new();
    if options.resume {
        // Keep the epochs the checkpoint holds: a run killed between writing an
        // epoch's metrics and its checkpoint repeats that epoch.
        let previous = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        for line in previous.lines() {
            let epoch = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["epoch"].as_u64());
            if epoch.is_some_and(|e| e <= first_epoch) {
                metrics_log.push_str(line);
                metrics_log.push('\n');
            }
        }
    }
    for epoch in first_epoch..epochs {
        let started = Instant::now();
        let lr = learning_rate(
            epoch,
            plan.lrate,
            int("init_epochs") as u64,
            int("step_epochs") as u64,
            plan.lr_decay,
        );
        sgd.set_learning_rate(lr);
        // This epoch's images: `items` of them, in an order drawn from (seed, epoch).
        let mut order: Vec<usize> = Vec::with_capacity(items);
        let mut rng = Rng::new(workflow.seed ^ (epoch + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        while order.len() < items {
            let mut pass: Vec<usize> = (0..train_set.paths.len()).collect();
            rng.shuffle(&mut pass);
            order.extend(pass.into_iter().take(items - order.len()));
        }
        // A resumed epoch skips the batches it trained before it was stopped.
        let skip = if epoch == first_epoch { resume_step } else { 0 };
        let batches: Vec<Vec<usize>> = order
            .chunks(batch)
            .skip(skip)
            .map(<[usize]>::to_vec)
            .collect();
        let job = Job {
            paths: train_set.paths.clone(),
            batches,
            size,
            random: Some((workflow.seed, epoch)),
        };
        let mut waited = 0.0;
        let mut losses = Vec::new();
        let mut wait_start = Instant::now();
        for (i, decoded) in Prefetch::start(job, workers, 2).enumerate() {
            let step = skip + i;
            waited += wait_start.elapsed().as_secs_f64();
            bad_log.report(&decoded.bad, on_event);
            if decoded.indices.len() < 2 {
                wait_start = Instant::now();
                continue; // batch norm needs two images
            }
            if options
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
            {
                // Save where this epoch stands: `--resume` continues at this step.
                save_checkpoint(&map, &sgd, &checkpoint, epoch, step as u64)?;
                return Err(RunError::Cancelled {
                    epoch: epoch + 1,
                    step: step as u64 + 1,
                });
            }
            let step_start = Instant::now();
            let n = decoded.indices.len();
            let x = Tensor::from_vec(decoded.pixels, (n, 3, size, size), device)?;
            let targets = train_set.targets(&decoded.indices, classes, logreg, device)?;
            let loss = net.loss(&x, &targets, true)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(RunError::Diverged {
                    epoch: epoch + 1,
                    step: step as u64 + 1,
                    loss: value,
                });
            }
            sgd.step(&loss.backward()?)?;
            losses.push(value);
            on_event(&Event::Step {
                epoch: epoch + 1,
                step: step as u64 + 1,
                steps: steps_per_epoch,
                loss: value,
                learning_rate: lr,
                images_per_s: n as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
            });
            wait_start = Instant::now();
        }
        let eval = metrics::evaluate(&net, eval_set, &cfg, classes, size, workers, device)?;
        let seconds = started.elapsed().as_secs_f64();
        let train_loss = losses.iter().sum::<f32>() / losses.len().max(1) as f32;
        let event = Event::Epoch {
            epoch: epoch + 1,
            train_loss,
            eval: eval.clone(),
            seconds,
            data_wait: waited / seconds.max(1e-9),
        };
        metrics_log.push_str(&serde_json::to_string(&event).unwrap_or_default());
        metrics_log.push('\n');
        write(&out.join("metrics.jsonl"), metrics_log.as_bytes())?;
        save_checkpoint(&map, &sgd, &checkpoint, epoch + 1, 0)?;
        on_event(&event);
        last_eval = Some(eval);
    }

    weights::save(&map, &out.join("model.safetensors"))?;
    let meta = ModelMeta {
        workflow: workflow.name.clone(),
        template: workflow.template.name.clone(),
        architecture: workflow.template.architecture,
        image_size: size,
        concepts: sets.concepts.clone(),
        logreg,
        params: plan
            .params
            .iter()
            .filter_map(|p| match &p.value {
                Some(crate::spec::ParamValue::Num(n)) => Some((p.name.to_string(), *n)),
                _ => None,
            })
            .collect(),
    };
    write(&out.join("model.json"), meta.to_json().as_bytes())?;
    let summary = RunSummary {
        output: out.clone(),
        epochs,
        final_eval: last_eval,
        bad_images: 0,
        steps: Vec::new(),
        failed_steps: Vec::new(),
    };
    Ok((net, size, summary))
}

impl Images {
    fn select(data: &Dataset, indices: &[usize]) -> Images {
        Images {
            paths: Arc::new(
                indices
                    .iter()
                    .map(|&i| data.samples[i].path.clone())
                    .collect(),
            ),
            concepts: indices
                .iter()
                .map(|&i| data.samples[i].concepts.clone())
                .collect(),
        }
    }

    /// An evaluation set's samples with their concepts renumbered as the training set's.
    fn remap(eval: &Dataset, concepts: &[String]) -> Images {
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for s in &eval.samples {
            let mapped: Vec<usize> = s
                .concepts
                .iter()
                .filter_map(|&c| concepts.iter().position(|n| *n == eval.concepts[c]))
                .collect();
            if !mapped.is_empty() {
                paths.push(s.path.clone());
                labels.push(mapped);
            }
        }
        Images {
            paths: Arc::new(paths),
            concepts: labels,
        }
    }

    fn targets(
        &self,
        indices: &[usize],
        classes: usize,
        logreg: bool,
        device: &Device,
    ) -> candle_core::Result<Targets> {
        Targets::from_concepts(
            indices.iter().map(|&i| self.concepts[i].as_slice()),
            classes,
            logreg,
            device,
        )
    }
}

/// Saves the weights, batch-norm statistics and momentum after `epoch` finished
/// epochs and `step` steps of the next.
fn save_checkpoint(
    map: &VarMap,
    sgd: &Sgd,
    path: &Path,
    epoch: u64,
    step: u64,
) -> Result<(), RunError> {
    let mut tensors: std::collections::HashMap<String, Tensor> = map
        .data()
        .lock()
        .expect("var map lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    for (name, v) in sgd.velocities() {
        tensors.insert(format!("sgd.velocity.{name}"), v);
    }
    tensors.insert("epoch".into(), Tensor::new(&[epoch as u32], &Device::Cpu)?);
    tensors.insert("step".into(), Tensor::new(&[step as u32], &Device::Cpu)?);
    Ok(weights::save_tensors(&tensors, path)?)
}

/// Loads the checkpoint into `map` and `sgd`: (finished epochs, steps of the next).
fn resume(map: &VarMap, sgd: &mut Sgd, path: &Path) -> Result<(u64, usize), RunError> {
    let bad = |message: String| RunError::Resume {
        path: path.to_path_buf(),
        message,
    };
    if !path.exists() {
        return Err(bad(
            "there is no checkpoint yet: run without `--resume`".into()
        ));
    }
    let tensors =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let report = weights::load_tensors(map, &tensors)?;
    if !report.is_complete() {
        return Err(bad(format!(
            "it does not fit this workflow's network ({report})"
        )));
    }
    sgd.set_velocities(tensors.iter().filter_map(|(k, v)| {
        k.strip_prefix("sgd.velocity.")
            .map(|n| (n.to_string(), v.clone()))
    }));
    let epoch = tensors
        .get("epoch")
        .ok_or_else(|| bad("no epoch recorded".into()))?
        .to_vec1::<u32>()?[0];
    let step = match tensors.get("step") {
        Some(t) => t.to_vec1::<u32>()?[0] as usize,
        None => 0,
    };
    Ok((epoch as u64, step))
}
