//! W3C trace context and baggage across process boundaries, and links
//! between spans (a batch span links to every member request's span).
//!
//! These read and write the ids that infergate's span layer (`spans.rs`)
//! keeps on every span; with no trace export configured, spans have none
//! and these do nothing.

use std::sync::Arc;

use http::HeaderName;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Registry;

use crate::spans::{self, Recorded};

/// The longest `baggage` passed on (W3C Baggage's limit).
const MAX_BAGGAGE: usize = 8192;

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Run `f` on what `span` recorded, when it is recorded.
fn with_recorded<R>(span: &tracing::Span, f: impl FnOnce(&mut Recorded) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        extensions.get_mut::<Recorded>().map(f)
    })
    .flatten()
}

fn context_of(span: &tracing::Span) -> Option<SpanContext> {
    with_recorded(span, |r| r.context.clone()).filter(SpanContext::is_valid)
}

/// W3C trace context's headers. Named by constants: looking a header up by
/// a string parses the name each time.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// See [`TRACEPARENT`].
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// W3C baggage's header.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// Make `span` a child of the `traceparent` (with `tracestate` and
/// `baggage`) in `headers`, when there is a valid one. Call it before
/// `span` has children.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key(TRACEPARENT) {
        return;
    }
    let extracted = TraceContextPropagator::new().extract(&Headers(headers));
    let remote = extracted.span().span_context().clone();
    if !remote.is_valid() {
        return;
    }
    let baggage = headers
        .get(BAGGAGE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_BAGGAGE)
        .map(Arc::<str>::from);
    with_recorded(span, |recorded| spans::adopt(recorded, &remote, baggage));
}

/// Write `span`'s context into outgoing `headers` (`traceparent`,
/// `tracestate`, `baggage`).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let Some((context, baggage)) =
        with_recorded(span, |r| (r.context.clone(), r.baggage.clone())).filter(|(c, _)| c.is_valid())
    else {
        return;
    };
    let traceparent =
        format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8());
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = http::HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    set(TRACEPARENT, &traceparent);
    let state = context.trace_state().header();
    if !state.is_empty() {
        set(TRACESTATE, &state);
    }
    if let Some(baggage) = baggage {
        set(BAGGAGE, &baggage);
    }
}

/// Link `from` to `to`: the OpenTelemetry way to relate spans of different
/// traces (a batch and its member requests).
pub fn link(from: &tracing::Span, to: &tracing::Span) {
    if let Some(to) = context_of(to) {
        with_recorded(from, |recorded| {
            if let Some(pending) = recorded.data.as_mut() {
                pending.link(to);
            }
        });
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
    context_of(span).map(|c| (c.trace_id().to_string(), c.is_sampled()))
}
