//! Turns scheduler decisions into backend calls, one task per model.
//!
//! Handlers submit a job and wait for two things: the dispatch (or the
//! reason there was none), then the backend's events. The runner owns the
//! model's queue, polls it whenever work arrives, a batch slot frees up or
//! the batcher's timer fires, and runs each batch on its own task while
//! holding one of the model's concurrency permits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use infergate_backends::{Backend, Event, Item, ModelInfo, Request, Task};
use infergate_otel::Metrics;
use infergate_scheduler::{Action, BatchPolicy, DropReason, FifoQueue, Job, Queued, RejectReason};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::ModelConfig;
use crate::context::RequestContext;
use crate::error::ApiError;

/// Where and with whom a job ran, for response headers and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchInfo {
    pub queue_wait: Duration,
    pub batch_size: usize,
    pub batch_id: u64,
}

/// A queued job's payload: the request and the ways back to its handler.
#[derive(Debug)]
struct Pending {
    request: Request,
    cancel: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
    dispatched: oneshot::Sender<Result<DispatchInfo, ApiError>>,
}

impl Queued for Pending {
    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.dispatched.is_closed()
    }
}

/// A served model: its facts and the way into its queue.
#[derive(Debug)]
pub struct ModelHandle {
    pub name: String,
    pub task: Task,
    pub info: ModelInfo,
    pub default_timeout: Duration,
    tx: mpsc::Sender<Job<Pending>>,
    stats: Arc<RunnerStats>,
    batch_slots: usize,
}

/// What handlers may read about a runner without asking it.
#[derive(Debug, Default)]
struct RunnerStats {
    /// Jobs waiting, as of the runner's last poll.
    queued: AtomicU64,
    /// Moving average of batch execution time, in microseconds.
    batch_micros: AtomicU64,
}

/// A job that has been dispatched: its events, until the terminal one.
/// Dropping it cancels the job (the client went away).
#[derive(Debug)]
pub struct Running {
    pub dispatch: DispatchInfo,
    events: mpsc::UnboundedReceiver<Event>,
    _cancel_on_drop: DropGuard,
}

impl Running {
    /// The next event, or an error if the backend dropped the job silently.
    pub async fn next(&mut self) -> Result<Event, ApiError> {
        self.events
            .recv()
            .await
            .ok_or_else(|| ApiError::Internal { detail: "backend ended a job without a result".into() })
    }

    /// The next event, or `DeadlineExceeded` if none comes by `deadline`.
    pub async fn next_by(&mut self, deadline: Option<Instant>) -> Result<Event, ApiError> {
        by(deadline, self.next()).await
    }

    /// Wait for the job's output by `deadline`, skipping streamed deltas.
    pub async fn output_by(
        mut self,
        deadline: Option<Instant>,
    ) -> Result<infergate_backends::Output, ApiError> {
        by(deadline, async move {
            loop {
                match self.next().await? {
                    Event::Delta(_) => continue,
                    Event::Done(output) => return Ok(output),
                    Event::Failed(error) => return Err(error.into()),
                }
            }
        })
        .await
    }
}

/// Run `work` until `deadline` (forever when `None`).
async fn by<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, work).await.map_err(|_| ApiError::DeadlineExceeded)?,
        None => work.await,
    }
}

static NEXT_JOB_ID: AtomicU64 = AtomicU64::new(1);

impl ModelHandle {
    /// Build the model's runner task; the task ends when the handle is dropped
    /// and its queue has drained.
    pub fn spawn(
        config: &ModelConfig,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
        default_timeout: Duration,
    ) -> Self {
        let policy = BatchPolicy { max_size: config.batch.max_size, max_delay: config.batch.max_delay };
        let queue = FifoQueue::new(config.queue_capacity, policy);
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let stats = Arc::new(RunnerStats::default());
        metrics.register_model(&config.name, &REASONS);
        let runner = Runner {
            name: config.name.clone(),
            rx,
            queue,
            backend: backend.clone(),
            slots: Arc::new(Semaphore::new(config.concurrency)),
            metrics,
            stats: stats.clone(),
        };
        tokio::spawn(runner.run());
        ModelHandle {
            name: config.name.clone(),
            task: config.task,
            info: backend.info(),
            default_timeout: config.default_timeout.unwrap_or(default_timeout),
            tx,
            stats,
            batch_slots: config.concurrency * config.batch.max_size,
        }
    }

    /// Queue a request and wait until it is dispatched (or refused, dropped,
    /// or its deadline passes). Dropping the returned future cancels the job.
    pub async fn submit(
        &self,
        ctx: &RequestContext,
        request: Request,
        cost: f64,
    ) -> Result<Running, ApiError> {
        let deadline = ctx.deadline(self.default_timeout);
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (dispatched_tx, dispatched) = oneshot::channel();
        let job = Job {
            id: NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed),
            tenant: ctx.tenant.clone(),
            class: ctx.class,
            arrival: std::time::Instant::now(),
            deadline: deadline.map(Instant::into_std),
            cost,
            bytes: 0,
            payload: Pending { request, cancel, events: events_tx, dispatched: dispatched_tx },
        };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => self.queue_full(),
            mpsc::error::TrySendError::Closed(_) => ApiError::ShuttingDown,
        })?;
        let dispatch = by(deadline, async { dispatched.await.map_err(|_| ApiError::ShuttingDown)? }).await?;
        Ok(Running { dispatch, events, _cancel_on_drop: guard })
    }

    /// The error for a full queue, with a retry estimate from recent batches.
    fn queue_full(&self) -> ApiError {
        let batch = Duration::from_micros(self.stats.batch_micros.load(Ordering::Relaxed).max(1000));
        let rounds =
            self.stats.queued.load(Ordering::Relaxed).div_ceil(self.batch_slots.max(1) as u64).max(1);
        ApiError::QueueFull { model: self.name.clone(), retry_after: batch * rounds.min(60) as u32 }
    }
}

/// Every reason a job leaves without running, for zero-valued counters.
const REASONS: [&str; 3] = ["queue_full", "deadline_exceeded", "cancelled"];

/// The task that owns one model's queue.
struct Runner {
    name: String,
    rx: mpsc::Receiver<Job<Pending>>,
    queue: FifoQueue<Pending>,
    backend: Arc<dyn Backend>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    stats: Arc<RunnerStats>,
}

impl Runner {
    async fn run(mut self) {
        let mut slot: Option<OwnedSemaphorePermit> = None;
        let mut open = true;
        loop {
            if slot.is_none() {
                slot = self.slots.clone().try_acquire_owned().ok();
            }
            let mut wake = None;
            if slot.is_some() {
                let step = self.queue.poll(std::time::Instant::now());
                for dropped in step.dropped {
                    let (reason, error) = match dropped.reason {
                        DropReason::DeadlineExceeded => ("deadline_exceeded", ApiError::DeadlineExceeded),
                        DropReason::Cancelled => {
                            ("cancelled", ApiError::Backend(infergate_backends::BackendError::Cancelled))
                        }
                    };
                    self.metrics.reject(&self.name, reason);
                    let _ = dropped.job.payload.dispatched.send(Err(error));
                }
                match step.action {
                    Action::Dispatch(batch) => {
                        self.dispatch(batch, slot.take());
                        continue;
                    }
                    Action::WaitUntil(at) => wake = Some(Instant::from_std(at)),
                    Action::Idle if !open => break,
                    Action::Idle => {}
                }
            }
            self.publish_depth();
            tokio::select! {
                msg = self.rx.recv(), if open => match msg {
                    Some(job) => self.enqueue(job),
                    None => open = false,
                },
                permit = self.slots.clone().acquire_owned(), if slot.is_none() => slot = permit.ok(),
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                else => break,
            }
        }
    }

    fn publish_depth(&self) {
        let depth = self.queue.len();
        self.stats.queued.store(depth as u64, Ordering::Relaxed);
        self.metrics.queue_depth.get_or_create(&Metrics::model(&self.name)).set(depth as i64);
    }

    fn enqueue(&mut self, job: Job<Pending>) {
        if let Err(rejected) = self.queue.submit(job, std::time::Instant::now()) {
            let (reason, error) = match rejected.reason {
                RejectReason::QueueFull => (
                    "queue_full",
                    ApiError::QueueFull { model: self.name.clone(), retry_after: Duration::from_secs(1) },
                ),
                RejectReason::DeadlineExceeded => ("deadline_exceeded", ApiError::DeadlineExceeded),
            };
            self.metrics.reject(&self.name, reason);
            let _ = rejected.job.payload.dispatched.send(Err(error));
        }
    }

    fn dispatch(&self, batch: infergate_scheduler::Batch<Pending>, slot: Option<OwnedSemaphorePermit>) {
        let size = batch.jobs.len();
        let labels = Metrics::model(&self.name);
        let mut items = Vec::with_capacity(size);
        for job in batch.jobs {
            let queue_wait = batch.dispatched_at.saturating_duration_since(job.arrival);
            self.metrics.queue_wait.get_or_create(&labels).observe(queue_wait.as_secs_f64());
            let info = DispatchInfo { queue_wait, batch_size: size, batch_id: batch.id };
            let p = job.payload;
            if p.dispatched.send(Ok(info)).is_ok() {
                items.push(Item { request: p.request, cost: job.cost, cancel: p.cancel, events: p.events });
            }
        }
        if items.is_empty() {
            return;
        }
        self.metrics.batch_size.get_or_create(&labels).observe(items.len() as f64);
        let backend = self.backend.clone();
        let metrics = self.metrics.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let report = backend.execute(items).await;
            metrics.backend_duration.get_or_create(&labels).observe(report.elapsed.as_secs_f64());
            let micros = report.elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
            let old = stats.batch_micros.load(Ordering::Relaxed);
            let ewma = if old == 0 { micros } else { (old * 7 + micros) / 8 };
            stats.batch_micros.store(ewma, Ordering::Relaxed);
            drop(slot);
        });
    }
}
