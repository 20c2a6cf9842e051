//! The type checker: syntax tree + spec → [`Workflow`] + diagnostics.
//!
//! **Checking never stops at the first problem, never trains, never writes and
//! never touches a device.** The only outside thing it may read is the file
//! system (data folders, weights), and only when [`CheckOptions::filesystem`]
//! is on.

mod fs;
mod typed;

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
    Block, BlockItem, DataDecl, Ident, Item, Module, Setting, StepDecl, UseDecl, Value, ValueKind,
};
use crate::workflow::*;

/// What the checker may look at.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Read the file system: do data folders and weights exist, how many
    /// concepts and images are there. Editors may turn this off while typing.
    pub filesystem: bool,
    /// The folder relative paths are resolved against. `None`: the workflow
    /// file's folder, or the current folder for text that has no file.
    pub base_dir: Option<PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            filesystem: true,
            base_dir: None,
        }
    }
}

const TOP_SETTINGS: [&str; 4] = ["device", "output", "seed", "base"];
const DATA_SETTINGS: [&str; 3] = ["train", "eval", "weights"];

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
    };
    cx.workflow(module, options)
}

struct Checker<'a> {
    file: &'a SourceFile,
    source: SourceId,
    base_dir: &'a Path,
    builtin: &'static Registry,
    user: Vec<TemplateSpec>,
    diagnostics: &'a mut Vec<Diagnostic>,
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

    fn line(&self, span: Span) -> usize {
        self.file.line_col(span.start).0
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
        let mut name: Option<&Ident> = None;
        let mut use_decl: Option<&UseDecl> = None;
        let mut data: Option<&DataDecl> = None;
        let mut top: Vec<&Setting> = Vec::new();
        let mut steps: Vec<&StepDecl> = Vec::new();
        for item in &module.items {
            match item {
                Item::Workflow { name: n, .. } => once(
                    &mut name,
                    n,
                    n.span,
                    |n| n.span,
                    "`workflow` name",
                    self.diagnostics,
                ),
                Item::Use(u) => once(
                    &mut use_decl,
                    u,
                    u.keyword.to(u.template.span),
                    |u| u.template.span,
                    "`use`",
                    self.diagnostics,
                ),
                Item::Data(d) => once(
                    &mut data,
                    d,
                    d.keyword,
                    |d| d.keyword,
                    "`data` block",
                    self.diagnostics,
                ),
                Item::Setting(s) => top.push(s),
                Item::Step(s) => steps.push(s),
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

        let file_stem = Path::new(self.file.name())
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("workflow")
            .to_string();
        let workflow_name = name.map_or(file_stem, |n| n.name.clone());

        let (device, output, seed, base_setting) = self.top_settings(
            &top,
            use_decl
                .and_then(|u| self.template(&u.template.name))
                .cloned()
                .as_ref(),
            &workflow_name,
        );
        let base = base_setting
            .as_ref()
            .and_then(|(path, span)| self.base_model(path, *span));

        let template = match (use_decl, &base_setting) {
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
            (None, Some(_)) => base.as_ref().and_then(|b| self.base_template(b)),
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
        };
        let params = match (&template, use_decl, &base) {
            (Some(t), Some(u), None) => Some(self.hyperparameters(t, u)),
            (Some(t), None, Some(b)) => Some(base_params(b, t)),
            _ => None,
        };

        let data_spec = match data {
            Some(d) => self.data(d, template.as_ref()),
            None if self.broken_within(None) => None,
            None => {
                let at = use_decl.map_or(Span::new(self.source, 0, 0), |u| {
                    u.keyword.to(u.template.span)
                });
                self.push(
                    Diagnostic::error(Code::Missing, at, "this workflow has no `data` block")
                        .with_label(if base.is_some() { "embedding needs images" } else { "training needs images" })
                        .with_help("add `data { train = \"path/to/images\" }`: a folder with one sub-folder per concept"),
                );
                None
            }
        };
        if let (Some(d), Some(data), Some(_)) = (data, &data_spec, &base_setting) {
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
        let step_specs = self.steps(&steps, seed);
        let hyper = match (&template, &params) {
            (Some(t), Some(params)) => {
                let resolved: Vec<ResolvedParam> = params.iter().map(|(p, _)| p.clone()).collect();
                match typed::hyper(t, &resolved) {
                    Ok(h) => Some(h),
                    // A value reported as wrong already keeps the workflow from running.
                    Err(_) if self.diagnostics.iter().any(Diagnostic::is_error) => None,
                    Err(message) => {
                        let (at, help) = match (&base, &base_setting, use_decl) {
                            (Some(b), Some((_, at)), _) => (*at, format!("`{}` lacks a hyperparameter the network needs; use the `model.json` a wfrun run wrote", b.meta_path.display())),
                            (_, _, Some(u)) => (u.keyword.to(u.template.span), "the template's declaration must give every parameter the network reads a default".to_string()),
                            _ => (Span::new(self.source, 0, 0), String::new()),
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
            _ => None,
        };

        let mut dataset = None;
        if let (Some(t), Some(params), Some(u)) = (&template, &params, use_decl) {
            let has_weights = data_spec.as_ref().is_some_and(|d| d.weights.is_some());
            self.cross_checks(t, u, params, has_weights);
        }
        if let (Some(data), Some(params), true) = (&data_spec, &params, options.filesystem) {
            // The batch-size advice stays within the template's range.
            let batch_max = template
                .as_ref()
                .and_then(|t| t.param("batch_size")?.max.as_ref())
                .map(|m| m.value.as_f64());
            let spans = data_decl_spans(data_decl_of(module));
            dataset = fs::check_data(self, data, params, batch_max, spans);
        }
        if options.filesystem {
            fs::check_step_paths(self, &steps, &step_specs);
        }

        let errors = self.diagnostics.iter().any(Diagnostic::is_error);
        if errors {
            return None;
        }
        Some(Workflow {
            name: workflow_name,
            base_dir: self.base_dir.to_path_buf(),
            template: template?,
            params: params?.into_iter().map(|(p, _)| p).collect(),
            hyper: hyper?,
            data: data_spec?,
            device,
            output,
            seed,
            steps: step_specs.into_iter().flatten().collect(),
            dataset,
            base,
        })
    }

    /// Resolves the `use` block against the template.
    fn hyperparameters(&mut self, t: &TemplateSpec, u: &UseDecl) -> Vec<(ResolvedParam, Written)> {
        let settings = self.block_settings(
            u.body.as_ref(),
            "a `use` block holds hyperparameters, not `param` declarations",
        );
        self.resolve_params(&t.params, &settings, &t.name, |cx, s| {
            cx.not_in_template(t, s)
        })
    }

    fn block_settings<'b>(
        &mut self,
        block: Option<&'b Block>,
        misplaced: &str,
    ) -> Vec<&'b Setting> {
        let Some(block) = block else {
            return Vec::new();
        };
        for item in &block.items {
            if let BlockItem::Param(p) = item {
                self.push(
                    Diagnostic::error(
                        Code::Misplaced,
                        p.keyword.to(p.name.span),
                        misplaced.to_string(),
                    )
                    .with_label("`param` is not allowed here")
                    .with_help(format!(
                        "set it with `{} = value`, or narrow it in a `template .. extends ..`",
                        p.name.name
                    )),
                );
            }
        }
        block.settings().collect()
    }

    /// Checks `settings` against `specs`; unset parameters take their defaults.
    fn resolve_params(
        &mut self,
        specs: &[ParamSpec],
        settings: &[&Setting],
        owner: &str,
        unknown: impl Fn(&mut Self, &Setting) -> Diagnostic,
    ) -> Vec<(ResolvedParam, Written)> {
        // One slot per parameter: where it was first written, and its value if valid.
        let mut first: Vec<Option<Span>> = vec![None; specs.len()];
        let mut written: Vec<Written> = vec![Written::Unset; specs.len()];
        let mut values: Vec<Option<ParamValue>> = vec![None; specs.len()];
        for s in settings {
            let Some(i) = specs.iter().position(|p| *p.name == *s.name.name) else {
                let d = unknown(self, s);
                self.push(d);
                continue;
            };
            if let Some(first) = first[i] {
                self.push(twice(&s.name, first, "set"));
                continue;
            }
            first[i] = Some(s.name.span);
            match specs[i].check(&s.value) {
                Ok(v) => {
                    values[i] = Some(v);
                    written[i] = Written::Set(s.span);
                }
                Err(d) if d.message.is_empty() => written[i] = Written::Invalid, // already reported
                Err(mut d) => {
                    written[i] = Written::Invalid;
                    if let Some((span, message)) = self.narrowed_from(owner, &specs[i]) {
                        d.related.push(crate::diagnostic::Label { span, message });
                    }
                    self.push(*d);
                }
            }
        }
        let owner_name: std::sync::Arc<str> = owner.into();
        specs
            .iter()
            .zip(values)
            .zip(written)
            .map(|((spec, value), written)| {
                let (value, origin) = match (value, written) {
                    (Some(v), Written::Set(span)) => (
                        Resolved::Value(v),
                        Origin::Set {
                            line: self.line(span),
                        },
                    ),
                    _ => match spec.default.as_ref().map(|d| &d.value) {
                        Some(DefaultValue::Derived(d)) => (
                            Resolved::Derived(*d),
                            Origin::Derived {
                                from: owner_name.clone(),
                                derived: *d,
                            },
                        ),
                        Some(DefaultValue::Value(v)) => (
                            Resolved::Value(v.clone()),
                            Origin::Default {
                                from: owner_name.clone(),
                            },
                        ),
                        // Every declared parameter has a default; a template without one is
                        // reported where it is declared.
                        None => (
                            Resolved::Value(ParamValue::Num(Num::Int(0))),
                            Origin::Default {
                                from: owner_name.clone(),
                            },
                        ),
                    },
                };
                (
                    ResolvedParam {
                        name: spec.name.clone(),
                        value,
                        origin,
                    },
                    written,
                )
            })
            .collect()
    }

    /// For a parameter a user template narrowed: where the narrowing is, to label it.
    fn narrowed_from(&self, owner: &str, spec: &ParamSpec) -> Option<(Span, String)> {
        let t = self.user.iter().find(|t| t.name == owner)?;
        (spec.span.source != crate::source::SourceId::PRELUDE).then(|| {
            (
                spec.span,
                format!("`{}` narrows `{}` here", t.name, spec.name),
            )
        })
    }

    fn not_in_template(&mut self, t: &TemplateSpec, s: &Setting) -> Diagnostic {
        let name = &s.name.name;
        let owners: Vec<&str> = self
            .builtin
            .templates
            .iter()
            .chain(&self.user)
            .filter(|o| o.param(name).is_some())
            .map(|o| o.name.as_str())
            .collect();
        if !owners.is_empty() {
            return Diagnostic::error(
                Code::ParamNotInTemplate,
                s.name.span,
                format!("`{name}` is not a hyperparameter of `{}`", t.name),
            )
            .with_label(format!("`{name}` belongs to {}", list(&owners)))
            .with_related(t.span, format!("`{}` is declared here", t.name))
            .with_help(format!("remove this line, or `use {}` instead", owners[0]));
        }
        if TOP_SETTINGS.contains(&name.as_str()) || DATA_SETTINGS.contains(&name.as_str()) {
            let place = if TOP_SETTINGS.contains(&name.as_str()) {
                "at the top level of the file"
            } else {
                "inside the `data { .. }` block"
            };
            return Diagnostic::error(
                Code::UnknownParam,
                s.name.span,
                format!("`{name}` is not a hyperparameter"),
            )
            .with_label("not a hyperparameter")
            .with_help(format!("write `{name} = ..` {place}"));
        }
        Diagnostic::error(
            Code::UnknownParam,
            s.name.span,
            format!("`{}` has no hyperparameter `{name}`", t.name),
        )
        .with_label("unknown hyperparameter")
        .with_suggestion(
            s.name.span,
            did_you_mean(name, t.params.iter().map(|p| &*p.name)),
            || {
                let names: Vec<&str> = t.params.iter().map(|p| &*p.name).collect();
                format!("the hyperparameters of `{}` are {}", t.name, list(&names))
            },
        )
    }

    fn top_settings(
        &mut self,
        settings: &[&Setting],
        template: Option<&TemplateSpec>,
        name: &str,
    ) -> (Device, PathBuf, u64, Option<(PathBuf, Span)>) {
        let mut base = None;
        let mut device = Device::Cpu;
        let mut output = normalize(&self.base_dir.join("runs").join(name));
        let mut seed = 0u64;
        let mut seen: HashMap<&str, Span> = HashMap::default();
        for s in settings {
            let key = s.name.name.as_str();
            if TOP_SETTINGS.contains(&key)
                && seen_twice(&mut seen, &s.name, "set", self.diagnostics)
            {
                continue;
            }
            match key {
                "device" => {
                    if let Some(d) = self.device(&s.value) {
                        device = d;
                    }
                }
                "output" => match &s.value.kind {
                    ValueKind::Str(p) => output = self.resolve(p),
                    other => self.push(wrong(s, "a path in quotes", other)),
                },
                "base" => match &s.value.kind {
                    ValueKind::Str(p) => base = Some((self.resolve(p), s.value.span)),
                    ValueKind::Invalid => {}
                    other => self.push(wrong(
                        s,
                        "a path in quotes (a run folder or its `model.safetensors`)",
                        other,
                    )),
                },
                "seed" => match &s.value.kind {
                    ValueKind::Int(i) if *i >= 0 => seed = *i as u64,
                    ValueKind::Int(_) => self.push(
                        Diagnostic::error(
                            Code::OutOfRange,
                            s.value.span,
                            "`seed` cannot be negative",
                        )
                        .with_label("below 0")
                        .with_help("use a whole number from 0 up"),
                    ),
                    ValueKind::Invalid => {}
                    other => self.push(wrong(s, "a whole number", other)),
                },
                _ => {
                    let d = self.unknown_top(s, template);
                    self.push(d);
                }
            }
        }
        (device, output, seed, base)
    }

    /// Reads the base model's `model.json`. It is read even without
    /// file-system checks: like an import, it decides the template.
    fn base_model(&mut self, path: &Path, span: Span) -> Option<BaseModel> {
        let (weights, meta_path) = if path.is_dir() {
            (path.join("model.safetensors"), path.join("model.json"))
        } else {
            (path.to_path_buf(), path.with_extension("json"))
        };
        let shown = path.display();
        if !path.exists() {
            let help = fs::relative_help(self);
            self.push(
                Diagnostic::error(Code::PathNotFound, span, format!("the base model `{shown}` does not exist"))
                    .with_label("no such path")
                    .with_help(format!("name the folder of a finished run (it holds `model.safetensors` and `model.json`); {help}")),
            );
            return None;
        }
        let mut fail = |message: String, help: &str| {
            self.push(
                Diagnostic::error(Code::BaseModel, span, message)
                    .with_label("not a model wfrun trained")
                    .with_help(help.to_string()),
            );
        };
        if !weights.is_file() {
            fail(
                format!("`{}` does not exist", weights.display()),
                "a finished run's folder holds `model.safetensors`; was the run stopped before it finished? `--resume` finishes it",
            );
            return None;
        }
        let text = match std::fs::read_to_string(&meta_path) {
            Ok(t) => t,
            Err(e) => {
                fail(
                    format!("cannot read `{}`: {e}", meta_path.display()),
                    "a base model needs the `model.json` its run wrote beside it",
                );
                return None;
            }
        };
        match ModelMeta::from_json(&text) {
            Ok(meta) => Some(BaseModel {
                weights,
                meta_path,
                meta,
            }),
            Err(e) => {
                fail(
                    format!("`{}` does not describe a model: {e}", meta_path.display()),
                    "use the `model.json` a wfrun run wrote",
                );
                None
            }
        }
    }

    /// The template a base model was trained with: its own when this file or
    /// the prelude declares it, else the built-in one of its architecture.
    fn base_template(&self, base: &BaseModel) -> Option<TemplateSpec> {
        self.template(&base.meta.template)
            .filter(|t| t.architecture == base.meta.architecture)
            .or_else(|| {
                self.builtin
                    .templates
                    .iter()
                    .find(|t| t.architecture == base.meta.architecture)
            })
            .cloned()
    }

    fn unknown_top(&self, s: &Setting, template: Option<&TemplateSpec>) -> Diagnostic {
        let name = &s.name.name;
        let d = Diagnostic::error(
            Code::UnknownSetting,
            s.name.span,
            format!("unknown setting `{name}`"),
        )
        .with_label("not a top-level setting");
        if let Some(t) = template.filter(|t| t.param(name).is_some()) {
            return d.with_help(format!(
                "`{name}` is a hyperparameter of `{}`: set it inside `use {} {{ .. }}`",
                t.name, t.name
            ));
        }
        if self
            .builtin
            .templates
            .iter()
            .chain(&self.user)
            .any(|t| t.param(name).is_some())
        {
            return d.with_help(format!(
                "`{name}` is a hyperparameter: set it inside the `use TEMPLATE {{ .. }}` block"
            ));
        }
        if DATA_SETTINGS.contains(&name.as_str()) {
            return d.with_help(format!("`{name}` goes inside the `data {{ .. }}` block"));
        }
        d.with_suggestion(s.name.span, did_you_mean(name, TOP_SETTINGS), || {
            format!("the top-level settings are {}", list(&TOP_SETTINGS))
        })
    }

    fn device(&mut self, value: &Value) -> Option<Device> {
        let device = match &value.kind {
            ValueKind::Name(n) if n == "cpu" => Device::Cpu,
            ValueKind::Name(n) if n == "auto" => Device::Auto,
            ValueKind::Call { name, args } if name.name == "cuda" || name.name == "metal" => {
                let index = match args.as_slice() {
                    [Value {
                        kind: ValueKind::Int(i),
                        ..
                    }] if *i >= 0 => *i as usize,
                    _ => {
                        self.push(
                            Diagnostic::error(
                                Code::BadDevice,
                                value.span,
                                format!("`{}` takes one device index", name.name),
                            )
                            .with_label("expected one whole number from 0 up")
                            .with_help(format!(
                                "write `device = {}(0)` for the first device",
                                name.name
                            )),
                        );
                        return None;
                    }
                };
                if name.name == "cuda" {
                    Device::Cuda(index)
                } else {
                    Device::Metal(index)
                }
            }
            ValueKind::Invalid => return None,
            other => {
                let written = match other {
                    ValueKind::Name(n)
                    | ValueKind::Call {
                        name: Ident { name: n, .. },
                        ..
                    } => Some(n.as_str()),
                    ValueKind::Str(s) => Some(s.as_str()),
                    _ => None,
                };
                let suggestion = written
                    .and_then(|w| did_you_mean(w, ["cpu", "auto", "cuda", "metal"]))
                    .map(|x| match x {
                        "cuda" | "metal" => format!("{x}(0)"),
                        x => x.to_string(),
                    });
                self.push(
                    Diagnostic::error(
                        Code::BadDevice,
                        value.span,
                        format!("{} is not a device", other.describe()),
                    )
                    .with_label("unknown device")
                    .with_suggestion(value.span, suggestion.as_deref(), || {
                        "write `device = cpu`, `auto`, `cuda(N)` or `metal(N)`".to_string()
                    }),
                );
                return None;
            }
        };
        let missing = match device {
            Device::Cuda(_) if !cfg!(feature = "cuda") => Some(("CUDA", "cuda")),
            Device::Metal(_) if !cfg!(feature = "metal") => Some(("Metal", "metal")),
            _ => None,
        };
        if let Some((what, feature)) = missing {
            self.push(
                Diagnostic::error(Code::DeviceUnavailable, value.span, format!("this build of wfrun has no {what} support"))
                    .with_label(format!("needs the `{feature}` feature"))
                    .with_help(format!("build wfrun with `--features {feature}`, or use `device = cpu` (or `auto`, which falls back to the CPU)")),
            );
            return None;
        }
        Some(device)
    }

    fn data(&mut self, d: &DataDecl, template: Option<&TemplateSpec>) -> Option<DataSpec> {
        let settings = self.block_settings(
            Some(&d.body),
            "a `data` block holds settings, not `param` declarations",
        );
        let mut train = None;
        let mut eval = Eval::Fraction(DEFAULT_EVAL_FRACTION);
        let mut weights = None;
        let mut seen: HashMap<&str, Span> = HashMap::default();
        let mut ok = true;
        for s in settings {
            let key = s.name.name.as_str();
            if seen_twice(&mut seen, &s.name, "set", self.diagnostics) {
                continue;
            }
            match key {
                "train" => match self.image_source(s) {
                    Some(src) => train = Some(src),
                    None => ok = false,
                },
                "eval" => match &s.value.kind {
                    ValueKind::Float(f) if *f > 0.0 && *f < 1.0 => eval = Eval::Fraction(*f),
                    ValueKind::Float(_) | ValueKind::Int(_) => {
                        ok = false;
                        self.push(
                            Diagnostic::error(Code::OutOfRange, s.value.span, "a held-out fraction lies strictly between 0 and 1")
                                .with_label("not between 0 and 1")
                                .with_help("write e.g. `eval = 0.1` to hold out a tenth of the images, or a folder `eval = \"path\"`"),
                        );
                    }
                    _ => match self.image_source(s) {
                        Some(src) => eval = Eval::Images(src),
                        None => ok = false,
                    },
                },
                "weights" => match &s.value.kind {
                    ValueKind::Str(p) => weights = Some(self.resolve(p)),
                    ValueKind::Invalid => ok = false,
                    other => {
                        ok = false;
                        self.push(wrong(s, "a path in quotes (a safetensors file)", other));
                    }
                },
                _ => {
                    let d = Diagnostic::error(
                        Code::UnknownSetting,
                        s.name.span,
                        format!("unknown data setting `{key}`"),
                    )
                    .with_label("not a data setting");
                    let d = if template.is_some_and(|t| t.param(key).is_some()) {
                        d.with_help(format!(
                            "`{key}` is a hyperparameter: set it inside the `use` block"
                        ))
                    } else {
                        d.with_suggestion(s.name.span, did_you_mean(key, DATA_SETTINGS), || {
                            format!("the data settings are {}", list(&DATA_SETTINGS))
                        })
                    };
                    self.push(d);
                }
            }
        }
        if train.is_none() && !seen.contains_key("train") && !self.broken_within(Some(d.body.span))
        {
            self.push(
                Diagnostic::error(Code::Missing, d.keyword, "the `data` block names no training images")
                    .with_label("`train` is missing")
                    .with_help("add `train = \"path/to/images\"` (one sub-folder per concept) or `train = manifest(\"images.csv\")`"),
            );
        }
        // An error elsewhere in the block is already reported; the paths are
        // still worth checking, so the spec is returned all the same.
        let _ = ok;
        Some(DataSpec {
            train: train?,
            eval,
            weights,
        })
    }

    fn image_source(&mut self, s: &Setting) -> Option<ImageSource> {
        match &s.value.kind {
            ValueKind::Str(p) => Some(ImageSource::Folder(self.resolve(p))),
            ValueKind::Call { name, args } if name.name == "manifest" => match args.as_slice() {
                [Value {
                    kind: ValueKind::Str(p),
                    ..
                }] => Some(ImageSource::Manifest(self.resolve(p))),
                _ => {
                    self.push(
                        Diagnostic::error(
                            Code::WrongType,
                            s.value.span,
                            "`manifest` takes one path in quotes",
                        )
                        .with_label("expected `manifest(\"file.csv\")`"),
                    );
                    None
                }
            },
            ValueKind::Invalid => None,
            other => {
                self.push(wrong(
                    s,
                    "a folder path in quotes or `manifest(\"file\")`",
                    other,
                ));
                None
            }
        }
    }

    fn steps(&mut self, steps: &[&StepDecl], seed: u64) -> Vec<Option<StepSpec>> {
        let mut names: HashMap<String, Span> = HashMap::default();
        let mut out = Vec::new();
        for s in steps {
            let Some(kind) = self.builtin.step_kind(&s.kind.name) else {
                let names: Vec<&str> = self
                    .builtin
                    .step_kinds
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect();
                self.push(
                    Diagnostic::error(
                        Code::UnknownStepKind,
                        s.kind.span,
                        format!("there is no step `{}`", s.kind.name),
                    )
                    .with_label("unknown step")
                    .with_suggestion(
                        s.kind.span,
                        did_you_mean(&s.kind.name, names.iter().copied()),
                        || format!("the steps are {}", list(&names)),
                    ),
                );
                out.push(None);
                continue;
            };
            let name_ident = s.alias.as_ref().unwrap_or(&s.kind);
            if let Some(first) = names.get(&name_ident.name) {
                self.push(
                    Diagnostic::error(
                        Code::Duplicate,
                        name_ident.span,
                        format!("two steps are named `{}`", name_ident.name),
                    )
                    .with_label("second step of that name")
                    .with_related(*first, "first one here")
                    .with_help(format!(
                        "name them apart: `step {} as another_name {{ .. }}`",
                        s.kind.name
                    )),
                );
            } else {
                names.insert(name_ident.name.clone(), name_ident.span);
            }
            let settings = self.block_settings(
                s.body.as_ref(),
                "a `step` block holds settings, not `param` declarations",
            );
            let kind_name = kind.name.clone();
            let params = self.resolve_params(&kind.params, &settings, &kind_name, |_, st| {
                let name = &st.name.name;
                Diagnostic::error(
                    Code::UnknownParam,
                    st.name.span,
                    format!("the step `{}` has no parameter `{name}`", kind.name),
                )
                .with_label("unknown parameter")
                .with_suggestion(
                    st.name.span,
                    did_you_mean(name, kind.params.iter().map(|p| &*p.name)),
                    || {
                        let names: Vec<&str> = kind.params.iter().map(|p| &*p.name).collect();
                        format!("the parameters of `{}` are {}", kind.name, list(&names))
                    },
                )
            });
            let params: Vec<ResolvedParam> = params.into_iter().map(|(p, _)| p).collect();
            let typed = typed::step_params(kind.id, &params, seed, &|p| self.resolve(p));
            out.push(match typed {
                Ok(typed) => Some(StepSpec {
                    kind: kind.id,
                    name: name_ident.name.clone(),
                    params,
                    typed,
                }),
                // A value already reported as wrong leaves the step untyped.
                Err(_) if self.diagnostics.iter().any(Diagnostic::is_error) => None,
                Err(message) => {
                    self.push(Diagnostic::error(
                        Code::BadTemplate,
                        name_ident.span,
                        format!("the step's parameters cannot be used: {message}"),
                    ));
                    None
                }
            });
        }
        out
    }

    /// Rules between fields: the schedule, the learning rate, the seed's advice.
    fn cross_checks(
        &mut self,
        t: &TemplateSpec,
        u: &UseDecl,
        params: &[(ResolvedParam, Written)],
        has_weights: bool,
    ) {
        let get = |name: &str| params.iter().find(|(p, _)| &*p.name == name);
        // A value reported as wrong takes no part in the rules between fields.
        let num = |name: &str| match get(name) {
            Some((_, Written::Invalid)) => None,
            Some((p, _)) => match &p.value {
                Resolved::Value(ParamValue::Num(n)) => Some(n.as_f64()),
                _ => None,
            },
            None => None,
        };
        let span_of = |name: &str| get(name).and_then(|(_, w)| w.span());
        let use_span = u.keyword.to(u.template.span);
        let at = |name: &str| span_of(name).unwrap_or(use_span);

        if let (Some(init), Some(total)) = (num("init_epochs"), num("num_epochs")) {
            let step = num("step_epochs").unwrap_or(1.0);
            if init > total {
                let primary = span_of("init_epochs")
                    .or(span_of("num_epochs"))
                    .unwrap_or(use_span);
                let mut d = Diagnostic::error(
                    Code::Schedule,
                    primary,
                    format!("`init_epochs` = {init} is beyond `num_epochs` = {total}"),
                )
                .with_label("more epochs at the initial rate than epochs in all")
                .with_help(format!("lower `init_epochs` to at most {total}, or raise `num_epochs` to at least {init}"));
                if let Some(other) = span_of("num_epochs").filter(|s| *s != primary) {
                    d = d.with_related(other, "the total number of epochs");
                }
                self.push(d);
            } else if init == total {
                self.push(
                    Diagnostic::warning(
                        Code::Schedule,
                        at("init_epochs"),
                        "the learning rate never decreases",
                    )
                    .with_label(format!("all {total} epochs run at the initial rate"))
                    .with_help("lower `init_epochs` below `num_epochs` to let the rate decrease"),
                );
            } else if init + step >= total && span_of("step_epochs").is_some() {
                self.push(
                    Diagnostic::warning(Code::Schedule, at("step_epochs"), format!("`step_epochs` = {step} has no effect"))
                        .with_label(format!(
                            "the only decrease happens after epoch {init}; a second would come after epoch {}, past the last epoch {total}",
                            init + step
                        ))
                        .with_help(format!("lower `step_epochs` below {} for further decreases, or remove it", total - init)),
                );
            }
        }

        // Batch norm needs two images in a batch: a batch of one trains nothing.
        for (name, what) in [
            ("batch_size", "a batch of one image"),
            ("num_items_per_epoch", "an epoch of one image"),
        ] {
            if num(name) == Some(1.0) {
                self.push(
                    Diagnostic::error(
                        Code::OutOfRange,
                        at(name),
                        format!("`{name}` = 1 trains nothing"),
                    )
                    .with_label(format!("{what} is skipped: batch norm needs two images"))
                    .with_help(format!("set `{name}` to at least 2")),
                );
            }
        }

        let recommended = t
            .param("per_item_lrate")
            .and_then(|p| match p.default.as_ref().map(|d| &d.value) {
                Some(DefaultValue::Value(ParamValue::Num(n))) => Some(n.as_f64()),
                _ => None,
            })
            .filter(|r| *r > 0.0);
        if let (Some(per_item), Some(batch)) = (num("per_item_lrate"), num("batch_size")) {
            let lrate = per_item * batch;
            if per_item == 0.0 {
                self.push(
                    Diagnostic::warning(
                        Code::LearningRate,
                        at("per_item_lrate"),
                        "a learning rate of 0 never changes the weights",
                    )
                    .with_label("`per_item_lrate` = 0")
                    .with_help(match recommended {
                        Some(r) => format!("the template's default is {}", fmt_float(r)),
                        None => "set a positive `per_item_lrate`".to_string(),
                    }),
                );
            } else if lrate >= 0.1 {
                self.push(
                    Diagnostic::warning(
                        Code::LearningRate,
                        at("per_item_lrate"),
                        format!("`lrate` = {} × {} = {} is high", fmt_float(per_item), batch, fmt_float(lrate)),
                    )
                    .with_label("training from random weights failed for all three templates at `lrate` 0.1 in measurements")
                    .with_help(match recommended {
                        Some(r) => format!("try `per_item_lrate = {}` (`lrate` {}), the template's default", fmt_float(r), fmt_float(r * batch)),
                        None => "lower `per_item_lrate`".to_string(),
                    }),
                );
            }
        }

        if t.architecture == Architecture::Resnet101AngularMargin && !has_weights {
            if let (Some(s), Some(m)) = (num("angular_scale"), num("angular_margin")) {
                if s >= 64.0 && m >= 0.5 {
                    let primary = span_of("angular_margin")
                        .or(span_of("angular_scale"))
                        .unwrap_or(use_span);
                    self.push(
                        Diagnostic::warning(
                            Code::AngularFromScratch,
                            primary,
                            format!("`angular_scale` = {s} with `angular_margin` = {m} tends to stall when training from random weights"),
                        )
                        .with_label("no `weights` in the `data` block")
                        .with_help("on small data start gentler (`angular_scale = 16`, `angular_margin = 0.1` reached 0.93 held-out accuracy where 64 / 0.5 reached 0.24), or start from pretrained `weights = \"model.safetensors\"`"),
                    );
                }
            }
        }

        if let (Some(items), Some(batch)) = (num("num_items_per_epoch"), num("batch_size")) {
            if items < batch {
                self.push(
                    Diagnostic::warning(
                        Code::Schedule,
                        at("num_items_per_epoch"),
                        format!("an epoch of {items} images is smaller than one batch of {batch}"),
                    )
                    .with_label("every epoch is a single partial batch")
                    .with_help("raise `num_items_per_epoch` or lower `batch_size`"),
                );
            }
        }
    }
}

/// A base model's hyperparameters, as its `model.json` records them.
fn base_params(base: &BaseModel, t: &TemplateSpec) -> Vec<(ResolvedParam, Written)> {
    let from: std::sync::Arc<str> = base.meta_path.display().to_string().into();
    let template: std::sync::Arc<str> = t.name.as_str().into();
    // Each of the template's parameters as the model recorded it; one it did
    // not record (a frozen model needs only its network's) takes the default.
    t.params
        .iter()
        .filter_map(|spec| {
            let recorded = base.meta.params.iter().find(|p| *p.name == *spec.name);
            let (value, origin) = match (recorded, spec.default.as_ref().map(|d| &d.value)) {
                (Some(p), _) => (
                    Resolved::Value(ParamValue::Num(p.value)),
                    Origin::Base {
                        model: from.clone(),
                    },
                ),
                (None, Some(DefaultValue::Value(v))) => (
                    Resolved::Value(v.clone()),
                    Origin::Default {
                        from: template.clone(),
                    },
                ),
                (None, Some(DefaultValue::Derived(d))) => (
                    Resolved::Derived(*d),
                    Origin::Derived {
                        from: template.clone(),
                        derived: *d,
                    },
                ),
                (None, None) => return None,
            };
            let name = spec.name.clone();
            Some((
                ResolvedParam {
                    name,
                    value,
                    origin,
                },
                Written::Unset,
            ))
        })
        .collect()
}

fn data_decl_of(module: &Module) -> Option<&DataDecl> {
    module.items.iter().find_map(|i| match i {
        Item::Data(d) => Some(d),
        _ => None,
    })
}

/// Spans of the data block's settings, by name, for file-system diagnostics.
fn data_decl_spans(d: Option<&DataDecl>) -> HashMap<String, Span> {
    d.map(|d| {
        d.body
            .settings()
            .map(|s| (s.name.name.clone(), s.value.span))
            .collect()
    })
    .unwrap_or_default()
}

fn wrong(s: &Setting, expected: &str, found: &ValueKind) -> Diagnostic {
    let d = Diagnostic::error(
        Code::WrongType,
        s.value.span,
        format!(
            "`{}` expects {expected}, found {}",
            s.name.name,
            found.describe()
        ),
    )
    .with_label(format!("expected {expected}"));
    match found {
        ValueKind::Name(n) if expected.contains("path") => d.with_help(format!(
            "write paths in quotes: `{} = \"{n}\"`",
            s.name.name
        )),
        _ => d,
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
    out.iter().collect()
}
