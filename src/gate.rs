//! The CI gate: compare a run's `metrics.json` with a committed baseline.
//!
//! Rule: every (method, dataset, threshold) accuracy of the baseline must be present in the
//! current metrics, computed under the same convention, and within the tolerance:
//! - [`Tolerance::Points`]: within X percentage points (live runs);
//! - [`Tolerance::Ci95`]: inside the baseline's 95 % Wilson interval (live runs);
//! - [`Tolerance::Exact`]: equal to the bit, and so are n, median, mean and GeoScore (replayed
//!   runs, which must reproduce a recorded run exactly); with both runs' `per_image.csv`, every
//!   image whose prediction or status changed is listed too.
//!
//! A drop beyond the tolerance is a regression; a rise beyond it also fails (the baseline is
//! stale and must be updated deliberately), with its own label. `--min acc_25km=X` floors fail
//! any row below X % whatever the baseline says.

use crate::metrics::{MetricsFile, MetricsRow};
use crate::report::MethodResult;
use std::fmt::Write;

/// How far the current accuracy may be from the baseline's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Absolute percentage points.
    Points(f64),
    /// Inside the baseline row's 95 % interval.
    Ci95,
    /// No difference at all.
    Exact,
}

impl Tolerance {
    pub fn describe(&self) -> String {
        match self {
            Tolerance::Points(x) => format!("tolerance ±{x} percentage points"),
            Tolerance::Ci95 => "tolerance: the baseline's 95 % Wilson interval".into(),
            Tolerance::Exact => "exact: any difference fails".into(),
        }
    }
}

/// A floor: every row's accuracy at `threshold_km` must be at least `min_pct`.
#[derive(Clone, Debug, PartialEq)]
pub struct Floor {
    pub threshold_key: String,
    pub min_pct: f64,
}

/// Parse `acc_25km=40.5` (the `--min` syntax).
pub fn parse_floor(arg: &str) -> Result<Floor, String> {
    let (k, v) = arg.split_once('=').ok_or_else(|| format!("--min {arg}: expected acc_<THRESHOLD>km=PERCENT, e.g. acc_25km=40"))?;
    let t = k.strip_prefix("acc_").and_then(|r| r.strip_suffix("km")).ok_or_else(|| format!("--min {arg}: the key must look like acc_25km"))?;
    let t: f64 = t.parse().map_err(|_| format!("--min {arg}: `{t}` is not a threshold in km"))?;
    let min_pct: f64 = v.parse().map_err(|_| format!("--min {arg}: `{v}` is not a percentage"))?;
    Ok(Floor { threshold_key: crate::metrics::threshold_key(t), min_pct })
}

/// An image whose outcome differs between the baseline and the current run.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageChange {
    pub method: String,
    pub dataset: String,
    pub id: String,
    pub baseline: String,
    pub current: String,
}

/// Every image whose prediction or status differs (same method, dataset and id), and images
/// present on one side only.
pub fn image_changes(current: &[MethodResult], baseline: &[MethodResult]) -> Vec<ImageChange> {
    use std::collections::BTreeMap;
    let key = |r: &MethodResult| (r.method.clone(), r.dataset.clone());
    let show = |p: &crate::record::PredictionRecord| match p.pred {
        Some(c) => format!("{} {}", p.status, c),
        None => p.status.to_string(),
    };
    let mut out = Vec::new();
    let cur: BTreeMap<(String, String), &MethodResult> = current.iter().map(|r| (key(r), r)).collect();
    for b in baseline {
        let Some(c) = cur.get(&key(b)) else { continue };
        let ci: BTreeMap<&str, &crate::record::PredictionRecord> = c.records.iter().map(|p| (p.id.as_str(), p)).collect();
        for bp in &b.records {
            let now = ci.get(bp.id.as_str());
            if now.is_none_or(|cp| cp.pred != bp.pred || cp.status != bp.status) {
                out.push(ImageChange {
                    method: b.method.clone(),
                    dataset: b.dataset.clone(),
                    id: bp.id.clone(),
                    baseline: show(bp),
                    current: now.map(|cp| show(cp)).unwrap_or_else(|| "absent".into()),
                });
            }
        }
    }
    out
}

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
    /// Exact mode: any difference.
    Changed,
    /// Below a `--min` floor.
    BelowFloor,
}

/// The gate's result.
#[derive(Clone, Debug)]
pub struct GateReport {
    pub tolerance: Tolerance,
    pub lines: Vec<GateLine>,
    /// Exact mode with both per_image.csv files: the images that changed.
    pub image_changes: Vec<ImageChange>,
}

impl GateReport {
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.verdict == Verdict::Pass) && self.image_changes.is_empty()
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
                Verdict::Changed => "CHANGED (exact mode)",
                Verdict::BelowFloor => "BELOW FLOOR",
            };
            let _ = writeln!(s, "{:<28} {:<12} {:<10} {:>9} {:>9} {:>8}  {verdict}", l.method, l.dataset, l.what, fmt(l.baseline), fmt(l.current), delta);
        }
        if !self.image_changes.is_empty() {
            let _ = writeln!(s, "{} images changed (per_image.csv of baseline vs current):", self.image_changes.len());
            for c in self.image_changes.iter().take(50) {
                let _ = writeln!(s, "  {} / {} / {}: {} -> {}", c.method, c.dataset, c.id, c.baseline, c.current);
            }
            if self.image_changes.len() > 50 {
                let _ = writeln!(s, "  ... and {} more", self.image_changes.len() - 50);
            }
        }
        let failed = self.lines.iter().filter(|l| l.verdict != Verdict::Pass).count();
        let _ = writeln!(
            s,
            "{} of {} checks failed (accuracy in % of the scored images; {}); {} changed images",
            failed,
            self.lines.len(),
            self.tolerance.describe(),
            self.image_changes.len()
        );
        s
    }
}

/// Compare `current` with `baseline` within `tolerance_pct` percentage points.
pub fn check(current: &MetricsFile, baseline: &MetricsFile, tolerance_pct: f64) -> GateReport {
    check_with(current, baseline, Tolerance::Points(tolerance_pct), &[])
}

/// Compare `current` with `baseline` under `tolerance`, then apply the `floors` to every current row.
pub fn check_with(current: &MetricsFile, baseline: &MetricsFile, tolerance: Tolerance, floors: &[Floor]) -> GateReport {
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
                    let (lo, hi) = match tolerance {
                        Tolerance::Points(x) => (bv - x, bv + x),
                        Tolerance::Exact => (bv, bv),
                        Tolerance::Ci95 => b.acc_ci95_pct.get(k).map(|c| (c[0], c[1])).unwrap_or((bv, bv)),
                    };
                    let verdict = if tolerance == Tolerance::Exact && cv != bv {
                        Verdict::Changed
                    } else if cv < lo {
                        Verdict::Regression
                    } else if cv > hi {
                        Verdict::Improvement
                    } else {
                        Verdict::Pass
                    };
                    lines.push(line(&what, Some(bv), Some(cv), verdict));
                }
            }
        }
        if tolerance == Tolerance::Exact {
            let opt = |x: Option<f64>| x.unwrap_or(f64::NAN);
            for (what, bv, cv) in [
                ("n_scored", b.n_scored as f64, c.n_scored as f64),
                ("n_answered", b.n_answered as f64, c.n_answered as f64),
                ("median_km", opt(b.median_km), opt(c.median_km)),
                ("mean_km", opt(b.mean_km), opt(c.mean_km)),
                ("geoscore", b.geoscore, c.geoscore),
            ] {
                let same = bv == cv || (bv.is_nan() && cv.is_nan());
                lines.push(line(what, Some(bv), Some(cv), if same { Verdict::Pass } else { Verdict::Changed }));
            }
        }
    }
    for f in floors {
        for c in &current.rows {
            let what = format!("min@{}km", f.threshold_key);
            let cv = c.acc_pct.get(&f.threshold_key).copied();
            let verdict = match cv {
                None => Verdict::Missing,
                Some(v) if v < f.min_pct => Verdict::BelowFloor,
                Some(_) => Verdict::Pass,
            };
            lines.push(GateLine { method: c.method.clone(), dataset: c.dataset.clone(), what, baseline: Some(f.min_pct), current: cv, verdict });
        }
    }
    GateReport { tolerance, lines, image_changes: Vec::new() }
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
    fn exact_ci95_and_floors() {
        let base = metrics(50);
        assert!(check_with(&base, &base, Tolerance::Exact, &[]).passed());
        let r = check_with(&metrics(49), &base, Tolerance::Exact, &[]);
        assert!(!r.passed() && r.lines.iter().any(|l| l.verdict == Verdict::Changed), "{}", r.render());
        // 50/100: the Wilson interval is about [40.4, 59.6]; 45 % is inside, 35 % is not.
        assert!(check_with(&metrics(45), &base, Tolerance::Ci95, &[]).passed());
        assert!(!check_with(&metrics(35), &base, Tolerance::Ci95, &[]).passed());
        let f = parse_floor("acc_25km=60").unwrap();
        assert_eq!(f, Floor { threshold_key: "25".into(), min_pct: 60.0 });
        let r = check_with(&base, &base, Tolerance::Exact, &[f]);
        assert!(r.lines.iter().any(|l| l.verdict == Verdict::BelowFloor), "{}", r.render());
        assert!(check_with(&base, &base, Tolerance::Exact, &[parse_floor("acc_25km=50").unwrap()]).passed());
        assert!(parse_floor("acc25=3").is_err() && parse_floor("acc_25km=x").is_err());
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
