//! Allowance a replica holds ahead of use, so that a busy tenant does not
//! cost a Redis round trip per request.
//!
//! When a limit must be asked of Redis anyway, the replica asks for what
//! the request needs plus a chunk: what this limit used here in the last
//! [`LOOKAHEAD`] at its recent rate (at most a fiftieth of the limit).
//! Redis grants what is left up to that, atomically, so the replicas
//! together never exceed the limit; they can only fall short of it by the
//! chunks they hold, which go back to Redis once unused for [`HOLD_MS`].
//! Later requests are served from the chunk without Redis; charges that
//! overdraw it (a token estimate, a correction) send the overdraft.
//! A quiet tenant's chunk is zero: each request asks Redis, exactly as
//! without leases.

use std::sync::Arc;
use std::time::Duration;

use super::limit::{Limit, Meter, Reading};

/// How far ahead a chunk covers, at the limit's recent rate here.
pub const LOOKAHEAD_SECS: f64 = 0.05;
/// An unused chunk goes back to Redis after this long (ms).
pub const HOLD_MS: f64 = 1000.0;
/// The time constant of the recent rate (ms).
const TAU_MS: f64 = 1000.0;

/// One limit's allowance held by this replica.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// Allowance taken from Redis and not used yet.
    pub held: f64,
    /// Use per second here, decaying over [`TAU_MS`].
    rate: f64,
    /// When `rate` was last brought up to date (Unix ms).
    seen: f64,
    /// When Redis last granted a chunk (Unix ms), and its calendar window.
    granted_at: f64,
    pub window: i64,
    /// The limit, once granted (to give the chunk back).
    pub limit: Option<Arc<Limit>>,
    /// Redis's reading at the last grant.
    reading: Option<Reading>,
    /// `concurrent` only: this replica's requests in flight (their slots
    /// are held in Redis too, and renewed).
    pub in_use: f64,
}

impl Lease {
    fn observe(&mut self, amount: f64, now: f64) {
        let dt = (now - self.seen).max(0.0);
        self.rate = self.rate * (-dt / TAU_MS).exp() + amount * 1000.0 / TAU_MS;
        self.seen = now;
    }

    /// Whether the held allowance covers `need` (a zero need: some is left).
    pub fn covers(&self, need: f64) -> bool {
        if need > 0.0 {
            self.held >= need
        } else {
            self.held > 0.0
        }
    }

    /// Serve `need` from the held allowance.
    pub fn take(&mut self, need: f64, now: f64) {
        self.held -= need;
        self.observe(need, now);
    }

    /// What to ask of Redis beyond the request's own need: enough to hold
    /// a chunk (an admission another limit sends to Redis tops this one up,
    /// no more).
    pub fn top_up(&self, limit: &Limit) -> f64 {
        // A local overdraft (allowance taken meanwhile) is asked for too.
        let top_up = (self.chunk(limit) - self.held).max(0.0);
        if limit.meter == Meter::Requests {
            top_up.floor()
        } else {
            top_up
        }
    }

    /// What this limit holds at most, at its recent rate here.
    pub fn chunk(&self, limit: &Limit) -> f64 {
        let chunk = (self.rate * LOOKAHEAD_SECS).min(limit.capacity / 50.0).max(0.0);
        if limit.meter == Meter::Requests {
            chunk.floor()
        } else {
            chunk
        }
    }

    /// Redis granted `granted` for a request that needed `need`.
    pub fn grant(
        &mut self,
        limit: &Arc<Limit>,
        granted: f64,
        need: f64,
        reading: Reading,
        now: f64,
        window: i64,
    ) {
        self.held += granted - need;
        self.observe(need, now);
        self.granted_at = now;
        self.window = window;
        self.reading = Some(reading);
        self.limit = Some(limit.clone());
    }

    /// Charge `amount` (negative: a refund, kept here); the overdraft
    /// Redis must be sent, if any.
    pub fn charge(&mut self, amount: f64, now: f64) -> f64 {
        if amount > 0.0 {
            self.observe(amount, now);
        }
        self.held -= amount;
        if self.held < 0.0 {
            let overdraft = -self.held;
            self.held = 0.0;
            overdraft
        } else {
            0.0
        }
    }

    /// The limit as this replica sees it: Redis's last word plus what is
    /// held here.
    pub fn reading(&self, limit: &Limit) -> Reading {
        match self.reading {
            Some(r) => {
                Reading { limit: r.limit, remaining: r.remaining + self.held.max(0.0), reset: r.reset }
            }
            None => Reading { limit: limit.amount, remaining: self.held.max(0.0), reset: Duration::ZERO },
        }
    }

    /// The held allowance to give back, if it has gone unused too long.
    pub fn expire(&mut self, now: f64) -> Option<f64> {
        if self.held > 0.0 && now - self.granted_at > HOLD_MS {
            let held = self.held;
            self.held = 0.0;
            Some(held)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::limit::Window;

    fn limit(meter: Meter) -> Arc<Limit> {
        Arc::new(Limit {
            name: "x",
            meter,
            window: Window::Minute,
            amount: 1e6,
            capacity: 1e6,
            key: Arc::from("k"),
            tenant_wide: true,
            header: http::HeaderValue::from(1_000_000u64),
            slot: 0,
        })
    }

    #[test]
    fn a_quiet_limit_asks_every_time_a_busy_one_holds_a_chunk() {
        let l = limit(Meter::Requests);
        let mut lease = Lease::default();
        assert_eq!(lease.chunk(&l), 0.0, "nothing used yet");
        // Ten a second: half a request per 50 ms, still nothing ahead.
        for i in 0..20 {
            lease.charge(1.0, f64::from(i) * 100.0);
        }
        assert_eq!(lease.chunk(&l), 0.0);
        // A thousand a second: fifty ms hold about fifty.
        let mut busy = Lease::default();
        for i in 0..3000 {
            busy.charge(1.0, f64::from(i)); // use that overdraws: sent to Redis, nothing held
        }
        assert_eq!(busy.held, 0.0);
        assert!((40.0..=55.0).contains(&busy.chunk(&l)), "{}", busy.chunk(&l));
        let chunk = busy.chunk(&l);
        assert_eq!(busy.top_up(&l), chunk);
        let reading = Reading { limit: 1e6, remaining: 100.0, reset: Duration::ZERO };
        busy.grant(&l, 51.0, 1.0, reading, 3000.0, 0);
        assert_eq!(busy.held, 50.0);
        assert!(busy.covers(1.0));
        assert_eq!(busy.top_up(&l), (chunk - 50.0).max(0.0).floor(), "held allowance is not asked for again");
        assert_eq!(busy.reading(&l).remaining, 150.0, "Redis's remaining plus what is held here");
        assert_eq!(busy.expire(3500.0), None);
        assert_eq!(busy.expire(4001.0), Some(50.0));
        assert!(!busy.covers(1.0));
    }

    #[test]
    fn charges_past_the_chunk_send_the_overdraft() {
        let l = limit(Meter::Tokens);
        let mut lease = Lease::default();
        lease.grant(&l, 100.0, 0.0, Reading { limit: 1e6, remaining: 0.0, reset: Duration::ZERO }, 0.0, 0);
        assert_eq!(lease.charge(60.0, 1.0), 0.0);
        assert_eq!(lease.charge(60.0, 2.0), 20.0, "20 over what was held");
        assert_eq!(lease.held, 0.0);
        assert_eq!(lease.charge(-30.0, 3.0), 0.0, "a refund is kept here");
        assert_eq!(lease.held, 30.0);
    }
}
