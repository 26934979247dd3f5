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

use image::{ImageReader, Limits, RgbImage};
use std::io::Cursor;

/// PIL's `Image.MAX_IMAGE_PIXELS`.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

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
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(DecodeError::UnknownFormat);
    }
    let (width, height) = reader.into_dimensions().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge { width, height, pixels, limit: max_pixels });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 26));
    reader.limits(limits);
    let format = reader.format();
    let img = reader.decode().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    // The JPEG decoder fills a truncated scan with grey instead of failing (PIL raises "image
    // file is truncated"): require the end-of-image marker near the end of the data.
    if format == Some(image::ImageFormat::Jpeg) && !has_jpeg_eoi(bytes) {
        return Err(DecodeError::Corrupt("truncated JPEG: no end-of-image marker".into()));
    }
    Ok(img.into_rgb8())
}

/// Whether the JPEG end-of-image marker (FF D9) occurs in the last 256 bytes (some writers
/// append a few bytes of padding after it).
fn has_jpeg_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(256)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
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

    #[test]
    fn rejects_garbage_truncation_and_bombs() {
        assert_eq!(decode_rgb(b"not an image at all", DEFAULT_MAX_PIXELS), Err(DecodeError::UnknownFormat));
        let j = jpeg(64, 64);
        assert!(matches!(decode_rgb(&j[..j.len() / 3], DEFAULT_MAX_PIXELS), Err(DecodeError::Corrupt(_))));
        assert!(matches!(decode_rgb(&j, 1000), Err(DecodeError::TooLarge { pixels: 4096, .. })));
    }
}
