//! Log initialisation through `tracing-subscriber`.

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The noisy transport crates are capped at `warn` unless the filter names them.
const DEFAULT_FILTER: &str = "info,hyper=warn,h2=warn,tower=warn,reqwest=warn";

/// Install the global subscriber. `filter` uses `RUST_LOG` syntax; `None`
/// reads `RUST_LOG`, else `info`. Calling it twice is harmless.
pub fn init_logging(format: LogFormat, filter: Option<&str>) {
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second call finds a subscriber already installed: keep the first.
    let _ = result;
}
