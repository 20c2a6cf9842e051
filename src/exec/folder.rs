//! The run folder: every file a run writes goes through here, atomically,
//! and a file that cannot be written stops the run naming its path.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarMap;
use serde::Serialize;

use super::RunError;
use crate::models::weights;
use crate::plan::Plan;
use crate::spec::ParamValue;
use crate::workflow::{ModelMeta, NamedValue};

/// Creates `path` and the folders above it.
pub(super) fn create(path: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(path).map_err(RunError::io(path))
}

/// Writes `bytes` to `path`, atomically.
pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    crate::atomic::write(path, bytes).map_err(RunError::io(path))
}

/// Writes `value` as pretty JSON.
pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RunError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(e),
    })?;
    write(path, text.as_bytes())
}

/// Writes named tensors as safetensors, atomically.
pub(super) fn write_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), RunError> {
    weights::save_tensors(tensors, path).map_err(RunError::io(path))
}

/// Writes every variable of `map`, atomically.
pub(super) fn write_weights(path: &Path, map: &VarMap) -> Result<(), RunError> {
    weights::save(map, path).map_err(RunError::io(path))
}

/// `model.json`: what the trained model is, from the plan that trained it.
pub(super) fn model_meta(plan: &Plan, concepts: &[String]) -> ModelMeta {
    ModelMeta {
        workflow: plan.workflow.clone(),
        template: plan.template.clone(),
        architecture: plan.architecture,
        image_size: plan.hyper.image_size,
        concepts: concepts.to_vec(),
        logreg: plan.hyper.loss.logreg(),
        params: plan
            .params
            .iter()
            .filter_map(|p| match &p.value {
                Some(ParamValue::Num(n)) => Some(NamedValue {
                    name: p.name.to_string(),
                    value: *n,
                }),
                _ => None,
            })
            .collect(),
    }
}
