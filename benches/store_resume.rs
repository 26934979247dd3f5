//! Resume time of a large response store: writes N records (default 1 000 000, the size of
//! 26 k queries x 4 variants x 10 samples) through `Store::append`, then times `Store::open`
//! (the scan that a resumed `georag run` does) three times, each in a fresh process, and reads
//! back a sample.
//! Run: `cargo bench --bench store_resume -- [N]` (release build; writes to a temp directory).

use georag::generate::{Attempt, ChatRequest, Choice, Identity, Outcome, PromptIdentity, Sampling, Usage};
use georag::store::{Record, Store};
use std::sync::Arc;
use std::time::Instant;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// `store_resume --open DIR KEY`: open the store in a fresh process (so its peak RSS is the
/// open's alone) and read one sample back.
fn open_only(dir: &std::path::Path, key: &str) {
    let t = Instant::now();
    let s = Store::open(dir).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let got = s.sample(&georag::generate::RequestKey::parse(key).unwrap()).unwrap().unwrap();
    assert!(got.text.unwrap().contains("latitude"));
    println!("opened (scan + index of {} samples) in {open_s:.2} s in a fresh process; its peak RSS {} MB", s.len(), rss_kb() / 1024);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--open") {
        return open_only(std::path::Path::new(&args[i + 1]), &args[i + 2]);
    }
    let n: usize = std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("georag-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let id = Identity { backend: "openai_compatible".into(), model: "Qwen/Qwen2-VL-7B-Instruct".into(), revision: None };
    let t = Instant::now();
    let mut first = None;
    {
        let mut s = Store::open(&dir).unwrap();
        for i in 0..n {
            let prompt = Arc::new(PromptIdentity {
                identity: id.clone(),
                template_sha256: "0".repeat(64),
                system: None,
                text: format!("Where was this photo taken? Similar photos: (48.{i:06}, 2.3522) (51.5072, -0.1276) ... query {}", i / 40),
                image_id: Some(format!("{:064x}:original", i / 40)),
                sampling: Sampling { temperature: 1.2, seed: Some(0), ..Sampling::default() },
                response_format: None,
                extra_body: Default::default(),
            });
            let req = ChatRequest { prompt, image: None, first_sample: i % 10, n: 1, method: "g3".into(), variant: (i / 10) % 4, query_id: format!("{}.jpg", i / 40) };
            if i == n / 2 {
                first = Some(req.keys()[0]);
            }
            let a = Attempt {
                outcome: Outcome::Ok {
                    choices: vec![Choice { text: Some(format!("{{\"latitude\": 48.{i:04}, \"longitude\": 2.3522}}")), finish_reason: Some("stop".into()) }],
                    usage: Some(Usage { prompt_tokens: 900, completion_tokens: 18 }),
                    response_model: Some("Qwen/Qwen2-VL-7B-Instruct".into()),
                },
                server: Some("http://127.0.0.1:8000".into()),
                attempt: 1,
                latency_ms: 812.5,
                source: "live",
            };
            s.append(&Record::of(&req, &a)).unwrap();
        }
    }
    let write_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(dir.join(georag::store::LOG_FILE)).unwrap().len();
    println!("{n} records, {:.0} MB log: written in {write_s:.1} s (writer's peak RSS {} MB)", bytes as f64 / 1e6, rss_kb() / 1024);
    for _ in 0..3 {
        let st = std::process::Command::new(std::env::current_exe().unwrap()).args(["--open", dir.to_str().unwrap(), &first.unwrap().hex()]).status().unwrap();
        assert!(st.success());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
