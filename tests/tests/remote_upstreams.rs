//! The `openai` backend in front of three `infergate-fake-upstream`
//! processes: failover when one is killed, hangs, fails or slows down,
//! re-admission, the deadline and trace context upstream, streaming through
//! the OpenAI SDK, a mid-stream disconnect, and DNS discovery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use infergate_e2e::{client, repo_root, FakeUpstream, Gateway, WEB_TENANT};
use serde_json::{json, Value};

const CHAT: &str = "/v1/chat/completions";

fn upstreams(extra: &[&str]) -> Vec<FakeUpstream> {
    (0..3).map(|_| FakeUpstream::start("127.0.0.1:0", extra)).collect()
}

/// A gateway whose model `remote` is served by `endpoints`.
fn gateway(endpoints: &[String], extra: &str, env: &[(&str, &str)]) -> Gateway {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let config = format!(
        r#"{WEB_TENANT}
[[models]]
name = "remote"
task = "chat"
concurrency = 64
batch = {{ max_size = 1 }}
backend = {{ kind = "openai", endpoints = [{}], upstream_model = "fake-model", replica_concurrency = 32,
            health = {{ interval = "200ms", eject_after = 2, readmit_after = 2, eject_after_5xx = 3, cooldown = "1s" }}{extra} }}
"#,
        list.join(", ")
    );
    Gateway::start_with_env(&config, env)
}

fn chat(content: &str, stream: bool) -> Value {
    json!({"model": "remote", "messages": [{"role": "user", "content": content}], "max_tokens": 8, "stream": stream})
}

/// Send `n` requests, `concurrency` at a time; the statuses.
async fn load(gw: &Gateway, n: usize, concurrency: usize, timeout: &str) -> Vec<u16> {
    let http = client();
    let url = gw.url(CHAT);
    let mut statuses = Vec::with_capacity(n);
    for wave in (0..n).collect::<Vec<_>>().chunks(concurrency) {
        let sends = wave.iter().map(|i| {
            http.post(&url)
                .header("x-request-timeout", timeout)
                .json(&chat(&format!("request {i}"), false))
                .send()
        });
        for r in futures_util::future::join_all(sends).await {
            statuses.push(r.map_or(0, |r| r.status().as_u16()));
        }
    }
    statuses
}

/// The chat requests the upstreams recorded, all of them together.
async fn chats_seen(fakes: &[FakeUpstream]) -> Vec<Value> {
    let mut seen = Vec::new();
    for f in fakes {
        seen.extend(f.seen(CHAT).await);
    }
    seen
}

fn ok_share(statuses: &[u16]) -> f64 {
    statuses.iter().filter(|s| **s == 200).count() as f64 / statuses.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upstream_is_routed_around_and_readmitted_when_it_returns() {
    let mut fakes = upstreams(&[]);
    let gw = gateway(&fakes.iter().map(|f| f.base.clone()).collect::<Vec<_>>(), "", &[]);
    let before = load(&gw, 60, 6, "2s").await;
    assert_eq!(ok_share(&before), 1.0, "{before:?}");
    fakes[1].kill();
    let during = load(&gw, 400, 8, "2s").await;
    let share = ok_share(&during);
    assert!(share >= 0.995, "{share} of requests succeeded with one upstream killed: {during:?}");
    fakes[1].restart();
    assert_eq!(fakes[1].count(CHAT).await, 0);
    tokio::time::sleep(Duration::from_millis(1500)).await; // heartbeats re-admit it
    let after = load(&gw, 90, 6, "2s").await;
    assert_eq!(ok_share(&after), 1.0);
    assert!(fakes[1].count(CHAT).await > 10, "the restarted upstream takes traffic again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_makes_no_client_wait_past_its_deadline() {
    let fakes = upstreams(&[]);
    let gw = gateway(&fakes.iter().map(|f| f.base.clone()).collect::<Vec<_>>(), "", &[]);
    fakes[2].fault("hang").await;
    let http = client();
    let mut worst = Duration::ZERO;
    let mut ok = 0;
    for i in 0..40 {
        let start = Instant::now();
        let r =
            http.post(gw.url(CHAT)).header("x-request-timeout", "400ms").json(&chat(&format!("h{i}"), false));
        let status = r.send().await.unwrap().status();
        worst = worst.max(start.elapsed());
        ok += usize::from(status == 200);
    }
    assert!(worst < Duration::from_millis(900), "a client waited {worst:?} past a 400 ms deadline");
    assert!(ok >= 30, "{ok}/40 succeeded; once ejected the hung upstream gets no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_upstreams_are_ejected_and_slow_ones_lose_traffic() {
    let fakes = upstreams(&[]);
    let gw = gateway(&fakes.iter().map(|f| f.base.clone()).collect::<Vec<_>>(), "", &[]);
    fakes[0].fault("error").await;
    let statuses = load(&gw, 150, 6, "2s").await;
    assert!(ok_share(&statuses) >= 0.99, "retries cover the failing upstream: {statuses:?}");
    let failing = fakes[0].count(CHAT).await;
    assert!(failing <= 10, "the failing upstream was ejected after a burst ({failing} requests)");
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(-1.0, |v| v.parse().unwrap())
    };
    let down = format!("infergate_upstream_replica_up{{model=\"remote\",replica=\"{}\"}}", fakes[0].base);
    assert_eq!(value(&down), 0.0, "{metrics}");
    let up = format!("infergate_upstream_replica_up{{model=\"remote\",replica=\"{}\"}}", fakes[1].base);
    assert_eq!(value(&up), 1.0);
    assert!(value("infergate_upstream_retries_total{model=\"remote\"}") >= 1.0, "{metrics}");
    let ejected = value("infergate_upstream_ejections_total{model=\"remote\",reason=\"server_errors\"}")
        + value("infergate_upstream_ejections_total{model=\"remote\",reason=\"heartbeat\"}");
    assert!(ejected >= 1.0, "{metrics}");

    fakes[0].fault("ok").await;
    fakes[1].fault("slow").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let base: Vec<u64> = futures_util::future::join_all(fakes.iter().map(|f| f.count(CHAT))).await;
    load(&gw, 150, 6, "5s").await;
    let now: Vec<u64> = futures_util::future::join_all(fakes.iter().map(|f| f.count(CHAT))).await;
    let got: Vec<u64> = now.iter().zip(&base).map(|(a, b)| a - b).collect();
    assert!(got[1] * 4 < got[0] + got[2], "traffic shifted away from the slow upstream: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_and_trace_context_go_upstream() {
    let fakes = upstreams(&[]);
    let receiver = infergate_e2e::otlp::Receiver::start().await;
    let env = [
        ("INFERGATE__TELEMETRY__OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("INFERGATE__TELEMETRY__EXPORT_INTERVAL", "100ms"),
    ];
    let gw = gateway(&fakes.iter().map(|f| f.base.clone()).collect::<Vec<_>>(), "", &env);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client()
        .post(gw.url(CHAT))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("x-request-timeout", "3s")
        .json(&chat("trace me", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = chats_seen(&fakes).await;
    assert_eq!(seen.len(), 1);
    let traceparent = seen[0]["traceparent"].as_str().expect("a traceparent upstream");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], trace, "the same trace as the client's request");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the parent is the gateway's span, not the client's");
    let timeout = seen[0]["x_request_timeout"].as_str().unwrap();
    let ms: u64 = timeout.trim_end_matches("ms").parse().unwrap();
    assert!(ms > 1000 && ms <= 3000, "the remaining deadline went upstream: {timeout}");
    // The parent span is the gateway's CLIENT span.
    let spans =
        receiver.wait_for(Duration::from_secs(10), |s| s.iter().any(|s| s.name == "backend.request")).await;
    let client_span = spans.iter().find(|s| s.name == "backend.request").expect("a backend.request span");
    assert_eq!(client_span.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(client_span.span_id, parts[2], "the upstream's parent is the CLIENT span");
    assert_eq!(client_span.trace_id, trace);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trace_export_the_clients_trace_context_and_the_request_id_still_go_upstream() {
    let fakes = upstreams(&[]);
    let gw = gateway(&fakes.iter().map(|f| f.base.clone()).collect::<Vec<_>>(), "", &[]);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = client()
        .post(gw.url(CHAT))
        .header("traceparent", traceparent)
        .header("tracestate", "vendor=opaque")
        .header("x-request-id", "req-42")
        .json(&chat("pass it on", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = chats_seen(&fakes).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["traceparent"], traceparent, "{seen:?}");
    assert_eq!(seen[0]["tracestate"], "vendor=opaque", "{seen:?}");
    assert_eq!(seen[0]["x_request_id"], "req-42", "{seen:?}");
}

/// The names of a process's threads, from procfs.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_worker_threads_sets_the_async_workers_and_one_still_serves_concurrent_streams() {
    let fakes = upstreams(&["--token-interval", "2ms"]);
    let endpoints: Vec<String> = fakes.iter().map(|f| f.base.clone()).collect();
    let gw = gateway(&endpoints, "", &[("INFERGATE__SERVER__WORKER_THREADS", "1")]);
    // A thread is named once it first runs, which on a busy machine can be after the gateway
    // is ready: wait (up to 5 s) for the count to settle on what is expected.
    let workers = |pid: u32, expected: usize| {
        let count = || thread_names(pid).iter().filter(|n| n.as_str() == "tokio-rt-worker").count();
        let until = Instant::now() + Duration::from_secs(5);
        while count() != expected && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        count()
    };
    // One worker interleaves many streams and plain requests.
    let http = client();
    let streams = (0..16).map(|i| {
        let request = http.post(gw.url(CHAT)).json(&chat(&format!("stream {i}"), true)).send();
        async move { infergate_e2e::sse_data(&request.await.unwrap().text().await.unwrap()) }
    });
    let (streamed, statuses) =
        tokio::join!(futures_util::future::join_all(streams), load(&gw, 32, 16, "10s"));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for events in streamed {
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
        assert!(events.len() >= 3, "{events:?}");
    }
    // One worker is tokio's current-thread scheduler on the main thread: after all that
    // traffic, no thread of the work-stealing scheduler exists.
    assert_eq!(workers(gw.pid(), 0), 0, "{:?}", thread_names(gw.pid()));
    let default = gateway(&endpoints, "", &[]);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(workers(default.pid(), cpus), cpus, "0 = one worker per usable CPU");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_through_and_a_broken_stream_ends_with_an_error() {
    let fakes = upstreams(&["--token-interval", "5ms"]);
    let gw = gateway(&fakes.iter().map(|f| f.base.clone()).collect::<Vec<_>>(), "", &[]);
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/openai_sdk_chat_stream.py"))
        .args(["--base-url", &gw.url("/v1"), "--api-key", "sk-infergate-test", "--model", "remote"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result["pieces"].as_array().unwrap().len() > 3, "{result}");
    assert!(result["text"].as_str().unwrap().starts_with("[synthetic fake-model]"), "{result}");

    for f in &fakes {
        f.fault("disconnect").await;
    }
    let start = Instant::now();
    let body = json!({"model": "remote", "messages": [{"role": "user", "content": "cut"}], "max_tokens": 40, "stream": true});
    let r = client().post(gw.url(CHAT)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text =
        tokio::time::timeout(Duration::from_secs(10), r.text()).await.expect("the stream ends, no hang");
    let text = text.unwrap_or_default();
    assert!(text.contains("\"error\""), "the stream ends with an error event: {text}");
    assert!(!text.contains("[DONE]"), "a broken stream does not end as if complete: {text}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_logprobs_and_unknown_fields_come_back_from_the_upstream() {
    let fakes = upstreams(&["--token-interval", "1ms"]);
    let gw = gateway(&fakes.iter().map(|f| f.base.clone()).collect::<Vec<_>>(), "", &[]);
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/openai_sdk_tools.py"))
        .args(["--base-url", &gw.url("/v1"), "--api-key", "sk-infergate-test", "--model", "remote"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The client's name for the model, not the upstream's ("fake-model").
    assert_eq!(r["model"], "remote", "{r}");
    assert_eq!(r["stream_models"], json!(["remote"]), "{r}");
    assert_eq!(r["system_fingerprint"], "fp_fake", "{r}");
    assert_eq!(r["finish_reason"], "tool_calls", "{r}");
    assert_eq!(r["calls"][0]["name"], "lookup_capital", "{r}");
    let argument = r["calls"][0]["arguments"]["text"].as_str().unwrap();
    assert!(argument.starts_with("[synthetic fake-model]"), "{r}");
    assert_eq!(r["stream_finish_reason"], "tool_calls", "{r}");
    assert_eq!(r["stream_calls"], r["calls"], "streamed tool-call deltas add up to the same call: {r}");
    assert_eq!(r["stream_usage_only_chunks"], 0, "no usage chunk the client did not ask for: {r}");
    let tokens: String =
        r["logprob_tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tokens, r["text"].as_str().unwrap(), "{r}");

    // Image parts are the upstream's business (a vision model's), not refused here.
    let vision = json!({"model": "remote", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let r = client().post(gw.url(CHAT)).json(&vision).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Raw SSE: the first event carries the first token (the upstream's
    // role-only chunk is held for it), and usage comes when asked for.
    let body = json!({"model": "remote", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                      "stream": true, "stream_options": {"include_usage": true}});
    let text = client().post(gw.url(CHAT)).json(&body).send().await.unwrap().text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant", "{text}");
    assert_eq!(events.iter().filter(|e| e["choices"] == json!([])).count(), 1, "{text}");
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 4, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_follows_added_and_removed_replicas() {
    // One free port, three loopback addresses behind one name.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let fakes: Vec<FakeUpstream> =
        (2..=4).map(|i| FakeUpstream::start(&format!("127.0.0.{i}:{port}"), &[])).collect();
    let hosts = std::env::temp_dir().join(format!("infergate-hosts-{}", std::process::id()));
    std::fs::write(&hosts, "127.0.0.2 fake.test\n127.0.0.3 fake.test\n").unwrap();
    let endpoint = format!("dns://fake.test:{port}");
    let gw = gateway(
        &[endpoint],
        ", dns_refresh = \"200ms\"",
        &[("INFERGATE_HOSTS_FILE", hosts.to_str().unwrap())],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ok_share(&load(&gw, 60, 6, "2s").await), 1.0);
    assert!(fakes[0].count(CHAT).await > 0 && fakes[1].count(CHAT).await > 0);
    assert_eq!(fakes[2].count(CHAT).await, 0, "not in DNS yet");

    std::fs::write(&hosts, "127.0.0.3 fake.test\n127.0.0.4 fake.test\n").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let removed = fakes[0].count(CHAT).await;
    assert_eq!(ok_share(&load(&gw, 60, 6, "2s").await), 1.0);
    assert_eq!(fakes[0].count(CHAT).await, removed, "a removed replica gets no new requests");
    assert!(fakes[2].count(CHAT).await > 0, "an added replica takes traffic");
    let _ = std::fs::remove_file(&hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_beyond_the_replicas_capacity_waits_in_the_gateway_queue() {
    let fake = FakeUpstream::start("127.0.0.1:0", &["--token-interval", "20ms", "--max-batch", "1"]);
    let config = format!(
        r#"{WEB_TENANT}
[[models]]
name = "remote"
task = "chat"
concurrency = 64
batch = {{ max_size = 1 }}
backend = {{ kind = "openai", endpoints = ["{}"], replica_concurrency = 2 }}
"#,
        fake.base
    );
    let gw = Gateway::start_with(&config);
    let statuses = load(&gw, 12, 12, "20s").await;
    assert!(statuses.iter().all(|s| *s == 200), "queued, not refused: {statuses:?}");
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("infergate_upstream_outstanding{model=\"remote\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_inference_is_forwarded_to_triton_compatible_upstreams() {
    let fakes: Vec<FakeUpstream> = (0..2).map(|_| FakeUpstream::start("127.0.0.1:0", &[])).collect();
    let list: Vec<String> = fakes.iter().map(|f| format!("\"{}\"", f.base)).collect();
    let config = format!(
        r#"{WEB_TENANT}
[[models]]
name = "remote-tensor"
task = "tensor"
concurrency = 16
batch = {{ max_size = 1 }}
backend = {{ kind = "kserve", endpoints = [{}], upstream_model = "identity",
            health = {{ interval = "200ms", eject_after = 2, eject_after_5xx = 2 }} }}
"#,
        list.join(", ")
    );
    let gw = Gateway::start_with(&config);
    let url = gw.url("/v2/models/remote-tensor/infer");
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1.0, 2.5], [3.0, -4.0]]},
                                 {"name": "ids", "datatype": "INT64", "shape": [3], "data": [7, 8, 9]}]});
    let r = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["outputs"][0]["name"], "OUTPUT0");
    assert_eq!(out["outputs"][0]["data"], json!([1.0, 2.5, 3.0, -4.0]));
    assert_eq!(out["outputs"][1]["data"], json!([7, 8, 9]));
    // An output the upstream does not have: its 400 comes back as a 400.
    let mut one = body.clone();
    one["outputs"] = json!([{"name": "OUTPUT7"}]);
    let r = client().post(&url).json(&one).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("OUTPUT7"));
    // One upstream failing: requests go to the other.
    fakes[0].fault("error").await;
    for _ in 0..20 {
        assert_eq!(client().post(&url).json(&body).send().await.unwrap().status(), 200);
    }
    let seen = fakes[1].seen("/v2/models/infer").await;
    assert!(seen.len() >= 20, "the healthy upstream took the traffic");
    assert!(seen.iter().all(|r| r["x_request_timeout"].is_string()), "the deadline went upstream: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_is_forwarded_and_long_recordings_keep_their_times() {
    let fake = FakeUpstream::start("127.0.0.1:0", &[]);
    let config = format!(
        r#"{WEB_TENANT}
[audio]
max_chunk_seconds = 20

[[models]]
name = "remote-whisper"
task = "transcription"
concurrency = 8
batch = {{ max_size = 1 }}
backend = {{ kind = "openai", endpoints = ["{}"], upstream_model = "whisper-large-v3" }}
"#,
        fake.base
    );
    let gw = Gateway::start_with(&config);
    // 45 s: cut into chunks upstream, stitched back with their offsets.
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(infergate_e2e::wav(45.0, 22_050)).file_name("a.wav"))
        .text("model", "remote-whisper")
        .text("language", "de")
        .text("response_format", "verbose_json");
    let r = client().post(gw.url("/v1/audio/transcriptions")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["language"], "de", "{body}");
    let segments = body["segments"].as_array().unwrap();
    assert!(segments.len() >= 3, "{body}");
    let starts: Vec<f64> = segments.iter().map(|s| s["start"].as_f64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[1] > w[0]), "times rise across chunks: {starts:?}");
    assert!(*starts.last().unwrap() >= 20.0, "later chunks keep their offsets: {starts:?}");
    // Each segment's confidence, as the upstream gave it.
    assert!(segments.iter().all(|s| s["avg_logprob"].as_f64().is_some_and(|l| l <= -0.25)), "{body}");
    assert!(segments.iter().all(|s| s["no_speech_prob"] == 0.02), "{body}");
    assert!(body["text"].as_str().unwrap().contains("synthetic transcription"), "{body}");
    let seen = fake.count("/v1/audio").await;
    assert!(seen >= 3, "the recording went upstream in chunks ({seen})");

    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(infergate_e2e::wav(3.0, 16_000)).file_name("b.wav"))
        .text("model", "remote-whisper");
    let r = client().post(gw.url("/v1/audio/translations")).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["text"].as_str().unwrap().contains("synthetic translation"), "{body}");
}

/// Chat requests each fake has recorded (its last 256).
async fn counts(fakes: &[FakeUpstream]) -> Vec<usize> {
    let mut counts = Vec::new();
    for f in fakes {
        counts.push(f.seen(CHAT).await.len());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_load_metrics_a_replica_whose_own_queue_is_long_gets_no_new_requests() {
    // Slow tokens: the other client's replies (8-31 tokens) take 0.8-3.1 s each.
    let fakes = upstreams(&["--max-running", "1", "--token-interval", "100ms"]);
    let bases: Vec<String> = fakes.iter().map(|f| f.base.clone()).collect();
    // Readings count for 2 s, so that a loaded test machine's late reads do not age them out.
    let gw = gateway(&bases, r#", load_metrics = { interval = "100ms", max_age = "2s" }"#, &[]);
    // Another client fills the first: one running and six waiting.
    let http = client();
    let direct: Vec<_> = (0..7)
        .map(|i| {
            let request = http.post(format!("{}{CHAT}", fakes[0].base)).json(&json!({
                "model": "fake-model", "messages": [{"role": "user", "content": format!("other client {i}")}],
                "max_tokens": 200,
            }));
            tokio::spawn(request.send())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = http.get(format!("{}/metrics", fakes[0].base)).send().await.unwrap().text().await.unwrap();
        if page.contains("vllm:num_requests_waiting{model_name=\"fake-model\"} 6\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the queue never formed: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two readings later the gateway knows.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let before = counts(&fakes).await;
    // Two at a time, one token each (0.1 s): the others never hold as many
    // as the first's seven, whose queue lasts longer than this.
    for _ in 0..10 {
        let sends = (0..2).map(|i| {
            let body = json!({"model": "remote", "messages": [{"role": "user", "content": format!("ours {i}")}], "max_tokens": 1});
            http.post(gw.url(CHAT)).json(&body).send()
        });
        for r in futures_util::future::join_all(sends).await {
            assert_eq!(r.unwrap().status(), 200);
        }
    }
    let after = counts(&fakes).await;
    let sent: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(sent[0], 0, "the queued replica got requests: {sent:?}");
    assert_eq!(sent[1] + sent[2], 20, "{sent:?}");
    direct.iter().for_each(tokio::task::JoinHandle::abort);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prefix_affinity_prompts_sharing_a_long_prefix_go_to_one_replica() {
    let fakes = upstreams(&[]);
    let bases: Vec<String> = fakes.iter().map(|f| f.base.clone()).collect();
    let gw = gateway(&bases, ", prefix_affinity = { tokens = 32 }", &[]);
    let http = client();
    let mut homes = Vec::new();
    for language in ["German", "Japanese"] {
        // About 220 bytes of instructions: more than 32 tokens of 4 bytes.
        let system =
            format!("You translate the user's text from English into {language}, keeping names. ").repeat(3);
        let before = counts(&fakes).await;
        for i in 0..9 {
            let body = json!({"model": "remote", "max_tokens": 4, "messages": [
                {"role": "system", "content": system}, {"role": "user", "content": format!("sentence number {i}")}]});
            let r = http.post(gw.url(CHAT)).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let after = counts(&fakes).await;
        let sent: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let home = sent.iter().position(|&n| n == 9);
        assert!(home.is_some(), "{language}: {sent:?}");
        homes.push(home);
    }
    assert_ne!(homes[0], homes[1], "a new prefix goes to the replica holding the fewest");
    // Short prompts have no affinity: they spread.
    let before = counts(&fakes).await;
    let statuses = load(&gw, 30, 3, "10s").await;
    assert!(statuses.iter().all(|s| *s == 200));
    let after = counts(&fakes).await;
    let used = after.iter().zip(&before).filter(|(a, b)| a > b).count();
    assert!(used >= 2, "{before:?} -> {after:?}");
}
