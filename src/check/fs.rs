//! Checks that read the file system: do the paths exist, how many concepts
//! and images the training folder holds, and the seed's batch-size advice.

use crate::paths::ShowPath;
use crate::suggest::FastMap as HashMap;
use std::path::{Path, PathBuf};

use super::{Checker, Written};
use crate::data::{Dataset, Sample};
use crate::diagnostic::{Code, Diagnostic};
use crate::source::Span;
use crate::spec::{Num, ParamValue};
use crate::syntax::{StepDecl, ValueKind};
use crate::workflow::{
    DataSpec, DatasetSummary, Eval, ImageSource, Resolved, ResolvedParam, StepSpec,
};

pub(super) fn relative_help(cx: &Checker) -> String {
    let base = cx.base_dir.shown().to_string();
    if base.is_empty() {
        "paths are relative to the folder of the workflow file (here the current folder)"
            .to_string()
    } else {
        format!("paths are relative to the folder of the workflow file, `{base}`")
    }
}

fn exists_as(cx: &mut Checker, path: &Path, span: Span, folder: bool, what: &str) -> bool {
    let shown = path.shown();
    if !path.exists() {
        // A link is there, but it leads to nothing (or round in a loop).
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            cx.push(
                Diagnostic::error(
                    Code::PathNotFound,
                    span,
                    format!("the {what} `{shown}` is a link that leads nowhere"),
                )
                .with_label("a link to a missing path, or a loop of links")
                .with_help(format!(
                    "point `{shown}` at the real {what}, or name that {what} here"
                )),
            );
            return false;
        }
        let help = relative_help(cx);
        cx.push(
            Diagnostic::error(
                Code::PathNotFound,
                span,
                format!("the {what} `{shown}` does not exist"),
            )
            .with_label("no such path")
            .with_help(help),
        );
        return false;
    }
    if folder && !path.is_dir() {
        let mut d = Diagnostic::error(
            Code::PathNotFound,
            span,
            format!("`{shown}` is a file, not a folder"),
        )
        .with_label(format!("expected a {what}"));
        if path
            .extension()
            .is_some_and(|e| e == "csv" || e == "jsonl" || e == "json")
        {
            d = d.with_help("for a list of images and concepts write `manifest(\"...\")`");
        }
        cx.push(d);
        return false;
    }
    if !folder && path.is_dir() {
        cx.push(
            Diagnostic::error(
                Code::PathNotFound,
                span,
                format!("`{shown}` is a folder, not a file"),
            )
            .with_label(format!("expected a {what}")),
        );
        return false;
    }
    true
}

pub(super) fn check_data(
    cx: &mut Checker,
    data: &DataSpec,
    params: &[(ResolvedParam, Written)],
    batch_max: Option<f64>,
    spans: HashMap<String, Span>,
    model_concepts: Option<&[String]>,
) -> Option<DatasetSummary> {
    // With a base model (its concepts given) nothing trains: see `count_concepts`.
    let base = model_concepts.is_some();
    let fallback = Span::new(cx.source, 0, 0);
    let span = |k: &str| spans.get(k).copied().unwrap_or(fallback);
    check_weights_and_eval(cx, data, &span);
    let (mut summary, trained) = match &data.train {
        ImageSource::Manifest(p) => {
            if !exists_as(cx, p, span("train"), false, "manifest") {
                return None;
            }
            count_manifest(cx, p, span("train"))?
        }
        ImageSource::Folder(p) => {
            if !exists_as(cx, p, span("train"), true, "training folder") {
                return None;
            }
            count_concepts(cx, p, span("train"), base)?
        }
    };
    // Unlabelled images (a base model's flat folder) have no concepts for
    // the evaluation images to share.
    let labelled = !summary.concepts.is_empty();
    if let (true, Eval::Images(src)) = (labelled, &data.eval) {
        if src.path().exists() {
            match src.read() {
                Ok(eval) => {
                    eval_concepts(cx, &eval, &summary, span("eval"));
                    eval_apart(cx, &eval, &trained, span("eval"));
                }
                Err(e) => data_error(cx, span("eval"), &e),
            }
        }
    }
    if let Some(src) = &data.unseen {
        if src.path().exists() {
            match src.read() {
                Ok(unseen) => {
                    // A base model was trained on its own concepts.
                    let learnt: Vec<&str> = match model_concepts {
                        Some(c) => c.iter().map(String::as_str).collect(),
                        None => summary
                            .concepts
                            .iter()
                            .filter(|(_, n)| *n > 0)
                            .map(|(c, _)| c.as_str())
                            .collect(),
                    };
                    summary.unseen = unseen_apart(cx, &unseen, &learnt, &trained, span("unseen"));
                }
                Err(e) => data_error(cx, span("unseen"), &e),
            }
        }
    }
    let used = summary.concepts.iter().filter(|(_, n)| *n > 0).count();
    batch_advice(cx, params, batch_max, used, span("train"));
    Some(summary)
}

/// A data error as a diagnostic at `at`.
fn data_error(cx: &mut Checker, at: Span, e: &crate::data::DataError) {
    use crate::data::DataError;
    let help = match e {
        DataError::Manifest { .. } | DataError::EmptyManifest(_) => {
            "GRAMMAR.md's \"Manifests\" shows the CSV and JSON-lines forms".to_string()
        }
        DataError::Io { error, .. } if error.kind() == std::io::ErrorKind::PermissionDenied => {
            "make it readable (`chmod -R u+rX`), or move it out of the data folder".to_string()
        }
        DataError::Io { .. } => {
            "fix the path, or move what is there out of the data folder".to_string()
        }
        DataError::BadConceptNames(_) => {
            "a concept folder's name becomes the concept's name in every result: rename it in \
             UTF-8 text without tabs, line breaks or terminal escapes (`mv`)"
                .to_string()
        }
        DataError::BadImageNames(_) => {
            "an image's path is written to the run's CSV and JSON files, which hold UTF-8 text: \
             rename it (`mv`, or `convmv -f latin1 -t utf8 -r --notest FOLDER` for a whole \
             folder)"
                .to_string()
        }
        _ => relative_help(cx),
    };
    cx.push(
        Diagnostic::error(Code::Data, at, e.to_string())
            .with_label("unusable data")
            .with_help(help),
    );
}

/// Up to three paths, quoted, and how many more.
fn some_paths(images: &[&Sample]) -> String {
    let mut shown: Vec<String> = images
        .iter()
        .take(3)
        .map(|s| match s.listed {
            Some(at) => format!("`{}` ({at})", s.path.shown()),
            None => format!("`{}`", s.path.shown()),
        })
        .collect();
    if images.len() > 3 {
        shown.push(format!("and {} more", images.len() - 3));
    }
    shown.join(", ")
}

/// A manifest read as the run reads it, its listed images looked for: none
/// found, or none of some concept, is an error; some missing, a warning.
/// Also the training images' paths.
fn count_manifest(
    cx: &mut Checker,
    path: &Path,
    at: Span,
) -> Option<(DatasetSummary, Vec<PathBuf>)> {
    let data = match Dataset::from_manifest(path) {
        Ok(d) => d,
        Err(e) => {
            data_error(cx, at, &e);
            return None;
        }
    };
    let mut counts = vec![0usize; data.concepts.len()];
    let mut strata = vec![0usize; data.concepts.len().max(1)];
    let mut missing = Vec::new();
    let mut found = 0;
    for s in &data.samples {
        if s.path.is_file() {
            found += 1;
            for &c in &s.concepts {
                counts[c] += 1;
            }
            strata[s.concepts.first().copied().unwrap_or(0)] += 1;
        } else {
            missing.push(s);
        }
    }
    let shown = path.shown();
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .shown();
    let listed = data.samples.len();
    if found == 0 {
        cx.push(
            Diagnostic::error(
                Code::Data,
                at,
                format!(
                    "none of the {listed} images `{shown}` lists exist: {}",
                    some_paths(&missing)
                ),
            )
            .with_label("no training images")
            .with_help(format!(
                "paths in a manifest are relative to its folder, `{base}`"
            )),
        );
        return None;
    }
    if !data.duplicates.is_empty() {
        let mut which: Vec<String> = data
            .duplicates
            .iter()
            .take(3)
            .map(|(again, first)| format!("{again} (as {first})"))
            .collect();
        if data.duplicates.len() > 3 {
            which.push(format!("and {} more", data.duplicates.len() - 3));
        }
        cx.push(
            Diagnostic::warning(
                Code::Data,
                at,
                format!(
                    "{} line(s) of `{shown}` list an image listed before: {}",
                    data.duplicates.len(),
                    which.join(", ")
                ),
            )
            .with_label("each image (one file, by any spelling of its path or a link) is used once, with the concepts of all its lines")
            .with_help(
                "remove the repeated lines (different concepts on them make the image multi-label)",
            ),
        );
    }
    let empty: Vec<&str> = data
        .concepts
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n == 0)
        .map(|(c, _)| c.as_str())
        .collect();
    if !empty.is_empty() {
        cx.push(
            Diagnostic::error(
                Code::Data,
                at,
                format!(
                    "no listed image of {} exists",
                    crate::spec::declare::list(&empty)
                ),
            )
            .with_label("a concept with no training images")
            .with_help(format!("missing: {}", some_paths(&missing))),
        );
    } else if !missing.is_empty() {
        cx.push(
            Diagnostic::warning(
                Code::Data,
                at,
                format!(
                    "{} of the {listed} images `{shown}` lists do not exist: {}",
                    missing.len(),
                    some_paths(&missing)
                ),
            )
            .with_label("they will be skipped")
            .with_help(format!(
                "paths in a manifest are relative to its folder, `{base}`"
            )),
        );
    }
    let multi_label = data.is_multi_label();
    let paths = data.samples.into_iter().map(|s| s.path).collect();
    let summary = DatasetSummary {
        multi_label,
        concepts: data.concepts.into_iter().zip(counts).collect(),
        images: found,
        strata,
        unseen: None,
    };
    Some((summary, paths))
}

/// Evaluation images that are training images too make held-out figures
/// read high: all of them is an error, some a warning.
fn eval_apart(cx: &mut Checker, eval: &Dataset, train: &[PathBuf], at: Span) {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let trained: std::collections::HashSet<PathBuf> = train.iter().map(|p| real(p)).collect();
    let shared = eval
        .samples
        .iter()
        .filter(|s| trained.contains(&real(&s.path)))
        .count();
    if shared == 0 {
        return;
    }
    let n = eval.samples.len();
    let message = format!("{shared} of the {n} evaluation images are training images too");
    let d = if shared == n {
        Diagnostic::error(Code::Data, at, message)
    } else {
        Diagnostic::warning(Code::Data, at, message)
    };
    cx.push(
        d.with_label("held-out figures would count images the network trained on")
            .with_help(
                "evaluate on images kept out of training, or hold a fraction out: `eval = 0.1`",
            ),
    );
}

/// Images of unseen concepts must be of two concepts or more, none of them
/// a training concept, and none of the images a training image: otherwise
/// their figures would not be about concepts never trained on.
fn unseen_apart(
    cx: &mut Checker,
    unseen: &Dataset,
    learnt: &[&str],
    trained: &[PathBuf],
    at: Span,
) -> Option<(usize, usize)> {
    // A manifest's images that do not exist are skipped, as in training.
    let missing: Vec<&Sample> = unseen
        .samples
        .iter()
        .filter(|s| !s.path.is_file())
        .collect();
    if !missing.is_empty() {
        cx.push(
            Diagnostic::warning(
                Code::Data,
                at,
                format!(
                    "{} of the {} unseen images do not exist: {}",
                    missing.len(),
                    unseen.samples.len(),
                    some_paths(&missing)
                ),
            )
            .with_label("they will be skipped")
            .with_help("paths in a manifest are relative to its folder"),
        );
    }
    let mut used = vec![0usize; unseen.concepts.len()];
    for s in unseen.samples.iter().filter(|s| s.path.is_file()) {
        if let Some(&c) = s.concepts.first() {
            used[c] += 1;
        }
    }
    let concepts = used.iter().filter(|&&n| n > 0).count();
    if concepts < 2 {
        cx.push(
            Diagnostic::error(
                Code::Data,
                at,
                format!(
                    "the unseen images hold {} concept{}",
                    if concepts == 0 { "no" } else { "a single" },
                    if concepts == 0 { "s" } else { "" }
                ),
            )
            .with_label("judging embeddings needs two concepts or more")
            .with_help(
                "give each unseen concept a sub-folder of images (or a label in the manifest)",
            ),
        );
        return None;
    }
    let shared: Vec<&str> = unseen
        .concepts
        .iter()
        .filter(|c| learnt.contains(&c.as_str()))
        .map(String::as_str)
        .collect();
    if !shared.is_empty() {
        cx.push(
            Diagnostic::error(
                Code::Data,
                at,
                format!(
                    "{} {} of the unseen images",
                    crate::spec::declare::list(&shared),
                    if shared.len() == 1 {
                        "is a training concept and a concept"
                    } else {
                        "are training concepts and concepts"
                    }
                ),
            )
            .with_label("unseen concepts must be concepts the model never trains on")
            .with_help(
                "move those concepts out of the unseen images (or out of the training images)",
            ),
        );
    }
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let trained_paths: std::collections::HashSet<PathBuf> =
        trained.iter().map(|p| real(p)).collect();
    // The same file under another name (a hard link) too.
    let trained_files: std::collections::HashSet<(u64, u64)> = trained
        .iter()
        .filter_map(|p| crate::data::file_id(p))
        .collect();
    let also = unseen
        .samples
        .iter()
        .filter(|s| {
            trained_paths.contains(&real(&s.path))
                || crate::data::file_id(&s.path).is_some_and(|id| trained_files.contains(&id))
        })
        .count();
    if also > 0 {
        cx.push(
            Diagnostic::error(
                Code::Data,
                at,
                format!("{also} of the unseen images are training images"),
            )
            .with_label("unseen images must be images the model never trains on")
            .with_help("keep the unseen images in a folder of their own (the same file under another name or a hard link counts; a copy is not recognised)"),
        );
    }
    let images = used.iter().sum();
    Some((images, concepts))
}

/// The evaluation images' concepts against the training ones: none shared
/// is an error (nothing would be evaluated), some unknown a warning.
fn eval_concepts(cx: &mut Checker, eval: &Dataset, train: &DatasetSummary, at: Span) {
    let known = |c: &String| train.concepts.iter().any(|(t, n)| t == c && *n > 0);
    let unknown: Vec<&str> = eval
        .concepts
        .iter()
        .filter(|c| !known(c))
        .map(String::as_str)
        .collect();
    let kept = eval
        .samples
        .iter()
        .filter(|s| s.concepts.iter().any(|&c| known(&eval.concepts[c])))
        .count();
    let trained: Vec<&str> = train.concepts.iter().map(|(c, _)| c.as_str()).collect();
    if kept == 0 {
        cx.push(
            Diagnostic::error(
                Code::Data,
                at,
                format!(
                    "no evaluation image has a training concept ({})",
                    crate::spec::declare::list(&trained)
                ),
            )
            .with_label("nothing would be evaluated")
            .with_help("name the evaluation folders (or manifest concepts) as the training ones"),
        );
    } else if !unknown.is_empty() {
        cx.push(
            Diagnostic::warning(
                Code::Data,
                at,
                format!(
                    "{} evaluation image(s) of concepts not trained on ({}) are left out",
                    eval.samples.len() - kept,
                    crate::spec::declare::list(&unknown)
                ),
            )
            .with_label("only the training concepts are evaluated"),
        );
    }
}

/// The `weights` file and the evaluation images, when named.
fn check_weights_and_eval(cx: &mut Checker, data: &DataSpec, span: &dyn Fn(&str) -> Span) {
    if let Some(w) = &data.weights {
        if exists_as(cx, w, span("weights"), false, "weights file")
            && w.extension().is_none_or(|e| e != "safetensors")
        {
            cx.push(
                Diagnostic::warning(
                    Code::PathNotFound,
                    span("weights"),
                    format!("`{}` does not end in `.safetensors`", w.shown()),
                )
                .with_label("wfrun reads weights in the safetensors format")
                .with_help("convert PyTorch weights to safetensors first"),
            );
        }
    }
    if let Eval::Images(src) = &data.eval {
        let folder = matches!(src, ImageSource::Folder(_));
        exists_as(
            cx,
            src.path(),
            span("eval"),
            folder,
            if folder {
                "evaluation folder"
            } else {
                "manifest"
            },
        );
    }
    if let Some(src) = &data.unseen {
        let folder = matches!(src, ImageSource::Folder(_));
        exists_as(
            cx,
            src.path(),
            span("unseen"),
            folder,
            if folder {
                "folder of unseen concepts"
            } else {
                "manifest"
            },
        );
    }
}

/// The training folder's concepts with their image counts; images outside
/// concept folders and empty concepts are warnings, fewer than two concepts
/// with images an error (`None` when none has any).
/// Also the training images' paths.
/// A training folder's concepts and images. For a `base` workflow (`base`),
/// which trains nothing, one concept is enough and a folder of images
/// without concept sub-folders is a set of unlabelled images.
fn count_concepts(
    cx: &mut Checker,
    root: &Path,
    at: Span,
    base: bool,
) -> Option<(DatasetSummary, Vec<PathBuf>)> {
    let span = |_: &str| at;
    let shown = root.shown().to_string();
    let mut paths = Vec::new();
    let listing = crate::data::list_folder(root).and_then(|(folders, loose)| {
        crate::data::named_in_text(&folders, &loose)?;
        Ok((folders, loose))
    });
    let (concepts, loose) = match listing {
        Ok((folders, loose)) => {
            let counts: Vec<(String, usize)> = folders
                .into_iter()
                .map(|f| {
                    let n = f.images.len();
                    paths.extend(f.images);
                    (f.name, n)
                })
                .collect();
            (counts, loose)
        }
        Err(e) => {
            data_error(cx, span("train"), &e);
            return None;
        }
    };
    if base && !loose.is_empty() && concepts.iter().all(|(_, n)| *n == 0) {
        let summary = DatasetSummary {
            concepts: Vec::new(),
            images: loose.len(),
            multi_label: false,
            strata: vec![loose.len()],
            unseen: None,
        };
        return Some((summary, loose));
    }
    let loose = loose.len();
    if loose > 0 {
        cx.push(
            Diagnostic::warning(
                Code::Data,
                span("train"),
                match loose {
                    1 => format!("an image lies directly in `{shown}` and is ignored"),
                    n => format!("{n} images lie directly in `{shown}` and are ignored"),
                },
            )
            .with_label("images belong in one sub-folder per concept")
            .with_help(format!("move them into `{shown}/CONCEPT/`")),
        );
    }
    for (name, count) in &concepts {
        if *count == 0 {
            cx.push(
                Diagnostic::warning(
                    Code::Data,
                    span("train"),
                    format!("the concept folder `{shown}/{name}` holds no images"),
                )
                .with_label("this concept will have no training images")
                .with_help(format!(
                    "add images to it or remove it; images end in {}",
                    crate::spec::declare::list(&crate::data::IMAGE_EXTENSIONS)
                )),
            );
        }
    }
    // `;` and `|` separate an image's concepts in manifests and in the
    // run's CSV files: such a name would read back as two concepts.
    let split: Vec<&str> = concepts
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.contains([';', '|']))
        .collect();
    if let Some(first) = split.first() {
        cx.push(
            Diagnostic::warning(
                Code::Data,
                span("train"),
                format!(
                    "the concept folder name{} {} hold{} `;` or `|`",
                    if split.len() > 1 { "s" } else { "" },
                    crate::spec::declare::list(&split),
                    if split.len() > 1 { "" } else { "s" }
                ),
            )
            .with_label("`;` and `|` separate an image's concepts")
            .with_help(format!(
                "in the run's CSV files (`embeddings.csv`, `predictions.csv`) and in manifests `{first}` reads back as several concepts: rename the folder without them"
            )),
        );
    }
    let used: Vec<&(String, usize)> = concepts.iter().filter(|(_, n)| *n > 0).collect();
    match used.len() {
        0 => {
            cx.push(
                Diagnostic::error(Code::Data, span("train"), format!("`{shown}` holds no images in concept sub-folders"))
                    .with_label("no training images")
                    .with_help(format!("put images in one sub-folder per concept: `{shown}/cat/1.jpg`, `{shown}/dog/1.jpg`")),
            );
            return None;
        }
        1 if !base => cx.push(
            Diagnostic::error(
                Code::Data,
                span("train"),
                format!("`{shown}` holds a single concept, `{}`", used[0].0),
            )
            .with_label("training needs at least two concepts")
            .with_help("add a sub-folder of images for each other concept"),
        ),
        _ => {}
    }
    let images = concepts.iter().map(|(_, n)| n).sum();
    let summary = DatasetSummary {
        strata: concepts.iter().map(|(_, n)| *n).collect(),
        concepts,
        images,
        multi_label: false,
        unseen: None,
    };
    Some((summary, paths))
}

/// The seed's advice: a batch of around twice the number of concepts, within
/// the template's maximum.
pub(super) fn batch_advice(
    cx: &mut Checker,
    params: &[(ResolvedParam, Written)],
    batch_max: Option<f64>,
    used: usize,
    at_train: Span,
) {
    let span = |_: &str| at_train;
    let batch = params.iter().find(|(p, _)| &*p.name == "batch_size");
    if let Some((
        ResolvedParam {
            value: Resolved::Value(ParamValue::Num(Num::Int(b))),
            ..
        },
        written,
    )) = batch
    {
        let n = used as i64;
        if *b < 2 * n && *written != Written::Invalid {
            let at = written.span().unwrap_or(span("train"));
            let suggested = batch_max.map_or(2 * n, |m| (2 * n).min(m as i64));
            cx.push(
                Diagnostic::warning(Code::BatchAdvice, at, format!("`batch_size` = {b} is less than twice the {n} concepts"))
                    .with_label("a batch sees few concepts at a time")
                    .with_help(format!(
                        "the template's guide advises a batch of around twice the number of concepts: `batch_size = {suggested}`"
                    )),
            );
        }
    }
}

/// Checks the folders named by step parameters (`visual_search`'s `queries`).
pub(super) fn check_step_paths(cx: &mut Checker, steps: &[&StepDecl], specs: &[Option<StepSpec>]) {
    for (decl, spec) in steps.iter().zip(specs) {
        let Some(spec) = spec else { continue };
        for s in decl.body.iter().flat_map(|b| b.settings()) {
            let ValueKind::Str(p) = &s.value.kind else {
                continue;
            };
            let accepted = spec.params.iter().any(|r| {
                *r.name == *s.name.name && r.value == Resolved::Value(ParamValue::Path(p.clone()))
            });
            if accepted {
                let path = cx.resolve(p);
                exists_as(cx, &path, s.value.span, true, "folder");
                // Its images' paths go to the step's files, as text.
                if path.is_dir() {
                    let named = crate::data::list_folder(&path).and_then(|(folders, loose)| {
                        crate::data::paths_in_text(
                            folders.iter().flat_map(|f| &f.images).chain(&loose),
                        )
                    });
                    if let Err(e @ crate::data::DataError::BadImageNames(_)) = named {
                        data_error(cx, s.value.span, &e);
                    }
                }
            }
        }
    }
}

/// Steps that need the images' concepts, on unlabelled images (a base
/// model's folder without concept sub-folders): a head has nothing to learn,
/// and clustering's `k` has no concepts to default to.
pub(super) fn steps_on_unlabelled(
    cx: &mut Checker,
    steps: &[&StepDecl],
    specs: &[Option<StepSpec>],
    at_train: Span,
) {
    use crate::hyper::{Count, StepParams};
    for (decl, spec) in steps.iter().zip(specs) {
        let Some(spec) = spec else { continue };
        let at = decl
            .keyword
            .to(decl.alias.as_ref().unwrap_or(&decl.kind).span);
        let problem = match &spec.typed {
            StepParams::ClassifierHead(_) => (
                "a classifier head needs labelled images",
                "give the training images concept sub-folders (or a manifest with concepts), or remove this step",
            ),
            StepParams::Clustering(p) if matches!(p.k, Count::Derived(_)) => (
                "`k` defaults to the number of concepts, and these images have none",
                "set the number of clusters: `step clustering { k = 8 }`",
            ),
            _ => continue,
        };
        cx.push(
            Diagnostic::error(Code::Data, at, problem.0)
                .with_label("the images are not labelled")
                .with_related(at_train, "images without concept sub-folders")
                .with_help(problem.1),
        );
    }
}

/// `path` as the file system resolves it (links, `..`), for the part that
/// exists; the rest appended as written.
fn real(path: &Path) -> std::path::PathBuf {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(found) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(found, |p, c| p.join(c));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The run folder, and each folder on its way, must be a folder where
/// anything is there: a file there (or a link to nothing) would stop the run
/// at its first write, after the checker had said nothing. `at`: the
/// `output` setting's value; without one (the default `runs/NAME`), the
/// file's start.
pub(super) fn output_a_folder(cx: &mut Checker, output: &Path, at: Option<Span>) {
    let span = at.unwrap_or(Span::new(cx.source, 0, 0));
    let blocked = output
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .find(|p| std::fs::symlink_metadata(p).is_ok() && !p.is_dir());
    let Some(blocked) = blocked else {
        return;
    };
    let what = if blocked.exists() {
        "a file, not a folder"
    } else {
        "a link that leads nowhere"
    };
    let message = if blocked == output {
        format!("the run folder `{}` is {what}", output.shown())
    } else {
        format!(
            "the run folder `{}` cannot be made: `{}` on its way is {what}",
            output.shown(),
            blocked.shown()
        )
    };
    let help = if at.is_some() {
        "set `output` to a folder's path (it is made if missing), e.g. `output = \"runs/NAME\"`"
    } else {
        "the run folder is `runs/` and the workflow's name beside the workflow file unless \
         `output` says otherwise: set `output = \"runs/NAME\"`, or move the file away"
    };
    cx.push(
        Diagnostic::error(Code::PathNotFound, span, message)
            .with_label("a run writes its files in this folder")
            .with_help(help),
    );
}

/// The run folder must lie apart from the images and the base model: inside
/// a training folder its files would become concepts of the next run, and
/// `--fresh` in a base model's folder would remove that model.
pub(super) fn output_apart(
    cx: &mut Checker,
    output: &Path,
    data: &DataSpec,
    base: Option<&(std::path::PathBuf, Span)>,
    spans: &HashMap<String, Span>,
) {
    let fallback = Span::new(cx.source, 0, 0);
    let out = real(output);
    let mut folders: Vec<(&str, &Path, &str)> = Vec::new();
    if let ImageSource::Folder(p) = &data.train {
        folders.push(("train", p, "training folder"));
    }
    if let Eval::Images(ImageSource::Folder(p)) = &data.eval {
        folders.push(("eval", p, "evaluation folder"));
    }
    if let Some(ImageSource::Folder(p)) = &data.unseen {
        folders.push(("unseen", p, "folder of unseen concepts"));
    }
    for (key, folder, what) in folders {
        if out.starts_with(real(folder)) {
            cx.push(
                Diagnostic::error(
                    Code::Data,
                    spans.get(key).copied().unwrap_or(fallback),
                    format!(
                        "the run folder `{}` lies inside the {what} `{}`",
                        output.shown(),
                        folder.shown()
                    ),
                )
                .with_label("its files and folders would become images and concepts of the next run")
                .with_help("set `output` to a folder outside the images, e.g. `output = \"runs/NAME\"` beside a `data` folder"),
            );
        }
    }
    // The other way round: what the run reads, inside the run folder, where
    // its files (`steps`, `pictures`, `embeddings.csv`) and `--fresh` reach.
    let mut read: Vec<(Span, &Path, &str)> = vec![(
        spans.get("train").copied().unwrap_or(fallback),
        data.train.path(),
        "training images",
    )];
    if let Eval::Images(src) = &data.eval {
        read.push((
            spans.get("eval").copied().unwrap_or(fallback),
            src.path(),
            "evaluation images",
        ));
    }
    if let Some(src) = &data.unseen {
        read.push((
            spans.get("unseen").copied().unwrap_or(fallback),
            src.path(),
            "images of unseen concepts",
        ));
    }
    if let Some((base, at)) = base {
        read.push((*at, base, "base model"));
    }
    for (at, path, what) in read {
        let inside = real(path);
        if inside != out && inside.starts_with(&out) {
            cx.push(
                Diagnostic::error(
                    Code::Data,
                    at,
                    format!(
                        "`{}` ({what}) lies inside the run folder `{}`",
                        path.shown(),
                        output.shown()
                    ),
                )
                .with_label("a run writes and clears files there")
                .with_help("set `output` to a folder of its own, e.g. `output = \"runs/NAME\"`"),
            );
        }
    }
    if let Some((base, at)) = base {
        if real(base) == out {
            cx.push(
                Diagnostic::error(
                    Code::BaseModel,
                    *at,
                    format!(
                        "the run folder `{}` is the base model's folder",
                        output.shown()
                    ),
                )
                .with_label("this run would write over the model it starts from")
                .with_help("set `output` to another folder"),
            );
        }
    }
}
