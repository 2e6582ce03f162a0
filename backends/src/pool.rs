//! Worker threads that each own a model's sessions (ONNX Runtime) or
//! decoding state (whisper.cpp).
//!
//! `ort`'s `Session::run` takes `&mut self`, and inference is CPU work that
//! must stay off the async runtime: each worker thread builds its own state
//! (sessions, tokenizer) once and runs whole batches on it. The gateway's
//! scheduler bounds how many batches are outstanding, so the job channel
//! holds at most that many.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::BackendError;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A pool of worker threads, each with its own `S`.
pub(crate) struct Pool<S> {
    /// Jobs for whichever worker is free.
    jobs: crossbeam_channel::Sender<Job<S>>,
    /// Jobs for one worker: its state carries over between them (the
    /// running set of a continuous batch).
    own: Vec<crossbeam_channel::Sender<Job<S>>>,
}

impl<S: 'static> Pool<S> {
    /// Start `workers` threads, each building its state with `make`; returns
    /// when all are ready, or with the first one's error.
    pub(crate) fn start(
        name: &str,
        workers: usize,
        make: impl Fn() -> Result<S, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job<S>>();
        let (ready, loaded) = std::sync::mpsc::channel::<Result<(), String>>();
        let make = Arc::new(make);
        let mut own = Vec::with_capacity(workers.max(1));
        for i in 0..workers.max(1) {
            let queue = queue.clone();
            let (mine, my_queue) = crossbeam_channel::unbounded::<Job<S>>();
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
                        let Ok(job) = job else { break };
                        // A panicking job fails its own items (their senders
                        // drop); the worker and its sessions carry on.
                        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut state))).is_err() {
                            tracing::error!(worker = i, "inference job panicked");
                        }
                    }
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        drop(ready);
        for _ in 0..workers.max(1) {
            loaded.recv().map_err(|_| "a worker stopped while loading".to_owned())??;
        }
        Ok(Pool { jobs, own })
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
        self.submit(&self.jobs, job).await
    }

    /// Run `job` on worker `index` (modulo the pool's size), after the jobs
    /// already waiting for it.
    pub(crate) async fn run_on<R: Send + 'static>(
        &self,
        index: usize,
        job: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, BackendError> {
        self.submit(&self.own[index % self.own.len()], job).await
    }

    async fn submit<R: Send + 'static>(
        &self,
        queue: &crossbeam_channel::Sender<Job<S>>,
        job: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, BackendError> {
        let (done, result) = tokio::sync::oneshot::channel();
        queue
            .send(Box::new(move |state| {
                let _ = done.send(job(state));
            }))
            .map_err(|_| BackendError::Failed("inference workers stopped".into()))?;
        result.await.map_err(|_| BackendError::Failed("inference job failed".into()))
    }
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

    #[test]
    fn a_worker_that_cannot_load_fails_the_start() {
        let error = Pool::<u32>::start("t", 2, || Err("no model".into())).err().unwrap();
        assert_eq!(error, "no model");
    }
}
