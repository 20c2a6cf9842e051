//! The `step` blocks: known kinds, unique names, their parameters typed.

use super::*;
use crate::paths::ShowPath;
use crate::spec::StepKindSpec;

impl Checker<'_> {
    pub(super) fn steps<'m>(&mut self, steps: &[&'m StepDecl], seed: u64) -> Vec<Option<StepSpec>> {
        let mut names: HashMap<&'m str, Span> = HashMap::default();
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            let Some(kind) = self.builtin.step_kind(&s.kind.name) else {
                self.unknown_step_kind(s);
                out.push(None);
                continue;
            };
            let name_ident = s.alias.as_ref().unwrap_or(&s.kind);
            if let Some(first) = names.get(name_ident.name.as_str()) {
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
                names.insert(&name_ident.name, name_ident.span);
            }
            let params = self.step_params(s, kind);
            let typed = self.typed_step(kind, name_ident, params, seed);
            if let Some(spec) = &typed {
                self.search_table(s, spec);
            }
            out.push(typed);
        }
        out
    }

    /// A `visual_search` step searching a LanceDB table: its folder ends in
    /// `.lance` (what LanceDB names a table), and this build can open it.
    fn search_table(&mut self, s: &StepDecl, spec: &StepSpec) {
        let crate::hyper::StepParams::VisualSearch(p) = &spec.typed else {
            return;
        };
        let crate::hyper::Index::Table(path) = &p.index else {
            return;
        };
        let at = s
            .body
            .iter()
            .flat_map(|b| b.settings())
            .find(|set| set.name.name == "index")
            .map_or(s.kind.span, |set| set.value.span);
        if path.extension().is_none_or(|e| e != "lance") {
            self.push(
                Diagnostic::error(
                    Code::VectorTable,
                    at,
                    format!("`{}` is not a LanceDB table", path.shown()),
                )
                .with_label("a table is a folder ending in `.lance`")
                .with_help(
                    "write `index = train`, `all`, or a table's folder: `wfrun embed RUN IMAGES -o lancedb://DB/TABLE` writes `DB/TABLE.lance`",
                ),
            );
        } else if !cfg!(feature = "lancedb") {
            self.push(
                Diagnostic::error(
                    Code::VectorTable,
                    at,
                    "this build of wfrun cannot search LanceDB tables",
                )
                .with_label("needs the `lancedb` feature")
                .with_help(
                    "build wfrun with `--features lancedb`, or search `index = train` or `all`",
                ),
            );
        }
    }

    fn unknown_step_kind(&mut self, s: &StepDecl) {
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
    }

    /// The step block's settings against its kind's parameters.
    fn step_params(&mut self, s: &StepDecl, kind: &StepKindSpec) -> Vec<ResolvedParam> {
        let settings = self.block_settings(
            s.body.as_ref(),
            "a `step` block holds settings, not `param` declarations",
        );
        let params = self.resolve_params(&kind.params, &settings, &kind.name, |_, st| {
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
        params.into_iter().map(|(p, _)| p).collect()
    }

    /// The step with its parameters typed.
    fn typed_step(
        &mut self,
        kind: &StepKindSpec,
        name: &Ident,
        params: Vec<ResolvedParam>,
        seed: u64,
    ) -> Option<StepSpec> {
        match typed::step_params(kind.id, &params, seed, &|p| self.resolve(p)) {
            Ok(typed) => Some(StepSpec {
                kind: kind.id,
                name: name.name.clone(),
                params,
                typed,
            }),
            // A value already reported as wrong leaves the step untyped.
            Err(_) if self.diagnostics.iter().any(Diagnostic::is_error) => None,
            Err(message) => {
                self.push(Diagnostic::error(
                    Code::BadTemplate,
                    name.span,
                    format!("the step's parameters cannot be used: {message}"),
                ));
                None
            }
        }
    }
}
