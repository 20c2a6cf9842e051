//! The templates' networks on candle (feature `train`): ResNet-101 with an
//! angular margin head, BN-Inception and ResNeXt-50 classifiers, their losses,
//! SGD with momentum, and safetensors weights.
//!
//! Widths and depths are parameters ([`ResNetConfig`], [`BnInceptionConfig`]),
//! so tests build the same code small. Tensor names follow PyTorch, so
//! converted torchvision / pretrainedmodels weights load.

pub mod bn_inception;
pub mod calibrate;
pub mod cpu;
pub mod gradcheck;
pub mod init;
pub mod layers;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod resnet;
pub mod walk;
pub mod weights;

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use candle_nn::{Init, Linear, Module, VarBuilder};

pub use bn_inception::{BnInception, BnInceptionConfig};
pub use loss::AngularMargin;
pub use resnet::{ResNet, ResNetConfig};

/// A template's network, at any width.
#[derive(Clone, Debug, PartialEq)]
pub enum NetConfig {
    /// Clarifai_ResNet_AngularMargin: ResNet → projection → L2 norm, trained with ArcFace.
    AngularMargin {
        backbone: ResNetConfig,
        embeddings_size: usize,
        loss: AngularMargin,
    },
    /// Clarifai_InceptionBatchNorm: BN-Inception with a sigmoid or softmax classifier.
    BnInception {
        backbone: BnInceptionConfig,
        logreg: bool,
    },
    /// Clarifai_ResNext: ResNeXt with a sigmoid or softmax classifier.
    ResNext {
        backbone: ResNetConfig,
        logreg: bool,
    },
}

impl NetConfig {
    /// The network a workflow's typed hyperparameters describe.
    pub fn for_hyper(h: &crate::hyper::Hyper) -> NetConfig {
        use crate::hyper::Loss;
        match h.loss {
            Loss::AngularMargin {
                scale,
                margin,
                embeddings_size,
            } => NetConfig::published(
                h.architecture,
                false,
                embeddings_size,
                AngularMargin { scale, margin },
            ),
            // The classifiers have no projection and no margin: only `logreg` is read.
            Loss::Softmax | Loss::Sigmoid => NetConfig::published(
                h.architecture,
                h.loss.logreg(),
                0,
                AngularMargin {
                    scale: 0.0,
                    margin: 0.0,
                },
            ),
        }
    }

    /// The length of the embeddings [`TemplateNet::embed`] gives.
    pub fn embedding_dim(&self) -> usize {
        match self {
            NetConfig::AngularMargin {
                embeddings_size, ..
            } => *embeddings_size,
            NetConfig::BnInception { backbone, .. } => backbone.feature_dim(),
            NetConfig::ResNext { backbone, .. } => backbone.feature_dim(),
        }
    }

    /// Sigmoid units (`logreg = 1`): several concepts per image.
    pub fn logreg(&self) -> bool {
        matches!(
            self,
            NetConfig::BnInception { logreg: true, .. } | NetConfig::ResNext { logreg: true, .. }
        )
    }

    /// The published network for a template's architecture.
    pub fn published(
        arch: crate::spec::Architecture,
        logreg: bool,
        embeddings_size: usize,
        loss: AngularMargin,
    ) -> NetConfig {
        use crate::spec::Architecture;
        match arch {
            Architecture::Resnet101AngularMargin => NetConfig::AngularMargin {
                backbone: ResNetConfig::resnet101(),
                embeddings_size,
                loss,
            },
            Architecture::BnInception => NetConfig::BnInception {
                backbone: BnInceptionConfig::published(),
                logreg,
            },
            Architecture::Resnext50 => NetConfig::ResNext {
                backbone: ResNetConfig::resnext50_32x4d(),
                logreg,
            },
        }
    }
}

#[derive(Clone, Debug)]
enum Backbone {
    ResNet(ResNet),
    BnInception(BnInception),
}

impl Backbone {
    /// Images (N, 3, H, W) → pooled features, the layers run on candle
    /// tensors ([`walk::Run`]: `fixed`, the weights will not change again;
    /// `aside`, where training hands the convolutions' weight gradients).
    fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
        fixed: bool,
        aside: Option<Arc<cpu::conv::WeightGrads>>,
    ) -> Result<Tensor> {
        let kernels = match self {
            Backbone::ResNet(n) => n.kernels(),
            Backbone::BnInception(n) => n.kernels(),
        };
        let mut run = walk::Run {
            train,
            kernels,
            fixed,
            aside,
        };
        self.walk(&mut run, x)
    }

    fn walk<O: walk::Ops>(&self, ops: &mut O, x: &O::Value) -> Result<O::Value> {
        match self {
            Backbone::ResNet(n) => n.walk(ops, x),
            Backbone::BnInception(n) => n.walk(ops, x),
        }
    }
}

#[derive(Clone, Debug)]
enum Head {
    AngularMargin {
        embedding: Linear,
        weight: Tensor,
        loss: AngularMargin,
    },
    Classifier {
        fc: Linear,
        logreg: bool,
    },
}

/// A template's head as an exporter writes it (see [`TemplateNet::head`]).
#[derive(Clone, Copy, Debug)]
pub enum HeadView<'a> {
    /// The embedding is `l2_normalize(embedding(features))`; the logits are
    /// `scale · embedding · l2_normalize(class_weights)ᵀ`.
    AngularMargin {
        embedding: &'a Linear,
        /// (classes, embeddings_size).
        class_weights: &'a Tensor,
        scale: f64,
    },
    /// The embedding is the features; the logits are `fc(features)`, read
    /// through a sigmoid when `logreg`, else a softmax.
    Classifier { fc: &'a Linear, logreg: bool },
}

/// What a batch is trained against.
#[derive(Clone, Debug)]
pub enum Targets {
    /// One class index per image (N, u32): softmax and angular margin.
    Classes(Tensor),
    /// A 0/1 row per image (N, C): sigmoid units, several concepts per image.
    MultiLabel(Tensor),
}

impl Targets {
    /// The targets of images with these concepts: a 0/1 row each
    /// (`multi_label`), or each image's first concept as its class.
    pub fn from_concepts<'a>(
        concepts: impl ExactSizeIterator<Item = &'a [usize]>,
        classes: usize,
        multi_label: bool,
        device: &candle_core::Device,
    ) -> Result<Targets> {
        let n = concepts.len();
        if multi_label {
            let mut rows = vec![0f32; n * classes];
            for (r, cs) in concepts.enumerate() {
                for &c in cs {
                    rows[r * classes + c] = 1.0;
                }
            }
            Ok(Targets::MultiLabel(Tensor::from_vec(
                rows,
                (n, classes),
                device,
            )?))
        } else {
            let labels: Vec<u32> = concepts
                .map(|c| c.first().copied().unwrap_or(0) as u32)
                .collect();
            Ok(Targets::Classes(Tensor::new(labels.as_slice(), device)?))
        }
    }
}

/// A template's network with its head and loss.
#[derive(Clone, Debug)]
pub struct TemplateNet {
    backbone: Backbone,
    head: Head,
    /// Set by [`TemplateNet::fix_weights`].
    fixed: bool,
    /// Set by [`TemplateNet::gradients_aside`].
    aside: Option<Arc<cpu::conv::WeightGrads>>,
}

impl TemplateNet {
    /// Builds the network for `classes` concepts on wfrun's kernels (on the
    /// CPU); its variables live in `vb`.
    pub fn new(cfg: &NetConfig, classes: usize, vb: &VarBuilder) -> Result<TemplateNet> {
        TemplateNet::with_kernels(cfg, classes, cpu::Kernels::default(), vb)
    }

    /// Builds the network on the given kernels.
    pub fn with_kernels(
        cfg: &NetConfig,
        classes: usize,
        kernels: cpu::Kernels,
        vb: &VarBuilder,
    ) -> Result<TemplateNet> {
        if classes == 0 {
            candle_core::bail!("a network needs at least one concept");
        }
        Ok(match cfg {
            NetConfig::AngularMargin {
                backbone,
                embeddings_size,
                loss,
            } => {
                let net = ResNet::new(backbone, kernels, vb)?;
                let embedding =
                    candle_nn::linear(net.feature_dim(), *embeddings_size, vb.pp("embedding"))?;
                // Xavier-uniform, as ArcFace implementations initialise class weights.
                let bound = (6.0 / (classes + *embeddings_size) as f64).sqrt();
                let weight = vb.get_with_hints(
                    (classes, *embeddings_size),
                    "arcface.weight",
                    Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                )?;
                TemplateNet {
                    backbone: Backbone::ResNet(net),
                    head: Head::AngularMargin {
                        embedding,
                        weight,
                        loss: *loss,
                    },
                    fixed: false,
                    aside: None,
                }
            }
            NetConfig::BnInception { backbone, logreg } => {
                let net = BnInception::new(backbone, kernels, vb)?;
                let fc = candle_nn::linear(net.feature_dim(), classes, vb.pp("last_linear"))?;
                TemplateNet {
                    backbone: Backbone::BnInception(net),
                    head: Head::Classifier {
                        fc,
                        logreg: *logreg,
                    },
                    fixed: false,
                    aside: None,
                }
            }
            NetConfig::ResNext { backbone, logreg } => {
                let net = ResNet::new(backbone, kernels, vb)?;
                let fc = candle_nn::linear(net.feature_dim(), classes, vb.pp("fc"))?;
                TemplateNet {
                    backbone: Backbone::ResNet(net),
                    head: Head::Classifier {
                        fc,
                        logreg: *logreg,
                    },
                    fixed: false,
                    aside: None,
                }
            }
        })
    }

    /// Declares that the weights will not change again (a trained model
    /// opened for use): evaluation then keeps what it derives from them
    /// across calls — each 3 × 3 convolution's weights transformed for
    /// Winograd's F(4 × 4, 3 × 3), 4× the weights' size — instead of
    /// deriving it at each call. The results are the same to the bit.
    pub fn fix_weights(&mut self) {
        self.fixed = true;
    }

    /// From now on, training passes on wfrun's CPU kernels hand the
    /// convolutions' weight gradients to [`TemplateNet::backward`] directly,
    /// not through candle's gradient store, which adds each gradient it is
    /// given to a tensor of zeros it makes first (two more passes over the
    /// weights a step: ResNet-101 at 32 px trained 1.2× as fast without them).
    /// The gradients are the same to the bit. Take them with
    /// [`TemplateNet::backward`] then, not `loss.backward()`, which would
    /// leave the convolutions' weights out.
    pub fn gradients_aside(&mut self) {
        self.aside = Some(Arc::default());
    }

    /// The gradients of `loss` (a training pass's): `loss.backward()`, with
    /// the convolutions' weight gradients handed aside
    /// ([`TemplateNet::gradients_aside`]) put in with the rest.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        if let Some(aside) = &self.aside {
            for (w, g) in aside.take()? {
                let g = match grads.get(&w) {
                    Some(other) => other.add(&g)?,
                    None => g,
                };
                grads.insert(&w, g);
            }
        }
        Ok(grads)
    }

    /// The template's embedding of images (N, 3, H, W): the L2-normalised
    /// projection for the angular margin template, the pooled features for the
    /// classifier templates.
    pub fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let aside = self.aside.as_ref().filter(|_| train);
        if let Some(aside) = aside {
            // A backward pass whose gradients were never taken left them.
            aside.clear();
        }
        let features = self
            .backbone
            .forward_t(x, train, self.fixed, aside.cloned())?;
        match &self.head {
            Head::AngularMargin { embedding, .. } => {
                loss::l2_normalize(&embedding.forward(&features)?)
            }
            Head::Classifier { .. } => Ok(features),
        }
    }

    /// The backbone's forward pass through `ops`: images → pooled features
    /// (what [`TemplateNet::embed`] feeds the head).
    pub fn walk_backbone<O: walk::Ops>(&self, ops: &mut O, x: &O::Value) -> Result<O::Value> {
        self.backbone.walk(ops, x)
    }

    /// The head after the backbone.
    pub fn head(&self) -> HeadView<'_> {
        match &self.head {
            Head::AngularMargin {
                embedding,
                weight,
                loss,
            } => HeadView::AngularMargin {
                embedding,
                class_weights: weight,
                scale: loss.scale,
            },
            Head::Classifier { fc, logreg } => HeadView::Classifier {
                fc,
                logreg: *logreg,
            },
        }
    }

    /// Logits (N, classes): the classifier's, or `s·cos θ` for the angular
    /// margin template (no margin: what it predicts with).
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.logits_of(&self.embed(x, train)?)
    }

    /// [`TemplateNet::logits`] of embeddings [`TemplateNet::embed`] gave:
    /// the last layer alone.
    pub fn logits_of(&self, e: &Tensor) -> Result<Tensor> {
        match &self.head {
            Head::AngularMargin { weight, loss, .. } => {
                e.matmul(&loss::l2_normalize(weight)?.t()?)? * loss.scale
            }
            Head::Classifier { fc, .. } => fc.forward(e),
        }
    }

    /// The template's training loss on a batch.
    pub fn loss(&self, x: &Tensor, targets: &Targets, train: bool) -> Result<Tensor> {
        Ok(self.output_and_loss(x, targets, train)?.1)
    }

    /// One pass: the output (the embedding for the angular margin template, the
    /// logits for the classifiers) and the loss. In training, batch norm
    /// updates its running statistics once.
    pub fn output_and_loss(
        &self,
        x: &Tensor,
        targets: &Targets,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.output_and_loss_of(self.embed(x, train)?, targets)
    }

    /// [`TemplateNet::output_and_loss`] of embeddings [`TemplateNet::embed`]
    /// gave: the last layer and the loss alone.
    pub fn output_and_loss_of(&self, e: Tensor, targets: &Targets) -> Result<(Tensor, Tensor)> {
        match (&self.head, targets) {
            (Head::AngularMargin { weight, loss, .. }, Targets::Classes(labels)) => {
                let l = loss.loss(&e, weight, labels)?;
                Ok((e, l))
            }
            (Head::AngularMargin { .. }, Targets::MultiLabel(_)) => {
                candle_core::bail!("the angular margin loss needs one concept per image")
            }
            (Head::Classifier { fc, logreg }, targets) => {
                let logits = fc.forward(&e)?;
                let l = match (logreg, targets) {
                    (false, Targets::Classes(labels)) => {
                        loss::softmax_cross_entropy(&logits, labels)?
                    }
                    (true, Targets::MultiLabel(t)) => {
                        loss::sigmoid_binary_cross_entropy(&logits, t)?
                    }
                    (true, Targets::Classes(labels)) => {
                        let one_hot = loss::one_hot(labels, logits.dim(1)?)?;
                        loss::sigmoid_binary_cross_entropy(&logits, &one_hot)?
                    }
                    (false, Targets::MultiLabel(_)) => {
                        candle_core::bail!(
                            "several concepts per image need sigmoid units (`logreg = 1`)"
                        )
                    }
                };
                Ok((logits, l))
            }
        }
    }
}
