//! Diagnostics as plain data.
//!
//! A [`Diagnostic`] is what the parser and the checker produce: a stable
//! [`Code`], a [`Severity`], a message, a primary span, secondary labels and
//! help. The same data feeds the terminal report (through [`Rendered`], which
//! implements [`miette::Diagnostic`]), the JSON output ([`JsonDiagnostic`]) and
//! editors.

use std::fmt;

use serde::Serialize;

use crate::source::{SourceFile, SourceId, SourceMap, Span};

/// How bad a diagnostic is. Errors stop a workflow from running; warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! codes {
    ($($variant:ident => $code:literal, $summary:literal;)*) => {
        /// The stable code of a diagnostic. Codes never change meaning; new ones may be added.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as written in reports, e.g. `wf::off-step`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// One line saying what the code is about.
            pub fn summary(self) -> &'static str {
                match self {
                    $(Code::$variant => $summary,)*
                }
            }
        }
    };
}

codes! {
    Syntax => "wf::syntax", "the text does not follow the grammar";
    UnclosedBlock => "wf::unclosed-block", "a `{` is never closed";
    UnterminatedString => "wf::unterminated-string", "a string has no closing quote on its line";
    BadEscape => "wf::bad-escape", "a string holds an escape other than \\\\ \\\" \\n \\t";
    TooDeep => "wf::too-deep", "blocks or calls are nested deeper than the language allows";
    BadNumber => "wf::bad-number", "a number is too large or not finite";
    UnknownTemplate => "wf::unknown-template", "the template named by `use` or `extends` does not exist";
    UnknownParam => "wf::unknown-param", "a setting names no parameter of its template or step";
    ParamNotInTemplate => "wf::param-not-in-template", "a hyperparameter belongs to another template";
    WrongType => "wf::wrong-type", "a value has the wrong type";
    OutOfRange => "wf::out-of-range", "a value is below the minimum or above the maximum";
    OffStep => "wf::off-step", "a value is not `min + k * step`";
    Duplicate => "wf::duplicate", "something is set or declared twice";
    Missing => "wf::missing", "something required is missing";
    UnknownSetting => "wf::unknown-setting", "a setting is not known where it is written";
    Misplaced => "wf::misplaced", "a declaration is written where it is not allowed";
    BadTemplate => "wf::bad-template", "a template declaration is malformed";
    Narrowing => "wf::narrowing", "a template widens its parent's range instead of narrowing it";
    UnknownStepKind => "wf::unknown-step-kind", "a `step` names no known step kind";
    Schedule => "wf::schedule", "the epochs and learning-rate schedule do not fit together";
    Memory => "wf::memory", "a run whose peak memory would not fit in the machine's memory";
    LongRun => "wf::long-run", "a run that would take more than a day on its device";
    LearningRate => "wf::learning-rate", "the learning rate will not train the network";
    AngularFromScratch => "wf::angular-from-scratch", "angular margin settings that learn more slowly without pretrained weights than gentler ones";
    BatchAdvice => "wf::batch-advice", "the batch is small for the number of concepts";
    DeviceUnavailable => "wf::device-unavailable", "this build of wfrun cannot use the device";
    BadDevice => "wf::bad-device", "the device is not written as `cpu`, `auto`, `cuda(N)` or `metal(N)`";
    PathNotFound => "wf::path-not-found", "a path does not exist or is the wrong kind";
    Data => "wf::data", "the data folder's layout is unusable or suspicious";
    BaseModel => "wf::base-model", "the base model cannot be read, or the workflow would train it";
    Sweep => "wf::sweep", "a sweep's values, trials, objective or early stopping cannot be used";
    VectorTable => "wf::vector-table", "a search index that is not a LanceDB table, or a build without LanceDB";
    Unreadable => "wf::unreadable", "a path given to `wfrun check` or `wfrun fmt` could not be read as workflow files";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secondary place involved in a diagnostic.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// A mechanical fix: replace the text of `span` by `replacement`.
///
/// Fixes are offered only where the checker knows the result is what was
/// meant (a name a typo away, the nearest value on the grid); an editor shows
/// each as a quick fix titled `title`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fix {
    pub span: Span,
    pub replacement: String,
    pub title: String,
}

/// One problem found in a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// Where the problem is.
    pub span: Span,
    /// Text shown at the primary span.
    pub label: Option<String>,
    /// Other places involved (the first of two duplicates, a parent's range).
    pub related: Vec<Label>,
    /// How to fix it, when a fix is known.
    pub help: Option<String>,
    /// Edits that fix it, most likely first (a subset of what `help` says).
    pub fixes: Vec<Fix>,
}

impl Diagnostic {
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            related: Vec::new(),
            help: None,
            fixes: Vec::new(),
        }
    }

    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_related(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.related.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    /// Offers replacing `span` by `replacement` as a fix titled `title`.
    pub fn with_fix(
        mut self,
        span: Span,
        replacement: impl Into<String>,
        title: impl Into<String>,
    ) -> Diagnostic {
        self.fixes.push(Fix {
            span,
            replacement: replacement.into(),
            title: title.into(),
        });
        self
    }

    /// "did you mean `x`?" with the replacement of `span` by `x` as a fix, or
    /// `otherwise()` as help when nothing is close enough.
    pub fn with_suggestion(
        self,
        span: Span,
        suggestion: Option<&str>,
        otherwise: impl FnOnce() -> String,
    ) -> Diagnostic {
        match suggestion {
            Some(x) => self.with_help(format!("did you mean `{x}`?")).with_fix(
                span,
                x,
                format!("change to `{x}`"),
            ),
            None => self.with_help(otherwise()),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The diagnostic with its file, lines and columns, ready for serialisation.
    pub fn to_json(&self, sources: &SourceMap) -> JsonDiagnostic {
        JsonDiagnostic {
            location: JsonLocation::new(sources, self.span),
            code: self.code.as_str(),
            severity: self.severity,
            message: self.message.clone(),
            label: self.label.clone(),
            labels: self
                .related
                .iter()
                .map(|l| JsonLabel {
                    location: JsonLocation::new(sources, l.span),
                    message: l.message.clone(),
                })
                .collect(),
            help: self.help.clone(),
            fixes: self
                .fixes
                .iter()
                .map(|f| JsonFix {
                    location: JsonLocation::new(sources, f.span),
                    replacement: f.replacement.clone(),
                    title: f.title.clone(),
                })
                .collect(),
        }
    }
}

/// Orders diagnostics by file, then position, then severity.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (a.span.source, a.span.start, a.severity, a.span.end).cmp(&(
            b.span.source,
            b.span.start,
            b.severity,
            b.span.end,
        ))
    });
}

/// Where a span is, as people and editors count: 1-based lines and columns
/// (columns in Unicode scalar values) plus the 0-based byte range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonLocation {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub byte_start: usize,
    pub byte_end: usize,
}

impl JsonLocation {
    /// The start of `file`: where a problem with the whole file is put.
    pub fn start_of(file: String) -> JsonLocation {
        JsonLocation {
            file,
            line: 1,
            column: 1,
            end_line: 1,
            end_column: 1,
            byte_start: 0,
            byte_end: 0,
        }
    }

    fn new(sources: &SourceMap, span: Span) -> JsonLocation {
        let file = sources.get(span.source);
        let (line, column) = file.line_col(span.start);
        let (end_line, end_column) = file.line_col(span.end);
        JsonLocation {
            file: file.name().to_string(),
            line,
            column,
            end_line,
            end_column,
            byte_start: span.start,
            byte_end: span.end,
        }
    }
}

/// A secondary label in JSON output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonLabel {
    #[serde(flatten)]
    pub location: JsonLocation,
    pub message: String,
}

/// A fix in JSON output: the span to replace and its replacement.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonFix {
    #[serde(flatten)]
    pub location: JsonLocation,
    pub replacement: String,
    pub title: String,
}

/// The JSON form of a diagnostic (one object per line with `--format json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JsonDiagnostic {
    #[serde(flatten)]
    pub location: JsonLocation,
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub label: Option<String>,
    pub labels: Vec<JsonLabel>,
    pub help: Option<String>,
    pub fixes: Vec<JsonFix>,
}

/// A diagnostic paired with its sources, so miette can render it.
///
/// Labels in the diagnostic's own file are drawn on its snippet; labels in
/// another file (usually the prelude) become related notes with their own
/// snippet.
pub struct Rendered<'a> {
    diagnostic: &'a Diagnostic,
    source: &'a SourceFile,
    notes: Vec<Note<'a>>,
    /// `file:line:column` of the diagnostic when some label cannot be drawn on
    /// its line ([`drawable`]): the report names the place in words instead of
    /// drawing the snippet.
    place: Option<String>,
}

/// Labels further than this many bytes into their line are not drawn: miette
/// pads to a label's column with a width argument, which Rust's formatting
/// refuses (a panic) past 65,535, and a column counts up to four per byte (a
/// tab). Such lines are machine-made; the report then names the place.
const MAX_DRAWN_COLUMN: usize = 16_000;

/// Whether `span` starts and ends within [`MAX_DRAWN_COLUMN`] of its lines' starts.
fn drawable(source: &SourceFile, span: Span) -> bool {
    let column = |offset: usize| offset - source.line_start(source.line_of(offset)).min(offset);
    column(span.start) <= MAX_DRAWN_COLUMN && column(span.end) <= MAX_DRAWN_COLUMN
}

impl<'a> Rendered<'a> {
    pub fn new(diagnostic: &'a Diagnostic, sources: &'a SourceMap) -> Rendered<'a> {
        let notes = diagnostic
            .related
            .iter()
            .filter(|l| l.span.source != diagnostic.span.source)
            .map(|l| Note {
                label: l,
                source: sources.get(l.span.source),
            })
            .collect();
        let source = sources.get(diagnostic.span.source);
        let snippet = drawable(source, diagnostic.span)
            && diagnostic
                .related
                .iter()
                .all(|l| l.span.source != diagnostic.span.source || drawable(source, l.span));
        let place = (!snippet).then(|| {
            let (line, column) = source.line_col(diagnostic.span.start);
            format!("{}:{line}:{column}", source.name())
        });
        Rendered {
            diagnostic,
            source,
            notes,
            place,
        }
    }
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Rendered<'_> {}

fn source_span(span: Span) -> miette::SourceSpan {
    miette::SourceSpan::new(span.start.into(), span.len())
}

impl miette::Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diagnostic.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        if let Some(place) = &self.place {
            let at = format!(
                "at {place} (the line is too long to draw){}",
                self.diagnostic
                    .help
                    .as_ref()
                    .map_or(String::new(), |h| format!("\n{h}"))
            );
            return Some(Box::new(at));
        }
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.place
            .is_none()
            .then_some(self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.place.is_some() {
            return None;
        }
        let d = self.diagnostic;
        let primary =
            miette::LabeledSpan::new_primary_with_span(d.label.clone(), source_span(d.span));
        let secondary = d
            .related
            .iter()
            .filter(|l| l.span.source == d.span.source)
            .map(|l| {
                miette::LabeledSpan::new_with_span(Some(l.message.clone()), source_span(l.span))
            });
        Some(Box::new(std::iter::once(primary).chain(secondary)))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.notes.is_empty() {
            return None;
        }
        Some(Box::new(
            self.notes.iter().map(|n| n as &dyn miette::Diagnostic),
        ))
    }
}

/// A secondary label that lives in another file, rendered as a note.
struct Note<'a> {
    label: &'a Label,
    source: &'a SourceFile,
}

impl fmt::Debug for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.label, f)
    }
}

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_prelude(self.label.span.source) {
            f.write_str("in wfrun's built-in templates:")
        } else if drawable(self.source, self.label.span) {
            write!(f, "in {}:", self.source.name())
        } else {
            let (line, column) = self.source.line_col(self.label.span.start);
            write!(
                f,
                "in {}:{line}:{column} (the line is too long to draw): {}",
                self.source.name(),
                self.label.message
            )
        }
    }
}

impl std::error::Error for Note<'_> {}

impl miette::Diagnostic for Note<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        drawable(self.source, self.label.span).then_some(self.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if !drawable(self.source, self.label.span) {
            return None;
        }
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_primary_with_span(
                Some(self.label.message.clone()),
                source_span(self.label.span),
            ),
        )))
    }
}

impl miette::SourceCode for SourceFile {
    /// miette's own `read_span` for text scans it from the start, which makes
    /// a report of many diagnostics quadratic in the file's length. The line
    /// index cuts out the lines around the span (with room to spare: whole
    /// lines, at least as many as miette will look at), miette reads that
    /// window, and its answer is moved back to the file's offsets and lines.
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let text = self.drawn();
        let (start, end) = (span.offset(), span.offset() + span.len());
        if end > text.len() {
            return Err(miette::MietteError::OutOfBounds);
        }
        // One line more than asked before: miette's scan treats a span at
        // offset 0 of what it reads differently from one anywhere else.
        let first = self.line_of(start).saturating_sub(context_lines_before + 1);
        let from = self.line_start(first);
        let to = self.line_start(self.line_of(end) + context_lines_after + 2);
        let window = &text[from..to];
        let inner = window.read_span(
            &miette::SourceSpan::new((start - from).into(), span.len()),
            context_lines_before,
            context_lines_after,
        )?;
        // miette's line and line count both count from the start of what it read.
        let lines_before = self.line_of(from);
        // The name with its control characters escaped, line breaks and tabs
        // included: a report's header is one line.
        Ok(Box::new(miette::MietteSpanContents::new_named(
            crate::paths::escape_controls(self.name()).into_owned(),
            inner.data(),
            miette::SourceSpan::new((inner.span().offset() + from).into(), inner.span().len()),
            inner.line() + lines_before,
            inner.column(),
            inner.line_count() + lines_before,
        )))
    }
}

/// Whether a source is the prelude (used to word messages).
pub fn is_prelude(id: SourceId) -> bool {
    id == SourceId::PRELUDE
}

#[cfg(test)]
mod tests {
    use miette::SourceCode as _;

    use super::*;

    /// The line index's window gives miette exactly what its own scan of the
    /// whole text gives, for every span, with `\r\n`, lone `\r` and wide characters.
    #[test]
    fn read_span_through_the_line_index_equals_miettes_scan() {
        for text in [
            "a = 1\r\nbé = \"x\"\r\r\n\n  ü { k = 2 }\rlast\n\nend",
            "\n\r\n\r\rx\n",
            "",
            "one line",
            "a\nb\nc\nd\ne\nf\ng\n",
        ] {
            same_as_miette(text);
        }
    }

    fn same_as_miette(text: &str) {
        let file = SourceFile::new("t.wf", text);
        // What miette is given: a lone `\r` drawn as the space wfrun reads.
        let drawn = file.drawn().to_string();
        assert_eq!(drawn.len(), text.len());
        assert_eq!(drawn.matches('\r').count(), text.matches("\r\n").count());
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &start in &bounds {
            for &end in bounds.iter().filter(|&&e| e >= start) {
                for context in 0..3 {
                    let span = miette::SourceSpan::new(start.into(), end - start);
                    let ours = file.read_span(&span, context, context).unwrap();
                    let theirs = drawn.read_span(&span, context, context).unwrap();
                    let what = (start, end, context);
                    assert_eq!(ours.data(), theirs.data(), "{what:?}");
                    assert_eq!(ours.span(), theirs.span(), "{what:?}");
                    assert_eq!(ours.line(), theirs.line(), "{what:?}");
                    assert_eq!(ours.column(), theirs.column(), "{what:?}");
                    assert_eq!(ours.line_count(), theirs.line_count(), "{what:?}");
                }
            }
        }
        let past = miette::SourceSpan::new(text.len().into(), 1);
        assert!(file.read_span(&past, 1, 1).is_err());
    }
}
