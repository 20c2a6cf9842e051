//! Paths in JSON. A JSON string is Unicode, and serde refuses a path that is
//! not UTF-8 (an error that `json!` turns into a panic); wfrun writes such a
//! path lossily instead, U+FFFD where its bad bytes were, as its text and CSV
//! output do. `#[serde(serialize_with = "crate::paths::lossy")]` on a field.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serializer;

/// Paths in words for people: as [`Path::display`] shows them (U+FFFD where
/// a name is not UTF-8), with control characters escaped (`\u{1b}`, `\n`),
/// so that a file name cannot move the cursor, recolour or retitle the
/// terminal, or forge a line of a report. `path.shown()` where
/// `path.display()` would be.
pub trait ShowPath {
    fn shown(&self) -> Shown<'_>;
}

impl ShowPath for Path {
    fn shown(&self) -> Shown<'_> {
        Shown(self)
    }
}

/// A path as [`ShowPath::shown`] writes it.
pub struct Shown<'a>(&'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string_lossy();
        // Longer than any path the system opens (4,096 bytes on Linux): its
        // two ends, so a message stays readable (each escaped on its own,
        // so no escape is cut).
        if text.len() <= LONGEST_SHOWN {
            return f.pad(&escape_controls(&text));
        }
        let count = text.chars().count();
        let head: String = text.chars().take(SHOWN_END).collect();
        let tail: String = text.chars().skip(count - SHOWN_END).collect();
        f.pad(&format!(
            "{}…({} characters left out)…{}",
            escape_controls(&head),
            count - 2 * SHOWN_END,
            escape_controls(&tail)
        ))
    }
}

/// The longest path [`Shown`] writes whole, in bytes, and how many
/// characters of each end it keeps of a longer one.
const LONGEST_SHOWN: usize = 4096;
const SHOWN_END: usize = 200;

/// `text` with its control characters escaped (as `push_escaped` writes them): for names
/// read from the file system (concept folders, files) in words for people.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_to_show) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_to_show(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` must not reach a terminal as itself: a control character, or
/// one that reorders or breaks the text after it where it is shown — the
/// bidirectional embeddings, overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069), which can make a name read as another ("Trojan Source"),
/// the direction marks (U+200E, U+200F, U+061C); the Unicode line and
/// paragraph separators (U+2028, U+2029), which some terminals and editors
/// break a line at; and the invisible ones a message would otherwise show
/// as nothing at all (`found ''`): the zero-width space (U+200B), the word
/// joiner (U+2060) and the byte-order mark (U+FEFF). The zero-width joiner
/// and non-joiner, which shape emoji and several scripts, are text.
pub(crate) fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
        || matches!(
            c,
            '\u{200b}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{2060}'
                | '\u{feff}'
        )
}

/// A control character as words for people show it: as Rust writes it in a
/// string (`\u{1b}`, `\n`, `\t`), but the C1 controls and DEL as
/// `\u009b`, which a JSON reader also reads back (they are left raw in JSON).
pub(crate) fn push_escaped(out: &mut String, c: char) {
    if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) {
        out.push_str(&format!("\\u{:04x}", c as u32));
    } else {
        out.extend(c.escape_default());
    }
}

/// A path as a (lossy) UTF-8 string.
pub fn lossy<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// An optional path as a (lossy) UTF-8 string or null.
pub fn lossy_opt<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => lossy(p, s),
        None => s.serialize_none(),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::ShowPath;

    #[test]
    fn control_characters_in_names_are_shown_escaped() {
        let path = std::path::Path::new("a\u{1b}[31mred\u{1b}]0;title\u{7}\nline\u{9b}.png");
        assert_eq!(
            path.shown().to_string(),
            "a\\u{1b}[31mred\\u{1b}]0;title\\u{7}\\nline\\u009b.png"
        );
        assert_eq!(
            format!("[{:>8}]", std::path::Path::new("a.png").shown()),
            "[   a.png]"
        );
        // A name that reorders what follows it, or breaks the line.
        let reversed =
            std::path::Path::new("invoice\u{202e}gnp.exe\u{2066}x\u{2069}\u{2028}y\u{2029}");
        assert_eq!(
            reversed.shown().to_string(),
            "invoice\\u{202e}gnp.exe\\u{2066}x\\u{2069}\\u{2028}y\\u{2029}"
        );
        // Invisible characters are shown, joiners kept.
        let invisible = std::path::Path::new("a\u{200b}b\u{feff}c\u{200f}d\u{2060}.png");
        assert_eq!(
            invisible.shown().to_string(),
            "a\\u{200b}b\\u{feff}c\\u{200f}d\\u{2060}.png"
        );
        let family = "\u{1f469}\u{200d}\u{1f467}.png";
        assert_eq!(std::path::Path::new(family).shown().to_string(), family);
        // Letters from right-to-left scripts are text, shown as they are.
        assert_eq!(
            std::path::Path::new("שלום.png").shown().to_string(),
            "שלום.png"
        );
        let latin1 = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"l\xe9.png"));
        assert_eq!(latin1.shown().to_string(), "l\u{fffd}.png");
    }

    #[derive(serde::Serialize)]
    struct Named {
        #[serde(serialize_with = "super::lossy")]
        path: std::path::PathBuf,
    }

    #[test]
    fn a_path_that_is_not_utf8_is_written_lossily() {
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"l\xe9.png"));
        let json = serde_json::to_string(&Named { path }).unwrap();
        assert_eq!(json, "{\"path\":\"l\u{fffd}.png\"}");
    }

    #[test]
    fn a_path_longer_than_any_the_system_opens_is_shown_by_its_ends() {
        let short = "a/".repeat(100) + "b.png";
        assert_eq!(std::path::Path::new(&short).shown().to_string(), short);
        let long = "d/".repeat(50_000) + "end.png";
        let shown = std::path::Path::new(&long).shown().to_string();
        assert!(shown.len() < 500, "{}", shown.len());
        assert!(
            shown.starts_with("d/d/") && shown.ends_with("d/end.png"),
            "{shown}"
        );
        assert!(shown.contains("…(99607 characters left out)…"), "{shown}");
    }
}

/// Paths as records name them to stay the same wherever a run starts:
/// relative to the workflow's folder where they lie inside it (read
/// lexically from the current folder), else absolute with their folder's
/// links resolved; or ([`FromWorkflow::relative`]) relative to the
/// workflow's folder through `..` wherever they lie. The same workflow
/// started from another folder, or moved with its data and run folder,
/// names the same paths; without a current folder, as given.
pub struct FromWorkflow {
    here_and_base: Option<(PathBuf, PathBuf)>,
    /// Outside the workflow's folder too, through `..`, links resolved.
    relative: bool,
    /// Folders with their links resolved, each once.
    real: std::cell::RefCell<std::collections::HashMap<PathBuf, PathBuf>>,
}

impl FromWorkflow {
    /// Names for the workflow whose folder is `base_dir`.
    pub fn new(base_dir: &Path) -> FromWorkflow {
        let here_and_base = std::env::current_dir().ok().map(|here| {
            let base = crate::check::normalize(&here.join(base_dir));
            (here, base)
        });
        FromWorkflow {
            here_and_base,
            relative: false,
            real: Default::default(),
        }
    }

    /// Names relative to the workflow's folder wherever they lie, through
    /// `..` (links resolved): the same for the workflow's folder moved
    /// together with data beside it.
    pub fn relative(base_dir: &Path) -> FromWorkflow {
        FromWorkflow {
            relative: true,
            ..FromWorkflow::new(base_dir)
        }
    }

    /// Paths named as given.
    pub fn as_given() -> FromWorkflow {
        FromWorkflow {
            here_and_base: None,
            relative: false,
            real: Default::default(),
        }
    }

    pub fn name(&self, path: &Path) -> PathBuf {
        let Some((here, base)) = &self.here_and_base else {
            return path.to_path_buf();
        };
        let full = crate::check::normalize(&here.join(path));
        if self.relative {
            let (base, full) = (self.real(base), self.real(&full));
            return relative_to(&base, &full);
        }
        match full.strip_prefix(base) {
            Ok(inside) if inside.as_os_str().is_empty() => ".".into(),
            Ok(inside) => inside.to_path_buf(),
            Err(_) => self.real(&full),
        }
    }

    /// `path` with the links of its folder resolved (each folder looked up
    /// once), as it is where that fails.
    fn real(&self, path: &Path) -> PathBuf {
        let (Some(folder), Some(name)) = (path.parent(), path.file_name()) else {
            return std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        };
        let mut known = self.real.borrow_mut();
        let folder = known
            .entry(folder.to_path_buf())
            .or_insert_with(|| {
                std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf())
            })
            .clone();
        folder.join(name)
    }

    pub fn source(&self, source: &crate::workflow::ImageSource) -> crate::workflow::ImageSource {
        use crate::workflow::ImageSource;
        match source {
            ImageSource::Folder(p) => ImageSource::Folder(self.name(p)),
            ImageSource::Manifest(p) => ImageSource::Manifest(self.name(p)),
        }
    }
}

/// The path from the folder `from` to `to` (both absolute, without `.` or
/// `..`), through `..` where it must; `.` for the folder itself.
pub fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let (a, b): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let shared = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in shared..a.len() {
        out.push("..");
    }
    out.extend(&b[shared..]);
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}
