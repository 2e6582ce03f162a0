//! W3C trace context and baggage across process boundaries, and links
//! between spans (a batch span links to every member request's span).

use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Make `span` a child of the `traceparent` (and `baggage`) in `headers`,
/// when there is a valid one.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let parent = propagator().extract(&Headers(headers));
        // A span that is not recorded (filtered out) has nothing to attach to.
        let _ = span.set_parent(parent);
    }
}

/// Write `span`'s context into outgoing `headers` (`traceparent`, `baggage`).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    propagator().inject_context(&span.context(), &mut HeadersMut(headers));
}

/// Link `from` to `to`: the OpenTelemetry way to relate spans of different
/// traces (a batch and its member requests).
pub fn link(from: &tracing::Span, to: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    let context = to.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        from.add_link(span_context);
    }
}

/// The trace id of `span` as 32 hex digits, when it is recorded and sampled
/// (an exemplar must point at a trace that exists).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    ids(span).filter(|(_, sampled)| *sampled).map(|(id, _)| id)
}

/// The trace id of `span` and whether it is sampled, whenever traces are on
/// (log lines carry it either way).
pub fn ids(span: &tracing::Span) -> Option<(String, bool)> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.is_sampled()))
}
