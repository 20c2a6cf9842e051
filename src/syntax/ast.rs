//! The syntax tree of a `.wf` file. Every node carries its span.

use crate::source::Span;

/// A name as written, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole file: the items that parsed. Broken lines are absent here and
/// reported as diagnostics instead.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Module {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `workflow NAME`
    Workflow { keyword: Span, name: Ident },
    /// `use TEMPLATE { ... }`
    Use(UseDecl),
    /// `data { ... }`
    Data(DataDecl),
    /// `sweep { ... }`: the hyperparameters to try, one run per trial
    Sweep(SweepDecl),
    /// `step KIND [as NAME] { ... }`
    Step(StepDecl),
    /// `template NAME [extends PARENT] { ... }`
    Template(TemplateDecl),
    /// `step_kind NAME { ... }` (the prelude declares the step kinds)
    StepKind(StepKindDecl),
    /// `name = value` at the top level (`device`, `output`, `seed`)
    Setting(Setting),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Workflow { keyword, name } => keyword.to(name.span),
            Item::Use(u) => u.span,
            Item::Data(d) => d.span,
            Item::Sweep(d) => d.span,
            Item::Step(s) => s.span,
            Item::Template(t) => t.span,
            Item::StepKind(k) => k.span,
            Item::Setting(s) => s.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct UseDecl {
    pub keyword: Span,
    pub template: Ident,
    pub body: Option<Block>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataDecl {
    pub keyword: Span,
    pub body: Block,
    pub span: Span,
}

/// `sweep { name = range(..) .. }`
#[derive(Clone, Debug, PartialEq)]
pub struct SweepDecl {
    pub keyword: Span,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepDecl {
    pub keyword: Span,
    pub kind: Ident,
    pub alias: Option<Ident>,
    pub body: Option<Block>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TemplateDecl {
    pub keyword: Span,
    pub name: Ident,
    pub parent: Option<Ident>,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepKindDecl {
    pub keyword: Span,
    pub name: Ident,
    pub body: Block,
    pub span: Span,
}

/// `{ ... }`: settings and parameter declarations.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub items: Vec<BlockItem>,
    pub span: Span,
}

impl Block {
    pub fn settings(&self) -> impl Iterator<Item = &Setting> {
        self.items.iter().filter_map(|i| match i {
            BlockItem::Setting(s) => Some(s),
            BlockItem::Param(_) => None,
        })
    }
}

/// Boxed where rare and large, so that a file of many small blocks holds
/// small nodes: a block item is a setting's size.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockItem {
    Setting(Setting),
    Param(Box<ParamDecl>),
}

/// `param NAME [: TYPE] [{ ... }]`
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    pub keyword: Span,
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub body: Option<Block>,
    pub span: Span,
}

/// `int`, `float`, `path`, or keyword alternatives such as `eval | train | path`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub alternatives: Vec<Ident>,
    pub span: Span,
}

/// `name = value`
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub name: Ident,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValueKind {
    /// A number written without `.` or exponent.
    Int(i64),
    /// A number written with `.` or an exponent.
    Float(f64),
    Str(String),
    /// A bare name such as `cpu` or `eval`.
    Name(String),
    /// `cuda(0)`, `manifest("train.csv")` (the name boxed: calls are rare,
    /// and every value is the size of its largest kind)
    Call {
        name: Box<Ident>,
        args: Vec<Value>,
    },
    /// A literal already reported as bad (a number too large, a bad escape).
    Invalid,
}

impl ValueKind {
    /// How the value's type is named in messages: "an integer", "a string", …
    pub fn describe(&self) -> String {
        match self {
            ValueKind::Int(i) => format!("the integer `{i}`"),
            ValueKind::Float(f) => format!("the number `{}`", crate::spec::fmt_float(*f)),
            ValueKind::Str(s) => format!("the string \"{s}\""),
            ValueKind::Name(n) => format!("the name `{n}`"),
            ValueKind::Call { name, .. } => format!("the call `{}(..)`", name.name),
            ValueKind::Invalid => "an invalid value".to_string(),
        }
    }
}
