//! What the steps and the epochs measured, as types: written to each step's
//! `metrics.json`, summed up by the CLI and the report with the same labels.

use serde::Serialize;

use super::metrics::EvalMetrics;
use crate::steps::head::HeadMetrics;

/// `classifier_head`'s `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassifierHeadMetrics {
    pub logreg: bool,
    pub train_images: usize,
    pub loss_per_epoch: Vec<f32>,
    /// On the evaluation images, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<HeadMetrics>,
}

/// `clustering`'s `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusteringMetrics {
    pub k: usize,
    pub images: usize,
    pub inertia: f64,
    pub iterations: usize,
    pub cluster_sizes: Vec<usize>,
    pub silhouette: f64,
    /// Images the silhouette was computed on.
    pub silhouette_sample: usize,
    /// Agreement with the known concepts (each image's first concept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nmi: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ari: Option<f64>,
}

/// `visual_search`'s `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchMetrics {
    pub queries: usize,
    /// `eval`, `train`, or the folder of new images.
    pub query_images: String,
    pub index_images: usize,
    pub top_k: usize,
    /// Query images of a folder that could not be read: `path: why`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_queries: Vec<String>,
    /// When the queries' concepts are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_at_1: Option<f64>,
    /// Recall and mAP at `top_k`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_at_k: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_at_k: Option<f64>,
}

/// What a step measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StepMetrics {
    ClassifierHead(ClassifierHeadMetrics),
    Clustering(ClusteringMetrics),
    VisualSearch(SearchMetrics),
}

/// A measurement with the label a person reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    pub label: String,
    pub value: f64,
    /// A count, shown without decimals.
    pub whole: bool,
}

impl std::fmt::Display for Headline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.whole {
            write!(f, "{} {}", self.label, self.value)
        } else {
            write!(f, "{} {:.3}", self.label, self.value)
        }
    }
}

fn share(label: impl Into<String>, value: Option<f64>) -> Option<Headline> {
    value.map(|value| Headline {
        label: label.into(),
        value,
        whole: false,
    })
}

fn count(label: impl Into<String>, value: usize) -> Option<Headline> {
    Some(Headline {
        label: label.into(),
        value: value as f64,
        whole: true,
    })
}

impl StepMetrics {
    /// The few numbers that sum a step up, labelled for people.
    pub fn headline(&self) -> Vec<Headline> {
        match self {
            StepMetrics::ClassifierHead(m) => {
                let Some(e) = m.eval.as_ref() else {
                    // Nothing held out to score it on: what it was trained on.
                    return count("training images (none held out)", m.train_images)
                        .into_iter()
                        .collect();
                };
                let top_k = e
                    .top_k
                    .and_then(|k| share(format!("top-{k} accuracy"), e.top_k_accuracy));
                vec![
                    share("held-out accuracy", e.accuracy),
                    top_k,
                    share("held-out mAP", e.mean_average_precision),
                ]
            }
            StepMetrics::Clustering(m) => vec![
                count("clusters", m.k),
                share("silhouette", Some(m.silhouette)),
                share("NMI", m.nmi),
                share("ARI", m.ari),
            ],
            StepMetrics::VisualSearch(m) => vec![
                count("query images", m.queries),
                share("recall@1", m.recall_at_1),
                share(format!("recall@{}", m.top_k), m.recall_at_k),
                share(format!("mAP@{}", m.top_k), m.map_at_k),
            ],
        }
        .into_iter()
        .flatten()
        .collect()
    }
}

impl EvalMetrics {
    /// The held-out numbers of an epoch, labelled for people.
    pub fn headline(&self) -> Vec<Headline> {
        let f = |x: Option<f32>| x.map(f64::from);
        [
            count("images", self.images),
            share("held-out loss", f(self.loss)),
            share("accuracy", f(self.accuracy)),
            share("mAP", f(self.mean_average_precision)),
            share("F1", f(self.f1)),
            share("recall@1", f(self.recall_at_1)),
            share("MAP@R", self.embeddings.as_ref().map(|j| j.map_at_r.value)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl crate::steps::judge::Judged {
    /// The figures with their intervals, for people:
    /// `precision@1 0.882 [0.843, 0.918], …`.
    pub fn text(&self) -> String {
        let at = |label: &str, i: &crate::steps::judge::Interval| {
            format!("{label} {:.3} [{:.3}, {:.3}]", i.value, i.low, i.high)
        };
        let mut parts = vec![
            at("precision@1", &self.precision_at_1),
            at("R-precision", &self.r_precision),
            at("MAP@R", &self.map_at_r),
        ];
        parts.extend(
            self.recall_at_k
                .iter()
                .filter(|r| r.k > 1)
                .map(|r| at(&format!("recall@{}", r.k), &r.at)),
        );
        parts.push(at("NMI", &self.nmi));
        parts.push(at("AMI", &self.ami));
        parts.join(", ")
    }
}

/// Headlines as one line: `held-out accuracy 0.950, top-5 accuracy 1.000`.
pub fn headline_text(h: &[Headline]) -> String {
    h.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
