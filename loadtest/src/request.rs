//! One request against the target: the HTTP client, the request template, and the exchange
//! that turns a send into an [`Outcome`] and a latency.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::tls::Tls;

/// Response header in which the gateway reports how long the request queued.
pub const QUEUE_HEADER: &str = "x-infergate-queue-ms";

/// HTTP client over plain TCP, or over TLS for `https://` URLs.
pub type Client = LegacyClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that keeps at most one idle connection, so that a worker owning it reuses a
/// single keep-alive connection.
pub fn client(tls: &Tls) -> Client {
    client_with(tls, 1)
}

/// A client shared by many requests in flight, keeping up to `connections` idle keep-alive
/// connections (the open-loop runner's; a request finding none idle opens another).
pub fn client_with(tls: &Tls, connections: usize) -> Client {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls.config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp());
    LegacyClient::builder(TokioExecutor::new()).pool_max_idle_per_host(connections).build(https)
}

/// An HTTP/2 client (h2c, prior knowledge, for `http://`; h2 in ALPN for `https://`): every
/// request in flight is a stream on one connection to the target.
pub fn client_h2(tls: &Tls) -> Client {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls.config())
        .https_or_http()
        .enable_http2()
        .wrap_connector(tcp());
    LegacyClient::builder(TokioExecutor::new()).http2_only(true).build(https)
}

fn tcp() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    // `https://` URLs are the TLS connector's to take.
    http.enforce_http(false);
    http
}

/// The request every worker sends, or a scenario's mix to draw each request from.
#[derive(Debug, Clone)]
pub struct Target {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// With a scenario file: each request drawn from its mix (the fields above unused).
    pub mix: Option<std::sync::Arc<crate::scenario::Mix>>,
    /// Speak HTTP/2 (h2c, or h2 over TLS) over one multiplexed connection instead of HTTP/1.1.
    pub http2: bool,
    /// How `https://` targets are trusted.
    pub tls: Tls,
}

impl Target {
    /// The next request (the `number`-th of a schedule, when it has one), and the
    /// scenario entry it came from.
    fn request(&self, number: Option<u64>) -> (Request<Full<Bytes>>, Option<std::sync::Arc<str>>) {
        let (method, uri, headers, body, name) = match &self.mix {
            Some(mix) => {
                let d = mix.draw(number);
                (d.method, d.uri, d.headers, d.body, Some(d.entry.name.clone()))
            }
            None => (self.method.clone(), self.uri.clone(), self.headers.clone(), self.body.clone(), None),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        (request, name)
    }

    /// Sends one request and reads the whole response body, all within `timeout`. The
    /// latency (and a stream's token times) run from `origin` — when the request was handed
    /// to the client in a closed loop, when it was due in an open one — to the end of the body.
    /// `number`: the arrival's number in an open loop's schedule, which seeds its scenario
    /// draw (so that a shard draws what the whole run would have for it).
    pub async fn send(
        &self,
        client: &Client,
        timeout: Duration,
        origin: Instant,
        number: Option<u64>,
    ) -> Sent {
        let (request, scenario) = self.request(number);
        let outcome = match tokio::time::timeout(timeout, exchange(client, request, origin)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Error {
                kind: ErrorKind::Timeout,
                detail: format!("no complete response within {}", humantime::format_duration(timeout)),
            },
        };
        Sent { outcome, latency: origin.elapsed(), scenario }
    }
}

/// Why a request got no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// Anything else: connection reset, malformed response, body cut short.
    Other,
}

/// What one request ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A response whose body was read to the end.
    Response {
        status: u16,
        /// The gateway's `x-infergate-queue-ms` header, when present and numeric.
        queue_ms: Option<f64>,
        /// Token timing, when the answer was an event stream.
        stream: Option<Streamed>,
    },
    /// No complete response; `detail` is the error chain, kept once per kind for the report.
    Error { kind: ErrorKind, detail: String },
}

impl Outcome {
    /// A complete 2xx response.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Response { status, .. } if (200..300).contains(status))
    }
}

/// One request's result.
pub struct Sent {
    pub outcome: Outcome,
    pub latency: Duration,
    /// The scenario entry the request came from.
    pub scenario: Option<std::sync::Arc<str>>,
}

async fn exchange(client: &Client, request: Request<Full<Bytes>>, origin: Instant) -> Outcome {
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(error) => {
            let kind = if error.is_connect() { ErrorKind::Connect } else { ErrorKind::Other };
            return Outcome::Error { kind, detail: chain(&error) };
        }
    };
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    let queue_ms =
        header(QUEUE_HEADER).and_then(|v| v.trim().parse::<f64>().ok()).filter(|ms| ms.is_finite());
    let mut stream =
        header("content-type").is_some_and(|t| t.starts_with("text/event-stream")).then(Tokens::default);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let (Some(tokens), Some(data)) = (stream.as_mut(), frame.data_ref()) {
                    tokens.feed(data, origin.elapsed());
                }
            }
            Err(error) => {
                return Outcome::Error {
                    kind: ErrorKind::Other,
                    detail: format!("reading body: {}", chain(&error)),
                };
            }
        }
    }
    Outcome::Response { status, queue_ms, stream: stream.map(|t| t.finish(origin.elapsed())) }
}

/// Token timing of a streamed (server-sent events) answer, from the request's origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamed {
    /// When the first event carrying generated text arrived (`None`: none did).
    pub first_token: Option<Duration>,
    /// Times between consecutive text-carrying events (inter-token latency).
    pub gaps: Vec<Duration>,
    /// Generated tokens: the final usage's `completion_tokens` when the server sent it, else
    /// the number of text-carrying events.
    pub tokens: u64,
    /// When the stream ended.
    pub end: Duration,
}

impl Streamed {
    /// Time per output token after the first: (end − first token) / (tokens − 1).
    pub fn per_token(&self) -> Option<Duration> {
        let first = self.first_token?;
        let after = u32::try_from(self.tokens.checked_sub(1)?).ok().filter(|n| *n > 0)?;
        Some(self.end.saturating_sub(first) / after)
    }
}

/// Reads an OpenAI-style event stream as it arrives: `data: {json}` events separated by a
/// blank line, `data: [DONE]` at the end.
#[derive(Debug, Default)]
struct Tokens {
    pending: Vec<u8>,
    last: Option<Duration>,
    first: Option<Duration>,
    gaps: Vec<Duration>,
    events: u64,
    usage: Option<u64>,
}

/// The parts of a chunk that say whether it carries text (chat `delta.content` or
/// completions `text`) and the usage a last chunk may carry.
#[derive(serde::Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(serde::Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(serde::Deserialize)]
struct ChunkUsage {
    completion_tokens: u64,
}

impl Tokens {
    fn feed(&mut self, data: &[u8], at: Duration) {
        self.pending.extend_from_slice(data);
        while let Some(end) = find_event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            self.event(&event, at);
        }
    }

    fn event(&mut self, event: &[u8], at: Duration) {
        let text = String::from_utf8_lossy(event);
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n");
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(&data) else { return };
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.completion_tokens);
        }
        let text = chunk.choices.iter().any(|c| {
            c.delta.as_ref().and_then(|d| d.content.as_deref()).is_some_and(|t| !t.is_empty())
                || c.text.as_deref().is_some_and(|t| !t.is_empty())
        });
        if !text {
            return;
        }
        self.events += 1;
        if let Some(last) = self.last {
            self.gaps.push(at.saturating_sub(last));
        }
        self.first.get_or_insert(at);
        self.last = Some(at);
    }

    fn finish(self, end: Duration) -> Streamed {
        Streamed { first_token: self.first, gaps: self.gaps, tokens: self.usage.unwrap_or(self.events), end }
    }
}

/// The end of the first complete event (past its blank line) in `buffer`.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An error and its sources, joined with ": ", since hyper's own message alone is vague.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn streamed(frames: &[(&str, u64)]) -> Streamed {
        let mut tokens = Tokens::default();
        for (data, ms) in frames {
            tokens.feed(data.as_bytes(), Duration::from_millis(*ms));
        }
        tokens.finish(Duration::from_millis(frames.last().map_or(0, |f| f.1)))
    }

    #[test]
    fn token_times_come_from_text_carrying_events() {
        let role = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        let token = |t: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n");
        let (a, b, c) = (token("Hel"), token("lo"), token("!"));
        // An event split across frames counts when its end arrives; two in one frame share a time.
        let (b1, b2) = b.split_at(10);
        let s = streamed(&[(role, 5), (&a, 20), (b1, 25), (b2, 30), (&format!("{c}data: [DONE]\n\n"), 50)]);
        assert_eq!(s.first_token, Some(Duration::from_millis(20)));
        assert_eq!(s.gaps, vec![Duration::from_millis(10), Duration::from_millis(20)]);
        assert_eq!(s.tokens, 3);
        assert_eq!(s.per_token(), Some(Duration::from_millis(15)));
        // A usage chunk's count wins over counting events; CRLF framing works too.
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7}}\r\n\r\n";
        let s = streamed(&[(&a, 10), (usage, 40)]);
        assert_eq!((s.tokens, s.per_token()), (7, Some(Duration::from_millis(5))));
        let nothing = streamed(&[(role, 5), ("data: [DONE]\n\n", 6)]);
        assert_eq!((nothing.first_token, nothing.tokens, nothing.per_token()), (None, 0, None));
    }

    #[test]
    fn error_chain_includes_causes() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(chain(&Outer(refused)), "client error (Connect): connection refused");
    }
}
