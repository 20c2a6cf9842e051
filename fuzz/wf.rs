//! The `wf` target: parse → check → format → editor questions on one text,
//! and the properties that must hold whatever the text is.

use std::hash::{Hash, Hasher};
use std::path::Path;

use wfrun::diagnostic::Rendered;
use wfrun::format::{format_source, FormatError};
use wfrun::{check_source, CheckOptions, Checked, SourceMap, Span};

use crate::{Outcome, Target};

pub struct Wf {
    options: CheckOptions,
    handler: miette::GraphicalReportHandler,
}

impl Wf {
    pub fn new() -> Wf {
        Wf {
            // Never the file system: a fuzzed path could name any folder.
            options: CheckOptions {
                filesystem: false,
                ..Default::default()
            },
            handler: miette::GraphicalReportHandler::new_themed(
                miette::GraphicalTheme::unicode_nocolor(),
            )
            .with_width(100)
            .with_context_lines(1),
        }
    }
}

/// The grammar's tokens and words the checker knows, for insertion.
const TOKENS: &[&str] = &[
    "workflow ",
    "use ",
    "data ",
    "sweep ",
    "range(",
    "log_range(",
    "values(",
    "maximize(",
    "median(",
    "trials",
    "objective",
    "early_stop",
    "step ",
    "template ",
    " extends ",
    "step_kind ",
    "param ",
    " as ",
    "Clarifai_ResNext",
    "Clarifai_InceptionBatchNorm",
    "Clarifai_ResNet_AngularMargin",
    "image_size",
    "batch_size",
    "init_epochs",
    "step_epochs",
    "num_epochs",
    "per_item_lrate",
    "num_items_per_epoch",
    "logreg",
    "angular_scale",
    "angular_margin",
    "embeddings_size",
    "architecture",
    "lr_decay",
    "doc",
    "min",
    "max",
    "default",
    "train",
    "eval",
    "weights",
    "base",
    "device",
    "output",
    "seed",
    "cpu",
    "auto",
    "cuda(0)",
    "metal(1)",
    "manifest(\"m.csv\")",
    "classifier_head",
    "clustering",
    "visual_search",
    "k",
    "top_k",
    "queries",
    "index",
    "dataset_size",
    "num_concepts",
    "int",
    "float",
    "path",
    ": int",
    ": float",
    " | ",
    "=",
    " = ",
    "==",
    "{",
    "}",
    "{ ",
    " }",
    "(",
    ")",
    ",",
    ":",
    "\"",
    "\"\"\"",
    "\"data/x\"",
    "\"\"",
    "\"\\q\"",
    "\"\\\"",
    "#",
    "# comment\n",
    "\n",
    "\n\n",
    " ",
    "    ",
    "\t",
    "\\",
    ".",
    "-",
    "e",
    "0",
    "64",
    "0.1",
    "1e3",
];

impl Target for Wf {
    fn name(&self) -> &'static str {
        "wf"
    }

    fn extension(&self) -> &'static str {
        "wf"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seeds = vec![wfrun::spec::PRELUDE.as_bytes().to_vec()];
        for dir in ["workflows", "tests/fixtures"] {
            for file in wfrun::workflow_files(&root.join(dir)).unwrap_or_default() {
                if let Ok(bytes) = std::fs::read(&file) {
                    seeds.push(bytes);
                }
            }
        }
        seeds
    }

    fn tokens(&self) -> Vec<&'static [u8]> {
        TOKENS.iter().map(|t| t.as_bytes()).collect()
    }

    fn run(&self, input: &[u8]) -> Outcome {
        let text = String::from_utf8_lossy(input);
        let mut signature = std::collections::hash_map::DefaultHasher::new();
        let failure = self.properties(&text, &mut signature).err();
        Outcome {
            failure,
            signature: signature.finish(),
        }
    }
}

impl Wf {
    fn properties(&self, text: &str, signature: &mut impl Hasher) -> Result<(), String> {
        self.direct_parser_reads_as_pest(text)?;
        let checked = check_source("fuzz.wf", text, &self.options);
        // A checked workflow plans, and its plan prints (a sweep's trials too).
        if let Some(plan) = checked.plan() {
            plan.to_string().len().min(1).hash(signature);
        }
        let codes = codes(&checked);
        // What the input exercised, coarsely: which codes, about how many
        // diagnostics and items.
        let mut distinct = codes.clone();
        distinct.dedup();
        distinct.hash(signature);
        codes.len().checked_ilog2().hash(signature);
        checked.module.items.len().min(8).hash(signature);
        self.diagnostics_are_sound(&checked)?;
        match format_source(text) {
            Ok(once) => {
                true.hash(signature);
                let twice = format_source(&once)
                    .map_err(|e| format!("the formatted text does not format again: {e:?}"))?;
                if twice != once {
                    return Err(format!(
                        "formatting is not idempotent:\n--- once\n{once}\n--- twice\n{twice}"
                    ));
                }
                let after = check_source("fuzz.wf", &once, &self.options);
                if codes != self::codes(&after) {
                    return Err(format!(
                        "formatting changed the diagnostics: {codes:?} before, {:?} after",
                        self::codes(&after)
                    ));
                }
            }
            Err(FormatError::ChangedMeaning) => {
                return Err("the formatter says its result means something else".into())
            }
            Err(FormatError::Syntax(errors)) => {
                if errors.is_empty() || !checked.has_errors() {
                    return Err("the formatter refused a file without syntax errors".into());
                }
            }
        }
        self.editor_answers_are_sound(text, &checked)
    }

    /// The direct parser of clean files gives pest's tree, spans included,
    /// and gives up on no file that pest reads without a diagnostic.
    fn direct_parser_reads_as_pest(&self, text: &str) -> Result<(), String> {
        use wfrun::syntax::{parse_direct, parse_with_pest, parse_with_threads};
        let id = wfrun::SourceId(1);
        let pest = parse_with_pest(id, text, 1);
        if parse_with_threads(id, text, 1) != pest {
            return Err("the direct parser's tree is not pest's".into());
        }
        if pest.1.is_empty() && !text.starts_with('\u{feff}') && parse_direct(id, text).is_none() {
            return Err("the direct parser gave up on a file pest reads cleanly".into());
        }
        Ok(())
    }

    /// Spans inside their file and on character boundaries, JSON that reads
    /// back, a text report for each.
    fn diagnostics_are_sound(&self, checked: &Checked) -> Result<(), String> {
        if checked.workflow.is_some() == checked.has_errors() {
            return Err("`workflow` is not `Some` exactly when there is no error".into());
        }
        for d in &checked.diagnostics {
            let spans = std::iter::once(d.span)
                .chain(d.related.iter().map(|l| l.span))
                .chain(d.fixes.iter().map(|f| f.span));
            for span in spans {
                span_is_sound(&checked.sources, span)
                    .map_err(|e| format!("{e} in {}: {d:?}", d.code))?;
            }
            if d.message.is_empty() {
                return Err(format!("an empty message: {d:?}"));
            }
            let mut out = String::new();
            self.handler
                .render_report(&mut out, &Rendered::new(d, &checked.sources))
                .map_err(|e| format!("the text report failed: {e}"))?;
        }
        for j in checked.json() {
            let line = serde_json::to_string(&j).map_err(|e| format!("JSON: {e}"))?;
            let back: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("JSON does not read back: {e}"))?;
            if back["line"].as_u64() < Some(1) || back["column"].as_u64() < Some(1) {
                return Err(format!("JSON lines and columns start at 1: {line}"));
            }
        }
        Ok(())
    }

    /// Hover, definition, completions, references and rename at two places
    /// (each parses the text again): one chosen from the text's hash, and its
    /// end; the outline, semantic tokens, folding ranges and inlay hints.
    fn editor_answers_are_sound(&self, text: &str, checked: &Checked) -> Result<(), String> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let offsets = [
            floor(text, (h.finish() % (text.len() as u64 + 1)) as usize),
            text.len(),
        ];
        for offset in offsets {
            let _ = wfrun::ide::hover(text, offset);
            let _ = wfrun::ide::completions(text, offset);
            if let Some(t) = wfrun::ide::definition(text, offset) {
                let target = if t.in_prelude {
                    wfrun::spec::PRELUDE
                } else {
                    text
                };
                range_is_sound(target, t.start, t.end)
                    .map_err(|e| format!("definition at {offset}: {e}"))?;
            }
        }
        for offset in offsets {
            if let Some(r) = wfrun::ide::references(text, offset) {
                for &(s, e) in &r.places {
                    range_is_sound(text, s, e)
                        .map_err(|e| format!("reference at {offset}: {e}"))?;
                    if text[s..e] != r.name {
                        return Err(format!(
                            "a reference to `{}` reads `{}`",
                            r.name,
                            &text[s..e]
                        ));
                    }
                }
            }
            if let Ok(places) = wfrun::ide::rename(text, offset, "renamed") {
                for (s, e) in places {
                    range_is_sound(text, s, e).map_err(|e| format!("rename at {offset}: {e}"))?;
                }
            }
        }
        // Semantic tokens: in order, apart, each within one line, never empty.
        let mut last = 0;
        for t in wfrun::ide::semantic_tokens(text) {
            range_is_sound(text, t.start, t.end).map_err(|e| format!("token {t:?}: {e}"))?;
            if t.start < last || t.start >= t.end || text[t.start..t.end].contains('\n') {
                return Err(format!("token {t:?} overlaps, is empty or spans lines"));
            }
            last = t.end;
        }
        for f in wfrun::ide::folding_ranges(text) {
            range_is_sound(text, f.start, f.end).map_err(|e| format!("fold {f:?}: {e}"))?;
        }
        for h in wfrun::ide::hints_of(checked, None) {
            range_is_sound(text, h.offset, h.offset).map_err(|e| format!("hint {h:?}: {e}"))?;
        }
        let mut symbols = wfrun::ide::symbols(text);
        while let Some(s) = symbols.pop() {
            range_is_sound(text, s.start, s.end).map_err(|e| format!("outline {s:?}: {e}"))?;
            range_is_sound(text, s.name_start, s.name_end)
                .map_err(|e| format!("outline name {s:?}: {e}"))?;
            symbols.extend(s.children);
        }
        Ok(())
    }
}

/// The check's verdict: each diagnostic's code and severity, sorted.
fn codes(checked: &Checked) -> Vec<(&'static str, wfrun::Severity)> {
    let mut codes: Vec<_> = checked
        .diagnostics
        .iter()
        .map(|d| (d.code.as_str(), d.severity))
        .collect();
    codes.sort();
    codes
}

fn span_is_sound(sources: &SourceMap, span: Span) -> Result<(), String> {
    range_is_sound(sources.get(span.source).text(), span.start, span.end)
}

fn range_is_sound(text: &str, start: usize, end: usize) -> Result<(), String> {
    if start > end || end > text.len() {
        return Err(format!(
            "range {start}..{end} outside a text of {} bytes",
            text.len()
        ));
    }
    if !text.is_char_boundary(start) || !text.is_char_boundary(end) {
        return Err(format!("range {start}..{end} splits a character"));
    }
    Ok(())
}

fn floor(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
