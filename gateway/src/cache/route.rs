//! A job's way through the cache: answered from it, joined to the identical
//! job in flight, or started in a task of its own whose answer is stored.

use std::sync::Arc;

use infergate_backends::{Event, Output, Request};
use tokio::time::Instant;

use super::entry::Entry;
use super::flight::{self, Flight, FlightReader, Progress};
use super::key::Key;
use super::model::ModelCache;
use super::status::{CacheControl, CacheStatus, Tally};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::runner::{Cost, DispatchInfo, ModelHandle};

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
pub(super) fn joinable(newcomer: Option<Instant>, job: Option<Instant>) -> bool {
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
                Route::Flight(FlightReader::new(launch(model, ctx, deadline, prepared, store))),
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
    let mut flights = cache.flights.lock();
    let current = flights.get(&(key, stream)).and_then(|(_, f)| f.upgrade());
    let (status, flight, stale) = match current {
        Some(flight) if joinable(deadline, flight.deadline) => (CacheStatus::Coalesced, flight, None),
        // Due sooner than the job in flight: a job of its own, which stores
        // its answer but is not joined.
        Some(other) => {
            let store = Store { cache: cache.clone(), key, join: None, lead: true };
            (CacheStatus::Miss, launch(model, ctx, deadline, prepared, store), Some(other))
        }
        None => match cache.entries.get(&key) {
            Some(entry) => {
                drop(flights);
                return (CacheStatus::Hit, Route::Hit(entry));
            }
            None => {
                let id = cache.flights.next_id();
                let store = Store { cache: cache.clone(), key, join: Some((stream, id)), lead: true };
                let flight = launch(model, ctx, deadline, prepared, store);
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

/// Where a finished job's answer goes.
struct Store {
    pub cache: Arc<ModelCache>,
    pub key: Key,
    /// Register the flight for identical requests to join.
    pub join: Option<(bool, u64)>,
    /// A look-up that missed this replica's memory: ask the shared tier
    /// before running the job, and count the result (`hit` or `miss`).
    pub lead: bool,
}

/// Start `request` as a job of its own task, its answer stored by `store`.
fn launch(
    model: &Arc<ModelHandle>,
    ctx: &RequestContext,
    deadline: Option<Instant>,
    (request, cost): (Request, Cost),
    store: Store,
) -> Arc<Flight> {
    let registered = store.join.map(|(stream, id)| (store.cache.flights.clone(), (store.key, stream), id));
    let (model, ctx) = (model.clone(), ctx.clone());
    flight::spawn(deadline, registered, move |progress| {
        fly(model, ctx, deadline, request, cost, progress, store)
    })
}

/// The job's task: submit, relay every event, store the answer.
async fn fly(
    model: Arc<ModelHandle>,
    ctx: RequestContext,
    deadline: Option<Instant>,
    request: Request,
    cost: Cost,
    progress: Arc<Progress>,
    store: Store,
) {
    let stream = matches!(&request, Request::Chat(chat) if chat.stream);
    if store.lead {
        if let Some(entry) = store.shared().await {
            progress.update(|state| {
                state.dispatch = Some(Ok(hit_dispatch()));
                state.events.extend(entry.replay().into_iter().map(Ok));
            });
            store.done();
            return;
        }
        store.cache.count(CacheStatus::Miss);
    }
    let mut running = match model.submit(&ctx, deadline, request, cost).await {
        Ok(running) => running,
        Err(error) => {
            progress.update(|state| state.dispatch = Some(Err(error)));
            store.done();
            return;
        }
    };
    progress.update(|state| state.dispatch = Some(Ok(running.dispatch)));
    let mut deltas = Vec::new();
    let mut relayed = false;
    let mut stored = None;
    loop {
        let event = running.next_by(deadline).await;
        match &event {
            Ok(Event::Delta(text)) => deltas.push(text.clone()),
            Ok(Event::Chunk(_)) => relayed = true,
            // Stored before the waiters hear of it: a newcomer from now on
            // finds the answer in the cache.
            Ok(Event::Done(output)) if !relayed => {
                let deltas = stream.then(|| Arc::from(std::mem::take(&mut deltas)));
                let entry = Entry::new(output.clone(), deltas);
                store.cache.insert(store.key, entry.clone());
                stored = Some(entry);
            }
            _ => {}
        }
        let end = flight::terminal(&event);
        progress.update(|state| state.events.push(event));
        if end {
            break;
        }
    }
    store.done();
    // In a task of its own: this one is aborted when its last waiter
    // leaves, which may be as soon as the answer is out.
    if let (Some(entry), true) = (stored, store.cache.tier.is_some()) {
        let (cache, key) = (store.cache.clone(), store.key);
        tokio::spawn(async move {
            if let Some(tier) = &cache.tier {
                tier.put(&key, &entry).await;
            }
        });
    }
}

impl Store {
    /// The answer from the shared tier, kept in memory too.
    async fn shared(&self) -> Option<Arc<Entry>> {
        let entry = self.cache.tier.as_ref()?.get(&self.key).await?;
        self.cache.insert(self.key, entry.clone());
        self.cache.count(CacheStatus::Hit);
        Some(entry)
    }

    /// The job ended: newcomers no longer join it.
    fn done(&self) {
        if let Some((stream, id)) = self.join {
            self.cache.flights.forget((self.key, stream), id);
        }
    }
}
