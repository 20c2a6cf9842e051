//! The `sweep` block: each swept hyperparameter's values generated and
//! checked against its grid as written values are, the trials drawn, and
//! every trial checked as a workflow of its own (the rules between fields,
//! the batches its data allows, the objective it must report).

use super::*;
use crate::spec::fmt_float;
use crate::sweep::{
    self, MedianRule, Metric, Objective, Sweep, SweptParam, Trial, MAX_GRID, MAX_REPEATS,
    MAX_TRIALS, MAX_VALUES, MEDIAN_MIN_TRIALS,
};
use crate::syntax::SweepDecl;

pub(crate) use crate::sweep::{GENERATORS, SETTINGS as SWEEP_SETTINGS};

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
    repeats: Option<(u64, Span)>,
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
            repeats: None,
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
        let tried = settings_named_params(&decl.body, t);
        if swept.is_empty() && self.error_count() == errors_before && tried == 0 {
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
        // A swept batch is advised on per candidate: the `use` block's
        // default, which no trial trains with, is not.
        if swept
            .iter()
            .any(|(i, ..)| &*t.params[*i].name == "batch_size")
        {
            self.diagnostics
                .retain(|d| !(d.code == Code::BatchAdvice && d.span == train_at));
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
        let repeats = own.repeats.map_or(1, |(r, _)| r);
        let runs = own
            .trials
            .map_or(grid, |(n, _)| n.min(grid))
            .saturating_mul(repeats);
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
        let total = picked.len() * repeats as usize;
        let mut trials = Vec::with_capacity(total);
        let mut found: Vec<(Diagnostic, usize)> = Vec::new();
        let mut firsts: Vec<(String, String)> = Vec::new();
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
            // A candidate's repeats differ by their seed only: checked once.
            let (hyper, mut diagnostics) =
                self.trial_checks(t, u, &trial_params, data, dataset, train_at);
            if let Some(h) = &hyper {
                if !objective.metric.reported(&h.loss, unseen) {
                    diagnostics.push(self.unreported(objective, objective_at, unseen));
                }
            }
            found.extend(diagnostics.into_iter().map(|d| (d, n)));
            let params: Vec<ResolvedParam> = trial_params.into_iter().map(|(p, _)| p).collect();
            let described = values
                .iter()
                .map(|(n, v)| format!("{n} = {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            firsts.push((sweep::trial_name(n * repeats as usize, total), described));
            for r in 0..repeats {
                let Some(hyper) = hyper else { break };
                trials.push(Trial {
                    name: sweep::trial_name(n * repeats as usize + r as usize, total),
                    values: values.clone(),
                    candidate: n,
                    seed: workflow_seed.wrapping_add(r),
                    params: params.clone(),
                    hyper,
                });
            }
        }
        self.report_trials(found, &firsts, repeats);
        if let (Some(rule), Some(at)) = (own.early_stop, own.early_stop_at) {
            if total <= rule.min_trials {
                self.push(
                    Diagnostic::warning(
                        Code::Sweep,
                        at,
                        format!(
                            "no trial can stop early: the rule waits for {} finished trials, and the sweep runs {}",
                            rule.min_trials,
                            total
                        ),
                    )
                    .with_label("the median of the finished trials decides")
                    .with_help("run more trials, or remove `early_stop`"),
                );
            }
        }
        if let (Some(first), Some(set), Some(data)) = (trials.first(), dataset, data) {
            self.objective_measurable(objective, objective_at, &first.hyper, set, data);
        }
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
        if self.error_count() > errors_before || trials.len() != total {
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
            repeats: repeats as usize,
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
            // The seed's batch advice, for this candidate's batch.
            let batch_max = t
                .param("batch_size")
                .and_then(|p| p.max.as_ref())
                .map(|m| m.value.as_f64());
            let used = set.concepts.iter().filter(|(_, n)| *n > 0).count();
            if used > 0 {
                fs::batch_advice(self, params, batch_max, used, train_at);
            }
        }
        if let (Some(h), Some(data), false) = (
            &hyper,
            data,
            self.diagnostics.iter().any(Diagnostic::is_error),
        ) {
            let found = crate::plan::DataFound::counted(dataset, &data.eval);
            self.cost_rules(t, h, params, u, &found);
        }
        let found = std::mem::replace(self.diagnostics, saved);
        (hyper, found)
    }

    /// The trials' diagnostics, each place and problem once: one that some
    /// trials have and others not names how many and the first.
    fn report_trials(
        &mut self,
        found: Vec<(Diagnostic, usize)>,
        firsts: &[(String, String)],
        repeats: u64,
    ) {
        let n = firsts.len();
        let mut groups: Vec<(Diagnostic, Vec<usize>, bool)> = Vec::new();
        // The same problem in several trials: the same place and the same
        // words but for the numbers in them.
        let shape = |m: &str| -> String {
            // Each number (digits, points, exponents) becomes one `#`.
            let mut out = String::new();
            let mut in_number = false;
            for c in m.chars() {
                let numeric =
                    c.is_ascii_digit() || (in_number && matches!(c, '.' | 'e' | '-' | '+'));
                if numeric && !in_number {
                    out.push('#');
                }
                if !numeric {
                    out.push(c);
                }
                in_number = numeric;
            }
            out
        };
        for (d, trial) in found {
            match groups.iter_mut().find(|(g, ..)| {
                g.code == d.code
                    && g.span == d.span
                    && g.severity == d.severity
                    && shape(&g.message) == shape(&d.message)
            }) {
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
                // A candidate failing with no trial built is named by its number.
                let (name, values) = firsts
                    .get(ts[0])
                    .map(|(name, values)| (name.clone(), format!(" ({values})")))
                    .unwrap_or_else(|| (format!("candidate {}", ts[0] + 1), String::new()));
                let what = if repeats > 1 { "candidates" } else { "trials" };
                d.message = format!(
                    "{} — in {} of the {n} {what}, first `{name}`{values}",
                    d.message,
                    ts.len(),
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
        if matches!(v.kind, ValueKind::Invalid) {
            return; // reported where it was read
        }
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
                    .with_help("write how many candidates to draw, as in `trials = 4`, or remove it to run every candidate"),
                ),
            },
            "repeats" => match whole(v) {
                Some(n) if (1..=MAX_REPEATS as i64).contains(&n) => {
                    own.repeats = Some((n as u64, v.span))
                }
                _ => self.push(
                    Diagnostic::error(
                        Code::Sweep,
                        v.span,
                        format!("`repeats` is a whole number from 1 to {MAX_REPEATS}"),
                    )
                    .with_label(format!("found {}", v.kind.describe()))
                    .with_help("write `repeats = 3` to train each candidate with three seeds"),
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

    /// An embeddings objective needs a concept with two held-out images (a
    /// query and what it should find); with a held-out fraction the checker
    /// knows whether one will have them.
    fn objective_measurable(
        &mut self,
        o: Objective,
        at: Span,
        h: &crate::hyper::Hyper,
        set: &DatasetSummary,
        data: &DataSpec,
    ) {
        let embeddings = matches!(
            o.metric,
            Metric::MapAtR | Metric::PrecisionAt1 | Metric::RPrecision | Metric::Nmi | Metric::Ami
        );
        let crate::workflow::Eval::Fraction(f) = data.eval else {
            return;
        };
        let _ = h;
        let held: Vec<u64> = set
            .strata
            .iter()
            .map(|&n| crate::plan::split_counts(n as u64, f).1)
            .collect();
        let pairs = held.iter().filter(|&&n| n >= 2).count();
        if embeddings && (pairs == 0 || held.iter().filter(|&&n| n >= 1).count() < 2) {
            self.push(
                Diagnostic::error(
                    Code::Sweep,
                    at,
                    format!("the held-out images cannot measure `{}`", o.metric.name()),
                )
                .with_label(format!(
                    "`eval = {f}` holds out {} image(s) per concept: no concept has two to match",
                    held.iter().max().copied().unwrap_or(0)
                ))
                .with_help("hold out more (`eval = 0.2`), or rank by `accuracy` or `eval_loss`"),
            );
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
    /// step as a written value is, at the argument it comes from; a range
    /// is reported once where it goes wrong (its low bound, its step, its
    /// high bound), not once per value.
    fn generated(&mut self, spec: &ParamSpec, s: &Setting) -> Option<Generated> {
        let v = &s.value;
        let ValueKind::Call { name, args } = &v.kind else {
            if !matches!(v.kind, ValueKind::Invalid) {
                self.push(
                    Diagnostic::error(Code::Sweep, v.span, format!("a swept `{}` takes its values from `range(..)`, `log_range(..)` or `values(..)`", spec.name))
                        .with_label(format!("found {}", v.kind.describe()))
                        .with_help(format!("a value every trial shares goes in `use`; to try several, write `{} = values(..)`", spec.name)),
                );
            }
            return None;
        };
        let int = spec.ty.numeric == Some(crate::spec::NumKind::Int);
        let numbers = |cx: &mut Self| -> Option<Vec<(Num, Span)>> {
            let mut out = Vec::new();
            for a in args {
                match a.kind {
                    ValueKind::Int(i) => out.push((Num::Int(i), a.span)),
                    ValueKind::Float(f) => out.push((Num::Float(f), a.span)),
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
            let given = match args.len() {
                0 => "no arguments".to_string(),
                1 => "one argument".to_string(),
                n => format!("{n} arguments"),
            };
            cx.push(
                Diagnostic::error(
                    Code::Sweep,
                    v.span,
                    format!("`{}` is written `{text}`", name.name),
                )
                .with_label(given),
            );
            None
        };
        let text = |span: Span| self.file.text()[span.start..span.end].to_string();
        let (values, log) = match name.name.as_str() {
            "values" => {
                if args.is_empty() {
                    return form(self, "values(A, B, ..)");
                }
                let mut out = Vec::new();
                let mut bad = false;
                for a in args {
                    match spec.check(a) {
                        Ok(ParamValue::Num(n)) => out.push((n, a.span)),
                        Ok(_) => bad = true,
                        Err(d) if d.message.is_empty() => bad = true,
                        Err(mut d) => {
                            // The help names a setting; here the value stands alone.
                            if let Some(h) = &d.help {
                                d.help = Some(h.replace(&format!("`{} = ", spec.name), "`"));
                            }
                            self.push(*d);
                            bad = true;
                        }
                    }
                }
                if bad {
                    return None;
                }
                (out, false)
            }
            "range" => {
                let n = numbers(self)?;
                let [(lo, lo_at), (hi, hi_at), (step, step_at)] = n[..] else {
                    return form(self, "range(LOW, HIGH, STEP)");
                };
                if hi.as_f64() < lo.as_f64() {
                    let swapped = format!(
                        "range({}, {}, {})",
                        text(hi_at),
                        text(lo_at),
                        text(step_at).trim_start_matches('-')
                    );
                    self.push(
                        Diagnostic::error(
                            Code::Sweep,
                            v.span,
                            "`range` runs from its low value up to its high one",
                        )
                        .with_label(format!("{hi} is below {lo}"))
                        .with_help(format!("swap them: `{swapped}`"))
                        .with_fix(
                            v.span,
                            swapped.clone(),
                            format!("change to `{swapped}`"),
                        ),
                    );
                    return None;
                }
                if step.as_f64().is_nan() || step.as_f64() <= 0.0 {
                    self.push(
                        Diagnostic::error(Code::Sweep, step_at, "a `range`'s step must be above 0")
                            .with_label("not above 0"),
                    );
                    return None;
                }
                if int {
                    for (x, at) in [(lo, lo_at), (hi, hi_at), (step, step_at)] {
                        if let Num::Float(f) = x {
                            let mut d = Diagnostic::error(Code::WrongType, at, format!("`{}` is an integer: its range takes whole numbers, found the number `{}`", spec.name, fmt_float(f)))
                                .with_label("expected an integer");
                            if f.fract() == 0.0 && f.abs() < 9e15 {
                                let whole = (f as i64).to_string();
                                d = d
                                    .with_help(format!("write it as an integer: `{whole}`"))
                                    .with_fix(at, whole.clone(), format!("change to `{whole}`"));
                            }
                            self.push(d);
                            return None;
                        }
                    }
                }
                let values: Vec<Num> = match (lo, hi, step) {
                    (Num::Int(a), Num::Int(b), Num::Int(c)) => {
                        let count = (b as i128 - a as i128) / c as i128 + 1;
                        if count > MAX_VALUES as i128 {
                            self.too_many(v.span, format!("{count} values"));
                            return None;
                        }
                        (0..count)
                            .map(|k| Num::Int((a as i128 + k * c as i128) as i64))
                            .collect()
                    }
                    _ => {
                        let (a, b, c) = (lo.as_f64(), hi.as_f64(), step.as_f64());
                        let count = (b / c - a / c + 1e-9).floor() + 1.0;
                        if !count.is_finite() || count > MAX_VALUES as f64 {
                            self.too_many(v.span, float_count(count));
                            return None;
                        }
                        sweep::range_values(a, b, c)
                            .into_iter()
                            .map(Num::Float)
                            .collect()
                    }
                };
                if !self.range_fits(spec, &values, (lo_at, step, step_at, hi, hi_at)) {
                    return None;
                }
                let last = values.last().copied().unwrap_or(lo);
                if (last.as_f64() - hi.as_f64()).abs() > step.as_f64() * 1e-9 {
                    self.push(
                        Diagnostic::warning(
                            Code::Sweep,
                            hi_at,
                            format!("the range stops at {last}, below {hi}"),
                        )
                        .with_label(format!("not `{lo} + k × {step}`"))
                        .with_help(format!("write `{last}` as the high value to say what runs"))
                        .with_fix(
                            hi_at,
                            last.to_string(),
                            format!("change to `{last}`"),
                        ),
                    );
                }
                let at = |i: usize| {
                    if i == 0 {
                        lo_at
                    } else if values[i] == hi {
                        hi_at
                    } else {
                        v.span
                    }
                };
                (
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (*x, at(i)))
                        .collect(),
                    false,
                )
            }
            "log_range" => {
                let n = numbers(self)?;
                let [(lo, lo_at), (hi, hi_at), (count, count_at)] = n[..] else {
                    return form(self, "log_range(LOW, HIGH, N)");
                };
                let (lo_f, hi_f) = (lo.as_f64(), hi.as_f64());
                if lo_f.is_nan() || lo_f <= 0.0 {
                    self.push(
                        Diagnostic::error(Code::Sweep, lo_at, "a `log_range` starts above 0")
                            .with_label("not above 0"),
                    );
                    return None;
                }
                if hi_f.is_nan() || hi_f <= lo_f {
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
                let count = match count {
                    Num::Int(c) if (2..=MAX_VALUES as i64).contains(&c) => c as usize,
                    _ => {
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
                };
                let values = sweep::log_values(lo_f, hi_f, count);
                let values: Vec<Num> = if int {
                    values
                        .iter()
                        .map(|x| Num::Int(x.round().min(i64::MAX as f64) as i64))
                        .collect()
                } else {
                    values.into_iter().map(Num::Float).collect()
                };
                if int && values.windows(2).any(|w| w[0] == w[1]) {
                    self.push(
                        Diagnostic::error(
                            Code::Sweep,
                            v.span,
                            format!(
                                "rounded to whole numbers, this `log_range` repeats values: {}",
                                listed(&values, 10)
                            ),
                        )
                        .with_label(format!("`{}` is an integer", spec.name))
                        .with_help("ask for fewer values, or list them with `values(..)`"),
                    );
                    return None;
                }
                let last = values.len() - 1;
                let at = |i: usize| {
                    if i == 0 {
                        lo_at
                    } else if i == last {
                        hi_at
                    } else {
                        v.span
                    }
                };
                let values: Vec<(Num, Span)> = values
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (*x, at(i)))
                    .collect();
                if !self.each_fits(spec, &values, name, v.span) {
                    return None;
                }
                (values, true)
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
        let mut kept: Vec<(Num, Span)> = Vec::new();
        for (n, at) in values {
            let same = |m: &Num| match (m, n) {
                (Num::Int(a), Num::Int(b)) => *a == b,
                _ => m.as_f64() == n.as_f64(),
            };
            if kept.iter().any(|(m, _)| same(m)) {
                self.push(
                    Diagnostic::error(Code::Sweep, at, format!("{n} is swept twice"))
                        .with_label("a repeated value")
                        .with_help("remove it: each trial is a distinct candidate"),
                );
                return None;
            }
            kept.push((n, at));
        }
        if kept.len() == 1 {
            self.push(
                Diagnostic::warning(
                    Code::Sweep,
                    v.span,
                    format!("`{}` takes a single value in this sweep", spec.name),
                )
                .with_label(format!("every trial has {}", kept[0].0))
                .with_help(format!(
                    "set `{} = {}` in `use`, or give it more values",
                    spec.name, kept[0].0
                )),
            );
        }
        Some(Generated { values: kept, log })
    }

    /// `count`: how many values, in words (`"9223372036854775806 values"`).
    fn too_many(&mut self, at: Span, count: String) {
        self.push(
            Diagnostic::error(
                Code::Sweep,
                at,
                format!(
                    "this range has {count}, more than the {MAX_VALUES} a swept parameter may take"
                ),
            )
            .with_help("use a larger step, or a `log_range`"),
        );
    }

    /// A range's values on the parameter's grid: its low bound checked as
    /// written, then its step against the grid, then its high end against the
    /// maximum, each reported once at its argument.
    fn range_fits(
        &mut self,
        spec: &ParamSpec,
        values: &[Num],
        (lo_at, step, step_at, hi, hi_at): (Span, Num, Span, Num, Span),
    ) -> bool {
        let check = |n: Num, at: Span| spec.check_value(&ParamValue::Num(n), at);
        let Some(&first) = values.first() else {
            return false;
        };
        if let Err(d) = check(first, lo_at) {
            if !d.message.is_empty() {
                self.push(*d);
            }
            return false;
        }
        if let Some(grid) = spec
            .step
            .as_ref()
            .map(|g| g.value.as_f64())
            .filter(|g| *g > 0.0)
        {
            let ratio = step.as_f64() / grid;
            if (ratio - ratio.round()).abs() > 1e-9 {
                let near = (ratio.round().max(1.0) * grid).max(grid);
                let near = if spec.ty.numeric == Some(crate::spec::NumKind::Int) {
                    Num::Int(near as i64)
                } else {
                    Num::Float(near)
                };
                self.push(
                    Diagnostic::error(
                        Code::OffStep,
                        step_at,
                        format!(
                            "the step {step} is not a multiple of `{}`'s step {}",
                            spec.name,
                            fmt_float(grid)
                        ),
                    )
                    .with_label("the values after the first fall off the grid")
                    .with_help(format!("a multiple of {}, such as {near}", fmt_float(grid)))
                    .with_fix(
                        step_at,
                        near.to_string(),
                        format!("change to `{near}`"),
                    ),
                );
                return false;
            }
        }
        let (fits, off): (Vec<Num>, Vec<Num>) =
            values.iter().partition(|&&n| check(n, lo_at).is_ok());
        if off.is_empty() {
            return true;
        }
        let max = spec.max.as_ref().map(|m| m.value);
        let shown = listed(&off, 3);
        let mut d = Diagnostic::error(
            Code::OutOfRange,
            hi_at,
            match max {
                Some(m) => format!(
                    "this range goes past `{}`'s maximum {m}: {}",
                    spec.name, shown
                ),
                None => format!(
                    "this range gives values `{}` does not accept: {}",
                    spec.name, shown
                ),
            },
        )
        .with_label(format!("{hi} is beyond the last valid value"));
        if let Some(last) = fits.last() {
            d = d.with_help(format!("end the range at {last}")).with_fix(
                hi_at,
                last.to_string(),
                format!("change to `{last}`"),
            );
        }
        self.push(d);
        false
    }

    /// Each value checked as if written where it comes from; the values
    /// inside a `log_range` (not its bounds) are reported together at the
    /// call, without a mechanical fix.
    fn each_fits(
        &mut self,
        spec: &ParamSpec,
        values: &[(Num, Span)],
        name: &Ident,
        call: Span,
    ) -> bool {
        let mut inner: Vec<(Num, Box<Diagnostic>)> = Vec::new();
        let mut fits = true;
        for &(n, at) in values {
            if let Err(d) = spec.check_value(&ParamValue::Num(n), at) {
                fits = false;
                if at == call {
                    inner.push((n, d));
                } else if !d.message.is_empty() {
                    self.push(*d);
                }
            }
        }
        if let Some((_, first)) = inner.first() {
            let mut d = first.as_ref().clone();
            d.fixes.clear();
            let off: Vec<Num> = inner.iter().map(|(n, _)| *n).collect();
            d.label = Some(format!("`{}(..)` gives {}", name.name, listed(&off, 3)));
            self.push(d);
        }
        fits
    }
}

/// A float range's count in words: `inf` or past what a float holds
/// exactly is said without digits that mean nothing.
fn float_count(count: f64) -> String {
    if !count.is_finite() {
        "too many values to count".into()
    } else if count < 2f64.powi(53) {
        format!("{count:.0} values")
    } else {
        format!("about {count:.3e} values")
    }
}

/// How many settings of a `sweep` block name a hyperparameter of `t`, valid
/// or not.
fn settings_named_params(body: &crate::syntax::Block, t: &TemplateSpec) -> usize {
    body.settings()
        .filter(|s| t.param(&s.name.name).is_some())
        .count()
}

/// The first `k` of `values`, and how many there are when that is more.
fn listed(values: &[Num], k: usize) -> String {
    let mut shown: Vec<String> = values.iter().take(k).map(Num::to_string).collect();
    if values.len() > k {
        shown.push(format!("… ({} values)", values.len()));
    }
    shown.join(", ")
}
