//! Reproduction of Hugging Face's (slow, PIL-based) image processors from
//! `preprocessor_config.json`:
//! - `CLIPImageProcessor` (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/image_processing_clip.py>):
//!   resize the short side to `size.shortest_edge` (the long side is `int(edge * long / short)`,
//!   i.e. truncated), centre-crop to `crop_size` (top/left offsets `(dim - crop) // 2`), rescale,
//!   normalise with the stored mean/std;
//! - `SiglipImageProcessor` (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/siglip/image_processing_siglip.py>):
//!   resize straight to `size.height x size.width`, rescale, normalise (mean = std = 0.5).
//!
//! Fields are read as transformers reads them, whatever the file's age: a missing or `null` field
//! takes the processor class's default (both classes: bicubic, rescale 1/255, normalise; CLIP:
//! short side 224, centre crop 224 with the OpenAI mean/std; SigLIP: 224x224, no crop, 0.5), so
//! the old `CLIPFeatureExtractor` files (no `do_rescale`/`rescale_factor`/`do_convert_rgb`) work.
//! An integer `size` is `get_size_dict(size, default_to_square=False)`, i.e. a shortest edge,
//! for both classes (a SigLIP model then refuses it: its input must be square); an integer
//! `crop_size` is a square. `feature_extractor_type` / `image_processor_type` are not read: the
//! model's `model_type` decides the class. Images are always converted to RGB (`do_convert_rgb`).
//!
//! Resampling uses `fast_image_resize`'s convolution filters, which reproduce PIL's
//! (`resample` codes 0 nearest, 1 Lanczos, 2 bilinear, 3 bicubic, 4 box, 5 Hamming) to within one
//! 8-bit level, provided the two passes run in PIL's order: horizontal first, through a clamped
//! 8-bit intermediate (Pillow <= 12 always; Pillow 13 chooses the order per shape, which changes
//! pixels where a negative-lobe filter overshoots and is clamped). Output is CHW `f32`.

use super::hf::HfError;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the image is resized before any crop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Short side to this length, aspect kept (CLIP).
    ShortestEdge(u32),
    /// Straight to this size, aspect not kept (SigLIP).
    Exact { height: u32, width: u32 },
}

/// The complete preprocessing spec (part of the encoder fingerprint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// `None` when `do_resize` is false.
    pub resize: Option<Resize>,
    /// PIL resample code.
    pub resample: u32,
    /// Centre crop (height, width), when `do_center_crop`.
    pub crop: Option<(u32, u32)>,
    /// Multiplier applied to 8-bit values, when `do_rescale`.
    pub rescale: Option<f64>,
    /// (mean, std) per channel, when `do_normalize`.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// Which processor to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Clip,
    Siglip,
}

fn size_field(v: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
    v.get(key).filter(|x| !x.is_null()).cloned()
}

fn as_u32(v: &serde_json::Value, what: &str, path: &Path) -> Result<u32, HfError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| HfError::Config { path: path.to_path_buf(), message: format!("`{what}` must be a positive integer, got {v}") })
}

fn hw(v: &serde_json::Value, what: &str, path: &Path) -> Result<(u32, u32), HfError> {
    if v.is_u64() {
        let n = as_u32(v, what, path)?;
        return Ok((n, n));
    }
    match (v.get("height"), v.get("width")) {
        (Some(h), Some(w)) => Ok((as_u32(h, &format!("{what}.height"), path)?, as_u32(w, &format!("{what}.width"), path)?)),
        _ => Err(HfError::Config { path: path.to_path_buf(), message: format!("`{what}` needs `height` and `width`, got {v}") }),
    }
}

impl Preprocess {
    /// Read `preprocessor_config.json` (already parsed) with the defaults of the given family's
    /// processor class.
    pub fn from_config(v: &serde_json::Value, family: Family, path: &Path) -> Result<Preprocess, HfError> {
        use super::hf::get_or;
        let do_resize: bool = get_or(v, "do_resize", true, path)?;
        let resample: u32 = get_or(v, "resample", 3, path)?;
        if resample > 5 {
            return Err(HfError::Config { path: path.to_path_buf(), message: format!("unknown PIL resample code {resample}") });
        }
        let size = size_field(v, "size");
        let resize = if !do_resize {
            None
        } else {
            Some(match (family, size) {
                (Family::Clip, None) => Resize::ShortestEdge(224),
                (Family::Siglip, None) => Resize::Exact { height: 224, width: 224 },
                (_, Some(s)) => {
                    if s.get("longest_edge").is_some_and(|l| !l.is_null()) || s.get("max_height").is_some_and(|l| !l.is_null()) {
                        return Err(HfError::Config { path: path.to_path_buf(), message: format!("`size` {s}: longest_edge / max_height resizing is not supported") });
                    }
                    if let Some(e) = s.get("shortest_edge") {
                        Resize::ShortestEdge(as_u32(e, "size.shortest_edge", path)?)
                    } else if s.is_u64() {
                        Resize::ShortestEdge(as_u32(&s, "size", path)?)
                    } else {
                        let (height, width) = hw(&s, "size", path)?;
                        Resize::Exact { height, width }
                    }
                }
            })
        };
        let default_crop = family == Family::Clip;
        let do_crop: bool = get_or(v, "do_center_crop", default_crop, path)?;
        let crop = if do_crop {
            Some(match size_field(v, "crop_size") {
                Some(c) => hw(&c, "crop_size", path)?,
                None => (224, 224),
            })
        } else {
            None
        };
        let do_rescale: bool = get_or(v, "do_rescale", true, path)?;
        let rescale_factor: f64 = get_or(v, "rescale_factor", 1.0 / 255.0, path)?;
        let do_normalize: bool = get_or(v, "do_normalize", true, path)?;
        let (dm, ds) = match family {
            Family::Clip => ([0.481_454_66, 0.457_827_5, 0.408_210_73], [0.268_629_54, 0.261_302_58, 0.275_777_11]),
            Family::Siglip => ([0.5; 3], [0.5; 3]),
        };
        let mean = three(get_or::<serde_json::Value>(v, "image_mean", serde_json::json!(dm), path)?, "image_mean", path)?;
        let std = three(get_or::<serde_json::Value>(v, "image_std", serde_json::json!(ds), path)?, "image_std", path)?;
        if std.contains(&0.0) {
            return Err(HfError::Config { path: path.to_path_buf(), message: "`image_std` has a zero".into() });
        }
        Ok(Preprocess {
            resize,
            resample,
            crop,
            rescale: do_rescale.then_some(rescale_factor),
            normalize: do_normalize.then_some((mean, std)),
        })
    }

    /// Output (height, width), or `None` when it depends on the input (no exact resize, no crop).
    pub fn output_size(&self) -> Option<(u32, u32)> {
        if let Some(c) = self.crop {
            return Some(c);
        }
        match self.resize {
            Some(Resize::Exact { height, width }) => Some((height, width)),
            _ => None,
        }
    }

    /// Size after resizing an image of `w x h` (HF's `get_resize_output_image_size` with
    /// `default_to_square=False`: the long side is truncated, not rounded).
    pub fn resized_dims(&self, w: u32, h: u32) -> (u32, u32) {
        match self.resize {
            None => (w, h),
            Some(Resize::Exact { height, width }) => (width, height),
            Some(Resize::ShortestEdge(e)) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                // Python: int(size * long / short); the product is exact in f64.
                let nl = ((e as u64 * long as u64) as f64 / short as f64) as u32;
                if w <= h { (e, nl) } else { (nl, e) }
            }
        }
    }

    fn alg(&self) -> ResizeAlg {
        match self.resample {
            0 => ResizeAlg::Nearest,
            1 => ResizeAlg::Convolution(FilterType::Lanczos3),
            2 => ResizeAlg::Convolution(FilterType::Bilinear),
            4 => ResizeAlg::Convolution(FilterType::Box),
            5 => ResizeAlg::Convolution(FilterType::Hamming),
            _ => ResizeAlg::Convolution(FilterType::CatmullRom),
        }
    }

    /// Resize (8-bit, as PIL does) and centre-crop.
    pub fn resize_crop(&self, img: &RgbImage) -> Result<RgbImage, String> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err("empty image".into());
        }
        let (nw, nh) = self.resized_dims(w, h);
        // PIL resamples horizontally first, then vertically, through an 8-bit intermediate
        // (clamped). fast_image_resize does u8 images vertical-first when both passes are needed,
        // which differs where a negative-lobe filter (bicubic, Lanczos) overshoots; so run the
        // two single-axis passes ourselves, in PIL's order.
        let mut resizer = Resizer::new();
        let opts = ResizeOptions::new().resize_alg(self.alg());
        let mut pass = |src: &RgbImage, tw: u32, th: u32| -> Result<RgbImage, String> {
            let (sw, sh) = src.dimensions();
            if (sw, sh) == (tw, th) {
                return Ok(src.clone());
            }
            let s = ImageRef::new(sw, sh, src.as_raw(), PixelType::U8x3).map_err(|e| e.to_string())?;
            let mut d = Image::new(tw, th, PixelType::U8x3);
            resizer.resize(&s, &mut d, &opts).map_err(|e| e.to_string())?;
            RgbImage::from_raw(tw, th, d.into_vec()).ok_or_else(|| "resize buffer size".to_string())
        };
        let resized = if (nw, nh) == (w, h) {
            img.clone()
        } else {
            let horizontal = pass(img, nw, h)?;
            pass(&horizontal, nw, nh)?
        };
        match self.crop {
            None => Ok(resized),
            Some((ch, cw)) => Ok(center_crop(&resized, ch, cw)),
        }
    }

    /// Full preprocessing of one image: (height, width, CHW values).
    pub fn apply(&self, img: &RgbImage) -> Result<(u32, u32, Vec<f32>), String> {
        let r = self.resize_crop(img)?;
        let (w, h) = r.dimensions();
        let n = (w * h) as usize;
        let mut out = vec![0f32; 3 * n];
        let scale = self.rescale.unwrap_or(1.0);
        let (mean, std) = self.normalize.unwrap_or(([0.0; 3], [1.0; 3]));
        // Per-channel lookup table: HF computes in float64 then casts to float32.
        let lut: [[f32; 256]; 3] = std::array::from_fn(|c| {
            std::array::from_fn(|v| {
                let x = (v as f64 * scale) as f32;
                (x - mean[c]) / std[c]
            })
        });
        for (i, p) in r.pixels().enumerate() {
            for c in 0..3 {
                out[c * n + i] = lut[c][p.0[c] as usize];
            }
        }
        Ok((h, w, out))
    }
}

/// HF `center_crop`: offsets `(dim - crop) // 2`; where the crop is larger than the image, the
/// image is padded with zeros around (centred the same way).
fn center_crop(img: &RgbImage, ch: u32, cw: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let top = (h as i64 - ch as i64).div_euclid(2);
    let left = (w as i64 - cw as i64).div_euclid(2);
    RgbImage::from_fn(cw, ch, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if sx >= 0 && sy >= 0 && sx < w as i64 && sy < h as i64 { *img.get_pixel(sx as u32, sy as u32) } else { image::Rgb([0, 0, 0]) }
    })
}

fn three(v: serde_json::Value, what: &str, path: &Path) -> Result<[f32; 3], HfError> {
    let bad = || HfError::Config { path: path.to_path_buf(), message: format!("`{what}` must be a number or a list of 3 numbers, got {v}") };
    if let Some(x) = v.as_f64() {
        return Ok([x as f32; 3]);
    }
    let a = v.as_array().ok_or_else(bad)?;
    if a.len() != 3 {
        return Err(bad());
    }
    let mut o = [0f32; 3];
    for (i, x) in a.iter().enumerate() {
        o[i] = x.as_f64().ok_or_else(bad)? as f32;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn clip_resize_truncates_long_side_and_crops_centre() {
        let p = Preprocess::from_config(&json!({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}), Family::Clip, Path::new("p.json")).unwrap();
        // 640x427: long = int(224 * 640 / 427) = int(335.74) = 335 (rounding would give 336).
        assert_eq!(p.resized_dims(640, 427), (335, 224));
        assert_eq!(p.resized_dims(427, 640), (224, 335));
        assert_eq!(p.output_size(), Some((224, 224)));
        assert_eq!(p.normalize.unwrap().0[0], 0.481_454_66);
        // Crop offsets are (dim - crop) // 2: a 5-wide image cropped to 2 starts at column 1.
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = center_crop(&img, 2, 2);
        assert_eq!(c.get_pixel(0, 0).0, [1, 0, 0]);
    }

    #[test]
    fn siglip_defaults_and_exact_resize() {
        let p = Preprocess::from_config(&json!({"size": {"height": 384, "width": 384}, "resample": 2}), Family::Siglip, Path::new("p.json")).unwrap();
        assert_eq!(p.resize, Some(Resize::Exact { height: 384, width: 384 }));
        assert_eq!(p.crop, None);
        assert_eq!(p.resample, 2);
        let (h, w, px) = p.apply(&RgbImage::from_pixel(50, 20, image::Rgb([255, 0, 128]))).unwrap();
        assert_eq!((h, w), (384, 384));
        // mean = std = 0.5: 255 -> 1, 0 -> -1.
        assert!((px[0] - 1.0).abs() < 1e-6 && (px[384 * 384] + 1.0).abs() < 1e-6);
        assert!(Preprocess::from_config(&json!({"image_std": [0.5, 0.0, 0.5]}), Family::Siglip, Path::new("p.json")).is_err());
    }

    /// `preprocessor_config.json` of openai/clip-vit-base-patch32 (and, with 336, of
    /// clip-vit-large-patch14-336 and geolocal/StreetCLIP), written by transformers 4.x's
    /// `CLIPFeatureExtractor`: integer sizes, no rescale fields, no `do_convert_rgb`.
    #[test]
    fn old_clip_feature_extractor_files() {
        for n in [224u32, 336] {
            let v = json!({
                "crop_size": n,
                "do_center_crop": true,
                "do_normalize": true,
                "do_resize": true,
                "feature_extractor_type": "CLIPFeatureExtractor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3,
                "size": n
            });
            let p = Preprocess::from_config(&v, Family::Clip, Path::new("p.json")).unwrap();
            assert_eq!(p.resize, Some(Resize::ShortestEdge(n)));
            assert_eq!(p.crop, Some((n, n)));
            assert_eq!(p.rescale, Some(1.0 / 255.0));
            assert_eq!(p.resample, 3);
            assert_eq!(p.output_size(), Some((n, n)));
            // The same as the current CLIPImageProcessor layout of the same checkpoint.
            let new = json!({
                "crop_size": {"height": n, "width": n}, "do_center_crop": true, "do_convert_rgb": true,
                "do_normalize": true, "do_rescale": true, "do_resize": true,
                "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
                "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
                "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": n}
            });
            assert_eq!(Preprocess::from_config(&new, Family::Clip, Path::new("p.json")).unwrap(), p);
        }
        // Nothing but the class: CLIPImageProcessor's defaults.
        let d = Preprocess::from_config(&json!({"image_processor_type": "CLIPImageProcessor", "do_convert_rgb": null, "resample": null}), Family::Clip, Path::new("p.json")).unwrap();
        assert_eq!((d.resize, d.crop, d.resample), (Some(Resize::ShortestEdge(224)), Some((224, 224)), 3));
        assert_eq!(d.normalize.unwrap().1[2], 0.275_777_1);
    }

    /// google/siglip-base-patch16-224 / siglip-so400m-patch14-384 (bicubic) and the SigLIP 2
    /// fixed-resolution processors (bilinear, `do_convert_rgb: null`).
    #[test]
    fn siglip_and_siglip2_files() {
        let v = |n: u32, resample: u32| {
            json!({
                "do_convert_rgb": null, "do_normalize": true, "do_rescale": true, "do_resize": true,
                "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor",
                "image_std": [0.5, 0.5, 0.5], "processor_class": "SiglipProcessor", "resample": resample,
                "rescale_factor": 0.00392156862745098, "size": {"height": n, "width": n}
            })
        };
        for (n, r) in [(224, 3), (384, 3), (224, 2), (512, 2)] {
            let p = Preprocess::from_config(&v(n, r), Family::Siglip, Path::new("p.json")).unwrap();
            assert_eq!((p.resize, p.crop, p.resample), (Some(Resize::Exact { height: n, width: n }), None, r));
            assert_eq!(p.normalize, Some(([0.5; 3], [0.5; 3])));
        }
        // transformers reads an integer size with default_to_square=False: a shortest edge (which
        // the SigLIP encoder then refuses), not a square.
        let p = Preprocess::from_config(&json!({"size": 224}), Family::Siglip, Path::new("p.json")).unwrap();
        assert_eq!(p.resize, Some(Resize::ShortestEdge(224)));
        let p = Preprocess::from_config(&json!({}), Family::Siglip, Path::new("p.json")).unwrap();
        assert_eq!((p.resize, p.resample), (Some(Resize::Exact { height: 224, width: 224 }), 3));
        let e = Preprocess::from_config(&json!({"size": {"shortest_edge": 224, "longest_edge": 448}}), Family::Clip, Path::new("p.json")).unwrap_err().to_string();
        assert!(e.contains("p.json") && e.contains("longest_edge"), "{e}");
    }
}
