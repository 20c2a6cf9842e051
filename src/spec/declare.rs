//! Template and step-kind declarations → [`TemplateSpec`] / [`StepKindSpec`].
//!
//! The prelude declares root templates (`template NAME { architecture = .. }`)
//! and step kinds; a workflow may declare templates that narrow another one
//! (`template NAME extends PARENT { param image_size { max = 512 } }`). Narrowing
//! is proven here: a narrowed range, step and default stay inside the parent's.

use crate::suggest::FastMap as HashMap;
use std::sync::Arc;

use super::*;
use crate::diagnostic::{Code, Diagnostic};
use crate::suggest::did_you_mean;
use crate::syntax::{Block, BlockItem, Ident, Item, Module, ParamDecl, Setting, TemplateDecl};

const TEMPLATE_SETTINGS: [&str; 3] = ["doc", "architecture", "lr_decay"];
const PARAM_SETTINGS: [&str; 5] = ["min", "max", "step", "default", "doc"];

/// Reads the prelude: root templates and step kinds.
pub fn prelude(module: &Module, diagnostics: &mut Vec<Diagnostic>) -> Registry {
    let mut registry = Registry::default();
    let empty = Registry::default();
    let templates: Vec<&TemplateDecl> = module
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Template(t) => Some(t),
            _ => None,
        })
        .collect();
    registry.templates = templates_of(&templates, &empty, true, diagnostics);
    for item in &module.items {
        match item {
            Item::Template(_) => {}
            Item::StepKind(k) => {
                if let Some(spec) = step_kind(k, diagnostics) {
                    registry.step_kinds.push(spec);
                }
            }
            other => diagnostics.push(Diagnostic::error(
                Code::Misplaced,
                other.span(),
                "the prelude holds only `template` and `step_kind` declarations",
            )),
        }
    }
    registry
}

/// Reads the templates a workflow declares, each narrowing a template of
/// `base` or another template of the same file.
pub fn user_templates(
    module: &Module,
    base: &Registry,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<TemplateSpec> {
    let decls: Vec<&TemplateDecl> = module
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Template(t) => Some(t),
            _ => None,
        })
        .collect();
    templates_of(&decls, base, false, diagnostics)
}

/// Declares `decls` in dependency order (parents first), detecting cycles.
fn templates_of(
    decls: &[&TemplateDecl],
    base: &Registry,
    root_allowed: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<TemplateSpec> {
    let mut by_name: HashMap<&str, &TemplateDecl> = HashMap::default();
    let mut order: Vec<&TemplateDecl> = Vec::new();
    for d in decls {
        if let Some(builtin) = base.template(&d.name.name) {
            diagnostics.push(
                Diagnostic::error(
                    Code::Duplicate,
                    d.name.span,
                    format!("a template named `{}` is built in", d.name.name),
                )
                .with_label("already declared")
                .with_related(builtin.span, "the built-in template is declared here")
                .with_help("give your template another name"),
            );
            continue;
        }
        if let Some(first) = by_name.get(d.name.name.as_str()) {
            diagnostics.push(
                Diagnostic::error(
                    Code::Duplicate,
                    d.name.span,
                    format!("the template `{}` is declared twice", d.name.name),
                )
                .with_label("declared again here")
                .with_related(first.name.span, "first declared here")
                .with_help("remove one of them or rename it"),
            );
            continue;
        }
        by_name.insert(&d.name.name, d);
        order.push(d);
    }

    let mut done = Done::default();
    let mut state: HashMap<&str, State> = HashMap::default();
    for d in &order {
        visit(
            d,
            &by_name,
            base,
            root_allowed,
            &mut state,
            &mut done,
            diagnostics,
        );
    }
    let Done {
        specs: mut done, ..
    } = done;
    // Keep declaration order, which people expect in listings.
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.name.as_str(), i))
        .collect();
    done.sort_by_key(|t| rank.get(t.name.as_str()).copied().unwrap_or(usize::MAX));
    done
}

/// The templates declared so far, with an index by name.
#[derive(Default)]
struct Done {
    specs: Vec<TemplateSpec>,
    index: HashMap<String, usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Visiting,
    Done,
}

fn visit<'a>(
    d: &'a TemplateDecl,
    by_name: &HashMap<&'a str, &'a TemplateDecl>,
    base: &Registry,
    root_allowed: bool,
    state: &mut HashMap<&'a str, State>,
    done: &mut Done,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match state.get(d.name.name.as_str()) {
        Some(State::Done) => return,
        Some(State::Visiting) => {
            let at = d.parent.as_ref().map_or(d.name.span, |p| p.span);
            diagnostics.push(
                Diagnostic::error(
                    Code::BadTemplate,
                    at,
                    format!("the template `{}` extends itself", d.name.name),
                )
                .with_label("this `extends` closes a cycle")
                .with_help("make the chain of `extends` end at a built-in template"),
            );
            state.insert(&d.name.name, State::Done);
            return;
        }
        None => {}
    }
    state.insert(&d.name.name, State::Visiting);
    let spec = match &d.parent {
        None if root_allowed => root_template(d, diagnostics),
        None => {
            diagnostics.push(
                Diagnostic::error(
                    Code::BadTemplate,
                    d.name.span,
                    format!("the template `{}` extends no template", d.name.name),
                )
                .with_label("needs `extends`")
                .with_help(format!(
                    "a workflow's template narrows a built-in one, e.g. `template {} extends Clarifai_ResNext {{ .. }}`",
                    d.name.name
                )),
            );
            None
        }
        Some(parent) => {
            if let Some(pd) = by_name.get(parent.name.as_str()) {
                visit(pd, by_name, base, root_allowed, state, done, diagnostics);
            }
            let parent_spec = done
                .index
                .get(parent.name.as_str())
                .map(|&i| &done.specs[i])
                .or_else(|| base.template(&parent.name));
            match parent_spec {
                Some(p) => narrowed_template(d, p, diagnostics),
                None if by_name.contains_key(parent.name.as_str()) => None, // already reported
                None => {
                    let names = base
                        .templates
                        .iter()
                        .map(|t| t.name.as_str())
                        .chain(by_name.keys().copied());
                    diagnostics.push(unknown_template(parent, names));
                    None
                }
            }
        }
    };
    state.insert(&d.name.name, State::Done);
    if let Some(spec) = spec {
        done.index.insert(spec.name.clone(), done.specs.len());
        done.specs.push(spec);
    }
}

/// The error for a template name that names no template.
pub fn unknown_template<'a>(
    name: &Ident,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Diagnostic {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    Diagnostic::error(
        Code::UnknownTemplate,
        name.span,
        format!("there is no template named `{}`", name.name),
    )
    .with_label("unknown template")
    .with_suggestion(
        name.span,
        did_you_mean(&name.name, candidates.iter().copied()),
        || format!("the templates are {}", list(&candidates)),
    )
}

/// `a`, `a` and `b`, `a`, `b` and `c`, each in backticks.
pub fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => "none".to_string(),
        1 => quoted[0].clone(),
        n => format!("{} and {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// Collapses the layout whitespace of a doc string into single spaces.
fn doc_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn expect_str(s: &Setting, diagnostics: &mut Vec<Diagnostic>) -> Option<String> {
    match &s.value.kind {
        ValueKind::Str(text) => Some(doc_text(text)),
        ValueKind::Invalid => None,
        other => {
            diagnostics.push(
                Diagnostic::error(
                    Code::WrongType,
                    s.value.span,
                    format!(
                        "`{}` expects a string, found {}",
                        s.name.name,
                        other.describe()
                    ),
                )
                .with_label("expected a string"),
            );
            None
        }
    }
}

/// The error for `name` written a second time (`verb`: "set", "declared");
/// `first` is where it was written first.
pub(crate) fn twice(name: &Ident, first: Span, verb: &str) -> Diagnostic {
    Diagnostic::error(
        Code::Duplicate,
        name.span,
        format!("`{}` is {verb} twice", name.name),
    )
    .with_label(format!("{verb} again here"))
    .with_related(first, format!("first {verb} here"))
    .with_help("remove one of the two")
}

/// Reports `name` written twice in one block; returns true for a duplicate.
pub(crate) fn seen_twice<'a>(
    seen: &mut HashMap<&'a str, Span>,
    name: &'a Ident,
    verb: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    if let Some(&first) = seen.get(name.name.as_str()) {
        diagnostics.push(twice(name, first, verb));
        return true;
    }
    seen.insert(&name.name, name.span);
    false
}

fn root_template(d: &TemplateDecl, diagnostics: &mut Vec<Diagnostic>) -> Option<TemplateSpec> {
    let mut doc: Arc<str> = Arc::from("");
    let mut architecture: Option<Architecture> = None;
    let mut lr_decay = DEFAULT_LR_DECAY;
    let mut seen = HashMap::default();
    for s in d.body.settings() {
        if seen_twice(&mut seen, &s.name, "set", diagnostics) {
            continue;
        }
        match s.name.name.as_str() {
            "doc" => doc = expect_str(s, diagnostics).unwrap_or_default().into(),
            "architecture" => match &s.value.kind {
                ValueKind::Name(n) if Architecture::from_name(n).is_some() => {
                    architecture = Architecture::from_name(n)
                }
                _ => diagnostics.push(
                    Diagnostic::error(Code::BadTemplate, s.value.span, "unknown architecture")
                        .with_help(format!(
                            "the architectures are {}",
                            list(&Architecture::ALL.map(|a| a.name()))
                        )),
                ),
            },
            "lr_decay" => match &s.value.kind {
                ValueKind::Float(f) if *f > 0.0 && *f <= 1.0 => lr_decay = *f,
                _ => diagnostics.push(
                    Diagnostic::error(
                        Code::OutOfRange,
                        s.value.span,
                        "`lr_decay` must be a number above 0 and at most 1",
                    )
                    .with_label("not in (0, 1]"),
                ),
            },
            _ => diagnostics.push(unknown_template_setting(s, None)),
        }
    }
    let Some(architecture) = architecture else {
        diagnostics.push(
            Diagnostic::error(
                Code::BadTemplate,
                d.name.span,
                format!("the template `{}` names no architecture", d.name.name),
            )
            .with_help("add `architecture = ...`"),
        );
        return None;
    };
    let params = fresh_params(&d.body, diagnostics);
    let required = architecture.required_params();
    for (name, kind) in &required {
        match params.iter().find(|p| &*p.name == *name) {
            None => diagnostics.push(
                Diagnostic::error(
                    Code::BadTemplate,
                    d.name.span,
                    format!(
                        "the template `{}` lacks the parameter `{name}` that `{}` reads",
                        d.name.name,
                        architecture.name()
                    ),
                )
                .with_help(format!("declare `param {name}: ...`")),
            ),
            Some(p) if p.ty.numeric != Some(*kind) => diagnostics.push(Diagnostic::error(
                Code::BadTemplate,
                p.span,
                format!(
                    "`{name}` must be of type `{}`",
                    if *kind == NumKind::Int {
                        "int"
                    } else {
                        "float"
                    }
                ),
            )),
            Some(_) => {}
        }
    }
    for p in &params {
        if !required.iter().any(|(n, _)| **n == *p.name) {
            diagnostics.push(Diagnostic::error(
                Code::BadTemplate,
                p.span,
                format!(
                    "`{}` does not read the parameter `{}`",
                    architecture.name(),
                    p.name
                ),
            ));
        }
    }
    Some(TemplateSpec {
        name: d.name.name.clone(),
        span: d.name.span,
        parent: None,
        architecture,
        lr_decay,
        doc,
        params,
    })
}

fn unknown_template_setting(s: &Setting, parent: Option<&TemplateSpec>) -> Diagnostic {
    let name = &s.name.name;
    if let Some(p) = parent.and_then(|p| p.param(name)) {
        return Diagnostic::error(
            Code::Misplaced,
            s.span,
            format!("a template changes `{name}` through a `param` block"),
        )
        .with_label("not a template setting")
        .with_help(format!(
            "write `param {name} {{ default = {} }}`",
            value_text(s, p)
        ));
    }
    let allowed: &[&str] = if parent.is_some() {
        &["doc"]
    } else {
        &TEMPLATE_SETTINGS
    };
    Diagnostic::error(
        Code::UnknownSetting,
        s.name.span,
        format!("unknown template setting `{name}`"),
    )
    .with_label("unknown setting")
    .with_suggestion(
        s.name.span,
        did_you_mean(name, allowed.iter().copied()),
        || format!("a template's settings are {}", list(allowed)),
    )
}

fn value_text(s: &Setting, _p: &ParamSpec) -> String {
    match &s.value.kind {
        ValueKind::Int(i) => i.to_string(),
        ValueKind::Float(f) => fmt_float(*f),
        ValueKind::Str(t) => format!("\"{t}\""),
        ValueKind::Name(n) => n.clone(),
        _ => "...".to_string(),
    }
}

fn step_kind(
    d: &crate::syntax::StepKindDecl,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<StepKindSpec> {
    let Some(id) = StepKindId::from_name(&d.name.name) else {
        diagnostics.push(Diagnostic::error(
            Code::BadTemplate,
            d.name.span,
            format!("wfrun has no implementation of the step `{}`", d.name.name),
        ));
        return None;
    };
    let mut doc: Arc<str> = Arc::from("");
    for s in d.body.settings() {
        match s.name.name.as_str() {
            "doc" => doc = expect_str(s, diagnostics).unwrap_or_default().into(),
            _ => diagnostics.push(unknown_template_setting(s, None)),
        }
    }
    let params = fresh_params(&d.body, diagnostics);
    for name in id.required_params() {
        if !params.iter().any(|p| &*p.name == *name) {
            diagnostics.push(Diagnostic::error(
                Code::BadTemplate,
                d.name.span,
                format!(
                    "the step kind `{}` lacks the parameter `{name}`",
                    d.name.name
                ),
            ));
        }
    }
    Some(StepKindSpec {
        name: d.name.name.clone(),
        span: d.name.span,
        id,
        doc,
        params,
    })
}

fn params_of(block: &Block) -> impl Iterator<Item = &ParamDecl> {
    block.items.iter().filter_map(|i| match i {
        BlockItem::Param(p) => Some(p),
        BlockItem::Setting(_) => None,
    })
}

fn fresh_params(block: &Block, diagnostics: &mut Vec<Diagnostic>) -> Vec<ParamSpec> {
    let mut out: Vec<ParamSpec> = Vec::new();
    let mut seen = HashMap::default();
    for p in params_of(block) {
        if seen_twice(&mut seen, &p.name, "declared", diagnostics) {
            continue;
        }
        if let Some(spec) = fresh_param(p, diagnostics) {
            out.push(spec);
        }
    }
    out
}

fn param_type(p: &ParamDecl, diagnostics: &mut Vec<Diagnostic>) -> Option<ParamType> {
    let Some(ty) = &p.ty else {
        diagnostics.push(
            Diagnostic::error(
                Code::BadTemplate,
                p.name.span,
                format!("the parameter `{}` has no type", p.name.name),
            )
            .with_help(format!(
                "write `param {}: int {{ .. }}` (or `float`, `path`, keywords)",
                p.name.name
            )),
        );
        return None;
    };
    let mut t = ParamType::default();
    for alt in &ty.alternatives {
        let kind = match alt.name.as_str() {
            "int" => Some(NumKind::Int),
            "float" => Some(NumKind::Float),
            _ => None,
        };
        if let Some(kind) = kind {
            if t.numeric.is_some() {
                diagnostics.push(Diagnostic::error(
                    Code::BadTemplate,
                    alt.span,
                    "a parameter is either `int` or `float`, not both",
                ));
            }
            t.numeric = Some(kind);
        } else if alt.name == "path" {
            t.path = true;
        } else if !t.keywords.contains(&alt.name) {
            t.keywords.push(alt.name.clone());
        }
    }
    Some(t)
}

fn fresh_param(p: &ParamDecl, diagnostics: &mut Vec<Diagnostic>) -> Option<ParamSpec> {
    let ty = param_type(p, diagnostics)?;
    let mut spec = ParamSpec {
        name: p.name.name.as_str().into(),
        span: p.name.span,
        ty,
        min: None,
        max: None,
        step: None,
        default: None,
        doc: Arc::from(""),
    };
    let settings: Vec<&Setting> = p.body.iter().flat_map(|b| b.settings()).collect();
    nested_params(p, diagnostics);
    let mut seen = HashMap::default();
    let mut default: Option<&Setting> = None;
    for s in &settings {
        if seen_twice(&mut seen, &s.name, "set", diagnostics) {
            continue;
        }
        match s.name.name.as_str() {
            "min" => spec.min = bound(&spec, s, diagnostics),
            "max" => spec.max = bound(&spec, s, diagnostics),
            "step" => spec.step = step(&spec, s, diagnostics),
            "doc" => spec.doc = expect_str(s, diagnostics).unwrap_or_default().into(),
            "default" => default = Some(s),
            _ => diagnostics.push(unknown_param_setting(s)),
        }
    }
    if let (Some(lo), Some(hi)) = (&spec.min, &spec.max) {
        if lo.value.as_f64() > hi.value.as_f64() {
            diagnostics.push(
                Diagnostic::error(
                    Code::OutOfRange,
                    hi.span,
                    format!("the maximum {} is below the minimum {}", hi.value, lo.value),
                )
                .with_related(lo.span, "the minimum"),
            );
        }
    }
    if let Some(s) = default {
        spec.default = default_value(&spec, s, diagnostics);
    }
    Some(spec)
}

fn nested_params(p: &ParamDecl, diagnostics: &mut Vec<Diagnostic>) {
    for inner in p.body.iter().flat_map(params_of) {
        diagnostics.push(
            Diagnostic::error(
                Code::Misplaced,
                inner.keyword.to(inner.name.span),
                "a `param` cannot hold another `param`",
            )
            .with_help("declare parameters directly inside the template"),
        );
    }
}

fn unknown_param_setting(s: &Setting) -> Diagnostic {
    Diagnostic::error(
        Code::UnknownSetting,
        s.name.span,
        format!("unknown parameter setting `{}`", s.name.name),
    )
    .with_label("unknown setting")
    .with_suggestion(
        s.name.span,
        did_you_mean(&s.name.name, PARAM_SETTINGS),
        || format!("a parameter's settings are {}", list(&PARAM_SETTINGS)),
    )
}

/// A number for `min`/`max`/`step` of `spec`, of the parameter's kind.
fn number_of_kind(spec: &ParamSpec, s: &Setting, diagnostics: &mut Vec<Diagnostic>) -> Option<Num> {
    let kind = match spec.ty.numeric {
        Some(k) => k,
        None => {
            diagnostics.push(
                Diagnostic::error(
                    Code::Misplaced,
                    s.name.span,
                    format!(
                        "`{}` applies only to `int` and `float` parameters",
                        s.name.name
                    ),
                )
                .with_label(format!("`{}` is of type `{}`", spec.name, spec.ty)),
            );
            return None;
        }
    };
    match (&s.value.kind, kind) {
        (ValueKind::Int(i), NumKind::Int) => Some(Num::Int(*i)),
        (ValueKind::Int(i), NumKind::Float) => Some(Num::Float(*i as f64)),
        (ValueKind::Float(f), NumKind::Float) => Some(Num::Float(*f)),
        (ValueKind::Invalid, _) => None,
        (other, _) => {
            let expected = if kind == NumKind::Int {
                "an integer"
            } else {
                "a number"
            };
            diagnostics.push(
                Diagnostic::error(
                    Code::WrongType,
                    s.value.span,
                    format!(
                        "`{}` of `{}` expects {expected}, found {}",
                        s.name.name,
                        spec.name,
                        other.describe()
                    ),
                )
                .with_label(format!("expected {expected}")),
            );
            None
        }
    }
}

fn bound(
    spec: &ParamSpec,
    s: &Setting,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Declared<Num>> {
    number_of_kind(spec, s, diagnostics).map(|value| Declared {
        value,
        span: s.span,
    })
}

fn step(spec: &ParamSpec, s: &Setting, diagnostics: &mut Vec<Diagnostic>) -> Option<Declared<Num>> {
    let value = number_of_kind(spec, s, diagnostics)?;
    if value.as_f64() <= 0.0 {
        diagnostics.push(
            Diagnostic::error(Code::OutOfRange, s.value.span, "a step must be above 0")
                .with_label("not above 0"),
        );
        return None;
    }
    Some(Declared {
        value,
        span: s.span,
    })
}

fn default_value(
    spec: &ParamSpec,
    s: &Setting,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Declared<DefaultValue>> {
    if let ValueKind::Name(n) = &s.value.kind {
        if !spec.ty.keywords.contains(n) {
            if let Some(d) = Derived::from_name(n) {
                if spec.ty.numeric == Some(NumKind::Int) {
                    return Some(Declared {
                        value: DefaultValue::Derived(d),
                        span: s.span,
                    });
                }
            }
        }
    }
    match spec.check(&s.value) {
        Ok(v) => Some(Declared {
            value: DefaultValue::Value(v),
            span: s.span,
        }),
        Err(mut d) => {
            if d.message.is_empty() {
                return None;
            }
            d.message = format!("the default of `{}`: {}", spec.name, d.message);
            if spec.ty.numeric == Some(NumKind::Int) && matches!(s.value.kind, ValueKind::Name(_)) {
                d.help = Some(format!(
                    "a default may also be derived: {}",
                    list(&Derived::ALL.map(|d| d.name()))
                ));
            }
            diagnostics.push(*d);
            None
        }
    }
}

fn narrowed_template(
    d: &TemplateDecl,
    parent: &TemplateSpec,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<TemplateSpec> {
    let mut spec = TemplateSpec {
        name: d.name.name.clone(),
        span: d.name.span,
        parent: Some(parent.name.clone()),
        architecture: parent.architecture,
        lr_decay: parent.lr_decay,
        doc: parent.doc.clone(),
        params: parent.params.clone(),
    };
    let mut seen = HashMap::default();
    for s in d.body.settings() {
        if seen_twice(&mut seen, &s.name, "set", diagnostics) {
            continue;
        }
        match s.name.name.as_str() {
            "doc" => spec.doc = expect_str(s, diagnostics).unwrap_or_default().into(),
            "architecture" | "lr_decay" => diagnostics.push(
                Diagnostic::error(
                    Code::Misplaced,
                    s.name.span,
                    format!(
                        "`{}` is inherited from `{}` and cannot be changed",
                        s.name.name, parent.name
                    ),
                )
                .with_label("only built-in templates set this")
                .with_help("remove this line"),
            ),
            _ => diagnostics.push(unknown_template_setting(s, Some(parent))),
        }
    }
    let mut seen = HashMap::default();
    for p in params_of(&d.body) {
        if seen_twice(&mut seen, &p.name, "declared", diagnostics) {
            continue;
        }
        let Some(i) = spec.params.iter().position(|q| *q.name == *p.name.name) else {
            diagnostics.push(
                Diagnostic::error(
                    Code::UnknownParam,
                    p.name.span,
                    format!(
                        "`{}` has no parameter `{}` to narrow",
                        parent.name, p.name.name
                    ),
                )
                .with_label("unknown parameter")
                .with_suggestion(
                    p.name.span,
                    did_you_mean(&p.name.name, parent.params.iter().map(|q| &*q.name)),
                    || {
                        let names: Vec<&str> = parent.params.iter().map(|q| &*q.name).collect();
                        format!("the parameters of `{}` are {}", parent.name, list(&names))
                    },
                ),
            );
            continue;
        };
        if let Some(narrowed) = narrow_param(p, &spec.params[i], &parent.name, diagnostics) {
            spec.params[i] = narrowed;
        }
    }
    Some(spec)
}

fn narrow_param(
    p: &ParamDecl,
    parent: &ParamSpec,
    parent_name: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ParamSpec> {
    if let Some(ty) = &p.ty {
        let mut scratch = Vec::new();
        let written = param_type(p, &mut scratch);
        if written.as_ref() != Some(&parent.ty) {
            diagnostics.push(
                Diagnostic::error(
                    Code::Narrowing,
                    ty.span,
                    format!(
                        "`{}` is of type `{}` in `{parent_name}`",
                        parent.name, parent.ty
                    ),
                )
                .with_label("a narrowing template cannot change the type")
                .with_related(parent.span, "declared here")
                .with_help(format!(
                    "write `param {} {{ .. }}` without a type, or with `: {}`",
                    parent.name, parent.ty
                )),
            );
            return None;
        }
    }
    nested_params(p, diagnostics);
    let mut spec = ParamSpec {
        span: p.name.span,
        ..parent.clone()
    };
    let name = &parent.name;
    let mut seen = HashMap::default();
    let mut default: Option<&Setting> = None;
    let mut ok = true;
    let grid_base = parent.min.as_ref().map_or(0.0, |m| m.value.as_f64());
    for s in p.body.iter().flat_map(|b| b.settings()) {
        if seen_twice(&mut seen, &s.name, "set", diagnostics) {
            continue;
        }
        match s.name.name.as_str() {
            "min" | "max" => {
                let Some(b) = bound(&spec, s, diagnostics) else {
                    ok = false;
                    continue;
                };
                let x = b.value.as_f64();
                let which = s.name.name.as_str();
                let outside = parent
                    .min
                    .as_ref()
                    .filter(|m| x < m.value.as_f64())
                    .map(|m| (m, "minimum"))
                    .or_else(|| {
                        parent
                            .max
                            .as_ref()
                            .filter(|m| x > m.value.as_f64())
                            .map(|m| (m, "maximum"))
                    });
                if let Some((limit, what)) = outside {
                    diagnostics.push(
                        Diagnostic::error(
                            Code::Narrowing,
                            s.value.span,
                            format!(
                                "the {which} {} of `{name}` lies outside `{parent_name}`'s range",
                                b.value
                            ),
                        )
                        .with_label(format!("beyond the {what} {}", limit.value))
                        .with_related(
                            limit.span,
                            format!("`{parent_name}` allows `{name}` {}", parent.range_text()),
                        )
                        .with_help(format!(
                            "a narrowed range must stay within {}",
                            parent.range_text()
                        )),
                    );
                    ok = false;
                    continue;
                }
                if let Some(st) = &parent.step {
                    if !on_grid(x, grid_base, st.value.as_f64()) {
                        let (lo, hi) = parent.neighbours(x);
                        let options: Vec<String> = [lo, hi]
                            .into_iter()
                            .flatten()
                            .map(|v| v.to_string())
                            .collect();
                        diagnostics.push(
                            Diagnostic::error(
                                Code::Narrowing,
                                s.value.span,
                                format!(
                                    "the {which} {} of `{name}` is off `{parent_name}`'s step grid",
                                    b.value
                                ),
                            )
                            .with_label(format!("not on the grid of step {}", st.value))
                            .with_related(
                                st.span,
                                format!("`{parent_name}` steps `{name}` by {}", st.value),
                            )
                            .with_help(format!("use {}", options.join(" or "))),
                        );
                        ok = false;
                        continue;
                    }
                }
                if which == "min" {
                    spec.min = Some(b);
                } else {
                    spec.max = Some(b);
                }
            }
            "step" => {
                let Some(st) = step(&spec, s, diagnostics) else {
                    ok = false;
                    continue;
                };
                if let Some(pst) = &parent.step {
                    let ratio = st.value.as_f64() / pst.value.as_f64();
                    if (ratio - ratio.round()).abs() > 1e-9 * ratio.abs().max(1.0)
                        || ratio.round() < 1.0
                    {
                        diagnostics.push(
                            Diagnostic::error(
                                Code::Narrowing,
                                s.value.span,
                                format!("the step {} of `{name}` is not a multiple of `{parent_name}`'s step {}", st.value, pst.value),
                            )
                            .with_label("not a multiple of the parent's step")
                            .with_related(pst.span, format!("`{parent_name}` steps `{name}` by {}", pst.value))
                            .with_help(format!("use a multiple of {}", pst.value)),
                        );
                        ok = false;
                        continue;
                    }
                }
                spec.step = Some(st);
            }
            "doc" => spec.doc = expect_str(s, diagnostics).unwrap_or_default().into(),
            "default" => default = Some(s),
            _ => diagnostics.push(unknown_param_setting(s)),
        }
    }
    if let (Some(lo), Some(hi)) = (&spec.min, &spec.max) {
        if lo.value.as_f64() > hi.value.as_f64() {
            diagnostics.push(
                Diagnostic::error(
                    Code::Narrowing,
                    hi.span,
                    format!(
                        "the maximum {} of `{name}` is below its minimum {}",
                        hi.value, lo.value
                    ),
                )
                .with_related(lo.span, "the minimum"),
            );
            ok = false;
        }
    }
    match default {
        Some(s) => spec.default = default_value(&spec, s, diagnostics),
        None => {
            if let Some(Declared {
                value: DefaultValue::Value(v),
                span,
            }) = &parent.default
            {
                let inherited = crate::syntax::Value {
                    kind: match v {
                        ParamValue::Num(Num::Int(i)) => ValueKind::Int(*i),
                        ParamValue::Num(Num::Float(f)) => ValueKind::Float(*f),
                        ParamValue::Keyword(k) => ValueKind::Name(k.clone()),
                        ParamValue::Path(p) => ValueKind::Str(p.clone()),
                    },
                    span: p.name.span,
                };
                if ok && spec.check(&inherited).is_err() {
                    diagnostics.push(
                        Diagnostic::error(
                            Code::Narrowing,
                            p.name.span,
                            format!("the default {v} that `{name}` inherits from `{parent_name}` is outside the narrowed range"),
                        )
                        .with_label(format!("narrowed to {}", spec.range_text()))
                        .with_related(*span, "the inherited default")
                        .with_help("set `default = ...` inside this `param` block"),
                    );
                    ok = false;
                }
            }
        }
    }
    ok.then_some(spec)
}
