//! SigLIP vision tower with its attention-pooling head (base/16-224 ... so400m/14-384, and the
//! fixed-resolution SigLIP 2 checkpoints), from a local Hugging Face snapshot.
//!
//! Reference implementation: Hugging Face `SiglipVisionModel` (`pooler_output`) /
//! `SiglipModel.get_image_features`,
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/siglip/modeling_siglip.py>;
//! the transformer is candle's `siglip::VisionModel`, whose `VisionConfig` deserialises straight
//! from `config.json`. The embedding is the pooled head output, L2-normalised. The input size must
//! equal the configured `image_size` (candle would otherwise interpolate position embeddings,
//! which the fixed-resolution checkpoints never do).

use super::clip::take_pixels;
use super::hf::{self, HfError, Snapshot};
use super::preprocess::{Family, Preprocess, Resize};
use super::{EncodeError, Encoder, HfParams, Prepared};
use crate::util::fingerprint::Fingerprint;
use candle_core::{DType, Device, Module};
use candle_transformers::models::siglip::{VisionConfig, VisionModel};
use image::RgbImage;

/// Names of every tensor the vision tower and head read.
pub fn expected_tensors(layers: usize) -> Vec<String> {
    let p = "vision_model";
    let mut v = vec![
        format!("{p}.embeddings.patch_embedding.weight"),
        format!("{p}.embeddings.patch_embedding.bias"),
        format!("{p}.embeddings.position_embedding.weight"),
        format!("{p}.post_layernorm.weight"),
        format!("{p}.post_layernorm.bias"),
        format!("{p}.head.probe"),
        format!("{p}.head.attention.in_proj_weight"),
        format!("{p}.head.attention.in_proj_bias"),
    ];
    for m in ["head.attention.out_proj", "head.layernorm", "head.mlp.fc1", "head.mlp.fc2"] {
        v.push(format!("{p}.{m}.weight"));
        v.push(format!("{p}.{m}.bias"));
    }
    for i in 0..layers {
        let l = format!("{p}.encoder.layers.{i}");
        for m in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"] {
            v.push(format!("{l}.{m}.weight"));
            v.push(format!("{l}.{m}.bias"));
        }
    }
    v
}

/// A loaded SigLIP image encoder.
pub struct SiglipEncoder {
    model: VisionModel,
    pre: Preprocess,
    size: usize,
    device: Device,
    dtype: DType,
    dim: usize,
    fp: String,
    name: String,
}

impl SiglipEncoder {
    pub fn load(p: &HfParams) -> Result<SiglipEncoder, EncodeError> {
        let snap = Snapshot::open(&p.dir)?;
        let cfg_path = snap.config_path();
        let vjson = snap.vision_config().clone();
        let cfg: VisionConfig = serde_json::from_value(vjson.clone())
            .map_err(|e| HfError::Config { path: cfg_path.clone(), message: format!("vision config: {e}") })?;
        if vjson.get("vision_use_head").and_then(|v| v.as_bool()) == Some(false) {
            return Err(HfError::Config { path: cfg_path, message: "vision_use_head is false: no pooled embedding".into() }.into());
        }
        let pre_path = p.dir.join("preprocessor_config.json");
        let pre = Preprocess::from_config(&snap.preprocessor, Family::Siglip, &pre_path)?;
        let want = Resize::Exact { height: cfg.image_size as u32, width: cfg.image_size as u32 };
        if pre.resize.as_ref() != Some(&want) || pre.crop.is_some() {
            return Err(HfError::Config {
                path: pre_path,
                message: format!("SigLIP input must be resized straight to the model's image_size {0}x{0}; preprocessing is {1:?} then crop {2:?}", cfg.image_size, pre.resize, pre.crop),
            }
            .into());
        }
        let device = hf::device(&p.device)?;
        hf::check_dtype(&device, p.dtype, &p.device)?;
        let dtype = p.dtype.candle();
        let vb = snap.var_builder(dtype, &device)?;
        snap.require_tensors(&vb, &expected_tensors(cfg.num_hidden_layers))?;
        let model = VisionModel::new(&cfg, true, vb.pp("vision_model"))
            .map_err(|source| HfError::Candle { path: snap.weights[0].clone(), context: "building the SigLIP vision tower".into(), source })?;
        let fp = Fingerprint::new("encoder/siglip/1")
            .field(&snap.weights_sha256()?)
            .json(&vjson)
            .json(&pre)
            .json(&p.dtype)
            .finish();
        let name = format!("siglip:{}", p.dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(SiglipEncoder { model, pre, size: cfg.image_size, device, dtype, dim: cfg.hidden_size, fp, name })
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }

    fn pixels(&self, image: &RgbImage) -> Result<Vec<f32>, String> {
        self.pre.apply(image).map(|(_, _, v)| v).map_err(|e| format!("preprocess: {e}"))
    }
}

impl Encoder for SiglipEncoder {
    fn name(&self) -> &str {
        &self.name
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn fingerprint(&self) -> &str {
        &self.fp
    }
    fn encode_batch(&self, images: &[RgbImage]) -> Result<Vec<f32>, EncodeError> {
        super::encode_by_preparing(self, images)
    }
    fn prepare(&self, image: RgbImage) -> Result<Prepared, String> {
        self.pixels(&image).map(Prepared::Pixels)
    }
    fn encode_prepared(&self, items: Vec<Prepared>) -> Result<Vec<f32>, EncodeError> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let err = |e: candle_core::Error| EncodeError::Model { encoder: self.name.clone(), message: e.to_string() };
        let px = take_pixels(&self.name, items, |i| self.pixels(i))?;
        let x = hf::pixels_tensor(px, self.size, self.size, &self.device, self.dtype).map_err(err)?;
        let pooled = self.model.forward(&x).map_err(err)?;
        hf::normalized_rows(&pooled).map_err(err)
    }
}
