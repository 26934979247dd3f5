//! Batch files in the OpenAI Batch API format, which `vllm run-batch` and hosted batch APIs
//! read and write.
//!
//! Input lines: `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`, one
//! per request that has no valid answer yet. Output lines (any order): `{"id", "custom_id",
//! "response": {"status_code", "body"}, "error"}`. Imported results go through the same
//! validation as live responses ([`super::openai::interpret`]) and into the response store under
//! the same keys, marked `source: batch`.

use super::openai::{interpret, request_body};
use super::{Attempt, ChatRequest, Failure, Outcome};
use serde_json::{Map, Value, json};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Error reading or writing a batch file.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("batch file {path}, line {line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
    #[error(transparent)]
    Write(#[from] crate::util::atomic::AtomicWriteError),
}

/// Write one request per line (atomically).
pub fn export(path: &Path, requests: &[ChatRequest], model: &str, extra_body: &Map<String, Value>) -> Result<(), BatchError> {
    crate::util::atomic::write_with(path, |w| {
        for r in requests {
            let line = json!({
                "custom_id": r.custom_id(),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": request_body(model, r, extra_body),
            });
            serde_json::to_writer(&mut *w, &line).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    Ok(())
}

/// One result line.
#[derive(Clone, Debug)]
pub struct BatchResult {
    pub custom_id: String,
    pub line: usize,
    pub attempt: Attempt,
}

/// Read a results file: every line becomes an attempt (a line-level `error`, or a non-200
/// `status_code`, is a failed attempt with the server's message).
pub fn read_results(path: &Path) -> Result<Vec<BatchResult>, BatchError> {
    let f = std::fs::File::open(path).map_err(|source| BatchError::Io { path: path.into(), source })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| BatchError::Io { path: path.into(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| BatchError::Line { path: path.into(), line: i + 1, message };
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let custom_id = v["custom_id"].as_str().ok_or_else(|| bad("no `custom_id`".into()))?.to_string();
        let outcome = if !v["error"].is_null() {
            let e = &v["error"];
            let message = e["message"].as_str().map(String::from).unwrap_or_else(|| e.to_string());
            Outcome::Failed(Failure { kind: "batch_error".into(), http_status: e["code"].as_u64().map(|c| c as u16), message, retryable: true, body: Some(e.to_string()) })
        } else {
            let resp = &v["response"];
            let status = resp["status_code"].as_u64().ok_or_else(|| bad("no `response.status_code`".into()))? as u16;
            let body = serde_json::to_vec(&resp["body"]).expect("JSON");
            interpret(status, &body)
        };
        out.push(BatchResult { custom_id, line: i + 1, attempt: Attempt { outcome, server: None, attempt: 1, latency_ms: 0.0, source: "batch" } });
    }
    Ok(out)
}
