//! Reading other people's per-image files (CSV and Parquet) with column detection.
//!
//! Invariants: a file is read as written — cells are never clamped or repaired; an empty or
//! non-numeric cell is kept as such ([`Num::Empty`], [`Num::Garbage`]) for the caller to turn into
//! a status; every row keeps its location (CSV line or Parquet row) so that problems can be
//! reported with the offending rows named.

use crate::util::suggest;
use arrow::array::{Array, Float64Array, StringArray};
use arrow::datatypes::DataType;
use std::fmt;
use std::path::{Path, PathBuf};

/// The role a column plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Id,
    Lat,
    Lon,
    PredLat,
    PredLon,
}

impl Role {
    /// Name used in messages and as the CLI flag stem (`--lat-col`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Id => "id",
            Role::Lat => "lat",
            Role::Lon => "lon",
            Role::PredLat => "pred-lat",
            Role::PredLon => "pred-lon",
        }
    }

    /// Accepted header spellings, best first, compared after lower-casing and removing every
    /// character that is not a letter or digit (`GT_LAT` -> `gtlat`, `LAT_pred` -> `latpred`).
    pub fn candidates(self) -> &'static [&'static str] {
        match self {
            Role::Id => &[
                "imgid", "imageid", "id", "name", "imagename", "imgname", "image", "img", "filename", "file",
                "photoid", "imagepath", "path", "key",
            ],
            Role::Lat => &[
                "lat", "latitude", "gtlat", "gtlatitude", "truelat", "truthlat", "latgt", "lattrue", "targetlat",
                "latitudegt", "reallat",
            ],
            Role::Lon => &[
                "lon", "lng", "long", "longitude", "gtlon", "gtlong", "gtlng", "gtlongitude", "truelon",
                "truelong", "truelng", "truthlon", "longt", "longgt", "lnggt", "lontrue", "targetlon",
                "longitudegt", "reallon",
            ],
            Role::PredLat => &[
                "predlat", "predictedlat", "latpred", "predictionlat", "predlatitude", "predictedlatitude",
                "latitudepred", "latpredicted", "estlat", "outputlat",
            ],
            Role::PredLon => &[
                "predlon", "predlong", "predlng", "predictedlon", "predictedlong", "predictedlng", "lonpred",
                "longpred", "lngpred", "predictionlon", "predlongitude", "predictedlongitude", "longitudepred",
                "lonpredicted", "estlon", "estlong", "outputlon",
            ],
        }
    }
}

/// Normalised form of a header for detection.
pub fn normalise(h: &str) -> String {
    h.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Where a row is in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// 1-based line number of a CSV record (the header is line 1).
    Line(u64),
    /// 1-based data row of a Parquet file.
    Row(u64),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Line(n) => write!(f, "line {n}"),
            Loc::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A numeric cell as found in the file.
#[derive(Clone, Debug, PartialEq)]
pub enum Num {
    Value(f64),
    /// Empty cell, null, or a row too short to have the column.
    Empty,
    /// Text that is not a number (kept for the message).
    Garbage(String),
}

impl Num {
    /// Parse a text cell: surrounding spaces ignored; `nan`/`inf` parse as non-finite values and
    /// are rejected later by coordinate validation.
    pub fn parse(s: &str) -> Num {
        let t = s.trim();
        if t.is_empty() {
            return Num::Empty;
        }
        match t.parse::<f64>() {
            Ok(v) => Num::Value(v),
            Err(_) => Num::Garbage(t.chars().take(40).collect()),
        }
    }
}

/// One data row: id and the numeric cells of the requested roles (same order as requested).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub loc: Loc,
    pub id: String,
    pub values: Vec<Num>,
}

/// How a column was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct UsedColumn {
    pub role: Role,
    pub header: String,
    /// 0-based position in the file.
    pub index: usize,
    /// True when detected from the header, false when given explicitly.
    pub detected: bool,
}

impl fmt::Display for UsedColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.detected { "detected" } else { "given" };
        write!(f, "{} = `{}` (column {}, {how})", self.role.name(), self.header, self.index)
    }
}

/// A file read for a set of roles.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub headers: Vec<String>,
    /// Columns used, in the order of the requested roles (id first).
    pub columns: Vec<UsedColumn>,
    pub rows: Vec<Row>,
}

/// Error reading a predictions or ground-truth file. Each names the file (and row/column when
/// the problem is local).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, {loc}: {source}")]
    Csv { path: PathBuf, loc: Loc, source: csv::Error },
    #[error("{path}: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
    #[error("{path}: column `{column}`: {source}")]
    Arrow { path: PathBuf, column: String, source: arrow::error::ArrowError },
    #[error("{path}: no {role} column found; headers are {headers}; give it with --{role}-col NAME (or #INDEX, 0-based)")]
    NoColumn { path: PathBuf, role: &'static str, headers: String },
    /// `what` says where the name came from: `` --id-col `X` `` or a dataset definition's role.
    #[error("{path}: {what} is not a column of this file; {hint}")]
    UnknownColumn { path: PathBuf, what: String, given: String, hint: String },
    #[error("{path}: the file is empty (no header)")]
    Empty { path: PathBuf },
}

/// Find the column for `role`: explicit (`NAME`, case-sensitive then case-insensitive, or
/// `#INDEX` 0-based) or detected among [`Role::candidates`].
pub fn resolve(path: &Path, headers: &[String], role: Role, explicit: Option<&str>) -> Result<Option<UsedColumn>, ReadError> {
    resolve_given(path, headers, role, explicit, |given| format!("--{}-col `{given}`", role.name()))
}

/// [`resolve`], with `what(given)` naming where an explicit name came from in the error (a CLI
/// flag, a definition's column role).
pub fn resolve_given(
    path: &Path,
    headers: &[String],
    role: Role,
    explicit: Option<&str>,
    what: impl Fn(&str) -> String,
) -> Result<Option<UsedColumn>, ReadError> {
    if let Some(given) = explicit {
        let idx = headers
            .iter()
            .position(|h| h == given)
            .or_else(|| headers.iter().position(|h| h.eq_ignore_ascii_case(given)))
            .or_else(|| given.strip_prefix('#').and_then(|n| n.parse::<usize>().ok()).filter(|i| *i < headers.len()));
        return match idx {
            Some(index) => Ok(Some(UsedColumn { role, header: headers[index].clone(), index, detected: false })),
            None => {
                let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
                Err(ReadError::UnknownColumn {
                    path: path.to_path_buf(),
                    what: what(given),
                    given: given.to_string(),
                    hint: suggest::not_a_column(given, &refs),
                })
            }
        };
    }
    let norm: Vec<String> = headers.iter().map(|h| normalise(h)).collect();
    for cand in role.candidates() {
        if let Some(index) = norm.iter().position(|n| n == cand) {
            return Ok(Some(UsedColumn { role, header: headers[index].clone(), index, detected: true }));
        }
    }
    Ok(None)
}

/// Headers of a CSV or Parquet file (chosen by extension: `.parquet`/`.pq` is Parquet).
pub fn headers(path: &Path) -> Result<Vec<String>, ReadError> {
    if is_parquet(path) {
        let b = parquet_builder(path)?;
        Ok(b.schema().fields().iter().map(|f| f.name().clone()).collect())
    } else {
        let mut rd = csv_reader(path)?;
        let h = rd.headers().map_err(|source| ReadError::Csv { path: path.to_path_buf(), loc: Loc::Line(1), source })?;
        let h: Vec<String> = h.iter().map(|s| s.trim_start_matches('\u{feff}').trim().trim_matches('"').to_string()).collect();
        if h.is_empty() || (h.len() == 1 && h[0].is_empty()) {
            return Err(ReadError::Empty { path: path.to_path_buf() });
        }
        Ok(h)
    }
}

/// Whether `path` is read as Parquet.
pub fn is_parquet(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
        Some("parquet" | "pq")
    )
}

fn csv_reader(path: &Path) -> Result<csv::Reader<std::fs::File>, ReadError> {
    let f = std::fs::File::open(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    Ok(csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(f))
}

fn parquet_builder(
    path: &Path,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<std::fs::File>, ReadError> {
    let f = std::fs::File::open(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|source| ReadError::Parquet { path: path.to_path_buf(), source })
}

/// Read the id column and the numeric columns `columns[1..]` (already resolved; `columns[0]` is
/// the id) of a CSV or Parquet file.
pub fn read_columns(path: &Path, headers: Vec<String>, columns: Vec<UsedColumn>) -> Result<Loaded, ReadError> {
    let rows = if is_parquet(path) { read_parquet(path, &columns)? } else { read_csv(path, &columns)? };
    Ok(Loaded { path: path.to_path_buf(), headers, columns, rows })
}

fn read_csv(path: &Path, columns: &[UsedColumn]) -> Result<Vec<Row>, ReadError> {
    // The whole file in memory: line numbers are counted from byte offsets, because the csv
    // crate's own line counter lags by one after CRLF record terminators.
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    let mut rd = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(bytes.as_slice());
    let mut lines = LineCounter::default();
    let mut rec = csv::StringRecord::new();
    let mut rows = Vec::new();
    loop {
        let at = rd.position().byte() as usize;
        match rd.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(source) => {
                return Err(ReadError::Csv { path: path.to_path_buf(), loc: Loc::Line(lines.line_at(&bytes, at)), source });
            }
        }
        // A blank line (e.g. trailing CRLF pairs) yields one empty field: skip it.
        if rec.len() == 1 && rec[0].trim().is_empty() {
            continue;
        }
        let start = rec.position().map(|p| p.byte() as usize).unwrap_or(at);
        let line = lines.line_at(&bytes, start);
        let id = rec.get(columns[0].index).unwrap_or("").trim().to_string();
        let values = columns[1..].iter().map(|c| rec.get(c.index).map(Num::parse).unwrap_or(Num::Empty)).collect();
        rows.push(Row { loc: Loc::Line(line), id, values });
    }
    Ok(rows)
}

/// 1-based line number of the first non-newline byte at or after a byte offset, counted
/// incrementally (offsets must not decrease).
#[derive(Default)]
struct LineCounter {
    pos: usize,
    newlines: u64,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], mut at: usize) -> u64 {
        while at < bytes.len() && (bytes[at] == b'\r' || bytes[at] == b'\n') {
            at += 1;
        }
        let at = at.max(self.pos).min(bytes.len());
        self.newlines += bytes[self.pos..at].iter().filter(|b| **b == b'\n').count() as u64;
        self.pos = at;
        self.newlines + 1
    }
}

fn read_parquet(path: &Path, columns: &[UsedColumn]) -> Result<Vec<Row>, ReadError> {
    let reader = parquet_builder(path)?
        .build()
        .map_err(|source| ReadError::Parquet { path: path.to_path_buf(), source })?;
    let arrow_err = |c: &UsedColumn, source| ReadError::Arrow { path: path.to_path_buf(), column: c.header.clone(), source };
    let mut rows = Vec::new();
    let mut base = 0u64;
    for batch in reader {
        let batch = batch.map_err(|source| ReadError::Arrow { path: path.to_path_buf(), column: "*".into(), source })?;
        let ids = arrow::compute::cast(batch.column(columns[0].index), &DataType::Utf8).map_err(|e| arrow_err(&columns[0], e))?;
        let ids = ids.as_any().downcast_ref::<StringArray>().expect("cast to Utf8 gives a StringArray");
        // Each numeric column as either parsed text (string columns) or float values.
        let mut cols: Vec<Vec<Num>> = Vec::new();
        for c in &columns[1..] {
            let arr = batch.column(c.index);
            let v: Vec<Num> = match arr.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
                    let s = arrow::compute::cast(arr, &DataType::Utf8).map_err(|e| arrow_err(c, e))?;
                    let s = s.as_any().downcast_ref::<StringArray>().expect("Utf8");
                    (0..s.len()).map(|i| if s.is_null(i) { Num::Empty } else { Num::parse(s.value(i)) }).collect()
                }
                _ => {
                    let f = arrow::compute::cast(arr, &DataType::Float64).map_err(|e| arrow_err(c, e))?;
                    let f = f.as_any().downcast_ref::<Float64Array>().expect("Float64");
                    (0..f.len()).map(|i| if f.is_null(i) { Num::Empty } else { Num::Value(f.value(i)) }).collect()
                }
            };
            cols.push(v);
        }
        for i in 0..batch.num_rows() {
            let id = if ids.is_null(i) { String::new() } else { ids.value(i).trim().to_string() };
            let values = cols.iter().map(|c| c[i].clone()).collect();
            rows.push(Row { loc: Loc::Row(base + i as u64 + 1), id, values });
        }
        base += batch.num_rows() as u64;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn detects_common_spellings() {
        let p = Path::new("x.csv");
        let hs = h(&["IMG_ID", "GT_LAT", "GT_LON", "PRED_LAT", "PRED_LON", "ERROR_KM"]);
        let got: Vec<usize> = [Role::Id, Role::Lat, Role::Lon, Role::PredLat, Role::PredLon]
            .iter()
            .map(|r| resolve(p, &hs, *r, None).unwrap().unwrap().index)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        let hs = h(&["name", "lat_pred", "long_pred", "gt_long", "latitude"]);
        assert_eq!(resolve(p, &hs, Role::Lon, None).unwrap().unwrap().header, "gt_long");
        assert_eq!(resolve(p, &hs, Role::PredLon, None).unwrap().unwrap().header, "long_pred");
        assert_eq!(resolve(p, &hs, Role::Id, None).unwrap().unwrap().header, "name");
        assert!(resolve(p, &h(&["a", "b"]), Role::Lat, None).unwrap().is_none());
    }

    #[test]
    fn explicit_columns_by_name_or_index() {
        let p = Path::new("x.csv");
        let hs = h(&["0", "IMG_ID", "LON", "LAT"]);
        assert_eq!(resolve(p, &hs, Role::Lat, Some("lat")).unwrap().unwrap().index, 3);
        assert_eq!(resolve(p, &hs, Role::Lat, Some("#2")).unwrap().unwrap().index, 2);
        // A header that is literally "0" is matched by name before any position.
        assert_eq!(resolve(p, &hs, Role::Id, Some("0")).unwrap().unwrap().index, 0);
        let e = resolve(p, &hs, Role::Lat, Some("LATT")).unwrap_err().to_string();
        assert!(e.contains("--lat-col `LATT`") && e.contains("did you mean"), "{e}");
    }

    #[test]
    fn parses_cells_without_repair() {
        assert_eq!(Num::parse(" 12.5 "), Num::Value(12.5));
        assert_eq!(Num::parse(""), Num::Empty);
        assert_eq!(Num::parse("abc"), Num::Garbage("abc".into()));
        assert!(matches!(Num::parse("nan"), Num::Value(v) if v.is_nan()));
    }
}
