//! Build-time provenance for `run.json`: georag's git commit (with a `-dirty` mark when tracked
//! files differ from it) and the versions of the dependencies that decide results, read from
//! `Cargo.lock`. Outside a git checkout (a source tarball, a vendored copy) the commit is simply
//! absent; nothing here can fail the build.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let o = Command::new("git").args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// `CMAKE_CXX_FLAGS` from the newest `faiss-sys-*/out/build/CMakeCache.txt` beside this build
/// script's output directory (`<target>/<profile>/build/georag-<hash>/out`), with its path.
fn faiss_cmake_flags() -> Option<(std::path::PathBuf, String)> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").ok()?);
    let build = out.parent()?.parent()?;
    let cache = std::fs::read_dir(build)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("faiss-sys-"))
        .map(|e| e.path().join("out/build/CMakeCache.txt"))
        .filter_map(|p| Some((p.metadata().and_then(|m| m.modified()).ok()?, p)))
        .max()?
        .1;
    let text = std::fs::read_to_string(&cache).ok()?;
    let flags = text.lines().find_map(|l| l.strip_prefix("CMAKE_CXX_FLAGS:STRING="))?.to_string();
    Some((cache, flags))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    // The dirty mark follows the sources: any change under src/ reruns this script.
    println!("cargo:rerun-if-changed=src");
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r])).filter(|r| Path::new(r).exists()) {
            println!("cargo:rerun-if-changed={r}");
        }
        if let Some(p) = git(&["rev-parse", "--git-path", "packed-refs"]).filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
        println!("cargo:rustc-env=GEORAG_GIT_COMMIT={commit}{}", if dirty { "-dirty" } else { "" });
    }
    // The SIMD level FAISS's C++ was compiled at: from the CMAKE_CXX_FLAGS of faiss-sys's cmake
    // build in this build directory (its build script has run: it `links`, so cargo runs it
    // before ours), else from the flags the cmake crate would hand it (the first of these that is
    // set; `.cargo/config.toml` sets the first to AVX2). The cache is what was compiled: the cmake
    // crate does not rebuild FAISS when the flags change, so reading them alone could name a level
    // the library does not have.
    let target = std::env::var("TARGET").unwrap_or_default();
    let vars = [format!("CXXFLAGS_{target}"), format!("CXXFLAGS_{}", target.replace('-', "_")), "TARGET_CXXFLAGS".into(), "CXXFLAGS".into()];
    for v in &vars {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let flags = match faiss_cmake_flags() {
        Some((cache, flags)) => {
            println!("cargo:rerun-if-changed={}", cache.display());
            flags
        }
        None => vars.iter().find_map(|v| std::env::var(v).ok()).unwrap_or_default(),
    };
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd = if has("-mavx512f") { "avx512" } else if has("-mavx2") { "avx2" } else { "generic" };
    println!("cargo:rustc-env=GEORAG_FAISS_SIMD={simd}");
    // name=version;... for the crates that decide numbers.
    let wanted = ["faiss", "faiss-sys", "candle-core", "arrow", "parquet", "turbojpeg", "country-boundaries", "geo", "plotters"];
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take())
            && wanted.contains(&n.as_str())
        {
            out.push(format!("{n}={}", v.trim_matches('"')));
        }
    }
    println!("cargo:rustc-env=GEORAG_DEP_VERSIONS={}", out.join(";"));
}
