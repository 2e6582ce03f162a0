//! Deadlines, full queues and backend faults, as a client sees them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use infergate_e2e::{client, sse_data, Gateway, WEB_TENANT};
use serde_json::{json, Value};

fn config(models: &str) -> String {
    format!("{WEB_TENANT}\n{models}")
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn deadline_headers_bound_the_wait() {
    let gw = Gateway::start_with(&config(
        r#"[[models]]
name = "slow"
task = "chat"
backend = { kind = "synthetic", base_latency = "2s" }

[[models]]
name = "slow-fifo"
task = "chat"
policy = "fifo"
backend = { kind = "synthetic", base_latency = "2s" }"#,
    ));
    // The deadline policy knows a 2 s model cannot answer in 150 ms: refused at
    // once, and no retry can help.
    let start = Instant::now();
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-timeout", "150ms")
        .json(&chat("slow"))
        .send()
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_millis(100), "refused before any waiting");
    assert_eq!(response.headers()["x-should-retry"], "false");
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = error_of(response).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("deadline_infeasible")));

    // FIFO does not predict: the request waits and times out at its deadline.
    let start = Instant::now();
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-timeout", "150ms")
        .json(&chat("slow-fifo"))
        .send()
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_millis(1500), "answered at the deadline, not after the backend");
    assert_eq!(response.headers()["x-should-retry"], "false");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "deadline_exceeded");

    let past = "2001-01-01T00:00:00Z";
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-deadline", past)
        .json(&chat("slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504, "a deadline in the past never reaches the backend");

    // Goodput accounting: every one of those missed its deadline.
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    let count = |model: &str, outcome: &str| -> f64 {
        let prefix = format!("infergate_deadline_outcomes_total{{model=\"{model}\",class=\"interactive\",outcome=\"{outcome}\"}}");
        metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(count("slow", "missed"), 2.0, "{metrics}");
    assert_eq!(count("slow-fifo", "missed"), 1.0);
    assert_eq!(count("slow", "on_time"), 0.0);
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let gw = Gateway::start_with(&config(
        r#"[[models]]
name = "narrow"
task = "chat"
concurrency = 1
queue = { max_jobs = 2 }
policy = "fifo"
backend = { kind = "synthetic", base_latency = "300ms" }"#,
    ));
    let client = client();
    let calls = (0..8).map(|_| {
        let client = client.clone();
        let url = gw.url("/v1/chat/completions");
        async move { client.post(url).json(&chat("narrow")).send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(calls).await;
    let mut ok = 0;
    let mut full = 0;
    for r in responses {
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(r.headers()["x-should-retry"], "true");
                let (_, body) = error_of(r).await;
                assert_eq!(body["error"]["code"], "queue_full");
                full += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 2, "queued work still completes ({ok} ok)");
    assert!(full >= 1, "overflow is refused at once ({full} refused)");
}

#[tokio::test]
async fn backend_faults_map_to_gateway_errors() {
    let gw = Gateway::start_with(&config(
        r#"[[models]]
name = "flaky"
task = "chat"
backend = { kind = "synthetic", error_rate = 1.0 }

[[models]]
name = "hang"
task = "chat"
backend = { kind = "synthetic", fault = "hang" }

[[models]]
name = "cut"
task = "chat"
backend = { kind = "synthetic", fault = "disconnect", token_interval = "1ms" }"#,
    ));
    let (status, body) =
        error_of(client().post(gw.url("/v1/chat/completions")).json(&chat("flaky")).send().await.unwrap())
            .await;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("backend_error")));

    let start = Instant::now();
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-timeout", "200ms")
        .json(&chat("hang"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(start.elapsed() < Duration::from_secs(5));

    // A disconnect before any token is a plain 502; after tokens, an SSE error event.
    let mut request = chat("cut");
    request["stream"] = json!(true);
    let response = client().post(gw.url("/v1/chat/completions")).json(&request).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "backend_error", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));

    // The gateway still serves after all of that.
    let ok = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}
