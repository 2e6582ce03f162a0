//! `infergate-load`: load generator for infergate. A closed-loop runner (fixed concurrency)
//! and an open-loop one (arrivals on a schedule, latency from the intended send time);
//! capacity search and autoscaler tuning will sit beside them and share the request,
//! statistics and report modules.

pub mod batching;
pub mod capacity;
pub mod cli;
pub mod histogram;
pub mod html;
pub mod open;
pub mod progress;
pub mod report;
pub mod request;
pub mod run;
pub mod scenario;
pub mod scrape;
pub mod tune;
