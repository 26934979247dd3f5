//! Progress reporting: an indicatif bar on a terminal, plain log lines otherwise (CI, pipes).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A progress handle for one stage. Cheap to share across rayon workers by reference.
pub struct Progress {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    next_log: AtomicU64,
    start: Instant,
    message: std::sync::Mutex<String>,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Self {
        let quiet = std::env::var_os("GEORAG_QUIET").is_some();
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta}) {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b
        });
        if bar.is_none() && !quiet {
            if total > 0 {
                eprintln!("[georag] {label}: {total} items");
            } else {
                eprintln!("[georag] {label}: started (total not known in advance)");
            }
        }
        Progress { label: label.to_string(), total, bar, done: AtomicU64::new(0), next_log: AtomicU64::new(1), start: Instant::now(), message: Default::default() }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.bar {
            b.set_position(done);
        } else if self.total > 0 && std::env::var_os("GEORAG_QUIET").is_none() {
            // Plain lines at every quarter.
            let q = self.next_log.load(Ordering::Relaxed);
            if q <= 3 && done * 4 >= q * self.total && self.next_log.compare_exchange(q, q + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                let msg = self.message.lock().map(|m| m.clone()).unwrap_or_default();
                let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
                eprintln!("[georag] {}: {done}/{} ({}%, {rate:.0}/s) {msg}", self.label, self.total, done * 100 / self.total);
            }
        }
    }

    /// A short status shown after the bar (e.g. "12 quarantined"); plain mode prints it with the
    /// next progress line.
    pub fn set_message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        } else {
            *self.message.lock().expect("progress message lock") = msg;
        }
    }

    /// Finish the stage and return its wall time in seconds.
    pub fn finish(self) -> f64 {
        let secs = self.start.elapsed().as_secs_f64();
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if std::env::var_os("GEORAG_QUIET").is_none() {
            let msg = self.message.lock().map(|m| m.clone()).unwrap_or_default();
            eprintln!("[georag] {}: done, {} items in {secs:.1} s {msg}", self.label, self.done.load(Ordering::Relaxed));
        }
        secs
    }
}
