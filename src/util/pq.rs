//! Parquet I/O shared by every data-plane artefact (dataset shards, embeddings, predictions):
//! atomic writes of record batches, whole-file reads.

use crate::util::atomic;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Error of a Parquet read or write, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error("{path}: {source}")]
    Arrow { path: PathBuf, source: arrow::error::ArrowError },
    #[error("{path}: column `{column}`: {message}")]
    Column { path: PathBuf, column: String, message: String },
    #[error(transparent)]
    Atomic(#[from] atomic::AtomicWriteError),
}

/// Write batches to `path` atomically. Snappy compression, except for columns listed in
/// `uncompressed` (already-compressed payloads such as JPEG bytes).
pub fn write(path: &Path, schema: SchemaRef, batches: &[RecordBatch], uncompressed: &[&str]) -> Result<(), ParquetError> {
    write_stream(path, schema, batches.iter().map(|b| Ok(b.clone())), uncompressed, None)
}

/// [`write`] for batches made one at a time. With `group_rows`, a row group is written out
/// every that many rows, so the writer holds about one group of encoded data instead of the
/// whole file (parquet's default group is 1 M rows).
pub fn write_stream(
    path: &Path,
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>,
    uncompressed: &[&str],
    group_rows: Option<usize>,
) -> Result<(), ParquetError> {
    let tmp = atomic::temp_for(path)?;
    let p = |source| ParquetError::Parquet { path: path.to_path_buf(), source };
    let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
    if let Some(g) = group_rows {
        props = props.set_max_row_group_row_count(Some(g.max(1)));
    }
    for c in uncompressed {
        props = props.set_column_compression(ColumnPath::from(*c), Compression::UNCOMPRESSED);
    }
    let result = (|| {
        let file = File::create(&tmp).map_err(|source| ParquetError::Io { path: path.to_path_buf(), source })?;
        let mut w = ArrowWriter::try_new(file, schema, Some(props.build())).map_err(p)?;
        for b in batches {
            let b = b.map_err(|source| ParquetError::Arrow { path: path.to_path_buf(), source })?;
            w.write(&b).map_err(p)?;
        }
        w.close().map_err(p)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    atomic::commit(&tmp, path)?;
    Ok(())
}

/// Read all batches of a Parquet file.
pub fn read(path: &Path) -> Result<Vec<RecordBatch>, ParquetError> {
    let file = File::open(path).map_err(|source| ParquetError::Io { path: path.to_path_buf(), source })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|source| ParquetError::Parquet { path: path.to_path_buf(), source })?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ParquetError::Arrow { path: path.to_path_buf(), source })
}

/// Downcast a named column, with an error naming the file and column.
pub fn column<'a, T: 'static>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a T, ParquetError> {
    let col = batch.column_by_name(name).ok_or_else(|| ParquetError::Column {
        path: path.to_path_buf(),
        column: name.to_string(),
        message: "missing".into(),
    })?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| ParquetError::Column {
        path: path.to_path_buf(),
        column: name.to_string(),
        message: format!("unexpected type {}", col.data_type()),
    })
}
