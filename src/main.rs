//! The `georag` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use georag::eval::{self, CompareArgs, EvalArgs, ReportArgs};
use georag::ingest::{def, prepare as prep};
use georag::embed::{self, EncoderSpec, Worker};
use georag::{config, gate, metrics::MetricsFile, pipeline};
use std::path::PathBuf;
use std::process::ExitCode;

/// georag: evaluation harness for image geolocalization with retrieval-augmented multimodal LLMs.
///
/// Runs an experiment from one YAML config (datasets -> embeddings -> FAISS index -> retrieval ->
/// methods -> accuracy at 1/25/200/750/2500 km -> report), scores prediction files, and gates CI
/// on accuracy regressions.
#[derive(Parser)]
#[command(name = "georag", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every stage of an experiment config, reusing cached stages whose fingerprints match.
    ///
    /// Exit status: 0 when every sample succeeded, 2 when the run completed but some samples
    /// failed (undecodable photos, queries without neighbours: counted in run.json and the
    /// report), 1 on an error that stopped the run.
    Run {
        /// Experiment config (YAML; may `include:` other files).
        config: PathBuf,
        /// Override a config value: `--set index.nprobe=32`, `--set methods.1.k=8`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default: results/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Answer MLLM methods only from the response store (the generator's identity, no
        /// server): fails on the first sample without a recorded answer, naming it.
        #[arg(long)]
        replay: bool,
        /// Write no plots (for CI): metrics, tables, per_image.csv and report.html as usual.
        #[arg(long)]
        no_plots: bool,
        /// Sweep a config key: `--sweep retrieval.k=5,10,15`. Repeat for more axes (their
        /// cartesian product runs, each point into OUT/<NNN_setting>, with OUT/sweep.json); a
        /// `sweep:` block in the config adds zipped axes. Points already complete for the same
        /// resolved config are skipped, so a rerun does no work and an interrupted sweep resumes.
        #[arg(long = "sweep", value_name = "KEY=V1,V2,...")]
        sweeps: Vec<String>,
    },
    /// Check everything CONFIG needs locally (prepared datasets, model snapshots, weights,
    /// files it names, API-key variables) without running anything; list every missing piece
    /// with the command that provides it. Exit 0 when ready, 1 when something is missing.
    Validate {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Run provenance: list run directories, or say what differs between two runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// The stages up to and including generation, then stop: fills the response store live,
    /// or exchanges batch files with an offline runner (`vllm run-batch`, hosted batch APIs).
    Generate {
        /// Experiment config.
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory for generations.parquet (default: results/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write every request without a valid answer to FILE.jsonl (OpenAI Batch format).
        #[arg(long, value_name = "FILE.jsonl", conflicts_with = "import_batch")]
        export_batch: Option<PathBuf>,
        /// Read a batch results file (`vllm run-batch -o`, a hosted batch's output) into the
        /// response store, validated like live answers.
        #[arg(long, value_name = "RESULTS.jsonl")]
        import_batch: Option<PathBuf>,
    },
    /// A SIMULATED OpenAI-compatible multimodal LLM server on loopback, for demos and load
    /// tests. It is not a model: it answers from the coordinates in the prompt with a seeded
    /// error model (usually a similar neighbour moved by 1-300 km, sometimes a far guess, a
    /// refusal or prose without numbers), and says "simulated" in its model id.
    SimulateServer {
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Write the base URL (http://127.0.0.1:PORT) to this file once listening.
        #[arg(long)]
        url_file: Option<PathBuf>,
        /// Seed of the error model.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fixed latency per request, milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Requests processed at once (more wait).
        #[arg(long, default_value_t = 64)]
        slots: usize,
        /// Probability of answering 429 / 500 / 503, or of resetting the connection.
        #[arg(long, default_value_t = 0.0)]
        fail_429: f64,
        #[arg(long, default_value_t = 0.0)]
        fail_500: f64,
        #[arg(long, default_value_t = 0.0)]
        fail_503: f64,
        #[arg(long, default_value_t = 0.0)]
        fail_reset: f64,
        /// Return at most this many choices (servers that ignore `n`).
        #[arg(long)]
        max_choices: Option<usize>,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        exit_after_s: Option<f64>,
    },
    /// Compare a metrics.json with a baseline: exit 0 when every accuracy is within the
    /// tolerance (either direction) and above every `--min` floor, 1 on a regression (printed per
    /// threshold, and per changed image with `--exact`), 2 on invalid input (a file that cannot
    /// be read, a malformed `--min`, a floor for a threshold the metrics lack).
    Check {
        /// metrics.json of the run to check.
        metrics: PathBuf,
        /// Baseline metrics.json (e.g. results/baselines/demo.json).
        #[arg(long)]
        baseline: PathBuf,
        /// Allowed absolute difference, in percentage points of accuracy (live runs).
        #[arg(long, default_value_t = 1.0)]
        tolerance_pct: f64,
        /// Pass when each accuracy is inside the baseline's 95 % Wilson interval (live runs).
        #[arg(long, conflicts_with = "exact")]
        tolerance_ci95: bool,
        /// Replayed runs: any difference fails (accuracies, n, median, mean, GeoScore), and every
        /// image whose prediction changed is listed when both directories have per_image.csv.
        #[arg(long)]
        exact: bool,
        /// Floor: `--min acc_25km=40` fails any row below 40 % at 25 km. Repeatable.
        #[arg(long = "min", value_name = "acc_<T>km=PERCENT")]
        floors: Vec<String>,
    },
    /// Build the FAISS index of a config's database from its embedding store (after `georag
    /// embed`), one shard in memory at a time, and measure its recall against exact search.
    ///
    /// On many machines: `--train` once, then `--worker I --workers N` on each (or a SLURM
    /// array), then `--merge --workers N`. `--tune` sweeps nprobe / efSearch afterwards.
    Index(IndexArgs),
    /// Neighbours of every query (the stages up to retrieval): writes retrieval.parquet (query
    /// id, mode, rank, db id, lat, lon, similarity, text) and retrieval_removed.csv.
    /// `--import-neighbours FILE.npy` reads released row arrays (G3's) instead of searching.
    Retrieve {
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Output directory (default: results/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// int64 (n_queries × k) .npy of database row numbers, best first (e.g. I_g3_im2gps3k.npy).
        #[arg(long, value_name = "FILE.npy")]
        import_neighbours: Option<PathBuf>,
        /// The same for dissimilar neighbours (e.g. the `_reverse` arrays).
        #[arg(long, value_name = "FILE.npy", requires = "import_neighbours")]
        import_dissimilar: Option<PathBuf>,
        /// Also write the lists as G3-style arrays (`similar.npy`, `dissimilar.npy`: int64
        /// database row numbers, -1 padded) that `retrieval.import` reads back: pins a retrieval.
        #[arg(long)]
        export_npy: bool,
    },
    /// Ingest a benchmark or database into validated Parquet shards (see `georag datasets list`).
    ///
    /// Every input row ends up in a shard or in quarantine.parquet with its reason; the manifest
    /// records counts per reason, examples, policies, checksums and the decode policy.
    Prepare(PrepareArgs),
    /// Dataset definitions and prepared datasets.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// Score a per-image predictions file (CSV/Parquet, any common column spelling) against
    /// ground truth, under a declared convention; writes metrics.json, tables, per_image.csv, plots.
    Eval(EvalArgs),
    /// Paired comparison of two runs on the same images: per-threshold difference, exact McNemar
    /// test on per-image hits, and a verdict that says when a difference is within noise.
    Compare(CompareArgs),
    /// Paper-style tables (Markdown, CSV, LaTeX, HTML) and plots from runs, with published rows
    /// beside them and a Δ column.
    Report(ReportArgs),
    /// Embed images only. `georag embed CONFIG`: the database and queries of an experiment, into
    /// the cache `georag run` reads. `georag embed --encoder hf:MODEL_DIR --input DATASET_DIR
    /// --out DIR`: one dataset (a directory with manifest.json) with a local Hugging Face
    /// snapshot (CLIP or SigLIP, from its config.json). Resumable per shard; `--worker I
    /// --workers N` (or a SLURM array) splits the shards over processes.
    Embed(EmbedArgs),
    /// Geo-alignment (G3, TransGeoCLIP): heads trained on the cached database embeddings.
    Align {
        #[command(subcommand)]
        command: AlignCommand,
    },
    /// Embed coordinates with GeoCLIP's location tower: `--encoder geoclip:DIR` (the geoclip
    /// package's weights, e.g. an unpacked wheel), `--coords FILE.csv` (lat/lon columns) or
    /// `--coords gallery` (the package's 100K gallery); writes Parquet (lat, lon, vector).
    EncodeGps {
        #[arg(long)]
        encoder: String,
        #[arg(long)]
        coords: String,
        #[arg(long)]
        out: PathBuf,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(clap::Args)]
struct IndexArgs {
    /// Experiment config (its `database`, `encoder` and `index` sections).
    config: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Only train (the first step of a sharded build).
    #[arg(long, conflicts_with_all = ["merge", "worker"])]
    train: bool,
    /// This worker's index among `--workers` (default: SLURM_ARRAY_TASK_ID when set).
    #[arg(long)]
    worker: Option<usize>,
    /// Number of workers (default: SLURM_ARRAY_TASK_COUNT when set).
    #[arg(long)]
    workers: Option<usize>,
    /// Merge the `--workers` partial indexes into the final one.
    #[arg(long, requires = "workers")]
    merge: bool,
    /// Sweep nprobe (IVF) or efSearch (HNSW): recall@1/10/k and queries/s, table + tune.svg.
    #[arg(long)]
    tune: bool,
    /// With --tune: report the smallest setting whose recall@10 reaches this.
    #[arg(long, requires = "tune")]
    recall_target: Option<f64>,
}

#[derive(clap::Args)]
struct EmbedArgs {
    /// Experiment config (embeds its database and queries).
    config: Option<PathBuf>,
    /// Config override, as for `run`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Ad hoc: `hf:MODEL_DIR` (CLIP / SigLIP snapshot) or `im2gps`.
    #[arg(long, conflicts_with = "config")]
    encoder: Option<String>,
    /// Ad hoc: dataset directory (manifest.json + shards, as `georag prepare` writes), or a
    /// plain image directory (ids = file names, coordinates unknown).
    #[arg(long, requires = "encoder")]
    input: Option<PathBuf>,
    /// Ad hoc: output directory (emb-NNNNN.parquet per dataset shard, done.json last).
    #[arg(long, requires = "encoder")]
    out: Option<PathBuf>,
    /// Ad hoc: device (`cpu`, `cuda:0`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Ad hoc: images per model call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Ad hoc: model dtype (f32 on CPU; f16/bf16 on CUDA).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// This process's index among `--workers` (default: SLURM_ARRAY_TASK_ID when set).
    #[arg(long)]
    worker: Option<usize>,
    /// Number of processes splitting the shards (default: SLURM_ARRAY_TASK_COUNT when set).
    #[arg(long)]
    workers: Option<usize>,
}

fn print_embed_stats(label: &str, rows: usize, s: &embed::EmbedStats, complete: bool, dir: &std::path::Path) {
    let ips = if s.total_s > 0.0 { s.images as f64 / s.total_s } else { 0.0 };
    println!(
        "{label}: {} images embedded in {:.2} s ({ips:.1} images/s; model {:.2} s, decode+preprocess {:.2} s overlapped), {} shards written{}, {} present, {rows} rows{} -> {}",
        s.images,
        s.total_s,
        s.model_s,
        s.prepare_s,
        s.shards_written,
        match (s.shards_derived, s.base_shards_written) {
            (0, _) => String::new(),
            (d, 0) => format!(" ({d} derived from the base encoder's cached store, no image decoded)"),
            (d, b) => format!(" ({d} derived from the base encoder's store, {b} of whose shards were embedded first)"),
        },
        s.shards_present,
        if complete { ", complete" } else { ", waiting for other workers" },
        dir.display()
    );
}

fn embed_cmd(a: EmbedArgs) -> Result<ExitCode> {
    let worker = Worker::resolve(a.worker, a.workers, |k| std::env::var(k).ok())?;
    if let Some(path) = &a.config {
        let cfg = config::load(path, &a.sets)?;
        cfg.validate()?;
        for r in pipeline::embed_only(&cfg, worker).with_context(|| format!("embedding {}", path.display()))? {
            print_embed_stats(&r.label, r.rows, &r.stats, r.complete, &r.dir);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(enc), Some(input), Some(out)) = (&a.encoder, &a.input, &a.out) else {
        anyhow::bail!("give a CONFIG, or --encoder, --input and --out");
    };
    let mut spec = if let Some(dir) = enc.strip_prefix("hf:") {
        EncoderSpec::from_hf_dir(std::path::Path::new(dir))?
    } else if enc == "im2gps" {
        EncoderSpec::Im2gps { params: Default::default() }
    } else {
        anyhow::bail!("--encoder `{enc}`: expected hf:MODEL_DIR or im2gps");
    };
    if let EncoderSpec::Clip { params } | EncoderSpec::Siglip { params } = &mut spec {
        params.device = a.device.clone();
        params.batch_size = a.batch_size;
        params.dtype = serde_yaml::from_str(&a.dtype).with_context(|| format!("--dtype {}: expected f32, f16 or bf16", a.dtype))?;
    }
    let encoder = embed::build(&spec)?;
    let ds = if input.join("manifest.json").exists() {
        georag::ingest::Dataset::open(input).with_context(|| format!("opening dataset {}", input.display()))?
    } else {
        image_dir_dataset(input, &out.join("input-dataset"))?
    };
    let opts = embed::EmbedOptions { batch_size: spec.batch_size(), worker, ..Default::default() };
    let (emb, stats) = embed::embed_to_dir(out, &ds, encoder.as_ref(), &opts, &ds.manifest.name)?;
    print_embed_stats(&ds.manifest.name, ds.len(), &stats, emb.is_some(), out);
    if let Some(e) = emb {
        if e.n_failed() > 0 {
            eprintln!("georag: {} images failed to decode (status decode_failed in the shards)", e.n_failed());
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An image directory as a dataset (rows point at the files; ids are file names; coordinates are
/// unknown and recorded as 0, 0), written once into `dir`.
fn image_dir_dataset(images: &std::path::Path, dir: &std::path::Path) -> Result<georag::ingest::Dataset> {
    use sha2::Digest;
    if let Ok(d) = georag::ingest::Dataset::open(dir) {
        return Ok(d);
    }
    let exts = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];
    let mut files: Vec<PathBuf> = std::fs::read_dir(images)
        .with_context(|| format!("reading {}", images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| exts.contains(&e.to_ascii_lowercase().as_str())))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "{}: no manifest.json and no image files", images.display());
    let abs = std::fs::canonicalize(images)?;
    let mut w = georag::ingest::ShardWriter::new(dir, &abs.file_name().unwrap_or_default().to_string_lossy(), 1024)?;
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
        w.push(georag::ingest::DatasetRow {
            id: name.clone(),
            lat: 0.0,
            lon: 0.0,
            image: None,
            image_path: Some(abs.join(&name).to_string_lossy().into_owned()),
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            author: None,
            meta: None,
        })?;
    }
    w.finish(serde_json::json!({"source": "image directory", "dir": abs, "coordinates": "unknown (0, 0)"}))?;
    Ok(georag::ingest::Dataset::open(dir)?)
}

fn encode_gps_cmd(encoder: &str, coords: &str, out: &std::path::Path, device: &str) -> Result<ExitCode> {
    let dir = encoder.strip_prefix("geoclip:").with_context(|| format!("--encoder `{encoder}`: expected geoclip:DIR"))?;
    let dir = std::path::Path::new(dir);
    let dev = embed::hf::device(device)?;
    let enc = embed::geoclip::LocationEncoder::load(dir, &dev)?;
    let pts = if coords == "gallery" { embed::geoclip::load_gallery(dir)? } else { embed::geoclip::read_coords(std::path::Path::new(coords))? };
    let t = std::time::Instant::now();
    let v = enc.encode(&pts).context("running the location encoder")?;
    embed::geoclip::write_gps_embeddings(out, &pts, &v)?;
    println!("{} coordinates -> {} ({:.2} s, 512-d, L2-normalised; encoder {})", pts.len(), out.display(), t.elapsed().as_secs_f64(), enc.fingerprint());
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum AlignCommand {
    /// Train the `align:` section of an experiment config on its database: embeds the database
    /// with the config's encoder (or reuses the cached store), holds out `align.train.holdout`
    /// seeded rows, trains with a seeded data order, evaluates held-out image->GPS accuracy every
    /// epoch, checkpoints atomically and resumes from the last checkpoint when rerun.
    Train {
        /// Experiment config with an `align:` section.
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Output directory (default: <cache_dir>/align/<training fingerprint>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop after this many optimizer steps in total (checkpointed; rerun to continue).
        #[arg(long)]
        max_steps: Option<usize>,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// One line per run directory (with run.json) under DIR: status, name, start, wall time,
    /// git commit, queries, failed samples, tokens, overrides.
    List { dir: PathBuf },
    /// Which fingerprints, config keys, build facts and machine facts differ between runs A and
    /// B (directories or run.json files), and whether their metrics are comparable.
    Diff { a: PathBuf, b: PathBuf },
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Show the dataset definitions georag ships (datasets/*.yaml) and their variants.
    List,
    /// Re-check a prepared dataset: shard checksums, row counts, fingerprint, quarantine count.
    /// Exit 1 when anything drifted.
    Verify {
        /// Dataset directory (with manifest.json).
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct PrepareArgs {
    /// A built-in definition name (`im2gps3k`, `yfcc4k`, ...) or a definition YAML file.
    dataset: String,
    /// Variant of the definition (e.g. `3000` for im2gps3k, `raw` for yfcc4k).
    #[arg(long)]
    variant: Option<String>,
    /// Metadata CSV, or a directory holding the definition's metadata file.
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Images: a directory, a .tar file (streamed), or .zip files (repeat the flag).
    #[arg(long)]
    images: Vec<PathBuf>,
    /// Output directory (default: results/datasets/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rows per Parquet shard.
    #[arg(long, default_value_t = 4096)]
    shard_rows: usize,
    /// Store image bytes in the shards (`inline`) or paths plus sha256 (`reference`).
    #[arg(long, value_parser = ["inline", "reference"])]
    store: Option<String>,
    /// Only inspect image headers; do not decode every image.
    #[arg(long)]
    no_decode_check: bool,
    /// Pixel limit (decompression-bomb guard), checked from the header.
    #[arg(long, default_value_t = georag::decode::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Policy for a reason: `REASON=skip|keep|fail`, e.g. `null_island=keep`. Repeatable.
    #[arg(long = "policy", value_name = "REASON=POLICY")]
    policies: Vec<String>,
    /// A prepared database to check this (query) dataset against for leakage.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Same author within this distance counts as leakage.
    #[arg(long, default_value_t = 1.0)]
    leak_km: f64,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("georag: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate { config: path, sets, out, export_batch, import_batch } => {
            let cfg = config::load(&path, &sets)?;
            cfg.validate()?;
            anyhow::ensure!(cfg.mllm_methods().next().is_some(), "{}: no MLLM methods (kind: mllm) to generate for", path.display());
            let out = out.unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
            let mode = match (&export_batch, &import_batch) {
                (Some(f), _) => pipeline::mllm::Mode::ExportBatch(f.clone()),
                (_, Some(f)) => pipeline::mllm::Mode::ImportBatch(f.clone()),
                _ => pipeline::mllm::Mode::Live,
            };
            let g = pipeline::generate(&cfg, &out, &mode).with_context(|| format!("generating for {}", path.display()))?;
            println!(
                "{} samples needed, {} already in the response store; {} requests planned",
                g.samples_needed, g.samples_in_store, g.requests_planned
            );
            if let Some(n) = g.batch_exported {
                println!("wrote {n} requests to {}", export_batch.as_ref().expect("export").display());
            }
            if let Some(n) = g.batch_imported {
                println!("imported {n} result lines ({} matched no pending request)", g.batch_unmatched.unwrap_or(0));
            }
            if g.requests_sent > 0 {
                println!("{} requests sent ({} attempts, {} retries, {} failed after retries)", g.requests_sent, g.attempts, g.retries, g.requests_failed);
            }
            Ok(if g.requests_failed > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Command::SimulateServer { port, url_file, seed, latency_ms, slots, fail_429, fail_500, fail_503, fail_reset, max_choices, exit_after_s } => {
            use georag::generate::simulate;
            let opts = simulate::SimOptions { seed, latency_ms, slots, fail_429, fail_500, fail_503, fail_reset, max_choices, ..Default::default() };
            let model = opts.model.clone();
            let (server, sim) = simulate::serve(&format!("127.0.0.1:{port}"), opts).context("starting the simulator")?;
            let url = server.url();
            if let Some(f) = &url_file {
                georag::util::atomic::write_bytes(f, format!("{url}\n").as_bytes())?;
            }
            eprintln!("[georag] SIMULATED LLM server `{model}` listening on {url} (not a model: seeded answers from the prompt's coordinates)");
            match exit_after_s {
                Some(s) => std::thread::sleep(std::time::Duration::from_secs_f64(s)),
                None => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
            }
            let st = sim.stats();
            server.stop();
            eprintln!("[georag] simulator stopped: {st:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config: path, sets, out, replay, no_plots, sweeps } => {
            let cfg = config::load(&path, &sets)?;
            cfg.validate()?;
            let out = out.unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
            let mode = if replay { pipeline::mllm::Mode::Replay } else { pipeline::mllm::Mode::Live };
            let mut axes = georag::sweep::parse_block(&path)?;
            for a in &sweeps {
                axes.push(georag::sweep::parse_cli(a)?);
            }
            if !axes.is_empty() {
                let f = georag::sweep::run(&path, &sets, axes, &out, &mode, !no_plots, &mut |l| println!("{l}"))?;
                println!("sweep: {} points, {} failed; {}", f.points.len(), f.failed_points(), out.join("sweep.json").display());
                return Ok(if f.failed_points() > 0 {
                    ExitCode::from(1)
                } else if f.failed_samples() > 0 {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                });
            }
            let opts = pipeline::RunOptions { mode: &mode, plots: !no_plots, config_path: Some(&path), overrides: &sets };
            let summary = pipeline::run_opts(&cfg, &out, &opts).with_context(|| format!("running {}", path.display()))?;
            let conv = &cfg.metrics;
            for row in &summary.metrics.rows {
                let accs: Vec<String> = conv
                    .thresholds_km
                    .iter()
                    .filter_map(|&t| row.acc(t).map(|a| format!("{t} km {a:.2}%")))
                    .collect();
                println!(
                    "{:<30} {}  (n scored {}/{} expected, coverage {:.1}%)",
                    row.method,
                    accs.join("  "),
                    row.n_scored,
                    row.n_expected,
                    100.0 * row.coverage
                );
            }
            println!("convention: {}", conv.describe());
            println!("report: {}", summary.out.join("report.html").display());
            let failed = summary.run.n_failures();
            if failed > 0 {
                eprintln!("georag: {failed} samples failed ({:?}); see run.json and the report", summary.run.failures);
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { metrics, baseline, tolerance_pct, tolerance_ci95, exact, floors } => {
            // Exit 2, not 1, when the input is unusable: a CI log must not read it as a regression.
            match check_cmd(&metrics, &baseline, tolerance_pct, tolerance_ci95, exact, &floors) {
                Ok(code) => Ok(code),
                Err(e) => {
                    eprintln!("georag: invalid input: {e:#}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Validate { config: path, sets } => {
            let cfg = config::load(&path, &sets)?;
            cfg.validate()?;
            let v = georag::validate::validate(&cfg);
            print!("{}", v.render(&path.display().to_string()));
            Ok(if v.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Runs { command: RunsCommand::List { dir } } => {
            print!("{}", georag::runs::list(&dir));
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs { command: RunsCommand::Diff { a, b } } => {
            let d = georag::runs::diff_dirs(&a, &b)?;
            print!("{}", d.render(&a.display().to_string(), &b.display().to_string()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Prepare(a) => prepare(a),
        Command::Datasets { command: DatasetsCommand::List } => {
            for (name, text) in def::BUILTIN {
                let d = def::DatasetDef::parse(text, name)?;
                let rows = d.expected_rows.map(|n| n.to_string()).unwrap_or_else(|| "varies".into());
                println!("{name:<10} {rows:>7} rows  {}", d.provenance);
                for (v, vd) in &d.variants {
                    let rows = vd.expected_rows.map(|n| n.to_string()).unwrap_or_else(|| "varies".into());
                    println!("  @{v:<7} {rows:>7} rows  {}", vd.provenance);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Datasets { command: DatasetsCommand::Verify { dir } } => {
            let v = georag::ingest::verify::verify(&dir)?;
            for d in &v.drift {
                println!("DRIFT: {d}");
            }
            println!("{}: {} shards, {} rows checked; {}", dir.display(), v.shards_checked, v.rows_checked, if v.ok() { "no drift" } else { "DRIFT FOUND" });
            Ok(if v.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Eval(a) => {
            let o = eval::run_eval(&a).with_context(|| format!("georag eval {}", a.predictions.display()))?;
            for c in &o.columns {
                eprintln!("[georag] column {c}");
            }
            for line in o.issues.summary(3) {
                eprintln!("[georag] {line}");
            }
            println!("{}", o.metrics);
            println!(
                "convention: {}; coverage {:.2} % (answered / expected); wrote {} files to {}",
                o.metrics.convention.describe(),
                100.0 * o.metrics.coverage,
                o.files.len(),
                a.out.display()
            );
            let t = o.timings_s;
            println!(
                "wall-clock s (Instant around each stage): read {:.2}, join {:.2}, score {:.2}, write outputs {:.2}",
                t.read, t.join, t.score, t.write
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare(a) => {
            let o = eval::run_compare(&a).context("georag compare")?;
            println!("{}", o.markdown);
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed(a) => embed_cmd(a),
        Command::Index(a) => index_cmd(a),
        Command::Retrieve { config: path, sets, out, import_neighbours, import_dissimilar, export_npy } => {
            let mut cfg = config::load(&path, &sets)?;
            if let Some(s) = import_neighbours {
                cfg.retrieval.import = Some(georag::retrieval::ImportSpec { similar: s, dissimilar: import_dissimilar });
            }
            cfg.validate()?;
            let out = out.unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
            let n = pipeline::retrieve_only(&cfg, &out, export_npy).with_context(|| format!("retrieving for {}", path.display()))?;
            let lists: usize = n.iter().map(|q| q.similar.len() + q.dissimilar.len()).sum();
            let none = n.iter().filter(|q| q.status != georag::record::Status::Ok).count();
            println!("{} queries, {lists} neighbours ({none} queries without any) -> {}", n.len(), out.join("retrieval.parquet").display());
            if export_npy {
                println!("neighbour arrays (database row numbers, retrieval.import's format) -> {}", out.display());
            }
            for (k, (r, q)) in georag::retrieval::removal_totals(&n) {
                println!("excluded {k}: {r} neighbours in {q} queries");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Align { command: AlignCommand::Train { config: path, sets, out, max_steps } } => align_train(&path, &sets, out, max_steps),
        Command::EncodeGps { encoder, coords, out, device } => encode_gps_cmd(&encoder, &coords, &out, &device),
        Command::Report(a) => {
            let o = eval::run_report(&a).context("georag report")?;
            println!("wrote {} files to {}", o.files.len(), a.out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn align_train(path: &std::path::Path, sets: &[String], out: Option<PathBuf>, max_steps: Option<usize>) -> Result<ExitCode> {
    use georag::align::{data, train};
    let cfg = config::load(path, sets)?;
    let spec = cfg.align.clone().with_context(|| format!("{}: no `align:` section (kind: g3 or transgeoclip)", path.display()))?;
    let (d, info) = data::from_config(&cfg, &spec).with_context(|| format!("reading the training data of {}", path.display()))?;
    let out = out.unwrap_or_else(|| data::default_out(&cfg, &spec, &d));
    eprintln!(
        "[georag] align {}: {} database rows embedded by {} ({}; {} rows without an embedding left out), {}-d{}",
        spec.name(),
        info.rows,
        info.encoder,
        info.store.display(),
        info.skipped - info.skipped_text,
        d.image_dim,
        d.text.as_ref().map(|t| format!(", text {}-d", t.1)).unwrap_or_default()
    );
    if let Some(t) = &info.text {
        let how = if t.reused { "reused".to_string() } else { format!("embedded now, {} distinct strings", t.distinct) };
        eprintln!(
            "[georag] align place texts: {} ({how}); {} rows have no place text, {} of them with a usable image left out of training",
            t.dir.display(),
            t.missing,
            info.skipped_text
        );
    }
    let r = train::train(&spec, &d, &train::TrainOptions { out: out.clone(), max_steps, dtype: None }).with_context(|| format!("training {}", out.display()))?;
    if let Some(s) = r.resumed_from {
        println!("resumed from the checkpoint at step {s}");
    }
    println!(
        "held-out image->GPS accuracy: top-1 of each of the {} held-out images over the gallery of the {} held-out coordinates, haversine R = 6371 km, strict <; {} training rows",
        r.curve.evals.first().map_or(0, |e| e.n),
        r.n_holdout,
        r.n_train
    );
    for e in &r.curve.evals {
        let accs: Vec<String> = e.accuracy.iter().map(|(t, a)| format!("{t} km {:.2}%", 100.0 * a)).collect();
        let loss = r.curve.steps.iter().filter(|s| s.epoch + 1 == e.epoch).map(|s| s.loss).collect::<Vec<_>>();
        let mean = if loss.is_empty() { String::new() } else { format!("  (mean training loss of the epoch's {} steps {:.4})", loss.len(), loss.iter().sum::<f64>() / loss.len() as f64) };
        println!("  epoch {:>2}{}: {}{mean}", e.epoch, if e.epoch == 0 { " (untrained)" } else { "" }, accs.join("  "));
    }
    if r.samples > 0 {
        println!(
            "throughput: {:.0} samples/s ({} samples through forward + backward + AdamW in {:.1} s, excluding evaluation and checkpoints)",
            r.samples as f64 / r.step_seconds.max(1e-9),
            r.samples,
            r.step_seconds
        );
    }
    match &r.card {
        Some(c) => println!("model {} (fingerprint {}) in {}", c.kind, c.model_fingerprint, out.display()),
        None => println!("stopped at step {} (--max-steps); checkpoint in {}: rerun to continue", r.curve.steps.len(), out.display()),
    }
    Ok(ExitCode::SUCCESS)
}

fn check_cmd(metrics: &std::path::Path, baseline: &std::path::Path, tolerance_pct: f64, ci95: bool, exact: bool, floors: &[String]) -> Result<ExitCode> {
    let cur = MetricsFile::read(metrics)?;
    let base = MetricsFile::read(baseline)?;
    let floors: Vec<gate::Floor> = floors.iter().map(|f| gate::parse_floor(f)).collect::<Result<_, String>>().map_err(anyhow::Error::msg)?;
    for f in &floors {
        let mut known: Vec<String> = cur.rows.iter().flat_map(|r| r.acc_pct.keys().map(|k| format!("acc_{k}km"))).collect();
        known.sort();
        known.dedup();
        let want = format!("acc_{}km", f.threshold_key);
        if !known.contains(&want) {
            let refs: Vec<&str> = known.iter().map(String::as_str).collect();
            anyhow::bail!("--min {want}: {} has no such threshold; {}", metrics.display(), georag::util::suggest::hint(&want, &refs));
        }
    }
    let tolerance = if exact {
        gate::Tolerance::Exact
    } else if ci95 {
        gate::Tolerance::Ci95
    } else {
        gate::Tolerance::Points(tolerance_pct)
    };
    let mut report = gate::check_with(&cur, &base, tolerance, &floors);
    if exact {
        let beside = |m: &std::path::Path| m.parent().map(|d| d.join("per_image.csv")).filter(|p| p.is_file());
        match (beside(metrics), beside(baseline)) {
            (Some(c), Some(b)) => {
                let c = georag::report::per_image::read(&c)?;
                let b = georag::report::per_image::read(&b)?;
                report.image_changes = gate::image_changes(&c, &b);
            }
            _ => println!("(no per_image.csv beside both metrics files: images not compared one by one)"),
        }
    }
    print!("{}", report.render());
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn prepare(a: PrepareArgs) -> Result<ExitCode> {
    let mut d = def::DatasetDef::load(&a.dataset)?;
    if let Some(v) = &a.variant {
        d = d.with_variant(v)?;
    }
    let mut policies = std::collections::BTreeMap::new();
    for p in &a.policies {
        let (r, pol) = p.split_once('=').with_context(|| format!("--policy {p}: expected REASON=skip|keep|fail"))?;
        let reason = prep::Reason::parse(r).with_context(|| {
            let names: Vec<String> = prep::Reason::ALL.iter().map(|r| r.name()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("--policy {p}: unknown reason `{r}`; {}", georag::util::suggest::hint(r, &refs))
        })?;
        let policy = match pol {
            "skip" => prep::Policy::Skip,
            "keep" => prep::Policy::Keep,
            "fail" => prep::Policy::Fail,
            _ => anyhow::bail!("--policy {p}: policy must be skip, keep or fail"),
        };
        policies.insert(reason, policy);
    }
    let opts = prep::PrepareOptions {
        metadata: a.metadata.clone(),
        images: a.images.clone(),
        out: a.out.clone().unwrap_or_else(|| PathBuf::from("results/datasets").join(d.name.replace('@', "-"))),
        shard_rows: a.shard_rows,
        store: a.store.as_deref().map(|s| if s == "reference" { def::StoreMode::Reference } else { def::StoreMode::Inline }),
        decode_check: !a.no_decode_check,
        max_pixels: a.max_pixels,
        policies,
        ..Default::default()
    };
    let p = prep::prepare(&d, &opts).with_context(|| format!("georag prepare {}", a.dataset))?;
    let v = p.manifest.validation.clone().unwrap_or_default();
    println!(
        "{}: {} input rows -> {} kept in {} shards, {} quarantined{}",
        p.manifest.name,
        v["input_rows"],
        v["kept"],
        p.manifest.shards.len(),
        v["quarantined"],
        if p.resumed { " (resumed)" } else { "" }
    );
    if let Some(q) = v["quarantined_by_reason"].as_object() {
        for (reason, n) in q {
            let ex = v["examples"][reason].get(0).and_then(|e| e.as_str()).unwrap_or("");
            println!("  quarantined {reason}: {n}   e.g. {ex}");
        }
    }
    if let Some(f) = v["kept_with_flags"].as_object() {
        for (reason, n) in f {
            println!("  kept, flagged {reason}: {n}");
        }
    }
    if v["expected_rows_match"] == serde_json::Value::Bool(false) {
        println!("  WARNING: {} input rows, the definition expects {}", v["input_rows"], v["expected_rows"]);
    }
    if let Some(variant) = v["metadata"]["matches_variant"].as_str() {
        println!(
            "  NOTE: this metadata file is the `{variant}` variant of `{}` (its sha256 matches): prepare it with --variant {variant} for that variant's columns and row count",
            p.manifest.name
        );
    } else if v["metadata"]["sha256_matches"] == serde_json::Value::Bool(false) {
        println!("  WARNING: metadata sha256 differs from the canonical file's: {}", v["metadata"]["sha256"]);
    }
    if v["swapped_columns_suspected"] == serde_json::Value::Bool(true) {
        println!("  WARNING: most rows have |lat| > 90: the latitude and longitude columns look swapped (nothing was fixed)");
    }
    println!("  shards, manifest.json and quarantine.parquet in {}", p.dir.display());
    if let Some(db) = &a.against {
        let q = georag::ingest::Dataset::open(&p.dir)?;
        let dbs = georag::ingest::Dataset::open(db)?;
        let (s, _) = georag::ingest::leakage::check(&q, &dbs, a.leak_km, &p.dir)?;
        println!(
            "  leakage against {} ({} rows; same author within {} km): {:?} queries affected, {} pairs in leakage.csv",
            db.display(),
            s.database,
            s.km,
            s.queries_affected,
            s.pairs
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn index_cmd(a: IndexArgs) -> Result<ExitCode> {
    use pipeline::index_stage::{IndexAction, IndexOutcome};
    let cfg = config::load(&a.config, &a.sets)?;
    cfg.validate()?;
    let cpath = a.config.display().to_string();
    let action = if a.train {
        IndexAction::Train
    } else if a.merge {
        IndexAction::Merge { n: a.workers.unwrap_or(1) }
    } else if a.worker.is_some() || a.workers.is_some() || std::env::var_os("SLURM_ARRAY_TASK_ID").is_some() {
        let w = Worker::resolve(a.worker, a.workers, |k| std::env::var(k).ok())?;
        IndexAction::Worker { i: w.index, n: w.count }
    } else {
        IndexAction::Build
    };
    let out = pipeline::index_stage::index_stage(&cfg, &action, &cpath).with_context(|| format!("georag index {cpath}"))?;
    let rss = |b: Option<u64>| b.map_or("unknown".to_string(), |b| format!("{:.1} MB", b as f64 / 1e6));
    match out {
        IndexOutcome::Trained(t, dir) => {
            println!(
                "trained `{}` on {} of {} vectors in {:.1} s; {} recall queries drawn -> {}",
                t.factory,
                t.train_rows,
                t.n_ok(),
                t.seconds,
                t.recall_positions.len(),
                dir.display()
            );
            println!("next: `georag index {cpath} --worker I --workers N` for each I, then `--merge --workers N`");
        }
        IndexOutcome::Part(p) => println!(
            "part {}/{}: shards {}..{} ({} vectors) in {:.1} s; peak resident memory since the part started {}",
            p.worker + 1,
            p.workers,
            p.shards.0,
            p.shards.1,
            p.vectors,
            p.seconds,
            rss(georag::index::build::peak_rss())
        ),
        IndexOutcome::Built(mut b) => {
            println!("{}", b.meta.describe(&cfg.index.search_params()));
            println!(
                "{} {} -> {}; peak resident memory since the {} started {} (index {:.1} MB)",
                if b.reused { "reused" } else { "built" },
                b.fingerprint,
                b.dir.display(),
                if b.reused { "opening" } else { "build" },
                rss(georag::index::build::peak_rss()),
                b.meta.bytes as f64 / 1e6
            );
            if a.tune {
                let t = pipeline::index_stage::tune_index(&cfg, &mut b, a.recall_target)?;
                print!("{}", georag::index::tune::table(&t, cfg.index.recall.k));
                for f in georag::index::tune::files(&b.dir) {
                    println!("wrote {}", f.display());
                }
                if a.recall_target.is_some() && t.picked.is_none() {
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
