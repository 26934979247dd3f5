use super::*;
use crate::generate::{Identity, PromptIdentity, Sampling};
use std::sync::Arc;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("georag-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub(crate) fn request(model: &str, text: &str, n: usize) -> ChatRequest {
    let prompt = PromptIdentity {
        identity: Identity { backend: "openai_compatible".into(), model: model.into(), revision: None },
        template_sha256: "t".into(),
        system: None,
        text: text.into(),
        image_id: Some("img".into()),
        sampling: Sampling::default(),
        response_format: None,
        extra_body: Default::default(),
    };
    ChatRequest { prompt: Arc::new(prompt), image: None, first_sample: 0, n, method: "m".into(), variant: 0, query_id: "q".into() }
}

fn ok(texts: &[&str]) -> Attempt {
    Attempt {
        outcome: Outcome::Ok {
            choices: texts.iter().map(|t| Choice { text: Some(t.to_string()), finish_reason: Some("stop".into()) }).collect(),
            usage: Some(Usage { prompt_tokens: 5, completion_tokens: 3 }),
            response_model: Some("served".into()),
        },
        server: None,
        attempt: 1,
        latency_ms: 1.0,
        source: "live",
    }
}

fn failed(status: u16) -> Attempt {
    Attempt {
        outcome: Outcome::Failed(Failure { kind: "http".into(), http_status: Some(status), message: "busy".into(), retryable: true, body: None }),
        server: None,
        attempt: 1,
        latency_ms: 1.0,
        source: "live",
    }
}

#[test]
fn answers_survive_reopen_and_errors_are_never_served() {
    let dir = tmp("reopen");
    let r = request("A", "where?", 3);
    let keys = r.keys();
    {
        let mut s = Store::open(&dir).unwrap();
        s.append(&Record::of(&r, &failed(503))).unwrap();
        assert!(s.get(&keys[0]).is_none(), "an error is not an answer");
        assert_eq!(s.last_error(&keys[0]).unwrap().unwrap().http_status, Some(503));
        // Two choices for three samples: the third stays unanswered.
        s.append(&Record::of(&r, &ok(&["1, 2", "3, 4"]))).unwrap();
        assert!(s.last_error(&keys[0]).unwrap().is_none());
    }
    let s = Store::open(&dir).unwrap();
    assert_eq!(s.opened.records, 2);
    assert_eq!(s.opened.error_records, 1);
    assert_eq!(s.sample(&keys[1]).unwrap().unwrap().text.as_deref(), Some("3, 4"));
    assert!(s.get(&keys[2]).is_none());
    assert_eq!(s.last_error(&keys[2]).unwrap().unwrap().message, "busy");
    // Another model, prompt or sampling never finds these answers.
    assert!(!s.contains(&request("B", "where?", 3).keys()[0]));
    assert!(!s.contains(&request("A", "where? ", 3).keys()[0]));
    let mut other = request("A", "where?", 3);
    Arc::make_mut(&mut other.prompt).sampling.temperature = 0.5;
    assert!(!s.contains(&other.keys()[0]));
    let mut img = request("A", "where?", 3);
    Arc::make_mut(&mut img.prompt).image_id = Some("img2".into());
    assert!(!s.contains(&img.keys()[0]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_last_line_is_cut_and_counted() {
    let dir = tmp("torn");
    let r = request("A", "x", 1);
    {
        let mut s = Store::open(&dir).unwrap();
        s.append(&Record::of(&r, &ok(&["1, 2"]))).unwrap();
    }
    let path = dir.join(LOG_FILE);
    let good = std::fs::metadata(&path).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"v":1,"time":1.0,"keys":["#).unwrap();
    drop(f);
    let mut s = Store::open(&dir).unwrap();
    assert_eq!(s.opened.records, 1);
    assert!(s.opened.torn_tail_bytes > 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good, "the torn bytes are cut before appending");
    let r2 = request("A", "y", 1);
    s.append(&Record::of(&r2, &ok(&["5, 6"]))).unwrap();
    drop(s);
    let s = Store::open(&dir).unwrap();
    assert_eq!(s.opened.records, 2);
    assert_eq!(s.opened.torn_tail_bytes, 0);
    assert_eq!(s.records().unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_writer_at_a_time() {
    let dir = tmp("lock");
    let _a = Store::open(&dir).unwrap();
    assert!(matches!(Store::open(&dir), Err(StoreError::Locked { .. })));
    assert!(Store::open_read_only(&dir).is_ok());
    drop(_a);
    assert!(Store::open(&dir).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_middle_record_is_an_error_naming_its_offset() {
    let dir = tmp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(LOG_FILE), "{\"keys\": [], \"status\": \"ok\"}\nnot json\n").unwrap();
    let e = Store::open(&dir).err().unwrap().to_string();
    assert!(e.contains("byte 29"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
