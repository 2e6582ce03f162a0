//! Keep-alive HTTP/1.1 connections to plain-`http` upstreams, kept per
//! authority on hyper's connection-level client.
//!
//! hyper-util's pooled client spawns a task per request to put the
//! connection back once it is ready again, and hashes the scheme and
//! authority twice; on the proxy path that was a few per cent of the CPU per
//! request. Here a connection goes back to its authority's idle list when its
//! response body has been read to the end (a body dropped part-way closes the
//! connection instead), and a request takes the most recently used one.
//! A connection that the upstream closed while idle, or that has been idle
//! longer than the idle timeout, is dropped on the way out; a request that a
//! reused connection could not send at all is sent again on a new one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Uri};
use http_body_util::Full;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use super::error::{describe, TransportError};

/// A request body.
pub type Body = Full<Bytes>;

/// Idle connections per authority, most recently used last; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    connect_timeout: Duration,
}

struct Shared {
    idle: Mutex<Idle>,
    idle_timeout: Duration,
    max_idle_per_host: usize,
}

#[derive(Default)]
struct Idle {
    /// Keyed by the authority as written: `Authority`'s own hash lowercases
    /// and hashes byte by byte, which showed on the proxy path.
    hosts: HashMap<Box<str>, Vec<Parked>>,
    swept: Option<Instant>,
}

struct Parked {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Parked {
    /// Still open, and idle for less than `timeout`.
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < timeout
    }
}

impl Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle_per_host: usize) -> Self {
        let idle = Mutex::new(Idle::default());
        Pool { shared: Arc::new(Shared { idle, idle_timeout, max_idle_per_host }), connect_timeout }
    }

    /// Send `request` (absolute-form `http://` URI) to its authority: on an
    /// idle connection when one is ready, else on a new one.
    pub async fn send(
        &self,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, TransportError> {
        let authority = request.uri().authority().cloned().ok_or(TransportError::NoHost)?;
        // Origin form on the wire, the authority in Host (what a browser or
        // curl sends to a server that is not a proxy).
        let path = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        if !request.headers().contains_key(http::header::HOST) {
            let host = match authority.as_str().rsplit_once('@') {
                // Credentials in the URL are not part of Host.
                Some((_, host)) => http::HeaderValue::from_str(host),
                None => http::HeaderValue::from_str(authority.as_str()),
            };
            let host = host.map_err(http::Error::from)?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        while let Some(mut sender) = self.shared.take(&authority) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lend(response, authority, sender)),
                Err(mut error) => match error.take_message() {
                    // Not written: the connection closed while idle.
                    Some(unsent) => request = unsent,
                    None => return Err(TransportError::http(error.into_error())),
                },
            }
        }
        let mut sender = self.connect(&authority).await?;
        let response = sender.send_request(request).await.map_err(TransportError::http)?;
        Ok(self.lend(response, authority, sender))
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<Body>, TransportError> {
        let failed = |source| TransportError::Connect { authority: authority.clone(), source };
        let tcp = self.dial(authority).await.map_err(failed)?;
        tcp.set_nodelay(true).map_err(failed)?;
        let (sender, connection) =
            Builder::new().handshake(TokioIo::new(tcp)).await.map_err(TransportError::http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %describe(&error), "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// A TCP connection to one of the authority's addresses, tried in the
    /// resolver's order, each with an equal share of the connect timeout (so
    /// that an address that drops packets — an unrouted IPv6 one, say —
    /// leaves time for the next).
    async fn dial(&self, authority: &Authority) -> std::io::Result<tokio::net::TcpStream> {
        use std::io::{Error, ErrorKind};
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let timed_out =
            || Error::new(ErrorKind::TimedOut, format!("timed out after {:?}", self.connect_timeout));
        let addresses: Vec<std::net::SocketAddr> =
            tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| timed_out())??
                .collect();
        let share = self.connect_timeout / u32::try_from(addresses.len().max(1)).unwrap_or(u32::MAX);
        let mut error = Error::new(ErrorKind::NotFound, format!("{host} has no address"));
        let many = addresses.len() > 1;
        for address in addresses {
            let failed = match tokio::time::timeout(share, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(tcp)) => return Ok(tcp),
                Ok(Err(e)) => e,
                Err(_) => timed_out(),
            };
            // The last address's error; which address, when there were several.
            error = if many { Error::new(failed.kind(), format!("{address}: {failed}")) } else { failed };
        }
        Err(error)
    }

    fn lend(
        &self,
        response: http::Response<Incoming>,
        authority: Authority,
        sender: SendRequest<Body>,
    ) -> http::Response<ResponseBody> {
        let lent = Lent { shared: self.shared.clone(), authority, sender };
        response.map(|inner| ResponseBody { inner, lent: Some(lent) })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently parked live connection to `authority`.
    fn take(&self, authority: &Authority) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let parked = idle.hosts.get_mut(authority.as_str())?;
        let now = Instant::now();
        while let Some(p) = parked.pop() {
            if p.usable(now, self.idle_timeout) {
                return Some(p.sender);
            }
        }
        None
    }

    fn park(&self, authority: Authority, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        if idle.swept.is_none_or(|at| now.duration_since(at) >= self.idle_timeout) {
            // Now and then, the lists of authorities no request went to lately.
            let timeout = self.idle_timeout;
            idle.hosts.retain(|_, parked| {
                parked.retain(|p| p.usable(now, timeout));
                !parked.is_empty()
            });
            idle.swept = Some(now);
        }
        let parked = Parked { sender, since: now };
        match idle.hosts.get_mut(authority.as_str()) {
            Some(list) if list.len() < self.max_idle_per_host => list.push(parked),
            None if self.max_idle_per_host > 0 => {
                idle.hosts.insert(authority.as_str().into(), vec![parked]);
            }
            _ => {}
        }
    }
}

/// A connection on loan to one response; parked again when its body ends.
struct Lent {
    shared: Arc<Shared>,
    authority: Authority,
    sender: SendRequest<Body>,
}

/// An upstream response body; the connection goes back to the pool once it
/// has been read to the end.
pub struct ResponseBody {
    inner: Incoming,
    lent: Option<Lent>,
}

impl ResponseBody {
    fn give_back(&mut self) {
        if let Some(lent) = self.lent.take() {
            lent.shared.park(lent.authority, lent.sender);
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("pooled", &self.lent.is_some())
            .finish()
    }
}

impl From<Incoming> for ResponseBody {
    fn from(inner: Incoming) -> Self {
        ResponseBody { inner, lent: None }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            // A broken body leaves the connection in no state to reuse.
            Poll::Ready(Some(Err(_))) => this.lent = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // An answer without a body (or whose end was seen) leaves the
        // connection reusable; one dropped part-way does not.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::transport::{next_chunk, read_all};
    use super::*;

    /// A raw HTTP/1.1 server on port 0: counts connections, keeps each
    /// request head, answers `pong` — or, for a request to `/long`, a body
    /// whose second half comes 300 ms after its first. With `close`, it
    /// closes every connection after one answer (as an idle timeout would).
    struct Upstream {
        port: u16,
        accepted: Arc<AtomicUsize>,
        /// Connections the client closed.
        ended: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    async fn upstream(close: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, heads) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let ended = Arc::new(AtomicUsize::new(0));
        let (count, kept, gone) = (accepted.clone(), heads.clone(), ended.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let (kept, gone) = (kept.clone(), gone.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => {
                                    gone.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buffer.len() < head_end + length {
                            let mut chunk = [0u8; 4096];
                            let n = socket.read(&mut chunk).await.unwrap();
                            buffer.extend_from_slice(&chunk[..n]);
                        }
                        buffer.drain(..head_end + length);
                        let long = head.starts_with("post /long ");
                        kept.lock().unwrap().push(head);
                        if long {
                            let half = "x".repeat(1000);
                            let first = format!("HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n{half}");
                            socket.write_all(first.as_bytes()).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if socket.write_all(half.as_bytes()).await.is_err() {
                                return;
                            }
                        } else {
                            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npong";
                            socket.write_all(answer.as_bytes()).await.unwrap();
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        Upstream { port, accepted, ended, heads }
    }

    fn pool() -> Pool {
        Pool::new(Duration::from_secs(1), Duration::from_secs(30), 8)
    }

    fn post(port: u16, path: &str) -> http::Request<Body> {
        let uri = format!("http://127.0.0.1:{port}{path}");
        http::Request::post(uri).body(Body::new(Bytes::from_static(b"{\"ping\":1}"))).unwrap()
    }

    /// Send a POST to `path` and check the answer is the upstream's `pong`.
    async fn pong(pool: &Pool, port: u16, path: &str) {
        let response = pool.send(post(port, path)).await.unwrap();
        assert_eq!(read_all(response).await.unwrap(), "pong");
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection_in_origin_form_with_a_host() {
        let up = upstream(false).await;
        let pool = pool();
        for _ in 0..5 {
            pong(&pool, up.port, "/v1/chat/completions?x=1").await;
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        let heads = up.heads.lock().unwrap();
        assert_eq!(heads.len(), 5);
        assert!(heads[0].starts_with("post /v1/chat/completions?x=1 http/1.1\r\n"), "{}", heads[0]);
        assert!(heads[0].contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", up.port)), "{}", heads[0]);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_that_are_then_reused() {
        let up = upstream(false).await;
        let pool = pool();
        let (a, b) = tokio::join!(pool.send(post(up.port, "/a")), pool.send(post(up.port, "/b")));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        read_all(a).await.unwrap();
        read_all(b).await.unwrap();
        for _ in 0..4 {
            let (a, b) = tokio::join!(pool.send(post(up.port, "/a")), pool.send(post(up.port, "/b")));
            read_all(a.unwrap()).await.unwrap();
            read_all(b.unwrap()).await.unwrap();
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_part_way_takes_its_connection_with_it() {
        let up = upstream(false).await;
        let pool = pool();
        let mut body = pool.send(post(up.port, "/long")).await.unwrap().into_body();
        assert!(next_chunk(&mut body).await.unwrap().unwrap().len() <= 1000);
        drop(body);
        // The upstream sees that connection closed (and can stop the work).
        let until = Instant::now() + Duration::from_secs(3);
        while up.ended.load(Ordering::SeqCst) == 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(up.ended.load(Ordering::SeqCst), 1);
        pong(&pool, up.port, "/short").await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
        // Read to the end, the long answer's connection is kept.
        let response = pool.send(post(up.port, "/long")).await.unwrap();
        assert_eq!(read_all(response).await.unwrap().len(), 2000);
        pong(&pool, up.port, "/short").await;
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
        let up = upstream(true).await;
        let pool = pool();
        for _ in 0..3 {
            pong(&pool, up.port, "/v1/embeddings").await;
            // Give the close time to arrive, as it would while idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_host_name_is_resolved_and_its_addresses_tried_in_turn() {
        // "localhost" may come first as ::1, where nothing listens here.
        let up = upstream(false).await;
        let uri = format!("http://localhost:{}/v1/models", up.port);
        let request = http::Request::post(uri).body(Body::new(Bytes::new())).unwrap();
        let response = pool().send(request).await.unwrap();
        assert_eq!(read_all(response).await.unwrap(), "pong");
        let heads = up.heads.lock().unwrap();
        assert!(heads[0].contains(&format!("\r\nhost: localhost:{}\r\n", up.port)), "{}", heads[0]);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_that_names_the_address() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let error = pool().send(post(port, "/")).await.unwrap_err().to_string();
        assert!(error.contains(&format!("connect to 127.0.0.1:{port}")), "{error}");
    }
}
