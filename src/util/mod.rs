//! Small shared utilities: allocator thresholds, atomic writes, fingerprints, a minimal HTTP server, a seeded RNG, "did you mean" suggestions,
//! progress reporting.

pub mod alloc;
pub mod atomic;
pub mod fingerprint;
pub mod httpd;
pub mod pq;
pub mod progress;
pub mod rng;
pub mod suggest;
