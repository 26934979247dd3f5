//! Parity of the CLIP text tower (`embed::clip_text`) with transformers, without downloads.
//!
//! The model is a TINY RANDOM-WEIGHT `CLIPModel` built by
//! `tests/fixtures/make_clip_text_fixture.py` (real checkpoints cannot exist in CI); its
//! tokenizer is OpenAI CLIP's real byte-level BPE cut to its first 3000 merges, written by
//! transformers, whose ids the script checked against OpenAI's own Python tokenizer. The
//! references (token ids with truncation to 16 positions, L2-normalised `get_text_features`) are
//! transformers' outputs.

mod common;

use candle_core::Device;
use common::encoders::{cos, fixtures, rows};
use georag::embed::clip_text::{self, ClipTextEncoder};

fn texts() -> (Vec<String>, Vec<usize>, usize) {
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("clip-text-tiny/reference.json")).unwrap()).unwrap();
    let texts = j["texts"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let lens = j["untruncated_lengths"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    (texts, lens, j["context"].as_u64().unwrap() as usize)
}

/// Token ids equal transformers' for every text (accents, CJK, upper case, runs of whitespace,
/// a text cut at 16 positions, the empty string), and the embeddings reach cosine >= 0.99999.
#[test]
fn clip_text_tiny_matches_transformers() {
    let dir = fixtures().join("clip-text-tiny");
    let enc = ClipTextEncoder::load(&dir).unwrap();
    let r = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let want_ids = r["input_ids"].to_vec2::<i64>().unwrap();
    let want = rows(&r["embeddings"]);
    let (texts, lens, context) = texts();
    assert_eq!(enc.config().max_position_embeddings, context);
    let eos = enc.config().eos_token_id as i64;
    let mut truncated = 0;
    for (i, t) in texts.iter().enumerate() {
        let ids: Vec<i64> = enc.tokenize(t).unwrap().into_iter().map(i64::from).collect();
        assert_eq!(ids.len(), lens[i].min(context), "{t:?}");
        truncated += usize::from(lens[i] > context);
        // transformers pads with <|endoftext|> (the fixture's pad token) up to 16.
        let padded: Vec<i64> = ids.iter().copied().chain(std::iter::repeat(eos)).take(context).collect();
        assert_eq!(padded, want_ids[i], "token ids of {t:?}");
    }
    assert!(truncated >= 2, "the fixture must exercise truncation");
    let got = enc.encode_texts(&texts, 4).unwrap();
    assert_eq!(got.len(), texts.len() * enc.dim());
    for (i, w) in want.iter().enumerate() {
        let g = &got[i * enc.dim()..(i + 1) * enc.dim()];
        let c = cos(g, w);
        assert!(c >= 0.99999, "text {i} {:?}: cosine {c}", texts[i]);
    }
    let (fp, dim) = clip_text::identity(&dir).unwrap();
    assert_eq!((fp.as_str(), dim), (enc.fingerprint(), enc.dim()));
}

/// A text's embedding does not depend on its batch (padding after <|endoftext|> is invisible
/// under the causal mask), and repeated strings are embedded once with the same result.
#[test]
fn clip_text_is_batch_invariant() {
    let enc = ClipTextEncoder::load(&fixtures().join("clip-text-tiny")).unwrap();
    let (texts, _, _) = texts();
    let alone: Vec<f32> = texts.iter().flat_map(|t| enc.encode_texts(std::slice::from_ref(t), 1).unwrap()).collect();
    let mut twice = texts.clone();
    twice.extend(texts.iter().cloned());
    let together = enc.encode_texts(&twice, 64).unwrap();
    let d = enc.dim();
    for i in 0..twice.len() {
        let c = cos(&together[i * d..(i + 1) * d], &alone[(i % texts.len()) * d..(i % texts.len() + 1) * d]);
        assert!(c > 0.999999, "text {i}: cosine {c}");
    }
}

/// The legacy `eos_token_id: 2` of the OpenAI uploads pools at the largest id, as transformers
/// does; with a broken tokenizer file or none the error names the file.
#[test]
fn clip_text_legacy_eos_and_missing_tokenizer() {
    let src = fixtures().join("clip-text-tiny");
    let d = common::tmp("clip-text-legacy");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["text_config"]["eos_token_id"] = 2.into();
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let legacy = ClipTextEncoder::load(&d).unwrap();
    let modern = ClipTextEncoder::load(&src).unwrap();
    let (texts, _, _) = texts();
    // <|endoftext|> is the largest id, so both rules pool at the same position.
    let a = legacy.encode_texts(&texts, 8).unwrap();
    let b = modern.encode_texts(&texts, 8).unwrap();
    assert!(cos(&a, &b) > 0.999999);
    assert_ne!(legacy.fingerprint(), modern.fingerprint());
    std::fs::write(d.join("tokenizer.json"), "{not json").unwrap();
    let e = ClipTextEncoder::load(&d).err().expect("must fail").to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    let e = ClipTextEncoder::load(&d).err().expect("must fail").to_string();
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}
