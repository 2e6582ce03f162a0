//! One model job shared by every identical request in flight at once.
//!
//! The job runs in a task of its own, so that any of its waiters may leave
//! without stopping it for the others; it records the job's dispatch and
//! every event, and each waiter reads them from the start. The waiters
//! hold the [`Flight`]; when the last one leaves, the task is aborted,
//! which drops the job's [`Running`](crate::runner::Running) and so cancels
//! the job, as a lone client leaving does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use infergate_backends::{Event, Request};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Entry, Key, ModelCache};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::runner::{Cost, DispatchInfo, ModelHandle};

/// Flights in the air, by key and whether they stream; each with its id,
/// so that only the flight itself takes its entry out.
pub(super) type Flights = Mutex<HashMap<(Key, bool), (u64, Weak<Flight>), super::key::KeyHash>>;

/// A job's progress as its waiters see it.
#[derive(Default)]
struct Progress {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    dispatch: Option<Result<DispatchInfo, ApiError>>,
    /// The job's events so far, the last one terminal once it ended.
    events: Vec<Result<Event, ApiError>>,
}

impl Progress {
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    /// Wait until `read` finds what it looks for.
    async fn wait<T>(&self, read: impl Fn(&State) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = read(&self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)) {
                return found;
            }
            notified.await;
        }
    }
}

/// The shared job; see the module docs.
pub struct Flight {
    progress: Arc<Progress>,
    /// When the job is due: a newcomer due sooner runs its own.
    pub(super) deadline: Option<Instant>,
    abort: AbortHandle,
    /// Where it is registered, if it is (`None`: a job of one request that
    /// only fills the cache).
    registered: Option<(Arc<ModelCache>, (Key, bool), u64)>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.abort.abort();
        if let Some((cache, key, id)) = self.registered.take() {
            cache.forget_flight(key, id);
        }
    }
}

/// Where a finished job's answer goes.
pub(super) struct Store {
    pub cache: Arc<ModelCache>,
    pub key: Key,
    /// Register the flight for identical requests to join.
    pub join: Option<(bool, u64)>,
    /// A look-up that missed this replica's memory: ask the shared tier
    /// before running the job, and count the result (`hit` or `miss`).
    pub lead: bool,
}

/// Start `request` as a job of its own task, its answer stored by `store`.
pub(super) fn launch(
    model: &Arc<ModelHandle>,
    ctx: &RequestContext,
    deadline: Option<Instant>,
    (request, cost): (Request, Cost),
    store: Store,
) -> Arc<Flight> {
    let progress = Arc::new(Progress::default());
    let registered = store.join.map(|(stream, id)| (store.cache.clone(), (store.key, stream), id));
    let task = tokio::spawn(
        fly(model.clone(), ctx.clone(), deadline, request, cost, progress.clone(), store)
            .instrument(tracing::Span::current()),
    );
    Arc::new(Flight { progress, deadline, abort: task.abort_handle(), registered })
}

/// Marks the job failed if its task ends without a terminal event (a panic
/// in the backend's code path), so that no waiter waits forever.
struct Unfinished(Arc<Progress>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        self.0.update(|state| {
            let ended = state.events.last().is_some_and(terminal) || matches!(state.dispatch, Some(Err(_)));
            if !ended {
                let error = ApiError::Internal { detail: "a shared job ended without a result".into() };
                state.dispatch.get_or_insert_with(|| Err(error.clone()));
                state.events.push(Err(error));
            }
        });
    }
}

fn terminal(event: &Result<Event, ApiError>) -> bool {
    !matches!(event, Ok(Event::Delta(_) | Event::Chunk(_)))
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
    let guard = Unfinished(progress.clone());
    let stream = matches!(&request, Request::Chat(chat) if chat.stream);
    if store.lead {
        if let Some(entry) = store.shared().await {
            progress.update(|state| {
                state.dispatch = Some(Ok(super::hit_dispatch()));
                state.events.extend(entry.replay().into_iter().map(Ok));
            });
            store.done();
            return;
        }
        store.cache.count(super::CacheStatus::Miss);
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
        let end = terminal(&event);
        progress.update(|state| state.events.push(event));
        if end {
            break;
        }
    }
    store.done();
    drop(guard);
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
        self.cache.count(super::CacheStatus::Hit);
        Some(entry)
    }

    /// The job ended: newcomers no longer join it.
    fn done(&self) {
        if let Some((stream, id)) = self.join {
            self.cache.forget_flight((self.key, stream), id);
        }
    }
}

/// One waiter's view of a [`Flight`]: the dispatch, then the events in order.
pub struct FlightReader {
    flight: Arc<Flight>,
    next: usize,
}

impl FlightReader {
    pub(super) fn new(flight: Arc<Flight>) -> Self {
        FlightReader { flight, next: 0 }
    }

    /// How the shared job was dispatched, or why it was not.
    pub async fn dispatched(&self) -> Result<DispatchInfo, ApiError> {
        self.flight.progress.wait(|state| state.dispatch.clone()).await
    }

    /// The job's next event.
    pub async fn next(&mut self) -> Result<Event, ApiError> {
        let at = self.next;
        let event = self
            .flight
            .progress
            .wait(|state| match (&state.dispatch, state.events.get(at)) {
                (Some(Err(error)), _) => Some(Err(error.clone())),
                (_, Some(event)) => Some(event.clone()),
                _ => None,
            })
            .await;
        self.next += 1;
        event
    }
}
