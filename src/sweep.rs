//! Sweeps: `georag run CONFIG --sweep retrieval.k=5,10,15 --sweep methods.0.prompt=a,b`, or a
//! `sweep:` block in the config, run every point of the grid into its own run directory and
//! write `sweep.json`.
//!
//! Axes: each `--sweep KEY=V1,V2,...` is one axis; a `sweep:` block is a list of mappings, each
//! mapping one axis whose keys are zipped (lists of equal length), e.g.
//!
//! ```yaml
//! sweep:
//!   - {retrieval.k: [5, 10, 15]}
//!   - {methods.2.prompt: [zs, rag], methods.2.samples: [1, 10]}   # zipped: 2 settings
//! ```
//!
//! Points are the cartesian product of the axes (YAML axes first, then `--sweep` ones; the last
//! axis varies fastest), numbered in that order, which is also the order they run in.
//!
//! Invariants:
//! - every point's config is loaded and validated before the first point runs, so a bad key or
//!   value stops the sweep before any work;
//! - a point whose `run.json` is `complete` for the same resolved config (SHA-256 of
//!   `config.resolved.yaml`) and the same replay mode is not run again: a second invocation does
//!   no work, and an interrupted sweep resumes at its first unfinished point;
//! - stage outputs are shared through the fingerprinted cache as in any run, so a point pays only
//!   for the stages its settings change; `sweep.json` records, per point, which stages were
//!   reused and which were computed (from its `run.json`).

use crate::config::{self, ConfigError};
use crate::pipeline::{self, PipelineError, RunOptions, RunRecord, RunStatus, mllm};
use crate::util::atomic;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// Schema tag of `sweep.json`.
pub const SWEEP_SCHEMA: &str = "georag.sweep/v1";

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("--sweep {arg}: expected KEY=V1,V2,... (e.g. --sweep retrieval.k=5,10,15)")]
    Syntax { arg: String },
    #[error("{file}: sweep[{axis}]: {message}")]
    Block { file: String, axis: usize, message: String },
    #[error("sweep point {index} ({label}): {source}")]
    Config { index: usize, label: String, source: ConfigError },
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
}

/// One axis: `keys` varied together; `values[i]` is the i-th setting (one raw YAML value per key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub keys: Vec<String>,
    pub values: Vec<Vec<String>>,
}

/// Parse one `--sweep KEY=V1,V2,...` (values split at commas; a value that itself holds a comma
/// needs the YAML block).
pub fn parse_cli(arg: &str) -> Result<Axis, SweepError> {
    let (k, v) = arg.split_once('=').ok_or_else(|| SweepError::Syntax { arg: arg.into() })?;
    let values: Vec<Vec<String>> = v.split(',').map(|x| vec![x.trim().to_string()]).collect();
    if k.trim().is_empty() || values.iter().any(|x| x[0].is_empty()) {
        return Err(SweepError::Syntax { arg: arg.into() });
    }
    Ok(Axis { keys: vec![k.trim().to_string()], values })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).map(|s| s.trim_end().to_string()).unwrap_or_default(),
    }
}

/// The `sweep:` block of a config file (after `include:`), if any.
pub fn parse_block(path: &Path) -> Result<Vec<Axis>, SweepError> {
    let file = path.display().to_string();
    let (value, _) = config::load_value(path).map_err(|source| SweepError::Config { index: 0, label: "base config".into(), source })?;
    let Some(block) = value.get("sweep") else { return Ok(vec![]) };
    let axes: Vec<&Value> = match block {
        Value::Sequence(s) => s.iter().collect(),
        Value::Mapping(_) => vec![block],
        _ => return Err(SweepError::Block { file, axis: 0, message: "expected a list of mappings KEY: [values]".into() }),
    };
    let mut out = Vec::new();
    for (i, a) in axes.iter().enumerate() {
        let bad = |message: String| SweepError::Block { file: file.clone(), axis: i, message };
        let Value::Mapping(m) = a else { return Err(bad("expected a mapping KEY: [values]".into())) };
        let mut keys = Vec::new();
        let mut cols: Vec<Vec<String>> = Vec::new();
        for (k, v) in m {
            let k = k.as_str().ok_or_else(|| bad("keys are dotted config paths (strings)".into()))?;
            let Value::Sequence(vals) = v else { return Err(bad(format!("`{k}`: expected a list of values"))) };
            if vals.is_empty() {
                return Err(bad(format!("`{k}`: no values")));
            }
            if let Some(first) = cols.first().filter(|c| c.len() != vals.len()) {
                return Err(bad(format!("`{k}` has {} values but `{}` has {}: keys of one axis are zipped and need lists of equal length", vals.len(), keys[0], first.len())));
            }
            keys.push(k.to_string());
            cols.push(vals.iter().map(scalar).collect());
        }
        if keys.is_empty() {
            return Err(bad("empty axis".into()));
        }
        let values = (0..cols[0].len()).map(|j| cols.iter().map(|c| c[j].clone()).collect()).collect();
        out.push(Axis { keys, values });
    }
    Ok(out)
}

/// One point of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub index: usize,
    /// `KEY=VALUE` overrides of this point (after the base `--set`s).
    pub sets: Vec<String>,
    /// Its run directory's name under the sweep directory.
    pub dir: String,
}

/// The cartesian product of `axes` in a stable order (last axis fastest).
pub fn expand(axes: &[Axis]) -> Vec<Point> {
    let mut combos: Vec<Vec<(usize, usize)>> = vec![vec![]];
    for (ai, a) in axes.iter().enumerate() {
        combos = combos.into_iter().flat_map(|c| (0..a.values.len()).map(move |vi| [c.clone(), vec![(ai, vi)]].concat())).collect();
    }
    combos
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let mut sets = Vec::new();
            let mut label = Vec::new();
            for (ai, vi) in c {
                for (k, v) in axes[ai].keys.iter().zip(&axes[ai].values[vi]) {
                    sets.push(format!("{k}={v}"));
                    let last = k.rsplit('.').next().unwrap_or(k);
                    label.push(format!("{}-{}", crate::report::slug(last), crate::report::slug(v)));
                }
            }
            Point { index, sets, dir: format!("{index:03}_{}", label.join("_")) }
        })
        .collect()
}

/// What happened to one point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointOutcome {
    #[serde(flatten)]
    pub point: Point,
    /// `complete`, `failed`, or `skipped` (already complete for the same resolved config).
    pub status: String,
    pub error: Option<String>,
    /// Stages whose output came from the cache / was computed, in run order (from `run.json`).
    pub reused: Vec<String>,
    pub computed: Vec<String>,
    /// Failed samples of the point's run.
    pub failed_samples: usize,
}

/// `sweep.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepFile {
    pub schema: String,
    pub config: String,
    pub base_overrides: Vec<String>,
    pub axes: Vec<Axis>,
    pub replay: bool,
    pub points: Vec<PointOutcome>,
}

fn stages_of(r: &RunRecord) -> (Vec<String>, Vec<String>) {
    let reused = r.stages.iter().filter(|s| s.reused).map(|s| s.stage.clone()).collect();
    let computed = r.stages.iter().filter(|s| !s.reused).map(|s| s.stage.clone()).collect();
    (reused, computed)
}

/// Run every point of `axes` over `config_path` (with `base_sets` first) into `out/<point dir>`;
/// `log` receives one line per point saying what it reused, computed or skipped.
pub fn run(
    config_path: &Path,
    base_sets: &[String],
    axes: Vec<Axis>,
    out: &Path,
    mode: &mllm::Mode,
    plots: bool,
    log: &mut dyn FnMut(&str),
) -> Result<SweepFile, SweepError> {
    let points = expand(&axes);
    // Every point's config first: nothing runs when one of them is invalid.
    let mut cfgs = Vec::with_capacity(points.len());
    for p in &points {
        let sets: Vec<String> = base_sets.iter().chain(&p.sets).cloned().collect();
        let cfg = config::load(config_path, &sets)
            .and_then(|c| c.validate().map(|_| c))
            .map_err(|source| SweepError::Config { index: p.index, label: p.sets.join(" "), source })?;
        cfgs.push((sets, cfg));
    }
    std::fs::create_dir_all(out).map_err(|source| atomic::AtomicWriteError { path: out.to_path_buf(), source })?;
    let replay = *mode == mllm::Mode::Replay;
    let mut file = SweepFile {
        schema: SWEEP_SCHEMA.into(),
        config: config_path.display().to_string(),
        base_overrides: base_sets.to_vec(),
        axes,
        replay,
        points: Vec::new(),
    };
    let n = points.len();
    for (p, (sets, cfg)) in points.into_iter().zip(cfgs) {
        let dir = out.join(&p.dir);
        let sha = crate::util::fingerprint::sha256_hex(cfg.to_yaml().as_bytes());
        let done = RunRecord::read(&dir).ok().filter(|r| r.status == RunStatus::Complete && r.config_sha256 == sha && r.replay == replay);
        let outcome = match done {
            Some(r) => {
                log(&format!("[{}/{n}] {}: already complete for this config: skipped, nothing run", p.index + 1, p.dir));
                PointOutcome { point: p, status: "skipped".into(), error: None, reused: vec![], computed: vec![], failed_samples: r.n_failures() }
            }
            None => {
                let opts = RunOptions { mode, plots, config_path: Some(config_path), overrides: &sets };
                match pipeline::run_opts(&cfg, &dir, &opts) {
                    Ok(s) => {
                        let (reused, computed) = stages_of(&s.run);
                        log(&format!("[{}/{n}] {}: reused {}; computed {}", p.index + 1, p.dir, list(&reused), list(&computed)));
                        PointOutcome { point: p, status: "complete".into(), error: None, reused, computed, failed_samples: s.run.n_failures() }
                    }
                    Err(e) => {
                        log(&format!("[{}/{n}] {}: FAILED: {e}", p.index + 1, p.dir));
                        PointOutcome { point: p, status: "failed".into(), error: Some(failure_text(&e)), reused: vec![], computed: vec![], failed_samples: 0 }
                    }
                }
            }
        };
        file.points.push(outcome);
        // After every point, so an interrupted sweep leaves a true sweep.json behind.
        atomic::write_json(&out.join("sweep.json"), &file)?;
    }
    Ok(file)
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}

fn failure_text(e: &PipelineError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

impl SweepFile {
    pub fn failed_points(&self) -> usize {
        self.points.iter().filter(|p| p.status == "failed").count()
    }
    pub fn failed_samples(&self) -> usize {
        self.points.iter().map(|p| p.failed_samples).sum()
    }
    /// Where each point's run directory is.
    pub fn dirs(&self, out: &Path) -> Vec<PathBuf> {
        self.points.iter().map(|p| out.join(&p.point.dir)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cartesian_product_in_a_stable_order() {
        let a = parse_cli("retrieval.k=5,10,15").unwrap();
        let b = parse_cli("methods.0.prompt=zs,rag").unwrap();
        let p = expand(&[a, b]);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0].sets, vec!["retrieval.k=5", "methods.0.prompt=zs"]);
        assert_eq!(p[1].sets, vec!["retrieval.k=5", "methods.0.prompt=rag"]);
        assert_eq!(p[5].sets, vec!["retrieval.k=15", "methods.0.prompt=rag"]);
        assert_eq!(p[5].dir, "005_k-15_prompt-rag");
        assert!(matches!(parse_cli("retrieval.k"), Err(SweepError::Syntax { .. })));
        assert!(matches!(parse_cli("retrieval.k=5,,6"), Err(SweepError::Syntax { .. })));
        assert_eq!(expand(&[]).len(), 1, "no axes: the config itself");
    }

    #[test]
    fn yaml_block_zips_keys_of_one_axis() {
        let d = std::env::temp_dir().join(format!("georag-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("c.yaml");
        std::fs::write(&f, "name: x\nsweep:\n  - {retrieval.k: [5, 10]}\n  - {a.b: [x, y, z], a.c: [1, 2, 3]}\n").unwrap();
        let axes = parse_block(&f).unwrap();
        assert_eq!(axes[1].values, vec![vec!["x", "1"], vec!["y", "2"], vec!["z", "3"]]);
        let p = expand(&axes);
        assert_eq!(p.len(), 6);
        assert_eq!(p[4].sets, vec!["retrieval.k=10", "a.b=y", "a.c=2"]);
        std::fs::write(&f, "name: x\nsweep:\n  - {a.b: [x, y], a.c: [1]}\n").unwrap();
        let e = parse_block(&f).unwrap_err().to_string();
        assert!(e.contains("zipped") && e.contains("sweep[0]"), "{e}");
    }
}
