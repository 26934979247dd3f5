//! `georag align train` keeps its step buffers in the heap: each optimizer step allocates and
//! frees tens of megabytes of gradients and activations (about 65 MB at this test's shapes),
//! and when glibc hands them back to the kernel after every step, the next step maps and faults
//! them in afresh (on the 2-core build machine that cost a quarter of the training rate:
//! benches/README.md, "Geo-alignment training throughput"). Observed through the minor page
//! faults of the whole process (`getrusage(RUSAGE_SELF)`: rayon's workers allocate too) of ten
//! steady-state steps: two trainings from scratch that differ only in their step count (2 and
//! 12 steps, both stopped by `max_steps` inside the first epoch) do the same set-up, first
//! evaluation and checkpoint, so their difference is ten steps. glibc only.
//!
//! The test runs on the main thread, as `georag align train` does (this binary has no libtest
//! harness: `harness = false` in Cargo.toml), and is the binary's only one, because the
//! allocator setting is the whole process's. A thread other than the main one allocates from a
//! glibc arena of its own, made of 64 MiB sub-heaps, and inside libtest's worker thread the
//! same training faulted about 5 100 pages a step with the fix and without it (not traced; most
//! likely glibc unmapping a sub-heap once it lies wholly free, which the trim threshold does
//! not govern). On the main thread: 15 904 a step
//! without the fix (`align::train` not calling `util::alloc::serve_large_from_heap`), none with
//! it (the 12-step run faulted fewer pages than the 2-step one).

mod common;

use georag::align::AlignSpec;
use georag::align::train::{self, TrainData, TrainOptions};
use georag::record::LatLon;
use georag::util::rng::Rng;

fn main() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        common::skip(common::SKIP_GLIBC, "align_allocator counts what glibc's allocator does");
        return;
    }
    // SAFETY: no other thread runs yet. The progress lines of three trainings say nothing here.
    unsafe { std::env::set_var("GEORAG_QUIET", "1") };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    training_steps_reuse_their_buffers();
    println!("test training_steps_reuse_their_buffers ... ok");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn training_steps_reuse_their_buffers() {
    let (batch, dim, holdout) = (256, 256, 64);
    let n = batch * 14 + holdout;
    let mut rng = Rng::new(5);
    let data = TrainData {
        image_dim: dim,
        image: (0..n * dim).map(|_| rng.normal() as f32 * 0.06).collect(),
        coords: (0..n).map(|_| LatLon { lat: rng.range(-60.0, 70.0), lon: rng.range(-180.0, 180.0) }).collect(),
        text: None,
        fingerprint: format!("allocator-test/{n}/{dim}"),
    };
    // G3's location tower and heads (1024-wide capsules, 768-d shared space), smaller inputs.
    let spec: AlignSpec = serde_yaml::from_str(&format!("{{kind: g3, train: {{batch_size: {batch}, epochs: 1, holdout: {holdout}, seed: 1}}}}")).unwrap();
    let dir = std::env::temp_dir().join(format!("georag-align-alloc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |name: &str, steps: usize| {
        let opts = TrainOptions { out: dir.join(name), max_steps: Some(steps), dtype: None };
        common::minor_faults(libc::RUSAGE_SELF, || {
            let r = train::train(&spec, &data, &opts).unwrap();
            assert!(r.interrupted && r.curve.steps.len() == steps, "{name}: {} steps, interrupted {}", r.curve.steps.len(), r.interrupted);
        })
    };
    run("warm-up", 2);
    let short = run("short", 2);
    let long = run("long", 12);
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64;
    let per_step = (long - short) / 10;
    // A quarter of one 1024 x 1024 f32 weight gradient (4 MiB); a step frees dozens of them.
    let bound = (1 << 20) / page;
    assert!(
        per_step <= bound,
        "ten training steps faulted {} pages ({per_step} a step, bound {bound}; the 2-step run {short}, the 12-step run {long}): the steps map their buffers afresh",
        long - short
    );
    let _ = std::fs::remove_dir_all(&dir);
}
