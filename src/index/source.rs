//! Where the vectors of an index come from: embeddings already in memory (inside `georag run`)
//! or an embedding store on disk read one shard at a time (`georag index`), so that a build
//! holds at most one shard of vectors besides the index.
//!
//! Both present the same rows in the same order (the store's shards in order, `ok` rows only),
//! so an index built either way has the same fingerprint and the same contents.

use super::IndexError;
use crate::embed::Embeddings;
use crate::record::Status;
use crate::util::pq;
use arrow::array::{Array, FixedSizeListArray, Float32Array, Float64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::path::{Path, PathBuf};

/// The `ok` rows of one shard.
#[derive(Clone, Debug, Default)]
pub struct ShardRows {
    pub ids: Vec<String>,
    pub lat: Vec<f64>,
    pub lon: Vec<f64>,
    /// `len * dim` values.
    pub vectors: Vec<f32>,
}

impl ShardRows {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Vectors to index, shard by shard.
pub trait Shards: Sync {
    fn dim(&self) -> usize;
    fn n_shards(&self) -> usize;
    /// The store directory (its name is the data fingerprint of the index).
    fn store(&self) -> &Path;
    /// Rows of shard `s`, and how many of them are `ok` (cheap: no vectors are read).
    fn counts(&self, s: usize) -> Result<(usize, usize), IndexError>;
    /// The `ok` rows of shard `s`.
    fn read(&self, s: usize) -> Result<ShardRows, IndexError>;
    /// The `ok` rows of shard `s` in consecutive chunks of at most `chunk` rows.
    fn visit(&self, s: usize, chunk: usize, f: &mut dyn FnMut(&ShardRows) -> Result<(), IndexError>) -> Result<(), IndexError> {
        let all = self.read(s)?;
        let (chunk, d) = (chunk.max(1), self.dim());
        for lo in (0..all.len()).step_by(chunk) {
            let hi = (lo + chunk).min(all.len());
            let part = ShardRows {
                ids: all.ids[lo..hi].to_vec(),
                lat: all.lat[lo..hi].to_vec(),
                lon: all.lon[lo..hi].to_vec(),
                vectors: all.vectors[lo * d..hi * d].to_vec(),
            };
            f(&part)?;
        }
        Ok(())
    }
}

/// Embeddings in memory, as one shard.
pub struct MemoryShards<'a> {
    emb: &'a Embeddings,
}

impl<'a> MemoryShards<'a> {
    pub fn new(emb: &'a Embeddings) -> Self {
        MemoryShards { emb }
    }
}

impl Shards for MemoryShards<'_> {
    fn dim(&self) -> usize {
        self.emb.dim
    }
    fn n_shards(&self) -> usize {
        1
    }
    fn store(&self) -> &Path {
        &self.emb.dir
    }
    fn counts(&self, _s: usize) -> Result<(usize, usize), IndexError> {
        Ok((self.emb.len(), self.emb.len() - self.emb.n_failed()))
    }
    fn read(&self, _s: usize) -> Result<ShardRows, IndexError> {
        let e = self.emb;
        let ok: Vec<usize> = (0..e.len()).filter(|&i| e.status[i] == Status::Ok).collect();
        let mut r = ShardRows { vectors: Vec::with_capacity(ok.len() * e.dim), ..Default::default() };
        for &i in &ok {
            r.ids.push(e.ids[i].clone());
            r.lat.push(e.lat[i]);
            r.lon.push(e.lon[i]);
            r.vectors.extend_from_slice(e.row(i));
        }
        Ok(r)
    }
    /// Chunks copied from memory one at a time (never the whole set at once).
    fn visit(&self, _s: usize, chunk: usize, f: &mut dyn FnMut(&ShardRows) -> Result<(), IndexError>) -> Result<(), IndexError> {
        let e = self.emb;
        let ok: Vec<usize> = (0..e.len()).filter(|&i| e.status[i] == Status::Ok).collect();
        for rows in ok.chunks(chunk.max(1)) {
            let mut r = ShardRows { vectors: Vec::with_capacity(rows.len() * e.dim), ..Default::default() };
            for &i in rows {
                r.ids.push(e.ids[i].clone());
                r.lat.push(e.lat[i]);
                r.lon.push(e.lon[i]);
                r.vectors.extend_from_slice(e.row(i));
            }
            f(&r)?;
        }
        Ok(())
    }
}

/// An embedding store on disk (`emb-NNNNN.parquet` per dataset shard, as `georag embed`
/// writes it), read one shard at a time.
pub struct StoreShards {
    dir: PathBuf,
    dim: usize,
    n: usize,
}

impl StoreShards {
    /// A complete store (`done.json` present) of `n_shards` shards of `dim`-d vectors.
    pub fn open(dir: &Path, dim: usize, n_shards: usize) -> Result<Self, IndexError> {
        if !dir.join("done.json").exists() {
            let present = (0..n_shards).filter(|&s| Self::shard_path(dir, s).exists()).count();
            return Err(IndexError::Store {
                path: dir.to_path_buf(),
                message: format!(
                    "embedding store is incomplete ({present} of {n_shards} shards, no done.json): run `georag embed CONFIG` (every worker) first"
                ),
            });
        }
        Ok(StoreShards { dir: dir.to_path_buf(), dim, n: n_shards })
    }

    fn shard_path(dir: &Path, s: usize) -> PathBuf {
        dir.join(format!("emb-{s:05}.parquet"))
    }

    fn bad(&self, s: usize, message: String) -> IndexError {
        IndexError::Store { path: Self::shard_path(&self.dir, s), message }
    }
}

impl Shards for StoreShards {
    fn dim(&self) -> usize {
        self.dim
    }
    fn n_shards(&self) -> usize {
        self.n
    }
    fn store(&self) -> &Path {
        &self.dir
    }
    fn counts(&self, s: usize) -> Result<(usize, usize), IndexError> {
        let path = Self::shard_path(&self.dir, s);
        let file = std::fs::File::open(&path).map_err(|e| self.bad(s, e.to_string()))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| self.bad(s, e.to_string()))?;
        let mask = ProjectionMask::columns(b.parquet_schema(), ["status"]);
        let (mut rows, mut ok) = (0, 0);
        for batch in b.with_projection(mask).build().map_err(|e| self.bad(s, e.to_string()))? {
            let batch = batch.map_err(|e| self.bad(s, e.to_string()))?;
            let st = pq::column::<StringArray>(&path, &batch, "status")?;
            rows += batch.num_rows();
            ok += st.iter().filter(|v| *v == Some(Status::Ok.as_str())).count();
        }
        Ok((rows, ok))
    }
    fn read(&self, s: usize) -> Result<ShardRows, IndexError> {
        let path = Self::shard_path(&self.dir, s);
        let mut r = ShardRows::default();
        for b in pq::read(&path)? {
            let id = pq::column::<StringArray>(&path, &b, "id")?;
            let lat = pq::column::<Float64Array>(&path, &b, "lat")?;
            let lon = pq::column::<Float64Array>(&path, &b, "lon")?;
            let status = pq::column::<StringArray>(&path, &b, "status")?;
            let vec = pq::column::<FixedSizeListArray>(&path, &b, "vector")?;
            if vec.value_length() as usize != self.dim {
                return Err(self.bad(s, format!("dimension {} != the encoder's {}", vec.value_length(), self.dim)));
            }
            let values = vec.values().as_any().downcast_ref::<Float32Array>().ok_or_else(|| self.bad(s, "vector values are not f32".into()))?;
            for i in 0..b.num_rows() {
                if status.value(i) != Status::Ok.as_str() {
                    continue;
                }
                if vec.is_null(i) {
                    return Err(self.bad(s, format!("row {i}: status ok but no vector")));
                }
                r.ids.push(id.value(i).to_string());
                r.lat.push(lat.value(i));
                r.lon.push(lon.value(i));
                let off = vec.value_offset_at(i);
                r.vectors.extend_from_slice(&values.values()[off..off + self.dim]);
            }
        }
        Ok(r)
    }
}
