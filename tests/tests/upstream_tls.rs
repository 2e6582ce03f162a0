//! TLS on the gateway's outgoing connections, against real TLS servers
//! started in the test with certificates of a private authority: a remote
//! backend's `ca_file`, `client_cert` and `client_key` (mutual TLS to the
//! upstream), and OTLP export to an `https://` receiver trusted through
//! `telemetry.otlp_ca_file`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use infergate_e2e::otlp::Receiver;
use infergate_e2e::tls::{serve_tls, server_config, TempDir, TestCa};
use infergate_e2e::{client, Gateway, WEB_TENANT};
use serde_json::{json, Value};

/// An OpenAI-compatible upstream over TLS that insists on a client
/// certificate of `clients`; counts the chats it answered.
async fn upstream(ca: &TestCa, clients: &TestCa) -> (String, Arc<AtomicU64>) {
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let app = Router::new().route("/health", get(|| async { "ok" })).route(
        "/v1/chat/completions",
        post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                Json(json!({
                    "id": "up-1", "object": "chat.completion", "created": 0, "model": "up",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "over mutual TLS"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
                }))
            }
        }),
    );
    let addr = serve_tls(app, server_config(&ca.server("upstream"), Some(clients))).await;
    (format!("https://{addr}"), answered)
}

fn gateway(endpoint: &str, tls: &str) -> Gateway {
    Gateway::start_with(&format!(
        r#"{WEB_TENANT}
[[models]]
name = "remote"
task = "chat"
backend = {{ kind = "openai", endpoints = ["{endpoint}"], health = {{ interval = "200ms" }}{tls} }}
"#
    ))
}

async fn chat(gw: &Gateway) -> (u16, Value) {
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-timeout", "5s")
        .json(&json!({"model": "remote", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_backends_speak_mutual_tls_with_a_private_ca() {
    let (ca, clients, dir) =
        (TestCa::default(), TestCa::new("upstream clients"), TempDir::new("upstream-tls"));
    let (endpoint, answered) = upstream(&ca, &clients).await;
    let ca_file = dir.write("ca.pem", ca.pem());
    let me = clients.client("gateway");
    let (cert, key) = (dir.write("client.pem", &me.cert), dir.write("client.key", &me.key));

    let trusted = format!(
        r#", ca_file = "{}", client_cert = "{}", client_key = "{}""#,
        ca_file.display(),
        cert.display(),
        key.display()
    );
    let gw = gateway(&endpoint, &trusted);
    let (status, body) = chat(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "over mutual TLS");
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    drop(gw);

    // Trusting the authority is not enough: the upstream wants a client certificate.
    let gw = gateway(&endpoint, &format!(r#", ca_file = "{}""#, ca_file.display()));
    let (status, body) = chat(&gw).await;
    assert!(status >= 500, "{status} {body}");
    drop(gw);

    // Without ca_file the private authority is unknown.
    let gw = gateway(
        &endpoint,
        &format!(r#", client_cert = "{}", client_key = "{}""#, cert.display(), key.display()),
    );
    let (status, body) = chat(&gw).await;
    assert!(status >= 500, "{status} {body}");
    assert_eq!(answered.load(Ordering::SeqCst), 1, "no request got through without trust");
}

/// A refused upstream handshake reaches the client as a 5xx that names
/// neither the upstream's address nor a certificate file. (Fails while
/// the gateway's error mapping shows `BackendError::Disconnected`'s text,
/// which carries the upstream URL; that mapping lives in `gateway/src/error.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_handshake_shows_no_internal_detail() {
    let (ca, clients, dir) =
        (TestCa::default(), TestCa::new("upstream clients"), TempDir::new("upstream-leak"));
    let (endpoint, _) = upstream(&ca, &clients).await;
    let ca_file = dir.write("ca.pem", ca.pem());
    let gw = gateway(&endpoint, &format!(r#", ca_file = "{}""#, ca_file.display()));
    let (status, body) = chat(&gw).await;
    assert!(status >= 500, "{status} {body}");
    let text = body.to_string();
    let port = endpoint.rsplit(':').next().unwrap();
    assert!(!text.contains(port) && !text.contains(".pem"), "an internal detail reached the client: {text}");
}

#[test]
fn an_unreadable_upstream_ca_file_stops_start_up_by_its_key() {
    let dir = TempDir::new("upstream-ca-missing");
    let config = dir.write(
        "config.toml",
        &format!(
            r#"{WEB_TENANT}
[[models]]
name = "remote"
task = "chat"
backend = {{ kind = "openai", endpoints = ["https://127.0.0.1:9"], ca_file = "{}" }}
"#,
            dir.path("missing-ca.pem")
        ),
    );
    let out = std::process::Command::new(infergate_e2e::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ca_file") && stderr.contains("missing-ca.pem"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_otlp_receiver_through_a_private_ca() {
    let (ca, dir) = (TestCa::default(), TempDir::new("otlp-https"));
    let receiver = Receiver::start_tls(server_config(&ca.server("collector"), None)).await;
    assert!(receiver.endpoint.starts_with("https://"));
    let ca_file = dir.write("ca.pem", ca.pem());
    let gw = Gateway::start_with(&format!(
        r#"{WEB_TENANT}
[telemetry]
otlp_endpoint = "{}"
otlp_ca_file = "{}"
export_interval = "100ms"
[[models]]
name = "m"
task = "chat"
backend = {{ kind = "synthetic" }}
"#,
        receiver.endpoint,
        ca_file.display()
    ));
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let spans = receiver
        .wait_for(Duration::from_secs(15), |s| s.iter().any(|s| s.name == "POST /v1/chat/completions"))
        .await;
    assert!(
        spans.iter().any(|s| s.name == "POST /v1/chat/completions"),
        "no server span arrived over https: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}
