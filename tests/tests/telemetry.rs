//! Traces exported over OTLP/HTTP to an in-process receiver: the span tree of
//! a chat request that continues the caller's trace, a batched embeddings
//! request (the batch span linked to every member), and a refused request.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use infergate_e2e::otlp::{ReceivedLog, ReceivedSpan, Receiver};
use infergate_e2e::{client, Gateway, WEB_TENANT};
use serde_json::json;

const MODELS: &str = r#"
[[models]]
name = "chat"
task = "chat"
backend = { kind = "synthetic", base_latency = "2ms" }

[[models]]
name = "embed"
task = "embeddings"
batch = { max_size = 8, max_delay = "30ms" }
backend = { kind = "synthetic", base_latency = "2ms" }

[[models]]
name = "slow"
task = "chat"
backend = { kind = "synthetic", base_latency = "2s" }

[[models]]
name = "busy"
task = "chat"
policy = "fifo"
backend = { kind = "synthetic", base_latency = "1500ms" }
"#;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const STREAM_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";

async fn receiver_logs(receiver: &Receiver, done: impl Fn(&ReceivedLog) -> bool) -> Vec<ReceivedLog> {
    let start = std::time::Instant::now();
    loop {
        let logs = receiver.logs();
        if logs.iter().any(&done) || start.elapsed() > Duration::from_secs(10) {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], what: impl Fn(&ReceivedSpan) -> bool, label: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| what(s)).collect();
    assert_eq!(found.len(), 1, "expected one {label}, found {}: {spans:#?}", found.len());
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_every_hop_reach_an_otlp_receiver() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start_with_env(
        &format!("{WEB_TENANT}{MODELS}"),
        &[
            ("INFERGATE__TELEMETRY__OTLP_ENDPOINT", receiver.endpoint.as_str()),
            ("INFERGATE__TELEMETRY__EXPORT_INTERVAL", "100ms"),
            ("INFERGATE__TELEMETRY__METRICS_INTERVAL", "200ms"),
            // Refusals log at debug, inside the request: they must reach the receiver.
            ("RUST_LOG", "warn,infergate_gateway=debug"),
        ],
    );
    let client = client();

    // 1. A chat request that continues the caller's trace.
    let response = client
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "secret prompt"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The latency histogram carries the trace as an exemplar (OpenMetrics);
    // checked now, before later requests replace the bucket's exemplar.
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("http_server_request_duration_seconds_bucket")
            && l.contains("http_route=\"/v1/chat/completions\"")
            && l.contains(&format!("# {{trace_id=\"{TRACE}\"}}"))),
        "no exemplar for trace {TRACE}:\n{text}"
    );

    // 1b. A streamed chat request in its own caller trace.
    let streamed = client
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{STREAM_TRACE}-{PARENT}-01"))
        .json(&json!({"model": "chat", "stream": true, "messages": [{"role": "user", "content": "stream"}]}))
        .send()
        .await
        .unwrap();
    assert!(streamed.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    // 2. Four embeddings at once, batched together (30 ms max delay).
    let calls = (0..4).map(|i| {
        client
            .post(gw.url("/v1/embeddings"))
            .json(&json!({"model": "embed", "input": format!("text {i}")}))
            .send()
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap().status(), 200);
    }

    // 3. A request admission refuses: 2 s of work, 50 ms of deadline.
    let refused = client
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-timeout", "50ms")
        .json(&json!({"model": "slow", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);

    // 4. A client that gives up while its request is queued behind another.
    let first = tokio::spawn({
        let request = client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "busy", "messages": [{"role": "user", "content": "first"}]}));
        async move { request.send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let impatient = client
        .post(gw.url("/v1/chat/completions"))
        .timeout(Duration::from_millis(200))
        .json(&json!({"model": "busy", "messages": [{"role": "user", "content": "second"}]}))
        .send()
        .await;
    assert!(impatient.is_err(), "the client gave up");
    let _ = first.await;

    let spans = receiver
        .wait_for(Duration::from_secs(15), |s| {
            s.iter().any(|s| s.attr("scheduler.decision") == Some("cancelled"))
                && s.iter().filter(|s| s.name == "batch").count() >= 2
                && s.iter().filter(|s| s.attr("http.response.status_code") == Some("503")).count() == 1
                && s.iter().filter(|s| s.name == "POST /v1/embeddings").count() == 4
        })
        .await;

    // The chat request: server span under the caller's span, then queue, batch, backend.
    let server =
        one(&spans, |s| s.trace_id == TRACE && s.name == "POST /v1/chat/completions", "chat server span");
    assert_eq!(server.parent_span_id, PARENT, "an incoming traceparent makes the server span its child");
    assert_eq!(server.kind, 2, "SERVER");
    assert_eq!(server.service_name, "infergate");
    assert_eq!(server.attr("http.route"), Some("/v1/chat/completions"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(server.attr("gen_ai.request.model"), Some("chat"));
    assert!(server.attr("gen_ai.usage.output_tokens").is_some());
    let queue = one(&spans, |s| s.name == "queue" && s.parent_span_id == server.span_id, "chat queue span");
    assert_eq!(queue.attr("scheduler.decision"), Some("dispatched"));
    assert!(queue.attr("queue.wait_ms").is_some() && queue.attr("batch.size").is_some());
    let batch =
        one(&spans, |s| s.name == "batch" && s.links.iter().any(|l| l.1 == queue.span_id), "chat batch span");
    assert_eq!(batch.links, vec![(TRACE.to_owned(), queue.span_id.clone())]);
    one(&spans, |s| s.name == "backend.execute" && s.parent_span_id == batch.span_id, "backend span");
    for hop in ["decode", "encode"] {
        let span = one(&spans, |s| s.name == hop && s.parent_span_id == server.span_id, hop);
        assert_eq!(span.trace_id, TRACE);
    }

    // The streamed request: the same tree.
    let stream_server = one(&spans, |s| s.trace_id == STREAM_TRACE && s.kind == 2, "stream server span");
    assert_eq!(stream_server.name, "POST /v1/chat/completions");
    assert_eq!(stream_server.attr("http.response.status_code"), Some("200"));
    assert!(stream_server.attr("gen_ai.usage.output_tokens").is_some(), "{stream_server:#?}");
    assert_eq!(stream_server.attr("gen_ai.response.finish_reasons"), Some("stop"));
    let stream_queue =
        one(&spans, |s| s.name == "queue" && s.parent_span_id == stream_server.span_id, "stream queue");
    one(&spans, |s| s.name == "batch" && s.links.iter().any(|l| l.1 == stream_queue.span_id), "stream batch");

    // The embeddings batch links to the queue span of each member's own trace.
    let embed_batch = spans
        .iter()
        .filter(|s| s.name == "batch" && s.attr("model") == Some("embed"))
        .max_by_key(|s| s.links.len())
        .expect("an embeddings batch");
    assert!(embed_batch.links.len() >= 2, "{embed_batch:#?}");
    for (trace, span) in &embed_batch.links {
        let member = one(&spans, |s| &s.span_id == span && &s.trace_id == trace, "linked member");
        assert_eq!(member.name, "queue");
        let server = one(&spans, |s| s.span_id == member.parent_span_id, "member server span");
        assert_eq!(server.name, "POST /v1/embeddings");
    }

    // The refused request still has a complete trace that says why.
    let refused = one(&spans, |s| s.attr("http.response.status_code") == Some("503"), "refused server span");
    assert_eq!(refused.attr("error.type"), Some("deadline_infeasible"));
    let queue =
        one(&spans, |s| s.name == "queue" && s.parent_span_id == refused.span_id, "refused queue span");
    assert_eq!(queue.attr("scheduler.decision"), Some("refused"));
    assert_eq!(queue.attr("scheduler.reason"), Some("deadline_infeasible"));

    // The cancelled request's trace says so.
    let cancelled =
        one(&spans, |s| s.attr("scheduler.decision") == Some("cancelled"), "cancelled queue span");
    assert_eq!(cancelled.attr("scheduler.reason"), Some("client_disconnected"));
    assert_eq!(cancelled.attr("model"), Some("busy"));
    // ... and so does its server span, which never got a response.
    let gone = one(&spans, |s| s.span_id == cancelled.parent_span_id, "disconnected server span");
    assert_eq!(gone.attr("error.type"), Some("client_disconnected"));
    assert_eq!(gone.attr("http.response.status_code"), None);

    // The refusal's log record arrives over OTLP in the refused request's trace.
    let logs = receiver_logs(&receiver, |l| l.trace_id == refused.trace_id).await;
    let log = logs.iter().find(|l| l.trace_id == refused.trace_id).expect("a log in the refused trace");
    assert_eq!(log.span_id, refused.span_id, "{log:#?}");
    assert_eq!(log.severity, "DEBUG");

    // Metrics arrive over OTLP under their OpenTelemetry names, with exemplars.
    let metrics = receiver
        .wait_for_metrics(Duration::from_secs(10), |m| {
            m.iter().any(|m| {
                m.name == "infergate.telemetry.items"
                    && m.points.iter().any(|p| p.attributes["signal"] == "spans" && p.value > 0.0)
            })
        })
        .await;
    let last = |name: &str| metrics.iter().rev().find(|m| m.name == name).unwrap_or_else(|| panic!("{name}"));
    let http = last("http.server.request.duration");
    assert_eq!((http.kind, http.unit.as_str(), http.service_name.as_str()), ("histogram", "s", "infergate"));
    let chat = http
        .points
        .iter()
        .find(|p| {
            p.attributes["http.route"] == "/v1/chat/completions"
                && p.attributes["http.response.status_code"] == "200"
        })
        .expect("chat requests");
    assert!(chat.value >= 2.0 && chat.buckets.iter().sum::<u64>() as f64 == chat.value, "{chat:?}");
    assert!(!chat.exemplar_traces.is_empty(), "{chat:?}");
    // The disconnected request is counted under 499.
    assert!(http.points.iter().any(|p| p.attributes["http.response.status_code"] == "499"), "{http:?}");
    let refusals = last("infergate.scheduler.rejections");
    assert_eq!(refusals.kind, "sum");
    assert!(refusals
        .points
        .iter()
        .any(|p| p.attributes["reason"] == "deadline_infeasible" && p.value == 1.0));
    let in_flight = last("infergate.requests.in_flight");
    assert_eq!(in_flight.kind, "gauge");

    // Request content never reaches a span.
    assert!(spans.iter().all(|s| s.attributes.values().all(|v| !v.contains("secret prompt"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_never_slows_requests() {
    // Nothing listens on this port: every export fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let gw = Gateway::start_with_env(
        &format!("{WEB_TENANT}{MODELS}"),
        &[
            ("INFERGATE__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("INFERGATE__TELEMETRY__EXPORT_INTERVAL", "10ms"),
            ("INFERGATE__TELEMETRY__MAX_QUEUE", "64"),
        ],
    );
    let client = client();
    let start = std::time::Instant::now();
    for i in 0..200 {
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-timeout", "2s")
            .json(&json!({"model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": format!("text {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // 200 sequential requests of a few milliseconds each; a request waiting on
    // telemetry would add the export timeout (5 s) or more.
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    let health = client.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // The failed exports are counted, not silently lost.
    let mut failed = 0.0;
    for _ in 0..50 {
        failed = telemetry_items(&gw, "spans", "export_failed").await;
        if failed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed > 0.0, "no failed span export counted");
}

/// The value of `infergate_telemetry_items_total{signal,outcome}` on `/metrics`.
async fn telemetry_items(gw: &Gateway, signal: &str, outcome: &str) -> f64 {
    let text = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    let prefix = format!("infergate_telemetry_items_total{{signal=\"{signal}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_costs_requests_nothing_and_lost_spans_are_counted() {
    // Accepts connections and never answers: every export waits for its timeout.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", hung.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let gw = Gateway::start_with_env(
        &format!("{WEB_TENANT}{MODELS}"),
        &[
            ("INFERGATE__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("INFERGATE__TELEMETRY__EXPORT_INTERVAL", "10ms"),
            ("INFERGATE__TELEMETRY__MAX_QUEUE", "16"),
        ],
    );
    let client = client();
    let start = std::time::Instant::now();
    for i in 0..100 {
        let r = client
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": format!("text {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    // Each request makes several spans; 16 fit in the queue, one export is stuck.
    let dropped = telemetry_items(&gw, "spans", "queue_full").await;
    assert!(dropped >= 100.0, "spans dropped: {dropped}");
    assert_eq!(telemetry_items(&gw, "spans", "exported").await, 0.0);
    holder.abort();
}
