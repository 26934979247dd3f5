//! Loading a config: `include:` resolution, `--set` overrides, typed deserialisation with
//! errors that name the file, the key path and the closest valid names.

use super::Config;
use crate::util::suggest;
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

/// Error loading an experiment config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid YAML: {source}")]
    Yaml { path: PathBuf, source: serde_yaml::Error },
    #[error("{path}: `include` must be a file name or a list of file names")]
    IncludeType { path: PathBuf },
    #[error("{path}: include cycle through {again}")]
    IncludeCycle { path: PathBuf, again: PathBuf },
    #[error("--set {arg}: expected KEY.PATH=VALUE")]
    SetSyntax { arg: String },
    #[error("--set {arg}: `{segment}` is not a mapping key or list index here")]
    SetPath { arg: String, segment: String },
    #[error("{file}: at `{key}`: {message}")]
    Invalid { file: String, key: String, message: String },
}

/// Read a YAML file and resolve its `include:` entries (paths relative to the including file).
/// Included files are merged first, in order; the including file's keys override them; mappings
/// merge recursively, every other value is replaced.
pub fn load_value(path: &Path) -> Result<(Value, Vec<(PathBuf, Value)>), ConfigError> {
    let mut sources = Vec::new();
    let v = load_rec(path, &mut Vec::new(), &mut sources)?;
    Ok((v, sources))
}

fn load_rec(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    sources: &mut Vec<(PathBuf, Value)>,
) -> Result<Value, ConfigError> {
    let canon = path.canonicalize().map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
    if stack.contains(&canon) {
        return Err(ConfigError::IncludeCycle { path: stack.last().cloned().unwrap_or_default(), again: path.to_path_buf() });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
    let mut value: Value = if text.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Yaml { path: path.to_path_buf(), source })?
    };
    let includes = match &mut value {
        Value::Mapping(m) => m.remove("include"),
        _ => None,
    };
    let includes = include_list(includes, path)?;
    let me = sources.len();
    sources.push((path.to_path_buf(), Value::Null));
    stack.push(canon);
    let dir = path.parent().unwrap_or(Path::new("."));
    // `include:` inside a nested mapping (e.g. a method: `methods: [{include: methods/g3.yaml}]`)
    // merges that file under the mapping's own keys, relative to this file.
    if let Value::Mapping(m) = &mut value {
        for (_, child) in m.iter_mut() {
            resolve_nested(child, dir, path, stack, sources)?;
        }
    }
    sources[me].1 = value.clone();
    let mut merged = Value::Mapping(Mapping::new());
    for inc in includes {
        let base = load_rec(&dir.join(&inc), stack, sources)?;
        merge(&mut merged, base);
    }
    stack.pop();
    merge(&mut merged, value);
    Ok(merged)
}

fn include_list(includes: Option<Value>, path: &Path) -> Result<Vec<String>, ConfigError> {
    match includes {
        None => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Sequence(seq)) => seq
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ConfigError::IncludeType { path: path.to_path_buf() }),
            })
            .collect(),
        Some(_) => Err(ConfigError::IncludeType { path: path.to_path_buf() }),
    }
}

fn resolve_nested(
    v: &mut Value,
    dir: &Path,
    path: &Path,
    stack: &mut Vec<PathBuf>,
    sources: &mut Vec<(PathBuf, Value)>,
) -> Result<(), ConfigError> {
    match v {
        Value::Mapping(m) => {
            let inc = m.remove("include");
            for (_, child) in m.iter_mut() {
                resolve_nested(child, dir, path, stack, sources)?;
            }
            let list = include_list(inc, path)?;
            if !list.is_empty() {
                let mut merged = Value::Mapping(Mapping::new());
                for i in list {
                    let base = load_rec(&dir.join(&i), stack, sources)?;
                    merge(&mut merged, base);
                }
                let own = std::mem::replace(v, Value::Null);
                merge(&mut merged, own);
                *v = merged;
            }
        }
        Value::Sequence(items) => {
            for c in items.iter_mut() {
                resolve_nested(c, dir, path, stack, sources)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Deep-merge `over` into `base`. A mapping that names another component (a different `kind:`)
/// replaces the base mapping instead of merging into it, so `selector: {kind: medoid}` over an
/// included `selector: {kind: geo_verify, encoder: ...}` does not inherit `encoder`.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) if b.get("kind").is_some() && o.get("kind").is_some() && b.get("kind") != o.get("kind") => {
            *b = o;
        }
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Apply one `--set a.b.0.c=value` override. The value is parsed as a YAML scalar or flow value.
pub fn apply_set(root: &mut Value, arg: &str) -> Result<(), ConfigError> {
    let (key, raw) = arg.split_once('=').ok_or_else(|| ConfigError::SetSyntax { arg: arg.to_string() })?;
    if key.trim().is_empty() {
        return Err(ConfigError::SetSyntax { arg: arg.to_string() });
    }
    let value: Value = serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut cur = root;
    for seg in key.split('.') {
        let path_err = || ConfigError::SetPath { arg: arg.to_string(), segment: seg.to_string() };
        cur = match cur {
            Value::Mapping(m) => {
                if !m.contains_key(seg) {
                    m.insert(Value::String(seg.to_string()), Value::Null);
                }
                m.get_mut(seg).expect("inserted above")
            }
            Value::Sequence(s) => {
                let i: usize = seg.parse().map_err(|_| path_err())?;
                s.get_mut(i).ok_or_else(path_err)?
            }
            Value::Null => {
                *cur = Value::Mapping(Mapping::new());
                let Value::Mapping(m) = cur else { unreachable!() };
                m.insert(Value::String(seg.to_string()), Value::Null);
                m.get_mut(seg).expect("inserted above")
            }
            _ => return Err(path_err()),
        };
    }
    *cur = value;
    Ok(())
}

/// Load, include, override and type-check a config.
pub fn load(path: &Path, sets: &[String]) -> Result<Config, ConfigError> {
    let (mut value, sources) = load_value(path)?;
    // A `sweep:` block describes runs of this config (`georag run` expands it, see
    // `crate::sweep`); it is not part of any one run's config.
    if let Value::Mapping(m) = &mut value {
        m.remove("sweep");
    }
    for s in sets {
        apply_set(&mut value, s)?;
    }
    from_value(value, path, &sources, sets)
}

/// Deserialise a merged value, turning serde's messages into located, suggestive errors.
pub fn from_value(
    value: Value,
    path: &Path,
    sources: &[(PathBuf, Value)],
    sets: &[String],
) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize::<_, Config>(value).map_err(|e| {
        let key = e.path().to_string();
        let message = improve_message(&e.inner().to_string());
        let file = origin_of(&key, sources, sets).unwrap_or_else(|| path.display().to_string());
        ConfigError::Invalid { file, key, message }
    })
}

/// Which file (or `--set`) last defined the key path `a.b[0].c`, for error messages.
fn origin_of(key: &str, sources: &[(PathBuf, Value)], sets: &[String]) -> Option<String> {
    let dotted = key.replace('[', ".").replace(']', "");
    let segs: Vec<&str> = dotted.split('.').filter(|s| !s.is_empty() && *s != "?").collect();
    if segs.is_empty() {
        return None;
    }
    // The first non-matching deepest key in a serde path may be the unknown key itself; try the
    // full path, then its parents.
    for n in (1..=segs.len()).rev() {
        let prefix = segs[..n].join(".");
        if let Some(s) = sets.iter().rev().find(|s| s.split_once('=').is_some_and(|(k, _)| k == prefix)) {
            return Some(format!("--set {s}"));
        }
        // The root file is first in `sources` but overrides its includes, so search it first.
        for (p, v) in sources.iter() {
            if lookup(v, &segs[..n]).is_some() {
                return Some(p.display().to_string());
            }
        }
    }
    None
}

fn lookup<'a>(v: &'a Value, segs: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for s in segs {
        cur = match cur {
            Value::Mapping(m) => m.get(*s)?,
            Value::Sequence(q) => q.get(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Rewrite serde's "unknown field `x`, expected one of `a`, `b`" into a "did you mean" hint.
fn improve_message(msg: &str) -> String {
    for what in ["unknown field", "unknown variant"] {
        if let Some(rest) = msg.strip_prefix(&format!("{what} `")) {
            let Some((name, tail)) = rest.split_once('`') else { continue };
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let noun = if what == "unknown field" { "key" } else { "name" };
            return if expected.is_empty() {
                format!("unknown {noun} `{name}`")
            } else {
                format!("unknown {noun} `{name}`; {}", suggest::hint(name, &expected))
            };
        }
    }
    msg.to_string()
}
