//! Embeddings as Arrow rows (`path`, `concepts`, `vector`), the layout a
//! LanceDB table ([`super::lance`]) and a Parquet file ([`super::parquet`])
//! share.

use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{FixedSizeListArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use super::model::Embeddings;

/// The rows of `e` as one Arrow record batch: `path`, `concepts`, `vector`.
pub fn record_batch(e: &Embeddings) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let dim = i32::try_from(e.dim).map_err(|_| {
        arrow_schema::ArrowError::InvalidArgumentError(format!("{}-long vectors", e.dim))
    })?;
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new(
            "concepts",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new("vector", DataType::FixedSizeList(item, dim), false),
    ]));
    let paths = StringArray::from_iter_values(e.paths.iter().map(|p| p.display().to_string()));
    let mut concepts =
        arrow_array::builder::ListBuilder::new(arrow_array::builder::StringBuilder::new());
    for cs in &e.concepts {
        for c in cs {
            concepts.values().append_value(c);
        }
        concepts.append(true);
    }
    let vectors = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
        (0..e.len()).map(|i| Some(e.row(i).iter().map(|&v| Some(v)).collect::<Vec<_>>())),
        dim,
    );
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(paths),
            Arc::new(concepts.finish()),
            Arc::new(vectors),
        ],
    )
}
