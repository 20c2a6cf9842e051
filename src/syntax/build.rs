//! pest's pairs → the syntax tree, with spans mapped back to the original
//! text and each swallowed piece explained.

use super::*;

pub(super) struct Builder<'d> {
    pub(super) source: SourceId,
    pub(super) diagnostics: &'d mut Vec<Diagnostic>,
    /// Where [`repair_braces`] inserted text, to map positions back.
    pub(super) insertions: &'d [usize],
    /// Where the piece being parsed starts in `text`.
    pub(super) offset: usize,
    /// The end of the last item or setting, to word junk that trails it.
    pub(super) last_end: Option<usize>,
    /// The text being parsed (repaired, if it was).
    pub(super) text: &'d str,
    /// The code and span of every diagnostic in `diagnostics`, so a piece
    /// explained twice is reported once without a scan of the list.
    pub(super) reported: FastSet<(Code, Span)>,
    /// The end of a call written over several lines, reported whole: the
    /// swallowed lines before it say nothing more.
    pub(super) skip_until: usize,
}

impl Builder<'_> {
    /// Maps a position in the parsed text to the original file.
    ///
    /// The `i`-th insertion (0-based, in order) sits at `at + i * CLOSE.len()`
    /// of the parsed text; those places increase by at least `CLOSE.len()`, so
    /// a binary search finds the last one at or before `p`.
    pub(super) fn pos(&self, p: usize) -> usize {
        let place = |i: usize| self.insertions[i] + i * CLOSE.len();
        let (mut n, mut hi) = (0, self.insertions.len());
        while n < hi {
            let mid = (n + hi) / 2;
            if place(mid) <= p {
                n = mid + 1;
            } else {
                hi = mid;
            }
        }
        match n.checked_sub(1) {
            Some(last) if p < self.insertions[last] + n * CLOSE.len() => self.insertions[last],
            _ => p - n * CLOSE.len(),
        }
    }

    pub(super) fn push(&mut self, d: Diagnostic) {
        self.reported.insert((d.code, d.span));
        self.diagnostics.push(d);
    }

    pub(super) fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(
            self.source,
            self.pos(self.offset + s.start()),
            self.pos(self.offset + s.end()),
        )
    }

    pub(super) fn file(&mut self, pair: Pair<Rule>) -> Module {
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::bad_item => {
                    // A call over several lines: its setting holds only the
                    // call's name, not a value.
                    if self.bad_piece(&p, Rule::item_only) {
                        if let Some(Item::Setting(s)) = items.last_mut() {
                            s.value.kind = ValueKind::Invalid;
                        }
                    }
                }
                Rule::EOI => {}
                _ => {
                    let end = self.offset + p.as_span().end();
                    items.push(self.item(p));
                    self.last_end = Some(end);
                }
            }
        }
        Module { items }
    }

    pub(super) fn item(&mut self, pair: Pair<Rule>) -> Item {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner();
        match rule {
            Rule::workflow_decl => {
                let keyword = self.span(&inner.next().unwrap());
                let name = self.ident(inner.next().unwrap());
                Item::Workflow { keyword, name }
            }
            Rule::use_decl => {
                let keyword = self.span(&inner.next().unwrap());
                let template = self.ident(inner.next().unwrap());
                let body = inner.next().map(|b| self.block(b));
                Item::Use(UseDecl {
                    keyword,
                    template,
                    body,
                    span,
                })
            }
            Rule::data_decl => {
                let keyword = self.span(&inner.next().unwrap());
                let body = self.block(inner.next().unwrap());
                Item::Data(DataDecl {
                    keyword,
                    body,
                    span,
                })
            }
            Rule::sweep_decl => {
                let keyword = self.span(&inner.next().unwrap());
                let body = self.block(inner.next().unwrap());
                Item::Sweep(SweepDecl {
                    keyword,
                    body,
                    span,
                })
            }
            Rule::step_decl => {
                let keyword = self.span(&inner.next().unwrap());
                let kind = self.ident(inner.next().unwrap());
                let mut alias = None;
                let mut body = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::kw_as => {}
                        Rule::name => alias = Some(self.ident(p)),
                        _ => body = Some(self.block(p)),
                    }
                }
                Item::Step(StepDecl {
                    keyword,
                    kind,
                    alias,
                    body,
                    span,
                })
            }
            Rule::template_decl => {
                let keyword = self.span(&inner.next().unwrap());
                let name = self.ident(inner.next().unwrap());
                let mut parent = None;
                let mut body = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::kw_extends => {}
                        Rule::name => parent = Some(self.ident(p)),
                        _ => body = Some(self.block(p)),
                    }
                }
                Item::Template(TemplateDecl {
                    keyword,
                    name,
                    parent,
                    body: body.expect("template body"),
                    span,
                })
            }
            Rule::step_kind_decl => {
                let keyword = self.span(&inner.next().unwrap());
                let name = self.ident(inner.next().unwrap());
                let body = self.block(inner.next().unwrap());
                Item::StepKind(StepKindDecl {
                    keyword,
                    name,
                    body,
                    span,
                })
            }
            Rule::setting => Item::Setting(self.setting_inner(span, inner)),
            other => unreachable!("unexpected top-level rule {other:?}"),
        }
    }

    pub(super) fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    pub(super) fn block(&mut self, pair: Pair<Rule>) -> Block {
        let span = self.span(&pair);
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::lbrace | Rule::rbrace => {}
                Rule::bad_line => {
                    // A call over several lines: its setting holds only the
                    // call's name, not a value.
                    if self.bad_piece(&p, Rule::block_item_only) {
                        if let Some(BlockItem::Setting(s)) = items.last_mut() {
                            s.value.kind = ValueKind::Invalid;
                        }
                    }
                }
                Rule::setting => {
                    let span = self.span(&p);
                    let end = self.offset + p.as_span().end();
                    items.push(BlockItem::Setting(self.setting_inner(span, p.into_inner())));
                    self.last_end = Some(end);
                }
                Rule::param_decl => {
                    let end = self.offset + p.as_span().end();
                    items.push(BlockItem::Param(Box::new(self.param(p))));
                    self.last_end = Some(end);
                }
                other => unreachable!("unexpected block rule {other:?}"),
            }
        }
        Block { items, span }
    }

    pub(super) fn param(&mut self, pair: Pair<Rule>) -> ParamDecl {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let keyword = self.span(&inner.next().unwrap());
        let name = self.ident(inner.next().unwrap());
        let mut ty = None;
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::colon => {}
                Rule::type_expr => {
                    let span = self.span(&p);
                    let alternatives = p.into_inner().map(|n| self.ident(n)).collect();
                    ty = Some(TypeExpr { alternatives, span });
                }
                _ => body = Some(self.block(p)),
            }
        }
        ParamDecl {
            keyword,
            name,
            ty,
            body,
            span,
        }
    }

    pub(super) fn setting_inner(
        &mut self,
        span: Span,
        mut inner: pest::iterators::Pairs<Rule>,
    ) -> Setting {
        let name = self.ident(inner.next().unwrap());
        let _eq = inner.next();
        let value = self.value(inner.next().unwrap());
        Setting { name, value, span }
    }

    pub(super) fn value(&mut self, pair: Pair<Rule>) -> Value {
        let span = self.span(&pair);
        let inner = pair.into_inner().next().expect("value alternative");
        let kind = match inner.as_rule() {
            Rule::number => self.number(inner.as_str(), span),
            Rule::string => {
                let body = inner.into_inner().next().unwrap();
                let offset = self.pos(self.offset + body.as_span().start());
                self.unescape(body.as_str(), offset)
                    .map_or(ValueKind::Invalid, ValueKind::Str)
            }
            Rule::long_string => {
                let body = inner.into_inner().next().unwrap();
                ValueKind::Str(long_body(body.as_str()))
            }
            Rule::name => ValueKind::Name(inner.as_str().to_string()),
            Rule::call => {
                let mut parts = inner.into_inner();
                let name = self.ident(parts.next().unwrap());
                let args = parts
                    .filter(|p| p.as_rule() == Rule::value)
                    .map(|p| self.value(p))
                    .collect();
                ValueKind::Call {
                    name: Box::new(name),
                    args,
                }
            }
            other => unreachable!("unexpected value rule {other:?}"),
        };
        Value { kind, span }
    }

    pub(super) fn number(&mut self, text: &str, span: Span) -> ValueKind {
        if let Some(kind) = number_kind(text) {
            return kind;
        }
        let d = if !text.contains(['.', 'e', 'E']) {
            Diagnostic::error(
                Code::BadNumber,
                span,
                format!("the integer `{}` is too large", shorten(text)),
            )
            .with_label("does not fit in 64 bits")
            .with_help(format!("integers range from {} to {}", i64::MIN, i64::MAX))
        } else {
            Diagnostic::error(
                Code::BadNumber,
                span,
                format!("the number `{}` is too large", shorten(text)),
            )
            .with_label("not a finite 64-bit floating-point number")
            .with_help("numbers must lie within about ±1.8e308")
        };
        self.push(d);
        ValueKind::Invalid
    }

    pub(super) fn unescape(&mut self, body: &str, offset: usize) -> Option<String> {
        unescape(body, |i, j, other| {
            let end = offset + j + other.len_utf8();
            self.push(
                Diagnostic::error(
                    Code::BadEscape,
                    Span::new(self.source, offset + i, end),
                    format!("unknown escape `\\{other}` in a string"),
                )
                .with_label("unknown escape")
                .with_help(
                    "strings know `\\\\`, `\\\"`, `\\n` and `\\t`; on Windows write paths with `/`",
                ),
            );
        })
    }

    /// Reports one swallowed piece of text: says what was expected where.
    /// Reports a piece the recovery layer swallowed; `true` when it was a
    /// call written over several lines, reported whole.
    pub(super) fn bad_piece(&mut self, pair: &Pair<Rule>, entry: Rule) -> bool {
        let start = self.offset + pair.as_span().start();
        let text = pair.as_str();
        if start < self.skip_until {
            // The line that closes a call reported whole: what follows its
            // `)` is junk of its own.
            let end = start + text.len();
            let junk = self.text[self.skip_until.min(end)..end].trim_start();
            if !junk.is_empty() && !junk.starts_with('#') {
                let before = &self.text[..self.skip_until];
                self.report(trailing_junk(self.source, end - junk.len(), junk, before));
            }
            return false;
        }
        let trailing = self
            .last_end
            .filter(|&end| end <= start && !self.text[end..start].contains('\n'));
        // A call's name, right before the `(`: the value just read is a name.
        let after_name = trailing.is_some_and(|end| {
            let name =
                self.text[..end].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_');
            let name = &self.text[name.len()..end];
            end == start && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        });
        let call = after_name
            .then(|| call_across_lines(&self.text[start..]))
            .flatten();
        let d = match (trailing, call) {
            (Some(end), Some((len, one_line))) => {
                self.skip_until = start + len;
                let span = Span::new(self.source, start, start + len);
                let lines = self.text[start..start + len].matches('\n').count() + 1;
                self.report(call_across_lines_error(
                    span,
                    &self.text[..end],
                    &one_line,
                    lines,
                ));
                return true;
            }
            (Some(end), None) => trailing_junk(self.source, start, text, &self.text[..end]),
            (None, _) => explain(self.source, start, text, entry),
        };
        self.report(d);
        false
    }

    /// Pushes `d`, its spans (and its fixes') mapped from the parsed text to
    /// the file, unless a piece explained before gave it already.
    fn report(&mut self, mut d: Diagnostic) {
        let map = |b: &Self, span: Span| Span::new(b.source, b.pos(span.start), b.pos(span.end));
        d.span = map(self, d.span);
        for fix in &mut d.fixes {
            fix.span = map(self, fix.span);
        }
        if !self.reported.contains(&(d.code, d.span)) {
            self.push(d);
        }
    }
}

/// A `"""` string's value: its text, each CR LF line end read as LF (as
/// everywhere else in a file), so the same text saved with either line end
/// means the same.
pub(super) fn long_body(text: &str) -> String {
    text.replace("\r\n", "\n")
}

/// A `number` token's value: an integer if written without `.` or an
/// exponent; `None` if it does not fit (an integer past 64 bits, a number
/// past ±1.8e308).
pub(super) fn number_kind(text: &str) -> Option<ValueKind> {
    if !text.contains(['.', 'e', 'E']) {
        return text.parse::<i64>().ok().map(ValueKind::Int);
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(ValueKind::Float)
}

/// A `string_body`'s text with its escapes read; `None` if one is unknown,
/// each told to `bad` (the `\`'s offset, the escaped character's, it).
pub(super) fn unescape(body: &str, mut bad: impl FnMut(usize, usize, char)) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.char_indices();
    let mut ok = true;
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '\\')) => out.push('\\'),
            Some((_, '"')) => out.push('"'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((j, other)) => {
                ok = false;
                bad(i, j, other);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary search in [`Builder::pos`] agrees with a walk over the
    /// insertions, several of them at one place included.
    #[test]
    fn positions_map_back_past_insertions() {
        let walk = |insertions: &[usize], p: usize| {
            let mut shift = 0;
            for &at in insertions {
                let here = at + shift;
                if p < here {
                    break;
                }
                if p < here + CLOSE.len() {
                    return at;
                }
                shift += CLOSE.len();
            }
            p - shift
        };
        for insertions in [vec![], vec![0], vec![3, 3, 10, 10, 10, 20], vec![5, 6, 7]] {
            let mut diagnostics = Vec::new();
            let builder = Builder {
                source: SourceId(1),
                diagnostics: &mut diagnostics,
                insertions: &insertions,
                offset: 0,
                last_end: None,
                text: "",
                reported: Default::default(),
                skip_until: 0,
            };
            for p in 0..40 {
                assert_eq!(builder.pos(p), walk(&insertions, p), "{insertions:?} {p}");
            }
        }
    }
}
