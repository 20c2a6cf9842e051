//! Parsing: text → [`Module`] + diagnostics.
//!
//! **Parsing never fails**: it returns the items that parsed and one
//! diagnostic per broken line. The pest grammar (`grammar/wf.pest`) swallows a
//! broken line as a `bad_item` / `bad_line` and goes on at the next line; each
//! swallowed piece is then parsed again on its own to say what was expected.

pub mod ast;
mod build;
mod direct;
mod explain;
mod structure;

use pest::iterators::Pair;
use pest::Parser as _;

pub use ast::*;

use crate::diagnostic::{Code, Diagnostic};
use crate::source::{SourceId, Span};
use crate::suggest::FastSet;
use build::*;
use explain::*;
use structure::*;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/wf.pest"]
struct WfParser;

/// Blocks and calls may nest at most this deep. Real workflows nest three
/// levels (`template { param { } }`); the limit keeps the recursive-descent
/// parser's stack bounded on hostile input.
pub const MAX_DEPTH: usize = 32;

/// Parses `text` (the contents of the file `source`); a carriage return
/// that ends no line is an error besides.
pub fn parse(source: SourceId, text: &str) -> (Module, Vec<Diagnostic>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let (module, mut diagnostics) = parse_with_threads(source, text, threads);
    if let Some(d) = lone_carriage_returns(source, text) {
        diagnostics.insert(0, d);
    }
    (module, diagnostics)
}

/// Files at least this large are cut at top-level statements and the pieces
/// parsed on several threads (the result is the same, see the tests).
pub const PARALLEL_MIN_BYTES: usize = 64 * 1024;

/// [`parse`] with an explicit number of threads (1: never spawn one).
///
/// A file without syntax errors is read by a direct parser of the grammar's
/// strict layer (`direct.rs`), three to seven times faster than pest; where it
/// gives up (a broken line, a bad literal), pest parses the file and its
/// recovery layer says what is wrong. Both give the same tree.
pub fn parse_with_threads(
    source: SourceId,
    text: &str,
    threads: usize,
) -> (Module, Vec<Diagnostic>) {
    parse_as(source, text, threads, true)
}

/// A carriage return not followed by a line feed (classic Mac OS line
/// endings, or one left in a comment) ends no line for wfrun, which reads
/// it as a space, but ends one in editors and terminals: a setting after
/// one in a comment would be shown as a line and read as part of the
/// comment. One error at the first, counting them all.
fn lone_carriage_returns(source: SourceId, text: &str) -> Option<Diagnostic> {
    let b = text.as_bytes();
    let mut lone = memchr::memchr_iter(b'\r', b).filter(|&i| b.get(i + 1) != Some(&b'\n'));
    let first = lone.next()?;
    let more = lone.count();
    let count = if more == 0 {
        String::new()
    } else {
        format!(" ({} in this file)", more + 1)
    };
    Some(
        Diagnostic::error(
            Code::Syntax,
            Span::new(source, first, first + 1),
            format!(
                "a carriage return that ends no line{count}: wfrun reads it as a space (in a \
                 comment, as part of the comment), editors as a line break"
            ),
        )
        .with_label("a carriage return not followed by a line feed")
        .with_help(
            "end lines with a line feed (LF) or CR LF; `perl -pi -e 's/\\r(?!\\n)/\\n/g' FILE` \
             turns each lone carriage return into a line feed",
        ),
    )
}

/// [`parse_with_threads`] by pest alone, never the direct parser: the
/// reference the direct parser is compared with (tests, `fuzz`).
#[doc(hidden)]
pub fn parse_with_pest(source: SourceId, text: &str, threads: usize) -> (Module, Vec<Diagnostic>) {
    parse_as(source, text, threads, false)
}

/// The direct parser alone: `None` where it gives up (tests, `fuzz`).
#[doc(hidden)]
pub fn parse_direct(source: SourceId, text: &str) -> Option<Module> {
    direct::parse(source, text)
}

fn parse_as(
    source: SourceId,
    text: &str,
    threads: usize,
    try_direct: bool,
) -> (Module, Vec<Diagnostic>) {
    // A UTF-8 byte-order mark (editors on Windows write one) reads as the
    // three spaces its bytes take, so every offset stays the file's own.
    let spaced;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            spaced = format!("   {rest}");
            spaced.as_str()
        }
        None => text,
    };
    let found = structure(text);
    if let Some(at) = found.too_deep {
        return (Module::default(), vec![too_deep(source, at)]);
    }
    // One thread: the direct parser reads the 10,000-line file in about 2
    // ms, and two threads made it slower on a busy two-core machine
    // (BENCHMARKS.md).
    if try_direct && found.unclosed.is_empty() {
        if let Some(module) = direct::parse(source, text) {
            return (module, Vec::new());
        }
    }
    let repair = repair_braces(source, text, &found.unclosed);
    let parsed_text = repair.text.as_deref().unwrap_or(text);
    let mut diagnostics = repair.diagnostics;
    let pieces = if threads > 1 && parsed_text.len() >= PARALLEL_MIN_BYTES {
        // The statements were found in the original text; after a repair, look again.
        let candidates = match &repair.text {
            Some(t) => structure(t).statements,
            None => found.statements,
        };
        split_points(parsed_text, &candidates, threads)
    } else {
        vec![0, parsed_text.len()]
    };
    let insertions = &repair.insertions;
    let parse_piece = |a: usize, b: usize| {
        let mut diagnostics = Vec::new();
        let mut builder = Builder {
            source,
            diagnostics: &mut diagnostics,
            insertions,
            last_end: None,
            text: parsed_text,
            offset: a,
            reported: Default::default(),
            skip_until: 0,
        };
        let module = match WfParser::parse(Rule::file, &parsed_text[a..b]) {
            Ok(mut pairs) => builder.file(pairs.next().expect("file rule")),
            // The recovery layer makes `file` match any input; this is a safety net.
            Err(e) => {
                diagnostics.push(pest_error(source, a, &parsed_text[a..b], &e));
                Module::default()
            }
        };
        (module, diagnostics)
    };
    let results: Vec<(Module, Vec<Diagnostic>)> = if pieces.len() <= 2 {
        vec![parse_piece(0, parsed_text.len())]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = pieces
                .windows(2)
                .map(|w| {
                    let (a, b) = (w[0], w[1]);
                    scope.spawn(move || parse_piece(a, b))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    let mut module = Module::default();
    for (m, d) in results {
        module.items.extend(m.items);
        diagnostics.extend(d);
    }
    (module, diagnostics)
}

/// Offsets that cut `text` into about `n` pieces at the `candidates` (see
/// [`Structure::statements`]): `[0, .., len]`.
fn split_points(text: &str, candidates: &[usize], n: usize) -> Vec<usize> {
    let mut points = vec![0];
    for k in 1..n {
        let target = text.len() * k / n;
        let at = candidates.partition_point(|&c| c < target);
        if let Some(&c) = candidates.get(at) {
            if c > *points.last().unwrap() && c < text.len() {
                points.push(c);
            }
        }
    }
    points.push(text.len());
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> (Module, Vec<Diagnostic>) {
        parse(SourceId(1), text)
    }

    #[test]
    fn parses_a_workflow() {
        let (m, d) = parse_str(
            "# comment\nworkflow products\nuse Clarifai_ResNext {\n  image_size = 224 # trailing\n  per_item_lrate = 7.8125e-05\n}\ndata { train = \"data/x\"  eval = 0.1 }\ndevice = cuda(0)\nstep clustering as coarse { k = 4 }\nstep visual_search\n",
        );
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(m.items.len(), 6);
        let Item::Use(u) = &m.items[1] else { panic!() };
        let s: Vec<_> = u.body.as_ref().unwrap().settings().collect();
        assert_eq!(s[0].value.kind, ValueKind::Int(224));
        assert_eq!(s[1].value.kind, ValueKind::Float(7.8125e-05));
        let Item::Setting(dev) = &m.items[3] else {
            panic!()
        };
        let ValueKind::Call { name, args } = &dev.value.kind else {
            panic!()
        };
        assert_eq!(name.name, "cuda");
        assert_eq!(args[0].kind, ValueKind::Int(0));
        let Item::Step(st) = &m.items[4] else {
            panic!()
        };
        assert_eq!(st.alias.as_ref().unwrap().name, "coarse");
    }

    #[test]
    fn keywords_need_a_word_boundary() {
        let (m, d) = parse_str("user_name = 3\ndatabase = 2\n");
        assert!(d.is_empty(), "{d:?}");
        assert!(matches!(&m.items[0], Item::Setting(s) if s.name.name == "user_name"));
        assert!(matches!(&m.items[1], Item::Setting(s) if s.name.name == "database"));
    }

    #[test]
    fn every_broken_line_is_reported_and_intact_lines_kept() {
        let text = "use T {\n  a == 1\n  b = 2\n  c = \n}\nstep x { k = }\nseed = 3\n";
        let (m, d) = parse_str(text);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(d.iter().all(|d| d.code == Code::Syntax));
        assert_eq!(d[0].message, "expected a value, found `=`");
        assert_eq!(&text[d[0].span.start..d[0].span.end], "=");
        assert_eq!(d[1].message, "expected a value, found the end of the line");
        let Item::Use(u) = &m.items[0] else { panic!() };
        assert_eq!(u.body.as_ref().unwrap().items.len(), 1);
        assert!(matches!(&m.items[2], Item::Setting(s) if s.name.name == "seed"));
    }

    #[test]
    fn a_carriage_return_that_ends_no_line_is_an_error() {
        // A setting hidden behind a comment's lone CR, which a terminal
        // shows as its own line.
        let text = "use T {\n    image_size = 32 # size\r    batch_size = 7777\n}\n";
        let (m, d) = parse_str(text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].message
                .starts_with("a carriage return that ends no line:"),
            "{d:?}"
        );
        assert_eq!(d[0].span.start, text.find('\r').unwrap());
        // The tree is still what wfrun reads: the comment swallows the setting.
        assert!(format!("{m:?}").contains("image_size") && !format!("{m:?}").contains("7777"));
        // Classic Mac OS line endings: one error, counting them.
        let (_, d) = parse_str("workflow w\ruse T { }\r");
        assert!(d[0].message.contains("(2 in this file)"), "{d:?}");
        // CR LF is a line end.
        assert!(parse_str("workflow w\r\nuse T { }\r\n").1.is_empty());
    }

    #[test]
    fn a_call_over_several_lines_is_one_error_with_its_one_line_fix() {
        let text = "sweep {\n  batch_size = values(\n    16,  # small\n    \"a, b\",\n    32,\n  )\n  seed = values(1, 2)\n}\n";
        let (m, d) = parse_str(text);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(
            d[0].message,
            "`values(` is closed on a later line: a call is written on one line"
        );
        let open = text.find("(\n").unwrap();
        let close = text.find(")\n").unwrap() + 1;
        assert_eq!((d[0].span.start, d[0].span.end), (open, close));
        assert_eq!(
            d[0].help.as_deref(),
            Some("write `batch_size = values(16, \"a, b\", 32)`")
        );
        assert_eq!(d[0].fixes[0].replacement, "(16, \"a, b\", 32)");
        assert_eq!(
            (d[0].fixes[0].span.start, d[0].fixes[0].span.end),
            (open, close)
        );
        // The setting keeps no half value; the next line is read as usual.
        let Item::Sweep(s) = &m.items[0] else {
            panic!("{m:?}")
        };
        let items = &s.body.items;
        assert!(
            matches!(&items[0], BlockItem::Setting(b) if b.value.kind == ValueKind::Invalid),
            "{items:?}"
        );
        assert!(matches!(&items[1], BlockItem::Setting(b) if b.name.name == "seed"));
        // The fix applied, the file parses clean.
        let fixed = format!(
            "{}{}{}",
            &text[..open],
            d[0].fixes[0].replacement,
            &text[close..]
        );
        assert!(parse_str(&fixed).1.is_empty(), "{fixed}");
        // Junk after the `)` is said too; a `(` after no name (a number, a
        // brace) is not taken for a call.
        let (_, d) = parse_str("sweep {\n  batch_size = values(\n    16\n  ) extra\n}\n");
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(d[1].message.starts_with("unexpected"), "{d:#?}");
        for text in ["sweep {\n  seed = 3(\n 1\n )\n}\n", "use T { }(\n1\n)\n"] {
            let (_, d) = parse_str(text);
            assert!(
                !d.is_empty() && d.iter().all(|d| !d.message.contains("later line")),
                "{d:#?}"
            );
        }
        // A `(` that no `)` closes before the next setting: each line is its
        // own error as before, and the next setting is kept.
        let text = "sweep {\n  batch_size = values(\n    16,\n  seed = values(1, 2)\n}\n";
        let (m, d) = parse_str(text);
        assert!(
            d.len() >= 2 && !d[0].message.contains("later line"),
            "{d:#?}"
        );
        let Item::Sweep(s) = &m.items[0] else {
            panic!("{m:?}")
        };
        assert!(s
            .body
            .items
            .iter()
            .any(|i| matches!(i, BlockItem::Setting(b) if b.name.name == "seed")));
    }

    #[test]
    fn colon_instead_of_equals_gets_help() {
        let (_, d) = parse_str("use T {\n  image_size: 224\n}\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "expected `=`, found `:`");
        // Characters that would show as nothing are named.
        for (text, found) in [
            ("use\u{200b} X { }\n", "a zero-width space (U+200B)"),
            (
                "workflow w\n\u{feff}use X { }\n",
                "a byte-order mark (U+FEFF)",
            ),
            ("workflow\u{a0}w\n", "a no-break space (U+00A0)"),
        ] {
            let (_, d) = parse_str(text);
            assert!(
                d[0].message.ends_with(&format!("found {found}")),
                "{:?}",
                d[0].message
            );
        }
        assert!(d[0].help.as_deref().unwrap().contains("rather than `:`"));
    }

    #[test]
    fn unterminated_string_and_unclosed_block() {
        let (_, d) = parse_str("data { train = \"abc }\n");
        assert_eq!(d[0].code, Code::UnterminatedString);
        let (_, d) = parse_str("use T {\n  a = 1\n");
        assert_eq!(d[0].code, Code::UnclosedBlock);
        assert_eq!(d[0].span.start, 6);
    }

    #[test]
    fn bad_numbers_and_escapes() {
        let (_, d) = parse_str("a = 99999999999999999999999\nb = 1e999\nc = \"x\\q\"\n");
        let codes: Vec<_> = d.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::BadNumber, Code::BadNumber, Code::BadEscape]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "{".repeat(100_000);
        let (_, d) = parse_str(&text);
        assert_eq!(d[0].code, Code::TooDeep);
    }

    #[test]
    fn parsing_in_pieces_gives_the_same_result() {
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&format!(
                "# {i} }} {{ \"\ntemplate T{i} extends Clarifai_ResNext {{\n  doc = \"\"\"x\nuse y {{\"\"\"\n  param image_size {{ max = {} }}\n  bad line {i}\n}}\nstep clustering as c{i} {{ k = {i} }}\nseed = = {i}\n",
                64 + i
            ));
        }
        text.push_str("use Unclosed {\n  a = \"b\n");
        assert!(text.len() > PARALLEL_MIN_BYTES * 2);
        assert!(split_points(&text, &structure(&text).statements, 4).len() == 5);
        let one = parse_with_threads(SourceId(1), &text, 1);
        let four = parse_with_threads(SourceId(1), &text, 4);
        assert_eq!(one.0.items.len(), 6001);
        assert_eq!(one.1.len(), four.1.len());
        assert!(one == four);
    }

    #[test]
    fn long_strings_span_lines() {
        let (m, d) = parse_str("template T extends U {\n doc = \"\"\"one\n two\"\"\"\n}\n");
        assert!(d.is_empty(), "{d:?}");
        let Item::Template(t) = &m.items[0] else {
            panic!()
        };
        let s: Vec<_> = t.body.settings().collect();
        assert_eq!(s[0].value.kind, ValueKind::Str("one\n two".into()));
    }
}
