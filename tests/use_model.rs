//! A trained run's model, used: `wfrun embed`, `wfrun predict` and
//! `wfrun search` through the binary, and `wfrun::Model` through the
//! library, checked against what the run itself wrote (its embeddings, its
//! held-out accuracy, its head's predictions, its search step's neighbours).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use serde_json::Value;

const CONCEPTS: usize = 3;

#[path = "common/bars.rs"]
mod bars;

fn write_images(root: &Path) {
    bars::write_bars(root, 16);
}

struct Output {
    stdout: String,
    stderr: String,
    code: i32,
}

fn wfrun(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wfrun"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    Output {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// One run shared by the tests: BN-Inception at 32 px on three concepts,
/// with a head and a search step; its folder is `runs/tiny` under the
/// returned folder.
fn trained() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_images(&dir.path().join("images"));
        std::fs::write(
            dir.path().join("tiny.wf"),
            "workflow tiny\n\
             use Clarifai_InceptionBatchNorm { image_size = 32  batch_size = 8  num_epochs = 3  init_epochs = 2  step_epochs = 1  logreg = 0  per_item_lrate = 5e-4 }\n\
             data { train = \"images\"  eval = 0.25 }\n\
             seed = 5\n\
             step classifier_head { logreg = 0  epochs = 60 }\n\
             step visual_search { top_k = 3  queries = eval }\n",
        )
        .unwrap();
        let out = wfrun(dir.path(), &["tiny.wf"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        dir
    })
    .path()
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

/// The run's `embeddings.csv`: (split, path, concepts).
fn run_index(dir: &Path) -> Vec<(String, String, String)> {
    let mut r = csv::Reader::from_path(dir.join("runs/tiny/embeddings.csv")).unwrap();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[0].to_string(), rec[2].to_string(), rec[3].to_string())
        })
        .collect()
}

#[test]
fn embed_gives_the_runs_own_vectors() {
    let dir = trained();
    let index = run_index(dir);
    let run = tensors(&dir.join("runs/tiny/embeddings.safetensors"));
    // The training images in the run's order: the same batches, so the very
    // same vectors.
    let mut manifest = String::from("path,concept\n");
    for (split, path, concepts) in &index {
        if split == "train" {
            manifest.push_str(&format!("{path},{concepts}\n"));
        }
    }
    std::fs::write(dir.join("train.csv"), manifest).unwrap();
    let out = wfrun(
        dir,
        &[
            "embed",
            "runs/tiny",
            "train.csv",
            "-o",
            "out/train.safetensors",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(summary["images"], 36);
    assert_eq!(summary["dim"], 1024);
    let mine = tensors(&dir.join("out/train.safetensors"));
    assert_eq!(rows(&mine["embeddings"]), rows(&run["train"]));
    let listed = std::fs::read_to_string(dir.join("out/train.csv")).unwrap();
    assert!(
        listed.starts_with("row,path,concepts\n0,\"images/"),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 37);

    // The whole folder, in other batches: the same vectors up to rounding.
    let out = wfrun(
        dir,
        &["embed", "runs/tiny", "images", "-o", "all.safetensors"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("embedded 48 images"), "{}", out.stdout);
    let all = wfrun::exec::model::Embeddings::load(&dir.join("all.safetensors")).unwrap();
    assert_eq!(all.len(), 48);
    let split_rows: HashMap<&str, Vec<Vec<f32>>> =
        [("train", rows(&run["train"])), ("eval", rows(&run["eval"]))].into();
    let mut at = HashMap::<&str, usize>::new();
    for (split, path, concepts) in &index {
        let n = at.entry(split.as_str()).or_default();
        let theirs = &split_rows[split.as_str()][*n];
        *n += 1;
        let i = all.paths.iter().position(|p| p == Path::new(path)).unwrap();
        assert_eq!(all.concepts[i], vec![concepts.clone()]);
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in all.row(i).iter().zip(theirs) {
            assert!((a - b).abs() <= 1e-4 * scale.max(1.0), "{path}: {a} vs {b}");
        }
    }
}

#[test]
fn predict_matches_the_runs_accuracy_and_its_head() {
    let dir = trained();
    let eval: Vec<(String, String)> = run_index(dir)
        .into_iter()
        .filter(|(s, _, _)| s == "eval")
        .map(|(_, p, c)| (p, c))
        .collect();
    let mut manifest = String::from("path,concept\n");
    for (p, c) in &eval {
        manifest.push_str(&format!("{p},{c}\n"));
    }
    std::fs::write(dir.join("eval.csv"), &manifest).unwrap();

    // The template's softmax: its top concept is right as often as the
    // run's last held-out accuracy says.
    let out = wfrun(
        dir,
        &["predict", "runs/tiny", "eval.csv", "--format", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), eval.len());
    let mut right = 0;
    for (line, (path, concept)) in lines.iter().zip(&eval) {
        assert_eq!(line["path"], path.as_str());
        let listed = line["concepts"].as_array().unwrap();
        assert_eq!(listed.len(), CONCEPTS);
        let total: f64 = listed.iter().map(|c| c["score"].as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4, "softmax sums to {total}");
        right += usize::from(listed[0]["concept"] == concept.as_str());
    }
    let metrics = std::fs::read_to_string(dir.join("runs/tiny/metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let accuracy = last["eval"]["accuracy"].as_f64().unwrap();
    assert!(
        (right as f64 / eval.len() as f64 - accuracy).abs() < 1e-6,
        "{right} of {} right; the run said {accuracy}",
        eval.len()
    );

    // The head: the same scores as the step's own predictions.
    let out = wfrun(
        dir,
        &[
            "predict",
            "runs/tiny",
            "eval.csv",
            "--head",
            "classifier_head",
            "--format",
            "csv",
            "--top-k",
            "1",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let step = std::fs::read_to_string(dir.join("runs/tiny/steps/classifier_head/predictions.csv"))
        .unwrap();
    let mut step_top = HashMap::new();
    let mut r = csv::Reader::from_reader(step.as_bytes());
    for rec in r.records() {
        let rec = rec.unwrap();
        step_top
            .entry(rec[0].to_string())
            .or_insert((rec[1].to_string(), rec[2].parse::<f32>().unwrap()));
    }
    let mut r = csv::Reader::from_reader(out.stdout.as_bytes());
    let mut seen = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        let (concept, score) = &step_top[&rec[0]];
        assert_eq!(&rec[1], "1");
        assert_eq!(&rec[2], concept.as_str(), "{}", &rec[0]);
        let mine: f32 = rec[3].parse().unwrap();
        assert!((mine - score).abs() < 1e-4, "{mine} vs {score}");
        seen += 1;
    }
    assert_eq!(seen, eval.len());

    // Softmax outputs with a threshold: only concepts above it (at most one
    // above 0.5), of the 5 most likely.
    let out = wfrun(
        dir,
        &[
            "predict",
            "runs/tiny",
            "eval.csv",
            "--format",
            "csv",
            "--threshold",
            "0.5",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut r = csv::Reader::from_reader(out.stdout.as_bytes());
    let mut listed = HashMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        // An image with no concept above it is one row with no concept.
        let n = listed.entry(rec[0].to_string()).or_insert(0);
        if !rec[3].is_empty() {
            assert!(rec[3].parse::<f32>().unwrap() > 0.5, "{rec:?}");
            *n += 1;
        }
    }
    assert_eq!(listed.len(), eval.len());
    assert!(listed.values().all(|&n| n <= 1), "{listed:?}");

    // An image whose name is not UTF-8: JSON shows it lossily, never a panic.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.join("odd_names");
        std::fs::create_dir_all(&odd).unwrap();
        let name = std::ffi::OsStr::from_bytes(b"l\xe9.png");
        std::fs::copy(dir.join(&eval[0].0), odd.join(name)).unwrap();
        for command in ["predict", "search"] {
            let out = wfrun(
                dir,
                &[command, "runs/tiny", "odd_names", "--format", "json"],
            );
            assert_eq!(out.code, 0, "{command}: {}", out.stderr);
            let line: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
            let key = if command == "predict" {
                "path"
            } else {
                "query"
            };
            assert!(
                line[key].as_str().unwrap().ends_with("l\u{fffd}.png"),
                "{command}: {line}"
            );
        }
    }

    // The workflow given where its run folder was meant.
    let out = wfrun(dir, &["predict", "tiny.wf", "eval.csv"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not a run folder (a workflow file"),
        "{}",
        out.stderr
    );

    // A path to a head, here or in another run, is not a step's name.
    for path in ["../tiny/steps/classifier_head", "/tmp", ".."] {
        let out = wfrun(dir, &["predict", "runs/tiny", "eval.csv", "--head", path]);
        assert_eq!(out.code, 1, "{path}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("is not the name of one of the run's `classifier_head` steps"),
            "{}",
            out.stderr
        );
    }

    let out = wfrun(dir, &["predict", "runs/tiny", "eval.csv", "--head", "nope"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("the run has no head `nope`; its heads: `classifier_head`"),
        "{}",
        out.stderr
    );
}

#[test]
fn search_finds_the_search_steps_neighbours() {
    let dir = trained();
    // The step searched the evaluation images among the training images.
    let index = run_index(dir);
    let mut manifest = String::from("path,concept\n");
    for (split, p, c) in &index {
        if split == "train" {
            manifest.push_str(&format!("{p},{c}\n"));
        }
    }
    std::fs::write(dir.join("train_rows.csv"), &manifest).unwrap();
    let out = wfrun(
        dir,
        &[
            "embed",
            "runs/tiny",
            "train_rows.csv",
            "-o",
            "index.safetensors",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let step =
        std::fs::read_to_string(dir.join("runs/tiny/steps/visual_search/neighbours.csv")).unwrap();
    let mut expected: HashMap<String, Vec<(String, f32)>> = HashMap::new();
    let mut r = csv::Reader::from_reader(step.as_bytes());
    for rec in r.records() {
        let rec = rec.unwrap();
        expected
            .entry(rec[0].to_string())
            .or_default()
            .push((rec[2].to_string(), rec[3].parse().unwrap()));
    }
    let queries: Vec<&str> = expected.keys().map(String::as_str).take(4).collect();
    let mut args = vec![
        "search",
        "runs/tiny",
        "--index",
        "index.safetensors",
        "--top-k",
        "3",
        "--format",
        "json",
    ];
    args.extend(&queries);
    let out = wfrun(dir, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let found: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), queries.len());
    for f in &found {
        let query = f["query"].as_str().unwrap();
        let hits = f["neighbours"].as_array().unwrap();
        let theirs = &expected[query];
        assert_eq!(hits.len(), 3);
        for (rank, (hit, (path, score))) in hits.iter().zip(theirs).enumerate() {
            // Ties (and near ties, within the two embeddings' rounding) may
            // swap places, with an image past the last rank too; the scores
            // agree, and an image whose score no other comes near is the same.
            let mine = hit["score"].as_f64().unwrap() as f32;
            assert!((mine - score).abs() < 1e-4, "{query}: {mine} vs {score}");
            let near = theirs
                .iter()
                .filter(|(_, s)| (s - score).abs() < 1e-4)
                .count();
            if near == 1 && rank + 1 < theirs.len() {
                assert_eq!(hit["path"], path.as_str(), "{query}");
            }
        }
    }

    // Among the run's own images (training and evaluation), a query that is
    // one of them is not its own neighbour.
    let query = &index[0].1;
    let out = wfrun(
        dir,
        &[
            "search",
            "runs/tiny",
            query,
            "--top-k",
            "2",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "query,rank,path,score,concepts");
    assert_eq!(lines.len(), 3);
    for l in &lines[1..] {
        let cells: Vec<&str> = l.split(',').collect();
        assert_eq!(cells[0], query.as_str());
        assert_ne!(cells[2], query.as_str());
        let score: f32 = cells[3].parse().unwrap();
        assert!(score <= 1.0 + 1e-6 && score > 0.0, "{score}");
    }
    // From another folder (the run's own), the neighbours are named from
    // there: each path opens, and the query is still not its own neighbour.
    let elsewhere = dir.join("runs/tiny");
    let from_there = format!("../../{query}");
    let out = wfrun(
        &elsewhere,
        &[
            "search",
            ".",
            &from_there,
            "--top-k",
            "3",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    for l in lines {
        let cells: Vec<&str> = l.split(',').collect();
        assert!(cells[2].starts_with("../../"), "{l}");
        assert!(elsewhere.join(cells[2]).is_file(), "{l}");
        assert_ne!(cells[2], from_there, "{l}");
    }
    // A copy of the run folder, apart from the images: its recorded paths
    // are kept (they still open from the folder the run was started in),
    // not rebased onto a folder that does not hold them.
    let copy = dir.join("copy/runs/tiny");
    copy_dir(&dir.join("runs/tiny"), &copy);
    let out = wfrun(
        dir,
        &[
            "search",
            "copy/runs/tiny",
            query,
            "--top-k",
            "3",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for l in out.stdout.lines().skip(1) {
        let cells: Vec<&str> = l.split(',').collect();
        assert!(dir.join(cells[2]).is_file(), "{l}");
        assert_ne!(cells[2], query.as_str(), "{l}");
    }
    std::fs::remove_dir_all(dir.join("copy")).unwrap();
    // Named through a link or a hard link of another name, it is still
    // itself: not among its neighbours.
    #[cfg(unix)]
    {
        let links = tempfile::tempdir().unwrap();
        let sym = links.path().join("sym.png");
        let hard = links.path().join("hard.png");
        std::os::unix::fs::symlink(dir.join(query), &sym).unwrap();
        std::fs::hard_link(dir.join(query), &hard).unwrap();
        for q in [&sym, &hard] {
            let q = q.to_str().unwrap();
            let out = wfrun(
                dir,
                &[
                    "search",
                    "runs/tiny",
                    q,
                    "--top-k",
                    "100",
                    "--format",
                    "csv",
                ],
            );
            assert_eq!(out.code, 0, "{}", out.stderr);
            assert!(out.stdout.lines().count() > 3, "{}", out.stdout);
            for l in out.stdout.lines().skip(1) {
                let cells: Vec<&str> = l.split(',').collect();
                assert_ne!(cells[2], query.as_str(), "{q}: {l}");
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let dir = trained();
    // Not a run folder.
    let out = wfrun(dir, &["predict", "images", "images/c0/0.png"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("model.safetensors"), "{}", out.stderr);
    // Weights that are not the network model.json describes.
    let wrong = dir.join("wrong_run");
    copy_dir(&dir.join("runs/tiny"), &wrong);
    let one = Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &HashMap::from([("fc.weight", one)]),
        wrong.join("model.safetensors"),
    )
    .unwrap();
    let out = wfrun(dir, &["predict", "wrong_run", "images/c0/0.png"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("tensors are missing"), "{}", out.stderr);
    // A manifest in another folder naming the images from here: none
    // exists from its own folder, where its relative paths start.
    let lists = dir.join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    std::fs::write(
        lists.join("from_here.csv"),
        "path\nimages/c0/0.png\nimages/c0/1.png\n",
    )
    .unwrap();
    let out = wfrun(
        dir,
        &[
            "embed",
            "runs/tiny",
            "lists/from_here.csv",
            "-o",
            "listed.safetensors",
        ],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("a manifest's relative paths start at its own folder (`lists`)"),
        "{}",
        out.stderr
    );
    // Every image corrupt.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("a.png"), b"not a png").unwrap();
    std::fs::write(bad.join("b.jpg"), b"").unwrap();
    let out = wfrun(dir, &["embed", "runs/tiny", "bad", "-o", "bad.safetensors"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("skipped `bad/a.png`"), "{}", out.stderr);
    assert!(
        out.stderr.contains("none of the 2 images could be read"),
        "{}",
        out.stderr
    );
    assert!(!dir.join("bad.safetensors").exists());
    // The same into folders not there yet: they are not left behind empty,
    // but one that was there stays, however the path reaches it.
    std::fs::create_dir(dir.join("kept")).unwrap();
    for (output, made) in [
        ("fresh/deep/e.safetensors", "fresh"),
        ("kept/deep/e.safetensors", "kept/deep"),
        ("gone/../kept/e.safetensors", "gone"),
        ("gone/../new/e.safetensors", "new"),
    ] {
        let out = wfrun(dir, &["embed", "runs/tiny", "bad", "-o", output]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("none of the 2 images could be read"),
            "{output}: {}",
            out.stderr
        );
        assert!(
            !dir.join(made).exists(),
            "{output}: an empty `{made}` was left"
        );
        assert!(dir.join("kept").is_dir(), "{output}: `kept` was removed");
    }
    // An index cut short (a copy that stopped part way): said so, and how
    // to write it again, not the reader's bare words alone.
    let whole = wfrun(
        dir,
        &["embed", "runs/tiny", "images/c0", "-o", "cut.safetensors"],
    );
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    let cut_short = |file: &Path| {
        let bytes = std::fs::read(file).unwrap();
        std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap();
    };
    let search_in = |index: &str| {
        wfrun(
            dir,
            &["search", "runs/tiny", "images/c0/0.png", "--index", index],
        )
    };
    cut_short(&dir.join("cut.safetensors"));
    let out = search_in("cut.safetensors");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cut.safetensors")
            && out
                .stderr
                .contains("the file is cut short or is not one wfrun wrote")
            && out.stderr.contains("-o cut.safetensors"),
        "{}",
        out.stderr
    );
    // A run's own embeddings cut short: written again by the run, not by
    // `embed` into the run's folder (which it refuses).
    copy_dir(&dir.join("runs/tiny"), &dir.join("runs/cut"));
    cut_short(&dir.join("runs/cut/embeddings.safetensors"));
    let out = search_in("runs/cut/embeddings.safetensors");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("the file is cut short")
            && out.stderr.contains("written again by its run (`--fresh`)")
            && !out.stderr.contains("-o runs/cut"),
        "{}",
        out.stderr
    );
    std::fs::remove_dir_all(dir.join("runs/cut")).unwrap();
    // A run's own embeddings given as an index: said what they are.
    let out = search_in("runs/tiny/embeddings.safetensors");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("a run's own embeddings (its `train` and `eval` rows)")
            && out.stderr.contains("without `--index`"),
        "{}",
        out.stderr
    );
    // A file where the output needs a folder: said so, for embed and export.
    for args in [
        &[
            "embed",
            "runs/tiny",
            "images/c0",
            "-o",
            "bad/a.png/e.safetensors",
        ][..],
        &["export", "runs/tiny", "-o", "bad/a.png/m.onnx"],
    ] {
        let out = wfrun(dir, args);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("`bad/a.png` is a file, not a folder"),
            "{}",
            out.stderr
        );
    }
    // A file named in other bytes than UTF-8 text, given by name: refused,
    // its path could not be written to the index as it is.
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
        std::fs::copy(dir.join("images/c0/0.png"), &odd).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wfrun"))
            .args(["embed", "runs/tiny", "-o", "odd.safetensors"])
            .arg(odd.file_name().unwrap())
            .current_dir(dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("is not named in UTF-8 text; rename it"),
            "{stderr}"
        );
        assert!(!dir.join("odd.safetensors").exists());
        std::fs::remove_file(odd).unwrap();
    }
    // One corrupt among good ones: skipped, or refused with the flag.
    std::fs::copy(dir.join("images/c0/0.png"), bad.join("good.png")).unwrap();
    let out = wfrun(dir, &["predict", "runs/tiny", "bad"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1);
    // The good one is predicted as the same image is from where it came.
    let same = wfrun(dir, &["predict", "runs/tiny", "images/c0/0.png"]);
    let scores = |line: &str| line.split_once(": ").map(|(_, s)| s.trim().to_string());
    assert!(out.stdout.starts_with("bad/good.png: "), "{}", out.stdout);
    assert_eq!(scores(&out.stdout), scores(&same.stdout), "{}", same.stdout);
    let out = wfrun(
        dir,
        &[
            "embed",
            "runs/tiny",
            "bad",
            "-o",
            "b.safetensors",
            "--fail-on-bad-images",
        ],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("2 of 3 images cannot be read"),
        "{}",
        out.stderr
    );
    assert!(!dir.join("b.safetensors").exists());
    // A path that does not exist, an empty folder, a wrong output name.
    let out = wfrun(
        dir,
        &["embed", "runs/tiny", "nowhere", "-o", "x.safetensors"],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nowhere"), "{}", out.stderr);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let out = wfrun(dir, &["search", "runs/tiny", "empty"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no image in `empty`"), "{}", out.stderr);
    // (A wrong output name is a usage error.)
    let out = wfrun(dir, &["embed", "runs/tiny", "images", "-o", "x.npy"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("`.safetensors`"), "{}", out.stderr);
}

#[test]
fn the_library_embeds_decoded_images_as_files() {
    let dir = trained();
    let model = wfrun::Model::open(&dir.join("runs/tiny")).unwrap();
    assert_eq!(model.concepts(), ["c0", "c1", "c2"]);
    assert_eq!(model.image_size(), 32);
    assert_eq!(model.embedding_dim(), 1024);
    assert!(!model.logreg());
    assert_eq!(model.heads(), ["classifier_head"]);
    let paths: Vec<PathBuf> = (0..5)
        .map(|i| dir.join(format!("images/c1/{i}.png")))
        .collect();
    let inputs = wfrun::exec::model::Inputs {
        paths: paths.clone(),
        concepts: vec![Vec::new(); paths.len()],
        ..Default::default()
    };
    let mut progress = Vec::new();
    let files = model
        .embed(&inputs, &mut |e| {
            if let wfrun::exec::Event::Embedding { done, total, .. } = e {
                progress.push((*done, *total));
            }
        })
        .unwrap();
    assert_eq!(progress.last(), Some(&(5, 5)));
    // The 3 × 3 layers' transformed weights, kept from the first call (the
    // default) or derived at each call: the same vectors, to the bit.
    let again = model.embed(&inputs, &mut |_| {}).unwrap();
    assert_eq!(again.values, files.values);
    // The same vectors are the same bytes, write after write (the metadata
    // is written in sorted order, not hash order), and read back whole.
    let out = tempfile::tempdir().unwrap();
    let written: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let path = out.path().join(format!("e{i}.safetensors"));
            files.save(&path).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect();
    assert!(written.iter().all(|w| *w == written[0]));
    let read = wfrun::exec::model::Embeddings::load(&out.path().join("e0.safetensors")).unwrap();
    assert_eq!(read.values, files.values);
    assert_eq!(read.model, files.model);
    let lean = wfrun::Model::open_with(
        &dir.join("runs/tiny"),
        &wfrun::exec::model::ModelOptions {
            keep_transforms: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        lean.embed(&inputs, &mut |_| {}).unwrap().values,
        files.values
    );
    let decoded: Vec<image::DynamicImage> = paths.iter().map(|p| image::open(p).unwrap()).collect();
    let mut decoded_with_a_bad_one = decoded.clone();
    decoded_with_a_bad_one.push(image::DynamicImage::new_rgb8(1, 200));
    let images = model.embed_images(&decoded_with_a_bad_one, None).unwrap();
    assert_eq!(images.len(), 5);
    assert_eq!(images.values, files.values);
    assert_eq!(images.bad.len(), 1);
    assert!(images.bad[0].reason.contains("more than 64 to 1"));
    let template = wfrun::exec::model::Predictor::Template;
    let predicted = model
        .predict(&images, &template, Default::default())
        .unwrap();
    let from_files = model
        .predict(&files, &template, Default::default())
        .unwrap();
    assert_eq!(predicted.len(), 5);
    for (a, b) in predicted.iter().zip(&from_files) {
        assert_eq!(a.concepts, b.concepts);
    }
    // The head the run trained tells the concepts apart.
    let head = wfrun::exec::model::Predictor::Head(model.head("classifier_head").unwrap());
    let predicted = model.predict(&images, &head, Default::default()).unwrap();
    assert!(
        predicted.iter().all(|p| p.concepts[0].0 == "c1"),
        "{predicted:?}"
    );
}

#[test]
fn a_base_workflow_of_one_image_a_concept_says_nothing_is_held_out() {
    let dir = trained();
    let work = tempfile::tempdir().unwrap();
    for c in 0..CONCEPTS {
        let folder = work.path().join(format!("one/c{c}"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(dir.join(format!("images/c{c}/0.png")), folder.join("0.png")).unwrap();
    }
    std::fs::write(
        work.path().join("one.wf"),
        format!(
            "workflow one\nbase = \"{}\"\ndata {{ train = \"one\"  eval = 0.2 }}\n\
             step classifier_head {{ epochs = 5 }}\nstep visual_search {{ top_k = 2 }}\n",
            dir.join("runs/tiny").display()
        ),
    )
    .unwrap();
    // The checker says it before the run ...
    let out = wfrun(work.path(), &["check", "one.wf"]);
    assert!(
        out.stdout
            .contains("no image can be held out for evaluation")
            || out
                .stderr
                .contains("no image can be held out for evaluation"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // ... and the search step, which has no query, says why.
    let out = wfrun(work.path(), &["one.wf"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("there is no held-out image to search with (each concept has a single image"),
        "{}",
        out.stderr
    );
    // The head trained on the images says so, not an empty line.
    assert!(
        out.stderr.contains("training images (none held out)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_base_workflow_embeds_unlabelled_images_and_saves_its_queries() {
    let dir = trained();
    let work = tempfile::tempdir().unwrap();
    let (flat, queries) = (work.path().join("flat"), work.path().join("queries"));
    std::fs::create_dir_all(&flat).unwrap();
    std::fs::create_dir_all(&queries).unwrap();
    for c in 0..CONCEPTS {
        for i in 0..6 {
            let from = dir.join(format!("images/c{c}/{i}.png"));
            std::fs::copy(&from, flat.join(format!("c{c}_{i}.png"))).unwrap();
        }
        let from = dir.join(format!("images/c{c}/15.png"));
        std::fs::copy(&from, queries.join(format!("q{c}.png"))).unwrap();
    }
    let base = dir.join("runs/tiny");
    let text = |steps: &str| {
        format!(
            "workflow flat\nbase = \"{}\"\ndata {{ train = \"flat\"  eval = 0.2 }}\n{steps}",
            base.display()
        )
    };
    let check = |steps: &str| {
        let options = wfrun::CheckOptions {
            base_dir: Some(work.path().to_path_buf()),
            ..Default::default()
        };
        wfrun::check_source("flat.wf", &text(steps), &options)
    };
    // Steps that need concepts are errors on unlabelled images.
    let checked = check("step classifier_head { }\nstep clustering { }\n");
    let messages: Vec<&str> = checked
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "a classifier head needs labelled images",
            "`k` defaults to the number of concepts, and these images have none"
        ]
    );
    let checked = check(
        "step clustering { k = 3 }\nstep visual_search { top_k = 2  queries = \"queries\" }\n",
    );
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let workflow = checked.workflow.unwrap();
    let summary = wfrun::exec::run(&workflow, &Default::default(), &mut |_| {}).unwrap();
    assert!(
        summary.failed_steps.is_empty(),
        "{:?}",
        summary.failed_steps
    );
    let out = work.path().join("runs/flat");
    // No label, no metric that needs one.
    let metrics = |step: &str| -> Value {
        let text = std::fs::read_to_string(out.join(format!("steps/{step}/metrics.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let clustering = metrics("clustering");
    assert_eq!(clustering["images"], 18);
    assert!(clustering.get("nmi").is_none() && clustering.get("ari").is_none());
    let search = metrics("visual_search");
    assert_eq!(search["queries"], 3);
    assert!(search.get("recall_at_1").is_none());
    // The queries' embeddings are saved, as the model embeds those images.
    let saved =
        wfrun::exec::model::Embeddings::load(&out.join("steps/visual_search/queries.safetensors"))
            .unwrap();
    assert_eq!(saved.len(), 3);
    assert!(saved.concepts.iter().all(Vec::is_empty));
    let model = wfrun::Model::open(&base).unwrap();
    let inputs = wfrun::exec::model::Inputs {
        paths: saved.paths.clone(),
        concepts: vec![Vec::new(); 3],
        ..Default::default()
    };
    let again = model.embed(&inputs, &mut |_| {}).unwrap();
    assert_eq!(again.values, saved.values);
}

/// `wfrun export`: the ONNX model of the run embeds in ONNX Runtime as
/// `wfrun embed` does (when `WFRUN_ONNX_PYTHON` names a Python with
/// onnxruntime; required with `WFRUN_REQUIRE_ONNXRUNTIME=1`).
#[test]
fn export_writes_an_onnx_model_that_embeds_as_wfrun_does() {
    let dir = trained();
    let out = wfrun(dir, &["export", "runs/tiny", "-o", "onnx/tiny.onnx"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("outputs `embeddings` [batch, 1024] and `scores` [batch, 3]"),
        "{}",
        out.stdout
    );
    let out = wfrun(dir, &["export", "images"]);
    assert_eq!(out.code, 1);
    let Some(python) = std::env::var_os("WFRUN_ONNX_PYTHON") else {
        assert!(std::env::var_os("WFRUN_REQUIRE_ONNXRUNTIME").is_none_or(|v| v != "1"));
        println!("skipped: the exported run against ONNX Runtime: WFRUN_ONNX_PYTHON is not set");
        return;
    };
    let paths: Vec<PathBuf> = (0..4)
        .map(|i| dir.join(format!("images/c{}/{i}.png", i % 3)))
        .collect();
    let mut pixels = Vec::new();
    for p in &paths {
        let px = wfrun::data::images::load(p, 32, wfrun::data::images::Crop::Center).unwrap();
        pixels.extend(px.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(dir.join("onnx/input.f32"), pixels).unwrap();
    let ran = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/run_model.py"))
        .args(["onnx/tiny.onnx", "onnx", "onnx/input.f32"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let bytes = std::fs::read(dir.join("onnx/0.embeddings.f32")).unwrap();
    let theirs: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let model = wfrun::Model::open(&dir.join("runs/tiny")).unwrap();
    let inputs = wfrun::exec::model::Inputs {
        paths: paths.clone(),
        concepts: vec![Vec::new(); paths.len()],
        ..Default::default()
    };
    let mine = model.embed(&inputs, &mut |_| {}).unwrap();
    assert_eq!(theirs.len(), mine.values.len());
    let scale = mine.values.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = theirs
        .iter()
        .zip(&mine.values)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "ONNX Runtime differs by {worst} (largest value {scale})"
    );
}

/// What the hostile tries found: outputs never destroy inputs, a run's
/// files, devices or files they did not write; an index is read by its
/// `row` numbers; another model's vectors are refused; a full disk under
/// standard output fails the command.
#[test]
fn outputs_destroy_nothing_and_indices_are_read_as_numbered() {
    let dir = trained();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let abs = |p: &str| dir.join(p).display().to_string();
    std::fs::write(
        w.join("list.csv"),
        format!(
            "path,concept\n{},c0\n{},c1\n",
            abs("images/c0/1.png"),
            abs("images/c1/1.png")
        ),
    )
    .unwrap();
    let run = abs("runs/tiny");
    let refused_with = |code: i32, args: &[&str], says: &str| {
        let out = wfrun(w, args);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    };
    let refused = |args: &[&str], says: &str| refused_with(1, args, says);
    // Flags that make no sense together: a usage error, as the parser's.
    let misused = |args: &[&str], says: &str| refused_with(2, args, says);
    refused(
        &["embed", &run, "list.csv", "-o", "list.safetensors"],
        "is one of the inputs",
    );
    let own = format!("{run}/embeddings.safetensors");
    refused(
        &["embed", &run, "list.csv", "-o", &own],
        "is a run's own `embeddings.safetensors`",
    );
    std::fs::write(w.join("notes.csv"), "keep me").unwrap();
    refused(
        &["embed", &run, "list.csv", "-o", "notes.safetensors"],
        "is not a file this command wrote",
    );
    assert_eq!(
        std::fs::read_to_string(w.join("notes.csv")).unwrap(),
        "keep me"
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/null", w.join("null.safetensors")).unwrap();
        let out = wfrun(w, &["embed", &run, "list.csv", "-o", "null.safetensors"]);
        assert_eq!(out.code, 1);
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }
    let model_file = format!("{run}/model.onnx");
    let _ = std::fs::remove_file(&model_file);
    let out = wfrun(w, &["export", &run]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    refused(&["export", &run], "exists; `--force` replaces it");
    // A name it cannot write is a usage error, as the parser's.
    misused(
        &["export", &run, "-o", &format!("{run}/model.safetensors")],
        "name the model `.onnx`",
    );
    // An output without the extension is shown with it; the formats this
    // build does not write are named with their feature.
    let no_extension = format!(
        "name the output `.safetensors`, e.g. `vectors.safetensors`{}",
        match cfg!(feature = "parquet") {
            true => " (the index goes beside it as `.csv`), or `.parquet`",
            false => "",
        }
    );
    misused(&["embed", &run, "list.csv", "-o", "vectors"], &no_extension);
    misused(
        &["embed", &run, "list.csv", "-o", "out/"],
        "is a folder: name a file in it",
    );
    // A pipe as the output, or as an index to search, is refused at once
    // (looking at what it holds would wait for a writer forever).
    #[cfg(unix)]
    {
        let fifo = w.join("pipe.safetensors");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let pipe = fifo.to_str().unwrap();
        refused(
            &["embed", &run, "list.csv", "-o", pipe],
            "is not a regular file",
        );
        refused(
            &["search", &run, "--index", pipe, &abs("images/c0/1.png")],
            "not a regular file",
        );
    }
    // An image named twice is embedded once, and the JSON counts the repeat.
    let img = abs("images/c0/1.png");
    let out = wfrun(
        w,
        &[
            "embed",
            &run,
            &img,
            &img,
            "-o",
            "dup.safetensors",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        (&summary["images"], &summary["repeated"]),
        (&1.into(), &1.into())
    );
    assert!(
        out.stderr
            .contains("note: 1 mention of images named before"),
        "{}",
        out.stderr
    );
    // A text file among images is said to be no image.
    std::fs::write(w.join("notes.txt"), "words").unwrap();
    let out = wfrun(w, &["predict", &run, "notes.txt"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "skipped `notes.txt`: not an image of a format wfrun reads (JPEG, PNG, WebP, BMP)"
        ) && out.stderr.contains("error: `notes.txt` could not be read"),
        "{}",
        out.stderr
    );
    // A folder named like an image among images is said to hold none.
    std::fs::create_dir_all(w.join("dir.png")).unwrap();
    let out = wfrun(w, &["predict", &run, &img, "dir.png"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("warning: `dir.png` is a folder that holds no images; left out"),
        "{}",
        out.stderr
    );

    // An index sorted by path still names each vector by its row.
    let out = wfrun(w, &["embed", &run, "list.csv", "-o", "two.safetensors"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A file is written whole: no rows added, no index, and `create` keeps it.
    misused(
        &[
            "embed",
            &run,
            "list.csv",
            "-o",
            "two.safetensors",
            "--mode",
            "append",
        ],
        "`--mode append` adds rows to a LanceDB table",
    );
    refused(
        &[
            "embed",
            &run,
            "list.csv",
            "-o",
            "two.safetensors",
            "--mode",
            "create",
        ],
        "exists and `--mode create` refuses to replace it",
    );
    misused(
        &[
            "embed",
            &run,
            "list.csv",
            "-o",
            "new.safetensors",
            "--ann",
            "ivf-pq",
        ],
        "`--ann` builds a LanceDB table's index",
    );
    assert!(!w.join("new.safetensors").exists());

    // The vectors of one embed with the index of another, of as many rows:
    // refused, not searched under the wrong names.
    std::fs::write(
        w.join("others.csv"),
        format!(
            "path,concept\n{},c0\n{},c1\n",
            abs("images/c0/2.png"),
            abs("images/c1/2.png")
        ),
    )
    .unwrap();
    let out = wfrun(w, &["embed", &run, "others.csv", "-o", "mixed.safetensors"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::copy(w.join("two.csv"), w.join("mixed.csv")).unwrap();
    refused(
        &[
            "search",
            &run,
            &abs("images/c1/1.png"),
            "--index",
            "mixed.safetensors",
        ],
        "its rows are not those written with",
    );
    let index = std::fs::read_to_string(w.join("two.csv")).unwrap();
    let mut lines: Vec<&str> = index.lines().collect();
    lines[1..].reverse();
    std::fs::write(w.join("two.csv"), lines.join("\n") + "\n").unwrap();
    let query = abs("images/c1/1.png");
    let out = wfrun(
        w,
        &[
            "search",
            &run,
            &query,
            "--index",
            "two.safetensors",
            "--format",
            "json",
            "--top-k",
            "1",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let found: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    // The query itself is left out, whatever the line order: c0's image remains.
    assert_eq!(found["neighbours"][0]["concepts"][0], "c0", "{found}");
    assert_eq!(found["neighbours"][0]["path"], abs("images/c0/1.png"));
    std::fs::write(w.join("two.csv"), index.replace("\n1,", "\n7,")).unwrap();
    refused(
        &["search", &run, &query, "--index", "two.safetensors"],
        "row 7 is listed",
    );

    // Vectors of another model are refused, even of the same length.
    let other = w.join("other");
    copy_dir(&dir.join("runs/tiny"), &other);
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(other.join("model.json")).unwrap()).unwrap();
    json["workflow"] = "other".into();
    std::fs::write(other.join("model.json"), json.to_string()).unwrap();
    let out = wfrun(w, &["embed", &run, "list.csv", "-o", "three.safetensors"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    refused(
        &[
            "search",
            other.to_str().unwrap(),
            &query,
            "--index",
            "three.safetensors",
        ],
        "the index was embedded by another model",
    );
    // A place no file can be written is said before any image is embedded.
    #[cfg(target_os = "linux")]
    for out in ["/proc/wfrun-probe.safetensors", "/proc/wfrun-probe.onnx"] {
        let command = if out.ends_with("onnx") {
            "export"
        } else {
            "embed"
        };
        let args: Vec<&str> = match command {
            "embed" => vec!["embed", &run, &query, "-o", out],
            _ => vec!["export", &run, "-o", out],
        };
        let r = wfrun(w, &args);
        assert_eq!(r.code, 1, "{}", r.stderr);
        // (`no file can be made there`, or `permission denied` for a user
        // other than root.)
        assert!(
            r.stderr.contains(&format!("cannot write `{out}`: "))
                && r.stderr.contains("; nothing was done")
                && !r.stderr.contains("os error"),
            "{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
    // A concept listed twice in an edited `model.json` is refused.
    let concepts = json["concepts"].as_array().unwrap().len();
    json["concepts"] = vec!["c0"; concepts].into();
    std::fs::write(other.join("model.json"), json.to_string()).unwrap();
    refused(
        &["predict", other.to_str().unwrap(), &query],
        "the concept `c0` is listed twice in `concepts`",
    );
    // Weights cut short (a copy that stopped part way) are said to be so.
    let cut = w.join("cut");
    copy_dir(&dir.join("runs/tiny"), &cut);
    let weights = cut.join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refused(
        &["predict", cut.to_str().unwrap(), &query],
        &format!("the file is cut short ({} of the {len} bytes", len / 2),
    );
    std::fs::remove_file(cut.join("model.json")).unwrap();
    refused(
        &["predict", cut.to_str().unwrap(), &query],
        "model.json`: it is missing",
    );

    // A full disk under standard output is an error, not a silent truncation.
    #[cfg(target_os = "linux")]
    {
        let full = std::fs::File::create("/dev/full").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wfrun"))
            .args(["predict", &run, &query])
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("the output could not be written"));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_copied_run_says_what_it_cannot_find_and_refuses_a_head_of_another_model() {
    let dir = trained();
    let elsewhere = tempfile::tempdir().unwrap();
    let query = dir.join("images/c0/0.png");
    let query = query.to_str().unwrap();

    // From the folder the run was started in, the neighbours are found.
    let out = wfrun(dir, &["search", "runs/tiny", query, "--top-k", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("not found"), "{}", out.stderr);
    // A copy of the run folder apart from the images: its paths are shown
    // as recorded, and a warning says they do not lead to the images.
    copy_dir(&dir.join("runs/tiny"), &elsewhere.path().join("moved"));
    let out = wfrun(
        elsewhere.path(),
        &["search", "moved", query, "--top-k", "2", "--format", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(neighbour_paths(&out.stdout)[0].len(), 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("2 of the neighbours listed (`images/")
            && out.stderr.contains("are not found from this folder"),
        "{}",
        out.stderr
    );

    // The head records the model it was trained on; one copied beside
    // another model is refused, naming both.
    let head_json = elsewhere
        .path()
        .join("moved/steps/classifier_head/head.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&head_json).unwrap()).unwrap();
    let recorded = meta["model"]
        .as_str()
        .expect("the head records its model")
        .to_string();
    assert!(recorded.starts_with("tiny "), "{recorded}");
    meta["model"] = Value::from("other 0123456789abcdef");
    std::fs::write(&head_json, meta.to_string()).unwrap();
    let out = wfrun(
        elsewhere.path(),
        &["predict", "moved", query, "--head", "classifier_head"],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("another model (other 0123456789abcdef)")
            && out.stderr.contains(&recorded),
        "{}",
        out.stderr
    );

    // A head step that did not finish: the workflow has it, `--resume` finishes it.
    std::fs::remove_file(
        elsewhere
            .path()
            .join("moved/steps/classifier_head/head.safetensors"),
    )
    .unwrap();
    let out = wfrun(
        elsewhere.path(),
        &["predict", "moved", query, "--head", "classifier_head"],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("which did not finish") && out.stderr.contains("--resume"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_image_named_twice_is_embedded_once_with_all_its_concepts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (folder, name) in [("cat", "a.png"), ("cat", "b.png"), ("dog", "a.png")] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
        std::fs::write(root.join(folder).join(name), b"not decoded here").unwrap();
    }
    // The same file as a loose file, again inside its folder, by another
    // spelling of its path, and through a link; a manifest naming it with
    // another concept.
    let a = root.join("cat/a.png");
    let other = tempfile::tempdir().unwrap();
    let manifest = root.join("list.csv");
    std::fs::write(&manifest, format!("path,concepts\n{},pet\n", a.display())).unwrap();
    let mut paths = vec![
        a.clone(),
        root.to_path_buf(),
        root.join("dog/../cat/a.png"),
        manifest,
    ];
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&a, root.join("link.png")).unwrap();
        paths.push(root.join("link.png"));
        // A hard link is another name for the same file too.
        std::fs::hard_link(&a, other.path().join("hard.png")).unwrap();
        paths.push(other.path().join("hard.png"));
    }
    let inputs = wfrun::exec::model::Inputs::gather(&paths).unwrap();
    let rows = |p: &std::path::Path| {
        let p = std::fs::canonicalize(p).unwrap();
        inputs
            .paths
            .iter()
            .filter(|q| std::fs::canonicalize(q).unwrap() == p)
            .count()
    };
    assert_eq!(rows(&a), 1, "{:?}", inputs.paths);
    assert_eq!(inputs.paths.len(), 3, "{:?}", inputs.paths);
    assert_eq!(inputs.paths[0], a, "first place kept");
    assert_eq!(inputs.concepts[0], ["cat", "pet"]);
    // (On Unix the folder holds the link too, and it is named again.)
    assert_eq!(inputs.repeated, if cfg!(unix) { 6 } else { 3 });
    // The other images keep their one concept each.
    let dog = inputs
        .paths
        .iter()
        .position(|p| p.ends_with("dog/a.png"))
        .unwrap();
    assert_eq!(inputs.concepts[dog], ["dog"]);
}

#[test]
fn a_run_resumes_from_any_folder_and_moved_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    write_images(&project.join("images"));
    let text = |batch: u32| {
        format!(
            "workflow moved\n\
             use Clarifai_InceptionBatchNorm {{ image_size = 32  batch_size = {batch}  num_epochs = 1  init_epochs = 1  num_items_per_epoch = 16  logreg = 0 }}\n\
             data {{ train = \"images\"  eval = 0.25 }}\n"
        )
    };
    std::fs::write(project.join("pipe.wf"), text(8)).unwrap();
    // Started inside the images' folder: its output climbs out of it.
    let out = wfrun(&project.join("images"), &["../pipe.wf"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The same workflow, named from its parent folder, from the root, and
    // after the whole folder moved: the same images, the same training.
    let absolute = project.join("pipe.wf");
    for (cwd, path) in [
        (dir.path(), Path::new("project/pipe.wf")),
        (Path::new("/"), absolute.as_path()),
    ] {
        let out = wfrun(cwd, &[path.to_str().unwrap(), "--resume"]);
        assert_eq!(out.code, 0, "from {}: {}", cwd.display(), out.stderr);
    }
    let moved = dir.path().join("elsewhere/project");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&project, &moved).unwrap();
    let out = wfrun(dir.path(), &["elsewhere/project/pipe.wf", "--resume"]);
    assert_eq!(out.code, 0, "moved: {}", out.stderr);
    // Its images named from where the search runs: each opens from there,
    // and the query is not its own neighbour.
    let out = wfrun(
        &moved,
        &["search", "runs/moved", "images/c0/0.png", "--top-k", "3"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let neighbours: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .and_then(|t| t.strip_suffix('.'))
                .is_some_and(|t| t.parse::<u32>().is_ok())
        })
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(neighbours.len(), 3, "{}", out.stdout);
    for n in neighbours {
        assert!(moved.join(n).is_file(), "{n}: {}", out.stdout);
        assert_ne!(n, "images/c0/0.png", "{}", out.stdout);
    }
    // Images beside the workflow's folder (`../images`), both moved
    // together, or reached through a link above them: the same images.
    let beside = dir.path().join("beside");
    write_images(&beside.join("images"));
    std::fs::create_dir_all(beside.join("project")).unwrap();
    std::fs::write(
        beside.join("project/pipe.wf"),
        text(8).replace("\"images\"", "\"../images\""),
    )
    .unwrap();
    let out = wfrun(&beside.join("project"), &["pipe.wf"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::os::unix::fs::symlink(&beside, dir.path().join("link")).unwrap();
    let out = wfrun(dir.path(), &["link/project/pipe.wf", "--resume"]);
    assert_eq!(out.code, 0, "through a link: {}", out.stderr);
    std::fs::rename(&beside, dir.path().join("beside2")).unwrap();
    let out = wfrun(dir.path(), &["beside2/project/pipe.wf", "--resume"]);
    assert_eq!(out.code, 0, "moved together: {}", out.stderr);
    // Moved together and an image edited: only the image is said, named
    // from the workflow's folder; not the move, nor `train` as changed.
    let edited = dir.path().join("beside2/images/c1/0.png");
    let original = std::fs::read(&edited).unwrap();
    std::fs::copy(dir.path().join("beside2/images/c1/1.png"), &edited).unwrap();
    let out = wfrun(dir.path(), &["beside2/project/pipe.wf", "--resume"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("1 image edited or replaced under the same name: `../images/c1/0.png`"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("`train`") && !out.stderr.contains("now under"),
        "{}",
        out.stderr
    );
    std::fs::write(&edited, original).unwrap();
    // An edit is still refused from another folder, said as the setting.
    std::fs::write(moved.join("pipe.wf"), text(4)).unwrap();
    let out = wfrun(dir.path(), &["elsewhere/project/pipe.wf", "--resume"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("`batch_size`: 8 → 4"), "{}", out.stderr);
    assert_eq!(out.stderr.matches('→').count(), 1, "{}", out.stderr);
    // Images named absolutely, the workflow's folder moved one level
    // deeper: the same images, resumed; and with an image edited, only
    // that image said, not its folder as moved (the image list names them
    // relative to the workflow's folder, now through one `..` more).
    let data = dir.path().join("data");
    write_images(&data.join("images"));
    let far = dir.path().join("far/project");
    std::fs::create_dir_all(&far).unwrap();
    let absolute = text(8).replace(
        "\"images\"",
        &format!("\"{}\"", data.join("images").display()),
    );
    std::fs::write(far.join("pipe.wf"), &absolute).unwrap();
    let out = wfrun(&far, &["pipe.wf"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deeper = dir.path().join("far/deeper");
    std::fs::create_dir_all(&deeper).unwrap();
    std::fs::rename(&far, deeper.join("project")).unwrap();
    let far = deeper.join("project");
    let out = wfrun(&far, &["pipe.wf", "--resume"]);
    assert_eq!(out.code, 0, "moved deeper: {}", out.stderr);
    std::fs::copy(data.join("images/c1/1.png"), data.join("images/c1/0.png")).unwrap();
    let out = wfrun(&far, &["pipe.wf", "--resume"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "1 image edited or replaced under the same name: `../../../data/images/c1/0.png`"
        ) && !out.stderr.contains("now under")
            && !out.stderr.contains("`train`")
            && !out.stderr.contains(" moved:"),
        "{}",
        out.stderr
    );
}

/// The neighbours' paths of `query` among `index`, `wfrun search ../runs/tiny
/// QUERY --index INDEX --top-k K --format json` run in `cwd`.
fn neighbours_in(cwd: &Path, query: &str, index: &str, k: &str) -> Vec<String> {
    let args = [
        "search",
        "../runs/tiny",
        query,
        "--index",
        index,
        "--top-k",
        k,
        "--format",
        "json",
    ];
    let out = wfrun(cwd, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    neighbour_paths(&out.stdout).remove(0)
}

/// The neighbours' paths of each query, `wfrun search … --format json`.
fn neighbour_paths(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["neighbours"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["path"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn an_index_written_by_embed_names_its_images_from_where_search_runs() {
    let dir = trained();
    let out = wfrun(
        dir,
        &[
            "embed",
            "runs/tiny",
            "images/c1",
            "-o",
            "away/e.safetensors",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // From the index's own folder: its paths open from there, and the query
    // (the same image, named otherwise) is not its own neighbour.
    let away = dir.join("away");
    let found = neighbours_in(&away, "../images/c1/0.png", "e.safetensors", "4");
    assert_eq!(found.len(), 4, "{found:?}");
    for p in &found {
        assert!(away.join(p).is_file(), "{p}: {found:?}");
        assert_ne!(p, "../images/c1/0.png");
    }
    // Another file at the same path under another folder is another image:
    // the index's own `images/c1/0.png` stays among its neighbours.
    let other = dir.join("other-images-c1");
    std::fs::create_dir_all(other.join("images/c1")).unwrap();
    std::fs::copy(dir.join("images/c2/0.png"), other.join("images/c1/0.png")).unwrap();
    let found = neighbours_in(&other, "images/c1/0.png", "../away/e.safetensors", "100");
    assert!(found.iter().any(|p| p == "../images/c1/0.png"), "{found:?}");
    assert!(found.iter().all(|p| other.join(p).is_file()));
    // The index reached through a link at another depth, and copied away
    // from its images: still the images `embed` read.
    std::fs::create_dir_all(dir.join("deeper")).unwrap();
    let _ = std::os::unix::fs::symlink(&away, dir.join("deeper/idx"));
    std::fs::create_dir_all(dir.join("deeper/copy")).unwrap();
    for ext in ["safetensors", "csv"] {
        std::fs::copy(
            away.join(format!("e.{ext}")),
            dir.join(format!("deeper/copy/e.{ext}")),
        )
        .unwrap();
    }
    for index in [
        "../deeper/idx/e.safetensors",
        "../deeper/copy/e.safetensors",
    ] {
        let found = neighbours_in(&other, "images/c1/0.png", index, "100");
        assert!(
            found.iter().all(|p| other.join(p).is_file()),
            "{index}: {found:?}"
        );
        assert!(found.iter().any(|p| p == "../images/c1/0.png"), "{index}");
    }
}
