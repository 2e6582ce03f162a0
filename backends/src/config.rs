//! Backend configuration, one variant per backend kind.

use std::sync::Arc;

use serde::Deserialize;

use crate::llama::{LlamaBackend, LlamaConfig};
use crate::onnx::{OnnxBackend, OnnxConfig};
use crate::remote::{Protocol, RemoteBackend, RemoteConfig};
use crate::synthetic::{SyntheticBackend, SyntheticConfig};
use crate::whisper::{WhisperBackend, WhisperConfig};
use crate::{Backend, LoadError};

/// `backend = { kind = "...", ... }` in a model's config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackendConfig {
    /// Deterministic, clearly labelled outputs with a latency model and faults.
    Synthetic(SyntheticConfig),
    /// An in-process model on ONNX Runtime.
    Onnx(OnnxConfig),
    /// An in-process chat model on llama.cpp (GGUF).
    Llama(LlamaConfig),
    /// An in-process speech model on whisper.cpp.
    Whisper(WhisperConfig),
    /// OpenAI-compatible upstream servers (vLLM, TGI, llama.cpp server).
    Openai(RemoteConfig),
    /// KServe v2 upstream servers (Triton).
    Kserve(RemoteConfig),
}

impl BackendConfig {
    /// The kind's name as written in config.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Synthetic(_) => "synthetic",
            BackendConfig::Onnx(_) => "onnx",
            BackendConfig::Llama(_) => "llama",
            BackendConfig::Whisper(_) => "whisper",
            BackendConfig::Openai(_) => "openai",
            BackendConfig::Kserve(_) => "kserve",
        }
    }

    /// Check settings that serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), LoadError> {
        match self {
            BackendConfig::Synthetic(c) => c.validate(),
            BackendConfig::Onnx(c) => c.validate(),
            BackendConfig::Llama(c) => c.validate(),
            BackendConfig::Whisper(c) => c.validate(),
            BackendConfig::Openai(c) | BackendConfig::Kserve(c) => c.validate(),
        }
    }

    /// Build the backend for a model; in-process models load here, and a
    /// missing or broken model file is an error that names it.
    pub fn build(&self, model: &str) -> Result<Arc<dyn Backend>, LoadError> {
        Ok(match self {
            BackendConfig::Synthetic(c) => Arc::new(SyntheticBackend::new(model, c.clone())),
            BackendConfig::Onnx(c) => Arc::new(OnnxBackend::load(model, c)?),
            BackendConfig::Llama(c) => Arc::new(LlamaBackend::load(model, c)?),
            BackendConfig::Whisper(c) => Arc::new(WhisperBackend::load(c)?),
            BackendConfig::Openai(c) => Arc::new(RemoteBackend::start(model, c, Protocol::OpenAi)?),
            BackendConfig::Kserve(c) => Arc::new(RemoteBackend::start(model, c, Protocol::KServe)?),
        })
    }
}

impl BackendConfig {
    /// The files (or, for OCR, the directory) whose contents make the
    /// model's answers: a changed file is a new model version.
    pub fn files(&self) -> Vec<&std::path::Path> {
        match self {
            BackendConfig::Onnx(c) => {
                std::iter::once(c.model.as_path()).chain(c.tokenizer.as_deref()).collect()
            }
            BackendConfig::Llama(c) => {
                std::iter::once(c.model.as_path()).chain(c.chat_template.as_deref()).collect()
            }
            BackendConfig::Whisper(c) => vec![c.model.as_path()],
            BackendConfig::Synthetic(_) | BackendConfig::Openai(_) | BackendConfig::Kserve(_) => Vec::new(),
        }
    }

    /// The backend's own latency settings `(base, per_cost)`, where it has
    /// them: a good seed for the scheduler's latency model.
    pub fn latency_hint(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        match self {
            BackendConfig::Synthetic(c) => Some((c.base_latency, c.per_cost)),
            BackendConfig::Onnx(_)
            | BackendConfig::Llama(_)
            | BackendConfig::Whisper(_)
            | BackendConfig::Openai(_)
            | BackendConfig::Kserve(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> BackendConfig {
        toml::from_str(text).unwrap()
    }

    /// The gateway prints these at start-up, and takes what comes before the
    /// first `: ` as the setting's key.
    #[test]
    fn setting_errors_start_with_their_key() {
        let error = |text: &str| config(text).validate().unwrap_err().to_string();
        assert_eq!(error("kind = \"synthetic\"\njitter = 2.0"), "jitter: must be in [0, 1), got 2");
        assert_eq!(
            error("kind = \"openai\"\nendpoints = [\"dns://up\"]"),
            "endpoints: dns://up: dns:// needs a port (dns://name:port)"
        );
        assert_eq!(
            error("kind = \"onnx\"\npipeline = \"text-embeddings\"\nmodel = \"m.onnx\""),
            "tokenizer: text-embeddings needs a tokenizer.json"
        );
        assert_eq!(
            error("kind = \"whisper\"\nmodel = \"m.bin\"\nstates = 0"),
            "states and threads must be at least 1"
        );
    }

    #[test]
    fn backends_that_cannot_start_say_why() {
        let error = |text: &str| config(text).build("m").err().unwrap().to_string();
        assert_eq!(
            error("kind = \"whisper\"\nmodel = \"models/absent.bin\""),
            "model file models/absent.bin not found (scripts/setup.sh converts the Whisper models)"
        );
        assert_eq!(
            error("kind = \"openai\"\nendpoints = [\"http://up\"]\napi_key_env = \"INFERGATE_TEST_NO_SUCH_KEY\""),
            "api_key_env: INFERGATE_TEST_NO_SUCH_KEY is not set"
        );
    }
}
