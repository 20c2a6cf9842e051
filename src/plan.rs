//! The plan of a checked workflow: every value with where it came from, the
//! learning rate of every epoch and the number of optimizer steps.
//!
//! The executor follows the same functions ([`learning_rate`],
//! [`split_counts`], [`steps_per_epoch`]) so the plan is what will run.

use crate::paths::ShowPath;
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::hyper::{DataCounts, Hyper, StepParams};
use crate::spec::{fmt_float, Architecture, Derived, Num, ParamValue};
use crate::workflow::{Device, Eval, ImageSource, Origin, Resolved, ResolvedParam, Workflow};

/// The learning rate of the 0-based `epoch`: `lrate` for the first
/// `init_epochs` epochs, then multiplied by `decay` at epoch `init_epochs` and
/// again every `step_epochs` epochs after.
pub fn learning_rate(
    epoch: u64,
    lrate: f64,
    init_epochs: u64,
    step_epochs: u64,
    decay: f64,
) -> f64 {
    if epoch < init_epochs {
        return lrate;
    }
    let decreases = 1 + (epoch - init_epochs) / step_epochs.max(1);
    lrate * decay.powi(decreases.min(i32::MAX as u64) as i32)
}

/// How many of `images` are trained on and how many held out for a fraction:
/// `round(images × fraction)` held out, at least one and leaving at least one.
pub fn split_counts(images: u64, fraction: f64) -> (u64, u64) {
    if images < 2 {
        return (images, 0);
    }
    let held = ((images as f64) * fraction).round() as u64;
    let held = held.clamp(1, images - 1);
    (images - held, held)
}

/// [`split_counts`] over strata of these sizes (each concept's images, see
/// `data::split`): every stratum of two or more images holds out its share,
/// at least one; a stratum of one image holds out none.
pub fn stratified_counts(strata: &[u64], fraction: f64) -> (u64, u64) {
    strata
        .iter()
        .map(|&n| split_counts(n, fraction))
        .fold((0, 0), |(t, e), (a, b)| (t + a, e + b))
}

/// Optimizer steps per epoch: batches of `batch_size`, the last partial one
/// kept; a last single image joins the batch before it, as batch norm needs
/// two images in a batch ([`batches`] cuts them so). No step trains with a
/// batch size under two.
pub fn steps_per_epoch(items_per_epoch: u64, batch_size: u64) -> u64 {
    if batch_size < 2 || items_per_epoch < 2 {
        return 0;
    }
    let (whole, left) = (items_per_epoch / batch_size, items_per_epoch % batch_size);
    match left {
        0 => whole,
        1 if whole > 0 => whole,
        _ => whole + 1,
    }
}

/// One epoch's order cut into the batches [`steps_per_epoch`] counts: every
/// image of it trained, in order.
pub fn batches<T>(order: &[T], batch_size: usize) -> Vec<&[T]> {
    if batch_size < 2 || order.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(order.len().div_ceil(batch_size));
    let mut start = 0;
    while start < order.len() {
        let mut end = (start + batch_size).min(order.len());
        if order.len() - end == 1 {
            end = order.len(); // a last single image joins this batch
        }
        out.push(&order[start..end]);
        start = end;
    }
    out
}

/// One resolved parameter, as the plan shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedParam {
    pub name: std::sync::Arc<str>,
    /// `None` when it is derived from data the checker could not read.
    pub value: Option<ParamValue>,
    #[serde(flatten)]
    pub origin: Origin,
}

/// A run of consecutive epochs sharing one learning rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RatePhase {
    /// 1-based, inclusive.
    pub first_epoch: u64,
    pub last_epoch: u64,
    pub learning_rate: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedData {
    pub train: ImageSource,
    pub eval: Eval,
    #[serde(serialize_with = "crate::paths::lossy_opt")]
    pub weights: Option<std::path::PathBuf>,
    /// Concepts found in the training folder (empty when it was not read).
    pub concepts: Vec<String>,
    /// Images in the training folder, before holding out evaluation images.
    pub images: Option<u64>,
    pub train_images: Option<u64>,
    pub eval_images: Option<u64>,
    /// Images of concepts never trained on, the embeddings judged on them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen: Option<ImageSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_images: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_concepts: Option<u64>,
    /// How training images are varied (not written when the default, so
    /// checkpoints of earlier versions keep their basis).
    #[serde(skip_serializing_if = "crate::workflow::Augment::is_default")]
    pub augment: crate::workflow::Augment,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedStep {
    pub kind: crate::spec::StepKindId,
    pub name: String,
    pub params: Vec<PlannedParam>,
    /// The same, typed, derived counts resolved where the data is known.
    pub typed: StepParams,
}

/// The frozen model a base workflow embeds with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedBase {
    #[serde(serialize_with = "crate::paths::lossy")]
    pub weights: std::path::PathBuf,
    /// The workflow that trained it.
    pub workflow: String,
    /// The concepts it was trained on.
    pub concepts: Vec<String>,
}

/// Everything `wfrun plan` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub workflow: String,
    pub template: String,
    pub architecture: Architecture,
    pub params: Vec<PlannedParam>,
    /// The same, typed, `num_items_per_epoch` resolved where the data is known.
    pub hyper: Hyper,
    /// `batch_size × per_item_lrate`.
    pub lrate: f64,
    pub lr_decay: f64,
    /// The learning rate of every epoch, first epoch first.
    pub epoch_learning_rates: Vec<f64>,
    pub rate_phases: Vec<RatePhase>,
    pub items_per_epoch: Option<u64>,
    pub steps_per_epoch: Option<u64>,
    pub optimizer_steps: Option<u64>,
    pub data: PlannedData,
    pub steps: Vec<PlannedStep>,
    pub device: Device,
    #[serde(serialize_with = "crate::paths::lossy")]
    pub output: std::path::PathBuf,
    pub seed: u64,
    /// Set when the workflow uses a finished run's model instead of training.
    pub base: Option<PlannedBase>,
    /// A sweep's trials (the training fields above are then its first
    /// trial's; each trial's own plan is written in its run folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<PlannedSweep>,
    /// What training (or, with a base model, embedding) costs: parameters,
    /// multiply-adds, peak memory, and times on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::cost::Estimate>,
}

/// One trial of a sweep as the plan lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedTrial {
    pub name: String,
    pub values: Vec<(std::sync::Arc<str>, Num)>,
    /// The seed it trains with.
    pub seed: u64,
    pub lrate: f64,
    pub epochs: u64,
    pub steps_per_epoch: Option<u64>,
    pub optimizer_steps: Option<u64>,
    /// Its run folder.
    #[serde(serialize_with = "crate::paths::lossy")]
    pub output: std::path::PathBuf,
    /// Its estimated time in seconds, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_s: Option<f64>,
}

/// A sweep as the plan shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedSweep {
    pub swept: Vec<crate::sweep::SweptParam>,
    /// Candidates in the whole grid.
    pub grid: u64,
    pub trials: Vec<PlannedTrial>,
    pub objective: crate::sweep::Objective,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<crate::sweep::MedianRule>,
    pub seed: u64,
    /// Trials of each candidate, with seeds one apart.
    pub repeats: usize,
}

fn resolve(p: &ResolvedParam, counts: &DataCounts, seed: u64) -> PlannedParam {
    let count = |n: u64| ParamValue::Num(Num::Int(n as i64));
    let value = match &p.value {
        Resolved::Value(v) => Some(v.clone()),
        Resolved::Derived(Derived::Seed) => Some(count(seed)),
        Resolved::Derived(d) => counts.get(*d).map(count),
    };
    PlannedParam {
        name: p.name.clone(),
        value,
        origin: p.origin.clone(),
    }
}

/// What is known of the data when planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataFound {
    /// The concepts of the training data, in the order of the network's outputs.
    pub concepts: Vec<String>,
    /// Images of the training source, before holding out evaluation images.
    pub images: Option<u64>,
    pub train_images: Option<u64>,
    pub eval_images: Option<u64>,
    /// The unseen images and their concepts, when read.
    pub unseen: Option<(u64, u64)>,
}

impl DataFound {
    /// What the checker read of a training source (`None`: it did not read
    /// it), the evaluation images held out as the run will.
    pub fn counted(summary: Option<&crate::workflow::DatasetSummary>, eval: &Eval) -> DataFound {
        let images = summary.map(|d| d.images() as u64);
        let concepts: Vec<String> = summary
            .iter()
            .flat_map(|d| {
                d.concepts
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(c, _)| c.clone())
            })
            .collect();
        let (train_images, eval_images) = match (eval, summary) {
            (Eval::Fraction(f), Some(d)) => {
                let strata: Vec<u64> = d.strata.iter().map(|&n| n as u64).collect();
                let (t, e) = stratified_counts(&strata, *f);
                (Some(t), Some(e))
            }
            (Eval::Images(_), Some(_)) => (images, None),
            (_, None) => (None, None),
        };
        DataFound {
            concepts,
            images,
            train_images,
            eval_images,
            unseen: summary
                .and_then(|d| d.unseen)
                .map(|(i, c)| (i as u64, c as u64)),
        }
    }

    /// The counts the spec derives values from.
    pub fn counts(&self) -> DataCounts {
        DataCounts {
            train_images: self.train_images,
            concepts: (!self.concepts.is_empty()).then_some(self.concepts.len() as u64),
        }
    }
}

impl Plan {
    /// The plan with what the checker read of the data (nothing with `--no-fs`).
    pub fn new(w: &Workflow) -> Plan {
        Plan::with_data(w, DataFound::counted(w.dataset.as_ref(), &w.data.eval))
    }

    /// The plan a run follows, with the data it loaded: every count known.
    pub fn with_data(w: &Workflow, data: DataFound) -> Plan {
        let counts = data.counts();
        let seed = w.seed;
        let mut hyper = w.hyper;
        hyper.num_items_per_epoch = hyper.num_items_per_epoch.resolve(&counts);
        let params: Vec<PlannedParam> = w
            .params
            .iter()
            .map(|p| match p.origin {
                // Its values are the sweep's, listed there.
                Origin::Swept { .. } => PlannedParam {
                    value: None,
                    ..resolve(p, &counts, seed)
                },
                _ => resolve(p, &counts, seed),
            })
            .collect();
        let sweep = w.sweep.as_ref().map(|sw| PlannedSweep {
            swept: sw.swept.clone(),
            grid: sw.grid,
            trials: (0..sw.trials.len())
                .filter_map(|i| {
                    let t = w.trial(i)?;
                    let p = Plan::with_data(&t, data.clone());
                    Some(PlannedTrial {
                        name: sw.trials[i].name.clone(),
                        values: sw.trials[i].values.clone(),
                        seed: sw.trials[i].seed,
                        lrate: p.lrate,
                        epochs: p.hyper.num_epochs,
                        steps_per_epoch: p.steps_per_epoch,
                        optimizer_steps: p.optimizer_steps,
                        total_s: p.cost.and_then(|c| c.times).and_then(|t| t.total_s),
                        output: p.output,
                    })
                })
                .collect(),
            objective: sw.objective,
            early_stop: sw.early_stop,
            seed: sw.seed,
            repeats: sw.repeats,
        });
        let lrate = hyper.lrate();
        // A base model is used as it is: no epoch trains.
        let trained_epochs = if w.base.is_some() {
            0
        } else {
            hyper.num_epochs
        };
        let epoch_learning_rates: Vec<f64> = (0..trained_epochs)
            .map(|e| {
                learning_rate(
                    e,
                    lrate,
                    hyper.init_epochs,
                    hyper.step_epochs,
                    hyper.lr_decay,
                )
            })
            .collect();
        let items_per_epoch = hyper
            .num_items_per_epoch
            .value()
            .filter(|_| w.base.is_none());
        let steps_per_epoch = items_per_epoch.map(|n| steps_per_epoch(n, hyper.batch_size as u64));
        let steps = w
            .steps
            .iter()
            .map(|s| PlannedStep {
                kind: s.kind,
                name: s.name.clone(),
                params: s.params.iter().map(|p| resolve(p, &counts, seed)).collect(),
                typed: s.typed.resolve(&counts),
            })
            .collect();
        let cost = estimate_cost(&hyper, &data, w.device, &w.machine, w.base.is_none());
        Plan {
            workflow: w.name.clone(),
            template: w.template.name.clone(),
            architecture: w.template.architecture,
            params,
            hyper,
            lrate,
            lr_decay: hyper.lr_decay,
            rate_phases: rate_phases(&epoch_learning_rates),
            epoch_learning_rates,
            items_per_epoch,
            steps_per_epoch,
            optimizer_steps: if w.base.is_some() {
                Some(0)
            } else {
                steps_per_epoch.map(|s| s.saturating_mul(hyper.num_epochs))
            },
            base: w.base.as_ref().map(|b| PlannedBase {
                weights: b.weights.clone(),
                workflow: b.meta.workflow.clone(),
                concepts: b.meta.concepts.clone(),
            }),
            data: PlannedData {
                train: w.data.train.clone(),
                eval: w.data.eval.clone(),
                weights: w.data.weights.clone(),
                concepts: data.concepts,
                images: data.images,
                train_images: data.train_images,
                eval_images: data.eval_images,
                unseen: w.data.unseen.clone(),
                unseen_images: data.unseen.map(|(i, _)| i),
                unseen_concepts: data.unseen.map(|(_, c)| c),
                augment: w.data.augment,
            },
            steps,
            device: w.device,
            output: w.output.clone(),
            seed: w.seed,
            sweep,
            cost,
        }
    }
}

/// What a workflow costs with the data found: training `hyper` (or, when
/// `trains` is false, embedding with a base model of these values), on
/// `device` of `machine`. Times need the device's throughput: the CPU's, or
/// `auto` in a build without accelerators. `None` when a layer does not fit.
pub fn estimate_cost(
    hyper: &Hyper,
    data: &DataFound,
    device: Device,
    machine: &crate::cost::Machine,
    trains: bool,
) -> Option<crate::cost::Estimate> {
    use crate::cost::{estimate, Network, Work};
    let counts = data.counts();
    let net = Network::for_hyper(hyper, counts.concepts);
    let items = hyper.num_items_per_epoch.resolve(&counts).value();
    let unseen = data.unseen.map_or(0, |(images, _)| images);
    let work = Work {
        steps_per_epoch: items
            .filter(|_| trains)
            .map(|n| steps_per_epoch(n, hyper.batch_size as u64)),
        epochs: if trains { hyper.num_epochs } else { 0 },
        evaluated_per_epoch: data.eval_images.map(|e| e + unseen),
        images_embedded: data
            .train_images
            .zip(data.eval_images)
            .map(|(t, e)| t + e + unseen),
    };
    let throughput = machine.throughput.as_ref().filter(|_| device.on_host());
    estimate(&net, hyper.image_size, hyper.batch_size, work, throughput).ok()
}

/// A count of optimizer steps; one that saturated 64 bits says so.
fn steps_text(steps: u64) -> String {
    if steps == u64::MAX {
        format!("more than {} steps (past what 64 bits count)", u64::MAX - 1)
    } else {
        format!("{steps} steps")
    }
}

/// Consecutive epochs sharing a learning rate.
fn rate_phases(rates: &[f64]) -> Vec<RatePhase> {
    let mut phases: Vec<RatePhase> = Vec::new();
    for (i, &r) in rates.iter().enumerate() {
        let epoch = i as u64 + 1;
        match phases.last_mut() {
            Some(p) if p.learning_rate == r => p.last_epoch = epoch,
            _ => phases.push(RatePhase {
                first_epoch: epoch,
                last_epoch: epoch,
                learning_rate: r,
            }),
        }
    }
    phases
}

fn origin_text(o: &Origin) -> String {
    match o {
        Origin::Set { line } => format!("set on line {line}"),
        Origin::Default { from } => format!("default of {from}"),
        Origin::Derived { derived, .. } => format!("derived: {}", derived.describe()),
        Origin::Base { .. } => "trained with".to_string(),
        Origin::Swept { line } => format!("swept on line {line}"),
    }
}

fn value_text(v: &Option<ParamValue>) -> String {
    v.as_ref().map_or("?".to_string(), |v| v.to_string())
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "workflow {}", self.workflow)?;
        writeln!(
            f,
            "template {} ({})",
            self.template,
            self.architecture.name()
        )?;
        writeln!(f)?;
        if self.base.is_some() {
            writeln!(f, "hyperparameters the base model was trained with")?;
        } else {
            writeln!(f, "hyperparameters")?;
        }
        let width = self.params.iter().map(|p| p.name.len()).max().unwrap_or(0);
        let shown = |p: &PlannedParam| match (&p.origin, &self.sweep) {
            (Origin::Swept { .. }, Some(s)) => {
                s.swept
                    .iter()
                    .find(|w| w.name == p.name)
                    .map_or("?".to_string(), |w| {
                        w.values
                            .iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
            }
            _ => value_text(&p.value),
        };
        let vwidth = self.params.iter().map(|p| shown(p).len()).max();
        let vwidth = vwidth.unwrap_or(0);
        for p in &self.params {
            writeln!(
                f,
                "  {:width$} = {:vwidth$}  {}",
                p.name,
                shown(p),
                origin_text(&p.origin)
            )?;
        }
        writeln!(f)?;
        if let Some(s) = &self.sweep {
            s.fmt(f)?;
        } else if let Some(b) = &self.base {
            writeln!(f, "base model")?;
            writeln!(f, "  {}", b.weights.shown())?;
            writeln!(
                f,
                "  trained by workflow {} on {} concepts; used frozen: nothing is trained",
                b.workflow,
                b.concepts.len()
            )?;
            writeln!(f)?;
        } else {
            self.fmt_schedule(f)?;
        }
        self.fmt_cost(f)?;
        self.fmt_data_and_steps(f)
    }
}

impl PlannedSweep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = (self.trials.len() / self.repeats.max(1)) as u64;
        let drawn = if n < self.grid {
            format!(
                "{n} candidates drawn from a grid of {} (seed {})",
                self.grid, self.seed
            )
        } else {
            format!("{n} candidates: the whole grid")
        };
        let repeats = if self.repeats > 1 {
            format!(
                ", each trained {} times with seeds one apart: {} trials",
                self.repeats,
                self.trials.len()
            )
        } else {
            String::new()
        };
        writeln!(f, "sweep: {drawn}{repeats}")?;
        writeln!(
            f,
            "  ranked by {} at each trial's last epoch",
            self.objective.describe()
        )?;
        match self.early_stop {
            Some(r) => writeln!(
                f,
                "  early stop: from epoch {} on, a trial below the median of {} or more finished trials at the same epoch stops",
                r.after, r.min_trials
            )?,
            None => writeln!(f, "  every trial trains all its epochs")?,
        }
        let mut header: Vec<String> = vec!["trial".into()];
        header.extend(self.swept.iter().map(|s| s.name.to_string()));
        if self.repeats > 1 {
            header.push("seed".into());
        }
        header.extend(["lrate", "epochs", "optimizer steps"].map(String::from));
        let timed = self.trials.iter().all(|t| t.total_s.is_some());
        if timed {
            header.push("time".into());
        }
        let rows: Vec<Vec<String>> = self
            .trials
            .iter()
            .map(|t| {
                let mut row = vec![t.name.clone()];
                row.extend(t.values.iter().map(|(_, v)| v.to_string()));
                if self.repeats > 1 {
                    row.push(t.seed.to_string());
                }
                row.push(fmt_float(t.lrate));
                row.push(t.epochs.to_string());
                row.push(t.optimizer_steps.map_or("?".into(), |s| match s {
                    u64::MAX => "over 2^64".into(),
                    s => s.to_string(),
                }));
                if let (true, Some(s)) = (timed, t.total_s) {
                    row.push(crate::cost::duration_text(s));
                }
                row
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].len())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:w$}"))
                .collect();
            format!("  {}", cells.join("  ").trim_end())
        };
        writeln!(f, "{}", line(&header))?;
        for r in &rows {
            writeln!(f, "{}", line(r))?;
        }
        if timed {
            let all: f64 = self.trials.iter().filter_map(|t| t.total_s).sum();
            writeln!(
                f,
                "  about {} for all {} trials on this machine, before any trial stops early",
                crate::cost::duration_text(all),
                self.trials.len()
            )?;
        }
        if let Some(t) = self.trials.first() {
            let folder = t.output.parent().unwrap_or(&t.output);
            writeln!(
                f,
                "  each trial is a run folder under {}; `best` links to the best finished one",
                folder.shown()
            )?;
        }
        writeln!(f)
    }
}

impl Plan {
    fn fmt_cost(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::cost::{bytes_text, count_text, duration_text};
        let Some(c) = &self.cost else {
            return Ok(());
        };
        let n = &c.counts;
        match &self.sweep {
            Some(s) => writeln!(
                f,
                "cost of {} (each trial's time is in the table above)",
                s.trials
                    .first()
                    .map_or("the first trial", |t| t.name.as_str())
            )?,
            None => writeln!(f, "cost")?,
        }
        writeln!(
            f,
            "  network       {} at {} px: {} parameters ({})",
            self.architecture.network_name(),
            n.image_size,
            count_text(n.params as f64),
            bytes_text(c.weight_bytes as f64)
        )?;
        writeln!(
            f,
            "  multiply-adds {} per image forward, {} per image trained (forward and backward)",
            count_text(n.macs_forward as f64),
            count_text(n.macs_train as f64)
        )?;
        let training = if self.base.is_some() {
            String::new()
        } else {
            format!(
                "training {} (batch {}), ",
                bytes_text(c.train_peak_bytes as f64),
                c.batch_size
            )
        };
        writeln!(
            f,
            "  peak memory   {training}embedding {} (batches of {})",
            bytes_text(c.embed_peak_bytes as f64),
            c.embed_batch
        )?;
        let Some(t) = &c.times else {
            writeln!(
                f,
                "  time          not estimated on {}: no throughput measured for it",
                self.device
            )?;
            return writeln!(f);
        };
        if self.base.is_none() {
            let judging = if t.complete {
                " + embedding the judged images"
            } else {
                ""
            };
            let per_epoch = match (self.steps_per_epoch, t.epoch_s) {
                (Some(steps), Some(e)) => {
                    format!(" × {steps} steps{judging} = {} an epoch", duration_text(e))
                }
                _ => String::new(),
            };
            writeln!(
                f,
                "  time          {} a step{per_epoch}",
                duration_text(t.step_s)
            )?;
        }
        match (t.total_s, t.embed_data_s) {
            (Some(total), _) if self.base.is_none() && t.complete => writeln!(
                f,
                "                {} in all: {} epochs, then embedding every image",
                duration_text(total),
                self.epoch_learning_rates.len()
            )?,
            (Some(total), _) if self.base.is_none() => writeln!(
                f,
                "                {} for {} epochs of training; judging and embedding come on top once the images can be counted",
                duration_text(total),
                self.epoch_learning_rates.len()
            )?,
            (_, Some(embed)) => writeln!(
                f,
                "  time          {} embedding every image",
                duration_text(embed)
            )?,
            _ => writeln!(
                f,
                "                in all: unknown until the images can be counted"
            )?,
        }
        writeln!(f, "  (times from {})", t.source)?;
        writeln!(f)
    }

    fn fmt_schedule(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "learning rate")?;
        let batch = self.hyper.batch_size;
        let per_item = fmt_float(self.hyper.per_item_lrate);
        writeln!(
            f,
            "  lrate = batch_size × per_item_lrate = {batch} × {per_item} = {}",
            fmt_float(self.lrate)
        )?;
        writeln!(
            f,
            "  multiplied by {} at each decrease; SGD with momentum {} and weight decay {}{}",
            fmt_float(self.lr_decay),
            fmt_float(self.hyper.momentum),
            fmt_float(self.hyper.weight_decay),
            match self.hyper.decayed {
                crate::hyper::Decayed::All => "",
                crate::hyper::Decayed::Weights => " (on weights; not on batch norm or biases)",
            }
        )?;
        for p in &self.rate_phases {
            let epochs = if p.first_epoch == p.last_epoch {
                format!("epoch {}", p.first_epoch)
            } else {
                format!("epochs {}–{}", p.first_epoch, p.last_epoch)
            };
            writeln!(f, "  {epochs:<14} {}", fmt_float(p.learning_rate))?;
        }
        writeln!(f)?;
        writeln!(f, "optimizer steps")?;
        let epochs = self.epoch_learning_rates.len();
        match (self.items_per_epoch, self.steps_per_epoch, self.optimizer_steps) {
            (Some(items), Some(spe), Some(total)) => writeln!(
                f,
                "  {items} images per epoch / batch {batch} = {spe} steps per epoch × {epochs} epochs = {}",
                steps_text(total)
            )?,
            _ => writeln!(
                f,
                "  unknown until the training images can be counted: ⌈images per epoch / {batch}⌉ × {epochs} epochs"
            )?,
        }
        writeln!(f)
    }

    fn fmt_data_and_steps(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data")?;
        let d = &self.data;
        let kind = match &d.train {
            ImageSource::Folder(_) => "folder",
            ImageSource::Manifest(_) => "manifest",
        };
        write!(f, "  train    {} ({kind}", d.train.path().shown())?;
        if let Some(n) = d.images {
            write!(f, ", {} concepts, {n} images", d.concepts.len())?;
        }
        writeln!(f, ")")?;
        if !d.concepts.is_empty() {
            writeln!(f, "  concepts {}", d.concepts.join(", "))?;
        }
        match (&d.eval, d.train_images, d.eval_images) {
            (Eval::Fraction(x), Some(t), Some(e)) => writeln!(
                f,
                "  eval     {} of each concept's images held out: {t} to train, {e} to evaluate",
                fmt_float(*x)
            )?,
            (Eval::Fraction(x), _, _) => writeln!(
                f,
                "  eval     {} of each concept's images held out",
                fmt_float(*x)
            )?,
            (Eval::Images(src), _, _) => writeln!(f, "  eval     {}", src.path().shown())?,
        }
        if let Some(u) = &d.unseen {
            let counted = match (d.unseen_concepts, d.unseen_images) {
                (Some(c), Some(i)) => format!(" ({c} concepts, {i} images)"),
                _ => String::new(),
            };
            writeln!(
                f,
                "  unseen   {}{counted}: concepts never trained on, the embeddings judged on them",
                u.path().shown()
            )?;
        }
        if self.base.is_none() {
            writeln!(f, "  augment  {}", d.augment.describe())?;
        }
        match &d.weights {
            Some(w) => writeln!(f, "  weights  {}", w.shown())?,
            None if self.base.is_some() => {}
            None => writeln!(
                f,
                "  weights  none: the network starts from a random initialisation"
            )?,
        }
        writeln!(f)?;
        writeln!(f, "steps")?;
        if self.steps.is_empty() {
            writeln!(f, "  none: embedding only")?;
        }
        for s in &self.steps {
            let mut line = String::new();
            for (i, p) in s.params.iter().enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                let _ = write!(line, "{} = {}", p.name, value_text(&p.value));
            }
            let label = if s.name == s.kind.name() {
                s.name.clone()
            } else {
                format!("{} ({})", s.name, s.kind.name())
            };
            writeln!(f, "  {label}: {line}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "device {}, seed {}, output {}",
            self.device,
            self.seed,
            self.output.shown()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_holds_then_decays_every_step() {
        let lr = |e| learning_rate(e, 1.0, 25, 7, 0.1);
        assert_eq!(lr(0), 1.0);
        assert_eq!(lr(24), 1.0);
        assert!((lr(25) - 0.1).abs() < 1e-12);
        assert!((lr(31) - 0.1).abs() < 1e-12);
        assert!((lr(32) - 0.01).abs() < 1e-12);
        assert!((lr(64) - 1e-6).abs() < 1e-18);
    }

    #[test]
    fn split_keeps_at_least_one_on_each_side() {
        assert_eq!(split_counts(100, 0.1), (90, 10));
        assert_eq!(split_counts(5, 0.1), (4, 1));
        assert_eq!(split_counts(3, 0.9), (1, 2));
        assert_eq!(split_counts(1, 0.5), (1, 0));
    }

    #[test]
    fn partial_batches_count() {
        assert_eq!(steps_per_epoch(100, 32), 4);
        assert_eq!(steps_per_epoch(96, 32), 3);
        // A last single image joins the batch before it: batch norm needs two.
        assert_eq!(steps_per_epoch(97, 32), 3);
        assert_eq!(steps_per_epoch(98, 32), 4);
        assert_eq!(steps_per_epoch(5, 8), 1);
        assert_eq!(steps_per_epoch(1, 8), 0);
        assert_eq!(steps_per_epoch(10, 1), 0);
    }

    #[test]
    fn batches_are_what_the_plan_counts_and_train_every_image() {
        for items in 0..60usize {
            let order: Vec<usize> = (0..items).collect();
            for batch in 1..12usize {
                let cut = batches(&order, batch);
                assert_eq!(
                    cut.len() as u64,
                    steps_per_epoch(items as u64, batch as u64),
                    "{items} images, batch {batch}"
                );
                assert!(cut.iter().all(|b| b.len() >= 2 && b.len() <= batch + 1));
                if !cut.is_empty() {
                    let flat: Vec<usize> = cut.concat();
                    assert_eq!(flat, order, "{items} images, batch {batch}");
                }
            }
        }
    }
}
