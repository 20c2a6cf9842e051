//! The formatter behind `wfrun fmt`: one canonical layout for `.wf` files.
//!
//! - four spaces per block level; one setting per line in a block written
//!   over several lines, with the `=` of consecutive settings aligned;
//! - a block written on one line stays on one line (`{ k = 4  inits = 8 }`,
//!   two spaces between settings), unless it holds comments or `param`s;
//! - comments are kept: a comment on its own line stays before what
//!   followed it, a comment after code stays on that line (those of
//!   consecutive lines aligned); one blank line at most between statements;
//! - values are written as in the source (`7.8125e-05` stays `7.8125e-05`),
//!   strings and `"""` strings verbatim.
//!
//! A file with syntax errors is not formatted. Formatting never changes
//! meaning: the result is parsed again and its syntax tree compared with the
//! original's (spans aside) before it is returned.

use crate::diagnostic::Diagnostic;
use crate::source::SourceId;
use crate::syntax::{Block, BlockItem, Item, Module, ParamDecl, Setting, Value, ValueKind};

/// Why a file could not be formatted.
#[derive(Clone, Debug)]
pub enum FormatError {
    /// The file does not parse: its syntax errors.
    Syntax(Vec<Diagnostic>),
    /// The formatted text would mean something else (a formatter bug; the
    /// file is left alone).
    ChangedMeaning,
}

/// Formats `text`.
pub fn format_source(text: &str) -> Result<String, FormatError> {
    // The parser reads a byte-order mark at the very start as blanks (the
    // same bytes); the formatted text keeps it there.
    let (module, diagnostics) = crate::syntax::parse(SourceId(0), text);
    let errors: Vec<Diagnostic> = diagnostics.into_iter().filter(|d| d.is_error()).collect();
    if !errors.is_empty() {
        return Err(FormatError::Syntax(errors));
    }
    let mut f = Formatter {
        text,
        comments: comments(text),
        next: 0,
        out: String::with_capacity(text.len() + 64),
        last_end: 0,
    };
    if text.starts_with('\u{feff}') {
        f.out.push('\u{feff}');
    }
    f.items(&module);
    let formatted = f.out;
    let (again, diagnostics) = crate::syntax::parse(SourceId(0), &formatted);
    if diagnostics.iter().any(Diagnostic::is_error)
        || shape(&again, &formatted) != shape(&module, text)
    {
        return Err(FormatError::ChangedMeaning);
    }
    Ok(formatted)
}

/// A `#` comment: its byte range, and whether only spaces precede it on its line.
#[derive(Clone, Debug)]
struct Comment {
    start: usize,
    end: usize,
    own_line: bool,
}

/// Whether byte `offset` of `text` lies in a `#` comment (after its `#`,
/// up to its line's end); a `#` inside a string is not one.
pub(crate) fn in_comment(text: &str, offset: usize) -> bool {
    comments(text)
        .iter()
        .any(|c| c.start < offset && offset <= c.end)
}

/// The comments of `text`, skipping `#` inside strings.
fn comments(text: &str) -> Vec<Comment> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' if text[i..].starts_with("\"\"\"") => {
                i = text[i + 3..]
                    .find("\"\"\"")
                    .map_or(bytes.len(), |j| i + 3 + j + 3);
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'#' => {
                let end = text[i..].find('\n').map_or(bytes.len(), |j| i + j);
                let line_start = text[..i].rfind('\n').map_or(0, |j| j + 1);
                let own_line = text[line_start..i].trim().is_empty();
                out.push(Comment {
                    start: i,
                    end,
                    own_line,
                });
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

struct Formatter<'a> {
    text: &'a str,
    comments: Vec<Comment>,
    /// The first comment not yet written.
    next: usize,
    out: String,
    /// Where the last written node ended in the source.
    last_end: usize,
}

/// A setting of a group, with its trailing comment.
struct Line {
    name: String,
    value: String,
    comment: Option<String>,
}

impl Formatter<'_> {
    fn src(&self, start: usize, end: usize) -> &str {
        &self.text[start..end.min(self.text.len())]
    }

    /// Whether a blank line lies between byte offsets `a` and `b` of the source.
    fn blank_between(&self, a: usize, b: usize) -> bool {
        if a >= b {
            return false;
        }
        let gap = self.src(a, b);
        gap.split('\n')
            .skip(1)
            .take(gap.matches('\n').count().saturating_sub(1))
            .any(|l| l.trim().is_empty())
    }

    /// Writes the own-line comments before `pos` at `indent`, each line
    /// preceded by a blank line when the source had one.
    fn leading(&mut self, pos: usize, indent: usize, first_in_block: bool) {
        while self.next < self.comments.len() && self.comments[self.next].start < pos {
            let c = self.comments[self.next].clone();
            self.next += 1;
            if !c.own_line {
                // A comment after code we already wrote on its line; keep it there.
                let text = self.src(c.start, c.end).trim_end().to_string();
                if self.out.ends_with('\n') {
                    self.out.pop();
                }
                self.out.push_str("  ");
                self.out.push_str(&text);
                self.out.push('\n');
                self.last_end = c.end;
                continue;
            }
            self.blank_line_if(self.last_end, c.start, first_in_block);
            let text = self.src(c.start, c.end).trim_end().to_string();
            self.out.push_str(&" ".repeat(indent));
            self.out.push_str(&text);
            self.out.push('\n');
            self.last_end = c.end;
        }
    }

    fn blank_line_if(&mut self, from: usize, to: usize, first_in_block: bool) {
        let at_start = self.out.is_empty() || self.out.ends_with("{\n");
        if !at_start
            && !first_in_block
            && self.blank_between(from, to)
            && !self.out.ends_with("\n\n")
        {
            self.out.push('\n');
        }
    }

    /// The trailing comment on the line where `end` is, if any (taken).
    fn trailing(&mut self, end: usize) -> Option<String> {
        let c = self.comments.get(self.next)?;
        let line_end = self.text[end..]
            .find('\n')
            .map_or(self.text.len(), |j| end + j);
        // Only a comment with nothing but spaces before it: after another
        // setting on the same line (`a = 1  b = 2  # about b`) it is that one's.
        if !c.own_line
            && c.start >= end
            && c.start <= line_end
            && self.text[end..c.start].trim().is_empty()
        {
            let text = self.src(c.start, c.end).trim_end().to_string();
            self.next += 1;
            self.last_end = c.end;
            return Some(text);
        }
        None
    }

    fn items(&mut self, module: &Module) {
        let mut group: Vec<Line> = Vec::new();
        for item in &module.items {
            let span = item.span();
            if let Item::Setting(s) = item {
                // Top-level settings group like a block's.
                let comments_before = self.next < self.comments.len()
                    && self.comments[self.next].start < span.start
                    && self.comments[self.next].own_line;
                if comments_before || self.blank_between(self.last_end, span.start) {
                    self.flush(&mut group, 0);
                }
                self.leading(span.start, 0, false);
                if group.is_empty() {
                    self.blank_line_if(self.last_end, span.start, false);
                }
                self.last_end = span.end;
                let line = self.setting_line(s);
                group.push(line);
                continue;
            }
            self.flush(&mut group, 0);
            self.leading(span.start, 0, false);
            self.blank_line_if(self.last_end, span.start, false);
            self.item(item);
        }
        self.flush(&mut group, 0);
        self.leading(usize::MAX, 0, false);
        while self.out.ends_with("\n\n") {
            self.out.pop();
        }
    }

    fn item(&mut self, item: &Item) {
        let header = match item {
            Item::Workflow { name, .. } => format!("workflow {}", name.name),
            Item::Use(u) => format!("use {}", u.template.name),
            Item::Data(_) => "data".to_string(),
            Item::Sweep(_) => "sweep".to_string(),
            Item::Step(s) => match &s.alias {
                Some(a) => format!("step {} as {}", s.kind.name, a.name),
                None => format!("step {}", s.kind.name),
            },
            Item::Template(t) => match &t.parent {
                Some(p) => format!("template {} extends {}", t.name.name, p.name),
                None => format!("template {}", t.name.name),
            },
            Item::StepKind(k) => format!("step_kind {}", k.name.name),
            Item::Setting(_) => unreachable!("settings are grouped by the caller"),
        };
        let body = match item {
            Item::Use(u) => u.body.as_ref(),
            Item::Data(d) => Some(&d.body),
            Item::Sweep(d) => Some(&d.body),
            Item::Step(s) => s.body.as_ref(),
            Item::Template(t) => Some(&t.body),
            Item::StepKind(k) => Some(&k.body),
            _ => None,
        };
        self.with_body(&header, body, item.span().end, 0);
    }

    /// Writes `header` and its block (if any) at `indent`, then a newline.
    fn with_body(&mut self, header: &str, body: Option<&Block>, end: usize, indent: usize) {
        self.out.push_str(&" ".repeat(indent));
        self.out.push_str(header);
        let Some(block) = body else {
            self.last_end = end;
            let t = self.trailing(end);
            self.finish_line(t);
            return;
        };
        let one_line = !self.src(block.span.start, block.span.end).contains('\n')
            && !self
                .comments
                .iter()
                .any(|c| c.start > block.span.start && c.start < block.span.end)
            && block
                .items
                .iter()
                .all(|i| matches!(i, BlockItem::Setting(_)));
        if one_line {
            let parts: Vec<String> = block
                .settings()
                .map(|s| format!("{} = {}", s.name.name, self.value(&s.value)))
                .collect();
            if parts.is_empty() {
                self.out.push_str(" { }");
            } else {
                self.out.push_str(&format!(" {{ {} }}", parts.join("  ")));
            }
            self.last_end = block.span.end;
            let t = self.trailing(block.span.end);
            self.finish_line(t);
            return;
        }
        self.out.push_str(" {");
        self.last_end = block.span.start + 1;
        // A comment after `{` is the brace's, unless a setting comes first on that line.
        let first_item = block.items.first().map_or(usize::MAX, |i| match i {
            BlockItem::Setting(s) => s.span.start,
            BlockItem::Param(p) => p.span.start,
        });
        let t = match self.comments.get(self.next) {
            Some(c) if c.start < first_item => self.trailing(block.span.start + 1),
            _ => None,
        };
        self.finish_line(t);
        self.block_items(block, indent + 4);
        // Comments before the closing brace.
        self.leading(block.span.end - 1, indent + 4, false);
        self.out.push_str(&" ".repeat(indent));
        self.out.push('}');
        self.last_end = block.span.end;
        let t = self.trailing(block.span.end);
        self.finish_line(t);
    }

    fn finish_line(&mut self, comment: Option<String>) {
        if let Some(c) = comment {
            self.out.push_str("  ");
            self.out.push_str(&c);
        }
        self.out.push('\n');
    }

    fn block_items(&mut self, block: &Block, indent: usize) {
        let mut group: Vec<Line> = Vec::new();
        let mut first = true;
        for item in &block.items {
            match item {
                BlockItem::Setting(s) => {
                    let comments_before = self.next < self.comments.len()
                        && self.comments[self.next].start < s.span.start
                        && self.comments[self.next].own_line;
                    if comments_before || self.blank_between(self.last_end, s.span.start) {
                        self.flush(&mut group, indent);
                    }
                    self.leading(s.span.start, indent, first);
                    if group.is_empty() {
                        self.blank_line_if(self.last_end, s.span.start, first);
                    }
                    self.last_end = s.span.end;
                    let line = self.setting_line(s);
                    group.push(line);
                }
                BlockItem::Param(p) => {
                    self.flush(&mut group, indent);
                    self.leading(p.span.start, indent, first);
                    self.blank_line_if(self.last_end, p.span.start, first);
                    self.param(p, indent);
                }
            }
            first = false;
        }
        self.flush(&mut group, indent);
    }

    fn param(&mut self, p: &ParamDecl, indent: usize) {
        let mut header = format!("param {}", p.name.name);
        if let Some(ty) = &p.ty {
            let alts: Vec<&str> = ty.alternatives.iter().map(|a| a.name.as_str()).collect();
            header.push_str(&format!(": {}", alts.join(" | ")));
        }
        self.with_body(&header, p.body.as_ref(), p.span.end, indent);
    }

    /// A setting's line, taking its trailing comment.
    fn setting_line(&mut self, s: &Setting) -> Line {
        let value = self.value(&s.value);
        let comment = self.trailing(s.span.end);
        Line {
            name: s.name.name.clone(),
            value,
            comment,
        }
    }

    /// Writes a group of settings with their `=` (and trailing comments) aligned.
    fn flush(&mut self, group: &mut Vec<Line>, indent: usize) {
        let width = group
            .iter()
            .map(|l| l.name.chars().count())
            .max()
            .unwrap_or(0);
        let codes: Vec<String> = group
            .iter()
            .map(|l| format!("{:width$} = {}", l.name, l.value))
            .collect();
        // Trailing comments line up after the longest line that has one.
        let column = group
            .iter()
            .zip(&codes)
            .filter(|(l, _)| l.comment.is_some())
            .map(|(_, c)| c.lines().last().unwrap_or("").chars().count())
            .max()
            .unwrap_or(0);
        for (l, code) in group.drain(..).zip(codes) {
            self.out.push_str(&" ".repeat(indent));
            match l.comment {
                Some(c) => {
                    let last = code.lines().last().unwrap_or("").chars().count();
                    self.out.push_str(&code);
                    self.out.push_str(&" ".repeat(column - last + 2));
                    self.out.push_str(&c);
                }
                None => self.out.push_str(&code),
            }
            self.out.push('\n');
        }
    }

    /// A value as written, calls with their arguments separated by `, `.
    fn value(&self, v: &Value) -> String {
        match &v.kind {
            ValueKind::Call { name, args } => {
                let args: Vec<String> = args.iter().map(|a| self.value(a)).collect();
                format!("{}({})", name.name, args.join(", "))
            }
            // A `"""` string keeps its text, its line ends written as the
            // rest of the file's are (`\n`).
            _ => self.src(v.span.start, v.span.end).replace("\r\n", "\n"),
        }
    }
}

/// The meaning of a module: every name and value in order, spans left out.
fn shape(module: &Module, text: &str) -> String {
    fn value(v: &Value, text: &str, out: &mut String) {
        match &v.kind {
            ValueKind::Call { name, args } => {
                out.push_str(&name.name);
                out.push('(');
                for a in args {
                    value(a, text, out);
                    out.push(',');
                }
                out.push(')');
            }
            other => out.push_str(&format!("{other:?}")),
        }
        let _ = text;
    }
    fn block(b: &Block, text: &str, out: &mut String) {
        out.push('{');
        for i in &b.items {
            match i {
                BlockItem::Setting(s) => {
                    out.push_str(&s.name.name);
                    out.push('=');
                    value(&s.value, text, out);
                    out.push(';');
                }
                BlockItem::Param(p) => {
                    out.push_str(&format!("param {}", p.name.name));
                    if let Some(t) = &p.ty {
                        for a in &t.alternatives {
                            out.push_str(&format!("|{}", a.name));
                        }
                    }
                    if let Some(b) = &p.body {
                        block(b, text, out);
                    }
                    out.push(';');
                }
            }
        }
        out.push('}');
    }
    let mut out = String::new();
    for item in &module.items {
        match item {
            Item::Workflow { name, .. } => out.push_str(&format!("workflow {}", name.name)),
            Item::Use(u) => {
                out.push_str(&format!("use {}", u.template.name));
                if let Some(b) = &u.body {
                    block(b, text, &mut out);
                }
            }
            Item::Data(d) => {
                out.push_str("data");
                block(&d.body, text, &mut out);
            }
            Item::Sweep(d) => {
                out.push_str("sweep");
                block(&d.body, text, &mut out);
            }
            Item::Step(s) => {
                out.push_str(&format!(
                    "step {} {:?}",
                    s.kind.name,
                    s.alias.as_ref().map(|a| &a.name)
                ));
                if let Some(b) = &s.body {
                    block(b, text, &mut out);
                }
            }
            Item::Template(t) => {
                out.push_str(&format!(
                    "template {} {:?}",
                    t.name.name,
                    t.parent.as_ref().map(|p| &p.name)
                ));
                block(&t.body, text, &mut out);
            }
            Item::StepKind(k) => {
                out.push_str(&format!("step_kind {}", k.name.name));
                block(&k.body, text, &mut out);
            }
            Item::Setting(s) => {
                out.push_str(&s.name.name);
                out.push('=');
                value(&s.value, text, &mut out);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(text: &str) -> String {
        match format_source(text) {
            Ok(t) => t,
            Err(e) => panic!("{e:?}\n{text}"),
        }
    }

    #[test]
    fn a_trailing_comment_stays_with_the_last_setting_of_its_line() {
        let text = "use Clarifai_ResNext {\n    image_size = 48  batch_size = 16  # about batch_size\n}\ntemplate S extends Clarifai_ResNext {\n    param image_size { min = 32  max = 128 # about max\n    }\n}\ndata { train = \"d\" }  # the data\n";
        let out = format_source(text).expect("formats");
        assert!(
            out.contains("    image_size = 48\n    batch_size = 16  # about batch_size\n"),
            "{out}"
        );
        assert!(
            out.contains("        min = 32\n        max = 128  # about max\n"),
            "{out}"
        );
        assert!(
            out.contains("data { train = \"d\" }  # the data\n"),
            "{out}"
        );
        assert_eq!(format_source(&out).expect("formats again"), out);
    }

    #[test]
    fn lays_out_blocks_settings_and_comments() {
        let messy = "# head comment\nworkflow   demo\n\n\n\nuse Clarifai_ResNext{image_size=64 # size\n  batch_size   = 16\n\n    logreg=0}\ndata {train=\"imgs\"   eval=0.2}\ndevice=cuda( 0 )   # gpu\nseed = 7\nstep clustering   {  k=4   inits=8 }\nstep visual_search\n# tail\n";
        let want = "# head comment\nworkflow demo\n\nuse Clarifai_ResNext {\n    image_size = 64  # size\n    batch_size = 16\n\n    logreg = 0\n}\ndata { train = \"imgs\"  eval = 0.2 }\ndevice = cuda(0)  # gpu\nseed   = 7\nstep clustering { k = 4  inits = 8 }\nstep visual_search\n# tail\n";
        assert_eq!(fmt(messy), want);
        assert_eq!(fmt(want), want, "idempotent");
    }

    #[test]
    fn templates_params_and_long_strings_keep_their_text() {
        let text = "template Small extends Clarifai_ResNext {\n  doc = \"\"\"Line one\n      line two # not a comment\"\"\"\n  param image_size { min = 32  max = 128 }\n  param batch_size {\n  # why\n  default = 32\n  }\n}\n";
        let out = fmt(text);
        assert!(
            out.contains("    doc = \"\"\"Line one\n      line two # not a comment\"\"\"\n"),
            "{out}"
        );
        assert!(
            out.contains("    param image_size { min = 32  max = 128 }\n"),
            "{out}"
        );
        assert!(
            out.contains("    param batch_size {\n        # why\n        default = 32\n    }\n"),
            "{out}"
        );
        assert_eq!(fmt(&out), out);
    }

    #[test]
    fn a_file_with_crlf_line_ends_is_written_with_lf_throughout() {
        let text = "template Small extends Clarifai_ResNext {\r\n  doc = \"\"\"One\r\n  two\"\"\"\r\n}\r\n";
        let out = fmt(text);
        assert!(!out.contains('\r'), "{out:?}");
        assert!(out.contains("doc = \"\"\"One\n  two\"\"\"\n"), "{out:?}");
        assert_eq!(fmt(&out), out);
    }

    #[test]
    fn syntax_errors_are_not_formatted() {
        assert!(matches!(
            format_source("use Clarifai_ResNext {\n  image_size = = 3\n}\n"),
            Err(FormatError::Syntax(_))
        ));
    }

    #[test]
    fn every_shipped_file_formats_idempotently() {
        let mut files = vec![crate::spec::PRELUDE.to_string()];
        for dir in ["workflows", "tests/fixtures"] {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "wf") {
                    files.push(std::fs::read_to_string(p).unwrap());
                }
            }
        }
        let mut formatted = 0;
        for text in &files {
            if let Ok(once) = format_source(text) {
                assert_eq!(fmt(&once), once, "not idempotent:\n{once}");
                let kept = |t: &str| {
                    t.lines()
                        .filter(|l| l.trim_start().starts_with('#'))
                        .count()
                };
                assert_eq!(kept(text), kept(&once), "a comment line was lost:\n{once}");
                formatted += 1;
            }
        }
        assert!(formatted >= 10, "{formatted}");
    }
}
