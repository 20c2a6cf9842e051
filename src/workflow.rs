//! A checked workflow: every value resolved, every path made absolute.
//!
//! This is what the checker hands to the planner and, later, the executor. It
//! exists only when the checker found no error.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hyper::{Hyper, StepParams};
use crate::spec::{Derived, Num, ParamValue, StepKindId, TemplateSpec};

/// Where a resolved value came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "origin", rename_all = "snake_case")]
pub enum Origin {
    /// Written in the workflow, on this 1-based line.
    Set { line: usize },
    /// The default of this template (or step kind).
    Default { from: Arc<str> },
    /// Derived at plan time (e.g. the number of training images).
    Derived { from: Arc<str>, derived: Derived },
    /// Recorded in the base model's `model.json`.
    Base { model: Arc<str> },
    /// Swept by the `sweep` block, on this 1-based line: each trial sets it.
    Swept { line: usize },
}

/// A resolved value: known now, or derived once the data is counted.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resolved {
    Value(ParamValue),
    Derived(Derived),
}

/// One parameter of the template or of a step, resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolvedParam {
    pub name: Arc<str>,
    pub value: Resolved,
    #[serde(flatten)]
    pub origin: Origin,
}

/// Where images come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "snake_case")]
pub enum ImageSource {
    /// A folder with one sub-folder per concept.
    Folder(#[serde(serialize_with = "crate::paths::lossy")] PathBuf),
    /// A CSV or JSON-lines file listing images and their concepts.
    Manifest(#[serde(serialize_with = "crate::paths::lossy")] PathBuf),
}

impl ImageSource {
    pub fn path(&self) -> &PathBuf {
        match self {
            ImageSource::Folder(p) | ImageSource::Manifest(p) => p,
        }
    }

    /// Its images, as an evaluation set reads them (one concept is enough).
    pub fn read(&self) -> Result<crate::data::Dataset, crate::data::DataError> {
        match self {
            ImageSource::Folder(p) => crate::data::Dataset::read_folder(p),
            ImageSource::Manifest(p) => crate::data::Dataset::read_manifest(p),
        }
    }
}

/// The evaluation images.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Eval {
    /// This fraction of each concept's training images, held out deterministically
    /// from the seed (`data::split`).
    Fraction(f64),
    /// Images of their own.
    Images(ImageSource),
}

/// The fraction held out when a workflow names no evaluation images.
pub const DEFAULT_EVAL_FRACTION: f64 = 0.1;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataSpec {
    pub train: ImageSource,
    pub eval: Eval,
    /// Pretrained weights (safetensors) to start from.
    #[serde(serialize_with = "crate::paths::lossy_opt")]
    pub weights: Option<PathBuf>,
    /// Images of concepts never trained on: the trained model embeds them
    /// and its embeddings are judged on them (`steps::judge`), the field's
    /// test of a base model for other workflows.
    pub unseen: Option<ImageSource>,
    /// How training images are varied each epoch (`augment`).
    #[serde(skip_serializing_if = "Augment::is_default")]
    pub augment: Augment,
}

/// How training images are varied each epoch (`data { augment = .. }`).
/// Evaluation always takes the centre crop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    /// A random `image_size` crop (room only where the image is not square,
    /// or is exactly `image_size` square: then within a border of 4 black
    /// pixels, as torchvision's CIFAR recipe) and a horizontal flip half the
    /// time.
    #[default]
    CropFlip,
    /// A random crop, never flipped: for digits, text, anything whose mirror
    /// image is something else.
    Crop,
    /// The centre crop, as evaluation sees it.
    None,
}

impl Augment {
    pub const NAMES: [&'static str; 3] = ["crop_flip", "crop", "none"];

    pub fn is_default(&self) -> bool {
        *self == Augment::CropFlip
    }

    pub fn name(self) -> &'static str {
        match self {
            Augment::CropFlip => "crop_flip",
            Augment::Crop => "crop",
            Augment::None => "none",
        }
    }

    pub fn from_name(name: &str) -> Option<Augment> {
        match name {
            "crop_flip" => Some(Augment::CropFlip),
            "crop" => Some(Augment::Crop),
            "none" => Some(Augment::None),
            _ => None,
        }
    }

    /// In words, for the plan.
    pub fn describe(self) -> &'static str {
        match self {
            Augment::CropFlip => "random crops and horizontal flips",
            Augment::Crop => "random crops, never flipped",
            Augment::None => "none: the centre crop, as evaluation sees it",
        }
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    /// The best device this build can use: CUDA, then Metal, then the CPU.
    Auto,
    Cuda(usize),
    Metal(usize),
}

impl Device {
    /// Whether the network runs on the host's CPU (and memory): `cpu`, or
    /// `auto` in a build without accelerators.
    pub fn on_host(self) -> bool {
        match self {
            Device::Cpu => true,
            Device::Auto => !cfg!(any(feature = "cuda", feature = "metal")),
            Device::Cuda(_) | Device::Metal(_) => false,
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    /// `cpu`, `auto`, `cuda`, `metal`, or with an index: `cuda(1)`, `cuda:1`.
    fn from_str(text: &str) -> Result<Device, String> {
        let text = text.trim();
        let (name, index) = match text.find(['(', ':']) {
            Some(at) => {
                let digits = text[at + 1..].trim_end_matches(')');
                let index = digits.parse::<usize>().map_err(|_| {
                    format!("`{text}`: the device index is a whole number, as in `cuda(0)`")
                })?;
                (&text[..at], Some(index))
            }
            None => (text, None),
        };
        match (name, index) {
            ("cpu", None) => Ok(Device::Cpu),
            ("auto", None) => Ok(Device::Auto),
            ("cuda", i) => Ok(Device::Cuda(i.unwrap_or(0))),
            ("metal", i) => Ok(Device::Metal(i.unwrap_or(0))),
            _ => Err(format!(
                "`{text}` is not a device: use `cpu`, `auto`, `cuda`, `cuda(N)`, `metal` or `metal(N)`"
            )),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Auto => f.write_str("auto"),
            Device::Cuda(n) => write!(f, "cuda({n})"),
            Device::Metal(n) => write!(f, "metal({n})"),
        }
    }
}

/// A downstream step, resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepSpec {
    pub kind: StepKindId,
    /// The alias (`as NAME`) or the kind's name; unique in a workflow.
    pub name: String,
    /// The parameters with their origins, as `wfrun plan` shows them.
    pub params: Vec<ResolvedParam>,
    /// The same, typed.
    pub typed: StepParams,
}

/// What the checker learnt of the training folder (when it looked).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetSummary {
    /// Images per concept: a folder's in name order, a manifest's in order
    /// of appearance (the network's output order either way).
    pub concepts: Vec<(String, usize)>,
    /// Distinct images (an image of several concepts counts once).
    pub images: usize,
    /// Whether some image has several concepts (a manifest's).
    pub multi_label: bool,
    /// The sizes of the strata a held-out fraction is drawn from, one per
    /// concept in the same order: the images whose first concept it is
    /// (`data::split`). Unlabelled images are one stratum.
    pub strata: Vec<usize>,
    /// The unseen images that exist and their concepts with images
    /// (`data { unseen = .. }`), when the checker read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen: Option<(usize, usize)>,
}

impl DatasetSummary {
    pub fn images(&self) -> usize {
        self.images
    }
}

/// One hyperparameter as `model.json` records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedValue {
    pub name: String,
    pub value: Num,
}

/// What `model.json` beside a trained model says about it; a finished run
/// writes it, and a workflow with `base = ".."` reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The workflow that trained the model.
    pub workflow: String,
    pub template: String,
    pub architecture: crate::spec::Architecture,
    /// The side of the square the network sees.
    pub image_size: usize,
    /// The concepts of its training data, in the order of the network's outputs.
    pub concepts: Vec<String>,
    pub logreg: bool,
    /// Every hyperparameter it was trained with (derived ones resolved); the
    /// checker types them again when a workflow uses the model as its base.
    pub params: Vec<NamedValue>,
}

impl ModelMeta {
    /// Reads the text of a `model.json`.
    pub fn from_json(text: &str) -> Result<ModelMeta, String> {
        let meta: ModelMeta = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !(1..=1 << 16).contains(&meta.image_size) {
            return Err(format!(
                "`image_size` = {} is not a size in pixels",
                meta.image_size
            ));
        }
        if let Some(p) = meta.params.iter().find(|p| !p.value.as_f64().is_finite()) {
            return Err(format!("the value of `{}` is not finite", p.name));
        }
        // A concept named twice would make two outputs one name: a
        // prediction could not say which it meant.
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = meta.concepts.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(format!(
                "the concept `{}` is listed twice in `concepts`",
                crate::paths::escape_controls(twice)
            ));
        }
        Ok(meta)
    }

    /// The JSON a run writes beside its model.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// A finished run's model, used frozen: the workflow embeds its images with it
/// and runs its steps without training.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaseModel {
    /// The weights (`model.safetensors`).
    #[serde(serialize_with = "crate::paths::lossy")]
    pub weights: PathBuf,
    /// `model.json` beside them.
    #[serde(serialize_with = "crate::paths::lossy")]
    pub meta_path: PathBuf,
    pub meta: ModelMeta,
}

/// A workflow the checker accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub name: String,
    /// The machine the checker estimated costs for (`CheckOptions::machine`).
    pub machine: crate::cost::Machine,
    /// The folder relative paths are resolved against (the workflow file's).
    pub base_dir: PathBuf,
    pub template: TemplateSpec,
    /// The parameters with their origins, as `wfrun plan` shows them.
    pub params: Vec<ResolvedParam>,
    /// The same, typed: what the planner and the run read.
    pub hyper: Hyper,
    pub data: DataSpec,
    pub device: Device,
    pub output: PathBuf,
    pub seed: u64,
    pub steps: Vec<StepSpec>,
    /// The training folder's concepts and image counts, when the checker read it.
    pub dataset: Option<DatasetSummary>,
    /// A finished run's model to use frozen instead of training one. The
    /// template and hyperparameters are then the base model's.
    pub base: Option<BaseModel>,
    /// The trials of a `sweep` block: each is this workflow with its values
    /// ([`Workflow::trial`]). `params` and `hyper` above are then the first
    /// trial's, the swept parameters' origin [`Origin::Swept`].
    pub sweep: Option<crate::sweep::Sweep>,
}

impl Workflow {
    /// The workflow of the sweep's trial `index`: its hyperparameters, and
    /// its own run folder under the sweep's output. `None` without a sweep
    /// or past its last trial.
    pub fn trial(&self, index: usize) -> Option<Workflow> {
        let sweep = self.sweep.as_ref()?;
        let trial = sweep.trials.get(index)?;
        // Field by field: cloning `self` would copy every trial for each.
        Some(Workflow {
            name: format!("{}/{}", self.name, trial.name),
            machine: self.machine.clone(),
            base_dir: self.base_dir.clone(),
            template: self.template.clone(),
            params: trial.params.clone(),
            hyper: trial.hyper,
            data: self.data.clone(),
            device: self.device,
            output: self.output.join(&trial.name),
            seed: trial.seed,
            steps: self.steps.clone(),
            dataset: self.dataset.clone(),
            base: self.base.clone(),
            sweep: None,
        })
    }
}
