//! Scoring: distances, declared conventions, accuracy at thresholds, intervals, `metrics.json`.
//!
//! Invariants:
//! - every number carries the [`Convention`] it was computed under (distance model, radius,
//!   threshold operator, failure policy) and the counts behind it (n expected / answered / scored);
//! - the evaluated set is the list of ground-truth records: failures are counted under the failure
//!   policy, never silently dropped; accuracies are unrounded percentages.

pub mod describe;
pub mod distance;
pub mod interval;
pub mod paired;

pub use distance::{DistanceModel, EARTH_RADIUS_KM, geodesic_km, haversine_km};

use crate::record::{LatLon, PredictionRecord, Status};
use crate::util::atomic;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Schema tag of `metrics.json`.
pub const METRICS_SCHEMA: &str = "georag.metrics/v1";
/// The thresholds of the benchmark papers: street, city, region, country, continent.
pub const DEFAULT_THRESHOLDS_KM: [f64; 5] = [1.0, 25.0, 200.0, 750.0, 2500.0];
/// GeoScore scale (GeoGuessr): 5000 * exp(-d / 1492.7).
pub const GEOSCORE_SCALE_KM: f64 = 1492.7;

/// Hit when `d < t` (`lt`, as G3, OSV-5M, PIGEON) or `d <= t` (`le`, as GeoCLIP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdOp {
    #[default]
    Lt,
    Le,
}

impl ThresholdOp {
    pub fn hit(self, d: f64, t: f64) -> bool {
        match self {
            ThresholdOp::Lt => d < t,
            ThresholdOp::Le => d <= t,
        }
    }
    pub fn symbol(self) -> &'static str {
        match self {
            ThresholdOp::Lt => "<",
            ThresholdOp::Le => "<=",
        }
    }
}

/// What a failed sample counts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// In the denominator, never a hit (the honest default).
    #[default]
    Miss,
    /// Excluded from the denominator (as GeoToken); coverage reports how many.
    Drop,
    /// Scored as a (0, 0) prediction (as G3 and GeoRanker).
    Zero,
}

impl FailurePolicy {
    pub fn name(self) -> &'static str {
        match self {
            FailurePolicy::Miss => "miss",
            FailurePolicy::Drop => "drop",
            FailurePolicy::Zero => "zero",
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            FailurePolicy::Miss => "failures count as misses",
            FailurePolicy::Drop => "failures dropped from the denominator",
            FailurePolicy::Zero => "failures scored as a (0, 0) prediction",
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "miss" => Ok(FailurePolicy::Miss),
            "drop" => Ok(FailurePolicy::Drop),
            "zero" => Ok(FailurePolicy::Zero),
            _ => Err(format!("unknown failure policy `{s}`: expected miss, drop or zero")),
        }
    }
}

/// How a score is computed. Part of every metrics row and every table footnote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Convention {
    pub distance: DistanceModel,
    pub threshold_op: ThresholdOp,
    pub failures: FailurePolicy,
    pub thresholds_km: Vec<f64>,
}

impl Default for Convention {
    fn default() -> Self {
        Convention {
            distance: DistanceModel::default(),
            threshold_op: ThresholdOp::Lt,
            failures: FailurePolicy::Miss,
            thresholds_km: DEFAULT_THRESHOLDS_KM.to_vec(),
        }
    }
}

impl Convention {
    /// One line for footnotes: distance model, operator, failure policy.
    pub fn describe(&self) -> String {
        format!(
            "{}; hit when distance {} threshold; {}",
            self.distance.describe(),
            self.threshold_op.symbol(),
            self.failures.describe()
        )
    }
}

/// The convention as stored in `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConventionRecord {
    pub distance: String,
    pub radius_km: Option<f64>,
    pub threshold_op: String,
    pub failures: String,
}

impl From<&Convention> for ConventionRecord {
    fn from(c: &Convention) -> Self {
        ConventionRecord {
            distance: c.distance.name().to_string(),
            radius_km: c.distance.radius_km(),
            threshold_op: c.threshold_op.symbol().to_string(),
            failures: c.failures.name().to_string(),
        }
    }
}

/// Key of a threshold in `acc_pct` maps: `1`, `25`, `0.5`.
pub fn threshold_key(t: f64) -> String {
    format!("{t}")
}

/// One row of `metrics.json`: a method on a dataset under a convention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub method: String,
    pub dataset: String,
    pub convention: ConventionRecord,
    /// Ground-truth images evaluated.
    pub n_expected: usize,
    /// Images with a valid prediction.
    pub n_answered: usize,
    /// Images whose prediction failed (any non-ok status).
    pub n_failed: usize,
    /// Denominator of the accuracies (n_expected, or n_answered under `drop`).
    pub n_scored: usize,
    /// n_answered / n_expected.
    pub coverage: f64,
    /// Failure counts by status.
    pub failures_by_status: BTreeMap<String, usize>,
    /// Accuracy (percent, unrounded) per threshold key.
    pub acc_pct: BTreeMap<String, f64>,
    /// 95 % Wilson score interval (percent) per threshold key.
    pub acc_ci95_pct: BTreeMap<String, [f64; 2]>,
    /// Median and mean error over the distances scored (answered predictions, plus (0, 0)
    /// predictions under the `zero` policy); `None` when nothing was scored.
    pub median_km: Option<f64>,
    pub mean_km: Option<f64>,
    /// Mean of 5000 exp(-d / 1492.7) over the scored set (a miss scores 0).
    pub geoscore: f64,
}

impl MetricsRow {
    /// Accuracy at threshold `t`, if computed.
    pub fn acc(&self, t: f64) -> Option<f64> {
        self.acc_pct.get(&threshold_key(t)).copied()
    }
}

/// Per-image outcome after scoring: distance (if any) and whether it counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub distance_km: Option<f64>,
    /// False when dropped from the denominator.
    pub counted: bool,
}

/// Distance of each record under the convention's failure policy.
pub fn score_records(records: &[PredictionRecord], conv: &Convention) -> Vec<Scored> {
    let zero = LatLon { lat: 0.0, lon: 0.0 };
    records
        .par_iter()
        .map(|r| match (r.status, r.pred) {
            (Status::Ok, Some(p)) => Scored { distance_km: Some(conv.distance.km(r.truth, p)), counted: true },
            _ => match conv.failures {
                FailurePolicy::Miss => Scored { distance_km: None, counted: true },
                FailurePolicy::Drop => Scored { distance_km: None, counted: false },
                FailurePolicy::Zero => Scored { distance_km: Some(conv.distance.km(r.truth, zero)), counted: true },
            },
        })
        .collect()
}

/// Score one method on one dataset.
pub fn score(method: &str, dataset: &str, records: &[PredictionRecord], conv: &Convention) -> MetricsRow {
    let scored = score_records(records, conv);
    summarize(method, dataset, records, &scored, conv)
}

/// Build the metrics row from per-image scores (see [`score_records`]).
pub fn summarize(
    method: &str,
    dataset: &str,
    records: &[PredictionRecord],
    scored: &[Scored],
    conv: &Convention,
) -> MetricsRow {
    let n_expected = records.len();
    let n_answered = records.iter().filter(|r| r.status == Status::Ok).count();
    let mut failures_by_status = BTreeMap::new();
    for r in records.iter().filter(|r| r.status != Status::Ok) {
        *failures_by_status.entry(r.status.as_str().to_string()).or_insert(0) += 1;
    }
    let counted: Vec<&Scored> = scored.iter().filter(|s| s.counted).collect();
    let n_scored = counted.len();
    let mut acc_pct = BTreeMap::new();
    let mut acc_ci95_pct = BTreeMap::new();
    for &t in &conv.thresholds_km {
        let hits = counted
            .iter()
            .filter(|s| s.distance_km.is_some_and(|d| conv.threshold_op.hit(d, t)))
            .count();
        let pct = if n_scored == 0 { 0.0 } else { 100.0 * hits as f64 / n_scored as f64 };
        let (lo, hi) = interval::wilson(hits, n_scored, interval::Z95);
        acc_pct.insert(threshold_key(t), pct);
        acc_ci95_pct.insert(threshold_key(t), [100.0 * lo, 100.0 * hi]);
    }
    let mut d: Vec<f64> = counted.iter().filter_map(|s| s.distance_km).collect();
    // In parallel; under a total order equal keys are the same bits, so the sorted vector (and
    // the sums below, taken in its order) is that of a sequential sort.
    d.par_sort_unstable_by(f64::total_cmp);
    let median_km = median_sorted(&d);
    let mean_km = (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64);
    let geoscore = if n_scored == 0 {
        0.0
    } else {
        d.iter().map(|x| 5000.0 * (-x / GEOSCORE_SCALE_KM).exp()).sum::<f64>() / n_scored as f64
    };
    MetricsRow {
        method: method.to_string(),
        dataset: dataset.to_string(),
        convention: conv.into(),
        n_expected,
        n_answered,
        n_failed: n_expected - n_answered,
        n_scored,
        coverage: if n_expected == 0 { 0.0 } else { n_answered as f64 / n_expected as f64 },
        failures_by_status,
        acc_pct,
        acc_ci95_pct,
        median_km,
        mean_km,
        geoscore,
    }
}

/// Median of sorted values (mean of the two middle ones for even n).
pub fn median_sorted(d: &[f64]) -> Option<f64> {
    let n = d.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(d[n / 2]),
        _ => Some((d[n / 2 - 1] + d[n / 2]) / 2.0),
    }
}

/// The whole `metrics.json` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsFile {
    pub schema: String,
    pub rows: Vec<MetricsRow>,
}

/// Error reading a metrics file.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("reading {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a georag metrics file: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("{path}: schema is `{found}`, expected `{METRICS_SCHEMA}`")]
    Schema { path: String, found: String },
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
}

impl MetricsFile {
    pub fn new(rows: Vec<MetricsRow>) -> Self {
        MetricsFile { schema: METRICS_SCHEMA.to_string(), rows }
    }
    pub fn write(&self, path: &Path) -> Result<(), MetricsError> {
        Ok(atomic::write_json(path, self)?)
    }
    pub fn read(path: &Path) -> Result<Self, MetricsError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MetricsError::Io { path: p.clone(), source })?;
        let file: MetricsFile =
            serde_json::from_str(&text).map_err(|source| MetricsError::Parse { path: p.clone(), source })?;
        if file.schema != METRICS_SCHEMA {
            return Err(MetricsError::Schema { path: p, found: file.schema });
        }
        Ok(file)
    }
}

impl fmt::Display for MetricsRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}:", self.method, self.dataset)?;
        let mut accs: Vec<(&String, &f64)> = self.acc_pct.iter().collect();
        accs.sort_by(|a, b| a.0.parse::<f64>().unwrap_or(f64::MAX).total_cmp(&b.0.parse::<f64>().unwrap_or(f64::MAX)));
        for (k, v) in accs {
            write!(f, " {k} km {v:.2}%")?;
        }
        write!(f, " (n {}/{} scored/expected)", self.n_scored, self.n_expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, truth: (f64, f64), pred: Option<(f64, f64)>) -> PredictionRecord {
        let t = LatLon::new(truth.0, truth.1).unwrap();
        match pred {
            Some((a, b)) => PredictionRecord::ok(id, t, LatLon::new(a, b).unwrap()),
            None => PredictionRecord::failed(id, t, Status::Unparseable),
        }
    }

    #[test]
    fn threshold_operator_decides_boundary_hits() {
        // 1 degree of latitude at R=6371 is 111.19 km; pick a radius that makes it exactly 25 km.
        let r = 25.0 / 1f64.to_radians();
        let conv_lt = Convention {
            distance: DistanceModel::Haversine { radius_km: r },
            thresholds_km: vec![25.0],
            ..Default::default()
        };
        let recs = vec![rec("a", (0.0, 0.0), Some((1.0, 0.0)))];
        let d = conv_lt.distance.km(recs[0].truth, recs[0].pred.unwrap());
        assert!((d - 25.0).abs() < 1e-9);
        // Exactly at the boundary: computed distance may differ from 25 by one ulp; use it.
        let conv_lt = Convention { thresholds_km: vec![d], ..conv_lt };
        let conv_le = Convention { threshold_op: ThresholdOp::Le, ..conv_lt.clone() };
        assert_eq!(score("m", "d", &recs, &conv_lt).acc(d), Some(0.0));
        assert_eq!(score("m", "d", &recs, &conv_le).acc(d), Some(100.0));
    }

    #[test]
    fn failure_policies() {
        let recs = vec![
            rec("a", (10.0, 10.0), Some((10.0, 10.0))),
            rec("b", (0.1, 0.1), None),
            rec("c", (50.0, 50.0), Some((-50.0, -130.0))),
            rec("d", (50.0, 50.0), None),
        ];
        let miss = score("m", "d", &recs, &Convention::default());
        assert_eq!((miss.n_expected, miss.n_answered, miss.n_failed, miss.n_scored), (4, 2, 2, 4));
        assert_eq!(miss.acc(1.0), Some(25.0));
        assert_eq!(miss.failures_by_status["unparseable"], 2);
        let drop = score("m", "d", &recs, &Convention { failures: FailurePolicy::Drop, ..Default::default() });
        assert_eq!(drop.n_scored, 2);
        assert_eq!(drop.acc(1.0), Some(50.0));
        let zero = score("m", "d", &recs, &Convention { failures: FailurePolicy::Zero, ..Default::default() });
        // b's truth is 15.7 km from (0, 0): a hit at 25 km under the G3 convention.
        assert_eq!(zero.acc(25.0), Some(50.0));
        assert_eq!(miss.acc(25.0), Some(25.0));
        assert!((miss.coverage - 0.5).abs() < 1e-12);
    }

    #[test]
    fn median_and_geoscore() {
        let recs = vec![rec("a", (0.0, 0.0), Some((0.0, 0.0))), rec("b", (0.0, 0.0), None)];
        let m = score("m", "d", &recs, &Convention::default());
        assert_eq!(m.median_km, Some(0.0));
        assert!((m.geoscore - 2500.0).abs() < 1e-9);
        assert_eq!(median_sorted(&[1.0, 2.0, 4.0, 8.0]), Some(3.0));
    }
}
