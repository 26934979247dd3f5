//! End-to-end: a small synthetic world (600 database photos, 120 queries) through the real
//! `georag run` binary: Parquet shards, the IM2GPS encoder, a real FAISS IVF index, both
//! retrieval baselines, metrics, report; then a second run that must reuse every cached stage.

mod common;

use georag::ingest::{Dataset, synthetic::Split};
use georag::metrics::{Convention, MetricsFile, score};
use georag::record::{LatLon, PredictionRecord};
use georag::util::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("georag-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_config(dir: &Path) -> PathBuf {
    common::tiny_world_config(dir, "tiny", "")
}

fn georag(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").output().unwrap()
}

#[test]
fn run_twice_reuses_cache_and_beats_random_guessing() {
    let dir = workdir("run");
    let cfg = write_config(&dir);
    let out = dir.join("run");
    let o = georag(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    for f in ["metrics.json", "table.md", "report.html", "predictions.parquet", "retrieval.parquet", "run.json", "config.resolved.yaml"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let metrics = MetricsFile::read(&out.join("metrics.json")).unwrap();
    assert_eq!(metrics.rows.len(), 2);
    assert!(metrics.rows.iter().all(|r| r.n_expected == 120 && r.n_scored == 120));

    // Prior-respecting random baseline: the GPS of a random database photo for each query.
    let cache = dir.join("cache").join("datasets");
    let open = |prefix: &str| {
        let d = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix)).unwrap();
        Dataset::open(&d).unwrap()
    };
    let (db, q) = (open("synthetic-database"), open("synthetic-queries"));
    let db_rows: Vec<_> = (0..db.manifest.shards.len()).flat_map(|i| db.read_shard(i).unwrap()).collect();
    let q_rows: Vec<_> = (0..q.manifest.shards.len()).flat_map(|i| q.read_shard(i).unwrap()).collect();
    let mut rng = Rng::new(1);
    let mut random_acc = 0.0;
    for _ in 0..20 {
        let recs: Vec<PredictionRecord> = q_rows
            .iter()
            .map(|r| {
                let g = &db_rows[rng.below(db_rows.len())];
                PredictionRecord::ok(&r.id, LatLon { lat: r.lat, lon: r.lon }, LatLon { lat: g.lat, lon: g.lon })
            })
            .collect();
        random_acc += score("random", "q", &recs, &Convention::default()).acc(2500.0).unwrap() / 20.0;
    }
    for row in &metrics.rows {
        let a = row.acc(2500.0).unwrap();
        assert!(a > random_acc + 15.0, "{}: {a:.1}% at 2500 km vs random {random_acc:.1}%", row.method);
        // Accuracy is monotone in the threshold.
        let accs: Vec<f64> = [1.0, 25.0, 200.0, 750.0, 2500.0].iter().map(|&t| row.acc(t).unwrap()).collect();
        assert!(accs.windows(2).all(|w| w[0] <= w[1]), "{accs:?}");
    }

    // Second run: same outputs, every data stage reused.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let emb_dir = dir.join("cache").join("embeddings");
    let shard = std::fs::read_dir(&emb_dir).unwrap().next().unwrap().unwrap().path().join("emb-00000.parquet");
    let index_file = std::fs::read_dir(dir.join("cache").join("index")).unwrap().next().unwrap().unwrap().path().join("index.faiss");
    let (t_shard, t_index) = (mtime(&shard), mtime(&index_file));
    let o = georag(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let reused = |stage: &str| run["stages"].as_array().unwrap().iter().find(|s| s["stage"] == stage).unwrap()["reused"].as_bool().unwrap();
    for stage in ["database", "queries", "embed database", "embed queries", "index", "predictions"] {
        assert!(reused(stage), "stage {stage} was not reused: {run}");
    }
    assert_eq!(mtime(&shard), t_shard);
    assert_eq!(mtime(&index_file), t_index);
    assert_eq!(MetricsFile::read(&out.join("metrics.json")).unwrap(), metrics);

    // --no-plots: the same numbers and per_image.csv, no plots.
    let bare = dir.join("run-no-plots");
    let o = georag(&["run", cfg.to_str().unwrap(), "--out", bare.to_str().unwrap(), "--no-plots"]);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(!bare.join("plots").exists() && out.join("plots").is_dir());
    assert_eq!(MetricsFile::read(&bare.join("metrics.json")).unwrap(), metrics);
    assert!(std::fs::read(bare.join("per_image.csv")).unwrap() == std::fs::read(out.join("per_image.csv")).unwrap());
    assert!(std::fs::read_to_string(bare.join("table.md")).unwrap().contains("Plots were not drawn (--no-plots)."));

    // Changing a method setting recomputes predictions but still reuses the index.
    let o = georag(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--set", "methods.1.k=4"]);
    assert!(o.status.success());
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let stages: Vec<&str> = run["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert!(stages.contains(&"retrieve") && stages.contains(&"methods"), "{stages:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_gate_exit_codes() {
    let dir = workdir("gate");
    let t = LatLon { lat: 1.0, lon: 1.0 };
    let far = LatLon { lat: -60.0, lon: -120.0 };
    let make = |hits: usize| {
        let recs: Vec<PredictionRecord> = (0..100).map(|i| PredictionRecord::ok(format!("{i}"), t, if i < hits { t } else { far })).collect();
        MetricsFile::new(vec![score("m", "d", &recs, &Convention::default())])
    };
    let (base, same, worse) = (dir.join("base.json"), dir.join("same.json"), dir.join("worse.json"));
    make(40).write(&base).unwrap();
    make(40).write(&same).unwrap();
    make(30).write(&worse).unwrap();
    let o = georag(&["check", same.to_str().unwrap(), "--baseline", base.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    let o = georag(&["check", worse.to_str().unwrap(), "--baseline", base.to_str().unwrap(), "--tolerance-pct", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("REGRESSION"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synthetic_splits_are_disjoint_draws_of_one_world() {
    // Query ids never collide with database ids, so `exclude_same_id` never hides a true match.
    let w = georag::ingest::synthetic::World::new(&Default::default());
    assert_ne!(w.photo(Split::Database, 3).id, w.photo(Split::Queries, 3).id);
}

/// A query set prepared from files (JPEGs on disk + a CSV, through `georag prepare`) runs against
/// the synthetic database through `{kind: shards}`; a corrupt query photo is quarantined by
/// prepare, and one that the config points at directly is a counted failure, not an abort.
#[test]
fn prepared_query_set_runs_through_shards() {
    use georag::ingest::synthetic::{Split, World};
    let dir = workdir("shards");
    let images = dir.join("photos");
    std::fs::create_dir_all(&images).unwrap();
    let world = World::new(&Default::default());
    let mut csv = String::from("IMG_ID,LAT,LON\n");
    for i in 0..40 {
        let r = world.photo(Split::Queries, i);
        let name = format!("{}.jpg", r.id);
        std::fs::write(images.join(&name), r.image.unwrap()).unwrap();
        csv.push_str(&format!("{name},{},{}\n", r.lat, r.lon));
    }
    std::fs::write(images.join("broken.jpg"), b"\xFF\xD8\xFF\xE0 not really").unwrap();
    csv.push_str("broken.jpg,10,10\n");
    std::fs::write(dir.join("q.csv"), csv).unwrap();
    let prepared = dir.join("prepared");
    let o = georag(&["prepare", "folder", "--metadata", dir.join("q.csv").to_str().unwrap(), "--images", images.to_str().unwrap(), "--out", prepared.to_str().unwrap(), "--store", "reference"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("41 input rows -> 40 kept"), "{}", String::from_utf8_lossy(&o.stdout));
    // Break one kept photo after prepare: the run must count it, not stop.
    std::fs::write(images.join("q-000007.jpg"), b"gone bad").unwrap();
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "name: s\ncache_dir: {}\ndatabase: {{kind: synthetic, split: database, n: 600, shard_rows: 256}}\nqueries: {{kind: shards, dir: {}}}\nencoder: {{kind: im2gps}}\nindex: {{factory: Flat}}\nmethods: [{{kind: nearest}}]\n",
            dir.join("cache").display(),
            prepared.display()
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let o = georag(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "a run with a failed sample exits 2: {}", String::from_utf8_lossy(&o.stderr));
    let m = MetricsFile::read(&out.join("metrics.json")).unwrap();
    assert_eq!((m.rows[0].n_expected, m.rows[0].n_answered), (40, 39));
    assert_eq!(m.rows[0].failures_by_status.get("decode_failed"), Some(&1));
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["failures"]["queries/decode_failed"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
