//! One model job shared by every identical request in flight at once.
//!
//! The job runs in a task of its own, so that any of its waiters may leave
//! without stopping it for the others; it records the job's dispatch and
//! every event, and each waiter reads them from the start. The waiters
//! hold the [`Flight`]; when the last one leaves, the task is aborted,
//! which drops the job's [`Running`](crate::runner::Running) and so cancels
//! the job, as a lone client leaving does.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use infergate_backends::Event;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::key::{Key, KeyHash};
use crate::error::ApiError;
use crate::runner::DispatchInfo;

/// Where a flight is registered: by key and whether it streams.
pub(super) type Slot = (Key, bool);

/// Flights in the air, each with its id, so that only the flight itself
/// takes its entry out.
#[derive(Default)]
pub(super) struct Flights {
    map: Mutex<HashMap<Slot, (u64, Weak<Flight>), KeyHash>>,
    next: AtomicU64,
}

impl Flights {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<Slot, (u64, Weak<Flight>), KeyHash>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An id for a flight about to be registered.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Take flight `id` out of `slot`, if it is still the one there.
    pub fn forget(&self, slot: Slot, id: u64) {
        let mut map = self.lock();
        if map.get(&slot).is_some_and(|(at, _)| *at == id) {
            map.remove(&slot);
        }
    }
}

/// A job's progress as its waiters see it.
#[derive(Default)]
pub(super) struct Progress {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
pub(super) struct State {
    pub dispatch: Option<Result<DispatchInfo, ApiError>>,
    /// The job's events so far, the last one terminal once it ended.
    pub events: Vec<Result<Event, ApiError>>,
}

impl Progress {
    pub fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    /// Wait until `read` finds what it looks for.
    async fn wait<T>(&self, read: impl Fn(&State) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = read(&self.state.lock().unwrap_or_else(PoisonError::into_inner)) {
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
    registered: Option<(Arc<Flights>, Slot, u64)>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.abort.abort();
        if let Some((flights, slot, id)) = self.registered.take() {
            flights.forget(slot, id);
        }
    }
}

/// Start `job` in a task of its own, recording into the progress it is
/// given; registered in `flights` under `slot` as `id` if `registered`.
pub(super) fn spawn<F>(
    deadline: Option<Instant>,
    registered: Option<(Arc<Flights>, Slot, u64)>,
    job: impl FnOnce(Arc<Progress>) -> F,
) -> Arc<Flight>
where
    F: Future<Output = ()> + Send + 'static,
{
    let progress = Arc::new(Progress::default());
    let guard = Unfinished(progress.clone());
    let work = job(progress.clone());
    let task = tokio::spawn(
        async move {
            work.await;
            drop(guard);
        }
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

pub(super) fn terminal(event: &Result<Event, ApiError>) -> bool {
    !matches!(event, Ok(Event::Delta(_) | Event::Chunk(_)))
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
