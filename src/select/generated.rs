//! Selectors over a query's pooled candidates (generated answers, plus the retrieval top-1 when
//! the method pools it), for MLLM methods: `selector: {kind: ...}` in a method.
//!
//! Invariants: a selector only ever returns one of the pooled candidates (or, for
//! `geometric_median`, a point computed from them), never a coordinate from nowhere; with no
//! candidates it returns `None`, and the method's `fallback` list decides what happens next.

use super::{Candidates, Selector, pool};
use crate::embed::EncoderSpec;
use crate::embed::geoclip::LocationEncoder;
use crate::record::LatLon;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How an MLLM method picks one coordinate from its pooled candidates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PoolSelectorSpec {
    /// The first pooled candidate (variant order, then sample order).
    First,
    /// The candidate with the least summed great-circle distance to the others.
    Medoid,
    /// The point minimising summed great-circle distance (Weiszfeld on the unit sphere).
    GeometricMedian,
    /// DBSCAN with haversine `eps_km` and `min_samples` (DualGeo: 50 km, 2); the medoid of the
    /// largest cluster; when every candidate is noise, the medoid of all of them.
    Density {
        #[serde(default = "default_eps")]
        eps_km: f64,
        #[serde(default = "default_min_samples")]
        min_samples: usize,
    },
    /// The retrieval top-1 neighbour (ignores the generated answers: a control row).
    RetrievalTop1,
    /// G3's geo-verification: the candidate whose GPS embedding is most similar (cosine) to the
    /// query image's embedding. Either GeoCLIP's towers (`encoder`), or trained alignment heads
    /// (`aligned`: a `georag align train` output directory; the image side is the experiment's
    /// query embeddings through the image->GPS head, the candidates go through the GPS tower).
    GeoVerify {
        /// The image tower: `{kind: geoclip, dir: CLIP-ViT-L-14 snapshot, weights: geoclip weights dir}`.
        #[serde(default)]
        encoder: Option<EncoderSpec>,
        /// Directory with `location_encoder_weights.pth` (default: the encoder's `weights`).
        #[serde(default)]
        location_weights: Option<std::path::PathBuf>,
        /// A trained alignment model's directory (`model.json`), instead of `encoder`.
        #[serde(default)]
        aligned: Option<std::path::PathBuf>,
    },
}

fn default_eps() -> f64 {
    50.0
}
fn default_min_samples() -> usize {
    2
}

impl PoolSelectorSpec {
    pub fn describe(&self) -> String {
        match self {
            PoolSelectorSpec::First => "first".into(),
            PoolSelectorSpec::Medoid => "medoid".into(),
            PoolSelectorSpec::GeometricMedian => "geometric_median".into(),
            PoolSelectorSpec::Density { eps_km, min_samples } => format!("density (DBSCAN eps {eps_km} km, min_samples {min_samples}, medoid of the largest cluster)"),
            PoolSelectorSpec::RetrievalTop1 => "retrieval_top1".into(),
            PoolSelectorSpec::GeoVerify { aligned: Some(d), .. } => format!("geo_verify (aligned image->GPS heads of {}: cosine)", d.display()),
            PoolSelectorSpec::GeoVerify { .. } => "geo_verify (GeoCLIP image-GPS cosine)".into(),
        }
    }
}

/// First candidate.
pub struct First;
impl Selector for First {
    fn neighbours_needed(&self) -> usize {
        0
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        pool::first(c.generated).map(|i| c.generated[i])
    }
}

/// Medoid.
pub struct Medoid;
impl Selector for Medoid {
    fn neighbours_needed(&self) -> usize {
        0
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        pool::medoid(c.generated).map(|i| c.generated[i])
    }
}

/// Geometric median.
pub struct GeometricMedian;
impl Selector for GeometricMedian {
    fn neighbours_needed(&self) -> usize {
        0
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        pool::geometric_median(c.generated)
    }
}

/// DBSCAN density.
pub struct Density {
    pub eps_km: f64,
    pub min_samples: usize,
}
impl Selector for Density {
    fn neighbours_needed(&self) -> usize {
        0
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        let g = c.generated;
        match pool::largest_cluster(g, self.eps_km, self.min_samples) {
            Some(idx) => {
                let members: Vec<LatLon> = idx.iter().map(|&i| g[i]).collect();
                pool::medoid(&members).map(|i| members[i])
            }
            None => pool::medoid(g).map(|i| g[i]),
        }
    }
}

/// Retrieval top-1.
pub struct RetrievalTop1;
impl Selector for RetrievalTop1 {
    fn neighbours_needed(&self) -> usize {
        1
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        c.neighbours.similar.first().map(|n| n.coord)
    }
}

/// A GPS tower for [`GeoVerify`]: L2-normalised embeddings of coordinates, row-major.
pub trait GpsTower: Send + Sync {
    fn encode_coords(&self, coords: &[(f64, f64)]) -> Result<Vec<f32>, String>;
    /// What the selector reports (with the model's fingerprint), when more than the spec says.
    fn describe(&self) -> Option<String> {
        None
    }
}

impl GpsTower for LocationEncoder {
    fn encode_coords(&self, coords: &[(f64, f64)]) -> Result<Vec<f32>, String> {
        self.encode(coords).map_err(|e| e.to_string())
    }
}

/// G3's geo-verification over precomputed query image embeddings (`n_queries x dim`,
/// L2-normalised, query order) and a GPS tower of the same space (GeoCLIP's location tower, or
/// trained alignment heads).
pub struct GeoVerify {
    pub image_features: Arc<Vec<f32>>,
    pub dim: usize,
    pub location: Arc<dyn GpsTower>,
}

impl GeoVerify {
    /// Cosine of each candidate's location embedding with query `q`'s image embedding.
    pub fn scores(&self, q: usize, cands: &[LatLon]) -> Result<Vec<f32>, String> {
        let img = self.image_features.get(q * self.dim..(q + 1) * self.dim).ok_or("no image features for this query")?;
        let coords: Vec<(f64, f64)> = cands.iter().map(|c| (c.lat, c.lon)).collect();
        let loc = self.location.encode_coords(&coords)?;
        if loc.len() != coords.len() * self.dim {
            return Err(format!("location embeddings are {}-d, image embeddings {}-d", loc.len() / coords.len().max(1), self.dim));
        }
        Ok(loc.chunks(self.dim).map(|l| l.iter().zip(img).map(|(a, b)| a * b).sum()).collect())
    }
}

impl Selector for GeoVerify {
    fn neighbours_needed(&self) -> usize {
        0
    }
    fn describe(&self) -> Option<String> {
        self.location.describe()
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        if c.generated.is_empty() || self.image_features.len() < (c.query + 1) * self.dim {
            return None;
        }
        let s = self.scores(c.query, c.generated).ok()?;
        // Strict `>`: ties go to the earlier candidate.
        let mut best = 0;
        for (i, v) in s.iter().enumerate() {
            if *v > s[best] {
                best = i;
            }
        }
        Some(c.generated[best])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use crate::retrieval::{Neighbour, QueryNeighbours};

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    fn nb() -> QueryNeighbours {
        QueryNeighbours {
            query_id: "q".into(),
            truth: ll(0.0, 0.0),
            status: Status::Ok,
            similar: vec![Neighbour { id: "n0".into(), coord: ll(10.0, 10.0), score: 0.9 }],
            dissimilar: vec![],
            removed: Default::default(),
        }
    }

    /// Hand-made pool: an outlier first, then a Paris cluster of three and a Rome pair.
    #[test]
    fn selectors_on_a_hand_made_pool() {
        let pool = [ll(-33.87, 151.21), ll(48.85, 2.35), ll(48.86, 2.34), ll(48.80, 2.40), ll(41.90, 12.49), ll(41.91, 12.50)];
        let n = nb();
        let c = Candidates { neighbours: &n, generated: &pool, query: 0 };
        assert_eq!(First.select(&c), Some(pool[0]));
        assert_eq!(RetrievalTop1.select(&c), Some(ll(10.0, 10.0)));
        // Density: the Paris cluster (3) beats Rome (2); its medoid is the middle point.
        assert_eq!(Density { eps_km: 50.0, min_samples: 2 }.select(&c), Some(pool[1]));
        // With eps too small for any cluster, everything is noise: the medoid of all.
        let m = Medoid.select(&c).unwrap();
        assert_eq!(Density { eps_km: 0.1, min_samples: 2 }.select(&c), Some(m));
        assert!(pool.contains(&m));
        let g = GeometricMedian.select(&c).unwrap();
        assert!(crate::metrics::haversine_km(g, ll(48.85, 2.35), 6371.0) < 1000.0, "{g:?}");
        let empty = Candidates { neighbours: &n, generated: &[], query: 0 };
        for s in [&First as &dyn Selector, &Medoid, &GeometricMedian, &Density { eps_km: 50.0, min_samples: 2 }] {
            assert!(s.select(&empty).is_none());
        }
    }
}
