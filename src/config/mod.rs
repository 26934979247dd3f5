//! Experiment configuration: one YAML file (with `include:` and `--set` overrides) describing the
//! query set, the database, the encoder, the index, retrieval, methods, the metric convention and
//! the report.
//!
//! Invariants: unknown keys and unknown component names are errors naming the file, the key path
//! and the closest valid names; the fully resolved config is what runs and is written into every
//! run directory; each stage's fingerprint is computed from its resolved section.

mod load;

pub use load::{ConfigError, apply_set, load, load_value, merge};

use crate::embed::EncoderSpec;
use crate::generate::GeneratorSpec;
use crate::index::IndexSpec;
use crate::ingest::DatasetSpec;
use crate::metrics::Convention;
use crate::retrieval::RetrievalSpec;
use crate::select::MethodSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A whole experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Experiment name, shown in reports.
    pub name: String,
    /// Where datasets, embeddings and indexes are cached (keyed by fingerprints).
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// The geotagged retrieval database.
    pub database: DatasetSpec,
    /// The benchmark queries.
    pub queries: DatasetSpec,
    pub encoder: EncoderSpec,
    #[serde(default)]
    pub index: IndexSpec,
    #[serde(default)]
    pub retrieval: RetrievalSpec,
    /// Methods evaluated on the queries, each producing one row of the table.
    pub methods: Vec<MethodSpec>,
    /// The multimodal LLM that MLLM methods ask (`kind: openai_compatible` or `replay`).
    #[serde(default)]
    pub generator: Option<GeneratorSpec>,
    /// Scoring convention.
    #[serde(default)]
    pub metrics: Convention,
    #[serde(default)]
    pub report: ReportSpec,
    /// Geo-alignment heads (`georag align train CONFIG`) trained on the database's embeddings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align: Option<crate::align::AlignSpec>,
}

/// Report options.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSpec {
    /// Title of `report.html`; defaults to the experiment name.
    pub title: Option<String>,
}

impl Default for ReportSpec {
    fn default() -> Self {
        ReportSpec { title: None }
    }
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("results/cache")
}

impl Config {
    /// The resolved config as YAML, as written into run directories.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serialises")
    }

    /// The MLLM methods, in config order.
    pub fn mllm_methods(&self) -> impl Iterator<Item = &crate::pipeline::mllm::MllmSpec> {
        self.methods.iter().filter_map(|m| match m {
            MethodSpec::Mllm(s) => Some(&**s),
            _ => None,
        })
    }

    /// Method names must be unique: they key rows and files; a `gallery` names one tower, and
    /// GeoCLIP's needs the GeoCLIP encoder.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.methods.iter().enumerate() {
            if !seen.insert(m.name()) {
                return Err(ConfigError::Invalid {
                    file: "config".into(),
                    key: format!("methods[{i}]"),
                    message: format!("duplicate method name `{}`; give each method a distinct `name`", m.name()),
                });
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if let crate::select::MethodSpec::Gallery { model, location, .. } = m {
                let bad = |message: String| Err(ConfigError::Invalid { file: "config".into(), key: format!("methods[{i}]"), message });
                match (model, location) {
                    (Some(_), Some(_)) | (None, None) => {
                        return bad("a `gallery` method takes either `model` (a `georag align train` output) or `location` (GeoCLIP's weights), exactly one".into());
                    }
                    (None, Some(_)) if self.encoder.kind() != "geoclip" => {
                        return bad(format!(
                            "a `gallery` with GeoCLIP's `location` tower needs GeoCLIP image features: `encoder: {{kind: geoclip, dir: CLIP_VIT_L_14, weights: GEOCLIP_WEIGHTS}}` (the encoder is `{}`)",
                            self.encoder.kind()
                        ));
                    }
                    _ => {}
                }
            }
        }
        if self.generator.is_none() && self.mllm_methods().next().is_some() {
            return Err(ConfigError::Invalid {
                file: "config".into(),
                key: "generator".into(),
                message: "MLLM methods need a `generator:` (kind: openai_compatible or replay)".into(),
            });
        }
        if self.methods.is_empty() {
            return Err(ConfigError::Invalid { file: "config".into(), key: "methods".into(), message: "no methods to evaluate".into() });
        }
        Ok(())
    }
}
