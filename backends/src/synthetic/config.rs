//! Settings of the synthetic backend.

use std::time::Duration;

use serde::Deserialize;

use crate::LoadError;

/// A fault the synthetic backend injects into every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    #[default]
    None,
    /// Every batch takes `slow_factor` times longer.
    Slow,
    /// Batches never finish; only cancellation ends them.
    Hang,
    /// Generation stops halfway with a disconnect error.
    Disconnect,
}

/// `backend = { kind = "synthetic", ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Fixed time per batch.
    #[serde(default, with = "humantime_serde")]
    pub base_latency: Duration,
    /// Time per unit of batch cost.
    #[serde(default, with = "humantime_serde")]
    pub per_cost: Duration,
    /// Relative jitter in [0, 1): latency is scaled by a uniform 1 ± jitter.
    #[serde(default)]
    pub jitter: f64,
    /// Time between generated tokens (0 = all at once).
    #[serde(default, with = "humantime_serde")]
    pub token_interval: Duration,
    /// Embedding size.
    #[serde(default = "default_dimensions")]
    pub dimensions: u32,
    /// Probability in [0, 1] that an item fails.
    #[serde(default)]
    pub error_rate: f64,
    #[serde(default)]
    pub fault: Fault,
    /// Latency multiplier under `fault = "slow"`.
    #[serde(default = "default_slow_factor")]
    pub slow_factor: f64,
    /// Seed for jitter and error rolls.
    #[serde(default)]
    pub seed: u64,
}

fn default_dimensions() -> u32 {
    384
}

fn default_slow_factor() -> f64 {
    10.0
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            base_latency: Duration::ZERO,
            per_cost: Duration::ZERO,
            jitter: 0.0,
            token_interval: Duration::ZERO,
            dimensions: default_dimensions(),
            error_rate: 0.0,
            fault: Fault::None,
            slow_factor: default_slow_factor(),
            seed: 0,
        }
    }
}

impl SyntheticConfig {
    /// Range checks serde cannot express; errors name the field.
    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(LoadError::setting("jitter", format!("must be in [0, 1), got {}", self.jitter)));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(LoadError::setting(
                "error_rate",
                format!("must be in [0, 1], got {}", self.error_rate),
            ));
        }
        if !(self.slow_factor.is_finite() && self.slow_factor >= 1.0) {
            return Err(LoadError::setting(
                "slow_factor",
                format!("must be at least 1, got {}", self.slow_factor),
            ));
        }
        if !(1..=65_536).contains(&self.dimensions) {
            return Err(LoadError::setting(
                "dimensions",
                format!("must be in 1..=65536, got {}", self.dimensions),
            ));
        }
        Ok(())
    }
}
