//! Checkpoints and resuming: the weights, batch-norm statistics and momentum
//! after an epoch (or part of one, when a run is cancelled).

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::Deserialize;

use super::{folder, RunError};
use crate::models::optim::Sgd;
use crate::models::weights;

/// Where a run resumes: finished epochs and steps of the next, with the
/// losses of those steps (so the epoch's mean loss covers all of it).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Position {
    pub epoch: u64,
    pub step: usize,
    pub losses: Vec<f32>,
}

/// Saves the weights, batch-norm statistics and momentum at `at`.
pub(super) fn save(map: &VarMap, sgd: &Sgd, path: &Path, at: &Position) -> Result<(), RunError> {
    let mut tensors: std::collections::HashMap<String, Tensor> = map
        .data()
        .lock()
        .map_err(|_| RunError::Unsupported("the network's variables are poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    for (name, v) in sgd.velocities() {
        tensors.insert(format!("sgd.velocity.{name}"), v);
    }
    let epoch = u32::try_from(at.epoch).unwrap_or(u32::MAX);
    let step = u32::try_from(at.step).unwrap_or(u32::MAX);
    tensors.insert("epoch".into(), Tensor::new(&[epoch], &Device::Cpu)?);
    tensors.insert("step".into(), Tensor::new(&[step], &Device::Cpu)?);
    if !at.losses.is_empty() {
        let losses = Tensor::new(at.losses.as_slice(), &Device::Cpu)?;
        tensors.insert("epoch_losses".into(), losses);
    }
    folder::write_tensors(path, &tensors)
}

/// Loads the checkpoint into `map` and `sgd`.
pub(super) fn load(map: &VarMap, sgd: &mut Sgd, path: &Path) -> Result<Position, RunError> {
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
    let scalar = |name: &str| -> Result<Option<u32>, RunError> {
        match tensors.get(name) {
            None => Ok(None),
            Some(t) => Ok(t.to_vec1::<u32>()?.first().copied()),
        }
    };
    let epoch = scalar("epoch")?.ok_or_else(|| bad("no epoch recorded".into()))?;
    let losses = match tensors.get("epoch_losses") {
        Some(t) => t.to_vec1::<f32>()?,
        None => Vec::new(),
    };
    Ok(Position {
        epoch: u64::from(epoch),
        step: scalar("step")?.unwrap_or(0) as usize,
        losses,
    })
}

#[derive(Deserialize)]
struct EpochLine {
    epoch: u64,
}

/// The lines of a previous `metrics.jsonl` that the checkpoint holds: a run
/// killed between writing an epoch's metrics and its checkpoint repeats that
/// epoch.
pub(super) fn kept_metrics(previous: &str, finished_epochs: u64) -> String {
    let mut kept = String::new();
    for line in previous.lines() {
        let epoch = serde_json::from_str::<EpochLine>(line)
            .ok()
            .map(|l| l.epoch);
        if epoch.is_some_and(|e| e <= finished_epochs) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// What a checkpoint's training depends on: the plan's fields of the same
/// names (the steps may change; they run after training).
#[derive(serde::Serialize)]
struct Basis<'a> {
    template: &'a str,
    architecture: crate::spec::Architecture,
    hyper: &'a crate::hyper::Hyper,
    seed: u64,
    data: &'a crate::plan::PlannedData,
    epoch_learning_rates: &'a [f64],
    items_per_epoch: Option<u64>,
    steps_per_epoch: Option<u64>,
}

/// How the plan a run was checkpointed under (`previous`, its `plan.json`)
/// and `plan` differ in what training depends on: `path: old → new` for each
/// value that changed.
pub(super) fn plan_changes(previous: &str, plan: &crate::plan::Plan) -> Vec<String> {
    let basis = Basis {
        template: &plan.template,
        architecture: plan.architecture,
        hyper: &plan.hyper,
        seed: plan.seed,
        data: &plan.data,
        epoch_learning_rates: &plan.epoch_learning_rates,
        items_per_epoch: plan.items_per_epoch,
        steps_per_epoch: plan.steps_per_epoch,
    };
    let (Ok(old), Ok(serde_json::Value::Object(new))) = (
        serde_json::from_str::<serde_json::Value>(previous),
        serde_json::to_value(&basis),
    ) else {
        return vec!["`plan.json` cannot be read".into()];
    };
    let mut changes = Vec::new();
    for (key, value) in &new {
        differences(key, &old[key.as_str()], value, &mut changes);
    }
    changes
}

fn differences(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (x, y) = (&a.get(k), &b.get(k));
                differences(
                    &format!("{path}.{k}"),
                    x.unwrap_or(&Value::Null),
                    y.unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} → {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_training_depends_on_counts_as_a_change() {
        let mut out = Vec::new();
        let old = serde_json::json!({"num_epochs": 4, "loss": {"loss": "softmax"}});
        let new = serde_json::json!({"num_epochs": 2, "loss": {"loss": "softmax"}});
        differences("hyper", &old, &new, &mut out);
        assert_eq!(out, ["hyper.num_epochs: 4 → 2"]);
        assert_eq!(
            kept_metrics("{\"epoch\":1}\n{\"epoch\":2}\nnot json\n", 1),
            "{\"epoch\":1}\n"
        );
    }
}
