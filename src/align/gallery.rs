//! The GeoCLIP-style `gallery` method, for any trained alignment model and for GeoCLIP itself:
//! each query's image->GPS embedding against the GPS embeddings of a coordinate gallery (e.g.
//! GeoCLIP's 100 K coordinates), the most similar coordinate is the prediction. The gallery's
//! embeddings are cached as Parquet under `<cache>/gallery/<fingerprint>.parquet` (the tower's
//! fingerprint + the gallery file's sha256).

use super::train::{self, AlignedGps};
use super::AlignError;
use crate::embed::Embeddings;
use crate::record::{LatLon, PredictionRecord, Status};
use crate::util::fingerprint::{Fingerprint, sha256_hex};
use crate::util::pq;
use candle_core::Device;
use std::path::Path;

/// What embeds the queries and the gallery.
pub enum GalleryTower {
    /// A trained alignment model: queries through its image->GPS head, the gallery through its
    /// location tower.
    Aligned(AlignedGps),
    /// GeoCLIP itself: the queries' embeddings are already GeoCLIP image features (the
    /// experiment's encoder is `kind: geoclip`), the gallery goes through GeoCLIP's location
    /// encoder; the prediction is GeoCLIP's `predict` top-1 (argmax of the cosine, which the
    /// softmax over the logit-scaled similarities does not reorder).
    Geoclip(crate::embed::geoclip::LocationEncoder),
}

pub struct GalleryPredictor {
    pub tower: GalleryTower,
    pub coords: Vec<LatLon>,
    /// `coords.len() * dim`, unit rows.
    pub vectors: Vec<f32>,
    pub dim: usize,
    /// Digest of the tower and the gallery: what the predictions depend on.
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

/// The gallery file: `gallery` itself, or GeoCLIP's `coordinates_100K.csv` when it is the
/// geoclip package's folder.
pub fn gallery_file(gallery: &Path) -> Result<std::path::PathBuf, AlignError> {
    if gallery.is_dir() {
        crate::embed::geoclip::find_file(gallery, "gps_gallery", crate::embed::geoclip::GALLERY).map_err(|e| AlignError::Checkpoint { path: gallery.to_path_buf(), message: e.to_string() })
    } else {
        Ok(gallery.to_path_buf())
    }
}

impl GalleryPredictor {
    /// `model`: a `georag align train` directory; `location`: GeoCLIP's weights (the geoclip
    /// package's folder). Exactly one of them.
    pub fn load(cache_dir: &Path, model: Option<&Path>, location: Option<&Path>, gallery: &Path) -> Result<GalleryPredictor, AlignError> {
        let tower = match (model, location) {
            (Some(dir), None) => GalleryTower::Aligned(AlignedGps::load(dir, &Device::Cpu)?),
            (None, Some(dir)) => GalleryTower::Geoclip(
                crate::embed::geoclip::LocationEncoder::load(dir, &Device::Cpu).map_err(|e| AlignError::Checkpoint { path: dir.to_path_buf(), message: e.to_string() })?,
            ),
            _ => return Err(AlignError::Config { message: "method gallery: give either `model` (a `georag align train` output) or `location` (GeoCLIP's weights), not both and not neither".into() }),
        };
        let file = gallery_file(gallery)?;
        let bad = |message: String| AlignError::Checkpoint { path: file.clone(), message };
        let bytes = std::fs::read(&file).map_err(|e| bad(e.to_string()))?;
        let coords: Vec<LatLon> = crate::embed::geoclip::read_coords(&file).map_err(|e| bad(e.to_string()))?.into_iter().map(|(lat, lon)| LatLon { lat, lon }).collect();
        if coords.is_empty() {
            return Err(bad("the gallery has no coordinates".into()));
        }
        // (The trained form keeps its original recipe, so existing caches stay valid.)
        let (fingerprint, dim) = match &tower {
            GalleryTower::Aligned(t) => (Fingerprint::new("align-gallery/1").field(&t.card.model_fingerprint).field(sha256_hex(&bytes)).finish(), t.model.spec.heads().shared_dim),
            GalleryTower::Geoclip(l) => (Fingerprint::new("geoclip-gallery/1").field(l.fingerprint()).field(sha256_hex(&bytes)).finish(), 512),
        };
        let path = cache_dir.join("gallery").join(format!("{fingerprint}.parquet"));
        let vectors = match read_cached(&path, coords.len(), dim) {
            Some(v) => v,
            None => {
                let candle = |source| AlignError::Candle { context: "gallery embeddings".into(), source: Box::new(source) };
                let v = match &tower {
                    GalleryTower::Aligned(t) => train::gps_vectors(&t.model, &coords, t.model.spec.train().batch_size).map_err(candle)?,
                    GalleryTower::Geoclip(l) => l.encode(&coords.iter().map(|c| (c.lat, c.lon)).collect::<Vec<_>>()).map_err(candle)?,
                };
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
        let img: std::borrow::Cow<[f32]> = match &self.tower {
            GalleryTower::Aligned(t) => {
                let m = &t.model;
                if q.dim != m.image_dim {
                    return Err(AlignError::Config { message: format!("gallery: the model was trained on {}-d image embeddings, the queries are {}-d", m.image_dim, q.dim) });
                }
                train::image_vectors(m, &q.vectors, 1024).map_err(|source| AlignError::Candle { context: "query image->GPS embeddings".into(), source: Box::new(source) })?.into()
            }
            GalleryTower::Geoclip(_) => {
                if q.dim != self.dim {
                    return Err(AlignError::Config {
                        message: format!("gallery with GeoCLIP's location tower: the queries must be GeoCLIP image features (encoder kind `geoclip`, 512-d); they are {}-d", q.dim),
                    });
                }
                q.vectors.as_slice().into()
            }
        };
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
