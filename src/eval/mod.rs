//! Scoring of external prediction files (in progress).

pub mod published;
