//! Weights: the full-size networks hold exactly the tensors of the PyTorch
//! networks they follow; saved weights load back to identical outputs; a file
//! that does not fit is reported by name.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::{weights, AngularMargin, NetConfig, ResNetConfig, Targets, TemplateNet};
use wfrun::spec::Architecture;

fn names_and_shapes(map: &VarMap) -> BTreeMap<String, Vec<usize>> {
    map.data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect()
}

fn reference(net: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string("tests/data/torch/names.json").unwrap();
    let all: BTreeMap<String, BTreeMap<String, Vec<usize>>> = serde_json::from_str(&text).unwrap();
    all[net].clone()
}

fn published(arch: Architecture, classes: usize) -> VarMap {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let cfg = NetConfig::published(
        arch,
        false,
        512,
        AngularMargin {
            scale: 64.0,
            margin: 0.5,
        },
    );
    TemplateNet::new(&cfg, classes, &vb).unwrap();
    map
}

#[test]
fn full_size_networks_follow_pytorch_names_and_shapes() {
    // ResNeXt-50 32x4d and BN-Inception with a 1000-concept head: exactly torchvision's / pretrainedmodels' tensors.
    for (arch, name) in [
        (Architecture::Resnext50, "resnext50_32x4d"),
        (Architecture::BnInception, "bninception"),
    ] {
        assert_eq!(
            names_and_shapes(&published(arch, 1000)),
            reference(name),
            "{name}"
        );
    }
    // ResNet-101: torchvision's backbone; the angular margin head replaces `fc`.
    let ours = names_and_shapes(&published(Architecture::Resnet101AngularMargin, 10));
    let mut theirs = reference("resnet101");
    theirs.remove("fc.weight");
    theirs.remove("fc.bias");
    let mut backbone = ours.clone();
    assert_eq!(backbone.remove("embedding.weight"), Some(vec![512, 2048]));
    assert_eq!(backbone.remove("embedding.bias"), Some(vec![512]));
    assert_eq!(backbone.remove("arcface.weight"), Some(vec![10, 512]));
    assert_eq!(backbone, theirs);
    let blocks = ours.keys().filter(|k| k.ends_with(".conv3.weight")).count();
    assert_eq!(
        blocks,
        3 + 4 + 23 + 3,
        "ResNet-101 has 33 bottleneck blocks"
    );
}

fn small_net(map: &VarMap) -> TemplateNet {
    let vb = VarBuilder::from_varmap(map, DType::F32, &Device::Cpu);
    let cfg = NetConfig::ResNext {
        backbone: ResNetConfig {
            layers: [1, 1, 1, 1],
            groups: 2,
            width_per_group: 32,
            base: 8,
        },
        logreg: false,
    };
    TemplateNet::new(&cfg, 4, &vb).unwrap()
}

#[test]
fn saved_weights_load_back_to_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();

    let map = VarMap::new();
    let net = small_net(&map);
    // Train a step so the batch-norm statistics move away from their initial values.
    let labels = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
    net.loss(&x, &Targets::Classes(labels), true).unwrap();
    let before = net.logits(&x, false).unwrap();
    weights::save(&map, &path).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");

    let other = VarMap::new();
    let net2 = small_net(&other);
    assert!(
        net2.logits(&x, false)
            .unwrap()
            .sub(&before)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 1e-3
    );
    let report = weights::load(&other, &path).unwrap();
    assert!(
        report.is_complete() && report.unexpected.is_empty(),
        "{report}"
    );
    let after = net2.logits(&x, false).unwrap();
    assert_eq!(
        before.to_vec2::<f32>().unwrap(),
        after.to_vec2::<f32>().unwrap()
    );
}

#[test]
fn weights_that_do_not_fit_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.safetensors");
    let map = VarMap::new();
    small_net(&map);
    let mut tensors: std::collections::HashMap<String, Tensor> = map
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    tensors.remove("layer1.0.conv2.weight");
    tensors.insert(
        "fc.weight".into(),
        Tensor::zeros((7, 256), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "aux_head.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::zeros(1, DType::I64, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &path).unwrap();

    let fresh = VarMap::new();
    small_net(&fresh);
    let report = weights::load(&fresh, &path).unwrap();
    assert_eq!(report.missing, ["layer1.0.conv2.weight"]);
    assert_eq!(report.unexpected, ["aux_head.weight"]);
    assert_eq!(
        report.mismatched,
        [("fc.weight".to_string(), vec![4, 256], vec![7, 256])]
    );
    assert!(!report.is_complete());
    let text = report.to_string();
    assert!(
        text.contains("layer1.0.conv2.weight") && text.contains("`fc.weight` has shape [7, 256]"),
        "{text}"
    );

    let e = weights::load(&fresh, &dir.path().join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
    std::fs::write(
        dir.path().join("bad.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let e = weights::load(&fresh, &dir.path().join("bad.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.safetensors"), "{e}");
}

/// A randomly initialised torchvision resnet101, converted with
/// `scripts/convert_state_dict.py`, loads into the angular margin template's
/// network with only the head left over. The 170 MB file is not in the
/// repository: set `WFRUN_RESNET101_SAFETENSORS` to run this test.
#[test]
fn converted_torchvision_resnet101_loads() {
    let Some(path) = std::env::var_os("WFRUN_RESNET101_SAFETENSORS") else {
        eprintln!("WFRUN_RESNET101_SAFETENSORS is not set: skipped");
        return;
    };
    let map = published(Architecture::Resnet101AngularMargin, 10);
    let report = weights::load(&map, std::path::Path::new(&path)).unwrap();
    assert_eq!(
        report.missing,
        ["arcface.weight", "embedding.bias", "embedding.weight"]
    );
    assert_eq!(report.unexpected, ["fc.bias", "fc.weight"]);
    assert!(report.mismatched.is_empty());
    assert_eq!(report.loaded, 522 - 2);
}

/// Saved weights get the mode any new file gets (the umask's), not 0600:
/// another user may use a model as the base of a workflow.
#[cfg(unix)]
#[test]
fn saved_weights_are_readable_as_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::File::create(&probe).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let path = dir.path().join("w.safetensors");
    let t = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let tensors = std::collections::HashMap::from([("t".to_string(), t)]);
    weights::save_tensors(&tensors, &path).unwrap();
    assert_eq!(mode(&path), mode(&probe));
}
