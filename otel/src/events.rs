//! Application events as OTLP log records, apart from the log: feedback on
//! answers and captured low-confidence answers, for a Collector to route
//! (its Kafka exporter takes them to a training pipeline). They never go to
//! stderr, so content a tenant allows to be recorded stays out of the log.
//! Without an OTLP endpoint (or `export_events`), [`emit`] does nothing.

use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry_sdk::logs::SdkLogger;

static EVENTS: OnceLock<SdkLogger> = OnceLock::new();

pub(crate) fn install(logger: SdkLogger) {
    let _ = EVENTS.set(logger);
}

/// Whether events go anywhere.
pub fn enabled() -> bool {
    EVENTS.get().is_some()
}

/// Send one event: its name (`infergate.feedback`), its JSON as the body,
/// and `attributes` to route it by. Queued; never waits.
pub fn emit(name: &'static str, body: String, attributes: &[(&'static str, String)]) {
    let Some(logger) = EVENTS.get() else { return };
    let mut record = logger.create_log_record();
    record.set_event_name(name);
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    record.set_timestamp(SystemTime::now());
    record.set_body(AnyValue::String(body.into()));
    record.add_attribute("event.name", AnyValue::String(name.into()));
    for (key, value) in attributes {
        record.add_attribute(*key, AnyValue::String(value.clone().into()));
    }
    logger.emit(record);
}
