//! Tenants as the front door sees them: which models each may use, its
//! limits (rates, quotas, concurrency) kept in a [`Store`], and its usage,
//! metered by tenant and model.
//!
//! A request is admitted once, when its call opens ([`admit`]): the
//! allow-list first (a model the tenant may not use answers 404 as if
//! absent), then every limit of the tenant and of the tenant on that model
//! in one atomic step. Request limits charge one request there; token,
//! character and audio limits admit while some allowance is left, are
//! charged the request's estimate when its job is priced, and corrected
//! from the answer's usage when it ends ([`Ticket`]). A refusal never
//! reaches the scheduler.

mod lease;
pub mod limit;
mod redis;
pub mod refusal;
pub mod reload;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use infergate_otel::tenants::{TenantMetrics, TenantSeries};
use prometheus_client::metrics::counter::Counter;

pub use self::limit::{Limit, Meter, Reading, Window};
pub use self::refusal::{HeaderSlot, RateHeaders, Refusal};
pub use self::store::{Store, Verdict};
use crate::config::{Config, OnStoreError, RateLimits, TenantConfig};
use crate::error::ApiError;

/// One tenant's allow-list, limits and usage series, built from config
/// (and rebuilt on reload).
#[derive(Debug)]
pub struct TenantPolicy {
    pub name: Arc<str>,
    /// The models it may use; `None`: all.
    allowed: Option<HashSet<String>>,
    /// Per served model.
    scopes: HashMap<String, Arc<Scope>>,
    /// The tenant-wide `characters_per_month`, for `/v2/usage`.
    pub characters_per_month: Option<Arc<Limit>>,
    /// Whether any limit is set (else no answer carries rate-limit headers).
    pub limited: bool,
    /// Inputs and outputs may be recorded (`capture_content`).
    pub capture_content: bool,
}

/// What applies to a tenant on one model.
#[derive(Debug)]
pub struct Scope {
    /// The tenant's limits, then its limits on this model.
    limits: Arc<[Arc<Limit>]>,
    /// Refusals per limit, in the same order.
    limited: Vec<Counter>,
    pub series: TenantSeries,
}

impl TenantPolicy {
    /// Build `tenant`'s policy over the models `config` serves.
    /// `store` gives each limit its place (kept across reloads by key).
    pub fn new(
        tenant: &TenantConfig,
        config: &Config,
        metrics: &TenantMetrics,
        store: &Store,
    ) -> TenantPolicy {
        let name: Arc<str> = Arc::from(tenant.name.as_str());
        let own = limits(&tenant.name, None, &tenant.rate_limits, store);
        let scopes: HashMap<String, Arc<Scope>> = config
            .models
            .iter()
            .map(|model| {
                let mut all = own.clone();
                if let Some(rates) = tenant.model_rate_limits.get(&model.name) {
                    all.extend(limits(&tenant.name, Some(&model.name), rates, store));
                }
                let limited = all.iter().map(|l| metrics.limited(&tenant.name, l.name)).collect();
                let scope =
                    Scope { limits: all.into(), limited, series: metrics.series(&tenant.name, &model.name) };
                (model.name.clone(), Arc::new(scope))
            })
            .collect();
        let characters_per_month =
            own.iter().find(|l| l.meter == Meter::Characters && l.window == Window::Month).cloned();
        let limited = scopes.values().any(|s: &Arc<Scope>| !s.limits.is_empty());
        TenantPolicy {
            limited,
            capture_content: tenant.capture_content,
            name,
            allowed: tenant.models.as_ref().map(|m| m.iter().cloned().collect()),
            scopes,
            characters_per_month,
        }
    }

    /// Whether the tenant may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.allowed.as_ref().is_none_or(|allowed| allowed.contains(model))
    }
}

impl PartialEq for TenantPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TenantPolicy {}

/// The limits one `rate_limits` table sets, keyed `tenant[/model]/name`.
fn limits(tenant: &str, model: Option<&str>, rates: &RateLimits, store: &Store) -> Vec<Arc<Limit>> {
    let burst = rates.burst.unwrap_or(Duration::from_secs(60)).as_secs_f64() / 60.0;
    let scope = match model {
        Some(model) => format!("{tenant}/{model}"),
        None => tenant.to_owned(),
    };
    rates
        .named()
        .map(|(name, amount)| {
            let (meter, window) = match name {
                "requests_per_minute" => (Meter::Requests, Window::Minute),
                "requests_per_day" => (Meter::Requests, Window::Day),
                "tokens_per_minute" => (Meter::Tokens, Window::Minute),
                "tokens_per_day" => (Meter::Tokens, Window::Day),
                "characters_per_month" => (Meter::Characters, Window::Month),
                "audio_seconds_per_minute" => (Meter::AudioSeconds, Window::Minute),
                "audio_seconds_per_day" => (Meter::AudioSeconds, Window::Day),
                _ => (Meter::Requests, Window::Concurrent),
            };
            let header = HeaderValue::from(amount);
            let key: Arc<str> = Arc::from(format!("{scope}/{name}"));
            let amount = amount as f64;
            let capacity = if window == Window::Minute { (amount * burst).max(1.0) } else { amount };
            Arc::new(Limit {
                header,
                name,
                meter,
                window,
                amount,
                capacity,
                slot: store.slot(&key),
                key,
                tenant_wide: model.is_none(),
            })
        })
        .collect()
}

/// Admit a request of `policy`'s tenant on `model` that will use `meters`
/// (limits of other meters do not apply: a characters quota does not stop
/// embeddings): see the module docs.
pub async fn admit(
    store: &Arc<Store>,
    policy: &TenantPolicy,
    model: &str,
    meters: &[Meter],
) -> Result<Ticket, ApiError> {
    if !policy.allows(model) {
        return Err(ApiError::ModelNotFound { model: model.to_owned() });
    }
    let Some(scope) = policy.scopes.get(model) else { return Ok(Ticket::unmetered()) };
    let applies = |l: &Arc<Limit>| l.meter == Meter::Requests || meters.contains(&l.meter);
    // Most requests meet all their scope's limits: no copy then.
    let limits: Arc<[Arc<Limit>]> = if scope.limits.iter().all(applies) {
        scope.limits.clone()
    } else {
        scope.limits.iter().filter(|l| applies(l)).cloned().collect()
    };
    if limits.is_empty() {
        return Ok(Ticket::new(None, scope.clone(), limits, None));
    }
    match store.admit(&limits).await {
        Ok(Verdict::Admitted(readings)) => {
            let headers = RateHeaders::of(&limits, &readings);
            Ok(Ticket::new(Some(store.clone()), scope.clone(), limits, Some(headers)))
        }
        Ok(Verdict::Refused { index, retry_after }) => {
            let limit = &limits[index];
            if let Some(i) = scope.limits.iter().position(|l| Arc::ptr_eq(l, limit)) {
                scope.limited[i].inc();
            }
            let quota = matches!(limit.window, Window::Day | Window::Month);
            if quota { &scope.series.quota_exceeded } else { &scope.series.rate_limited }.inc();
            let headers = RateHeaders::refused(limit, retry_after);
            Err(ApiError::RateLimited(Arc::new(Refusal {
                limit: limit.clone(),
                retry_after,
                quota,
                headers,
            })))
        }
        Err(_) => match store.on_error() {
            // Served without limits this time (the failure is counted and logged).
            OnStoreError::Allow => Ok(Ticket::new(None, scope.clone(), Arc::from([]), None)),
            OnStoreError::Deny => Err(ApiError::StoreUnavailable),
        },
    }
}

/// An admitted request's hold on its limits and its usage meter: later
/// charges go through it, and when the last clone drops its concurrency
/// slots are freed and its outcome counted.
#[derive(Clone)]
pub struct Ticket(Arc<TicketInner>);

struct TicketInner {
    store: Option<Arc<Store>>,
    scope: Option<Arc<Scope>>,
    limits: Arc<[Arc<Limit>]>,
    headers: Option<RateHeaders>,
    state: Mutex<TicketState>,
}

#[derive(Default)]
struct TicketState {
    /// Charged so far per meter (indexed by `Meter as usize`).
    charged: [f64; 4],
    answered: bool,
    /// Answered from the response cache or by a coalesced job.
    cached: bool,
}

fn meter_index(meter: Meter) -> usize {
    meter as usize
}

impl Ticket {
    fn new(
        store: Option<Arc<Store>>,
        scope: Arc<Scope>,
        limits: Arc<[Arc<Limit>]>,
        headers: Option<RateHeaders>,
    ) -> Ticket {
        Ticket(Arc::new(TicketInner { store, scope: Some(scope), limits, headers, state: Mutex::default() }))
    }

    /// A request no tenant policy covers (unit tests, internal calls).
    pub fn unmetered() -> Ticket {
        Ticket(Arc::new(TicketInner {
            store: None,
            scope: None,
            limits: Arc::from([]),
            headers: None,
            state: Mutex::default(),
        }))
    }

    /// The headers admission left for the answer (taken once, before the
    /// ticket is shared).
    pub fn take_headers(&mut self) -> Option<RateHeaders> {
        Arc::get_mut(&mut self.0).and_then(|t| t.headers.take())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TicketState> {
        self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Charge `amount` of `meter` more (an estimate, or an amount now
    /// known); characters and audio are metered here.
    pub fn charge(&self, meter: Meter, amount: f64) {
        if amount == 0.0 {
            return;
        }
        self.lock().charged[meter_index(meter)] += amount;
        if let Some(scope) = &self.0.scope {
            match meter {
                Meter::Characters => {
                    scope.series.characters.inc_by(amount.max(0.0) as u64);
                }
                Meter::AudioSeconds => {
                    scope.series.audio_seconds.inc_by(amount.max(0.0));
                }
                Meter::Requests | Meter::Tokens => {}
            }
        }
        self.apply(meter, amount);
    }

    /// The answer is complete; `tokens` (input, output) correct the
    /// estimate and are metered.
    pub fn answered(&self, tokens: Option<(u32, u32)>) {
        let delta = {
            let mut state = self.lock();
            state.answered = true;
            tokens.map(|(input, output)| {
                let actual = f64::from(input) + f64::from(output);
                let index = meter_index(Meter::Tokens);
                let delta = actual - state.charged[index];
                state.charged[index] = actual;
                delta
            })
        };
        if let (Some((input, output)), Some(scope)) = (tokens, &self.0.scope) {
            scope.series.input_tokens.inc_by(u64::from(input));
            scope.series.output_tokens.inc_by(u64::from(output));
        }
        if let Some(delta) = delta {
            self.apply(Meter::Tokens, delta);
        }
    }

    /// The answer came from the response cache (or another request's job):
    /// it counts as a request, and what was charged as tokens is given back.
    pub fn served_from_cache(&self) {
        let refund = {
            let mut state = self.lock();
            state.cached = true;
            std::mem::take(&mut state.charged[meter_index(Meter::Tokens)])
        };
        if refund != 0.0 {
            self.apply(Meter::Tokens, -refund);
        }
    }

    fn apply(&self, meter: Meter, amount: f64) {
        if let Some(store) = &self.0.store {
            let pick = |l: &Limit| l.meter == meter && l.window != Window::Concurrent;
            store.charge(&self.0.limits, pick, amount);
        }
    }
}

impl Drop for TicketInner {
    fn drop(&mut self) {
        let (answered, cached) = self.state.get_mut().map(|s| (s.answered, s.cached)).unwrap_or_default();
        if let Some(scope) = &self.scope {
            match (answered, cached) {
                (true, true) => &scope.series.ok_cached,
                (true, false) => &scope.series.ok,
                (false, _) => &scope.series.error,
            }
            .inc();
        }
        if let Some(store) = &self.store {
            if self.limits.iter().any(|l| l.window == Window::Concurrent) {
                store.charge(&self.limits, |l| l.window == Window::Concurrent, -1.0);
            }
        }
    }
}
