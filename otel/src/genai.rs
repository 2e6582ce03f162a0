//! GenAI server metrics (OpenTelemetry GenAI semantic conventions, in
//! Prometheus form) and deadline outcomes (goodput).

use std::sync::{OnceLock, PoisonError, RwLock};

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

/// The GenAI and goodput metrics; clones share the families.
#[derive(Debug, Clone)]
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
    /// The families, registered in `registry` (by [`crate::Metrics::new`]).
    pub(crate) fn register(registry: &mut Registry) -> Self {
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

    /// A model's series, with its zero-valued outcome series created now.
    pub fn model(&self, model: &str, classes: &[&'static str]) -> ModelGenAi {
        let outcomes = classes
            .iter()
            .map(|class| {
                let counter = |outcome: &str| {
                    let labels = OutcomeLabels {
                        model: model.into(),
                        class: (*class).into(),
                        outcome: outcome.into(),
                    };
                    let counter = self.outcomes.get_or_create(&labels).clone();
                    counter.inc_by(0);
                    counter
                };
                (*class, OUTCOMES.map(counter))
            })
            .collect();
        ModelGenAi {
            model: model.to_owned(),
            families: self.clone(),
            outcomes,
            tokens: [OnceLock::new(), OnceLock::new()],
            operations: RwLock::new(Vec::new()),
        }
    }
}

/// One model's GenAI series, each looked up in its family once: a lookup
/// builds and hashes the label strings under a lock, several times a
/// request otherwise.
#[derive(Debug)]
pub struct ModelGenAi {
    model: String,
    families: GenAiMetrics,
    /// Per class, the counters of [`OUTCOMES`] in order.
    outcomes: Vec<(&'static str, [Counter; 3])>,
    /// Input and output tokens, created at the first count.
    tokens: [OnceLock<Counter>; 2],
    operations: RwLock<Vec<(&'static str, OperationSeries)>>,
}

/// The latency histograms of one operation on one model; clones share them.
#[derive(Debug, Clone)]
pub struct OperationSeries {
    pub request_duration: Histogram,
    pub time_to_first_token: Histogram,
    pub time_per_output_token: Histogram,
}

impl ModelGenAi {
    /// Count one deadline outcome (one of [`OUTCOMES`]).
    pub fn outcome(&self, class: &str, outcome: &str) {
        let known =
            self.outcomes.iter().find(|(c, _)| *c == class).zip(OUTCOMES.iter().position(|o| *o == outcome));
        match known {
            Some(((_, counters), i)) => {
                counters[i].inc();
            }
            None => {
                let labels =
                    OutcomeLabels { model: self.model.clone(), class: class.into(), outcome: outcome.into() };
                self.families.outcomes.get_or_create(&labels).inc();
            }
        }
    }

    /// Count tokens of one request.
    pub fn tokens(&self, input: u32, output: u32) {
        for ((kind, n), slot) in [("input", input), ("output", output)].into_iter().zip(&self.tokens) {
            if n > 0 {
                let counter = slot.get_or_init(|| {
                    let labels = TokenLabels {
                        gen_ai_request_model: self.model.clone(),
                        gen_ai_token_type: kind.into(),
                    };
                    self.families.tokens.get_or_create(&labels).clone()
                });
                counter.inc_by(u64::from(n));
            }
        }
    }

    /// The histograms of `operation`, created at its first request.
    pub fn operation(&self, operation: &'static str) -> OperationSeries {
        let known = |list: &[(&'static str, OperationSeries)]| {
            list.iter().find(|(op, _)| *op == operation).map(|(_, series)| series.clone())
        };
        if let Some(series) = known(&self.operations.read().unwrap_or_else(PoisonError::into_inner)) {
            return series;
        }
        let mut list = self.operations.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = known(&list) {
            return series;
        }
        let labels = OperationLabels {
            gen_ai_operation_name: operation.into(),
            gen_ai_request_model: self.model.clone(),
        };
        let series = OperationSeries {
            request_duration: self.families.request_duration.get_or_create(&labels).clone(),
            time_to_first_token: self.families.time_to_first_token.get_or_create(&labels).clone(),
            time_per_output_token: self.families.time_per_output_token.get_or_create(&labels).clone(),
        };
        list.push((operation, series.clone()));
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_cached_series_are_the_families_series() {
        let mut registry = Registry::default();
        let families = GenAiMetrics::register(&mut registry);
        let model = families.model("m", &["interactive", "batch"]);
        let outcome = |class: &str, outcome: &str| {
            let labels = OutcomeLabels { model: "m".into(), class: class.into(), outcome: outcome.into() };
            families.outcomes.get_or_create(&labels).get()
        };
        model.outcome("batch", "late");
        model.outcome("batch", "late");
        model.outcome("standard", "missed"); // not cached: still counted
        assert_eq!((outcome("batch", "late"), outcome("standard", "missed")), (2, 1));
        assert_eq!(outcome("interactive", "on_time"), 0);

        let tokens = |kind: &str| {
            let labels = TokenLabels { gen_ai_request_model: "m".into(), gen_ai_token_type: kind.into() };
            families.tokens.get_or_create(&labels).get()
        };
        model.tokens(7, 0);
        model.tokens(1, 3);
        assert_eq!((tokens("input"), tokens("output")), (8, 3));

        model.operation("chat").request_duration.observe(0.5);
        model.operation("chat").request_duration.observe(0.5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let count = text
            .lines()
            .find(|l| {
                l.contains("request_duration_seconds_count") && l.contains("gen_ai_operation_name=\"chat\"")
            })
            .unwrap_or_default();
        assert!(count.ends_with(" 2"), "{count}");
    }
}
