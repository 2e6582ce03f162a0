//! The official OpenAI Python SDK streams a completion from the in-process
//! SmolLM2 model (`make run`'s `smollm2-135m-instruct`) through the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use infergate_e2e::{assert_the_openai_sdk_streams, decoding_steps, Gateway};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_from_the_in_process_model() {
    let gw = Gateway::start("examples/embedded.toml");
    assert_the_openai_sdk_streams(&gw, "smollm2-135m-instruct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_decode_together_and_a_disconnect_stops_decoding() {
    let gw = Gateway::start("examples/embedded.toml");
    let http = reqwest::Client::new();
    let ask = |prompt: &str, max_tokens: u32, stream: bool| {
        http.post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-infergate-dev")
            .json(&json!({
                "model": "smollm2-135m-instruct",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens, "temperature": 0, "stream": stream,
            }))
            .send()
    };
    // Six at once on two sessions: they share running sets.
    let prompts = [
        "Name a colour.",
        "Name a fruit.",
        "Name a country.",
        "Name an animal.",
        "Name a city.",
        "Name a tree.",
    ];
    let answers = futures_util::future::join_all(prompts.iter().map(|p| ask(p, 24, false))).await;
    let mut largest = 0;
    for answer in answers {
        let r = answer.unwrap();
        assert_eq!(r.status(), 200);
        let size: usize = r.headers()["x-infergate-batch-size"].to_str().unwrap().parse().unwrap();
        largest = largest.max(size);
        let body: Value = r.json().await.unwrap();
        assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{body}");
    }
    assert!(largest >= 2, "requests joined a running set (largest {largest})");

    // A client that leaves mid-stream: its sequence leaves at the next step.
    let mut r = ask("Count from one to five hundred, one number per line.", 500, true).await.unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..3 {
        r.chunk().await.unwrap().unwrap();
    }
    drop(r);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let settled = decoding_steps(&gw, "smollm2-135m-instruct").await;
    assert!(settled > 0, "the metrics count this model's steps");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        decoding_steps(&gw, "smollm2-135m-instruct").await,
        settled,
        "decoding stopped after the disconnect"
    );

    // The model still answers, and translates (a smoke test: a 135M model's
    // German is not judged).
    let r = http
        .post(gw.url("/v2/translate"))
        .header("authorization", "DeepL-Auth-Key sk-infergate-dev")
        .json(&json!({ "text": ["Good morning, how are you?", "Thank you very much."], "target_lang": "DE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    for t in body["translations"].as_array().unwrap() {
        assert_eq!(t["detected_source_language"], "EN", "{body}");
        assert!(!t["text"].as_str().unwrap().trim().is_empty(), "{body}");
    }
}
