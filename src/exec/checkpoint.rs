//! Checkpoints and resuming: the weights, batch-norm statistics and momentum
//! after an epoch (or part of one, when a run is cancelled).

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::Deserialize;

use super::{folder, RunError};
use crate::models::optim::Sgd;
use crate::models::weights;
use crate::paths::FromWorkflow;
use crate::workflow::Eval;

/// Where a run resumes: finished epochs and steps of the next, with the
/// losses of those steps (so the epoch's mean loss covers all of it).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Position {
    pub epoch: u64,
    pub step: usize,
    pub losses: Vec<f32>,
}

/// Saves the weights, batch-norm statistics and momentum at `at`.
pub(super) fn save(
    map: &VarMap,
    sgd: &Sgd,
    path: &Path,
    at: &Position,
    basis: &Bases,
) -> Result<(), RunError> {
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
    let record = Tensor::new(basis.main.as_bytes(), &Device::Cpu)?;
    tensors.insert(BASIS_TENSOR.into(), record);
    let record = Tensor::new(basis.relative.as_bytes(), &Device::Cpu)?;
    tensors.insert(RELATIVE_BASIS_TENSOR.into(), record);
    let record = Tensor::new(basis.images.as_bytes(), &Device::Cpu)?;
    tensors.insert(IMAGES_TENSOR.into(), record);
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
/// names, and a digest of which image is in which concept (the steps may
/// change; they run after training).
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
    /// FNV-1a of every training and evaluation image with its concepts, in
    /// the order the sets hold them (so also which are held out).
    images_and_concepts: String,
    /// FNV-1a of the same images and concepts in path order, whichever set
    /// holds them: tells a changed held-out split from changed images.
    images: String,
    /// FNV-1a of the same images' paths and digests of their bytes, in path
    /// order: tells an image edited or replaced under its name.
    contents: String,
    /// FNV-1a of the same images' paths and the set holding each, in path
    /// order: tells the same split listed in another order (a manifest's
    /// lines reordered) from another split.
    split: String,
}

/// The two records of what training depends on that a checkpoint keeps,
/// its paths named two ways ([`Naming::Workflow`], [`Naming::Relative`]):
/// a resume continues when either is what it was.
pub(super) struct Bases {
    pub main: String,
    pub relative: String,
    /// Every training and evaluation image ([`image_list`]): a refused
    /// resume names the images that changed.
    pub images: String,
}

/// How a basis names the paths it records.
pub(super) enum Naming<'a> {
    /// Relative to the workflow's folder (`Workflow::base_dir`) where they
    /// lie inside it, else absolute with links resolved: the same workflow
    /// started from another folder names the same paths, and so does the
    /// workflow's folder moved away from data it names absolutely.
    Workflow(&'a Path),
    /// Relative to the workflow's folder wherever they lie (`../data`), with
    /// links resolved: the workflow's folder moved together with data
    /// beside it names the same paths.
    Relative(&'a Path),
    /// As the run reads them, relative to the folder it started in (what
    /// checkpoints of earlier versions recorded).
    AsRead,
}

/// The JSON of what training depends on, recorded in each checkpoint, its
/// paths named as `naming` says.
pub(super) fn basis(
    plan: &crate::plan::Plan,
    sets: &super::sets::DataSets,
    contents: &super::sets::Contents,
    naming: Naming,
) -> String {
    let names = naming.names();
    let mut digest = Fnv::default();
    let mut all = Vec::new();
    let mut bytes = contents.0.iter();
    for (held_out, set) in [&sets.train, &sets.eval].into_iter().enumerate() {
        for (path, concepts) in set.paths.iter().zip(&set.concepts) {
            let path = names.name(path);
            digest.image(&path, concepts, &sets.concepts);
            all.push((path, concepts, bytes.next().copied().flatten(), held_out));
        }
        digest.eat(b"--");
    }
    all.sort();
    let mut images = Fnv::default();
    let mut contents = Fnv::default();
    let mut split = Fnv::default();
    for (path, concepts, bytes, held_out) in all {
        images.image(&path, concepts, &sets.concepts);
        split.eat(path.as_os_str().as_encoded_bytes());
        split.eat(&[held_out as u8 + 1]);
        contents.eat(path.as_os_str().as_encoded_bytes());
        contents.eat(&bytes.map_or([0xff; 9], |b| {
            let mut a = [0u8; 9];
            a[1..].copy_from_slice(&b.to_le_bytes());
            a
        }));
    }
    // The unseen images are judged, never trained on: adding or changing
    // them does not change what a checkpoint continues.
    let data = crate::plan::PlannedData {
        train: names.source(&plan.data.train),
        eval: match &plan.data.eval {
            Eval::Images(source) => Eval::Images(names.source(source)),
            fraction => fraction.clone(),
        },
        weights: plan.data.weights.as_deref().map(|p| names.name(p)),
        unseen: None,
        unseen_images: None,
        unseen_concepts: None,
        ..plan.data.clone()
    };
    let basis = Basis {
        template: &plan.template,
        architecture: plan.architecture,
        hyper: &plan.hyper,
        seed: plan.seed,
        data: &data,
        epoch_learning_rates: &plan.epoch_learning_rates,
        items_per_epoch: plan.items_per_epoch,
        steps_per_epoch: plan.steps_per_epoch,
        images_and_concepts: format!("{:016x}", digest.0),
        images: format!("{:016x}", images.0),
        contents: format!("{:016x}", contents.0),
        split: format!("{:016x}", split.0),
    };
    serde_json::to_string(&basis).unwrap_or_default()
}

impl Naming<'_> {
    fn names(&self) -> FromWorkflow {
        match self {
            Naming::Workflow(base) => FromWorkflow::new(base),
            Naming::Relative(base) => FromWorkflow::relative(base),
            Naming::AsRead => FromWorkflow::as_given(),
        }
    }
}

/// Every training and evaluation image as JSON, in path order: its path
/// named as `naming` says, its concepts, and the digest of its bytes (null
/// where it could not be read), for [`crate::changed::image_changes`].
pub(super) fn image_list(
    sets: &super::sets::DataSets,
    contents: &super::sets::Contents,
    naming: Naming,
) -> String {
    let names = naming.names();
    let mut bytes = contents.0.iter();
    let mut all = Vec::new();
    for set in [&sets.train, &sets.eval] {
        for (path, concepts) in set.paths.iter().zip(&set.concepts) {
            let concepts: Vec<&str> = concepts
                .iter()
                .map(|&c| sets.concepts[c].as_str())
                .collect();
            let digest = bytes.next().copied().flatten().map(|b| format!("{b:016x}"));
            all.push((
                names.name(path).to_string_lossy().into_owned(),
                concepts,
                digest,
            ));
        }
    }
    all.sort();
    serde_json::to_string(&all).unwrap_or_default()
}

/// The images a checkpoint was trained on ([`image_list`]): `None` when it
/// records none (an earlier version made it).
pub(super) fn recorded_images(path: &Path) -> std::io::Result<Option<String>> {
    recorded_text(path, IMAGES_TENSOR)
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn eat(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// One image: its path and its concepts' names.
    fn image(&mut self, path: &Path, concepts: &[usize], names: &[String]) {
        self.eat(path.as_os_str().as_encoded_bytes());
        for c in concepts {
            self.eat(names[*c].as_bytes());
            self.eat(b"\0");
        }
        self.eat(b"\n");
    }
}

/// The basis a checkpoint recorded, read from the safetensors header and the
/// one tensor holding it (not the weights): `None` when it records none.
pub(super) fn recorded_basis(path: &Path) -> std::io::Result<Option<String>> {
    recorded_text(path, BASIS_TENSOR)
}

/// The basis with paths named [`Naming::Relative`], which checkpoints of
/// earlier versions do not record.
pub(super) fn recorded_relative_basis(path: &Path) -> std::io::Result<Option<String>> {
    recorded_text(path, RELATIVE_BASIS_TENSOR)
}

fn recorded_text(path: &Path, tensor: &str) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a safetensors file");
    if len > 100 << 20 {
        return Err(bad());
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)?;
    let header: serde_json::Value = serde_json::from_slice(&header).map_err(|_| bad())?;
    let Some(offsets) = header[tensor]["data_offsets"].as_array() else {
        return Ok(None);
    };
    let (Some(a), Some(b)) = (offsets[0].as_u64(), offsets.get(1).and_then(|b| b.as_u64())) else {
        return Err(bad());
    };
    if b < a || b - a > 100 << 20 {
        return Err(bad());
    }
    f.seek(SeekFrom::Start(8 + len + a))?;
    let mut text = vec![0u8; (b - a) as usize];
    f.read_exact(&mut text)?;
    String::from_utf8(text).map(Some).map_err(|_| bad())
}

/// The checkpoint tensor holding the basis (its JSON's bytes).
const BASIS_TENSOR: &str = "wfrun.plan";
const RELATIVE_BASIS_TENSOR: &str = "wfrun.plan.relative";
const IMAGES_TENSOR: &str = "wfrun.images";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_epochs_a_checkpoint_holds_are_kept() {
        assert_eq!(
            kept_metrics("{\"epoch\":1}\n{\"epoch\":2}\nnot json\n", 1),
            "{\"epoch\":1}\n"
        );
    }
}
