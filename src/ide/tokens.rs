//! Semantic tokens and folding ranges, from one scan of the text: what an
//! editor highlights and folds without a TextMate grammar, broken lines
//! included (the scan needs no parse), in time linear in the text.

use crate::spec::Registry;

/// What a token is, as the LSP's standard token types name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Keyword,
    /// A template's name (`use`, `extends`, `template`).
    Type,
    /// A step kind, or a call's name (`range(..)`, `maximize(..)`).
    Function,
    /// A parameter or setting being set or declared.
    Property,
    /// A step's alias (`step clustering as coarse`) or the workflow's name.
    Variable,
    /// A name written as a value (`cpu`, `eval`).
    EnumMember,
    String,
    Number,
    Comment,
    Operator,
}

impl TokenKind {
    /// The legend, in the order of the indices [`TokenKind::index`] gives.
    pub const LEGEND: [&'static str; 10] = [
        "keyword",
        "type",
        "function",
        "property",
        "variable",
        "enumMember",
        "string",
        "number",
        "comment",
        "operator",
    ];

    pub fn index(self) -> u32 {
        self as u32
    }
}

/// Modifiers, as bits: [`Token::modifiers`].
pub const DECLARATION: u32 = 1;
/// A built-in template or step kind (the prelude's).
pub const DEFAULT_LIBRARY: u32 = 2;
/// The modifiers' legend, bit by bit.
pub const MODIFIERS: [&str; 2] = ["declaration", "defaultLibrary"];

/// One token: bytes `start..end` of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub start: usize,
    pub end: usize,
    pub kind: TokenKind,
    pub modifiers: u32,
}

/// A range an editor may fold: from the line of `start` to the line of `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fold {
    pub start: usize,
    pub end: usize,
    pub comment: bool,
}

const KEYWORDS: [&str; 10] = [
    "workflow",
    "use",
    "data",
    "sweep",
    "step",
    "as",
    "template",
    "extends",
    "step_kind",
    "param",
];

/// The semantic tokens of `text`, in order; multi-line strings are cut at
/// line ends (one token a line, as clients without multi-line tokens need).
pub fn semantic_tokens(text: &str) -> Vec<Token> {
    scan(text).0
}

/// The folding ranges of `text`: blocks over several lines, runs of comment
/// lines, and multi-line strings.
pub fn folding_ranges(text: &str) -> Vec<Fold> {
    scan(text).1
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn scan(text: &str) -> (Vec<Token>, Vec<Fold>) {
    let registry = Registry::builtin();
    let b = text.as_bytes();
    let mut tokens = Vec::new();
    let mut folds = Vec::new();
    let mut braces: Vec<usize> = Vec::new();
    // The last keyword or `=` before the current token on this statement.
    let mut prev: Option<&str> = None;
    // A run of comment lines: its first comment's start, its last's end, its last line.
    let mut comments: Option<(usize, usize, usize)> = None;
    let mut line = 0usize;
    let mut i = 0;
    let push = |tokens: &mut Vec<Token>, start, end, kind, modifiers| {
        tokens.push(Token {
            start,
            end,
            kind,
            modifiers,
        })
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'#' => {
                let mut end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                if end > i + 1 && b[end - 1] == b'\r' {
                    end -= 1;
                }
                push(&mut tokens, i, end, TokenKind::Comment, 0);
                // Only lines that hold nothing but a comment fold together.
                let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
                let alone = text[line_start..i].trim().is_empty();
                comments = match comments {
                    Some((s, _, l)) if alone && l + 1 == line => Some((s, end, line)),
                    Some((s, e, _)) => {
                        fold_comments(&mut folds, text, s, e);
                        alone.then_some((i, end, line))
                    }
                    None => alone.then_some((i, end, line)),
                };
                i = end;
            }
            b'"' if text[i..].starts_with("\"\"\"") => {
                let close = text[i + 3..]
                    .find("\"\"\"")
                    .map_or(b.len(), |n| i + 3 + n + 3);
                // One token a line.
                let mut s = i;
                for (n, _) in text[i..close].match_indices('\n') {
                    if s < i + n {
                        push(&mut tokens, s, i + n, TokenKind::String, 0);
                    }
                    s = i + n + 1;
                    line += 1;
                }
                if s < close {
                    push(&mut tokens, s, close, TokenKind::String, 0);
                }
                if text[i..close].contains('\n') {
                    folds.push(Fold {
                        start: i,
                        end: close,
                        comment: false,
                    });
                }
                i = close;
                prev = None;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' && b[j] != b'\n' {
                    j += if b[j] == b'\\' && j + 1 < b.len() && b[j + 1] != b'\n' {
                        2
                    } else {
                        1
                    };
                }
                let end = if j < b.len() && b[j] == b'"' {
                    j + 1
                } else {
                    j
                };
                push(&mut tokens, i, end, TokenKind::String, 0);
                i = end;
                prev = None;
            }
            b'0'..=b'9' | b'-' | b'.'
                if c.is_ascii_digit()
                    || b.get(i + 1)
                        .is_some_and(|n| n.is_ascii_digit() || *n == b'.') =>
            {
                let mut j = i + 1;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'.'
                        || ((b[j] == b'-' || b[j] == b'+') && matches!(b[j - 1], b'e' | b'E')))
                {
                    j += 1;
                }
                push(&mut tokens, i, j, TokenKind::Number, 0);
                i = j;
                prev = None;
            }
            _ if is_ident_start(c) => {
                let mut j = i + 1;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                let word = &text[i..j];
                let next = text[j..].trim_start_matches([' ', '\t']);
                let (kind, modifiers) = if KEYWORDS.contains(&word) && prev != Some("=") {
                    (TokenKind::Keyword, 0)
                } else {
                    classify(word, prev, next, registry)
                };
                push(&mut tokens, i, j, kind, modifiers);
                prev = (kind == TokenKind::Keyword).then_some(word);
                i = j;
            }
            b'=' => {
                push(&mut tokens, i, i + 1, TokenKind::Operator, 0);
                prev = Some("=");
                i += 1;
            }
            b'{' => {
                braces.push(i);
                prev = None;
                i += 1;
            }
            b'}' => {
                if let Some(open) = braces.pop() {
                    if text[open..i].contains('\n') {
                        folds.push(Fold {
                            start: open,
                            end: i + 1,
                            comment: false,
                        });
                    }
                }
                prev = None;
                i += 1;
            }
            b':' => {
                prev = Some(":");
                i += 1;
            }
            _ => {
                if !c.is_ascii_whitespace() && c != b'(' && c != b',' && c != b'|' {
                    prev = None;
                }
                // A multi-byte character: skip it whole.
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    if let Some((s, e, _)) = comments {
        fold_comments(&mut folds, text, s, e);
    }
    folds.sort_by_key(|f| (f.start, f.end));
    (tokens, folds)
}

fn fold_comments(folds: &mut Vec<Fold>, text: &str, start: usize, end: usize) {
    if text[start..end].contains('\n') {
        folds.push(Fold {
            start,
            end,
            comment: true,
        });
    }
}

fn classify(word: &str, prev: Option<&str>, next: &str, registry: &Registry) -> (TokenKind, u32) {
    let builtin = |known: bool| if known { DEFAULT_LIBRARY } else { 0 };
    match prev {
        Some("use") | Some("extends") => {
            (TokenKind::Type, builtin(registry.template(word).is_some()))
        }
        Some("template") => (TokenKind::Type, DECLARATION),
        Some("step") => (
            TokenKind::Function,
            builtin(registry.step_kind(word).is_some()),
        ),
        Some("step_kind") => (TokenKind::Function, DECLARATION),
        Some("as") => (TokenKind::Variable, DECLARATION),
        Some("workflow") => (TokenKind::Variable, DECLARATION),
        Some("param") => (TokenKind::Property, DECLARATION),
        Some(":") => (TokenKind::Type, DEFAULT_LIBRARY),
        _ if next.starts_with('(') => (TokenKind::Function, 0),
        _ if next.starts_with('=') => (TokenKind::Property, 0),
        _ => (TokenKind::EnumMember, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(&str, TokenKind, u32)> {
        semantic_tokens(text)
            .into_iter()
            .map(|t| (&text[t.start..t.end], t.kind, t.modifiers))
            .collect()
    }

    #[test]
    fn tokens_say_what_each_word_is() {
        let text = "workflow w  # a comment\nuse Clarifai_ResNext { image_size = 64 }\nstep clustering as coarse { k = 4 }\ndevice = cpu\nsweep { batch_size = values(16, 32) }\n";
        let k = kinds(text);
        assert_eq!(k[0], ("workflow", TokenKind::Keyword, 0));
        assert_eq!(k[1], ("w", TokenKind::Variable, DECLARATION));
        assert_eq!(k[2], ("# a comment", TokenKind::Comment, 0));
        assert_eq!(k[4], ("Clarifai_ResNext", TokenKind::Type, DEFAULT_LIBRARY));
        assert_eq!(k[5], ("image_size", TokenKind::Property, 0));
        assert_eq!(k[6], ("=", TokenKind::Operator, 0));
        assert_eq!(k[7], ("64", TokenKind::Number, 0));
        assert_eq!(k[9], ("clustering", TokenKind::Function, DEFAULT_LIBRARY));
        assert_eq!(k[11], ("coarse", TokenKind::Variable, DECLARATION));
        assert!(k.contains(&("cpu", TokenKind::EnumMember, 0)));
        assert!(k.contains(&("values", TokenKind::Function, 0)));
        assert!(k.contains(&("16", TokenKind::Number, 0)));
    }

    #[test]
    fn long_strings_are_a_token_a_line_and_fold() {
        let text = "template T extends Clarifai_ResNext {\n    param x: int {\n        doc = \"\"\"one\n        two\"\"\"\n    }\n}\n# a\n# b\n";
        let strings: Vec<&str> = semantic_tokens(text)
            .into_iter()
            .filter(|t| t.kind == TokenKind::String)
            .map(|t| &text[t.start..t.end])
            .collect();
        assert_eq!(strings, ["\"\"\"one", "        two\"\"\""]);
        let folds = folding_ranges(text);
        assert_eq!(folds.len(), 4, "{folds:?}");
        assert!(folds.iter().any(|f| f.comment));
        assert!(semantic_tokens(text)
            .iter()
            .all(|t| !text[t.start..t.end].contains('\n')));
    }

    #[test]
    fn only_lines_of_comments_fold_as_comments() {
        let text = "# one\n# two\nuse Clarifai_ResNext { image_size = 64 }  # three\nstep clustering { k = 4 }  # four\n# five\r\n";
        let folds = folding_ranges(text);
        assert_eq!(folds.len(), 1, "{folds:?}");
        assert_eq!(&text[folds[0].start..folds[0].end], "# one\n# two");
        let last = semantic_tokens(text).pop().unwrap();
        assert_eq!(&text[last.start..last.end], "# five");
    }

    #[test]
    fn broken_text_still_scans() {
        for text in [
            "use {{{ \"unterminated\n",
            "}}}} = = 1e",
            "\"\"\"never closed\n\n",
            "é ü = 3",
        ] {
            let t = semantic_tokens(text);
            assert!(t.iter().all(|t| t.start < t.end && t.end <= text.len()));
            let _ = folding_ranges(text);
        }
    }
}
