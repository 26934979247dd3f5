//! Orchestration of `georag run`: datasets -> embeddings -> index -> retrieval -> methods ->
//! predictions -> metrics -> report, each stage skipped when its output exists under a matching
//! fingerprint.
//!
//! Invariants:
//! - per-sample failures (undecodable photos, queries without neighbours) are records with a
//!   status, counted in `run.json`, `metrics.json` and the report; they never abort the run;
//! - derived files (metrics, tables, plots) are always rebuilt from `predictions.parquet`;
//! - `predictions.parquet` is reused only when `run.json` records the same predictions
//!   fingerprint (data, encoder, index, retrieval and method settings).

pub mod index_stage;
pub mod mllm;

use crate::config::Config;
use crate::embed::{self, EmbedOptions, EncodeError};
use crate::index::{self, IndexError};
use crate::ingest::{self, IngestError};
use crate::metrics::{self, MetricsError, MetricsFile};
use crate::record::{LatLon, PredictionRecord, Status};
use crate::report::{self, MethodResult, ReportError, ReportExtras, ReportInput};
use crate::retrieval::{self, QueryNeighbours};
use crate::select::Candidates;
use crate::util::atomic;
use crate::util::fingerprint::Fingerprint;
use crate::util::pq::{self, ParquetError};
use arrow::array::{Array, ArrayRef, Float32Array, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `georag.run/v2` added status, provenance, counts and totals to v1 (every v1 field kept; a v1
/// file still reads, as a complete run with unknown provenance).
pub const RUN_SCHEMA: &str = "georag.run/v2";

/// Error that stops a run (configuration, I/O, a broken cache). Per-sample problems are not errors.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Boxed: an encoder error is large, and every stage returns this type.
    #[error(transparent)]
    Encode(Box<EncodeError>),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
    #[error("{path}: {message}")]
    Predictions { path: PathBuf, message: String },
    /// Boxed for the same reason as `Encode`.
    #[error(transparent)]
    Mllm(Box<mllm::MllmError>),
    #[error(transparent)]
    RunFile(#[from] RunFileError),
    #[error(transparent)]
    Align(#[from] crate::align::AlignError),
}

impl From<mllm::MllmError> for PipelineError {
    fn from(e: mllm::MllmError) -> Self {
        PipelineError::Mllm(Box::new(e))
    }
}

impl From<EncodeError> for PipelineError {
    fn from(e: EncodeError) -> Self {
        PipelineError::Encode(Box::new(e))
    }
}

/// A `run.json` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RunFileError {
    pub path: PathBuf,
    pub message: String,
}

/// Timing and cache use of one stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    pub seconds: f64,
    pub reused: bool,
    pub fingerprint: Option<String>,
}

/// Where a run stands. `run.json` says `started` from the first moment, `complete` or `failed`
/// (with the error) at the end; a run killed on the way stays `started`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Started,
    /// Also what a v1 `run.json` (no status field) reads as.
    #[default]
    Complete,
    Failed,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Started => "started",
            RunStatus::Complete => "complete",
            RunStatus::Failed => "failed",
        }
    }
}

/// Per method: images expected, answered, and failed by status (from its metrics row).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodCounts {
    pub dataset: String,
    pub expected: usize,
    pub answered: usize,
    pub failed_by_status: BTreeMap<String, usize>,
}

/// Token and cost totals of the MLLM stage (zero without MLLM methods).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub requests_sent: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `None` when the generator has no price configured.
    pub cost_usd: Option<f64>,
}

/// `run.json`: what ran, from which inputs, how long each stage took, what failed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: String,
    #[serde(default)]
    pub status: RunStatus,
    /// Why a `failed` run stopped.
    #[serde(default)]
    pub error: Option<String>,
    pub georag_version: String,
    pub name: String,
    /// The config file given to `georag run`, and the `--set` overrides applied to it.
    #[serde(default)]
    pub config_path: Option<String>,
    #[serde(default)]
    pub overrides: Vec<String>,
    /// `--replay`: MLLM answers only from the response store.
    #[serde(default)]
    pub replay: bool,
    /// SHA-256 of `config.resolved.yaml` (what `georag run --sweep` compares to skip a point).
    #[serde(default)]
    pub config_sha256: String,
    /// The resolved config (as in `config.resolved.yaml`).
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub build: crate::provenance::BuildInfo,
    #[serde(default)]
    pub machine: crate::provenance::MachineInfo,
    /// RFC 3339 UTC.
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub wall_seconds: Option<f64>,
    /// Per method: expected, answered, failed by status.
    #[serde(default)]
    pub counts: BTreeMap<String, MethodCounts>,
    #[serde(default)]
    pub totals: Totals,
    pub database_fingerprint: String,
    pub queries_fingerprint: String,
    pub encoder_fingerprint: String,
    pub index_fingerprint: String,
    pub predictions_fingerprint: String,
    pub n_database: usize,
    pub n_database_indexed: usize,
    pub n_queries: usize,
    /// Failed samples by stage and status (e.g. `database/decode_failed`).
    pub failures: BTreeMap<String, usize>,
    pub stages: Vec<StageRecord>,
    /// The MLLM stage's counts (requests, retries, tokens, store), when the config has MLLM methods.
    #[serde(default)]
    pub generation: Option<mllm::GenStats>,
    /// Per MLLM method: model, prompts, sampling, parser, selector, sample statuses, fallbacks.
    #[serde(default)]
    pub mllm_methods: Vec<mllm::MethodSummary>,
}

impl RunRecord {
    pub fn n_failures(&self) -> usize {
        self.failures.values().sum()
    }

    /// Every fingerprint of the run by name: the inputs, the predictions, and each stage's.
    pub fn fingerprints(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (k, v) in [
            ("database", &self.database_fingerprint),
            ("queries", &self.queries_fingerprint),
            ("encoder", &self.encoder_fingerprint),
            ("index", &self.index_fingerprint),
            ("predictions", &self.predictions_fingerprint),
            ("config (sha256)", &self.config_sha256),
        ] {
            m.insert(k.to_string(), v.clone());
        }
        for s in &self.stages {
            if let Some(fp) = &s.fingerprint {
                m.insert(format!("stage {}", s.stage), fp.clone());
            }
        }
        m
    }

    /// Read a run directory's `run.json` (or the file itself).
    pub fn read(path: &Path) -> Result<RunRecord, RunFileError> {
        let p = if path.is_dir() { path.join("run.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&p).map_err(|e| RunFileError { path: p.clone(), message: e.to_string() })?;
        serde_json::from_str(&text).map_err(|e| RunFileError { path: p, message: format!("not a georag run.json: {e}") })
    }
}

/// How `georag run` was invoked, for [`run_opts`] and `run.json`.
#[derive(Clone, Debug)]
pub struct RunOptions<'a> {
    pub mode: &'a mllm::Mode,
    pub plots: bool,
    pub config_path: Option<&'a Path>,
    pub overrides: &'a [String],
}

/// What `run` returns.
pub struct RunSummary {
    pub out: PathBuf,
    pub metrics: MetricsFile,
    pub run: RunRecord,
}

struct Stages(Vec<StageRecord>);

impl Stages {
    fn time<T, E>(&mut self, stage: &str, f: impl FnOnce() -> Result<(T, bool, Option<String>), E>) -> Result<T, E> {
        let t = Instant::now();
        let (v, reused, fingerprint) = f()?;
        self.0.push(StageRecord { stage: stage.into(), seconds: t.elapsed().as_secs_f64(), reused, fingerprint });
        Ok(v)
    }
}

/// What `georag embed CONFIG` did for one dataset.
pub struct EmbedReport {
    pub label: String,
    pub dir: PathBuf,
    pub rows: usize,
    pub stats: embed::EmbedStats,
    /// Whether every shard is now present (`done.json` written).
    pub complete: bool,
}

/// The embedding stage alone: materialise the database and queries of a config and embed the
/// shards `worker` owns (all of them by default), as `run` would, then stop.
pub fn embed_only(cfg: &Config, worker: embed::Worker) -> Result<Vec<EmbedReport>, PipelineError> {
    let cache = &cfg.cache_dir;
    let encoder = embed::build(&cfg.encoder)?;
    let opts = EmbedOptions { batch_size: cfg.encoder.batch_size(), worker, ..EmbedOptions::default() };
    let mut out = vec![];
    for (label, spec) in [("database", &cfg.database), ("queries", &cfg.queries)] {
        let (ds, _) = ingest::materialize(spec, cache)?;
        let dir = embed::store_dir(cache, encoder.as_ref(), &ds);
        let (emb, stats) = embed::embed_to_dir(&dir, &ds, encoder.as_ref(), &opts, label)?;
        out.push(EmbedReport { label: label.into(), dir, rows: ds.len(), stats, complete: emb.is_some() });
    }
    Ok(out)
}

/// What the stages before the methods produced.
struct Front {
    db: ingest::Dataset,
    queries: ingest::Dataset,
    /// Embeddings and index; `None` when the neighbour lists are imported.
    search: Option<Search>,
}

struct Search {
    encoder: Box<dyn embed::Encoder>,
    q_emb: embed::Embeddings,
    db_emb: embed::Embeddings,
    built: index::BuiltIndex,
}

fn front(cfg: &Config, st: &mut Stages) -> Result<Front, PipelineError> {
    let cache = &cfg.cache_dir;
    let db = st.time("database", || {
        let (d, reused) = ingest::materialize(&cfg.database, cache)?;
        let fp = d.manifest.fingerprint.clone();
        Ok::<_, PipelineError>((d, reused, Some(fp)))
    })?;
    let queries = st.time("queries", || {
        let (d, reused) = ingest::materialize(&cfg.queries, cache)?;
        let fp = d.manifest.fingerprint.clone();
        Ok::<_, PipelineError>((d, reused, Some(fp)))
    })?;
    if cfg.retrieval.import.is_some() {
        return Ok(Front { db, queries, search: None });
    }
    let encoder = embed::build(&cfg.encoder)?;
    let opts = EmbedOptions { batch_size: cfg.encoder.batch_size(), ..EmbedOptions::default() };
    let db_emb = st.time("embed database", || {
        let (e, reused) = embed::embed_dataset(&db, encoder.as_ref(), cache, &opts, "database")?;
        Ok::<_, PipelineError>((e, reused, Some(encoder.fingerprint().to_string())))
    })?;
    let q_emb = st.time("embed queries", || {
        let (e, reused) = embed::embed_dataset(&queries, encoder.as_ref(), cache, &opts, "queries")?;
        Ok::<_, PipelineError>((e, reused, Some(encoder.fingerprint().to_string())))
    })?;
    let built = st.time("index", || {
        let b = index::build_or_load(&cfg.index, &db_emb, cache)?;
        let (reused, fp) = (b.reused, b.fingerprint.clone());
        Ok::<_, PipelineError>((b, reused, Some(fp)))
    })?;
    Ok(Front { db, queries, search: Some(Search { encoder, q_emb, db_emb, built }) })
}

/// Neighbours of every query: searched in the index, or imported from released arrays.
fn neighbours_of(f: &mut Front, rspec: &retrieval::RetrievalSpec, cfg: &Config) -> Result<Vec<QueryNeighbours>, PipelineError> {
    match (&mut f.search, &rspec.import) {
        (_, Some(imp)) => Ok(retrieval::import::import(rspec, imp, &f.queries, &f.db)?),
        (Some(s), None) => Ok(retrieval::retrieve_with(rspec, &mut s.built.index, &s.built.rows, &s.q_emb, Some(&s.db_emb), cfg.index.search_batch)?),
        (None, None) => unreachable!("front() searches unless importing"),
    }
}

/// `georag retrieve CONFIG`: the stages up to retrieval; writes `retrieval.parquet` (and
/// `retrieval_removed.csv`) into `out`. Returns the neighbour lists.
/// With `export_npy`, also `similar.npy` / `dissimilar.npy` ([`crate::retrieval::import::export_npy`]).
pub fn retrieve_only(cfg: &Config, out: &Path, export_npy: bool) -> Result<Vec<QueryNeighbours>, PipelineError> {
    std::fs::create_dir_all(out).map_err(|source| atomic::AtomicWriteError { path: out.to_path_buf(), source })?;
    let mut st = Stages(Vec::new());
    let mut f = front(cfg, &mut st)?;
    let rspec = retrieval_for(cfg, &baseline_selectors(cfg));
    let n = neighbours_of(&mut f, &rspec, cfg)?;
    write_retrieval(&out.join("retrieval.parquet"), &n, &f.db, &rspec)?;
    write_removed(&out.join("retrieval_removed.csv"), &n)?;
    if export_npy {
        crate::retrieval::import::export_npy(&n, &f.db, out)?;
    }
    Ok(n)
}

/// The retrieval settings that serve every method: enough similar and dissimilar neighbours.
fn retrieval_for(cfg: &Config, baselines: &[(String, Box<dyn crate::select::Selector>)]) -> crate::retrieval::RetrievalSpec {
    let mut rspec = cfg.retrieval.clone();
    rspec.k = baselines.iter().map(|(_, s)| s.neighbours_needed()).max().unwrap_or(0).max(rspec.k);
    for m in cfg.mllm_methods() {
        let (s, d) = m.neighbours_needed();
        rspec.k = rspec.k.max(s);
        rspec.dissimilar_k = rspec.dissimilar_k.max(d);
    }
    rspec
}

/// `georag generate CONFIG [--export-batch | --import-batch]`: the stages up to generation,
/// then stop. Returns the generation counts.
pub fn generate(cfg: &Config, out: &Path, mode: &mllm::Mode) -> Result<mllm::GenStats, PipelineError> {
    std::fs::create_dir_all(out).map_err(|source| atomic::AtomicWriteError { path: out.to_path_buf(), source })?;
    let mut st = Stages(Vec::new());
    let mut f = front(cfg, &mut st)?;
    let baselines = baseline_selectors(cfg);
    let rspec = retrieval_for(cfg, &baselines);
    let neighbours = neighbours_of(&mut f, &rspec, cfg)?;
    let specs: Vec<&mllm::MllmSpec> = cfg.mllm_methods().collect();
    let o = mllm::run(cfg, &specs, &neighbours, &f.queries, &f.db, mode)?;
    if o.complete {
        o.generations.write(&out.join("generations.parquet"))?;
    }
    Ok(o.stats)
}

fn baseline_selectors(cfg: &Config) -> Vec<(String, Box<dyn crate::select::Selector>)> {
    cfg.methods.iter().filter_map(|m| m.build().map(|s| (m.name(), s))).collect()
}

/// Run the whole experiment into `out`, sending MLLM requests live.
pub fn run(cfg: &Config, out: &Path) -> Result<RunSummary, PipelineError> {
    run_with(cfg, out, &mllm::Mode::Live)
}

/// Run the whole experiment into `out`; `mode` says how MLLM samples missing from the response
/// store are obtained (`Live` or `Replay`).
pub fn run_with(cfg: &Config, out: &Path, mode: &mllm::Mode) -> Result<RunSummary, PipelineError> {
    run_with_plots(cfg, out, mode, true)
}

/// [`run_with`]; `plots: false` (`georag run --no-plots`) writes the report without plots
/// (every number, table and per_image.csv unchanged).
pub fn run_with_plots(cfg: &Config, out: &Path, mode: &mllm::Mode, plots: bool) -> Result<RunSummary, PipelineError> {
    run_opts(cfg, out, &RunOptions { mode, plots, config_path: None, overrides: &[] })
}

/// Run the whole experiment into `out` as `georag run` does: `run.json` says `started` (with
/// the config, build and machine) before any stage, then `complete`, or `failed` with the error.
pub fn run_opts(cfg: &Config, out: &Path, opts: &RunOptions) -> Result<RunSummary, PipelineError> {
    std::fs::create_dir_all(out).map_err(|source| atomic::AtomicWriteError { path: out.to_path_buf(), source })?;
    let yaml = cfg.to_yaml();
    atomic::write_bytes(&out.join("config.resolved.yaml"), yaml.as_bytes())?;
    let run_path = out.join("run.json");
    let previous: Option<RunRecord> = std::fs::read_to_string(&run_path).ok().and_then(|s| serde_json::from_str(&s).ok());
    let t0 = Instant::now();
    let base = RunRecord {
        schema: RUN_SCHEMA.into(),
        status: RunStatus::Started,
        georag_version: env!("CARGO_PKG_VERSION").into(),
        name: cfg.name.clone(),
        config_path: opts.config_path.map(|p| p.display().to_string()),
        overrides: opts.overrides.to_vec(),
        replay: *opts.mode == mllm::Mode::Replay,
        config_sha256: crate::util::fingerprint::sha256_hex(yaml.as_bytes()),
        config: serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null),
        build: crate::provenance::BuildInfo::current(),
        machine: crate::provenance::MachineInfo::current(),
        started_at: crate::provenance::now(),
        ..RunRecord::default()
    };
    atomic::write_json(&run_path, &base)?;
    match run_stages(cfg, out, opts, previous, base.clone(), t0) {
        Ok(s) => Ok(s),
        Err(e) => {
            let failed = RunRecord {
                status: RunStatus::Failed,
                error: Some(e.to_string()),
                finished_at: Some(crate::provenance::now()),
                wall_seconds: Some(t0.elapsed().as_secs_f64()),
                ..base
            };
            atomic::write_json(&run_path, &failed)?;
            Err(e)
        }
    }
}

fn run_stages(cfg: &Config, out: &Path, opts: &RunOptions, previous: Option<RunRecord>, base: RunRecord, t0: Instant) -> Result<RunSummary, PipelineError> {
    let (mode, plots) = (opts.mode, opts.plots);
    let run_path = out.join("run.json");
    let mut st = Stages(Vec::new());
    let mut front = front(cfg, &mut st)?;
    let index_fp = match (&front.search, &cfg.retrieval.import) {
        (Some(s), _) => s.built.fingerprint.clone(),
        (None, Some(imp)) => retrieval::import::fingerprint(imp)?,
        (None, None) => unreachable!("front() searches unless importing"),
    };
    let q_store = front.search.as_ref().map(|s| s.q_emb.dir.to_string_lossy().into_owned()).unwrap_or_default();

    let baselines = baseline_selectors(cfg);
    let specs: Vec<&mllm::MllmSpec> = cfg.mllm_methods().collect();
    let exclude_sha = match &cfg.retrieval.exclude {
        Some(p) => Some(std::fs::read(p).map(|b| crate::util::fingerprint::sha256_hex(&b)).map_err(|source| atomic::AtomicWriteError { path: p.clone(), source })?),
        None => None,
    };
    // Gallery methods: their gallery embeddings are computed (or read from the cache) here, and
    // the models' fingerprints are part of the predictions fingerprint.
    let mut galleries = Vec::new();
    for m in &cfg.methods {
        if let crate::select::MethodSpec::Gallery { model, location, gallery, .. } = m {
            galleries.push((m.name(), crate::align::gallery::GalleryPredictor::load(&cfg.cache_dir, model.as_deref(), location.as_deref(), gallery)?));
        }
    }
    let gallery_fps: Vec<&str> = galleries.iter().map(|(_, g)| g.fingerprint.as_str()).collect();
    let mut pred_fp = Fingerprint::new("predictions/1");
    pred_fp
        .field(&index_fp)
        .json(&exclude_sha)
        .field(&q_store)
        .json(&cfg.index.nprobe)
        .json(&cfg.retrieval)
        .json(&cfg.methods)
        .json(&cfg.generator);
    // (Only when there are any, so that configs without them keep their fingerprints.)
    if !gallery_fps.is_empty() {
        pred_fp.json(&gallery_fps);
    }
    let pred_fp = pred_fp.finish();
    let pred_path = out.join("predictions.parquet");
    // MLLM predictions are always rebuilt from the response store (cheap when it has them all).
    let reuse = specs.is_empty() && previous.as_ref().is_some_and(|p| p.predictions_fingerprint == pred_fp) && pred_path.exists();

    let mut mllm_out: Option<mllm::MllmOutput> = None;
    let mut removal_note: Option<String> = None;
    let results: Vec<MethodResult> = if reuse {
        st.time("predictions", || Ok::<_, PipelineError>((read_predictions(&pred_path)?, true, Some(pred_fp.clone()))))?
    } else {
        let rspec = retrieval_for(cfg, &baselines);
        let neighbours = st.time("retrieve", || {
            let n = neighbours_of(&mut front, &rspec, cfg)?;
            Ok::<_, PipelineError>((n, false, None))
        })?;
        write_retrieval(&out.join("retrieval.parquet"), &neighbours, &front.db, &rspec)?;
        write_removed(&out.join("retrieval_removed.csv"), &neighbours)?;
        removal_note = Some(removal_line(&neighbours));
        let mut by_name: BTreeMap<String, MethodResult> = st.time("methods", || {
            let r: BTreeMap<String, MethodResult> = baselines
                .iter()
                .map(|(name, sel)| {
                    let records = neighbours.iter().enumerate().map(|(q, n)| predict(n, q, sel.as_ref())).collect();
                    (name.clone(), MethodResult { method: name.clone(), dataset: front.queries.manifest.name.clone(), records })
                })
                .collect();
            Ok::<_, PipelineError>((r, false, Some(pred_fp.clone())))
        })?;
        // An `aligned` experiment encoder retrieves with heads ⊕ base; gallery heads take the base's
        // query embeddings (cached like any store).
        let base_q = match (&cfg.encoder, galleries.is_empty()) {
            (embed::EncoderSpec::Aligned { .. }, false) => {
                let spec = cfg.encoder.heads_input();
                let enc = embed::build(spec)?;
                let opts = EmbedOptions { batch_size: spec.batch_size(), ..EmbedOptions::default() };
                Some(embed::embed_dataset(&front.queries, enc.as_ref(), &cfg.cache_dir, &opts, "queries (gallery)")?.0)
            }
            _ => None,
        };
        for (name, g) in &galleries {
            let q_emb = match &base_q {
                Some(q) => q,
                None => &front.search.as_ref().ok_or_else(|| PipelineError::Predictions { path: out.to_path_buf(), message: format!("method `{name}` (gallery) needs query embeddings, which a run with imported neighbours does not compute") })?.q_emb,
            };
            let records = st.time("gallery", || Ok::<_, PipelineError>((g.predict(q_emb)?, false, Some(g.fingerprint.clone()))))?;
            by_name.insert(name.clone(), MethodResult { method: name.clone(), dataset: front.queries.manifest.name.clone(), records });
        }
        if !specs.is_empty() {
            let o = st.time("mllm", || {
                let o = mllm::run(cfg, &specs, &neighbours, &front.queries, &front.db, mode)?;
                let reused = o.stats.requests_sent == 0;
                Ok::<_, PipelineError>((o, reused, None))
            })?;
            o.generations.write(&out.join("generations.parquet"))?;
            for (spec, r) in specs.iter().zip(&o.results) {
                by_name.insert(spec.name.clone(), r.clone());
            }
            mllm_out = Some(o);
        }
        // Config order.
        let results: Vec<MethodResult> = cfg.methods.iter().filter_map(|m| by_name.remove(&m.name())).collect();
        write_predictions(&pred_path, &results)?;
        results
    };

    let metrics = st.time("metrics", || {
        let rows = results.iter().map(|r| metrics::score(&r.method, &r.dataset, &r.records, &cfg.metrics)).collect();
        let m = MetricsFile::new(rows);
        m.write(&out.join("metrics.json"))?;
        Ok::<_, PipelineError>((m, false, None))
    })?;

    let Front { db, queries, search } = front;
    let mut failures = BTreeMap::new();
    if let Some(s) = &search {
        for (stage, emb) in [("database", &s.db_emb), ("queries", &s.q_emb)] {
            for s in emb.status.iter().filter(|s| **s != Status::Ok) {
                *failures.entry(format!("{stage}/{s}")).or_insert(0) += 1;
            }
        }
    }
    for r in &results {
        for rec in r.records.iter().filter(|r| r.status != Status::Ok && r.status != Status::DecodeFailed) {
            *failures.entry(format!("{}/{}", r.method, rec.status)).or_insert(0) += 1;
        }
    }
    let (generation, mllm_methods) = match &mllm_out {
        Some(o) => (Some(o.stats.clone()), o.summaries.clone()),
        None => (None, vec![]),
    };
    let counts = metrics
        .rows
        .iter()
        .map(|r| {
            (r.method.clone(), MethodCounts { dataset: r.dataset.clone(), expected: r.n_expected, answered: r.n_answered, failed_by_status: r.failures_by_status.clone() })
        })
        .collect();
    let totals = generation
        .as_ref()
        .map(|g: &mllm::GenStats| Totals { requests_sent: g.requests_sent, prompt_tokens: g.prompt_tokens, completion_tokens: g.completion_tokens, cost_usd: g.cost_usd })
        .unwrap_or_default();
    let mut run = RunRecord {
        counts,
        totals,
        database_fingerprint: db.manifest.fingerprint.clone(),
        queries_fingerprint: queries.manifest.fingerprint.clone(),
        encoder_fingerprint: search.as_ref().map_or_else(|| "none (imported neighbours)".to_string(), |s| s.encoder.fingerprint().to_string()),
        index_fingerprint: index_fp.clone(),
        predictions_fingerprint: pred_fp,
        n_database: db.len(),
        n_database_indexed: search.as_ref().map_or(0, |s| s.built.rows.ids.len()),
        n_queries: queries.len(),
        failures,
        stages: Vec::new(),
        generation,
        mllm_methods,
        ..base
    };
    let title = cfg.report.title.clone().unwrap_or_else(|| cfg.name.clone());
    let t = Instant::now();
    let mut notes = vec![
        format!(
            "Database: {} photos ({} indexed), fingerprint {}; queries: {} photos, fingerprint {}.",
            run.n_database, run.n_database_indexed, run.database_fingerprint, run.n_queries, run.queries_fingerprint
        ),
        match &search {
            Some(s) => format!(
                "Encoder {} ({}-d), fingerprint {}; index fingerprint {}. {}",
                s.encoder.name(),
                s.encoder.dim(),
                run.encoder_fingerprint,
                run.index_fingerprint,
                s.built.meta.describe(&cfg.index.search_params())
            ),
            None => format!("Neighbours imported from released arrays ({}), fingerprint {}; no embedding or index.", import_desc(&cfg.retrieval), run.index_fingerprint),
        },
        removal_note.unwrap_or_else(|| "Leakage control: predictions reused from the previous run (see its retrieval_removed.csv).".into()),
        if run.failures.is_empty() {
            "Failed samples: none.".to_string()
        } else {
            format!("Failed samples: {}.", run.failures.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))
        },
    ];
    if let Some(g) = &run.generation {
        notes.extend(mllm::notes(g, &run.mllm_methods));
    }
    notes.push(format!(
        "Stage times (s): {}.",
        st.0.iter().map(|s| format!("{} {:.2}{}", s.stage, s.seconds, if s.reused { " (reused)" } else { "" })).collect::<Vec<_>>().join(", ")
    ));
    // Training curves and fingerprints of the alignment models the config uses.
    let (charts, align_notes) = report::training::for_config(&serde_json::to_value(cfg).unwrap_or_default());
    notes.extend(align_notes);
    let input = ReportInput { title: &title, metrics: &metrics, results: &results, convention: &cfg.metrics, notes };
    report::write_report_with(out, &input, &ReportExtras { per_image: true, no_plots: !plots, regions: true, charts: &charts, ..Default::default() })?;
    st.0.push(StageRecord { stage: "report".into(), seconds: t.elapsed().as_secs_f64(), reused: false, fingerprint: None });
    run.stages = st.0;
    run.status = RunStatus::Complete;
    run.finished_at = Some(crate::provenance::now());
    run.wall_seconds = Some(t0.elapsed().as_secs_f64());
    atomic::write_json(&run_path, &run)?;
    Ok(RunSummary { out: out.to_path_buf(), metrics, run })
}

/// One query through one baseline selector.
fn predict(n: &QueryNeighbours, q: usize, sel: &dyn crate::select::Selector) -> PredictionRecord {
    if n.status != Status::Ok {
        return PredictionRecord::failed(n.query_id.clone(), n.truth, n.status);
    }
    match sel.select(&Candidates::retrieval(n, q)) {
        Some(p) => PredictionRecord::ok(n.query_id.clone(), n.truth, p),
        None => PredictionRecord::failed(n.query_id.clone(), n.truth, Status::NoNeighbours),
    }
}

fn predictions_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("dataset", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("truth_lat", DataType::Float64, false),
        Field::new("truth_lon", DataType::Float64, false),
        Field::new("pred_lat", DataType::Float64, true),
        Field::new("pred_lon", DataType::Float64, true),
        Field::new("status", DataType::Utf8, false),
    ]))
}

/// `predictions.parquet`: one row per (method, query), failures with a status and null coordinates.
pub fn write_predictions(path: &Path, results: &[MethodResult]) -> Result<(), ParquetError> {
    let all: Vec<(&MethodResult, &PredictionRecord)> = results.iter().flat_map(|r| r.records.iter().map(move |p| (r, p))).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(all.iter().map(|(r, _)| r.method.as_str()))),
        Arc::new(StringArray::from_iter_values(all.iter().map(|(r, _)| r.dataset.as_str()))),
        Arc::new(StringArray::from_iter_values(all.iter().map(|(_, p)| p.id.as_str()))),
        Arc::new(Float64Array::from_iter_values(all.iter().map(|(_, p)| p.truth.lat))),
        Arc::new(Float64Array::from_iter_values(all.iter().map(|(_, p)| p.truth.lon))),
        Arc::new(Float64Array::from_iter(all.iter().map(|(_, p)| p.pred.map(|c| c.lat)))),
        Arc::new(Float64Array::from_iter(all.iter().map(|(_, p)| p.pred.map(|c| c.lon)))),
        Arc::new(StringArray::from_iter_values(all.iter().map(|(_, p)| p.status.as_str()))),
    ];
    let batch = RecordBatch::try_new(predictions_schema(), cols).expect("prediction columns");
    pq::write(path, predictions_schema(), &[batch], &[])
}

/// Read `predictions.parquet` back into per-method results, in file order.
pub fn read_predictions(path: &Path) -> Result<Vec<MethodResult>, PipelineError> {
    let mut out: Vec<MethodResult> = Vec::new();
    let bad = |row: usize, message: String| PipelineError::Predictions { path: path.to_path_buf(), message: format!("row {row}: {message}") };
    let mut row_no = 0;
    for b in pq::read(path)? {
        let method = pq::column::<StringArray>(path, &b, "method")?;
        let dataset = pq::column::<StringArray>(path, &b, "dataset")?;
        let id = pq::column::<StringArray>(path, &b, "id")?;
        let tlat = pq::column::<Float64Array>(path, &b, "truth_lat")?;
        let tlon = pq::column::<Float64Array>(path, &b, "truth_lon")?;
        let plat = pq::column::<Float64Array>(path, &b, "pred_lat")?;
        let plon = pq::column::<Float64Array>(path, &b, "pred_lon")?;
        let status = pq::column::<StringArray>(path, &b, "status")?;
        for r in 0..b.num_rows() {
            let st = Status::parse(status.value(r)).ok_or_else(|| bad(row_no, format!("unknown status `{}`", status.value(r))))?;
            let truth = LatLon { lat: tlat.value(r), lon: tlon.value(r) };
            let pred = (!plat.is_null(r) && !plon.is_null(r)).then(|| LatLon { lat: plat.value(r), lon: plon.value(r) });
            if (st == Status::Ok) != pred.is_some() {
                return Err(bad(row_no, "status and prediction disagree".into()));
            }
            let rec = PredictionRecord { id: id.value(r).to_string(), truth, pred, status: st };
            match out.last_mut() {
                Some(m) if m.method == method.value(r) => m.records.push(rec),
                _ => out.push(MethodResult { method: method.value(r).to_string(), dataset: dataset.value(r).to_string(), records: vec![rec] }),
            }
            row_no += 1;
        }
    }
    Ok(out)
}

fn import_desc(r: &retrieval::RetrievalSpec) -> String {
    match &r.import {
        Some(i) => format!(
            "similar: {}{}",
            i.similar.display(),
            i.dissimilar.as_ref().map(|d| format!(", dissimilar: {}", d.display())).unwrap_or_default()
        ),
        None => String::new(),
    }
}

/// The leakage line of the run notes: what exclusions removed, by reason.
fn removal_line(n: &[QueryNeighbours]) -> String {
    let t = retrieval::removal_totals(n);
    if t.is_empty() {
        return "Leakage control: no retrieved neighbour was excluded (same id, leakage report).".into();
    }
    format!(
        "Leakage control: excluded {} (neighbours removed from the lists, then refilled from deeper hits; per query in retrieval_removed.csv).",
        t.iter().map(|(k, (n, q))| format!("{k}: {n} in {q} queries")).collect::<Vec<_>>().join(", ")
    )
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn write_removed(path: &Path, n: &[QueryNeighbours]) -> Result<(), PipelineError> {
    let mut s = String::from("query_id,reason,removed\n");
    for q in n {
        for (k, v) in &q.removed {
            s.push_str(&format!("{},{k},{v}\n", csv_field(&q.query_id)));
        }
    }
    Ok(atomic::write_bytes(path, s.as_bytes())?)
}

fn write_retrieval(path: &Path, neighbours: &[QueryNeighbours], db: &ingest::Dataset, rspec: &retrieval::RetrievalSpec) -> Result<(), PipelineError> {
    let wanted: std::collections::HashSet<&str> = neighbours.iter().flat_map(|q| q.similar.iter().chain(&q.dissimilar)).map(|n| n.id.as_str()).collect();
    let text = retrieval::read_text(db, &wanted, &rspec.text_fields)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("mode", DataType::Utf8, false),
        Field::new("rank", DataType::UInt32, false),
        Field::new("db_id", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("similarity", DataType::Float32, false),
        Field::new("text", DataType::Utf8, true),
    ]));
    let dmode = if rspec.import.is_some() { "dissimilar_imported" } else { rspec.dissimilar.name() };
    let smode = if rspec.import.is_some() { "similar_imported" } else { "similar" };
    let rows: Vec<(&str, &str, u32, &crate::retrieval::Neighbour)> = neighbours
        .iter()
        .flat_map(|q| {
            let s = q.similar.iter().enumerate().map(move |(i, n)| (q.query_id.as_str(), smode, i as u32, n));
            let d = q.dissimilar.iter().enumerate().map(move |(i, n)| (q.query_id.as_str(), dmode, i as u32, n));
            s.chain(d)
        })
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3.id.as_str()))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3.coord.lat))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3.coord.lon))),
        Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.3.score))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| text.get(&r.3.id).map(String::as_str)))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).expect("retrieval columns");
    Ok(pq::write(path, schema, &[batch], &[])?)
}
