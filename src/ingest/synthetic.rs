//! The synthetic world: seeded, geotagged JPEG photos on the real globe whose appearance depends
//! on location at several scales, so that retrieval accuracy rises with the distance threshold as
//! it does on real benchmarks. See `datasets/README.md` for what it is and is not.
//!
//! Scales, coarse to fine:
//! - continent (~3000 km): the sky and ground palette;
//! - country cell (8 deg, ~900 km): horizon height, ground tint, ground stripe orientation/period;
//! - region cell (2 deg, ~220 km): the sky gradient's second colour;
//! - city (~25 km): a skyline of coloured blocks on the horizon (urban and landmark photos only);
//! - landmark (< 1 km): two or three large saturated shapes shared by every photo of that place.
//!
//! Per-photo noise: viewpoint (shift and zoom), lighting (brightness and colour cast), sensor
//! noise, and an occluder in some photos.
//!
//! Invariant: photo `i` of a split depends only on (world parameters, split, i), so generation is
//! parallel and bit-reproducible; the generator version is part of the dataset fingerprint.

use super::cities::{CITIES, CONTINENTS};
use super::shard::{DatasetRow, Manifest, ShardError, ShardWriter};
use crate::util::fingerprint::{Fingerprint, sha256_hex};
use crate::util::rng::Rng;
use image::{ImageEncoder, RgbImage, codecs::jpeg::JpegEncoder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bumped whenever generated pixels or coordinates change for the same parameters.
pub const GENERATOR_VERSION: &str = "synthetic-world/1";

/// Parameters of the world (shared by the database and the queries of one experiment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldParams {
    pub seed: u64,
    /// Landmarks per unit of city density weight.
    pub landmarks_per_weight: f64,
    /// Share of landmarks that never appear in the database (only in queries).
    pub query_only_landmarks: f64,
    /// Share of photos showing a landmark, in the database and in the queries.
    pub landmark_share_database: f64,
    pub landmark_share_queries: f64,
    /// Share of non-landmark photos taken in the city (the rest are up to `rural_radius_km` away).
    pub urban_share: f64,
    pub city_sigma_km: f64,
    pub rural_radius_km: f64,
    /// Side of the square photos, pixels.
    pub image_size: u32,
    pub jpeg_quality: u8,
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            seed: 7,
            landmarks_per_weight: 6.0,
            query_only_landmarks: 0.4,
            landmark_share_database: 0.35,
            landmark_share_queries: 0.2,
            urban_share: 0.45,
            city_sigma_km: 8.0,
            rural_radius_km: 400.0,
            image_size: 64,
            jpeg_quality: 85,
        }
    }
}

/// Which draw of the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Database,
    Queries,
}

impl Split {
    /// `database` or `queries`, as in the config.
    pub fn name(self) -> &'static str {
        match self {
            Split::Database => "database",
            Split::Queries => "queries",
        }
    }
    /// Short prefix of photo ids: `db-000001`, `q-000001`.
    fn tag(self) -> &'static str {
        match self {
            Split::Database => "db",
            Split::Queries => "q",
        }
    }
}

struct Landmark {
    city: usize,
    lat: f64,
    lon: f64,
    in_database: bool,
    shapes: Vec<Shape>,
}

#[derive(Clone, Copy)]
struct Shape {
    kind: u8,
    cx: f32,
    cy: f32,
    r: f32,
    color: [f32; 3],
}

/// The world: landmarks and the cumulative city weights, built from the parameters.
pub struct World {
    params: WorldParams,
    city_cdf: Vec<f64>,
    landmarks: Vec<Landmark>,
    /// Landmark indices per city, all and database-visible.
    by_city: Vec<(Vec<usize>, Vec<usize>)>,
}

const KM_PER_DEG: f64 = 111.195;

fn offset(lat: f64, lon: f64, north_km: f64, east_km: f64) -> (f64, f64) {
    let lat2 = (lat + north_km / KM_PER_DEG).clamp(-85.0, 85.0);
    let coslat = lat.to_radians().cos().max(0.05);
    let mut lon2 = lon + east_km / (KM_PER_DEG * coslat);
    if lon2 > 180.0 {
        lon2 -= 360.0;
    }
    if lon2 < -180.0 {
        lon2 += 360.0;
    }
    (lat2, lon2)
}

fn hue_rgb(h: f64, s: f64, v: f64) -> [f32; 3] {
    let h = h.rem_euclid(1.0) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [((r + m) * 255.0) as f32, ((g + m) * 255.0) as f32, ((b + m) * 255.0) as f32]
}

fn cell_rng(seed: u64, scale: u64, lat: f64, lon: f64, deg: f64) -> Rng {
    let a = ((lat + 90.0) / deg).floor() as i64 as u64;
    let b = ((lon + 180.0) / deg).floor() as i64 as u64;
    Rng::derive(seed, scale.wrapping_mul(1_000_003) ^ (a << 20) ^ b)
}

impl World {
    pub fn new(params: &WorldParams) -> Self {
        let mut city_cdf = Vec::with_capacity(CITIES.len());
        let mut acc = 0.0;
        for c in CITIES {
            acc += c.4;
            city_cdf.push(acc);
        }
        let mut rng = Rng::derive(params.seed, 1);
        let mut landmarks = Vec::new();
        let mut by_city = vec![(Vec::new(), Vec::new()); CITIES.len()];
        for (ci, c) in CITIES.iter().enumerate() {
            let n = (c.4 * params.landmarks_per_weight).round().max(1.0) as usize;
            for _ in 0..n {
                let (lat, lon) = offset(c.1, c.2, rng.normal() * 6.0, rng.normal() * 6.0);
                let in_database = rng.f64() >= params.query_only_landmarks;
                let n_shapes = 2 + rng.below(2);
                let s = params.image_size as f32;
                let shapes = (0..n_shapes)
                    .map(|_| Shape {
                        kind: rng.below(3) as u8,
                        cx: s * rng.range(0.15, 0.85) as f32,
                        cy: s * rng.range(0.15, 0.75) as f32,
                        r: s * rng.range(0.10, 0.22) as f32,
                        color: hue_rgb(rng.f64(), rng.range(0.6, 1.0), rng.range(0.5, 1.0)),
                    })
                    .collect();
                let li = landmarks.len();
                by_city[ci].0.push(li);
                if in_database {
                    by_city[ci].1.push(li);
                }
                landmarks.push(Landmark { city: ci, lat, lon, in_database, shapes });
            }
        }
        World { params: params.clone(), city_cdf, landmarks, by_city }
    }

    pub fn n_landmarks(&self) -> (usize, usize) {
        (self.landmarks.len(), self.landmarks.iter().filter(|l| l.in_database).count())
    }

    /// Generate photo `i` of `split`: its row (JPEG bytes included).
    pub fn photo(&self, split: Split, i: usize) -> DatasetRow {
        let p = &self.params;
        let mut rng = Rng::derive(p.seed, (match split { Split::Database => 2u64, Split::Queries => 3 } << 40) ^ i as u64);
        let total = *self.city_cdf.last().expect("cities");
        let x = rng.f64() * total;
        let mut city = self.city_cdf.partition_point(|&c| c <= x).min(CITIES.len() - 1);
        let landmark_share = match split {
            Split::Database => p.landmark_share_database,
            Split::Queries => p.landmark_share_queries,
        };
        let r = rng.f64();
        let (kind, landmark, lat, lon) = if r < landmark_share {
            let pool = match split {
                Split::Database => &self.by_city[city].1,
                Split::Queries => &self.by_city[city].0,
            };
            if pool.is_empty() {
                let (lat, lon) = offset(CITIES[city].1, CITIES[city].2, rng.normal() * p.city_sigma_km, rng.normal() * p.city_sigma_km);
                ("urban", None, lat, lon)
            } else {
                let li = pool[rng.below(pool.len())];
                let l = &self.landmarks[li];
                city = l.city;
                let (lat, lon) = offset(l.lat, l.lon, rng.normal() * 0.15, rng.normal() * 0.15);
                ("landmark", Some(li), lat, lon)
            }
        } else if rng.f64() < p.urban_share {
            let (lat, lon) = offset(CITIES[city].1, CITIES[city].2, rng.normal() * p.city_sigma_km, rng.normal() * p.city_sigma_km);
            ("urban", None, lat, lon)
        } else {
            let d = p.rural_radius_km * rng.f64().sqrt();
            let a = rng.range(0.0, std::f64::consts::TAU);
            let (lat, lon) = offset(CITIES[city].1, CITIES[city].2, d * a.sin(), d * a.cos());
            ("rural", None, lat, lon)
        };
        let img = self.render(&mut rng, city, kind != "rural", landmark, lat, lon);
        let mut jpeg = Vec::with_capacity(4096);
        JpegEncoder::new_with_quality(&mut jpeg, p.jpeg_quality)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .expect("encoding an in-memory RGB image cannot fail");
        let meta = serde_json::json!({
            "city": CITIES[city].0,
            "continent": CONTINENTS[CITIES[city].3],
            "kind": kind,
            "landmark": landmark,
        });
        DatasetRow {
            id: format!("{}-{i:06}", split.tag()),
            lat,
            lon,
            sha256: sha256_hex(&jpeg),
            image: Some(jpeg),
            image_path: None,
            author: Some(format!("synthetic-user-{}", rng.below(5000))),
            meta: Some(meta.to_string()),
        }
    }

    fn render(&self, rng: &mut Rng, city: usize, urban: bool, landmark: Option<usize>, lat: f64, lon: f64) -> RgbImage {
        let p = &self.params;
        let s = p.image_size as f32;
        let seed = p.seed;
        // Continent palette.
        let mut cr = Rng::derive(seed, 100 + CITIES[city].3 as u64);
        let sky_a = hue_rgb(cr.f64(), cr.range(0.2, 0.7), cr.range(0.7, 1.0));
        let ground_base = hue_rgb(cr.f64(), cr.range(0.3, 0.8), cr.range(0.3, 0.7));
        // Country cell.
        let mut kr = cell_rng(seed, 8, lat, lon, 8.0);
        let horizon = s * kr.range(0.35, 0.65) as f32;
        let tint = hue_rgb(kr.f64(), 0.5, 0.4);
        let ground: [f32; 3] = std::array::from_fn(|c| 0.7 * ground_base[c] + 0.3 * tint[c]);
        let stripe_angle = kr.range(0.0, std::f64::consts::PI) as f32;
        let stripe_period = s * kr.range(0.12, 0.4) as f32;
        // Region cell.
        let mut rr = cell_rng(seed, 2, lat, lon, 2.0);
        let sky_b = hue_rgb(rr.f64(), rr.range(0.3, 0.9), rr.range(0.5, 1.0));
        // City skyline.
        let mut skyline = Vec::new();
        if urban {
            let mut cc = Rng::derive(seed, 10_000 + city as u64);
            let mut x = 0.0f32;
            while x < s {
                let w = s * cc.range(0.06, 0.18) as f32;
                let h = s * cc.range(0.08, 0.35) as f32;
                skyline.push((x, x + w, horizon - h, hue_rgb(cc.f64(), cc.range(0.1, 0.6), cc.range(0.2, 0.9))));
                x += w + s * cc.range(0.0, 0.05) as f32;
            }
        }
        let shapes: &[Shape] = landmark.map(|l| self.landmarks[l].shapes.as_slice()).unwrap_or(&[]);
        // Per-photo noise.
        let dx = rng.range(-0.1, 0.1) as f32 * s;
        let dy = rng.range(-0.05, 0.05) as f32 * s;
        let zoom = rng.range(0.85, 1.2) as f32;
        let bright = rng.range(0.75, 1.2) as f32;
        let cast: [f32; 3] = std::array::from_fn(|_| rng.range(-12.0, 12.0) as f32);
        let occluder = (rng.f64() < 0.3).then(|| {
            let w = s * rng.range(0.1, 0.3) as f32;
            let x0 = rng.range(0.0, 1.0) as f32 * (s - w);
            let y0 = rng.range(0.4, 0.8) as f32 * s;
            (x0, x0 + w, y0, hue_rgb(rng.f64(), 0.4, rng.range(0.2, 0.9)))
        });
        let (sa, ca) = stripe_angle.sin_cos();
        let mut img = RgbImage::new(p.image_size, p.image_size);
        for (px, py, pix) in img.enumerate_pixels_mut() {
            let u = (px as f32 - s / 2.0) / zoom + s / 2.0 - dx;
            let v = (py as f32 - s / 2.0) / zoom + s / 2.0 - dy;
            let mut col = if v < horizon {
                let t = (v / horizon).clamp(0.0, 1.0);
                std::array::from_fn(|c| sky_a[c] * (1.0 - t) + sky_b[c] * t)
            } else {
                let phase = (u * ca + v * sa) / stripe_period;
                let k = 1.0 + 0.18 * (phase * std::f32::consts::TAU).sin();
                std::array::from_fn(|c| ground[c] * k)
            };
            for &(x0, x1, top, c) in &skyline {
                if u >= x0 && u < x1 && v >= top && v < horizon {
                    col = c;
                }
            }
            for sh in shapes {
                let (du, dv) = (u - sh.cx, v - sh.cy);
                let inside = match sh.kind {
                    0 => du * du + dv * dv <= sh.r * sh.r,
                    1 => du.abs() <= sh.r && dv.abs() <= sh.r * 0.6,
                    _ => dv <= sh.r && dv >= -sh.r && du.abs() <= (sh.r - dv) * 0.5,
                };
                if inside {
                    col = sh.color;
                }
            }
            if let Some((x0, x1, y0, c)) = occluder {
                if (px as f32) >= x0 && (px as f32) < x1 && (py as f32) >= y0 {
                    col = c;
                }
            }
            let noise = rng.normal() as f32 * 5.0;
            pix.0 = std::array::from_fn(|c| (col[c] * bright + cast[c] + noise).clamp(0.0, 255.0) as u8);
        }
        img
    }
}

/// Configuration of a synthetic dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    #[serde(default)]
    pub world: WorldParams,
    pub split: Split,
    pub n: usize,
}

impl SyntheticSpec {
    /// Fingerprint of the generator output, known before generating (cache key). The decode
    /// policy is part of it because it is part of the manifest fingerprint of what is generated.
    pub fn fingerprint(&self) -> String {
        Fingerprint::new(GENERATOR_VERSION).field(crate::decode::DECODE_POLICY).json(self).finish()
    }
}

/// Generate the dataset into `dir` through the shard writer.
pub fn generate(spec: &SyntheticSpec, dir: &Path, shard_rows: usize, progress: &crate::util::progress::Progress) -> Result<Manifest, ShardError> {
    let world = World::new(&spec.world);
    let name = format!("synthetic-{}", spec.split.tag());
    let mut w = ShardWriter::new(dir, &name, shard_rows)?;
    let mut start = 0;
    while start < spec.n {
        let end = (start + shard_rows).min(spec.n);
        let rows: Vec<DatasetRow> = (start..end)
            .into_par_iter()
            .map(|i| {
                let r = world.photo(spec.split, i);
                progress.inc(1);
                r
            })
            .collect();
        for r in rows {
            w.push(r)?;
        }
        start = end;
    }
    let (n_lm, n_lm_db) = world.n_landmarks();
    w.finish(serde_json::json!({
        "generator": GENERATOR_VERSION,
        "spec": spec,
        "landmarks": n_lm,
        "landmarks_in_database": n_lm_db,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_reproducible_and_valid() {
        let w = World::new(&WorldParams::default());
        let a = w.photo(Split::Queries, 42);
        let b = w.photo(Split::Queries, 42);
        assert_eq!(a, b);
        assert_ne!(a.sha256, w.photo(Split::Database, 42).sha256);
        let img = crate::decode::decode_rgb(a.image.as_ref().unwrap(), 1 << 20).unwrap();
        assert_eq!(img.dimensions(), (64, 64));
        for i in 0..500 {
            let r = w.photo(Split::Database, i);
            assert!(r.lat.abs() <= 90.0 && r.lon.abs() <= 180.0, "{r:?}");
        }
    }

    /// Photos of the same landmark are closer under the IM2GPS descriptor than random pairs, and
    /// photos of the same country cell closer than pairs from different continents: the
    /// multi-scale structure the retrieval stage relies on.
    #[test]
    fn descriptor_similarity_follows_the_scales() {
        use crate::embed::Encoder;
        let w = World::new(&WorldParams::default());
        let rows: Vec<DatasetRow> = (0..600).map(|i| w.photo(Split::Database, i)).collect();
        let enc = crate::embed::im2gps::Im2gpsEncoder::new(Default::default()).unwrap();
        let imgs: Vec<_> = rows.iter().map(|r| crate::decode::decode_rgb(r.image.as_ref().unwrap(), 1 << 20).unwrap()).collect();
        let v = enc.encode_batch(&imgs).unwrap();
        let d = enc.dim();
        let cos = |i: usize, j: usize| v[i * d..(i + 1) * d].iter().zip(&v[j * d..(j + 1) * d]).map(|(a, b)| a * b).sum::<f32>() as f64;
        let meta: Vec<serde_json::Value> = rows.iter().map(|r| serde_json::from_str(r.meta.as_ref().unwrap()).unwrap()).collect();
        let (mut same_lm, mut same_city, mut other_cont) = (vec![], vec![], vec![]);
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                let (a, b) = (&meta[i], &meta[j]);
                let both_landmarks = a["landmark"].is_u64() && b["landmark"].is_u64();
                if both_landmarks && a["landmark"] == b["landmark"] {
                    same_lm.push(cos(i, j));
                } else if both_landmarks && a["city"] == b["city"] {
                    // Different landmarks of one city: same skyline, different motif.
                    same_city.push(cos(i, j));
                } else if a["continent"] != b["continent"] {
                    other_cont.push(cos(i, j));
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (l, c, o) = (mean(&same_lm), mean(&same_city), mean(&other_cont));
        assert!(l > c && c > o, "same landmark {l:.3}, other landmark same city {c:.3}, other continent {o:.3}");
    }
}
