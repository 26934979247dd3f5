//! CLIP text tower + text projection, from the same local Hugging Face snapshot as the vision
//! tower (`CLIPModel`, or a text-only `CLIPTextModelWithProjection`): what G3's geo-alignment
//! embeds place strings with ("A street view photo taken in Paris, Île-de-France, France.").
//!
//! Reference implementation: transformers' `CLIPTextTransformer` + `CLIPModel.get_text_features`
//! (modeling_clip.py), L2-normalised.
//! - Tokens: `tokenizer.json` through the `tokenizers` crate (the file transformers' fast CLIP
//!   tokenizer reads: NFC, whitespace collapsed, lower-cased, byte-level BPE with `</w>`, wrapped
//!   in <|startoftext|> ... <|endoftext|>). A text longer than `max_position_embeddings` (77 in
//!   every released CLIP) is truncated as transformers' `truncation=True` does: the first
//!   `max - 2` content tokens between the two specials. A snapshot without `tokenizer.json` is an
//!   error naming it (nothing is converted from `vocab.json` / `merges.txt` here).
//! - Model: token + position embeddings, pre-norm encoder layers ([`super::clip`]'s, with a
//!   causal mask), `final_layer_norm`, then the hidden state at the end-of-text token, then
//!   `text_projection` (no bias). The pooled position is transformers': the first position of
//!   `eos_token_id`, or, for configs whose `eos_token_id` is the legacy 2 (the OpenAI uploads),
//!   the position of the largest id (<|endoftext|> is the last vocabulary entry).
//! - Batches are padded after the end-of-text token; under the causal mask nothing after it
//!   reaches the pooled state, so a text's embedding does not depend on its batch.
//!
//! Runs on the CPU in f32 (texts are short; a database's place strings repeat, and
//! [`ClipTextEncoder::encode_texts`] embeds each distinct string once).

use super::act::Act;
use super::clip::Layer;
use super::hf::{self, HfError, Snapshot};
use super::EncodeError;
use crate::util::fingerprint::Fingerprint;
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `config.json` fields the text tower uses (defaults: transformers' `CLIPTextConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextJson {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Act,
    pub layer_norm_eps: f64,
    pub projection_dim: usize,
    pub eos_token_id: u32,
}

impl Default for ClipTextJson {
    fn default() -> Self {
        ClipTextJson {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Act::QuickGelu,
            layer_norm_eps: 1e-5,
            projection_dim: 512,
            eos_token_id: 49407,
        }
    }
}

/// The text config as transformers builds it: `text_config` of a full `CLIPModel` (a legacy
/// `text_config_dict` wins, as for the vision side), or the whole file of a text-only model;
/// `null`s take the defaults; a full model's projection is the top-level `projection_dim`.
pub fn text_config(snap: &Snapshot) -> Result<ClipTextJson, HfError> {
    let path = snap.config_path();
    let v = match (snap.config.get("text_config_dict"), snap.config.get("text_config")) {
        (Some(d), _) if d.is_object() => hf::without_nulls(d),
        (_, Some(serde_json::Value::Null)) => serde_json::json!({}),
        (_, Some(t)) => hf::without_nulls(t),
        (_, None) => hf::without_nulls(&snap.config),
    };
    let mut c: ClipTextJson = serde_json::from_value(v).map_err(|e| HfError::Config { path: path.clone(), message: format!("text config: {e}") })?;
    if snap.config.get("text_config").is_some() || snap.config.get("text_config_dict").is_some() {
        c.projection_dim = hf::get_or(&snap.config, "projection_dim", 512, &path)?;
    }
    if c.max_position_embeddings < 2 {
        return Err(HfError::Config { path, message: format!("max_position_embeddings {} leaves no room for a token between the two specials", c.max_position_embeddings) });
    }
    Ok(c)
}

/// Names of every tensor the text tower and projection read.
pub fn expected_tensors(c: &ClipTextJson) -> Vec<String> {
    let p = "text_model";
    let mut v = vec![
        format!("{p}.embeddings.token_embedding.weight"),
        format!("{p}.embeddings.position_embedding.weight"),
        format!("{p}.final_layer_norm.weight"),
        format!("{p}.final_layer_norm.bias"),
        "text_projection.weight".to_string(),
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

struct Files {
    snap: Snapshot,
    c: ClipTextJson,
    tokenizer: PathBuf,
    fp: String,
}

fn files(dir: &Path) -> Result<Files, EncodeError> {
    let snap = Snapshot::open_text(dir)?;
    let c = text_config(&snap)?;
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(HfError::MissingFile { dir: dir.to_path_buf(), file: "tokenizer.json".into() }.into());
    }
    let fp = Fingerprint::new("encoder/clip-text/1").field(&snap.weights_sha256()?).field(&hf::sha256_files(std::slice::from_ref(&tokenizer))?).json(&c).finish();
    Ok(Files { snap, c, tokenizer, fp })
}

/// The fingerprint and dimension [`ClipTextEncoder::load`] would give, without building the model.
pub fn identity(dir: &Path) -> Result<(String, usize), EncodeError> {
    let f = files(dir)?;
    Ok((f.fp, f.c.projection_dim))
}

/// A loaded CLIP text encoder.
pub struct ClipTextEncoder {
    tokenizer: tokenizers::Tokenizer,
    tokens: Embedding,
    positions: Tensor,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    projection: Linear,
    c: ClipTextJson,
    /// Pool at the largest id (transformers' legacy `eos_token_id == 2` path).
    argmax_pool: bool,
    fp: String,
    name: String,
}

impl ClipTextEncoder {
    pub fn load(dir: &Path) -> Result<ClipTextEncoder, EncodeError> {
        let Files { snap, c, tokenizer, fp } = files(dir)?;
        let tok = tokenizers::Tokenizer::from_file(&tokenizer).map_err(|e| HfError::Config { path: tokenizer.clone(), message: format!("not a tokenizers file: {e}") })?;
        let vb = snap.var_builder(DType::F32, &Device::Cpu)?;
        snap.require_tensors(&vb, &expected_tensors(&c))?;
        let wpath = snap.weights_source.clone();
        let err = |what: &'static str| {
            let path = wpath.clone();
            move |source| HfError::Candle { path, context: format!("building the CLIP text tower: {what}"), source }
        };
        let t = vb.pp("text_model");
        let h = c.hidden_size;
        let emb = t.pp("embeddings");
        let tokens = candle_nn::embedding(c.vocab_size, h, emb.pp("token_embedding")).map_err(err("token_embedding"))?;
        let positions = emb.pp("position_embedding").get((c.max_position_embeddings, h), "weight").map_err(err("position_embedding"))?;
        let layers = Layer::stack(&t, c.num_hidden_layers, h, c.intermediate_size, c.layer_norm_eps).map_err(err("encoder layers"))?;
        let final_ln = candle_nn::layer_norm(h, c.layer_norm_eps, t.pp("final_layer_norm")).map_err(err("final_layer_norm"))?;
        let projection = candle_nn::linear_no_bias(h, c.projection_dim, vb.pp("text_projection")).map_err(err("text_projection"))?;
        if tok.get_vocab_size(true) > c.vocab_size {
            return Err(HfError::Config {
                path: tokenizer,
                message: format!("the tokenizer has {} tokens, the model's vocab_size is {}", tok.get_vocab_size(true), c.vocab_size),
            }
            .into());
        }
        let name = format!("clip-text:{}", dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(ClipTextEncoder { tokenizer: tok, tokens, positions, layers, final_ln, projection, argmax_pool: c.eos_token_id == 2, c, fp, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dim(&self) -> usize {
        self.c.projection_dim
    }
    pub fn fingerprint(&self) -> &str {
        &self.fp
    }
    pub fn config(&self) -> &ClipTextJson {
        &self.c
    }

    /// Token ids of `text` with the specials, truncated to `max_position_embeddings`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EncodeError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| EncodeError::Model { encoder: self.name.clone(), message: format!("tokenizing {text:?}: {e}") })?;
        let mut ids = enc.get_ids().to_vec();
        let max = self.c.max_position_embeddings;
        if ids.len() > max {
            let last = *ids.last().expect("longer than max >= 2");
            ids.truncate(max - 1);
            ids.push(last);
        }
        Ok(ids)
    }

    /// Where the pooled state is read: transformers' rule (see the module docs).
    fn pool_index(&self, ids: &[u32]) -> usize {
        if self.argmax_pool {
            // torch.argmax: the first of equal maxima.
            let m = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&x| x == m).unwrap_or(0)
        } else {
            ids.iter().position(|&x| x == self.c.eos_token_id).unwrap_or(ids.len().saturating_sub(1))
        }
    }

    /// L2-normalised projected features of tokenized texts, `(n * dim)`.
    pub fn encode_ids(&self, batch: &[Vec<u32>]) -> Result<Vec<f32>, EncodeError> {
        let err = |e: candle_core::Error| EncodeError::Model { encoder: self.name.clone(), message: e.to_string() };
        if batch.is_empty() {
            return Ok(vec![]);
        }
        let seq = batch.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let pad = self.c.eos_token_id;
        let flat: Vec<u32> = batch.iter().flat_map(|ids| ids.iter().copied().chain(std::iter::repeat(pad)).take(seq)).collect();
        let ids = Tensor::from_vec(flat, (batch.len(), seq), &Device::Cpu).map_err(err)?;
        let x = self.tokens.forward(&ids).and_then(|t| t.broadcast_add(&self.positions.i(..seq)?)).map_err(err)?;
        let mask: Vec<f32> = (0..seq * seq).map(|i| if i % seq > i / seq { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (seq, seq), &Device::Cpu).map_err(err)?;
        let x = Layer::forward_all(&self.layers, x, self.c.num_attention_heads, self.c.hidden_act, Some(&mask)).map_err(err)?;
        let x = self.final_ln.forward(&x).map_err(err)?;
        let rows = batch
            .iter()
            .enumerate()
            .map(|(i, ids)| x.i((i, self.pool_index(ids))))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(err)?;
        let pooled = Tensor::stack(&rows, 0).map_err(err)?;
        hf::normalized_rows(&self.projection.forward(&pooled).map_err(err)?).map_err(err)
    }

    /// Embed `texts` (`n * dim`), each distinct string once, in batches of `batch_size`.
    pub fn encode_texts(&self, texts: &[String], batch_size: usize) -> Result<Vec<f32>, EncodeError> {
        let mut slot: HashMap<&str, usize> = HashMap::new();
        let mut distinct: Vec<&str> = vec![];
        let which: Vec<usize> = texts
            .iter()
            .map(|t| {
                *slot.entry(t.as_str()).or_insert_with(|| {
                    distinct.push(t.as_str());
                    distinct.len() - 1
                })
            })
            .collect();
        let d = self.dim();
        let mut emb = Vec::with_capacity(distinct.len() * d);
        for chunk in distinct.chunks(batch_size.max(1)) {
            let ids = chunk.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>, _>>()?;
            emb.extend(self.encode_ids(&ids)?);
        }
        Ok(which.iter().flat_map(|&k| emb[k * d..(k + 1) * d].iter().copied()).collect())
    }
}
