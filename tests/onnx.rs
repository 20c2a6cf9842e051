//! ONNX export (`wfrun::export::onnx`) against ONNX Runtime.
//!
//! Each template's network, built small, with seeded weights and batch-norm
//! scales, shifts and running statistics drawn away from their initial
//! values (so folding batch norm into the convolutions matters), is exported
//! and run in ONNX Runtime (`tests/onnx/run_model.py`) on batches of 1 and 3
//! images through the one dynamic batch axis. Its outputs must match
//! candle's `TemplateNet::embed` and the softmax / sigmoid of
//! `TemplateNet::logits` in evaluation: `scores` and the L2-normalised
//! embeddings within 1e-4 absolute, the classifiers' raw pooled features
//! within 1e-4 of their largest magnitude (at least 1).
//!
//! ONNX Runtime is found through `WFRUN_ONNX_PYTHON`, a Python with the
//! packages of `tests/onnx/requirements.txt`. Without it the comparisons
//! print `skipped: …` and pass, unless `WFRUN_REQUIRE_ONNXRUNTIME=1`, when
//! they fail. The model's structure and metadata are checked in Rust either
//! way. `WFRUN_ONNX_FULL=1` also exports the full-size published networks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use prost::Message;
use wfrun::data::Rng;
use wfrun::export::proto::{tensor_shape_proto::dimension, type_proto, ModelProto};
use wfrun::export::{onnx, ExportError, OnnxMeta};
use wfrun::models::{AngularMargin, BnInceptionConfig, NetConfig, ResNetConfig, TemplateNet};
use wfrun::spec::Architecture;

/// The Python that runs ONNX Runtime, or why there is none.
fn onnxruntime_python() -> Result<PathBuf, String> {
    let Some(python) = std::env::var_os("WFRUN_ONNX_PYTHON") else {
        return Err("WFRUN_ONNX_PYTHON is not set".into());
    };
    let python = PathBuf::from(python);
    let probe = Command::new(&python)
        .args(["-c", "import onnxruntime, onnx, numpy"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !probe.status.success() {
        return Err(format!(
            "{} lacks onnxruntime, onnx or numpy (tests/onnx/requirements.txt): {}",
            python.display(),
            String::from_utf8_lossy(&probe.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(python)
}

/// The Python, or `None` after printing why the comparison is skipped
/// (a failure when `WFRUN_REQUIRE_ONNXRUNTIME=1`).
fn python_or_skip(what: &str) -> Option<PathBuf> {
    match onnxruntime_python() {
        Ok(p) => Some(p),
        Err(why) => {
            if std::env::var_os("WFRUN_REQUIRE_ONNXRUNTIME").is_some_and(|v| v == "1") {
                panic!("WFRUN_REQUIRE_ONNXRUNTIME=1 but {why}");
            }
            println!("skipped: {what} against ONNX Runtime: {why}");
            None
        }
    }
}

/// Draws batch norm's scale and shift and its running statistics from
/// `seed`: γ in [0.5, 1.5], β and μ in [−0.5, 0.5], σ² in [0.5, 2].
fn perturb_batch_norm(map: &VarMap, seed: u64) {
    let data = map.data().lock().unwrap();
    let mut rng = Rng::new(seed);
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut perturbed = 0;
    for name in names {
        let Some(prefix) = name.strip_suffix(".running_mean") else {
            continue;
        };
        for (suffix, lo, hi) in [
            ("weight", 0.5, 1.5),
            ("bias", -0.5, 0.5),
            ("running_mean", -0.5, 0.5),
            ("running_var", 0.5, 2.0),
        ] {
            let var = &data[&format!("{prefix}.{suffix}")];
            let n = var.elem_count();
            let values: Vec<f32> = (0..n)
                .map(|_| (lo + (hi - lo) * rng.next_f64()) as f32)
                .collect();
            var.set(&Tensor::from_vec(values, n, &Device::Cpu).unwrap())
                .unwrap();
        }
        perturbed += 1;
    }
    assert!(perturbed > 0, "no batch norm found");
}

/// A network for `cfg` with seeded weights and perturbed batch norms. A
/// classifier's last layer is scaled so that its logits on images like the
/// tests' are about ±2 (the perturbed batch norms make the pooled features
/// large, and scores of 0 and 1 would hide differences in the logits).
fn network(cfg: &NetConfig, classes: usize, size: usize, seed: u64) -> (VarMap, TemplateNet) {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let net = TemplateNet::new(cfg, classes, &vb).unwrap();
    wfrun::models::init::seeded(&map, seed).unwrap();
    perturb_batch_norm(&map, seed ^ 0x5eed);
    let fc = match cfg {
        NetConfig::AngularMargin { .. } => return (map, net),
        NetConfig::BnInception { .. } => "last_linear",
        NetConfig::ResNext { .. } => "fc",
    };
    let x = Tensor::from_vec(images(2, size, seed), (2, 3, size, size), &Device::Cpu).unwrap();
    let logits = flat(&net.logits(&x, false).unwrap());
    let spread = logits.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let data = map.data().lock().unwrap();
    for suffix in ["weight", "bias"] {
        let var = &data[&format!("{fc}.{suffix}")];
        var.set(&(var.as_tensor() * (2.0 / spread as f64)).unwrap())
            .unwrap();
    }
    drop(data);
    (map, net)
}

fn images(n: usize, size: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * 3 * size * size)
        .map(|_| rng.normal() as f32)
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// candle's outputs in evaluation: the embedding and the scores.
fn candle_outputs(net: &TemplateNet, logreg: bool, x: &[f32], size: usize) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / (3 * size * size);
    let x = Tensor::from_vec(x.to_vec(), (n, 3, size, size), &Device::Cpu).unwrap();
    let embeddings = net.embed(&x, false).unwrap();
    let logits = net.logits(&x, false).unwrap();
    let scores = if logreg {
        candle_nn::ops::sigmoid(&logits).unwrap()
    } else {
        candle_nn::ops::softmax_last_dim(&logits).unwrap()
    };
    (flat(&embeddings), flat(&scores))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|v| v.abs()).fold(0.0, f32::max)
}

fn concepts(classes: usize) -> Vec<String> {
    (0..classes).map(|i| format!("concept {i}")).collect()
}

/// What ONNX Runtime reported and computed for a model.
struct OrtRun {
    report: serde_json::Value,
    /// (embeddings, scores) per input.
    outputs: Vec<(Vec<f32>, Vec<f32>)>,
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn run_onnxruntime(python: &Path, model: &Path, inputs: &[Vec<f32>]) -> OrtRun {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/run_model.py"),
        model.to_path_buf(),
        dir.path().to_path_buf(),
    ];
    for (i, x) in inputs.iter().enumerate() {
        let path = dir.path().join(format!("{i}.images.f32"));
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        args.push(path);
    }
    let out = Command::new(python).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "run_model.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs = (0..inputs.len())
        .map(|i| {
            (
                read_f32(&dir.path().join(format!("{i}.embeddings.f32"))),
                read_f32(&dir.path().join(format!("{i}.scores.f32"))),
            )
        })
        .collect();
    OrtRun { report, outputs }
}

/// The model's metadata properties, read back with the generated messages.
fn properties(model: &ModelProto) -> BTreeMap<String, String> {
    model
        .metadata_props
        .iter()
        .map(|p| (p.key.clone().unwrap(), p.value.clone().unwrap()))
        .collect()
}

/// The declared shape of a graph input or output: a number, or the name of a dynamic axis.
fn declared_shape(model: &ModelProto, name: &str) -> Vec<String> {
    let graph = model.graph.as_ref().unwrap();
    let info = graph
        .input
        .iter()
        .chain(&graph.output)
        .find(|v| v.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no graph input or output `{name}`"));
    let Some(type_proto::Value::TensorType(t)) = info.r#type.as_ref().unwrap().value.as_ref()
    else {
        panic!("`{name}` is not a tensor");
    };
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            dimension::Value::DimValue(v) => v.to_string(),
            dimension::Value::DimParam(p) => p.clone(),
        })
        .collect()
}

/// What one comparison measured.
#[derive(Debug)]
struct Agreement {
    embeddings: f32,
    embeddings_scale: f32,
    scores: f32,
}

/// Exports `cfg`, checks the file's structure and metadata, and compares
/// ONNX Runtime's outputs with candle's on batches of 1 and 3.
fn export_and_compare(
    label: &str,
    cfg: &NetConfig,
    classes: usize,
    size: usize,
    seed: u64,
) -> (ModelProto, Option<Agreement>) {
    let (map, net) = network(cfg, classes, size, seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let meta = OnnxMeta {
        image_size: size,
        template: label.into(),
        concepts: concepts(classes),
        properties: vec![("seed".into(), seed.to_string())],
    };
    let started = std::time::Instant::now();
    let summary = onnx(cfg, classes, &map, &meta, &path).unwrap();
    let export_time = started.elapsed();
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(summary.classes, classes);

    // The file as written, read back with the generated messages.
    let model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    assert_eq!(model.producer_name.as_deref(), Some("wfrun"));
    assert_eq!(model.ir_version, Some(8));
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.opset_import[0].version, Some(17));
    let props = properties(&model);
    let expected = [
        ("image_size", size.to_string()),
        ("mean", "[0.485,0.456,0.406]".into()),
        ("std", "[0.229,0.224,0.225]".into()),
        ("channel_order", "RGB".into()),
        ("layout", "NCHW".into()),
        ("pixel_scale", "1/255".into()),
        ("template", label.into()),
        ("embedding_size", summary.embedding_size.to_string()),
        (
            "scores",
            if cfg.logreg() { "sigmoid" } else { "softmax" }.into(),
        ),
        (
            "concepts",
            serde_json::to_string(&concepts(classes)).unwrap(),
        ),
        ("seed", seed.to_string()),
    ];
    for (key, value) in &expected {
        assert_eq!(props.get(*key), Some(value), "metadata property `{key}`");
    }
    for key in ["resize", "architecture", "wfrun_version", "normalize"] {
        assert!(props.contains_key(key), "metadata property `{key}` missing");
    }
    assert!(props["resize"].contains("triangle") && props["resize"].contains("centre"));
    let s = size.to_string();
    assert_eq!(declared_shape(&model, "images"), ["batch", "3", &s, &s]);
    let d = summary.embedding_size.to_string();
    assert_eq!(declared_shape(&model, "embeddings"), ["batch", d.as_str()]);
    let c = classes.to_string();
    assert_eq!(declared_shape(&model, "scores"), ["batch", c.as_str()]);
    // Batch norm is folded: no BatchNormalization node is left.
    let graph = model.graph.as_ref().unwrap();
    assert!(graph
        .node
        .iter()
        .all(|n| n.op_type.as_deref() != Some("BatchNormalization")));
    // Every node's output and every weight is used.
    let used: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().filter_map(|o| o.name.as_deref()))
        .collect();
    for n in &graph.node {
        assert!(
            n.output.iter().all(|o| used.contains(o.as_str())),
            "{label}: the output of {:?} is not used",
            n.name
        );
    }
    for t in &graph.initializer {
        let name = t.name.as_deref().unwrap();
        assert!(used.contains(name), "{label}: weight `{name}` is not used");
    }

    let Some(python) = python_or_skip(label) else {
        return (model, None);
    };
    let inputs = [images(1, size, seed + 1), images(3, size, seed + 2)];
    let started = std::time::Instant::now();
    let ort = run_onnxruntime(&python, &path, &inputs);
    let ort_time = started.elapsed();
    let report = &ort.report;
    assert_eq!(report["producer"], "wfrun");
    assert_eq!(report["opsets"][""], 17);
    assert_eq!(report["metadata"]["layout"], "NCHW");
    assert_eq!(report["metadata"]["image_size"], size.to_string());
    assert_eq!(
        report["inputs"],
        serde_json::json!([{"name": "images", "shape": ["batch", 3, size, size]}])
    );
    let mut worst = Agreement {
        embeddings: 0.0,
        embeddings_scale: 0.0,
        scores: 0.0,
    };
    for (x, (ort_embeddings, ort_scores)) in inputs.iter().zip(&ort.outputs) {
        let n = x.len() / (3 * size * size);
        let (embeddings, scores) = candle_outputs(&net, cfg.logreg(), x, size);
        assert_eq!(ort_embeddings.len(), n * summary.embedding_size);
        assert_eq!(ort_scores.len(), n * classes);
        let de = max_abs_diff(&embeddings, ort_embeddings);
        let ds = max_abs_diff(&scores, ort_scores);
        let scale = max_abs(&embeddings).max(1.0);
        println!(
            "{label} ({size} px, batch {n}): embeddings differ by {de:.2e} (largest |value| {:.3}), scores by {ds:.2e}",
            max_abs(&embeddings)
        );
        assert!(
            de <= 1e-4 * scale,
            "{label}, batch {n}: embeddings differ by {de:e} (scale {scale})"
        );
        assert!(ds <= 1e-4, "{label}, batch {n}: scores differ by {ds:e}");
        assert!(
            scores.iter().any(|&p| (0.02..0.98).contains(&p)),
            "{label}: the scores are saturated, so they compare nothing: {scores:?}"
        );
        worst.embeddings = worst.embeddings.max(de);
        worst.embeddings_scale = worst.embeddings_scale.max(max_abs(&embeddings));
        worst.scores = worst.scores.max(ds);
    }
    println!(
        "{label} ({size} px): {} bytes, {} nodes, {} weights; export {:.2?}, ONNX Runtime {:.2?}",
        summary.bytes, summary.nodes, summary.parameters, export_time, ort_time
    );
    (model, Some(worst))
}

fn small_resnet(groups: usize, width_per_group: usize, base: usize) -> ResNetConfig {
    ResNetConfig {
        layers: [1, 2, 1, 1],
        groups,
        width_per_group,
        base,
    }
}

#[test]
fn angular_margin_resnet_matches_onnxruntime() {
    let cfg = NetConfig::AngularMargin {
        backbone: small_resnet(1, 64, 8),
        embeddings_size: 16,
        // A small radius: at 30, five classes in 16 dimensions give scores of 0 and 1.
        loss: AngularMargin {
            scale: 4.0,
            margin: 0.5,
        },
    };
    export_and_compare("Clarifai_ResNet_AngularMargin", &cfg, 5, 64, 11);
}

#[test]
fn resnext_classifiers_match_onnxruntime() {
    for logreg in [false, true] {
        let cfg = NetConfig::ResNext {
            backbone: small_resnet(4, 16, 8),
            logreg,
        };
        export_and_compare("Clarifai_ResNext", &cfg, 4, 64, 12);
    }
}

#[test]
fn bn_inception_classifiers_match_onnxruntime() {
    // 64 px; 56 px leaves a 7-pixel map before `inception_3c`, where the
    // published ceil-mode pool and the strided convolutions disagree and the
    // network takes a padded pool instead (the exporter walks that choice).
    for (logreg, size) in [(false, 64), (true, 64), (false, 56)] {
        let cfg = NetConfig::BnInception {
            backbone: BnInceptionConfig { width_div: 16 },
            logreg,
        };
        let (model, _) = export_and_compare("Clarifai_InceptionBatchNorm", &cfg, 6, size, 13);
        let padded_pools = model
            .graph
            .unwrap()
            .node
            .iter()
            .filter(|n| {
                let ints = |name: &str| {
                    n.attribute
                        .iter()
                        .find(|a| a.name.as_deref() == Some(name))
                        .map(|a| a.ints.clone())
                };
                n.op_type.as_deref() == Some("MaxPool")
                    && ints("strides") == Some(vec![2, 2])
                    && ints("pads") == Some(vec![1, 1, 1, 1])
            })
            .count();
        assert_eq!(padded_pools, usize::from(size == 56), "{size} px");
    }
}

#[test]
fn export_refuses_weights_that_do_not_fit_the_network() {
    let cfg = NetConfig::ResNext {
        backbone: small_resnet(4, 16, 8),
        logreg: false,
    };
    let (map, _) = network(&cfg, 4, 64, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    let meta = OnnxMeta {
        image_size: 64,
        template: "Clarifai_ResNext".into(),
        concepts: concepts(4),
        properties: vec![],
    };
    // Another number of classes: `fc` has the wrong shape.
    let e = onnx(
        &cfg,
        3,
        &map,
        &OnnxMeta {
            concepts: concepts(3),
            ..meta.clone()
        },
        &path,
    )
    .unwrap_err();
    assert!(matches!(e, ExportError::Network(_)), "{e}");
    assert!(e.to_string().contains("fc.weight"), "{e}");
    // Another network: tensors missing.
    let other = NetConfig::ResNext {
        backbone: small_resnet(4, 16, 16),
        logreg: false,
    };
    let e = onnx(&other, 4, &map, &meta, &path).unwrap_err();
    assert!(matches!(e, ExportError::Network(_)), "{e}");
    // Names for every class.
    let e = onnx(
        &cfg,
        4,
        &map,
        &OnnxMeta {
            concepts: concepts(2),
            ..meta.clone()
        },
        &path,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("4 classes but 2 concept names"),
        "{e}"
    );
    // wfrun's own properties cannot be overridden.
    let e = onnx(
        &cfg,
        4,
        &map,
        &OnnxMeta {
            properties: vec![("mean".into(), "[0, 0, 0]".into())],
            ..meta.clone()
        },
        &path,
    )
    .unwrap_err();
    assert!(e.to_string().contains("`mean`"), "{e}");
    // No image size.
    let e = onnx(
        &cfg,
        4,
        &map,
        &OnnxMeta {
            image_size: 0,
            ..meta.clone()
        },
        &path,
    )
    .unwrap_err();
    assert!(e.to_string().contains("image size is 0"), "{e}");
    assert!(!path.exists(), "nothing is written on failure");
    // The weights were not touched (a VarBuilder on the map would have added them).
    assert_eq!(
        map.all_vars().len(),
        network(&cfg, 4, 64, 1).0.all_vars().len()
    );
    // A file that cannot be written names its path.
    let e = onnx(&cfg, 4, &map, &meta, &dir.path().join("missing/model.onnx")).unwrap_err();
    assert!(matches!(e, ExportError::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing/model.onnx"), "{e}");
}

/// The full-size published networks at 64 px (`WFRUN_ONNX_FULL=1`).
#[test]
fn full_size_networks_match_onnxruntime() {
    if std::env::var_os("WFRUN_ONNX_FULL").is_none_or(|v| v != "1") {
        println!("skipped: the full-size networks (set WFRUN_ONNX_FULL=1)");
        return;
    }
    let loss = AngularMargin {
        scale: 30.0,
        margin: 0.5,
    };
    for (arch, label) in [
        (
            Architecture::Resnet101AngularMargin,
            "Clarifai_ResNet_AngularMargin",
        ),
        (Architecture::BnInception, "Clarifai_InceptionBatchNorm"),
        (Architecture::Resnext50, "Clarifai_ResNext"),
    ] {
        let started = std::time::Instant::now();
        let cfg = NetConfig::published(arch, false, 128, loss);
        let (_, worst) = export_and_compare(label, &cfg, 10, 64, 21);
        println!("{label}, full size: {worst:?} in {:.1?}", started.elapsed());
    }
}
