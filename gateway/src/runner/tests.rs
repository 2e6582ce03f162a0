//! The shared scheduler with a backend that runs only when the test lets it:
//! batches run in their request's task or on their own, a request that
//! leaves frees its worker, and a finished batch dispatches the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use infergate_backends::{
    Backend, BatchReport, EmbeddingsOutput, EmbeddingsRequest, Item, ModelInfo, Output, Request, Task,
};
use infergate_otel::Metrics;
use infergate_scheduler::Class;
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};

use super::{Cost, ModelHandle, Running};
use crate::config::Config;
use crate::context::{DeadlineSpec, RequestContext};
use crate::error::ApiError;

/// Answers each batch once the test adds a permit; counts batches that
/// started and ended (finished or dropped).
struct Gate {
    in_caller: bool,
    open: Semaphore,
    started: AtomicUsize,
    ended: Arc<AtomicUsize>,
}

impl Gate {
    fn new(in_caller: bool) -> Arc<Self> {
        Arc::new(Gate {
            in_caller,
            open: Semaphore::new(0),
            started: AtomicUsize::new(0),
            ended: Arc::default(),
        })
    }
}

struct CountOnDrop(Arc<AtomicUsize>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Backend for Gate {
    fn info(&self) -> ModelInfo {
        ModelInfo { owned_by: "test", platform: "gate", capabilities: Default::default() }
    }

    fn supports(&self, _: Task) -> bool {
        true
    }

    fn runs_in_caller(&self) -> bool {
        self.in_caller
    }

    async fn execute(&self, batch: Vec<Item>) -> BatchReport {
        let start = std::time::Instant::now();
        self.started.fetch_add(1, Ordering::SeqCst);
        let _ended = CountOnDrop(self.ended.clone());
        if let Ok(permit) = self.open.acquire().await {
            permit.forget();
        }
        for item in &batch {
            item.done(Output::Embeddings(EmbeddingsOutput { vectors: Vec::new(), prompt_tokens: 0 }));
        }
        BatchReport { items: batch.len(), elapsed: start.elapsed() }
    }
}

/// A model that runs one batch of one at a time.
fn model(gate: Arc<Gate>) -> ModelHandle {
    model_with(gate, "{ max_size = 1 }")
}

fn model_with(gate: Arc<Gate>, batch: &str) -> ModelHandle {
    let config = Config::from_toml(
        &format!(
            r#"
            [auth]
            anonymous_tenant = "t"
            [[tenants]]
            name = "t"
            [[models]]
            name = "m"
            task = "embeddings"
            concurrency = 1
            batch = {batch}
            backend = {{ kind = "synthetic" }}
            "#
        ),
        Vec::new(),
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    ModelHandle::spawn(&config.models[0], &config.scheduler, gate, metrics, Duration::from_secs(30))
}

async fn submit(model: &ModelHandle) -> Result<Running, ApiError> {
    let ctx = RequestContext {
        request_id: Arc::from("r"),
        tenant: Arc::from("t"),
        class: Class::Standard,
        deadline: DeadlineSpec::BestEffort,
        received: Instant::now(),
        forwarded: Default::default(),
        policy: None,
        rate_headers: None,
        cache_control: Default::default(),
    };
    let request = Request::Embeddings(EmbeddingsRequest { inputs: Vec::new(), dimensions: None });
    model.submit(&ctx, None, request, Cost::whole(1.0, 1)).await
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_finished_batch_dispatches_the_next_whether_it_ran_in_its_request_or_on_its_own() {
    for in_caller in [true, false] {
        let gate = Gate::new(in_caller);
        let model = Arc::new(model(gate.clone()));
        let mut first = submit(&model).await.unwrap();
        assert_eq!(first.dispatch.position, 0, "a free worker takes it at once");
        // The worker is busy: the second waits in the queue.
        let queued = tokio::spawn({
            let model = model.clone();
            async move { submit(&model).await?.output(None).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!queued.is_finished(), "in_caller={in_caller}: dispatched while the worker was busy");

        gate.open.add_permits(2);
        timeout(WAIT, first.output(None)).await.unwrap().unwrap();
        timeout(WAIT, queued).await.unwrap().unwrap().unwrap();
        assert_eq!(gate.started.load(Ordering::SeqCst), 2, "in_caller={in_caller}");
        assert_eq!(gate.ended.load(Ordering::SeqCst), 2, "in_caller={in_caller}");
    }
}

#[tokio::test]
async fn a_request_that_leaves_while_its_batch_runs_in_its_task_stops_it_and_frees_the_worker() {
    let gate = Gate::new(true);
    let model = Arc::new(model(gate.clone()));
    let mut first = submit(&model).await.unwrap();
    // Nothing runs until the request's task polls it.
    assert_eq!(gate.started.load(Ordering::SeqCst), 0);
    let leaving = tokio::spawn(async move { first.next().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(gate.started.load(Ordering::SeqCst), 1, "polling the request runs its batch");

    let queued = tokio::spawn({
        let model = model.clone();
        async move { submit(&model).await?.output(None).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!queued.is_finished());

    // The client leaves: its batch stops, and the queued request gets the worker.
    leaving.abort();
    let _ = leaving.await;
    assert_eq!(gate.ended.load(Ordering::SeqCst), 1, "dropping the request stops its batch");
    gate.open.add_permits(1);
    timeout(WAIT, queued).await.unwrap().unwrap().unwrap();
    assert_eq!(gate.started.load(Ordering::SeqCst), 2);
}

/// CPU time of the calling thread, from `/proc` (clock ticks, 10 ms here).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn a_job_waiting_for_company_is_dispatched_at_the_batching_delay_without_busy_waiting() {
    // The test's runtime is one thread: the timer task runs on it too.
    let gate = Gate::new(false);
    gate.open.add_permits(1);
    let model = model_with(gate.clone(), r#"{ max_size = 4, max_delay = "600ms" }"#);
    let before = (thread_cpu_ticks(), std::time::Instant::now());
    let mut running = timeout(WAIT, submit(&model)).await.unwrap().unwrap();
    let (ticks, waited) = (thread_cpu_ticks() - before.0, before.1.elapsed());
    assert!(waited >= Duration::from_millis(550), "dispatched after {waited:?}, before the delay");
    assert_eq!(running.dispatch.batch_size, 1);
    // A timer task that woke itself in a loop would burn the whole 600 ms.
    assert!(ticks < 20, "the wait took {ticks} ticks of CPU");
    timeout(WAIT, running.output(None)).await.unwrap().unwrap();
}
