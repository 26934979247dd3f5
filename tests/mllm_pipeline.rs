//! The MLLM stage end to end through the real `georag` binary: a small synthetic world, a RAG
//! method, and the in-process TEST DOUBLE server (`tests/common/llm_double.rs`) injecting
//! faults. Checks terminal statuses and counts, kill -9 and resume, response-key isolation,
//! replay, batch export/import in the `vllm run-batch` format, and that the API key is written
//! nowhere.

mod common;

use common::llm_double::{Double, Fault, prompt_text};
use georag::metrics::MetricsFile;
use georag::pipeline::RunRecord;
use georag::util::pq;
use arrow::array::StringArray;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const QUERIES: usize = 40;

fn config(dir: &Path, url: &str, extra_generator: &str, samples: usize) -> PathBuf {
    let cfg = format!(
        r#"
name: mllm-it
cache_dir: {cache}
database: {{kind: synthetic, split: database, n: 600, shard_rows: 256}}
queries: {{kind: synthetic, split: queries, n: {QUERIES}, shard_rows: 16}}
encoder: {{kind: im2gps}}
index: {{factory: "Flat", nprobe: 1, train_sample: 600}}
methods:
  - kind: nearest
  - kind: mllm
    name: rag
    variants:
      - {{prompt: street_rag, neighbours: {{similar: 4, dissimilar: 2}}, samples: {samples}}}
    sampling: {{temperature: 0.7, max_tokens: 32, seed: 1}}
    parser: lenient
    selector: {{kind: medoid}}
generator:
  kind: openai_compatible
  base_url: {url}
  model: tiny-vlm
  max_in_flight: 4
  max_retries: 4
  backoff_base_s: 0.01
  backoff_max_s: 0.05
  timeout_s: 2
{extra_generator}
"#,
        cache = dir.join("cache").display()
    );
    let path = dir.join("mllm.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn georag(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_georag")).args(args).env("GEORAG_QUIET", "1").output().unwrap()
}

fn run(cfg: &Path, out: &Path, more: &[&str]) -> std::process::Output {
    let mut a = vec!["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
    a.extend_from_slice(more);
    georag(&a)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn statuses(path: &Path, method: &str) -> Vec<String> {
    let mut out = vec![];
    for b in pq::read(path).unwrap() {
        let m = pq::column::<StringArray>(path, &b, "method").unwrap();
        let s = pq::column::<StringArray>(path, &b, "status").unwrap();
        for i in 0..b.num_rows() {
            if m.value(i) == method {
                out.push(s.value(i).to_string());
            }
        }
    }
    out
}

fn run_record(out: &Path) -> RunRecord {
    serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap()
}

/// Prompts are identified by their text; some get faults, one query a final 400, some a refusal.
fn faulty(body: &serde_json::Value, repeat: usize) -> Fault {
    let t = prompt_text(body);
    let h = t.bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    match (h % 10, repeat) {
        (0, 0) => Fault::Status { code: 429, retry_after: Some(0), message: "rate limited".into() },
        (1, 0) => Fault::Status { code: 503, retry_after: None, message: "busy".into() },
        (2, 0) => Fault::Malformed,
        (3, 0) => Fault::Reset,
        (4, _) => Fault::Fewer(1),
        (5, _) => Fault::Text("I'm sorry, but I can't determine where this photo was taken.".into()),
        (6, _) if h % 20 == 6 => Fault::Status { code: 400, retry_after: None, message: "This model's maximum context length is 16 tokens.".into() },
        _ => Fault::None,
    }
}

#[test]
fn every_query_ends_with_a_terminal_status_and_the_counts_add_up() {
    let dir = common::tmp("mllm-status");
    let d = Double::start("tiny-vlm", faulty);
    let cfg = config(&dir, &d.url(), "", 3);
    let out = dir.join("run");
    let o = run(&cfg, &out, &[]);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", stderr(&o));
    let gens = statuses(&out.join("generations.parquet"), "rag");
    assert_eq!(gens.len(), QUERIES * 3, "one row per sample");
    let preds = statuses(&out.join("predictions.parquet"), "rag");
    assert_eq!(preds.len(), QUERIES);
    let rr = run_record(&out);
    let g = rr.generation.as_ref().unwrap();
    assert_eq!(g.samples_needed, QUERIES * 3);
    assert!(g.retries > 0, "the faults were retried: {g:?}");
    assert!(g.top_ups > 0, "short answers were topped up: {g:?}");
    let m = &rr.mllm_methods[0];
    assert_eq!(m.samples_by_status.values().sum::<usize>(), QUERIES * 3);
    assert!(m.samples_by_status.get("refused").copied().unwrap_or(0) > 0, "{:?}", m.samples_by_status);
    assert_eq!(m.response_models, ["tiny-vlm (test double)"]);
    // The 400 is a final failure: its samples are request_failed with the server's message.
    let n400 = m.samples_by_status.get("request_failed").copied().unwrap_or(0);
    assert!(n400 > 0, "{:?}", m.samples_by_status);
    assert_eq!(g.requests_failed * 3, n400, "each failed request leaves its 3 samples failed");
    let metrics = MetricsFile::read(&out.join("metrics.json")).unwrap();
    let row = metrics.rows.iter().find(|r| r.method == "rag").unwrap();
    assert_eq!(row.n_expected, QUERIES);
    assert_eq!(row.n_answered + row.n_failed, QUERIES);
    let failed: usize = row.failures_by_status.values().sum();
    assert_eq!(failed, row.n_failed);
    // A second run reuses every answer: no request at all.
    let before = d.requests();
    let o = run(&cfg, &out, &[]);
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", stderr(&o));
    let after = d.requests();
    // Only the 400s are asked again (errors are never served as answers).
    assert_eq!(after - before, g.requests_failed, "only failed requests are re-sent");
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_run_and_resends_nothing_answered() {
    let slow = |_: &serde_json::Value, _: usize| Fault::Slow(Duration::from_millis(40));
    // Uninterrupted reference.
    let ref_dir = common::tmp("mllm-ref");
    let d0 = Double::start("tiny-vlm", slow);
    let cfg0 = config(&ref_dir, &d0.url(), "", 2);
    let o = run(&cfg0, &ref_dir.join("run"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let uninterrupted = d0.requests();
    assert_eq!(uninterrupted, QUERIES);

    let dir = common::tmp("mllm-kill");
    let d = Double::start("tiny-vlm", slow);
    let cfg = config(&dir, &d.url(), "", 2);
    let out = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("GEORAG_QUIET", "1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.join("cache/responses/responses.jsonl");
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&log).map(|s| s.lines().count()).unwrap_or(0) < 10 {
        assert!(t.elapsed() < Duration::from_secs(120), "no responses logged");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("\"status\":\"ok\"")).count();
    assert!(logged < QUERIES, "killed before the end ({logged} logged)");
    let before = d.requests();
    let o = run(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resent = d.requests() - before;
    assert_eq!(resent, uninterrupted - logged, "exactly the requests without a logged answer are sent again");
    for f in ["predictions.parquet", "metrics.json"] {
        let a = std::fs::read(out.join(f)).unwrap();
        let b = std::fs::read(ref_dir.join("run").join(f)).unwrap();
        if f == "metrics.json" {
            assert_eq!(a, b, "{f} differs from the uninterrupted run");
        } else {
            let (pa, pb) = (georag::pipeline::read_predictions(&out.join(f)).unwrap(), georag::pipeline::read_predictions(&ref_dir.join("run").join(f)).unwrap());
            assert_eq!(pa.len(), pb.len());
            for (x, y) in pa.iter().zip(&pb) {
                assert_eq!(x.records, y.records, "{f}: method {}", x.method);
            }
        }
    }
    assert_eq!(statuses(&out.join("generations.parquet"), "rag").len(), QUERIES * 2, "no duplicated samples");
}

#[test]
fn answers_are_keyed_by_model_prompt_image_and_sampling() {
    let dir = common::tmp("mllm-keys");
    let d = Double::start("tiny-vlm", |_, _| Fault::None);
    let cfg = config(&dir, &d.url(), "  check_model: false", 1);
    let out = dir.join("run");
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", stderr(&o));
    ok(run(&cfg, &out, &[]));
    assert_eq!(d.requests(), QUERIES);
    // Another model name: nothing reused.
    ok(run(&cfg, &out, &["--set", "generator.model=other-vlm"]));
    assert_eq!(d.requests(), 2 * QUERIES);
    // Another temperature, another seed: nothing reused.
    ok(run(&cfg, &out, &["--set", "methods.1.sampling.temperature=0.1"]));
    assert_eq!(d.requests(), 3 * QUERIES);
    // Another prompt (one neighbour fewer changes the text).
    ok(run(&cfg, &out, &["--set", "methods.1.variants.0.neighbours.similar=3"]));
    assert_eq!(d.requests(), 4 * QUERIES);
    // Re-encoded images are other bytes: nothing reused.
    ok(run(&cfg, &out, &["--set", "generator.image={send: reencode, max_side: 32}"]));
    assert_eq!(d.requests(), 5 * QUERIES);
    // The first settings again, and a new selector and parser: everything reused.
    ok(run(&cfg, &out, &["--set", "methods.1.selector={kind: first}", "--set", "methods.1.parser=first_two"]));
    assert_eq!(d.requests(), 5 * QUERIES);
    // The revision is part of the identity.
    ok(run(&cfg, &out, &["--set", "generator.revision=weights-v2"]));
    assert_eq!(d.requests(), 6 * QUERIES);
}

#[test]
fn replay_reproduces_a_live_run_and_fails_on_a_miss_naming_it() {
    let dir = common::tmp("mllm-replay");
    let d = Double::start("tiny-vlm", |_, _| Fault::None);
    let cfg = config(&dir, &d.url(), "", 2);
    let live = dir.join("live");
    let o = run(&cfg, &live, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    d.server.stop();
    let replay = dir.join("replay");
    let o = run(&cfg, &replay, &["--replay"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(live.join("metrics.json")).unwrap(), std::fs::read(replay.join("metrics.json")).unwrap());
    let o = run(&cfg, &dir.join("miss"), &["--replay", "--set", "methods.1.variants.0.samples=3"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("replay: no recorded answer") && e.contains("method `rag`") && e.contains("sample 2") && e.contains(&format!("{QUERIES} samples are missing")), "{e}");
}

#[test]
fn batch_export_and_import_round_trip_in_the_vllm_run_batch_format() {
    let dir = common::tmp("mllm-batch");
    let d = Double::start("tiny-vlm", |_, _| Fault::None);
    let cfg = config(&dir, &d.url(), "", 2);
    let input = dir.join("batch_in.jsonl");
    let o = georag(&["generate", cfg.to_str().unwrap(), "--export-batch", input.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(d.requests(), 0, "export sends nothing");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&input).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), QUERIES);
    for l in &lines {
        assert_eq!(l["method"], "POST");
        assert_eq!(l["url"], "/v1/chat/completions");
        assert_eq!(l["body"]["model"], "tiny-vlm");
        assert_eq!(l["body"]["n"], 2);
        assert!(l["body"]["messages"][0]["content"][0]["image_url"]["url"].as_str().unwrap().starts_with("data:image/jpeg;base64,"));
    }
    // Play `vllm run-batch`: answer each body through the double, write results out of order,
    // one line failed.
    let agent = ureq::Agent::new_with_defaults();
    let mut results = vec![];
    for (i, l) in lines.iter().enumerate().rev() {
        if i == 3 {
            results.push(serde_json::json!({"id": format!("b{i}"), "custom_id": l["custom_id"], "response": null, "error": {"code": "server_error", "message": "worker died"}}));
            continue;
        }
        let mut resp = agent.post(format!("{}/v1/chat/completions", d.url())).header("Content-Type", "application/json").send(&serde_json::to_vec(&l["body"]).unwrap()[..]).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        results.push(serde_json::json!({"id": format!("b{i}"), "custom_id": l["custom_id"], "response": {"status_code": 200, "request_id": format!("r{i}"), "body": body}, "error": null}));
    }
    results.push(serde_json::json!({"id": "x", "custom_id": "0000-1", "response": {"status_code": 200, "body": {}}, "error": null}));
    let output = dir.join("batch_out.jsonl");
    std::fs::write(&output, results.iter().map(|v| v.to_string() + "\n").collect::<String>()).unwrap();
    let sent = d.requests();
    let o = georag(&["generate", cfg.to_str().unwrap(), "--import-batch", output.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(so.contains(&format!("imported {} result lines (1 matched no pending request)", QUERIES)), "{so}");
    assert_eq!(d.requests(), sent, "import sends nothing");
    // The exported-but-failed request is the only one still missing.
    let o = run(&cfg, &dir.join("after"), &["--replay"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 samples are missing"), "{}", stderr(&o));
    let o = run(&cfg, &dir.join("after"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(d.requests(), sent + 1, "only the failed line is sent live");
    let rows = statuses(&dir.join("after/generations.parquet"), "rag");
    assert_eq!(rows.len(), QUERIES * 2);
}

#[test]
fn the_api_key_is_written_nowhere() {
    let dir = common::tmp("mllm-key");
    let d = Double::start("tiny-vlm", |_, _| Fault::None);
    let cfg = config(&dir, &d.url(), "  api_key_env: GEORAG_IT_SECRET", 1);
    let out = dir.join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .env("GEORAG_QUIET", "1")
        .env("GEORAG_IT_SECRET", "sk-very-secret-4242")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.seen().iter().all(|s| s.authorization.as_deref() == Some("Bearer sk-very-secret-4242")));
    let mut files = 0;
    let mut stack = vec![dir.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files += 1;
                let b = std::fs::read(&p).unwrap();
                assert!(!b.windows(10).any(|w| w == b"very-secre"), "{} contains the key", p.display());
            }
        }
    }
    assert!(files > 10);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("very-secret") && !stderr(&o).contains("very-secret"));
}

/// A template with `place_fields` shows the database's place text (the synthetic world stores
/// `city` and `continent` in each row's metadata) after every neighbour's coordinate.
#[test]
fn place_text_of_the_database_reaches_the_prompt() {
    let dir = common::tmp("mllm-place");
    let d = Double::start("tiny-vlm", |_, _| Fault::None);
    let tpl = dir.join("places.yaml");
    std::fs::write(&tpl, "include: street_rag\nname: street_rag_places\nplace_fields: [city, continent]\n").unwrap();
    let cfg = config(&dir, &d.url(), "", 1);
    let o = run(&cfg, &dir.join("run"), &["--set", &format!("methods.1.variants.0.prompt={}", tpl.display())]);
    assert!(o.status.success(), "{}", stderr(&o));
    let texts: Vec<String> = d.seen().iter().map(|s| prompt_text(&s.body)).collect();
    assert_eq!(texts.len(), QUERIES);
    let cities: Vec<&str> = georag::ingest::cities::CITIES.iter().map(|c| c.0).collect();
    for t in &texts {
        // Six neighbours (4 similar + 2 dissimilar), each `(lat, lon; City, Continent)`.
        assert_eq!(t.matches("; ").count(), 6, "{t}");
        assert!(cities.iter().any(|c| t.contains(&format!("; {c}, "))), "{t}");
    }
}
