//! Where a run came from: georag's build (git commit, the versions of the crates and of FAISS
//! that decide results) and the machine it ran on (CPU model, cores, GPUs). Written into every
//! `run.json`; compared by `georag runs diff`.
//!
//! Invariant: nothing here fails a run. A fact that cannot be read (no git at build time, no
//! `/proc/cpuinfo`, no `nvidia-smi`) is `None` or empty and is shown as unknown.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The FAISS library that `faiss-sys` (the version in `Cargo.lock`, see [`BuildInfo::crates`])
/// builds from its bundled sources (its `CMakeLists.txt` says 1.12.0 for faiss-sys 0.7.0).
pub const FAISS_LIB_VERSION: &str = "1.12.0";
/// The faiss-sys release that bundles [`FAISS_LIB_VERSION`]; a unit test checks `Cargo.lock`.
pub const FAISS_SYS_VERSION: &str = "0.7.0";

/// How georag was built.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub georag_version: String,
    /// `git rev-parse HEAD` at build time, `-dirty` when tracked files differed; `None` outside git.
    pub git_commit: Option<String>,
    /// The FAISS library version linked in.
    pub faiss: String,
    /// The SIMD level its C++ was compiled at ([`crate::index::faiss_simd`]); empty in records
    /// written before it was recorded.
    #[serde(default)]
    pub faiss_simd: String,
    /// Versions from `Cargo.lock` of the crates that decide numbers.
    pub crates: BTreeMap<String, String>,
    pub debug_build: bool,
}

impl BuildInfo {
    pub fn current() -> Self {
        let crates = option_env!("GEORAG_DEP_VERSIONS")
            .unwrap_or("")
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BuildInfo {
            georag_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: option_env!("GEORAG_GIT_COMMIT").map(str::to_string),
            faiss: FAISS_LIB_VERSION.into(),
            faiss_simd: crate::index::faiss_simd().into(),
            crates,
            debug_build: cfg!(debug_assertions),
        }
    }
}

/// The machine a run ran on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpu_model: Option<String>,
    /// Logical cores available to the process.
    pub cores: usize,
    pub memory_gib: Option<f64>,
    pub os: Option<String>,
    /// `nvidia-smi --query-gpu=name,memory.total` lines; empty without a GPU or the tool.
    pub gpus: Vec<String>,
}

impl MachineInfo {
    pub fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string());
        let memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
            Some((kb / (1024.0 * 1024.0) * 10.0).round() / 10.0)
        });
        let os = std::fs::read_to_string("/etc/os-release").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
        });
        let gpus = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
            .unwrap_or_default();
        MachineInfo {
            cpu_model,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gib,
            os,
            gpus,
        }
    }
}

/// `t` as an RFC 3339 UTC timestamp with seconds (`2026-12-01T22:30:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Now, as [`rfc3339`].
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2024-02-29T12:34:56Z (a leap day) = 1709210096 s (date -u -d @1709210096).
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)), "2024-02-29T12:34:56Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn build_info_names_the_locked_faiss() {
        let b = BuildInfo::current();
        let lock = include_str!("../Cargo.lock");
        let locked = lock.split("[[package]]").find(|p| p.contains("name = \"faiss-sys\"")).expect("faiss-sys in Cargo.lock");
        assert!(locked.contains(&format!("version = \"{FAISS_SYS_VERSION}\"")), "faiss-sys changed: check FAISS_LIB_VERSION against its bundled CMakeLists.txt");
        assert_eq!(b.crates.get("faiss-sys").map(String::as_str), Some(FAISS_SYS_VERSION));
        assert!(b.crates.contains_key("faiss") && b.crates.contains_key("country-boundaries"), "{:?}", b.crates);
        assert!(MachineInfo::current().cores >= 1);
    }

    /// The SIMD level is one build.rs can name, and records written before it existed still read.
    #[test]
    fn build_info_names_faiss_simd_and_old_records_read() {
        let b = BuildInfo::current();
        assert!(["avx2", "avx512", "generic"].contains(&b.faiss_simd.as_str()), "{}", b.faiss_simd);
        let mut old = serde_json::to_value(&b).unwrap();
        old.as_object_mut().unwrap().remove("faiss_simd");
        let back: BuildInfo = serde_json::from_value(old).unwrap();
        assert_eq!(back.faiss_simd, "");
        assert_eq!(back.faiss, b.faiss);
    }
}
