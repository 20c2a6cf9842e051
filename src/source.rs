//! Source files and byte spans into them.
//!
//! Every span carries the [`SourceId`] of the file it points into, so a
//! diagnostic about a user's workflow can also point into the built-in prelude
//! (where the templates are declared).

use std::sync::Arc;

use serde::Serialize;

/// Which source file a [`Span`] points into: an index into a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SourceId(pub u32);

impl SourceId {
    /// The built-in prelude that declares the templates and step kinds.
    pub const PRELUDE: SourceId = SourceId(0);
}

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub source: SourceId,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(source: SourceId, start: usize, end: usize) -> Span {
        Span { source, start, end }
    }

    /// The smallest span covering both (which must be in the same file).
    pub fn to(self, other: Span) -> Span {
        Span::new(
            self.source,
            self.start.min(other.start),
            self.end.max(other.end),
        )
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One named source text with a line index.
#[derive(Clone, Debug)]
pub struct SourceFile {
    name: String,
    text: Arc<str>,
    line_starts: Vec<usize>,
    /// The text as reports draw it, where it differs: each `\r` not
    /// followed by `\n` a space, as the parser reads it (miette would
    /// count it a line break, and number lines unlike every other output).
    drawn: Option<Arc<str>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> SourceFile {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let b = text.as_bytes();
        let mut lone = memchr::memchr_iter(b'\r', b)
            .filter(|&i| b.get(i + 1) != Some(&b'\n'))
            .peekable();
        let drawn = lone.peek().is_some().then(|| {
            let mut bytes = b.to_vec();
            for i in lone {
                bytes[i] = b' ';
            }
            // ASCII for ASCII: still UTF-8.
            Arc::from(String::from_utf8_lossy(&bytes).as_ref())
        });
        SourceFile {
            name: name.into(),
            text,
            line_starts,
            drawn,
        }
    }

    /// The name shown in diagnostics: a path as the user gave it, or `<prelude>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The 0-based line (lines end with `\n`) holding a byte offset; offsets
    /// past the end are on the last line.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset) - 1
    }

    /// Where the 0-based `line` starts; the end of the text for lines past the last.
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len())
    }

    /// The text as reports draw it: a lone `\r` as a space.
    pub(crate) fn drawn(&self) -> &str {
        self.drawn.as_deref().unwrap_or(&self.text)
    }

    /// 1-based line and column of a byte offset; columns count Unicode scalar values.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_of(offset);
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }
}

/// All source files involved in one check: the prelude is always `SourceId::PRELUDE`.
#[derive(Clone, Debug)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// A map holding only the prelude.
    pub fn new() -> SourceMap {
        SourceMap {
            files: vec![crate::spec::prelude_source()],
        }
    }

    pub fn add(&mut self, file: SourceFile) -> SourceId {
        self.files.push(file);
        SourceId((self.files.len() - 1) as u32)
    }

    pub fn get(&self, id: SourceId) -> &SourceFile {
        &self.files[id.0 as usize]
    }
}

impl Default for SourceMap {
    fn default() -> Self {
        SourceMap::new()
    }
}
