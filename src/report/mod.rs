//! Reports: paper-style tables, self-contained HTML, plots.

use crate::metrics::{Convention, MetricsFile};
use crate::record::PredictionRecord;
use std::path::{Path, PathBuf};

/// The per-image results of one method on one dataset.
#[derive(Clone, Debug)]
pub struct MethodResult {
    pub method: String,
    pub dataset: String,
    pub records: Vec<PredictionRecord>,
}

/// Everything a run report shows.
pub struct ReportInput<'a> {
    pub title: &'a str,
    pub metrics: &'a MetricsFile,
    pub results: &'a [MethodResult],
    pub convention: &'a Convention,
    /// Free lines shown under the table (run facts: fingerprints, stage timings, failures).
    pub notes: Vec<String>,
}

/// Error writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Write(#[from] crate::util::atomic::AtomicWriteError),
    #[error("plotting {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

/// Write `table.md`, `report.html` and `plots/*.{png,svg}` into `out`.
pub fn write_report(out: &Path, input: &ReportInput) -> Result<(), ReportError> {
    let _ = (out, input);
    unimplemented!("report: in progress")
}
