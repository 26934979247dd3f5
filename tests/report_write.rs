//! `write_report` (what `georag run` calls): tables, self-contained HTML, PNG + SVG plots.

mod common;
use georag::metrics::{Convention, MetricsFile, score};
use georag::record::{LatLon, PredictionRecord, Status};
use georag::report::{MethodResult, ReportInput, write_report};
use georag::util::rng::Rng;

fn results() -> Vec<MethodResult> {
    let mut r = Rng::new(3);
    let mut out = Vec::new();
    for (k, method) in ["retrieval top-1", "RAG (k = 16)"].iter().enumerate() {
        let records = (0..500)
            .map(|i| {
                let t = LatLon::new(r.range(-60.0, 70.0), r.range(-180.0, 180.0)).unwrap();
                if i % 50 == 0 {
                    return PredictionRecord::failed(format!("{i}"), t, Status::Unparseable);
                }
                let s = 10f64.powf(r.range(-1.0, 1.5 - 0.3 * k as f64));
                let p = LatLon::new((t.lat + s * r.normal()).clamp(-90.0, 90.0), (t.lon + s * r.normal()).clamp(-180.0, 180.0)).unwrap();
                PredictionRecord::ok(format!("{i}"), t, p)
            })
            .collect();
        out.push(MethodResult { method: method.to_string(), dataset: "synthetic".into(), records });
    }
    out
}

#[test]
fn writes_tables_html_and_plots() {
    let out = common::tmp("report");
    let res = results();
    let conv = Convention::default();
    let metrics = MetricsFile::new(res.iter().map(|r| score(&r.method, &r.dataset, &r.records, &conv)).collect());
    let input = ReportInput {
        title: "test run",
        metrics: &metrics,
        results: &res,
        convention: &conv,
        notes: vec!["fingerprint abc".into()],
    };
    write_report(&out, &input).unwrap();
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("| RAG (k = 16) |"), "{md}");
    assert!(md.contains("Street 1 km") && md.contains("Continent 2500 km"));
    assert!(md.contains("- fingerprint abc"));
    assert!(md.contains("failures: unparseable 10"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<style>") && html.matches("<svg").count() >= 4, "inline plots");
    assert!(!html.contains("src=\"http") && !html.contains("<link"), "self-contained");
    assert!(std::fs::read_to_string(out.join("table.tex")).unwrap().contains("\\bottomrule"));
    for name in ["accuracy_synthetic", "cdf_synthetic", "map_synthetic_rag__k___16"] {
        let svg = std::fs::read_to_string(out.join("plots").join(format!("{name}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("km"), "{name}");
        if georag::report::plot::font().is_ok() {
            let png = std::fs::read(out.join("plots").join(format!("{name}.png"))).unwrap();
            assert_eq!(&png[1..4], b"PNG", "{name}");
            let img = image::load_from_memory(&png).unwrap();
            assert!(img.width() >= 1000, "{name}");
        }
    }
}

/// 50 000 images: the map draws every 3rd point (at most `MAP_MAX_POINTS`) and says so; the
/// per_image.csv and metrics are the same with `--no-plots`, which writes no plots at all.
#[test]
fn many_points_are_thinned_for_drawing_and_no_plots_changes_no_number() {
    use georag::report::{MAP_MAX_POINTS, ReportExtras, write_report_with};
    let mut r = Rng::new(5);
    let n = 50_000;
    let records: Vec<PredictionRecord> = (0..n)
        .map(|i| {
            let t = LatLon::new(r.range(-60.0, 70.0), r.range(-180.0, 180.0)).unwrap();
            let p = LatLon::new((t.lat + r.normal()).clamp(-90.0, 90.0), t.lon).unwrap();
            PredictionRecord::ok(format!("{i}"), t, p)
        })
        .collect();
    let res = vec![MethodResult { method: "m".into(), dataset: "big".into(), records }];
    let conv = Convention::default();
    let metrics = MetricsFile::new(vec![score("m", "big", &res[0].records, &conv)]);
    let input = || ReportInput { title: "big", metrics: &metrics, results: &res, convention: &conv, notes: vec![] };
    let (a, b) = (common::tmp("big-plots"), common::tmp("big-noplots"));
    let with = write_report_with(&a, &input(), &ReportExtras { per_image: true, ..Default::default() }).unwrap();
    let without = write_report_with(&b, &input(), &ReportExtras { per_image: true, no_plots: true, ..Default::default() }).unwrap();

    let svg = std::fs::read_to_string(a.join("plots/map_big_m.svg")).unwrap();
    let drawn = svg.matches("<circle").count();
    assert!(drawn <= MAP_MAX_POINTS + 20 && drawn >= n / 3 - 20, "{drawn} circles");
    let html = std::fs::read_to_string(a.join("report.html")).unwrap();
    assert!(html.contains(&format!("One image in 3 of the {n} is drawn")), "the caption states the thinning");

    assert!(!b.join("plots").exists() && without.files.iter().all(|f| !f.starts_with(b.join("plots"))));
    assert!(with.files.len() > without.files.len());
    let html = std::fs::read_to_string(b.join("report.html")).unwrap();
    assert!(!html.contains("<svg") && html.contains("Plots were not drawn (--no-plots)."));
    for f in ["per_image.csv", "table.csv", "table.tex"] {
        assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let per_image = georag::report::per_image::read(&b.join("per_image.csv")).unwrap();
    assert_eq!(per_image[0].records, res[0].records);
}
