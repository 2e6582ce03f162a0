//! A real Prometheus (Debian package, installed by `scripts/setup.sh`)
//! scrapes the gateway under a short load; then every PromQL expression in
//! `dashboards/*.json`, with Grafana's variables substituted, must be valid
//! and return at least one series.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use infergate_e2e::{client, repo_root, Gateway};
use serde_json::{json, Value};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(e)) = map.get("expr") {
                out.push(e.clone());
            }
            map.values().for_each(|v| exprs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Grafana's variables, as a dashboard would resolve them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$model", ".*")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_is_valid_and_returns_series() {
    let gw = Gateway::start("examples/synthetic.toml");
    let dir = std::env::temp_dir().join(format!("infergate-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = gw.base.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: infergate\n    static_configs:\n      - targets: [\"{target}\"]\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (scripts/setup.sh installs the Debian package)"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();

    // A short, bounded load touching every model, plus some refusals.
    let client = client();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let calls = [
            client
                .post(gw.url("/v1/chat/completions"))
                .json(&json!({"model": "synthetic-chat", "messages": [{"role": "user", "content": "hi"}]})),
            client
                .post(gw.url("/v1/embeddings"))
                .json(&json!({"model": "synthetic-embed", "input": ["a", "b"]})),
            client.post(gw.url("/v1/moderations")).json(&json!({"input": "text"})),
            client.post(gw.url("/v1/chat/completions")).json(&json!({"model": "synthetic-chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]})),
            client
                .post(gw.url("/v1/chat/completions"))
                .header("x-request-timeout", "1ms")
                .json(&json!({"model": "synthetic-chat", "messages": [{"role": "user", "content": "hi"}]})),
        ];
        futures_util::future::join_all(calls.map(|c| c.send())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wait until Prometheus has scraped a few times.
    let ready = Instant::now();
    loop {
        let up = http
            .get(format!("{api}/query"))
            .query(&[("query", "count_over_time(up{job=\"infergate\"}[1m])")])
            .send()
            .await;
        let samples = match up {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["data"]["result"][0]["value"][1].as_str().map(str::to_owned)),
            Err(_) => None,
        };
        if samples.and_then(|s| s.parse::<f64>().ok()).is_some_and(|n| n >= 3.0) {
            break;
        }
        assert!(ready.elapsed() < Duration::from_secs(30), "Prometheus did not scrape the gateway");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "dashboards: {files:?}");
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut found = Vec::new();
        exprs(&dashboard["panels"], &mut found);
        assert!(!found.is_empty(), "{file} has no queries");
        for expr in found {
            let query = substitute(&expr);
            let body: Value = http
                .get(format!("{api}/query"))
                .query(&[("query", &query)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            checked += 1;
            if body["status"] != "success" {
                failures.push(format!("{file}: invalid: {query}: {}", body["error"]));
            } else if body["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                failures.push(format!("{file}: no series: {query}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
