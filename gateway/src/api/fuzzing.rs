//! Ways in for the fuzz targets in `fuzz/` (feature `fuzzing`, off by
//! default): each runs one of the HTTP surface's decoders on arbitrary
//! bytes, as its handler would, up to the point where a model is called.
//! Errors are the expected answer to most inputs and are turned into their
//! HTTP response (which must not panic either). Not part of the crate's API.

// A property that fails panics: that is how a fuzz target reports it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::response::IntoResponse;
use http::{header, Request};
use infergate_otel::Metrics;

use super::{kserve, kserve_binary, ocr, openai};
use crate::config::Config;
use crate::error::ApiError;
use crate::state::{AppState, SharedState};

/// The multipart boundary the fuzzed bodies use.
pub const BOUNDARY: &str = "fuzzboundary";

/// The default limits; one tenant and one synthetic model (a configuration
/// must name both; decoding reaches no model).
const FIXTURE_CONFIG: &str = "auth.anonymous_tenant = \"fuzz\"\n[[tenants]]\nname = \"fuzz\"\n\
    [[models]]\nname = \"fuzz\"\ntask = \"chat\"\nbackend = { kind = \"synthetic\" }\n";

/// A state with no models (decoding needs only the limits) and a runtime
/// for the async extractors, made once per process.
fn fixture() -> &'static (tokio::runtime::Runtime, SharedState) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, SharedState)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let config = Config::from_toml(FIXTURE_CONFIG, Vec::new());
        match (runtime, config) {
            (Ok(runtime), Ok(config)) => {
                // A model's runner starts on the runtime.
                let started = runtime.block_on(async { AppState::start(config, Arc::new(Metrics::new())) });
                match started {
                    Ok(state) => (runtime, state),
                    Err(e) => panic!("fuzz fixture: {e}"),
                }
            }
            (Err(e), _) => panic!("fuzz fixture: {e}"),
            (_, Err(e)) => panic!("fuzz fixture: {e}"),
        }
    })
}

/// An error becomes its response, as the handler's caller would make it.
fn respond(result: Result<(), ApiError>) {
    if let Err(error) = result {
        drop(error.into_response());
    }
}

/// The OpenAI JSON bodies: the first byte picks chat (for an in-process
/// model or an upstream), embeddings or moderations; the rest is the body.
pub fn openai_request(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else { return };
    let limits = &fixture().1.config.limits;
    respond(match route % 4 {
        0 => openai::chat::fuzz(body, limits, false),
        1 => openai::chat::fuzz(body, limits, true),
        2 => openai::embeddings::fuzz(body, limits),
        _ => openai::moderations::fuzz(body, limits),
    });
}

/// A `multipart/form-data` body (boundary [`BOUNDARY`]) to the audio
/// routes' form reader (first byte even) or to OCR's (odd).
pub fn multipart(data: &[u8]) {
    let Some((&route, body)) = data.split_first() else { return };
    let (runtime, state) = fixture();
    let uri = if route % 2 == 0 { "/v1/audio/transcriptions" } else { "/v1/ocr" };
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(Body::from(body.to_vec()));
    let Ok(request) = request else { return };
    respond(runtime.block_on(async {
        if route % 2 == 0 {
            openai::audio::fuzz(request, state).await
        } else {
            ocr::fuzz(request, state).await
        }
    }));
}

/// A KServe v2 inference body after two bytes of header length
/// (little-endian): JSON alone (0xFFFF), or Triton's binary form, whose
/// JSON header is the body's first that many bytes.
pub fn kserve(data: &[u8]) {
    let Some((length, body)) = data.split_first_chunk::<2>() else { return };
    let header_length = match u16::from_le_bytes(*length) {
        u16::MAX => None,
        n => Some(usize::from(n)),
    };
    let (runtime, state) = fixture();
    let mut request = Request::post("/v2/models/fuzz/infer").header(header::CONTENT_TYPE, "application/json");
    if let Some(length) = header_length {
        request = request.header(kserve_binary::HEADER_LENGTH, length);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else { return };
    respond(runtime.block_on(kserve::fuzz(request, state)));
}

/// Configuration: TOML text, then optionally `\n%%\n` and `NAME=value`
/// lines of `INFERGATE__*` overrides, parsed and validated; a configuration
/// that loads validates again.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (text, env) = text.split_once("\n%%\n").unwrap_or((text, ""));
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    if let Ok(config) = Config::from_toml(text, vars) {
        if let Err(e) = config.validate() {
            panic!("a loaded configuration does not validate again: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every committed seed of the gateway's fuzz targets, through its entry
    /// point: the seeds stay valid inputs and the entry points compile.
    #[test]
    fn the_committed_seeds_run() {
        /// A target's seed directory and entry point.
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 4] = [
            ("openai_request", super::openai_request),
            ("multipart", super::multipart),
            ("kserve_binary", super::kserve),
            ("config_load", super::config),
        ];
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, run) in targets {
            let seeds = std::fs::read_dir(corpus.join(target)).unwrap_or_else(|e| panic!("{target}: {e}"));
            for seed in seeds {
                let path = seed.unwrap_or_else(|e| panic!("{target}: {e}")).path();
                run(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
            }
        }
    }
}
