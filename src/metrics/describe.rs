//! Turning a stored [`ConventionRecord`] (as found in `metrics.json`) back into a [`Convention`],
//! so that footnotes and re-scoring use exactly the convention a row was computed under.

use super::{Convention, ConventionRecord, DistanceModel, FailurePolicy, ThresholdOp, threshold_key};
use std::collections::BTreeMap;

impl ConventionRecord {
    /// The convention this record describes, with the given thresholds.
    /// Errors name the field that could not be understood.
    pub fn to_convention(&self, thresholds_km: Vec<f64>) -> Result<Convention, String> {
        let distance = match (self.distance.as_str(), self.radius_km) {
            ("haversine", Some(radius_km)) => DistanceModel::Haversine { radius_km },
            ("haversine", None) => DistanceModel::default(),
            ("geodesic", _) => DistanceModel::Geodesic,
            (other, _) => return Err(format!("unknown distance `{other}` in convention")),
        };
        let threshold_op = match self.threshold_op.as_str() {
            "<" | "lt" => ThresholdOp::Lt,
            "<=" | "le" => ThresholdOp::Le,
            other => return Err(format!("unknown threshold operator `{other}` in convention")),
        };
        let failures: FailurePolicy = self.failures.parse()?;
        Ok(Convention { distance, threshold_op, failures, thresholds_km })
    }

    /// One line for footnotes, e.g. "haversine, R = 6371 km; hit when distance < threshold;
    /// failures count as misses". Falls back to the raw fields when they cannot be parsed.
    pub fn describe(&self) -> String {
        match self.to_convention(Vec::new()) {
            Ok(c) => c.describe(),
            Err(_) => format!(
                "distance {} (R = {:?}); operator {}; failures {}",
                self.distance, self.radius_km, self.threshold_op, self.failures
            ),
        }
    }
}

/// Thresholds (km) present as keys of an `acc_pct` map, sorted numerically.
pub fn thresholds_of(acc_pct: &BTreeMap<String, f64>) -> Vec<f64> {
    let mut t: Vec<f64> = acc_pct.keys().filter_map(|k| k.parse().ok()).collect();
    t.sort_by(f64::total_cmp);
    t.dedup();
    debug_assert!(t.iter().all(|x| acc_pct.contains_key(&threshold_key(*x))));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_to_convention() {
        for c in [
            Convention::default(),
            Convention {
                distance: DistanceModel::Geodesic,
                threshold_op: ThresholdOp::Le,
                failures: FailurePolicy::Zero,
                thresholds_km: vec![1.0, 25.0],
            },
            Convention { distance: DistanceModel::Haversine { radius_km: 6378.137 }, ..Default::default() },
        ] {
            let rec = ConventionRecord::from(&c);
            assert_eq!(rec.to_convention(c.thresholds_km.clone()).unwrap(), c);
            assert_eq!(rec.describe(), c.describe());
        }
        let bad = ConventionRecord {
            distance: "vincenty".into(),
            radius_km: None,
            threshold_op: "<".into(),
            failures: "miss".into(),
        };
        assert!(bad.to_convention(vec![]).is_err());
    }
}
