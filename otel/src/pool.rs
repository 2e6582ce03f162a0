//! The model-server gauges of the Gateway API Inference Extension's
//! protocol, per model, besides the queue depth the runner already
//! exports: what an Endpoint Picker reads from each replica of an
//! `InferencePool` to choose where a request goes ([`names`] has their
//! semantics). A model's series are created when its runner starts,
//! at zero, and handed out as handles.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::labels::ModelLabels;
use crate::names;

/// The families; see the module docs.
#[derive(Clone, Default)]
pub struct PoolMetrics {
    running: Family<ModelLabels, Gauge>,
    utilization: Family<ModelLabels, Gauge<f64, AtomicU64>>,
}

/// One model's gauges.
#[derive(Debug, Clone)]
pub struct PoolSeries {
    pub running: Gauge,
    /// 0–1.
    pub utilization: Gauge<f64, AtomicU64>,
}

impl PoolMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = PoolMetrics::default();
        registry.register(
            names::MODEL_RUNNING_REQUESTS,
            "Jobs a model is running now (the inference extension's TotalRunningRequests)",
            m.running.clone(),
        );
        registry.register(
            names::MODEL_KV_CACHE_UTILIZATION,
            "How full a model is, 0-1: KV budget held by running sequences, or running batches / concurrency \
             (the inference extension's KVCacheUtilization)",
            m.utilization.clone(),
        );
        m
    }

    /// The gauges of `model`, present at zero from now on.
    pub fn model(&self, model: &str) -> PoolSeries {
        let labels = ModelLabels { model: model.to_owned() };
        PoolSeries {
            running: self.running.get_or_create(&labels).clone(),
            utilization: self.utilization.get_or_create(&labels).clone(),
        }
    }
}
