//! The listener's bounds against the real binary: `server.max_connections`
//! holds further connections in the accept backlog until one closes, a
//! stalled TLS handshake is cut off after `server.header_read_timeout`, and
//! `server.metrics_listen` moves `/metrics` to a listener of its own; HTTP/2
//! streams past `server.http2_max_concurrent_streams` are refused and a
//! header list past `server.max_header_list_bytes` gets a 431 (HTTP/2 and
//! HTTP/1.1), spoken frame by frame here so that no client library's own
//! limits stand in the way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use infergate_e2e::tls::{host_port, TempDir, TestCa};
use infergate_e2e::{Gateway, TEST_KEY, WEB_TENANT};
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

/// A raw HTTP/2 (prior knowledge) connection, frame by frame.
struct H2 {
    stream: TcpStream,
    read: Vec<u8>,
}

/// A frame's type, flags, stream and payload.
type Frame = (u8, u8, u32, Vec<u8>);

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const END_HEADERS: u8 = 0x4;

impl H2 {
    /// Connect, send the preface and empty settings, and return the
    /// server's settings (identifier, value) once acknowledged.
    async fn connect(addr: &str) -> (H2, Vec<(u16, u32)>) {
        let mut h2 = H2 { stream: TcpStream::connect(addr).await.unwrap(), read: Vec::new() };
        h2.stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        h2.send(SETTINGS, 0, 0, &[]).await;
        let settings = loop {
            let (kind, flags, _, payload) = h2.frame().await.expect("the server's settings");
            if kind == SETTINGS && flags & 0x1 == 0 {
                break payload
                    .chunks_exact(6)
                    .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
                    .collect();
            }
        };
        h2.send(SETTINGS, 0x1, 0, &[]).await;
        (h2, settings)
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame, or `None` when none came within 5 s or the connection closed.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.read.len() >= 9 {
                let len = u32::from_be_bytes([0, self.read[0], self.read[1], self.read[2]]) as usize;
                if self.read.len() >= 9 + len {
                    let head: Vec<u8> = self.read.drain(..9).collect();
                    let payload = self.read.drain(..len).collect();
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7FFF_FFFF;
                    return Some((head[3], head[4], stream, payload));
                }
            }
            let mut buf = [0u8; 16384];
            match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.read.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
    }

    /// The first RST_STREAM or HEADERS frame on `stream`.
    async fn answer(&mut self, stream: u32) -> Option<Frame> {
        while let Some(frame) = self.frame().await {
            if frame.2 == stream && (frame.0 == RST_STREAM || frame.0 == HEADERS) {
                return Some(frame);
            }
        }
        None
    }
}

/// An HPACK integer with an `n`-bit prefix (no Huffman coding anywhere here).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A request header block: `GET path` with `extra` headers, each a literal
/// without indexing.
fn request_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    let literal = |block: &mut Vec<u8>, index: Option<u8>, name: &str, value: &str| {
        match index {
            Some(index) => hpack_int(block, 0x00, 4, usize::from(index)),
            None => {
                block.push(0x00);
                hpack_int(block, 0x00, 7, name.len());
                block.extend_from_slice(name.as_bytes());
            }
        }
        hpack_int(block, 0x00, 7, value.len());
        block.extend_from_slice(value.as_bytes());
    };
    literal(&mut block, Some(4), ":path", path);
    literal(&mut block, Some(1), ":authority", "gateway");
    for (name, value) in extra {
        literal(&mut block, None, name, value);
    }
    block
}

/// The HTTP/2 settings identifiers checked here.
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const MAX_HEADER_LIST_SIZE: u16 = 0x6;
/// RST_STREAM's REFUSED_STREAM error code.
const REFUSED_STREAM: u32 = 0x7;

#[tokio::test]
async fn http2_streams_past_the_limit_are_refused_and_big_header_lists_get_431() {
    let gw = gateway("http2_max_concurrent_streams = 2\nmax_header_list_bytes = 8192");
    let addr = host_port(&gw.base).to_owned();
    let (mut h2, settings) = H2::connect(&addr).await;
    assert!(settings.contains(&(MAX_CONCURRENT_STREAMS, 2)), "{settings:?}");
    assert!(settings.contains(&(MAX_HEADER_LIST_SIZE, 8192)), "{settings:?}");

    // Two streams held open, then a third. Each is a POST the gateway
    // accepts and then waits on: no END_STREAM, so its body never comes. (A
    // GET, or a request without a key, is answered at once: the stream
    // closes, and whether its slot is free again when the third arrives
    // depended on timing.)
    let bearer = format!("Bearer {TEST_KEY}");
    let held = [("content-type", "application/json"), ("authorization", bearer.as_str())];
    for stream in [1, 3] {
        let mut block = request_block("/v1/chat/completions", &held);
        block[0] = 0x83; // :method POST (static index 3)
        h2.send(HEADERS, END_HEADERS, stream, &block).await;
    }
    h2.send(HEADERS, END_HEADERS | 0x1, 5, &request_block("/healthz", &[])).await;
    let (kind, _, _, payload) = h2.answer(5).await.expect("an answer to the third stream");
    assert_eq!(kind, RST_STREAM, "the third stream is refused");
    assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), REFUSED_STREAM);

    // A header list past the bound, on a fresh connection: 431, and the connection lives on.
    let (mut h2, _) = H2::connect(&addr).await;
    let big = "x".repeat(10_000);
    h2.send(HEADERS, END_HEADERS | 0x1, 1, &request_block("/healthz", &[("x-big", &big)])).await;
    let (kind, _, _, block) = h2.answer(1).await.expect("an answer to the big header list");
    assert_eq!(kind, HEADERS);
    // `:status` (static index 8) with the value "431", plain or Huffman-coded (0x69 0x90 0xFF).
    let status_431 = [&[0x48, 0x03, b'4', b'3', b'1'][..], &[0x48, 0x83, 0x69, 0x90, 0xFF]];
    assert!(status_431.iter().any(|s| block.starts_with(s)), "a 431 status: {block:?}");
    h2.send(HEADERS, END_HEADERS | 0x1, 3, &request_block("/healthz", &[])).await;
    let (kind, _, _, block) = h2.answer(3).await.expect("the connection still serves");
    assert_eq!(kind, HEADERS);
    assert!(block.contains(&0x88), "200 (static index 8): {block:?}");

    // HTTP/1.1: the same bound, the same status.
    let mut http1 = TcpStream::connect(&addr).await.unwrap();
    http1
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = health_reply(&mut http1, Duration::from_secs(5)).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
