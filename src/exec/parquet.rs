//! Embeddings as a Parquet file (feature `parquet`): one row per image with
//! its `path`, `concepts` (a list of text) and `vector` (a fixed-size list of
//! float32), for tools that read tables (pandas, Polars, DuckDB, Spark).

use std::path::Path;

use super::model::Embeddings;
use super::RunError;

/// Writes `e` to `path` as Parquet (Snappy-compressed), atomically.
pub fn write(e: &Embeddings, path: &Path) -> Result<(), RunError> {
    let batch = super::rows::record_batch(e).map_err(|err| RunError::RunFile {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(RunError::io(parent))?;
    }
    crate::atomic::replace(path, |tmp| {
        let file = std::fs::File::create(tmp)?;
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))
            .map_err(std::io::Error::other)?;
        writer.write(&batch).map_err(std::io::Error::other)?;
        writer.close().map_err(std::io::Error::other)?;
        Ok(())
    })
    .map_err(RunError::io(path))
}
