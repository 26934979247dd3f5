//! The skip summary `make test` prints: `common::skip` lines (what a test that lacks `../shared`
//! or the geoclip wheel appends to `GEORAG_SKIP_LOG`) counted by `scripts/skip-summary.sh`.

mod common;

use std::process::Command;

fn summary(log: &std::path::Path) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/skip-summary.sh")).arg(log).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn summary_counts_skipped_tests_by_reason() {
    let dir = common::tmp("skip-summary");
    let log = dir.join("skips.log");
    assert_eq!(summary(&log).trim(), "skip summary: 0 tests skipped");

    // This test skips twice for one reason (two files absent): it counts once.
    common::record_skip(&log, common::SKIP_SHARED, "a.csv not found");
    common::record_skip(&log, common::SKIP_SHARED, "b.csv not found");
    // Two other tests, on their own threads as libtest runs them.
    for (name, reason) in [("other_shared_test", common::SKIP_SHARED), ("a_geoclip_test", common::SKIP_GEOCLIP)] {
        let log = log.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || common::record_skip(&log, reason, "weights\tnot\nfound"))
            .unwrap()
            .join()
            .unwrap();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().all(|l| l.split('\t').count() == 3), "tabs and newlines in a message are flattened: {text}");
    assert!(text.contains("skip_summary::summary_counts_skipped_tests_by_reason"), "{text}");

    let s = summary(&log);
    assert!(s.starts_with("skip summary: 3 tests skipped ("), "{s}");
    assert!(s.contains("2 for want of ../shared"), "{s}");
    assert!(s.contains("1 for want of the geoclip wheel (PyPI)"), "{s}");
    assert!(s.contains("skip_summary::other_shared_test"), "{s}");
    assert!(s.contains("skip_summary::a_geoclip_test"), "{s}");
}
