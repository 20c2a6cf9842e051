//! The `wfrun` binary, run as a user runs it.

mod common;

use std::path::{Path, PathBuf};

use common::wfrun;

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

/// A shipped workflow with `image_size` set to 1000, written to a temp folder
/// (its data path made absolute so the data is still found).
fn with_image_size_1000(name: &str) -> (tempfile::TempDir, PathBuf, usize) {
    let text = std::fs::read_to_string(Path::new("workflows").join(name)).unwrap();
    let data = std::fs::canonicalize("workflows/data/shapes").unwrap();
    let mut line_no = 0;
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.replace("\"data/shapes\"", &format!("\"{}\"", data.display()));
        if line.trim_start().starts_with("image_size") && line_no == 0 {
            line_no = i + 1;
            let (head, _) = line.split_once('=').unwrap();
            out.push_str(&format!("{head}= 1000\n"));
        } else {
            out.push_str(&line);
            out.push('\n');
        }
    }
    assert!(line_no > 0, "{name} sets no image_size");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, out).unwrap();
    (dir, path, line_no)
}

#[test]
fn shipped_workflows_check_clean() {
    let r = wfrun(&["check", "workflows"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("checked 5 files: no problems"),
        "{}",
        r.stderr
    );
    let r = wfrun(&["check", "--deny", "warnings", "workflows/"]);
    assert_eq!(
        r.code, 0,
        "shipped workflows have no warnings either:\n{}",
        r.stderr
    );
}

/// The prelude declares the language's templates and is no workflow: `wfrun
/// check` and `wfrun fmt` in the repository's root pass it by (its file is
/// `.wfp`), so its declarations are not reported as a workflow's mistakes.
#[test]
fn the_repository_root_is_checked_without_the_prelude() {
    let r = wfrun(&["check", "--no-fs", "."]);
    assert!(r.stderr.contains("checked"), "{}", r.stderr);
    assert!(r.stderr.contains("tests/fixtures/"), "{}", r.stderr);
    assert!(!r.stderr.contains("spec/prelude"), "{}", r.stderr);
    let r = wfrun(&["fmt", "--check", "."]);
    assert!(!r.stderr.contains("spec/prelude"), "{}", r.stderr);
    assert!(!r.stdout.contains("spec/prelude"), "{}", r.stdout);
}

#[test]
fn image_size_1000_names_value_step_neighbours_and_line() {
    for name in ["quickstart.wf", "angular_margin.wf", "inception.wf"] {
        let (_dir, path, line) = with_image_size_1000(name);
        let path = path.to_str().unwrap();
        let r = wfrun(&["check", "--format", "json", path]);
        assert_eq!(r.code, 1, "{name}");
        let diags = json_lines(&r.stdout);
        assert_eq!(diags.len(), 1, "{name}: only the one problem: {diags:#?}");
        let d = &diags[0];
        assert_eq!(d["code"], "wf::off-step");
        assert_eq!(d["severity"], "error");
        assert_eq!(d["line"], line, "{name}: points at the image_size line");
        assert_eq!(d["file"], path);
        let message = d["message"].as_str().unwrap();
        assert!(
            message.contains("1000") && message.contains("16"),
            "{message}"
        );
        assert_eq!(d["help"], "the nearest valid values are 992 and 1008");

        let r = wfrun(&["check", "--color", "never", path]);
        assert_eq!(r.code, 1);
        assert!(
            r.stderr.contains(&format!("{path}:{line}:")),
            "{}",
            r.stderr
        );
        assert!(r
            .stderr
            .contains("the nearest valid values are 992 and 1008"));
    }
}

#[test]
fn json_has_the_documented_fields() {
    let r = wfrun(&[
        "check",
        "--format",
        "json",
        "tests/fixtures/wrong_template_param.wf",
    ]);
    assert_eq!(r.code, 1);
    let diags = json_lines(&r.stdout);
    assert_eq!(diags.len(), 2);
    let d = &diags[0];
    assert_eq!(d["code"], "wf::param-not-in-template");
    assert_eq!(d["file"], "tests/fixtures/wrong_template_param.wf");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(
        (d["end_line"].as_u64(), d["end_column"].as_u64()),
        (Some(3), Some(19))
    );
    let text = std::fs::read_to_string("tests/fixtures/wrong_template_param.wf").unwrap();
    let (a, b) = (
        d["byte_start"].as_u64().unwrap() as usize,
        d["byte_end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&text[a..b], "angular_margin");
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("Clarifai_InceptionBatchNorm"));
    assert!(d["label"]
        .as_str()
        .unwrap()
        .contains("Clarifai_ResNet_AngularMargin"));
    let label = &d["labels"][0];
    assert_eq!(label["file"], "<prelude>");
    assert!(label["line"].as_u64().unwrap() > 0);
    assert_eq!(diags[1]["help"], "did you mean `batch_size`?");
}

#[test]
fn warnings_fail_only_when_denied() {
    let file = "tests/fixtures/angular_scratch.wf";
    let r = wfrun(&["check", file]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("2 warnings"));
    let r = wfrun(&["check", "--deny", "warnings", file]);
    assert_eq!(r.code, 1);
}

#[test]
fn piped_reports_are_plain_and_colour_is_on_request() {
    let r = wfrun(&["check", "tests/fixtures/off_step.wf"]);
    assert!(!r.stderr.contains('\u{1b}'), "no escape codes when piped");
    let r = wfrun(&["check", "--color", "always", "tests/fixtures/off_step.wf"]);
    assert!(r.stderr.contains('\u{1b}'));
}

#[test]
fn control_characters_in_names_reach_no_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // A workflow whose file name would retitle the terminal, and whose
    // comment would clear the screen, with an error on the next line.
    let name = dir.path().join("a\u{1b}]0;owned\u{7}.wf");
    std::fs::write(&name, "# \u{1b}[2J\u{1b}]52;c;eA==\u{7}\nbad = = 1\n").unwrap();
    for color in ["never", "always"] {
        let r = wfrun(&["check", "--color", color, name.to_str().unwrap()]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("a\\u{1b}]0;owned\\u{7}.wf"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("\\u{1b}[2J"), "{}", r.stderr);
        assert!(!r.stderr.contains('\u{7}'), "{}", r.stderr);
        assert!(!r.stderr.contains("\u{1b}]"), "{}", r.stderr);
        assert!(!r.stderr.contains("\u{1b}[2J"), "{}", r.stderr);
    }
    // A workflow without a `workflow` line is named after its file: the
    // name is shown escaped by `plan`, on a terminal or not.
    let shipped = std::fs::read_to_string("workflows/quickstart.wf").unwrap();
    let unnamed: String = shipped
        .lines()
        .filter(|l| !l.starts_with("workflow "))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = dir.path().join("n\u{1b}]0;owned\u{7}.wf");
    std::fs::write(&file, unnamed).unwrap();
    let r = wfrun(&["plan", "--no-fs", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("workflow n\\u{1b}]0;owned\\u{7}\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains('\u{1b}') && !r.stdout.contains('\u{7}'));
    // Unreadable, it is named escaped too.
    let missing = dir.path().join("b\u{1b}[2J.wf");
    let r = wfrun(&["check", missing.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("b\\u{1b}[2J.wf"), "{}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);
}

#[test]
fn several_paths_and_folders() {
    let r = wfrun(&[
        "check",
        "--format",
        "json",
        "workflows",
        "tests/fixtures/off_step.wf",
        "tests/fixtures/devices.wf",
    ]);
    assert_eq!(r.code, 1);
    let files: Vec<String> = json_lines(&r.stdout)
        .iter()
        .map(|d| d["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        files,
        ["tests/fixtures/off_step.wf", "tests/fixtures/devices.wf"]
    );
}

#[test]
fn unreadable_paths_exit_2() {
    let r = wfrun(&["check", "no/such/place.wf"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot read `no/such/place.wf`"),
        "{}",
        r.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let r = wfrun(&["check", empty.path().to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no `.wf` files"));
    assert!(
        r.stderr
            .contains("checked 0 files: 1 path could not be read"),
        "{}",
        r.stderr
    );
    let bad = empty.path().join("latin1.wf");
    std::fs::write(&bad, b"workflow caf\xe9\n").unwrap();
    let r = wfrun(&["check", bad.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not UTF-8"), "{}", r.stderr);
    // The summary counts it as not read, not as checked without problems.
    assert!(
        r.stderr
            .contains("checked 0 files: 1 path could not be read"),
        "{}",
        r.stderr
    );
    // Beside a good file: that one checked, this one not read.
    let r = wfrun(&["check", "workflows/quickstart.wf", bad.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("checked 1 file: no problems; 1 path could not be read"),
        "{}",
        r.stderr
    );

    // A path given twice is said once.
    let r = wfrun(&["check", "no/such/place.wf", "no/such/place.wf"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.matches("cannot read").count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("checked 0 files: 1 path could not be read"),
        "{}",
        r.stderr
    );

    // A file named as a folder, and something neither file nor folder.
    let r = wfrun(&["check", "workflows/quickstart.wf/"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("a file is named as a folder in this path"),
        "{}",
        r.stderr
    );
    #[cfg(unix)]
    for args in [&["check", "/dev/null"][..], &["fmt", "/dev/null"][..]] {
        let r = wfrun(args);
        assert_eq!(r.code, 2);
        assert!(
            r.stderr.contains(
                "cannot read `/dev/null`: neither a file nor a folder (a device, a pipe or a socket)"
            ),
            "{}",
            r.stderr
        );
    }

    // In JSON each one is a diagnostic on standard output too, at the start
    // of the path, beside the checked files' own.
    let none = tempfile::tempdir().unwrap();
    let r = wfrun(&[
        "check",
        "--format",
        "json",
        "no/such/place.wf",
        "workflows/quickstart.wf",
        none.path().to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2);
    let lines = json_lines(&r.stdout);
    let unreadable: Vec<_> = lines
        .iter()
        .filter(|d| d["code"] == "wf::unreadable")
        .collect();
    assert_eq!(unreadable.len(), 3, "{}", r.stdout);
    assert_eq!(unreadable[0]["file"], "no/such/place.wf");
    assert_eq!(
        unreadable[0]["message"],
        "cannot read `no/such/place.wf`: no such file or folder"
    );
    assert_eq!(unreadable[0]["severity"], "error");
    assert_eq!(
        (&unreadable[0]["line"], &unreadable[0]["column"]),
        (&1.into(), &1.into())
    );
    assert!(unreadable[1]["message"]
        .as_str()
        .unwrap()
        .starts_with("no `.wf` files under"));
    assert_eq!(unreadable[2]["file"], bad.to_str().unwrap());
    assert!(unreadable[2]["message"]
        .as_str()
        .unwrap()
        .contains("not UTF-8"));
}

#[test]
fn a_workflow_that_cannot_be_opened_is_said_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::os::unix::fs::symlink(at("gone.wf"), at("dangling.wf")).unwrap();
    std::os::unix::fs::symlink(at("loop.wf"), at("loop.wf")).unwrap();
    std::fs::write(at("file.wf"), "workflow w\n").unwrap();
    for (path, words) in [
        (at("missing.wf"), "no such file or folder"),
        (at("dangling.wf"), "a link to nothing (or a loop of links)"),
        (at("loop.wf"), "a link to nothing (or a loop of links)"),
        (
            at("file.wf/x.wf"),
            "a file is named as a folder in this path",
        ),
        (at(""), "a folder, not a workflow file"),
    ] {
        for command in ["plan", "run"] {
            let r = wfrun(&[command, &path]);
            assert_eq!(r.code, 2, "{command} {path}: {}", r.stderr);
            assert!(r.stderr.contains(words), "{command} {path}: {}", r.stderr);
            assert!(!r.stderr.contains("os error"), "{}", r.stderr);
        }
    }
}

#[test]
fn plan_shows_values_origins_schedule_and_steps() {
    let r = wfrun(&["plan", "workflows/quickstart.wf"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = &r.stdout;
    for expected in [
        "template Clarifai_InceptionBatchNorm (bn_inception)",
        "image_size          = 32          set on line 8",
        "init_epochs         = 4           set on line 11",
        "num_items_per_epoch = 480         derived: the number of training images",
        "lrate = batch_size × per_item_lrate = 32 × 7.8125e-05 = 0.0025",
        "epochs 1–4     0.0025",
        "epoch 5        2.5e-04",
        "epoch 6        2.5e-05",
        "480 images per epoch / batch 32 = 15 steps per epoch × 6 epochs = 90 steps",
        "4 concepts, 600 images",
        "0.2 of each concept's images held out: 480 to train, 120 to evaluate",
        "clustering: k = 4, iterations = 100, inits = 8, tolerance = 1e-04, seed = 7",
        "visual_search: top_k = 5, queries = eval, index = train",
    ] {
        assert!(out.contains(expected), "plan lacks `{expected}`:\n{out}");
    }
    let r = wfrun(&["plan", "workflows/angular_margin.wf"]);
    assert!(
        r.stdout
            .contains("per_item_lrate      = 7.8125e-05  default of Clarifai_ResNet_AngularMargin"),
        "{}",
        r.stdout
    );

    let r = wfrun(&["plan", "--format", "json", "workflows/quickstart.wf"]);
    assert_eq!(r.code, 0);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rates: Vec<f64> = plan["epoch_learning_rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(rates.len(), 6);
    let expect = [0.0025, 0.0025, 0.0025, 0.0025, 0.00025, 0.000025];
    for (got, want) in rates.iter().zip(expect) {
        assert!((got - want).abs() < 1e-12, "{rates:?}");
    }
    assert_eq!(plan["optimizer_steps"], 90);
    assert_eq!(plan["params"][0]["name"], "logreg");
    assert_eq!(plan["params"][0]["origin"], "set");
}

#[test]
fn plan_without_the_file_system_leaves_derived_values_open() {
    let r = wfrun(&["plan", "--no-fs", "workflows/quickstart.wf"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("num_items_per_epoch = ?"));
    assert!(r
        .stdout
        .contains("unknown until the training images can be counted"));
}

#[test]
fn plan_refuses_a_workflow_with_errors() {
    let r = wfrun(&["plan", "tests/fixtures/off_step.wf"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("wf::off-step"));
}

#[test]
fn templates_and_explain_document_the_spec() {
    let r = wfrun(&["templates"]);
    assert_eq!(r.code, 0);
    for t in [
        "Clarifai_ResNet_AngularMargin",
        "Clarifai_InceptionBatchNorm",
        "Clarifai_ResNext",
        "visual_search",
    ] {
        assert!(r.stdout.contains(t));
    }
    assert!(r.stdout.contains("angular_scale"));

    let r = wfrun(&["templates", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let arc = &v["templates"][0];
    assert_eq!(arc["name"], "Clarifai_ResNet_AngularMargin");
    let scale = arc["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "angular_scale")
        .unwrap();
    assert_eq!(
        (
            scale["min"].as_i64(),
            scale["max"].as_i64(),
            scale["step"].as_i64()
        ),
        (Some(16), Some(128), Some(16))
    );

    let r = wfrun(&["explain", "Clarifai_ResNext.batch_size"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("range    1 to 128, step 1"));
    assert!(r.stdout.contains("default  64"));
    assert!(r.stdout.contains("around 2x the category"));
    assert!(r.stdout.contains("lrate = batch_size × per_item_lrate"));

    let r = wfrun(&["explain", "Clarifai_ResNext.num_items_per_epoch"]);
    assert!(r
        .stdout
        .contains("dataset_size (the number of training images)"));

    let r = wfrun(&["explain", "Clarifai_ResNet_AngularMargin"]);
    assert!(r.stdout.contains("ArcFace"));
    assert!(r.stdout.contains("multiplied by 0.1 at each decrease"));

    let r = wfrun(&["explain", "clustering.k"]);
    assert!(r.stdout.contains("num_concepts"));

    let r = wfrun(&["explain", "wf::off-step"]);
    assert!(r.stdout.contains("min + k * step"));
    // Codes in any case; a template by the network it trains; a parameter
    // alone is said to be whose.
    let r = wfrun(&["explain", "WF::OFF-STEP"]);
    assert!(r.stdout.contains("min + k * step"), "{}", r.stderr);
    let r = wfrun(&["explain", "resnext50_32x4d"]);
    assert!(
        r.stdout.starts_with("Clarifai_ResNext (template"),
        "{}",
        r.stderr
    );
    let r = wfrun(&["explain", "top_k"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("`top_k` is a parameter of `visual_search`")
            && r.stderr.contains("`wfrun explain visual_search.top_k`"),
        "{}",
        r.stderr
    );

    let r = wfrun(&["explain", "Clarifai_ResNext.batch_sise"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean `batch_size`?"));
    let r = wfrun(&["explain", "Clarifai_Resnet"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("did you mean `Clarifai_ResNext`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn fmt_formats_in_place_checks_and_leaves_broken_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let messy = dir.path().join("messy.wf");
    std::fs::write(
        &messy,
        "use Clarifai_ResNext{image_size=64   # small\nbatch_size=16}\ndata {train=\"x\"}\n",
    )
    .unwrap();
    let broken = dir.path().join("broken.wf");
    let broken_text = "use Clarifai_ResNext {\n  image_size = = 64\n}\n";
    std::fs::write(&broken, broken_text).unwrap();
    let folder = dir.path().to_str().unwrap();

    let check = wfrun(&["fmt", "--check", folder]);
    assert_eq!(check.code, 1);
    assert!(
        check.stdout.contains("messy.wf: not formatted"),
        "{}",
        check.stdout
    );
    assert!(
        check.stderr.contains("broken.wf` has 1 syntax error"),
        "{}",
        check.stderr
    );

    let run = wfrun(&["fmt", messy.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(&messy).unwrap(),
        "use Clarifai_ResNext {\n    image_size = 64  # small\n    batch_size = 16\n}\ndata { train = \"x\" }\n"
    );
    assert_eq!(wfrun(&["fmt", "--check", messy.to_str().unwrap()]).code, 0);

    assert_eq!(
        wfrun(&["fmt", folder]).code,
        1,
        "the broken file fails the run"
    );
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), broken_text);
}

/// One path that cannot be read hides nothing else: every other file is
/// still checked, each problem is said, and the status says there was one.
#[cfg(unix)]
#[test]
fn a_bad_path_is_reported_and_the_rest_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["a", "b", "linked", "loop"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    let text = "use Clarifai_ResNext { image_size = 3 }\ndata { train = \"x\" }\n";
    std::fs::write(d.join("a/w.wf"), text).unwrap();
    std::fs::write(d.join("b/w.wf"), text).unwrap();
    // A link to a workflow file is one; a link to a folder (here back up,
    // a loop) is not entered; a link to nothing is said.
    std::os::unix::fs::symlink("../a/w.wf", d.join("linked/w.wf")).unwrap();
    std::os::unix::fs::symlink("..", d.join("loop/up")).unwrap();
    std::os::unix::fs::symlink("nowhere.wf", d.join("loop/dangling.wf")).unwrap();
    let path = |p: &str| d.join(p).to_str().unwrap().to_string();
    let out = wfrun(&[
        "check",
        "--no-fs",
        &path("missing"),
        &path("b"),
        &path("linked"),
        &path("loop"),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("missing`: no such file or folder"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("dangling.wf`: a link to nothing"),
        "{}",
        out.stderr
    );
    // A file named twice (itself and in its folder, or through a link) is
    // checked once.
    let twice = wfrun(&[
        "check",
        "--no-fs",
        &path("a"),
        &path("a/w.wf"),
        &path("linked"),
    ]);
    assert!(
        twice.stderr.contains("checked 1 file: 1 error"),
        "{}",
        twice.stderr
    );
    // b's file and the linked one checked, nothing through the folder link.
    assert!(
        out.stderr.contains("checked 2 files: 2 errors"),
        "{}",
        out.stderr
    );
}

#[cfg(unix)]
#[test]
fn fmt_writes_through_a_link_and_keeps_the_files_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.wf");
    std::fs::write(
        &real,
        "use Clarifai_ResNext{image_size=64}\ndata {train=\"x\"}\n",
    )
    .unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("link.wf");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let run = wfrun(&["fmt", link.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        "use Clarifai_ResNext { image_size = 64 }\ndata { train = \"x\" }\n"
    );
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // A second name (hard link) still sees the formatted text.
    let twin = dir.path().join("twin.wf");
    std::fs::hard_link(&real, &twin).unwrap();
    std::fs::write(&real, "use Clarifai_ResNext{image_size=64}\n").unwrap();
    assert_eq!(wfrun(&["fmt", real.to_str().unwrap()]).code, 0);
    assert_eq!(
        std::fs::read_to_string(&twin).unwrap(),
        "use Clarifai_ResNext { image_size = 64 }\n"
    );
    std::fs::remove_file(&twin).unwrap();
    // A file marked read-only is left as it is, and said.
    let fixed = dir.path().join("fixed.wf");
    std::fs::write(&fixed, "use Clarifai_ResNext{image_size=64}\n").unwrap();
    std::fs::set_permissions(&fixed, std::fs::Permissions::from_mode(0o444)).unwrap();
    let run = wfrun(&["fmt", fixed.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is read-only"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(&fixed).unwrap(),
        "use Clarifai_ResNext{image_size=64}\n"
    );
    std::fs::remove_file(&fixed).unwrap();
    // Run by root, another user's file stays theirs.
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(&real).unwrap().uid() == 0 {
        std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
        std::fs::write(&real, "use Clarifai_ResNext{image_size=64}\n").unwrap();
        assert_eq!(wfrun(&["fmt", real.to_str().unwrap()]).code, 0);
        let m = std::fs::metadata(&real).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no partial file left: {names:?}");
}

/// Runs `wfrun ARGS` with its standard output a pipe whose reading end is
/// already closed, as `wfrun ... | head` leaves it.
fn into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_standard_output_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.wf", "b.wf", "c.wf"] {
        std::fs::write(
            dir.path().join(name),
            "use Clarifai_ResNext{image_size=64}\ndata{train=\"x\"}\n",
        )
        .unwrap();
    }
    let folder = dir.path().to_str().unwrap();
    let cases: [&[&str]; 14] = [
        &["--help"],
        &["--version"],
        &["run", "--help"],
        &["lsp"],
        &["run", "tests/fixtures/schedule.wf"],
        &["check", "tests/fixtures/schedule.wf"],
        &["templates"],
        &["templates", "--format", "json"],
        &["explain", "wf::off-step"],
        &["explain", "Clarifai_ResNext.batch_size"],
        &["check", "--no-fs", "workflows"],
        &["check", "--no-fs", "--format", "json", "tests/fixtures"],
        &["plan", "--no-fs", "workflows/quickstart.wf"],
        &["fmt", folder],
    ];
    for args in cases {
        let (code, stderr) = into_closed_pipe(args);
        assert!(
            !stderr.contains("panicked") && code != Some(101),
            "{args:?}: exit {code:?}\n{stderr}"
        );
    }
    // Every file was formatted, not only the first.
    for name in ["a.wf", "b.wf", "c.wf"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.contains("image_size = 64"), "{name}: {text}");
    }
    // A command's status is its own, whatever became of its output.
    let (code, _) = into_closed_pipe(&["check", "--no-fs", "tests/fixtures/schedule.wf"]);
    assert_eq!(code, Some(1));
    for args in [
        &[
            "check",
            "--no-fs",
            "--format",
            "json",
            "tests/fixtures/schedule.wf",
        ][..],
        &["plan", "--no-fs", "workflows/quickstart.wf"],
        &[
            "plan",
            "--no-fs",
            "--format",
            "json",
            "workflows/quickstart.wf",
        ],
        &["templates"],
        &["templates", "--format", "json"],
    ] {
        let expected = if args[0] == "check" { 1 } else { 0 };
        let (code, stderr) = into_closed_pipe(args);
        assert_eq!(code, Some(expected), "{args:?}: {stderr}");
    }
    // Standard output and error both closed: no panic either.
    for args in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        let (reader2, writer2) = std::io::pipe().unwrap();
        drop((reader, reader2));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_wfrun"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .status()
            .unwrap();
        assert_ne!(status.code(), Some(101), "{args:?}");
        assert!(status.code().is_some(), "{args:?}: ended by a signal");
    }
}

#[test]
fn a_workflow_file_after_a_global_option_is_run() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(["--color", "never", "tests/fixtures/schedule.wf"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The checker's errors (status 1), not clap's "unrecognized subcommand" (2).
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wf::schedule"), "{stderr}");
    // A run's own flag before the file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(["--fresh", "tests/fixtures/schedule.wf"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wf::schedule"), "{stderr}");
}

/// The cost model through the binary: `WFRUN_MEMORY_GIB` stands for the
/// machine a workflow will run on, and the plan's JSON holds the cost.
#[test]
fn the_memory_of_another_machine_can_be_checked_against() {
    let wf = "tests/fixtures/schedule_warnings.wf";
    let run = |gib: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wfrun"))
            .args(["check", "--format", "json", wf])
            .env("WFRUN_MEMORY_GIB", gib)
            .output()
            .unwrap()
    };
    let small = run("2");
    let text = String::from_utf8(small.stdout).unwrap();
    assert!(text.contains("\"code\":\"wf::memory\""), "{text}");
    assert!(text.contains("cannot be allocated"), "{text}");
    assert_eq!(small.status.code(), Some(1));
    let large = run("64");
    assert!(!String::from_utf8(large.stdout)
        .unwrap()
        .contains("wf::memory"));
    // A value that is not a memory size is an error, not this machine's memory.
    for bad in ["abc", "0", "-4", "inf", "16GB", "1e-300"] {
        let out = run(bad);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("WFRUN_MEMORY_GIB is `{bad}`, not a number of GiB")),
            "{stderr}"
        );
    }
    // Commands that do not check memory are not stopped by it.
    let fmt = std::process::Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(["fmt", "--check", wf])
        .env("WFRUN_MEMORY_GIB", "abc")
        .output()
        .unwrap();
    assert_ne!(
        fmt.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&fmt.stderr)
    );
    let plan = wfrun(&["plan", "--format", "json", wf]);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert!(v["cost"]["train_peak_bytes"].as_u64().unwrap() > 1 << 30);
    assert!(v["cost"]["times"]["source"]
        .as_str()
        .unwrap()
        .contains("fallback"));
}

/// `--threshold` is checked as the arguments are read, as written.
#[cfg(feature = "train")]
#[test]
fn a_threshold_that_is_not_a_probability_is_an_argument_error() {
    for bad in ["1e400", "-0.1", "1", "NaN"] {
        let out = wfrun(&["predict", "runs/x", "a.png", "--threshold", bad]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("`{bad}` is not a probability from 0 up to")),
            "{}",
            out.stderr
        );
    }
}
