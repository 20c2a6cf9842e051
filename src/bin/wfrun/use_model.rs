//! `wfrun embed`, `wfrun predict`, `wfrun search`: a finished run's model,
//! used on new images through [`wfrun::Model`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use wfrun::paths::ShowPath;

use serde_json::json;
use wfrun::exec::model::{Embeddings, Index, Inputs, ModelOptions, Predictor, Rule};
use wfrun::exec::RunError;
use wfrun::Model;

use crate::cli::{AnnKind, Format, ModelArgs, TableFormat, TableMode};
use crate::commands::{FAILED, OK, TROUBLE};
use crate::progress::Progress;

/// Opens the model, gathers the images and embeds them, reporting
/// unreadable images; `Err` holds the exit status after the error is shown.
/// `kept`: their paths go to a file, so each must be text.
fn open_and_embed(
    run: &Path,
    paths: &[PathBuf],
    args: &ModelArgs,
    kept: bool,
) -> Result<(Model, Embeddings, usize), u8> {
    let options = ModelOptions {
        device: args.device,
        ..ModelOptions::default()
    };
    let model = Model::open_with(run, &options).map_err(fail)?;
    let inputs = Inputs::gather(paths).map_err(fail)?;
    if kept {
        inputs.named_in_text().map_err(fail)?;
    }
    if inputs.repeated > 0 {
        errln!(
            "note: {} of images named before (the same file again, by another path or a link) left out: each image is taken once",
            match inputs.repeated {
                1 => "1 mention".to_string(),
                n => format!("{n} mentions"),
            }
        );
    }
    if inputs.paths.is_empty() {
        return Err(fail(RunError::Unsupported(format!(
            "no image in {}; give image files, folders of images or manifests",
            shown(paths)
        ))));
    }
    for folder in &inputs.empty {
        errln!(
            "warning: `{}` is a folder that holds no images; left out",
            folder.shown()
        );
    }
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let embedded = model
        .embed(&inputs, &mut |e| progress.show(e))
        .map_err(fail)?;
    progress.clear_line();
    for b in &embedded.bad {
        errln!("warning: skipped `{}`: {}", b.path.shown(), b.reason);
    }
    if args.fail_on_bad_images && !embedded.bad.is_empty() {
        errln!(
            "error: {} of {} images cannot be read (`--fail-on-bad-images`); nothing was written",
            embedded.bad.len(),
            inputs.paths.len()
        );
        return Err(FAILED);
    }
    if embedded.is_empty() {
        match inputs.paths.as_slice() {
            [one] => errln!("error: `{}` could not be read", one.shown()),
            all => errln!("error: none of the {} images could be read", all.len()),
        }
        // Every image missing, named by a manifest: its relative paths
        // start at its own folder, not where `wfrun` runs.
        let missing = embedded.bad.iter().all(|b| !b.path.exists());
        let manifests: Vec<&PathBuf> = paths
            .iter()
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "csv" || e == "txt"))
            .collect();
        if let (true, Some(m)) = (missing, manifests.first()) {
            let folder = m.parent().filter(|f| !f.as_os_str().is_empty());
            errln!(
                "help: none of them exists: a manifest's relative paths start at its own folder (`{}`); write them from there, or absolute",
                folder.map_or(".".into(), |f| f.shown().to_string())
            );
        }
        return Err(FAILED);
    }
    Ok((model, embedded, inputs.repeated))
}

fn fail(e: RunError) -> u8 {
    errln!("error: {e}");
    FAILED
}

fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("`{}`", p.shown()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `wfrun embed`; `to`: the output, and for a LanceDB table what to do
/// when it exists and which index to build.
pub fn embed(
    run: &Path,
    paths: &[PathBuf],
    to: (&Path, Option<TableMode>, Option<AnnKind>),
    format: Format,
    args: &ModelArgs,
) -> u8 {
    let (output, mode, ann) = to;
    let uri = output.to_string_lossy();
    if uri.starts_with("lancedb://") {
        let how = (
            mode.unwrap_or(TableMode::Create),
            ann.unwrap_or(AnnKind::Auto),
        );
        return embed_to_table(run, paths, &uri, how, format, args);
    }
    // A file is written whole: no rows to add to it, no index to build
    // (usage errors, exit status 2 as the argument parser's).
    if mode == Some(TableMode::Append) {
        errln!(
            "error: `--mode append` adds rows to a LanceDB table (`-o lancedb://DB/TABLE`); `{}` is written whole: embed into a new file, or into a table",
            output.shown()
        );
        return TROUBLE;
    }
    if ann.is_some_and(|a| a != AnnKind::Auto) {
        errln!(
            "error: `--ann` builds a LanceDB table's index (`-o lancedb://DB/TABLE`); a file is searched exactly"
        );
        return TROUBLE;
    }
    if mode == Some(TableMode::Create) && output.exists() {
        errln!(
            "error: `{}` exists and `--mode create` refuses to replace it: name another file, or leave out `--mode` (or give `--mode overwrite`) to replace it",
            output.shown()
        );
        return FAILED;
    }
    let named = |ext: &str| {
        output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case(ext))
    };
    // `out/` or an existing folder: a file in it is meant.
    if output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/') {
        errln!(
            "error: `{}` is a folder: name a file in it, e.g. `{}`",
            output.shown(),
            output.join("vectors.safetensors").shown()
        );
        return TROUBLE;
    }
    let parquet = named("parquet");
    if !parquet && !named("safetensors") {
        // What this build writes, then what builds with more features do.
        let (mut more, mut other) = (String::new(), Vec::new());
        match cfg!(feature = "parquet") {
            true => more.push_str(", or `.parquet`"),
            false => other.push("`.parquet` (feature `parquet`)"),
        }
        match cfg!(feature = "lancedb") {
            true => more.push_str(", or a LanceDB table, `lancedb://DB/TABLE`"),
            false => other.push("LanceDB tables (feature `lancedb`)"),
        }
        let other = match other.is_empty() {
            true => String::new(),
            false => format!(
                "; builds with more features also write {}",
                other.join(" and ")
            ),
        };
        errln!(
            "error: `{}`: name the output `.safetensors`, e.g. `{}` (the index goes beside it as `.csv`){more}{other}",
            output.shown(),
            match output.file_stem().and_then(|s| s.to_str()) {
                // `.safetensors` alone is a hidden file's name, not an extension.
                Some(stem) if !stem.starts_with('.') => output.with_extension("safetensors"),
                _ => output.with_file_name("vectors.safetensors"),
            }
            .shown()
        );
        return TROUBLE;
    }
    if parquet && !cfg!(feature = "parquet") {
        errln!("error: `{}`: this wfrun was built without feature `parquet`; build it with `cargo build --release --features parquet`", output.shown());
        return TROUBLE;
    }
    let sidecar = (!parquet).then(|| output.with_extension("csv"));
    let mine = |p: &Path| {
        if parquet {
            false
        } else if p == output {
            holds_tensor(p, "embeddings")
        } else {
            std::fs::read(p).is_ok_and(|b| b.starts_with(b"row,path,concepts"))
        }
    };
    let made = match writable_now(
        [Some(output), sidecar.as_deref()].into_iter().flatten(),
        paths,
        &mine,
    ) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let (model, embedded, repeated) = match open_and_embed(run, paths, args, true) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let saved = if parquet {
        save_parquet(&embedded, output).map(|()| None)
    } else {
        embedded.save(output).map(Some)
    };
    let index = match saved {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    made.into_iter().for_each(wfrun::atomic::Made::keep);
    let written = match &index {
        Some(csv) => format!("{} and {}", output.shown(), csv.shown()),
        None => output.shown().to_string(),
    };
    match format {
        Format::Human => outln!(
            "embedded {} with `{}` ({}-long vectors); wrote {written}{}",
            images(embedded.len()),
            model.meta().workflow,
            embedded.dim,
            skipped(embedded.bad.len())
        ),
        Format::Json => outln!(
            "{}",
            json!({
                "images": embedded.len(),
                "dim": embedded.dim,
                "embeddings": output.to_string_lossy(),
                "index_csv": index.as_deref().map(std::path::Path::to_string_lossy),
                "skipped": skipped_json(&embedded),
                "repeated": repeated,
            })
        ),
    }
    OK
}

#[cfg(feature = "lancedb")]
fn table(uri: &str) -> Result<wfrun::exec::lance::Table, u8> {
    wfrun::exec::lance::Table::parse(uri).ok_or_else(|| {
        errln!("error: `{uri}`: name a table as `lancedb://DB/TABLE` (DB: the database folder)");
        TROUBLE
    })
}

#[cfg(not(feature = "lancedb"))]
fn no_lancedb(uri: &str) -> u8 {
    errln!("error: `{uri}`: this wfrun was built without feature `lancedb`; build it with `cargo build --release --features lancedb`");
    TROUBLE
}

#[cfg(not(feature = "lancedb"))]
fn embed_to_table(
    _: &Path,
    _: &[PathBuf],
    uri: &str,
    _: (TableMode, AnnKind),
    _: Format,
    _: &ModelArgs,
) -> u8 {
    no_lancedb(uri)
}

#[cfg(feature = "lancedb")]
fn embed_to_table(
    run: &Path,
    paths: &[PathBuf],
    uri: &str,
    how: (TableMode, AnnKind),
    format: Format,
    args: &ModelArgs,
) -> u8 {
    use wfrun::exec::lance::{self, Ann, Mode};
    let t = match table(uri) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mode = match how.0 {
        TableMode::Create => Mode::Create,
        TableMode::Overwrite => Mode::Overwrite,
        TableMode::Append => Mode::Append,
    };
    if mode == Mode::Create && t.folder().exists() {
        // Before embedding: refusing afterwards would waste the work.
        errln!(
            "error: the LanceDB table `{}` exists already; `--mode overwrite` replaces it, `--mode append` adds to it",
            t.folder().shown()
        );
        return FAILED;
    }
    let ann = match how.1 {
        AnnKind::Auto => Ann::Auto,
        AnnKind::None => Ann::None,
        AnnKind::IvfPq => Ann::IvfPq,
        AnnKind::IvfHnswSq => Ann::IvfHnswSq,
    };
    let (model, embedded, repeated) = match open_and_embed(run, paths, args, false) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let written = match lance::write(&t, &embedded, mode, ann) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    match format {
        Format::Human => outln!(
            "embedded {} with `{}` ({}-long vectors) into the LanceDB table {} ({} rows{}){}",
            images(embedded.len()),
            model.meta().workflow,
            embedded.dim,
            t.folder().shown(),
            written.rows,
            written
                .index
                .map_or(String::new(), |i| format!(", index {i}")),
            skipped(embedded.bad.len())
        ),
        Format::Json => outln!(
            "{}",
            json!({
                "images": embedded.len(),
                "dim": embedded.dim,
                "table": t.folder().to_string_lossy(),
                "rows": written.rows,
                "ann_index": written.index,
                "skipped": skipped_json(&embedded),
                "repeated": repeated,
            })
        ),
    }
    OK
}

#[cfg(feature = "parquet")]
fn save_parquet(e: &Embeddings, path: &Path) -> Result<(), RunError> {
    wfrun::exec::parquet::write(e, path)
}

#[cfg(not(feature = "parquet"))]
fn save_parquet(_: &Embeddings, path: &Path) -> Result<(), RunError> {
    Err(RunError::Unsupported(format!(
        "`{}`: this wfrun was built without feature `parquet`",
        path.shown()
    )))
}

/// Whether the safetensors file at `path` holds a tensor `name`.
fn holds_tensor(path: &Path, name: &str) -> bool {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .is_ok_and(|t| t.contains_key(name))
}

/// Refuses outputs that would destroy something: one of the inputs, a run
/// folder's own file, or an existing file that `mine` does not recognise
/// as an earlier output of the same command. `Err` holds the exit status.
fn writable<'a>(
    outputs: impl IntoIterator<Item = &'a Path>,
    inputs: &[PathBuf],
    mine: &dyn Fn(&Path) -> bool,
) -> Result<(), u8> {
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    for out in outputs {
        let Some(found) = real(out) else {
            // Not there yet: a run's own file is refused by name below.
            if let Some(name) = run_file(out) {
                errln!(
                    "error: `{}` is a run's own `{name}`: choose another name",
                    out.shown()
                );
                return Err(FAILED);
            }
            continue;
        };
        // A pipe would block the look at what it holds, a device or folder
        // is not replaced by a file.
        if !std::fs::metadata(&found).is_ok_and(|m| m.is_file()) {
            errln!(
                "error: `{}` is not a regular file (a folder, a device or a pipe): choose another name",
                out.shown()
            );
            return Err(FAILED);
        }
        if inputs.iter().any(|i| real(i).as_ref() == Some(&found)) {
            errln!("error: `{}` is one of the inputs; writing it would destroy it: choose another name", out.shown());
            return Err(FAILED);
        }
        if let Some(name) = run_file(&found) {
            errln!(
                "error: `{}` is a run's own `{name}`: choose another name",
                out.shown()
            );
            return Err(FAILED);
        }
        if !mine(out) {
            errln!(
                "error: `{}` exists and is not a file this command wrote; remove it or choose another name",
                out.shown()
            );
            return Err(FAILED);
        }
    }
    Ok(())
}

/// [`writable`], then each output tried before any work: a read-only or
/// full disk, or a folder this user may not write, is said at once, not
/// after every image was embedded. `Ok` holds the folders made for the
/// outputs: dropped, they are removed again (the command failed); kept
/// once the outputs are written.
fn writable_now<'a>(
    outputs: impl IntoIterator<Item = &'a Path> + Clone,
    inputs: &[PathBuf],
    mine: &dyn Fn(&Path) -> bool,
) -> Result<Vec<wfrun::atomic::Made>, u8> {
    writable(outputs.clone(), inputs, mine)?;
    let mut made = Vec::new();
    for out in outputs {
        // A file where the path needs a folder: said as such, not as the
        // system's "File exists".
        let blocked = out
            .ancestors()
            .skip(1)
            .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()));
        if let Some(file) = blocked {
            errln!(
                "error: cannot write `{}`: `{}` is a file, not a folder; nothing was done: \
                 choose another path",
                out.shown(),
                file.shown()
            );
            return Err(FAILED);
        }
        match wfrun::atomic::probe(out) {
            Ok(m) => made.push(m),
            Err(e) => {
                errln!(
                    "error: cannot write `{}`: {e}; nothing was done: choose a folder this user can write",
                    out.shown()
                );
                return Err(FAILED);
            }
        }
    }
    Ok(made)
}

/// The name of the run file `path` would be, when it lies in a run folder
/// (one holding `model.json` or `plan.json`) under a name a run writes.
fn run_file(path: &Path) -> Option<String> {
    let path = std::path::absolute(path).ok()?;
    let mut at = path.parent();
    while let Some(folder) = at {
        if folder.join("model.json").is_file() || folder.join("plan.json").is_file() {
            let first = path.strip_prefix(folder).ok()?.components().next()?;
            let name = first.as_os_str().to_string_lossy().into_owned();
            return wfrun::exec::OUTPUTS
                .contains(&name.as_str())
                .then_some(name);
        }
        at = folder.parent();
    }
    None
}

/// The images that could not be read, as JSON.
fn skipped_json(e: &Embeddings) -> serde_json::Value {
    e.bad
        .iter()
        .map(|b| json!({"path": b.path.to_string_lossy(), "reason": b.reason}))
        .collect()
}

fn images(n: usize) -> String {
    match n {
        1 => "1 image".into(),
        n => format!("{n} images"),
    }
}

fn skipped(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => "; skipped 1 unreadable image".into(),
        n => format!("; skipped {n} unreadable images"),
    }
}

pub struct PredictArgs<'a> {
    pub head: Option<&'a str>,
    pub top_k: Option<usize>,
    pub threshold: Option<f32>,
    pub format: TableFormat,
}

pub fn predict(run: &Path, paths: &[PathBuf], p: &PredictArgs, args: &ModelArgs) -> u8 {
    let (model, embedded, _) = match open_and_embed(run, paths, args, false) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let with = match p.head {
        None => Predictor::Template,
        Some(step) => match model.head(step) {
            Ok(h) => Predictor::Head(h),
            Err(e) => return fail(e),
        },
    };
    let rule = Rule {
        top_k: p.top_k,
        threshold: p.threshold,
    };
    let predictions = match model.predict(&embedded, &with, rule) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if p.format == TableFormat::Csv {
        outln!("path,rank,concept,score");
    }
    for pr in &predictions {
        let path = pr.path.shown().to_string();
        match p.format {
            TableFormat::Human => {
                let listed: Vec<String> = pr
                    .concepts
                    .iter()
                    .map(|(c, s)| format!("{c} {s:.3}"))
                    .collect();
                let listed = if listed.is_empty() {
                    format!("no concept above {}", p.threshold.unwrap_or(0.5))
                } else {
                    listed.join(", ")
                };
                outln!("{path}: {listed}");
            }
            TableFormat::Json => outln!(
                "{}",
                json!({
                    "path": pr.path.to_string_lossy(),
                    "concepts": pr.concepts.iter().map(|(c, s)| json!({"concept": c, "score": s})).collect::<Vec<_>>(),
                })
            ),
            TableFormat::Csv => {
                if pr.concepts.is_empty() {
                    outln!("{},,,", csv(&pr.path.display().to_string()));
                }
                for (rank, (c, s)) in pr.concepts.iter().enumerate() {
                    let path = pr.path.display().to_string();
                    outln!("{},{},{},{}", csv(&path), rank + 1, csv(c), number(*s));
                }
            }
        }
    }
    OK
}

/// `wfrun search`; `index`: what to search among (default: the run's own
/// images), and whether a LanceDB table is scanned exactly.
pub fn search(
    run: &Path,
    queries: &[PathBuf],
    top_k: usize,
    index: (Option<&Path>, bool),
    format: TableFormat,
    args: &ModelArgs,
) -> u8 {
    let (index, exact) = index;
    let uri = index.map(|i| i.to_string_lossy().into_owned());
    if exact && !uri.as_deref().is_some_and(|u| u.starts_with("lancedb://")) {
        errln!("error: `--exact` is for a LanceDB `--index lancedb://DB/TABLE`: other searches are always exact");
        return TROUBLE;
    }
    if let Some(uri) = uri.as_deref().filter(|u| u.starts_with("lancedb://")) {
        #[cfg(not(feature = "lancedb"))]
        {
            let _ = exact;
            return no_lancedb(uri);
        }
        #[cfg(feature = "lancedb")]
        {
            let t = match table(uri) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let (_, embedded, _) = match open_and_embed(run, queries, args, false) {
                Ok(m) => m,
                Err(code) => return code,
            };
            return match wfrun::exec::lance::search(&t, &embedded, top_k, exact) {
                Ok(found) => show_hits(&embedded, &found, format),
                Err(e) => fail(e),
            };
        }
    }
    let (model, embedded, _) = match open_and_embed(run, queries, args, false) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let among = match index {
        Some(file) => Index::load(file),
        None => model.index(),
    };
    let among = match among {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let found = match model.search(&embedded, &among, top_k) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    show_hits(&embedded, &found, format)
}

/// Prints each query's neighbours.
fn show_hits(
    embedded: &Embeddings,
    found: &[Vec<wfrun::exec::model::Hit>],
    format: TableFormat,
) -> u8 {
    if format == TableFormat::Csv {
        outln!("query,rank,path,score,concepts");
    }
    for (query, hits) in embedded.paths.iter().zip(found) {
        let q = query.shown().to_string();
        match format {
            TableFormat::Human => {
                outln!("{q}");
                for (rank, h) in hits.iter().enumerate() {
                    let concepts = if h.concepts.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", h.concepts.join(", "))
                    };
                    outln!(
                        "  {:>2}. {:.4}  {}{concepts}",
                        rank + 1,
                        h.score,
                        h.path.shown()
                    );
                }
            }
            TableFormat::Json => outln!(
                "{}",
                json!({"query": query.to_string_lossy(), "neighbours": hits})
            ),
            TableFormat::Csv => {
                for (rank, h) in hits.iter().enumerate() {
                    outln!(
                        "{},{},{},{},{}",
                        csv(&query.display().to_string()),
                        rank + 1,
                        csv(&h.path.display().to_string()),
                        number(h.score),
                        csv(&h.concepts.join(";"))
                    );
                }
            }
        }
    }
    // Paths that do not lead to their images from here: a run folder or
    // index copied or moved apart from the images, its paths shown as
    // recorded. Said once, after the table, so the table stays as it is.
    let hits = found.iter().flatten();
    let missing: Vec<&wfrun::exec::model::Hit> = hits.filter(|h| !h.path.exists()).collect();
    if let Some(first) = missing.first() {
        errln!(
            "warning: {} of the neighbours listed (`{}` the first) are not found from this folder: \
             the run folder or index was copied or moved apart from its images, so their paths \
             are shown as recorded; search from the folder the run or `wfrun embed` was started \
             in, or keep the run folder beside its images",
            missing.len(),
            first.path.shown()
        );
    }
    OK
}

/// A CSV field, quoted when it must be.
fn csv(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A score as CSV shows it: plain, or in scientific notation when tiny.
fn number(x: f32) -> String {
    if x == 0.0 || x.abs() >= 1e-4 {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// `wfrun export RUN [-o FILE]`: the network as ONNX.
#[cfg(feature = "onnx")]
pub fn export(run: &Path, output: Option<&Path>, force: bool) -> u8 {
    let model = match Model::open(run) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let path = output.map_or_else(|| model.folder().join("model.onnx"), Path::to_path_buf);
    if path
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("onnx"))
    {
        errln!("error: `{}`: name the model `.onnx`", path.shown());
        return TROUBLE;
    }
    if path.exists() && !force {
        errln!("error: `{}` exists; `--force` replaces it", path.shown());
        return FAILED;
    }
    // `writable_now` made the folder; it is removed again if the export fails.
    let made = match writable_now([path.as_path()], &[], &|_| true) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // Made again should another command have removed it meanwhile (its own
    // failed output, empty, in the same new folder).
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(parent) {
            errln!("error: cannot create `{}`: {e}", parent.shown());
            return FAILED;
        }
    }
    match model.export_onnx(&path) {
        Ok(s) => {
            made.into_iter().for_each(wfrun::atomic::Made::keep);
            outln!(
                "wrote {} ({:.1} MB, {} nodes): input `images` [batch, 3, {size}, {size}], outputs `embeddings` [batch, {}] and `scores` [batch, {}]",
                path.shown(),
                s.bytes as f64 / 1e6,
                s.nodes,
                s.embedding_size,
                s.classes,
                size = model.image_size(),
            );
            OK
        }
        Err(e) => {
            errln!("error: {e}");
            FAILED
        }
    }
}
