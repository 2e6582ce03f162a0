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
    ChatRequest {
        messages,
        max_tokens,
        temperature,
        top_p: 0.9,
        top_k: None,
        seed,
        stop: Vec::new(),
        stream,
        json: false,
        passthrough: None,
    }
}

/// Run one request; its streamed deltas and its output.
async fn run(backend: &OnnxBackend, request: ChatRequest) -> (String, ChatOutput) {
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let item = Item {
        request: Request::Chat(request),
        cost: 1.0,
        cancel: CancellationToken::new(),
        events,
        deadline: None,
        span: tracing::Span::none(),
        forwarded: Default::default(),
    };
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

fn user(content: &str) -> Vec<ChatMessage> {
    vec![ChatMessage { role: "user".into(), content: content.into() }]
}

/// An item and the receiver of its events.
fn item(request: ChatRequest) -> (Item, tokio::sync::mpsc::UnboundedReceiver<Event>) {
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    (
        Item {
            request: Request::Chat(request),
            cost: 1.0,
            cancel: CancellationToken::new(),
            events,
            deadline: None,
            span: tracing::Span::none(),
            forwarded: Default::default(),
        },
        rx,
    )
}

/// Collect an item's streamed text into `deltas`; its output once finished.
fn finished(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>, deltas: &mut String) -> Option<ChatOutput> {
    while let Ok(event) = rx.try_recv() {
        match event {
            Event::Delta(d) => deltas.push_str(&d),
            Event::Done(Output::Chat(out)) => return Some(out),
            other => panic!("{other:?}"),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_batching_joins_and_leaves_at_steps_without_changing_greedy_output() {
    let backend = backend();
    let prompts = [
        ("What is the capital of France?", 24),
        ("Write a haiku about the sea.", 40),
        ("List three primary colours.", 12),
        ("Translate 'good morning' into German.", 30),
    ];
    // Alone, one after another.
    let mut alone = Vec::new();
    for (prompt, max) in prompts {
        alone.push(run(&backend, request(user(prompt), max, 0.0, None, true)).await.1);
    }
    // Together on one lane: the first starts alone, the second joins two
    // steps later, the last two join together after that; each leaves when done.
    let generator = backend.generator().expect("chat steps");
    assert_eq!((generator.lanes(), generator.max_sequences()), (1, 64));
    let mut items: Vec<_> =
        prompts.iter().map(|(p, max)| item(request(user(p), *max, 0.0, None, true))).collect();
    let mut receivers: Vec<_> = items.iter_mut().map(|_| None).collect();
    let mut pending: Vec<_> = items.drain(..).map(Some).collect();
    let mut join = |indices: &[usize]| -> Vec<Item> {
        indices
            .iter()
            .map(|&i| {
                let (item, rx) = pending[i].take().unwrap();
                receivers[i] = Some(rx);
                item
            })
            .collect()
    };
    let first = generator.step(0, join(&[0])).await;
    assert_eq!((first.running, first.sequences), (1, 1));
    generator.step(0, Vec::new()).await;
    let second = generator.step(0, join(&[1])).await;
    assert_eq!(second.sequences, 2, "the second joined the running one");
    let third = generator.step(0, join(&[2, 3])).await;
    assert_eq!(third.sequences, 4);
    assert!(third.reserved > 0 && third.tokens > 4, "{third:?}");
    let mut outputs: Vec<Option<ChatOutput>> = vec![None, None, None, None];
    let mut deltas = vec![String::new(); 4];
    let mut steps = 0;
    let mut sizes = Vec::new();
    while outputs.iter().any(Option::is_none) {
        let report = generator.step(0, Vec::new()).await;
        sizes.push(report.sequences);
        for (i, rx) in receivers.iter_mut().enumerate() {
            if let Some(done) = rx.as_mut().and_then(|rx| finished(rx, &mut deltas[i])) {
                outputs[i] = Some(done);
            }
        }
        steps += 1;
        assert!(steps < 200, "decoding never finished");
    }
    assert!(sizes.windows(2).any(|w| w[1] < w[0]), "finished sequences left the batch: {sizes:?}");
    assert_eq!(generator.step(0, Vec::new()).await.running, 0);
    for (i, out) in outputs.into_iter().map(Option::unwrap).enumerate() {
        assert_eq!(out.text, alone[i].text, "request {i} decoded in a batch differs from alone");
        assert_eq!(out.completion_tokens, alone[i].completion_tokens);
        assert_eq!(deltas[i], out.text, "request {i}'s streamed pieces add up to its text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sequence_leaves_and_the_others_finish() {
    let backend = backend();
    let generator = backend.generator().expect("chat steps");
    let (a, mut ra) = item(request(user("Count from one to fifty."), 200, 0.0, None, true));
    let (b, mut rb) = item(request(user("Name a fruit."), 16, 0.0, None, false));
    let cancel = a.cancel.clone();
    generator.step(0, vec![a, b]).await;
    generator.step(0, Vec::new()).await;
    cancel.cancel();
    let report = generator.step(0, Vec::new()).await;
    assert_eq!(report.sequences, 1, "the cancelled one left: {report:?}");
    let mut steps = 0;
    while generator.step(0, Vec::new()).await.running > 0 {
        steps += 1;
        assert!(steps < 50);
    }
    let mut last = None;
    while let Ok(event) = ra.try_recv() {
        last = Some(event);
    }
    assert!(matches!(last, Some(Event::Failed(infergate_backends::BackendError::Cancelled))), "{last:?}");
    assert!(finished(&mut rb, &mut String::new()).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_k_one_is_greedy_and_a_prompt_over_the_context_is_refused() {
    let backend = backend();
    let greedy = run(&backend, request(user("Name a colour."), 12, 0.0, None, false)).await.1;
    let mut one = request(user("Name a colour."), 12, 1.5, Some(3), false);
    one.top_k = Some(1);
    assert_eq!(run(&backend, one).await.1.text, greedy.text);

    let (long, mut rx) = item(request(user(&"word ".repeat(9000)), 8, 0.0, None, false));
    backend.execute(vec![long]).await;
    match rx.recv().await.unwrap() {
        Event::Failed(infergate_backends::BackendError::InvalidInput(message)) => {
            assert!(message.contains("context"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}
