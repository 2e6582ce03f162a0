//! The largest single requests the default limits let through, on a real
//! ONNX model (all-MiniLM-L6-v2): each stays within idle RSS + 1 GiB, and
//! its work stops within a second of its client leaving, teaching the
//! scheduler's latency model nothing that would refuse ordinary requests.
//!
//! Needs `scripts/setup.sh` (make test runs it) for models/ and .ort/; runs
//! in nextest's `models` group (one at a time: it keeps both cores busy).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use infergate_e2e::{client, cpu_after_a_second, repo_root, status_kib, Gateway, WEB_TENANT};
use serde_json::{json, Value};

const MODEL: &str = r#"
[[models]]
name = "minilm"
task = "embeddings"
batch = { max_size = 32, max_delay = "2ms" }
backend = { kind = "onnx", pipeline = "text-embeddings", model = "models/minilm/model.onnx", tokenizer = "models/minilm/tokenizer.json", intra_threads = 2 }
"#;

/// The gateway with `extra` model settings.
fn gateway(extra: &str) -> Gateway {
    let model = repo_root().join("models/minilm/model.onnx");
    assert!(model.exists(), "{} is missing: run scripts/setup.sh (make test does)", model.display());
    Gateway::start_with(&format!("{WEB_TENANT}{MODEL}{extra}\n"))
}

/// An ordinary request: its status and how long it took.
async fn ordinary(gw: &Gateway) -> (u16, Duration) {
    let start = Instant::now();
    let response = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "minilm", "input": "an ordinary sentence to embed"}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), start.elapsed())
}

/// 2048 texts (the default `limits.max_inputs`) of `words` words each.
fn texts(words: usize) -> Value {
    let text = (0..words).map(|i| format!("word{}", i % 97)).collect::<Vec<_>>().join(" ");
    json!(vec![text; 2048])
}

#[tokio::test]
async fn a_huge_embeddings_request_stops_when_its_client_leaves() {
    // Long enough that the scheduler admits the huge request (by default its
    // predicted minutes are refused at once as `deadline_infeasible`; after
    // one small request the prediction is up to hours).
    let gw = gateway("default_timeout = \"86400s\"");
    assert_eq!(ordinary(&gw).await.0, 200);
    let idle = status_kib(gw.pid(), "VmRSS:");

    // 2048 texts of 1000 words: many minutes of model time on two cores (the
    // prediction runs past 900 s when other tests load the machine).
    let sent = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "minilm", "input": texts(1000)}))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(sent.as_ref().is_err_and(reqwest::Error::is_timeout), "answered within 3 s: {sent:?}");
    let used = cpu_after_a_second(gw.pid()).await;
    assert!(used < 0.3, "{used:.2} s of CPU in the 2 s after the first second");

    // The cancelled run taught the latency model nothing: ordinary requests pass.
    for _ in 0..3 {
        let (status, took) = ordinary(&gw).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    let peak = status_kib(gw.pid(), "VmHWM:");
    eprintln!("after the huge request: {used:.2} s of CPU; peak RSS {peak} KiB, idle {idle} KiB");
    assert!(peak < idle + 1024 * 1024, "peak RSS {peak} KiB vs idle {idle} KiB");
}

#[tokio::test]
async fn the_largest_bodies_within_the_limits_stay_within_memory_bounds() {
    let gw = gateway("");
    assert_eq!(ordinary(&gw).await.0, 200);
    let idle = status_kib(gw.pid(), "VmRSS:");
    let http = client();
    // Just under the 25 MiB body limit: token ids (5 to 6 bytes of JSON each),
    // one list per input, admitted or refused by the scheduler (hours of
    // model time); then as one list, past max_input_tokens.
    let ids: Vec<u32> = (0..1500).map(|i| 1000 + i % 20_000).collect();
    let lists = json!({"model": "minilm", "input": vec![ids; 2048]});
    let one = json!({"model": "minilm", "input": (0..3_000_000u32).map(|i| 10_000 + i % 20_000).collect::<Vec<_>>()});
    for (what, body, want) in [("2048 lists", &lists, 503), ("one list", &one, 400)] {
        let body = serde_json::to_vec(body).unwrap();
        assert!(body.len() < 25 << 20, "{what}: {} bytes", body.len());
        let start = Instant::now();
        let response = http
            .post(gw.url("/v1/embeddings"))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(30))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, want, "{what}: {text:.300}");
        if status == 503 {
            assert!(text.contains("deadline_infeasible"), "{what}: {text:.300}");
        }
        let peak = status_kib(gw.pid(), "VmHWM:");
        eprintln!("{what}: {status} in {:?}; peak RSS {peak} KiB, idle {idle} KiB", start.elapsed());
        assert!(peak < idle + 1024 * 1024, "{what}: peak RSS {peak} KiB vs idle {idle} KiB");
    }
}
