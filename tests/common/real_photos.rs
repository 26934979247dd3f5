//! The real photos of `../shared/datasets/im2gps3k_sample50/images/` (read in place, never
//! copied) and the PIL / transformers references of `tests/fixtures/real_photos/`
//! (`tests/fixtures/make_real_photo_refs.py`).

use sha2::Digest;
use std::path::PathBuf;

pub fn refs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real_photos")
}

pub struct Photo {
    pub name: String,
    pub bytes: Vec<u8>,
    pub info: serde_json::Value,
}

/// The photos named in reference.json, read from ../shared and checked to be the same bytes.
pub fn photos() -> Option<Vec<Photo>> {
    let dir = super::shared("datasets/im2gps3k_sample50/images")?;
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(refs_dir().join("reference.json")).unwrap()).unwrap();
    let list = r["photos"].as_array().unwrap();
    assert_eq!(list.len(), 50);
    let mut out = Vec::new();
    for p in list {
        let name = p["name"].as_str().unwrap().to_string();
        let Ok(bytes) = std::fs::read(dir.join(&name)) else {
            eprintln!("SKIP: {name} missing from {}", dir.display());
            return None;
        };
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), p["file_sha256"].as_str().unwrap(), "{name}: not the file the references were made from");
        out.push(Photo { name, bytes, info: p.clone() });
    }
    Some(out)
}

