//! GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023): the image tower (an MLP 768 -> 768 -> 512 on
//! CLIP ViT-L/14 projected features) and the location tower (Equal Earth projection, three
//! random-Fourier-feature capsules with sigma 2^0, 2^4, 2^8, each 512 -> 1024 -> 1024 -> 1024 ->
//! 512, summed), loaded from the `.pth` files the `geoclip` Python package ships, plus its 100K
//! GPS gallery.
//!
//! Reference implementation: the `geoclip` package (`geoclip/model/location_encoder.py`,
//! `image_encoder.py`, `rff/functional.py`), <https://github.com/VicenteVivan/geo-clip>.

use super::clip::ClipEncoder;
use super::hf::{self, HfError};
use super::{EncodeError, Encoder, HfParams, Prepared};
use crate::util::fingerprint::Fingerprint;
use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use image::RgbImage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const LOCATION_WEIGHTS: &str = "location_encoder_weights.pth";
pub const IMAGE_MLP_WEIGHTS: &str = "image_encoder_mlp_weights.pth";
pub const GALLERY: &str = "coordinates_100K.csv";
/// The capsules' RFF standard deviations, in order.
pub const SIGMAS: [f64; 3] = [1.0, 16.0, 256.0];

/// Find a file of the geoclip package under `dir`: `dir` may be the package's `weights/` folder,
/// `geoclip/model/`, or an unpacked wheel.
pub fn find_file(dir: &Path, sub: &str, file: &str) -> Result<PathBuf, HfError> {
    let candidates = [
        dir.join(file),
        dir.join(sub).join(file),
        dir.join("..").join(sub).join(file),
        dir.join("model").join(sub).join(file),
        dir.join("geoclip").join("model").join(sub).join(file),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| HfError::MissingFile {
        dir: dir.to_path_buf(),
        file: format!("{file} (looked in ., {sub}/, ../{sub}/, geoclip/model/{sub}/; unpack the geoclip wheel: scripts/fetch-geoclip.sh)"),
    })
}

fn read_pth(path: &Path, device: &Device) -> Result<VarBuilder<'static>, HfError> {
    let tensors = candle_core::pickle::read_all(path).map_err(|source| HfError::Candle { path: path.to_path_buf(), context: "reading PyTorch weights".into(), source })?;
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    Ok(VarBuilder::from_tensors(map, DType::F32, device))
}

fn need(vb: &VarBuilder, path: &Path, names: &[String]) -> Result<(), HfError> {
    let missing: Vec<&String> = names.iter().filter(|n| !vb.contains_tensor(n)).collect();
    match missing.first() {
        None => Ok(()),
        Some(t) => Err(HfError::MissingTensor { dir: path.to_path_buf(), tensor: (*t).clone(), missing: missing.len() }),
    }
}

/// Equal Earth projection as GeoCLIP applies it (degrees in; x, y scaled by SF / 180).
pub fn equal_earth(lat: f64, lon: f64) -> [f64; 2] {
    const A1: f64 = 1.340264;
    const A2: f64 = -0.081106;
    const A3: f64 = 0.000893;
    const A4: f64 = 0.003796;
    const SF: f64 = 66.50336;
    let (la, lo) = (lat.to_radians(), lon.to_radians());
    let theta = ((3f64.sqrt() / 2.0) * la.sin()).asin();
    let den = 3.0 * (9.0 * A4 * theta.powi(8) + 7.0 * A3 * theta.powi(6) + 3.0 * A2 * theta.powi(2) + A1);
    let x = 2.0 * 3f64.sqrt() * lo * theta.cos() / den;
    let y = A4 * theta.powi(9) + A3 * theta.powi(7) + A2 * theta.powi(3) + A1 * theta;
    [x * SF / 180.0, y * SF / 180.0]
}

struct Capsule {
    b: Tensor,
    layers: [Linear; 3],
    head: Linear,
}

/// GeoCLIP's location tower.
pub struct LocationEncoder {
    capsules: Vec<Capsule>,
    device: Device,
    fp: String,
}

impl LocationEncoder {
    /// Load from the directory holding `location_encoder_weights.pth` (see [`find_file`]).
    pub fn load(dir: &Path, device: &Device) -> Result<LocationEncoder, HfError> {
        let path = find_file(dir, "weights", LOCATION_WEIGHTS)?;
        let vb = read_pth(&path, device)?;
        let mut names = vec![];
        for i in 0..SIGMAS.len() {
            names.push(format!("LocEnc{i}.capsule.0.b"));
            for l in ["capsule.1", "capsule.3", "capsule.5", "head.0"] {
                names.push(format!("LocEnc{i}.{l}.weight"));
                names.push(format!("LocEnc{i}.{l}.bias"));
            }
        }
        need(&vb, &path, &names)?;
        let c = |e| HfError::Candle { path: path.clone(), context: "location encoder".into(), source: e };
        let mut capsules = vec![];
        for i in 0..SIGMAS.len() {
            let v = vb.pp(format!("LocEnc{i}"));
            let b = v.get((256, 2), "capsule.0.b").map_err(c)?;
            let l1 = candle_nn::linear(512, 1024, v.pp("capsule.1")).map_err(c)?;
            let l2 = candle_nn::linear(1024, 1024, v.pp("capsule.3")).map_err(c)?;
            let l3 = candle_nn::linear(1024, 1024, v.pp("capsule.5")).map_err(c)?;
            let head = candle_nn::linear(1024, 512, v.pp("head.0")).map_err(c)?;
            capsules.push(Capsule { b, layers: [l1, l2, l3], head });
        }
        let fp = Fingerprint::new("encoder/geoclip-location/1").field(&hf::sha256_files(&[path])?).finish();
        Ok(LocationEncoder { capsules, device: device.clone(), fp })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fp
    }

    /// Raw (un-normalised) 512-d features of `(lat, lon)` pairs in degrees, as GeoCLIP's
    /// `LocationEncoder.forward` returns them.
    pub fn features(&self, coords: &[(f64, f64)]) -> candle_core::Result<Tensor> {
        let n = coords.len();
        let proj: Vec<f32> = coords.iter().flat_map(|&(la, lo)| equal_earth(la, lo).map(|v| v as f32)).collect();
        let x = Tensor::from_vec(proj, (n, 2), &self.device)?;
        let x2pi = (x * (2.0 * std::f64::consts::PI))?;
        let mut sum: Option<Tensor> = None;
        for c in &self.capsules {
            let vp = x2pi.matmul(&c.b.t()?)?;
            let mut h = Tensor::cat(&[vp.cos()?, vp.sin()?], D::Minus1)?;
            for l in &c.layers {
                h = l.forward(&h)?.relu()?;
            }
            let o = c.head.forward(&h)?;
            sum = Some(match sum {
                None => o,
                Some(s) => (s + o)?,
            });
        }
        sum.ok_or_else(|| candle_core::Error::Msg("no capsules".into()))
    }

    /// L2-normalised 512-d embeddings, row-major.
    pub fn encode(&self, coords: &[(f64, f64)]) -> candle_core::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(coords.len() * 512);
        for chunk in coords.chunks(4096) {
            out.extend(hf::normalized_rows(&self.features(chunk)?)?);
        }
        Ok(out)
    }
}

/// Read a coordinates CSV with a header naming latitude and longitude columns (`LAT,LON` as in
/// GeoCLIP's gallery, or `lat,lon`, `latitude,longitude`).
pub fn read_coords(path: &Path) -> Result<Vec<(f64, f64)>, HfError> {
    let bad = |message: String| HfError::Config { path: path.to_path_buf(), message };
    let mut rdr = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers = rdr.headers().map_err(|e| bad(e.to_string()))?.clone();
    let find = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim().to_ascii_lowercase().as_str()));
    let (la, lo) = match (find(&["lat", "latitude"]), find(&["lon", "lng", "long", "longitude"])) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(bad(format!("no lat/lon columns in header {:?}", headers.iter().collect::<Vec<_>>()))),
    };
    let mut out = vec![];
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let p = |j: usize| rec.get(j).and_then(|s| s.trim().parse::<f64>().ok());
        match (p(la), p(lo)) {
            (Some(a), Some(b)) if a.abs() <= 90.0 && b.abs() <= 180.0 => out.push((a, b)),
            _ => return Err(bad(format!("row {}: invalid coordinate", i + 2))),
        }
    }
    Ok(out)
}

/// GeoCLIP's 100K GPS gallery (`gps_gallery/coordinates_100K.csv` of the package).
pub fn load_gallery(dir: &Path) -> Result<Vec<(f64, f64)>, HfError> {
    read_coords(&find_file(dir, "gps_gallery", GALLERY)?)
}

/// Write location embeddings as Parquet: `lat`, `lon`, `vector` (FixedSizeList<f32, dim>, dim =
/// `vectors.len() / coords.len()`: 512 for GeoCLIP), atomically.
pub fn write_gps_embeddings(path: &Path, coords: &[(f64, f64)], vectors: &[f32]) -> Result<(), crate::util::pq::ParquetError> {
    let dim = (vectors.len() / coords.len().max(1)) as i32;
    use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Float64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("vector", DataType::FixedSizeList(item.clone(), dim), false),
    ]));
    let list = FixedSizeListArray::try_new(item, dim, Arc::new(Float32Array::from(vectors.to_vec())), None).expect("coords * dim values");
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from_iter_values(coords.iter().map(|c| c.0))),
        Arc::new(Float64Array::from_iter_values(coords.iter().map(|c| c.1))),
        Arc::new(list),
    ];
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).expect("gps embedding columns");
    crate::util::pq::write(path, schema, &[batch], &[])
}

/// GeoCLIP's image tower: CLIP ViT-L/14 projected features -> Linear 768x768 -> ReLU -> Linear
/// 768x512, L2-normalised.
pub struct GeoclipImageEncoder {
    clip: ClipEncoder,
    l1: Linear,
    l2: Linear,
    fp: String,
}

/// The GeoCLIP image encoder's fingerprint from its CLIP tower's and the image MLP's file.
fn image_fingerprint(clip_fp: &str, mlp: &Path) -> Result<String, EncodeError> {
    Ok(Fingerprint::new("encoder/geoclip-image/1").field(clip_fp).field(&hf::sha256_files(&[mlp.to_path_buf()])?).finish())
}

fn check_clip_dim(p: &HfParams, dim: usize) -> Result<(), EncodeError> {
    if dim != 768 {
        return Err(EncodeError::Config(format!("geoclip: the CLIP projection must be 768-d (ViT-L/14), {} is {dim}-d", p.dir.display())));
    }
    Ok(())
}

/// The fingerprint and dimension [`GeoclipImageEncoder::load`] would give, without building
/// either model.
pub fn identity(p: &HfParams, weights: &Path) -> Result<(String, usize), EncodeError> {
    let (clip_fp, dim) = super::clip::identity(p)?;
    check_clip_dim(p, dim)?;
    let path = find_file(weights, "weights", IMAGE_MLP_WEIGHTS)?;
    Ok((image_fingerprint(&clip_fp, &path)?, 512))
}

impl GeoclipImageEncoder {
    pub fn load(p: &HfParams, weights: &Path) -> Result<GeoclipImageEncoder, EncodeError> {
        let clip = ClipEncoder::load(p)?;
        check_clip_dim(p, clip.dim())?;
        let path = find_file(weights, "weights", IMAGE_MLP_WEIGHTS)?;
        let device = hf::device(&p.device)?;
        let vb = read_pth(&path, &device)?.set_dtype(p.dtype.candle());
        need(&vb, &path, &["0.weight", "0.bias", "2.weight", "2.bias"].map(String::from))?;
        let c = |e| HfError::Candle { path: path.clone(), context: "image MLP".into(), source: e };
        let l1 = candle_nn::linear(768, 768, vb.pp("0")).map_err(c)?;
        let l2 = candle_nn::linear(768, 512, vb.pp("2")).map_err(c)?;
        let fp = image_fingerprint(clip.fingerprint(), &path)?;
        Ok(GeoclipImageEncoder { clip, l1, l2, fp })
    }
}

impl Encoder for GeoclipImageEncoder {
    fn name(&self) -> &str {
        "geoclip"
    }
    fn dim(&self) -> usize {
        512
    }
    fn fingerprint(&self) -> &str {
        &self.fp
    }
    fn encode_batch(&self, images: &[RgbImage]) -> Result<Vec<f32>, EncodeError> {
        super::encode_by_preparing(self, images)
    }
    fn prepare(&self, image: RgbImage) -> Result<Prepared, String> {
        self.clip.prepare(image)
    }
    fn encode_prepared(&self, items: Vec<Prepared>) -> Result<Vec<f32>, EncodeError> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let err = |e: candle_core::Error| EncodeError::Model { encoder: "geoclip".into(), message: e.to_string() };
        let px = super::clip::take_pixels("geoclip", items, |i| self.clip.pixels(i))?;
        let f = self.clip.features(px)?;
        let h = self.l1.forward(&f).and_then(|h| h.relu()).and_then(|h| self.l2.forward(&h)).map_err(err)?;
        hf::normalized_rows(&h).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_earth_reference_points() {
        // The origin maps to the origin; the projection is odd in both coordinates.
        assert_eq!(equal_earth(0.0, 0.0), [0.0, 0.0]);
        let [x, y] = equal_earth(45.0, 90.0);
        let [x2, y2] = equal_earth(-45.0, -90.0);
        assert!((x + x2).abs() < 1e-12 && (y + y2).abs() < 1e-12);
        // Equal Earth: the pole is at y = 1.3173627 * R (Šavrič et al. 2018), times SF / 180.
        let [_, yp] = equal_earth(90.0, 0.0);
        assert!((yp - 1.317_362_7 * 66.50336 / 180.0).abs() < 1e-5, "{yp}");
    }
}
