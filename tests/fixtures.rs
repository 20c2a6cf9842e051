//! Snapshot tests: every `tests/fixtures/*.wf` is checked by the real binary,
//! and the whole rendered report (`NAME.stderr`) and the JSON (`NAME.json`) are
//! compared with the files beside it. `WFRUN_BLESS=1 cargo test --test fixtures`
//! rewrites the snapshots; review the diff before committing.

mod common;

use std::path::{Path, PathBuf};

use common::wfrun;

fn compare(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("WFRUN_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "--- {} differs ---\nexpected:\n{expected}\nactual:\n{actual}",
            path.display()
        ));
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/fixtures")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wf"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fixture_matches_its_snapshots() {
    let files = fixtures();
    assert!(files.len() >= 10, "fixtures went missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let name = file.to_str().unwrap();
        let human = wfrun(&["check", "--color", "never", name]);
        let code = human.code;
        let report = format!("{}[exit status {code}]\n", human.stderr);
        compare(&file.with_extension("stderr"), &report, &mut failures);

        let json = wfrun(&["check", "--format", "json", name]);
        assert_eq!(
            code, json.code,
            "{name}: both formats give the same exit status"
        );
        let stdout = json.stdout;
        for line in stdout.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("one JSON object per line");
            for field in [
                "file",
                "line",
                "column",
                "byte_start",
                "byte_end",
                "code",
                "severity",
                "message",
                "labels",
                "help",
            ] {
                assert!(
                    v.get(field).is_some(),
                    "{name}: JSON lacks `{field}`: {line}"
                );
            }
        }
        compare(&file.with_extension("json"), &stdout, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
