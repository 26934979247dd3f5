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
use rayon::prelude::*;
use std::io::{self, Write};
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

/// Rows formatted per parallel chunk.
const CHUNK: usize = 1 << 15;

/// Write `per_image.csv` atomically. Chunks of rows are formatted in parallel (rayon), each
/// into its own buffer, and written in order: the bytes are those of one sequential writer.
pub fn write(path: &Path, blocks: &[PerImageBlock]) -> Result<(), AtomicWriteError> {
    atomic::write_with(path, |w| {
        let mut head = csv::Writer::from_writer(Vec::new());
        head.write_record(COLUMNS).map_err(io::Error::other)?;
        w.write_all(&head.into_inner().map_err(|e| io::Error::other(e.to_string()))?)?;
        for b in blocks {
            debug_assert_eq!(b.records.len(), b.scored.len());
            let n_chunks = b.records.len().div_ceil(CHUNK);
            // A bounded window of chunks in memory at a time (16 MB or so), in file order.
            let window = 2 * rayon::current_num_threads().max(1);
            let mut start = 0;
            while start < n_chunks {
                let end = (start + window).min(n_chunks);
                let bufs: Vec<io::Result<Vec<u8>>> = (start..end)
                    .into_par_iter()
                    .map(|c| {
                        let lo = c * CHUNK;
                        let hi = (lo + CHUNK).min(b.records.len());
                        format_rows(b, &b.records[lo..hi], &b.scored[lo..hi])
                    })
                    .collect();
                for buf in bufs {
                    w.write_all(&buf?)?;
                }
                start = end;
            }
        }
        w.flush()
    })
}

fn format_rows(b: &PerImageBlock, records: &[PredictionRecord], scored: &[Scored]) -> io::Result<Vec<u8>> {
    // The text cells through the csv crate's quoting (method and dataset once per chunk), the
    // numbers and the fixed words straight into the buffer: the same bytes as writing every
    // field through `csv::Writer`, at a fraction of its per-field cost.
    let method = quoted(b.method)?;
    let dataset = quoted(b.dataset)?;
    let mut out = Vec::with_capacity(records.len() * 96);
    let mut ry = ryu::Buffer::new();
    for (r, s) in records.iter().zip(scored) {
        out.extend_from_slice(&method);
        out.push(b',');
        out.extend_from_slice(&dataset);
        out.push(b',');
        if needs_quotes(&r.id) {
            out.extend_from_slice(&quoted(&r.id)?);
        } else {
            out.extend_from_slice(r.id.as_bytes());
        }
        out.push(b',');
        num_text::push(&mut out, &mut ry, r.truth.lat);
        out.push(b',');
        num_text::push(&mut out, &mut ry, r.truth.lon);
        out.push(b',');
        if let Some(p) = r.pred {
            num_text::push(&mut out, &mut ry, p.lat);
            out.push(b',');
            num_text::push(&mut out, &mut ry, p.lon);
        } else {
            out.push(b',');
        }
        out.push(b',');
        if let Some(d) = s.distance_km {
            num_text::push(&mut out, &mut ry, d);
        }
        out.push(b',');
        out.extend_from_slice(r.status.as_str().as_bytes());
        out.extend_from_slice(if s.counted { b",true\n" } else { b",false\n" });
    }
    Ok(out)
}

/// Whether the csv crate's default writer (`QuoteStyle::Necessary`, `,` and `"`) quotes this
/// field of a many-field record: when it holds the delimiter, the quote or a line break.
fn needs_quotes(field: &str) -> bool {
    field.bytes().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r'))
}

/// One field as the csv crate writes it (quoted and escaped when needed), without terminator.
fn quoted(field: &str) -> io::Result<Vec<u8>> {
    if !needs_quotes(field) {
        return Ok(field.as_bytes().to_vec());
    }
    let mut cw = csv::WriterBuilder::new().has_headers(false).terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    // Two fields, so that an empty one is not quoted as a lone empty record would be.
    cw.write_record([field, ""]).map_err(io::Error::other)?;
    let mut v = cw.into_inner().map_err(|e| io::Error::other(e.to_string()))?;
    v.truncate(v.len() - 2); // the "," before the empty field and the "\n"
    Ok(v)
}

/// Rust's shortest round-trip `Display` text of an f64, through `ryu` (which finds the same
/// shortest digits several times faster than `core::fmt`): ryu's text is reused when it is the
/// same as Display's (plain decimal notation, `.0` dropped from whole numbers) and Display is
/// called otherwise (exponent notation, non-finite values).
mod num_text {
    pub fn push(out: &mut Vec<u8>, ry: &mut ryu::Buffer, v: f64) {
        if v.is_finite() {
            let t = ry.format_finite(v).as_bytes();
            if !t.contains(&b'e') {
                let t = t.strip_suffix(b".0").unwrap_or(t);
                out.extend_from_slice(t);
                return;
            }
        }
        use std::io::Write;
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn ryu_text_is_display_text() {
        let mut r = crate::util::rng::Rng::new(3);
        let mut vals = vec![0.0, -0.0, 1.0, -1.0, 41.0, 180.0, -90.0, 1e-7, 1.5e-5, 0.0001, 1e15, 1e16, 12345678901234567.0, f64::MIN_POSITIVE, 0.1 + 0.2, 20037.508342789244, f64::NAN, f64::INFINITY];
        for _ in 0..20_000 {
            vals.push((r.f64() - 0.5) * 360.0);
            vals.push(r.f64() * 20_000.0);
            vals.push(r.f64() * 1e-3);
            vals.push((r.f64() * 1e4).round() / 100.0);
        }
        let mut ry = ryu::Buffer::new();
        for v in vals {
            let mut out = Vec::new();
            num_text::push(&mut out, &mut ry, v);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{v}"), "{v:e}");
        }
    }

    #[test]
    fn rows_are_the_csv_crates_bytes() {
        use crate::record::{LatLon, PredictionRecord, Status};
        let t = LatLon { lat: 48.8566, lon: 2.3522 };
        let records = vec![
            PredictionRecord::ok("plain", t, LatLon { lat: 41.0, lon: -0.5 }),
            PredictionRecord::ok("with,comma", t, LatLon { lat: 1e-7, lon: 10.25 }),
            PredictionRecord::failed("quote\"d\nline", t, Status::Unparseable),
            PredictionRecord::failed("", t, Status::Missing),
            PredictionRecord::ok(" spaced #id ", t, LatLon { lat: -0.0, lon: 179.99999999999997 }),
        ];
        let scored = vec![
            Scored { distance_km: Some(12.5), counted: true },
            Scored { distance_km: Some(0.0), counted: true },
            Scored { distance_km: None, counted: false },
            Scored { distance_km: Some(5437.1), counted: true },
            Scored { distance_km: Some(1e-9), counted: true },
        ];
        for (method, dataset) in [("m", "d"), ("rag, k=5", "im2gps \"3k\""), ("", "x")] {
            let b = PerImageBlock { method, dataset, records: &records, scored: &scored };
            let got = format_rows(&b, &records, &scored).unwrap();
            let mut cw = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
            for (r, s) in records.iter().zip(&scored) {
                let f = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_default();
                cw.write_record([
                    method,
                    dataset,
                    &r.id,
                    &format!("{}", r.truth.lat),
                    &format!("{}", r.truth.lon),
                    &f(r.pred.map(|p| p.lat)),
                    &f(r.pred.map(|p| p.lon)),
                    &f(s.distance_km),
                    r.status.as_str(),
                    if s.counted { "true" } else { "false" },
                ])
                .unwrap();
            }
            let want = cw.into_inner().unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
        }
    }
}

/// Error reading a `per_image.csv`.
#[derive(Debug, thiserror::Error)]
pub enum PerImageError {
    #[error("reading {path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("reading {path}: {source}")]
    Polars { path: PathBuf, source: polars::prelude::PolarsError },
    #[error("{path}: not a georag per_image.csv (missing column `{column}`)")]
    Header { path: PathBuf, column: &'static str },
    #[error("{path}, line {line}, column `{column}`: {message}")]
    Cell { path: PathBuf, line: u64, column: &'static str, message: String },
}

/// Read a `per_image.csv` back into one [`MethodResult`] per (method, dataset), in file order.
/// The header is read by the csv crate, the rows by polars' multi-threaded CSV reader (every
/// column as text, so numbers are parsed here as they were written, bit-exact); a bad cell is an
/// error naming its line (counted from the file's records only then) and column.
pub fn read(path: &Path) -> Result<Vec<MethodResult>, PerImageError> {
    let csv_err = |source| PerImageError::Csv { path: path.to_path_buf(), source };
    let headers = csv::Reader::from_path(path).map_err(csv_err)?.headers().map_err(csv_err)?.clone();
    let mut idx = [0usize; 10];
    for (i, c) in COLUMNS.iter().enumerate() {
        idx[i] = headers
            .iter()
            .position(|h| h == *c)
            .ok_or(PerImageError::Header { path: path.to_path_buf(), column: c })?;
    }
    let cols = crate::eval::read::text_columns(path, headers.len(), &idx)
        .map_err(|source| PerImageError::Polars { path: path.to_path_buf(), source })?;
    let locs = crate::eval::read::Locs::csv(path, cols.first().map_or(0, |c| c.len()));
    let mut out: Vec<MethodResult> = Vec::new();
    for row in 0..cols[0].len() {
        let cell = |k: usize| cols[k].get(row).unwrap_or("");
        let bad = |k: usize, message: String| {
            let line = match locs.loc(row) {
                crate::eval::read::Loc::Line(l) => l,
                crate::eval::read::Loc::Row(r) => r + 1,
            };
            PerImageError::Cell { path: path.to_path_buf(), line, column: COLUMNS[k], message }
        };
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
        match out.last_mut().filter(|m| m.method == method && m.dataset == dataset) {
            Some(m) => m.records.push(record),
            None => match out.iter_mut().find(|m| m.method == method && m.dataset == dataset) {
                Some(m) => m.records.push(record),
                None => out.push(MethodResult { method: method.into(), dataset: dataset.into(), records: vec![record] }),
            },
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

    /// The chunked parallel writer gives the bytes of one sequential `csv::Writer`.
    #[test]
    fn parallel_chunks_equal_a_sequential_writer() {
        let n = 3 * CHUNK + 17;
        let recs: Vec<PredictionRecord> = (0..n)
            .map(|i| {
                let t = LatLon::new((i % 170) as f64 * 0.5 - 42.123456789, (i % 350) as f64 - 175.000001).unwrap();
                if i % 7 == 0 {
                    PredictionRecord::failed(format!("id \"{i}\",x"), t, Status::Missing)
                } else {
                    PredictionRecord::ok(format!("{i}.jpg"), t, LatLon::new(1.0 / (i as f64 + 3.0), -2.5).unwrap())
                }
            })
            .collect();
        let conv = Convention::default();
        let scored = score_records(&recs, &conv);
        let dir = std::env::temp_dir().join(format!("georag-pi-par-{}", std::process::id()));
        let p = dir.join("per_image.csv");
        let blocks = [
            PerImageBlock { method: "m", dataset: "d", records: &recs, scored: &scored },
            PerImageBlock { method: "m2", dataset: "d", records: &recs[..5], scored: &scored[..5] },
        ];
        write(&p, &blocks).unwrap();
        let mut want = csv::Writer::from_writer(Vec::new());
        want.write_record(COLUMNS).unwrap();
        for b in &blocks {
            for (r, s) in b.records.iter().zip(b.scored) {
                let (pl, po) = r.pred.map(|p| (p.lat.to_string(), p.lon.to_string())).unwrap_or_default();
                let d = s.distance_km.map(|d| d.to_string()).unwrap_or_default();
                let (tl, to) = (r.truth.lat.to_string(), r.truth.lon.to_string());
                let row = [b.method, b.dataset, &r.id, &tl, &to, &pl, &po, &d, r.status.as_str(), if s.counted { "true" } else { "false" }];
                want.write_record(row).unwrap();
            }
        }
        assert!(std::fs::read(&p).unwrap() == want.into_inner().unwrap());
        assert_eq!(read(&p).unwrap()[0].records, recs);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
