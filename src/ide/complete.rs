//! What may be typed at an offset: templates, step kinds, parameters not
//! yet written, keyword values, settings and statements.

use super::*;

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

pub(super) const TOP_SETTINGS: [(&str, &str); 4] = [
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
pub(super) const DATA_SETTINGS: [(&str, &str); 5] = [
    (
        "train",
        "a folder with one sub-folder per concept, or `manifest(\"file\")`",
    ),
    (
        "eval",
        "a held-out fraction such as `0.1`, a folder or a manifest",
    ),
    ("weights", "pretrained weights to start from (safetensors)"),
    (
        "unseen",
        "images of concepts never trained on (a folder or a manifest): the embeddings are judged on them",
    ),
    (
        "augment",
        "how training images vary each epoch: `crop_flip` (random crops and horizontal flips, the default), `crop` (never flipped: digits, text) or `none` (the centre crop)",
    ),
];

/// What may be typed at byte `offset` of `text`.
pub fn completions(text: &str, offset: usize) -> Vec<Completion> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..offset];
    // Nothing is completed in a comment.
    if crate::format::in_comment(text, offset) {
        return Vec::new();
    }
    let head = before[..word_start(before)].trim();
    let (module, _) = crate::syntax::parse(FILE, text);
    let templates = templates(&module);
    if let Some(items) = after_keyword(head, &templates) {
        return items;
    }
    // After `name =`: the keywords the parameter accepts, if any.
    let value_of = head.strip_suffix('=').map(|h| {
        let h = h.trim_end();
        &h[word_start(h)..]
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

/// Where the word (letters, digits, `_`) that ends `text` starts: just after
/// the last other character, which may be more than one byte long.
fn word_start(text: &str) -> usize {
    text.char_indices()
        .rfind(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

/// After `use`, `extends`, `step` or `device =`: what may follow.
pub(super) fn after_keyword(head: &str, templates: &[TemplateSpec]) -> Option<Vec<Completion>> {
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
    if head.ends_with("augment =") {
        let ways = crate::workflow::Augment::NAMES.iter().map(|v| Completion {
            label: v.to_string(),
            kind: CompletionKind::Value,
            detail: "augment".into(),
            documentation: String::new(),
            insert: v.to_string(),
        });
        return Some(ways.collect());
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
pub(super) fn in_block(
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
            Item::Sweep(d) if within(d.span, block) => {
                return sweep_items(module, templates, d, value_of);
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

/// Inside a `sweep` block: the `use` template's parameters neither set
/// there nor swept, and the sweep's settings; after `name =`, how to write
/// its values (a parameter's generators filled from its range, the metrics,
/// the stopping rule).
fn sweep_items(
    module: &Module,
    templates: &[TemplateSpec],
    sweep: &crate::syntax::SweepDecl,
    value_of: Option<&str>,
) -> Vec<Completion> {
    use crate::check::sweep::{GENERATORS, SWEEP_SETTINGS};
    let used = module.items.iter().find_map(|i| match i {
        Item::Use(u) => Some(u),
        _ => None,
    });
    let t = used.and_then(|u| templates.iter().find(|t| t.name == u.template.name));
    let value = |label: String, detail: &str, doc: &str| Completion {
        insert: label.clone(),
        label,
        kind: CompletionKind::Value,
        detail: detail.to_string(),
        documentation: doc.to_string(),
    };
    match value_of {
        Some("objective") => crate::sweep::Metric::ALL
            .iter()
            .map(|(name, _, _, up, doc)| {
                let goal = if *up { "maximize" } else { "minimize" };
                value(format!("{goal}({name})"), "sweep.objective", doc)
            })
            .collect(),
        Some("early_stop") => vec![value(
            "median(2)".into(),
            "sweep.early_stop",
            SWEEP_SETTINGS[2].1,
        )],
        Some(name) => {
            let Some(p) = t.and_then(|t| t.param(name)) else {
                return Vec::new();
            };
            let num = |n: Option<&crate::spec::Declared<crate::spec::Num>>| {
                n.map(|b| b.value.to_string())
            };
            let (lo, hi) = (num(p.min.as_ref()), num(p.max.as_ref()));
            let default = match p.default.as_ref().map(|d| &d.value) {
                Some(DefaultValue::Value(crate::spec::ParamValue::Num(n))) => Some(*n),
                _ => None,
            };
            let mut out = Vec::new();
            if let (Some(lo), Some(hi)) = (&lo, &hi) {
                let step = num(p.step.as_ref()).unwrap_or_else(|| "1".into());
                out.push(value(
                    format!("range({lo}, {hi}, {step})"),
                    "every value of its range",
                    GENERATORS[0].1,
                ));
            }
            let float = p.ty.numeric == Some(crate::spec::NumKind::Float);
            if let Some(d) = default.map(|d| d.as_f64()).filter(|d| *d > 0.0 && float) {
                out.push(value(
                    format!(
                        "log_range({}, {}, 3)",
                        fmt_float(d / 10.0),
                        fmt_float(d * 10.0)
                    ),
                    "a tenth of the default to ten times it",
                    GENERATORS[1].1,
                ));
            }
            if let Some(d) = default {
                out.push(value(
                    format!("values({d})"),
                    "the values listed",
                    GENERATORS[2].1,
                ));
            }
            out
        }
        None => {
            let written = written_in(Some(&sweep.body));
            let in_use = written_in(used.and_then(|u| u.body.as_ref()));
            let mut out: Vec<Completion> = t
                .map(|t| {
                    let taken: Vec<&str> = written.iter().chain(&in_use).copied().collect();
                    params(&t.name, &t.params, taken, None)
                })
                .unwrap_or_default();
            out.extend(settings(&SWEEP_SETTINGS, &written));
            out
        }
    }
}

/// The names set in a block.
pub(super) fn written_in(body: Option<&Block>) -> Vec<&str> {
    body.iter()
        .flat_map(|b| b.settings())
        .map(|s| s.name.name.as_str())
        .collect()
}

/// A template's or step's parameters not yet written, or after `name =` the
/// keywords `name` accepts.
pub(super) fn params<P: std::borrow::Borrow<ParamSpec>>(
    owner: &str,
    specs: &[P],
    written: Vec<&str>,
    value_of: Option<&str>,
) -> Vec<Completion> {
    if let Some(name) = value_of {
        let Some(p) = specs.iter().map(P::borrow).find(|p| &*p.name == name) else {
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
        .map(P::borrow)
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
pub(super) fn top_level(module: &Module) -> Vec<Completion> {
    let written: Vec<&str> = module
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Setting(s) => Some(s.name.name.as_str()),
            _ => None,
        })
        .collect();
    let mut out = settings(&TOP_SETTINGS, &written);
    for kw in ["workflow", "use", "data", "sweep", "step", "template"] {
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

pub(super) fn settings(list: &[(&str, &str)], written: &[&str]) -> Vec<Completion> {
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
pub(super) fn enclosing_block(text: &str, offset: usize) -> Option<usize> {
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
