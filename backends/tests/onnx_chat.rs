//! The chat pipeline on the real SmolLM2-135M-Instruct (converted by
//! `scripts/setup.sh` into models/smollm2/) against Python onnxruntime's
//! greedy completion of the same prompt (`tests/fixtures/chat_reference.json`,
//! made by `scripts/reference/chat.py`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use infergate_backends::onnx::{OnnxBackend, OnnxConfig};
use infergate_backends::{
    Backend, ChatMessage, ChatOutput, ChatRequest, Event, FinishReason, Item, Output, Request,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn backend() -> OnnxBackend {
    let text = format!(
        "pipeline = \"chat\"\nmodel = \"{}\"\nintra_threads = 2",
        root().join("models/smollm2").display()
    );
    OnnxBackend::load("smollm2", &toml::from_str::<OnnxConfig>(&text).unwrap()).unwrap()
}

fn request(
    messages: Vec<ChatMessage>,
    max_tokens: u32,
    temperature: f32,
    seed: Option<u64>,
    stream: bool,
) -> ChatRequest {
    ChatRequest { messages, max_tokens, temperature, top_p: 0.9, seed, stop: Vec::new(), stream }
}

/// Run one request; its streamed deltas and its output.
async fn run(backend: &OnnxBackend, request: ChatRequest) -> (String, ChatOutput) {
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let item = Item { request: Request::Chat(request), cost: 1.0, cancel: CancellationToken::new(), events };
    backend.execute(vec![item]).await;
    let mut deltas = String::new();
    loop {
        match rx.recv().await.unwrap() {
            Event::Delta(d) => deltas.push_str(&d),
            Event::Done(Output::Chat(out)) => return (deltas, out),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_decoding_matches_python_onnxruntime_and_sampling_is_reproducible() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/chat_reference.json")).unwrap(),
    )
    .unwrap();
    let messages: Vec<ChatMessage> = fixture["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage {
            role: m["role"].as_str().unwrap().into(),
            content: m["content"].as_str().unwrap().into(),
        })
        .collect();
    let backend = backend();
    let (deltas, out) = run(&backend, request(messages.clone(), 32, 0.0, None, true)).await;
    assert_eq!(out.prompt_tokens as usize, fixture["prompt_ids"].as_array().unwrap().len());
    assert_eq!(out.completion_tokens, 32);
    assert_eq!(out.text, fixture["output_text"].as_str().unwrap(), "greedy text differs from onnxruntime's");
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(deltas, out.text, "the streamed pieces add up to the text");

    // The capital of France, and a stop at the end-of-turn token.
    let capital = vec![ChatMessage { role: "user".into(), content: "What is the capital of France?".into() }];
    let (_, out) = run(&backend, request(capital.clone(), 40, 0.0, None, false)).await;
    assert!(out.text.contains("Paris"), "{out:?}");
    assert_eq!(out.finish_reason, FinishReason::Stop);

    // Sampling: the same seed gives the same text.
    let (_, a) = run(&backend, request(capital.clone(), 16, 0.9, Some(7), false)).await;
    let (_, b) = run(&backend, request(capital, 16, 0.9, Some(7), false)).await;
    assert_eq!(a.text, b.text);
}
