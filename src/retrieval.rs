//! Retrieval: for each query, the GPS of the most similar database photos and, for RAG prompts,
//! of the most dissimilar ones (found by searching with the negated query vector, as in
//! Img2Loc and DSO-MultiLM).
//!
//! Invariants: neighbours are ordered best first; a database photo with the query's own id is
//! never returned when `exclude_same_id` is set (leakage control); a query whose embedding failed
//! gets no neighbours and its methods report `decode_failed`.

use crate::embed::Embeddings;
use crate::index::{IndexError, RowMap, VectorIndex};
use crate::record::{LatLon, Status};
use crate::util::progress::Progress;
use serde::{Deserialize, Serialize};

/// Retrieval settings (`retrieval:` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalSpec {
    /// Similar neighbours kept per query (methods may use fewer).
    pub k: usize,
    /// Dissimilar neighbours kept per query (0 = none).
    pub dissimilar_k: usize,
    /// Drop database photos whose id equals the query's id.
    pub exclude_same_id: bool,
}

impl Default for RetrievalSpec {
    fn default() -> Self {
        RetrievalSpec { k: 32, dissimilar_k: 0, exclude_same_id: true }
    }
}

/// One retrieved database photo.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbour {
    pub id: String,
    pub coord: LatLon,
    /// Inner product with the query (cosine).
    pub score: f32,
}

/// What retrieval found for one query.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryNeighbours {
    pub query_id: String,
    pub truth: LatLon,
    /// `Ok`, or why the query has no neighbours.
    pub status: Status,
    pub similar: Vec<Neighbour>,
    pub dissimilar: Vec<Neighbour>,
}

/// Retrieve neighbours for every query, in query order.
pub fn retrieve(
    spec: &RetrievalSpec,
    index: &mut dyn VectorIndex,
    rows: &RowMap,
    queries: &Embeddings,
    search_batch: usize,
) -> Result<Vec<QueryNeighbours>, IndexError> {
    let d = queries.dim;
    let ok: Vec<usize> = (0..queries.len()).filter(|&i| queries.status[i] == Status::Ok).collect();
    let mut similar: Vec<Vec<Neighbour>> = vec![Vec::new(); queries.len()];
    let mut dissimilar: Vec<Vec<Neighbour>> = vec![Vec::new(); queries.len()];
    // Over-fetch by one so that excluding the query itself still leaves k.
    let extra = usize::from(spec.exclude_same_id);
    let progress = Progress::new("retrieve", ok.len() as u64);
    for chunk in ok.chunks(search_batch.max(1)) {
        let mut x = Vec::with_capacity(chunk.len() * d);
        for &q in chunk {
            x.extend_from_slice(queries.row(q));
        }
        let to_neighbours = |q: usize, hits: Vec<crate::index::Hit>, k: usize| -> Vec<Neighbour> {
            hits.into_iter()
                .filter(|h| !(spec.exclude_same_id && rows.ids[h.row] == queries.ids[q]))
                .take(k)
                .map(|h| Neighbour {
                    id: rows.ids[h.row].clone(),
                    coord: LatLon { lat: rows.lat[h.row], lon: rows.lon[h.row] },
                    score: h.score,
                })
                .collect()
        };
        if spec.k > 0 {
            let hits = index.search(&x, spec.k + extra)?;
            for (&q, h) in chunk.iter().zip(hits) {
                similar[q] = to_neighbours(q, h, spec.k);
            }
        }
        if spec.dissimilar_k > 0 {
            let neg: Vec<f32> = x.iter().map(|v| -v).collect();
            let hits = index.search(&neg, spec.dissimilar_k + extra)?;
            for (&q, h) in chunk.iter().zip(hits) {
                // Scores were against the negated query; report the cosine with the query.
                dissimilar[q] = to_neighbours(q, h, spec.dissimilar_k)
                    .into_iter()
                    .map(|n| Neighbour { score: -n.score, ..n })
                    .collect();
            }
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    Ok((0..queries.len())
        .map(|q| {
            let status = if queries.status[q] != Status::Ok {
                queries.status[q]
            } else if similar[q].is_empty() && spec.k > 0 {
                Status::NoNeighbours
            } else {
                Status::Ok
            };
            QueryNeighbours {
                query_id: queries.ids[q].clone(),
                truth: LatLon { lat: queries.lat[q], lon: queries.lon[q] },
                status,
                similar: std::mem::take(&mut similar[q]),
                dissimilar: std::mem::take(&mut dissimilar[q]),
            }
        })
        .collect())
}
