//! TEST DOUBLE of an OpenAI-compatible chat completions server, in-process on loopback, for
//! the client and MLLM-stage tests. It is not a model and not the simulator: it answers
//! deterministically from the prompt (the first coordinate pair in the prompt text, moved
//! north by 0.01 degrees per choice index; `12.5, 45.25` when the prompt has none; a JSON object
//! when the prompt asks for `latitude`), and a test-supplied plan injects faults per request.

use georag::util::httpd::{Reply, Request, Response, Server};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the double does with one request.
#[derive(Clone, Debug)]
pub enum Fault {
    None,
    /// An HTTP error with an OpenAI-style body (and `Retry-After` seconds when given).
    Status { code: u16, retry_after: Option<u64>, message: String },
    /// A 200 whose body is not JSON.
    Malformed,
    /// Close the connection without answering.
    Reset,
    /// Wait, then close without answering (a client timeout when longer than its timeout).
    Hang(Duration),
    /// Answer correctly after a delay.
    Slow(Duration),
    /// Answer with at most this many choices.
    Fewer(usize),
    /// Answer every choice with this text.
    Text(String),
}

/// One request the double received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub body: Value,
    /// The n-th time (0-based) this exact body arrived.
    pub repeat: usize,
    pub at: Instant,
    pub authorization: Option<String>,
    pub answered: bool,
}

type Plan = dyn Fn(&Value, usize) -> Fault + Send + Sync;

pub struct Double {
    pub server: Server,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub model: String,
}

/// The user text of a chat request body.
pub fn prompt_text(body: &Value) -> String {
    let mut s = String::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        match &m["content"] {
            Value::String(t) => s.push_str(t),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).for_each(|t| s.push_str(t)),
            _ => {}
        }
    }
    s
}

/// The first `a, b` pair of decimal numbers in a text.
pub fn first_pair(text: &str) -> Option<(f64, f64)> {
    let nums: Vec<(usize, usize, f64)> = {
        let b = text.as_bytes();
        let mut out = vec![];
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'-' || b[i].is_ascii_digit() {
                let st = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                if let Ok(v) = text[st..i].parse::<f64>()
                    && text[st..i].contains('.')
                {
                    out.push((st, i, v));
                }
            } else {
                i += 1;
            }
        }
        out
    };
    nums.windows(2).find(|w| text[w[0].1..w[1].0].trim() == ",").map(|w| (w[0].2, w[1].2))
}

pub fn answer(text: &str, choice: usize) -> String {
    let (lat, lon) = first_pair(text).unwrap_or((12.5, 45.25));
    let lat = (lat + 0.01 * choice as f64).min(90.0);
    if text.contains("latitude") {
        format!("{{\"latitude\": {lat:.4}, \"longitude\": {lon:.4}}}")
    } else {
        format!("{lat:.4}, {lon:.4}")
    }
}

impl Double {
    pub fn start(model: &str, plan: impl Fn(&Value, usize) -> Fault + Send + Sync + 'static) -> Double {
        let plan: Arc<Plan> = Arc::new(plan);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (s2, m2) = (seen.clone(), model.to_string());
        let handler = Arc::new(move |r: &Request| -> Reply {
            if r.method == "GET" && r.path.ends_with("/v1/models") {
                return Reply::Respond(Response::json(200, &json!({"object": "list", "data": [{"id": m2, "object": "model"}]})));
            }
            let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
                return Reply::Respond(Response::json(400, &json!({"error": {"message": "bad JSON", "type": "BadRequestError", "code": 400}})));
            };
            let key = body.to_string();
            let repeat = {
                let mut c = counts.lock().unwrap();
                let e = c.entry(key).or_insert(0);
                *e += 1;
                *e - 1
            };
            let fault = plan(&body, repeat);
            let idx = {
                let mut s = s2.lock().unwrap();
                s.push(Seen { body: body.clone(), repeat, at: Instant::now(), authorization: r.header("authorization").map(String::from), answered: false });
                s.len() - 1
            };
            let n = body["n"].as_u64().unwrap_or(1) as usize;
            let text = prompt_text(&body);
            let ok = |k: usize, fixed: Option<&str>| {
                let choices: Vec<Value> = (0..k)
                    .map(|i| json!({"index": i, "message": {"role": "assistant", "content": fixed.map(String::from).unwrap_or_else(|| answer(&text, i))}, "finish_reason": "stop"}))
                    .collect();
                Response::json(200, &json!({"id": "dbl", "object": "chat.completion", "model": format!("{} (test double)", body["model"].as_str().unwrap_or("")), "choices": choices, "usage": {"prompt_tokens": text.len() / 4, "completion_tokens": 5 * k, "total_tokens": text.len() / 4 + 5 * k}}))
            };
            let reply = match fault {
                Fault::None => Reply::Respond(ok(n, None)),
                Fault::Text(t) => Reply::Respond(ok(n, Some(&t))),
                Fault::Fewer(k) => Reply::Respond(ok(n.min(k), None)),
                Fault::Slow(d) => {
                    std::thread::sleep(d);
                    Reply::Respond(ok(n, None))
                }
                Fault::Status { code, retry_after, message } => {
                    let mut resp = Response::json(code, &json!({"error": {"message": message, "type": "TestDoubleError", "param": null, "code": code}}));
                    if let Some(s) = retry_after {
                        resp = resp.with_header("Retry-After", &s.to_string());
                    }
                    Reply::Respond(resp)
                }
                Fault::Malformed => Reply::Respond(Response::text(200, "{\"choices\": [ this is not json")),
                Fault::Reset => Reply::Drop,
                Fault::Hang(d) => Reply::Hang(d),
            };
            if matches!(reply, Reply::Respond(ref x) if x.status == 200) {
                s2.lock().unwrap()[idx].answered = true;
            }
            reply
        });
        let server = Server::start("127.0.0.1:0", 128, handler).unwrap();
        Double { server, seen, model: model.to_string() }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Chat requests received so far.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Chat requests answered with a 200 so far.
    pub fn answered(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.answered).count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}
