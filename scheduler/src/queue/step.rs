//! Continuous batching: for token generation the running set is re-formed
//! at every decoding step. The runner owns the running set (and the model's
//! KV cache); at each step it asks which queued jobs join, within the room
//! it has, and reports each step's timing so the latency model keeps up.

use std::time::{Duration, Instant};

use super::{ModelScheduler, StepAdmission, StepBudget};
use crate::{Decision, Queued};

impl<P: Queued> ModelScheduler<P> {
    /// Choose the queued jobs that join the running set now, in the policy's
    /// order. A job that does not fit the remaining budget stays queued and
    /// ends the admission (no overtaking, so big jobs are not starved).
    pub fn admit_step(&mut self, now: Instant, budget: StepBudget) -> StepAdmission<P> {
        let mut dropped = Vec::new();
        self.sweep_expired(now, &mut dropped);
        let mut admitted = Vec::new();
        let mut room = budget;
        let step_id = self.next_batch;
        while room.slots > 0 {
            let Some(m) = self.take() else { break };
            if !self.still_runnable(m.id, now, &mut dropped) {
                continue;
            }
            let Some(slot) = self.slots.get(&m.id) else { continue };
            let job = &slot.job;
            let first = self.first.predict(job.first_cost, 1);
            if job.cost > room.tokens {
                self.order.unpop(m.place, m.key, m.id, m.estimate);
                break;
            }
            room.slots -= 1;
            room.tokens -= job.cost;
            if let Some(slot) = self.remove(m.id) {
                let decision = Decision {
                    queue_wait: slot.job.waited(now),
                    slack: slot.job.deadline.map(|d| d.saturating_duration_since(now + first).as_secs_f64()),
                    position: slot.position,
                    batch_id: step_id,
                    batch_size: 0,
                };
                admitted.push((slot.job, decision));
            }
        }
        let size = admitted.len();
        admitted.iter_mut().for_each(|(_, d)| d.batch_size = size);
        if size > 0 {
            self.next_batch += 1;
            self.counters.dispatched += size as u64;
        }
        StepAdmission { admitted, dropped }
    }

    /// Learn from one decoding step: `tokens` processed for `sequences` in `elapsed`.
    pub fn observe_step(&mut self, tokens: f64, sequences: usize, elapsed: Duration) {
        self.occupancy.observe(tokens, sequences, elapsed);
    }
}
