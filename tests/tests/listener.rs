//! The listener's bounds against the real binary: `server.max_connections`
//! holds further connections in the accept backlog until one closes, a
//! stalled TLS handshake is cut off after `server.header_read_timeout`, and
//! `server.metrics_listen` moves `/metrics` to a listener of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use infergate_e2e::tls::{host_port, TempDir, TestCa};
use infergate_e2e::{Gateway, WEB_TENANT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MODEL: &str = r#"
[[models]]
name = "m"
task = "chat"
backend = { kind = "synthetic" }
"#;

fn gateway(server: &str) -> Gateway {
    Gateway::start_with(&format!("[server]\n{server}\n{WEB_TENANT}{MODEL}"))
}

/// Send `GET /healthz` on a raw connection; the first bytes of the answer,
/// or `None` when nothing came within `wait`.
async fn health(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(_) => panic!("the connection was closed"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn connections_past_max_connections_wait_in_the_backlog() {
    let gw = gateway("max_connections = 2\nheader_read_timeout = \"60s\"");
    let addr = host_port(&gw.base).to_owned();
    let mut first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        let answer = health(stream, Duration::from_secs(5)).await.expect("an open slot answers");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    // The kernel completes the third handshake, but the gateway does not accept it.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(health(&mut third, Duration::from_millis(1500)).await, None, "served past max_connections");

    // The open connections keep working, and closing one lets the third in.
    assert!(health(&mut second, Duration::from_secs(5)).await.is_some());
    drop(first);
    let answer =
        health_reply(&mut third, Duration::from_secs(5)).await.expect("accepted once a slot is free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The answer to a request already sent.
async fn health_reply(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_off_after_the_header_read_timeout() {
    let (ca, dir) = (TestCa::default(), TempDir::new("tls-stall"));
    let issued = ca.server("gateway");
    let (cert, key) = (dir.write("s.pem", &issued.cert), dir.write("s.key", &issued.key));
    let gw = gateway(&format!(
        "header_read_timeout = \"1s\"\ntls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    ));
    let mut stalled = TcpStream::connect(host_port(&gw.base)).await.unwrap();
    // Half a ClientHello's record header, then nothing.
    stalled.write_all(&[0x16, 0x03]).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the stalled connection stayed open: {read:?}");
    assert!(start.elapsed() >= Duration::from_millis(800), "closed before the timeout");
}

#[tokio::test]
async fn metrics_listen_serves_metrics_apart_and_the_public_listener_404s_them() {
    let gw = gateway("metrics_listen = \"127.0.0.1:0\"");
    let metrics_base = gw.metrics_base.clone().expect("the gateway reports its metrics address");
    assert_ne!(metrics_base, gw.base);

    let metrics = reqwest::get(format!("{metrics_base}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("# EOF"), "{text}");

    let public = reqwest::get(gw.url("/metrics")).await.unwrap();
    assert_eq!(public.status(), 404);
    let body: serde_json::Value = public.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_url", "{body}");
    assert!(!body.to_string().contains(host_port(&metrics_base)), "no internal address in {body}");
    // Everything else stays where it was.
    assert_eq!(reqwest::get(gw.url("/healthz")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{metrics_base}/healthz")).await.unwrap().status(), 404);
}
