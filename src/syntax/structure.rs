//! The structure of a file found without parsing it: nesting, blocks never
//! closed, statement lines; and the braces repaired before pest parses it.

use super::*;

/// Bytes that matter to [`structural_bytes`]: quotes and comments change
/// what follows; braces, parentheses and line breaks are reported.
pub(super) const fn interesting() -> [bool; 256] {
    let mut t = [false; 256];
    let bytes = b"#\"{}()\n";
    let mut i = 0;
    while i < bytes.len() {
        t[bytes[i] as usize] = true;
        i += 1;
    }
    t
}
pub(super) const INTERESTING: [bool; 256] = interesting();

/// The braces, parentheses and line breaks of `text` that are code (outside
/// comments and strings), with their offsets. Strings are read as the
/// grammar's recovery layer reads them, so pest never meets a brace this scan
/// did not count: a quote never closed on its line is code (it is reported
/// elsewhere), a `\` escapes anything but a line break, and a `"""` never
/// closed is an empty string `""` and a quote.
pub(super) fn structural_bytes(text: &str) -> impl Iterator<Item = (usize, u8)> + '_ {
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
                None => i = at + 2,
            },
            b'"' => {
                let mut j = i;
                while j < bytes.len() && bytes[j] != b'"' && bytes[j] != b'\n' {
                    j += if bytes[j] == b'\\' && bytes.get(j + 1) != Some(&b'\n') {
                        2
                    } else {
                        1
                    };
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
pub(super) struct Structure {
    /// Where nesting first exceeds [`MAX_DEPTH`].
    pub(super) too_deep: Option<usize>,
    /// The `{` that are never closed.
    pub(super) unclosed: Vec<usize>,
    /// Starts of unindented lines outside blocks that begin with a statement
    /// keyword: where a file may be cut into pieces parsed apart.
    pub(super) statements: Vec<usize>,
}

pub(super) fn structure(text: &str) -> Structure {
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

pub(super) fn too_deep(source: SourceId, at: usize) -> Diagnostic {
    Diagnostic::error(
        Code::TooDeep,
        Span::new(source, at, at + 1),
        format!("blocks and calls are nested more than {MAX_DEPTH} deep"),
    )
    .with_label("too deep here")
    .with_help("workflows need at most three levels: `template { param { .. } }`")
}

/// The text a synthetic `}` is inserted as.
pub(super) const CLOSE: &str = "\n}";

/// A file with unclosed blocks, closed so the rest of it parses normally.
pub(super) struct Repair {
    /// The repaired text, when anything was inserted.
    pub(super) text: Option<String>,
    /// Offsets in the original text where [`CLOSE`] was inserted, ascending.
    pub(super) insertions: Vec<usize>,
    pub(super) diagnostics: Vec<Diagnostic>,
}

pub(super) const STATEMENT_KEYWORDS: [&str; 7] = [
    "workflow",
    "use",
    "data",
    "sweep",
    "step",
    "template",
    "step_kind",
];

/// Closes each block left open at the end of the file just before the next
/// line that starts, unindented, with a statement keyword (or at the end of
/// the file), and reports it. Files whose braces balance are left alone.
pub(super) fn repair_braces(source: SourceId, text: &str, open: &[usize]) -> Repair {
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
pub(super) fn statement_line_after(text: &str, from: usize) -> Option<usize> {
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
