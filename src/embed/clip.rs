//! CLIP vision tower + visual projection (OpenAI CLIP ViT-B/32, B/16, L/14, L/14-336, and
//! StreetCLIP, which is a CLIP L/14-336), from a local Hugging Face snapshot.
//!
//! Reference implementation: Hugging Face `CLIPVisionModelWithProjection` / `CLIPModel.get_image_features`,
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py>;
//! the embedding is the projected pooled (class-token, post-layernorm) output, L2-normalised.
//!
//! Two implementations of the same forward pass ([`Kernels`]): on the CPU in f32, `CpuTower`
//! on [`vit`]'s kernels (what makes the CPU path as fast as PyTorch, see benches/README.md);
//! elsewhere (CUDA, f16/bf16) `Tower`, a candle graph that follows candle's
//! `clip::vision_model::ClipVisionTransformer` (same tensor names, same maths). Both honour the
//! configured `layer_norm_eps`. The config comes from `config.json` as transformers
//! reads it ([`vision_config`]): `vision_config` of a full `CLIPModel` (overridden by a legacy
//! `vision_config_dict`), or a vision-only `clip_vision_model` config
//! (`CLIPVisionModelWithProjection`); absent or `null` fields take `CLIPVisionConfig`'s defaults.
//! `hidden_act` is any of [`Act`]'s GELU variants (`quick_gelu` for OpenAI CLIP, `gelu` for
//! LAION/OpenCLIP conversions). candle would replace a missing class embedding with random values:
//! every expected tensor is asserted to exist first, and `visual_projection.weight` must have the
//! configured `projection_dim` rows (a `CLIPVisionModel` export without it is an error).

use super::act::Act;
use super::hf::{self, HfError, Snapshot, VisionFiles};
use super::preprocess::{Family, Preprocess};
use super::vit::{self, Kernels};
use super::{EncodeError, Encoder, HfParams, Prepared};
use rayon::prelude::*;
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, LayerNorm, Linear, VarBuilder};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The `config.json` fields the vision tower uses (defaults: transformers' `CLIPVisionConfig`,
/// i.e. ViT-B/32).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionJson {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Act,
    pub layer_norm_eps: f64,
    pub projection_dim: usize,
}

impl Default for ClipVisionJson {
    fn default() -> Self {
        ClipVisionJson {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Act::QuickGelu,
            layer_norm_eps: 1e-5,
            projection_dim: 512,
        }
    }
}

/// Names of every tensor the vision tower and projection read.
pub fn expected_tensors(c: &ClipVisionJson) -> Vec<String> {
    let p = "vision_model";
    let mut v = vec![
        format!("{p}.embeddings.class_embedding"),
        format!("{p}.embeddings.patch_embedding.weight"),
        format!("{p}.embeddings.position_embedding.weight"),
        format!("{p}.pre_layrnorm.weight"),
        format!("{p}.pre_layrnorm.bias"),
        format!("{p}.post_layernorm.weight"),
        format!("{p}.post_layernorm.bias"),
        "visual_projection.weight".to_string(),
    ];
    for i in 0..c.num_hidden_layers {
        let l = format!("{p}.encoder.layers.{i}");
        for m in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"] {
            v.push(format!("{l}.{m}.weight"));
            v.push(format!("{l}.{m}.bias"));
        }
    }
    v
}

/// One pre-norm encoder layer (HF `CLIPEncoderLayer`), shared by the vision and text towers.
pub(super) struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The CLIP vision transformer (HF `CLIPVisionTransformer`): patch conv + class token +
/// positions, pre-LN, pre-norm encoder layers, post-LN on the class token.
struct Tower {
    patch: Conv2d,
    class: Tensor,
    positions: Tensor,
    pre_ln: LayerNorm,
    layers: Vec<Layer>,
    post_ln: LayerNorm,
    heads: usize,
    act: Act,
}

impl Tower {
    fn new(vb: VarBuilder, c: &ClipVisionJson) -> candle_core::Result<Tower> {
        let h = c.hidden_size;
        let emb = vb.pp("embeddings");
        let conv = candle_nn::Conv2dConfig { stride: c.patch_size, ..Default::default() };
        let patch = candle_nn::conv2d_no_bias(c.num_channels, h, c.patch_size, conv, emb.pp("patch_embedding"))?;
        let class = emb.get(h, "class_embedding")?;
        let n_pos = (c.image_size / c.patch_size).pow(2) + 1;
        let positions = emb.pp("position_embedding").get((n_pos, h), "weight")?;
        let ln = |v: VarBuilder| candle_nn::layer_norm(h, c.layer_norm_eps, v);
        let layers = Layer::stack(&vb, c.num_hidden_layers, h, c.intermediate_size, c.layer_norm_eps)?;
        Ok(Tower { patch, class, positions, pre_ln: ln(vb.pp("pre_layrnorm"))?, layers, post_ln: ln(vb.pp("post_layernorm"))?, heads: c.num_attention_heads, act: c.hidden_act })
    }

    /// Pooled output `(b, hidden)`: the post-layernormed class token.
    fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self.patch.forward(pixels)?.flatten_from(2)?.transpose(1, 2)?;
        let hdim = self.class.dim(0)?;
        let class = self.class.reshape((1, 1, hdim))?.expand((b, 1, hdim))?;
        let mut x = Tensor::cat(&[class, patches], 1)?.broadcast_add(&self.positions)?;
        x = self.pre_ln.forward(&x)?;
        x = Layer::forward_all(&self.layers, x, self.heads, self.act, None)?;
        self.post_ln.forward(&x.i((.., 0, ..))?.contiguous()?)
    }
}

impl Layer {
    /// `{vb}.encoder.layers.{0..n}`.
    pub(super) fn stack(vb: &VarBuilder, n: usize, h: usize, inter: usize, eps: f64) -> candle_core::Result<Vec<Layer>> {
        let ln = |v: VarBuilder| candle_nn::layer_norm(h, eps, v);
        (0..n)
            .map(|i| {
                let l = vb.pp(format!("encoder.layers.{i}"));
                let a = l.pp("self_attn");
                Ok(Layer {
                    ln1: ln(l.pp("layer_norm1"))?,
                    q: candle_nn::linear(h, h, a.pp("q_proj"))?,
                    k: candle_nn::linear(h, h, a.pp("k_proj"))?,
                    v: candle_nn::linear(h, h, a.pp("v_proj"))?,
                    out: candle_nn::linear(h, h, a.pp("out_proj"))?,
                    ln2: ln(l.pp("layer_norm2"))?,
                    fc1: candle_nn::linear(h, inter, l.pp("mlp.fc1"))?,
                    fc2: candle_nn::linear(inter, h, l.pp("mlp.fc2"))?,
                })
            })
            .collect()
    }

    /// Run `x` `(b, seq, hidden)` through `layers`; `mask` `(seq, seq)` is added to the attention
    /// logits (the text tower's causal mask; the vision tower has none).
    pub(super) fn forward_all(layers: &[Layer], mut x: Tensor, heads: usize, act: Act, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (b, seq, hdim) = x.dims3()?;
        let hd = hdim / heads;
        let scale = (hd as f64).powf(-0.5);
        for l in layers {
            let r = x.clone();
            let y = l.ln1.forward(&x)?;
            let split = |t: Tensor| t.reshape((b, seq, heads, hd))?.transpose(1, 2)?.contiguous();
            let q = split((l.q.forward(&y)? * scale)?)?;
            let k = split(l.k.forward(&y)?)?;
            let v = split(l.v.forward(&y)?)?;
            let mut logits = q.matmul(&k.t()?)?;
            if let Some(m) = mask {
                logits = logits.broadcast_add(m)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&logits)?;
            let o = att.matmul(&v)?.transpose(1, 2)?.reshape((b, seq, hdim))?;
            x = (l.out.forward(&o)? + r)?;
            let r = x.clone();
            let y = l.fc1.forward(&l.ln2.forward(&x)?)?;
            x = (l.fc2.forward(&act.forward(&y)?)? + r)?;
        }
        Ok(x)
    }
}

enum Net {
    Cpu(CpuTower),
    Candle { tower: Tower, projection: Linear },
}

/// [`Tower`] + projection on [`super::vit`]'s CPU f32 kernels.
struct CpuTower {
    /// The patch convolution as a `(hidden, 3 * patch^2)` product (no bias in CLIP).
    patch: vit::Dense,
    class: Vec<f32>,
    /// `(patches + 1, hidden)`.
    positions: Vec<f32>,
    pre_ln: vit::Norm,
    stack: vit::Stack,
    post_ln: vit::Norm,
    projection: vit::Dense,
    size: usize,
    patch_size: usize,
}

impl CpuTower {
    fn new(vb: VarBuilder, c: &ClipVisionJson) -> candle_core::Result<CpuTower> {
        let (h, p) = (c.hidden_size, c.patch_size);
        let v = vb.pp("vision_model");
        let emb = v.pp("embeddings");
        let conv = emb.pp("patch_embedding").get((h, c.num_channels, p, p), "weight")?;
        let patch = vit::Dense::new(&conv.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?, None, c.num_channels * p * p, h);
        let n_pos = (c.image_size / p).pow(2) + 1;
        let class = emb.get(h, "class_embedding")?.to_dtype(DType::F32)?.to_vec1()?;
        let positions = emb.pp("position_embedding").get((n_pos, h), "weight")?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let eps = c.layer_norm_eps;
        let layers = (0..c.num_hidden_layers)
            .map(|i| vit::Layer::load(&v.pp(format!("encoder.layers.{i}")), h, c.intermediate_size, eps))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(CpuTower {
            patch,
            class,
            positions,
            pre_ln: vit::Norm::load(&v.pp("pre_layrnorm"), h, eps)?,
            stack: vit::Stack { layers, heads: c.num_attention_heads, act: c.hidden_act },
            post_ln: vit::Norm::load(&v.pp("post_layernorm"), h, eps)?,
            projection: vit::Dense::load(&vb.pp("visual_projection"), h, c.projection_dim, false)?,
            size: c.image_size,
            patch_size: p,
        })
    }

    /// Projected features `(n, projection_dim)` of `n` prepared images (CHW, concatenated).
    fn forward(&self, pixels: &[f32], n: usize) -> Vec<f32> {
        let h = self.class.len();
        let patches = vit::patch_embed(pixels, n, self.size, self.patch_size, &self.patch);
        let seq = self.positions.len() / h;
        let mut x = vec![0f32; n * seq * h];
        x.par_chunks_mut(seq * h).enumerate().for_each(|(i, img)| {
            img[..h].copy_from_slice(&self.class);
            img[h..].copy_from_slice(&patches[i * (seq - 1) * h..(i + 1) * (seq - 1) * h]);
            img.iter_mut().zip(&self.positions).for_each(|(v, p)| *v += p);
        });
        let mut x = self.pre_ln.forward(&x);
        self.stack.forward(&mut x, n, seq);
        let cls: Vec<f32> = (0..n).flat_map(|i| x[i * seq * h..i * seq * h + h].iter().copied()).collect();
        self.projection.forward(&self.post_ln.forward(&cls), n)
    }
}

/// The vision config as transformers builds it for `CLIPModel` (a full config) or
/// `CLIPVisionModelWithProjection` (a vision-only config).
///
/// - `CLIPConfig` turns a legacy `vision_config_dict` (written by old transformers, e.g. in the
///   OpenAI snapshots) into a complete `CLIPVisionConfig` and overwrites `vision_config` with it:
///   every field then comes from `vision_config_dict` or the default, whatever `vision_config`
///   says.
/// - `CLIPModel`'s `visual_projection` has the top-level `projection_dim` (default 512) rows;
///   `CLIPVisionModelWithProjection` uses the vision config's own.
/// - Absent and `null` fields take `CLIPVisionConfig`'s defaults (transformers 5 would reject a
///   `null` for most of them; old files carry `null`s for fields they never set).
pub fn vision_config(snap: &Snapshot) -> Result<ClipVisionJson, HfError> {
    let path = snap.config_path();
    let v = match snap.config.get("vision_config_dict") {
        Some(d) if d.is_object() => hf::without_nulls(d),
        _ => snap.vision_config(),
    };
    let mut c: ClipVisionJson = serde_json::from_value(v).map_err(|e| HfError::Config { path: path.clone(), message: format!("vision config: {e}") })?;
    if snap.is_full_model() {
        c.projection_dim = hf::get_or(&snap.config, "projection_dim", 512, &path)?;
    }
    Ok(c)
}

/// `visual_projection.weight` must be `(projection_dim, hidden_size)`: a clear error naming both
/// files rather than candle's shape mismatch.
fn check_projection(snap: &Snapshot, vb: &VarBuilder, c: &ClipVisionJson) -> Result<(), HfError> {
    let name = "visual_projection.weight";
    let w = vb.get_unchecked(name).map_err(candle(&snap.weights_source, name))?;
    if w.dims() != [c.projection_dim, c.hidden_size] {
        let source = if snap.is_full_model() { "the top-level `projection_dim` (CLIPModel; default 512)" } else { "`projection_dim` (CLIPVisionModelWithProjection; default 512)" };
        return Err(HfError::Config {
            path: snap.config_path(),
            message: format!(
                "projection_dim {} from {source} and hidden_size {} need {name} of shape [{}, {}], but {} has {:?}",
                c.projection_dim,
                c.hidden_size,
                c.projection_dim,
                c.hidden_size,
                snap.weights_source.display(),
                w.dims()
            ),
        });
    }
    Ok(())
}

/// A loaded CLIP image encoder.
pub struct ClipEncoder {
    net: Net,
    pre: Preprocess,
    size: usize,
    device: Device,
    dtype: DType,
    dim: usize,
    fp: String,
    name: String,
}

fn candle(path: &std::path::Path, context: &str) -> impl Fn(candle_core::Error) -> HfError {
    let path = path.to_path_buf();
    let context = context.to_string();
    move |source| HfError::Candle { path: path.clone(), context: context.clone(), source }
}

fn files(p: &HfParams) -> Result<VisionFiles<ClipVisionJson>, HfError> {
    let size_check = |c: &ClipVisionJson, pre: &Preprocess| match pre.output_size() {
        Some((h, w)) if (h, w) == (c.image_size as u32, c.image_size as u32) => Ok(()),
        got => Err(format!("preprocessing yields {got:?}, the model's image_size is {}", c.image_size)),
    };
    VisionFiles::open(p, Family::Clip, "encoder/clip/1", |snap| vision_config(snap).map(|c| (c.clone(), c)), size_check)
}

/// The fingerprint and dimension [`ClipEncoder::load`] would give, without building the model.
pub fn identity(p: &HfParams) -> Result<(String, usize), EncodeError> {
    let f = files(p)?;
    Ok((f.fp, f.cfg.projection_dim))
}

impl ClipEncoder {
    pub fn load(p: &HfParams) -> Result<ClipEncoder, EncodeError> {
        Self::load_with(p, Kernels::Auto)
    }

    /// [`ClipEncoder::load`] with a choice of implementation (tests compare the two).
    pub fn load_with(p: &HfParams, kernels: Kernels) -> Result<ClipEncoder, EncodeError> {
        let files = files(p)?;
        let (device, dtype, vb) = files.weights(p, &expected_tensors(&files.cfg))?;
        let VisionFiles { snap, cfg: c, pre, fp } = files;
        check_projection(&snap, &vb, &c)?;
        let wpath = snap.weights_source.clone();
        let net = if kernels.cpu_path(&device, dtype) {
            Net::Cpu(CpuTower::new(vb, &c).map_err(candle(&wpath, "building the CLIP vision tower"))?)
        } else {
            let tower = Tower::new(vb.pp("vision_model"), &c).map_err(candle(&wpath, "building the CLIP vision tower"))?;
            let projection = candle_nn::linear_no_bias(c.hidden_size, c.projection_dim, vb.pp("visual_projection"))
                .map_err(candle(&wpath, "visual_projection"))?;
            Net::Candle { tower, projection }
        };
        Ok(ClipEncoder { net, pre, size: c.image_size, device, dtype, dim: c.projection_dim, fp, name: hf::encoder_name("clip", p) })
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }

    /// Projected, un-normalised image features `(n, projection_dim)` for prepared pixels.
    pub fn features(&self, items: Vec<Vec<f32>>) -> Result<Tensor, EncodeError> {
        let err = |e: candle_core::Error| EncodeError::Model { encoder: self.name.clone(), message: e.to_string() };
        match &self.net {
            Net::Cpu(t) => {
                let n = items.len();
                let flat = hf::pixels_flat(items, self.size, self.size).map_err(|message| EncodeError::Model { encoder: self.name.clone(), message })?;
                let f = t.forward(&flat, n);
                Tensor::from_vec(f, (n, self.dim), &Device::Cpu).map_err(err)
            }
            Net::Candle { tower, projection } => {
                let x = hf::pixels_tensor(items, self.size, self.size, &self.device, self.dtype).map_err(err)?;
                projection.forward(&tower.forward(&x).map_err(err)?).map_err(err)
            }
        }
    }

    /// Preprocess one image into CHW pixels.
    pub fn pixels(&self, image: &RgbImage) -> Result<Vec<f32>, String> {
        self.pre.apply(image).map(|(_, _, v)| v).map_err(|e| format!("preprocess: {e}"))
    }
}

/// Unwrap prepared pixels (every model encoder prepares pixels).
pub(crate) fn take_pixels(name: &str, items: Vec<Prepared>, pixels: impl Fn(&RgbImage) -> Result<Vec<f32>, String>) -> Result<Vec<Vec<f32>>, EncodeError> {
    items
        .into_iter()
        .map(|p| match p {
            Prepared::Pixels(v) => Ok(v),
            Prepared::Image(i) => pixels(&i).map_err(|message| EncodeError::Model { encoder: name.into(), message }),
        })
        .collect()
}

impl Encoder for ClipEncoder {
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
        let px = take_pixels(&self.name, items, |i| self.pixels(i))?;
        let f = self.features(px)?;
        hf::normalized_rows(&f).map_err(|e| EncodeError::Model { encoder: self.name.clone(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::embed::hf::test_snapshot as snap;

    /// transformers 5's `CLIPVisionConfig()` (ViT-B/32).
    #[test]
    fn defaults_are_transformers_clip_vision_config() {
        let c = vision_config(&snap(json!({"model_type": "clip_vision_model"}))).unwrap();
        let want = ClipVisionJson {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Act::QuickGelu,
            layer_norm_eps: 1e-5,
            projection_dim: 512,
        };
        assert_eq!(c, want);
        assert_eq!(c, ClipVisionJson::default());
        // A full config without any vision fields or projection_dim: CLIPConfig's defaults.
        assert_eq!(vision_config(&snap(json!({"model_type": "clip", "vision_config": null}))).unwrap(), want);
    }

    /// openai/clip-vit-large-patch14-336 as uploaded (transformers 4.21): a complete
    /// `vision_config` plus the legacy `vision_config_dict`. transformers' CLIPConfig rebuilds the
    /// vision config from `vision_config_dict` + defaults, so that is what counts (the conflicting
    /// values here are made up to show it; the real file's agree).
    #[test]
    fn legacy_vision_config_dict_wins() {
        let cfg = json!({
            "_name_or_path": "openai/clip-vit-large-patch14-336",
            "architectures": ["CLIPModel"],
            "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592,
            "model_type": "clip",
            "projection_dim": 768,
            "text_config": {"hidden_size": 768, "projection_dim": 768, "bad_words_ids": null},
            "text_config_dict": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768},
            "torch_dtype": "float32",
            "transformers_version": null,
            "vision_config": {
                "hidden_size": 1024, "image_size": 224, "intermediate_size": 4096, "layer_norm_eps": 1e-05,
                "hidden_act": "gelu", "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14,
                "projection_dim": 768, "bad_words_ids": null, "prefix": null
            },
            "vision_config_dict": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768}
        });
        let c = vision_config(&snap(cfg)).unwrap();
        assert_eq!((c.hidden_size, c.image_size, c.patch_size, c.num_hidden_layers, c.projection_dim), (1024, 336, 14, 24, 768));
        assert_eq!(c.hidden_act, Act::QuickGelu); // the default, not vision_config's
    }

    /// CLIPModel takes the top-level projection_dim; CLIPVisionModelWithProjection its own. `null`s
    /// take defaults; LAION conversions use `gelu`.
    #[test]
    fn projection_dim_nulls_and_activation() {
        let full = json!({"model_type": "clip", "vision_config": {"projection_dim": 1024, "hidden_act": "gelu", "layer_norm_eps": null}});
        let c = vision_config(&snap(full)).unwrap();
        assert_eq!((c.projection_dim, c.hidden_act, c.layer_norm_eps), (512, Act::Gelu, 1e-5));
        let only = json!({"model_type": "clip_vision_model", "architectures": ["CLIPVisionModelWithProjection"], "projection_dim": 1024, "image_size": null});
        let c = vision_config(&snap(only)).unwrap();
        assert_eq!((c.projection_dim, c.image_size), (1024, 224));
        let e = vision_config(&snap(json!({"vision_config": {"hidden_act": "swish"}}))).unwrap_err().to_string();
        assert!(e.contains("/snap/config.json") && e.contains("swish") && e.contains("quick_gelu, gelu"), "{e}");
    }
}
