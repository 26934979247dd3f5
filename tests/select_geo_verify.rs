//! `geo_verify` (G3's geo-verification) on GeoCLIP's REAL location-tower weights (the geoclip
//! wheel, fetched by `make test`; skips with a printed reason without it) and SYNTHETIC image
//! features: a query's "image embedding" is the location embedding of its true place plus
//! seeded noise, standing in for an aligned image tower. The selector must then prefer the
//! candidate nearest the truth.

mod common;

use georag::embed::geoclip::LocationEncoder;
use georag::metrics::{EARTH_RADIUS_KM, haversine_km};
use georag::record::{LatLon, Status};
use georag::retrieval::QueryNeighbours;
use georag::select::generated::GeoVerify;
use georag::select::{Candidates, Selector};
use georag::util::rng::Rng;
use std::sync::Arc;

fn moved(p: LatLon, km: f64, bearing_deg: f64) -> LatLon {
    let d = km / EARTH_RADIUS_KM;
    let (la, lo, b) = (p.lat.to_radians(), p.lon.to_radians(), bearing_deg.to_radians());
    let la2 = (la.sin() * d.cos() + la.cos() * d.sin() * b.cos()).asin();
    let lo2 = lo + (b.sin() * d.sin() * la.cos()).atan2(d.cos() - la.sin() * la2.sin());
    LatLon { lat: la2.to_degrees(), lon: ((lo2.to_degrees() + 540.0) % 360.0) - 180.0 }
}

#[test]
fn geo_verify_prefers_the_candidate_nearest_the_truth() {
    let Some(dir) = common::geoclip_dir() else { return };
    let loc = Arc::new(LocationEncoder::load(&dir, &candle_core::Device::Cpu).unwrap());
    let truths = [
        LatLon { lat: 48.8566, lon: 2.3522 },
        LatLon { lat: -33.8688, lon: 151.2093 },
        LatLon { lat: 40.7128, lon: -74.0060 },
        LatLon { lat: -1.2921, lon: 36.8219 },
        LatLon { lat: 35.6762, lon: 139.6503 },
        LatLon { lat: -22.9068, lon: -43.1729 },
    ];
    // Synthetic image features: the truth's location embedding + noise, renormalised.
    let emb = loc.encode(&truths.iter().map(|t| (t.lat, t.lon)).collect::<Vec<_>>()).unwrap();
    let mut rng = Rng::new(11);
    let mut feats = Vec::with_capacity(emb.len());
    for row in emb.chunks(512) {
        let noisy: Vec<f32> = row.iter().map(|v| v + 0.01 * rng.normal() as f32).collect();
        let n = noisy.iter().map(|v| v * v).sum::<f32>().sqrt();
        feats.extend(noisy.iter().map(|v| v / n));
    }
    let gv = GeoVerify { image_features: Arc::new(feats), dim: 512, location: loc };
    for (q, &t) in truths.iter().enumerate() {
        // The near candidate is placed third, so `first` would miss it.
        let cands = [moved(t, 3000.0, 40.0), moved(t, 800.0, 200.0), moved(t, 10.0, 90.0), truths[(q + 1) % truths.len()]];
        let nb = QueryNeighbours { query_id: format!("q{q}"), truth: t, status: Status::Ok, similar: vec![], dissimilar: vec![], removed: Default::default() };
        let got = gv.select(&Candidates { neighbours: &nb, generated: &cands, query: q }).unwrap();
        assert!(haversine_km(got, t, EARTH_RADIUS_KM) < 20.0, "query {q}: chose {got:?}, truth {t:?}");
        let s = gv.scores(q, &[moved(t, 5.0, 0.0), moved(t, 500.0, 0.0), moved(t, 5000.0, 0.0)]).unwrap();
        // Near beats far (GeoCLIP's similarity is not monotonic across continents, so only the
        // nearest is pinned).
        assert!(s[0] > s[1] && s[0] > s[2], "query {q}: the 5 km point should score highest: {s:?}");
    }
    // No candidates: no answer (the method's fallback decides).
    let nb = QueryNeighbours { query_id: "q".into(), truth: truths[0], status: Status::Ok, similar: vec![], dissimilar: vec![], removed: Default::default() };
    assert!(gv.select(&Candidates { neighbours: &nb, generated: &[], query: 0 }).is_none());
}
