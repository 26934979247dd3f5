//! Paper-style tables: methods as rows, thresholds as columns, one block per dataset, with
//! published rows beside reproduced ones, a Δ column and a footnote generated from the
//! convention. Rendered as Markdown, CSV and LaTeX (booktabs); HTML lives in `html.rs`.

use crate::eval::published::PublishedFile;
use crate::metrics::describe::thresholds_of;
use crate::metrics::{GEOSCORE_SCALE_KM, MetricsFile, MetricsRow};
use std::fmt::Write as _;

/// Whether a row was computed here or copied from a paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    Reproduced,
    Published,
}

/// One table row.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRow {
    pub method: String,
    pub kind: RowKind,
    /// Accuracy (%) per block threshold; `None` where the row has no figure.
    pub acc: Vec<Option<f64>>,
    /// 95 % Wilson interval (%) per block threshold (reproduced rows only).
    pub ci95: Vec<Option<[f64; 2]>>,
    /// Reproduced minus published accuracy (percentage points) per threshold, for reproduced
    /// rows matched to a published row.
    pub delta_pp: Option<Vec<Option<f64>>>,
    /// Name of the published row the Δ refers to.
    pub delta_vs: Option<String>,
    pub median_km: Option<f64>,
    pub geoscore: Option<f64>,
    pub coverage: Option<f64>,
    pub n_expected: Option<usize>,
    pub n_scored: Option<usize>,
    /// Source of a published row.
    pub source: Option<String>,
}

/// One dataset's block.
#[derive(Clone, Debug, PartialEq)]
pub struct TableBlock {
    pub dataset: String,
    pub thresholds_km: Vec<f64>,
    pub rows: Vec<TableRow>,
    /// Generated notes: convention, counts, interval method, definitions.
    pub footnotes: Vec<String>,
}

impl TableBlock {
    /// Whether the block has a Δ column: only when some row was matched to a published one.
    pub fn has_delta(&self) -> bool {
        self.rows.iter().any(|r| r.delta_pp.is_some())
    }
}

/// A whole paper-style table.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PaperTable {
    pub blocks: Vec<TableBlock>,
}

/// How reproduced rows are matched to published rows for the Δ column: pairs
/// (reproduced method, published method); unlisted methods match a published row of the same
/// name (case-insensitive).
pub type MethodAliases = [(String, String)];

/// Name of a standard threshold as the papers label it.
pub fn threshold_name(t: f64) -> Option<&'static str> {
    match t {
        1.0 => Some("Street"),
        25.0 => Some("City"),
        200.0 => Some("Region"),
        750.0 => Some("Country"),
        2500.0 => Some("Continent"),
        _ => None,
    }
}

/// `1 km`, `0.5 km`, `2500 km`.
pub fn km_label(t: f64) -> String {
    format!("{t} km")
}

impl PaperTable {
    /// Build the table from metrics rows (reproduced) and, optionally, published rows.
    /// Datasets appear in the order of their first metrics row; published rows of datasets
    /// without reproduced rows are not shown.
    pub fn build(metrics: &MetricsFile, published: Option<&PublishedFile>, aliases: &MethodAliases) -> Self {
        let mut datasets: Vec<&str> = Vec::new();
        for r in &metrics.rows {
            if !datasets.contains(&r.dataset.as_str()) {
                datasets.push(&r.dataset);
            }
        }
        let blocks = datasets
            .into_iter()
            .map(|ds| {
                let rows: Vec<&MetricsRow> = metrics.rows.iter().filter(|r| r.dataset == ds).collect();
                build_block(ds, &rows, published, aliases)
            })
            .collect();
        PaperTable { blocks }
    }

    /// Markdown: one `###` block per dataset, a table, and the footnotes as a list.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        for b in &self.blocks {
            let _ = writeln!(s, "### {}\n", b.dataset);
            let header = header_cells(b);
            let _ = writeln!(s, "| {} |", header.join(" | "));
            let align: Vec<&str> = header.iter().enumerate().map(|(i, _)| if i == 0 { ":--" } else { "--:" }).collect();
            let _ = writeln!(s, "| {} |", align.join(" | "));
            for r in &b.rows {
                let _ = writeln!(s, "| {} |", row_cells(b, r, true).join(" | "));
            }
            s.push('\n');
            for (i, f) in b.footnotes.iter().enumerate() {
                let _ = writeln!(s, "{}. {}", i + 1, f);
            }
            s.push('\n');
        }
        s
    }

    /// CSV: one line per row, machine-readable (unrounded numbers), columns for every threshold
    /// of any block (`acc_1km`, `ci95_lo_1km`, `ci95_hi_1km`, `delta_pp_1km`, ...).
    pub fn to_csv(&self) -> String {
        let mut ts: Vec<f64> = self.blocks.iter().flat_map(|b| b.thresholds_km.iter().copied()).collect();
        ts.sort_by(f64::total_cmp);
        ts.dedup();
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut head = vec!["dataset".to_string(), "method".into(), "kind".into(), "source".into()];
        for t in &ts {
            head.extend([format!("acc_{t}km"), format!("ci95_lo_{t}km"), format!("ci95_hi_{t}km"), format!("delta_pp_{t}km")]);
        }
        head.extend(["delta_vs", "median_km", "geoscore", "coverage", "n_expected", "n_scored"].map(String::from));
        w.write_record(&head).expect("in-memory csv");
        let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
        for b in &self.blocks {
            for r in &b.rows {
                let mut rec = vec![
                    b.dataset.clone(),
                    r.method.clone(),
                    match r.kind {
                        RowKind::Reproduced => "reproduced".into(),
                        RowKind::Published => "published".into(),
                    },
                    r.source.clone().unwrap_or_default(),
                ];
                for t in &ts {
                    let i = b.thresholds_km.iter().position(|x| x == t);
                    let acc = i.and_then(|i| r.acc[i]);
                    let ci = i.and_then(|i| r.ci95[i]);
                    let d = i.and_then(|i| r.delta_pp.as_ref().and_then(|d| d[i]));
                    rec.extend([opt(acc), opt(ci.map(|c| c[0])), opt(ci.map(|c| c[1])), opt(d)]);
                }
                rec.push(r.delta_vs.clone().unwrap_or_default());
                rec.extend([opt(r.median_km), opt(r.geoscore), opt(r.coverage)]);
                rec.push(r.n_expected.map(|n| n.to_string()).unwrap_or_default());
                rec.push(r.n_scored.map(|n| n.to_string()).unwrap_or_default());
                w.write_record(&rec).expect("in-memory csv");
            }
        }
        String::from_utf8(w.into_inner().expect("in-memory csv")).expect("utf-8 csv")
    }

    /// LaTeX with booktabs: one `tabular` per dataset, published rows in italics, footnotes in
    /// `\footnotesize` below. Needs `\usepackage{booktabs}`.
    pub fn to_latex(&self) -> String {
        let mut s = String::from("% Generated by georag; requires \\usepackage{booktabs}.\n");
        for b in &self.blocks {
            let nt = b.thresholds_km.len();
            let cols = format!("l{}rrrr{}", "r".repeat(nt), if b.has_delta() { "l" } else { "" });
            let _ = writeln!(s, "\\begin{{table}}[t]\n\\centering\n\\small");
            let _ = writeln!(s, "\\caption{{{}: accuracy (\\%) within each distance}}", latex_escape(&b.dataset));
            let _ = writeln!(s, "\\begin{{tabular}}{{{cols}}}\n\\toprule");
            let names: Vec<String> = b
                .thresholds_km
                .iter()
                .map(|t| threshold_name(*t).map(|n| n.to_string()).unwrap_or_default())
                .collect();
            if names.iter().any(|n| !n.is_empty()) {
                let pad = if b.has_delta() { " & & & & &" } else { " & & & &" };
                let _ = writeln!(s, " & {}{pad} \\\\", names.join(" & "));
            }
            let kms: Vec<String> = b.thresholds_km.iter().map(|t| latex_escape(&km_label(*t))).collect();
            let delta = if b.has_delta() { " & $\\Delta$ vs.\\ published (pp)" } else { "" };
            let _ = writeln!(s, "Method & {} & Median (km) & GeoScore & Coverage & $n${delta} \\\\\n\\midrule", kms.join(" & "));
            for r in &b.rows {
                let cells: Vec<String> = row_cells(b, r, false).into_iter().map(|c| latex_escape(&c)).collect();
                let line = cells.join(" & ");
                if r.kind == RowKind::Published {
                    let it: Vec<String> = line.split(" & ").map(|c| if c.is_empty() { String::new() } else { format!("\\textit{{{c}}}") }).collect();
                    let _ = writeln!(s, "{} \\\\", it.join(" & "));
                } else {
                    let _ = writeln!(s, "{line} \\\\");
                }
            }
            let _ = writeln!(s, "\\bottomrule\n\\end{{tabular}}");
            let _ = writeln!(s, "\\par\\vspace{{2pt}}\\footnotesize");
            for (i, f) in b.footnotes.iter().enumerate() {
                let _ = writeln!(s, "({}) {}\\\\", i + 1, latex_escape(f));
            }
            let _ = writeln!(s, "\\end{{table}}\n");
        }
        s
    }
}

/// Header cells of a block: Method, thresholds, summary columns.
pub fn header_cells(b: &TableBlock) -> Vec<String> {
    let mut h = vec!["Method".to_string()];
    for t in &b.thresholds_km {
        h.push(match threshold_name(*t) {
            Some(n) => format!("{n} {}", km_label(*t)),
            None => km_label(*t),
        });
    }
    h.extend(["Median km", "GeoScore", "Coverage", "n"].map(String::from));
    if b.has_delta() {
        h.push("Δ vs published (pp)".to_string());
    }
    h
}

/// Display cells of a row (accuracy to 2 decimals for reproduced rows, as printed for published
/// ones; intervals to 1 decimal when `with_ci`).
pub fn row_cells(b: &TableBlock, r: &TableRow, with_ci: bool) -> Vec<String> {
    let mut c = vec![match r.kind {
        RowKind::Reproduced => r.method.clone(),
        RowKind::Published => format!("{} (published)", r.method),
    }];
    for (i, a) in r.acc.iter().enumerate() {
        c.push(match (a, r.ci95[i], r.kind) {
            (None, _, _) => "–".to_string(),
            (Some(a), _, RowKind::Published) => format!("{a}"),
            (Some(a), Some(ci), RowKind::Reproduced) if with_ci => format!("{a:.2} [{:.1}, {:.1}]", ci[0], ci[1]),
            (Some(a), _, RowKind::Reproduced) => format!("{a:.2}"),
        });
    }
    c.push(r.median_km.map(|m| format!("{m:.2}")).unwrap_or_else(|| "–".into()));
    c.push(r.geoscore.map(|g| format!("{g:.0}")).unwrap_or_else(|| "–".into()));
    c.push(r.coverage.map(|v| format!("{:.2} %", 100.0 * v)).unwrap_or_else(|| "–".into()));
    c.push(match (r.n_scored, r.n_expected) {
        (Some(s), Some(e)) if s == e => format!("{e}"),
        (Some(s), Some(e)) => format!("{s}/{e}"),
        (_, Some(e)) => format!("{e}"),
        _ => "–".into(),
    });
    if !b.has_delta() {
        return c;
    }
    c.push(match &r.delta_pp {
        Some(d) => d
            .iter()
            .map(|x| x.map(|v| format!("{v:+.2}")).unwrap_or_else(|| "–".into()))
            .collect::<Vec<_>>()
            .join(" / "),
        None => String::new(),
    });
    c
}

fn build_block(
    dataset: &str,
    rows: &[&MetricsRow],
    published: Option<&PublishedFile>,
    aliases: &MethodAliases,
) -> TableBlock {
    let mut thresholds: Vec<f64> = rows.iter().flat_map(|r| thresholds_of(&r.acc_pct)).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let pubs = published.map(|p| p.results_for(dataset)).unwrap_or(&[]);
    let mut out = Vec::new();
    let mut footnotes = Vec::new();

    for r in rows {
        let target = aliases
            .iter()
            .find(|(rep, _)| rep.eq_ignore_ascii_case(&r.method))
            .map(|(_, p)| p.as_str())
            .unwrap_or(&r.method);
        let matched = pubs.iter().find(|p| p.method.eq_ignore_ascii_case(target));
        let acc: Vec<Option<f64>> = thresholds.iter().map(|t| r.acc(*t)).collect();
        let delta_pp = match (matched, published) {
            (Some(m), Some(pf)) => Some(
                thresholds
                    .iter()
                    .zip(&acc)
                    .map(|(t, a)| Some(a.as_ref()? - pf.acc_at(m, *t)?))
                    .collect(),
            ),
            _ => None,
        };
        out.push(TableRow {
            method: r.method.clone(),
            kind: RowKind::Reproduced,
            ci95: thresholds
                .iter()
                .map(|t| r.acc_ci95_pct.get(&crate::metrics::threshold_key(*t)).copied())
                .collect(),
            acc,
            delta_vs: matched.map(|m| m.method.clone()),
            delta_pp,
            median_km: r.median_km,
            geoscore: Some(r.geoscore),
            coverage: Some(r.coverage),
            n_expected: Some(r.n_expected),
            n_scored: Some(r.n_scored),
            source: None,
        });
    }
    if let Some(pf) = published {
        for p in pubs {
            out.push(TableRow {
                method: p.method.clone(),
                kind: RowKind::Published,
                acc: thresholds.iter().map(|t| pf.acc_at(p, *t)).collect(),
                ci95: vec![None; thresholds.len()],
                delta_pp: None,
                delta_vs: None,
                median_km: None,
                geoscore: None,
                coverage: None,
                n_expected: pf.datasets.iter().find(|(k, _)| k.eq_ignore_ascii_case(dataset)).map(|(_, d)| d.n_images),
                n_scored: None,
                source: Some(p.source.clone()),
            });
        }
    }

    // Footnotes, all generated from the data behind the rows.
    let mut conventions: Vec<(String, Vec<&str>)> = Vec::new();
    for r in rows {
        let d = r.convention.describe();
        match conventions.iter_mut().find(|(c, _)| *c == d) {
            Some((_, m)) => m.push(&r.method),
            None => conventions.push((d, vec![&r.method])),
        }
    }
    for (d, methods) in &conventions {
        if conventions.len() == 1 {
            footnotes.push(format!("Convention of the reproduced rows: {d}."));
        } else {
            footnotes.push(format!("Convention of {}: {d}.", methods.join(", ")));
        }
    }
    let counts: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut s = format!(
                "{}: {} / {} / {:.2} %",
                r.method,
                r.n_expected,
                r.n_scored,
                100.0 * r.coverage
            );
            if !r.failures_by_status.is_empty() {
                let f: Vec<String> = r.failures_by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
                s.push_str(&format!(" (failures: {})", f.join(", ")));
            }
            s
        })
        .collect();
    footnotes.push(format!(
        "n expected / n scored / coverage (answered / expected): {}.",
        counts.join("; ")
    ));
    footnotes.push(
        "Accuracy = % of the n scored images whose error is within the threshold; brackets: 95 % Wilson score interval. \
         Median = median error (km) over the scored distances. Coverage = share of images with a valid prediction."
            .to_string(),
    );
    footnotes.push(format!(
        "GeoScore = mean over the n scored images of 5000 exp(-d / {GEOSCORE_SCALE_KM} km); a failure counted as a miss scores 0."
    ));
    if let Some(pf) = published.filter(|_| !pubs.is_empty()) {
        let mut srcs: Vec<String> = Vec::new();
        for p in pubs {
            let line = match pf.convention_for(p) {
                Some(c) => format!("{} ({}: {}, {}, failures {})", p.method, p.source, c.distance, c.threshold, c.failures),
                None => format!("{} ({}: convention not stated)", p.method, p.source),
            };
            srcs.push(line);
        }
        footnotes.push(format!(
            "Published rows are copied as printed, each under its source's own convention: {}.",
            srcs.join("; ")
        ));
        if out.iter().any(|r| r.delta_pp.is_some()) {
            footnotes.push(
                "Δ = reproduced − published accuracy in percentage points, per threshold in column order; \
                 a Δ within the Wilson interval's half-width is not evidence of a difference."
                    .to_string(),
            );
        }
    }
    TableBlock { dataset: dataset.to_string(), thresholds_km: thresholds, rows: out, footnotes }
}

/// Escape LaTeX special characters in text cells.
pub fn latex_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => o.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                o.push('\\');
                o.push(ch);
            }
            '~' => o.push_str("\\textasciitilde{}"),
            '^' => o.push_str("\\textasciicircum{}"),
            'Δ' => o.push_str("$\\Delta$"),
            '−' => o.push('-'),
            '–' => o.push_str("--"),
            '<' => o.push_str("$<$"),
            '>' => o.push_str("$>$"),
            _ => o.push(ch),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::published::{PublishedDataset, PublishedResult};
    use crate::metrics::{Convention, score};
    use crate::record::{LatLon, PredictionRecord, Status};

    fn metrics() -> MetricsFile {
        let t = LatLon::new(10.0, 10.0).unwrap();
        let recs = vec![
            PredictionRecord::ok("a", t, t),
            PredictionRecord::ok("b", t, LatLon::new(10.1, 10.0).unwrap()),
            PredictionRecord::failed("c", t, Status::Missing),
            PredictionRecord::ok("d", t, LatLon::new(-10.0, 10.0).unwrap()),
        ];
        MetricsFile::new(vec![score("Mine_1", "im2gps3k", &recs, &Convention::default())])
    }

    fn published() -> PublishedFile {
        PublishedFile {
            thresholds_km: vec![1.0, 25.0, 200.0, 750.0, 2500.0],
            datasets: [(
                "im2gps3k".to_string(),
                PublishedDataset {
                    n_images: 2997,
                    results: vec![PublishedResult {
                        method: "GeoCLIP".into(),
                        year: 2023,
                        kind: "retrieval".into(),
                        acc: vec![14.1, 34.5, 50.7, 69.7, 83.8],
                        source: "GeoCLIP, NeurIPS 2023".into(),
                    }],
                },
            )]
            .into(),
            conventions: vec![],
        }
    }

    #[test]
    fn builds_rows_deltas_and_footnotes() {
        let m = metrics();
        let p = published();
        let aliases = vec![("mine_1".to_string(), "geoclip".to_string())];
        let t = PaperTable::build(&m, Some(&p), &aliases);
        let b = &t.blocks[0];
        assert_eq!(b.thresholds_km, vec![1.0, 25.0, 200.0, 750.0, 2500.0]);
        assert_eq!(b.rows.len(), 2);
        let r = &b.rows[0];
        // 1 of 4 within 1 km (a), 2 within 25 km (a, b: 11.1 km), c missing counts as a miss.
        assert_eq!(r.acc[0], Some(25.0));
        assert_eq!(r.acc[1], Some(50.0));
        let d = r.delta_pp.as_ref().unwrap();
        assert!((d[0].unwrap() - (25.0 - 14.1)).abs() < 1e-9);
        assert_eq!(r.delta_vs.as_deref(), Some("GeoCLIP"));
        let md = t.to_markdown();
        assert!(md.contains("| Mine_1 | 25.00 ["), "{md}");
        assert!(md.contains("GeoCLIP (published) | 14.1 | 34.5"), "{md}");
        assert!(md.contains("haversine, R = 6371 km; hit when distance < threshold; failures count as misses"));
        assert!(md.contains("Mine_1: 4 / 4 / 75.00 % (failures: missing 1)"), "{md}");
        assert!(md.contains("Wilson"));
        let tex = t.to_latex();
        assert!(tex.contains("\\toprule") && tex.contains("Mine\\_1") && tex.contains("\\textit{GeoCLIP (published)}"), "{tex}");
        assert!(!tex.contains(" % ") || tex.contains("\\%"));
        let csv = t.to_csv();
        let mut rd = csv::Reader::from_reader(csv.as_bytes());
        let h = rd.headers().unwrap().clone();
        let i = h.iter().position(|c| c == "delta_pp_1km").unwrap();
        let first = rd.records().next().unwrap().unwrap();
        assert!((first[i].parse::<f64>().unwrap() - 10.9).abs() < 1e-9);
    }

    #[test]
    fn without_published_rows_no_delta() {
        let t = PaperTable::build(&metrics(), None, &[]);
        assert_eq!(t.blocks[0].rows.len(), 1);
        assert!(t.blocks[0].rows[0].delta_pp.is_none());
        assert!(!t.to_markdown().contains("Published rows"));
    }

    #[test]
    fn latex_escapes_specials() {
        assert_eq!(latex_escape("a_b & 5% #1"), "a\\_b \\& 5\\% \\#1");
    }
}
