//! Fingerprints: short sha256 digests of everything that produced an artefact.
//!
//! Invariant: a cache entry (embeddings, index, run outputs) is reused only when its fingerprint,
//! computed from all inputs and parameters that change its content, matches exactly.

use sha2::{Digest, Sha256};

/// Incremental fingerprint builder. Each field is length-prefixed so that concatenations of
/// different field splits never collide.
#[derive(Clone, Default)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new(kind: &str) -> Self {
        let mut f = Fingerprint(Sha256::new());
        f.field(kind);
        f
    }
    pub fn field(&mut self, value: impl AsRef<[u8]>) -> &mut Self {
        let v = value.as_ref();
        self.0.update((v.len() as u64).to_le_bytes());
        self.0.update(v);
        self
    }
    /// Add a serialisable value through its canonical JSON form.
    pub fn json<T: serde::Serialize>(&mut self, value: &T) -> &mut Self {
        let s = serde_json::to_string(value).expect("fingerprinted values serialise");
        self.field(s)
    }
    /// The first 128 bits of the digest (response-store keys).
    pub fn digest128(&self) -> u128 {
        u128::from_be_bytes(self.0.clone().finalize()[..16].try_into().expect("16 bytes"))
    }
    /// The 16-hex-digit digest used in file names.
    pub fn finish(&self) -> String {
        hex::encode(&self.0.clone().finalize()[..8])
    }
}

/// Full hex sha256 of bytes (image checksums).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn field_boundaries_matter() {
        let a = Fingerprint::new("k").field("ab").field("c").finish();
        let b = Fingerprint::new("k").field("a").field("bc").finish();
        assert_ne!(a, b);
        assert_eq!(a, Fingerprint::new("k").field("ab").field("c").finish());
    }
}
