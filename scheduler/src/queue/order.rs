//! The order jobs leave a model's queue in.
//!
//! `Global` is one heap (FIFO by arrival, or priority level then arrival).
//! `Fair` is the deadline policy's structure: a heap per tenant ordered by
//! weighted slack, deficit round robin between tenants so a flooding tenant
//! cannot starve the others, and a separate best-effort tier that runs only
//! when no deadline work is waiting (best effort never displaces deadline
//! work). Heaps delete lazily: an id whose job has left is skipped when it
//! surfaces.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::fxhash::FxHashMap;
use crate::JobId;

/// Sort key: lower runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// 0 = deadline work (or every job, outside the deadline policy), 1 = best effort.
    pub tier: u8,
    /// Virtual due time in nanoseconds since the scheduler's epoch.
    pub due: u64,
    /// Arrival sequence, for ties.
    pub seq: u64,
}

type Heap = BinaryHeap<Reverse<(Key, JobId)>>;

/// One tenant's deadline work.
#[derive(Debug)]
pub struct Bucket {
    pub weight: f64,
    heap: Heap,
    /// Live jobs and their summed service estimate (seconds).
    pub jobs: usize,
    pub work: f64,
    deficit: f64,
    /// Recently admitted work per second, as of `seen` (seconds since the epoch).
    rate: f64,
    seen: f64,
}

/// Time constant of a tenant's arrival-rate estimate, in seconds.
const RATE_WINDOW: f64 = 2.0;

impl Bucket {
    /// Worker-seconds of work admitted per second lately, decayed to `now`
    /// (seconds since the epoch): an exponentially weighted moving rate.
    pub fn rate(&self, now: f64) -> f64 {
        self.rate * (-(now - self.seen).max(0.0) / RATE_WINDOW).exp()
    }

    /// Count `work` admitted at `now`.
    pub fn arrived(&mut self, work: f64, now: f64) {
        self.rate = self.rate(now) + work / RATE_WINDOW;
        self.seen = self.seen.max(now);
    }
}

/// The deadline policy's fair structure.
#[derive(Debug, Default)]
pub struct Fair {
    pub buckets: Vec<Bucket>,
    index: FxHashMap<Arc<str>, usize>,
    best_effort: Heap,
    quantum: f64,
}

/// Where a queued job sits in the order structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Global,
    Bucket(usize),
    BestEffort,
}

/// The order structure of a policy.
#[derive(Debug)]
pub enum Order {
    Global(Heap),
    Fair(Fair),
}

impl Order {
    pub fn global() -> Order {
        Order::Global(Heap::new())
    }

    pub fn fair(quantum_secs: f64) -> Order {
        Order::Fair(Fair { quantum: quantum_secs.max(1e-6), ..Fair::default() })
    }

    /// Where a job of this tenant and tier goes (creating the tenant's bucket).
    pub fn place(&mut self, tenant: &Arc<str>, weight: f64, tier: u8) -> Place {
        match self {
            Order::Global(_) => Place::Global,
            Order::Fair(_) if tier > 0 => Place::BestEffort,
            Order::Fair(fair) => Place::Bucket(fair.bucket(tenant, weight)),
        }
    }

    /// Add a job that is (again) waiting.
    pub fn push(&mut self, place: Place, key: Key, id: JobId) {
        match (self, place) {
            (Order::Global(heap), _) => heap.push(Reverse((key, id))),
            (Order::Fair(fair), Place::BestEffort) => fair.best_effort.push(Reverse((key, id))),
            (Order::Fair(fair), Place::Bucket(b)) => fair.buckets[b].heap.push(Reverse((key, id))),
            (Order::Fair(_), Place::Global) => {}
        }
    }

    /// Take the next job in order; `live` tells which ids are still queued
    /// and their service estimate. Returns the id and where it came from.
    pub fn pop(&mut self, live: impl Fn(JobId) -> Option<f64>) -> Option<(JobId, Place)> {
        match self {
            Order::Global(heap) => pop_live(heap, &live).map(|(_, id)| (id, Place::Global)),
            Order::Fair(fair) => fair.pop(&live),
        }
    }

    /// Undo a `pop` (the batch is not dispatched yet): back in line, deficit refunded.
    pub fn unpop(&mut self, place: Place, key: Key, id: JobId, estimate: f64) {
        if let (Order::Fair(fair), Place::Bucket(b)) = (&mut *self, place) {
            fair.buckets[b].deficit += estimate;
        }
        self.push(place, key, id);
    }
}

/// Drop dead entries from the top of a heap, then pop the live head.
fn pop_live(heap: &mut Heap, live: &impl Fn(JobId) -> Option<f64>) -> Option<(Key, JobId)> {
    peek_live(heap, live)?;
    heap.pop().map(|Reverse(entry)| entry)
}

fn peek_live(heap: &mut Heap, live: &impl Fn(JobId) -> Option<f64>) -> Option<(Key, JobId)> {
    while let Some(Reverse((key, id))) = heap.peek().copied() {
        if live(id).is_some() {
            return Some((key, id));
        }
        heap.pop();
    }
    None
}

impl Fair {
    fn bucket(&mut self, tenant: &Arc<str>, weight: f64) -> usize {
        if let Some(&i) = self.index.get(tenant) {
            return i;
        }
        self.buckets.push(Bucket {
            weight,
            heap: Heap::new(),
            jobs: 0,
            work: 0.0,
            deficit: 0.0,
            rate: 0.0,
            seen: 0.0,
        });
        self.index.insert(tenant.clone(), self.buckets.len() - 1);
        self.buckets.len() - 1
    }

    /// Deficit round robin over tenants with deadline work, most urgent head
    /// among those with credit; then best effort.
    fn pop(&mut self, live: &impl Fn(JobId) -> Option<f64>) -> Option<(JobId, Place)> {
        for _ in 0..2 {
            let mut best: Option<(Key, usize)> = None;
            let mut backlogged = false;
            for (i, bucket) in self.buckets.iter_mut().enumerate() {
                let Some((key, _)) = peek_live(&mut bucket.heap, live) else { continue };
                backlogged = true;
                if bucket.deficit > 0.0 && best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, i));
                }
            }
            if !backlogged {
                break;
            }
            if let Some((_, i)) = best {
                let bucket = &mut self.buckets[i];
                let (_, id) = pop_live(&mut bucket.heap, live)?;
                bucket.deficit -= live(id).unwrap_or(0.0);
                return Some((id, Place::Bucket(i)));
            }
            self.replenish(live);
        }
        pop_live(&mut self.best_effort, live).map(|(_, id)| (id, Place::BestEffort))
    }

    /// Give every backlogged tenant as many quanta (times its weight) as it
    /// takes for one of them to have credit again.
    fn replenish(&mut self, live: &impl Fn(JobId) -> Option<f64>) {
        let quantum = self.quantum;
        let rounds = self
            .buckets
            .iter_mut()
            .filter_map(|b| {
                peek_live(&mut b.heap, live).map(|_| ((-b.deficit) / (quantum * b.weight)).floor() + 1.0)
            })
            .fold(f64::INFINITY, f64::min);
        if !rounds.is_finite() {
            return;
        }
        for bucket in &mut self.buckets {
            if peek_live(&mut bucket.heap, live).is_some() {
                bucket.deficit += rounds * quantum * bucket.weight;
            }
        }
    }

    /// A job left the tenant's bucket for good (dispatched or dropped).
    pub fn forget(&mut self, bucket: usize, estimate: f64) {
        let b = &mut self.buckets[bucket];
        b.jobs = b.jobs.saturating_sub(1);
        b.work = (b.work - estimate).max(0.0);
        if b.jobs == 0 {
            // Classic DRR: an idle tenant does not bank credit.
            b.deficit = 0.0;
            b.work = 0.0;
        }
    }
}
