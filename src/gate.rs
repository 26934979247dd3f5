//! The CI gate: compare a run's `metrics.json` with a committed baseline.
//!
//! Rule: every (method, dataset, threshold) accuracy of the baseline must be present in the
//! current metrics, computed under the same convention, and within `tolerance_pct` percentage
//! points. A drop beyond the tolerance is a regression; a rise beyond it also fails (the baseline
//! is stale and must be updated deliberately), with its own label.

use crate::metrics::{MetricsFile, MetricsRow};
use std::fmt::Write;

/// One line of the gate's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct GateLine {
    pub method: String,
    pub dataset: String,
    pub what: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Regression,
    Improvement,
    Missing,
    ConventionChanged,
}

/// The gate's result.
#[derive(Clone, Debug)]
pub struct GateReport {
    pub tolerance_pct: f64,
    pub lines: Vec<GateLine>,
}

impl GateReport {
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.verdict == Verdict::Pass)
    }

    /// A readable table of every comparison, failures first.
    pub fn render(&self) -> String {
        let mut lines = self.lines.clone();
        lines.sort_by_key(|l| l.verdict == Verdict::Pass);
        let mut s = String::new();
        let fmt = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "{:<28} {:<12} {:<10} {:>9} {:>9} {:>8}  verdict", "method", "dataset", "metric", "baseline", "current", "delta");
        for l in &lines {
            let delta = match (l.baseline, l.current) {
                (Some(b), Some(c)) => format!("{:+.2}", c - b),
                _ => "-".into(),
            };
            let verdict = match l.verdict {
                Verdict::Pass => "ok",
                Verdict::Regression => "REGRESSION",
                Verdict::Improvement => "IMPROVED (update the baseline)",
                Verdict::Missing => "MISSING",
                Verdict::ConventionChanged => "CONVENTION CHANGED",
            };
            let _ = writeln!(s, "{:<28} {:<12} {:<10} {:>9} {:>9} {:>8}  {verdict}", l.method, l.dataset, l.what, fmt(l.baseline), fmt(l.current), delta);
        }
        let failed = self.lines.iter().filter(|l| l.verdict != Verdict::Pass).count();
        let _ = writeln!(
            s,
            "{} of {} checks outside tolerance (accuracy in % of images, tolerance ±{} percentage points)",
            failed,
            self.lines.len(),
            self.tolerance_pct
        );
        s
    }
}

/// Compare `current` with `baseline`.
pub fn check(current: &MetricsFile, baseline: &MetricsFile, tolerance_pct: f64) -> GateReport {
    let mut lines = Vec::new();
    for b in &baseline.rows {
        let cur: Option<&MetricsRow> = current.rows.iter().find(|r| r.method == b.method && r.dataset == b.dataset);
        let line = |what: &str, baseline, current, verdict| GateLine {
            method: b.method.clone(),
            dataset: b.dataset.clone(),
            what: what.to_string(),
            baseline,
            current,
            verdict,
        };
        let Some(c) = cur else {
            lines.push(line("row", None, None, Verdict::Missing));
            continue;
        };
        if c.convention != b.convention {
            lines.push(line("convention", None, None, Verdict::ConventionChanged));
            continue;
        }
        if c.n_expected != b.n_expected {
            lines.push(line("n_expected", Some(b.n_expected as f64), Some(c.n_expected as f64), Verdict::ConventionChanged));
        }
        for (k, &bv) in &b.acc_pct {
            let what = format!("acc@{k}km");
            match c.acc_pct.get(k) {
                None => lines.push(line(&what, Some(bv), None, Verdict::Missing)),
                Some(&cv) => {
                    let verdict = if cv < bv - tolerance_pct {
                        Verdict::Regression
                    } else if cv > bv + tolerance_pct {
                        Verdict::Improvement
                    } else {
                        Verdict::Pass
                    };
                    lines.push(line(&what, Some(bv), Some(cv), verdict));
                }
            }
        }
    }
    GateReport { tolerance_pct, lines }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Convention, score};
    use crate::record::{LatLon, PredictionRecord};

    fn metrics(hit_share: usize) -> MetricsFile {
        let t = LatLon { lat: 10.0, lon: 10.0 };
        let recs: Vec<PredictionRecord> = (0..100)
            .map(|i| PredictionRecord::ok(format!("{i}"), t, if i < hit_share { t } else { LatLon { lat: -10.0, lon: -170.0 } }))
            .collect();
        MetricsFile::new(vec![score("nearest", "synthetic", &recs, &Convention::default())])
    }

    #[test]
    fn passes_on_equal_and_fails_beyond_tolerance() {
        let base = metrics(50);
        assert!(check(&base, &base, 0.0).passed());
        assert!(check(&metrics(49), &base, 1.0).passed());
        let r = check(&metrics(47), &base, 1.0);
        assert!(!r.passed());
        assert!(r.render().contains("REGRESSION"));
        assert!(check(&metrics(55), &base, 1.0).lines.iter().any(|l| l.verdict == Verdict::Improvement));
    }

    #[test]
    fn missing_rows_and_changed_conventions_fail() {
        let base = metrics(50);
        let empty = MetricsFile::new(vec![]);
        assert!(!check(&empty, &base, 5.0).passed());
        let mut le = metrics(50);
        le.rows[0].convention.threshold_op = "<=".into();
        let r = check(&le, &base, 5.0);
        assert_eq!(r.lines[0].verdict, Verdict::ConventionChanged);
    }
}
