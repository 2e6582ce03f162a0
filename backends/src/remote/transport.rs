//! The HTTP client the remote backends send with: HTTP/1.1 with keep-alive,
//! plain `http` upstreams on infergate's own connection pool (`h1.rs`),
//! `https` ones on hyper-util's pooled client with TLS (rustls; the Mozilla
//! root set, a backend's `ca_file` and client certificate: `tls.rs`). Requests are built from a replica's pre-parsed base, so the
//! hot path parses no URLs; what fails is a [`TransportError`].

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::uri::{PathAndQuery, Uri};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::{EndpointError, TransportError};
use super::h1;
pub use super::h1::{Body, ResponseBody};

/// A response whose body is read as it arrives.
pub type Response = http::Response<ResponseBody>;

/// How long a connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per upstream address.
const MAX_IDLE_PER_HOST: usize = 512;

/// A pooled HTTP(S) client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    plain: h1::Pool,
    tls: Pool<HttpsConnector<HttpConnector>, Body>,
}

impl Client {
    /// A client whose connections give up after `connect_timeout`, speaking
    /// `tls` to `https` upstreams.
    pub fn new(connect_timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let tls = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .build(tls);
        let plain = h1::Pool::new(connect_timeout, IDLE_TIMEOUT, MAX_IDLE_PER_HOST);
        Client { plain, tls }
    }

    /// Send a request (absolute-form URI); the response once its head has arrived.
    pub async fn send(&self, request: http::Request<Body>) -> Result<Response, TransportError> {
        if request.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            return self.plain.send(request).await;
        }
        let response = self.tls.request(request).await.map_err(TransportError::http)?;
        Ok(response.map(ResponseBody::from))
    }
}

/// A replica's base URL (`http://10.0.0.7:8000`, `https://api.example.com/v1`),
/// parsed once; requests join a path to it.
#[derive(Debug, Clone)]
pub struct Base {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base's path without its trailing slash ("" or "/v1").
    prefix: String,
}

impl Base {
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let uri: Uri =
            text.parse().map_err(|source| EndpointError::NotUrl { text: text.to_owned(), source })?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(EndpointError::Incomplete(text.to_owned()));
        };
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(EndpointError::NotHttp(text.to_owned()));
        }
        let path = parts.path_and_query.as_ref().map_or("", |p| p.path());
        let prefix = path.trim_end_matches('/').to_owned();
        Ok(Base { scheme, authority, prefix })
    }

    /// The URI of `path` (which starts with `/`) on this base.
    pub fn join(&self, path: &str) -> Result<Uri, TransportError> {
        let mut joined = String::with_capacity(self.prefix.len() + path.len());
        joined.push_str(&self.prefix);
        joined.push_str(path);
        let path = PathAndQuery::try_from(joined).map_err(http::Error::from)?;
        let uri =
            Uri::builder().scheme(self.scheme.clone()).authority(self.authority.clone()).path_and_query(path);
        Ok(uri.build()?)
    }
}

/// A POST of `body` with its content type, and a bearer key when given.
/// Its header map has room for the headers the caller adds (trace context,
/// request id, timeout) without growing.
pub fn post(
    uri: Uri,
    content_type: HeaderValue,
    body: Bytes,
    key: Option<&HeaderValue>,
) -> http::Request<Body> {
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.reserve(8);
    headers.insert(CONTENT_TYPE, content_type);
    if let Some(key) = key {
        headers.insert(AUTHORIZATION, key.clone());
    }
    request
}

/// `d` as whole milliseconds, at least 1, with the unit: `250ms` (an
/// upstream's `X-Request-Timeout`).
pub fn milliseconds(d: Duration) -> HeaderValue {
    // Written on the stack: no `String` for a header on every request.
    let mut text = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{}ms", d.as_millis().max(1)));
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    // Digits and two letters: always a valid header value.
    HeaderValue::from_bytes(&text[..len]).unwrap_or(HeaderValue::from_static("1ms"))
}

/// `Authorization: Bearer <key>`, marked sensitive (kept out of debug
/// output); an error when the key has bytes a header cannot hold.
pub fn bearer(key: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {key}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Read a whole response body.
pub async fn read_all(response: Response) -> Result<Bytes, TransportError> {
    response.into_body().collect().await.map(|b| b.to_bytes()).map_err(TransportError::http)
}

/// The next piece of a response body; `None` at its end.
pub async fn next_chunk(body: &mut ResponseBody) -> Option<Result<Bytes, TransportError>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_trailers) => continue,
            },
            Err(e) => return Some(Err(TransportError::http(e))),
        }
    }
}

/// An OpenAI audio upload as `multipart/form-data`: the file part, then the
/// text fields. The content type (with its boundary) and the body.
pub fn multipart(file: &[u8], file_name: &str, mime: &str, fields: &[(&str, String)]) -> (String, Bytes) {
    let boundary = boundary(fields);
    let mut body = Vec::with_capacity(file.len() + 256 + fields.len() * 96);
    let head = |text: String, body: &mut Vec<u8>| body.extend_from_slice(text.as_bytes());
    head(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {mime}\r\n\r\n"
        ),
        &mut body,
    );
    body.extend_from_slice(file);
    for (name, value) in fields {
        head(
            format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
            &mut body,
        );
        body.extend_from_slice(value.as_bytes());
    }
    head(format!("\r\n--{boundary}--\r\n"), &mut body);
    (format!("multipart/form-data; boundary={boundary}"), Bytes::from(body))
}

/// A boundary that none of the text fields contains. (The WAV data could
/// in principle; 32 random hex digits make that a 2^-128 event.)
fn boundary(fields: &[(&str, String)]) -> String {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut bits = String::with_capacity(32);
        for _ in 0..2 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            bits.push_str(&format!("{:016x}", h.finish()));
        }
        let boundary = format!("infergate-{bits}");
        if !fields.iter().any(|(_, v)| v.contains(&boundary)) {
            return boundary;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_whole_milliseconds_and_never_zero() {
        assert_eq!(milliseconds(Duration::from_micros(2_500_900)), "2500ms");
        assert_eq!(milliseconds(Duration::from_micros(10)), "1ms");
        assert_eq!(milliseconds(Duration::from_secs(86_400)), "86400000ms");
    }

    #[test]
    fn posts_carry_the_content_type_and_the_key() {
        let key = bearer("sk-up").unwrap();
        let request = post(
            Uri::from_static("http://up/v1/x"),
            HeaderValue::from_static("application/json"),
            Bytes::from_static(b"{}"),
            Some(&key),
        );
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri(), "http://up/v1/x");
        assert_eq!(request.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer sk-up");
        assert!(request.headers().capacity() >= 8);
    }

    #[test]
    fn bases_join_paths_with_and_without_a_prefix() {
        let base = Base::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            base.join("/v1/chat/completions").unwrap().to_string(),
            "http://127.0.0.1:8000/v1/chat/completions"
        );
        let base = Base::parse("https://api.example.com/openai/").unwrap();
        assert_eq!(
            base.join("/v1/embeddings").unwrap().to_string(),
            "https://api.example.com/openai/v1/embeddings"
        );
        assert!(Base::parse("ftp://example.com").is_err());
        assert!(Base::parse("example.com:80").is_err());
        assert!(Base::parse("not a url").is_err());
    }

    #[test]
    fn multipart_bodies_have_the_file_and_every_field() {
        let fields = [("model", "whisper-1".to_owned()), ("prompt", "a \"quoted\" word".to_owned())];
        let (content_type, body) = multipart(b"RIFF....", "audio.wav", "audio/wav", &fields);
        let boundary = content_type.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains(
            "name=\"file\"; filename=\"audio.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n"
        ));
        assert!(text.contains("name=\"prompt\"\r\n\r\na \"quoted\" word\r\n"));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert_ne!(boundary, multipart(b"", "a", "b", &[]).0.rsplit('=').next().unwrap());
    }
}
