//! Leakage between a query set and a retrieval database: the same id, the same image bytes, or
//! the same author within `km` of the query. Benchmarks share photographers with MP-16, and a
//! database holding the query itself (or its author's other shots of the same spot) inflates
//! street-level accuracy. The pairs found are written as `leakage.csv` (query_id, db_id, kind,
//! distance_km), the exclude list the retrieval stage can be given.

use super::shard::{Dataset, ShardError};
use crate::metrics::{EARTH_RADIUS_KM, haversine_km};
use crate::record::LatLon;
use crate::util::atomic;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One leaking pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Leak {
    pub query_id: String,
    pub db_id: String,
    pub kind: &'static str,
    pub distance_km: f64,
}

/// Summary of a leakage check.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LeakageSummary {
    pub queries: usize,
    pub database: usize,
    pub km: f64,
    /// Queries with at least one pair of each kind.
    pub queries_affected: BTreeMap<String, usize>,
    pub pairs: usize,
}

/// Find leaks of `queries` into `database` and write `leakage.csv` + `leakage.json` into `out`.
pub fn check(queries: &Dataset, database: &Dataset, km: f64, out: &Path) -> Result<(LeakageSummary, Vec<Leak>), ShardError> {
    let mut db_ids: Vec<String> = Vec::with_capacity(database.len());
    let mut by_id: HashMap<String, u32> = HashMap::new();
    let mut by_sha: HashMap<String, u32> = HashMap::new();
    let mut by_author: HashMap<String, Vec<(f64, f64, u32)>> = HashMap::new();
    for s in 0..database.manifest.shards.len() {
        for r in database.read_shard(s)? {
            let i = db_ids.len() as u32;
            by_id.entry(r.id.clone()).or_insert(i);
            if !r.sha256.is_empty() {
                by_sha.entry(r.sha256.clone()).or_insert(i);
            }
            if let Some(a) = &r.author {
                by_author.entry(a.clone()).or_default().push((r.lat, r.lon, i));
            }
            db_ids.push(r.id);
        }
    }
    let mut leaks = Vec::new();
    let mut affected: BTreeMap<String, usize> = BTreeMap::new();
    let mut nq = 0;
    for s in 0..queries.manifest.shards.len() {
        for q in queries.read_shard(s)? {
            nq += 1;
            let here = LatLon { lat: q.lat, lon: q.lon };
            let mut kinds: Vec<&'static str> = Vec::new();
            if let Some(&i) = by_id.get(&q.id) {
                leaks.push(Leak { query_id: q.id.clone(), db_id: db_ids[i as usize].clone(), kind: "same_id", distance_km: f64::NAN });
                kinds.push("same_id");
            }
            if let Some(&i) = (!q.sha256.is_empty()).then(|| by_sha.get(&q.sha256)).flatten() {
                leaks.push(Leak { query_id: q.id.clone(), db_id: db_ids[i as usize].clone(), kind: "same_image", distance_km: f64::NAN });
                kinds.push("same_image");
            }
            if let Some(list) = q.author.as_ref().and_then(|a| by_author.get(a)) {
                let mut any = false;
                for &(lat, lon, i) in list {
                    let d = haversine_km(here, LatLon { lat, lon }, EARTH_RADIUS_KM);
                    if d <= km && db_ids[i as usize] != q.id {
                        leaks.push(Leak { query_id: q.id.clone(), db_id: db_ids[i as usize].clone(), kind: "same_author_nearby", distance_km: d });
                        any = true;
                    }
                }
                if any {
                    kinds.push("same_author_nearby");
                }
            }
            for k in kinds {
                *affected.entry(k.to_string()).or_insert(0) += 1;
            }
        }
    }
    let summary = LeakageSummary { queries: nq, database: db_ids.len(), km, queries_affected: affected, pairs: leaks.len() };
    atomic::write_with(&out.join("leakage.csv"), |w| {
        let mut cw = csv::Writer::from_writer(w);
        cw.write_record(["query_id", "db_id", "kind", "distance_km"])?;
        for l in &leaks {
            let d = if l.distance_km.is_nan() { String::new() } else { format!("{}", l.distance_km) };
            cw.write_record([l.query_id.as_str(), l.db_id.as_str(), l.kind, d.as_str()])?;
        }
        cw.flush()
    })?;
    atomic::write_json(&out.join("leakage.json"), &summary)?;
    Ok((summary, leaks))
}
