//! `georag report SWEEP_DIR`: the effect of each swept setting. For every axis of `sweep.json`
//! (one `--sweep` key, or keys zipped in a `sweep:` block), the points that vary that axis alone
//! while every other axis stays at its first value, and for every pair of axes their whole grid;
//! the baseline is the point with every axis at its first value. Per (method, dataset) and threshold: accuracy with its 95 % Wilson interval
//! from each point's `metrics.json`, and the paired difference to the baseline with McNemar's
//! exact test from both points' `per_image.csv` (`georag compare`'s scoring, under the baseline
//! row's convention).
//!
//! Written: `sweep_report.md`, `sweep_report.csv` (one line per parameter, value, method,
//! dataset and threshold), `sweep_report.tex` (booktabs), `sweep_report.html`, and `plots/sweep_*.svg` (accuracy versus the
//! setting, for axes whose values are all numbers; a heat map per threshold for every pair of
//! axes over their whole grid, every other axis at its first value).

use super::compare::{CompareError, CompareOutcome, compare_results};
use crate::metrics::describe::thresholds_of;
use crate::metrics::{MetricsError, MetricsFile, MetricsRow, threshold_key};
use crate::report::per_image::{self, PerImageError};
use crate::report::plot::{self, LineChart, Series, Stroke, XAxis};
use crate::report::table::latex_escape;
use crate::report::{MethodResult, html};
use crate::sweep::{Axis, SweepFile, expand};
use crate::util::atomic;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Error of the sweep report.
#[derive(Debug, thiserror::Error)]
pub enum SweepReportError {
    #[error("{path}: {message}")]
    Sweep { path: PathBuf, message: String },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    PerImage(#[from] PerImageError),
    #[error(transparent)]
    Compare(#[from] CompareError),
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
}

/// One line of the report: a setting of one parameter, for one method, dataset and threshold.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepLine {
    pub parameter: String,
    pub value: String,
    /// The value's index on each axis of the parameter (one, or two for a grid).
    #[serde(skip)]
    pub cell: Vec<usize>,
    pub baseline: bool,
    pub point: usize,
    /// The method as the baseline names it (the table it belongs to), and as this point does.
    pub method: String,
    pub method_here: String,
    pub dataset: String,
    pub threshold_km: f64,
    pub acc_pct: f64,
    pub ci95_pct: [f64; 2],
    pub n_scored: usize,
    /// Paired with the baseline (None on the baseline's own line, or when either point has no
    /// per_image.csv for this method).
    pub diff_pp: Option<f64>,
    pub diff_ci95_pp: Option<[f64; 2]>,
    pub p_value: Option<f64>,
    pub verdict: Option<String>,
    pub n_paired: Option<usize>,
}

/// What the sweep report found and wrote.
pub struct SweepReport {
    pub lines: Vec<SweepLine>,
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// True when `dir` is a sweep directory (it holds `sweep.json`).
pub fn is_sweep(dir: &Path) -> bool {
    dir.join("sweep.json").is_file()
}

fn axis_name(a: &Axis) -> String {
    a.keys.join(" + ")
}

/// The index in `expand` order of the point with the given (axis, value) pairs and the first
/// value on every other axis (the last axis varies fastest).
fn index_of(axes: &[Axis], fixed: &[(usize, usize)]) -> usize {
    let mut stride = 1;
    let mut index = 0;
    for (i, a) in axes.iter().enumerate().rev() {
        if let Some(&(_, vi)) = fixed.iter().find(|(ai, _)| *ai == i) {
            index += vi * stride;
        }
        stride *= a.values.len();
    }
    index
}

/// What one table shows: one axis varied alone, or two axes over their whole grid, every other
/// axis at its first value. `entries`: (setting label, point index, value index per axis).
struct Slice {
    parameter: String,
    axes: Vec<usize>,
    entries: Vec<(String, usize, Vec<usize>)>,
}

fn slices(axes: &[Axis]) -> Vec<Slice> {
    let label = |a: &Axis, vi: usize| a.values[vi].join(" + ");
    let mut out: Vec<Slice> = axes
        .iter()
        .enumerate()
        .map(|(ai, a)| Slice {
            parameter: axis_name(a),
            axes: vec![ai],
            entries: (0..a.values.len()).map(|vi| (label(a, vi), index_of(axes, &[(ai, vi)]), vec![vi])).collect(),
        })
        .collect();
    for ai in 0..axes.len() {
        for aj in ai + 1..axes.len() {
            let (a, b) = (&axes[ai], &axes[aj]);
            let mut entries = Vec::new();
            for vi in 0..a.values.len() {
                for vj in 0..b.values.len() {
                    entries.push((format!("{} × {}", label(a, vi), label(b, vj)), index_of(axes, &[(ai, vi), (aj, vj)]), vec![vi, vj]));
                }
            }
            out.push(Slice { parameter: format!("{} × {}", axis_name(a), axis_name(b)), axes: vec![ai, aj], entries });
        }
    }
    out
}

/// A point's metrics and per-image results (None without per_image.csv).
type Loaded = (MetricsFile, Option<Vec<MethodResult>>);

/// One metrics row of a point, with the baseline's name for its method and the paired test
/// against the baseline's row (None for the baseline itself or without per-image results).
struct Measured<'a> {
    method: String,
    row: &'a MetricsRow,
    paired: Option<CompareOutcome>,
}

fn measure<'a>(i: usize, (base_m, base_r): &'a Loaded, (m, r): &'a Loaded, alpha: f64) -> Result<Vec<Measured<'a>>, SweepReportError> {
    let mut out = Vec::new();
    for (ri, row) in m.rows.iter().enumerate() {
        // A method's name may carry its settings (`knn_density(k=8, bw=200km)`), so a point's
        // rows pair with the baseline's by position (the same config, other values), by name
        // when the row counts differ.
        let base_row = if m.rows.len() == base_m.rows.len() {
            base_m.rows.get(ri).filter(|b| b.dataset == row.dataset)
        } else {
            base_m.rows.iter().find(|b| b.method == row.method && b.dataset == row.dataset)
        };
        let find = |rs: &'a Option<Vec<MethodResult>>, x: &MetricsRow| rs.as_ref().and_then(|rs| rs.iter().find(|r| r.method == x.method && r.dataset == x.dataset));
        let paired = match base_row {
            Some(b) if i != 0 => match (find(base_r, b), find(r, row), b.convention.to_convention(thresholds_of(&b.acc_pct))) {
                (Some(a), Some(c), Ok(conv)) => Some(compare_results(a, c, &conv, alpha, None)?),
                _ => None,
            },
            _ => None,
        };
        out.push(Measured { method: base_row.map_or_else(|| row.method.clone(), |b| b.method.clone()), row, paired });
    }
    Ok(out)
}

/// Read a sweep directory and write its report into `out`.
pub fn sweep_report(dir: &Path, out: &Path, alpha: f64) -> Result<SweepReport, SweepReportError> {
    let path = dir.join("sweep.json");
    let bad = |message: String| SweepReportError::Sweep { path: path.clone(), message };
    let sweep: SweepFile = serde_json::from_slice(&std::fs::read(&path).map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    let expected = expand(&sweep.axes);
    if expected.len() != sweep.points.len() || expected.iter().zip(&sweep.points).any(|(e, p)| e.sets != p.point.sets) {
        return Err(bad(format!(
            "its {} points are not the {} of its axes in order (an interrupted or edited sweep: rerun it to complete sweep.json)",
            sweep.points.len(),
            expected.len()
        )));
    }
    let mut notes = vec![format!(
        "Sweep {} over {} ({} points; {} axes: {}). Baseline: point 0 ({}).",
        dir.display(),
        sweep.config,
        sweep.points.len(),
        sweep.axes.len(),
        sweep.axes.iter().map(|a| format!("{} in {{{}}}", axis_name(a), a.values.iter().map(|v| v.join(" + ")).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join("; "),
        sweep.points[0].point.sets.join(", ")
    )];
    for p in &sweep.points {
        if p.status == "failed" {
            notes.push(format!("Point {} ({}) failed: {}; left out.", p.point.index, p.point.sets.join(", "), p.error.clone().unwrap_or_default()));
        }
    }
    let ok = |i: usize| sweep.points[i].status != "failed";
    if !ok(0) {
        return Err(bad("the baseline (point 0) failed; nothing to compare against".into()));
    }
    // Each point of a one-factor slice: its metrics and per-image results, read once.
    let mut loaded: BTreeMap<usize, Loaded> = BTreeMap::new();
    let slices = slices(&sweep.axes);
    for slice in &slices {
        for &(_, i, _) in &slice.entries {
            if !ok(i) || loaded.contains_key(&i) {
                continue;
            }
            let pdir = dir.join(&sweep.points[i].point.dir);
            let m = MetricsFile::read(&pdir.join("metrics.json"))?;
            let pi = pdir.join("per_image.csv");
            let r = if pi.exists() {
                Some(per_image::read(&pi)?)
            } else {
                notes.push(format!("{}: no per_image.csv; no paired test for this point.", pdir.display()));
                None
            };
            loaded.insert(i, (m, r));
        }
    }
    // Each point's rows against the baseline's, paired once per point (a point appears in
    // several slices).
    let measured: BTreeMap<usize, Vec<Measured>> =
        loaded.iter().map(|(&i, point)| Ok((i, measure(i, &loaded[&0], point, alpha)?))).collect::<Result<_, SweepReportError>>()?;
    let mut lines = Vec::new();
    for slice in &slices {
        for (value, i, cell) in &slice.entries {
            for m in measured.get(i).into_iter().flatten() {
                for t in thresholds_of(&m.row.acc_pct) {
                    let key = threshold_key(t);
                    let cmp = m.paired.as_ref().and_then(|p| p.rows.iter().find(|r| r.threshold_km == t));
                    lines.push(SweepLine {
                        parameter: slice.parameter.clone(),
                        value: value.clone(),
                        cell: cell.clone(),
                        baseline: *i == 0,
                        point: *i,
                        method: m.method.clone(),
                        method_here: m.row.method.clone(),
                        dataset: m.row.dataset.clone(),
                        threshold_km: t,
                        acc_pct: m.row.acc_pct[&key],
                        ci95_pct: m.row.acc_ci95_pct.get(&key).copied().unwrap_or([f64::NAN, f64::NAN]),
                        n_scored: m.row.n_scored,
                        diff_pp: cmp.map(|c| c.test.diff_pp),
                        diff_ci95_pp: cmp.map(|c| c.test.diff_ci95_pp),
                        p_value: cmp.map(|c| c.test.p_value),
                        verdict: cmp.map(|c| super::compare::verdict(&c.test, alpha, "baseline", "this setting")),
                        n_paired: m.paired.as_ref().map(|p| p.n_paired),
                    });
                }
            }
        }
    }
    let convention = loaded[&0].0.rows.first().map(|r: &MetricsRow| r.convention.describe()).unwrap_or_default();
    notes.push(format!(
        "Accuracies from each point's metrics.json ({convention}); intervals are 95 % Wilson. Paired differences re-score both points' per_image.csv under the baseline row's convention; McNemar's exact two-sided test, alpha = {alpha}."
    ));
    std::fs::create_dir_all(out.join("plots")).map_err(|e| SweepReportError::Sweep { path: out.to_path_buf(), message: e.to_string() })?;
    let mut files = Vec::new();
    let mut figures = Vec::new();
    let plots = out.join("plots");
    for (name, h) in heat_maps(&sweep.axes, &slices, &lines) {
        figures.push(crate::report::emit(&plots, &name, &plot::heat_map(&h), &mut files, &h.title)?);
    }
    for (name, c) in charts(&sweep.axes, &lines) {
        figures.push(crate::report::emit(&plots, &name, &plot::line_chart(&c), &mut files, &c.title)?);
    }
    let md = markdown(&lines, &notes);
    let csv = to_csv(&lines).map_err(|source| SweepReportError::Csv { path: out.join("sweep_report.csv"), source })?;
    let tex = latex(&lines, alpha);
    for (f, bytes) in [("sweep_report.md", md.as_bytes().to_vec()), ("sweep_report.csv", csv), ("sweep_report.tex", tex.into_bytes())] {
        let p = out.join(f);
        atomic::write_bytes(&p, &bytes)?;
        files.push(p);
    }
    let title = format!("Sweep report: {}", dir.display());
    let page = html::page_with(&title, &crate::report::table::PaperTable::default(), &tables_html(&lines), &figures, &notes);
    let p = out.join("sweep_report.html");
    atomic::write_bytes(&p, page.as_bytes())?;
    files.push(p);
    Ok(SweepReport { lines, files, notes })
}

/// Groups of lines in report order: (parameter, method, dataset) -> lines.
fn groups(lines: &[SweepLine]) -> Vec<(String, String, String, Vec<&SweepLine>)> {
    let mut g: Vec<(String, String, String, Vec<&SweepLine>)> = Vec::new();
    for l in lines {
        match g.iter_mut().find(|x| x.0 == l.parameter && x.1 == l.method && x.2 == l.dataset) {
            Some(x) => x.3.push(l),
            None => g.push((l.parameter.clone(), l.method.clone(), l.dataset.clone(), vec![l])),
        }
    }
    g
}

fn cell(l: &SweepLine) -> String {
    let mut s = format!("{:.2} [{:.1}, {:.1}]", l.acc_pct, l.ci95_pct[0], l.ci95_pct[1]);
    if let (Some(d), Some(p)) = (l.diff_pp, l.p_value) {
        let _ = write!(s, " ({d:+.2} pp, p = {p:.3})");
    }
    s
}

fn table_rows<'a>(ls: &[&'a SweepLine]) -> (Vec<f64>, Vec<(String, bool, Vec<&'a SweepLine>)>) {
    let mut thresholds: Vec<f64> = ls.iter().map(|l| l.threshold_km).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let mut rows: Vec<(String, bool, Vec<&SweepLine>)> = Vec::new();
    for l in ls {
        match rows.iter_mut().find(|r| r.0 == l.value) {
            Some(r) => r.2.push(l),
            None => rows.push((l.value.clone(), l.baseline, vec![*l])),
        }
    }
    (thresholds, rows)
}

fn markdown(lines: &[SweepLine], notes: &[String]) -> String {
    let mut s = String::from("# Sweep report\n\n");
    for (param, method, dataset, ls) in groups(lines) {
        let (thresholds, rows) = table_rows(&ls);
        let _ = writeln!(s, "## {param}: {method} on {dataset}\n");
        let _ = writeln!(s, "| {param} | {} | verdict at {} km |", thresholds.iter().map(|t| format!("{t} km")).collect::<Vec<_>>().join(" | "), thresholds.get(1).or(thresholds.first()).unwrap_or(&0.0));
        let _ = writeln!(s, "|---|{}---|", "---:|".repeat(thresholds.len()));
        for (value, base, cells) in rows {
            let label = if base { format!("{value} (baseline)") } else { value };
            let by_t: Vec<String> = thresholds.iter().map(|t| cells.iter().find(|c| c.threshold_km == *t).map(|c| cell(c)).unwrap_or_default()).collect();
            let vt = thresholds.get(1).or(thresholds.first()).copied().unwrap_or(0.0);
            let verdict = cells.iter().find(|c| c.threshold_km == vt).and_then(|c| c.verdict.clone()).unwrap_or_else(|| if base { "baseline".into() } else { "no paired test".into() });
            let _ = writeln!(s, "| {label} | {} | {verdict} |", by_t.join(" | "));
        }
        s.push('\n');
    }
    s.push_str("## Notes\n\n");
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

fn tables_html(lines: &[SweepLine]) -> String {
    let mut s = String::new();
    for (param, method, dataset, ls) in groups(lines) {
        let (thresholds, rows) = table_rows(&ls);
        let _ = writeln!(s, "<h2>{}: {} on {}</h2>\n<div class=\"wide\"><table>\n<thead><tr><th>{}</th>", html::escape(&param), html::escape(&method), html::escape(&dataset), html::escape(&param));
        for t in &thresholds {
            let _ = write!(s, "<th>{t} km</th>");
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for (value, base, cells) in rows {
            let label = if base { format!("{value} (baseline)") } else { value };
            let _ = write!(s, "<tr><td>{}</td>", html::escape(&label));
            for t in &thresholds {
                let c = cells.iter().find(|c| c.threshold_km == *t).map(|c| cell(c)).unwrap_or_default();
                let _ = write!(s, "<td>{}</td>", html::escape(&c));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody></table></div>\n");
    }
    s
}

/// One booktabs table per (parameter, method, dataset): accuracy (%) per threshold, the paired
/// difference to the baseline in pp below it with a dagger when McNemar's p < alpha.
fn latex(lines: &[SweepLine], alpha: f64) -> String {
    let mut s = String::from("% georag sweep report; needs \\usepackage{booktabs}\n");
    for (param, method, dataset, ls) in groups(lines) {
        let (thresholds, rows) = table_rows(&ls);
        let _ = writeln!(s, "\\begin{{table}}[t]\n\\centering\n\\caption{{{}: {} on {} (accuracy \\%, 95 \\% Wilson interval; $\\Delta$ to the baseline in pp, $^\\dagger$ McNemar significant)}}", latex_escape(&param), latex_escape(&method), latex_escape(&dataset));
        let _ = writeln!(s, "\\begin{{tabular}}{{l{}}}\n\\toprule", "r".repeat(thresholds.len()));
        let _ = writeln!(s, "{} & {} \\\\\n\\midrule", latex_escape(&param), thresholds.iter().map(|t| format!("{t} km")).collect::<Vec<_>>().join(" & "));
        for (value, base, cells) in rows {
            let label = if base { format!("{} (baseline)", latex_escape(&value)) } else { latex_escape(&value) };
            let acc: Vec<String> = thresholds.iter().map(|t| cells.iter().find(|c| c.threshold_km == *t).map(|c| format!("{:.2} [{:.1}, {:.1}]", c.acc_pct, c.ci95_pct[0], c.ci95_pct[1])).unwrap_or_default()).collect();
            let _ = writeln!(s, "{label} & {} \\\\", acc.join(" & "));
            if !base {
                let d: Vec<String> = thresholds
                    .iter()
                    .map(|t| match cells.iter().find(|c| c.threshold_km == *t) {
                        Some(SweepLine { diff_pp: Some(d), p_value: Some(p), .. }) => format!("$\\Delta$ {d:+.2}{}", if *p < alpha { "$^\\dagger$" } else { "" }),
                        _ => String::new(),
                    })
                    .collect();
                let _ = writeln!(s, " & {} \\\\", d.join(" & "));
            }
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n\n");
    }
    s
}

/// The CSV (the csv crate quotes the text cells); numbers as Display writes them.
fn to_csv(lines: &[SweepLine]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "parameter", "value", "baseline", "point", "method", "method_here", "dataset", "threshold_km", "acc_pct", "ci95_lo_pct", "ci95_hi_pct", "n_scored", "diff_pp",
        "diff_ci95_lo_pp", "diff_ci95_hi_pp", "mcnemar_p", "n_paired", "verdict",
    ])?;
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for l in lines {
        w.write_record([
            l.parameter.clone(),
            l.value.clone(),
            l.baseline.to_string(),
            l.point.to_string(),
            l.method.clone(),
            l.method_here.clone(),
            l.dataset.clone(),
            l.threshold_km.to_string(),
            l.acc_pct.to_string(),
            l.ci95_pct[0].to_string(),
            l.ci95_pct[1].to_string(),
            l.n_scored.to_string(),
            opt(l.diff_pp),
            opt(l.diff_ci95_pp.map(|c| c[0])),
            opt(l.diff_ci95_pp.map(|c| c[1])),
            opt(l.p_value),
            l.n_paired.map(|n| n.to_string()).unwrap_or_default(),
            l.verdict.clone().unwrap_or_default(),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Accuracy versus the setting, one chart per (numeric axis, method, dataset), a line per
/// threshold with its interval bars.
fn charts(axes: &[Axis], lines: &[SweepLine]) -> Vec<(String, LineChart)> {
    let numeric: Vec<String> = axes.iter().filter(|a| a.keys.len() == 1 && a.values.iter().all(|v| v[0].parse::<f64>().is_ok())).map(axis_name).collect();
    let mut out = Vec::new();
    for (param, method, dataset, ls) in groups(lines) {
        if !numeric.contains(&param) {
            continue;
        }
        let (thresholds, _) = table_rows(&ls);
        let xs: Vec<f64> = ls.iter().filter_map(|l| l.value.parse().ok()).collect();
        let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let pad = ((hi - lo) * 0.05).max(0.5);
        let series = thresholds
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let mut pts: Vec<&&SweepLine> = ls.iter().filter(|l| l.threshold_km == t).collect();
                pts.sort_by(|a, b| a.value.parse::<f64>().unwrap_or(0.0).total_cmp(&b.value.parse::<f64>().unwrap_or(0.0)));
                Series {
                    label: format!("{t} km"),
                    points: pts.iter().map(|l| (l.value.parse().unwrap_or(0.0), l.acc_pct)).collect(),
                    stroke: Stroke::Solid,
                    markers: true,
                    bars: pts.iter().map(|l| (l.value.parse().unwrap_or(0.0), l.ci95_pct[0], l.ci95_pct[1])).collect(),
                    color: i,
                }
            })
            .collect();
        out.push((
            format!("sweep_{}_{}_{}", crate::report::slug(&param), crate::report::slug(&method), crate::report::slug(&dataset)),
            LineChart {
                x_axis: XAxis::Linear,
                title: format!("Accuracy versus {param}: {method} on {dataset}"),
                subtitle: Some("other swept settings at their baseline values; bars are 95 % Wilson intervals".into()),
                x_desc: param.clone(),
                y_desc: "accuracy (%)".into(),
                x_range: (lo - pad, hi + pad),
                y_range: (0.0, 100.0),
                series,
            },
        ));
    }
    out
}

/// Accuracy over the grid of each pair of axes, one map per (pair, method, dataset, threshold).
fn heat_maps(axes: &[Axis], slices: &[Slice], lines: &[SweepLine]) -> Vec<(String, plot::HeatMap)> {
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| s.axes.len() == 2) {
        let (a, b) = (&axes[slice.axes[0]], &axes[slice.axes[1]]);
        for (param, method, dataset, ls) in groups(lines).into_iter().filter(|g| g.0 == slice.parameter) {
            let (thresholds, _) = table_rows(&ls);
            for t in thresholds {
                let cells: Vec<Vec<Option<f64>>> = (0..a.values.len())
                    .map(|vi| (0..b.values.len()).map(|vj| ls.iter().find(|l| l.threshold_km == t && l.cell == [vi, vj]).map(|l| l.acc_pct)).collect())
                    .collect();
                let vals: Vec<f64> = cells.iter().flatten().flatten().copied().collect();
                let range = vals.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                out.push((
                    format!("sweep_heat_{}_{}_{}_{t}km", crate::report::slug(&param), crate::report::slug(&method), crate::report::slug(&dataset)),
                    plot::HeatMap {
                        title: format!("Accuracy at {t} km (%): {method} on {dataset}"),
                        subtitle: Some(format!("over {param}, other swept settings at their baseline values; colour from {:.1} % (light) to {:.1} % (dark)", range.0, range.1)),
                        x_desc: axis_name(b),
                        y_desc: axis_name(a),
                        x_labels: b.values.iter().map(|v| v.join(" + ")).collect(),
                        y_labels: a.values.iter().map(|v| v.join(" + ")).collect(),
                        cells,
                        range: if range.0.is_finite() { range } else { (0.0, 100.0) },
                        decimals: 1,
                    },
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_points_follow_expand_order() {
        let axes = vec![
            Axis { keys: vec!["a".into()], values: vec![vec!["1".into()], vec!["2".into()], vec!["3".into()]] },
            Axis { keys: vec!["b".into()], values: vec![vec!["x".into()], vec!["y".into()]] },
            Axis { keys: vec!["c".into()], values: vec![vec!["p".into()], vec!["q".into()]] },
        ];
        let pts = expand(&axes);
        let sl = slices(&axes);
        // Three one-axis slices, then the pairs a×b, a×c, b×c.
        let names: Vec<&str> = sl.iter().map(|s| s.parameter.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "a × b", "a × c", "b × c"]);
        for s in &sl {
            for (label, i, cell) in &s.entries {
                let mut want = vec!["a=1".to_string(), "b=x".into(), "c=p".into()];
                for (k, &ax) in s.axes.iter().enumerate() {
                    want[ax] = format!("{}={}", axes[ax].keys[0], axes[ax].values[cell[k]][0]);
                }
                assert_eq!(pts[*i].sets, want, "{} {label}", s.parameter);
            }
        }
        assert_eq!(sl[3].entries.len(), 6);
        assert_eq!(sl[3].entries[5].0, "3 × y");
    }
}
