//! `param` declarations: types, bounds, steps and defaults, each checked
//! against the others.

use super::*;

pub(super) fn params_of(block: &Block) -> impl Iterator<Item = &ParamDecl> {
    block.items.iter().filter_map(|i| match i {
        BlockItem::Param(p) => Some(&**p),
        BlockItem::Setting(_) => None,
    })
}

pub(super) fn fresh_params(block: &Block, diagnostics: &mut Vec<Diagnostic>) -> Vec<ParamSpec> {
    let mut out: Vec<ParamSpec> = Vec::new();
    let mut seen = Seen::default();
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

pub(super) fn param_type(p: &ParamDecl, diagnostics: &mut Vec<Diagnostic>) -> Option<ParamType> {
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

pub(super) fn fresh_param(p: &ParamDecl, diagnostics: &mut Vec<Diagnostic>) -> Option<ParamSpec> {
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
    let mut seen = Seen::default();
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

pub(super) fn nested_params(p: &ParamDecl, diagnostics: &mut Vec<Diagnostic>) {
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

pub(super) fn unknown_param_setting(s: &Setting) -> Diagnostic {
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
pub(super) fn number_of_kind(
    spec: &ParamSpec,
    s: &Setting,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Num> {
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

pub(super) fn bound(
    spec: &ParamSpec,
    s: &Setting,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Declared<Num>> {
    number_of_kind(spec, s, diagnostics).map(|value| Declared {
        value,
        span: s.span,
    })
}

pub(super) fn step(
    spec: &ParamSpec,
    s: &Setting,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Declared<Num>> {
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

pub(super) fn default_value(
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
