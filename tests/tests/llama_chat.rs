//! Chat and translation on llama.cpp in process: `make run`'s
//! qwen2.5-coder-0.5b-instruct (the GGUF that scripts/setup.sh joins from
//! its PyPI wheels) through the gateway, with the official OpenAI SDK and
//! plain HTTP: streaming, stop sequences, the token limit, JSON output,
//! refusals, continuous batching, disconnects, and DeepL translations that
//! are the translation only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use infergate_e2e::{assert_the_openai_sdk_streams, decoding_steps, Gateway};
use serde_json::{json, Value};

const MODEL: &str = "qwen2.5-coder-0.5b-instruct";

/// The embedded default's model and translation settings, alone.
fn gateway() -> Gateway {
    Gateway::start_with(&format!(
        r#"
[translation]
model = "{MODEL}"
languages = ["DE", "EN", "ES", "FR", "IT", "JA", "ZH"]

[[tenants]]
name = "dev"
class = "interactive"
api_key_sha256 = ["348613c1e5dc4804ae3fb0eda6c4cd64a232d888d16c565ccd5282b2dc43f06d"]

[[models]]
name = "{MODEL}"
task = "chat"
default_timeout = "120s"
backend = {{ kind = "llama", model = "models/gguf/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", threads = 2, max_sequences = 8, kv_tokens = 16384 }}
"#
    ))
}

async fn chat(gw: &Gateway, body: Value) -> reqwest::Response {
    let mut body = body;
    body["model"] = json!(MODEL);
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-infergate-dev")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The model's running sequences and KV cache utilization, from `/metrics`.
async fn pool_gauges(gw: &Gateway) -> (f64, f64) {
    let text = infergate_e2e::metrics_text(gw).await;
    let series = |name: &str| infergate_e2e::metric(&text, &format!("{name}{{model=\"{MODEL}\"}}"));
    (series("infergate_model_running_requests"), series("infergate_model_kv_cache_utilization"))
}

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_from_llama_cpp() {
    let gw = gateway();
    assert_the_openai_sdk_streams(&gw, MODEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_end_at_a_stop_sequence_or_the_token_limit_and_json_is_one_object() {
    let gw = gateway();
    let count = user("Count from 1 to 10, separated by commas. Only the numbers.");

    let r =
        chat(&gw, json!({ "messages": count, "temperature": 0, "max_tokens": 60, "stop": [", 4"] })).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert!(text.contains('3') && !text.contains('4'), "cut before the stop sequence: {text:?}");

    let r = chat(&gw, json!({ "messages": count, "temperature": 0, "max_tokens": 3 })).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");

    // Sampled, seeded: the same seed, the same answer.
    let poem = json!({ "messages": user("Write a line about the sea."), "temperature": 0.9, "seed": 7, "max_tokens": 24 });
    let first: Value = chat(&gw, poem.clone()).await.json().await.unwrap();
    let again: Value = chat(&gw, poem).await.json().await.unwrap();
    assert_eq!(first["choices"][0]["message"], again["choices"][0]["message"]);

    // response_format json_object: the grammar keeps the answer one object.
    let r = chat(
        &gw,
        json!({
            "messages": user("Describe France with its name, capital and population."),
            "temperature": 0, "max_tokens": 120, "response_format": { "type": "json_object" },
        }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    let object: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    assert!(object.is_object(), "{object}");

    let r = chat(
        &gw,
        json!({ "messages": count, "response_format": { "type": "json_schema", "json_schema": { "name": "n", "schema": {} } } }),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "response_format", "{body}");

    // Longer than a sequence's share of the KV cache (2048 tokens): refused
    // before any decoding, in OpenAI's error shape.
    let long = "Please summarise the following list. ".to_owned() + &"alpha beta gamma delta ".repeat(700);
    let r = chat(&gw, json!({ "messages": user(&long), "max_tokens": 8 })).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("2048"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_requests_decode_together_and_clients_that_leave_free_their_sequences() {
    let gw = gateway();
    let things = ["a colour", "a fruit", "a country", "an animal", "a city", "a tree", "a river", "a planet"];
    let asks = things.iter().map(|t| {
        chat(
            &gw,
            json!({ "messages": user(&format!("Name {t}. One word.")), "temperature": 0, "max_tokens": 16 }),
        )
    });
    let mut largest = 0;
    for r in futures_util::future::join_all(asks).await {
        assert_eq!(r.status(), 200);
        let size: usize = r.headers()["x-infergate-batch-size"].to_str().unwrap().parse().unwrap();
        largest = largest.max(size);
        let body: Value = r.json().await.unwrap();
        assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().trim().is_empty(), "{body}");
    }
    assert!(largest >= 4, "requests joined one running set (largest {largest})");

    // Eight streams that leave after their first tokens: every one of the
    // eight KV-cache streams must come free again.
    let long = json!({ "messages": user("Count from one to five hundred, one number per line."), "max_tokens": 1000, "stream": true });
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(chat(&gw, long.clone()));
    }
    let mut streams = futures_util::future::join_all(streams).await;
    for r in &mut streams {
        if r.status() != 200 {
            let status = r.status();
            panic!("{status}: {:?}", r.chunk().await);
        }
        r.chunk().await.unwrap().unwrap();
    }
    // While all eight decode, the inference extension's gauges say so:
    // eight sequences running, nothing queued, part of the KV budget held.
    let (running, held) = pool_gauges(&gw).await;
    assert_eq!(running, 8.0, "eight sequences decode");
    assert!(held > 0.0 && held <= 1.0, "KV cache utilization {held}");
    drop(streams);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = decoding_steps(&gw, MODEL).await;
    assert!(settled > 0, "the metrics count this model's steps");
    assert_eq!(pool_gauges(&gw).await, (0.0, 0.0), "the sequences that left hold nothing");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(decoding_steps(&gw, MODEL).await, settled, "decoding stopped after the disconnects");
    let again = (0..8)
        .map(|_| chat(&gw, json!({ "messages": user("Say hello."), "max_tokens": 8, "temperature": 0 })));
    for r in futures_util::future::join_all(again).await {
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepl_translations_are_the_translation_only() {
    let gw = gateway();
    let translate = |text: &str, source: Option<&str>, target: &str| {
        let mut body = json!({ "text": [text], "target_lang": target });
        if let Some(source) = source {
            body["source_lang"] = json!(source);
        }
        reqwest::Client::new()
            .post(gw.url("/v2/translate"))
            .header("authorization", "DeepL-Auth-Key sk-infergate-dev")
            .json(&body)
            .send()
    };
    let cases = [
        ("Good morning, how are you?", Some("EN"), "DE", "wie geht"),
        ("Ich habe heute leider keine Zeit.", Some("DE"), "EN-GB", "time"),
        ("Merci beaucoup pour votre aide.", None, "EN-US", "thank"),
        ("Thank you very much.", Some("EN"), "JA", "ありがとう"),
        ("Where is the train station?", Some("EN"), "ZH", "站"),
    ];
    for (text, source, target, expected) in cases {
        let r = translate(text, source, target).await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let out = body["translations"][0]["text"].as_str().unwrap();
        assert!(out.to_lowercase().contains(expected), "{text} -> {target}: {out:?}");
        assert!(!out.contains(text), "not an echo of the source: {out:?}");
        assert!(!out.to_lowercase().contains("translat"), "no commentary: {out:?}");
    }

    // What the model translates, and nothing else.
    let list = |kind: &str| {
        reqwest::Client::new()
            .get(gw.url(&format!("/v2/languages?type={kind}")))
            .header("authorization", "DeepL-Auth-Key sk-infergate-dev")
            .send()
    };
    let sources: Value = list("source").await.unwrap().json().await.unwrap();
    let codes: Vec<&str> =
        sources.as_array().unwrap().iter().map(|l| l["language"].as_str().unwrap()).collect();
    assert_eq!(codes, ["DE", "EN", "ES", "FR", "IT", "JA", "ZH"]);
    let targets: Value = list("target").await.unwrap().json().await.unwrap();
    let codes: Vec<&str> =
        targets.as_array().unwrap().iter().map(|l| l["language"].as_str().unwrap()).collect();
    assert!(codes.contains(&"EN-GB") && codes.contains(&"ZH-HANS") && !codes.contains(&"PT-BR"), "{codes:?}");
    let r = translate("Good night.", None, "PT-BR").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Value for 'target_lang' not supported.", "{body}");
}
