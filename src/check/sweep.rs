//! The `sweep` block: each swept hyperparameter's values generated and
//! checked against its grid as written values are, the trials drawn, and
//! every trial checked as a workflow of its own (the rules between fields,
//! the batches its data allows, the objective it must report).

use super::*;
use crate::sweep::{
    self, MedianRule, Metric, Objective, Sweep, SweptParam, Trial, MAX_GRID, MAX_TRIALS,
    MAX_VALUES, MEDIAN_MIN_TRIALS,
};
use crate::syntax::SweepDecl;

/// The settings of a `sweep` block besides the swept hyperparameters.
pub(crate) const SWEEP_SETTINGS: [(&str, &str); 4] = [
    (
        "trials",
        "how many candidates of the grid run, drawn at random from `seed`; default: every candidate",
    ),
    (
        "objective",
        "what ranks the trials: `maximize(METRIC)` or `minimize(METRIC)`, read from each trial's last epoch; default `maximize(map_at_r)`",
    ),
    (
        "early_stop",
        "`median(EPOCH)` or `median(EPOCH, TRIALS)`: from that epoch on, a trial worse than the median of the finished trials at the same epoch stops (once TRIALS, default 2, have finished)",
    ),
    (
        "seed",
        "which candidates `trials` draws; default the workflow's seed",
    ),
];

/// How values of a swept parameter are written.
pub(crate) const GENERATORS: [(&str, &str); 3] = [
    (
        "range",
        "`range(LOW, HIGH, STEP)`: LOW, LOW + STEP, … up to HIGH",
    ),
    (
        "log_range",
        "`log_range(LOW, HIGH, N)`: N values from LOW to HIGH evenly spaced on a log scale (rounded to whole numbers for an integer parameter)",
    ),
    ("values", "`values(A, B, ..)`: these values"),
];

/// A swept parameter's values, each with where it is written.
struct Generated {
    values: Vec<(Num, Span)>,
    log: bool,
}

/// The sweep's own settings.
struct SweepSettings {
    trials: Option<(u64, Span)>,
    objective: Option<(Objective, Span)>,
    early_stop: Option<MedianRule>,
    early_stop_at: Option<Span>,
    seed: Option<u64>,
}

impl Checker<'_> {
    /// Checks the `sweep` block and builds its trials from the `use` block's
    /// parameters (`params`). `None` when it has errors.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sweep(
        &mut self,
        decl: &SweepDecl,
        t: &TemplateSpec,
        u: &UseDecl,
        params: &[(ResolvedParam, Written)],
        data: Option<&DataSpec>,
        dataset: Option<&DatasetSummary>,
        train_at: Span,
        workflow_seed: u64,
    ) -> Option<Sweep> {
        let errors_before = self.error_count();
        let settings = self.block_settings(
            Some(&decl.body),
            "a `sweep` block holds the values to try, not `param` declarations",
        );
        let mut own = SweepSettings {
            trials: None,
            objective: None,
            early_stop: None,
            early_stop_at: None,
            seed: None,
        };
        let mut swept: Vec<(usize, &Setting, Generated)> = Vec::new();
        let mut seen: Vec<(&str, Span)> = Vec::new();
        for s in settings {
            let name = s.name.name.as_str();
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                self.push(twice(&s.name, *first, "set"));
                continue;
            }
            seen.push((name, s.name.span));
            if SWEEP_SETTINGS.iter().any(|(n, _)| *n == name) {
                self.sweep_setting(s, &mut own);
                continue;
            }
            let Some(i) = t.params.iter().position(|p| *p.name == *name) else {
                let d = self.not_swept(t, s);
                self.push(d);
                continue;
            };
            if let Written::Set(at) = params[i].1 {
                self.push(
                    Diagnostic::error(
                        Code::Sweep,
                        s.name.span,
                        format!("`{name}` is set in `use` and swept"),
                    )
                    .with_label("every trial sets it from here")
                    .with_related(at, "set here for every trial")
                    .with_help(format!(
                        "remove one of the two: `{name}` in `use` is never used"
                    )),
                );
                continue;
            }
            if let Some(generated) = self.generated(&t.params[i], s) {
                swept.push((i, s, generated));
            }
        }
        if swept.is_empty() && self.error_count() == errors_before {
            self.push(
                Diagnostic::error(Code::Sweep, decl.keyword, "this sweep varies nothing")
                    .with_label("no hyperparameter is swept")
                    .with_help(format!(
                        "sweep a hyperparameter of `{}`, as in `batch_size = range(16, 64, 16)`",
                        t.name
                    )),
            );
        }
        if self.error_count() > errors_before {
            return None;
        }
        let sizes: Vec<usize> = swept.iter().map(|(_, _, g)| g.values.len()).collect();
        let grid = sizes
            .iter()
            .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
            .filter(|&g| g <= MAX_GRID);
        let Some(grid) = grid else {
            self.push(
                Diagnostic::error(
                    Code::Sweep,
                    decl.keyword,
                    format!("this sweep's grid has more than {MAX_GRID} candidates"),
                )
                .with_label(format!(
                    "{} values",
                    sizes
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(" × ")
                ))
                .with_help("sweep fewer values of each parameter"),
            );
            return None;
        };
        let runs = own.trials.map_or(grid, |(n, _)| n.min(grid));
        if runs > MAX_TRIALS {
            let at = own.trials.map_or(decl.keyword, |(_, at)| at);
            self.push(
                Diagnostic::error(
                    Code::Sweep,
                    at,
                    format!("this sweep would run {runs} trials, more than {MAX_TRIALS}"),
                )
                .with_label(format!("a grid of {grid} candidates"))
                .with_help("draw some of them: `trials = 20` runs 20, picked at random"),
            );
            return None;
        }
        let seed = own.seed.unwrap_or(workflow_seed);
        if let Some((n, at)) = own.trials {
            if n > grid {
                self.push(
                    Diagnostic::warning(
                        Code::Sweep,
                        at,
                        format!(
                            "`trials = {n}` asks for more trials than the grid's {grid} candidates"
                        ),
                    )
                    .with_label(format!("every one of the {grid} candidates runs once"))
                    .with_help(format!(
                        "write `trials = {grid}`, or remove it: without it every candidate runs"
                    )),
                );
            }
        }
        let picked = sweep::chosen(grid, own.trials.map(|t| t.0), seed);
        let objective = own.objective.map(|(o, _)| o).unwrap_or_default();
        let objective_at = own.objective.map_or(decl.keyword, |(_, at)| at);
        let unseen = data.is_some_and(|d| d.unseen.is_some());
        let mut trials = Vec::with_capacity(picked.len());
        let mut found: Vec<(Diagnostic, usize)> = Vec::new();
        for (n, &index) in picked.iter().enumerate() {
            let choice = sweep::candidate(index, &sizes);
            let mut trial_params = params.to_vec();
            let mut values = Vec::new();
            for ((i, s, g), &k) in swept.iter().zip(&choice) {
                let (value, _) = g.values[k];
                trial_params[*i] = (
                    ResolvedParam {
                        name: t.params[*i].name.clone(),
                        value: Resolved::Value(ParamValue::Num(value)),
                        origin: Origin::Set {
                            line: self.line(s.span),
                        },
                    },
                    Written::Set(s.span),
                );
                values.push((t.params[*i].name.clone(), value));
            }
            let name = sweep::trial_name(n, picked.len());
            let (hyper, mut diagnostics) =
                self.trial_checks(t, u, &trial_params, data, dataset, train_at);
            if let Some(h) = &hyper {
                if !objective.metric.reported(&h.loss, unseen) {
                    diagnostics.push(self.unreported(objective, objective_at, unseen));
                }
            }
            found.extend(diagnostics.into_iter().map(|d| (d, n)));
            if let Some(hyper) = hyper {
                trials.push(Trial {
                    name,
                    values,
                    params: trial_params.into_iter().map(|(p, _)| p).collect(),
                    hyper,
                });
            }
        }
        self.report_trials(found, &trials, picked.len());
        let early_stop_at = own.early_stop_at;
        let longest = trials.iter().map(|t| t.hyper.num_epochs).max().unwrap_or(0);
        if let (Some(rule), Some(at)) = (own.early_stop, early_stop_at) {
            if rule.after >= longest && !trials.is_empty() {
                self.push(
                    Diagnostic::warning(
                        Code::Sweep,
                        at,
                        format!("no trial can stop early: the rule starts at epoch {}, and the trials train {longest} epochs at most", rule.after),
                    )
                    .with_label("a trial's last epoch always runs")
                    .with_help(format!("start the rule earlier, as in `median({})`", (longest / 3).max(1))),
                );
            }
        }
        if self.error_count() > errors_before || trials.len() != picked.len() {
            return None;
        }
        Some(Sweep {
            swept: swept
                .iter()
                .map(|(i, s, g)| SweptParam {
                    name: t.params[*i].name.clone(),
                    values: g.values.iter().map(|(v, _)| *v).collect(),
                    line: self.line(s.span),
                    log: g.log,
                })
                .collect(),
            grid,
            trials,
            objective,
            early_stop: own.early_stop,
            seed,
        })
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// One trial checked as a workflow: the rules between its fields, its
    /// typed hyperparameters, a batch in an epoch of its data. The
    /// diagnostics are returned, not reported.
    fn trial_checks(
        &mut self,
        t: &TemplateSpec,
        u: &UseDecl,
        params: &[(ResolvedParam, Written)],
        data: Option<&DataSpec>,
        dataset: Option<&DatasetSummary>,
        train_at: Span,
    ) -> (Option<crate::hyper::Hyper>, Vec<Diagnostic>) {
        let saved = std::mem::take(self.diagnostics);
        let has_weights = data.is_some_and(|d| d.weights.is_some());
        self.cross_checks(t, u, params, has_weights);
        let resolved: Vec<ResolvedParam> = params.iter().map(|(p, _)| p.clone()).collect();
        let hyper = match typed::hyper(t, &resolved) {
            Ok(h) => Some(h),
            Err(message) => {
                self.push(Diagnostic::error(
                    Code::Sweep,
                    u.keyword.to(u.template.span),
                    format!("the hyperparameters cannot be used: {message}"),
                ));
                None
            }
        };
        if let (Some(h), Some(set), Some(data)) = (&hyper, dataset, data) {
            if !self.diagnostics.iter().any(Diagnostic::is_error) {
                self.epoch_has_a_batch(h, set, data, train_at);
            }
        }
        let found = std::mem::replace(self.diagnostics, saved);
        (hyper, found)
    }

    /// The trials' diagnostics, each place and problem once: one that some
    /// trials have and others not names how many and the first.
    fn report_trials(&mut self, found: Vec<(Diagnostic, usize)>, trials: &[Trial], n: usize) {
        let mut groups: Vec<(Diagnostic, Vec<usize>, bool)> = Vec::new();
        for (d, trial) in found {
            match groups
                .iter_mut()
                .find(|(g, ..)| g.code == d.code && g.span == d.span && g.severity == d.severity)
            {
                Some((g, ts, same)) => {
                    *same &= g.message == d.message;
                    if !ts.contains(&trial) {
                        ts.push(trial);
                    }
                }
                None => groups.push((d, vec![trial], true)),
            }
        }
        for (mut d, ts, same) in groups {
            if ts.len() < n || !same {
                let first = ts[0];
                let which = trials
                    .iter()
                    .find(|t| t.name == sweep::trial_name(first, n))
                    .map(|t| format!(" ({})", t.describe()))
                    .unwrap_or_default();
                d.message = format!(
                    "{} — in {} of the {n} trials, first `{}`{which}",
                    d.message,
                    ts.len(),
                    sweep::trial_name(first, n)
                );
            }
            self.push(d);
        }
    }

    /// `trials`, `objective`, `early_stop` or `seed`.
    fn sweep_setting(&mut self, s: &Setting, own: &mut SweepSettings) {
        let v = &s.value;
        let whole = |v: &Value| match v.kind {
            ValueKind::Int(i) => Some(i),
            _ => None,
        };
        match s.name.name.as_str() {
            "trials" => match whole(v) {
                Some(n) if n >= 1 => own.trials = Some((n as u64, v.span)),
                _ => self.push(
                    Diagnostic::error(
                        Code::Sweep,
                        v.span,
                        "`trials` is a whole number of at least 1",
                    )
                    .with_label(format!("found {}", v.kind.describe()))
                    .with_help("write `trials = 8`, or remove it to run every candidate"),
                ),
            },
            "seed" => match whole(v) {
                Some(n) if n >= 0 => own.seed = Some(n as u64),
                _ => self.push(
                    Diagnostic::error(
                        Code::Sweep,
                        v.span,
                        "a sweep's `seed` is a whole number of at least 0",
                    )
                    .with_label(format!("found {}", v.kind.describe())),
                ),
            },
            "objective" => {
                if let Some(o) = self.objective(v) {
                    own.objective = Some((o, v.span));
                }
            }
            _ => {
                if let Some(rule) = self.early_stop(v) {
                    own.early_stop = Some(rule);
                    own.early_stop_at = Some(v.span);
                }
            }
        }
    }

    /// `maximize(METRIC)`, `minimize(METRIC)`, or a metric alone (its natural direction).
    fn objective(&mut self, v: &Value) -> Option<Objective> {
        let names: Vec<&str> = Metric::ALL.iter().map(|(n, ..)| *n).collect();
        let (goal, metric) = match &v.kind {
            ValueKind::Call { name, args }
                if matches!(name.name.as_str(), "maximize" | "minimize") =>
            {
                match args.as_slice() {
                    [Value {
                        kind: ValueKind::Name(m),
                        span,
                    }] => (
                        Some(name.name == "maximize"),
                        Ident {
                            name: m.clone(),
                            span: *span,
                        },
                    ),
                    _ => {
                        self.push(
                            Diagnostic::error(
                                Code::Sweep,
                                v.span,
                                format!("`{}` takes one metric", name.name),
                            )
                            .with_label("as in `maximize(map_at_r)`")
                            .with_help(format!("the metrics are {}", list(&names))),
                        );
                        return None;
                    }
                }
            }
            ValueKind::Name(m) => (
                None,
                Ident {
                    name: m.clone(),
                    span: v.span,
                },
            ),
            other => {
                self.push(
                    Diagnostic::error(Code::Sweep, v.span, format!("`objective` expects `maximize(METRIC)` or `minimize(METRIC)`, found {}", other.describe()))
                        .with_label("as in `maximize(map_at_r)`")
                        .with_help(format!("the metrics are {}", list(&names))),
                );
                return None;
            }
        };
        let Some(m) = Metric::from_name(&metric.name) else {
            self.push(
                Diagnostic::error(
                    Code::Sweep,
                    metric.span,
                    format!("`{}` is not a metric a trial reports", metric.name),
                )
                .with_label("unknown metric")
                .with_suggestion(
                    metric.span,
                    did_you_mean(&metric.name, names.iter().copied()),
                    || format!("the metrics are {}", list(&names)),
                ),
            );
            return None;
        };
        let maximize = goal.unwrap_or(m.higher_is_better());
        if maximize != m.higher_is_better() {
            let (wrong, right) = if maximize {
                ("maximize", "minimize")
            } else {
                ("minimize", "maximize")
            };
            self.push(
                Diagnostic::warning(
                    Code::Sweep,
                    v.span,
                    format!("`{wrong}({})` picks the worst trial", m.name()),
                )
                .with_label(format!(
                    "{} is better {}",
                    m.name(),
                    if m.higher_is_better() {
                        "higher"
                    } else {
                        "lower"
                    }
                ))
                .with_help(format!("write `{right}({})`", m.name()))
                .with_fix(
                    v.span,
                    format!("{right}({})", m.name()),
                    format!("change to `{right}({})`", m.name()),
                ),
            );
        }
        Some(Objective {
            metric: m,
            maximize,
        })
    }

    /// `median(EPOCH)` or `median(EPOCH, TRIALS)`.
    fn early_stop(&mut self, v: &Value) -> Option<MedianRule> {
        let bad = |cx: &mut Self, at: Span, message: &str| {
            cx.push(
                Diagnostic::error(Code::Sweep, at, message.to_string())
                    .with_label("as in `median(2)`")
                    .with_help(
                        "`median(EPOCH)` stops a trial from EPOCH on when it is worse than the median of the finished trials at the same epoch; `median(EPOCH, TRIALS)` waits for TRIALS finished trials (default 2)",
                    ),
            );
            None
        };
        let ValueKind::Call { name, args } = &v.kind else {
            return bad(self, v.span, "`early_stop` expects `median(EPOCH)`");
        };
        if name.name != "median" {
            return bad(
                self,
                name.span,
                &format!("`{}` is not a stopping rule: wfrun has `median`", name.name),
            );
        }
        let int = |a: &Value| match a.kind {
            ValueKind::Int(i) if i >= 1 => Some(i as u64),
            _ => None,
        };
        match args.as_slice() {
            [e] => match int(e) {
                Some(after) => Some(MedianRule {
                    after,
                    min_trials: MEDIAN_MIN_TRIALS,
                }),
                None => bad(self, e.span, "the epoch is a whole number of at least 1"),
            },
            [e, n] => match (int(e), int(n)) {
                (Some(after), Some(n)) => Some(MedianRule {
                    after,
                    min_trials: n as usize,
                }),
                (None, _) => bad(self, e.span, "the epoch is a whole number of at least 1"),
                _ => bad(
                    self,
                    n.span,
                    "the finished trials are a whole number of at least 1",
                ),
            },
            _ => bad(
                self,
                v.span,
                "`median` takes an epoch, and optionally a number of finished trials",
            ),
        }
    }

    /// The objective a trial does not report.
    fn unreported(&self, o: Objective, at: Span, unseen: bool) -> Diagnostic {
        let why = match o.metric.needs() {
            sweep::Needs::Unseen if !unseen => "the workflow names no unseen images (`data { unseen = .. }`)".to_string(),
            sweep::Needs::Sigmoid => "it is reported by sigmoid units (`logreg = 1`)".to_string(),
            _ => "it is reported for one concept per image (softmax, `logreg = 0`, or the angular margin)".to_string(),
        };
        Diagnostic::error(
            Code::Sweep,
            at,
            format!("trials do not report `{}`", o.metric.name()),
        )
        .with_label(why)
        .with_help("rank the trials by a metric they report, such as `maximize(map_at_r)`")
    }

    /// A setting of a `sweep` block that names neither a hyperparameter nor a sweep setting.
    fn not_swept(&mut self, t: &TemplateSpec, s: &Setting) -> Diagnostic {
        let name = &s.name.name;
        let elsewhere = self
            .builtin
            .templates
            .iter()
            .chain(&self.user)
            .any(|o| o.param(name).is_some());
        if elsewhere {
            return self.not_in_template(t, s);
        }
        let candidates: Vec<&str> = t
            .params
            .iter()
            .map(|p| &*p.name)
            .chain(SWEEP_SETTINGS.iter().map(|(n, _)| *n))
            .collect();
        if TOP_SETTINGS.contains(&name.as_str()) || DATA_SETTINGS.contains(&name.as_str()) {
            return Diagnostic::error(
                Code::Sweep,
                s.name.span,
                format!("`{name}` cannot be swept"),
            )
            .with_label("a sweep varies hyperparameters")
            .with_help(format!("sweep a hyperparameter of `{}`", t.name));
        }
        Diagnostic::error(
            Code::UnknownParam,
            s.name.span,
            format!(
                "`{name}` is neither a hyperparameter of `{}` nor a sweep setting",
                t.name
            ),
        )
        .with_label("unknown in a sweep")
        .with_suggestion(
            s.name.span,
            did_you_mean(name, candidates.iter().copied()),
            || {
                format!(
                    "a sweep holds hyperparameters of `{}` ({}) and {}",
                    t.name,
                    list(&t.params.iter().map(|p| &*p.name).collect::<Vec<_>>()),
                    list(&SWEEP_SETTINGS.iter().map(|(n, _)| *n).collect::<Vec<_>>())
                )
            },
        )
    }

    /// A swept parameter's values, each checked against its type, range and
    /// step as a written value is, at the argument it comes from.
    fn generated(&mut self, spec: &ParamSpec, s: &Setting) -> Option<Generated> {
        let v = &s.value;
        let ValueKind::Call { name, args } = &v.kind else {
            self.push(
                Diagnostic::error(Code::Sweep, v.span, format!("a swept `{}` takes its values from `range(..)`, `log_range(..)` or `values(..)`", spec.name))
                    .with_label(format!("found {}", v.kind.describe()))
                    .with_help(format!("a value every trial shares goes in `use`; to try several, write `{} = values(..)`", spec.name)),
            );
            return None;
        };
        let int = spec.ty.numeric == Some(crate::spec::NumKind::Int);
        let numbers = |cx: &mut Self| -> Option<Vec<(f64, Span, bool)>> {
            let mut out = Vec::new();
            for a in args {
                match a.kind {
                    ValueKind::Int(i) => out.push((i as f64, a.span, true)),
                    ValueKind::Float(f) => out.push((f, a.span, false)),
                    ValueKind::Invalid => return None,
                    ref other => {
                        cx.push(
                            Diagnostic::error(
                                Code::Sweep,
                                a.span,
                                format!(
                                    "`{}` takes numbers, found {}",
                                    name.name,
                                    other.describe()
                                ),
                            )
                            .with_label("a number"),
                        );
                        return None;
                    }
                }
            }
            Some(out)
        };
        let form = |cx: &mut Self, text: &str| {
            cx.push(
                Diagnostic::error(
                    Code::Sweep,
                    v.span,
                    format!("`{}` is written `{text}`", name.name),
                )
                .with_label(format!("{} argument(s)", args.len())),
            );
            None
        };
        let num = |x: f64, is_int: bool| {
            if is_int && x.fract() == 0.0 && x.abs() < 9e15 {
                Num::Int(x as i64)
            } else {
                Num::Float(x)
            }
        };
        let (raw, log): (Vec<(Num, Span)>, bool) = match name.name.as_str() {
            "values" => {
                if args.is_empty() {
                    return form(self, "values(A, B, ..)");
                }
                let mut out = Vec::new();
                for a in args {
                    match spec.check(a) {
                        Ok(ParamValue::Num(n)) => out.push((n, a.span)),
                        Ok(_) => {}
                        Err(d) if d.message.is_empty() => {}
                        Err(d) => self.push(*d),
                    }
                }
                (out, false)
            }
            "range" => {
                let n = numbers(self)?;
                let [(lo, lo_at, lo_int), (hi, hi_at, hi_int), (step, step_at, step_int)] = n[..]
                else {
                    return form(self, "range(LOW, HIGH, STEP)");
                };
                if step <= 0.0 {
                    self.push(
                        Diagnostic::error(Code::Sweep, step_at, "the step of a `range` is above 0")
                            .with_label("not above 0"),
                    );
                    return None;
                }
                if hi < lo {
                    self.push(
                        Diagnostic::error(
                            Code::Sweep,
                            v.span,
                            "`range` runs from its low value up to its high one",
                        )
                        .with_label(format!("{hi} is below {lo}"))
                        .with_help("swap the first two arguments"),
                    );
                    return None;
                }
                if (hi - lo) / step >= MAX_VALUES as f64 {
                    self.push(
                        Diagnostic::error(
                            Code::Sweep,
                            v.span,
                            format!("this range has more than {MAX_VALUES} values"),
                        )
                        .with_help("use a larger step"),
                    );
                    return None;
                }
                let is_int = lo_int && hi_int && step_int;
                let values = sweep::range_values(lo, hi, step);
                let last = values.last().copied().unwrap_or(lo);
                if (last - hi).abs() > step * 1e-9 {
                    self.push(
                        Diagnostic::warning(
                            Code::Sweep,
                            hi_at,
                            format!(
                                "the range stops at {}, below {}",
                                num(last, is_int),
                                num(hi, is_int)
                            ),
                        )
                        .with_label(format!(
                            "not `{} + k × {}`",
                            num(lo, is_int),
                            num(step, is_int)
                        ))
                        .with_help(format!(
                            "write `{}` as the high value to say what runs",
                            num(last, is_int)
                        ))
                        .with_fix(
                            hi_at,
                            num(last, is_int).to_string(),
                            format!("change to `{}`", num(last, is_int)),
                        ),
                    );
                }
                let at = |x: f64| {
                    if x == lo {
                        lo_at
                    } else if x == hi {
                        hi_at
                    } else {
                        v.span
                    }
                };
                (
                    values
                        .into_iter()
                        .map(|x| (num(x, is_int), at(x)))
                        .collect(),
                    false,
                )
            }
            "log_range" => {
                let n = numbers(self)?;
                let [(lo, lo_at, _), (hi, hi_at, _), (count, count_at, count_int)] = n[..] else {
                    return form(self, "log_range(LOW, HIGH, N)");
                };
                if lo.is_nan() || lo <= 0.0 {
                    self.push(
                        Diagnostic::error(Code::Sweep, lo_at, "a `log_range` starts above 0")
                            .with_label("not above 0"),
                    );
                    return None;
                }
                if hi <= lo {
                    self.push(
                        Diagnostic::error(
                            Code::Sweep,
                            v.span,
                            "`log_range` runs from its low value up to a higher one",
                        )
                        .with_label(format!("{hi} is not above {lo}")),
                    );
                    return None;
                }
                if !count_int || !(2.0..=MAX_VALUES as f64).contains(&count) {
                    self.push(
                        Diagnostic::error(
                            Code::Sweep,
                            count_at,
                            format!(
                                "the number of values is a whole number from 2 to {MAX_VALUES}"
                            ),
                        )
                        .with_label("how many values"),
                    );
                    return None;
                }
                let values = sweep::log_values(lo, hi, count as usize);
                let values: Vec<f64> = if int {
                    values.iter().map(|x| x.round()).collect()
                } else {
                    values
                };
                if int && values.windows(2).any(|w| w[0] == w[1]) {
                    let shown: Vec<String> = values.iter().map(|x| format!("{x}")).collect();
                    self.push(
                        Diagnostic::error(
                            Code::Sweep,
                            v.span,
                            format!(
                                "rounded to whole numbers, this `log_range` repeats values: {}",
                                shown.join(", ")
                            ),
                        )
                        .with_label(format!("`{}` is an integer", spec.name))
                        .with_help("ask for fewer values, or list them with `values(..)`"),
                    );
                    return None;
                }
                let last = values.len() - 1;
                (
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| {
                            (
                                num(x, int),
                                if i == 0 {
                                    lo_at
                                } else if i == last {
                                    hi_at
                                } else {
                                    v.span
                                },
                            )
                        })
                        .collect(),
                    true,
                )
            }
            other => {
                let names: Vec<&str> = GENERATORS.iter().map(|(n, _)| *n).collect();
                self.push(
                    Diagnostic::error(
                        Code::Sweep,
                        name.span,
                        format!("`{other}` does not generate values"),
                    )
                    .with_label("not `range`, `log_range` or `values`")
                    .with_suggestion(
                        name.span,
                        did_you_mean(other, names.iter().copied()),
                        || {
                            GENERATORS
                                .iter()
                                .map(|(_, d)| *d)
                                .collect::<Vec<_>>()
                                .join("; ")
                        },
                    ),
                );
                return None;
            }
        };
        // Generated values are checked as if written where they come from;
        // one inside a range (not an argument) gets no mechanical fix.
        let mut values = Vec::new();
        let mut bad = false;
        for (n, at) in raw {
            if name.name != "values" {
                let kind = match n {
                    Num::Int(i) => ValueKind::Int(i),
                    Num::Float(f) => ValueKind::Float(f),
                };
                if let Err(mut d) = spec.check(&Value { kind, span: at }) {
                    bad = true;
                    if at == v.span {
                        d.fixes.clear();
                        d.label = Some(format!("`{}(..)` gives {n}", name.name));
                    }
                    if !self.diagnostics.contains(&d) {
                        self.push(*d);
                    }
                    continue;
                }
            }
            if values
                .iter()
                .any(|(m, _): &(Num, Span)| m.as_f64() == n.as_f64())
            {
                self.push(
                    Diagnostic::error(Code::Sweep, at, format!("{n} is swept twice"))
                        .with_label("a repeated value")
                        .with_help("remove it: each trial is a distinct candidate"),
                );
                bad = true;
                continue;
            }
            values.push((n, at));
        }
        if bad || values.is_empty() {
            return None;
        }
        Some(Generated { values, log })
    }
}
