//! The `openai_compatible` client's retry, error and balancing policy, against the in-process
//! TEST DOUBLE server of `tests/common/llm_double.rs` (no model, no network beyond loopback).

mod common;

use common::llm_double::{Double, Fault};
use georag::generate::{Attempt, ChatRequest, Generator, Identity, OpenAiClient, OpenAiSpec, Outcome, PromptIdentity, Sampling};
use std::sync::Arc;
use std::time::Duration;

fn spec(urls: &[String]) -> OpenAiSpec {
    serde_yaml::from_str(&format!(
        "model: m\nbase_urls: {urls:?}\nmax_retries: 3\nbackoff_base_s: 0.01\nbackoff_max_s: 0.05\ntimeout_s: 1.0\nmax_in_flight: 8\n"
    ))
    .unwrap()
}

fn request(text: &str, n: usize) -> ChatRequest {
    let prompt = PromptIdentity {
        identity: Identity { backend: "openai_compatible".into(), model: "m".into(), revision: None },
        template_sha256: "t".into(),
        system: None,
        text: text.into(),
        image_id: None,
        sampling: Sampling { seed: Some(7), ..Sampling::default() },
        response_format: None,
        extra_body: Default::default(),
    };
    ChatRequest { prompt: Arc::new(prompt), image: None, first_sample: 0, n, method: "m".into(), variant: 0, query_id: "q".into() }
}

fn send(c: &OpenAiClient, r: &ChatRequest) -> Vec<Attempt> {
    let mut v = vec![];
    c.send(r, &mut |a| v.push(a));
    v
}

fn status(a: &Attempt) -> Option<u16> {
    match &a.outcome {
        Outcome::Failed(f) => f.http_status,
        Outcome::Ok { .. } => Some(200),
    }
}

#[test]
fn transient_failures_are_retried_until_an_answer() {
    // 429, 500, a malformed 200, a reset connection, then an answer.
    let d = Double::start("m", |_, repeat| match repeat {
        0 => Fault::Status { code: 429, retry_after: None, message: "slow down".into() },
        1 => Fault::Status { code: 500, retry_after: None, message: "oops".into() },
        2 => Fault::Malformed,
        _ => Fault::None,
    });
    let mut s = spec(&[d.url()]);
    s.max_retries = 5;
    let c = OpenAiClient::new(&s).unwrap();
    let a = send(&c, &request("near (48.85, 2.35)?", 2));
    assert_eq!(a.iter().map(status).collect::<Vec<_>>(), [Some(429), Some(500), Some(200), Some(200)]);
    assert!(matches!(&a[2].outcome, Outcome::Failed(f) if f.kind == "invalid_response"));
    match &a[3].outcome {
        Outcome::Ok { choices, usage, response_model } => {
            assert_eq!(choices.len(), 2);
            assert_eq!(choices[0].text.as_deref(), Some("48.8500, 2.3500"));
            assert!(usage.unwrap().completion_tokens > 0);
            assert_eq!(response_model.as_deref(), Some("m (test double)"));
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(a.iter().map(|x| x.attempt).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(d.requests(), 4);
}

#[test]
fn other_client_errors_are_final_with_the_servers_message() {
    let d = Double::start("m", |_, _| Fault::Status { code: 400, retry_after: None, message: "At most 1 image(s) may be provided in one prompt.".into() });
    let c = OpenAiClient::new(&spec(&[d.url()])).unwrap();
    let a = send(&c, &request("x", 1));
    assert_eq!(a.len(), 1, "a 400 is never retried");
    match &a[0].outcome {
        Outcome::Failed(f) => {
            assert!(!f.retryable);
            assert_eq!(f.message, "At most 1 image(s) may be provided in one prompt.");
            assert!(f.body.as_deref().unwrap().contains("TestDoubleError"), "the raw body is kept");
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn retries_stop_after_max_retries() {
    let d = Double::start("m", |_, _| Fault::Status { code: 503, retry_after: None, message: "queue full".into() });
    let c = OpenAiClient::new(&spec(&[d.url()])).unwrap();
    let a = send(&c, &request("x", 1));
    assert_eq!(a.len(), 4, "1 try + max_retries 3");
    assert!(a.iter().all(|x| status(x) == Some(503)));
    // 503s shrink the in-flight limit.
    assert!(c.limiter().limits().1 < 8.0);
}

#[test]
fn timeouts_and_resets_are_connection_failures_and_retried() {
    let d = Double::start("m", |_, repeat| match repeat {
        0 => Fault::Hang(Duration::from_millis(1500)),
        1 => Fault::Reset,
        _ => Fault::None,
    });
    let c = OpenAiClient::new(&spec(&[d.url()])).unwrap();
    let a = send(&c, &request("x", 1));
    let kinds: Vec<String> = a.iter().map(|x| match &x.outcome {
        Outcome::Failed(f) => f.kind.clone(),
        Outcome::Ok { .. } => "ok".into(),
    }).collect();
    assert_eq!(kinds, ["timeout", "connection", "ok"]);
}

#[test]
fn retry_after_is_honoured() {
    let d = Double::start("m", |_, repeat| if repeat == 0 { Fault::Status { code: 429, retry_after: Some(1), message: "wait".into() } } else { Fault::None });
    let c = OpenAiClient::new(&spec(&[d.url()])).unwrap();
    let a = send(&c, &request("x", 1));
    assert_eq!(a.len(), 2);
    let s = d.seen();
    let gap = s[1].at.duration_since(s[0].at);
    assert!(gap >= Duration::from_millis(950), "second try {gap:?} after a Retry-After: 1");
}

#[test]
fn replicas_share_the_load_and_a_retry_moves_on() {
    let a = Double::start("m", |_, _| Fault::None);
    let b = Double::start("m", |_, _| Fault::Status { code: 502, retry_after: None, message: "bad gateway".into() });
    let c = OpenAiClient::new(&spec(&[a.url(), b.url()])).unwrap();
    for i in 0..6 {
        let at = send(&c, &request(&format!("q{i}"), 1));
        assert!(matches!(at.last().unwrap().outcome, Outcome::Ok { .. }), "every request ends on the healthy replica");
    }
    assert!(b.requests() >= 3, "round robin reached the second replica {} times", b.requests());
    assert_eq!(a.requests(), 6);
}

#[test]
fn the_model_check_refuses_an_unserved_model_with_a_hint() {
    let d = Double::start("Qwen2-VL-7B-Instruct", |_, _| Fault::None);
    let mut s = spec(&[d.url()]);
    s.model = "Qwen2-VL-7B-Instruc".into();
    let e = OpenAiClient::new(&s).unwrap().check().unwrap_err().to_string();
    assert!(e.contains("Qwen2-VL-7B-Instruct") && e.contains("Qwen2-VL-7B-Instruc"), "{e}");
    s.model = "Qwen2-VL-7B-Instruct".into();
    assert!(OpenAiClient::new(&s).unwrap().check().is_ok());
}

#[test]
fn the_api_key_comes_from_the_named_variable_only() {
    let d = Double::start("m", |_, _| Fault::None);
    let mut s = spec(&[d.url()]);
    s.api_key_env = Some("GEORAG_TEST_CLIENT_KEY_UNSET".into());
    assert!(OpenAiClient::new(&s).err().unwrap().to_string().contains("GEORAG_TEST_CLIENT_KEY_UNSET"));
    // SAFETY: set once, in this test only, before the client reads it.
    unsafe { std::env::set_var("GEORAG_TEST_CLIENT_KEY", "sk-client-test") };
    s.api_key_env = Some("GEORAG_TEST_CLIENT_KEY".into());
    let c = OpenAiClient::new(&s).unwrap();
    send(&c, &request("x", 1));
    assert_eq!(d.seen()[0].authorization.as_deref(), Some("Bearer sk-client-test"));
    assert!(!c.describe().contains("sk-client-test"));
}

#[test]
fn the_request_body_carries_sampling_seed_and_extra_fields() {
    let d = Double::start("m", |_, _| Fault::None);
    let mut s = spec(&[d.url()]);
    s.extra_body.insert("top_k".into(), serde_json::json!(20));
    let c = OpenAiClient::new(&s).unwrap();
    let mut r = request("x", 3);
    r.first_sample = 4;
    send(&c, &r);
    let b = &d.seen()[0].body;
    assert_eq!(b["n"], 3);
    assert_eq!(b["seed"], 11, "seed + first sample index");
    assert_eq!(b["top_k"], 20);
    assert_eq!(b["model"], "m");
    assert_eq!(b["messages"][0]["content"][0]["type"], "text");
}

/// HTTPS goes through rustls: against a plain-HTTP listener an `https://` URL fails in the TLS
/// handshake (so a TLS stack is compiled in and used), as a retryable connection failure.
#[test]
fn https_urls_are_spoken_with_tls() {
    let d = Double::start("m", |_, _| Fault::None);
    let mut s = spec(&[d.url().replace("http://", "https://")]);
    s.max_retries = 0;
    let c = OpenAiClient::new(&s).unwrap();
    let a = send(&c, &request("x", 1));
    match &a[0].outcome {
        Outcome::Failed(f) => {
            let m = f.message.to_lowercase();
            assert!(f.kind == "connection" && (m.contains("tls") || m.contains("rustls") || m.contains("corrupt message")), "{f:?}");
        }
        o => panic!("{o:?}"),
    }
}
