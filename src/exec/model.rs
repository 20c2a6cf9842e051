//! A trained model, used: [`Model::open`] a finished run's model (as a `base`
//! workflow opens it: `model.json` typed by the checker against the
//! template's ranges), embed new images with the run's evaluation
//! preprocessing, predict their concepts with the template's own output
//! layer or a `classifier_head` step's head, and search them among the run's
//! embeddings. Like the run, it never prints: progress goes to a callback.

use crate::paths::ShowPath;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::metrics::{self, Embedded};
use super::sets::Images;
use super::{Event, RunError};
use crate::data::images::{preprocess, BadImage, Crop};
use crate::data::{list_folder, Dataset};
use crate::hyper::Hyper;
use crate::models::{loss, NetConfig, TemplateNet};
use crate::spec::TemplateSpec;
use crate::steps::head::Head;
use crate::workflow::BaseModel;

/// Why the run folder `path` (it holds a plan) holds no model, and what
/// gives it one: its workflow trains none (it embeds with a base model),
/// or the run is still training, or it stopped before it finished (a
/// sweep's trial: early, by the sweep's rule, or killed).
fn no_model_yet(path: &Path) -> String {
    let plan: serde_json::Value = std::fs::read(path.join("plan.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let workflow = plan["workflow"].as_str().unwrap_or("?");
    if let Some(weights) = plan["base"]["weights"].as_str() {
        // Named as the workflow named it, from the folder the run started in.
        let weights = Path::new(weights);
        let base = match weights.file_name() {
            Some(f) if f == "model.safetensors" => weights.parent().unwrap_or(Path::new(".")),
            _ => weights,
        };
        return format!(
            "this run folder holds no model: the workflow `{workflow}` embeds with a base \
             model and trains none; use its base model, `{}` (as the workflow names it)",
            base.shown()
        );
    }
    if path.join(super::sweep::TRIAL_FILE).is_file() {
        return "this sweep trial stopped early or diverged, and such a trial writes no \
                model: use the sweep's `best`"
            .into();
    }
    if let Some(pid) = super::owner::held_now(path) {
        let who = pid.map_or_else(|| "a run".to_string(), |p| format!("a run (process {p})"));
        return format!(
            "this run is still training: {who} holds the folder, and its model is written \
             when training ends; try again then"
        );
    }
    // A sweep's trial is named `SWEEP/TRIAL`: the sweep's workflow resumes it.
    let resumed_by = match workflow.split_once('/') {
        Some((sweep, _)) => format!("the sweep `{sweep}`"),
        None => format!("the workflow `{workflow}`"),
    };
    if path.join("checkpoint.safetensors").is_file() {
        format!(
            "this run stopped before it finished (it was stopped, or it failed) and holds \
             no model yet; its checkpoint is kept: `wfrun WORKFLOW.wf --resume` with \
             {resumed_by} finishes it"
        )
    } else {
        format!(
            "this run stopped before its first epoch ended and holds no model: run \
             {resumed_by} again (`wfrun WORKFLOW.wf`, with `--resume` for a sweep)"
        )
    }
}

/// How to open a model.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// Where the network runs (default: the CPU).
    pub device: crate::workflow::Device,
    /// Decoding threads (0: one per core).
    pub workers: usize,
    /// Keep what evaluation derives from the weights across calls (each
    /// 3 × 3 convolution's weights transformed for Winograd's F(4 × 4, 3 ×
    /// 3), about 4× those weights: ResNet-101 at 64 px embeds a batch in
    /// 0.8 of the time for 210 MiB more). Off: derived at each call, for
    /// less memory; the vectors are the same either way. Default: on.
    pub keep_transforms: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            device: crate::workflow::Device::Cpu,
            workers: 0,
            keep_transforms: true,
        }
    }
}

/// A finished run's trained network, ready to embed, predict and search.
pub struct Model {
    /// The folder holding `model.safetensors` (the run folder).
    folder: PathBuf,
    base: BaseModel,
    template: TemplateSpec,
    hyper: Hyper,
    config: NetConfig,
    /// The weights the network was built on, by name (for export).
    tensors: HashMap<String, Tensor>,
    net: TemplateNet,
    device: Device,
    workers: usize,
    /// A digest of the weights file and `model.json`: names this model in
    /// the embeddings it writes.
    identity: String,
}

/// Images to embed, with their concepts when the input names them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub paths: Vec<PathBuf>,
    /// Each image's concepts (empty when not known).
    pub concepts: Vec<Vec<String>>,
    /// How many times [`Inputs::gather`] met an image it already had (the
    /// same file named again, by another path or a link): each is embedded
    /// once, with every concept it was named with.
    pub repeated: usize,
    /// Folders named that held no image (a folder named like an image
    /// included): left out, for the caller to say so.
    pub empty: Vec<PathBuf>,
}

/// Embeddings of the images that could be read.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// One per row.
    pub paths: Vec<PathBuf>,
    pub concepts: Vec<Vec<String>>,
    /// The length of each row.
    pub dim: usize,
    /// `paths.len() × dim` values, row after row.
    pub values: Vec<f32>,
    /// The images that could not be read (they have no row).
    pub bad: Vec<BadImage>,
    /// Which model made them ([`Model::identity`]), when known: a search
    /// refuses vectors of another model.
    pub model: Option<String>,
}

/// What a prediction ranks: the template's output layer, or a head.
pub enum Predictor {
    /// The network's own last layer over the model's concepts (`s·cos θ` to
    /// each class centre for the angular margin template).
    Template,
    Head(TrainedHead),
}

/// Which concepts a prediction lists: those scoring above `threshold`, most
/// likely first, at most `top_k` of them. Unset, each follows the output:
/// softmax lists the 5 most likely whatever their scores, sigmoid units every
/// concept above 0.5 however many.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rule {
    /// At most this many concepts (softmax's default: 5; sigmoid: no limit).
    pub top_k: Option<usize>,
    /// Only concepts scoring above it (softmax's default: any score; sigmoid: 0.5).
    pub threshold: Option<f32>,
}

impl Rule {
    /// (top k, threshold) for softmax outputs or for sigmoid units (`logreg`).
    fn resolve(self, logreg: bool) -> (usize, f32) {
        match logreg {
            false => (
                self.top_k.unwrap_or(5),
                self.threshold.unwrap_or(f32::NEG_INFINITY),
            ),
            true => (
                self.top_k.unwrap_or(usize::MAX),
                self.threshold.unwrap_or(0.5),
            ),
        }
    }
}

/// One image's predicted concepts, most likely first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    #[serde(serialize_with = "crate::paths::lossy")]
    pub path: PathBuf,
    /// (concept, probability); sigmoid units may list none.
    pub concepts: Vec<(String, f32)>,
}

/// A `classifier_head` step's trained head and the concepts of its outputs.
pub struct TrainedHead {
    pub step: String,
    pub concepts: Vec<String>,
    head: Head,
}

/// What `head.json` beside a step's `head.safetensors` says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HeadMeta {
    pub logreg: bool,
    pub concepts: Vec<String>,
    /// The model whose embeddings it was trained on ([`Model::identity`]);
    /// absent in heads written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The images a search looks among: a run's training and evaluation
/// embeddings.
pub struct Index {
    /// Which model made the vectors, when known.
    pub model: Option<String>,
    pub paths: Vec<PathBuf>,
    pub concepts: Vec<Vec<String>>,
    matrix: Tensor,
}

impl Index {
    /// The images `wfrun embed` wrote to `path` ([`Embeddings::save`]) to
    /// search among, their relative paths named from the current folder
    /// (they were written from the folder `embed` ran in).
    pub fn load(path: &Path) -> Result<Index, RunError> {
        let (mut e, metadata) = Embeddings::read(path)?;
        // Where the paths start: from the index's folder, else as it was
        // (files of earlier versions say neither), the first where the
        // first relative image exists.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let relative = metadata.get(PATHS_FROM).and_then(|from| {
            let folder = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()?;
            Some(crate::check::normalize(&folder.join(from)))
        });
        let absolute = metadata.get(LAUNCHED_IN).map(PathBuf::from);
        let probe = e.paths.iter().find(|p| p.is_relative());
        let launch = [relative, absolute]
            .into_iter()
            .flatten()
            .find(|l| probe.is_some_and(|p| l.join(p).exists()));
        if let Some(launch) = launch {
            let here = std::env::current_dir()
                .ok()
                .and_then(|h| std::fs::canonicalize(h).ok());
            for p in e.paths.iter_mut().filter(|p| p.is_relative()) {
                *p = from_here(&launch, here.as_deref(), p);
            }
        }
        Index::of(&e)
    }

    /// Images embedded elsewhere (by [`Model::embed`] or read back with
    /// [`Embeddings::load`]) to search among.
    pub fn of(e: &Embeddings) -> Result<Index, RunError> {
        if e.is_empty() {
            return Err(RunError::Unsupported(
                "there is no image to search among".into(),
            ));
        }
        Ok(Index {
            model: e.model.clone(),
            paths: e.paths.clone(),
            concepts: e.concepts.clone(),
            matrix: Tensor::from_slice(&e.values, (e.len(), e.dim), &Device::Cpu)?,
        })
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// One neighbour of a query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    #[serde(serialize_with = "crate::paths::lossy")]
    pub path: PathBuf,
    pub concepts: Vec<String>,
    /// Cosine similarity.
    pub score: f32,
}

impl Model {
    /// Opens the model of the run folder `path` (or a `model.safetensors`
    /// with its `model.json` beside it) on the CPU.
    pub fn open(path: &Path) -> Result<Model, RunError> {
        Model::open_with(path, &ModelOptions::default())
    }

    pub fn open_with(path: &Path, options: &ModelOptions) -> Result<Model, RunError> {
        if !path.exists() {
            return Err(RunError::RunFile {
                path: path.to_path_buf(),
                message: "no such folder or file; name the folder of a finished run (it holds \
                          `model.safetensors` and `model.json`)"
                    .into(),
            });
        }
        // A file other than a model's weights: most often the workflow
        // itself where its run folder was meant.
        if path.is_file() && path.extension().is_none_or(|e| e != "safetensors") {
            let hint = match path.extension().is_some_and(|e| e == "wf") {
                true => {
                    " (a workflow file: its run folder is its `output`, `runs/NAME` by \
                          default; `wfrun plan` shows it)"
                }
                false => "",
            };
            return Err(RunError::RunFile {
                path: path.to_path_buf(),
                message: format!(
                    "not a run folder{hint}; name the folder of a finished run (it holds \
                     `model.safetensors` and `model.json`)"
                ),
            });
        }
        if path.is_dir()
            && !path.join("model.safetensors").exists()
            && path.join("plan.json").is_file()
        {
            return Err(RunError::RunFile {
                path: path.to_path_buf(),
                message: no_model_yet(path),
            });
        }
        let (base, template, hyper) =
            crate::check::open_model(path).map_err(|message| RunError::RunFile {
                path: path.to_path_buf(),
                message,
            })?;
        let device = super::open_device(options.device)?;
        let bytes = read_weights(&base)?;
        let (config, tensors, mut net) = load_net(&base, &hyper, &device, &bytes)?;
        // A model opened for use is never trained: evaluation may keep what
        // it derives from the weights.
        if options.keep_transforms {
            net.fix_weights();
        }
        let identity = identity(&base, &bytes);
        drop(bytes);
        let folder = base
            .weights
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Ok(Model {
            folder,
            base,
            template,
            hyper,
            config,
            tensors,
            net,
            device,
            workers: match options.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            identity,
        })
    }

    /// What names this model in the embeddings it makes: the workflow that
    /// trained it and a digest of its weights and `model.json`.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The template it was trained from.
    pub fn template(&self) -> &TemplateSpec {
        &self.template
    }

    /// Its hyperparameters, typed.
    pub fn hyper(&self) -> &Hyper {
        &self.hyper
    }

    /// What its `model.json` says (the workflow that trained it, its concepts).
    pub fn meta(&self) -> &crate::workflow::ModelMeta {
        &self.base.meta
    }

    /// The concepts of the template's outputs, in order.
    pub fn concepts(&self) -> &[String] {
        &self.base.meta.concepts
    }

    /// The side of the square the network sees.
    pub fn image_size(&self) -> usize {
        self.hyper.image_size
    }

    /// Whether the template's outputs are sigmoid units (several concepts per
    /// image) rather than a softmax.
    pub fn logreg(&self) -> bool {
        self.config.logreg()
    }

    /// Writes the network as an ONNX model at `path` (feature `onnx`):
    /// input `images`, outputs `embeddings` and `scores`, the preprocessing
    /// and the concepts in its metadata ([`crate::export::onnx()`]).
    #[cfg(feature = "onnx")]
    pub fn export_onnx(
        &self,
        path: &Path,
    ) -> Result<crate::export::OnnxSummary, crate::export::ExportError> {
        let meta = crate::export::OnnxMeta {
            image_size: self.image_size(),
            template: self.template.name.to_string(),
            concepts: self.concepts().to_vec(),
            properties: vec![("workflow".to_string(), self.base.meta.workflow.clone())],
        };
        crate::export::onnx_from_tensors(
            &self.config,
            self.concepts().len().max(1),
            &self.tensors,
            &meta,
            path,
        )
    }

    /// The folder the model was opened from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Embeds `inputs` (centre crops at the model's image size, as the run
    /// embeds its evaluation images), calling `on_event` with
    /// [`Event::Embedding`] after each batch. Unreadable images are listed in
    /// [`Embeddings::bad`] and have no row.
    pub fn embed(
        &self,
        inputs: &Inputs,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Embeddings, RunError> {
        let images = Images {
            paths: Arc::new(inputs.paths.clone()),
            concepts: vec![Vec::new(); inputs.paths.len()],
        };
        let mut progress = |done, total| {
            on_event(&Event::Embedding {
                split: "images",
                done,
                total,
            })
        };
        let size = self.image_size();
        let e = metrics::embed(
            &self.net,
            &images,
            size,
            self.workers,
            &self.device,
            &mut progress,
        )?;
        self.embeddings(e, |i| inputs.concepts.get(i).cloned().unwrap_or_default())
    }

    /// Embeds decoded images (preprocessed as [`Model::embed`] does); the
    /// rows are named `names` (or `image N`). An image the network cannot use
    /// (empty, or too elongated) is listed in [`Embeddings::bad`].
    pub fn embed_images(
        &self,
        images: &[image::DynamicImage],
        names: Option<&[PathBuf]>,
    ) -> Result<Embeddings, RunError> {
        let size = self.image_size();
        let name = |i: usize| {
            names
                .and_then(|n| n.get(i).cloned())
                .unwrap_or_else(|| PathBuf::from(format!("image {i}")))
        };
        let (mut pixels, mut kept, mut bad) = (Vec::new(), Vec::new(), Vec::new());
        for (i, img) in images.iter().enumerate() {
            match preprocess(img.to_rgb8(), size, Crop::Center) {
                Ok(px) => {
                    pixels.extend(px);
                    kept.push(i);
                }
                Err(reason) => bad.push(BadImage {
                    path: name(i),
                    reason,
                }),
            }
        }
        let mut rows = Vec::new();
        for (chunk, batch) in kept
            .chunks(EMBED_BATCH)
            .zip(pixels.chunks(EMBED_BATCH * 3 * size * size))
        {
            let x = Tensor::from_slice(batch, (chunk.len(), 3, size, size), &self.device)?;
            rows.push(self.net.embed(&x, false)?);
        }
        let matrix = if rows.is_empty() {
            None
        } else {
            Some(Tensor::cat(&rows, 0)?)
        };
        let e = Embedded {
            matrix,
            paths: kept.iter().map(|&i| name(i)).collect(),
            concepts: vec![Vec::new(); kept.len()],
            indices: kept,
            bad,
        };
        self.embeddings(e, |_| Vec::new())
    }

    fn embeddings(
        &self,
        e: Embedded,
        concepts_of: impl Fn(usize) -> Vec<String>,
    ) -> Result<Embeddings, RunError> {
        let (dim, values) = match &e.matrix {
            Some(m) => (m.dim(1)?, m.flatten_all()?.to_vec1::<f32>()?),
            None => (0, Vec::new()),
        };
        if values.iter().any(|v| !v.is_finite()) {
            return Err(RunError::RunFile {
                path: self.base.weights.clone(),
                message: "the network's embeddings are not finite numbers: the weights are \
                          damaged; restore them, or train the model again"
                    .into(),
            });
        }
        Ok(Embeddings {
            concepts: e.indices.iter().map(|&i| concepts_of(i)).collect(),
            paths: e.paths,
            dim,
            values,
            bad: e.bad,
            model: Some(self.identity.clone()),
        })
    }

    /// The names of the run's `classifier_head` steps that left a head.
    /// The names of the steps the run's `plan.json` lists (none if unreadable).
    fn planned_steps(&self) -> Vec<String> {
        let Some(plan) = std::fs::read(self.folder.join("plan.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            return Vec::new();
        };
        plan["steps"]
            .as_array()
            .map(|steps| {
                steps
                    .iter()
                    .filter_map(|s| s["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn heads(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.folder.join("steps")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("head.safetensors").is_file())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// The head the run's `classifier_head` step `step` trained.
    pub fn head(&self, step: &str) -> Result<TrainedHead, RunError> {
        // A step's name, never a path into another run's folder.
        let named = !step.is_empty()
            && step != "."
            && step != ".."
            && !step.contains(['/', '\\'])
            && Path::new(step).is_relative();
        if !named {
            let heads = self.heads();
            let theirs = match heads.as_slice() {
                [] => "this run trained none".to_string(),
                _ => format!("its heads: {}", quoted(&heads)),
            };
            return Err(RunError::RunFile {
                path: self.folder.join("steps"),
                message: format!(
                    "`{step}` is not the name of one of the run's `classifier_head` steps \
                     ({theirs}); a head from another run is used through that run"
                ),
            });
        }
        let folder = self.folder.join("steps").join(step);
        let weights_path = folder.join("head.safetensors");
        let meta_path = folder.join("head.json");
        if !weights_path.is_file() {
            let heads = self.heads();
            let planned = self.planned_steps().iter().any(|s| s == step);
            let help = match heads.as_slice() {
                // The workflow has the step, which did not finish.
                _ if planned => "its workflow has this step, which did not finish: run the \
                                 workflow again with `--resume` to finish it"
                    .to_string(),
                [] => "this run trained no head: add a `classifier_head` step to its workflow and \
                       run it with `--resume`"
                    .to_string(),
                _ => format!("its heads: {}", quoted(&heads)),
            };
            return Err(RunError::RunFile {
                path: weights_path,
                message: format!("the run has no head `{step}`; {help}"),
            });
        }
        let bad = |path: &Path, message: String| RunError::RunFile {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            bad(
                &meta_path,
                format!("cannot read it ({e}); run the workflow with `--resume` to write it again"),
            )
        })?;
        let meta: HeadMeta = serde_json::from_str(&text)
            .map_err(|e| bad(&meta_path, format!("it does not describe a head: {e}")))?;
        if let Some(theirs) = meta.model.as_deref().filter(|m| *m != self.identity) {
            return Err(bad(
                &meta_path,
                format!(
                    "this head was trained on the embeddings of another model ({theirs}) than \
                     this run's ({}): a head copied from another run? Use it through the run \
                     that trained it",
                    self.identity
                ),
            ));
        }
        let tensors = candle_core::safetensors::load(&weights_path, &self.device)
            .map_err(|e| bad(&weights_path, format!("cannot read it: {e}")))?;
        let get = |name: &str| {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| bad(&weights_path, format!("it holds no `{name}`")))
        };
        let head = Head {
            logreg: meta.logreg,
            mean: get("mean")?,
            scale: get("scale")?,
            weight: get("weight")?,
            bias: get("bias")?,
            losses: Vec::new(),
        };
        let dim = self.embedding_dim();
        let (classes, head_dim) = head.weight.dims2()?;
        if head_dim != dim || classes != meta.concepts.len() || head.bias.dims() != [classes] {
            return Err(bad(
                &weights_path,
                format!(
                    "its shapes ({classes} × {head_dim}) do not fit the model's {dim}-long \
                     embeddings and the {} concepts of `head.json`",
                    meta.concepts.len()
                ),
            ));
        }
        Ok(TrainedHead {
            step: step.to_string(),
            concepts: meta.concepts,
            head,
        })
    }

    /// The length of the model's embeddings.
    pub fn embedding_dim(&self) -> usize {
        self.config.embedding_dim()
    }

    /// Each image's concepts as `rule` says: by default softmax outputs give
    /// the 5 most likely, sigmoid units every concept above 0.5.
    pub fn predict(
        &self,
        embeddings: &Embeddings,
        with: &Predictor,
        rule: Rule,
    ) -> Result<Vec<Prediction>, RunError> {
        let Some(x) = self.matrix(embeddings)? else {
            return Ok(Vec::new());
        };
        let (scores, names, logreg) = match with {
            Predictor::Template => {
                let logits = self.net.logits_of(&x)?;
                let scores = if self.logreg() {
                    candle_nn::ops::sigmoid(&logits)?
                } else {
                    loss::softmax(&logits)?
                };
                (scores, self.concepts(), self.logreg())
            }
            Predictor::Head(h) => (h.head.scores(&x)?, h.concepts.as_slice(), h.head.logreg),
        };
        let scores = scores.to_vec2::<f32>()?;
        let (top_k, threshold) = rule.resolve(logreg);
        Ok(scores
            .iter()
            .zip(&embeddings.paths)
            .map(|(s, path)| {
                let mut order: Vec<usize> = (0..s.len()).collect();
                order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
                let shown: Vec<usize> = order
                    .into_iter()
                    .filter(|&c| s[c] > threshold)
                    .take(top_k)
                    .collect();
                Prediction {
                    path: path.clone(),
                    concepts: shown
                        .into_iter()
                        .map(|c| (names[c].clone(), s[c]))
                        .collect(),
                }
            })
            .collect())
    }

    /// The folder the run was started in, where the image paths it recorded
    /// start: the run folder (as named, then with its links resolved) with
    /// the `output` its `plan.json` records taken off its end, the first
    /// under which the recorded image `probe` exists. An output that climbs
    /// out of the folder the run started in (`../runs/x`) does not say that
    /// folder's name: the folders where it may have been (one or two levels
    /// down, at most [`MAX_SIBLINGS`] a level) are tried. `None` when that
    /// cannot be told (no plan, an absolute output, a run folder copied or
    /// moved apart from its data): the paths are then shown as recorded.
    fn launch_folder(&self, probe: &Path) -> Option<PathBuf> {
        use std::path::Component;
        let plan = std::fs::read(self.folder.join("plan.json")).ok()?;
        let plan: serde_json::Value = serde_json::from_slice(&plan).ok()?;
        let output = crate::check::normalize(Path::new(plan["output"].as_str()?));
        let parts: Vec<Component> = output.components().collect();
        let ups = parts
            .iter()
            .take_while(|c| matches!(c, Component::ParentDir))
            .count();
        let down: PathBuf = parts[ups..].iter().collect();
        let relative = output.is_relative()
            && ups <= 2
            && parts[ups..]
                .iter()
                .all(|c| matches!(c, Component::Normal(_)));
        if !relative || probe.is_absolute() {
            return None;
        }
        let named = std::env::current_dir()
            .ok()
            .map(|here| crate::check::normalize(&here.join(&self.folder)));
        let resolved = std::fs::canonicalize(&self.folder).ok();
        [named, resolved].into_iter().flatten().find_map(|run| {
            if !run.ends_with(&down) {
                return None;
            }
            let mut top = run.as_path();
            for _ in down.components() {
                top = top.parent()?;
            }
            let mut launches = vec![top.to_path_buf()];
            for _ in 0..ups {
                launches = launches.iter().flat_map(|f| subfolders(f)).collect();
            }
            launches.into_iter().find(|l| l.join(probe).exists())
        })
    }

    /// The run's embeddings (`embeddings.safetensors` and `embeddings.csv`),
    /// training rows then evaluation rows.
    pub fn index(&self) -> Result<Index, RunError> {
        let tensors_path = self.folder.join("embeddings.safetensors");
        let csv_path = self.folder.join("embeddings.csv");
        let bad = |path: &Path, message: String| RunError::RunFile {
            path: path.to_path_buf(),
            message,
        };
        let tensors = candle_core::safetensors::load(&tensors_path, &self.device).map_err(|e| {
            bad(
                &tensors_path,
                format!("cannot read the run's embeddings ({e}); a finished run writes them"),
            )
        })?;
        let rows = read_index_csv(&csv_path)?;
        let mut parts = Vec::new();
        let mut index = Index {
            model: Some(self.identity.clone()),
            paths: Vec::new(),
            concepts: Vec::new(),
            matrix: Tensor::zeros((0, 0), DType::F32, &self.device)?,
        };
        // The rows name images as the run found them, from the folder it
        // was started in: found from here through that folder.
        let launch = rows
            .iter()
            .map(|r| Path::new(&r.path))
            .find(|p| p.is_relative())
            .and_then(|probe| self.launch_folder(probe));
        let here = std::env::current_dir()
            .ok()
            .and_then(|here| std::fs::canonicalize(here).ok());
        for split in ["train", "eval"] {
            let listed: Vec<&IndexRow> = rows.iter().filter(|r| r.split == split).collect();
            let matrix = tensors.get(split);
            let count = matrix.map_or(Ok(0), |m| m.dim(0))?;
            if count != listed.len() {
                return Err(bad(
                    &csv_path,
                    format!(
                        "it lists {} `{split}` rows and `{}` holds {count}: they are from \
                         different runs; run the workflow again",
                        listed.len(),
                        tensors_path.shown()
                    ),
                ));
            }
            if let Some(m) = matrix {
                parts.push(m.clone());
            }
            let order = in_row_order(listed.iter().map(|r| r.row), count)
                .map_err(|m| bad(&csv_path, format!("its `{split}` rows: {m}")))?;
            for i in order {
                let path = PathBuf::from(&listed[i].path);
                index.paths.push(match &launch {
                    Some(launch) if path.is_relative() => from_here(launch, here.as_deref(), &path),
                    _ => path,
                });
                index.concepts.push(split_concepts(&listed[i].concepts));
            }
        }
        if parts.is_empty() {
            return Err(bad(&tensors_path, "the run embedded no image".into()));
        }
        index.matrix = Tensor::cat(&parts, 0)?;
        Ok(index)
    }

    /// The `k` nearest images of `index` to each query, by cosine similarity;
    /// a query that is itself in the index is not its own neighbour.
    pub fn search(
        &self,
        queries: &Embeddings,
        index: &Index,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, RunError> {
        let Some(q) = self.matrix(queries)? else {
            return Ok(Vec::new());
        };
        if let (Some(a), Some(b)) = (&index.model, &queries.model) {
            if a != b {
                return Err(RunError::Unsupported(format!(
                    "the index was embedded by another model ({a}) than the queries ({b}): \
                     their vectors cannot be compared; embed the index again with this model"
                )));
            }
        }
        if index.matrix.dim(1)? != queries.dim {
            return Err(RunError::Unsupported(format!(
                "the index holds {}-long embeddings and the queries are {}-long: they come from \
                 different models",
                index.matrix.dim(1)?,
                queries.dim
            )));
        }
        // Rows by file name; a query is a row when both lead to the same
        // file, or (a row's path relative to wherever its run was started,
        // which opens nothing from here) when the query's full path ends
        // with the row's.
        let mut by_name: HashMap<&std::ffi::OsStr, Vec<usize>> = HashMap::new();
        for (i, p) in index.paths.iter().enumerate() {
            if let Some(name) = p.file_name() {
                by_name.entry(name).or_default().push(i);
            }
        }
        // Else (a query named through a link or a hard link) rows by file,
        // looked up once, only when some query is not found by name.
        let mut by_file: Option<HashMap<FileId, usize>> = None;
        let own: Vec<Option<usize>> = queries
            .paths
            .iter()
            .map(|q| {
                let full = same_file(q);
                let named = by_name.get(q.file_name()?).and_then(|rows| {
                    rows.iter().copied().find(|&r| {
                        let p = &index.paths[r];
                        *p == *q
                            || same_file(p) == full
                            || (p.is_relative()
                                && !p.exists()
                                && full.ends_with(crate::check::normalize(p)))
                    })
                });
                named.or_else(|| {
                    let rows = by_file.get_or_insert_with(|| {
                        let mut rows = HashMap::new();
                        for (i, p) in index.paths.iter().enumerate() {
                            rows.entry(file_id(p)).or_insert(i);
                        }
                        rows
                    });
                    // (Only by device and inode: paths were compared above.)
                    let id = file_id(q);
                    match id {
                        FileId::Path(_) => None,
                        #[allow(unreachable_patterns)]
                        _ => rows.get(&id).copied(),
                    }
                })
            })
            .collect();
        let exclude = |row: usize| own.get(row).copied().flatten();
        let among = index.matrix.to_device(q.device())?;
        let found = crate::steps::search::search(&q, &among, k, &exclude)?;
        Ok(found
            .into_iter()
            .map(|neighbours| {
                neighbours
                    .into_iter()
                    .map(|(row, score)| Hit {
                        path: index.paths[row as usize].clone(),
                        concepts: index.concepts[row as usize].clone(),
                        // Rounding can take a cosine a hair past 1.
                        score: score.clamp(-1.0, 1.0),
                    })
                    .collect()
            })
            .collect())
    }

    fn matrix(&self, e: &Embeddings) -> Result<Option<Tensor>, RunError> {
        if e.paths.is_empty() {
            return Ok(None);
        }
        Ok(Some(Tensor::from_slice(
            &e.values,
            (e.paths.len(), e.dim),
            &self.device,
        )?))
    }
}

/// Decoded images embedded in one forward pass.
const EMBED_BATCH: usize = 32;

/// The lines of an index in the order of their `row` numbers, which must
/// be 0 to `rows - 1`, each once (a sorted or edited index still names the
/// right vector).
fn in_row_order(
    rows_listed: impl Iterator<Item = usize>,
    rows: usize,
) -> Result<Vec<usize>, String> {
    let mut order = vec![usize::MAX; rows];
    for (line, row) in rows_listed.enumerate() {
        match order.get_mut(row) {
            Some(slot) if *slot == usize::MAX => *slot = line,
            Some(_) => return Err(format!("row {row} is listed twice")),
            None => {
                return Err(format!(
                    "row {row} is listed, and the vectors have rows 0 to {}",
                    rows.saturating_sub(1)
                ))
            }
        }
    }
    match order.iter().position(|&l| l == usize::MAX) {
        Some(row) => Err(format!("row {row} is not listed")),
        None => Ok(order),
    }
}

/// The identity ([`Model::identity`]) of the model a run folder holds,
/// as opening it would give: what a step records beside what it derives
/// from the model's embeddings.
pub(crate) fn identity_of(folder: &Path) -> Result<String, RunError> {
    let (base, _, _) = crate::check::open_model(folder).map_err(|message| RunError::RunFile {
        path: folder.to_path_buf(),
        message,
    })?;
    let bytes = read_weights(&base)?;
    Ok(identity(&base, &bytes))
}

/// A digest naming a model: its workflow, and its weights and `model.json`
/// hashed (64-bit FNV-1a over the bytes, eight at a time: stable across
/// builds; read once when the model is opened).
fn identity(base: &BaseModel, weights: &[u8]) -> String {
    const PRIME: u64 = FNV_PRIME;
    let mut hash: u64 = FNV_OFFSET;
    let mut eat = |bytes: &[u8]| {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = (hash ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
        }
    };
    // The file was digested in reads of 1 MiB: a read's last piece under 8
    // bytes was padded alone. Reads from a file are whole until its end, so
    // only the last piece of the file can be short.
    for block in weights.chunks(1 << 20) {
        eat(block);
    }
    eat(base.meta.to_json().as_bytes());
    format!("{} {hash:016x}", base.meta.workflow)
}

/// What tells one file from another: its device and inode where there are
/// (links, hard links and every spelling of a path lead to the same), else
/// its canonical path, else the path as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileId {
    #[cfg(unix)]
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_id(path: &Path) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(path) {
            return FileId::Inode(m.dev(), m.ino());
        }
    }
    FileId::Path(same_file(path))
}

/// The metadata of `wfrun embed`'s file that says where its relative image
/// paths start, from the index's folder.
const PATHS_FROM: &str = "paths_from";
/// The same folder as it was when `embed` ran (absolute, links resolved).
const LAUNCHED_IN: &str = "launched_in";

/// Folders a run may have been started in, one level down from where its
/// `output` climbed to: at most this many a level are tried.
const MAX_SIBLINGS: usize = 256;

/// The folders in `folder` (links to folders included), in name order, at
/// most [`MAX_SIBLINGS`].
fn subfolders(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .take(MAX_SIBLINGS)
        .collect();
    found.sort();
    found
}

/// `path`, relative to `launch`, as a path from `here` (the current folder,
/// canonical): relative (through `..` where it must) when the two share a
/// folder below the root, else absolute.
fn from_here(launch: &Path, here: Option<&Path>, path: &Path) -> PathBuf {
    let full = crate::check::normalize(&launch.join(path));
    let Some(here) = here else {
        return full;
    };
    let shared = full
        .components()
        .zip(here.components())
        .take_while(|(x, y)| x == y)
        .count();
    if shared < 2 || shared == full.components().count() {
        return full;
    }
    crate::paths::relative_to(here, &full)
}

/// A path's canonical form when it exists (so `./a.jpg` is `a.jpg`).
fn same_file(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row of `embeddings.csv`.
#[derive(Deserialize)]
struct IndexRow {
    split: String,
    row: usize,
    path: String,
    concepts: String,
}

fn read_index_csv(path: &Path) -> Result<Vec<IndexRow>, RunError> {
    let bad = |message: String| RunError::RunFile {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::Reader::from_path(path)
        .map_err(|e| bad(format!("cannot read the run's index of embeddings: {e}")))?;
    reader
        .deserialize()
        .map(|r| r.map_err(|e| bad(format!("not an index of embeddings: {e}"))))
        .collect()
}

/// 64-bit FNV-1a's starting value and multiplier, for the model's identity
/// and the index digest.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A digest of an index's rows (row number and path, in row order; 64-bit
/// FNV-1a), kept in the vectors' metadata.
struct PairDigest(u64);

impl PairDigest {
    fn new() -> PairDigest {
        PairDigest(FNV_OFFSET)
    }

    fn row(&mut self, row: usize, path: &str) {
        for b in row
            .to_string()
            .bytes()
            .chain([b'\t'])
            .chain(path.bytes())
            .chain([b'\n'])
        {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn text(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// An advisory lock on `folder` (Unix `flock`; `exclusive` for a writer,
/// shared for readers), held until dropped; `None` where it cannot be taken
/// (the work goes ahead unlocked).
fn folder_lock(folder: Option<&Path>, exclusive: bool) -> Option<std::fs::File> {
    let folder = folder
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = std::fs::File::open(folder).ok()?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an open descriptor this function owns.
        let how = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        if unsafe { libc::flock(file.as_raw_fd(), how) } != 0 {
            return None;
        }
    }
    Some(file)
}

/// Rewrites a safetensors file's header in place with its entries (and its
/// metadata's) in sorted order, the same length: safetensors writes the
/// metadata in hash order, so the same vectors gave files whose bytes
/// differed from one write to the next. A header that would not keep its
/// length (it always does) is left as written.
fn sort_header(path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, Write};
    fn sorted(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(
                    entries.into_iter().map(|(k, v)| (k, sorted(v))).collect(),
                )
            }
            other => other,
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_le_bytes(len)).map_err(std::io::Error::other)?;
    let mut header = vec![0u8; len];
    file.read_exact(&mut header)?;
    let value: serde_json::Value = serde_json::from_slice(&header)?;
    let mut text = serde_json::to_string(&sorted(value))?.into_bytes();
    if text.len() > len {
        return Ok(());
    }
    // safetensors pads the header with spaces to a multiple of 8 bytes.
    text.resize(len, b' ');
    file.seek(std::io::SeekFrom::Start(8))?;
    file.write_all(&text)
}

/// `a;b` as concept names.
fn split_concepts(text: &str) -> Vec<String> {
    text.split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A base model's weights file, read once: the network is built on its
/// tensors and the model's digest is taken from the same bytes.
///
/// The file is mapped rather than read, so that its bytes are the page
/// cache's and not a second copy in the process's own memory beside the
/// tensors (allocating that copy took a third of opening a model). wfrun
/// replaces a run's files by renaming a new file over them
/// ([`crate::atomic`]), which leaves a mapped file intact; where mapping
/// fails the file is read.
pub(super) fn read_weights(base: &BaseModel) -> Result<WeightsFile, RunError> {
    let bad = |e: std::io::Error| RunError::BaseModel {
        path: base.weights.clone(),
        message: format!("cannot read its weights: {e}"),
    };
    let file = std::fs::File::open(&base.weights).map_err(bad)?;
    // SAFETY: the mapping is read-only and lives as long as the bytes are
    // borrowed; see above for files changed while mapped.
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(map) => Ok(WeightsFile::Mapped(map)),
        Err(_) => std::fs::read(&base.weights)
            .map(WeightsFile::Read)
            .map_err(bad),
    }
}

/// Whether a safetensors file's bytes end before what its header describes:
/// `(have, need)`. `None` for a file whose header cannot be read, or that
/// is long enough.
fn cut_short(bytes: &[u8]) -> Option<(usize, u64)> {
    let have = bytes.len();
    let header = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header_end = 8u64.checked_add(header)?;
    let Some(text) = usize::try_from(header_end)
        .ok()
        .and_then(|end| bytes.get(8..end))
    else {
        return (header_end > have as u64).then_some((have, header_end));
    };
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(text).ok()?;
    let data_end = entries
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let need = header_end.checked_add(data_end)?;
    (need > have as u64).then_some((have, need))
}

/// The bytes of a weights file ([`read_weights`]).
pub(super) enum WeightsFile {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for WeightsFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WeightsFile::Mapped(map) => map,
            WeightsFile::Read(bytes) => bytes,
        }
    }
}

/// A weights file's tensors lent to a `VarBuilder`: the names the network
/// asks for that the file lacks are recorded in `missing` (and stand in as
/// zeros), so that all of them can be named at once.
struct Lent<'a> {
    tensors: &'a HashMap<String, Tensor>,
    missing: &'a std::sync::Mutex<Vec<String>>,
}

impl candle_nn::var_builder::SimpleBackend for Lent<'_> {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) if t.shape() != &shape => Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: t.shape().clone(),
            }),
            Some(t) => t.to_device(device)?.to_dtype(dtype),
            None => {
                self.missing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(name.to_string());
                Tensor::zeros(shape, dtype, device)
            }
        }
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.tensors.get(name) {
            Some(t) => t.to_device(device)?.to_dtype(dtype),
            None => Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Builds the network a base model describes on its weights (`bytes`, the
/// file [`read_weights`] read). The network's variables are the file's
/// tensors themselves: no random draw, no copy into trainable variables
/// (both together took a tenth of a short `wfrun embed` with ResNet-101).
/// A tensor the network needs that the file lacks, or has in another shape,
/// is an error.
pub(super) fn load_net(
    base: &BaseModel,
    hyper: &Hyper,
    device: &Device,
    bytes: &[u8],
) -> Result<(NetConfig, HashMap<String, Tensor>, TemplateNet), RunError> {
    let bad = |message: String| RunError::BaseModel {
        path: base.weights.clone(),
        message,
    };
    let mut tensors = candle_core::safetensors::load_buffer(bytes, device).map_err(|e| {
        bad(match cut_short(bytes) {
            Some((have, need)) => format!(
                "the file is cut short ({have} of the {need} bytes its header describes: a copy \
                 or a write that stopped part way); copy it again, or train the run again"
            ),
            None => format!(
                "cannot read its weights: {e} (the file is damaged, or not a safetensors file)"
            ),
        })
    })?;
    for t in tensors.values_mut() {
        *t = t.to_dtype(DType::F32)?;
    }
    let missing = std::sync::Mutex::new(Vec::new());
    let cfg = NetConfig::for_hyper(hyper);
    let net = {
        let vb = VarBuilder::from_backend(
            Box::new(Lent {
                tensors: &tensors,
                missing: &missing,
            }),
            DType::F32,
            device.clone(),
        );
        TemplateNet::new(&cfg, base.meta.concepts.len().max(1), &vb).map_err(|e| {
            bad(format!(
                "its weights do not fit the network `{}` describes ({e})",
                base.meta_path.shown()
            ))
        })?
    };
    let mut missing = missing
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(bad(format!(
            "its weights do not fit the network `{}` describes: {} tensors are missing ({}{})",
            base.meta_path.shown(),
            missing.len(),
            missing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() > 3 { ", …" } else { "" }
        )));
    }
    Ok((cfg, tensors, net))
}

impl Inputs {
    /// The images named by `paths`: image files; folders (their images, and
    /// those of concept sub-folders with the sub-folder's name as their
    /// concept); manifests (`.csv`, `.json`, `.jsonl`) with their concepts.
    /// Walked as a run walks its data (bounded, hidden entries skipped).
    /// An image named more than once (a folder and a file in it, a link) is
    /// taken once, at its first place, with the concepts of every mention.
    pub fn gather(paths: &[PathBuf]) -> Result<Inputs, RunError> {
        let mut inputs = Inputs::default();
        let mut seen = HashMap::new();
        let mut push = |inputs: &mut Inputs, path: PathBuf, concepts: Vec<String>| {
            let key = file_id(&path);
            match seen.get(&key) {
                Some(&row) => {
                    let known: &mut Vec<String> = &mut inputs.concepts[row];
                    for c in concepts {
                        if !known.contains(&c) {
                            known.push(c);
                        }
                    }
                    inputs.repeated += 1;
                }
                None => {
                    seen.insert(key, inputs.paths.len());
                    inputs.paths.push(path);
                    inputs.concepts.push(concepts);
                }
            }
        };
        for path in paths {
            if path.is_dir() {
                let (folders, loose) = list_folder(path)?;
                if loose.is_empty() && folders.iter().all(|f| f.images.is_empty()) {
                    inputs.empty.push(path.clone());
                }
                for p in loose {
                    push(&mut inputs, p, Vec::new());
                }
                for f in folders {
                    for p in f.images {
                        push(&mut inputs, p, vec![f.name.clone()]);
                    }
                }
            } else if is_manifest(path) {
                let data = Dataset::read_image_list(path)?;
                for s in data.samples {
                    let names = s.concepts.iter().map(|&c| data.concepts[c].clone());
                    push(&mut inputs, s.path, names.collect());
                }
            } else if path.exists() {
                push(&mut inputs, path.clone(), Vec::new());
            } else {
                return Err(RunError::Data(crate::data::DataError::Io {
                    path: path.clone(),
                    error: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file or folder",
                    ),
                }));
            }
        }
        Ok(inputs)
    }

    /// An error naming every image whose path is not UTF-8 text, when
    /// their paths are to be kept in a file (`wfrun embed`'s index, which
    /// holds text); shown on a terminal, such a path is shown lossily.
    pub fn named_in_text(&self) -> Result<(), RunError> {
        Ok(crate::data::paths_in_text(self.paths.iter())?)
    }
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["csv", "json", "jsonl"].contains(&e.to_ascii_lowercase().as_str()))
}

impl Embeddings {
    /// A run's embedded images (`matrix`: their rows), concepts by name.
    pub(crate) fn of_run(
        e: &Embedded,
        matrix: &Tensor,
        concept_names: &[String],
    ) -> Result<Embeddings, RunError> {
        Ok(Embeddings {
            paths: e.paths.clone(),
            concepts: e
                .concepts
                .iter()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|&c| concept_names.get(c).cloned())
                        .collect()
                })
                .collect(),
            dim: matrix.dim(1)?,
            values: matrix.flatten_all()?.to_vec1()?,
            bad: Vec::new(),
            model: None,
        })
    }

    /// Writes the vectors to `path` (safetensors, one `embeddings` matrix of
    /// `rows × dim`) and their index beside it (`path` with `.csv`: row,
    /// path, concepts `;`-separated), each atomically; returns the index's
    /// path. The run's `embeddings.safetensors` has the same layout per split.
    pub fn save(&self, path: &Path) -> Result<PathBuf, RunError> {
        let index_path = path.with_extension("csv");
        if index_path == path {
            return Err(RunError::Unsupported(format!(
                "`{}`: name the embeddings file `.safetensors`; its index goes beside it as `.csv`",
                path.shown()
            )));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::folder::create(parent)?;
        }
        let matrix = Tensor::from_slice(&self.values, (self.len(), self.dim), &Device::Cpu)?;
        let tensors: HashMap<String, Tensor> =
            [("embeddings".to_string(), matrix)].into_iter().collect();
        let mut index = String::from("row,path,concepts\n");
        let mut digest = PairDigest::new();
        for (row, (p, cs)) in self.paths.iter().zip(&self.concepts).enumerate() {
            let shown = p.display().to_string();
            digest.row(row, &shown);
            index.push_str(&format!(
                "{row},{},{}\n",
                metrics::csv_field(&shown),
                metrics::csv_field(&cs.join(";"))
            ));
        }
        let mut metadata = HashMap::from([
            ("wfrun".to_string(), "embeddings".to_string()),
            // Names the index written with these vectors (its rows and
            // paths), so a pair from two writers is caught when read.
            ("index_rows".to_string(), digest.text()),
        ]);
        if let Some(m) = &self.model {
            metadata.insert("model".to_string(), m.clone());
        }
        // The folder the relative paths start from, said from the index's
        // own folder (both with their links resolved) and as it is: a
        // search from anywhere names them from there, the two moved
        // together or the index alone.
        let here = std::env::current_dir()
            .ok()
            .and_then(|h| std::fs::canonicalize(h).ok());
        if let Some(here) = &here {
            let parent = index_path.parent().filter(|p| !p.as_os_str().is_empty());
            let folder = std::fs::canonicalize(parent.unwrap_or(Path::new(".")));
            if let Ok(folder) = folder {
                if let Some(from) = crate::paths::relative_to(&folder, here).to_str() {
                    metadata.insert(PATHS_FROM.to_string(), from.to_string());
                }
            }
            if let Some(here) = here.to_str() {
                metadata.insert(LAUNCHED_IN.to_string(), here.to_string());
            }
        }
        // Two writers of one pair take turns, so the pair left is one
        // writer's whole; readers wait for a writer's pair to be complete.
        let _turn = folder_lock(index_path.parent(), true);
        crate::atomic::replace(path, |tmp| {
            safetensors::serialize_to_file(&tensors, Some(metadata), tmp)
                .map_err(std::io::Error::other)?;
            sort_header(tmp)
        })
        .map_err(RunError::io(path))?;
        super::folder::write(&index_path, index.as_bytes())?;
        Ok(index_path)
    }

    /// Reads what [`Embeddings::save`] wrote (`wfrun embed`'s output), its
    /// paths as written (relative ones from the folder `embed` ran in;
    /// [`Index::load`] names them from the current folder).
    pub fn load(path: &Path) -> Result<Embeddings, RunError> {
        Ok(Embeddings::read(path)?.0)
    }

    /// [`Embeddings::load`], and the file's metadata.
    fn read(path: &Path) -> Result<(Embeddings, HashMap<String, String>), RunError> {
        let bad = |p: &Path, message: String| RunError::RunFile {
            path: p.to_path_buf(),
            message,
        };
        // A pipe would block, a device never end: embeddings are files.
        for p in [path.to_path_buf(), path.with_extension("csv")] {
            if std::fs::metadata(&p).is_ok_and(|m| !m.is_file()) {
                return Err(bad(&p, "not a regular file: embeddings and their index are files (`wfrun embed` writes them)".into()));
            }
        }
        // A writer of this pair finishes both files first.
        let _turn = folder_lock(path.parent(), false);
        // Read once: the tensors and the metadata come from the same bytes.
        let bytes =
            std::fs::read(path).map_err(|e| bad(path, format!("cannot read embeddings: {e}")))?;
        // A safetensors reader's own words ("incomplete metadata") say
        // little: what it means for this file is said beside them.
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            let folder = path.parent().unwrap_or(Path::new("."));
            let again = if ["model.json", "plan.json"]
                .iter()
                .any(|f| folder.join(f).is_file())
            {
                // A run's own file: `embed` may not write there.
                "a run's own embeddings are written again by its run (`--fresh`); \
                 `wfrun embed RUN IMAGES -o FILE` writes an index of its own elsewhere"
                    .to_string()
            } else if path.extension().is_none_or(|e| e != "safetensors") {
                // `embed` writes `X.safetensors` and its index `X.csv`.
                format!(
                    "name the `.safetensors` file `wfrun embed` wrote (`{}`)",
                    path.with_extension("safetensors").shown()
                )
            } else {
                format!(
                    "write it again with `wfrun embed RUN IMAGES -o {}`",
                    path.shown()
                )
            };
            bad(
                path,
                format!(
                    "cannot read embeddings ({e}): the file is cut short or is not one \
                     wfrun wrote; {again}"
                ),
            )
        })?;
        let metadata = safetensors::SafeTensors::read_metadata(&bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default();
        let matrix = tensors.get("embeddings").ok_or_else(|| {
            let run = tensors.contains_key("train") || tensors.contains_key("eval");
            bad(
                path,
                if run {
                    "these are a run's own embeddings (its `train` and `eval` rows), not \
                     `wfrun embed`'s: search the run itself, without `--index`"
                        .into()
                } else {
                    "it holds no `embeddings` matrix (`wfrun embed` writes one)".into()
                },
            )
        })?;
        let (rows, dim) = matrix
            .dims2()
            .map_err(|_| bad(path, "`embeddings` is not a matrix".into()))?;
        let index_path = path.with_extension("csv");
        #[derive(Deserialize)]
        struct Row {
            row: usize,
            path: String,
            concepts: String,
        }
        let mut reader = csv::Reader::from_path(&index_path).map_err(|e| {
            bad(
                &index_path,
                format!("cannot read the index of `{}`: {e}", path.shown()),
            )
        })?;
        let listed: Vec<Row> = reader
            .deserialize()
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&index_path, format!("not an index of embeddings: {e}")))?;
        if listed.len() != rows {
            return Err(bad(
                &index_path,
                format!(
                    "it lists {} images and `{}` holds {rows} rows: they were not written together",
                    listed.len(),
                    path.shown()
                ),
            ));
        }
        let order =
            in_row_order(listed.iter().map(|r| r.row), rows).map_err(|m| bad(&index_path, m))?;
        // Files written before the digest have none to compare.
        if let Some(written) = metadata.get("index_rows") {
            let mut digest = PairDigest::new();
            for &i in &order {
                digest.row(listed[i].row, &listed[i].path);
            }
            if &digest.text() != written {
                return Err(bad(
                    &index_path,
                    format!(
                        "its rows are not those written with `{}` (another `wfrun embed` wrote one of \
                         the two, or a path in it was changed): embed the images again",
                        path.shown()
                    ),
                ));
            }
        }
        let model = metadata.get("model").cloned();
        let embeddings = Embeddings {
            paths: order
                .iter()
                .map(|&i| PathBuf::from(&listed[i].path))
                .collect(),
            concepts: order
                .iter()
                .map(|&i| split_concepts(&listed[i].concepts))
                .collect(),
            dim,
            values: matrix.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            bad: Vec::new(),
            model,
        };
        Ok((embeddings, metadata))
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_without_a_model_says_why_and_what_gives_it_one() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let said = |plan: &str| {
            std::fs::write(run.join("plan.json"), plan).unwrap();
            no_model_yet(run)
        };
        let base = said(
            r#"{"workflow": "tagged", "base": {"weights": "runs/trained/model.safetensors"}}"#,
        );
        assert!(
            base.contains("embeds with a base model") && base.contains("`runs/trained`"),
            "{base}"
        );
        let file = said(r#"{"workflow": "tagged", "base": {"weights": "models/net.safetensors"}}"#);
        assert!(file.contains("`models/net.safetensors`"), "{file}");
        let early = said(r#"{"workflow": "w", "base": null}"#);
        assert!(
            early.contains("before its first epoch ended") && early.contains("`w`"),
            "{early}"
        );
        // A sweep's trial, killed: the sweep resumes it.
        let trial = said(r#"{"workflow": "tuned/trial-003", "base": null}"#);
        assert!(trial.contains("the sweep `tuned`"), "{trial}");
        std::fs::write(run.join("checkpoint.safetensors"), b"").unwrap();
        let stopped = said(r#"{"workflow": "w", "base": null}"#);
        assert!(
            stopped.contains("stopped before it finished") && stopped.contains("--resume"),
            "{stopped}"
        );
        // A lock file no process holds is not a run training.
        #[cfg(unix)]
        {
            std::fs::write(run.join(super::super::LOCK), "4194999\n").unwrap();
            assert_eq!(no_model_yet(run), stopped);
        }
        // A trial the sweep stopped early: the sweep's best is the model.
        std::fs::write(run.join(super::super::sweep::TRIAL_FILE), "{}").unwrap();
        let ended = no_model_yet(run);
        assert!(
            ended.contains("stopped early or diverged") && ended.contains("`best`"),
            "{ended}"
        );
    }
}
