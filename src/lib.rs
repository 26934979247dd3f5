//! georag: an offline evaluation harness for image geolocalization with retrieval-augmented
//! multimodal LLMs. Modules follow the pipeline stages, in the order data flows through them;
//! see `ARCHITECTURE.md` for each module's invariants.

pub mod config;
pub mod ingest;
pub mod decode;
pub mod embed;
pub mod align;
pub mod index;
pub mod retrieval;
pub mod prompt;
pub mod generate;
pub mod store;
pub mod parse;
pub mod select;
pub mod metrics;
pub mod region;
pub mod report;
pub mod eval;
pub mod gate;
pub mod pipeline;
pub mod runs;
pub mod sweep;
pub mod validate;
pub mod provenance;
pub mod record;
pub mod util;
