//! Clients that stall, and the drain before shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use infergate_e2e::{Gateway, WEB_TENANT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = r#"
[server]
header_read_timeout = "300ms"
body_read_timeout = "300ms"
drain_delay = "1s"


[[models]]
name = "chat"
task = "chat"
backend = { kind = "synthetic" }
"#;

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(gw.base.trim_start_matches("http://")).await.unwrap()
}

/// Everything the server sends until it closes the connection (or 5 s pass).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_stalled_body_gets_408_in_the_api_shape() {
    let gw = Gateway::start_with(&format!("{CONFIG}{WEB_TENANT}"));
    let mut stream = connect(&gw).await;
    let start = Instant::now();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-infergate-test\r\n\
                Content-Type: application/json\r\nContent-Length: 200\r\nConnection: close\r\n\r\n{\"model\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = read_all(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "body_timeout");
}

#[tokio::test]
async fn stalled_headers_are_cut_off() {
    let gw = Gateway::start_with(&format!("{CONFIG}{WEB_TENANT}"));
    let mut stream = connect(&gw).await;
    let start = Instant::now();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let response = read_all(&mut stream).await;
    assert!(start.elapsed() < Duration::from_secs(3), "the connection closes at the header timeout");
    assert!(response.is_empty() || response.starts_with("HTTP/1.1 408"), "{response}");
}

#[tokio::test]
async fn sigterm_fails_readiness_during_the_drain_delay_then_exits() {
    let mut gw = Gateway::start_with(&format!("{CONFIG}{WEB_TENANT}"));
    let client = reqwest::Client::new();
    assert_eq!(client.get(gw.url("/readyz")).send().await.unwrap().status(), 200);
    gw.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = client.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "draining");
    assert_eq!(client.get(gw.url("/v2/health/ready")).send().await.unwrap().status(), 503);
    assert_eq!(
        client.get(gw.url("/healthz")).send().await.unwrap().status(),
        200,
        "still alive while draining"
    );
    let status = tokio::task::spawn_blocking(move || gw.wait(Duration::from_secs(10))).await.unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
