//! The synthetic backend: a model server without a model.
//!
//! It answers every task with deterministic outputs derived from the input
//! (the same request always gets the same answer, labelled "synthetic"),
//! takes `base_latency + per_cost * batch_cost` per batch with optional
//! jitter, streams tokens at a set interval, and injects the faults named in
//! config (`error_rate`, `fault = "slow" | "hang" | "disconnect"`). It serves
//! the gateway's own tests and benchmarks, and backs the fake GPU server.

mod config;
mod outputs;
mod rng;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;

pub use config::{Fault, SyntheticConfig};
use infergate_rng::SplitMix64;

use crate::{Backend, BackendError, BatchReport, Event, Item, ModelInfo, Output, Request, Task};

/// A backend that fakes every task with a latency model and faults.
#[derive(Debug)]
pub struct SyntheticBackend {
    model: String,
    config: SyntheticConfig,
    batches: AtomicU64,
}

impl SyntheticBackend {
    pub fn new(model: &str, config: SyntheticConfig) -> Self {
        SyntheticBackend { model: model.to_owned(), config, batches: AtomicU64::new(0) }
    }

    /// The batch's service time under the latency model, jitter and `slow`.
    fn batch_latency(&self, cost: f64, rng: &mut SplitMix64) -> Duration {
        let c = &self.config;
        let mut secs = c.base_latency.as_secs_f64() + c.per_cost.as_secs_f64() * cost.max(0.0);
        if c.jitter > 0.0 {
            secs *= 1.0 + c.jitter * (2.0 * rng.next_f64() - 1.0);
        }
        if c.fault == Fault::Slow {
            secs *= c.slow_factor;
        }
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// Produce one item's events after the batch latency has passed.
    async fn finish(&self, item: &Item, fail_roll: f64) {
        if fail_roll < self.config.error_rate {
            item.fail(BackendError::Failed("synthetic fault injection (error_rate)".into()));
            return;
        }
        let output = match &item.request {
            Request::Chat(req) => {
                let (words, output) = outputs::chat(&self.model, req);
                self.stream_words(item, req.stream, &words, output).await;
                return;
            }
            Request::Embeddings(req) => outputs::embeddings(req, self.config.dimensions),
            Request::Transcription(req) => outputs::transcription(req),
            Request::Moderation(req) => Ok(outputs::moderation(req)),
            Request::Tensor(req) => outputs::tensor(req),
            Request::Ocr(req) => outputs::ocr(req),
            Request::VoiceActivity(_) => {
                Err(BackendError::InvalidInput("the synthetic backend does not detect voice activity".into()))
            }
        };
        match output {
            Ok(output) => item.done(output),
            Err(error) => item.fail(error),
        }
    }

    /// Emit chat words one `token_interval` apart; honour cancellation and
    /// the `disconnect` fault (which fails halfway through the words).
    async fn stream_words(&self, item: &Item, stream: bool, words: &[String], output: Output) {
        let interval = self.config.token_interval;
        let cut = (self.config.fault == Fault::Disconnect).then_some(words.len() / 2);
        for (i, word) in words.iter().enumerate() {
            if Some(i) == cut {
                item.fail(BackendError::Disconnected("synthetic fault injection (disconnect)".into()));
                return;
            }
            if !interval.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = item.cancel.cancelled() => {
                        item.fail(BackendError::Cancelled);
                        return;
                    }
                }
            }
            if stream {
                item.send(Event::Delta(word.clone()));
            }
        }
        item.done(output);
    }
}

/// Resolves once every item in the batch has been cancelled.
async fn all_cancelled(batch: &[Item]) {
    join_all(batch.iter().map(|i| i.cancel.cancelled())).await;
}

#[async_trait]
impl Backend for SyntheticBackend {
    fn info(&self) -> ModelInfo {
        ModelInfo { owned_by: "infergate-synthetic", platform: "synthetic", capabilities: Default::default() }
    }

    fn supports(&self, _task: Task) -> bool {
        true
    }

    async fn execute(&self, batch: Vec<Item>) -> BatchReport {
        let start = tokio::time::Instant::now();
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        let mut rng = SplitMix64::new(self.config.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let cost: f64 = batch.iter().map(|i| i.cost).sum();
        let latency = self.batch_latency(cost, &mut rng);

        let all_done = if self.config.fault == Fault::Hang {
            all_cancelled(&batch).await;
            false
        } else if latency.is_zero() {
            // A zero sleep still waits for the timer's next millisecond tick.
            true
        } else {
            tokio::select! {
                () = tokio::time::sleep(latency) => true,
                () = all_cancelled(&batch) => false,
            }
        };
        if !all_done {
            batch.iter().for_each(|i| i.fail(BackendError::Cancelled));
        } else {
            let rolls: Vec<f64> = batch.iter().map(|_| rng.next_f64()).collect();
            join_all(batch.iter().zip(rolls).map(|(item, roll)| self.finish(item, roll))).await;
        }
        BatchReport { items: batch.len(), elapsed: start.elapsed() }
    }
}

#[cfg(test)]
mod tests;
