//! Parsing: text → [`Module`] + diagnostics.
//!
//! **Parsing never fails**: it returns the items that parsed and one
//! diagnostic per broken line. The pest grammar (`grammar/wf.pest`) swallows a
//! broken line as a `bad_item` / `bad_line` and goes on at the next line; each
//! swallowed piece is then parsed again on its own to say what was expected.

pub mod ast;

use pest::iterators::Pair;
use pest::Parser as _;

pub use ast::*;

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{SourceId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/wf.pest"]
struct WfParser;

/// Blocks and calls may nest at most this deep. Real workflows nest three
/// levels (`template { param { } }`); the limit keeps the recursive-descent
/// parser's stack bounded on hostile input.
pub const MAX_DEPTH: usize = 32;

/// Parses `text` (the contents of the file `source`).
pub fn parse(source: SourceId, text: &str) -> (Module, Vec<Diagnostic>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    parse_with_threads(source, text, threads)
}

/// Files at least this large are cut at top-level statements and the pieces
/// parsed on several threads (the result is the same, see the tests).
pub const PARALLEL_MIN_BYTES: usize = 64 * 1024;

/// [`parse`] with an explicit number of threads (1: never spawn one).
pub fn parse_with_threads(
    source: SourceId,
    text: &str,
    threads: usize,
) -> (Module, Vec<Diagnostic>) {
    let found = structure(text);
    if let Some(at) = found.too_deep {
        return (Module::default(), vec![too_deep(source, at)]);
    }
    let repair = repair_braces(source, text, &found.unclosed);
    let parsed_text = repair.text.as_deref().unwrap_or(text);
    let mut diagnostics = repair.diagnostics;
    let pieces = if threads > 1 && parsed_text.len() >= PARALLEL_MIN_BYTES {
        // The statements were found in the original text; after a repair, look again.
        let candidates = match &repair.text {
            Some(t) => structure(t).statements,
            None => found.statements,
        };
        split_points(parsed_text, &candidates, threads)
    } else {
        vec![0, parsed_text.len()]
    };
    let insertions = &repair.insertions;
    let parse_piece = |a: usize, b: usize| {
        let mut diagnostics = Vec::new();
        let mut builder = Builder {
            source,
            diagnostics: &mut diagnostics,
            insertions,
            last_end: None,
            text: parsed_text,
            offset: a,
        };
        let module = match WfParser::parse(Rule::file, &parsed_text[a..b]) {
            Ok(mut pairs) => builder.file(pairs.next().expect("file rule")),
            // The recovery layer makes `file` match any input; this is a safety net.
            Err(e) => {
                diagnostics.push(pest_error(source, a, &parsed_text[a..b], &e));
                Module::default()
            }
        };
        (module, diagnostics)
    };
    let results: Vec<(Module, Vec<Diagnostic>)> = if pieces.len() <= 2 {
        vec![parse_piece(0, parsed_text.len())]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = pieces
                .windows(2)
                .map(|w| {
                    let (a, b) = (w[0], w[1]);
                    scope.spawn(move || parse_piece(a, b))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut module = Module::default();
    for (m, d) in results {
        module.items.extend(m.items);
        diagnostics.extend(d);
    }
    (module, diagnostics)
}

/// Offsets that cut `text` into about `n` pieces at the `candidates` (see
/// [`Structure::statements`]): `[0, .., len]`.
fn split_points(text: &str, candidates: &[usize], n: usize) -> Vec<usize> {
    let mut points = vec![0];
    for k in 1..n {
        let target = text.len() * k / n;
        let at = candidates.partition_point(|&c| c < target);
        if let Some(&c) = candidates.get(at) {
            if c > *points.last().unwrap() && c < text.len() {
                points.push(c);
            }
        }
    }
    points.push(text.len());
    points
}

/// Bytes that matter to [`structural_bytes`]: quotes and comments change
/// what follows; braces, parentheses and line breaks are reported.
const fn interesting() -> [bool; 256] {
    let mut t = [false; 256];
    let bytes = b"#\"{}()\n";
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}
const INTERESTING: [bool; 256] = interesting();

/// The braces, parentheses and line breaks of `text` that are code (outside
/// comments and strings), with their offsets. A quote never closed on its line
/// is read as code (it is reported elsewhere), so one stray quote does not
/// hide the braces after it. An unclosed `"""` hides the rest of the file.
fn structural_bytes(text: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || loop {
        while i < bytes.len() && !INTERESTING[bytes[i] as usize] {
            i += 1;
        }
        let &b = bytes.get(i)?;
        let at = i;
        i += 1;
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if text[at..].starts_with("\"\"\"") => match text[at + 3..].find("\"\"\"") {
                Some(end) => i = at + 3 + end + 3,
                None => i = bytes.len(),
            },
            b'"' => {
                let mut j = i;
                while j < bytes.len() && bytes[j] != b'"' && bytes[j] != b'\n' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                if bytes.get(j) == Some(&b'"') {
                    i = j + 1;
                }
            }
            _ => return Some((at, b)),
        }
    })
}

/// What one pass over the braces finds.
struct Structure {
    /// Where nesting first exceeds [`MAX_DEPTH`].
    too_deep: Option<usize>,
    /// The `{` that are never closed.
    unclosed: Vec<usize>,
    /// Starts of unindented lines outside blocks that begin with a statement
    /// keyword: where a file may be cut into pieces parsed apart.
    statements: Vec<usize>,
}

fn structure(text: &str) -> Structure {
    let bytes = text.as_bytes();
    let mut open = Vec::new();
    let mut statements = Vec::new();
    let mut depth = 0usize;
    for (i, b) in structural_bytes(text) {
        match b {
            b'\n' if open.is_empty() => {
                let start = i + 1;
                let word = &bytes[start..bytes.len().min(start + 10)];
                let end = word
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .unwrap_or(word.len());
                if STATEMENT_KEYWORDS
                    .iter()
                    .any(|k| k.as_bytes() == &word[..end])
                {
                    statements.push(start);
                }
            }
            b'{' | b'(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Structure {
                        too_deep: Some(i),
                        unclosed: open,
                        statements,
                    };
                }
                if b == b'{' {
                    open.push(i);
                }
            }
            b'}' | b')' => {
                depth = depth.saturating_sub(1);
                if b == b'}' {
                    open.pop();
                }
            }
            _ => {}
        }
    }
    Structure {
        too_deep: None,
        unclosed: open,
        statements,
    }
}

fn too_deep(source: SourceId, at: usize) -> Diagnostic {
    Diagnostic::error(
        Code::TooDeep,
        Span::new(source, at, at + 1),
        format!("blocks and calls are nested more than {MAX_DEPTH} deep"),
    )
    .with_label("too deep here")
    .with_help("workflows need at most three levels: `template { param { .. } }`")
}

/// The text a synthetic `}` is inserted as.
const CLOSE: &str = "\n}";

/// A file with unclosed blocks, closed so the rest of it parses normally.
struct Repair {
    /// The repaired text, when anything was inserted.
    text: Option<String>,
    /// Offsets in the original text where [`CLOSE`] was inserted, ascending.
    insertions: Vec<usize>,
    diagnostics: Vec<Diagnostic>,
}

const STATEMENT_KEYWORDS: [&str; 6] = ["workflow", "use", "data", "step", "template", "step_kind"];

/// Closes each block left open at the end of the file just before the next
/// line that starts, unindented, with a statement keyword (or at the end of
/// the file), and reports it. Files whose braces balance are left alone.
fn repair_braces(source: SourceId, text: &str, open: &[usize]) -> Repair {
    let mut insertions = Vec::new();
    let mut diagnostics = Vec::new();
    for &brace in open {
        let close_at = statement_line_after(text, brace).unwrap_or(text.len());
        let where_ = if close_at == text.len() {
            "at the end of the file".to_string()
        } else {
            let line = text[..close_at].matches('\n').count() + 1;
            format!("before line {line}")
        };
        diagnostics.push(
            Diagnostic::error(
                Code::UnclosedBlock,
                Span::new(source, brace, brace + 1),
                "this `{` is never closed",
            )
            .with_label("block opened here")
            .with_help(format!(
                "add a `}}` {where_}, after the last line of the block"
            )),
        );
        insertions.push(close_at);
    }
    if insertions.is_empty() {
        return Repair {
            text: None,
            insertions,
            diagnostics,
        };
    }
    insertions.sort_unstable();
    let mut repaired = String::with_capacity(text.len() + insertions.len() * CLOSE.len());
    let mut last = 0;
    for &at in &insertions {
        repaired.push_str(&text[last..at]);
        repaired.push_str(CLOSE);
        last = at;
    }
    repaired.push_str(&text[last..]);
    Repair {
        text: Some(repaired),
        insertions,
        diagnostics,
    }
}

/// The start of the first unindented line after `from` that begins with a statement keyword.
fn statement_line_after(text: &str, from: usize) -> Option<usize> {
    let mut offset = from + text[from..].find('\n')? + 1;
    for line in text[offset..].split_inclusive('\n') {
        let word: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if STATEMENT_KEYWORDS.contains(&word.as_str()) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

struct Builder<'d> {
    source: SourceId,
    diagnostics: &'d mut Vec<Diagnostic>,
    /// Where [`repair_braces`] inserted text, to map positions back.
    insertions: &'d [usize],
    /// Where the piece being parsed starts in `text`.
    offset: usize,
    /// The end of the last item or setting, to word junk that trails it.
    last_end: Option<usize>,
    /// The text being parsed (repaired, if it was).
    text: &'d str,
}

impl Builder<'_> {
    /// Maps a position in the parsed text to the original file.
    fn pos(&self, p: usize) -> usize {
        let mut shift = 0;
        for &at in self.insertions {
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
    }

    fn span(&self, pair: &Pair<Rule>) -> Span {
        let s = pair.as_span();
        Span::new(
            self.source,
            self.pos(self.offset + s.start()),
            self.pos(self.offset + s.end()),
        )
    }

    fn file(&mut self, pair: Pair<Rule>) -> Module {
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::bad_item => self.bad_piece(&p, Rule::item_only),
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

    fn item(&mut self, pair: Pair<Rule>) -> Item {
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

    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn block(&mut self, pair: Pair<Rule>) -> Block {
        let span = self.span(&pair);
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::lbrace | Rule::rbrace => {}
                Rule::bad_line => self.bad_piece(&p, Rule::block_item_only),
                Rule::setting => {
                    let span = self.span(&p);
                    let end = self.offset + p.as_span().end();
                    items.push(BlockItem::Setting(self.setting_inner(span, p.into_inner())));
                    self.last_end = Some(end);
                }
                Rule::param_decl => {
                    let end = self.offset + p.as_span().end();
                    items.push(BlockItem::Param(self.param(p)));
                    self.last_end = Some(end);
                }
                other => unreachable!("unexpected block rule {other:?}"),
            }
        }
        Block { items, span }
    }

    fn param(&mut self, pair: Pair<Rule>) -> ParamDecl {
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

    fn setting_inner(&mut self, span: Span, mut inner: pest::iterators::Pairs<Rule>) -> Setting {
        let name = self.ident(inner.next().unwrap());
        let _eq = inner.next();
        let value = self.value(inner.next().unwrap());
        Setting { name, value, span }
    }

    fn value(&mut self, pair: Pair<Rule>) -> Value {
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
                ValueKind::Str(body.as_str().to_string())
            }
            Rule::name => ValueKind::Name(inner.as_str().to_string()),
            Rule::call => {
                let mut parts = inner.into_inner();
                let name = self.ident(parts.next().unwrap());
                let args = parts
                    .filter(|p| p.as_rule() == Rule::value)
                    .map(|p| self.value(p))
                    .collect();
                ValueKind::Call { name, args }
            }
            other => unreachable!("unexpected value rule {other:?}"),
        };
        Value { kind, span }
    }

    fn number(&mut self, text: &str, span: Span) -> ValueKind {
        let is_float = text.contains(['.', 'e', 'E']);
        if !is_float {
            return match text.parse::<i64>() {
                Ok(i) => ValueKind::Int(i),
                Err(_) => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::BadNumber,
                            span,
                            format!("the integer `{}` is too large", shorten(text)),
                        )
                        .with_label("does not fit in 64 bits")
                        .with_help(format!(
                            "integers range from {} to {}",
                            i64::MIN,
                            i64::MAX
                        )),
                    );
                    ValueKind::Invalid
                }
            };
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => ValueKind::Float(f),
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::BadNumber,
                        span,
                        format!("the number `{}` is too large", shorten(text)),
                    )
                    .with_label("not a finite 64-bit floating-point number")
                    .with_help("numbers must lie within about ±1.8e308"),
                );
                ValueKind::Invalid
            }
        }
    }

    fn unescape(&mut self, body: &str, offset: usize) -> Option<String> {
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
                    let end = offset + j + other.len_utf8();
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::BadEscape,
                            Span::new(self.source, offset + i, end),
                            format!("unknown escape `\\{other}` in a string"),
                        )
                        .with_label("unknown escape")
                        .with_help("strings know `\\\\`, `\\\"`, `\\n` and `\\t`; on Windows write paths with `/`"),
                    );
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Reports one swallowed piece of text: says what was expected where.
    fn bad_piece(&mut self, pair: &Pair<Rule>, entry: Rule) {
        let start = self.offset + pair.as_span().start();
        let text = pair.as_str();
        let trailing = self
            .last_end
            .filter(|&end| end <= start && !self.text[end..start].contains('\n'));
        let mut d = match trailing {
            Some(end) => trailing_junk(self.source, start, text, &self.text[..end]),
            None => explain(self.source, start, text, entry),
        };
        d.span = Span::new(self.source, self.pos(d.span.start), self.pos(d.span.end));
        if !self
            .diagnostics
            .iter()
            .any(|x| x.code == d.code && x.span == d.span)
        {
            self.diagnostics.push(d);
        }
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 24 {
        text.to_string()
    } else {
        let head: String = text.chars().take(20).collect();
        format!("{head}…")
    }
}

/// Says what is wrong with a piece of text the recovery layer swallowed.
fn explain(source: SourceId, start: usize, text: &str, entry: Rule) -> Diagnostic {
    if let Some(d) = unterminated_string(source, start, text) {
        return d;
    }
    if let Some(d) = unclosed_brace(source, start, text) {
        return d;
    }
    match WfParser::parse(entry, text) {
        Err(e) => pest_error(source, start, text, &e),
        // Cannot happen in a consistent grammar; say something useful anyway.
        Ok(_) => Diagnostic::error(
            Code::Syntax,
            Span::new(source, start, start + text.len()),
            "this line could not be parsed",
        ),
    }
}

/// Junk on the same line after a complete setting or statement.
fn trailing_junk(source: SourceId, start: usize, text: &str, before: &str) -> Diagnostic {
    if let Some(d) = unterminated_string(source, start, text) {
        return d;
    }
    let (found, len) = found_at(text, 0);
    let prev = before.rsplit('\n').next().unwrap_or("").trim();
    let prev = shorten(prev);
    let d = Diagnostic::error(
        Code::Syntax,
        Span::new(source, start, start + len.max(1)),
        format!("unexpected {found} after `{prev}`"),
    )
    .with_label("unexpected");
    if text.starts_with('/') || text.starts_with('.') || text.starts_with('\\') {
        d.with_help("write paths in quotes: `train = \"data/images\"`")
    } else {
        d.with_help(
            "a value is a single number, string, name or call; start another setting with `name =`",
        )
    }
}

fn unterminated_string(source: SourceId, start: usize, text: &str) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if text[i..].starts_with("\"\"\"") => {
                let Some(end) = text[i + 3..].find("\"\"\"") else {
                    return Some(unterminated(source, start + i, 3, true));
                };
                i += 3 + end + 2;
            }
            b'"' => {
                let open = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None | Some(b'\n') => {
                            return Some(unterminated(source, start + open, 1, false))
                        }
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(_) => i += 1,
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn unterminated(source: SourceId, at: usize, len: usize, long: bool) -> Diagnostic {
    let d = Diagnostic::error(
        Code::UnterminatedString,
        Span::new(source, at, at + len),
        "this string is never closed",
    )
    .with_label("string starts here");
    if long {
        d.with_help("close the text with `\"\"\"`")
    } else {
        d.with_help("close the string with `\"` on the same line; for text over several lines use `\"\"\" ... \"\"\"`")
    }
}

fn unclosed_brace(source: SourceId, start: usize, text: &str) -> Option<Diagnostic> {
    let open = structure(text).unclosed;
    let at = *open.first()?;
    Some(
        Diagnostic::error(
            Code::UnclosedBlock,
            Span::new(source, start + at, start + at + 1),
            "this `{` is never closed",
        )
        .with_label("block opened here")
        .with_help("add a `}` after the last line of the block"),
    )
}

/// Turns a pest error on `text` (which starts at byte `start` of the file)
/// into a diagnostic that names what was expected in words.
fn pest_error(
    source: SourceId,
    start: usize,
    text: &str,
    e: &pest::error::Error<Rule>,
) -> Diagnostic {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let positives: Vec<Rule> = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        pest::error::ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let (found, len) = found_at(text, pos);
    let at = start + pos;
    if positives.is_empty() {
        return Diagnostic::error(
            Code::Syntax,
            Span::new(source, at, at + len.max(1)),
            format!("unexpected {found}"),
        )
        .with_label("unexpected");
    }
    let expected = describe_expected(&positives);
    let mut d = Diagnostic::error(
        Code::Syntax,
        Span::new(source, at, at + len),
        format!("expected {expected}, found {found}"),
    )
    .with_label(format!("expected {expected}"));
    d.help = help_for(&positives, text, pos);
    d
}

fn found_at(text: &str, pos: usize) -> (String, usize) {
    let rest = &text[pos..];
    let Some(c) = rest.chars().next() else {
        return ("the end of the line".to_string(), 0);
    };
    if c.is_alphanumeric() || c == '_' {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        let len = word.len();
        (format!("`{}`", shorten(&word)), len)
    } else if c == '\n' || c == '\r' {
        ("the end of the line".to_string(), 0)
    } else {
        (format!("`{c}`"), c.len_utf8())
    }
}

fn describe_expected(positives: &[Rule]) -> String {
    let mut words: Vec<&str> = Vec::new();
    let mut push = |w: &'static str| {
        if !words.contains(&w) {
            words.push(w);
        }
    };
    for rule in positives {
        match rule {
            Rule::workflow_decl
            | Rule::use_decl
            | Rule::data_decl
            | Rule::step_decl
            | Rule::template_decl
            | Rule::step_kind_decl
            | Rule::kw_workflow
            | Rule::kw_use
            | Rule::kw_data
            | Rule::kw_step
            | Rule::kw_template
            | Rule::kw_step_kind => {
                push("a statement (`use`, `data`, `step`, `template` or `name = value`)")
            }
            Rule::setting => push("a setting (`name = value`)"),
            Rule::param_decl | Rule::kw_param => push("`param`"),
            Rule::value | Rule::number | Rule::string | Rule::long_string | Rule::call => {
                push("a value")
            }
            Rule::name => push("a name"),
            Rule::eq => push("`=`"),
            Rule::colon => push("`:`"),
            Rule::lbrace | Rule::block => push("`{`"),
            Rule::rbrace => push("`}`"),
            Rule::rparen => push("`)`"),
            Rule::type_expr => push("a type"),
            Rule::kw_as => push("`as`"),
            Rule::kw_extends => push("`extends`"),
            Rule::EOI => push("the end of the line"),
            _ => {}
        }
    }
    match words.len() {
        0 => "something else".to_string(),
        1 => words[0].to_string(),
        n => format!("{} or {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

fn help_for(positives: &[Rule], text: &str, pos: usize) -> Option<String> {
    let has = |r: Rule| positives.contains(&r);
    let rest = text[pos..].trim_start();
    if has(Rule::value) || has(Rule::number) {
        return Some(
            "a value is a number (`64`, `7.8125e-05`), a string (`\"data/train\"`), a name (`cpu`) or a call (`cuda(0)`), on the same line as its `=`"
                .to_string(),
        );
    }
    if has(Rule::eq) {
        if rest.starts_with(':') {
            return Some(
                "settings are written `name = value`, with `=` rather than `:`".to_string(),
            );
        }
        return Some("settings are written `name = value`".to_string());
    }
    if has(Rule::name) {
        return Some(
            "names start with a letter or `_` and hold letters, digits and `_`".to_string(),
        );
    }
    if has(Rule::setting) || has(Rule::param_decl) {
        return Some("inside a block, write one `name = value` setting per line".to_string());
    }
    if has(Rule::rparen) {
        return Some("close the call with `)`".to_string());
    }
    if has(Rule::workflow_decl) || has(Rule::use_decl) {
        return Some(
            "a workflow is made of `workflow NAME`, `use TEMPLATE { .. }`, `data { .. }`, `step KIND { .. }`, `template NAME extends PARENT { .. }` and `name = value` lines"
                .to_string(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (Module, Vec<Diagnostic>) {
        parse(SourceId(1), text)
    }

    #[test]
    fn parses_a_workflow() {
        let (m, d) = parse_str(
            "# comment\nworkflow products\nuse Clarifai_ResNext {\n  image_size = 224 # trailing\n  per_item_lrate = 7.8125e-05\n}\ndata { train = \"data/x\"  eval = 0.1 }\ndevice = cuda(0)\nstep clustering as coarse { k = 4 }\nstep visual_search\n",
        );
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(m.items.len(), 6);
        let Item::Use(u) = &m.items[1] else { panic!() };
        let s: Vec<_> = u.body.as_ref().unwrap().settings().collect();
        assert_eq!(s[0].value.kind, ValueKind::Int(224));
        assert_eq!(s[1].value.kind, ValueKind::Float(7.8125e-05));
        let Item::Setting(dev) = &m.items[3] else {
            panic!()
        };
        let ValueKind::Call { name, args } = &dev.value.kind else {
            panic!()
        };
        assert_eq!(name.name, "cuda");
        assert_eq!(args[0].kind, ValueKind::Int(0));
        let Item::Step(st) = &m.items[4] else {
            panic!()
        };
        assert_eq!(st.alias.as_ref().unwrap().name, "coarse");
    }

    #[test]
    fn keywords_need_a_word_boundary() {
        let (m, d) = parse_str("user_name = 3\ndatabase = 2\n");
        assert!(d.is_empty(), "{d:?}");
        assert!(matches!(&m.items[0], Item::Setting(s) if s.name.name == "user_name"));
        assert!(matches!(&m.items[1], Item::Setting(s) if s.name.name == "database"));
    }

    #[test]
    fn every_broken_line_is_reported_and_intact_lines_kept() {
        let text = "use T {\n  a == 1\n  b = 2\n  c = \n}\nstep x { k = }\nseed = 3\n";
        let (m, d) = parse_str(text);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(d.iter().all(|d| d.code == Code::Syntax));
        assert_eq!(d[0].message, "expected a value, found `=`");
        assert_eq!(&text[d[0].span.start..d[0].span.end], "=");
        assert_eq!(d[1].message, "expected a value, found the end of the line");
        let Item::Use(u) = &m.items[0] else { panic!() };
        assert_eq!(u.body.as_ref().unwrap().items.len(), 1);
        assert!(matches!(&m.items[2], Item::Setting(s) if s.name.name == "seed"));
    }

    #[test]
    fn colon_instead_of_equals_gets_help() {
        let (_, d) = parse_str("use T {\n  image_size: 224\n}\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "expected `=`, found `:`");
        assert!(d[0].help.as_deref().unwrap().contains("rather than `:`"));
    }

    #[test]
    fn unterminated_string_and_unclosed_block() {
        let (_, d) = parse_str("data { train = \"abc }\n");
        assert_eq!(d[0].code, Code::UnterminatedString);
        let (_, d) = parse_str("use T {\n  a = 1\n");
        assert_eq!(d[0].code, Code::UnclosedBlock);
        assert_eq!(d[0].span.start, 6);
    }

    #[test]
    fn bad_numbers_and_escapes() {
        let (_, d) = parse_str("a = 99999999999999999999999\nb = 1e999\nc = \"x\\q\"\n");
        let codes: Vec<_> = d.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::BadNumber, Code::BadNumber, Code::BadEscape]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "{".repeat(100_000);
        let (_, d) = parse_str(&text);
        assert_eq!(d[0].code, Code::TooDeep);
    }

    #[test]
    fn parsing_in_pieces_gives_the_same_result() {
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&format!(
                "# {i} }} {{ \"\ntemplate T{i} extends Clarifai_ResNext {{\n  doc = \"\"\"x\nuse y {{\"\"\"\n  param image_size {{ max = {} }}\n  bad line {i}\n}}\nstep clustering as c{i} {{ k = {i} }}\nseed = = {i}\n",
                64 + i
            ));
        }
        text.push_str("use Unclosed {\n  a = \"b\n");
        assert!(text.len() > PARALLEL_MIN_BYTES * 2);
        assert!(split_points(&text, &structure(&text).statements, 4).len() == 5);
        let one = parse_with_threads(SourceId(1), &text, 1);
        let four = parse_with_threads(SourceId(1), &text, 4);
        assert_eq!(one.0.items.len(), 6001);
        assert_eq!(one.1.len(), four.1.len());
        assert!(one == four);
    }

    #[test]
    fn long_strings_span_lines() {
        let (m, d) = parse_str("template T extends U {\n doc = \"\"\"one\n two\"\"\"\n}\n");
        assert!(d.is_empty(), "{d:?}");
        let Item::Template(t) = &m.items[0] else {
            panic!()
        };
        let s: Vec<_> = t.body.settings().collect();
        assert_eq!(s[0].value.kind, ValueKind::Str("one\n two".into()));
    }
}
