//! Request decoding shared by the handlers, with errors in API shape.

use std::error::Error as StdError;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

use infergate_otel::names::spans;
use tracing::Instrument;

use crate::call::Dispatch;
use crate::error::ApiError;
use crate::state::SharedState;

/// A JSON body, decoded with the path of any bad field in the error.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, ApiError> {
        let JsonWithRaw(value, _) = JsonWithRaw::from_request(request, state).await?;
        Ok(JsonBody(value))
    }
}

/// A JSON body decoded as [`JsonBody`], with the bytes as they came (for
/// forwarding to a remote backend).
#[derive(Debug)]
pub struct JsonWithRaw<T>(pub T, pub Bytes);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonWithRaw<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &SharedState) -> Result<Self, ApiError> {
        let span = tracing::info_span!(spans::DECODE, bytes = tracing::field::Empty);
        async {
            require_content_type(&request, "application/json")?;
            let bytes = read_body(request.into_body(), state.config.server.max_body_bytes).await?;
            tracing::Span::current().record("bytes", bytes.len());
            decode_json(&bytes, state.config.limits.max_json_depth).map(|value| JsonWithRaw(value, bytes))
        }
        .instrument(span)
        .await
    }
}

/// Check the media type (parameters such as `charset` are allowed).
pub fn require_content_type(request: &Request, expected: &'static str) -> Result<(), ApiError> {
    let actual = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = actual.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType { expected })
    }
}

/// Decode JSON nested at most `max_depth` deep, naming the offending field
/// on type errors. A body that decodes is read once, plainly; only a failing
/// one is read again with its path tracked for the message (tracking wraps
/// every field's decode).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, ApiError> {
    if depth(bytes) > max_depth {
        return Err(ApiError::bad_request(format!(
            "The JSON body is nested more than {max_depth} levels deep"
        )));
    }
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = plain(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            ApiError::bad_request(format!(
                "We could not parse the JSON body of your request ({text}). The body must be valid UTF-8 JSON."
            ))
        } else if path == "." {
            ApiError::bad_request(format!("Invalid request body: {text}"))
        } else {
            ApiError::invalid(path.clone(), format!("Invalid value for '{path}': {text}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!("Unexpected data after the JSON body: {}", plain(&e.to_string())))
    })?;
    Ok(value)
}

/// How deeply arrays and objects nest in `bytes` (strings skipped), read in
/// one pass before anything is decoded.
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// serde's message without the Rust type names it carries
/// ("expected struct ChatMessage" reads "expected an object").
pub fn plain(message: &str) -> String {
    const NAMES: [(&str, &str); 5] = [
        ("any variant of untagged enum ", "any accepted form"),
        ("untagged enum ", "one of the accepted forms"),
        ("tuple struct ", "an array"),
        ("struct ", "an object"),
        ("enum ", "one of the accepted values"),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while !rest.is_empty() {
        for (kind, plain) in NAMES {
            if let Some(after) = rest.strip_prefix(kind) {
                let name_len =
                    after.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(after.len());
                if name_len > 0 && after.starts_with(|c: char| c.is_ascii_uppercase()) {
                    out.push_str(plain);
                    rest = &after[name_len..];
                    continue 'scan;
                }
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Read a whole body, mapping the limit and timeout layers' errors.
///
/// A body over the limit is refused with a 413, but first the rest of it is
/// read and dropped (at most 4096 more frames, for at most two seconds): a
/// client still sending when the connection closed would see a broken pipe
/// instead of the answer.
pub async fn read_body(body: Body, limit: u64) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = body;
    // A body that comes in one piece (most) is kept as it came, uncopied.
    let mut first: Option<Bytes> = None;
    let mut data = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let error = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(chunk) if first.as_ref().map_or(0, Bytes::len) + data.len() + chunk.len() <= cap => {
                    if first.is_none() && data.is_empty() {
                        first = Some(chunk);
                    } else {
                        data.extend_from_slice(&first.take().unwrap_or_default());
                        data.extend_from_slice(&chunk);
                    }
                    continue;
                }
                Ok(_) => ApiError::PayloadTooLarge { limit },
                Err(_) => continue,
            },
            // The body-limit layer's own error is a 413 as well.
            Err(e) => body_error(&e, limit),
        };
        if matches!(error, ApiError::PayloadTooLarge { .. }) {
            let drain = async {
                for _ in 0..4096 {
                    if body.frame().await.is_none() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        }
        return Err(error);
    }
    Ok(first.unwrap_or_else(|| data.freeze()))
}

/// Classify a body read error by walking its causes.
pub fn body_error(error: &(dyn StdError + 'static), limit: u64) -> ApiError {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge { limit };
        }
        cause = e.source();
    }
    if is_timeout(error) {
        return ApiError::BodyTimeout;
    }
    ApiError::bad_request(format!("Failed to read the request body: {error}"))
}

/// Whether a body read failed because the body took too long (in total, or
/// waiting for its next frame).
pub fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() || e.is::<crate::layers::BodyDeadline>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// `x-infergate-queue-ms` and `x-infergate-batch-size`: how the scheduler
/// treated this request; `x-infergate-cache` for a model with a response
/// cache. An answer from the cache waited 0 ms and has no batch.
pub fn dispatch_headers(info: &Dispatch) -> DispatchHeaders {
    // Milliseconds with three decimals, from whole microseconds (no float
    // formatting or allocation on every response).
    let us = info.queue_wait.as_micros();
    let mut ms = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut ms[..]);
    let _ = std::io::Write::write_fmt(&mut cursor, format_args!("{}.{:03}", us / 1000, us % 1000));
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    // An answer from the cache did not queue at all: `0`.
    let hit = info.cache == Some(crate::cache::CacheStatus::Hit);
    DispatchHeaders {
        queue_ms: match hit {
            true => HeaderValue::from_static("0"),
            false => HeaderValue::from_bytes(&ms[..len]).unwrap_or(HeaderValue::from_static("0")),
        },
        batch_size: (info.batch_size > 0).then(|| HeaderValue::from(info.batch_size)),
        cache: info.cache.map(crate::cache::CacheStatus::header),
    }
}

/// The headers [`dispatch_headers`] makes.
#[derive(Debug, Clone)]
pub struct DispatchHeaders {
    pub queue_ms: HeaderValue,
    pub batch_size: Option<HeaderValue>,
    pub cache: Option<HeaderValue>,
}

impl axum::response::IntoResponseParts for DispatchHeaders {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut parts: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        let headers = parts.headers_mut();
        headers.insert(HeaderName::from_static("x-infergate-queue-ms"), self.queue_ms);
        if let Some(size) = self.batch_size {
            headers.insert(HeaderName::from_static("x-infergate-batch-size"), size);
        }
        if let Some(cache) = self.cache {
            headers.insert(HeaderName::from_static(CACHE_HEADER), cache);
        }
        Ok(parts)
    }
}

/// What the response cache made of a request.
pub const CACHE_HEADER: &str = "x-infergate-cache";

/// Build a response body inside the `encode` span.
pub fn encode<T>(build: impl FnOnce() -> T) -> T {
    let _span = tracing::info_span!(spans::ENCODE).entered();
    build()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn depth_skips_strings_and_counts_nesting() {
        assert_eq!(super::depth(br#"{"a": [1, {"b": "[[[{{{"}]}"#), 3);
        assert_eq!(super::depth(br#""\"[""#), 0);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let error = super::decode_json::<serde_json::Value>(deep.as_bytes(), 64).unwrap_err();
        assert!(error.to_string().contains("64 levels"), "{error}");
    }

    #[test]
    fn messages_carry_no_rust_type_names() {
        use super::plain;
        assert_eq!(
            plain("invalid type: string \"x\", expected struct ChatMessage"),
            "invalid type: string \"x\", expected an object"
        );
        assert_eq!(
            plain("data did not match any variant of untagged enum ContentWire"),
            "data did not match any accepted form"
        );
        assert_eq!(
            plain("unknown variant `x`, expected `a` or `b`"),
            "unknown variant `x`, expected `a` or `b`"
        );
        assert_eq!(plain("a struct literal"), "a struct literal");
    }

    use super::*;

    #[test]
    fn queue_time_is_milliseconds_with_three_decimals() {
        let header = |wait: Duration| {
            let info = Dispatch {
                queue_wait: wait,
                batch_size: 3,
                batch_id: 0,
                slack: None,
                position: 0,
                cache: None,
            };
            let headers = dispatch_headers(&info);
            assert_eq!(headers.batch_size.unwrap(), "3");
            assert!(headers.cache.is_none());
            headers.queue_ms.to_str().unwrap().to_owned()
        };
        assert_eq!(header(Duration::ZERO), "0.000");
        assert_eq!(header(Duration::from_nanos(1_234_567)), "1.234");
        assert_eq!(header(Duration::from_micros(5)), "0.005");
        assert_eq!(header(Duration::from_secs(86_400)), "86400000.000");
    }
}
