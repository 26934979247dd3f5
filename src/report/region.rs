//! The per-region part of a report: `regions.csv`, `regions.json`, the HTML section (continent
//! table, 10 best and 10 worst countries, the same-country share) and the country-accuracy map.
//! The numbers come from [`crate::region::analyse`]; this file only lays them out.

use super::html::escape;
use super::plot;
use crate::region::{ATTRIBUTION, MIN_RANKED_N, NO_COUNTRY, RegionAnalysis, RegionRow};
use crate::record::PredictionRecord;
use std::fmt::Write as _;

/// Schema tag of `regions.json`.
pub const REGIONS_SCHEMA: &str = "georag.regions/v1";

/// How many countries each of the best / worst tables shows.
pub const TOP_K: usize = 10;

#[derive(serde::Serialize)]
struct RegionsFile<'a> {
    schema: &'static str,
    note: String,
    analyses: &'a [RegionAnalysis],
}

/// `regions.json`: every analysis, unrounded.
pub fn to_json(analyses: &[RegionAnalysis]) -> String {
    let f = RegionsFile { schema: REGIONS_SCHEMA, note: how_computed(), analyses };
    serde_json::to_string_pretty(&f).expect("regions serialise")
}

/// The footnote every region table carries.
pub fn how_computed() -> String {
    format!(
        "Images grouped by the country of their ground truth ({ATTRIBUTION}); `{NO_COUNTRY}` = a ground truth inside no country (sea or a coast the simplified borders miss). \
         Accuracy = hits / n scored under the run's convention (the same per-image scores as the main table), 95 % Wilson intervals on each region's own n. \
         Right country = counted images whose prediction lies in the ground truth's country / counted images whose ground truth has a country (a failure is never in the right country). \
         Best/worst rankings sort countries with at least {MIN_RANKED_N} scored images by accuracy at the ranking threshold (ties: larger n first)."
    )
}

/// `regions.csv`: one row per (dataset, method, level, region).
pub fn to_csv(analyses: &[RegionAnalysis]) -> String {
    let mut ts: Vec<f64> = analyses.iter().flat_map(|a| a.thresholds_km.iter().copied()).collect();
    ts.sort_by(f64::total_cmp);
    ts.dedup();
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head: Vec<String> = ["dataset", "method", "level", "code", "name", "continent", "n_expected", "n_scored"].map(String::from).to_vec();
    for t in &ts {
        head.extend([format!("acc_{t}km"), format!("ci95_lo_{t}km"), format!("ci95_hi_{t}km")]);
    }
    head.extend(["same_country_pct", "same_country", "same_country_n"].map(String::from));
    w.write_record(&head).expect("in-memory csv");
    for a in analyses {
        for r in a.continents.iter().chain(&a.countries) {
            let mut rec = vec![
                a.dataset.clone(),
                a.method.clone(),
                r.level.name().into(),
                r.code.clone(),
                r.name.clone(),
                r.continent.clone(),
                r.n_expected.to_string(),
                r.n_scored.to_string(),
            ];
            for t in &ts {
                match a.thresholds_km.iter().position(|x| x == t) {
                    Some(i) => rec.extend([r.acc_pct[i].to_string(), r.ci95_pct[i][0].to_string(), r.ci95_pct[i][1].to_string()]),
                    None => rec.extend([String::new(), String::new(), String::new()]),
                }
            }
            rec.push(r.same_country_pct().map(|x| x.to_string()).unwrap_or_default());
            rec.push(r.same_country.to_string());
            rec.push(r.same_country_n.to_string());
            w.write_record(&rec).expect("in-memory csv");
        }
    }
    String::from_utf8(w.into_inner().expect("in-memory csv")).expect("utf-8 csv")
}

/// One line per analysis for the report notes.
pub fn notes(analyses: &[RegionAnalysis]) -> Vec<String> {
    analyses
        .iter()
        .map(|a| {
            let share = a.same_country_pct().map(|p| format!("{p:.1} %")).unwrap_or_else(|| "-".into());
            format!(
                "{} on {}: predictions in the right country {share} ({} of {} counted images whose ground truth has a country); {} countries, {} continents (regions.csv).",
                a.method,
                a.dataset,
                a.same_country,
                a.same_country_n,
                a.countries.iter().filter(|r| r.code != NO_COUNTRY).count(),
                a.continents.iter().filter(|r| r.code != NO_COUNTRY).count()
            )
        })
        .collect()
}

fn cell(r: &RegionRow, i: usize) -> String {
    format!("{:.1} <span class=\"ci\">[{:.1}, {:.1}]</span>", r.acc_pct[i], r.ci95_pct[i][0], r.ci95_pct[i][1])
}

fn table(a: &RegionAnalysis, rows: &[&RegionRow], first: &str, s: &mut String) {
    s.push_str("<div class=\"wide\"><table>\n<thead><tr>");
    let _ = write!(s, "<th>{}</th><th>n</th>", escape(first));
    for t in &a.thresholds_km {
        let _ = write!(s, "<th>{t} km</th>");
    }
    s.push_str("<th>right country</th></tr></thead>\n<tbody>\n");
    for r in rows {
        let label = if r.level == crate::region::Level::Country && r.code != NO_COUNTRY { format!("{} ({})", r.name, r.code) } else { r.name.clone() };
        let _ = write!(s, "<tr><td>{}</td><td>{}</td>", escape(&label), r.n_scored);
        for i in 0..a.thresholds_km.len() {
            let _ = write!(s, "<td>{}</td>", cell(r, i));
        }
        let share = r.same_country_pct().map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "<td>{share}</td></tr>");
    }
    s.push_str("</tbody>\n</table></div>\n");
}

/// The HTML section: per analysis a continent table and the best / worst countries.
pub fn html(analyses: &[RegionAnalysis]) -> String {
    let mut s = String::new();
    if analyses.is_empty() {
        return s;
    }
    s.push_str("<h2>By region of the ground truth</h2>\n");
    for a in analyses {
        let _ = writeln!(s, "<h3>{} on {}</h3>", escape(&a.method), escape(&a.dataset));
        let share = a.same_country_pct().map(|p| format!("{p:.1} %")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "<p>Predictions in the right country: <b>{share}</b> ({} of {}).</p>",
            a.same_country, a.same_country_n
        );
        let conts: Vec<&RegionRow> = a.continents.iter().collect();
        table(a, &conts, "continent", &mut s);
        let (best, worst) = a.best_and_worst(TOP_K);
        if best.is_empty() {
            let _ = writeln!(s, "<p>No country has {MIN_RANKED_N} or more scored images: no ranking.</p>");
        } else {
            let _ = writeln!(s, "<p>Best countries by accuracy at {} km (at least {MIN_RANKED_N} images):</p>", a.rank_threshold_km);
            table(a, &best, "country", &mut s);
            if !worst.is_empty() {
                let _ = writeln!(s, "<p>Worst countries by accuracy at {} km, worst first:</p>", a.rank_threshold_km);
                table(a, &worst, "country", &mut s);
            }
        }
    }
    let _ = writeln!(s, "<ol class=\"foot\"><li>{}</li></ol>", escape(&how_computed()));
    s
}

/// Accuracy bands of the country map, best first.
const MAP_BANDS: [(f64, &str); 5] = [(80.0, "80-100 %"), (60.0, "60-80 %"), (40.0, "40-60 %"), (20.0, "20-40 %"), (0.0, "0-20 %")];

/// The country choropleth: every country with images filled by its accuracy at the ranking
/// threshold, grey when it has fewer than [`MIN_RANKED_N`] scored images. Countries too small for
/// the 1:110m outlines (Singapore, Malta, ...) that are ranked get a dot at the mean of their
/// images' ground truths instead.
pub fn country_map(a: &RegionAnalysis, records: &[PredictionRecord]) -> plot::MapChart {
    let i = a.thresholds_km.iter().position(|&t| t == a.rank_threshold_km);
    let outlined = crate::region::outline::outlined_codes();
    let mut country_bands = std::collections::HashMap::new();
    let mut counts = [0usize; MAP_BANDS.len()];
    let mut dots: Vec<(&str, Option<usize>)> = Vec::new();
    for r in a.countries.iter().filter(|r| r.code != NO_COUNTRY) {
        let b = i.filter(|_| r.n_scored >= MIN_RANKED_N).map(|i| MAP_BANDS.iter().position(|(lo, _)| r.acc_pct[i] >= *lo).unwrap_or(MAP_BANDS.len() - 1));
        if let Some(b) = b {
            counts[b] += 1;
        }
        if outlined.contains_key(r.code.as_str()) {
            country_bands.insert(r.code.clone(), b);
        } else if b.is_some() {
            dots.push((r.code.as_str(), b));
        }
    }
    let mut sums: std::collections::HashMap<&str, (f64, f64, usize)> = dots.iter().map(|(c, _)| (*c, (0.0, 0.0, 0))).collect();
    for r in records {
        if let Some(s) = sums.get_mut(crate::region::country_code(r.truth)) {
            *s = (s.0 + r.truth.lat, s.1 + r.truth.lon, s.2 + 1);
        }
    }
    let points = dots.iter().filter_map(|(c, b)| sums.get(c).filter(|s| s.2 > 0).map(|s| (s.0 / s.2 as f64, s.1 / s.2 as f64, *b))).collect::<Vec<_>>();
    let no_country = a.countries.iter().find(|r| r.code == NO_COUNTRY).map_or(0, |r| r.n_expected);
    plot::MapChart {
        title: format!("Accuracy at {} km by country of the ground truth: {} on {}", a.rank_threshold_km, a.method, a.dataset),
        subtitle: Some(format!(
            "{} images; {} of them in no country; {} ranked countries too small to outline shown as dots",
            records.len(),
            no_country,
            points.len()
        )),
        points,
        bands: MAP_BANDS.iter().zip(counts).map(|((_, l), c)| format!("{l} ({c} {})", if c == 1 { "country" } else { "countries" })).collect(),
        none_label: None,
        country_bands,
        // Short: the legend box has a fixed width; the caption says what it means.
        grey_label: Some(format!("n < {MIN_RANKED_N}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Convention, score_records};
    use crate::record::LatLon;

    #[test]
    fn csv_and_html_carry_every_region() {
        let p = LatLon { lat: 48.85, lon: 2.35 };
        let q = LatLon { lat: 35.68, lon: 139.65 };
        let recs: Vec<PredictionRecord> = (0..12).map(|i| PredictionRecord::ok(format!("{i}"), if i < 10 { p } else { q }, p)).collect();
        let conv = Convention::default();
        let a = crate::region::analyse("nearest", "synthetic", &recs, &score_records(&recs, &conv), &conv);
        let csv = to_csv(std::slice::from_ref(&a));
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].starts_with("dataset,method,level,code,name,continent,n_expected,n_scored,acc_1km,"));
        // 2 continents + 2 countries.
        assert_eq!(lines.len(), 5, "{csv}");
        assert!(lines.iter().any(|l| l.starts_with("synthetic,nearest,country,FR,France,Europe,10,10,100,")), "{csv}");
        let h = html(std::slice::from_ref(&a));
        assert!(h.contains("France (FR)") && h.contains("Predictions in the right country: <b>83.3 %</b> (10 of 12)"), "{h}");
        assert!(!h.contains("Japan (JP)"), "Japan has 2 images: not ranked");
        let m = country_map(&a, &recs);
        assert_eq!(m.country_bands.get("FR"), Some(&Some(0)), "France: 10 images, all hits");
        assert_eq!(m.country_bands.get("JP"), Some(&None), "Japan: too few images, grey");
        assert_eq!(m.country_bands.len(), 2);
        assert!(m.points.is_empty(), "both countries have outlines");
        assert_eq!(m.bands[0], "80-100 % (1 country)");
        assert_eq!(m.bands[4], "0-20 % (0 countries)");
        // Drawn: France in the top band's colour, Japan grey, the rest plain land.
        let svg = crate::report::plot::world_map(&m).expect("draws").svg;
        let fill = |c: plotters::style::RGBColor| format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        let top = fill(crate::report::plot::band_color(0, m.bands.len()));
        assert_eq!(svg.matches(&top).count(), crate::region::outline::world().countries.iter().find(|c| c.code == "FR").unwrap().fill_rings.len() + 1, "France's polygons and the legend swatch");

    }

    /// A ranked country too small for the outlines (Singapore) is a dot at its images' mean.
    #[test]
    fn small_countries_become_dots() {
        let sg = LatLon { lat: 1.35, lon: 103.82 };
        let recs: Vec<PredictionRecord> = (0..10).map(|i| PredictionRecord::ok(format!("{i}"), sg, sg)).collect();
        let conv = Convention::default();
        let a = crate::region::analyse("m", "d", &recs, &score_records(&recs, &conv), &conv);
        assert_eq!(crate::region::country_code(sg), "SG");
        assert!(!crate::region::outline::outlined_codes().contains_key("SG"));
        let m = country_map(&a, &recs);
        assert!(m.country_bands.is_empty());
        assert_eq!(m.points.len(), 1);
        assert!((m.points[0].0 - 1.35).abs() < 1e-9 && m.points[0].2 == Some(0));
    }
}
