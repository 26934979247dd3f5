//! Small shared utilities: atomic writes, fingerprints, a minimal HTTP server, a seeded RNG, "did you mean" suggestions,
//! progress reporting.

pub mod atomic;
pub mod fingerprint;
pub mod httpd;
pub mod pq;
pub mod progress;
pub mod rng;
pub mod suggest;
