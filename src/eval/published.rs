//! Published accuracy figures (`configs/references/published.yaml`): the reference rows of
//! paper-style tables.
//!
//! Invariant: figures are facts copied from their sources, never computed; every row names its
//! source, and the file lists each source's scoring convention so that a table can say that a
//! published row and a reproduced row may differ by convention alone.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole published-results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedFile {
    /// Thresholds (km) that every `acc` list follows, in order.
    pub thresholds_km: Vec<f64>,
    /// Results per dataset key (`im2gps3k`, `yfcc4k`, ...).
    pub datasets: BTreeMap<String, PublishedDataset>,
    /// The scoring convention of each source, as the source describes it.
    #[serde(default)]
    pub conventions: Vec<SourceConvention>,
}

/// Published results on one benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedDataset {
    /// Size of the image list the papers use.
    pub n_images: usize,
    #[serde(default)]
    pub results: Vec<PublishedResult>,
}

/// One published row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedResult {
    pub method: String,
    pub year: u32,
    /// `retrieval`, `rag-mllm`, `classification`, `hybrid`.
    pub kind: String,
    /// Accuracy in percent at each of the file's `thresholds_km`.
    pub acc: Vec<f64>,
    /// Where the figure was read.
    pub source: String,
}

/// A source's scoring convention, in its own words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConvention {
    pub source: String,
    pub distance: String,
    pub threshold: String,
    pub failures: String,
}

/// Error loading a published-results file.
#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: serde_path_to_error::Error<serde_yaml::Error> },
    #[error("{path}: dataset `{dataset}`, method `{method}`: {message}")]
    Invalid { path: PathBuf, dataset: String, method: String, message: String },
}

impl PublishedFile {
    /// Read and validate: one accuracy per threshold, each in [0, 100], non-decreasing.
    pub fn read(path: &Path) -> Result<Self, PublishedError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PublishedError::Io { path: path.to_path_buf(), source })?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let file: PublishedFile = serde_path_to_error::deserialize(de)
            .map_err(|source| PublishedError::Parse { path: path.to_path_buf(), source })?;
        file.validate(path)?;
        Ok(file)
    }

    fn validate(&self, path: &Path) -> Result<(), PublishedError> {
        for (dataset, d) in &self.datasets {
            for r in &d.results {
                let invalid = |message: String| PublishedError::Invalid {
                    path: path.to_path_buf(),
                    dataset: dataset.clone(),
                    method: r.method.clone(),
                    message,
                };
                if r.acc.len() != self.thresholds_km.len() {
                    return Err(invalid(format!(
                        "{} accuracies for {} thresholds",
                        r.acc.len(),
                        self.thresholds_km.len()
                    )));
                }
                if r.acc.iter().any(|a| !(0.0..=100.0).contains(a)) {
                    return Err(invalid("accuracy outside [0, 100]".into()));
                }
                if r.acc.windows(2).any(|w| w[1] < w[0]) {
                    return Err(invalid("accuracy decreases with the threshold".into()));
                }
            }
        }
        Ok(())
    }

    /// Published rows for a dataset key (case-insensitive), empty when unknown.
    pub fn results_for(&self, dataset: &str) -> &[PublishedResult] {
        self.datasets
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(dataset))
            .map(|(_, d)| d.results.as_slice())
            .unwrap_or(&[])
    }

    /// Published accuracy of `r` at threshold `t` km, if the file has that threshold.
    pub fn acc_at(&self, r: &PublishedResult, t: f64) -> Option<f64> {
        self.thresholds_km.iter().position(|x| *x == t).and_then(|i| r.acc.get(i).copied())
    }

    /// The convention line of the source a row was read from: the first convention entry whose
    /// source name starts the row's source (e.g. `G3` for "G3, NeurIPS 2024").
    pub fn convention_for(&self, r: &PublishedResult) -> Option<&SourceConvention> {
        let src = r.source.to_lowercase();
        self.conventions
            .iter()
            .filter(|c| {
                let key = c.source.split(" (").next().unwrap_or(&c.source).to_lowercase();
                src.starts_with(&key)
            })
            .max_by_key(|c| c.source.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "thresholds_km: [1, 25]\ndatasets:\n  im2gps3k:\n    n_images: 2997\n    results:\n      - {method: G3, year: 2024, kind: rag-mllm, acc: [16.7, 40.9], source: \"G3, NeurIPS 2024\"}\nconventions:\n  - {source: G3, distance: geodesic, threshold: \"<\", failures: \"(0,0)\"}\n";

    #[test]
    fn parses_and_finds_conventions() {
        let dir = std::env::temp_dir().join(format!("georag-pub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.yaml");
        std::fs::write(&p, YAML).unwrap();
        let f = PublishedFile::read(&p).unwrap();
        let r = &f.results_for("IM2GPS3K")[0];
        assert_eq!(f.acc_at(r, 25.0), Some(40.9));
        assert_eq!(f.acc_at(r, 200.0), None);
        assert_eq!(f.convention_for(r).unwrap().threshold, "<");
        std::fs::write(&p, YAML.replace("[16.7, 40.9]", "[16.7]")).unwrap();
        let e = PublishedFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("1 accuracies for 2 thresholds") && e.contains("G3"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
