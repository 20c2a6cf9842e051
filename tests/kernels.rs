//! wfrun's CPU kernels (convolution through matrix products, fused batch norm,
//! residual add + ReLU, in-place SGD) compute what candle's generic operations
//! compute, for the full-size networks: the same loss, every parameter's
//! gradient, and the weights, momentum and running statistics after SGD
//! steps, and the embedding in evaluation afterwards (batch norm folded into
//! the convolutions on the kernels' side), in f64.
//!
//! The kernels are chosen when a network and its optimiser are built
//! (`Kernels`), so both kinds live side by side in one process.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wfrun::models::cpu::Kernels;
use wfrun::models::optim::Sgd;
use wfrun::models::{AngularMargin, NetConfig, Targets, TemplateNet};
use wfrun::spec::Architecture;

struct Outcome {
    losses: Vec<f64>,
    grads: BTreeMap<String, Vec<f64>>,
    after: BTreeMap<String, Vec<f64>>,
    /// The embedding in evaluation mode after the first step.
    eval: Vec<f64>,
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Two SGD steps from seeded weights on fixed images: the losses, the first
/// step's gradients, the variables after it.
fn train(arch: Architecture, kernels: Kernels) -> Outcome {
    let device = Device::Cpu;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F64, &device);
    let loss = AngularMargin {
        scale: 16.0,
        margin: 0.1,
    };
    let cfg = NetConfig::published(arch, false, 64, loss);
    let net = TemplateNet::with_kernels(&cfg, 3, kernels, &vb).unwrap();
    wfrun::models::init::seeded(&map, 5).unwrap();
    let mut sgd = Sgd::new(&map, 0.001, 0.9, 5e-4).with_kernels(kernels);
    let n = 4 * 3 * 32 * 32;
    let pixels: Vec<f64> = (0..n)
        .map(|i| ((i * 7919 % 1009) as f64 / 504.0) - 1.0)
        .collect();
    let x = Tensor::from_vec(pixels, (4, 3, 32, 32), &device).unwrap();
    let labels = Tensor::new(&[0u32, 1, 2, 1], &device).unwrap();
    let targets = Targets::Classes(labels);
    let mut losses = Vec::new();
    let mut grads = BTreeMap::new();
    let mut after = BTreeMap::new();
    let mut eval = Vec::new();
    for step in 0..2 {
        let l = net.loss(&x, &targets, true).unwrap();
        losses.push(l.to_scalar::<f64>().unwrap());
        let g = l.backward().unwrap();
        if step == 0 {
            for (name, var) in map.data().lock().unwrap().iter() {
                if let Some(t) = g.get(var.as_tensor()) {
                    grads.insert(name.clone(), flat(t));
                }
            }
        }
        sgd.step(&g).unwrap();
        if step == 0 {
            after = map
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(name, var)| (name.clone(), flat(var.as_tensor())))
                .collect();
            for (name, v) in sgd.velocities() {
                after.insert(format!("velocity {name}"), flat(&v));
            }
            eval = flat(&net.embed(&x, false).unwrap());
        }
    }
    Outcome {
        losses,
        grads,
        after,
        eval,
    }
}

/// The largest difference between two sets of tensors, relative to each
/// tensor's largest magnitude, or to a thousandth of the largest of all when
/// that is more (BN-Inception's convolution biases, cancelled by the batch
/// norm after them, have gradients of 1e-12 and less); and where.
fn worst(a: &BTreeMap<String, Vec<f64>>, b: &BTreeMap<String, Vec<f64>>) -> (f64, String) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let largest = |v: &[f64]| v.iter().fold(0f64, |m, x| m.max(x.abs()));
    let floor = b.values().map(|v| largest(v)).fold(0f64, f64::max) * 1e-3;
    let mut worst = (0.0, String::new());
    for (name, x) in a {
        let y = &b[name];
        let scale = largest(y).max(floor).max(1e-300);
        let d = x.iter().zip(y).fold(0f64, |m, (p, q)| m.max((p - q).abs())) / scale;
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    worst
}

#[test]
fn the_kernels_train_resnext_as_candle_does() {
    compare(Architecture::Resnext50);
}

#[test]
fn the_kernels_train_bn_inception_as_candle_does() {
    compare(Architecture::BnInception);
}

#[test]
fn the_kernels_train_resnet101_as_candle_does() {
    compare(Architecture::Resnet101AngularMargin);
}

/// The full-size network on wfrun's kernels and on candle's operations.
fn compare(arch: Architecture) {
    let ours = train(arch, Kernels::Wfrun);
    let theirs = train(arch, Kernels::Candle);
    // The second loss, after a step, is more sensitive: batch norm over
    // four values per channel in the last stage amplifies 1e-13 weight
    // differences.
    eprintln!("{arch:?}: losses {:?} vs {:?}", ours.losses, theirs.losses);
    for (a, b, tol) in [
        (ours.losses[0], theirs.losses[0], 1e-10),
        (ours.losses[1], theirs.losses[1], 1e-5),
    ] {
        assert!(
            (a - b).abs() < tol * b.abs().max(1.0),
            "{arch:?}: loss {a} vs {b}"
        );
    }
    assert!(
        ours.grads.len() > 100,
        "{arch:?}: {} gradients",
        ours.grads.len()
    );
    let (d, at) = worst(&ours.grads, &theirs.grads);
    eprintln!("{arch:?}: gradients within {d:e} ({at})");
    assert!(d < 1e-8, "{arch:?}: gradient of {at} differs by {d:e}");
    let (d, at) = worst(&ours.after, &theirs.after);
    eprintln!("{arch:?}: after a step within {d:e} ({at})");
    assert!(d < 1e-8, "{arch:?}: {at} after a step differs by {d:e}");
    let largest = theirs.eval.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(largest > 1e-3, "{arch:?}: an evaluation output of zeros");
    let d = ours
        .eval
        .iter()
        .zip(&theirs.eval)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
        / largest;
    eprintln!("{arch:?}: evaluation within {d:e}");
    assert!(d < 1e-8, "{arch:?}: evaluation output differs by {d:e}");
}
