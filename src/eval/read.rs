//! Reading other people's per-image files (CSV and Parquet) with column detection, on polars'
//! readers (the analysis plane; see ARCHITECTURE.md, "Data plane vs analysis plane").
//!
//! Invariants: a file is read as written — cells are never clamped or repaired; an empty or
//! non-numeric cell is kept as such ([`Num::Empty`], [`Num::Garbage`]) for the caller to turn into
//! a status; every row keeps its location (CSV line or Parquet row, [`Locs`]) so that problems
//! can be reported with the offending rows named.

use crate::util::suggest;
use polars::prelude::*;
use rayon::prelude::*;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

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

/// A numeric column as read from the file.
#[derive(Clone, Debug, PartialEq)]
pub enum NumColumn {
    /// Every cell was a number to the reader (`None`: an empty cell, a null, a short row).
    Float(Vec<Option<f64>>),
    /// The cells as text, each parsed by [`Num::parse`] (a column with some non-numeric cell).
    Cells(Vec<Num>),
}

impl NumColumn {
    pub fn len(&self) -> usize {
        match self {
            NumColumn::Float(v) => v.len(),
            NumColumn::Cells(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cell of data row `i` (0-based).
    pub fn get(&self, i: usize) -> Num {
        match self {
            NumColumn::Float(v) => v[i].map_or(Num::Empty, Num::Value),
            NumColumn::Cells(v) => v[i].clone(),
        }
    }
}

/// Where the data rows of a file are, for messages.
#[derive(Debug)]
pub enum Locs {
    /// Parquet: data row `i` (0-based) is [`Loc::Row`]`(i + 1)`.
    Rows,
    /// CSV: the line of every record, counted from the file's bytes the first time one is asked
    /// for (a file without a problem to report never pays for it). `None` when the file could
    /// not be read again or its records did not match the rows read; rows are then numbered as
    /// [`Loc::Row`].
    Lines { path: PathBuf, rows: usize, kept: Option<Vec<usize>>, lines: OnceLock<Option<Vec<u64>>> },
    /// Given by the caller, one per row.
    Given(Vec<Loc>),
}

impl Locs {
    /// The rows of a CSV file read by polars (`rows` of them).
    pub fn csv(path: &Path, rows: usize) -> Locs {
        Locs::Lines { path: path.to_path_buf(), rows, kept: None, lines: OnceLock::new() }
    }

    /// Location of data row `i` (0-based).
    pub fn loc(&self, i: usize) -> Loc {
        match self {
            Locs::Rows => Loc::Row(i as u64 + 1),
            Locs::Given(v) => v[i],
            Locs::Lines { path, rows, kept, lines } => {
                let i = kept.as_ref().map_or(i, |k| k[i]);
                let lines = lines.get_or_init(|| {
                    let bytes = std::fs::read(path).ok()?;
                    let l = record_lines(&bytes);
                    (l.len() == *rows).then_some(l)
                });
                match lines {
                    Some(l) => Loc::Line(l[i]),
                    None => Loc::Row(i as u64 + 1),
                }
            }
        }
    }
}

/// A file read for a set of roles, column by column.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub headers: Vec<String>,
    /// Columns used, in the order of the requested roles (id first).
    pub columns: Vec<UsedColumn>,
    /// The id of every data row (`columns[0]`), surrounding spaces removed; an empty cell or a
    /// null is the empty id. One chunk, no nulls.
    pub ids: StringChunked,
    /// The numeric columns `columns[1..]`, in order, each as long as `ids`.
    pub values: Vec<NumColumn>,
    pub locs: Locs,
    /// CSV records whose every column read is empty but which are not blank lines (`,,,`): not
    /// among the rows above (polars reads them as nulls, like blank lines), reported by the join
    /// as rows without an id. Ascending.
    pub empty_rows: Vec<Loc>,
}

impl Loaded {
    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Id of data row `i` (0-based).
    pub fn id(&self, i: usize) -> &str {
        self.ids.get(i).unwrap_or("")
    }
}

/// Error reading a predictions or ground-truth file. Each names the file (and row/column when
/// the problem is local).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, {loc}: {source}")]
    Csv { path: PathBuf, loc: Loc, source: csv::Error },
    /// The CSV or Parquet reader failed on the file (malformed CSV, invalid UTF-8, a corrupt
    /// Parquet file); polars' message names the column where it knows it.
    #[error("{path}: {source}")]
    Polars { path: PathBuf, source: PolarsError },
    #[error("{path}: column `{column}`: {source}")]
    Column { path: PathBuf, column: String, source: PolarsError },
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
        let schema = parquet_reader(path)?.schema().map_err(|source| polars_err(path, source))?;
        Ok(schema.iter_names().map(|n| n.to_string()).collect())
    } else {
        // The header line alone, by the csv crate: its cells are cleaned of a BOM, spaces and
        // stray quotes before detection, and the polars reader is then given positions.
        let f = std::fs::File::open(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
        let mut rd = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(f);
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

fn polars_err(path: &Path, source: PolarsError) -> ReadError {
    ReadError::Polars { path: path.to_path_buf(), source }
}

fn parquet_reader(path: &Path) -> Result<ParquetReader<std::fs::File>, ReadError> {
    let f = std::fs::File::open(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    Ok(ParquetReader::new(f))
}

/// Read the id column and the numeric columns `columns[1..]` (already resolved; `columns[0]` is
/// the id) of a CSV or Parquet file with polars' multi-threaded readers, only those columns.
pub fn read_columns(path: &Path, headers: Vec<String>, columns: Vec<UsedColumn>) -> Result<Loaded, ReadError> {
    // Positions read, ascending; the frame holds them in this order.
    let mut proj: Vec<usize> = columns.iter().map(|c| c.index).collect();
    proj.sort_unstable();
    proj.dedup();
    let mut empty_rows = Vec::new();
    let (df, locs) = if is_parquet(path) {
        let df = parquet_reader(path)?
            .with_projection(Some(proj.clone()))
            .finish()
            .map_err(|source| polars_err(path, source))?;
        (df, Locs::Rows)
    } else {
        let df = read_csv(path, headers.len(), &proj, &columns)?;
        let rows = df.height();
        let (df, kept) = drop_blank_rows(df).map_err(|source| polars_err(path, source))?;
        let lines = OnceLock::new();
        if let Some(k) = &kept {
            // The file's record lines, read once here: for the rows left out, and for locations.
            let read = std::fs::read(path).ok().map(|b| record_lines_blank(&b)).filter(|(l, _)| l.len() == rows);
            empty_rows = rows_not_blank(read.as_ref(), rows, k);
            let _ = lines.set(read.map(|(l, _)| l));
        }
        (df, Locs::Lines { path: path.to_path_buf(), rows, kept, lines })
    };
    let col = |c: &UsedColumn| {
        let at = proj.binary_search(&c.index).expect("every used column is projected");
        df.columns()[at].as_materialized_series()
    };
    let column_err = |c: &UsedColumn| {
        let column = c.header.clone();
        move |source| ReadError::Column { path: path.to_path_buf(), column, source }
    };
    let ids = id_column(col(&columns[0])).map_err(column_err(&columns[0]))?;
    let values = columns[1..]
        .iter()
        .map(|c| num_column(col(c)).map_err(column_err(c)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Loaded { path: path.to_path_buf(), headers, columns, ids, values, locs, empty_rows })
}

/// The records [`drop_blank_rows`] left out (every record not in `kept`, of `rows`) that are not
/// blank lines: rows such as `,,,` or with text only in columns not read, which the csv crate
/// read as rows without an id. Their lines, from [`record_lines_blank`]; when those do not match the
/// records read (`lines` is `None`), every left-out record is returned by its record number.
fn rows_not_blank(lines: Option<&(Vec<u64>, Vec<bool>)>, rows: usize, kept: &[usize]) -> Vec<Loc> {
    let mut is_kept = vec![false; rows];
    for &k in kept {
        is_kept[k] = true;
    }
    (0..rows)
        .filter(|i| !is_kept[*i])
        .filter_map(|i| match lines {
            Some((l, blank)) => (!blank[i]).then_some(Loc::Line(l[i])),
            None => Some(Loc::Row(i as u64 + 1)),
        })
        .collect()
}

/// Name of the `i`-th column in the frames read here (positions, not the file's header cells,
/// which may repeat or be empty).
fn position_name(i: usize) -> PlSmallStr {
    format!("#{i}").into()
}

/// Read the projected positions of a CSV ([`csv_options`]). Numeric columns are first read as
/// Float64 (polars parses them in parallel); a file where one such cell is not a number to
/// polars is read again with them as text, which [`Num::parse`] reads cell by cell.
fn read_csv(path: &Path, n_cols: usize, proj: &[usize], columns: &[UsedColumn]) -> Result<DataFrame, ReadError> {
    let read = |numbers_as_float: bool| {
        let numeric = |i: usize| i != columns[0].index && columns[1..].iter().any(|c| c.index == i);
        let dtype = |i: usize| if numeric(i) && numbers_as_float { DataType::Float64 } else { DataType::String };
        csv_options(n_cols, proj, dtype).try_into_reader_with_file_path(Some(path.to_path_buf()))?.finish()
    };
    read(true).or_else(|_| read(false)).map_err(|source| polars_err(path, source))
}

/// Columns at positions `at` of a CSV file of `n_cols` columns, every one as text (nulls for
/// empty cells), one chunk each, in the order of `at`.
pub fn text_columns(path: &Path, n_cols: usize, at: &[usize]) -> PolarsResult<Vec<StringChunked>> {
    let mut proj = at.to_vec();
    proj.sort_unstable();
    proj.dedup();
    let df = csv_options(n_cols, &proj, |_| DataType::String)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()?;
    at.iter()
        .map(|i| {
            let c = &df.columns()[proj.binary_search(i).expect("projected")];
            Ok(c.as_materialized_series().str()?.rechunk().into_owned())
        })
        .collect()
}

/// Options of the CSV reads here: the header line skipped and every column named by its
/// position with the type `dtype(position)`, only the positions `proj` (ascending) read, ragged
/// rows as the csv crate's flexible mode reads them (short rows: empty cells; long rows: extra
/// cells ignored), a file without data rows an empty frame.
fn csv_options(n_cols: usize, proj: &[usize], dtype: impl Fn(usize) -> DataType) -> CsvReadOptions {
    let mut schema = Schema::with_capacity(n_cols);
    for i in 0..n_cols {
        schema.with_column(position_name(i), dtype(i));
    }
    CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(schema)))
        .with_projection(Some(Arc::new(proj.to_vec())))
        .with_raise_if_empty(false)
        .map_parse_options(|o| o.with_truncate_ragged_lines(true))
}

/// Rows where every column read is null: blank lines, which polars reads as rows and the csv
/// crate (and so georag before polars) skips. Returns the other rows and, when some were
/// dropped, the record index of each row kept.
fn drop_blank_rows(df: DataFrame) -> PolarsResult<(DataFrame, Option<Vec<usize>>)> {
    if df.columns().iter().any(|c| c.null_count() == 0) {
        return Ok((df, None));
    }
    let mut blank = vec![true; df.height()];
    for c in df.columns() {
        let s = c.as_materialized_series();
        for (b, n) in blank.iter_mut().zip(s.is_null().iter()) {
            *b &= n.unwrap_or(false);
        }
    }
    if !blank.iter().any(|b| *b) {
        return Ok((df, None));
    }
    let kept: Vec<usize> = (0..blank.len()).filter(|i| !blank[*i]).collect();
    let mask: BooleanChunked = blank.iter().map(|b| Some(!*b)).collect();
    Ok((df.filter(&mask)?, Some(kept)))
}

/// Ids as text (integers and other types cast), trimmed, nulls as the empty id, one chunk.
fn id_column(s: &Series) -> PolarsResult<StringChunked> {
    let s = s.cast(&DataType::String)?;
    let ca = s.str()?.rechunk().into_owned();
    let clean = ca.null_count() == 0 && ca.iter().all(|v| v.is_none_or(|t| t.trim().len() == t.len()));
    if clean {
        return Ok(ca);
    }
    Ok(StringChunked::from_iter_values(ca.name().clone(), ca.iter().map(|v| v.unwrap_or("").trim())))
}

/// A numeric column: text columns (CSV read as text, Parquet string or dictionary columns) are
/// parsed cell by cell in parallel; any other type is cast to Float64 (an impossible cast is an
/// error naming the column).
fn num_column(s: &Series) -> PolarsResult<NumColumn> {
    let dt = s.dtype();
    if dt.is_string() || dt.is_categorical() || dt.is_enum() {
        let s = s.cast(&DataType::String)?;
        let cells: Vec<Option<&str>> = s.str()?.iter().collect();
        return Ok(NumColumn::Cells(cells.par_iter().map(|c| c.map_or(Num::Empty, Num::parse)).collect()));
    }
    let f = s.strict_cast(&DataType::Float64)?;
    Ok(NumColumn::Float(f.f64()?.iter().collect()))
}

/// 1-based line of every data record of a CSV file (the header is line 1), as polars splits
/// records: a quoted field may span lines, and a blank line is a record (of nulls, dropped later
/// by [`drop_blank_rows`]); a final line end closes the last record.
fn record_lines(bytes: &[u8]) -> Vec<u64> {
    record_lines_blank(bytes).0
}

/// [`record_lines`], and whether each record is a blank line (no byte but its line end).
fn record_lines_blank(bytes: &[u8]) -> (Vec<u64>, Vec<bool>) {
    let mut out = Vec::new();
    let mut blank = Vec::new();
    let mut line = 1u64;
    let mut in_quotes = false;
    // Whether the current record has any byte yet, and the line it started on.
    let mut started = false;
    let mut start_line = 1u64;
    let mut header = true;
    for &b in bytes {
        if !started && !in_quotes && b == b'\n' {
            if !header {
                out.push(line);
                blank.push(true);
            }
            header = false;
            line += 1;
            continue;
        }
        if !started && !in_quotes && b == b'\r' {
            continue;
        }
        if !started {
            started = true;
            start_line = line;
        }
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' => {
                line += 1;
                if !in_quotes {
                    if !header {
                        out.push(start_line);
                        blank.push(false);
                    }
                    header = false;
                    started = false;
                }
            }
            _ => {}
        }
    }
    if started && !header {
        out.push(start_line);
        blank.push(false);
    }
    (out, blank)
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
