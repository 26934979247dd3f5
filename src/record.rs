//! Records that flow between stages: coordinates, per-sample statuses, prediction records.
//!
//! Invariant: a [`PredictionRecord`] carries a predicted coordinate exactly when its status is
//! [`Status::Ok`]; every other status is a failure that the scorer counts under the declared
//! failure policy. A failure is never turned into a fake coordinate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A WGS-84 coordinate in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// Why a coordinate was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error("coordinate is not a finite number")]
    NotFinite,
    #[error("latitude outside [-90, 90] (swapped lat/lon columns?)")]
    LatOutOfRange,
    #[error("longitude outside [-180, 180]")]
    LonOutOfRange,
}

impl LatLon {
    /// A coordinate, validated: finite, |lat| <= 90, |lon| <= 180. Never clamps.
    pub fn new(lat: f64, lon: f64) -> Result<Self, CoordError> {
        if !lat.is_finite() || !lon.is_finite() {
            return Err(CoordError::NotFinite);
        }
        if lat.abs() > 90.0 {
            return Err(CoordError::LatOutOfRange);
        }
        if lon.abs() > 180.0 {
            return Err(CoordError::LonOutOfRange);
        }
        Ok(LatLon { lat, lon })
    }
}

impl fmt::Display for LatLon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:.5}, {:.5})", self.lat, self.lon)
    }
}

/// Per-sample outcome. Stored as its snake_case string in Parquet/CSV status columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A valid predicted coordinate.
    Ok,
    /// The image has no prediction at all (no row in a predictions file).
    Missing,
    /// A prediction cell was empty or not a number.
    Unparseable,
    /// A predicted coordinate outside the valid range.
    OutOfRange,
    /// The query image could not be decoded.
    DecodeFailed,
    /// Retrieval returned no usable neighbour.
    NoNeighbours,
    /// A generator request failed after its retries.
    RequestFailed,
    /// The model declined to answer (no coordinate, refusal wording).
    Refused,
    /// A generated coordinate out of range (never clamped).
    InvalidCoords,
    /// The answer was cut at `max_tokens` (`finish_reason: length`) before a coordinate.
    Truncated,
    /// No sample of a query gave a usable coordinate and no fallback applied.
    NoValidCandidate,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Ok,
        Status::Missing,
        Status::Unparseable,
        Status::OutOfRange,
        Status::DecodeFailed,
        Status::NoNeighbours,
        Status::RequestFailed,
        Status::Refused,
        Status::InvalidCoords,
        Status::Truncated,
        Status::NoValidCandidate,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Unparseable => "unparseable",
            Status::OutOfRange => "out_of_range",
            Status::DecodeFailed => "decode_failed",
            Status::NoNeighbours => "no_neighbours",
            Status::RequestFailed => "request_failed",
            Status::Refused => "refused",
            Status::InvalidCoords => "invalid_coords",
            Status::Truncated => "truncated",
            Status::NoValidCandidate => "no_valid_candidate",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One evaluated image: its ground truth and the method's prediction or failure.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictionRecord {
    pub id: String,
    pub truth: LatLon,
    /// `Some` exactly when `status == Status::Ok`.
    pub pred: Option<LatLon>,
    pub status: Status,
}

impl PredictionRecord {
    pub fn ok(id: impl Into<String>, truth: LatLon, pred: LatLon) -> Self {
        PredictionRecord { id: id.into(), truth, pred: Some(pred), status: Status::Ok }
    }
    pub fn failed(id: impl Into<String>, truth: LatLon, status: Status) -> Self {
        debug_assert!(status != Status::Ok);
        PredictionRecord { id: id.into(), truth, pred: None, status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn validation_never_clamps() {
        assert_eq!(LatLon::new(91.0, 0.0), Err(CoordError::LatOutOfRange));
        assert_eq!(LatLon::new(0.0, -180.5), Err(CoordError::LonOutOfRange));
        assert_eq!(LatLon::new(f64::NAN, 0.0), Err(CoordError::NotFinite));
        assert!(LatLon::new(-90.0, 180.0).is_ok());
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
