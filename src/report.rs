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
    let handler = miette::GraphicalReportHandler::new_themed(theme)
        .with_width(width)
        .with_context_lines(1);
    let mut out = String::new();
    let rendered = Rendered::new(diagnostic, sources);
    if handler.render_report(&mut out, &rendered).is_err() {
        out = format!("{}: {}\n", diagnostic.code, diagnostic.message);
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
