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

/// Writes one request per line into a temporary file, renamed into place by [`Exporter::finish`]
/// (a reader never sees a partial batch file). Lines are streamed: the images of a benchmark are
/// never all in memory at once.
pub struct Exporter {
    path: PathBuf,
    tmp: PathBuf,
    w: std::io::BufWriter<std::fs::File>,
    model: String,
    extra_body: Map<String, Value>,
    pub lines: usize,
}

impl Exporter {
    pub fn create(path: &Path, model: &str, extra_body: &Map<String, Value>) -> Result<Exporter, BatchError> {
        let tmp = crate::util::atomic::temp_for(path)?;
        let f = std::fs::File::create(&tmp).map_err(|source| BatchError::Io { path: tmp.clone(), source })?;
        Ok(Exporter { path: path.into(), tmp, w: std::io::BufWriter::new(f), model: model.into(), extra_body: extra_body.clone(), lines: 0 })
    }

    pub fn write(&mut self, r: &ChatRequest) -> Result<(), BatchError> {
        let line = json!({
            "custom_id": r.custom_id(),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": request_body(&self.model, r, &self.extra_body),
        });
        let io = |source| BatchError::Io { path: self.tmp.clone(), source };
        serde_json::to_writer(&mut self.w, &line).map_err(|e| io(std::io::Error::other(e)))?;
        self.w.write_all(b"\n").map_err(io)?;
        self.lines += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<usize, BatchError> {
        let Exporter { path, tmp, w, lines, .. } = self;
        w.into_inner().map_err(|e| BatchError::Io { path: tmp.clone(), source: e.into_error() })?;
        crate::util::atomic::commit(&tmp, &path)?;
        Ok(lines)
    }
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
