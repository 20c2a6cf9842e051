//! Arbitrary input never panics, every diagnostic points inside its file, and
//! pathological input (deep nesting, huge numbers, long lines) is handled.

use proptest::prelude::*;
use wfrun::diagnostic::Rendered;
use wfrun::{check_source, CheckOptions};

fn options() -> CheckOptions {
    CheckOptions {
        filesystem: false,
        ..Default::default()
    }
}

/// Checks `text` and renders every diagnostic; panics if a span is out of bounds.
/// Formatting never panics, never changes meaning (the formatter verifies
/// it and says so), and formatting twice gives the same text.
fn format_twice(text: &str) {
    match wfrun::format::format_source(text) {
        Ok(once) => match wfrun::format::format_source(&once) {
            Ok(twice) => assert_eq!(once, twice, "not idempotent for {text:?}"),
            Err(e) => panic!("formatted text does not format again: {e:?}\n{once}"),
        },
        Err(wfrun::format::FormatError::ChangedMeaning) => {
            panic!("formatting would change the meaning of {text:?}")
        }
        Err(wfrun::format::FormatError::Syntax(_)) => {}
    }
}

fn check_and_render(text: &str) -> usize {
    format_twice(text);
    let c = check_source("fuzz.wf", text, &options());
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    for d in &c.diagnostics {
        let file = c.sources.get(d.span.source);
        assert!(
            d.span.start <= d.span.end && d.span.end <= file.text().len(),
            "{d:?}"
        );
        assert!(
            file.text().is_char_boundary(d.span.start) && file.text().is_char_boundary(d.span.end)
        );
        assert!(!d.message.is_empty());
        let mut out = String::new();
        handler
            .render_report(&mut out, &Rendered::new(d, &c.sources))
            .unwrap();
    }
    c.diagnostics.len()
}

const TOKENS: &[&str] = &[
    "workflow",
    "use",
    "data",
    "step",
    "template",
    "extends",
    "step_kind",
    "param",
    "as",
    "Clarifai_ResNext",
    "Clarifai_ResNet_AngularMargin",
    "image_size",
    "batch_size",
    "train",
    "eval",
    "device",
    "cuda",
    "k",
    "=",
    "==",
    "{",
    "}",
    "(",
    ")",
    ":",
    "|",
    ",",
    "\"",
    "\"\"\"",
    "\"data/x\"",
    "#",
    "\n",
    "\n",
    " ",
    "  ",
    "\t",
    "\r\n",
    "0",
    "-1",
    "1000",
    "7.8125e-05",
    "1e999",
    "99999999999999999999",
    ".5",
    "1.",
    "é",
    "→",
    "\\",
    "\\q",
    "int",
    "float",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        ..ProptestConfig::default()
    })]

    #[test]
    fn token_soup_never_panics(text in soup()) {
        check_and_render(&text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check_and_render(&text);
    }

    #[test]
    fn damaged_workflows_never_panic(cut in 0usize..2000, len in 0usize..40, insert in prop::sample::select(TOKENS)) {
        let text = std::fs::read_to_string("workflows/quickstart.wf").unwrap();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) { at -= 1; }
        let mut end = (at + len).min(text.len());
        while !text.is_char_boundary(end) { end -= 1; }
        let damaged = format!("{}{}{}", &text[..at], insert, &text[end..]);
        check_and_render(&damaged);
    }
}

#[test]
fn deep_nesting_is_one_error() {
    for text in [
        "{".repeat(200_000),
        "a = f(".repeat(50_000),
        format!("use X {}", "{ a = 1 ".repeat(10_000)),
    ] {
        let c = check_source("deep.wf", &text, &options());
        assert_eq!(
            c.diagnostics.len(),
            1,
            "{:?}",
            &c.diagnostics[..c.diagnostics.len().min(3)]
        );
        assert_eq!(c.diagnostics[0].code, wfrun::Code::TooDeep);
    }
}

/// Inputs the fuzzing driver (`fuzz/`, TESTING.md) found: each crashed or hung.
#[test]
fn inputs_the_fuzzer_found() {
    // Braces after a `"""` never closed, or after a `\` that ends a line in a
    // quote, were hidden from the nesting scan but not from pest: a stack
    // overflow instead of one error.
    for text in [
        format!("\"\"\"\n{}", "{".repeat(100_000)),
        format!("x = \"a\\\n{}\"\n", "{".repeat(100_000)),
    ] {
        let c = check_source("deep.wf", &text, &options());
        let codes: Vec<_> = c.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, [wfrun::Code::TooDeep]);
    }
    // The same braces unclosed took time exponential in their nesting (31
    // levels: minutes).
    let text = format!("\"\"\"\nw = \"a {}junk\n", "x { ".repeat(31));
    let started = std::time::Instant::now();
    check_and_render(&text);
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    // An unclosed quote 66,000 bytes into a line: miette padded to its
    // column with a formatting width, which Rust refuses (a panic) past 65,535.
    let text = "use Clari\"".repeat(6_600) + "\"";
    assert!(check_and_render(&text) >= 2);
    let c = check_source("long.wf", &text, &options());
    let last = c.diagnostics.iter().max_by_key(|d| d.span.start).unwrap();
    assert!(last.span.start > 65_535, "{last:?}");
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut out, &Rendered::new(last, &c.sources))
        .unwrap();
    assert!(out.contains("at long.wf:1:"), "{out}");
    // Completions after a character of more than one byte cut it in two.
    let text = "data { train = \u{fffd}/x\" }\nstep é\n";
    for offset in (0..=text.len()).filter(|&o| text.is_char_boundary(o)) {
        wfrun::ide::completions(text, offset);
        wfrun::ide::hover(text, offset);
        wfrun::ide::definition(text, offset);
    }
}

#[test]
fn nesting_up_to_the_limit_parses() {
    let text = format!(
        "a = {}1{}\n",
        "f(".repeat(wfrun::syntax::MAX_DEPTH),
        ")".repeat(wfrun::syntax::MAX_DEPTH)
    );
    let c = check_source("calls.wf", &text, &options());
    assert!(c.diagnostics.iter().all(|d| d.code != wfrun::Code::TooDeep));
}

#[test]
fn huge_numbers_and_long_lines() {
    let digits = "9".repeat(10_000);
    let text = format!("use Clarifai_ResNext {{ image_size = {digits}  batch_size = 1e{digits} }}\ndata {{ train = \"x\" }}\n");
    let c = check_source("big.wf", &text, &options());
    let codes: Vec<_> = c.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, [wfrun::Code::BadNumber, wfrun::Code::BadNumber]);
    assert!(
        c.diagnostics[0].message.len() < 100,
        "long literals are shortened in messages"
    );

    let line = format!("seed = \"{}\"\n", "x".repeat(1_000_000));
    assert_eq!(
        check_and_render(&(line + "use Clarifai_ResNext {}\ndata { train = \"x\" }\n")),
        1
    );
}

#[test]
fn many_broken_lines_are_each_reported() {
    let mut text = String::from("use Clarifai_ResNext {\n");
    for i in 0..500 {
        text.push_str(&format!("  broken{i} == {i}\n"));
    }
    text.push_str("}\ndata { train = \"x\" }\n");
    let c = check_source("many.wf", &text, &options());
    assert_eq!(c.diagnostics.len(), 500);
}

#[test]
fn odd_bytes_and_line_endings() {
    assert!(
        check_and_render(
            "use Clarifai_ResNext {\r\n  image_size = 64\r\n}\r\ndata { train = \"x\" }\r\n"
        ) == 0
    );
    check_and_render("\u{0}\u{0}use\u{0}");
    check_and_render("\"\"\"never closed\n\n");
    check_and_render("}}}}}} use {{");
    check_and_render("\u{feff}workflow x\n");
}

/// Seconds for the best of two runs of `f`.
fn best_of_two(mut f: impl FnMut()) -> f64 {
    (0..2)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Checking, the JSON form and the text report of a file with `n` broken
/// lines (one diagnostic each) take time linear in `n`: four times the lines
/// take well under the sixteen times a quadratic step would.
#[test]
fn many_diagnostics_take_linear_time() {
    let file = |n: usize| {
        let mut text = String::from("use Clarifai_ResNext {\n");
        for i in 0..n {
            text.push_str(&format!("    image_size = = {i}\n"));
        }
        text + "}\ndata { train = \"x\" }\n"
    };
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    let mut seconds = Vec::new();
    for n in [10_000, 40_000] {
        let text = file(n);
        seconds.push(best_of_two(|| {
            let c = check_source("big.wf", &text, &options());
            assert_eq!(c.diagnostics.len(), n);
            let json: usize = c
                .json()
                .iter()
                .map(|d| serde_json::to_string(d).unwrap().len())
                .sum();
            assert!(json > 0);
            let mut out = String::new();
            for d in &c.diagnostics {
                handler
                    .render_report(&mut out, &Rendered::new(d, &c.sources))
                    .unwrap();
            }
        }));
    }
    let ratio = seconds[1] / seconds[0];
    assert!(ratio < 10.0, "seconds for 10k and 40k lines: {seconds:.2?}");
}
