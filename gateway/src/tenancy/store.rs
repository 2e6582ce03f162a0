//! Where limits are kept: this process's memory, or Redis for limits that
//! every replica shares (`[store] url`).
//!
//! Admission is one atomic step over every limit of a request (all are
//! charged, or none): a mutex in memory, one Lua script (one round trip)
//! in Redis. Later charges — a token estimate, the correction when the
//! answer ends, a request leaving the concurrency count — never refuse, so
//! they are not waited for: in Redis they go to a background task that
//! sends what has gathered in one pipeline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use super::limit::{calendar, unix_ms, Cell, Limit, Reading, Window};
use super::redis::RedisStore;
use crate::config::{OnStoreError, StoreConfig};

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
    /// The request's id in a Redis concurrency set.
    pub member: u64,
}

/// See the module docs.
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// The store `[store]` names; Redis connects lazily (and reconnects).
    pub fn new(
        config: &StoreConfig,
        errors: prometheus_client::metrics::counter::Counter,
    ) -> Result<Store, String> {
        Ok(match &config.url {
            None => Store::Memory(MemoryStore::default()),
            Some(url) => Store::Redis(RedisStore::new(url, config, errors)?),
        })
    }

    /// Check every limit and charge each its admission charge, or none.
    pub async fn admit(&self, limits: &[Arc<Limit>], member: u64) -> Result<Verdict, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.admit(limits, OffsetDateTime::now_utc())),
            Store::Redis(r) => r.admit(limits, member).await,
        }
    }

    /// Apply charges that never refuse (not waited for in Redis).
    pub fn charge(&self, charges: Vec<Charge>) {
        if charges.is_empty() {
            return;
        }
        match self {
            Store::Memory(m) => m.charge(&charges, OffsetDateTime::now_utc()),
            Store::Redis(r) => r.charge(charges),
        }
    }

    /// The use a daily or monthly limit has had in its current window.
    pub async fn read(&self, limit: &Limit) -> Result<f64, StoreError> {
        let at = OffsetDateTime::now_utc();
        match self {
            Store::Memory(m) => Ok(m.read(limit, at)),
            Store::Redis(r) => r.read(limit, at).await,
        }
    }

    /// What a request meets while the store cannot answer.
    pub fn on_error(&self) -> OnStoreError {
        match self {
            Store::Memory(_) => OnStoreError::Allow,
            Store::Redis(r) => r.on_error,
        }
    }

    /// `memory` or `redis`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }
}

/// Limits in this process; cells are keyed by their limit's key (a bounded
/// set: tenants × models × limits, all from config).
#[derive(Default)]
pub struct MemoryStore {
    cells: Mutex<std::collections::HashMap<Arc<str>, Cell>>,
}

impl MemoryStore {
    pub fn admit(&self, limits: &[Arc<Limit>], at: OffsetDateTime) -> Verdict {
        let now = unix_ms(at);
        let windows: Vec<(i64, f64)> = limits.iter().map(|l| window_of(l.window, at)).collect();
        let mut cells = self.cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut readings = Vec::with_capacity(limits.len());
        for (index, (limit, &(window, left))) in limits.iter().zip(&windows).enumerate() {
            let cell = cells.get(&limit.key).copied().unwrap_or_else(|| Cell::new(limit, now, window));
            match cell.check(limit, limit.admission_charge(), now, window, left) {
                Ok(reading) => readings.push(reading),
                Err(retry_after) => return Verdict::Refused { index, retry_after },
            }
        }
        for (limit, &(window, _)) in limits.iter().zip(&windows) {
            let cell = cells.entry(limit.key.clone()).or_insert_with(|| Cell::new(limit, now, window));
            cell.charge(limit, limit.admission_charge(), now, window);
        }
        Verdict::Admitted(readings)
    }

    pub fn read(&self, limit: &Limit, at: OffsetDateTime) -> f64 {
        let (window, _) = window_of(limit.window, at);
        let cells = self.cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match cells.get(&limit.key) {
            Some(Cell::Count { window: at, used }) if *at == window => *used,
            _ => 0.0,
        }
    }

    pub fn charge(&self, charges: &[Charge], at: OffsetDateTime) {
        let now = unix_ms(at);
        let mut cells = self.cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in charges {
            let (window, _) = window_of(c.limit.window, at);
            let cell = cells.entry(c.limit.key.clone()).or_insert_with(|| Cell::new(&c.limit, now, window));
            cell.charge(&c.limit, c.amount, now, window);
        }
    }
}

/// The calendar window of a limit (0 for those without one) and the
/// milliseconds until it ends.
pub fn window_of(window: Window, at: OffsetDateTime) -> (i64, f64) {
    match window {
        Window::Day | Window::Month => calendar(window, at),
        Window::Minute | Window::Concurrent => (0, 0.0),
    }
}

/// Ids for requests in Redis concurrency sets: unique per process start.
pub fn next_member() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
