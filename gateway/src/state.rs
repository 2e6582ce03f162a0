//! Shared state: the served models, tenants, readiness and metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use infergate_backends::{LoadError, Task};
use infergate_otel::Metrics;

use crate::auth::TenantDirectory;
use crate::config::Config;
use crate::error::ApiError;
use crate::runner::ModelHandle;

/// State every handler and layer can reach.
pub struct AppState {
    pub config: Config,
    pub models: Vec<Arc<ModelHandle>>,
    by_name: HashMap<String, Arc<ModelHandle>>,
    /// `[[aliases]]`: a name that stands for one of several models.
    pub aliases: HashMap<String, Alias>,
    /// Replaced whole by a reload; read once per request.
    tenants: std::sync::RwLock<Arc<TenantDirectory>>,
    /// Where tenant limits are kept.
    pub store: Arc<crate::tenancy::Store>,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    /// Unix time the process started, for `created` fields.
    pub started: u64,
    /// Characters translated per tenant (DeepL's `/v2/usage`).
    translated: std::sync::Mutex<HashMap<Arc<str>, u64>>,
    /// Answers remembered for feedback, and the events' sinks (`[feedback]`).
    pub feedback: Option<Arc<crate::feedback::Feedback>>,
}

/// A name that stands for one of several models, each with a share of its
/// requests (a canary split).
pub struct Alias {
    pub targets: Vec<Arc<ModelHandle>>,
    /// The weights' running sums.
    cumulative: Vec<f64>,
    rng: infergate_rng::SharedSplitMix64,
}

impl Alias {
    /// A target drawn by weight.
    pub fn pick(&self) -> &Arc<ModelHandle> {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let draw = self.rng.next_f64() * total;
        let at = self.cumulative.partition_point(|c| *c <= draw).min(self.targets.len() - 1);
        &self.targets[at]
    }

    /// The task its targets serve.
    pub fn task(&self) -> Task {
        self.targets[0].task
    }
}

/// Shared handle to the state.
pub type SharedState = Arc<AppState>;

/// Why the gateway cannot start serving its configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A model's backend did not load (the error is part of the message,
    /// not a source, so a printed chain says it once).
    #[error("model {model}: {error}")]
    Load { model: String, error: LoadError },
    #[error("model {model}: its {kind} backend cannot serve task {task}")]
    WrongTask { model: String, kind: &'static str, task: Task },
    #[error("audio.vad_model: model {model} does not detect voice activity")]
    NoVoiceActivity { model: String },
    #[error("{0}")]
    Store(String),
}

impl AppState {
    /// Build every backend (loading in-process models) and start every
    /// model's runner. Must run inside a tokio runtime. Fails with the model
    /// and the reason when a backend cannot load or cannot serve its task.
    pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<SharedState, StartError> {
        let store = crate::tenancy::Store::new(&config.store, metrics.tenants.store_errors.clone())
            .map_err(StartError::Store)?;
        let models: Vec<Arc<ModelHandle>> = config
            .models
            .iter()
            .map(|m| {
                let backend = m
                    .backend
                    .build(&m.name)
                    .map_err(|error| StartError::Load { model: m.name.clone(), error })?;
                if !backend.supports(m.task) {
                    let (model, kind, task) = (m.name.clone(), m.backend.kind(), m.task);
                    return Err(StartError::WrongTask { model, kind, task });
                }
                let handle = ModelHandle::spawn(
                    m,
                    &config.scheduler,
                    backend,
                    metrics.clone(),
                    config.server.default_timeout,
                );
                let handle = match &m.cache {
                    Some(cache) => {
                        let identity = crate::cache::model_identity(m).map_err(|e| StartError::Load {
                            model: m.name.clone(),
                            error: LoadError::Model(format!("cache: cannot read the model's files: {e}")),
                        })?;
                        let series = metrics.cache.model(&m.name);
                        // A shared cache is shared by the replicas too, in the limits' Redis.
                        let tier = store.redis().filter(|_| cache.shared).map(|redis| {
                            let max_entry =
                                usize::try_from(cache.max_bytes).unwrap_or(usize::MAX).min(8 << 20);
                            let errors = metrics.tenants.store_errors.clone();
                            crate::cache::SharedTier::new(
                                redis.connection(),
                                &m.name,
                                cache.ttl,
                                max_entry,
                                errors,
                            )
                        });
                        handle.with_cache(crate::cache::ModelCache::new(identity, cache, series, tier))
                    }
                    None => handle,
                };
                Ok(Arc::new(handle))
            })
            .collect::<Result<_, StartError>>()?;
        let by_name: HashMap<String, Arc<ModelHandle>> =
            models.iter().map(|m| (m.name.clone(), m.clone())).collect();
        // Validation made sure every name here is a model.
        let named = |name: &String| by_name.get(name).cloned();
        for (config, handle) in config.models.iter().zip(&models) {
            handle.set_fallbacks(config.fallback.iter().filter_map(named).collect());
        }
        let aliases = config
            .aliases
            .iter()
            .map(|a| {
                let targets: Vec<Arc<ModelHandle>> =
                    a.targets.iter().filter_map(|t| named(&t.model)).collect();
                let mut total = 0.0;
                let cumulative = a
                    .targets
                    .iter()
                    .map(|t| {
                        total += t.weight;
                        total
                    })
                    .collect();
                let rng = infergate_rng::SharedSplitMix64::from_process();
                (a.name.clone(), Alias { targets, cumulative, rng })
            })
            .filter(|(_, a)| !a.targets.is_empty())
            .collect();
        if let Some(name) = &config.audio.vad_model {
            let detects = models.iter().any(|m| &m.name == name && m.info.capabilities.voice_activity);
            if !detects {
                return Err(StartError::NoVoiceActivity { model: name.clone() });
            }
        }
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let feedback = crate::feedback::Feedback::start(&config.feedback, &store, &metrics)
            .map_err(StartError::Store)?;
        let state = AppState {
            feedback,
            tenants: std::sync::RwLock::new(Arc::new(TenantDirectory::new(
                &config,
                &metrics.tenants,
                &store,
            ))),
            store: Arc::new(store),
            config,
            models,
            by_name,
            aliases,
            readiness: Readiness::default(),
            metrics,
            started,
            translated: std::sync::Mutex::default(),
        };
        state.readiness.loaded.store(true, Ordering::SeqCst);
        Ok(Arc::new(state))
    }

    /// The tenants as they stand (a reload replaces them whole).
    pub fn tenants(&self) -> Arc<TenantDirectory> {
        self.tenants.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replace the tenants with those of `config` (already validated, and
    /// checked to change nothing else that matters).
    pub fn replace_tenants(&self, config: &Config) {
        let directory = Arc::new(TenantDirectory::new(config, &self.metrics.tenants, &self.store));
        *self.tenants.write().unwrap_or_else(std::sync::PoisonError::into_inner) = directory;
    }

    /// The model a request named, checked against the route's task.
    pub fn model_for(&self, name: &str, wanted: Task) -> Result<&Arc<ModelHandle>, ApiError> {
        let model = self.model(name)?;
        if model.task != wanted {
            return Err(ApiError::WrongTask { model: name.to_owned(), task: model.task, wanted });
        }
        Ok(model)
    }

    /// The model with this name, if the caller may use it (else it is not
    /// found, as if absent).
    pub fn model_of(
        &self,
        ctx: &crate::context::RequestContext,
        name: &str,
    ) -> Result<&Arc<ModelHandle>, ApiError> {
        if !ctx.allows(name) {
            return Err(ApiError::ModelNotFound { model: name.to_owned() });
        }
        self.model(name)
    }

    /// The model with this name, or for an alias one of its targets, drawn by weight.
    pub fn model(&self, name: &str) -> Result<&Arc<ModelHandle>, ApiError> {
        if let Some(model) = self.by_name.get(name) {
            return Ok(model);
        }
        self.aliases
            .get(name)
            .map(Alias::pick)
            .ok_or_else(|| ApiError::ModelNotFound { model: name.to_owned() })
    }

    /// Unix time now, for `created` fields (the start time if the clock is
    /// before 1970).
    pub fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(self.started)
    }

    /// Count characters a tenant had translated.
    pub fn count_translated(&self, tenant: &Arc<str>, chars: u64) {
        let mut counts = self.translated.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(tenant.clone()).or_default() += chars;
    }

    /// Characters a tenant had translated since start.
    pub fn translated(&self, tenant: &str) -> u64 {
        let counts = self.translated.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.get(tenant).copied().unwrap_or(0)
    }

    /// The first model serving a task, for APIs where `model` is optional.
    pub fn default_model(&self, task: Task) -> Option<&Arc<ModelHandle>> {
        self.models.iter().find(|m| m.task == task)
    }
}

/// Whether the instance should receive traffic.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every model is loaded and warmed up.
    pub loaded: AtomicBool,
    /// SIGTERM arrived: finishing in-flight work, taking no new work.
    pub draining: AtomicBool,
    /// `server.shutdown_grace` is over: streams still open end now, with a
    /// final error event.
    pub grace_over: tokio_util::sync::CancellationToken,
}

impl Readiness {
    /// The reason the instance is not ready, if it is not.
    pub fn reason(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Some("draining")
        } else if !self.loaded.load(Ordering::SeqCst) {
            Some("loading")
        } else {
            None
        }
    }
}
