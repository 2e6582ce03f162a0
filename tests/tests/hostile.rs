//! One hostile or careless request at a time, against the real binary:
//! each is answered quickly with a clear 4xx (or a correct result), leaks
//! nothing of the upstreams, and leaves the gateway serving others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use infergate_e2e::{
    client, cpu_after_a_second, flac_silence, status_kib, wav, Gateway, TEST_KEY, WEB_TENANT,
};
use serde_json::{json, Value};

fn config(extra: &str) -> String {
    format!(
        r#"{WEB_TENANT}
[server]
body_read_timeout = "2s"

[[models]]
name = "whisper"
task = "transcription"
backend = {{ kind = "synthetic" }}

[[models]]
name = "embed"
task = "embeddings"
backend = {{ kind = "synthetic", dimensions = 8 }}
{extra}
"#
    )
}

async fn transcribe(gateway: &Gateway, file: Vec<u8>) -> (u16, Value, Duration) {
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper")
        .part("file", reqwest::multipart::Part::bytes(file).file_name("a.wav"));
    let start = Instant::now();
    let response =
        client().post(gateway.url("/v1/audio/transcriptions")).multipart(form).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null), start.elapsed())
}

/// `wav` with its header's sample rate replaced.
fn with_rate(mut file: Vec<u8>, rate: u32) -> Vec<u8> {
    file[24..28].copy_from_slice(&rate.to_le_bytes());
    file
}

#[tokio::test]
async fn audio_is_bounded_by_its_sample_rate_and_decodes_in_linear_time() {
    let gateway = Gateway::start_with(&config(""));
    // Headers claiming 4 GHz or 400 kHz: refused from the header.
    for rate in [4_000_000_000u32, 400_000, 1] {
        let (status, body, took) = transcribe(&gateway, with_rate(wav(1.0, 16_000), rate)).await;
        assert_eq!(status, 400, "{rate} Hz: {body}");
        assert_eq!(body["error"]["param"], "file", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("sample rate"), "{body}");
        assert!(took < Duration::from_secs(5), "{rate} Hz took {took:?}");
    }
    // 30 s at the highest rate accepted: decoded and resampled in one pass.
    let (status, body, took) = transcribe(&gateway, wav(30.0, 192_000)).await;
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(30), "192 kHz took {took:?}");
}

#[tokio::test]
async fn a_small_flac_of_long_audio_stops_when_its_client_leaves_and_stays_in_memory_bounds() {
    let gateway = Gateway::start_with(&config(""));
    // The default limit's 30 minutes at 192 kHz in 8 channels, in under 1 MB:
    // 2.8 billion samples to decode, downmix and resample.
    let bomb = flac_silence(1800, 192_000, 8);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    assert_eq!(transcribe(&gateway, wav(1.0, 16_000)).await.0, 200);
    let idle = status_kib(gateway.pid(), "VmRSS:");

    let form = reqwest::multipart::Form::new()
        .text("model", "whisper")
        .part("file", reqwest::multipart::Part::bytes(bomb).file_name("long.flac"));
    let sent = client()
        .post(gateway.url("/v1/audio/transcriptions"))
        .multipart(form)
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(sent.as_ref().is_err_and(reqwest::Error::is_timeout), "still decoding after 1 s: {sent:?}");
    // Within a second of the client leaving, decoding has stopped.
    let used = cpu_after_a_second(gateway.pid()).await;
    assert!(used < 0.3, "{used:.2} s of CPU in the 2 s after the first second");
    let peak = status_kib(gateway.pid(), "VmHWM:");
    assert!(peak < idle + 1024 * 1024, "peak RSS {peak} KiB vs idle {idle} KiB");
    assert_eq!(transcribe(&gateway, wav(1.0, 16_000)).await.0, 200, "the gateway still serves");
}

#[tokio::test]
async fn made_up_methods_do_not_grow_the_metrics() {
    let gateway = Gateway::start_with(&config(""));
    let plain = reqwest::Client::new();
    let size =
        || async { plain.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap().len() };
    let _ = plain.get(gateway.url("/v1/models")).send().await.unwrap();
    let before = size().await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let response = plain.request(method, gateway.url("/v1/models")).send().await.unwrap();
        assert!(response.status().is_client_error());
    }
    let after = size().await;
    assert!(after < before + 8 * 1024, "/metrics grew from {before} to {after} bytes");
    let text = plain.get(gateway.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("_OTHER") && !text.contains("BREW"), "made-up methods are one label");
}

#[tokio::test]
async fn request_ids_are_bounded_and_minted_ids_are_random() {
    let gateway = Gateway::start_with(&config(""));
    let get = |id: Option<String>| {
        let mut request = client().get(gateway.url("/v1/models"));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        async move { request.send().await.unwrap().headers()["x-request-id"].to_str().unwrap().to_owned() }
    };
    assert_eq!(get(Some("client-id-42".into())).await, "client-id-42");
    let long = get(Some("x".repeat(10_000))).await;
    assert_eq!(long.len(), 36, "a 10 KB id is replaced by a minted one");
    let (a, b) = (get(None).await, get(None).await);
    let bits = |s: &str| u128::from_str_radix(&s.replace('-', ""), 16).unwrap();
    let differing = (bits(&a) ^ bits(&b)).count_ones();
    assert!(differing > 30, "consecutive ids {a} and {b} differ in only {differing} bits");
}

#[test]
fn a_trickled_body_times_out_in_total() {
    let gateway = Gateway::start_with(&config(""));
    let address = gateway.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = json!({"model": "embed", "input": "x".repeat(200)}).to_string();
    write!(
        stream,
        "POST /v1/embeddings HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TEST_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // One byte every 200 ms: never idle for long, never done in 2 s.
    let start = Instant::now();
    let mut answer = Vec::new();
    for byte in body.as_bytes() {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if start.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
}

/// An upstream answering every request with `status` and `body`.
async fn upstream(status: u16, body: Value) -> String {
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(body)) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test]
async fn upstream_failures_leak_no_address_credentials_or_text() {
    let secret_text = "key sk-live-0123456789abcdefABCDEF for http://10.9.8.7:9000/v1 at /srv/models/llama";
    let auth =
        upstream(401, json!({"error": {"message": format!("Incorrect API key: {secret_text}")}})).await;
    let refused = upstream(
        400,
        json!({"error": {"message": format!("'tools' is not supported ({secret_text})"), "param": "tools", "code": "unsupported"}}),
    )
    .await;
    let failing = upstream(500, json!({"error": {"message": secret_text}})).await;
    let with_key = |base: &str| base.replace("http://", "http://admin:hunter2@");
    let models = format!(
        r#"
[[models]]
name = "auth"
task = "chat"
backend = {{ kind = "openai", endpoints = ["{}"] }}

[[models]]
name = "refused"
task = "chat"
backend = {{ kind = "openai", endpoints = ["{}"] }}

[[models]]
name = "failing"
task = "chat"
backend = {{ kind = "openai", endpoints = ["{}"] }}
"#,
        with_key(&auth),
        with_key(&refused),
        with_key(&failing)
    );
    let gateway = Gateway::start_with(&config(&models));
    let ask = |model: &'static str| {
        let url = gateway.url("/v1/chat/completions");
        async move {
            let body =
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
            let response = client().post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let leaks = |text: &str| {
        ["sk-live", "10.9.8.7", "/srv/models", "hunter2", "admin", "127.0.0.1"]
            .into_iter()
            .find(|s| text.contains(s))
    };
    let (status, text) = ask("auth").await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("upstream_auth"), "{text}");
    assert_eq!(leaks(&text), None, "{text}");
    let (status, text) = ask("refused").await;
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (body["error"]["param"].as_str(), body["error"]["code"].as_str()),
        (Some("tools"), Some("unsupported"))
    );
    assert!(body["error"]["message"].as_str().unwrap().starts_with("'tools' is not supported"), "{text}");
    assert_eq!(leaks(&text), None, "{text}");
    let (status, text) = ask("failing").await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(leaks(&text), None, "{text}");
    // Nor do the metrics name the credentials.
    let metrics = reqwest::get(gateway.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("hunter2") && !metrics.contains("admin:"), "credentials in /metrics");
}
