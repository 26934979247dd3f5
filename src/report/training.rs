//! Training curves of the alignment models a run uses (`georag align train`'s `model.json`):
//! the loss per optimizer step with its per-epoch mean, and the held-out image->GPS accuracy
//! after each epoch at every threshold (epoch 0 = untrained).

use super::plot::{LineChart, Series, Stroke, XAxis};
use crate::align::train::{Curve, read_card};
use std::path::PathBuf;

/// Every alignment model directory a (resolved) config names, in config order, without
/// repeats ([`crate::align::model_refs`]).
pub fn model_dirs(config: &serde_json::Value) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for (_, d) in crate::align::model_refs(config) {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The training curves (file name, chart, caption) and one note per alignment model that a
/// (resolved) config names; a model whose card cannot be read is a note, not an error.
pub fn for_config(config: &serde_json::Value) -> (Vec<(String, LineChart, String)>, Vec<String>) {
    let (mut charts, mut notes) = (Vec::new(), Vec::new());
    for dir in model_dirs(config) {
        let c = match read_card(&dir) {
            Ok(c) => c,
            Err(why) => {
                notes.push(format!("Alignment model {}: no training curve ({why}).", dir.display()));
                continue;
            }
        };
        notes.push(format!(
            "Alignment model {} ({}): model fingerprint {}, {} trainable parameters, trained on {} rows ({} held out), {} steps in {} epochs.",
            dir.display(),
            c.kind,
            c.model_fingerprint,
            c.n_trainable,
            c.n_train,
            c.n_holdout,
            c.curve.steps.len(),
            c.curve.evals.last().map_or(0, |e| e.epoch)
        ));
        let label = dir.display().to_string();
        let slug = super::slug(&label);
        charts.push((format!("align_loss_{slug}"), loss_chart(&label, &c.curve), format!("Training loss of the alignment model {label} per optimizer step, with its mean per epoch.")));
        charts.push((format!("align_holdout_{slug}"), holdout_chart(&label, &c.curve), format!("Held-out image->GPS accuracy of the alignment model {label} after each epoch (epoch 0 untrained).")));
    }
    (charts, notes)
}

/// Loss per step (thin) and its mean per epoch (markers at each epoch's last step).
pub fn loss_chart(label: &str, c: &Curve) -> LineChart {
    let steps: Vec<(f64, f64)> = c.steps.iter().map(|s| (s.step as f64, s.loss)).collect();
    let mut means: Vec<(f64, f64)> = Vec::new();
    let mut i = 0;
    while i < c.steps.len() {
        let e = c.steps[i].epoch;
        let j = i + c.steps[i..].iter().take_while(|s| s.epoch == e).count();
        let mean = c.steps[i..j].iter().map(|s| s.loss).sum::<f64>() / (j - i) as f64;
        means.push((c.steps[j - 1].step as f64, mean));
        i = j;
    }
    let hi = steps.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let last = steps.last().map_or(1.0, |p| p.0.max(1.0));
    LineChart {
        x_axis: XAxis::Linear,
        title: format!("Training loss: {label}"),
        subtitle: Some(format!(
            "{} optimizer steps; line per step (one batch; an epoch's last, smaller batch has fewer negatives, so a lower contrastive loss), markers the mean of each epoch",
            c.steps.len()
        )),
        x_desc: "optimizer step".into(),
        y_desc: "loss".into(),
        x_range: (0.0, last),
        y_range: (0.0, (hi * 1.05).max(1e-6)),
        series: vec![
            Series { label: "loss per step".into(), points: steps, stroke: Stroke::Solid, markers: false, bars: vec![], color: 0 },
            Series { label: "epoch mean".into(), points: means, stroke: Stroke::Dashed, markers: true, bars: vec![], color: 1 },
        ],
    }
}

/// Held-out accuracy (%) after each epoch, one line per threshold.
pub fn holdout_chart(label: &str, c: &Curve) -> LineChart {
    let thresholds: Vec<f64> = c.evals.first().map(|e| e.accuracy.iter().map(|a| a.0).collect()).unwrap_or_default();
    let series = thresholds
        .iter()
        .enumerate()
        .map(|(i, &t)| Series {
            label: format!("< {t} km"),
            points: c.evals.iter().filter_map(|e| e.accuracy.iter().find(|a| a.0 == t).map(|a| (e.epoch as f64, 100.0 * a.1))).collect(),
            stroke: Stroke::Solid,
            markers: true,
            bars: vec![],
            color: i,
        })
        .collect();
    let n = c.evals.first().map_or(0, |e| e.n);
    LineChart {
        x_axis: XAxis::Linear,
        title: format!("Held-out image->GPS accuracy: {label}"),
        subtitle: Some(format!("{n} held-out images, each against the gallery of all held-out coordinates; haversine, strict <; epoch 0 = untrained")),
        x_desc: "epoch".into(),
        y_desc: "accuracy (%)".into(),
        x_range: (0.0, c.evals.last().map_or(1.0, |e| (e.epoch as f64).max(1.0))),
        y_range: (0.0, 100.0),
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::train::{EvalLog, StepLog};

    #[test]
    fn model_dirs_are_found_at_any_depth_once_each() {
        let cfg = serde_json::json!({
            "encoder": {"kind": "aligned", "base": {"kind": "clip", "dir": "m/clip"}, "model": "a/one"},
            "methods": [
                {"name": "x", "selector": {"kind": "geo_verify", "aligned": "a/two"}},
                {"name": "y", "selector": {"kind": "geo_verify", "aligned": null, "encoder": {"kind": "aligned", "model": "a/one"}}},
                {"kind": "gallery", "model": "a/three"},
                {"kind": "medoid"}
            ]
        });
        assert_eq!(model_dirs(&cfg), ["a/one", "a/two", "a/three"].map(PathBuf::from).to_vec());
    }

    #[test]
    fn epoch_means_and_holdout_lines_come_from_the_curve() {
        let step = |epoch, step, loss| StepLog { epoch, step, lr: 1e-3, loss, parts: vec![] };
        let eval = |epoch, a| EvalLog { epoch, n: 10, accuracy: vec![(25.0, a), (2500.0, 2.0 * a)] };
        let c = Curve { steps: vec![step(0, 0, 4.0), step(0, 1, 2.0), step(1, 2, 1.0), step(1, 3, 0.5)], evals: vec![eval(0, 0.1), eval(1, 0.2), eval(2, 0.4)] };
        let l = loss_chart("m", &c);
        assert_eq!(l.series[1].points, vec![(1.0, 3.0), (3.0, 0.75)]);
        assert_eq!(l.x_axis, XAxis::Linear);
        let h = holdout_chart("m", &c);
        assert_eq!(h.series.len(), 2);
        assert_eq!(h.series[1].label, "< 2500 km");
        assert_eq!(h.series[1].points, vec![(0.0, 20.0), (1.0, 40.0), (2.0, 80.0)]);
    }
}
