//! Every route of the real binary with `examples/synthetic.toml`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use infergate_e2e::{client, sse_data, wav, Gateway};
use serde_json::{json, Value};

fn gateway() -> Gateway {
    Gateway::start("examples/synthetic.toml")
}

#[tokio::test]
async fn health_readiness_metrics_and_models() {
    let gw = gateway();
    let open = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/v2"] {
        let r = open.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} needs no key and is healthy");
    }
    let ready: Value = open.get(gw.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    let models: Value = client().get(gw.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> =
        models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "synthetic-chat",
            "synthetic-embed",
            "synthetic-whisper",
            "synthetic-moderation",
            "synthetic-tensor"
        ]
    );
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["owned_by"], "infergate-synthetic");

    let one: Value =
        client().get(gw.url("/v1/models/synthetic-embed")).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["id"], "synthetic-embed");
    let missing = client().get(gw.url("/v1/models/gpt-5")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // One request so the route's series exist, then read them.
    let metrics = open.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_server_request_duration_seconds_bucket{"), "{metrics}");
    assert!(metrics.contains("http_route=\"/v1/models\""), "{metrics}");
    assert!(metrics
        .contains("infergate_scheduler_rejections_total{model=\"synthetic-chat\",reason=\"queue_full\"} 0"));
}

#[tokio::test]
async fn chat_completion_json() {
    let gw = gateway();
    let request = json!({
        "model": "synthetic-chat",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 5,
        "user": "someone", "metadata": {"a": "b"},
    });
    let response = client().post(gw.url("/v1/chat/completions")).json(&request).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["x-infergate-batch-size"], "1");
    let queue_ms: f64 = response.headers()["x-infergate-queue-ms"].to_str().unwrap().parse().unwrap();
    assert!((0.0..5000.0).contains(&queue_ms));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "synthetic-chat");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].as_str().unwrap().starts_with("[synthetic synthetic-chat]"));
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let usage = &body["usage"];
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + 5));
}

#[tokio::test]
async fn chat_completion_streams_chunks_usage_and_done() {
    let gw = gateway();
    let request = json!({
        "model": "synthetic-chat",
        "messages": [{"role": "user", "content": "Stream please"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = client().post(gw.url("/v1/chat/completions")).json(&request).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(chunks.iter().all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str()).map(str::to_owned))
        .collect();
    assert!(text.starts_with("[synthetic synthetic-chat]"));
    let content_chunks =
        chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(content_chunks.count() >= 8, "one chunk per token");

    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let completion = usage_chunk["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(
        completion as usize,
        text.split(' ').count() - 1,
        "label counts as one token, then one per word"
    );
    assert!(rest.iter().all(|c| c["usage"].is_null()));
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");

    // Without include_usage there is no usage chunk and no usage key.
    let request =
        json!({"model": "synthetic-chat", "messages": [{"role": "user", "content": "x"}], "stream": true});
    let body = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(e).unwrap();
        assert!(chunk.get("usage").is_none());
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn embeddings_float_base64_and_token_inputs() {
    let gw = gateway();
    let texts = ["the cat sat on the mat", "the cat sat on a mat", "quarterly revenue grew"];
    let float: Value = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "synthetic-embed", "input": texts}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(float["object"], "list");
    let vectors: Vec<Vec<f32>> = float["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 384));
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]));
    assert!(float["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let b64: Value = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "synthetic-embed", "input": texts, "encoding_format": "base64"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (d, expected) in b64["data"].as_array().unwrap().iter().zip(&vectors) {
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(d["embedding"].as_str().unwrap()).unwrap();
        let decoded: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(&decoded, expected, "base64 carries the same little-endian f32 values");
    }

    let tokens: Value = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "synthetic-embed", "input": [[1, 2, 3], [4, 5]], "dimensions": 64}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["data"].as_array().unwrap().len(), 2);
    assert_eq!(tokens["data"][0]["embedding"].as_array().unwrap().len(), 64);
    assert_eq!(tokens["usage"]["prompt_tokens"], 5);
}

#[tokio::test]
async fn concurrent_embeddings_are_batched() {
    let gw = gateway();
    let client = client();
    let requests = (0..24).map(|i| {
        let client = client.clone();
        let url = gw.url("/v1/embeddings");
        async move {
            let r = client
                .post(url)
                .json(&json!({"model": "synthetic-embed", "input": format!("text {i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-infergate-batch-size"].to_str().unwrap().parse::<usize>().unwrap()
        }
    });
    let sizes = futures_util::future::join_all(requests).await;
    assert!(sizes.iter().all(|s| (1..=32).contains(s)));
    assert!(sizes.iter().any(|s| *s > 1), "24 concurrent requests share batches: {sizes:?}");

    // Measured batches feed the scheduler's latency model, whose error is exported.
    let metrics = reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("infergate_latency_prediction_error_ratio{model=\"synthetic-embed\"}"))
        .unwrap_or_else(|| panic!("no prediction error gauge:\n{metrics}"));
    let error: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(error.is_finite() && error >= 0.0, "{line}");
}

async fn upload(gw: &Gateway, route: &str, format: &str) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(wav(12.5, 16_000))
        .file_name("speech.wav")
        .mime_str("audio/wav")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("model", "synthetic-whisper")
        .text("response_format", format.to_owned())
        .text("language", "de")
        .text("timestamp_granularities[]", "segment");
    client().post(gw.url(route)).multipart(form).send().await.unwrap()
}

#[tokio::test]
async fn audio_transcription_and_translation_in_every_format() {
    let gw = gateway();
    let json: Value = upload(&gw, "/v1/audio/transcriptions", "json").await.json().await.unwrap();
    assert!(json["text"].as_str().unwrap().contains("synthetic transcription"));

    let verbose: Value = upload(&gw, "/v1/audio/transcriptions", "verbose_json").await.json().await.unwrap();
    assert_eq!(verbose["task"], "transcribe");
    assert_eq!(verbose["language"], "de");
    assert!((verbose["duration"].as_f64().unwrap() - 12.5).abs() < 1e-6);
    let segments = verbose["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[1]["start"], 10.0);
    assert_eq!(segments[1]["end"], 12.5);

    let text = upload(&gw, "/v1/audio/translations", "text").await;
    assert!(text.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(text.text().await.unwrap().contains("synthetic translation"));

    let srt = upload(&gw, "/v1/audio/transcriptions", "srt").await.text().await.unwrap();
    assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:10,000\n"), "{srt}");
    assert!(srt.contains("2\n00:00:10,000 --> 00:00:12,500\n"), "{srt}");
    let vtt = upload(&gw, "/v1/audio/transcriptions", "vtt").await.text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:10.000\n"), "{vtt}");

    let translated: Value = upload(&gw, "/v1/audio/translations", "verbose_json").await.json().await.unwrap();
    assert_eq!(translated["task"], "translate");
    assert_eq!(translated["language"], "en");
}

#[tokio::test]
async fn moderation_of_text_and_images() {
    let gw = gateway();
    let body: Value = client()
        .post(gw.url("/v1/moderations"))
        .json(&json!({"input": ["a calm sentence", "a synthetic-flag sentence"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["model"], "synthetic-moderation");
    assert!(body["id"].as_str().unwrap().starts_with("modr-"));
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], false);
    assert_eq!(results[1]["flagged"], true);
    assert_eq!(results[1]["categories"]["violence"], true);
    assert_eq!(results[0]["category_applied_input_types"]["hate"], json!(["text"]));

    let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nnot really");
    let multimodal = json!({
        "model": "synthetic-moderation",
        "input": [
            {"type": "text", "text": "caption"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
        ],
    });
    let body: Value = client()
        .post(gw.url("/v1/moderations"))
        .json(&multimodal)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = &body["results"][0];
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "a multi-modal list is judged as one input");
    assert_eq!(result["category_applied_input_types"]["sexual"], json!(["image", "text"]));
    assert_eq!(result["category_applied_input_types"]["hate"], json!(["text"]));
}

#[tokio::test]
async fn kserve_metadata_readiness_and_infer() {
    let gw = gateway();
    let meta: Value =
        client().get(gw.url("/v2/models/synthetic-tensor")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["name"], "synthetic-tensor");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(client().get(gw.url("/v2/models/synthetic-tensor/ready")).send().await.unwrap().status(), 200);
    assert_eq!(
        client().get(gw.url("/v2/models/synthetic-tensor/versions/1/ready")).send().await.unwrap().status(),
        200
    );
    let missing = client().get(gw.url("/v2/models/nope/ready")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert!(error["error"].is_string(), "KServe error shape: {error}");

    let request = json!({
        "id": "req-7",
        "inputs": [
            {"name": "INPUT0", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6.5]]},
            {"name": "INPUT1", "shape": [2], "datatype": "INT64", "data": [-1, 9007199254740993i64]},
            {"name": "INPUT2", "shape": [1], "datatype": "BYTES", "data": ["hello"]},
        ],
        "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1"}, {"name": "OUTPUT2"}],
    });
    for path in ["/v2/models/synthetic-tensor/infer", "/v2/models/synthetic-tensor/versions/1/infer"] {
        let response = client().post(gw.url(path)).json(&request).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["model_name"], "synthetic-tensor");
        assert_eq!(body["id"], "req-7");
        let out = &body["outputs"];
        assert_eq!(out[0]["shape"], json!([2, 3]));
        assert_eq!(out[0]["datatype"], "FP32");
        assert_eq!(out[0]["data"], json!([1.0, 2.0, 3.0, 4.0, 5.0, 6.5]));
        assert_eq!(out[1]["data"], json!([-1, 9007199254740993i64]), "INT64 survives exactly");
        assert_eq!(out[2]["data"], json!(["hello"]));
    }
}

#[tokio::test]
async fn request_ids_are_returned_and_honoured() {
    let gw = gateway();
    let response =
        client().get(gw.url("/v1/models")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let minted = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(minted.headers()["x-request-id"].len(), 36, "a UUID when the client sends none");
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let gw = gateway();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = h2.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
}

/// Triton's binary tensor extension: a body the header does not describe is
/// a 400 in KServe's error shape, naming what is wrong.
#[tokio::test]
async fn malformed_binary_tensor_bodies_are_400s() {
    let gw = gateway();
    let header = |inputs: Value| serde_json::to_vec(&json!({ "inputs": inputs })).unwrap();
    let fp32 = |size: u64| json!([{"name": "INPUT0", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": size}}]);
    let with = |json: Vec<u8>, tail: &[u8], length: String| {
        let mut body = json;
        body.extend_from_slice(tail);
        (body, length)
    };
    let good = header(fp32(8));
    let cases = [
        (
            "length past the body",
            with(good.clone(), &[0; 8], "100000".into()),
            "inference-header-content-length",
        ),
        ("not a number", with(good.clone(), &[0; 8], "ten".into()), "inference-header-content-length"),
        ("short data", with(good.clone(), &[0; 4], good.len().to_string()), "only 4 bytes"),
        ("extra bytes", with(good.clone(), &[0; 12], good.len().to_string()), "belong to no input"),
        ("size not the shape's", with(header(fp32(4)), &[0; 4], header(fp32(4)).len().to_string()), "take 8"),
        (
            "data and binary",
            {
                let h = header(
                    json!([{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": {"binary_data_size": 4}}]),
                );
                let n = h.len().to_string();
                with(h, &[0; 4], n)
            },
            "both data",
        ),
    ];
    for (what, (body, length), needle) in cases {
        let response = client()
            .post(gw.url("/v2/models/synthetic-tensor/infer"))
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", length)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{what}");
        let error: Value = response.json().await.unwrap();
        let message = error["error"].as_str().unwrap_or_default().to_ascii_lowercase();
        assert!(message.contains(needle), "{what}: {error}");
    }
    // And the same binary body, well formed, is answered.
    let mut body = good.clone();
    body.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
    let response = client()
        .post(gw.url("/v2/models/synthetic-tensor/infer"))
        .header("inference-header-content-length", good.len().to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["outputs"][0]["data"], json!([1.0, 2.0]), "outputs in JSON unless asked for binary");
}
