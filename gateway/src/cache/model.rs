//! One model's cache: its stored answers, its jobs in flight, its shared tier.

use std::sync::Arc;

use infergate_backends::Request;
use infergate_otel::cache::ModelCacheSeries;
use moka::notification::RemovalCause;

use super::entry::Entry;
use super::flight::Flights;
use super::key::{self, write_request, Key, KeyWriter};
use super::shared::SharedTier;
use super::status::CacheStatus;
use crate::config::CacheConfig;

/// One model's cache; see the module docs.
pub struct ModelCache {
    /// The model's identity ([`model_identity`]), the first part of every key.
    identity: [u8; 32],
    shared: bool,
    pub(super) entries: moka::sync::Cache<Key, Arc<Entry>, key::KeyHash>,
    pub(super) flights: Arc<Flights>,
    series: ModelCacheSeries,
    /// Redis, for a `shared` model when `[store]` has one.
    pub(super) tier: Option<SharedTier>,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCache").field("shared", &self.shared).finish_non_exhaustive()
    }
}

impl ModelCache {
    pub fn new(
        identity: [u8; 32],
        config: &CacheConfig,
        series: ModelCacheSeries,
        tier: Option<SharedTier>,
    ) -> Arc<Self> {
        let (bytes, entries, evictions) =
            (series.bytes.clone(), series.entries.clone(), series.evictions.clone());
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .time_to_live(config.ttl)
            .weigher(|_, entry: &Arc<Entry>| entry.bytes)
            .eviction_listener(move |_, entry: Arc<Entry>, cause| {
                bytes.dec_by(i64::from(entry.bytes));
                entries.dec();
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build_with_hasher(key::KeyHash::default());
        Arc::new(ModelCache {
            identity,
            shared: config.shared,
            entries: cache,
            flights: Arc::default(),
            series,
            tier,
        })
    }

    /// The key of `request` from `tenant`; `None` if it cannot be cached.
    pub fn key(&self, tenant: &str, request: &Request) -> Option<Key> {
        let mut key = KeyWriter::new();
        key.bytes(&self.identity);
        key.str(if self.shared { "" } else { tenant });
        key.bytes(&[u8::from(self.shared)]);
        write_request(&mut key, request).then(|| key.finish())
    }

    pub(super) fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.series.bytes.inc_by(i64::from(entry.bytes));
        self.series.entries.inc();
        self.entries.insert(key, entry);
    }

    pub(super) fn count(&self, status: CacheStatus) {
        match status {
            CacheStatus::Hit => &self.series.hit,
            CacheStatus::Coalesced => &self.series.coalesced,
            CacheStatus::Miss => &self.series.miss,
            CacheStatus::Bypass => &self.series.bypass,
            CacheStatus::None => &self.series.none,
        }
        .inc();
    }
}
