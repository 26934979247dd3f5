//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod encoders;
pub mod llm_double;
pub mod real_photos;

use std::path::{Path, PathBuf};

/// The reasons a test may skip for; `make test`'s summary counts skipped tests by these.
pub const SKIP_SHARED: &str = "../shared";
pub const SKIP_GEOCLIP: &str = "the geoclip wheel (PyPI)";
pub const SKIP_GLIBC: &str = "glibc's allocator (Linux, gnu)";

/// Minor page faults while `f` runs: of this thread (`libc::RUSAGE_THREAD`) or of the whole
/// process (`libc::RUSAGE_SELF`, rayon's workers included).
#[cfg(target_os = "linux")]
pub fn minor_faults(who: libc::c_int, f: impl FnOnce()) -> i64 {
    let now = || {
        // SAFETY: getrusage writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(who, &mut u) }, 0);
        u.ru_minflt
    };
    let before = now();
    f();
    now() - before
}

/// Records that the running test skips: prints `SKIP: ...` (which cargo's harness hides unless
/// the test fails) and, when `GEORAG_SKIP_LOG` names a file (`make test` sets it), appends
/// `reason<TAB>test<TAB>message` to it, from which the Makefile prints a summary by reason.
pub fn skip(reason: &str, message: &str) {
    eprintln!("SKIP: {message}");
    if let Some(log) = std::env::var_os("GEORAG_SKIP_LOG").filter(|v| !v.is_empty()) {
        record_skip(Path::new(&log), reason, message);
    }
}

/// Appends one skip line to `log` (one `write` per line on an `O_APPEND` file, so test threads
/// running in parallel never interleave their lines). The test's name is the libtest thread's.
pub fn record_skip(log: &Path, reason: &str, message: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    // cargo names a test binary `<target>-<hash>`.
    let exe = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
    let crate_name = exe.rsplit_once('-').map_or(exe.as_str(), |(a, _)| a);
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!("{}\t{}::{}\t{}\n", clean(reason), crate_name, clean(test), clean(message));
    match std::fs::OpenOptions::new().create(true).append(true).open(log) {
        Ok(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        Err(e) => eprintln!("warning: cannot append to GEORAG_SKIP_LOG {}: {e}", log.display()),
    }
}

/// `../shared` beside the checkout, or `None` (with the reason printed and logged) when absent.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel);
    if p.exists() {
        Some(p)
    } else {
        skip(SKIP_SHARED, &format!("{} not found (../shared is absent on this machine)", p.display()));
        None
    }
}

/// The geoclip package's files, fetched once by `scripts/fetch-geoclip.sh` (`make test` runs it),
/// or `None` (with the reason printed) when they are absent.
pub fn geoclip_dir() -> Option<PathBuf> {
    let d = std::env::var_os("GEORAG_GEOCLIP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/georag/geoclip"));
    if d.join("geoclip/model/weights/location_encoder_weights.pth").is_file() {
        Some(d)
    } else {
        skip(SKIP_GEOCLIP, &format!("GeoCLIP weights not in {} (run scripts/fetch-geoclip.sh; needs PyPI)", d.display()));
        None
    }
}

/// The small synthetic world of the end-to-end tests (600 database photos, 120 queries, the
/// IM2GPS encoder, an `IVF8,Flat` index, the two retrieval baselines), cached under `dir/cache`,
/// written to `dir/<name>.yaml`; `extra` lines go before `methods:`.
pub fn tiny_world_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let cfg = format!(
        r#"
name: {name}
cache_dir: {cache}
database: {{kind: synthetic, split: database, n: 600, shard_rows: 256}}
queries: {{kind: synthetic, split: queries, n: 120, shard_rows: 256}}
encoder: {{kind: im2gps}}
index: {{factory: "IVF8,Flat", nprobe: 8, train_sample: 600}}
{extra}
methods:
  - kind: nearest
  - {{kind: knn_density, k: 8, bandwidth_km: 200}}
"#,
        cache = dir.join("cache").display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// A fresh temporary directory for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("georag-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Eval arguments with the defaults of the CLI.
pub fn eval_args(predictions: PathBuf, out: PathBuf) -> georag::eval::EvalArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct W {
        #[command(flatten)]
        a: georag::eval::EvalArgs,
    }
    let mut w = W::parse_from(["x", "--predictions", "p", "--out", "o"]);
    w.a.predictions = predictions;
    w.a.out = out;
    w.a
}
