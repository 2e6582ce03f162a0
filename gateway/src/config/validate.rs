//! Rules that span fields, checked after parsing.

use std::collections::HashSet;
use std::time::Duration;

use infergate_backends::{LoadError, Task};

use super::error::ConfigError;
use super::Config;

impl Config {
    /// Check every cross-field rule; the first failure names its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_tenants()?;
        self.validate_tenant_limits()?;
        self.validate_store()?;
        self.validate_models()?;
        self.validate_routes()?;
        self.validate_translation()?;
        self.validate_feedback()?;
        let limits = &self.limits;
        let telemetry = &self.telemetry;
        if !(0.0..=1.0).contains(&telemetry.sample_ratio) {
            return Err(ConfigError::new("telemetry.sample_ratio", "must be in [0, 1]"));
        }
        if let Some(url) = &telemetry.otlp_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    "telemetry.otlp_endpoint",
                    "must be an http:// or https:// URL (OTLP/HTTP)",
                ));
            }
        }
        if let Some(path) = &telemetry.otlp_ca_file {
            if let Err(e) = std::fs::read(path) {
                return Err(ConfigError::new(
                    "telemetry.otlp_ca_file",
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
            if telemetry.protocol == Some(super::OtlpProtocolConfig::Grpc) {
                return Err(ConfigError::new("telemetry.otlp_ca_file", "applies to http/protobuf only"));
            }
        }
        if telemetry.metrics_interval.is_some_and(|i| i.is_zero()) {
            return Err(ConfigError::new("telemetry.metrics_interval", "must be greater than zero"));
        }
        if telemetry.max_queue == 0 || telemetry.export_interval.is_zero() {
            return Err(ConfigError::new(
                "telemetry",
                "max_queue and export_interval must be greater than zero",
            ));
        }
        if self.scheduler.fair_quantum.is_zero() {
            return Err(ConfigError::new("scheduler.fair_quantum", "must be greater than zero"));
        }
        if limits.max_completion_tokens == 0 {
            return Err(ConfigError::new("limits.max_completion_tokens", "must be at least 1"));
        }
        if limits.max_messages == 0 || limits.max_inputs == 0 || limits.max_input_tokens == 0 {
            return Err(ConfigError::new(
                "limits",
                "max_messages, max_inputs and max_input_tokens must be at least 1",
            ));
        }
        if limits.max_audio_seconds.is_nan() || limits.max_audio_seconds <= 0.0 {
            return Err(ConfigError::new("limits.max_audio_seconds", "must be greater than zero"));
        }
        if !(1..=128).contains(&limits.max_json_depth) {
            return Err(ConfigError::new(
                "limits.max_json_depth",
                "must be between 1 and 128 (serde_json's own bound)",
            ));
        }
        if !(4_000..=768_000).contains(&limits.max_audio_sample_rate) {
            return Err(ConfigError::new(
                "limits.max_audio_sample_rate",
                "must be between 4000 and 768000 Hz",
            ));
        }
        if !(1.0..=30.0).contains(&self.audio.max_chunk_seconds) {
            return Err(ConfigError::new(
                "audio.max_chunk_seconds",
                "must be between 1 and 30 (Whisper's window)",
            ));
        }
        self.validate_audio()?;
        if limits.max_audio_bytes > self.server.max_body_bytes {
            return Err(ConfigError::new(
                "limits.max_audio_bytes",
                format!(
                    "{} exceeds server.max_body_bytes ({})",
                    limits.max_audio_bytes, self.server.max_body_bytes
                ),
            ));
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.max_body_bytes < 1024 {
            return Err(ConfigError::new("server.max_body_bytes", "must be at least 1024"));
        }
        for (key, value) in [
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
            ("server.default_timeout", s.default_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
        }
        self.validate_listener()
    }

    /// Connection bounds and the TLS files (read here, so that a missing
    /// or mismatched file stops `check-config` and start-up by its key).
    fn validate_listener(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.max_connections == 0 {
            return Err(ConfigError::new("server.max_connections", "must be at least 1"));
        }
        if s.http2_max_concurrent_streams == 0 {
            return Err(ConfigError::new("server.http2_max_concurrent_streams", "must be at least 1"));
        }
        // hyper's HTTP/1.1 read buffer cannot be smaller.
        if s.max_header_list_bytes < 8192 {
            return Err(ConfigError::new("server.max_header_list_bytes", "must be at least 8192"));
        }
        if s.metrics_listen.is_some_and(|m| m == s.listen && m.port() != 0) {
            return Err(ConfigError::new("server.metrics_listen", "must differ from server.listen"));
        }
        if let Some(tls) = &s.tls {
            tls.read()?;
        }
        Ok(())
    }

    fn validate_tenants(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, tenant) in self.tenants.iter().enumerate() {
            if tenant.name.trim().is_empty() {
                return Err(ConfigError::new(format!("tenants[{i}].name"), "must not be empty"));
            }
            if !names.insert(tenant.name.as_str()) {
                return Err(ConfigError::new(
                    format!("tenants[{i}].name"),
                    format!("duplicate tenant '{}'", tenant.name),
                ));
            }
            let inline = tenant.api_key_sha256.len();
            for (k, hash) in tenant.key_digests().enumerate() {
                let path = if k < inline {
                    format!("tenants[{i}].api_key_sha256[{k}]")
                } else {
                    format!("tenants[{i}].api_key_sha256_file (digest {})", k - inline + 1)
                };
                let valid = hash.len() == 64
                    && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid {
                    return Err(ConfigError::new(
                        path,
                        "must be 64 lower-case hex digits (printf %s KEY | sha256sum)",
                    ));
                }
                if !keys.insert(hash.as_str()) {
                    return Err(ConfigError::new(path, "this key is already given to a tenant"));
                }
            }
        }
        if let Some(name) = &self.auth.anonymous_tenant {
            if !self.tenants.iter().any(|t| &t.name == name) {
                return Err(ConfigError::new("auth.anonymous_tenant", format!("no tenant named '{name}'")));
            }
        } else if self.tenants.iter().all(|t| t.key_digests().next().is_none()) {
            return Err(ConfigError::new(
                "tenants",
                "no tenant has an API key and auth.anonymous_tenant is unset: nobody could call the API",
            ));
        }
        Ok(())
    }

    /// Limits are positive and name served models; allow-lists too.
    fn validate_tenant_limits(&self) -> Result<(), ConfigError> {
        let served = |name: &str| {
            self.models.iter().any(|m| m.name == name) || self.aliases.iter().any(|a| a.name == name)
        };
        for (i, tenant) in self.tenants.iter().enumerate() {
            let scopes = std::iter::once((format!("tenants[{i}].rate_limits"), &tenant.rate_limits)).chain(
                tenant
                    .model_rate_limits
                    .iter()
                    .map(|(model, limits)| (format!("tenants[{i}].model_rate_limits.{model}"), limits)),
            );
            for (path, limits) in scopes {
                if let Some((key, _)) = limits.named().find(|(_, v)| *v == 0) {
                    return Err(ConfigError::new(
                        format!("{path}.{key}"),
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
                if limits.burst.is_some_and(|b| b.is_zero()) {
                    return Err(ConfigError::new(format!("{path}.burst"), "must be more than 0"));
                }
            }
            for model in tenant.model_rate_limits.keys() {
                if !served(model) {
                    return Err(ConfigError::new(
                        format!("tenants[{i}].model_rate_limits.{model}"),
                        format!("no model named '{model}'"),
                    ));
                }
            }
            for (k, model) in tenant.models.iter().flatten().enumerate() {
                if !served(model) {
                    return Err(ConfigError::new(
                        format!("tenants[{i}].models[{k}]"),
                        format!("no model named '{model}'"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        let store = &self.store;
        if let Some(url) = &store.url {
            if !url.starts_with("redis://") {
                return Err(ConfigError::new("store.url", "must be a redis://host:port/db URL"));
            }
            if redis_url_ok(url).is_err() {
                return Err(ConfigError::new("store.url", "is not a valid Redis URL"));
            }
        }
        if store.timeout.is_zero() || store.timeout > std::time::Duration::from_secs(1) {
            return Err(ConfigError::new("store.timeout", "must be more than 0 and at most 1s"));
        }
        Ok(())
    }

    /// `audio.vad_model` names a tensor model (the backend, once loaded,
    /// must answer voice activity).
    fn validate_audio(&self) -> Result<(), ConfigError> {
        let Some(name) = &self.audio.vad_model else { return Ok(()) };
        let key = "audio.vad_model";
        match self.model(name) {
            Some(m) if m.task == Task::Tensor => Ok(()),
            Some(_) => {
                Err(ConfigError::new(key, format!("model '{name}' is not a tensor (voice-activity) model")))
            }
            None if name.ends_with(".onnx") || name.contains('/') => Err(ConfigError::new(
                key,
                format!(
                    "names a [[models]] entry now, not a file: add a model with task = \"tensor\" and \
                     backend = {{ kind = \"onnx\", pipeline = \"voice-activity\", model = \"{name}\" }}, \
                     and give its name here"
                ),
            )),
            None => Err(ConfigError::new(key, format!("no model is named '{name}'"))),
        }
    }

    fn validate_translation(&self) -> Result<(), ConfigError> {
        let t = &self.translation;
        let chat_model = |key: String, name: &str| match self.models.iter().find(|m| m.name == name) {
            Some(m) if m.task == Task::Chat => Ok(()),
            Some(_) => Err(ConfigError::new(key, format!("model '{name}' is not a chat model"))),
            None => Err(ConfigError::new(key, format!("no model is named '{name}'"))),
        };
        if let Some(name) = &t.model {
            chat_model("translation.model".into(), name)?;
        }
        for (code, name) in &t.targets {
            if crate::call::translate::languages::target(code).is_none() {
                return Err(ConfigError::new(
                    format!("translation.targets.{code}"),
                    "not a DeepL target language code",
                ));
            }
            chat_model(format!("translation.targets.{code}"), name)?;
        }
        if let Some(code) =
            t.languages.iter().find(|code| crate::call::translate::languages::source(code).is_none())
        {
            return Err(ConfigError::new(
                "translation.languages",
                format!("'{code}' is not a DeepL source language code (EN, DE, ZH, ...)"),
            ));
        }
        if t.max_texts == 0 || t.max_chars == 0 || t.max_output_tokens == 0 {
            return Err(ConfigError::new(
                "translation",
                "max_texts, max_chars and max_output_tokens must be at least 1",
            ));
        }
        for (i, model) in self.models.iter().enumerate() {
            let Some(prompt) = &model.translation_prompt else { continue };
            let key = format!("models[{i}].translation_prompt");
            if model.task != Task::Chat {
                return Err(ConfigError::new(key, "only chat models translate"));
            }
            if !prompt.contains("{text}") {
                return Err(ConfigError::new(key, "must contain {text}"));
            }
        }
        Ok(())
    }

    fn validate_feedback(&self) -> Result<(), ConfigError> {
        let f = &self.feedback;
        if f.window.is_zero() || f.max_bytes == 0 {
            return Err(ConfigError::new("feedback", "window and max_bytes must be greater than zero"));
        }
        if f.jsonl_max_bytes < 4096 {
            return Err(ConfigError::new("feedback.jsonl_max_bytes", "must be at least 4096"));
        }
        if f.redis_stream.is_some() && self.store.url.is_none() {
            return Err(ConfigError::new(
                "feedback.redis_stream",
                "needs [store] url (the Redis it goes to)",
            ));
        }
        if f.redis_stream.as_ref().is_some_and(String::is_empty) || f.redis_maxlen == 0 {
            return Err(ConfigError::new("feedback.redis_stream", "a name, and redis_maxlen of at least 1"));
        }
        Ok(())
    }

    /// Fallbacks and aliases name models of the same task.
    fn validate_routes(&self) -> Result<(), ConfigError> {
        let task_of = |name: &str| self.models.iter().find(|m| m.name == name).map(|m| m.task);
        for (i, model) in self.models.iter().enumerate() {
            for (j, fallback) in model.fallback.iter().enumerate() {
                let at = format!("models[{i}].fallback[{j}]");
                match task_of(fallback) {
                    None => return Err(ConfigError::new(at, format!("no model is named '{fallback}'"))),
                    Some(_) if *fallback == model.name => {
                        return Err(ConfigError::new(at, "a model cannot be its own fallback"))
                    }
                    Some(task) if task != model.task => {
                        return Err(ConfigError::new(
                            at,
                            format!("'{fallback}' serves {task}, not {}", model.task),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        let mut names = HashSet::new();
        for (i, alias) in self.aliases.iter().enumerate() {
            let at = |key: &str| format!("aliases[{i}].{key}");
            if task_of(&alias.name).is_some() || !names.insert(alias.name.as_str()) || alias.name.is_empty() {
                return Err(ConfigError::new(
                    at("name"),
                    format!("'{}' is empty, a model's name or another alias's", alias.name),
                ));
            }
            if alias.targets.is_empty() {
                return Err(ConfigError::new(at("targets"), "at least one target is required"));
            }
            let mut task = None;
            for (j, target) in alias.targets.iter().enumerate() {
                let at = at(&format!("targets[{j}]"));
                let Some(this) = task_of(&target.model) else {
                    return Err(ConfigError::new(at, format!("no model is named '{}'", target.model)));
                };
                if task.is_some_and(|t| t != this) {
                    return Err(ConfigError::new(at, "every target of an alias serves the same task"));
                }
                task = Some(this);
                if !(target.weight.is_finite() && target.weight > 0.0) {
                    return Err(ConfigError::new(at, "weight must be a positive number"));
                }
            }
        }
        Ok(())
    }

    fn validate_models(&self) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return Err(ConfigError::new("models", "at least one model is required"));
        }
        let mut names = HashSet::new();
        for (i, model) in self.models.iter().enumerate() {
            let at = |key: &str| format!("models[{i}].{key}");
            let valid_name = !model.name.is_empty()
                && model.name.len() <= 128
                && model.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
            if !valid_name {
                return Err(ConfigError::new(
                    at("name"),
                    "use 1-128 characters of letters, digits and - _ . : /",
                ));
            }
            if !names.insert(model.name.as_str()) {
                return Err(ConfigError::new(at("name"), format!("duplicate model '{}'", model.name)));
            }
            if model.batch.max_size == 0 || model.batch.max_size > 4096 {
                return Err(ConfigError::new(at("batch.max_size"), "must be in 1..=4096"));
            }
            if model.batch.max_delay > Duration::from_secs(10) {
                return Err(ConfigError::new(at("batch.max_delay"), "must be at most 10s"));
            }
            if model.concurrency == 0 || model.concurrency > 1024 {
                return Err(ConfigError::new(at("concurrency"), "must be in 1..=1024"));
            }
            if model.queue.max_jobs == 0 || model.queue.tenant_max_jobs == Some(0) {
                return Err(ConfigError::new(at("queue"), "max_jobs and tenant_max_jobs must be at least 1"));
            }
            if !(model.cost_factor.is_finite() && model.cost_factor > 0.0) {
                return Err(ConfigError::new(at("cost_factor"), "must be a positive number"));
            }
            if model.default_timeout.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::new(at("default_timeout"), "must be greater than zero"));
            }
            if let Some(capture) = &model.capture {
                if !(0.0..=1.0).contains(&capture.sample) || !(0.0..=1.0).contains(&capture.below) {
                    return Err(ConfigError::new(at("capture"), "sample and below must be in [0, 1]"));
                }
            }
            if let Some(cache) = &model.cache {
                if cache.ttl.is_zero() {
                    return Err(ConfigError::new(at("cache.ttl"), "must be greater than zero"));
                }
                if cache.max_bytes == 0 {
                    return Err(ConfigError::new(at("cache.max_bytes"), "must be at least 1"));
                }
            }
            model.backend.validate().map_err(|error| match error {
                LoadError::Setting { field, message } => {
                    ConfigError::new(at(&format!("backend.{field}")), message)
                }
                other => ConfigError::new(at("backend"), other.to_string()),
            })?;
        }
        Ok(())
    }
}

/// Whether the Redis client accepts `url` (without connecting).
fn redis_url_ok(url: &str) -> Result<(), ()> {
    redis::Client::open(url).map(drop).map_err(drop)
}
