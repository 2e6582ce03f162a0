//! API keys to tenants.
//!
//! Keys are stored as SHA-256 digests; a presented key is hashed and
//! compared with every stored digest in constant time, so neither the
//! position of a match nor a partial match shows in the timing.

use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use infergate_scheduler::Class;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};

use crate::config::Config;
use crate::context::{Caller, PRIORITY_HEADER};
use crate::error::ApiError;
use crate::tenancy::TenantPolicy;

/// Every tenant's key digests, and the tenant for keyless requests.
#[derive(Debug, Clone)]
pub struct TenantDirectory {
    /// (key digest, index into `callers`)
    keys: Vec<([u8; 32], usize)>,
    callers: Vec<Caller>,
    anonymous: Option<usize>,
}

impl TenantDirectory {
    /// Build from validated config (digests are known to be 64 hex digits),
    /// with each tenant's policy and usage series.
    pub fn new(
        config: &Config,
        metrics: &infergate_otel::tenants::TenantMetrics,
        store: &crate::tenancy::Store,
    ) -> Self {
        let mut keys = Vec::new();
        let mut callers = Vec::new();
        let mut anonymous = None;
        for (i, tenant) in config.tenants.iter().enumerate() {
            let policy = Arc::new(TenantPolicy::new(tenant, config, metrics, store));
            callers.push(Caller { tenant: policy.name.clone(), class: tenant.class, policy });
            if config.auth.anonymous_tenant.as_deref() == Some(tenant.name.as_str()) {
                anonymous = Some(i);
            }
            for hex_digest in tenant.key_digests() {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(hex_digest, &mut digest).is_ok() {
                    keys.push((digest, i));
                }
            }
        }
        TenantDirectory { keys, callers, anonymous }
    }

    /// The caller a request's headers identify, with `X-Priority` applied.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let mut caller = match presented_key(headers) {
            Some(key) => self.lookup(key.as_bytes()).ok_or_else(|| ApiError::InvalidApiKey {
                message: "Incorrect API key provided.".into(),
                missing: false,
            })?,
            None => {
                self.anonymous.map(|i| self.callers[i].clone()).ok_or_else(|| ApiError::InvalidApiKey {
                    message: "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
                        .into(),
                    missing: true,
                })?
            }
        };
        if let Some(value) = headers.get(crate::context::PRIORITY) {
            let asked: Class = value.to_str().ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
                ApiError::invalid(PRIORITY_HEADER, "x-priority must be interactive, standard or batch")
            })?;
            // A caller may lower its class, never raise it.
            caller.class = caller.class.max(asked);
        }
        Ok(caller)
    }

    /// Constant-time search over every digest.
    fn lookup(&self, key: &[u8]) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut found = 0u64; // index + 1 of the match, 0 for none
        for (stored, index) in &self.keys {
            let hit = stored.ct_eq(&digest);
            let candidate = *index as u64 + 1;
            found = u64::conditional_select(&found, &candidate, hit);
        }
        let found_any = found.ct_gt(&0);
        bool::from(found_any).then(|| self.callers[(found - 1) as usize].clone())
    }
}

/// The key from `Authorization: Bearer`, `api-key` or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let auth = auth.trim();
        // DeepL's clients send `DeepL-Auth-Key KEY`.
        let key = ["Bearer ", "bearer ", "DeepL-Auth-Key "]
            .iter()
            .find_map(|scheme| auth.strip_prefix(scheme))
            .unwrap_or(auth);
        return Some(key.trim());
    }
    [HeaderName::from_static("api-key"), HeaderName::from_static("x-api-key")]
        .into_iter()
        .find_map(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::headers;

    fn directory(anonymous: bool) -> TenantDirectory {
        let text = format!(
            r#"
            {}
            [[tenants]]
            name = "web"
            class = "standard"
            api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]
            [[tenants]]
            name = "bulk"
            class = "batch"
            api_key_sha256 = ["efc7d0fa4cad2961037188937a43340411abb642686296bfff9ec39b07c5f661"]
            [[models]]
            name = "m"
            task = "chat"
            backend = {{ kind = "synthetic" }}
            "#,
            if anonymous { "[auth]\nanonymous_tenant = \"bulk\"" } else { "" }
        );
        let metrics = infergate_otel::Metrics::new();
        let store = crate::tenancy::Store::Memory(Default::default());
        TenantDirectory::new(&Config::from_toml(&text, Vec::new()).unwrap(), &metrics.tenants, &store)
    }

    #[test]
    fn maps_keys_to_tenants() {
        let dir = directory(false);
        let web = dir.authenticate(&headers(&[("authorization", "Bearer sk-infergate-test")])).unwrap();
        assert_eq!((&*web.tenant, web.class), ("web", Class::Standard));
        let bulk = dir.authenticate(&headers(&[("x-api-key", "sk-infergate-batch")])).unwrap();
        assert_eq!(&*bulk.tenant, "bulk");
        let deepl =
            dir.authenticate(&headers(&[("authorization", "DeepL-Auth-Key sk-infergate-test")])).unwrap();
        assert_eq!(&*deepl.tenant, "web");
        let wrong = dir.authenticate(&headers(&[("authorization", "Bearer sk-nope")])).unwrap_err();
        assert_eq!(wrong.parts().code, Some("invalid_api_key"));
        let missing = dir.authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.parts().code, Some("missing_api_key"));
    }

    #[test]
    fn anonymous_tenant_serves_keyless_requests_only() {
        let dir = directory(true);
        assert_eq!(&*dir.authenticate(&HeaderMap::new()).unwrap().tenant, "bulk");
        assert!(dir.authenticate(&headers(&[("authorization", "Bearer wrong")])).is_err());
    }

    #[test]
    fn priority_lowers_but_never_raises() {
        let dir = directory(false);
        let key = ("authorization", "Bearer sk-infergate-test");
        let lower = dir.authenticate(&headers(&[key, ("x-priority", "batch")])).unwrap();
        assert_eq!(lower.class, Class::Batch);
        let higher = dir.authenticate(&headers(&[key, ("x-priority", "interactive")])).unwrap();
        assert_eq!(higher.class, Class::Standard);
        assert!(dir.authenticate(&headers(&[key, ("x-priority", "urgent")])).is_err());
    }
}
