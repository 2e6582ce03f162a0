//! infergate's scheduler: admission, ordering and batching as pure logic.
//!
//! Nothing here spawns, sleeps or does I/O. Callers pass the current time into
//! every operation and act on the decisions returned, which is what makes the
//! scheduler testable with a virtual clock and runnable inside the
//! discrete-event simulator ([`sim`]).
//!
//! One [`ModelScheduler`] per model. Its [`Policy`] is `Deadline` (weighted
//! earliest-deadline-first on slack with admission control, deficit round
//! robin across tenants and slack-aware batching), or the baselines `Fifo`
//! and `Priority`. Batches are formed whole ([`ModelScheduler::poll`]) or,
//! for token generation, re-formed at every decoding step
//! ([`ModelScheduler::admit_step`]). A latency model per scheduler learns
//! each batch's time from the measurements the caller reports back.

mod class;
mod error;
mod job;
mod latency;
mod policy;
mod queue;
pub mod sim;

pub use class::Class;
pub use error::ParseError;
pub use job::{Batch, Decision, DropReason, Dropped, Job, JobId, Queued, RejectReason, Rejected};
pub use latency::{LatencyModel, LatencySeed};
pub use policy::{Policy, QueueLimits, SchedulerConfig};
pub use queue::{Action, Admitted, Counters, Measured, ModelScheduler, Step, StepAdmission, StepBudget};
