//! The library as an embedding program uses it: check, read diagnostics, plan.

use std::path::Path;

use wfrun::hyper::{Count, StepParams};
use wfrun::spec::{Architecture, Derived, Num, ParamValue};
use wfrun::workflow::Resolved;
use wfrun::{check_file, check_source, CheckOptions, Code, Severity};

fn no_fs() -> CheckOptions {
    CheckOptions {
        filesystem: false,
        ..Default::default()
    }
}

/// A data folder of concept sub-folders holding `n` (empty) images each:
/// enough for the checker, which counts them without reading them.
fn image_folder(root: &Path, concepts: &[(&str, usize)]) {
    for &(concept, n) in concepts {
        std::fs::create_dir_all(root.join(concept)).unwrap();
        for i in 0..n {
            std::fs::write(root.join(concept).join(format!("{i}.png")), b"").unwrap();
        }
    }
}

fn codes(text: &str) -> Vec<Code> {
    check_source("test.wf", text, &no_fs())
        .diagnostics
        .iter()
        .map(|d| d.code)
        .collect()
}

#[test]
fn every_shipped_workflow_checks_clean_and_all_templates_are_covered() {
    let files = wfrun::workflow_files(Path::new("workflows")).unwrap();
    assert!(files.len() >= 4);
    let mut architectures = Vec::new();
    for f in &files {
        let c = check_file(f, &CheckOptions::default()).unwrap();
        assert!(
            c.diagnostics.is_empty(),
            "{}: {:#?}",
            f.display(),
            c.diagnostics
        );
        let w = c.workflow.expect("a clean check gives a workflow");
        assert!(w.dataset.is_some(), "the data folder was read");
        architectures.push(w.template.architecture);
    }
    for a in Architecture::ALL {
        assert!(
            architectures.contains(&a),
            "no shipped workflow trains {a:?}"
        );
    }
}

#[test]
fn a_file_with_three_broken_lines_reports_three_syntax_errors_and_the_rest() {
    let text = "use Clarifai_ResNext {\n  image_size = 1000\n  batch_size == 8\n  num_epochs: 3\n  logreg = 2\n}\ndata { train = \"x\" }\nseed = = 3\nstep clustering { k = 1 }\n";
    let c = check_source("t.wf", text, &no_fs());
    let syntax: Vec<usize> = c
        .diagnostics
        .iter()
        .filter(|d| d.code == Code::Syntax)
        .map(|d| c.sources.get(c.source).line_col(d.span.start).0)
        .collect();
    assert_eq!(syntax, [3, 4, 8]);
    let semantic: Vec<Code> = c
        .diagnostics
        .iter()
        .filter(|d| d.code != Code::Syntax)
        .map(|d| d.code)
        .collect();
    assert_eq!(
        semantic,
        [Code::OffStep, Code::OutOfRange, Code::OutOfRange]
    );
    assert!(c.workflow.is_none());
}

#[test]
fn hyperparameters_of_other_templates_and_misspellings() {
    let c = check_source(
        "t.wf",
        "use Clarifai_InceptionBatchNorm { angular_margin = 0.5  batch_sise = 3 }\ndata { train = \"x\" }\n",
        &no_fs(),
    );
    let d = &c.diagnostics[0];
    assert_eq!(d.code, Code::ParamNotInTemplate);
    assert!(d
        .label
        .as_deref()
        .unwrap()
        .contains("Clarifai_ResNet_AngularMargin"));
    assert_eq!(
        c.diagnostics[1].help.as_deref(),
        Some("did you mean `batch_size`?")
    );
}

#[test]
fn the_schedule_rules() {
    let base =
        |body: &str| format!("use Clarifai_ResNext {{ {body} }}\ndata {{ train = \"x\" }}\n");
    assert_eq!(codes(&base("init_epochs = 70")), [Code::Schedule]);
    let c = check_source("t.wf", &base("init_epochs = 70"), &no_fs());
    assert!(c.has_errors(), "init beyond the total is an error");
    let c = check_source("t.wf", &base("num_epochs = 25"), &no_fs());
    assert_eq!(c.diagnostics[0].severity, Severity::Warning);
    assert_eq!(
        c.diagnostics[0].message,
        "the learning rate never decreases"
    );
    assert!(
        codes(&base("num_epochs = 30")).is_empty(),
        "25 + 7 > 30 with the default step_epochs is fine"
    );
    assert_eq!(
        codes(&base("num_epochs = 30  init_epochs = 20  step_epochs = 10")),
        [Code::Schedule]
    );
}

/// The help for a `step_epochs` that never applies asks for a value the
/// template allows: lowering it only while some `step_epochs` gives a second
/// decrease, otherwise raising `num_epochs` (within its maximum) or removing it.
#[test]
fn the_schedule_help_asks_only_for_allowed_values() {
    let help = |text: String| {
        let c = check_source("t.wf", &text, &no_fs());
        let d: Vec<_> = c
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::Schedule)
            .collect();
        assert_eq!(d.len(), 1, "{:#?}", c.diagnostics);
        d[0].help.clone().unwrap()
    };
    let resnext =
        |body: &str| format!("use Clarifai_ResNext {{ {body} }}\ndata {{ train = \"x\" }}\n");
    assert_eq!(
        help(resnext(
            "num_epochs = 22  init_epochs = 20  step_epochs = 5"
        )),
        "lower `step_epochs` below 2 for further decreases, or remove it"
    );
    assert_eq!(
        help(resnext(
            "num_epochs = 21  init_epochs = 20  step_epochs = 5"
        )),
        "raise `num_epochs` to at least 26 for a second decrease, or remove `step_epochs`: \
         one epoch follows `init_epochs`, so the rate decreases once whatever `step_epochs` is"
    );
    assert_eq!(
        help(resnext(
            "num_epochs = 200  init_epochs = 199  step_epochs = 5"
        )),
        "remove `step_epochs`: one epoch follows `init_epochs`, so the rate decreases once \
         whatever `step_epochs` is"
    );
    let narrowed = "template Slow extends Clarifai_ResNext { param step_epochs { min = 4 } }\n\
                    use Slow { num_epochs = 23  init_epochs = 20  step_epochs = 4 }\n\
                    data { train = \"x\" }\n";
    assert_eq!(
        help(narrowed.to_string()),
        "raise `num_epochs` to at least 25 for a second decrease, or remove `step_epochs`: \
         3 epochs follow `init_epochs` and `step_epochs` is at least 4, so the rate decreases once"
    );
}

#[test]
fn narrowed_templates_are_proven_and_enforced() {
    let text = "template T extends Clarifai_ResNext {\n  param image_size { min = 64  max = 256  step = 32  default = 128 }\n}\nuse T { image_size = 288 }\ndata { train = \"x\" }\n";
    let c = check_source("t.wf", text, &no_fs());
    assert_eq!(c.diagnostics.len(), 1, "{:#?}", c.diagnostics);
    let d = &c.diagnostics[0];
    assert_eq!(d.code, Code::OutOfRange);
    assert!(d.message.contains("above the maximum 256"));
    // The narrowed bound is in the same file, so it is labelled there.
    assert!(d.related.iter().any(|l| l.span.source == c.source));

    // A narrowed default applies when the workflow leaves the value unset.
    let c = check_source("t.wf", &text.replace("image_size = 288", ""), &no_fs());
    let w = c.workflow.unwrap();
    assert_eq!(w.hyper.image_size, 128);

    // Off the parent's grid (32 + 16k), a step that is not a multiple, a default off the new grid.
    for (body, expected) in [
        ("min = 40", Code::Narrowing),
        ("step = 24", Code::Narrowing),
        ("min = 64  step = 32  default = 80", Code::OffStep),
        ("max = 1040", Code::Narrowing),
    ] {
        let text = format!("template T extends Clarifai_ResNext {{ param image_size {{ {body} }} }}\nuse T {{ }}\ndata {{ train = \"x\" }}\n");
        assert_eq!(codes(&text), [expected], "{body}");
    }
    // Templates may extend templates of the same file, in any order.
    let text = "template B extends A { param batch_size { max = 32 } }\ntemplate A extends Clarifai_ResNext { param batch_size { max = 64  default = 32 } }\nuse B { batch_size = 48 }\ndata { train = \"x\" }\n";
    assert_eq!(codes(text), [Code::OutOfRange]);
}

#[test]
fn derived_defaults_resolve_at_plan_time() {
    let dir = tempfile::tempdir().unwrap();
    image_folder(&dir.path().join("images"), &[("a", 6), ("b", 4), ("c", 10)]);
    let wf = dir.path().join("w.wf");
    std::fs::write(&wf, "use Clarifai_ResNext { batch_size = 8 }\ndata { train = \"images\"  eval = 0.25 }\nseed = 11\nstep clustering { }\n").unwrap();
    let c = check_file(&wf, &CheckOptions::default()).unwrap();
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
    let w = c.workflow.as_ref().unwrap();
    assert!(matches!(
        w.params
            .iter()
            .find(|p| &*p.name == "num_items_per_epoch")
            .unwrap()
            .value,
        Resolved::Derived(_)
    ));
    assert_eq!(
        w.hyper.num_items_per_epoch,
        Count::Derived(Derived::DatasetSize)
    );
    let plan = c.plan().unwrap();
    let items = plan
        .params
        .iter()
        .find(|p| &*p.name == "num_items_per_epoch")
        .unwrap();
    assert_eq!(
        items.value,
        Some(ParamValue::Num(Num::Int(14))),
        "20 images; 2, 1 and 3 of the concepts' 6, 4 and 10 held out"
    );
    assert_eq!(plan.steps_per_epoch, Some(2));
    let k = plan.steps[0]
        .params
        .iter()
        .find(|p| &*p.name == "k")
        .unwrap();
    assert_eq!(k.value, Some(ParamValue::Num(Num::Int(3))));
    let seed = plan.steps[0]
        .params
        .iter()
        .find(|p| &*p.name == "seed")
        .unwrap();
    assert_eq!(seed.value, Some(ParamValue::Num(Num::Int(11))));
    // The typed plan holds the same values, resolved.
    assert_eq!(plan.hyper.num_items_per_epoch, Count::Value(14));
    match &plan.steps[0].typed {
        StepParams::Clustering(c) => {
            assert_eq!(c.k, Count::Value(3));
            assert_eq!(c.seed, 11);
        }
        other => panic!("{other:?}"),
    }
}

/// Writes a workflow beside a data folder laid out by `make`, and checks it.
fn check_with_data(make: impl Fn(&Path), batch: u32) -> wfrun::Checked {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    std::fs::create_dir_all(&data).unwrap();
    make(&data);
    let wf = dir.path().join("w.wf");
    std::fs::write(
        &wf,
        format!("use Clarifai_ResNext {{ batch_size = {batch} }}\ndata {{ train = \"images\" }}\n"),
    )
    .unwrap();
    check_file(&wf, &CheckOptions::default()).unwrap()
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

#[test]
fn a_run_folder_that_is_a_file_is_an_error_at_output() {
    let dir = tempfile::tempdir().unwrap();
    for concept in ["cat", "dog"] {
        touch(&dir.path().join(format!("images/{concept}/1.jpg")));
    }
    std::fs::create_dir_all(dir.path().join("runs")).unwrap();
    std::fs::write(dir.path().join("runs/kept"), "precious").unwrap();
    let wf = dir.path().join("w.wf");
    for (output, says) in [
        ("runs/kept", "runs/kept` is a file, not a folder"),
        (
            "runs/kept/x",
            "runs/kept` on its way is a file, not a folder",
        ),
        ("runs/new", ""),
    ] {
        let text = format!(
            "use Clarifai_ResNext {{ batch_size = 8 }}\ndata {{ train = \"images\" }}\noutput = \"{output}\"\n"
        );
        std::fs::write(&wf, &text).unwrap();
        let c = check_file(&wf, &CheckOptions::default()).unwrap();
        let found = c.diagnostics.iter().find(|d| d.code == Code::PathNotFound);
        if says.is_empty() {
            assert!(found.is_none(), "{:#?}", c.diagnostics);
            continue;
        }
        let d = found.unwrap_or_else(|| panic!("{output}: {:#?}", c.diagnostics));
        assert!(d.message.contains(says), "{}", d.message);
        assert_eq!(d.span.start, text.find(&format!("\"{output}\"")).unwrap());
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs/kept")).unwrap(),
        "precious"
    );
}

#[test]
fn data_folder_problems_name_the_path() {
    // No concept folders at all.
    let c = check_with_data(|_| {}, 8);
    assert_eq!(c.diagnostics[0].code, Code::Data);
    assert!(c.has_errors());
    assert!(c.diagnostics[0].message.contains("images` holds no images"));

    // One concept only.
    let c = check_with_data(|d| touch(&d.join("cat/1.jpg")), 8);
    assert!(c.has_errors());
    assert!(c
        .diagnostics
        .iter()
        .any(|d| d.message.contains("a single concept, `cat`")));

    // Concept folders that cannot name concepts: all named, and how to fix them.
    let c = check_with_data(
        |d| {
            touch(&d.join("cat/1.jpg"));
            touch(&d.join("a\tb/1.jpg"));
            touch(&d.join("x\u{1b}[2J/1.jpg"));
        },
        8,
    );
    let bad = c.diagnostics.iter().find(|d| d.code == Code::Data).unwrap();
    assert!(
        bad.message
            .contains("2 concept folders cannot name concepts")
            && bad.message.contains("a\\tb")
            && bad.message.contains("x\\u{1b}[2J"),
        "{}",
        bad.message
    );
    assert!(
        bad.help.as_deref().unwrap().contains("rename it"),
        "{bad:?}"
    );

    // An empty concept folder and loose images: warnings naming them.
    let c = check_with_data(
        |d| {
            touch(&d.join("cat/1.JPG"));
            touch(&d.join("cat/2.jpg"));
            touch(&d.join("cat/3.png"));
            touch(&d.join("dog/nested/2.webp"));
            std::fs::create_dir_all(d.join("empty")).unwrap();
            touch(&d.join("stray.png"));
            touch(&d.join("notes.txt"));
        },
        8,
    );
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    let messages: Vec<&str> = c.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("an image lies directly in") && m.contains("images")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("images/empty` holds no images")),
        "{messages:?}"
    );
    assert_eq!(c.workflow.unwrap().dataset.unwrap().images(), 4);

    // Three concepts of two images: one of each held out, half the images
    // where a tenth was asked, and the checker says so.
    let c = check_with_data(
        |d| {
            for concept in ["a", "b", "c"] {
                touch(&d.join(concept).join("1.png"));
                touch(&d.join(concept).join("2.png"));
            }
        },
        8,
    );
    assert!(
        c.diagnostics
            .iter()
            .any(|d| !d.is_error() && d.message.starts_with("3 of the 6 images are held out")),
        "{:#?}",
        c.diagnostics
    );

    // Two concepts of one image each: neither can lose its only image to
    // evaluation, so nothing is held out, and the checker says so.
    let c = check_with_data(
        |d| {
            touch(&d.join("cat/1.png"));
            touch(&d.join("dog/1.png"));
        },
        8,
    );
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::Data)
        .expect("a warning");
    assert!(!d.is_error(), "{}", d.message);
    assert!(
        d.message.contains("no image can be held out"),
        "{}",
        d.message
    );
    let plan = c.plan().unwrap();
    assert_eq!(
        (plan.data.train_images, plan.data.eval_images),
        (Some(2), Some(0))
    );

    // The seed's advice: a batch of around twice the number of concepts.
    let c = check_with_data(
        |d| {
            for concept in ["a", "b", "c", "d", "e"] {
                touch(&d.join(concept).join("1.png"));
            }
        },
        6,
    );
    let advice = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::BatchAdvice)
        .expect("advice");
    assert!(advice
        .help
        .as_deref()
        .unwrap()
        .contains("`batch_size = 10`"));
    assert!(!c.has_errors());
}

/// Checks `data { DATA }` in a folder laid out by `make`; the diagnostics' messages.
fn check_data_line(make: impl Fn(&Path), data: &str) -> (wfrun::Checked, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path());
    let wf = dir.path().join("w.wf");
    std::fs::write(
        &wf,
        format!("use Clarifai_ResNext {{ batch_size = 8 }}\ndata {{ {data} }}\n"),
    )
    .unwrap();
    let c = check_file(&wf, &CheckOptions::default()).unwrap();
    let messages = c.diagnostics.iter().map(|d| d.message.clone()).collect();
    (c, messages)
}

#[test]
fn manifests_are_read_and_their_images_looked_for() {
    // A quoted CSV manifest (RFC 4180): its paths are unquoted, its images found.
    let quoted = |d: &Path| {
        for i in 0..4 {
            touch(&d.join(format!("img/cat, {i}.jpg")));
            touch(&d.join(format!("img/dog {i}.jpg")));
        }
        let mut text = String::from("\"path\",\"concepts\"\r\n");
        for i in 0..4 {
            text += &format!("\"img/cat, {i}.jpg\",\"cat\"\r\n\"img/dog {i}.jpg\",dog\r\n");
        }
        std::fs::write(d.join("m.csv"), text).unwrap();
    };
    let (c, messages) = check_data_line(quoted, "train = manifest(\"m.csv\")");
    assert!(!c.has_errors(), "{messages:?}");
    let set = c.workflow.unwrap().dataset.unwrap();
    assert_eq!(set.images(), 8);
    assert_eq!(
        set.concepts,
        [("cat".to_string(), 4), ("dog".to_string(), 4)]
    );

    // A header alone: an error that speaks of manifests, not folders.
    let (c, messages) = check_data_line(
        |d| std::fs::write(d.join("m.csv"), "path,concepts\n").unwrap(),
        "train = manifest(\"m.csv\")",
    );
    assert!(c.has_errors());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("m.csv` lists no images")),
        "{messages:?}"
    );

    // Listed paths that do not exist: none → error, one concept's → error, some → warning.
    let listed = |missing: &'static [&'static str]| {
        move |d: &Path| {
            let mut text = String::new();
            for i in 0..3 {
                for c in ["cat", "dog"] {
                    let name = format!("{c}{i}.png");
                    if !missing.contains(&c) && !missing.contains(&name.as_str()) {
                        touch(&d.join(&name));
                    }
                    text += &format!("{name},{c}\n");
                }
            }
            std::fs::write(d.join("m.csv"), text).unwrap();
        }
    };
    let (c, messages) = check_data_line(listed(&["cat", "dog"]), "train = manifest(\"m.csv\")");
    assert!(c.has_errors());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("none of the 6 images") && m.contains("cat0.png` (line 1)")),
        "{messages:?}"
    );
    let (c, messages) = check_data_line(listed(&["dog"]), "train = manifest(\"m.csv\")");
    assert!(c.has_errors());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("no listed image of `dog` exists")),
        "{messages:?}"
    );
    let (c, messages) = check_data_line(listed(&["dog1.png"]), "train = manifest(\"m.csv\")");
    assert!(!c.has_errors(), "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("1 of the 6 images") && m.contains("dog1.png` (line 4)")),
        "{messages:?}"
    );
    assert_eq!(c.workflow.unwrap().dataset.unwrap().images(), 5);
    // In a whole-file JSON array an image is named by its element.
    let (c, messages) = check_data_line(
        |d: &Path| {
            for name in ["cat0.png", "dog0.png", "dog1.png"] {
                touch(&d.join(name));
            }
            let rows: Vec<String> = [
                "cat0.png,cat",
                "cat1.png,cat",
                "dog0.png,dog",
                "dog1.png,dog",
            ]
            .iter()
            .map(|r| {
                let (p, c) = r.split_once(',').unwrap();
                format!("  {{\"path\": \"{p}\", \"concept\": \"{c}\"}}")
            })
            .collect();
            std::fs::write(d.join("m.json"), format!("[\n{}\n]\n", rows.join(",\n"))).unwrap();
        },
        "train = manifest(\"m.json\")",
    );
    assert!(!c.has_errors(), "{messages:?}");
    assert!(
        messages.iter().any(|m| m.contains("cat1.png` (element 2)")),
        "{messages:?}"
    );

    // A line listing an image again: merged, with a warning; other concepts
    // on it make the image multi-label.
    let (c, messages) = check_data_line(
        |d| {
            let mut text = String::new();
            for i in 0..3 {
                for c in ["cat", "dog"] {
                    touch(&d.join(format!("{c}{i}.png")));
                    text += &format!("{c}{i}.png,{c}\n");
                }
            }
            text += "cat0.png,cat\ncat1.png,dog\n";
            std::fs::write(d.join("m.csv"), text).unwrap();
        },
        "train = manifest(\"m.csv\")",
    );
    assert!(
        messages.iter().any(|m| m.contains("2 line(s) of `")
            && m.contains("list an image listed before: line 7 (as line 1), line 8 (as line 3)")),
        "{messages:?}"
    );
    // (`logreg = 1`, the default: several concepts an image are allowed.)
    let set = c.workflow.unwrap().dataset.unwrap();
    assert!(set.multi_label);
    assert_eq!(set.images(), 6);

    // A malformed line is named with its line number.
    let (c, messages) = check_data_line(
        |d| std::fs::write(d.join("m.csv"), "a.png,cat\n\"b.png,dog\nc.png\n").unwrap(),
        "train = manifest(\"m.csv\")",
    );
    assert!(c.has_errors());
    assert!(
        messages.iter().any(|m| m.contains("m.csv:")),
        "{messages:?}"
    );
}

#[test]
fn evaluation_images_must_share_the_training_concepts() {
    let layout = |eval: &'static [&'static str]| {
        move |d: &Path| {
            for c in ["cat", "dog"] {
                for i in 0..5 {
                    touch(&d.join(format!("train/{c}/{i}.png")));
                }
            }
            for c in eval {
                touch(&d.join(format!("eval/{c}/0.png")));
            }
        }
    };
    let (c, messages) = check_data_line(
        layout(&["bird", "fish"]),
        "train = \"train\"  eval = \"eval\"",
    );
    assert!(c.has_errors());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("no evaluation image has a training concept")),
        "{messages:?}"
    );
    let (c, messages) = check_data_line(
        layout(&["cat", "fish"]),
        "train = \"train\"  eval = \"eval\"",
    );
    assert!(!c.has_errors(), "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("1 evaluation image(s) of concepts not trained on (`fish`)")),
        "{messages:?}"
    );
    // Evaluation images that are the training images.
    let (c, messages) = check_data_line(layout(&[]), "train = \"train\"  eval = \"train\"");
    assert!(c.has_errors());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("10 of the 10 evaluation images are training images too")),
        "{messages:?}"
    );
    // One evaluation concept is enough.
    let (c, messages) = check_data_line(layout(&["cat"]), "train = \"train\"  eval = \"eval\"");
    assert!(!c.has_errors() && messages.is_empty(), "{messages:?}");
}

#[cfg(unix)]
#[test]
fn data_walks_are_bounded_and_unreadable_folders_are_errors() {
    use std::os::unix::fs::symlink;
    // A link DAG (each level links twice to the next: 2^22 paths) and a loop.
    let dag = |d: &Path| {
        let root = d.join("images");
        for c in ["cat", "dog"] {
            touch(&root.join(c).join("0.png"));
        }
        for level in 0..=22 {
            touch(&d.join(format!("l{level}/{level}.png")));
        }
        for level in 0..22 {
            let next = d.join(format!("l{}", level + 1));
            symlink(&next, d.join(format!("l{level}/a"))).unwrap();
            symlink(&next, d.join(format!("l{level}/b"))).unwrap();
        }
        symlink(d.join("l0"), root.join("cat/deep")).unwrap();
        symlink(root.join("cat/deep"), root.join("cat/again")).unwrap();
    };
    let started = std::time::Instant::now();
    let (c, messages) = check_data_line(dag, "train = \"images\"");
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    assert!(!c.has_errors(), "{messages:?}");
    let set = c.workflow.unwrap().dataset.unwrap();
    // Each real folder is walked once: `cat/again` leads to folders walked.
    assert_eq!(
        set.concepts,
        [("cat".to_string(), 24), ("dog".to_string(), 1)]
    );

    // A link from one concept into another's folder, or back to the data
    // folder, is an error: the images would belong to whichever came first.
    for (link, to, says) in [
        (
            "images/cat/more",
            "images/dog",
            "from both concept `cat` and concept `dog`",
        ),
        ("images/dog/up", "images", "the data folder itself"),
    ] {
        let (c, messages) = check_data_line(
            |d| {
                for c in ["cat", "dog"] {
                    touch(&d.join(format!("images/{c}/0.png")));
                }
                symlink(d.join(to), d.join(link)).unwrap();
            },
            "train = \"images\"",
        );
        assert!(c.has_errors(), "{link}");
        assert!(messages.iter().any(|m| m.contains(says)), "{messages:?}");
    }

    // A pseudo file system is refused, not walked.
    if Path::new("/proc/self").exists() {
        let (c, messages) = check_data_line(|_| {}, "train = \"/proc/self\"");
        assert!(c.has_errors());
        assert!(
            messages.iter().any(|m| m.contains("`/proc`")),
            "{messages:?}"
        );
    }

    // A concept folder that cannot be read is an error naming it (not
    // checkable where permissions do not bind, as for root).
    let locked = |d: &Path| {
        touch(&d.join("images/cat/0.png"));
        touch(&d.join("images/dog/0.png"));
        touch(&d.join("images/owl/0.png"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("images/owl"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
    };
    let probe = tempfile::tempdir().unwrap();
    locked(probe.path());
    let binding = std::fs::read_dir(probe.path().join("images/owl")).is_err();
    if binding {
        let (c, messages) = check_data_line(locked, "train = \"images\"");
        assert!(c.has_errors());
        assert!(
            messages.iter().any(|m| m.contains("images/owl")),
            "{messages:?}"
        );
    }
}

#[test]
fn an_embeddings_size_that_cannot_fit_is_refused_with_the_estimate() {
    for e in ["9223372036854775807", "100000000"] {
        let text = format!("use Clarifai_ResNet_AngularMargin {{ embeddings_size = {e} }}\ndata {{ train = \"x\" }}\n");
        let c = check_source("test.wf", &text, &no_fs());
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.code == Code::Memory)
            .unwrap_or_else(|| panic!("{e}: {:#?}", c.diagnostics));
        assert!(d.is_error(), "{d:?}");
        assert!(d.message.contains("GiB"), "{}", d.message);
        assert!(c.workflow.is_none());
    }
    assert!(!codes(
        "use Clarifai_ResNet_AngularMargin { embeddings_size = 4096 }\ndata { train = \"x\" }\n"
    )
    .contains(&Code::Memory));
}

#[test]
fn the_run_folder_lies_apart_from_the_images_and_the_base_model() {
    let two_concepts = |d: &Path| {
        for c in ["cat", "dog"] {
            for i in 0..4 {
                touch(&d.join(format!("images/{c}/{i}.png")));
            }
        }
    };
    // The default `runs/NAME` inside a training folder `.`.
    let (c, messages) = check_data_line(
        |d| {
            two_concepts(d);
            for c in ["cat", "dog"] {
                touch(&d.join(format!("{c}/0.png")));
            }
        },
        "train = \".\"",
    );
    assert!(c.has_errors());
    assert!(
        messages
            .iter()
            .any(|m| m.contains("lies inside the training folder `")),
        "{messages:?}"
    );
    let (c, messages) = check_data_line(two_concepts, "train = \"images\"");
    assert!(!c.has_errors(), "{messages:?}");

    // The images inside the run folder: its `steps` or `--fresh` would reach them.
    let dir = tempfile::tempdir().unwrap();
    for c in ["cat", "dog"] {
        for i in 0..4 {
            touch(&dir.path().join(format!("out/steps/{c}/{i}.png")));
        }
    }
    let wf = dir.path().join("w.wf");
    std::fs::write(
        &wf,
        "use Clarifai_ResNext { batch_size = 8 }\ndata { train = \"out/steps\" }\noutput = \"out\"\n",
    )
    .unwrap();
    let c = check_file(&wf, &CheckOptions::default()).unwrap();
    assert!(
        c.diagnostics.iter().any(|d| d
            .message
            .contains("(training images) lies inside the run folder `")),
        "{:#?}",
        c.diagnostics
    );
    assert!(c.has_errors());

    // A base workflow writing into its base model's folder.
    let dir = tempfile::tempdir().unwrap();
    two_concepts(dir.path());
    let base = dir.path().join("runs/finished");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("model.safetensors"), b"").unwrap();
    std::fs::write(
        base.join("model.json"),
        "{\"workflow\": \"finished\", \"template\": \"Clarifai_InceptionBatchNorm\", \"architecture\": \"bn_inception\", \
         \"image_size\": 32, \"concepts\": [\"cat\", \"dog\"], \"logreg\": false, \"params\": []}",
    )
    .unwrap();
    let wf = dir.path().join("w.wf");
    std::fs::write(
        &wf,
        "base = \"runs/finished\"\ndata { train = \"images\" }\noutput = \"runs/./finished\"\n",
    )
    .unwrap();
    let c = check_file(&wf, &CheckOptions::default()).unwrap();
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.code == Code::BaseModel && d.message.contains("is the base model's folder")),
        "{:#?}",
        c.diagnostics
    );
}

#[test]
fn skipping_the_file_system_skips_path_checks() {
    let text = "use Clarifai_ResNext { }\ndata { train = \"does/not/exist\"  weights = \"nope.safetensors\" }\n";
    assert!(codes(text).is_empty());
    let c = check_source("t.wf", text, &CheckOptions::default());
    let found: Vec<Code> = c.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(found, [Code::PathNotFound, Code::PathNotFound]);
}

#[test]
fn checking_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("w.wf");
    std::fs::write(
        &wf,
        "use Clarifai_ResNext { }\ndata { train = \"images\" }\noutput = \"out\"\n",
    )
    .unwrap();
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let c = check_file(&wf, &CheckOptions::default()).unwrap();
    assert!(c.has_errors(), "the data folder is missing");
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn devices() {
    let wf = |device: &str| {
        format!("use Clarifai_ResNext {{ }}\ndata {{ train = \"x\" }}\ndevice = {device}\n")
    };
    assert!(codes(&wf("cpu")).is_empty());
    assert!(codes(&wf("auto")).is_empty());
    assert_eq!(codes(&wf("cuda")), [Code::BadDevice]);
    assert_eq!(codes(&wf("cuda(-1)")), [Code::BadDevice]);
    assert_eq!(codes(&wf("cuda(0, 1)")), [Code::BadDevice]);
    let expected: &[Code] = if cfg!(feature = "cuda") {
        &[]
    } else {
        &[Code::DeviceUnavailable]
    };
    assert_eq!(codes(&wf("cuda(1)")), expected);
}

/// The prelude is laid out as `wfrun fmt` lays out workflows.
#[test]
fn the_prelude_is_formatted() {
    let formatted = wfrun::format::format_source(wfrun::spec::PRELUDE).unwrap();
    assert!(
        formatted == wfrun::spec::PRELUDE,
        "src/spec/prelude.wfp is not formatted; `wfrun fmt` a copy named .wf and copy it back"
    );
}

#[test]
fn the_prelude_is_the_only_place_for_root_templates_and_step_kinds() {
    assert_eq!(codes("template X { architecture = bn_inception }\nuse Clarifai_ResNext {}\ndata { train = \"x\" }\n"), [Code::BadTemplate]);
    assert_eq!(
        codes("template X extends Clarifai_ResNext { architecture = bn_inception }\nuse X {}\ndata { train = \"x\" }\n"),
        [Code::Misplaced]
    );
}

/// Applies `fix` to `text`.
fn apply(text: &str, fix: &wfrun::Fix) -> String {
    format!(
        "{}{}{}",
        &text[..fix.span.start],
        fix.replacement,
        &text[fix.span.end..]
    )
}

#[test]
fn every_offered_fix_removes_its_diagnostic() {
    let mut texts: Vec<(String, String)> = std::fs::read_dir("tests/fixtures")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wf"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    // Each kind of fix, at least once.
    texts.push((
        "kinds.wf".into(),
        "workflow w\n\
         use Clarifai_ResNext { image_size = 20  bacth_size = 8  num_epochs = 2.0  init_epochs = \"1\" }\n\
         data { train = \"x\"  evl = 0.1 }\nsede = 3\ndevice = cdua\n\
         step clusterin { k = 2 }\nstep visual_search { queries = evl  top_k = 5 }\n\
         template T extends Clarifai_ResNxt { doc = \"x\" }\n\
         template U extends Clarifai_ResNext { param image_sise { max = 64 } }\n"
            .into(),
    ));
    let mut fixed = 0;
    for (name, text) in &texts {
        let before = check_source(name, text, &no_fs());
        for d in before.diagnostics.iter().filter(|d| !d.fixes.is_empty()) {
            assert!(d.help.is_some(), "{name}: a fix without help: {d:?}");
            for fix in &d.fixes {
                assert!(
                    d.span.start <= fix.span.start && fix.span.end <= d.span.end,
                    "{name}: a fix outside its diagnostic: {d:?}"
                );
                let after = check_source(name, &apply(text, fix), &no_fs());
                let still = after
                    .diagnostics
                    .iter()
                    .any(|e| e.code == d.code && e.span.start == d.span.start);
                assert!(
                    !still,
                    "{name}: `{}` does not fix {d:?}: {:#?}",
                    fix.title, after.diagnostics
                );
                fixed += 1;
            }
        }
    }
    let kinds = check_source("kinds.wf", &texts.last().unwrap().1, &no_fs());
    let with_fixes: Vec<Code> = kinds
        .diagnostics
        .iter()
        .filter(|d| !d.fixes.is_empty())
        .map(|d| d.code)
        .collect();
    for code in [
        Code::UnknownTemplate,
        Code::OutOfRange,
        Code::UnknownParam,
        Code::WrongType,
        Code::UnknownSetting,
        Code::BadDevice,
        Code::UnknownStepKind,
    ] {
        assert!(
            with_fixes.contains(&code),
            "{code} offers no fix: {:#?}",
            kinds.diagnostics
        );
    }
    assert!(fixed >= 15, "only {fixed} fixes tried");
}

/// A base model folder holding `model.json` with `params` and `image_size`.
fn base_workflow(params: &str, image_size: u32) -> wfrun::Checked {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("runs/finished");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("model.safetensors"), b"").unwrap();
    std::fs::write(
        base.join("model.json"),
        format!(
            "{{\"workflow\": \"finished\", \"template\": \"Clarifai_InceptionBatchNorm\", \"architecture\": \"bn_inception\", \
             \"image_size\": {image_size}, \"concepts\": [\"a\", \"b\"], \"logreg\": false, \"params\": [{params}]}}"
        ),
    )
    .unwrap();
    let wf = dir.path().join("w.wf");
    std::fs::write(
        &wf,
        "base = \"runs/finished\"\ndata { train = \"images\" }\n",
    )
    .unwrap();
    let options = CheckOptions {
        filesystem: false,
        ..CheckOptions::default()
    };
    check_file(&wf, &options).unwrap()
}

#[test]
fn a_base_model_is_typed_from_what_its_model_json_records() {
    // No params: the recorded image size and logreg still hold, the rest
    // takes the template's defaults.
    let c = base_workflow("", 48);
    assert!(!c.has_errors(), "{:#?}", c.diagnostics);
    let w = c.workflow.unwrap();
    assert_eq!(w.hyper.image_size, 48);
    assert_eq!(w.hyper.loss, wfrun::hyper::Loss::Softmax);

    // A recorded value outside the template's range is the base model's error.
    let c = base_workflow("{\"name\": \"image_size\", \"value\": 1}", 1);
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::BaseModel)
        .expect("an error for the base model");
    assert!(
        d.message.contains("image_size") && d.message.contains("minimum"),
        "{}",
        d.message
    );

    // Two records that disagree.
    let c = base_workflow("{\"name\": \"image_size\", \"value\": 64}", 32);
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.code == Code::BaseModel && d.message.contains("as 64 and as 32")),
        "{:#?}",
        c.diagnostics
    );
}

#[test]
fn a_concept_folder_named_with_a_concept_separator_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    for c in ["cat;dog", "bird|fish", "plain"] {
        let folder = dir.path().join("images").join(c);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("1.png"), b"").unwrap();
        std::fs::write(folder.join("2.png"), b"").unwrap();
    }
    let wf = dir.path().join("w.wf");
    std::fs::write(
        &wf,
        "use Clarifai_ResNext { image_size = 64 }\ndata { train = \"images\" }\n",
    )
    .unwrap();
    let c = check_file(&wf, &CheckOptions::default()).unwrap();
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.message.contains("hold `;` or `|`"))
        .unwrap_or_else(|| panic!("{:#?}", c.diagnostics));
    assert!(!d.is_error());
    assert!(
        d.message.contains("`bird|fish` and `cat;dog`"),
        "{}",
        d.message
    );
}

#[test]
fn a_base_named_as_a_file_must_be_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("runs/finished");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("model.safetensors"), b"").unwrap();
    std::fs::write(run.join("model.json"), b"{}").unwrap();
    std::fs::write(run.join("embeddings.safetensors"), b"").unwrap();
    let base_error = |base: &str| {
        let wf = dir.path().join("w.wf");
        std::fs::write(
            &wf,
            format!("base = \"{base}\"\ndata {{ train = \"images\" }}\n"),
        )
        .unwrap();
        let c = check_file(&wf, &no_fs()).unwrap();
        let d = c
            .diagnostics
            .iter()
            .find(|d| d.code == Code::BaseModel)
            .unwrap_or_else(|| panic!("{base}: {:#?}", c.diagnostics))
            .clone();
        (d.message, d.help.unwrap_or_default())
    };
    // The run's `model.json` is not read as weights: the error says what to name.
    let (message, help) = base_error("runs/finished/model.json");
    assert!(message.contains("is not a model's weights"), "{message}");
    assert!(
        help.contains("runs/finished") && help.contains("model.safetensors"),
        "{help}"
    );
    let (message, _) = base_error("/dev/null");
    assert!(
        message.contains("`/dev/null` is not a model's weights"),
        "{message}"
    );
    // Another `.safetensors` of the run: no `model.json` of its own.
    let (message, help) = base_error("runs/finished/embeddings.safetensors");
    assert!(message.contains("embeddings.json"), "{message}");
    assert!(help.contains("name the folder of a finished run"), "{help}");
}

#[test]
fn an_output_of_the_current_folder_is_not_an_empty_path() {
    for written in [".", "sub/..", "./"] {
        let text = format!(
            "use Clarifai_ResNext {{}}\ndata {{ train = \"x\" }}\noutput = \"{written}\"\n"
        );
        let c = check_source("w.wf", &text, &no_fs());
        assert_eq!(c.workflow.unwrap().output, Path::new("."), "{written}");
    }
}

#[test]
fn a_search_index_path_must_be_a_lancedb_table_this_build_can_open() {
    let text = |index: &str| {
        format!(
            "use Clarifai_ResNext {{ image_size = 64 }}\ndata {{ train = \"images\" }}\n\
             step visual_search {{ index = \"{index}\" }}\n"
        )
    };
    let checked = check_source("t.wf", &text("vectors/photos"), &no_fs());
    assert_eq!(checked.diagnostics.len(), 1, "{:?}", checked.diagnostics);
    assert_eq!(checked.diagnostics[0].code, Code::VectorTable);
    assert!(checked.diagnostics[0]
        .message
        .contains("`vectors/photos` is not a LanceDB table"));
    let checked = check_source("t.wf", &text("vectors/photos.lance"), &no_fs());
    if cfg!(feature = "lancedb") {
        assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
        let Some(StepParams::VisualSearch(p)) =
            checked.workflow.as_ref().map(|w| w.steps[0].typed.clone())
        else {
            panic!("a search step");
        };
        assert!(
            matches!(p.index, wfrun::hyper::Index::Table(t) if t.ends_with("vectors/photos.lance"))
        );
    } else {
        assert_eq!(codes(&text("vectors/photos.lance")), [Code::VectorTable]);
        assert!(checked.diagnostics[0]
            .message
            .contains("cannot search LanceDB tables"));
    }
}

/// A machine of `gib` GiB (no swap) measured at the fallback's throughput.
fn machine(gib: u64, swap_gib: u64) -> wfrun::cost::Machine {
    wfrun::cost::Machine {
        memory: Some(wfrun::cost::Memory {
            total: gib << 30,
            swap: swap_gib << 30,
        }),
        throughput: Some(wfrun::cost::Throughput::fallback()),
    }
}

fn on(machine: wfrun::cost::Machine) -> CheckOptions {
    CheckOptions {
        filesystem: false,
        machine: Some(machine),
        ..Default::default()
    }
}

/// ResNet-101 at `size` px, batch `batch`, `epochs` epochs of `items` images.
fn resnet(size: u64, batch: u64, epochs: u64, items: u64) -> String {
    format!(
        "use Clarifai_ResNet_AngularMargin {{\n    image_size = {size}\n    batch_size = {batch}\n    num_epochs = {epochs}\n    init_epochs = {epochs}\n    num_items_per_epoch = {items}\n}}\ndata {{ train = \"x\" }}\n"
    )
}

#[test]
fn the_plan_holds_the_cost_counted_from_the_networks() {
    let c = check_source("t.wf", &resnet(224, 32, 2, 6400), &on(machine(1024, 0)));
    let plan = c.plan().expect("checks");
    let cost = plan.cost.clone().expect("a cost");
    // ResNet-101's backbone at 224 px: torchvision's 7.80 GMACs less its classifier.
    assert!((cost.counts.macs_forward as f64 / 7.80e9 - 1.0).abs() < 0.01);
    assert_eq!(cost.counts.macs_train, 3 * cost.counts.macs_forward);
    let t = cost.times.expect("times on the CPU");
    // 200 steps an epoch, 2 epochs, and nothing counted to judge or embed.
    let epoch = t.epoch_s.unwrap();
    assert!((epoch - 200.0 * t.step_s).abs() < 1e-6 * epoch);
    assert!((t.total_s.unwrap() - 2.0 * epoch).abs() < 1e-6 * epoch);
    let json = serde_json::to_value(&plan).unwrap();
    assert!(json["cost"]["train_peak_bytes"].as_u64().unwrap() > 1 << 30);
    assert!(plan.to_string().contains("peak memory"));
    // A device without a measured throughput: memory, but no times.
    let gpu = resnet(224, 32, 2, 6400) + "device = auto\n";
    let mut m = machine(1024, 0);
    m.throughput = None;
    let plan = check_source("t.wf", &gpu, &on(m)).plan().unwrap();
    assert!(plan.cost.unwrap().times.is_none());
}

#[test]
fn peak_memory_past_the_machine_warns_and_past_memory_and_swap_refuses() {
    // ResNet-101 at 512 px, batch 128: tens of GiB of activations.
    let text = resnet(512, 128, 1, 128);
    let c = check_source("t.wf", &text, &on(machine(1024, 0)));
    assert!(!c.diagnostics.iter().any(|d| d.code == Code::Memory));
    let need = c.plan().unwrap().cost.unwrap().train_peak_bytes;
    let gib = need >> 30;
    // Just below the need: a warning at `batch_size`, with the batch that fits.
    let c = check_source("t.wf", &text, &on(machine(gib, 4 * gib)));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::Memory)
        .unwrap();
    assert_eq!(d.severity, Severity::Warning, "{d:?}");
    assert_eq!(&text[d.span.start..d.span.end], "batch_size = 128", "{d:?}");
    let help = d.help.as_deref().unwrap();
    let fits: usize = help
        .split("`batch_size = ")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{help}"));
    assert!((2..128).contains(&fits), "{help}");
    let smaller = resnet(512, fits as u64, 1, 128);
    let c = check_source("t.wf", &smaller, &on(machine(gib, 4 * gib)));
    assert!(!c.diagnostics.iter().any(|d| d.code == Code::Memory));
    // Past memory and swap together: an error, no workflow.
    let c = check_source("t.wf", &text, &on(machine(gib / 2, gib / 4)));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::Memory)
        .unwrap();
    assert_eq!(d.severity, Severity::Error);
    assert!(d.label.as_deref().unwrap().contains("cannot be allocated"));
    assert!(c.workflow.is_none());
}

#[test]
fn a_run_longer_than_a_day_warns_with_settings_that_finish_within_one() {
    // 100 epochs of 50,000 images at 224 px: weeks on one core.
    let text = resnet(224, 32, 100, 50_000);
    let c = check_source("t.wf", &text, &on(machine(1024, 0)));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::LongRun)
        .unwrap_or_else(|| panic!("{:#?}", c.diagnostics));
    assert_eq!(d.severity, Severity::Warning);
    assert!(d.message.contains("days"), "{}", d.message);
    assert_eq!(&text[d.span.start..d.span.end], "num_epochs = 100");
    let help = d.help.as_deref().unwrap();
    assert!(help.contains("`num_epochs = "), "{help}");
    assert!(help.contains("device = cuda"), "{help}");
    // The epochs it names finish within a day.
    let epochs: u64 = help
        .split("`num_epochs = ")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let c = check_source(
        "t.wf",
        &resnet(224, 32, epochs, 50_000),
        &on(machine(1024, 0)),
    );
    assert!(!c.diagnostics.iter().any(|d| d.code == Code::LongRun));
    let total = c
        .plan()
        .unwrap()
        .cost
        .unwrap()
        .times
        .unwrap()
        .total_s
        .unwrap();
    assert!(total <= 86_400.0 && total > 0.5 * 86_400.0, "{total}");
    // A faster machine: no warning.
    let mut fast = machine(1024, 0);
    for r in fast
        .throughput
        .iter_mut()
        .flat_map(|t| t.networks.iter_mut())
    {
        r.train_s_per_gmac /= 1000.0;
        r.embed_s_per_gmac /= 1000.0;
    }
    let c = check_source("t.wf", &text, &on(fast));
    assert!(!c.diagnostics.iter().any(|d| d.code == Code::LongRun));
}

#[test]
fn inlay_hints_follow_the_batch_size() {
    let hints = |text: &str| {
        let m = machine(1024, 0);
        wfrun::ide::inlay_hints(text, "t.wf", &on(m), None)
            .into_iter()
            .map(|h| (text[..h.offset].lines().count(), h.label))
            .collect::<Vec<_>>()
    };
    let a = hints(&resnet(64, 32, 6, 640));
    let b = hints(&resnet(64, 16, 6, 640));
    let label = |hs: &[(usize, String)], prefix: &str| {
        hs.iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(line, l)| (*line, l.clone()))
            .unwrap_or_else(|| panic!("{prefix}: {hs:?}"))
    };
    // The lrate after `batch_size` (no `per_item_lrate` written), the steps.
    assert_eq!(label(&a, "lrate").1, "lrate 0.0025");
    assert_eq!(label(&b, "lrate").1, "lrate 0.00125");
    assert_eq!(label(&a, "20 steps").1, "20 steps an epoch, 120 in all");
    assert_eq!(label(&b, "40 steps").1, "40 steps an epoch, 240 in all");
    assert_eq!(label(&a, "lrate").0, 3, "on the batch_size line");
    assert!(label(&a, "epochs 1–6").1.contains("0.0025"));
    // After the `use` block: time and peak memory, which change with the batch.
    let (line, cost_a) = label(&a, "≈");
    assert_eq!(line, 7, "after the block's `}}`");
    assert!(
        cost_a.contains("a step") && cost_a.contains("peak"),
        "{cost_a}"
    );
    assert_ne!(cost_a, label(&b, "≈").1);
    // A file with an error derives nothing.
    assert!(hints("use Clarifai_ResNext { image_size = 33 }\ndata { train = \"x\" }\n").is_empty());
}

#[test]
fn hovering_a_template_shows_its_cost_at_the_settings() {
    let text = resnet(64, 32, 6, 640);
    let at = text.find("Clarifai_ResNet").unwrap() + 3;
    let md = wfrun::ide::hover_on(&text, at, &machine(1024, 0)).unwrap();
    assert!(
        md.contains("**Cost at these settings** (64 px, batch 32)"),
        "{md}"
    );
    assert!(md.contains("a training step"), "{md}");
}

#[test]
fn a_sweeps_plan_times_each_trial_and_the_whole() {
    let text = resnet(64, 32, 4, 640).replace("    batch_size = 32\n", "")
        + "sweep { batch_size = values(16, 32) }\n";
    let plan = check_source("t.wf", &text, &on(machine(1024, 0)))
        .plan()
        .expect("checks");
    let sweep = plan.sweep.as_ref().unwrap();
    let times: Vec<f64> = sweep.trials.iter().map(|t| t.total_s.unwrap()).collect();
    assert_eq!(times.len(), 2);
    assert!(times.iter().all(|&t| t > 0.0));
    let shown = plan.to_string();
    assert!(shown.contains("cost of trial-001"), "{shown}");
    assert!(shown.contains("trials on this machine"), "{shown}");
}

/// The help's `name = value` settings, as (name, value) pairs.
fn suggested(help: &str) -> Vec<(String, String)> {
    help.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|s| s.split_once(" = "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn fewer_epochs_keep_the_schedule_valid_and_a_gpu_is_named_as_written() {
    // `init_epochs` left at its default 25: fewer epochs must lower it too.
    let text = "use Clarifai_ResNet_AngularMargin {\n    image_size = 224\n    batch_size = 64\n    num_items_per_epoch = 6400\n}\ndata { train = \"x\" }\n";
    let c = check_source("t.wf", text, &on(machine(1024, 0)));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::LongRun)
        .unwrap();
    let help = d.help.as_deref().unwrap();
    assert!(help.contains("`device = cuda(0)`"), "{help}");
    let settings = suggested(help);
    let epochs: Vec<&(String, String)> = settings
        .iter()
        .filter(|(n, _)| n == "num_epochs" || n == "init_epochs")
        .collect();
    assert_eq!(epochs.len(), 2, "{help}");
    let applied = text.replace(
        "    num_items_per_epoch = 6400\n",
        &format!(
            "    num_items_per_epoch = 6400\n    {} = {}\n    {} = {}\n",
            epochs[0].0, epochs[0].1, epochs[1].0, epochs[1].1
        ),
    );
    // (The angular margin's defaults from scratch keep their own warning.)
    let passes = |c: &wfrun::Checked| {
        !c.has_errors() && !c.diagnostics.iter().any(|d| d.code == Code::LongRun)
    };
    let c = check_source("t.wf", &applied, &on(machine(1024, 0)));
    assert!(passes(&c), "{applied}\n{:#?}", c.diagnostics);
    // The image size it names passes too.
    let size = settings.iter().find(|(n, _)| n == "image_size").unwrap();
    let applied = text.replace("image_size = 224", &format!("image_size = {}", size.1));
    let c = check_source("t.wf", &applied, &on(machine(1024, 0)));
    assert!(passes(&c), "{:#?}", c.diagnostics);
}

#[test]
fn the_batch_that_fits_lies_on_the_templates_grid() {
    let text = "template Big extends Clarifai_ResNext {\n    param batch_size { min = 8  step = 8  default = 32 }\n}\nuse Big {\n    image_size = 1024\n    batch_size = 128\n    num_epochs = 2\n    init_epochs = 1\n}\ndata { train = \"x\" }\n";
    let need = check_source("t.wf", text, &on(machine(4096, 0)))
        .plan()
        .unwrap()
        .cost
        .unwrap()
        .train_peak_bytes;
    let gib = (need >> 30) / 2;
    let c = check_source("t.wf", text, &on(machine(gib, 0)));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::Memory)
        .unwrap();
    let batch = suggested(d.help.as_deref().unwrap())
        .into_iter()
        .find(|(n, _)| n == "batch_size")
        .unwrap()
        .1;
    assert_eq!(batch.parse::<u64>().unwrap() % 8, 0, "{batch}");
    let applied = text.replace("batch_size = 128", &format!("batch_size = {batch}"));
    let c = check_source("t.wf", &applied, &on(machine(gib, 0)));
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
}

#[test]
fn every_trial_of_a_sweep_is_costed() {
    let text = "use Clarifai_ResNext {\n    image_size = 1024\n    num_epochs = 200\n    init_epochs = 100\n}\ndata { train = \"x\" }\nsweep {\n    batch_size = values(64, 128)\n    objective = maximize(map_at_r)\n}\n";
    let c = check_source("t.wf", text, &on(machine(16, 0)));
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::Memory)
        .unwrap_or_else(|| panic!("{:#?}", c.diagnostics));
    assert!(d.is_error());
    assert!(d.message.contains("trial"), "{}", d.message);
}

#[test]
fn without_the_images_counted_the_time_says_it_is_the_trainings() {
    let text = resnet(64, 32, 4, 640);
    let plan = check_source("t.wf", &text, &on(machine(1024, 0)))
        .plan()
        .unwrap();
    let shown = plan.to_string();
    assert!(
        shown.contains("for 4 epochs of training; judging and embedding come on top"),
        "{shown}"
    );
    assert!(!plan.cost.unwrap().times.unwrap().complete);
}

#[test]
fn augment_is_checked_and_planned() {
    let text = |a: &str| {
        format!(
            "use Clarifai_ResNext {{ image_size = 64 }}\ndata {{ train = \"x\"  augment = {a} }}\n"
        )
    };
    for (a, want) in [
        ("crop_flip", wfrun::workflow::Augment::CropFlip),
        ("crop", wfrun::workflow::Augment::Crop),
        ("none", wfrun::workflow::Augment::None),
    ] {
        let c = check_source("t.wf", &text(a), &no_fs());
        let plan = c
            .plan()
            .unwrap_or_else(|| panic!("{a}: {:#?}", c.diagnostics));
        assert_eq!(plan.data.augment, want);
        let json = serde_json::to_value(&plan).unwrap();
        // The default is not written: checkpoints of earlier runs keep their basis.
        assert_eq!(
            json["data"].get("augment").is_some(),
            a != "crop_flip",
            "{a}"
        );
        assert!(plan.to_string().contains("  augment  "));
    }
    let c = check_source("t.wf", &text("crop_flp"), &no_fs());
    let d = &c.diagnostics[0];
    assert_eq!(d.code, Code::WrongType);
    assert_eq!(d.fixes[0].replacement, "crop_flip");
    assert!(codes(&text("\"crop\"")).contains(&Code::WrongType));
    assert!(codes(&text("2")).contains(&Code::WrongType));
}

#[test]
fn one_commands_checks_list_a_data_folder_once_and_an_editors_see_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    image_folder(&data, &[("a", 5), ("b", 5)]);
    let text = "use Clarifai_ResNext { batch_size = 4 }\ndata { train = \"images\"  eval = 0.2 }\n";
    let (first, second) = (dir.path().join("one.wf"), dir.path().join("two.wf"));
    std::fs::write(&first, text).unwrap();
    std::fs::write(&second, text).unwrap();
    let images = |file: &Path, options: &CheckOptions| {
        let c = check_file(file, options).unwrap();
        assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
        c.workflow.unwrap().dataset.unwrap().images
    };
    let shared = CheckOptions {
        listings: Some(wfrun::data::Listings::new()),
        ..Default::default()
    };
    assert_eq!(images(&first, &shared), 10);
    // An image added after the first file's check: the same command's
    // second check answers from the listing the first one made; a check
    // without shared listings (an editor's, a later command's) sees it.
    std::fs::write(data.join("a").join("5.png"), b"").unwrap();
    assert_eq!(images(&second, &shared), 10);
    assert_eq!(images(&second, &CheckOptions::default()), 11);
    assert_eq!(
        images(
            &second,
            &CheckOptions {
                listings: Some(wfrun::data::Listings::new()),
                ..Default::default()
            }
        ),
        11
    );
}

#[test]
fn a_byte_order_mark_is_read_as_nothing_and_kept_by_the_formatter() {
    let text = "workflow x\nuse Clarifai_ResNext { image_size = 3 }\ndata { train = \"x\" }\n";
    let marked = format!("\u{feff}{text}");
    let plain = check_source("w.wf", text, &no_fs());
    let with = check_source("w.wf", &marked, &no_fs());
    let codes = |c: &wfrun::Checked| c.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>();
    assert_eq!(codes(&with), [Code::OutOfRange]);
    assert_eq!(codes(&with), codes(&plain));
    // The same place, three bytes on (the mark's).
    assert_eq!(
        with.diagnostics[0].span.start,
        plain.diagnostics[0].span.start + 3
    );
    let formatted =
        wfrun::format::format_source("\u{feff}use Clarifai_ResNext{image_size=64}\n").unwrap();
    assert_eq!(
        formatted,
        "\u{feff}use Clarifai_ResNext { image_size = 64 }\n"
    );
    // A second mark is not one: the formatter refuses what the checker does.
    let twice = "\u{feff}\u{feff}use Clarifai_ResNext { image_size = 64 }\n";
    assert!(wfrun::format::format_source(twice).is_err());
    assert!(check_source("w.wf", twice, &no_fs()).has_errors());
}

#[cfg(unix)]
#[test]
fn a_data_folder_that_is_a_loop_of_links_is_named_so() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("again", dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink("data", dir.path().join("again")).unwrap();
    let wf = dir.path().join("w.wf");
    std::fs::write(&wf, "use Clarifai_ResNext { }\ndata { train = \"data\" }\n").unwrap();
    let c = check_file(&wf, &CheckOptions::default()).unwrap();
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == Code::PathNotFound)
        .expect("the folder is reported");
    assert!(
        d.message.contains("is a link that leads nowhere"),
        "{}",
        d.message
    );
}
