//! `georag runs list DIR` and `georag runs diff A B`: the provenance in `run.json` as a table,
//! and what differs between two runs (fingerprints, config keys, build, machine), so "are these
//! comparable?" is one command.

use crate::pipeline::{RunFileError, RunRecord};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Every run directory (one with a `run.json`) at or under `dir`, at most 3 levels down, sorted.
pub fn find(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if d.join("run.json").is_file() {
            out.push(d.to_path_buf());
        }
        if depth == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(d) else { return };
        let mut subs: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
        subs.sort();
        for s in subs {
            walk(&s, depth - 1, out);
        }
    }
    let mut out = Vec::new();
    walk(dir, 3, &mut out);
    out
}

fn short(commit: &Option<String>) -> String {
    match commit {
        Some(c) => {
            let dirty = c.ends_with("-dirty");
            format!("{}{}", &c[..c.len().min(10)], if dirty { "-dirty" } else { "" })
        }
        None => "unknown".into(),
    }
}

/// The `runs list` table: one line per run directory under `dir`; unreadable `run.json` files
/// are listed with their error.
pub fn list(dir: &Path) -> String {
    let runs = find(dir);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<36} {:<9} {:<16} {:<21} {:>8} {:<16} {:>7} {:>7} {:>10}  overrides",
        "run", "status", "name", "started (UTC)", "wall s", "commit", "queries", "failed", "tokens"
    );
    for d in &runs {
        let rel = d.strip_prefix(dir).ok().filter(|p| !p.as_os_str().is_empty()).unwrap_or(d).display().to_string();
        match RunRecord::read(d) {
            Ok(r) => {
                let wall = r.wall_seconds.map(|w| format!("{w:.1}")).unwrap_or_else(|| "-".into());
                let tokens = r.totals.prompt_tokens + r.totals.completion_tokens;
                let _ = writeln!(
                    s,
                    "{:<36} {:<9} {:<16} {:<21} {:>8} {:<16} {:>7} {:>7} {:>10}  {}{}",
                    rel,
                    r.status.name(),
                    r.name,
                    if r.started_at.is_empty() { "-" } else { &r.started_at },
                    wall,
                    short(&r.build.git_commit),
                    r.n_queries,
                    r.n_failures(),
                    tokens,
                    r.overrides.join(" "),
                    if r.replay { " (replay)" } else { "" }
                );
            }
            Err(e) => {
                let _ = writeln!(s, "{rel:<36} unreadable: {e}");
            }
        }
    }
    let _ = writeln!(
        s,
        "{} runs under {} (wall s: start to end of `georag run`; failed: samples with a non-ok status, all stages; tokens: prompt + completion tokens the MLLM stage sent)",
        runs.len(),
        dir.display()
    );
    s
}

/// Flatten a JSON value into `a.b.0.c` keys.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// What differs between two runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunDiff {
    /// (name, A's, B's); absent values are `-`.
    pub fingerprints: Vec<(String, String, String)>,
    pub config: Vec<(String, String, String)>,
    pub build: Vec<(String, String, String)>,
    pub machine: Vec<(String, String, String)>,
    /// Same queries and the same scoring convention: their metrics measure the same thing.
    pub comparable: bool,
}

fn diff_maps(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<(String, String, String)> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_else(|| "-".into());
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| (k.clone(), get(a, k), get(b, k))).collect()
}

/// Compare two runs' `run.json`.
pub fn diff(a: &RunRecord, b: &RunRecord) -> RunDiff {
    let fingerprints = diff_maps(&a.fingerprints(), &b.fingerprints());
    let (mut ca, mut cb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &a.config, &mut ca);
    flatten("", &b.config, &mut cb);
    let config = diff_maps(&ca, &cb);
    let build_map = |r: &RunRecord| {
        let mut m: BTreeMap<String, String> = r.build.crates.iter().map(|(k, v)| (format!("crate {k}"), v.clone())).collect();
        m.insert("georag".into(), r.georag_version.clone());
        m.insert("git commit".into(), r.build.git_commit.clone().unwrap_or_else(|| "unknown".into()));
        m.insert("faiss".into(), r.build.faiss.clone());
        m.insert("faiss simd".into(), if r.build.faiss_simd.is_empty() { "unknown".into() } else { r.build.faiss_simd.clone() });
        m
    };
    let machine_map = |r: &RunRecord| {
        let mut m = BTreeMap::new();
        m.insert("cpu".to_string(), r.machine.cpu_model.clone().unwrap_or_else(|| "unknown".into()));
        m.insert("cores".to_string(), r.machine.cores.to_string());
        m.insert("gpus".to_string(), if r.machine.gpus.is_empty() { "none".into() } else { r.machine.gpus.join("; ") });
        m
    };
    let convention = |c: &BTreeMap<String, String>| c.iter().filter(|(k, _)| k.starts_with("metrics.")).map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    let comparable = a.queries_fingerprint == b.queries_fingerprint && convention(&ca) == convention(&cb);
    RunDiff { fingerprints, config, build: diff_maps(&build_map(a), &build_map(b)), machine: diff_maps(&machine_map(a), &machine_map(b)), comparable }
}

impl RunDiff {
    pub fn render(&self, a: &str, b: &str) -> String {
        let mut s = String::new();
        for (title, rows) in [("fingerprints", &self.fingerprints), ("config keys", &self.config), ("build", &self.build), ("machine", &self.machine)] {
            if rows.is_empty() {
                let _ = writeln!(s, "{title}: identical");
                continue;
            }
            let _ = writeln!(s, "{title}: {} differ", rows.len());
            for (k, x, y) in rows {
                let _ = writeln!(s, "  {k}\n    A {x}\n    B {y}");
            }
        }
        let _ = writeln!(
            s,
            "{}",
            if self.comparable {
                format!("comparable: yes (same queries fingerprint and scoring convention; A = {a}, B = {b})")
            } else {
                format!("comparable: NO (the queries fingerprint or the metrics convention differ; A = {a}, B = {b})")
            }
        );
        s
    }
}

/// `georag runs diff A B` on two run directories (or `run.json` files).
pub fn diff_dirs(a: &Path, b: &Path) -> Result<RunDiff, RunFileError> {
    Ok(diff(&RunRecord::read(a)?, &RunRecord::read(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_changed_fingerprints_and_config_keys() {
        let a = RunRecord {
            queries_fingerprint: "q1".into(),
            index_fingerprint: "i1".into(),
            config: serde_json::json!({"retrieval": {"k": 5}, "metrics": {"threshold_op": "lt"}, "methods": [{"kind": "nearest"}]}),
            ..RunRecord::default()
        };
        let mut b = a.clone();
        b.index_fingerprint = "i2".into();
        b.config["retrieval"]["k"] = serde_json::json!(10);
        let d = diff(&a, &b);
        assert_eq!(d.fingerprints, vec![("index".to_string(), "i1".to_string(), "i2".to_string())]);
        assert_eq!(d.config, vec![("retrieval.k".to_string(), "5".to_string(), "10".to_string())]);
        assert!(d.comparable);
        b.config["metrics"]["threshold_op"] = serde_json::json!("le");
        let d = diff(&a, &b);
        assert!(!d.comparable);
        assert!(d.render("a", "b").contains("comparable: NO"));
        assert!(diff(&a, &a).render("a", "a").contains("fingerprints: identical"));
    }
}
