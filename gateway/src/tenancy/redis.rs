//! Limits in Redis, shared by every replica: admission is one Lua script
//! (one round trip, atomic over all of a request's limits, on Redis's own
//! clock so replicas' clocks need not agree); later charges gather in a
//! background task and go in one script call per batch.
//!
//! Keys, under `store.key_prefix`: per-minute limits hold GCRA's `tat` (Unix
//! ms, expiring when the bucket is full again); daily and monthly limits a
//! counter per window (`…:20429` days or `…:24323` months since 1970);
//! `concurrent` a hash of the slots each replica holds (in use, or kept for
//! its next requests) beside a sorted set of the replicas' lease ends, which
//! each renews four times a second: a replica that dies frees its slots
//! when its lease lapses.
//!
//! Rates and quotas are leased ([`super::lease`]): a busy limit takes a
//! chunk of allowance with each admission that reaches Redis and serves
//! the next requests from it; `concurrent` slots likewise, a busy replica
//! keeping a released slot (up to a chunk) for its next request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use time::OffsetDateTime;

use super::lease::Lease;
use super::limit::{window_of, Charge, Limit, Reading, StoreError, Verdict, Window};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
use crate::config::{OnStoreError, StoreConfig};

/// How long a replica's concurrency slots count if it stops renewing them.
const LEASE: Duration = Duration::from_secs(30);
/// Charges waiting for the background task; past this they are dropped (and counted).
const QUEUE: usize = 65_536;
/// Most charges in one script call.
const BATCH: usize = 512;

const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member, lease = ARGV[1], tonumber(ARGV[2])
local out = {1, 0, 0}
local after, grant = {}, {}
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 5
  local kind, a, cap = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local c, w = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local remaining, reset
  if kind == 'm' then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local used = (tat - now) * a
    local fits
    if c > 0 then fits = used + c <= cap + 1e-9 else fits = used < cap end
    if not fits then
      return {0, i, math.ceil((used + math.max(c, 1) - cap) / a)}
    end
    grant[i] = c + math.max(0, math.min(w - c, cap - used - c))
    after[i] = tat + grant[i] / a
    remaining = cap - (after[i] - now) * a
    reset = after[i] - now
  elseif kind == 'w' then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    local fits
    if c > 0 then fits = used + c <= cap else fits = used < cap end
    if not fits then return {0, i, math.ceil(a)} end
    grant[i] = c + math.max(0, math.min(w - c, cap - used - c))
    remaining = cap - used - grant[i]
    reset = a
  else
    local alive = KEYS[i] .. ':alive'
    for _, r in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now)) do
      redis.call('HDEL', KEYS[i], r)
      redis.call('ZREM', alive, r)
    end
    local count = 0
    for _, v in ipairs(redis.call('HVALS', KEYS[i])) do count = count + tonumber(v) end
    if count + c > cap then return {0, i, 1000} end
    grant[i] = c + math.max(0, math.min(w - c, cap - count - c))
    remaining = cap - count - grant[i]
    reset = 0
  end
  out[#out + 1] = math.floor(math.max(remaining, 0) + 1e-6)
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.floor(grant[i] * 1000 + 0.5)
end
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 5
  local kind, a = ARGV[b + 1], tonumber(ARGV[b + 2])
  if grant[i] > 0 then
    if kind == 'm' then
      redis.call('SET', KEYS[i], tostring(after[i]), 'PX', math.ceil(after[i] - now) + 1000)
    elseif kind == 'w' then
      redis.call('INCRBYFLOAT', KEYS[i], grant[i])
      redis.call('PEXPIRE', KEYS[i], math.ceil(a) + 86400000)
    else
      redis.call('HINCRBY', KEYS[i], member, grant[i])
      redis.call('ZADD', KEYS[i] .. ':alive', now + lease, member)
      redis.call('PEXPIRE', KEYS[i], lease)
      redis.call('PEXPIRE', KEYS[i] .. ':alive', lease)
    end
  end
end
return out
"#;

const CHARGE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member, lease = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 3
  local kind, a, amount = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  if kind == 'm' then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    tat = tat + tonumber(amount) / a
    if tat > now then
      redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
    else
      redis.call('DEL', KEYS[i])
    end
  elseif kind == 'w' then
    if tonumber(redis.call('INCRBYFLOAT', KEYS[i], amount)) < 0 then
      redis.call('SET', KEYS[i], '0', 'KEEPTTL')
    end
    redis.call('PEXPIRE', KEYS[i], math.ceil(a) + 86400000)
  else
    -- Slots given back (a negative amount), and the replica's slots renewed.
    if tonumber(amount) ~= 0 then
      if redis.call('HINCRBY', KEYS[i], member, amount) <= 0 then redis.call('HDEL', KEYS[i], member) end
    end
    redis.call('ZADD', KEYS[i] .. ':alive', now + lease, member)
    redis.call('PEXPIRE', KEYS[i], lease)
    redis.call('PEXPIRE', KEYS[i] .. ':alive', lease)
  end
end
return 1
"#;

/// See the module docs.
pub struct RedisStore {
    conn: ConnectionManager,
    admit: Script,
    prefix: Arc<str>,
    /// Tells this process's concurrency members from other replicas'.
    replica: Arc<str>,
    timeout: Duration,
    pub on_error: OnStoreError,
    queue: tokio::sync::mpsc::Sender<Charge>,
    errors: Failures,
    /// Allowance held ahead, by limit slot.
    leases: Arc<Mutex<Vec<Lease>>>,
    slots: Mutex<std::collections::HashMap<Arc<str>, usize>>,
    /// After a failed admission, requests skip the store until this time
    /// (Unix ms): while Redis is away they follow `on_error` at once
    /// instead of each waiting out `store.timeout`.
    down_until: AtomicU64,
}

/// How long admissions skip the store after one failed.
const BACKOFF_MS: u64 = 500;

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Store failures: counted, and logged once a second at most.
#[derive(Clone)]
struct Failures {
    counter: Counter,
    last_log: Arc<AtomicU64>,
}

impl Failures {
    fn note(&self, what: &str, error: &dyn std::fmt::Display) {
        self.counter.inc();
        let now = unix_secs();
        let last = self.last_log.load(Ordering::Relaxed);
        if now > last
            && self.last_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(store = "redis", %error, "{what} failed (logged once a second at most; counted in infergate_store_errors_total)");
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RedisStore {
    /// Connects lazily, on the first request, and reconnects by itself.
    /// Must run inside a tokio runtime.
    pub fn new(url: &str, config: &StoreConfig, errors: Counter) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("store.url: {e}"))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(250)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| format!("store.url: {e}"))?;
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        let errors = Failures { counter: errors, last_log: Arc::new(AtomicU64::new(0)) };
        let prefix: Arc<str> = Arc::from(config.key_prefix.as_str());
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| e.to_string())?;
        let replica: Arc<str> = Arc::from(hex::encode(id));
        let leases = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(flush(
            conn.clone(),
            rx,
            prefix.clone(),
            replica.clone(),
            errors.clone(),
            leases.clone(),
        ));
        tokio::spawn(warm_up(conn.clone()));
        Ok(RedisStore {
            conn,
            admit: Script::new(ADMIT),
            prefix,
            replica,
            timeout: config.timeout,
            on_error: config.on_error,
            queue,
            errors,
            down_until: AtomicU64::new(0),
            leases,
            slots: Mutex::default(),
        })
    }

    /// The connection, key prefix and timeout, for the response cache's
    /// shared tier to use the same Redis.
    pub fn connection(&self) -> (ConnectionManager, Arc<str>, Duration) {
        (self.conn.clone(), self.prefix.clone(), self.timeout)
    }

    /// The lease slot of a limit key, the same one every time.
    pub fn slot(&self, key: &Arc<str>) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = slots.len();
        let slot = *slots.entry(key.clone()).or_insert(next);
        let mut leases = lock(&self.leases);
        if leases.len() <= slot {
            leases.resize(slot + 1, Lease::default());
        }
        slot
    }

    /// Admit against every limit: those whose held allowance covers the
    /// request locally, the others (topped up to a chunk) in one round trip;
    /// nothing is taken unless all admit.
    pub async fn admit(&self, limits: &[Arc<Limit>]) -> Result<Verdict, StoreError> {
        let now = unix_ms_now() as f64;
        let (remote, wants): (Vec<Arc<Limit>>, Vec<f64>) = {
            let leases = lock(&self.leases);
            limits
                .iter()
                .filter_map(|l| {
                    let need = l.admission_charge();
                    match leases.get(l.slot) {
                        Some(lease) if lease.covers(need) => None,
                        Some(lease) => Some((l.clone(), need + lease.top_up(l))),
                        None => Some((l.clone(), need)),
                    }
                })
                .unzip()
        };
        let granted = if remote.is_empty() {
            Vec::new()
        } else {
            if (now as u64) < self.down_until.load(Ordering::Relaxed) {
                self.errors.counter.inc();
                return Err(StoreError("the store failed moments ago".into()));
            }
            let at = OffsetDateTime::now_utc();
            match self.try_admit(&remote, &wants, at).await {
                Ok(Granted::Refused(Verdict::Refused { index, retry_after })) => {
                    let index = limits.iter().position(|l| Arc::ptr_eq(l, &remote[index])).unwrap_or(0);
                    return Ok(Verdict::Refused { index, retry_after });
                }
                Ok(Granted::Refused(verdict)) => return Ok(verdict),
                Ok(Granted::Admitted(granted)) => {
                    let window = |l: &Limit| window_of(l.window, at).0;
                    remote.iter().zip(granted).map(|(l, g)| (l.clone(), g, window(l))).collect()
                }
                Err(e) => {
                    self.down_until.store(unix_ms_now() + BACKOFF_MS, Ordering::Relaxed);
                    return Err(e);
                }
            }
        };
        let mut leases = lock(&self.leases);
        let readings = limits
            .iter()
            .map(|l| {
                let Some(lease) = leases.get_mut(l.slot) else { return Reading::unknown(l) };
                let need = l.admission_charge();
                match granted.iter().find(|(r, _, _)| Arc::ptr_eq(r, l)) {
                    Some((_, (reading, amount), window)) => {
                        lease.grant(l, *amount, need, *reading, now, *window)
                    }
                    // Held here (another request may have taken it meanwhile:
                    // then this overdraws a little, and the next asks Redis).
                    None => lease.take(need, now),
                }
                if l.window == Window::Concurrent {
                    lease.in_use += 1.0;
                }
                lease.reading(l)
            })
            .collect();
        Ok(Verdict::Admitted(readings))
    }

    async fn try_admit(
        &self,
        limits: &[Arc<Limit>],
        wants: &[f64],
        at: OffsetDateTime,
    ) -> Result<Granted, StoreError> {
        let mut call = self.admit.prepare_invoke();
        call.arg(&*self.replica).arg(LEASE.as_millis() as u64);
        for (limit, want) in limits.iter().zip(wants) {
            let (window, left) = window_of(limit.window, at);
            call.key(key(&self.prefix, limit, window));
            let (kind, a, capacity) = match limit.window {
                Window::Minute => ("m", limit.rate() / 1000.0, limit.capacity),
                Window::Day | Window::Month => ("w", left, limit.amount),
                Window::Concurrent => ("c", 0.0, limit.amount),
            };
            call.arg(kind).arg(a).arg(capacity).arg(limit.admission_charge()).arg(*want);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                self.errors.note("admission", &e);
                return Err(StoreError(e.to_string()));
            }
            Err(_) => {
                let e = format!("no answer within store.timeout ({:?})", self.timeout);
                self.errors.note("admission", &e);
                return Err(StoreError(e));
            }
        };
        granted(limits, &reply).ok_or_else(|| {
            let e = format!("unexpected reply {reply:?}");
            self.errors.note("admission", &e);
            StoreError(e)
        })
    }

    /// The use a daily or monthly limit has had in its current window.
    pub async fn read(&self, limit: &Limit, at: OffsetDateTime) -> Result<f64, StoreError> {
        let (window, _) = window_of(limit.window, at);
        let mut conn = self.conn.clone();
        let get = redis::cmd("GET").arg(key(&self.prefix, limit, window)).clone();
        match tokio::time::timeout(self.timeout * 4, get.query_async::<Option<f64>>(&mut conn)).await {
            Ok(Ok(used)) => Ok(used.unwrap_or(0.0)),
            Ok(Err(e)) => {
                self.errors.note("a usage read", &e);
                Err(StoreError(e.to_string()))
            }
            Err(_) => {
                self.errors.note("a usage read", &"no answer in time");
                Err(StoreError("timeout".into()))
            }
        }
    }

    /// Charge `amount` to each of `limits` that `pick` chooses: from the
    /// held allowance where there is some, the overdraft (and every
    /// concurrency release) queued for the background task.
    pub fn charge(&self, limits: &[Arc<Limit>], pick: impl Fn(&Limit) -> bool, amount: f64) {
        let now = unix_ms_now() as f64;
        let mut sends = Vec::new();
        {
            let mut leases = lock(&self.leases);
            for limit in limits.iter().filter(|l| pick(l)) {
                let send = match (limit.window, leases.get_mut(limit.slot)) {
                    (_, None) => amount,
                    // A request ended: a busy replica keeps its slot (up to a
                    // chunk) for its next request; a quiet one gives it back.
                    (Window::Concurrent, Some(lease)) => {
                        lease.in_use = (lease.in_use + amount).max(0.0);
                        if amount < 0.0 && lease.held - amount <= lease.chunk(limit) {
                            lease.held -= amount;
                            0.0
                        } else {
                            amount
                        }
                    }
                    (_, Some(lease)) => lease.charge(amount, now),
                };
                if send != 0.0 {
                    sends.push(Charge { limit: limit.clone(), amount: send });
                }
            }
        }
        self.send(sends);
    }

    fn send(&self, charges: Vec<Charge>) {
        for charge in charges {
            if self.queue.try_send(charge).is_err() {
                self.errors.note("queueing a charge", &"the queue is full");
            }
        }
    }
}

/// Chunks unused for [`super::lease::HOLD_MS`] go back to Redis (not
/// across a calendar window: yesterday's chunk is not today's).
fn give_back(leases: &Mutex<Vec<Lease>>, batch: &mut Vec<Charge>) {
    let now = unix_ms_now() as f64;
    let at = OffsetDateTime::now_utc();
    for lease in lock(leases).iter_mut() {
        let Some(limit) = lease.limit.clone() else { continue };
        let given = lease.expire(now).filter(|_| window_of(limit.window, at).0 == lease.window);
        if let Some(held) = given {
            batch.push(Charge { limit, amount: -held });
        } else if limit.window == Window::Concurrent && lease.held + lease.in_use > 0.0 {
            // Renew the replica's slots.
            batch.push(Charge { limit, amount: 0.0 });
        }
    }
}

/// Connect and load both scripts before the first request needs them (a
/// first admission that had to connect would outlast `store.timeout`).
async fn warm_up(mut conn: ConnectionManager) {
    for _ in 0..40 {
        let loaded = async {
            Script::new(ADMIT).load_async(&mut conn).await?;
            Script::new(CHARGE).load_async(&mut conn).await
        };
        match loaded.await {
            Ok(_) => return,
            Err(error) => tracing::debug!(%error, "the limit store is not reachable yet"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the admission script answered.
enum Granted {
    /// Nothing charged.
    Refused(Verdict),
    /// Per limit: its reading and what was granted (the need plus any chunk).
    Admitted(Vec<(Reading, f64)>),
}

/// The script's reply.
fn granted(limits: &[Arc<Limit>], reply: &[i64]) -> Option<Granted> {
    match reply {
        [0, index, retry_ms, ..] => {
            let index = usize::try_from(*index).ok()?.checked_sub(1)?;
            (index < limits.len()).then(|| {
                Granted::Refused(Verdict::Refused {
                    index,
                    retry_after: Duration::from_millis((*retry_ms).max(1) as u64),
                })
            })
        }
        [1, _, _, readings @ ..] if readings.len() == 3 * limits.len() => Some(Granted::Admitted(
            limits
                .iter()
                .zip(readings.chunks(3))
                .map(|(limit, r)| {
                    let reading = Reading {
                        limit: limit.amount,
                        remaining: r[0] as f64,
                        reset: Duration::from_millis(r[1].max(0) as u64),
                    };
                    (reading, r[2] as f64 / 1000.0)
                })
                .collect(),
        )),
        _ => None,
    }
}

fn key(prefix: &str, limit: &Limit, window: i64) -> String {
    match limit.window {
        Window::Day | Window::Month => format!("{prefix}{}:{window}", limit.key),
        Window::Minute | Window::Concurrent => format!("{prefix}{}", limit.key),
    }
}

/// The background task: send queued charges, a batch per script call.
async fn flush(
    mut conn: ConnectionManager,
    mut rx: tokio::sync::mpsc::Receiver<Charge>,
    prefix: Arc<str>,
    replica: Arc<str>,
    errors: Failures,
    leases: Arc<Mutex<Vec<Lease>>>,
) {
    let script = Script::new(CHARGE);
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
            _ = tick.tick() => give_back(&leases, &mut batch),
        }
        if batch.is_empty() {
            continue;
        }
        let at = OffsetDateTime::now_utc();
        let mut call = script.prepare_invoke();
        call.arg(&*replica).arg(LEASE.as_millis() as u64);
        for charge in batch.drain(..) {
            let limit = &charge.limit;
            let (window, left) = window_of(limit.window, at);
            call.key(key(&prefix, limit, window));
            match limit.window {
                Window::Minute => call.arg("m").arg(limit.rate() / 1000.0).arg(charge.amount),
                Window::Day | Window::Month => call.arg("w").arg(left).arg(charge.amount),
                Window::Concurrent => call.arg("c").arg(0).arg(charge.amount.round() as i64),
            };
        }
        match tokio::time::timeout(Duration::from_secs(1), call.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => errors.note("a charge", &e),
            Err(_) => errors.note("a charge", &"no answer within 1s"),
        }
    }
}
