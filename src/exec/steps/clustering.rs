//! `clustering`: k-means on the training and evaluation embeddings, scaled to
//! unit length: the directions `visual_search` compares by cosine. On their
//! raw lengths a few images whose embeddings are far longer than the rest
//! (a softmax template's pooled features can run to over 140 times the
//! median length) take clusters of their own and leave most images in one.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::{split_of, step_error, Extras, StepInputs};
use crate::exec::folder::{self, write};
use crate::exec::metrics::{concept_list, csv_field};
use crate::exec::results::ClusteringMetrics;
use crate::exec::RunError;
use crate::hyper::ClusteringParams;
use crate::plan::PlannedStep;
use crate::steps::kmeans::{
    agreement, kmeans_of_directions, silhouette, Init, KMeans, KMeansOptions,
};

/// Rows the silhouette score is computed on, at most.
const SILHOUETTE_SAMPLE: usize = 2000;

/// A stacked row: from the training split (or not), and its row there.
type Row = (bool, usize);

pub(super) fn run(
    inputs: &StepInputs,
    step: &PlannedStep,
    p: &ClusteringParams,
    folder: &Path,
    extras: &mut Extras,
) -> Result<ClusteringMetrics, RunError> {
    let Some((x, rows)) = all_rows(inputs)? else {
        return Err(step_error(step, "no image could be embedded"));
    };
    let Some(k) = p.k.value() else {
        return Err(step_error(
            step,
            "`k` is derived from the concepts, which were not counted",
        ));
    };
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    if k > rows.len() {
        return Err(step_error(
            step,
            format!("`k` = {k} is more than the {} images", rows.len()),
        ));
    }
    let options = KMeansOptions {
        k,
        iterations: p.iterations,
        inits: p.inits,
        tolerance: p.tolerance,
        seed: p.seed,
        init: Init::PlusPlus,
    };
    let (result, host) = kmeans_of_directions(&x, &options)?;
    write(
        &folder.join("clusters.csv"),
        clusters_csv(inputs, &rows, &result.assignments).as_bytes(),
    )?;
    let centroids = result.centroids.to_tensor(&Device::Cpu)?;
    folder::write_tensors(
        &folder.join("centroids.safetensors"),
        &[("centroids".to_string(), centroids)].into_iter().collect(),
    )?;
    let (nmi, ari) = agreement_with_concepts(inputs, &rows, &result.assignments);
    let metrics = ClusteringMetrics {
        k,
        images: host.rows,
        inertia: result.inertia,
        iterations: result.iterations,
        cluster_sizes: sizes(&result, k),
        silhouette: silhouette(&host, &result.assignments, SILHOUETTE_SAMPLE, p.seed),
        silhouette_sample: host.rows.min(SILHOUETTE_SAMPLE),
        nmi,
        ari,
    };
    extras.assignments = Some(result.assignments);
    Ok(metrics)
}

/// The training and evaluation embeddings, stacked, with each row's origin.
fn all_rows(inputs: &StepInputs) -> Result<Option<(Tensor, Vec<Row>)>, RunError> {
    let mut parts = Vec::new();
    let mut rows = Vec::new();
    for train in [true, false] {
        let (_, e) = split_of(inputs, train);
        if let Some(m) = &e.matrix {
            parts.push(m.clone());
            rows.extend((0..e.rows()).map(|r| (train, r)));
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some((Tensor::cat(&parts, 0)?, rows)))
}

/// `clusters.csv`: each image's split, cluster and concepts.
fn clusters_csv(inputs: &StepInputs, rows: &[Row], assignments: &[u32]) -> String {
    let mut csv = String::from("path,split,cluster,concepts\n");
    for (&(train, r), cluster) in rows.iter().zip(assignments) {
        let (split, e) = split_of(inputs, train);
        csv.push_str(&format!(
            "{},{split},{cluster},{}\n",
            csv_field(&e.paths[r].display().to_string()),
            csv_field(&concept_list(&e.concepts[r], inputs.concepts))
        ));
    }
    csv
}

fn sizes(result: &KMeans, k: usize) -> Vec<usize> {
    let mut sizes = vec![0usize; k];
    for &c in &result.assignments {
        sizes[c as usize] += 1;
    }
    sizes
}

/// NMI and ARI of the clusters against the known concepts (each image's
/// first concept), when some images have one.
fn agreement_with_concepts(
    inputs: &StepInputs,
    rows: &[Row],
    assignments: &[u32],
) -> (Option<f64>, Option<f64>) {
    let labelled: Vec<(usize, usize)> = rows
        .iter()
        .zip(assignments)
        .filter_map(|(&(train, r), &cluster)| {
            let (_, e) = split_of(inputs, train);
            e.concepts[r].first().map(|&c| (cluster as usize, c))
        })
        .collect();
    if labelled.is_empty() {
        return (None, None);
    }
    let (a, b): (Vec<usize>, Vec<usize>) = labelled.into_iter().unzip();
    let (nmi, ari) = agreement(&a, &b);
    (Some(nmi), Some(ari))
}
