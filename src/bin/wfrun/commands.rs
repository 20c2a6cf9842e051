//! The subcommands. Each returns the process exit status.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use wfrun::paths::ShowPath;

use serde_json::json;
use wfrun::report::{render_all, Style};
use wfrun::spec::{ParamSpec, Registry};
use wfrun::{CheckOptions, Checked, Code, Severity};

use crate::cli::{Args, Color, Command, Deny, Format};

pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const TROUBLE: u8 = 2;
#[cfg(feature = "train")]
pub const INTERRUPTED: u8 = 130;

pub fn run(args: Args) -> u8 {
    let style = style(args.color);
    match args.command {
        Command::Check {
            paths,
            format,
            deny,
            no_fs,
        } => check(&paths, format, deny, no_fs, style),
        Command::Plan {
            file,
            format,
            no_fs,
        } => plan(&file, format, no_fs, style),
        Command::Fmt { paths, check } => fmt(&paths, check),
        #[cfg(feature = "lsp")]
        Command::Lsp => crate::lsp::serve(),
        Command::Run {
            file,
            resume,
            fresh,
            fail_on_bad_images,
            trial,
        } => train(&file, [resume, fresh, fail_on_bad_images], trial, style),
        #[cfg(feature = "train")]
        Command::Embed {
            run,
            paths,
            output,
            mode,
            ann,
            format,
            model,
        } => crate::use_model::embed(&run, &paths, (&output, mode, ann), format, &model),
        #[cfg(feature = "train")]
        Command::Predict {
            run,
            paths,
            head,
            top_k,
            threshold,
            format,
            model,
        } => {
            let p = crate::use_model::PredictArgs {
                head: head.as_deref(),
                top_k: top_k.map(|k| k as usize),
                threshold,
                format,
            };
            crate::use_model::predict(&run, &paths, &p, &model)
        }
        #[cfg(feature = "train")]
        Command::Search {
            run,
            queries,
            top_k,
            index,
            exact,
            format,
            model,
        } => crate::use_model::search(
            &run,
            &queries,
            top_k as usize,
            (index.as_deref(), exact),
            format,
            &model,
        ),
        #[cfg(feature = "onnx")]
        Command::Export {
            run,
            output,
            format: _,
            force,
        } => crate::use_model::export(&run, output.as_deref(), force),
        #[cfg(feature = "train")]
        Command::Calibrate { format } => calibrate(format),
        Command::Templates { format } => templates(format),
        Command::Explain { name } => explain(&name),
    }
}

fn style(color: Color) -> Style {
    let terminal = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match color {
        Color::Always => Style::Color,
        Color::Never => Style::Plain,
        Color::Auto if terminal => Style::Color,
        Color::Auto => Style::Plain,
    }
}

fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

/// `Err` with the exit status, after saying so, when `WFRUN_MEMORY_GIB` is
/// set to something that is not a memory size: the commands that check a
/// workflow against memory stop rather than check against this machine's.
fn memory_setting() -> Result<(), u8> {
    match wfrun::cost::Memory::override_error() {
        Some(e) => {
            errln!("error: {e}");
            Err(TROUBLE)
        }
        None => Ok(()),
    }
}

/// The checker's options for one command: the data folders it lists are
/// listed once, however many workflow files name them.
fn options(no_fs: bool) -> CheckOptions {
    CheckOptions {
        filesystem: !no_fs,
        listings: Some(wfrun::data::Listings::new()),
        ..CheckOptions::default()
    }
}

/// A path that could not be read or held no workflow file, and what to say.
type Unread = (std::path::PathBuf, String);

/// The `.wf` files under `paths` (files, or folders searched; default: the
/// current folder), each once, and the paths that could not be read or held
/// none: the files found are still checked.
fn workflow_files(paths: &[std::path::PathBuf]) -> (Vec<std::path::PathBuf>, Vec<Unread>) {
    let default = [std::path::PathBuf::from(".")];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let (mut files, mut problems) = (Vec::new(), Vec::new());
    // A file named twice (given itself and inside a folder given, or through
    // a link) is checked once, and a path that cannot be read said once.
    let mut seen = std::collections::HashSet::new();
    let mut said = std::collections::HashSet::new();
    let key = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    for p in paths {
        let found = wfrun::find_workflow_files(p);
        if found.files.is_empty() && found.problems.is_empty() && said.insert(key(p)) {
            problems.push((p.clone(), format!("no `.wf` files under `{}`", p.shown())));
        }
        problems.extend(
            found
                .problems
                .iter()
                .filter(|(at, _)| said.insert(key(at)))
                .map(|(at, e)| (at.clone(), read_error(at, e))),
        );
        files.extend(
            found
                .files
                .into_iter()
                .filter(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))),
        );
    }
    (files, problems)
}

/// Workflow files of this many bytes in all make a check allocate enough
/// for huge pages to pay ([`crate::huge_pages_for_heap`]): measured on a
/// 10,000-line file (362 KB), a cold check took 0.8 of the time with them.
const LARGE_INPUT: u64 = 64 << 10;

fn check(
    paths: &[std::path::PathBuf],
    format: Format,
    deny: Option<Deny>,
    no_fs: bool,
    style: Style,
) -> u8 {
    if let Err(code) = memory_setting() {
        return code;
    }
    let (files, problems) = workflow_files(paths);
    for (at, why) in &problems {
        cannot_read(at, why, format);
    }
    // (Sizes looked at only until they add up to enough.)
    let mut bytes = 0;
    if files.iter().any(|f| {
        bytes += std::fs::metadata(f).map_or(0, |m| m.len());
        bytes >= LARGE_INPUT
    }) {
        crate::huge_pages_for_heap();
    }
    let options = options(no_fs);
    let (mut errors, mut warnings, mut unreadable, mut checked_files) = (0, 0, problems.len(), 0);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, file) in files.iter().enumerate() {
        let checked = match wfrun::check_file(file, &options) {
            Ok(c) => c,
            Err(e) => {
                cannot_read(file, &read_error(file, &e), format);
                unreadable += 1;
                continue;
            }
        };
        checked_files += 1;
        errors += checked.count(Severity::Error);
        warnings += checked.count(Severity::Warning);
        match format {
            Format::Json => {
                for d in checked.json() {
                    // A closed pipe ends nothing: the check goes on and its
                    // status is its own (as for every command's output).
                    if let Err(e) =
                        writeln!(out, "{}", serde_json::to_string(&d).unwrap_or_default())
                    {
                        crate::stdout_failed(e);
                    }
                }
            }
            Format::Human => err!(
                "{}",
                render_all(&checked.diagnostics, &checked.sources, style, width())
            ),
        }
        if i + 1 == files.len() {
            // The process ends next: freeing a large file's tree, node by
            // node, would only add to the wait (a tenth of a cold check).
            std::mem::forget(checked);
        }
    }
    if format == Format::Human {
        errln!("{}", summary(checked_files, errors, warnings, unreadable));
    }
    if unreadable > 0 {
        TROUBLE
    } else if errors > 0 || (deny == Some(Deny::Warnings) && warnings > 0) {
        FAILED
    } else {
        OK
    }
}

fn read_error(at: &Path, e: &dyn std::fmt::Display) -> String {
    format!("cannot read `{}`: {e}", at.shown())
}

/// Says `message` about `at`, which could not be read or held nothing to
/// check: on standard error, or as a `wf::unreadable` diagnostic at the
/// file's start in JSON (so a program reading the diagnostics learns of it
/// too).
fn cannot_read(at: &Path, message: &str, format: Format) {
    let message = message.to_string();
    match format {
        Format::Human => errln!("error: {message}"),
        Format::Json => {
            let d = wfrun::JsonDiagnostic {
                location: wfrun::diagnostic::JsonLocation::start_of(
                    at.to_string_lossy().into_owned(),
                ),
                code: Code::Unreadable.as_str(),
                severity: Severity::Error,
                message,
                label: None,
                labels: Vec::new(),
                help: Some(
                    "give `.wf` files, or folders holding them, that this user may read"
                        .to_string(),
                ),
                fixes: Vec::new(),
            };
            if let Err(e) = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string(&d).unwrap_or_default()
            ) {
                crate::stdout_failed(e);
            }
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The last line of a check: the files read and checked, what they hold,
/// and how many paths could not be read (their errors printed above).
fn summary(files: usize, errors: usize, warnings: usize, unreadable: usize) -> String {
    let checked = format!("checked {}", plural(files, "file"));
    let found = match (errors, warnings) {
        (0, 0) => "no problems".to_string(),
        (0, w) => plural(w, "warning"),
        (e, 0) => plural(e, "error"),
        (e, w) => format!("{} and {}", plural(e, "error"), plural(w, "warning")),
    };
    match unreadable {
        0 => format!("{checked}: {found}"),
        n if files == 0 => format!("{checked}: {} could not be read", plural(n, "path")),
        n => format!(
            "{checked}: {found}; {} could not be read",
            plural(n, "path")
        ),
    }
}

fn load(file: &Path, no_fs: bool, style: Style) -> Result<Checked, u8> {
    let checked = wfrun::check_file(file, &options(no_fs)).map_err(|e| {
        cannot_read(file, &read_error(file, &e), Format::Human);
        TROUBLE
    })?;
    err!(
        "{}",
        render_all(&checked.diagnostics, &checked.sources, style, width())
    );
    Ok(checked)
}

/// Checks `file`, printing its diagnostics; `Err` with the exit status when it has errors.
fn load_clean(file: &Path, no_fs: bool, style: Style) -> Result<Checked, u8> {
    let checked = load(file, no_fs, style)?;
    if checked.workflow.is_none() {
        let (errors, warnings) = (
            checked.count(Severity::Error),
            checked.count(Severity::Warning),
        );
        errln!("{}", summary(1, errors, warnings, 0));
        return Err(FAILED);
    }
    Ok(checked)
}

fn fmt(paths: &[std::path::PathBuf], check: bool) -> u8 {
    let (files, problems) = workflow_files(paths);
    for (at, why) in &problems {
        cannot_read(at, why, Format::Human);
    }
    if files.is_empty() {
        return TROUBLE;
    }
    let (mut changed, mut broken, mut trouble) = (0, 0, problems.len());
    // This process's user (Linux), to know another user's file.
    #[cfg(unix)]
    let me = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
    };
    for file in &files {
        let text = match wfrun::read_workflow(file) {
            Ok(t) => t,
            Err(e) => {
                cannot_read(file, &read_error(file, &e), Format::Human);
                trouble += 1;
                continue;
            }
        };
        match wfrun::format::format_source(&text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => {
                changed += 1;
                if check {
                    outln!("{}: not formatted", file.shown());
                    continue;
                }
                // Whole or not at all, through a link, keeping the file's
                // mode and owner; a file others link to is written in place
                // (a new file would part it from its other names); a file
                // marked read-only is left alone.
                let meta = std::fs::metadata(file);
                // Opening for writing (without truncating) asks the system
                // whether this user may write the file, whatever its mode says.
                let writable = std::fs::OpenOptions::new().write(true).open(file).is_ok();
                if !writable || meta.as_ref().is_ok_and(|m| m.permissions().readonly()) {
                    errln!(
                        "error: `{}` is read-only (for this user): not formatted (make it writable first)",
                        file.shown()
                    );
                    trouble += 1;
                    continue;
                }
                // In place: a file with other names (a new file would part
                // it from them), and another user's file this user may write
                // but not give back (a new file would become this user's).
                #[cfg(unix)]
                let in_place = {
                    use std::os::unix::fs::MetadataExt;
                    meta.as_ref().is_ok_and(|m| {
                        m.nlink() > 1 || me.is_some_and(|me| me != 0 && me != m.uid())
                    })
                };
                #[cfg(not(unix))]
                let in_place = false;
                let written = if in_place {
                    std::fs::write(file, formatted.as_bytes())
                } else {
                    wfrun::atomic::write(file, formatted.as_bytes())
                };
                match written {
                    Ok(()) => outln!("formatted {}", file.shown()),
                    Err(e) => {
                        errln!("error: cannot write `{}`: {e}", file.shown());
                        trouble += 1;
                    }
                }
            }
            Err(wfrun::format::FormatError::Syntax(d)) => {
                broken += 1;
                errln!(
                    "error: `{}` has {} syntax error(s) and is left as it is; `wfrun check {}` shows them",
                    file.shown(),
                    d.len(),
                    file.shown()
                );
            }
            Err(wfrun::format::FormatError::ChangedMeaning) => {
                broken += 1;
                errln!(
                    "error: formatting `{}` would change its meaning; it is left as it is (please report this)",
                    file.shown()
                );
            }
        }
    }
    if trouble > 0 {
        TROUBLE
    } else if broken > 0 || (check && changed > 0) {
        FAILED
    } else {
        OK
    }
}

fn plan(file: &Path, format: Format, no_fs: bool, style: Style) -> u8 {
    if let Err(code) = memory_setting() {
        return code;
    }
    let checked = match load_clean(file, no_fs, style) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(plan) = checked.plan() else {
        return FAILED;
    };
    let text = match format {
        Format::Human => plan.to_string(),
        Format::Json => serde_json::to_string_pretty(&plan).unwrap_or_default() + "\n",
    };
    // A closed standard output is the reader's choice, not a failure.
    if let Err(e) = std::io::stdout().write_all(crate::for_stdout(&text).as_bytes()) {
        crate::stdout_failed(e);
    }
    OK
}

/// `wfrun calibrate`: measures, caches, shows the figures.
#[cfg(feature = "train")]
fn calibrate(format: Format) -> u8 {
    use wfrun::cost::calibration;
    let threads = wfrun::models::cpu::threads();
    errln!(
        "measuring {} on {threads} thread(s); about twenty seconds",
        calibration::cpu_model()
    );
    let measured = wfrun::models::calibrate::calibrate(threads, &mut |net| {
        errln!("  {net}");
    });
    let t = match measured {
        Ok(t) => t,
        Err(e) => {
            errln!("error: the measurement failed: {e}");
            return FAILED;
        }
    };
    let stored = calibration::store(&t);
    match format {
        Format::Json => outln!("{}", serde_json::to_string(&t).unwrap_or_default()),
        Format::Human => {
            outln!("measured by {}", t.source);
            outln!("  network            training step                  embedding batch");
            for r in &t.networks {
                outln!(
                    "  {:<18} {:>6.1} ms + {:>5.1} ms per G multiply-adds  {:>5.1} ms + {:>5.1} ms per G",
                    r.architecture.network_name(),
                    r.train_step_s * 1e3,
                    r.train_s_per_gmac * 1e3,
                    r.embed_batch_s * 1e3,
                    r.embed_s_per_gmac * 1e3
                );
            }
        }
    }
    match stored {
        Ok(path) => {
            errln!("cached in {}", path.shown());
            OK
        }
        Err(e) => {
            errln!("error: the figures could not be cached: {e}");
            TROUBLE
        }
    }
}

/// Wraps `text` at `width` columns, each line indented by `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn param_line(p: &ParamSpec, width: usize) -> String {
    let default = p
        .default
        .as_ref()
        .map_or("none".to_string(), |d| d.value.to_string());
    format!(
        "  {:width$}  {:<22} {:<24} default {}\n",
        p.name,
        p.ty.to_string(),
        p.range_text(),
        default
    )
}

/// A template or step kind in `wfrun templates`: title, first sentence, parameters.
fn listing(title: &str, doc: &str, params: &[Arc<ParamSpec>]) -> String {
    let mut s = format!("{title}\n");
    s.push_str(&wrap(first_sentence(doc), "  ", 88));
    let w = params.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in params {
        s.push_str(&param_line(p, w));
    }
    s.push('\n');
    s
}

fn first_sentence(doc: &str) -> &str {
    match doc.find(". ") {
        Some(i) => &doc[..=i],
        None => doc,
    }
}

fn param_json(p: &ParamSpec) -> serde_json::Value {
    json!({
        "name": p.name,
        "type": p.ty.to_string(),
        "min": p.min.as_ref().map(|b| b.value),
        "max": p.max.as_ref().map(|b| b.value),
        "step": p.step.as_ref().map(|b| b.value),
        "default": p.default.as_ref().map(|d| d.value.to_string()),
        "doc": &*p.doc,
    })
}

fn templates(format: Format) -> u8 {
    let r = Registry::builtin();
    let text = match format {
        Format::Json => {
            let v = json!({
                "templates": r.templates.iter().map(|t| json!({
                    "name": t.name,
                    "architecture": t.architecture.name(),
                    "lr_decay": t.lr_decay,
                    "doc": &*t.doc,
                    "params": t.params.iter().map(|p| param_json(p)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "step_kinds": r.step_kinds.iter().map(|k| json!({
                    "name": k.name,
                    "doc": &*k.doc,
                    "params": k.params.iter().map(|p| param_json(p)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            });
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
        Format::Human => {
            let mut s = String::from("templates\n\n");
            for t in &r.templates {
                let title = format!("{} ({})", t.name, t.architecture.name());
                s.push_str(&listing(&title, &t.doc, &t.params));
            }
            s.push_str("steps\n\n");
            for k in &r.step_kinds {
                s.push_str(&listing(&k.name, &k.doc, &k.params));
            }
            s.push_str("`wfrun explain NAME` or `wfrun explain NAME.PARAM` shows the full documentation.\n");
            s
        }
    };
    // A closed standard output is the reader's choice, not a failure.
    if let Err(e) = std::io::stdout().write_all(crate::for_stdout(&text).as_bytes()) {
        crate::stdout_failed(e);
    }
    OK
}

fn explain_param(owner: &str, p: &ParamSpec) -> String {
    let mut s = format!("{owner}.{}: {}\n\n", p.name, p.ty);
    s.push_str(&format!("  range    {}\n", p.range_text()));
    let default = p
        .default
        .as_ref()
        .map_or("none".to_string(), |d| match &d.value {
            wfrun::spec::DefaultValue::Derived(x) => format!("{} ({})", x.name(), x.describe()),
            v => v.to_string(),
        });
    s.push_str(&format!("  default  {default}\n\n"));
    s.push_str(&wrap(&p.doc, "  ", 88));
    if wfrun::spec::LRATE_FACTORS.contains(&&*p.name) {
        let [a, b] = wfrun::spec::LRATE_FACTORS;
        s.push_str(&format!("\n  lrate = {a} × {b}\n"));
    }
    s
}

fn explain(name: &str) -> u8 {
    let r = Registry::builtin();
    if let Some(code) = Code::ALL
        .iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(name))
    {
        outln!("{code}: {}", code.summary());
        return OK;
    }
    if name == "sweep" {
        let mut doc = String::from(
            "sweep (a block: hyperparameter values to try, one run per trial, ranked by an objective)\n\n",
        );
        doc.push_str("  Each hyperparameter of the `use` template may be swept with\n");
        for (_, d) in wfrun::sweep::GENERATORS {
            doc.push_str(&wrap(&format!("- {d}"), "    ", 88));
        }
        doc.push_str("\n  Settings:\n");
        for (n, d) in wfrun::sweep::SETTINGS {
            doc.push_str(&wrap(&format!("{n}: {d}"), "    ", 88));
        }
        doc.push_str("\n  Metrics for `objective`:\n");
        for (n, _, _, up, d) in wfrun::sweep::Metric::ALL {
            let better = if up { "higher" } else { "lower" };
            doc.push_str(&wrap(&format!("{n}: {d} ({better} is better)"), "    ", 88));
        }
        out!("{doc}");
        return OK;
    }
    let (head, param) = match name.split_once('.') {
        Some((h, p)) => (h, Some(p)),
        None => (name, None),
    };
    // A template by its name, or by the network it trains (`templates` shows both).
    let template = r.template(head).or_else(|| {
        r.templates
            .iter()
            .find(|t| t.architecture.name().eq_ignore_ascii_case(head))
    });
    let found: Option<(String, &str, &[Arc<ParamSpec>])> = template
        .map(|t| {
            let mut doc = format!(
                "{} (template, trains {})\n\n",
                t.name,
                t.architecture.name()
            );
            doc.push_str(&wrap(&t.doc, "  ", 88));
            doc.push_str(&format!(
                "\n  The learning rate is multiplied by {} at each decrease.\n",
                wfrun::spec::fmt_float(t.lr_decay)
            ));
            (doc, t.name.as_str(), &t.params[..])
        })
        .or_else(|| {
            r.step_kind(head).map(|k| {
                let mut doc = format!("{} (step)\n\n", k.name);
                doc.push_str(&wrap(&k.doc, "  ", 88));
                (doc, k.name.as_str(), &k.params[..])
            })
        });
    let Some((doc, owner, params)) = found else {
        // A parameter's name alone: say whose it is.
        let owners: Vec<&str> = r
            .templates
            .iter()
            .filter(|t| t.param(head).is_some())
            .map(|t| t.name.as_str())
            .chain(
                r.step_kinds
                    .iter()
                    .filter(|k| k.params.iter().any(|p| &*p.name == head))
                    .map(|k| k.name.as_str()),
            )
            .collect();
        if let (Some(first), None) = (owners.first(), param) {
            let whose = owners
                .iter()
                .map(|o| format!("`{o}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errln!(
                "error: `{head}` is a parameter of {whose}: name its owner, e.g. `wfrun explain {first}.{head}`"
            );
            return TROUBLE;
        }
        let names = r
            .templates
            .iter()
            .map(|t| t.name.as_str())
            .chain(r.step_kinds.iter().map(|k| k.name.as_str()));
        if name.starts_with("wf::") {
            let codes = Code::ALL.iter().map(|c| c.as_str());
            match wfrun::suggest::did_you_mean(name, codes.clone()) {
                Some(s) => errln!("error: no diagnostic code is `{name}`; did you mean `{s}`?"),
                None => errln!(
                    "error: no diagnostic code is `{name}`; the codes are {}",
                    codes.collect::<Vec<_>>().join(", ")
                ),
            }
            return TROUBLE;
        }
        // (`.`, `..`: no name before the dot; the whole argument is shown.)
        let shown = if head.is_empty() { name } else { head };
        match wfrun::suggest::did_you_mean(shown, names) {
            Some(s) => errln!("error: nothing is named `{shown}`; did you mean `{s}`?"),
            None => errln!(
                "error: nothing is named `{shown}`; `wfrun templates` lists the templates and step kinds, `wfrun explain wf::CODE` a diagnostic code"
            ),
        }
        return TROUBLE;
    };
    let text = match param {
        None => {
            let mut s = doc;
            s.push('\n');
            let w = params.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in params {
                s.push_str(&param_line(p, w));
            }
            s
        }
        Some(pname) => match params.iter().find(|p| &*p.name == pname) {
            Some(p) => explain_param(owner, p),
            None => {
                let help = wfrun::suggest::did_you_mean(pname, params.iter().map(|p| &*p.name))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                errln!("error: `{owner}` has no parameter `{pname}`{help}");
                return TROUBLE;
            }
        },
    };
    out!("{text}");
    OK
}

/// `wfrun run`; `flags`: `--resume`, `--fresh`, `--fail-on-bad-images`;
/// `trial`: a sweep's trial alone (1-based).
fn train(file: &Path, flags: [bool; 3], trial: Option<usize>, style: Style) -> u8 {
    if let Err(code) = memory_setting() {
        return code;
    }
    let checked = match load_clean(file, false, style) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(workflow) = checked.workflow.as_ref() else {
        return FAILED;
    };
    match (trial, &workflow.sweep) {
        (Some(_), None) => {
            errln!("error: `--trial` runs one trial of a sweep, and this workflow has no `sweep` block");
            TROUBLE
        }
        (Some(0), Some(_)) => {
            errln!("error: trials count from 1, as `wfrun plan` lists them");
            TROUBLE
        }
        (Some(n), Some(s)) if n > s.trials.len() => {
            errln!(
                "error: this sweep has {} trials: `--trial` takes 1 to {}, as `wfrun plan` lists them",
                s.trials.len(),
                s.trials.len()
            );
            TROUBLE
        }
        (trial, Some(_)) => execute_sweep(workflow, flags, trial.map(|t| t - 1)),
        (None, None) => execute(workflow, flags),
    }
}

#[cfg(not(feature = "train"))]
fn execute_sweep(w: &wfrun::Workflow, flags: [bool; 3], _: Option<usize>) -> u8 {
    execute(w, flags)
}

#[cfg(not(feature = "train"))]
fn execute(_: &wfrun::Workflow, _: [bool; 3]) -> u8 {
    errln!("error: this wfrun was built without feature `train`: it checks and plans workflows but cannot run them");
    TROUBLE
}

/// The run options of the flags, with a Ctrl-C handler: the first Ctrl-C
/// (or SIGTERM, or SIGHUP) stops after the current step and saves a
/// checkpoint; a second one ends at once.
#[cfg(feature = "train")]
fn run_options(flags: [bool; 3]) -> wfrun::exec::RunOptions {
    let [resume, fresh, fail_on_bad_images] = flags;
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    wfrun::exec::RunOptions {
        resume,
        fresh,
        cancel: Some(cancel),
        workers: 0,
        fail_on_bad_images,
        stop_early: None,
    }
}

/// The exit status of a run that failed, having said why.
#[cfg(feature = "train")]
fn failed(e: &wfrun::exec::RunError) -> u8 {
    errln!("error: {e}");
    match e {
        // The conventional status after an interrupt (128 + SIGINT).
        wfrun::exec::RunError::Cancelled { .. } | wfrun::exec::RunError::Stopped { .. } => {
            INTERRUPTED
        }
        _ => FAILED,
    }
}

#[cfg(feature = "train")]
fn execute_sweep(workflow: &wfrun::Workflow, flags: [bool; 3], only: Option<usize>) -> u8 {
    let options = wfrun::exec::sweep::SweepOptions {
        run: run_options(flags),
        only,
    };
    let mut progress = crate::progress::Progress::new(std::io::stderr().is_terminal());
    match wfrun::exec::sweep::run(workflow, &options, &mut |e| progress.show(e)) {
        Ok(summary) => {
            outln!(
                "{}",
                crate::progress::sweep_summary(workflow, &summary, only.is_some())
            );
            // A whole sweep with nothing to name best (every trial diverged,
            // or none reported the objective) did not do what it was for.
            let done = only.is_some() || !summary.pending.is_empty() || summary.best.is_some();
            if done {
                OK
            } else {
                FAILED
            }
        }
        Err(e) => {
            progress.clear_line();
            failed(&e)
        }
    }
}

#[cfg(feature = "train")]
fn execute(workflow: &wfrun::Workflow, flags: [bool; 3]) -> u8 {
    let options = run_options(flags);
    let mut progress = crate::progress::Progress::new(std::io::stderr().is_terminal());
    match wfrun::exec::run(workflow, &options, &mut |e| progress.show(e)) {
        Ok(summary) => {
            outln!("{}", progress.finished(workflow, &summary));
            if summary.failed_steps.is_empty() {
                OK
            } else {
                FAILED
            }
        }
        Err(e) => {
            progress.clear_line();
            failed(&e)
        }
    }
}
