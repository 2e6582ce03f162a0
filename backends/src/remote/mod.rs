//! Remote backends: models served by GPU servers that infergate fronts.
//!
//! `openai` forwards chat completions (JSON and SSE), embeddings and audio
//! transcriptions to OpenAI-compatible servers (vLLM, TGI, llama.cpp
//! server, ...); `kserve` forwards KServe v2 inference to Triton-compatible
//! servers. The gateway keeps the queue and the deadlines; each request
//! goes to one replica chosen by the replica set (`replicas.rs`), with the
//! deadline (`X-Request-Timeout`) and a `traceparent` from a CLIENT span,
//! and is retried on another replica only before the first response byte,
//! while the deadline and the retry budget allow.
//!
//! Files: `config.rs` (the settings), `discovery.rs` (fixed and `dns://`
//! endpoints), `replicas.rs` (choice, prefix affinity and health), `load.rs`
//! (the load gauges upstreams publish), `client.rs` (the backend:
//! request bodies, attempts, retries), `answers.rs` (reading answers and
//! relaying streams), `redact.rs` (what of an upstream may be shown),
//! `transport.rs` (the HTTP client, with `h1.rs`'s pool for plain `http`),
//! `tls.rs` (trust roots and client certificates for `https`) and
//! `error.rs` (what fails on the way).

pub(crate) mod answers;
mod client;
mod config;
mod discovery;
mod error;
mod h1;
mod load;
mod redact;
mod replicas;
mod tls;
mod transport;

pub(crate) use client::RemoteBackend;
pub(crate) use config::Protocol;
pub use config::{HealthConfig, LoadMetricsConfig, PrefixAffinityConfig, RemoteConfig};
