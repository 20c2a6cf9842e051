//! Training a template's network, epoch by epoch, as the plan says: the
//! learning rate of each epoch, the images of each epoch and the batches are
//! the plan's; a base model's network is opened instead of trained.

use crate::paths::ShowPath;
use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::checkpoint::{self, Position};
use super::metrics::{self, EvalMetrics};
use super::sets::{BadLog, DataSets, Images};
use super::{folder, Event, RunError, RunOptions};
use crate::data::images::{Job, Prefetch};
use crate::data::Rng;
use crate::hyper::Loss;
use crate::models::optim::Sgd;
use crate::models::{init, weights, NetConfig, TemplateNet};
use crate::plan::{batches, Plan};
use crate::workflow::{BaseModel, Workflow};

/// What a run needs besides the plan and the data.
pub(super) struct Context<'a> {
    pub workflow: &'a Workflow,
    pub options: &'a RunOptions,
    pub workers: usize,
    pub device: &'a Device,
}

/// A network ready to embed, and what training it gave.
pub(super) struct Trained {
    pub net: TemplateNet,
    pub epochs: u64,
    pub final_eval: Option<EvalMetrics>,
    /// Training stopped after this epoch (`RunOptions::stop_early`).
    pub stopped_early: Option<u64>,
    /// Whether this run trained its last epoch (not a resumed finished run,
    /// whose last evaluation may predate a change of its unseen images).
    pub trained_last_epoch: bool,
}

/// The network of a base model with its weights.
pub(super) fn open_base(
    base: &BaseModel,
    plan: &Plan,
    device: &Device,
) -> Result<Trained, RunError> {
    let bytes = super::model::read_weights(base)?;
    let (_, _, net) = super::model::load_net(base, &plan.hyper, device, &bytes)?;
    Ok(Trained {
        net,
        epochs: 0,
        final_eval: None,
        stopped_early: None,
        trained_last_epoch: false,
    })
}

/// The network being trained and its optimiser.
struct Training<'a> {
    cx: &'a Context<'a>,
    plan: &'a Plan,
    sets: &'a DataSets,
    map: VarMap,
    net: TemplateNet,
    cfg: NetConfig,
    sgd: Sgd,
    /// The plan's images and optimizer steps of an epoch.
    items: usize,
    steps_per_epoch: u64,
    /// What training depends on, recorded in each checkpoint.
    basis: &'a super::checkpoint::Bases,
}

/// What one epoch's batches gave.
#[derive(Default)]
struct EpochSteps {
    losses: Vec<f32>,
    steps: u64,
    images: u64,
    waited: f64,
}

/// Trains the workflow's template as `plan` says.
pub(super) fn train(
    cx: &Context,
    plan: &Plan,
    sets: &DataSets,
    basis: &super::checkpoint::Bases,
    bad_log: &mut BadLog,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Trained, RunError> {
    let mut t = Training::new(cx, plan, sets, basis)?;
    let out = &plan.output;
    let checkpoint = out.join("checkpoint.safetensors");
    let start = if cx.options.resume {
        checkpoint::load(&t.map, &mut t.sgd, &checkpoint)?
    } else {
        Position::default()
    };
    on_event(&Event::Started {
        workflow: plan.workflow.clone(),
        concepts: sets.concepts.len(),
        train_images: sets.train.paths.len(),
        eval_images: sets.eval.paths.len(),
        epochs: plan.hyper.num_epochs,
        steps_per_epoch: t.steps_per_epoch,
        first_epoch: start.epoch + 1,
        epoch_estimate_s: plan
            .cost
            .as_ref()
            .and_then(|c| c.times.as_ref())
            .and_then(|t| t.epoch_s),
    });
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics_log = if cx.options.resume {
        kept_metrics(&metrics_path, start.epoch)
    } else {
        String::new()
    };
    // A resumed run whose every epoch is done trains none: its last epoch's
    // evaluation is the one its log kept.
    let mut last_eval = metrics::epoch_rows(&metrics_log)
        .pop()
        .filter(|r| r.epoch == plan.hyper.num_epochs)
        .map(|r| r.eval);
    let trained_before = start.epoch;
    for (epoch, &lr) in plan
        .epoch_learning_rates
        .iter()
        .enumerate()
        .skip(start.epoch as usize)
    {
        let epoch = epoch as u64;
        // A resumed epoch skips the steps it trained and keeps their losses.
        let resumed = Position {
            epoch,
            ..Position::default()
        };
        let resumed = if epoch == start.epoch {
            &start
        } else {
            &resumed
        };
        let started = Instant::now();
        t.sgd.set_learning_rate(lr);
        let done = t.epoch(lr, resumed, &checkpoint, bad_log, on_event)?;
        let event = t.evaluated(epoch, lr, done, started, bad_log, on_event)?;
        metrics_log.push_str(&epoch_line(&event, &metrics_path)?);
        folder::write(&metrics_path, metrics_log.as_bytes())?;
        let finished = Position {
            epoch: epoch + 1,
            ..Position::default()
        };
        checkpoint::save(&t.map, &t.sgd, &checkpoint, &finished, t.basis)?;
        on_event(&event);
        if let Event::Epoch {
            eval, train_loss, ..
        } = event
        {
            let last = epoch + 1 == plan.hyper.num_epochs;
            let stop = cx.options.stop_early.as_ref().filter(|_| !last);
            let why = stop.and_then(|rule| (rule.0)(epoch + 1, train_loss, &eval));
            last_eval = Some(eval);
            if let Some(reason) = why {
                on_event(&Event::StoppedEarly {
                    epoch: epoch + 1,
                    epochs: plan.hyper.num_epochs,
                    reason,
                });
                return Ok(Trained {
                    net: t.net,
                    epochs: epoch + 1,
                    final_eval: last_eval,
                    stopped_early: Some(epoch + 1),
                    trained_last_epoch: false,
                });
            }
        }
    }
    folder::write_weights(&out.join("model.safetensors"), &t.map)?;
    folder::write_json(
        &out.join("model.json"),
        &folder::model_meta(plan, &sets.concepts),
    )?;
    Ok(Trained {
        net: t.net,
        epochs: plan.hyper.num_epochs,
        final_eval: last_eval,
        stopped_early: None,
        trained_last_epoch: trained_before < plan.hyper.num_epochs,
    })
}

/// The lines of the previous `metrics.jsonl` that the checkpoint holds.
fn kept_metrics(path: &std::path::Path, finished_epochs: u64) -> String {
    // None yet when the run was stopped in its first epoch.
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    checkpoint::kept_metrics(&previous, finished_epochs)
}

/// The line `metrics.jsonl` holds for an epoch.
fn epoch_line(event: &Event, path: &std::path::Path) -> Result<String, RunError> {
    let mut line = serde_json::to_string(event).map_err(|e| RunError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(e),
    })?;
    line.push('\n');
    Ok(line)
}

/// This epoch's images: `items` of them, in an order drawn from (seed, epoch).
fn epoch_order(seed: u64, epoch: u64, images: usize, items: usize) -> Result<Vec<usize>, RunError> {
    let mut order: Vec<usize> = Vec::new();
    order.try_reserve_exact(items).map_err(|_| {
        RunError::Unsupported(format!(
            "an epoch of {items} images (`num_items_per_epoch`) needs more memory than this \
             machine has for its order alone; lower `num_items_per_epoch`"
        ))
    })?;
    let mut rng = Rng::new(seed ^ (epoch + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    while order.len() < items && images > 0 {
        let mut pass: Vec<usize> = (0..images).collect();
        rng.shuffle(&mut pass);
        order.extend(pass.into_iter().take(items - order.len()));
    }
    Ok(order)
}

impl<'a> Training<'a> {
    /// The network, its weights drawn from the seed (or loaded), and SGD.
    fn new(
        cx: &'a Context<'a>,
        plan: &'a Plan,
        sets: &'a DataSets,
        basis: &'a super::checkpoint::Bases,
    ) -> Result<Self, RunError> {
        let h = &plan.hyper;
        if sets.multi_label && h.loss == Loss::Softmax {
            return Err(RunError::Unsupported(
                "some images have several concepts: set `logreg = 1`".into(),
            ));
        }
        let need = h.loss.sized_layer_bytes(sets.concepts.len() as u64);
        let memory = crate::cost::Memory::this_machine().map(|m| m.total);
        if let Some(memory) = memory.filter(|&m| need > m as f64) {
            return Err(RunError::Unsupported(format!(
                "the layers `embeddings_size` sizes need about {} in training, more than this \
                 machine's {} of memory; lower `embeddings_size`",
                crate::hyper::gib(need),
                crate::hyper::gib(memory as f64)
            )));
        }
        let nothing = |why: &str| {
            RunError::NothingToTrain(format!(
                "nothing to train on: {why}; add images to `{}`",
                plan.data.train.path().shown()
            ))
        };
        if sets.train.paths.is_empty() {
            return Err(nothing(
                "no training image is left after holding out evaluation images",
            ));
        }
        let (Some(items), Some(steps_per_epoch)) = (plan.items_per_epoch, plan.steps_per_epoch)
        else {
            return Err(RunError::Unsupported(
                "the plan does not know the images of an epoch: the data was not counted".into(),
            ));
        };
        if steps_per_epoch == 0 {
            return Err(nothing("an epoch holds no batch of two images or more"));
        }
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, cx.device);
        let cfg = NetConfig::for_hyper(h);
        let mut net = TemplateNet::new(&cfg, sets.concepts.len(), &vb)?;
        net.gradients_aside();
        init::seeded_with(&map, plan.seed, h.conv_init)?;
        if let Some(w) = &cx.workflow.data.weights {
            weights::load(&map, w)?;
        }
        let sgd = Sgd::new(&map, plan.lrate, h.momentum, h.weight_decay).decaying(h.decayed);
        Ok(Training {
            cx,
            plan,
            sets,
            map,
            net,
            cfg,
            sgd,
            items: items as usize,
            steps_per_epoch,
            basis,
        })
    }

    /// Trains the batches of epoch `from.epoch` after its first `from.step`
    /// (a resumed epoch).
    fn epoch(
        &mut self,
        lr: f64,
        from: &Position,
        checkpoint: &std::path::Path,
        bad_log: &mut BadLog,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<EpochSteps, RunError> {
        let (plan, train_set) = (self.plan, &self.sets.train);
        let (epoch, skip) = (from.epoch, from.step);
        let size = plan.hyper.image_size;
        let order = epoch_order(plan.seed, epoch, train_set.paths.len(), self.items)?;
        let all = batches(&order, plan.hyper.batch_size);
        let mut done = EpochSteps {
            steps: skip.min(all.len()) as u64,
            images: all.iter().take(skip).map(|b| b.len() as u64).sum(),
            losses: from.losses.clone(),
            ..EpochSteps::default()
        };
        let job = Job {
            paths: train_set.paths.clone(),
            batches: all.iter().skip(skip).map(|b| b.to_vec()).collect(),
            size,
            random: match plan.data.augment {
                crate::workflow::Augment::CropFlip => Some((plan.seed, epoch, true)),
                crate::workflow::Augment::Crop => Some((plan.seed, epoch, false)),
                crate::workflow::Augment::None => None,
            },
        };
        let mut wait_start = Instant::now();
        for (i, decoded) in Prefetch::start(job, self.cx.workers, 2).enumerate() {
            let step = skip + i;
            done.waited += wait_start.elapsed().as_secs_f64();
            bad_log.report(&decoded.bad, on_event);
            if self.cancelled() {
                // Save where this epoch stands: `--resume` continues at this step.
                let at = Position {
                    epoch,
                    step,
                    losses: done.losses.clone(),
                };
                checkpoint::save(&self.map, &self.sgd, checkpoint, &at, self.basis)?;
                return Err(RunError::Cancelled {
                    epoch: epoch + 1,
                    step: step as u64 + 1,
                });
            }
            // Batch norm needs two images: a batch left with fewer by
            // unreadable images is skipped.
            if decoded.indices.len() >= 2 {
                let started = Instant::now();
                let n = decoded.indices.len();
                let value = self.step(train_set, decoded.pixels, &decoded.indices, epoch, step)?;
                done.losses.push(value);
                done.steps += 1;
                done.images += n as u64;
                on_event(&Event::Step {
                    epoch: epoch + 1,
                    step: step as u64 + 1,
                    steps: self.steps_per_epoch,
                    loss: value,
                    learning_rate: lr,
                    images_per_s: n as f64 / started.elapsed().as_secs_f64().max(1e-9),
                });
            }
            wait_start = Instant::now();
        }
        if done.losses.is_empty() {
            return Err(RunError::NothingToTrain(format!(
                "epoch {} trained no step: no batch kept two readable images (the images \
                 skipped are listed above; `--fail-on-bad-images` lists every one before training)",
                epoch + 1
            )));
        }
        Ok(done)
    }

    /// The network evaluated on the held-out images after an epoch: the
    /// epoch's event.
    fn evaluated(
        &self,
        epoch: u64,
        learning_rate: f64,
        done: EpochSteps,
        started: Instant,
        bad_log: &mut BadLog,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Event, RunError> {
        let eval = metrics::evaluate(
            &self.net,
            &self.sets.eval,
            &self.cfg,
            self.sets.concepts.len(),
            self.plan.hyper.image_size,
            self.cx.workers,
            self.cx.device,
            self.judging(epoch).as_ref(),
        )?;
        let mut eval = eval;
        if let (Some(unseen), Some(options)) = (&self.sets.unseen, self.judging(epoch)) {
            let (judged, bad) = metrics::judge_unseen(
                &self.net,
                unseen,
                self.plan.hyper.image_size,
                self.cx.workers,
                self.cx.device,
                &options,
            )?;
            bad_log.report(&bad, on_event);
            eval.unseen = judged;
        }
        if eval.loss.is_some_and(|l| !l.is_finite()) {
            return Err(RunError::NotFinite {
                epoch: epoch + 1,
                what: "the held-out loss and outputs".into(),
            });
        }
        let seconds = started.elapsed().as_secs_f64();
        let losses = &done.losses;
        Ok(Event::Epoch {
            epoch: epoch + 1,
            learning_rate,
            steps: done.steps,
            images: done.images,
            train_loss: losses.iter().sum::<f32>() / losses.len().max(1) as f32,
            eval,
            seconds,
            data_wait: done.waited / seconds.max(1e-9),
        })
    }

    /// Whether this epoch's evaluation judges the embeddings
    /// ([`metrics::JUDGE_EVERY_EPOCH`]), and with what seed.
    fn judging(&self, epoch: u64) -> Option<crate::steps::judge::JudgeOptions> {
        let last = epoch + 1 >= self.plan.hyper.num_epochs;
        let images =
            self.sets.eval.paths.len() + self.sets.unseen.as_ref().map_or(0, |u| u.paths.len());
        (last || images <= metrics::JUDGE_EVERY_EPOCH).then(|| crate::steps::judge::JudgeOptions {
            seed: self.plan.seed,
            ..Default::default()
        })
    }

    fn cancelled(&self) -> bool {
        self.cx
            .options
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// One optimizer step on a decoded batch: its loss.
    fn step(
        &mut self,
        set: &Images,
        pixels: Vec<f32>,
        indices: &[usize],
        epoch: u64,
        step: usize,
    ) -> Result<f32, RunError> {
        let size = self.plan.hyper.image_size;
        let x = Tensor::from_vec(pixels, (indices.len(), 3, size, size), self.cx.device)?;
        let classes = self.sets.concepts.len();
        let targets = set.targets(indices, classes, self.cfg.logreg(), self.cx.device)?;
        let loss = self.net.loss(&x, &targets, true)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(RunError::Diverged {
                epoch: epoch + 1,
                step: step as u64 + 1,
                loss: value,
            });
        }
        self.sgd.step(&self.net.backward(&loss)?)?;
        Ok(value)
    }
}
