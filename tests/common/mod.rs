//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod encoders;
pub mod llm_double;

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
