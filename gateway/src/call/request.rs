//! One request's use of one model: [`Call`] resolves the model, names the
//! operation on the server span, fixes the deadline, and runs jobs on the
//! model through the runner; [`Payload`] says what each task's job costs
//! and what it answers.

use std::sync::Arc;

use infergate_backends::{Event, Output, Task};
use infergate_otel::names::operations;
use tokio::time::Instant;

use super::outcome::{Outcome, Remember};
use super::payload::{Payload, Usage};
use crate::cache::{self, CacheStatus, FlightReader, Route, Tally};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::runner::{by, Cost, DispatchInfo, ModelHandle, Running};
use crate::state::{AppState, SharedState};
use crate::tenancy::{self, Meter, Ticket};

/// What a request does, for `gen_ai.operation.name` on its server span and
/// on its GenAI metrics. Operations the GenAI conventions lack
/// (`transcription`, `translation`, `moderation`, `infer`) use infergate's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Embeddings,
    Moderation,
    Ocr,
    /// KServe inference on a tensor model.
    Infer,
    /// KServe inference on an OCR model: `infer` on the span, `ocr` in the metrics.
    InferOcr,
    Transcription,
    /// Speech to English text (`/v1/audio/translations`).
    SpeechTranslation,
    /// Text translation (DeepL's `/v2/translate`).
    Translation,
}

impl Operation {
    /// `gen_ai.operation.name` on the server span.
    fn span_name(self) -> &'static str {
        match self {
            Operation::Infer | Operation::InferOcr => operations::INFER,
            other => other.metric_name(),
        }
    }

    /// The operation label of the model's GenAI metrics.
    fn metric_name(self) -> &'static str {
        match self {
            Operation::Chat => operations::CHAT,
            Operation::Embeddings => operations::EMBEDDINGS,
            Operation::Moderation => operations::MODERATION,
            Operation::Ocr | Operation::InferOcr => operations::OCR,
            Operation::Infer => operations::INFER,
            Operation::Transcription => operations::TRANSCRIPTION,
            Operation::SpeechTranslation | Operation::Translation => operations::TRANSLATION,
        }
    }

    /// What the tenant limits of such a request count, besides requests.
    fn meters(self) -> &'static [Meter] {
        match self {
            Operation::Chat | Operation::Embeddings => &[Meter::Tokens],
            Operation::Transcription | Operation::SpeechTranslation => &[Meter::AudioSeconds],
            Operation::Translation => &[Meter::Characters, Meter::Tokens],
            Operation::Moderation | Operation::Ocr | Operation::Infer | Operation::InferOcr => &[],
        }
    }

    /// What a request that names no model is told when none serves it.
    fn no_default(self) -> &'static str {
        match self {
            Operation::Moderation => "(default moderation model)",
            Operation::Ocr | Operation::InferOcr => "(default OCR model)",
            Operation::Translation => "(no chat model serves translation)",
            _ => "(default model)",
        }
    }
}

/// Name the operation and model on the server span (`gen_ai.operation.name`,
/// `gen_ai.request.model`); the handler's task runs inside that span.
fn name_on_span(operation: Operation, model: &str) {
    tracing::Span::current()
        .record("gen_ai.operation.name", operation.span_name())
        .record("gen_ai.request.model", model);
}

/// A job's answer and how the scheduler treated it.
#[derive(Debug)]
pub struct Answer<T> {
    pub output: T,
    pub dispatch: DispatchInfo,
    /// It came from the response cache or another request's job: no model
    /// work of this request's own (its usage is not this request's).
    pub served: bool,
}

/// One request's use of one model; see the module docs.
pub struct Call {
    state: SharedState,
    ctx: RequestContext,
    model: Arc<ModelHandle>,
    operation: Operation,
    /// When the answer (a stream's first token) is due; `None`: best effort.
    deadline: Option<Instant>,
    /// The tenant's admission on this model: later charges and usage.
    ticket: Ticket,
    /// What the model's response cache made of each job (cached models only).
    tally: Option<Arc<Tally>>,
}

impl Call {
    /// The model `name`d for `operation` (or, without a name, the first
    /// model serving `task`), checked to serve `task`. A named model is put
    /// on the server span before it is looked up, so a request for an
    /// unknown model still says which it asked for.
    ///
    /// The tenant is admitted here, once per request: its allow-list (a
    /// model it may not use is not found) and its limits.
    pub async fn open(
        state: &SharedState,
        ctx: RequestContext,
        name: Option<&str>,
        task: Task,
        operation: Operation,
    ) -> Result<Call, ApiError> {
        let model = match name {
            Some(name) => {
                name_on_span(operation, name);
                state.model_for(name, task)?
            }
            None => {
                let model = state
                    .default_model(task)
                    .ok_or_else(|| ApiError::ModelNotFound { model: operation.no_default().into() })?;
                name_on_span(operation, &model.name);
                model
            }
        };
        // An alias is what allow-lists and limits name; its drawn target is traced.
        let asked = name.unwrap_or(&model.name);
        if asked != model.name {
            tracing::Span::current().record("infergate.alias.target", model.name.as_str());
        }
        let mut ticket = match &ctx.policy {
            Some(policy) => tenancy::admit(&state.store, policy, asked, operation.meters()).await?,
            None => Ticket::unmetered(),
        };
        if let (Some(headers), Some(slot)) = (ticket.take_headers(), &ctx.rate_headers) {
            slot.set(headers);
        }
        let deadline = ctx.deadline(model.default_timeout);
        let tally = model.cache.as_ref().map(|_| Arc::default());
        Ok(Call { state: state.clone(), model: model.clone(), ctx, operation, deadline, ticket, tally })
    }

    /// The tenant's admission, for charges the call layer cannot see
    /// (characters translated).
    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// Price a job and charge the tenant its estimate.
    fn prepare<P: Payload>(&self, payload: P) -> Result<(infergate_backends::Request, Cost), ApiError> {
        let (request, cost) = payload.prepare(&self.model, &self.state.config.limits)?;
        if let Some(meter) = P::METER {
            self.ticket.charge(meter, cost.total);
        }
        Ok((request, cost))
    }

    /// The model this call runs on.
    pub fn model(&self) -> &Arc<ModelHandle> {
        &self.model
    }

    /// The request's context.
    pub fn ctx(&self) -> &RequestContext {
        &self.ctx
    }

    /// The gateway's state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// When the answer is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// What the response cache made of the request's jobs so far (`None`:
    /// the model has no cache, or no job ran).
    pub fn cache_status(&self) -> Option<CacheStatus> {
        self.tally.as_ref().and_then(|t| t.status())
    }

    /// The same, for after the call is consumed (speech).
    pub fn cache_tally(&self) -> Option<Arc<Tally>> {
        self.tally.clone()
    }

    /// Count the request as answered from the cache if every job was.
    pub(super) fn settle_cache(&self) {
        if self.cache_status().is_some_and(CacheStatus::served) {
            self.ticket.served_from_cache();
        }
    }

    /// Start counting the request's outcome: it is valid and reaches its
    /// model now (requests refused as invalid before this count nowhere).
    pub fn outcome(&self) -> Outcome {
        let remember = self.state.feedback.as_ref().map(|feedback| Remember {
            feedback: feedback.clone(),
            tenant: self.ctx.tenant.clone(),
            request_id: self.ctx.request_id.clone(),
            model: Arc::from(self.model.name.as_str()),
            operation: self.operation.metric_name(),
            content: None,
        });
        Outcome::new(
            &self.model.genai,
            self.operation.metric_name(),
            &self.ctx,
            self.deadline,
            self.ticket.clone(),
            remember,
        )
    }

    /// The whole request as one job: run it, then count the answer.
    ///
    /// The runner is awaited here directly rather than through [`job`]:
    /// every async level moves the futures below it once more (on the
    /// proxy path that was ~1,000 instructions of copying per request).
    pub async fn once<P: Payload>(&self, payload: P) -> Result<Answer<P::Output>, ApiError> {
        let input = self.keeps_content().then(|| payload.content()).flatten();
        let (request, cost) = self.prepare(payload)?;
        let mut outcome = self.outcome();
        if self.model.cache.is_some() {
            let answer =
                job::<P>(&self.model, &self.ctx, self.deadline, (request, cost), self.tally.as_deref())
                    .await?;
            P::record(&answer.output, &tracing::Span::current());
            if answer.served {
                self.ticket.served_from_cache();
                outcome.answered(None);
            } else {
                outcome.answered(P::usage(&answer.output).map(Usage::tokens));
            }
            return Ok(answer);
        }
        let mut running = self.model.submit(&self.ctx, self.deadline, request, cost).await?;
        let output = answer::<P>(&self.model, running.output(self.deadline).await?)?;
        let span = tracing::Span::current();
        P::record(&output, &span);
        self.capture_output::<P>(&output);
        if self.keeps_content() {
            outcome.keep(serde_json::json!({ "input": input, "output": P::output_content(&output) }));
        }
        outcome.answered(P::usage(&output).map(Usage::tokens));
        Ok(Answer { output, dispatch: running.dispatch, served: false })
    }

    /// Whether this request's answer is remembered with its content
    /// (feedback on, and the tenant's `capture_content`).
    pub(super) fn keeps_content(&self) -> bool {
        self.state.feedback.is_some() && self.ctx.policy.as_ref().is_some_and(|p| p.capture_content)
    }

    /// Capture `output` if its model records low-confidence answers and it is one.
    fn capture_output<P: Payload>(&self, output: &P::Output) {
        if self.model.capture.is_some() {
            if let Some((confidence, reason, content)) = P::confidence(output, self.model.flag_threshold) {
                self.capture(confidence, reason, content);
            }
        }
    }

    /// Record an answer of this call whose `confidence` (0-1, measured as
    /// `reason` says) is under the model's `capture.below`, for a sampled
    /// share of them; `content` (an object of `input` and `output`) only
    /// where the tenant allows content to be recorded.
    pub(super) fn capture(&self, confidence: f64, reason: &'static str, content: serde_json::Value) {
        let (Some(feedback), Some(capture)) = (&self.state.feedback, &self.model.capture) else { return };
        if !feedback.samples(capture, confidence) {
            return;
        }
        let mut event = serde_json::json!({
            "tenant": &*self.ctx.tenant,
            "request_id": &*self.ctx.request_id,
            "model": self.model.name,
            "operation": self.operation.metric_name(),
            "reason": reason,
            "confidence": confidence,
            "below": capture.below,
        });
        let allowed = self.ctx.policy.as_ref().is_some_and(|p| p.capture_content);
        if let (true, serde_json::Value::Object(content), serde_json::Value::Object(event)) =
            (allowed, content, &mut event)
        {
            event.extend(content);
        }
        feedback.record("low_confidence", event);
    }

    /// One of the request's jobs (several run at once for long audio and
    /// for many texts); the caller counts the answer with [`finish`].
    pub async fn run<P: Payload>(&self, payload: P) -> Result<Answer<P::Output>, ApiError> {
        let prepared = self.prepare(payload)?;
        job::<P>(&self.model, &self.ctx, self.deadline, prepared, self.tally.as_deref()).await
    }

    /// Submit a job and wait for its dispatch; its events follow on the
    /// returned [`Events`] (streams read them one by one). `relayed`: the
    /// model relays an upstream's chunks for it, which are not cached.
    pub(super) async fn submit<P: Payload>(&self, payload: P, relayed: bool) -> Result<Events, ApiError> {
        let prepared = self.prepare(payload)?;
        let Some(cache) = &self.model.cache else {
            let running = self.model.submit(&self.ctx, self.deadline, prepared.0, prepared.1).await?;
            return Ok(Events::Running(running));
        };
        let (status, route) = cache::route(cache, &self.model, &self.ctx, self.deadline, prepared, relayed);
        let tally = self.tally.as_deref();
        Ok(match route {
            Route::Direct((request, cost)) => {
                let mut running = self.model.submit(&self.ctx, self.deadline, request, cost).await?;
                running.dispatch.cache = Some(cache::settle(status, &running.dispatch, tally));
                Events::Running(running)
            }
            Route::Hit(entry) => {
                let dispatch = cache::hit_dispatch();
                cache::settle(status, &dispatch, tally);
                Events::Replay { events: entry.replay(), dispatch }
            }
            Route::Flight(reader) => {
                let mut dispatch = by(self.deadline, reader.dispatched()).await?;
                let status = cache::settle(status, &dispatch, tally);
                dispatch.cache = Some(status);
                Events::Flight { reader, dispatch, served: status.served() }
            }
        })
    }
}

/// A job's events, from whichever source the cache chose.
pub enum Events {
    /// The request's own job.
    Running(Running),
    /// A stored answer, replayed.
    Replay { events: std::collections::VecDeque<Event>, dispatch: DispatchInfo },
    /// A job in its own task (this request's, or one it joined).
    Flight { reader: FlightReader, dispatch: DispatchInfo, served: bool },
}

impl Events {
    pub fn dispatch(&self) -> DispatchInfo {
        match self {
            Events::Running(running) => running.dispatch,
            Events::Replay { dispatch, .. } | Events::Flight { dispatch, .. } => *dispatch,
        }
    }

    /// Whether the events come without a job of this request's own.
    pub fn served(&self) -> bool {
        match self {
            Events::Running(_) => false,
            Events::Replay { .. } => true,
            Events::Flight { served, .. } => *served,
        }
    }

    /// The next event.
    pub async fn next(&mut self) -> Result<Event, ApiError> {
        match self {
            Events::Running(running) => running.next().await,
            Events::Replay { events, .. } => events.pop_front().ok_or_else(|| ApiError::Internal {
                detail: "a replayed answer ended without a result".into(),
            }),
            Events::Flight { reader, .. } => reader.next().await,
        }
    }

    /// The next event, or `DeadlineExceeded` if none comes by `deadline`.
    pub async fn next_by(&mut self, deadline: Option<Instant>) -> Result<Event, ApiError> {
        by(deadline, self.next()).await
    }
}

/// Count a request's answer: its outcome, and its usage on the server span.
pub fn finish(outcome: Outcome, usage: Option<Usage>) {
    if let Some(usage) = usage {
        usage.record(&tracing::Span::current());
    }
    outcome.answered(usage.map(Usage::tokens));
}

/// Run one prepared job on `model` by `deadline`: submit, wait for the
/// output, check it is this task's, and let the model learn from it. A
/// model with a cache asks it first; `tally` collects what it said.
pub(super) async fn job<P: Payload>(
    model: &Arc<ModelHandle>,
    ctx: &RequestContext,
    deadline: Option<Instant>,
    prepared: (infergate_backends::Request, crate::runner::Cost),
    tally: Option<&Tally>,
) -> Result<Answer<P::Output>, ApiError> {
    let Some(cache) = &model.cache else { return direct::<P>(model, ctx, deadline, prepared).await };
    let (status, route) = cache::route(cache, model, ctx, deadline, prepared, false);
    let mut answer = match route {
        Route::Direct(prepared) => direct::<P>(model, ctx, deadline, prepared).await?,
        Route::Hit(entry) => {
            let output = P::output(entry.output.clone()).ok_or_else(|| other_task::<P>())?;
            Answer { output, dispatch: cache::hit_dispatch(), served: true }
        }
        Route::Flight(mut reader) => {
            let dispatch = by(deadline, reader.dispatched()).await?;
            let served = cache::resolve(status, &dispatch).served();
            let output = reader.output(deadline).await?;
            // Only the job's own request teaches the model its output sizes.
            let output = if served {
                P::output(output).ok_or_else(|| other_task::<P>())?
            } else {
                answer::<P>(model, output)?
            };
            Answer { output, dispatch, served }
        }
    };
    answer.dispatch.cache = Some(cache::settle(status, &answer.dispatch, tally));
    Ok(answer)
}

/// [`job`] without a cache.
async fn direct<P: Payload>(
    model: &ModelHandle,
    ctx: &RequestContext,
    deadline: Option<Instant>,
    (request, cost): (infergate_backends::Request, crate::runner::Cost),
) -> Result<Answer<P::Output>, ApiError> {
    let mut running = model.submit(ctx, deadline, request, cost).await?;
    let output = answer::<P>(model, running.output(deadline).await?)?;
    Ok(Answer { output, dispatch: running.dispatch, served: false })
}

fn other_task<P: Payload>() -> ApiError {
    ApiError::Internal { detail: format!("a {} backend returned another task's output", P::TASK) }
}

/// A job's output, checked to be this task's, after the model learnt from it.
fn answer<P: Payload>(model: &ModelHandle, output: Output) -> Result<P::Output, ApiError> {
    let output = P::output(output).ok_or_else(|| other_task::<P>())?;
    P::observe(&output, model);
    Ok(output)
}
