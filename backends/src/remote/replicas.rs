//! A model's upstream replicas: discovery, health, and the choice of one.
//!
//! Choice: power of two random choices, each scored by its outstanding
//! requests times its peak-EWMA latency (Finagle's load metric); a replica
//! at its concurrency limit, ejected, or backing off after a 429 is not a
//! candidate. Health: an active heartbeat (`eject_after` misses eject,
//! `readmit_after` successes re-admit) and passive ejection on connect
//! errors and bursts of 5xx. An ejected replica is half-open after
//! `cooldown`: one request may probe it, and its success re-admits it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use infergate_rng::SharedSplitMix64;

use super::config::RemoteConfig;

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

    fn score(&self) -> f64 {
        let latency = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).value;
        (self.outstanding() as f64 + 1.0) * latency.max(1e-4)
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
}

impl Replicas {
    pub fn new(bases: Vec<String>, limit: usize, cooldown: Duration) -> Self {
        let ejections = Arc::new(EjectionCounts::default());
        let list = bases.into_iter().map(|b| Arc::new(Replica::new(b, limit, ejections.clone()))).collect();
        Replicas {
            list: RwLock::new(list),
            limit,
            cooldown,
            rng: SharedSplitMix64::from_process(),
            ejections,
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
    pub fn pick(&self, tried: &[Arc<Replica>]) -> Option<Lease> {
        let now = Instant::now();
        let all = self.all();
        let candidates: Vec<(Arc<Replica>, bool)> = all
            .into_iter()
            .filter(|r| !tried.iter().any(|t| Arc::ptr_eq(t, r)))
            .filter_map(|r| r.candidate(now, self.cooldown).map(|probe| (r, probe)))
            .collect();
        // Healthy ones first; a half-open probe only when none is healthy.
        let healthy: Vec<&Arc<Replica>> = candidates.iter().filter(|(_, p)| !p).map(|(r, _)| r).collect();
        let chosen = match healthy.len() {
            0 => {
                let (r, _) = candidates.first()?;
                if r.probing.swap(true, Ordering::AcqRel) {
                    return None;
                }
                tracing::info!(replica = %r.name, "half-open probe of an ejected upstream replica");
                r.clone()
            }
            1 => healthy[0].clone(),
            n => {
                let a = self.random(n);
                let b = (a + 1 + self.random(n - 1)) % n;
                if healthy[a].score() <= healthy[b].score() {
                    healthy[a].clone()
                } else {
                    healthy[b].clone()
                }
            }
        };
        chosen.outstanding.fetch_add(1, Ordering::Relaxed);
        Some(Lease { replica: chosen })
    }
}
