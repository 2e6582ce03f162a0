//! The response cache's metrics, per model, and the feedback events': look-ups by result, the bytes
//! held, and entries evicted. Models come from the configuration, so the
//! label sets are bounded; a model's series are created once, when its
//! cache is built, and handed out as handles.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::labels::ModelLabels;
use crate::names;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheResultLabels {
    pub model: String,
    pub result: String,
}

/// The families; see the module docs.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    requests: Family<CacheResultLabels, Counter>,
    bytes: Family<ModelLabels, Gauge>,
    entries: Family<ModelLabels, Gauge>,
    evictions: Family<ModelLabels, Counter>,
}

/// One model's cache series.
#[derive(Debug, Clone)]
pub struct ModelCacheSeries {
    pub hit: Counter,
    pub miss: Counter,
    pub coalesced: Counter,
    pub bypass: Counter,
    pub none: Counter,
    pub bytes: Gauge,
    pub entries: Gauge,
    pub evictions: Counter,
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = CacheMetrics::default();
        registry.register(
            names::CACHE_REQUESTS,
            "Cache look-ups of cacheable models, by result (hit, miss, coalesced, bypass, none)",
            m.requests.clone(),
        );
        registry.register(names::CACHE_BYTES, "Bytes of answers held in the response cache", m.bytes.clone());
        registry.register(names::CACHE_ENTRIES, "Answers held in the response cache", m.entries.clone());
        registry.register(
            names::CACHE_EVICTIONS,
            "Answers evicted from the response cache to stay within max_bytes",
            m.evictions.clone(),
        );
        m
    }

    /// The series of `model`, present at zero from now on.
    pub fn model(&self, model: &str) -> ModelCacheSeries {
        let result = |result: &str| {
            self.requests
                .get_or_create(&CacheResultLabels { model: model.to_owned(), result: result.to_owned() })
                .clone()
        };
        let labels = ModelLabels { model: model.to_owned() };
        ModelCacheSeries {
            hit: result("hit"),
            miss: result("miss"),
            coalesced: result("coalesced"),
            bypass: result("bypass"),
            none: result("none"),
            bytes: self.bytes.get_or_create(&labels).clone(),
            entries: self.entries.get_or_create(&labels).clone(),
            evictions: self.evictions.get_or_create(&labels).clone(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedbackLabels {
    pub outcome: String,
}

/// Feedback and captured events: queued for the sinks, dropped (queue
/// full), and batches a sink failed to write.
#[derive(Clone, Default)]
pub struct FeedbackMetrics {
    events: Family<FeedbackLabels, Counter>,
}

impl FeedbackMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = FeedbackMetrics::default();
        registry.register(
            names::FEEDBACK_EVENTS,
            "Feedback and low-confidence events: queued for the sinks, dropped with the queue full, failed writes",
            m.events.clone(),
        );
        m
    }

    /// (queued, dropped, failed), present at zero from now on.
    pub fn counters(&self) -> (Counter, Counter, Counter) {
        let at = |outcome: &str| {
            self.events.get_or_create(&FeedbackLabels { outcome: outcome.to_owned() }).clone()
        };
        (at("queued"), at("dropped"), at("failed"))
    }
}
