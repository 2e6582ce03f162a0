//! The `infergate` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use infergate_gateway::{Config, LogFormatConfig, OtlpProtocolConfig, Tls};
use infergate_otel::{LogFormat, OtlpProtocol, TelemetryGuard, TelemetryOptions};

// mimalloc: requests allocate on one worker thread and free on another
// (and spans on the export thread); glibc's malloc spent ~10% of the
// gateway's CPU on that (BENCHMARKS.md, telemetry overhead).
//
// It replaces `malloc` and `free` themselves (the crate's `override`
// feature) rather than being the `#[global_allocator]`: that one asks for
// every block through `mi_malloc_aligned`, whose fast path misses for
// blocks over 1 KiB and whenever the size class has no free block at hand,
// and then over-allocates by the alignment — ~70 instructions an allocation
// against ~40 through `malloc` (BENCHMARKS.md, "The floor under the proxy").
// Rust's system allocator calls `malloc` for alignments up to 16 and
// `posix_memalign` above, both mimalloc's now; so do the C and C++ libraries
// in the process (ONNX Runtime, whisper.cpp).
use mimalloc as _;

/// infergate: an observability-first inference gateway and multimodal
/// scheduler. Serves OpenAI-compatible and KServe v2 APIs in front of
/// in-process and remote models, ordering work by deadline.
#[derive(Debug, Parser)]
#[command(name = "infergate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway.
    ///
    /// Every config key can be overridden from the environment as
    /// INFERGATE__SECTION__KEY (e.g. INFERGATE__SERVER__LISTEN=0.0.0.0:8080;
    /// INFERGATE__MODELS__0__CONCURRENCY=4). The bound address is printed on
    /// stdout as "infergate listening on http://ADDR" (https with
    /// server.tls), after "infergate metrics on http://ADDR" when
    /// server.metrics_listen is set.
    Serve {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Listen here instead of `server.listen` (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Write the events of a feedback sink (`[feedback] jsonl`, its rotated
    /// part first, or `redis_stream`) as a training-ready dataset: one JSON
    /// object a line with the fields type, time, tenant, model, operation,
    /// request_id, answered_at, score, label, correction, comment, reason,
    /// confidence, input and output (those an event has).
    ExportFeedback {
        /// The JSON-lines sink.
        #[arg(long, value_name = "FILE")]
        jsonl: Option<PathBuf>,
        /// The Redis of a stream sink (redis://host:port/db) ...
        #[arg(long, value_name = "URL", requires = "stream")]
        redis: Option<String>,
        /// ... and the stream.
        #[arg(long, value_name = "NAME", requires = "redis")]
        stream: Option<String>,
        /// Only events of this type: feedback or low_confidence.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Where the dataset goes; stdout if unset.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Validate a configuration file (with environment overrides) and exit:
    /// 0 when valid, 1 with the offending key path when not.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ExportFeedback { jsonl, redis, stream, kind, out } => {
            if jsonl.is_none() && redis.is_none() {
                eprintln!("infergate export-feedback: give --jsonl FILE or --redis URL --stream NAME");
                return ExitCode::FAILURE;
            }
            let mut sink: Box<dyn std::io::Write> = match &out {
                Some(path) => match std::fs::File::create(path) {
                    Ok(file) => Box::new(std::io::BufWriter::new(file)),
                    Err(error) => {
                        eprintln!("infergate export-feedback: {}: {error}", path.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => Box::new(std::io::stdout().lock()),
            };
            let redis = redis.as_deref().zip(stream.as_deref());
            match infergate_gateway::export_feedback(jsonl.as_deref(), redis, kind.as_deref(), &mut sink)
                .and_then(|rows| sink.flush().map(|()| rows).map_err(|e| e.to_string()))
            {
                Ok(rows) => {
                    eprintln!("infergate export-feedback: {rows} rows");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("infergate export-feedback: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: valid ({} models, {} tenants)",
                    file.display(),
                    config.models.len(),
                    config.tenants.len()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{}: invalid: {error}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::Serve { config: path, listen } => {
            let mut config = match Config::load(&path) {
                Ok(c) => c,
                Err(error) => {
                    eprintln!("{}: invalid: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            if let Some(addr) = listen {
                config.server.listen = addr;
            }
            match run(config, path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("infergate: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Telemetry settings from config, with the standard `OTEL_*` variables
/// filling what config leaves unset.
fn telemetry_options(config: &Config) -> TelemetryOptions {
    let t = &config.telemetry;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    TelemetryOptions {
        log_format: match config.log.format {
            LogFormatConfig::Text => LogFormat::Text,
            LogFormatConfig::Json => LogFormat::Json,
        },
        log_filter: config.log.filter.clone().filter(|_| std::env::var_os("RUST_LOG").is_none()),
        otlp_endpoint: t.otlp_endpoint.clone().or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")),
        protocol: match t.protocol {
            Some(OtlpProtocolConfig::Grpc) => OtlpProtocol::Grpc,
            Some(OtlpProtocolConfig::HttpProtobuf) => OtlpProtocol::HttpProtobuf,
            None if env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() == Some("grpc") => OtlpProtocol::Grpc,
            None => OtlpProtocol::HttpProtobuf,
        },
        otlp_headers: t.otlp_headers.clone(),
        otlp_ca_file: t.otlp_ca_file.clone(),
        sample_ratio: env("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.parse().ok()).unwrap_or(t.sample_ratio),
        max_queue: t.max_queue,
        export_interval: t.export_interval,
        metrics_interval: t
            .metrics_interval
            .or_else(|| {
                env("OTEL_METRIC_EXPORT_INTERVAL").and_then(|ms| ms.parse().ok()).map(Duration::from_millis)
            })
            .unwrap_or(TelemetryOptions::default().metrics_interval),
        export_logs: t.export_logs && env("OTEL_LOGS_EXPORTER").as_deref() != Some("none"),
        export_events: config.feedback.otlp,
        service_name: env("OTEL_SERVICE_NAME").unwrap_or_else(|| t.service_name.clone()),
        ..TelemetryOptions::default()
    }
}

/// Start telemetry and serve until a shutdown signal, on one runtime;
/// telemetry is flushed before the runtime stops (gRPC export is a task on it).
fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    // One worker is tokio's current-thread scheduler: the same single thread
    // without the work-stealing scheduler's cross-thread queues and wake-ups.
    let mut builder = match config.server.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                builder.worker_threads(n);
            }
            builder
        }
    };
    let runtime = builder.enable_all().build()?;
    let options = telemetry_options(&config);
    let mut telemetry = {
        let _inside = runtime.enter();
        infergate_otel::init(&options)?
    };
    let result = runtime.block_on(serve(config, path, &mut telemetry));
    // The exporters block while flushing: off the async workers.
    runtime.block_on(async {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    });
    result
}

async fn serve(config: Config, path: PathBuf, telemetry: &mut TelemetryGuard) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.server.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("server.metrics_listen: cannot listen on {at}: {e}"))?,
        ),
        None => None,
    };
    let tls = config.server.tls.as_ref().map(|t| Tls::start(t, config.server.http2)).transpose()?;
    let (app, state) = infergate_gateway::app(config)?;
    telemetry.export_metrics(state.metrics.clone())?;
    if let Some(metrics_listener) = metrics_listener {
        println!("infergate metrics on http://{}", metrics_listener.local_addr()?);
        let metrics = infergate_gateway::metrics_app(state.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(metrics_listener, metrics).await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        });
    }
    // Tenants, keys, limits and allow-lists reload on SIGHUP and file changes.
    infergate_gateway::tenancy::reload::spawn(state.clone(), path);
    tracing::info!(%addr, models = state.models.len(), tls = tls.is_some(), "infergate ready");
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("infergate listening on {scheme}://{addr}");
    infergate_gateway::serve(listener, app, state, tls, infergate_gateway::shutdown_signal()).await?;
    tracing::info!("infergate stopped");
    Ok(())
}
