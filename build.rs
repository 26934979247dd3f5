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
