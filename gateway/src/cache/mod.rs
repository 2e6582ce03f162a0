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

mod flight;
mod key;
mod shared;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use infergate_backends::{Event, Output, Request};
use infergate_otel::cache::ModelCacheSeries;
use moka::notification::RemovalCause;
use tokio::time::Instant;

pub use self::flight::FlightReader;
use self::flight::{Flights, Store};
pub use self::key::{model_identity, Key};
use self::key::{write_request, KeyWriter};
pub use self::shared::SharedTier;
use crate::config::CacheConfig;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::runner::{Cost, DispatchInfo, ModelHandle};

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

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    pub output: Output,
    /// A streamed answer's pieces as they were sent, to replay them alike.
    pub deltas: Option<Arc<[String]>>,
    /// What it holds, roughly, for `max_bytes`.
    bytes: u32,
}

impl Entry {
    pub(super) fn new(output: Output, deltas: Option<Arc<[String]>>) -> Arc<Self> {
        let streamed: usize = deltas.iter().flat_map(|d| d.iter()).map(|d| d.len() + 24).sum();
        let bytes = (output_bytes(&output) + streamed + 160).min(u32::MAX as usize) as u32;
        Arc::new(Entry { output, deltas, bytes })
    }

    /// The answer as a stream's events: its pieces as first sent (one piece
    /// if it was not streamed), then the whole.
    pub fn replay(&self) -> std::collections::VecDeque<Event> {
        let mut events: std::collections::VecDeque<Event> = match (&self.deltas, &self.output) {
            (Some(deltas), _) => deltas.iter().cloned().map(Event::Delta).collect(),
            (None, Output::Chat(chat)) if !chat.text.is_empty() => [Event::Delta(chat.text.clone())].into(),
            (None, _) => Default::default(),
        };
        events.push_back(Event::Done(self.output.clone()));
        events
    }
}

/// Heap bytes an output holds, roughly.
fn output_bytes(output: &Output) -> usize {
    match output {
        Output::Chat(chat) => chat.text.len() + chat.upstream.as_ref().map_or(0, |u| u.body.len()),
        Output::Embeddings(e) => e.vectors.iter().map(|v| v.len() * 4 + 24).sum(),
        Output::Transcription(t) => {
            t.text.len() + t.language.len() + t.segments.iter().map(|s| s.text.len() + 48).sum::<usize>()
        }
        Output::Moderation(m) => m
            .results
            .iter()
            .map(|r| {
                let scores: usize = r.category_scores.keys().map(|k| k.len() + 40).sum();
                2 * scores + r.category_applied_input_types.len() * 48
            })
            .sum(),
        Output::Tensor(t) => {
            t.outputs.iter().map(|o| o.name.len() + o.shape.len() * 8 + o.data.len() * 16).sum()
        }
        Output::Ocr(o) => o.lines.iter().map(|l| l.text.len() + 64).sum(),
        Output::VoiceActivity(v) => v.segments.len() * 16,
    }
}

/// One model's cache; see the module docs.
pub struct ModelCache {
    /// The model's identity ([`model_identity`]), the first part of every key.
    identity: [u8; 32],
    shared: bool,
    entries: moka::sync::Cache<Key, Arc<Entry>, key::KeyHash>,
    flights: Flights,
    next_flight: AtomicU64,
    series: ModelCacheSeries,
    /// Redis, for a `shared` model when `[store]` has one.
    tier: Option<SharedTier>,
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
            flights: Flights::default(),
            next_flight: AtomicU64::new(1),
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

    fn forget_flight(&self, key: (Key, bool), id: u64) {
        let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if flights.get(&key).is_some_and(|(at, _)| *at == id) {
            flights.remove(&key);
        }
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

/// How a job runs, once the cache has been asked.
pub enum Route {
    /// As without a cache (it cannot be cached, or the client said `no-store`).
    Direct((Request, Cost)),
    /// The stored answer.
    Hit(Arc<Entry>),
    /// A job in its own task: this request's, or one it joined.
    Flight(FlightReader),
}

/// Whether a request due at `newcomer` may wait for a job due at `job`.
fn joinable(newcomer: Option<Instant>, job: Option<Instant>) -> bool {
    match (newcomer, job) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(newcomer), Some(job)) => newcomer >= job,
    }
}

/// Ask `model`'s cache how to run `prepared` (a job of the request `ctx`,
/// due by `deadline`), and count the answer. `relayed`: the model relays
/// upstream chunks for this job, which are not stored.
pub fn route(
    cache: &Arc<ModelCache>,
    model: &Arc<ModelHandle>,
    ctx: &RequestContext,
    deadline: Option<Instant>,
    prepared: (Request, Cost),
    relayed: bool,
) -> (CacheStatus, Route) {
    let key = if relayed { None } else { cache.key(&ctx.tenant, &prepared.0) };
    let (status, route) = match (key, ctx.cache_control) {
        (None, _) => (CacheStatus::None, Route::Direct(prepared)),
        (Some(_), CacheControl::NoStore) => (CacheStatus::Bypass, Route::Direct(prepared)),
        (Some(key), CacheControl::NoCache) => {
            let store = Store { cache: cache.clone(), key, join: None, lead: false };
            (
                CacheStatus::Bypass,
                Route::Flight(FlightReader::new(flight::launch(model, ctx, deadline, prepared, store))),
            )
        }
        (Some(key), CacheControl::Default) => join_or_launch(cache, model, ctx, deadline, prepared, key),
    };
    // A job started on a miss counts itself, once it knows whether the
    // shared tier had the answer.
    if !(status == CacheStatus::Miss && matches!(route, Route::Flight(_))) {
        cache.count(status);
    }
    (status, route)
}

/// The status of a job once its dispatch is known: a job started on a miss
/// may have found its answer in the shared tier.
pub fn resolve(provisional: CacheStatus, dispatch: &DispatchInfo) -> CacheStatus {
    if provisional == CacheStatus::Miss && dispatch.cache == Some(CacheStatus::Hit) {
        CacheStatus::Hit
    } else {
        provisional
    }
}

/// [`resolve`]'s status, recorded in the
/// request's `tally` and on its span.
pub fn settle(provisional: CacheStatus, dispatch: &DispatchInfo, tally: Option<&Tally>) -> CacheStatus {
    let status = resolve(provisional, dispatch);
    if let Some(tally) = tally {
        tally.record(status);
    }
    tracing::Span::current().record("cache.hit", status.served());
    status
}

/// Join the identical job in flight, or start one that others may join.
fn join_or_launch(
    cache: &Arc<ModelCache>,
    model: &Arc<ModelHandle>,
    ctx: &RequestContext,
    deadline: Option<Instant>,
    prepared: (Request, Cost),
    key: Key,
) -> (CacheStatus, Route) {
    let stream = matches!(&prepared.0, Request::Chat(chat) if chat.stream);
    // The job in flight first, then the stored answers: a job stores its
    // answer before it leaves the map, so whichever a look-up meets, it
    // finds the answer (no second job for it).
    let mut flights = cache.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = flights.get(&(key, stream)).and_then(|(_, f)| f.upgrade());
    let (status, flight, stale) = match current {
        Some(flight) if joinable(deadline, flight.deadline) => (CacheStatus::Coalesced, flight, None),
        // Due sooner than the job in flight: a job of its own, which stores
        // its answer but is not joined.
        Some(other) => {
            let store = Store { cache: cache.clone(), key, join: None, lead: true };
            (CacheStatus::Miss, flight::launch(model, ctx, deadline, prepared, store), Some(other))
        }
        None => match cache.entries.get(&key) {
            Some(entry) => {
                drop(flights);
                return (CacheStatus::Hit, Route::Hit(entry));
            }
            None => {
                let id = cache.next_flight.fetch_add(1, Ordering::Relaxed);
                let store = Store { cache: cache.clone(), key, join: Some((stream, id)), lead: true };
                let flight = flight::launch(model, ctx, deadline, prepared, store);
                flights.insert((key, stream), (id, Arc::downgrade(&flight)));
                (CacheStatus::Miss, flight, None)
            }
        },
    };
    drop(flights);
    // Dropped outside the lock: the last holder of a flight takes it out of the map.
    drop(stale);
    (status, Route::Flight(FlightReader::new(flight)))
}

/// The dispatch of an answer that came from the cache: no queue, no batch.
pub fn hit_dispatch() -> DispatchInfo {
    DispatchInfo {
        queue_wait: std::time::Duration::ZERO,
        batch_size: 0,
        batch_id: 0,
        slack: None,
        position: 0,
        cache: Some(CacheStatus::Hit),
    }
}

impl FlightReader {
    /// The job's output by `deadline`, skipping streamed pieces.
    pub async fn output(&mut self, deadline: Option<Instant>) -> Result<Output, ApiError> {
        crate::runner::by(deadline, async {
            loop {
                match self.next().await? {
                    Event::Delta(_) | Event::Chunk(_) => continue,
                    Event::Done(output) => return Ok(output),
                    Event::Failed(error) => return Err(error.into()),
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
