//! Rules between fields: the schedule, the learning rate, the seed's advice.

use super::*;

impl Checker<'_> {
    /// Rules between fields: the schedule, the learning rate, the seed's advice.
    pub(super) fn cross_checks(
        &mut self,
        t: &TemplateSpec,
        u: &UseDecl,
        params: &[(ResolvedParam, Written)],
        has_weights: bool,
    ) {
        let f = Fields {
            params,
            use_span: u.keyword.to(u.template.span),
        };
        self.schedule_rules(&f, t);
        self.batches_rules(&f);
        self.learning_rate_rules(&f, t);
        self.angular_rules(&f, t, has_weights);
        self.epoch_size_rules(&f);
        self.memory_rules(&f);
    }

    /// An `embeddings_size` whose layers alone cannot fit in this machine's
    /// memory, with the estimate (checked before the rest is typed, in every
    /// trial of a sweep too; [`Checker::cost_rules`] weighs the whole run).
    fn memory_rules(&mut self, f: &Fields) {
        let Some(e) = f.num("embeddings_size") else {
            return;
        };
        let need = crate::hyper::embedding_layer_bytes(e, 2);
        let (memory, whose) = match self.machine.memory {
            Some(m) => (m.total as f64, "this machine's"),
            None => ((1u64 << 40) as f64, "a 1 TiB machine's"),
        };
        let show = crate::hyper::gib;
        let message = format!(
            "`embeddings_size` = {e} needs about {} to train its layers",
            show(need)
        );
        if need <= memory {
            return;
        }
        let d = Diagnostic::error(Code::Memory, f.at("embeddings_size"), message)
            .with_label(format!("more than {whose} {} of memory", show(memory)));
        self.push(d.with_help(
            "the projection from 2048 features to the embedding, its gradient and momentum grow \
             with it; the ArcFace default is 512",
        ));
    }

    /// What the whole run costs on its device: a training step's peak memory
    /// beyond the machine's memory (a warning: it would swap) or beyond its
    /// memory and swap together (an error: it cannot be allocated), and a run
    /// longer than [`LONG_RUN_S`] (a warning naming settings that finish
    /// within it, each valid on the template's grid), each quoting the
    /// estimate. The memory is the host's: on an accelerator, whose memory
    /// wfrun does not know, it is not checked.
    pub(super) fn cost_rules(
        &mut self,
        t: &TemplateSpec,
        h: &crate::hyper::Hyper,
        params: &[(ResolvedParam, Written)],
        u: &UseDecl,
        found: &crate::plan::DataFound,
    ) {
        use crate::cost::duration_text;
        let f = Fields {
            params,
            use_span: u.keyword.to(u.template.span),
        };
        let (device, machine) = (self.device, self.machine.clone());
        let estimate =
            |h: &crate::hyper::Hyper| crate::plan::estimate_cost(h, found, device, &machine, true);
        let Some(e) = estimate(h) else {
            return;
        };
        let memory = machine
            .memory
            .filter(|m| device.on_host() && e.train_peak_bytes > m.total);
        if let Some(m) = memory {
            self.memory_diagnostic(t, h, &f, &e, m, &estimate);
        }
        let Some(total) = e.times.as_ref().and_then(|t| t.total_s) else {
            return;
        };
        if total <= LONG_RUN_S {
            return;
        }
        let total_of = |h: &crate::hyper::Hyper| {
            estimate(h)
                .and_then(|e| e.times)
                .and_then(|t| t.total_s)
                .unwrap_or(f64::INFINITY)
        };
        let mut ways = Vec::new();
        let mut size = h.image_size as u64;
        while let Some(smaller) = size.checked_sub(1).and_then(|s| h.image_sizes.at_most(s)) {
            size = smaller;
            let t = total_of(&crate::hyper::Hyper {
                image_size: smaller as usize,
                ..*h
            });
            if t <= LONG_RUN_S {
                ways.push(format!(
                    "`image_size = {smaller}` (about {})",
                    duration_text(t)
                ));
                break;
            }
        }
        // Fewer epochs, the schedule kept in proportion: `init_epochs` may
        // not pass `num_epochs`.
        let shorter = |n: u64| {
            let init = if h.init_epochs > n {
                ((h.init_epochs as f64 * n as f64 / h.num_epochs as f64).round() as u64).clamp(1, n)
            } else {
                h.init_epochs
            };
            crate::hyper::Hyper {
                num_epochs: n,
                init_epochs: init,
                ..*h
            }
        };
        // The time grows with the epochs: the most epochs within the day.
        let (mut lo, mut hi) = (0u64, h.num_epochs.saturating_sub(1));
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if total_of(&shorter(mid)) <= LONG_RUN_S {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let fewer = (lo >= 1).then(|| (shorter(lo), total_of(&shorter(lo))));
        if let Some((c, t)) = fewer {
            let init = if c.init_epochs != h.init_epochs {
                format!(" with `init_epochs = {}`", c.init_epochs)
            } else {
                String::new()
            };
            ways.push(format!(
                "`num_epochs = {}`{init} (about {})",
                c.num_epochs,
                duration_text(t)
            ));
        }
        ways.push(if cfg!(feature = "cuda") {
            "a GPU (`device = cuda(0)`)".into()
        } else {
            "a GPU (a build with `--features cuda`, then `device = cuda(0)`)".into()
        });
        let times = e.times.as_ref();
        let step = times.map_or(String::new(), |t| duration_text(t.step_s));
        let at = f
            .span_of("num_epochs")
            .or(f.span_of("image_size"))
            .unwrap_or(f.use_span);
        self.push(
            Diagnostic::warning(
                Code::LongRun,
                at,
                format!(
                    "this run would take about {} on this machine",
                    duration_text(total)
                ),
            )
            .with_label(format!(
                "{} epochs of {} steps at {step} a step ({} at {} px)",
                h.num_epochs,
                found_steps(h, found),
                h.architecture.network_name(),
                h.image_size
            ))
            .with_help(format!(
                "to finish within a day: {}; times from {}",
                ways.join(", or "),
                times.map_or("", |t| t.source.as_str())
            )),
        );
    }

    /// `wf::memory` for a training step past the machine's memory `m`.
    fn memory_diagnostic(
        &mut self,
        t: &TemplateSpec,
        h: &crate::hyper::Hyper,
        f: &Fields,
        e: &crate::cost::Estimate,
        m: crate::cost::Memory,
        estimate: &dyn Fn(&crate::hyper::Hyper) -> Option<crate::cost::Estimate>,
    ) {
        use crate::cost::bytes_text;
        let weights = e.weight_bytes.saturating_add(e.optimizer_bytes);
        let weights_fill = weights > m.total;
        let at = if !weights_fill && e.train_peak_bytes.saturating_sub(weights) >= weights {
            f.span_of("batch_size")
                .or(f.span_of("image_size"))
                .unwrap_or(f.use_span)
        } else {
            f.at("embeddings_size")
        };
        let message = format!(
            "a training step needs about {} at its peak",
            bytes_text(e.train_peak_bytes as f64)
        );
        let cannot = e.train_peak_bytes > m.total.saturating_add(m.swap);
        let d = if cannot {
            Diagnostic::error(Code::Memory, at, message).with_label(format!(
                "more than the machine's {} of memory and {} of swap together: it cannot be allocated",
                bytes_text(m.total as f64),
                bytes_text(m.swap as f64)
            ))
        } else {
            Diagnostic::warning(Code::Memory, at, message).with_label(format!(
                "more than the machine's {} of memory: it would swap, many times slower",
                bytes_text(m.total as f64)
            ))
        };
        let weights_text = format!(
            "weights, gradients and momentum take {}",
            bytes_text(weights as f64)
        );
        let help = if weights_fill {
            match h.loss {
                crate::hyper::Loss::AngularMargin { .. } => format!(
                    "{weights_text}, more than the memory by themselves: lower `embeddings_size`"
                ),
                _ => format!("{weights_text}, more than the memory by themselves"),
            }
        } else {
            // The largest batch on the template's grid that fits.
            let on_grid = |b: usize| {
                t.param("batch_size").is_none_or(|p| {
                    p.check_value(
                        &crate::spec::ParamValue::Num(crate::spec::Num::Int(b as i64)),
                        f.use_span,
                    )
                    .is_ok()
                })
            };
            let fits = |b: usize| {
                estimate(&crate::hyper::Hyper {
                    batch_size: b,
                    ..*h
                })
                .is_some_and(|e| e.train_peak_bytes <= m.total)
            };
            let (mut lo, mut hi) = (0usize, h.batch_size);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if fits(mid) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            let batch = (2..=lo).rev().find(|&b| on_grid(b));
            match batch {
                Some(b) => format!(
                    "`batch_size = {b}` fits; {weights_text}; activations grow with `batch_size` and `image_size`"
                ),
                None => format!(
                    "no batch of two or more on the template's grid fits at `image_size = {}`: lower `image_size`; {weights_text}",
                    h.image_size
                ),
            }
        };
        self.push(d.with_help(help));
    }

    /// `init_epochs` within `num_epochs`; a rate that never decreases; a `step_epochs` that never applies.
    fn schedule_rules(&mut self, f: &Fields, t: &TemplateSpec) {
        if let (Some(init), Some(total)) = (f.num("init_epochs"), f.num("num_epochs")) {
            let step = f.num("step_epochs").unwrap_or(1.0);
            if init > total {
                let primary = f
                    .span_of("init_epochs")
                    .or(f.span_of("num_epochs"))
                    .unwrap_or(f.use_span);
                let mut d = Diagnostic::error(
                    Code::Schedule,
                    primary,
                    format!("`init_epochs` = {init} is beyond `num_epochs` = {total}"),
                )
                .with_label("more epochs at the initial rate than epochs in all")
                .with_help(format!("lower `init_epochs` to at most {total}, or raise `num_epochs` to at least {init}"));
                if let Some(other) = f.span_of("num_epochs").filter(|s| *s != primary) {
                    d = d.with_related(other, "the total number of epochs");
                }
                self.push(d);
            } else if init == total {
                self.push(
                    Diagnostic::warning(
                        Code::Schedule,
                        f.at("init_epochs"),
                        "the learning rate never decreases",
                    )
                    .with_label(if total == 1.0 {
                        "the one epoch runs at the initial rate".to_string()
                    } else {
                        format!("all {total} epochs run at the initial rate")
                    })
                    .with_help("lower `init_epochs` below `num_epochs` to let the rate decrease"),
                );
            } else if init + step >= total && f.span_of("step_epochs").is_some() {
                self.push(
                    Diagnostic::warning(Code::Schedule, f.at("step_epochs"), format!("`step_epochs` = {step} has no effect"))
                        .with_label(format!(
                            "the only decrease happens after epoch {init}; a second would come after epoch {}, past the last epoch {total}",
                            init + step
                        ))
                        .with_help(no_second_decrease_help(t, init, step, total)),
                );
            }
        }
    }

    /// Batch norm needs two images in a batch: a batch (or an epoch) of one trains nothing.
    fn batches_rules(&mut self, f: &Fields) {
        // Batch norm needs two images in a batch: a batch of one trains nothing.
        for (name, what) in [
            ("batch_size", "a batch of one image"),
            ("num_items_per_epoch", "an epoch of one image"),
        ] {
            if f.num(name) == Some(1.0) {
                self.push(
                    Diagnostic::error(
                        Code::OutOfRange,
                        f.at(name),
                        format!("`{name}` = 1 trains nothing"),
                    )
                    .with_label(format!("{what} is skipped: batch norm needs two images"))
                    .with_help(format!("set `{name}` to at least 2")),
                );
            }
        }
    }

    /// A rate of 0, or one high enough that training from scratch failed in measurements.
    fn learning_rate_rules(&mut self, f: &Fields, t: &TemplateSpec) {
        let recommended = t
            .param("per_item_lrate")
            .and_then(|p| match p.default.as_ref().map(|d| &d.value) {
                Some(DefaultValue::Value(ParamValue::Num(n))) => Some(n.as_f64()),
                _ => None,
            })
            .filter(|r| *r > 0.0);
        if let (Some(per_item), Some(batch)) = (f.num("per_item_lrate"), f.num("batch_size")) {
            let lrate = per_item * batch;
            if !lrate.is_finite() {
                self.push(
                    Diagnostic::error(
                        Code::LearningRate,
                        f.at("per_item_lrate"),
                        format!(
                            "`lrate` = {} × {} is not a finite number",
                            fmt_float(per_item),
                            batch
                        ),
                    )
                    .with_label("the weights would become infinite at the first step")
                    .with_help(match recommended {
                        Some(r) => format!(
                            "the template's default `per_item_lrate` is {}",
                            fmt_float(r)
                        ),
                        None => "lower `per_item_lrate`".to_string(),
                    }),
                );
            } else if per_item == 0.0 {
                self.push(
                    Diagnostic::warning(
                        Code::LearningRate,
                        f.at("per_item_lrate"),
                        "a learning rate of 0 never changes the weights",
                    )
                    .with_label("`per_item_lrate` = 0")
                    .with_help(match recommended {
                        Some(r) => format!("the template's default is {}", fmt_float(r)),
                        None => "set a positive `per_item_lrate`".to_string(),
                    }),
                );
            } else if lrate >= 0.1 {
                self.push(
                    Diagnostic::warning(
                        Code::LearningRate,
                        f.at("per_item_lrate"),
                        format!("`lrate` = {} × {} = {} is high", fmt_float(per_item), batch, fmt_float(lrate)),
                    )
                    .with_label("training from random weights failed for all three templates at `lrate` 0.1 in measurements")
                    .with_help(match recommended {
                        Some(r) => format!("try `per_item_lrate = {}` (`lrate` {}), the template's default", fmt_float(r), fmt_float(r * batch)),
                        None => "lower `per_item_lrate`".to_string(),
                    }),
                );
            }
        }
    }

    /// The seed's angular margin defaults learn more slowly from random
    /// weights on small data than gentler settings, as wfrun measured them
    /// (BENCHMARKS.md, "The angular margin's defaults from scratch").
    fn angular_rules(&mut self, f: &Fields, t: &TemplateSpec, has_weights: bool) {
        if t.architecture == Architecture::Resnet101AngularMargin && !has_weights {
            if let (Some(s), Some(m)) = (f.num("angular_scale"), f.num("angular_margin")) {
                if s >= 64.0 && m >= 0.5 {
                    let primary = f
                        .span_of("angular_margin")
                        .or(f.span_of("angular_scale"))
                        .unwrap_or(f.use_span);
                    self.push(
                        Diagnostic::warning(
                            Code::AngularFromScratch,
                            primary,
                            format!("`angular_scale` = {s} with `angular_margin` = {m} learns more slowly from random weights than gentler settings"),
                        )
                        .with_label("no `weights` in the `data` block")
                        .with_help("measured with wfrun on 3,000 real digit scans at 32 px, 6 epochs: held-out accuracy 0.81 and MAP@R 0.62 at 64 / 0.5, against 0.87 and 0.66 at `angular_scale = 16`, `angular_margin = 0.1` (and 0.90 against 0.93 on 1,400 photographs); start gentler on small data, or from pretrained `weights = \"model.safetensors\"`"),
                    );
                }
            }
        }
    }

    /// An epoch smaller than one batch.
    fn epoch_size_rules(&mut self, f: &Fields) {
        if let (Some(items), Some(batch)) = (f.num("num_items_per_epoch"), f.num("batch_size")) {
            if items < batch {
                self.push(
                    Diagnostic::warning(
                        Code::Schedule,
                        f.at("num_items_per_epoch"),
                        format!("an epoch of {items} images is smaller than one batch of {batch}"),
                    )
                    .with_label("every epoch is a single partial batch")
                    .with_help("raise `num_items_per_epoch` or lower `batch_size`"),
                );
            }
        }
    }
}

/// What to do about a `step_epochs` that never applies: lower it where a
/// value the template allows gives a second decrease (`init + step < total`),
/// otherwise raise `num_epochs` (within its maximum) or remove `step_epochs`.
fn no_second_decrease_help(t: &TemplateSpec, init: f64, step: f64, total: f64) -> String {
    let bound = |name: &str, which: fn(&ParamSpec) -> &Option<crate::spec::Declared<Num>>| {
        t.param(name)
            .and_then(|p| which(p).as_ref())
            .map(|d| d.value.as_f64())
    };
    let step_min = bound("step_epochs", |p| &p.min).unwrap_or(1.0);
    if total - init - 1.0 >= step_min {
        return format!(
            "lower `step_epochs` below {} for further decreases, or remove it",
            total - init
        );
    }
    let why = if total - init <= 1.0 {
        "one epoch follows `init_epochs`, so the rate decreases once whatever `step_epochs` is"
            .to_string()
    } else {
        format!(
            "{} epochs follow `init_epochs` and `step_epochs` is at least {step_min}, so the rate decreases once",
            total - init
        )
    };
    let needed = init + step + 1.0;
    if bound("num_epochs", |p| &p.max).is_none_or(|max| needed <= max) {
        format!("raise `num_epochs` to at least {needed} for a second decrease, or remove `step_epochs`: {why}")
    } else {
        format!("remove `step_epochs`: {why}")
    }
}

/// The resolved parameters of a `use` block, read by the rules.
/// Seconds past which a run gets a `wf::long-run` warning: a day.
pub const LONG_RUN_S: f64 = 86_400.0;

/// Optimizer steps per epoch with the data found (`?` when unknown).
fn found_steps(h: &crate::hyper::Hyper, found: &crate::plan::DataFound) -> String {
    h.num_items_per_epoch
        .resolve(&found.counts())
        .value()
        .map_or("?".into(), |n| {
            crate::plan::steps_per_epoch(n, h.batch_size as u64).to_string()
        })
}

struct Fields<'p> {
    params: &'p [(ResolvedParam, Written)],
    /// Where a rule points when the parameter was not written.
    use_span: Span,
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&(ResolvedParam, Written)> {
        self.params.iter().find(|(p, _)| &*p.name == name)
    }

    /// A number's value; one reported as wrong takes no part in the rules.
    fn num(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            (_, Written::Invalid) => None,
            (p, _) => match &p.value {
                Resolved::Value(ParamValue::Num(n)) => Some(n.as_f64()),
                _ => None,
            },
        }
    }

    /// Where it was written.
    fn span_of(&self, name: &str) -> Option<Span> {
        self.get(name).and_then(|(_, w)| w.span())
    }

    /// Where it was written, or the `use` block.
    fn at(&self, name: &str) -> Span {
        self.span_of(name).unwrap_or(self.use_span)
    }
}
