//! GenAI server metrics (OpenTelemetry GenAI semantic conventions, in
//! Prometheus form) and deadline outcomes (goodput).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::names;

/// `gen_ai.server.request.duration` buckets from the conventions.
const REQUEST_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// `gen_ai.server.time_to_first_token` buckets from the conventions.
const TTFT_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// `gen_ai.server.time_per_output_token` buckets from the conventions.
const TPOT_BUCKETS: [f64; 13] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];

/// `gen_ai.operation.name` and `gen_ai.request.model`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub gen_ai_operation_name: String,
    pub gen_ai_request_model: String,
}

/// Tokens by `gen_ai.token.type` (`input` or `output`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub gen_ai_request_model: String,
    pub gen_ai_token_type: String,
}

/// How a request with a deadline ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub model: String,
    pub class: String,
    /// `on_time`, `late` (answered after the deadline), `missed` (deadline
    /// passed before an answer: 504, dropped, refused as infeasible).
    pub outcome: String,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

fn tpot_histogram() -> Histogram {
    Histogram::new(TPOT_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The GenAI and goodput metrics.
pub struct GenAiMetrics {
    pub request_duration: Histograms<OperationLabels>,
    pub time_to_first_token: Histograms<OperationLabels>,
    pub time_per_output_token: Histograms<OperationLabels>,
    pub tokens: Family<TokenLabels, Counter>,
    pub outcomes: Family<OutcomeLabels, Counter>,
}

/// Every deadline outcome label, for zero-valued series.
pub const OUTCOMES: [&str; 3] = ["on_time", "late", "missed"];

impl GenAiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = GenAiMetrics {
            request_duration: Family::new_with_constructor(request_histogram as fn() -> Histogram),
            time_to_first_token: Family::new_with_constructor(ttft_histogram as fn() -> Histogram),
            time_per_output_token: Family::new_with_constructor(tpot_histogram as fn() -> Histogram),
            tokens: Family::default(),
            outcomes: Family::default(),
        };
        registry.register(
            names::GENAI_REQUEST_DURATION,
            "GenAI server request duration",
            m.request_duration.clone(),
        );
        registry.register(
            names::GENAI_TTFT,
            "Time to the first generated token",
            m.time_to_first_token.clone(),
        );
        registry.register(
            names::GENAI_TPOT,
            "Time per generated token after the first",
            m.time_per_output_token.clone(),
        );
        registry.register(names::GENAI_TOKENS, "Tokens processed, by type", m.tokens.clone());
        registry.register(
            names::DEADLINE_OUTCOMES,
            "Requests with a deadline, by outcome",
            m.outcomes.clone(),
        );
        m
    }

    /// Create the zero-valued outcome series of a model.
    pub fn register_model(&self, model: &str, classes: &[&str]) {
        for class in classes {
            for outcome in OUTCOMES {
                let labels =
                    OutcomeLabels { model: model.into(), class: (*class).into(), outcome: outcome.into() };
                self.outcomes.get_or_create(&labels).inc_by(0);
            }
        }
    }

    /// Count one deadline outcome.
    pub fn outcome(&self, model: &str, class: &str, outcome: &str) {
        let labels = OutcomeLabels { model: model.into(), class: class.into(), outcome: outcome.into() };
        self.outcomes.get_or_create(&labels).inc();
    }

    /// Count tokens of one request.
    pub fn tokens(&self, model: &str, input: u32, output: u32) {
        for (kind, n) in [("input", input), ("output", output)] {
            if n > 0 {
                let labels =
                    TokenLabels { gen_ai_request_model: model.into(), gen_ai_token_type: kind.into() };
                self.tokens.get_or_create(&labels).inc_by(u64::from(n));
            }
        }
    }

    pub fn labels(operation: &str, model: &str) -> OperationLabels {
        OperationLabels { gen_ai_operation_name: operation.into(), gen_ai_request_model: model.into() }
    }
}
