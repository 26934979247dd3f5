//! Other people's files: missing rows, garbage cells, duplicate ids, CRLF, BOM, quotes,
//! separate ground truth, Parquet, positional headers.

mod common;
use georag::eval::{IssueKind, run_eval};
use georag::metrics::FailurePolicy;
use georag::record::Status;
use std::path::Path;

const GT: &str = "\u{feff}IMG_ID,LAT,LON\r\n\
a.jpg,48.8566,2.3522\r\n\
b.jpg,40.7128,-74.0060\r\n\
c.jpg,-33.8688,151.2093\r\n\
d.jpg,35.6762,139.6503\r\n\
e.jpg,51.5074,-0.1278\r\n\
f.jpg,0,0\r\n\
g.jpg,120.5,10.0\r\n\
b.jpg,1,1\r\n";

// a: exact hit; b: 11 km off; c: garbage; d: missing row; e: empty cell; f: out of range;
// "a.jpg" twice (different values); "zz.jpg" not in ground truth; quoted id with a comma.
const PRED: &str = "id,\"pred_lat\",pred_lon,note\r\n\
a.jpg,48.8566,2.3522,\"first, quoted\"\r\n\
b.jpg,40.8128,-74.0060,x\r\n\
c.jpg,n/a,151.2,x\r\n\
e.jpg,,-0.1278,x\r\n\
f.jpg,95.0,0,x\r\n\
a.jpg,0,0,dup\r\n\
zz.jpg,1,1,x\r\n";

fn write(dir: &Path, name: &str, s: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn statuses_and_counts_under_both_policies() {
    let dir = common::tmp("messy");
    let gt = write(&dir, "gt.csv", GT);
    let pr = write(&dir, "pred.csv", PRED);
    for (policy, n_scored, acc25) in [(FailurePolicy::Miss, 6, 2.0 / 6.0), (FailurePolicy::Drop, 2, 1.0)] {
        let mut a = common::eval_args(pr.clone(), dir.join(format!("out-{}", policy.name())));
        a.ground_truth = Some(gt.clone());
        a.failures = policy;
        let o = run_eval(&a).unwrap();
        let st: Vec<(&str, Status)> = o.records.iter().map(|r| (r.id.as_str(), r.status)).collect();
        assert_eq!(
            st,
            vec![
                ("a.jpg", Status::Ok),
                ("b.jpg", Status::Ok),
                ("c.jpg", Status::Unparseable),
                ("d.jpg", Status::Missing),
                ("e.jpg", Status::Unparseable),
                ("f.jpg", Status::OutOfRange),
            ]
        );
        let m = &o.metrics;
        assert_eq!((m.n_expected, m.n_answered, m.n_failed, m.n_scored), (6, 2, 4, n_scored));
        assert_eq!(m.failures_by_status["unparseable"], 2);
        assert_eq!(m.failures_by_status["missing"], 1);
        assert_eq!(m.failures_by_status["out_of_range"], 1);
        assert!((m.acc(25.0).unwrap() - 100.0 * acc25).abs() < 1e-9, "{m}");
        assert_eq!(o.issues.count(IssueKind::GtInvalid), 1); // g.jpg |lat| > 90
        assert_eq!(o.issues.count(IssueKind::GtDuplicate), 1); // b.jpg again
        assert_eq!(o.issues.count(IssueKind::GtNullIsland), 1); // f.jpg at (0, 0)
        assert_eq!(o.issues.count(IssueKind::PredDuplicate), 1);
        assert_eq!(o.issues.count(IssueKind::PredUnknownId), 1);
        let g = o.issues.of(IssueKind::GtInvalid).next().unwrap().to_string();
        assert!(g.contains("gt.csv, line 8: id `g.jpg`"), "{g}");
        let issues = std::fs::read_to_string(a.out.join("issues.csv")).unwrap();
        assert_eq!(issues.lines().count(), 6);
        let md = std::fs::read_to_string(a.out.join("table.md")).unwrap();
        assert!(md.contains(policy.describe()), "{md}");
        assert!(md.contains("prediction_duplicate_id: 1 row(s)"), "{md}");
    }
}

#[test]
fn parquet_predictions_score_like_csv() {
    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let dir = common::tmp("parquet");
    let gt = write(&dir, "gt.csv", GT);
    let ids: ArrayRef = Arc::new(StringArray::from(vec!["a.jpg", "b.jpg", "c.jpg", "e.jpg"]));
    let lat: ArrayRef = Arc::new(Float64Array::from(vec![Some(48.8566), Some(40.8128), None, Some(91.0)]));
    let lon: ArrayRef = Arc::new(StringArray::from(vec![Some("2.3522"), Some("-74.0060"), Some("151.2"), Some("junk")]));
    let batch = RecordBatch::try_from_iter([("IMG_ID", ids), ("PRED_LAT", lat), ("PRED_LON", lon)]).unwrap();
    let p = dir.join("pred.parquet");
    let f = std::fs::File::create(&p).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let mut a = common::eval_args(p, dir.join("out"));
    a.ground_truth = Some(gt);
    let o = run_eval(&a).unwrap();
    let st: Vec<Status> = o.records.iter().map(|r| r.status).collect();
    assert_eq!(
        st,
        vec![Status::Ok, Status::Ok, Status::Unparseable, Status::Missing, Status::Unparseable, Status::Missing]
    );
}

#[test]
fn missing_column_error_names_the_file_and_the_flag() {
    let dir = common::tmp("nocol");
    let pr = write(&dir, "pred.csv", "foo,bar\n1,2\n");
    let a = common::eval_args(pr, dir.join("out"));
    let e = run_eval(&a).unwrap_err().to_string();
    assert!(e.contains("pred.csv") && e.contains("no id column") && e.contains("--id-col"), "{e}");
}

/// YFCC4k from the G3 release (positional header: IMG_ID column 1, LON 12, LAT 13) against the
/// raw YFCC metadata (`name`, `lon` before `lat`) read as predictions: same images, same places.
#[test]
fn yfcc4k_positional_header_against_raw_metadata() {
    let (Some(gt), Some(raw)) =
        (common::shared("datasets/yfcc4k/yfcc4k_places365.csv"), common::shared("datasets/yfcc4k/yfcc4k_raw.csv"))
    else {
        return;
    };
    let dir = common::tmp("yfcc4k");
    let mut a = common::eval_args(raw, dir.join("out"));
    a.ground_truth = Some(gt);
    a.gt_id_col = Some("IMG_ID".into());
    let o = run_eval(&a).unwrap();
    assert_eq!(o.metrics.n_expected, 4536);
    assert!(o.columns.iter().any(|c| c.contains("lat = `LAT` (column 13, detected)")), "{:?}", o.columns);
    assert!(o.columns.iter().any(|c| c.contains("lon = `LON` (column 12, detected)")), "{:?}", o.columns);
    assert_eq!(o.metrics.acc(1.0), Some(100.0), "{}", o.metrics);
}

/// The original 3000-image IM2GPS3k list has 3 rows without coordinates: 2997 are evaluated and
/// the 3 are reported by line.
#[test]
fn im2gps3k_3000_list_reports_its_empty_rows() {
    let (Some(gt), Some(pred)) = (
        common::shared("datasets/im2gps3k/im2gps3k_3000.csv"),
        common::shared("reference/geoclip_rerun_im2gps3k_predictions.csv"),
    ) else {
        return;
    };
    let dir = common::tmp("im2gps3k3000");
    let mut a = common::eval_args(pred, dir.join("out"));
    a.ground_truth = Some(gt);
    let o = run_eval(&a).unwrap();
    assert_eq!(o.metrics.n_expected, 2997);
    assert_eq!(o.issues.count(IssueKind::GtInvalid), 3);
    assert_eq!((o.metrics.acc(1.0).unwrap() * 100.0).round() / 100.0, 13.05);
}

/// A column given by flag that the file lacks: the flag, the file's columns and the closest.
#[test]
fn unknown_column_error_lists_the_columns_and_the_closest() {
    let dir = common::tmp("unkcol");
    let pr = write(&dir, "pred.csv", "IMG_ID,LAT,LON,PRED_LAT,PRED_LON\na.jpg,1,2,1,2\n");
    let mut a = common::eval_args(pr, dir.join("out"));
    a.pred_lat_col = Some("PRED_LATT".into());
    let e = run_eval(&a).unwrap_err().to_string();
    assert!(e.contains("pred.csv: --pred-lat-col `PRED_LATT` is not a column of this file"), "{e}");
    assert!(e.contains("the file's 5 columns are `IMG_ID`, `LAT`, `LON`, `PRED_LAT`, `PRED_LON`; did you mean `PRED_LAT`"), "{e}");
    a.pred_lat_col = Some("zzz".into());
    let e = run_eval(&a).unwrap_err().to_string();
    assert!(e.contains("none is close to `zzz`; the nearest is `"), "{e}");
}
