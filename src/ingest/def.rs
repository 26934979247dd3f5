//! Dataset definitions (`datasets/*.yaml`): name, expected row count, metadata file and column
//! mapping, checksum of the canonical metadata file, where images come from, provenance, and
//! variants (e.g. IM2GPS3k's 3000-row list). The definitions shipped with georag are embedded in
//! the binary; any other definition file can be given by path.

use crate::util::suggest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Definitions shipped in `datasets/`, embedded at build time.
pub const BUILTIN: &[(&str, &str)] = &[
    ("im2gps", include_str!("../../datasets/im2gps.yaml")),
    ("im2gps3k", include_str!("../../datasets/im2gps3k.yaml")),
    ("yfcc4k", include_str!("../../datasets/yfcc4k.yaml")),
    ("yfcc26k", include_str!("../../datasets/yfcc26k.yaml")),
    ("mp16", include_str!("../../datasets/mp16.yaml")),
    ("mp16_pro", include_str!("../../datasets/mp16_pro.yaml")),
    ("osv5m", include_str!("../../datasets/osv5m.yaml")),
    ("folder", include_str!("../../datasets/folder.yaml")),
];

/// A dataset definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDef {
    pub name: String,
    /// One line: where the data comes from.
    pub provenance: String,
    /// Rows the canonical metadata file has (`null` when it varies, e.g. filtered databases).
    #[serde(default)]
    pub expected_rows: Option<usize>,
    /// The metadata file; absent for image folders whose photos carry EXIF GPS.
    #[serde(default)]
    pub metadata: Option<MetadataDef>,
    #[serde(default)]
    pub images: ImagesDef,
    #[serde(default)]
    pub variants: BTreeMap<String, VariantDef>,
}

/// Metadata file and columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataDef {
    /// File name of the canonical metadata file (looked up in `--metadata DIR`).
    pub file: String,
    /// sha256 of the canonical file, when known; a mismatch is reported, not fatal.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub columns: ColumnsDef,
}

/// Column mapping: a header name, or `#N` for the 0-based position (positional headers).
/// Unset id/lat/lon columns are detected among common spellings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsDef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub lat: Option<String>,
    #[serde(default)]
    pub lon: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    /// Further columns copied into each row's `meta` JSON.
    #[serde(default)]
    pub extra: Vec<String>,
}

/// Where images are found relative to the `--images` root.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesDef {
    /// Path of a row's image relative to the image root (directory, tar or zip): `{id}` is
    /// replaced by the row id.
    #[serde(default = "default_template")]
    pub path: String,
    /// Store image bytes in the shards (`inline`) or a path plus sha256 (`reference`).
    #[serde(default)]
    pub store: StoreMode,
}

impl Default for ImagesDef {
    fn default() -> Self {
        ImagesDef { path: default_template(), store: StoreMode::Inline }
    }
}

fn default_template() -> String {
    "{id}".into()
}

/// How image bytes are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreMode {
    #[default]
    Inline,
    Reference,
}

/// A variant overrides the metadata (and the expected count) of its dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantDef {
    pub provenance: String,
    #[serde(default)]
    pub expected_rows: Option<usize>,
    pub metadata: MetadataDef,
}

/// Error loading a definition.
#[derive(Debug, thiserror::Error)]
pub enum DefError {
    #[error("reading dataset definition {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("dataset definition {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("unknown dataset `{name}`: not a file and not a built-in definition; {hint}")]
    Unknown { name: String, hint: String },
    #[error("dataset `{name}` has no variant `{variant}`; {hint}")]
    UnknownVariant { name: String, variant: String, hint: String },
}

impl DatasetDef {
    /// Parse definition text, naming `origin` in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, DefError> {
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| DefError::Invalid { path: origin.to_string(), message: format!("at `{}`: {}", e.path(), e.inner()) })
    }

    /// Load a definition from a path, or a built-in one by name (`im2gps3k`).
    pub fn load(name_or_path: &str) -> Result<Self, DefError> {
        let p = Path::new(name_or_path);
        if p.is_file() {
            let text = std::fs::read_to_string(p).map_err(|source| DefError::Io { path: name_or_path.into(), source })?;
            return Self::parse(&text, name_or_path);
        }
        match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Self::parse(text, &format!("datasets/{n}.yaml (built in)")),
            None => {
                let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                Err(DefError::Unknown { name: name_or_path.into(), hint: suggest::hint(name_or_path, &names) })
            }
        }
    }

    /// This definition with a variant applied.
    pub fn with_variant(mut self, variant: &str) -> Result<Self, DefError> {
        let Some(v) = self.variants.get(variant).cloned() else {
            let names: Vec<&str> = self.variants.keys().map(String::as_str).collect();
            return Err(DefError::UnknownVariant { name: self.name.clone(), variant: variant.into(), hint: suggest::hint(variant, &names) });
        };
        self.name = format!("{}@{variant}", self.name);
        self.provenance = format!("{} ({})", self.provenance, v.provenance);
        self.expected_rows = v.expected_rows;
        self.metadata = Some(v.metadata);
        self.variants.clear();
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_definitions_parse_and_variants_apply() {
        for (name, text) in BUILTIN {
            let d = DatasetDef::parse(text, name).unwrap();
            assert_eq!(&d.name, name);
        }
        let d = DatasetDef::load("im2gps3k").unwrap().with_variant("3000").unwrap();
        assert_eq!(d.expected_rows, Some(3000));
        assert_eq!(d.metadata.unwrap().file, "im2gps3k_3000.csv");
        let e = DatasetDef::load("im2gps3").unwrap_err().to_string();
        assert!(e.contains("did you mean `im2gps3k`"), "{e}");
        let e = DatasetDef::load("yfcc4k").unwrap().with_variant("rw").unwrap_err().to_string();
        assert!(e.contains("`raw`"), "{e}");
    }
}
