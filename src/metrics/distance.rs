//! Great-circle and ellipsoidal distances in kilometres.
//!
//! Invariants: haversine clamps its intermediate to [0, 1], so near-antipodal inputs give
//! pi * R and never NaN; geodesic is Karney's inverse on WGS-84 (the algorithm geopy uses).

use crate::record::LatLon;
use geo::{Distance, Geodesic, Point};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Mean Earth radius used by most papers (and the georag default).
pub const EARTH_RADIUS_KM: f64 = 6371.0;

/// Haversine distance on a sphere of radius `radius_km`.
pub fn haversine_km(a: LatLon, b: LatLon, radius_km: f64) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * radius_km * h.clamp(0.0, 1.0).sqrt().asin()
}

/// Ellipsoidal (WGS-84) geodesic distance, Karney (2013) via `geo`/`geographiclib-rs`.
pub fn geodesic_km(a: LatLon, b: LatLon) -> f64 {
    Geodesic.distance(Point::new(a.lon, a.lat), Point::new(b.lon, b.lat)) / 1000.0
}

/// Which distance a score uses. Written as `haversine`, `haversine:RADIUS_KM` or `geodesic`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DistanceModel {
    Haversine { radius_km: f64 },
    Geodesic,
}

impl Default for DistanceModel {
    fn default() -> Self {
        DistanceModel::Haversine { radius_km: EARTH_RADIUS_KM }
    }
}

impl DistanceModel {
    pub fn km(&self, a: LatLon, b: LatLon) -> f64 {
        match *self {
            DistanceModel::Haversine { radius_km } => haversine_km(a, b, radius_km),
            DistanceModel::Geodesic => geodesic_km(a, b),
        }
    }
    /// `"haversine"` or `"geodesic"`.
    pub fn name(&self) -> &'static str {
        match self {
            DistanceModel::Haversine { .. } => "haversine",
            DistanceModel::Geodesic => "geodesic",
        }
    }
    /// Sphere radius, `None` for the ellipsoid.
    pub fn radius_km(&self) -> Option<f64> {
        match *self {
            DistanceModel::Haversine { radius_km } => Some(radius_km),
            DistanceModel::Geodesic => None,
        }
    }
    /// Human description for table footnotes.
    pub fn describe(&self) -> String {
        match *self {
            DistanceModel::Haversine { radius_km } => format!("haversine, R = {radius_km} km"),
            DistanceModel::Geodesic => "geodesic on the WGS-84 ellipsoid (Karney)".to_string(),
        }
    }
}

/// Error parsing a distance model name.
#[derive(Debug, thiserror::Error)]
#[error("unknown distance model `{0}`: expected `haversine`, `haversine:RADIUS_KM` or `geodesic`")]
pub struct DistanceModelError(pub String);

impl FromStr for DistanceModel {
    type Err = DistanceModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "haversine" => return Ok(DistanceModel::default()),
            "geodesic" => return Ok(DistanceModel::Geodesic),
            _ => {}
        }
        if let Some(r) = s.strip_prefix("haversine:") {
            if let Ok(radius_km) = r.trim().parse::<f64>() {
                if radius_km.is_finite() && radius_km > 0.0 {
                    return Ok(DistanceModel::Haversine { radius_km });
                }
            }
        }
        Err(DistanceModelError(s.to_string()))
    }
}

impl fmt::Display for DistanceModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DistanceModel::Haversine { radius_km } if radius_km == EARTH_RADIUS_KM => f.write_str("haversine"),
            DistanceModel::Haversine { radius_km } => write!(f, "haversine:{radius_km}"),
            DistanceModel::Geodesic => f.write_str("geodesic"),
        }
    }
}

impl Serialize for DistanceModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DistanceModel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    /// City pairs against published great-circle distances (R = 6371 km, e.g. the
    /// movable-type.co.uk calculator): London-Paris 343.5 km, New York-Los Angeles 3936 km,
    /// Sydney-Tokyo 7793 km (rounded figures, checked to 0.5 %).
    #[test]
    fn known_city_pairs() {
        let cases = [
            (p(51.5074, -0.1278), p(48.8566, 2.3522), 343.5),
            (p(40.7128, -74.0060), p(34.0522, -118.2437), 3936.0),
            (p(-33.8688, 151.2093), p(35.6762, 139.6503), 7793.0),
        ];
        for (a, b, want) in cases {
            let d = haversine_km(a, b, EARTH_RADIUS_KM);
            assert!((d - want).abs() / want < 0.005, "{a} {b}: {d} vs {want}");
        }
    }

    #[test]
    fn antipodes_poles_and_date_line() {
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        // Haversine is ill-conditioned at the antipode: h = 1 - delta with delta ~ 1e-16 from
        // rounding gives asin(sqrt(h)) = pi/2 - sqrt(2 delta), i.e. ~2e-4 km off. A metre is the
        // honest tolerance there (and irrelevant for 1 km thresholds).
        let d = haversine_km(p(10.0, 20.0), p(-10.0, -160.0), EARTH_RADIUS_KM);
        assert!(!d.is_nan() && (d - half).abs() < 1e-3, "{d}");
        // Pole to pole through any meridian.
        assert!((haversine_km(p(90.0, 0.0), p(-90.0, 77.0), EARTH_RADIUS_KM) - half).abs() < 1e-3);
        // All longitudes at a pole are the same point.
        assert!(haversine_km(p(90.0, -170.0), p(90.0, 40.0), EARTH_RADIUS_KM) < 1e-9);
        // Across the date line: 1 degree of longitude on the equator, not 359.
        let d = haversine_km(p(0.0, 179.5), p(0.0, -179.5), EARTH_RADIUS_KM);
        assert!((d - 111.195).abs() < 0.01, "{d}");
        let g = geodesic_km(p(0.0, 179.5), p(0.0, -179.5));
        assert!((g - 111.319).abs() < 0.01, "{g}");
    }

    /// geopy.distance.geodesic((51.5074, -0.1278), (48.8566, 2.3522)).km = 343.923... (WGS-84).
    #[test]
    fn geodesic_matches_geopy() {
        let g = geodesic_km(p(51.5074, -0.1278), p(48.8566, 2.3522));
        assert!((g - 343.92).abs() < 0.01, "{g}");
    }

    #[test]
    fn parses_models() {
        assert_eq!("haversine".parse::<DistanceModel>().unwrap(), DistanceModel::default());
        assert_eq!(
            "haversine:6378.137".parse::<DistanceModel>().unwrap(),
            DistanceModel::Haversine { radius_km: 6378.137 }
        );
        assert_eq!("geodesic".parse::<DistanceModel>().unwrap(), DistanceModel::Geodesic);
        assert!("vincenty".parse::<DistanceModel>().is_err());
        assert!("haversine:-1".parse::<DistanceModel>().is_err());
    }
}
