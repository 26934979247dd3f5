//! Geo-alignment (G3, NeurIPS 2024; TransGeoCLIP): heads trained on cached, frozen image (and
//! text) embeddings so that an image, its GPS and its place text share one space.
//!
//! - [`layers`]: seeded parameters, MLP heads, Web Mercator / Equal Earth projections, the RFF
//!   location tower (three capsules, sigma 2^0, 2^4, 2^8; optionally GeoCLIP's weights) and
//!   TransGeoCLIP's location-attention Transformer layer;
//! - [`loss`]: CLIP's symmetric contrastive loss with a learnable temperature, the triplet loss
//!   with hardest in-batch negatives;
//! - [`optim`]: AdamW (candle_nn's update) with a state that checkpoints can save;
//! - [`model`]: the model and its loss;
//! - [`train`]: `georag align train`: seeded data order, per-step loss, held-out image->GPS
//!   accuracy each epoch, atomic safetensors checkpoints, resume.
//!
//! Invariants: a seed fixes the initial weights and the data order bit for bit; a checkpoint
//! directory holds `state.json` naming its safetensors file and that file's sha256, written after
//! it, so a crash never leaves a state that points at a partial file; resuming from a checkpoint
//! continues the same loss curve; a checkpoint is only resumed by a run with the same training
//! fingerprint (data, encoder, every setting but `epochs`); `model.json` (written last) records
//! the trained model's fingerprint, which every run that uses the model carries.

pub mod data;
pub mod gallery;
pub mod fused;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;
pub mod text;
pub mod train;

pub use layers::{LocationSpec, Projection, TransformerSpec};
pub use model::AlignModel;
pub use train::{TrainData, TrainOptions, TrainReport};

/// Every alignment model directory a (resolved, as JSON) config names, with the key that names
/// it (`methods.1.selector.aligned`), in config order: an `aligned` encoder's or a `gallery`
/// method's `model`, a `geo_verify` selector's `aligned`, at any depth. `georag validate` checks
/// each; the run report draws their training curves.
pub fn model_refs(config: &serde_json::Value) -> Vec<(String, std::path::PathBuf)> {
    use serde_json::Value;
    fn walk(key: &str, v: &Value, out: &mut Vec<(String, std::path::PathBuf)>) {
        let child = |k: &str| if key.is_empty() { k.to_string() } else { format!("{key}.{k}") };
        match v {
            Value::Object(m) => {
                let field = match m.get("kind").and_then(Value::as_str) {
                    Some("aligned" | "gallery") => Some("model"),
                    Some("geo_verify") => Some("aligned"),
                    _ => None,
                };
                if let Some((f, d)) = field.and_then(|f| m.get(f).and_then(Value::as_str).map(|d| (f, d))) {
                    out.push((child(f), d.into()));
                }
                m.iter().for_each(|(k, x)| walk(&child(k), x, out));
            }
            Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| walk(&child(&i.to_string()), x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out
}

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Errors of the alignment stage.
#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    #[error("align config: {message}")]
    Config { message: String },
    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: Box<candle_core::Error>,
    },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error(transparent)]
    Write(#[from] crate::util::atomic::AtomicWriteError),
    // Boxed: these errors are large and `AlignError` travels through every `?` of training.
    #[error(transparent)]
    Encode(Box<crate::embed::EncodeError>),
    #[error(transparent)]
    Ingest(Box<crate::ingest::IngestError>),
}

impl From<crate::embed::EncodeError> for AlignError {
    fn from(e: crate::embed::EncodeError) -> Self {
        AlignError::Encode(Box::new(e))
    }
}

impl From<crate::ingest::IngestError> for AlignError {
    fn from(e: crate::ingest::IngestError) -> Self {
        AlignError::Ingest(Box::new(e))
    }
}

/// Finite and > 0 (NaN is not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Projection heads into the shared space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadSpec {
    /// Width of the shared space (G3: 768).
    pub shared_dim: usize,
    /// Hidden width of the image and text heads (default: their input width, as G3's 768).
    pub hidden: Option<usize>,
}

impl Default for HeadSpec {
    fn default() -> Self {
        HeadSpec { shared_dim: 768, hidden: None }
    }
}

/// Optimisation and evaluation settings; the defaults are G3's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    pub lr: f64,
    pub weight_decay: f64,
    /// The learning rate is multiplied by this after every epoch (PyTorch `StepLR(1, gamma)`).
    pub lr_decay: f64,
    pub batch_size: usize,
    pub epochs: usize,
    /// Seeds the initial weights, the held-out split and every epoch's data order.
    pub seed: u64,
    /// Database rows held out (a seeded sample) for the per-epoch image->GPS evaluation; their
    /// coordinates are the gallery.
    pub holdout: usize,
    /// Initial temperature of every contrastive loss (CLIP: 0.07).
    pub temperature_init: f64,
    /// Also checkpoint every this many steps (checkpoints are always written after each epoch).
    pub checkpoint_every_steps: Option<usize>,
    /// Thresholds of the held-out accuracy, km (strict `<`, haversine R = 6371 km).
    pub thresholds_km: Vec<f64>,
    /// `cpu`, `cuda`, `cuda:N` (CUDA needs the `cuda` cargo feature).
    pub device: String,
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            lr: 3e-5,
            weight_decay: 1e-6,
            lr_decay: 0.87,
            batch_size: 256,
            epochs: 10,
            seed: 0,
            holdout: 1000,
            temperature_init: 0.07,
            checkpoint_every_steps: None,
            thresholds_km: vec![1.0, 25.0, 200.0, 750.0, 2500.0],
            device: "cpu".into(),
        }
    }
}

/// TransGeoCLIP's triplet loss (hardest in-batch negative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TripletSpec {
    pub margin: f64,
    pub weight: f64,
    /// Batch items whose GPS lies within this distance of the anchor's are not negatives (0:
    /// every other item is).
    pub exclude_km: f64,
}

impl Default for TripletSpec {
    fn default() -> Self {
        TripletSpec { margin: 0.5, weight: 0.5, exclude_km: 0.0 }
    }
}

/// `align:` in an experiment config. The two variants repeat their common fields on purpose:
/// sharing them through `#[serde(flatten)]` would switch off `deny_unknown_fields` (serde does not
/// support the two together), and a misspelt key must stay an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AlignSpec {
    /// G3's geo-alignment: RFF location tower (Web Mercator), MLP heads, contrastive losses.
    G3 {
        #[serde(default)]
        location: LocationSpec,
        #[serde(default)]
        heads: HeadSpec,
        #[serde(default)]
        train: TrainSpec,
        /// The database's place texts: an embedding store (same ids, same order), or a CLIP
        /// text tower with a template over metadata fields ([`text`]); without it only the
        /// image-GPS loss trains.
        #[serde(default)]
        text: Option<text::TextSource>,
    },
    /// TransGeoCLIP: G3 plus location-attention Transformer layers after each capsule and the
    /// triplet loss.
    Transgeoclip {
        #[serde(default)]
        location: LocationSpec,
        #[serde(default)]
        heads: HeadSpec,
        #[serde(default)]
        train: TrainSpec,
        #[serde(default)]
        text: Option<text::TextSource>,
        #[serde(default)]
        transformer: TransformerSpec,
        #[serde(default)]
        triplet: TripletSpec,
    },
}

impl AlignSpec {
    pub fn name(&self) -> &'static str {
        match self {
            AlignSpec::G3 { .. } => "g3",
            AlignSpec::Transgeoclip { .. } => "transgeoclip",
        }
    }
    pub fn location(&self) -> &LocationSpec {
        match self {
            AlignSpec::G3 { location, .. } | AlignSpec::Transgeoclip { location, .. } => location,
        }
    }
    pub fn heads(&self) -> &HeadSpec {
        match self {
            AlignSpec::G3 { heads, .. } | AlignSpec::Transgeoclip { heads, .. } => heads,
        }
    }
    pub fn train(&self) -> &TrainSpec {
        match self {
            AlignSpec::G3 { train, .. } | AlignSpec::Transgeoclip { train, .. } => train,
        }
    }
    pub fn train_mut(&mut self) -> &mut TrainSpec {
        match self {
            AlignSpec::G3 { train, .. } | AlignSpec::Transgeoclip { train, .. } => train,
        }
    }
    pub fn text(&self) -> Option<&text::TextSource> {
        match self {
            AlignSpec::G3 { text, .. } | AlignSpec::Transgeoclip { text, .. } => text.as_ref(),
        }
    }
    pub fn transformer(&self) -> Option<&TransformerSpec> {
        match self {
            AlignSpec::Transgeoclip { transformer, .. } => Some(transformer),
            AlignSpec::G3 { .. } => None,
        }
    }
    pub fn triplet(&self) -> Option<&TripletSpec> {
        match self {
            AlignSpec::Transgeoclip { triplet, .. } => Some(triplet),
            AlignSpec::G3 { .. } => None,
        }
    }

    /// Values that would make training meaningless are errors naming the key.
    pub fn validate(&self) -> Result<(), AlignError> {
        let bad = |message: String| Err(AlignError::Config { message });
        let t = self.train();
        if t.batch_size < 2 {
            return bad(format!("train.batch_size {} must be at least 2 (contrastive losses need negatives)", t.batch_size));
        }
        if !positive(t.lr) || !positive(t.lr_decay) || t.weight_decay.is_nan() || t.weight_decay < 0.0 {
            return bad(format!("train.lr {} and train.lr_decay {} must be positive, train.weight_decay {} non-negative", t.lr, t.lr_decay, t.weight_decay));
        }
        if !positive(t.temperature_init) {
            return bad(format!("train.temperature_init {} must be positive", t.temperature_init));
        }
        if t.holdout < 2 {
            return bad(format!("train.holdout {} must be at least 2 (it is the evaluation gallery)", t.holdout));
        }
        let l = self.location();
        if l.sigmas.is_empty() || l.rff_features == 0 || l.hidden == 0 || l.out_dim == 0 {
            return bad("location: sigmas, rff_features, hidden and out_dim must be non-empty / positive".into());
        }
        if let Some(tr) = self.transformer()
            && (tr.heads == 0 || !l.hidden.is_multiple_of(tr.heads) || !positive(tr.distance_scale_km))
        {
            return bad(format!("transformer.heads {} must divide location.hidden {}, distance_scale_km {} be positive", tr.heads, l.hidden, tr.distance_scale_km));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_are_g3s_and_unknown_keys_are_errors() {
        let s: AlignSpec = serde_yaml::from_str("{kind: g3}").unwrap();
        let t = s.train();
        assert_eq!((t.lr, t.weight_decay, t.lr_decay, t.batch_size, t.epochs), (3e-5, 1e-6, 0.87, 256, 10));
        assert_eq!(s.location().sigmas, vec![1.0, 16.0, 256.0]);
        assert_eq!(s.location().projection, Projection::Mercator);
        assert!(s.transformer().is_none() && s.triplet().is_none());
        let s: AlignSpec = serde_yaml::from_str("{kind: transgeoclip, transformer: {layers: 1}}").unwrap();
        let tr = s.transformer().unwrap();
        assert_eq!((tr.layers, tr.heads), (1, 8));
        assert_eq!((s.triplet().unwrap().margin, s.triplet().unwrap().weight), (0.5, 0.5));
        for bad in ["{kind: g3, triplet: {}}", "{kind: g3, train: {learning_rate: 1}}", "{kind: g4}", "{kind: g3, location: {projection: lambert}}"] {
            assert!(serde_yaml::from_str::<AlignSpec>(bad).is_err(), "{bad}");
        }
        let s: AlignSpec = serde_yaml::from_str("{kind: g3, train: {batch_size: 1}}").unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("batch_size"));
    }
}
