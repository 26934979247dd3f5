//! Retrieval: for each query, the GPS of the most similar database photos and, for RAG prompts,
//! of dissimilar ones, in one of three senses ([`DissimilarMode`]): the best hits of the negated
//! query vector (Img2Loc, G3), the lowest similarities by exact scan of a seeded database
//! sample, or the most similar photos at least D km from the top-1 neighbour (geographic).
//! Neighbour lists can also be imported from the row arrays papers released ([`import`]).
//!
//! Invariants: neighbours are ordered best first (dissimilar: least similar first for
//! `negated` and `lowest`, most similar first for `far_from_top1`); a database photo with the
//! query's own id is never returned when `exclude_same_id` is set, nor a pair listed in the
//! `exclude` file (the leakage report of `georag prepare --against`), and every removal is
//! counted per query and reason; the index is searched with k + the largest exclusion count,
//! so exclusions still leave k neighbours; queries are searched in batches from one thread
//! (FAISS parallelises inside a call; it is never nested in rayon); a query whose embedding
//! failed gets no neighbours and its methods report `decode_failed`.

pub mod import;

use crate::embed::Embeddings;
use crate::index::{FaissIndex, Hit, IndexError, RowMap, VectorIndex};
use crate::metrics::distance::haversine_km;
use crate::record::{LatLon, Status};
use crate::util::progress::Progress;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How dissimilar neighbours are found (`retrieval.dissimilar` in the config).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum DissimilarMode {
    /// The best hits of −q in the index (Img2Loc, G3): approximately the lowest similarities.
    #[default]
    Negated,
    /// The exactly lowest similarities among a seeded sample of `sample` database rows, for
    /// comparison with `negated` (which an approximate index answers approximately).
    Lowest {
        #[serde(default = "default_lowest_sample")]
        sample: usize,
        #[serde(default)]
        seed: u64,
    },
    /// The most similar database photos at least `km` from the top-1 neighbour: look-alikes
    /// from elsewhere (searched among the best `search_k`).
    FarFromTop1 {
        #[serde(default = "default_far_km")]
        km: f64,
        #[serde(default = "default_far_search_k")]
        search_k: usize,
    },
}

fn default_lowest_sample() -> usize {
    100_000
}
fn default_far_km() -> f64 {
    1000.0
}
fn default_far_search_k() -> usize {
    512
}

impl DissimilarMode {
    pub fn name(&self) -> &'static str {
        match self {
            DissimilarMode::Negated => "dissimilar_negated",
            DissimilarMode::Lowest { .. } => "dissimilar_lowest",
            DissimilarMode::FarFromTop1 { .. } => "far_from_top1",
        }
    }
}

/// Neighbour lists read from files instead of searched (`retrieval.import`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSpec {
    /// `.npy` int64 (n_queries × k) database row numbers of similar neighbours, best first
    /// (G3's `I_g3_im2gps3k.npy`).
    pub similar: std::path::PathBuf,
    /// The same for dissimilar neighbours (G3's `_reverse` arrays).
    #[serde(default)]
    pub dissimilar: Option<std::path::PathBuf>,
}

/// Retrieval settings (`retrieval:` in the config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalSpec {
    /// Similar neighbours kept per query (methods may use fewer).
    pub k: usize,
    /// Dissimilar neighbours kept per query (0 = none).
    pub dissimilar_k: usize,
    pub dissimilar: DissimilarMode,
    /// Drop database photos whose id equals the query's id.
    pub exclude_same_id: bool,
    /// A `leakage.csv` written by `georag prepare --against` (columns query_id, db_id, kind):
    /// those database photos are never retrieved for those queries.
    pub exclude: Option<std::path::PathBuf>,
    /// Kinds of the exclude file to apply (`same_id`, `same_image`, `same_author_nearby`);
    /// empty = all of them.
    pub exclude_kinds: Vec<String>,
    /// Metadata fields of the database joined into each neighbour's text (missing ones skipped).
    pub text_fields: Vec<String>,
    /// Read neighbour lists from released arrays instead of searching (no database embedding).
    pub import: Option<ImportSpec>,
}

impl Default for RetrievalSpec {
    fn default() -> Self {
        RetrievalSpec {
            k: 32,
            dissimilar_k: 0,
            dissimilar: DissimilarMode::Negated,
            exclude_same_id: true,
            exclude: None,
            exclude_kinds: vec![],
            text_fields: vec!["city".into(), "state".into(), "country".into()],
            import: None,
        }
    }
}

/// One retrieved database photo.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbour {
    pub id: String,
    pub coord: LatLon,
    /// Similarity with the query (cosine; NaN for imported lists, which carry none).
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
    /// Database photos left out of this query's lists, by reason (`same_id`, a leakage kind).
    pub removed: BTreeMap<String, usize>,
}

/// Exclusions by query: db id -> reason.
pub type Exclusions = HashMap<String, HashMap<String, String>>;

/// Read an exclude list: `query_id -> {db_id: kind}` from a CSV with `query_id` and `db_id`
/// columns (and `kind`, filtered by `kinds` when given).
pub fn read_exclude(path: &std::path::Path, kinds: &[String]) -> Result<Exclusions, IndexError> {
    let bad = |message: String| IndexError::Exclude { path: path.to_path_buf(), message };
    let mut rd = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let h = rd.headers().map_err(|e| bad(e.to_string()))?.clone();
    let cols: Vec<&str> = h.iter().collect();
    let col = |name: &str| h.iter().position(|c| c == name).ok_or_else(|| bad(crate::util::suggest::not_a_column(name, &cols)));
    let (qi, di) = (col("query_id")?, col("db_id")?);
    let ki = h.iter().position(|c| c == "kind");
    if !kinds.is_empty() && ki.is_none() {
        return Err(bad("retrieval.exclude_kinds is set but the file has no `kind` column".into()));
    }
    let mut out: Exclusions = HashMap::new();
    for (n, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| bad(format!("row {}: {e}", n + 1)))?;
        let kind = ki.map_or("excluded", |k| &rec[k]).to_string();
        if !kinds.is_empty() && !kinds.contains(&kind) {
            continue;
        }
        out.entry(rec[qi].to_string()).or_default().insert(rec[di].to_string(), kind);
    }
    Ok(out)
}

/// Keep the first `k` hits that pass the exclusions, counting what was removed before the
/// list was full.
fn keep(
    hits: impl IntoIterator<Item = Hit>,
    k: usize,
    qid: &str,
    spec: &RetrievalSpec,
    ids: &dyn Fn(usize) -> (String, LatLon),
    exclude: &Exclusions,
    removed: &mut BTreeMap<String, usize>,
    also: &dyn Fn(LatLon) -> bool,
) -> Vec<Neighbour> {
    let ex = exclude.get(qid);
    let mut out = Vec::with_capacity(k);
    for h in hits {
        if out.len() == k {
            break;
        }
        let (id, coord) = ids(h.row);
        if spec.exclude_same_id && id == qid {
            *removed.entry("same_id".into()).or_insert(0) += 1;
            continue;
        }
        if let Some(kind) = ex.and_then(|e| e.get(&id)) {
            *removed.entry(kind.clone()).or_insert(0) += 1;
            continue;
        }
        if !also(coord) {
            continue;
        }
        out.push(Neighbour { id, coord, score: h.score });
    }
    out
}

/// Retrieve neighbours for every query, in query order. `db` (the database embeddings) is
/// needed only by `dissimilar: {mode: lowest}`.
pub fn retrieve(
    spec: &RetrievalSpec,
    index: &mut dyn VectorIndex,
    rows: &RowMap,
    queries: &Embeddings,
    search_batch: usize,
) -> Result<Vec<QueryNeighbours>, IndexError> {
    retrieve_with(spec, index, rows, queries, None, search_batch)
}

/// [`retrieve`] with the database embeddings at hand.
pub fn retrieve_with(
    spec: &RetrievalSpec,
    index: &mut dyn VectorIndex,
    rows: &RowMap,
    queries: &Embeddings,
    db: Option<&Embeddings>,
    search_batch: usize,
) -> Result<Vec<QueryNeighbours>, IndexError> {
    let d = queries.dim;
    let ok: Vec<usize> = (0..queries.len()).filter(|&i| queries.status[i] == Status::Ok).collect();
    let mut similar: Vec<Vec<Neighbour>> = vec![Vec::new(); queries.len()];
    let mut dissimilar: Vec<Vec<Neighbour>> = vec![Vec::new(); queries.len()];
    let mut removed: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); queries.len()];
    let exclude = match &spec.exclude {
        Some(p) => read_exclude(p, &spec.exclude_kinds)?,
        None => HashMap::new(),
    };
    // Over-fetch so that exclusions still leave k neighbours.
    let extra = usize::from(spec.exclude_same_id) + exclude.values().map(HashMap::len).max().unwrap_or(0);
    let index_row = |r: usize| (rows.ids[r].clone(), LatLon { lat: rows.lat[r], lon: rows.lon[r] });
    // `lowest`: an exact flat index over a seeded sample of the database.
    let mut lowest = match (&spec.dissimilar, spec.dissimilar_k) {
        (DissimilarMode::Lowest { sample, seed }, dk) if dk > 0 => {
            let db = db.ok_or_else(|| IndexError::Build("dissimilar mode `lowest` needs the database embeddings (not available with imported neighbours)".into()))?;
            let okdb: Vec<usize> = (0..db.len()).filter(|&i| db.status[i] == Status::Ok).collect();
            // The same seeded sample the index draws its training rows with.
            let pick: Vec<usize> = crate::index::build::sample(okdb.len(), *sample, *seed).into_iter().map(|i| okdb[i]).collect();
            let m = pick.len();
            let mut x = Vec::with_capacity(m * db.dim);
            for &i in &pick {
                x.extend_from_slice(db.row(i));
            }
            Some((FaissIndex::build("Flat", db.dim, &x)?, pick, db))
        }
        _ => None,
    };
    let far = match spec.dissimilar {
        DissimilarMode::FarFromTop1 { km, search_k } => Some((km, search_k.max(spec.dissimilar_k + extra))),
        _ => None,
    };
    let progress = Progress::new("retrieve", ok.len() as u64);
    for chunk in ok.chunks(search_batch.max(1)) {
        let mut x = Vec::with_capacity(chunk.len() * d);
        for &q in chunk {
            x.extend_from_slice(queries.row(q));
        }
        let n_search = match far {
            Some((_, sk)) if spec.dissimilar_k > 0 => sk.max(spec.k + extra),
            _ => spec.k + extra,
        };
        if spec.k > 0 || far.is_some() {
            let hits = index.search(&x, n_search)?;
            for (&q, h) in chunk.iter().zip(hits) {
                let qid = queries.ids[q].as_str();
                let mut rm = BTreeMap::new();
                similar[q] = keep(h.iter().copied(), spec.k, qid, spec, &index_row, &exclude, &mut rm, &|_| true);
                if let Some((km, _)) = far
                    && spec.dissimilar_k > 0
                {
                    // The top-1 after exclusions: the first similar neighbour when k > 0.
                    let top = match similar[q].first() {
                        Some(t) => Some(t.coord),
                        None => keep(h.iter().copied(), 1, qid, spec, &index_row, &exclude, &mut BTreeMap::new(), &|_| true).first().map(|t| t.coord),
                    };
                    if let Some(c) = top {
                        dissimilar[q] = keep(h.iter().copied(), spec.dissimilar_k, qid, spec, &index_row, &exclude, &mut rm, &|p| haversine_km(c, p, 6371.0) >= km);
                    }
                }
                removed[q] = rm;
            }
        }
        if spec.dissimilar_k > 0 && far.is_none() {
            let neg: Vec<f32> = x.iter().map(|v| -v).collect();
            let hits = match &mut lowest {
                Some((flat, _, _)) => flat.search(&neg, spec.dissimilar_k + extra)?,
                None => index.search(&neg, spec.dissimilar_k + extra)?,
            };
            for (&q, h) in chunk.iter().zip(hits) {
                let qid = queries.ids[q].as_str();
                // Scores were against the negated query; report the cosine with the query.
                let h = h.into_iter().map(|h| Hit { score: -h.score, ..h });
                let list = match &lowest {
                    Some((_, pick, db)) => {
                        let f = |r: usize| (db.ids[pick[r]].clone(), LatLon { lat: db.lat[pick[r]], lon: db.lon[pick[r]] });
                        keep(h, spec.dissimilar_k, qid, spec, &f, &exclude, &mut removed[q], &|_| true)
                    }
                    None => keep(h, spec.dissimilar_k, qid, spec, &index_row, &exclude, &mut removed[q], &|_| true),
                };
                dissimilar[q] = list;
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
                removed: std::mem::take(&mut removed[q]),
            }
        })
        .collect())
}

/// Removed neighbours over all queries: reason -> (neighbours removed, queries affected).
pub fn removal_totals(n: &[QueryNeighbours]) -> BTreeMap<String, (usize, usize)> {
    let mut t: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for q in n {
        for (k, v) in &q.removed {
            let e = t.entry(k.clone()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    t
}

/// The database's text for each wanted id: `fields` of its metadata JSON joined with ", ".
/// Reads only the id and meta columns of the dataset's shards.
pub fn read_text(db: &crate::ingest::Dataset, wanted: &HashSet<&str>, fields: &[String]) -> Result<HashMap<String, String>, IndexError> {
    use arrow::array::{Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let mut out = HashMap::new();
    if fields.is_empty() || wanted.is_empty() {
        return Ok(out);
    }
    for s in &db.manifest.shards {
        let path = db.dir.join(&s.file);
        let bad = |m: String| IndexError::Store { path: path.clone(), message: m };
        let file = std::fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
        if !b.schema().fields().iter().any(|f| f.name() == "meta") {
            return Ok(out);
        }
        let mask = ProjectionMask::columns(b.parquet_schema(), ["id", "meta"]);
        for batch in b.with_projection(mask).build().map_err(|e| bad(e.to_string()))? {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            let id = crate::util::pq::column::<StringArray>(&path, &batch, "id")?;
            let meta = crate::util::pq::column::<StringArray>(&path, &batch, "meta")?;
            for i in 0..batch.num_rows() {
                if meta.is_null(i) || !wanted.contains(id.value(i)) {
                    continue;
                }
                let m = meta.value(i);
                let Ok(v) = serde_json::from_str::<serde_json::Value>(m) else { continue };
                let parts: Vec<String> = fields
                    .iter()
                    .filter_map(|f| v.get(f))
                    .filter_map(|x| match x {
                        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect();
                if !parts.is_empty() {
                    out.insert(id.value(i).to_string(), parts.join(", "));
                }
            }
        }
    }
    Ok(out)
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
        let spec = RetrievalSpec { k: 2, dissimilar_k: 1, exclude: Some(ex), ..RetrievalSpec::default() };
        let n = retrieve(&spec, &mut index, &rows, &q, 10).unwrap();
        let ids = |v: &[Neighbour]| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&n[0].similar), vec!["b", "c"], "query `a` must not retrieve itself");
        assert_eq!(ids(&n[1].similar), vec!["b", "c"], "excluded pair (q2, a) must not be retrieved");
        assert_eq!(ids(&n[1].dissimilar), vec!["d"]);
        assert!((n[1].dissimilar[0].score - -1.0).abs() < 1e-6, "dissimilar score is the cosine with the query");
        // Every removal is counted by reason, and the lists were refilled to k from deeper hits.
        assert_eq!(n[0].removed, BTreeMap::from([("same_id".to_string(), 1)]));
        assert_eq!(n[1].removed, BTreeMap::from([("same_image".to_string(), 1)]));
        assert_eq!(removal_totals(&n), BTreeMap::from([("same_id".to_string(), (1, 1)), ("same_image".to_string(), (1, 1))]));
        // exclude_kinds filters the leakage report: with only same_author_nearby, (q2, a) stays.
        let only_author = RetrievalSpec { exclude_kinds: vec!["same_author_nearby".into()], ..spec.clone() };
        let m = retrieve(&only_author, &mut index, &rows, &q, 10).unwrap();
        assert_eq!(ids(&m[1].similar), vec!["a", "b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
