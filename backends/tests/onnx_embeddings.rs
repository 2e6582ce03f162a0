//! The ONNX embeddings backend on the real all-MiniLM-L6-v2 (int8) model
//! against Python onnxruntime's output for the same model and tokenizer
//! (`tests/fixtures/embeddings_reference.json`, made by
//! `scripts/reference/embeddings.py`). Needs `scripts/setup.sh` (models/, .ort/).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use infergate_backends::onnx::{OnnxBackend, OnnxConfig};
use infergate_backends::{
    Backend, BackendError, EmbeddingInput, EmbeddingsRequest, Event, Item, Output, Request,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(extra: &str) -> OnnxConfig {
    let root = root();
    let text = format!(
        "pipeline = \"text-embeddings\"\nmodel = \"{}\"\ntokenizer = \"{}\"\n{extra}",
        root.join("models/minilm/model.onnx").display(),
        root.join("models/minilm/tokenizer.json").display()
    );
    toml::from_str(&text).unwrap()
}

/// Run requests as one batch; each gets its terminal event.
async fn run(backend: &OnnxBackend, requests: Vec<EmbeddingsRequest>) -> Vec<Result<Output, BackendError>> {
    let mut receivers = Vec::new();
    let items = requests
        .into_iter()
        .map(|request| {
            let (events, rx) = tokio::sync::mpsc::unbounded_channel();
            receivers.push(rx);
            Item {
                request: Request::Embeddings(request),
                cost: 1.0,
                cancel: CancellationToken::new(),
                events,
                deadline: None,
                span: tracing::Span::none(),
                forwarded: Default::default(),
            }
        })
        .collect();
    let report = backend.execute(items).await;
    assert_eq!(report.items, receivers.len());
    let mut results = Vec::new();
    for mut rx in receivers {
        results.push(match rx.recv().await.expect("a terminal event") {
            Event::Done(output) => Ok(output),
            Event::Failed(error) => Err(error),
            Event::Delta(_) | Event::Chunk(_) => panic!("embeddings do not stream"),
        });
    }
    results
}

fn vectors(result: &Result<Output, BackendError>) -> &[Vec<f32>] {
    match result {
        Ok(Output::Embeddings(out)) => &out.vectors,
        other => panic!("{other:?}"),
    }
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn text(s: &str) -> EmbeddingInput {
    EmbeddingInput::Text(s.to_owned())
}

#[tokio::test]
async fn embeddings_match_python_onnxruntime_and_tokens_are_checked() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/embeddings_reference.json")).unwrap(),
    )
    .unwrap();
    let items = fixture["items"].as_array().unwrap();
    let backend = OnnxBackend::load("minilm", &config("max_run_inputs = 4\nmax_run_tokens = 48")).unwrap();

    // Every fixture text in one request (several runs of at most 4 sequences
    // and 48 padded tokens, longer ones alone), and each alone in its own item.
    let all = EmbeddingsRequest {
        inputs: items.iter().map(|i| text(i["text"].as_str().unwrap())).collect(),
        dimensions: None,
    };
    let mut requests = vec![all];
    requests.extend(
        items
            .iter()
            .map(|i| EmbeddingsRequest { inputs: vec![text(i["text"].as_str().unwrap())], dimensions: None }),
    );
    let results = run(&backend, requests).await;
    let together = vectors(&results[0]);
    for (i, item) in items.iter().enumerate() {
        let expected: Vec<f64> =
            item["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let c = cosine(&together[i], &expected);
        assert!(c >= 0.99999, "item {i} ({:?}): cosine {c}", item["text"]);
        let alone = cosine(&vectors(&results[i + 1])[0], &expected);
        assert!(alone >= 0.99999, "item {i} alone: cosine {alone}");
        let norm: f32 = together[i].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    let Ok(Output::Embeddings(out)) = &results[0] else { unreachable!() };
    let fixture_tokens: usize = items.iter().map(|i| i["input_ids"].as_array().unwrap().len()).sum();
    assert_eq!(out.prompt_tokens as usize, fixture_tokens, "usage counts the model's tokens");

    // Related sentences score closer than unrelated ones.
    let pairs = run(
        &backend,
        vec![EmbeddingsRequest {
            inputs: vec![
                text("A man is playing a guitar."),
                text("Someone plays an instrument."),
                text("The stock market fell sharply today."),
            ],
            dimensions: None,
        }],
    )
    .await;
    let v = vectors(&pairs[0]);
    let as64 = |v: &[f32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<f64>>();
    assert!(cosine(&v[0], &as64(&v[1])) > cosine(&v[0], &as64(&v[2])) + 0.3);

    // Token arrays: the same ids without [CLS]/[SEP] give the same vector;
    // another tokenizer's ids beyond this vocabulary are the item's error only.
    let ids: Vec<u32> =
        items[0]["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let content = ids[1..ids.len() - 1].to_vec();
    let results = run(
        &backend,
        vec![
            EmbeddingsRequest { inputs: vec![EmbeddingInput::Tokens(content)], dimensions: None },
            EmbeddingsRequest { inputs: vec![EmbeddingInput::Tokens(vec![101, 100_263])], dimensions: None },
            EmbeddingsRequest { inputs: vec![text("short")], dimensions: Some(64) },
        ],
    )
    .await;
    let expected: Vec<f64> =
        items[0]["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(cosine(&vectors(&results[0])[0], &expected) >= 0.99999);
    let Err(BackendError::InvalidInput(message)) = &results[1] else { panic!("{:?}", results[1]) };
    assert!(message.contains("100263") && message.contains("30522"), "{message}");
    assert!(
        matches!(&results[2], Err(BackendError::InvalidInput(m)) if m.contains("384")),
        "{:?}",
        results[2]
    );
}

#[tokio::test]
async fn over_long_inputs_are_truncated_or_refused_as_configured() {
    let long = "word ".repeat(400);
    let truncating = OnnxBackend::load("minilm", &config("max_tokens = 16")).unwrap();
    let results =
        run(&truncating, vec![EmbeddingsRequest { inputs: vec![text(&long)], dimensions: None }]).await;
    let Ok(Output::Embeddings(out)) = &results[0] else { panic!("{:?}", results[0]) };
    assert_eq!(out.prompt_tokens, 16);

    let strict = OnnxBackend::load("minilm", &config("max_tokens = 16\ntruncate = false")).unwrap();
    let results = run(&strict, vec![EmbeddingsRequest { inputs: vec![text(&long)], dimensions: None }]).await;
    assert!(
        matches!(&results[0], Err(BackendError::InvalidInput(m)) if m.contains("at most 16")),
        "{:?}",
        results[0]
    );
}

#[test]
fn a_missing_model_file_is_a_clear_error() {
    let mut bad = config("");
    bad.model = root().join("models/minilm/absent.onnx");
    let error = OnnxBackend::load("minilm", &bad).err().unwrap().to_string();
    assert!(error.contains("absent.onnx") && error.contains("setup.sh"), "{error}");
}

#[test]
fn asking_for_cuda_without_it_fails_loudly() {
    // These machines have no GPU (and the CPU build of ONNX Runtime):
    // a model configured for CUDA must not silently run on the CPU.
    let error =
        OnnxBackend::load("minilm", &config("execution_provider = \"cuda\"")).err().unwrap().to_string();
    assert!(error.contains("CUDA"), "{error}");
}
