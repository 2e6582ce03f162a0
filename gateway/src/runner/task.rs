//! The task that owns one model's scheduler: polls it whenever a job
//! arrives, a batch finishes or its timer fires; runs each batch on its own
//! task with a `batch` span linked to every member; reports measured times.
//!
//! Generative backends ([`infergate_backends::Generate`]) are driven step by step instead
//! (continuous batching): whenever a lane finishes a decoding step, the
//! scheduler chooses the queued jobs that join its running set within the
//! lane's free slots and KV budget, and the next step starts at once.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use infergate_backends::{Backend, BackendError, Item, StepReport};
use infergate_otel::names::spans;
use infergate_otel::{propagation, Metrics};
use infergate_scheduler::{
    Action, Batch, Decision, DropReason, Dropped, Job, Measured, ModelScheduler, RejectReason, Rejected,
    StepBudget,
};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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
    /// Scales a job's tokens to its cost (the KV budget is in tokens).
    pub(super) cost_factor: f64,
    /// A remote model's replicas at the last metrics update, and when.
    pub(super) upstream: (Vec<String>, Option<Instant>),
    /// This model's metric series, looked up once (a lookup hashes the
    /// labels under a lock, several times per job otherwise).
    pub(super) series: Series,
    /// The queue depth last published.
    pub(super) depth: Option<usize>,
}

/// One model's series of the runner's metrics; clones share the values.
#[derive(Clone)]
pub(super) struct Series {
    queue_depth: Gauge,
    queue_wait: Histogram,
    batch_size: Histogram,
    backend_duration: Histogram,
    prediction_error: Gauge<f64, AtomicU64>,
}

impl Series {
    pub(super) fn new(metrics: &Metrics, model: &str) -> Self {
        let labels = Metrics::model(model);
        Series {
            queue_depth: metrics.queue_depth.get_or_create(&labels).clone(),
            queue_wait: metrics.queue_wait.get_or_create(&labels).clone(),
            batch_size: metrics.batch_size.get_or_create(&labels).clone(),
            backend_duration: metrics.backend_duration.get_or_create(&labels).clone(),
            prediction_error: metrics.prediction_error.get_or_create(&labels).clone(),
        }
    }
}

/// One running set of a generative backend, as its last step left it.
#[derive(Debug, Clone, Copy, Default)]
struct Lane {
    stepping: bool,
    running: usize,
    reserved: usize,
}

impl Runner {
    pub(super) async fn run(self) {
        if self.backend.generator().is_some() {
            self.run_steps().await
        } else {
            self.run_batches().await
        }
    }

    async fn run_batches(mut self) {
        let mut open = true;
        let configured = self.scheduler.config().concurrency;
        // A backend whose capacity changes is looked at again this often.
        let mut capacity_tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            let capacity = self.backend.capacity();
            if let Some(capacity) = capacity {
                self.scheduler.set_concurrency(configured.min(capacity));
            }
            self.publish_upstream();
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
                    self.series.prediction_error.set(error);
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                _ = capacity_tick.tick(), if !self.scheduler.is_empty() && capacity.is_some() => {}
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

    /// Replica health and failover counters of a remote model, at most
    /// ten times a second.
    fn publish_upstream(&mut self) {
        if self.upstream.1.is_some_and(|at| at.elapsed() < Duration::from_millis(100)) {
            return;
        }
        let Some(stats) = self.backend.upstream_stats() else { return };
        let now: Vec<String> = stats.replicas.iter().map(|r| r.0.clone()).collect();
        let gone: Vec<String> = self.upstream.0.iter().filter(|r| !now.contains(r)).cloned().collect();
        self.metrics.publish_upstream(&self.name, &stats.replicas, &gone, stats.retries, &stats.ejections);
        self.upstream = (now, Some(Instant::now()));
    }

    fn publish_depth(&mut self) {
        let depth = self.scheduler.len();
        if self.depth != Some(depth) {
            self.depth = Some(depth);
            self.series.queue_depth.set(depth as i64);
        }
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

    /// Tell a dispatched job's handler, and make its backend item (`None`
    /// when the handler has gone).
    fn hand_over(&self, job: Job<Pending>, decision: Decision) -> Option<Item> {
        self.series.queue_wait.observe(decision.queue_wait.as_secs_f64());
        let info = DispatchInfo {
            queue_wait: decision.queue_wait,
            batch_size: decision.batch_size,
            batch_id: decision.batch_id,
            slack: decision.slack,
            position: decision.position,
        };
        let p = job.payload;
        p.dispatched.send(Ok(info)).ok()?;
        Some(Item {
            request: p.request,
            cost: job.cost,
            cancel: p.cancel,
            events: p.events,
            deadline: job.deadline,
            span: p.span,
            forwarded: p.forwarded,
        })
    }

    fn dispatch(&self, batch: Batch<Pending>) {
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
        let items: Vec<Item> =
            batch.jobs.into_iter().filter_map(|(job, decision)| self.hand_over(job, decision)).collect();
        self.series.batch_size.observe(items.len() as f64);
        let backend = self.backend.clone();
        let series = self.series.clone();
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
                    series.backend_duration.observe(r.elapsed.as_secs_f64());
                    Measured { elapsed: r.elapsed, first: None, cost: None }
                }
                None => Measured { elapsed: Duration::ZERO, first: None, cost: Some(0.0) },
            };
            let _ = done.send((id, measured));
        });
    }
}

impl Runner {
    async fn run_steps(mut self) {
        let Some(generator) = self.backend.generator() else { return };
        let mut lanes = vec![Lane::default(); generator.lanes().max(1)];
        let (steps_tx, mut steps_rx) = mpsc::unbounded_channel::<(usize, StepReport)>();
        let mut open = true;
        loop {
            for (index, lane) in lanes.iter_mut().enumerate() {
                if !lane.stepping {
                    lane.stepping = self.start_step(index, *lane, &steps_tx);
                }
            }
            self.publish_depth();
            let idle = lanes.iter().all(|l| !l.stepping);
            if !open && self.scheduler.is_empty() && idle {
                break;
            }
            tokio::select! {
                msg = self.rx.recv(), if open => match msg {
                    Some(job) => self.enqueue(job),
                    None => open = false,
                },
                Some((lane, report)) = steps_rx.recv() => {
                    lanes[lane] = Lane { stepping: false, running: report.running, reserved: report.reserved };
                    self.stepped(&report);
                }
            }
        }
    }

    /// Start `lane`'s next step if it has sequences running or jobs can
    /// join; returns whether a step started.
    fn start_step(
        &mut self,
        lane: usize,
        state: Lane,
        done: &mpsc::UnboundedSender<(usize, StepReport)>,
    ) -> bool {
        let Some(generator) = self.backend.generator() else { return false };
        let slots = generator.max_sequences().saturating_sub(state.running);
        // An empty lane takes any job, however large, so none waits forever.
        let tokens = if state.running == 0 {
            f64::INFINITY
        } else {
            generator.kv_budget().saturating_sub(state.reserved) as f64 * self.cost_factor
        };
        let mut joining = Vec::new();
        if slots > 0 && !self.scheduler.is_empty() {
            let admission =
                self.scheduler.admit_step(std::time::Instant::now(), StepBudget { slots, tokens });
            admission.dropped.into_iter().for_each(|d| self.dropped(d));
            joining = admission.admitted;
        }
        if joining.is_empty() && state.running == 0 {
            return false;
        }
        let size = state.running + joining.len();
        let span = (!joining.is_empty()).then(|| {
            let span = tracing::info_span!(
                parent: None,
                spans::BATCH,
                model = %self.name,
                batch.id = joining[0].1.batch_id,
                batch.size = size,
                batch.joined = joining.len(),
                batch.lane = lane,
                batch.cost = joining.iter().map(|(j, _)| j.cost).sum::<f64>(),
            );
            for (job, _) in &joining {
                propagation::link(&span, &job.payload.span);
            }
            span
        });
        let items: Vec<Item> = joining
            .into_iter()
            .filter_map(|(job, mut decision)| {
                decision.batch_size = size;
                self.hand_over(job, decision)
            })
            .collect();
        let backend = self.backend.clone();
        let done = done.clone();
        let platform = self.backend.info().platform;
        tokio::spawn(async move {
            let step = async {
                match backend.generator() {
                    Some(generator) => generator.step(lane, items).await,
                    None => StepReport {
                        running: 0,
                        reserved: 0,
                        tokens: 0,
                        sequences: 0,
                        elapsed: Duration::ZERO,
                        prefill: Duration::ZERO,
                    },
                }
            };
            // Only steps that admit jobs are traced: the rest are counted.
            let report = match &span {
                Some(span) => {
                    let execute = tracing::info_span!(
                        parent: span,
                        spans::BACKEND_EXECUTE,
                        backend.kind = %platform,
                        batch.size = size,
                    );
                    step.instrument(execute).await
                }
                None => step.await,
            };
            drop(span);
            let _ = done.send((lane, report));
        });
        true
    }

    /// Learn from a finished step.
    fn stepped(&mut self, report: &StepReport) {
        self.series.backend_duration.observe(report.elapsed.as_secs_f64());
        if report.sequences > 0 {
            self.series.batch_size.observe(report.sequences as f64);
            self.scheduler.observe_step(report.tokens as f64, report.sequences, report.elapsed);
        }
    }
}
