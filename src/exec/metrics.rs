//! Evaluation after each epoch, and the embeddings written at the end.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use serde::{Deserialize, Serialize};

use super::folder::{self, write};
use super::sets::Images;
use super::RunError;
use crate::data::images::{Job, Prefetch};
use crate::models::{NetConfig, TemplateNet};
use crate::steps::judge::{judge, JudgeOptions, Judged};

/// Metrics on the evaluation images (absent ones do not apply to the template).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub images: usize,
    pub loss: Option<f32>,
    /// Softmax and angular margin: the share whose top concept is right.
    pub accuracy: Option<f32>,
    /// Sigmoid units: mean average precision over concepts.
    pub mean_average_precision: Option<f32>,
    /// Sigmoid units: micro-averaged F1 at a threshold of 0.5.
    pub f1: Option<f32>,
    /// Angular margin: the share whose nearest other evaluation image (cosine) shares its concept.
    pub recall_at_1: Option<f32>,
    /// The embeddings judged as the metric-learning field does
    /// (`steps::judge`: precision@1, R-precision, MAP@R, recall@k, NMI, AMI,
    /// with intervals), each image's concept its first; on every epoch's
    /// evaluation up to [`JUDGE_EVERY_EPOCH`] images, and on the last always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<Box<Judged>>,
    /// The same on the images of concepts never trained on
    /// (`data { unseen = .. }`), embedded by the model as it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen: Option<Box<Judged>>,
}

/// Evaluation sets up to this size have their embeddings judged after every
/// epoch; larger ones after the last epoch only.
pub const JUDGE_EVERY_EPOCH: usize = 5000;

/// What the training curves read of a line of `metrics.jsonl`.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct EpochRow {
    pub epoch: u64,
    pub train_loss: f32,
    pub eval: EvalMetrics,
}

/// The epochs of a `metrics.jsonl` (lines that are not epochs are left out).
pub(super) fn epoch_rows(metrics_jsonl: &str) -> Vec<EpochRow> {
    metrics_jsonl
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const EVAL_BATCH: usize = crate::cost::EMBED_BATCH;

/// All of `images`, centre-cropped, in batches decoded ahead on `workers` threads.
fn centre_crops(images: &Images, size: usize, workers: usize) -> Prefetch {
    let indices: Vec<usize> = (0..images.paths.len()).collect();
    let batches = indices.chunks(EVAL_BATCH).map(<[usize]>::to_vec).collect();
    Prefetch::start(
        Job {
            paths: images.paths.clone(),
            batches,
            size,
            random: None,
        },
        workers,
        2,
    )
}

/// What one evaluation pass over a set of images gives.
struct Pass {
    /// The images that could be read, in order.
    kept: Vec<usize>,
    /// The template's embeddings, by batch.
    embeddings: Vec<Tensor>,
    logits: Vec<Tensor>,
    mean_loss: f32,
}

/// Runs `net` in evaluation mode over `images` (centre crops).
fn pass(
    net: &TemplateNet,
    images: &Images,
    classes: usize,
    logreg: bool,
    size: usize,
    workers: usize,
    device: &Device,
) -> Result<Pass, RunError> {
    let (mut kept, mut embeddings, mut logits, mut loss_sum) =
        (Vec::new(), Vec::new(), Vec::new(), 0.0f32);
    for decoded in centre_crops(images, size, workers) {
        if decoded.indices.is_empty() {
            continue;
        }
        let n = decoded.indices.len();
        let x = Tensor::from_vec(decoded.pixels, (n, 3, size, size), device)?;
        let targets = images.targets(&decoded.indices, classes, logreg, device)?;
        // One forward pass gives the embeddings, the logits and the loss.
        let e = net.embed(&x, false)?;
        let (_, loss) = net.output_and_loss_of(e.clone(), &targets)?;
        loss_sum += loss.to_scalar::<f32>()? * n as f32;
        logits.push(net.logits_of(&e)?);
        embeddings.push(e);
        kept.extend(decoded.indices);
    }
    let mean_loss = loss_sum / kept.len().max(1) as f32;
    Ok(Pass {
        kept,
        embeddings,
        logits,
        mean_loss,
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate(
    net: &TemplateNet,
    eval: &Images,
    cfg: &NetConfig,
    classes: usize,
    size: usize,
    workers: usize,
    device: &Device,
    judging: Option<&JudgeOptions>,
) -> Result<EvalMetrics, RunError> {
    if eval.paths.is_empty() {
        return Ok(EvalMetrics::default());
    }
    let logreg = cfg.logreg();
    let Pass {
        kept,
        embeddings,
        logits,
        mean_loss: loss,
    } = pass(net, eval, classes, logreg, size, workers, device)?;
    let mut m = EvalMetrics {
        images: kept.len(),
        loss: (!kept.is_empty()).then_some(loss),
        ..Default::default()
    };
    if kept.is_empty() {
        return Ok(m);
    }
    let logits = Tensor::cat(&logits, 0)?.to_vec2::<f32>()?;
    let truth: Vec<&Vec<usize>> = kept.iter().map(|&i| &eval.concepts[i]).collect();
    if logreg {
        m.mean_average_precision = Some(mean_average_precision(&logits, &truth, classes));
        m.f1 = Some(micro_f1(&logits, &truth));
    } else {
        let right = logits
            .iter()
            .zip(&truth)
            .filter(|(row, t)| argmax(row) == t[0])
            .count();
        m.accuracy = Some(right as f32 / kept.len() as f32);
    }
    let emb = Tensor::cat(&embeddings, 0)?;
    if let NetConfig::AngularMargin { .. } = cfg {
        m.recall_at_1 = Some(recall_at_1(&emb, &truth)?);
    }
    if let Some(options) = judging {
        m.embeddings = judged(&emb, &truth, options)?.map(Box::new);
    }
    Ok(m)
}

/// Images of unseen concepts embedded by `net` and judged: `None` when fewer
/// than two of their concepts have a readable image.
pub(super) fn judge_unseen(
    net: &TemplateNet,
    unseen: &Images,
    size: usize,
    workers: usize,
    device: &Device,
    options: &JudgeOptions,
) -> Result<(Option<Box<Judged>>, Vec<crate::data::images::BadImage>), RunError> {
    let e = embed(net, unseen, size, workers, device, &mut |_, _| {})?;
    Ok((judge_embedded(&e, options)?, e.bad))
}

/// Embedded images judged by their concepts (their first): `None` when no
/// image was read, or fewer than two concepts have one.
pub(super) fn judge_embedded(
    e: &Embedded,
    options: &JudgeOptions,
) -> Result<Option<Box<Judged>>, RunError> {
    Ok(match &e.matrix {
        Some(m) => {
            let truth: Vec<&Vec<usize>> = e.concepts.iter().collect();
            judged(m, &truth, options)?.map(Box::new)
        }
        None => None,
    })
}

/// [`judge`] of the rows of `emb` that have a concept (their first).
fn judged(
    emb: &Tensor,
    truth: &[&Vec<usize>],
    options: &JudgeOptions,
) -> candle_core::Result<Option<Judged>> {
    let rows: Vec<u32> = (0..truth.len() as u32)
        .filter(|&i| !truth[i as usize].is_empty())
        .collect();
    let labels: Vec<usize> = rows.iter().map(|&i| truth[i as usize][0]).collect();
    let emb = if rows.len() == truth.len() {
        emb.clone()
    } else {
        emb.index_select(&Tensor::new(rows.as_slice(), emb.device())?, 0)?
    };
    judge(&emb, &labels, options)
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// The share of rows whose most similar other row (dot product of unit
/// embeddings) shares a concept.
fn recall_at_1(emb: &Tensor, truth: &[&Vec<usize>]) -> candle_core::Result<f32> {
    let n = truth.len();
    if n < 2 {
        return Ok(0.0);
    }
    let sim = emb.matmul(&emb.t()?)?;
    let eye = Tensor::eye(n, sim.dtype(), sim.device())?;
    let sim = (sim - (eye * 1e9)?)?; // never one's own neighbour
    let nearest = sim.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let hits = nearest
        .iter()
        .enumerate()
        .filter(|(i, &j)| truth[*i].iter().any(|c| truth[j as usize].contains(c)))
        .count();
    Ok(hits as f32 / n as f32)
}

/// Mean over concepts (with at least one positive) of average precision.
fn mean_average_precision(scores: &[Vec<f32>], truth: &[&Vec<usize>], classes: usize) -> f32 {
    let per_concept: Vec<f64> = (0..classes)
        .filter_map(|c| {
            let mut ranked: Vec<(f32, bool)> = scores
                .iter()
                .zip(truth)
                .map(|(s, t)| (s[c], t.contains(&c)))
                .collect();
            crate::steps::head::average_precision(&mut ranked)
        })
        .collect();
    if per_concept.is_empty() {
        0.0
    } else {
        (per_concept.iter().sum::<f64>() / per_concept.len() as f64) as f32
    }
}

/// Micro-averaged F1 of `sigmoid(score) > 0.5` (score > 0).
fn micro_f1(scores: &[Vec<f32>], truth: &[&Vec<usize>]) -> f32 {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (s, t) in scores.iter().zip(truth) {
        for (c, &v) in s.iter().enumerate() {
            match (v > 0.0, t.contains(&c)) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fneg += 1,
                _ => {}
            }
        }
    }
    if tp == 0 {
        0.0
    } else {
        2.0 * tp as f32 / (2 * tp + fp + fneg) as f32
    }
}

/// The embeddings of the images that could be read, with which image each row is.
pub struct Embedded {
    /// `rows × dim`; `None` when no image could be read.
    pub matrix: Option<Tensor>,
    pub paths: Vec<std::path::PathBuf>,
    pub concepts: Vec<Vec<usize>>,
    /// Which of the images embedded each row is.
    pub indices: Vec<usize>,
    /// The images that could not be read (they have no row).
    pub bad: Vec<crate::data::images::BadImage>,
}

impl Embedded {
    /// Whether every value is a finite number (a NaN or infinity anywhere
    /// makes the sum one).
    pub fn is_finite(&self) -> candle_core::Result<bool> {
        match &self.matrix {
            Some(m) => Ok(m
                .to_dtype(candle_core::DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?
                .is_finite()),
            None => Ok(true),
        }
    }

    pub fn rows(&self) -> usize {
        self.paths.len()
    }
}

/// Embeds `images` (centre crops) with `net` in evaluation mode, calling
/// `on_batch(done, total)` after each batch.
pub(crate) fn embed(
    net: &TemplateNet,
    images: &Images,
    size: usize,
    workers: usize,
    device: &Device,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Embedded, RunError> {
    let mut rows = Vec::new();
    let (mut paths, mut concepts, mut indices, mut bad) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let total = images.paths.len();
    let mut done = 0;
    if total > 0 {
        for decoded in centre_crops(images, size, workers) {
            done += decoded.indices.len() + decoded.bad.len();
            bad.extend(decoded.bad.iter().cloned());
            if !decoded.indices.is_empty() {
                let n = decoded.indices.len();
                let x = Tensor::from_vec(decoded.pixels, (n, 3, size, size), device)?;
                // Detached: the steps must never backpropagate into the network.
                rows.push(net.embed(&x, false)?.detach());
                for &i in &decoded.indices {
                    paths.push(images.paths[i].clone());
                    concepts.push(images.concepts[i].clone());
                    indices.push(i);
                }
            }
            on_batch(done, total);
        }
    }
    let matrix = if rows.is_empty() {
        None
    } else {
        Some(Tensor::cat(&rows, 0)?)
    };
    Ok(Embedded {
        matrix,
        paths,
        concepts,
        indices,
        bad,
    })
}

/// Writes `embeddings.safetensors` (`train` and `eval` matrices, one row per
/// image that could be read) and `embeddings.csv` (split, row, path, concepts
/// by name, `;`-separated).
pub(super) fn write_embeddings(
    train: &Embedded,
    eval: &Embedded,
    concept_names: &[String],
    out: &Path,
) -> Result<(), RunError> {
    let mut tensors = std::collections::HashMap::new();
    let mut index = String::from("split,row,path,concepts\n");
    for (name, e) in [("train", train), ("eval", eval)] {
        for (row, (path, cs)) in e.paths.iter().zip(&e.concepts).enumerate() {
            index.push_str(&format!(
                "{name},{row},{},{}\n",
                csv_field(&path.display().to_string()),
                csv_field(&concept_list(cs, concept_names))
            ));
        }
        if let Some(m) = &e.matrix {
            tensors.insert(name.to_string(), m.clone());
        }
    }
    folder::write_tensors(&out.join("embeddings.safetensors"), &tensors)?;
    write(&out.join("embeddings.csv"), index.as_bytes())
}

/// Concept indices as names, `;`-separated.
pub(super) fn concept_list(concepts: &[usize], names: &[String]) -> String {
    concepts
        .iter()
        .map(|&c| names.get(c).map_or("?", String::as_str))
        .collect::<Vec<_>>()
        .join(";")
}

/// A CSV field, always quoted.
pub(super) fn csv_field(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_anywhere_makes_embeddings_not_finite() {
        let rows = |v: Vec<f32>| Embedded {
            matrix: Some(Tensor::from_vec(v, (2, 2), &Device::Cpu).unwrap()),
            paths: Vec::new(),
            concepts: Vec::new(),
            indices: Vec::new(),
            bad: Vec::new(),
        };
        assert!(rows(vec![1.0, -2.0, 3e30, 0.0]).is_finite().unwrap());
        assert!(!rows(vec![1.0, f32::NAN, 0.0, 0.0]).is_finite().unwrap());
        assert!(!rows(vec![f32::INFINITY, 0.0, 0.0, 0.0])
            .is_finite()
            .unwrap());
    }

    #[test]
    fn average_precision_and_f1() {
        let scores = vec![vec![2.0, -1.0], vec![1.0, 3.0], vec![-2.0, 0.5]];
        let (a, b, c) = (vec![0], vec![0, 1], vec![1]);
        let truth = vec![&a, &b, &c];
        assert!((mean_average_precision(&scores, &truth, 2) - 1.0).abs() < 1e-6);
        assert!((micro_f1(&scores, &truth) - 1.0).abs() < 1e-6);
        let wrong = vec![vec![-2.0, 1.0], vec![-1.0, -3.0], vec![2.0, -0.5]];
        assert!(mean_average_precision(&wrong, &truth, 2) < 0.6);
        assert_eq!(micro_f1(&wrong, &truth), 0.0);
    }

    #[test]
    fn recall_at_one_finds_same_concept_neighbours() {
        let emb = Tensor::new(
            &[[1f32, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.995]],
            &Device::Cpu,
        )
        .unwrap();
        let (a, b) = (vec![0], vec![1]);
        assert_eq!(recall_at_1(&emb, &[&a, &a, &b, &b]).unwrap(), 1.0);
        assert_eq!(recall_at_1(&emb, &[&a, &b, &a, &b]).unwrap(), 0.0);
    }
}
