//! infergate's bridge from `tracing` spans to OpenTelemetry spans, and from
//! `tracing` events to OTLP log records that carry their span's ids.
//!
//! `tracing-opentelemetry` does the same job generically: it builds each span
//! through the SDK's `SpanBuilder` and `Tracer`, activates an OpenTelemetry
//! `Context` on every enter of every span (an instrumented future enters its
//! span on every poll) and takes a time stamp on every exit. At 100% sampling
//! that cost ~60 µs of CPU per request with six spans (BENCHMARKS.md,
//! "Telemetry off vs. on"). This layer keeps what a span needs in the
//! registry's extensions ([`Recorded`]): its ids, which are all propagation
//! needs; and, only when the span is sampled, its name, times, attributes,
//! events and links, turned into the exporter's `SpanData` once, at close.
//! Enter and exit cost nothing.
//!
//! Span fields become attributes; `otel.name`, `otel.kind` and
//! `otel.status_code` / `otel.status_description` set the span's name, kind
//! and status. Events inside a span become span events (the `message` field
//! names them); an `ERROR` event marks the span's status as an error.
//! Sampling is parent-based with a trace-id ratio for new traces, as the
//! OpenTelemetry SDK's `ParentBased(TraceIdRatioBased)`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::logs::SdkLogger;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::queue::ExportQueue;

/// Events and links kept per span; more are counted as dropped (the SDK's
/// default span limits).
const MAX_EVENTS: usize = 128;
const MAX_LINKS: usize = 128;

/// What one span knows about itself, in the registry's extensions.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) context: SpanContext,
    pub(crate) parent: SpanId,
    pub(crate) parent_is_remote: bool,
    /// The caller's W3C `baggage`, passed on to upstreams unchanged.
    pub(crate) baggage: Option<Arc<str>>,
    /// Name, times, attributes, events and links: only for spans that may be exported.
    pub(crate) data: Option<Box<Pending>>,
}

/// The exportable part of a span, until it closes.
#[derive(Debug)]
pub(crate) struct Pending {
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    dropped_events: u32,
    links: Vec<Link>,
    dropped_links: u32,
    status: Status,
}

impl Pending {
    fn new(name: &'static str, fields: usize) -> Self {
        Pending {
            name: Cow::Borrowed(name),
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            attributes: Vec::with_capacity(fields),
            events: Vec::new(),
            dropped_events: 0,
            links: Vec::new(),
            dropped_links: 0,
            status: Status::Unset,
        }
    }

    /// Add a link, or count it as dropped past the limit.
    pub(crate) fn link(&mut self, to: SpanContext) {
        if self.links.len() < MAX_LINKS {
            self.links.push(Link::with_context(to));
        } else {
            self.dropped_links += 1;
        }
    }
}

/// Decides which new traces are recorded: `ratio` of them, by trace id, so
/// every process that sees the trace decides alike.
#[derive(Debug, Clone, Copy)]
struct Sampler {
    bound: u64,
    always: bool,
}

impl Sampler {
    fn new(ratio: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        Sampler { bound: (ratio * (1u64 << 63) as f64) as u64, always: ratio >= 1.0 }
    }

    fn sampled(&self, trace_id: TraceId) -> bool {
        if self.always {
            return true;
        }
        let bytes = trace_id.to_bytes();
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        (u64::from_be_bytes(low) >> 1) < self.bound
    }

    fn flags(&self, trace_id: TraceId) -> TraceFlags {
        if self.sampled(trace_id) {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        }
    }
}

/// The layer: records spans and queues the sampled ones for export; turns
/// events at or above `log_level` into OTLP log records. (One layer for
/// both: every layer with its own filter costs on every span operation.)
pub(crate) struct SpanRecorder {
    ids: RandomIdGenerator,
    sampler: Sampler,
    scope: InstrumentationScope,
    queue: Arc<ExportQueue<SpanData>>,
    logs: Option<(SdkLogger, LevelFilter)>,
}

impl SpanRecorder {
    pub(crate) fn new(sample_ratio: f64, queue: Arc<ExportQueue<SpanData>>) -> Self {
        SpanRecorder {
            ids: RandomIdGenerator::default(),
            sampler: Sampler::new(sample_ratio),
            scope: InstrumentationScope::builder("infergate").with_version(env!("CARGO_PKG_VERSION")).build(),
            queue,
            logs: None,
        }
    }

    /// Also send events at or above `level` as log records to `logger`.
    pub(crate) fn with_logs(self, logger: SdkLogger, level: LevelFilter) -> Self {
        SpanRecorder { logs: Some((logger, level)), ..self }
    }
}

/// Continue the remote parent `remote` in `span` (which must have no
/// children yet): its trace id, its sampling decision, its trace state.
pub(crate) fn adopt(span: &mut Recorded, remote: &SpanContext, baggage: Option<Arc<str>>) {
    span.context = SpanContext::new(
        remote.trace_id(),
        span.context.span_id(),
        remote.trace_flags() & TraceFlags::SAMPLED,
        false,
        remote.trace_state().clone(),
    );
    span.parent = remote.span_id();
    span.parent_is_remote = true;
    span.baggage = baggage;
}

impl<S> Layer<S> for SpanRecorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = match attrs.parent() {
            Some(parent) => ctx.span(parent),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let inherited = parent
            .and_then(|p| p.extensions().get::<Recorded>().map(|r| (r.context.clone(), r.baggage.clone())));
        let span_id = self.ids.new_span_id();
        let (context, parent, baggage) = match inherited {
            Some((parent, baggage)) => (
                SpanContext::new(
                    parent.trace_id(),
                    span_id,
                    parent.trace_flags(),
                    false,
                    parent.trace_state().clone(),
                ),
                parent.span_id(),
                baggage,
            ),
            None => {
                let trace_id = self.ids.new_trace_id();
                let context = SpanContext::new(
                    trace_id,
                    span_id,
                    self.sampler.flags(trace_id),
                    false,
                    TraceState::NONE,
                );
                (context, SpanId::INVALID, None)
            }
        };
        // A root span may still adopt a sampled remote parent (`continue_trace`),
        // so it keeps its fields whatever the ratio decided.
        let data = (context.is_sampled() || parent == SpanId::INVALID).then(|| {
            let mut pending = Pending::new(attrs.metadata().name(), attrs.fields().len());
            attrs.record(&mut Visitor(&mut Fields(&mut pending)));
            Box::new(pending)
        });
        span.extensions_mut().insert(Recorded { context, parent, parent_is_remote: false, baggage, data });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(Recorded { data: Some(pending), .. }) = extensions.get_mut::<Recorded>() {
            values.record(&mut Visitor(&mut Fields(pending)));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let Some(to) =
            ctx.span(follows).and_then(|s| s.extensions().get::<Recorded>().map(|r| r.context.clone()))
        else {
            return;
        };
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(Recorded { data: Some(pending), .. }) = extensions.get_mut::<Recorded>() {
            pending.link(to);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let span = ctx.event_span(event);
        if let Some((logger, level)) = &self.logs {
            if event.metadata().level() <= level {
                let context =
                    span.as_ref().and_then(|s| s.extensions().get::<Recorded>().map(|r| r.context.clone()));
                emit_log(logger, event, context.as_ref());
            }
        }
        // Span events stay at info and above, whatever the log level.
        let Some(span) = span.filter(|_| *event.metadata().level() <= tracing::Level::INFO) else { return };
        let mut extensions = span.extensions_mut();
        let Some(Recorded { data: Some(pending), .. }) = extensions.get_mut::<Recorded>() else { return };
        if *event.metadata().level() == tracing::Level::ERROR && pending.status == Status::Unset {
            pending.status = Status::error("");
        }
        if pending.events.len() >= MAX_EVENTS {
            pending.dropped_events += 1;
            return;
        }
        let mut fields = EventFields::default();
        event.record(&mut Visitor(&mut fields));
        let name = fields.message.map_or(Cow::Borrowed(event.metadata().name()), Cow::Owned);
        pending.events.push(Event::new(name, SystemTime::now(), fields.attributes, 0));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(recorded) = span.extensions_mut().remove::<Recorded>() else { return };
        let Some(pending) = recorded.data.filter(|_| recorded.context.is_sampled()) else { return };
        let pending = *pending;
        let mut events = SpanEvents::default();
        events.events = pending.events;
        events.dropped_count = pending.dropped_events;
        let mut links = SpanLinks::default();
        links.links = pending.links;
        links.dropped_count = pending.dropped_links;
        self.queue.push(SpanData {
            span_context: recorded.context,
            parent_span_id: recorded.parent,
            parent_span_is_remote: recorded.parent_is_remote,
            span_kind: pending.kind,
            name: pending.name,
            start_time: pending.start,
            end_time: SystemTime::now(),
            attributes: pending.attributes,
            dropped_attributes_count: 0,
            events,
            links,
            status: pending.status,
            instrumentation_scope: self.scope.clone(),
        });
    }
}

/// Span fields into attributes, name, kind and status.
struct Fields<'a>(&'a mut Pending);

impl Put for Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let pending = &mut *self.0;
        match field.name() {
            "otel.name" => pending.name = Cow::Owned(value.as_str().into_owned()),
            "otel.kind" => {
                pending.kind = match value.as_str().as_ref() {
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    _ => SpanKind::Internal,
                }
            }
            "otel.status_code" => {
                pending.status = match value.as_str().to_ascii_uppercase().as_str() {
                    "ERROR" => Status::error(""),
                    "OK" => Status::Ok,
                    _ => Status::Unset,
                }
            }
            "otel.status_description" => {
                if matches!(pending.status, Status::Error { .. }) {
                    pending.status = Status::error(value.as_str().into_owned());
                }
            }
            name => {
                let key = Key::from_static_str(name);
                match pending.attributes.iter_mut().find(|kv| kv.key == key) {
                    Some(kv) => kv.value = value,
                    None => pending.attributes.push(KeyValue::new(key, value)),
                }
            }
        }
    }
}

/// An event's `message` and its other fields.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    attributes: Vec<KeyValue>,
}

impl Put for EventFields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(value.as_str().into_owned());
        } else {
            self.attributes.push(KeyValue::new(field.name(), value));
        }
    }
}

/// Where visited field values go, as OpenTelemetry values.
trait Put {
    fn put(&mut self, field: &Field, value: Value);
}

/// A `tracing` visitor for any [`Put`].
struct Visitor<'a, P>(&'a mut P);

impl<P: Put> Visit for Visitor<'_, P> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        // OTLP integers are signed; a `u64` past `i64::MAX` is written out.
        let value = i64::try_from(value).map_or_else(|_| Value::String(value.to_string().into()), Value::I64);
        self.0.put(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field, Value::F64(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field, Value::String(value.to_owned().into()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.put(field, Value::String(value.to_string().into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.put(field, Value::String(format!("{value:?}").into()));
    }
}

/// `event` as an OTLP log record, with the ids of the span it happened in.
fn emit_log(logger: &SdkLogger, event: &tracing::Event<'_>, context: Option<&SpanContext>) {
    let meta = event.metadata();
    let mut record = logger.create_log_record();
    let (severity, text) = match *meta.level() {
        tracing::Level::ERROR => (Severity::Error, "ERROR"),
        tracing::Level::WARN => (Severity::Warn, "WARN"),
        tracing::Level::INFO => (Severity::Info, "INFO"),
        tracing::Level::DEBUG => (Severity::Debug, "DEBUG"),
        tracing::Level::TRACE => (Severity::Trace, "TRACE"),
    };
    record.set_severity_number(severity);
    record.set_severity_text(text);
    record.set_target(meta.target());
    record.set_timestamp(SystemTime::now());
    let mut fields = EventFields::default();
    event.record(&mut Visitor(&mut fields));
    if let Some(message) = fields.message {
        record.set_body(AnyValue::String(message.into()));
    }
    for kv in fields.attributes {
        record.add_attribute(kv.key, any_value(kv.value));
    }
    if let Some(c) = context {
        record.set_trace_context(c.trace_id(), c.span_id(), Some(c.trace_flags()));
    }
    logger.emit(record);
}

fn any_value(value: Value) -> AnyValue {
    match value {
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::I64(i) => AnyValue::Int(i),
        Value::F64(f) => AnyValue::Double(f),
        other => AnyValue::String(other.as_str().into_owned().into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use opentelemetry_sdk::error::OTelSdkResult;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::propagation;
    use crate::queue::Sink;

    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl Sink<SpanData> for Collect {
        fn export(&mut self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().map_err(|_| opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown)?.extend(batch);
            Ok(())
        }
        fn shutdown(&mut self) -> OTelSdkResult {
            Ok(())
        }
    }

    /// Run `f` under a subscriber with the recorder at `ratio`; the spans it exported.
    fn record(ratio: f64, f: impl FnOnce()) -> Vec<SpanData> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::new(Mutex::new(Collect(got.clone())));
        let queue =
            Arc::new(ExportQueue::start("test-spans", sink, 64, Duration::from_secs(3600), 64).unwrap());
        let subscriber = tracing_subscriber::registry().with(SpanRecorder::new(ratio, queue.clone()));
        tracing::subscriber::with_default(subscriber, f);
        queue.flush().unwrap();
        let spans = got.lock().unwrap().clone();
        spans
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
    }

    #[test]
    fn spans_carry_the_remote_parent_their_fields_events_links_and_status() {
        let mut outgoing = http::HeaderMap::new();
        let spans = record(1.0, || {
            let mut incoming = http::HeaderMap::new();
            incoming.insert(
                "traceparent",
                http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            incoming.insert("baggage", http::HeaderValue::from_static("tenant=web"));
            let server = tracing::info_span!(
                "server",
                otel.name = %"POST /v1/chat",
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            );
            propagation::continue_trace(&server, &incoming);
            let other = tracing::info_span!(parent: None, "batch", batch.size = 2u64);
            {
                let _entered = server.enter();
                let child = tracing::info_span!("queue", queue.wait_ms = 1.5);
                child.in_scope(|| tracing::info!(reason = "deadline", "refused"));
                propagation::link(&other, &child);
                let client = tracing::info_span!("backend.request", otel.kind = "client");
                propagation::inject(&client, &mut outgoing);
            }
            server.record("http.response.status_code", 503u64);
            server.record("otel.status_code", "ERROR");
        });
        let server = named(&spans, "POST /v1/chat");
        assert_eq!(server.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(server.parent_span_is_remote);
        assert_eq!(server.span_kind, SpanKind::Server);
        assert!(matches!(server.status, Status::Error { .. }));
        assert!(server.attributes.contains(&KeyValue::new("http.response.status_code", 503i64)));
        let queue = named(&spans, "queue");
        assert_eq!(queue.span_context.trace_id(), server.span_context.trace_id());
        assert_eq!(queue.parent_span_id, server.span_context.span_id());
        assert!(!queue.parent_span_is_remote);
        assert_eq!(queue.events.len(), 1);
        assert_eq!(queue.events[0].name, "refused");
        assert!(queue.events[0].attributes.contains(&KeyValue::new("reason", "deadline")));
        let batch = named(&spans, "batch");
        assert_ne!(batch.span_context.trace_id(), server.span_context.trace_id());
        assert_eq!(batch.links.len(), 1);
        assert_eq!(batch.links[0].span_context.span_id(), queue.span_context.span_id());
        let client = named(&spans, "backend.request");
        assert_eq!(client.span_kind, SpanKind::Client);
        let traceparent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", client.span_context.span_id());
        assert_eq!(outgoing["traceparent"], traceparent.as_str());
        assert_eq!(outgoing["baggage"], "tenant=web");
    }

    #[test]
    fn unsampled_traces_export_nothing_but_still_propagate() {
        let mut outgoing = http::HeaderMap::new();
        let mut ids = None;
        let spans = record(0.0, || {
            let server = tracing::info_span!("server");
            let _entered = server.enter();
            let child = tracing::info_span!("child");
            propagation::inject(&child, &mut outgoing);
            ids = propagation::ids(&child);
            assert_eq!(propagation::trace_id(&child), None, "no exemplar for an unsampled trace");
        });
        assert!(spans.is_empty(), "{spans:#?}");
        let (trace, sampled) = ids.unwrap();
        assert!(!sampled);
        assert!(outgoing["traceparent"].to_str().unwrap().starts_with(&format!("00-{trace}-")));
        assert!(outgoing["traceparent"].to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn a_sampled_caller_is_followed_whatever_the_ratio() {
        let spans = record(0.0, || {
            let mut incoming = http::HeaderMap::new();
            incoming.insert(
                "traceparent",
                http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            let server = tracing::info_span!("server", route = "/v1/embeddings");
            propagation::continue_trace(&server, &incoming);
            server.in_scope(|| tracing::info_span!("decode").in_scope(|| {}));
        });
        assert_eq!(spans.len(), 2, "{spans:#?}");
        assert!(named(&spans, "server").attributes.contains(&KeyValue::new("route", "/v1/embeddings")));
    }

    #[test]
    fn the_ratio_sampler_matches_the_sdk_rule() {
        let never = Sampler::new(0.0);
        let always = Sampler::new(1.0);
        let half = Sampler::new(0.5);
        let low = TraceId::from(0x0000_0000_0000_0000_0000_0000_0000_0002_u128);
        let high = TraceId::from(0x0000_0000_0000_0000_ffff_ffff_ffff_ffff_u128);
        assert!(!never.sampled(low));
        assert!(always.sampled(high));
        assert!(half.sampled(low));
        assert!(!half.sampled(high));
        let ids = RandomIdGenerator::default();
        let kept = (0..10_000).filter(|_| half.sampled(ids.new_trace_id())).count();
        assert!((4_500..5_500).contains(&kept), "{kept}");
    }
}
