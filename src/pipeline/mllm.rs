//! The MLLM stage of `georag run`: for every MLLM method, every query and every prompt
//! variant, render the prompt with the query's retrieved neighbours, get the samples (from the
//! response store, or from the generator), parse them, pool the valid ones and select one
//! coordinate.
//!
//! Data flow: neighbours (`retrieval`) -> [`crate::prompt`] -> [`crate::generate`] (requests
//! for samples the store lacks) -> [`crate::store`] (every attempt logged) -> [`crate::parse`]
//! -> [`crate::select::generated`] -> predictions, plus `generations.parquet` (every sample
//! with its raw text, parsed value and status).
//!
//! Invariants:
//! - a sample is requested only when the store has no valid answer for its key; keys shared by
//!   two methods (same prompt, image, sampling) are requested once;
//! - predictions are always rebuilt from the store, so a new parser or selector re-scores old
//!   answers without a request, and a resumed run gives the predictions of an uninterrupted one;
//! - every query ends with a terminal status; a sample without an answer is `request_failed`
//!   (with the server's last message) and never a coordinate; a query without a valid candidate
//!   takes the method's `fallback` list in order, counted per method, or fails with the most
//!   common status of its samples.

use crate::config::Config;
use crate::generate::{self, Attempt, ChatRequest, Generator, GeneratorSpec, ImagePayload, Outcome, PromptIdentity, RequestKey, Sampling};
use crate::ingest::Dataset;
use crate::parse::{Parsed, ParserSpec};
use crate::prompt::{Candidate, PromptError, Template};
use crate::record::{LatLon, PredictionRecord, Status};
use crate::report::MethodResult;
use crate::retrieval::QueryNeighbours;
use crate::select::generated::{self as gen_sel, PoolSelectorSpec};
use crate::select::{Candidates, KnnDensity, Selector};
use crate::store::{Record, Store, StoreError};
use crate::util::pq::{self, ParquetError};
use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An MLLM method (`methods: [{kind: mllm, ...}]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllmSpec {
    /// Row name in tables.
    pub name: String,
    /// Prompt variants; their valid samples are pooled (G3: zero-shot + RAG 5/10/15).
    pub variants: Vec<VariantSpec>,
    #[serde(default)]
    pub sampling: Sampling,
    /// `lenient` | `json` | `first_two` | `last_two` | `lat_lon`.
    #[serde(default)]
    pub parser: ParserSpec,
    #[serde(default = "default_selector")]
    pub selector: PoolSelectorSpec,
    /// Add the retrieval top-1 neighbour to the pool (G3's geo-verification does).
    #[serde(default)]
    pub pool_retrieval_top1: bool,
    /// What to answer, in order, for a query with no valid candidate.
    #[serde(default)]
    pub fallback: Vec<Fallback>,
}

fn default_selector() -> PoolSelectorSpec {
    PoolSelectorSpec::First
}

/// One prompt variant of a method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// A built-in template name (`street_rag`, `g3_rag`, ...) or a template file path.
    pub prompt: String,
    #[serde(default)]
    pub neighbours: NeighbourCounts,
    /// Samples asked for this variant.
    #[serde(default = "one")]
    pub samples: usize,
    /// How many of the first samples join the pool (default: all; G3 pools the first 5).
    #[serde(default)]
    pub pool: Option<usize>,
}

fn one() -> usize {
    1
}

/// Neighbours written into a prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeighbourCounts {
    pub similar: usize,
    pub dissimilar: usize,
}

/// A fallback for queries without a valid candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// GPS of the top-1 retrieved neighbour.
    RetrievalTop1,
    /// The IM2GPS kNN density mode of the top 16 neighbours (bandwidth 200 km).
    KnnDensity,
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::RetrievalTop1 => "retrieval_top1",
            Fallback::KnnDensity => "knn_density",
        }
    }
}

impl MllmSpec {
    /// Similar / dissimilar neighbours the method needs from retrieval.
    pub fn neighbours_needed(&self) -> (usize, usize) {
        let mut s = self.variants.iter().map(|v| v.neighbours.similar).max().unwrap_or(0);
        let d = self.variants.iter().map(|v| v.neighbours.dissimilar).max().unwrap_or(0);
        if self.pool_retrieval_top1 || self.fallback.contains(&Fallback::RetrievalTop1) || self.selector == PoolSelectorSpec::RetrievalTop1 {
            s = s.max(1);
        }
        if self.fallback.contains(&Fallback::KnnDensity) {
            s = s.max(16);
        }
        (s, d)
    }
}

/// Error that stops the MLLM stage (configuration, store, replay miss). Failed requests are not
/// errors.
#[derive(Debug, thiserror::Error)]
pub enum MllmError {
    #[error("method `{method}`: {source}")]
    Prompt { method: String, source: PromptError },
    #[error("methods include MLLM methods ({0}) but the config has no `generator:`")]
    NoGenerator(String),
    #[error("method `{method}`: {message}")]
    Method { method: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] generate::openai::ClientError),
    #[error(transparent)]
    Batch(#[from] generate::batch::BatchError),
    #[error(transparent)]
    Shard(#[from] crate::ingest::ShardError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Encode(#[from] crate::embed::EncodeError),
    #[error(
        "replay: no recorded answer for method `{method}`, query `{query}`, variant {variant} ({template}), sample {sample} (key {key}) in {store}; {missing} samples are missing in all. Run live once (without --replay) to record them"
    )]
    ReplayMiss { method: String, query: String, variant: usize, template: String, sample: usize, key: String, store: PathBuf, missing: usize },
}

/// What the stage does with samples the store lacks.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Send them to the generator.
    Live,
    /// Fail on the first one.
    Replay,
    /// Write them to a batch file and stop.
    ExportBatch(PathBuf),
    /// Read a batch results file into the store, then continue as `Replay` would, reporting
    /// what is still missing instead of failing.
    ImportBatch(PathBuf),
}

/// Per-method counts for the report and `run.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MethodSummary {
    pub method: String,
    pub backend: String,
    pub model: String,
    /// Model ids the server reported for the samples used.
    pub response_models: Vec<String>,
    pub prompts: Vec<String>,
    pub sampling: String,
    pub parser: String,
    pub selector: String,
    pub samples: usize,
    pub samples_by_status: BTreeMap<String, usize>,
    pub queries: usize,
    pub fallback_used: BTreeMap<String, usize>,
    pub simulated: bool,
}

/// Counts of the generation itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GenStats {
    pub samples_needed: usize,
    pub samples_in_store: usize,
    pub requests_planned: usize,
    pub requests_sent: usize,
    pub attempts: usize,
    pub retries: usize,
    pub top_ups: usize,
    pub requests_failed: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: Option<f64>,
    pub seconds: f64,
    pub store_records_at_open: u64,
    pub store_open_seconds: f64,
    pub store_torn_tail_bytes: u64,
    pub batch_exported: Option<usize>,
    pub batch_imported: Option<usize>,
    pub batch_unmatched: Option<usize>,
    pub concurrency_lowest: Option<f64>,
    pub generator: String,
}

/// What the stage returns.
pub struct MllmOutput {
    pub results: Vec<MethodResult>,
    pub summaries: Vec<MethodSummary>,
    pub stats: GenStats,
    /// `false` after `ExportBatch`: there is nothing to score yet.
    pub complete: bool,
    /// Every sample, for `generations.parquet`.
    pub generations: GenRows,
}

struct Variant {
    template: Template,
    spec: VariantSpec,
    response_format: Option<serde_json::Value>,
}

struct Method<'a> {
    spec: &'a MllmSpec,
    variants: Vec<Variant>,
    parser: Box<dyn crate::parse::Parser>,
    selector: Box<dyn Selector>,
}

/// The store directory under a cache directory.
pub fn store_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("responses")
}

/// Run the stage for `specs` (config order) over `neighbours` (query order).
pub fn run(
    cfg: &Config,
    specs: &[&MllmSpec],
    neighbours: &[QueryNeighbours],
    queries: &Dataset,
    database: &Dataset,
    mode: &Mode,
) -> Result<MllmOutput, MllmError> {
    let t0 = std::time::Instant::now();
    let Some(gspec) = cfg.generator.as_ref() else {
        return Err(MllmError::NoGenerator(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")));
    };
    let gspec = if *mode == Mode::Replay { gspec.as_replay() } else { gspec.clone() };
    let identity = gspec.identity();
    let image_spec = gspec.image().clone();
    let extra_body = gspec.extra_body().clone();

    let methods: Vec<Method> = specs.iter().map(|s| build_method(cfg, s, queries)).collect::<Result<_, _>>()?;

    let places = place_metadata(&methods, neighbours, database)?;

    let dir = store_dir(&cfg.cache_dir);
    let writes = matches!(mode, Mode::Live | Mode::ImportBatch(_));
    let store = if writes {
        Store::open(&dir)?
    } else if dir.join(crate::store::LOG_FILE).exists() {
        Store::open_read_only(&dir)?
    } else {
        Store::open(&dir)?
    };
    let mut stats = GenStats {
        store_records_at_open: store.opened.records,
        store_open_seconds: store.opened.seconds,
        store_torn_tail_bytes: store.opened.torn_tail_bytes,
        ..Default::default()
    };
    if store.opened.torn_tail_bytes > 0 {
        eprintln!("[georag] response store: a torn last record ({} bytes, from an interrupted run) was cut off", store.opened.torn_tail_bytes);
    }

    // Pass 1: plan. keys[m][q][v] = the sample keys of that prompt.
    let by_id: HashMap<&str, usize> = neighbours.iter().enumerate().map(|(i, n)| (n.query_id.as_str(), i)).collect();
    let mut keys: Vec<Vec<Vec<Vec<RequestKey>>>> = methods.iter().map(|m| vec![vec![Vec::new(); m.variants.len()]; neighbours.len()]).collect();
    let mut pending: Vec<Vec<ChatRequest>> = vec![Vec::new(); neighbours.len()];
    let mut image_ids: Vec<Option<String>> = vec![None; neighbours.len()];
    let mut claimed: HashSet<RequestKey> = HashSet::new();
    for s in 0..queries.manifest.shards.len() {
        queries.for_each_chunk(s, 256, |rows| {
            for row in rows {
                let Some(&q) = by_id.get(row.id.as_str()) else { continue };
                let nb = &neighbours[q];
                if nb.status != Status::Ok {
                    continue;
                }
                let image_id = format!("{}:{}", row.sha256, image_spec.transform_id());
                image_ids[q] = Some(image_id.clone());
                for (mi, m) in methods.iter().enumerate() {
                    for (vi, v) in m.variants.iter().enumerate() {
                        let cand = |n: &crate::retrieval::Neighbour| Candidate { coord: n.coord, place: v.template.place_of(places.get(&n.id).map(String::as_str)) };
                        let sim: Vec<Candidate> = nb.similar.iter().take(v.spec.neighbours.similar).map(cand).collect();
                        let dis: Vec<Candidate> = nb.dissimilar.iter().take(v.spec.neighbours.dissimilar).map(cand).collect();
                        let r = v.template.render(&sim, &dis);
                        let prompt = Arc::new(PromptIdentity {
                            identity: identity.clone(),
                            template_sha256: v.template.sha256.clone(),
                            system: r.system,
                            text: r.text,
                            image_id: Some(image_id.clone()),
                            sampling: m.spec.sampling.clone(),
                            response_format: v.response_format.clone(),
                            extra_body: extra_body.clone(),
                        });
                        let ks: Vec<RequestKey> = prompt.sample_keys(0..v.spec.samples);
                        stats.samples_needed += ks.len();
                        let missing: Vec<usize> = (0..ks.len()).filter(|&i| !store.contains(&ks[i])).collect();
                        stats.samples_in_store += ks.len() - missing.len();
                        let per = m.spec.sampling.n_per_request.unwrap_or(v.spec.samples).max(1);
                        for run in runs(&missing) {
                            for chunk in run.chunks(per) {
                                if chunk.iter().all(|&i| claimed.contains(&ks[i])) {
                                    continue;
                                }
                                claimed.extend(chunk.iter().map(|&i| ks[i]));
                                pending[q].push(ChatRequest {
                                    prompt: prompt.clone(),
                                    image: None,
                                    first_sample: chunk[0],
                                    n: chunk.len(),
                                    method: m.spec.name.clone(),
                                    variant: vi,
                                    query_id: nb.query_id.clone(),
                                });
                            }
                        }
                        keys[mi][q][vi] = ks;
                    }
                }
            }
            Ok::<_, MllmError>(())
        })?;
    }
    stats.requests_planned = pending.iter().map(Vec::len).sum();
    let mut store = store;

    match mode {
        Mode::Replay if stats.requests_planned > 0 => {
            let r = pending.iter().flatten().next().expect("planned > 0");
            let missing = stats.samples_needed - stats.samples_in_store;
            return Err(MllmError::ReplayMiss {
                method: r.method.clone(),
                query: r.query_id.clone(),
                variant: r.variant,
                template: methods.iter().find(|m| m.spec.name == r.method).map(|m| m.variants[r.variant].template.label()).unwrap_or_default(),
                sample: r.first_sample,
                key: r.prompt.sample_key(r.first_sample).hex(),
                store: store.path().to_path_buf(),
                missing,
            });
        }
        Mode::ExportBatch(path) => {
            let mut ex = generate::batch::Exporter::create(path, &identity.model, &extra_body)?;
            let mut err = None;
            attach_images(queries, &by_id, &mut pending, &image_spec, |q, reqs, payload| match payload {
                Ok(p) => {
                    for mut r in reqs {
                        r.image = Some(p.clone());
                        if let Err(e) = ex.write(&r) {
                            err.get_or_insert(e);
                        }
                    }
                }
                Err(e) => eprintln!("[georag] query `{}`: image not exported: {e}", neighbours[q].query_id),
            })?;
            if let Some(e) = err {
                return Err(e.into());
            }
            stats.batch_exported = Some(ex.finish()?);
            stats.seconds = t0.elapsed().as_secs_f64();
            return Ok(MllmOutput { results: vec![], summaries: vec![], stats, complete: false, generations: GenRows::default() });
        }
        Mode::ImportBatch(path) => {
            let by_custom: HashMap<String, &ChatRequest> = pending.iter().flatten().map(|r| (r.custom_id(), r)).collect();
            let results = generate::batch::read_results(path)?;
            let mut imported = 0;
            let mut unmatched = 0;
            for r in &results {
                match by_custom.get(&r.custom_id) {
                    Some(req) => {
                        store.append(&Record::of(req, &r.attempt))?;
                        imported += 1;
                    }
                    None => unmatched += 1,
                }
            }
            if unmatched > 0 {
                eprintln!("[georag] {}: {unmatched} result lines match no pending request of this config (already answered, or from another config)", path.display());
            }
            store.sync()?;
            stats.batch_imported = Some(imported);
            stats.batch_unmatched = Some(unmatched);
        }
        Mode::Live if stats.requests_planned > 0 => {
            let generator = build_generator(&gspec)?;
            stats.generator = generator.describe();
            send_all(generator.as_ref(), queries, &by_id, &mut pending, &image_spec, &mut store, &mut stats)?;
            store.sync()?;
            stats.concurrency_lowest = generator.concurrency().map(|(_, low)| low);
            stats.cost_usd = generator.cost_usd(stats.prompt_tokens, stats.completion_tokens);
        }
        _ => {}
    }
    if stats.generator.is_empty() {
        stats.generator = match &gspec {
            GeneratorSpec::OpenaiCompatible(s) => format!("openai_compatible `{}` (no request needed)", s.model),
            GeneratorSpec::Replay(r) => format!("replay of `{}` answers", r.model),
        };
    }
    drop(pending);

    // Collect: parse, pool, select.
    let mut results = Vec::new();
    let mut summaries = Vec::new();
    let mut rows = GenRows::default();
    for (mi, m) in methods.iter().enumerate() {
        let mut sum = MethodSummary {
            method: m.spec.name.clone(),
            backend: identity.backend.clone(),
            model: identity.model.clone(),
            prompts: m.variants.iter().map(|v| format!("{} ({}, sha256 {})", v.template.label(), v.template.source, &v.template.sha256[..12])).collect(),
            sampling: m.spec.sampling.describe(),
            parser: m.spec.parser.name().to_string(),
            selector: m.selector.describe().unwrap_or_else(|| m.spec.selector.describe()),
            queries: neighbours.len(),
            ..Default::default()
        };
        let mut models: HashSet<String> = HashSet::new();
        let mut records = Vec::with_capacity(neighbours.len());
        for (q, nb) in neighbours.iter().enumerate() {
            if nb.status != Status::Ok {
                records.push(PredictionRecord::failed(nb.query_id.clone(), nb.truth, nb.status));
                continue;
            }
            let mut pool: Vec<LatLon> = Vec::new();
            let mut fail_counts: BTreeMap<Status, usize> = BTreeMap::new();
            for (vi, v) in m.variants.iter().enumerate() {
                let take = v.spec.pool.unwrap_or(v.spec.samples);
                for (si, key) in keys[mi][q][vi].iter().enumerate() {
                    let (parsed, text, finish, model, source) = match store.sample(key)? {
                        Some(s) => {
                            if let Some(mm) = &s.response_model {
                                models.insert(mm.clone());
                            }
                            (m.parser.parse(s.text.as_deref().unwrap_or(""), s.finish_reason.as_deref()), s.text, s.finish_reason, s.response_model, Some(s.source))
                        }
                        None => {
                            let note = match store.last_error(key)? {
                                Some(f) => Some(format!("{}{}: {}", f.kind, f.http_status.map(|s| format!(" {s}")).unwrap_or_default(), f.message)),
                                None => Some("no answer recorded".into()),
                            };
                            (Parsed { status: Status::RequestFailed, coord: None, note }, None, None, None, None)
                        }
                    };
                    *sum.samples_by_status.entry(parsed.status.as_str().to_string()).or_insert(0) += 1;
                    sum.samples += 1;
                    let pooled = si < take && parsed.coord.is_some();
                    match parsed.coord {
                        Some(c) if si < take => pool.push(c),
                        Some(_) => {}
                        None => *fail_counts.entry(parsed.status).or_insert(0) += 1,
                    }
                    rows.push(GenRow {
                        method: m.spec.name.clone(),
                        query: nb.query_id.clone(),
                        variant: vi as u32,
                        template: v.template.label(),
                        sample: si as u32,
                        status: parsed.status.as_str(),
                        lat: parsed.coord.map(|c| c.lat),
                        lon: parsed.coord.map(|c| c.lon),
                        pooled,
                        text,
                        finish_reason: finish,
                        response_model: model,
                        source,
                        note: parsed.note,
                    });
                }
            }
            if m.spec.pool_retrieval_top1
                && let Some(n) = nb.similar.first()
            {
                pool.push(n.coord);
            }
            let c = Candidates { neighbours: nb, generated: &pool, query: q };
            let rec = match m.selector.select(&c) {
                Some(p) => PredictionRecord::ok(nb.query_id.clone(), nb.truth, p),
                None => {
                    let mut fb = None;
                    for f in &m.spec.fallback {
                        let c = Candidates::retrieval(nb, q);
                        let p = match f {
                            Fallback::RetrievalTop1 => gen_sel::RetrievalTop1.select(&c),
                            Fallback::KnnDensity => KnnDensity { k: 16, bandwidth_km: 200.0 }.select(&c),
                        };
                        if let Some(p) = p {
                            *sum.fallback_used.entry(f.name().to_string()).or_insert(0) += 1;
                            fb = Some(p);
                            break;
                        }
                    }
                    match fb {
                        Some(p) => PredictionRecord::ok(nb.query_id.clone(), nb.truth, p),
                        None => {
                            // The most common failure among its samples (ties: the first status in order).
                            let st = fail_counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(s, _)| *s).unwrap_or(Status::NoValidCandidate);
                            PredictionRecord::failed(nb.query_id.clone(), nb.truth, st)
                        }
                    }
                }
            };
            records.push(rec);
        }
        let mut models: Vec<String> = models.into_iter().collect();
        models.sort();
        sum.simulated = models.iter().any(|m| m.contains("simulated"));
        sum.response_models = models;
        let name = if sum.simulated && !m.spec.name.contains("simulated") { format!("{} (simulated LLM)", m.spec.name) } else { m.spec.name.clone() };
        results.push(MethodResult { method: name, dataset: queries.manifest.name.clone(), records });
        summaries.push(sum);
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    Ok(MllmOutput { results, summaries, stats, complete: true, generations: rows })
}

fn build_method<'a>(cfg: &Config, s: &'a MllmSpec, queries: &Dataset) -> Result<Method<'a>, MllmError> {
    let err = |message: String| MllmError::Method { method: s.name.clone(), message };
    if s.variants.is_empty() {
        return Err(err("no `variants`".into()));
    }
    let mut variants = Vec::new();
    for v in &s.variants {
        let t = Template::load(&v.prompt).map_err(|source| MllmError::Prompt { method: s.name.clone(), source })?;
        t.check_neighbours(v.neighbours.similar, v.neighbours.dissimilar).map_err(|source| MllmError::Prompt { method: s.name.clone(), source })?;
        if v.samples == 0 {
            return Err(err(format!("variant `{}`: `samples` must be at least 1", v.prompt)));
        }
        variants.push(Variant { response_format: t.response_format.body(), template: t, spec: v.clone() });
    }
    let selector: Box<dyn Selector> = match &s.selector {
        PoolSelectorSpec::First => Box::new(gen_sel::First),
        PoolSelectorSpec::Medoid => Box::new(gen_sel::Medoid),
        PoolSelectorSpec::GeometricMedian => Box::new(gen_sel::GeometricMedian),
        PoolSelectorSpec::Density { eps_km, min_samples } => Box::new(gen_sel::Density { eps_km: *eps_km, min_samples: *min_samples }),
        PoolSelectorSpec::RetrievalTop1 => Box::new(gen_sel::RetrievalTop1),
        PoolSelectorSpec::GeoVerify { encoder: None, location_weights: None, aligned: Some(dir) } => Box::new(aligned_verifier(cfg, dir, queries)?),
        PoolSelectorSpec::GeoVerify { aligned: Some(_), .. } => {
            return Err(err("selector geo_verify: give either `aligned` (trained heads) or `encoder` + `location_weights` (GeoCLIP), not both".into()));
        }
        PoolSelectorSpec::GeoVerify { encoder: Some(encoder), location_weights, aligned: None } => Box::new(geo_verifier(cfg, encoder, location_weights.as_deref(), queries)?),
        PoolSelectorSpec::GeoVerify { encoder: None, aligned: None, .. } => {
            return Err(err("selector geo_verify needs `encoder` (GeoCLIP's image tower) or `aligned` (a `georag align train` output directory)".into()));
        }
    };
    Ok(Method { spec: s, variants, parser: s.parser.build(), selector })
}

/// Embed the queries with the verification image tower (cached like any embedding) and load
/// the location tower.
fn geo_verifier(cfg: &Config, encoder: &crate::embed::EncoderSpec, location: Option<&Path>, queries: &Dataset) -> Result<gen_sel::GeoVerify, MllmError> {
    let crate::embed::EncoderSpec::Geoclip { params, weights } = encoder else {
        return Err(MllmError::Method { method: "geo_verify".into(), message: "selector.encoder must be `kind: geoclip` (GeoCLIP's image tower)".into() });
    };
    let enc = crate::embed::build(encoder)?;
    let opts = crate::embed::EmbedOptions { batch_size: encoder.batch_size(), ..Default::default() };
    let (emb, _) = crate::embed::embed_dataset(queries, enc.as_ref(), &cfg.cache_dir, &opts, "queries (geo_verify)")?;
    let dev = crate::embed::hf::device(&params.device).map_err(crate::embed::EncodeError::from)?;
    let loc = crate::embed::geoclip::LocationEncoder::load(location.unwrap_or(weights), &dev).map_err(crate::embed::EncodeError::from)?;
    let dim = emb.dim;
    Ok(gen_sel::GeoVerify { image_features: Arc::new(emb.vectors), dim, location: Arc::new(loc) })
}

/// geo_verify with trained alignment heads: the queries embedded with the experiment's encoder
/// (the cached store `run` uses; for an `aligned` encoder, its base's) through the image->GPS
/// head; candidates through the GPS tower.
fn aligned_verifier(cfg: &Config, dir: &Path, queries: &Dataset) -> Result<gen_sel::GeoVerify, MllmError> {
    let m = |message: String| MllmError::Method { method: "geo_verify".into(), message };
    let tower = crate::align::train::AlignedGps::load(dir, &crate::embed::hf::device("cpu").map_err(crate::embed::EncodeError::from)?).map_err(|e| m(e.to_string()))?;
    let spec = cfg.encoder.heads_input();
    let enc = crate::embed::build(spec)?;
    let opts = crate::embed::EmbedOptions { batch_size: spec.batch_size(), ..Default::default() };
    let (emb, _) = crate::embed::embed_dataset(queries, enc.as_ref(), &cfg.cache_dir, &opts, "queries")?;
    if emb.dim != tower.model.image_dim {
        return Err(m(format!("{}: the model was trained on {}-d image embeddings, the experiment's encoder gives {}-d", dir.display(), tower.model.image_dim, emb.dim)));
    }
    let image = crate::align::train::image_vectors(&tower.model, &emb.vectors, 1024).map_err(|e| m(e.to_string()))?;
    Ok(gen_sel::GeoVerify { image_features: Arc::new(image), dim: tower.model.spec.heads().shared_dim, location: Arc::new(tower) })
}

/// The metadata (JSON) of the database rows that templates with `place_fields` show, keyed by
/// id; empty (and no database scan) when no template asks for place text.
fn place_metadata(methods: &[Method], neighbours: &[QueryNeighbours], database: &Dataset) -> Result<HashMap<String, String>, MllmError> {
    let (mut s, mut d) = (0, 0);
    for v in methods.iter().flat_map(|m| &m.variants).filter(|v| !v.template.place_fields.is_empty()) {
        s = s.max(v.spec.neighbours.similar);
        d = d.max(v.spec.neighbours.dissimilar);
    }
    if s + d == 0 {
        return Ok(HashMap::new());
    }
    let wanted: HashSet<&str> = neighbours.iter().flat_map(|n| n.similar.iter().take(s).chain(n.dissimilar.iter().take(d))).map(|n| n.id.as_str()).collect();
    let mut out = HashMap::with_capacity(wanted.len());
    for shard in 0..database.manifest.shards.len() {
        database.for_each_chunk(shard, 1024, |rows| {
            for r in rows {
                if let Some(m) = r.meta
                    && wanted.contains(r.id.as_str())
                {
                    out.insert(r.id, m);
                }
            }
            Ok::<_, MllmError>(())
        })?;
    }
    Ok(out)
}

/// Build the live generator of a spec.
pub fn build_generator(spec: &GeneratorSpec) -> Result<Box<dyn Generator>, MllmError> {
    match spec {
        GeneratorSpec::OpenaiCompatible(s) => {
            let c = generate::OpenAiClient::new(s)?;
            c.check()?;
            Ok(Box::new(c))
        }
        GeneratorSpec::Replay(_) => unreachable!("replay never sends"),
    }
}

/// Consecutive runs in a sorted index list.
fn runs(idx: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &i in idx {
        match out.last_mut() {
            Some(r) if *r.last().expect("non-empty") + 1 == i => r.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// Stream the queries' images once, building each payload only for queries with pending
/// requests, and hand (query, its requests, payload) to `f`.
fn attach_images(
    queries: &Dataset,
    by_id: &HashMap<&str, usize>,
    pending: &mut [Vec<ChatRequest>],
    spec: &generate::ImageSpec,
    mut f: impl FnMut(usize, Vec<ChatRequest>, Result<Arc<ImagePayload>, String>),
) -> Result<(), MllmError> {
    for s in 0..queries.manifest.shards.len() {
        queries.for_each_chunk(s, 64, |rows| {
            for row in rows {
                let Some(&q) = by_id.get(row.id.as_str()) else { continue };
                if pending[q].is_empty() {
                    continue;
                }
                let reqs = std::mem::take(&mut pending[q]);
                let payload = queries
                    .image_bytes(&row)
                    .map_err(|e| format!("reading the image: {e}"))
                    .and_then(|b| spec.payload(&b))
                    .map(Arc::new);
                f(q, reqs, payload);
            }
            Ok::<_, MllmError>(())
        })?;
    }
    Ok(())
}

/// Send every pending request through the generator on `max_in_flight` worker threads,
/// logging every attempt, topping up short answers.
fn send_all(
    generator: &dyn Generator,
    queries: &Dataset,
    by_id: &HashMap<&str, usize>,
    pending: &mut [Vec<ChatRequest>],
    image_spec: &generate::ImageSpec,
    store: &mut Store,
    stats: &mut GenStats,
) -> Result<(), MllmError> {
    let total = stats.requests_planned;
    let progress = crate::util::progress::Progress::new("generate", total as u64);
    let (tx, rx) = std::sync::mpsc::sync_channel::<ChatRequest>(generator.max_in_flight() * 2);
    let rx = Mutex::new(rx);
    let shared = Mutex::new((store, Counters::default(), None::<StoreError>));
    let workers = generator.max_in_flight().min(total).max(1);
    let log = |req: &ChatRequest, a: &Attempt| {
        let mut g = shared.lock().expect("store");
        if g.2.is_some() {
            return;
        }
        if let Err(e) = g.0.append(&Record::of(req, a)) {
            g.2 = Some(e);
        }
    };
    std::thread::scope(|scope| -> Result<(), MllmError> {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let next = rx.lock().expect("queue").recv();
                    let Ok(req) = next else { break };
                    let mut c = Counters { requests: 1, ..Default::default() };
                    let mut todo = Some(req);
                    let mut rounds = 0;
                    while let Some(r) = todo.take() {
                        let mut last: Option<Outcome> = None;
                        generator.send(&r, &mut |a: Attempt| {
                            c.attempts += 1;
                            if a.attempt > 1 {
                                c.retries += 1;
                            }
                            if let Outcome::Ok { usage: Some(u), .. } = &a.outcome {
                                c.prompt_tokens += u.prompt_tokens;
                                c.completion_tokens += u.completion_tokens;
                            }
                            log(&r, &a);
                            last = Some(a.outcome);
                        });
                        match last {
                            Some(Outcome::Ok { choices, .. }) if choices.len() < r.n && !choices.is_empty() && rounds < 2 * r.n => {
                                rounds += 1;
                                c.top_ups += 1;
                                todo = Some(r.slice(r.first_sample + choices.len(), r.n - choices.len()));
                            }
                            Some(Outcome::Ok { .. }) => {}
                            _ => c.failed += 1,
                        }
                    }
                    shared.lock().expect("store").1.add(&c);
                    progress.inc(1);
                }
            });
        }
        let r = attach_images(queries, by_id, pending, image_spec, |_, reqs, payload| match payload {
            Ok(p) => {
                for mut r in reqs {
                    r.image = Some(p.clone());
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                // The image cannot be sent: each request fails once, logged, not retried.
                for r in reqs {
                    let a = Attempt {
                        outcome: Outcome::Failed(generate::Failure { kind: "not_sent".into(), http_status: None, message: format!("image: {e}"), retryable: false, body: None }),
                        server: None,
                        attempt: 1,
                        latency_ms: 0.0,
                        source: "live",
                    };
                    log(&r, &a);
                    let mut g = shared.lock().expect("store");
                    g.1.requests += 1;
                    g.1.failed += 1;
                    drop(g);
                    progress.inc(1);
                }
            }
        });
        drop(tx);
        r
    })?;
    progress.finish();
    let (_, c, err) = shared.into_inner().expect("store");
    if let Some(e) = err {
        return Err(e.into());
    }
    stats.requests_sent = c.requests;
    stats.attempts = c.attempts;
    stats.retries = c.retries;
    stats.top_ups = c.top_ups;
    stats.requests_failed = c.failed;
    stats.prompt_tokens = c.prompt_tokens;
    stats.completion_tokens = c.completion_tokens;
    Ok(())
}

#[derive(Default)]
struct Counters {
    requests: usize,
    attempts: usize,
    retries: usize,
    top_ups: usize,
    failed: usize,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.attempts += o.attempts;
        self.retries += o.retries;
        self.top_ups += o.top_ups;
        self.failed += o.failed;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
    }
}

/// One row of `generations.parquet`.
struct GenRow {
    method: String,
    query: String,
    variant: u32,
    template: String,
    sample: u32,
    status: &'static str,
    lat: Option<f64>,
    lon: Option<f64>,
    pooled: bool,
    text: Option<String>,
    finish_reason: Option<String>,
    response_model: Option<String>,
    source: Option<String>,
    note: Option<String>,
}

/// Every sample of every MLLM method.
#[derive(Default)]
pub struct GenRows(Vec<GenRow>);

impl GenRows {
    fn push(&mut self, r: GenRow) {
        self.0.push(r);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Write `generations.parquet` (atomically).
    pub fn write(&self, path: &Path) -> Result<(), ParquetError> {
        let r = &self.0;
        let schema = Arc::new(Schema::new(vec![
            Field::new("method", DataType::Utf8, false),
            Field::new("query_id", DataType::Utf8, false),
            Field::new("variant", DataType::UInt32, false),
            Field::new("template", DataType::Utf8, false),
            Field::new("sample", DataType::UInt32, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("lat", DataType::Float64, true),
            Field::new("lon", DataType::Float64, true),
            Field::new("pooled", DataType::Boolean, false),
            Field::new("text", DataType::Utf8, true),
            Field::new("finish_reason", DataType::Utf8, true),
            Field::new("response_model", DataType::Utf8, true),
            Field::new("source", DataType::Utf8, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let s = |f: fn(&GenRow) -> Option<&str>| -> ArrayRef { Arc::new(StringArray::from_iter(r.iter().map(f))) };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(r.iter().map(|x| x.method.as_str()))),
            Arc::new(StringArray::from_iter_values(r.iter().map(|x| x.query.as_str()))),
            Arc::new(UInt32Array::from_iter_values(r.iter().map(|x| x.variant))),
            Arc::new(StringArray::from_iter_values(r.iter().map(|x| x.template.as_str()))),
            Arc::new(UInt32Array::from_iter_values(r.iter().map(|x| x.sample))),
            Arc::new(StringArray::from_iter_values(r.iter().map(|x| x.status))),
            Arc::new(Float64Array::from_iter(r.iter().map(|x| x.lat))),
            Arc::new(Float64Array::from_iter(r.iter().map(|x| x.lon))),
            Arc::new(BooleanArray::from_iter(r.iter().map(|x| Some(x.pooled)))),
            s(|x| x.text.as_deref()),
            s(|x| x.finish_reason.as_deref()),
            s(|x| x.response_model.as_deref()),
            s(|x| x.source.as_deref()),
            s(|x| x.note.as_deref()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).expect("generation columns");
        pq::write(path, schema, &[batch], &[])
    }
}

/// Report lines saying how the generated answers were obtained and what became of them.
pub fn notes(g: &GenStats, methods: &[MethodSummary]) -> Vec<String> {
    let mut out = vec![format!(
        "Generation: {}; {} samples needed, {} reused from the response store ({} records at open, opened in {:.2} s{}); {} requests sent ({} attempts, {} retries, {} top-ups for short answers, {} failed after retries); tokens {} prompt + {} completion{}.",
        g.generator,
        g.samples_needed,
        g.samples_in_store,
        g.store_records_at_open,
        g.store_open_seconds,
        if g.store_torn_tail_bytes > 0 { format!(", torn last record of {} bytes cut", g.store_torn_tail_bytes) } else { String::new() },
        g.requests_sent,
        g.attempts,
        g.retries,
        g.top_ups,
        g.requests_failed,
        g.prompt_tokens,
        g.completion_tokens,
        g.cost_usd.map(|c| format!(", estimated cost ${c:.2} at the configured prices")).unwrap_or_default(),
    )];
    if let Some(low) = g.concurrency_lowest {
        out[0].push_str(&format!(" Adaptive concurrency went down to {low:.0} in flight."));
    }
    for m in methods {
        let statuses = m.samples_by_status.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
        let fb = if m.fallback_used.is_empty() {
            "no fallback used".to_string()
        } else {
            format!("fallback used for {}", m.fallback_used.iter().map(|(k, v)| format!("{v} queries ({k})")).collect::<Vec<_>>().join(", "))
        };
        out.push(format!(
            "{}{}: {} `{}` (server reports {}); prompts {}; sampling {}; parser {}; selector {}; {} samples ({statuses}); {fb}.",
            m.method,
            if m.simulated { " [SIMULATED LLM: answers from georag simulate-server, not a model]" } else { "" },
            m.backend,
            m.model,
            if m.response_models.is_empty() { "no model id".into() } else { m.response_models.join(", ") },
            m.prompts.join("; "),
            m.sampling,
            m.parser,
            m.selector,
            m.samples,
        ));
    }
    out
}
