//! Worker threads that each own a model's sessions (ONNX Runtime) or
//! decoding state (whisper.cpp).
//!
//! `ort`'s `Session::run` takes `&mut self`, and inference is CPU work that
//! must stay off the async runtime: each worker thread builds its own state
//! (sessions, tokenizer) once and runs whole batches on it. Jobs reach the
//! workers through bounded queues: a job takes a slot before it is queued
//! (waiting, asynchronously, while the queue is full) and frees it when a
//! worker picks it up, so however many batches the scheduler lets run, the
//! queues hold at most [`QUEUED_PER_WORKER`] jobs per worker. Each job
//! carries the span it was submitted in (the batch's `backend.execute`),
//! which the worker enters while it runs, so what inference logs belongs to
//! its trace.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{BackendError, LoadError};

/// Jobs that may wait in a queue per worker that takes from it.
pub(crate) const QUEUED_PER_WORKER: usize = 2;

/// A job for a worker: what to run on its state, in which span, and the
/// queue slot it holds until a worker takes it.
struct Job<S> {
    run: Box<dyn FnOnce(&mut S) + Send>,
    span: tracing::Span,
    slot: OwnedSemaphorePermit,
}

/// A bounded queue of jobs: its channel holds at most as many jobs as it
/// has slots.
struct Queue<S> {
    jobs: crossbeam_channel::Sender<Job<S>>,
    slots: Arc<Semaphore>,
}

impl<S> Queue<S> {
    fn new(capacity: usize) -> (Self, crossbeam_channel::Receiver<Job<S>>) {
        let (jobs, receiver) = crossbeam_channel::bounded(capacity);
        (Queue { jobs, slots: Arc::new(Semaphore::new(capacity)) }, receiver)
    }
}

/// A pool of worker threads, each with its own `S`.
pub(crate) struct Pool<S> {
    /// Jobs for whichever worker is free.
    shared: Queue<S>,
    /// Jobs for one worker: its state carries over between them (the
    /// running set of a continuous batch).
    own: Vec<Queue<S>>,
}

impl<S: 'static> Pool<S> {
    /// Start `workers` threads, each building its state with `make`; returns
    /// when all are ready, or with the first one's error.
    pub(crate) fn start(
        name: &str,
        workers: usize,
        make: impl Fn() -> Result<S, LoadError> + Send + Sync + 'static,
    ) -> Result<Self, LoadError> {
        let workers = workers.max(1);
        let (shared, queue) = Queue::new(QUEUED_PER_WORKER * workers);
        let (ready, loaded) = std::sync::mpsc::channel::<Result<(), LoadError>>();
        let make = Arc::new(make);
        let mut own = Vec::with_capacity(workers);
        for i in 0..workers {
            let queue = queue.clone();
            let (mine, my_queue) = Queue::new(QUEUED_PER_WORKER);
            own.push(mine);
            let make = make.clone();
            let ready = ready.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let mut state = match make() {
                        Ok(state) => state,
                        Err(error) => {
                            let _ = ready.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    drop(ready);
                    loop {
                        let job = crossbeam_channel::select! {
                            recv(my_queue) -> job => job,
                            recv(queue) -> job => job,
                        };
                        let Ok(Job { run, span, slot }) = job else { break };
                        drop(slot);
                        let _entered = span.enter();
                        // A panicking job fails its own items (their senders
                        // drop); the worker and its sessions carry on.
                        if std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut state))).is_err() {
                            tracing::error!(worker = i, "inference job panicked");
                        }
                    }
                })
                .map_err(LoadError::Thread)?;
        }
        drop(ready);
        for _ in 0..workers {
            loaded.recv().map_err(|_| LoadError::WorkerStopped)??;
        }
        Ok(Pool { shared, own })
    }

    /// Worker threads in the pool.
    pub(crate) fn workers(&self) -> usize {
        self.own.len()
    }

    /// Run `job` on the next free worker.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, BackendError> {
        submit(&self.shared, job).await
    }

    /// Run `job` on worker `index` (modulo the pool's size), after the jobs
    /// already waiting for it.
    pub(crate) async fn run_on<R: Send + 'static>(
        &self,
        index: usize,
        job: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, BackendError> {
        submit(&self.own[index % self.own.len()], job).await
    }
}

/// Queue `job` (once a slot is free) in the current span, and wait for its result.
async fn submit<S, R: Send + 'static>(
    queue: &Queue<S>,
    job: impl FnOnce(&mut S) -> R + Send + 'static,
) -> Result<R, BackendError> {
    let stopped = || BackendError::Failed("inference workers stopped".into());
    let slot = queue.slots.clone().acquire_owned().await.map_err(|_| stopped())?;
    let (done, result) = tokio::sync::oneshot::channel();
    let run = Box::new(move |state: &mut S| {
        let _ = done.send(job(state));
    });
    // Never full: the channel has a place for every slot.
    queue.jobs.try_send(Job { run, span: tracing::Span::current(), slot }).map_err(|_| stopped())?;
    result.await.map_err(|_| BackendError::Failed("inference job failed".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_worker_state_and_a_panic_fails_only_its_job() {
        let pool = Pool::start("t", 2, || Ok(10u32)).unwrap();
        assert_eq!(pool.run(|s| *s + 1).await.unwrap(), 11);
        assert!(pool.run(|_| -> u32 { panic!("boom") }).await.is_err());
        for _ in 0..4 {
            assert_eq!(pool.run(|s| *s * 2).await.unwrap(), 20);
        }
    }

    #[tokio::test]
    async fn a_job_for_one_worker_finds_that_workers_state() {
        let pool = Pool::start("t", 3, || Ok(Vec::<u32>::new())).unwrap();
        assert_eq!(pool.workers(), 3);
        for round in 0..4u32 {
            for worker in 0..3 {
                pool.run_on(worker, move |s| s.push(round * 10 + worker as u32)).await.unwrap();
            }
        }
        for worker in 0..3 {
            let seen = pool.run_on(worker, |s| s.clone()).await.unwrap();
            assert_eq!(seen, (0..4).map(|r| r * 10 + worker as u32).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn jobs_beyond_the_queues_bound_wait_for_a_slot_and_all_run() {
        // One worker, stuck on a job until the test lets it go: the queue
        // takes QUEUED_PER_WORKER more, and the next waits for a slot.
        let pool = Arc::new(Pool::start("t", 1, || Ok(0u32)).unwrap());
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let stuck = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(move |_| gate.recv().is_ok()).await }
        });
        let queued: Vec<_> = (0..QUEUED_PER_WORKER + 2)
            .map(|n| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move |s| *s + n as u32).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // The worker holds one job, the channel its bound; the rest wait for slots.
        assert_eq!(pool.shared.slots.available_permits(), 0);
        assert_eq!(pool.shared.jobs.len(), QUEUED_PER_WORKER);
        release.send(()).unwrap();
        assert!(stuck.await.unwrap().unwrap());
        for (n, job) in queued.into_iter().enumerate() {
            assert_eq!(job.await.unwrap().unwrap(), n as u32);
        }
    }

    /// Records which thread entered which span, and keeps each thread's
    /// current span (what `Span::current` asks a subscriber for).
    #[derive(Clone, Default)]
    struct Entries {
        entered: Arc<std::sync::Mutex<Vec<(u64, String)>>>,
        current: Arc<std::sync::Mutex<Vec<(std::thread::ThreadId, u64)>>>,
        meta: Arc<std::sync::Mutex<Option<&'static tracing::Metadata<'static>>>>,
    }

    impl tracing::Subscriber for Entries {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            *self.meta.lock().unwrap() = Some(span.metadata());
            tracing::span::Id::from_u64(7)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, span: &tracing::span::Id) {
            let thread = std::thread::current();
            self.entered.lock().unwrap().push((span.into_u64(), thread.name().unwrap_or("").to_owned()));
            self.current.lock().unwrap().push((thread.id(), span.into_u64()));
        }
        fn exit(&self, _: &tracing::span::Id) {
            let me = std::thread::current().id();
            let mut current = self.current.lock().unwrap();
            if let Some(at) = current.iter().rposition(|(t, _)| *t == me) {
                current.remove(at);
            }
        }
        fn current_span(&self) -> tracing_core::span::Current {
            let me = std::thread::current().id();
            let current = self.current.lock().unwrap();
            match (current.iter().rev().find(|(t, _)| *t == me), *self.meta.lock().unwrap()) {
                (Some((_, id)), Some(meta)) => {
                    tracing_core::span::Current::new(tracing::span::Id::from_u64(*id), meta)
                }
                _ => tracing_core::span::Current::none(),
            }
        }
    }

    #[test]
    fn a_job_runs_in_the_span_it_was_submitted_in() {
        use tracing::Instrument;
        let pool = Pool::start("spanned", 1, || Ok(())).unwrap();
        let entries = Entries::default();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        tracing::subscriber::with_default(entries.clone(), || {
            let span = tracing::info_span!("backend.execute");
            runtime.block_on(pool.run(|_| ()).instrument(span)).unwrap();
        });
        let entered = entries.entered.lock().unwrap().clone();
        assert!(
            entered.contains(&(7, "spanned-0".to_owned())),
            "the worker did not enter the span: {entered:?}"
        );
    }

    #[test]
    fn a_worker_that_cannot_load_fails_the_start() {
        let error = Pool::<u32>::start("t", 2, || Err(LoadError::Model("no model".into()))).err().unwrap();
        assert_eq!(error.to_string(), "no model");
    }
}
