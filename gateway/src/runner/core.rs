//! One model's scheduler, shared by everyone who changes it. A request's
//! task submits its job and dispatches whatever is due right there; a finishing
//! batch frees its worker and dispatches the next; the model's timer task
//! wakes only for batching delays, deadlines and replica changes. No request
//! waits for another task to notice it.
//!
//! A batch of one on a backend that stops its work when its future is
//! dropped (a remote upstream) runs in its request's own task; any other
//! batch runs on a task of its own with a `batch` span linked to every
//! member. Either way the measured time goes back to the latency model.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use infergate_backends::{Backend, BackendError, Event, Item, Request};
use infergate_otel::names::spans;
use infergate_otel::pool::PoolSeries;
use infergate_otel::{propagation, Metrics};
use infergate_scheduler::{
    Action, Batch, Decision, DropReason, Dropped, Job, Measured, ModelScheduler, Queued, RejectReason,
    Rejected,
};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::job::DispatchInfo;
use crate::error::ApiError;

/// A queued job's payload: the request and the ways back to its handler.
#[derive(Debug)]
pub(super) struct Pending {
    /// The `queue` span of the request, which the batch span links to.
    pub(super) span: tracing::Span,
    pub(super) request: Request,
    pub(super) cancel: CancellationToken,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) dispatched: oneshot::Sender<Result<Dispatched, ApiError>>,
    pub(super) forwarded: infergate_backends::Forwarded,
}

impl Pending {
    /// The way to tell the handler, and the job as its backend sees it.
    fn into_item(
        self,
        cost: f64,
        deadline: Option<std::time::Instant>,
    ) -> (oneshot::Sender<Result<Dispatched, ApiError>>, infergate_backends::Item) {
        let item = infergate_backends::Item {
            request: self.request,
            cost,
            cancel: self.cancel,
            events: self.events,
            deadline,
            span: self.span,
            forwarded: self.forwarded,
        };
        (self.dispatched, item)
    }
}

/// What a handler hears at dispatch.
#[derive(Debug)]
pub(super) struct Dispatched {
    pub(super) info: DispatchInfo,
    /// A batch of one that the handler's task runs itself.
    pub(super) in_caller: Option<InCaller>,
}

impl Queued for Pending {
    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.dispatched.is_closed()
    }
}

/// A job admission refused, and the job, which a fallback may take.
pub(super) type Refused = Box<(ApiError, Job<Pending>)>;

/// One model's series of the runner's metrics; clones share the values.
#[derive(Clone)]
pub(super) struct Series {
    queue_depth: Gauge,
    queue_wait: Histogram,
    pub(super) batch_size: Histogram,
    pub(super) backend_duration: Histogram,
    prediction_error: Gauge<f64, AtomicU64>,
    /// The inference extension's gauges.
    pub(super) pool: PoolSeries,
}

impl Series {
    fn new(metrics: &Metrics, model: &str) -> Self {
        let labels = Metrics::model(model);
        Series {
            queue_depth: metrics.queue_depth.get_or_create(&labels).clone(),
            queue_wait: metrics.queue_wait.get_or_create(&labels).clone(),
            batch_size: metrics.batch_size.get_or_create(&labels).clone(),
            backend_duration: metrics.backend_duration.get_or_create(&labels).clone(),
            prediction_error: metrics.prediction_error.get_or_create(&labels).clone(),
            pool: metrics.pool.model(model),
        }
    }
}

/// What changes under the lock.
pub(super) struct State {
    pub(super) scheduler: ModelScheduler<Pending>,
    /// The queue depth, and the running jobs and batches, last published.
    depth: Option<(usize, usize, usize)>,
    /// When the timer task will look again (`None`: only when told).
    armed: Option<Instant>,
    /// A remote model's replicas at the last metrics update, and when.
    upstream: (Vec<String>, Option<Instant>),
}

/// A model's scheduler and what dispatching needs.
pub(super) struct Core {
    pub(super) name: String,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) metrics: Arc<Metrics>,
    /// This model's metric series, looked up once (a lookup hashes the
    /// labels under a lock, several times per job otherwise).
    pub(super) series: Series,
    /// Scales a job's tokens to its cost (the KV budget is in tokens).
    pub(super) cost_factor: f64,
    /// The backend's kind, for `backend.execute` spans.
    pub(super) platform: &'static str,
    /// The configured concurrency, which a remote backend's capacity caps.
    configured: usize,
    /// Batches of one run in their request's task.
    in_caller: bool,
    state: Mutex<State>,
    /// Wakes the task that drives the model: the timer task of a batching
    /// model (its wake-up time moved earlier), the step loop of a generative
    /// one (a job arrived).
    pub(super) wake: Notify,
    /// The model's handle is gone: drain the queue, then stop.
    closed: AtomicBool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Core {
    pub(super) fn new(
        name: &str,
        scheduler: ModelScheduler<Pending>,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        cost_factor: f64,
    ) -> Self {
        Core {
            name: name.to_owned(),
            series: Series::new(&metrics, name),
            cost_factor,
            platform: backend.info().platform,
            configured: scheduler.config().concurrency,
            in_caller: backend.runs_in_caller() && backend.generator().is_none(),
            state: Mutex::new(State { scheduler, depth: None, armed: None, upstream: (Vec::new(), None) }),
            backend,
            metrics,
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handle is gone: the driving task stops once the queue drains.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Nothing left to do for a closed model.
    pub(super) fn finished(&self, state: &State) -> bool {
        self.closed.load(Ordering::Acquire) && state.scheduler.is_empty() && state.scheduler.running() == 0
    }

    /// Admit a job, then dispatch what is due (a batching model) or tell the
    /// step loop (a generative one).
    /// A refused job comes back with the refusal (a fallback may take it).
    pub(super) fn submit(self: &Arc<Self>, job: Job<Pending>) -> Result<(), Refused> {
        let mut state = self.lock();
        if let Err(rejected) = state.scheduler.submit(job, std::time::Instant::now()) {
            return Err(self.refusal(*rejected));
        }
        if self.backend.generator().is_some() {
            self.wake.notify_one();
        } else {
            self.drain(&mut state);
        }
        Ok(())
    }

    /// Whether the backend can serve at all now.
    pub(super) fn available(&self) -> bool {
        self.backend.available()
    }

    fn refusal(&self, rejected: Rejected<Pending>) -> Refused {
        let Rejected { reason, retry_after, retryable, job } = rejected;
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
        Box::new((error, job))
    }

    pub(super) fn dropped(&self, dropped: Dropped<Pending>) {
        self.metrics.reject(&self.name, dropped.reason.as_str());
        let error = match dropped.reason {
            // Shed before it ran, its deadline still ahead: a refusal under
            // load, like admission's (503, retry later), not a timeout.
            DropReason::Infeasible => {
                ApiError::DeadlineInfeasible { retry_after: Duration::from_secs(1), retryable: true }
            }
            DropReason::Expired => ApiError::DeadlineExceeded,
            DropReason::Cancelled => ApiError::Backend(BackendError::Cancelled),
        };
        let _ = dropped.job.payload.dispatched.send(Err(error));
    }

    /// Dispatch every batch that is due, and make sure the timer task looks
    /// again by the next time something is due.
    fn drain(self: &Arc<Self>, state: &mut State) {
        if let Some(at) = self.dispatch_due(state) {
            if state.armed.is_none_or(|armed| at < armed) {
                state.armed = Some(at);
                self.wake.notify_one();
            }
        }
    }

    /// Dispatch every batch that is due; return when something is due next.
    fn dispatch_due(self: &Arc<Self>, state: &mut State) -> Option<Instant> {
        if let Some(capacity) = self.backend.capacity() {
            state.scheduler.set_concurrency(self.configured.min(capacity));
        }
        let wake = loop {
            let step = state.scheduler.poll(std::time::Instant::now());
            step.dropped.into_iter().for_each(|d| self.dropped(d));
            match step.action {
                Action::Dispatch(batch) => self.dispatch(state, batch),
                Action::WaitUntil(at) => break Some(Instant::from_std(at)),
                Action::Idle => break None,
            }
        };
        self.publish_depth(state);
        wake
    }

    /// The queue's depth, and (batch by batch; a generative model's steps
    /// publish their own) the jobs and batches running, as gauges.
    pub(super) fn publish_depth(&self, state: &mut State) {
        let scheduler = &state.scheduler;
        let batched = self.backend.generator().is_none();
        let (depth, jobs, batches) = match batched {
            true => (scheduler.len(), scheduler.running_jobs(), scheduler.running()),
            false => (scheduler.len(), 0, 0),
        };
        let last = state.depth.replace((depth, jobs, batches));
        if last.map(|l| l.0) != Some(depth) {
            self.series.queue_depth.set(depth as i64);
        }
        if batched && last.map(|l| (l.1, l.2)) != Some((jobs, batches)) {
            let concurrency = scheduler.config().concurrency.max(1);
            self.series.pool.running.set(jobs as i64);
            self.series.pool.utilization.set((batches as f64 / concurrency as f64).min(1.0));
        }
    }

    /// Replica health and failover counters of a remote model, at most ten
    /// times a second.
    fn publish_upstream(&self, state: &mut State) {
        if state.upstream.1.is_some_and(|at| at.elapsed() < Duration::from_millis(100)) {
            return;
        }
        let Some(stats) = self.backend.upstream_stats() else { return };
        let now: Vec<String> = stats.replicas.iter().map(|r| r.0.clone()).collect();
        let gone: Vec<String> = state.upstream.0.iter().filter(|r| !now.contains(r)).cloned().collect();
        self.metrics.publish_upstream(&self.name, &stats.replicas, &gone, stats.retries, &stats.ejections);
        state.upstream = (now, Some(Instant::now()));
    }

    /// Tell a dispatched job's handler, and make its backend item (`None`
    /// when the handler has gone).
    pub(super) fn hand_over(&self, job: Job<Pending>, decision: Decision) -> Option<Item> {
        self.series.queue_wait.observe(decision.queue_wait.as_secs_f64());
        let (dispatched, item) = job.payload.into_item(job.cost, job.deadline);
        dispatched.send(Ok(Dispatched { info: info(&decision), in_caller: None })).ok()?;
        Some(item)
    }

    fn dispatch(self: &Arc<Self>, state: &mut State, mut batch: Batch<Pending>) {
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
            queued = state.scheduler.len(),
            predicted_ms = batch.predicted.as_secs_f64() * 1000.0,
            min_slack_ms = batch.jobs.iter().filter_map(|(_, d)| d.slack).fold(f64::INFINITY, f64::min) * 1000.0,
            "dispatch"
        );
        let id = batch.id;
        let execute_span = tracing::info_span!(
            parent: &batch_span,
            spans::BACKEND_EXECUTE,
            model = %self.name,
            backend.kind = %self.platform,
            batch.size = batch.jobs.len(),
        );
        if self.in_caller && batch.jobs.len() == 1 {
            if let Some((job, decision)) = batch.jobs.pop() {
                self.hand_over_in_caller(state, job, decision, id, (batch_span, execute_span));
            }
            return;
        }
        let items: Vec<Item> =
            batch.jobs.into_iter().filter_map(|(job, decision)| self.hand_over(job, decision)).collect();
        self.series.batch_size.observe(items.len() as f64);
        let core = self.clone();
        tokio::spawn(async move {
            // An empty batch (every client left) still reports, to free the worker.
            if items.is_empty() {
                drop(batch_span);
                core.release(id);
                return;
            }
            let tokens: Vec<CancellationToken> = items.iter().map(|item| item.cancel.clone()).collect();
            let report = core.backend.execute(items).instrument(execute_span).await;
            drop(batch_span);
            core.series.backend_duration.observe(report.elapsed.as_secs_f64());
            core.finished_run(id, &tokens, report.elapsed);
        });
    }

    /// Give a batch of one to its handler to run in its own task.
    fn hand_over_in_caller(
        self: &Arc<Self>,
        state: &mut State,
        job: Job<Pending>,
        decision: Decision,
        id: u64,
        spans: (tracing::Span, tracing::Span),
    ) {
        self.series.queue_wait.observe(decision.queue_wait.as_secs_f64());
        self.series.batch_size.observe(1.0);
        let (dispatched, item) = job.payload.into_item(job.cost, job.deadline);
        let work = InCaller { core: self.clone(), id: Some(id), item: Some(item), spans: Some(spans) };
        let handed = Dispatched { info: info(&decision), in_caller: Some(work) };
        if let Err(Ok(Dispatched { in_caller: Some(mut work), .. })) = dispatched.send(Ok(handed)) {
            // The handler left since the last look: nothing ran. This thread
            // holds the lock that the work's own release would take.
            work.id = None;
            state.scheduler.release(id);
        }
    }

    /// A batch finished: free its worker, learn from its time, dispatch
    /// what is due.
    pub(super) fn complete(self: &Arc<Self>, id: u64, measured: Measured) {
        let mut state = self.lock();
        state.scheduler.complete(id, measured);
        self.series.prediction_error.set(state.scheduler.latency().relative_error());
        self.drain(&mut state);
    }

    /// A run ended: its time teaches the latency model, unless one of its
    /// jobs was cancelled while it ran (the run stopped early, or ran on
    /// for a client that had gone: either way not the time such a batch takes).
    fn finished_run(self: &Arc<Self>, id: u64, tokens: &[CancellationToken], elapsed: Duration) {
        if tokens.iter().any(CancellationToken::is_cancelled) {
            self.release(id);
        } else {
            self.complete(id, Measured { elapsed, first: None, cost: None });
        }
    }

    /// A batch ended without a time worth learning from: free its worker.
    fn release(self: &Arc<Self>, id: u64) {
        let mut state = self.lock();
        state.scheduler.release(id);
        self.drain(&mut state);
    }

    /// Drive a batching model's timers: batching delays, queued deadlines,
    /// and a remote model's replica changes. Ends once the handle is gone
    /// and the queue has drained.
    pub(super) async fn run_timers(self: Arc<Self>) {
        // A backend whose capacity changes is looked at again this often.
        let watch = self.backend.capacity().is_some() || self.backend.upstream_stats().is_some();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = {
                let mut state = self.lock();
                if self.finished(&state) {
                    break;
                }
                self.publish_upstream(&mut state);
                // This task is the one a notification would wake: arm it
                // without one.
                state.armed = self.dispatch_due(&mut state);
                state.armed
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                _ = tick.tick(), if watch => {}
            }
        }
    }
}

fn info(decision: &Decision) -> DispatchInfo {
    DispatchInfo {
        queue_wait: decision.queue_wait,
        batch_size: decision.batch_size,
        batch_id: decision.batch_id,
        slack: decision.slack,
        position: decision.position,
        cache: None,
    }
}

/// A batch of one that its request's task runs. Its worker is freed, without
/// teaching the latency model, if it is dropped before the batch ends (the
/// client left, or the deadline passed).
#[derive(Debug)]
pub(super) struct InCaller {
    core: Arc<Core>,
    /// `Some` until the batch is settled.
    id: Option<u64>,
    item: Option<Item>,
    /// The `batch` span and its `backend.execute` child.
    spans: Option<(tracing::Span, tracing::Span)>,
}

impl InCaller {
    pub(super) async fn run(mut self) {
        let (Some(item), Some((batch_span, execute_span))) = (self.item.take(), self.spans.take()) else {
            return;
        };
        let token = item.cancel.clone();
        let report = self.core.backend.execute(vec![item]).instrument(execute_span).await;
        drop(batch_span);
        self.core.series.backend_duration.observe(report.elapsed.as_secs_f64());
        if let Some(id) = self.id.take() {
            self.core.finished_run(id, std::slice::from_ref(&token), report.elapsed);
        }
    }
}

impl Drop for InCaller {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.core.release(id);
        }
    }
}
