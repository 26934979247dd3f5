//! `kind: aligned`: G3's retrieval embedding. The base encoder's vector, the image->text head's
//! and the image->GPS head's outputs of a trained alignment model (`georag align train`), each
//! L2-normalised, concatenated, and divided by sqrt(number of parts) so that the row is unit-norm
//! (the inner product is then the mean of the parts' cosines: G3's ranking, as its concatenated
//! 2304-d vectors rank by the sum). A model trained without text has no image->text head: two
//! parts.

use super::{EncodeError, Encoder, Prepared};
use crate::align::AlignModel;
use crate::align::train::ModelCard;
use crate::util::fingerprint::Fingerprint;
use candle_core::{Device, Tensor};
use image::RgbImage;

pub struct AlignedEncoder {
    base: Box<dyn Encoder>,
    model: AlignModel,
    dim: usize,
    fp: String,
}

/// The concatenated dimension and the fingerprint of the heads of `card` over a base encoder
/// of `base_dim` and fingerprint `base_fp` (a card's `text_dim` is what gives the model its
/// image->text head).
fn over(base_name: &str, base_dim: usize, base_fp: &str, card: &ModelCard, model_dir: &std::path::Path) -> Result<(usize, String), EncodeError> {
    if card.image_dim != base_dim {
        return Err(EncodeError::Config(format!(
            "aligned encoder: {} was trained on {}-d image embeddings, the base encoder `{base_name}` gives {base_dim}-d",
            model_dir.display(),
            card.image_dim,
        )));
    }
    let shared = card.spec.heads().shared_dim;
    let dim = base_dim + shared * (1 + usize::from(card.text_dim.is_some()));
    let fp = Fingerprint::new("encoder/aligned/1").field(base_fp).field(&card.model_fingerprint).finish();
    Ok((dim, fp))
}

/// The fingerprint and dimension [`AlignedEncoder::new`] would give, from the base encoder's
/// identity and the heads' `model.json` (no model is built, no weights are read).
pub fn identity(base: &super::EncoderSpec, model_dir: &std::path::Path) -> Result<(String, usize), EncodeError> {
    let (base_fp, base_dim) = super::identity(base)?;
    let card = crate::align::train::read_card(model_dir).map_err(|e| EncodeError::Config(format!("aligned encoder: {e}")))?;
    let (dim, fp) = over(base.kind(), base_dim, &base_fp, &card, model_dir)?;
    Ok((fp, dim))
}

impl AlignedEncoder {
    pub fn new(base: Box<dyn Encoder>, model_dir: &std::path::Path) -> Result<AlignedEncoder, EncodeError> {
        let (model, card) = crate::align::train::load_model(model_dir, &Device::Cpu).map_err(|e| EncodeError::Config(format!("aligned encoder: {e}")))?;
        let (dim, fp) = over(base.name(), base.dim(), base.fingerprint(), &card, model_dir)?;
        Ok(AlignedEncoder { base, model, dim, fp })
    }

    /// Concatenate the parts of `base` vectors (`n * base.dim()`, unit rows).
    pub fn extend(&self, base: &[f32]) -> Result<Vec<f32>, EncodeError> {
        let err = |e: candle_core::Error| EncodeError::Model { encoder: "aligned".into(), message: e.to_string() };
        let bd = self.base.dim();
        let n = base.len() / bd.max(1);
        if n == 0 {
            return Ok(vec![]);
        }
        let x = Tensor::from_vec(base.to_vec(), (n, bd), &Device::Cpu).map_err(err)?;
        let mut parts: Vec<(Vec<f32>, usize)> = vec![(base.to_vec(), bd)];
        let shared = self.model.spec.heads().shared_dim;
        if let Some(h) = &self.model.image_text {
            parts.push((super::hf::normalized_rows(&h.forward(&x).map_err(err)?).map_err(err)?, shared));
        }
        parts.push((super::hf::normalized_rows(&self.model.image_to_gps(&x).map_err(err)?).map_err(err)?, shared));
        let k = (parts.len() as f32).sqrt();
        let mut out = Vec::with_capacity(n * self.dim);
        for i in 0..n {
            for (v, d) in &parts {
                out.extend(v[i * d..(i + 1) * d].iter().map(|x| x / k));
            }
        }
        Ok(out)
    }
}

impl Encoder for AlignedEncoder {
    fn name(&self) -> &str {
        "aligned"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn fingerprint(&self) -> &str {
        &self.fp
    }
    fn encode_batch(&self, images: &[RgbImage]) -> Result<Vec<f32>, EncodeError> {
        self.extend(&self.base.encode_batch(images)?)
    }
    fn prepare(&self, image: RgbImage) -> Result<Prepared, String> {
        self.base.prepare(image)
    }
    fn decode_min_size(&self) -> Option<(u32, u32)> {
        self.base.decode_min_size()
    }
    fn encode_prepared(&self, items: Vec<Prepared>) -> Result<Vec<f32>, EncodeError> {
        self.extend(&self.base.encode_prepared(items)?)
    }
    fn base(&self) -> Option<&dyn Encoder> {
        Some(self.base.as_ref())
    }
    fn from_base(&self, base: &[f32]) -> Result<Vec<f32>, EncodeError> {
        self.extend(base)
    }
}
