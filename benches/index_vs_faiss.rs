//! georag's index build and search against Python `faiss` on the same vectors, the same recipe
//! and the same machine (run by `benches/index_vs_faiss.sh`, which then runs the Python side).
//!
//! Generates N seeded clustered unit vectors (D-d, C clusters) and 1000 queries from the same
//! clusters, writes them to `$OUT/x.f32` / `$OUT/q.f32` for the Python side, builds the recipe
//! through `georag::index::build_or_load` (train on `train` vectors, add all, recall measured),
//! and times BENCH_REPS batch searches of the queries at each nprobe (median), printing one JSON
//! object. Environment: BENCH_N, BENCH_D, BENCH_C, BENCH_FACTORY, BENCH_TRAIN, BENCH_NPROBES,
//! BENCH_REPS (7), OUT.
//!
//! With `BENCH_SEARCH_ONLY=FILE` it builds nothing: it reads the FAISS index FILE (the Python
//! side's `py.faiss`) and the queries and truth the first run wrote, and times the same searches
//! on it, so that the two libraries can be compared on one index: two sides that train their own
//! k-means get different inverted lists, and at a given nprobe scan different numbers of codes.
//! Every point also reports the codes scanned per query (FAISS's IVF statistics of the timed
//! searches).

use georag::embed::Embeddings;
use georag::index::{self, IndexSpec, RecallSpec, VectorIndex};
use georag::record::Status;
use std::time::Instant;

#[path = "common/clustered.rs"]
mod clustered;
use clustered::Clusters;

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

/// Times `reps` batch searches of `q` at each nprobe (the median), with recall against `truth`
/// and the codes scanned per query (FAISS's IVF statistics of the timed searches).
fn points(index: &mut index::FaissIndex, q: &[f32], truth: &[Vec<usize>], nprobes: &[usize], reps: usize) -> Vec<serde_json::Value> {
    let d = index.dim();
    let nq = q.len() / d;
    let mut points = vec![];
    for &np in nprobes {
        index.set_nprobe(np).unwrap();
        // Warm with the whole batch: ten queries (the old warm-up) stay below FAISS's BLAS
        // threshold (20), and the first batch through BLAS at nprobe 1 ran up to 35 % slower.
        let _ = index.search(q, 10).unwrap();
        // REPS batch searches, the median time (one batch of 1000 queries at a small nprobe
        // lasts ~0.1 s, where one run's noise alone moved the ratio by 0.84-1.03).
        let mut times = vec![];
        let mut h = vec![];
        // SAFETY: FAISS's global statistics object, reset and read on this thread between searches.
        let stats = unsafe { faiss_sys::faiss_get_indexIVF_stats() };
        unsafe { faiss_sys::faiss_IndexIVFStats_reset(stats) };
        for _ in 0..reps {
            let t = Instant::now();
            h = index.search(q, 10).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        let st = unsafe { *stats };
        times.sort_by(f64::total_cmp);
        let s = times[times.len() / 2];
        let rec: f64 = h.iter().zip(truth).map(|(a, b)| a.iter().filter(|x| b.contains(&x.row)).count() as f64 / 10.0).sum::<f64>() / nq as f64;
        let per = (reps * nq) as f64;
        points.push(serde_json::json!({
            "nprobe": np, "recall_at_10": rec, "qps": nq as f64 / s, "reps": reps,
            "ndis_per_query": st.ndis as f64 / per,
        }));
    }
    points
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn main() {
    let nprobes: Vec<usize> = env("BENCH_NPROBES", "1,2,4,8,16,32,64").split(',').map(|s| s.parse().unwrap()).collect();
    let reps: usize = env("BENCH_REPS", "7").parse().unwrap();
    let out = std::path::PathBuf::from(env("OUT", "/tmp/georag-index-bench"));
    if let Ok(file) = std::env::var("BENCH_SEARCH_ONLY") {
        let raw = faiss::read_index(&file).unwrap();
        let mut ix = index::FaissIndex::from_faiss(raw, &env("BENCH_FACTORY", "IVF1024,PQ64x4fs"), index::Metric::InnerProduct);
        let d = ix.dim();
        let q = read_f32(&out.join("q.f32"));
        assert_eq!(q.len() % d, 0, "{}: queries are not {d}-d", out.join("q.f32").display());
        let truth: Vec<Vec<usize>> = serde_json::from_str(&std::fs::read_to_string(out.join("truth.json")).unwrap()).unwrap();
        let points = points(&mut ix, &q, &truth, &nprobes, reps);
        println!("{}", serde_json::json!({"side": "georag", "index_file": file, "points": points}));
        return;
    }
    let n: usize = env("BENCH_N", "1000000").parse().unwrap();
    let d: usize = env("BENCH_D", "768").parse().unwrap();
    let c: usize = env("BENCH_C", "2000").parse().unwrap();
    let factory = env("BENCH_FACTORY", "IVF1024,PQ64x4fs");
    let train: usize = env("BENCH_TRAIN", "100000").parse().unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let nq = 1000;
    let t = Instant::now();
    let mut clusters = Clusters::new(42, c, d);
    let x = clusters.draw(n);
    let q = clusters.draw(nq);
    let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(out.join("x.f32"), bytes(&x)).unwrap();
    std::fs::write(out.join("q.f32"), bytes(&q)).unwrap();
    let gen_s = t.elapsed().as_secs_f64();
    // Exact top-10 of the queries (FAISS Flat, BLAS), for recall of both sides.
    let mut flat = index::FaissIndex::build("Flat", d, &x).unwrap();
    let truth: Vec<Vec<usize>> = flat.search(&q, 10).unwrap().iter().map(|h| h.iter().map(|x| x.row).collect()).collect();
    drop(flat);
    std::fs::write(out.join("truth.json"), serde_json::to_string(&truth).unwrap()).unwrap();
    let emb = Embeddings {
        dim: d,
        ids: (0..n).map(|i| i.to_string()).collect(),
        lat: vec![0.0; n],
        lon: vec![0.0; n],
        status: vec![Status::Ok; n],
        errors: vec![None; n],
        vectors: x,
        dir: out.join(format!("store-{n}-{d}-{c}")),
    };
    let cache = out.join("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let spec = IndexSpec { factory: factory.clone(), nprobe: nprobes[0], train_sample: train, seed: 0, recall: RecallSpec { queries: 0, k: 10, seed: 0 }, ..IndexSpec::default() };
    let t = Instant::now();
    let mut built = index::build_or_load(&spec, &emb, &cache).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let points = points(&mut built.index, &q, &truth, &nprobes, reps);
    let j = serde_json::json!({
        "side": "georag", "n": n, "d": d, "factory": factory, "train": train, "gen_s": gen_s,
        "build_s": build_s, "bytes": built.meta.bytes, "bytes_per_vector": built.meta.bytes_per_vector,
        "points": points, "index_file": built.dir.join("index.faiss"), "faiss_simd": index::faiss_simd(), "threads": std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1),
    });
    println!("{j}");
}
