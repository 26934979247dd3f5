//! `georag compare RUN_A RUN_B`: paired comparison of two runs on the same images.
//!
//! Both runs are re-scored from their `per_image.csv` coordinates under one convention (A's by
//! default), so a difference can never come from differing conventions. Per threshold it reports
//! both accuracies, the paired difference with a 95 % interval, McNemar's exact p-value on the
//! per-image hits, and a verdict that says when the difference is within noise.

use super::parse_op;
use crate::metrics::describe::thresholds_of;
use crate::metrics::paired::{McNemar, mcnemar};
use crate::metrics::{Convention, DistanceModel, FailurePolicy, MetricsFile, ThresholdOp, score_records};
use crate::report::MethodResult;
use crate::report::per_image::{self, PerImageError};
use crate::util::atomic::{self, AtomicWriteError};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Arguments of `georag compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    /// Run A: an output directory (with `per_image.csv`) or a `per_image.csv` file.
    pub run_a: PathBuf,
    /// Run B, likewise.
    pub run_b: PathBuf,
    /// Method of run A to compare, when it holds several.
    #[arg(long)]
    pub method_a: Option<String>,
    /// Method of run B to compare, when it holds several.
    #[arg(long)]
    pub method_b: Option<String>,
    /// Dataset to compare, when the runs hold several.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Override the distance model (default: A's, from its metrics.json).
    #[arg(long)]
    pub distance: Option<DistanceModel>,
    /// Override the threshold operator (`lt` or `le`).
    #[arg(long, value_parser = parse_op)]
    pub threshold_op: Option<ThresholdOp>,
    /// Override the failure policy (`miss`, `drop`, `zero`).
    #[arg(long)]
    pub failures: Option<FailurePolicy>,
    /// Override the thresholds (km, comma-separated).
    #[arg(long)]
    pub thresholds: Option<String>,
    /// Significance level of the verdict.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Write `compare.md` and `compare.json` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One threshold of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    pub threshold_km: f64,
    pub acc_a_pct: f64,
    pub acc_b_pct: f64,
    pub test: McNemar,
    pub verdict: String,
}

/// Result of `georag compare`.
#[derive(Clone, Debug, Serialize)]
pub struct CompareOutcome {
    pub method_a: String,
    pub method_b: String,
    pub dataset: String,
    /// Convention both runs were scored under.
    pub convention: String,
    /// Images paired (present and counted in both runs).
    pub n_paired: usize,
    /// Images only in A / only in B (not compared).
    pub only_a: usize,
    pub only_b: usize,
    pub rows: Vec<CompareRow>,
    /// The table as Markdown, with its footnote.
    pub markdown: String,
}

/// Error of `georag compare`.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    PerImage(#[from] PerImageError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("{path}: {message}")]
    Select { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("the runs have no image in common ({a} in A, {b} in B)")]
    Disjoint { a: usize, b: usize },
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

fn per_image_path(p: &Path) -> PathBuf {
    if p.is_dir() { p.join("per_image.csv") } else { p.to_path_buf() }
}

fn metrics_path(p: &Path) -> PathBuf {
    if p.is_dir() { p.join("metrics.json") } else { p.with_file_name("metrics.json") }
}

fn select(path: &Path, all: Vec<MethodResult>, method: Option<&str>, dataset: Option<&str>) -> Result<MethodResult, CompareError> {
    let names: Vec<String> = all.iter().map(|r| format!("{} on {}", r.method, r.dataset)).collect();
    let mut hits: Vec<MethodResult> = all
        .into_iter()
        .filter(|r| method.is_none_or(|m| r.method == m) && dataset.is_none_or(|d| r.dataset == d))
        .collect();
    match hits.len() {
        1 => Ok(hits.pop().expect("one")),
        0 => Err(CompareError::Select { path: path.to_path_buf(), message: format!("no matching method/dataset; it holds {}", names.join(", ")) }),
        _ => Err(CompareError::Select {
            path: path.to_path_buf(),
            message: format!("several results ({}); choose with --method-a/--method-b/--dataset", names.join(", ")),
        }),
    }
}

/// `georag compare`.
pub fn run_compare(args: &CompareArgs) -> Result<CompareOutcome, CompareError> {
    let pa = per_image_path(&args.run_a);
    let pb = per_image_path(&args.run_b);
    let a = select(&pa, per_image::read(&pa)?, args.method_a.as_deref(), args.dataset.as_deref())?;
    let b = select(&pb, per_image::read(&pb)?, args.method_b.as_deref(), args.dataset.as_deref())?;

    // Convention: A's metrics row if present, then flag overrides.
    let ma = metrics_path(&args.run_a);
    let mut conv = if ma.exists() {
        MetricsFile::read(&ma)?
            .rows
            .iter()
            .find(|r| r.method == a.method && r.dataset == a.dataset)
            .and_then(|r| r.convention.to_convention(thresholds_of(&r.acc_pct)).ok())
            .unwrap_or_default()
    } else {
        Convention::default()
    };
    if let Some(d) = args.distance {
        conv.distance = d;
    }
    if let Some(o) = args.threshold_op {
        conv.threshold_op = o;
    }
    if let Some(f) = args.failures {
        conv.failures = f;
    }
    if let Some(t) = &args.thresholds {
        conv.thresholds_km = super::parse_thresholds(t).map_err(|e| CompareError::Usage(e.to_string()))?;
    }
    compare_results(&a, &b, &conv, args.alpha, args.out.as_deref())
}

/// The verdict of McNemar's test at `alpha` for runs named `a` and `b`.
pub fn verdict(test: &McNemar, alpha: f64, a: &str, b: &str) -> String {
    if test.p_value >= alpha {
        format!("within noise (p = {:.3} >= {alpha})", test.p_value)
    } else if test.c > test.b {
        format!("{b} better (p = {:.2e} < {alpha})", test.p_value)
    } else {
        format!("{a} better (p = {:.2e} < {alpha})", test.p_value)
    }
}

/// Compare two results under `conv`; optionally write `compare.md` / `compare.json` into `out`.
pub fn compare_results(
    a: &MethodResult,
    b: &MethodResult,
    conv: &Convention,
    alpha: f64,
    out: Option<&Path>,
) -> Result<CompareOutcome, CompareError> {
    let sa = score_records(&a.records, conv);
    let sb = score_records(&b.records, conv);
    let index_b: HashMap<&str, usize> = b.records.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    let ids_a: HashMap<&str, ()> = a.records.iter().map(|r| (r.id.as_str(), ())).collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (i, r) in a.records.iter().enumerate() {
        if let Some(&j) = index_b.get(r.id.as_str()) {
            // Under `drop`, an image dropped by either run is not paired.
            if sa[i].counted && sb[j].counted {
                pairs.push((i, j));
            }
        }
    }
    let common = a.records.iter().filter(|r| index_b.contains_key(r.id.as_str())).count();
    let only_a = a.records.len() - common;
    let only_b = b.records.iter().filter(|r| !ids_a.contains_key(r.id.as_str())).count();
    if pairs.is_empty() {
        return Err(CompareError::Disjoint { a: a.records.len(), b: b.records.len() });
    }
    let rows: Vec<CompareRow> = conv
        .thresholds_km
        .iter()
        .map(|&t| {
            let hit = |d: Option<f64>| d.is_some_and(|d| conv.threshold_op.hit(d, t));
            let ha: Vec<bool> = pairs.iter().map(|&(i, _)| hit(sa[i].distance_km)).collect();
            let hb: Vec<bool> = pairs.iter().map(|&(_, j)| hit(sb[j].distance_km)).collect();
            let test = mcnemar(&ha, &hb);
            let n = test.n as f64;
            let verdict = verdict(&test, alpha, "A", "B");
            CompareRow {
                threshold_km: t,
                acc_a_pct: 100.0 * test.hits_a as f64 / n,
                acc_b_pct: 100.0 * test.hits_b as f64 / n,
                test,
                verdict,
            }
        })
        .collect();
    let dataset = if a.dataset == b.dataset { a.dataset.clone() } else { format!("{} / {}", a.dataset, b.dataset) };
    let mut md = format!("### {dataset}: A = {} vs B = {}\n\n", a.method, b.method);
    md.push_str("| Threshold | A (%) | B (%) | B − A (pp) [95 % CI] | A only | B only | McNemar p | Verdict |\n");
    md.push_str("| --: | --: | --: | --: | --: | --: | --: | :-- |\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} km | {:.2} | {:.2} | {:+.2} [{:+.2}, {:+.2}] | {} | {} | {:.4} | {} |",
            r.threshold_km,
            r.acc_a_pct,
            r.acc_b_pct,
            r.test.diff_pp,
            r.test.diff_ci95_pp[0],
            r.test.diff_ci95_pp[1],
            r.test.b,
            r.test.c,
            r.test.p_value,
            r.verdict
        );
    }
    let _ = writeln!(
        md,
        "\n1. Both runs re-scored from their per-image coordinates under one convention: {}.",
        conv.describe()
    );
    let _ = writeln!(
        md,
        "2. Paired images: {} (present in both runs{}); {only_a} only in A and {only_b} only in B are not compared.",
        pairs.len(),
        if conv.failures == FailurePolicy::Drop { " and counted by both under the drop policy" } else { "" }
    );
    let _ = writeln!(
        md,
        "3. A only / B only = images hit by one run and missed by the other. McNemar p = exact two-sided binomial test of A only vs B only (Binomial(A only + B only, 1/2)); \
         CI = Wald interval of the paired difference. Verdict at alpha = {alpha} per threshold, without correction for the {} thresholds tested.",
        rows.len()
    );
    let outcome = CompareOutcome {
        method_a: a.method.clone(),
        method_b: b.method.clone(),
        dataset,
        convention: conv.describe(),
        n_paired: pairs.len(),
        only_a,
        only_b,
        rows,
        markdown: md,
    };
    if let Some(dir) = out {
        atomic::write_bytes(&dir.join("compare.md"), outcome.markdown.as_bytes())?;
        atomic::write_json(&dir.join("compare.json"), &outcome)?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{LatLon, PredictionRecord, Status};

    fn result(method: &str, preds: &[Option<(f64, f64)>]) -> MethodResult {
        let t = LatLon::new(10.0, 10.0).unwrap();
        let records = preds
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Some((a, b)) => PredictionRecord::ok(format!("{i}"), t, LatLon::new(*a, *b).unwrap()),
                None => PredictionRecord::failed(format!("{i}"), t, Status::Missing),
            })
            .collect();
        MethodResult { method: method.into(), dataset: "d".into(), records }
    }

    #[test]
    fn identical_runs_are_within_noise_and_clear_wins_are_not() {
        let near = Some((10.0, 10.0));
        let far = Some((-10.0, -170.0));
        let a = result("A", &vec![far; 40]);
        let b = result("B", &vec![near; 40]);
        let conv = Convention { thresholds_km: vec![1.0], ..Default::default() };
        let same = compare_results(&a, &a, &conv, 0.05, None).unwrap();
        assert!(same.rows[0].verdict.starts_with("within noise"));
        assert_eq!(same.rows[0].test.p_value, 1.0);
        let diff = compare_results(&a, &b, &conv, 0.05, None).unwrap();
        assert_eq!((diff.rows[0].test.b, diff.rows[0].test.c), (0, 40));
        assert!(diff.rows[0].verdict.starts_with("B better"), "{}", diff.rows[0].verdict);
        assert!((diff.rows[0].acc_b_pct - 100.0).abs() < 1e-12);
        assert!(diff.markdown.contains("McNemar"));
    }

    #[test]
    fn drop_policy_pairs_only_images_counted_by_both() {
        let a = result("A", &[Some((10.0, 10.0)), None, Some((10.0, 10.0))]);
        let b = result("B", &[Some((10.0, 10.0)), Some((10.0, 10.0)), None]);
        let conv = Convention { failures: FailurePolicy::Drop, thresholds_km: vec![1.0], ..Default::default() };
        let o = compare_results(&a, &b, &conv, 0.05, None).unwrap();
        assert_eq!(o.n_paired, 1);
        let miss = compare_results(&a, &b, &Convention { thresholds_km: vec![1.0], ..Default::default() }, 0.05, None).unwrap();
        assert_eq!(miss.n_paired, 3);
    }
}
