//! Manifests: a list of images and their concepts, as CSV (RFC 4180, read by
//! the `csv` crate: quoted fields, commas and quotes inside quotes, CRLF) or
//! as JSON lines. GRAMMAR.md's "Manifests" shows both.

use std::path::Path;

use super::DataError;

/// One image line of a manifest.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Row {
    /// The line it starts on (1-based); in a whole-file JSON array, its
    /// element's number instead (see `element`).
    pub line: usize,
    /// Whether `line` numbers an element of a JSON array.
    pub element: bool,
    /// As written, relative to the manifest's folder unless absolute.
    pub path: String,
    /// Concept names, trimmed, at least one.
    pub concepts: Vec<String>,
}

/// Header names of the path column and of the concepts column.
const PATH_NAMES: [&str; 4] = ["path", "image", "file", "filename"];
const CONCEPT_NAMES: [&str; 5] = ["concepts", "concept", "labels", "label", "class"];

/// The rows of the manifest at `path`. With `labels` every image needs a
/// concept; without, a manifest may list paths alone (a header with a path
/// column only, single-field lines, JSON objects without concepts): images
/// to embed, not to train on.
pub(super) fn read_rows(path: &Path, labels: bool) -> Result<Vec<Row>, DataError> {
    let io = |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    };
    // A named pipe or a device would be read until its writer stops (or
    // never): a manifest is a file.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file; a manifest is a file of lines",
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let bad = |line: usize, message: String| DataError::Manifest {
        path: path.to_path_buf(),
        line,
        message,
    };
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
    if json {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            bad(line, "not UTF-8 text".into())
        })?;
        read_json(text, labels, &bad)
    } else {
        read_csv(bytes, labels, &bad)
    }
}

/// Splits a concepts field: `cat`, `cat;dog` or `cat|dog`.
fn concepts(field: &str) -> Vec<String> {
    field
        .split([';', '|'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn row(
    line: usize,
    path: &str,
    names: Vec<String>,
    labels: bool,
    bad: &dyn Fn(usize, String) -> DataError,
) -> Result<Row, DataError> {
    if path.is_empty() {
        return Err(bad(line, "the image path is empty".into()));
    }
    if let Some(name) = names.iter().find(|n| n.chars().any(char::is_control)) {
        return Err(bad(
            line,
            format!(
                "the concept `{}` holds a control character (a tab, a line break or a \
                 terminal escape); write the concept's name without it",
                crate::paths::escape_controls(name)
            ),
        ));
    }
    if labels && names.is_empty() {
        return Err(bad(
            line,
            format!(
                "`{path}` has no concept; give it one (CSV: `{path},CONCEPT`, several `a;b`; \
                 JSON: `\"concepts\": [\"CONCEPT\"]`)"
            ),
        ));
    }
    Ok(Row {
        line,
        element: false,
        path: path.to_string(),
        concepts: names,
    })
}

fn read_csv(
    bytes: &[u8],
    labels: bool,
    bad: &dyn Fn(usize, String) -> DataError,
) -> Result<Vec<Row>, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let lines = Lines::new(bytes);
    let mut columns = (0, 1);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| lines.record_at(p.byte()));
            let message = match e.kind() {
                csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_string(),
                _ => e.to_string(),
            };
            bad(line, message)
        })?;
        let line = record.position().map_or(0, |p| lines.record_at(p.byte()));
        // A quote left open takes the lines after it into one field, to the
        // end of the file if no quote closes it.
        if let Some(field) = record.iter().find(|f| f.contains('\n')) {
            let more = field.matches('\n').count();
            return Err(bad(
                line,
                format!(
                    "a quoted field runs on over the next {} line{}: a quote is left open, or a \
                     field holds a line break (a manifest's fields may not); close the quote (a \
                     quote inside quotes is written twice: `\"\"`) or remove the line break",
                    more,
                    if more == 1 { "" } else { "s" }
                ),
            ));
        }
        // RFC 4180 allows a quote only in a field quoted as a whole: one
        // elsewhere (`circle"note"`) would pass into a path or a concept's
        // name unnoticed.
        if let Some((field, spaced)) = stray_quote(lines.text(line)) {
            return Err(bad(
                line,
                if spaced {
                    format!(
                        "field {field} has a space before its opening quote, so it is not read \
                         as quoted: remove the space (`a.jpg,\"cat\"`)"
                    )
                } else {
                    format!(
                        "field {field} holds a quote but is not quoted as a whole: quote the \
                         field and write the quote twice (`\"say \"\"hi\"\".png\"`), or \
                         remove the quote"
                    )
                },
            ));
        }
        if i == 0 {
            let lower: Vec<String> = record.iter().map(str::to_ascii_lowercase).collect();
            if let Some(p) = lower.iter().position(|f| PATH_NAMES.contains(&f.as_str())) {
                let c = lower
                    .iter()
                    .position(|f| CONCEPT_NAMES.contains(&f.as_str()))
                    .or((!labels).then_some(usize::MAX))
                    .ok_or_else(|| {
                        bad(
                            line,
                            format!(
                                "the header names no concepts column; name it one of {}",
                                CONCEPT_NAMES.join(", ")
                            ),
                        )
                    })?;
                columns = (p, c);
                continue;
            }
        }
        // Without labels a line may hold its path alone.
        let field = record.get(columns.1).or((!labels).then_some(""));
        let (Some(path), Some(field)) = (record.get(columns.0), field) else {
            return Err(bad(
                line,
                format!(
                    "{} field(s); expected `path,concept` (quote a path holding a comma: `\"a,b.jpg\",cat`)",
                    record.len()
                ),
            ));
        };
        rows.push(row(line, path, concepts(field), labels, bad)?);
    }
    Ok(rows)
}

/// Line numbers from byte offsets. (The `csv` crate's own line count is off
/// after quoted fields, CRLF and comments; its byte offsets are exact.)
struct Lines<'a> {
    bytes: &'a [u8],
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Lines<'a> {
        let starts = std::iter::once(0)
            .chain(
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        Lines { bytes, starts }
    }

    /// The line (1-based) of the record the reader began reading at `byte`:
    /// blank and comment lines before it are skipped, as the reader skips them.
    fn record_at(&self, byte: u64) -> usize {
        // In a CRLF file a record's reading begins at the `\n` ending the line before.
        let mut at = (byte as usize).min(self.bytes.len());
        while self
            .bytes
            .get(at)
            .is_some_and(|&b| b == b'\r' || b == b'\n')
        {
            at += 1;
        }
        let mut line = self.starts.partition_point(|&s| s <= at).max(1);
        while let Some(&start) = self.starts.get(line - 1) {
            let rest = &self.bytes[start.min(self.bytes.len())..];
            let skipped = rest.first().is_some_and(|&b| b == b'#')
                || rest.starts_with(b"\n")
                || rest.starts_with(b"\r\n");
            if !skipped || line >= self.starts.len() {
                break;
            }
            line += 1;
        }
        line
    }
}

impl Lines<'_> {
    /// The bytes of a line (1-based), without its line break.
    fn text(&self, line: usize) -> &[u8] {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else {
            return &[];
        };
        let rest = &self.bytes[start.min(self.bytes.len())..];
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        &rest[..end]
    }
}

/// The first field (1-based) of a CSV line holding a quote where RFC 4180
/// allows none: inside a field not quoted as a whole (with whether only
/// blanks come before it: a space before an opening quote), or after a
/// quoted field's closing quote. (A quote left open is said elsewhere.)
/// A field is quoted when its first byte is a quote, as the `csv` crate
/// reads it.
fn stray_quote(line: &[u8]) -> Option<(usize, bool)> {
    if !line.contains(&b'"') {
        return None;
    }
    let blank = |b: u8| b == b' ' || b == b'\t' || b == b'\r';
    let (mut field, mut i, n) = (1, 0, line.len());
    loop {
        if i < n && line[i] == b'"' {
            i += 1;
            loop {
                match line.get(i) {
                    None => return None,
                    Some(b'"') if line.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            i += 1;
            while i < n && blank(line[i]) {
                i += 1;
            }
            if i < n && line[i] != b',' {
                return Some((field, false));
            }
        } else {
            let start = i;
            while i < n && line[i] != b',' {
                if line[i] == b'"' {
                    return Some((field, line[start..i].iter().all(|&b| blank(b))));
                }
                i += 1;
            }
        }
        if i >= n {
            return None;
        }
        i += 1;
        field += 1;
    }
}

fn read_json(
    text: &str,
    labels: bool,
    bad: &dyn Fn(usize, String) -> DataError,
) -> Result<Vec<Row>, DataError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| bad(e.line(), format!("not a JSON array of objects: {e}")))?;
        return values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json_row(v, i + 1, labels, bad)
                    .map(|row| Row {
                        element: true,
                        ..row
                    })
                    .map_err(|e| retitle(e, i + 1))
            })
            .collect();
    }
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| bad(line_no, format!("not a JSON object: {e}")))?;
        rows.push(json_row(&v, line_no, labels, bad)?);
    }
    Ok(rows)
}

/// Names the array element rather than the line for a whole-file JSON array.
fn retitle(e: DataError, element: usize) -> DataError {
    match e {
        DataError::Manifest { path, message, .. } => DataError::Manifest {
            path,
            line: 0,
            message: format!("element {element}: {message}"),
        },
        other => other,
    }
}

fn json_row(
    v: &serde_json::Value,
    line: usize,
    labels: bool,
    bad: &dyn Fn(usize, String) -> DataError,
) -> Result<Row, DataError> {
    let path = v
        .get("path")
        .or_else(|| v.get("image"))
        .and_then(|p| p.as_str())
        .ok_or_else(|| bad(line, "no \"path\" string".into()))?;
    let names = match (v.get("concepts"), v.get("concept")) {
        (Some(serde_json::Value::Array(a)), _) => a
            .iter()
            .map(|c| {
                c.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| bad(line, "concepts must be strings".into()))
            })
            .filter(|c| c.as_ref().is_ok_and(|c| !c.is_empty()) || c.is_err())
            .collect::<Result<_, _>>()?,
        (_, Some(serde_json::Value::String(c))) => concepts(c),
        (None, None) if !labels => Vec::new(),
        _ => {
            return Err(bad(
                line,
                "no \"concepts\" list or \"concept\" string".into(),
            ))
        }
    };
    row(line, path.trim(), names, labels, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(name: &str, text: &str) -> Result<Vec<Row>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        read_rows(&p, true).map_err(|e| e.to_string())
    }

    #[test]
    fn quoted_csv_is_read_as_rfc_4180() {
        let r = rows(
            "m.csv",
            "\u{feff}\"path\",\"concepts\"\r\n\"a, b.jpg\",\"cat;dog\"\r\n\"say \"\"hi\"\".png\",bird\r\n",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].path, "a, b.jpg");
        assert_eq!(r[0].concepts, ["cat", "dog"]);
        assert_eq!(r[1].path, "say \"hi\".png");
        assert_eq!((r[0].line, r[1].line), (2, 3));
    }

    #[test]
    fn a_header_picks_the_columns() {
        let r = rows(
            "m.csv",
            "# made by hand\n\nid,label,image\n1,cat,x.jpg\n\n# more\n2,dog,y.jpg\n",
        )
        .unwrap();
        assert_eq!((r[0].line, r[1].line), (4, 7));
        assert_eq!(
            (r[1].path.as_str(), r[1].concepts[0].as_str()),
            ("y.jpg", "dog")
        );
        let e = rows("m.csv", "path,size\nx.jpg,3\n").unwrap_err();
        assert!(
            e.contains("m.csv:1: the header names no concepts column"),
            "{e}"
        );
        assert!(rows("m.csv", "path,concepts\n").unwrap().is_empty());
    }

    #[test]
    fn a_quote_inside_a_field_not_quoted_whole_is_refused_at_its_line() {
        for (text, line, field) in [
            ("a.jpg,cat\nb.jpg,circle\"note\"\n", 2, 2),
            ("say\"hi\".png,cat\n", 1, 1),
            ("\"a.jpg\"x,cat\n", 1, 1),
            ("a.jpg,\"cat\" ,x\n\"b.jpg\",\"dog\"q\r\n", 2, 2),
        ] {
            let e = rows("m.csv", text).unwrap_err();
            assert!(
                e.contains(&format!(
                    "m.csv:{line}: field {field} holds a quote but is not quoted as a whole"
                )),
                "{text:?}: {e}"
            );
        }
        // A space before the opening quote: the field is not quoted.
        let e = rows("m.csv", "a.jpg, \"cat\"\n").unwrap_err();
        assert!(
            e.contains("m.csv:1: field 2 has a space before its opening quote"),
            "{e}"
        );
        // Quotes RFC 4180 allows, and a quote in a comment, pass.
        let r = rows(
            "m.csv",
            "# a \"note\"\n\"say \"\"hi\"\".png\" ,\"cat\" \r\n",
        )
        .unwrap();
        assert_eq!(r[0].path, "say \"hi\".png");
        assert_eq!(r[0].concepts, ["cat"]);
    }

    #[test]
    fn a_quote_left_open_is_named_at_its_line() {
        let e = rows("m.csv", "a.jpg,cat\n\"b.jpg,dog\nc.jpg,cat\nd.jpg,dog\n").unwrap_err();
        assert!(
            e.contains(
                "m.csv:2: a quoted field runs on over the next 2 lines: a quote is left open"
            ),
            "{e}"
        );
        let e = rows("m.csv", "a.jpg,\"cat\nb.jpg,dog\"\n").unwrap_err();
        assert!(
            e.contains("m.csv:1: a quoted field runs on over the next 1 line:"),
            "{e}"
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let e = rows("m.csv", "a.jpg,cat\nb.jpg\n").unwrap_err();
        assert!(
            e.contains("m.csv:2: 1 field(s); expected `path,concept`"),
            "{e}"
        );
        let e = rows("m.csv", "a.jpg,cat\nb.jpg, ; \n").unwrap_err();
        assert!(e.contains("m.csv:2: `b.jpg` has no concept"), "{e}");
        let e = rows("m.csv", "a.jpg,cat\n\"b.jpg,dog\n").unwrap_err();
        assert!(e.contains("m.csv:"), "{e}");
        let e = rows(
            "m.jsonl",
            "{\"path\": \"a.png\", \"concepts\": [\"x\"]}\n{\"path\": 3}\n",
        )
        .unwrap_err();
        assert!(e.ends_with("m.jsonl:2: no \"path\" string"), "{e}");
        let r = rows("m.json", "[{\"image\": \"a.png\", \"concept\": \"x\"}]").unwrap();
        assert_eq!(r[0].concepts, ["x"]);
        #[cfg(unix)]
        {
            let dir = tempfile::tempdir().unwrap();
            let fifo = dir.path().join("pipe.csv");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                let e = read_rows(&fifo, true).unwrap_err().to_string();
                assert!(
                    e.contains("pipe.csv") && e.contains("not a regular file"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn a_list_of_images_to_embed_may_give_paths_alone() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let header = write("h.csv", "path\na.jpg\n\"b,c.jpg\"\n");
        let bare = write("b.csv", "a.jpg\nd.jpg,cat\n");
        let json = write(
            "j.jsonl",
            "{\"path\": \"a.jpg\"}\n{\"path\": \"e.jpg\", \"concept\": \"dog\"}\n",
        );
        for p in [&header, &bare, &json] {
            // Training needs concepts, an image list does not.
            assert!(read_rows(p, true).is_err(), "{}", p.display());
            let rows = read_rows(p, false).unwrap();
            assert_eq!(rows.len(), 2);
            assert!(rows[0].concepts.is_empty());
        }
        assert_eq!(read_rows(&header, false).unwrap()[1].path, "b,c.jpg");
        assert_eq!(read_rows(&bare, false).unwrap()[1].concepts, ["cat"]);
        assert_eq!(read_rows(&json, false).unwrap()[1].concepts, ["dog"]);
    }
}
