//! How each request ended, for the GenAI metrics and goodput.
//!
//! A handler creates an [`Outcome`] once it knows the model; it records the
//! request's duration and, for requests with a deadline, whether the answer
//! (the first token, for streams) came in time. Dropped without success — an
//! error, a refusal, a client that left — it counts as a missed deadline.

use std::sync::Arc;

use infergate_otel::genai::GenAiMetrics;
use infergate_otel::Metrics;
use tokio::time::Instant;

use crate::context::RequestContext;

/// One request's accounting; see the module docs.
pub struct Outcome {
    metrics: Arc<Metrics>,
    model: String,
    operation: &'static str,
    class: &'static str,
    received: Instant,
    deadline: Option<Instant>,
    /// The deadline event (answer or first token) was reached.
    settled: bool,
}

impl Outcome {
    pub fn new(
        metrics: &Arc<Metrics>,
        model: &str,
        operation: &'static str,
        ctx: &RequestContext,
        deadline: Option<Instant>,
    ) -> Self {
        Outcome {
            metrics: metrics.clone(),
            model: model.to_owned(),
            operation,
            class: ctx.class.as_str(),
            received: ctx.received,
            deadline,
            settled: false,
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
            self.metrics.genai.outcome(&self.model, self.class, outcome);
        }
    }

    /// A complete answer; `tokens` are (input, output) where known.
    pub fn answered(mut self, tokens: Option<(u32, u32)>) {
        self.settle();
        let labels = GenAiMetrics::labels(self.operation, &self.model);
        let seconds = self.received.elapsed().as_secs_f64();
        self.metrics.genai.request_duration.get_or_create(&labels).observe(seconds);
        if let Some((input, output)) = tokens {
            self.metrics.genai.tokens(&self.model, input, output);
        }
    }

    /// A stream's first token arrived.
    pub fn first_token(&mut self) {
        self.settle();
        let labels = GenAiMetrics::labels(self.operation, &self.model);
        let seconds = self.received.elapsed().as_secs_f64();
        self.metrics.genai.time_to_first_token.get_or_create(&labels).observe(seconds);
    }

    /// A stream finished with `output` tokens.
    pub fn stream_done(self, input: u32, output: u32, first_token_at: f64) {
        let labels = GenAiMetrics::labels(self.operation, &self.model);
        let total = self.received.elapsed().as_secs_f64();
        if output > 1 {
            let per_token = (total - first_token_at).max(0.0) / f64::from(output - 1);
            self.metrics.genai.time_per_output_token.get_or_create(&labels).observe(per_token);
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
            self.metrics.genai.outcome(&self.model, self.class, "missed");
        }
    }
}
