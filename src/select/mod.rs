//! Selection: turning the candidates gathered for a query into one final coordinate.
//!
//! The [`Selector`] trait is the seam: retrieval baselines select among retrieved GPS; the MLLM
//! methods select among generated samples plus retrieval candidates ([`generated`]: first
//! answer, medoid, geometric median, DBSCAN density, retrieval top-1, G3's geo-verification;
//! the geometry lives in [`pool`]). Methods are chosen in the config by `kind:`.
//!
//! Invariant: a selector returns one of its candidates (or, for `geometric_median`, a point
//! computed from them only), never a coordinate from nowhere; with no candidates it returns
//! `None` and the prediction carries a failure status (or the method's fallback).

pub mod generated;
pub mod pool;

use crate::metrics::haversine_km;
use crate::metrics::EARTH_RADIUS_KM;
use crate::record::LatLon;
use crate::retrieval::QueryNeighbours;
use serde::{Deserialize, Serialize};

/// Everything known about one query when its final coordinate is chosen.
pub struct Candidates<'a> {
    pub neighbours: &'a QueryNeighbours,
    /// The valid generated coordinates pooled for this query (MLLM methods), in pool order;
    /// empty for retrieval baselines.
    pub generated: &'a [LatLon],
    /// Row of the query in the query set (for selectors with per-query features).
    pub query: usize,
}

impl<'a> Candidates<'a> {
    /// Candidates of a retrieval baseline (no generated answers).
    pub fn retrieval(neighbours: &'a QueryNeighbours, query: usize) -> Self {
        Candidates { neighbours, generated: &[], query }
    }
}

/// Chooses the final coordinate of a query.
pub trait Selector: Send + Sync {
    /// Largest number of similar neighbours this selector looks at.
    fn neighbours_needed(&self) -> usize;
    fn select(&self, c: &Candidates) -> Option<LatLon>;
    /// A description that says more than the method's spec (e.g. a trained model's fingerprint).
    fn describe(&self) -> Option<String> {
        None
    }
}

/// A method in the config (`methods: [{kind: nearest}, {kind: knn_density, k: 16}]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodSpec {
    /// GPS of the top-1 retrieved neighbour.
    Nearest {
        #[serde(default)]
        name: Option<String>,
    },
    /// The retrieved coordinate with the highest neighbour density among the top-k (the IM2GPS
    /// kNN baseline's mode-seeking step): density is the sum over the top-k of a Gaussian kernel
    /// of the great-circle distance, with bandwidth `bandwidth_km`.
    KnnDensity {
        #[serde(default)]
        name: Option<String>,
        #[serde(default = "default_k")]
        k: usize,
        #[serde(default = "default_bandwidth")]
        bandwidth_km: f64,
    },
    /// GeoCLIP-style prediction: the gallery coordinate (a CSV with lat/lon columns, e.g.
    /// GeoCLIP's `coordinates_100K.csv`, or the geoclip package's folder for that file) whose GPS
    /// embedding is most similar to the query's image->GPS embedding. No retrieval. The towers
    /// are either a trained alignment model (`model`: a `georag align train` directory; the
    /// experiment's query embeddings through its image->GPS head) or GeoCLIP's own (`location`:
    /// the geoclip package's weights, with `encoder: {kind: geoclip}` so the query embeddings
    /// are GeoCLIP image features): exactly one of the two.
    Gallery {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        model: Option<std::path::PathBuf>,
        #[serde(default)]
        location: Option<std::path::PathBuf>,
        gallery: std::path::PathBuf,
    },
    /// Retrieval-augmented generation with a multimodal LLM: prompt variants x sampling x
    /// parser x selector (`configs/methods/*.yaml`).
    Mllm(Box<crate::pipeline::mllm::MllmSpec>),
}

fn default_k() -> usize {
    16
}
fn default_bandwidth() -> f64 {
    200.0
}

impl MethodSpec {
    /// The row name in tables: the explicit `name`, else a name derived from the settings.
    pub fn name(&self) -> String {
        match self {
            MethodSpec::Nearest { name } => name.clone().unwrap_or_else(|| "nearest".into()),
            MethodSpec::KnnDensity { name, k, bandwidth_km } => {
                name.clone().unwrap_or_else(|| format!("knn_density(k={k}, bw={bandwidth_km}km)"))
            }
            MethodSpec::Gallery { name, model, location, .. } => name.clone().unwrap_or_else(|| match model {
                Some(m) => format!("gallery({})", m.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()),
                None if location.is_some() => "GeoCLIP (gallery)".to_string(),
                None => "gallery".to_string(),
            }),
            MethodSpec::Mllm(m) => m.name.clone(),
        }
    }

    /// The selector of a retrieval baseline; `None` for MLLM methods (built by the MLLM stage)
    /// and `gallery` (predicted by the pipeline from the query embeddings).
    pub fn build(&self) -> Option<Box<dyn Selector>> {
        match self {
            MethodSpec::Nearest { .. } => Some(Box::new(Nearest)),
            MethodSpec::KnnDensity { k, bandwidth_km, .. } => Some(Box::new(KnnDensity { k: *k, bandwidth_km: *bandwidth_km })),
            MethodSpec::Gallery { .. } | MethodSpec::Mllm(_) => None,
        }
    }
}

/// Top-1 neighbour.
pub struct Nearest;

impl Selector for Nearest {
    fn neighbours_needed(&self) -> usize {
        1
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        c.neighbours.similar.first().map(|n| n.coord)
    }
}

/// Highest kernel density among the top-k neighbour coordinates.
pub struct KnnDensity {
    pub k: usize,
    pub bandwidth_km: f64,
}

impl Selector for KnnDensity {
    fn neighbours_needed(&self) -> usize {
        self.k
    }
    fn select(&self, c: &Candidates) -> Option<LatLon> {
        let pts: Vec<LatLon> = c.neighbours.similar.iter().take(self.k).map(|n| n.coord).collect();
        let two_s2 = 2.0 * self.bandwidth_km * self.bandwidth_km;
        let mut best: Option<(f64, LatLon)> = None;
        for &p in &pts {
            let density: f64 = pts.iter().map(|&q| (-haversine_km(p, q, EARTH_RADIUS_KM).powi(2) / two_s2).exp()).sum();
            // Strict `>`: ties go to the better-ranked neighbour.
            if best.is_none_or(|(b, _)| density > b) {
                best = Some((density, p));
            }
        }
        best.map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use crate::retrieval::Neighbour;

    fn nb(coords: &[(f64, f64)]) -> QueryNeighbours {
        QueryNeighbours {
            query_id: "q".into(),
            truth: LatLon { lat: 0.0, lon: 0.0 },
            status: Status::Ok,
            similar: coords
                .iter()
                .enumerate()
                .map(|(i, &(lat, lon))| Neighbour { id: format!("n{i}"), coord: LatLon { lat, lon }, score: 1.0 - i as f32 * 0.01 })
                .collect(),
            dissimilar: vec![],
            removed: Default::default(),
        }
    }

    #[test]
    fn density_picks_the_cluster_not_the_top1() {
        // Top-1 is an outlier in Sydney; three neighbours cluster around Paris.
        let q = nb(&[(-33.87, 151.21), (48.85, 2.35), (48.86, 2.34), (48.80, 2.40)]);
        let c = Candidates::retrieval(&q, 0);
        assert_eq!(Nearest.select(&c).unwrap().lat, -33.87);
        let p = KnnDensity { k: 4, bandwidth_km: 50.0 }.select(&c).unwrap();
        assert!((p.lat - 48.85).abs() < 0.1, "{p:?}");
        assert_eq!(KnnDensity { k: 1, bandwidth_km: 50.0 }.select(&c).unwrap().lat, -33.87);
    }

    #[test]
    fn no_candidates_means_no_prediction() {
        let q = nb(&[]);
        let c = Candidates::retrieval(&q, 0);
        assert!(Nearest.select(&c).is_none());
        assert!(KnnDensity { k: 8, bandwidth_km: 50.0 }.select(&c).is_none());
    }
}
