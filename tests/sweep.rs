//! Sweeps: every candidate is checked against its parameter's grid at the
//! span it comes from, the plan lists the trials, and a sweep run through the
//! binary trains each trial into its own folder, resumes after SIGKILL
//! mid-trial and names the best.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wfrun::{check_source, CheckOptions, Code, Severity};

fn no_fs() -> CheckOptions {
    CheckOptions {
        filesystem: false,
        ..Default::default()
    }
}

const USE: &str = "use Clarifai_InceptionBatchNorm { num_epochs = 4  init_epochs = 2  step_epochs = 1  logreg = 0 }\ndata { train = \"images\" }\n";

fn check(sweep: &str) -> wfrun::Checked {
    check_with(USE, sweep)
}

fn check_with(use_and_data: &str, sweep: &str) -> wfrun::Checked {
    let text = format!("{use_and_data}sweep {{\n{sweep}\n}}\n");
    check_source("sweep.wf", &text, &no_fs())
}

/// The text a diagnostic points at.
fn at(checked: &wfrun::Checked, d: &wfrun::Diagnostic) -> String {
    checked.sources.get(checked.source).text()[d.span.start..d.span.end].to_string()
}

fn errors(checked: &wfrun::Checked) -> Vec<&wfrun::Diagnostic> {
    checked
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

#[test]
fn a_bad_candidate_is_reported_at_the_bound_it_comes_from_with_the_nearest_values() {
    // A range is reported once, where it goes wrong: its low bound ...
    let c = check("    image_size = range(40, 88, 16)");
    let e = errors(&c);
    assert_eq!(e.len(), 1, "{:?}", c.diagnostics);
    assert_eq!((e[0].code, at(&c, e[0]).as_str()), (Code::OffStep, "40"));
    assert_eq!(
        e[0].help.as_deref(),
        Some("the nearest valid values are 32 and 48")
    );
    let fixes: Vec<&str> = e[0].fixes.iter().map(|f| f.replacement.as_str()).collect();
    assert_eq!(fixes, ["32", "48"], "a bound has mechanical fixes");
    // ... its step ...
    let c = check("    image_size = range(32, 64, 7)");
    let e = errors(&c);
    assert_eq!(e.len(), 1, "{:?}", c.diagnostics);
    assert_eq!((e[0].code, at(&c, e[0]).as_str()), (Code::OffStep, "7"));
    assert_eq!(e[0].fixes[0].replacement, "16");
    // ... its high end, once however many values pass the maximum ...
    let c = check("    image_size = range(32, 2000, 16)");
    let e = errors(&c);
    assert_eq!(e.len(), 1, "{:?}", c.diagnostics);
    assert_eq!(
        (e[0].code, at(&c, e[0]).as_str()),
        (Code::OutOfRange, "2000")
    );
    assert_eq!(e[0].fixes[0].replacement, "1024");
    // ... and an integer parameter's range takes whole numbers, computed exactly.
    let c = check("    batch_size = range(16, 64, 16.0)");
    let e = errors(&c);
    assert_eq!(
        (e.len(), e[0].code, at(&c, e[0]).as_str()),
        (1, Code::WrongType, "16.0")
    );
    assert_eq!(e[0].fixes[0].replacement, "16");
    let c = check("    num_items_per_epoch = range(9223372036854775000, 9223372036854775807, 100)");
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let plan = c.plan().unwrap();
    let sweep = plan.sweep.unwrap();
    assert_eq!(sweep.swept[0].values.len(), 9);
    assert_eq!(
        sweep.swept[0].values[7],
        wfrun::spec::Num::Int(9223372036854775700)
    );
    // Too many values: counted exactly, not through a float.
    let c = check("    num_items_per_epoch = range(1, 9223372036854775806, 1)");
    let e = errors(&c);
    assert!(
        e[0].message
            .starts_with("this range has 9223372036854775806 values,"),
        "{}",
        e[0].message
    );
    let c = check("    batch_size = values(16, 500, 32)");
    let e = errors(&c);
    assert_eq!(
        (e.len(), e[0].code, at(&c, e[0]).as_str()),
        (1, Code::OutOfRange, "500")
    );

    // A value inside a range (neither bound) is reported at the call, without a fix.
    let c = check("    image_size = range(32, 1040, 16)\n    trials = 3");
    let e = errors(&c);
    assert_eq!((e.len(), e[0].code), (1, Code::OutOfRange), "{e:?}");
    assert_eq!(at(&c, e[0]), "1040");
    // A `log_range`'s inner values are reported together at the call.
    let c = check("    image_size = log_range(40, 400, 3)"); // 40, 126, 400
    let e = errors(&c);
    assert!(e.iter().all(|d| d.code == Code::OffStep), "{e:?}");
    assert!(e
        .iter()
        .any(|d| at(&c, d) == "log_range(40, 400, 3)" && d.fixes.is_empty()));
}

#[test]
fn the_sweep_block_itself_is_checked() {
    let cases: [(&str, &str, Code); 10] = [
        (
            "    per_item_lrate = log_range(0, 1e-3, 3)",
            "0",
            Code::Sweep,
        ),
        ("    batch_size = 32", "32", Code::Sweep),
        ("    batch_size = ranges(16, 64, 16)", "ranges", Code::Sweep),
        (
            "    batch_size = range(64, 16, 16)",
            "range(64, 16, 16)",
            Code::Sweep,
        ),
        (
            "    angular_margin = values(0.2, 0.3)",
            "angular_margin",
            Code::ParamNotInTemplate,
        ),
        (
            "    batch_size = values(16, 32)\n    objective = maximize(map_at)",
            "map_at",
            Code::Sweep,
        ),
        (
            "    batch_size = values(16, 32)\n    objective = maximize(mean_average_precision)",
            "maximize(mean_average_precision)",
            Code::Sweep,
        ),
        (
            "    batch_size = values(16, 32)\n    trials = 0",
            "0",
            Code::Sweep,
        ),
        ("    batch_size = values(16, 32, 16)", "16", Code::Sweep),
        ("    trials = 3", "sweep", Code::Sweep),
    ];
    for (text, span, code) in cases {
        let c = check(text);
        let e = errors(&c);
        assert!(
            e.iter().any(|d| d.code == code && at(&c, d) == span),
            "{text}: expected {code} at `{span}`, got {:?}",
            e.iter()
                .map(|d| (d.code, at(&c, d), &d.message))
                .collect::<Vec<_>>()
        );
    }
    // A parameter set in `use` and swept.
    let text = "use Clarifai_ResNext { batch_size = 32 }\ndata { train = \"x\" }\nsweep { batch_size = values(16, 64) }\n";
    let c = check_source("s.wf", text, &no_fs());
    let e = errors(&c);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].related.len(), 1, "points at the `use` setting too");
    // A base workflow trains nothing to sweep.
    let text = "base = \"runs/x\"\ndata { train = \"x\" }\nsweep { batch_size = values(16, 64) }\n";
    let c = check_source("s.wf", text, &no_fs());
    assert!(c.diagnostics.iter().any(|d| d.code == Code::Sweep));
    // A stopping rule that starts after the last epoch stops nothing.
    let c = check("    batch_size = values(16, 32)\n    early_stop = median(4)");
    assert!(!c.has_errors());
    assert!(
        c.diagnostics[0].message.contains("no trial can stop early"),
        "{:?}",
        c.diagnostics
    );
    // The wrong direction is a warning with its fix.
    let c = check("    batch_size = values(16, 32)\n    objective = minimize(map_at_r)");
    assert!(!c.has_errors());
    let w = &c.diagnostics[0];
    assert_eq!(
        (w.severity, w.fixes[0].replacement.as_str()),
        (Severity::Warning, "maximize(map_at_r)")
    );
}

#[test]
fn each_trial_is_checked_as_a_workflow_of_its_own() {
    // `init_epochs` above `num_epochs` in one trial of three.
    let c = check_with(
        "use Clarifai_InceptionBatchNorm { num_epochs = 4  step_epochs = 1  logreg = 0 }\ndata { train = \"images\" }\n",
        "    init_epochs = values(1, 3, 6)",
    );
    let e = errors(&c);
    assert_eq!(e.len(), 1, "{:?}", c.diagnostics);
    assert_eq!(e[0].code, Code::Schedule);
    assert!(
        e[0].message
            .contains("in 1 of the 3 trials, first `trial-003` (init_epochs = 6)"),
        "{}",
        e[0].message
    );
    assert_eq!(at(&c, e[0]), "init_epochs = values(1, 3, 6)");
}

#[test]
fn the_plan_lists_the_trials_drawn_from_the_grid() {
    let c = check(
        "    batch_size = range(16, 64, 16)\n    per_item_lrate = log_range(1e-5, 1e-3, 3)\n    trials = 5\n    seed = 4\n    early_stop = median(2)",
    );
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let plan = c.plan().unwrap();
    let sweep = plan.sweep.as_ref().unwrap();
    assert_eq!((sweep.grid, sweep.trials.len()), (12, 5));
    let values: Vec<Vec<f64>> = sweep
        .trials
        .iter()
        .map(|t| t.values.iter().map(|(_, v)| v.as_f64()).collect())
        .collect();
    for v in &values {
        assert!([16.0, 32.0, 48.0, 64.0].contains(&v[0]) && [1e-5, 1e-4, 1e-3].contains(&v[1]));
        assert!(values.iter().filter(|w| *w == v).count() == 1, "distinct");
    }
    // Each trial's learning rate is its own batch × rate.
    for t in &sweep.trials {
        let want = t.values[0].1.as_f64() * t.values[1].1.as_f64();
        assert!((t.lrate - want).abs() < 1e-12);
        assert!(t.output.ends_with(&t.name));
    }
    let text = plan.to_string();
    assert!(
        text.contains("5 candidates drawn from a grid of 12 (seed 4)"),
        "{text}"
    );
    assert!(
        text.contains("batch_size          = 16, 32, 48, 64"),
        "{text}"
    );
    assert!(text.contains("trial-005"), "{text}");
    // Another seed draws others; the same seed the same.
    let again = check(
        "    batch_size = range(16, 64, 16)\n    per_item_lrate = log_range(1e-5, 1e-3, 3)\n    trials = 5\n    seed = 4",
    );
    assert_eq!(
        again.plan().unwrap().sweep.unwrap().trials,
        sweep.trials.to_vec()
    );
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["sweep"]["trials"].as_array().unwrap().len(), 5);
    assert_eq!(json["sweep"]["early_stop"]["after"], 2);
}

#[path = "common/bars.rs"]
mod bars;

fn write_images(root: &Path) {
    bars::write_bars(root, 12);
}

fn wfrun(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(serde::Deserialize)]
struct Record {
    outcome: wfrun::exec::sweep::TrialOutcome,
}

fn outcome(dir: &Path) -> wfrun::exec::sweep::TrialOutcome {
    let text = std::fs::read_to_string(dir.join("trial.json")).unwrap();
    serde_json::from_str::<Record>(&text).unwrap().outcome
}

#[test]
fn a_four_trial_sweep_runs_resumes_after_sigkill_and_names_the_best() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let file = dir.path().join("s.wf");
    std::fs::write(
        &file,
        "workflow s\nuse Clarifai_InceptionBatchNorm { image_size = 32  num_epochs = 3  init_epochs = 2  step_epochs = 1  logreg = 0  num_items_per_epoch = 120 }\n\
         data { train = \"images\"  eval = 0.25 }\nseed = 5\n\
         sweep {\n    batch_size = values(6, 9)\n    per_item_lrate = values(1e-6, 1e-3)\n    objective = maximize(accuracy)\n    early_stop = median(1)\n}\n",
    )
    .unwrap();
    let out = dir.path().join("runs/s");
    let file_arg = file.to_str().unwrap();

    // Killed once the second trial has a checkpoint.
    let mut child = Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .arg(file_arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !out.join("trial-002/checkpoint.safetensors").exists() {
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // `--fresh` while the sweep runs a trial clears nothing.
    let (ok, _, stderr) = wfrun(&[file_arg, "--fresh"]);
    assert!(!ok && stderr.contains("another run"), "{stderr}");
    assert!(out.join("trial-001/trial.json").exists());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(out.join("trial-001/trial.json").exists());
    assert!(!out.join("trial-002/trial.json").exists());
    let first = outcome(&out.join("trial-001"));

    // Without `--resume` a sweep does not run over its previous trials.
    let (ok, _, stderr) = wfrun(&[file_arg]);
    assert!(!ok && stderr.contains("--resume"), "{stderr}");

    let (ok, stdout, stderr) = wfrun(&[file_arg, "--resume"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("trial-001: skipped, done before"),
        "{stderr}"
    );
    assert_eq!(outcome(&out.join("trial-001")), first, "kept as it was");
    let outcomes: Vec<_> = (1..=4)
        .map(|i| outcome(&out.join(format!("trial-00{i}"))))
        .collect();
    use wfrun::exec::sweep::TrialStatus;
    // The killed trial continued its epochs: one metrics line each, none repeated.
    let log = std::fs::read_to_string(out.join("trial-002/metrics.jsonl")).unwrap();
    let epochs = outcomes[1].epochs as usize;
    assert_eq!(log.lines().count(), epochs, "{log}");
    assert_eq!(outcomes[1].curve.len(), epochs);

    // The best is the finished trial with the highest accuracy.
    let finished: Vec<_> = outcomes
        .iter()
        .filter(|o| o.status == TrialStatus::Finished)
        .collect();
    assert!(finished.len() >= 2, "two trials finish before any can stop");
    // The first of the highest, as the ranking keeps the trials' order on a tie.
    let top = finished
        .iter()
        .map(|o| o.objective.unwrap())
        .fold(f64::MIN, f64::max);
    let best = finished.iter().find(|o| o.objective == Some(top)).unwrap();
    assert_eq!(
        best.values[1].1.as_f64(),
        1e-3,
        "the rate that learns wins: {outcomes:?}"
    );
    let link = std::fs::read_link(out.join("best")).unwrap();
    assert_eq!(link, Path::new(&best.name));
    assert!(out.join("best/model.safetensors").exists());
    assert!(stdout.contains(&format!("1. {}", best.name)), "{stdout}");
    // A stopped trial was worse than the median of the finished ones at its
    // epoch: the rate too small to learn is stopped after its first epoch.
    assert_eq!(outcomes[2].status, TrialStatus::Stopped, "{outcomes:?}");
    for o in outcomes.iter().filter(|o| o.status == TrialStatus::Stopped) {
        assert!(o
            .message
            .as_ref()
            .unwrap()
            .contains("worse than the median"));
        assert!(!o.name.ends_with("001") && !o.name.ends_with("002"));
        assert!(o.epochs < 3 && !out.join(&o.name).join("model.safetensors").exists());
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("rank,trial,batch_size,per_item_lrate,seed,status,epochs,accuracy"));
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("objective_batch_size.svg")
            && report.contains("objective_per_item_lrate.svg")
    );
    // The best trial is a base model for another workflow.
    std::fs::write(
        dir.path().join("b.wf"),
        "base = \"runs/s/best\"\ndata { train = \"images\"  eval = 0.25 }\nstep clustering { k = 3 }\n",
    )
    .unwrap();
    let (ok, _, stderr) = wfrun(&[dir.path().join("b.wf").to_str().unwrap()]);
    assert!(ok, "{stderr}");

    // An edited workflow does not resume: the trials it ran were others.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("num_epochs = 3", "num_epochs = 4")).unwrap();
    let (ok, _, stderr) = wfrun(&[file_arg, "--resume"]);
    // In the workflow's words: the setting, not a record's key.
    assert!(
        !ok && stderr.contains("`num_epochs`: 3 → 4\n"),
        "says what changed: {stderr}"
    );
    assert_eq!(stderr.matches('→').count(), 1, "{stderr}");
    assert!(!stderr.contains("hyper."), "{stderr}");
    // Other data: its concepts named.
    std::fs::write(&file, &text).unwrap();
    let images = dir.path().join("images");
    std::fs::rename(images.join("c0"), images.join("zero")).unwrap();
    let (ok, _, stderr) = wfrun(&[file_arg, "--resume"]);
    assert!(
        !ok && stderr.contains("the concepts: `zero` new; `c0` gone"),
        "{stderr}"
    );
    assert!(!stderr.contains("dataset"), "{stderr}");
    // The whole folder moved (the workflow, its images and runs): the same
    // sweep, every trial done.
    std::fs::rename(images.join("zero"), images.join("c0")).unwrap();
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    for name in ["images", "s.wf", "runs"] {
        std::fs::rename(dir.path().join(name), moved.join(name)).unwrap();
    }
    let (ok, _, stderr) = wfrun(&[moved.join("s.wf").to_str().unwrap(), "--resume"]);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.matches("skipped").count(), 4, "{stderr}");
}

#[test]
fn a_sweep_whose_data_lies_beside_its_folder_continues_after_both_moved() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    write_images(&home.join("images"));
    std::fs::create_dir(home.join("w")).unwrap();
    let file = home.join("w/s.wf");
    std::fs::write(
        &file,
        "workflow s\nuse Clarifai_InceptionBatchNorm { image_size = 32  num_epochs = 2  init_epochs = 1  step_epochs = 1  logreg = 0  num_items_per_epoch = 48 }\n\
         data { train = \"../images\"  eval = 0.25 }\nseed = 5\n\
         sweep {\n    batch_size = values(6, 9)\n    objective = maximize(accuracy)\n}\n",
    )
    .unwrap();
    let (ok, _, stderr) = wfrun(&[file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    // The workflow's folder and the images beside it moved together: the
    // trials are this sweep's still, done, not refused as another's.
    let moved = dir.path().join("moved");
    std::fs::rename(&home, &moved).unwrap();
    let file = moved.join("w/s.wf");
    let (ok, _, stderr) = wfrun(&[file.to_str().unwrap(), "--resume"]);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.matches("skipped").count(), 2, "{stderr}");
    // Other images there are other data: refused, as before the move.
    std::fs::rename(moved.join("images/c0"), moved.join("images/zero")).unwrap();
    let (ok, _, stderr) = wfrun(&[file.to_str().unwrap(), "--resume"]);
    assert!(!ok && stderr.contains("`zero` new"), "{stderr}");
}

#[test]
fn one_trial_runs_alone_and_the_next_invocation_collects_it() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let file = dir.path().join("t.wf");
    std::fs::write(
        &file,
        "workflow t\nuse Clarifai_InceptionBatchNorm { image_size = 32  batch_size = 9  num_epochs = 1  init_epochs = 1  logreg = 0 }\n\
         data { train = \"images\"  eval = 0.25 }\n\
         sweep { per_item_lrate = values(1e-5, 1e-4) }\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let (ok, _, stderr) = wfrun(&[file_arg, "--trial", "3"]);
    assert!(!ok && stderr.contains("has 2 trials"), "{stderr}");
    let (ok, stdout, stderr) = wfrun(&[file_arg, "--trial", "2"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("1 of 2 trials done") && stdout.contains("not done: trial-001"),
        "{stdout}"
    );
    let out = dir.path().join("runs/t");
    assert!(out.join("trial-002/trial.json").exists() && !out.join("trial-001").exists());
    assert!(
        !out.join("sweep.json").exists(),
        "a lone trial leaves the ranking to the sweep"
    );
    let (ok, stdout, stderr) = wfrun(&[file_arg, "--resume"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("trial-002: skipped"), "{stderr}");
    assert!(stdout.contains("2 of 2 trials done"), "{stdout}");
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(sweep["ranked"].as_array().unwrap().len(), 2);
    // Another objective ranks the same trials by their own figures, read again.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("sweep { ", "sweep { objective = minimize(train_loss)  "),
    )
    .unwrap();
    let (ok, stdout, stderr) = wfrun(&[file_arg, "--resume"]);
    assert!(ok, "{stderr}");
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    for o in sweep["ranked"].as_array().unwrap() {
        let log =
            std::fs::read_to_string(out.join(o["name"].as_str().unwrap()).join("metrics.jsonl"))
                .unwrap();
        let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        let loss = last["train_loss"].as_f64().unwrap();
        assert!(
            (o["objective"].as_f64().unwrap() - loss).abs() < 1e-6,
            "{o} vs {loss}"
        );
    }
    let ranked = sweep["ranked"].as_array().unwrap();
    assert!(
        ranked[0]["objective"].as_f64() <= ranked[1]["objective"].as_f64(),
        "{stdout}"
    );
    // A step added reruns the finished trials from their models: their
    // figures stay what their last epoch measured.
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}step clustering {{ k = 3 }}\n")).unwrap();
    let (ok, _, stderr) = wfrun(&[file_arg, "--resume"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("not measured"), "{stderr}");
    assert!(out.join("trial-001/steps/clustering").is_dir());
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(before["ranked"], after["ranked"]);
    let report = std::fs::read_to_string(out.join("trial-001/report.html")).unwrap();
    assert!(
        report.contains("held-out, last epoch"),
        "the report keeps the last epoch's row"
    );
    // `--fresh` clears every trial.
    let (ok, _, stderr) = wfrun(&[file_arg, "--fresh"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("removed"), "{stderr}");
    // A folder holding a run of its own is no sweep's: nothing in it is touched.
    let other = dir.path().join("other.wf");
    std::fs::write(
        &other,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("workflow t", "workflow other"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("runs/other")).unwrap();
    std::fs::write(dir.path().join("runs/other/plan.json"), "{}").unwrap();
    std::fs::write(dir.path().join("runs/other/report.html"), "mine").unwrap();
    let (ok, _, stderr) = wfrun(&[other.to_str().unwrap(), "--fresh"]);
    assert!(!ok && stderr.contains("holds a run of its own"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs/other/report.html")).unwrap(),
        "mine"
    );
    // `--trial` on a workflow without a sweep is an error, not a run.
    let plain = dir.path().join("p.wf");
    std::fs::write(
        &plain,
        "use Clarifai_ResNext {}\ndata { train = \"images\" }\n",
    )
    .unwrap();
    let (ok, _, stderr) = wfrun(&[plain.to_str().unwrap(), "--trial", "1"]);
    assert!(!ok && stderr.contains("no `sweep` block"), "{stderr}");
}

#[test]
fn repeats_train_each_candidate_with_seeds_one_apart_and_rank_by_the_mean() {
    let c = check("    per_item_lrate = values(1e-4, 1e-3)\n    repeats = 3");
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let plan = c.plan().unwrap();
    let sweep = plan.sweep.as_ref().unwrap();
    let seeds: Vec<u64> = sweep.trials.iter().map(|t| t.seed).collect();
    assert_eq!(seeds, [0, 1, 2, 0, 1, 2]);
    assert!(plan
        .to_string()
        .contains("2 candidates: the whole grid, each trained 3 times"));
    // A problem of a candidate is reported once, counted in candidates.
    let c = check_with(
        "use Clarifai_InceptionBatchNorm { num_epochs = 4  step_epochs = 1  logreg = 0 }\ndata { train = \"images\" }\n",
        "    init_epochs = values(1, 6)\n    repeats = 2",
    );
    let e = errors(&c);
    assert_eq!(e.len(), 1, "{:?}", c.diagnostics);
    assert!(
        e[0].message
            .contains("in 1 of the 2 candidates, first `trial-003`"),
        "{}",
        e[0].message
    );
    for bad in ["0", "101", "1.5"] {
        let c = check(&format!(
            "    per_item_lrate = values(1e-4, 1e-3)\n    repeats = {bad}"
        ));
        assert!(
            errors(&c).iter().any(|d| at(&c, d) == bad),
            "repeats = {bad}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let file = dir.path().join("r.wf");
    std::fs::write(
        &file,
        "workflow r\nuse Clarifai_InceptionBatchNorm { image_size = 32  batch_size = 9  num_epochs = 1  init_epochs = 1  logreg = 0 }\n\
         data { train = \"images\"  eval = 0.25 }\nseed = 4\n\
         sweep { per_item_lrate = values(1e-6, 1e-3)  repeats = 2  objective = minimize(train_loss) }\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = wfrun(&[file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let out = dir.path().join("runs/r");
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    let candidates = sweep["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2);
    // Each candidate's mean is its trials' mean, and the lower mean ranks first.
    let mut means = Vec::new();
    for c in candidates {
        let trials: Vec<&str> = c["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(trials.len(), 2);
        let losses: Vec<f64> = trials
            .iter()
            .map(|t| {
                let log = std::fs::read_to_string(out.join(t).join("metrics.jsonl")).unwrap();
                let last: serde_json::Value =
                    serde_json::from_str(log.lines().last().unwrap()).unwrap();
                last["train_loss"].as_f64().unwrap()
            })
            .collect();
        let mean = c["mean"].as_f64().unwrap();
        assert!((mean - (losses[0] + losses[1]) / 2.0).abs() < 1e-6, "{c}");
        means.push(mean);
    }
    assert!(means[0] <= means[1], "{means:?}");
    // The two repeats of a candidate trained with seeds 4 and 5.
    let seeds: Vec<u64> = sweep["ranked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds.iter().filter(|&&s| s == 4).count(), 2);
    assert!(
        stdout.contains("candidates, by the mean of their repeats"),
        "{stdout}"
    );
    let best = std::fs::read_link(out.join("best")).unwrap();
    let first: Vec<&str> = candidates[0]["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        first.contains(&best.to_str().unwrap()),
        "best {best:?} is of the best candidate {first:?}"
    );
}

#[test]
fn a_swept_batch_is_advised_per_candidate_and_data_decide_what_can_be_measured() {
    let dir = tempfile::tempdir().unwrap();
    for c in ["a", "b", "c", "d", "e", "f"] {
        let folder = dir.path().join("img").join(c);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..20 {
            std::fs::write(folder.join(format!("{i}.png")), b"").unwrap();
        }
    }
    let check_in = |sweep: &str, eval: &str| {
        let text = format!(
            "use Clarifai_InceptionBatchNorm {{ image_size = 32  logreg = 0  num_epochs = 4  init_epochs = 2 }}\ndata {{ train = \"img\"  eval = {eval} }}\nsweep {{\n{sweep}\n}}\n"
        );
        let path = dir.path().join("s.wf");
        std::fs::write(&path, text).unwrap();
        wfrun::check_file(&path, &CheckOptions::default()).unwrap()
    };
    let c = check_in("    batch_size = values(2, 4, 16)", "0.2");
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    let advice: Vec<_> = c
        .diagnostics
        .iter()
        .filter(|d| d.code == Code::BatchAdvice)
        .collect();
    assert_eq!(advice.len(), 1, "{:?}", c.diagnostics);
    assert!(
        advice[0].message.contains("in 2 of the 3 trials"),
        "{}",
        advice[0].message
    );
    assert_eq!(at(&c, advice[0]), "batch_size = values(2, 4, 16)");
    // One held-out image per concept: nothing for MAP@R to match.
    let c = check_in("    batch_size = values(16, 32)", "0.05");
    assert!(
        errors(&c)
            .iter()
            .any(|d| d.message.contains("cannot measure `map_at_r`")),
        "{:?}",
        c.diagnostics
    );
    let c = check_in(
        "    batch_size = values(16, 32)\n    objective = maximize(accuracy)",
        "0.05",
    );
    assert!(
        !c.has_errors(),
        "accuracy needs no pair: {:?}",
        c.diagnostics
    );
}
