//! The classic IM2GPS scene descriptor (Hays & Efros, "IM2GPS: estimating geographic information
//! from a single image", CVPR 2008): a tiny image and a joint colour histogram in CIE L*a*b*.
//! Needs no weights and is deterministic.
//!
//! - tiny image: the photo box-averaged to `tiny x tiny` cells, in L*a*b*, centred (its mean
//!   removed) and L2-normalised, so the inner product is a correlation of layouts;
//! - histogram: a joint L*a*b* histogram with `hist_bins` bins per axis, square-rooted (Hellinger
//!   map, so the inner product is the Bhattacharyya coefficient, a stand-in for the paper's
//!   chi-square distance) and L2-normalised;
//! - the two parts are weighted, concatenated and L2-normalised again.
//!
//! The paper also used texton and gist features; those are not reproduced here.
//!
//! JPEGs are decoded with DCT-domain scaling (PIL's `draft()`) to at least
//! [`DRAFT_PIXELS_PER_CELL`] x `tiny` pixels a side (`Encoder::decode_min_size`): the tiny image
//! averages far more pixels than that per cell anyway, and the histogram is a distribution.

use super::{EncodeError, Encoder, Prepared};
use rayon::prelude::*;
use crate::util::fingerprint::Fingerprint;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Decoded pixels per tiny-image cell side, at least (see the module docs).
pub const DRAFT_PIXELS_PER_CELL: u32 = 4;

/// Parameters of the descriptor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Im2gpsParams {
    /// Side of the tiny image in cells.
    pub tiny: u32,
    /// Histogram bins along L*, a*, b*.
    pub hist_bins: [u32; 3],
    pub tiny_weight: f32,
    pub hist_weight: f32,
}

impl Default for Im2gpsParams {
    fn default() -> Self {
        Im2gpsParams { tiny: 16, hist_bins: [4, 8, 8], tiny_weight: 1.0, hist_weight: 1.0 }
    }
}

/// The IM2GPS encoder.
pub struct Im2gpsEncoder {
    p: Im2gpsParams,
    fp: String,
}

impl Im2gpsEncoder {
    pub fn new(p: Im2gpsParams) -> Result<Self, EncodeError> {
        if p.tiny == 0 || p.hist_bins.contains(&0) {
            return Err(EncodeError::Config("im2gps: `tiny` and every `hist_bins` entry must be > 0".into()));
        }
        let fp = Fingerprint::new("encoder/im2gps/2").json(&p).field(format!("jpeg draft to >= {DRAFT_PIXELS_PER_CELL} px per cell")).finish();
        Ok(Im2gpsEncoder { p, fp })
    }

    fn encode_one(&self, img: &RgbImage, out: &mut [f32]) {
        let (w, h) = img.dimensions();
        let t = self.p.tiny as usize;
        let [bl, ba, bb] = self.p.hist_bins.map(|b| b as usize);
        let (tiny_part, hist_part) = out.split_at_mut(3 * t * t);
        let mut counts = vec![0u32; t * t];
        for (x, y, px) in img.enumerate_pixels() {
            let lab = srgb_to_lab(px.0);
            let cell = (y as usize * t / h as usize) * t + (x as usize * t / w as usize);
            counts[cell] += 1;
            for c in 0..3 {
                tiny_part[cell * 3 + c] += lab[c];
            }
            let il = bin(lab[0], 0.0, 100.0, bl);
            let ia = bin(lab[1], -100.0, 100.0, ba);
            let ib = bin(lab[2], -100.0, 100.0, bb);
            hist_part[(il * ba + ia) * bb + ib] += 1.0;
        }
        for (cell, &n) in counts.iter().enumerate() {
            for c in 0..3 {
                tiny_part[cell * 3 + c] /= n.max(1) as f32;
            }
        }
        let mean = tiny_part.iter().sum::<f32>() / tiny_part.len() as f32;
        tiny_part.iter_mut().for_each(|v| *v -= mean);
        l2_normalize(tiny_part);
        hist_part.iter_mut().for_each(|v| *v = v.sqrt());
        l2_normalize(hist_part);
        tiny_part.iter_mut().for_each(|v| *v *= self.p.tiny_weight);
        hist_part.iter_mut().for_each(|v| *v *= self.p.hist_weight);
        l2_normalize(out);
    }
}

fn bin(v: f32, lo: f32, hi: f32, n: usize) -> usize {
    (((v - lo) / (hi - lo) * n as f32) as isize).clamp(0, n as isize - 1) as usize
}

/// Normalise in place; an all-zero vector stays zero.
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// sRGB transfer function inverted, tabulated for the 256 8-bit levels.
fn srgb_linear_lut() -> &'static [f32; 256] {
    static LUT: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        std::array::from_fn(|i| {
            let c = i as f32 / 255.0;
            if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
        })
    })
}

/// sRGB (D65) to CIE L*a*b*.
pub fn srgb_to_lab(rgb: [u8; 3]) -> [f32; 3] {
    let lin = rgb.map(|c| srgb_linear_lut()[c as usize]);
    let x = (0.412_456_4 * lin[0] + 0.357_576_1 * lin[1] + 0.180_437_5 * lin[2]) / 0.950_47;
    let y = 0.212_672_9 * lin[0] + 0.715_152_2 * lin[1] + 0.072_175 * lin[2];
    let z = (0.019_333_9 * lin[0] + 0.119_192 * lin[1] + 0.950_304_1 * lin[2]) / 1.088_83;
    let f = |t: f32| if t > 0.008_856 { t.cbrt() } else { 7.787 * t + 16.0 / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

impl Encoder for Im2gpsEncoder {
    fn name(&self) -> &str {
        "im2gps"
    }
    fn dim(&self) -> usize {
        let t = self.p.tiny as usize;
        3 * t * t + self.p.hist_bins.iter().map(|&b| b as usize).product::<usize>()
    }
    fn fingerprint(&self) -> &str {
        &self.fp
    }
    fn decode_min_size(&self) -> Option<(u32, u32)> {
        let side = self.p.tiny.saturating_mul(DRAFT_PIXELS_PER_CELL);
        Some((side, side))
    }
    fn encode_batch(&self, images: &[RgbImage]) -> Result<Vec<f32>, EncodeError> {
        let d = self.dim();
        let mut out = vec![0f32; images.len() * d];
        out.par_chunks_mut(d).zip(images.par_iter()).for_each(|(o, img)| self.encode_one(img, o));
        Ok(out)
    }
    /// The whole descriptor is CPU work: compute it in `prepare`, which the embedding store runs
    /// on the rayon pool, so that the "model" step only concatenates.
    fn prepare(&self, image: RgbImage) -> Result<Prepared, String> {
        let mut v = vec![0f32; self.dim()];
        self.encode_one(&image, &mut v);
        Ok(Prepared::Pixels(v))
    }
    fn encode_prepared(&self, items: Vec<Prepared>) -> Result<Vec<f32>, EncodeError> {
        let mut out = Vec::with_capacity(items.len() * self.dim());
        for it in items {
            match it {
                Prepared::Pixels(v) if v.len() == self.dim() => out.extend(v),
                _ => return Err(EncodeError::Model { encoder: "im2gps".into(), message: "expected descriptors from prepare()".into() }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_reference_colours() {
        let w = srgb_to_lab([255, 255, 255]);
        assert!((w[0] - 100.0).abs() < 0.1 && w[1].abs() < 0.1 && w[2].abs() < 0.1, "{w:?}");
        // sRGB red: L* 53.24, a* 80.09, b* 67.20 (standard reference values).
        let r = srgb_to_lab([255, 0, 0]);
        assert!((r[0] - 53.24).abs() < 0.1 && (r[1] - 80.09).abs() < 0.3 && (r[2] - 67.20).abs() < 0.3, "{r:?}");
    }

    #[test]
    fn unit_norm_and_similarity_order() {
        let e = Im2gpsEncoder::new(Im2gpsParams::default()).unwrap();
        let grad = |s: u8| RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, s]));
        let v = e.encode_batch(&[grad(0), grad(10), RgbImage::from_pixel(32, 32, image::Rgb([0, 200, 0]))]).unwrap();
        let d = e.dim();
        let (a, b, c) = (&v[..d], &v[d..2 * d], &v[2 * d..]);
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!((dot(a, a) - 1.0).abs() < 1e-5);
        assert!(dot(a, b) > dot(a, c), "{} vs {}", dot(a, b), dot(a, c));
        assert_eq!(d, 3 * 256 + 256);
    }
}
