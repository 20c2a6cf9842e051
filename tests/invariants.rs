//! The architecture's invariant that nothing after the checker reads a
//! parameter by name: the run, the steps and the binary get typed values
//! (`wfrun::hyper`, `wfrun::Plan`), so no string literal in their sources is
//! a parameter's name, and the by-name accessors are gone.

use std::path::{Path, PathBuf};

use wfrun::Registry;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals of Rust source outside comments and test modules.
fn literals(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break; // test modules come last in this codebase
        }
        let mut chars = line.chars().peekable();
        let mut current: Option<String> = None;
        while let Some(c) = chars.next() {
            match (&mut current, c) {
                (Some(lit), '\\') => {
                    lit.push(c);
                    if let Some(next) = chars.next() {
                        lit.push(next);
                    }
                }
                (Some(lit), '"') => {
                    found.push((n + 1, std::mem::take(lit)));
                    current = None;
                }
                (Some(lit), _) => lit.push(c),
                (None, '"') => current = Some(String::new()),
                (None, '/') if chars.peek() == Some(&'/') => break,
                // A char literal such as '"' is not a string.
                (None, '\'') => {
                    let rest: String = chars.clone().take(3).collect();
                    if rest.starts_with("\"'") || rest.starts_with("\\\"") {
                        chars.nth(1);
                    }
                }
                (None, _) => {}
            }
        }
    }
    found
}

#[test]
fn nothing_after_the_checker_reads_a_parameter_by_name() {
    let registry = Registry::builtin();
    let mut names: Vec<String> = registry
        .templates
        .iter()
        .flat_map(|t| t.params.iter())
        .chain(registry.step_kinds.iter().flat_map(|k| k.params.iter()))
        .map(|p| p.name.to_string())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() > 15, "{names:?}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in ["exec", "steps", "bin"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10);
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, literal) in literals(&text) {
            if names.contains(&literal) {
                offences.push(format!("{}:{line}: \"{literal}\"", file.display()));
            }
        }
        for accessor in [".int(\"", ".float(\"", ".param(\""] {
            if text.contains(accessor) {
                offences.push(format!("{}: `{accessor}`", file.display()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "parameters read by name after the checker:\n{}",
        offences.join("\n")
    );

    // The by-name accessors of the checked workflow no longer exist.
    let workflow = std::fs::read_to_string(root.join("workflow.rs")).unwrap();
    for gone in ["pub fn int(", "pub fn float(", "pub fn param("] {
        assert!(!workflow.contains(gone), "`Workflow` has `{gone}`");
    }
}

#[test]
fn the_literal_scanner_finds_literals() {
    let found = literals("let a = f(\"image_size\"); // \"not this\"\nlet b = \"x\\\"y\";\n");
    assert_eq!(
        found,
        [(1, "image_size".to_string()), (2, "x\\\"y".to_string())]
    );
}

/// Source lines outside test modules (which come last in this codebase).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .take_while(|l| {
            !l.trim_start().starts_with("#[cfg(test)]")
                && !l.trim_start().starts_with("#[cfg(all(test")
        })
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(n, l)| (n + 1, l.to_string()))
        .collect()
}

/// The run, the data it reads, the steps, the export and the binary handle every failure
/// as an error: no `unwrap` or `expect` there (a worker thread's panic is
/// passed on where it is joined, the one exception).
#[test]
fn no_unwrap_or_expect_on_the_run_path() {
    let mut files = Vec::new();
    for dir in ["src/exec", "src/data", "src/steps", "src/bin", "src/export"] {
        sources(Path::new(dir), &mut files);
    }
    for file in ["src/plan.rs", "src/hyper.rs", "src/atomic.rs", "src/lib.rs"] {
        files.push(PathBuf::from(file));
    }
    let mut found = Vec::new();
    for file in &files {
        for (n, line) in code_lines(file) {
            let joined = line.contains(".join().expect(");
            if (line.contains(".unwrap()") || line.contains(".expect(")) && !joined {
                found.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "return an error instead:\n{}",
        found.join("\n")
    );
}
