//! georag command line. Library errors are typed; `anyhow` only adds context here.

use anyhow::Context;
use clap::{Parser, Subcommand};
use georag::eval::{self, CompareArgs, EvalArgs, ReportArgs};

#[derive(Parser)]
#[command(name = "georag", version, about = "Evaluation harness for image geolocalization")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a per-image predictions file (CSV/Parquet) against ground truth.
    Eval(EvalArgs),
    /// Paired comparison of two runs on the same images (McNemar per threshold).
    Compare(CompareArgs),
    /// Paper-style tables and plots from runs, with published rows beside them.
    Report(ReportArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
                a_convention(&o.metrics),
                100.0 * o.metrics.coverage,
                o.files.len(),
                a.out.display()
            );
            let t = o.timings_s;
            println!(
                "wall-clock s: read+join {:.2}, score {:.2}, write outputs {:.2}",
                t.read, t.score, t.write
            );
        }
        Command::Compare(a) => {
            let o = eval::run_compare(&a).context("georag compare")?;
            println!("{}", o.markdown);
        }
        Command::Report(a) => {
            let o = eval::run_report(&a).context("georag report")?;
            println!("wrote {} files to {}", o.files.len(), a.out.display());
        }
    }
    Ok(())
}

fn a_convention(m: &georag::metrics::MetricsRow) -> String {
    m.convention.describe()
}
