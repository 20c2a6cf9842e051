//! A template's network as an ONNX model, in evaluation mode.
//!
//! The graph is what [`TemplateNet::embed`] and [`TemplateNet::logits`]
//! compute: the exporter walks the backbone's own forward pass
//! ([`crate::models::walk::Ops`]) and writes each layer as ONNX nodes, so a
//! decision the network takes from its sizes (BN-Inception's reduction pools
//! on odd sizes) is taken here as it is in candle. Batch norm is folded into
//! the convolution before it, in f64, with the running statistics (what
//! wfrun's own evaluation kernels do): `W' = W · γ/√(σ² + ε)` per output
//! channel, `b' = β + (b − μ) · γ/√(σ² + ε)`.
//!
//! Input `images`: float32 `[batch, 3, S, S]`, `batch` a dynamic axis.
//! Outputs `embeddings` `[batch, D]` (`TemplateNet::embed`) and `scores`
//! `[batch, classes]` (softmax, or sigmoid for `logreg` classifiers, of the
//! logits). The preprocessing a caller must apply is in the model's metadata
//! properties (see [`onnx()`]).

use crate::paths::ShowPath;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use prost::Message;

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::data::images::{MEAN, STD};
use crate::models::layers::ConvBn;
use crate::models::pool::{Pool2d, PoolKind};
use crate::models::walk::Ops;
use crate::models::{BnInceptionConfig, HeadView, NetConfig, ResNetConfig, TemplateNet};

/// The operator set the graph is written for (every operator used has had
/// its present form since opset 13).
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`] (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// The most a protobuf message may hold (2 GiB − 1); readers refuse more.
pub const MAX_BYTES: u64 = i32::MAX as u64;

/// What the exported model says about itself beyond the network.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnnxMeta {
    /// The side of the square images the network takes (the workflow's `image_size`).
    pub image_size: usize,
    /// The workflow's template (`Clarifai_ResNext`, or a template narrowed from one).
    pub template: String,
    /// The concept of each score, in the order of the network's classes.
    pub concepts: Vec<String>,
    /// More metadata properties (a run's name, its seed, …), written after
    /// wfrun's own; a key may not repeat one of those.
    pub properties: Vec<(String, String)>,
}

/// What [`onnx()`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxSummary {
    /// The file's size.
    pub bytes: u64,
    /// Graph nodes.
    pub nodes: usize,
    /// Weights written (after folding).
    pub parameters: usize,
    /// The length of `embeddings`.
    pub embedding_size: usize,
    /// The length of `scores`.
    pub classes: usize,
}

/// Why a network was not exported.
#[derive(Debug)]
pub enum ExportError {
    /// The weights are not the network `NetConfig` describes (a tensor
    /// missing, or of another shape), or the metadata does not fit it.
    Network(String),
    /// The network holds something ONNX cannot express as wfrun computes it.
    Unsupported(String),
    /// The model would be larger than a protobuf message may be.
    TooLarge { path: PathBuf, bytes: u64 },
    /// The file could not be written.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::Network(m) => write!(f, "cannot export the network: {m}"),
            ExportError::Unsupported(m) => write!(f, "the network has no ONNX form: {m}"),
            ExportError::TooLarge { path, bytes } => write!(
                f,
                "cannot write `{}`: the model would take {bytes} bytes, more than the {MAX_BYTES} \
                 an ONNX protobuf may hold",
                path.shown()
            ),
            ExportError::Io { path, error } => {
                write!(f, "cannot write `{}`: {error}", path.shown())
            }
        }
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExportError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn network(e: impl fmt::Display) -> ExportError {
    ExportError::Network(e.to_string())
}

/// Writes the network `net_cfg` for `classes` concepts, with the trained
/// `weights` (as `models::weights::load` fills them), as an ONNX model at
/// `path` (atomically: a failure leaves no partial file).
///
/// The model's metadata properties say how to feed it: `image_size`, `mean`
/// and `std` (JSON arrays, per channel), `channel_order` `RGB`, `layout`
/// `NCHW`, `pixel_scale` `1/255`, `resize` (shorter side to `image_size`
/// with a triangle filter, then the centre square), and `template`,
/// `architecture`, `embedding_size`, `scores` (`softmax` or `sigmoid`),
/// `concepts` (a JSON array), `wfrun_version`, then `meta.properties`.
pub fn onnx(
    net_cfg: &NetConfig,
    classes: usize,
    weights: &VarMap,
    meta: &OnnxMeta,
    path: &Path,
) -> Result<OnnxSummary, ExportError> {
    onnx_from_tensors(net_cfg, classes, &tensors_of(weights), meta, path)
}

/// [`onnx()`] with the weights as tensors by name (a trained model's file).
pub fn onnx_from_tensors(
    net_cfg: &NetConfig,
    classes: usize,
    weights: &HashMap<String, Tensor>,
    meta: &OnnxMeta,
    path: &Path,
) -> Result<OnnxSummary, ExportError> {
    let (model, embedding_size) = build(net_cfg, classes, weights.clone(), meta)?;
    let bytes = model.encoded_len() as u64;
    fits(bytes, path)?;
    let graph = model.graph.as_ref();
    let summary = OnnxSummary {
        bytes,
        nodes: graph.map_or(0, |g| g.node.len()),
        parameters: graph.map_or(0, |g| {
            g.initializer
                .iter()
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum()
        }),
        embedding_size,
        classes,
    };
    let encoded = model.encode_to_vec();
    drop(model);
    crate::atomic::write(path, &encoded).map_err(|error| ExportError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(summary)
}

/// Refuses a model over protobuf's limit (ResNet-101 takes 171 MB).
fn fits(bytes: u64, path: &Path) -> Result<(), ExportError> {
    if bytes > MAX_BYTES {
        return Err(ExportError::TooLarge {
            path: path.to_path_buf(),
            bytes,
        });
    }
    Ok(())
}

/// The model [`onnx()`] writes, in memory.
pub fn model(
    net_cfg: &NetConfig,
    classes: usize,
    weights: &VarMap,
    meta: &OnnxMeta,
) -> Result<ModelProto, ExportError> {
    Ok(build(net_cfg, classes, tensors_of(weights), meta)?.0)
}

/// A `VarMap`'s tensors by name.
fn tensors_of(weights: &VarMap) -> HashMap<String, Tensor> {
    weights
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect()
}

/// The model and the length of its embeddings.
fn build(
    net_cfg: &NetConfig,
    classes: usize,
    tensors: HashMap<String, Tensor>,
    meta: &OnnxMeta,
) -> Result<(ModelProto, usize), ExportError> {
    if meta.concepts.len() != classes {
        return Err(ExportError::Network(format!(
            "the network has {classes} classes but {} concept names were given",
            meta.concepts.len()
        )));
    }
    if meta.image_size == 0 {
        return Err(ExportError::Network("the image size is 0".into()));
    }
    // The network built on the given tensors: a tensor missing or of another
    // shape is an error here (built on a `VarMap` itself, it would be
    // created with fresh random values). f64, for folding.
    let vb = VarBuilder::from_tensors(tensors, DType::F64, &Device::Cpu);
    let net = TemplateNet::new(net_cfg, classes, &vb).map_err(network)?;

    let s = meta.image_size;
    let mut g = Graph::default();
    let images = Value {
        name: "images".into(),
        shape: Shape::Map { c: 3, h: s, w: s },
    };
    let features = net
        .walk_backbone(&mut g, &images)
        .map_err(|e| match g.unsupported.take() {
            Some(m) => ExportError::Unsupported(m),
            None => network(e),
        })?;
    let (embedding_size, scores_kind) = head(&mut g, net.head(), &features, classes)?;

    let batch = || tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam(
            "batch".into(),
        )),
        denotation: None,
    };
    let fixed = |v: usize| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(v as i64)),
        denotation: None,
    };
    let value_info =
        |name: &str, dims: Vec<tensor_shape_proto::Dimension>, doc: &str| ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(TensorShapeProto { dim: dims }),
                })),
                denotation: None,
            }),
            doc_string: Some(doc.into()),
            metadata_props: Vec::new(),
        };
    let scores_doc = match scores_kind {
        Scores::Softmax => "softmax of the logits: one probability per concept, summing to 1",
        Scores::Sigmoid => "sigmoid of each logit: one independent probability per concept",
    };
    let graph = GraphProto {
        node: g.nodes,
        name: Some(format!("wfrun {}", architecture(net_cfg))),
        initializer: g.initializers,
        input: vec![value_info(
            "images",
            vec![batch(), fixed(3), fixed(s), fixed(s)],
            "RGB images, channels first, (pixel / 255 - mean) / std per channel",
        )],
        output: vec![
            value_info(
                "embeddings",
                vec![batch(), fixed(embedding_size)],
                "the template's embedding (TemplateNet::embed)",
            ),
            value_info("scores", vec![batch(), fixed(classes)], scores_doc),
        ],
        ..Default::default()
    };

    // The constants as written in the source (an f32's shortest form), not widened to f64.
    let per_channel = |v: [f32; 3]| format!("[{},{},{}]", v[0], v[1], v[2]);
    let mut props: Vec<(String, String)> = vec![
        ("image_size".into(), s.to_string()),
        ("mean".into(), per_channel(MEAN)),
        ("std".into(), per_channel(STD)),
        ("channel_order".into(), "RGB".into()),
        ("layout".into(), "NCHW".into()),
        ("pixel_scale".into(), "1/255".into()),
        (
            "resize".into(),
            format!(
                "shorter side to {s} px with a triangle (bilinear) filter, aspect kept, \
                 then the centre {s}x{s} crop"
            ),
        ),
        (
            "normalize".into(),
            "(pixel * pixel_scale - mean[c]) / std[c] for each channel c".into(),
        ),
        ("template".into(), meta.template.clone()),
        ("architecture".into(), architecture(net_cfg)),
        ("embedding_size".into(), embedding_size.to_string()),
        ("scores".into(), scores_kind.name().into()),
        (
            "concepts".into(),
            serde_json::Value::from(meta.concepts.clone()).to_string(),
        ),
        ("wfrun_version".into(), env!("CARGO_PKG_VERSION").into()),
    ];
    for (key, value) in &meta.properties {
        if props.iter().any(|(k, _)| k == key) {
            return Err(ExportError::Network(format!(
                "the metadata property `{key}` is written by wfrun itself"
            )));
        }
        props.push((key.clone(), value.clone()));
    }
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("wfrun".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "{} ({}) exported by wfrun. Input `images`: float32 [batch, 3, {s}, {s}], RGB, \
             NCHW, each image's shorter side resized to {s} px (triangle filter) and the \
             centre {s}x{s} cropped, scaled to [0, 1], minus mean {:?}, divided by std {:?}. \
             Outputs: `embeddings` [batch, {embedding_size}], `scores` [batch, {classes}] \
             ({}).",
            meta.template,
            architecture(net_cfg),
            MEAN,
            STD,
            scores_kind.name()
        )),
        graph: Some(graph),
        metadata_props: props
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key),
                value: Some(value),
            })
            .collect(),
        ..Default::default()
    };
    Ok((model, embedding_size))
}

/// The network's name: the published one, or its widths when built small.
pub fn architecture(cfg: &NetConfig) -> String {
    let resnet = |b: &ResNetConfig| {
        if *b == ResNetConfig::resnet101() {
            "resnet101".to_string()
        } else if *b == ResNetConfig::resnext50_32x4d() {
            "resnext50_32x4d".to_string()
        } else {
            format!(
                "resnet(layers {:?}, groups {}, width_per_group {}, base {})",
                b.layers, b.groups, b.width_per_group, b.base
            )
        }
    };
    match cfg {
        NetConfig::AngularMargin {
            backbone,
            embeddings_size,
            loss,
        } => format!(
            "{} + linear {embeddings_size} + L2 normalisation (angular margin head, scale {})",
            resnet(backbone),
            loss.scale
        ),
        NetConfig::BnInception { backbone, .. } => {
            if *backbone == BnInceptionConfig::published() {
                "bn_inception".into()
            } else {
                format!("bn_inception(width / {})", backbone.width_div)
            }
        }
        NetConfig::ResNext { backbone, .. } => resnet(backbone),
    }
}

#[derive(Clone, Copy, Debug)]
enum Scores {
    Softmax,
    Sigmoid,
}

impl Scores {
    fn name(self) -> &'static str {
        match self {
            Scores::Softmax => "softmax",
            Scores::Sigmoid => "sigmoid",
        }
    }
}

/// The head after the pooled features: `embeddings` and `scores`; returns
/// the embedding's length and the scores' kind.
fn head(
    g: &mut Graph,
    head: HeadView,
    features: &Value,
    classes: usize,
) -> Result<(usize, Scores), ExportError> {
    let width = features.width()?;
    match head {
        HeadView::AngularMargin {
            embedding,
            class_weights,
            scale,
        } => {
            let projected = g.linear(features, embedding, "embedding")?;
            let size = projected.width()?;
            let normalised = g.l2_normalize(&projected, "embeddings")?;
            // s · cos θ = e · (s · W / ‖W‖)ᵀ, the class weights normalised here.
            let (rows, cols) = class_weights.dims2().map_err(network)?;
            if (rows, cols) != (classes, size) {
                return Err(ExportError::Network(format!(
                    "the class weights are {rows} × {cols}, not {classes} × {size}"
                )));
            }
            let w = host(class_weights)?;
            let mut scaled_t = vec![0f64; rows * cols];
            for r in 0..rows {
                let row = &w[r * cols..(r + 1) * cols];
                let norm = (row.iter().map(|v| v * v).sum::<f64>() + 1e-12).sqrt();
                for (c, v) in row.iter().enumerate() {
                    scaled_t[c * rows + r] = scale * v / norm;
                }
            }
            let weights = g.constant(
                "arcface.weight.normalised_scaled_t",
                &[cols, rows],
                &scaled_t,
            );
            let logits = g.node("MatMul", &[&normalised.name, &weights], vec![], "logits");
            g.node("Softmax", &[&logits], vec![attr_int("axis", 1)], "scores");
            Ok((size, Scores::Softmax))
        }
        HeadView::Classifier { fc, logreg } => {
            g.node("Identity", &[&features.name], vec![], "embeddings");
            let logits = g.linear(features, fc, "logits")?;
            if logits.width()? != classes {
                return Err(ExportError::Network(format!(
                    "the classifier has {} outputs, not {classes}",
                    logits.width()?
                )));
            }
            if logreg {
                g.node("Sigmoid", &[&logits.name], vec![], "scores");
                Ok((width, Scores::Sigmoid))
            } else {
                g.node(
                    "Softmax",
                    &[&logits.name],
                    vec![attr_int("axis", 1)],
                    "scores",
                );
                Ok((width, Scores::Softmax))
            }
        }
    }
}

fn host(t: &Tensor) -> Result<Vec<f64>, ExportError> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(network)
}

/// An activation's shape without the batch: a feature map or a vector.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Map { c: usize, h: usize, w: usize },
    Flat(usize),
}

/// A value in the graph: its name and shape.
#[derive(Clone, Debug)]
struct Value {
    name: String,
    shape: Shape,
}

impl Value {
    fn map(&self) -> candle_core::Result<(usize, usize, usize)> {
        match self.shape {
            Shape::Map { c, h, w } => Ok((c, h, w)),
            Shape::Flat(_) => candle_core::bail!("`{}` is not a feature map", self.name),
        }
    }

    fn width(&self) -> Result<usize, ExportError> {
        match self.shape {
            Shape::Flat(d) => Ok(d),
            Shape::Map { .. } => Err(ExportError::Network(format!(
                "`{}` is a feature map, not features",
                self.name
            ))),
        }
    }
}

/// The graph as it is written: nodes in order, weights, and the names used.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counts: HashMap<String, usize>,
    /// Why the walk stopped, when a layer has no ONNX form.
    unsupported: Option<String>,
}

fn attr_ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

impl Graph {
    /// A fresh name from `base` (`base`, `base_1`, …).
    fn fresh(&mut self, base: &str) -> String {
        let n = self.counts.entry(base.to_string()).or_insert(0);
        let name = if *n == 0 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        };
        *n += 1;
        name
    }

    /// A node with one output named from `out`; returns the output's name.
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        out: &str,
    ) -> String {
        let output = self.fresh(out);
        let name = self.fresh(&format!("{op}_{output}"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(name),
            op_type: Some(op.into()),
            attribute,
            ..Default::default()
        });
        output
    }

    /// A float32 weight; returns its name.
    fn constant(&mut self, base: &str, dims: &[usize], values: &[f64]) -> String {
        let name = self.fresh(base);
        let mut raw = Vec::with_capacity(values.len() * 4);
        for &v in values {
            raw.extend_from_slice(&(v as f32).to_le_bytes());
        }
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Float as i32),
            name: Some(name.clone()),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// `x · Wᵀ + b`, candle's `Linear`.
    fn linear(&mut self, x: &Value, layer: &Linear, out: &str) -> Result<Value, ExportError> {
        let width = x.width()?;
        let (rows, cols) = layer.weight().dims2().map_err(network)?;
        if cols != width {
            return Err(ExportError::Network(format!(
                "a linear layer takes {cols} features, not {width}"
            )));
        }
        let w = self.constant(
            &format!("{out}.weight"),
            &[rows, cols],
            &host(layer.weight())?,
        );
        let mut inputs = vec![x.name.clone(), w];
        if let Some(b) = layer.bias() {
            inputs.push(self.constant(&format!("{out}.bias"), &[rows], &host(b)?));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let name = self.node("Gemm", &inputs, vec![attr_int("transB", 1)], out);
        Ok(Value {
            name,
            shape: Shape::Flat(rows),
        })
    }

    /// `x / √(Σ x² + 1e-12)` along the features, `loss::l2_normalize`.
    fn l2_normalize(&mut self, x: &Value, out: &str) -> Result<Value, ExportError> {
        let width = x.width()?;
        let squares = self.node("Mul", &[&x.name, &x.name], vec![], "squares");
        let axes = self.fresh("l2.axes");
        self.initializers.push(TensorProto {
            dims: vec![1],
            data_type: Some(DataType::Int64 as i32),
            name: Some(axes.clone()),
            raw_data: Some((-1i64).to_le_bytes().to_vec()),
            ..Default::default()
        });
        let sum = self.node(
            "ReduceSum",
            &[&squares, &axes],
            vec![attr_int("keepdims", 1)],
            "sum_squares",
        );
        let eps = self.constant("l2.eps", &[], &[1e-12]);
        let padded = self.node("Add", &[&sum, &eps], vec![], "sum_squares_eps");
        let norm = self.node("Sqrt", &[&padded], vec![], "norm");
        let name = self.node("Div", &[&x.name, &norm], vec![], out);
        Ok(Value {
            name,
            shape: Shape::Flat(width),
        })
    }

    fn unsupported(&mut self, message: String) -> candle_core::Error {
        self.unsupported = Some(message.clone());
        candle_core::Error::Msg(message)
    }
}

impl Ops for Graph {
    type Value = Value;

    fn enter(&mut self, x: &Value) -> candle_core::Result<Value> {
        // ONNX's activations are (N, C, H, W) throughout.
        Ok(x.clone())
    }

    fn conv_bn(
        &mut self,
        layer: &ConvBn,
        x: &Value,
        residual: Option<&Value>,
    ) -> candle_core::Result<Value> {
        let f = layer.folded()?;
        let (c_in, h, w) = x.map()?;
        let (out, per_group, kh, kw) = f.weight.dims4()?;
        if per_group * f.groups != c_in {
            candle_core::bail!(
                "a convolution over {} channels meets {c_in}",
                per_group * f.groups
            );
        }
        if h + 2 * f.padding < kh || w + 2 * f.padding < kw {
            candle_core::bail!(
                "a {kh}x{kw} convolution does not fit a {h}x{w} input; use a larger image_size"
            );
        }
        let oh = (h + 2 * f.padding - kh) / f.stride + 1;
        let ow = (w + 2 * f.padding - kw) / f.stride + 1;
        // Batch norm folded into the weights and the bias, in f64.
        let weights = f
            .weight
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let per_out = weights.len() / out;
        let folded: Vec<f64> = weights
            .iter()
            .enumerate()
            .map(|(i, v)| v * f.scale[i / per_out])
            .collect();
        let w_name = self.constant(
            &format!("{}.weight", f.name),
            &[out, per_group, kh, kw],
            &folded,
        );
        let b_name = self.constant(&format!("{}.bias", f.name), &[out], &f.shift);
        let attrs = vec![
            attr_ints("kernel_shape", &[kh, kw]),
            attr_ints("strides", &[f.stride, f.stride]),
            attr_ints("pads", &[f.padding; 4]),
            attr_ints("dilations", &[1, 1]),
            attr_int("group", f.groups as i64),
        ];
        let mut y = self.node("Conv", &[&x.name, &w_name, &b_name], attrs, &f.name);
        let shape = Shape::Map {
            c: out,
            h: oh,
            w: ow,
        };
        if let Some(r) = residual {
            if r.shape != shape {
                candle_core::bail!(
                    "a residual of shape {:?} meets a convolution's {shape:?}",
                    r.shape
                );
            }
            y = self.node(
                "Add",
                &[&y, &r.name],
                vec![],
                &format!("{}.residual", f.name),
            );
        }
        if f.relu {
            y = self.node("Relu", &[&y], vec![], &format!("{}.relu", f.name));
        }
        Ok(Value { name: y, shape })
    }

    fn pool(&mut self, pool: &Pool2d, x: &Value) -> candle_core::Result<Value> {
        let (c, h, w) = x.map()?;
        // PyTorch's sizes (ceil mode included) with ONNX's floor rule: a
        // window that ceil mode adds becomes extra padding at the end.
        let (oh, ow) = pool.out_dims(h, w)?;
        let end_pad = |len: usize, out: usize, k: usize, s: usize, p: usize| -> usize {
            ((out - 1) * s + k).saturating_sub(len + p).max(p)
        };
        let (ph, pw) = pool.padding;
        let (sh, sw) = pool.stride;
        let (kh, kw) = pool.kernel;
        let (eh, ew) = (end_pad(h, oh, kh, sh, ph), end_pad(w, ow, kw, sw, pw));
        if (h + ph + eh - kh) / sh + 1 != oh || (w + pw + ew - kw) / sw + 1 != ow {
            return Err(self.unsupported(format!(
                "a {kh}x{kw} pool with stride {sh} on {h}x{w} gives {oh}x{ow}, which ONNX's padding cannot"
            )));
        }
        let (op, mut attrs) = match pool.kind {
            PoolKind::Max => ("MaxPool", vec![]),
            PoolKind::Avg { count_include_pad } => {
                // PyTorch divides by the window clipped to the padded input;
                // ONNX would count the extra end padding too.
                if count_include_pad && (eh > ph || ew > pw) {
                    return Err(self.unsupported(format!(
                        "a ceil-mode average pool whose last window overhangs the padding ({kh}x{kw}, stride {sh}, on {h}x{w})"
                    )));
                }
                (
                    "AveragePool",
                    vec![attr_int("count_include_pad", i64::from(count_include_pad))],
                )
            }
        };
        attrs.extend([
            attr_ints("kernel_shape", &[kh, kw]),
            attr_ints("strides", &[sh, sw]),
            attr_ints("pads", &[ph, pw, eh, ew]),
        ]);
        let name = self.node(op, &[&x.name], attrs, "pool");
        Ok(Value {
            name,
            shape: Shape::Map { c, h: oh, w: ow },
        })
    }

    fn concat(&mut self, xs: &[Value]) -> candle_core::Result<Value> {
        let mut channels = 0;
        let mut size = None;
        for x in xs {
            let (c, h, w) = x.map()?;
            if size.is_some_and(|s| s != (h, w)) {
                candle_core::bail!("concatenating maps of different sizes");
            }
            size = Some((h, w));
            channels += c;
        }
        let Some((h, w)) = size else {
            candle_core::bail!("nothing to concatenate");
        };
        let inputs: Vec<&str> = xs.iter().map(|x| x.name.as_str()).collect();
        let name = self.node("Concat", &inputs, vec![attr_int("axis", 1)], "concat");
        Ok(Value {
            name,
            shape: Shape::Map { c: channels, h, w },
        })
    }

    fn spatial(&self, x: &Value) -> candle_core::Result<(usize, usize)> {
        let (_, h, w) = x.map()?;
        Ok((h, w))
    }

    fn global_avg_pool(&mut self, x: &Value) -> candle_core::Result<Value> {
        let (c, _, _) = x.map()?;
        let pooled = self.node("GlobalAveragePool", &[&x.name], vec![], "pooled");
        let name = self.node("Flatten", &[&pooled], vec![attr_int("axis", 1)], "features");
        Ok(Value {
            name,
            shape: Shape::Flat(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_over_two_gibibytes_are_refused() {
        let path = Path::new("big.onnx");
        assert!(fits(MAX_BYTES, path).is_ok());
        let e = fits(MAX_BYTES + 1, path).unwrap_err();
        assert!(matches!(e, ExportError::TooLarge { .. }));
        assert!(
            e.to_string().contains("`big.onnx`") && e.to_string().contains("2147483648 bytes"),
            "{e}"
        );
    }
}
