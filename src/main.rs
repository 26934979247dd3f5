//! The `georag` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use georag::eval::{self, CompareArgs, EvalArgs, ReportArgs};
use georag::{config, gate, metrics::MetricsFile, pipeline};
use std::path::PathBuf;
use std::process::ExitCode;

/// georag: evaluation harness for image geolocalization with retrieval-augmented multimodal LLMs.
///
/// Runs an experiment from one YAML config (datasets -> embeddings -> FAISS index -> retrieval ->
/// methods -> accuracy at 1/25/200/750/2500 km -> report), scores prediction files, and gates CI
/// on accuracy regressions.
#[derive(Parser)]
#[command(name = "georag", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every stage of an experiment config, reusing cached stages whose fingerprints match.
    ///
    /// Exit status: 0 when every sample succeeded, 2 when the run completed but some samples
    /// failed (undecodable photos, queries without neighbours: counted in run.json and the
    /// report), 1 on an error that stopped the run.
    Run {
        /// Experiment config (YAML; may `include:` other files).
        config: PathBuf,
        /// Override a config value: `--set index.nprobe=32`, `--set methods.1.k=8`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Run directory (default: results/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare a metrics.json with a baseline; exit 1 with a readable diff when any accuracy is
    /// outside the tolerance (either direction), 0 otherwise.
    Check {
        /// metrics.json of the run to check.
        metrics: PathBuf,
        /// Baseline metrics.json (e.g. results/baselines/demo.json).
        #[arg(long)]
        baseline: PathBuf,
        /// Allowed absolute difference, in percentage points of accuracy.
        #[arg(long, default_value_t = 1.0)]
        tolerance_pct: f64,
    },
    /// Score a per-image predictions file (CSV/Parquet, any common column spelling) against
    /// ground truth, under a declared convention; writes metrics.json, tables, per_image.csv, plots.
    Eval(EvalArgs),
    /// Paired comparison of two runs on the same images: per-threshold difference, exact McNemar
    /// test on per-image hits, and a verdict that says when a difference is within noise.
    Compare(CompareArgs),
    /// Paper-style tables (Markdown, CSV, LaTeX, HTML) and plots from runs, with published rows
    /// beside them and a Δ column.
    Report(ReportArgs),
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("georag: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config: path, sets, out } => {
            let cfg = config::load(&path, &sets)?;
            cfg.validate()?;
            let out = out.unwrap_or_else(|| PathBuf::from("results").join(&cfg.name));
            let summary = pipeline::run(&cfg, &out).with_context(|| format!("running {}", path.display()))?;
            let conv = &cfg.metrics;
            for row in &summary.metrics.rows {
                let accs: Vec<String> = conv
                    .thresholds_km
                    .iter()
                    .filter_map(|&t| row.acc(t).map(|a| format!("{t} km {a:.2}%")))
                    .collect();
                println!(
                    "{:<30} {}  (n scored {}/{} expected, coverage {:.1}%)",
                    row.method,
                    accs.join("  "),
                    row.n_scored,
                    row.n_expected,
                    100.0 * row.coverage
                );
            }
            println!("convention: {}", conv.describe());
            println!("report: {}", summary.out.join("report.html").display());
            let failed = summary.run.n_failures();
            if failed > 0 {
                eprintln!("georag: {failed} samples failed ({:?}); see run.json and the report", summary.run.failures);
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { metrics, baseline, tolerance_pct } => {
            let cur = MetricsFile::read(&metrics)?;
            let base = MetricsFile::read(&baseline)?;
            let report = gate::check(&cur, &base, tolerance_pct);
            print!("{}", report.render());
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Eval(a) => {
            let o = eval::run_eval(&a).with_context(|| format!("georag eval {}", a.predictions.display()))?;
            for c in &o.columns {
                eprintln!("[georag] column {c}");
            }
            for line in o.issues.summary(3) {
                eprintln!("[georag] {line}");
            }
            println!("{}", o.metrics);
            println!(
                "convention: {}; coverage {:.2} % (answered / expected); wrote {} files to {}",
                o.metrics.convention.describe(),
                100.0 * o.metrics.coverage,
                o.files.len(),
                a.out.display()
            );
            let t = o.timings_s;
            println!("wall-clock s: read+join {:.2}, score {:.2}, write outputs {:.2}", t.read, t.score, t.write);
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare(a) => {
            let o = eval::run_compare(&a).context("georag compare")?;
            println!("{}", o.markdown);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(a) => {
            let o = eval::run_report(&a).context("georag report")?;
            println!("wrote {} files to {}", o.files.len(), a.out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
