//! Turns scheduler decisions into backend calls, one scheduler per model.
//!
//! The call layer (`call/`) submits a request's jobs and waits for two
//! things: the dispatch (or the reason there was none), then the backend's
//! events. The model's scheduler is shared ([`core`]): submitting
//! dispatches whatever is due at once, a finished batch dispatches the
//! next, and a timer task handles batching delays and deadlines.
//! Generative models are stepped by their own task ([`steps`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use infergate_backends::{Backend, Event, ModelInfo, Request, Task};
use infergate_otel::names::spans;
use infergate_otel::Metrics;
use infergate_scheduler::{
    DropReason, Job, LatencySeed, ModelScheduler, QueueLimits, RejectReason, SchedulerConfig,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use crate::config::{ModelConfig, SchedulerSection};

mod core;
mod job;
mod steps;
use self::core::{Core, Dispatched, Pending};
pub use self::job::{Cost, DispatchInfo};
use crate::context::RequestContext;
use crate::error::ApiError;

/// A served model: its facts and the way into its scheduler.
#[derive(Debug)]
pub struct ModelHandle {
    pub name: String,
    pub task: Task,
    pub info: ModelInfo,
    pub default_timeout: Duration,
    cost_factor: f64,
    /// The model's GenAI series, for [`crate::outcome::Outcome`].
    pub genai: Arc<infergate_otel::genai::ModelGenAi>,
    core: Arc<Core>,
    /// Moving average of generated tokens per request (chat), to estimate cost.
    output_tokens: AtomicU64,
    /// The response cache, if the model has one (`cache = {...}`).
    pub cache: Option<Arc<crate::cache::ModelCache>>,
    /// Low-confidence answers to record (`capture = {...}`).
    pub capture: Option<crate::config::CaptureConfig>,
    /// Where a moderation model flags a score (its backend's `flag_threshold`; 0.5 when it has none).
    pub flag_threshold: f64,
    /// The models that take a job this one cannot (`fallback = [...]`), in
    /// order; set once every model is started.
    fallbacks: std::sync::OnceLock<Vec<Arc<ModelHandle>>>,
}

/// A job that has been dispatched: its events, until the terminal one.
/// Dropping it cancels the job (the client went away).
#[derive(Debug)]
pub struct Running {
    pub dispatch: DispatchInfo,
    events: mpsc::UnboundedReceiver<Event>,
    /// The backend's work, when this request's task runs it.
    work: Option<Work>,
    /// Cancels the job if this is dropped before its terminal event came;
    /// disarmed by that event (a job that ended was not cancelled).
    cancel_on_drop: Option<DropGuard>,
}

impl Running {
    /// The next event, or an error if the backend dropped the job silently.
    pub async fn next(&mut self) -> Result<Event, ApiError> {
        while let Some(work) = self.work.as_mut() {
            // The work first: it settles its batch in the same poll that
            // sends the terminal event, before this request can be dropped.
            tokio::select! {
                biased;
                () = &mut work.0 => self.work = None,
                event = self.events.recv() => {
                    if self.settle(&event) {
                        // Whatever the backend still does after the last
                        // event (and its report) must not depend on this
                        // request being polled any further.
                        if let Some(rest) = self.work.take() {
                            tokio::spawn(rest.0);
                        }
                    }
                    return event.ok_or_else(ended);
                }
            }
        }
        let event = self.events.recv().await;
        self.settle(&event);
        event.ok_or_else(ended)
    }

    /// Whether `event` ends the job; if so, leaving now cancels nothing.
    fn settle(&mut self, event: &Option<Event>) -> bool {
        let terminal = matches!(event, Some(Event::Done(_) | Event::Failed(_)));
        if terminal {
            if let Some(guard) = self.cancel_on_drop.take() {
                guard.disarm();
            }
        }
        terminal
    }

    /// The next event, or `DeadlineExceeded` if none comes by `deadline`.
    pub async fn next_by(&mut self, deadline: Option<Instant>) -> Result<Event, ApiError> {
        by(deadline, self.next()).await
    }

    /// Wait for the job's output by `deadline`, skipping streamed deltas
    /// (a job that is not streamed answers with its output alone).
    pub async fn output(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<infergate_backends::Output, ApiError> {
        loop {
            match self.next_by(deadline).await? {
                Event::Delta(_) | Event::Chunk(_) => continue,
                Event::Done(output) => return Ok(output),
                Event::Failed(error) => return Err(error.into()),
            }
        }
    }
}

/// A batch of one running in its request's task.
struct Work(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Work")
    }
}

fn ended() -> ApiError {
    ApiError::Internal { detail: "backend ended a job without a result".into() }
}

/// Run `work` until `deadline` (forever when `None`).
pub(crate) async fn by<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, work).await.map_err(|_| ApiError::DeadlineExceeded)?,
        None => work.await,
    }
}

static NEXT_JOB_ID: AtomicU64 = AtomicU64::new(1);

/// The scheduler settings of one model.
fn scheduler_config(model: &ModelConfig, defaults: &SchedulerSection) -> SchedulerConfig {
    let seed = match (model.latency, model.backend.latency_hint()) {
        (Some(l), _) => LatencySeed { base: l.base, per_cost: l.per_cost, per_item: l.per_item },
        (None, Some((base, per_cost))) => LatencySeed { base, per_cost, per_item: Duration::ZERO },
        (None, None) => LatencySeed::default(),
    };
    let q = model.queue;
    SchedulerConfig {
        policy: model.policy.unwrap_or(defaults.policy),
        max_batch: model.batch.max_size,
        max_batch_cost: f64::INFINITY,
        max_delay: model.batch.max_delay,
        concurrency: model.concurrency,
        limits: QueueLimits {
            max_jobs: q.max_jobs,
            max_bytes: q.max_bytes,
            tenant_max_jobs: q.tenant_max_jobs.unwrap_or(q.max_jobs),
            tenant_max_bytes: q.tenant_max_bytes.unwrap_or(q.max_bytes),
        },
        latency: seed,
        best_effort_horizon: defaults.best_effort_horizon,
        fair_quantum: defaults.fair_quantum,
    }
}

impl ModelHandle {
    /// Start the model's runner task; it ends when the handle is dropped and
    /// its queue has drained.
    pub fn spawn(
        config: &ModelConfig,
        defaults: &SchedulerSection,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        default_timeout: Duration,
    ) -> Self {
        let scheduler = ModelScheduler::new(scheduler_config(config, defaults), std::time::Instant::now());
        let reasons: Vec<&str> = RejectReason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(DropReason::ALL.iter().map(|r| r.as_str()))
            .collect();
        metrics.register_model(&config.name, &reasons);
        let classes = infergate_scheduler::Class::ALL.map(|c| c.as_str());
        let genai = Arc::new(metrics.genai.model(&config.name, &classes));
        let core = Arc::new(Core::new(&config.name, scheduler, backend.clone(), metrics, config.cost_factor));
        if backend.generator().is_some() {
            tokio::spawn(steps::run(core.clone()));
        } else {
            tokio::spawn(core.clone().run_timers());
        }
        ModelHandle {
            name: config.name.clone(),
            task: config.task,
            info: backend.info(),
            default_timeout: config.default_timeout.unwrap_or(default_timeout),
            cost_factor: config.cost_factor,
            genai,
            core,
            output_tokens: AtomicU64::new(0),
            cache: None,
            capture: config.capture,
            flag_threshold: match &config.backend {
                infergate_backends::BackendConfig::Onnx(onnx) => onnx.flag_threshold,
                _ => 0.5,
            },
            fallbacks: std::sync::OnceLock::new(),
        }
    }

    /// Set the models that take a job this one cannot, in order (once).
    pub fn set_fallbacks(&self, fallbacks: Vec<Arc<ModelHandle>>) {
        let _ = self.fallbacks.set(fallbacks);
    }

    /// Queue `job` here, or on a fallback: when this model's backend cannot
    /// serve at all, or its admission finds the deadline infeasible, the
    /// first fallback that admits the job takes it (traced on the job's
    /// queue span, counted in `infergate_fallbacks_total`). Without a taker,
    /// this model's own answer stands (for an unavailable backend: the job
    /// queues here, where one job at a time may probe the replicas).
    fn admit(&self, job: Job<Pending>) -> Result<(), ApiError> {
        let fallbacks = self.fallbacks.get().map_or(&[][..], Vec::as_slice);
        if fallbacks.is_empty() {
            return self.core.submit(job).map_err(|refused| refused.0);
        }
        let (mut job, refusal, reason) = if self.core.available() {
            match self.core.submit(job).map_err(|refused| *refused) {
                Ok(()) => return Ok(()),
                Err((error @ ApiError::DeadlineInfeasible { .. }, job)) => {
                    (job, Some(error), "deadline_infeasible")
                }
                Err((error, _)) => return Err(error),
            }
        } else {
            (job, None, "unavailable")
        };
        for fallback in fallbacks.iter().filter(|f| f.core.available()) {
            let scale = fallback.cost_factor / self.cost_factor;
            (job.cost, job.first_cost) = (job.cost * scale, job.first_cost * scale);
            let span = job.payload.span.clone();
            match fallback.core.submit(job) {
                Ok(()) => {
                    tracing::info!(parent: &span, model = %self.name, fallback = %fallback.name, reason, "job moved to a fallback model");
                    self.core.metrics.fallback(&self.name, &fallback.name, reason);
                    return Ok(());
                }
                Err(refused) => {
                    job = refused.1;
                    (job.cost, job.first_cost) = (job.cost / scale, job.first_cost / scale);
                }
            }
        }
        match refusal {
            Some(error) => Err(error),
            None => self.core.submit(job).map_err(|refused| refused.0),
        }
    }

    /// Answer this model's deterministic requests from `cache`.
    pub fn with_cache(mut self, cache: Arc<crate::cache::ModelCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Generated tokens to expect from a chat request allowing `max_tokens`:
    /// the recent average, corrected from each response's usage.
    pub fn expected_output(&self, max_tokens: u32) -> u32 {
        match self.output_tokens.load(Ordering::Relaxed) {
            0 => max_tokens,
            avg => (avg as u32).min(max_tokens),
        }
    }

    /// Record a response's actual generated tokens.
    pub fn observe_output(&self, tokens: u32) {
        let old = self.output_tokens.load(Ordering::Relaxed);
        let new = if old == 0 {
            u64::from(tokens.max(1))
        } else {
            (old * 15 + u64::from(tokens.max(1))).div_ceil(16)
        };
        self.output_tokens.store(new, Ordering::Relaxed);
    }

    /// Queue a request due by `deadline` (`None`: best effort) and wait until
    /// it is dispatched (or refused, dropped, or its deadline passes).
    /// Dropping the returned future cancels the job.
    pub async fn submit(
        &self,
        ctx: &RequestContext,
        deadline: Option<Instant>,
        request: Request,
        cost: Cost,
    ) -> Result<Running, ApiError> {
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (dispatched_tx, mut dispatched) = oneshot::channel();
        let span = tracing::info_span!(
            spans::QUEUE,
            model = %self.name,
            class = ctx.class.as_str(),
            cost = cost.total * self.cost_factor,
            queue.wait_ms = tracing::field::Empty,
            queue.slack_ms = tracing::field::Empty,
            queue.position = tracing::field::Empty,
            batch.id = tracing::field::Empty,
            batch.size = tracing::field::Empty,
            scheduler.decision = tracing::field::Empty,
            scheduler.reason = tracing::field::Empty,
        );
        let job = Job {
            id: NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed),
            tenant: ctx.tenant.clone(),
            class: ctx.class,
            arrival: std::time::Instant::now(),
            deadline: deadline.map(Instant::into_std),
            cost: cost.total * self.cost_factor,
            first_cost: cost.first * self.cost_factor,
            bytes: cost.bytes,
            payload: Pending {
                span: span.clone(),
                request,
                cancel,
                events: events_tx,
                dispatched: dispatched_tx,
                forwarded: ctx.forwarded.clone(),
            },
        };
        // Dispatched at once when a worker is free (a batch of one may even
        // come back to run here); otherwise wait for the scheduler's turn.
        let outcome = match self.admit(job) {
            Err(refused) => Err(refused),
            Ok(()) => match dispatched.try_recv() {
                Ok(outcome) => outcome,
                Err(oneshot::error::TryRecvError::Closed) => Err(ApiError::ShuttingDown),
                Err(oneshot::error::TryRecvError::Empty) => {
                    // If the client leaves while queued, this future is
                    // dropped: the span still says what happened.
                    let pending = CancelledUnlessSettled(Some(span.clone()));
                    let outcome =
                        by(deadline, async { dispatched.await.map_err(|_| ApiError::ShuttingDown)? })
                            .instrument(span.clone())
                            .await;
                    pending.settle();
                    outcome
                }
            },
        };
        match &outcome {
            Ok(Dispatched { info: d, .. }) => {
                span.record("scheduler.decision", "dispatched");
                span.record("queue.wait_ms", d.queue_wait.as_secs_f64() * 1000.0);
                span.record("queue.position", d.position);
                span.record("batch.id", d.batch_id);
                span.record("batch.size", d.batch_size);
                if let Some(slack) = d.slack {
                    span.record("queue.slack_ms", slack * 1000.0);
                }
            }
            Err(error) => {
                span.record("scheduler.decision", "refused");
                span.record("scheduler.reason", error.parts().code.unwrap_or("error"));
            }
        }
        let Dispatched { info, in_caller } = outcome?;
        let work = in_caller.map(|work| Work(Box::pin(work.run())));
        Ok(Running { dispatch: info, events, work, cancel_on_drop: Some(guard) })
    }
}

/// Marks a queue span `cancelled` when its request is dropped while queued.
struct CancelledUnlessSettled(Option<tracing::Span>);

impl CancelledUnlessSettled {
    fn settle(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelledUnlessSettled {
    fn drop(&mut self) {
        if let Some(span) = self.0.take() {
            span.record("scheduler.decision", "cancelled");
            span.record("scheduler.reason", "client_disconnected");
        }
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        self.core.close();
    }
}

#[cfg(test)]
mod tests;
