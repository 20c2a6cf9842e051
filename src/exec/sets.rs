//! The images of a run: the training and evaluation sets, the survey of their
//! sizes before training, and the log of images that cannot be read.

use crate::paths::ShowPath;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;

use super::{Event, RunError, RunOptions};
use crate::data::images::BadImage;
use crate::data::{split, Dataset};
use crate::hyper::Grid;
use crate::models::Targets;
use crate::plan::DataFound;
use crate::workflow::{Eval, ImageSource, Workflow};

/// Images with their concepts (indices into the training concepts).
pub(super) struct Images {
    pub paths: Arc<Vec<PathBuf>>,
    pub concepts: Vec<Vec<usize>>,
}

/// The unreadable images met so far: each is reported once, however often
/// an epoch or an embedding pass meets it.
#[derive(Default)]
pub(super) struct BadLog {
    reported: std::collections::HashSet<PathBuf>,
}

impl BadLog {
    pub fn report(
        &mut self,
        bad: &[crate::data::images::BadImage],
        on_event: &mut dyn FnMut(&Event),
    ) {
        for b in bad {
            if self.reported.insert(b.path.clone()) {
                on_event(&Event::BadImage {
                    path: b.path.clone(),
                    reason: b.reason.clone(),
                });
            }
        }
    }

    pub fn count(&self) -> usize {
        self.reported.len()
    }
}

/// The training and evaluation images of a workflow.
pub(super) struct DataSets {
    /// The training data's concepts, in the order of the network's outputs.
    pub concepts: Vec<String>,
    pub multi_label: bool,
    /// Images of the training source before the split.
    pub images: usize,
    pub train: Images,
    /// Images of concepts never trained on (`data { unseen = .. }`), their
    /// concepts indices into [`DataSets::unseen_concepts`].
    pub unseen: Option<Images>,
    pub unseen_concepts: Vec<String>,
    pub eval: Images,
}

fn open(src: &ImageSource) -> Result<Dataset, RunError> {
    Ok(match src {
        ImageSource::Folder(p) => Dataset::from_folder(p)?,
        ImageSource::Manifest(p) => listed_that_exist(Dataset::from_manifest(p)?),
    })
}

/// A manifest's images that exist: those that do not are skipped (the
/// checker warned of them) before the split, so the run holds out what the
/// plan counted.
fn listed_that_exist(mut data: Dataset) -> Dataset {
    data.samples.retain(|s| s.path.is_file());
    data
}

impl DataSets {
    pub fn load(workflow: &Workflow) -> Result<DataSets, RunError> {
        // A base model trains nothing: one concept, or none (a flat folder
        // of unlabelled images), is enough for its steps.
        let data = match (&workflow.base, &workflow.data.train) {
            (Some(_), ImageSource::Manifest(_)) => listed_that_exist(workflow.data.train.read()?),
            (Some(_), ImageSource::Folder(_)) => workflow.data.train.read()?,
            (None, src) => open(src)?,
        };
        let (train_idx, eval) = match &workflow.data.eval {
            Eval::Fraction(f) => {
                let (t, e) = split(&data.strata(), *f, workflow.seed);
                (t, Images::select(&data, &e))
            }
            Eval::Images(src) => {
                let eval = src.read()?;
                let images = if data.concepts.is_empty() {
                    // Unlabelled training images: the evaluation images'
                    // concepts (if any) have nothing to be compared with.
                    Images {
                        paths: Arc::new(eval.samples.iter().map(|s| s.path.clone()).collect()),
                        concepts: vec![Vec::new(); eval.samples.len()],
                    }
                } else {
                    Images::remap(&eval, &data.concepts)
                };
                if images.paths.is_empty() {
                    return Err(RunError::NothingToTrain(format!(
                        "no evaluation image in `{}` has a training concept ({}); name its \
                         concepts as the training ones",
                        src.path().shown(),
                        data.concepts.join(", ")
                    )));
                }
                ((0..data.samples.len()).collect(), images)
            }
        };
        let unseen = match &workflow.data.unseen {
            Some(src @ ImageSource::Manifest(_)) => Some(listed_that_exist(src.read()?)),
            Some(src) => Some(src.read()?),
            None => None,
        };
        Ok(DataSets {
            unseen: unseen
                .as_ref()
                .map(|u| Images::select(u, &(0..u.samples.len()).collect::<Vec<_>>())),
            unseen_concepts: unseen.map(|u| u.concepts).unwrap_or_default(),
            train: Images::select(&data, &train_idx),
            eval,
            images: data.samples.len(),
            multi_label: data.is_multi_label(),
            concepts: data.concepts,
        })
    }

    /// What the plan needs of the data.
    pub fn found(&self) -> DataFound {
        DataFound {
            concepts: self.concepts.clone(),
            images: Some(self.images as u64),
            train_images: Some(self.train.paths.len() as u64),
            eval_images: Some(self.eval.paths.len() as u64),
            unseen: self.unseen.as_ref().map(|u| {
                let mut concepts: Vec<usize> = u
                    .concepts
                    .iter()
                    .filter_map(|c| c.first().copied())
                    .collect();
                concepts.sort_unstable();
                concepts.dedup();
                (u.paths.len() as u64, concepts.len() as u64)
            }),
        }
    }
}

impl Images {
    fn select(data: &Dataset, indices: &[usize]) -> Images {
        Images {
            paths: Arc::new(
                indices
                    .iter()
                    .map(|&i| data.samples[i].path.clone())
                    .collect(),
            ),
            concepts: indices
                .iter()
                .map(|&i| data.samples[i].concepts.clone())
                .collect(),
        }
    }

    /// An evaluation set's samples with their concepts renumbered as the training set's.
    fn remap(eval: &Dataset, concepts: &[String]) -> Images {
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for s in &eval.samples {
            let mapped: Vec<usize> = s
                .concepts
                .iter()
                .filter_map(|&c| concepts.iter().position(|n| *n == eval.concepts[c]))
                .collect();
            if !mapped.is_empty() {
                paths.push(s.path.clone());
                labels.push(mapped);
            }
        }
        Images {
            paths: Arc::new(paths),
            concepts: labels,
        }
    }

    pub fn targets(
        &self,
        indices: &[usize],
        classes: usize,
        logreg: bool,
        device: &Device,
    ) -> candle_core::Result<Targets> {
        Targets::from_concepts(
            indices.iter().map(|&i| self.concepts[i].as_slice()),
            classes,
            logreg,
            device,
        )
    }
}

/// Reads every image's size from its header (or decodes it whole with
/// `fail_on_bad_images`): unreadable images stop the run up front with that
/// option, and images smaller than `image_size` are reported. Returns the
/// digests of the training and evaluation images' bytes, in the sets' order.
pub(super) fn survey(
    sets: &DataSets,
    image_size: usize,
    sizes: Option<Grid>,
    options: &RunOptions,
    workers: usize,
    on_event: &mut dyn FnMut(&Event),
) -> Result<Contents, RunError> {
    let paths: Vec<PathBuf> = sets
        .train
        .paths
        .iter()
        .chain(sets.eval.paths.iter())
        .chain(sets.unseen.iter().flat_map(|u| u.paths.iter()))
        .cloned()
        .collect();
    let surveyed = crate::data::images::survey(&paths, workers, options.fail_on_bad_images);
    let trained_or_judged = sets.train.paths.len() + sets.eval.paths.len();
    let contents = Contents(
        surveyed
            .iter()
            .take(trained_or_judged)
            .map(|s| s.contents)
            .collect(),
    );
    let found = surveyed.into_iter().map(|s| s.size);
    let mut bad = Vec::new();
    let mut sides = Vec::new();
    let mut small = Vec::new();
    let mut readable = vec![0usize; sets.concepts.len()];
    let mut unreadable: Vec<Vec<BadImage>> = vec![Vec::new(); sets.concepts.len()];
    let (mut readable_train, mut unreadable_train) = (0usize, Vec::new());
    let trained = sets.train.paths.len();
    for (i, (path, r)) in paths.iter().zip(found).enumerate() {
        if i < trained {
            match &r {
                Ok(_) => readable_train += 1,
                Err(e) => unreadable_train.push(e.clone()),
            }
            for &c in &sets.train.concepts[i] {
                match &r {
                    Ok(_) => readable[c] += 1,
                    Err(e) => unreadable[c].push(e.clone()),
                }
            }
        }
        match r {
            Ok((w, h)) => {
                sides.push(w.min(h));
                if (w.min(h) as usize) < image_size {
                    small.push((path.clone(), w, h));
                }
            }
            Err(e) => bad.push(e),
        }
    }
    if !small.is_empty() {
        sides.sort_unstable();
        small.sort_by_key(|(_, w, h)| (*w).min(*h));
        let median_side = sides[sides.len() / 2];
        on_event(&Event::SmallImages {
            image_size,
            count: small.len(),
            smallest: small.into_iter().take(5).collect(),
            median_side,
            fitting_size: sizes
                .and_then(|g| g.at_most(u64::from(median_side)))
                .map(|s| s as usize)
                .filter(|&s| s < image_size),
        });
    }
    if options.fail_on_bad_images && !bad.is_empty() {
        return Err(RunError::BadImages(bad));
    }
    if readable_train == 0 {
        return Err(RunError::Unreadable {
            what: format!("none of the {trained} training images"),
            bad: unreadable_train,
        });
    }
    unreadable_concepts(sets, &readable, unreadable)?;
    Ok(contents)
}

/// A digest of each training and evaluation image's bytes, in the order
/// the sets hold them (`None`: the file could not be read).
#[derive(Clone, Debug, Default)]
pub(super) struct Contents(pub Vec<Option<u64>>);

/// Stops a run before its first step when none of the training images of
/// some concept can be read: it would never see that concept.
fn unreadable_concepts(
    sets: &DataSets,
    readable: &[usize],
    mut unreadable: Vec<Vec<BadImage>>,
) -> Result<(), RunError> {
    if let Some(c) = readable.iter().position(|&n| n == 0) {
        return Err(RunError::Unreadable {
            what: format!(
                "none of the {} training images of concept `{}`",
                unreadable[c].len(),
                sets.concepts[c]
            ),
            bad: std::mem::take(&mut unreadable[c]),
        });
    }
    Ok(())
}
