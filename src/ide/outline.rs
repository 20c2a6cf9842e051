//! A file's outline: its items and their settings as nested symbols.

use super::*;

/// What an outline shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolKind {
    Workflow,
    Use,
    Data,
    Sweep,
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

pub(super) type Span = crate::source::Span;

pub(super) fn symbol(
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

pub(super) fn value_text(text: &str, s: &Setting) -> String {
    text[s.value.span.start..s.value.span.end].to_string()
}

/// A block's settings and `param` declarations.
pub(super) fn block_symbols(text: &str, b: Option<&Block>) -> Vec<Symbol> {
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

pub(super) fn item_symbol(text: &str, item: &Item) -> Symbol {
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
        Item::Sweep(d) => symbol(
            "sweep",
            String::new(),
            SymbolKind::Sweep,
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
