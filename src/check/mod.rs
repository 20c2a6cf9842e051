//! The type checker: syntax tree + spec → [`Workflow`] + diagnostics.
//!
//! **Checking never stops at the first problem, never trains, never writes and
//! never touches a device.** The only outside thing it may read is the file
//! system (data folders, weights), and only when [`CheckOptions::filesystem`]
//! is on.

mod fs;
mod params;
mod rules;
mod settings;
mod steps;
pub(crate) mod sweep;
mod typed;

use crate::paths::ShowPath;
use crate::suggest::FastMap as HashMap;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{SourceFile, SourceId, Span};
use crate::spec::declare::{list, seen_twice, twice, unknown_template};
use crate::spec::{
    fmt_float, Architecture, DefaultValue, Num, ParamSpec, ParamValue, Registry, TemplateSpec,
};
use crate::suggest::did_you_mean;
use crate::syntax::{
    Block, BlockItem, DataDecl, Ident, Item, Module, Setting, StepDecl, SweepDecl, UseDecl, Value,
    ValueKind,
};
use crate::workflow::*;
use settings::{data_decl_of, data_decl_spans};

/// What the checker may look at.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Read the file system: do data folders and weights exist, how many
    /// concepts and images are there. Editors may turn this off while typing.
    pub filesystem: bool,
    /// The folder relative paths are resolved against. `None`: the workflow
    /// file's folder, or the current folder for text that has no file.
    pub base_dir: Option<PathBuf>,
    /// The machine costs are estimated for (memory, throughput). `None`:
    /// this machine ([`crate::cost::Machine::this_machine`]), read at each
    /// check; editors read it once, tests inject one.
    pub machine: Option<crate::cost::Machine>,
    /// Data folders already listed in this command: given the same
    /// listings, checks of files naming one data folder walk it once. `None`:
    /// every check walks its folders afresh (an editor's checks, which must
    /// see each change on disk).
    pub listings: Option<crate::data::Listings>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            filesystem: true,
            base_dir: None,
            machine: None,
            listings: None,
        }
    }
}

const TOP_SETTINGS: [&str; 4] = ["device", "output", "seed", "base"];
const DATA_SETTINGS: [&str; 5] = ["train", "eval", "weights", "unseen", "augment"];

/// Checks a parsed workflow file.
pub fn check(
    module: &Module,
    file: &SourceFile,
    source: SourceId,
    base_dir: &Path,
    options: &CheckOptions,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Workflow> {
    let builtin = Registry::builtin();
    let user = crate::spec::declare::user_templates(module, builtin, diagnostics);
    let mut cx = Checker {
        file,
        source,
        base_dir,
        builtin,
        user,
        diagnostics,
        machine: options
            .machine
            .clone()
            .unwrap_or_else(crate::cost::Machine::this_machine),
        device: crate::workflow::Device::Cpu,
    };
    cx.workflow(module, options)
}

/// A finished run's model as the checker types it for a `base` workflow:
/// its `model.json` read, its template found, its hyperparameters checked
/// against the template's ranges and typed. `path` is the run folder or its
/// `model.safetensors`. The error lists every problem, one per line.
pub fn open_model(path: &Path) -> Result<(BaseModel, TemplateSpec, crate::hyper::Hyper), String> {
    let builtin = Registry::builtin();
    let file = SourceFile::new(path.shown().to_string(), "");
    let source = SourceId(0);
    let mut diagnostics = Vec::new();
    let base_dir = Path::new(".");
    let mut cx = Checker {
        file: &file,
        source,
        base_dir,
        builtin,
        user: Vec::new(),
        diagnostics: &mut diagnostics,
        machine: crate::cost::Machine::unknown(),
        device: crate::workflow::Device::Cpu,
    };
    let at = Span::new(source, 0, 0);
    let opened = cx.base_model(path, at).and_then(|base| {
        let Some(t) = cx.base_template(&base) else {
            cx.push(Diagnostic::error(
                Code::BaseModel,
                at,
                format!(
                    "no template has the architecture `{:?}`",
                    base.meta.architecture
                ),
            ));
            return None;
        };
        let params = params::base_params(&mut cx, &base, &t, at);
        let hyper = cx.typed_hyper(&t, &params, Some((&base, at)), None)?;
        Some((base, t, hyper))
    });
    match opened {
        Some(model) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(model),
        _ => Err(diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| match &d.help {
                Some(h) => format!("{}; {h}", d.message),
                None => d.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

struct Checker<'a> {
    file: &'a SourceFile,
    source: SourceId,
    base_dir: &'a Path,
    builtin: &'static Registry,
    user: Vec<TemplateSpec>,
    diagnostics: &'a mut Vec<Diagnostic>,
    /// The machine costs are estimated for (`CheckOptions::machine`).
    machine: crate::cost::Machine,
    /// The workflow's device, once its settings are read.
    device: crate::workflow::Device,
}

/// Whether and how a parameter was written in the workflow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Written {
    /// Not written: the default applies.
    Unset,
    /// Written with a valid value, by the setting at this span.
    Set(Span),
    /// Written with a value already reported as wrong: rules between fields
    /// leave it alone rather than reason about the default in its place.
    Invalid,
}

impl Written {
    pub(crate) fn span(self) -> Option<Span> {
        match self {
            Written::Set(s) => Some(s),
            _ => None,
        }
    }
}

/// A file's items by kind.
#[derive(Default)]
struct Items<'m> {
    name: Option<&'m Ident>,
    use_decl: Option<&'m UseDecl>,
    data: Option<&'m DataDecl>,
    sweep: Option<&'m SweepDecl>,
    top: Vec<&'m Setting>,
    steps: Vec<&'m StepDecl>,
}

/// Reports the second of two items that may appear once.
fn once<'t, T>(
    slot: &mut Option<&'t T>,
    item: &'t T,
    span: Span,
    first: impl Fn(&T) -> Span,
    what: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match slot {
        Some(prev) => diagnostics.push(
            Diagnostic::error(Code::Duplicate, span, format!("a workflow has one {what}"))
                .with_label(format!("second {what}"))
                .with_related(first(prev), format!("first {what} here"))
                .with_help("remove one of them"),
        ),
        None => *slot = Some(item),
    }
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    /// A path written in the workflow, resolved against the base folder, with
    /// `.` and `..` folded away where that needs no file system.
    fn resolve(&self, written: &str) -> PathBuf {
        normalize(&self.base_dir.join(written))
    }

    /// Whether a syntax error lies within `span` (or anywhere, for `None`):
    /// what looks missing may sit on the broken line.
    fn broken_within(&self, span: Option<Span>) -> bool {
        self.diagnostics.iter().any(|d| {
            matches!(
                d.code,
                Code::Syntax | Code::UnclosedBlock | Code::UnterminatedString | Code::TooDeep
            ) && span.is_none_or(|s| d.span.start >= s.start && d.span.start <= s.end)
        })
    }

    /// The 1-based line where `span` starts.
    fn line(&self, span: Span) -> usize {
        self.file.line_of(span.start.min(self.file.text().len())) + 1
    }

    fn template(&self, name: &str) -> Option<&TemplateSpec> {
        self.user
            .iter()
            .find(|t| t.name == name)
            .or_else(|| self.builtin.template(name))
    }

    fn template_names(&self) -> Vec<&str> {
        self.builtin
            .templates
            .iter()
            .chain(&self.user)
            .map(|t| t.name.as_str())
            .collect()
    }

    fn workflow(&mut self, module: &Module, options: &CheckOptions) -> Option<Workflow> {
        let items = self.items(module);
        let file_stem = Path::new(self.file.name())
            .file_stem()
            .and_then(|s| s.to_str())
            // A name shown in messages and reports: control characters escaped.
            .map_or("workflow".to_string(), |s| {
                crate::paths::escape_controls(s).into_owned()
            });
        let workflow_name = items.name.map_or(file_stem, |n| n.name.clone());
        let used = items
            .use_decl
            .and_then(|u| self.template(&u.template.name))
            .cloned();
        let (device, output, seed, base_setting) =
            self.top_settings(&items.top, used.as_ref(), &workflow_name);
        self.device = device;
        let base = base_setting
            .as_ref()
            .and_then(|(path, span)| self.base_model(path, *span));
        let template = self.chosen_template(items.use_decl, base_setting.as_ref(), base.as_ref());
        let params = match (&template, items.use_decl, &base) {
            (Some(t), Some(u), None) => Some(self.hyperparameters(t, u)),
            (Some(t), None, Some(b)) => {
                let at = base_setting
                    .as_ref()
                    .map_or(Span::new(self.source, 0, 0), |s| s.1);
                Some(params::base_params(self, b, t, at))
            }
            _ => None,
        };
        let data_spec = self.data_block(&items, template.as_ref(), base_setting.as_ref());
        let step_specs = self.steps(&items.steps, seed);
        let hyper = match (&template, &params) {
            (Some(t), Some(params)) => {
                let at = base_setting.as_ref().map(|(_, at)| *at);
                self.typed_hyper(t, params, base.as_ref().zip(at), items.use_decl)
            }
            _ => None,
        };

        let mut dataset = None;
        if let (Some(t), Some(params), Some(u), None) =
            (&template, &params, items.use_decl, items.sweep)
        {
            // With a sweep, each trial is checked with its own values instead.
            let has_weights = data_spec.as_ref().is_some_and(|d| d.weights.is_some());
            self.cross_checks(t, u, params, has_weights);
        }
        if let (Some(data), Some(params), true) = (&data_spec, &params, options.filesystem) {
            let model_concepts = base.as_ref().map(|b| b.meta.concepts.as_slice());
            dataset = self.data_on_disk(module, template.as_ref(), data, params, model_concepts);
        }
        if options.filesystem {
            fs::check_step_paths(self, &items.steps, &step_specs);
            if dataset.as_ref().is_some_and(|d| d.concepts.is_empty()) {
                let spans = data_decl_spans(data_decl_of(module));
                let at = spans.get("train").copied();
                let at = at.unwrap_or(Span::new(self.source, 0, 0));
                fs::steps_on_unlabelled(self, &items.steps, &step_specs, at);
            }
            if let Some(data) = &data_spec {
                let spans = data_decl_spans(data_decl_of(module));
                fs::output_apart(self, &output, data, base_setting.as_ref(), &spans);
            }
            let output_at = items
                .top
                .iter()
                .find(|s| s.name.name == "output")
                .map(|s| s.value.span);
            fs::output_a_folder(self, &output, output_at);
        }
        let train_at = data_decl_spans(data_decl_of(module))
            .get("train")
            .copied()
            .unwrap_or(Span::new(self.source, 0, 0));
        let sweep = match (items.sweep, &template, &params, items.use_decl) {
            (Some(d), Some(t), Some(params), Some(u)) => {
                let (d, t, u) = (d, t.clone(), u);
                self.sweep(
                    d,
                    &t,
                    u,
                    params,
                    data_spec.as_ref(),
                    dataset.as_ref(),
                    train_at,
                    seed,
                )
            }
            (Some(d), _, _, None) if base_setting.is_some() => {
                self.push(
                    Diagnostic::error(
                        Code::Sweep,
                        d.keyword,
                        "a workflow with a base model trains nothing to sweep",
                    )
                    .with_label("a sweep trains one model per trial")
                    .with_help("remove the `sweep` block, or train a template with `use`"),
                );
                None
            }
            _ => None,
        };
        let reported = self.diagnostics.iter().any(Diagnostic::is_error);
        if let (Some(set), Some(data), Some(_), false) = (&dataset, &data_spec, &base, reported) {
            let at = data_decl_spans(data_decl_of(module)).get("train").copied();
            let found = crate::plan::DataFound::counted(Some(set), &data.eval);
            self.nothing_held_out(&found, at.unwrap_or(Span::new(self.source, 0, 0)));
        }
        if let (Some(h), Some(set), Some(data), None, false, None) =
            (&hyper, &dataset, &data_spec, &base, reported, items.sweep)
        {
            let at = data_decl_spans(data_decl_of(module)).get("train").copied();
            let at = at.unwrap_or(Span::new(self.source, 0, 0));
            self.epoch_has_a_batch(h, set, data, at);
            if set.multi_label && h.loss == crate::hyper::Loss::Softmax {
                self.push(
                    Diagnostic::error(Code::Data, at, "some images have several concepts")
                        .with_label("softmax units pick one concept per image")
                        .with_help(
                            "set `logreg = 1` (sigmoid units) to learn several concepts per image",
                        ),
                );
            }
        }

        if let (Some(t), Some(h), Some(data), Some(params), Some(u), None, None, false) = (
            &template,
            &hyper,
            &data_spec,
            &params,
            items.use_decl,
            &base,
            items.sweep,
            self.diagnostics.iter().any(Diagnostic::is_error),
        ) {
            let found = crate::plan::DataFound::counted(dataset.as_ref(), &data.eval);
            self.cost_rules(t, h, params, u, &found);
        }
        if self.diagnostics.iter().any(Diagnostic::is_error) {
            return None;
        }
        // A sweep's workflow holds its first trial's values, the swept
        // parameters marked as such.
        let (params, hyper) = match &sweep {
            Some(s) => {
                let first = s.trials.first()?;
                let params = first
                    .params
                    .iter()
                    .map(|p| match s.swept.iter().find(|w| w.name == p.name) {
                        Some(w) => ResolvedParam {
                            origin: Origin::Swept { line: w.line },
                            ..p.clone()
                        },
                        None => p.clone(),
                    })
                    .collect();
                (params, first.hyper)
            }
            None => (params?.into_iter().map(|(p, _)| p).collect(), hyper?),
        };
        Some(Workflow {
            name: workflow_name,
            machine: self.machine.clone(),
            base_dir: self.base_dir.to_path_buf(),
            template: template?,
            params,
            hyper,
            data: data_spec?,
            device,
            output,
            seed,
            steps: step_specs.into_iter().flatten().collect(),
            dataset,
            base,
            sweep,
        })
    }

    /// The template the workflow trains (`use`), or its base model's.
    fn chosen_template(
        &mut self,
        use_decl: Option<&UseDecl>,
        base_setting: Option<&(PathBuf, Span)>,
        base: Option<&BaseModel>,
    ) -> Option<TemplateSpec> {
        match (use_decl, base_setting) {
            (Some(u), Some((_, at))) => {
                self.push(
                Diagnostic::error(
                    Code::BaseModel,
                    u.keyword.to(u.template.span),
                    "a workflow with a base model trains nothing",
                )
                .with_label("a template to train")
                .with_related(*at, "the frozen base model")
                .with_help("remove the `use` block to embed with the base model, or remove `base` to train a new model"),
            );
                None
            }
            (None, Some(_)) => base.and_then(|b| self.base_template(b)),
            (Some(u), None) => match self.template(&u.template.name) {
                Some(t) => Some(t.clone()),
                None => {
                    let names = self.template_names();
                    let d = unknown_template(&u.template, names);
                    self.push(d);
                    None
                }
            },
            (None, None) if self.broken_within(None) => None,
            (None, None) => {
                self.push(
                Diagnostic::error(
                    Code::Missing,
                    Span::new(self.source, 0, 0),
                    "this workflow chooses no template",
                )
                .with_label("no `use` in this file")
                .with_help(format!(
                    "add `use TEMPLATE {{ .. }}` with one of {}, or `base = \"runs/NAME\"` to embed with a model trained before",
                    list(&self.template_names())
                )),
            );
                None
            }
        }
    }

    /// The `data` block, checked; `weights` is an error beside a base model.
    fn data_block(
        &mut self,
        items: &Items,
        template: Option<&TemplateSpec>,
        base_setting: Option<&(PathBuf, Span)>,
    ) -> Option<DataSpec> {
        let data_spec = match items.data {
            Some(d) => self.data(d, template),
            None if self.broken_within(None) => None,
            None => {
                let at = items.use_decl.map_or(Span::new(self.source, 0, 0), |u| {
                    u.keyword.to(u.template.span)
                });
                self.push(
                Diagnostic::error(Code::Missing, at, "this workflow has no `data` block")
                    .with_label(if base_setting.is_some() { "embedding needs images" } else { "training needs images" })
                    .with_help("add `data { train = \"path/to/images\" }`: a folder with one sub-folder per concept"),
            );
                None
            }
        };
        if let (Some(d), Some(data), Some(_)) = (items.data, &data_spec, base_setting) {
            if data.weights.is_some() {
                let at = data_decl_spans(Some(d))
                    .get("weights")
                    .copied()
                    .unwrap_or(d.keyword);
                self.push(
                    Diagnostic::error(
                        Code::BaseModel,
                        at,
                        "a base model is used frozen: `weights` would never be loaded",
                    )
                    .with_label("weights to start training from")
                    .with_help("remove `weights`; the base model's own weights are used"),
                );
            }
        }
        data_spec
    }

    /// The hyperparameters typed; one that cannot be (a base model's
    /// `model.json` lacking it) is reported at the `base` setting.
    fn typed_hyper(
        &mut self,
        t: &TemplateSpec,
        params: &[(ResolvedParam, Written)],
        base: Option<(&BaseModel, Span)>,
        use_decl: Option<&UseDecl>,
    ) -> Option<crate::hyper::Hyper> {
        let resolved: Vec<ResolvedParam> = params.iter().map(|(p, _)| p.clone()).collect();
        match typed::hyper(t, &resolved) {
            Ok(h) => Some(h),
            // A value reported as wrong already keeps the workflow from running.
            Err(_) if self.diagnostics.iter().any(Diagnostic::is_error) => None,
            Err(message) => {
                let (at, help) = match (base, use_decl) {
                    (Some((b, at)), _) => (
                        at,
                        format!(
                            "`{}` does not record a value the network can use; use the `model.json` a wfrun run wrote",
                            b.meta_path.shown()
                        ),
                    ),
                    (None, Some(u)) => (
                        u.keyword.to(u.template.span),
                        "the template's declaration must give every parameter the network reads a default"
                            .to_string(),
                    ),
                    (None, None) => (Span::new(self.source, 0, 0), String::new()),
                };
                self.push(
                    Diagnostic::error(
                        Code::BaseModel,
                        at,
                        format!("the hyperparameters cannot be used: {message}"),
                    )
                    .with_help(help),
                );
                None
            }
        }
    }

    /// The data folders read: concepts and image counts, with the batch-size
    /// advice within the template's range.
    fn data_on_disk(
        &mut self,
        module: &Module,
        template: Option<&TemplateSpec>,
        data: &DataSpec,
        params: &[(ResolvedParam, Written)],
        model_concepts: Option<&[String]>,
    ) -> Option<DatasetSummary> {
        let batch_max = template
            .and_then(|t| t.param("batch_size")?.max.as_ref())
            .map(|m| m.value.as_f64());
        let spans = data_decl_spans(data_decl_of(module));
        fs::check_data(self, data, params, batch_max, spans, model_concepts)
    }

    /// An epoch of the images found must hold a batch of two (batch norm).
    fn epoch_has_a_batch(
        &mut self,
        h: &crate::hyper::Hyper,
        set: &DatasetSummary,
        data: &DataSpec,
        at: Span,
    ) {
        let found = crate::plan::DataFound::counted(Some(set), &data.eval);
        let (images, train) = (found.images.unwrap_or(0), found.train_images.unwrap_or(0));
        if let (crate::workflow::Eval::Fraction(f), Some(held)) = (&data.eval, found.eval_images) {
            let asked = (images as f64 * f).round().max(1.0);
            if held as f64 > 1.5 * asked {
                self.push(
                    Diagnostic::warning(
                        Code::Data,
                        at,
                        format!(
                            "{held} of the {images} images are held out for evaluation, more than `eval = {f}` asks ({asked})"
                        ),
                    )
                    .with_label("each concept of two or more images keeps at least one held out")
                    .with_help("add images to the small concepts, or name evaluation images of their own (`eval = \"folder\"`)"),
                );
            }
        }
        self.nothing_held_out(&found, at);
        let Some(items) = h.num_items_per_epoch.resolve(&found.counts()).value() else {
            return;
        };
        if crate::plan::steps_per_epoch(items, h.batch_size as u64) == 0 {
            self.push(
                Diagnostic::error(
                    Code::Data,
                    at,
                    format!("an epoch of {items} training image(s) holds no batch of two"),
                )
                .with_label(format!("{train} of the {images} images are trained on"))
                .with_help("add images, or hold fewer out for evaluation: batch norm needs two images in a batch"),
            );
        }
    }

    /// A held-out fraction of concepts of one image each holds nothing out
    /// (for a base workflow too, whose held-out images steps search with).
    fn nothing_held_out(&mut self, found: &crate::plan::DataFound, at: Span) {
        let images = found.images.unwrap_or(0);
        if found.eval_images == Some(0) && images > 0 {
            self.push(
                Diagnostic::warning(Code::Data, at, "no image can be held out for evaluation")
                    .with_label(format!(
                        "each concept has a single image, and a concept's only image is trained on ({images} images)"
                    ))
                    .with_help(
                        "add images, or name evaluation images of their own (`eval = \"folder\"`): \
                         without them the run reports no held-out figures, and steps that search \
                         with held-out images have none",
                    ),
            );
        }
    }

    /// The file's items by kind; a second `workflow`, `use` or `data` is reported.
    fn items<'m>(&mut self, module: &'m Module) -> Items<'m> {
        let mut items = Items::default();
        for item in &module.items {
            match item {
                Item::Workflow { name: n, .. } => once(
                    &mut items.name,
                    n,
                    n.span,
                    |n| n.span,
                    "`workflow` name",
                    self.diagnostics,
                ),
                Item::Use(u) => once(
                    &mut items.use_decl,
                    u,
                    u.keyword.to(u.template.span),
                    |u| u.template.span,
                    "`use`",
                    self.diagnostics,
                ),
                Item::Data(d) => once(
                    &mut items.data,
                    d,
                    d.keyword,
                    |d| d.keyword,
                    "`data` block",
                    self.diagnostics,
                ),
                Item::Sweep(d) => once(
                    &mut items.sweep,
                    d,
                    d.keyword,
                    |d| d.keyword,
                    "`sweep` block",
                    self.diagnostics,
                ),
                Item::Setting(s) => items.top.push(s),
                Item::Step(s) => items.steps.push(s),
                Item::Template(_) => {}
                Item::StepKind(k) => self.push(
                    Diagnostic::error(
                        Code::Misplaced,
                        k.keyword.to(k.name.span),
                        "step kinds are built into wfrun",
                    )
                    .with_label("a workflow cannot declare a step kind")
                    .with_help(format!("use one with `step {} {{ .. }}`", k.name.name)),
                ),
            }
        }
        items
    }
}

/// Folds `.` and `name/..` out of a path without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::ParentDir
                if matches!(out.last(), Some(Component::RootDir | Component::Prefix(_))) => {}
            other => out.push(other),
        }
    }
    if out.is_empty() {
        // `.`, `sub/..`: the folder itself, not an empty path.
        return PathBuf::from(".");
    }
    out.iter().collect()
}
