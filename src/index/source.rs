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
    /// Move the first `n` rows of `from` (vectors of `dim`) to the end of these.
    pub fn take_front(&mut self, from: &mut ShardRows, n: usize, dim: usize) {
        self.ids.extend(from.ids.drain(..n));
        self.lat.extend(from.lat.drain(..n));
        self.lon.extend(from.lon.drain(..n));
        self.vectors.extend(from.vectors.drain(..n * dim));
    }
    /// No rows; the buffers keep their capacity for the next chunk.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.lat.clear();
        self.lon.clear();
        self.vectors.clear();
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
        let mut r = ShardRows::default();
        self.stream(s, READ_BLOCK, &mut |mut c| {
            let n = c.len();
            r.take_front(&mut c, n, self.dim);
            Ok(())
        })?;
        Ok(r)
    }
    /// Streamed from the file in blocks of at most [`READ_BLOCK`] rows, gathered into chunks of
    /// `chunk` `ok` rows: besides the index, a build holds one chunk of vectors and one block
    /// being decoded, never a decoded copy of the whole shard.
    fn visit(&self, s: usize, chunk: usize, f: &mut dyn FnMut(&ShardRows) -> Result<(), IndexError>) -> Result<(), IndexError> {
        let chunk = chunk.max(1);
        let mut acc = ShardRows::default();
        self.stream(s, chunk.min(READ_BLOCK), &mut |mut b| {
            while !b.is_empty() {
                let take = (chunk - acc.len()).min(b.len());
                acc.take_front(&mut b, take, self.dim);
                if acc.len() == chunk {
                    f(&acc)?;
                    acc.clear();
                }
            }
            Ok(())
        })?;
        if !acc.is_empty() {
            f(&acc)?;
        }
        Ok(())
    }
}

/// Rows decoded from a store shard per Parquet read (3 MB of vectors at 768-d).
pub const READ_BLOCK: usize = 1024;

impl StoreShards {
    /// The `ok` rows of shard `s`, one record batch of at most `batch` rows at a time (the
    /// `error` column is not read).
    fn stream(&self, s: usize, batch: usize, f: &mut dyn FnMut(ShardRows) -> Result<(), IndexError>) -> Result<(), IndexError> {
        let path = Self::shard_path(&self.dir, s);
        let file = std::fs::File::open(&path).map_err(|e| self.bad(s, e.to_string()))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| self.bad(s, e.to_string()))?;
        let roots: Vec<usize> = ["id", "lat", "lon", "status", "vector"].iter().filter_map(|n| b.schema().index_of(n).ok()).collect();
        let mask = ProjectionMask::roots(b.parquet_schema(), roots);
        let reader = b.with_projection(mask).with_batch_size(batch.max(1)).build().map_err(|e| self.bad(s, e.to_string()))?;
        let mut row0 = 0;
        for b in reader {
            let b = b.map_err(|e| self.bad(s, e.to_string()))?;
            let id = pq::column::<StringArray>(&path, &b, "id")?;
            let lat = pq::column::<Float64Array>(&path, &b, "lat")?;
            let lon = pq::column::<Float64Array>(&path, &b, "lon")?;
            let status = pq::column::<StringArray>(&path, &b, "status")?;
            let vec = pq::column::<FixedSizeListArray>(&path, &b, "vector")?;
            if vec.value_length() as usize != self.dim {
                return Err(self.bad(s, format!("dimension {} != the encoder's {}", vec.value_length(), self.dim)));
            }
            let values = vec.values().as_any().downcast_ref::<Float32Array>().ok_or_else(|| self.bad(s, "vector values are not f32".into()))?;
            let mut r = ShardRows { vectors: Vec::with_capacity(b.num_rows() * self.dim), ..Default::default() };
            for i in 0..b.num_rows() {
                if status.value(i) != Status::Ok.as_str() {
                    continue;
                }
                if vec.is_null(i) {
                    return Err(self.bad(s, format!("row {}: status ok but no vector", row0 + i)));
                }
                r.ids.push(id.value(i).to_string());
                r.lat.push(lat.value(i));
                r.lon.push(lon.value(i));
                let off = vec.value_offset_at(i);
                r.vectors.extend_from_slice(&values.values()[off..off + self.dim]);
            }
            row0 += b.num_rows();
            f(r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! `StoreShards` over a real Parquet store written in `georag embed`'s layout.
    use super::*;
    use arrow::array::ArrayRef;
    use crate::embed::store_schema as schema;
    use arrow::datatypes::{DataType, Field};
    use std::sync::Arc;

    /// A one-shard store of `n` rows; row `i` is failed (null vector) when `failed(i)`;
    /// `null_ok_row` is an `ok` row whose vector is null (a corrupt store).
    fn store(name: &str, n: usize, d: usize, failed: impl Fn(usize) -> bool, null_ok_row: Option<usize>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("georag-storeshards-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = (0..n * d).map(|v| v as f32).collect();
        let valid: Vec<bool> = (0..n).map(|i| !failed(i) && Some(i) != null_ok_row).collect();
        let field = Arc::new(Field::new("item", DataType::Float32, false));
        let list = FixedSizeListArray::try_new(field, d as i32, Arc::new(Float32Array::from(values)), Some(valid.into())).unwrap();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("r{i}")))),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64 / 10.0))),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| -(i as f64)))),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| if failed(i) { "decode_failed" } else { "ok" }))),
            Arc::new(StringArray::from_iter((0..n).map(|i| failed(i).then_some("bad")))),
            Arc::new(list),
        ];
        let b = arrow::record_batch::RecordBatch::try_new(schema(d), cols).unwrap();
        pq::write(&dir.join("emb-00000.parquet"), schema(d), &[b], &[]).unwrap();
        std::fs::write(dir.join("done.json"), "{}").unwrap();
        dir
    }

    #[test]
    fn visit_streams_the_ok_rows_in_chunks_equal_to_read() {
        let (n, d) = (2 * READ_BLOCK + 37, 3);
        let dir = store("chunks", n, d, |i| i % 10 == 3, None);
        let s = StoreShards::open(&dir, d, 1).unwrap();
        let all = s.read(0).unwrap();
        assert_eq!(all.len(), n - (0..n).filter(|i| i % 10 == 3).count(), "failed rows are left out");
        assert_eq!(s.counts(0).unwrap(), (n, all.len()));
        assert_eq!(&all.vectors[..d], &[0.0, 1.0, 2.0]);
        for chunk in [1, 7, READ_BLOCK, READ_BLOCK + 3, 10 * n] {
            let mut ids = vec![];
            let mut vectors = vec![];
            let mut sizes = vec![];
            s.visit(0, chunk, &mut |c| {
                assert_eq!(c.vectors.len(), c.len() * d);
                assert_eq!(c.lat.len(), c.len());
                sizes.push(c.len());
                ids.extend(c.ids.iter().cloned());
                vectors.extend_from_slice(&c.vectors);
                Ok(())
            })
            .unwrap();
            assert_eq!(ids, all.ids, "chunk {chunk}");
            assert_eq!(vectors, all.vectors, "chunk {chunk}");
            let (last, full) = sizes.split_last().unwrap();
            assert!(full.iter().all(|&x| x == chunk) && *last <= chunk && *last > 0, "chunk {chunk}: sizes {sizes:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_ok_row_without_vector_is_named_by_its_row_in_the_shard() {
        let (n, d) = (READ_BLOCK + 50, 2);
        let row = READ_BLOCK + 9; // in the second read block
        let dir = store("null", n, d, |_| false, Some(row));
        let s = StoreShards::open(&dir, d, 1).unwrap();
        let e = s.visit(0, 100, &mut |_| Ok(())).unwrap_err().to_string();
        assert!(e.contains(&format!("row {row}: status ok but no vector")) && e.contains("emb-00000.parquet"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
