//! Retrieval: for each query, the GPS of the most similar database photos and, for RAG prompts,
//! of the most dissimilar ones (found by searching with the negated query vector, as in
//! Img2Loc and DSO-MultiLM).
//!
//! Invariants: neighbours are ordered best first; a database photo with the query's own id is
//! never returned when `exclude_same_id` is set, nor a pair listed in the `exclude` file (the
//! leakage report of `georag prepare --against`); a query whose embedding failed gets no
//! neighbours and its methods report `decode_failed`.

use crate::embed::Embeddings;
use crate::index::{IndexError, RowMap, VectorIndex};
use crate::record::{LatLon, Status};
use crate::util::progress::Progress;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

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
    /// A `leakage.csv` written by `georag prepare --against` (columns query_id, db_id): those
    /// database photos are never retrieved for those queries.
    pub exclude: Option<std::path::PathBuf>,
}

impl Default for RetrievalSpec {
    fn default() -> Self {
        RetrievalSpec { k: 32, dissimilar_k: 0, exclude_same_id: true, exclude: None }
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

/// Read an exclude list: `query_id -> {db_id}` from a CSV with `query_id` and `db_id` columns.
pub fn read_exclude(path: &std::path::Path) -> Result<HashMap<String, HashSet<String>>, IndexError> {
    let bad = |message: String| IndexError::Exclude { path: path.to_path_buf(), message };
    let mut rd = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let h = rd.headers().map_err(|e| bad(e.to_string()))?.clone();
    let col = |name: &str| h.iter().position(|c| c == name).ok_or_else(|| bad(format!("no `{name}` column")));
    let (qi, di) = (col("query_id")?, col("db_id")?);
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for (n, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| bad(format!("row {}: {e}", n + 1)))?;
        out.entry(rec[qi].to_string()).or_default().insert(rec[di].to_string());
    }
    Ok(out)
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
    let exclude = match &spec.exclude {
        Some(p) => read_exclude(p)?,
        None => HashMap::new(),
    };
    // Over-fetch so that exclusions still leave k neighbours.
    let extra = usize::from(spec.exclude_same_id) + exclude.values().map(HashSet::len).max().unwrap_or(0);
    let progress = Progress::new("retrieve", ok.len() as u64);
    for chunk in ok.chunks(search_batch.max(1)) {
        let mut x = Vec::with_capacity(chunk.len() * d);
        for &q in chunk {
            x.extend_from_slice(queries.row(q));
        }
        let to_neighbours = |q: usize, hits: Vec<crate::index::Hit>, k: usize| -> Vec<Neighbour> {
            hits.into_iter()
                .filter(|h| !(spec.exclude_same_id && rows.ids[h.row] == queries.ids[q]))
                .filter(|h| !exclude.get(&queries.ids[q]).is_some_and(|ex| ex.contains(&rows.ids[h.row])))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::BruteForce;
    use std::path::PathBuf;

    fn emb(ids: &[&str], vecs: &[[f32; 2]]) -> Embeddings {
        Embeddings {
            dim: 2,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            lat: (0..ids.len()).map(|i| i as f64).collect(),
            lon: vec![0.0; ids.len()],
            status: vec![Status::Ok; ids.len()],
            errors: vec![None; ids.len()],
            vectors: vecs.iter().flatten().copied().collect(),
            dir: PathBuf::new(),
        }
    }

    /// Same-id and exclude-list leakage controls, and dissimilar neighbours from the negated query.
    #[test]
    fn exclusions_and_dissimilar_neighbours() {
        let db = emb(&["a", "b", "c", "d"], &[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]);
        let rows = RowMap { ids: db.ids.clone(), lat: db.lat.clone(), lon: db.lon.clone() };
        let mut index = BruteForce::new(2, db.vectors.clone());
        let q = emb(&["a", "q2"], &[[1.0, 0.0], [1.0, 0.0]]);
        let dir = std::env::temp_dir().join(format!("georag-excl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ex = dir.join("leakage.csv");
        std::fs::write(&ex, "query_id,db_id,kind,distance_km\nq2,a,same_image,\n").unwrap();
        let spec = RetrievalSpec { k: 2, dissimilar_k: 1, exclude_same_id: true, exclude: Some(ex) };
        let n = retrieve(&spec, &mut index, &rows, &q, 10).unwrap();
        let ids = |v: &[Neighbour]| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&n[0].similar), vec!["b", "c"], "query `a` must not retrieve itself");
        assert_eq!(ids(&n[1].similar), vec!["b", "c"], "excluded pair (q2, a) must not be retrieved");
        assert_eq!(ids(&n[1].dissimilar), vec!["d"]);
        assert!((n[1].dissimilar[0].score - -1.0).abs() < 1e-6, "dissimilar score is the cosine with the query");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
