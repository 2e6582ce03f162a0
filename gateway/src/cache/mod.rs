//! The response cache of a model's deterministic answers, and the
//! coalescing of identical requests in flight.
//!
//! A model with `cache = { ttl, max_bytes, shared }` keeps the outputs of
//! its jobs (not encoded bodies: each answer is encoded afresh, with its own
//! `id` and `created`) under a key of the model's identity, the tenant
//! (unless `shared`) and the request's fields ([`key`]). A job whose key is
//! stored is answered from the cache without reaching the scheduler; one
//! whose key is in flight joins that job ([`flight`]) unless it is due
//! sooner; otherwise its job runs in a task of its own and the answer is
//! stored. Requests that may answer differently each time (sampling
//! without a seed) have no key and run as they would without a cache.
//! The client's `Cache-Control: no-cache` skips the look-up and stores the
//! fresh answer; `no-store` neither reads nor writes.

mod entry;
mod flight;
mod key;
mod model;
mod route;
mod shared;
mod status;

pub use self::entry::Entry;
pub use self::flight::FlightReader;
pub use self::key::{model_identity, Key};
pub use self::model::ModelCache;
pub use self::route::{hit_dispatch, resolve, route, settle, Route};
pub use self::shared::SharedTier;
pub use self::status::{CacheControl, CacheStatus, Tally};

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use infergate_backends::Output;
    use tokio::time::Instant;

    use super::entry::Entry;
    use super::route::joinable;
    use super::*;
    use crate::config::CacheConfig;

    #[test]
    fn a_request_reports_its_most_telling_status() {
        let tally = Tally::default();
        assert_eq!(tally.status(), None);
        tally.record(CacheStatus::Hit);
        assert_eq!(tally.status(), Some(CacheStatus::Hit));
        tally.record(CacheStatus::Coalesced);
        tally.record(CacheStatus::Hit);
        assert_eq!(tally.status(), Some(CacheStatus::Coalesced));
        tally.record(CacheStatus::Miss);
        tally.record(CacheStatus::Hit);
        assert_eq!(tally.status(), Some(CacheStatus::Miss));
    }

    #[test]
    fn cache_control_is_read_as_http_says() {
        let control = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(http::header::CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
            }
            CacheControl::of(&headers)
        };
        assert_eq!(control(&[]), CacheControl::Default);
        assert_eq!(control(&["No-Cache"]), CacheControl::NoCache);
        assert_eq!(control(&["max-age=0"]), CacheControl::NoCache);
        assert_eq!(control(&["max-age=60"]), CacheControl::Default);
        assert_eq!(control(&["no-cache, no-store"]), CacheControl::NoStore);
        assert_eq!(control(&["private", "no-store"]), CacheControl::NoStore);
    }

    #[test]
    fn a_newcomer_due_sooner_does_not_join() {
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(1);
        assert!(joinable(None, Some(now)));
        assert!(joinable(Some(later), Some(now)));
        assert!(joinable(Some(now), Some(now)));
        assert!(!joinable(Some(now), Some(later)));
        assert!(!joinable(Some(now), None));
    }

    #[test]
    fn the_cache_stays_within_max_bytes_and_counts_what_it_evicts() {
        use infergate_backends::EmbeddingsOutput;
        let metrics = infergate_otel::Metrics::new();
        let series = metrics.cache.model("m");
        let config = CacheConfig { max_bytes: 64 * 1024, ..CacheConfig::default() };
        let cache = ModelCache::new([0; 32], &config, series.clone(), None);
        // 100 answers of about 4 KiB each: room for about 16.
        for i in 0..100u8 {
            let output =
                Output::Embeddings(EmbeddingsOutput { vectors: vec![vec![0.0; 1024]], prompt_tokens: 1 });
            cache.insert(Key([i; 32]), Entry::new(output, None));
        }
        cache.entries.run_pending_tasks();
        let held = u64::try_from(series.bytes.get()).unwrap();
        assert!(held <= config.max_bytes, "{held} bytes held");
        assert!(held > config.max_bytes / 2, "{held} bytes held");
        assert_eq!(u64::try_from(series.entries.get()).unwrap(), cache.entries.entry_count());
        assert!(series.evictions.get() >= 80, "{} evicted", series.evictions.get());
    }
}
