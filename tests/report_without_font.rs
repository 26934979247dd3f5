//! Without a font, a report still succeeds: SVG plots only, and the notes say why.

mod common;
use georag::metrics::{Convention, MetricsFile, score};
use georag::record::{LatLon, PredictionRecord};
use georag::report::{MethodResult, ReportExtras, ReportInput, write_report_with};

#[test]
fn no_font_means_svg_only_with_a_note() {
    // This test binary never registers a font: GEORAG_FONT=none is read once, before any plot.
    unsafe { std::env::set_var("GEORAG_FONT", "none") };
    let t = LatLon::new(1.0, 2.0).unwrap();
    let res = vec![MethodResult {
        method: "m".into(),
        dataset: "d".into(),
        records: vec![PredictionRecord::ok("a", t, t), PredictionRecord::ok("b", t, LatLon::new(5.0, 5.0).unwrap())],
    }];
    let conv = Convention::default();
    let metrics = MetricsFile::new(vec![score("m", "d", &res[0].records, &conv)]);
    let input = ReportInput { title: "t", metrics: &metrics, results: &res, convention: &conv, notes: vec![] };
    let out = common::tmp("nofont");
    let o = write_report_with(&out, &input, &ReportExtras::default()).unwrap();
    assert!(o.png_font.is_err());
    assert!(out.join("plots/accuracy_d.svg").exists());
    assert!(out.join("plots/cdf_d.svg").exists());
    assert!(!out.join("plots/accuracy_d.png").exists());
    let md = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(md.contains("PNG plots were not written: GEORAG_FONT=none"), "{md}");
}
