//! Real JPEGs (`../shared/datasets/im2gps3k_sample50/images/`, read in place and skipped with a
//! printed reason when absent) against the references of `tests/fixtures/real_photos/`, made by
//! `tests/fixtures/make_real_photo_refs.py` with Pillow 12.3.0 and transformers 5.23.0:
//! - georag's RGB pixels equal PIL's `Image.open(f).convert("RGB")` exactly, for every photo;
//! - `decode_rgb_draft` equals PIL's `draft("RGB", (64, 64))` exactly (DCT-domain scaling);
//! (The tiny CLIP and SigLIP parity on these photos is in `encoders_parity.rs`.)

mod common;

use georag::decode::{DEFAULT_MAX_PIXELS, decode_rgb, decode_rgb_draft};
use sha2::Digest;
use common::real_photos::photos;

fn sha(img: &image::RgbImage) -> String {
    hex::encode(sha2::Sha256::digest(img.as_raw()))
}

#[test]
fn real_jpegs_decode_to_pils_pixels_exactly() {
    let Some(photos) = photos() else { return };
    let mut differ = Vec::new();
    for p in &photos {
        let img = decode_rgb(&p.bytes, DEFAULT_MAX_PIXELS).unwrap();
        let dims = (p.info["width"].as_u64().unwrap() as u32, p.info["height"].as_u64().unwrap() as u32);
        if img.dimensions() != dims || sha(&img) != p.info["rgb_sha256"].as_str().unwrap() {
            differ.push(p.name.clone());
        }
    }
    assert!(differ.is_empty(), "{} of {} photos differ from PIL's pixels: {differ:?}", differ.len(), photos.len());
}

#[test]
fn real_jpegs_draft_decode_equals_pils_draft() {
    let Some(photos) = photos() else { return };
    let mut differ = Vec::new();
    for p in &photos {
        let img = decode_rgb_draft(&p.bytes, DEFAULT_MAX_PIXELS, Some((64, 64))).unwrap();
        let dims = (p.info["draft64_width"].as_u64().unwrap() as u32, p.info["draft64_height"].as_u64().unwrap() as u32);
        if img.dimensions() != dims || sha(&img) != p.info["draft64_rgb_sha256"].as_str().unwrap() {
            differ.push(p.name.clone());
        }
    }
    assert!(differ.is_empty(), "{} of {} draft decodes differ from PIL's: {differ:?}", differ.len(), photos.len());
}

