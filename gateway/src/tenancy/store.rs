//! Where limits are kept: this process's memory, or Redis for limits that
//! every replica shares (`[store] url`).
//!
//! Admission is one atomic step over every limit of a request (all are
//! charged, or none): a mutex in memory, one Lua script (one round trip)
//! in Redis. Later charges — a token estimate, the correction when the
//! answer ends, a request leaving the concurrency count — never refuse, so
//! they are not waited for: in Redis they go to a background task that
//! sends what has gathered in one pipeline.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use super::limit::{unix_ms, Cell, Limit};
pub use super::limit::{window_of, Charge, StoreError, Verdict};
use super::redis::RedisStore;
use crate::config::{OnStoreError, StoreConfig};

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

    /// The Redis store, if limits are kept there.
    pub fn redis(&self) -> Option<&RedisStore> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r),
        }
    }

    /// Check every limit and charge each its admission charge, or none.
    pub async fn admit(&self, limits: &[Arc<Limit>]) -> Result<Verdict, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.admit(limits, OffsetDateTime::now_utc())),
            Store::Redis(r) => r.admit(limits).await,
        }
    }

    /// Charge `amount` to each of `limits` that `pick` chooses; these never
    /// refuse (and are not waited for in Redis).
    pub fn charge(&self, limits: &[Arc<Limit>], pick: impl Fn(&Limit) -> bool, amount: f64) {
        match self {
            Store::Memory(m) => m.charge(limits, pick, amount, OffsetDateTime::now_utc()),
            Store::Redis(r) => r.charge(limits, pick, amount),
        }
    }

    /// The memory store's slot of a limit key (0, unused, for Redis).
    pub fn slot(&self, key: &Arc<str>) -> usize {
        match self {
            Store::Memory(m) => m.slot(key),
            Store::Redis(r) => r.slot(key),
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

/// Limits in this process: one cell per limit key, found by the slot the
/// key was given when its policy was built (a bounded set: tenants × models
/// × limits, all from config), so admission takes one lock and no hashing.
#[derive(Default)]
pub struct MemoryStore {
    cells: Mutex<Vec<Option<Cell>>>,
    slots: Mutex<std::collections::HashMap<Arc<str>, usize>>,
}

impl MemoryStore {
    /// The slot of `key`, the same one every time it is asked for.
    pub fn slot(&self, key: &Arc<str>) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = slots.len();
        let slot = *slots.entry(key.clone()).or_insert(next);
        let mut cells = self.cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cells.len() <= slot {
            cells.resize(slot + 1, None);
        }
        slot
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Cell>>> {
        self.cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn admit(&self, limits: &[Arc<Limit>], at: OffsetDateTime) -> Verdict {
        let now = unix_ms(at);
        let mut cells = self.lock();
        let mut readings = Vec::with_capacity(limits.len());
        for (index, limit) in limits.iter().enumerate() {
            let (window, left) = window_of(limit.window, at);
            let cell =
                cells.get(limit.slot).copied().flatten().unwrap_or_else(|| Cell::new(limit, now, window));
            match cell.check(limit, limit.admission_charge(), now, window, left) {
                Ok(reading) => readings.push(reading),
                Err(retry_after) => return Verdict::Refused { index, retry_after },
            }
        }
        for limit in limits {
            charge_cell(&mut cells, limit, limit.admission_charge(), now, at);
        }
        Verdict::Admitted(readings)
    }

    pub fn read(&self, limit: &Limit, at: OffsetDateTime) -> f64 {
        let (window, _) = window_of(limit.window, at);
        match self.lock().get(limit.slot).copied().flatten() {
            Some(Cell::Count { window: at, used }) if at == window => used,
            _ => 0.0,
        }
    }

    /// Charge `amount` to each of `limits` that `pick` chooses.
    pub fn charge(
        &self,
        limits: &[Arc<Limit>],
        pick: impl Fn(&Limit) -> bool,
        amount: f64,
        at: OffsetDateTime,
    ) {
        let now = unix_ms(at);
        let mut cells = self.lock();
        for limit in limits.iter().filter(|l| pick(l)) {
            charge_cell(&mut cells, limit, amount, now, at);
        }
    }
}

fn charge_cell(cells: &mut [Option<Cell>], limit: &Limit, amount: f64, now: f64, at: OffsetDateTime) {
    if amount == 0.0 {
        return;
    }
    let (window, _) = window_of(limit.window, at);
    if let Some(slot) = cells.get_mut(limit.slot) {
        slot.get_or_insert_with(|| Cell::new(limit, now, window)).charge(limit, amount, now, window);
    }
}
