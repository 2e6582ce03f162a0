//! Usage metered per tenant: requests by outcome, tokens, audio seconds
//! and characters, by tenant and model. Tenants and models come from the
//! configuration, so the label sets are bounded; a tenant's series are
//! created once (when its policy is built) and handed out as handles.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::names;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantOutcomeLabels {
    pub tenant: String,
    pub model: String,
    pub outcome: String,
    /// `hit`: answered from the response cache (or by another request's
    /// job, coalesced); `miss`: everything else.
    pub cache: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantTokenLabels {
    pub tenant: String,
    pub model: String,
    pub r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLimitLabels {
    pub tenant: String,
    pub limit: String,
}

/// The families; see the module docs.
#[derive(Clone)]
pub struct TenantMetrics {
    requests: Family<TenantOutcomeLabels, Counter>,
    tokens: Family<TenantTokenLabels, Counter>,
    audio_seconds: Family<TenantLabels, Counter<f64, AtomicU64>>,
    characters: Family<TenantLabels, Counter>,
    limited: Family<TenantLimitLabels, Counter>,
    pub store_errors: Counter,
}

/// One tenant's series on one model.
#[derive(Debug, Clone)]
pub struct TenantSeries {
    pub ok: Counter,
    /// Answered from the response cache or a coalesced job.
    pub ok_cached: Counter,
    pub error: Counter,
    pub rate_limited: Counter,
    pub quota_exceeded: Counter,
    pub input_tokens: Counter,
    pub output_tokens: Counter,
    pub audio_seconds: Counter<f64, AtomicU64>,
    pub characters: Counter,
}

impl TenantMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = TenantMetrics {
            requests: Family::default(),
            tokens: Family::default(),
            audio_seconds: Family::default(),
            characters: Family::default(),
            limited: Family::default(),
            store_errors: Counter::default(),
        };
        registry.register(
            names::TENANT_REQUESTS,
            "Requests per tenant and model, by outcome",
            m.requests.clone(),
        );
        registry.register(names::TENANT_TOKENS, "Tokens per tenant and model, by type", m.tokens.clone());
        registry.register(
            names::TENANT_AUDIO_SECONDS,
            "Seconds of audio per tenant and model",
            m.audio_seconds.clone(),
        );
        registry.register(
            names::TENANT_CHARACTERS,
            "Characters translated per tenant and model",
            m.characters.clone(),
        );
        registry.register(
            names::TENANT_LIMITED,
            "Requests refused by a tenant's limit, by the limit's key",
            m.limited.clone(),
        );
        registry.register(
            names::STORE_ERRORS,
            "Limit store operations that failed or timed out",
            m.store_errors.clone(),
        );
        m
    }

    /// The series of `tenant` on `model`, present at zero from now on.
    pub fn series(&self, tenant: &str, model: &str) -> TenantSeries {
        let counted = |outcome: &str, cache: &str| {
            self.requests
                .get_or_create(&TenantOutcomeLabels {
                    tenant: tenant.to_owned(),
                    model: model.to_owned(),
                    outcome: outcome.to_owned(),
                    cache: cache.to_owned(),
                })
                .clone()
        };
        let outcome = |outcome: &str| counted(outcome, "miss");
        let tokens = |kind: &str| {
            self.tokens
                .get_or_create(&TenantTokenLabels {
                    tenant: tenant.to_owned(),
                    model: model.to_owned(),
                    r#type: kind.to_owned(),
                })
                .clone()
        };
        let labels = TenantLabels { tenant: tenant.to_owned(), model: model.to_owned() };
        TenantSeries {
            ok: outcome("ok"),
            ok_cached: counted("ok", "hit"),
            error: outcome("error"),
            rate_limited: outcome("rate_limited"),
            quota_exceeded: outcome("quota_exceeded"),
            input_tokens: tokens("input"),
            output_tokens: tokens("output"),
            audio_seconds: self.audio_seconds.get_or_create(&labels).clone(),
            characters: self.characters.get_or_create(&labels).clone(),
        }
    }

    /// The refusals counter of one of `tenant`'s limits.
    pub fn limited(&self, tenant: &str, limit: &str) -> Counter {
        self.limited
            .get_or_create(&TenantLimitLabels { tenant: tenant.to_owned(), limit: limit.to_owned() })
            .clone()
    }
}
