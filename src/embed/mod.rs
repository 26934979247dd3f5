//! Embedding: the [`Encoder`] trait, encoder selection from the config, and the embedding store
//! (Parquet shards of `FixedSizeList<f32>` keyed by encoder + dataset fingerprints).
//!
//! Invariants:
//! - every vector an encoder returns is L2-normalised (inner product = cosine);
//! - images are decoded only by [`crate::decode::decode_rgb`]; a row that fails to decode is kept
//!   with status `decode_failed` and a null vector, never dropped;
//! - the store directory is `embeddings/<encoder fp>-<dataset fp>/`, one Parquet file per dataset
//!   shard, each written atomically, and `done.json` last: a run that crashes resumes at the first
//!   missing shard, and a complete store is reused as is;
//! - shards can be split over processes ([`Worker`]): each writes only the shards it owns, and
//!   whoever finds every shard present reads them all and writes `done.json`;
//! - decode + preprocess ([`Encoder::prepare`]) run on the rayon pool one batch ahead of the
//!   model, through a bounded channel.

pub mod act;
pub mod aligned;
pub mod clip;
pub mod clip_text;
pub mod geoclip;
pub mod hf;
pub mod im2gps;
pub mod preprocess;
pub mod siglip;
pub mod vit;

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
    /// CPU-side preparation of one decoded image (resize, crop, normalise), run on the rayon
    /// pool ahead of the model. An `Err` is a per-image failure (recorded as `decode_failed`).
    /// Default: keep the image for [`Encoder::encode_prepared`].
    fn prepare(&self, image: RgbImage) -> Result<Prepared, String> {
        Ok(Prepared::Image(image))
    }
    /// The smallest image this encoder needs, when it only ever needs a small one: the store
    /// then decodes JPEGs with DCT-domain scaling ([`crate::decode::decode_rgb_draft`], PIL's
    /// `draft()`), which must be part of the encoder's fingerprint. `None` (the default, and
    /// always for the HF encoders, whose references decode at full size): full decode.
    fn decode_min_size(&self) -> Option<(u32, u32)> {
        None
    }
    /// For an encoder whose vectors are a function of another encoder's (`aligned`: the base
    /// encoder ⊕ heads over its vector), that encoder. The store then derives a shard from the
    /// base's cached shard when there is one ([`Encoder::from_base`]), decoding no image.
    fn base(&self) -> Option<&dyn Encoder> {
        None
    }
    /// This encoder's vectors from `base` vectors (`n * base().dim()`, unit rows); only called
    /// when [`Encoder::base`] is `Some`.
    fn from_base(&self, _base: &[f32]) -> Result<Vec<f32>, EncodeError> {
        Err(EncodeError::Model { encoder: self.name().into(), message: "not derived from a base encoder".into() })
    }
    /// Encode prepared items (from this encoder's [`Encoder::prepare`]); same output contract as
    /// [`Encoder::encode_batch`]. Default: encode the kept images.
    fn encode_prepared(&self, items: Vec<Prepared>) -> Result<Vec<f32>, EncodeError> {
        let mut images = Vec::with_capacity(items.len());
        for it in items {
            match it {
                Prepared::Image(i) => images.push(i),
                Prepared::Pixels(_) => {
                    return Err(EncodeError::Model { encoder: self.name().into(), message: "got pixels, expected images".into() });
                }
            }
        }
        self.encode_batch(&images)
    }
}

/// `encode_batch` for encoders whose work is split into `prepare` + `encode_prepared`.
pub(crate) fn encode_by_preparing<E: Encoder + ?Sized>(enc: &E, images: &[RgbImage]) -> Result<Vec<f32>, EncodeError> {
    let items = images
        .iter()
        .map(|i| enc.prepare(i.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| EncodeError::Model { encoder: enc.name().to_string(), message })?;
    enc.encode_prepared(items)
}

/// An image ready for a model: either still an image, or the model's normalised CHW pixels.
pub enum Prepared {
    Image(RgbImage),
    Pixels(Vec<f32>),
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
    /// CLIP vision tower + projection from a local Hugging Face snapshot (ViT-B/32 ... L/14-336,
    /// StreetCLIP).
    Clip {
        #[serde(flatten)]
        params: HfParams,
    },
    /// SigLIP / SigLIP 2 (fixed resolution) vision tower with its attention-pooling head.
    Siglip {
        #[serde(flatten)]
        params: HfParams,
    },
    /// GeoCLIP's image tower: its MLP on CLIP ViT-L/14 features (`dir` is the CLIP snapshot).
    Geoclip {
        #[serde(flatten)]
        params: HfParams,
        /// Directory holding the geoclip package's `image_encoder_mlp_weights.pth` (the
        /// package's `weights/` folder, or an unpacked wheel).
        weights: PathBuf,
    },
    /// G3's retrieval embedding: `base`'s vector ⊕ the image->text and image->GPS heads of a
    /// trained alignment model (`georag align train` output directory), each L2-normalised.
    Aligned {
        base: Box<EncoderSpec>,
        model: PathBuf,
    },
}

fn default_device() -> String {
    "cpu".into()
}
fn default_batch() -> usize {
    32
}

/// Where and how a Hugging Face model runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfParams {
    /// Local snapshot directory (config.json, preprocessor_config.json, safetensors or
    /// pytorch_model.bin weights, single or sharded).
    pub dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs the `cuda` cargo feature).
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// f32 on CPU; f16 / bf16 on CUDA.
    #[serde(default)]
    pub dtype: hf::Dtype,
}

impl HfParams {
    pub fn new(dir: PathBuf) -> Self {
        HfParams { dir, device: default_device(), batch_size: default_batch(), dtype: hf::Dtype::F32 }
    }
}

impl EncoderSpec {
    /// Images per model call.
    pub fn batch_size(&self) -> usize {
        match self {
            EncoderSpec::Im2gps { .. } => EmbedOptions::default().batch_size,
            EncoderSpec::Clip { params } | EncoderSpec::Siglip { params } | EncoderSpec::Geoclip { params, .. } => params.batch_size.max(1),
            EncoderSpec::Aligned { base, .. } => base.batch_size(),
        }
    }

    /// The encoder whose vectors alignment heads take as input: `aligned`'s base (the heads
    /// cannot be their own input), any other encoder itself.
    pub fn heads_input(&self) -> &EncoderSpec {
        match self {
            EncoderSpec::Aligned { base, .. } => base.heads_input(),
            e => e,
        }
    }

    /// `hf:DIR`: a Hugging Face snapshot whose `config.json` `model_type` says CLIP or SigLIP.
    pub fn from_hf_dir(dir: &Path) -> Result<EncoderSpec, EncodeError> {
        let snap = hf::Snapshot::open(dir)?;
        let params = HfParams::new(dir.to_path_buf());
        match snap.model_type() {
            Some("clip" | "clip_vision_model") => Ok(EncoderSpec::Clip { params }),
            Some("siglip" | "siglip_vision_model") => Ok(EncoderSpec::Siglip { params }),
            other => Err(EncodeError::Config(format!(
                "{}: model_type {other:?} is not a supported encoder (clip, clip_vision_model, siglip, siglip_vision_model)",
                snap.config_path().display()
            ))),
        }
    }
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
    #[error(transparent)]
    Hf(#[from] hf::HfError),
    #[error("{path}: embedding store is inconsistent: {message}")]
    Store { path: PathBuf, message: String },
}

/// Build the encoder a spec names.
pub fn build(spec: &EncoderSpec) -> Result<Box<dyn Encoder>, EncodeError> {
    match spec {
        EncoderSpec::Im2gps { params } => Ok(Box::new(im2gps::Im2gpsEncoder::new(params.clone())?)),
        EncoderSpec::Clip { params } => Ok(Box::new(clip::ClipEncoder::load(params)?)),
        EncoderSpec::Siglip { params } => Ok(Box::new(siglip::SiglipEncoder::load(params)?)),
        EncoderSpec::Geoclip { params, weights } => Ok(Box::new(geoclip::GeoclipImageEncoder::load(params, weights)?)),
        EncoderSpec::Aligned { base, model } => Ok(Box::new(aligned::AlignedEncoder::new(build(base)?, model)?)),
    }
}

impl EncoderSpec {
    /// The `kind` the config names this encoder by.
    pub fn kind(&self) -> &'static str {
        match self {
            EncoderSpec::Im2gps { .. } => "im2gps",
            EncoderSpec::Clip { .. } => "clip",
            EncoderSpec::Siglip { .. } => "siglip",
            EncoderSpec::Geoclip { .. } => "geoclip",
            EncoderSpec::Aligned { .. } => "aligned",
        }
    }
}

/// An encoder's fingerprint and output dimension from its files, without building the model
/// (no weights decoded; weight files are hashed): what locating an embedding store needs
/// (`georag index`). The same as `build(spec)`'s `fingerprint()` and `dim()`.
pub fn identity(spec: &EncoderSpec) -> Result<(String, usize), EncodeError> {
    match spec {
        EncoderSpec::Im2gps { params } => {
            let e = im2gps::Im2gpsEncoder::new(params.clone())?;
            Ok((e.fingerprint().to_string(), e.dim()))
        }
        EncoderSpec::Clip { params } => clip::identity(params),
        EncoderSpec::Siglip { params } => siglip::identity(params),
        EncoderSpec::Geoclip { params, weights } => geoclip::identity(params, weights),
        EncoderSpec::Aligned { base, model } => aligned::identity(base, model),
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

/// The schema of an embedding store shard (`emb-NNNNN.parquet`).
pub fn store_schema(dim: usize) -> SchemaRef {
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
    /// Which dataset shards this process embeds.
    pub worker: Worker,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { batch_size: 64, max_pixels: decode::DEFAULT_MAX_PIXELS, worker: Worker::ALL }
    }
}

/// One of `count` processes that split a dataset's shards: worker `index` embeds the shards
/// `s` with `s % count == index`, each writing its own files into the shared store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker {
    pub index: usize,
    pub count: usize,
}

impl Worker {
    pub const ALL: Worker = Worker { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Worker, EncodeError> {
        if count == 0 || index >= count {
            return Err(EncodeError::Config(format!("worker {index} of {count}: need 0 <= worker < workers")));
        }
        Ok(Worker { index, count })
    }

    /// `--worker/--workers` when given, else the SLURM array variables (`SLURM_ARRAY_TASK_ID`
    /// minus `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`), else the whole dataset.
    pub fn resolve(index: Option<usize>, count: Option<usize>, env: impl Fn(&str) -> Option<String>) -> Result<Worker, EncodeError> {
        match (index, count) {
            (Some(i), Some(n)) => return Worker::new(i, n),
            (None, None) => {}
            _ => return Err(EncodeError::Config("--worker and --workers go together".into())),
        }
        let num = |k: &str| -> Result<Option<usize>, EncodeError> {
            env(k).map(|v| v.trim().parse::<usize>().map_err(|_| EncodeError::Config(format!("{k}={v} is not a number")))).transpose()
        };
        match (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?) {
            (Some(id), Some(n)) => {
                let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                Worker::new(id.checked_sub(min).ok_or_else(|| EncodeError::Config(format!("SLURM_ARRAY_TASK_ID {id} < SLURM_ARRAY_TASK_MIN {min}")))?, n)
            }
            _ => Ok(Worker::ALL),
        }
    }

    pub fn owns(&self, shard: usize) -> bool {
        shard % self.count == self.index
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
    store_dir_of(cache_dir, encoder.fingerprint(), ds)
}

/// [`store_dir`] from an encoder fingerprint (as [`identity`] gives it).
pub fn store_dir_of(cache_dir: &Path, encoder_fingerprint: &str, ds: &Dataset) -> PathBuf {
    cache_dir.join("embeddings").join(format!("{encoder_fingerprint}-{}", ds.manifest.fingerprint))
}

/// What one embedding call did.
#[derive(Clone, Debug, Default)]
pub struct EmbedStats {
    pub shards_written: usize,
    /// Of `shards_written`, those derived from the base encoder's store ([`Encoder::base`]).
    pub shards_derived: usize,
    /// Shards written into the base encoder's store first (to derive from; `images` counts
    /// the images they embedded).
    pub base_shards_written: usize,
    pub shards_present: usize,
    pub images: usize,
    /// Wall-clock seconds the model spent (waiting for nothing else).
    pub model_s: f64,
    /// Summed wall-clock seconds of the decode + preprocess batches (they overlap the model).
    pub prepare_s: f64,
    pub total_s: f64,
}

/// Embed a dataset into its cache store, reusing complete or partial stores. Returns the
/// embeddings and whether every shard was reused.
pub fn embed_dataset(
    ds: &Dataset,
    encoder: &dyn Encoder,
    cache_dir: &Path,
    opts: &EmbedOptions,
    label: &str,
) -> Result<(Embeddings, bool), EncodeError> {
    let dir = store_dir(cache_dir, encoder, ds);
    let opts = EmbedOptions { worker: Worker::ALL, ..opts.clone() };
    let (emb, stats) = embed_to_dir(&dir, ds, encoder, &opts, label)?;
    let emb = emb.expect("a single worker owns every shard");
    Ok((emb, stats.shards_written == 0))
}

/// Embed the shards of `ds` that `opts.worker` owns into `dir` (one `emb-NNNNN.parquet` per
/// dataset shard, skipping shards already there). When afterwards every shard is present (always
/// for a single worker), read them all, write `done.json`, and return the embeddings.
///
/// An encoder over a base ([`Encoder::base`], e.g. `aligned`) never runs on the images itself:
/// the base encoder's store beside `dir` (as [`store_dir`] names it) is filled first, and every
/// shard here is derived from the base's shard. So the base vectors are computed once, and any
/// later consumer of the base encoder (geo_verify's heads, the gallery) reads them from the cache.
pub fn embed_to_dir(
    dir: &Path,
    ds: &Dataset,
    encoder: &dyn Encoder,
    opts: &EmbedOptions,
    label: &str,
) -> Result<(Option<Embeddings>, EmbedStats), EncodeError> {
    let t0 = std::time::Instant::now();
    let dim = encoder.dim();
    let done_path = dir.join("done.json");
    let mut stats = EmbedStats::default();
    if !done_path.exists() {
        fill_shards(dir, ds, encoder, opts, label, &mut stats)?;
    }
    stats.shards_present = (0..ds.manifest.shards.len()).filter(|&si| store_shard_path(dir, si).exists()).count();
    stats.total_s = t0.elapsed().as_secs_f64();
    if stats.shards_present < ds.manifest.shards.len() {
        return Ok((None, stats));
    }
    let mut emb = Embeddings { dim, ids: vec![], lat: vec![], lon: vec![], status: vec![], errors: vec![], vectors: vec![], dir: dir.to_path_buf() };
    for (si, info) in ds.manifest.shards.iter().enumerate() {
        read_store_shard(&store_shard_path(dir, si), dim, Some(info.rows), &mut emb)?;
    }
    if !done_path.exists() {
        write_done(dir, encoder.name(), encoder.fingerprint(), ds, &emb)?;
    }
    Ok((Some(emb), stats))
}

/// The store file of dataset shard `si` in the store `dir`.
fn store_shard_path(dir: &Path, si: usize) -> PathBuf {
    dir.join(format!("emb-{si:05}.parquet"))
}

/// Write the missing shards `opts.worker` owns into `dir`, each atomically; nothing is read back.
fn fill_shards(dir: &Path, ds: &Dataset, encoder: &dyn Encoder, opts: &EmbedOptions, label: &str, stats: &mut EmbedStats) -> Result<(), EncodeError> {
    let dim = encoder.dim();
    let todo: Vec<usize> = (0..ds.manifest.shards.len()).filter(|&si| opts.worker.owns(si) && !store_shard_path(dir, si).exists()).collect();
    if todo.is_empty() {
        return Ok(());
    }
    // The base encoder's store, as `store_dir` names it beside this one: filled first (its own
    // progress bar), then every shard here derives from it.
    let base = encoder.base().and_then(|b| Some((b, dir.parent()?.join(format!("{}-{}", b.fingerprint(), ds.manifest.fingerprint)))));
    if let Some((b, bd)) = &base {
        if !bd.join("done.json").exists() {
            let mut bs = EmbedStats::default();
            fill_shards(bd, ds, *b, opts, &format!("{label} (base {})", b.name()), &mut bs)?;
            stats.base_shards_written += bs.shards_written + bs.base_shards_written;
            stats.images += bs.images;
            stats.model_s += bs.model_s;
            stats.prepare_s += bs.prepare_s;
        }
    }
    let n_todo: usize = todo.iter().map(|&si| ds.manifest.shards[si].rows).sum();
    let progress = Progress::new(&format!("embed {label}"), n_todo as u64);
    for si in todo {
        if let Some((b, bd)) = &base {
            let batch = derive_shard(&store_shard_path(bd, si), ds.manifest.shards[si].rows, *b, encoder)?;
            progress.inc(batch.num_rows() as u64);
            pq::write(&store_shard_path(dir, si), store_schema(dim), &[batch], &[])?;
            stats.shards_written += 1;
            stats.shards_derived += 1;
            continue;
        }
        // Stream the dataset shard: only a chunk of rows (and their image bytes) in memory.
        let mut batches = Vec::new();
        let chunk = opts.batch_size.max(1) * 8;
        ds.for_each_chunk(si, chunk, |rows| -> Result<(), EncodeError> {
            batches.push(embed_rows(ds, &rows, encoder, opts, &progress, stats)?);
            Ok(())
        })?;
        pq::write(&store_shard_path(dir, si), store_schema(dim), &batches, &[])?;
        stats.shards_written += 1;
    }
    progress.finish();
    Ok(())
}

/// Mark the store `dir` complete (`done.json`, written last and atomically) for `emb`, the
/// embeddings of `ds` by the encoder named `encoder` with fingerprint `encoder_fingerprint`.
pub fn write_done(dir: &Path, encoder: &str, encoder_fingerprint: &str, ds: &Dataset, emb: &Embeddings) -> Result<(), EncodeError> {
    atomic::write_json(
        &dir.join("done.json"),
        &Done {
            encoder: encoder.to_string(),
            encoder_fingerprint: encoder_fingerprint.to_string(),
            dataset: ds.manifest.name.clone(),
            dataset_fingerprint: ds.manifest.fingerprint.clone(),
            dim: emb.dim,
            rows: emb.len(),
            decode_failed: emb.n_failed(),
        },
    )?;
    Ok(())
}

/// One shard of `encoder`'s store from the base encoder's shard at `base_path` (written by
/// `embed_to_dir`, so complete): the same rows, statuses and errors; the vectors through
/// [`Encoder::from_base`], in chunks.
fn derive_shard(base_path: &Path, rows: usize, base: &dyn Encoder, encoder: &dyn Encoder) -> Result<RecordBatch, EncodeError> {
    let mut b = Embeddings { dim: base.dim(), ids: vec![], lat: vec![], lon: vec![], status: vec![], errors: vec![], vectors: vec![], dir: base_path.to_path_buf() };
    read_store_shard(base_path, base.dim(), Some(rows), &mut b)?;
    let ok: Vec<usize> = (0..b.len()).filter(|&i| b.status[i] == Status::Ok).collect();
    let d = encoder.dim();
    let mut derived = Vec::with_capacity(ok.len() * d);
    for chunk in ok.chunks(1024) {
        let mut x = Vec::with_capacity(chunk.len() * b.dim);
        for &i in chunk {
            x.extend_from_slice(b.row(i));
        }
        derived.extend(encoder.from_base(&x)?);
    }
    let mut it = derived.chunks(d.max(1));
    let results = (0..b.len())
        .map(|i| match b.status[i] {
            Status::Ok => Ok(it.next().expect("one derived vector per ok row").to_vec()),
            s => Err((s, b.errors[i].clone().unwrap_or_default())),
        })
        .collect();
    let keys: Vec<(&str, f64, f64)> = (0..b.len()).map(|i| (b.ids[i].as_str(), b.lat[i], b.lon[i])).collect();
    Ok(store_batch(&keys, results, d))
}

/// Decode + prepare batches on the rayon pool in a producer thread, feeding the model through a
/// bounded channel (capacity 1): the CPU prepares batch n+1 while the model runs batch n.
fn embed_rows(
    ds: &Dataset,
    rows: &[crate::ingest::DatasetRow],
    encoder: &dyn Encoder,
    opts: &EmbedOptions,
    progress: &Progress,
    stats: &mut EmbedStats,
) -> Result<RecordBatch, EncodeError> {
    let dim = encoder.dim();
    let bs = opts.batch_size.max(1);
    let mut results: Vec<Result<Vec<f32>, String>> = Vec::with_capacity(rows.len());
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Result<Prepared, String>>, f64)>(1);
    std::thread::scope(|s| -> Result<(), EncodeError> {
        s.spawn(move || {
            for chunk in rows.chunks(bs) {
                let t = std::time::Instant::now();
                let prepared: Vec<Result<Prepared, String>> = chunk
                    .par_iter()
                    .map(|r| {
                        let bytes = ds.image_bytes(r).map_err(|e| format!("reading image: {e}"))?;
                        let img = decode::decode_rgb_draft(&bytes, opts.max_pixels, encoder.decode_min_size()).map_err(|e: DecodeError| e.to_string())?;
                        encoder.prepare(img)
                    })
                    .collect();
                if tx.send((prepared, t.elapsed().as_secs_f64())).is_err() {
                    break; // the consumer stopped on an error
                }
            }
        });
        for (prepared, prep_s) in rx {
            stats.prepare_s += prep_s;
            let n = prepared.len();
            let mut ok = Vec::with_capacity(n);
            let mut slots: Vec<Option<String>> = Vec::with_capacity(n);
            for p in prepared {
                match p {
                    Ok(item) => {
                        ok.push(item);
                        slots.push(None);
                    }
                    Err(e) => slots.push(Some(e)),
                }
            }
            let t = std::time::Instant::now();
            let n_ok = ok.len();
            let vecs = encoder.encode_prepared(ok)?;
            stats.model_s += t.elapsed().as_secs_f64();
            if vecs.len() != n_ok * dim {
                return Err(EncodeError::Model { encoder: encoder.name().into(), message: format!("returned {} values for {n_ok} images of dim {dim}", vecs.len()) });
            }
            let mut it = vecs.chunks(dim.max(1));
            for slot in slots {
                results.push(match slot {
                    None => Ok(it.next().expect("one vector per prepared image").to_vec()),
                    Some(e) => Err(e),
                });
            }
            stats.images += n;
            progress.inc(n as u64);
        }
        Ok(())
    })?;
    let keys: Vec<(&str, f64, f64)> = rows.iter().map(|r| (r.id.as_str(), r.lat, r.lon)).collect();
    Ok(store_batch(&keys, results.into_iter().map(|r| r.map_err(|e| (Status::DecodeFailed, e))).collect(), dim))
}

/// One record batch of an embedding store: a row per `(id, lat, lon)` key, its vector or its
/// failure status and error text (the vector is then null).
pub fn store_batch(keys: &[(&str, f64, f64)], results: Vec<Result<Vec<f32>, (Status, String)>>, dim: usize) -> RecordBatch {
    let mut values = Vec::with_capacity(keys.len() * dim);
    let mut status = Vec::with_capacity(keys.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(keys.len());
    let mut valid = Vec::with_capacity(keys.len());
    for r in results {
        match r {
            Ok(v) => {
                values.extend_from_slice(&v);
                status.push(Status::Ok.as_str());
                errors.push(None);
                valid.push(true);
            }
            Err((s, e)) => {
                values.extend(std::iter::repeat_n(0f32, dim));
                status.push(s.as_str());
                errors.push(Some(e));
                valid.push(false);
            }
        }
    }
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(field, dim as i32, Arc::new(Float32Array::from(values)), Some(valid.into()))
        .expect("values length is rows * dim");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(keys.iter().map(|k| k.0))),
        Arc::new(Float64Array::from_iter_values(keys.iter().map(|k| k.1))),
        Arc::new(Float64Array::from_iter_values(keys.iter().map(|k| k.2))),
        Arc::new(StringArray::from_iter_values(status)),
        Arc::new(StringArray::from(errors)),
        Arc::new(list),
    ];
    RecordBatch::try_new(store_schema(dim), cols).expect("columns match the embedding schema")
}

/// Read a complete embedding store directory (`done.json` + `emb-NNNNN.parquet`), in shard
/// order, e.g. a store of text embeddings for `align`.
pub fn read_store(dir: &Path) -> Result<Embeddings, EncodeError> {
    let done_path = dir.join("done.json");
    let bad = |message: String| EncodeError::Store { path: done_path.clone(), message };
    let done: Done = serde_json::from_slice(&std::fs::read(&done_path).map_err(|e| bad(format!("{e} (not a complete embedding store)")))?).map_err(|e| bad(e.to_string()))?;
    let emb = read_store_shards(dir, done.dim)?;
    if emb.len() != done.rows {
        return Err(bad(format!("{} rows in the shards, done.json says {}", emb.len(), done.rows)));
    }
    Ok(emb)
}

/// Every `emb-NNNNN.parquet` of `dir`, in shard order, whether or not the store is complete.
pub fn read_store_shards(dir: &Path, dim: usize) -> Result<Embeddings, EncodeError> {
    let bad = |message: String| EncodeError::Store { path: dir.to_path_buf(), message };
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("emb-") && n.ends_with(".parquet")))
        .collect();
    shards.sort();
    let mut emb = Embeddings { dim, ids: vec![], lat: vec![], lon: vec![], status: vec![], errors: vec![], vectors: vec![], dir: dir.to_path_buf() };
    for s in &shards {
        read_store_shard(s, dim, None, &mut emb)?;
    }
    Ok(emb)
}

fn read_store_shard(path: &Path, dim: usize, expect_rows: Option<usize>, emb: &mut Embeddings) -> Result<(), EncodeError> {
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
    if let Some(expect) = expect_rows
        && emb.len() - before != expect
    {
        return Err(EncodeError::Store { path: path.to_path_buf(), message: format!("{} rows, the dataset shard has {expect}", emb.len() - before) });
    }
    Ok(())
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    #[test]
    fn hf_specs_parse_with_defaults_and_reject_unknown_keys() {
        let s: EncoderSpec = serde_yaml::from_str("{kind: clip, dir: models/clip}").unwrap();
        assert_eq!(s, EncoderSpec::Clip { params: HfParams::new("models/clip".into()) });
        assert_eq!(s.batch_size(), 32);
        let s: EncoderSpec = serde_yaml::from_str("{kind: siglip, dir: m, device: 'cuda:1', batch_size: 8, dtype: bf16}").unwrap();
        let EncoderSpec::Siglip { params } = &s else { panic!("{s:?}") };
        assert_eq!((params.device.as_str(), params.batch_size, params.dtype), ("cuda:1", 8, hf::Dtype::Bf16));
        let s: EncoderSpec = serde_yaml::from_str("{kind: geoclip, dir: clip, weights: w}").unwrap();
        assert!(matches!(s, EncoderSpec::Geoclip { ref weights, .. } if weights == Path::new("w")));
        assert!(serde_yaml::from_str::<EncoderSpec>("{kind: clip, dir: m, batchsize: 8}").is_err());
        assert!(serde_yaml::from_str::<EncoderSpec>("{kind: clip}").is_err());
        assert!(serde_yaml::from_str::<EncoderSpec>("{kind: clip, dir: m, dtype: f64}").is_err());
    }
}
