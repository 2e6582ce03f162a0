//! A bounded export queue on its own thread, shared by spans and logs.
//!
//! The request path only ever `try_send`s: when the queue is full the item
//! is dropped and counted (`infergate_telemetry_dropped_total{signal,reason}`),
//! so a slow or dead collector costs requests nothing and memory stays at
//! `capacity` items. The worker sends a batch every `interval`, or sooner
//! when `max_batch` items are waiting.
//!
//! OpenTelemetry's own batch processors drop the same way but expose no
//! count, which is why infergate has its own.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

enum Message<T> {
    Item(T),
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

/// The sending half, held by a span or log processor.
#[derive(Debug)]
pub(crate) struct ExportQueue<T> {
    signal: &'static str,
    sender: SyncSender<Message<T>>,
    worker: Mutex<Option<JoinHandle<()>>>,
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
        let (sender, receiver) = mpsc::sync_channel(capacity.max(1));
        let worker = std::thread::Builder::new()
            .name(format!("otlp-{signal}"))
            .spawn(move || run(signal, receiver, sink, interval, max_batch.max(1)))?;
        Ok(ExportQueue { signal, sender, worker: Mutex::new(Some(worker)) })
    }

    /// Queue an item, or drop and count it when the queue is full. Never blocks.
    pub(crate) fn push(&self, item: T) {
        match self.sender.try_send(Message::Item(item)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => count(self.signal, "queue_full", 1),
            // After shutdown: nothing will send it.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Export everything queued so far.
    pub(crate) fn flush(&self) -> OTelSdkResult {
        self.control(Message::Flush)
    }

    /// Export what is queued, shut the exporter down and stop the worker.
    pub(crate) fn shutdown(&self) -> OTelSdkResult {
        let result = self.control(Message::Shutdown);
        if let Some(worker) = self.worker.lock().map_err(poisoned)?.take() {
            let _ = worker.join();
        }
        result
    }

    fn control(&self, message: fn(SyncSender<OTelSdkResult>) -> Message<T>) -> OTelSdkResult {
        let (ack, done) = mpsc::sync_channel(1);
        // Blocks while the queue is full; the worker is draining it.
        self.sender.send(message(ack)).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done.recv_timeout(CONTROL_TIMEOUT).map_err(|_| OTelSdkError::Timeout(CONTROL_TIMEOUT))?
    }
}

fn poisoned<G>(_: std::sync::PoisonError<G>) -> OTelSdkError {
    OTelSdkError::InternalFailure("export worker panicked".into())
}

fn run<T, S: Sink<T>>(
    signal: &'static str,
    receiver: Receiver<Message<T>>,
    sink: Arc<Mutex<S>>,
    interval: Duration,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut next = Instant::now() + interval;
    let send = |batch: &mut Vec<T>| -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        let items = std::mem::replace(batch, Vec::with_capacity(max_batch));
        let result = sink.lock().map_err(poisoned).and_then(|mut sink| sink.export(items));
        count(signal, if result.is_ok() { "exported" } else { "export_failed" }, n);
        result
    };
    loop {
        match receiver.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Message::Item(item)) => {
                batch.push(item);
                if batch.len() >= max_batch {
                    let _ = send(&mut batch);
                }
            }
            Ok(Message::Flush(ack)) => {
                let _ = ack.send(send(&mut batch));
            }
            Ok(Message::Shutdown(ack)) => {
                let exported = send(&mut batch);
                let closed = sink.lock().map_err(poisoned).and_then(|mut sink| sink.shutdown());
                let _ = ack.send(exported.and(closed));
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = send(&mut batch);
                next = Instant::now() + interval;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = send(&mut batch);
                return;
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
