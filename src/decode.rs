//! The one image decode function used by every stage (embedding, MLLM requests, `prepare`).
//!
//! Decisions (recorded in ARCHITECTURE.md):
//! - the format is sniffed from the bytes, never from a file name;
//! - JPEGs are decoded by libjpeg-turbo (TurboJPEG 3 API, vendored and statically linked) with
//!   the defaults PIL, torchvision and OpenCV use: accurate integer IDCT (ISLOW) and fancy
//!   (smooth) chroma upsampling, so the pixels equal PIL's `Image.open(f).convert("RGB")`
//!   exactly; PNG and GIF keep the `image` crate's decoders;
//! - EXIF orientation is NOT applied, matching PIL-based reference pipelines (`Image.open` +
//!   `convert("RGB")`), so embeddings are comparable with theirs;
//! - every colour type becomes 8-bit RGB as PIL's `convert("RGB")` does it: grayscale is
//!   replicated; alpha is dropped; CMYK and YCCK JPEGs are read as Adobe-inverted CMYK (PIL's
//!   `CMYK;I` raw mode) and converted with PIL's `cmyk2rgb`; 16-bit RGB(A) keeps the high byte
//!   (PIL's `RGB;16B` raw mode) and 16-bit grayscale is clipped to 255 (PIL's `I;16` -> `L`);
//! - images above `max_pixels` (default 89 478 485, PIL's decompression-bomb limit) and truncated
//!   or corrupt files are errors, which callers record as a `decode_failed` status (a JPEG
//!   without its end-of-image marker counts as truncated, as in PIL); both are checked from the
//!   header, before any pixel buffer is allocated;
//! - [`decode_rgb_draft`] (DCT-domain downscaling, PIL's `draft()`) exists for consumers that
//!   only need a small image; the HF encoders never use it.

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use std::cell::RefCell;
use std::io::Cursor;

/// PIL's `Image.MAX_IMAGE_PIXELS`.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// The libjpeg-turbo that decodes JPEGs: the source vendored by `turbojpeg-sys` (whose version
/// `Cargo.lock` pins; a unit test checks the two agree).
pub const JPEG_DECODER: &str = "libjpeg-turbo 3.1.0 (turbojpeg-sys 1.2.0, TurboJPEG 3 API), islow idct, fancy upsampling";

/// The decode policy, part of every dataset fingerprint (and so of every embedding store):
/// changing how pixels are produced invalidates every embedding made from them.
pub const DECODE_POLICY: &str = concat!(
    "decode/2: format sniffed; exif orientation not applied; jpeg: ",
    "libjpeg-turbo 3.1.0 (turbojpeg-sys 1.2.0, TurboJPEG 3 API), islow idct, fancy upsampling",
    "; png/gif: image 0.25; colour -> rgb8 as PIL convert(\"RGB\") (alpha dropped, 16-bit rgb high byte, 16-bit gray clipped, cmyk/ycck adobe-inverted + PIL cmyk2rgb); first frame of animations; jpeg without end-of-image marker = truncated = error"
);

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

/// Decode image bytes into 8-bit RGB under the rules above, at full size.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    decode_rgb_draft(bytes, max_pixels, None)
}

/// [`decode_rgb`], except that a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size in the DCT
/// domain, as PIL's `Image.draft("RGB", (w, h))` chooses: the largest of those reductions that
/// keeps both sides at least `min_size` (`scale = min(W / w, H / h)` rounded down to 8, 4, 2
/// or 1; the result is `ceil(W / scale) x ceil(H / scale)`). Other formats, and `None`, decode
/// at full size. Only for consumers that shrink the image anyway (the IM2GPS tiny image, prompt
/// images re-encoded to a maximum side); never for the HF encoders, whose references decode at
/// full size.
pub fn decode_rgb_draft(bytes: &[u8], max_pixels: u64, min_size: Option<(u32, u32)>) -> Result<RgbImage, DecodeError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes, max_pixels, min_size);
    }
    let corrupt = |e: image::ImageError| DecodeError::Corrupt(e.to_string());
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    reader.format().ok_or(DecodeError::UnknownFormat)?;
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
    let img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(to_rgb8_like_pil(img))
}

/// `convert("RGB")` as PIL does it for what `Image.open` makes of each PNG/GIF colour type.
fn to_rgb8_like_pil(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(i) => i,
        // PIL opens 16-bit grayscale as `I;16`; `I;16` -> `L` clips at 255.
        DynamicImage::ImageLuma16(i) => {
            let raw: Vec<u8> = i.as_raw().iter().flat_map(|&v| [v.min(255) as u8; 3]).collect();
            RgbImage::from_raw(w, h, raw).expect("size")
        }
        // 16-bit grey+alpha is read with `LA;16B`, 16-bit RGB(A) with `RGB(A);16B`: high bytes.
        DynamicImage::ImageLumaA16(i) => {
            let raw: Vec<u8> = i.as_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect();
            RgbImage::from_raw(w, h, raw).expect("size")
        }
        DynamicImage::ImageRgb16(i) => {
            RgbImage::from_raw(w, h, i.as_raw().iter().map(|&v| (v >> 8) as u8).collect()).expect("size")
        }
        DynamicImage::ImageRgba16(i) => RgbImage::from_raw(
            w,
            h,
            i.as_raw().chunks_exact(4).flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]).collect(),
        )
        .expect("size"),
        // 8-bit: grey replicated, alpha dropped (no compositing), as PIL.
        other => other.into_rgb8(),
    }
}

/// Decode `bytes` fully and discard the pixels: exactly [`decode_rgb`]'s work and errors (same
/// decoder, same checks), for `prepare`'s decode check. JPEGs are decoded into a per-thread
/// buffer that is reused from image to image, so the check allocates (and page-faults) nothing
/// once warm.
pub fn decode_check(bytes: &[u8], max_pixels: u64) -> Result<(), DecodeError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            let r = jpeg_into(bytes, max_pixels, None, &mut buf).map(|_| ());
            if buf.capacity() > 1 << 26 {
                *buf = Vec::new(); // do not keep a huge photo's buffer per thread
            }
            r
        })
    } else {
        decode_rgb(bytes, max_pixels).map(|_| ())
    }
}

thread_local! {
    /// One TurboJPEG handle per thread (tj3Init allocates; decoding is per image).
    static TURBO: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
    /// [`decode_check`]'s reusable output buffer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn decode_jpeg(bytes: &[u8], max_pixels: u64, min_size: Option<(u32, u32)>) -> Result<RgbImage, DecodeError> {
    let mut buf = Vec::new();
    let (w, h) = jpeg_into(bytes, max_pixels, min_size, &mut buf)?;
    RgbImage::from_raw(w as u32, h as u32, buf).ok_or_else(|| DecodeError::Corrupt("JPEG: buffer size".into()))
}

/// Decode a JPEG into `buf` (resized to exactly `w * h * 3` RGB bytes); returns `(w, h)`.
fn jpeg_into(bytes: &[u8], max_pixels: u64, min_size: Option<(u32, u32)>, buf: &mut Vec<u8>) -> Result<(usize, usize), DecodeError> {
    // libjpeg-turbo fills a truncated scan with grey and only warns (PIL raises "image file is
    // truncated"): require the end-of-image marker near the end of the data, before spending a
    // decode on it.
    if !has_jpeg_eoi(bytes) {
        return Err(DecodeError::Corrupt("truncated JPEG: no end-of-image marker".into()));
    }
    let tj = |e: turbojpeg::Error| DecodeError::Corrupt(format!("JPEG: {e}"));
    TURBO.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(turbojpeg::Decompressor::new().map_err(tj)?);
        }
        let d = slot.as_mut().expect("initialised");
        // Header only: the pixel limit is checked before any pixel buffer exists.
        let header = d.read_header(bytes).map_err(tj)?;
        let (width, height) = (header.width as u32, header.height as u32);
        let pixels = width as u64 * height as u64;
        if pixels > max_pixels {
            return Err(DecodeError::TooLarge { width, height, pixels, limit: max_pixels });
        }
        if width == 0 || height == 0 {
            return Err(DecodeError::Corrupt("JPEG: zero-sized image".into()));
        }
        let scale = match min_size {
            Some((mw, mh)) if !header.is_lossless => {
                let s = (width / mw.max(1)).min(height / mh.max(1));
                if s >= 8 { 8 } else if s >= 4 { 4 } else if s >= 2 { 2 } else { 1 }
            }
            _ => 1,
        };
        let factor = turbojpeg::ScalingFactor::new(1, scale);
        d.set_scaling_factor(factor).map_err(tj)?;
        let header = header.scaled(factor);
        let (w, h) = (header.width, header.height);
        let four = matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK);
        let format = if four { turbojpeg::PixelFormat::CMYK } else { turbojpeg::PixelFormat::RGB };
        let channels = format.size();
        buf.resize(w * h * channels, 0);
        let out = turbojpeg::Image { pixels: &mut buf[..], width: w, pitch: w * channels, height: h, format };
        d.decompress(bytes, out).map_err(tj)?;
        if four {
            *buf = cmyk_inverted_to_rgb(buf);
        }
        Ok((w, h))
    })
}

/// PIL's path for 4-component JPEGs: libjpeg's CMYK output (YCCK is converted to CMYK by
/// libjpeg) read with the `CMYK;I` raw mode (Adobe's inverted convention: 255 - v per channel),
/// then `cmyk2rgb` (Convert.c): `nk = 255 - k; out = clip(nk - nk * c / 255)` with PIL's
/// rounding `MULDIV255`.
fn cmyk_inverted_to_rgb(raw: &[u8]) -> Vec<u8> {
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let mut out = Vec::with_capacity(raw.len() / 4 * 3);
    for p in raw.chunks_exact(4) {
        let (c, m, y, k) = (255 - p[0] as i32, 255 - p[1] as i32, 255 - p[2] as i32, 255 - p[3] as i32);
        let nk = 255 - k;
        for v in [c, m, y] {
            out.push((nk - muldiv255(v, nk)).clamp(0, 255) as u8);
        }
    }
    out
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

    fn decode_fixtures() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode")
    }

    fn sha256_hex(b: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    }

    /// One generated file per colour type (`tests/fixtures/make_decode_fixtures.py`): georag's
    /// RGB bytes equal PIL 12.3's `Image.open(f).convert("RGB")` exactly.
    #[test]
    fn every_colour_type_matches_pil_exactly() {
        let dir = decode_fixtures();
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let files = expected["files"].as_object().unwrap();
        for name in ["cmyk.jpg", "ycck.jpg", "gray.jpg", "gray16.png", "rgb16.png", "rgba16.png", "gray_alpha16.png", "palette.png", "progressive.jpg", "rgb420.jpg", "rgb422.jpg"] {
            assert!(files.contains_key(name), "expected.json lacks {name}");
        }
        let mut failures = Vec::new();
        for (name, e) in files {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let img = decode_rgb(&bytes, DEFAULT_MAX_PIXELS).unwrap_or_else(|err| panic!("{name}: {err}"));
            let dims = (e["width"].as_u64().unwrap() as u32, e["height"].as_u64().unwrap() as u32);
            if img.dimensions() != dims || sha256_hex(img.as_raw()) != e["rgb_sha256"].as_str().unwrap() {
                failures.push(format!("{name} (PIL mode {})", e["mode"]));
            }
        }
        assert!(failures.is_empty(), "pixels differ from PIL's for {failures:?}");
        // The header says what the file is.
        assert_eq!(inspect(&std::fs::read(dir.join("ycck.jpg")).unwrap()).unwrap().color, ColorKind::Ycck);
        assert_eq!(inspect(&std::fs::read(dir.join("cmyk.jpg")).unwrap()).unwrap().color, ColorKind::Cmyk);
        let rot = inspect(&std::fs::read(dir.join("exif_rotated.jpg")).unwrap()).unwrap();
        assert_eq!((rot.exif_orientation, rot.width, rot.height), (Some(6), 67, 45), "orientation recorded, not applied");
    }

    /// Writes `tests/fixtures/decode/ycck.jpg` (Pillow cannot write YCCK): CMYK pixels
    /// compressed by libjpeg-turbo, which stores 4-component input as YCCK with an Adobe marker.
    /// Run by hand (`cargo test --release --lib write_ycck_fixture -- --ignored`), then
    /// `make_decode_fixtures.py` to digest it with PIL.
    #[test]
    #[ignore]
    fn write_ycck_fixture() {
        let (w, h) = (41usize, 29usize);
        let mut px = vec![0u8; w * h * 4];
        for y in 0..h {
            for x in 0..w {
                let p = &mut px[(y * w + x) * 4..][..4];
                p.copy_from_slice(&[(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8, (((x / 5 + y / 4) % 2) * 90 + 40) as u8]);
            }
        }
        let img = turbojpeg::Image { pixels: &px[..], width: w, pitch: w * 4, height: h, format: turbojpeg::PixelFormat::CMYK };
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_quality(90).unwrap();
        c.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
        let jpeg = c.compress_to_vec(img).unwrap();
        assert_eq!(inspect(&jpeg).unwrap().color, ColorKind::Ycck);
        std::fs::write(decode_fixtures().join("ycck.jpg"), jpeg).unwrap();
    }

    /// DCT-domain scaling picks PIL's `draft()` factor and never applies to other formats.
    #[test]
    fn draft_scales_jpegs_like_pil() {
        let j = jpeg(160, 100);
        assert_eq!(decode_rgb_draft(&j, DEFAULT_MAX_PIXELS, Some((16, 12))).unwrap().dimensions(), (20, 13)); // 1/8
        assert_eq!(decode_rgb_draft(&j, DEFAULT_MAX_PIXELS, Some((32, 25))).unwrap().dimensions(), (40, 25)); // 1/4
        assert_eq!(decode_rgb_draft(&j, DEFAULT_MAX_PIXELS, Some((60, 40))).unwrap().dimensions(), (80, 50)); // 1/2
        assert_eq!(decode_rgb_draft(&j, DEFAULT_MAX_PIXELS, Some((100, 40))).unwrap().dimensions(), (160, 100));
        assert_eq!(decode_rgb_draft(&j, DEFAULT_MAX_PIXELS, None).unwrap(), decode_rgb(&j, DEFAULT_MAX_PIXELS).unwrap());
        let png = std::fs::read(decode_fixtures().join("rgb.png")).unwrap();
        assert_eq!(decode_rgb_draft(&png, DEFAULT_MAX_PIXELS, Some((2, 2))).unwrap().dimensions(), (19, 13));
        // The pixel limit is checked on the full size, before scaling.
        assert!(matches!(decode_rgb_draft(&j, 1000, Some((16, 16))), Err(DecodeError::TooLarge { pixels: 16000, .. })));
    }

    /// `decode_check` is `decode_rgb` with the pixels discarded: same successes, same errors.
    #[test]
    fn decode_check_agrees_with_decode_rgb() {
        let j = jpeg(64, 48);
        let dir = decode_fixtures();
        let mut cases: Vec<(Vec<u8>, u64)> = vec![(j.clone(), DEFAULT_MAX_PIXELS), (j.clone(), 1000), (j[..j.len() / 2].to_vec(), DEFAULT_MAX_PIXELS), (b"junk".to_vec(), DEFAULT_MAX_PIXELS)];
        let mut garbled = j.clone();
        garbled[2..40].fill(0x11);
        cases.push((garbled, DEFAULT_MAX_PIXELS));
        for f in ["cmyk.jpg", "rgb16.png", "progressive.jpg", "gray.jpg"] {
            cases.push((std::fs::read(dir.join(f)).unwrap(), DEFAULT_MAX_PIXELS));
        }
        for (b, limit) in cases {
            assert_eq!(decode_check(&b, limit), decode_rgb(&b, limit).map(|_| ()));
        }
    }

    /// The decoder named in the policy is the one `Cargo.lock` builds.
    #[test]
    fn policy_names_the_locked_decoder() {
        assert!(DECODE_POLICY.contains(JPEG_DECODER));
        let lock = include_str!("../Cargo.lock");
        let sys = lock.split("[[package]]").find(|p| p.contains("name = \"turbojpeg-sys\"")).expect("turbojpeg-sys in Cargo.lock");
        let version = sys.lines().find_map(|l| l.strip_prefix("version = \"")).unwrap().trim_end_matches('"');
        assert!(JPEG_DECODER.contains(&format!("turbojpeg-sys {version}")), "Cargo.lock has turbojpeg-sys {version}; update JPEG_DECODER and DECODE_POLICY");
    }

    #[test]
    fn rejects_garbage_truncation_and_bombs() {
        assert_eq!(decode_rgb(b"not an image at all", DEFAULT_MAX_PIXELS), Err(DecodeError::UnknownFormat));
        let j = jpeg(64, 64);
        assert!(matches!(decode_rgb(&j[..j.len() / 3], DEFAULT_MAX_PIXELS), Err(DecodeError::Corrupt(_))));
        assert!(matches!(decode_rgb(&j, 1000), Err(DecodeError::TooLarge { pixels: 4096, .. })));
    }
}
