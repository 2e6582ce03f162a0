//! Fallbacks and aliases through the real gateway: a job the primary cannot
//! take (deadline infeasible, every replica ejected) runs on its fallback;
//! an alias splits requests over its targets by weight and is what the
//! tenant's allow-list names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use infergate_e2e::{client, metric, metrics_text, FakeUpstream, Gateway};
use serde_json::{json, Value};

/// The test tenant (its key is the one `client()` sends), allowed `models`.
fn tenant(models: &[&str]) -> String {
    let list: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        r#"[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]
models = [{}]
"#,
        list.join(", ")
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
}

async fn post(gw: &Gateway, model: &str, timeout: &str) -> (u16, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-timeout", timeout)
        .json(&chat(model))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_job_the_primary_cannot_meet_runs_on_its_fallback() {
    let gw = Gateway::start_with(&format!(
        r#"{}
[[models]]
name = "slow"
task = "chat"
fallback = ["fast"]
backend = {{ kind = "synthetic", base_latency = "2s" }}

[[models]]
name = "slow-alone"
task = "chat"
backend = {{ kind = "synthetic", base_latency = "2s" }}

[[models]]
name = "fast"
task = "chat"
backend = {{ kind = "synthetic" }}
"#,
        tenant(&["slow", "slow-alone", "fast"])
    ));
    // 150 ms for a 2 s model: infeasible there, so the fallback answers.
    let start = Instant::now();
    let (status, body) = post(&gw, "slow", "150ms").await;
    assert_eq!(status, 200, "{body}");
    assert!(start.elapsed() < Duration::from_millis(1000));
    assert!(body["choices"][0]["message"]["content"].as_str().is_some(), "{body}");
    // Without a fallback the same request is refused.
    let (status, body) = post(&gw, "slow-alone", "150ms").await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("deadline_infeasible")), "{body}");
    // A deadline the primary can meet stays on it.
    assert_eq!(post(&gw, "slow", "10s").await.0, 200);
    let text = metrics_text(&gw).await;
    let moved = r#"infergate_fallbacks_total{model="slow",fallback="fast",reason="deadline_infeasible"}"#;
    assert_eq!(metric(&text, moved), 1.0, "{text}");
    assert_eq!(metric(&text, r#"infergate_batch_size_count{model="slow"}"#), 1.0);
    assert_eq!(metric(&text, r#"infergate_batch_size_count{model="fast"}"#), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_ejected_jobs_run_on_the_fallback() {
    let mut upstream = FakeUpstream::start("127.0.0.1:0", &[]);
    let gw = Gateway::start_with(&format!(
        r#"{}
[[models]]
name = "primary"
task = "chat"
fallback = ["spare"]
backend = {{ kind = "openai", endpoints = ["{}"], upstream_model = "fake-model",
            health = {{ interval = "100ms", eject_after = 2, cooldown = "30s" }} }}

[[models]]
name = "spare"
task = "chat"
backend = {{ kind = "synthetic" }}
"#,
        tenant(&["primary", "spare"]),
        upstream.base
    ));
    assert_eq!(post(&gw, "primary", "5s").await.0, 200);
    assert_eq!(upstream.seen("/v1/chat/completions").await.len(), 1);
    upstream.kill();
    // Ejected after two missed heartbeats.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&metrics_text(&gw).await, r#"infergate_upstream_replica_up{model="primary""#) != 0.0 {
        assert!(Instant::now() < deadline, "the replica was never ejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        let (status, body) = post(&gw, "primary", "5s").await;
        assert_eq!(status, 200, "{body}");
    }
    let text = metrics_text(&gw).await;
    let moved = r#"infergate_fallbacks_total{model="primary",fallback="spare",reason="unavailable"}"#;
    assert_eq!(metric(&text, moved), 5.0, "{text}");
}

#[tokio::test]
async fn an_alias_splits_by_weight_and_is_what_the_allow_list_names() {
    let gw = Gateway::start_with(&format!(
        r#"{}
[[models]]
name = "stable"
task = "chat"
backend = {{ kind = "synthetic" }}

[[models]]
name = "canary"
task = "chat"
backend = {{ kind = "synthetic" }}

[[aliases]]
name = "chat"
targets = [{{ model = "stable", weight = 90 }}, {{ model = "canary", weight = 10 }}]
"#,
        tenant(&["chat"])
    ));
    let sends = (0..300).map(|_| post(&gw, "chat", "10s"));
    let answers = futures_util::future::join_all(sends).await;
    assert!(answers.iter().all(|(status, _)| *status == 200));
    let text = metrics_text(&gw).await;
    let stable = metric(&text, r#"infergate_queue_wait_seconds_count{model="stable"}"#);
    let canary = metric(&text, r#"infergate_queue_wait_seconds_count{model="canary"}"#);
    assert_eq!(stable + canary, 300.0, "{text}");
    assert!((12.0..=50.0).contains(&canary), "about 10% of 300: {canary}");
    // The tenant may use the alias, not its targets by name.
    let (status, body) = post(&gw, "canary", "10s").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("model_not_found")), "{body}");
    let list: Value = client().get(gw.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["chat"]);
    let one: Value = client().get(gw.url("/v1/models/chat")).send().await.unwrap().json().await.unwrap();
    assert_eq!((one["id"].as_str(), one["task"].as_str()), (Some("chat"), Some("chat")), "{one}");
}
