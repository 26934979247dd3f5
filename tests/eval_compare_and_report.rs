//! `georag compare` and `georag report` on runs written by `georag eval`.

mod common;
use georag::eval::published::PublishedFile;
use georag::eval::{CompareArgs, ReportArgs, run_compare, run_eval, run_report};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Ground truth of 400 images and two prediction files: B is better than A at 25 km.
fn fixtures(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut gt = String::from("IMG_ID,LAT,LON\n");
    let mut a = String::from("IMG_ID,PRED_LAT,PRED_LON\n");
    let mut b = a.clone();
    for i in 0..400 {
        let (lat, lon) = (-50.0 + (i as f64) * 0.25, -170.0 + (i as f64) * 0.8);
        writeln!(gt, "{i}.jpg,{lat},{lon}").unwrap();
        // A: 0.5 deg off (~56 km) for most images; B: 0.1 deg (~11 km) for most.
        let da = if i % 10 == 0 { 0.05 } else { 0.5 };
        let db = if i % 10 == 3 { 0.5 } else { 0.1 };
        writeln!(a, "{i}.jpg,{},{lon}", lat + da).unwrap();
        writeln!(b, "{i}.jpg,{},{lon}", lat + db).unwrap();
    }
    let w = |n: &str, s: &str| {
        let p = dir.join(n);
        std::fs::write(&p, s).unwrap();
        p
    };
    (w("gt.csv", &gt), w("a.csv", &a), w("b.csv", &b))
}

#[test]
fn compare_two_eval_runs_and_render_a_report() {
    let dir = common::tmp("cmp");
    let (gt, pa, pb) = fixtures(&dir);
    for (p, name, method) in [(&pa, "run_a", "GeoCLIP"), (&pb, "run_b", "Mine")] {
        let mut a = common::eval_args(p.clone(), dir.join(name));
        a.ground_truth = Some(gt.clone());
        a.method = Some(method.into());
        a.dataset = Some("im2gps3k".into());
        run_eval(&a).unwrap();
    }
    let args = CompareArgs {
        run_a: dir.join("run_a"),
        run_b: dir.join("run_b"),
        method_a: None,
        method_b: None,
        dataset: None,
        distance: None,
        threshold_op: None,
        failures: None,
        thresholds: None,
        alpha: 0.05,
        out: Some(dir.join("cmp")),
    };
    let o = run_compare(&args).unwrap();
    assert_eq!(o.n_paired, 400);
    let at = |t: f64| o.rows.iter().find(|r| r.threshold_km == t).unwrap();
    // 25 km: A hits 40 (i % 10 == 0), B hits 360 (all but i % 10 == 3).
    assert_eq!((at(25.0).acc_a_pct, at(25.0).acc_b_pct), (10.0, 90.0));
    assert!(at(25.0).verdict.starts_with("B better"), "{}", at(25.0).verdict);
    // 2500 km: both hit everything.
    assert!(at(2500.0).verdict.starts_with("within noise"));
    assert!(std::fs::read_to_string(dir.join("cmp/compare.md")).unwrap().contains("McNemar"));

    // Paper table with the project's published rows (the file is part of the repository).
    let published = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/references/published.yaml");
    let rargs = ReportArgs {
        inputs: vec![dir.join("run_a"), dir.join("run_b").join("metrics.json")],
        out: dir.join("report"),
        published: Some(published),
        no_published: false,
        matches: vec!["Mine=G3".into()],
        title: "paper table".into(),
        alpha: 0.05,
    };
    let r = run_report(&rargs).unwrap();
    assert!(r.files.iter().any(|f| f.ends_with("table.tex")));
    let md = std::fs::read_to_string(dir.join("report/table.md")).unwrap();
    assert!(md.contains("GeoCLIP (published) | 14.1 | 34.5 | 50.7 | 69.7 | 83.8"), "{md}");
    // Δ of the reproduced GeoCLIP at 1 km: 0 % reproduced - 14.1 published.
    assert!(md.contains("| -14.10 / "), "{md}");
    assert!(md.contains("Δ = reproduced − published"));
    assert!(md.contains("G3, NeurIPS 2024: ellipsoidal geodesic (geopy), <, failures counted as (0,0) predictions"), "{md}");
    let csv = std::fs::read_to_string(dir.join("report/table.csv")).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("im2gps3k,Mine,reproduced,")));
    let html = std::fs::read_to_string(dir.join("report/report.html")).unwrap();
    assert!(html.contains("class=\"published\""));
}

/// The project's copy of the published figures agrees with the shared reference file.
#[test]
fn published_yaml_matches_the_shared_reference() {
    let ours = PublishedFile::read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/references/published.yaml")).unwrap();
    assert_eq!(ours.results_for("im2gps3k").len(), 9);
    assert!(ours.results_for("yfcc4k").iter().all(|r| !r.source.is_empty()));
    let Some(shared) = common::shared("reference/published_results.yaml") else { return };
    let theirs = PublishedFile::read(&shared).unwrap();
    assert_eq!(ours, theirs);
}

/// `georag eval` reports accuracy by country and continent of the ground truth: 12 images in
/// Paris predicted in Paris, 10 in Tokyo predicted in Osaka (~400 km), 2 in Madrid predicted in
/// Paris, 3 in the Atlantic; and
/// writes nothing of it under `--no-regions`.
#[test]
fn eval_breaks_accuracy_down_by_region() {
    let dir = common::tmp("eval_regions");
    let mut gt = String::from("IMG_ID,LAT,LON\n");
    let mut pred = String::from("IMG_ID,PRED_LAT,PRED_LON\n");
    for i in 0..27 {
        let (t, p) = match i {
            0..12 => ((48.857, 2.352), (48.857, 2.353)),
            12..22 => ((35.68, 139.69), (34.69, 135.50)),
            22..24 => ((40.42, -3.70), (48.857, 2.352)),
            _ => ((30.0, -40.0), (48.857, 2.352)),
        };
        writeln!(gt, "{i}.jpg,{},{}", t.0, t.1).unwrap();
        writeln!(pred, "{i}.jpg,{},{}", p.0, p.1).unwrap();
    }
    std::fs::write(dir.join("gt.csv"), gt).unwrap();
    std::fs::write(dir.join("pred.csv"), pred).unwrap();
    let mut a = common::eval_args(dir.join("pred.csv"), dir.join("out"));
    a.ground_truth = Some(dir.join("gt.csv"));
    a.method = Some("m".into());
    a.dataset = Some("d".into());
    let o = run_eval(&a).unwrap();
    assert!(o.files.iter().any(|f| f.ends_with("regions.csv")));
    let rows: Vec<Vec<String>> = csv::Reader::from_path(dir.join("out/regions.csv")).unwrap().records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    let row = |level: &str, code: &str| -> Vec<String> {
        rows.iter().find(|r| r[0] == "d" && r[1] == "m" && r[2] == level && r[3] == code).cloned().unwrap_or_else(|| panic!("no {level} {code} row in {rows:?}"))
    };
    // dataset,method,level,code,name,continent,n_expected,n_scored, then per threshold acc, ci95_lo, ci95_hi.
    let counts_and_acc = |r: Vec<String>| -> Vec<String> { [6, 7, 8, 11, 14, 17, 20].iter().map(|&i| r[i].clone()).collect() };
    assert_eq!(counts_and_acc(row("country", "FR")), ["12", "12", "100", "100", "100", "100", "100"]);
    assert_eq!(counts_and_acc(row("country", "JP")), ["10", "10", "0", "0", "0", "100", "100"]);
    assert_eq!(row("country", "--")[6..8], ["3", "3"]);
    assert_eq!(row("country", "ES")[6..8], ["2", "2"]);
    assert_eq!(row("continent", "Europe")[6..8], ["14", "14"]);
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    // Right country: Paris and Tokyo (Osaka is in Japan too), not Madrid; the Atlantic images
    // have no country and are not counted.
    assert!(html.contains("right country: <b>91.7 %</b> (22 of 24)"), "{html}");
    assert!(dir.join("out/plots/countries_d_m.svg").exists());

    a.out = dir.join("out2");
    a.no_regions = true;
    run_eval(&a).unwrap();
    assert!(!dir.join("out2/regions.csv").exists());
}
