//! End to end: the closed-loop runner against a tiny hyper server on 127.0.0.1 port 0, whose
//! behaviour is named by each test (`ok`, `every_other_503`, `hang`).

// A test harness: failing loudly on a broken setup is its job.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use infergate_load::{Cli, Command, ErrorKind, Report};
use tokio::net::TcpListener;

#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 with a small body and `x-infergate-queue-ms: 2.5`.
    Ok,
    /// Alternates 200 and 503, by the order the server receives requests.
    EveryOther503,
    /// Never answers.
    Hang,
}

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
    http2_requests: AtomicU64,
}

async fn serve(behaviour: Behaviour) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.connections.fetch_add(1, Ordering::Relaxed);
            let counter = Arc::clone(&counter);
            let service = service_fn(move |request: Request<Incoming>| {
                let n = counter.requests.fetch_add(1, Ordering::Relaxed);
                if request.version() == http::Version::HTTP_2 {
                    counter.http2_requests.fetch_add(1, Ordering::Relaxed);
                }
                respond(behaviour, n)
            });
            // HTTP/1.1 and HTTP/2 with prior knowledge (h2c), as infergate serves them.
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, seen)
}

async fn respond(behaviour: Behaviour, n: u64) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match behaviour {
        Behaviour::Ok => StatusCode::OK,
        Behaviour::EveryOther503 if n % 2 == 1 => StatusCode::SERVICE_UNAVAILABLE,
        Behaviour::EveryOther503 => StatusCode::OK,
        Behaviour::Hang => std::future::pending().await,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"data\":[0.1,0.2,0.3]}")));
    *response.status_mut() = status;
    response.headers_mut().insert("x-infergate-queue-ms", "2.5".parse().unwrap());
    Ok(response)
}

/// Parses `infergate-load run --url http://{addr}/v1/embeddings ARGS` and runs it.
async fn load(addr: SocketAddr, args: &[&str]) -> Report {
    let url = format!("http://{addr}/v1/embeddings");
    let argv = ["infergate-load", "run", "--url", &url].into_iter().chain(args.iter().copied());
    let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else { panic!("not a run") };
    infergate_load::run(args.to_config().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_succeeds_over_one_connection_per_worker() {
    let (addr, seen) = serve(Behaviour::Ok).await;
    let report = load(addr, &["--requests", "200", "-c", "4", "--body-json", r#"{"input":"hi"}"#]).await;
    let s = &report.summary;
    assert_eq!((s.requests, s.successes, s.errors), (200, 200, 0));
    assert_eq!(seen.requests.load(Ordering::Relaxed), 200);
    let connections = seen.connections.load(Ordering::Relaxed);
    assert_eq!(connections, 4, "each of the 4 workers keeps one connection alive");
    assert_eq!(s.queue_ms.as_ref().map(|q| (q.mean, q.p99)), Some((2.5, 2.5)));
    assert_eq!(s.queue_ms_responses, 200);
    let latency = s.latency_ms.as_ref().unwrap();
    assert!(latency.p50 > 0.0 && latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert!(s.requests_per_s > 0.0);
    assert_eq!(report.params.method, "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_carries_every_worker_on_one_connection() {
    let (addr, seen) = serve(Behaviour::Ok).await;
    let report = load(addr, &["--requests", "300", "-c", "16", "--http2"]).await;
    let s = &report.summary;
    assert_eq!((s.requests, s.successes), (300, 300));
    assert_eq!(seen.http2_requests.load(Ordering::Relaxed), 300);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1, "16 streams on one connection");
    assert_eq!(report.params.protocol, "HTTP/2");
    assert_eq!(s.queue_ms_responses, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_counted_by_status() {
    let (addr, _) = serve(Behaviour::EveryOther503).await;
    let s = load(addr, &["--requests", "100", "-c", "3"]).await.summary;
    assert_eq!((s.requests, s.successes, s.errors), (100, 50, 50));
    assert_eq!(s.errors_by_status, [(503, 50)].into());
    assert!(s.errors_by_kind.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_gives_timeouts_and_the_run_still_ends() {
    let (addr, _) = serve(Behaviour::Hang).await;
    let s = load(addr, &["--requests", "4", "-c", "2", "--timeout", "100ms"]).await.summary;
    assert_eq!((s.requests, s.successes), (4, 0));
    assert_eq!(s.errors_by_kind, [(ErrorKind::Timeout, 4)].into());
    assert!(s.latency_ms.is_none());
    assert!(s.duration_s >= 0.2 && s.duration_s < 2.0, "two rounds of 100ms timeouts: {}", s.duration_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_gives_connect_errors() {
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let s = load(addr, &["--requests", "5", "-c", "1"]).await.summary;
    assert_eq!(s.errors_by_kind, [(ErrorKind::Connect, 5)].into());
    assert!(s.first_error[&ErrorKind::Connect].to_lowercase().contains("refused"), "{:?}", s.first_error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_bound_stops_the_run() {
    let (addr, _) = serve(Behaviour::Ok).await;
    let started = std::time::Instant::now();
    let s = load(addr, &["--duration", "300ms", "-c", "2"]).await.summary;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(s.requests > 0 && s.successes == s.requests);
    assert!(s.duration_s >= 0.3 && s.duration_s < 1.0, "measured {}s", s.duration_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_requests_are_sent_but_not_counted() {
    let (addr, seen) = serve(Behaviour::Ok).await;
    let s = load(addr, &["--warmup", "200ms", "--requests", "50", "-c", "2"]).await.summary;
    assert_eq!(s.requests, 50);
    let sent = seen.requests.load(Ordering::Relaxed);
    assert!(sent > 50, "the server saw only {sent} requests, so no warmup was sent");
    assert!(s.duration_s < 0.2, "measured time should exclude the 200ms warmup: {}", s.duration_s);
}
