//! One request against the target: the HTTP client, the request template, and the exchange
//! that turns a send into an [`Outcome`] and a latency.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::TokioExecutor;

use crate::report::{ErrorKind, Outcome};

/// Response header in which the gateway reports how long the request queued.
pub const QUEUE_HEADER: &str = "x-infergate-queue-ms";

/// HTTP/1.1 client over plain TCP.
pub type Client = LegacyClient<HttpConnector, Full<Bytes>>;

/// A client that keeps at most one idle connection, so that a worker owning it reuses a
/// single keep-alive connection.
pub fn client() -> Client {
    client_with(1)
}

/// A client shared by many requests in flight, keeping up to `connections` idle keep-alive
/// connections (the open-loop runner's; a request finding none idle opens another).
pub fn client_with(connections: usize) -> Client {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    LegacyClient::builder(TokioExecutor::new()).pool_max_idle_per_host(connections).build(http)
}

/// The request every worker sends.
#[derive(Debug, Clone)]
pub struct Target {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Target {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }

    /// Sends one request and reads the whole response body, all within `timeout`. The
    /// latency runs from handing the request to the client to the end of the body.
    pub async fn send(&self, client: &Client, timeout: Duration) -> (Outcome, Duration) {
        let request = self.request();
        let start = Instant::now();
        let outcome = match tokio::time::timeout(timeout, exchange(client, request)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Error {
                kind: ErrorKind::Timeout,
                detail: format!("no complete response within {}", humantime::format_duration(timeout)),
            },
        };
        (outcome, start.elapsed())
    }
}

async fn exchange(client: &Client, request: Request<Full<Bytes>>) -> Outcome {
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(error) => {
            let kind = if error.is_connect() { ErrorKind::Connect } else { ErrorKind::Other };
            return Outcome::Error { kind, detail: chain(&error) };
        }
    };
    let status = response.status().as_u16();
    let queue_ms = response
        .headers()
        .get(QUEUE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Err(error) = frame {
            return Outcome::Error {
                kind: ErrorKind::Other,
                detail: format!("reading body: {}", chain(&error)),
            };
        }
    }
    Outcome::Response { status, queue_ms }
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

    #[test]
    fn error_chain_includes_causes() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(chain(&Outer(refused)), "client error (Connect): connection refused");
    }
}
