//! Runs a workflow's downstream steps on the embeddings and writes their
//! outputs under `steps/NAME/` in the run folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::folder::{self, write};
use super::metrics::{concept_list, csv_field, embed, Embedded};
use super::pictures::QueryRow;
use super::results::{ClassifierHeadMetrics, ClusteringMetrics, SearchMetrics, StepMetrics};
use super::sets::Images;
use super::RunError;
use crate::hyper::{ClusteringParams, HeadParams, Index, Queries, SearchParams, StepParams};
use crate::models::TemplateNet;
use crate::plan::PlannedStep;
use crate::spec::StepKindId;
use crate::steps::head::{head_metrics, train_head, HeadOptions};
use crate::steps::kmeans::{agreement, kmeans, silhouette, Init, KMeansOptions};
use crate::steps::search::{retrieval_metrics, search};
use crate::steps::Matrix;

/// Rows the silhouette score is computed on, at most.
const SILHOUETTE_SAMPLE: usize = 2000;

/// What one step did: its metrics (as written to its `metrics.json`).
#[derive(Clone, Debug, Serialize)]
pub struct StepOutcome {
    pub name: String,
    pub kind: StepKindId,
    pub seconds: f64,
    pub metrics: StepMetrics,
    /// Where its files are.
    pub folder: PathBuf,
}

/// What a step leaves for the pictures.
#[derive(Default)]
pub(super) struct Extras {
    /// Clustering: each row's cluster (training rows, then evaluation rows).
    pub assignments: Option<Vec<u32>>,
    /// Search: a few queries with their neighbours.
    pub grid: Option<Vec<QueryRow>>,
}

/// Queries shown in a search grid, and neighbours per query.
const GRID_QUERIES: usize = 6;
const GRID_NEIGHBOURS: usize = 5;

/// Everything the steps read.
pub(super) struct StepInputs<'a> {
    /// The workflow's seed (the head's initialisation and order).
    pub seed: u64,
    pub concepts: &'a [String],
    pub train: &'a Embedded,
    pub eval: &'a Embedded,
    pub net: &'a TemplateNet,
    pub size: usize,
    pub workers: usize,
    pub device: &'a Device,
    pub out: &'a Path,
}

fn step_error(step: &PlannedStep, message: impl std::fmt::Display) -> RunError {
    RunError::Step {
        step: step.name.clone(),
        message: message.to_string(),
    }
}

/// Runs one step.
pub(super) fn run_step(
    inputs: &StepInputs,
    step: &PlannedStep,
) -> Result<(StepOutcome, Extras), RunError> {
    let started = Instant::now();
    let folder = inputs.out.join("steps").join(&step.name);
    folder::create(&folder)?;
    let mut extras = Extras::default();
    let metrics = match &step.typed {
        StepParams::ClassifierHead(p) => {
            StepMetrics::ClassifierHead(classifier_head(inputs, step, p, &folder)?)
        }
        StepParams::Clustering(p) => {
            StepMetrics::Clustering(clustering(inputs, step, p, &folder, &mut extras)?)
        }
        StepParams::VisualSearch(p) => {
            StepMetrics::VisualSearch(visual_search(inputs, step, p, &folder, &mut extras)?)
        }
    };
    folder::write_json(&folder.join("metrics.json"), &metrics)?;
    let outcome = StepOutcome {
        name: step.name.clone(),
        kind: step.kind,
        seconds: started.elapsed().as_secs_f64(),
        metrics,
        folder,
    };
    Ok((outcome, extras))
}

fn classifier_head(
    inputs: &StepInputs,
    step: &PlannedStep,
    p: &HeadParams,
    folder: &Path,
) -> Result<ClassifierHeadMetrics, RunError> {
    let logreg = p.logreg;
    let Some(x) = &inputs.train.matrix else {
        return Err(step_error(step, "no training image could be embedded"));
    };
    if !logreg && inputs.train.concepts.iter().any(|c| c.len() > 1) {
        return Err(step_error(
            step,
            "some images have several concepts: set `logreg = 1` in this step",
        ));
    }
    let options = HeadOptions {
        logreg,
        epochs: p.epochs,
        learning_rate: p.learning_rate,
        l2: p.l2,
        batch_size: p.batch_size,
        seed: inputs.seed,
    };
    let classes = inputs.concepts.len();
    let head = train_head(x, &inputs.train.concepts, classes, &options)?;
    if head.losses.last().is_some_and(|l| !l.is_finite()) {
        return Err(step_error(
            step,
            "the head's loss became NaN or infinite: try a smaller `learning_rate`",
        ));
    }
    let tensors: std::collections::HashMap<String, Tensor> = [
        ("weight", &head.weight),
        ("bias", &head.bias),
        ("mean", &head.mean),
        ("scale", &head.scale),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    folder::write_tensors(&folder.join("head.safetensors"), &tensors)?;

    let mut predictions = String::from("path,concept,score,true_concepts\n");
    let mut result = ClassifierHeadMetrics {
        logreg,
        train_images: inputs.train.rows(),
        loss_per_epoch: head.losses.clone(),
        eval: None,
    };
    if let Some(e) = &inputs.eval.matrix {
        let scores = head.scores(e)?.to_vec2::<f32>()?;
        for (row, s) in scores.iter().enumerate() {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            // Softmax: the five most likely; sigmoid units: every concept above 0.5 (at least one).
            let shown: Vec<usize> = if logreg {
                let above: Vec<usize> = order.iter().copied().filter(|&c| s[c] > 0.5).collect();
                if above.is_empty() {
                    order[..1].to_vec()
                } else {
                    above
                }
            } else {
                order.iter().copied().take(5).collect()
            };
            for c in shown {
                predictions.push_str(&format!(
                    "{},{},{:.6},{}\n",
                    csv_field(&inputs.eval.paths[row].display().to_string()),
                    csv_field(&inputs.concepts[c]),
                    s[c],
                    csv_field(&concept_list(&inputs.eval.concepts[row], inputs.concepts))
                ));
            }
        }
        let m = head_metrics(&scores, &inputs.eval.concepts, inputs.concepts, logreg);
        result.eval = Some(m);
    }
    write(&folder.join("predictions.csv"), predictions.as_bytes())?;
    Ok(result)
}

/// Which split a stacked row comes from, and its row there.
type RowOrigin = (&'static str, usize);

/// The training and evaluation embeddings, stacked, with each row's split.
fn all_rows(inputs: &StepInputs) -> Result<Option<(Tensor, Vec<RowOrigin>)>, RunError> {
    let mut parts = Vec::new();
    let mut rows = Vec::new();
    for (name, e) in [("train", inputs.train), ("eval", inputs.eval)] {
        if let Some(m) = &e.matrix {
            parts.push(m.clone());
            rows.extend((0..e.rows()).map(|r| (name, r)));
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some((Tensor::cat(&parts, 0)?, rows)))
}

fn clustering(
    inputs: &StepInputs,
    step: &PlannedStep,
    p: &ClusteringParams,
    folder: &Path,
    extras: &mut Extras,
) -> Result<ClusteringMetrics, RunError> {
    let Some((x, rows)) = all_rows(inputs)? else {
        return Err(step_error(step, "no image could be embedded"));
    };
    let host = Matrix::from_tensor(&x)?;
    let Some(k) = p.k.value() else {
        return Err(step_error(
            step,
            "`k` is derived from the concepts, which were not counted",
        ));
    };
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    if k > host.rows {
        return Err(step_error(
            step,
            format!("`k` = {k} is more than the {} images", host.rows),
        ));
    }
    let seed = p.seed;
    let result = kmeans(
        &x,
        &host,
        &KMeansOptions {
            k,
            iterations: p.iterations,
            inits: p.inits,
            tolerance: p.tolerance,
            seed,
            init: Init::PlusPlus,
        },
    )?;
    let concept_of = |split: &str, r: usize| -> &[usize] {
        if split == "train" {
            &inputs.train.concepts[r]
        } else {
            &inputs.eval.concepts[r]
        }
    };
    let path_of = |split: &str, r: usize| -> &Path {
        if split == "train" {
            &inputs.train.paths[r]
        } else {
            &inputs.eval.paths[r]
        }
    };
    let mut csv = String::from("path,split,cluster,concepts\n");
    for (i, &(split, r)) in rows.iter().enumerate() {
        csv.push_str(&format!(
            "{},{split},{},{}\n",
            csv_field(&path_of(split, r).display().to_string()),
            result.assignments[i],
            csv_field(&concept_list(concept_of(split, r), inputs.concepts))
        ));
    }
    write(&folder.join("clusters.csv"), csv.as_bytes())?;
    let centroids = result.centroids.to_tensor(&Device::Cpu)?;
    folder::write_tensors(
        &folder.join("centroids.safetensors"),
        &[("centroids".to_string(), centroids)].into_iter().collect(),
    )?;
    let mut sizes = vec![0usize; k];
    for &c in &result.assignments {
        sizes[c as usize] += 1;
    }
    let mut m = ClusteringMetrics {
        k,
        images: host.rows,
        inertia: result.inertia,
        iterations: result.iterations,
        cluster_sizes: sizes,
        silhouette: silhouette(&host, &result.assignments, SILHOUETTE_SAMPLE, seed),
        silhouette_sample: host.rows.min(SILHOUETTE_SAMPLE),
        nmi: None,
        ari: None,
    };
    // Agreement with the known concepts (each image's first concept).
    let labelled: Vec<(usize, usize)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, &(split, r))| {
            concept_of(split, r)
                .first()
                .map(|&c| (result.assignments[i] as usize, c))
        })
        .collect();
    if !labelled.is_empty() {
        let (a, b): (Vec<usize>, Vec<usize>) = labelled.into_iter().unzip();
        let (nmi, ari) = agreement(&a, &b);
        m.nmi = Some(nmi);
        m.ari = Some(ari);
    }
    extras.assignments = Some(result.assignments);
    Ok(m)
}

fn visual_search(
    inputs: &StepInputs,
    step: &PlannedStep,
    p: &SearchParams,
    folder: &Path,
    extras: &mut Extras,
) -> Result<SearchMetrics, RunError> {
    let k = p.top_k;
    let index_all = p.index == Index::All;
    let train_rows = inputs.train.rows();
    // The index: the training rows, then (with `index = all`) the evaluation rows.
    let mut index_parts: Vec<&Embedded> = vec![inputs.train];
    if index_all {
        index_parts.push(inputs.eval);
    }
    let mut index_matrices = Vec::new();
    let mut index_paths: Vec<&PathBuf> = Vec::new();
    let mut index_concepts: Vec<Vec<usize>> = Vec::new();
    for e in &index_parts {
        if let Some(m) = &e.matrix {
            index_matrices.push(m.clone());
            index_paths.extend(&e.paths);
            index_concepts.extend(e.concepts.iter().cloned());
        }
    }
    if index_matrices.is_empty() {
        return Err(step_error(step, "no image to search could be embedded"));
    }
    let index = Tensor::cat(&index_matrices, 0)?;

    let folder_queries;
    let (queries, queries_name, exclude_offset): (&Embedded, String, Option<usize>) =
        match &p.queries {
            Queries::Train => (inputs.train, "train".into(), Some(0)),
            Queries::Folder(root) => {
                folder_queries = embed_folder(inputs, root)?;
                (&folder_queries, root.display().to_string(), None)
            }
            Queries::Eval => (inputs.eval, "eval".into(), index_all.then_some(train_rows)),
        };
    let Some(q) = &queries.matrix else {
        return Err(step_error(step, "no query image could be embedded"));
    };
    // A query that is itself in the index is not its own neighbour.
    let exclude = move |row: usize| exclude_offset.map(|o| o + row);
    let found = search(q, &index, k, &exclude)?;
    let mut csv = String::from("query,rank,neighbour,score,query_concepts,neighbour_concepts\n");
    for (qi, neighbours) in found.iter().enumerate() {
        for (rank, &(i, score)) in neighbours.iter().enumerate() {
            csv.push_str(&format!(
                "{},{},{},{score:.6},{},{}\n",
                csv_field(&queries.paths[qi].display().to_string()),
                rank + 1,
                csv_field(&index_paths[i as usize].display().to_string()),
                csv_field(&concept_list(&queries.concepts[qi], inputs.concepts)),
                csv_field(&concept_list(&index_concepts[i as usize], inputs.concepts)),
            ));
        }
    }
    write(&folder.join("neighbours.csv"), csv.as_bytes())?;
    // Queries spread over the list (which is in concept order for folders).
    let shown: Vec<usize> = (0..GRID_QUERIES.min(found.len()))
        .map(|i| i * found.len() / GRID_QUERIES.min(found.len()))
        .collect();
    extras.grid = Some(
        shown
            .into_iter()
            .map(|qi| QueryRow {
                query: queries.paths[qi].clone(),
                neighbours: found[qi]
                    .iter()
                    .take(GRID_NEIGHBOURS)
                    .map(|&(i, score)| {
                        let same = (!queries.concepts[qi].is_empty()).then(|| {
                            index_concepts[i as usize]
                                .iter()
                                .any(|c| queries.concepts[qi].contains(c))
                        });
                        (index_paths[i as usize].clone(), score, same)
                    })
                    .collect(),
            })
            .collect(),
    );
    let mut m = SearchMetrics {
        queries: queries.rows(),
        query_images: queries_name,
        index_images: index_paths.len(),
        top_k: k,
        // Query images of a folder that could not be read (the run's own
        // images are reported by the run).
        unreadable_queries: queries
            .bad
            .iter()
            .map(|b| format!("{}: {}", b.path.display(), b.reason))
            .collect(),
        recall_at_1: None,
        recall_at_k: None,
        map_at_k: None,
    };
    if queries.concepts.iter().any(|c| !c.is_empty()) {
        let (r1, rk, map) =
            retrieval_metrics(&found, &queries.concepts, &index_concepts, k, &exclude);
        m.recall_at_1 = Some(r1);
        m.recall_at_k = Some(rk);
        m.map_at_k = Some(map);
    }
    Ok(m)
}

/// Embeds a folder of new images: those in concept sub-folders carry their
/// concept (when the training data has it), those at the top carry none.
fn embed_folder(inputs: &StepInputs, root: &Path) -> Result<Embedded, RunError> {
    let (folders, loose) = crate::data::list_folder(root)?;
    let mut paths = Vec::new();
    let mut concepts = Vec::new();
    for f in folders {
        let known: Vec<usize> = inputs
            .concepts
            .iter()
            .position(|c| *c == f.name)
            .into_iter()
            .collect();
        for p in f.images {
            paths.push(p);
            concepts.push(known.clone());
        }
    }
    for p in loose {
        paths.push(p);
        concepts.push(Vec::new());
    }
    let images = Images {
        paths: std::sync::Arc::new(paths),
        concepts,
    };
    embed(
        inputs.net,
        &images,
        inputs.size,
        inputs.workers,
        inputs.device,
    )
}
