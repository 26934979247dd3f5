//! SigLIP vision tower with its attention-pooling head (base/16-224 ... so400m/14-384, and the
//! fixed-resolution SigLIP 2 checkpoints), from a local Hugging Face snapshot.
//!
//! Reference implementation: Hugging Face `SiglipVisionModel` (`pooler_output`) /
//! `SiglipModel.get_image_features`,
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/siglip/modeling_siglip.py>;
//! the transformer is candle's `siglip::VisionModel`, whose `VisionConfig` deserialises from
//! `config.json` (`vision_config` of a full `SiglipModel`, or a vision-only `siglip_vision_model`
//! config). Absent or `null` fields take transformers' `SiglipVisionConfig` defaults (base/16-224,
//! `gelu_pytorch_tanh`, eps 1e-6; candle's defaults are the same), so a `vision_config` that lists
//! only `patch_size` is a SigLIP base. `hidden_act` is parsed by [`Act`] and must be one candle's
//! tower has (the GELU variants other than `quick_gelu` / `gelu_10`). The embedding is the pooled
//! head output, L2-normalised. The input size must equal the configured `image_size` (candle
//! would otherwise interpolate position embeddings, which the fixed-resolution checkpoints never
//! do). SigLIP 2 NaFlex checkpoints (`model_type: siglip2`, a linear patch embedding and
//! variable resolution) are refused; the fixed-resolution SigLIP 2 ones are `siglip` models.

use super::act::Act;
use super::clip::take_pixels;
use super::hf::{self, HfError, Snapshot, VisionFiles};
use super::preprocess::{Family, Preprocess, Resize};
use super::vit::{self, Kernels};
use super::{EncodeError, Encoder, HfParams, Prepared};
use candle_core::{DType, Device, Module};
use candle_nn::VarBuilder;
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

/// candle's `VisionConfig` from `config.json`, and the vision JSON it came from (nulls removed;
/// part of the fingerprint).
pub fn vision_config(snap: &Snapshot) -> Result<(VisionConfig, serde_json::Value), HfError> {
    let path = snap.config_path();
    let bad = |message: String| HfError::Config { path: path.clone(), message };
    if let Some(t) = snap.model_type().filter(|t| t.starts_with("siglip2")) {
        return Err(bad(format!("model_type `{t}` (SigLIP 2 NaFlex) is not supported; fixed-resolution SigLIP 2 checkpoints have model_type `siglip`")));
    }
    let vjson = snap.vision_config();
    let act = match vjson.get("hidden_act") {
        None => Act::GeluPytorchTanh,
        Some(a) => serde_json::from_value::<Act>(a.clone()).map_err(|e| bad(format!("vision config: {e}")))?,
    };
    let hidden_act = act.candle().ok_or_else(|| bad(format!("hidden_act `{}` is not available in the SigLIP tower", act.name())))?;
    let mut rest = vjson.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("hidden_act");
    }
    let mut cfg: VisionConfig = serde_json::from_value(rest).map_err(|e| bad(format!("vision config: {e}")))?;
    cfg.hidden_act = hidden_act;
    Ok((cfg, vjson))
}

enum Net {
    Cpu(Box<CpuTower>),
    Candle(VisionModel),
}

/// The same model as candle's `VisionModel` with its head, on [`vit`]'s CPU f32 kernels.
struct CpuTower {
    /// The patch convolution as a `(hidden, 3 * patch^2)` product, with its bias.
    patch: vit::Dense,
    /// `(patches, hidden)`.
    positions: Vec<f32>,
    stack: vit::Stack,
    post_ln: vit::Norm,
    /// The head's query: `probe W_q^T + b_q` (the probe is the same for every image).
    head_q: Vec<f32>,
    /// The head's key and value projections stacked: `(2 * hidden, hidden)` of `in_proj`.
    head_kv: vit::Dense,
    head_out: vit::Dense,
    head_ln: vit::Norm,
    head_fc1: vit::Dense,
    head_fc2: vit::Dense,
    size: usize,
    patch_size: usize,
}

impl CpuTower {
    fn new(vb: VarBuilder, c: &VisionConfig, act: Act) -> candle_core::Result<CpuTower> {
        let (h, p, eps) = (c.hidden_size, c.patch_size, c.layer_norm_eps);
        let emb = vb.pp("embeddings");
        let pe = emb.pp("patch_embedding");
        let conv = pe.get((h, c.num_channels, p, p), "weight")?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let bias = pe.get(h, "bias")?.to_dtype(DType::F32)?.to_vec1()?;
        let n_pos = (c.image_size / p).pow(2);
        let positions = emb.pp("position_embedding").get((n_pos, h), "weight")?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| vit::Layer::load(&vb.pp(format!("encoder.layers.{i}")), h, c.intermediate_size, eps))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let head = vb.pp("head");
        let att = head.pp("attention");
        let in_w = att.get((3 * h, h), "in_proj_weight")?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let in_b = att.get(3 * h, "in_proj_bias")?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let probe = head.get((1, 1, h), "probe")?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let head_q = vit::Dense::new(&in_w[..h * h], Some(in_b[..h].to_vec()), h, h).forward(&probe, 1);
        Ok(CpuTower {
            patch: vit::Dense::new(&conv, Some(bias), c.num_channels * p * p, h),
            positions,
            stack: vit::Stack { layers, heads: c.num_attention_heads, act },
            post_ln: vit::Norm::load(&vb.pp("post_layernorm"), h, eps)?,
            head_q,
            head_kv: vit::Dense::new(&in_w[h * h..], Some(in_b[h..].to_vec()), h, 2 * h),
            head_out: vit::Dense::load(&att.pp("out_proj"), h, h, true)?,
            head_ln: vit::Norm::load(&head.pp("layernorm"), h, eps)?,
            head_fc1: vit::Dense::load(&head.pp("mlp.fc1"), h, c.intermediate_size, true)?,
            head_fc2: vit::Dense::load(&head.pp("mlp.fc2"), c.intermediate_size, h, true)?,
            size: c.image_size,
            patch_size: p,
        })
    }

    /// Pooled embeddings `(n, hidden)` of `n` prepared images (CHW, concatenated).
    fn forward(&self, pixels: &[f32], n: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let h = self.head_q.len();
        let seq = self.positions.len() / h;
        let mut x = vit::patch_embed(pixels, n, self.size, self.patch_size, &self.patch);
        x.par_chunks_mut(seq * h).for_each(|img| img.iter_mut().zip(&self.positions).for_each(|(v, p)| *v += p));
        self.stack.forward(&mut x, n, seq);
        let x = self.post_ln.forward(&x);
        // Attention pooling: one query per image over its `seq` tokens, then a residual MLP.
        let kv = self.head_kv.forward(&x, n * seq);
        let q: Vec<f32> = (0..n).flat_map(|_| self.head_q.iter().copied()).collect();
        let heads = self.stack.heads;
        let hd = h / heads;
        let mut pooled = vec![0f32; n * h];
        vit::Attn { q: (&q, 0, h, 1), k: (&kv, 0, 2 * h, seq), v: (&kv, h, 2 * h, seq), images: n, heads, head_dim: hd, scale: (hd as f32).powf(-0.5) }
            .run(&mut pooled);
        let mut out = self.head_out.forward(&pooled, n);
        let mut mid = self.head_fc1.forward(&self.head_ln.forward(&out), n);
        self.stack.act.apply_inplace(&mut mid);
        self.head_fc2.forward_into(&mid, n, &mut out, true);
        out
    }
}

/// The [`Act`] of candle's activation (the two that [`vision_config`] can produce).
fn act_of(a: candle_nn::Activation) -> Option<Act> {
    match a {
        candle_nn::Activation::Gelu => Some(Act::Gelu),
        candle_nn::Activation::GeluPytorchTanh => Some(Act::GeluPytorchTanh),
        _ => None,
    }
}

/// A loaded SigLIP image encoder.
pub struct SiglipEncoder {
    net: Net,
    pre: Preprocess,
    size: usize,
    device: Device,
    dtype: DType,
    dim: usize,
    fp: String,
    name: String,
}

fn files(p: &HfParams) -> Result<VisionFiles<VisionConfig>, HfError> {
    let config = |snap: &Snapshot| {
        let (cfg, vjson) = vision_config(snap)?;
        if vjson.get("vision_use_head").and_then(|v| v.as_bool()) == Some(false) {
            return Err(HfError::Config { path: snap.config_path(), message: "vision_use_head is false: no pooled embedding".into() });
        }
        Ok((cfg, vjson))
    };
    let resize_check = |cfg: &VisionConfig, pre: &Preprocess| {
        let want = Resize::Exact { height: cfg.image_size as u32, width: cfg.image_size as u32 };
        if pre.resize.as_ref() == Some(&want) && pre.crop.is_none() {
            return Ok(());
        }
        Err(format!(
            "SigLIP input must be resized straight to the model's image_size {0}x{0}; preprocessing is {1:?} then crop {2:?}",
            cfg.image_size, pre.resize, pre.crop
        ))
    };
    VisionFiles::open(p, Family::Siglip, "encoder/siglip/1", config, resize_check)
}

/// The fingerprint and dimension [`SiglipEncoder::load`] would give, without building the model.
pub fn identity(p: &HfParams) -> Result<(String, usize), EncodeError> {
    let f = files(p)?;
    Ok((f.fp, f.cfg.hidden_size))
}

impl SiglipEncoder {
    pub fn load(p: &HfParams) -> Result<SiglipEncoder, EncodeError> {
        Self::load_with(p, Kernels::Auto)
    }

    /// [`SiglipEncoder::load`] with a choice of implementation (tests compare the two).
    pub fn load_with(p: &HfParams, kernels: Kernels) -> Result<SiglipEncoder, EncodeError> {
        let files = files(p)?;
        let (device, dtype, vb) = files.weights(p, &expected_tensors(files.cfg.num_hidden_layers))?;
        let VisionFiles { snap, cfg, pre, fp } = files;
        let built = |source| HfError::Candle { path: snap.weights_source.clone(), context: "building the SigLIP vision tower".into(), source };
        let net = match act_of(cfg.hidden_act) {
            Some(act) if kernels.cpu_path(&device, dtype) => Net::Cpu(Box::new(CpuTower::new(vb.pp("vision_model"), &cfg, act).map_err(built)?)),
            _ => Net::Candle(VisionModel::new(&cfg, true, vb.pp("vision_model")).map_err(built)?),
        };
        Ok(SiglipEncoder { net, pre, size: cfg.image_size, device, dtype, dim: cfg.hidden_size, fp, name: hf::encoder_name("siglip", p) })
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
        match &self.net {
            Net::Cpu(t) => {
                let n = px.len();
                let flat = hf::pixels_flat(px, self.size, self.size).map_err(|message| EncodeError::Model { encoder: self.name.clone(), message })?;
                let mut v = t.forward(&flat, n);
                v.chunks_mut(self.dim).for_each(super::im2gps::l2_normalize);
                Ok(v)
            }
            Net::Candle(model) => {
                let x = hf::pixels_tensor(px, self.size, self.size, &self.device, self.dtype).map_err(err)?;
                hf::normalized_rows(&model.forward(&x).map_err(err)?).map_err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::embed::hf::test_snapshot as snap;

    /// google/siglip-base-patch16-224's config.json lists almost nothing in `vision_config`:
    /// transformers' `SiglipVisionConfig` defaults fill in a base/16-224.
    #[test]
    fn sparse_base_config_takes_transformers_defaults() {
        let cfg = json!({
            "architectures": ["SiglipModel"],
            "initializer_factor": 1.0,
            "model_type": "siglip",
            "text_config": {"hidden_size": 768, "intermediate_size": 3072, "model_type": "siglip_text_model", "num_attention_heads": 12, "vocab_size": 32000},
            "torch_dtype": "float32",
            "transformers_version": "4.37.0.dev0",
            "vision_config": {"model_type": "siglip_vision_model", "patch_size": 16, "num_channels": null}
        });
        let (c, _) = vision_config(&snap(cfg)).unwrap();
        let got = (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_channels, c.image_size, c.patch_size, c.layer_norm_eps);
        assert_eq!(got, (768, 3072, 12, 12, 3, 224, 16, 1e-6));
        assert_eq!(c.hidden_act, candle_nn::Activation::GeluPytorchTanh);
        // Nothing at all: the same (SiglipVisionConfig's patch_size default is 16 too).
        let (c, _) = vision_config(&snap(json!({"model_type": "siglip_vision_model"}))).unwrap();
        assert_eq!((c.hidden_size, c.patch_size, c.image_size), (768, 16, 224));
    }

    /// siglip-so400m-patch14-384 and a vision-only export (SiglipVisionModel, e.g. FLUX Redux's
    /// image encoder).
    #[test]
    fn so400m_and_vision_only_configs() {
        let v = json!({"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304, "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14});
        let (c, _) = vision_config(&snap(json!({"model_type": "siglip", "vision_config": v.clone()}))).unwrap();
        assert_eq!((c.hidden_size, c.image_size, c.num_hidden_layers, c.patch_size), (1152, 384, 27, 14));
        let mut only = v;
        only["architectures"] = json!(["SiglipVisionModel"]);
        only["hidden_act"] = json!("gelu_pytorch_tanh");
        only["layer_norm_eps"] = json!(1e-6);
        let (c2, _) = vision_config(&snap(only)).unwrap();
        assert_eq!((c2.hidden_size, c2.intermediate_size, c2.hidden_act), (1152, 4304, candle_nn::Activation::GeluPytorchTanh));
    }

    #[test]
    fn unsupported_activation_and_naflex_are_errors() {
        let e = vision_config(&snap(json!({"vision_config": {"hidden_act": "quick_gelu"}}))).unwrap_err().to_string();
        assert!(e.contains("/snap/config.json") && e.contains("quick_gelu"), "{e}");
        let e = vision_config(&snap(json!({"vision_config": {"hidden_act": "relu"}}))).unwrap_err().to_string();
        assert!(e.contains("relu") && e.contains("gelu_pytorch_tanh"), "{e}");
        let e = vision_config(&snap(json!({"model_type": "siglip2", "vision_config": {"num_patches": 256}}))).unwrap_err().to_string();
        assert!(e.contains("siglip2") && e.contains("NaFlex"), "{e}");
    }
}
