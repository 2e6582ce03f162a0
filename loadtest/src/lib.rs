//! `infergate-load`: load generator for infergate. It drives a target four ways, sharing the
//! request, statistics and report modules:
//!
//! - `run`: a closed loop (fixed concurrency), or an open loop (arrivals on a
//!   schedule — constant, Poisson, Gamma, shaped over time or replayed from a trace —
//!   with latency from the intended send time), from one request or a scenario file's
//!   weighted mix;
//! - `capacity`: the highest open-loop rate that still meets an SLO, by doubling and
//!   bisection, optionally recording the gateway's batching at every step;
//! - `tune`: from a capacity report, autoscaler settings (an HPA and a KEDA ScaledObject)
//!   and, with batching recorded, scheduler batch settings chosen in infergate's own
//!   simulator.
//!
//! Reports print as markdown and write as JSON and HTML. The library exists for the binary
//! and the tests: everything else is private.

mod arrivals;
mod batching;
mod capacity;
mod cli;
mod histogram;
mod html;
mod merge;
mod open;
mod progress;
mod random;
mod report;
mod request;
mod run;
mod scenario;
mod scrape;
mod shard;
mod tls;
mod tune;

// What the binary and the tests name; the types these take and return are reachable
// through them.
pub use batching::{advise, to_toml};
pub use capacity::search;
pub use cli::{CapacityArgs, Cli, Command, MergeArgs, RunArgs, TuneArgs};
pub use html::{capacity_report, run_report};
pub use merge::merge;
pub use report::Report;
pub use request::ErrorKind;
pub use run::run;
pub use shard::Shard;
pub use tune::{derive, hpa, keda, parse_trace, replay, to_yaml, HPA_HEADER};
