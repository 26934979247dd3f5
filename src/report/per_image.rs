//! `per_image.csv`: one line per evaluated image, the exchange format between `georag run` /
//! `georag eval` and `georag compare` / `georag report`.
//!
//! Columns: `method, dataset, id, truth_lat, truth_lon, pred_lat, pred_lon, distance_km, status,
//! counted`. Coordinates and distances are written in Rust's shortest round-trip form, so reading
//! the file back gives bit-identical numbers. `pred_*` are empty unless `status` is `ok`;
//! `distance_km` is the distance scored under the failure policy (under `zero` a failure is
//! scored from (0, 0); under `miss`/`drop` it is empty); `counted` is false when the failure
//! policy drops the image from the denominator.

use super::MethodResult;
use crate::metrics::Scored;
use crate::record::{LatLon, PredictionRecord, Status};
use crate::util::atomic::{self, AtomicWriteError};
use std::io;
use std::path::{Path, PathBuf};

/// Header of `per_image.csv`.
pub const COLUMNS: [&str; 10] =
    ["method", "dataset", "id", "truth_lat", "truth_lon", "pred_lat", "pred_lon", "distance_km", "status", "counted"];

/// One (method, dataset) block to write: records and their scores (same order and length).
pub struct PerImageBlock<'a> {
    pub method: &'a str,
    pub dataset: &'a str,
    pub records: &'a [PredictionRecord],
    pub scored: &'a [Scored],
}

/// Write `per_image.csv` atomically.
pub fn write(path: &Path, blocks: &[PerImageBlock]) -> Result<(), AtomicWriteError> {
    atomic::write_with(path, |w| {
        let mut cw = csv::Writer::from_writer(w);
        cw.write_record(COLUMNS).map_err(io::Error::other)?;
        for b in blocks {
            debug_assert_eq!(b.records.len(), b.scored.len());
            for (r, s) in b.records.iter().zip(b.scored) {
                let (pl, po) = match r.pred {
                    Some(p) => (p.lat.to_string(), p.lon.to_string()),
                    None => (String::new(), String::new()),
                };
                let d = s.distance_km.map(|d| d.to_string()).unwrap_or_default();
                cw.write_record([
                    b.method,
                    b.dataset,
                    &r.id,
                    &r.truth.lat.to_string(),
                    &r.truth.lon.to_string(),
                    &pl,
                    &po,
                    &d,
                    r.status.as_str(),
                    if s.counted { "true" } else { "false" },
                ])
                .map_err(io::Error::other)?;
            }
        }
        cw.flush()
    })
}

/// Error reading a `per_image.csv`.
#[derive(Debug, thiserror::Error)]
pub enum PerImageError {
    #[error("reading {path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path}: not a georag per_image.csv (missing column `{column}`)")]
    Header { path: PathBuf, column: &'static str },
    #[error("{path}, line {line}, column `{column}`: {message}")]
    Cell { path: PathBuf, line: u64, column: &'static str, message: String },
}

/// Read a `per_image.csv` back into one [`MethodResult`] per (method, dataset), in file order.
pub fn read(path: &Path) -> Result<Vec<MethodResult>, PerImageError> {
    let csv_err = |source| PerImageError::Csv { path: path.to_path_buf(), source };
    let mut rd = csv::Reader::from_path(path).map_err(csv_err)?;
    let headers = rd.headers().map_err(csv_err)?.clone();
    let mut idx = [0usize; 10];
    for (i, c) in COLUMNS.iter().enumerate() {
        idx[i] = headers
            .iter()
            .position(|h| h == *c)
            .ok_or(PerImageError::Header { path: path.to_path_buf(), column: c })?;
    }
    let mut out: Vec<MethodResult> = Vec::new();
    for rec in rd.records() {
        let rec = rec.map_err(csv_err)?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let cell = |k: usize| rec.get(idx[k]).unwrap_or("");
        let bad = |k: usize, message: String| PerImageError::Cell { path: path.to_path_buf(), line, column: COLUMNS[k], message };
        let num = |k: usize| -> Result<f64, PerImageError> {
            cell(k).parse::<f64>().map_err(|e| bad(k, format!("`{}`: {e}", cell(k))))
        };
        let truth = LatLon::new(num(3)?, num(4)?).map_err(|e| bad(3, e.to_string()))?;
        let status = Status::parse(cell(8)).ok_or_else(|| bad(8, format!("unknown status `{}`", cell(8))))?;
        let record = if status == Status::Ok {
            let pred = LatLon::new(num(5)?, num(6)?).map_err(|e| bad(5, e.to_string()))?;
            PredictionRecord::ok(cell(2), truth, pred)
        } else {
            PredictionRecord::failed(cell(2), truth, status)
        };
        let (method, dataset) = (cell(0), cell(1));
        match out.iter_mut().find(|m| m.method == method && m.dataset == dataset) {
            Some(m) => m.records.push(record),
            None => out.push(MethodResult { method: method.into(), dataset: dataset.into(), records: vec![record] }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Convention, FailurePolicy, score_records};

    #[test]
    fn round_trips_bit_exact() {
        let t = LatLon::new(48.858_370_123_456_78, 2.294_481_000_000_1).unwrap();
        let recs = vec![
            PredictionRecord::ok("a,b", t, LatLon::new(-33.1, 151.0).unwrap()),
            PredictionRecord::failed("c", t, Status::Unparseable),
        ];
        let conv = Convention { failures: FailurePolicy::Zero, ..Default::default() };
        let scored = score_records(&recs, &conv);
        let dir = std::env::temp_dir().join(format!("georag-pi-{}", std::process::id()));
        let p = dir.join("per_image.csv");
        write(&p, &[PerImageBlock { method: "m", dataset: "d", records: &recs, scored: &scored }]).unwrap();
        let back = read(&p).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].records, recs);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"a,b\""));
        assert!(text.lines().nth(2).unwrap().ends_with(",unparseable,true"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
