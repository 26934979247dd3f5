//! `georag prepare` on generated fixtures for every bad-input class: each lands in quarantine
//! with its reason (or is kept and flagged, per the default policy), the good rows all arrive,
//! and `kept + quarantined = input rows`. Also: EXIF GPS folders, tar and zip sources, resume
//! after an interruption, leakage, verify.

use georag::ingest::def::DatasetDef;
use georag::ingest::prepare::{self, Policy, PrepareOptions, Reason};
use georag::ingest::{Dataset, DatasetRow, leakage, verify};
use image::{ImageEncoder, codecs::png::PngEncoder};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("georag-prep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small RGB JPEG, optionally with an APP1 EXIF segment.
fn jpeg(seed: u8, exif: Option<Vec<u8>>) -> Vec<u8> {
    let px: Vec<u8> = (0..32 * 24 * 3).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
    let mut out = Vec::new();
    let mut e = jpeg_encoder::Encoder::new(&mut out, 90);
    if let Some(x) = exif {
        e.add_app_segment(1, x).unwrap();
    }
    e.encode(&px, 32, 24, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

fn cmyk_jpeg() -> Vec<u8> {
    let px: Vec<u8> = (0..16 * 16 * 4).map(|i| (i * 7) as u8).collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90).encode(&px, 16, 16, jpeg_encoder::ColorType::CmykAsYcck).unwrap();
    out
}

fn png16() -> Vec<u8> {
    let px: Vec<u8> = (0..8 * 8 * 6).map(|i| i as u8).collect();
    let mut out = Vec::new();
    PngEncoder::new(&mut out).write_image(&px, 8, 8, image::ExtendedColorType::Rgb16).unwrap();
    out
}

fn gray_png() -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out).write_image(&[7u8; 64], 8, 8, image::ExtendedColorType::L8).unwrap();
    out
}

/// A PNG whose header claims 100 000 x 100 000 pixels.
fn bomb_png() -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out).write_image(&[0u8; 3], 1, 1, image::ExtendedColorType::Rgb8).unwrap();
    out[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    out[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    out
}

/// A two-frame GIF (animated).
fn animated_gif() -> Vec<u8> {
    use image::codecs::gif::GifEncoder;
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        for v in [10u8, 200] {
            let f = image::Frame::new(image::RgbaImage::from_pixel(4, 4, image::Rgba([v, v, v, 255])));
            enc.encode_frame(f).unwrap();
        }
    }
    out
}

/// A little-endian TIFF block for an APP1 segment: orientation, and GPS when given
/// (degrees as whole-number rationals with minutes/seconds).
fn exif_block(orientation: u16, gps: Option<((u32, u32, u32), u8, (u32, u32, u32), u8)>) -> Vec<u8> {
    let mut t: Vec<u8> = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
    let base = 6; // TIFF offsets are relative to "II"
    let n0: u16 = if gps.is_some() { 2 } else { 1 };
    t.extend(n0.to_le_bytes());
    t.extend(0x0112u16.to_le_bytes());
    t.extend(3u16.to_le_bytes());
    t.extend(1u32.to_le_bytes());
    t.extend((orientation as u32).to_le_bytes());
    let gps_ifd_at = 8 + 2 + 12 * n0 as u32 + 4;
    if gps.is_some() {
        t.extend(0x8825u16.to_le_bytes());
        t.extend(4u16.to_le_bytes());
        t.extend(1u32.to_le_bytes());
        t.extend(gps_ifd_at.to_le_bytes());
    }
    t.extend(0u32.to_le_bytes());
    if let Some((lat, lat_ref, lon, lon_ref)) = gps {
        assert_eq!(t.len() - base, gps_ifd_at as usize);
        let data_at = gps_ifd_at + 2 + 12 * 4 + 4;
        t.extend(4u16.to_le_bytes());
        let ascii = |t: &mut Vec<u8>, tag: u16, c: u8| {
            t.extend(tag.to_le_bytes());
            t.extend(2u16.to_le_bytes());
            t.extend(2u32.to_le_bytes());
            t.extend([c, 0, 0, 0]);
        };
        let rational = |t: &mut Vec<u8>, tag: u16, off: u32| {
            t.extend(tag.to_le_bytes());
            t.extend(5u16.to_le_bytes());
            t.extend(3u32.to_le_bytes());
            t.extend(off.to_le_bytes());
        };
        ascii(&mut t, 1, lat_ref);
        rational(&mut t, 2, data_at);
        ascii(&mut t, 3, lon_ref);
        rational(&mut t, 4, data_at + 24);
        t.extend(0u32.to_le_bytes());
        for (d, m, s) in [lat, lon] {
            for v in [d, m, s] {
                t.extend(v.to_le_bytes());
                t.extend(1u32.to_le_bytes());
            }
        }
    }
    t
}

fn def(name: &str) -> DatasetDef {
    DatasetDef::parse(&format!("name: {name}\nprovenance: test fixtures\nmetadata: {{file: meta.csv, columns: {{id: IMG_ID, lat: LAT, lon: LON, author: AUTHOR}}}}\n"), "test").unwrap()
}

fn all_rows(d: &Dataset) -> Vec<DatasetRow> {
    (0..d.manifest.shards.len()).flat_map(|i| d.read_shard(i).unwrap()).collect()
}

struct Fixture {
    dir: PathBuf,
    images: PathBuf,
    csv: PathBuf,
    /// id -> expected reason (None = kept unflagged).
    expect: Vec<(String, Option<Reason>)>,
    n_good: usize,
}

fn fixture(name: &str) -> Fixture {
    let dir = tmp(name);
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    let mut csv = Vec::<u8>::new();
    csv.extend(b"IMG_ID,AUTHOR,LAT,LON\n");
    let mut expect = Vec::new();
    let mut n_good = 0;
    let mut add = |id: &[u8], lat: &str, lon: &str, bytes: Option<Vec<u8>>, reason: Option<Reason>| {
        if let (Some(b), Ok(s)) = (bytes, std::str::from_utf8(id)) {
            if !s.starts_with("../") {
                std::fs::write(images.join(s), b).unwrap();
            }
        }
        csv.extend(id);
        csv.extend(format!(",someone,{lat},{lon}\n").as_bytes());
        expect.push((String::from_utf8_lossy(id).into_owned(), reason));
    };
    for i in 0..12u8 {
        add(format!("good{i}.jpg").as_bytes(), &format!("{}", 10.0 + i as f64), "20.5", Some(jpeg(i + 1, None)), None);
        n_good += 1;
    }
    add(b"sub/nested.jpg", "1.5", "2.5", Some(jpeg(99, None)), None);
    n_good += 1;
    let t = jpeg(50, None);
    add(b"truncated.jpg", "1", "1", Some(t[..t.len() * 2 / 3].to_vec()), Some(Reason::TruncatedImage));
    add(b"zero.jpg", "1", "1", Some(Vec::new()), Some(Reason::EmptyImage));
    add(b"corrupt.jpg", "1", "1", Some(b"\xFF\xD8\xFF\xE0garbage that is no jpeg".to_vec()), Some(Reason::CorruptImage));
    add(b"bitmap.bmp", "1", "1", Some(b"BM\x00\x00not supported".to_vec()), Some(Reason::UnsupportedFormat));
    add(b"bomb.png", "1", "1", Some(bomb_png()), Some(Reason::OversizedImage));
    add(b"missing.jpg", "1", "1", None, Some(Reason::MissingImage));
    add(b"../escape.jpg", "1", "1", None, Some(Reason::PathEscapesRoot));
    add(b"bad\xFFname.jpg", "1", "1", None, Some(Reason::InvalidUtf8));
    add(b"swapped.jpg", "120.5", "45.1", Some(jpeg(60, None)), Some(Reason::LatOutOfRange));
    add(b"lonbad.jpg", "45.1", "190", Some(jpeg(61, None)), Some(Reason::LonOutOfRange));
    add(b"nullisland.jpg", "0", "0", Some(jpeg(62, None)), Some(Reason::NullIsland));
    add(b"empty_coords.jpg", "", "3", Some(jpeg(63, None)), Some(Reason::MissingCoordinates));
    add(b"garbage_coords.jpg", "north", "3", Some(jpeg(64, None)), Some(Reason::UnparseableCoordinates));
    add(b"nan_coords.jpg", "NaN", "3", Some(jpeg(65, None)), Some(Reason::UnparseableCoordinates));
    add(b"good0.jpg", "5", "5", None, Some(Reason::DuplicateId));
    // Kept with a flag under the default policies.
    add(b"cmyk.jpg", "3", "3", Some(cmyk_jpeg()), Some(Reason::CmykImage));
    add(b"png16.png", "3", "4", Some(png16()), Some(Reason::HighBitDepth));
    add(b"gray.png", "3", "5", Some(gray_png()), Some(Reason::GrayscaleImage));
    add(b"anim.gif", "3", "6", Some(animated_gif()), Some(Reason::AnimatedImage));
    add(b"rotated.jpg", "3", "7", Some(jpeg(70, Some(exif_block(6, None)))), Some(Reason::ExifRotated));
    add(b"copy_of_good1.jpg", "3", "8", Some(jpeg(2, None)), Some(Reason::DuplicateImage));
    let csv_path = dir.join("meta.csv");
    std::fs::write(&csv_path, csv).unwrap();
    Fixture { dir, images, csv: csv_path, expect, n_good }
}

fn is_kept_flag(r: Reason) -> bool {
    r.default_policy() == Policy::Keep
}

/// Every bad-input class lands where its default policy says, with its reason; nothing is lost.
#[test]
fn every_bad_input_class_is_quarantined_or_flagged() {
    let f = fixture("classes");
    let out = f.dir.join("out");
    let opts = PrepareOptions { metadata: Some(f.csv.clone()), images: vec![f.images.clone()], out: out.clone(), shard_rows: 8, batch: 5, ..Default::default() };
    let p = prepare::prepare(&def("fixtures"), &opts).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let rows = all_rows(&ds);
    let q = prepare::read_quarantine(&out.join("quarantine.parquet")).unwrap();
    assert_eq!(rows.len() + q.len(), f.expect.len(), "kept + quarantined = input rows");
    let v = p.manifest.validation.unwrap();
    assert_eq!(v["input_rows"], f.expect.len());
    assert_eq!(v["kept"].as_u64().unwrap() as usize, rows.len());
    for (id, reason) in &f.expect {
        match reason {
            None => assert!(rows.iter().any(|r| &r.id == id), "good row {id} missing"),
            Some(r) if is_kept_flag(*r) => {
                let row = rows.iter().find(|x| &x.id == id).unwrap_or_else(|| panic!("{id} should be kept"));
                assert!(row.meta.as_ref().unwrap().contains(&r.name()), "{id}: {:?}", row.meta);
                assert!(v["kept_with_flags"][r.name()].as_u64().unwrap() >= 1);
            }
            Some(r) => {
                let hit = q.iter().find(|x| x.reason == *r && (x.id == *id || (id.contains('\u{FFFD}') && x.id.contains('\u{FFFD}'))));
                assert!(hit.is_some(), "{id}: expected quarantine reason {r:?}, quarantine: {q:?}");
            }
        }
    }
    let good: Vec<&DatasetRow> = rows.iter().filter(|r| r.id.starts_with("good") || r.id == "sub/nested.jpg").collect();
    assert_eq!(good.len(), f.n_good);
    // Inline storage: bytes and their hash are in the shard; coordinates as written.
    let g3 = rows.iter().find(|r| r.id == "good3.jpg").unwrap();
    assert_eq!(g3.sha256, georag::util::fingerprint::sha256_hex(g3.image.as_ref().unwrap()));
    assert_eq!((g3.lat, g3.lon), (13.0, 20.5));
    // The swapped row is reported as such and never fixed.
    let sw = q.iter().find(|x| x.id == "swapped.jpg").unwrap();
    assert!(sw.detail.contains("swapped"), "{}", sw.detail);
    assert!(!rows.iter().any(|r| r.id == "swapped.jpg"));
    // The quarantine names the row.
    assert!(q.iter().any(|x| x.loc.starts_with("data row ")));
    assert!(verify::verify(&out).unwrap().ok());
}

/// Policies: `keep` lets a normally quarantined row through, `fail` stops with the row named,
/// `skip` quarantines a normally kept one.
#[test]
fn policies_change_the_outcome() {
    let f = fixture("policies");
    let base = PrepareOptions { metadata: Some(f.csv.clone()), images: vec![f.images.clone()], shard_rows: 8, ..Default::default() };
    let mut pol = BTreeMap::new();
    pol.insert(Reason::NullIsland, Policy::Keep);
    pol.insert(Reason::CmykImage, Policy::Skip);
    let out = f.dir.join("keep");
    prepare::prepare(&def("p"), &PrepareOptions { out: out.clone(), policies: pol, ..base.clone() }).unwrap();
    let rows = all_rows(&Dataset::open(&out).unwrap());
    assert!(rows.iter().any(|r| r.id == "nullisland.jpg"));
    assert!(!rows.iter().any(|r| r.id == "cmyk.jpg"));
    let mut pol = BTreeMap::new();
    pol.insert(Reason::TruncatedImage, Policy::Fail);
    let e = prepare::prepare(&def("p"), &PrepareOptions { out: f.dir.join("fail"), policies: pol, ..base }).err().unwrap().to_string();
    assert!(e.contains("truncated.jpg") && e.contains("data row"), "{e}");
}

/// Reference storage keeps paths plus sha256, and the bytes read back through the image root.
#[test]
fn reference_storage_resolves_through_the_image_root() {
    let f = fixture("reference");
    let out = f.dir.join("out");
    let opts = PrepareOptions {
        metadata: Some(f.csv.clone()),
        images: vec![f.images.clone()],
        out: out.clone(),
        store: Some(georag::ingest::def::StoreMode::Reference),
        ..Default::default()
    };
    prepare::prepare(&def("r"), &opts).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let row = all_rows(&ds).into_iter().find(|r| r.id == "sub/nested.jpg").unwrap();
    assert!(row.image.is_none() && row.image_path.as_deref() == Some("sub/nested.jpg"));
    let bytes = ds.image_bytes(&row).unwrap();
    assert_eq!(georag::util::fingerprint::sha256_hex(&bytes), row.sha256);
}

/// An interrupted prepare (here: stopped by a `fail` policy on a missing late image) resumes
/// from its last complete shard once the cause is fixed, and ends identical to a clean run.
#[test]
fn interrupted_prepare_resumes_from_the_last_shard() {
    let dir = tmp("resume");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut csv = String::from("IMG_ID,AUTHOR,LAT,LON\n");
    for i in 0..40 {
        let id = format!("p{i:02}.jpg");
        if i != 33 {
            std::fs::write(images.join(&id), jpeg(i as u8 + 1, None)).unwrap();
        }
        csv.push_str(&format!("{id},a,{}.25,{}.5\n", i % 80, i));
    }
    let meta = dir.join("meta.csv");
    std::fs::write(&meta, csv).unwrap();
    let mut pol = BTreeMap::new();
    pol.insert(Reason::MissingImage, Policy::Fail);
    let opts = PrepareOptions { metadata: Some(meta.clone()), images: vec![images.clone()], out: dir.join("out"), shard_rows: 8, batch: 4, policies: pol, ..Default::default() };
    let e = prepare::prepare(&def("r"), &opts).err().unwrap().to_string();
    assert!(e.contains("p33.jpg"), "{e}");
    assert!(dir.join("out/prepare.state.json").exists());
    assert!(dir.join("out/shard-00003.parquet").exists() && !dir.join("out/manifest.json").exists());
    let t_first = std::fs::metadata(dir.join("out/shard-00000.parquet")).unwrap().modified().unwrap();
    std::fs::write(images.join("p33.jpg"), jpeg(34, None)).unwrap();
    let resumed = prepare::prepare(&def("r"), &opts).unwrap();
    assert!(resumed.resumed);
    assert_eq!(std::fs::metadata(dir.join("out/shard-00000.parquet")).unwrap().modified().unwrap(), t_first, "shard 0 rewritten");
    let clean = prepare::prepare(&def("r"), &PrepareOptions { out: dir.join("clean"), ..opts }).unwrap();
    assert!(!clean.resumed);
    assert_eq!(resumed.manifest.fingerprint, clean.manifest.fingerprint);
    assert_eq!(resumed.manifest.n_rows, 40);
    assert!(!dir.join("out/prepare.state.json").exists());
}

/// A folder of photos with EXIF GPS (degrees/minutes/seconds, hemisphere references) and no
/// metadata file; photos without GPS are quarantined.
#[test]
fn exif_gps_folder() {
    let dir = tmp("exif");
    let images = dir.join("photos");
    std::fs::create_dir_all(&images).unwrap();
    // 33°51'54" S, 151°12'36" E (Sydney) and 40°42'46" N, 74°0'22" W (New York).
    std::fs::write(images.join("sydney.jpg"), jpeg(1, Some(exif_block(1, Some(((33, 51, 54), b'S', (151, 12, 36), b'E')))))).unwrap();
    std::fs::write(images.join("ny.jpg"), jpeg(2, Some(exif_block(1, Some(((40, 42, 46), b'N', (74, 0, 22), b'W')))))).unwrap();
    std::fs::write(images.join("nogps.jpg"), jpeg(3, None)).unwrap();
    // A file name that is not valid UTF-8 (possible on Linux file systems).
    use std::os::unix::ffi::OsStrExt;
    let bad_name = std::ffi::OsStr::from_bytes(b"bad\xFFname.jpg");
    std::fs::write(images.join(bad_name), jpeg(4, Some(exif_block(1, Some(((1, 0, 0), b'N', (1, 0, 0), b'E')))))).unwrap();
    let folder = DatasetDef::load("folder").unwrap();
    let out = dir.join("out");
    let p = prepare::prepare(&folder, &PrepareOptions { images: vec![images], out: out.clone(), ..Default::default() }).unwrap();
    let rows = all_rows(&Dataset::open(&out).unwrap());
    let syd = rows.iter().find(|r| r.id == "sydney.jpg").unwrap();
    assert!((syd.lat - -(33.0 + 51.0 / 60.0 + 54.0 / 3600.0)).abs() < 1e-9 && (syd.lon - (151.0 + 12.0 / 60.0 + 36.0 / 3600.0)).abs() < 1e-9, "{syd:?}");
    let ny = rows.iter().find(|r| r.id == "ny.jpg").unwrap();
    assert!(ny.lat > 40.7 && ny.lon < -74.0, "{ny:?}");
    let v = p.manifest.validation.unwrap();
    assert_eq!(v["quarantined_by_reason"]["missing_coordinates"], 1);
    assert_eq!(v["quarantined_by_reason"]["invalid_utf8"], 1);
    assert_eq!(v["input_rows"], 4);
}

/// Tar (streamed) and zip sources give the same rows as the directory they were made from.
#[test]
fn tar_and_zip_sources_match_the_directory() {
    let f = fixture("archives");
    let good: Vec<String> = f.expect.iter().filter(|(_, r)| r.is_none()).map(|(id, _)| id.clone()).collect();
    let csv = f.dir.join("good.csv");
    let mut text = String::from("IMG_ID,AUTHOR,LAT,LON\n");
    for (i, id) in good.iter().enumerate() {
        text.push_str(&format!("{id},a,{},{}\n", i as f64 + 0.5, i as f64 * 2.0));
    }
    text.push_str("not_in_archive.jpg,a,1,1\n");
    std::fs::write(&csv, text).unwrap();
    // tar
    let tar_path = f.dir.join("images.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        for id in good.iter().rev() {
            b.append_path_with_name(f.images.join(id), format!("./{id}")).unwrap();
        }
        b.finish().unwrap();
    }
    // zip
    let zip_path = f.dir.join("images.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        for id in &good {
            z.start_file(format!("train/{id}"), zip::write::SimpleFileOptions::default()).unwrap();
            z.write_all(&std::fs::read(f.images.join(id)).unwrap()).unwrap();
        }
        z.finish().unwrap();
    }
    let run = |images: PathBuf, out: &str| {
        let o = f.dir.join(out);
        prepare::prepare(&def("a"), &PrepareOptions { metadata: Some(csv.clone()), images: vec![images], out: o.clone(), ..Default::default() }).unwrap();
        let mut rows = all_rows(&Dataset::open(&o).unwrap());
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let q = prepare::read_quarantine(&o.join("quarantine.parquet")).unwrap();
        (rows.into_iter().map(|r| (r.id, r.lat, r.lon, r.sha256)).collect::<Vec<_>>(), q)
    };
    let (d, qd) = run(f.images.clone(), "dir");
    let (t, qt) = run(tar_path, "tar");
    let (z, qz) = run(zip_path, "zip");
    assert_eq!(d.len(), good.len());
    assert_eq!(d, t);
    assert_eq!(d, z);
    for q in [qd, qt, qz] {
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].id.as_str(), q[0].reason), ("not_in_archive.jpg", Reason::MissingImage));
    }
}

/// Leakage: the same id, the same image bytes, and the same author nearby are all found.
#[test]
fn leakage_between_queries_and_database() {
    let dir = tmp("leak");
    let images = dir.join("img");
    std::fs::create_dir_all(&images).unwrap();
    for (n, seed) in [("a.jpg", 1u8), ("b.jpg", 2), ("c.jpg", 3), ("q1.jpg", 1), ("q2.jpg", 9), ("q3.jpg", 10)] {
        std::fs::write(images.join(n), jpeg(seed, None)).unwrap();
    }
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let db_csv = write("db.csv", "IMG_ID,AUTHOR,LAT,LON\na.jpg,alice,10,10\nb.jpg,bob,48.8566,2.3522\nc.jpg,carol,-30,20\nq3.jpg,dave,5,5\n");
    let q_csv = write("q.csv", "IMG_ID,AUTHOR,LAT,LON\nq1.jpg,zed,1,1\nq2.jpg,bob,48.8570,2.3530\nq3.jpg,erin,6,6\n");
    let db = dir.join("db");
    let q = dir.join("q");
    prepare::prepare(&def("db"), &PrepareOptions { metadata: Some(db_csv), images: vec![images.clone()], out: db.clone(), ..Default::default() }).unwrap();
    prepare::prepare(&def("q"), &PrepareOptions { metadata: Some(q_csv), images: vec![images], out: q.clone(), ..Default::default() }).unwrap();
    let (s, leaks) = leakage::check(&Dataset::open(&q).unwrap(), &Dataset::open(&db).unwrap(), 1.0, &q).unwrap();
    let has = |qid: &str, dbid: &str, kind: &str| leaks.iter().any(|l| l.query_id == qid && l.db_id == dbid && l.kind == kind);
    assert!(has("q1.jpg", "a.jpg", "same_image"));
    assert!(has("q2.jpg", "b.jpg", "same_author_nearby"));
    assert!(has("q3.jpg", "q3.jpg", "same_id"));
    // q3 shares its id and its bytes with the database row q3.jpg.
    assert!(has("q3.jpg", "q3.jpg", "same_image"));
    let affected: Vec<(&str, usize)> = s.queries_affected.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(affected, vec![("same_author_nearby", 1), ("same_id", 1), ("same_image", 2)]);
    assert!(std::fs::read_to_string(q.join("leakage.csv")).unwrap().lines().count() >= 4);
}

/// `verify` finds a modified shard.
#[test]
fn verify_reports_drift() {
    let f = fixture("verify");
    let out = f.dir.join("out");
    prepare::prepare(&def("v"), &PrepareOptions { metadata: Some(f.csv.clone()), images: vec![f.images.clone()], out: out.clone(), shard_rows: 8, ..Default::default() }).unwrap();
    assert!(verify::verify(&out).unwrap().ok());
    // A manifest from before the xxh3 checksum (sha256 of each shard file) still verifies, and a
    // wrong sha256 is drift.
    let mpath = out.join("manifest.json");
    let original = std::fs::read_to_string(&mpath).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    for s in m["shards"].as_array_mut().unwrap() {
        let bytes = std::fs::read(out.join(s["file"].as_str().unwrap())).unwrap();
        s.as_object_mut().unwrap().remove("xxh3").expect("new shards carry xxh3");
        s["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)).into();
    }
    std::fs::write(&mpath, serde_json::to_string(&m).unwrap()).unwrap();
    assert!(verify::verify(&out).unwrap().ok(), "{:?}", verify::verify(&out).unwrap().drift);
    m["shards"][0]["sha256"] = "0".repeat(64).into();
    std::fs::write(&mpath, serde_json::to_string(&m).unwrap()).unwrap();
    let v = verify::verify(&out).unwrap();
    assert!(v.drift.iter().any(|d| d.contains("shard-00000.parquet: sha256")), "{:?}", v.drift);
    std::fs::write(&mpath, original).unwrap();
    let shard = out.join("shard-00001.parquet");
    let mut b = std::fs::read(&shard).unwrap();
    let n = b.len();
    b[n / 2] ^= 0xFF;
    std::fs::write(&shard, b).unwrap();
    let v = verify::verify(&out).unwrap();
    assert!(!v.ok() && v.drift.iter().any(|d| d.contains("shard-00001.parquet: xxh3")), "{:?}", v.drift);
}

/// An unknown definition name is an error naming the closest built-in.
#[test]
fn unknown_definition_names_the_closest() {
    let e = DatasetDef::load("yfcc4").unwrap_err().to_string();
    assert!(e.contains("yfcc4k"), "{e}");
}

/// A misspelled column in a definition: the error names the definition's role for it, lists the
/// file's columns and the closest one, for the coordinates (detected roles) and `author`/`extra`.
#[test]
fn definition_column_errors_name_the_role_and_the_closest_column() {
    let dir = tmp("def-columns");
    std::fs::write(dir.join("meta.csv"), "IMG_ID,LAT,LON,AUTHOR\na.jpg,1,2,u\n").unwrap();
    for (columns, role, given, closest) in [
        ("{id: IMG_ID, lat: LATT, lon: LON}", "lat", "LATT", "LAT"),
        ("{id: IMG_ID, lat: LAT, lon: LON, author: AUTHR}", "author", "AUTHR", "AUTHOR"),
        ("{id: IMG_ID, lat: LAT, lon: LON, extra: [IMG_IDD]}", "extra", "IMG_IDD", "IMG_ID"),
    ] {
        let d = DatasetDef::parse(&format!("name: t\nprovenance: test\nmetadata: {{file: meta.csv, columns: {columns}}}\n"), "test").unwrap();
        let opts = PrepareOptions { metadata: Some(dir.join("meta.csv")), out: dir.join(format!("out-{role}")), ..Default::default() };
        let e = prepare::prepare(&d, &opts).err().unwrap().to_string();
        assert!(e.contains(&format!("the `{role}` column `{given}` of dataset definition `t` (metadata.columns.{role}) is not a column")), "{e}");
        assert!(e.contains("the file's 4 columns are `IMG_ID`, `LAT`, `LON`, `AUTHOR`"), "{e}");
        assert!(e.contains(&format!("did you mean `{closest}`")), "{e}");
        assert!(!e.contains("--"), "no CLI flag was given: {e}");
    }
    // No id column to detect: the error lists the columns and names the key to set.
    std::fs::write(dir.join("noid.csv"), "photo,LAT,LON\na.jpg,1,2\n").unwrap();
    let d = DatasetDef::parse("name: t\nprovenance: test\n", "test").unwrap();
    let opts = PrepareOptions { metadata: Some(dir.join("noid.csv")), out: dir.join("out-noid"), ..Default::default() };
    let e = prepare::prepare(&d, &opts).err().unwrap().to_string();
    assert!(e.contains("no id column found among `photo`, `LAT`, `LON`; set `metadata.columns.id` in dataset definition `t`"), "{e}");
}

/// A metadata file that is byte-for-byte a variant of the definition (by the sha256 the
/// definition lists) but still fits the default columns: prepared, with a notice in the
/// manifest naming the variant; and an error that says `--variant` when the columns do not fit.
#[test]
fn variant_file_given_without_variant_is_named() {
    let dir = tmp("variant-sha");
    let small = "IMG_ID,LAT,LON,AUTHOR\na.jpg,1,2,u\nb.jpg,3,4,v\n";
    let bare = "IMG_ID,LAT,LON\na.jpg,1,2\n";
    std::fs::write(dir.join("small.csv"), small).unwrap();
    std::fs::write(dir.join("bare.csv"), bare).unwrap();
    let sha = |t: &str| georag::util::fingerprint::sha256_hex(t.as_bytes());
    let d = DatasetDef::parse(
        &format!(
            "name: t\nprovenance: test\nmetadata: {{file: full.csv, sha256: '{}', columns: {{id: IMG_ID, lat: LAT, lon: LON, author: AUTHOR}}}}\n\
             variants:\n  small: {{provenance: two rows, expected_rows: 2, metadata: {{file: small.csv, sha256: '{}'}}}}\n  \
             bare: {{provenance: no author, metadata: {{file: bare.csv, sha256: '{}', columns: {{id: IMG_ID, lat: LAT, lon: LON}}}}}}\n",
            "0".repeat(64),
            sha(small),
            sha(bare)
        ),
        "test",
    )
    .unwrap();
    let opts = PrepareOptions { metadata: Some(dir.join("small.csv")), images: vec![], out: dir.join("out-small"), decode_check: false, ..Default::default() };
    let p = prepare::prepare(&d, &opts).unwrap();
    let v = p.manifest.validation.unwrap();
    assert_eq!(v["metadata"]["matches_variant"], "small", "{v}");
    assert_eq!(v["metadata"]["sha256_matches"], false);

    let opts = PrepareOptions { metadata: Some(dir.join("bare.csv")), out: dir.join("out-bare"), ..Default::default() };
    let e = prepare::prepare(&d, &opts).err().unwrap().to_string();
    assert!(e.contains("the `author` column `AUTHOR`") && e.contains("this file is the `bare` variant of dataset `t`") && e.contains("add `--variant bare`"), "{e}");
    // With the variant applied nothing is suggested.
    let p = prepare::prepare(&d.clone().with_variant("bare").unwrap(), &PrepareOptions { out: dir.join("out-bare2"), ..opts }).unwrap();
    assert_eq!(p.manifest.validation.unwrap()["metadata"]["matches_variant"], serde_json::Value::Null);
}
