//! Weights in safetensors files: saving, and loading with a report of what
//! did not match, by name.
//!
//! Tensor names follow PyTorch (`layer1.0.conv1.weight`, `bn1.running_mean`),
//! so a state dict converted with `scripts/convert_state_dict.py` loads.

use crate::paths::ShowPath;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor};
use candle_nn::VarMap;

/// What loading a weights file did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors copied into the network.
    pub loaded: usize,
    /// Tensors the network has and the file lacks (they keep their initial values).
    pub missing: Vec<String>,
    /// Tensors the file has and the network does not use (PyTorch's
    /// `num_batches_tracked` counters are not listed).
    pub unexpected: Vec<String>,
    /// Tensors present in both with different shapes: (name, network's, file's).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// True when every tensor of the network came from the file.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tensors loaded", self.loaded)?;
        let list = |names: &[String]| {
            let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            let more = names.len().saturating_sub(shown.len());
            if more > 0 {
                format!("{} and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        if !self.missing.is_empty() {
            write!(
                f,
                "; {} missing from the file: {}",
                self.missing.len(),
                list(&self.missing)
            )?;
        }
        if !self.unexpected.is_empty() {
            write!(
                f,
                "; {} unused: {}",
                self.unexpected.len(),
                list(&self.unexpected)
            )?;
        }
        for (name, want, got) in &self.mismatched {
            write!(
                f,
                "; `{name}` has shape {got:?} in the file but {want:?} in the network"
            )?;
        }
        Ok(())
    }
}

fn to_io(e: candle_core::Error) -> std::io::Error {
    match e {
        candle_core::Error::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Writes named tensors to a safetensors file, atomically.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> std::io::Result<()> {
    crate::atomic::replace(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(to_io)
    })
}

/// Writes every variable of `map` (parameters and batch-norm statistics) to
/// `path`, atomically.
pub fn save(map: &VarMap, path: &Path) -> std::io::Result<()> {
    crate::atomic::replace(path, |tmp| map.save(tmp).map_err(to_io))
}

/// Copies the tensors of the safetensors file at `path` into the variables of
/// `map` with the same names, converting the dtype; reports the rest.
pub fn load(map: &VarMap, path: &Path) -> Result<LoadReport> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
        candle_core::Error::Msg(format!("cannot read weights `{}`: {e}", path.shown()))
    })?;
    load_tensors(map, &tensors)
}

/// [`load`] from tensors already in memory, keyed by PyTorch name.
pub fn load_tensors(map: &VarMap, tensors: &HashMap<String, Tensor>) -> Result<LoadReport> {
    let data = map
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut report = LoadReport::default();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        match tensors.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => {
                report
                    .mismatched
                    .push((name.clone(), var.dims().to_vec(), t.dims().to_vec()))
            }
            Some(t) => {
                let t: Tensor = t.to_dtype(var.dtype())?.to_device(var.device())?;
                var.set(&t)?;
                report.loaded += 1;
            }
        }
    }
    let known: std::collections::BTreeSet<&String> = data.keys().collect();
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !known.contains(k) && !k.ends_with("num_batches_tracked"))
        .cloned()
        .collect();
    unexpected.sort();
    report.unexpected = unexpected;
    Ok(report)
}
