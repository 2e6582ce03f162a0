//! Where events go: a JSON-lines file, a Redis stream, OTLP log records;
//! and the export of a sink to a training-ready dataset.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use serde_json::Value;

use crate::config::FeedbackSection;
use crate::tenancy::Store;

/// Events written at once at most.
const BATCH: usize = 256;

/// The sinks `[feedback]` sets.
pub(super) struct Sinks {
    jsonl: Option<(PathBuf, u64)>,
    redis: Option<(ConnectionManager, String, u64)>,
    otlp: bool,
}

impl Sinks {
    pub(super) fn open(config: &FeedbackSection, store: &Store) -> Result<Sinks, String> {
        let jsonl = match &config.jsonl {
            Some(path) => {
                // Fail at start-up, not at the first event.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("feedback.jsonl: {}: {e}", path.display()))?;
                Some((path.clone(), config.jsonl_max_bytes))
            }
            None => None,
        };
        let redis = match &config.redis_stream {
            Some(stream) => {
                let redis = store.redis().ok_or("feedback.redis_stream: needs [store] url")?;
                Some((redis.connection().0, stream.clone(), config.redis_maxlen))
            }
            None => None,
        };
        if config.otlp && !infergate_otel::events::enabled() {
            tracing::warn!("feedback.otlp is set but no OTLP endpoint is: those events go nowhere");
        }
        Ok(Sinks { jsonl, redis, otlp: config.otlp })
    }

    /// Write what comes from `rx` until every sender is gone; failed writes
    /// are counted in `failed` (and logged once a batch).
    pub(super) async fn drain(mut self, mut rx: tokio::sync::mpsc::Receiver<Value>, failed: Counter) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            let lines: Vec<String> = batch.drain(..).map(|e| e.to_string()).collect();
            if let Some((path, max)) = self.jsonl.clone() {
                let lines = lines.clone();
                let written = tokio::task::spawn_blocking(move || append(&path, max, &lines)).await;
                if let Ok(Err(error)) | Err(error) = written.map_err(std::io::Error::other) {
                    failed.inc();
                    tracing::warn!(%error, "feedback: the JSON-lines file could not be written");
                }
            }
            if let Some((conn, stream, maxlen)) = &mut self.redis {
                let mut pipe = redis::pipe();
                for line in &lines {
                    pipe.cmd("XADD")
                        .arg(&*stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(*maxlen)
                        .arg("*")
                        .arg("event")
                        .arg(line);
                }
                let sent = tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<()>(conn)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    failed.inc();
                    tracing::warn!("feedback: the Redis stream {stream} could not be written");
                }
            }
            if self.otlp {
                for line in lines {
                    let event: Value = serde_json::from_str(&line).unwrap_or_default();
                    let name = match event["type"].as_str() {
                        Some("feedback") => "infergate.feedback",
                        _ => "infergate.low_confidence",
                    };
                    let attribute = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
                    let attributes = [
                        ("infergate.tenant", attribute("tenant")),
                        ("gen_ai.request.model", attribute("model")),
                        ("infergate.request_id", attribute("request_id")),
                    ];
                    infergate_otel::events::emit(name, line, &attributes);
                }
            }
        }
    }
}

/// Append `lines` to `path`, first moving a file of `max` bytes or more to
/// `PATH.1` (the one before it is replaced).
fn append(path: &Path, max: u64, lines: &[String]) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= max) {
        std::fs::rename(path, rotated(path))?;
    }
    let mut file = std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?);
    for line in lines {
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
    }
    file.flush()
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The fields a training set keeps, in this order; the others are left out.
const FIELDS: [&str; 15] = [
    "type",
    "time",
    "tenant",
    "model",
    "operation",
    "request_id",
    "answered_at",
    "score",
    "label",
    "correction",
    "comment",
    "reason",
    "confidence",
    "input",
    "output",
];

/// One event as a dataset row: the known fields in order.
fn row(event: &Value) -> Option<String> {
    let object = event.as_object()?;
    let mut out = serde_json::Map::new();
    for field in FIELDS {
        if let Some(value) = object.get(field).filter(|v| !v.is_null()) {
            out.insert(field.to_owned(), value.clone());
        }
    }
    out.contains_key("type").then(|| Value::Object(out).to_string())
}

/// `infergate export-feedback`: the events of a JSON-lines sink (its
/// rotated file first) or of a Redis stream, those of `kind` if given, as
/// one JSON object a line in `out`. Returns the rows written.
pub fn export(
    jsonl: Option<&Path>,
    redis: Option<(&str, &str)>,
    kind: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64, String> {
    let mut rows = 0;
    let mut emit = |event: Value, out: &mut dyn Write| -> Result<(), String> {
        if kind.is_some_and(|k| event["type"].as_str() != Some(k)) {
            return Ok(());
        }
        if let Some(line) = row(&event) {
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            rows += 1;
        }
        Ok(())
    };
    if let Some(path) = jsonl {
        for file in [rotated(path), path.to_owned()] {
            let Ok(f) = std::fs::File::open(&file) else { continue };
            for line in std::io::BufReader::new(f).lines() {
                let line = line.map_err(|e| format!("{}: {e}", file.display()))?;
                // A line cut short by a crash is skipped, not fatal.
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    emit(event, out)?;
                }
            }
        }
    }
    if let Some((url, stream)) = redis {
        let client = redis::Client::open(url).map_err(|e| format!("--redis: {e}"))?;
        let mut conn = client.get_connection().map_err(|e| format!("--redis: {e}"))?;
        let mut from = "-".to_owned();
        loop {
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
                .map_err(|e| format!("XRANGE {stream}: {e}"))?;
            let Some((last, _)) = entries.last() else { break };
            from = format!("({last}");
            for (_, fields) in &entries {
                for (_, value) in fields.iter().filter(|(k, _)| k == "event") {
                    if let Ok(event) = serde_json::from_str::<Value>(value) {
                        emit(event, out)?;
                    }
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_rotates_and_the_export_reads_both_parts_in_order() {
        let dir = std::env::temp_dir().join(format!("infergate-feedback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let event = |n: u32| format!(r#"{{"type":"feedback","score":{n},"tenant":"t","extra":"x"}}"#);
        append(&path, 100, &[event(1), event(2)]).unwrap();
        append(&path, 100, &[event(3)]).unwrap();
        assert!(rotated(&path).exists(), "the first part reached 100 bytes and was moved");
        std::fs::write(dir.join("partial"), b"").unwrap();
        let mut out = Vec::new();
        let rows = export(Some(&path), None, Some("feedback"), &mut out).unwrap();
        assert_eq!(rows, 3);
        let text = String::from_utf8(out).unwrap();
        let scores: Vec<i64> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["score"].as_i64().unwrap())
            .collect();
        assert_eq!(scores, [1, 2, 3]);
        assert!(!text.contains("extra"), "only the dataset's fields: {text}");
        let mut none = Vec::new();
        assert_eq!(export(Some(&path), None, Some("low_confidence"), &mut none).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
