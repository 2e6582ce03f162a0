//! How each request ended, for the GenAI metrics and goodput.
//!
//! The call layer creates an [`Outcome`] once a request is valid and about
//! to reach its model; it records the request's duration and, for requests
//! with a deadline, whether the answer (the first token, for streams) came
//! in time. Dropped without success — an error, a refusal, a client that
//! left — it counts as a missed deadline.

use std::sync::Arc;

use infergate_otel::genai::{ModelGenAi, OperationSeries};
use tokio::time::Instant;

use crate::context::RequestContext;
use crate::tenancy::Ticket;

/// One request's accounting; see the module docs.
pub struct Outcome {
    series: Arc<ModelGenAi>,
    operation: OperationSeries,
    class: &'static str,
    received: Instant,
    deadline: Option<Instant>,
    /// The deadline event (answer or first token) was reached.
    settled: bool,
    /// The tenant's admission: corrected from the usage, metered.
    ticket: Ticket,
    /// Where the answer is remembered for feedback (`[feedback]` set).
    remember: Option<Remember>,
}

/// What [`Outcome`] needs to remember an answer for feedback.
pub struct Remember {
    pub feedback: Arc<crate::feedback::Feedback>,
    pub tenant: Arc<str>,
    pub request_id: Arc<str>,
    pub model: Arc<str>,
    pub operation: &'static str,
    /// The answer's input and output, for a tenant with `capture_content`.
    pub content: Option<serde_json::Value>,
}

impl Outcome {
    /// `series` is the model's ([`ModelHandle::genai`](crate::runner::ModelHandle)).
    pub fn new(
        series: &Arc<ModelGenAi>,
        operation: &'static str,
        ctx: &RequestContext,
        deadline: Option<Instant>,
        ticket: Ticket,
        remember: Option<Remember>,
    ) -> Self {
        Outcome {
            remember,
            operation: series.operation(operation),
            series: series.clone(),
            class: ctx.class.as_str(),
            received: ctx.received,
            deadline,
            settled: false,
            ticket,
        }
    }

    /// The deadline event happened now: an answer, or a stream's first token.
    fn settle(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        if let Some(deadline) = self.deadline {
            let outcome = if Instant::now() <= deadline { "on_time" } else { "late" };
            self.series.outcome(self.class, outcome);
        }
    }

    /// A complete answer; `tokens` are (input, output) where known.
    pub fn answered(mut self, tokens: Option<(u32, u32)>) {
        self.settle();
        if let Some(r) = self.remember.take() {
            r.feedback.remember(&r.tenant, &r.request_id, &r.model, r.operation, r.content);
        }
        self.operation.request_duration.observe(self.received.elapsed().as_secs_f64());
        self.ticket.answered(tokens);
        if let Some((input, output)) = tokens {
            self.series.tokens(input, output);
        }
    }

    /// A complete answer from the response cache or another request's job:
    /// a request, without tokens of its own.
    pub fn served(self) {
        self.ticket.served_from_cache();
        self.answered(None);
    }

    /// Keep the answer's `content` (`{"input", "output"}`) with it for
    /// feedback; the caller checks that the tenant allows it.
    pub fn keep(&mut self, content: serde_json::Value) {
        if let Some(r) = &mut self.remember {
            r.content = Some(content);
        }
    }

    /// A stream's first token arrived.
    pub fn first_token(&mut self) {
        self.settle();
        self.operation.time_to_first_token.observe(self.received.elapsed().as_secs_f64());
    }

    /// A stream finished with `output` tokens.
    pub fn stream_done(self, input: u32, output: u32, first_token_at: f64) {
        let total = self.received.elapsed().as_secs_f64();
        if output > 1 {
            let per_token = (total - first_token_at).max(0.0) / f64::from(output - 1);
            self.operation.time_per_output_token.observe(per_token);
        }
        self.answered(Some((input, output)));
    }

    /// Seconds since the request arrived.
    pub fn elapsed(&self) -> f64 {
        self.received.elapsed().as_secs_f64()
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.settled && self.deadline.is_some() {
            self.series.outcome(self.class, "missed");
        }
    }
}
