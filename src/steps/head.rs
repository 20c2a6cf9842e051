//! A linear classifier on frozen embeddings: softmax (one concept per image)
//! or sigmoid units (several may be true), trained with mini-batch SGD
//! (momentum 0.9) and L2 regularisation of the weights. The embeddings are
//! standardised with the training rows' mean and deviation first, so one
//! learning rate suits every template's embedding scale.

use candle_core::{DType, Result, Tensor, Var};

use crate::data::Rng;
use crate::models::{loss, Targets};

#[derive(Clone, Debug)]
pub struct HeadOptions {
    pub logreg: bool,
    pub epochs: usize,
    pub learning_rate: f64,
    pub l2: f64,
    pub batch_size: usize,
    pub seed: u64,
}

/// A trained head.
#[derive(Clone, Debug)]
pub struct Head {
    pub logreg: bool,
    /// `dim`: subtracted from each embedding.
    pub mean: Tensor,
    /// `dim`: each embedding is divided by it.
    pub scale: Tensor,
    /// `classes × dim`.
    pub weight: Tensor,
    /// `classes`.
    pub bias: Tensor,
    /// The mean training loss of each epoch.
    pub losses: Vec<f32>,
}

impl Head {
    /// Scores (`rows × classes`): probabilities, softmax or sigmoid.
    pub fn scores(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.logits(x)?;
        if self.logreg {
            candle_nn::ops::sigmoid(&logits)
        } else {
            loss::softmax(&logits)
        }
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let z = x.broadcast_sub(&self.mean)?.broadcast_div(&self.scale)?;
        z.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

/// Trains a head on `x` (`rows × dim`) with each row's concepts: on the CPU
/// with hand-written gradients through fused matrix products, elsewhere with
/// candle's autograd; both follow the same steps.
pub fn train_head(
    x: &Tensor,
    concepts: &[Vec<usize>],
    classes: usize,
    options: &HeadOptions,
) -> Result<Head> {
    if x.device().is_cpu() {
        train_head_cpu(x, concepts, classes, options)
    } else {
        train_head_autograd(x, concepts, classes, options)
    }
}

/// Each column's mean and deviation over the rows.
fn standardisation(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = x.mean(0)?;
    let scale = x
        .broadcast_sub(&mean)?
        .sqr()?
        .mean(0)?
        .sqrt()?
        .clamp(1e-6, f64::INFINITY)?;
    Ok((mean, scale))
}

fn train_head_cpu(
    x: &Tensor,
    concepts: &[Vec<usize>],
    classes: usize,
    options: &HeadOptions,
) -> Result<Head> {
    use super::cpu::{dots, dots_tn};
    let x = &x.detach();
    let (rows, dim) = x.dims2()?;
    let (mean, scale) = standardisation(x)?;
    let z = super::Matrix::from_tensor(&x.broadcast_sub(&mean)?.broadcast_div(&scale)?)?;
    let mut w = vec![0f32; classes * dim];
    let mut b = vec![0f32; classes];
    let (mut vw, mut vb) = (vec![0f32; classes * dim], vec![0f32; classes]);
    let batch = options.batch_size.clamp(1, rows.max(1));
    let mut xb = vec![0f32; batch * dim];
    let mut logits = vec![0f32; batch * classes];
    let mut gw = vec![0f32; classes * dim];
    let mut rng = Rng::new(options.seed);
    let mut losses = Vec::with_capacity(options.epochs);
    let (lr, l2) = (options.learning_rate as f32, options.l2 as f32);
    for _ in 0..options.epochs {
        let mut order: Vec<u32> = (0..rows as u32).collect();
        rng.shuffle(&mut order);
        let (mut sum, mut steps) = (0.0f32, 0);
        for chunk in order.chunks(batch) {
            let n = chunk.len();
            for (i, &r) in chunk.iter().enumerate() {
                xb[i * dim..(i + 1) * dim].copy_from_slice(z.row(r as usize));
            }
            dots(&xb, n, &w, classes, dim, &mut logits);
            // The loss and its gradient with respect to the logits, in place.
            let mut loss = 0.0f64;
            for i in 0..n {
                let row = &mut logits[i * classes..(i + 1) * classes];
                row.iter_mut().zip(&b).for_each(|(l, b)| *l += b);
                let cs = &concepts[chunk[i] as usize];
                if options.logreg {
                    let scale = 1.0 / (n * classes) as f32;
                    for (c, l) in row.iter_mut().enumerate() {
                        let t = if cs.contains(&c) { 1.0 } else { 0.0 };
                        let v = *l;
                        loss += (v.max(0.0) - v * t + (-v.abs()).exp().ln_1p()) as f64;
                        *l = (1.0 / (1.0 + (-v).exp()) - t) * scale;
                    }
                } else {
                    let target = cs.first().copied().unwrap_or(0);
                    let top = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    let total: f32 = row.iter().map(|v| (v - top).exp()).sum();
                    loss += (total.ln() + top - row[target]) as f64;
                    for (c, l) in row.iter_mut().enumerate() {
                        let p = (*l - top).exp() / total;
                        *l = (p - if c == target { 1.0 } else { 0.0 }) / n as f32;
                    }
                }
            }
            let loss = if options.logreg {
                loss / (n * classes) as f64
            } else {
                loss / n as f64
            };
            dots_tn(&logits, &xb, n, classes, dim, &mut gw);
            for (i, g) in gw.iter().enumerate() {
                vw[i] = 0.9 * vw[i] + g + l2 * w[i];
                w[i] -= lr * vw[i];
            }
            for c in 0..classes {
                let g: f32 = (0..n).map(|i| logits[i * classes + c]).sum();
                vb[c] = 0.9 * vb[c] + g;
                b[c] -= lr * vb[c];
            }
            // The data's loss, as the autograd path records it (without the L2 term).
            sum += loss as f32;
            steps += 1;
        }
        losses.push(sum / steps.max(1) as f32);
    }
    let device = x.device();
    Ok(Head {
        logreg: options.logreg,
        mean,
        scale,
        weight: Tensor::from_vec(w, (classes, dim), device)?,
        bias: Tensor::from_vec(b, classes, device)?,
        losses,
    })
}

fn train_head_autograd(
    x: &Tensor,
    concepts: &[Vec<usize>],
    classes: usize,
    options: &HeadOptions,
) -> Result<Head> {
    let x = &x.detach();
    let device = x.device();
    let (rows, dim) = x.dims2()?;
    let (mean, scale) = standardisation(x)?;
    let weight = Var::zeros((classes, dim), DType::F32, device)?;
    let bias = Var::zeros(classes, DType::F32, device)?;
    let mut velocity = [
        Tensor::zeros((classes, dim), DType::F32, device)?,
        Tensor::zeros(classes, DType::F32, device)?,
    ];
    let targets = Targets::from_concepts(
        concepts.iter().map(Vec::as_slice),
        classes,
        options.logreg,
        device,
    )?;
    let mut rng = Rng::new(options.seed);
    let mut head = Head {
        logreg: options.logreg,
        mean,
        scale,
        weight: weight.as_tensor().clone(),
        bias: bias.as_tensor().clone(),
        losses: Vec::new(),
    };
    let batch = options.batch_size.clamp(1, rows.max(1));
    for _ in 0..options.epochs {
        let mut order: Vec<u32> = (0..rows as u32).collect();
        rng.shuffle(&mut order);
        let (mut sum, mut steps) = (0.0f32, 0);
        for chunk in order.chunks(batch) {
            let ids = Tensor::new(chunk, device)?;
            let xb = x.index_select(&ids, 0)?;
            let logits = head.logits(&xb)?;
            let l = match &targets {
                Targets::Classes(t) => {
                    loss::softmax_cross_entropy(&logits, &t.index_select(&ids, 0)?)?
                }
                Targets::MultiLabel(t) => {
                    loss::sigmoid_binary_cross_entropy(&logits, &t.index_select(&ids, 0)?)?
                }
            };
            let penalty = (weight.as_tensor().sqr()?.sum_all()? * (options.l2 / 2.0))?;
            let grads = (&l + penalty)?.backward()?;
            for (i, var) in [&weight, &bias].into_iter().enumerate() {
                if let Some(g) = grads.get(var) {
                    // Detached: the velocity must not carry this step's graph into the next.
                    velocity[i] = ((&velocity[i] * 0.9)? + g.detach())?.detach();
                    var.set(
                        &(var.as_tensor().detach() - (&velocity[i] * options.learning_rate)?)?,
                    )?;
                }
            }
            sum += l.to_scalar::<f32>()?;
            steps += 1;
        }
        head.losses.push(sum / steps.max(1) as f32);
    }
    head.weight = weight.as_tensor().detach();
    head.bias = bias.as_tensor().detach();
    Ok(head)
}

/// The average precision of (score, relevant) pairs ranked by score: the
/// mean, over the relevant ones, of the precision at their rank. `None`
/// when none is relevant.
pub fn average_precision(ranked: &mut [(f32, bool)]) -> Option<f64> {
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut hits, mut ap) = (0usize, 0.0f64);
    for (rank, (_, relevant)) in ranked.iter().enumerate() {
        if *relevant {
            hits += 1;
            ap += hits as f64 / (rank + 1) as f64;
        }
    }
    (hits > 0).then(|| ap / hits as f64)
}

/// What a head scores on labelled rows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct HeadMetrics {
    pub images: usize,
    /// Softmax: the share whose top concept is right.
    pub accuracy: Option<f64>,
    /// Softmax: the share whose concept is among the top `top_k`.
    pub top_k_accuracy: Option<f64>,
    pub top_k: Option<usize>,
    /// Softmax: rows are the true concepts, columns the predicted.
    pub confusion: Option<Vec<Vec<usize>>>,
    /// Sigmoid units: per concept precision, recall and F1 at 0.5, and average precision.
    pub per_concept: Option<Vec<ConceptMetrics>>,
    /// Sigmoid units: the mean of the concepts' average precision.
    pub mean_average_precision: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ConceptMetrics {
    pub concept: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub average_precision: f64,
    pub positives: usize,
}

/// Scores `scores` (`rows × classes`, probabilities) against `truth`.
pub fn head_metrics(
    scores: &[Vec<f32>],
    truth: &[Vec<usize>],
    names: &[String],
    logreg: bool,
) -> HeadMetrics {
    let classes = names.len();
    let mut m = HeadMetrics {
        images: scores.len(),
        ..Default::default()
    };
    if scores.is_empty() {
        return m;
    }
    if !logreg {
        let k = 5.min(classes.saturating_sub(1)).max(1);
        let mut confusion = vec![vec![0usize; classes]; classes];
        let (mut right, mut in_top) = (0usize, 0usize);
        for (s, t) in scores.iter().zip(truth) {
            let Some(&truth) = t.first() else { continue };
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            confusion[truth][order[0]] += 1;
            right += usize::from(order[0] == truth);
            in_top += usize::from(order[..k].contains(&truth));
        }
        let n = scores.len() as f64;
        m.accuracy = Some(right as f64 / n);
        m.top_k_accuracy = Some(in_top as f64 / n);
        m.top_k = Some(k);
        m.confusion = Some(confusion);
    } else {
        let mut per = Vec::new();
        for (c, name) in names.iter().enumerate() {
            let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
            let mut ranked: Vec<(f32, bool)> = Vec::with_capacity(scores.len());
            for (s, t) in scores.iter().zip(truth) {
                let positive = t.contains(&c);
                match (s[c] > 0.5, positive) {
                    (true, true) => tp += 1.0,
                    (true, false) => fp += 1.0,
                    (false, true) => fneg += 1.0,
                    _ => {}
                }
                ranked.push((s[c], positive));
            }
            let positives = ranked.iter().filter(|r| r.1).count();
            let ap = average_precision(&mut ranked).unwrap_or(0.0);
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fneg));
            per.push(ConceptMetrics {
                concept: name.clone(),
                precision,
                recall,
                f1: ratio(2.0 * precision * recall, precision + recall),
                average_precision: ap,
                positives,
            });
        }
        let with: Vec<&ConceptMetrics> = per.iter().filter(|c| c.positives > 0).collect();
        m.mean_average_precision =
            Some(with.iter().map(|c| c.average_precision).sum::<f64>() / with.len().max(1) as f64);
        m.per_concept = Some(per);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_cpu_gradients_follow_autograd() {
        let (m, labels) = super::super::kmeans::tests::blobs(3, 40, 6, 9);
        let x = m.to_tensor(&Device::Cpu).unwrap();
        for logreg in [false, true] {
            let concepts: Vec<Vec<usize>> = labels
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    if logreg && i % 3 == 0 {
                        vec![c, (c + 1) % 3]
                    } else {
                        vec![c]
                    }
                })
                .collect();
            let options = HeadOptions {
                logreg,
                epochs: 5,
                learning_rate: 0.05,
                l2: 1e-2,
                batch_size: 16,
                seed: 2,
            };
            let a = train_head_cpu(&x, &concepts, 3, &options).unwrap();
            let b = train_head_autograd(&x, &concepts, 3, &options).unwrap();
            let diff = (a.weight - b.weight)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(
                diff.to_scalar::<f32>().unwrap() < 1e-4,
                "logreg {logreg}: {diff}"
            );
            for (la, lb) in a.losses.iter().zip(&b.losses) {
                assert!((la - lb).abs() < 1e-4, "{la} vs {lb}");
            }
        }
    }

    #[test]
    fn a_softmax_head_separates_blobs_and_a_sigmoid_head_learns_two_labels() {
        let (m, labels) = super::super::kmeans::tests::blobs(3, 80, 12, 4);
        let x = m.to_tensor(&Device::Cpu).unwrap();
        let concepts: Vec<Vec<usize>> = labels.iter().map(|&c| vec![c]).collect();
        let names: Vec<String> = (0..3).map(|c| format!("c{c}")).collect();
        let (train, test): (Vec<usize>, Vec<usize>) = (0..m.rows).partition(|i| i % 4 != 0);
        let pick = |idx: &[usize]| {
            let ids = Tensor::new(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                &Device::Cpu,
            )
            .unwrap();
            x.index_select(&ids, 0).unwrap()
        };
        let of =
            |idx: &[usize], c: &[Vec<usize>]| idx.iter().map(|&i| c[i].clone()).collect::<Vec<_>>();
        let options = HeadOptions {
            logreg: false,
            epochs: 30,
            learning_rate: 0.1,
            l2: 1e-4,
            batch_size: 32,
            seed: 1,
        };
        let head = train_head(&pick(&train), &of(&train, &concepts), 3, &options).unwrap();
        assert!(
            head.losses.last().unwrap() < &(head.losses[0] * 0.5),
            "{:?}",
            head.losses
        );
        let scores = head.scores(&pick(&test)).unwrap().to_vec2::<f32>().unwrap();
        let m1 = head_metrics(&scores, &of(&test, &concepts), &names, false);
        assert_eq!(m1.accuracy, Some(1.0));
        assert_eq!(
            m1.confusion
                .as_ref()
                .unwrap()
                .iter()
                .flatten()
                .sum::<usize>(),
            test.len()
        );

        // Two labels per row: its blob, and "high" when its first coordinate is above the median.
        let mut firsts: Vec<f32> = (0..m.rows).map(|r| m.row(r)[0]).collect();
        firsts.sort_by(f32::total_cmp);
        let median = firsts[m.rows / 2];
        let multi: Vec<Vec<usize>> = (0..m.rows)
            .map(|r| {
                let mut c = vec![labels[r]];
                if m.row(r)[0] > median {
                    c.push(3);
                }
                c
            })
            .collect();
        let names4: Vec<String> = (0..4).map(|c| format!("c{c}")).collect();
        let head = train_head(
            &pick(&train),
            &of(&train, &multi),
            4,
            &HeadOptions {
                logreg: true,
                epochs: 60,
                ..options
            },
        )
        .unwrap();
        let scores = head.scores(&pick(&test)).unwrap().to_vec2::<f32>().unwrap();
        let m2 = head_metrics(&scores, &of(&test, &multi), &names4, true);
        let map = m2.mean_average_precision.unwrap();
        assert!(map > 0.9, "mAP {map}");
        assert!(m2.per_concept.unwrap()[..3].iter().all(|c| c.f1 > 0.95));
    }
}
