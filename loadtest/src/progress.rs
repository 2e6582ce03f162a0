//! The live progress line on stderr: every second, rewritten in place, the last second's
//! completions and their p99 latency, and the errors so far. Both runners feed it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::histogram::Histogram;

/// What the progress line shows, fed by every measured request.
#[derive(Default)]
pub struct Live {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Latencies (µs) of the second being shown, emptied each second.
    window: Mutex<Histogram>,
}

impl Live {
    pub fn record(&self, success: bool, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if success {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(us);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Print the line every second from `from` until the task is aborted.
    pub fn show(self: Arc<Self>, from: Instant) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(from + Duration::from_secs(1), Duration::from_secs(1));
            let mut before = 0;
            loop {
                tick.tick().await;
                let window = std::mem::take(
                    &mut *self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                let requests = self.requests.load(Ordering::Relaxed);
                let p99 = window.quantile(0.99).map(|us| us as f64 / 1000.0);
                let line = line(from.elapsed(), requests - before, p99, self.errors.load(Ordering::Relaxed));
                eprint!("\r{line}");
                before = requests;
            }
        })
    }
}

/// One progress line, of a fixed width so that rewriting it leaves no trail.
pub fn line(elapsed: Duration, last_second: u64, p99_ms: Option<f64>, errors: u64) -> String {
    let p99 = p99_ms.map_or("—".to_owned(), |ms| format!("{ms:.2} ms"));
    format!("[{:>5.0}s] {last_second:>7} req/s  p99 {p99:>10}  errors {errors:<8}", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_keep_their_width() {
        let a = line(Duration::from_secs(3), 5000, Some(1.234), 0);
        assert_eq!(a, "[    3s]    5000 req/s  p99    1.23 ms  errors 0       ");
        let b = line(Duration::from_secs(12), 17, None, 3);
        assert_eq!(a.chars().count(), b.chars().count(), "rewritten in place: {b}");
    }

    #[test]
    fn the_window_holds_successes_and_errors_are_counted() {
        let live = Live::default();
        live.record(true, Duration::from_millis(4));
        live.record(false, Duration::from_millis(900));
        assert_eq!((live.requests.load(Ordering::Relaxed), live.errors.load(Ordering::Relaxed)), (2, 1));
        assert_eq!(live.window.lock().map(|w| w.quantile(1.0)).ok().flatten(), Some(4000));
    }
}
