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
