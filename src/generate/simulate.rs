//! A SIMULATED multimodal LLM server: a labelled, seeded stand-in for an OpenAI-compatible
//! chat-completions server (vLLM-like), so that the generation stage, its retries, caching and
//! scoring can be exercised end to end without a model. It is not a model and its answers are not
//! predictions: it never looks at the image (only at a digest of its base64 text) and it answers
//! by perturbing the coordinates written in the prompt. Its model id says so
//! (`georag-simulator-v1 (simulated)` by default), in `/v1/models` and in the `model` field of
//! every response; every response also carries an `X-Georag-Simulator: simulated` header and the
//! `system_fingerprint` `georag-simulator (simulated)`.
//!
//! # Endpoints
//! - `GET /v1/models`: the one served model id.
//! - `POST /v1/chat/completions`: validated like vLLM (400 for a body that is not JSON, a missing
//!   `model`, missing or empty `messages`, `n` < 1, `max_tokens` < 1 or over the context, more
//!   than one image, an image that is not a base64 `data:image/...` URL, `stream: true`; 404 "The
//!   model `X` does not exist." for another model). Answers `n` choices (at most
//!   [`SimOptions::max_choices`], like servers that ignore `n`), `usage` with tokens approximated
//!   as characters / 4 (rounded up; [`IMAGE_TOKENS`] per image), `completion_tokens` summed over
//!   choices; an answer longer than `max_tokens` is cut and has `finish_reason: "length"`.
//! - `GET /health`: 200. Anything else: 404 with an OpenAI-style error body
//!   `{"error": {"message", "type", "param", "code"}}` (`code` = HTTP status).
//!
//! # Faults
//! With [`SimOptions::fail_429`], `fail_500`, `fail_503`, `fail_reset` > 0 a chat-completion
//! request fails before it is validated or queued: 429 / 500 / 503 with an OpenAI-style error
//! body (and `Retry-After` on 429 and 503 when [`SimOptions::retry_after_s`] is set), or a
//! connection closed without an answer (reset). The draw is seeded by (simulator seed, sha256 of
//! the request body, how many times this same body was received before), so each attempt is an
//! independent draw and a retried request eventually succeeds, reproducibly.
//!
//! # Answers
//! [`Simulator::answer`] is a pure function of (simulator seed, prompt text, image digest,
//! request `seed`, choice index): the same request gets the same choices whatever the
//! concurrency, a different simulator seed or request seed different ones. (`temperature` and
//! other sampling parameters are accepted and ignored.) The error model:
//!
//! The prompt's coordinate pairs are read in order ([`extract_pairs`]: `(48.85, 2.35)`,
//! `[48.85, 2.35]`, `'48.85, 2.35'`, `48.85, 2.35` on its own line, `"latitude": 48.85,
//! "longitude": 2.35`; pairs out of range are skipped). Prompts list the similar neighbours
//! first. With at least one pair:
//! - 70 %: one of the first 3 pairs, rank-weighted 0.5 / 0.3 / 0.2 (renormalised when fewer),
//!   moved by a log-uniform distance in [1, 300] km in a uniform random direction;
//! - 10 %: a random later pair (4th onwards), moved the same way; with 3 pairs or fewer this
//!   share falls to the continent-level guess;
//! - 8 %: a continent-level guess: a uniformly chosen city of [`CITIES`] on the continent of the
//!   city nearest to the first pair, moved by a uniform distance in [0, 800] km;
//! - 6 %: a refusal ("I'm sorry, but I can't determine the location of this photo.");
//! - 6 %: prose without numbers ("This looks like a European city, perhaps in the south.").
//!
//! Without pairs (zero-shot): 75 % a city of [`CITIES`] drawn by its photo-density weight, moved
//! by a uniform distance in [0, 500] km; 12.5 % a refusal; 12.5 % prose.
//!
//! Format: when the prompt contains both "latitude" and "{" or the request has a
//! `response_format` other than `text`, a coordinate answer is `{"latitude": X, "longitude": Y}`
//! (80 %), in a ```` ```json ```` fence (10 %) or inside a sentence (10 %); otherwise `X, Y` (80 %) or
//! `The photo was probably taken near X, Y.` (20 %). Coordinates have 4 decimals. Refusals and
//! prose are plain text in both modes.

use crate::ingest::cities::CITIES;
use crate::record::LatLon;
use crate::util::fingerprint::sha256_hex;
use crate::util::httpd::{Handler, Reply, Request, Response, Server};
use crate::util::rng::Rng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The default served model id; it says it is a simulator.
pub const DEFAULT_MODEL: &str = "georag-simulator-v1 (simulated)";
/// The simulated context length (tokens).
pub const MAX_MODEL_LEN: u64 = 32_768;
/// Prompt tokens counted for one image.
pub const IMAGE_TOKENS: u64 = 64;
/// Largest `n` accepted.
pub const MAX_N: u64 = 128;
/// Connections [`serve`] handles at once.
pub const SERVE_MAX_CONNECTIONS: usize = 512;
/// The refusal answer.
pub const REFUSAL: &str = "I'm sorry, but I can't determine the location of this photo.";
/// Prose answers without numbers.
pub const PROSE: &[&str] = &[
    "This looks like a European city, perhaps in the south.",
    "The vegetation and the architecture suggest a warm, coastal region, but I cannot be more precise.",
    "It looks like a large city in North America or East Asia; I cannot tell which.",
];
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Served model id (default [`DEFAULT_MODEL`]).
    pub model: String,
    /// Seed of every answer and fault draw (default 0).
    pub seed: u64,
    /// Fixed latency added per chat completion, after acquiring a slot (default 0).
    pub latency_ms: u64,
    /// Chat completions processed at once; more wait (default 64).
    pub slots: usize,
    /// Per-request fault probabilities (default 0): 429, 500, 503, connection reset.
    pub fail_429: f64,
    pub fail_500: f64,
    pub fail_503: f64,
    pub fail_reset: f64,
    /// `Retry-After` seconds on 429 and 503 answers (default none).
    pub retry_after_s: Option<u64>,
    /// Return at most this many choices, whatever `n` asks (llama.cpp-like servers return 1).
    pub max_choices: Option<usize>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            model: DEFAULT_MODEL.to_string(),
            seed: 0,
            latency_ms: 0,
            slots: 64,
            fail_429: 0.0,
            fail_500: 0.0,
            fail_503: 0.0,
            fail_reset: 0.0,
            retry_after_s: None,
            max_choices: None,
        }
    }
}

/// Counters since the simulator was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// HTTP requests received, any path.
    pub requests: u64,
    /// Chat completions answered with 200.
    pub chat_completions: u64,
    /// Injected faults (429, 500, 503, resets).
    pub errors_injected: u64,
    /// Choices returned in 200 answers.
    pub choices_returned: u64,
}

/// The simulated server's state (see the module docs). Serve it with [`serve`], or put
/// [`Simulator::handler`] on an [`httpd::Server`](crate::util::httpd::Server).
pub struct Simulator {
    opts: SimOptions,
    busy: Mutex<usize>,
    freed: Condvar,
    /// Times each request body (by its digest's first 8 bytes) was received, for fault draws.
    attempts: Mutex<HashMap<u64, u64>>,
    created: u64,
    requests: AtomicU64,
    chat_completions: AtomicU64,
    errors_injected: AtomicU64,
    choices_returned: AtomicU64,
}

/// Start a simulator on `addr` (use `127.0.0.1:0`).
pub fn serve(addr: &str, opts: SimOptions) -> std::io::Result<(Server, Arc<Simulator>)> {
    let sim = Arc::new(Simulator::new(opts));
    let server = Server::start(addr, SERVE_MAX_CONNECTIONS, sim.clone().handler())?;
    Ok((server, sim))
}

/// What one choice says.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Coord(LatLon),
    Refuse,
    Prose(usize),
}

/// A chat-completion request, validated.
struct ChatRequest {
    prompt: String,
    image_sha: String,
    images: u64,
    n: u64,
    max_tokens: Option<u64>,
    seed: Option<u64>,
    json_mode: bool,
}

/// An OpenAI-style error response.
fn error(status: u16, message: &str, param: Option<&str>) -> Response {
    let kind = match status {
        400 => "BadRequestError",
        404 => "NotFoundError",
        429 => "RateLimitError",
        500 => "InternalServerError",
        503 => "ServiceUnavailableError",
        _ => "Error",
    };
    Response::json(status, &json!({"error": {"message": message, "type": kind, "param": param, "code": status}}))
}

fn bad(message: impl AsRef<str>, param: Option<&str>) -> Response {
    error(400, message.as_ref(), param)
}

impl Simulator {
    pub fn new(opts: SimOptions) -> Simulator {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Simulator {
            opts,
            busy: Mutex::new(0),
            freed: Condvar::new(),
            attempts: Mutex::new(HashMap::new()),
            created,
            requests: AtomicU64::new(0),
            chat_completions: AtomicU64::new(0),
            errors_injected: AtomicU64::new(0),
            choices_returned: AtomicU64::new(0),
        }
    }

    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// The handler for httpd::Server: GET /v1/models, POST /v1/chat/completions; anything else
    /// 404 with an OpenAI-style error body.
    pub fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |req: &Request| self.handle(req))
    }

    /// Requests answered so far (counts), for tests and load checks.
    pub fn stats(&self) -> SimStats {
        SimStats {
            requests: self.requests.load(Ordering::Relaxed),
            chat_completions: self.chat_completions.load(Ordering::Relaxed),
            errors_injected: self.errors_injected.load(Ordering::Relaxed),
            choices_returned: self.choices_returned.load(Ordering::Relaxed),
        }
    }

    /// The answer text for one choice, as a pure function of (seed, prompt text, image bytes
    /// digest, request seed, choice index); JSON format when the prompt asks for it (contains
    /// "latitude" and "{").
    pub fn answer(&self, prompt: &str, image_sha: &str, req_seed: Option<u64>, choice: usize) -> String {
        self.answer_for(prompt, image_sha, req_seed, choice, false)
    }

    /// [`Simulator::answer`], with JSON format forced when `response_format` is set (the
    /// request's `response_format` asked for JSON).
    pub fn answer_for(
        &self,
        prompt: &str,
        image_sha: &str,
        req_seed: Option<u64>,
        choice: usize,
        response_format: bool,
    ) -> String {
        let mut rng = Rng::new(answer_key(self.opts.seed, prompt, image_sha, req_seed, choice));
        let outcome = draw_outcome(&mut rng, &extract_pairs(prompt));
        let json_mode = response_format || (prompt.contains("latitude") && prompt.contains('{'));
        render(&mut rng, outcome, json_mode)
    }

    fn handle(&self, req: &Request) -> Reply {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.path_only().trim_end_matches('/');
        let resp = match (req.method.as_str(), path) {
            ("GET", "/v1/models") => Response::json(200, &self.models()),
            ("GET", "/health") => Response::empty(200),
            ("POST", "/v1/chat/completions") => match self.chat(req) {
                Ok(r) => r,
                Err(reply) => return reply,
            },
            _ => error(404, &format!("Not Found: {} {} (georag simulator)", req.method, req.path), None),
        };
        Reply::Respond(resp.with_header("X-Georag-Simulator", "simulated"))
    }

    fn models(&self) -> Value {
        json!({"object": "list", "data": [{
            "id": self.opts.model, "object": "model", "created": self.created,
            "owned_by": "georag-simulator (simulated)", "root": self.opts.model, "parent": null,
            "max_model_len": MAX_MODEL_LEN,
        }]})
    }

    /// A fault for this attempt at this body, if one is drawn.
    fn fault(&self, body_key: u64) -> Option<Reply> {
        let o = &self.opts;
        let total = o.fail_429 + o.fail_500 + o.fail_503 + o.fail_reset;
        if total <= 0.0 {
            return None;
        }
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let e = a.entry(body_key).or_insert(0);
            *e += 1;
            *e - 1
        };
        let u = Rng::derive(o.seed ^ body_key, attempt ^ 0x6661_756c_7473).f64();
        let retry = |r: Response| match o.retry_after_s {
            Some(s) => r.with_header("Retry-After", &s.to_string()),
            None => r,
        };
        let reply = if u < o.fail_429 {
            Reply::Respond(retry(error(429, "Too many requests (simulated rate limit)", None)))
        } else if u < o.fail_429 + o.fail_500 {
            Reply::Respond(error(500, "Internal server error (simulated fault)", None))
        } else if u < o.fail_429 + o.fail_500 + o.fail_503 {
            Reply::Respond(retry(error(503, "Service unavailable: the server is overloaded (simulated)", None)))
        } else if u < total {
            Reply::Drop
        } else {
            return None;
        };
        self.errors_injected.fetch_add(1, Ordering::Relaxed);
        Some(match reply {
            Reply::Respond(r) => Reply::Respond(r.with_header("X-Georag-Simulator", "simulated")),
            other => other,
        })
    }

    fn chat(&self, req: &Request) -> Result<Response, Reply> {
        let digest = sha256_hex(&req.body);
        let body_key = u64::from_str_radix(&digest[..16], 16).unwrap_or(0);
        if let Some(f) = self.fault(body_key) {
            return Err(f);
        }
        let parsed = match self.parse(&req.body) {
            Ok(p) => p,
            Err(r) => return Ok(r),
        };
        let _slot = self.acquire();
        if self.opts.latency_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.opts.latency_ms));
        }
        let prompt_tokens = approx_tokens(&parsed.prompt) + IMAGE_TOKENS * parsed.images;
        let room = MAX_MODEL_LEN.saturating_sub(prompt_tokens);
        let limit = parsed.max_tokens.unwrap_or(room).min(room).max(1);
        let choices_n = match self.opts.max_choices {
            Some(m) => parsed.n.min(m.max(1) as u64),
            None => parsed.n,
        };
        let mut completion_tokens = 0;
        let mut choices = Vec::new();
        for i in 0..choices_n as usize {
            let mut text = self.answer_for(&parsed.prompt, &parsed.image_sha, parsed.seed, i, parsed.json_mode);
            let mut finish = "stop";
            let mut tokens = approx_tokens(&text);
            if tokens > limit {
                text = text.chars().take((limit * 4) as usize).collect();
                tokens = limit;
                finish = "length";
            }
            completion_tokens += tokens;
            choices.push(json!({
                "index": i, "message": {"role": "assistant", "content": text},
                "logprobs": null, "finish_reason": finish,
            }));
        }
        let k = self.chat_completions.fetch_add(1, Ordering::Relaxed);
        self.choices_returned.fetch_add(choices_n, Ordering::Relaxed);
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(Response::json(
            200,
            &json!({
                "id": format!("chatcmpl-sim-{}-{k}", &digest[..16]),
                "object": "chat.completion",
                "created": created,
                "model": self.opts.model,
                "system_fingerprint": "georag-simulator (simulated)",
                "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            }),
        ))
    }

    /// Validate a chat-completion body like vLLM does.
    fn parse(&self, body: &[u8]) -> Result<ChatRequest, Response> {
        let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON in request body: {e}"), None))?;
        let Some(obj) = v.as_object() else { return Err(bad("The request body must be a JSON object", None)) };
        let model = match obj.get("model") {
            None | Some(Value::Null) => return Err(bad("Field required: model", Some("model"))),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(bad("Input should be a valid string: model", Some("model"))),
        };
        if model != self.opts.model {
            return Err(error(404, &format!("The model `{model}` does not exist."), Some("model")));
        }
        let messages = match obj.get("messages") {
            None | Some(Value::Null) => return Err(bad("Field required: messages", Some("messages"))),
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(bad("messages must contain at least one message", Some("messages")));
            }
            Some(Value::Array(a)) => a,
            Some(_) => return Err(bad("Input should be a valid list: messages", Some("messages"))),
        };
        let int = |key: &str| -> Result<Option<i128>, Response> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => {
                    if let Some(i) = n.as_i64() {
                        Ok(Some(i as i128))
                    } else if let Some(u) = n.as_u64() {
                        Ok(Some(u as i128))
                    } else {
                        Err(bad(format!("Input should be a valid integer: {key}"), Some(key)))
                    }
                }
                Some(_) => Err(bad(format!("Input should be a valid integer: {key}"), Some(key))),
            }
        };
        let n = int("n")?.unwrap_or(1);
        if n < 1 {
            return Err(bad(format!("n must be at least 1, got {n}."), Some("n")));
        }
        if n > MAX_N as i128 {
            return Err(bad(format!("n must be at most {MAX_N}, got {n} (simulator limit)."), Some("n")));
        }
        let mut max_tokens = int("max_tokens")?;
        let mut max_param = "max_tokens";
        if max_tokens.is_none() {
            max_tokens = int("max_completion_tokens")?;
            max_param = "max_completion_tokens";
        }
        if let Some(m) = max_tokens {
            if m < 1 {
                return Err(bad(format!("{max_param} must be at least 1, got {m}."), Some(max_param)));
            }
            if m > MAX_MODEL_LEN as i128 {
                return Err(bad(
                    format!(
                        "'max_tokens' or 'max_completion_tokens' is too large: {m}. This model's maximum context length is {MAX_MODEL_LEN} tokens."
                    ),
                    Some(max_param),
                ));
            }
        }
        let seed = int("seed")?.map(|s| s as u64);
        if let Some(t) = obj.get("temperature")
            && !t.is_null()
            && t.as_f64().is_none_or(|t| t < 0.0)
        {
            return Err(bad("temperature must be a non-negative number", Some("temperature")));
        }
        if obj.get("stream").and_then(Value::as_bool) == Some(true) {
            return Err(bad("stream=true is not supported by the georag simulator", Some("stream")));
        }
        let json_mode = match obj.get("response_format") {
            None | Some(Value::Null) => false,
            Some(Value::Object(rf)) => match rf.get("type").and_then(Value::as_str) {
                Some("text") => false,
                Some("json_object" | "json_schema" | "structural_tag") => true,
                _ => return Err(bad("response_format.type must be text, json_object or json_schema", Some("response_format"))),
            },
            Some(_) => return Err(bad("response_format must be an object", Some("response_format"))),
        };
        let mut texts: Vec<&str> = Vec::new();
        let mut image_sha = String::new();
        let mut images = 0u64;
        for (i, m) in messages.iter().enumerate() {
            let Some(m) = m.as_object() else { return Err(bad(format!("messages[{i}] must be an object"), Some("messages"))) };
            match m.get("role").and_then(Value::as_str) {
                Some("system" | "user" | "assistant" | "developer" | "tool") => {}
                Some(r) => return Err(bad(format!("messages[{i}]: unknown role `{r}`"), Some("messages"))),
                None => return Err(bad(format!("messages[{i}]: field required: role"), Some("messages"))),
            }
            match m.get("content") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => texts.push(s),
                Some(Value::Array(parts)) => {
                    for (j, p) in parts.iter().enumerate() {
                        let at = format!("messages[{i}].content[{j}]");
                        match p.get("type").and_then(Value::as_str) {
                            Some("text") => match p.get("text").and_then(Value::as_str) {
                                Some(t) => texts.push(t),
                                None => return Err(bad(format!("{at}: field required: text"), Some("messages"))),
                            },
                            Some("image_url") => {
                                let url = match p.get("image_url") {
                                    Some(Value::String(s)) => s.as_str(),
                                    Some(Value::Object(o)) => match o.get("url").and_then(Value::as_str) {
                                        Some(u) => u,
                                        None => return Err(bad(format!("{at}: field required: image_url.url"), Some("messages"))),
                                    },
                                    _ => return Err(bad(format!("{at}: field required: image_url"), Some("messages"))),
                                };
                                images += 1;
                                if images > 1 {
                                    return Err(bad("At most 1 image(s) may be provided in one prompt.", Some("messages")));
                                }
                                image_sha = data_url_digest(url).map_err(|e| bad(format!("{at}: {e}"), Some("messages")))?;
                            }
                            Some(t) => {
                                return Err(bad(
                                    format!("{at}: content part type `{t}` is not supported by the georag simulator"),
                                    Some("messages"),
                                ));
                            }
                            None => return Err(bad(format!("{at}: field required: type"), Some("messages"))),
                        }
                    }
                }
                Some(_) => return Err(bad(format!("messages[{i}].content must be a string or a list"), Some("messages"))),
            }
        }
        let prompt = texts.join("\n");
        let prompt_tokens = approx_tokens(&prompt) + IMAGE_TOKENS * images;
        if prompt_tokens >= MAX_MODEL_LEN {
            return Err(bad(
                format!(
                    "This model's maximum context length is {MAX_MODEL_LEN} tokens. However, your request has {prompt_tokens} input tokens."
                ),
                Some("messages"),
            ));
        }
        Ok(ChatRequest { prompt, image_sha, images, n: n as u64, max_tokens: max_tokens.map(|m| m as u64), seed, json_mode })
    }

    fn acquire(&self) -> SlotGuard<'_> {
        let slots = self.opts.slots.max(1);
        let mut busy = self.busy.lock().unwrap();
        while *busy >= slots {
            busy = self.freed.wait(busy).unwrap();
        }
        *busy += 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Simulator);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap() -= 1;
        self.0.freed.notify_one();
    }
}

/// sha256 of a `data:image/...;base64,PAYLOAD` URL's payload text (not decoded, but checked to be
/// base64).
fn data_url_digest(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err("only base64 data URLs are accepted by the georag simulator (no remote image URLs)".into());
    };
    let Some((mime, payload)) = rest.split_once(',') else { return Err("malformed data URL".into()) };
    if !mime.ends_with(";base64") {
        return Err("the data URL is not base64-encoded".into());
    }
    if !mime.starts_with("image/") {
        return Err(format!("the data URL is not an image (`{}`)", mime.trim_end_matches(";base64")));
    }
    let trimmed = payload.trim_end_matches('=');
    if trimmed.is_empty()
        || payload.len() - trimmed.len() > 2
        || !trimmed.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'-' || b == b'_')
    {
        return Err("Failed to load image: the data URL payload is not valid base64".into());
    }
    Ok(sha256_hex(payload.as_bytes()))
}

/// Tokens approximated as characters / 4, rounded up.
fn approx_tokens(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4)
}

fn answer_key(seed: u64, prompt: &str, image_sha: &str, req_seed: Option<u64>, choice: usize) -> u64 {
    let mut b = Vec::with_capacity(prompt.len() + 128);
    let mut field = |v: &[u8]| {
        b.extend_from_slice(&(v.len() as u64).to_le_bytes());
        b.extend_from_slice(v);
    };
    field(b"georag-simulator-answer-v1");
    field(&seed.to_le_bytes());
    field(prompt.as_bytes());
    field(image_sha.as_bytes());
    match req_seed {
        Some(s) => field(&[&[1u8][..], &s.to_le_bytes()].concat()),
        None => field(&[0u8]),
    }
    field(&(choice as u64).to_le_bytes());
    u64::from_str_radix(&sha256_hex(&b)[..16], 16).expect("hex digest")
}

fn draw_outcome(rng: &mut Rng, pairs: &[LatLon]) -> Outcome {
    let u = rng.f64();
    if pairs.is_empty() {
        return if u < 0.75 {
            let total: f64 = CITIES.iter().map(|c| c.4).sum();
            let mut x = rng.range(0.0, total);
            let mut pick = CITIES[CITIES.len() - 1];
            for c in CITIES {
                if x < c.4 {
                    pick = *c;
                    break;
                }
                x -= c.4;
            }
            let d = rng.range(0.0, 500.0);
            Outcome::Coord(perturb(rng, LatLon { lat: pick.1, lon: pick.2 }, d))
        } else if u < 0.875 {
            Outcome::Refuse
        } else {
            Outcome::Prose(rng.below(PROSE.len()))
        };
    }
    let log_uniform = |rng: &mut Rng| (rng.range(0.0, 300f64.ln())).exp();
    if u < 0.70 {
        const W: [f64; 3] = [0.5, 0.3, 0.2];
        let k = pairs.len().min(3);
        let total: f64 = W[..k].iter().sum();
        let mut x = rng.range(0.0, total);
        let mut idx = k - 1;
        for (i, w) in W[..k].iter().enumerate() {
            if x < *w {
                idx = i;
                break;
            }
            x -= w;
        }
        let d = log_uniform(rng);
        return Outcome::Coord(perturb(rng, pairs[idx], d));
    }
    if u < 0.80 && pairs.len() > 3 {
        let idx = 3 + rng.below(pairs.len() - 3);
        let d = log_uniform(rng);
        return Outcome::Coord(perturb(rng, pairs[idx], d));
    }
    if u < 0.88 {
        let near = CITIES
            .iter()
            .min_by(|a, b| {
                let da = distance_km(pairs[0], LatLon { lat: a.1, lon: a.2 });
                let db = distance_km(pairs[0], LatLon { lat: b.1, lon: b.2 });
                da.total_cmp(&db)
            })
            .expect("CITIES is not empty");
        let same: Vec<_> = CITIES.iter().filter(|c| c.3 == near.3).collect();
        let c = same[rng.below(same.len())];
        let d = rng.range(0.0, 800.0);
        return Outcome::Coord(perturb(rng, LatLon { lat: c.1, lon: c.2 }, d));
    }
    if u < 0.94 { Outcome::Refuse } else { Outcome::Prose(rng.below(PROSE.len())) }
}

fn render(rng: &mut Rng, outcome: Outcome, json_mode: bool) -> String {
    let p = match outcome {
        Outcome::Refuse => return REFUSAL.to_string(),
        Outcome::Prose(i) => return PROSE[i].to_string(),
        Outcome::Coord(p) => p,
    };
    let (lat, lon) = (fmt4(p.lat), fmt4(p.lon));
    let v = rng.f64();
    if json_mode {
        let obj = format!("{{\"latitude\": {lat}, \"longitude\": {lon}}}");
        if v < 0.8 {
            obj
        } else if v < 0.9 {
            format!("```json\n{obj}\n```")
        } else {
            format!("Based on the visual clues, my estimate is {obj}.")
        }
    } else if v < 0.8 {
        format!("{lat}, {lon}")
    } else {
        format!("The photo was probably taken near {lat}, {lon}.")
    }
}

/// 4 decimals, never `-0.0000`.
fn fmt4(x: f64) -> String {
    let r = (x * 1e4).round() / 1e4;
    format!("{:.4}", if r == 0.0 { 0.0 } else { r })
}

/// The point `d_km` from `p` in a uniformly random direction (great circle).
fn perturb(rng: &mut Rng, p: LatLon, d_km: f64) -> LatLon {
    let bearing = rng.range(0.0, 2.0 * std::f64::consts::PI);
    let delta = d_km / EARTH_RADIUS_KM;
    let (phi1, lam1) = (p.lat.to_radians(), p.lon.to_radians());
    let phi2 = (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * bearing.cos()).clamp(-1.0, 1.0).asin();
    let lam2 = lam1 + (bearing.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * phi2.sin());
    let mut lon = lam2.to_degrees();
    lon = (lon + 180.0).rem_euclid(360.0) - 180.0;
    LatLon { lat: phi2.to_degrees().clamp(-90.0, 90.0), lon }
}

/// Great-circle (haversine) distance.
fn distance_km(a: LatLon, b: LatLon) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The coordinate pairs written in `text`, in order: two numbers separated by a comma (with
/// optional spaces, or `, "longitude":` / `, lon:` style labels), |lat| <= 90, |lon| <= 180.
/// Covers `(48.85, 2.35)`, `[48.85, 2.35]`, `'48.85, 2.35'`, `48.85, 2.35` lines and
/// `{"latitude": 48.85, "longitude": 2.35}`. Numbers glued to letters (`Qwen2`, `3rd`) are not
/// numbers.
pub fn extract_pairs(text: &str) -> Vec<LatLon> {
    let nums = numbers(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < nums.len() {
        let (_, end_a, a) = nums[i];
        let (start_b, _, b) = nums[i + 1];
        if pair_separator(&text[end_a..start_b]) && a.abs() <= 90.0 && b.abs() <= 180.0 {
            out.push(LatLon { lat: a, lon: b });
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

fn pair_separator(between: &str) -> bool {
    let t = between.trim();
    let Some(rest) = t.strip_prefix(',') else { return false };
    let rest = rest.trim().trim_matches(['"', '\'']);
    if rest.is_empty() {
        return true;
    }
    let Some(label) = rest.strip_suffix([':', '=']) else { return false };
    let label = label.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    matches!(label.as_str(), "lon" | "lng" | "long" | "longitude")
}

/// (start, end, value) of each decimal number in `s`.
fn numbers(s: &str) -> Vec<(usize, usize, f64)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let start = i;
        let signed = (b[i] == b'-' || b[i] == b'+') && i + 1 < b.len() && b[i + 1].is_ascii_digit();
        if !(b[i].is_ascii_digit() || signed) {
            i += 1;
            continue;
        }
        let glued_before = start > 0 && (word(b[start - 1]) || b[start - 1] == b'.');
        let mut j = if signed { i + 1 } else { i };
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        let glued_after = j < b.len() && (word(b[j]) || (b[j] == b'.' && j + 1 < b.len() && b[j + 1].is_ascii_digit()));
        if glued_before || glued_after {
            // Skip the whole glued run (`Qwen2.5-VL`, `3rd`, `1.2.3`).
            while j < b.len() && (word(b[j]) || b[j] == b'.') {
                j += 1;
            }
            i = j;
            continue;
        }
        if let Ok(v) = s[start..j].parse::<f64>() {
            out.push((start, j, v));
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::httpd::testclient::{Client, Resp};
    use std::time::Instant;

    const IMG: &str = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8U";

    /// Five similar then five dissimilar neighbours, far apart from each other.
    const SIMILAR: [(f64, f64); 5] = [(48.8566, 2.3522), (40.7128, -74.006), (35.6762, 139.6503), (-33.8688, 151.2093), (-22.9068, -43.1729)];
    const DISSIMILAR: [(f64, f64); 5] = [(64.1466, -21.9426), (-1.2921, 36.8219), (19.4326, -99.1332), (55.7558, 37.6173), (1.3521, 103.8198)];

    fn rag_prompt() -> String {
        let t = |c: &[(f64, f64)]| c.iter().map(|(a, b)| format!("({a:.4}, {b:.4})")).collect::<Vec<_>>().join(" ");
        format!(
            "Where was this photo taken?\nThese 5 coordinates (latitude, longitude) belong to photos that look similar to it: {}\nThese 5 coordinates belong to photos that look different from it: {}\nReply with the coordinates only, as two decimal numbers: latitude, longitude.",
            t(&SIMILAR),
            t(&DISSIMILAR)
        )
    }

    const ZERO_SHOT: &str = "Where was this photo taken? Estimate the location as precisely as you can from what the photo shows.\nReply with the coordinates only, as two decimal numbers: latitude, longitude.";

    fn request(prompt: &str, n: u64, seed: Option<u64>) -> Value {
        let mut v = json!({
            "model": DEFAULT_MODEL, "n": n, "temperature": 0.7, "max_tokens": 256,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": IMG}},
            ]}],
        });
        if let Some(s) = seed {
            v["seed"] = json!(s);
        }
        v
    }

    fn contents(r: &Resp) -> Vec<String> {
        r.json()["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].as_str().unwrap().to_string()).collect()
    }

    /// Parse a coordinate answer in any of the simulator's formats.
    fn parse_answer(s: &str) -> Option<LatLon> {
        let p = extract_pairs(s);
        assert!(p.len() <= 1, "{s}");
        p.first().copied()
    }

    fn assert_error_shape(r: &Resp, status: u16) -> String {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert!(e.as_object().unwrap().contains_key("param"), "{v}");
        assert_eq!(e["code"], status, "{v}");
        e["message"].as_str().unwrap().to_string()
    }

    fn start(opts: SimOptions) -> (Server, Arc<Simulator>) {
        serve("127.0.0.1:0", opts).unwrap()
    }

    #[test]
    fn models_lists_the_simulated_model() {
        let (s, sim) = start(SimOptions::default());
        let mut c = Client::connect(s.addr());
        let r = c.request("GET", "/v1/models", &[], b"").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-georag-simulator"), Some("simulated"));
        let v = r.json();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["id"], "georag-simulator-v1 (simulated)");
        assert!(v["data"][0]["id"].as_str().unwrap().contains("(simulated)"));
        assert_eq!(c.request("GET", "/health", &[], b"").unwrap().status, 200);
        assert_eq!(sim.stats().requests, 2);
    }

    #[test]
    fn chat_completion_with_n_choices() {
        let (s, sim) = start(SimOptions::default());
        let mut c = Client::connect(s.addr());
        let r = c.post_json("/v1/chat/completions", &request(&rag_prompt(), 3, Some(7))).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], DEFAULT_MODEL);
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        let ch = v["choices"].as_array().unwrap();
        assert_eq!(ch.len(), 3);
        let mut completion = 0;
        for (i, c) in ch.iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(c["message"]["role"], "assistant");
            assert_eq!(c["finish_reason"], "stop");
            let text = c["message"]["content"].as_str().unwrap();
            assert_eq!(text, sim.answer(&rag_prompt(), &sha256_hex(IMG.split_once(',').unwrap().1.as_bytes()), Some(7), i));
            completion += approx_tokens(text);
        }
        let u = &v["usage"];
        assert_eq!(u["completion_tokens"], completion);
        assert_eq!(u["prompt_tokens"], approx_tokens(&rag_prompt()) + IMAGE_TOKENS);
        assert_eq!(u["total_tokens"].as_u64().unwrap(), u["prompt_tokens"].as_u64().unwrap() + completion);
        assert_eq!(sim.stats(), SimStats { requests: 1, chat_completions: 1, errors_injected: 0, choices_returned: 3 });
    }

    #[test]
    fn max_choices_caps_n() {
        let (s, sim) = start(SimOptions { max_choices: Some(1), ..SimOptions::default() });
        let mut c = Client::connect(s.addr());
        let r = c.post_json("/v1/chat/completions", &request(&rag_prompt(), 5, None)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["choices"].as_array().unwrap().len(), 1);
        assert_eq!(sim.stats().choices_returned, 1);
    }

    #[test]
    fn same_request_same_answers_other_seed_other_answers() {
        let (s, _) = start(SimOptions::default());
        let mut c = Client::connect(s.addr());
        let req = request(&rag_prompt(), 8, Some(1));
        let a = contents(&c.post_json("/v1/chat/completions", &req).unwrap());
        let b = contents(&c.post_json("/v1/chat/completions", &req).unwrap());
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() >= 4, "choices differ from each other: {a:?}");
        // Another request seed.
        let other = contents(&c.post_json("/v1/chat/completions", &request(&rag_prompt(), 8, Some(2))).unwrap());
        assert_ne!(a, other);
        // Another simulator seed.
        let (s2, _) = start(SimOptions { seed: 99, ..SimOptions::default() });
        let mut c2 = Client::connect(s2.addr());
        let other = contents(&c2.post_json("/v1/chat/completions", &req).unwrap());
        assert_ne!(a, other);
        // A different image.
        let mut req_img = req.clone();
        req_img["messages"][0]["content"][1]["image_url"]["url"] = json!("data:image/png;base64,iVBORw0KGgo=");
        assert_ne!(a, contents(&c.post_json("/v1/chat/completions", &req_img).unwrap()));
    }

    #[test]
    fn answers_do_not_depend_on_concurrency() {
        let (s, _) = start(SimOptions { slots: 4, ..SimOptions::default() });
        let addr = s.addr();
        let req = request(&rag_prompt(), 4, Some(3));
        let expected = contents(&Client::connect(addr).post_json("/v1/chat/completions", &req).unwrap());
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let req = req.clone();
                std::thread::spawn(move || contents(&Client::connect(addr).post_json("/v1/chat/completions", &req).unwrap()))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), expected);
        }
    }

    #[test]
    fn invalid_requests_get_vllm_like_errors() {
        let (s, sim) = start(SimOptions::default());
        let mut c = Client::connect(s.addr());
        let post = |c: &mut Client, body: &[u8]| c.request("POST", "/v1/chat/completions", &[], body).unwrap();
        assert_error_shape(&post(&mut c, b"{not json"), 400);
        assert_error_shape(&post(&mut c, b"[1, 2]"), 400);
        let base = request("hello", 1, None);
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = base.clone();
            f(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let m = assert_error_shape(&post(&mut c, &with(&|v| v.as_object_mut().unwrap().remove("model").map(|_| ()).unwrap())), 400);
        assert!(m.contains("model"), "{m}");
        let r = post(&mut c, &with(&|v| v["model"] = json!("gpt-4o")));
        assert_eq!(assert_error_shape(&r, 404), "The model `gpt-4o` does not exist.");
        assert_error_shape(&post(&mut c, &with(&|v| v.as_object_mut().unwrap().remove("messages").map(|_| ()).unwrap())), 400);
        assert_error_shape(&post(&mut c, &with(&|v| v["messages"] = json!([]))), 400);
        assert_error_shape(&post(&mut c, &with(&|v| v["n"] = json!(0))), 400);
        assert_error_shape(&post(&mut c, &with(&|v| v["n"] = json!(-1))), 400);
        assert_error_shape(&post(&mut c, &with(&|v| v["n"] = json!(1.5))), 400);
        assert_error_shape(&post(&mut c, &with(&|v| v["max_tokens"] = json!(0))), 400);
        assert_error_shape(&post(&mut c, &with(&|v| v["max_tokens"] = json!(MAX_MODEL_LEN + 1))), 400);
        assert_error_shape(&post(&mut c, &with(&|v| v["stream"] = json!(true))), 400);
        let two_images = with(&|v| {
            let img = v["messages"][0]["content"][1].clone();
            v["messages"][0]["content"].as_array_mut().unwrap().push(img);
        });
        assert_eq!(assert_error_shape(&post(&mut c, &two_images), 400), "At most 1 image(s) may be provided in one prompt.");
        let remote = with(&|v| v["messages"][0]["content"][1]["image_url"]["url"] = json!("https://example.com/a.jpg"));
        assert_error_shape(&post(&mut c, &remote), 400);
        let not_b64 = with(&|v| v["messages"][0]["content"][1]["image_url"]["url"] = json!("data:image/jpeg;base64,%%%"));
        assert_error_shape(&post(&mut c, &not_b64), 400);
        let r = c.request("GET", "/v1/nothing", &[], b"").unwrap();
        assert_error_shape(&r, 404);
        let r = c.request("GET", "/v1/chat/completions", &[], b"").unwrap();
        assert_error_shape(&r, 404);
        // A plain-string image_url and a plain-string content are accepted.
        let plain = with(&|v| v["messages"][0]["content"][1]["image_url"] = json!(IMG));
        assert_eq!(post(&mut c, &plain).status, 200);
        let text_only = with(&|v| v["messages"] = json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where?"}]));
        assert_eq!(post(&mut c, &text_only).status, 200);
        assert_eq!(sim.stats().chat_completions, 2);
    }

    #[test]
    fn max_tokens_cuts_answers() {
        let (s, _) = start(SimOptions::default());
        let mut c = Client::connect(s.addr());
        let mut req = request(&rag_prompt(), 6, Some(5));
        req["max_tokens"] = json!(2);
        let v = c.post_json("/v1/chat/completions", &req).unwrap().json();
        let mut completion = 0;
        for ch in v["choices"].as_array().unwrap() {
            let text = ch["message"]["content"].as_str().unwrap();
            assert!(text.chars().count() <= 8, "{text}");
            // Every answer is longer than 8 characters, so every one is cut.
            assert_eq!(ch["finish_reason"], "length");
            completion += approx_tokens(text);
        }
        assert_eq!(v["usage"]["completion_tokens"], completion);
        assert_eq!(completion, 12);
    }

    #[test]
    fn injected_faults_at_configured_rates_and_retries_succeed() {
        let opts = SimOptions {
            fail_429: 0.10,
            fail_500: 0.05,
            fail_503: 0.05,
            fail_reset: 0.05,
            retry_after_s: Some(2),
            ..SimOptions::default()
        };
        let (s, sim) = start(opts);
        let addr = s.addr();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        let mut first_failed = 0;
        let mut injected = 0;
        let total = 400;
        let mut c = Client::connect(addr);
        for i in 0..total {
            let req = request(&format!("{} request {i}", rag_prompt()), 1, Some(i));
            let mut attempt = 0;
            loop {
                attempt += 1;
                assert!(attempt <= 20, "request {i} never succeeded");
                let kind = match c.post_json("/v1/chat/completions", &req) {
                    Ok(r) if r.status == 200 => break,
                    Ok(r) => {
                        let status = r.status;
                        assert_error_shape(&r, status);
                        if status == 429 || status == 503 {
                            assert_eq!(r.header("retry-after"), Some("2"));
                        } else {
                            assert_eq!(r.header("retry-after"), None);
                        }
                        match status {
                            429 => "429",
                            500 => "500",
                            503 => "503",
                            _ => panic!("unexpected status {status}"),
                        }
                    }
                    Err(_) => {
                        c = Client::connect(addr);
                        "reset"
                    }
                };
                injected += 1;
                if attempt == 1 {
                    first_failed += 1;
                    *counts.entry(kind).or_default() += 1;
                }
            }
        }
        let rate = |k: &str| *counts.get(k).unwrap_or(&0) as f64 / total as f64;
        let first = first_failed as f64 / total as f64;
        eprintln!("first-attempt failure rate {first:.3}: {counts:?}, injected {injected}");
        assert!((0.17..=0.33).contains(&first), "{first}");
        assert!((0.05..=0.16).contains(&rate("429")), "{counts:?}");
        assert!((0.015..=0.09).contains(&rate("500")), "{counts:?}");
        assert!((0.015..=0.09).contains(&rate("503")), "{counts:?}");
        assert!((0.015..=0.09).contains(&rate("reset")), "{counts:?}");
        let st = sim.stats();
        assert_eq!(st.errors_injected, injected);
        assert_eq!(st.chat_completions, total);
    }

    #[test]
    fn answers_distributed_as_designed() {
        let sim = Simulator::new(SimOptions::default());
        let prompt = rag_prompt();
        let pairs = extract_pairs(&prompt);
        assert_eq!(pairs.len(), 10);
        let draws = 2000;
        let (mut top3, mut later, mut refusals, mut prose, mut coords) = (0, 0, 0, 0, 0);
        let mut by_rank = [0usize; 3];
        for i in 0..draws {
            let a = sim.answer(&prompt, "abc", Some(i as u64 / 7), i % 7);
            match parse_answer(&a) {
                Some(p) => {
                    coords += 1;
                    let d: Vec<f64> = pairs.iter().map(|c| distance_km(*c, p)).collect();
                    if let Some(k) = (0..3).find(|&k| d[k] <= 300.0) {
                        top3 += 1;
                        by_rank[k] += 1;
                    } else if d[3..].iter().any(|&x| x <= 300.0) {
                        later += 1;
                    }
                    for (st, en, _) in numbers(&a) {
                        let num = &a[st..en];
                        assert!(num.split_once('.').is_some_and(|(_, d)| d.len() == 4), "{a}: {num} has not 4 decimals");
                    }
                }
                None if a == REFUSAL => refusals += 1,
                None => {
                    assert!(PROSE.contains(&a.as_str()), "{a}");
                    assert!(!a.bytes().any(|b| b.is_ascii_digit()));
                    prose += 1;
                }
            }
        }
        let share = |n: usize| n as f64 / draws as f64;
        eprintln!(
            "top3 {:.3} later {:.3} refusals {:.3} prose {:.3} coords {:.3} by rank {by_rank:?}",
            share(top3),
            share(later),
            share(refusals),
            share(prose),
            share(coords)
        );
        assert!((0.6..=0.85).contains(&share(top3)), "{}", share(top3));
        assert!((0.06..=0.15).contains(&share(later)), "{}", share(later));
        assert!((0.03..=0.10).contains(&share(refusals)));
        assert!((0.03..=0.10).contains(&share(prose)));
        assert!(by_rank[0] > by_rank[1] && by_rank[1] > by_rank[2], "{by_rank:?}");
        // Plain format: about 80 % of coordinate answers are a bare "X, Y", the rest a sentence.
        let answers: Vec<String> = (0..1000).map(|i| sim.answer(&prompt, "abc", None, i)).filter(|a| parse_answer(a).is_some()).collect();
        let bare = answers.iter().filter(|a| !a.contains(|c: char| c.is_alphabetic())).count();
        let sentence = answers.iter().filter(|a| a.starts_with("The photo was probably taken near ") && a.ends_with('.')).count();
        assert_eq!(bare + sentence, answers.len());
        let bare_share = bare as f64 / answers.len() as f64;
        assert!((0.72..=0.88).contains(&bare_share), "{bare_share}");
    }

    #[test]
    fn zero_shot_path() {
        let sim = Simulator::new(SimOptions { seed: 5, ..SimOptions::default() });
        assert!(extract_pairs(ZERO_SHOT).is_empty());
        let draws = 2000;
        let mut coords = 0;
        for i in 0..draws {
            let a = sim.answer(ZERO_SHOT, "img", None, i);
            if let Some(p) = parse_answer(&a) {
                coords += 1;
                let nearest = CITIES.iter().map(|c| distance_km(p, LatLon { lat: c.1, lon: c.2 })).fold(f64::MAX, f64::min);
                assert!(nearest <= 501.0, "{a}: {nearest} km from any city");
            } else {
                assert!(a == REFUSAL || PROSE.contains(&a.as_str()), "{a}");
            }
        }
        let share = coords as f64 / draws as f64;
        assert!((0.70..=0.80).contains(&share), "{share}");
    }

    #[test]
    fn json_answers_when_asked() {
        let sim = Simulator::new(SimOptions::default());
        let prompt = format!("{}\nAnswer with a JSON object only: {{\"latitude\": float, \"longitude\": float}}", rag_prompt());
        let mut fenced = 0;
        for i in 0..400 {
            let a = sim.answer(&prompt, "x", None, i);
            if parse_answer(&a).is_none() {
                continue;
            }
            let start = a.find('{').unwrap();
            let end = a.rfind('}').unwrap();
            let v: Value = serde_json::from_str(&a[start..=end]).unwrap();
            assert!(v["latitude"].is_f64() && v["longitude"].is_f64(), "{a}");
            fenced += a.starts_with("```json") as usize;
        }
        assert!((10..=80).contains(&fenced), "{fenced}");
        // response_format forces JSON even for a plain prompt.
        let (s, _) = start(SimOptions::default());
        let mut req = request(&rag_prompt(), 20, None);
        req["response_format"] = json!({"type": "json_object"});
        let r = Client::connect(s.addr()).post_json("/v1/chat/completions", &req).unwrap();
        let json_like = contents(&r).iter().filter(|a| a.contains("\"latitude\":")).count();
        assert!(json_like >= 12, "{:?}", contents(&r));
    }

    #[test]
    fn latency_and_slots_are_honoured() {
        let (s, _) = start(SimOptions { latency_ms: 150, slots: 1, ..SimOptions::default() });
        let addr = s.addr();
        let t = Instant::now();
        let r = Client::connect(addr).post_json("/v1/chat/completions", &request("hi", 1, None)).unwrap();
        assert_eq!(r.status, 200);
        assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());
        // One slot: four concurrent requests are processed one after another.
        let t = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                std::thread::spawn(move || {
                    Client::connect(addr).post_json("/v1/chat/completions", &request(&format!("q{i}"), 1, None)).unwrap().status
                })
            })
            .collect();
        for th in threads {
            assert_eq!(th.join().unwrap(), 200);
        }
        assert!(t.elapsed() >= Duration::from_millis(600), "{:?}", t.elapsed());
    }

    #[test]
    fn load_64_keep_alive_clients() {
        let (s, sim) = start(SimOptions::default());
        let addr = s.addr();
        let t = Instant::now();
        let threads: Vec<_> = (0..64)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    for j in 0..10 {
                        let r = c.post_json("/v1/chat/completions", &request(&format!("{} #{i}-{j}", rag_prompt()), 2, None)).unwrap();
                        assert_eq!(r.status, 200);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        eprintln!("640 chat completions from 64 clients in {:?}", t.elapsed());
        assert_eq!(sim.stats().chat_completions, 640);
        assert_eq!(sim.stats().choices_returned, 1280);
    }

    #[test]
    fn extracts_pairs_in_the_prompt_formats() {
        let ll = |v: Vec<LatLon>| v.iter().map(|p| (p.lat, p.lon)).collect::<Vec<_>>();
        assert_eq!(ll(extract_pairs("(48.8566, 2.3522) (51.5072, -0.1276)")), vec![(48.8566, 2.3522), (51.5072, -0.1276)]);
        assert_eq!(ll(extract_pairs("['48.8566, 2.3522', '51.5072, -0.1276']")), vec![(48.8566, 2.3522), (51.5072, -0.1276)]);
        assert_eq!(ll(extract_pairs("[48.85, 2.35]")), vec![(48.85, 2.35)]);
        assert_eq!(ll(extract_pairs("Coordinates of the 3 most similar photos:\n48.85, 2.35\n-33.9,151.2\n10, 20\n")), vec![
            (48.85, 2.35),
            (-33.9, 151.2),
            (10.0, 20.0)
        ]);
        assert_eq!(ll(extract_pairs(r#"{"latitude": 12.5, "longitude": -7.25}"#)), vec![(12.5, -7.25)]);
        // Out of range pairs are skipped; numbers glued to words are not numbers.
        assert_eq!(ll(extract_pairs("(95.0, 10.0) (45.0, 200.0) (1.5, 2.5)")), vec![(1.5, 2.5)]);
        assert_eq!(ll(extract_pairs("Qwen2.5, 3.5 and 3rd, 4.0 v1, 2")), vec![]);
        assert_eq!(ll(extract_pairs("These 16 coordinates (latitude, longitude) belong to 16 photos")), vec![]);
    }

    #[test]
    fn perturbation_distances() {
        let mut rng = Rng::new(1);
        for (lat, lon) in [(48.0, 2.0), (89.9, 10.0), (-10.0, 179.9), (0.0, -179.95)] {
            let p = LatLon { lat, lon };
            for d in [1.0, 50.0, 300.0, 800.0] {
                let q = perturb(&mut rng, p, d);
                assert!(q.lat.abs() <= 90.0 && q.lon.abs() <= 180.0, "{q:?}");
                assert!((distance_km(p, q) - d).abs() < 1e-6 * d.max(1.0) + 1e-6, "{p:?} {d} -> {q:?}");
            }
        }
        assert_eq!(fmt4(-0.00001), "0.0000");
        assert_eq!(fmt4(-12.34567), "-12.3457");
    }
}
