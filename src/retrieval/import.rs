//! Neighbour lists released with papers: `.npy` integer arrays (n_queries × k) of database row
//! numbers, best first (G3's `I_g3_im2gps3k.npy`, `I_g3_yfcc4k.npy` and their `_reverse`
//! variants, used as dissimilar neighbours). Row `r` is row `r` of the prepared database in its
//! shard order, which is the input file's order when `georag prepare` quarantined nothing (a
//! database with quarantined rows is refused: its row numbers no longer match the release).
//!
//! Invariants: the array's row count equals the benchmark's query count; a row number outside
//! the database is an error naming the query and position; `-1` (FAISS's padding for "no
//! result") is skipped; imported neighbours carry no similarity (NaN); the same exclusions as
//! searched lists apply, counted the same way.

use super::{keep, read_exclude, ImportSpec, Neighbour, QueryNeighbours, RetrievalSpec};
use crate::index::{Hit, IndexError};
use crate::ingest::Dataset;
use crate::record::{LatLon, Status};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// An integer `.npy` array, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<i64>,
}

fn bad(path: &Path, message: String) -> IndexError {
    IndexError::Import { path: path.to_path_buf(), message }
}

/// Read a 2-d `.npy` of little-endian int64 / int32 / uint32 (format versions 1–3, C or
/// Fortran order).
pub fn read_npy(path: &Path) -> Result<NpyArray, IndexError> {
    let b = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(bad(path, format!("unsupported .npy format version {v}"))),
    };
    let header = std::str::from_utf8(b.get(start..start + hlen).ok_or_else(|| bad(path, "truncated header".into()))?).map_err(|_| bad(path, "header is not text".into()))?;
    let field = |name: &str| -> Option<&str> {
        let i = header.find(&format!("'{name}'"))? + name.len() + 2;
        let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").and_then(|r| r.strip_prefix('\'')).and_then(|r| r.split('\'').next()).ok_or_else(|| bad(path, format!("no descr in header {header}")))?;
    let fortran = field("fortran_order").is_some_and(|r| r.starts_with("True"));
    let shape_s = field("shape").and_then(|r| r.strip_prefix('(')).and_then(|r| r.split(')').next()).ok_or_else(|| bad(path, format!("no shape in header {header}")))?;
    let shape: Vec<usize> = shape_s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse::<usize>()).collect::<Result<_, _>>().map_err(|_| bad(path, format!("bad shape ({shape_s})")))?;
    let (rows, cols) = match shape[..] {
        [r, c] => (r, c),
        [r] => (r, 1),
        _ => return Err(bad(path, format!("expected a 2-d array (queries × k), shape is ({shape_s})"))),
    };
    let body = &b[start + hlen..];
    let width = match descr {
        "<i8" | "<u8" => 8,
        "<i4" | "<u4" => 4,
        d => return Err(bad(path, format!("dtype `{d}`: expected little-endian int64 or int32 row numbers"))),
    };
    if body.len() != rows * cols * width {
        return Err(bad(path, format!("{} data bytes, shape ({rows}, {cols}) of {descr} needs {}", body.len(), rows * cols * width)));
    }
    let mut data: Vec<i64> = body
        .chunks_exact(width)
        .map(|c| match descr {
            "<i8" => i64::from_le_bytes(c.try_into().expect("8 bytes")),
            "<u8" => u64::from_le_bytes(c.try_into().expect("8 bytes")) as i64,
            "<i4" => i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64,
            _ => u32::from_le_bytes(c.try_into().expect("4 bytes")) as i64,
        })
        .collect();
    if fortran {
        let mut t = vec![0; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[r * cols + c] = data[c * rows + r];
            }
        }
        data = t;
    }
    Ok(NpyArray { rows, cols, data })
}

/// Write a 2-d int64 `.npy` (format 1.0), for tests and for exporting georag's own lists.
pub fn write_npy(path: &Path, rows: usize, cols: usize, data: &[i64]) -> std::io::Result<()> {
    let mut header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    for v in data {
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b)
}

/// Write `lists` (query order) as G3-style arrays into `dir`: `similar.npy` and, when any query
/// has dissimilar neighbours, `dissimilar.npy`; int64 database row numbers of `db`, best first,
/// each row padded with -1 to the longest list. What `retrieval.import` reads back, so a
/// retrieval can be pinned (a CI replay that must not depend on the index's float rounding) or
/// shared. Returns the files written.
pub fn export_npy(lists: &[QueryNeighbours], db: &Dataset, dir: &Path) -> Result<Vec<std::path::PathBuf>, IndexError> {
    let (ids, _) = dataset_rows(db)?;
    let row: HashMap<&str, i64> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i as i64)).collect();
    let mut written = vec![];
    for (name, pick) in [("similar.npy", 0), ("dissimilar.npy", 1)] {
        fn of(q: &QueryNeighbours, pick: usize) -> &[Neighbour] {
            if pick == 0 { &q.similar } else { &q.dissimilar }
        }
        let of = |q| of(q, pick);
        let cols = lists.iter().map(|q| of(q).len()).max().unwrap_or(0);
        if pick == 1 && cols == 0 {
            continue;
        }
        let mut data = Vec::with_capacity(lists.len() * cols);
        for q in lists {
            for n in of(q) {
                data.push(*row.get(n.id.as_str()).ok_or_else(|| bad(&dir.join(name), format!("query {}: neighbour {} is not in the database", q.query_id, n.id)))?);
            }
            data.extend(std::iter::repeat_n(-1, cols - of(q).len()));
        }
        let path = dir.join(name);
        write_npy(&path, lists.len(), cols, &data).map_err(|e| bad(&path, e.to_string()))?;
        written.push(path);
    }
    Ok(written)
}

/// Id and coordinates of every row of a dataset, in shard order (only those columns are read).
pub fn dataset_rows(ds: &Dataset) -> Result<(Vec<String>, Vec<LatLon>), IndexError> {
    let (mut ids, mut coords) = (vec![], vec![]);
    for s in &ds.manifest.shards {
        let path = ds.dir.join(&s.file);
        crate::ingest::shard::for_each_projected(&path, &["id", "lat", "lon"], |b| {
            let (id, lat, lon) = crate::ingest::shard::key_columns(&path, b)?;
            ids.extend((0..b.num_rows()).map(|i| id.value(i).to_string()));
            coords.extend((0..b.num_rows()).map(|i| LatLon { lat: lat.value(i), lon: lon.value(i) }));
            Ok(())
        })
        .map_err(|e| IndexError::Store { path: path.clone(), message: e.to_string() })?;
    }
    Ok((ids, coords))
}

/// Neighbour lists of every query (in query order) from `import`'s arrays.
pub fn import(spec: &RetrievalSpec, import: &ImportSpec, queries: &Dataset, db: &Dataset) -> Result<Vec<QueryNeighbours>, IndexError> {
    let quarantined = db.manifest.validation.as_ref().and_then(|v| v.get("quarantined")).and_then(|v| v.as_u64()).unwrap_or(0);
    if quarantined > 0 {
        return Err(bad(
            &import.similar,
            format!(
                "database {} had {quarantined} rows quarantined by `georag prepare`, so its row numbers no longer match the released arrays' (rows of the original file); prepare it with the quarantine fixed or neighbour lists recomputed",
                db.dir.display()
            ),
        ));
    }
    let (qids, qcoords) = dataset_rows(queries)?;
    let (dids, dcoords) = dataset_rows(db)?;
    let exclude = match &spec.exclude {
        Some(p) => read_exclude(p, &spec.exclude_kinds)?,
        None => HashMap::new(),
    };
    let load = |path: &Path, label: &str| -> Result<NpyArray, IndexError> {
        let a = read_npy(path)?;
        if a.rows != qids.len() {
            return Err(bad(path, format!("{} rows of {label} neighbours, but the benchmark {} has {} queries", a.rows, queries.manifest.name, qids.len())));
        }
        for (i, &v) in a.data.iter().enumerate() {
            if v < -1 || v >= dids.len() as i64 {
                let (q, pos) = (i / a.cols.max(1), i % a.cols.max(1));
                return Err(bad(
                    path,
                    format!("query {q} (`{}`), position {pos}: row {v} is outside the database {} ({} rows)", qids[q], db.manifest.name, dids.len()),
                ));
            }
        }
        Ok(a)
    };
    let sim = load(&import.similar, "similar")?;
    let dis = import.dissimilar.as_deref().map(|p| load(p, "dissimilar")).transpose()?;
    let row = |r: usize| (dids[r].clone(), dcoords[r]);
    let hits = |a: &NpyArray, q: usize| -> Vec<Hit> {
        a.data[q * a.cols..(q + 1) * a.cols].iter().filter(|&&v| v >= 0).map(|&v| Hit { row: v as usize, score: f32::NAN }).collect()
    };
    Ok((0..qids.len())
        .map(|q| {
            let mut removed = BTreeMap::new();
            let similar: Vec<Neighbour> = keep(hits(&sim, q), spec.k.min(sim.cols), &qids[q], spec, &row, &exclude, &mut removed, &|_| true);
            let dissimilar = match &dis {
                Some(a) => keep(hits(a, q), spec.dissimilar_k.min(a.cols), &qids[q], spec, &row, &exclude, &mut removed, &|_| true),
                None => vec![],
            };
            let status = if similar.is_empty() && spec.k > 0 { Status::NoNeighbours } else { Status::Ok };
            QueryNeighbours { query_id: qids[q].clone(), truth: qcoords[q], status, similar, dissimilar, removed }
        })
        .collect())
}

/// sha256 of the imported arrays (the "index fingerprint" of a run that imports).
pub fn fingerprint(import: &ImportSpec) -> Result<String, IndexError> {
    let mut f = crate::util::fingerprint::Fingerprint::new("retrieval/import/1");
    for p in std::iter::once(&import.similar).chain(import.dissimilar.as_ref()) {
        let b = std::fs::read(p).map_err(|e| bad(p, e.to_string()))?;
        f.field(crate::util::fingerprint::sha256_hex(&b));
    }
    Ok(f.finish())
}
