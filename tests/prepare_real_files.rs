//! `georag prepare` on the real benchmark files in `../shared/datasets` (skipped with a printed
//! reason when absent, as on a user's machine).

mod common;

use georag::ingest::def::DatasetDef;
use georag::ingest::prepare::{self, PrepareOptions, Reason};
use georag::ingest::{Dataset, DatasetRow};
use std::path::PathBuf;

fn shared() -> Option<PathBuf> {
    common::shared("datasets")
}

fn out(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("georag-real-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(def: &str, variant: Option<&str>, metadata: PathBuf, images: Vec<PathBuf>) -> (georag::ingest::Manifest, Vec<DatasetRow>, Vec<prepare::Quarantined>) {
    let mut d = DatasetDef::load(def).unwrap();
    if let Some(v) = variant {
        d = d.with_variant(v).unwrap();
    }
    let o = out(&format!("{def}-{}", variant.unwrap_or("")));
    let p = prepare::prepare(&d, &PrepareOptions { metadata: Some(metadata), images, out: o.clone(), ..Default::default() }).unwrap();
    let ds = Dataset::open(&o).unwrap();
    let rows: Vec<DatasetRow> = (0..ds.manifest.shards.len()).flat_map(|i| ds.read_shard(i).unwrap()).collect();
    let q = prepare::read_quarantine(&o.join("quarantine.parquet")).unwrap();
    (p.manifest, rows, q)
}

#[test]
fn im2gps3k_crlf_2997_rows_checksum_matches() {
    let Some(s) = shared() else { return };
    let (m, rows, q) = run("im2gps3k", None, s.join("im2gps3k"), vec![]);
    assert_eq!((rows.len(), q.len()), (2997, 0));
    let v = m.validation.unwrap();
    assert_eq!(v["metadata"]["sha256_matches"], true);
    assert_eq!(v["expected_rows_match"], true);
    let r = rows.iter().find(|r| r.id == "1000269685_e60e9cdfb4_1125_78841376@N00.jpg").unwrap();
    assert_eq!((r.lat, r.lon, r.author.as_deref()), (32.325436, -64.764404, Some("78841376@N00")));
}

#[test]
fn im2gps3k_3000_list_quarantines_three_empty_rows() {
    let Some(s) = shared() else { return };
    let (_, rows, q) = run("im2gps3k", Some("3000"), s.join("im2gps3k"), vec![]);
    assert_eq!(rows.len() + q.len(), 3000);
    assert_eq!(q.len(), 3);
    assert!(q.iter().all(|x| x.reason == Reason::MissingCoordinates && x.loc.starts_with("data row")));
}

#[test]
fn yfcc4k_positional_and_raw_files_agree() {
    let Some(s) = shared() else { return };
    let (_, a, qa) = run("yfcc4k", None, s.join("yfcc4k"), vec![]);
    let (_, b, qb) = run("yfcc4k", Some("raw"), s.join("yfcc4k"), vec![]);
    assert_eq!((a.len(), qa.len(), b.len(), qb.len()), (4536, 0, 4536, 0));
    // LON/LAT from columns 12/13 of the positional file equal the raw file's lon/lat.
    let first = a.iter().find(|r| r.id == "10201275523.jpg").unwrap();
    assert_eq!((first.lat, first.lon), (43.649708, -79.365637));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.id, x.lat, x.lon, &x.author), (&y.id, y.lat, y.lon, &y.author));
    }
}

#[test]
fn yfcc26k_ids_with_slashes() {
    let Some(s) = shared() else { return };
    let (m, rows, q) = run("yfcc26k", None, s.join("yfcc26k"), vec![]);
    assert_eq!(rows.len() + q.len(), 25600);
    assert_eq!(m.validation.unwrap()["expected_rows_match"], true);
    assert!(rows.iter().any(|r| r.id == "45/77/3228511372.jpg"));
}

#[test]
fn sample50_photos_with_checksums() {
    let Some(s) = shared() else { return };
    let dir = s.join("im2gps3k_sample50");
    let (m, rows, q) = run("folder", None, dir.join("ground_truth.csv"), vec![dir.join("images")]);
    assert_eq!((rows.len(), q.len()), (50, 0), "{q:?}");
    // Our sha256 of the stored bytes equals the one published in the ground truth file.
    let text = std::fs::read_to_string(dir.join("ground_truth.csv")).unwrap();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let r = rows.iter().find(|r| r.id == f[0]).unwrap();
        assert_eq!(r.sha256, f[4], "{}", f[0]);
        assert_eq!(r.image.as_ref().unwrap().len().to_string(), f[3]);
    }
    assert!(m.shards.iter().all(|s| s.xxh3.as_ref().is_some_and(|h| h.len() == 32)), "every shard carries its xxh3-128");
}

/// The first-contact error of issue 14: the original 3000-row IM2GPS3k list given to the default
/// definition (which reads an `AUTHOR` column that list lacks). The error names the definition's
/// `author` role (not `--id-col`, which nobody gave), lists the file's columns with the closest,
/// and, since the file's sha256 is the `3000` variant's, says to add `--variant 3000`. The file is
/// read in place from ../shared.
#[test]
fn im2gps3k_3000_list_without_variant_says_to_add_it() {
    let Some(s) = shared() else { return };
    let metadata = s.join("im2gps3k/im2gps3k_3000.csv");
    let d = DatasetDef::load("im2gps3k").unwrap();
    let opts = PrepareOptions { metadata: Some(metadata.clone()), out: out("im2gps3k-novariant"), ..Default::default() };
    let e = prepare::prepare(&d, &opts).err().expect("the 3000 list has no AUTHOR column").to_string();
    assert!(e.contains("the `author` column `AUTHOR` of dataset definition `im2gps3k` (metadata.columns.author) is not a column of this file"), "{e}");
    assert!(!e.contains("--id-col"), "{e}");
    assert!(e.contains("columns are `IMG_ID`") && e.contains("`LAT`") && e.contains("`LON`"), "{e}");
    assert!(e.contains("nearest is `") || e.contains("did you mean `"), "{e}");
    assert!(e.contains("`3000` variant of dataset `im2gps3k`") && e.contains("add `--variant 3000`"), "{e}");

    // Through the binary, as a user meets it.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_georag"))
        .args(["prepare", "im2gps3k", "--metadata"])
        .arg(&metadata)
        .arg("--out")
        .arg(out("im2gps3k-novariant-cli"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("is not a column").count(), 1, "said once: {err}");
    assert!(err.contains("add `--variant 3000`") && err.contains("`author` column `AUTHOR`") && !err.contains("--id-col"), "{err}");
}
