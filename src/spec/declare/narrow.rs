//! Templates that narrow another: every range, step and default proven to
//! stay within the parent's.

use super::*;

pub(super) fn narrowed_template(
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
    let mut seen = Seen::default();
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
    let mut seen = Seen::default();
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
            spec.params[i] = Arc::new(narrowed);
        }
    }
    Some(spec)
}

pub(super) fn narrow_param(
    p: &ParamDecl,
    parent: &ParamSpec,
    parent_name: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ParamSpec> {
    if !same_type(p, parent, parent_name, diagnostics) {
        return None;
    }
    nested_params(p, diagnostics);
    let mut spec = ParamSpec {
        span: p.name.span,
        ..parent.clone()
    };
    let cx = Narrowing {
        parent,
        parent_name,
    };
    let mut seen = Seen::default();
    let mut default: Option<&Setting> = None;
    let mut ok = true;
    for s in p.body.iter().flat_map(|b| b.settings()) {
        if seen_twice(&mut seen, &s.name, "set", diagnostics) {
            continue;
        }
        match s.name.name.as_str() {
            "min" | "max" => match cx.bound(&spec, s, diagnostics) {
                Some(b) if s.name.name == "min" => spec.min = Some(b),
                Some(b) => spec.max = Some(b),
                None => ok = false,
            },
            "step" => match cx.step(&spec, s, diagnostics) {
                Some(st) => spec.step = Some(st),
                None => ok = false,
            },
            "doc" => spec.doc = expect_str(s, diagnostics).unwrap_or_default().into(),
            "default" => default = Some(s),
            _ => diagnostics.push(unknown_param_setting(s)),
        }
    }
    ok &= min_below_max(&spec, diagnostics);
    match default {
        Some(s) => spec.default = default_value(&spec, s, diagnostics),
        None if ok => ok = cx.inherited_default_fits(p, &spec, diagnostics),
        None => {}
    }
    ok.then_some(spec)
}

/// A narrowing `param` may repeat its parent's type, never change it.
fn same_type(
    p: &ParamDecl,
    parent: &ParamSpec,
    parent_name: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let Some(ty) = &p.ty else {
        return true;
    };
    let mut scratch = Vec::new();
    if param_type(p, &mut scratch).as_ref() == Some(&parent.ty) {
        return true;
    }
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
    false
}

/// A narrowed maximum below the narrowed minimum.
fn min_below_max(spec: &ParamSpec, diagnostics: &mut Vec<Diagnostic>) -> bool {
    let (Some(lo), Some(hi)) = (&spec.min, &spec.max) else {
        return true;
    };
    if lo.value.as_f64() <= hi.value.as_f64() {
        return true;
    }
    diagnostics.push(
        Diagnostic::error(
            Code::Narrowing,
            hi.span,
            format!(
                "the maximum {} of `{}` is below its minimum {}",
                hi.value, spec.name, lo.value
            ),
        )
        .with_related(lo.span, "the minimum"),
    );
    false
}

/// The parent parameter a `param` block narrows.
struct Narrowing<'a> {
    parent: &'a ParamSpec,
    parent_name: &'a str,
}

impl Narrowing<'_> {
    /// A narrowed `min` or `max`: inside the parent's range, on its grid.
    fn bound(
        &self,
        spec: &ParamSpec,
        s: &Setting,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Declared<Num>> {
        let (parent, parent_name, name) = (self.parent, self.parent_name, &self.parent.name);
        let b = bound(spec, s, diagnostics)?;
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
            return None;
        }
        let grid_base = parent.min.as_ref().map_or(0.0, |m| m.value.as_f64());
        if let Some(st) = parent
            .step
            .as_ref()
            .filter(|st| !on_grid(x, grid_base, st.value.as_f64()))
        {
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
            return None;
        }
        Some(b)
    }

    /// A narrowed `step`: a whole multiple of the parent's.
    fn step(
        &self,
        spec: &ParamSpec,
        s: &Setting,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Declared<Num>> {
        let (parent_name, name) = (self.parent_name, &self.parent.name);
        let st = step(spec, s, diagnostics)?;
        let Some(pst) = &self.parent.step else {
            return Some(st);
        };
        let ratio = st.value.as_f64() / pst.value.as_f64();
        if (ratio - ratio.round()).abs() > 1e-9 * ratio.abs().max(1.0) || ratio.round() < 1.0 {
            diagnostics.push(
                Diagnostic::error(
                    Code::Narrowing,
                    s.value.span,
                    format!(
                        "the step {} of `{name}` is not a multiple of `{parent_name}`'s step {}",
                        st.value, pst.value
                    ),
                )
                .with_label("not a multiple of the parent's step")
                .with_related(
                    pst.span,
                    format!("`{parent_name}` steps `{name}` by {}", pst.value),
                )
                .with_help(format!("use a multiple of {}", pst.value)),
            );
            return None;
        }
        Some(st)
    }

    /// With no `default` of its own, the parent's must fit the narrowed range.
    fn inherited_default_fits(
        &self,
        p: &ParamDecl,
        spec: &ParamSpec,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> bool {
        let (parent_name, name) = (self.parent_name, &self.parent.name);
        let Some(Declared {
            value: DefaultValue::Value(v),
            span,
        }) = &self.parent.default
        else {
            return true;
        };
        if spec.check_value(v, p.name.span).is_ok() {
            return true;
        }
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
        false
    }
}
