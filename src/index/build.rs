//! Building an index in three steps that can run on different machines:
//!
//! 1. **train** (`georag index CONFIG --train`, or implicitly): count the `ok` rows of every
//!    shard, draw the seeded training sample and the seeded recall queries, train, write
//!    `trained.faiss`, `recall_queries.f32` and `train.json`;
//! 2. **part** (`--worker I --workers N`, or the one part of a single-machine build): add the
//!    contiguous shard range `[I*S/N, (I+1)*S/N)` to a copy of the trained index, shard by shard
//!    (one shard of vectors in memory), and compute the exact neighbours of the recall queries
//!    within that range; write `parts/part-IIII-of-NNNN.{json,rows.parquet,faiss}`, the `.faiss`
//!    last (it marks the part complete);
//! 3. **merge** (`--merge`): check that every part exists and grew from the same trained index,
//!    merge them in order (FAISS `merge_from`, so rows stay in shard order), combine the exact
//!    neighbours, measure recall at the configured search settings, write `index.faiss`,
//!    `rowmap.parquet`, `truth.json` and `index.json`, and remove the parts.
//!
//! Invariant: the result does not depend on N: the same shards in the same order, the same
//! trained index, the same rows (asserted by the merge test).

use super::source::{ShardRows, Shards};
use super::{faiss_err, BuiltIndex, FaissIndex, IndexError, IndexSpec, Metric, RowMap};
use crate::util::{alloc, atomic};
use crate::util::fingerprint::sha256_hex;
use crate::util::pq;
use crate::util::progress::Progress;
use crate::util::rng::Rng;
use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use faiss::Index;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub const INDEX_SCHEMA: &str = "georag.index/v1";

/// `train.json`: what the training step saw and drew.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainRecord {
    pub factory: String,
    pub metric: Metric,
    pub dim: usize,
    pub rows_per_shard: Vec<usize>,
    pub ok_per_shard: Vec<usize>,
    /// Vectors the index was trained on (0 for recipes that need no training).
    pub train_rows: usize,
    /// Inverted lists of IVF recipes.
    pub nlist: Option<usize>,
    /// Set when the training sample is below FAISS's 39 points per centroid.
    pub warning: Option<String>,
    /// Global `ok`-row positions of the recall queries.
    pub recall_positions: Vec<usize>,
    pub trained_sha256: String,
    pub seconds: f64,
    pub faiss_version: String,
    /// The SIMD level the training binary's FAISS was compiled at ([`super::faiss_simd`]): it
    /// decides the file's bytes; empty in records written before it was recorded.
    #[serde(default)]
    pub faiss_simd: String,
}

impl TrainRecord {
    pub fn n_ok(&self) -> usize {
        self.ok_per_shard.iter().sum()
    }
}

/// `parts/part-IIII-of-NNNN.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartRecord {
    pub worker: usize,
    pub workers: usize,
    /// Shards `[lo, hi)` of the store.
    pub shards: (usize, usize),
    pub vectors: usize,
    pub trained_sha256: String,
    /// Per recall query: the best `k + 1` (global position, similarity) within this part.
    pub truth: Vec<Vec<(u64, f32)>>,
    pub seconds: f64,
}

/// Recall, speed at one search setting, against exact search on the recall queries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallPoint {
    /// `nprobe 16`, `efSearch 64`, or empty.
    pub params: String,
    pub queries: usize,
    pub k: usize,
    /// Share of queries whose approximate top-1 is the exact top-1.
    pub recall_at_1: f64,
    /// |approximate top-10 ∩ exact top-10| / 10, averaged over queries.
    pub recall_at_10: f64,
    /// The same at k.
    pub recall_at_k: f64,
    /// Queries per second, one batch from one thread (FAISS parallelises within it).
    pub qps: f64,
}

/// `index.json`: what an index is and what it measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexMeta {
    pub schema: String,
    pub fingerprint: String,
    pub factory: String,
    pub metric: Metric,
    pub dim: usize,
    pub faiss_version: String,
    /// The SIMD level of the FAISS that trained it (from [`TrainRecord::faiss_simd`]); the
    /// queries/s it measured ran on this level's kernels.
    #[serde(default)]
    pub faiss_simd: String,
    pub vectors: usize,
    pub shards: usize,
    pub parts: usize,
    pub train_rows: usize,
    pub train_warning: Option<String>,
    pub bytes: u64,
    pub bytes_per_vector: f64,
    pub train_seconds: f64,
    pub add_seconds: f64,
    pub merge_seconds: f64,
    /// Peak resident memory of the merge (or the whole build on one machine) from its start,
    /// bytes (`VmHWM`, restarted by [`reset_peak_rss`]; training included when it ran in the
    /// same call).
    pub peak_rss_bytes: Option<u64>,
    /// Recall by search setting (`params` string), the configured one measured at build time.
    pub recall: BTreeMap<String, RecallPoint>,
}

impl IndexMeta {
    /// One line for the run notes.
    pub fn describe(&self, params: &str) -> String {
        let mut s = format!(
            "Index `{}` ({}, FAISS {}{}): {} vectors, {:.1} bytes/vector, {:.1} MB.",
            self.factory,
            self.metric.name(),
            self.faiss_version,
            if self.faiss_simd.is_empty() { String::new() } else { format!(" {}", self.faiss_simd) },
            self.vectors,
            self.bytes_per_vector,
            self.bytes as f64 / 1e6
        );
        match self.recall.get(params) {
            Some(r) => s.push_str(&format!(
                " Recall against exact search{} on {} held-out database vectors as queries (own row left out): @1 {:.3}, @10 {:.3}, @{} {:.3}; {:.0} queries/s.",
                if params.is_empty() { String::new() } else { format!(" at {params}") },
                r.queries,
                r.recall_at_1,
                r.recall_at_10,
                r.k,
                r.recall_at_k,
                r.qps
            )),
            None => s.push_str(" Recall not measured (index.recall.queries = 0)."),
        }
        if let Some(w) = &self.train_warning {
            s.push_str(&format!(" Warning: {w}"));
        }
        s
    }
}

/// The files of one index directory.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Self {
        Layout { dir }
    }
    pub fn train_json(&self) -> PathBuf {
        self.dir.join("train.json")
    }
    pub fn trained(&self) -> PathBuf {
        self.dir.join("trained.faiss")
    }
    pub fn recall_queries(&self) -> PathBuf {
        self.dir.join("recall_queries.f32")
    }
    pub fn part(&self, i: usize, n: usize, ext: &str) -> PathBuf {
        self.dir.join("parts").join(format!("part-{i:04}-of-{n:04}.{ext}"))
    }
    pub fn index(&self) -> PathBuf {
        self.dir.join("index.faiss")
    }
    pub fn rowmap(&self) -> PathBuf {
        self.dir.join("rowmap.parquet")
    }
    pub fn truth(&self) -> PathBuf {
        self.dir.join("truth.json")
    }
    pub fn meta(&self) -> PathBuf {
        self.dir.join("index.json")
    }
    pub fn is_complete(&self) -> bool {
        self.index().exists() && self.rowmap().exists() && self.meta().exists()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Write(atomic::AtomicWriteError { path: path.to_path_buf(), source })
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, IndexError> {
    let s = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&s).map_err(|e| IndexError::Store { path: path.to_path_buf(), message: e.to_string() })
}

pub(crate) fn read_faiss(path: &Path, factory: &str) -> Result<faiss::index::IndexImpl, IndexError> {
    faiss::read_index(path.to_string_lossy()).map_err(faiss_err("read", factory))
}

fn write_faiss(index: &faiss::index::IndexImpl, path: &Path, factory: &str) -> Result<(), IndexError> {
    let tmp = atomic::temp_for(path)?;
    faiss::write_index(index, tmp.to_string_lossy()).map_err(faiss_err("write", factory))?;
    atomic::commit(&tmp, path)?;
    Ok(())
}

/// Seeded uniform sample of `m` of `0..n`, sorted (partial Fisher-Yates).
pub(crate) fn sample(n: usize, m: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    let m = m.min(n);
    for i in 0..m {
        let j = i + rng.below(n - i);
        v.swap(i, j);
    }
    v.truncate(m);
    v.sort_unstable();
    v
}

/// Vectors at sorted global positions, in one pass over the shards that hold any.
fn gather(src: &dyn Shards, ok_per_shard: &[usize], positions: &[usize], chunk: usize) -> Result<Vec<f32>, IndexError> {
    let d = src.dim();
    let mut out = Vec::with_capacity(positions.len() * d);
    let (mut base, mut next) = (0usize, 0usize);
    for (s, &n) in ok_per_shard.iter().enumerate() {
        if next < positions.len() && positions[next] < base + n {
            let mut local = base;
            src.visit(s, chunk, &mut |rows: &ShardRows| {
                while next < positions.len() && positions[next] < local + rows.len() {
                    let i = positions[next] - local;
                    out.extend_from_slice(&rows.vectors[i * d..(i + 1) * d]);
                    next += 1;
                }
                local += rows.len();
                Ok(())
            })?;
        }
        base += n;
    }
    Ok(out)
}

/// nlist of an IVF index, also inside a pre-transform or refine wrapper.
pub(crate) fn ivf_of(index: &faiss::index::IndexImpl) -> Option<*mut faiss_sys::FaissIndexIVF> {
    // SAFETY: the casts are FAISS's dynamic_casts on a live index; null means "not that type".
    unsafe {
        let p = index.inner_ptr();
        let ivf = faiss_sys::faiss_IndexIVF_cast(p);
        if !ivf.is_null() {
            return Some(ivf);
        }
        let pt = faiss_sys::faiss_IndexPreTransform_cast(p);
        if !pt.is_null() {
            let inner = faiss_sys::faiss_IndexPreTransform_index(pt);
            let ivf = faiss_sys::faiss_IndexIVF_cast(inner);
            if !ivf.is_null() {
                return Some(ivf);
            }
        }
        None
    }
}

pub(crate) fn nlist_of(index: &faiss::index::IndexImpl) -> Option<usize> {
    // SAFETY: a live IVF index.
    ivf_of(index).map(|p| unsafe { faiss_sys::faiss_IndexIVF_nlist(p) })
}

/// Step 1: train (or reuse the trained index when `train.json` is there).
pub fn train(spec: &IndexSpec, src: &dyn Shards, layout: &Layout) -> Result<TrainRecord, IndexError> {
    if layout.train_json().exists() && layout.trained().exists() && layout.recall_queries().exists() {
        return read_json(&layout.train_json());
    }
    std::fs::create_dir_all(&layout.dir).map_err(io_err(&layout.dir))?;
    let t = Instant::now();
    let f = spec.factory.as_str();
    let d = src.dim();
    let mut rows_per_shard = vec![];
    let mut ok_per_shard = vec![];
    for s in 0..src.n_shards() {
        let (r, ok) = src.counts(s)?;
        rows_per_shard.push(r);
        ok_per_shard.push(ok);
    }
    let n_ok: usize = ok_per_shard.iter().sum();
    if n_ok == 0 {
        return Err(IndexError::Empty(rows_per_shard.iter().sum()));
    }
    let mut index = faiss::index_factory(d as u32, f, spec.metric.faiss()).map_err(faiss_err("index_factory", f))?;
    let nlist = nlist_of(&index);
    let mut train_rows = 0;
    let mut warning = None;
    if !index.is_trained() {
        let pos = sample(n_ok, spec.train_sample, spec.seed);
        train_rows = pos.len();
        if let Some(nl) = nlist
            && train_rows < 39 * nl
        {
            warning = Some(format!(
                "trained `{f}` on {train_rows} vectors for {nl} inverted lists ({:.1} per centroid; FAISS's k-means wants at least 39, i.e. {} vectors): raise index.train_sample (the database has {n_ok}) or use fewer lists",
                train_rows as f64 / nl as f64,
                39 * nl
            ));
            eprintln!("warning: {}", warning.as_deref().unwrap_or_default());
        }
        let x = gather(src, &ok_per_shard, &pos, spec.add_batch)?;
        let p = Progress::new("train index", 1);
        index.train(&x).map_err(faiss_err("train", f))?;
        p.inc(1);
        p.finish();
    }
    let recall_positions = sample(n_ok, spec.recall.queries, spec.recall.seed);
    let q = gather(src, &ok_per_shard, &recall_positions, spec.add_batch)?;
    let qbytes: Vec<u8> = q.iter().flat_map(|v| v.to_le_bytes()).collect();
    atomic::write_bytes(&layout.recall_queries(), &qbytes)?;
    write_faiss(&index, &layout.trained(), f)?;
    let trained_sha256 = sha256_hex(&std::fs::read(layout.trained()).map_err(io_err(&layout.trained()))?);
    let rec = TrainRecord {
        factory: spec.factory.clone(),
        metric: spec.metric,
        dim: d,
        rows_per_shard,
        ok_per_shard,
        train_rows,
        nlist,
        warning,
        recall_positions,
        trained_sha256,
        seconds: t.elapsed().as_secs_f64(),
        faiss_version: super::faiss_version(),
        faiss_simd: super::faiss_simd().into(),
    };
    atomic::write_json(&layout.train_json(), &rec)?;
    Ok(rec)
}

fn read_queries(layout: &Layout, dim: usize, n: usize) -> Result<Vec<f32>, IndexError> {
    let path = layout.recall_queries();
    let b = std::fs::read(&path).map_err(io_err(&path))?;
    if b.len() != n * dim * 4 {
        return Err(IndexError::Store { path, message: format!("{} bytes, expected {n} queries of {dim} f32", b.len()) });
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Keep the best `keep` of `(position, similarity)`, best first, ties by position.
fn merge_top(a: &mut Vec<(u64, f32)>, b: impl IntoIterator<Item = (u64, f32)>, keep: usize) {
    a.extend(b);
    a.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    a.truncate(keep);
}

/// Database vectors per exact search of the recall queries while adding (12 MB at 768-d).
pub const TRUTH_BLOCK: usize = 4096;

/// The contiguous shard range worker `i` of `n` owns.
pub fn shard_range(n_shards: usize, i: usize, n: usize) -> (usize, usize) {
    (i * n_shards / n, (i + 1) * n_shards / n)
}

/// A finished part: its index in memory (for a one-part build) and its record.
pub struct Part {
    pub index: Option<faiss::index::IndexImpl>,
    pub rows: RowMap,
    pub record: PartRecord,
}

/// Step 2: worker `worker` of `workers` adds its shards. Reuses a complete part from the same
/// trained index.
pub fn build_part(spec: &IndexSpec, src: &dyn Shards, layout: &Layout, tr: &TrainRecord, worker: usize, workers: usize) -> Result<Part, IndexError> {
    let f = spec.factory.as_str();
    let (json, rows_path, faiss_path) = (layout.part(worker, workers, "json"), layout.part(worker, workers, "rows.parquet"), layout.part(worker, workers, "faiss"));
    if faiss_path.exists() && json.exists() {
        let record: PartRecord = read_json(&json)?;
        if record.trained_sha256 == tr.trained_sha256 {
            return Ok(Part { index: None, rows: read_rowmap(&rows_path)?, record });
        }
    }
    std::fs::create_dir_all(layout.dir.join("parts")).map_err(io_err(&layout.dir))?;
    let t = Instant::now();
    let d = src.dim();
    let k1 = spec.recall.k + 1;
    let nq = tr.recall_positions.len();
    let queries = read_queries(layout, d, nq)?;
    let mut index = read_faiss(&layout.trained(), f)?;
    let (lo, hi) = shard_range(src.n_shards(), worker, workers);
    let mut base: usize = tr.ok_per_shard[..lo].iter().sum();
    let mut rows = RowMap::default();
    let mut truth: Vec<Vec<(u64, f32)>> = vec![Vec::new(); nq];
    let total: usize = tr.ok_per_shard[lo..hi].iter().sum();
    let p = Progress::new(&format!("index add (part {}/{workers})", worker + 1), total as u64);
    let mut flat = faiss::index_factory(d as u32, "Flat", spec.metric.faiss()).map_err(faiss_err("index_factory", "Flat"))?;
    for s in lo..hi {
        src.visit(s, spec.add_batch, &mut |c: &ShardRows| {
            index.add(&c.vectors).map_err(faiss_err("add", f))?;
            // Exact neighbours of the recall queries within this chunk (BLAS through FAISS), a
            // block at a time so that the flat copy stays small next to the chunk.
            let mut lo = 0;
            while nq > 0 && lo < c.len() {
                let hi = (lo + TRUTH_BLOCK).min(c.len());
                flat.reset().map_err(faiss_err("reset", "Flat"))?;
                flat.add(&c.vectors[lo * d..hi * d]).map_err(faiss_err("add", "Flat"))?;
                let kk = k1.min(hi - lo);
                let res = flat.search(&queries, kk).map_err(faiss_err("search", "Flat"))?;
                for (q, t) in truth.iter_mut().enumerate() {
                    let hits = (0..kk).filter_map(|j| {
                        let i = q * kk + j;
                        res.labels[i].get().map(|r| ((base + lo + r as usize) as u64, spec.metric.similarity(res.distances[i])))
                    });
                    merge_top(t, hits, k1);
                }
                lo = hi;
            }
            rows.ids.extend(c.ids.iter().cloned());
            rows.lat.extend_from_slice(&c.lat);
            rows.lon.extend_from_slice(&c.lon);
            base += c.len();
            p.inc(c.len() as u64);
            Ok(())
        })?;
    }
    p.finish();
    let record = PartRecord {
        worker,
        workers,
        shards: (lo, hi),
        vectors: rows.ids.len(),
        trained_sha256: tr.trained_sha256.clone(),
        truth,
        seconds: t.elapsed().as_secs_f64(),
    };
    if workers > 1 {
        write_rowmap(&rows_path, &rows)?;
        atomic::write_json(&json, &record)?;
        write_faiss(&index, &faiss_path, f)?;
    }
    Ok(Part { index: Some(index), rows, record })
}

/// What merging found missing or inconsistent, with the commands that fix it.
fn check_parts(layout: &Layout, tr: &TrainRecord, workers: usize, config: &str) -> Result<Vec<PartRecord>, IndexError> {
    let mut missing = vec![];
    let mut stale = vec![];
    let mut records = vec![];
    for i in 0..workers {
        if !layout.part(i, workers, "faiss").exists() {
            missing.push(i);
            continue;
        }
        let r: PartRecord = read_json(&layout.part(i, workers, "json"))?;
        if r.trained_sha256 != tr.trained_sha256 {
            stale.push(i);
        }
        records.push(r);
    }
    if missing.is_empty() && stale.is_empty() {
        return Ok(records);
    }
    let mut msg = format!("cannot merge {} parts in {}:", workers, layout.dir.join("parts").display());
    for i in &missing {
        msg.push_str(&format!("\n  part {i} is missing: run `georag index {config} --worker {i} --workers {workers}`"));
    }
    for i in &stale {
        msg.push_str(&format!(
            "\n  part {i} was built from a different trained index (train.json was rewritten since): delete it and rerun `georag index {config} --worker {i} --workers {workers}`"
        ));
    }
    Err(IndexError::Build(msg))
}

/// Move every vector of `other` into `base` (FAISS `merge_from`; ids stay sequential).
fn merge_into(base: &mut faiss::index::IndexImpl, other: &mut faiss::index::IndexImpl, factory: &str) -> Result<(), IndexError> {
    // IVF lists carry ids, which must be shifted by the rows already merged; flat-code indexes
    // append in order and take no offset.
    let add_id = if ivf_of(base).is_some() { base.ntotal() as i64 } else { 0 };
    // SAFETY: `faiss_IndexIVF_merge_from` calls the virtual `Index::merge_from` of the object
    // (IVF, a pre-transform over IVF, or a flat-code index), which checks compatibility and
    // throws (returned as an error code) for kinds that cannot merge (HNSW, refine).
    let rc = unsafe { faiss_sys::faiss_IndexIVF_merge_from(base.inner_ptr() as *mut _, other.inner_ptr() as *mut _, add_id) };
    if rc != 0 {
        // SAFETY: FAISS's last error message for this thread.
        let msg = unsafe {
            let p = faiss_sys::faiss_get_last_error();
            if p.is_null() { format!("error code {rc}") } else { std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned() }
        };
        return Err(IndexError::Build(format!(
            "recipe `{factory}` cannot merge partial indexes ({msg}); build it with one worker, or use an IVF, Flat, PQ or SQ recipe for sharded builds"
        )));
    }
    Ok(())
}

/// Step 3: merge the parts (or take the one part), measure, write the final index.
pub fn finish(spec: &IndexSpec, layout: &Layout, tr: &TrainRecord, fingerprint: &str, parts: Vec<Part>, n_shards: usize) -> Result<BuiltIndex, IndexError> {
    let f = spec.factory.as_str();
    let t = Instant::now();
    let n = parts.len();
    let mut index: Option<faiss::index::IndexImpl> = None;
    // Sized once: growing by doubling would hold the old and the new buffer at once.
    let total: usize = parts.iter().map(|p| p.rows.ids.len()).sum();
    let mut rows = RowMap { ids: Vec::with_capacity(total), lat: Vec::with_capacity(total), lon: Vec::with_capacity(total) };
    let k1 = spec.recall.k + 1;
    let mut truth: Vec<Vec<(u64, f32)>> = vec![Vec::new(); tr.recall_positions.len()];
    let mut add_seconds: f64 = 0.0;
    for mut part in parts {
        let mut ix = match part.index.take() {
            Some(ix) => ix,
            None => read_faiss(&layout.part(part.record.worker, part.record.workers, "faiss"), f)?,
        };
        match index.as_mut() {
            None => index = Some(ix),
            Some(base) => merge_into(base, &mut ix, f)?,
        }
        rows.ids.extend(part.rows.ids);
        rows.lat.extend(part.rows.lat);
        rows.lon.extend(part.rows.lon);
        for (t, p) in truth.iter_mut().zip(part.record.truth) {
            merge_top(t, p, k1);
        }
        add_seconds = add_seconds.max(part.record.seconds);
    }
    let index = index.ok_or_else(|| IndexError::Build("no parts to merge".into()))?;
    if index.ntotal() as usize != rows.ids.len() {
        return Err(IndexError::Mismatch { path: layout.index(), index: index.ntotal() as usize, rows: rows.ids.len() });
    }
    let merge_seconds = if n > 1 { t.elapsed().as_secs_f64() } else { 0.0 };
    write_rowmap(&layout.rowmap(), &rows)?;
    atomic::write_json(&layout.truth(), &truth)?;
    write_faiss(&index, &layout.index(), f)?;
    let bytes = std::fs::metadata(layout.index()).map_err(io_err(&layout.index()))?.len();
    let mut fx = FaissIndex::from_faiss(index, f, spec.metric);
    fx.apply(spec)?;
    let mut meta = IndexMeta {
        schema: INDEX_SCHEMA.into(),
        fingerprint: fingerprint.to_string(),
        factory: spec.factory.clone(),
        metric: spec.metric,
        dim: tr.dim,
        faiss_version: tr.faiss_version.clone(),
        faiss_simd: tr.faiss_simd.clone(),
        vectors: rows.ids.len(),
        shards: n_shards,
        parts: n,
        train_rows: tr.train_rows,
        train_warning: tr.warning.clone(),
        bytes,
        bytes_per_vector: bytes as f64 / rows.ids.len().max(1) as f64,
        train_seconds: tr.seconds,
        add_seconds,
        merge_seconds,
        peak_rss_bytes: peak_rss(),
        recall: BTreeMap::new(),
    };
    if let Some(r) = measure(&mut fx, layout, tr, &truth, spec)? {
        meta.recall.insert(r.params.clone(), r);
    }
    atomic::write_json(&layout.meta(), &meta)?;
    if n > 1 {
        let _ = std::fs::remove_dir_all(layout.dir.join("parts"));
    }
    Ok(BuiltIndex { index: fx, rows, dir: layout.dir.clone(), fingerprint: fingerprint.to_string(), reused: false, meta })
}

/// Recall of `index` at its current search settings against the stored exact neighbours.
pub fn measure(index: &mut FaissIndex, layout: &Layout, tr: &TrainRecord, truth: &[Vec<(u64, f32)>], spec: &IndexSpec) -> Result<Option<RecallPoint>, IndexError> {
    let nq = tr.recall_positions.len();
    if nq == 0 {
        return Ok(None);
    }
    let queries = read_queries(layout, tr.dim, nq)?;
    let k = spec.recall.k;
    let t = Instant::now();
    let hits = super::VectorIndex::search(index, &queries, k + 1)?;
    let secs = t.elapsed().as_secs_f64();
    let (mut r1, mut r10, mut rk) = (0.0, 0.0, 0.0);
    for ((h, t), &pos) in hits.iter().zip(truth).zip(&tr.recall_positions) {
        let own = pos as u64;
        let approx: Vec<u64> = h.iter().map(|x| x.row as u64).filter(|&r| r != own).take(k).collect();
        let exact: Vec<u64> = t.iter().map(|x| x.0).filter(|&r| r != own).take(k).collect();
        let at = |c: usize| -> f64 {
            let e = &exact[..c.min(exact.len())];
            if e.is_empty() {
                return 1.0;
            }
            let a = &approx[..c.min(approx.len())];
            a.iter().filter(|x| e.contains(x)).count() as f64 / e.len() as f64
        };
        r1 += at(1);
        r10 += at(10);
        rk += at(k);
    }
    let n = nq as f64;
    Ok(Some(RecallPoint {
        params: spec.search_params(),
        queries: nq,
        k,
        recall_at_1: r1 / n,
        recall_at_10: r10 / n,
        recall_at_k: rk / n,
        qps: n / secs.max(1e-9),
    }))
}

/// Peak resident set size of this process (Linux `VmHWM`), bytes.
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resident set size of this process now (Linux `VmRSS`), bytes.
pub fn rss_now() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

fn proc_status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn rowmap_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
    ]))
}

/// Rows per batch and row group of a written row map: the writer holds one group's copy
/// (ids as arrow strings, lat, lon, their encoding), not one of the whole map.
const ROWMAP_GROUP: usize = 65_536;

fn write_rowmap(path: &Path, rows: &RowMap) -> Result<(), IndexError> {
    let n = rows.ids.len();
    let batches = (0..n.div_ceil(ROWMAP_GROUP)).map(|g| {
        let (lo, hi) = (g * ROWMAP_GROUP, ((g + 1) * ROWMAP_GROUP).min(n));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.ids[lo..hi].iter())),
            Arc::new(Float64Array::from_iter_values(rows.lat[lo..hi].iter().copied())),
            Arc::new(Float64Array::from_iter_values(rows.lon[lo..hi].iter().copied())),
        ];
        RecordBatch::try_new(rowmap_schema(), cols)
    });
    pq::write_stream(path, rowmap_schema(), batches, &[], Some(ROWMAP_GROUP))?;
    Ok(())
}

pub(crate) fn read_rowmap(path: &Path) -> Result<RowMap, IndexError> {
    let mut m = RowMap::default();
    for b in pq::read(path)? {
        let id = pq::column::<StringArray>(path, &b, "id")?;
        let lat = pq::column::<Float64Array>(path, &b, "lat")?;
        let lon = pq::column::<Float64Array>(path, &b, "lon")?;
        m.ids.extend(id.iter().map(|s| s.unwrap_or_default().to_string()));
        m.lat.extend(lat.values().iter().copied());
        m.lon.extend(lon.values().iter().copied());
    }
    Ok(m)
}

/// Open a complete index directory, re-measuring recall when the search settings are new.
pub fn open(spec: &IndexSpec, layout: &Layout) -> Result<BuiltIndex, IndexError> {
    let f = spec.factory.as_str();
    let mut meta: IndexMeta = read_json(&layout.meta())?;
    let index = read_faiss(&layout.index(), f)?;
    let rows = read_rowmap(&layout.rowmap())?;
    if index.ntotal() as usize != rows.ids.len() {
        return Err(IndexError::Mismatch { path: layout.index(), index: index.ntotal() as usize, rows: rows.ids.len() });
    }
    let mut fx = FaissIndex::from_faiss(index, f, spec.metric);
    fx.apply(spec)?;
    let params = spec.search_params();
    if !meta.recall.contains_key(&params) && spec.recall.queries > 0 && layout.truth().exists() {
        let tr: TrainRecord = read_json(&layout.train_json())?;
        let truth: Vec<Vec<(u64, f32)>> = read_json(&layout.truth())?;
        if let Some(r) = measure(&mut fx, layout, &tr, &truth, spec)? {
            meta.recall.insert(params, r);
            atomic::write_json(&layout.meta(), &meta)?;
        }
    }
    let fingerprint = meta.fingerprint.clone();
    Ok(BuiltIndex { index: fx, rows, dir: layout.dir.clone(), fingerprint, reused: true, meta })
}

/// What every build entry point does first: FAISS's OpenMP threads from the recipe and
/// [`reset_peak_rss`]. The steps that build then hold a [`LargeFrees`].
fn begin(spec: &IndexSpec) {
    if let Some(t) = spec.threads {
        super::set_threads(t);
    }
    reset_peak_rss();
}

/// [`alloc::return_large_frees`] while it lives (a build's train, add and merge steps), and
/// [`alloc::serve_large_from_heap`] after, for the searches that follow in the same process.
/// Loading a complete index takes neither and leaves glibc's own adjustment on.
#[must_use]
pub struct LargeFrees(());

impl LargeFrees {
    pub fn returned() -> LargeFrees {
        alloc::return_large_frees();
        LargeFrees(())
    }
}

impl Drop for LargeFrees {
    fn drop(&mut self) {
        alloc::serve_large_from_heap();
    }
}

/// Start this process's peak resident set (`VmHWM`) afresh at its current size, so that the
/// peak a build records and prints is the build's own, not that of what ran before it in the
/// same process (the encoder opened to locate the embedding store, `georag run`'s embedding
/// stage). Linux 4.0 and later (`/proc/self/clear_refs`, value 5); elsewhere a no-op, and the
/// peak is the process's.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The whole build on one machine (train, one part, finish), or the complete index when its
/// fingerprint matches.
pub fn build_or_load(spec: &IndexSpec, src: &dyn Shards, cache_dir: &Path) -> Result<BuiltIndex, IndexError> {
    begin(spec);
    let fp = super::fingerprint(spec, src.store());
    let layout = Layout::new(cache_dir.join("index").join(&fp));
    if layout.is_complete() {
        return open(spec, &layout);
    }
    let _frees = LargeFrees::returned();
    let tr = train(spec, src, &layout)?;
    let part = build_part(spec, src, &layout, &tr, 0, 1)?;
    finish(spec, &layout, &tr, &fp, vec![part], src.n_shards())
}

/// `georag index CONFIG --merge`: combine the parts of `workers` workers.
pub fn merge_parts(spec: &IndexSpec, src: &dyn Shards, cache_dir: &Path, workers: usize, config: &str) -> Result<BuiltIndex, IndexError> {
    begin(spec);
    let fp = super::fingerprint(spec, src.store());
    let layout = Layout::new(cache_dir.join("index").join(&fp));
    if layout.is_complete() {
        return open(spec, &layout);
    }
    let _frees = LargeFrees::returned();
    if !layout.train_json().exists() {
        return Err(IndexError::Build(format!("no trained index in {}: run `georag index {config} --train` first", layout.dir.display())));
    }
    let tr: TrainRecord = read_json(&layout.train_json())?;
    let records = check_parts(&layout, &tr, workers, config)?;
    let mut parts = vec![];
    for r in records {
        let rows = read_rowmap(&layout.part(r.worker, workers, "rows.parquet"))?;
        parts.push(Part { index: None, rows, record: r });
    }
    finish(spec, &layout, &tr, &fp, parts, src.n_shards())
}

/// `georag index CONFIG --worker I --workers N`: train if needed (`--train` does only that),
/// then build part I.
pub fn worker_part(spec: &IndexSpec, src: &dyn Shards, cache_dir: &Path, worker: usize, workers: usize, config: &str) -> Result<PartRecord, IndexError> {
    begin(spec);
    let _frees = LargeFrees::returned();
    let fp = super::fingerprint(spec, src.store());
    let layout = Layout::new(cache_dir.join("index").join(&fp));
    if !layout.train_json().exists() {
        return Err(IndexError::Build(format!(
            "no trained index in {}: run `georag index {config} --train` once before the workers (they must all start from the same trained index)",
            layout.dir.display()
        )));
    }
    let tr: TrainRecord = read_json(&layout.train_json())?;
    Ok(build_part(spec, src, &layout, &tr, worker, workers)?.record)
}

/// `georag index CONFIG --train`.
pub fn train_only(spec: &IndexSpec, src: &dyn Shards, cache_dir: &Path) -> Result<(TrainRecord, PathBuf), IndexError> {
    begin(spec);
    let _frees = LargeFrees::returned();
    let fp = super::fingerprint(spec, src.store());
    let layout = Layout::new(cache_dir.join("index").join(&fp));
    Ok((train(spec, src, &layout)?, layout.dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After 256 MB were touched and freed, the reset brings the recorded peak down by at
    /// least half of that (without it the peak never decreases).
    #[test]
    fn peak_rss_restarts_at_the_current_size() {
        alloc::return_large_frees();
        let before = peak_rss().expect("VmHWM");
        let big = vec![1u8; 256 << 20];
        assert!(big.iter().step_by(4096).all(|&b| b == 1));
        drop(big);
        let high = peak_rss().unwrap();
        assert!(high >= before + (200 << 20), "peak {high} before {before}");
        reset_peak_rss();
        let peak = peak_rss().unwrap();
        assert!(peak + (128 << 20) < high, "peak {peak} after the reset, {high} before: not reset");
    }

    /// A row map longer than one row group is written in groups of `ROWMAP_GROUP` rows and
    /// reads back whole and in order (ids, lat, lon), including the short last group.
    #[test]
    fn row_map_round_trips_across_row_groups() {
        let n = 2 * ROWMAP_GROUP + 5;
        let rows = RowMap {
            ids: (0..n).map(|i| format!("r{i}")).collect(),
            lat: (0..n).map(|i| i as f64 * 1e-3).collect(),
            lon: (0..n).map(|i| -(i as f64) * 1e-3).collect(),
        };
        let dir = std::env::temp_dir().join(format!("georag-rowmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rowmap.parquet");
        write_rowmap(&path, &rows).unwrap();
        let meta = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let groups: Vec<i64> = parquet::file::reader::FileReader::metadata(&meta).row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, vec![ROWMAP_GROUP as i64, ROWMAP_GROUP as i64, 5]);
        let back = read_rowmap(&path).unwrap();
        assert_eq!(back.ids, rows.ids);
        assert_eq!(back.lat, rows.lat);
        assert_eq!(back.lon, rows.lon);
        // An empty map is a valid file with no rows.
        write_rowmap(&path, &RowMap::default()).unwrap();
        assert!(read_rowmap(&path).unwrap().ids.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
