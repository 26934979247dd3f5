//! Real photos (`../shared/datasets/im2gps3k_sample50/images/`, skipped with a printed reason when
//! absent) through the embedding store end to end: parallel decode + preprocess feeding the model
//! through a bounded channel, worker splitting, per-shard resume, a corrupt image kept as
//! `decode_failed`, and the `georag embed` command.
//!
//! The models are the TINY RANDOM-WEIGHT CLIP and SigLIP of `tests/fixtures/encoders/` (real
//! weights cannot exist in CI): what is checked is the plumbing around a real model, against
//! the same model called directly.

mod common;

use georag::decode::{DEFAULT_MAX_PIXELS, decode_rgb};
use georag::embed::{self, EmbedOptions, Encoder, EncoderSpec, HfParams, Worker};
use georag::ingest::Dataset;
use georag::ingest::shard::{DatasetRow, ShardWriter};
use georag::record::Status;
use sha2::Digest;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders")
}

/// A dataset of the 50 sample photos (inline bytes) plus one corrupt image, 16 rows per shard.
fn photo_dataset(dir: &Path) -> Option<(Dataset, Vec<Option<image::RgbImage>>)> {
    let images = common::shared("datasets/im2gps3k_sample50/images")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&images).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut w = ShardWriter::new(dir, "im2gps3k_sample50", 16).unwrap();
    let mut decoded = vec![];
    let mut push = |id: String, bytes: Vec<u8>, i: usize| {
        decoded.push(decode_rgb(&bytes, DEFAULT_MAX_PIXELS).ok());
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        w.push(DatasetRow { id, lat: i as f64 * 0.1, lon: 0.0, image: Some(bytes), image_path: None, sha256: sha, author: None, meta: None }).unwrap();
    };
    for (i, f) in files.iter().enumerate() {
        push(f.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(f).unwrap(), i);
        if i == 20 {
            push("corrupt".into(), b"\xff\xd8\xff\xe0 not really a jpeg".to_vec(), 999);
        }
    }
    w.finish(serde_json::json!({"test": "encoders_pipeline"})).unwrap();
    Some((Dataset::open(dir).unwrap(), decoded))
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check_against_direct(emb: &embed::Embeddings, enc: &dyn Encoder, decoded: &[Option<image::RgbImage>]) {
    assert_eq!(emb.len(), decoded.len());
    let ok: Vec<image::RgbImage> = decoded.iter().flatten().cloned().collect();
    let direct = enc.encode_batch(&ok).unwrap();
    let d = enc.dim();
    let mut k = 0;
    for (i, img) in decoded.iter().enumerate() {
        match img {
            None => {
                assert_eq!(emb.status[i], Status::DecodeFailed, "row {i}");
                assert!(emb.errors[i].is_some());
            }
            Some(_) => {
                assert_eq!(emb.status[i], Status::Ok, "row {i}: {:?}", emb.errors[i]);
                let c = cos(emb.row(i), &direct[k * d..(k + 1) * d]);
                assert!(c > 0.99999, "row {i}: pipeline vs direct cosine {c}");
                k += 1;
            }
        }
    }
    assert_eq!(emb.n_failed(), 1);
}

/// Tiny random-weight CLIP on real photos: two workers split the shards (the first leaves the
/// store incomplete, the second completes it), then a lost shard is recomputed alone on resume.
#[test]
fn clip_tiny_workers_and_resume_on_real_photos() {
    let root = common::tmp("enc-pipeline-clip");
    let Some((ds, decoded)) = photo_dataset(&root.join("ds")) else { return };
    assert_eq!(ds.manifest.shards.len(), 4);
    let enc = embed::build(&EncoderSpec::Clip { params: HfParams::new(fixtures().join("clip-tiny")) }).unwrap();
    let out = root.join("emb");
    let opts = |w: Worker| EmbedOptions { batch_size: 5, worker: w, ..EmbedOptions::default() };
    let (e0, s0) = embed::embed_to_dir(&out, &ds, enc.as_ref(), &opts(Worker::new(0, 2).unwrap()), "w0").unwrap();
    assert!(e0.is_none(), "worker 0 alone cannot complete the store");
    assert_eq!((s0.shards_written, s0.shards_present), (2, 2));
    assert!(!out.join("done.json").exists());
    let (e1, s1) = embed::embed_to_dir(&out, &ds, enc.as_ref(), &opts(Worker::new(1, 2).unwrap()), "w1").unwrap();
    assert_eq!((s1.shards_written, s1.shards_present), (2, 4));
    let e1 = e1.expect("all shards present");
    assert!(out.join("done.json").exists());
    check_against_direct(&e1, enc.as_ref(), &decoded);

    std::fs::remove_file(out.join("emb-00002.parquet")).unwrap();
    std::fs::remove_file(out.join("done.json")).unwrap();
    let (e2, s2) = embed::embed_to_dir(&out, &ds, enc.as_ref(), &opts(Worker::ALL), "resume").unwrap();
    assert_eq!(s2.shards_written, 1, "only the missing shard is recomputed");
    let e2 = e2.unwrap();
    assert_eq!(e2.ids, e1.ids);
    for i in 0..e1.len() {
        assert!(e1.status[i] != Status::Ok || cos(e1.row(i), e2.row(i)) > 0.99999, "row {i} changed on resume");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Tiny random-weight SigLIP on real photos through `georag embed --encoder hf:DIR`: exit 2
/// (one image failed to decode), every shard written, vectors equal to the model called directly.
#[test]
fn siglip_tiny_cli_on_real_photos() {
    let root = common::tmp("enc-pipeline-siglip");
    let Some((ds, decoded)) = photo_dataset(&root.join("ds")) else { return };
    let model = fixtures().join("siglip-tiny");
    let out = root.join("emb");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["embed", "--encoder", &format!("hf:{}", model.display()), "--input"])
        .arg(root.join("ds"))
        .arg("--out")
        .arg(&out)
        .args(["--batch-size", "7"])
        .env("GEORAG_QUIET", "1")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "stdout {stdout} stderr {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("images/s"), "{stdout}");
    let enc = embed::build(&EncoderSpec::Siglip { params: HfParams::new(model) }).unwrap();
    // Reading the finished store back goes through the same function (nothing left to write).
    let (emb, s) = embed::embed_to_dir(&out, &ds, enc.as_ref(), &EmbedOptions::default(), "read").unwrap();
    assert_eq!(s.shards_written, 0);
    check_against_direct(&emb.unwrap(), enc.as_ref(), &decoded);
    std::fs::remove_dir_all(&root).unwrap();
}

/// SLURM array variables select the worker; explicit flags win; bad values are errors.
#[test]
fn worker_from_slurm_environment() {
    let env = |id: &'static str, n: &'static str, min: Option<&'static str>| {
        move |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" => Some(id.to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some(n.to_string()),
            "SLURM_ARRAY_TASK_MIN" => min.map(String::from),
            _ => None,
        }
    };
    assert_eq!(Worker::resolve(None, None, env("3", "4", None)).unwrap(), Worker { index: 3, count: 4 });
    assert_eq!(Worker::resolve(None, None, env("4", "4", Some("1"))).unwrap(), Worker { index: 3, count: 4 });
    assert_eq!(Worker::resolve(Some(0), Some(2), env("3", "4", None)).unwrap(), Worker { index: 0, count: 2 });
    assert!(Worker::resolve(None, None, env("4", "4", None)).is_err());
    assert!(Worker::resolve(Some(1), None, |_| None).is_err());
    assert_eq!(Worker::resolve(None, None, |_| None).unwrap(), Worker::ALL);
    let w = Worker::new(1, 3).unwrap();
    assert_eq!((0..7).filter(|&s| w.owns(s)).collect::<Vec<_>>(), vec![1, 4]);
}

/// `georag embed CONFIG` as a pipeline stage with the tiny random-weight CLIP (real weights
/// cannot exist in CI) on a small synthetic world: two workers split the shards, the first
/// leaves the database store incomplete, the second completes it, and `georag run` then reuses
/// both stores without embedding anything.
#[test]
fn embed_config_split_over_two_workers_then_run_reuses_it() {
    let dir = common::tmp("enc-embed-config");
    let cfg = format!(
        r#"
name: tiny-clip
cache_dir: {cache}
database: {{kind: synthetic, split: database, n: 300, shard_rows: 100}}
queries: {{kind: synthetic, split: queries, n: 40, shard_rows: 100}}
encoder: {{kind: clip, dir: {model}, batch_size: 16}}
index: {{factory: "Flat"}}
methods:
  - kind: nearest
"#,
        cache = dir.join("cache").display(),
        model = fixtures().join("clip-tiny").display()
    );
    let path = dir.join("tiny.yaml");
    std::fs::write(&path, cfg).unwrap();
    let georag = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").env_remove("SLURM_ARRAY_TASK_ID").output().unwrap()
    };
    let p = path.to_str().unwrap();
    let o = georag(&["embed", p, "--worker", "0", "--workers", "2"]);
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{s} {}", String::from_utf8_lossy(&o.stderr));
    assert!(s.contains("database: 200 images") && s.contains("2 shards written, 2 present") && s.contains("waiting for other workers"), "{s}");
    // The single query shard belongs to worker 0, so the query store is already complete.
    assert!(s.contains("queries: 40 images") && s.contains("complete"), "{s}");
    let o = georag(&["embed", p, "--worker", "1", "--workers", "2"]);
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(s.contains("database: 100 images") && s.contains("1 shards written, 3 present, 300 rows, complete"), "{s}");
    let out = dir.join("run");
    let o = georag(&["run", p, "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    for stage in run["stages"].as_array().unwrap().iter().filter(|s| s["stage"].as_str().unwrap().starts_with("embed")) {
        assert_eq!(stage["reused"], serde_json::json!(true), "{stage}");
    }
    assert_eq!(run["n_database_indexed"], serde_json::json!(300));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `georag embed --input IMAGE_DIR` (no manifest): the directory becomes a dataset of file
/// references; a corrupt file is kept as `decode_failed` (exit 2). Uses the weight-free im2gps
/// encoder and the committed fixture images.
#[test]
fn embed_plain_image_directory() {
    let dir = common::tmp("enc-imgdir");
    let imgs = dir.join("images");
    std::fs::create_dir_all(&imgs).unwrap();
    for f in ["wide.png", "tall.png", "photo.jpg"] {
        std::fs::copy(fixtures().join("images").join(f), imgs.join(f)).unwrap();
    }
    std::fs::write(imgs.join("broken.jpg"), b"\xff\xd8\xff garbage").unwrap();
    std::fs::write(imgs.join("notes.txt"), b"not an image").unwrap();
    let out = dir.join("emb");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["embed", "--encoder", "im2gps", "--input"])
        .arg(&imgs)
        .arg("--out")
        .arg(&out)
        .env("GEORAG_QUIET", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let ds = Dataset::open(&out.join("input-dataset")).unwrap();
    assert_eq!(ds.len(), 4, "the .txt file is not an image");
    let enc = embed::build(&EncoderSpec::Im2gps { params: Default::default() }).unwrap();
    let (emb, s) = embed::embed_to_dir(&out, &ds, enc.as_ref(), &EmbedOptions::default(), "read").unwrap();
    assert_eq!(s.shards_written, 0);
    let emb = emb.unwrap();
    assert_eq!(emb.ids, vec!["broken.jpg", "photo.jpg", "tall.png", "wide.png"]);
    assert_eq!(emb.status[0], Status::DecodeFailed);
    assert!(emb.status[1..].iter().all(|s| *s == Status::Ok));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `georag encode-gps` with GeoCLIP's REAL location weights (from the geoclip wheel cache; skips
/// with a printed reason without it): Parquet with 512-d unit vectors equal to the library's.
#[test]
fn encode_gps_cli_writes_unit_vectors() {
    let Some(d) = common::geoclip_dir() else { return };
    let dir = common::tmp("enc-gps");
    std::fs::write(dir.join("c.csv"), "id,latitude,longitude\na,48.85,2.35\nb,-33.9,151.2\nc,0,0\n").unwrap();
    let out = dir.join("gps.parquet");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["encode-gps", "--encoder", &format!("geoclip:{}", d.display()), "--coords"])
        .arg(dir.join("c.csv"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let batches = georag::util::pq::read(&out).unwrap();
    let b = &batches[0];
    assert_eq!(b.num_rows(), 3);
    let list = georag::util::pq::column::<arrow::array::FixedSizeListArray>(&out, b, "vector").unwrap();
    assert_eq!(list.value_length(), 512);
    let vals = list.values().as_any().downcast_ref::<arrow::array::Float32Array>().unwrap().values().to_vec();
    let enc = georag::embed::geoclip::LocationEncoder::load(&d, &candle_core::Device::Cpu).unwrap();
    let want = enc.encode(&[(48.85, 2.35), (-33.9, 151.2), (0.0, 0.0)]).unwrap();
    for i in 0..3 {
        let row = &vals[i * 512..(i + 1) * 512];
        assert!((cos(row, row) - 1.0).abs() < 1e-4);
        assert!(cos(row, &want[i * 512..(i + 1) * 512]) > 0.99999);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
