//! The response store: an append-only JSON-lines log of every generation attempt, and an
//! in-memory index from sample key to the record holding its valid answer.
//!
//! Layout: `<cache>/responses/responses.jsonl` (one [`Record`] per line) and `responses.lock`
//! (an exclusive `flock` held while a store is open for writing, so two runs never interleave
//! half-written lines).
//!
//! Invariants:
//! - a record is appended with one `write` call and the log is `fsync`ed at least every second
//!   and on close, so a crash (`kill -9`) loses at most the attempts in flight; a torn last line
//!   (no trailing newline) is detected on open, counted and cut off before anything is appended;
//! - only records with status `ok` index their samples: errors are logged, never served as
//!   answers; the newest valid record for a key wins, an older one is never deleted;
//! - the index holds 16-byte keys and 12-byte locations only, so memory is bounded by the
//!   number of samples, not by their text; a million records open in seconds (benches/README.md);
//! - derived files (generations, predictions, metrics) are rebuilt from this log.

use crate::generate::{Attempt, ChatRequest, Choice, Failure, Outcome, RequestKey, Usage};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const RECORD_VERSION: u32 = 1;
pub const LOG_FILE: &str = "responses.jsonl";

/// Error opening, reading or writing the store. Per-request failures are records, not errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("response store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("response store {path}: another georag process holds {lock} (one writer at a time)")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("response store {path}: record at byte {offset}: {message}")]
    Corrupt { path: PathBuf, offset: u64, message: String },
}

/// One logged attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// Unix time, seconds.
    pub time: f64,
    /// Keys of the samples asked for, `first_sample..first_sample + keys.len()`.
    pub keys: Vec<String>,
    pub first_sample: usize,
    /// `ok` or `error`.
    pub status: String,
    pub attempt: u32,
    /// `live` or `batch`.
    pub source: String,
    pub backend: String,
    pub model: String,
    #[serde(default)]
    pub revision: Option<String>,
    /// The model id the server reported.
    #[serde(default)]
    pub response_model: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub error: Option<Failure>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Provenance, for people reading the log.
    pub method: String,
    pub variant: usize,
    pub query: String,
    pub template_sha256: String,
    pub prompt_sha256: String,
    #[serde(default)]
    pub image_sha256: Option<String>,
}

impl Record {
    /// The record of one attempt at `req`.
    pub fn of(req: &ChatRequest, a: &Attempt) -> Record {
        let (status, choices, error, usage, response_model) = match &a.outcome {
            Outcome::Ok { choices, usage, response_model } => ("ok", choices.clone(), None, *usage, response_model.clone()),
            Outcome::Failed(f) => ("error", vec![], Some(f.clone()), None, None),
        };
        let id = &req.prompt.identity;
        Record {
            v: RECORD_VERSION,
            time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            keys: req.keys().iter().map(RequestKey::hex).collect(),
            first_sample: req.first_sample,
            status: status.into(),
            attempt: a.attempt,
            source: a.source.into(),
            backend: id.backend.clone(),
            model: id.model.clone(),
            revision: id.revision.clone(),
            response_model,
            server: a.server.clone(),
            choices,
            error,
            usage,
            latency_ms: Some(a.latency_ms),
            method: req.method.clone(),
            variant: req.variant,
            query: req.query_id.clone(),
            template_sha256: req.prompt.template_sha256.clone(),
            prompt_sha256: req.prompt.prompt_sha256(),
            image_sha256: req.image.as_ref().map(|i| i.sent_sha256.clone()),
        }
    }
}

/// Where a sample's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub offset: u64,
    pub choice: u32,
}

/// A stored sample, as served.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub text: Option<String>,
    pub finish_reason: Option<String>,
    pub response_model: Option<String>,
    pub usage: Option<Usage>,
    /// The number of choices of its record (usage is per record).
    pub record_choices: usize,
    pub source: String,
}

/// What opening the store found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpenStats {
    pub records: u64,
    pub ok_records: u64,
    pub error_records: u64,
    pub samples_indexed: usize,
    pub torn_tail_bytes: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Only the fields the index needs, borrowed (no text is copied while scanning).
#[derive(Deserialize)]
struct ScanRecord<'a> {
    #[serde(borrow)]
    keys: Vec<&'a str>,
    #[serde(borrow)]
    status: &'a str,
    #[serde(default)]
    choices: Vec<serde::de::IgnoredAny>,
}

/// An open store.
pub struct Store {
    path: PathBuf,
    file: File,
    read: File,
    _lock: Option<File>,
    len: u64,
    index: HashMap<RequestKey, Loc>,
    /// The newest error record touching a key without a valid answer.
    errors: HashMap<RequestKey, u64>,
    last_sync: Instant,
    /// The record read last: a request's samples share one record, so reading them in order
    /// parses it once.
    last_read: std::cell::RefCell<Option<(u64, Record)>>,
    pub opened: OpenStats,
}

impl Store {
    /// Open (creating) the store in `dir`, for reading and appending; takes the writer lock.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.into(), source })?;
        let path = dir.join(LOG_FILE);
        let io = |source| StoreError::Io { path: path.clone(), source };
        let lock_path = dir.join("responses.lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { path: path.clone(), lock: lock_path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut s = Store::open_at(&path, true)?;
        s._lock = Some(lock);
        Ok(s)
    }

    /// Open an existing log read-only (no lock, nothing appended; `append` fails).
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        Store::open_at(&dir.join(LOG_FILE), false)
    }

    fn open_at(path: &Path, write: bool) -> Result<Store, StoreError> {
        let t = Instant::now();
        let io = |source| StoreError::Io { path: path.to_path_buf(), source };
        let file = OpenOptions::new().create(write).read(true).append(write).open(path).map_err(io)?;
        let read = File::open(path).map_err(io)?;
        let mut index = HashMap::new();
        let mut errors = HashMap::new();
        let mut st = OpenStats::default();
        let mut r = BufReader::with_capacity(1 << 20, &read);
        let mut line = Vec::with_capacity(4096);
        let mut offset = 0u64;
        loop {
            line.clear();
            let n = r.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // A torn last record (the process died mid-write).
                st.torn_tail_bytes = n as u64;
                break;
            }
            let rec: ScanRecord = serde_json::from_slice(&line[..n - 1])
                .map_err(|e| StoreError::Corrupt { path: path.to_path_buf(), offset, message: e.to_string() })?;
            st.records += 1;
            let keys: Vec<RequestKey> = rec
                .keys
                .iter()
                .map(|k| RequestKey::parse(k).ok_or_else(|| StoreError::Corrupt { path: path.to_path_buf(), offset, message: format!("bad key `{k}`") }))
                .collect::<Result<_, _>>()?;
            if rec.status == "ok" {
                st.ok_records += 1;
                for (i, k) in keys.iter().take(rec.choices.len()).enumerate() {
                    index.insert(*k, Loc { offset, choice: i as u32 });
                    errors.remove(k);
                }
            } else {
                st.error_records += 1;
                for k in keys.iter().filter(|k| !index.contains_key(k)) {
                    errors.insert(*k, offset);
                }
            }
            offset += n as u64;
        }
        drop(r);
        if write && st.torn_tail_bytes > 0 {
            file.set_len(offset).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        st.samples_indexed = index.len();
        st.bytes = offset;
        st.seconds = t.elapsed().as_secs_f64();
        Ok(Store { path: path.to_path_buf(), file, read, _lock: None, len: offset, index, errors, last_sync: Instant::now(), last_read: Default::default(), opened: st })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The location of a key's valid answer.
    pub fn get(&self, key: &RequestKey) -> Option<Loc> {
        self.index.get(key).copied()
    }

    pub fn contains(&self, key: &RequestKey) -> bool {
        self.index.contains_key(key)
    }

    /// Number of samples with a valid answer.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Read the record at a byte offset.
    pub fn read_record(&self, offset: u64) -> Result<Record, StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let mut buf = Vec::with_capacity(2048);
        let mut chunk = [0u8; 4096];
        let mut at = offset;
        loop {
            let n = self.read.read_at(&mut chunk, at).map_err(io)?;
            if n == 0 {
                break;
            }
            if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
                buf.extend_from_slice(&chunk[..i]);
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            at += n as u64;
        }
        serde_json::from_slice(&buf).map_err(|e| StoreError::Corrupt { path: self.path.clone(), offset, message: e.to_string() })
    }

    /// A key's valid answer, if any.
    pub fn sample(&self, key: &RequestKey) -> Result<Option<Sample>, StoreError> {
        let Some(loc) = self.get(key) else { return Ok(None) };
        let mut last = self.last_read.borrow_mut();
        if last.as_ref().is_none_or(|(off, _)| *off != loc.offset) {
            *last = Some((loc.offset, self.read_record(loc.offset)?));
        }
        let r = &last.as_ref().expect("just read").1;
        let c = r.choices.get(loc.choice as usize).cloned().ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            offset: loc.offset,
            message: format!("choice {} of {}", loc.choice, r.choices.len()),
        })?;
        Ok(Some(Sample { text: c.text, finish_reason: c.finish_reason, response_model: r.response_model.clone(), usage: r.usage, record_choices: r.choices.len(), source: r.source.clone() }))
    }

    /// The newest failure recorded for a key that has no valid answer.
    pub fn last_error(&self, key: &RequestKey) -> Result<Option<Failure>, StoreError> {
        match self.errors.get(key) {
            Some(&off) => Ok(self.read_record(off)?.error),
            None => Ok(None),
        }
    }

    /// Append one record (one `write`), then index it.
    pub fn append(&mut self, rec: &Record) -> Result<(), StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let mut line = serde_json::to_vec(rec).expect("records serialise");
        line.push(b'\n');
        self.file.write_all(&line).map_err(io)?;
        let offset = self.len;
        self.len += line.len() as u64;
        let keys: Vec<RequestKey> = rec.keys.iter().filter_map(|k| RequestKey::parse(k)).collect();
        if rec.status == "ok" {
            for (i, k) in keys.iter().take(rec.choices.len()).enumerate() {
                self.index.insert(*k, Loc { offset, choice: i as u32 });
                self.errors.remove(k);
            }
        } else {
            for k in keys.iter().filter(|k| !self.index.contains_key(k)) {
                self.errors.insert(*k, offset);
            }
        }
        if self.last_sync.elapsed().as_secs_f64() >= 1.0 {
            self.sync()?;
        }
        Ok(())
    }

    /// `fsync` the log.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|source| StoreError::Io { path: self.path.clone(), source })?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Every record, in log order (for tools and tests; reads the whole log).
    pub fn records(&self) -> Result<Vec<Record>, StoreError> {
        let io = |source| StoreError::Io { path: self.path.clone(), source };
        let mut f = File::open(&self.path).map_err(io)?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut text = String::new();
        f.take(self.len).read_to_string(&mut text).map_err(io)?;
        let mut off = 0u64;
        text.lines()
            .map(|l| {
                let r = serde_json::from_str(l).map_err(|e| StoreError::Corrupt { path: self.path.clone(), offset: off, message: e.to_string() });
                off += l.len() as u64 + 1;
                r
            })
            .collect()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.file.sync_data();
    }
}

#[cfg(test)]
mod tests;
