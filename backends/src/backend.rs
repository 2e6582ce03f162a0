//! The batch-oriented backend interface.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{BackendError, Output, Request, Task};

/// A streamed chunk of an upstream's answer: its JSON object as written,
/// and what the gateway needs to know to relay it without parsing it again.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub json: String,
    /// It has a `model` member (which the gateway renames).
    pub has_model: bool,
    /// It has a `usage` member.
    pub has_usage: bool,
    /// Its `choices` is an empty array (a usage-only chunk, when it has usage).
    pub no_choices: bool,
}

/// What a backend tells the waiting handler about one item.
#[derive(Debug, Clone)]
pub enum Event {
    /// A piece of generated text, in order (token streaming).
    Delta(String),
    /// A remote model's streamed chunk as the upstream sent it, relayed to
    /// the client with only the model name rewritten. Backends that send
    /// these send no `Delta`s.
    Chunk(Chunk),
    /// The item finished; no further events follow.
    Done(Output),
    /// The item failed; no further events follow.
    Failed(BackendError),
}

/// The channel an item's events go to. Unbounded so that one slow reader
/// never stalls the other members of its batch; an item's events are bounded
/// by its own token limit.
pub type EventSender = mpsc::UnboundedSender<Event>;

/// One job inside a batch.
#[derive(Debug)]
pub struct Item {
    pub request: Request,
    /// Cost in the model's unit, as the scheduler counted it.
    pub cost: f64,
    /// Cancelled when the client leaves or the deadline passes.
    pub cancel: CancellationToken,
    pub events: EventSender,
    /// When the answer (or a stream's first token) is due; remote backends
    /// pass it upstream and stop retrying past it.
    pub deadline: Option<std::time::Instant>,
    /// The request's span in the gateway (its `queue` span): remote
    /// backends parent their CLIENT spans here, so the upstream's work
    /// continues the client's trace.
    pub span: tracing::Span,
    /// What the client's request says that an upstream should hear too.
    pub forwarded: Forwarded,
}

/// `x-request-id`: the gateway's request id, returned to clients and passed
/// upstream so logs line up.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
/// `x-request-timeout`: the time a client gives a request; upstream, the
/// time it has left.
pub const REQUEST_TIMEOUT: http::HeaderName = http::HeaderName::from_static("x-request-timeout");

/// Request context a remote backend passes upstream.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// The gateway's request id, sent as `x-request-id` so upstream logs line up.
    pub request_id: Option<std::sync::Arc<str>>,
    /// The client's `traceparent`, `tracestate` and `baggage`, passed on as they came when
    /// infergate records no trace of its own (with tracing on, a CLIENT span's context goes
    /// instead).
    pub trace: Option<std::sync::Arc<[(http::HeaderName, http::HeaderValue)]>>,
}

impl Forwarded {
    /// The request id and the trace headers of a client's request.
    pub fn from_headers(request_id: &std::sync::Arc<str>, headers: &http::HeaderMap) -> Self {
        use infergate_otel::propagation::{BAGGAGE, TRACEPARENT, TRACESTATE};
        let trace = headers.contains_key(TRACEPARENT).then(|| {
            [TRACEPARENT, TRACESTATE, BAGGAGE]
                .into_iter()
                .filter_map(|name| {
                    let value = headers.get(&name)?.clone();
                    Some((name, value))
                })
                .collect()
        });
        Forwarded { request_id: Some(request_id.clone()), trace }
    }
}

impl Item {
    /// Whether work on the item should stop at the next safe point: its
    /// client left, or its deadline passed.
    pub fn stopped(&self) -> bool {
        self.cancel.is_cancelled() || self.deadline.is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// `Err(Cancelled)` once [`Item::stopped`].
    pub fn check(&self) -> Result<(), BackendError> {
        if self.stopped() {
            Err(BackendError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Send an event; a handler that has gone away is not an error.
    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Finish the item with an output.
    pub fn done(&self, output: Output) {
        self.send(Event::Done(output));
    }

    /// Finish the item with an error.
    pub fn fail(&self, error: BackendError) {
        self.send(Event::Failed(error));
    }
}

/// What a backend measured about one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchReport {
    pub items: usize,
    /// Wall time of the backend call, from start to the last item's end.
    pub elapsed: Duration,
}

/// Static facts about a model for `/v1/models` and KServe metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Who serves it, as shown in `owned_by`.
    pub owned_by: &'static str,
    /// The backend kind (`synthetic`, `onnxruntime`, ...).
    pub platform: &'static str,
    pub capabilities: Capabilities,
}

/// What a backend can do beyond serving its task, for the gateway to
/// decide by (rather than by its kind's name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Chat requests go upstream as the client sent them (an
    /// OpenAI-compatible server), so what infergate's own models refuse
    /// (tools, logprobs, several choices, image and audio parts) is the
    /// upstream's to judge.
    pub forwards_body: bool,
    /// Answers [`crate::Request::VoiceActivity`] with speech segments.
    pub voice_activity: bool,
    /// Constrains a chat answer to one JSON object when the request asks
    /// ([`crate::ChatRequest::json`]; OpenAI's `response_format`
    /// `json_object`).
    pub json_output: bool,
}

/// A model server: runs batches of jobs of one model.
///
/// Every item in the batch receives exactly one terminal event (`Done` or
/// `Failed`), optionally preceded by `Delta`s. A cancelled item may stop early
/// with `Failed(Cancelled)`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Facts for listings and metadata.
    fn info(&self) -> ModelInfo;

    /// Whether the backend can serve this task.
    fn supports(&self, task: Task) -> bool;

    /// Run one batch and report how long it took.
    async fn execute(&self, batch: Vec<Item>) -> BatchReport;

    /// Jobs the backend can run at once now, where that changes at run time
    /// (a remote model's healthy replicas × their concurrency). The
    /// scheduler runs no more batches than this, so excess work waits in
    /// the gateway's queue, where deadlines are known.
    fn capacity(&self) -> Option<usize> {
        None
    }

    /// Whether it can serve at all now: false for a remote model whose
    /// replicas are all out of rotation (jobs then go to its fallbacks).
    fn available(&self) -> bool {
        true
    }

    /// Whether a batch of one may run in its own request's task: true where
    /// dropping [`Backend::execute`]'s future stops the work it started (a
    /// request to a remote upstream is aborted), so a client that leaves
    /// never leaves work running that the scheduler no longer counts.
    fn runs_in_caller(&self) -> bool {
        false
    }

    /// A remote backend's replicas and its failover counters, for metrics.
    fn upstream_stats(&self) -> Option<UpstreamStats> {
        None
    }

    /// Step-wise generation, for backends that decode a running set one
    /// token at a time (continuous batching); `None` runs whole batches.
    fn generator(&self) -> Option<&dyn Generate> {
        None
    }
}

/// The state of a remote backend's replicas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamStats {
    /// `(base URL, in rotation, outstanding requests)` per replica.
    pub replicas: Vec<(String, bool, usize)>,
    /// Requests sent again to another replica, over the backend's life.
    pub retries: u64,
    /// `(reason, total)` ejections over the backend's life.
    pub ejections: Vec<(&'static str, u64)>,
}

/// What one decoding step did, reported back so the caller can decide who
/// joins at the next step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Sequences still running after the step.
    pub running: usize,
    /// KV-cache tokens the running sequences may grow to (prompt plus
    /// allowed output), which new joiners must fit beside.
    pub reserved: usize,
    /// Tokens processed: the joiners' prompts plus one per decoded sequence.
    pub tokens: usize,
    /// Sequences that took part in the step.
    pub sequences: usize,
    /// Wall time of the step.
    pub elapsed: Duration,
    /// Time spent on the joiners' prefill (their time to first token).
    pub prefill: Duration,
}

/// Continuous batching: each lane holds a running set of sequences that
/// decode together; new ones join at a step and finished ones leave, each
/// item getting its events as for [`Backend::execute`]. The caller decides
/// who joins (the scheduler), the backend only runs steps.
#[async_trait]
pub trait Generate: Send + Sync {
    /// Independent running sets (one per session).
    fn lanes(&self) -> usize;

    /// Most sequences one lane decodes together.
    fn max_sequences(&self) -> usize;

    /// KV-cache tokens one lane may hold.
    fn kv_budget(&self) -> usize;

    /// Add `join` to `lane`'s running set (prefill: each emits its first
    /// token), then decode one token for every running sequence.
    async fn step(&self, lane: usize, join: Vec<Item>) -> StepReport;
}
