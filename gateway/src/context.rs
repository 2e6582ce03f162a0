//! What the middleware learned about a request, as handlers see it: the
//! request id (the edge layer), and the tenant, class and deadline that the
//! admit layer ([`crate::layers::Admit`]) read from the API key and the
//! deadline headers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, HeaderName};
use infergate_backends::REQUEST_TIMEOUT as TIMEOUT;
use infergate_scheduler::Class;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::error::ApiError;

/// Header with an absolute deadline (RFC 3339).
pub const DEADLINE_HEADER: &str = "x-request-deadline";
/// Header with a relative deadline (`250ms`, `2s`) or `none` for best effort.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";
/// Header that lowers (never raises) the tenant's class.
pub const PRIORITY_HEADER: &str = "x-priority";

// The same names for header look-ups (a name given as a string is parsed
// at every look-up).
const DEADLINE: HeaderName = HeaderName::from_static(DEADLINE_HEADER);
pub(crate) const PRIORITY: HeaderName = HeaderName::from_static(PRIORITY_HEADER);

/// The longest deadline a client may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The authenticated caller, inserted by the admit layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: Arc<str>,
    pub class: Class,
    /// The tenant's allow-list, limits and usage series as they were when
    /// the request arrived (a reload does not change them mid-request).
    pub policy: Arc<crate::tenancy::TenantPolicy>,
}

/// The deadline a request asked for, inserted by the admit layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineSpec {
    /// No header: the route's default applies from arrival.
    RouteDefault { received: Instant },
    /// `X-Request-Timeout: none`.
    BestEffort,
    /// An explicit deadline.
    At(Instant),
}

impl DeadlineSpec {
    /// Read `X-Request-Deadline` / `X-Request-Timeout`; when both are given
    /// the earlier deadline wins.
    pub fn from_headers(headers: &HeaderMap, now: Instant) -> Result<DeadlineSpec, ApiError> {
        let text = |name: &HeaderName| -> Result<Option<String>, ApiError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str().map(|s| s.trim().to_owned()).map_err(|_| {
                        ApiError::invalid(name.as_str(), format!("{} must be ASCII", name.as_str()))
                    })
                })
                .transpose()
        };
        let absolute = text(&DEADLINE)?
            .map(|s| {
                let at = OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| {
                    ApiError::invalid(
                        DEADLINE_HEADER,
                        format!("{DEADLINE_HEADER} must be an RFC 3339 time, got {s:?}"),
                    )
                })?;
                let left = at - OffsetDateTime::now_utc();
                if left > time::Duration::try_from(MAX_TIMEOUT).unwrap_or(time::Duration::MAX) {
                    return Err(ApiError::invalid(
                        DEADLINE_HEADER,
                        format!("{DEADLINE_HEADER} is more than 24 hours away"),
                    ));
                }
                Ok(now + Duration::try_from(left).unwrap_or(Duration::ZERO))
            })
            .transpose()?;
        let relative = match text(&TIMEOUT)? {
            None => None,
            Some(s) if s.eq_ignore_ascii_case("none") => {
                return Ok(absolute.map_or(DeadlineSpec::BestEffort, DeadlineSpec::At))
            }
            Some(s) => {
                let d = humantime::parse_duration(&s).map_err(|_| {
                    ApiError::invalid(
                        TIMEOUT_HEADER,
                        format!(
                            "{TIMEOUT_HEADER} must be a duration such as 250ms or 2s, or none; got {s:?}"
                        ),
                    )
                })?;
                if d.is_zero() || d > MAX_TIMEOUT {
                    return Err(ApiError::invalid(
                        TIMEOUT_HEADER,
                        format!("{TIMEOUT_HEADER} must be between 1ms and 24h"),
                    ));
                }
                Some(now + d)
            }
        };
        Ok(match (absolute, relative) {
            (Some(a), Some(r)) => DeadlineSpec::At(a.min(r)),
            (Some(t), None) | (None, Some(t)) => DeadlineSpec::At(t),
            (None, None) => DeadlineSpec::RouteDefault { received: now },
        })
    }

    /// The deadline, given the route's default; `None` is best effort.
    pub fn resolve(self, default: Duration) -> Option<Instant> {
        match self {
            DeadlineSpec::RouteDefault { received } => Some(received + default),
            DeadlineSpec::BestEffort => None,
            DeadlineSpec::At(at) => Some(at),
        }
    }
}

/// When the request's headers were read (inserted by the admit layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received(pub Instant);

/// Everything a handler needs to know about who asked and by when.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Arc<str>,
    pub tenant: Arc<str>,
    pub class: Class,
    pub deadline: DeadlineSpec,
    pub received: Instant,
    /// The request id and the client's trace headers, for remote backends to pass upstream.
    pub forwarded: infergate_backends::Forwarded,
    /// The tenant's policy; `None` only in unit tests (no limits, no metering).
    pub policy: Option<Arc<crate::tenancy::TenantPolicy>>,
    /// Where the call's admission leaves the rate-limit headers.
    pub rate_headers: Option<Arc<crate::tenancy::HeaderSlot>>,
    /// The client's `Cache-Control`, for models with a response cache.
    pub cache_control: crate::cache::CacheControl,
}

impl RequestContext {
    /// Whether the tenant may use `model` (its `models` allow-list).
    pub fn allows(&self, model: &str) -> bool {
        self.policy.as_ref().is_none_or(|p| p.allows(model))
    }

    /// The job's deadline on a route whose default is `default`.
    pub fn deadline(&self, default: Duration) -> Option<Instant> {
        self.deadline.resolve(default)
    }

    /// An id for response objects (`chatcmpl-…`), derived from the request id.
    pub fn object_id(&self, prefix: &str) -> String {
        let mut id = Vec::with_capacity(prefix.len() + 33);
        id.extend_from_slice(prefix.as_bytes());
        id.push(b'-');
        id.extend(self.request_id.bytes().filter(u8::is_ascii_alphanumeric).take(32));
        // Text and ASCII: always UTF-8.
        String::from_utf8(id).unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let caller =
            parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::Internal {
                detail: "no caller: the admit layer is missing".into(),
            })?;
        let deadline =
            parts.extensions.get::<DeadlineSpec>().copied().ok_or_else(|| ApiError::Internal {
                detail: "no deadline: the admit layer is missing".into(),
            })?;
        let received = parts.extensions.get::<Received>().map_or_else(Instant::now, |r| r.0);
        let request_id: Arc<str> = parts
            .headers
            .get(infergate_backends::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .into();
        let forwarded = infergate_backends::Forwarded::from_headers(&request_id, &parts.headers);
        let rate_headers = parts.extensions.get::<Arc<crate::tenancy::HeaderSlot>>().cloned();
        let cache_control = crate::cache::CacheControl::of(&parts.headers);
        Ok(RequestContext {
            request_id,
            tenant: caller.tenant,
            class: caller.class,
            deadline,
            received,
            forwarded,
            policy: Some(caller.policy),
            rate_headers,
            cache_control,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::headers;

    #[test]
    fn object_ids_keep_the_request_ids_letters_and_digits() {
        let ctx = |request_id: &str| RequestContext {
            request_id: request_id.into(),
            tenant: "t".into(),
            class: Class::Standard,
            deadline: DeadlineSpec::BestEffort,
            received: Instant::now(),
            forwarded: Default::default(),
            policy: None,
            rate_headers: None,
            cache_control: Default::default(),
        };
        let id = ctx("0f8fad5b-d9cb-469f-a165-70867728950e").object_id("chatcmpl");
        assert_eq!(id, "chatcmpl-0f8fad5bd9cb469fa16570867728950e");
        // A client's own id: only ASCII letters and digits, at most 32 of them.
        assert_eq!(ctx("é-x_y/1").object_id("modr"), "modr-xy1");
        assert_eq!(ctx(&"ab".repeat(40)).object_id("ocr"), format!("ocr-{}", "ab".repeat(16)));
    }

    #[test]
    fn reads_relative_absolute_and_best_effort_deadlines() {
        let now = Instant::now();
        let spec = DeadlineSpec::from_headers(&headers(&[(TIMEOUT_HEADER, "250ms")]), now).unwrap();
        assert_eq!(spec, DeadlineSpec::At(now + Duration::from_millis(250)));
        let spec = DeadlineSpec::from_headers(&headers(&[(TIMEOUT_HEADER, "none")]), now).unwrap();
        assert_eq!(spec.resolve(Duration::from_secs(1)), None);
        let spec = DeadlineSpec::from_headers(&HeaderMap::new(), now).unwrap();
        assert_eq!(spec.resolve(Duration::from_secs(3)), Some(now + Duration::from_secs(3)));

        let soon = (OffsetDateTime::now_utc() + time::Duration::seconds(10)).format(&Rfc3339).unwrap();
        let spec = DeadlineSpec::from_headers(&headers(&[(DEADLINE_HEADER, &soon)]), now).unwrap();
        let DeadlineSpec::At(at) = spec else { panic!("{spec:?}") };
        let left = at - now;
        assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10), "{left:?}");

        let both = headers(&[(DEADLINE_HEADER, &soon), (TIMEOUT_HEADER, "1s")]);
        assert_eq!(
            DeadlineSpec::from_headers(&both, now).unwrap(),
            DeadlineSpec::At(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn rejects_malformed_deadlines() {
        let now = Instant::now();
        for (name, value) in [
            (TIMEOUT_HEADER, "soon"),
            (TIMEOUT_HEADER, "0ms"),
            (TIMEOUT_HEADER, "-5s"),
            (TIMEOUT_HEADER, "400d"),
            (DEADLINE_HEADER, "tomorrow"),
            (DEADLINE_HEADER, "2099-01-01T00:00:00Z"),
        ] {
            let err = DeadlineSpec::from_headers(&headers(&[(name, value)]), now).unwrap_err();
            assert_eq!(err.parts().status, 400, "{name}: {value}");
            assert_eq!(err.param(), Some(name));
        }
    }
}
