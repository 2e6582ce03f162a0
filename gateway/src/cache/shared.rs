//! The second tier of a `shared` model's cache: answers in the Redis of
//! `[store]`, so that every replica serves what any of them computed. A
//! look-up that fails or takes longer than `store.timeout` is a miss (the
//! job runs), and a failed write loses nothing but the entry; both are
//! counted in `infergate_store_errors_total`.

use std::sync::Arc;
use std::time::Duration;

use infergate_backends::Output;
use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::{Entry, Key};

/// See the module docs.
pub struct SharedTier {
    conn: ConnectionManager,
    /// `{store.key_prefix}cache:{model}:`; the key's hex follows.
    prefix: String,
    timeout: Duration,
    ttl: Duration,
    /// Entries larger than this stay in this replica's memory only.
    max_entry: usize,
    errors: Counter,
}

/// An entry as Redis holds it, in postcard's binary form (floats exact,
/// vectors four bytes an element).
#[derive(Serialize, Deserialize)]
struct Stored {
    output: Output,
    deltas: Option<Vec<String>>,
}

impl SharedTier {
    pub fn new(
        (conn, prefix, timeout): (ConnectionManager, Arc<str>, Duration),
        model: &str,
        ttl: Duration,
        max_entry: usize,
        errors: Counter,
    ) -> Self {
        SharedTier { conn, prefix: format!("{prefix}cache:{model}:"), timeout, ttl, max_entry, errors }
    }

    fn key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, hex::encode(key.0))
    }

    /// The entry under `key`, if another replica (or this one) stored it.
    pub async fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let mut conn = self.conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.key(key));
        let get = get.query_async::<Option<Vec<u8>>>(&mut conn);
        let bytes = match tokio::time::timeout(self.timeout, get).await {
            Ok(Ok(bytes)) => bytes?,
            Ok(Err(error)) => return self.failed("cache look-up", &error),
            Err(_) => return self.failed("cache look-up", &"no answer within store.timeout"),
        };
        match postcard::from_bytes::<Stored>(&bytes) {
            Ok(stored) => Some(Entry::new(stored.output, stored.deltas.map(Arc::from))),
            Err(error) => self.failed("cache entry", &error),
        }
    }

    /// Store `entry` under `key` for the cache's `ttl`.
    pub async fn put(&self, key: &Key, entry: &Entry) {
        let stored =
            Stored { output: entry.output.clone(), deltas: entry.deltas.as_deref().map(<[String]>::to_vec) };
        let bytes = match postcard::to_stdvec(&stored) {
            Ok(bytes) if bytes.len() <= self.max_entry => bytes,
            Ok(_) => return,
            Err(error) => {
                self.failed::<()>("cache entry", &error);
                return;
            }
        };
        let mut conn = self.conn.clone();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut set = redis::cmd("SET");
        set.arg(self.key(key)).arg(bytes).arg("PX").arg(ttl_ms);
        let set = set.query_async::<()>(&mut conn);
        // Writes may take longer than a look-up: nobody waits for them.
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), set).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.failed::<()>("cache write", &error).unwrap_or(()),
            Err(_) => self.failed::<()>("cache write", &"no answer in time").unwrap_or(()),
        }
    }

    fn failed<T>(&self, what: &str, error: &dyn std::fmt::Display) -> Option<T> {
        self.errors.inc();
        tracing::debug!(store = "redis", %error, "{what} failed (counted in infergate_store_errors_total)");
        None
    }
}

#[cfg(test)]
mod tests {
    use infergate_backends::tensor::{DataType, Tensor, TensorData};
    use infergate_backends::{ChatOutput, FinishReason, TensorOutput, UpstreamAnswer};

    use super::*;

    #[test]
    fn every_output_survives_redis_as_it_was() {
        let outputs = [
            Output::Chat(ChatOutput {
                text: "Grüße 🌍".into(),
                finish_reason: FinishReason::Length,
                prompt_tokens: 3,
                completion_tokens: 9,
                upstream: Some(UpstreamAnswer {
                    body: r#"{"id":"x","model":"m"}"#.into(),
                    model_at: Some(17..20),
                }),
            }),
            Output::Tensor(TensorOutput {
                outputs: vec![
                    Tensor {
                        name: "big".into(),
                        datatype: DataType::Uint64,
                        shape: vec![2],
                        data: TensorData::Int(vec![i128::from(u64::MAX), -5]),
                    },
                    Tensor {
                        name: "f".into(),
                        datatype: DataType::Fp32,
                        shape: vec![3],
                        data: TensorData::Float(vec![0.1, -0.0, 1e-30]),
                    },
                ],
            }),
        ];
        for output in outputs {
            let stored = Stored { output: output.clone(), deltas: Some(vec!["a".into()]) };
            let back: Stored = postcard::from_bytes(&postcard::to_stdvec(&stored).unwrap()).unwrap();
            assert_eq!(back.output, output);
            assert_eq!(back.deltas, Some(vec!["a".to_owned()]));
        }
    }
}
