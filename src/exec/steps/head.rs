//! `classifier_head`: a linear head on the frozen embeddings.

use std::path::Path;

use super::{step_error, StepInputs};
use crate::exec::folder::{self, write};
use crate::exec::metrics::{concept_list, csv_field};
use crate::exec::results::ClassifierHeadMetrics;
use crate::exec::RunError;
use crate::hyper::HeadParams;
use crate::plan::PlannedStep;
use crate::steps::head::{head_metrics, train_head, Head, HeadOptions};

/// Predictions listed per image: the most likely few with softmax.
const TOP_PREDICTIONS: usize = 5;

pub(super) fn run(
    inputs: &StepInputs,
    step: &PlannedStep,
    p: &HeadParams,
    folder: &Path,
) -> Result<ClassifierHeadMetrics, RunError> {
    let Some(x) = &inputs.train.matrix else {
        return Err(step_error(step, "no training image could be embedded"));
    };
    if !p.logreg && inputs.train.concepts.iter().any(|c| c.len() > 1) {
        return Err(step_error(
            step,
            "some images have several concepts: set `logreg = 1` in this step",
        ));
    }
    let options = HeadOptions {
        logreg: p.logreg,
        epochs: p.epochs,
        learning_rate: p.learning_rate,
        l2: p.l2,
        batch_size: p.batch_size,
        seed: inputs.seed,
    };
    let head = train_head(x, &inputs.train.concepts, inputs.concepts.len(), &options)?;
    if head.losses.last().is_some_and(|l| !l.is_finite()) {
        return Err(step_error(
            step,
            "the head's loss became NaN or infinite: try a smaller `learning_rate`",
        ));
    }
    let tensors = [
        ("weight", &head.weight),
        ("bias", &head.bias),
        ("mean", &head.mean),
        ("scale", &head.scale),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    folder::write_tensors(&folder.join("head.safetensors"), &tensors)?;
    // What `Model::head` needs to use it: the order of its outputs.
    // With the model's identity, so that `wfrun predict` refuses the head
    // copied beside another model. (A run that wrote no model of its own
    // records none.)
    let meta = crate::exec::model::HeadMeta {
        logreg: p.logreg,
        concepts: inputs.concepts.to_vec(),
        model: crate::exec::model::identity_of(inputs.out).ok(),
    };
    folder::write_json(&folder.join("head.json"), &meta)?;
    let mut result = ClassifierHeadMetrics {
        logreg: p.logreg,
        train_images: inputs.train.rows(),
        loss_per_epoch: head.losses.clone(),
        eval: None,
    };
    let mut predictions = String::from("path,concept,score,true_concepts\n");
    if let Some(e) = &inputs.eval.matrix {
        let scores = head.scores(e)?.to_vec2::<f32>()?;
        predictions.push_str(&predictions_csv(inputs, &head, &scores));
        let truth = &inputs.eval.concepts;
        result.eval = Some(head_metrics(&scores, truth, inputs.concepts, p.logreg));
    }
    write(&folder.join("predictions.csv"), predictions.as_bytes())?;
    Ok(result)
}

/// The rows of `predictions.csv` for the evaluation images' `scores`.
fn predictions_csv(inputs: &StepInputs, head: &Head, scores: &[Vec<f32>]) -> String {
    let mut csv = String::new();
    for (row, s) in scores.iter().enumerate() {
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        // Softmax: the most likely few; sigmoid units: every concept above
        // 0.5 (at least one).
        let shown: Vec<usize> = if head.logreg {
            let above: Vec<usize> = order.iter().copied().filter(|&c| s[c] > 0.5).collect();
            if above.is_empty() {
                order[..1].to_vec()
            } else {
                above
            }
        } else {
            order.iter().copied().take(TOP_PREDICTIONS).collect()
        };
        let path = csv_field(&inputs.eval.paths[row].display().to_string());
        let truth = csv_field(&concept_list(&inputs.eval.concepts[row], inputs.concepts));
        for c in shown {
            let concept = csv_field(&inputs.concepts[c]);
            csv.push_str(&format!("{path},{concept},{:.6},{truth}\n", s[c]));
        }
    }
    csv
}
