//! The GeoCLIP-style `gallery` method for any trained alignment model: each query's image->GPS
//! embedding against the GPS embeddings of a coordinate gallery (e.g. GeoCLIP's 100 K
//! coordinates), the most similar coordinate is the prediction. The gallery's embeddings are
//! cached as Parquet under `<cache>/gallery/<fingerprint>.parquet` (model fingerprint + the
//! gallery file's sha256).

use super::train::{self, AlignedGps};
use super::AlignError;
use crate::embed::Embeddings;
use crate::record::{LatLon, PredictionRecord, Status};
use crate::util::fingerprint::{Fingerprint, sha256_hex};
use crate::util::pq;
use candle_core::Device;
use std::path::Path;

pub struct GalleryPredictor {
    pub tower: AlignedGps,
    pub coords: Vec<LatLon>,
    /// `coords.len() * dim`, unit rows.
    pub vectors: Vec<f32>,
    pub dim: usize,
    /// Digest of the model and the gallery: what the predictions depend on.
    pub fingerprint: String,
}

fn read_cached(path: &Path, n: usize, dim: usize) -> Option<Vec<f32>> {
    use arrow::array::{Array, FixedSizeListArray, Float32Array};
    let batches = pq::read(path).ok()?;
    let mut out = Vec::with_capacity(n * dim);
    for b in &batches {
        let v = pq::column::<FixedSizeListArray>(path, b, "vector").ok()?;
        let values = v.values().as_any().downcast_ref::<Float32Array>()?;
        out.extend_from_slice(&values.values()[v.value_offset_at(0)..v.value_offset_at(0) + v.len() * dim]);
    }
    (out.len() == n * dim).then_some(out)
}

impl GalleryPredictor {
    pub fn load(cache_dir: &Path, model_dir: &Path, gallery: &Path) -> Result<GalleryPredictor, AlignError> {
        let tower = AlignedGps::load(model_dir, &Device::Cpu)?;
        let bad = |message: String| AlignError::Checkpoint { path: gallery.to_path_buf(), message };
        let bytes = std::fs::read(gallery).map_err(|e| bad(e.to_string()))?;
        let coords: Vec<LatLon> = crate::embed::geoclip::read_coords(gallery).map_err(|e| bad(e.to_string()))?.into_iter().map(|(lat, lon)| LatLon { lat, lon }).collect();
        if coords.is_empty() {
            return Err(bad("the gallery has no coordinates".into()));
        }
        let fingerprint = Fingerprint::new("align-gallery/1").field(&tower.card.model_fingerprint).field(sha256_hex(&bytes)).finish();
        let dim = tower.model.spec.heads().shared_dim;
        let path = cache_dir.join("gallery").join(format!("{fingerprint}.parquet"));
        let vectors = match read_cached(&path, coords.len(), dim) {
            Some(v) => v,
            None => {
                let v = train::gps_vectors(&tower.model, &coords, tower.model.spec.train().batch_size).map_err(|source| AlignError::Candle { context: "gallery embeddings".into(), source: Box::new(source) })?;
                let pairs: Vec<(f64, f64)> = coords.iter().map(|c| (c.lat, c.lon)).collect();
                crate::embed::geoclip::write_gps_embeddings(&path, &pairs, &v).map_err(|e| AlignError::Checkpoint { path: path.clone(), message: e.to_string() })?;
                v
            }
        };
        Ok(GalleryPredictor { tower, coords, vectors, dim, fingerprint })
    }

    /// One prediction per query row (query order); rows without an embedding keep their status.
    pub fn predict(&self, q: &Embeddings) -> Result<Vec<PredictionRecord>, AlignError> {
        use rayon::prelude::*;
        let m = &self.tower.model;
        if q.dim != m.image_dim {
            return Err(AlignError::Config { message: format!("gallery: the model was trained on {}-d image embeddings, the queries are {}-d", m.image_dim, q.dim) });
        }
        let img = train::image_vectors(m, &q.vectors, 1024).map_err(|source| AlignError::Candle { context: "query image->GPS embeddings".into(), source: Box::new(source) })?;
        Ok((0..q.len())
            .into_par_iter()
            .map(|i| {
                let truth = LatLon { lat: q.lat[i], lon: q.lon[i] };
                if q.status[i] != Status::Ok {
                    return PredictionRecord::failed(q.ids[i].clone(), truth, q.status[i]);
                }
                let j = train::argmax_dot(&img[i * self.dim..(i + 1) * self.dim], &self.vectors, self.dim);
                PredictionRecord::ok(q.ids[i].clone(), truth, self.coords[j])
            })
            .collect())
    }
}
