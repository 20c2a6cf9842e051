//! What a broken line lacks: unterminated strings, unclosed braces, junk
//! after a setting, or pest's own error on the piece alone, in words.

use super::*;

pub(super) fn shorten(text: &str) -> String {
    if text.chars().count() <= 24 {
        text.to_string()
    } else {
        let head: String = text.chars().take(20).collect();
        format!("{head}…")
    }
}

/// Says what is wrong with a piece of text the recovery layer swallowed.
pub(super) fn explain(source: SourceId, start: usize, text: &str, entry: Rule) -> Diagnostic {
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

/// A call whose `(` is left open at the end of its line and closed on a later
/// one (`values(` / `16,` / `32` / `)`): the length of `rest` from its `(`
/// through the `)`, and the arguments on one line, `(16, 32)`. `None` when
/// `rest` does not start with `(`, when the `)` is on the same line, or when
/// something a call cannot hold (`=`, a brace, an unterminated string, a
/// 65th line) comes before it.
pub(super) fn call_across_lines(rest: &str) -> Option<(usize, String)> {
    if !rest.starts_with('(') {
        return None;
    }
    let (mut depth, mut lines, mut space) = (0usize, 0usize, false);
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\n' => {
                lines += 1;
                if lines > 64 {
                    return None;
                }
                space = true;
            }
            ' ' | '\t' | '\r' => space = true,
            '=' | '{' | '}' => return None,
            '#' => {
                // A comment, to the end of its line.
                let end = rest[i..].find('\n').map_or(rest.len(), |n| i + n);
                while chars.clone().next().is_some_and(|(j, _)| j < end) {
                    chars.next();
                }
            }
            ')' => {
                let kept = out.trim_end_matches([' ', ',']).len();
                out.truncate(kept);
                out.push(')');
                space = false;
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (lines > 0).then_some((i + 1, out));
                }
            }
            _ => {
                if space && c != ',' && !out.is_empty() && !out.ends_with('(') {
                    out.push(' ');
                }
                space = c == ',';
                out.push(c);
                if c == '(' {
                    depth += 1;
                } else if c == '"' {
                    // A string, as written, to its closing quote on this line.
                    loop {
                        let (_, d) = chars.next()?;
                        if d == '\n' {
                            return None;
                        }
                        out.push(d);
                        if d == '\\' {
                            out.push(chars.next()?.1);
                        } else if d == '"' {
                            break;
                        }
                    }
                }
            }
        }
    }
    None
}

/// The diagnostic for [`call_across_lines`] at `span` (the `(` through the
/// `)`, over `lines` lines): `before` is the text up to the `(`, whose last
/// line is the setting (`batch_size = values`), `one_line` what that
/// function found.
pub(super) fn call_across_lines_error(
    span: Span,
    before: &str,
    one_line: &str,
    lines: usize,
) -> Diagnostic {
    let line = before.rsplit('\n').next().unwrap_or("");
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let name = line.rsplit([' ', '=']).next().unwrap_or("");
    Diagnostic::error(
        Code::Syntax,
        span,
        format!("`{name}(` is closed on a later line: a call is written on one line"),
    )
    .with_label(format!("a call over {lines} lines"))
    .with_help(format!("write `{}{one_line}`", shorten_call(&line)))
    .with_fix(span, one_line, "write the call on one line")
}

/// The start of a setting's line, short enough for a help line.
fn shorten_call(line: &str) -> String {
    if line.chars().count() <= 60 {
        line.to_string()
    } else {
        let tail: Vec<char> = line.chars().rev().take(40).collect();
        format!("…{}", tail.into_iter().rev().collect::<String>())
    }
}

/// Junk on the same line after a complete setting or statement.
pub(super) fn trailing_junk(
    source: SourceId,
    start: usize,
    text: &str,
    before: &str,
) -> Diagnostic {
    if let Some(d) = unterminated_string(source, start, text) {
        return d;
    }
    let (found, len) = found_at(text, 0);
    let prev = before.rsplit('\n').next().unwrap_or("").trim();
    let prev = shorten(prev);
    let d = Diagnostic::error(
        Code::Syntax,
        Span::new(source, start, start + len.max(1)),
        unexpected(&found, Some(&prev)),
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

pub(super) fn unterminated_string(
    source: SourceId,
    start: usize,
    text: &str,
) -> Option<Diagnostic> {
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
                        Some(b'\\') if bytes.get(i + 1) != Some(&b'\n') => i += 2,
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

pub(super) fn unterminated(source: SourceId, at: usize, len: usize, long: bool) -> Diagnostic {
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

pub(super) fn unclosed_brace(source: SourceId, start: usize, text: &str) -> Option<Diagnostic> {
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
pub(super) fn pest_error(
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
            unexpected(&found, None),
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

/// "unexpected `x` after ..", or for what [`found_at`] describes in words
/// ("an invisible character (U+0000)") "An invisible .. is not expected ..".
fn unexpected(found: &str, after: Option<&str>) -> String {
    if found.starts_with('`') {
        return match after {
            Some(prev) => format!("unexpected {found} after `{prev}`"),
            None => format!("unexpected {found}"),
        };
    }
    let mut chars = found.chars();
    let first = chars
        .next()
        .map(|c| c.to_uppercase().to_string())
        .unwrap_or_default();
    let place = after.map_or("here".to_string(), |prev| format!("after `{prev}`"));
    format!("{first}{} is not expected {place}", chars.as_str())
}

pub(super) fn found_at(text: &str, pos: usize) -> (String, usize) {
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
    } else if crate::paths::unsafe_to_show(c) || c.is_whitespace() {
        // Shown as itself it would read as nothing: `found ''`.
        let what = match c {
            '\u{feff}' => "a byte-order mark",
            '\u{200b}' => "a zero-width space",
            '\u{a0}' | '\u{202f}' => "a no-break space",
            _ if c.is_whitespace() => "a space character",
            _ => "an invisible character",
        };
        (format!("{what} (U+{:04X})", c as u32), c.len_utf8())
    } else {
        (format!("`{c}`"), c.len_utf8())
    }
}

pub(super) fn describe_expected(positives: &[Rule]) -> String {
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
            | Rule::sweep_decl
            | Rule::step_decl
            | Rule::template_decl
            | Rule::step_kind_decl
            | Rule::kw_workflow
            | Rule::kw_use
            | Rule::kw_data
            | Rule::kw_sweep
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

pub(super) fn help_for(positives: &[Rule], text: &str, pos: usize) -> Option<String> {
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
