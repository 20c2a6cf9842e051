//! What a workflow costs before its first step, without candle: parameters,
//! multiply-adds, memory and time, for the checker, `wfrun plan` and the
//! editor.
//!
//! [`Counts`] come from walking the same layer tables the networks are built
//! from ([`crate::arch::walk`]). Memory follows what wfrun's CPU kernels keep:
//! in training every activation of the forward pass stays alive until the
//! backward pass (candle's graph holds them), with weights, gradients and SGD's
//! momentum; in evaluation only the activations a layer reads and writes are
//! alive. Times come from a [`Throughput`]: for each template's network, a
//! time per step and a time per multiply-add of the batch, measured once on
//! this machine by `wfrun calibrate` (cached in the user's cache folder), or
//! [`Throughput::fallback`] when none was measured.

use serde::{Deserialize, Serialize};

use crate::arch::{self, Backbone, Conv, Pool, Shape, Visit};
use crate::hyper::{Hyper, Loss};
use crate::spec::Architecture;

/// Bytes per value: every activation, weight and gradient is f32.
pub const VALUE_BYTES: u64 = 4;

/// The part of the head after the backbone's pooled features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Head {
    /// A projection to `embeddings_size` (with a bias) and the angular
    /// margin's class centres.
    AngularMargin { embeddings_size: usize },
    /// A linear classifier on the features (with a bias).
    Classifier,
}

/// A template's network at some width, for `classes` concepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Network {
    /// The template's network this is (its measured throughput is looked up by it).
    pub architecture: Architecture,
    pub backbone: Backbone,
    pub head: Head,
    pub classes: u64,
}

impl Network {
    /// The network a workflow's hyperparameters describe. Without the
    /// concept count (no data read yet) the head is counted for two.
    pub fn for_hyper(h: &Hyper, classes: Option<u64>) -> Network {
        let head = match h.loss {
            Loss::AngularMargin {
                embeddings_size, ..
            } => Head::AngularMargin { embeddings_size },
            Loss::Softmax | Loss::Sigmoid => Head::Classifier,
        };
        Network {
            architecture: h.architecture,
            backbone: Backbone::published(h.architecture),
            head,
            classes: classes.unwrap_or(2).max(1),
        }
    }

    /// Counts per image at `image_size` (an error when a layer does not fit).
    pub fn counts(&self, image_size: usize) -> Result<Counts, arch::TooSmall> {
        let mut c = Counter::default();
        arch::walk(&self.backbone, image_size, &mut c)?;
        let features = self.backbone.feature_dim() as u64;
        // Saturating: an `embeddings_size` far past any memory must give a
        // huge estimate, not wrap around.
        let (head_params, head_macs, head_values) = match self.head {
            Head::AngularMargin { embeddings_size } => {
                let e = embeddings_size as u64;
                // The projection and its bias, the class centres; the projection's
                // output, its normalised form, the cosines and the loss's logits.
                let projection = features.saturating_mul(e);
                let centres = self.classes.saturating_mul(e);
                (
                    projection.saturating_add(e).saturating_add(centres),
                    projection.saturating_add(centres),
                    e.saturating_mul(2).saturating_add(2 * self.classes),
                )
            }
            Head::Classifier => (
                features * self.classes + self.classes,
                features * self.classes,
                2 * self.classes,
            ),
        };
        let macs = c.macs.saturating_add(head_macs);
        Ok(Counts {
            image_size,
            params: c.params.saturating_add(head_params),
            buffers: c.buffers,
            macs_forward: macs,
            // The backward pass: the input's gradient and the weights' gradient,
            // each as many multiply-adds as the forward pass.
            macs_train: macs.saturating_mul(3),
            train_values: c.train_values.saturating_add(head_values),
            eval_values: c.eval_peak,
            eval_written: c.written.saturating_add(head_values / 2),
            largest_activation: c.largest,
            layers: c.layers,
        })
    }
}

/// What one image costs a network at one image size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub image_size: usize,
    /// Trainable values: convolutions' weights and biases, batch norm's scales
    /// and shifts, the head.
    pub params: u64,
    /// Batch norm's running means and variances.
    pub buffers: u64,
    /// Multiply-adds of the forward pass per image (convolutions and the head).
    pub macs_forward: u64,
    /// Forward and backward pass per image.
    pub macs_train: u64,
    /// Activation values a training step keeps per image until its backward pass.
    pub train_values: u64,
    /// Activation values alive at once per image in evaluation, at the widest layer.
    pub eval_values: u64,
    /// Activation values evaluation writes per image (each layer's output once).
    pub eval_written: u64,
    /// The largest single activation per image.
    pub largest_activation: u64,
    /// Convolutions (each with its batch norm).
    pub layers: u64,
}

#[derive(Default)]
struct Counter {
    params: u64,
    buffers: u64,
    macs: u64,
    train_values: u64,
    eval_peak: u64,
    written: u64,
    largest: u64,
    layers: u64,
}

impl Counter {
    fn live(&mut self, values: u64) {
        self.eval_peak = self.eval_peak.max(values);
        self.largest = self.largest.max(values);
    }
}

impl Visit for Counter {
    fn enter(&mut self, images: Shape) {
        // The images and their channels-first copy.
        self.train_values += 2 * images.len();
        self.live(2 * images.len());
    }

    fn conv(&mut self, conv: &Conv, input: Shape, output: Shape, residual: bool) {
        self.layers += 1;
        self.params += conv.params();
        self.buffers += 2 * conv.out_channels as u64;
        let pixels = output.h as u64 * output.w as u64;
        self.macs += pixels * conv.macs_per_pixel();
        // The convolution's output and batch norm's (ReLU fused); with a
        // residual, batch norm's output and the sum after ReLU.
        let kept = if residual { 3 } else { 2 };
        self.train_values += kept * output.len();
        self.written += output.len();
        // In evaluation one op writes the output from the input (and the residual).
        let residual_values = if residual { output.len() } else { 0 };
        self.live(input.len() + output.len() + residual_values);
        self.largest = self.largest.max(output.len());
    }

    fn pool(&mut self, pool: &Pool, input: Shape, output: Shape) {
        // Max pooling keeps each output's source for the backward pass.
        let kept = if pool.max { 2 } else { 1 };
        self.train_values += kept * output.len();
        self.written += output.len();
        self.live(input.len() + output.len());
    }

    fn concat(&mut self, parts: &[Shape], output: Shape) {
        self.train_values += output.len();
        self.written += output.len();
        let parts: u64 = parts.iter().map(Shape::len).sum();
        self.live(parts + output.len());
    }

    fn global_pool(&mut self, input: Shape) {
        self.train_values += input.channels as u64;
    }
}

/// How fast one template's network runs on a device: a training step of
/// `batch` images takes `train_step_s + batch · macs_train / 1e9 ·
/// train_s_per_gmac`, embedding a batch `embed_batch_s + batch · macs_forward
/// / 1e9 · embed_s_per_gmac`. The part per multiply-add holds everything that
/// grows with the images (products, batch norm, pooling, their gradients);
/// the part per step what does not (SGD over the weights, each layer's fixed
/// cost).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkRate {
    pub architecture: Architecture,
    pub train_s_per_gmac: f64,
    pub train_step_s: f64,
    pub embed_s_per_gmac: f64,
    pub embed_batch_s: f64,
}

impl NetworkRate {
    /// Plausible for a machine (a hand-edited cache may hold anything): a
    /// rate between a million and ten million billion multiply-adds a second,
    /// and a fixed cost under 1,000 s.
    fn usable(&self) -> bool {
        let per_gmac = |v: f64| (1e-7..=1e3).contains(&v);
        let fixed = |v: f64| (0.0..=1e3).contains(&v);
        per_gmac(self.train_s_per_gmac)
            && per_gmac(self.embed_s_per_gmac)
            && fixed(self.train_step_s)
            && fixed(self.embed_batch_s)
    }
}

/// How fast a device runs each template's network, measured by `wfrun
/// calibrate` or the fallback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Where the figures come from, in words.
    pub source: String,
    /// Threads the measurement ran on.
    pub threads: usize,
    pub networks: Vec<NetworkRate>,
}

impl Throughput {
    /// The figures used when this machine was never measured: one core of
    /// the 2-core AMD EPYC (Zen 4) virtual machine BENCHMARKS.md describes,
    /// fitted to the one-thread `bench_train` and `bench_embed` times of its
    /// table ("The cost model beside measurements": 32 and 64 px, batches of
    /// 8 and 32), where they land within 5% of every training step.
    pub fn fallback() -> Throughput {
        let rate = |architecture, train: (f64, f64), embed: (f64, f64)| NetworkRate {
            architecture,
            train_s_per_gmac: train.0,
            train_step_s: train.1,
            embed_s_per_gmac: embed.0,
            embed_batch_s: embed.1,
        };
        Throughput {
            source: "wfrun's fallback figures, as this machine was never measured: run `wfrun calibrate`"
                .into(),
            threads: 1,
            networks: vec![
                rate(
                    Architecture::Resnet101AngularMargin,
                    (0.0236, 0.0807),
                    (0.0196, 0.0103),
                ),
                rate(Architecture::BnInception, (0.0315, 0.0238), (0.0260, 0.0067)),
                rate(Architecture::Resnext50, (0.0303, 0.0450), (0.0249, 0.0051)),
            ],
        }
    }

    /// Every network's figures usable.
    pub fn usable(&self) -> bool {
        !self.networks.is_empty() && self.networks.iter().all(NetworkRate::usable)
    }

    fn rate(&self, arch: Architecture) -> Option<&NetworkRate> {
        self.networks.iter().find(|r| r.architecture == arch)
    }

    /// A training step of `batch` images of `net` (`c` its counts), when its
    /// network was measured.
    pub fn train_step_s(&self, net: &Network, c: &Counts, batch: u64) -> Option<f64> {
        let r = self.rate(net.architecture)?;
        Some(r.train_step_s + batch as f64 * c.macs_train as f64 / 1e9 * r.train_s_per_gmac)
    }

    /// Embedding a batch of `batch` images.
    pub fn embed_batch_s(&self, net: &Network, c: &Counts, batch: u64) -> Option<f64> {
        let r = self.rate(net.architecture)?;
        Some(r.embed_batch_s + batch as f64 * c.macs_forward as f64 / 1e9 * r.embed_s_per_gmac)
    }
}

/// A machine's memory, for the checker's warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Physical memory in bytes.
    pub total: u64,
    /// Swap in bytes (a run that only fits with swap is very slow; one larger
    /// than memory and swap together cannot run at all).
    pub swap: u64,
}

/// The least memory `WFRUN_MEMORY_GIB` may name (1 MiB or so): below, no
/// machine runs wfrun at all.
const MIN_MEMORY_GIB: f64 = 0.001;

impl Memory {
    /// `WFRUN_MEMORY_GIB` in GiB, when set; an error saying what is wrong
    /// when it is not a finite number from [`MIN_MEMORY_GIB`] up.
    fn override_gib() -> Result<Option<f64>, String> {
        let Some(value) = std::env::var_os("WFRUN_MEMORY_GIB") else {
            return Ok(None);
        };
        let text = value.to_string_lossy();
        match text.trim().parse::<f64>() {
            Ok(g) if g.is_finite() && g >= MIN_MEMORY_GIB => Ok(Some(g)),
            _ => Err(format!(
                "WFRUN_MEMORY_GIB is `{text}`, not a number of GiB from {MIN_MEMORY_GIB} up: set \
                 it to the memory of the machine that will run the workflow (e.g. `16` or \
                 `0.5`), or unset it to check against this machine's"
            )),
        }
    }

    /// What is wrong with `WFRUN_MEMORY_GIB`, if it is set to something
    /// other than a number of GiB (programs say so before checking).
    pub fn override_error() -> Option<String> {
        Memory::override_gib().err()
    }

    /// This machine's (Linux: `/proc/meminfo`, or a container's limit when
    /// lower), when known. `WFRUN_MEMORY_GIB` overrides it (and sets no swap):
    /// to check a workflow on one machine for another that will run it.
    /// A `WFRUN_MEMORY_GIB` that is not a number of GiB is ignored here;
    /// [`Memory::override_error`] says what is wrong with it.
    pub fn this_machine() -> Option<Memory> {
        if let Ok(Some(gib)) = Memory::override_gib() {
            return Some(Memory {
                total: (gib * (1u64 << 30) as f64).min(u64::MAX as f64) as u64,
                swap: 0,
            });
        }
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        };
        // A container's limit (cgroup v2), when it is lower than the host's memory.
        let limit =
            |file: &str| -> Option<u64> { std::fs::read_to_string(file).ok()?.trim().parse().ok() };
        let total = field("MemTotal:")?;
        let swap = field("SwapTotal:").unwrap_or(0);
        Some(Memory {
            total: limit("/sys/fs/cgroup/memory.max").map_or(total, |l| l.min(total)),
            swap: limit("/sys/fs/cgroup/memory.swap.max").map_or(swap, |l| l.min(swap)),
        })
    }
}

/// The device a cost is estimated for: memory and throughput.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub memory: Option<Memory>,
    /// `None`: times are not estimated (an accelerator never measured).
    pub throughput: Option<Throughput>,
}

impl Machine {
    /// This machine: its memory and the throughput `wfrun calibrate` cached
    /// for it, or the fallback. Read once per process.
    pub fn this_machine() -> Machine {
        static THIS: std::sync::OnceLock<Machine> = std::sync::OnceLock::new();
        THIS.get_or_init(|| Machine {
            memory: Memory::this_machine(),
            throughput: Some(calibration::load().unwrap_or_else(Throughput::fallback)),
        })
        .clone()
    }

    /// A machine with nothing known: no memory checks, no times.
    pub fn unknown() -> Machine {
        Machine {
            memory: None,
            throughput: None,
        }
    }
}

/// The cost of a workflow's training and embedding, as the plan shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub counts: Counts,
    pub batch_size: usize,
    /// Bytes of the weights, their gradients and SGD's momentum.
    pub weight_bytes: u64,
    pub optimizer_bytes: u64,
    /// Activation bytes a training step keeps (the whole batch).
    pub train_activation_bytes: u64,
    /// Peak bytes of a training step and of embedding a batch.
    pub train_peak_bytes: u64,
    pub embed_peak_bytes: u64,
    /// The batch `embed` runs at.
    pub embed_batch: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<Times>,
}

/// Estimated seconds, from a [`Throughput`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Times {
    pub step_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_s: Option<f64>,
    /// Seconds per image embedded.
    pub embed_image_s: f64,
    /// Embedding the training and evaluation images once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_data_s: Option<f64>,
    /// Where the throughput came from.
    pub source: String,
    /// Whether the images judged after each epoch and embedded at the end
    /// were counted (without, the times are the training's alone).
    pub complete: bool,
}

/// The batch a run embeds images in (`exec`'s evaluation batches).
pub const EMBED_BATCH: usize = 32;

/// Bytes a process running the network needs besides the tensors: the
/// binary and the allocator's arenas (measured: about 16 MiB).
pub const PROCESS_BYTES: u64 = 16 << 20;

/// The work a run does, for [`estimate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    pub steps_per_epoch: Option<u64>,
    /// Epochs trained (none for a base model).
    pub epochs: u64,
    /// Images judged after each epoch (evaluation and unseen images).
    pub evaluated_per_epoch: Option<u64>,
    /// Images embedded after training (training and evaluation images).
    pub images_embedded: Option<u64>,
}

/// The estimate for `net` at `image_size` and `batch_size`, with times when
/// the machine's throughput is known.
pub fn estimate(
    net: &Network,
    image_size: usize,
    batch_size: usize,
    work: Work,
    throughput: Option<&Throughput>,
) -> Result<Estimate, arch::TooSmall> {
    let counts = net.counts(image_size)?;
    let b = batch_size as u64;
    let bytes = |values: u64| values.saturating_mul(VALUE_BYTES);
    let weight_bytes = bytes(counts.params.saturating_add(counts.buffers));
    // Gradients and momentum, one value per trainable value each.
    let optimizer_bytes = bytes(counts.params.saturating_mul(2));
    let train_activation_bytes = bytes(b.saturating_mul(counts.train_values));
    // The backward pass holds a gradient for the widest activation and the
    // one it flows from, on top of what the forward pass kept.
    let backward_bytes = bytes(2 * b * counts.largest_activation);
    let train_peak_bytes = [
        PROCESS_BYTES,
        weight_bytes,
        optimizer_bytes,
        train_activation_bytes,
        backward_bytes,
        // The columns and, in the backward pass, their gradient.
        2 * net.column_bytes(image_size, batch_size),
        // The columns training convolutions keep for their backward pass.
        net.kept_column_bytes(image_size, batch_size),
    ]
    .into_iter()
    .fold(0u64, u64::saturating_add);
    let embed_peak_bytes = embed_peak_bytes(net, &counts, EMBED_BATCH);
    let e = EMBED_BATCH as u64;
    let times = throughput.and_then(|t| {
        let step_s = t.train_step_s(net, &counts, b)?;
        let embed_image_s = t.embed_batch_s(net, &counts, e)? / e as f64;
        let evaluation_s = work.evaluated_per_epoch.unwrap_or(0) as f64 * embed_image_s;
        let epoch_s = work
            .steps_per_epoch
            .map(|s| s as f64 * step_s + evaluation_s);
        let embed_data_s = work.images_embedded.map(|n| n as f64 * embed_image_s);
        let total_s = match (epoch_s, work.epochs) {
            (_, 0) => embed_data_s,
            (Some(e), n) => Some(e * n as f64 + embed_data_s.unwrap_or(0.0)),
            (None, _) => None,
        };
        Some(Times {
            step_s,
            epoch_s,
            total_s,
            embed_image_s,
            embed_data_s,
            source: t.source.clone(),
            complete: work.evaluated_per_epoch.is_some() && work.images_embedded.is_some(),
        })
    });
    Ok(Estimate {
        counts,
        batch_size,
        weight_bytes,
        optimizer_bytes,
        train_activation_bytes,
        train_peak_bytes,
        embed_peak_bytes,
        embed_batch: EMBED_BATCH,
        times,
    })
}

/// Peak bytes of embedding `batch` images at a time with `net` (`counts` its
/// counts at the image size).
pub fn embed_peak_bytes(net: &Network, counts: &Counts, batch: usize) -> u64 {
    let bytes = |values: u64| values.saturating_mul(VALUE_BYTES);
    [
        PROCESS_BYTES,
        bytes(counts.params.saturating_add(counts.buffers)),
        bytes((batch as u64).saturating_mul(counts.eval_values)),
        net.column_bytes(counts.image_size, batch),
    ]
    .into_iter()
    .fold(0u64, u64::saturating_add)
}

/// Values of unfolded columns a convolution's chunk of images may hold, and
/// the output pixels a chunk aims at (`models::cpu::conv`'s budget and target).
const COLUMN_BUDGET: u64 = 8 << 20;
const TARGET_COLUMNS: u64 = 512;
/// Bytes of columns the convolutions of a training step keep from their
/// forward passes for their backward passes (`models::cpu::conv`'s budget):
/// each convolution of one group that unfolds keeps all its columns if they
/// fit what is left of it, in the order they run.
const KEPT_COLUMNS: u64 = 256 << 20;

/// The largest unfolded columns any convolution of `batch` images holds:
/// each but the 1 × 1 convolutions of stride 1 (which read their input as it
/// is) unfolds a chunk of images at a time.
struct Columns {
    batch: u64,
    largest: u64,
    /// Bytes kept for the backward pass.
    kept: u64,
}

impl Visit for Columns {
    fn conv(&mut self, conv: &Conv, input: Shape, output: Shape, _residual: bool) {
        if conv.kernel == 1 && conv.stride == 1 {
            return;
        }
        let pixels = (output.h * output.w) as u64;
        let per_image = (input.channels * conv.kernel * conv.kernel) as u64 * pixels;
        let chunk = TARGET_COLUMNS
            .div_ceil(pixels.max(1))
            .min(COLUMN_BUDGET / per_image.max(1))
            .clamp(1, self.batch.max(1));
        self.largest = self.largest.max(chunk * per_image);
        let all = (self.batch * per_image).saturating_mul(VALUE_BYTES);
        if conv.groups == 1 && self.kept + all <= KEPT_COLUMNS {
            self.kept += all;
        }
    }

    fn pool(&mut self, _: &Pool, _: Shape, _: Shape) {}
    fn concat(&mut self, _: &[Shape], _: Shape) {}
    fn global_pool(&mut self, _: Shape) {}
}

impl Network {
    /// Bytes of the largest unfolded columns for `batch` images.
    pub fn column_bytes(&self, image_size: usize, batch: usize) -> u64 {
        self.columns(image_size, batch).largest * VALUE_BYTES
    }

    /// Bytes of the columns a training step keeps for its backward pass.
    pub fn kept_column_bytes(&self, image_size: usize, batch: usize) -> u64 {
        self.columns(image_size, batch).kept
    }

    fn columns(&self, image_size: usize, batch: usize) -> Columns {
        let mut c = Columns {
            batch: batch as u64,
            largest: 0,
            kept: 0,
        };
        match arch::walk(&self.backbone, image_size, &mut c) {
            Ok(_) => c,
            Err(_) => Columns {
                batch: 0,
                largest: 0,
                kept: 0,
            },
        }
    }
}

/// A count in words: `42.8 M`, `7.80 G`.
pub fn count_text(n: f64) -> String {
    let (v, unit) = if n >= 1e12 {
        (n / 1e12, " T")
    } else if n >= 1e9 {
        (n / 1e9, " G")
    } else if n >= 1e6 {
        (n / 1e6, " M")
    } else if n >= 1e3 {
        (n / 1e3, " k")
    } else {
        (n, "")
    };
    if unit.is_empty() || v >= 100.0 {
        format!("{v:.0}{unit}")
    } else if v >= 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// Bytes in MiB or GiB.
pub fn bytes_text(b: f64) -> String {
    let mib = b / (1u64 << 20) as f64;
    if mib >= 1024.0 {
        crate::hyper::gib(b)
    } else {
        format!("{mib:.0} MiB")
    }
}

/// Seconds in the unit a person reads: `0.16 s`, `42 s`, `3.5 min`, `2.1 h`, `3.4 days`.
pub fn duration_text(s: f64) -> String {
    const YEAR: f64 = 365.25 * 86400.0;
    if s.is_nan() {
        return "an unknown time".into();
    }
    if s < 1.0 {
        let ms = s.max(0.0) * 1e3;
        if ms >= 10.0 {
            format!("{ms:.0} ms")
        } else if ms >= 0.01 {
            format!("{ms:.2} ms")
        } else {
            "under 0.01 ms".into()
        }
    } else if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 36.0 * 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s < YEAR {
        format!("{:.1} days", s / 86400.0)
    } else if s < 1e4 * YEAR {
        format!("{:.1} years", s / YEAR)
    } else {
        format!("{:.1e} years", s / YEAR)
    }
}

/// The calibration cache: `$XDG_CACHE_HOME/wfrun/throughput.json` (or
/// `~/.cache/wfrun/…`), one entry per CPU model and thread count.
pub mod calibration {
    use super::Throughput;
    use std::path::PathBuf;

    /// The cache file, when a cache folder is known: `WFRUN_CACHE_DIR`
    /// (relative to the current folder if relative), else an absolute
    /// `XDG_CACHE_HOME`'s `wfrun`, else `~/.cache/wfrun`. Empty values count
    /// as unset.
    pub fn path() -> Option<PathBuf> {
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = set("WFRUN_CACHE_DIR") {
            let dir = std::path::absolute(PathBuf::from(dir)).ok()?;
            return Some(dir.join("throughput.json"));
        }
        let base = set("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("wfrun").join("throughput.json"))
    }

    /// What identifies a measurement: the CPU's model and the threads a run
    /// uses, as the environment sets them (`RAYON_NUM_THREADS`, else every
    /// core, which the kernels count themselves), so that `wfrun calibrate`
    /// and the runs after it find the same entry.
    pub fn key() -> String {
        match threads_set() {
            Some(n) => format!("{} × {n} threads", cpu_model()),
            None => format!("{} × every core", cpu_model()),
        }
    }

    /// The CPU's model name (Linux: `/proc/cpuinfo`), or the architecture.
    pub fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string())
    }

    /// `RAYON_NUM_THREADS`, when set to a count.
    fn threads_set() -> Option<usize> {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n: &usize| n > 0)
    }

    /// The cached measurement for this machine and thread count, if any
    /// (one that does not read, or is implausible, is none).
    pub fn load() -> Option<Throughput> {
        load_from(&path()?, &key())
    }

    /// The entry `key` of the cache file `path`.
    pub fn load_from(path: &std::path::Path, key: &str) -> Option<Throughput> {
        let text = std::fs::read_to_string(path).ok()?;
        let all: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).ok()?;
        let mut t: Throughput = serde_json::from_value(all.get(key)?.clone()).ok()?;
        // Shown in plans and messages: no control characters from a hand-edited file.
        t.source.retain(|c| !c.is_control());
        t.usable().then_some(t)
    }

    /// Adds (or replaces) the measurement for this machine, atomically; the
    /// entries of other machines are kept as they are. A file that is not a
    /// JSON object is kept beside as `throughput.json.unreadable`.
    pub fn store(t: &Throughput) -> std::io::Result<PathBuf> {
        let path = path().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no cache folder: set WFRUN_CACHE_DIR, XDG_CACHE_HOME or HOME",
            )
        })?;
        store_to(&path, &key(), t)?;
        Ok(path)
    }

    /// [`store`] into the file `path` under `key`; errors name the path.
    pub fn store_to(path: &std::path::Path, key: &str, t: &Throughput) -> std::io::Result<()> {
        let named = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("{}: {e}", crate::paths::ShowPath::shown(path)),
            )
        };
        let mut all = serde_json::Map::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text) {
                    Ok(found) => all = found,
                    Err(_) => {
                        let aside = path.with_extension("json.unreadable");
                        std::fs::rename(path, &aside).map_err(named)?;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(named(e)),
        }
        let value = serde_json::to_value(t).map_err(std::io::Error::other)?;
        all.insert(key.to_string(), value);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(named)?;
        }
        let text = serde_json::to_string_pretty(&all).map_err(std::io::Error::other)?;
        crate::atomic::write(path, text.as_bytes()).map_err(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{BnInceptionConfig, ResNetConfig};

    fn with_classifier(backbone: Backbone, size: usize) -> Counts {
        Network {
            architecture: Architecture::Resnext50,
            backbone,
            head: Head::Classifier,
            classes: 1000,
        }
        .counts(size)
        .unwrap()
    }

    /// torchvision's published figures at 224 px with the 1000-way
    /// classifier: ResNet-101 7.80 GMACs and 44,549,160 parameters,
    /// ResNeXt-50 32x4d 4.23 GMACs and 25,028,904.
    #[test]
    fn counts_match_torchvisions_published_figures() {
        let r = with_classifier(Backbone::ResNet(ResNetConfig::resnet101()), 224);
        assert_eq!(r.params, 44_549_160);
        assert!((r.macs_forward as f64 / 7.80e9 - 1.0).abs() < 0.01, "{r:?}");
        let x = with_classifier(Backbone::ResNet(ResNetConfig::resnext50_32x4d()), 224);
        assert_eq!(x.params, 25_028_904);
        assert!((x.macs_forward as f64 / 4.23e9 - 1.0).abs() < 0.01, "{x:?}");
    }

    #[test]
    fn kept_columns_stay_within_their_budget() {
        let net = |backbone| Network {
            architecture: Architecture::Resnet101AngularMargin,
            backbone,
            head: Head::Classifier,
            classes: 10,
        };
        let r = net(Backbone::ResNet(ResNetConfig::resnet101()));
        // At 64 px and batch 8 all of ResNet-101's unfolded columns fit:
        // 14.6 M values (the kernel's own count, 58 MiB of f32).
        let small = r.kept_column_bytes(64, 8);
        assert!((55 << 20..62 << 20).contains(&small), "{small}");
        // At 224 px and batch 32 they would take 2.8 GiB: the budget holds.
        let large = r.kept_column_bytes(224, 32);
        assert!((128 << 20..=KEPT_COLUMNS).contains(&large), "{large}");
        // ResNeXt-50's grouped convolutions are computed directly, not unfolded.
        let x = net(Backbone::ResNet(ResNetConfig::resnext50_32x4d()));
        assert!(x.kept_column_bytes(64, 8) < small / 4);
    }

    /// PyTorch's FLOP counter (`scripts/count_macs.py`) on torchvision's
    /// networks and pretrainedmodels' BN-Inception, 1000 classes: parameters
    /// and multiply-adds at 224, 64 and 32 px, exactly.
    #[test]
    fn counts_equal_pytorchs_flop_counter() {
        let nets = [
            (
                Backbone::ResNet(ResNetConfig::resnet101()),
                44_549_160,
                [7_801_405_440, 638_730_240, 161_218_560],
            ),
            (
                Backbone::ResNet(ResNetConfig::resnext50_32x4d()),
                25_028_904,
                [4_230_479_872, 347_226_112, 88_342_528],
            ),
            (
                Backbone::BnInception(BnInceptionConfig::published()),
                11_295_240,
                [2_032_600_064, 166_866_944, 42_484_736],
            ),
        ];
        for (backbone, params, macs) in nets {
            for (size, macs) in [224, 64, 32].into_iter().zip(macs) {
                let c = with_classifier(backbone.clone(), size);
                assert_eq!(c.params, params, "{backbone:?}");
                assert_eq!(c.macs_forward, macs, "{backbone:?} at {size} px");
            }
        }
    }

    #[test]
    fn the_cache_keeps_other_machines_and_refuses_implausible_figures() {
        let dir = std::env::temp_dir().join(format!("wfrun-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("throughput.json");
        std::fs::write(
            &path,
            r#"{"Other CPU × 4 threads": {"an": "older layout"}, "x": 1}"#,
        )
        .unwrap();
        let mut t = Throughput::fallback();
        t.source = "measured\u{1b}[31m here\n".into();
        calibration::store_to(&path, "This CPU × 2 threads", &t).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("older layout") && text.contains("\"x\": 1"),
            "{text}"
        );
        let back = calibration::load_from(&path, "This CPU × 2 threads").unwrap();
        assert_eq!(back.source, "measured[31m here");
        assert!(calibration::load_from(&path, "Other CPU × 4 threads").is_none());
        // Implausible rates read as none.
        for bad in [0.0, -1.0, 1e300, f64::NAN] {
            let mut t = Throughput::fallback();
            t.networks[0].train_s_per_gmac = bad;
            assert!(!t.usable(), "{bad}");
        }
        // A file that is no JSON object is kept aside, not lost.
        std::fs::write(&path, "not json").unwrap();
        calibration::store_to(&path, "k", &Throughput::fallback()).unwrap();
        let aside = dir.join("throughput.json.unreadable");
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "not json");
        // A path under a file: the error names it.
        let under = aside.join("x.json");
        let e = calibration::store_to(&under, "k", &Throughput::fallback()).unwrap_err();
        assert!(e.to_string().contains("x.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_read_in_their_unit() {
        assert_eq!(duration_text(0.001_16), "1.16 ms");
        assert_eq!(duration_text(0.16), "160 ms");
        assert_eq!(duration_text(1e-9), "under 0.01 ms");
        assert_eq!(duration_text(42.0), "42 s");
        assert_eq!(duration_text(300.0), "5.0 min");
        assert_eq!(duration_text(7200.0), "2.0 h");
        assert_eq!(duration_text(3.0 * 86400.0), "3.0 days");
        assert_eq!(duration_text(2.0 * 365.25 * 86400.0), "2.0 years");
        assert_eq!(duration_text(2.7e17 * 86400.0), "7.4e14 years");
        assert_eq!(duration_text(f64::INFINITY), "inf years");
    }

    #[test]
    fn memory_grows_with_the_batch_and_times_with_the_data() {
        let net = Network {
            architecture: Architecture::Resnet101AngularMargin,
            backbone: Backbone::ResNet(ResNetConfig::resnet101()),
            head: Head::AngularMargin {
                embeddings_size: 128,
            },
            classes: 10,
        };
        let work = Work {
            steps_per_epoch: Some(100),
            epochs: 6,
            evaluated_per_epoch: Some(0),
            images_embedded: Some(3200),
        };
        let t = Throughput::fallback();
        let a = estimate(&net, 64, 8, work, Some(&t)).unwrap();
        let b = estimate(&net, 64, 32, work, Some(&t)).unwrap();
        assert!(b.train_peak_bytes > a.train_peak_bytes);
        assert_eq!(a.embed_peak_bytes, b.embed_peak_bytes);
        let (ta, tb) = (a.times.unwrap(), b.times.unwrap());
        assert!(tb.step_s > ta.step_s);
        let total = 600.0 * ta.step_s + 3200.0 * ta.embed_image_s;
        assert!((ta.total_s.unwrap() - total).abs() < 1e-9);
        assert!(estimate(&net, 0, 8, work, None).is_err());
    }
}
