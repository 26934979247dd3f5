//! Dataset shards: the one writer and reader that every dataset (synthetic or real) goes through.
//!
//! Layout of a dataset directory:
//! - `shard-00000.parquet`, ... with columns `id` (utf8), `lat`, `lon` (f64), `image` (binary,
//!   nullable: bytes stored inline), `image_path` (utf8, nullable: bytes referenced by path),
//!   `sha256` (utf8, of the image bytes), `author` (utf8, nullable), `meta` (utf8 JSON, nullable);
//! - `manifest.json` (schema `georag.dataset/v1`), written last.
//!
//! Invariants: each shard holds exactly `shard_rows` rows except the last, written as row groups
//! of at most [`ROW_GROUP_ROWS`] rows and [`ROW_GROUP_BYTES`] of inline images so that memory stays
//! bounded whatever the image sizes; each shard's
//! checksum (xxh3-128; sha256 in datasets written before 2026-12-03) is computed while it is written; each shard and the manifest are written atomically, and the manifest only after every shard it lists, so a
//! directory with a manifest is complete. The dataset fingerprint is a digest of every row's id,
//! coordinates and image hash, in order.

use crate::util::fingerprint::Fingerprint;
use crate::util::pq::{self, ParquetError};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::io::Write;
use crate::util::atomic;
use arrow::array::{Array, ArrayRef, BinaryArray, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MANIFEST_SCHEMA: &str = "georag.dataset/v1";
pub const MANIFEST_FILE: &str = "manifest.json";

/// One dataset row.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetRow {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    pub image: Option<Vec<u8>>,
    pub image_path: Option<String>,
    pub sha256: String,
    pub author: Option<String>,
    pub meta: Option<String>,
}

/// A shard listed in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub rows: usize,
    /// sha256 of the shard file (datasets written before 2026-12-03), checked by `georag
    /// datasets verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// xxh3-128 of the shard file (hex), what the writer records now; checked by `georag datasets
    /// verify`. A corruption check: row identity is each image's sha256, not this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<String>,
}

/// `manifest.json` of a dataset directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    /// Digest of all rows (ids, coordinates, image hashes), in order.
    pub fingerprint: String,
    pub n_rows: usize,
    pub shard_rows: usize,
    pub shards: Vec<ShardInfo>,
    /// Where the data came from (generator parameters, source files).
    pub provenance: serde_json::Value,
    /// How pixels are produced from the stored bytes (part of the fingerprint).
    #[serde(default)]
    pub decode_policy: Option<String>,
    /// Directory that `image_path` entries are relative to (reference storage); `None` = the
    /// dataset directory.
    #[serde(default)]
    pub image_root: Option<String>,
    /// Validation summary written by `georag prepare`: counts per reason, examples, policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<serde_json::Value>,
}

/// Error of the shard layer.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
    #[error("{path}: {source}")]
    Manifest { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a georag dataset manifest: {message}")]
    BadManifest { path: PathBuf, message: String },
    #[error("{path}: row {row}: {message}")]
    Row { path: PathBuf, row: usize, message: String },
    #[error("{dir}: shard_rows must be > 0")]
    ShardRows { dir: PathBuf },
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("image", DataType::Binary, true),
        Field::new("image_path", DataType::Utf8, true),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("author", DataType::Utf8, true),
        Field::new("meta", DataType::Utf8, true),
    ]))
}

/// Rows per Parquet row group: the writer holds at most this many rows in memory, so a shard of
/// thousands of inline photos never sits in memory whole.
pub const ROW_GROUP_ROWS: usize = 256;

/// Inline image bytes per row group at most (a group closes at whichever limit comes first):
/// 256 photos of 160 KB are 41 MB, above glibc's largest mmap threshold (32 MiB), so every group's
/// buffers were fresh mappings, page-faulted in and returned; groups of at most 16 MiB reuse heap
/// memory. Row-group boundaries change neither the rows nor any fingerprint.
pub const ROW_GROUP_BYTES: usize = 16 << 20;

/// A `Write` that hashes what passes through it (the shard checksum, xxh3-128, computed while
/// writing).
struct HashingFile {
    file: File,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Start the kernel's writeback of what has been written to `f` so far, without waiting for it:
/// the fsync that closes a shard then finds little left to write. Without it that fsync stalls
/// the end of `georag prepare` for as long as the disk takes the whole shard (0.13 s of a 3 s run
/// on 2000 real photos, benches/README.md). Best effort: an error here is reported by that fsync.
fn start_writeback(f: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads the descriptor, which `f` keeps open.
        unsafe {
            libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

/// The shard being written: a Parquet writer on a temporary file.
struct OpenShard {
    writer: ArrowWriter<HashingFile>,
    tmp: PathBuf,
    path: PathBuf,
    file: String,
    rows: usize,
}

/// Streams rows into fixed-size shards, one row group of [`ROW_GROUP_ROWS`] at a time.
pub struct ShardWriter {
    dir: PathBuf,
    name: String,
    shard_rows: usize,
    pending: Vec<DatasetRow>,
    /// Inline image bytes in `pending`.
    pending_bytes: usize,
    open: Option<OpenShard>,
    shards: Vec<ShardInfo>,
    n_rows: usize,
    fp: Fingerprint,
}

impl ShardWriter {
    pub fn new(dir: &Path, name: &str, shard_rows: usize) -> Result<Self, ShardError> {
        if shard_rows == 0 {
            return Err(ShardError::ShardRows { dir: dir.to_path_buf() });
        }
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            shard_rows,
            pending: Vec::with_capacity(ROW_GROUP_ROWS.min(shard_rows)),
            pending_bytes: 0,
            open: None,
            shards: Vec::new(),
            n_rows: 0,
            fp: Self::initial_fingerprint(),
        })
    }

    fn initial_fingerprint() -> Fingerprint {
        let mut fp = Fingerprint::new(MANIFEST_SCHEMA);
        fp.field(crate::decode::DECODE_POLICY);
        fp
    }

    /// Continue a dataset whose first `shards` were written by an interrupted run: their keys
    /// (id, coordinates, image hash; never the image bytes) are read back for the fingerprint and
    /// returned, and later shard files are overwritten.
    pub fn resume(dir: &Path, name: &str, shard_rows: usize, shards: Vec<ShardInfo>) -> Result<(Self, Vec<RowKey>), ShardError> {
        let mut w = ShardWriter::new(dir, name, shard_rows)?;
        let mut keys = Vec::new();
        for s in &shards {
            for k in read_keys(&dir.join(&s.file))? {
                w.fp.field(&k.id).field(k.lat.to_le_bytes()).field(k.lon.to_le_bytes()).field(&k.sha256);
                w.n_rows += 1;
                keys.push(k);
            }
        }
        w.shards = shards;
        Ok((w, keys))
    }

    /// Shards written so far.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.shards
    }

    pub fn push(&mut self, row: DatasetRow) -> Result<(), ShardError> {
        self.fp.field(&row.id).field(row.lat.to_le_bytes()).field(row.lon.to_le_bytes()).field(&row.sha256);
        self.pending_bytes += row.image.as_ref().map_or(0, Vec::len);
        self.pending.push(row);
        self.n_rows += 1;
        let in_shard = self.open.as_ref().map_or(0, |o| o.rows) + self.pending.len();
        if in_shard == self.shard_rows {
            self.write_group()?;
            self.close_shard()?;
        } else if self.pending.len() >= ROW_GROUP_ROWS || self.pending_bytes >= ROW_GROUP_BYTES {
            self.write_group()?;
        }
        Ok(())
    }

    /// Write the pending rows as one row group of the open shard (opening it if needed).
    fn write_group(&mut self) -> Result<(), ShardError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.open.is_none() {
            let file = format!("shard-{:05}.parquet", self.shards.len());
            let path = self.dir.join(&file);
            let tmp = atomic::temp_for(&path)?;
            let f = File::create(&tmp).map_err(|source| ShardError::Manifest { path: tmp.clone(), source })?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_column_compression(ColumnPath::from("image"), Compression::UNCOMPRESSED)
                .build();
            let writer = ArrowWriter::try_new(HashingFile { file: f, hasher: xxhash_rust::xxh3::Xxh3::new() }, schema(), Some(props))
                .map_err(|source| ParquetError::Parquet { path: path.clone(), source })?;
            self.open = Some(OpenShard { writer, tmp, path, file, rows: 0 });
        }
        let o = self.open.as_mut().expect("opened above");
        let batch = rows_to_batch(&self.pending);
        o.writer.write(&batch).map_err(|source| ParquetError::Parquet { path: o.path.clone(), source })?;
        o.writer.flush().map_err(|source| ParquetError::Parquet { path: o.path.clone(), source })?;
        start_writeback(&o.writer.inner().file);
        o.rows += self.pending.len();
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Close the open shard: finish the file, fsync, rename into place, record its checksum.
    fn close_shard(&mut self) -> Result<(), ShardError> {
        let Some(o) = self.open.take() else { return Ok(()) };
        let perr = |source| ShardError::Parquet(ParquetError::Parquet { path: o.path.clone(), source });
        let inner = o.writer.into_inner().map_err(perr)?;
        let xxh3 = format!("{:032x}", inner.hasher.digest128());
        inner.file.sync_all().map_err(|source| ShardError::Manifest { path: o.tmp.clone(), source })?;
        drop(inner.file);
        std::fs::rename(&o.tmp, &o.path).map_err(|source| ShardError::Manifest { path: o.path.clone(), source })?;
        self.shards.push(ShardInfo { file: o.file, rows: o.rows, sha256: None, xxh3: Some(xxh3) });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ShardError> {
        self.write_group()?;
        self.close_shard()
    }

    /// Write the last shard and the manifest.
    pub fn finish(self, provenance: serde_json::Value) -> Result<Manifest, ShardError> {
        self.finish_with(provenance, None, None)
    }

    /// Write the last shard and the manifest, with an image root and a validation summary.
    pub fn finish_with(
        mut self,
        provenance: serde_json::Value,
        image_root: Option<String>,
        validation: Option<serde_json::Value>,
    ) -> Result<Manifest, ShardError> {
        self.flush()?;
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA.to_string(),
            name: self.name.clone(),
            fingerprint: self.fp.finish(),
            n_rows: self.n_rows,
            shard_rows: self.shard_rows,
            shards: self.shards.clone(),
            provenance,
            decode_policy: Some(crate::decode::DECODE_POLICY.to_string()),
            image_root,
            validation,
        };
        atomic::write_json(&self.dir.join(MANIFEST_FILE), &manifest)?;
        Ok(manifest)
    }
}

/// A binary column with its value buffer allocated once at its final size (`from_iter` grows it
/// by doubling: a row group of inline photos was copied about twice over).
fn binary_column<'a>(values: impl Iterator<Item = Option<&'a [u8]>> + Clone) -> BinaryArray {
    let (n, bytes) = values.clone().fold((0, 0), |(n, b), v| (n + 1, b + v.map_or(0, <[u8]>::len)));
    let mut b = arrow::array::BinaryBuilder::with_capacity(n, bytes);
    for v in values {
        b.append_option(v);
    }
    b.finish()
}

fn rows_to_batch(rows: &[DatasetRow]) -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str()))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lat))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lon))),
        Arc::new(binary_column(rows.iter().map(|r| r.image.as_deref()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.image_path.as_deref()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.sha256.as_str()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.author.as_deref()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.meta.as_deref()))),
    ];
    RecordBatch::try_new(schema(), cols).expect("columns match the shard schema")
}

/// The identity of a row without its image: what resume and verification need.
#[derive(Clone, Debug, PartialEq)]
pub struct RowKey {
    pub id: String,
    pub lat: f64,
    pub lon: f64,
    pub sha256: String,
}

/// Call `f` with each record batch of the shard at `path`, holding only `columns` (a column
/// projection: the image bytes are never read unless asked for).
pub fn for_each_projected(path: &Path, columns: &[&str], mut f: impl FnMut(&RecordBatch) -> Result<(), ShardError>) -> Result<(), ShardError> {
    let perr = |source| ShardError::Parquet(ParquetError::Parquet { path: path.to_path_buf(), source });
    let file = File::open(path).map_err(|source| ShardError::Manifest { path: path.to_path_buf(), source })?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
    let mask = ProjectionMask::columns(b.parquet_schema(), columns.iter().copied());
    for batch in b.with_projection(mask).build().map_err(perr)? {
        f(&batch.map_err(|source| ShardError::Parquet(ParquetError::Arrow { path: path.to_path_buf(), source }))?)?;
    }
    Ok(())
}

/// The id and coordinate columns of a projected batch.
pub fn key_columns<'a>(path: &Path, b: &'a RecordBatch) -> Result<(&'a StringArray, &'a Float64Array, &'a Float64Array), ShardError> {
    Ok((pq::column::<StringArray>(path, b, "id")?, pq::column::<Float64Array>(path, b, "lat")?, pq::column::<Float64Array>(path, b, "lon")?))
}

/// Read only the id, coordinates and image hash of a shard.
pub fn read_keys(path: &Path) -> Result<Vec<RowKey>, ShardError> {
    let mut out = Vec::new();
    for_each_projected(path, &["id", "lat", "lon", "sha256"], |b| {
        let (id, lat, lon) = key_columns(path, b)?;
        let sha = pq::column::<StringArray>(path, b, "sha256")?;
        out.extend((0..b.num_rows()).map(|r| RowKey { id: id.value(r).to_string(), lat: lat.value(r), lon: lon.value(r), sha256: sha.value(r).to_string() }));
        Ok(())
    })?;
    Ok(out)
}

/// Read only the id, coordinates and metadata JSON of a shard: what the place texts of `align`
/// are built from.
pub fn read_meta(path: &Path) -> Result<Vec<(String, f64, f64, Option<String>)>, ShardError> {
    let mut out = Vec::new();
    for_each_projected(path, &["id", "lat", "lon", "meta"], |b| {
        let (id, lat, lon) = key_columns(path, b)?;
        let meta = pq::column::<StringArray>(path, b, "meta")?;
        out.extend((0..b.num_rows()).map(|r| (id.value(r).to_string(), lat.value(r), lon.value(r), (!meta.is_null(r)).then(|| meta.value(r).to_string()))));
        Ok(())
    })?;
    Ok(out)
}

/// The rows of one record batch of a shard.
fn batch_rows(path: &Path, b: &RecordBatch) -> Result<Vec<DatasetRow>, ShardError> {
    let id = pq::column::<StringArray>(path, b, "id")?;
    let lat = pq::column::<Float64Array>(path, b, "lat")?;
    let lon = pq::column::<Float64Array>(path, b, "lon")?;
    let image = pq::column::<BinaryArray>(path, b, "image")?;
    let image_path = pq::column::<StringArray>(path, b, "image_path")?;
    let sha = pq::column::<StringArray>(path, b, "sha256")?;
    let author = pq::column::<StringArray>(path, b, "author")?;
    let meta = pq::column::<StringArray>(path, b, "meta")?;
    let opt_s = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
    Ok((0..b.num_rows())
        .map(|r| DatasetRow {
            id: id.value(r).to_string(),
            lat: lat.value(r),
            lon: lon.value(r),
            image: (!image.is_null(r)).then(|| image.value(r).to_vec()),
            image_path: opt_s(image_path, r),
            sha256: sha.value(r).to_string(),
            author: opt_s(author, r),
            meta: opt_s(meta, r),
        })
        .collect())
}

/// An opened dataset directory.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Dataset {
    /// Open a dataset directory; fails when the manifest is missing (incomplete write) or invalid.
    pub fn open(dir: &Path) -> Result<Self, ShardError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ShardError::Manifest { path: path.clone(), source })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| ShardError::BadManifest { path: path.clone(), message: e.to_string() })?;
        if manifest.schema != MANIFEST_SCHEMA {
            return Err(ShardError::BadManifest { path, message: format!("schema `{}`", manifest.schema) });
        }
        Ok(Dataset { dir: dir.to_path_buf(), manifest })
    }

    pub fn len(&self) -> usize {
        self.manifest.n_rows
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.n_rows == 0
    }

    /// Read one shard's rows.
    pub fn read_shard(&self, i: usize) -> Result<Vec<DatasetRow>, ShardError> {
        let mut out = Vec::with_capacity(self.manifest.shards[i].rows);
        self.for_each_chunk(i, usize::MAX, |rows| {
            out.extend(rows);
            Ok::<_, ShardError>(())
        })?;
        Ok(out)
    }

    /// Stream one shard in chunks of at most `chunk_rows` rows (at least one Parquet row group
    /// is read at a time), so that shards of inline photos never sit in memory whole. Checks the
    /// row count against the manifest at the end.
    pub fn for_each_chunk<E: From<ShardError>>(
        &self,
        i: usize,
        chunk_rows: usize,
        mut f: impl FnMut(Vec<DatasetRow>) -> Result<(), E>,
    ) -> Result<(), E> {
        let info = &self.manifest.shards[i];
        let path = self.dir.join(&info.file);
        let perr = |source| ShardError::Parquet(ParquetError::Parquet { path: path.clone(), source });
        let file = File::open(&path).map_err(|source| ShardError::Manifest { path: path.clone(), source })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(chunk_rows.clamp(1, 8192)).build())
            .map_err(perr)?;
        let mut seen = 0;
        let mut pending: Vec<DatasetRow> = Vec::new();
        for b in reader {
            let b = b.map_err(|source| ShardError::Parquet(ParquetError::Arrow { path: path.clone(), source }))?;
            pending.extend(batch_rows(&path, &b)?);
            seen += b.num_rows();
            if pending.len() >= chunk_rows {
                f(std::mem::take(&mut pending))?;
            }
        }
        if !pending.is_empty() {
            f(pending)?;
        }
        if seen != info.rows {
            return Err(ShardError::Row { path, row: seen, message: format!("shard has {seen} rows, manifest says {}", info.rows) }.into());
        }
        Ok(())
    }

    /// The image bytes of a row: inline, or read from `image_path` relative to the manifest's
    /// image root (or the dataset directory).
    pub fn image_bytes(&self, row: &DatasetRow) -> Result<Vec<u8>, std::io::Error> {
        match (&row.image, &row.image_path) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(p)) => {
                let root = self.manifest.image_root.as_ref().map(PathBuf::from).unwrap_or_else(|| self.dir.clone());
                std::fs::read(root.join(p))
            }
            (None, None) => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "row has neither image bytes nor image_path")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> DatasetRow {
        DatasetRow {
            id: format!("img{i}"),
            lat: i as f64 * 0.5 - 45.0,
            lon: -170.0 + i as f64,
            image: (i % 3 != 0).then(|| vec![i as u8; i + 1]),
            image_path: (i % 3 == 0).then(|| format!("images/{i}.jpg")),
            sha256: format!("{i:064x}"),
            author: (i % 2 == 0).then(|| format!("user{i}")),
            meta: None,
        }
    }

    /// A row group closes at ROW_GROUP_BYTES of inline images as well as at ROW_GROUP_ROWS rows;
    /// the rows and the fingerprint are those of the same rows written in other groups.
    #[test]
    fn row_groups_close_at_the_byte_limit_without_changing_the_rows() {
        let dir = std::env::temp_dir().join(format!("georag-shard-bytes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let big = |i: usize| DatasetRow { image: Some(vec![i as u8; 1 << 20]), image_path: None, ..row(i) };
        let mut w = ShardWriter::new(&dir, "t", 100).unwrap();
        for i in 0..40 {
            w.push(big(i)).unwrap();
        }
        let m = w.finish(serde_json::json!({})).unwrap();
        let f = File::open(dir.join(&m.shards[0].file)).unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&parquet::file::reader::SerializedFileReader::new(f).unwrap()).clone();
        let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, vec![16, 16, 8], "16 MiB of 1 MiB images per group");
        let back = Dataset::open(&dir).unwrap().read_shard(0).unwrap();
        assert_eq!(back, (0..40).map(big).collect::<Vec<_>>());
        let mut fp = ShardWriter::initial_fingerprint();
        for r in &back {
            fp.field(&r.id).field(r.lat.to_le_bytes()).field(r.lon.to_le_bytes()).field(&r.sha256);
        }
        assert_eq!(fp.finish(), m.fingerprint);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shards_round_trip_with_fixed_rows_and_manifest() {
        let dir = std::env::temp_dir().join(format!("georag-shards-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = ShardWriter::new(&dir, "t", 4).unwrap();
        for i in 0..10 {
            w.push(row(i)).unwrap();
        }
        let m = w.finish(serde_json::json!({"test": true})).unwrap();
        assert_eq!(m.n_rows, 10);
        assert_eq!(m.shards.iter().map(|s| s.rows).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert!(m.shards.iter().all(|s| s.xxh3.as_ref().is_some_and(|h| h.len() == 32) && s.sha256.is_none()));
        let d = Dataset::open(&dir).unwrap();
        let back: Vec<DatasetRow> = (0..3).flat_map(|i| d.read_shard(i).unwrap()).collect();
        assert_eq!(back, (0..10).map(row).collect::<Vec<_>>());
        // The fingerprint depends on content: changing one coordinate changes it.
        let dir2 = dir.with_extension("b");
        let mut w = ShardWriter::new(&dir2, "t", 4).unwrap();
        for i in 0..10 {
            let mut r = row(i);
            if i == 7 {
                r.lat += 1e-9;
            }
            w.push(r).unwrap();
        }
        assert_ne!(w.finish(serde_json::Value::Null).unwrap().fingerprint, m.fingerprint);
        // No temp files left behind.
        assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".tmp")));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&dir2).unwrap();
    }

    #[test]
    fn missing_manifest_is_an_error_naming_the_file() {
        let err = Dataset::open(Path::new("/nonexistent/ds")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ds/manifest.json"), "{err}");
    }
}
