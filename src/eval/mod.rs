//! Scoring of external prediction files (in progress).
