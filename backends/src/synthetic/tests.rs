use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{ChatMessage, ChatRequest, EmbeddingInput, EmbeddingsRequest, FinishReason};

fn chat_request(content: &str, max_tokens: u32, stream: bool) -> Request {
    Request::Chat(ChatRequest {
        messages: vec![ChatMessage { role: "user".into(), content: content.into() }],
        max_tokens,
        temperature: 1.0,
        top_p: 1.0,
        top_k: None,
        seed: None,
        stop: vec![],
        stream,
        json: false,
        passthrough: None,
    })
}

fn item(request: Request) -> (Item, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Item {
            request,
            cost: 1.0,
            cancel: CancellationToken::new(),
            events: tx,
            deadline: None,
            span: tracing::Span::none(),
            forwarded: Default::default(),
        },
        rx,
    )
}

async fn run(backend: &SyntheticBackend, request: Request) -> Vec<Event> {
    let (it, mut rx) = item(request);
    backend.execute(vec![it]).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

#[tokio::test]
async fn chat_is_deterministic_labelled_and_streams() {
    let backend = SyntheticBackend::new("m", SyntheticConfig::default());
    let first = run(&backend, chat_request("hello", 100, true)).await;
    let second = run(&backend, chat_request("hello", 100, true)).await;
    let text = |events: &[Event]| match events.last() {
        Some(Event::Done(Output::Chat(c))) => c.text.clone(),
        other => panic!("expected a chat output, got {other:?}"),
    };
    assert_eq!(text(&first), text(&second));
    assert!(text(&first).starts_with("[synthetic m]"));
    let deltas: String = first
        .iter()
        .filter_map(|e| match e {
            Event::Delta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, text(&first), "the deltas add up to the final text");
}

#[tokio::test]
async fn chat_honours_max_tokens() {
    let backend = SyntheticBackend::new("m", SyntheticConfig::default());
    let events = run(&backend, chat_request("hello", 2, false)).await;
    match events.as_slice() {
        [Event::Done(Output::Chat(c))] => {
            assert_eq!(c.completion_tokens, 2);
            assert_eq!(c.finish_reason, FinishReason::Length);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[tokio::test]
async fn embeddings_are_unit_vectors_and_related_texts_are_closer() {
    let backend = SyntheticBackend::new("m", SyntheticConfig::default());
    let request = Request::Embeddings(EmbeddingsRequest {
        inputs: vec![
            EmbeddingInput::Text("the cat sat on the mat".into()),
            EmbeddingInput::Text("the cat sat on a mat".into()),
            EmbeddingInput::Text("quarterly revenue grew".into()),
        ],
        dimensions: None,
    });
    let events = run(&backend, request).await;
    let Some(Event::Done(Output::Embeddings(out))) = events.last() else { panic!("{events:?}") };
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for v in &out.vectors {
        assert_eq!(v.len(), 384);
        assert!((dot(v, v) - 1.0).abs() < 1e-5);
    }
    assert!(dot(&out.vectors[0], &out.vectors[1]) > dot(&out.vectors[0], &out.vectors[2]));
}

#[tokio::test(start_paused = true)]
async fn latency_follows_the_model_and_error_rate_fails_items() {
    let config = SyntheticConfig {
        base_latency: Duration::from_millis(10),
        per_cost: Duration::from_millis(5),
        error_rate: 1.0,
        ..SyntheticConfig::default()
    };
    let backend = SyntheticBackend::new("m", config);
    let (a, mut ra) = item(chat_request("x", 4, false));
    let (b, _rb) = item(chat_request("y", 4, false));
    let report = backend.execute(vec![a, b]).await;
    assert_eq!(report.elapsed, Duration::from_millis(20), "10 ms + 5 ms x cost 2");
    assert!(matches!(ra.try_recv(), Ok(Event::Failed(BackendError::Failed(_)))));
}

#[tokio::test(start_paused = true)]
async fn hang_ends_only_by_cancellation() {
    let backend =
        SyntheticBackend::new("m", SyntheticConfig { fault: Fault::Hang, ..SyntheticConfig::default() });
    let (it, mut rx) = item(chat_request("x", 4, false));
    let cancel = it.cancel.clone();
    let run = tokio::spawn(async move { backend.execute(vec![it]).await });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(rx.try_recv().is_err(), "nothing after an hour");
    cancel.cancel();
    run.await.unwrap();
    assert!(matches!(rx.try_recv(), Ok(Event::Failed(BackendError::Cancelled))));
}

#[tokio::test]
async fn disconnect_fails_mid_stream() {
    let backend = SyntheticBackend::new(
        "m",
        SyntheticConfig { fault: Fault::Disconnect, ..SyntheticConfig::default() },
    );
    let events = run(&backend, chat_request("hello", 100, true)).await;
    assert!(events.iter().any(|e| matches!(e, Event::Delta(_))));
    assert!(matches!(events.last(), Some(Event::Failed(BackendError::Disconnected(_)))));
}
