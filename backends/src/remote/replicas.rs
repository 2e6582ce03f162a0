//! A model's upstream replicas: discovery, health, and the choice of one.
//!
//! Choice: power of two random choices, each scored by its load (the
//! gateway's outstanding requests on it, or, while the replica's own reading
//! is fresh, the requests it says it runs and queues when those are more,
//! `load.rs`) times its peak-EWMA
//! latency (Finagle's load metric), times one plus its reported KV-cache
//! use; a replica at its concurrency limit, ejected, or backing off after a
//! 429 is not a candidate. With prefix affinity, a request whose prompt
//! shares a long prefix with an earlier one goes to the replica that served
//! that one (whose prefix cache holds it) unless it is saturated: its
//! KV-cache use at 0.9 or more, or its load over 1.25 × the mean plus 4
//! (consistent hashing with bounded loads); then it goes by the usual choice
//! and the prefix stays home (its cache still holds it), unless home has left
//! the rotation, when the prefix follows. A prefix without a home goes to the
//! unsaturated replica that served the fewest recent prefixes, which spreads
//! the reused prompts evenly over the replicas' caches. Health: an active heartbeat (`eject_after` misses eject,
//! `readmit_after` successes re-admit) and passive ejection on connect
//! errors and bursts of 5xx. An ejected replica is half-open after
//! `cooldown`: one request may probe it, and its success re-admits it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use infergate_rng::SharedSplitMix64;

use super::config::RemoteConfig;
use super::load::Reported;

/// Latency estimate that jumps up at once and decays slowly.
#[derive(Debug)]
struct PeakEwma {
    value: f64,
    at: Instant,
}

impl PeakEwma {
    const DECAY: f64 = 10.0; // seconds

    fn observe(&mut self, seconds: f64, now: Instant) {
        if seconds > self.value {
            self.value = seconds;
        } else {
            let dt = now.saturating_duration_since(self.at).as_secs_f64();
            let w = (-dt / Self::DECAY).exp();
            self.value = self.value * w + seconds * (1.0 - w);
        }
        self.at = now;
    }
}

/// Why a replica is out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    Heartbeat,
    ConnectError,
    ServerErrors,
}

/// Ejections over a model's life, by reason (for metrics).
#[derive(Debug, Default)]
pub struct EjectionCounts([AtomicU64; 3]);

impl EjectionCounts {
    /// `(reason, total)` for every reason.
    pub fn totals(&self) -> Vec<(&'static str, u64)> {
        Ejection::ALL.iter().map(|e| (e.as_str(), self.0[*e as usize].load(Ordering::Relaxed))).collect()
    }
}

impl Ejection {
    pub const ALL: [Ejection; 3] = [Ejection::Heartbeat, Ejection::ConnectError, Ejection::ServerErrors];

    pub fn as_str(self) -> &'static str {
        match self {
            Ejection::Heartbeat => "heartbeat",
            Ejection::ConnectError => "connect_error",
            Ejection::ServerErrors => "server_errors",
        }
    }
}

/// One upstream server.
#[derive(Debug)]
pub struct Replica {
    /// `http://host:port`, without a trailing slash.
    pub base: String,
    /// `base` without credentials, query or fragment: what logs, metric
    /// labels and spans show.
    pub name: String,
    /// The base parsed, for building request URIs (an error for a base
    /// that is not a URL, which endpoint validation keeps out).
    pub target: Result<super::transport::Base, super::error::EndpointError>,
    outstanding: AtomicUsize,
    limit: usize,
    latency: Mutex<PeakEwma>,
    state: Mutex<Health>,
    /// A half-open probe is in flight.
    probing: AtomicBool,
    server_errors: AtomicU32,
    ejections: Arc<EjectionCounts>,
    /// Its own load gauges, last read.
    reported: Mutex<Option<Reported>>,
}

#[derive(Debug, Clone, Copy)]
struct Health {
    ejected: Option<(Ejection, Instant)>,
    misses: u32,
    successes: u32,
    backoff_until: Option<Instant>,
}

impl Replica {
    fn new(base: String, limit: usize, ejections: Arc<EjectionCounts>) -> Self {
        Replica {
            target: super::transport::Base::parse(&base),
            name: super::redact::url(&base),
            base,
            outstanding: AtomicUsize::new(0),
            limit,
            latency: Mutex::new(PeakEwma { value: 0.0, at: Instant::now() }),
            state: Mutex::new(Health { ejected: None, misses: 0, successes: 0, backoff_until: None }),
            probing: AtomicBool::new(false),
            server_errors: AtomicU32::new(0),
            ejections,
            reported: Mutex::new(None),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_ejected(&self) -> bool {
        self.health().ejected.is_some()
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Its latest load gauges; `None` when a read failed or found none.
    pub fn report(&self, reading: Option<Reported>) {
        *self.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = reading;
    }

    /// Its load gauges if read within `max_age` of `now`.
    pub fn reported(&self, now: Instant, max_age: Option<Duration>) -> Option<Reported> {
        let max_age = max_age?;
        let reading = *self.reported.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reading.filter(|r| r.fresh(now, max_age))
    }

    /// Requests on it: ours outstanding; with a reading, what it says it
    /// runs and queues (other clients' included) when that is more, or ours
    /// plus its queue where it does not say what it runs.
    fn load(&self, reported: Option<&Reported>) -> f64 {
        let ours = self.outstanding() as f64;
        match reported {
            None => ours,
            Some(Reported { waiting, running: Some(running), .. }) => ours.max(waiting + running),
            Some(Reported { waiting, running: None, .. }) => ours + waiting,
        }
    }

    /// Its peak-EWMA latency in seconds; 0 before its first answer.
    fn latency(&self) -> f64 {
        self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).value
    }

    /// `prior`: the latency assumed for a replica that has not answered yet
    /// (the others' mean), so that a new replica's reported queue still counts.
    fn score(&self, reported: Option<&Reported>, prior: f64) -> f64 {
        let latency = match self.latency() {
            l if l > 0.0 => l,
            _ => prior,
        };
        let kv = reported.and_then(|r| r.kv_cache).unwrap_or(0.0);
        (self.load(reported) + 1.0) * latency.max(1e-4) * (1.0 + kv)
    }

    /// Take it out of rotation; returns whether it was in.
    pub fn eject(&self, why: Ejection) -> bool {
        let mut h = self.health();
        let was_in = h.ejected.is_none();
        if was_in {
            h.ejected = Some((why, Instant::now()));
            self.ejections.0[why as usize].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(replica = %self.name, reason = why.as_str(), "upstream replica ejected");
        }
        h.successes = 0;
        was_in
    }

    fn readmit(&self) {
        let mut h = self.health();
        if h.ejected.take().is_some() {
            tracing::info!(replica = %self.name, "upstream replica re-admitted");
        }
        h.misses = 0;
        self.server_errors.store(0, Ordering::Relaxed);
    }

    /// A heartbeat's result.
    pub fn heartbeat(&self, ok: bool, config: &RemoteConfig) {
        let readmit = {
            let mut h = self.health();
            if ok {
                h.misses = 0;
                h.successes += 1;
                h.ejected.is_some() && h.successes >= config.health.readmit_after
            } else {
                h.successes = 0;
                h.misses += 1;
                if h.misses >= config.health.eject_after && h.ejected.is_none() {
                    drop(h);
                    self.eject(Ejection::Heartbeat);
                }
                false
            }
        };
        if readmit {
            self.readmit();
        }
    }

    /// Back off after a 429 for `after`.
    pub fn back_off(&self, after: Duration) {
        self.health().backoff_until = Some(Instant::now() + after);
    }

    /// A request's outcome: `Ok(latency)` or the kind of failure.
    pub fn finished(&self, outcome: Result<Duration, Failure>, config: &RemoteConfig) {
        match outcome {
            Ok(latency) => {
                self.latency
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .observe(latency.as_secs_f64(), Instant::now());
                self.server_errors.store(0, Ordering::Relaxed);
                if self.probing.swap(false, Ordering::AcqRel) {
                    self.readmit();
                }
            }
            Err(Failure::Connect) => {
                self.probing.store(false, Ordering::Release);
                self.eject(Ejection::ConnectError);
            }
            Err(Failure::Server) => {
                self.probing.store(false, Ordering::Release);
                let burst = self.server_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if burst >= config.health.eject_after_5xx {
                    self.eject(Ejection::ServerErrors);
                }
            }
            Err(Failure::Other) => {
                self.probing.store(false, Ordering::Release);
            }
        }
    }

    /// Whether a request may go here now, and as a half-open probe.
    fn candidate(&self, now: Instant, cooldown: Duration) -> Option<bool> {
        if self.outstanding() >= self.limit {
            return None;
        }
        let h = *self.health();
        if h.backoff_until.is_some_and(|until| until > now) {
            return None;
        }
        match h.ejected {
            None => Some(false),
            Some((_, since)) if now.saturating_duration_since(since) >= cooldown => {
                (!self.probing.load(Ordering::Acquire)).then_some(true)
            }
            Some(_) => None,
        }
    }
}

/// What went wrong with a request, for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made or broke before any answer.
    Connect,
    /// A 5xx answer.
    Server,
    /// Anything the replica is not to blame for (4xx, cancellation).
    Other,
}

/// A request's hold on a replica: counted as outstanding until dropped.
#[derive(Debug)]
pub struct Lease {
    pub replica: Arc<Replica>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.replica.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The replicas of one model.
#[derive(Debug)]
pub struct Replicas {
    list: RwLock<Vec<Arc<Replica>>>,
    limit: usize,
    cooldown: Duration,
    /// Seeded per process: replicas of the gateway pick differently.
    rng: SharedSplitMix64,
    pub ejections: Arc<EjectionCounts>,
    /// How long a replica's reported load counts; `None` without `load_metrics`.
    max_age: Option<Duration>,
    /// Prefix → the replica that served it last, with prefix affinity.
    affinity: Option<Mutex<Affinity>>,
}

/// Which replica served which prompt prefix: two generations of a map (the
/// older dropped when the newer fills), so that it stays bounded and keeps
/// what is used.
#[derive(Debug, Default)]
struct Affinity {
    current: HashMap<u64, Arc<str>>,
    previous: HashMap<u64, Arc<str>>,
    /// Prefixes of `current` per replica base.
    held: HashMap<Arc<str>, usize>,
}

impl Affinity {
    /// Prefixes remembered per generation.
    const GENERATION: usize = 4096;

    fn get(&self, prefix: u64) -> Option<&Arc<str>> {
        self.current.get(&prefix).or_else(|| self.previous.get(&prefix))
    }

    fn set(&mut self, prefix: u64, base: &str) {
        if self.current.get(&prefix).is_some_and(|home| **home == *base) {
            return;
        }
        let base: Arc<str> = base.into();
        if self.current.len() >= Self::GENERATION && !self.current.contains_key(&prefix) {
            self.previous = std::mem::take(&mut self.current);
            self.held.clear();
        }
        *self.held.entry(base.clone()).or_default() += 1;
        if let Some(old) = self.current.insert(prefix, base) {
            if let Some(n) = self.held.get_mut(&old) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// How many recent prefixes `base` served.
    fn held(&self, base: &str) -> usize {
        self.held.get(base).copied().unwrap_or(0)
    }
}

/// What the choice of a replica knows of the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// A hash of its prompt's first `prefix_affinity.tokens` tokens, if it has that many.
    pub prefix: Option<u64>,
}

impl Replicas {
    pub fn new(bases: Vec<String>, config: &RemoteConfig) -> Self {
        let ejections = Arc::new(EjectionCounts::default());
        let limit = config.replica_concurrency;
        let list = bases.into_iter().map(|b| Arc::new(Replica::new(b, limit, ejections.clone()))).collect();
        Replicas {
            list: RwLock::new(list),
            limit,
            cooldown: config.health.cooldown,
            rng: SharedSplitMix64::from_process(),
            ejections,
            max_age: config.load_metrics.as_ref().map(|l| l.max_age()),
            affinity: config.prefix_affinity.as_ref().map(|_| Mutex::new(Affinity::default())),
        }
    }

    /// Replicas in rotation, counted in place (the scheduler asks twice a request).
    pub fn healthy(&self) -> usize {
        self.list
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|r| !r.is_ejected())
            .count()
    }

    pub fn all(&self) -> Vec<Arc<Replica>> {
        self.list.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replace the set with `bases`, keeping the state of those that stay.
    pub fn update(&self, bases: &[String]) {
        let mut list = self.list.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old: HashMap<String, Arc<Replica>> = list.iter().map(|r| (r.base.clone(), r.clone())).collect();
        let new: Vec<Arc<Replica>> = bases
            .iter()
            .map(|b| {
                old.get(b)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Replica::new(b.clone(), self.limit, self.ejections.clone())))
            })
            .collect();
        if new.len() != list.len() || new.iter().zip(list.iter()).any(|(a, b)| a.base != b.base) {
            tracing::info!(replicas = ?bases.iter().map(|b| super::redact::url(b)).collect::<Vec<_>>(), "upstream replica set changed");
        }
        *list = new;
    }

    fn random(&self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    /// Choose a replica (not one of `tried`) and hold it.
    pub fn pick(&self, tried: &[Arc<Replica>], want: Want) -> Option<Lease> {
        let now = Instant::now();
        let all = self.all();
        let candidates: Vec<(Arc<Replica>, bool)> = all
            .into_iter()
            .filter(|r| !tried.iter().any(|t| Arc::ptr_eq(t, r)))
            .filter_map(|r| r.candidate(now, self.cooldown).map(|probe| (r, probe)))
            .collect();
        // Healthy ones first; a half-open probe only when none is healthy.
        let healthy: Vec<(&Arc<Replica>, Option<Reported>)> =
            candidates.iter().filter(|(_, p)| !p).map(|(r, _)| (r, r.reported(now, self.max_age))).collect();
        let (sum, known) = healthy
            .iter()
            .map(|(r, _)| r.latency())
            .filter(|l| *l > 0.0)
            .fold((0.0, 0u32), |(sum, n), l| (sum + l, n + 1));
        let prior = if known == 0 { 0.0 } else { sum / f64::from(known) };
        let (affine, spill) = match want.prefix {
            Some(prefix) => self.affine(prefix, &healthy, prior),
            None => (None, false),
        };
        let chosen = match (affine, healthy.len()) {
            (Some(r), _) => r,
            (None, 0) => {
                let (r, _) = candidates.first()?;
                if r.probing.swap(true, Ordering::AcqRel) {
                    return None;
                }
                tracing::info!(replica = %r.name, "half-open probe of an ejected upstream replica");
                r.clone()
            }
            (None, 1) => healthy[0].0.clone(),
            (None, n) => {
                let a = self.random(n);
                let b = (a + 1 + self.random(n - 1)) % n;
                let score =
                    |(r, reported): &(&Arc<Replica>, Option<Reported>)| r.score(reported.as_ref(), prior);
                if score(&healthy[a]) <= score(&healthy[b]) {
                    healthy[a].0.clone()
                } else {
                    healthy[b].0.clone()
                }
            }
        };
        // A spill leaves the prefix at home: its cache still holds it.
        if let (Some(prefix), Some(affinity), false) = (want.prefix, &self.affinity, spill) {
            affinity.lock().unwrap_or_else(std::sync::PoisonError::into_inner).set(prefix, &chosen.base);
        }
        chosen.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Lease { replica: chosen })
    }

    /// Where prefix affinity sends a request with `prefix`: the healthy
    /// replica that served it last (its home) unless that one is saturated;
    /// for a prefix without a healthy home, the unsaturated replica that
    /// served the fewest recent prefixes (then the lowest score), so that the
    /// prompts being reused are spread evenly over the replicas' prefix
    /// caches. `None`: the usual choice; `true` with it: a spill from a
    /// saturated home, which stays the prefix's home.
    fn affine(
        &self,
        prefix: u64,
        healthy: &[(&Arc<Replica>, Option<Reported>)],
        prior: f64,
    ) -> (Option<Arc<Replica>>, bool) {
        let Some(affinity) = &self.affinity else { return (None, false) };
        let affinity = affinity.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: f64 = healthy.iter().map(|(r, reported)| r.load(reported.as_ref())).sum();
        let bound = BOUNDED_LOAD * (total + 1.0) / healthy.len().max(1) as f64 + AFFINITY_SLACK;
        let open = |(r, reported): &&(&Arc<Replica>, Option<Reported>)| {
            let full = reported.and_then(|r| r.kv_cache).is_some_and(|kv| kv >= SATURATED_KV_CACHE);
            !full && r.load(reported.as_ref()) + 1.0 <= bound
        };
        let home = affinity.get(prefix).and_then(|base| healthy.iter().find(|(r, _)| r.base == **base));
        if let Some(home) = home {
            return if open(&home) { (Some(home.0.clone()), false) } else { (None, true) };
        }
        let fewest = healthy
            .iter()
            .filter(open)
            .min_by(|a, b| {
                let rank = |(r, reported): &&(&Arc<Replica>, Option<Reported>)| {
                    (affinity.held(&r.base), r.score(reported.as_ref(), prior))
                };
                let (a, b) = (rank(a), rank(b));
                a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
            })
            .map(|(r, _)| (*r).clone());
        (fewest, false)
    }
}

/// An affine replica may carry up to this many times the mean load (the
/// request being placed counted), plus `AFFINITY_SLACK` requests, so that a
/// prefix does not move at low load for one request more.
const BOUNDED_LOAD: f64 = 1.25;
const AFFINITY_SLACK: f64 = 4.0;
/// From this KV-cache use an affine replica is saturated.
const SATURATED_KV_CACHE: f64 = 0.9;

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: usize, extra: serde_json::Value) -> Replicas {
        let bases: Vec<String> = (0..n).map(|i| format!("http://127.0.0.1:{}", 9000 + i)).collect();
        let mut config = serde_json::json!({ "endpoints": bases });
        config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let config: RemoteConfig = serde_json::from_value(config).unwrap();
        Replicas::new(bases, &config)
    }

    fn reading(waiting: f64, kv_cache: Option<f64>, at: Instant) -> Option<Reported> {
        Some(Reported { waiting, running: None, kv_cache, at })
    }

    /// How many of `n` picks (each let go at once) went to each replica.
    fn spread(set: &Replicas, n: usize, want: Want) -> Vec<usize> {
        let all = set.all();
        let mut counts = vec![0; all.len()];
        for _ in 0..n {
            let lease = set.pick(&[], want).unwrap();
            counts[all.iter().position(|r| Arc::ptr_eq(r, &lease.replica)).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn a_reported_queue_steers_the_choice_while_it_is_fresh() {
        let set =
            replicas(2, serde_json::json!({ "load_metrics": { "interval": "250ms", "max_age": "1s" } }));
        let all = set.all();
        let now = Instant::now();
        all[0].report(reading(50.0, None, now));
        all[1].report(reading(0.0, None, now));
        assert_eq!(spread(&set, 100, Want::default()), [0, 100]);
        // A full KV cache counts too: 2 × the score at the same queue.
        all[0].report(reading(0.0, Some(1.0), now));
        assert_eq!(spread(&set, 100, Want::default()), [0, 100]);
        // Stale readings are ignored: the two are alike again.
        let old = now - Duration::from_secs(2);
        all[0].report(reading(50.0, None, old));
        all[1].report(reading(0.0, None, old));
        let counts = spread(&set, 200, Want::default());
        assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
        // Without load_metrics a reading is never read.
        let plain = replicas(2, serde_json::json!({}));
        plain.all()[0].report(reading(50.0, None, now));
        assert!(plain.all()[0].reported(now, plain.max_age).is_none());
    }

    #[test]
    fn a_prefix_sticks_to_its_replica_spills_when_it_is_saturated_and_moves_when_it_leaves() {
        let set = replicas(
            3,
            serde_json::json!({
                "load_metrics": { "interval": "250ms" }, "prefix_affinity": { "tokens": 16 }
            }),
        );
        let all = set.all();
        let want = Want { prefix: Some(42) };
        let first = set.pick(&[], want).unwrap().replica.clone();
        let home = all.iter().position(|r| Arc::ptr_eq(r, &first)).unwrap();
        let counts = spread(&set, 50, want);
        assert_eq!(counts[home], 50, "{counts:?}");
        // Other prefixes and prefix-less requests are not bound to it.
        let others = spread(&set, 300, Want::default());
        assert!(others.iter().all(|&c| c > 0), "{others:?}");
        // Held leases load it past 1.25 × the mean plus 4: the next one
        // spills, but the prefix stays home. With 3 replicas and the others
        // idle that is the seventh: 6 + 1 > 1.25 × 7 / 3 + 4 = 6.9.
        let mut held = Vec::new();
        let spilled = loop {
            let lease = set.pick(&[], want).unwrap();
            if !Arc::ptr_eq(&lease.replica, &all[home]) {
                break lease;
            }
            held.push(lease);
            assert!(held.len() < 10);
        };
        assert_eq!(held.len(), 6);
        drop((held, spilled));
        assert_eq!(spread(&set, 20, want)[home], 20);
        // Out of rotation (tried, here), home is left and the prefix follows.
        let moved = set.pick(&[all[home].clone()], want).unwrap().replica.clone();
        let moved = all.iter().position(|r| Arc::ptr_eq(r, &moved)).unwrap();
        assert_ne!(moved, home);
        assert_eq!(spread(&set, 20, want)[moved], 20);
        // A replica reporting a nearly full KV cache is saturated too.
        all[moved].report(reading(0.0, Some(0.95), Instant::now()));
        assert_eq!(spread(&set, 20, want)[moved], 0);
    }

    #[test]
    fn new_prefixes_spread_evenly_over_the_replicas() {
        let set = replicas(3, serde_json::json!({ "prefix_affinity": { "tokens": 16 } }));
        let all = set.all();
        let mut homes = vec![0; 3];
        for prefix in 0..6 {
            let lease = set.pick(&[], Want { prefix: Some(prefix) }).unwrap();
            homes[all.iter().position(|r| Arc::ptr_eq(r, &lease.replica)).unwrap()] += 1;
        }
        assert_eq!(homes, [2, 2, 2]);
        // And each keeps its home afterwards.
        for prefix in 0..6 {
            let first = set.pick(&[], Want { prefix: Some(prefix) }).unwrap().replica.clone();
            assert!((0..5).all(|_| Arc::ptr_eq(
                &set.pick(&[], Want { prefix: Some(prefix) }).unwrap().replica,
                &first
            )));
        }
    }
}
