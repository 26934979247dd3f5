//! Vector index: the [`VectorIndex`] trait, its FAISS implementation, and the index stage
//! (train, add shard by shard, merge partial indexes, measure recall; see [`build`]).
//!
//! Invariants:
//! - vectors are L2-normalised; with `metric: inner_product` scores are cosines, with `metric:
//!   l2` FAISS's squared distance d² is reported as `1 - d²/2` (the cosine of unit vectors), so
//!   every [`Hit::score`] is "higher is more similar";
//! - index row `i` is row `i` of the row map stored beside it (`rowmap.parquet`: id, lat, lon of
//!   the database photo): the `ok` rows of the embedding store in shard order; only photos with
//!   status `ok` are indexed;
//! - an index directory `index/<fingerprint>/` (fingerprint of the recipe: factory string,
//!   metric, training sample size and seed, recall sample; the FAISS version; the embedding
//!   store) is complete when `index.faiss` exists, and `index.json` beside it records its
//!   measured recall, speed and size; every file is written to a temporary name and renamed;
//! - nprobe, efSearch and the OpenMP thread count are search-time settings, not part of the
//!   fingerprint; recall is re-measured (from the stored exact neighbours) when they change.

pub mod build;
pub mod source;
pub mod tune;

use crate::embed::Embeddings;
use crate::util::fingerprint::Fingerprint;
use crate::util::pq::ParquetError;
use crate::util::atomic;
use faiss::{Index, MetricType};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Distance FAISS ranks by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Inner product of unit vectors (cosine): what CLIP/SigLIP retrieval papers use.
    #[default]
    InnerProduct,
    /// Squared Euclidean distance (the same ranking on unit vectors; some recipes train better).
    L2,
}

impl Metric {
    pub fn faiss(self) -> MetricType {
        match self {
            Metric::InnerProduct => MetricType::InnerProduct,
            Metric::L2 => MetricType::L2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Metric::InnerProduct => "inner_product",
            Metric::L2 => "l2",
        }
    }
    /// FAISS's distance as a similarity (higher = closer; the cosine for unit vectors).
    pub fn similarity(self, d: f32) -> f32 {
        match self {
            Metric::InnerProduct => d,
            Metric::L2 => 1.0 - d / 2.0,
        }
    }
}

/// How recall is measured when an index is built (`index.recall` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecallSpec {
    /// Database vectors drawn (seeded) as queries; each query's own row is left out of both the
    /// exact and the approximate neighbour lists. 0 = do not measure.
    pub queries: usize,
    /// The largest cut-off measured (recall@1, @10 and @k are reported).
    pub k: usize,
    pub seed: u64,
}

impl Default for RecallSpec {
    fn default() -> Self {
        RecallSpec { queries: 1000, k: 32, seed: 1 }
    }
}

/// Index settings (`index:` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSpec {
    /// FAISS factory string: `Flat`, `IVF4096,Flat`, `IVF4096,PQ64`, `OPQ64,IVF4096,PQ64`,
    /// `IVF4096,PQ64x4fs,RFlat`, `IVF4096,SQ8`, `HNSW32`, ...
    pub factory: String,
    pub metric: Metric,
    /// Inverted lists probed per query (IVF recipes; ignored otherwise).
    pub nprobe: usize,
    /// HNSW search depth (HNSW recipes; FAISS's default 16 when unset).
    pub ef_search: Option<usize>,
    /// Refine recipes (`...,RFlat`): re-rank `k * refine_k_factor` candidates exactly (FAISS's
    /// default 1 re-ranks only k, which reorders but recovers nothing).
    pub refine_k_factor: Option<usize>,
    /// Vectors sampled (seeded) to train the index. FAISS's k-means wants at least 39 per
    /// centroid; a smaller sample is used but warned about, with the numbers.
    pub train_sample: usize,
    pub seed: u64,
    /// OpenMP threads FAISS uses (default: all cores).
    pub threads: Option<usize>,
    /// Vectors added per call (default 16 384); a worker holds one such chunk of vectors, and
    /// FAISS allocates its per-add buffers (residuals, codes) for the chunk.
    pub add_batch: usize,
    /// Queries searched per call (FAISS parallelises within a call, over queries).
    pub search_batch: usize,
    pub recall: RecallSpec,
}

impl Default for IndexSpec {
    fn default() -> Self {
        IndexSpec {
            factory: "IVF256,PQ16".into(),
            metric: Metric::InnerProduct,
            nprobe: 16,
            ef_search: None,
            refine_k_factor: None,
            train_sample: 50_000,
            seed: 0,
            threads: None,
            add_batch: 16_384,
            search_batch: 4096,
            recall: RecallSpec::default(),
        }
    }
}

impl IndexSpec {
    /// The search-time settings as `nprobe 16` / `efSearch 64` (empty for recipes without any).
    pub fn search_params(&self) -> String {
        let mut p = vec![];
        if self.factory.contains("IVF") {
            p.push(format!("nprobe {}", self.nprobe));
        }
        if self.factory.contains("HNSW") {
            p.push(format!("efSearch {}", self.ef_search.map_or("16 (FAISS default)".to_string(), |e| e.to_string())));
        }
        if self.factory.contains("RFlat") || self.factory.contains("Refine") {
            p.push(format!("refine k_factor {}", self.refine_k_factor.unwrap_or(1)));
        }
        p.join(", ")
    }
}

/// Error of the index stage.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("FAISS {op} (index `{factory}`): {message}")]
    Faiss { op: &'static str, factory: String, message: String },
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
    #[error("{path}: index has {index} vectors but the row map has {rows}")]
    Mismatch { path: PathBuf, index: usize, rows: usize },
    #[error("query dimension {got} != index dimension {want}")]
    Dim { got: usize, want: usize },
    #[error("no database vector could be indexed (all {0} rows failed to decode)")]
    Empty(usize),
    #[error("exclude list {path}: {message}")]
    Exclude { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Store { path: PathBuf, message: String },
    #[error("{0}")]
    Build(String),
    #[error("neighbour file {path}: {message}")]
    Import { path: PathBuf, message: String },
}

/// One hit: index row and similarity (see the module invariants).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

/// A searchable vector index over unit vectors.
pub trait VectorIndex: Send {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn dim(&self) -> usize;
    /// The `k` best hits of each query (`queries.len() / dim()` rows), best first; fewer when
    /// the index holds fewer vectors.
    fn search(&mut self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, IndexError>;
}

/// Exact inner-product search by brute force: the reference every other [`VectorIndex`] is
/// checked against (see the conformance tests), and a dependency-free index for small sets.
pub struct BruteForce {
    dim: usize,
    data: Vec<f32>,
}

impl BruteForce {
    pub fn new(dim: usize, data: Vec<f32>) -> Self {
        assert!(dim > 0 && data.len() % dim == 0, "data must hold whole vectors");
        BruteForce { dim, data }
    }
}

impl VectorIndex for BruteForce {
    fn len(&self) -> usize {
        self.data.len() / self.dim
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn search(&mut self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, IndexError> {
        if queries.len() % self.dim != 0 {
            return Err(IndexError::Dim { got: queries.len(), want: self.dim });
        }
        Ok(queries
            .chunks(self.dim)
            .map(|q| {
                let mut hits: Vec<Hit> = self
                    .data
                    .chunks(self.dim)
                    .enumerate()
                    .map(|(row, v)| Hit { row, score: v.iter().zip(q).map(|(a, b)| a * b).sum() })
                    .collect();
                // Best first; ties by row, as FAISS's flat index orders them.
                hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
                hits.truncate(k);
                hits
            })
            .collect())
    }
}

/// Database row of each index row.
#[derive(Clone, Debug, Default)]
pub struct RowMap {
    pub ids: Vec<String>,
    pub lat: Vec<f64>,
    pub lon: Vec<f64>,
}

/// A FAISS index with its settings.
pub struct FaissIndex {
    index: faiss::index::IndexImpl,
    factory: String,
    metric: Metric,
}

pub(crate) fn faiss_err<'a>(op: &'static str, factory: &'a str) -> impl Fn(faiss::error::Error) -> IndexError + 'a {
    move |e| IndexError::Faiss { op, factory: factory.to_string(), message: e.to_string() }
}

impl FaissIndex {
    /// An index from a factory string over `data` (row-major unit vectors), trained on all of
    /// it, inner product.
    pub fn build(factory: &str, dim: usize, data: &[f32]) -> Result<Self, IndexError> {
        Self::build_with(factory, Metric::InnerProduct, dim, data)
    }

    /// [`FaissIndex::build`] with a metric.
    pub fn build_with(factory: &str, metric: Metric, dim: usize, data: &[f32]) -> Result<Self, IndexError> {
        let mut index = faiss::index_factory(dim as u32, factory, metric.faiss()).map_err(faiss_err("index_factory", factory))?;
        if !index.is_trained() {
            index.train(data).map_err(faiss_err("train", factory))?;
        }
        index.add(data).map_err(faiss_err("add", factory))?;
        Ok(FaissIndex { index, factory: factory.to_string(), metric })
    }

    /// Wrap an index read from a file.
    pub fn from_faiss(index: faiss::index::IndexImpl, factory: &str, metric: Metric) -> Self {
        FaissIndex { index, factory: factory.to_string(), metric }
    }

    /// Set nprobe on IVF indexes (also when wrapped in a pre-transform); a no-op otherwise.
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<(), IndexError> {
        if self.factory.contains("IVF") {
            self.set_param("nprobe", nprobe as f64)?;
        }
        Ok(())
    }

    /// Set efSearch on HNSW indexes; a no-op otherwise.
    pub fn set_ef_search(&mut self, ef: usize) -> Result<(), IndexError> {
        if self.factory.contains("HNSW") {
            self.set_param("efSearch", ef as f64)?;
        }
        Ok(())
    }

    /// The search-time settings of a spec (nprobe, efSearch).
    pub fn apply(&mut self, spec: &IndexSpec) -> Result<(), IndexError> {
        self.set_nprobe(spec.nprobe)?;
        if let Some(ef) = spec.ef_search {
            self.set_ef_search(ef)?;
        }
        if let Some(kf) = spec.refine_k_factor
            && (self.factory.contains("RFlat") || self.factory.contains("Refine"))
        {
            self.set_param("k_factor_rf", kf as f64)?;
        }
        Ok(())
    }

    fn set_param(&mut self, name: &'static str, v: f64) -> Result<(), IndexError> {
        let ps = faiss::index::autotune::ParameterSpace::new().map_err(faiss_err("ParameterSpace", &self.factory))?;
        ps.set_index_parameter(&self.index, name, v).map_err(faiss_err(name, &self.factory))
    }

    pub fn factory(&self) -> &str {
        &self.factory
    }

    pub fn inner(&self) -> &faiss::index::IndexImpl {
        &self.index
    }

    pub fn into_inner(self) -> faiss::index::IndexImpl {
        self.index
    }
}

/// The FAISS library version georag is linked with (part of every index fingerprint).
pub fn faiss_version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe {
        let p = faiss_sys::faiss_get_version();
        if p.is_null() { "unknown".into() } else { std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned() }
    }
}

/// The SIMD level FAISS was compiled at (`avx2` by default, `avx512` from `make build
/// FAISS_SIMD=avx512`, `generic` without flags), read at build time from the flags faiss-sys's
/// cmake build compiled FAISS with (build.rs), not from the flags asked for. The two
/// levels build different index files from the same vectors (k-means and encoding round
/// differently), so a level other than the default is part of every index fingerprint.
pub fn faiss_simd() -> &'static str {
    env!("GEORAG_FAISS_SIMD")
}

unsafe extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
}

/// OpenBLAS's thread-count functions, looked up at run time: the link goes through the generic
/// `libblas.so.3`, so they are not link-time symbols, and another BLAS may stand behind it (then
/// there is nothing to set).
fn openblas_threads() -> Option<(extern "C" fn() -> std::os::raw::c_int, extern "C" fn(std::os::raw::c_int))> {
    static F: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    let (get, set) = (*F.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT only looks names up in the loaded objects.
        let get = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"openblas_get_num_threads".as_ptr()) };
        let set = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"openblas_set_num_threads".as_ptr()) };
        (!get.is_null() && !set.is_null()).then_some((get as usize, set as usize))
    }))?;
    // SAFETY: the addresses are OpenBLAS's `int openblas_get_num_threads(void)` and
    // `void openblas_set_num_threads(int)`.
    unsafe { Some((std::mem::transmute::<usize, extern "C" fn() -> std::os::raw::c_int>(get), std::mem::transmute::<usize, extern "C" fn(std::os::raw::c_int)>(set))) }
}

/// OpenBLAS on one thread while it lives, its previous count restored after. An IVF search runs
/// the coarse quantizer's matrix product inside FAISS's OpenMP loop over query slices; a
/// pthreads OpenBLAS (Debian's default) then starts its own threads in every slice and they
/// fight the OpenMP ones. Measured on 1 M x 768 `IVF1024,PQ64x4fs`, 1000 queries, 2 cores:
/// 62 k -> 95 k queries/s at nprobe 1, 38 k -> 67 k at nprobe 4 (benches/README.md). Training
/// and exact (Flat) searches call BLAS outside such loops and keep its threads.
struct SerialBlas(Option<(std::os::raw::c_int, extern "C" fn(std::os::raw::c_int))>);

impl SerialBlas {
    fn new() -> SerialBlas {
        SerialBlas(openblas_threads().and_then(|(get, set)| {
            let n = get();
            (n != 1).then(|| {
                set(1);
                (n, set)
            })
        }))
    }
}

impl Drop for SerialBlas {
    fn drop(&mut self) {
        if let Some((n, set)) = self.0 {
            set(n);
        }
    }
}

/// Set the OpenMP thread count FAISS uses for the rest of the process (`index.threads`).
pub fn set_threads(n: usize) {
    // SAFETY: libgomp is linked (FAISS's OpenMP runtime); the call only sets a global.
    unsafe { omp_set_num_threads(n.max(1) as std::os::raw::c_int) }
}

impl VectorIndex for FaissIndex {
    fn len(&self) -> usize {
        self.index.ntotal() as usize
    }
    fn dim(&self) -> usize {
        self.index.d() as usize
    }
    fn search(&mut self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>, IndexError> {
        let d = self.dim();
        if queries.len() % d != 0 {
            return Err(IndexError::Dim { got: queries.len(), want: d });
        }
        let n = queries.len() / d;
        if n == 0 || k == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let serial = self.factory.contains("IVF").then(SerialBlas::new);
        let res = self.index.search(queries, k).map_err(faiss_err("search", &self.factory))?;
        drop(serial);
        Ok((0..n)
            .map(|q| {
                (0..k)
                    .filter_map(|j| {
                        let i = q * k + j;
                        res.labels[i].get().map(|row| Hit { row: row as usize, score: self.metric.similarity(res.distances[i]) })
                    })
                    .collect()
            })
            .collect())
    }
}

/// A built or loaded index and where it lives.
pub struct BuiltIndex {
    pub index: FaissIndex,
    pub rows: RowMap,
    pub dir: PathBuf,
    pub fingerprint: String,
    pub reused: bool,
    /// What the build measured (recall, speed, size), at the spec's search settings.
    pub meta: build::IndexMeta,
}

/// Fingerprint of an index over an embedding store: recipe, FAISS version, data.
pub fn fingerprint(spec: &IndexSpec, store: &std::path::Path) -> String {
    let store = store.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut f = Fingerprint::new("index/faiss/2");
    f.field(&spec.factory)
        .field(spec.metric.name())
        .field(spec.train_sample.to_le_bytes())
        .field(spec.seed.to_le_bytes())
        .json(&spec.recall)
        .field(faiss_version())
        .field(store);
    // Only a level other than the default enters, so that indexes built before it was recorded
    // keep their fingerprints.
    if faiss_simd() != "avx2" {
        f.field(faiss_simd());
    }
    f.finish()
}

/// Build the index over the `ok` rows of `emb` (in memory), or load it when its fingerprint
/// matches. The same files as `georag index` over the embedding store.
pub fn build_or_load(spec: &IndexSpec, emb: &Embeddings, cache_dir: &std::path::Path) -> Result<BuiltIndex, IndexError> {
    build::build_or_load(spec, &source::MemoryShards::new(emb), cache_dir)
}

#[cfg(test)]
mod conformance_unit {
    //! One suite run against every `VectorIndex` implementation (exact ones must agree with the
    //! brute-force reference; approximate ones must keep the contract).
    use super::*;
    use crate::util::rng::Rng;

    fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        let mut v: Vec<f32> = (0..n * d).map(|_| r.normal() as f32).collect();
        for row in v.chunks_mut(d) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    fn contract(index: &mut dyn VectorIndex, db: &[f32], exact: bool) {
        let d = index.dim();
        let q = data(20, d, 9);
        let hits = index.search(&q, 5).unwrap();
        assert_eq!(hits.len(), 20);
        let mut reference = BruteForce::new(d, db.to_vec());
        let want = reference.search(&q, 5).unwrap();
        for (h, w) in hits.iter().zip(&want) {
            assert_eq!(h.len(), 5);
            assert!(h.windows(2).all(|p| p[0].score >= p[1].score - 1e-6), "best first");
            assert!(h.iter().all(|x| x.row < index.len()));
            if exact {
                assert_eq!(h.iter().map(|x| x.row).collect::<Vec<_>>(), w.iter().map(|x| x.row).collect::<Vec<_>>());
                for (a, b) in h.iter().zip(w) {
                    assert!((a.score - b.score).abs() < 1e-4);
                }
            }
        }
        // A vector from the index finds itself first with score ~1 (exact indexes).
        let self_hit = index.search(&db[3 * d..4 * d], 1).unwrap();
        if exact {
            assert_eq!(self_hit[0][0].row, 3);
            assert!((self_hit[0][0].score - 1.0).abs() < 1e-4);
        }
        // Asking for more than the index holds returns what there is.
        assert!(index.search(&q[..d], index.len() + 10).unwrap()[0].len() <= index.len());
        // A wrong query length is an error, not a panic.
        assert!(index.search(&q[..d - 1], 1).is_err());
        assert!(index.search(&[], 3).unwrap().is_empty());
    }

    #[test]
    fn brute_force() {
        let db = data(300, 16, 1);
        contract(&mut BruteForce::new(16, db.clone()), &db, true);
    }

    #[test]
    fn faiss_flat_is_exact() {
        let db = data(300, 16, 1);
        contract(&mut FaissIndex::build("Flat", 16, &db).unwrap(), &db, true);
    }

    #[test]
    fn faiss_ivf_pq_keeps_the_contract() {
        let db = data(2000, 16, 1);
        let mut ix = FaissIndex::build("IVF8,PQ4np", 16, &db).unwrap();
        ix.set_nprobe(8).unwrap();
        contract(&mut ix, &db, false);
    }
}
