//! End to end: the open-loop runner against a tiny hyper server on 127.0.0.1 port 0 that
//! answers after a fixed delay (or never), recording when each request arrived.

// A test harness: failing loudly on a broken setup is its job.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser as _;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use infergate_load::{Cli, Command, Report};
use tokio::net::TcpListener;

/// A server answering after `delay` (`None`: never); the arrival time of each request.
async fn serve(delay: Option<Duration>) -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let arrivals = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let arrivals = Arc::clone(&arrivals);
            let service = service_fn(move |_: Request<Incoming>| {
                arrivals.lock().unwrap().push(Instant::now());
                async move {
                    match delay {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

async fn load(addr: SocketAddr, args: &[&str]) -> Report {
    let url = format!("http://{addr}/v1/embeddings");
    let argv = ["infergate-load", "run", "--url", &url].into_iter().chain(args.iter().copied());
    let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else { panic!("not a run") };
    infergate_load::run(args.to_config().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_does_not_slow_the_schedule_and_its_queueing_shows_in_latency() {
    // 100 ms per answer at 200 req/s: a closed loop of 4 would send 40 req/s and report
    // 100 ms; the open loop keeps 200 req/s (20 in flight) and every request takes ≥ 100 ms.
    let (addr, seen) = serve(Some(Duration::from_millis(100))).await;
    let report = load(addr, &["--rate", "200", "--duration", "1s", "-c", "4", "--max-lag", "200ms"]).await;
    let s = &report.summary;
    let schedule = s.schedule.as_ref().unwrap();
    assert_eq!(report.params.mode, "open-loop");
    assert!((190..=210).contains(&s.requests), "{} requests in 1 s at 200/s", s.requests);
    assert_eq!(s.successes, s.requests);
    let arrivals = seen.lock().unwrap().clone();
    let span = arrivals.last().unwrap().duration_since(arrivals[0]).as_secs_f64();
    assert!((0.9..1.1).contains(&span), "the server saw the requests over {span} s, not bunched");
    let latency = s.latency_ms.as_ref().unwrap();
    assert!(latency.p50 >= 100.0 && latency.p50 < 200.0, "{latency:?}");
    assert!((190.0..=210.0).contains(&schedule.offered_per_s), "{schedule:?}");
    assert!(schedule.valid, "{schedule:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisson_arrivals_keep_their_mean_rate() {
    let (addr, _) = serve(Some(Duration::ZERO)).await;
    let report = load(
        addr,
        &["--rate", "400", "--arrivals", "poisson", "--seed", "3", "--duration", "2s", "--max-lag", "200ms"],
    )
    .await;
    let s = &report.summary;
    // 800 expected; a Poisson count's standard deviation is √800 ≈ 28.
    assert!((700..=900).contains(&s.requests), "{} requests", s.requests);
    assert_eq!(s.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fills_the_in_flight_cap_and_the_run_is_invalid() {
    let (addr, seen) = serve(None).await;
    let started = Instant::now();
    let args = ["--rate", "100", "--duration", "500ms", "--max-in-flight", "10", "--timeout", "1s"];
    let report = load(addr, &args).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the run ends by itself");
    let s = &report.summary;
    let schedule = s.schedule.as_ref().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 10, "no more than the cap is ever in flight");
    assert!(schedule.skipped >= 35, "{schedule:?}");
    assert!(!schedule.valid);
    assert!(schedule.invalid_because.iter().any(|r| r.contains("--max-in-flight")), "{schedule:?}");
    assert_eq!(s.successes, 0);
    assert_eq!(s.errors, 10, "the ten sent time out: {s:?}");
}
