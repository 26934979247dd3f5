//! The one image decode function used by every stage (embedding now, MLLM requests later).
//!
//! Decisions (recorded in ARCHITECTURE.md):
//! - the format is sniffed from the bytes, never from a file name;
//! - EXIF orientation is NOT applied, matching PIL-based reference pipelines (`Image.open` +
//!   `convert("RGB")`), so embeddings are comparable with theirs;
//! - every colour type (grayscale, grey+alpha, RGBA, 16-bit, CMYK JPEG) becomes 8-bit RGB; alpha
//!   is dropped, 16-bit samples are scaled to 8 bits;
//! - images above `max_pixels` (default 89 478 485, PIL's decompression-bomb limit) and truncated
//!   or corrupt files are errors, which callers record as a `decode_failed` status (a JPEG
//!   without its end-of-image marker counts as truncated, as in PIL).

use image::{ImageDecoder, ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// PIL's `Image.MAX_IMAGE_PIXELS`.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// The decode policy, part of every dataset fingerprint: changing how pixels are produced
/// invalidates every embedding made from them.
pub const DECODE_POLICY: &str =
    "decode/1: format sniffed; exif orientation not applied; any colour type -> rgb8 (alpha dropped, 16-bit scaled, cmyk converted); first frame of animations; jpeg without end-of-image marker = truncated = error";

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("unrecognised image format")]
    UnknownFormat,
    #[error("image is {width}x{height} = {pixels} pixels, above the limit of {limit}")]
    TooLarge { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
}

/// Decode image bytes into 8-bit RGB under the rules above.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(e.to_string());
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let format = reader.format().ok_or(DecodeError::UnknownFormat)?;
    // The JPEG decoder fills a truncated scan with grey instead of failing (PIL raises "image
    // file is truncated"): require the end-of-image marker near the end of the data, before
    // spending a decode on it.
    if format == image::ImageFormat::Jpeg && !has_jpeg_eoi(bytes) {
        return Err(DecodeError::Corrupt("truncated JPEG: no end-of-image marker".into()));
    }
    // One header parse: the dimensions are checked before any pixel buffer is allocated.
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge { width, height, pixels, limit: max_pixels });
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 26));
    decoder.set_limits(limits).map_err(corrupt)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(img.into_rgb8())
}

/// Whether the JPEG end-of-image marker (FF D9) occurs in the last 256 bytes (some writers
/// append a few bytes of padding after it).
fn has_jpeg_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(256)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Colour layout of an image as declared in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorKind {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
    Indexed,
    /// JPEG with 4 components stored as CMYK (Adobe transform 0 or no Adobe marker).
    Cmyk,
    /// JPEG with 4 components stored as YCCK (Adobe transform 2).
    Ycck,
    Unknown,
}

/// What an image's header says, read without decoding pixels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ImageInfo {
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    pub color: ColorKind,
    /// Bits per sample.
    pub bit_depth: u8,
    pub animated: bool,
    /// EXIF orientation tag (1 = upright), when present. Recorded, never applied.
    pub exif_orientation: Option<u32>,
    /// EXIF GPS position (degrees, signed by hemisphere), when present and valid.
    pub exif_gps: Option<(f64, f64)>,
    /// JPEG without an end-of-image marker.
    pub truncated: bool,
}

/// Read an image's header: format, dimensions, colour layout, bit depth, animation, EXIF
/// orientation and GPS, truncation. Never decodes pixels, so it is safe on decompression bombs.
pub fn inspect(bytes: &[u8]) -> Result<ImageInfo, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Corrupt("zero-byte file".into()));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        inspect_jpeg(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        inspect_png(bytes)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        inspect_gif(bytes)
    } else {
        Err(DecodeError::UnknownFormat)
    }
}

fn be16(b: &[u8], i: usize) -> Option<u32> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32)
}

fn inspect_jpeg(b: &[u8]) -> Result<ImageInfo, DecodeError> {
    let corrupt = |m: &str| DecodeError::Corrupt(format!("JPEG header: {m}"));
    let mut i = 2;
    let mut adobe_transform: Option<u8> = None;
    let mut exif: Option<&[u8]> = None;
    let mut sof: Option<(u8, u32, u32, u8)> = None;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return Err(corrupt("expected a marker"));
        }
        let m = b[i + 1];
        if m == 0xFF {
            i += 1;
            continue;
        }
        if m == 0xD8 || m == 0x01 || (0xD0..=0xD7).contains(&m) {
            i += 2;
            continue;
        }
        if m == 0xD9 || m == 0xDA {
            break;
        }
        let len = be16(b, i + 2).ok_or_else(|| corrupt("segment length"))? as usize;
        if len < 2 || i + 2 + len > b.len() {
            return Err(DecodeError::Corrupt("truncated JPEG header".into()));
        }
        let seg = &b[i + 4..i + 2 + len];
        match m {
            0xE1 if seg.starts_with(b"Exif\0\0") && exif.is_none() => exif = Some(&seg[6..]),
            0xEE if seg.starts_with(b"Adobe") && seg.len() >= 12 => adobe_transform = Some(seg[11]),
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF if seg.len() >= 6 => {
                sof = Some((seg[0], be16(seg, 3).unwrap_or(0), be16(seg, 1).unwrap_or(0), seg[5]));
            }
            _ => {}
        }
        i += 2 + len;
    }
    let (precision, width, height, ncomp) = sof.ok_or_else(|| corrupt("no frame header (SOF)"))?;
    let color = match ncomp {
        1 => ColorKind::Gray,
        3 => ColorKind::Rgb,
        4 if adobe_transform == Some(2) => ColorKind::Ycck,
        4 => ColorKind::Cmyk,
        _ => ColorKind::Unknown,
    };
    let (exif_orientation, exif_gps) = exif.map(read_exif).unwrap_or((None, None));
    Ok(ImageInfo {
        format: "jpeg",
        width,
        height,
        color,
        bit_depth: precision,
        animated: false,
        exif_orientation,
        exif_gps,
        truncated: !has_jpeg_eoi(b),
    })
}

/// Orientation and GPS from a raw EXIF (TIFF) block.
fn read_exif(tiff: &[u8]) -> (Option<u32>, Option<(f64, f64)>) {
    let Ok(ex) = exif::Reader::new().read_raw(tiff.to_vec()) else { return (None, None) };
    let orientation = ex
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0));
    let dms = |tag| -> Option<f64> {
        match &ex.get_field(tag, exif::In::PRIMARY)?.value {
            exif::Value::Rational(v) if v.len() >= 3 => {
                let d: Vec<f64> = v.iter().take(3).map(|r| r.to_f64()).collect();
                Some(d[0] + d[1] / 60.0 + d[2] / 3600.0)
            }
            exif::Value::Rational(v) if !v.is_empty() => Some(v[0].to_f64()),
            _ => None,
        }
    };
    let reference = |tag| -> Option<u8> {
        match &ex.get_field(tag, exif::In::PRIMARY)?.value {
            exif::Value::Ascii(v) => v.first().and_then(|s| s.first().copied()),
            _ => None,
        }
    };
    let gps = (|| {
        let mut lat = dms(exif::Tag::GPSLatitude)?;
        let mut lon = dms(exif::Tag::GPSLongitude)?;
        if reference(exif::Tag::GPSLatitudeRef)? == b'S' {
            lat = -lat;
        }
        if reference(exif::Tag::GPSLongitudeRef)? == b'W' {
            lon = -lon;
        }
        (lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0).then_some((lat, lon))
    })();
    (orientation, gps)
}

fn inspect_png(b: &[u8]) -> Result<ImageInfo, DecodeError> {
    let corrupt = |m: &str| DecodeError::Corrupt(format!("PNG header: {m}"));
    // IHDR is the first chunk: length(4) type(4) width(4) height(4) depth(1) colour(1).
    if b.len() < 8 + 8 + 13 || &b[12..16] != b"IHDR" {
        return Err(corrupt("missing IHDR"));
    }
    let rd32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let (width, height, depth, ctype) = (rd32(16), rd32(20), b[24], b[25]);
    let color = match ctype {
        0 => ColorKind::Gray,
        2 => ColorKind::Rgb,
        3 => ColorKind::Indexed,
        4 => ColorKind::GrayAlpha,
        6 => ColorKind::Rgba,
        _ => ColorKind::Unknown,
    };
    // An acTL chunk before the first IDAT makes it an animated PNG.
    let mut i = 8;
    let mut animated = false;
    while i + 8 <= b.len() {
        let len = rd32(i) as usize;
        let kind = &b[i + 4..i + 8];
        if kind == b"acTL" {
            animated = true;
        }
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        i += 12 + len;
    }
    Ok(ImageInfo { format: "png", width, height, color, bit_depth: depth, animated, exif_orientation: None, exif_gps: None, truncated: false })
}

fn inspect_gif(b: &[u8]) -> Result<ImageInfo, DecodeError> {
    let corrupt = || DecodeError::Corrupt("truncated GIF".into());
    if b.len() < 13 {
        return Err(corrupt());
    }
    let width = u16::from_le_bytes([b[6], b[7]]) as u32;
    let height = u16::from_le_bytes([b[8], b[9]]) as u32;
    let mut i = 13;
    if b[10] & 0x80 != 0 {
        i += 3 * (1 << ((b[10] & 7) + 1));
    }
    let skip_sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let n = *b.get(i)? as usize;
            i += 1 + n;
            if n == 0 {
                return Some(i);
            }
        }
    };
    let mut frames = 0;
    while let Some(&tag) = b.get(i) {
        match tag {
            0x21 => i = skip_sub_blocks(i + 2).ok_or_else(corrupt)?,
            0x2C => {
                frames += 1;
                if frames > 1 {
                    break;
                }
                let packed = *b.get(i + 9).ok_or_else(corrupt)?;
                i += 10;
                if packed & 0x80 != 0 {
                    i += 3 * (1 << ((packed & 7) + 1));
                }
                i = skip_sub_blocks(i + 1).ok_or_else(corrupt)?;
            }
            _ => break,
        }
    }
    Ok(ImageInfo {
        format: "gif",
        width,
        height,
        color: ColorKind::Indexed,
        bit_depth: 8,
        animated: frames > 1,
        exif_orientation: None,
        exif_gps: None,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, codecs::jpeg::JpegEncoder, codecs::png::PngEncoder};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 128]));
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img).unwrap();
        out
    }

    #[test]
    fn decodes_jpeg_and_grayscale_png_to_rgb() {
        let img = decode_rgb(&jpeg(32, 16), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(img.dimensions(), (32, 16));
        let gray = image::GrayImage::from_fn(4, 4, |x, _| image::Luma([x as u8 * 60]));
        let mut png = Vec::new();
        PngEncoder::new(&mut png).write_image(gray.as_raw(), 4, 4, image::ExtendedColorType::L8).unwrap();
        let rgb = decode_rgb(&png, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rgb.get_pixel(2, 0).0, [120, 120, 120]);
    }

    /// CRC-32 (IEEE) as PNG chunks use it.
    fn png_crc(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn inspect_reads_headers_without_decoding() {
        let info = inspect(&jpeg(40, 30)).unwrap();
        assert_eq!((info.format, info.width, info.height, info.color, info.bit_depth), ("jpeg", 40, 30, ColorKind::Rgb, 8));
        assert!(!info.truncated && info.exif_orientation.is_none());
        let j = jpeg(64, 64);
        assert!(inspect(&j[..j.len() - 40]).unwrap().truncated);
        // A PNG header claiming 100 000 x 100 000 pixels: inspected, never allocated.
        let mut png = Vec::new();
        PngEncoder::new(&mut png).write_image(&[0u8; 3], 1, 1, image::ExtendedColorType::Rgb8).unwrap();
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // Fix the IHDR CRC so that the decoder reads the header instead of rejecting it.
        let crc = png_crc(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let info = inspect(&png).unwrap();
        assert_eq!((info.width, info.height), (100_000, 100_000));
        assert!(matches!(decode_rgb(&png, DEFAULT_MAX_PIXELS), Err(DecodeError::TooLarge { .. })));
        assert_eq!(inspect(b""), Err(DecodeError::Corrupt("zero-byte file".into())));
        assert_eq!(inspect(b"hello"), Err(DecodeError::UnknownFormat));
    }

    #[test]
    fn rejects_garbage_truncation_and_bombs() {
        assert_eq!(decode_rgb(b"not an image at all", DEFAULT_MAX_PIXELS), Err(DecodeError::UnknownFormat));
        let j = jpeg(64, 64);
        assert!(matches!(decode_rgb(&j[..j.len() / 3], DEFAULT_MAX_PIXELS), Err(DecodeError::Corrupt(_))));
        assert!(matches!(decode_rgb(&j, 1000), Err(DecodeError::TooLarge { pixels: 4096, .. })));
    }
}
