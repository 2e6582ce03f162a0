//! OTLP/gRPC export to a real third-party collector (rotel, a Rust
//! OpenTelemetry collector from its PyPI wheel, installed by
//! `scripts/setup.sh` at `.tools/rotel`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infergate_e2e::{client, repo_root, Gateway};
use serde_json::json;

struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Spans rotel reports as received, from its log lines `Received traces. ... spans=N`.
fn received_spans(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("Received traces"))
        .filter_map(|l| l.split("spans=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_collector_over_grpc() {
    let rotel = repo_root().join(".tools/rotel");
    assert!(rotel.exists(), "{} is missing: run scripts/setup.sh (make test does)", rotel.display());
    let grpc = free_port();
    let log_path = std::env::temp_dir().join(format!("infergate-rotel-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let _collector = Collector(
        Command::new(rotel)
            .args([
                "start",
                "--exporter",
                "blackhole",
                "--debug-log",
                "traces",
                "--debug-log",
                "metrics",
                "--debug-log",
                "logs",
            ])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{}", free_port())])
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start rotel"),
    );
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let gw = Gateway::start_with_env(
        &std::fs::read_to_string(repo_root().join("examples/synthetic.toml")).unwrap(),
        &[
            ("INFERGATE__TELEMETRY__PROTOCOL", "grpc"),
            ("INFERGATE__TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("INFERGATE__TELEMETRY__EXPORT_INTERVAL", "100ms"),
            ("INFERGATE__TELEMETRY__METRICS_INTERVAL", "200ms"),
        ],
    );
    // The collector may still be starting: send until it has the 6 spans of one request.
    let start = Instant::now();
    let mut text = String::new();
    while start.elapsed() < Duration::from_secs(20) {
        let response = client()
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "synthetic-chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        text.clear();
        std::fs::File::open(&log_path).unwrap().read_to_string(&mut text).unwrap();
        if received_spans(&text) >= 6 && text.contains("Received metrics") {
            break;
        }
    }
    let _ = std::fs::remove_file(&log_path);
    assert!(received_spans(&text) >= 6, "rotel received too few spans:\n{text}");
    assert!(text.contains("Received metrics"), "rotel received no metrics:\n{text}");
}
