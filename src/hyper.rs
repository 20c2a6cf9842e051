//! Typed hyperparameters: what the checker proved, as values the run reads.
//!
//! The checker resolves every parameter of the template and of each step
//! against the prelude (its ranges, steps and defaults) and then builds these
//! types from the resolved values, once, in `check::typed`. Nothing after the
//! checker looks a parameter up by name or supplies a default: the planner
//! derives the schedule from [`Hyper`], and the run reads the [`crate::Plan`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::{Architecture, Derived};

/// A count the spec may leave to the data (`default = dataset_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Value(u64),
    /// Known once the data is counted.
    Derived(Derived),
}

impl Count {
    /// The value, when it no longer waits on the data.
    pub fn value(self) -> Option<u64> {
        match self {
            Count::Value(n) => Some(n),
            Count::Derived(_) => None,
        }
    }

    /// The value with derived counts taken from `counts` (when known).
    pub fn resolve(self, counts: &DataCounts) -> Count {
        match self {
            Count::Value(n) => Count::Value(n),
            Count::Derived(d) => counts.get(d).map_or(Count::Derived(d), Count::Value),
        }
    }
}

/// What the data says of the counts the spec derives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataCounts {
    /// Images trained on (after holding out evaluation images).
    pub train_images: Option<u64>,
    /// Concepts of the training data.
    pub concepts: Option<u64>,
}

impl DataCounts {
    pub fn get(&self, d: Derived) -> Option<u64> {
        match d {
            Derived::DatasetSize => self.train_images,
            Derived::NumConcepts => self.concepts,
            // The checker resolves the seed: it is written in the workflow.
            Derived::Seed => None,
        }
    }
}

/// The template's loss and the layer it trains on top of the embedding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Loss {
    /// ResNet-101's additive angular margin (ArcFace): `angular_scale`,
    /// `angular_margin`, `embeddings_size`.
    AngularMargin {
        scale: f64,
        margin: f64,
        embeddings_size: usize,
    },
    /// `logreg = 0`: one concept per image.
    Softmax,
    /// `logreg = 1`: independent sigmoid units, several concepts per image.
    Sigmoid,
}

impl Loss {
    /// Sigmoid units (`logreg = 1`).
    pub fn logreg(self) -> bool {
        matches!(self, Loss::Sigmoid)
    }

    /// Bytes the layers that grow with a setting hold in training
    /// ([`embedding_layer_bytes`]; none for the classifier templates).
    pub fn sized_layer_bytes(self, concepts: u64) -> f64 {
        match self {
            Loss::AngularMargin {
                embeddings_size, ..
            } => embedding_layer_bytes(embeddings_size as f64, concepts),
            Loss::Softmax | Loss::Sigmoid => 0.0,
        }
    }
}

/// Bytes the angular margin's layers hold in training (weights, gradients
/// and SGD momentum, f32): the projection of ResNet-101's 2048 pooled
/// features to `embeddings_size` and its `concepts` class centres. A float,
/// so that no size overflows.
pub fn embedding_layer_bytes(embeddings_size: f64, concepts: u64) -> f64 {
    let params = embeddings_size * (2048.0 + 1.0) + embeddings_size * concepts.max(2) as f64;
    params * 4.0 * 3.0
}

/// Bytes shown in GiB.
pub fn gib(bytes: f64) -> String {
    let g = bytes / (1u64 << 30) as f64;
    if g >= 1e6 {
        format!("{g:.1e} GiB")
    } else {
        format!("{g:.1} GiB")
    }
}

/// A template's hyperparameters, typed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub architecture: Architecture,
    /// The side of the square the network sees.
    pub image_size: usize,
    pub batch_size: usize,
    pub num_epochs: u64,
    /// Epochs at the initial learning rate.
    pub init_epochs: u64,
    /// Epochs between two decreases after that.
    pub step_epochs: u64,
    pub per_item_lrate: f64,
    /// The template's factor at each decrease (`lr_decay`, not a parameter).
    pub lr_decay: f64,
    /// SGD's momentum and weight decay (the recipe's, not parameters).
    pub momentum: f64,
    pub weight_decay: f64,
    /// Which parameters weight decay applies to (the recipe's).
    pub decayed: Decayed,
    /// How the convolutions' weights are drawn (the recipe's).
    pub conv_init: ConvInit,
    pub num_items_per_epoch: Count,
    pub loss: Loss,
    /// The sizes `image_size` may take in this template (for advice).
    pub image_sizes: Grid,
}

/// Which parameters SGD's weight decay applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decayed {
    /// Every trainable parameter, batch norm's and biases too.
    All,
    /// Convolution and linear weights only, as PyTorch recipes group them:
    /// batch norm's scales and shifts and every bias are not decayed.
    Weights,
}

/// How a template's convolution weights are drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvInit {
    /// Kaiming normal with fan-out and the ReLU gain (torchvision's ResNet
    /// and ResNeXt).
    KaimingFanOut,
    /// PyTorch's default for `nn.Conv2d`: uniform in ±1/√fan_in (Kaiming
    /// uniform with a = √5), what the published BN-Inception keeps.
    FanInUniform,
}

/// The values an integer parameter may take: `min + k × step`, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub min: u64,
    pub step: u64,
    pub max: Option<u64>,
}

impl Grid {
    /// The largest value on the grid that is at most `x`.
    pub fn at_most(self, x: u64) -> Option<u64> {
        let x = self.max.map_or(x, |m| m.min(x));
        (x >= self.min).then(|| self.min + (x - self.min) / self.step.max(1) * self.step.max(1))
    }
}

impl Hyper {
    /// `batch_size × per_item_lrate`, the initial learning rate.
    pub fn lrate(&self) -> f64 {
        self.batch_size as f64 * self.per_item_lrate
    }
}

/// A step's parameters, typed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepParams {
    ClassifierHead(HeadParams),
    Clustering(ClusteringParams),
    VisualSearch(SearchParams),
}

/// `classifier_head`: a linear head on the frozen embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadParams {
    /// Sigmoid units (`logreg = 1`) or softmax.
    pub logreg: bool,
    pub epochs: usize,
    pub learning_rate: f64,
    pub l2: f64,
    pub batch_size: usize,
}

/// `clustering`: k-means on the embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusteringParams {
    pub k: Count,
    pub iterations: usize,
    pub inits: usize,
    pub tolerance: f64,
    /// The step's own seed, or the workflow's.
    pub seed: u64,
}

/// Which images `visual_search` looks up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Queries {
    Eval,
    Train,
    /// A folder of new images (absolute).
    Folder(PathBuf),
}

/// Which images `visual_search` searches among.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Index {
    Train,
    /// The training and the evaluation images.
    All,
    /// A LanceDB table's rows (its folder, `DB/TABLE.lance`, absolute).
    Table(PathBuf),
}

/// `visual_search`: exact cosine nearest neighbours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchParams {
    pub top_k: usize,
    pub queries: Queries,
    pub index: Index,
}

impl StepParams {
    /// The same parameters with derived counts taken from `counts`.
    pub fn resolve(&self, counts: &DataCounts) -> StepParams {
        match self {
            StepParams::Clustering(c) => StepParams::Clustering(ClusteringParams {
                k: c.k.resolve(counts),
                ..*c
            }),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_rounds_down_within_its_bounds() {
        let g = Grid {
            min: 32,
            step: 16,
            max: Some(1024),
        };
        assert_eq!(g.at_most(31), None);
        assert_eq!(g.at_most(32), Some(32));
        assert_eq!(g.at_most(47), Some(32));
        assert_eq!(g.at_most(48), Some(48));
        assert_eq!(g.at_most(5000), Some(1024));
    }
}
