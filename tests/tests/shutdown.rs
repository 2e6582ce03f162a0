//! SIGTERM with streams in flight: every stream completes, then exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::StreamExt;
use infergate_e2e::{client, sse_data, Gateway, WEB_TENANT};
use serde_json::json;

const CONFIG: &str = r#"
[server]
shutdown_grace = "20s"


[[models]]
name = "chat"
task = "chat"
concurrency = 8
batch = { max_size = 8, max_delay = "5ms" }
backend = { kind = "synthetic", token_interval = "40ms" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_fifty_streams_then_exits_zero() {
    let mut gw = Gateway::start_with(&format!("{CONFIG}{WEB_TENANT}"));
    let client = client();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel(64);
    let mut streams = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        let url = gw.url("/v1/chat/completions");
        let started = started_tx.clone();
        streams.push(tokio::spawn(async move {
            let request = json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": format!("stream {i}")}]});
            let response = client.post(url).json(&request).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let mut body = String::new();
            let mut chunks = response.bytes_stream();
            let mut announced = false;
            while let Some(chunk) = chunks.next().await {
                body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if !announced && body.contains("\"content\":\"[synthetic") {
                    announced = true;
                    started.send(()).await.unwrap();
                }
            }
            body
        }));
    }
    for _ in 0..50 {
        tokio::time::timeout(Duration::from_secs(20), started_rx.recv())
            .await
            .expect("all 50 streams start")
            .unwrap();
    }

    gw.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new().get(gw.url("/healthz")).timeout(Duration::from_secs(2)).send().await;
    assert!(refused.is_err(), "no new connections after SIGTERM");

    for stream in streams {
        let body = stream.await.unwrap();
        let events = sse_data(&body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "stream completed: {body}");
        let finish = &events[events.len() - 2];
        assert!(finish.contains("\"finish_reason\":\"stop\""), "{finish}");
    }
    let status = tokio::task::spawn_blocking(move || gw.wait(Duration::from_secs(15))).await.unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit 0 after draining");
}

/// Streams still open when the grace ends: each ends with an error event
/// saying the server is shutting down, not a cut connection.
const SHORT_GRACE: &str = r#"
[server]
shutdown_grace = "1s"

[[models]]
name = "chat"
task = "chat"
backend = { kind = "synthetic", token_interval = "1s" }

[[models]]
name = "speech"
task = "transcription"
batch = { max_size = 1 }
backend = { kind = "synthetic", base_latency = "10s" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cut_by_the_grace_end_with_a_shutting_down_event() {
    let mut gw = Gateway::start_with(&format!("{SHORT_GRACE}{WEB_TENANT}"));
    let client = client();
    let chat = client
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "a long answer"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(infergate_e2e::wav(3.0, 16_000))
                .file_name("a.wav")
                .mime_str("audio/wav")
                .unwrap(),
        )
        .text("model", "speech")
        .text("stream", "true");
    let speech = client.post(gw.url("/v1/audio/transcriptions")).multipart(form).send().await.unwrap();
    assert_eq!(speech.status(), 200);

    gw.terminate();
    let read = |response: reqwest::Response| async move {
        tokio::time::timeout(Duration::from_secs(10), response.text())
            .await
            .expect("the stream ends soon after the grace")
    };
    let (chat, speech) = tokio::join!(read(chat), read(speech));
    for (what, body) in [("chat", chat.unwrap()), ("speech", speech.unwrap())] {
        let events = sse_data(&body);
        let last = events.iter().rev().find(|e| *e != "[DONE]").unwrap_or_else(|| panic!("{what}: {body}"));
        let last: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(last["error"]["code"], "shutting_down", "{what}: {body}");
    }
    let status = tokio::task::spawn_blocking(move || gw.wait(Duration::from_secs(15))).await.unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
