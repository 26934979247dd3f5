//! Loading the layouts of real Hugging Face snapshots (old OpenAI CLIP configs with
//! `vision_config_dict`, `CLIPFeatureExtractor` preprocessor files, vision-only exports, sparse
//! SigLIP configs, `pytorch_model.bin` and sharded `.bin` weights, f16 weights, LAION's `gelu`).
//!
//! These are NOT real checkpoints (CI has no network and no weights): every model here is one of
//! the TINY RANDOM-WEIGHT models of `encoders_parity.rs` (`tests/fixtures/encoders/clip-tiny`,
//! `siglip-tiny`), copied into a temporary directory and rewritten into a real hub layout, and
//! its embeddings are checked against the transformers reference embeddings of the fixture. The
//! `.bin` files and the `gelu` reference come from `tests/fixtures/make_layout_fixtures.py`
//! (torch is not needed to run these tests).

mod common;

use common::encoders::{CLIP_STD, check_reference, cos, fixtures, image, reference, rows};

use candle_core::{DType, Device, Tensor};
use georag::embed::clip::ClipEncoder;
use georag::embed::siglip::SiglipEncoder;
use georag::embed::{Encoder, HfParams};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// A temporary snapshot: the fixture model's config and preprocessor (rewritten by the caller).
fn snapshot(model: &str, name: &str) -> PathBuf {
    let d = common::tmp(name);
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixtures().join(model).join(f), d.join(f)).unwrap();
    }
    d
}

fn tensors(model: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(model).join("model.safetensors"), &Device::Cpu).unwrap()
}

fn load_clip(d: &Path) -> ClipEncoder {
    ClipEncoder::load(&HfParams::new(d.to_path_buf())).unwrap_or_else(|e| panic!("{}: {e}", d.display()))
}

fn clip_error(d: &Path) -> String {
    ClipEncoder::load(&HfParams::new(d.to_path_buf())).err().expect("loading must fail").to_string()
}

/// Tiny random-weight CLIP in the layout of the OpenAI snapshots as uploaded in 2021-22: a complete
/// `vision_config` AND the legacy `vision_config_dict` (which transformers' CLIPConfig lets win:
/// here `vision_config` says 1 layer and `gelu`, which would change the embeddings), `null`s,
/// and a `CLIPFeatureExtractor` preprocessor file with integer `size`/`crop_size` and no rescale
/// fields. Pixels and embeddings match transformers' for the fixture.
#[test]
fn openai_2021_layout() {
    let d = snapshot("clip-tiny", "openai-2021");
    let mut cfg = read_json(&d.join("config.json"));
    let v = cfg["vision_config"].clone();
    let keys = ["hidden_size", "image_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "patch_size", "projection_dim"];
    cfg["vision_config_dict"] = Value::Object(keys.iter().map(|k| (k.to_string(), v[*k].clone())).collect());
    cfg["vision_config"]["num_hidden_layers"] = json!(1);
    cfg["vision_config"]["hidden_act"] = json!("gelu");
    cfg["vision_config"]["bad_words_ids"] = Value::Null;
    cfg["text_config_dict"] = json!({"hidden_size": 16, "projection_dim": 768});
    cfg["transformers_version"] = Value::Null;
    write_json(&d.join("config.json"), &cfg);
    write_json(
        &d.join("preprocessor_config.json"),
        &json!({
            "crop_size": 48,
            "do_center_crop": true,
            "do_normalize": true,
            "do_resize": true,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": 48
        }),
    );
    std::fs::copy(fixtures().join("clip-tiny/model.safetensors"), d.join("model.safetensors")).unwrap();
    check_reference(&load_clip(&d), "clip-tiny", CLIP_STD, 0.9999);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight CLIP stored as sharded `pytorch_model-0000i-of-00002.bin` +
/// `pytorch_model.bin.index.json` (torch.save zip archives; the full CLIPModel state dict with
/// the text tower, `logit_scale` and int64 `position_ids` buffers, which must be ignored): the
/// same embeddings as from model.safetensors, bit for bit; the fingerprint covers the `.bin`
/// files. A shard the index names but the directory lacks is an error naming it.
#[test]
fn clip_sharded_pytorch_bin() {
    let d = snapshot("clip-tiny", "clip-bin");
    let src = fixtures().join("layouts/clip-tiny-bin-sharded");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let bin = load_clip(&d);
    let st = load_clip(&fixtures().join("clip-tiny"));
    let emb = check_reference(&bin, "clip-tiny", CLIP_STD, 0.9999);
    let (names, _) = reference("clip-tiny");
    let imgs: Vec<_> = names.iter().map(|n| image(n)).collect();
    assert_eq!(emb, st.encode_batch(&imgs).unwrap());
    assert_ne!(bin.fingerprint(), st.fingerprint());

    std::fs::remove_file(d.join("pytorch_model-00002-of-00002.bin")).unwrap();
    let e = clip_error(&d);
    assert!(e.contains("pytorch_model-00002-of-00002.bin"), "{e}");
    std::fs::remove_file(d.join("pytorch_model.bin.index.json")).unwrap();
    let e = clip_error(&d);
    assert!(e.contains("model.safetensors") && e.contains("pytorch_model.bin.index.json"), "{e}");
    // A file that is not a torch.save zip archive: an error naming it.
    std::fs::write(d.join("pytorch_model.bin"), b"not a zip").unwrap();
    let e = clip_error(&d);
    assert!(e.contains("pytorch_model.bin") && e.contains("PyTorch"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight CLIP with both model.safetensors and a (broken) pytorch_model.bin: the
/// safetensors are used, as transformers does, and only they are fingerprinted (the fingerprint
/// equals the plain fixture's).
#[test]
fn safetensors_preferred_over_pytorch_bin() {
    let d = snapshot("clip-tiny", "clip-both");
    std::fs::copy(fixtures().join("clip-tiny/model.safetensors"), d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("pytorch_model.bin"), b"garbage").unwrap();
    let enc = load_clip(&d);
    assert_eq!(enc.fingerprint(), load_clip(&fixtures().join("clip-tiny")).fingerprint());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight CLIP exported as `CLIPVisionModelWithProjection` (vision-only config,
/// `model_type: clip_vision_model`, only `vision_model.*` + `visual_projection.weight`), with
/// `null`s for fields at their defaults: matches transformers. Without `projection_dim` the
/// class default 512 does not fit the 768-row projection: an error naming config.json and the
/// weights file. As a `CLIPVisionModel` export (no projection at all): an error naming the tensor.
#[test]
fn clip_vision_only_exports() {
    let d = snapshot("clip-tiny", "clip-vision-only");
    let full = read_json(&d.join("config.json"));
    let mut v = full["vision_config"].clone();
    v["architectures"] = json!(["CLIPVisionModelWithProjection"]);
    v["projection_dim"] = json!(768);
    v["layer_norm_eps"] = Value::Null;
    v["num_channels"] = Value::Null;
    v["hidden_act"] = Value::Null;
    write_json(&d.join("config.json"), &v);
    let mut t = tensors("clip-tiny");
    t.retain(|k, _| k.starts_with("vision_model.") || k == "visual_projection.weight");
    candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
    assert!(matches!(georag::embed::EncoderSpec::from_hf_dir(&d).unwrap(), georag::embed::EncoderSpec::Clip { .. }));
    check_reference(&load_clip(&d), "clip-tiny", CLIP_STD, 0.9999);

    v.as_object_mut().unwrap().remove("projection_dim");
    write_json(&d.join("config.json"), &v);
    let e = clip_error(&d);
    assert!(e.contains("config.json") && e.contains("model.safetensors") && e.contains("projection_dim 512") && e.contains("[768, 48]"), "{e}");

    t.remove("visual_projection.weight");
    candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
    let e = clip_error(&d);
    assert!(e.contains("visual_projection.weight"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight CLIP whose top-level `projection_dim` (what CLIPModel uses) disagrees with
/// the weights while `vision_config.projection_dim` agrees: an error, as in transformers.
#[test]
fn clip_model_uses_top_level_projection_dim() {
    let d = snapshot("clip-tiny", "clip-proj");
    std::fs::copy(fixtures().join("clip-tiny/model.safetensors"), d.join("model.safetensors")).unwrap();
    let mut cfg = read_json(&d.join("config.json"));
    cfg.as_object_mut().unwrap().remove("projection_dim");
    write_json(&d.join("config.json"), &cfg);
    let e = clip_error(&d);
    assert!(e.contains("config.json") && e.contains("top-level `projection_dim`") && e.contains("[768, 48]"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight CLIP with `hidden_act: gelu` (as in the LAION/OpenCLIP conversions), against
/// transformers' embeddings of the same weights with GELUActivation (from the reference pixels,
/// so only the model differs). quick_gelu and gelu embed these inputs only ~2e-5 apart in cosine
/// distance, so the bound is much tighter: 1 - cosine < 1e-9 (observed ~1e-13). An unknown activation is an error naming
/// config.json and the supported names.
#[test]
fn clip_gelu_matches_transformers() {
    let d = snapshot("clip-tiny", "clip-gelu");
    std::fs::copy(fixtures().join("clip-tiny/model.safetensors"), d.join("model.safetensors")).unwrap();
    let mut cfg = read_json(&d.join("config.json"));
    cfg["vision_config"]["hidden_act"] = json!("gelu");
    write_json(&d.join("config.json"), &cfg);
    let enc = load_clip(&d);
    let (_, r) = reference("clip-tiny");
    let quick = rows(&r["embeddings"]);
    let want = rows(&candle_core::safetensors::load(fixtures().join("layouts/clip-tiny-gelu.safetensors"), &Device::Cpu).unwrap()["embeddings"]);
    let got = rows(&enc.features(rows(&r["pixel_values"])).unwrap());
    for i in 0..want.len() {
        let (c, cq) = (cos(&got[i], &want[i]), cos(&got[i], &quick[i]));
        assert!(1.0 - c < 1e-9, "image {i}: 1 - cosine with transformers' gelu model = {}", 1.0 - c);
        assert!(c > cq, "image {i}: closer to the quick_gelu model ({cq}) than to the gelu one ({c})");
    }
    // The quick_gelu fixture through the same path is as close to its own reference.
    let q = rows(&load_clip(&fixtures().join("clip-tiny")).features(rows(&r["pixel_values"])).unwrap());
    assert!(q.iter().zip(&quick).all(|(a, b)| 1.0 - cos(a, b) < 1e-9));

    cfg["vision_config"]["hidden_act"] = json!("swiglu");
    write_json(&d.join("config.json"), &cfg);
    let e = clip_error(&d);
    assert!(e.contains("config.json") && e.contains("swiglu") && e.contains("quick_gelu, gelu, gelu_python, gelu_new, gelu_pytorch_tanh"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight CLIP with its weights saved in float16 (and bfloat16) safetensors: converted
/// to f32 on load; embeddings stay as close to transformers' f32 reference as the f32 weights'
/// (cosine >= 0.9999; the weights' rounding costs ~1e-5 in bf16, ~1e-6 in f16).
#[test]
fn clip_half_precision_safetensors() {
    for (dtype, min_cos) in [(DType::F16, 0.9999), (DType::BF16, 0.9999)] {
        let d = snapshot("clip-tiny", &format!("clip-{dtype:?}"));
        let t: HashMap<String, Tensor> = tensors("clip-tiny").into_iter().map(|(k, v)| (k, v.to_dtype(dtype).unwrap())).collect();
        candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
        check_reference(&load_clip(&d), "clip-tiny", CLIP_STD, min_cos);
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// Tiny random-weight SigLIP as a single float16 `pytorch_model.bin` (HalfStorage), in a snapshot
/// whose SigLIP 2-style preprocessor file has `do_convert_rgb: null` and `processor_class`:
/// converted to f32, close to transformers' f32 reference.
#[test]
fn siglip_f16_pytorch_bin() {
    let d = snapshot("siglip-tiny", "siglip-bin");
    std::fs::copy(fixtures().join("layouts/siglip-tiny-f16.bin"), d.join("pytorch_model.bin")).unwrap();
    let mut pre = read_json(&d.join("preprocessor_config.json"));
    pre["do_convert_rgb"] = Value::Null;
    pre["processor_class"] = json!("SiglipProcessor");
    write_json(&d.join("preprocessor_config.json"), &pre);
    let enc = SiglipEncoder::load(&HfParams::new(d.clone())).unwrap();
    assert_eq!(enc.dim(), 48);
    check_reference(&enc, "siglip-tiny", [0.5; 3], 0.9999);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight SigLIP exported as `SiglipVisionModel` (vision-only `siglip_vision_model`
/// config listing only what differs from SiglipVisionConfig's defaults, plus `null`s; weights
/// `vision_model.*` only): matches transformers. An integer preprocessor `size` (a shortest edge
/// for transformers) is refused: SigLIP's input must be square.
#[test]
fn siglip_vision_only_sparse_config() {
    let d = snapshot("siglip-tiny", "siglip-vision-only");
    let full = read_json(&d.join("config.json"));
    let mut v = full["vision_config"].clone();
    let o = v.as_object_mut().unwrap();
    for k in ["hidden_act", "layer_norm_eps", "num_channels", "attention_dropout", "vision_use_head"] {
        o.remove(k);
    }
    o.insert("architectures".into(), json!(["SiglipVisionModel"]));
    o.insert("torch_dtype".into(), Value::Null);
    o.insert("num_channels".into(), Value::Null);
    write_json(&d.join("config.json"), &v);
    let mut t = tensors("siglip-tiny");
    t.retain(|k, _| k.starts_with("vision_model."));
    candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
    assert!(matches!(georag::embed::EncoderSpec::from_hf_dir(&d).unwrap(), georag::embed::EncoderSpec::Siglip { .. }));
    check_reference(&SiglipEncoder::load(&HfParams::new(d.clone())).unwrap(), "siglip-tiny", [0.5; 3], 0.9999);

    let mut pre = read_json(&d.join("preprocessor_config.json"));
    pre["size"] = json!(32);
    write_json(&d.join("preprocessor_config.json"), &pre);
    let e = SiglipEncoder::load(&HfParams::new(d.clone())).err().expect("must fail").to_string();
    assert!(e.contains("preprocessor_config.json") && e.contains("ShortestEdge(32)"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `embed::identity` (what `georag index` uses to find the embedding store without building the
/// encoder) gives the fingerprint and dimension that building the encoder gives, for the TINY
/// RANDOM-WEIGHT CLIP and SigLIP fixtures, the f16 `.bin` SigLIP layout and IM2GPS, and it never
/// decodes a weight: with the tensor data cut off after the header, identity still answers (the
/// weight files are only hashed) while loading fails.
#[test]
fn identity_matches_the_built_encoder_without_decoding_weights() {
    let spec = |kind: &str, dir: &Path| -> georag::embed::EncoderSpec { serde_yaml::from_str(&format!("{{kind: {kind}, dir: {}}}", dir.display())).unwrap() };
    let bin = snapshot("siglip-tiny", "identity-siglip-bin");
    std::fs::copy(fixtures().join("layouts/siglip-tiny-f16.bin"), bin.join("pytorch_model.bin")).unwrap();
    let cases = [("clip", fixtures().join("clip-tiny")), ("siglip", fixtures().join("siglip-tiny")), ("siglip", bin)];
    for (kind, dir) in &cases {
        let s = spec(kind, dir);
        let built = georag::embed::build(&s).unwrap_or_else(|e| panic!("{kind} {}: {e}", dir.display()));
        let (fp, dim) = georag::embed::identity(&s).unwrap();
        assert_eq!((fp.as_str(), dim), (built.fingerprint(), built.dim()), "{kind} {}", dir.display());
    }
    let im: georag::embed::EncoderSpec = serde_yaml::from_str("{kind: im2gps, tiny: 8}").unwrap();
    let built = georag::embed::build(&im).unwrap();
    assert_eq!(georag::embed::identity(&im).unwrap(), (built.fingerprint().to_string(), built.dim()));

    // Weights cut to their first 4 KiB (the safetensors header and no tensor data).
    let cut = snapshot("clip-tiny", "identity-cut");
    let full = std::fs::read(fixtures().join("clip-tiny/model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    std::fs::write(cut.join("model.safetensors"), &full[..header.max(4096).min(full.len() - 1)]).unwrap();
    let s = spec("clip", &cut);
    let (fp, dim) = georag::embed::identity(&s).unwrap();
    assert_eq!(dim, load_clip(&fixtures().join("clip-tiny")).dim());
    assert_ne!(fp, load_clip(&fixtures().join("clip-tiny")).fingerprint(), "the cut file hashes differently");
    assert!(georag::embed::build(&s).is_err(), "loading truncated weights must fail");
}
