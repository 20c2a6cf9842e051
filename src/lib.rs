//! wfrun: an embeddable interpreter for workflows that train visual embedding models.
//!
//! A `.wf` file picks a template (ResNet-101 with an angular margin loss,
//! BN-Inception, ResNeXt), sets its hyperparameters within the template's
//! ranges, says where the images are and lists downstream steps. This crate
//! parses and checks such files; every problem comes back as data, all at once.
//!
//! ```
//! let checked = wfrun::check_source(
//!     "demo.wf",
//!     "use Clarifai_ResNext { image_size = 1000 }\ndata { train = \"images\" }\n",
//!     &wfrun::CheckOptions { filesystem: false, ..Default::default() },
//! );
//! assert!(checked.has_errors());
//! let d = &checked.diagnostics[0];
//! assert_eq!(d.code.as_str(), "wf::off-step");
//! assert_eq!(d.help.as_deref(), Some("the nearest valid values are 992 and 1008"));
//! ```
//!
//! The library never prints and never exits; the `wfrun` binary renders what
//! it returns.

// The pest parser is generated without `std` (see Cargo.toml) and names `alloc`.
extern crate alloc;

pub mod arch;
pub mod atomic;
pub mod changed;
pub mod check;
pub mod cost;
pub mod data;
pub mod diagnostic;
#[cfg(feature = "train")]
pub mod exec;
#[cfg(feature = "onnx")]
pub mod export;
pub mod format;
pub mod hyper;
pub mod ide;
#[cfg(feature = "train")]
pub mod models;
pub mod paths;
pub mod plan;
#[cfg(feature = "render")]
pub mod report;
#[cfg(feature = "lsp")]
pub mod rpc;
pub mod source;
pub mod spec;
#[cfg(feature = "train")]
pub mod steps;
pub mod suggest;
pub mod sweep;
pub mod syntax;
pub mod workflow;

use std::path::{Path, PathBuf};

pub use check::CheckOptions;
pub use diagnostic::{Code, Diagnostic, Fix, JsonDiagnostic, Severity};
#[cfg(feature = "train")]
pub use exec::model::Model;
pub use plan::Plan;
pub use source::{SourceFile, SourceId, SourceMap, Span};
pub use spec::Registry;
pub use workflow::Workflow;

/// The result of checking one file: its syntax tree, every diagnostic, and
/// the checked workflow when there was no error.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The prelude and the checked file (`source`).
    pub sources: SourceMap,
    pub source: SourceId,
    pub module: syntax::Module,
    /// Sorted by position; syntax errors and semantic errors together.
    pub diagnostics: Vec<Diagnostic>,
    /// `Some` exactly when no diagnostic is an error.
    pub workflow: Option<Workflow>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    /// The diagnostics in their JSON form.
    pub fn json(&self) -> Vec<JsonDiagnostic> {
        self.diagnostics
            .iter()
            .map(|d| d.to_json(&self.sources))
            .collect()
    }

    /// The plan of the checked workflow (`None` when it has errors).
    pub fn plan(&self) -> Option<Plan> {
        self.workflow.as_ref().map(Plan::new)
    }
}

/// Parses `text` without checking it: the syntax tree and the syntax errors.
pub fn parse(name: &str, text: &str) -> (SourceMap, SourceId, syntax::Module, Vec<Diagnostic>) {
    let mut sources = SourceMap::new();
    let id = sources.add(SourceFile::new(name, text));
    let (module, diagnostics) = syntax::parse(id, text);
    (sources, id, module, diagnostics)
}

/// Parses and checks the workflow `text`, shown in diagnostics as `name`.
///
/// Relative paths resolve against `options.base_dir`, or the folder of `name`.
pub fn check_source(name: &str, text: &str, options: &CheckOptions) -> Checked {
    let (sources, id, module, mut diagnostics) = parse(name, text);
    let base_dir: PathBuf = options.base_dir.clone().unwrap_or_else(|| {
        Path::new(name)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    });
    let mut run = || {
        check::check(
            &module,
            sources.get(id),
            id,
            &base_dir,
            options,
            &mut diagnostics,
        )
    };
    let workflow = match &options.listings {
        Some(listings) => listings.during(run),
        None => run(),
    };
    diagnostic::sort(&mut diagnostics);
    diagnostics.dedup();
    Checked {
        sources,
        source: id,
        module,
        diagnostics,
        workflow,
    }
}

/// Reads and checks a workflow file.
pub fn check_file(path: &Path, options: &CheckOptions) -> std::io::Result<Checked> {
    let text = read_workflow(path)?;
    Ok(check_source(&path.to_string_lossy(), &text, options))
}

/// A workflow file's text; errors say what is wrong in words (text that is
/// not UTF-8 names its first bad byte, a file this user may not read says
/// so).
pub fn read_workflow(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            std::io::Error::new(e.kind(), "permission denied (this user may not read it)")
        }
        std::io::ErrorKind::IsADirectory => std::io::Error::new(
            e.kind(),
            "a folder, not a workflow file (name a `.wf` file in it; `wfrun check` and `wfrun fmt` take folders)",
        ),
        _ => plain_words(path, e),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// An error opening `path` in words for people, where the system's words
/// are terse (`No such file or directory (os error 2)`): a missing file, a
/// link to nothing or a loop of links, a file's name followed by more.
/// Other errors are kept as they are.
fn plain_words(path: &Path, e: std::io::Error) -> std::io::Error {
    use std::io::{Error, ErrorKind};
    // ELOOP: a loop of links (io::ErrorKind::FilesystemLoop is not stable).
    let looped = cfg!(target_os = "linux") && e.raw_os_error() == Some(40);
    match e.kind() {
        // `file.wf/`, `file.wf/../x.wf`: a file's name followed by more.
        ErrorKind::NotADirectory => Error::new(
            ErrorKind::NotADirectory,
            "a file is named as a folder in this path (nothing may follow a file's name; remove the `/` after it)",
        ),
        ErrorKind::NotFound if std::fs::symlink_metadata(path).is_ok() => dangling(),
        ErrorKind::NotFound => Error::new(ErrorKind::NotFound, "no such file or folder"),
        _ if looped => dangling(),
        _ => e,
    }
}

/// A link that leads nowhere, or a loop of links.
fn dangling() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "a link to nothing (or a loop of links)",
    )
}

/// Finds the `.wf` files under `path` (itself, if it is a file), sorted;
/// hidden folders and `target` are skipped. The first problem is an error;
/// [`find_workflow_files`] lists every problem and the files found anyway.
pub fn workflow_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let found = find_workflow_files(path);
    match found.problems.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(found.files),
    }
}

/// The `.wf` files under a path, and what could not be read on the way.
#[derive(Debug, Default)]
pub struct Found {
    pub files: Vec<PathBuf>,
    /// A path that does not exist, a folder that cannot be read, a loop of
    /// links: each with its error. The walk goes on past each.
    pub problems: Vec<(PathBuf, std::io::Error)>,
}

/// Finds the `.wf` files under `path` (itself, if it is a file), sorted, as
/// [`workflow_files`] does; a link to a `.wf` file is one, a link to a
/// folder is not entered (data folders are often links to large trees), and
/// a part that cannot be read is listed among the problems while the rest is
/// still searched.
pub fn find_workflow_files(path: &Path) -> Found {
    let mut found = Found::default();
    if path.is_file() {
        found.files.push(path.to_path_buf());
        return found;
    }
    let error = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(std::io::Error::new(
            e.kind(),
            "permission denied (a folder on the way may not be entered by this user)",
        )),
        Err(e) => Some(plain_words(path, e)),
        // A device, a pipe or a socket holds no workflow file to check or
        // rewrite in place.
        Ok(m) if !m.is_dir() => Some(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither a file nor a folder (a device, a pipe or a socket)",
        )),
        Ok(_) => None,
    };
    if let Some(error) = error {
        found.problems.push((path.to_path_buf(), error));
        return found;
    }
    let walker = walkdir::WalkDir::new(path)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(name.starts_with('.') || (e.file_type().is_dir() && name == "target"))
        });
    for entry in walker {
        match entry {
            Ok(entry) if entry.path().extension().is_some_and(|e| e == "wf") => {
                // A link is taken when it leads to a file (one look at what
                // it leads to), said when it leads nowhere.
                let file = match entry.path_is_symlink() {
                    false => Ok(entry.file_type().is_file()),
                    true => std::fs::metadata(entry.path()).map(|m| m.is_file()),
                };
                match file {
                    Ok(true) => found.files.push(entry.into_path()),
                    Ok(false) => {}
                    Err(_) => found.problems.push((entry.into_path(), dangling())),
                }
            }
            Ok(_) => {}
            Err(e) => {
                let at = e.path().unwrap_or(path).to_path_buf();
                let error = match e.into_io_error() {
                    Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        std::io::Error::new(
                            e.kind(),
                            "permission denied (this user may not read this folder)",
                        )
                    }
                    Some(e) => e,
                    None => std::io::Error::other("cannot be read"),
                };
                found.problems.push((at, error));
            }
        }
    }
    found
}
