//! `georag index CONFIG --tune`: recall and speed of a built index over its search setting
//! (nprobe for IVF recipes, efSearch for HNSW), against the exact neighbours stored at build
//! time, so the user picks a point knowing what it costs; `--recall-target R` picks the
//! smallest setting whose recall@10 reaches R.

use super::build::{self, Layout, RecallPoint, TrainRecord};
use super::{BuiltIndex, IndexError, IndexSpec};
use crate::report::plot::{self, LineChart, Series, Stroke, XAxis};
use crate::util::atomic;
use std::path::Path;

/// Which parameter a recipe tunes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knob {
    Nprobe,
    EfSearch,
}

impl Knob {
    pub fn name(self) -> &'static str {
        match self {
            Knob::Nprobe => "nprobe",
            Knob::EfSearch => "efSearch",
        }
    }
}

/// The result of a sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Tuning {
    pub knob: &'static str,
    pub points: Vec<(usize, RecallPoint)>,
    /// Smallest setting reaching the target recall@10 (when a target was given and reached).
    pub picked: Option<usize>,
    pub target: Option<f64>,
}

/// The values swept: powers of two up to the number of lists (IVF), or 16..1024 (HNSW).
pub fn grid(knob: Knob, nlist: Option<usize>) -> Vec<usize> {
    let top = match knob {
        Knob::Nprobe => nlist.unwrap_or(1024),
        Knob::EfSearch => 1024,
    };
    let start = if knob == Knob::EfSearch { 16 } else { 1 };
    let mut v = vec![];
    let mut x = start;
    while x < top {
        v.push(x);
        x *= 2;
    }
    v.push(top);
    v
}

/// Sweep `built`'s search setting, write `tune.json` and `tune.svg` beside the index, and
/// return the curve.
pub fn tune(spec: &IndexSpec, built: &mut BuiltIndex, target: Option<f64>) -> Result<Tuning, IndexError> {
    let knob = if spec.factory.contains("IVF") {
        Knob::Nprobe
    } else if spec.factory.contains("HNSW") {
        Knob::EfSearch
    } else {
        return Err(IndexError::Build(format!("recipe `{}` has no search-time setting to tune (only IVF nprobe and HNSW efSearch are)", spec.factory)));
    };
    if spec.recall.queries == 0 {
        return Err(IndexError::Build("index.recall.queries is 0: no recall queries were stored at build time".into()));
    }
    let layout = Layout::new(built.dir.clone());
    let tr: TrainRecord = build::read_json(&layout.train_json())?;
    let truth: Vec<Vec<(u64, f32)>> = build::read_json(&layout.truth())?;
    let mut points = vec![];
    for v in grid(knob, build::nlist_of(built.index.inner()).or(tr.nlist)) {
        let mut s = spec.clone();
        match knob {
            Knob::Nprobe => {
                s.nprobe = v;
                built.index.set_nprobe(v)?;
            }
            Knob::EfSearch => {
                s.ef_search = Some(v);
                built.index.set_ef_search(v)?;
            }
        }
        if let Some(p) = build::measure(&mut built.index, &layout, &tr, &truth, &s)? {
            points.push((v, p));
        }
    }
    built.index.apply(spec)?;
    let picked = target.and_then(|t| points.iter().find(|(_, p)| p.recall_at_10 >= t).map(|(v, _)| *v));
    let t = Tuning { knob: knob.name(), points, picked, target };
    atomic::write_json(&built.dir.join("tune.json"), &t)?;
    if let Ok(r) = plot::line_chart(&chart(spec, &t)) {
        atomic::write_bytes(&built.dir.join("tune.svg"), r.svg.as_bytes())?;
        if let Some(png) = r.png {
            atomic::write_bytes(&built.dir.join("tune.png"), &png)?;
        }
    }
    Ok(t)
}

fn chart(spec: &IndexSpec, t: &Tuning) -> LineChart {
    let qps: Vec<f64> = t.points.iter().map(|(_, p)| p.qps.max(1.0)).collect();
    let lo = qps.iter().cloned().fold(f64::INFINITY, f64::min) / 1.5;
    let hi = qps.iter().cloned().fold(0.0, f64::max) * 1.5;
    let series = |label: &str, f: fn(&RecallPoint) -> f64, color: usize, stroke: Stroke| Series {
        label: label.into(),
        points: t.points.iter().map(|(_, p)| (p.qps.max(1.0), 100.0 * f(p))).collect(),
        stroke,
        markers: true,
        bars: vec![],
        color,
    };
    LineChart {
        x_axis: XAxis::Log,
        title: format!("{}: recall against exact search vs queries/s, over {}", spec.factory, t.knob),
        x_desc: "queries per second (one batch, all FAISS threads; log scale)".into(),
        y_desc: "recall (%)".into(),
        x_range: (lo.max(0.1), hi.max(1.0)),
        y_range: (0.0, 100.0),
        series: vec![
            series("recall@1", |p| p.recall_at_1, 0, Stroke::Solid),
            series("recall@10", |p| p.recall_at_10, 1, Stroke::Solid),
            series(&format!("recall@{}", spec.recall.k), |p| p.recall_at_k, 2, Stroke::Dashed),
        ],
        subtitle: Some(format!(
            "{} held-out database vectors as queries (own row left out); points left to right: {} = {}",
            t.points.first().map_or(0, |p| p.1.queries),
            t.knob,
            t.points.iter().rev().map(|(v, _)| v.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The sweep as a table for the terminal.
pub fn table(t: &Tuning, k: usize) -> String {
    let mut s = format!("{:>9} {:>9} {:>9} {:>9} {:>12}\n", t.knob, "recall@1", "recall@10", format!("recall@{k}"), "queries/s");
    for (v, p) in &t.points {
        s.push_str(&format!("{v:>9} {:>9.3} {:>9.3} {:>9.3} {:>12.0}\n", p.recall_at_1, p.recall_at_10, p.recall_at_k, p.qps));
    }
    match (t.target, t.picked) {
        (Some(r), Some(v)) => s.push_str(&format!("smallest {} with recall@10 >= {r}: {v} (set `index.{}: {v}` in the config)\n", t.knob, if t.knob == "nprobe" { "nprobe" } else { "ef_search" })),
        (Some(r), None) => s.push_str(&format!("no {} reaches recall@10 >= {r}: the recipe's codes limit it; choose a finer recipe (more PQ bytes, SQ8, RFlat)\n", t.knob)),
        _ => {}
    }
    s
}

/// Where `tune` wrote its files.
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    ["tune.json", "tune.svg", "tune.png"].iter().map(|f| dir.join(f)).filter(|p| p.exists()).collect()
}
