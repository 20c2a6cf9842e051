//! Checks that read the file system: do the paths exist, how many concepts
//! and images the training folder holds, and the seed's batch-size advice.

use crate::suggest::FastMap as HashMap;
use std::path::Path;

use super::{Checker, Written};
use crate::diagnostic::{Code, Diagnostic};
use crate::source::Span;
use crate::spec::{Num, ParamValue};
use crate::syntax::{StepDecl, ValueKind};
use crate::workflow::{
    DataSpec, DatasetSummary, Eval, ImageSource, Resolved, ResolvedParam, StepSpec,
};

pub(super) fn relative_help(cx: &Checker) -> String {
    let base = cx.base_dir.display().to_string();
    if base.is_empty() {
        "paths are relative to the folder of the workflow file (here the current folder)"
            .to_string()
    } else {
        format!("paths are relative to the folder of the workflow file, `{base}`")
    }
}

fn exists_as(cx: &mut Checker, path: &Path, span: Span, folder: bool, what: &str) -> bool {
    let shown = path.display();
    if !path.exists() {
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
) -> Option<DatasetSummary> {
    let fallback = Span::new(cx.source, 0, 0);
    let span = |k: &str| spans.get(k).copied().unwrap_or(fallback);
    check_weights_and_eval(cx, data, &span);
    let root = match &data.train {
        ImageSource::Manifest(p) => {
            exists_as(cx, p, span("train"), false, "manifest");
            return None;
        }
        ImageSource::Folder(p) => p,
    };
    if !exists_as(cx, root, span("train"), true, "training folder") {
        return None;
    }
    let concepts = count_concepts(cx, root, span("train"))?;
    let used = concepts.iter().filter(|(_, n)| *n > 0).count();
    batch_advice(cx, params, batch_max, used, span("train"));
    Some(DatasetSummary { concepts })
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
                    format!("`{}` does not end in `.safetensors`", w.display()),
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
}

/// The training folder's concepts with their image counts; images outside
/// concept folders and empty concepts are warnings, fewer than two concepts
/// with images an error (`None` when none has any).
fn count_concepts(cx: &mut Checker, root: &Path, at: Span) -> Option<Vec<(String, usize)>> {
    let span = |_: &str| at;
    let shown = root.display().to_string();
    let (concepts, loose) = match crate::data::list_folder(root) {
        Ok((folders, loose)) => {
            let counts: Vec<(String, usize)> = folders
                .into_iter()
                .map(|f| (f.name, f.images.len()))
                .collect();
            (counts, loose.len())
        }
        Err(e) => {
            cx.push(Diagnostic::error(
                Code::PathNotFound,
                span("train"),
                format!("cannot read `{shown}`: {e}"),
            ));
            return None;
        }
    };
    if loose > 0 {
        cx.push(
            Diagnostic::warning(
                Code::Data,
                span("train"),
                format!("{loose} images lie directly in `{shown}` and are ignored"),
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
        1 => cx.push(
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
    Some(concepts)
}

/// The seed's advice: a batch of around twice the number of concepts, within
/// the template's maximum.
fn batch_advice(
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
            }
        }
    }
}
