//! The export queues of finished spans and log records ([`ExportQueue`]),
//! and the sinks that run the OTLP exporters on their threads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, LogProcessor, SdkLogRecord};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::queue::{ExportQueue, Sink};

/// Where an exporter's futures run: the blocking HTTP client needs no
/// runtime (and must not run inside one); tonic needs tokio's reactor.
#[derive(Debug, Clone)]
pub(crate) enum Runner {
    Blocking,
    Tokio(tokio::runtime::Handle),
}

impl Runner {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match self {
            Runner::Blocking => futures_executor::block_on(future),
            Runner::Tokio(handle) => handle.block_on(future),
        }
    }
}

/// How the queue is sized and drained.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueOptions {
    pub capacity: usize,
    pub interval: Duration,
    pub max_batch: usize,
}

pub(crate) struct SpanSink<E> {
    exporter: E,
    runner: Runner,
}

impl<E: SpanExporter + 'static> Sink<SpanData> for SpanSink<E> {
    fn export(&mut self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.runner.block_on(self.exporter.export(batch))
    }
    fn shutdown(&mut self) -> OTelSdkResult {
        self.exporter.shutdown()
    }
}

/// The queue that finished, sampled spans go to, exported from its own thread.
pub(crate) fn span_queue<E: SpanExporter + 'static>(
    exporter: E,
    runner: Runner,
    options: QueueOptions,
) -> std::io::Result<ExportQueue<SpanData>> {
    let sink = Arc::new(Mutex::new(SpanSink { exporter, runner }));
    ExportQueue::start("spans", sink, options.capacity, options.interval, options.max_batch)
}

type LogItem = (SdkLogRecord, InstrumentationScope);

pub(crate) struct LogSink<E> {
    exporter: E,
    runner: Runner,
}

impl<E: LogExporter + 'static> Sink<LogItem> for LogSink<E> {
    fn export(&mut self, batch: Vec<LogItem>) -> OTelSdkResult {
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|(record, scope)| (record, scope)).collect();
        self.runner.block_on(self.exporter.export(LogBatch::new(&refs)))
    }
    fn shutdown(&mut self) -> OTelSdkResult {
        self.exporter.shutdown()
    }
}

/// Log records into the export queue.
pub(crate) struct QueuedLogs<E> {
    queue: ExportQueue<LogItem>,
    sink: Arc<Mutex<LogSink<E>>>,
}

impl<E: LogExporter + 'static> QueuedLogs<E> {
    pub(crate) fn start(exporter: E, runner: Runner, options: QueueOptions) -> std::io::Result<Self> {
        let sink = Arc::new(Mutex::new(LogSink { exporter, runner }));
        let queue =
            ExportQueue::start("logs", sink.clone(), options.capacity, options.interval, options.max_batch)?;
        Ok(QueuedLogs { queue, sink })
    }
}

impl<E> std::fmt::Debug for QueuedLogs<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedLogs").finish_non_exhaustive()
    }
}

impl<E: LogExporter + 'static> LogProcessor for QueuedLogs<E> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        self.queue.push((record.clone(), scope.clone()));
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.queue.flush()
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.queue.shutdown()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Ok(mut sink) = self.sink.lock() {
            sink.exporter.set_resource(resource);
        }
    }
}
