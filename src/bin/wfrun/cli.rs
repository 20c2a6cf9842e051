//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Train visual embedding models from `.wf` workflow files.
#[derive(Parser, Debug)]
#[command(name = "wfrun", version, about, long_about = None)]
pub struct Args {
    /// When to colour reports: `auto` colours a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    pub color: Color,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check workflow files and report every problem at once.
    ///
    /// Exit status: 0 when no file has an error, 1 when one has (or a warning,
    /// with `--deny warnings`), 2 when a path cannot be read.
    Check {
        /// Files, or folders searched for `*.wf` files. Default: the current folder.
        paths: Vec<PathBuf>,
        /// `human`: graphical reports on standard error; `json`: one JSON object
        /// per diagnostic on standard output.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Treat warnings as errors for the exit status.
        #[arg(long, value_name = "LEVEL")]
        deny: Option<Deny>,
        /// Skip checks that read the file system (data folders, weights).
        #[arg(long)]
        no_fs: bool,
    },
    /// Show what a workflow will do: every value and its origin, the learning
    /// rate of every epoch, the optimizer steps, the downstream steps.
    Plan {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Skip checks that read the file system; derived values stay unknown.
        #[arg(long)]
        no_fs: bool,
    },
    /// Check a workflow and train it: the run folder gets the plan, per-epoch
    /// metrics, checkpoints, the model and the embeddings. `wfrun FILE.wf` is
    /// the same as `wfrun run FILE.wf`.
    Run {
        file: PathBuf,
        /// Continue from the run folder's last checkpoint.
        #[arg(long, conflicts_with = "fresh")]
        resume: bool,
        /// Remove a previous run's outputs from the run folder (its plan,
        /// checkpoint, model, metrics, embeddings, report, pictures and step
        /// results; nothing else) and start over.
        #[arg(long)]
        fresh: bool,
        /// Decode every image before starting and stop if any cannot be read
        /// (by default unreadable images are skipped and listed).
        #[arg(long)]
        fail_on_bad_images: bool,
        /// A sweep's trial N alone (1-based, as `wfrun plan` lists them),
        /// into its own folder: one invocation per trial spreads a sweep over
        /// machines; `wfrun FILE.wf --resume` then ranks them.
        #[arg(long, value_name = "N")]
        trial: Option<usize>,
    },
    /// Format workflow files in place: four-space blocks, aligned `=`, comments
    /// kept; never changes meaning.
    ///
    /// Exit status: 0 when done (with `--check`: when every file is formatted),
    /// 1 when `--check` finds a file to format or a file has syntax errors,
    /// 2 when a path cannot be read or written.
    Fmt {
        /// Files, or folders searched for `*.wf` files. Default: the current folder.
        paths: Vec<PathBuf>,
        /// Change nothing; list the files that are not formatted.
        #[arg(long)]
        check: bool,
    },
    /// A language server over stdio for editors: diagnostics as you type,
    /// quick fixes, hover documentation, completion, go to definition, an
    /// outline, formatting.
    #[cfg(feature = "lsp")]
    Lsp,
    /// Embed images with a finished run's model (centre crops at its image
    /// size, as the run embeds its evaluation images) and write the vectors
    /// to FILE.safetensors with their index in FILE.csv (row, path, concepts).
    ///
    /// Exit status: 0 when written, 1 when nothing could be embedded (or an
    /// image could not be read, with `--fail-on-bad-images`), 2 for an
    /// output it cannot be asked to write (a folder, a name without
    /// `.safetensors`, a format this build lacks) or flags that do not go
    /// together.
    #[cfg(feature = "train")]
    Embed {
        /// The run folder (it holds `model.safetensors` and `model.json`).
        run: PathBuf,
        /// Image files; folders (their images, and those of concept
        /// sub-folders, which name the concept); manifests (.csv, .json, .jsonl).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Where to write the vectors: `FILE.safetensors` (the index goes
        /// beside it as `FILE.csv`), or a LanceDB table, `lancedb://DB/TABLE`
        /// (a build with feature `lancedb`).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// An output that exists: refuse it (`create`), replace it
        /// (`overwrite`), or add the rows to it (`append`, LanceDB tables
        /// only) [default: `create` for a table; a file is replaced].
        #[arg(long, value_enum)]
        mode: Option<TableMode>,
        /// A LanceDB table's approximate index: `auto` builds IVF-PQ from
        /// 100,000 rows on (below, an exact scan is as fast) [default: auto].
        #[arg(long, value_enum)]
        ann: Option<AnnKind>,
        /// What to print on standard output when done: a summary, or one JSON object.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Predict the concepts of images with a finished run's model: its
    /// template's own output layer (softmax: the most likely concepts;
    /// sigmoid units: every concept above a threshold), or the head of one
    /// of its `classifier_head` steps.
    #[cfg(feature = "train")]
    Predict {
        run: PathBuf,
        /// Image files, folders or manifests, as for `wfrun embed`.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Use the head the run's `classifier_head` step of this name trained.
        #[arg(long, value_name = "STEP")]
        head: Option<String>,
        /// At most this many concepts per image [default: 5 for softmax
        /// outputs; every concept above the threshold for sigmoid units].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        top_k: Option<u64>,
        /// Only concepts scoring above it, a probability from 0 up to (not
        /// including) 1 [default: 0.5 for sigmoid units; any score for
        /// softmax outputs].
        #[arg(long, value_parser = probability, allow_hyphen_values = true)]
        threshold: Option<f32>,
        /// `human`: lines to read; `json`: one JSON object per image; `csv`:
        /// one row per image and concept (path, rank, concept, score).
        #[arg(long, value_enum, default_value_t = TableFormat::Human)]
        format: TableFormat,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Find the images nearest to each query (cosine similarity of their
    /// embeddings) among a finished run's images, or among embeddings
    /// `wfrun embed` wrote (`--index`). A query that is itself in the index
    /// (the same path) is not listed as its own neighbour.
    #[cfg(feature = "train")]
    Search {
        run: PathBuf,
        /// Query images: files, folders or manifests, as for `wfrun embed`.
        #[arg(required = true)]
        queries: Vec<PathBuf>,
        /// Neighbours per query.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        top_k: u64,
        /// Search among these embeddings instead of the run's own images: a
        /// `.safetensors` file `wfrun embed` wrote with the same model, or a
        /// LanceDB table, `lancedb://DB/TABLE`.
        #[arg(long, value_name = "FILE")]
        index: Option<PathBuf>,
        /// A LanceDB table: scan every row instead of using its ANN index.
        #[arg(long)]
        exact: bool,
        /// `human`: lines to read; `json`: one JSON object per query; `csv`:
        /// one row per query and neighbour (query, rank, path, score, concepts).
        #[arg(long, value_enum, default_value_t = TableFormat::Human)]
        format: TableFormat,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Write a finished run's network as an ONNX model: input `images`
    /// ([batch, 3, S, S], preprocessed as README's "ONNX export" says),
    /// outputs `embeddings` and `scores`; the preprocessing and the concepts
    /// are in its metadata.
    #[cfg(feature = "onnx")]
    Export {
        run: PathBuf,
        /// The model's file (default: RUN/model.onnx).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The format to write (ONNX is the one there is).
        #[arg(long, value_enum, default_value_t = ExportFormat::Onnx)]
        format: ExportFormat,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Measure this machine's throughput for the cost estimates (`wfrun plan`,
    /// the checker, the editor): a few training steps and evaluation batches
    /// of each template's network at small sizes, on the threads a run uses
    /// (`RAYON_NUM_THREADS`, else every core), twice over, the best times kept;
    /// about twenty seconds. The figures are cached in the user's cache folder
    /// (`$XDG_CACHE_HOME/wfrun`, or `~/.cache/wfrun`; `WFRUN_CACHE_DIR`
    /// overrides it).
    #[cfg(feature = "train")]
    Calibrate {
        /// Print the figures as one JSON object.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// List the templates and step kinds with their parameters.
    Templates {
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Document a template, a step kind, one of their parameters
    /// (`TEMPLATE.PARAM`) or a diagnostic code (`wf::off-step`).
    Explain { name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Onnx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TableMode {
    Create,
    Overwrite,
    Append,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AnnKind {
    Auto,
    None,
    IvfPq,
    IvfHnswSq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    Human,
    Json,
    Csv,
}

/// Options of the commands that use a trained model.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Stop if any image cannot be read (by default unreadable images are
    /// listed on standard error and skipped).
    #[arg(long)]
    pub fail_on_bad_images: bool,
    /// Where the network runs: `cpu`, `auto`, `cuda`, `cuda(N)`, `metal`,
    /// `metal(N)`.
    #[arg(long, default_value = "cpu")]
    pub device: wfrun::workflow::Device,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Deny {
    Warnings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// `--threshold`'s value: a probability from 0 up to (not including) 1, as
/// written (so `1e400` is not shown as `inf`).
#[cfg(feature = "train")]
fn probability(text: &str) -> Result<f32, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..1.0).contains(&p) => Ok(p as f32),
        _ => Err(format!(
            "`{text}` is not a probability from 0 up to (not including) 1"
        )),
    }
}
