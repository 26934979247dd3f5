//! `georag datasets verify DIR`: re-check a prepared dataset against its manifest — every shard
//! exists, has the recorded sha256 and row count, the rows still give the recorded dataset
//! fingerprint, and the quarantine file matches the manifest's counts. Reports every drift.

use super::shard::{Dataset, MANIFEST_SCHEMA, ShardError};
use crate::util::fingerprint::{Fingerprint, sha256_hex};
use std::path::Path;

/// Result of a verification: one line per check that failed.
#[derive(Debug, Default)]
pub struct Verification {
    pub shards_checked: usize,
    pub rows_checked: usize,
    pub drift: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.drift.is_empty()
    }
}

/// Verify the dataset in `dir`.
pub fn verify(dir: &Path) -> Result<Verification, ShardError> {
    let ds = Dataset::open(dir)?;
    let m = &ds.manifest;
    let mut v = Verification::default();
    let mut fp = Fingerprint::new(MANIFEST_SCHEMA);
    // Manifests written before the decode policy entered the fingerprint have none.
    if m.decode_policy.is_some() {
        fp.field(crate::decode::DECODE_POLICY);
    }
    if m.decode_policy.as_deref().is_some_and(|p| p != crate::decode::DECODE_POLICY) {
        v.drift.push(format!("decode policy changed since the dataset was written: `{}`", m.decode_policy.as_deref().unwrap_or("")));
    }
    for (i, s) in m.shards.iter().enumerate() {
        let path = dir.join(&s.file);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                v.drift.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        if let Some(want) = &s.xxh3 {
            let got = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
            if &got != want {
                v.drift.push(format!("{}: xxh3 {got} != manifest {want}", path.display()));
            }
        }
        if let Some(want) = &s.sha256 {
            let got = sha256_hex(&bytes);
            if &got != want {
                v.drift.push(format!("{}: sha256 {got} != manifest {want}", path.display()));
            }
        }
        match ds.read_shard(i) {
            Ok(rows) => {
                for r in &rows {
                    fp.field(&r.id).field(r.lat.to_le_bytes()).field(r.lon.to_le_bytes()).field(&r.sha256);
                }
                v.rows_checked += rows.len();
            }
            Err(e) => v.drift.push(e.to_string()),
        }
        v.shards_checked += 1;
    }
    if v.rows_checked != m.n_rows {
        v.drift.push(format!("{} rows in the shards, manifest says {}", v.rows_checked, m.n_rows));
    }
    if v.drift.is_empty() && fp.finish() != m.fingerprint {
        v.drift.push(format!("dataset fingerprint {} != manifest {}", fp.finish(), m.fingerprint));
    }
    if let Some(q) = m.validation.as_ref().and_then(|val| val["quarantined"].as_u64()) {
        let path = dir.join("quarantine.parquet");
        match super::prepare::read_quarantine(&path) {
            Ok(rows) if rows.len() as u64 == q => {}
            Ok(rows) => v.drift.push(format!("{}: {} rows, manifest says {q}", path.display(), rows.len())),
            Err(e) => v.drift.push(e.to_string()),
        }
    }
    Ok(v)
}
