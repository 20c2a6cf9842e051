//! What an editor asks about a `.wf` file, answered without any editor
//! protocol: the documentation under the cursor and what may be typed there.
//! `wfrun lsp` (the binary's only module that knows LSP) translates these.

use crate::diagnostic::Diagnostic;
use crate::source::SourceId;
use crate::spec::{fmt_float, DefaultValue, ParamSpec, Registry, TemplateSpec};
use crate::syntax::{Block, BlockItem, Item, Module, Setting, ValueKind};

/// The id the edited file's spans carry (the prelude's is `SourceId::PRELUDE`).
const FILE: SourceId = SourceId(1);

/// Markdown documentation of a parameter: type, range, default, its text.
pub fn param_markdown(owner: &str, p: &ParamSpec) -> String {
    let default = p
        .default
        .as_ref()
        .map_or("none".to_string(), |d| match &d.value {
            DefaultValue::Derived(x) => format!("{} ({})", x.name(), x.describe()),
            v => v.to_string(),
        });
    format!(
        "**{owner}.{}**: `{}`\n\nrange: {} · default: {default}\n\n{}",
        p.name,
        p.ty,
        p.range_text(),
        squash(&p.doc)
    )
}

/// A `"""` documentation string as one paragraph per blank-line-separated block.
fn squash(doc: &str) -> String {
    doc.split("\n\n")
        .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The templates the file can use: the built-in ones and its own.
fn templates(module: &Module) -> Vec<TemplateSpec> {
    let builtin = Registry::builtin();
    let mut quiet: Vec<Diagnostic> = Vec::new();
    let mut all = builtin.templates.clone();
    all.extend(crate::spec::declare::user_templates(
        module, builtin, &mut quiet,
    ));
    all
}

fn within(span: crate::source::Span, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

/// The number a setting of `block` gives `name`, if written.
fn written_number(block: Option<&Block>, name: &str) -> Option<f64> {
    block?
        .settings()
        .find(|s| s.name.name == name)
        .and_then(|s| match s.value.kind {
            ValueKind::Int(i) => Some(i as f64),
            ValueKind::Float(f) => Some(f),
            _ => None,
        })
}

/// Markdown for what is under byte `offset` of `text`: a template, a step
/// kind, or a parameter (hovering `batch_size` or `per_item_lrate` also shows
/// the resulting `lrate`). `None` over anything else.
pub fn hover(text: &str, offset: usize) -> Option<String> {
    let (module, _) = crate::syntax::parse(FILE, text);
    let registry = Registry::builtin();
    let templates = templates(&module);
    let template = |name: &str| templates.iter().find(|t| t.name == name);
    for item in &module.items {
        match item {
            Item::Use(u) if within(u.span, offset) => {
                let t = template(&u.template.name)?;
                if within(u.template.span, offset) {
                    return Some(format!(
                        "**{}** ({})\n\n{}",
                        t.name,
                        t.architecture.name(),
                        squash(&t.doc)
                    ));
                }
                let s = setting_at(u.body.as_ref(), offset)?;
                let p = t.param(&s.name.name)?;
                let mut md = param_markdown(&t.name, p);
                if matches!(&*p.name, "batch_size" | "per_item_lrate") {
                    let value = |name: &str| {
                        written_number(u.body.as_ref(), name).or_else(|| {
                            t.param(name)
                                .and_then(|q| match q.default.as_ref().map(|d| &d.value) {
                                    Some(DefaultValue::Value(crate::spec::ParamValue::Num(n))) => {
                                        Some(n.as_f64())
                                    }
                                    _ => None,
                                })
                        })
                    };
                    if let (Some(b), Some(r)) = (value("batch_size"), value("per_item_lrate")) {
                        md.push_str(&format!(
                            "\n\n`lrate = batch_size × per_item_lrate = {} × {} = {}`",
                            b as i64,
                            fmt_float(r),
                            fmt_float(b * r)
                        ));
                    }
                }
                return Some(md);
            }
            Item::Step(s) if within(s.span, offset) => {
                let kind = registry.step_kind(&s.kind.name)?;
                if within(s.kind.span, offset) {
                    return Some(format!("**step {}**\n\n{}", kind.name, squash(&kind.doc)));
                }
                let setting = setting_at(s.body.as_ref(), offset)?;
                let p = kind.param(&setting.name.name)?;
                return Some(param_markdown(&kind.name, p));
            }
            Item::Template(t) if within(t.span, offset) => {
                let parent = t.parent.as_ref()?;
                if within(parent.span, offset) {
                    let p = template(&parent.name)?;
                    return Some(format!(
                        "**{}** ({})\n\n{}",
                        p.name,
                        p.architecture.name(),
                        squash(&p.doc)
                    ));
                }
                return None;
            }
            _ => {}
        }
    }
    None
}

fn setting_at(block: Option<&Block>, offset: usize) -> Option<&Setting> {
    block?.settings().find(|s| within(s.name.span, offset))
}

/// What kind of thing a completion is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    Template,
    StepKind,
    Param,
    Setting,
    Value,
}

/// One thing that may be typed at the cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub label: String,
    pub kind: CompletionKind,
    /// A line shown beside the label: the range and default of a parameter.
    pub detail: String,
    /// Markdown documentation.
    pub documentation: String,
    /// The text inserted.
    pub insert: String,
}

const TOP_SETTINGS: [(&str, &str); 4] = [
    (
        "device",
        "`cpu`, `auto`, `cuda(N)` or `metal(N)`; default `cpu`",
    ),
    ("output", "the run folder, default `runs/WORKFLOW`"),
    ("seed", "a whole number; default 0"),
    (
        "base",
        "a finished run's folder: embed with its model instead of training",
    ),
];
const DATA_SETTINGS: [(&str, &str); 3] = [
    (
        "train",
        "a folder with one sub-folder per concept, or `manifest(\"file\")`",
    ),
    (
        "eval",
        "a held-out fraction such as `0.1`, a folder or a manifest",
    ),
    ("weights", "pretrained weights to start from (safetensors)"),
];

/// What may be typed at byte `offset` of `text`.
pub fn completions(text: &str, offset: usize) -> Vec<Completion> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..offset];
    let word_start = before
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let head = before[..word_start].trim();
    let (module, _) = crate::syntax::parse(FILE, text);
    let templates = templates(&module);
    if let Some(items) = after_keyword(head, &templates) {
        return items;
    }
    // After `name =`: the keywords the parameter accepts, if any.
    let value_of = head.strip_suffix('=').map(|h| {
        let h = h.trim_end();
        &h[h.rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1)..]
    });
    if value_of.is_none() && head.contains('=') {
        return Vec::new();
    }
    // Which block is the cursor in? The innermost `{` not closed before it.
    let block = enclosing_block(text, offset);
    if let Some(b) = block {
        return in_block(&module, &templates, b, value_of);
    }
    if value_of.is_some() {
        return Vec::new();
    }
    top_level(&module)
}

/// After `use`, `extends`, `step` or `device =`: what may follow.
fn after_keyword(head: &str, templates: &[TemplateSpec]) -> Option<Vec<Completion>> {
    let template_items = |kind_of: &str| -> Vec<Completion> {
        templates
            .iter()
            .map(|t| Completion {
                label: t.name.clone(),
                kind: CompletionKind::Template,
                detail: format!("{} template", kind_of),
                documentation: squash(&t.doc),
                insert: t.name.clone(),
            })
            .collect()
    };
    if head == "use" {
        return Some(template_items("the"));
    }
    if head.ends_with("extends") {
        return Some(template_items("a parent"));
    }
    if head == "step" {
        let kinds = Registry::builtin().step_kinds.iter().map(|k| Completion {
            label: k.name.clone(),
            kind: CompletionKind::StepKind,
            detail: "step".into(),
            documentation: squash(&k.doc),
            insert: k.name.clone(),
        });
        return Some(kinds.collect());
    }
    if head.ends_with("device =") || head == "device =" {
        let devices = ["cpu", "auto", "cuda(0)", "metal(0)"]
            .iter()
            .map(|v| Completion {
                label: v.to_string(),
                kind: CompletionKind::Value,
                detail: "device".into(),
                documentation: String::new(),
                insert: v.to_string(),
            });
        return Some(devices.collect());
    }
    None
}

/// Inside the block at `block`: the parameters not yet written (or, after
/// `name =`, the keywords that parameter takes), or the `data` settings.
fn in_block(
    module: &Module,
    templates: &[TemplateSpec],
    block: usize,
    value_of: Option<&str>,
) -> Vec<Completion> {
    for item in &module.items {
        match item {
            Item::Use(u) if within(u.span, block) => {
                let Some(t) = templates.iter().find(|t| t.name == u.template.name) else {
                    return Vec::new();
                };
                return params(&t.name, &t.params, written_in(u.body.as_ref()), value_of);
            }
            Item::Step(s) if within(s.span, block) => {
                let Some(k) = Registry::builtin().step_kind(&s.kind.name) else {
                    return Vec::new();
                };
                return params(&k.name, &k.params, written_in(s.body.as_ref()), value_of);
            }
            Item::Data(d) if value_of.is_none() && within(d.span, block) => {
                let written: Vec<&str> = d.body.settings().map(|s| s.name.name.as_str()).collect();
                return settings(&DATA_SETTINGS, &written);
            }
            _ => {}
        }
    }
    Vec::new()
}

/// The names set in a block.
fn written_in(body: Option<&Block>) -> Vec<&str> {
    body.iter()
        .flat_map(|b| b.settings())
        .map(|s| s.name.name.as_str())
        .collect()
}

/// A template's or step's parameters not yet written, or after `name =` the
/// keywords `name` accepts.
fn params(
    owner: &str,
    specs: &[ParamSpec],
    written: Vec<&str>,
    value_of: Option<&str>,
) -> Vec<Completion> {
    if let Some(name) = value_of {
        let Some(p) = specs.iter().find(|p| &*p.name == name) else {
            return Vec::new();
        };
        return p
            .ty
            .keywords
            .iter()
            .map(|k| Completion {
                label: k.clone(),
                kind: CompletionKind::Value,
                detail: format!("{owner}.{name}"),
                documentation: param_markdown(owner, p),
                insert: k.clone(),
            })
            .collect();
    }
    specs
        .iter()
        .filter(|p| !written.contains(&&*p.name))
        .map(|p| Completion {
            label: p.name.to_string(),
            kind: CompletionKind::Param,
            detail: format!("{} · {}", p.ty, p.range_text()),
            documentation: param_markdown(owner, p),
            insert: format!("{} = ", p.name),
        })
        .collect()
}

/// Outside every block: the settings not yet written and the statements.
fn top_level(module: &Module) -> Vec<Completion> {
    let written: Vec<&str> = module
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Setting(s) => Some(s.name.name.as_str()),
            _ => None,
        })
        .collect();
    let mut out = settings(&TOP_SETTINGS, &written);
    for kw in ["workflow", "use", "data", "step", "template"] {
        out.push(Completion {
            label: kw.into(),
            kind: CompletionKind::Setting,
            detail: "statement".into(),
            documentation: String::new(),
            insert: format!("{kw} "),
        });
    }
    out
}

fn settings(list: &[(&str, &str)], written: &[&str]) -> Vec<Completion> {
    list.iter()
        .filter(|(n, _)| !written.contains(n))
        .map(|(n, doc)| Completion {
            label: n.to_string(),
            kind: CompletionKind::Setting,
            detail: doc.to_string(),
            documentation: doc.to_string(),
            insert: format!("{n} = "),
        })
        .collect()
}

/// The offset of the `{` of the innermost block open at `offset` (strings
/// and comments skipped), if any.
fn enclosing_block(text: &str, offset: usize) -> Option<usize> {
    let mut stack: Vec<usize> = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < offset.min(bytes.len()) {
        match bytes[i] {
            b'#' => i = text[i..].find('\n').map_or(bytes.len(), |j| i + j),
            b'"' if text[i..].starts_with("\"\"\"") => {
                i = text[i + 3..]
                    .find("\"\"\"")
                    .map_or(bytes.len(), |j| i + 3 + j + 3);
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => stack.push(i),
            b'}' => {
                stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    stack.last().copied()
}

/// Where something is declared: a byte range of the file itself, or of the
/// prelude (`crate::spec::PRELUDE`, wfrun's built-in templates and steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub in_prelude: bool,
    pub start: usize,
    pub end: usize,
}

impl Target {
    fn of(span: crate::source::Span) -> Target {
        Target {
            in_prelude: span.source == SourceId::PRELUDE,
            start: span.start,
            end: span.end,
        }
    }
}

/// Where the name under byte `offset` is declared: a template used or
/// extended, a step kind, or a parameter set in a `use` or `step` block or
/// narrowed by a template.
pub fn definition(text: &str, offset: usize) -> Option<Target> {
    let (module, _) = crate::syntax::parse(FILE, text);
    let registry = Registry::builtin();
    let templates = templates(&module);
    let template = |name: &str| templates.iter().find(|t| t.name == name);
    let param_in = |block: Option<&Block>, params: &dyn Fn(&str) -> Option<Target>| {
        block?
            .settings()
            .find(|s| within(s.name.span, offset))
            .and_then(|s| params(&s.name.name))
    };
    for item in &module.items {
        match item {
            Item::Use(u) if within(u.span, offset) => {
                let t = template(&u.template.name)?;
                if within(u.template.span, offset) {
                    return Some(Target::of(t.span));
                }
                return param_in(u.body.as_ref(), &|n| t.param(n).map(|p| Target::of(p.span)));
            }
            Item::Step(s) if within(s.span, offset) => {
                let kind = registry.step_kind(&s.kind.name)?;
                if within(s.kind.span, offset) {
                    return Some(Target::of(kind.span));
                }
                return param_in(s.body.as_ref(), &|n| {
                    kind.param(n).map(|p| Target::of(p.span))
                });
            }
            Item::Template(t) if within(t.span, offset) => {
                let parent = template(&t.parent.as_ref()?.name)?;
                if t.parent.as_ref().is_some_and(|p| within(p.span, offset)) {
                    return Some(Target::of(parent.span));
                }
                // A narrowed parameter: the parent's declaration.
                return t.body.items.iter().find_map(|i| match i {
                    BlockItem::Param(p) if within(p.name.span, offset) => {
                        parent.param(&p.name.name).map(|q| Target::of(q.span))
                    }
                    _ => None,
                });
            }
            _ => {}
        }
    }
    None
}

/// What an outline shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Workflow,
    Use,
    Data,
    Step,
    Template,
    StepKind,
    Param,
    Setting,
}

/// One entry of a file's outline, with the settings inside it.
#[derive(Clone, Debug, PartialEq)]
pub struct Symbol {
    pub name: String,
    /// A short description: the template of a `use`, the kind of a step, a value.
    pub detail: String,
    pub kind: SymbolKind,
    /// The whole entry (byte range).
    pub start: usize,
    pub end: usize,
    /// Its name (byte range).
    pub name_start: usize,
    pub name_end: usize,
    pub children: Vec<Symbol>,
}

/// The outline of `text`: its statements, each with the settings and
/// parameters it holds.
pub fn symbols(text: &str) -> Vec<Symbol> {
    let (module, _) = crate::syntax::parse(FILE, text);
    module
        .items
        .iter()
        .map(|item| item_symbol(text, item))
        .collect()
}

type Span = crate::source::Span;

fn symbol(
    name: &str,
    detail: String,
    kind: SymbolKind,
    (whole, name_span): (Span, Span),
    children: Vec<Symbol>,
) -> Symbol {
    Symbol {
        name: name.to_string(),
        detail,
        kind,
        start: whole.start,
        end: whole.end,
        name_start: name_span.start,
        name_end: name_span.end,
        children,
    }
}

fn value_text(text: &str, s: &Setting) -> String {
    text[s.value.span.start..s.value.span.end].to_string()
}

/// A block's settings and `param` declarations.
fn block_symbols(text: &str, b: Option<&Block>) -> Vec<Symbol> {
    let Some(b) = b else {
        return Vec::new();
    };
    b.items
        .iter()
        .map(|i| match i {
            BlockItem::Setting(s) => symbol(
                &s.name.name,
                value_text(text, s),
                SymbolKind::Setting,
                (s.span, s.name.span),
                Vec::new(),
            ),
            BlockItem::Param(p) => symbol(
                &p.name.name,
                p.ty.as_ref()
                    .map(|t| text[t.span.start..t.span.end].to_string())
                    .unwrap_or_default(),
                SymbolKind::Param,
                (p.span, p.name.span),
                Vec::new(),
            ),
        })
        .collect()
}

fn item_symbol(text: &str, item: &Item) -> Symbol {
    match item {
        Item::Workflow { keyword, name } => symbol(
            &name.name,
            "workflow".into(),
            SymbolKind::Workflow,
            (keyword.to(name.span), name.span),
            Vec::new(),
        ),
        Item::Use(u) => symbol(
            &u.template.name,
            "use".into(),
            SymbolKind::Use,
            (u.span, u.template.span),
            block_symbols(text, u.body.as_ref()),
        ),
        Item::Data(d) => symbol(
            "data",
            String::new(),
            SymbolKind::Data,
            (d.span, d.keyword),
            block_symbols(text, Some(&d.body)),
        ),
        Item::Step(s) => {
            let name = s.alias.as_ref().unwrap_or(&s.kind);
            symbol(
                &name.name,
                format!("step {}", s.kind.name),
                SymbolKind::Step,
                (s.span, name.span),
                block_symbols(text, s.body.as_ref()),
            )
        }
        Item::Template(t) => symbol(
            &t.name.name,
            t.parent
                .as_ref()
                .map(|p| format!("extends {}", p.name))
                .unwrap_or_else(|| "template".into()),
            SymbolKind::Template,
            (t.span, t.name.span),
            block_symbols(text, Some(&t.body)),
        ),
        Item::StepKind(k) => symbol(
            &k.name.name,
            "step kind".into(),
            SymbolKind::StepKind,
            (k.span, k.name.span),
            block_symbols(text, Some(&k.body)),
        ),
        Item::Setting(s) => symbol(
            &s.name.name,
            value_text(text, s),
            SymbolKind::Setting,
            (s.span, s.name.span),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "use Clarifai_ResNext {\n    batch_size = 32\n    \n}\ndata { train = \"x\" }\nstep clustering { k = 4 }\n";

    #[test]
    fn hover_documents_params_with_the_derived_learning_rate() {
        let at = TEXT.find("batch_size").unwrap() + 2;
        let md = hover(TEXT, at).unwrap();
        assert!(md.contains("Clarifai_ResNext.batch_size"), "{md}");
        assert!(md.contains("1 to 128"), "{md}");
        assert!(
            md.contains("lrate = batch_size × per_item_lrate = 32 × 7.8125e-05 = 0.0025"),
            "{md}"
        );
        let md = hover(TEXT, TEXT.find("ResNext").unwrap()).unwrap();
        assert!(md.contains("resnext50_32x4d"), "{md}");
        let md = hover(TEXT, TEXT.find("k = 4").unwrap()).unwrap();
        assert!(md.contains("clustering.k"), "{md}");
        assert_eq!(hover(TEXT, TEXT.find("train").unwrap()), None);
    }

    #[test]
    fn completion_offers_what_fits_where_the_cursor_is() {
        // Inside `use`: the template's parameters not yet written.
        let at = TEXT.find("    \n}").unwrap() + 4;
        let labels: Vec<String> = completions(TEXT, at).into_iter().map(|c| c.label).collect();
        assert!(
            labels.contains(&"image_size".to_string()) && labels.contains(&"logreg".to_string())
        );
        assert!(
            !labels.contains(&"batch_size".to_string()),
            "already written"
        );
        assert!(
            !labels.contains(&"angular_scale".to_string()),
            "another template's"
        );
        // After `use `: templates; after `step `: step kinds.
        let t = "use Cla";
        let labels: Vec<String> = completions(t, t.len())
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert!(labels.contains(&"Clarifai_ResNext".to_string()));
        let t = "step ";
        let labels: Vec<String> = completions(t, t.len())
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["classifier_head", "clustering", "visual_search"]);
        // In a step block: its parameters.
        let at = TEXT.find("k = 4").unwrap();
        let labels: Vec<String> = completions(TEXT, at).into_iter().map(|c| c.label).collect();
        assert!(labels.contains(&"inits".to_string()) && !labels.contains(&"k".to_string()));
        // `device = `: devices.
        let t = "device = ";
        assert_eq!(completions(t, t.len())[0].label, "cpu");
        // A parameter with keyword values: its keywords.
        let t = "step visual_search { queries = ";
        let labels: Vec<String> = completions(t, t.len())
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(labels, ["eval", "train"]);
        let t = "step visual_search { top_k = ";
        assert!(
            completions(t, t.len()).is_empty(),
            "numbers: nothing to offer"
        );
    }

    #[test]
    fn definitions_lead_to_declarations_in_the_file_and_the_prelude() {
        let prelude = crate::spec::PRELUDE;
        // A built-in template: its declaration in the prelude.
        let d = definition(TEXT, TEXT.find("ResNext").unwrap()).unwrap();
        assert!(d.in_prelude);
        assert_eq!(&prelude[d.start..d.end], "Clarifai_ResNext");
        // A hyperparameter set in `use`: its `param` in the prelude.
        let d = definition(TEXT, TEXT.find("batch_size").unwrap()).unwrap();
        assert!(d.in_prelude);
        assert_eq!(&prelude[d.start..d.end], "batch_size");
        assert!(
            prelude[..d.start].rfind("template").unwrap()
                > prelude.find("Clarifai_ResNext").unwrap()
        );
        // A step kind and its parameter.
        let d = definition(TEXT, TEXT.find("clustering").unwrap()).unwrap();
        assert_eq!(&prelude[d.start..d.end], "clustering");
        let d = definition(TEXT, TEXT.find("k = 4").unwrap()).unwrap();
        assert_eq!(&prelude[d.start..d.end], "k");
        // A template of the file itself, used and extended.
        let t = "template Small extends Clarifai_ResNext {\n    param image_size { max = 64 }\n}\nuse Small { image_size = 48 }\n";
        let d = definition(t, t.rfind("Small").unwrap()).unwrap();
        assert!(!d.in_prelude);
        assert_eq!((d.start, d.end), (9, 14));
        let d = definition(t, t.find("Clarifai").unwrap()).unwrap();
        assert!(d.in_prelude);
        let d = definition(t, t.find("image_size").unwrap()).unwrap();
        assert!(d.in_prelude, "a narrowed parameter leads to its parent's");
        assert_eq!(definition(TEXT, TEXT.find("train").unwrap()), None);
    }

    #[test]
    fn the_outline_lists_statements_with_their_settings() {
        let found = symbols(TEXT);
        let names: Vec<(&str, SymbolKind)> =
            found.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            names,
            [
                ("Clarifai_ResNext", SymbolKind::Use),
                ("data", SymbolKind::Data),
                ("clustering", SymbolKind::Step)
            ]
        );
        let setting = &found[0].children[0];
        assert_eq!(
            (setting.name.as_str(), setting.detail.as_str()),
            ("batch_size", "32")
        );
        assert_eq!(&TEXT[setting.name_start..setting.name_end], "batch_size");
        assert_eq!(found[1].children[0].detail, "\"x\"");
        assert!(found
            .iter()
            .all(|s| s.start <= s.name_start && s.name_end <= s.end));
    }
}
