//! The place texts of G3's geo-alignment: one string per database photo, built from its
//! metadata (MP16-Pro's `city`, `state`, `country` columns, kept by `georag prepare` as
//! `metadata.columns.extra`), embedded with the CLIP text tower ([`crate::embed::clip_text`]).
//!
//! `align.text` is either the path of an embedding store computed elsewhere (same ids, same
//! order as the database), or a map:
//!
//! ```yaml
//! text: {clip: weights/clip-vit-large-patch14, template: "A street view photo taken in {place}.", fields: [city, state, country]}
//! ```
//!
//! `{place}` is the row's non-empty `fields`, in order, joined by ", " (G3's
//! "a street view photo taken in city, state, country" with its missing parts skipped). A row
//! with none of them has no text: status `missing` in the text store, with the reason, and it is
//! left out of training (counted in the training log). The store is cached under
//! `<cache>/text-embeddings/<fingerprint of tower, template, fields>-<dataset fingerprint>`, so a
//! second `align train` reuses it.

use super::AlignError;
use crate::embed::clip_text::ClipTextEncoder;
use crate::embed::{self, Embeddings};
use crate::ingest::shard::read_meta;
use crate::ingest::Dataset;
use crate::record::Status;
use crate::util::fingerprint::Fingerprint;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_TEMPLATE: &str = "A street view photo taken in {place}.";

fn default_template() -> String {
    DEFAULT_TEMPLATE.to_string()
}
fn default_fields() -> Vec<String> {
    ["city", "state", "country"].map(String::from).to_vec()
}
fn default_batch() -> usize {
    256
}

/// Place texts embedded by georag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceText {
    /// A CLIP snapshot directory with the text tower and `tokenizer.json`.
    pub clip: PathBuf,
    #[serde(default = "default_template")]
    pub template: String,
    /// Metadata keys whose non-empty values make `{place}`.
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

/// `align.text`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TextSource {
    /// An embedding store computed elsewhere.
    Store(PathBuf),
    Clip(PlaceText),
}

impl<'de> Deserialize<'de> for TextSource {
    /// A string is a store path; a map is a [`PlaceText`] with its own field errors (an untagged
    /// enum would only say "did not match any variant").
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TextSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the path of a text embedding store, or {clip: DIR, template: ..., fields: [...]}")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TextSource, E> {
                Ok(TextSource::Store(PathBuf::from(s)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<TextSource, A::Error> {
                PlaceText::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(TextSource::Clip)
            }
        }
        d.deserialize_any(V)
    }
}

impl PlaceText {
    /// The text of a row with metadata JSON `meta`, or why it has none.
    pub fn text(&self, meta: Option<&str>) -> Result<String, String> {
        let obj: serde_json::Map<String, serde_json::Value> = match meta {
            None => serde_json::Map::new(),
            Some(m) => serde_json::from_str(m).map_err(|e| format!("metadata is not a JSON object: {e}"))?,
        };
        let parts: Vec<String> = self
            .fields
            .iter()
            .filter_map(|f| match obj.get(f) {
                Some(serde_json::Value::String(s)) => Some(s.trim().to_string()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            // pandas writes missing values as "nan" in CSVs that went through it.
            .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("nan"))
            .collect();
        if parts.is_empty() {
            return Err(format!("no place text: none of {} in the row's metadata", self.fields.join(", ")));
        }
        Ok(self.template.replace("{place}", &parts.join(", ")))
    }

    fn fingerprint(&self, tower: &str) -> String {
        Fingerprint::new("align-text/1").field(tower).field(&self.template).json(&self.fields).finish()
    }
}

/// What [`embed_place_texts`] did.
pub struct TextInfo {
    pub dir: PathBuf,
    pub reused: bool,
    pub missing: usize,
    pub distinct: usize,
    pub fingerprint: String,
}

/// The place-text embeddings of `ds` (dataset order), from the cache or computed now.
pub fn embed_place_texts(ds: &Dataset, spec: &PlaceText, cache_dir: &Path) -> Result<(Embeddings, TextInfo), AlignError> {
    if !spec.template.contains("{place}") {
        return Err(AlignError::Config { message: format!("align.text.template {:?} has no `{{place}}`", spec.template) });
    }
    let (tower_fp, _) = embed::clip_text::identity(&spec.clip)?;
    let fp = spec.fingerprint(&tower_fp);
    let dir = cache_dir.join("text-embeddings").join(format!("{fp}-{}", ds.manifest.fingerprint));
    if dir.join("done.json").is_file() {
        let emb = embed::read_store(&dir)?;
        let missing = emb.n_failed();
        return Ok((emb, TextInfo { dir, reused: true, missing, distinct: 0, fingerprint: fp }));
    }
    let enc = ClipTextEncoder::load(&spec.clip)?;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| AlignError::Config { message: format!("{}: {e}", tmp.display()) })?;
    let mut distinct = std::collections::HashSet::new();
    let mut missing = 0;
    for (si, info) in ds.manifest.shards.iter().enumerate() {
        let path = ds.dir.join(&info.file);
        let rows = read_meta(&path).map_err(crate::embed::EncodeError::from)?;
        let texts: Vec<Result<String, String>> = rows.iter().map(|r| spec.text(r.3.as_deref())).collect();
        let ok: Vec<String> = texts.iter().filter_map(|t| t.as_ref().ok().cloned()).collect();
        distinct.extend(ok.iter().cloned());
        let vecs = enc.encode_texts(&ok, spec.batch_size)?;
        let d = enc.dim();
        let mut it = vecs.chunks(d.max(1));
        let results = texts
            .into_iter()
            .map(|t| match t {
                Ok(_) => Ok(it.next().expect("one vector per text").to_vec()),
                Err(e) => {
                    missing += 1;
                    Err((Status::Missing, e))
                }
            })
            .collect();
        let keys: Vec<(&str, f64, f64)> = rows.iter().map(|r| (r.0.as_str(), r.1, r.2)).collect();
        let batch = embed::store_batch(&keys, results, d);
        crate::util::pq::write(&tmp.join(format!("emb-{si:05}.parquet")), embed::store_schema(d), &[batch], &[]).map_err(crate::embed::EncodeError::from)?;
    }
    let mut emb = embed::read_store_shards(&tmp, enc.dim())?;
    embed::write_done(&tmp, enc.name(), &fp, ds, &emb)?;
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::rename(&tmp, &dir).map_err(|e| AlignError::Config { message: format!("{} -> {}: {e}", tmp.display(), dir.display()) })?;
    emb.dir = dir.clone();
    Ok((emb, TextInfo { dir, reused: false, missing, distinct: distinct.len(), fingerprint: fp }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fields: &[&str]) -> PlaceText {
        PlaceText { clip: PathBuf::new(), template: default_template(), fields: fields.iter().map(|s| s.to_string()).collect(), batch_size: 8 }
    }

    #[test]
    fn place_text_skips_missing_parts_in_field_order() {
        let s = spec(&["city", "state", "country"]);
        let t = |m: &str| s.text(Some(m));
        assert_eq!(t(r#"{"city":"Paris","state":"Ile-de-France","country":"France"}"#).unwrap(), "A street view photo taken in Paris, Ile-de-France, France.");
        assert_eq!(t(r#"{"country":"France","city":" Paris ","state":""}"#).unwrap(), "A street view photo taken in Paris, France.");
        assert_eq!(t(r#"{"city":"nan","state":null,"country":"Japan"}"#).unwrap(), "A street view photo taken in Japan.");
        assert!(t(r#"{"city":"NaN","other":"x"}"#).unwrap_err().contains("none of city, state, country"));
        assert!(s.text(None).is_err());
        assert!(t("[1,2]").unwrap_err().contains("not a JSON object"));
    }

    #[test]
    fn text_source_is_a_path_or_a_map_with_field_errors() {
        let p: TextSource = serde_yaml::from_str("stores/text").unwrap();
        assert_eq!(p, TextSource::Store(PathBuf::from("stores/text")));
        let c: TextSource = serde_yaml::from_str("{clip: w/clip, fields: [city]}").unwrap();
        assert_eq!(c, TextSource::Clip(PlaceText { clip: "w/clip".into(), fields: vec!["city".into()], ..spec(&[]) }.with_batch(256)));
        let e = serde_yaml::from_str::<TextSource>("{clip: w/clip, feilds: [city]}").unwrap_err().to_string();
        assert!(e.contains("feilds") && e.contains("fields"), "{e}");
    }

    impl PlaceText {
        fn with_batch(mut self, b: usize) -> Self {
            self.batch_size = b;
            self
        }
    }
}
