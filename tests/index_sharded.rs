//! The index and retrieval stages through the real `georag` binary on a small synthetic world
//! (600 database photos in 5 embedding shards, 120 queries, the IM2GPS encoder, real FAISS):
//! a sharded build (`--train`, three `--worker`s, `--merge`) returns the same neighbours as one
//! build over all shards; merging with a part missing names the command that builds it;
//! dissimilar modes and imported neighbour arrays (G3's `.npy` layout) end in
//! retrieval.parquet; an out-of-range row names its query and position.

use arrow::array::{Float32Array, StringArray, UInt32Array};
use georag::retrieval::import::write_npy;
use georag::util::pq;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("georag-shard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: &Path, extra: &str) -> PathBuf {
    let cfg = format!(
        r#"
name: tiny
cache_dir: {cache}
database: {{kind: synthetic, split: database, n: 600, shard_rows: 128}}
queries: {{kind: synthetic, split: queries, n: 120, shard_rows: 256}}
encoder: {{kind: im2gps}}
index: {{factory: "IVF8,PQ8", nprobe: 4, train_sample: 600, threads: 1, recall: {{queries: 50, k: 10}}}}
methods:
  - kind: nearest
{extra}
"#,
        cache = dir.join("cache").display()
    );
    let path = dir.join("tiny.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn georag(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").output().unwrap()
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "stdout: {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (query_id, mode, rank, db_id, similarity) rows of a retrieval.parquet.
fn retrieval(path: &Path) -> Vec<(String, String, u32, String, f32)> {
    let mut out = vec![];
    for b in pq::read(path).unwrap() {
        let q = pq::column::<StringArray>(path, &b, "query_id").unwrap();
        let m = pq::column::<StringArray>(path, &b, "mode").unwrap();
        let r = pq::column::<UInt32Array>(path, &b, "rank").unwrap();
        let d = pq::column::<StringArray>(path, &b, "db_id").unwrap();
        let s = pq::column::<Float32Array>(path, &b, "similarity").unwrap();
        for i in 0..b.num_rows() {
            out.push((q.value(i).into(), m.value(i).into(), r.value(i), d.value(i).into(), s.value(i)));
        }
    }
    out
}

#[test]
fn sharded_build_and_merge_equal_one_build() {
    let dir = workdir("merge");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    ok(&georag(&["embed", c]));
    // One build over all shards.
    let single = ok(&georag(&["index", c]));
    assert!(single.contains("Recall against exact search at nprobe 4 on 50 held-out"), "{single}");
    let a = dir.join("a");
    ok(&georag(&["retrieve", c, "--out", a.to_str().unwrap()]));
    let index_dir = std::fs::read_dir(dir.join("cache/index")).unwrap().next().unwrap().unwrap().path();
    std::fs::remove_dir_all(&index_dir).unwrap();

    // A worker before training is told to train first.
    let o = georag(&["index", c, "--worker", "0", "--workers", "3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--train"), "{}", String::from_utf8_lossy(&o.stderr));
    ok(&georag(&["index", c, "--train"]));
    for i in ["0", "2"] {
        ok(&georag(&["index", c, "--worker", i, "--workers", "3"]));
    }
    // Part 1 is missing: the merge names the command that builds it.
    let o = georag(&["index", c, "--merge", "--workers", "3"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("part 1 is missing") && e.contains("--worker 1 --workers 3"), "{e}");
    // SLURM array variables choose the worker as --worker/--workers do.
    let o = Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["index", c])
        .env("GEORAG_QUIET", "1")
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    assert!(ok(&o).contains("part 2/3"));
    let merged = ok(&georag(&["index", c, "--merge", "--workers", "3"]));
    assert!(merged.contains("600 vectors"), "{merged}");
    assert!(!index_dir.join("parts").exists(), "parts are removed after a merge");
    let b = dir.join("b");
    ok(&georag(&["retrieve", c, "--out", b.to_str().unwrap()]));
    let (ra, rb) = (retrieval(&a.join("retrieval.parquet")), retrieval(&b.join("retrieval.parquet")));
    assert_eq!(ra.len(), 120 * 32, "retrieval.k (32) similar neighbours per query");
    assert_eq!(ra, rb, "merged index must return the same neighbours as one build");
    // The build-time recall was measured the same way both times.
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(index_dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(meta["parts"], 3);
    assert_eq!(meta["shards"], 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dissimilar_modes_and_tune() {
    let dir = workdir("modes");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    ok(&georag(&["embed", c]));
    let t = ok(&georag(&["index", c, "--tune", "--recall-target", "0.2"]));
    assert!(t.contains("nprobe") && t.contains("recall@10") && t.contains("smallest nprobe with recall@10 >= 0.2"), "{t}");
    for (mode, set, want_mode) in [
        ("negated", "retrieval.dissimilar={mode: negated}", "dissimilar_negated"),
        ("lowest", "retrieval.dissimilar={mode: lowest, sample: 300}", "dissimilar_lowest"),
        ("far", "retrieval.dissimilar={mode: far_from_top1, km: 2000, search_k: 200}", "far_from_top1"),
    ] {
        let out = dir.join(mode);
        ok(&georag(&["retrieve", c, "--set", "retrieval.k=5", "--set", "retrieval.dissimilar_k=4", "--set", set, "--out", out.to_str().unwrap()]));
        let rows = retrieval(&out.join("retrieval.parquet"));
        let sim: Vec<_> = rows.iter().filter(|r| r.1 == "similar").collect();
        let dis: Vec<_> = rows.iter().filter(|r| r.1 == want_mode).collect();
        assert_eq!(sim.len(), 120 * 5, "{mode}");
        assert!(!dis.is_empty() && dis.len() <= 120 * 4, "{mode}: {} dissimilar rows", dis.len());
        // Dissimilar neighbours are less similar than the similar ones of the same query.
        let q0 = &sim[0].0;
        let worst_similar = sim.iter().filter(|r| &r.0 == q0).map(|r| r.4).fold(f32::INFINITY, f32::min);
        if want_mode != "far_from_top1" {
            assert!(dis.iter().filter(|r| &r.0 == q0).all(|r| r.4 < worst_similar), "{mode}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn imported_neighbour_arrays_map_rows_and_name_bad_ones() {
    let dir = workdir("import");
    let cfg = config(&dir, "");
    let c = cfg.to_str().unwrap();
    // Rows r, r+1, r+2 of the database for query r (any valid rows do).
    let good: Vec<i64> = (0..120).flat_map(|q| [q as i64, q as i64 + 1, -1]).collect();
    let npy = dir.join("I_test.npy");
    write_npy(&npy, 120, 3, &good).unwrap();
    let out = dir.join("imp");
    let s = ok(&georag(&["retrieve", c, "--import-neighbours", npy.to_str().unwrap(), "--set", "retrieval.k=3", "--out", out.to_str().unwrap()]));
    assert!(s.contains("120 queries, 240 neighbours"), "-1 entries are skipped: {s}");
    assert!(!dir.join("cache/embeddings").exists(), "importing neighbours embeds nothing");
    let rows = retrieval(&out.join("retrieval.parquet"));
    assert!(rows.iter().all(|r| r.1 == "similar_imported" && r.4.is_nan()));
    // Row 7 of the database is the 8th row of its first shard.
    let db_dir = std::fs::read_dir(dir.join("cache/datasets")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("synthetic-database")).unwrap();
    let db = georag::ingest::Dataset::open(&db_dir).unwrap();
    let first = db.read_shard(0).unwrap();
    // Two rows per query (the -1 is skipped), in query order: query 7's first is db row 7.
    assert_eq!(rows[7 * 2].3, first[7].id);
    assert_eq!(rows[7 * 2 + 1].3, first[8].id);
    // A run imports the same way and scores its methods.
    let run = dir.join("run");
    ok(&georag(&["run", c, "--set", &format!("retrieval.import={{similar: {}}}", npy.display()), "--out", run.to_str().unwrap(), "--no-plots"]));
    let notes = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(notes.contains("Neighbours imported from released arrays"), "the report says where neighbours came from");

    // `--export-npy` pins a searched retrieval: importing its arrays gives the same lists, in
    // the same order, similar and dissimilar.
    let searched = dir.join("searched");
    let s = ok(&georag(&["retrieve", c, "--set", "retrieval.k=5", "--set", "retrieval.dissimilar_k=2", "--export-npy", "--out", searched.to_str().unwrap()]));
    assert!(s.contains("neighbour arrays"), "{s}");
    let sim = georag::retrieval::import::read_npy(&searched.join("similar.npy")).unwrap();
    let dis = georag::retrieval::import::read_npy(&searched.join("dissimilar.npy")).unwrap();
    assert_eq!((sim.rows, sim.cols, dis.rows, dis.cols), (120, 5, 120, 2));
    let pinned = dir.join("pinned");
    ok(&georag(&[
        "retrieve",
        c,
        "--set",
        "retrieval.k=5",
        "--set",
        "retrieval.dissimilar_k=2",
        "--import-neighbours",
        searched.join("similar.npy").to_str().unwrap(),
        "--import-dissimilar",
        searched.join("dissimilar.npy").to_str().unwrap(),
        "--out",
        pinned.to_str().unwrap(),
    ]));
    let ids = |p: &Path| retrieval(&p.join("retrieval.parquet")).into_iter().map(|r| (r.0, r.1.starts_with("similar"), r.3)).collect::<Vec<_>>();
    assert_eq!(ids(&searched), ids(&pinned));

    // Out of range: the error names the query and the position.
    let mut bad = good.clone();
    bad[5 * 3 + 1] = 600;
    write_npy(&npy, 120, 3, &bad).unwrap();
    let o = georag(&["retrieve", c, "--import-neighbours", npy.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("query 5") && e.contains("position 1") && e.contains("row 600") && e.contains("600 rows"), "{e}");
    // Wrong number of queries.
    write_npy(&npy, 119, 3, &good[..119 * 3]).unwrap();
    let o = georag(&["retrieve", c, "--import-neighbours", npy.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("119 rows of similar neighbours, but the benchmark"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn npy_reader_round_trips_and_rejects_floats() {
    let dir = workdir("npy");
    let p = dir.join("a.npy");
    write_npy(&p, 2, 3, &[1, 2, 3, 4, 5, -1]).unwrap();
    let a = georag::retrieval::import::read_npy(&p).unwrap();
    assert_eq!((a.rows, a.cols, a.data), (2, 3, vec![1, 2, 3, 4, 5, -1]));
    let mut b = std::fs::read(&p).unwrap();
    let at = b.windows(3).position(|w| w == b"<i8").unwrap();
    b[at + 1] = b'f';
    std::fs::write(&p, &b).unwrap();
    let e = georag::retrieval::import::read_npy(&p).unwrap_err().to_string();
    assert!(e.contains("<f8") && e.contains("int64"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
