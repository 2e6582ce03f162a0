//! The Prometheus registry behind `/metrics`; OTLP metric export reads the
//! same registry ([`crate::otlp_metrics`]), so both always agree.
//!
//! Label values are low-cardinality by construction: methods, route
//! templates, status codes, model names and replica URLs from config (or
//! DNS discovery), tenant classes and reason and outcome enums.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::genai::GenAiMetrics;
use crate::labels::{FallbackLabels, ModelLabels, ReasonLabels, ReplicaLabels, RequestLabels, TraceLabels};
use crate::names;

/// Buckets for `http.server.request.duration`: the HTTP semantic conventions'
/// advisory buckets, with four below their 5 ms so that refusals (answered
/// in well under a millisecond) can be told apart from work.
pub const HTTP_DURATION_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0,
];

/// Buckets for batch sizes.
const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_DURATION_BUCKETS)
}

fn http_exemplar_histogram() -> HistogramWithExemplars<TraceLabels> {
    HistogramWithExemplars::new(HTTP_DURATION_BUCKETS.into_iter())
}

fn batch_histogram() -> Histogram {
    Histogram::new(BATCH_SIZE_BUCKETS)
}

/// Every metric the gateway exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    pub http_duration: Family<
        RequestLabels,
        HistogramWithExemplars<TraceLabels>,
        fn() -> HistogramWithExemplars<TraceLabels>,
    >,
    pub in_flight: Gauge,
    pub queue_depth: Family<ModelLabels, Gauge>,
    pub queue_wait: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub batch_size: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub backend_duration: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub prediction_error: Family<ModelLabels, Gauge<f64, AtomicU64>>,
    pub rejections: Family<ReasonLabels, Counter>,
    pub fallbacks: Family<FallbackLabels, Counter>,
    pub upstream_up: Family<ReplicaLabels, Gauge>,
    pub upstream_outstanding: Family<ReplicaLabels, Gauge>,
    pub upstream_retries: Family<ModelLabels, Counter>,
    pub upstream_ejections: Family<ReasonLabels, Counter>,
    pub genai: GenAiMetrics,
    pub tenants: crate::tenants::TenantMetrics,
    pub cache: crate::cache::CacheMetrics,
    pub feedback: crate::cache::FeedbackMetrics,
    pub pool: crate::pool::PoolMetrics,
}

impl Metrics {
    /// A registry with every metric registered and nothing recorded.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_duration = Family::new_with_constructor(
            http_exemplar_histogram as fn() -> HistogramWithExemplars<TraceLabels>,
        );
        let in_flight = Gauge::default();
        let queue_depth = Family::default();
        let queue_wait = Family::new_with_constructor(http_histogram as fn() -> Histogram);
        let batch_size = Family::new_with_constructor(batch_histogram as fn() -> Histogram);
        let backend_duration = Family::new_with_constructor(http_histogram as fn() -> Histogram);
        let rejections = Family::default();
        let prediction_error = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            names::HTTP_SERVER_REQUEST_DURATION,
            "Duration of HTTP server requests",
            http_duration.clone(),
        );
        registry.register(names::REQUESTS_IN_FLIGHT, "HTTP requests being served", in_flight.clone());
        registry.register(names::QUEUE_DEPTH, "Jobs waiting in a model's queue", queue_depth.clone());
        registry.register(names::QUEUE_WAIT, "Time jobs waited before dispatch", queue_wait.clone());
        registry.register(names::BATCH_SIZE, "Jobs per backend call", batch_size.clone());
        registry.register(
            names::BACKEND_EXECUTE_DURATION,
            "Backend batch execution time",
            backend_duration.clone(),
        );
        registry.register(
            names::LATENCY_PREDICTION_ERROR,
            "Mean relative error of the scheduler's recent batch latency predictions",
            prediction_error.clone(),
        );
        registry.register(
            names::SCHEDULER_REJECTIONS,
            "Jobs refused or dropped before running, by reason",
            rejections.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            names::FALLBACKS,
            "Jobs a model could not take that one of its fallbacks ran, by fallback and reason",
            fallbacks.clone(),
        );
        registry.register(
            names::TELEMETRY_ITEMS,
            "Spans, log records and metric points exported or lost, by signal and outcome",
            crate::queue::EXPORT_STATS.clone(),
        );
        let upstream_up = Family::<ReplicaLabels, Gauge>::default();
        let upstream_outstanding = Family::<ReplicaLabels, Gauge>::default();
        let upstream_retries = Family::<ModelLabels, Counter>::default();
        let upstream_ejections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            names::UPSTREAM_REPLICA_UP,
            "Remote model replicas in rotation (1) or ejected (0)",
            upstream_up.clone(),
        );
        registry.register(
            names::UPSTREAM_OUTSTANDING,
            "Requests outstanding at each remote replica",
            upstream_outstanding.clone(),
        );
        registry.register(
            names::UPSTREAM_RETRIES,
            "Requests retried on another replica before their first response byte",
            upstream_retries.clone(),
        );
        registry.register(
            names::UPSTREAM_EJECTIONS,
            "Remote replicas taken out of rotation, by reason",
            upstream_ejections.clone(),
        );
        let genai = GenAiMetrics::register(&mut registry);
        let tenants = crate::tenants::TenantMetrics::register(&mut registry);
        let cache = crate::cache::CacheMetrics::register(&mut registry);
        let feedback = crate::cache::FeedbackMetrics::register(&mut registry);
        let pool = crate::pool::PoolMetrics::register(&mut registry);
        Metrics {
            tenants,
            cache,
            feedback,
            pool,
            upstream_up,
            upstream_outstanding,
            upstream_retries,
            upstream_ejections,
            genai,
            registry,
            http_duration,
            in_flight,
            queue_depth,
            queue_wait,
            batch_size,
            backend_duration,
            prediction_error,
            rejections,
            fallbacks,
        }
    }

    /// Create the zero-valued series of a model so they exist before any traffic.
    pub fn register_model(&self, model: &str, reasons: &[&str]) {
        let labels = ModelLabels { model: model.to_owned() };
        self.queue_depth.get_or_create(&labels).set(0);
        for reason in reasons {
            let labels = ReasonLabels { model: model.to_owned(), reason: (*reason).to_owned() };
            self.rejections.get_or_create(&labels).inc_by(0);
        }
    }

    /// Bring a remote model's replica gauges and failover counters up to
    /// date: `replicas` are `(base URL, in rotation, outstanding)`, `gone`
    /// the replicas that left its set, `retries` and `ejections` totals.
    pub fn publish_upstream(
        &self,
        model: &str,
        replicas: &[(String, bool, usize)],
        gone: &[String],
        retries: u64,
        ejections: &[(&str, u64)],
    ) {
        let at = |replica: &str| ReplicaLabels { model: model.to_owned(), replica: replica.to_owned() };
        for (replica, up, outstanding) in replicas {
            self.upstream_up.get_or_create(&at(replica)).set(i64::from(*up));
            self.upstream_outstanding.get_or_create(&at(replica)).set(*outstanding as i64);
        }
        for replica in gone {
            self.upstream_up.remove(&at(replica));
            self.upstream_outstanding.remove(&at(replica));
        }
        let counter = self.upstream_retries.get_or_create(&Self::model(model));
        counter.inc_by(retries.saturating_sub(counter.get()));
        for (reason, total) in ejections {
            let labels = ReasonLabels { model: model.to_owned(), reason: (*reason).to_owned() };
            let counter = self.upstream_ejections.get_or_create(&labels);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Count a job that was refused or dropped.
    pub fn reject(&self, model: &str, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabels { model: model.to_owned(), reason: reason.to_owned() })
            .inc();
    }

    /// Count a job `model` could not take (`reason`) that `fallback` ran.
    pub fn fallback(&self, model: &str, fallback: &str, reason: &str) {
        let labels = FallbackLabels {
            model: model.to_owned(),
            fallback: fallback.to_owned(),
            reason: reason.to_owned(),
        };
        self.fallbacks.get_or_create(&labels).inc();
    }

    /// Labels for a model's series.
    pub fn model(model: &str) -> ModelLabels {
        ModelLabels { model: model.to_owned() }
    }

    /// Record one HTTP request's duration, with its trace as the exemplar.
    pub fn observe_request(&self, labels: &RequestLabels, seconds: f64, trace_id: Option<String>) {
        let exemplar = trace_id.map(|trace_id| TraceLabels { trace_id });
        self.http_duration.get_or_create(labels).observe(seconds, exemplar, None);
    }

    /// The content type of [`Metrics::encode`]: OpenMetrics, the only text
    /// format that carries exemplars.
    pub const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_series_with_zero_counters() {
        let metrics = Metrics::new();
        metrics.register_model("m", &["queue_full"]);
        let labels = RequestLabels {
            http_request_method: "POST".into(),
            http_route: "/v1/embeddings".into(),
            http_response_status_code: 200,
        };
        metrics.observe_request(&labels, 0.003, Some("4bf92f3577b34da6a3ce929d0e0e4736".into()));
        let text = metrics.encode();
        assert!(text.contains("# {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.003"), "{text}");
        assert!(
            text.contains("infergate_scheduler_rejections_total{model=\"m\",reason=\"queue_full\"} 0"),
            "{text}"
        );
        assert!(text.contains("http_server_request_duration_seconds_bucket{"), "{text}");
        assert!(text.contains("http_route=\"/v1/embeddings\""), "{text}");
    }
}
