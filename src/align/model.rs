//! The alignment model: the location tower, the projection heads into the shared space, the
//! learnable temperatures, and the training loss (G3; TransGeoCLIP adds the Transformer layers
//! with location attention and the triplet loss).

use super::layers::{LocationTower, Mlp, Params};
use super::loss;
use super::{AlignError, AlignSpec};
use crate::record::LatLon;
use crate::util::rng::Rng;
use candle_core::{DType, Device, Tensor};

/// The model's parts. Heads are `Linear -> ReLU -> Linear` (G3's `*_projection_else`).
pub struct AlignModel {
    pub params: Params,
    pub location: LocationTower,
    /// image -> shared space, for image-GPS similarity (G3's second vision head).
    pub image_gps: Mlp,
    /// location features -> shared space.
    pub gps: Mlp,
    /// image -> shared space for image-text similarity, and text -> shared (when text is trained).
    pub image_text: Option<Mlp>,
    pub text: Option<Mlp>,
    /// `ln(1 / T)` of the image-GPS, image-text and text-GPS losses.
    pub log_scale_ig: Tensor,
    pub log_scale_it: Option<Tensor>,
    pub log_scale_tg: Option<Tensor>,
    pub image_dim: usize,
    pub text_dim: Option<usize>,
    pub spec: AlignSpec,
}

/// One step's loss: the total (what is differentiated) and its named parts.
pub struct Losses {
    pub total: Tensor,
    pub parts: Vec<(&'static str, Tensor)>,
}

impl AlignModel {
    /// A seeded model (`train.seed`) for `image_dim`-d image embeddings and optional
    /// `text_dim`-d text embeddings.
    pub fn new(spec: &AlignSpec, image_dim: usize, text_dim: Option<usize>, dtype: DType, device: &Device) -> Result<AlignModel, AlignError> {
        spec.validate()?;
        let c = |e: candle_core::Error| AlignError::Candle { context: "building the alignment model".into(), source: Box::new(e) };
        let mut rng = Rng::derive(spec.train().seed, 0xA11C);
        let mut p = Params::new(dtype, device);
        let location = LocationTower::new(&mut p, spec.location(), spec.transformer(), &mut rng).map_err(|message| AlignError::Config { message })?;
        let h = spec.heads();
        let out = spec.location().out_dim;
        let image_gps = Mlp::new(&mut p, "image_gps", [image_dim, h.hidden.unwrap_or(image_dim), h.shared_dim], &mut rng).map_err(c)?;
        let gps = Mlp::new(&mut p, "gps", [out, out, h.shared_dim], &mut rng).map_err(c)?;
        let (mut image_text, mut text) = (None, None);
        if let Some(td) = text_dim {
            image_text = Some(Mlp::new(&mut p, "image_text", [image_dim, h.hidden.unwrap_or(image_dim), h.shared_dim], &mut rng).map_err(c)?);
            text = Some(Mlp::new(&mut p, "text", [td, h.hidden.unwrap_or(td), h.shared_dim], &mut rng).map_err(c)?);
        }
        let t0 = (1.0 / spec.train().temperature_init).ln();
        let log_scale_ig = p.var("log_scale.image_gps", vec![t0], &[]).map_err(c)?;
        let (mut log_scale_it, mut log_scale_tg) = (None, None);
        if text_dim.is_some() {
            log_scale_it = Some(p.var("log_scale.image_text", vec![t0], &[]).map_err(c)?);
            log_scale_tg = Some(p.var("log_scale.text_gps", vec![t0], &[]).map_err(c)?);
        }
        Ok(AlignModel { params: p, location, image_gps, gps, image_text, text, log_scale_ig, log_scale_it, log_scale_tg, image_dim, text_dim, spec: spec.clone() })
    }

    pub fn dtype(&self) -> DType {
        self.params.dtype
    }
    pub fn device(&self) -> &Device {
        &self.params.device
    }

    /// `(n, shared)` GPS embeddings, not normalised. With location attention (TransGeoCLIP) a
    /// point's embedding depends on the other points of the call.
    pub fn gps_embed(&self, coords: &[LatLon]) -> candle_core::Result<Tensor> {
        self.gps.forward(&self.location.forward(coords, self.dtype(), self.device())?)
    }

    /// `(n, shared)` image embeddings for image-GPS similarity, not normalised.
    pub fn image_to_gps(&self, image: &Tensor) -> candle_core::Result<Tensor> {
        self.image_gps.forward(image)
    }

    /// The training loss of one batch: image-GPS contrastive, plus image-text and text-GPS when
    /// the model has text heads and `text` is given, plus the weighted triplet loss
    /// (TransGeoCLIP).
    pub fn loss(&self, image: &Tensor, coords: &[LatLon], text: Option<&Tensor>) -> candle_core::Result<Losses> {
        let ig = self.image_to_gps(image)?;
        let g = self.gps_embed(coords)?;
        let mut parts = vec![("image_gps", loss::clip_loss(&ig, &g, &self.log_scale_ig)?)];
        if let (Some(t), Some(it_head), Some(t_head), Some(s_it), Some(s_tg)) = (text, &self.image_text, &self.text, &self.log_scale_it, &self.log_scale_tg) {
            let it = it_head.forward(image)?;
            let te = t_head.forward(t)?;
            parts.push(("image_text", loss::clip_loss(&it, &te, s_it)?));
            parts.push(("text_gps", loss::clip_loss(&te, &g, s_tg)?));
        }
        if let Some(tr) = self.spec.triplet() {
            let exclude = if tr.exclude_km > 0.0 { Some(loss::near_pairs(coords, tr.exclude_km, self.dtype(), self.device())?) } else { None };
            let t = loss::triplet_hardest(&ig, &g, tr.margin, exclude.as_ref())?;
            parts.push(("triplet", (t * tr.weight)?));
        }
        let mut total = parts[0].1.clone();
        for (_, p) in &parts[1..] {
            total = (total + p)?;
        }
        Ok(Losses { total, parts })
    }
}
