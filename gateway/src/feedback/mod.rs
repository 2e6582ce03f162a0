//! From inference back to training: feedback on answers, and low-confidence
//! answers captured as they happen, written to `[feedback]`'s sinks.
//!
//! With a sink set, every answer is remembered for `window` under its
//! tenant and `x-request-id` (the latest answer, for an id a client chose
//! and used again), so that `POST /v1/feedback` can name it: another
//! tenant's id, or one unknown, is a 404. A model with `capture = { sample,
//! below }` records a share `sample` of its answers whose confidence is
//! under `below` (OCR lines, moderation scores near the threshold,
//! translations whose source language was uncertain). Events carry ids,
//! scores and metadata; inputs and outputs (a correction, a comment, the
//! captured text) only for a tenant with `capture_content = true`.
//!
//! Events go through a bounded queue to one task, which writes them to
//! every sink: a JSON-lines file (rotated to `PATH.1`), a Redis stream
//! (`XADD … MAXLEN ~`), OTLP log records ([`infergate_otel::events`]). A
//! full queue drops the event (counted); no request waits for a sink.

mod sinks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use infergate_rng::SplitMix64;
use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Value};

pub use self::sinks::export;
use crate::config::{CaptureConfig, FeedbackSection};
use crate::tenancy::Store;

/// Events waiting for the sinks at most.
const QUEUE: usize = 4096;

/// An answer that feedback may name.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Answered {
    #[serde(with = "arc_str")]
    pub model: Arc<str>,
    pub operation: std::borrow::Cow<'static, str>,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `{"input", "output"}`, for a tenant with `capture_content`.
    pub content: Option<Value>,
    /// What it holds, roughly, for `max_bytes`.
    #[serde(skip)]
    bytes: u32,
}

/// `Arc<str>` as a string (serde's `rc` feature is off).
mod arc_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(text: &Arc<str>, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(input).map(Arc::from)
    }
}

/// Longest input or output text kept with an answer, in bytes.
pub const MAX_CONTENT: usize = 16 * 1024;

/// `text` cut at [`MAX_CONTENT`] bytes (at a character boundary).
pub fn clip(text: &str) -> &str {
    if text.len() <= MAX_CONTENT {
        return text;
    }
    let mut end = MAX_CONTENT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// See the module docs.
pub struct Feedback {
    answers: moka::sync::Cache<(Arc<str>, Arc<str>), Arc<Answered>>,
    queue: tokio::sync::mpsc::Sender<Value>,
    /// Events queued, and dropped with the queue full.
    queued: Counter,
    dropped: Counter,
    draws: AtomicU64,
    seed: u64,
    /// With `[store]` in Redis, answers are remembered there too, so that
    /// feedback may reach any replica: the connection, `{key_prefix}answer:`,
    /// and the window.
    shared: Option<(redis::aio::ConnectionManager, String, std::time::Duration)>,
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 with milliseconds, UTC.
fn rfc3339(ms: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

impl Feedback {
    /// The feedback of `config`, its sink task started; `None` when no sink
    /// is set. Must run inside a tokio runtime.
    pub fn start(
        config: &FeedbackSection,
        store: &Store,
        metrics: &infergate_otel::Metrics,
    ) -> Result<Option<Arc<Feedback>>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let sinks = sinks::Sinks::open(config, store)?;
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        let (queued, dropped, failed) = metrics.feedback.counters();
        tokio::spawn(sinks.drain(rx, failed));
        let answers = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_: &(Arc<str>, Arc<str>), answered: &Arc<Answered>| answered.bytes)
            .time_to_live(config.window)
            .build();
        Ok(Some(Arc::new(Feedback {
            answers,
            queue,
            queued,
            dropped,
            draws: AtomicU64::new(0),
            seed: unix_ms() ^ u64::from(std::process::id()),
            shared: store.redis().map(|redis| {
                let (conn, prefix, _) = redis.connection();
                (conn, format!("{prefix}answer:"), config.window)
            }),
        })))
    }

    /// `tenant` got an answer to `request_id`; `content` where the tenant
    /// allows it to be recorded.
    pub fn remember(
        &self,
        tenant: &Arc<str>,
        request_id: &Arc<str>,
        model: &Arc<str>,
        operation: &'static str,
        content: Option<Value>,
    ) {
        let mut answered = Answered {
            model: model.clone(),
            operation: operation.into(),
            at_ms: unix_ms(),
            content,
            bytes: 0,
        };
        // Serialized once: for Redis, and to weigh it.
        let shared = self.shared.as_ref().and_then(|s| Some((s, serde_json::to_vec(&answered).ok()?)));
        let held = match (&shared, &answered.content) {
            (Some((_, value)), _) => value.len(),
            (None, Some(content)) => content.to_string().len(),
            (None, None) => 0,
        };
        answered.bytes = u32::try_from(200 + request_id.len() + held).unwrap_or(u32::MAX);
        if let Some(((conn, prefix, window), value)) = shared {
            // Not waited for: a lost write loses feedback on other replicas only.
            let (mut conn, key) = (conn.clone(), shared_key(prefix, tenant, request_id));
            let ttl = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            tokio::spawn(async move {
                let mut set = redis::cmd("SET");
                set.arg(key).arg(value).arg("PX").arg(ttl);
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(1), set.query_async::<()>(&mut conn))
                        .await;
            });
        }
        let answered = Arc::new(answered);
        self.answers.insert((tenant.clone(), request_id.clone()), answered);
    }

    /// The answer `tenant` got to `request_id`, within the window: from this
    /// replica's memory, else (with `[store]` in Redis) from any replica's.
    pub async fn answered(&self, tenant: &Arc<str>, request_id: &str) -> Option<Arc<Answered>> {
        if let Some(answered) = self.answers.get(&(tenant.clone(), Arc::from(request_id))) {
            return Some(answered);
        }
        let (conn, prefix, _) = self.shared.as_ref()?;
        let mut conn = conn.clone();
        let mut get = redis::cmd("GET");
        get.arg(shared_key(prefix, tenant, request_id));
        let bytes = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            get.query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await
        .ok()?
        .ok()??;
        serde_json::from_slice::<Answered>(&bytes).ok().map(Arc::new)
    }

    /// Queue an event of `kind` for the sinks (with its type and time added).
    pub fn record(&self, kind: &'static str, mut event: Value) {
        if let Value::Object(map) = &mut event {
            map.insert("type".into(), json!(kind));
            map.insert("time".into(), json!(rfc3339(unix_ms())));
        }
        match self.queue.try_send(event) {
            Ok(()) => self.queued.inc(),
            Err(_) => self.dropped.inc(),
        };
    }

    /// Whether to capture an answer of confidence `confidence` under `capture`.
    pub fn samples(&self, capture: &CaptureConfig, confidence: f64) -> bool {
        // NaN is not under anything.
        if confidence.is_nan() || confidence >= capture.below {
            return false;
        }
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        SplitMix64::new(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_f64() < capture.sample
    }

    /// The event of a feedback on `answered`.
    pub fn feedback_event(answered: &Answered, tenant: &str, request_id: &str, given: Given) -> Value {
        let mut event = json!({
            "tenant": tenant,
            "request_id": request_id,
            "model": &*answered.model,
            "operation": &*answered.operation,
            "answered_at": rfc3339(answered.at_ms),
        });
        if let Some(score) = given.score {
            event["score"] = json!(score);
        }
        if let Some(label) = given.label {
            event["label"] = json!(label);
        }
        if let Some(correction) = given.correction {
            event["correction"] = json!(correction);
        }
        if let Some(comment) = given.comment {
            event["comment"] = json!(comment);
        }
        // The answer's own input and output, kept only where allowed.
        if let (Some(Value::Object(content)), Value::Object(map)) = (&answered.content, &mut event) {
            map.extend(content.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())));
        }
        event
    }
}

/// Where Redis keeps an answer: the tenant and request id, each
/// length-prefixed so that no two pairs share a key.
fn shared_key(prefix: &str, tenant: &str, request_id: &str) -> String {
    format!("{prefix}{}:{tenant}:{request_id}", tenant.len())
}

/// What a client's feedback says (content already left out where the
/// tenant does not allow it).
#[derive(Debug, Default)]
pub struct Given {
    pub score: Option<f64>,
    pub label: Option<String>,
    pub correction: Option<String>,
    pub comment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_000_123_456), "2026-11-30T00:55:23.456Z");
    }
}
