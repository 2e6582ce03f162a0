//! The Gateway API Inference Extension's model-server gauges: a model's
//! queue driven up by concurrent requests reads back from `/metrics` as the
//! protocol describes them (queued, running, utilisation 0–1), and all
//! return to zero once the queue has drained.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use infergate_e2e::{client, metric, metrics_text, Gateway, WEB_TENANT};
use serde_json::json;

/// `(queued, running, utilization)` of `model`.
async fn gauges(gw: &Gateway, model: &str) -> (f64, f64, f64) {
    let text = metrics_text(gw).await;
    let series = |name: &str| metric(&text, &format!("{name}{{model=\"{model}\"}}"));
    (
        series("infergate_queue_depth"),
        series("infergate_model_running_requests"),
        series("infergate_model_kv_cache_utilization"),
    )
}

#[tokio::test]
async fn a_models_queue_reads_back_as_the_inference_extensions_gauges() {
    // Two batches of up to two jobs at a time, each 800 ms.
    let gw = Gateway::start_with(&format!(
        r#"{WEB_TENANT}
[[models]]
name = "slow"
task = "embeddings"
concurrency = 2
batch = {{ max_size = 2, max_delay = "50ms" }}
backend = {{ kind = "synthetic", base_latency = "800ms", per_cost = "1us", dimensions = 8 }}
"#
    ));
    let text = metrics_text(&gw).await;
    for name in
        ["infergate_queue_depth", "infergate_model_running_requests", "infergate_model_kv_cache_utilization"]
    {
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{name} is a gauge");
    }
    assert_eq!(gauges(&gw, "slow").await, (0.0, 0.0, 0.0), "idle: nothing queued or running");

    let requests: Vec<_> = (0..8)
        .map(|i| {
            let (c, url) = (client(), gw.url("/v1/embeddings"));
            tokio::spawn(async move {
                c.post(url)
                    .json(&json!({ "model": "slow", "input": format!("text {i}") }))
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (queued, running, utilization) = gauges(&gw, "slow").await;
    assert_eq!(queued + running, 8.0, "every job is queued or running ({queued} + {running})");
    assert!((1.0..=4.0).contains(&running), "at most two batches of two run ({running})");
    assert!(queued >= 4.0, "the rest wait ({queued})");
    assert_eq!(utilization, 1.0, "both of the model's batch slots are busy");

    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    assert_eq!(gauges(&gw, "slow").await, (0.0, 0.0, 0.0), "drained: back to zero");
}
