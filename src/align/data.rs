//! The training set of `georag align train CONFIG`: the experiment's database embedded with its
//! encoder (the embedding store `georag run` writes and reuses), the database GPS, and optionally
//! a store of place-text embeddings with the same ids.

use super::train::TrainData;
use super::text::TextSource;
use super::{AlignError, AlignSpec};
use crate::config::Config;
use crate::embed::{self, EmbedOptions};
use crate::record::{LatLon, Status};
use crate::util::fingerprint::Fingerprint;
use std::path::PathBuf;

/// Where the rows came from.
pub struct DataInfo {
    pub store: PathBuf,
    pub rows: usize,
    /// Rows left out: their image failed to decode, or (with place texts) they have no text.
    pub skipped: usize,
    /// Of `skipped`, the rows whose image was fine but which have no place text.
    pub skipped_text: usize,
    /// The place texts georag embedded (`align.text` with a CLIP tower).
    pub text: Option<super::text::TextInfo>,
    pub encoder: String,
}

/// Materialise and embed the database (reusing the cache), keep the `ok` rows.
pub fn from_config(cfg: &Config, spec: &AlignSpec) -> Result<(TrainData, DataInfo), AlignError> {
    let (ds, _) = crate::ingest::materialize(&cfg.database, &cfg.cache_dir)?;
    // A config whose encoder is `aligned` (G3's retrieval over the heads this command trains)
    // trains on its base encoder's embeddings: the heads cannot be their own input.
    let enc_spec = cfg.encoder.heads_input();
    let encoder = embed::build(enc_spec)?;
    let opts = EmbedOptions { batch_size: enc_spec.batch_size(), ..Default::default() };
    let (emb, _) = embed::embed_dataset(&ds, encoder.as_ref(), &cfg.cache_dir, &opts, "database (align)")?;
    let mut text_fp = None;
    let mut text_info = None;
    let text = match spec.text() {
        Some(TextSource::Store(dir)) => {
            let t = embed::read_store(dir)?;
            if t.ids != emb.ids {
                return Err(AlignError::Config {
                    message: format!("text store {}: its {} ids are not the database's {} ids in the same order", dir.display(), t.len(), emb.len()),
                });
            }
            text_fp = Some(dir.to_string_lossy().into_owned());
            Some(t)
        }
        Some(TextSource::Clip(p)) => {
            let (t, info) = super::text::embed_place_texts(&ds, p, &cfg.cache_dir)?;
            text_fp = Some(info.fingerprint.clone());
            text_info = Some(info);
            Some(t)
        }
        None => None,
    };
    let skipped_text = text.as_ref().map_or(0, |t| (0..emb.len()).filter(|&i| emb.status[i] == Status::Ok && t.status[i] != Status::Ok).count());
    let keep: Vec<usize> = (0..emb.len()).filter(|&i| emb.status[i] == Status::Ok && text.as_ref().is_none_or(|t| t.status[i] == Status::Ok)).collect();
    let mut image = Vec::with_capacity(keep.len() * emb.dim);
    for &i in &keep {
        image.extend_from_slice(emb.row(i));
    }
    let coords = keep.iter().map(|&i| LatLon { lat: emb.lat[i], lon: emb.lon[i] }).collect();
    let mut fp = Fingerprint::new("align-data/1");
    fp.field(encoder.fingerprint()).field(&ds.manifest.fingerprint);
    let text = text.map(|t| {
        fp.field(text_fp.as_deref().unwrap_or_default());
        let mut v = Vec::with_capacity(keep.len() * t.dim);
        for &i in &keep {
            v.extend_from_slice(t.row(i));
        }
        (v, t.dim)
    });
    let info = DataInfo { store: emb.dir.clone(), rows: keep.len(), skipped: emb.len() - keep.len(), skipped_text, text: text_info, encoder: encoder.name().to_string() };
    Ok((TrainData { image_dim: emb.dim, image, coords, text, fingerprint: fp.finish() }, info))
}

/// The default output directory: `<cache>/align/<training fingerprint>`.
pub fn default_out(cfg: &Config, spec: &AlignSpec, data: &TrainData) -> PathBuf {
    cfg.cache_dir.join("align").join(super::train::training_fingerprint(spec, data))
}
