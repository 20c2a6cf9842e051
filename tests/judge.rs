//! `steps::judge` against the metric-learning field's own code: fixtures
//! that `scripts/make_judge_fixtures.py` computed with pytorch-metric-learning
//! (precision@1, R-precision, MAP@R), numpy (recall@k) and scikit-learn (NMI,
//! AMI) on fixed embeddings, concepts and clusterings.

use candle_core::{Device, Tensor};
use serde_json::Value;
use wfrun::steps::judge::{adjusted_mutual_information, judge, per_query, JudgeOptions, RECALL_AT};
use wfrun::steps::kmeans::agreement;
use wfrun::steps::search::search;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/judge.json"
    ))
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn embeddings(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let dim = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), dim), &Device::Cpu).unwrap()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn close(name: &str, ours: f64, theirs: &Value) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() < 1e-6,
        "{name}: wfrun {ours}, reference {theirs}"
    );
}

#[test]
fn retrieval_figures_equal_pytorch_metric_learnings() {
    for case in cases() {
        let labels = usizes(&case["labels"]);
        let x = embeddings(&case["embeddings"]);
        let neighbours = search(&x, &x, labels.len() - 1, &|q| Some(q)).unwrap();
        let q = per_query(&neighbours, &labels, &labels);
        close(
            "precision@1",
            mean(&q.precision_at_1),
            &case["precision_at_1"],
        );
        close("R-precision", mean(&q.r_precision), &case["r_precision"]);
        close("MAP@R", mean(&q.map_at_r), &case["map_at_r"]);
        for (j, k) in RECALL_AT.iter().enumerate() {
            close(
                &format!("recall@{k}"),
                mean(&q.recall[j]),
                &case["recall_at_k"][k.to_string()],
            );
        }
    }
}

#[test]
fn nmi_and_ami_equal_scikit_learns() {
    for case in cases() {
        let labels = usizes(&case["labels"]);
        let clusters = usizes(&case["clusters"]);
        close("NMI", agreement(&labels, &clusters).0, &case["nmi"]);
        close(
            "AMI",
            adjusted_mutual_information(&labels, &clusters),
            &case["ami"],
        );
    }
}

#[test]
fn judging_reports_the_reference_figures_with_intervals_around_them() {
    for case in cases() {
        let labels = usizes(&case["labels"]);
        let x = embeddings(&case["embeddings"]);
        let j = judge(&x, &labels, &JudgeOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(j.images, labels.len());
        close(
            "precision@1",
            j.precision_at_1.value,
            &case["precision_at_1"],
        );
        close("MAP@R", j.map_at_r.value, &case["map_at_r"]);
        for (k, at) in RECALL_AT.iter().zip(&j.recall_at_k) {
            assert_eq!(at.k, *k);
            close(
                &format!("recall@{k}"),
                at.at.value,
                &case["recall_at_k"][k.to_string()],
            );
        }
        for i in [j.precision_at_1, j.r_precision, j.map_at_r, j.nmi, j.ami] {
            assert!(i.low <= i.value && i.value <= i.high, "{i:?}");
            assert!(i.high - i.low < 0.6, "{i:?}");
        }
        // Well-separated concepts cluster well; k-means here is ours, so only
        // its agreement with the concepts is asserted.
        assert!(j.nmi.value > 0.2 && j.ami.value > 0.2, "{j:?}");
        // The same seed, the same figures.
        assert_eq!(
            judge(&x, &labels, &JudgeOptions::default())
                .unwrap()
                .unwrap(),
            j
        );
    }
    // One concept: nothing to tell apart.
    let x = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(judge(&x, &[0, 0, 0], &JudgeOptions::default())
        .unwrap()
        .is_none());
}
