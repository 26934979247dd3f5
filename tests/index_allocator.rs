//! A build returns large frees to the kernel while it runs (`index::build::LargeFrees`, which
//! bounds a worker's peak memory) and serves large allocations from the heap again once it is
//! done, so that the searches that follow in the same process do not map and fault in their
//! buffers afresh on every batch. Observed through the page faults of a 1 MiB buffer allocated,
//! filled and freed 16 times on this thread (`getrusage(RUSAGE_THREAD)`): mapped each time, it
//! faults its pages in each time; served from the heap, only the first time. 1 MiB is above
//! the 128 KiB threshold a build sets and below a transparent huge page (2 MiB), so a kernel
//! with THP `always` cannot back the mapped buffer with a few huge-page faults. glibc only; this
//! binary holds the one test, because the allocator setting is the whole process's.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod common;

use georag::embed::Embeddings;
use georag::index::{self, IndexSpec, RecallSpec};
use georag::record::Status;

const BUF: usize = 1 << 20;

/// 16 rounds of a 1 MiB buffer allocated, written and freed.
fn rounds() -> i64 {
    common::minor_faults(libc::RUSAGE_THREAD, || {
        for i in 0..16u8 {
            let v = std::hint::black_box(vec![i | 1; BUF]);
            drop(v);
        }
    })
}

#[test]
fn a_build_leaves_large_allocations_served_from_the_heap() {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64;
    let one_round = BUF as i64 / page;
    let d = 16;
    let n = 2000;
    let dir = std::env::temp_dir().join(format!("georag-ix-alloc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let vectors: Vec<f32> = (0..n * d).map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5).collect();
    let emb = Embeddings {
        dim: d,
        ids: (0..n).map(|i| format!("db{i}")).collect(),
        lat: vec![0.0; n],
        lon: vec![0.0; n],
        status: vec![Status::Ok; n],
        errors: vec![None; n],
        vectors,
        dir: dir.join("store"),
    };
    let spec = IndexSpec { factory: "IVF8,Flat".into(), threads: Some(1), train_sample: n, recall: RecallSpec { queries: 20, k: 5, seed: 1 }, ..IndexSpec::default() };

    // What a build does while it runs: every round maps its buffer and faults it in again.
    georag::util::alloc::return_large_frees();
    let during = rounds();
    assert!(during >= 8 * one_round, "with large frees returned, 16 rounds faulted {during} pages, expected about 16 x {one_round}");

    let built = index::build_or_load(&spec, &emb, &dir.join("cache")).unwrap();
    assert!(!built.reused);
    let after = rounds();
    assert!(
        after <= 2 * one_round,
        "after a build, 16 rounds of a 1 MiB buffer faulted {after} pages ({one_round} a round): the build left large allocations mapped afresh each time"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
