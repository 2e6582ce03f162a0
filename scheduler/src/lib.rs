//! infergate's scheduler: queues, admission and batching as pure logic.
//!
//! Nothing here spawns, sleeps or does I/O. Callers pass the current time into
//! every operation and act on the decisions returned, which is what makes the
//! scheduler testable with a virtual clock and runnable inside a simulator.
//!
//! This first version is a plain FIFO batcher (max batch size, max delay,
//! bounded queue, expired and cancelled jobs dropped before they run); the
//! deadline-weighted scheduler replaces its ordering rules later.

mod class;
mod fifo;
mod job;

pub use class::{Class, ParseClassError};
pub use fifo::{Action, BatchPolicy, FifoQueue, Step};
pub use job::{Batch, DropReason, Dropped, Job, JobId, Queued, RejectReason, Rejected};
