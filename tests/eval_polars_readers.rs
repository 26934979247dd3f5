//! The polars readers and the polars id join of `georag eval`: what other people's files do to
//! them (multi-line quoted cells, blank lines, short rows, a bad cell far past any type
//! inference, ids that look like numbers, zstd Parquet), and duplicate / missing / unknown ids
//! named by file and row.

mod common;
use georag::eval::{IssueKind, run_eval};
use georag::record::Status;
use polars::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, s: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

fn statuses(o: &georag::eval::EvalOutcome) -> Vec<(&str, Status)> {
    o.records.iter().map(|r| (r.id.as_str(), r.status)).collect()
}

/// Two files joined by id: a prediction id twice, a ground-truth id twice, a ground-truth id
/// without prediction, a prediction id unknown to the ground truth (twice): every one named
/// with its file and line, the first row used.
#[test]
fn join_names_duplicate_missing_and_unknown_ids() {
    let dir = common::tmp("polars-join");
    let gt = write(&dir, "gt.csv", "IMG_ID,LAT,LON\na,10,10\nb,20,20\nc,30,30\nb,21,21\n");
    let pr = write(&dir, "pred.csv", "IMG_ID,PRED_LAT,PRED_LON\nb,20,20\nq,1,1\na,10,10\nb,25,25\nq,1,1\n");
    let mut a = common::eval_args(pr, dir.join("out"));
    a.ground_truth = Some(gt);
    let o = run_eval(&a).unwrap();
    assert_eq!(statuses(&o), vec![("a", Status::Ok), ("b", Status::Ok), ("c", Status::Missing)]);
    // b is scored with its first prediction (20, 20): an exact hit.
    assert_eq!(o.records[1].pred.unwrap().lat, 20.0);
    let named: Vec<String> = o.issues.0.iter().map(|i| i.to_string()).collect();
    assert_eq!(named.len(), 4, "{named:?}");
    assert!(named[0].contains("gt.csv, line 5: id `b`: duplicate of line 3"), "{named:?}");
    assert!(named[1].contains("pred.csv, line 3: id `q`: id not in the ground truth"), "{named:?}");
    assert!(named[2].contains("pred.csv, line 5: id `b`: duplicate of line 2 (DIFFERENT values)"), "{named:?}");
    assert!(named[3].contains("pred.csv, line 6: id `q`: id not in the ground truth"), "{named:?}");
    assert_eq!(o.issues.count(IssueKind::PredUnknownId), 2);
}

/// A quoted id spanning two lines, blank lines and a short row: the lines named are the file's.
#[test]
fn lines_are_the_files_lines_after_multiline_cells_and_blank_lines() {
    let dir = common::tmp("polars-lines");
    let s = "IMG_ID,LAT,LON,PRED_LAT,PRED_LON\r\n\"two\r\nlines\",1,1,1,1\r\n\r\nx,1,1,1,1\r\n\r\ny,95,0,1,1\r\nshort,1,1,1\r\n";
    let p = write(&dir, "p.csv", s);
    let o = run_eval(&common::eval_args(p, dir.join("out"))).unwrap();
    assert_eq!(
        statuses(&o),
        vec![("two\r\nlines", Status::Ok), ("x", Status::Ok), ("short", Status::Unparseable)],
        "{:?}",
        o.issues.summary(9)
    );
    let bad = o.issues.of(IssueKind::GtInvalid).map(|i| i.to_string()).collect::<Vec<_>>();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("p.csv, line 7: id `y`"), "{bad:?}");
}

/// Rows whose every cell read is empty (`,,,,,`, or text only in a column not read) are rows
/// without an id, named by line as the csv crate's reader named them; a blank line is not a row.
#[test]
fn rows_of_empty_cells_are_named_and_blank_lines_are_not() {
    let dir = common::tmp("polars-empty-rows");
    let s = "IMG_ID,LAT,LON,PRED_LAT,PRED_LON,NOTE\na,1,1,1,1,x\n,,,,,\n\n,,,,,caption only\nb,2,2,2,2,y\n";
    let p = write(&dir, "p.csv", s);
    let o = run_eval(&common::eval_args(p, dir.join("out"))).unwrap();
    assert_eq!(statuses(&o), vec![("a", Status::Ok), ("b", Status::Ok)]);
    let named: Vec<String> = o.issues.of(IssueKind::GtEmptyId).map(|i| i.to_string()).collect();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(named[0].contains("p.csv, line 3: id ``") && named[0].contains("empty"), "{named:?}");
    assert!(named[1].contains("p.csv, line 5: id ``"), "{named:?}");
    // Two files: an empty row of the predictions is one without an id there.
    let gt = write(&dir, "gt.csv", "IMG_ID,LAT,LON\na,1,1\nb,2,2\n");
    let pr = write(&dir, "pr.csv", "IMG_ID,LAT,LON\na,1,1\n,,\nb,2,2\n");
    let mut args = common::eval_args(pr, dir.join("out2"));
    args.ground_truth = Some(gt);
    let o = run_eval(&args).unwrap();
    assert_eq!(statuses(&o), vec![("a", Status::Ok), ("b", Status::Ok)]);
    let unknown: Vec<String> = o.issues.of(IssueKind::PredUnknownId).map(|i| i.to_string()).collect();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(unknown[0].contains("pr.csv, line 3"), "{unknown:?}");
    assert_eq!(o.issues.count(IssueKind::GtEmptyId), 0, "{:?}", o.issues.summary(9));
}

/// A non-numeric cell after 10 000 clean rows (far past polars' type inference) is still that
/// row's unparseable prediction, not an error; ids that look like numbers keep their zeros.
#[test]
fn late_garbage_cell_is_a_status_and_numeric_ids_stay_text() {
    let dir = common::tmp("polars-late");
    let mut gt = String::from("IMG_ID,LAT,LON\n");
    let mut pr = String::from("IMG_ID,PRED_LAT,PRED_LON\n");
    for i in 0..10_001 {
        writeln!(gt, "{i:05},{},{}", (1 + i % 80) as f64, (i % 170) as f64).unwrap();
        let lat = if i == 10_000 { "n/a".to_string() } else { ((1 + i % 80) as f64).to_string() };
        writeln!(pr, "{i:05},{lat},{}", (i % 170) as f64).unwrap();
    }
    let mut a = common::eval_args(write(&dir, "pred.csv", &pr), dir.join("out"));
    a.ground_truth = Some(write(&dir, "gt.csv", &gt));
    let o = run_eval(&a).unwrap();
    assert_eq!(o.records.len(), 10_001);
    assert_eq!(o.records[0].id, "00000");
    assert_eq!(o.records[10_000].status, Status::Unparseable);
    assert_eq!(o.metrics.n_answered, 10_000);
    assert!(o.issues.0.is_empty(), "{:?}", o.issues.summary(3));
}

/// Parquet written by polars with its default codec (zstd, which georag's own data plane does not
/// write), integer ids against text ids, a repeated id named by Parquet row.
#[test]
fn zstd_parquet_from_polars_with_integer_ids() {
    let dir = common::tmp("polars-parquet");
    let gt = write(&dir, "gt.csv", "IMG_ID,LAT,LON\n1,10,10\n2,20,20\n3,30,30\n");
    let mut df = df!(
        "IMG_ID" => [1i64, 2, 2, 7],
        "PRED_LAT" => [Some(10.0f64), None, Some(21.0), Some(1.0)],
        "PRED_LON" => [10.0f64, 20.0, 21.0, 1.0],
    )
    .unwrap();
    let p = dir.join("pred.parquet");
    ParquetWriter::new(std::fs::File::create(&p).unwrap())
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .unwrap();
    let mut a = common::eval_args(p, dir.join("out"));
    a.ground_truth = Some(gt);
    let o = run_eval(&a).unwrap();
    assert_eq!(statuses(&o), vec![("1", Status::Ok), ("2", Status::Unparseable), ("3", Status::Missing)]);
    let dup = o.issues.of(IssueKind::PredDuplicate).next().unwrap().to_string();
    assert!(dup.contains("pred.parquet, row 3: id `2`: duplicate of row 2 (DIFFERENT values)"), "{dup}");
    let unk = o.issues.of(IssueKind::PredUnknownId).next().unwrap().to_string();
    assert!(unk.contains("pred.parquet, row 4: id `7`"), "{unk}");
}
