//! Parity of the candle encoders with the reference implementations, without downloads.
//!
//! The CLIP and SigLIP models here are TINY RANDOM-WEIGHT models built by
//! `tests/fixtures/make_encoder_fixtures.py` with `transformers` (real checkpoints cannot exist
//! in CI); the reference pixels and embeddings were produced by transformers' own (PIL) image
//! processors and models. GeoCLIP tests use the real weights of the `geoclip` wheel from a cache
//! (`scripts/fetch-geoclip.sh`, run by `make test`) and skip with a printed reason without it.

mod common;

use common::encoders::{CLIP_STD, check_reference, cos, fixtures, image, reference, rows};

use candle_core::Device;
use georag::decode::{DEFAULT_MAX_PIXELS, decode_rgb};
use georag::embed::clip::ClipEncoder;
use georag::embed::geoclip::{GeoclipImageEncoder, LocationEncoder};
use georag::embed::siglip::SiglipEncoder;
use georag::embed::{Encoder, HfParams};
use std::collections::HashMap;
use std::path::Path;

/// Check pixels and embeddings of every fixture image against the transformers reference
/// (cosine >= 0.9999), and that the fixture can detect errors at all.
fn check_parity(enc: &dyn Encoder, model: &str, std: [f32; 3]) {
    check_parity_within(enc, model, std, 0.9999)
}

/// [`check_parity`] with a given minimum cosine (half precision on CUDA cannot reach 0.9999).
fn check_parity_within(enc: &dyn Encoder, model: &str, std: [f32; 3], min_cos: f64) {
    let emb = check_reference(enc, model, std, min_cos);
    // The comparison is sensitive: different images are far apart under these weights.
    let d = enc.dim();
    let c01 = cos(&emb[..d], &emb[d..2 * d]);
    assert!(c01 < 0.99, "{model}: images 0 and 1 embed almost identically ({c01}); the fixture cannot detect errors");
}

/// Tiny random-weight CLIP (real weights cannot exist in CI): CLIPImageProcessor pixels within
/// one 8-bit level, embeddings with cosine >= 0.9999 against transformers.
#[test]
fn clip_tiny_matches_transformers() {
    let enc = ClipEncoder::load(&HfParams::new(fixtures().join("clip-tiny"))).unwrap();
    assert_eq!(enc.dim(), 768);
    check_parity(&enc, "clip-tiny", CLIP_STD);
}

/// Tiny random-weight SigLIP (real weights cannot exist in CI): SiglipImageProcessor pixels within
/// one 8-bit level, attention-pooled embeddings with cosine >= 0.9999 against transformers.
#[test]
fn siglip_tiny_matches_transformers() {
    let enc = SiglipEncoder::load(&HfParams::new(fixtures().join("siglip-tiny"))).unwrap();
    assert_eq!(enc.dim(), 48);
    check_parity(&enc, "siglip-tiny", [0.5; 3]);
}

/// The tiny model on the 50 real JPEGs of ../shared (skipped with a printed reason when absent):
/// georag decodes (libjpeg-turbo) and preprocesses, transformers' reference was computed from
/// PIL's decode (`tests/fixtures/make_real_photo_refs.py`); cosine >= 0.9999 on every photo.
fn check_real_photos(enc: &dyn Encoder, key: &str) {
    let Some(photos) = common::real_photos::photos() else { return };
    let r = candle_core::safetensors::load(common::real_photos::refs_dir().join("reference.safetensors"), &Device::Cpu).unwrap();
    let reference = r[key].to_vec2::<f32>().unwrap();
    assert_eq!(reference.len(), photos.len());
    let imgs: Vec<_> = photos.iter().map(|p| decode_rgb(&p.bytes, DEFAULT_MAX_PIXELS).unwrap()).collect();
    let d = enc.dim();
    let mut worst = (1.0f64, String::new());
    for (chunk, names) in imgs.chunks(10).zip(photos.chunks(10)) {
        let emb = enc.encode_batch(chunk).unwrap();
        for (i, p) in names.iter().enumerate() {
            let k = photos.iter().position(|q| q.name == p.name).unwrap();
            let c = common::encoders::cos(&emb[i * d..(i + 1) * d], &reference[k]);
            if c < worst.0 {
                worst = (c, p.name.clone());
            }
        }
    }
    eprintln!("{key}-tiny on {} real photos: lowest cosine vs transformers {:.7} ({})", photos.len(), worst.0, worst.1);
    assert!(worst.0 >= 0.9999, "{key}-tiny: cosine {} < 0.9999 on {}", worst.0, worst.1);
}

/// Tiny random-weight CLIP (real weights cannot exist in CI) on real JPEGs.
#[test]
fn clip_tiny_matches_transformers_on_real_jpegs() {
    let enc = ClipEncoder::load(&HfParams::new(common::encoders::fixtures().join("clip-tiny"))).unwrap();
    check_real_photos(&enc, "clip");
}

/// Tiny random-weight SigLIP on real JPEGs (zune-jpeg's decode reached only 0.99915 here).
#[test]
fn siglip_tiny_matches_transformers_on_real_jpegs() {
    let enc = SiglipEncoder::load(&HfParams::new(common::encoders::fixtures().join("siglip-tiny"))).unwrap();
    check_real_photos(&enc, "siglip");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Tiny random-weight CLIP without its class embedding: loading must fail naming the tensor
/// (candle alone would fill it with random values).
#[test]
fn clip_missing_class_embedding_is_an_error() {
    let d = common::tmp("clip-no-cls");
    copy_dir(&fixtures().join("clip-tiny"), &d);
    let mut t = candle_core::safetensors::load(d.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(t.remove("vision_model.embeddings.class_embedding").is_some());
    candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
    let e = ClipEncoder::load(&HfParams::new(d.clone())).err().expect("must fail").to_string();
    assert!(e.contains("vision_model.embeddings.class_embedding"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Tiny random-weight SigLIP split into two safetensors shards with an index: same embeddings as
/// the single file; a preprocessor size different from the model's image_size is refused.
#[test]
fn siglip_sharded_weights_and_size_mismatch() {
    let src = fixtures().join("siglip-tiny");
    let d = common::tmp("siglip-sharded");
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let t = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in t.into_iter().enumerate() {
        let file = if i % 2 == 0 { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" };
        map.insert(k.clone(), serde_json::json!(file));
        if i % 2 == 0 { a.insert(k, v) } else { b.insert(k, v) };
    }
    candle_core::safetensors::save(&a, d.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, d.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    let imgs = vec![image("wide.png"), image("tall.png")];
    let single = SiglipEncoder::load(&HfParams::new(src)).unwrap().encode_batch(&imgs).unwrap();
    let sharded = SiglipEncoder::load(&HfParams::new(d.clone())).unwrap().encode_batch(&imgs).unwrap();
    assert_eq!(single, sharded);

    let mut pre: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("preprocessor_config.json")).unwrap()).unwrap();
    pre["size"] = serde_json::json!({"height": 40, "width": 40});
    std::fs::write(d.join("preprocessor_config.json"), pre.to_string()).unwrap();
    let e = SiglipEncoder::load(&HfParams::new(d.clone())).err().expect("must fail").to_string();
    assert!(e.contains("image_size 32"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

use common::geoclip_dir;

/// GeoCLIP location tower with the REAL weights of the geoclip wheel: raw 512-d features of 260
/// coordinates (poles, antimeridian, cities, random) match the geoclip package's outputs.
#[test]
fn geoclip_location_matches_package() {
    let Some(dir) = geoclip_dir() else { return };
    let r = candle_core::safetensors::load(fixtures().join("geoclip-location.safetensors"), &Device::Cpu).unwrap();
    let coords: Vec<(f64, f64)> = r["coords"].to_vec2::<f32>().unwrap().iter().map(|c| (c[0] as f64, c[1] as f64)).collect();
    let want = rows(&r["features"]);
    let enc = LocationEncoder::load(&dir, &Device::Cpu).unwrap();
    let got = rows(&enc.features(&coords).unwrap());
    let mut worst = 1f64;
    for (g, w) in got.iter().zip(&want) {
        let c = cos(g, w);
        worst = worst.min(c);
        let (ng, nw) = (g.iter().map(|x| x * x).sum::<f32>().sqrt(), w.iter().map(|x| x * x).sum::<f32>().sqrt());
        assert!((ng - nw).abs() / nw < 1e-3, "norm {ng} vs {nw}");
    }
    assert!(worst >= 0.9999, "worst cosine {worst}");
    // Nearby places are more similar than far-apart ones (the weights are real).
    let v = enc.encode(&[(48.85, 2.35), (48.9, 2.4), (-33.9, 151.2)]).unwrap();
    assert!(cos(&v[..512], &v[512..1024]) > cos(&v[..512], &v[1024..]));
    let gallery = georag::embed::geoclip::load_gallery(&dir).unwrap();
    assert_eq!(gallery.len(), 100_000);
}

/// GeoCLIP image MLP (REAL weights from the geoclip wheel) on top of the tiny random-weight CLIP
/// (real ViT-L/14 weights cannot exist in CI): matches the MLP applied by PyTorch.
#[test]
fn geoclip_image_mlp_matches_package() {
    let Some(dir) = geoclip_dir() else { return };
    let enc = GeoclipImageEncoder::load(&HfParams::new(fixtures().join("clip-tiny")), &dir).unwrap();
    let (names, _) = reference("clip-tiny");
    let want = candle_core::safetensors::load(fixtures().join("geoclip-image-on-clip-tiny.safetensors"), &Device::Cpu).unwrap();
    let want = rows(&want["embeddings"]);
    let imgs: Vec<_> = names.iter().map(|n| image(n)).collect();
    let got = enc.encode_batch(&imgs).unwrap();
    for i in 0..names.len() {
        let c = cos(&got[i * 512..(i + 1) * 512], &want[i]);
        assert!(c >= 0.9999, "{}: cosine {c}", names[i]);
    }
}

/// The CPU f32 transformer path (`embed::vit`, what runs on the CPU) against candle's graph of
/// the same model (what runs on CUDA), on the tiny random-weight CLIP and SigLIP fixtures: the
/// same embeddings to float rounding, for a batch of one and for the whole set in one batch
/// (so per-image offsets inside a batch are exercised).
#[test]
fn cpu_path_matches_candle_graph() {
    use georag::embed::vit::Kernels;
    let encoders: Vec<(&str, Box<dyn Encoder>, Box<dyn Encoder>)> = vec![
        (
            "clip-tiny",
            Box::new(ClipEncoder::load_with(&HfParams::new(fixtures().join("clip-tiny")), Kernels::Auto).unwrap()),
            Box::new(ClipEncoder::load_with(&HfParams::new(fixtures().join("clip-tiny")), Kernels::Candle).unwrap()),
        ),
        (
            "siglip-tiny",
            Box::new(SiglipEncoder::load_with(&HfParams::new(fixtures().join("siglip-tiny")), Kernels::Auto).unwrap()),
            Box::new(SiglipEncoder::load_with(&HfParams::new(fixtures().join("siglip-tiny")), Kernels::Candle).unwrap()),
        ),
    ];
    for (model, cpu, graph) in &encoders {
        assert_eq!(cpu.fingerprint(), graph.fingerprint(), "{model}: the implementation is not part of the model's identity");
        let (names, _) = reference(model);
        let imgs: Vec<_> = names.iter().map(|n| image(n)).collect();
        let d = cpu.dim();
        let one: Vec<f32> = imgs.iter().flat_map(|i| cpu.encode_batch(std::slice::from_ref(i)).unwrap()).collect();
        let all = cpu.encode_batch(&imgs).unwrap();
        let want = graph.encode_batch(&imgs).unwrap();
        assert_eq!(all.len(), imgs.len() * d);
        for (label, got) in [("batch of one", &one), ("one batch", &all)] {
            for (i, (g, w)) in got.chunks(d).zip(want.chunks(d)).enumerate() {
                let c = cos(g, w);
                let max = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(c >= 0.999_999 && max < 1e-4, "{model} {label}, image {i}: cosine {c}, max |diff| {max}");
            }
        }
    }
}

/// The CUDA variants of the parity tests: the same tiny random-weight CLIP and SigLIP on
/// `cuda:0` through candle's graph, in f32 (cosine >= 0.9999 with transformers) and f16 / bf16
/// (>= 0.999). Compiled only with `--features cuda` and run only on a machine with a GPU; CI has
/// neither, so these never run there.
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use georag::embed::hf::Dtype;

    fn params(model: &str, dtype: Dtype) -> HfParams {
        let mut p = HfParams::new(fixtures().join(model));
        p.device = "cuda:0".into();
        p.dtype = dtype;
        p
    }

    #[test]
    fn clip_tiny_on_cuda_matches_transformers() {
        for (dtype, min) in [(Dtype::F32, 0.9999), (Dtype::F16, 0.999), (Dtype::Bf16, 0.999)] {
            let enc = ClipEncoder::load(&params("clip-tiny", dtype)).unwrap();
            check_parity_within(&enc, "clip-tiny", CLIP_STD, min);
        }
    }

    #[test]
    fn siglip_tiny_on_cuda_matches_transformers() {
        for (dtype, min) in [(Dtype::F32, 0.9999), (Dtype::F16, 0.999), (Dtype::Bf16, 0.999)] {
            let enc = SiglipEncoder::load(&params("siglip-tiny", dtype)).unwrap();
            check_parity_within(&enc, "siglip-tiny", [0.5; 3], min);
        }
    }
}
