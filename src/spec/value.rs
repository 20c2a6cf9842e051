//! A written value against a parameter: its type, range and step, with the
//! nearest valid values when it is off.

use super::*;

impl ParamSpec {
    /// Checks a value that was not written in the file (a default, a
    /// value a model recorded) as if written at `at`.
    pub fn check_value(&self, v: &ParamValue, at: Span) -> Result<ParamValue, Box<Diagnostic>> {
        let kind = match v {
            ParamValue::Num(Num::Int(i)) => ValueKind::Int(*i),
            ParamValue::Num(Num::Float(f)) => ValueKind::Float(*f),
            ParamValue::Keyword(k) => ValueKind::Name(k.clone()),
            ParamValue::Path(p) => ValueKind::Str(p.clone()),
        };
        self.check(&Value { kind, span: at })
    }

    /// The range and step in words: `32 ≤ x ≤ 1024, step 16`.
    pub fn range_text(&self) -> String {
        let mut s = match (&self.min, &self.max) {
            (Some(lo), Some(hi)) => format!("{} to {}", lo.value, hi.value),
            (Some(lo), None) => format!("at least {}", lo.value),
            (None, Some(hi)) => format!("at most {}", hi.value),
            (None, None) => "any".to_string(),
        };
        if let Some(step) = &self.step {
            s.push_str(&format!(", step {}", step.value));
        }
        s
    }

    /// Checks a written value against the type, range and step. The error is
    /// empty (no message) for a literal that was already reported as bad.
    pub fn check(&self, value: &Value) -> Result<ParamValue, Box<Diagnostic>> {
        let name = &self.name;
        let ty = &self.ty;
        match &value.kind {
            ValueKind::Invalid => Err(Box::new(Diagnostic::error(Code::WrongType, value.span, ""))),
            ValueKind::Int(i) if ty.numeric == Some(NumKind::Int) => {
                self.check_range(Num::Int(*i), value.span)
            }
            ValueKind::Int(i) if ty.numeric == Some(NumKind::Float) => {
                self.check_range(Num::Float(*i as f64), value.span)
            }
            ValueKind::Float(f) if ty.numeric == Some(NumKind::Float) => {
                self.check_range(Num::Float(*f), value.span)
            }
            ValueKind::Str(s) if ty.path => Ok(ParamValue::Path(s.clone())),
            ValueKind::Name(n) if ty.keywords.iter().any(|k| k == n) => {
                Ok(ParamValue::Keyword(n.clone()))
            }
            other => {
                let expected = self.expected_text();
                let mut d = Diagnostic::error(
                    Code::WrongType,
                    value.span,
                    format!("`{name}` expects {expected}, found {}", other.describe()),
                )
                .with_label(format!("expected {expected}"));
                // The help, and the replacement it describes when it is mechanical.
                let (help, fix) = match other {
                    ValueKind::Float(f)
                        if ty.numeric == Some(NumKind::Int)
                            && f.fract() == 0.0
                            && f.abs() < 9e15 =>
                    {
                        let int = (*f as i64).to_string();
                        (
                            Some(format!("write it as an integer: `{name} = {int}`")),
                            Some(int),
                        )
                    }
                    ValueKind::Str(s)
                        if ty.numeric.is_some() && s.trim().parse::<f64>().is_ok() =>
                    {
                        let bare = s.trim().to_string();
                        (
                            Some(format!("remove the quotes: `{name} = {bare}`")),
                            Some(bare),
                        )
                    }
                    ValueKind::Name(n) if !ty.keywords.is_empty() => {
                        match crate::suggest::did_you_mean(
                            n,
                            ty.keywords.iter().map(String::as_str),
                        ) {
                            Some(s) => (Some(format!("did you mean `{s}`?")), Some(s.to_string())),
                            None => (Some(format!("`{name}` accepts {}", self.ty)), None),
                        }
                    }
                    ValueKind::Name(n) if ty.path => {
                        let quoted = format!("\"{n}\"");
                        (
                            Some(format!("write paths in quotes: `{name} = {quoted}`")),
                            Some(quoted),
                        )
                    }
                    _ => (None, None),
                };
                d.help = help;
                if let Some(text) = fix {
                    let title = format!("change to `{text}`");
                    d = d.with_fix(value.span, text, title);
                }
                Err(Box::new(d))
            }
        }
    }

    fn expected_text(&self) -> String {
        let mut parts = Vec::new();
        match self.ty.numeric {
            Some(NumKind::Int) => parts.push("an integer".to_string()),
            Some(NumKind::Float) => parts.push("a number".to_string()),
            None => {}
        }
        if self.ty.path {
            parts.push("a path in quotes".to_string());
        }
        for k in &self.ty.keywords {
            parts.push(format!("`{k}`"));
        }
        match parts.len() {
            0 => "nothing".to_string(),
            1 => parts.remove(0),
            n => format!("{} or {}", parts[..n - 1].join(", "), parts[n - 1]),
        }
    }

    fn check_range(&self, n: Num, span: Span) -> Result<ParamValue, Box<Diagnostic>> {
        let name = &self.name;
        let x = n.as_f64();
        if let Some(min) = &self.min {
            if x < min.value.as_f64() {
                return Err(Box::new(self.range_error(
                    n,
                    span,
                    "below the minimum",
                    min,
                )));
            }
        }
        if let Some(max) = &self.max {
            if x > max.value.as_f64() {
                return Err(Box::new(self.range_error(
                    n,
                    span,
                    "above the maximum",
                    max,
                )));
            }
        }
        if let Some(step) = &self.step {
            let base = self.min.as_ref().map_or(0.0, |m| m.value.as_f64());
            if !on_grid(x, base, step.value.as_f64()) {
                let (lo, hi) = self.neighbours(x);
                let nearest = match (lo, hi) {
                    (Some(lo), Some(hi)) => format!("the nearest valid values are {lo} and {hi}"),
                    (Some(v), None) | (None, Some(v)) => format!("the nearest valid value is {v}"),
                    (None, None) => "no value fits the range".to_string(),
                };
                let d = Diagnostic::error(
                    Code::OffStep,
                    span,
                    format!(
                        "`{name}` = {n} is not on its step grid: values go from {base} in steps of {}",
                        step.value,
                        base = fmt_num_like(base, step.value)
                    ),
                )
                .with_label(format!("not a multiple of the step {} from {}", step.value, fmt_num_like(base, step.value)))
                .with_related(step.span, format!("the step of `{name}` is {}", step.value))
                .with_help(nearest);
                // The nearer valid value first.
                let mut options: Vec<Num> = [lo, hi].into_iter().flatten().collect();
                options.sort_by(|a, b| (a.as_f64() - x).abs().total_cmp(&(b.as_f64() - x).abs()));
                let d = options.into_iter().fold(d, |d, v| {
                    d.with_fix(span, v.to_string(), format!("change to {v}"))
                });
                return Err(Box::new(d));
            }
        }
        Ok(ParamValue::Num(n))
    }

    fn range_error(&self, n: Num, span: Span, what: &str, bound: &Declared<Num>) -> Diagnostic {
        let name = &self.name;
        let d = Diagnostic::error(
            Code::OutOfRange,
            span,
            format!("`{name}` = {n} is {what} {}", bound.value),
        )
        .with_label(format!("{what} {}", bound.value))
        .with_related(
            bound.span,
            format!("the range of `{name}` is declared here"),
        )
        .with_help(format!("`{name}` accepts {}", self.range_text()));
        // The bound itself, or the last value on the grid before it.
        let bound_x = bound.value.as_f64();
        let valid = match &self.step {
            Some(step) => {
                let base = self.min.as_ref().map_or(0.0, |m| m.value.as_f64());
                if on_grid(bound_x, base, step.value.as_f64()) {
                    Some(bound.value)
                } else {
                    self.neighbours(bound_x).0
                }
            }
            None => Some(bound.value),
        };
        match valid {
            Some(v) => d.with_fix(span, v.to_string(), format!("change to {v}")),
            None => d,
        }
    }

    /// The valid values just below and just above `x` (within the range).
    pub fn neighbours(&self, x: f64) -> (Option<Num>, Option<Num>) {
        let Some(step) = &self.step else {
            return (None, None);
        };
        let s = step.value.as_f64();
        let base = self.min.as_ref().map_or(0.0, |m| m.value.as_f64());
        let k = ((x - base) / s).floor();
        let make = |v: f64| match step.value {
            Num::Int(_) if self.ty.numeric == Some(NumKind::Int) => Num::Int(v.round() as i64),
            _ => Num::Float(v),
        };
        let lo = base + k * s;
        let hi = base + (k + 1.0) * s;
        let ok = |v: f64| {
            self.min.as_ref().is_none_or(|m| v >= m.value.as_f64())
                && self.max.as_ref().is_none_or(|m| v <= m.value.as_f64())
        };
        (ok(lo).then(|| make(lo)), ok(hi).then(|| make(hi)))
    }
}

fn fmt_num_like(x: f64, like: Num) -> String {
    match like {
        Num::Int(_) if x.fract() == 0.0 => format!("{}", x as i64),
        _ => fmt_float(x),
    }
}

/// Whether `x` is `base + k * step` for a whole `k` (to 1e-9 of a step).
pub fn on_grid(x: f64, base: f64, step: f64) -> bool {
    if step <= 0.0 {
        return true;
    }
    let k = (x - base) / step;
    (k - k.round()).abs() <= 1e-9 * k.abs().max(1.0)
}
