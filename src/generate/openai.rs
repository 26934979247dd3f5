//! The `openai_compatible` backend: a blocking HTTP client (`ureq`, rustls for HTTPS) on worker
//! threads speaking `POST {base}/v1/chat/completions`.
//!
//! Why blocking threads and not an async runtime: a run has at most a few hundred requests in
//! flight, each waiting seconds for a model; one OS thread per in-flight request costs little
//! at that scale, keeps the retry/backoff logic straight-line code, and avoids a tokio
//! dependency for the whole crate.
//!
//! Policy (tested in `tests/generate_client.rs` against an in-process test server):
//! - retried: connection errors, timeouts, malformed 200 responses, HTTP 408, 409, 429 and 5xx,
//!   with full-jitter exponential backoff (`backoff_base_s * 2^(attempt-1)`, capped at
//!   `backoff_max_s`) or the server's `Retry-After` seconds when given, at most `max_retries`
//!   times; every other 4xx is final and carries the server's message;
//! - several `base_urls` are served round robin; a retry goes to the next replica;
//! - in-flight requests are bounded by an AIMD limiter between `min_in_flight` and
//!   `max_in_flight`: a 429, 5xx or timeout multiplies the limit by 0.7 (at most once per
//!   second), each clean response adds `1/limit`;
//! - the API key is read from the environment variable `api_key_env` names and is sent only in
//!   the `Authorization` header; it is never logged, stored or printed.

use super::{Attempt, ChatRequest, Choice, Failure, Generator, Identity, ImageSpec, Outcome, Usage};
use crate::util::rng::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// `generator: {kind: openai_compatible, ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSpec {
    /// Server base URL (`http://127.0.0.1:8000`, with or without `/v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Several replicas of the same model, balanced round robin.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// The model name sent in requests (vLLM's `--served-model-name`).
    pub model: String,
    /// Bump when the model behind the same name changes (part of every response key).
    #[serde(default)]
    pub revision: Option<String>,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "d_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "d_min_in_flight")]
    pub min_in_flight: usize,
    /// Whole-request timeout.
    #[serde(default = "d_timeout")]
    pub timeout_s: f64,
    #[serde(default = "d_retries")]
    pub max_retries: u32,
    #[serde(default = "d_backoff_base")]
    pub backoff_base_s: f64,
    #[serde(default = "d_backoff_max")]
    pub backoff_max_s: f64,
    #[serde(default)]
    pub image: ImageSpec,
    /// Extra body fields passed through as they are (`top_k`, `repetition_penalty`, ...).
    #[serde(default)]
    pub extra_body: Map<String, Value>,
    /// Ask `GET /v1/models` before the first request and refuse a model the server does not
    /// serve.
    #[serde(default = "d_true")]
    pub check_model: bool,
    /// Prices for a cost estimate, per million tokens.
    #[serde(default)]
    pub prices: Option<Prices>,
}

/// Prices per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub prompt_per_million: f64,
    pub completion_per_million: f64,
}

fn d_max_in_flight() -> usize {
    64
}
fn d_min_in_flight() -> usize {
    1
}
fn d_timeout() -> f64 {
    300.0
}
fn d_retries() -> u32 {
    6
}
fn d_backoff_base() -> f64 {
    0.5
}
fn d_backoff_max() -> f64 {
    60.0
}
fn d_true() -> bool {
    true
}

impl OpenAiSpec {
    pub fn identity(&self) -> Identity {
        Identity { backend: "openai_compatible".into(), model: self.model.clone(), revision: self.revision.clone() }
    }
    /// Base URLs, normalised (no trailing `/` or `/v1`).
    pub fn urls(&self) -> Vec<String> {
        self.base_url.iter().chain(&self.base_urls).map(|u| normalise(u)).collect()
    }
}

fn normalise(u: &str) -> String {
    let u = u.trim().trim_end_matches('/');
    u.strip_suffix("/v1").unwrap_or(u).to_string()
}

/// Error setting up the client (before any request).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("generator: give `base_url` or `base_urls`")]
    NoUrl,
    #[error("generator: environment variable `{0}` (api_key_env) is not set")]
    NoKey(String),
    #[error("generator: {url}/v1/models does not list model `{model}`; served: {served} ({hint})")]
    UnknownModel { url: String, model: String, served: String, hint: String },
    #[error("generator: min_in_flight {min} must be between 1 and max_in_flight {max}")]
    InFlight { min: usize, max: usize },
}

/// The AIMD concurrency limiter.
pub struct Limiter {
    state: Mutex<LimState>,
    cv: Condvar,
    min: f64,
    max: f64,
}

struct LimState {
    limit: f64,
    in_flight: usize,
    last_cut: Option<Instant>,
    lowest: f64,
}

/// What a finished attempt says about the server's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Clean,
    Overload,
    Neutral,
}

impl Limiter {
    pub fn new(min: usize, max: usize) -> Limiter {
        Limiter {
            state: Mutex::new(LimState { limit: max as f64, in_flight: 0, last_cut: None, lowest: max as f64 }),
            cv: Condvar::new(),
            min: min as f64,
            max: max as f64,
        }
    }
    pub fn acquire(&self) {
        let mut s = self.state.lock().expect("limiter");
        while s.in_flight as f64 >= s.limit.floor().max(1.0) {
            s = self.cv.wait(s).expect("limiter");
        }
        s.in_flight += 1;
    }
    pub fn release(&self, signal: Signal) {
        let mut s = self.state.lock().expect("limiter");
        s.in_flight -= 1;
        match signal {
            Signal::Overload => {
                if s.last_cut.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    s.limit = (s.limit * 0.7).max(self.min);
                    s.lowest = s.lowest.min(s.limit);
                    s.last_cut = Some(Instant::now());
                }
            }
            Signal::Clean => s.limit = (s.limit + 1.0 / s.limit).min(self.max),
            Signal::Neutral => {}
        }
        drop(s);
        self.cv.notify_all();
    }
    /// (current limit, lowest limit reached).
    pub fn limits(&self) -> (f64, f64) {
        let s = self.state.lock().expect("limiter");
        (s.limit, s.lowest)
    }
}

/// The client.
pub struct OpenAiClient {
    spec: OpenAiSpec,
    identity: Identity,
    urls: Vec<String>,
    key: Option<String>,
    agent: ureq::Agent,
    next: AtomicUsize,
    limiter: Limiter,
    jitter: AtomicU64,
    checked: std::sync::OnceLock<Result<(), String>>,
}

impl OpenAiClient {
    pub fn new(spec: &OpenAiSpec) -> Result<OpenAiClient, ClientError> {
        let urls = spec.urls();
        if urls.is_empty() {
            return Err(ClientError::NoUrl);
        }
        if spec.min_in_flight == 0 || spec.min_in_flight > spec.max_in_flight {
            return Err(ClientError::InFlight { min: spec.min_in_flight, max: spec.max_in_flight });
        }
        let key = match &spec.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| ClientError::NoKey(var.clone()))?),
            None => None,
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs_f64(spec.timeout_s.max(0.001))))
            .max_idle_connections(spec.max_in_flight.max(1) * 2)
            .max_idle_connections_per_host(spec.max_in_flight.max(1))
            .user_agent(concat!("georag/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(OpenAiClient {
            identity: spec.identity(),
            urls,
            key,
            agent: ureq::Agent::new_with_config(config),
            next: AtomicUsize::new(0),
            limiter: Limiter::new(spec.min_in_flight, spec.max_in_flight),
            jitter: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            checked: std::sync::OnceLock::new(),
            spec: spec.clone(),
        })
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// `GET /v1/models` on the first replica: the served model ids.
    pub fn served_models(&self) -> Result<Vec<String>, String> {
        let url = format!("{}/v1/models", self.urls[0]);
        let mut req = self.agent.get(&url);
        if let Some(k) = &self.key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let mut resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(16 << 20).read_to_vec().map_err(|e| format!("GET {url}: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}: {}", error_message(&body).unwrap_or_default()));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))?;
        Ok(v["data"].as_array().map(|a| a.iter().filter_map(|m| m["id"].as_str().map(String::from)).collect()).unwrap_or_default())
    }

    /// Check (once) that the server serves the configured model. A server without
    /// `/v1/models` is accepted with a warning on stderr.
    pub fn check(&self) -> Result<(), ClientError> {
        if !self.spec.check_model {
            return Ok(());
        }
        let r = self.checked.get_or_init(|| match self.served_models() {
            Ok(ids) if ids.is_empty() || ids.contains(&self.spec.model) => Ok(()),
            Ok(ids) => Err(ids.join(", ")),
            Err(e) => {
                eprintln!("[georag] warning: cannot list the server's models ({e}); sending requests for `{}` anyway", self.spec.model);
                Ok(())
            }
        });
        r.clone().map_err(|served| {
            let ids: Vec<&str> = served.split(", ").collect();
            ClientError::UnknownModel { url: self.urls[0].clone(), model: self.spec.model.clone(), hint: crate::util::suggest::hint(&self.spec.model, &ids), served }
        })
    }

    fn backoff(&self, attempt: u32, retry_after: Option<f64>) -> Duration {
        if let Some(s) = retry_after {
            return Duration::from_secs_f64(s.clamp(0.0, self.spec.backoff_max_s.max(s.min(600.0))));
        }
        let cap = (self.spec.backoff_base_s * 2f64.powi(attempt.saturating_sub(1) as i32)).min(self.spec.backoff_max_s);
        let seed = self.jitter.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Duration::from_secs_f64(cap * Rng::new(seed).f64())
    }

    fn attempt_once(&self, url: &str, body: &[u8]) -> (Outcome, Option<f64>) {
        let mut req = self.agent.post(format!("{url}/v1/chat/completions")).header("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        match req.send(body) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse::<f64>().ok());
                match resp.body_mut().with_config().limit(64 << 20).read_to_vec() {
                    Ok(b) => (interpret(status, &b), retry_after),
                    Err(e) => (Outcome::Failed(transport_failure(&e)), None),
                }
            }
            Err(e) => (Outcome::Failed(transport_failure(&e)), None),
        }
    }
}

fn transport_failure(e: &ureq::Error) -> Failure {
    let kind = match e {
        ureq::Error::Timeout(_) => "timeout",
        _ => "connection",
    };
    Failure { kind: kind.into(), http_status: None, message: e.to_string(), retryable: true, body: None }
}

/// The chat completions request body for `req` (as sent live and written into batch files).
pub fn request_body(model: &str, req: &ChatRequest, extra_body: &Map<String, Value>) -> Value {
    let p = &req.prompt;
    let mut content = Vec::new();
    if let Some(img) = &req.image {
        content.push(json!({"type": "image_url", "image_url": {"url": img.data_url}}));
    }
    content.push(json!({"type": "text", "text": p.text}));
    let mut messages = Vec::new();
    if let Some(s) = &p.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": content}));
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("n".into(), json!(req.n));
    body.insert("temperature".into(), json!(p.sampling.temperature));
    if let Some(t) = p.sampling.top_p {
        body.insert("top_p".into(), json!(t));
    }
    body.insert("max_tokens".into(), json!(p.sampling.max_tokens));
    if let Some(s) = req.seed() {
        body.insert("seed".into(), json!(s));
    }
    if let Some(rf) = &p.response_format {
        body.insert("response_format".into(), rf.clone());
    }
    for (k, v) in extra_body {
        body.insert(k.clone(), v.clone());
    }
    Value::Object(body)
}

/// The server's error message from the error bodies seen in the wild: `{"error": {"message"}}`
/// (OpenAI, vLLM, llama.cpp), `{"object": "error", "message"}` (older vLLM), `{"error": "..."}`
/// (Ollama), `{"detail": "..."}` (FastAPI), or the first 300 bytes of the text.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let t = String::from_utf8_lossy(body);
            let t = t.trim();
            return (!t.is_empty()).then(|| t.chars().take(300).collect());
        }
    };
    let s = |v: &Value| v.as_str().map(String::from);
    s(&v["error"]["message"])
        .or_else(|| s(&v["message"]))
        .or_else(|| s(&v["error"]))
        .or_else(|| s(&v["detail"]))
        .or_else(|| v["detail"].as_array().map(|_| v["detail"].to_string()))
        .or_else(|| Some(v.to_string().chars().take(300).collect()))
}

fn body_excerpt(body: &[u8]) -> Option<String> {
    (!body.is_empty()).then(|| String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned())
}

/// Whether an HTTP status is worth retrying.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || (500..600).contains(&status)
}

/// A response (status and body) as an [`Outcome`]: used for live responses and for batch
/// results alike, so both are validated the same way.
pub fn interpret(status: u16, body: &[u8]) -> Outcome {
    if status != 200 {
        let message = error_message(body).unwrap_or_else(|| format!("HTTP {status} with an empty body"));
        return Outcome::Failed(Failure { kind: "http".into(), http_status: Some(status), message, retryable: retryable_status(status), body: body_excerpt(body) });
    }
    let invalid = |message: String| Outcome::Failed(Failure { kind: "invalid_response".into(), http_status: Some(200), message, retryable: true, body: body_excerpt(body) });
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return invalid(format!("response is not JSON: {e}")),
    };
    let Some(arr) = v["choices"].as_array() else {
        return invalid("response has no `choices` array".into());
    };
    let mut choices: Vec<(u64, Choice)> = Vec::with_capacity(arr.len());
    for (i, c) in arr.iter().enumerate() {
        let content = &c["message"]["content"];
        let text = match content {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            // Content as a list of parts (some servers): the text parts joined.
            Value::Array(parts) => Some(parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("")),
            other => return invalid(format!("choices[{i}].message.content is {other}")),
        };
        let idx = c["index"].as_u64().unwrap_or(i as u64);
        choices.push((idx, Choice { text, finish_reason: c["finish_reason"].as_str().map(String::from) }));
    }
    choices.sort_by_key(|(i, _)| *i);
    let usage = v["usage"].is_object().then(|| Usage {
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    });
    Outcome::Ok { choices: choices.into_iter().map(|(_, c)| c).collect(), usage, response_model: v["model"].as_str().map(String::from) }
}

impl Generator for OpenAiClient {
    fn identity(&self) -> &Identity {
        &self.identity
    }
    fn max_in_flight(&self) -> usize {
        self.spec.max_in_flight
    }
    fn extra_body(&self) -> &Map<String, Value> {
        &self.spec.extra_body
    }
    fn describe(&self) -> String {
        let image = match self.spec.image.send {
            super::ImageSend::Original => "images sent as stored".to_string(),
            super::ImageSend::Reencode => format!("images re-encoded as JPEG q{} with the longest side <= {} px", self.spec.image.quality, self.spec.image.max_side),
        };
        format!(
            "openai_compatible `{}` at {} (in flight {}..{}, timeout {} s, {} retries; {image})",
            self.spec.model,
            self.urls.join(", "),
            self.spec.min_in_flight,
            self.spec.max_in_flight,
            self.spec.timeout_s,
            self.spec.max_retries
        )
    }
    fn concurrency(&self) -> Option<(f64, f64)> {
        Some(self.limiter.limits())
    }
    fn cost_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        self.spec.prices.map(|p| (prompt_tokens as f64 * p.prompt_per_million + completion_tokens as f64 * p.completion_per_million) / 1e6)
    }
    fn send(&self, req: &ChatRequest, on_attempt: &mut dyn FnMut(Attempt)) {
        let body = serde_json::to_vec(&request_body(&self.spec.model, req, &self.spec.extra_body)).expect("request body");
        let mut replica = self.next.fetch_add(1, Ordering::Relaxed);
        for attempt in 1..=self.spec.max_retries + 1 {
            let url = &self.urls[replica % self.urls.len()];
            self.limiter.acquire();
            let t = Instant::now();
            let (outcome, retry_after) = self.attempt_once(url, &body);
            let signal = match &outcome {
                Outcome::Ok { .. } => Signal::Clean,
                Outcome::Failed(f) if f.kind == "timeout" || f.http_status.is_some_and(|s| s == 429 || s >= 500) => Signal::Overload,
                Outcome::Failed(_) => Signal::Neutral,
            };
            self.limiter.release(signal);
            let retry = match &outcome {
                Outcome::Failed(f) => f.retryable && attempt <= self.spec.max_retries,
                Outcome::Ok { .. } => false,
            };
            on_attempt(Attempt { outcome, server: Some(url.clone()), attempt, latency_ms: t.elapsed().as_secs_f64() * 1000.0, source: "live" });
            if !retry {
                return;
            }
            std::thread::sleep(self.backoff(attempt, retry_after));
            replica += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes_of_known_servers() {
        let vllm = br#"{"error": {"message": "At most 1 image(s) may be provided in one prompt.", "type": "BadRequestError", "param": null, "code": 400}}"#;
        assert_eq!(error_message(vllm).unwrap(), "At most 1 image(s) may be provided in one prompt.");
        let old = br#"{"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}"#;
        assert_eq!(error_message(old).unwrap(), "The model `x` does not exist.");
        assert_eq!(error_message(br#"{"error": "server busy, please try again.  maximum pending requests exceeded"}"#).unwrap(), "server busy, please try again.  maximum pending requests exceeded");
        assert_eq!(error_message(b"upstream connect error").unwrap(), "upstream connect error");
        match interpret(503, br#"{"error":"server busy"}"#) {
            Outcome::Failed(f) => assert!(f.retryable && f.http_status == Some(503) && f.message == "server busy"),
            o => panic!("{o:?}"),
        }
        match interpret(400, vllm) {
            Outcome::Failed(f) => assert!(!f.retryable && f.body.unwrap().contains("BadRequestError")),
            o => panic!("{o:?}"),
        }
        for (s, r) in [(408, true), (409, true), (429, true), (500, true), (502, true), (400, false), (401, false), (404, false), (422, false)] {
            assert_eq!(retryable_status(s), r, "{s}");
        }
    }

    #[test]
    fn choices_in_index_order_with_usage_and_model() {
        let b = br#"{"model":"m-served","choices":[{"index":1,"message":{"content":"b"},"finish_reason":"length"},{"index":0,"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":7}}"#;
        match interpret(200, b) {
            Outcome::Ok { choices, usage, response_model } => {
                assert_eq!(choices.iter().map(|c| c.text.clone().unwrap()).collect::<Vec<_>>(), ["a", "b"]);
                assert_eq!(choices[1].finish_reason.as_deref(), Some("length"));
                assert_eq!(usage.unwrap().completion_tokens, 7);
                assert_eq!(response_model.as_deref(), Some("m-served"));
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(interpret(200, b"{not json"), Outcome::Failed(f) if f.kind == "invalid_response" && f.retryable));
        assert!(matches!(interpret(200, br#"{"object":"x"}"#), Outcome::Failed(f) if f.message.contains("choices")));
    }

    #[test]
    fn limiter_shrinks_on_overload_and_grows_back() {
        let l = Limiter::new(2, 10);
        l.acquire();
        l.release(Signal::Overload);
        let (lim, low) = l.limits();
        assert!((lim - 7.0).abs() < 1e-9 && (low - 7.0).abs() < 1e-9, "{lim} {low}");
        // A second overload within a second does not cut again.
        l.acquire();
        l.release(Signal::Overload);
        assert!((l.limits().0 - 7.0).abs() < 1e-9);
        for _ in 0..100 {
            l.acquire();
            l.release(Signal::Clean);
        }
        assert_eq!(l.limits().0, 10.0);
    }

    #[test]
    fn urls_are_normalised() {
        let s: OpenAiSpec = serde_yaml::from_str("model: m\nbase_url: http://h:1/v1/\nbase_urls: ['http://h:2']").unwrap();
        assert_eq!(s.urls(), ["http://h:1", "http://h:2"]);
    }
}
