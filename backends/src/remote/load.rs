//! What upstreams say about their own load (`backend.load_metrics`): each
//! replica's Prometheus endpoint read every `interval`, its queue, running
//! requests and KV-cache use kept with the time they were read. The replica
//! choice (`replicas.rs`) counts a reading only while it is fresh (younger
//! than `max_age`), so a replica that stops answering falls back to what the
//! gateway itself sees of it.

use std::time::{Duration, Instant};

use infergate_otel::exposition::samples;

/// Gauges of requests waiting in an upstream's own queue, by server.
const WAITING: [&str; 5] = [
    "vllm:num_requests_waiting",
    "tgi_queue_size",
    "sglang:num_queue_reqs",
    "nv_inference_pending_request_count",
    "infergate_queue_depth",
];
/// Gauges of requests an upstream is running.
const RUNNING: [&str; 4] = [
    "vllm:num_requests_running",
    "tgi_batch_current_size",
    "sglang:num_running_reqs",
    "infergate_model_running_requests",
];
/// Gauges of KV-cache use, 0–1 (vLLM's newer name first; SGLang's token use).
const KV_CACHE: [&str; 4] = [
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "sglang:token_usage",
    "infergate_model_kv_cache_utilization",
];

/// One reading of an upstream's gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reported {
    /// Requests waiting in its queue.
    pub waiting: f64,
    /// Requests running, where it says.
    pub running: Option<f64>,
    /// KV-cache use in [0, 1], where it says.
    pub kv_cache: Option<f64>,
    pub at: Instant,
}

impl Reported {
    /// The gauges of `model` in metrics text: series labelled with another
    /// model (`model_name`, as vLLM labels, or `model`) are left out, the rest
    /// summed (KV-cache use: the highest). `None` when no known gauge is there.
    pub fn parse(text: &str, model: &str, at: Instant) -> Option<Reported> {
        let (mut waiting, mut running, mut kv_cache) = (None, None, None::<f64>);
        for sample in samples(text) {
            let is = |names: &[&str]| names.contains(&sample.name);
            if !(is(&WAITING) || is(&RUNNING) || is(&KV_CACHE)) {
                continue;
            }
            let named = sample.label("model_name").or_else(|| sample.label("model"));
            if named.is_some_and(|m| m != model) {
                continue;
            }
            if is(&WAITING) {
                *waiting.get_or_insert(0.0) += sample.value.max(0.0);
            } else if is(&RUNNING) {
                *running.get_or_insert(0.0) += sample.value.max(0.0);
            } else {
                let use_ = sample.value.clamp(0.0, 1.0);
                kv_cache = Some(kv_cache.map_or(use_, |k| k.max(use_)));
            }
        }
        if waiting.is_none() && running.is_none() && kv_cache.is_none() {
            return None;
        }
        Some(Reported { waiting: waiting.unwrap_or(0.0), running, kv_cache, at })
    }

    /// Whether it is younger than `max_age` at `now`.
    pub fn fresh(&self, now: Instant, max_age: Duration) -> bool {
        now.saturating_duration_since(self.at) < max_age
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllm_tgi_and_infergate_gauges_of_the_model() {
        let at = Instant::now();
        let vllm = "# TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"llama\"} 3\n\
            vllm:num_requests_waiting{engine=\"0\",model_name=\"other\"} 40\n\
            vllm:num_requests_running{engine=\"0\",model_name=\"llama\"} 8\n\
            vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"llama\"} 0.42\n\
            vllm:prompt_tokens_total{model_name=\"llama\"} 1234\n";
        let r = Reported::parse(vllm, "llama", at).unwrap();
        assert_eq!((r.waiting, r.running, r.kv_cache), (3.0, Some(8.0), Some(0.42)));
        // Older vLLM, unlabelled TGI, infergate upstream labelled `model`.
        let old = "vllm:gpu_cache_usage_perc{model_name=\"llama\"} 1.7\n";
        assert_eq!(Reported::parse(old, "llama", at).unwrap().kv_cache, Some(1.0));
        let tgi = "tgi_queue_size 5\ntgi_batch_current_size 2\n";
        let r = Reported::parse(tgi, "llama", at).unwrap();
        assert_eq!((r.waiting, r.running, r.kv_cache), (5.0, Some(2.0), None));
        let ours = "infergate_queue_depth{model=\"llama\"} 2\ninfergate_queue_depth{model=\"e5\"} 9\n";
        assert_eq!(Reported::parse(ours, "llama", at).unwrap().waiting, 2.0);
        // Nothing known: no reading at all, rather than a zero queue.
        assert_eq!(Reported::parse("process_cpu_seconds_total 3\n", "llama", at), None);
        assert_eq!(Reported::parse(vllm, "mistral", at), None);
        let r = Reported::parse(tgi, "llama", at).unwrap();
        assert!(r.fresh(at + Duration::from_millis(999), Duration::from_secs(1)));
        assert!(!r.fresh(at + Duration::from_secs(1), Duration::from_secs(1)));
    }
}
