//! Checkpoints and resuming: the weights, batch-norm statistics and momentum
//! after an epoch (or part of one, when a run is cancelled).

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::Deserialize;

use super::{folder, RunError};
use crate::models::optim::Sgd;
use crate::models::weights;

/// Where a run resumes: finished epochs and steps of the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Position {
    pub epoch: u64,
    pub step: usize,
}

/// Saves the weights, batch-norm statistics and momentum at `at`.
pub(super) fn save(map: &VarMap, sgd: &Sgd, path: &Path, at: Position) -> Result<(), RunError> {
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
    Ok(Position {
        epoch: u64::from(epoch),
        step: scalar("step")?.unwrap_or(0) as usize,
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
