//! georag: an offline evaluation harness for image geolocalization with retrieval-augmented
//! multimodal LLMs. Modules follow the pipeline stages; see `ARCHITECTURE.md`.

pub mod eval;
pub mod metrics;
pub mod record;
pub mod report;
pub mod util;
