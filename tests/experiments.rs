//! Experiments through the real `georag` binary: a 3 x 2 sweep on a small synthetic world that
//! embeds and indexes once and does no work when rerun, run provenance (`runs list`, `runs
//! diff`), and the CI gate's exact mode catching a planted parser regression.

mod common;

use georag::parse::{Parsed, Parser, ParserSpec};
use georag::record::LatLon;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn georag(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write_config(dir: &Path) -> PathBuf {
    common::tiny_world_config(dir, "tiny-sweep", "retrieval: {k: 8}")
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn sweep_3x2_embeds_and_indexes_once_and_a_rerun_does_no_work() {
    let dir = common::tmp("sweep");
    let cfg = write_config(&dir);
    let out = dir.join("sweep");
    let args = [
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-plots",
        "--sweep",
        "retrieval.k=5,10,15",
        "--sweep",
        "methods.1.bandwidth_km=100,200",
    ];
    let o = georag(&args);
    assert!(o.status.success(), "{}", text(&o));
    let sweep = json(&out.join("sweep.json"));
    assert_eq!(sweep["schema"], "georag.sweep/v1");
    let points = sweep["points"].as_array().unwrap();
    assert_eq!(points.len(), 6);
    // Stable order: the last axis varies fastest.
    let sets: Vec<Vec<String>> = points.iter().map(|p| strs(&p["sets"])).collect();
    assert_eq!(sets[0], vec!["retrieval.k=5", "methods.1.bandwidth_km=100"]);
    assert_eq!(sets[1], vec!["retrieval.k=5", "methods.1.bandwidth_km=200"]);
    assert_eq!(sets[5], vec!["retrieval.k=15", "methods.1.bandwidth_km=200"]);
    // The reuse log: embeddings and the index are computed by the first point only (a fresh cache).
    for stage in ["database", "queries", "embed database", "embed queries", "index"] {
        let computed: Vec<usize> = (0..6).filter(|&i| strs(&points[i]["computed"]).iter().any(|s| s == stage)).collect();
        assert_eq!(computed, vec![0], "stage `{stage}` computed by points {computed:?}");
        for p in &points[1..] {
            assert!(strs(&p["reused"]).iter().any(|s| s == stage), "{stage} not reused by {}", p["dir"]);
        }
    }
    assert!(text(&o).contains("reused database, queries, embed database, embed queries, index"), "{}", text(&o));
    // Six run directories, each complete with its own overrides and metrics.
    let mut runs_before = Vec::new();
    for p in points {
        assert_eq!(p["status"], "complete");
        let d = out.join(p["dir"].as_str().unwrap());
        let run = json(&d.join("run.json"));
        assert_eq!(run["status"], "complete");
        assert_eq!(strs(&run["overrides"]), strs(&p["sets"]));
        assert_eq!(json(&d.join("metrics.json"))["rows"].as_array().unwrap().len(), 2);
        runs_before.push(std::fs::read(d.join("run.json")).unwrap());
    }
    // The k values reached the runs: the resolved configs differ in retrieval.k.
    let k_of = |i: usize| json(&out.join(points[i]["dir"].as_str().unwrap()).join("run.json"))["config"]["retrieval"]["k"].clone();
    assert_eq!((k_of(0), k_of(2), k_of(4)), (Value::from(5), Value::from(10), Value::from(15)));

    // A second invocation does no work: every point skipped, every run.json byte-identical.
    let o2 = georag(&args);
    assert!(o2.status.success(), "{}", text(&o2));
    let sweep2 = json(&out.join("sweep.json"));
    assert!(sweep2["points"].as_array().unwrap().iter().all(|p| p["status"] == "skipped"), "{sweep2}");
    for (p, before) in points.iter().zip(&runs_before) {
        assert_eq!(&std::fs::read(out.join(p["dir"].as_str().unwrap()).join("run.json")).unwrap(), before);
    }

    // An interrupted sweep resumes: only the missing point runs, and it reuses every cached stage.
    let gone = out.join(points[3]["dir"].as_str().unwrap());
    std::fs::remove_dir_all(&gone).unwrap();
    let o3 = georag(&args);
    assert!(o3.status.success(), "{}", text(&o3));
    let p3 = json(&out.join("sweep.json"))["points"].as_array().unwrap().clone();
    let statuses: Vec<&str> = p3.iter().map(|p| p["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["skipped", "skipped", "skipped", "complete", "skipped", "skipped"]);
    assert!(strs(&p3[3]["reused"]).contains(&"index".to_string()));

    // Provenance: `runs list` shows the six runs; `runs diff` names the differing key.
    let l = georag(&["runs", "list", out.to_str().unwrap()]);
    assert!(l.status.success(), "{}", text(&l));
    let listing = String::from_utf8_lossy(&l.stdout).to_string();
    assert_eq!(listing.lines().filter(|l| l.contains(" complete ")).count(), 6, "{listing}");
    assert!(listing.contains("6 runs under"), "{listing}");
    let a = out.join(points[0]["dir"].as_str().unwrap());
    let b = out.join(points[1]["dir"].as_str().unwrap());
    let d = georag(&["runs", "diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    let diff = String::from_utf8_lossy(&d.stdout).to_string();
    assert!(d.status.success(), "{}", text(&d));
    assert!(diff.contains("methods.1.bandwidth_km") && diff.contains("comparable: yes"), "{diff}");
    assert!(diff.contains("predictions") && !diff.contains("  index\n"), "the index is shared, the predictions differ: {diff}");
    let run = json(&a.join("run.json"));
    assert!(run["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(run["build"]["crates"]["faiss-sys"].is_string(), "{}", run["build"]);
    assert!(run["started_at"].as_str().unwrap().ends_with('Z'));

    // The sweep report: one table per swept parameter through the baseline (point 0), its rows
    // equal to each point's metrics, paired tests against the baseline, a plot per numeric axis.
    let rep = dir.join("sweep-report");
    let r = georag(&["report", out.to_str().unwrap(), "--out", rep.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r));
    let csv = std::fs::read_to_string(rep.join("sweep_report.csv")).unwrap();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let head = rd.headers().unwrap().clone();
    let col = |name: &str| head.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let recs: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    let points_of = |param: &str| -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = recs.iter().filter(|r| &r[col("parameter")] == param).map(|r| (r[col("value")].to_string(), r[col("point")].parse().unwrap())).collect();
        v.dedup();
        v
    };
    assert_eq!(points_of("retrieval.k"), vec![("5".into(), 0), ("10".into(), 2), ("15".into(), 4)]);
    assert_eq!(points_of("methods.1.bandwidth_km"), vec![("100".into(), 0), ("200".into(), 1)]);
    // The pair of axes over its whole grid: every point, in sweep order.
    let grid = points_of("retrieval.k × methods.1.bandwidth_km");
    assert_eq!(grid.iter().map(|g| g.1).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(grid[3].0, "10 × 200");
    let mut paired = 0;
    for rec in &recs {
        let point: usize = rec[col("point")].parse().unwrap();
        let m = json(&out.join(points[point]["dir"].as_str().unwrap()).join("metrics.json"));
        let row = m["rows"].as_array().unwrap().iter().find(|r| r["method"] == rec[col("method_here")]).expect("method row");
        let t = &rec[col("threshold_km")];
        let acc: f64 = rec[col("acc_pct")].parse().unwrap();
        assert_eq!(acc, row["acc_pct"][t].as_f64().unwrap(), "point {point} {} {t} km", &rec[col("method")]);
        if point == 0 {
            assert_eq!(&rec[col("baseline")], "true");
            assert!(rec[col("mcnemar_p")].is_empty());
        } else {
            let p: f64 = rec[col("mcnemar_p")].parse().unwrap();
            assert!((0.0..=1.0).contains(&p));
            // Every image counted by both (failures are misses): the paired difference is the
            // difference of the two accuracies.
            let base = recs.iter().find(|b| &b[col("point")] == "0" && b[col("method")] == rec[col("method")] && &b[col("threshold_km")] == t).unwrap();
            let d: f64 = rec[col("diff_pp")].parse().unwrap();
            let want = acc - base[col("acc_pct")].parse::<f64>().unwrap();
            assert!((d - want).abs() < 1e-9, "diff {d} vs {want}");
            paired += 1;
        }
    }
    assert!(paired > 0);
    let plots: Vec<String> = std::fs::read_dir(rep.join("plots")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let lines = plots.iter().filter(|p| p.starts_with("sweep_") && !p.starts_with("sweep_heat_") && p.ends_with(".svg")).count();
    assert_eq!(lines, 4, "2 numeric axes x 2 methods: {plots:?}");
    let heat: Vec<&String> = plots.iter().filter(|p| p.starts_with("sweep_heat_") && p.ends_with(".svg")).collect();
    assert_eq!(heat.len(), 10, "1 pair of axes x 2 methods x 5 thresholds: {plots:?}");
    // A heat map cell shows its point's accuracy: the knn_density row at 25 km of point 3.
    let m3 = json(&out.join(points[3]["dir"].as_str().unwrap()).join("metrics.json"));
    let knn25 = m3["rows"][1]["acc_pct"]["25"].as_f64().unwrap();
    let map = heat.iter().find(|p| p.contains("knn") && p.ends_with("_25km.svg")).expect("knn 25 km heat map");
    let svg = std::fs::read_to_string(rep.join("plots").join(map)).unwrap();
    assert!(svg.lines().any(|l| l.trim() == format!("{knn25:.1}")), "no cell text {knn25:.1} in {map}");
    let html = std::fs::read_to_string(rep.join("sweep_report.html")).unwrap();
    assert!(html.contains("retrieval.k") && html.contains("(baseline)"), "html");
    let md = std::fs::read_to_string(rep.join("sweep_report.md")).unwrap();
    assert!(md.contains("## retrieval.k: ") && md.contains("McNemar"), "{md}");
    let tex = std::fs::read_to_string(rep.join("sweep_report.tex")).unwrap();
    assert_eq!(tex.matches("\\begin{tabular}").count(), 6, "one table per parameter (2 axes, 1 pair) and method: {tex}");
    assert!(tex.contains("\\toprule") && tex.contains("methods.1.bandwidth\\_km"), "{tex}");
}

/// A parser with a planted bug: it drops the sign of longitudes.
struct DropsLonSign(Box<dyn Parser>);

impl Parser for DropsLonSign {
    fn name(&self) -> &'static str {
        "drops_lon_sign"
    }
    fn parse(&self, text: &str, finish_reason: Option<&str>) -> Parsed {
        let mut p = self.0.parse(text, finish_reason);
        if let Some(c) = &mut p.coord {
            c.lon = c.lon.abs();
        }
        p
    }
}

/// Recorded answers parsed by `parser` into a predictions CSV, scored by `georag eval`.
fn eval_answers(dir: &Path, name: &str, parser: &dyn Parser) -> PathBuf {
    let cases: [(&str, LatLon, &str); 6] = [
        ("nyc", LatLon { lat: 40.7128, lon: -74.006 }, "Latitude: 40.71, Longitude: -74.01"),
        ("rio", LatLon { lat: -22.9068, lon: -43.1729 }, "{\"latitude\": -22.9, \"longitude\": -43.2}"),
        ("paris", LatLon { lat: 48.8566, lon: 2.3522 }, "lat 48.86, lon 2.35"),
        ("tokyo", LatLon { lat: 35.6762, lon: 139.6503 }, "Latitude: 35.7, Longitude: 139.7"),
        ("lima", LatLon { lat: -12.0464, lon: -77.0428 }, "Latitude: -12.05, Longitude: -77.04"),
        ("cairo", LatLon { lat: 30.0444, lon: 31.2357 }, "I cannot tell."),
    ];
    let mut csv = String::from("id,lat,lon,pred_lat,pred_lon\n");
    for (id, t, answer) in cases {
        let p = parser.parse(answer, Some("stop"));
        let (a, b) = p.coord.map(|c| (c.lat.to_string(), c.lon.to_string())).unwrap_or_default();
        csv.push_str(&format!("{id},{},{},{a},{b}\n", t.lat, t.lon));
    }
    // The same file name everywhere: eval names the method and dataset after it.
    std::fs::create_dir_all(dir.join(name)).unwrap();
    let f = dir.join(name).join("answers.csv");
    std::fs::write(&f, csv).unwrap();
    let out = dir.join(name).join("eval");
    let o = georag(&["eval", "--predictions", f.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-plots"]);
    assert!(o.status.success(), "{}", text(&o));
    out
}

#[test]
fn exact_check_passes_unchanged_and_fails_a_parser_that_drops_the_longitude_sign() {
    let dir = common::tmp("gate-exact");
    let base = eval_answers(&dir, "baseline", ParserSpec::Lenient.build().as_ref());
    let same = eval_answers(&dir, "same", ParserSpec::Lenient.build().as_ref());
    let bad = eval_answers(&dir, "planted", &DropsLonSign(ParserSpec::Lenient.build()));
    let m = |d: &Path| d.join("metrics.json").to_string_lossy().into_owned();
    let ok = georag(&["check", &m(&same), "--baseline", &m(&base), "--exact"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let r = georag(&["check", &m(&bad), "--baseline", &m(&base), "--exact"]);
    let out = text(&r);
    assert_eq!(r.status.code(), Some(1), "{out}");
    // Per threshold, and per changed image: the three western-hemisphere answers.
    assert!(out.contains("acc@25km") && out.contains("CHANGED (exact mode)"), "{out}");
    assert!(out.contains("3 images changed"), "{out}");
    for id in ["nyc", "rio", "lima"] {
        assert!(out.contains(&format!("/ {id}: ok (")), "{id} not listed: {out}");
    }
    assert!(!out.contains("/ paris:") && !out.contains("/ cairo:"), "{out}");
    // A 1-point tolerance lets the same regression through only where it changes nothing; a
    // floor catches it.
    let floor = georag(&["check", &m(&bad), "--baseline", &m(&base), "--tolerance-pct", "100", "--min", "acc_2500km=60"]);
    assert_eq!(floor.status.code(), Some(1), "{}", text(&floor));
    assert!(text(&floor).contains("BELOW FLOOR"), "{}", text(&floor));
    // Invalid input exits 2: a floor for a threshold the metrics lack, a missing file.
    let e = georag(&["check", &m(&same), "--baseline", &m(&base), "--min", "acc_30km=1"]);
    assert_eq!(e.status.code(), Some(2), "{}", text(&e));
    assert!(text(&e).contains("acc_30km: ") && text(&e).contains("has no such threshold"), "{}", text(&e));
    let e = georag(&["check", "/nonexistent/metrics.json", "--baseline", &m(&base)]);
    assert_eq!(e.status.code(), Some(2), "{}", text(&e));
}

/// `georag validate` on a paper config, in a checkout with no datasets, models or weights:
/// every missing piece is listed at once, each with the command that provides it; nothing runs.
#[test]
fn validate_lists_every_missing_piece_of_a_paper_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = root.join("configs/paper/g3_im2gps3k.yaml");
    let tmp = common::tmp("validate");
    // Run from an empty directory, so none of the config's relative paths exist.
    let o = Command::new(env!("CARGO_BIN_EXE_georag")).current_dir(&tmp).args(["validate", cfg.to_str().unwrap()]).output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for (key, fix) in [
        ("database.dir", "georag prepare mp16_pro"),
        ("queries.dir", "georag prepare im2gps3k"),
        ("encoder.dir", "huggingface-cli download openai/clip-vit-large-patch14"),
        ("methods.1.selector.encoder.dir", "huggingface-cli download openai/clip-vit-large-patch14"),
        ("methods.1.selector.encoder.weights", "scripts/fetch-geoclip.sh"),
        ("retrieval.exclude", "--against"),
    ] {
        let at = out.find(&format!("MISSING {key}:")).unwrap_or_else(|| panic!("{key} not listed: {out}"));
        let line2 = out[at..].lines().nth(1).unwrap_or("");
        assert!(line2.contains(fix), "{key}: fix `{line2}` lacks `{fix}`");
    }
    assert!(out.contains("6 missing") && out.contains("nothing was run"), "{out}");
    assert!(out.contains("NOTE the run sends MLLM requests to http://127.0.0.1:8000"), "{out}");
    // `base_url` and `base_urls` together: both are listed, in the client's order.
    let o = Command::new(env!("CARGO_BIN_EXE_georag"))
        .current_dir(&tmp)
        .args(["validate", cfg.to_str().unwrap(), "--set", "generator.base_url=http://replica1:8000/v1"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(out.contains("sends MLLM requests to http://replica1:8000/v1, http://127.0.0.1:8000"), "{out}");
    assert!(std::fs::read_dir(&tmp).unwrap().next().is_none(), "validate wrote something");
    // An alignment model the config names (here the demo's geo_verify heads) is checked for its
    // model.json, with the training command as the fix.
    let o = Command::new(env!("CARGO_BIN_EXE_georag")).current_dir(&tmp).args(["validate", root.join("configs/demo.yaml").to_str().unwrap()]).output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let at = out.find("MISSING methods.5.selector.aligned: results/demo-align: a trained alignment model").unwrap_or_else(|| panic!("{out}"));
    assert!(out[at..].lines().nth(1).unwrap_or("").contains("georag align train CONFIG --out results/demo-align"), "{out}");
    std::fs::create_dir_all(tmp.join("results/demo-align")).unwrap();
    std::fs::write(tmp.join("results/demo-align/model.json"), "{}").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_georag")).current_dir(&tmp).args(["validate", root.join("configs/demo.yaml").to_str().unwrap()]).output().unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("0 missing, 1 present; ready to run"), "{out}");
    std::fs::remove_dir_all(tmp.join("results")).unwrap();
    // GeoCLIP's config: its location tower and gallery are checked, with the wheel as the fix.
    let o = Command::new(env!("CARGO_BIN_EXE_georag")).current_dir(&tmp).args(["validate", root.join("configs/paper/geoclip_im2gps3k.yaml").to_str().unwrap()]).output().unwrap();
    let out = text(&o);
    for key in ["methods.0.location", "methods.0.gallery", "encoder.weights"] {
        let at = out.find(&format!("MISSING {key}:")).unwrap_or_else(|| panic!("{key} not listed: {out}"));
        assert!(out[at..].lines().nth(1).unwrap_or("").contains("scripts/fetch-geoclip.sh"), "{key}: {out}");
    }
    // Every paper config parses and validates its structure (the configs themselves are sound).
    for f in std::fs::read_dir(root.join("configs/paper")).unwrap() {
        let f = f.unwrap().path();
        let o = Command::new(env!("CARGO_BIN_EXE_georag")).current_dir(&tmp).args(["validate", f.to_str().unwrap()]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}: {}", f.display(), text(&o));
        assert!(text(&o).contains("MISSING encoder.dir") || text(&o).contains("MISSING encoder.base.dir"), "{}: {}", f.display(), text(&o));
    }
    // G3 with georag's geo-alignment: the CLIP snapshot (with tokenizer.json) for the place texts,
    // GeoCLIP's weights for the GPS tower's initialisation, and the heads, whose fix is training
    // them from this same file.
    let g3a = root.join("configs/paper/g3_aligned_im2gps3k.yaml");
    let o = Command::new(env!("CARGO_BIN_EXE_georag")).current_dir(&tmp).args(["validate", g3a.to_str().unwrap()]).output().unwrap();
    let out = text(&o);
    for (key, fix) in [
        ("align.text.clip", "huggingface-cli download openai/clip-vit-large-patch14"),
        ("align.location.geoclip_init", "scripts/fetch-geoclip.sh"),
        ("encoder.model", "georag align train CONFIG --out results/g3-align-mp16"),
        ("methods.1.selector.aligned", "georag align train CONFIG --out results/g3-align-mp16"),
    ] {
        let at = out.find(&format!("MISSING {key}:")).unwrap_or_else(|| panic!("{key} not listed: {out}"));
        assert!(out[at..].lines().nth(1).unwrap_or("").contains(fix), "{key}: {out}");
    }
}

/// The committed CI replay (`make check`'s last step): configs/ci/demo_recorded.yaml answered
/// only from the committed store of SIMULATED LLM answers (results/baselines/recorded/), with the
/// committed neighbour arrays, reproduces the committed metrics exactly, every image included;
/// a changed parser on one method (a planted change along the full RAG path) fails the gate.
#[test]
fn committed_recorded_answers_replay_to_the_committed_numbers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = root.join("results/baselines/recorded");
    let tmp = common::tmp("recorded-replay");
    std::fs::create_dir_all(tmp.join("cache/responses")).unwrap();
    std::fs::copy(base.join("responses.jsonl"), tmp.join("cache/responses/responses.jsonl")).unwrap();
    let cache = format!("cache_dir={}", tmp.join("cache").display());
    let run = |out: &str, extra: &[&str]| {
        let out = tmp.join(out);
        let mut args = vec!["run", "configs/ci/demo_recorded.yaml", "--replay", "--no-plots", "--set", &cache];
        args.extend_from_slice(extra);
        let out_s = out.to_string_lossy().into_owned();
        args.extend_from_slice(&["--out", &out_s]);
        let o = Command::new(env!("CARGO_BIN_EXE_georag")).current_dir(root).args(&args).env("GEORAG_QUIET", "1").output().unwrap();
        assert!(o.status.code() == Some(0) || o.status.code() == Some(2), "{}", text(&o));
        out.join("metrics.json").to_string_lossy().into_owned()
    };
    let baseline = base.join("metrics.json").to_string_lossy().into_owned();
    let same = run("same", &[]);
    let o = georag(&["check", &same, "--baseline", &baseline, "--exact"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(" 0 changed images"), "{}", text(&o));
    // G3's medoid selector swapped for `first` (the first valid sample): the same recorded
    // answers, another pick, so its row (and only its row) changes.
    let planted = run("planted", &["--set", "methods.4.selector={kind: first}"]);
    let o = georag(&["check", &planted, "--baseline", &baseline, "--exact"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().any(|l| l.starts_with("g3 (medoid)") && l.contains("CHANGED (exact mode)")), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("street_rag") && l.contains("CHANGED")), "{out}");
    assert!(out.contains("images changed"), "{out}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
