//! The task that owns one model's scheduler: polls it whenever a job
//! arrives, a batch finishes or its timer fires; runs each batch on its own
//! task with a `batch` span linked to every member; reports measured times.

use std::sync::Arc;
use std::time::Duration;

use infergate_backends::{Backend, BackendError, Item};
use infergate_otel::names::spans;
use infergate_otel::{propagation, Metrics};
use infergate_scheduler::{
    Action, Batch, DropReason, Dropped, Job, Measured, ModelScheduler, RejectReason, Rejected,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::{DispatchInfo, Pending};
use crate::error::ApiError;

/// The task that owns one model's scheduler.
pub(super) struct Runner {
    pub(super) name: String,
    pub(super) rx: mpsc::Receiver<Job<Pending>>,
    pub(super) done_tx: mpsc::UnboundedSender<(u64, Measured)>,
    pub(super) done_rx: mpsc::UnboundedReceiver<(u64, Measured)>,
    pub(super) scheduler: ModelScheduler<Pending>,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) metrics: Arc<Metrics>,
}

impl Runner {
    pub(super) async fn run(mut self) {
        let mut open = true;
        loop {
            let wake = self.drain_ready();
            if !open && self.scheduler.is_empty() && self.scheduler.running() == 0 {
                break;
            }
            tokio::select! {
                msg = self.rx.recv(), if open => match msg {
                    Some(job) => self.enqueue(job),
                    None => open = false,
                },
                Some((batch, measured)) = self.done_rx.recv() => {
                    self.scheduler.complete(batch, measured);
                    let error = self.scheduler.latency().relative_error();
                    self.metrics.prediction_error.get_or_create(&Metrics::model(&self.name)).set(error);
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
    }

    /// Dispatch every batch that is due; return when to look again.
    fn drain_ready(&mut self) -> Option<Instant> {
        loop {
            let step = self.scheduler.poll(std::time::Instant::now());
            step.dropped.into_iter().for_each(|d| self.dropped(d));
            match step.action {
                Action::Dispatch(batch) => self.dispatch(batch),
                Action::WaitUntil(at) => {
                    self.publish_depth();
                    return Some(Instant::from_std(at));
                }
                Action::Idle => {
                    self.publish_depth();
                    return None;
                }
            }
        }
    }

    fn publish_depth(&self) {
        let depth = self.scheduler.len() as i64;
        self.metrics.queue_depth.get_or_create(&Metrics::model(&self.name)).set(depth);
    }

    fn enqueue(&mut self, job: Job<Pending>) {
        if let Err(rejected) = self.scheduler.submit(job, std::time::Instant::now()) {
            let Rejected { job, reason, retry_after, retryable } = *rejected;
            self.metrics.reject(&self.name, reason.as_str());
            let retry_after = retry_after.unwrap_or(Duration::from_secs(1));
            let error = match reason {
                RejectReason::QueueFull => ApiError::QueueFull { model: self.name.clone(), retry_after },
                RejectReason::TenantQueueFull => {
                    ApiError::TenantQueueFull { model: self.name.clone(), retry_after }
                }
                RejectReason::DeadlineInfeasible => ApiError::DeadlineInfeasible { retry_after, retryable },
                RejectReason::DeadlineExceeded => ApiError::DeadlineExceeded,
            };
            let _ = job.payload.dispatched.send(Err(error));
        }
    }

    fn dropped(&self, dropped: Dropped<Pending>) {
        self.metrics.reject(&self.name, dropped.reason.as_str());
        let error = match dropped.reason {
            DropReason::Expired | DropReason::Infeasible => ApiError::DeadlineExceeded,
            DropReason::Cancelled => ApiError::Backend(BackendError::Cancelled),
        };
        let _ = dropped.job.payload.dispatched.send(Err(error));
    }

    fn dispatch(&self, batch: Batch<Pending>) {
        let labels = Metrics::model(&self.name);
        // Its own trace, linked to every member request's queue span.
        let batch_span = tracing::info_span!(
            parent: None,
            spans::BATCH,
            model = %self.name,
            batch.id = batch.id,
            batch.size = batch.jobs.len(),
            batch.cost = batch.cost(),
            batch.predicted_ms = batch.predicted.as_secs_f64() * 1000.0,
        );
        for (job, _) in &batch.jobs {
            propagation::link(&batch_span, &job.payload.span);
        }
        tracing::debug!(
            model = %self.name,
            batch = batch.id,
            size = batch.jobs.len(),
            queued = self.scheduler.len(),
            predicted_ms = batch.predicted.as_secs_f64() * 1000.0,
            min_slack_ms = batch.jobs.iter().filter_map(|(_, d)| d.slack).fold(f64::INFINITY, f64::min) * 1000.0,
            "dispatch"
        );
        let mut items = Vec::with_capacity(batch.jobs.len());
        for (job, decision) in batch.jobs {
            self.metrics.queue_wait.get_or_create(&labels).observe(decision.queue_wait.as_secs_f64());
            let info = DispatchInfo {
                queue_wait: decision.queue_wait,
                batch_size: decision.batch_size,
                batch_id: decision.batch_id,
                slack: decision.slack,
                position: decision.position,
            };
            let p = job.payload;
            if p.dispatched.send(Ok(info)).is_ok() {
                items.push(Item { request: p.request, cost: job.cost, cancel: p.cancel, events: p.events });
            }
        }
        self.metrics.batch_size.get_or_create(&labels).observe(items.len() as f64);
        let backend = self.backend.clone();
        let metrics = self.metrics.clone();
        let done = self.done_tx.clone();
        let id = batch.id;
        let platform = self.backend.info().platform;
        let execute_span = tracing::info_span!(
            parent: &batch_span,
            spans::BACKEND_EXECUTE,
            model = %self.name,
            backend.kind = %platform,
            batch.size = items.len(),
        );
        tokio::spawn(async move {
            // An empty batch (every client left) still reports, to free the worker.
            let report = if items.is_empty() {
                None
            } else {
                Some(backend.execute(items).instrument(execute_span).await)
            };
            drop(batch_span);
            let measured = match report {
                Some(r) => {
                    metrics.backend_duration.get_or_create(&labels).observe(r.elapsed.as_secs_f64());
                    Measured { elapsed: r.elapsed, first: None, cost: None }
                }
                None => Measured { elapsed: Duration::ZERO, first: None, cost: Some(0.0) },
            };
            let _ = done.send((id, measured));
        });
    }
}
