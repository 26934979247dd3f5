//! `georag report`: paper-style tables (Markdown, CSV, LaTeX, HTML) and plots from one or more
//! runs, with the published rows beside the reproduced ones.

use crate::eval::published::{PublishedError, PublishedFile};
use crate::metrics::describe::thresholds_of;
use crate::metrics::{Convention, MetricsError, MetricsFile};
use crate::report::per_image::{self, PerImageError};
use crate::report::{self, MethodResult, ReportError, ReportExtras, ReportInput};
use std::path::{Path, PathBuf};

/// Default location of the published figures, relative to the working directory.
pub const DEFAULT_PUBLISHED: &str = "configs/references/published.yaml";

/// Arguments of `georag report`.
#[derive(clap::Args, Clone, Debug)]
pub struct ReportArgs {
    /// Run directories (with `metrics.json`, optionally `per_image.csv`) or `metrics.json` files;
    /// or one sweep directory (with `sweep.json`): the effect of each swept setting.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Published figures (default: `configs/references/published.yaml` when it exists).
    #[arg(long)]
    pub published: Option<PathBuf>,
    /// Show no published rows.
    #[arg(long, conflicts_with = "published")]
    pub no_published: bool,
    /// `REPRODUCED=PUBLISHED`: the published row the Δ column compares a method with.
    #[arg(long = "match", value_name = "REPRODUCED=PUBLISHED")]
    pub matches: Vec<String>,
    /// Report title.
    #[arg(long, default_value = "georag report")]
    pub title: String,
    /// Significance level of the paired tests against a sweep's baseline (a sweep directory).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
}

/// What `georag report` wrote.
#[derive(Clone, Debug)]
pub struct ReportCmdOutcome {
    pub files: Vec<PathBuf>,
    /// Published file used, if any.
    pub published: Option<PathBuf>,
    pub notes: Vec<String>,
}

/// Error of `georag report`.
#[derive(Debug, thiserror::Error)]
pub enum ReportCmdError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    PerImage(#[from] PerImageError),
    #[error(transparent)]
    Published(#[from] PublishedError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Sweep(#[from] super::sweep_report::SweepReportError),
    #[error("{0}")]
    Usage(String),
}

/// `georag report`.
pub fn run_report(args: &ReportArgs) -> Result<ReportCmdOutcome, ReportCmdError> {
    if let [dir] = args.inputs.as_slice() {
        if super::sweep_report::is_sweep(dir) {
            let r = super::sweep_report::sweep_report(dir, &args.out, args.alpha)?;
            return Ok(ReportCmdOutcome { files: r.files, published: None, notes: r.notes });
        }
    }
    let aliases = super::parse_matches(&args.matches).map_err(ReportCmdError::Usage)?;
    let published_path = match (&args.published, args.no_published) {
        (_, true) => None,
        (Some(p), false) => Some(p.clone()),
        (None, false) => Some(PathBuf::from(DEFAULT_PUBLISHED)).filter(|p| p.exists()),
    };
    let published = published_path.as_deref().map(PublishedFile::read).transpose()?;
    let mut rows = Vec::new();
    let mut results: Vec<MethodResult> = Vec::new();
    let mut notes = Vec::new();
    for input in &args.inputs {
        let (mpath, dir) = if input.is_dir() {
            (input.join("metrics.json"), input.clone())
        } else {
            (input.clone(), input.parent().map(Path::to_path_buf).unwrap_or_default())
        };
        let m = MetricsFile::read(&mpath)?;
        notes.push(format!("{}: {} metrics row(s).", mpath.display(), m.rows.len()));
        rows.extend(m.rows);
        let pi = dir.join("per_image.csv");
        if pi.exists() {
            results.extend(per_image::read(&pi)?);
        } else {
            notes.push(format!("{}: no per_image.csv beside it; error CDF and map are not drawn for its rows.", dir.display()));
        }
    }
    match &published_path {
        Some(p) => notes.push(format!("Published rows from {}.", p.display())),
        None => notes.push("No published rows (no published file given or found).".into()),
    }
    let metrics = MetricsFile::new(rows);
    let convention = metrics
        .rows
        .first()
        .and_then(|r| r.convention.to_convention(thresholds_of(&r.acc_pct)).ok())
        .unwrap_or_else(Convention::default);
    let input = ReportInput { title: &args.title, metrics: &metrics, results: &results, convention: &convention, notes };
    let extras = ReportExtras { published: published.as_ref(), aliases: &aliases, ..Default::default() };
    let out = report::write_report_with(&args.out, &input, &extras)?;
    Ok(ReportCmdOutcome { files: out.files, published: published_path, notes: out.notes })
}
