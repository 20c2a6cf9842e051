//! A checked workflow: every value resolved, every path made absolute.
//!
//! This is what the checker hands to the planner and, later, the executor. It
//! exists only when the checker found no error.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

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
    Folder(PathBuf),
    /// A CSV or JSON-lines file listing images and their concepts.
    Manifest(PathBuf),
}

impl ImageSource {
    pub fn path(&self) -> &PathBuf {
        match self {
            ImageSource::Folder(p) | ImageSource::Manifest(p) => p,
        }
    }
}

/// The evaluation images.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Eval {
    /// This fraction of the training images, held out deterministically from the seed.
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
    pub weights: Option<PathBuf>,
}

/// The device a workflow runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    /// The best device this build can use: CUDA, then Metal, then the CPU.
    Auto,
    Cuda(usize),
    Metal(usize),
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
    pub params: Vec<ResolvedParam>,
}

/// What the checker learnt of the training folder (when it looked).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatasetSummary {
    /// Images per concept, in name order.
    pub concepts: Vec<(String, usize)>,
}

impl DatasetSummary {
    pub fn images(&self) -> usize {
        self.concepts.iter().map(|(_, n)| n).sum()
    }
}

/// What `model.json` beside a trained model says about it; a finished run
/// writes it, and a workflow with `base = ".."` reads it.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// Every hyperparameter it was trained with (derived ones resolved).
    pub params: Vec<(String, Num)>,
}

impl ModelMeta {
    /// Reads the text of a `model.json`.
    pub fn from_json(text: &str) -> Result<ModelMeta, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("it is not JSON ({e})"))?;
        let field = |k: &str| v.get(k).ok_or_else(|| format!("it has no `{k}`"));
        let text = |k: &str| -> Result<String, String> {
            field(k)?
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{k}` is not text"))
        };
        let architecture = text("architecture")?;
        let architecture = crate::spec::Architecture::from_name(&architecture)
            .ok_or_else(|| format!("it names an unknown architecture `{architecture}`"))?;
        let image_size = field("image_size")?
            .as_u64()
            .filter(|&n| (1..=1 << 16).contains(&n))
            .ok_or("`image_size` is not a size in pixels")? as usize;
        let concepts = field("concepts")?
            .as_array()
            .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect())
            .ok_or("`concepts` is not a list of names")?;
        let logreg = field("logreg")?
            .as_bool()
            .ok_or("`logreg` is not true or false")?;
        let mut params = Vec::new();
        for p in field("params")?
            .as_array()
            .ok_or("`params` is not a list")?
        {
            let name = p["name"].as_str().ok_or("a parameter has no `name`")?;
            let value = match &p["value"] {
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Num::Int(i),
                    None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                _ => return Err(format!("the value of `{name}` is not a number")),
            };
            params.push((name.to_string(), value));
        }
        Ok(ModelMeta {
            workflow: text("workflow")?,
            template: text("template")?,
            architecture,
            image_size,
            concepts,
            logreg,
            params,
        })
    }

    /// The JSON a run writes beside its model.
    pub fn to_json(&self) -> String {
        let params: Vec<serde_json::Value> = self
            .params
            .iter()
            .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
            .collect();
        let v = serde_json::json!({
            "workflow": self.workflow,
            "template": self.template,
            "architecture": self.architecture.name(),
            "image_size": self.image_size,
            "concepts": self.concepts,
            "logreg": self.logreg,
            "params": params,
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    pub fn param(&self, name: &str) -> Option<Num> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// A finished run's model, used frozen: the workflow embeds its images with it
/// and runs its steps without training.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaseModel {
    /// The weights (`model.safetensors`).
    pub weights: PathBuf,
    /// `model.json` beside them.
    pub meta_path: PathBuf,
    pub meta: ModelMeta,
}

/// A workflow the checker accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub name: String,
    /// The folder relative paths are resolved against (the workflow file's).
    pub base_dir: PathBuf,
    pub template: TemplateSpec,
    pub params: Vec<ResolvedParam>,
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
}

impl Workflow {
    pub fn param(&self, name: &str) -> Option<&ResolvedParam> {
        self.params.iter().find(|p| &*p.name == name)
    }

    /// An integer hyperparameter's value, when it is known without the data.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.param(name)?.value {
            Resolved::Value(ParamValue::Num(Num::Int(i))) => Some(i),
            _ => None,
        }
    }

    /// A float hyperparameter's value.
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.param(name)?.value {
            Resolved::Value(ParamValue::Num(n)) => Some(n.as_f64()),
            _ => None,
        }
    }
}
