//! The floor under infergate's proxying cost: a reverse proxy with nothing
//! but hyper in it, on the same runtime and HTTP stack as the gateway (a
//! current-thread tokio runtime, hyper-util's auto server with the same
//! header-read timer, hyper-util's pooled client), and none of the gateway's
//! work: no routing, authentication, JSON, scheduling, deadlines, metrics or
//! traces. Each request goes to the upstream as it came (method, path,
//! headers, body streamed) and the answer back likewise.
//!
//! `scripts/bench-proxy-pinned.sh` runs it beside infergate, nginx and Envoy:
//! what infergate costs above it is infergate's own, what it costs above
//! nginx is the Rust HTTP stack's.
//!
//!   cargo run --release --example hyper_proxy -- LISTEN_ADDR UPSTREAM_ADDR

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hyper_proxy LISTEN_ADDR UPSTREAM_ADDR";
    let listen: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let upstream: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector);
    let mut server = auto::Builder::new(TokioExecutor::new());
    server.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).keep_alive(true);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, server) = (client.clone(), server.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), upstream, request));
            // A connection's error ends only that connection.
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("http://{upstream}{path}").parse();
    let answer = match uri {
        Ok(uri) => {
            parts.uri = uri;
            client.request(Request::from_parts(parts, body)).await.ok()
        }
        Err(_) => None,
    };
    Ok(match answer {
        Some(response) => response.map(|body| body.boxed()),
        None => {
            let mut response =
                Response::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
            *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            response
        }
    })
}
