//! What the cache made of a request, and what the client asked of it.

use std::sync::atomic::{AtomicU8, Ordering};

use http::{HeaderMap, HeaderValue};

/// What became of a request's look-up, as `x-infergate-cache` says it.
/// Ordered so that a request of several jobs reports the most telling:
/// one job that ran makes the request a `miss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum CacheStatus {
    Hit = 1,
    Coalesced = 2,
    Miss = 3,
    Bypass = 4,
    /// The request cannot be cached (sampling without a seed).
    None = 5,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::None => "none",
        }
    }

    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// The answer came without a job of this request's own.
    pub fn served(self) -> bool {
        matches!(self, CacheStatus::Hit | CacheStatus::Coalesced)
    }

    fn from_code(code: u8) -> Option<Self> {
        [CacheStatus::Hit, CacheStatus::Coalesced, CacheStatus::Miss, CacheStatus::Bypass, CacheStatus::None]
            .into_iter()
            .find(|s| *s as u8 == code)
    }
}

/// The statuses of one request's jobs, combined (see [`CacheStatus`]).
#[derive(Debug, Default)]
pub struct Tally(AtomicU8);

impl Tally {
    pub fn record(&self, status: CacheStatus) {
        self.0.fetch_max(status as u8, Ordering::Relaxed);
    }

    /// `None` before any job.
    pub fn status(&self) -> Option<CacheStatus> {
        CacheStatus::from_code(self.0.load(Ordering::Relaxed))
    }
}

/// The client's `Cache-Control`, as far as the cache heeds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheControl {
    #[default]
    Default,
    /// `no-cache` (or `max-age=0`): a fresh answer, stored.
    NoCache,
    /// `no-store`: a fresh answer, not stored.
    NoStore,
}

impl CacheControl {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut control = CacheControl::Default;
        for value in headers.get_all(http::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',').map(str::trim) {
                if directive.eq_ignore_ascii_case("no-store") {
                    return CacheControl::NoStore;
                }
                let stale = directive.eq_ignore_ascii_case("no-cache")
                    || directive.get(..8).is_some_and(|d| d.eq_ignore_ascii_case("max-age="))
                        && directive[8..].trim_matches('"') == "0";
                if stale {
                    control = CacheControl::NoCache;
                }
            }
        }
        control
    }
}
