//! Helpers of the encoder tests: the tiny random-weight fixture models of
//! `tests/fixtures/encoders/` and their transformers references.

use candle_core::{Device, Tensor};
use georag::decode::{DEFAULT_MAX_PIXELS, decode_rgb};
use georag::embed::{Encoder, Prepared};
use std::collections::HashMap;
use std::path::PathBuf;

pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders")
}

/// Fixture image names and the transformers reference (`pixel_values`, `embeddings`).
pub fn reference(model: &str) -> (Vec<String>, HashMap<String, Tensor>) {
    let dir = fixtures().join(model);
    let names: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let names = names["images"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    (names, candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap())
}

pub fn image(name: &str) -> image::RgbImage {
    decode_rgb(&std::fs::read(fixtures().join("images").join(name)).unwrap(), DEFAULT_MAX_PIXELS).unwrap()
}

pub fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.flatten_from(1).unwrap().to_vec2::<f32>().unwrap()
}

/// Cosine similarity, accumulated in f64 (1 - cosine is compared with bounds near 1e-6).
pub fn cos(a: &[f32], b: &[f32]) -> f64 {
    let dot = |u: &[f32], v: &[f32]| u.iter().zip(v).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// The whole path (decode, preprocess, model) against the fixture's transformers reference:
/// pixels within one 8-bit level (the resize's rounding; PNGs and JPEGs alike, since JPEGs are
/// decoded by libjpeg-turbo as in PIL), unit-norm embeddings with cosine >= `min_cos`. Returns the
/// embeddings.
pub fn check_reference(enc: &dyn Encoder, model: &str, std: [f32; 3], min_cos: f64) -> Vec<f32> {
    let (names, r) = reference(model);
    let ref_px = rows(&r["pixel_values"]);
    let ref_emb = rows(&r["embeddings"]);
    let imgs: Vec<_> = names.iter().map(|n| image(n)).collect();
    for (i, name) in names.iter().enumerate() {
        let Prepared::Pixels(px) = enc.prepare(imgs[i].clone()).unwrap() else { panic!("model encoders prepare pixels") };
        assert_eq!(px.len(), ref_px[i].len(), "{name}: pixel tensor size");
        let plane = px.len() / 3;
        let levels: Vec<f32> = px.iter().zip(&ref_px[i]).enumerate().map(|(k, (a, b))| (a - b).abs() * std[k / plane] * 255.0).collect();
        let max = levels.iter().cloned().fold(0f32, f32::max);
        let mean = levels.iter().sum::<f32>() / levels.len() as f32;
        // JPEGs too: georag decodes them with libjpeg-turbo exactly as PIL does.
        assert!(max <= 1.0 + 1e-3, "{model} {name}: max pixel difference {max} levels (> 1/255, mean {mean})");
    }
    let emb = enc.encode_batch(&imgs).unwrap();
    let d = enc.dim();
    assert_eq!(emb.len(), names.len() * d);
    for (i, name) in names.iter().enumerate() {
        let e = &emb[i * d..(i + 1) * d];
        let n: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "{model} {name}: norm {n}");
        let c = cos(e, &ref_emb[i]);
        assert!(c >= min_cos, "{model} {name}: cosine with transformers {c} < {min_cos}");
    }
    emb
}
