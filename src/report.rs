//! Rendering diagnostics as text with miette (feature `render`).
//!
//! Rendering returns strings; printing them is the caller's business.

use crate::diagnostic::{Diagnostic, Rendered};
use crate::source::SourceMap;

/// How reports look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Unicode drawing and colours, for a terminal.
    Color,
    /// Unicode drawing, no escape codes: for pipes, files and snapshots.
    Plain,
}

/// Renders one diagnostic the way `wfrun check` shows it.
pub fn render(diagnostic: &Diagnostic, sources: &SourceMap, style: Style, width: usize) -> String {
    let theme = match style {
        Style::Color => miette::GraphicalTheme::unicode(),
        Style::Plain => miette::GraphicalTheme::unicode_nocolor(),
    };
    // Lines wrap at spaces only: a long path or name stays whole, to be
    // copied, even past the width.
    let handler = miette::GraphicalReportHandler::new_themed(theme)
        .with_width(width)
        .with_break_words(false)
        .with_word_separator(textwrap::WordSeparator::AsciiSpace)
        .with_word_splitter(textwrap::WordSplitter::NoHyphenation)
        .with_context_lines(1);
    let mut out = String::new();
    let rendered = Rendered::new(diagnostic, sources);
    if handler.render_report(&mut out, &rendered).is_err() {
        out = format!("{}: {}\n", diagnostic.code, diagnostic.message);
    }
    terminal_safe(&out, style == Style::Color)
}

/// `text` with every control character but line breaks and tabs escaped
/// (as `paths::push_escaped` writes them), keeping only colour sequences (`ESC [ digits ; m`) where
/// `colours`: a workflow's text, a file's name or a name in a message cannot
/// move the cursor, retitle the terminal or write to its clipboard when it
/// is shown.
pub fn terminal_safe(text: &str, colours: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}' && colours && rest.as_bytes().get(1) == Some(&b'[') {
            // (`[` is one byte: the parameters start at byte 2.)
            let body = &rest[2..];
            let params = body
                .bytes()
                .take_while(|b| b.is_ascii_digit() || *b == b';')
                .count();
            if body.as_bytes().get(params) == Some(&b'm') {
                out.push_str(&rest[..2 + params + 1]);
                rest = &rest[2 + params + 1..];
                continue;
            }
        }
        if crate::paths::unsafe_to_show(c) && c != '\n' && c != '\t' {
            crate::paths::push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Renders every diagnostic, one after another.
pub fn render_all(
    diagnostics: &[Diagnostic],
    sources: &SourceMap,
    style: Style,
    width: usize,
) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&render(d, sources, style, width));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Code;
    use crate::source::{SourceFile, Span};

    #[test]
    fn control_characters_reach_no_terminal() {
        // A file name and a comment that would set the terminal's title,
        // move the cursor and recolour it.
        let text =
            "# \u{1b}]0;owned\u{7} \u{1b}[2J\u{9b}31m \u{1b}é \u{1b}[\u{1b}[1;\u{7f}\r\nbad = = 1\n";
        let mut sources = SourceMap::new();
        let id = sources.add(SourceFile::new("a\u{1b}]52;c;eA==\u{7}.wf", text));
        let at = text.find("= 1").unwrap();
        let d = Diagnostic::error(Code::Syntax, Span::new(id, at, at + 1), "expected a value");
        for style in [Style::Plain, Style::Color] {
            let out = render(&d, &sources, style, 80);
            assert!(out.contains("expected a value"), "{out}");
            assert!(out.contains("\\u{1b}]0;owned\\u{7}"), "{out}");
            assert!(out.contains("a\\u{1b}]52;c;eA==\\u{7}.wf"), "{out}");
            assert!(!out.contains('\u{7}') && !out.contains('\u{9b}') && !out.contains('\u{7f}'));
            assert!(
                out.contains("\\u009b31m") && out.contains("\\u007f"),
                "{out}"
            );
            // What escapes are left are colours, the theme's own.
            let mut escapes = out.match_indices('\u{1b}').map(|(i, _)| &out[i..]);
            assert!(escapes.all(|e| {
                let digits = e[2..]
                    .bytes()
                    .take_while(|b| b.is_ascii_digit() || *b == b';');
                e.as_bytes()[1] == b'[' && e.as_bytes()[2 + digits.count()] == b'm'
            }));
            assert_eq!(style == Style::Color, out.contains("\u{1b}["), "{out}");
        }
    }

    #[test]
    fn text_that_reorders_what_follows_is_shown_escaped() {
        // A comment that would show `x = 1` reversed, and a line separator
        // that some terminals break at: escaped, the report's own lines kept.
        let text = "# \u{202e}1 = x\u{202c} \u{2067}a\u{2069}\u{2028}b\nbad = = 1\n";
        let mut sources = SourceMap::new();
        let id = sources.add(SourceFile::new("r\u{202e}fw.wf", text));
        let at = text.find("= 1").unwrap();
        let d = Diagnostic::error(Code::Syntax, Span::new(id, at, at + 1), "expected a value");
        for style in [Style::Plain, Style::Color] {
            let out = render(&d, &sources, style, 80);
            assert!(out.contains("expected a value"), "{out}");
            for c in ['\u{202e}', '\u{202c}', '\u{2067}', '\u{2069}', '\u{2028}'] {
                assert!(!out.contains(c), "{c:?} reached the terminal: {out}");
            }
            assert!(out.contains("r\\u{202e}fw.wf"), "{out}");
            assert!(out.contains("\\u{202e}1 = x\\u{202c}"), "{out}");
        }
    }

    #[test]
    fn a_long_path_in_a_message_is_never_split() {
        // Wrapped at spaces only: the path stays whole on its line, to be
        // copied, though longer than the width; the words around it wrap.
        let path = "data/a-long-folder-name/another-level-of-nesting/final-images-folder";
        let text = "bad = = 1\n";
        let mut sources = SourceMap::new();
        let id = sources.add(SourceFile::new("w.wf", text));
        let message = format!("the training folder `{path}` does not exist, so nothing can train");
        let d = Diagnostic::error(Code::Syntax, Span::new(id, 6, 7), message)
            .with_help(format!("make `{path}` or name another folder in `train`"));
        let out = render(&d, &sources, Style::Plain, 60);
        assert_eq!(out.matches(&format!("`{path}`")).count(), 2, "{out}");
        assert!(
            out.lines()
                .all(|l| l.contains(path) || l.chars().count() <= 60),
            "{out}"
        );
    }

    #[test]
    fn a_label_far_into_a_long_line_is_named_not_drawn() {
        // miette pads to a label's column with a width argument, which
        // panics past 65,535: a machine-made line must not crash a report.
        for (before, drawn) in [(70_000, false), (100, true)] {
            let text = format!("{}\tbad = = 1\nnext = 2\n", "x".repeat(before));
            let mut sources = SourceMap::new();
            let id = sources.add(SourceFile::new("long.wf", text));
            let at = before + 7;
            let d = Diagnostic::error(Code::Syntax, Span::new(id, at, at + 1), "expected a value")
                .with_label("here")
                .with_help("write a value");
            let out = render(&d, &sources, Style::Plain, 80);
            assert!(out.contains("expected a value"), "{out}");
            assert!(out.contains("write a value"), "{out}");
            let named = format!("at long.wf:1:{}", at + 1);
            assert_eq!(out.contains(&named), !drawn, "{out}");
            assert_eq!(out.contains("here"), drawn, "{out}");
        }
    }
}
