//! Peak memory of a sharded index build over an embedding store on disk, step by step, each
//! step in a fresh process (its `VmHWM`), through the functions `georag index --train`,
//! `--worker I --workers N` and `--merge` call (`index::build::{train_only, worker_part,
//! merge_parts}` over `StoreShards`, the same code path; the CLI only adds the config and the
//! dataset lookup in front of it).
//!
//! The store is generated (seeded clustered unit vectors, `benches/common/clustered.rs`) in
//! the layout `georag embed` writes: one `emb-NNNNN.parquet` per dataset shard (id, lat, lon,
//! status, error, vector; one row in 997 `decode_failed` with a null vector) and `done.json`.
//!
//! What is checked (the bench exits 1, printing "bound does not hold", when a step exceeds it),
//! above the floor (the resident memory of a process that set the allocator as a build does,
//! opened the store and ran one FAISS exact search at the shape of the recall searches, its
//! data freed):
//! - a worker: its part index, its row map (measured per row in the floor process), the recall
//!   queries, and the add working set: one add chunk (at most one shard, issue 10's allowance,
//!   since a chunk never spans shards), FAISS's residuals of the chunk, one exact-search block
//!   of `TRUTH_BLOCK` vectors, one read block decoded by arrow and its copy, one BLAS distance
//!   tile, the chunk's codes, the truth lists and one search's results;
//! - the merge: the final index, the largest part twice (read while it is merged in, and the
//!   list buffers the index outgrows meanwhile, which stay in the heap), the row map and the
//!   recall queries.
//! Training is printed, not bounded by the database: it holds the training sample (and
//! FAISS's copies of it).
//!
//! Environment: BENCH_N (1 000 000), BENCH_D (768), BENCH_SHARD_ROWS (4096, what `prepare`
//! writes), BENCH_WORKERS (4), BENCH_FACTORY (`IVF1024,PQ64`), BENCH_TRAIN (65 536),
//! BENCH_ADD_BATCH (16 384, the default), OUT (/tmp/georag-index-memory; the store is kept and
//! reused when its parameters match).

use georag::index::build::{self, Layout, TrainRecord, TRUTH_BLOCK};
use georag::index::source::{Shards, StoreShards, READ_BLOCK};
use georag::index::{IndexSpec, RecallSpec};
use georag::util::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

#[path = "common/clustered.rs"]
mod clustered;
use clustered::Clusters;

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

fn num(k: &str, d: usize) -> usize {
    env(k, &d.to_string()).replace('_', "").parse().unwrap_or_else(|_| panic!("{k} is not a number"))
}

struct Params {
    n: usize,
    d: usize,
    shard_rows: usize,
    workers: usize,
    factory: String,
    train: usize,
    add_batch: usize,
    out: PathBuf,
}

impl Params {
    fn from_env() -> Self {
        Params {
            n: num("BENCH_N", 1_000_000),
            d: num("BENCH_D", 768),
            shard_rows: num("BENCH_SHARD_ROWS", 4096),
            workers: num("BENCH_WORKERS", 4),
            factory: env("BENCH_FACTORY", "IVF1024,PQ64"),
            train: num("BENCH_TRAIN", 65_536),
            add_batch: num("BENCH_ADD_BATCH", IndexSpec::default().add_batch),
            out: PathBuf::from(env("OUT", "/tmp/georag-index-memory")),
        }
    }
    fn shards(&self) -> usize {
        self.n.div_ceil(self.shard_rows)
    }
    fn store(&self) -> PathBuf {
        self.out.join(format!("store-{}x{}-{}", self.n, self.d, self.shard_rows))
    }
    fn cache(&self) -> PathBuf {
        self.out.join("cache")
    }
    fn spec(&self) -> IndexSpec {
        IndexSpec {
            factory: self.factory.clone(),
            train_sample: self.train,
            add_batch: self.add_batch,
            recall: RecallSpec { queries: 1000, k: 10, seed: 1 },
            ..IndexSpec::default()
        }
    }
}

/// Write the store (one shard in memory at a time) unless a complete one is there.
fn generate(p: &Params) {
    use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Float64Array, StringArray};
    let dir = p.store();
    if dir.join("done.json").exists() {
        eprintln!("reusing {}", dir.display());
        return;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let mut clusters = Clusters::new(7, 2000, p.d);
    let mut rng = Rng::new(11);
    let mut failed = 0;
    for s in 0..p.shards() {
        let (lo, hi) = (s * p.shard_rows, ((s + 1) * p.shard_rows).min(p.n));
        let m = hi - lo;
        let mut values = clusters.draw(m);
        let ok: Vec<bool> = (lo..hi).map(|g| g % 997 != 996).collect();
        for (i, _) in ok.iter().enumerate().filter(|(_, o)| !**o) {
            values[i * p.d..(i + 1) * p.d].fill(0.0);
            failed += 1;
        }
        let field = Arc::new(arrow::datatypes::Field::new("item", arrow::datatypes::DataType::Float32, false));
        let list = FixedSizeListArray::try_new(field, p.d as i32, Arc::new(Float32Array::from(values)), Some(ok.clone().into())).unwrap();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values((lo..hi).map(|g| format!("img{g:08}")))),
            Arc::new(Float64Array::from_iter_values((0..m).map(|_| rng.range(-90.0, 90.0)))),
            Arc::new(Float64Array::from_iter_values((0..m).map(|_| rng.range(-180.0, 180.0)))),
            Arc::new(StringArray::from_iter_values(ok.iter().map(|&o| if o { "ok" } else { "decode_failed" }))),
            Arc::new(StringArray::from_iter(ok.iter().map(|&o| if o { None } else { Some("generated failure") }))),
            Arc::new(list),
        ];
        let batch = arrow::record_batch::RecordBatch::try_new(georag::embed::store_schema(p.d), cols).unwrap();
        georag::util::pq::write(&dir.join(format!("emb-{s:05}.parquet")), georag::embed::store_schema(p.d), &[batch], &[]).unwrap();
    }
    let done = serde_json::json!({"encoder": "bench", "encoder_fingerprint": "bench", "dataset": "bench", "dataset_fingerprint": "bench",
        "dim": p.d, "rows": p.n, "decode_failed": failed});
    std::fs::write(dir.join("done.json"), done.to_string()).unwrap();
    eprintln!("wrote {} ({} shards, {} vectors) in {:.1} s", dir.display(), p.shards(), p.n, t.elapsed().as_secs_f64());
}

/// One step in this process; prints `{"step", "peak", "seconds"}`.
fn child(step: &[String]) {
    let p = Params::from_env();
    let src = StoreShards::open(&p.store(), p.d, p.shards()).unwrap();
    let spec = p.spec();
    let t = Instant::now();
    match step[0].as_str() {
        "floor" => {
            // The process every step starts as: the allocator set as a build sets it, the store
            // opened, FAISS (OpenMP, BLAS and its buffers) run once at the shape of the exact
            // searches (the recall queries against a `TRUTH_BLOCK` of vectors), whose own data
            // is then freed.
            use faiss::Index;
            georag::util::alloc::return_large_frees();
            src.counts(0).unwrap();
            let mut ix = faiss::index_factory(p.d as u32, "Flat", faiss::MetricType::InnerProduct).unwrap();
            let x: Vec<f32> = (0..p.d * TRUTH_BLOCK).map(|i| (i % 97) as f32 / 97.0).collect();
            ix.add(&x).unwrap();
            ix.search(&x[..p.d * spec.recall.queries.min(TRUTH_BLOCK)], spec.recall.k + 1).unwrap();
            drop(ix);
            drop(x);
            // Resident memory now (not the high-water mark, which counts the freed data).
            let floor = build::rss_now().unwrap_or(0);
            // A row map of every row, grown the way a worker grows it, with the store's ids:
            // its resident growth per row.
            let mut rows = georag::index::RowMap::default();
            for g in 0..p.n {
                rows.ids.push(format!("img{g:08}"));
                rows.lat.push(g as f64);
                rows.lon.push(-(g as f64));
            }
            let per_row = build::rss_now().unwrap_or(0).saturating_sub(floor) as f64 / p.n.max(1) as f64;
            drop(rows);
            let j = serde_json::json!({"step": "floor", "peak": floor, "rowmap_bytes_per_row": per_row, "seconds": t.elapsed().as_secs_f64()});
            println!("{j}");
            return;
        }
        "train" => {
            build::train_only(&spec, &src, &p.cache()).unwrap();
        }
        "part" => {
            let (i, n): (usize, usize) = (step[1].parse().unwrap(), step[2].parse().unwrap());
            build::worker_part(&spec, &src, &p.cache(), i, n, "bench").unwrap();
        }
        "merge" => {
            let n: usize = step[1].parse().unwrap();
            build::merge_parts(&spec, &src, &p.cache(), n, "bench").unwrap();
        }
        s => panic!("unknown step {s}"),
    }
    let j = serde_json::json!({"step": step.join(" "), "peak": build::peak_rss().unwrap_or(0), "seconds": t.elapsed().as_secs_f64()});
    println!("{j}");
}

/// One step in a child process: its peak (bytes), seconds, and the whole JSON line.
fn run(step: &[&str]) -> (u64, f64, serde_json::Value) {
    let o = Command::new(std::env::current_exe().unwrap()).arg("--step").args(step).env("GEORAG_QUIET", "1").output().unwrap();
    assert!(o.status.success(), "step {step:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().to_string();
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    (j["peak"].as_u64().unwrap(), j["seconds"].as_f64().unwrap(), j)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--step") {
        return child(&args[i + 1..]);
    }
    let p = Params::from_env();
    generate(&p);
    let _ = std::fs::remove_dir_all(p.cache());
    let vec_bytes = |rows: usize| (rows * p.d * 4) as u64;
    let shard_vectors = vec_bytes(p.shard_rows);
    // The add chunk: at most one shard (a chunk never spans shards), the allowance.
    let chunk = p.add_batch.min(p.shard_rows);
    // The add working set besides the chunk: FAISS's residuals of the chunk, one exact-search
    // block, one read block decoded by arrow and its copy.
    // And one distance tile of FAISS's BLAS search (at most 4096 queries x 1024 database
    // vectors, its `distance_compute_blas_*_bs`): the chunk against the coarse centroids, or
    // the recall queries against an exact block, whichever is larger.
    let nlist = p.factory.split(',').find_map(|t| t.strip_prefix("IVF")).and_then(|t| t.parse::<usize>().ok()).unwrap_or(0);
    let nq = p.spec().recall.queries;
    let tile = 4 * (chunk.min(4096) * nlist.min(1024)).max(nq.min(4096) * TRUTH_BLOCK.min(1024)) as u64;
    let working = vec_bytes(chunk) + vec_bytes(TRUTH_BLOCK) + 2 * vec_bytes(READ_BLOCK) + tile;
    // The recall queries, held by every step after training.
    let queries = vec_bytes(p.spec().recall.queries);
    let (floor, _, fj) = run(&["floor"]);
    let per_row = fj["rowmap_bytes_per_row"].as_f64().unwrap();
    let rowmap = |rows: usize| (rows as f64 * per_row) as u64;
    let (train_peak, train_s, _) = run(&["train"]);
    let fp = georag::index::fingerprint(&p.spec(), &p.store());
    let layout = Layout::new(p.cache().join("index").join(&fp));
    let trained = size(&layout.trained());
    let w = p.workers.to_string();
    let mut rows_out = vec![];
    let mut holds = true;
    let mut largest_part = 0;
    println!("| step | peak RSS | above floor | index / part | row map | bound above floor | holds | s |");
    println!("|---|---:|---:|---:|---:|---:|---|---:|");
    let train_sample = vec_bytes(p.train.min(p.n));
    println!(
        "| floor (store opened, FAISS run once at the exact-search shape) | {:.0} MB | | | | | | |\n| train ({} vectors sample, {:.0} MB) | {:.0} MB | {:.0} MB | trained {:.1} MB | | (not bounded by the database) | | {:.1} |",
        mb(floor),
        p.train,
        mb(train_sample),
        mb(train_peak),
        mb(train_peak.saturating_sub(floor)),
        mb(trained),
        train_s
    );
    let tr: TrainRecord = serde_json::from_slice(&std::fs::read(layout.train_json()).unwrap()).unwrap();
    // One table row; true when the step stayed within `bound` above the floor.
    let row = |label: String, (peak, s): (u64, f64), index: u64, rm: u64, bound: u64| -> bool {
        let ok = peak <= floor + bound;
        let above = mb(peak.saturating_sub(floor));
        let verdict = if ok { "yes" } else { "NO" };
        println!("| {label} | {:.0} MB | {above:.0} MB | {:.1} MB | {:.1} MB | {:.0} MB | {verdict} | {s:.1} |", mb(peak), mb(index), mb(rm), mb(bound));
        ok
    };
    for i in 0..p.workers {
        let (pk, ps, _) = run(&["part", &i.to_string(), &w]);
        let step = (pk, ps);
        let part = size(&layout.part(i, p.workers, "faiss"));
        let (lo, hi) = build::shard_range(p.shards(), i, p.workers);
        let rows: usize = tr.ok_per_shard[lo..hi].iter().sum();
        largest_part = largest_part.max(part);
        let rm = rowmap(rows);
        // The chunk's codes and ids before they enter the lists (the part's bytes per vector),
        // the recall truth lists and one exact search's results (16 and 12 bytes a hit).
        let small = (chunk as u64 * part / rows.max(1) as u64) + (nq * (p.spec().recall.k + 1) * 28) as u64;
        let bound = part + rm + vec_bytes(chunk) + working + queries + small;
        holds &= row(format!("part {}/{} ({} shards, {rows} vectors)", i + 1, p.workers, hi - lo), step, part, rm, bound);
        rows_out.push(serde_json::json!({"step": format!("part {i}"), "peak": step.0, "floor": floor, "part_bytes": part, "bound": bound}));
    }
    let (peak, s, _) = run(&["merge", &w]);
    let index = size(&layout.index());
    let rm = rowmap(tr.n_ok());
    // While a part is merged in, each inverted list of the index moves to a buffer that
    // holds both, and the buffers it leaves stay in the heap: up to one part again.
    let bound = index + 2 * largest_part + rm + queries;
    holds &= row(format!("merge ({} parts) + recall", p.workers), (peak, s), index, rm, bound);
    println!(
        "\n{} vectors x {}-d in {} shards of {} ({:.1} MB of vectors each), `{}`, add batch {}, add chunk {} vectors, working set {:.0} MB besides it (FAISS's residuals of the chunk + exact block {} + 2 x read block {} + a {:.1} MB BLAS tile); row map measured at {per_row:.1} bytes per row.",
        p.n,
        p.d,
        p.shards(),
        p.shard_rows,
        mb(shard_vectors),
        p.factory,
        p.add_batch,
        chunk,
        mb(working),
        TRUTH_BLOCK,
        READ_BLOCK,
        mb(tile)
    );
    let j = serde_json::json!({"n": p.n, "d": p.d, "shards": p.shards(), "shard_rows": p.shard_rows, "factory": p.factory, "floor": floor,
        "train_peak": train_peak, "train_s": train_s, "parts": rows_out, "merge_peak": peak, "merge_s": s, "index_bytes": index, "merge_bound": bound});
    println!("{j}");
    if !holds {
        println!("bound does not hold");
        std::process::exit(1);
    }
}
