//! The gateway's own middleware: [`Edge`] (request id and error shapes,
//! outermost) and [`Admit`] (metrics, tenant, deadline); `stack.rs` puts
//! them in order with the tower-http layers. Both are plain tower services
//! rather than `axum::middleware::from_fn` functions, which box the rest of
//! the stack and a future per request each.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use axum::BoxError;
use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use infergate_otel::RequestLabels;
use tokio::time::Instant as TokioInstant;
use tower::{Layer, Service};

use crate::context::{DeadlineSpec, Received};
use crate::error::{ApiError, ErrorShape, Shaped};
use crate::state::SharedState;

/// Routes that need no API key: health, readiness and metrics.
pub fn is_open_route(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/v2" | "/v2/health/live" | "/v2/health/ready")
}

/// The outermost layer: honour or mint `x-request-id` and return it, so
/// logs, traces and clients share one id; then make every error response
/// speak its API's error shape: re-render errors for KServe routes, and
/// give a body to errors produced by layers that know nothing of our
/// shapes (404, 405, 413, 408, panics).
#[derive(Clone)]
pub struct EdgeLayer {
    state: SharedState,
    ids: RequestIds,
}

impl EdgeLayer {
    pub fn new(state: SharedState) -> Self {
        EdgeLayer { state, ids: RequestIds::new() }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, state: self.state.clone(), ids: self.ids.clone() }
    }
}

/// See [`EdgeLayer`].
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: SharedState,
    ids: RequestIds,
}

impl<S, B> Service<Request> for Edge<S>
where
    S: Service<Request, Response = http::Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // A client's id is kept when it is short and printable; otherwise
        // it is dropped and one is minted (it is echoed, logged and sent
        // upstream).
        let max = self.state.config.server.max_request_id_bytes;
        let id = match request.headers().get(REQUEST_ID) {
            Some(id)
                if id.len() <= max
                    && !id.is_empty()
                    && id.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
            {
                id.clone()
            }
            _ => {
                let id = self.ids.header();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        // Shared, not copied: both are read only when the answer is an error.
        let (uri, method) = (request.uri().clone(), request.method().clone());
        EdgeFuture { inner: self.inner.call(request), id: Some(id), uri, method, state: self.state.clone() }
    }
}

pin_project_lite::pin_project! {
    /// [`Edge`]'s response future.
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
        uri: Uri,
        method: Method,
        state: SharedState,
    }
}

impl<F, B> Future for EdgeFuture<F>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let mut response = response.map(Body::new);
        if let Some(id) = this.id.take() {
            response.headers_mut().entry(REQUEST_ID).or_insert(id);
        }
        Poll::Ready(Ok(shape_error(response, this.uri, this.method, this.state)))
    }
}

pub(crate) use infergate_backends::REQUEST_ID;

/// An error response in its API's shape; other responses as they are.
fn shape_error(response: Response, uri: &Uri, method: &Method, state: &SharedState) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let path = uri.path();
    let shape = ErrorShape::for_path(path);
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let error = match response.extensions().get::<Shaped>() {
        Some(_) if shape == ErrorShape::OpenAi => return response,
        Some(Shaped(error)) => error.clone(),
        // A handler's own JSON answer (e.g. `/readyz` while draining).
        None if is_json => return response,
        None => {
            Arc::new(ApiError::from_status(status, method.as_str(), path, state.config.server.max_body_bytes))
        }
    };
    let mut shaped = shape.render(&error);
    // Keep headers the inner layers set (`x-request-id`, `allow`, ...).
    for (name, value) in response.headers() {
        if name != http::header::CONTENT_TYPE && name != http::header::CONTENT_LENGTH {
            shaped.headers_mut().entry(name).or_insert_with(|| value.clone());
        }
    }
    shaped
}

/// Request ids: random version-4 UUIDs. The random bytes come from the
/// operating system 64 ids at a time per thread (one `getrandom` per
/// request cost ~2% of a proxied request), so ids reveal nothing about the
/// traffic between them; if the system's generator fails, a per-process
/// SplitMix64 stream stands in.
#[derive(Clone)]
pub(crate) struct RequestIds(Arc<infergate_rng::SharedSplitMix64>);

/// Bytes of randomness fetched at once: 64 ids.
const POOL: usize = 64 * 16;

thread_local! {
    static RANDOM: std::cell::RefCell<([u8; POOL], usize)> = const { std::cell::RefCell::new(([0; POOL], POOL)) };
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        RequestIds(Arc::new(infergate_rng::SharedSplitMix64::from_process()))
    }

    /// The next id as (high, low) 64-bit halves, version and variant set.
    fn next(&self) -> (u64, u64) {
        let drawn = RANDOM.with(|pool| {
            let (bytes, used) = &mut *pool.borrow_mut();
            if *used + 16 > POOL {
                getrandom::fill(bytes).ok()?;
                *used = 0;
            }
            let at = *used;
            *used += 16;
            let half = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
            Some((half(at), half(at + 8)))
        });
        let (hi, lo) = drawn.unwrap_or_else(|| (self.0.next_u64(), self.0.next_u64()));
        ((hi & !0xf000) | 0x4000, (lo & !(0b11 << 62)) | (0b10 << 62))
    }

    /// The next id as a header value.
    pub(crate) fn header(&self) -> HeaderValue {
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_bytes(&uuid_text(self.next())).unwrap_or(HeaderValue::from_static("unknown"))
    }
}

/// A UUID's 8-4-4-4-12 hex text, written by hand: `format!` of five hex
/// fields cost ~2% of a proxied request's instructions.
fn uuid_text((hi, lo): (u64, u64)) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0; 32];
    for (i, digit) in digits.iter_mut().enumerate() {
        let word = if i < 16 { hi } else { lo };
        *digit = HEX[((word >> (60 - 4 * (i % 16))) & 0xf) as usize];
    }
    let mut text = [b'-'; 36];
    text[..8].copy_from_slice(&digits[..8]);
    text[9..13].copy_from_slice(&digits[8..12]);
    text[14..18].copy_from_slice(&digits[12..16]);
    text[19..23].copy_from_slice(&digits[16..20]);
    text[24..].copy_from_slice(&digits[20..]);
    text
}

/// Admit a request: record `http.server.request.duration` and in-flight
/// requests, map its API key to a tenant (open routes need none) and parse
/// its deadline headers into a [`DeadlineSpec`]. One layer rather than
/// three.
///
/// Streamed responses are measured to their headers; token timing is
/// measured apart. A client that disconnects before its response is counted
/// under status 499 (nginx's "client closed request") and its server span
/// says so.
#[derive(Clone)]
pub struct AdmitLayer(pub SharedState);

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit { inner, state: self.0.clone() }
    }
}

/// See [`AdmitLayer`].
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    state: SharedState,
}

impl<S, B> Service<Request> for Admit<S>
where
    S: Service<Request, Response = http::Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AdmitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let state = &self.state;
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "unmatched".to_owned());
        let flight = InFlight {
            state: state.clone(),
            start: Instant::now(),
            method: method_label(request.method()).to_owned(),
            route,
            status: None,
            // The server span (the trace layer calls this inside it).
            span: tracing::Span::current(),
        };
        state.metrics.in_flight.inc();
        match authenticate(state, &mut request).and_then(|()| deadline(&mut request)) {
            Ok(()) => {
                // Only a tenant with limits gets headers to carry back.
                let limited =
                    request.extensions().get::<crate::context::Caller>().is_some_and(|c| c.policy.limited);
                let rate = limited.then(|| {
                    let slot = Arc::new(crate::tenancy::HeaderSlot::default());
                    request.extensions_mut().insert(slot.clone());
                    slot
                });
                AdmitFuture { inner: Some(self.inner.call(request)), refused: None, flight, rate }
            }
            Err(error) => {
                AdmitFuture { inner: None, refused: Some(error.into_response()), flight, rate: None }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Admit`]'s response future; its [`InFlight`] records the request
    /// when it completes or is dropped.
    pub struct AdmitFuture<F> {
        #[pin]
        inner: Option<F>,
        refused: Option<Response>,
        flight: InFlight,
        // The call's rate-limit headers, for the answer.
        rate: Option<Arc<crate::tenancy::HeaderSlot>>,
    }
}

impl<F, B> Future for AdmitFuture<F>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match (this.inner.as_pin_mut(), this.refused.take()) {
            (Some(inner), _) => {
                let Ok(response) = ready!(inner.poll(cx));
                response.map(Body::new)
            }
            (None, Some(refused)) => refused,
            (None, None) => {
                ApiError::Internal { detail: "admit polled after completion".into() }.into_response()
            }
        };
        let mut response = response;
        if let Some(headers) = this.rate.as_ref().and_then(|slot| slot.get()) {
            headers.apply(response.headers_mut());
        }
        this.flight.status = Some(response.status().as_u16());
        Poll::Ready(Ok(response))
    }
}

/// A request being served; dropped when it completes or its client leaves.
struct InFlight {
    state: SharedState,
    start: Instant,
    method: String,
    route: String,
    status: Option<u16>,
    span: tracing::Span,
}

/// What the duration histogram records for a client that went away.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Drop for InFlight {
    fn drop(&mut self) {
        let metrics = &self.state.metrics;
        metrics.in_flight.dec();
        let span = &self.span;
        let status = self.status.unwrap_or_else(|| {
            span.record("error.type", "client_disconnected");
            span.record("otel.status_code", "ERROR");
            CLIENT_CLOSED_REQUEST
        });
        let labels = RequestLabels {
            http_request_method: std::mem::take(&mut self.method),
            http_route: std::mem::take(&mut self.route),
            http_response_status_code: status,
        };
        let trace_id = infergate_otel::propagation::trace_id(span);
        metrics.observe_request(&labels, self.start.elapsed().as_secs_f64(), trace_id);
    }
}

/// Map the API key to a tenant; open routes need none.
fn authenticate(state: &SharedState, request: &mut Request) -> Result<(), ApiError> {
    if is_open_route(request.uri().path()) {
        return Ok(());
    }
    let caller = state.tenants().authenticate(request.headers())?;
    request.extensions_mut().insert(caller);
    Ok(())
}

/// Parse the deadline headers into a [`DeadlineSpec`].
fn deadline(request: &mut Request) -> Result<(), ApiError> {
    let now = TokioInstant::now();
    let spec = DeadlineSpec::from_headers(request.headers(), now)?;
    request.extensions_mut().insert(spec);
    request.extensions_mut().insert(Received(now));
    Ok(())
}

pin_project_lite::pin_project! {
    /// A request body that must arrive whole within a total time
    /// (`server.body_read_timeout`), however it trickles (a per-frame idle
    /// timeout would let a body at one byte a second run forever).
    pub(crate) struct TotalTimeout<B> {
        #[pin]
        body: B,
        #[pin]
        deadline: tokio::time::Sleep,
    }
}

impl<B> TotalTimeout<B> {
    pub(crate) fn new(body: B, total: std::time::Duration) -> Self {
        TotalTimeout { body, deadline: tokio::time::sleep(total) }
    }
}

/// The body did not arrive whole in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub(crate) struct BodyDeadline;

impl<B> http_body::Body for TotalTimeout<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyDeadline)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The method as a metric label: the HTTP semantic conventions' known
/// methods, and `_OTHER` for any other (each made-up method would otherwise
/// be a new series).
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::POST), "POST");
        assert_eq!(method_label(&http::Method::from_bytes(b"BREW").unwrap()), "_OTHER");
        assert_eq!(method_label(&http::Method::from_bytes(b"get").unwrap()), "_OTHER");
    }

    #[test]
    fn request_ids_are_version_4_uuids_and_do_not_repeat() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let text = ids.header().to_str().unwrap().to_owned();
            // xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx
            let groups: Vec<&str> = text.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{text}");
            assert!(text.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(groups[2].starts_with('4'), "version 4: {text}");
            assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "RFC 4122 variant: {text}");
            assert!(seen.insert(text));
        }
        for (hi, lo) in [(0, 0), (u64::MAX, 1), (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210)] {
            let expected = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                hi >> 32,
                (hi >> 16) & 0xffff,
                hi & 0xffff,
                lo >> 48,
                lo & 0xffff_ffff_ffff
            );
            assert_eq!(std::str::from_utf8(&uuid_text((hi, lo))).unwrap(), expected);
        }
        // Consecutive ids share nothing: about half their bits differ.
        let (a, b) = (ids.next(), ids.next());
        let differing = (a.0 ^ b.0).count_ones() + (a.1 ^ b.1).count_ones();
        assert!((30..=98).contains(&differing), "{differing} bits differ");
    }
}
