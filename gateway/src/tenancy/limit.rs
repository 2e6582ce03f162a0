//! One limit and its arithmetic, the same in memory and (as Lua) in Redis.
//!
//! A per-minute limit is a token bucket kept as GCRA's theoretical arrival
//! time `tat`: the bucket is empty of use (full of allowance) at `tat`, and
//! its use now is `(tat − now) · rate`. Charging `n` moves `tat` on by
//! `n / rate`; a refund moves it back, never before now. Daily and monthly
//! limits are counters per calendar window (UTC); `concurrent` counts
//! requests in flight.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meter {
    Requests,
    /// Tokens in and out (estimated at admission, corrected at the end).
    Tokens,
    /// Characters translated (DeepL's unit).
    Characters,
    /// Seconds of audio sent.
    AudioSeconds,
}

/// Over what a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// Rolling, refilled continuously.
    Minute,
    /// 00:00 to 24:00 UTC.
    Day,
    /// The calendar month, UTC.
    Month,
    /// In flight now.
    Concurrent,
}

/// One configured limit of one scope (a tenant, or a tenant on one model).
#[derive(Debug, Clone)]
pub struct Limit {
    /// The config key (`tokens_per_minute`), for refusals and logs.
    pub name: &'static str,
    pub meter: Meter,
    pub window: Window,
    /// The configured amount per window (per minute, day, month; in flight).
    pub amount: f64,
    /// Most allowance a per-minute bucket holds.
    pub capacity: f64,
    /// The store key of this scope and limit, without the window.
    pub key: Arc<str>,
    /// The tenant-wide limit (false: one model's).
    pub tenant_wide: bool,
    /// `amount` as an `x-ratelimit-limit-*` value, made once.
    pub header: http::HeaderValue,
    /// Its cell in the memory store (given by key, so the same across reloads).
    pub slot: usize,
}

impl Limit {
    /// Allowance per second of a per-minute limit.
    pub fn rate(&self) -> f64 {
        self.amount / 60.0
    }

    /// What admission charges: one request for request limits; the other
    /// meters are charged when their amount is known, so admission only
    /// asks that some allowance is left.
    pub fn admission_charge(&self) -> f64 {
        match (self.meter, self.window) {
            (Meter::Requests, _) => 1.0,
            _ => 0.0,
        }
    }
}

/// Time as the limits read it: Unix milliseconds.
pub fn unix_ms(at: OffsetDateTime) -> f64 {
    (at.unix_timestamp_nanos() / 1_000_000) as f64
}

/// The calendar window `at` falls in (days or months since 1970) and the
/// milliseconds until it ends.
pub fn calendar(window: Window, at: OffsetDateTime) -> (i64, f64) {
    let day = at.unix_timestamp().div_euclid(86_400);
    let end = match window {
        Window::Month => {
            let (year, month) = (at.year(), at.month());
            let (next_year, next) = if month == time::Month::December {
                (year + 1, time::Month::January)
            } else {
                (year, month.next())
            };
            time::Date::from_calendar_date(next_year, next, 1)
                .map(|d| d.midnight().assume_utc())
                .unwrap_or(at + time::Duration::days(31))
        }
        _ => OffsetDateTime::UNIX_EPOCH + time::Duration::days(day + 1),
    };
    let id = match window {
        Window::Month => i64::from(at.year()) * 12 + i64::from(u8::from(at.month())) - 1,
        _ => day,
    };
    (id, unix_ms(end) - unix_ms(at))
}

/// A limit as it stands after admission: what the `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub limit: f64,
    pub remaining: f64,
    /// Until the limit is back to its full allowance.
    pub reset: Duration,
}

impl Reading {
    /// A limit whose state is not known here: its amount, nothing more.
    pub fn unknown(limit: &Limit) -> Reading {
        Reading { limit: limit.amount, remaining: limit.amount, reset: Duration::ZERO }
    }
}

/// The state of one limit in memory (Redis keeps the same per key).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// Per-minute: GCRA's theoretical arrival time, Unix ms.
    Bucket { tat: f64 },
    /// Daily or monthly: the window it counts and its use.
    Count { window: i64, used: f64 },
    /// Requests in flight.
    InFlight { count: u64 },
}

/// Milliseconds as a duration (never negative).
pub fn ms(value: f64) -> Duration {
    Duration::from_secs_f64((value / 1000.0).max(0.0))
}

impl Cell {
    /// A fresh cell for `limit`.
    pub fn new(limit: &Limit, now: f64, window: i64) -> Cell {
        match limit.window {
            Window::Minute => Cell::Bucket { tat: now },
            Window::Day | Window::Month => Cell::Count { window, used: 0.0 },
            Window::Concurrent => Cell::InFlight { count: 0 },
        }
    }

    /// Whether `charge` may be taken now: `Ok` with the reading after it,
    /// or `Err` with how long until it could. A zero charge asks only that
    /// some allowance is left.
    pub fn check(
        &self,
        limit: &Limit,
        charge: f64,
        now: f64,
        window: i64,
        window_left: f64,
    ) -> Result<Reading, Duration> {
        match *self {
            Cell::Bucket { tat } => {
                let rate_ms = limit.rate() / 1000.0;
                let start = tat.max(now);
                let used = (start - now) * rate_ms;
                let fits =
                    if charge > 0.0 { used + charge <= limit.capacity + 1e-9 } else { used < limit.capacity };
                if !fits {
                    // Until `used + charge` fits (or, for a zero charge, some is free).
                    let over = used + charge.max(1.0) - limit.capacity;
                    return Err(ms(over / rate_ms));
                }
                let after = start + charge / rate_ms;
                let used = (after - now) * rate_ms;
                Ok(Reading {
                    limit: limit.amount,
                    remaining: (limit.capacity - used).max(0.0),
                    reset: ms(after - now),
                })
            }
            Cell::Count { window: at, used } => {
                let used = if at == window { used } else { 0.0 };
                let fits = if charge > 0.0 { used + charge <= limit.amount } else { used < limit.amount };
                if !fits {
                    return Err(ms(window_left));
                }
                Ok(Reading {
                    limit: limit.amount,
                    remaining: (limit.amount - used - charge).max(0.0),
                    reset: ms(window_left),
                })
            }
            Cell::InFlight { count } => {
                if count as f64 + charge > limit.amount {
                    return Err(Duration::from_secs(1));
                }
                let remaining = (limit.amount - count as f64 - charge).max(0.0);
                Ok(Reading { limit: limit.amount, remaining, reset: Duration::ZERO })
            }
        }
    }

    /// Add `amount` (negative: a refund or a request that ended).
    pub fn charge(&mut self, limit: &Limit, amount: f64, now: f64, window: i64) {
        match self {
            Cell::Bucket { tat } => {
                let rate_ms = limit.rate() / 1000.0;
                *tat = (tat.max(now) + amount / rate_ms).max(now);
            }
            Cell::Count { window: at, used } => {
                if *at != window {
                    (*at, *used) = (window, 0.0);
                }
                *used = (*used + amount).max(0.0);
            }
            Cell::InFlight { count } => {
                *count = if amount >= 0.0 {
                    *count + amount as u64
                } else {
                    count.saturating_sub((-amount) as u64)
                };
            }
        }
    }
}

/// The answer to an admission.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Charged: each limit's reading, in the order given.
    Admitted(Vec<Reading>),
    /// Nothing charged: the first limit that refused, and when to retry.
    Refused { index: usize, retry_after: Duration },
}

/// The store could not answer in time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A charge that does not refuse.
#[derive(Debug, Clone)]
pub struct Charge {
    pub limit: Arc<Limit>,
    /// Negative: a refund, or (`concurrent`) a request that ended.
    pub amount: f64,
}

/// The calendar window of a limit (0 for those without one) and the
/// milliseconds until it ends.
pub fn window_of(window: Window, at: OffsetDateTime) -> (i64, f64) {
    match window {
        Window::Day | Window::Month => calendar(window, at),
        Window::Minute | Window::Concurrent => (0, 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(window: Window, amount: f64, capacity: f64) -> Limit {
        Limit {
            name: "x",
            meter: Meter::Requests,
            window,
            amount,
            capacity,
            key: Arc::from("k"),
            tenant_wide: true,
            header: http::HeaderValue::from(amount as u64),
            slot: 0,
        }
    }

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let l = limit(Window::Minute, 60.0, 60.0); // one a second, burst 60
        let mut cell = Cell::new(&l, 0.0, 0);
        for i in 0..60 {
            let reading = cell.check(&l, 1.0, 0.0, 0, 0.0).unwrap();
            assert_eq!(reading.remaining.round(), f64::from(59 - i));
            cell.charge(&l, 1.0, 0.0, 0);
        }
        let wait = cell.check(&l, 1.0, 0.0, 0, 0.0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(cell.check(&l, 1.0, 999.0, 0, 0.0).is_err());
        let reading = cell.check(&l, 1.0, 1000.0, 0, 0.0).unwrap();
        assert_eq!(reading.reset, Duration::from_secs(60), "full again a minute after the last");
        // A refund never moves the bucket into the past.
        cell.charge(&l, -1000.0, 1000.0, 0);
        assert_eq!(cell, Cell::Bucket { tat: 1000.0 });
    }

    #[test]
    fn a_zero_charge_asks_only_for_some_allowance_and_debt_is_repaid() {
        let l = limit(Window::Minute, 600.0, 600.0); // ten a second
        let mut cell = Cell::new(&l, 0.0, 0);
        cell.charge(&l, 900.0, 0.0, 0); // an estimate past the bucket: debt
        let wait = cell.check(&l, 0.0, 0.0, 0, 0.0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(30_100));
        assert!(cell.check(&l, 0.0, 30_100.0, 0, 0.0).is_ok());
    }

    #[test]
    fn windows_reset_with_the_calendar() {
        let l = limit(Window::Day, 3.0, 3.0);
        let mut cell = Cell::new(&l, 0.0, 7);
        for _ in 0..3 {
            cell.check(&l, 1.0, 0.0, 7, 5000.0).unwrap();
            cell.charge(&l, 1.0, 0.0, 7);
        }
        assert_eq!(cell.check(&l, 1.0, 0.0, 7, 5000.0).unwrap_err(), Duration::from_secs(5));
        assert_eq!(cell.check(&l, 1.0, 0.0, 8, 5000.0).unwrap().remaining, 2.0, "a new day");

        let at = time::Date::from_calendar_date(2026, time::Month::December, 31)
            .unwrap()
            .with_hms(23, 0, 0)
            .unwrap()
            .assume_utc();
        let (day, left) = calendar(Window::Day, at);
        assert_eq!((day, left), (at.unix_timestamp() / 86_400, 3_600_000.0));
        let (month, left) = calendar(Window::Month, at);
        assert_eq!((month, left), (2026 * 12 + 11, 3_600_000.0));
        let (next, _) = calendar(Window::Month, at + time::Duration::hours(1));
        assert_eq!(next, month + 1);
    }

    #[test]
    fn concurrency_counts_in_and_out() {
        let l = limit(Window::Concurrent, 2.0, 2.0);
        let mut cell = Cell::new(&l, 0.0, 0);
        cell.charge(&l, 1.0, 0.0, 0);
        assert_eq!(cell.check(&l, 1.0, 0.0, 0, 0.0).unwrap().remaining, 0.0);
        cell.charge(&l, 1.0, 0.0, 0);
        assert!(cell.check(&l, 1.0, 0.0, 0, 0.0).is_err());
        cell.charge(&l, -1.0, 0.0, 0);
        assert!(cell.check(&l, 1.0, 0.0, 0, 0.0).is_ok());
    }
}
