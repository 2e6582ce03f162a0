//! Malformed requests across every route: each gets the right 4xx in its
//! API's error shape, and the server keeps serving good requests meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use infergate_e2e::{wav, Gateway, TEST_KEY, WEB_TENANT};
use reqwest::Method;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[server]
max_body_bytes = 65536

[limits]
max_audio_bytes = 32768
max_completion_tokens = 512
max_inputs = 16


[[models]]
name = "chat"
task = "chat"
backend = { kind = "synthetic" }

[[models]]
name = "embed"
task = "embeddings"
backend = { kind = "synthetic", dimensions = 32 }

[[models]]
name = "whisper"
task = "transcription"
backend = { kind = "synthetic" }

[[models]]
name = "moderation"
task = "moderation"
backend = { kind = "synthetic" }

[[models]]
name = "tensor"
task = "tensor"
backend = { kind = "synthetic" }
"#;

/// Which error body to expect.
#[derive(Clone, Copy, Debug)]
enum Shape {
    OpenAi,
    KServe,
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Body,
    status: u16,
    shape: Shape,
    /// Expected OpenAI `param`, when the error is about one field.
    param: Option<&'static str>,
}

enum Body {
    None,
    Bytes(Vec<u8>),
    /// Sent chunked, without Content-Length.
    Chunked(Vec<u8>),
}

fn json_case(
    name: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    param: Option<&'static str>,
) -> Case {
    raw(name, path, "application/json", body.to_string().into_bytes(), status, param)
}

fn raw(
    name: &'static str,
    path: &'static str,
    ct: &str,
    body: Vec<u8>,
    status: u16,
    param: Option<&'static str>,
) -> Case {
    let shape = if path.starts_with("/v2/models") { Shape::KServe } else { Shape::OpenAi };
    Case {
        name,
        method: Method::POST,
        path,
        content_type: Some(ct.to_owned()),
        headers: vec![],
        body: Body::Bytes(body),
        status,
        shape,
        param,
    }
}

fn chat_with(extra: Value) -> Value {
    let mut body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn embed(input: Value) -> Value {
    json!({"model": "embed", "input": input})
}

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, data) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn audio(
    name: &'static str,
    parts: &[(&str, Option<&str>, &[u8])],
    status: u16,
    param: Option<&'static str>,
) -> Case {
    raw(
        name,
        "/v1/audio/transcriptions",
        "multipart/form-data; boundary=XyZ",
        multipart("XyZ", parts),
        status,
        param,
    )
}

fn tensor(name: &'static str, input: Value, status: u16) -> Case {
    json_case(name, "/v2/models/tensor/infer", json!({"inputs": [input]}), status, None)
}

fn cases() -> Vec<Case> {
    let good_wav = wav(0.5, 16_000);
    let header_only = wav(0.0, 16_000);
    let big_wav = wav(1.5, 16_000);
    let mut cases = vec![
        raw(
            "chat: invalid JSON",
            "/v1/chat/completions",
            "application/json",
            b"{\"model\":".to_vec(),
            400,
            None,
        ),
        raw(
            "chat: trailing garbage",
            "/v1/chat/completions",
            "application/json",
            br#"{"model":"chat","messages":[]} x"#.to_vec(),
            400,
            None,
        ),
        raw(
            "chat: invalid UTF-8",
            "/v1/chat/completions",
            "application/json",
            b"{\"model\":\"\xff\xfe\",\"messages\":[]}".to_vec(),
            400,
            None,
        ),
        json_case("chat: body is an array", "/v1/chat/completions", json!([1, 2]), 400, None),
        json_case(
            "chat: missing model",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}]}),
            400,
            None,
        ),
        json_case("chat: missing messages", "/v1/chat/completions", json!({"model": "chat"}), 400, None),
        json_case(
            "chat: empty messages",
            "/v1/chat/completions",
            json!({"model": "chat", "messages": []}),
            400,
            Some("messages"),
        ),
        json_case(
            "chat: messages is a string",
            "/v1/chat/completions",
            json!({"model": "chat", "messages": "hi"}),
            400,
            Some("messages"),
        ),
        json_case(
            "chat: unknown role",
            "/v1/chat/completions",
            json!({"model": "chat", "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            Some("messages[0].role"),
        ),
        json_case(
            "chat: content is a number",
            "/v1/chat/completions",
            json!({"model": "chat", "messages": [{"role": "user", "content": 5}]}),
            400,
            Some("messages[0].content"),
        ),
        json_case(
            "chat: user without content",
            "/v1/chat/completions",
            json!({"model": "chat", "messages": [{"role": "user"}]}),
            400,
            Some("messages[0].content"),
        ),
        json_case(
            "chat: image part to a text model",
            "/v1/chat/completions",
            chat_with(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}),
            ),
            400,
            Some("messages[0].content"),
        ),
        json_case(
            "chat: negative max_tokens",
            "/v1/chat/completions",
            chat_with(json!({"max_tokens": -5})),
            400,
            Some("max_tokens"),
        ),
        json_case(
            "chat: huge max_tokens",
            "/v1/chat/completions",
            chat_with(json!({"max_tokens": 1_000_000_000_000i64})),
            400,
            Some("max_tokens"),
        ),
        json_case(
            "chat: fractional max_completion_tokens",
            "/v1/chat/completions",
            chat_with(json!({"max_completion_tokens": 1e30})),
            400,
            Some("max_completion_tokens"),
        ),
        json_case(
            "chat: temperature 5",
            "/v1/chat/completions",
            chat_with(json!({"temperature": 5})),
            400,
            Some("temperature"),
        ),
        json_case(
            "chat: temperature is a string",
            "/v1/chat/completions",
            chat_with(json!({"temperature": "hot"})),
            400,
            Some("temperature"),
        ),
        json_case(
            "chat: negative top_p",
            "/v1/chat/completions",
            chat_with(json!({"top_p": -1})),
            400,
            Some("top_p"),
        ),
        json_case("chat: n = 3", "/v1/chat/completions", chat_with(json!({"n": 3})), 400, Some("n")),
        json_case("chat: n = 0", "/v1/chat/completions", chat_with(json!({"n": 0})), 400, Some("n")),
        json_case(
            "chat: five stop sequences",
            "/v1/chat/completions",
            chat_with(json!({"stop": ["a", "b", "c", "d", "e"]})),
            400,
            Some("stop"),
        ),
        json_case(
            "chat: stream is a string",
            "/v1/chat/completions",
            chat_with(json!({"stream": "yes"})),
            400,
            Some("stream"),
        ),
        json_case(
            "chat: stream_options without stream",
            "/v1/chat/completions",
            chat_with(json!({"stream_options": {"include_usage": true}})),
            400,
            Some("stream_options"),
        ),
        json_case(
            "chat: tools",
            "/v1/chat/completions",
            chat_with(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})),
            400,
            Some("tools"),
        ),
        json_case(
            "chat: unknown model",
            "/v1/chat/completions",
            chat_with(json!({"model": "gpt-9"})),
            404,
            Some("model"),
        ),
        json_case(
            "chat: embeddings model",
            "/v1/chat/completions",
            chat_with(json!({"model": "embed"})),
            400,
            Some("model"),
        ),
        raw(
            "chat: text/plain body",
            "/v1/chat/completions",
            "text/plain",
            chat_with(json!({})).to_string().into_bytes(),
            415,
            None,
        ),
        json_case(
            "chat: deeply nested JSON",
            "/v1/chat/completions",
            serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap(),
            400,
            None,
        ),
        json_case("embeddings: empty string", "/v1/embeddings", embed(json!("")), 400, Some("input")),
        json_case("embeddings: empty array", "/v1/embeddings", embed(json!([])), 400, Some("input")),
        json_case("embeddings: mixed array", "/v1/embeddings", embed(json!([1, "a"])), 400, Some("input[1]")),
        json_case(
            "embeddings: negative token id",
            "/v1/embeddings",
            embed(json!([1, -2])),
            400,
            Some("input[1]"),
        ),
        json_case(
            "embeddings: token id over u32",
            "/v1/embeddings",
            embed(json!([[1, 99_999_999_999i64]])),
            400,
            Some("input[0][1]"),
        ),
        json_case(
            "embeddings: object input",
            "/v1/embeddings",
            embed(json!({"text": "x"})),
            400,
            Some("input"),
        ),
        json_case(
            "embeddings: too many inputs",
            "/v1/embeddings",
            embed(json!(vec!["x"; 17])),
            400,
            Some("input"),
        ),
        json_case("embeddings: null input", "/v1/embeddings", embed(Value::Null), 400, Some("input")),
        json_case(
            "embeddings: bad encoding_format",
            "/v1/embeddings",
            json!({"model": "embed", "input": "x", "encoding_format": "hex"}),
            400,
            Some("encoding_format"),
        ),
        json_case(
            "embeddings: negative dimensions",
            "/v1/embeddings",
            json!({"model": "embed", "input": "x", "dimensions": -1}),
            400,
            Some("dimensions"),
        ),
        json_case(
            "embeddings: too many dimensions",
            "/v1/embeddings",
            json!({"model": "embed", "input": "x", "dimensions": 4096}),
            400,
            None,
        ),
        json_case(
            "embeddings: chat model",
            "/v1/embeddings",
            json!({"model": "chat", "input": "x"}),
            400,
            Some("model"),
        ),
        json_case("moderation: number input", "/v1/moderations", json!({"input": 42}), 400, Some("input")),
        json_case(
            "moderation: remote image URL",
            "/v1/moderations",
            json!({"input": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}}]}),
            400,
            Some("input[0]"),
        ),
        json_case(
            "moderation: broken base64 image",
            "/v1/moderations",
            json!({"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}),
            400,
            Some("input[0]"),
        ),
        json_case(
            "moderation: audio part",
            "/v1/moderations",
            json!({"input": [{"type": "input_audio", "input_audio": {}}]}),
            400,
            Some("input[0]"),
        ),
        json_case(
            "moderation: unknown model",
            "/v1/moderations",
            json!({"input": "x", "model": "omni-9"}),
            404,
            Some("model"),
        ),
        raw(
            "audio: JSON instead of multipart",
            "/v1/audio/transcriptions",
            "application/json",
            b"{}".to_vec(),
            415,
            None,
        ),
        raw(
            "audio: broken multipart",
            "/v1/audio/transcriptions",
            "multipart/form-data; boundary=XyZ",
            b"--XyZ\r\nContent-Disposition: garbage\r\n\r\n".to_vec(),
            400,
            None,
        ),
        raw(
            "audio: multipart without boundary",
            "/v1/audio/transcriptions",
            "multipart/form-data",
            b"--\r\n".to_vec(),
            400,
            None,
        ),
        audio("audio: missing file", &[("model", None, b"whisper")], 400, Some("file")),
        audio("audio: missing model", &[("file", Some("a.wav"), &good_wav)], 400, Some("model")),
        audio(
            "audio: empty file",
            &[("file", Some("a.wav"), b""), ("model", None, b"whisper")],
            400,
            Some("file"),
        ),
        audio(
            "audio: a PDF",
            &[("file", Some("a.pdf"), b"%PDF-1.7 not audio"), ("model", None, b"whisper")],
            400,
            Some("file"),
        ),
        audio(
            "audio: truncated WAV",
            &[("file", Some("a.wav"), &good_wav[..30]), ("model", None, b"whisper")],
            400,
            Some("file"),
        ),
        audio(
            "audio: zero-length WAV",
            &[("file", Some("a.wav"), &header_only), ("model", None, b"whisper")],
            400,
            Some("file"),
        ),
        audio(
            "audio: over the audio limit",
            &[("file", Some("a.wav"), &big_wav), ("model", None, b"whisper")],
            413,
            None,
        ),
        audio(
            "audio: bad response_format",
            &[
                ("file", Some("a.wav"), &good_wav),
                ("model", None, b"whisper"),
                ("response_format", None, b"mp3"),
            ],
            400,
            Some("response_format"),
        ),
        audio(
            "audio: bad temperature",
            &[("file", Some("a.wav"), &good_wav), ("model", None, b"whisper"), ("temperature", None, b"7")],
            400,
            Some("temperature"),
        ),
        audio(
            "audio: bad language",
            &[
                ("file", Some("a.wav"), &good_wav),
                ("model", None, b"whisper"),
                ("language", None, b"English!"),
            ],
            400,
            Some("language"),
        ),
        audio(
            "audio: unknown model",
            &[("file", Some("a.wav"), &good_wav), ("model", None, b"whisper-9")],
            404,
            Some("model"),
        ),
        tensor(
            "kserve: shape mismatch",
            json!({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}),
            400,
        ),
        tensor(
            "kserve: unknown datatype",
            json!({"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}),
            400,
        ),
        tensor(
            "kserve: strings for FP32",
            json!({"name": "x", "shape": [1], "datatype": "FP32", "data": ["one"]}),
            400,
        ),
        tensor(
            "kserve: UINT8 out of range",
            json!({"name": "x", "shape": [1], "datatype": "UINT8", "data": [300]}),
            400,
        ),
        tensor(
            "kserve: overflowing shape",
            json!({"name": "x", "shape": [4294967296u64, 4294967296u64], "datatype": "FP32", "data": []}),
            400,
        ),
        json_case("kserve: no inputs", "/v2/models/tensor/infer", json!({"inputs": []}), 400, None),
        json_case(
            "kserve: unknown model",
            "/v2/models/resnet/infer",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            404,
            None,
        ),
        json_case(
            "kserve: unknown version",
            "/v2/models/tensor/versions/7/infer",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            404,
            None,
        ),
        json_case(
            "kserve: chat model",
            "/v2/models/chat/infer",
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            400,
            None,
        ),
        raw(
            "kserve: invalid JSON",
            "/v2/models/tensor/infer",
            "application/json",
            b"{inputs".to_vec(),
            400,
            None,
        ),
    ];
    // Cases that need headers, methods or bodies beyond a plain POST.
    let mut oversize = json_case(
        "chat: body over the limit",
        "/v1/chat/completions",
        chat_with(json!({"pad": "x".repeat(70_000)})),
        413,
        None,
    );
    oversize.param = None;
    cases.push(oversize);
    let mut chunked =
        json_case("chat: chunked body over the limit", "/v1/chat/completions", json!({}), 413, None);
    chunked.body = Body::Chunked(chat_with(json!({"pad": "x".repeat(70_000)})).to_string().into_bytes());
    cases.push(chunked);
    let mut no_ct =
        json_case("chat: no content type", "/v1/chat/completions", chat_with(json!({})), 415, None);
    no_ct.content_type = None;
    cases.push(no_ct);
    for (name, header, value, status, param) in [
        ("auth: wrong API key", "authorization", "Bearer sk-wrong", 401, None),
        ("auth: empty bearer", "authorization", "Bearer ", 401, None),
        ("deadline: timeout is prose", "x-request-timeout", "soon", 400, Some("x-request-timeout")),
        ("deadline: zero timeout", "x-request-timeout", "0s", 400, Some("x-request-timeout")),
        ("deadline: not RFC 3339", "x-request-deadline", "next tuesday", 400, Some("x-request-deadline")),
        ("priority: unknown class", "x-priority", "urgent", 400, Some("x-priority")),
    ] {
        let mut case = json_case(name, "/v1/chat/completions", chat_with(json!({})), status, param);
        case.headers.push((header, value.to_owned()));
        cases.push(case);
    }
    let mut no_key = json_case("auth: no API key", "/v1/embeddings", embed(json!("x")), 401, None);
    no_key.headers.push(("authorization", String::new()));
    cases.push(no_key);
    cases.push(Case {
        name: "route: unknown path",
        method: Method::GET,
        path: "/v1/engines",
        content_type: None,
        headers: vec![],
        body: Body::None,
        status: 404,
        shape: Shape::OpenAi,
        param: None,
    });
    cases.push(Case {
        name: "route: wrong method",
        method: Method::GET,
        path: "/v1/chat/completions",
        content_type: None,
        headers: vec![],
        body: Body::None,
        status: 405,
        shape: Shape::OpenAi,
        param: None,
    });
    cases
}

async fn send(client: &reqwest::Client, gw: &Gateway, case: &Case) -> reqwest::Response {
    let mut request = client.request(case.method.clone(), gw.url(case.path));
    let overrides_auth = case.headers.iter().any(|(h, _)| *h == "authorization");
    if !overrides_auth {
        request = request.header("authorization", format!("Bearer {TEST_KEY}"));
    }
    for (h, v) in &case.headers {
        if !(*h == "authorization" && v.is_empty()) {
            request = request.header(*h, v);
        }
    }
    if let Some(ct) = &case.content_type {
        request = request.header("content-type", ct);
    }
    request = match &case.body {
        Body::None => request,
        Body::Bytes(b) => request.body(b.clone()),
        Body::Chunked(b) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                b.chunks(8192).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        }
    };
    request.send().await.unwrap_or_else(|e| panic!("{}: {e:?}", case.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors_and_do_not_disturb_others() {
    let gw = Gateway::start_with(&format!("{CONFIG}{WEB_TENANT}"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let cases = cases();
    assert!(cases.len() >= 40, "the table holds {} cases", cases.len());

    // Good requests keep flowing while the bad ones arrive.
    let good = {
        let client = client.clone();
        let url = gw.url("/v1/embeddings");
        tokio::spawn(async move {
            let mut served = 0;
            for i in 0..60 {
                let r = client
                    .post(&url)
                    .bearer_auth(TEST_KEY)
                    .json(&json!({"model": "embed", "input": format!("good request {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                served += 1;
            }
            served
        })
    };

    let mut failures = Vec::new();
    for case in &cases {
        let response = send(&client, &gw, case).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let shape_ok = match case.shape {
            Shape::OpenAi => {
                let e = &body["error"];
                e["message"].as_str().is_some_and(|m| !m.is_empty())
                    && e["type"].is_string()
                    && e.get("param").is_some()
                    && e.get("code").is_some()
            }
            Shape::KServe => body["error"].as_str().is_some_and(|m| !m.is_empty()),
        };
        let param_ok = case.param.is_none_or(|p| body["error"]["param"] == p);
        if status != case.status || !shape_ok || !param_ok {
            failures.push(format!(
                "{}: expected {} {:?} param {:?}, got {status} {text}",
                case.name, case.status, case.shape, case.param
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(good.await.unwrap(), 60, "every good request succeeded");

    let health = client.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the server keeps serving");
}
