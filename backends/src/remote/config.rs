//! `backend = { kind = "openai" | "kserve", ... }`: a remote model's
//! replicas, limits, retries and health checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::discovery::Endpoint;
use crate::LoadError;

/// What the upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// OpenAI's HTTP API: chat completions (JSON and SSE) and embeddings.
    OpenAi,
    /// KServe v2 HTTP inference (Triton).
    KServe,
}

/// `backend = { kind = "openai", endpoints = [...], ... }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `http://host:port` (a base URL; `/v1/...` is appended) or
    /// `dns://name:port` (every address of the name, re-resolved).
    pub endpoints: Vec<String>,
    /// The model name upstream; the served name if unset.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Environment variable holding the upstream's API key (sent as Bearer).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests one replica takes at once; more wait in the gateway's queue.
    #[serde(default = "default_replica_concurrency")]
    pub replica_concurrency: usize,
    /// Longest wait for response headers when the request has no deadline.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Connection set-up limit.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Extra load retries may add, as a share of requests.
    #[serde(default = "default_retry_budget")]
    pub retry_budget: f64,
    /// How often `dns://` endpoints are re-resolved.
    #[serde(default = "default_dns_refresh", with = "humantime_serde")]
    pub dns_refresh: Duration,
    #[serde(default)]
    pub health: HealthConfig,
    /// PEM certificates trusted for `https` endpoints besides Mozilla's
    /// root set (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to `https` upstreams that ask for
    /// one (mutual TLS); with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Read each replica's own load gauges (queue, running requests, KV-cache
    /// use) into the replica choice.
    #[serde(default)]
    pub load_metrics: Option<LoadMetricsConfig>,
    /// Send requests that share a long prompt prefix to the replica that
    /// served it last, while that one is not saturated.
    #[serde(default)]
    pub prefix_affinity: Option<PrefixAffinityConfig>,
}

/// `load_metrics = { path = "/metrics", interval = "250ms" }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoadMetricsConfig {
    /// Prometheus endpoint on each replica.
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A reading older than this no longer counts (4 × `interval` if unset).
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

impl Default for LoadMetricsConfig {
    fn default() -> Self {
        LoadMetricsConfig { path: "/metrics".into(), interval: Duration::from_millis(250), max_age: None }
    }
}

impl LoadMetricsConfig {
    pub(crate) fn max_age(&self) -> Duration {
        self.max_age.unwrap_or(self.interval * 4)
    }
}

/// `prefix_affinity = { tokens = 256 }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefixAffinityConfig {
    /// How long a shared prefix must be, in tokens (counted as the gateway
    /// estimates them, about 4 bytes each): shorter prompts get no affinity.
    #[serde(default = "default_prefix_tokens")]
    pub tokens: usize,
}

fn default_prefix_tokens() -> usize {
    256
}

/// `health = { ... }`: heartbeats, ejection and the half-open probe.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Heartbeat path on each replica (`/health` for OpenAI-compatible
    /// servers, `/v2/health/ready` for KServe).
    pub path: Option<String>,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Missed heartbeats in a row that eject a replica.
    pub eject_after: u32,
    /// Good heartbeats in a row that re-admit it.
    pub readmit_after: u32,
    /// 5xx answers in a row that eject it.
    pub eject_after_5xx: u32,
    /// How long an ejected replica rests before one request may probe it.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl HealthConfig {
    /// The heartbeat path for a protocol.
    pub(crate) fn path_for(&self, protocol: Protocol) -> &str {
        match (&self.path, protocol) {
            (Some(path), _) => path,
            (None, Protocol::OpenAi) => "/health",
            (None, Protocol::KServe) => "/v2/health/ready",
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: None,
            interval: Duration::from_secs(5),
            eject_after: 3,
            readmit_after: 2,
            eject_after_5xx: 5,
            cooldown: Duration::from_secs(10),
        }
    }
}

fn default_replica_concurrency() -> usize {
    64
}
fn default_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_budget() -> f64 {
    0.2
}
fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}

impl RemoteConfig {
    /// Checks serde cannot make; errors name the field.
    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        self.parsed_endpoints()?;
        if self.replica_concurrency == 0 {
            return Err(LoadError::setting("replica_concurrency", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.retry_budget) {
            return Err(LoadError::setting("retry_budget", "must be in [0, 1]"));
        }
        let h = &self.health;
        if h.interval.is_zero() || h.eject_after == 0 || h.readmit_after == 0 || h.eject_after_5xx == 0 {
            return Err(LoadError::setting("health", "interval and the counts must be greater than zero"));
        }
        if let Some(load) = &self.load_metrics {
            if !load.path.starts_with('/') || load.interval.is_zero() || load.max_age().is_zero() {
                return Err(LoadError::setting(
                    "load_metrics",
                    "path must start with / and interval and max_age must be greater than zero",
                ));
            }
        }
        if self.prefix_affinity.as_ref().is_some_and(|p| p.tokens == 0) {
            return Err(LoadError::setting("prefix_affinity", "tokens must be at least 1"));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() || self.dns_refresh.is_zero() {
            return Err(LoadError::Settings(
                "timeout, connect_timeout and dns_refresh must be greater than zero",
            ));
        }
        Ok(())
    }

    /// The endpoints, parsed; at least one.
    pub(crate) fn parsed_endpoints(&self) -> Result<Vec<Endpoint>, LoadError> {
        if self.endpoints.is_empty() {
            return Err(LoadError::setting("endpoints", "at least one is required"));
        }
        self.endpoints
            .iter()
            .map(|e| Endpoint::parse(e).map_err(|error| LoadError::setting("endpoints", error.to_string())))
            .collect()
    }
}
