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
pub enum Deny {
    Warnings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}
