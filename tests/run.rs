//! Running a workflow for real (full-size BN-Inception at 32 px, a few steps)
//! on images the test writes: the run folder, bad images, determinism,
//! resuming after a stop, and a diverging loss.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use wfrun::exec::{run, Event, RunError, RunOptions};
use wfrun::{check_file, CheckOptions};

/// Three concepts told apart by hue and position, 16 PNGs each, plus one
/// corrupt image and an empty concept folder.
fn write_images(root: &Path) {
    let hues = [[220u8, 40, 40], [40, 200, 60], [50, 80, 230]];
    for (c, hue) in hues.iter().enumerate() {
        let folder = root.join(format!("concept{c}"));
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..16u32 {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let inside = (x / 14) as usize == c && (8 + i % 5..28 + i % 5).contains(&y);
                if inside {
                    image::Rgb(*hue)
                } else {
                    image::Rgb([((x * 3 + i) % 60) as u8, 30, ((y * 2) % 50) as u8])
                }
            });
            img.save(folder.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(
        root.join("concept1/broken.png"),
        b"\x89PNG\r\n\x1a\ntruncated",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
}

fn workflow(dir: &Path, name: &str, extra: &str) -> wfrun::Workflow {
    let text = format!(
        "workflow {name}\nuse Clarifai_InceptionBatchNorm {{\n  image_size = 32\n  batch_size = 8\n  num_epochs = 3\n  init_epochs = 2\n  step_epochs = 1\n  logreg = 0\n  {extra}\n}}\ndata {{ train = \"images\"  eval = 0.25 }}\nseed = 3\noutput = \"runs/{name}\"\n"
    );
    let path = dir.join(format!("{name}.wf"));
    std::fs::write(&path, text).unwrap();
    let checked = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    checked.workflow.unwrap()
}

fn model(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn same(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, t)| {
            let u = &b[k];
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == u.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
}

#[test]
fn a_run_trains_writes_its_folder_is_deterministic_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));

    // An uninterrupted run.
    let w = workflow(dir.path(), "full", "");
    let mut events = Vec::new();
    let summary = run(&w, &RunOptions::default(), &mut |e| events.push(e.clone())).unwrap();
    let out = summary.output.clone();
    for file in [
        "plan.json",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "model.safetensors",
        "model.json",
        "embeddings.safetensors",
        "embeddings.csv",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        meta["concepts"],
        serde_json::json!(["concept0", "concept1", "concept2"])
    );
    let bad: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::BadImage { .. }))
        .collect();
    assert!(!bad.is_empty(), "the corrupt image is reported");
    assert!(matches!(bad[0], Event::BadImage { path, .. } if path.ends_with("broken.png")));
    let steps = events
        .iter()
        .filter(|e| matches!(e, Event::Step { .. }))
        .count();
    assert!(steps >= 12, "{steps} steps");
    let index = std::fs::read_to_string(out.join("embeddings.csv")).unwrap();
    assert!(index.starts_with("split,row,path,concepts\ntrain,0,"));
    let emb =
        candle_core::safetensors::load(out.join("embeddings.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(
        emb["eval"].dims()[1],
        1024,
        "BN-Inception embeds in 1024 dimensions"
    );

    // The finished model as the frozen base of another workflow: it embeds the same
    // images to the same vectors, trains nothing and writes no model of its own.
    let text = "workflow reuse\nbase = \"runs/full\"\ndata { train = \"images\"  eval = 0.25 }\nseed = 3\noutput = \"runs/reuse\"\n\
                step classifier_head { logreg = 0  epochs = 50 }\n\
                step clustering { inits = 2 }\n\
                step visual_search { top_k = 3  index = all }\n\
                step visual_search as by_folder { top_k = 2  queries = \"images\" }\n\
                step clustering as too_many { k = 1000 }\n";
    std::fs::write(dir.path().join("reuse.wf"), text).unwrap();
    let checked = check_file(&dir.path().join("reuse.wf"), &CheckOptions::default()).unwrap();
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    let reuse = checked.workflow.unwrap();
    assert_eq!(
        reuse.hyper.image_size, 32,
        "the base model's hyperparameters"
    );
    let mut base_events = Vec::new();
    let reused = run(&reuse, &RunOptions::default(), &mut |e| {
        base_events.push(e.clone())
    })
    .unwrap();
    assert_eq!(reused.epochs, 0);
    assert!(!base_events.iter().any(|e| matches!(e, Event::Step { .. })));
    assert!(!reused.output.join("model.safetensors").exists());
    let base_emb =
        candle_core::safetensors::load(reused.output.join("embeddings.safetensors"), &Device::Cpu)
            .unwrap();
    let own_emb =
        candle_core::safetensors::load(out.join("embeddings.safetensors"), &Device::Cpu).unwrap();
    for split in ["train", "eval"] {
        let a = base_emb[split]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = own_emb[split]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b, "{split} embeddings differ");
    }
    assert_eq!(
        std::fs::read_to_string(reused.output.join("embeddings.csv")).unwrap(),
        std::fs::read_to_string(out.join("embeddings.csv")).unwrap()
    );

    // Its steps ran on those embeddings and wrote their files, metrics and pictures; the
    // one that cannot run is reported and the others still ran.
    assert_eq!(reused.failed_steps.len(), 1, "{:?}", reused.failed_steps);
    let (failed, why) = &reused.failed_steps[0];
    assert_eq!(failed, "too_many");
    assert!(why.contains("1000") && why.contains("48 images"), "{why}");
    assert!(base_events
        .iter()
        .any(|e| matches!(e, Event::StepFailed { step, .. } if step == "too_many")));
    // The corrupt image is reported once, not once per pass over the images.
    let bad = base_events
        .iter()
        .filter(|e| matches!(e, Event::BadImage { .. }))
        .count();
    assert_eq!((bad, reused.bad_images), (1, 1));
    let names: Vec<&str> = reused.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "classifier_head",
            "clustering",
            "visual_search",
            "by_folder"
        ]
    );
    let steps = reused.output.join("steps");
    for file in [
        "classifier_head/predictions.csv",
        "classifier_head/head.safetensors",
        "classifier_head/metrics.json",
        "clustering/clusters.csv",
        "clustering/centroids.safetensors",
        "visual_search/neighbours.csv",
        "by_folder/neighbours.csv",
    ] {
        assert!(steps.join(file).is_file(), "{file} missing");
    }
    let metric = |step: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(steps.join(step).join("metrics.json")).unwrap(),
        )
        .unwrap()
    };
    let head = metric("classifier_head");
    let accuracy = head["eval"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert_eq!(head["eval"]["images"], 12);
    let confusion = head["eval"]["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 3);
    let clusters = metric("clustering");
    assert_eq!(clusters["k"], 3, "k defaults to the number of concepts");
    assert_eq!(clusters["images"], 48, "every readable image is clustered");
    assert!(clusters["nmi"].as_f64().is_some() && clusters["ari"].as_f64().is_some());
    let csv = std::fs::read_to_string(steps.join("clustering/clusters.csv")).unwrap();
    assert_eq!(csv.lines().count(), 49);
    let search = metric("visual_search");
    assert_eq!(search["queries"], 12);
    assert_eq!(
        search["index_images"], 48,
        "`index = all` searches every image"
    );
    assert_eq!(search["top_k"], 3);
    assert!(search["recall_at_k"].as_f64().unwrap() >= search["recall_at_1"].as_f64().unwrap());
    let neighbours = std::fs::read_to_string(steps.join("visual_search/neighbours.csv")).unwrap();
    assert_eq!(neighbours.lines().count(), 1 + 12 * 3);
    // A query is never its own neighbour.
    for line in neighbours.lines().skip(1) {
        let fields: Vec<&str> = line.split("\",").collect();
        assert_ne!(fields[0], fields[1].split_once(',').unwrap().1, "{line}");
    }
    let folder = metric("by_folder");
    assert_eq!(
        folder["queries"], 48,
        "a folder of queries is embedded with the model"
    );
    for picture in [
        "embeddings_by_concept.svg",
        "clusters_clustering.svg",
        "confusion_classifier_head.svg",
        "search_visual_search.svg",
    ] {
        let svg = std::fs::read_to_string(reused.output.join("pictures").join(picture)).unwrap();
        assert!(svg.starts_with("<svg") && svg.len() > 1000, "{picture}");
    }
    let html = std::fs::read_to_string(reused.output.join("report.html")).unwrap();
    assert!(html.contains("pictures/search_visual_search.svg"));
    // The report's table speaks to people: labels, not JSON keys.
    for label in ["held-out accuracy", "silhouette", "recall@3", "mAP@3"] {
        assert!(html.contains(label), "{label} missing from the report");
    }
    assert!(!html.contains("top_k_accuracy") && !html.contains("recall_at"));
    // The step that could not run is in the report, and left no folder.
    assert!(html.contains("step too_many") && html.contains("did not run"));
    assert!(!steps.join("too_many").exists());
    assert!(std::fs::read_to_string(out.join("report.html"))
        .unwrap()
        .contains("pictures/training.svg"));

    // The same seed gives the same model.
    let again = run(
        &workflow(dir.path(), "again", ""),
        &RunOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(
        same(&model(&out), &model(&again.output)),
        "the same seed must give the same weights"
    );

    // Stopped in the middle of the second epoch (as Ctrl-C does), then resumed: the same
    // model as the uninterrupted run.
    let w = workflow(dir.path(), "resumed", "");
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let options = RunOptions {
        cancel: Some(cancel),
        ..Default::default()
    };
    let stopped = run(&w, &options, &mut |e| {
        if matches!(
            e,
            Event::Step {
                epoch: 2,
                step: 2,
                ..
            }
        ) {
            flag.store(true, Ordering::SeqCst);
        }
    });
    assert!(
        matches!(stopped, Err(RunError::Cancelled { epoch: 2, step: 3 })),
        "{stopped:?}"
    );
    assert!(!w.output.join("model.safetensors").exists());
    let resumed = run(
        &w,
        &RunOptions {
            resume: true,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    assert!(
        same(&model(&out), &model(&resumed.output)),
        "resuming must end with the uninterrupted run's weights"
    );
    let metrics = std::fs::read_to_string(resumed.output.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    // Each epoch's record covers all of it, the interrupted one too.
    let per_epoch = |text: &str| -> Vec<(f64, u64, u64)> {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let n = |k: &str| v[k].as_u64().unwrap();
                (v["train_loss"].as_f64().unwrap(), n("steps"), n("images"))
            })
            .collect()
    };
    let uninterrupted = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(per_epoch(&metrics), per_epoch(&uninterrupted));
}

#[test]
fn a_diverging_loss_stops_the_run_naming_epoch_and_step() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    // Batches of two: many steps before the first evaluation, so the loss
    // runs away within training.
    let text = "workflow diverges\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 2\n  num_epochs = 3\n  init_epochs = 2\n  step_epochs = 1\n  logreg = 0\n  per_item_lrate = 1000.0\n}\ndata { train = \"images\"  eval = 0.25 }\nseed = 3\noutput = \"runs/diverges\"\n";
    let (w, _) = checked(dir.path(), "diverges", text);
    let e = run(&w, &RunOptions::default(), &mut |_| {}).unwrap_err();
    let text = e.to_string();
    // Where the loss runs away first depends on the processor's rounding:
    // within a training step (the usual case), or only in the held-out
    // pass, whose batch norm uses running statistics that overflow while
    // each batch's own still normalise. Either stops the run, naming where.
    let epoch = match e {
        RunError::Diverged { epoch, step, .. } => {
            assert!(
                text.contains(&format!("epoch {epoch}, step {step}")),
                "{text}"
            );
            epoch
        }
        RunError::NotFinite { epoch, .. } => {
            assert!(text.contains(&format!("after epoch {epoch}")), "{text}");
            epoch
        }
        e => panic!("{e:?}"),
    };
    assert!(text.contains("smaller `per_item_lrate`"), "{text}");
    // The last good checkpoint (of the epoch before) is kept; no model is written.
    assert_eq!(w.output.join("checkpoint.safetensors").exists(), epoch > 1);
    assert!(!w.output.join("model.safetensors").exists());

    let w = workflow(dir.path(), "no_checkpoint", "");
    let e = run(
        &w,
        &RunOptions {
            resume: true,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("no checkpoint yet"), "{e}");
}

#[test]
fn several_concepts_per_image_need_sigmoid_units() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.csv"),
        "a.png,cat;dog\nb.png,dog\nc.png,cat\nd.png,dog\n",
    )
    .unwrap();
    for name in ["a", "b", "c", "d"] {
        image::RgbImage::new(8, 8)
            .save(dir.path().join(format!("{name}.png")))
            .unwrap();
    }
    let path = dir.path().join("w.wf");
    std::fs::write(&path, "use Clarifai_ResNext { logreg = 0  batch_size = 4 }\ndata { train = manifest(\"m.csv\") }\n").unwrap();
    let checked = check_file(&path, &CheckOptions::default()).unwrap();
    let e = checked
        .diagnostics
        .iter()
        .find(|d| d.is_error())
        .expect("an error");
    assert!(
        e.help.as_deref().unwrap_or("").contains("set `logreg = 1`"),
        "{e:?}"
    );
}

#[test]
fn unreadable_and_small_images_are_found_before_training() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    // 48 px training on 40 px images: every readable image is upscaled.
    let path = dir.path().join("strict.wf");
    std::fs::write(
        &path,
        "use Clarifai_InceptionBatchNorm { image_size = 48  batch_size = 8  logreg = 0 }\ndata { train = \"images\" }\n",
    )
    .unwrap();
    let w = check_file(&path, &CheckOptions::default())
        .unwrap()
        .workflow
        .unwrap();
    let mut events = Vec::new();
    let options = RunOptions {
        fail_on_bad_images: true,
        ..Default::default()
    };
    let result = run(&w, &options, &mut |e| events.push(e.clone()));
    let Err(RunError::BadImages(bad)) = &result else {
        panic!("{result:?}");
    };
    assert_eq!(bad.len(), 1);
    assert!(bad[0].path.ends_with("concept1/broken.png"));
    let message = result.unwrap_err().to_string();
    assert!(message.contains("broken.png") && message.contains("--fail-on-bad-images"));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Step { .. })),
        "nothing trained"
    );
    assert!(!w.output.join("checkpoint.safetensors").exists());
    let small = events.iter().find_map(|e| match e {
        Event::SmallImages {
            image_size,
            count,
            smallest,
            median_side,
            fitting_size,
        } => Some((
            *image_size,
            *count,
            smallest.len(),
            *median_side,
            *fitting_size,
        )),
        _ => None,
    });
    assert_eq!(
        small,
        Some((48, 48, 5, 40, Some(32))),
        "the 48 readable 40 px images are reported"
    );
}

/// Writes `text` as `NAME.wf` in `dir` and checks it.
fn checked(dir: &Path, name: &str, text: &str) -> (wfrun::Workflow, wfrun::Plan) {
    let path = dir.join(format!("{name}.wf"));
    std::fs::write(&path, text).unwrap();
    let checked = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    let plan = checked.plan().unwrap();
    (checked.workflow.unwrap(), plan)
}

/// Runs `w` (`fresh`: its output cleared first, as `--fresh` does) until
/// its first step is done, then cancels it: a checkpoint and the plan it
/// follows are left in its output.
fn stop_after_the_first_step(w: &wfrun::Workflow, fresh: bool) {
    let cancel = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        cancel: Some(cancel.clone()),
        fresh,
        ..Default::default()
    };
    let e = run(w, &options, &mut |e| {
        if matches!(e, Event::Step { .. }) {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap_err();
    assert!(matches!(e, RunError::Cancelled { .. }), "{e:?}");
}

#[test]
fn the_plan_is_what_training_used() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_images(&images);
    std::fs::remove_file(images.join("concept1/broken.png")).unwrap();
    // Concepts of 16, 6 and 6 images: a quarter of each held out is 4, 2
    // and 2 (a quarter of all 28 would be 7).
    for c in [1, 2] {
        for i in 6..16 {
            std::fs::remove_file(images.join(format!("concept{c}/{i}.png"))).unwrap();
        }
    }
    // 17 images an epoch in batches of 8: 8 and 9 (a last single image joins
    // the batch before it), two steps; the rate holds for two epochs and
    // then decays.
    let text = "workflow agree\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 8\n  num_epochs = 3\n  init_epochs = 2\n  step_epochs = 1\n  num_items_per_epoch = 17\n  logreg = 0\n}\ndata { train = \"images\"  eval = 0.25 }\nseed = 5\noutput = \"runs/agree\"\n";
    let (w, checker_plan) = checked(dir.path(), "agree", text);
    let mut steps_seen: HashMap<u64, Vec<f64>> = HashMap::new();
    let summary = run(&w, &RunOptions::default(), &mut |e| {
        if let Event::Step {
            epoch,
            learning_rate,
            ..
        } = e
        {
            steps_seen.entry(*epoch).or_default().push(*learning_rate);
        }
    })
    .unwrap();
    let read = |f: &str| std::fs::read_to_string(summary.output.join(f)).unwrap();
    let plan: serde_json::Value = serde_json::from_str(&read("plan.json")).unwrap();
    let rates: Vec<f64> = serde_json::from_value(plan["epoch_learning_rates"].clone()).unwrap();
    let steps_per_epoch = plan["steps_per_epoch"].as_u64().unwrap();
    let items = plan["items_per_epoch"].as_u64().unwrap();
    assert_eq!((steps_per_epoch, items), (2, 17));
    assert_eq!(rates.len(), 3);
    assert!(rates[0] == rates[1] && rates[2] < rates[1], "{rates:?}");
    assert_eq!(plan["optimizer_steps"].as_u64(), Some(6));
    // `wfrun plan` (the checker's counts) and the run's plan agree.
    assert_eq!(
        (
            plan["data"]["train_images"].as_u64(),
            plan["data"]["eval_images"].as_u64()
        ),
        (Some(20), Some(8))
    );
    assert_eq!(
        (
            checker_plan.data.train_images,
            checker_plan.data.eval_images
        ),
        (Some(20), Some(8))
    );
    assert_eq!(checker_plan.epoch_learning_rates, rates);
    assert_eq!(checker_plan.steps_per_epoch, Some(steps_per_epoch));
    assert_eq!(
        checker_plan.hyper,
        serde_json::from_value(plan["hyper"].clone()).unwrap()
    );

    // Each epoch trained at the plan's rate, for the plan's steps and images.
    let lines: Vec<serde_json::Value> = read("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        let epoch = i as u64 + 1;
        assert_eq!(line["epoch"].as_u64(), Some(epoch));
        assert_eq!(
            line["learning_rate"].as_f64(),
            Some(rates[i]),
            "epoch {epoch}"
        );
        assert_eq!(
            line["steps"].as_u64(),
            Some(steps_per_epoch),
            "epoch {epoch}"
        );
        assert_eq!(line["images"].as_u64(), Some(items), "epoch {epoch}");
        assert_eq!(steps_seen[&epoch], vec![rates[i]; steps_per_epoch as usize]);
    }
}

#[test]
fn an_unwritable_run_file_stops_the_run_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let text = |name: &str| {
        format!("workflow {name}\nuse Clarifai_InceptionBatchNorm {{\n  image_size = 32\n  batch_size = 8\n  num_epochs = 2\n  init_epochs = 1\n  num_items_per_epoch = 8\n  logreg = 0\n}}\ndata {{ train = \"images\"  eval = 0.25 }}\nseed = 3\noutput = \"runs/{name}\"\nstep clustering {{ k = 3 }}\nstep visual_search {{ top_k = 3 }}\n")
    };

    // A folder appears where `model.json` goes while the run trains.
    let (w, _) = checked(dir.path(), "late", &text("late"));
    let blocker = w.output.join("model.json");
    let e = run(&w, &RunOptions::default(), &mut |e| {
        if let Event::Epoch { epoch: 1, .. } = e {
            std::fs::create_dir_all(blocker.join("in_the_way")).unwrap();
        }
    })
    .unwrap_err();
    let RunError::Io { path, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(path, &blocker);
    let message = e.to_string();
    assert!(
        message.contains(&blocker.display().to_string()) && message.contains("cannot write"),
        "{message}"
    );
    assert!(!partial_exists(&w.output), "no partial file is left");

    // A step's folder that cannot be made stops the run too, not only the step.
    let (w, _) = checked(dir.path(), "step_file", &text("step_file"));
    let blocker = w.output.join("steps/clustering");
    std::fs::create_dir_all(w.output.join("steps")).unwrap();
    // (A previous run's folder: a plan beside the file in the way.)
    std::fs::write(w.output.join("plan.json"), b"{}").unwrap();
    std::fs::write(&blocker, b"a file in the way").unwrap();
    let mut failed_steps = 0;
    let e = run(&w, &RunOptions::default(), &mut |e| {
        if let Event::StepFailed { .. } = e {
            failed_steps += 1;
        }
    })
    .unwrap_err();
    assert!(
        matches!(&e, RunError::Io { path, .. } if *path == blocker),
        "{e:?}"
    );
    assert_eq!(failed_steps, 0, "reported as the run's error, not a step's");
    assert!(
        !w.output.join("steps/visual_search").exists(),
        "the run stopped at the clustering step"
    );
}

/// Whether a `*.partial` file is left anywhere under `root`.
fn partial_exists(root: &Path) -> bool {
    walk(root)
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "partial"))
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn resuming_an_edited_workflow_is_refused_naming_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let text = |batch: u32| {
        format!("workflow edited\nuse Clarifai_InceptionBatchNorm {{\n  image_size = 32\n  batch_size = {batch}\n  num_epochs = 2\n  init_epochs = 1\n  num_items_per_epoch = 16\n  logreg = 0\n}}\ndata {{ train = \"images\"  eval = 0.25 }}\nseed = 3\noutput = \"runs/edited\"\n")
    };
    // Stopped after the first step: a checkpoint and the plan it follows.
    let (w, _) = checked(dir.path(), "edited", &text(8));
    stop_after_the_first_step(&w, false);

    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    // The checkpoint itself records what it was trained by: a lost or
    // rewritten `plan.json` changes nothing.
    std::fs::remove_file(w.output.join("plan.json")).unwrap();
    let (edited, _) = checked(dir.path(), "edited", &text(4));
    let e = run(&edited, &resume, &mut |_| {}).unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(e, RunError::Resume { .. }) && message.contains("`batch_size`: 8 → 4"),
        "{message}"
    );
    // The setting alone: not what follows from it, nor any internal name.
    assert_eq!(message.matches('→').count(), 1, "{message}");
    assert!(message.contains("with `--fresh`"), "{message}");
    // Another augmentation trains otherwise: refused too.
    let cropped = text(8).replace("eval = 0.25", "eval = 0.25  augment = crop");
    let (edited, _) = checked(dir.path(), "edited", &cropped);
    let e = run(&edited, &resume, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("`augment`: crop_flip → crop"), "{e}");
    // Images moved to another concept: the same counts, other training.
    let images = dir.path().join("images");
    std::fs::rename(
        images.join("concept0/0.png"),
        images.join("concept2/moved.png"),
    )
    .unwrap();
    let (w2, _) = checked(dir.path(), "edited", &text(8));
    let e = run(&w2, &resume, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string()
            .contains("the images or their concepts: the same count, other files"),
        "{e}"
    );
    // ... and which image: the checkpoint lists those it trained on.
    assert!(
        e.to_string()
            .contains("1 image moved: `images/concept0/0.png` → `images/concept2/moved.png`"),
        "{e}"
    );
    // Another seed draws another held-out split: said as the seed.
    let (reseeded, _) = checked(
        dir.path(),
        "edited",
        &text(8).replace("seed = 3", "seed = 4"),
    );
    let e = run(&reseeded, &resume, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string()
            .contains("`seed`: 3 → 4 (the held-out images are drawn from it)\n"),
        "{e}"
    );
    std::fs::rename(
        images.join("concept2/moved.png"),
        images.join("concept0/0.png"),
    )
    .unwrap();
    // An image edited under its name: other pixels, refused, naming it.
    let edited_image = images.join("concept1/3.png");
    let original = std::fs::read(&edited_image).unwrap();
    image::RgbImage::from_pixel(40, 40, image::Rgb([9, 9, 9]))
        .save(&edited_image)
        .unwrap();
    let (w, _) = checked(dir.path(), "edited", &text(8));
    let message = run(&w, &resume, &mut |_| {}).unwrap_err().to_string();
    assert!(
        message.contains("the images' contents: the same files, other bytes")
            && message.contains(
                "1 image edited or replaced under the same name: `images/concept1/3.png`"
            ),
        "{message}"
    );
    std::fs::write(&edited_image, original).unwrap();
    // The checkpoint is untouched: the original resumes.
    let (w, _) = checked(dir.path(), "edited", &text(8));
    let summary = run(&w, &resume, &mut |_| {}).unwrap();
    assert_eq!(summary.epochs, 2);
}

#[test]
fn stopping_after_training_keeps_the_model_and_resume_redoes_the_steps() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let text = "workflow late_stop\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 8\n  num_epochs = 1\n  init_epochs = 1\n  num_items_per_epoch = 16\n  logreg = 0\n}\ndata { train = \"images\"  eval = 0.25 }\nseed = 3\noutput = \"runs/late_stop\"\nstep clustering { k = 3 }\n";
    let (w, _) = checked(dir.path(), "late_stop", text);
    let cancel = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let e = run(&w, &options, &mut |e| {
        if matches!(e, Event::Epoch { .. }) {
            cancel.store(true, Ordering::SeqCst);
        }
    })
    .unwrap_err();
    assert!(matches!(e, RunError::Stopped { .. }), "{e:?}");
    assert!(e.to_string().contains("--resume"), "{e}");
    assert!(w.output.join("model.safetensors").is_file());
    assert!(!w.output.join("steps").exists());
    let resumed = RunOptions {
        resume: true,
        ..Default::default()
    };
    let mut trained_steps = 0;
    let summary = run(&w, &resumed, &mut |e| {
        if matches!(e, Event::Step { .. }) {
            trained_steps += 1;
        }
    })
    .unwrap();
    assert_eq!(trained_steps, 0, "nothing is trained again");
    assert_eq!(summary.steps.len(), 1);
    assert!(w.output.join("steps/clustering/clusters.csv").is_file());
    assert!(w.output.join("pictures/clusters_clustering.svg").is_file());

    // Without `resume` (or `fresh`) the finished run is not overwritten.
    let e = run(&w, &RunOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, RunError::Occupied { .. }), "{e:?}");
    assert!(
        e.to_string().contains("model.safetensors") && e.to_string().contains("--fresh"),
        "{e}"
    );
    assert!(w.output.join("steps/clustering/clusters.csv").is_file());

    // The step replaced by another: the old step's results do not stay beside the new.
    let text = text.replace(
        "step clustering { k = 3 }",
        "step visual_search { top_k = 2 }",
    );
    let (w, _) = checked(dir.path(), "late_stop", &text);
    let summary = run(&w, &resumed, &mut |_| {}).unwrap();
    assert_eq!(summary.steps.len(), 1);
    assert!(w.output.join("steps/visual_search").is_dir());
    assert!(!w.output.join("steps/clustering").exists());
    assert!(w.output.join("pictures/search_visual_search.svg").is_file());
    assert!(
        !w.output.join("pictures/clusters_clustering.svg").exists(),
        "the removed step's picture is removed too"
    );
    assert!(!std::fs::read_to_string(w.output.join("report.html"))
        .unwrap()
        .contains("clusters.csv"));
}

#[test]
fn a_training_set_of_unreadable_images_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    for concept in ["a", "b"] {
        std::fs::create_dir_all(images.join(concept)).unwrap();
        for i in 0..6 {
            std::fs::write(images.join(concept).join(format!("{i}.png")), b"not a png").unwrap();
        }
    }
    let text = "workflow unreadable\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 4\n  num_epochs = 1\n  init_epochs = 1\n  logreg = 0\n}\ndata { train = \"images\"  eval = 0.25 }\noutput = \"runs/unreadable\"\n";
    let (w, _) = checked(dir.path(), "unreadable", text);
    let mut steps = 0;
    let e = run(&w, &RunOptions::default(), &mut |e| {
        steps += usize::from(matches!(e, Event::Step { .. }))
    })
    .unwrap_err();
    assert!(matches!(e, RunError::Unreadable { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.starts_with("none of the 8 training images can be read")
            && message.contains("a/0.png: "),
        "{message}"
    );
    assert_eq!(steps, 0, "stopped before the first step");
    assert!(!w.output.join("model.safetensors").exists());
    assert!(!w.output.join("checkpoint.safetensors").exists());

    // One concept readable, the other not: the run stops naming the concept.
    for i in 0..6 {
        image::RgbImage::from_pixel(36, 36, image::Rgb([200, 20, 20]))
            .save(images.join("a").join(format!("{i}.png")))
            .unwrap();
    }
    let e = run(&w, &RunOptions::default(), &mut |_| {}).unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("training images of concept `b` can be read")
            && message.contains("b/")
            && !message.contains("a/0.png"),
        "{message}"
    );
}

#[test]
fn an_epoch_too_large_for_memory_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let text = "workflow huge\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 8\n  num_epochs = 1\n  init_epochs = 1\n  num_items_per_epoch = 9223372036854775807\n  logreg = 0\n}\ndata { train = \"images\"  eval = 0.25 }\noutput = \"runs/huge\"\n";
    let (w, _) = checked(dir.path(), "huge", text);
    let e = run(&w, &RunOptions::default(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, RunError::Unsupported(_)) && e.to_string().contains("num_items_per_epoch"),
        "{e:?}"
    );
}

#[test]
fn unseen_concepts_are_judged_every_epoch_and_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    // Two concepts the model never trains on: a bar of its own hue.
    for (c, hue) in [[240u8, 200, 40], [200, 40, 220]].iter().enumerate() {
        let folder = dir.path().join(format!("unseen/u{c}"));
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..6u32 {
            image::RgbImage::from_fn(40, 40, |x, y| {
                if (y / 20) as usize == c && (5 + i..30 + i).contains(&x) {
                    image::Rgb(*hue)
                } else {
                    image::Rgb([((x * 3 + i) % 60) as u8, 30, ((y * 2) % 50) as u8])
                }
            })
            .save(folder.join(format!("{i}.png")))
            .unwrap();
        }
    }
    let text = "workflow unseen\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 8\n  num_epochs = 2\n  init_epochs = 1\n  step_epochs = 1\n  logreg = 0\n}\ndata { train = \"images\"  eval = 0.25  unseen = \"unseen\" }\nseed = 3\noutput = \"runs/unseen\"\n";
    let (w, plan) = checked(dir.path(), "unseen", text);
    assert!(
        plan.to_string()
            .contains("unseen (2 concepts, 12 images): concepts never trained on"),
        "{plan}"
    );
    let summary = run(&w, &RunOptions::default(), &mut |_| {}).unwrap();
    let judged = summary.final_eval.unwrap().unseen.expect("judged");
    assert_eq!(
        (judged.images, judged.concepts, judged.queries),
        (12, 2, 12)
    );
    for i in [
        judged.precision_at_1,
        judged.map_at_r,
        judged.nmi,
        judged.ami,
    ] {
        assert!(
            i.low <= i.value && i.value <= i.high && (0.0..=1.0).contains(&i.value),
            "{i:?}"
        );
    }
    // Each epoch's line holds the figures; `unseen.json` the last ones.
    let lines = std::fs::read_to_string(summary.output.join("metrics.jsonl")).unwrap();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["eval"]["unseen"]["images"].as_u64(), Some(12), "{line}");
        assert!(
            v["eval"]["embeddings"]["map_at_r"]["value"].is_f64(),
            "{line}"
        );
    }
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary.output.join("unseen.json")).unwrap())
            .unwrap();
    assert_eq!(record["concepts"], serde_json::json!(["u0", "u1"]));
    assert_eq!(
        record["judged"]["map_at_r"]["value"].as_f64(),
        Some(judged.map_at_r.value)
    );

    // The trained model as a base: judged again, to the same figures.
    // The same held-out images (the same fraction and seed) are judged too,
    // as the trained run's last epoch judged them.
    let text = "workflow reuse\nbase = \"runs/unseen\"\ndata { train = \"images\"  eval = 0.25  unseen = \"unseen\" }\nseed = 3\noutput = \"runs/reuse\"\n";
    let (w, _) = checked(dir.path(), "reuse", text);
    let again = run(&w, &RunOptions::default(), &mut |_| {}).unwrap();
    let last_epoch: serde_json::Value =
        serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    let again_eval = again.final_eval.unwrap();
    let held_out = again_eval.embeddings.expect("held-out embeddings judged");
    for (figure, value) in [("map_at_r", held_out.map_at_r), ("nmi", held_out.nmi)] {
        let trained = last_epoch["eval"]["embeddings"][figure]["value"]
            .as_f64()
            .unwrap();
        assert!(
            (value.value - trained).abs() < 1e-5,
            "{figure}: {value:?} vs {trained}"
        );
    }
    let rejudged = again_eval.unseen.expect("judged");
    assert_eq!(rejudged.map_at_r, judged.map_at_r);
    assert!(again.output.join("unseen.json").is_file());
    // A base model's own concepts are not unseen.
    let path = dir.path().join("seen.wf");
    std::fs::write(
        &path,
        "workflow seen\nbase = \"runs/unseen\"\ndata { train = \"unseen\"  unseen = \"images\" }\n",
    )
    .unwrap();
    let c = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.is_error() && d.message.contains("are training concepts")),
        "{:#?}",
        c.diagnostics
    );
}

#[test]
fn unseen_concepts_must_be_concepts_never_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let check = |unseen: &str| {
        let path = dir.path().join("u.wf");
        std::fs::write(
            &path,
            format!("use Clarifai_InceptionBatchNorm {{ image_size = 32 }}\ndata {{ train = \"images\"  unseen = {unseen} }}\n"),
        )
        .unwrap();
        let c = check_file(&path, &CheckOptions::default()).unwrap();
        c.diagnostics
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| (d.message, d.span.start))
            .collect::<Vec<_>>()
    };
    let at =
        "use Clarifai_InceptionBatchNorm { image_size = 32 }\ndata { train = \"images\"  unseen = "
            .len();
    // The training folder's own concepts.
    let errors = check("\"images\"");
    assert!(
        errors
            .iter()
            .any(|(m, s)| m.contains("are training concepts") && *s == at),
        "{errors:?}"
    );
    // One concept.
    std::fs::create_dir_all(dir.path().join("one/x")).unwrap();
    std::fs::copy(
        dir.path().join("images/concept0/0.png"),
        dir.path().join("one/x/0.png"),
    )
    .unwrap();
    let errors = check("\"one\"");
    assert!(
        errors.iter().any(|(m, _)| m.contains("a single concept")),
        "{errors:?}"
    );
    // Missing.
    let errors = check("\"nowhere\"");
    assert!(
        errors.iter().any(|(m, _)| m.contains("nowhere")),
        "{errors:?}"
    );
    // A manifest whose images do not exist holds no concept.
    std::fs::write(
        dir.path().join("gone.csv"),
        "path,concepts\nx.png,a\ny.png,b\n",
    )
    .unwrap();
    let errors = check("manifest(\"gone.csv\")");
    assert!(
        errors.iter().any(|(m, _)| m.contains("hold no concepts")),
        "{errors:?}"
    );
    // A training image under another name: a hard link.
    for (c, from) in [("p", "concept0/0.png"), ("q", "concept0/1.png")] {
        std::fs::create_dir_all(dir.path().join("linked").join(c)).unwrap();
        std::fs::hard_link(
            dir.path().join("images").join(from),
            dir.path().join("linked").join(c).join("x.png"),
        )
        .unwrap();
    }
    let errors = check("\"linked\"");
    assert!(
        errors
            .iter()
            .any(|(m, _)| m.contains("2 of the unseen images are training images")),
        "{errors:?}"
    );
}

#[test]
fn a_manifests_missing_images_are_left_out_before_the_split() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    std::fs::remove_file(dir.path().join("images/concept1/broken.png")).unwrap();
    let mut manifest = String::from("path,concepts\n");
    for c in 0..3 {
        for i in 0..16 {
            manifest.push_str(&format!("images/concept{c}/{i}.png,concept{c}\n"));
        }
        // Listed, missing: the plan leaves them out, and so must the split.
        manifest.push_str(&format!("images/concept{c}/gone.png,concept{c}\n"));
    }
    std::fs::write(dir.path().join("list.csv"), manifest).unwrap();
    let text = "workflow listed\nuse Clarifai_InceptionBatchNorm {\n  image_size = 32\n  batch_size = 8\n  num_epochs = 1\n  init_epochs = 1\n  step_epochs = 1\n  logreg = 0\n}\ndata { train = manifest(\"list.csv\")  eval = 0.25 }\nseed = 3\noutput = \"runs/listed\"\n";
    let path = dir.path().join("listed.wf");
    std::fs::write(&path, text).unwrap();
    let checked = check_file(&path, &CheckOptions::default()).unwrap();
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    let planned = checked.plan().unwrap();
    assert_eq!(
        (planned.data.train_images, planned.data.eval_images),
        (Some(36), Some(12))
    );
    let summary = run(
        checked.workflow.as_ref().unwrap(),
        &RunOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let csv = std::fs::read_to_string(summary.output.join("embeddings.csv")).unwrap();
    let eval = csv.lines().filter(|l| l.starts_with("eval,")).count();
    let train = csv.lines().filter(|l| l.starts_with("train,")).count();
    assert_eq!((train, eval), (36, 12), "{csv}");
}

#[test]
fn a_fresh_run_refused_before_it_starts_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let w = workflow(dir.path(), "kept", "");
    run(&w, &RunOptions::default(), &mut |_| {}).unwrap();
    assert!(w.output.join("model.safetensors").is_file());
    // `concept1/broken.png` cannot be read: refused before the first step.
    let options = RunOptions {
        fresh: true,
        fail_on_bad_images: true,
        ..Default::default()
    };
    let e = run(&w, &options, &mut |_| {}).unwrap_err();
    assert!(matches!(e, RunError::BadImages(_)), "{e:?}");
    assert!(
        w.output.join("model.safetensors").is_file() && w.output.join("metrics.jsonl").is_file(),
        "the previous run is kept"
    );
}

#[test]
fn query_images_not_named_in_utf8_are_refused_by_the_checker() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let queries = dir.path().join("queries");
    std::fs::create_dir_all(&queries).unwrap();
    std::fs::copy(
        dir.path().join("images/concept0/0.png"),
        queries.join(std::ffi::OsStr::from_bytes(b"q\xff.png")),
    )
    .unwrap();
    let path = dir.path().join("q.wf");
    std::fs::write(
        &path,
        "use Clarifai_InceptionBatchNorm { image_size = 32 }\n\
         data { train = \"images\" }\n\
         step visual_search { top_k = 2  queries = \"queries\" }\n",
    )
    .unwrap();
    let checked = check_file(&path, &CheckOptions::default()).unwrap();
    let error = checked
        .diagnostics
        .iter()
        .find(|d| d.message.contains("is not named in UTF-8 text"))
        .unwrap_or_else(|| panic!("{:#?}", checked.diagnostics));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(&text[error.span.start..error.span.end], "\"queries\"");
}

#[test]
fn a_resume_refused_for_a_reordered_manifest_or_swapped_images_says_so() {
    let dir = tempfile::tempdir().unwrap();
    write_images(&dir.path().join("images"));
    let listed = |c: u32, range: std::ops::Range<u32>| -> Vec<String> {
        range
            .map(|i| format!("images/concept{c}/{i}.png,concept{c}"))
            .collect()
    };
    let mut train: Vec<String> = (0..3).flat_map(|c| listed(c, 0..12)).collect();
    let held: Vec<String> = (0..3).flat_map(|c| listed(c, 12..16)).collect();
    std::fs::write(dir.path().join("held.csv"), held.join("\n")).unwrap();
    let text = |eval: &str| {
        format!("workflow listed\nuse Clarifai_InceptionBatchNorm {{\n  image_size = 32\n  batch_size = 8\n  num_epochs = 2\n  init_epochs = 1\n  num_items_per_epoch = 16\n  logreg = 0\n}}\ndata {{ train = manifest(\"list.csv\")  eval = {eval} }}\nseed = 3\noutput = \"runs/listed\"\n")
    };
    let resume = RunOptions {
        resume: true,
        ..Default::default()
    };
    for eval in ["manifest(\"held.csv\")", "0.25"] {
        std::fs::write(dir.path().join("list.csv"), train.join("\n")).unwrap();
        // Stopped after the first step, then the manifest's lines reversed.
        let (w, _) = checked(dir.path(), "listed", &text(eval));
        stop_after_the_first_step(&w, true);
        // Each concept's lines reversed: the concepts' order, which follows
        // their first lines, stays.
        for block in train.chunks_mut(12) {
            block.reverse();
        }
        std::fs::write(dir.path().join("list.csv"), train.join("\n")).unwrap();
        let (w, _) = checked(dir.path(), "listed", &text(eval));
        let message = run(&w, &resume, &mut |_| {}).unwrap_err().to_string();
        let said = if eval == "0.25" {
            "which images are held out: the same images listed in another order (a manifest's \
             lines reordered), from which the seed draws another split"
        } else {
            "the order the images are listed in: the same images and split, in another order \
             (a manifest's lines reordered"
        };
        assert!(message.contains(said), "{message}");
        // No image is named: none changed.
        assert!(!message.contains("1 image"), "{message}");
        // All lines reversed: the concepts' order too, said with why.
        train.reverse();
        std::fs::write(dir.path().join("list.csv"), train.join("\n")).unwrap();
        let (w, _) = checked(dir.path(), "listed", &text(eval));
        let message = run(&w, &resume, &mut |_| {}).unwrap_err().to_string();
        assert!(
            message.contains(
                "the concepts: the same names in another order (a manifest's concepts are \
                 numbered in the order they first appear"
            ),
            "{message}"
        );
        train.reverse();
        for block in train.chunks_mut(12) {
            block.reverse();
        }
    }
    // Two images' names swapped: said as moves, not as edits.
    std::fs::write(dir.path().join("list.csv"), train.join("\n")).unwrap();
    let images = dir.path().join("images/concept1");
    std::fs::rename(images.join("2.png"), images.join("tmp.png")).unwrap();
    std::fs::rename(images.join("5.png"), images.join("2.png")).unwrap();
    std::fs::rename(images.join("tmp.png"), images.join("5.png")).unwrap();
    let (w, _) = checked(dir.path(), "listed", &text("0.25"));
    let message = run(&w, &resume, &mut |_| {}).unwrap_err().to_string();
    assert!(
        message.contains(
            "2 images moved: `images/concept1/5.png` → `images/concept1/2.png` (replacing the \
             image there), `images/concept1/2.png` → `images/concept1/5.png` (replacing the \
             image there)"
        ) && !message.contains("edited or replaced under the same name:"),
        "{message}"
    );
}
