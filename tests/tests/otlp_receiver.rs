//! The gateway exports to a real third-party OTLP/HTTP receiver (PyPI
//! `oteltap`, installed in the test venv by `scripts/setup.sh`), which must
//! receive the server span of a request in the caller's trace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infergate_e2e::{client, repo_root, Gateway};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_receiver_gets_the_request_spans() {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (make test does)", python.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut tap = Command::new(python)
        .args(["-m", "oteltap", "--port", &port.to_string(), "--await-span", "^POST /v1/chat/completions$"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start oteltap");
    let mut lines = BufReader::new(tap.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(ready.contains("Listening"), "oteltap did not start: {ready}");

    let endpoint = format!("http://127.0.0.1:{port}");
    let gw = Gateway::start_with_env(
        &std::fs::read_to_string(repo_root().join("examples/synthetic.toml")).unwrap(),
        &[
            ("INFERGATE__TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("INFERGATE__TELEMETRY__EXPORT_INTERVAL", "100ms"),
        ],
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .json(&json!({"model": "synthetic-chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // oteltap exits 0 once it has received the awaited span.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = tap.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = tap.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "oteltap never saw the span:\n{}", output.join("\n"));
    assert!(
        output.iter().any(|l| l.contains("\"name\":\"POST /v1/chat/completions\"")
            && l.contains(&format!("\"traceId\":\"{trace}\""))),
        "no server span in trace {trace}:\n{}",
        output.join("\n")
    );
}
