//! Embedding: the [`Encoder`] trait, encoder selection from the config, and the embedding store
//! (Parquet shards of `FixedSizeList<f32>` keyed by encoder + dataset fingerprints).
//!
//! Invariants:
//! - every vector an encoder returns is L2-normalised (inner product = cosine);
//! - images are decoded only by [`crate::decode::decode_rgb`]; a row that fails to decode is kept
//!   with status `decode_failed` and a null vector, never dropped;
//! - the store directory is `embeddings/<encoder fp>-<dataset fp>/`, one Parquet file per dataset
//!   shard, each written atomically, and `done.json` last: a run that crashes resumes at the first
//!   missing shard, and a complete store is reused as is.

pub mod im2gps;

use crate::decode::{self, DecodeError};
use crate::ingest::{Dataset, ShardError};
use crate::record::Status;
use crate::util::atomic;
use crate::util::pq::{self, ParquetError};
use crate::util::progress::Progress;
use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An image encoder: decoded images in, L2-normalised `f32` vectors out.
pub trait Encoder: Send + Sync {
    fn name(&self) -> &str;
    /// Output dimension.
    fn dim(&self) -> usize;
    /// Digest of everything that determines the vectors (weights, preprocessing, parameters).
    fn fingerprint(&self) -> &str;
    /// Encode a batch; returns `images.len() * dim()` values, row-major, each row unit-norm.
    fn encode_batch(&self, images: &[RgbImage]) -> Result<Vec<f32>, EncodeError>;
}

/// Encoder choice in the config (`encoder: {kind: im2gps, ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderSpec {
    /// Tiny image + L*a*b* histogram (Hays & Efros 2008).
    Im2gps {
        #[serde(flatten)]
        params: im2gps::Im2gpsParams,
    },
}

/// Error of the embedding stage.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("encoder config: {0}")]
    Config(String),
    #[error("encoder {encoder}: {message}")]
    Model { encoder: String, message: String },
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
    #[error("{path}: embedding store is inconsistent: {message}")]
    Store { path: PathBuf, message: String },
}

/// Build the encoder a spec names.
pub fn build(spec: &EncoderSpec) -> Result<Box<dyn Encoder>, EncodeError> {
    match spec {
        EncoderSpec::Im2gps { params } => Ok(Box::new(im2gps::Im2gpsEncoder::new(params.clone())?)),
    }
}

/// All embeddings of a dataset, in dataset order.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub dim: usize,
    pub ids: Vec<String>,
    pub lat: Vec<f64>,
    pub lon: Vec<f64>,
    pub status: Vec<Status>,
    /// Decode error text for rows with status `decode_failed`.
    pub errors: Vec<Option<String>>,
    /// `len * dim` values; rows that failed are zeros.
    pub vectors: Vec<f32>,
    /// The store directory.
    pub dir: PathBuf,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
    pub fn n_failed(&self) -> usize {
        self.status.iter().filter(|s| **s != Status::Ok).count()
    }
}

fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new(
            "vector",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32),
            true,
        ),
    ]))
}

/// Options of the embedding stage.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    pub batch_size: usize,
    pub max_pixels: u64,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { batch_size: 64, max_pixels: decode::DEFAULT_MAX_PIXELS }
    }
}

/// Marker written last into a complete store.
#[derive(Serialize, Deserialize)]
struct Done {
    encoder: String,
    encoder_fingerprint: String,
    dataset: String,
    dataset_fingerprint: String,
    dim: usize,
    rows: usize,
    decode_failed: usize,
}

/// The store directory of a dataset under an encoder.
pub fn store_dir(cache_dir: &Path, encoder: &dyn Encoder, ds: &Dataset) -> PathBuf {
    cache_dir.join("embeddings").join(format!("{}-{}", encoder.fingerprint(), ds.manifest.fingerprint))
}

/// Embed a dataset, reusing complete or partial stores. Returns the embeddings and whether every
/// shard was reused.
pub fn embed_dataset(
    ds: &Dataset,
    encoder: &dyn Encoder,
    cache_dir: &Path,
    opts: &EmbedOptions,
    label: &str,
) -> Result<(Embeddings, bool), EncodeError> {
    let dir = store_dir(cache_dir, encoder, ds);
    let dim = encoder.dim();
    let done_path = dir.join("done.json");
    let reused_all = done_path.exists();
    let progress = Progress::new(&format!("embed {label}"), ds.len() as u64);
    let mut emb = Embeddings { dim, ids: vec![], lat: vec![], lon: vec![], status: vec![], errors: vec![], vectors: vec![], dir: dir.clone() };
    for (si, info) in ds.manifest.shards.iter().enumerate() {
        let path = dir.join(format!("emb-{si:05}.parquet"));
        if !path.exists() {
            let rows = ds.read_shard(si)?;
            let batch = embed_rows(ds, &rows, encoder, opts, &progress)?;
            pq::write(&path, schema(dim), &[batch], &[])?;
        } else {
            progress.inc(info.rows as u64);
        }
        read_store_shard(&path, dim, info.rows, &mut emb)?;
    }
    progress.finish();
    if !reused_all {
        atomic::write_json(
            &done_path,
            &Done {
                encoder: encoder.name().to_string(),
                encoder_fingerprint: encoder.fingerprint().to_string(),
                dataset: ds.manifest.name.clone(),
                dataset_fingerprint: ds.manifest.fingerprint.clone(),
                dim,
                rows: emb.len(),
                decode_failed: emb.n_failed(),
            },
        )?;
    }
    Ok((emb, reused_all))
}

fn embed_rows(
    ds: &Dataset,
    rows: &[crate::ingest::DatasetRow],
    encoder: &dyn Encoder,
    opts: &EmbedOptions,
    progress: &Progress,
) -> Result<RecordBatch, EncodeError> {
    let dim = encoder.dim();
    // Decode and encode in parallel batches; a decode failure becomes a status.
    let chunks: Vec<Result<Vec<(Result<Vec<f32>, String>,)>, EncodeError>> = rows
        .par_chunks(opts.batch_size.max(1))
        .map(|chunk| {
            let decoded: Vec<Result<RgbImage, String>> = chunk
                .par_iter()
                .map(|r| {
                    let bytes = ds.image_bytes(r).map_err(|e| format!("reading image: {e}"))?;
                    decode::decode_rgb(&bytes, opts.max_pixels).map_err(|e: DecodeError| e.to_string())
                })
                .collect();
            let ok: Vec<RgbImage> = decoded.iter().filter_map(|d| d.as_ref().ok().cloned()).collect();
            let vecs = encoder.encode_batch(&ok)?;
            let mut it = vecs.chunks(dim.max(1));
            let out = decoded
                .into_iter()
                .map(|d| (d.map(|_| it.next().expect("one vector per decoded image").to_vec()),))
                .collect();
            progress.inc(chunk.len() as u64);
            Ok(out)
        })
        .collect();
    let mut values = Vec::with_capacity(rows.len() * dim);
    let mut status = Vec::with_capacity(rows.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(rows.len());
    let mut valid = Vec::with_capacity(rows.len());
    for c in chunks {
        for (r,) in c? {
            match r {
                Ok(v) => {
                    values.extend_from_slice(&v);
                    status.push(Status::Ok.as_str());
                    errors.push(None);
                    valid.push(true);
                }
                Err(e) => {
                    values.extend(std::iter::repeat_n(0f32, dim));
                    status.push(Status::DecodeFailed.as_str());
                    errors.push(Some(e));
                    valid.push(false);
                }
            }
        }
    }
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(field, dim as i32, Arc::new(Float32Array::from(values)), Some(valid.into()))
        .expect("values length is rows * dim");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str()))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lat))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lon))),
        Arc::new(StringArray::from_iter_values(status)),
        Arc::new(StringArray::from(errors)),
        Arc::new(list),
    ];
    Ok(RecordBatch::try_new(schema(dim), cols).expect("columns match the embedding schema"))
}

fn read_store_shard(path: &Path, dim: usize, expect_rows: usize, emb: &mut Embeddings) -> Result<(), EncodeError> {
    let before = emb.len();
    for b in pq::read(path)? {
        let id = pq::column::<StringArray>(path, &b, "id")?;
        let lat = pq::column::<Float64Array>(path, &b, "lat")?;
        let lon = pq::column::<Float64Array>(path, &b, "lon")?;
        let status = pq::column::<StringArray>(path, &b, "status")?;
        let error = pq::column::<StringArray>(path, &b, "error")?;
        let vec = pq::column::<FixedSizeListArray>(path, &b, "vector")?;
        if vec.value_length() as usize != dim {
            return Err(EncodeError::Store { path: path.to_path_buf(), message: format!("dimension {} != encoder's {dim}", vec.value_length()) });
        }
        let values = vec.values().as_any().downcast_ref::<Float32Array>().ok_or_else(|| EncodeError::Store {
            path: path.to_path_buf(),
            message: "vector values are not f32".into(),
        })?;
        for r in 0..b.num_rows() {
            emb.ids.push(id.value(r).to_string());
            emb.lat.push(lat.value(r));
            emb.lon.push(lon.value(r));
            let st = Status::parse(status.value(r)).ok_or_else(|| EncodeError::Store {
                path: path.to_path_buf(),
                message: format!("row {r}: unknown status `{}`", status.value(r)),
            })?;
            emb.status.push(st);
            emb.errors.push((!error.is_null(r)).then(|| error.value(r).to_string()));
            let off = vec.value_offset_at(r);
            emb.vectors.extend_from_slice(&values.values()[off..off + dim]);
        }
    }
    if emb.len() - before != expect_rows {
        return Err(EncodeError::Store {
            path: path.to_path_buf(),
            message: format!("{} rows, the dataset shard has {expect_rows}", emb.len() - before),
        });
    }
    Ok(())
}
