//! The order jobs leave a model's queue in.
//!
//! `Global` is one heap (FIFO by arrival, or priority level then arrival).
//! `Fair` is the deadline policy's structure: a heap per tenant and class
//! ordered by weighted slack; between classes, the most urgent class with
//! work waiting runs first, except that a lower class is owed at least its
//! minimum share of the service (`class_min_share`) while it has work
//! waiting, so interactive work is protected up to its demand and the lower
//! classes are never starved; within a class, deficit round robin between
//! tenants so a flooding tenant cannot starve the others; and a separate
//! best-effort tier that runs only when no deadline work is waiting (best
//! effort never displaces deadline work). Heaps delete lazily: an id whose
//! job has left is skipped when it surfaces.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::fxhash::FxHashMap;
use crate::{Class, JobId};

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

/// One tenant's deadline work of one class.
#[derive(Debug)]
pub struct Bucket {
    pub weight: f64,
    /// Its class's index in [`Class::ALL`].
    pub class: usize,
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
    index: FxHashMap<(usize, Arc<str>), usize>,
    best_effort: Heap,
    quantum: f64,
    /// Per class (in [`Class::ALL`] order), the least share of the service
    /// it gets while it has work waiting (the most urgent class: 0, it
    /// needs none).
    pub min_share: [f64; 3],
    /// Per class, the service it is owed (worker-seconds): each dispatch
    /// adds its share of the dispatched work to every waiting class, and the
    /// class that is served pays for it.
    credit: [f64; 3],
}

/// The most credit a class may bank, in quanta: a class owed more than this
/// has had its turn delayed by a long batch, not starved.
const CREDIT_QUANTA: f64 = 4.0;

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

    /// `min_share`: per class, in [`Class::ALL`] order, the least share of
    /// the service it gets while it has work waiting.
    pub fn fair(quantum_secs: f64, min_share: [f64; 3]) -> Order {
        let min_share = min_share.map(|s| s.clamp(0.0, 1.0));
        Order::Fair(Fair { quantum: quantum_secs.max(1e-6), min_share, ..Fair::default() })
    }

    /// Where a job of this tenant, class and tier goes (creating the bucket).
    pub fn place(&mut self, tenant: &Arc<str>, class: Class, tier: u8) -> Place {
        match self {
            Order::Global(_) => Place::Global,
            Order::Fair(_) if tier > 0 => Place::BestEffort,
            Order::Fair(fair) => Place::Bucket(fair.bucket(tenant, class)),
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
            let class = fair.buckets[b].class;
            fair.credit[class] += estimate;
        }
        self.push(place, key, id);
    }
}

/// A class's index in [`Class::ALL`].
pub fn class_index(class: Class) -> usize {
    match class {
        Class::Interactive => 0,
        Class::Standard => 1,
        Class::Batch => 2,
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
    fn bucket(&mut self, tenant: &Arc<str>, class: Class) -> usize {
        let index = class_index(class);
        if let Some(&i) = self.index.get(&(index, tenant.clone())) {
            return i;
        }
        self.buckets.push(Bucket {
            weight: class.weight(),
            class: index,
            heap: Heap::new(),
            jobs: 0,
            work: 0.0,
            deficit: 0.0,
            rate: 0.0,
            seen: 0.0,
        });
        self.index.insert((index, tenant.clone()), self.buckets.len() - 1);
        self.buckets.len() - 1
    }

    /// The class to serve next: a waiting lower class that is owed service,
    /// else the most urgent class with work waiting.
    fn class(&mut self, live: &impl Fn(JobId) -> Option<f64>) -> Option<usize> {
        let mut waiting = [false; 3];
        for bucket in &mut self.buckets {
            if !waiting[bucket.class] && peek_live(&mut bucket.heap, live).is_some() {
                waiting[bucket.class] = true;
            }
        }
        for (class, credit) in self.credit.iter_mut().enumerate() {
            if !waiting[class] {
                // No banking while idle.
                *credit = 0.0;
            }
        }
        let owed = (1..3).filter(|&c| waiting[c] && self.min_share[c] > 0.0 && self.credit[c] > 0.0).max_by(
            |&a, &b| (self.credit[a] / self.min_share[a]).total_cmp(&(self.credit[b] / self.min_share[b])),
        );
        owed.or_else(|| (0..3).find(|&c| waiting[c]))
    }

    /// Served `work` from `class`: every waiting class is owed its share of
    /// it, and the served class pays.
    fn served(&mut self, class: usize, work: f64, live: &impl Fn(JobId) -> Option<f64>) {
        let mut waiting = [false; 3];
        for bucket in &mut self.buckets {
            if !waiting[bucket.class] && peek_live(&mut bucket.heap, live).is_some() {
                waiting[bucket.class] = true;
            }
        }
        waiting[class] = true;
        let cap = CREDIT_QUANTA * self.quantum;
        let owed = self.credit.iter_mut().zip(self.min_share).zip(waiting).skip(1);
        for ((credit, share), waits) in owed {
            if waits {
                *credit = (*credit + share * work).min(cap);
            }
        }
        self.credit[class] -= work;
    }

    /// The class's most urgent head among its tenants with credit (deficit
    /// round robin between them); then best effort.
    fn pop(&mut self, live: &impl Fn(JobId) -> Option<f64>) -> Option<(JobId, Place)> {
        if let Some(class) = self.class(live) {
            for _ in 0..2 {
                let mut best: Option<(Key, usize)> = None;
                for (i, bucket) in self.buckets.iter_mut().enumerate().filter(|(_, b)| b.class == class) {
                    let Some((key, _)) = peek_live(&mut bucket.heap, live) else { continue };
                    if bucket.deficit > 0.0 && best.is_none_or(|(k, _)| key < k) {
                        best = Some((key, i));
                    }
                }
                if let Some((_, i)) = best {
                    let bucket = &mut self.buckets[i];
                    let (_, id) = pop_live(&mut bucket.heap, live)?;
                    let estimate = live(id).unwrap_or(0.0);
                    bucket.deficit -= estimate;
                    self.served(class, estimate, live);
                    return Some((id, Place::Bucket(i)));
                }
                self.replenish(class, live);
            }
        }
        pop_live(&mut self.best_effort, live).map(|(_, id)| (id, Place::BestEffort))
    }

    /// Give every backlogged tenant of `class` as many quanta (times its
    /// weight) as it takes for one of them to have credit again.
    fn replenish(&mut self, class: usize, live: &impl Fn(JobId) -> Option<f64>) {
        let quantum = self.quantum;
        let rounds = self
            .buckets
            .iter_mut()
            .filter(|b| b.class == class)
            .filter_map(|b| {
                peek_live(&mut b.heap, live).map(|_| ((-b.deficit) / (quantum * b.weight)).floor() + 1.0)
            })
            .fold(f64::INFINITY, f64::min);
        if !rounds.is_finite() {
            return;
        }
        for bucket in self.buckets.iter_mut().filter(|b| b.class == class) {
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
