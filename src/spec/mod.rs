//! The template spec: templates, step kinds and their parameters.
//!
//! Nothing here is a hard-coded table of ranges: the built-in templates and
//! step kinds are declared in wfrun's own language in `prelude.wfp`, parsed and
//! checked by the same code that reads user templates ([`declare`]). Rust only
//! knows which parameters each network and each step needs
//! ([`Architecture::required_params`], [`StepKindId::required_params`]).

pub mod declare;
mod value;

pub use value::on_grid;

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{SourceFile, SourceId, Span};
use crate::syntax::{Value, ValueKind};

/// The prelude's text, shipped inside the crate. Its file is named `.wfp`,
/// not `.wf`: it declares the language's templates and is no workflow, so
/// folder scans (`wfrun check DIR`, `wfrun fmt DIR`) pass it by.
pub const PRELUDE: &str = include_str!("prelude.wfp");

/// The factor the learning rate is multiplied by at each decrease, unless a
/// built-in template declares another `lr_decay`. The seed gives none; 0.1 is
/// the usual step decay.
pub const DEFAULT_LR_DECAY: f64 = 0.1;

/// The parameters the initial learning rate is the product of:
/// `lrate = batch_size × per_item_lrate`.
pub const LRATE_FACTORS: [&str; 2] = ["batch_size", "per_item_lrate"];

/// SGD's momentum in every template's recipe (the seed's training recipe).
pub const MOMENTUM: f64 = 0.9;

/// SGD's weight decay (L2) in the ResNet templates' recipe, on every
/// parameter.
pub const WEIGHT_DECAY: f64 = 5e-4;

/// BN-Inception's recipe: weight decay 1e-4 on convolution and linear weights
/// only, and PyTorch's default initialisation of the convolutions. Measured
/// on real digit scans over three seeds (BENCHMARKS.md, "BN-Inception's
/// recipe beside PyTorch's"): it closes the gap to PyTorch's same recipe.
pub const BN_INCEPTION_WEIGHT_DECAY: f64 = 1e-4;

pub(crate) fn prelude_source() -> SourceFile {
    SourceFile::new("<prelude>", PRELUDE)
}

/// The network (and loss) a template trains. Only the prelude names these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// ResNet-101 with an additive angular margin (ArcFace) loss.
    Resnet101AngularMargin,
    /// BN-Inception with a sigmoid or softmax classifier.
    BnInception,
    /// ResNeXt-50 32x4d with a sigmoid or softmax classifier.
    #[serde(rename = "resnext50_32x4d")]
    Resnext50,
}

const COMMON_PARAMS: [&str; 7] = [
    "image_size",
    "batch_size",
    "init_epochs",
    "step_epochs",
    "num_epochs",
    "per_item_lrate",
    "num_items_per_epoch",
];

impl Architecture {
    /// The network in words ("ResNet-101", "BN-Inception", "ResNeXt-50 32x4d").
    pub fn network_name(self) -> &'static str {
        match self {
            Architecture::Resnet101AngularMargin => "ResNet-101",
            Architecture::BnInception => "BN-Inception",
            Architecture::Resnext50 => "ResNeXt-50 32x4d",
        }
    }

    /// SGD's weight decay, what it applies to, and how the convolutions
    /// start: the template's recipe, not parameters.
    pub fn recipe(self) -> (f64, crate::hyper::Decayed, crate::hyper::ConvInit) {
        use crate::hyper::{ConvInit, Decayed};
        match self {
            Architecture::BnInception => (
                BN_INCEPTION_WEIGHT_DECAY,
                Decayed::Weights,
                ConvInit::FanInUniform,
            ),
            Architecture::Resnet101AngularMargin | Architecture::Resnext50 => {
                (WEIGHT_DECAY, Decayed::All, ConvInit::KaimingFanOut)
            }
        }
    }

    pub const ALL: [Architecture; 3] = [
        Architecture::Resnet101AngularMargin,
        Architecture::BnInception,
        Architecture::Resnext50,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Resnet101AngularMargin => "resnet101_angular_margin",
            Architecture::BnInception => "bn_inception",
            Architecture::Resnext50 => "resnext50_32x4d",
        }
    }

    pub fn from_name(name: &str) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The parameters the network and its training loop read, with their kinds.
    pub fn required_params(self) -> Vec<(&'static str, NumKind)> {
        let mut params: Vec<_> = COMMON_PARAMS
            .iter()
            .map(|&p| {
                let kind = if p == "per_item_lrate" {
                    NumKind::Float
                } else {
                    NumKind::Int
                };
                (p, kind)
            })
            .collect();
        match self {
            Architecture::Resnet101AngularMargin => params.extend([
                ("angular_scale", NumKind::Int),
                ("angular_margin", NumKind::Float),
                ("embeddings_size", NumKind::Int),
            ]),
            Architecture::BnInception | Architecture::Resnext50 => {
                params.push(("logreg", NumKind::Int))
            }
        }
        params
    }
}

/// The downstream steps wfrun knows how to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKindId {
    ClassifierHead,
    Clustering,
    VisualSearch,
}

impl StepKindId {
    pub const ALL: [StepKindId; 3] = [
        StepKindId::ClassifierHead,
        StepKindId::Clustering,
        StepKindId::VisualSearch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepKindId::ClassifierHead => "classifier_head",
            StepKindId::Clustering => "clustering",
            StepKindId::VisualSearch => "visual_search",
        }
    }

    pub fn from_name(name: &str) -> Option<StepKindId> {
        StepKindId::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The parameters the step's implementation reads.
    pub fn required_params(self) -> &'static [&'static str] {
        match self {
            StepKindId::ClassifierHead => {
                &["logreg", "epochs", "learning_rate", "l2", "batch_size"]
            }
            StepKindId::Clustering => &["k", "iterations", "inits", "tolerance", "seed"],
            StepKindId::VisualSearch => &["top_k", "queries", "index"],
        }
    }
}

/// Integer or floating-point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumKind {
    Int,
    Float,
}

/// A number from the spec or a workflow.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => f.write_str(&fmt_float(*x)),
        }
    }
}

/// Formats a float the way a person would write it in a workflow.
pub fn fmt_float(x: f64) -> String {
    // Computed values (a decayed learning rate) carry rounding noise: drop it.
    let x: f64 = format!("{x:.12e}").parse().unwrap_or(x);
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e7) {
        let s = format!("{x:e}");
        // `7.8125e-5` reads better as `7.8125e-05`, the seed's spelling.
        match s.split_once('e') {
            Some((m, e)) if e.trim_start_matches('-').len() == 1 => {
                let sign = if e.starts_with('-') { "-" } else { "" };
                format!("{m}e{sign}0{}", e.trim_start_matches('-'))
            }
            _ => s,
        }
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// The values a parameter accepts: a number kind, a path, keywords, or a mix
/// (`eval | train | path`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ParamType {
    pub numeric: Option<NumKind>,
    pub path: bool,
    pub keywords: Vec<String>,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = self.keywords.iter().map(String::as_str).collect();
        match self.numeric {
            Some(NumKind::Int) => parts.push("int"),
            Some(NumKind::Float) => parts.push("float"),
            None => {}
        }
        if self.path {
            parts.push("path");
        }
        f.write_str(&parts.join(" | "))
    }
}

/// A default computed when the workflow is planned, not written as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Derived {
    /// The number of training images.
    DatasetSize,
    /// The number of concepts in the training data.
    NumConcepts,
    /// The workflow's `seed`.
    Seed,
}

impl Derived {
    pub const ALL: [Derived; 3] = [Derived::DatasetSize, Derived::NumConcepts, Derived::Seed];

    pub fn name(self) -> &'static str {
        match self {
            Derived::DatasetSize => "dataset_size",
            Derived::NumConcepts => "num_concepts",
            Derived::Seed => "seed",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Derived::DatasetSize => "the number of training images",
            Derived::NumConcepts => "the number of concepts in the training data",
            Derived::Seed => "the workflow's seed",
        }
    }

    pub fn from_name(name: &str) -> Option<Derived> {
        Derived::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// A parameter's value after checking.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Num(Num),
    Keyword(String),
    Path(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Num(n) => write!(f, "{n}"),
            ParamValue::Keyword(k) => f.write_str(k),
            ParamValue::Path(p) => write!(f, "\"{p}\""),
        }
    }
}

/// A parameter's default: a value, or something derived at plan time.
#[derive(Clone, Debug, PartialEq)]
pub enum DefaultValue {
    Value(ParamValue),
    Derived(Derived),
}

impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::Value(v) => write!(f, "{v}"),
            DefaultValue::Derived(d) => f.write_str(d.name()),
        }
    }
}

/// A value together with the `name = value` line that declared it.
#[derive(Clone, Debug, PartialEq)]
pub struct Declared<T> {
    pub value: T,
    pub span: Span,
}

/// One parameter of a template or step kind.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Shared with the resolved values of every workflow that uses it.
    pub name: Arc<str>,
    /// Where the parameter was declared (or last narrowed).
    pub span: Span,
    pub ty: ParamType,
    pub min: Option<Declared<Num>>,
    pub max: Option<Declared<Num>>,
    pub step: Option<Declared<Num>>,
    pub default: Option<Declared<DefaultValue>>,
    /// Shared: narrowing templates copy their parent's parameters.
    pub doc: Arc<str>,
}

/// A template: a network with its hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateSpec {
    pub name: String,
    /// The template's name where it is declared.
    pub span: Span,
    pub parent: Option<String>,
    pub architecture: Architecture,
    pub lr_decay: f64,
    /// Shared: narrowing templates copy their parent's parameters.
    pub doc: Arc<str>,
    /// Shared with the templates that narrow this one, which replace only
    /// the parameters they narrow (a file may declare thousands of them).
    pub params: Vec<Arc<ParamSpec>>,
}

impl TemplateSpec {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().map(|p| &**p).find(|p| &*p.name == name)
    }

    pub fn is_builtin(&self) -> bool {
        self.span.source == SourceId::PRELUDE
    }
}

/// A downstream step kind with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct StepKindSpec {
    pub name: String,
    pub span: Span,
    pub id: StepKindId,
    pub doc: Arc<str>,
    /// Held as a template's are.
    pub params: Vec<Arc<ParamSpec>>,
}

impl StepKindSpec {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().map(|p| &**p).find(|p| &*p.name == name)
    }
}

/// The templates and step kinds a workflow can use.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub templates: Vec<TemplateSpec>,
    pub step_kinds: Vec<StepKindSpec>,
}

impl Registry {
    /// The built-in registry, declared by the prelude (parsed once).
    pub fn builtin() -> &'static Registry {
        &prelude().0
    }

    pub fn template(&self, name: &str) -> Option<&TemplateSpec> {
        self.templates.iter().find(|t| t.name == name)
    }

    pub fn step_kind(&self, name: &str) -> Option<&StepKindSpec> {
        self.step_kinds.iter().find(|k| k.name == name)
    }
}

/// The prelude's registry and the diagnostics of reading it (empty unless the
/// prelude itself is broken; a test keeps it empty).
pub fn prelude() -> &'static (Registry, Vec<Diagnostic>) {
    static PRELUDE_REGISTRY: OnceLock<(Registry, Vec<Diagnostic>)> = OnceLock::new();
    PRELUDE_REGISTRY.get_or_init(|| {
        let (module, mut diagnostics) = crate::syntax::parse(SourceId::PRELUDE, PRELUDE);
        let registry = declare::prelude(&module, &mut diagnostics);
        (registry, diagnostics)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelude_is_clean_and_complete() {
        let (registry, diagnostics) = prelude();
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        let names: Vec<_> = registry.templates.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Clarifai_ResNet_AngularMargin",
                "Clarifai_InceptionBatchNorm",
                "Clarifai_ResNext"
            ]
        );
        let kinds: Vec<_> = registry.step_kinds.iter().map(|k| k.id).collect();
        assert_eq!(kinds, StepKindId::ALL);
    }

    #[test]
    fn prelude_ranges_match_the_spec() {
        let r = Registry::builtin();
        let arc = r.template("Clarifai_ResNet_AngularMargin").unwrap();
        let image = arc.param("image_size").unwrap();
        assert_eq!(image.range_text(), "32 to 1024, step 16");
        assert_eq!(
            image.default.as_ref().unwrap().value,
            DefaultValue::Value(ParamValue::Num(Num::Int(256)))
        );
        assert_eq!(
            arc.param("angular_scale").unwrap().range_text(),
            "16 to 128, step 16"
        );
        assert_eq!(
            arc.param("angular_margin").unwrap().range_text(),
            "0.1 to 0.9"
        );
        assert_eq!(
            arc.param("per_item_lrate").unwrap().range_text(),
            "at least 0.0"
        );
        assert!(arc.param("logreg").is_none());
        let rx = r.template("Clarifai_ResNext").unwrap();
        assert_eq!(rx.param("logreg").unwrap().range_text(), "0 to 1, step 1");
        assert_eq!(
            rx.param("num_items_per_epoch")
                .unwrap()
                .default
                .as_ref()
                .unwrap()
                .value,
            DefaultValue::Derived(Derived::DatasetSize)
        );
        assert!(r
            .templates
            .iter()
            .all(|t| t.params.iter().all(|p| !p.doc.is_empty()) && !t.doc.is_empty()));
    }

    #[test]
    fn floats_print_as_people_write_them() {
        assert_eq!(fmt_float(7.8125e-05), "7.8125e-05");
        assert_eq!(fmt_float(0.5), "0.5");
        assert_eq!(fmt_float(0.0), "0.0");
        assert_eq!(fmt_float(0.005), "0.005");
        assert_eq!(fmt_float(0.00125 * 0.1 * 0.1), "1.25e-05");
    }

    #[test]
    fn grid_and_neighbours() {
        let r = Registry::builtin();
        let image = r
            .template("Clarifai_ResNext")
            .unwrap()
            .param("image_size")
            .unwrap();
        assert!(on_grid(992.0, 32.0, 16.0));
        assert!(!on_grid(1000.0, 32.0, 16.0));
        assert_eq!(
            image.neighbours(1000.0),
            (Some(Num::Int(992)), Some(Num::Int(1008)))
        );
        assert_eq!(
            image.neighbours(1020.0),
            (Some(Num::Int(1008)), Some(Num::Int(1024)))
        );
        assert_eq!(image.neighbours(20.0), (None, Some(Num::Int(32))));
    }
}
