//! One request's use of one model: [`Call`] resolves the model, names the
//! operation on the server span, fixes the deadline, and runs jobs on the
//! model through the runner; [`Payload`] says what each task's job costs
//! and what it answers.

use std::sync::Arc;

use infergate_backends::{Output, Task};
use infergate_otel::names::operations;
use tokio::time::Instant;

use super::outcome::Outcome;
use super::payload::{Payload, Usage};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::runner::{Cost, DispatchInfo, ModelHandle, Running};
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
        let mut ticket = match &ctx.policy {
            Some(policy) => tenancy::admit(&state.store, policy, &model.name, operation.meters()).await?,
            None => Ticket::unmetered(),
        };
        if let (Some(headers), Some(slot)) = (ticket.take_headers(), &ctx.rate_headers) {
            slot.set(headers);
        }
        let deadline = ctx.deadline(model.default_timeout);
        Ok(Call { state: state.clone(), model: model.clone(), ctx, operation, deadline, ticket })
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

    /// Start counting the request's outcome: it is valid and reaches its
    /// model now (requests refused as invalid before this count nowhere).
    pub fn outcome(&self) -> Outcome {
        Outcome::new(
            &self.model.genai,
            self.operation.metric_name(),
            &self.ctx,
            self.deadline,
            self.ticket.clone(),
        )
    }

    /// The whole request as one job: run it, then count the answer.
    ///
    /// The runner is awaited here directly rather than through [`job`]:
    /// every async level moves the futures below it once more (on the
    /// proxy path that was ~1,000 instructions of copying per request).
    pub async fn once<P: Payload>(&self, payload: P) -> Result<Answer<P::Output>, ApiError> {
        let (request, cost) = self.prepare(payload)?;
        let outcome = self.outcome();
        let mut running = self.model.submit(&self.ctx, self.deadline, request, cost).await?;
        let output = answer::<P>(&self.model, running.output(self.deadline).await?)?;
        let span = tracing::Span::current();
        P::record(&output, &span);
        outcome.answered(P::usage(&output).map(Usage::tokens));
        Ok(Answer { output, dispatch: running.dispatch })
    }

    /// One of the request's jobs (several run at once for long audio and
    /// for many texts); the caller counts the answer with [`finish`].
    pub async fn run<P: Payload>(&self, payload: P) -> Result<Answer<P::Output>, ApiError> {
        let prepared = self.prepare(payload)?;
        job::<P>(&self.model, &self.ctx, self.deadline, prepared).await
    }

    /// Submit a job and wait for its dispatch; its events follow on the
    /// returned [`Running`] (streams read them one by one).
    pub(super) async fn submit<P: Payload>(&self, payload: P) -> Result<Running, ApiError> {
        let (request, cost) = self.prepare(payload)?;
        self.model.submit(&self.ctx, self.deadline, request, cost).await
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
/// output, check it is this task's, and let the model learn from it.
pub(super) async fn job<P: Payload>(
    model: &ModelHandle,
    ctx: &RequestContext,
    deadline: Option<Instant>,
    (request, cost): (infergate_backends::Request, crate::runner::Cost),
) -> Result<Answer<P::Output>, ApiError> {
    let mut running = model.submit(ctx, deadline, request, cost).await?;
    let output = answer::<P>(model, running.output(deadline).await?)?;
    Ok(Answer { output, dispatch: running.dispatch })
}

/// A job's output, checked to be this task's, after the model learnt from it.
fn answer<P: Payload>(model: &ModelHandle, output: Output) -> Result<P::Output, ApiError> {
    let output = P::output(output).ok_or_else(|| ApiError::Internal {
        detail: format!("a {} backend returned another task's output", P::TASK),
    })?;
    P::observe(&output, model);
    Ok(output)
}
