//! A bounded export queue on its own thread, shared by spans and logs.
//!
//! The request path only ever pushes into a fixed-size lock-free queue:
//! when it is full the item is dropped and counted
//! (`infergate_telemetry_items_total{signal,outcome="queue_full"}`, see
//! [`crate::names::TELEMETRY_ITEMS`]), so a slow or dead collector costs
//! requests nothing and memory stays at `capacity` items. Exported and
//! failed items are counted there too (`exported`, `export_failed`).
//!
//! The worker sends a batch every `interval`, or sooner when `max_batch`
//! items are waiting; it sleeps in between. Queueing an item unparks the
//! worker only while a full batch is waiting; otherwise it is a lock-free
//! push and nothing more.
//!
//! OpenTelemetry's own batch processors drop the same way but expose no
//! count, which is why infergate has its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Labels of the telemetry pipeline's own counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// `spans`, `logs` or `metrics`.
    pub signal: String,
    /// `exported`; or why items were lost: `queue_full`, `export_failed`.
    pub outcome: String,
}

/// What the exporters did, process-wide (there is one telemetry pipeline).
/// [`crate::Metrics`] registers these counters.
pub static EXPORT_STATS: LazyLock<Family<SignalLabels, Counter>> = LazyLock::new(|| {
    let family = Family::<SignalLabels, Counter>::default();
    for signal in ["spans", "logs", "metrics"] {
        for outcome in ["exported", "queue_full", "export_failed"] {
            // Metrics are read, not queued: they cannot overflow.
            if (signal, outcome) != ("metrics", "queue_full") {
                family.get_or_create(&labels(signal, outcome)).inc_by(0);
            }
        }
    }
    family
});

fn labels(signal: &str, outcome: &str) -> SignalLabels {
    SignalLabels { signal: signal.to_owned(), outcome: outcome.to_owned() }
}

/// Count `n` items of `signal` with `outcome`.
pub(crate) fn count(signal: &str, outcome: &str, n: usize) {
    EXPORT_STATS.get_or_create(&labels(signal, outcome)).inc_by(n as u64);
}

/// Where a batch goes: an OTLP exporter, run to completion on the worker thread.
pub(crate) trait Sink<T>: Send + 'static {
    fn export(&mut self, batch: Vec<T>) -> OTelSdkResult;
    fn shutdown(&mut self) -> OTelSdkResult;
}

/// What the worker is asked to do besides exporting on schedule.
enum Control {
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

/// State shared by the processor and the worker.
struct Shared<T> {
    items: ArrayQueue<T>,
    controls: Mutex<Vec<Control>>,
    closed: AtomicBool,
}

/// The sending half, held by a span or log processor.
pub(crate) struct ExportQueue<T> {
    signal: &'static str,
    shared: Arc<Shared<T>>,
    /// Items that wake the worker early (a full batch).
    wake_at: usize,
    thread: std::thread::Thread,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl<T> std::fmt::Debug for ExportQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportQueue").field("signal", &self.signal).finish_non_exhaustive()
    }
}

/// How long flush and shutdown wait for the worker (one export's timeout, and some).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

impl<T: Send + 'static> ExportQueue<T> {
    pub(crate) fn start<S: Sink<T>>(
        signal: &'static str,
        sink: Arc<Mutex<S>>,
        capacity: usize,
        interval: Duration,
        max_batch: usize,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            items: ArrayQueue::new(capacity.max(1)),
            controls: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let max_batch = max_batch.clamp(1, capacity.max(1));
        let worker = std::thread::Builder::new().name(format!("otlp-{signal}")).spawn({
            let shared = shared.clone();
            move || run(signal, &shared, sink, interval, max_batch)
        })?;
        let thread = worker.thread().clone();
        Ok(ExportQueue { signal, shared, wake_at: max_batch, thread, worker: Mutex::new(Some(worker)) })
    }

    /// Queue an item, or drop and count it when the queue is full. Never
    /// blocks, and wakes the worker only when a batch is ready: a request
    /// makes several spans, and a wake-up per span would cost more than the span.
    pub(crate) fn push(&self, item: T) {
        if self.shared.closed.load(Ordering::Relaxed) {
            return;
        }
        match self.shared.items.push(item) {
            // Unparking a thread that is not parked is one atomic swap.
            Ok(()) if self.shared.items.len() >= self.wake_at => self.thread.unpark(),
            Ok(()) => {}
            Err(_) => count(self.signal, "queue_full", 1),
        }
    }

    /// Export everything queued so far.
    pub(crate) fn flush(&self) -> OTelSdkResult {
        self.control(Control::Flush)
    }

    /// Export what is queued, shut the exporter down and stop the worker.
    pub(crate) fn shutdown(&self) -> OTelSdkResult {
        let result = self.control(Control::Shutdown);
        if let Some(worker) = self.worker.lock().map_err(poisoned)?.take() {
            let _ = worker.join();
        }
        result
    }

    fn control(&self, message: fn(SyncSender<OTelSdkResult>) -> Control) -> OTelSdkResult {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let (ack, done) = mpsc::sync_channel(1);
        self.shared.controls.lock().map_err(poisoned)?.push(message(ack));
        self.thread.unpark();
        done.recv_timeout(CONTROL_TIMEOUT).map_err(|_| OTelSdkError::Timeout(CONTROL_TIMEOUT))?
    }
}

fn poisoned<G>(_: std::sync::PoisonError<G>) -> OTelSdkError {
    OTelSdkError::InternalFailure("export worker panicked".into())
}

fn copy(result: &OTelSdkResult) -> OTelSdkResult {
    match result {
        Ok(()) => Ok(()),
        Err(error) => Err(OTelSdkError::InternalFailure(error.to_string())),
    }
}

fn run<T, S: Sink<T>>(
    signal: &'static str,
    shared: &Shared<T>,
    sink: Arc<Mutex<S>>,
    interval: Duration,
    max_batch: usize,
) {
    // Export everything queued, a batch at a time.
    let drain = || -> OTelSdkResult {
        let mut result = Ok(());
        while !shared.items.is_empty() {
            let batch: Vec<T> = std::iter::from_fn(|| shared.items.pop()).take(max_batch).collect();
            let n = batch.len();
            let sent = sink.lock().map_err(poisoned).and_then(|mut sink| sink.export(batch));
            count(signal, if sent.is_ok() { "exported" } else { "export_failed" }, n);
            result = result.and(sent);
        }
        result
    };
    let mut next = Instant::now() + interval;
    loop {
        // Woken early by a full batch, a flush or a shutdown.
        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
        let controls = shared.controls.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
        let due = Instant::now() >= next;
        if due || shared.items.len() >= max_batch || !controls.is_empty() {
            let result = drain();
            if due {
                next = Instant::now() + interval;
            }
            for control in controls {
                match control {
                    Control::Flush(ack) => {
                        let _ = ack.send(copy(&result));
                    }
                    Control::Shutdown(ack) => {
                        shared.closed.store(true, Ordering::Release);
                        let rest = drain();
                        let closed = sink.lock().map_err(poisoned).and_then(|mut sink| sink.shutdown());
                        let _ = ack.send(result.and(rest).and(closed));
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds every batch until released, then records them.
    struct Gate {
        open: Arc<std::sync::Barrier>,
        got: Arc<Mutex<Vec<u32>>>,
        fail: bool,
    }

    impl Sink<u32> for Gate {
        fn export(&mut self, batch: Vec<u32>) -> OTelSdkResult {
            self.open.wait();
            self.got.lock().map_err(poisoned)?.extend(batch);
            if self.fail {
                Err(OTelSdkError::InternalFailure("collector down".into()))
            } else {
                Ok(())
            }
        }
        fn shutdown(&mut self) -> OTelSdkResult {
            Ok(())
        }
    }

    fn value(signal: &str, outcome: &str) -> u64 {
        EXPORT_STATS.get_or_create(&labels(signal, outcome)).get()
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let open = Arc::new(std::sync::Barrier::new(2));
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::new(Mutex::new(Gate { open: open.clone(), got: got.clone(), fail: false }));
        // `spans` would race other tests' counts: this test owns `test-a`.
        let queue = ExportQueue::start("test-a", sink, 4, Duration::from_secs(3600), 1).unwrap();
        queue.push(0); // the worker takes it and waits at the gate
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        for i in 1..=10 {
            queue.push(i);
        }
        assert!(start.elapsed() < Duration::from_millis(50));
        assert_eq!(value("test-a", "queue_full"), 6);
        // Release the first export and the four queued ones (one each).
        for _ in 0..5 {
            open.wait();
        }
        // Flush has nothing left to export: it does not reach the gate.
        queue.flush().unwrap();
        assert_eq!(*got.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(value("test-a", "exported"), 5);
    }

    #[test]
    fn failed_exports_are_counted_and_shutdown_stops_the_worker() {
        let open = Arc::new(std::sync::Barrier::new(1));
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::new(Mutex::new(Gate { open, got, fail: true }));
        let queue = ExportQueue::start("test-b", sink, 16, Duration::from_secs(3600), 100).unwrap();
        for i in 0..3 {
            queue.push(i);
        }
        assert!(queue.shutdown().is_err());
        assert_eq!(value("test-b", "export_failed"), 3);
        queue.push(9);
        assert!(queue.flush().is_err());
    }
}
