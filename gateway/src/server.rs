//! The listener: HTTP/1.1 and h2c on one port, TCP_NODELAY, header read
//! timeout, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::state::SharedState;

/// Serve `app` on `listener` until `shutdown` resolves; then mark the
/// instance as draining (`/readyz` fails), keep accepting for
/// `server.drain_delay`, stop accepting, let in-flight requests (streams
/// included) finish within `server.shutdown_grace`, and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: SharedState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = &state.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(server.header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    if !server.http2 {
        builder = builder.http1_only();
    }
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    // After the signal, keep accepting for `drain_delay` with `/readyz` failing,
    // so load balancers stop routing here before connections are refused.
    let mut stop_accepting: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Responses go out as headers then body; without NODELAY each
                // keep-alive request waits on Nagle and delayed ACKs.
                let _ = stream.set_nodelay(true);
                serve_connection(&builder, &graceful, stream, peer, app.clone());
            }
            () = &mut shutdown, if stop_accepting.is_none() => {
                state.readiness.draining.store(true, Ordering::SeqCst);
                tracing::info!(drain_delay = ?server.drain_delay, "draining: /readyz now fails");
                stop_accepting = Some(Box::pin(tokio::time::sleep(server.drain_delay)));
            }
            () = async { if let Some(s) = stop_accepting.as_mut() { s.await } }, if stop_accepting.is_some() => break,
        }
    }
    drop(listener);
    tracing::info!(grace = ?server.shutdown_grace, "shutting down: finishing in-flight requests");
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => tracing::info!("all connections closed"),
        () = tokio::time::sleep(server.shutdown_grace) => {
            tracing::warn!("grace period over; ending open streams and closing remaining connections");
            // Streams still open end with an error event; give it a moment to go out.
            state.readiness.grace_over.cancel();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), &mut drained).await;
        }
    }
    Ok(())
}

fn serve_connection(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
) {
    let service = TowerToHyperService::new(app);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
