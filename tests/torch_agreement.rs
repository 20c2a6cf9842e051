//! wfrun's networks against PyTorch's, at small widths, in f64: the same
//! weights and input give the same output, loss, gradients (input and every
//! parameter), batch-norm running statistics and evaluation output.
//!
//! The fixtures in `tests/data/torch` were written once by
//! `scripts/make_torch_fixtures.py` from torchvision's and pretrainedmodels'
//! own code; PyTorch is not needed to run this test.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::optim::is_running_statistic;
use wfrun::models::{
    weights, AngularMargin, BnInceptionConfig, NetConfig, ResNetConfig, Targets, TemplateNet,
};

/// Largest difference relative to the reference's largest magnitude.
fn rel_diff(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims());
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .max(1e-3);
    diff / scale
}

fn agree(fixture: &str, cfg: NetConfig, multi_label: bool) {
    let tensors =
        candle_core::safetensors::load(Path::new("tests/data/torch").join(fixture), &Device::Cpu)
            .unwrap();
    let get = |k: &str| {
        tensors
            .get(k)
            .unwrap_or_else(|| panic!("{fixture} lacks `{k}`"))
            .clone()
    };
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &Device::Cpu);
    let net = TemplateNet::new(&cfg, 3, &vb).unwrap();

    let weights: HashMap<String, Tensor> = tensors
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("weights.")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    let report = weights::load_tensors(&map, &weights).unwrap();
    assert!(
        report.is_complete() && report.unexpected.is_empty(),
        "{fixture}: {report}"
    );

    let x = Var::from_tensor(&get("input")).unwrap();
    let targets = if multi_label {
        Targets::MultiLabel(get("labels"))
    } else {
        Targets::Classes(get("labels").to_dtype(DType::U32).unwrap())
    };
    let (output, loss) = net.output_and_loss(x.as_tensor(), &targets, true).unwrap();
    let tol = 1e-9;
    assert!(
        rel_diff(&output, &get("train.output")) < tol,
        "{fixture}: training output"
    );
    assert!(
        rel_diff(&loss.reshape(1).unwrap(), &get("train.loss")) < tol,
        "{fixture}: loss"
    );

    let grads = loss.backward().unwrap();
    assert!(
        rel_diff(grads.get(x.as_tensor()).unwrap(), &get("grad.input")) < 1e-7,
        "{fixture}: input gradient"
    );
    let data = map.data().lock().unwrap();
    let mut checked = 0;
    for (name, var) in data.iter() {
        if is_running_statistic(name) {
            let d = rel_diff(var.as_tensor(), &get(&format!("running.{name}")));
            assert!(
                d < tol,
                "{fixture}: running statistic `{name}` differs by {d:e}"
            );
            continue;
        }
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{fixture}: no gradient for `{name}`"));
        let d = rel_diff(grad, &get(&format!("grad.{name}")));
        assert!(d < 1e-7, "{fixture}: gradient of `{name}` differs by {d:e}");
        checked += 1;
    }
    assert!(
        checked > 20,
        "{fixture}: only {checked} parameters compared"
    );
    drop(data);

    let eval = match cfg {
        NetConfig::AngularMargin { .. } => net.embed(x.as_tensor(), false).unwrap(),
        _ => net.logits(x.as_tensor(), false).unwrap(),
    };
    assert!(
        rel_diff(&eval, &get("eval.output")) < tol,
        "{fixture}: evaluation output"
    );
}

#[test]
fn resnet_with_angular_margin_matches_pytorch() {
    let backbone = ResNetConfig {
        layers: [1, 2, 1, 1],
        groups: 1,
        width_per_group: 64,
        base: 4,
    };
    let cfg = NetConfig::AngularMargin {
        backbone,
        embeddings_size: 16,
        loss: AngularMargin {
            scale: 16.0,
            margin: 0.5,
        },
    };
    agree("resnet_angular_margin.safetensors", cfg, false);
}

#[test]
fn resnext_softmax_classifier_matches_pytorch() {
    let backbone = ResNetConfig {
        layers: [1, 2, 1, 1],
        groups: 4,
        width_per_group: 16,
        base: 8,
    };
    agree(
        "resnext_softmax.safetensors",
        NetConfig::ResNext {
            backbone,
            logreg: false,
        },
        false,
    );
}

#[test]
fn bninception_sigmoid_classifier_matches_pytorch() {
    let cfg = NetConfig::BnInception {
        backbone: BnInceptionConfig { width_div: 16 },
        logreg: true,
    };
    agree("bninception_sigmoid.safetensors", cfg, true);
}
