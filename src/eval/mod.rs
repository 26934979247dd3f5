//! `georag eval`: score a per-image predictions file (from any project) against ground truth.
//!
//! Invariants:
//! - the evaluated set is the ground-truth list: an image without a prediction row, with an
//!   empty or non-numeric prediction cell, or with an out-of-range coordinate is a failure with
//!   a status ([`Status::Missing`], [`Status::Unparseable`], [`Status::OutOfRange`]) counted under
//!   the failure policy — never dropped silently, never clamped;
//! - ground-truth rows that cannot be used (empty/invalid coordinates, |lat| > 90 as from swapped
//!   columns, duplicate ids) are left out of the evaluated set and reported with their rows
//!   named; (0, 0) ground truth (Flickr's "no location") is kept and flagged;
//! - per-row problems are data (statuses and [`Issue`]s), not errors.

pub mod compare;
pub mod join;
pub mod published;
pub mod read;
pub mod report_cmd;
pub mod sweep_report;

use crate::metrics::{Convention, DistanceModel, FailurePolicy, MetricsError, MetricsFile, MetricsRow, ThresholdOp};
use crate::record::PredictionRecord;
use crate::report::{self, MethodResult, ReportError, ReportExtras, ReportInput};
use crate::util::atomic::{self, AtomicWriteError};
use polars::prelude::PolarsError;
use read::{Loaded, Loc, ReadError, Role, UsedColumn};
use std::fmt;
use std::path::{Path, PathBuf};

pub use join::{Cells, Side, build_records, join};
pub use compare::{CompareArgs, CompareError, CompareOutcome, run_compare};
pub use report_cmd::{ReportArgs, ReportCmdError, ReportCmdOutcome, run_report};

/// Arguments of `georag eval`.
#[derive(clap::Args, Clone, Debug)]
pub struct EvalArgs {
    /// Per-image predictions (CSV, or Parquet by the `.parquet` extension).
    #[arg(long)]
    pub predictions: PathBuf,
    /// Ground truth (CSV/Parquet), joined by id. Without it, truth columns are read from the
    /// predictions file.
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Method name for tables (default: the predictions file name).
    #[arg(long)]
    pub method: Option<String>,
    /// Dataset name for tables (default: the ground-truth file name).
    #[arg(long)]
    pub dataset: Option<String>,
    /// `haversine` (R = 6371 km), `haversine:RADIUS_KM` or `geodesic` (WGS-84, Karney).
    #[arg(long, default_value = "haversine")]
    pub distance: DistanceModel,
    /// Hit when distance `lt` (<) or `le` (<=) the threshold.
    #[arg(long, default_value = "lt", value_parser = parse_op)]
    pub threshold_op: ThresholdOp,
    /// Failed predictions: `miss` (in the denominator), `drop` (excluded), `zero` (scored as (0, 0)).
    #[arg(long, default_value = "miss")]
    pub failures: FailurePolicy,
    /// Thresholds in km, comma-separated.
    #[arg(long, default_value = "1,25,200,750,2500")]
    pub thresholds: String,
    /// Id column (both files); a name or `#INDEX` (0-based).
    #[arg(long)]
    pub id_col: Option<String>,
    /// Id column of the ground-truth file, when it differs from --id-col.
    #[arg(long)]
    pub gt_id_col: Option<String>,
    /// Ground-truth latitude column.
    #[arg(long)]
    pub lat_col: Option<String>,
    /// Ground-truth longitude column.
    #[arg(long)]
    pub lon_col: Option<String>,
    /// Predicted latitude column.
    #[arg(long)]
    pub pred_lat_col: Option<String>,
    /// Predicted longitude column.
    #[arg(long)]
    pub pred_lon_col: Option<String>,
    /// Published results (`configs/references/published.yaml`) to show beside the result.
    #[arg(long)]
    pub published: Option<PathBuf>,
    /// Write no plots (for CI): metrics, tables, per_image.csv and report.html as usual.
    #[arg(long)]
    pub no_plots: bool,
    /// Skip the per-region analysis (accuracy by continent and country of the ground truth,
    /// right-country share, `regions.csv` / `regions.json`, the country map).
    #[arg(long)]
    pub no_regions: bool,
    /// `REPRODUCED=PUBLISHED`: the published row the Δ column compares the method with.
    #[arg(long = "match", value_name = "REPRODUCED=PUBLISHED")]
    pub matches: Vec<String>,
}

/// Parse `lt`/`<` or `le`/`<=`.
pub fn parse_op(s: &str) -> Result<ThresholdOp, String> {
    match s {
        "lt" | "<" => Ok(ThresholdOp::Lt),
        "le" | "<=" => Ok(ThresholdOp::Le),
        _ => Err(format!("unknown threshold operator `{s}`: expected lt or le")),
    }
}

/// Parse a comma-separated list of positive thresholds (km), sorted and de-duplicated.
pub fn parse_thresholds(s: &str) -> Result<Vec<f64>, EvalError> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<f64>() {
            Ok(t) if t.is_finite() && t > 0.0 => v.push(t),
            _ => return Err(EvalError::Thresholds(format!("`{part}` is not a positive number of km"))),
        }
    }
    if v.is_empty() {
        return Err(EvalError::Thresholds("no thresholds given".into()));
    }
    v.sort_by(f64::total_cmp);
    v.dedup();
    Ok(v)
}

/// Parse `A=B` pairs of `--match`.
pub fn parse_matches(m: &[String]) -> Result<Vec<(String, String)>, String> {
    m.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .ok_or_else(|| format!("--match `{s}`: expected REPRODUCED=PUBLISHED"))
        })
        .collect()
}

/// Kind of a data problem found while joining files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssueKind {
    /// Ground-truth row with an empty, non-numeric or out-of-range coordinate: not evaluated.
    GtInvalid,
    /// Ground truth at exactly (0, 0) (Flickr's "no location"): evaluated, flagged.
    GtNullIsland,
    /// A repeated id in the ground truth: the first row is used.
    GtDuplicate,
    /// Ground-truth row without an id: not evaluated.
    GtEmptyId,
    /// A repeated id in the predictions: the first row is used.
    PredDuplicate,
    /// A prediction whose id is not in the ground truth: ignored.
    PredUnknownId,
}

impl IssueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::GtInvalid => "ground_truth_invalid",
            IssueKind::GtNullIsland => "ground_truth_at_0_0",
            IssueKind::GtDuplicate => "ground_truth_duplicate_id",
            IssueKind::GtEmptyId => "ground_truth_empty_id",
            IssueKind::PredDuplicate => "prediction_duplicate_id",
            IssueKind::PredUnknownId => "prediction_id_not_in_ground_truth",
        }
    }
}

/// One data problem, naming the file, row and id.
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    pub kind: IssueKind,
    pub file: PathBuf,
    pub loc: Loc,
    pub id: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}: id `{}`: {}", self.file.display(), self.loc, self.id, self.message)
    }
}

/// Issues of a join, with summary helpers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    pub fn count(&self, kind: IssueKind) -> usize {
        self.0.iter().filter(|i| i.kind == kind).count()
    }
    pub fn of(&self, kind: IssueKind) -> impl Iterator<Item = &Issue> {
        self.0.iter().filter(move |i| i.kind == kind)
    }
    /// One line per kind: count and the first `max_named` offending rows.
    pub fn summary(&self, max_named: usize) -> Vec<String> {
        let mut kinds: Vec<IssueKind> = self.0.iter().map(|i| i.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
            .into_iter()
            .map(|k| {
                let n = self.count(k);
                let named: Vec<String> = self.of(k).take(max_named).map(|i| i.to_string()).collect();
                let more = if n > max_named { format!("; {} more in issues.csv", n - max_named) } else { String::new() };
                format!("{}: {n} row(s): {}{more}", k.as_str(), named.join("; "))
            })
            .collect()
    }
}

/// Error of `georag eval`.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("--thresholds: {0}")]
    Thresholds(String),
    #[error("{0}")]
    Usage(String),
    #[error("joining {gt} with {pred} by id: {source}")]
    Join { gt: PathBuf, pred: PathBuf, source: PolarsError },
    #[error("{path}: no ground-truth row could be evaluated ({issues} problem rows; first: {first})")]
    NoGroundTruth { path: PathBuf, issues: usize, first: String },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    #[error(transparent)]
    Published(#[from] published::PublishedError),
}

/// What `georag eval` produced.
#[derive(Clone, Debug)]
pub struct EvalOutcome {
    pub metrics: MetricsRow,
    pub records: Vec<PredictionRecord>,
    pub issues: Issues,
    /// How each column was chosen, e.g. "predictions: pred-lat = `PRED_LAT` (column 3, detected)".
    pub columns: Vec<String>,
    pub files: Vec<PathBuf>,
    /// Wall-clock seconds: reading the files, joining them, scoring, writing the outputs.
    pub timings_s: Timings,
}

/// Wall-clock seconds of the stages of `georag eval` (`std::time::Instant` around each).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    /// Headers, column detection and the polars reads of both files.
    pub read: f64,
    /// The id join and the records (coordinates checked, statuses).
    pub join: f64,
    pub score: f64,
    pub write: f64,
}

fn file_stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "unnamed".into())
}

fn need(path: &Path, headers: &[String], role: Role, explicit: Option<&str>) -> Result<UsedColumn, ReadError> {
    read::resolve(path, headers, role, explicit)?.ok_or_else(|| ReadError::NoColumn {
        path: path.to_path_buf(),
        role: role.name(),
        headers: headers.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", "),
    })
}

fn join_err(gt: &Path, pred: &Path) -> impl FnOnce(PolarsError) -> EvalError {
    let (gt, pred) = (gt.to_path_buf(), pred.to_path_buf());
    move |source| EvalError::Join { gt, pred, source }
}

/// Read the files named in `args` and join them (no scoring, no output).
pub fn load(args: &EvalArgs) -> Result<(Vec<PredictionRecord>, Issues, Vec<String>), EvalError> {
    load_timed(args, &mut Timings::default())
}

/// [`load`], with the seconds spent reading and joining recorded in `t`.
fn load_timed(args: &EvalArgs, t: &mut Timings) -> Result<(Vec<PredictionRecord>, Issues, Vec<String>), EvalError> {
    let t0 = std::time::Instant::now();
    let pp = &args.predictions;
    let ph = read::headers(pp)?;
    let pid = need(pp, &ph, Role::Id, args.id_col.as_deref())?;
    let mut columns = Vec::new();
    match &args.ground_truth {
        None => {
            let lat = need(pp, &ph, Role::Lat, args.lat_col.as_deref())?;
            let lon = need(pp, &ph, Role::Lon, args.lon_col.as_deref())?;
            let plat = need(pp, &ph, Role::PredLat, args.pred_lat_col.as_deref())?;
            let plon = need(pp, &ph, Role::PredLon, args.pred_lon_col.as_deref())?;
            let cols = vec![pid, lat, lon, plat, plon];
            columns.extend(cols.iter().map(|c| format!("{}: {c}", pp.display())));
            let l = read::read_columns(pp, ph, cols)?;
            let t1 = std::time::Instant::now();
            t.read = (t1 - t0).as_secs_f64();
            let (recs, issues) = join(&Side::of(&l, 0, 1), &Side::of(&l, 2, 3), true).map_err(join_err(pp, pp))?;
            t.join = t1.elapsed().as_secs_f64();
            Ok((recs, issues, columns))
        }
        Some(gp) => {
            let gh = read::headers(gp)?;
            let gid = need(gp, &gh, Role::Id, args.gt_id_col.as_deref().or(args.id_col.as_deref()))?;
            let lat = need(gp, &gh, Role::Lat, args.lat_col.as_deref())?;
            let lon = need(gp, &gh, Role::Lon, args.lon_col.as_deref())?;
            let plat = read::resolve(pp, &ph, Role::PredLat, args.pred_lat_col.as_deref())?;
            let plon = read::resolve(pp, &ph, Role::PredLon, args.pred_lon_col.as_deref())?;
            let (plat, plon) = match (plat, plon) {
                (Some(a), Some(b)) => (a, b),
                // A predictions file with plain lat/lon columns next to a separate ground truth:
                // those columns are the predictions (said in the column notes).
                _ => {
                    let mut a = need(pp, &ph, Role::Lat, args.pred_lat_col.as_deref())?;
                    let mut b = need(pp, &ph, Role::Lon, args.pred_lon_col.as_deref())?;
                    a.role = Role::PredLat;
                    b.role = Role::PredLon;
                    columns.push(format!(
                        "{}: no PRED_* columns; its `{}`/`{}` columns are read as the predictions",
                        pp.display(),
                        a.header,
                        b.header
                    ));
                    (a, b)
                }
            };
            let gcols = vec![gid, lat, lon];
            let pcols = vec![pid, plat, plon];
            columns.extend(gcols.iter().map(|c| format!("{}: {c}", gp.display())));
            columns.extend(pcols.iter().map(|c| format!("{}: {c}", pp.display())));
            let g: Loaded = read::read_columns(gp, gh, gcols)?;
            let p: Loaded = read::read_columns(pp, ph, pcols)?;
            let t1 = std::time::Instant::now();
            t.read = (t1 - t0).as_secs_f64();
            let (recs, issues) = join(&Side::of(&g, 0, 1), &Side::of(&p, 0, 1), false).map_err(join_err(gp, pp))?;
            t.join = t1.elapsed().as_secs_f64();
            Ok((recs, issues, columns))
        }
    }
}

/// Write `issues.csv` (kind, file, location, id, message).
pub fn write_issues(path: &Path, issues: &Issues) -> Result<(), AtomicWriteError> {
    atomic::write_with(path, |w| {
        let mut cw = csv::Writer::from_writer(w);
        cw.write_record(["kind", "file", "location", "id", "message"]).map_err(std::io::Error::other)?;
        for i in &issues.0 {
            cw.write_record([i.kind.as_str(), &i.file.display().to_string(), &i.loc.to_string(), &i.id, &i.message])
                .map_err(std::io::Error::other)?;
        }
        cw.flush()
    })
}

/// `georag eval`: read, join, score, and write `metrics.json`, `per_image.csv`, `issues.csv`,
/// `table.{md,csv,tex}`, `report.html` and `plots/` into `args.out`.
pub fn run_eval(args: &EvalArgs) -> Result<EvalOutcome, EvalError> {
    let thresholds_km = parse_thresholds(&args.thresholds)?;
    let aliases = parse_matches(&args.matches).map_err(EvalError::Usage)?;
    let published = args.published.as_deref().map(published::PublishedFile::read).transpose()?;
    let conv = Convention { distance: args.distance, threshold_op: args.threshold_op, failures: args.failures, thresholds_km };
    let mut timings_s = Timings::default();
    let (records, issues, columns) = load_timed(args, &mut timings_s)?;
    let gt_path = args.ground_truth.as_ref().unwrap_or(&args.predictions);
    if records.is_empty() {
        return Err(EvalError::NoGroundTruth {
            path: gt_path.clone(),
            issues: issues.0.len(),
            first: issues.0.first().map(|i| i.to_string()).unwrap_or_else(|| "the file has no data rows".into()),
        });
    }
    let method = args.method.clone().unwrap_or_else(|| file_stem(&args.predictions));
    let dataset = args.dataset.clone().unwrap_or_else(|| file_stem(gt_path));
    let t1 = std::time::Instant::now();
    let scored = crate::metrics::score_records(&records, &conv);
    let row = crate::metrics::summarize(&method, &dataset, &records, &scored, &conv);
    let score_s = t1.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();
    let metrics = MetricsFile::new(vec![row.clone()]);
    let out = &args.out;
    metrics.write(&out.join("metrics.json"))?;
    let mut files = vec![out.join("metrics.json")];
    write_issues(&out.join("issues.csv"), &issues)?;
    files.push(out.join("issues.csv"));

    let mut notes = vec![format!(
        "Scored by `georag eval` from {} against {}.",
        args.predictions.display(),
        gt_path.display()
    )];
    notes.push(format!("Columns: {}.", columns.join("; ")));
    let rejected = issues.count(IssueKind::GtInvalid) + issues.count(IssueKind::GtDuplicate) + issues.count(IssueKind::GtEmptyId);
    notes.push(format!(
        "Evaluated set: {} ground-truth images ({} ground-truth rows not evaluated, listed below and in issues.csv).",
        records.len(),
        rejected
    ));
    notes.extend(issues.summary(5));
    let results = vec![MethodResult { method, dataset, records }];
    let input = ReportInput { title: "georag eval", metrics: &metrics, results: &results, convention: &conv, notes };
    // The report reuses these per-image scores (its rows' convention is `conv`).
    let scored = [scored];
    let extras = ReportExtras {
        published: published.as_ref(),
        aliases: &aliases,
        per_image: true,
        no_plots: args.no_plots,
        scored: Some(&scored),
        regions: !args.no_regions,
        charts: &[],
    };
    let rep = report::write_report_with(out, &input, &extras)?;
    files.extend(rep.files);
    let records = results.into_iter().next().map(|r| r.records).unwrap_or_default();
    timings_s.score = score_s;
    timings_s.write = t2.elapsed().as_secs_f64();
    Ok(EvalOutcome { metrics: row, records, issues, columns, files, timings_s })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;
    use read::Num;

    fn cells<'a>(rows: &'a [(u64, &'a str, Num, Num)]) -> impl Iterator<Item = Cells<'a>> {
        rows.iter().map(|(l, id, a, b)| Cells { loc: Loc::Line(*l), id, lat: a, lon: b })
    }

    #[test]
    fn join_reports_statuses_and_issues() {
        use Num::*;
        let gt = vec![
            (2, "a", Value(10.0), Value(10.0)),
            (3, "b", Value(20.0), Value(20.0)),
            (4, "c", Value(0.0), Value(0.0)),
            (5, "d", Value(120.0), Value(40.0)),
            (6, "a", Value(1.0), Value(1.0)),
            (7, "e", Value(5.0), Value(5.0)),
            (8, "f", Empty, Value(5.0)),
        ];
        let pr = vec![
            (2, "a", Value(10.0), Value(10.0)),
            (3, "a", Value(11.0), Value(10.0)),
            (4, "b", Garbage("n/a".into()), Value(1.0)),
            (5, "c", Value(0.0), Value(200.0)),
            (6, "zz", Value(0.0), Value(0.0)),
        ];
        let (recs, issues) = build_records(Path::new("gt.csv"), cells(&gt), Path::new("p.csv"), cells(&pr)).unwrap();
        let st: Vec<(&str, Status)> = recs.iter().map(|r| (r.id.as_str(), r.status)).collect();
        assert_eq!(
            st,
            vec![("a", Status::Ok), ("b", Status::Unparseable), ("c", Status::OutOfRange), ("e", Status::Missing)]
        );
        assert_eq!(issues.count(IssueKind::GtInvalid), 2); // d (|lat| > 90), f (empty)
        assert_eq!(issues.count(IssueKind::GtDuplicate), 1);
        assert_eq!(issues.count(IssueKind::GtNullIsland), 1);
        assert_eq!(issues.count(IssueKind::PredDuplicate), 1);
        assert_eq!(issues.count(IssueKind::PredUnknownId), 1);
        let dup = issues.of(IssueKind::PredDuplicate).next().unwrap().to_string();
        assert!(dup.contains("p.csv, line 3: id `a`") && dup.contains("DIFFERENT"), "{dup}");
        let swapped = issues.of(IssueKind::GtInvalid).next().unwrap().to_string();
        assert!(swapped.contains("line 5") && swapped.contains("swapped"), "{swapped}");
    }

    #[test]
    fn thresholds_parse_strictly() {
        assert_eq!(parse_thresholds("25, 1,2500").unwrap(), vec![1.0, 25.0, 2500.0]);
        assert!(parse_thresholds("1,-5").is_err());
        assert!(parse_thresholds("").is_err());
        assert_eq!(parse_op("le").unwrap(), ThresholdOp::Le);
        assert_eq!(parse_matches(&["a=b".into()]).unwrap(), vec![("a".into(), "b".into())]);
    }
}
