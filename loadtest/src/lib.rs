//! `infergate-load`: load generator for infergate. For now a closed-loop runner; open-loop
//! load, capacity search and autoscaler tuning will sit beside it and share the request,
//! statistics and report modules.

pub mod cli;
pub mod histogram;
pub mod report;
pub mod request;
pub mod run;
