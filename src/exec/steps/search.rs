//! `visual_search`: exact cosine nearest neighbours of the queries among the
//! indexed images.

use crate::paths::ShowPath;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::{step_error, Extras, StepInputs};
use crate::exec::folder::write;
use crate::exec::metrics::{concept_list, csv_field, embed, Embedded};
use crate::exec::pictures::QueryRow;
use crate::exec::results::SearchMetrics;
use crate::exec::sets::Images;
use crate::exec::RunError;
use crate::hyper::{Index, Queries, SearchParams};
use crate::plan::PlannedStep;
use crate::steps::search::{retrieval_metrics, search, Neighbours};

/// Queries shown in a search grid, and neighbours per query.
const GRID_QUERIES: usize = 6;
const GRID_NEIGHBOURS: usize = 5;

/// The images searched among: the training rows, then (with `index = all`)
/// the evaluation rows; or the rows of a LanceDB table that were found.
struct Indexed {
    paths: Vec<PathBuf>,
    concepts: Vec<Vec<usize>>,
    /// How many images were searched.
    rows: usize,
}

/// The images looked up, and which index row each one is (when it is in
/// the index: a query is never its own neighbour).
struct Looked<'a> {
    images: &'a Embedded,
    name: String,
    offset_in_index: Option<usize>,
}

pub(super) fn run(
    inputs: &StepInputs,
    step: &PlannedStep,
    p: &SearchParams,
    folder: &Path,
    extras: &mut Extras,
) -> Result<SearchMetrics, RunError> {
    let k = p.top_k;
    let mut folder_images = None;
    let looked = queries(inputs, p, &mut folder_images)?;
    let queries = looked.images;
    let Some(q) = &queries.matrix else {
        let why = match (queries.bad.len(), &p.queries) {
            (0, Queries::Eval) => "there is no held-out image to search with (each concept has a \
                                   single image, so none was held out): add images, name \
                                   evaluation images of their own (`eval = \"folder\"`), or \
                                   search with `queries = train`"
                .to_string(),
            (0, _) => "there is no query image to search with".to_string(),
            (n, _) => format!("none of the {n} query images could be read"),
        };
        return Err(step_error(step, why));
    };
    let offset = looked.offset_in_index;
    let exclude = move |row: usize| offset.map(|o| o + row);
    if let Queries::Folder(_) = p.queries {
        save_queries(inputs, queries, q, folder)?;
    }
    let (index, found) = match &p.index {
        Index::Table(table) => search_table(inputs, step, table, queries, q, k)?,
        which => {
            let Some((index, matrix)) = index(inputs, which)? else {
                return Err(step_error(step, "no image to search could be embedded"));
            };
            let found = search(q, &matrix, k, &exclude)?;
            (index, found)
        }
    };
    let csv = neighbours_csv(inputs, queries, &index, &found);
    write(&folder.join("neighbours.csv"), csv.as_bytes())?;
    extras.grid = Some(grid(queries, &index, &found));
    let mut m = SearchMetrics {
        queries: queries.rows(),
        query_images: looked.name.clone(),
        index_images: index.rows,
        top_k: k,
        // Query images of a folder that could not be read (the run's own
        // images are reported by the run).
        unreadable_queries: queries
            .bad
            .iter()
            .map(|b| format!("{}: {}", b.path.shown(), b.reason))
            .collect(),
        recall_at_1: None,
        recall_at_k: None,
        map_at_k: None,
    };
    if queries.concepts.iter().any(|c| !c.is_empty()) {
        // A table's search already left each query out of its own neighbours.
        let exclude: &(dyn Fn(usize) -> Option<usize> + Sync) = match p.index {
            Index::Table(_) => &|_| None,
            _ => &exclude,
        };
        let (r1, rk, map) =
            retrieval_metrics(&found, &queries.concepts, &index.concepts, k, exclude);
        (m.recall_at_1, m.recall_at_k, m.map_at_k) = (Some(r1), Some(rk), Some(map));
    }
    Ok(m)
}

/// The run's own images searched among, and their embeddings.
fn index(inputs: &StepInputs, which: &Index) -> Result<Option<(Indexed, Tensor)>, RunError> {
    let mut parts: Vec<&Embedded> = vec![inputs.train];
    if *which == Index::All {
        parts.push(inputs.eval);
    }
    let mut matrices = Vec::new();
    let mut paths = Vec::new();
    let mut concepts = Vec::new();
    for e in parts {
        if let Some(m) = &e.matrix {
            matrices.push(m.clone());
            paths.extend(e.paths.iter().cloned());
            concepts.extend(e.concepts.iter().cloned());
        }
    }
    if matrices.is_empty() {
        return Ok(None);
    }
    let rows = paths.len();
    Ok(Some((
        Indexed {
            paths,
            concepts,
            rows,
        },
        Tensor::cat(&matrices, 0)?,
    )))
}

/// A folder of queries' embeddings, as `wfrun embed` writes them:
/// `queries.safetensors` (`embeddings`, one row per query) and `queries.csv`
/// (row, path, concepts), so they can be searched again or used elsewhere.
fn save_queries(
    inputs: &StepInputs,
    queries: &Embedded,
    matrix: &Tensor,
    folder: &Path,
) -> Result<(), RunError> {
    let saved = crate::exec::model::Embeddings::of_run(queries, matrix, inputs.concepts)?;
    saved.save(&folder.join("queries.safetensors")).map(|_| ())
}

/// The queries; a folder's embeddings are kept in `folder_images`.
fn queries<'a>(
    inputs: &StepInputs<'a>,
    p: &SearchParams,
    folder_images: &'a mut Option<Embedded>,
) -> Result<Looked<'a>, RunError> {
    Ok(match &p.queries {
        Queries::Train => Looked {
            images: inputs.train,
            name: "train".into(),
            offset_in_index: Some(0),
        },
        Queries::Folder(root) => Looked {
            images: folder_images.insert(embed_folder(inputs, root)?),
            name: root.shown().to_string(),
            offset_in_index: None,
        },
        Queries::Eval => Looked {
            images: inputs.eval,
            name: "eval".into(),
            offset_in_index: (p.index == Index::All).then_some(inputs.train.rows()),
        },
    })
}

/// `neighbours.csv`: each query's neighbours, best first.
fn neighbours_csv(
    inputs: &StepInputs,
    queries: &Embedded,
    index: &Indexed,
    found: &[Neighbours],
) -> String {
    let mut csv = String::from("query,rank,neighbour,score,query_concepts,neighbour_concepts\n");
    for (qi, neighbours) in found.iter().enumerate() {
        let query = csv_field(&queries.paths[qi].display().to_string());
        let query_concepts = csv_field(&concept_list(&queries.concepts[qi], inputs.concepts));
        for (rank, &(i, score)) in neighbours.iter().enumerate() {
            let i = i as usize;
            csv.push_str(&format!(
                "{query},{},{},{score:.6},{query_concepts},{}\n",
                rank + 1,
                csv_field(&index.paths[i].display().to_string()),
                csv_field(&concept_list(&index.concepts[i], inputs.concepts)),
            ));
        }
    }
    csv
}

/// A few queries spread over the list (in concept order for folders) with
/// their nearest neighbours, for the picture.
fn grid(queries: &Embedded, index: &Indexed, found: &[Neighbours]) -> Vec<QueryRow> {
    let shown = GRID_QUERIES.min(found.len());
    (0..shown)
        .map(|i| i * found.len() / shown)
        .map(|qi| {
            let truth = &queries.concepts[qi];
            QueryRow {
                query: queries.paths[qi].clone(),
                neighbours: found[qi]
                    .iter()
                    .take(GRID_NEIGHBOURS)
                    .map(|&(i, score)| {
                        let i = i as usize;
                        let same = (!truth.is_empty())
                            .then(|| index.concepts[i].iter().any(|c| truth.contains(c)));
                        (index.paths[i].clone(), score, same)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Embeds a folder of new images: those in concept sub-folders carry their
/// concept (when the training data has it), those at the top carry none.
fn embed_folder(inputs: &StepInputs, root: &Path) -> Result<Embedded, RunError> {
    let (folders, loose) = crate::data::list_folder(root)?;
    // Every image here is a query written to the step's files.
    crate::data::paths_in_text(folders.iter().flat_map(|f| &f.images).chain(&loose))?;
    let mut paths = Vec::new();
    let mut concepts = Vec::new();
    for f in folders {
        let known: Vec<usize> = inputs
            .concepts
            .iter()
            .position(|c| *c == f.name)
            .into_iter()
            .collect();
        for p in f.images {
            paths.push(p);
            concepts.push(known.clone());
        }
    }
    for p in loose {
        paths.push(p);
        concepts.push(Vec::new());
    }
    let images = Images {
        paths: std::sync::Arc::new(paths),
        concepts,
    };
    embed(
        inputs.net,
        &images,
        inputs.size,
        inputs.workers,
        inputs.device,
        &mut |_, _| {},
    )
}

/// Searches a LanceDB table (`DB/TABLE.lance`): the rows found become the
/// index the neighbours point into; their concepts, by name, are the run's
/// where it has them.
#[cfg(feature = "lancedb")]
fn search_table(
    inputs: &StepInputs,
    step: &PlannedStep,
    folder: &Path,
    queries: &Embedded,
    matrix: &Tensor,
    k: usize,
) -> Result<(Indexed, Vec<Neighbours>), RunError> {
    use crate::exec::lance::{self, Table};
    let Some(table) = Table::at(folder) else {
        return Err(step_error(
            step,
            format!("`{}` is not a LanceDB table", folder.shown()),
        ));
    };
    let as_embeddings = crate::exec::model::Embeddings::of_run(queries, matrix, inputs.concepts)?;
    let opened = lance::Opened::open(&table)?;
    let rows = opened.info.rows;
    let hits = opened.search(&as_embeddings, k, false)?;
    let mut index = Indexed {
        paths: Vec::new(),
        concepts: Vec::new(),
        rows,
    };
    let mut row_of = std::collections::HashMap::new();
    let found = hits
        .into_iter()
        .map(|hs| {
            hs.into_iter()
                .map(|h| {
                    let row = *row_of.entry(h.path.clone()).or_insert_with(|| {
                        index.paths.push(h.path.clone());
                        index.concepts.push(
                            h.concepts
                                .iter()
                                .filter_map(|c| inputs.concepts.iter().position(|n| n == c))
                                .collect(),
                        );
                        index.paths.len() - 1
                    });
                    (row as u32, h.score)
                })
                .collect()
        })
        .collect();
    Ok((index, found))
}

#[cfg(not(feature = "lancedb"))]
fn search_table(
    _: &StepInputs,
    step: &PlannedStep,
    folder: &Path,
    _: &Embedded,
    _: &Tensor,
    _: usize,
) -> Result<(Indexed, Vec<Neighbours>), RunError> {
    Err(step_error(
        step,
        format!(
            "`{}` is a LanceDB table and this wfrun was built without feature `lancedb`",
            folder.shown()
        ),
    ))
}
