//! Interop with a REAL vLLM server: its CPU build from PyPI serving a tiny random-weight
//! Qwen2-VL made locally (`scripts/vllm/`), driven through georag's `openai_compatible` client
//! and response store. `make test-servers` starts the server, sets `GEORAG_VLLM_URL` and runs these
//! tests with `--ignored`; in `make test` they show as ignored.
//!
//! The model's weights are random, so its text is gibberish: the tests check the protocol
//! (n choices, reported model id, usage, raw text kept with the status the parser gives it,
//! vLLM's 400 message recorded as a final failure, resume) and, with a fixed seed, that the same
//! requests give the same texts and statuses twice.

mod common;

use arrow::array::{Array, StringArray};
use georag::pipeline::RunRecord;
use georag::store::{Record, Store};
use georag::util::pq;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const QUERIES: usize = 6;
const SAMPLES: usize = 3;

fn url() -> Option<String> {
    match std::env::var("GEORAG_VLLM_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => panic!("GEORAG_VLLM_URL is not set: run `make test-servers`, which starts vLLM and sets it"),
    }
}

fn config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let cfg = format!(
        r#"
name: vllm-it
cache_dir: {cache}
database: {{kind: synthetic, split: database, n: 300, shard_rows: 128}}
queries: {{kind: synthetic, split: queries, n: {QUERIES}, shard_rows: 2}}
encoder: {{kind: im2gps}}
index: {{factory: "Flat", nprobe: 1, train_sample: 300}}
methods:
  - kind: mllm
    name: rag
    variants:
      - {{prompt: street_rag, neighbours: {{similar: 3, dissimilar: 2}}, samples: {SAMPLES}}}
    sampling: {{temperature: 1.0, max_tokens: 12, seed: 1234}}
    parser: lenient
generator:
  kind: openai_compatible
  base_url: {url}
  model: tiny-qwen2vl
  max_in_flight: 2
  timeout_s: 120
  max_retries: 2
  image: {{send: reencode, max_side: 56, quality: 90}}
{extra}
"#,
        cache = dir.join("cache").display()
    );
    let p = dir.join("vllm.yaml");
    std::fs::write(&p, cfg).unwrap();
    p
}

fn run(cfg: &Path, out: &Path, more: &[&str]) -> std::process::Output {
    let mut a = vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    a.extend_from_slice(more);
    Command::new(env!("CARGO_BIN_EXE_georag")).args(&a).env("GEORAG_QUIET", "1").output().unwrap()
}

fn records(dir: &Path) -> Vec<Record> {
    Store::open_read_only(&dir.join("cache/responses")).unwrap().records().unwrap()
}

/// (text, status, finish_reason) of every sample, in file order.
fn samples(out: &Path) -> Vec<(Option<String>, String, Option<String>)> {
    let p = out.join("generations.parquet");
    let mut v = vec![];
    for b in pq::read(&p).unwrap() {
        let t = pq::column::<StringArray>(&p, &b, "text").unwrap();
        let s = pq::column::<StringArray>(&p, &b, "status").unwrap();
        let f = pq::column::<StringArray>(&p, &b, "finish_reason").unwrap();
        for i in 0..b.num_rows() {
            v.push(((!t.is_null(i)).then(|| t.value(i).to_string()), s.value(i).to_string(), (!f.is_null(i)).then(|| f.value(i).to_string())));
        }
    }
    v
}

#[test]
#[ignore = "needs a real vLLM server: make test-servers"]
fn vllm_answers_n_choices_with_model_id_usage_and_reproducible_statuses() {
    let Some(url) = url() else { return };
    let a = common::tmp("vllm-a");
    let cfg = config(&a, &url, "");
    let o = run(&cfg, &a.join("run"), &[]);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = records(&a);
    assert_eq!(recs.len(), QUERIES, "one request per query (n = {SAMPLES}), no retries");
    for r in &recs {
        assert_eq!(r.status, "ok", "{r:?}");
        assert_eq!(r.choices.len(), SAMPLES, "vLLM honours n");
        assert_eq!(r.response_model.as_deref(), Some("tiny-qwen2vl"));
        let u = r.usage.unwrap();
        assert!(u.prompt_tokens > 0 && u.completion_tokens > 0, "{u:?}");
        assert!(u.completion_tokens <= (SAMPLES * 12) as u64, "usage sums the choices, each at most max_tokens");
    }
    let rr: RunRecord = serde_json::from_str(&std::fs::read_to_string(a.join("run/run.json")).unwrap()).unwrap();
    assert_eq!(rr.mllm_methods[0].response_models, ["tiny-qwen2vl"]);
    let s1 = samples(&a.join("run"));
    assert_eq!(s1.len(), QUERIES * SAMPLES);
    for (text, status, finish) in &s1 {
        assert!(text.is_some(), "raw text kept");
        // The status is the parser's verdict on the raw text: re-parse to check.
        let p = georag::parse::ParserSpec::Lenient.build().parse(text.as_deref().unwrap(), finish.as_deref());
        assert_eq!(&p.status.to_string(), status);
    }
    // Same seed, fresh store: the same texts and statuses.
    let b = common::tmp("vllm-b");
    let o = run(&config(&b, &url, ""), &b.join("run"), &[]);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(samples(&b.join("run")), s1, "a fixed seed reproduces the samples");
}

#[test]
#[ignore = "needs a real vLLM server: make test-servers"]
fn too_many_images_is_a_final_failure_with_vllms_message() {
    let Some(url) = url() else { return };
    let d = common::tmp("vllm-400");
    // Two image parts in one message (vLLM is started with --limit-mm-per-prompt image=1).
    let img = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
    let extra = format!(
        "  extra_body: {{messages: [{{role: user, content: [{{type: image_url, image_url: {{url: '{img}'}}}}, {{type: image_url, image_url: {{url: '{img}'}}}}, {{type: text, text: where}}]}}]}}"
    );
    let o = run(&config(&d, &url, &extra), &d.join("run"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = records(&d);
    assert_eq!(recs.len(), QUERIES, "a 400 is not retried");
    for r in &recs {
        let e = r.error.as_ref().expect("failed");
        assert_eq!(e.http_status, Some(400));
        assert!(!e.retryable);
        assert!(e.message.to_lowercase().contains("image"), "vLLM's message: {}", e.message);
    }
    assert!(samples(&d.join("run")).iter().all(|(_, s, _)| s == "request_failed"));
}

#[test]
#[ignore = "needs a real vLLM server: make test-servers"]
fn kill_and_resume_against_vllm_sends_each_request_once() {
    let Some(url) = url() else { return };
    let d = common::tmp("vllm-kill");
    let cfg = config(&d, &url, "");
    let out = d.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("GEORAG_QUIET", "1")
        .spawn()
        .unwrap();
    let log = d.join("cache/responses/responses.jsonl");
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&log).map(|s| s.lines().count()).unwrap_or(0) < 2 {
        assert!(t.elapsed() < Duration::from_secs(300), "nothing logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let o = run(&cfg, &out, &[]);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = records(&d);
    let ok: Vec<&Record> = recs.iter().filter(|r| r.status == "ok").collect();
    assert_eq!(ok.len(), QUERIES, "every request answered exactly once across the kill");
    let mut keys: Vec<&String> = ok.iter().flat_map(|r| &r.keys).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), QUERIES * SAMPLES);
    assert_eq!(samples(&out).len(), QUERIES * SAMPLES);
}

/// `georag generate --export-batch` -> vLLM's own offline batch runner (`run_batch`, the
/// `vllm run-batch` of this build) -> `--import-batch`: the imported answers serve a `--replay`
/// run with no server.
#[test]
#[ignore = "needs the vLLM virtualenv: make test-servers"]
fn export_run_batch_import_then_replay() {
    let _ = url();
    let d = common::tmp("vllm-batch");
    // No server is used: the base URL points nowhere, and check_model is off.
    let cfg = config(&d, "http://127.0.0.1:9", "  check_model: false");
    let input = d.join("in.jsonl");
    let output = d.join("out.jsonl");
    let g = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").output().unwrap();
    let o = g(&["generate", cfg.to_str().unwrap(), "--export-batch", input.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&input).unwrap().lines().count(), QUERIES);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vllm/run_batch.sh");
    let o = Command::new(script).args([&input, &output]).output().unwrap();
    assert!(o.status.success(), "run_batch failed: {}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), QUERIES);
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200), "{lines:?}");
    let o = g(&["generate", cfg.to_str().unwrap(), "--import-batch", output.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("imported {QUERIES} result lines (0 matched")), "{}", String::from_utf8_lossy(&o.stdout));
    let o = run(&cfg, &d.join("run"), &["--replay"]);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", String::from_utf8_lossy(&o.stderr));
    let recs = records(&d);
    assert!(recs.iter().all(|r| r.source == "batch" && r.choices.len() == SAMPLES && r.response_model.as_deref() == Some("tiny-qwen2vl")));
    assert_eq!(samples(&d.join("run")).len(), QUERIES * SAMPLES);
}
