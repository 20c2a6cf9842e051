//! Template and step-kind declarations → [`TemplateSpec`] / [`StepKindSpec`].
//!
//! The prelude declares root templates (`template NAME { architecture = .. }`)
//! and step kinds; a workflow may declare templates that narrow another one
//! (`template NAME extends PARENT { param image_size { max = 512 } }`). Narrowing
//! is proven here: a narrowed range, step and default stay inside the parent's.

mod narrow;
mod params;

use crate::suggest::FastMap as HashMap;
use std::sync::Arc;

use super::*;
use crate::diagnostic::{Code, Diagnostic};
use crate::suggest::did_you_mean;
use crate::syntax::{Block, BlockItem, Ident, Item, Module, ParamDecl, Setting, TemplateDecl};

use narrow::*;
use params::*;

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

/// The names written so far in one block, with where. A block holds a few
/// names, so they are searched in a list (a map per block was a tenth of
/// checking a file of many small templates); past [`Seen::LISTED`] names a
/// map takes over, so a huge block stays linear.
#[derive(Default)]
pub(crate) struct Seen<'a> {
    listed: Vec<(&'a str, Span)>,
    mapped: HashMap<&'a str, Span>,
}

impl<'a> Seen<'a> {
    const LISTED: usize = 16;

    fn get(&self, name: &str) -> Option<Span> {
        match self.listed.iter().find(|(n, _)| *n == name) {
            Some(&(_, at)) => Some(at),
            None => self.mapped.get(name).copied(),
        }
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn insert(&mut self, name: &'a str, at: Span) {
        if self.listed.len() < Self::LISTED {
            self.listed.push((name, at));
        } else {
            self.mapped.insert(name, at);
        }
    }
}

/// Reports `name` written twice in one block; returns true for a duplicate.
pub(crate) fn seen_twice<'a>(
    seen: &mut Seen<'a>,
    name: &'a Ident,
    verb: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    if let Some(first) = seen.get(&name.name) {
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
    let mut seen = Seen::default();
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
    check_contract(d, architecture, &params, diagnostics);
    Some(TemplateSpec {
        name: d.name.name.clone(),
        span: d.name.span,
        parent: None,
        architecture,
        lr_decay,
        doc,
        params: params.into_iter().map(Arc::new).collect(),
    })
}

/// The prelude's contract with Rust: a root template declares exactly the
/// parameters its architecture reads, of the kinds it reads them as.
fn check_contract(
    d: &TemplateDecl,
    architecture: Architecture,
    params: &[ParamSpec],
    diagnostics: &mut Vec<Diagnostic>,
) {
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
    for p in params {
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
        params: params.into_iter().map(Arc::new).collect(),
    })
}
