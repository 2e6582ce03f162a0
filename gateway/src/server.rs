//! The listener: HTTP/1.1 and h2c on one port, or both over TLS with ALPN
//! (`tls.rs`); TCP_NODELAY, a bound on open connections, header and
//! handshake read timeouts, HTTP/2 stream and header bounds, and graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::state::SharedState;
use crate::tls::Tls;

/// Serve `app` on `listener` (over TLS when `tls` is given) until
/// `shutdown` resolves; then mark the instance as draining (`/readyz`
/// fails), keep accepting for `server.drain_delay`, stop accepting, let
/// in-flight requests (streams included) finish within
/// `server.shutdown_grace`, and return.
///
/// At most `server.max_connections` connections are open at once: each
/// connection's task holds a permit, and while none is free the loop stops
/// accepting, so further clients wait in the kernel's accept backlog.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: SharedState,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = &state.config.server;
    let connections =
        Connections { builder: Arc::new(builder(server)), tls, timeout: server.header_read_timeout };
    let permits = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    // After the signal, keep accepting for `drain_delay` with `/readyz` failing,
    // so load balancers stop routing here before connections are refused.
    let mut stop_accepting: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            (permit, accepted) = accept(&listener, &permits) => {
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
                connections.spawn(stream, peer, app.clone(), graceful.watcher(), permit);
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

/// The HTTP/1.1 and HTTP/2 settings of every connection.
fn builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let head = usize::try_from(server.max_header_list_bytes).unwrap_or(usize::MAX);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(head)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.http2_max_concurrent_streams)
        .max_header_list_size(server.max_header_list_bytes);
    if !server.http2 {
        builder = builder.http1_only();
    }
    builder
}

/// A free connection permit, then the next connection. Cancel-safe: a
/// permit taken while the shutdown branch wins is simply returned.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> (Option<OwnedSemaphorePermit>, std::io::Result<(TcpStream, SocketAddr)>) {
    // The semaphore is never closed; `None` would only mean no bound.
    let permit = permits.clone().acquire_owned().await.ok();
    (permit, listener.accept().await)
}

/// What every connection task needs.
struct Connections {
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<Tls>,
    /// `server.header_read_timeout`, which bounds the TLS handshake too.
    timeout: std::time::Duration,
}

impl Connections {
    /// Serve one connection on its own task, which holds `permit` until the
    /// connection closes.
    fn spawn(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        app: Router,
        watcher: Watcher,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let builder = self.builder.clone();
        let Some(tls) = &self.tls else {
            tokio::spawn(serve_connection(builder, watcher, stream, peer, app, permit));
            return;
        };
        let (acceptor, timeout) = (tls.acceptor(), self.timeout);
        tokio::spawn(async move {
            // A client that stalls mid-handshake loses its connection like one
            // that stalls sending headers.
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(builder, watcher, stream, peer, app, permit).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

async fn serve_connection<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    io: I,
    peer: SocketAddr,
    app: Router,
    permit: Option<OwnedSemaphorePermit>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
    drop(permit);
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
