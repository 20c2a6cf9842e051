//! Why a run stopped.

use crate::paths::ShowPath;
use std::path::{Path, PathBuf};

/// Why a run stopped.
#[derive(Debug)]
pub enum RunError {
    Data(crate::data::DataError),
    /// The loss became NaN or infinite.
    Diverged {
        epoch: u64,
        step: u64,
        loss: f32,
    },
    /// Stopped on request before `step` of `epoch`; a checkpoint of that point was saved.
    Cancelled {
        epoch: u64,
        step: u64,
    },
    /// Stopped on request after training, before `what`; the model is saved.
    Stopped {
        what: String,
    },
    Model(candle_core::Error),
    /// A file or folder of the run could not be written (or created).
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A previous run's file or folder could not be removed (`fresh`, or a
    /// removed step's folder).
    Remove {
        path: PathBuf,
        error: std::io::Error,
    },
    Resume {
        path: PathBuf,
        message: String,
    },
    /// A base model's weights cannot be used.
    BaseModel {
        path: PathBuf,
        message: String,
    },
    /// A file of a trained run (a head, its embeddings) or of `wfrun embed`'s
    /// output cannot be used.
    RunFile {
        path: PathBuf,
        message: String,
    },
    Unsupported(String),
    /// Images that cannot be read, found before the run started.
    BadImages(Vec<crate::data::images::BadImage>),
    /// Another run (process `pid`, when known) holds the output folder.
    Busy {
        path: PathBuf,
        pid: Option<u32>,
    },
    /// The output folder holds a previous run's `found` (checkpoint, model)
    /// and neither `resume` nor `fresh` was asked for.
    Occupied {
        path: PathBuf,
        found: String,
    },
    /// The output folder holds files named as a run's (`found`) but no
    /// `plan.json`: no run made it, and a run would overwrite them.
    NotARunFolder {
        path: PathBuf,
        found: String,
    },
    /// No training image, or none of a concept, can be read: `what` says
    /// which ("none of the 12 training images of concept `cat`").
    Unreadable {
        what: String,
        bad: Vec<crate::data::images::BadImage>,
    },
    /// A downstream step could not run.
    Step {
        step: String,
        message: String,
    },
    /// Nothing to train on: the data left no batch.
    NothingToTrain(String),
    /// The network's outputs are not finite numbers: the held-out loss after
    /// `epoch` (0: none) or the embeddings of a split.
    NotFinite {
        epoch: u64,
        what: String,
    },
}

impl RunError {
    /// An I/O error on `path`, for `map_err`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
        move |error| RunError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Data(e) => write!(f, "{e}"),
            RunError::Diverged { epoch, step, loss } => write!(
                f,
                "the loss became {loss} at epoch {epoch}, step {step}; try a smaller `per_item_lrate` \
                 (the last good checkpoint is kept)"
            ),
            RunError::Cancelled { epoch, step } => write!(
                f,
                "stopped before step {step} of epoch {epoch} and saved a checkpoint; `--resume` continues from there"
            ),
            RunError::Stopped { what } => write!(
                f,
                "stopped on request before {what}; the trained model is saved, and `--resume` \
                 redoes what is left without training again"
            ),
            RunError::Model(e) => write!(f, "{e}"),
            RunError::Io { path, error } => write!(
                f,
                "cannot write `{}`: {error} (check the folder is writable, nothing is in the way and the disk has room)",
                path.shown()
            ),
            RunError::Remove { path, error } => write!(
                f,
                "cannot remove `{}`, a previous run's output: {error}; remove it by hand, or give \
                 this workflow another `output`",
                path.shown()
            ),
            RunError::Resume { path, message } => {
                write!(f, "cannot resume from `{}`: {message}", path.shown())
            }
            RunError::BaseModel { path, message } => {
                write!(f, "cannot use the base model `{}`: {message}", path.shown())
            }
            RunError::RunFile { path, message } => {
                write!(f, "cannot use `{}`: {message}", path.shown())
            }
            RunError::Unsupported(m) | RunError::NothingToTrain(m) => f.write_str(m),
            RunError::NotFinite { epoch, what } => {
                write!(f, "{what} are not finite numbers")?;
                if *epoch > 0 {
                    write!(f, " after epoch {epoch}")?;
                }
                write!(
                    f,
                    ": the network's weights or batch-norm statistics went wrong; try a smaller \
                     `per_item_lrate` or a larger `batch_size` (the last good checkpoint is kept)"
                )
            }
            RunError::Step { step, message } => write!(f, "step `{step}`: {message}"),
            RunError::BadImages(bad) => {
                match bad.len() {
                    1 => write!(f, "an image cannot be read:")?,
                    n => write!(f, "{n} images cannot be read:")?,
                }
                list_bad(f, bad)?;
                let (them, they) = match bad.len() {
                    1 => ("it", "it is skipped and listed"),
                    _ => ("them", "they are skipped and listed"),
                };
                write!(
                    f,
                    "\nremove or replace {them}; without `--fail-on-bad-images` {they}"
                )
            }
            RunError::Busy { path, pid } => {
                write!(f, "another run is writing to `{}`", path.shown())?;
                if let Some(pid) = pid {
                    write!(f, " (process {pid})")?;
                }
                write!(
                    f,
                    "; wait for it to finish, or give this workflow another `output`. If no run is \
                     going, remove `{}`",
                    path.join(super::LOCK).shown()
                )
            }
            RunError::Occupied { path, found } => write!(
                f,
                "`{}` holds a previous run ({found}); `--resume` continues it, `--fresh` removes \
                 its outputs and starts over, or give this workflow another `output`",
                path.shown()
            ),
            RunError::NotARunFolder { path, found } => write!(
                f,
                "`{}` is not a run folder (no plan, checkpoint or model) yet holds {found}, \
                 names a run writes: give this workflow another `output`",
                path.shown()
            ),
            RunError::Unreadable { what, bad } => {
                write!(f, "{what} can be read, so nothing would be learnt from them (or embedded):")?;
                list_bad(f, bad)?;
                write!(
                    f,
                    "\nreplace them with images wfrun reads (JPEG, PNG, WebP, BMP), or remove them \
                     (and an empty concept) from the data"
                )
            }
        }
    }
}

/// The first ten unreadable images, one a line, with the decoder's reason.
fn list_bad(
    f: &mut std::fmt::Formatter<'_>,
    bad: &[crate::data::images::BadImage],
) -> std::fmt::Result {
    for b in bad.iter().take(10) {
        write!(f, "\n  {}: {}", b.path.shown(), b.reason)?;
    }
    if bad.len() > 10 {
        write!(f, "\n  and {} more", bad.len() - 10)?;
    }
    Ok(())
}

impl std::error::Error for RunError {}

impl From<candle_core::Error> for RunError {
    fn from(e: candle_core::Error) -> Self {
        RunError::Model(e)
    }
}

impl From<crate::data::DataError> for RunError {
    fn from(e: crate::data::DataError) -> Self {
        RunError::Data(e)
    }
}
