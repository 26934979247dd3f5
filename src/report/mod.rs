//! Reports: paper-style tables, self-contained HTML, plots.
//!
//! [`write_report`] is what `georag run` calls; [`write_report_with`] adds published reference
//! rows and the `per_image.csv` exchange file (used by `georag eval` and `georag report`).
//!
//! Invariants: every table carries footnotes generated from the convention of its rows; every
//! plot states its distance model and denominator; a missing font never fails a report (PNG
//! files are skipped and the notes say so); all files are written atomically.

pub mod html;
pub mod per_image;
pub mod plot;
pub mod region;
pub mod table;
pub mod training;

use crate::eval::published::PublishedFile;
use crate::metrics::describe::thresholds_of;
use crate::metrics::{Convention, MetricsFile, MetricsRow, Scored, score_records};
use crate::record::PredictionRecord;
use crate::util::atomic;
use std::path::{Path, PathBuf};
use table::PaperTable;

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

/// Optional parts of a report beyond [`ReportInput`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportExtras<'a> {
    /// Published rows shown beside the reproduced ones, with a Δ column.
    pub published: Option<&'a PublishedFile>,
    /// (reproduced method, published method) pairs for the Δ column; unlisted methods match a
    /// published row of the same name, case-insensitively.
    pub aliases: &'a [(String, String)],
    /// Also write `per_image.csv` from `results`.
    pub per_image: bool,
    /// Skip the plots (`--no-plots`): no `plots/` files, no figures in `report.html`; the
    /// tables, notes and every number are unchanged.
    pub no_plots: bool,
    /// The per-image scores of `results` (same order and lengths), when the caller already has
    /// them under each result's metrics-row convention; otherwise they are computed here.
    pub scored: Option<&'a [Vec<Scored>]>,
    /// Also analyse accuracy by continent and country of the ground truth (`regions.csv`,
    /// `regions.json`, an HTML section and a country map per method; `georag run` does).
    pub regions: bool,
    /// Further line charts for the page and `plots/`: (file name, chart, caption), e.g. the
    /// training curves of the alignment models a run uses.
    pub charts: &'a [(String, plot::LineChart, String)],
}

/// What a report wrote.
#[derive(Clone, Debug)]
pub struct ReportOutcome {
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// The font used for PNG text, or why PNG plots were skipped.
    pub png_font: Result<PathBuf, String>,
    /// The notes shown in the report (caller notes first, then generated ones).
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

/// Write `table.md`, `table.csv`, `table.tex`, `report.html` and `plots/*.{png,svg}` into `out`.
pub fn write_report(out: &Path, input: &ReportInput) -> Result<(), ReportError> {
    write_report_with(out, input, &ReportExtras::default()).map(|_| ())
}

/// [`write_report`] with published rows and, optionally, `per_image.csv`.
pub fn write_report_with(out: &Path, input: &ReportInput, extras: &ReportExtras) -> Result<ReportOutcome, ReportError> {
    let mut files = Vec::new();
    let table = PaperTable::build(input.metrics, extras.published, extras.aliases);
    let png_font = if extras.no_plots {
        Err("plots were skipped (--no-plots)".to_string())
    } else {
        plot::font().map(Path::to_path_buf).map_err(str::to_string)
    };
    let mut notes = input.notes.clone();
    match &png_font {
        _ if extras.no_plots => notes.push("Plots were not drawn (--no-plots).".into()),
        Ok(p) => notes.push(format!("PNG plots use the font {}.", p.display())),
        Err(why) => notes.push(format!("PNG plots were not written: {why}; the SVG plots (no font needed) are complete.")),
    }

    // Per-image scores, each under the convention of its metrics row (falling back to the
    // report's convention when the row is absent).
    let scored: Vec<(Convention, std::borrow::Cow<[Scored]>)> = input
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let conv = row_of(input.metrics, &r.method, &r.dataset)
                .and_then(|m| m.convention.to_convention(thresholds_of(&m.acc_pct)).ok())
                .unwrap_or_else(|| input.convention.clone());
            let s = match extras.scored.and_then(|s| s.get(i)).filter(|s| s.len() == r.records.len()) {
                Some(s) => std::borrow::Cow::Borrowed(s.as_slice()),
                None => std::borrow::Cow::Owned(score_records(&r.records, &conv)),
            };
            (conv, s)
        })
        .collect();

    let regions: Vec<crate::region::RegionAnalysis> = if extras.regions {
        use rayon::prelude::*;
        input.results.par_iter().zip(&scored).map(|(r, (conv, s))| crate::region::analyse(&r.method, &r.dataset, &r.records, s, conv)).collect()
    } else {
        Vec::new()
    };
    notes.extend(region::notes(&regions));

    // per_image.csv is formatted in parallel (rayon) while the plots are drawn.
    let per_image_job = || -> Result<Option<PathBuf>, ReportError> {
        if !extras.per_image || input.results.is_empty() {
            return Ok(None);
        }
        let blocks: Vec<per_image::PerImageBlock> = input
            .results
            .iter()
            .zip(&scored)
            .map(|(r, (_, s))| per_image::PerImageBlock { method: &r.method, dataset: &r.dataset, records: &r.records, scored: s })
            .collect();
        let p = out.join("per_image.csv");
        per_image::write(&p, &blocks)?;
        Ok(Some(p))
    };
    let plots_job = || -> Result<(Vec<html::Figure>, Vec<PathBuf>), ReportError> {
        let mut files = Vec::new();
        if extras.no_plots {
            return Ok((Vec::new(), files));
        }
        let mut figures = plots(out, input, extras, &table, &scored, &mut files)?;
        for (name, chart, caption) in extras.charts {
            figures.push(emit(&out.join("plots"), name, &plot::line_chart(chart), &mut files, caption)?);
        }
        for (a, r) in regions.iter().zip(input.results) {
            let name = format!("countries_{}_{}", slug(&a.dataset), slug(&a.method));
            figures.push(emit(&out.join("plots"), &name, &plot::world_map(&region::country_map(a, &r.records)), &mut files, &format!(
                "Accuracy of {} at {} km by country of the ground truth on {} (choropleth on Natural Earth 1:110m outlines, equirectangular; countries with fewer than {} scored images grey, countries without images plain; ranked countries too small to outline at this scale are dots at their images' mean location; images in no country are not drawn).",
                a.method, a.rank_threshold_km, a.dataset, crate::region::MIN_RANKED_N
            ))?);
        }
        Ok((figures, files))
    };
    let (per_image_file, plotted) = rayon::join(per_image_job, plots_job);
    let (figures, plot_files) = plotted?;
    let per_image_file = per_image_file?;
    files.extend(plot_files);

    // Tables.
    let mut md = format!("# {}\n\n", input.title);
    md.push_str(&table.to_markdown());
    if !notes.is_empty() {
        md.push_str("## Notes\n\n");
        for n in &notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    write_file(out.join("table.md"), md.as_bytes(), &mut files)?;
    write_file(out.join("table.csv"), table.to_csv().as_bytes(), &mut files)?;
    write_file(out.join("table.tex"), table.to_latex().as_bytes(), &mut files)?;
    if !regions.is_empty() {
        write_file(out.join("regions.csv"), region::to_csv(&regions).as_bytes(), &mut files)?;
        write_file(out.join("regions.json"), region::to_json(&regions).as_bytes(), &mut files)?;
    }
    let page = html::page_with(input.title, &table, &region::html(&regions), &figures, &notes);
    write_file(out.join("report.html"), page.as_bytes(), &mut files)?;
    files.extend(per_image_file);
    Ok(ReportOutcome { files, png_font, notes })
}

/// Draw and write the accuracy, CDF and map plots; the figures for the HTML page.
fn plots(
    out: &Path,
    input: &ReportInput,
    extras: &ReportExtras,
    table: &PaperTable,
    scored: &[(Convention, std::borrow::Cow<[Scored]>)],
    files: &mut Vec<PathBuf>,
) -> Result<Vec<html::Figure>, ReportError> {
    let mut figures = Vec::new();
    let plots_dir = out.join("plots");
    let datasets: Vec<String> = {
        let mut d: Vec<String> = Vec::new();
        for r in input.metrics.rows.iter().map(|r| &r.dataset).chain(input.results.iter().map(|r| &r.dataset)) {
            if !d.contains(r) {
                d.push(r.clone());
            }
        }
        d
    };
    for ds in &datasets {
        let rows: Vec<&MetricsRow> = input.metrics.rows.iter().filter(|r| &r.dataset == ds).collect();
        let block = table.blocks.iter().find(|b| &b.dataset == ds);
        if let Some(b) = block {
            let chart = accuracy_chart(ds, &rows, b, extras.published);
            let name = format!("accuracy_{}", slug(ds));
            figures.push(emit(&plots_dir, &name, &plot::line_chart(&chart), files, &format!(
                "Accuracy versus threshold on {ds} (log-km axis); bars are 95 % Wilson intervals; dashed lines are published figures."
            ))?);
        }
        let idx: Vec<usize> = (0..input.results.len()).filter(|&i| &input.results[i].dataset == ds).collect();
        if !idx.is_empty() {
            let chart = cdf_chart(ds, idx.iter().map(|&i| (&input.results[i], &scored[i].0, &scored[i].1[..])));
            let name = format!("cdf_{}", slug(ds));
            figures.push(emit(&plots_dir, &name, &plot::line_chart(&chart), files, &format!(
                "Cumulative distribution of errors on {ds} (log km): % of scored images with error <= x; failures under the miss policy never reach 100 %."
            ))?);
            for &i in &idx {
                let (m, note) = map_chart(&input.results[i], &scored[i].0, &scored[i].1);
                let name = format!("map_{}_{}", slug(ds), slug(&input.results[i].method));
                figures.push(emit(&plots_dir, &name, &plot::world_map(&m), files, &format!(
                    "Query locations of {} on {ds} coloured by error band (equirectangular, 30° graticule, Natural Earth 1:110m coastlines and borders).{note}",
                    input.results[i].method
                ))?);
            }
        }
    }
    Ok(figures)
}

fn row_of<'a>(m: &'a MetricsFile, method: &str, dataset: &str) -> Option<&'a MetricsRow> {
    m.rows.iter().find(|r| r.method == method && r.dataset == dataset)
}

fn write_file(path: PathBuf, bytes: &[u8], files: &mut Vec<PathBuf>) -> Result<(), ReportError> {
    atomic::write_bytes(&path, bytes)?;
    files.push(path);
    Ok(())
}

/// Write `name.svg` (and `name.png` when rendered) and return the figure for the HTML page.
pub(crate) fn emit(
    dir: &Path,
    name: &str,
    rendered: &Result<plot::Rendered, String>,
    files: &mut Vec<PathBuf>,
    caption: &str,
) -> Result<html::Figure, ReportError> {
    let svg_path = dir.join(format!("{name}.svg"));
    let r = rendered.as_ref().map_err(|message| ReportError::Plot { path: svg_path.clone(), message: message.clone() })?;
    write_file(svg_path, r.svg.as_bytes(), files)?;
    if let Some(png) = &r.png {
        write_file(dir.join(format!("{name}.png")), png, files)?;
    }
    Ok(html::Figure { caption: caption.to_string(), svg: r.svg.clone() })
}

/// File-name-safe form of a method or dataset name.
pub fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() { "unnamed".into() } else { s }
}

fn short_convention(r: &MetricsRow) -> String {
    let c = &r.convention;
    let d = match c.radius_km {
        Some(rad) => format!("haversine R={rad} km"),
        None => "geodesic WGS-84".into(),
    };
    format!("{d}, hit if d {} t, failures: {}", c.threshold_op, c.failures)
}

fn accuracy_chart(ds: &str, rows: &[&MetricsRow], block: &table::TableBlock, published: Option<&PublishedFile>) -> plot::LineChart {
    let mut series = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let ts = thresholds_of(&r.acc_pct);
        let points: Vec<(f64, f64)> = ts.iter().filter_map(|t| Some((*t, r.acc(*t)?))).collect();
        let bars = ts
            .iter()
            .filter_map(|t| r.acc_ci95_pct.get(&crate::metrics::threshold_key(*t)).map(|ci| (*t, ci[0], ci[1])))
            .collect();
        series.push(plot::Series {
            label: format!("{} (n = {})", r.method, r.n_scored),
            points,
            stroke: plot::Stroke::Solid,
            markers: true,
            bars,
            color: i,
        });
    }
    if let Some(pf) = published {
        for (j, p) in pf.results_for(ds).iter().enumerate() {
            series.push(plot::Series {
                label: format!("{} (published)", p.method),
                points: pf.thresholds_km.iter().copied().zip(p.acc.iter().copied()).collect(),
                stroke: plot::Stroke::Dashed,
                markers: true,
                bars: vec![],
                color: rows.len() + j,
            });
        }
    }
    let tmin = block.thresholds_km.first().copied().unwrap_or(1.0).min(1.0);
    let tmax = block.thresholds_km.last().copied().unwrap_or(2500.0).max(2500.0);
    plot::LineChart {
        x_axis: plot::XAxis::Log,
        title: format!("Accuracy vs. distance threshold: {ds}"),
        subtitle: rows.first().map(|r| short_convention(r)),
        x_desc: "distance threshold (km, log scale)".into(),
        y_desc: "accuracy (% of images scored)".into(),
        x_range: (tmin / 2.0, tmax * 2.0),
        y_range: (0.0, 100.0),
        series,
    }
}

/// Points of the empirical CDF on a log grid from 0.01 km to 20,040 km (half the equator).
fn cdf_points(scored: &[Scored]) -> Vec<(f64, f64)> {
    let mut d: Vec<f64> = scored.iter().filter(|s| s.counted).filter_map(|s| s.distance_km).collect();
    let n = scored.iter().filter(|s| s.counted).count();
    if n == 0 {
        return vec![];
    }
    d.sort_by(f64::total_cmp);
    let (lo, hi) = (0.01f64.ln(), 20_040f64.ln());
    (0..=300)
        .map(|i| {
            let x = (lo + (hi - lo) * i as f64 / 300.0).exp();
            let k = d.partition_point(|v| *v <= x);
            (x, 100.0 * k as f64 / n as f64)
        })
        .collect()
}

fn cdf_chart<'a>(ds: &str, items: impl Iterator<Item = (&'a MethodResult, &'a Convention, &'a [Scored])>) -> plot::LineChart {
    let mut series = Vec::new();
    let mut sub = None;
    for (i, (r, conv, s)) in items.enumerate() {
        sub.get_or_insert_with(|| format!("{}; {}", conv.distance.describe(), conv.failures.describe()));
        let n = s.iter().filter(|x| x.counted).count();
        series.push(plot::Series {
            label: format!("{} (n = {n})", r.method),
            points: cdf_points(s),
            stroke: plot::Stroke::Solid,
            markers: false,
            bars: vec![],
            color: i,
        });
    }
    plot::LineChart {
        x_axis: plot::XAxis::Log,
        title: format!("Cumulative distribution of errors: {ds}"),
        subtitle: sub,
        x_desc: "error distance (km, log scale)".into(),
        y_desc: "images with error <= x (%)".into(),
        x_range: (0.01, 20_040.0),
        y_range: (0.0, 100.0),
        series,
    }
}

/// Most points drawn on a map; larger sets are thinned with a fixed stride (stated in the caption).
pub const MAP_MAX_POINTS: usize = 20_000;

fn map_chart(r: &MethodResult, conv: &Convention, scored: &[Scored]) -> (plot::MapChart, String) {
    let ts = &conv.thresholds_km;
    let band_of = |d: f64| ts.iter().position(|t| conv.threshold_op.hit(d, *t)).unwrap_or(ts.len());
    let mut counts = vec![0usize; ts.len() + 1];
    let stride = r.records.len().div_ceil(MAP_MAX_POINTS).max(1);
    let mut points = Vec::new();
    for (i, (rec, s)) in r.records.iter().zip(scored).enumerate() {
        let band = match (rec.pred, s.distance_km) {
            (Some(_), Some(d)) => Some(band_of(d)),
            _ => None,
        };
        if let Some(b) = band {
            counts[b] += 1;
        }
        if i % stride == 0 {
            points.push((rec.truth.lat, rec.truth.lon, band));
        }
    }
    let op = conv.threshold_op.symbol();
    let mut bands = Vec::new();
    for (i, t) in ts.iter().enumerate() {
        let label = if i == 0 { format!("d {op} {t} km") } else { format!("{} – {t} km", ts[i - 1]) };
        bands.push(format!("{label} ({})", counts[i]));
    }
    if let Some(last) = ts.last() {
        bands.push(format!("beyond {last} km ({})", counts[ts.len()]));
    }
    let note = if stride > 1 {
        format!(" One image in {stride} of the {} is drawn (thinned for drawing only; every number uses all of them).", r.records.len())
    } else {
        String::new()
    };
    let m = plot::MapChart {
        title: format!("Query locations by error: {} on {}", r.method, r.dataset),
        subtitle: Some(format!("{} images; {}", r.records.len(), conv.distance.describe())),
        points,
        bands,
        none_label: None,
        country_bands: std::collections::HashMap::new(),
        grey_label: None,
    };
    (m, note)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("G3 (Gemini-2.0-Flash re-run)"), "g3__gemini-2_0-flash_re-run");
        assert_eq!(slug("///"), "unnamed");
    }
}
