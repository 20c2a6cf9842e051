//! Inlay hints: values the workflow derives, shown where they come from —
//! the learning rate after `per_item_lrate`, the steps after `batch_size`,
//! each phase's rate after `num_epochs`, and after the `use` block the
//! estimated time and peak memory of the run ([`crate::cost`]).

use crate::plan::{DataFound, Plan};
use crate::spec::fmt_float;
use crate::syntax::{Block, Item, Module};
use crate::{CheckOptions, Checked};

/// A hint an editor shows after byte `offset`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hint {
    pub offset: usize,
    pub label: String,
    /// What it is, in words (shown on hover).
    pub tooltip: String,
}

/// The hints of `text`, checked with `options` (editors check without the
/// file system while typing); `data` is what a full check last counted of
/// the data, when the editor kept it (steps and times need the image count).
pub fn inlay_hints(
    text: &str,
    name: &str,
    options: &CheckOptions,
    data: Option<&DataFound>,
) -> Vec<Hint> {
    let checked = crate::check_source(name, text, options);
    hints_of(&checked, data)
}

/// The hints of a checked file (none while it has errors: nothing is derived then).
pub fn hints_of(checked: &Checked, data: Option<&DataFound>) -> Vec<Hint> {
    let Some(w) = &checked.workflow else {
        return Vec::new();
    };
    let Some(block) = use_block(&checked.module) else {
        return Vec::new();
    };
    if w.sweep.is_some() {
        // Each trial has its own values: `wfrun plan` lists them.
        return Vec::new();
    }
    let found = data
        .cloned()
        .unwrap_or_else(|| DataFound::counted(w.dataset.as_ref(), &w.data.eval));
    let plan = Plan::with_data(w, found);
    let value_end = |name: &str| {
        block
            .settings()
            .find(|s| &*s.name.name == name)
            .map(|s| s.value.span.end)
    };
    let mut hints = Vec::new();
    let h = &plan.hyper;
    if let Some(at) = value_end("per_item_lrate").or_else(|| value_end("batch_size")) {
        hints.push(Hint {
            offset: at,
            label: format!("lrate {}", fmt_float(plan.lrate)),
            tooltip: format!(
                "lrate = batch_size × per_item_lrate = {} × {} = {}",
                h.batch_size,
                fmt_float(h.per_item_lrate),
                fmt_float(plan.lrate)
            ),
        });
    }
    if let (Some(at), Some(spe), Some(total), Some(items)) = (
        value_end("batch_size"),
        plan.steps_per_epoch,
        plan.optimizer_steps,
        plan.items_per_epoch,
    ) {
        hints.push(Hint {
            offset: at,
            label: format!("{spe} steps an epoch, {total} in all"),
            tooltip: format!(
                "⌈{items} images per epoch / {}⌉ = {spe} steps an epoch × {} epochs = {total} optimizer steps",
                h.batch_size, h.num_epochs
            ),
        });
    }
    let at = value_end("num_epochs")
        .or_else(|| value_end("init_epochs"))
        .or_else(|| value_end("step_epochs"));
    if let (Some(at), false) = (at, plan.rate_phases.is_empty()) {
        let phase = |p: &crate::plan::RatePhase| {
            let epochs = if p.first_epoch == p.last_epoch {
                p.first_epoch.to_string()
            } else {
                format!("{}–{}", p.first_epoch, p.last_epoch)
            };
            format!("{epochs}: {}", fmt_float(p.learning_rate))
        };
        let shown: Vec<String> = plan.rate_phases.iter().take(3).map(phase).collect();
        let more = if plan.rate_phases.len() > 3 {
            ", …"
        } else {
            ""
        };
        hints.push(Hint {
            offset: at,
            label: format!("epochs {}{more}", shown.join(", ")),
            tooltip: format!(
                "the learning rate of each epoch: {}",
                plan.rate_phases
                    .iter()
                    .map(phase)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if let Some(c) = &plan.cost {
        use crate::cost::{bytes_text, duration_text};
        let mut parts = Vec::new();
        let mut tip = vec![format!(
            "{} at {} px: {} parameters, {} multiply-adds per image trained",
            plan.architecture.network_name(),
            c.counts.image_size,
            crate::cost::count_text(c.counts.params as f64),
            crate::cost::count_text(c.counts.macs_train as f64)
        )];
        if let Some(t) = &c.times {
            parts.push(format!("{} a step", duration_text(t.step_s)));
            if let Some(e) = t.epoch_s {
                parts.push(format!("{} an epoch", duration_text(e)));
            }
            if let Some(total) = t.total_s {
                let what = if t.complete { "in all" } else { "training" };
                parts.push(format!("{} {what}", duration_text(total)));
            }
            tip.push(format!("times from {}", t.source));
        }
        parts.push(format!("peak {}", bytes_text(c.train_peak_bytes as f64)));
        tip.push(format!(
            "peak memory of a training step (batch {}); embedding {}",
            c.batch_size,
            bytes_text(c.embed_peak_bytes as f64)
        ));
        hints.push(Hint {
            offset: block.span.end,
            label: format!("≈ {}", parts.join(", ")),
            tooltip: tip.join("\n"),
        });
    }
    hints.sort_by_key(|h| h.offset);
    hints
}

fn use_block(module: &Module) -> Option<&Block> {
    module.items.iter().find_map(|i| match i {
        Item::Use(u) => u.body.as_ref(),
        _ => None,
    })
}
