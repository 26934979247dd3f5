//! `georag validate CONFIG`: check everything a config needs locally before any work starts,
//! and list every missing piece at once, each with the command that would provide it.
//!
//! What is checked: prepared dataset directories (`kind: shards`, their `manifest.json`), model
//! snapshot directories of every encoder anywhere in the config (the run's encoder and those of
//! selectors such as `geo_verify`: `config.json`; GeoCLIP's `weights` folder), other files the
//! config names (`retrieval.exclude`, prompt files, `location_weights`), the alignment model
//! directories of `aligned` encoders, `gallery` methods and `geo_verify` selectors
//! (`model.json`, [`crate::align::model_refs`]), a `gallery` method's GeoCLIP `location` tower
//! and its coordinates file, and the API-key
//! variable of the generator. Endpoints are not contacted (no network from `validate`): the
//! report says which ones the run will need.

use crate::config::Config;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One missing piece.
#[derive(Clone, Debug, PartialEq)]
pub struct Missing {
    /// Where in the config (`database.dir`, `methods.2.selector.encoder.weights`).
    pub key: String,
    pub path: Option<PathBuf>,
    pub what: String,
    /// The command (or step) that provides it.
    pub fix: String,
}

/// What `validate` found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Validation {
    pub missing: Vec<Missing>,
    /// Facts that cannot be checked offline (endpoints the run will contact).
    pub notes: Vec<String>,
    /// Pieces checked and present.
    pub present: Vec<String>,
}

/// Hugging Face repository of a snapshot directory's usual name, for the fix line.
fn hf_repo(dir: &Path) -> String {
    let n = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let lower = n.to_lowercase();
    if lower.starts_with("clip-vit") {
        format!("openai/{n}")
    } else if lower.starts_with("siglip") {
        format!("google/{n}")
    } else if lower == "streetclip" {
        "geolocal/StreetCLIP".into()
    } else {
        "<org>/<model>".into()
    }
}

fn dataset_fix(dir: &Path) -> String {
    let n = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let def = crate::ingest::def::BUILTIN.iter().map(|(n, _)| *n).find(|d| n == *d || n.starts_with(&format!("{d}-"))).unwrap_or("<definition>");
    format!("georag prepare {def} --metadata METADATA.csv --images IMAGES --out {} (see `georag datasets list`)", dir.display())
}

/// Where the loader would find the geoclip package's weight `file` under `dir`, or a path that
/// does not exist.
fn geoclip_file(dir: &Path, file: &str) -> PathBuf {
    crate::embed::geoclip::find_file(dir, "weights", file).unwrap_or_else(|_| dir.join(file))
}

fn walk(key: &str, v: &Value, out: &mut Validation) {
    let child = |k: &str| if key.is_empty() { k.to_string() } else { format!("{key}.{k}") };
    match v {
        Value::Object(m) => {
            let kind = m.get("kind").and_then(Value::as_str);
            let dir = m.get("dir").and_then(Value::as_str).map(PathBuf::from);
            match (kind, &dir) {
                (Some("shards"), Some(d)) => check(out, &child("dir"), d, &d.join("manifest.json"), "a prepared dataset (manifest.json)", dataset_fix(d)),
                (Some("clip" | "siglip" | "geoclip"), Some(d)) => check(
                    out,
                    &child("dir"),
                    d,
                    &d.join("config.json"),
                    "a local Hugging Face model snapshot (config.json + weights)",
                    format!("huggingface-cli download {} --local-dir {} (on a machine with access; georag never downloads)", hf_repo(d), d.display()),
                ),
                _ => {}
            }
            if kind == Some("geoclip")
                && let Some(w) = m.get("weights").and_then(Value::as_str).map(PathBuf::from)
            {
                // Any layout the loader accepts (the weights folder, geoclip/model, the wheel).
                let probe = geoclip_file(&w, crate::embed::geoclip::IMAGE_MLP_WEIGHTS);
                check(
                    out,
                    &child("weights"),
                    &w,
                    &probe,
                    "the geoclip package's weights folder",
                    format!("scripts/fetch-geoclip.sh (unpacks the geoclip wheel into ~/.cache/georag/geoclip), then point `{}` at ~/.cache/georag/geoclip/geoclip/model/weights", child("weights")),
                );
            }
            if kind == Some("gallery") {
                if let Some(l) = m.get("location").and_then(Value::as_str).map(PathBuf::from) {
                    let probe = geoclip_file(&l, crate::embed::geoclip::LOCATION_WEIGHTS);
                    check(out, &child("location"), &l, &probe, "GeoCLIP's location encoder (the geoclip package's weights)", "scripts/fetch-geoclip.sh (unpacks the geoclip wheel into ~/.cache/georag/geoclip), then point it at ~/.cache/georag/geoclip/geoclip/model".into());
                }
                if let Some(g) = m.get("gallery").and_then(Value::as_str).map(PathBuf::from) {
                    let probe = crate::align::gallery::gallery_file(&g).unwrap_or_else(|_| g.join("gps_gallery").join(crate::embed::geoclip::GALLERY));
                    check(out, &child("gallery"), &g, &probe, "the GPS gallery (a lat/lon CSV, or the geoclip package's folder with gps_gallery/coordinates_100K.csv)", "scripts/fetch-geoclip.sh (GeoCLIP's 100K gallery is in the wheel), or write a CSV with LAT,LON columns".into());
                }
            }
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("exclude" | "location_weights", Value::String(p)) => {
                        let p = PathBuf::from(p);
                        let fix = if k == "exclude" {
                            "georag prepare QUERIES ... --against DATABASE_DIR --leak-km 1 (writes leakage.csv into the query dataset)".to_string()
                        } else {
                            "scripts/fetch-geoclip.sh (the location encoder's .pth is in the wheel)".to_string()
                        };
                        check(out, &child(k), &p, &p, "a file the config names", fix);
                    }
                    ("similar" | "dissimilar", Value::String(p)) if p.ends_with(".npy") => {
                        let p = PathBuf::from(p);
                        check(out, &child(k), &p, &p, "a neighbour array (int64 .npy of database row numbers)", "G3's released I_g3_*.npy, or `georag retrieve CONFIG --export-npy --out DIR`".into());
                    }
                    ("geoclip_init", Value::String(p)) => {
                        let p = PathBuf::from(p);
                        let probe = geoclip_file(&p, crate::embed::geoclip::LOCATION_WEIGHTS);
                        check(out, &child(k), &p, &probe, "GeoCLIP's location encoder weights (the GPS tower's initialisation)", "scripts/fetch-geoclip.sh (unpacks the geoclip wheel into ~/.cache/georag/geoclip), then point it at ~/.cache/georag/geoclip/geoclip/model/weights".into());
                    }
                    ("prompt", Value::String(p)) if p.ends_with(".yaml") || p.contains('/') => {
                        let p = PathBuf::from(p);
                        check(out, &child(k), &p, &p, "a prompt template file", "write it (see configs/prompts/ for the format) or use a built-in prompt name".into());
                    }
                    _ => walk(&child(k), x, out),
                }
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| walk(&child(&i.to_string()), x, out)),
        _ => {}
    }
}

fn check(out: &mut Validation, key: &str, shown: &Path, probe: &Path, what: &str, fix: String) {
    if probe.exists() {
        out.present.push(format!("{key}: {}", shown.display()));
    } else {
        out.missing.push(Missing { key: key.into(), path: Some(shown.to_path_buf()), what: what.into(), fix });
    }
}

/// Check `cfg` (the resolved config) against the local machine.
pub fn validate(cfg: &Config) -> Validation {
    let mut out = Validation::default();
    let v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    walk("", &v, &mut out);
    for (key, dir) in crate::align::model_refs(&v) {
        let fix = if cfg.align.is_some() {
            format!("georag align train CONFIG --out {} (CONFIG = this file; its `align:` section says what to train)", dir.display())
        } else {
            format!("georag align train ALIGN_CONFIG --out {} (ALIGN_CONFIG: a config with an `align:` section and this database and encoder)", dir.display())
        };
        check(&mut out, &key, &dir, &dir.join("model.json"), "a trained alignment model (`georag align train` output: model.json and its weights)", fix);
    }
    match cfg.align.as_ref().and_then(|a| a.text()) {
        Some(crate::align::text::TextSource::Clip(t)) => check(
            &mut out,
            "align.text.clip",
            &t.clip,
            &t.clip.join("tokenizer.json"),
            "a local CLIP snapshot with its text tower and tokenizer.json",
            format!("huggingface-cli download {} --local-dir {} (on a machine with access; georag never downloads)", hf_repo(&t.clip), t.clip.display()),
        ),
        Some(crate::align::text::TextSource::Store(d)) => check(
            &mut out,
            "align.text",
            d,
            &d.join("done.json"),
            "a complete embedding store of the database's place texts (done.json)",
            "write the store there (same ids and order as the database), or give `align.text: {clip: CLIP_DIR}` so that georag embeds the texts".into(),
        ),
        None => {}
    }
    if let Some(g) = v.get("generator").filter(|g| !g.is_null()) {
        if let Some(var) = g.get("api_key_env").and_then(Value::as_str)
            && std::env::var_os(var).is_none_or(|x| x.is_empty())
        {
            out.missing.push(Missing {
                key: "generator.api_key_env".into(),
                path: None,
                what: format!("the environment variable {var} (the API key)"),
                fix: format!("export {var}=... before `georag run`"),
            });
        }
        // As the client serves them: `base_url` first, then every `base_urls` entry.
        let mut urls: Vec<String> = g.get("base_url").and_then(Value::as_str).map(str::to_string).into_iter().collect();
        if let Some(Value::Array(a)) = g.get("base_urls") {
            urls.extend(a.iter().filter_map(|u| u.as_str().map(str::to_string)));
        }
        if !urls.is_empty() {
            out.notes.push(format!(
                "the run sends MLLM requests to {} (not contacted by validate; start the server first, e.g. scripts/vllm/serve.sh, or run with --replay from a recorded response store)",
                urls.join(", ")
            ));
        }
    }
    out
}

impl Validation {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
    }

    pub fn render(&self, config: &str) -> String {
        let mut s = String::new();
        for m in &self.missing {
            let p = m.path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default();
            s.push_str(&format!("MISSING {}:{p}: {}\n    provide it with: {}\n", m.key, m.what, m.fix));
        }
        for n in &self.notes {
            s.push_str(&format!("NOTE {n}\n"));
        }
        s.push_str(&format!(
            "{config}: {} missing, {} present{}\n",
            self.missing.len(),
            self.present.len(),
            if self.ok() { "; ready to run" } else { "; nothing was run" }
        ));
        s
    }
}
