//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod encoders;
pub mod llm_double;
pub mod real_photos;

use std::path::PathBuf;

/// `../shared` beside the checkout, or `None` (with the reason printed) when absent.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP: {} not found (../shared is absent on this machine)", p.display());
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
        eprintln!("SKIP: GeoCLIP weights not in {} (run scripts/fetch-geoclip.sh; needs PyPI)", d.display());
        None
    }
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
