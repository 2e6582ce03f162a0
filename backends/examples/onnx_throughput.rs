//! Raw throughput of the ONNX text-embeddings backend, without the gateway:
//! tokenize, one `Session::run` per batch, mean-pool, normalise — the same
//! work `scripts/bench/onnx_throughput.py` does with Python onnxruntime and
//! tokenizers, on the same texts, threads and batch size
//! (`scripts/bench-onnx-backend.sh` runs both, alternated).
//!
//! ```sh
//! cargo run --release -p infergate-backends --example onnx_throughput -- \
//!     --texts FILE --threads 1 --batch 32 --seconds 10
//! ```
//! Prints `RESULT side=rust threads=T batch=B texts=N seconds=S texts_per_s=R
//! cpu_ms_per_text=C` (C: the process's user + system CPU time over the timed
//! part, per text; it counts ONNX Runtime's threads and is less disturbed by
//! other load on the machine than the wall-clock rate).

use std::time::{Duration, Instant};

use infergate_backends::onnx::{OnnxBackend, OnnxConfig};
use infergate_backends::{Backend, EmbeddingInput, EmbeddingsRequest, Event, Item, Request};
use tokio_util::sync::CancellationToken;

struct Args {
    texts: String,
    model: String,
    tokenizer: String,
    threads: usize,
    batch: usize,
    seconds: f64,
    /// `max_run_padding`; `inf` runs each batch whole, as before length-aware runs.
    padding: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        texts: String::new(),
        model: "models/minilm/model.onnx".into(),
        tokenizer: "models/minilm/tokenizer.json".into(),
        threads: 1,
        batch: 32,
        seconds: 10.0,
        padding: 0.1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--texts" => args.texts = value,
            "--model" => args.model = value,
            "--tokenizer" => args.tokenizer = value,
            "--threads" => args.threads = number(&value)? as usize,
            "--batch" => args.batch = number(&value)? as usize,
            "--seconds" => args.seconds = number(&value)?,
            "--max-run-padding" => args.padding = number(&value)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.texts.is_empty() || args.threads == 0 || args.batch == 0 {
        return Err("usage: onnx_throughput --texts FILE [--threads T] [--batch B] [--seconds S] \
                    [--model PATH] [--tokenizer PATH] [--max-run-padding F|inf]"
            .into());
    }
    Ok(args)
}

/// User + system CPU time of this process so far, in seconds (Linux:
/// fields 14 and 15 of /proc/self/stat, in USER_HZ = 100 ticks per second
/// on every Linux ABI that this project builds for).
fn cpu_seconds() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    let after_name = stat.rsplit_once(") ").map(|(_, rest)| rest).ok_or("malformed /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks =
        |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or("malformed /proc/self/stat");
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Embed `texts` as one batch of one-text items; returns how many succeeded.
async fn run_batch(backend: &OnnxBackend, texts: &[String]) -> usize {
    let mut receivers = Vec::with_capacity(texts.len());
    let items = texts
        .iter()
        .map(|text| {
            let (events, rx) = tokio::sync::mpsc::unbounded_channel();
            receivers.push(rx);
            Item {
                request: Request::Embeddings(EmbeddingsRequest {
                    inputs: vec![EmbeddingInput::Text(text.clone())],
                    dimensions: None,
                }),
                cost: 1.0,
                cancel: CancellationToken::new(),
                events,
                deadline: None,
                span: tracing::Span::none(),
                forwarded: Default::default(),
            }
        })
        .collect();
    backend.execute(items).await;
    let mut ok = 0;
    for mut rx in receivers {
        if matches!(rx.recv().await, Some(Event::Done(_))) {
            ok += 1;
        }
    }
    ok
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = parse_args()?;
    let texts: Vec<String> = std::fs::read_to_string(&args.texts)
        .map_err(|e| format!("{}: {e}", args.texts))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if texts.is_empty() {
        return Err(format!("{}: no texts", args.texts));
    }
    let mut config: OnnxConfig = serde_json::from_value(serde_json::json!({
        "pipeline": "text-embeddings",
        "model": args.model,
        "tokenizer": args.tokenizer,
        "intra_threads": args.threads,
        "max_run_inputs": args.batch.max(1),
    }))
    .map_err(|e| e.to_string())?;
    // Set here, not in the JSON: JSON has no infinity.
    config.max_run_padding = args.padding;
    let backend = OnnxBackend::load("bench", &config).map_err(|e| e.to_string())?;

    // Warm-up: the first 64 texts.
    for chunk in texts[..texts.len().min(64)].chunks(args.batch) {
        run_batch(&backend, chunk).await;
    }
    let limit = Duration::from_secs_f64(args.seconds);
    let cpu_start = cpu_seconds()?;
    let start = Instant::now();
    let mut done = 0usize;
    'passes: loop {
        for chunk in texts.chunks(args.batch) {
            let ok = run_batch(&backend, chunk).await;
            if ok != chunk.len() {
                return Err(format!("{} of {} texts failed", chunk.len() - ok, chunk.len()));
            }
            done += ok;
            if start.elapsed() >= limit {
                break 'passes;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu_start;
    println!(
        "RESULT side=rust threads={} batch={} padding={} texts={done} seconds={seconds:.3} texts_per_s={:.1} cpu_ms_per_text={:.3}",
        args.threads,
        args.batch,
        args.padding,
        done as f64 / seconds,
        cpu * 1e3 / done as f64
    );
    Ok(())
}
