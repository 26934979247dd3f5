//! `georag prepare`: ingest a benchmark or retrieval database (metadata file + images from a
//! directory, a tar stream or zip archives, or EXIF GPS of an image folder) into validated
//! Parquet shards, with every rejected row kept in a quarantine report.
//!
//! Invariants:
//! - nothing is lost: every input row ends up either in a shard or in `quarantine.parquet` with
//!   its reason, and `kept + quarantined = input rows` is checked before the manifest is written;
//! - nothing is silently fixed: coordinates are never clamped or swapped, a latitude beyond ±90
//!   is quarantined as "likely swapped columns";
//! - a policy per [`Reason`] decides `skip` (quarantine), `keep` (keep the row, count the flag)
//!   or `fail` (stop with an error naming the row); defaults keep the run going;
//! - pixels come only from [`crate::decode`]; headers are inspected before decoding, so a
//!   decompression bomb is rejected without allocating it;
//! - work is streamed in batches (hashing, header checks and decoding in parallel with rayon),
//!   so memory stays bounded by the batch, the id/hash sets and, for tar input, the metadata;
//! - an interrupted run resumes from the last complete shard (`prepare.state.json`, written
//!   atomically after each shard together with the quarantine records before it).

use super::def::{DatasetDef, StoreMode};
use super::shard::{DatasetRow, Manifest, ShardError, ShardInfo, ShardWriter};
use crate::decode::{self, ColorKind, DecodeError};
use crate::eval::read::{self, Num, Role};
use crate::util::atomic;
use crate::util::fingerprint::{Fingerprint, sha256_hex};
use crate::util::pq::{self, ParquetError};
use crate::util::progress::Progress;
use arrow::array::{ArrayRef, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Why a row was quarantined or flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    MissingCoordinates,
    UnparseableCoordinates,
    /// |lat| > 90: most often latitude and longitude columns swapped.
    LatOutOfRange,
    LonOutOfRange,
    /// Exactly (0, 0): Flickr's "no location".
    NullIsland,
    DuplicateId,
    /// The same image bytes under another id.
    DuplicateImage,
    /// An id or path that is not valid UTF-8.
    InvalidUtf8,
    /// An image path with `..` or an absolute path: refused.
    PathEscapesRoot,
    MissingImage,
    EmptyImage,
    UnsupportedFormat,
    CorruptImage,
    TruncatedImage,
    /// Above the pixel limit (decompression-bomb guard), from the header.
    OversizedImage,
    CmykImage,
    GrayscaleImage,
    HighBitDepth,
    AnimatedImage,
    /// EXIF orientation other than upright (recorded, not applied).
    ExifRotated,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::MissingCoordinates,
        Reason::UnparseableCoordinates,
        Reason::LatOutOfRange,
        Reason::LonOutOfRange,
        Reason::NullIsland,
        Reason::DuplicateId,
        Reason::DuplicateImage,
        Reason::InvalidUtf8,
        Reason::PathEscapesRoot,
        Reason::MissingImage,
        Reason::EmptyImage,
        Reason::UnsupportedFormat,
        Reason::CorruptImage,
        Reason::TruncatedImage,
        Reason::OversizedImage,
        Reason::CmykImage,
        Reason::GrayscaleImage,
        Reason::HighBitDepth,
        Reason::AnimatedImage,
        Reason::ExifRotated,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Defaults: unusable rows are skipped (quarantined), conditions that still give a usable
    /// row (colour layout, bit depth, rotation, duplicate bytes) are kept and counted.
    pub fn default_policy(self) -> Policy {
        match self {
            Reason::DuplicateImage
            | Reason::CmykImage
            | Reason::GrayscaleImage
            | Reason::HighBitDepth
            | Reason::AnimatedImage
            | Reason::ExifRotated => Policy::Keep,
            _ => Policy::Skip,
        }
    }
}

/// What to do with a row that has a [`Reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Skip,
    Keep,
    Fail,
}

/// Options of `georag prepare`.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// The metadata file, or a directory holding the definition's metadata file.
    pub metadata: Option<PathBuf>,
    /// Image sources: one directory, one `.tar` file, or one or more `.zip` files.
    pub images: Vec<PathBuf>,
    pub out: PathBuf,
    pub shard_rows: usize,
    /// Overrides the definition's storage mode.
    pub store: Option<StoreMode>,
    /// Decode every image fully (not only its header) to prove it decodes.
    pub decode_check: bool,
    pub max_pixels: u64,
    /// Policy overrides.
    pub policies: BTreeMap<Reason, Policy>,
    /// Rows processed per parallel batch.
    pub batch: usize,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            metadata: None,
            images: Vec::new(),
            out: PathBuf::from("datasets-prepared"),
            shard_rows: 4096,
            store: None,
            decode_check: true,
            max_pixels: decode::DEFAULT_MAX_PIXELS,
            policies: BTreeMap::new(),
            batch: 256,
        }
    }
}

/// Error that stops `prepare`.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error("{path}: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Write(#[from] atomic::AtomicWriteError),
    #[error("{path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error("{loc} (id `{id}`): {reason:?} with policy `fail`: {detail}")]
    Failed { loc: String, id: String, reason: Reason, detail: String },
    #[error("dataset `{name}` has no metadata file: give --metadata FILE, or --images DIR of photos with EXIF GPS")]
    NoInput { name: String },
    #[error("{out}: an interrupted prepare of different inputs is here (state {found}, now {want}); remove the directory or choose another --out")]
    StateMismatch { out: PathBuf, found: String, want: String },
    #[error("{inner}\n  this file is the `{variant}` variant of dataset `{name}` (its sha256 is that of {file} in the definition): add `--variant {variant}`")]
    WrongVariant { inner: Box<PrepareError>, name: String, variant: String, file: String },
    #[error("internal count mismatch: {kept} kept + {quarantined} quarantined != {input} input rows")]
    Count { kept: usize, quarantined: usize, input: usize },
}

/// One quarantined row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    /// 0-based input index (metadata data row, or tar entry).
    pub src: u64,
    /// Human location: `data row 17` (1-based, header excluded) or `tar entry a/b.jpg`.
    pub loc: String,
    pub id: String,
    pub reason: Reason,
    pub detail: String,
}

/// Counters and examples, persisted across resumes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tally {
    input: usize,
    kept: usize,
    quarantined: BTreeMap<String, usize>,
    flagged: BTreeMap<String, usize>,
    examples: BTreeMap<String, Vec<String>>,
    unlisted_images: usize,
    lat_over_90_with_lon_within_90: usize,
}

impl Tally {
    fn example(&mut self, reason: Reason, text: String) {
        let e = self.examples.entry(reason.name()).or_default();
        if e.len() < 5 {
            e.push(text);
        }
    }
    fn n_quarantined(&self) -> usize {
        self.quarantined.values().sum()
    }
}

/// `prepare.state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    inputs: String,
    input_consumed: u64,
    shards: Vec<ShardInfo>,
    quarantine_parts: usize,
    tally: Tally,
}

/// Where an input row's image comes from.
enum ImgSrc {
    None,
    File { root: PathBuf, rel: String },
    Bytes { name: String, bytes: Vec<u8> },
    Zip { name: String },
}

struct Input {
    src: u64,
    loc: String,
    id: Result<String, String>,
    lat: Num,
    lon: Num,
    author: Option<String>,
    extra: serde_json::Map<String, serde_json::Value>,
    image: ImgSrc,
    /// Coordinates come from the image's EXIF GPS.
    exif_coords: bool,
}

enum Outcome {
    Keep { row: DatasetRow, flags: Vec<Reason>, src: u64 },
    Quarantine(Quarantined),
}

/// The result of `prepare`.
pub struct Prepared {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub resumed: bool,
}

/// Resolved metadata columns.
struct Columns {
    id: usize,
    lat: usize,
    lon: usize,
    author: Option<usize>,
    extra: Vec<(String, usize)>,
    described: Vec<String>,
}

fn resolve_columns(path: &Path, def: &DatasetDef) -> Result<Columns, PrepareError> {
    let headers = read::headers(path)?;
    let cols = def.metadata.as_ref().map(|m| m.columns.clone()).unwrap_or_default();
    // A name from the definition is reported as the definition's role for it (`author`), never
    // as a CLI flag the user did not give.
    let what = |key: &str| {
        let name = def.name.clone();
        let key = key.to_string();
        move |given: &str| format!("the `{key}` column `{given}` of dataset definition `{name}` (metadata.columns.{key})")
    };
    let need = |role: Role, key: &str, given: &Option<String>| -> Result<read::UsedColumn, PrepareError> {
        read::resolve_given(path, &headers, role, given.as_deref(), what(key))?.ok_or_else(|| PrepareError::Metadata {
            path: path.to_path_buf(),
            message: format!(
                "no {key} column found among {}; set `metadata.columns.{key}` in dataset definition `{}`",
                headers.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", "),
                def.name
            ),
        })
    };
    let id = need(Role::Id, "id", &cols.id)?;
    let lat = need(Role::Lat, "lat", &cols.lat)?;
    let lon = need(Role::Lon, "lon", &cols.lon)?;
    let find = |key: &str, name: &str| -> Result<usize, PrepareError> {
        Ok(read::resolve_given(path, &headers, Role::Id, Some(name), what(key))?.expect("an explicit name resolves or errs").index)
    };
    let author = cols.author.as_deref().map(|n| find("author", n)).transpose()?;
    let extra = cols.extra.iter().map(|n| Ok((n.clone(), find("extra", n)?))).collect::<Result<Vec<_>, PrepareError>>()?;
    let described = vec![id.to_string(), lat.to_string(), lon.to_string()];
    Ok(Columns { id: id.index, lat: lat.index, lon: lon.index, author, extra, described })
}

/// A metadata row: input index, id (`Err` holds the lossy text of a non-UTF-8 id), lat, lon,
/// author, extra columns.
type MetaRow = (u64, Result<String, String>, Num, Num, Option<String>, serde_json::Map<String, serde_json::Value>);

/// The id's text, lossy when it was not valid UTF-8.
fn id_text(id: &Result<String, String>) -> &str {
    match id {
        Ok(s) | Err(s) => s,
    }
}

/// Streams metadata rows in batches (CSV; the id's UTF-8 validity is checked on raw bytes).
struct MetaReader {
    rd: csv::Reader<std::fs::File>,
    cols: Columns,
    next_src: u64,
    path: PathBuf,
}

impl MetaReader {
    fn open(path: &Path, def: &DatasetDef) -> Result<Self, PrepareError> {
        let cols = resolve_columns(path, def)?;
        let f = std::fs::File::open(path).map_err(|source| PrepareError::Io { path: path.to_path_buf(), source })?;
        let rd = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(f);
        Ok(MetaReader { rd, cols, next_src: 0, path: path.to_path_buf() })
    }

    /// Up to `n` rows; empty at the end.
    fn batch(&mut self, n: usize) -> Result<Vec<MetaRow>, PrepareError> {
        let mut out = Vec::with_capacity(n);
        let mut rec = csv::ByteRecord::new();
        while out.len() < n {
            let more = self.rd.read_byte_record(&mut rec).map_err(|e| PrepareError::Metadata {
                path: self.path.clone(),
                message: format!("data row {}: {e}", self.next_src + 1),
            })?;
            if !more {
                break;
            }
            if rec.len() == 1 && rec[0].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let src = self.next_src;
            self.next_src += 1;
            let text = |i: usize| rec.get(i).map(|b| String::from_utf8_lossy(b).trim().to_string());
            let id_bytes = rec.get(self.cols.id).unwrap_or(b"");
            let id = match std::str::from_utf8(id_bytes) {
                Ok(s) => Ok(s.trim().trim_start_matches('\u{feff}').to_string()),
                Err(_) => Err(String::from_utf8_lossy(id_bytes).into_owned()),
            };
            let lat = text(self.cols.lat).map(|s| Num::parse(&s)).unwrap_or(Num::Empty);
            let lon = text(self.cols.lon).map(|s| Num::parse(&s)).unwrap_or(Num::Empty);
            let author = self.cols.author.and_then(text).filter(|s| !s.is_empty());
            let extra = self
                .cols
                .extra
                .iter()
                .map(|(name, i)| (name.clone(), text(*i).map(serde_json::Value::String).unwrap_or(serde_json::Value::Null)))
                .collect();
            out.push((src, id, lat, lon, author, extra));
        }
        Ok(out)
    }
}

/// Expand the image path template for an id.
fn image_rel(template: &str, id: &str) -> String {
    template.replace("{id}", id)
}

/// Whether a relative path stays inside its root.
fn escapes_root(rel: &str) -> bool {
    let p = Path::new(rel);
    p.is_absolute() || rel.starts_with('/') || rel.starts_with('\\') || p.components().any(|c| matches!(c, Component::ParentDir | Component::Prefix(_) | Component::RootDir))
}

/// Zip archives indexed by entry name and basename.
struct ZipIndex {
    paths: Vec<PathBuf>,
    /// entry key -> (archive, full entry name)
    by_name: HashMap<String, (usize, String)>,
}

impl ZipIndex {
    fn open(paths: &[PathBuf]) -> Result<Self, PrepareError> {
        let mut by_name = HashMap::new();
        for (ai, p) in paths.iter().enumerate() {
            let f = std::fs::File::open(p).map_err(|source| PrepareError::Io { path: p.clone(), source })?;
            let z = zip::ZipArchive::new(f).map_err(|e| PrepareError::Archive { path: p.clone(), message: e.to_string() })?;
            for name in z.file_names() {
                let name = name.map_err(|e| PrepareError::Archive { path: p.clone(), message: e.to_string() })?;
                if name.ends_with('/') {
                    continue;
                }
                let full = name.to_string();
                let base = full.rsplit('/').next().unwrap_or(&full).to_string();
                by_name.entry(full.clone()).or_insert((ai, full.clone()));
                by_name.entry(base).or_insert((ai, full));
            }
        }
        Ok(ZipIndex { paths: paths.to_vec(), by_name })
    }

    fn read(&self, key: &str) -> Option<Result<Vec<u8>, String>> {
        let base = key.rsplit('/').next().unwrap_or(key);
        let (ai, name) = self.by_name.get(key).or_else(|| self.by_name.get(base))?.clone();
        thread_local! {
            static OPEN: std::cell::RefCell<HashMap<PathBuf, zip::ZipArchive<std::fs::File>>> = std::cell::RefCell::new(HashMap::new());
        }
        let path = self.paths[ai].clone();
        Some(OPEN.with(|open| {
            let mut open = open.borrow_mut();
            if !open.contains_key(&path) {
                let f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                open.insert(path.clone(), zip::ZipArchive::new(f).map_err(|e| e.to_string())?);
            }
            let z = open.get_mut(&path).expect("inserted");
            let mut e = z.by_name(&name).map_err(|e| e.to_string())?;
            let mut buf = Vec::with_capacity(e.size() as usize);
            e.read_to_end(&mut buf).map_err(|e| format!("{}!{name}: {e}", path.display()))?;
            Ok(buf)
        }))
    }
}

struct Ctx<'a> {
    policies: BTreeMap<Reason, Policy>,
    decode_check: bool,
    max_pixels: u64,
    store: StoreMode,
    zip: Option<&'a ZipIndex>,
}

impl Ctx<'_> {
    fn policy(&self, r: Reason) -> Policy {
        self.policies.get(&r).copied().unwrap_or(r.default_policy())
    }
}

/// Validate one row (parallel part): coordinates, path, bytes, header, decode.
fn process(input: Input, ctx: &Ctx) -> Result<Outcome, PrepareError> {
    let id_lossy = id_text(&input.id).to_string();
    let mut flags = Vec::new();
    // Apply a reason's policy: Ok(Some) = quarantine now, Ok(None) = keep going.
    macro_rules! check {
        ($reason:expr, $detail:expr) => {{
            let reason = $reason;
            let detail: String = $detail;
            match ctx.policy(reason) {
                Policy::Skip => {
                    return Ok(Outcome::Quarantine(Quarantined { src: input.src, loc: input.loc.clone(), id: id_lossy, reason, detail }));
                }
                Policy::Fail => return Err(PrepareError::Failed { loc: input.loc.clone(), id: id_lossy, reason, detail }),
                Policy::Keep => flags.push(reason),
            }
        }};
    }
    let id = match &input.id {
        Ok(s) if !s.is_empty() => s.clone(),
        Ok(_) => {
            check!(Reason::InvalidUtf8, "empty id".into());
            String::new()
        }
        Err(lossy) => {
            check!(Reason::InvalidUtf8, format!("id is not valid UTF-8 (lossy: {lossy})"));
            lossy.clone()
        }
    };
    // Image first when coordinates come from EXIF.
    let mut bytes: Option<Vec<u8>> = None;
    let mut image_path: Option<String> = None;
    let mut info: Option<decode::ImageInfo> = None;
    match &input.image {
        ImgSrc::None => {}
        ImgSrc::File { root, rel } => {
            if escapes_root(rel) {
                check!(Reason::PathEscapesRoot, format!("image path `{rel}` leaves the image root"));
            } else {
                match std::fs::read(root.join(rel)) {
                    Ok(b) => {
                        bytes = Some(b);
                        image_path = Some(rel.clone());
                    }
                    Err(e) => check!(Reason::MissingImage, format!("{}: {e}", root.join(rel).display())),
                }
            }
        }
        ImgSrc::Bytes { bytes: b, .. } => bytes = Some(b.clone()),
        ImgSrc::Zip { name } => match ctx.zip.and_then(|z| z.read(name)) {
            Some(Ok(b)) => bytes = Some(b),
            Some(Err(e)) => check!(Reason::CorruptImage, format!("reading zip entry `{name}`: {e}")),
            None => check!(Reason::MissingImage, format!("no zip entry `{name}`")),
        },
    }
    if let Some(b) = &bytes {
        if b.is_empty() {
            check!(Reason::EmptyImage, "zero-byte image file".into());
        } else {
            match decode::inspect(b) {
                Err(DecodeError::UnknownFormat) => check!(Reason::UnsupportedFormat, "not a JPEG, PNG or GIF".into()),
                Err(e) => check!(Reason::CorruptImage, e.to_string()),
                Ok(i) => {
                    let pixels = i.width as u64 * i.height as u64;
                    if pixels > ctx.max_pixels {
                        check!(Reason::OversizedImage, format!("{}x{} = {pixels} pixels > limit {}", i.width, i.height, ctx.max_pixels));
                    }
                    if i.truncated {
                        check!(Reason::TruncatedImage, "JPEG without end-of-image marker".into());
                    }
                    match i.color {
                        ColorKind::Cmyk | ColorKind::Ycck => check!(Reason::CmykImage, format!("{:?} JPEG, converted to RGB on decode", i.color)),
                        ColorKind::Gray | ColorKind::GrayAlpha => check!(Reason::GrayscaleImage, "grayscale, replicated to RGB on decode".into()),
                        _ => {}
                    }
                    if i.bit_depth > 8 {
                        check!(Reason::HighBitDepth, format!("{}-bit samples, reduced to 8 bits on decode as PIL does", i.bit_depth));
                    }
                    if i.animated {
                        check!(Reason::AnimatedImage, "animated; the first frame is used".into());
                    }
                    if i.exif_orientation.is_some_and(|o| o != 1) {
                        check!(Reason::ExifRotated, format!("EXIF orientation {} (recorded, not applied)", i.exif_orientation.unwrap_or(0)));
                    }
                    info = Some(i);
                }
            }
            if ctx.decode_check && info.is_some() {
                if let Err(e) = decode::decode_check(b, ctx.max_pixels) {
                    check!(Reason::CorruptImage, format!("decode: {e}"));
                }
            }
        }
    }
    // Coordinates.
    let (lat, lon) = if input.exif_coords {
        match info.as_ref().and_then(|i| i.exif_gps) {
            Some((a, b)) => (Num::Value(a), Num::Value(b)),
            None => (Num::Empty, Num::Empty),
        }
    } else {
        (input.lat.clone(), input.lon.clone())
    };
    let (lat, lon) = match (lat, lon) {
        (Num::Empty, _) | (_, Num::Empty) => {
            let what = if input.exif_coords { "no EXIF GPS position" } else { "empty latitude or longitude" };
            check!(Reason::MissingCoordinates, what.into());
            (f64::NAN, f64::NAN)
        }
        (Num::Garbage(g), _) | (_, Num::Garbage(g)) => {
            check!(Reason::UnparseableCoordinates, format!("`{g}` is not a number"));
            (f64::NAN, f64::NAN)
        }
        (Num::Value(a), Num::Value(b)) => (a, b),
    };
    if !lat.is_finite() || !lon.is_finite() {
        check!(Reason::UnparseableCoordinates, format!("non-finite coordinate ({lat}, {lon})"));
    } else if lat.abs() > 90.0 {
        let hint = if lon.abs() <= 90.0 { "; likely swapped latitude/longitude columns (not fixed)" } else { "" };
        check!(Reason::LatOutOfRange, format!("latitude {lat} outside [-90, 90]{hint}"));
    } else if lon.abs() > 180.0 {
        check!(Reason::LonOutOfRange, format!("longitude {lon} outside [-180, 180]"));
    } else if lat == 0.0 && lon == 0.0 {
        check!(Reason::NullIsland, "exactly (0, 0): Flickr's \"no location\"".into());
    }
    let sha256 = bytes.as_deref().map(sha256_hex).unwrap_or_default();
    let mut meta = input.extra;
    if let Some(i) = &info {
        meta.insert("format".into(), i.format.into());
        meta.insert("width".into(), i.width.into());
        meta.insert("height".into(), i.height.into());
        if let Some(o) = i.exif_orientation {
            meta.insert("exif_orientation".into(), o.into());
        }
    }
    if !flags.is_empty() {
        meta.insert("flags".into(), flags.iter().map(|f| serde_json::Value::String(f.name())).collect());
    }
    if let ImgSrc::Bytes { name, .. } | ImgSrc::Zip { name } = &input.image {
        meta.insert("source_entry".into(), name.clone().into());
    }
    let (image, image_path) = match ctx.store {
        StoreMode::Inline => (bytes, None),
        StoreMode::Reference => (None, image_path),
    };
    Ok(Outcome::Keep {
        row: DatasetRow {
            id,
            lat,
            lon,
            image,
            image_path,
            sha256,
            author: input.author,
            meta: (!meta.is_empty()).then(|| serde_json::Value::Object(meta).to_string()),
        },
        flags,
        src: input.src,
    })
}

fn quarantine_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("src_row", DataType::UInt64, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
    ]))
}

fn write_quarantine(path: &Path, q: &[Quarantined]) -> Result<(), ParquetError> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(q.iter().map(|r| r.src))),
        Arc::new(StringArray::from_iter_values(q.iter().map(|r| r.loc.as_str()))),
        Arc::new(StringArray::from_iter_values(q.iter().map(|r| r.id.as_str()))),
        Arc::new(StringArray::from_iter_values(q.iter().map(|r| r.reason.name()))),
        Arc::new(StringArray::from_iter_values(q.iter().map(|r| r.detail.as_str()))),
    ];
    let batch = RecordBatch::try_new(quarantine_schema(), cols).expect("quarantine columns");
    pq::write(path, quarantine_schema(), &[batch], &[])
}

/// Read a quarantine file (or part).
pub fn read_quarantine(path: &Path) -> Result<Vec<Quarantined>, ParquetError> {
    let mut out = Vec::new();
    for b in pq::read(path)? {
        let src = pq::column::<UInt64Array>(path, &b, "src_row")?;
        let loc = pq::column::<StringArray>(path, &b, "location")?;
        let id = pq::column::<StringArray>(path, &b, "id")?;
        let reason = pq::column::<StringArray>(path, &b, "reason")?;
        let detail = pq::column::<StringArray>(path, &b, "detail")?;
        for r in 0..b.num_rows() {
            out.push(Quarantined {
                src: src.value(r),
                loc: loc.value(r).to_string(),
                id: id.value(r).to_string(),
                reason: Reason::parse(reason.value(r)).ok_or_else(|| ParquetError::Column {
                    path: path.to_path_buf(),
                    column: "reason".into(),
                    message: format!("row {r}: unknown reason `{}`", reason.value(r)),
                })?,
                detail: detail.value(r).to_string(),
            });
        }
    }
    Ok(out)
}

/// 128-bit key of a string (truncated sha256): collisions are negligible (~1e-25 at 5 M rows)
/// and it keeps the duplicate sets small for databases of millions of rows.
fn key128(s: &str) -> u128 {
    let d = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(s.as_bytes()));
    u128::from_le_bytes(d[..16].try_into().expect("16 bytes"))
}

/// The sequential half: duplicates, tallies, shard and quarantine writes, state.
struct Committer<'a> {
    out: &'a Path,
    writer: ShardWriter,
    ids: HashSet<u128>,
    hashes: HashMap<u128, u64>,
    pending_q: Vec<Quarantined>,
    state: State,
    policies: &'a BTreeMap<Reason, Policy>,
}

impl Committer<'_> {
    fn policy(&self, r: Reason) -> Policy {
        self.policies.get(&r).copied().unwrap_or(r.default_policy())
    }

    fn quarantine(&mut self, q: Quarantined) {
        *self.state.tally.quarantined.entry(q.reason.name()).or_insert(0) += 1;
        self.state.tally.example(q.reason, format!("{} (id `{}`): {}", q.loc, q.id, q.detail));
        self.pending_q.push(q);
    }

    fn commit(&mut self, outcome: Outcome, loc_of: impl Fn(u64) -> String) -> Result<(), PrepareError> {
        self.state.tally.input += 1;
        let (row, mut flags, src) = match outcome {
            Outcome::Quarantine(q) => {
                self.quarantine(q);
                return Ok(());
            }
            Outcome::Keep { row, flags, src } => (row, flags, src),
        };
        let n_flags_before = flags.len();
        let mut gate = |me: &mut Self, reason: Reason, detail: String| -> Result<bool, PrepareError> {
            match me.policy(reason) {
                Policy::Skip => {
                    me.quarantine(Quarantined { src, loc: loc_of(src), id: row.id.clone(), reason, detail });
                    Ok(false)
                }
                Policy::Fail => Err(PrepareError::Failed { loc: loc_of(src), id: row.id.clone(), reason, detail }),
                Policy::Keep => {
                    flags.push(reason);
                    Ok(true)
                }
            }
        };
        let idk = key128(&row.id);
        if self.ids.contains(&idk) && !gate(self, Reason::DuplicateId, "id already seen in an earlier row".into())? {
            return Ok(());
        }
        if !row.sha256.is_empty() {
            let hk = key128(&row.sha256);
            if let Some(&first) = self.hashes.get(&hk) {
                let what = if first == u64::MAX { "a row written before this run resumed".to_string() } else { loc_of(first) };
                if !gate(self, Reason::DuplicateImage, format!("same image bytes as {what}"))? {
                    return Ok(());
                }
            } else {
                self.hashes.insert(hk, src);
            }
        }
        self.ids.insert(idk);
        let mut row = row;
        if flags.len() > n_flags_before {
            // Flags added here (duplicate bytes) join those recorded in the row's meta.
            let mut meta: serde_json::Map<String, serde_json::Value> =
                row.meta.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
            meta.insert("flags".into(), flags.iter().map(|f| serde_json::Value::String(f.name())).collect());
            row.meta = Some(serde_json::Value::Object(meta).to_string());
        }
        for f in &flags {
            *self.state.tally.flagged.entry(f.name()).or_insert(0) += 1;
            self.state.tally.example(*f, format!("{} (id `{}`): kept", loc_of(src), row.id));
        }
        self.state.tally.kept += 1;
        let before = self.writer.shards().len();
        self.writer.push(row)?;
        if self.writer.shards().len() > before {
            self.checkpoint(src + 1)?;
        }
        Ok(())
    }

    /// After a shard flush: write the quarantine records so far and the state.
    fn checkpoint(&mut self, consumed: u64) -> Result<(), PrepareError> {
        let part = self.out.join(format!("quarantine-part-{:05}.parquet", self.state.quarantine_parts));
        write_quarantine(&part, &self.pending_q)?;
        self.pending_q.clear();
        self.state.quarantine_parts += 1;
        self.state.input_consumed = consumed;
        self.state.shards = self.writer.shards().to_vec();
        atomic::write_json(&self.out.join("prepare.state.json"), &self.state)?;
        Ok(())
    }
}

/// The variant of `def` whose metadata sha256 is `sha` (and its file name), when the definition's
/// own metadata is not that file.
pub fn matching_variant(def: &DatasetDef, sha: &str) -> Option<(String, String)> {
    if def.metadata.as_ref().and_then(|m| m.sha256.as_deref()) == Some(sha) {
        return None;
    }
    def.variants.iter().find(|(_, v)| v.metadata.sha256.as_deref() == Some(sha)).map(|(k, v)| (k.clone(), v.metadata.file.clone()))
}

/// Run `prepare` for a (variant-resolved) definition.
pub fn prepare(def: &DatasetDef, opts: &PrepareOptions) -> Result<Prepared, PrepareError> {
    let out = opts.out.clone();
    std::fs::create_dir_all(&out).map_err(|source| PrepareError::Io { path: out.clone(), source })?;
    // Inputs.
    let metadata: Option<PathBuf> = match (&opts.metadata, &def.metadata) {
        (Some(p), Some(m)) if p.is_dir() => Some(p.join(&m.file)),
        (Some(p), _) => Some(p.clone()),
        (None, _) => None,
    };
    let images = opts.images.clone();
    let kind = |p: &Path| p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    let is_tar = images.len() == 1 && matches!(kind(&images[0]).as_str(), "tar");
    let is_zip = !images.is_empty() && images.iter().all(|p| kind(p) == "zip");
    if !is_tar && !is_zip && images.len() > 1 {
        return Err(PrepareError::Archive { path: images[1].clone(), message: "several --images are only supported for .zip archives".into() });
    }
    if metadata.is_none() && (images.is_empty() || is_tar || is_zip) {
        return Err(PrepareError::NoInput { name: def.name.clone() });
    }
    let mut store = opts.store.unwrap_or(def.images.store);
    if (is_tar || is_zip) && store == StoreMode::Reference {
        // Paths inside archives cannot be opened later by path.
        store = StoreMode::Inline;
    }
    let meta_sha = metadata.as_ref().map(|p| std::fs::read(p).map(|b| sha256_hex(&b)).map_err(|source| PrepareError::Io { path: p.clone(), source })).transpose()?;
    // The file given may be one of the definition's variants (by sha256): say so, in the error
    // when the definition's columns do not fit it, else in the manifest (`matches_variant`).
    let variant_match = meta_sha.as_deref().and_then(|sha| matching_variant(def, sha));
    if let (Some(p), Some((variant, file))) = (&metadata, &variant_match) {
        if let Err(e) = resolve_columns(p, def) {
            return Err(PrepareError::WrongVariant { inner: Box::new(e), name: def.name.clone(), variant: variant.clone(), file: file.clone() });
        }
    }
    let inputs_fp = Fingerprint::new("prepare/1")
        .json(def)
        .json(&meta_sha)
        .json(&images.iter().map(|p| p.display().to_string()).collect::<Vec<_>>())
        .field(opts.shard_rows.to_le_bytes())
        .json(&store)
        .json(&opts.decode_check)
        .json(&opts.max_pixels)
        .json(&opts.policies)
        .finish();

    // Resume?
    let state_path = out.join("prepare.state.json");
    let previous: Option<State> = std::fs::read_to_string(&state_path).ok().and_then(|s| serde_json::from_str(&s).ok());
    if let Some(p) = &previous {
        if p.inputs != inputs_fp {
            return Err(PrepareError::StateMismatch { out: out.clone(), found: p.inputs.clone(), want: inputs_fp });
        }
    }
    let resumed = previous.is_some();
    let state = previous.unwrap_or(State { inputs: inputs_fp, input_consumed: 0, shards: vec![], quarantine_parts: 0, tally: Tally::default() });
    let (writer, done_rows) = if resumed {
        ShardWriter::resume(&out, &def.name, opts.shard_rows, state.shards.clone())?
    } else {
        (ShardWriter::new(&out, &def.name, opts.shard_rows)?, Vec::new())
    };
    let mut c = Committer {
        out: &out,
        writer,
        ids: HashSet::new(),
        hashes: HashMap::new(),
        pending_q: Vec::new(),
        state,
        policies: &opts.policies,
    };
    for r in &done_rows {
        c.ids.insert(key128(&r.id));
        if !r.sha256.is_empty() {
            c.hashes.insert(key128(&r.sha256), u64::MAX);
        }
    }
    let mut seen_ids: HashSet<u128> = c.ids.clone();
    for i in 0..c.state.quarantine_parts {
        for q in read_quarantine(&out.join(format!("quarantine-part-{i:05}.parquet")))? {
            seen_ids.insert(key128(&q.id));
        }
    }
    drop(done_rows);
    let zip_index = if is_zip { Some(ZipIndex::open(&images)?) } else { None };
    let ctx = Ctx { policies: opts.policies.clone(), decode_check: opts.decode_check, max_pixels: opts.max_pixels, store, zip: zip_index.as_ref() };
    let template = def.images.path.clone();
    let skip = c.state.input_consumed;
    let mut columns_used = Vec::new();

    if is_tar {
        // Stream the tar; match entries to metadata rows by path or basename.
        let mpath = metadata.clone().expect("checked above");
        let mut reader = MetaReader::open(&mpath, def)?;
        columns_used = reader.cols.described.clone();
        // Every metadata row once, plus an index from its image path (and basename) to it.
        let mut metas: Vec<MetaRow> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        loop {
            let b = reader.batch(8192)?;
            if b.is_empty() {
                break;
            }
            for row in b {
                let rel = image_rel(&template, id_text(&row.1));
                let base = rel.rsplit('/').next().unwrap_or(&rel).to_string();
                if base != rel {
                    by_key.entry(base).or_insert(metas.len());
                }
                by_key.insert(rel, metas.len());
                metas.push(row);
            }
        }
        let tar_path = &images[0];
        let f = std::fs::File::open(tar_path).map_err(|source| PrepareError::Io { path: tar_path.clone(), source })?;
        let mut ar = tar::Archive::new(std::io::BufReader::new(f));
        let arch_err = |e: std::io::Error| PrepareError::Archive { path: tar_path.clone(), message: e.to_string() };
        let progress = Progress::new(&format!("prepare {}", def.name), metas.len() as u64);
        let n_meta = metas.len() as u64;
        let mut entry_index: u64 = 0;
        let mut batch: Vec<Input> = Vec::new();
        let mut matched: HashSet<u64> = HashSet::new();
        let mut entries = ar.entries().map_err(arch_err)?;
        loop {
            let next = entries.next();
            let done = next.is_none();
            if let Some(e) = next {
                let mut e = e.map_err(arch_err)?;
                if !e.header().entry_type().is_file() {
                    continue;
                }
                let name = String::from_utf8_lossy(&e.path_bytes()).trim_start_matches("./").to_string();
                let base = name.rsplit('/').next().unwrap_or(&name).to_string();
                let Some(meta) = by_key.get(&name).or_else(|| by_key.get(&base)).map(|&i| metas[i].clone()) else {
                    c.state.tally.unlisted_images += 1;
                    continue;
                };
                let idx = entry_index;
                entry_index += 1;
                matched.insert(meta.0);
                if idx < skip {
                    continue;
                }
                let mut bytes = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut bytes).map_err(arch_err)?;
                let (_, id, lat, lon, author, extra) = meta;
                batch.push(Input { src: idx, loc: format!("tar entry {name}"), id, lat, lon, author, extra, image: ImgSrc::Bytes { name, bytes }, exif_coords: false });
            }
            if batch.len() >= opts.batch || (done && !batch.is_empty()) {
                let n = batch.len() as u64;
                let outcomes: Vec<Result<Outcome, PrepareError>> = std::mem::take(&mut batch).into_par_iter().map(|i| process(i, &ctx)).collect();
                for o in outcomes {
                    let o = o?;
                    c.commit(o, |s| format!("tar entry #{s}"))?;
                }
                progress.set_message(format!("{} quarantined", c.state.tally.n_quarantined()));
                progress.inc(n);
            }
            if done {
                break;
            }
        }
        // Metadata rows never found in the tar.
        let mut src = entry_index.max(n_meta);
        for (msrc, id) in metas.iter().map(|m| (m.0, id_text(&m.1).to_string())) {
            if matched.contains(&msrc) || seen_ids.contains(&key128(&id)) {
                continue;
            }
            let q = Quarantined { src, loc: format!("metadata data row {}", msrc + 1), id: id.clone(), reason: Reason::MissingImage, detail: format!("not found in {}", tar_path.display()) };
            src += 1;
            c.state.tally.input += 1;
            match c.policy(Reason::MissingImage) {
                Policy::Fail => return Err(PrepareError::Failed { loc: q.loc, id: q.id, reason: q.reason, detail: q.detail }),
                _ => c.quarantine(q),
            }
        }
        progress.finish();
    } else if let Some(mpath) = &metadata {
        let mut reader = MetaReader::open(mpath, def)?;
        columns_used = reader.cols.described.clone();
        let progress = Progress::new(&format!("prepare {}", def.name), def.expected_rows.unwrap_or(0) as u64);
        let root = images.first().cloned();
        // Batch n+1 is validated on the pool while batch n is committed (shard writes and
        // hashing on the committing thread), so the two halves overlap.
        let mut ready: Option<Vec<Result<Outcome, PrepareError>>> = None;
        loop {
            let b = reader.batch(opts.batch)?;
            if b.is_empty() && ready.is_none() {
                break;
            }
            let inputs: Vec<Input> = b
                .into_iter()
                .filter(|r| r.0 >= skip)
                .map(|(src, id, lat, lon, author, extra)| {
                    let rel = image_rel(&template, id_text(&id));
                    let image = if is_zip {
                        ImgSrc::Zip { name: rel }
                    } else if let Some(r) = &root {
                        ImgSrc::File { root: r.clone(), rel }
                    } else {
                        ImgSrc::None
                    };
                    Input { src, loc: format!("data row {}", src + 1), id, lat, lon, author, extra, image, exif_coords: false }
                })
                .collect();
            let previous = ready.take();
            let (next, committed) = rayon::join(
                || inputs.into_par_iter().map(|i| process(i, &ctx)).collect::<Vec<_>>(),
                || -> Result<u64, PrepareError> {
                    let Some(outcomes) = previous else { return Ok(0) };
                    let n = outcomes.len() as u64;
                    for o in outcomes {
                        c.commit(o?, |s| format!("data row {}", s + 1))?;
                    }
                    Ok(n)
                },
            );
            let n = committed?;
            if n > 0 {
                progress.set_message(format!("{} quarantined", c.state.tally.n_quarantined()));
                progress.inc(n);
            }
            ready = (!next.is_empty()).then_some(next);
        }
        progress.finish();
    } else {
        // An image folder whose photos carry EXIF GPS: ids are paths relative to the folder.
        let root = images[0].clone();
        let mut files = Vec::new();
        walk(&root, &root, &mut files).map_err(|source| PrepareError::Io { path: root.clone(), source })?;
        files.sort();
        let progress = Progress::new(&format!("prepare {}", def.name), files.len() as u64);
        for (bi, chunk) in files.chunks(opts.batch.max(1)).enumerate() {
            let base = (bi * opts.batch.max(1)) as u64;
            let inputs: Vec<Input> = chunk
                .iter()
                .enumerate()
                .filter(|(k, _)| base + *k as u64 >= skip)
                .map(|(k, rel)| {
                    let id = rel.to_str().map(str::to_string).ok_or_else(|| rel.to_string_lossy().into_owned());
                    let rel_s = rel.to_string_lossy().into_owned();
                    Input {
                        src: base + k as u64,
                        loc: format!("file {rel_s}"),
                        id,
                        lat: Num::Empty,
                        lon: Num::Empty,
                        author: None,
                        extra: Default::default(),
                        image: ImgSrc::File { root: root.clone(), rel: rel_s },
                        exif_coords: true,
                    }
                })
                .collect();
            let outcomes: Vec<Result<Outcome, PrepareError>> = inputs.into_par_iter().map(|i| process(i, &ctx)).collect();
            let locs: Vec<String> = chunk.iter().map(|p| format!("file {}", p.to_string_lossy())).collect();
            for o in outcomes {
                c.commit(o?, |s| locs.get((s - base) as usize).cloned().unwrap_or_else(|| format!("file #{s}")))?;
            }
            progress.set_message(format!("{} quarantined", c.state.tally.n_quarantined()));
            progress.inc(chunk.len() as u64);
        }
        progress.finish();
    }

    // Finish: merge quarantine parts, check the books, write the manifest last.
    let mut all_q = Vec::new();
    for i in 0..c.state.quarantine_parts {
        all_q.extend(read_quarantine(&out.join(format!("quarantine-part-{i:05}.parquet")))?);
    }
    all_q.append(&mut c.pending_q);
    all_q.sort_by_key(|q| q.src);
    write_quarantine(&out.join("quarantine.parquet"), &all_q)?;
    let t = c.state.tally.clone();
    if t.kept + t.n_quarantined() != t.input || all_q.len() != t.n_quarantined() {
        return Err(PrepareError::Count { kept: t.kept, quarantined: t.n_quarantined(), input: t.input });
    }
    let mut policies = BTreeMap::new();
    for r in Reason::ALL {
        policies.insert(r.name(), opts.policies.get(&r).copied().unwrap_or(r.default_policy()));
    }
    let expected_sha = def.metadata.as_ref().and_then(|m| m.sha256.clone());
    let lat_swapped = t.quarantined.get(&Reason::LatOutOfRange.name()).copied().unwrap_or(0);
    let validation = serde_json::json!({
        "input_rows": t.input,
        "kept": t.kept,
        "quarantined": t.n_quarantined(),
        "quarantined_by_reason": t.quarantined,
        "kept_with_flags": t.flagged,
        "examples": t.examples,
        "policies": policies,
        "expected_rows": def.expected_rows,
        "expected_rows_match": def.expected_rows.map(|e| e == t.input),
        "metadata": metadata.as_ref().map(|p| serde_json::json!({
            "path": p.display().to_string(),
            "sha256": meta_sha,
            "expected_sha256": expected_sha,
            "sha256_matches": expected_sha.as_ref().map(|e| Some(e) == meta_sha.as_ref()),
            "matches_variant": variant_match.as_ref().map(|(v, _)| v),
            "columns": columns_used,
        })),
        "images": {
            "sources": images.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "kind": if is_tar { "tar" } else if is_zip { "zip" } else if images.is_empty() { "none" } else { "dir" },
            "store": store,
            "decode_check": opts.decode_check,
            "max_pixels": opts.max_pixels,
            "unlisted_images": t.unlisted_images,
        },
        "swapped_columns_suspected": lat_swapped > 0 && lat_swapped * 2 >= t.input,
        "resumed": resumed,
    });
    let image_root = (store == StoreMode::Reference && !images.is_empty())
        .then(|| std::fs::canonicalize(&images[0]).unwrap_or(images[0].clone()).display().to_string());
    let provenance = serde_json::json!({"definition": def.name, "provenance": def.provenance});
    let manifest = c.writer.finish_with(provenance, image_root, Some(validation))?;
    for i in 0..c.state.quarantine_parts {
        let _ = std::fs::remove_file(out.join(format!("quarantine-part-{i:05}.parquet")));
    }
    let _ = std::fs::remove_file(&state_path);
    Ok(Prepared { manifest, dir: out, resumed })
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(root, &p, out)?;
        } else {
            out.push(p.strip_prefix(root).map(Path::to_path_buf).unwrap_or(p));
        }
    }
    Ok(())
}
