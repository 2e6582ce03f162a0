//! ONNX Runtime sessions: the process's environment (the library loaded at
//! run time) and a session per model file with its threads and provider.

use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;

use super::config::{ExecutionProvider, OnnxConfig};
use crate::LoadError;

/// The process's ONNX Runtime environment, loaded on first use.
fn environment() -> Result<&'static Environment, LoadError> {
    // The first attempt's failure is kept as its text (`ort::Error` is not
    // `Clone`) and every later model gets the same.
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            // ORT_DYLIB_PATH, else the library scripts/setup.sh links into the
            // repository (the working directory of `make run`), else the system's.
            let local = Path::new(".ort/lib/libonnxruntime.so");
            let path = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
                if local.is_file() { local.display().to_string() } else { "libonnxruntime.so".into() }
            });
            ort::init_from(&path)
                .map_err(|e| {
                    format!("cannot load ONNX Runtime from {path}: {e} (run scripts/setup.sh, or set ORT_DYLIB_PATH)")
                })?
                .with_name("infergate")
                .build()
                .map_err(|e| format!("ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(|message| LoadError::Runtime(message.clone()))
}

/// A session for `path` with the configured threads and provider.
pub(crate) fn session(path: &Path, config: &OnnxConfig) -> Result<Session, LoadError> {
    if !path.is_file() {
        let hint = "scripts/setup.sh fetches the models";
        return Err(LoadError::Missing { path: path.to_owned(), hint });
    }
    let environment = environment()?;
    // The builder's steps fail with different `ort::Error<R>`s.
    let fail = |e: &dyn std::fmt::Display| LoadError::Model(format!("{}: {e}", path.display()));
    let mut builder = Session::builder(environment)
        .map_err(|e| fail(&e))?
        .with_intra_threads(config.intra_threads)
        .map_err(|e| fail(&e))?
        .with_inter_threads(1)
        .map_err(|e| fail(&e))?;
    if config.execution_provider == ExecutionProvider::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| {
                LoadError::Model(format!(
                    "{}: the CUDA execution provider is unavailable: {e}",
                    path.display()
                ))
            })?;
    }
    builder.commit_from_file(path).map_err(|e| fail(&e))
}
