//! Vector index: the [`VectorIndex`] trait and its FAISS implementation.
//!
//! Invariants:
//! - vectors are L2-normalised and the metric is inner product, so scores are cosines;
//! - index row `i` is row `i` of the row map stored beside it (`rowmap.parquet`: id, lat, lon of
//!   the database photo), and only photos with status `ok` are indexed;
//! - an index directory `index/<fingerprint>/` (fingerprint of the factory string, training
//!   sample size and seed, and the embedding store) is complete when `index.faiss` exists: it is
//!   written to a temporary name and renamed; nprobe is a search-time setting, not part of it.

use crate::embed::Embeddings;
use crate::record::Status;
use crate::util::fingerprint::Fingerprint;
use crate::util::pq::{self, ParquetError};
use crate::util::progress::Progress;
use crate::util::rng::Rng;
use crate::util::atomic;
use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use faiss::{Index, MetricType};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index settings (`index:` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSpec {
    /// FAISS factory string: `Flat`, `IVF256,PQ16`, `HNSW32`, ...
    pub factory: String,
    /// Inverted lists probed per query (IVF indexes only).
    pub nprobe: usize,
    /// Vectors sampled (seeded) to train the index.
    pub train_sample: usize,
    pub seed: u64,
    /// Vectors added per call.
    pub add_batch: usize,
    /// Queries searched per call.
    pub search_batch: usize,
}

impl Default for IndexSpec {
    fn default() -> Self {
        IndexSpec { factory: "IVF256,PQ16".into(), nprobe: 16, train_sample: 50_000, seed: 0, add_batch: 65_536, search_batch: 4096 }
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
}

/// One hit: index row and inner-product score.
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
}

fn faiss_err<'a>(op: &'static str, factory: &'a str) -> impl Fn(faiss::error::Error) -> IndexError + 'a {
    move |e| IndexError::Faiss { op, factory: factory.to_string(), message: e.to_string() }
}

impl FaissIndex {
    /// An index from a factory string over `data` (row-major unit vectors), trained on all of it.
    pub fn build(factory: &str, dim: usize, data: &[f32]) -> Result<Self, IndexError> {
        let mut index = faiss::index_factory(dim as u32, factory, MetricType::InnerProduct).map_err(faiss_err("index_factory", factory))?;
        if !index.is_trained() {
            index.train(data).map_err(faiss_err("train", factory))?;
        }
        index.add(data).map_err(faiss_err("add", factory))?;
        Ok(FaissIndex { index, factory: factory.to_string() })
    }

    /// Set nprobe on IVF indexes (also when wrapped in a pre-transform); a no-op otherwise.
    pub fn set_nprobe(&mut self, nprobe: usize) -> Result<(), IndexError> {
        if self.factory.contains("IVF") {
            let ps = faiss::index::autotune::ParameterSpace::new().map_err(faiss_err("ParameterSpace", &self.factory))?;
            ps.set_index_parameter(&self.index, "nprobe", nprobe as f64).map_err(faiss_err("set nprobe", &self.factory))?;
        }
        Ok(())
    }
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
        let res = self.index.search(queries, k).map_err(faiss_err("search", &self.factory))?;
        Ok((0..n)
            .map(|q| {
                (0..k)
                    .filter_map(|j| {
                        let i = q * k + j;
                        res.labels[i].get().map(|row| Hit { row: row as usize, score: res.distances[i] })
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
}

/// Fingerprint of an index over an embedding store.
pub fn fingerprint(spec: &IndexSpec, emb: &Embeddings) -> String {
    let store = emb.dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Fingerprint::new("index/faiss/1")
        .field(&spec.factory)
        .field("inner_product")
        .field(spec.train_sample.to_le_bytes())
        .field(spec.seed.to_le_bytes())
        .field(store)
        .finish()
}

fn rowmap_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
    ]))
}

/// Build the index over the `ok` rows of `emb`, or load it when its fingerprint matches.
pub fn build_or_load(spec: &IndexSpec, emb: &Embeddings, cache_dir: &Path) -> Result<BuiltIndex, IndexError> {
    let fp = fingerprint(spec, emb);
    let dir = cache_dir.join("index").join(&fp);
    let index_path = dir.join("index.faiss");
    let rowmap_path = dir.join("rowmap.parquet");
    let f = spec.factory.as_str();
    if index_path.exists() && rowmap_path.exists() {
        let index = faiss::read_index(index_path.to_string_lossy()).map_err(faiss_err("read", f))?;
        let rows = read_rowmap(&rowmap_path)?;
        if index.ntotal() as usize != rows.ids.len() {
            return Err(IndexError::Mismatch { path: index_path, index: index.ntotal() as usize, rows: rows.ids.len() });
        }
        let mut index = FaissIndex { index, factory: spec.factory.clone() };
        index.set_nprobe(spec.nprobe)?;
        return Ok(BuiltIndex { index, rows, dir, fingerprint: fp, reused: true });
    }
    let ok: Vec<usize> = (0..emb.len()).filter(|&i| emb.status[i] == Status::Ok).collect();
    if ok.is_empty() {
        return Err(IndexError::Empty(emb.len()));
    }
    let d = emb.dim;
    let mut index = faiss::index_factory(d as u32, f, MetricType::InnerProduct).map_err(faiss_err("index_factory", f))?;
    if !index.is_trained() {
        let mut sample = ok.clone();
        let mut rng = Rng::new(spec.seed);
        // Seeded partial Fisher-Yates: the first `m` entries are a uniform sample.
        let m = spec.train_sample.min(sample.len());
        for i in 0..m {
            let j = i + rng.below(sample.len() - i);
            sample.swap(i, j);
        }
        sample.truncate(m);
        sample.sort_unstable();
        let mut x = Vec::with_capacity(m * d);
        for &i in &sample {
            x.extend_from_slice(emb.row(i));
        }
        let p = Progress::new("train index", 1);
        index.train(&x).map_err(faiss_err("train", f))?;
        p.inc(1);
        p.finish();
    }
    let p = Progress::new("index add", ok.len() as u64);
    for chunk in ok.chunks(spec.add_batch.max(1)) {
        let mut x = Vec::with_capacity(chunk.len() * d);
        for &i in chunk {
            x.extend_from_slice(emb.row(i));
        }
        index.add(&x).map_err(faiss_err("add", f))?;
        p.inc(chunk.len() as u64);
    }
    p.finish();
    let rows = RowMap {
        ids: ok.iter().map(|&i| emb.ids[i].clone()).collect(),
        lat: ok.iter().map(|&i| emb.lat[i]).collect(),
        lon: ok.iter().map(|&i| emb.lon[i]).collect(),
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.ids.iter())),
        Arc::new(Float64Array::from(rows.lat.clone())),
        Arc::new(Float64Array::from(rows.lon.clone())),
    ];
    let batch = RecordBatch::try_new(rowmap_schema(), cols).expect("row map columns");
    pq::write(&rowmap_path, rowmap_schema(), &[batch], &[])?;
    let tmp = atomic::temp_for(&index_path)?;
    faiss::write_index(&index, tmp.to_string_lossy()).map_err(faiss_err("write", f))?;
    atomic::commit(&tmp, &index_path)?;
    let mut index = FaissIndex { index, factory: spec.factory.clone() };
    index.set_nprobe(spec.nprobe)?;
    Ok(BuiltIndex { index, rows, dir, fingerprint: fp, reused: false })
}

fn read_rowmap(path: &Path) -> Result<RowMap, IndexError> {
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

#[cfg(test)]
mod conformance {
    //! One suite run against every `VectorIndex` implementation (exact ones must agree with the
    //! brute-force reference; approximate ones must keep the contract).
    use super::*;

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
