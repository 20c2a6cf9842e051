//! Embeddings in a LanceDB table (feature `lancedb`): search beyond one
//! machine's memory. `wfrun embed ... -o lancedb://DB/TABLE` writes a table
//! (`path`, `concepts`, `vector`: one row per image) into the database folder
//! `DB` (the table is the folder `DB/TABLE.lance`, which LanceDB opens from
//! Python as well); `wfrun search --index lancedb://DB/TABLE` and a
//! `visual_search` step with `index = "DB/TABLE.lance"` query it, through its
//! approximate (ANN) index when it has one, or exactly.
//!
//! LanceDB is asynchronous; each call here runs on a runtime of its own, so
//! the library's callers stay synchronous.

use crate::paths::ShowPath;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{Array, Float32Array, ListArray, RecordBatch, StringArray};
use arrow_schema::DataType;
use futures::TryStreamExt;
use lancedb::index::vector::{IvfHnswSqIndexBuilder, IvfPqIndexBuilder};
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::DistanceType;

use super::model::{Embeddings, Hit};
use super::RunError;

/// The URI scheme of a LanceDB table on the command line.
pub const SCHEME: &str = "lancedb://";

/// Tables with fewer rows are searched exactly unless an index is asked
/// for: below this an exact scan takes milliseconds and misses nothing; at
/// 100,000 rows of 512 it takes 276 ms and the index 8.5 (BENCHMARKS.md,
/// "LanceDB").
pub const ANN_MIN_ROWS: usize = 100_000;

/// IVF partitions searched per query through an index.
const NPROBES: usize = 32;
/// Rows re-ranked by their full vectors per neighbour asked for.
const REFINE: u32 = 10;

/// A table in a LanceDB database folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub db: PathBuf,
    pub name: String,
}

/// Which approximate index to build over the vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ann {
    /// IVF-PQ from [`ANN_MIN_ROWS`] rows on, none below.
    Auto,
    None,
    /// Inverted file with product quantisation: small on disk, fast to build.
    IvfPq,
    /// Inverted file of HNSW graphs over scalar-quantised vectors.
    IvfHnswSq,
}

/// What to do when the table exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Refuse: a table is never replaced silently.
    Create,
    Overwrite,
    /// Add the rows (the vectors must be as long as the table's).
    Append,
}

/// What [`write`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    /// Rows in the table afterwards.
    pub rows: usize,
    /// The ANN index built, if any.
    pub index: Option<&'static str>,
    pub seconds: f64,
}

/// What a table holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    pub rows: usize,
    pub dim: usize,
    /// The kinds of the vector column's indices (empty: none).
    pub indices: Vec<String>,
}

impl Table {
    /// `lancedb://DB/TABLE`.
    pub fn parse(uri: &str) -> Option<Table> {
        let rest = uri.strip_prefix(SCHEME)?;
        let path = Path::new(rest);
        let name = path
            .file_name()?
            .to_str()?
            .trim_end_matches(".lance")
            .to_string();
        let db = path.parent().map_or_else(
            || PathBuf::from("."),
            |p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            },
        );
        (!name.is_empty()).then_some(Table { db, name })
    }

    /// The table's folder, `DB/TABLE.lance`.
    pub fn folder(&self) -> PathBuf {
        self.db.join(format!("{}.lance", self.name))
    }

    /// The table whose folder is `folder` (`DB/TABLE.lance`).
    pub fn at(folder: &Path) -> Option<Table> {
        let name = folder.file_name()?.to_str()?.strip_suffix(".lance")?;
        let db = folder
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        (!name.is_empty()).then(|| Table {
            db,
            name: name.to_string(),
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> RunError {
        RunError::Unsupported(format!(
            "LanceDB table `{}`: {message}",
            self.folder().shown()
        ))
    }
}

fn runtime(table: &Table) -> Result<tokio::runtime::Runtime, RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| table.error(format!("cannot start its runtime: {e}")))
}

async fn connect(table: &Table) -> Result<lancedb::Connection, RunError> {
    // Absolute: LanceDB reads a bare name such as `db` as a cloud URI.
    let db = std::path::absolute(&table.db).map_err(|e| table.error(e))?;
    let uri = db
        .to_str()
        .ok_or_else(|| table.error("the path is not UTF-8"))?;
    lancedb::connect(uri)
        .execute()
        .await
        .map_err(|e| table.error(e))
}

/// Writes `e` into `table` (creating the database folder), then builds the
/// ANN index `ann` asks for over the whole table.
pub fn write(table: &Table, e: &Embeddings, mode: Mode, ann: Ann) -> Result<Written, RunError> {
    if e.is_empty() {
        return Err(table.error("there are no vectors to write"));
    }
    std::fs::create_dir_all(&table.db).map_err(RunError::io(&table.db))?;
    let started = Instant::now();
    let data = super::rows::record_batch(e).map_err(|err| table.error(err))?;
    runtime(table)?.block_on(async {
        let db = connect(table).await?;
        let exists = table.folder().exists();
        let t = match (mode, exists) {
            (Mode::Create, true) => {
                return Err(table.error(
                    "it exists already; `--mode overwrite` replaces it, `--mode append` adds to it",
                ))
            }
            (Mode::Append, true) => {
                let t = db
                    .open_table(&table.name)
                    .execute()
                    .await
                    .map_err(|err| table.error(err))?;
                let info = info_of(&t).await.map_err(|err| table.error(err))?;
                if info.dim != e.dim {
                    return Err(table.error(format!(
                        "its vectors are {}-long and these are {}-long: they come from different models",
                        info.dim, e.dim
                    )));
                }
                t.add(data).execute().await.map_err(|err| table.error(err))?;
                t
            }
            (Mode::Overwrite, _) | (_, false) => db
                .create_table(&table.name, data)
                .mode(lancedb::database::CreateTableMode::Overwrite)
                .execute()
                .await
                .map_err(|err| table.error(err))?,
        };
        let rows = t.count_rows(None).await.map_err(|err| table.error(err))?;
        let kind = match ann {
            Ann::Auto if rows >= ANN_MIN_ROWS => Some(Ann::IvfPq),
            Ann::Auto | Ann::None => None,
            other => Some(other),
        };
        let index = match kind {
            Some(Ann::IvfHnswSq) => {
                let builder = IvfHnswSqIndexBuilder::default().distance_type(DistanceType::Cosine);
                t.create_index(&["vector"], lancedb::index::Index::IvfHnswSq(builder))
                    .execute()
                    .await
                    .map_err(|err| table.error(format!("cannot build its IVF-HNSW-SQ index: {err}")))?;
                Some("ivf_hnsw_sq")
            }
            Some(_) => {
                let builder = IvfPqIndexBuilder::default().distance_type(DistanceType::Cosine);
                t.create_index(&["vector"], lancedb::index::Index::IvfPq(builder))
                    .execute()
                    .await
                    .map_err(|err| table.error(format!("cannot build its IVF-PQ index: {err}")))?;
                Some("ivf_pq")
            }
            None => None,
        };
        Ok(Written {
            rows,
            index,
            seconds: started.elapsed().as_secs_f64(),
        })
    })
}

async fn info_of(t: &lancedb::Table) -> lancedb::Result<Info> {
    let schema = t.schema().await?;
    let dim = match schema
        .field_with_name("vector")
        .map(|f| f.data_type().clone())
    {
        Ok(DataType::FixedSizeList(_, n)) => n as usize,
        _ => 0,
    };
    let indices = t
        .list_indices()
        .await?
        .into_iter()
        .filter(|i| i.columns.iter().any(|c| c == "vector"))
        .map(|i| i.index_type.to_string())
        .collect();
    Ok(Info {
        rows: t.count_rows(None).await?,
        dim,
        indices,
    })
}

/// The table's rows, vector length and indices.
pub fn info(table: &Table) -> Result<Info, RunError> {
    runtime(table)?.block_on(async {
        let t = open(table).await?;
        info_of(&t).await.map_err(|e| table.error(e))
    })
}

async fn open(table: &Table) -> Result<lancedb::Table, RunError> {
    if !table.folder().is_dir() {
        return Err(table.error(format!(
            "no such table; `wfrun embed RUN IMAGES -o {SCHEME}{}/{}` writes one",
            table.db.shown(),
            table.name
        )));
    }
    connect(table)
        .await?
        .open_table(&table.name)
        .execute()
        .await
        .map_err(|e| table.error(e))
}

/// The `k` nearest rows of `table` to each query by cosine similarity,
/// through the table's ANN index unless `exact`; a query that is itself a
/// row (the same path) is not its own neighbour.
pub fn search(
    table: &Table,
    queries: &Embeddings,
    k: usize,
    exact: bool,
) -> Result<Vec<Vec<Hit>>, RunError> {
    Opened::open(table)?.search(queries, k, exact)
}

/// A table opened once for many searches.
pub struct Opened {
    runtime: tokio::runtime::Runtime,
    table: Table,
    opened: lancedb::Table,
    pub info: Info,
}

impl Opened {
    pub fn open(table: &Table) -> Result<Opened, RunError> {
        let runtime = runtime(table)?;
        let (opened, info) = runtime.block_on(async {
            let t = open(table).await?;
            let info = info_of(&t).await.map_err(|e| table.error(e))?;
            Ok::<_, RunError>((t, info))
        })?;
        Ok(Opened {
            runtime,
            table: table.clone(),
            opened,
            info,
        })
    }

    /// As [`search`].
    pub fn search(
        &self,
        queries: &Embeddings,
        k: usize,
        exact: bool,
    ) -> Result<Vec<Vec<Hit>>, RunError> {
        let table = &self.table;
        if self.info.dim != queries.dim {
            return Err(table.error(format!(
                "its vectors are {}-long and the queries {}-long: they come from different models",
                self.info.dim, queries.dim
            )));
        }
        self.runtime.block_on(async {
            let mut found = Vec::with_capacity(queries.len());
            for (i, path) in queries.paths.iter().enumerate() {
                let mut q = self
                    .opened
                    .query()
                    .nearest_to(queries.row(i))
                    .map_err(|e| table.error(e))?
                    .distance_type(DistanceType::Cosine)
                    .limit(k + 1)
                    .select(Select::columns(&["path", "concepts"]));
                q = if exact {
                    q.bypass_vector_index()
                } else {
                    // The index proposes REFINE × k rows by their quantised
                    // vectors; their full vectors rank them (BENCHMARKS.md,
                    // "LanceDB": recall against exact search).
                    q.nprobes(NPROBES)
                        .map_err(|e| table.error(e))?
                        .refine_factor(REFINE)
                };
                let batches: Vec<RecordBatch> = q
                    .execute()
                    .await
                    .map_err(|e| table.error(e))?
                    .try_collect()
                    .await
                    .map_err(|e| table.error(e))?;
                let mut hits = hits_of(&batches).map_err(|e| table.error(e))?;
                if let Some(at) = hits.iter().position(|h| h.path == *path) {
                    hits.remove(at);
                }
                hits.truncate(k);
                found.push(hits);
            }
            Ok(found)
        })
    }
}

/// The hits of a query's result batches, nearest first.
fn hits_of(batches: &[RecordBatch]) -> Result<Vec<Hit>, String> {
    let mut hits = Vec::new();
    for b in batches {
        let column = |name: &str| {
            b.column_by_name(name)
                .ok_or_else(|| format!("the result has no `{name}` column"))
        };
        let paths = column("path")?
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("`path` is not text")?;
        let concepts = column("concepts")?
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or("`concepts` is not a list")?;
        let distances = column("_distance")?
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or("`_distance` is not a number")?;
        for r in 0..b.num_rows() {
            let names = concepts.value(r);
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or("`concepts` is not a list of text")?;
            hits.push(Hit {
                path: PathBuf::from(paths.value(r)),
                concepts: (0..names.len())
                    .map(|j| names.value(j).to_string())
                    .collect(),
                // LanceDB's cosine distance is 1 - cosine similarity.
                score: (1.0 - distances.value(r)).clamp(-1.0, 1.0),
            });
        }
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(hits)
}
