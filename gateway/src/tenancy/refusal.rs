//! What a tenant's refusal and its admitted answers tell the client:
//! OpenAI's `x-ratelimit-*` headers and the refusal's message.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::limit::{Limit, Meter, Reading, Window};

/// A request refused by one of its tenant's limits.
#[derive(Debug)]
pub struct Refusal {
    pub limit: Arc<Limit>,
    pub retry_after: Duration,
    /// A daily or monthly quota (rather than a rate).
    pub quota: bool,
    pub headers: RateHeaders,
}

impl Refusal {
    /// What the client reads, naming the limit and when to retry.
    pub fn message(&self) -> String {
        let scope = if self.limit.tenant_wide { "your organization" } else { "this model" };
        let what = self.limit.name.replace('_', " ");
        if self.quota {
            format!(
                "You exceeded your current quota ({what}: {} for {scope}); it resets in {}.",
                self.limit.amount,
                duration_text(self.retry_after)
            )
        } else {
            format!(
                "Rate limit reached for {scope} on {what}: limit {}. Please try again in {}.",
                self.limit.amount,
                duration_text(self.retry_after)
            )
        }
    }
}

/// OpenAI's rate-limit headers of one answer: the `-requests` and the
/// `-tokens` trio (limit, remaining, reset), where such limits are set.
#[derive(Debug, Clone, Default)]
pub struct RateHeaders {
    requests: Option<[HeaderValue; 3]>,
    tokens: Option<[HeaderValue; 3]>,
}

const REQUESTS_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKENS_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

impl RateHeaders {
    /// From the tightest limit of each meter (per-minute ones first, as
    /// OpenAI's are).
    pub(super) fn of(limits: &[Arc<Limit>], readings: &[Reading]) -> RateHeaders {
        let tightest = |meter: Meter| {
            let mut best: Option<(&Limit, &Reading)> = None;
            for (limit, reading) in limits.iter().zip(readings) {
                if limit.meter != meter || limit.window == Window::Concurrent {
                    continue;
                }
                let key = |l: &Limit, r: &Reading| (l.window != Window::Minute, r.remaining);
                if best.is_none_or(|(l, r)| key(limit, reading) < key(l, r)) {
                    best = Some((limit, reading));
                }
            }
            best.map(|(limit, r)| trio(limit, r.remaining, r.reset))
        };
        RateHeaders { requests: tightest(Meter::Requests), tokens: tightest(Meter::Tokens) }
    }

    /// The refusing limit: none left until `retry_after`.
    pub(super) fn refused(limit: &Limit, retry_after: Duration) -> RateHeaders {
        let headers = (limit.window != Window::Concurrent).then(|| trio(limit, 0.0, retry_after));
        match limit.meter {
            Meter::Requests => RateHeaders { requests: headers, tokens: None },
            Meter::Tokens => RateHeaders { requests: None, tokens: headers },
            Meter::Characters | Meter::AudioSeconds => RateHeaders::default(),
        }
    }

    /// Add these headers to a response's.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.reserve(3 * (usize::from(self.requests.is_some()) + usize::from(self.tokens.is_some())));
        for (names, values) in [(&REQUESTS_HEADERS, &self.requests), (&TOKENS_HEADERS, &self.tokens)] {
            if let Some(values) = values {
                for (name, value) in names.iter().zip(values) {
                    headers.insert(name.clone(), value.clone());
                }
            }
        }
    }
}

fn trio(limit: &Limit, remaining: f64, reset: Duration) -> [HeaderValue; 3] {
    [
        limit.header.clone(),
        HeaderValue::from(remaining.max(0.0) as u64),
        HeaderValue::from_maybe_shared(bytes::Bytes::from(duration_text(reset)))
            .unwrap_or(HeaderValue::from_static("0ms")),
    ]
}

/// A duration as OpenAI's reset headers write it (Go's style): `20ms`,
/// `1.5s`, `6m0s`, `1h2m3.5s` (to the millisecond; without float
/// formatting, which cost more than the rest of the headers).
pub fn duration_text(d: Duration) -> String {
    use std::fmt::Write;
    let ms = d.as_millis() as u64;
    let mut out = String::with_capacity(12);
    if ms < 1000 {
        let _ = write!(out, "{ms}ms");
        return out;
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let digits = [frac / 100, frac / 10 % 10, frac % 10];
        let used = if digits[2] > 0 {
            3
        } else if digits[1] > 0 {
            2
        } else {
            1
        };
        out.push('.');
        digits[..used].iter().for_each(|d| out.push(char::from(b'0' + *d as u8)));
    }
    out.push('s');
    out
}

/// Where a call's rate-limit headers wait for its response (set once, by
/// the call's admission; the admit layer copies them onto the answer).
#[derive(Debug, Default)]
pub struct HeaderSlot(std::sync::OnceLock<RateHeaders>);

impl HeaderSlot {
    pub fn set(&self, headers: RateHeaders) {
        let _ = self.0.set(headers);
    }

    pub fn get(&self) -> Option<&RateHeaders> {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_are_written_as_openai_writes_them() {
        assert_eq!(duration_text(Duration::from_millis(20)), "20ms");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(duration_text(Duration::from_millis(3_723_500)), "1h2m3.5s");
    }
}
