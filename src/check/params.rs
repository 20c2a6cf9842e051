//! A `use` block's and a step's settings against their parameters: each
//! value checked, the defaults filled in, where each came from.

use super::*;
use crate::paths::ShowPath;

impl Checker<'_> {
    /// Resolves the `use` block against the template.
    pub(super) fn hyperparameters(
        &mut self,
        t: &TemplateSpec,
        u: &UseDecl,
    ) -> Vec<(ResolvedParam, Written)> {
        let settings = self.block_settings(
            u.body.as_ref(),
            "a `use` block holds hyperparameters, not `param` declarations",
        );
        self.resolve_params(&t.params, &settings, &t.name, |cx, s| {
            cx.not_in_template(t, s)
        })
    }

    pub(super) fn block_settings<'b>(
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
    pub(super) fn resolve_params<P: std::borrow::Borrow<ParamSpec>>(
        &mut self,
        specs: &[P],
        settings: &[&Setting],
        owner: &str,
        unknown: impl Fn(&mut Self, &Setting) -> Diagnostic,
    ) -> Vec<(ResolvedParam, Written)> {
        // One slot per parameter: where it was first written, and its value if valid.
        let mut first: Vec<Option<Span>> = vec![None; specs.len()];
        let mut written: Vec<Written> = vec![Written::Unset; specs.len()];
        let mut values: Vec<Option<ParamValue>> = vec![None; specs.len()];
        for s in settings {
            let Some(i) = specs.iter().position(|p| *p.borrow().name == *s.name.name) else {
                let d = unknown(self, s);
                self.push(d);
                continue;
            };
            if let Some(first) = first[i] {
                self.push(twice(&s.name, first, "set"));
                continue;
            }
            first[i] = Some(s.name.span);
            match specs[i].borrow().check(&s.value) {
                Ok(v) => {
                    values[i] = Some(v);
                    written[i] = Written::Set(s.span);
                }
                Err(d) if d.message.is_empty() => written[i] = Written::Invalid, // already reported
                Err(mut d) => {
                    written[i] = Written::Invalid;
                    if let Some((span, message)) = self.narrowed_from(owner, specs[i].borrow()) {
                        d.related.push(crate::diagnostic::Label { span, message });
                    }
                    self.push(*d);
                }
            }
        }
        let owner_name: std::sync::Arc<str> = owner.into();
        specs
            .iter()
            .map(P::borrow)
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
                    // Every declared parameter has a default; a template without one is
                    // reported where it is declared.
                    _ => default_of(spec, &owner_name).unwrap_or((
                        Resolved::Value(ParamValue::Num(Num::Int(0))),
                        Origin::Default {
                            from: owner_name.clone(),
                        },
                    )),
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
    pub(super) fn narrowed_from(&self, owner: &str, spec: &ParamSpec) -> Option<(Span, String)> {
        let t = self.user.iter().find(|t| t.name == owner)?;
        (spec.span.source != crate::source::SourceId::PRELUDE).then(|| {
            (
                spec.span,
                format!("`{}` narrows `{}` here", t.name, spec.name),
            )
        })
    }

    pub(super) fn not_in_template(&mut self, t: &TemplateSpec, s: &Setting) -> Diagnostic {
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
}

/// A base model's hyperparameters, as its `model.json` records them (its
/// `image_size` and `logreg` fields too), each within the template's range;
/// one it does not record (a frozen model needs only its network's) takes
/// the template's default.
pub(super) fn base_params(
    cx: &mut Checker,
    base: &BaseModel,
    t: &TemplateSpec,
    at: Span,
) -> Vec<(ResolvedParam, Written)> {
    let from: std::sync::Arc<str> = base.meta_path.shown().to_string().into();
    let template: std::sync::Arc<str> = t.name.as_str().into();
    let meta = &base.meta;
    let fields = [
        ("image_size", Num::Int(meta.image_size as i64)),
        ("logreg", Num::Int(i64::from(meta.logreg))),
    ];
    let mut out = Vec::new();
    for spec in &t.params {
        let listed = meta.params.iter().find(|p| *p.name == *spec.name);
        let field = fields.iter().find(|(n, _)| **n == *spec.name).map(|f| f.1);
        if let (Some(p), Some(f)) = (listed, field) {
            if p.value.as_f64() != f.as_f64() {
                cx.push(base_error(
                    at,
                    format!(
                        "`{}` records `{}` as {} and as {f}",
                        base.meta_path.shown(),
                        spec.name,
                        p.value
                    ),
                ));
            }
        }
        let recorded = listed.map(|p| p.value).or(field);
        let (value, origin) = match recorded {
            Some(n) => {
                if let Err(d) = spec.check_value(&ParamValue::Num(n), at) {
                    cx.push(base_error(
                        at,
                        format!(
                            "`{}` records a value `{}` does not allow: {}",
                            base.meta_path.shown(),
                            t.name,
                            d.message
                        ),
                    ));
                }
                (
                    Resolved::Value(ParamValue::Num(n)),
                    Origin::Base {
                        model: from.clone(),
                    },
                )
            }
            None => match default_of(spec, &template) {
                Some(default) => default,
                None => continue,
            },
        };
        let name = spec.name.clone();
        out.push((
            ResolvedParam {
                name,
                value,
                origin,
            },
            Written::Unset,
        ));
    }
    out
}

/// A parameter's default as a resolved value, with where it came from.
fn default_of(spec: &ParamSpec, owner: &std::sync::Arc<str>) -> Option<(Resolved, Origin)> {
    Some(match &spec.default.as_ref()?.value {
        DefaultValue::Derived(d) => (
            Resolved::Derived(*d),
            Origin::Derived {
                from: owner.clone(),
                derived: *d,
            },
        ),
        DefaultValue::Value(v) => (
            Resolved::Value(v.clone()),
            Origin::Default {
                from: owner.clone(),
            },
        ),
    })
}

fn base_error(at: Span, message: String) -> Diagnostic {
    Diagnostic::error(Code::BaseModel, at, message)
        .with_label("the frozen base model")
        .with_help("use the `model.json` a wfrun run wrote beside its model")
}
