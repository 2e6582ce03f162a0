//! End to end: capacity search against a server of known capacity — two requests served
//! at a time, 10 ms each, so 200 req/s — on 127.0.0.1 port 0.

// A test harness: failing loudly on a broken setup is its job.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser as _;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use infergate_load::{Cli, Command};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

async fn serve(slots: usize, service: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slots = Arc::new(Semaphore::new(slots));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let slots = Arc::clone(&slots);
            let handler = service_fn(move |_: Request<Incoming>| {
                let slots = Arc::clone(&slots);
                async move {
                    let _slot = slots.acquire().await.unwrap();
                    tokio::time::sleep(service).await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), handler),
            );
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_finds_the_known_capacity_and_the_knee_below_it() {
    let addr = serve(2, Duration::from_millis(10)).await;
    let url = format!("http://{addr}/");
    let argv = [
        "infergate-load",
        "capacity",
        "--url",
        &url,
        "--slo-latency",
        "100ms",
        "--start",
        "50",
        "--precision",
        "0.08",
        "--step",
        "800ms",
        "--warmup",
        "100ms",
        "--timeout",
        "2s",
        "--arrivals",
        "constant",
        "--max-lag",
        "200ms",
    ];
    let Command::Capacity(args) = Cli::try_parse_from(argv).unwrap().command else { panic!("not capacity") };
    let (target, settings) = args.to_settings().unwrap();
    let report = infergate_load::search(&target, &settings).await.unwrap();
    let search = &report.searches[0];
    let capacity = search.capacity.unwrap();
    // Analytic capacity 2 / 10 ms = 200 req/s; sleeps overshoot by up to a timer tick, and
    // a step slightly above capacity queues less than the SLO within 800 ms.
    assert!((150.0..=230.0).contains(&capacity), "capacity {capacity}: {}", report.render());
    let rates: Vec<f64> = search.steps.iter().map(|s| s.rate).collect();
    let first_fail = search.steps.iter().position(|s| !s.passed).expect("a failing step bounds the search");
    for pair in rates[..=first_fail].windows(2) {
        assert_eq!(pair[1], pair[0] * 2.0, "doubling up to the first failure: {rates:?}");
    }
    let last_two = &rates[rates.len() - 2..];
    assert!((last_two[0] - last_two[1]).abs() / capacity <= 0.2, "bisection narrows the gap: {rates:?}");
    let knee = search.knee.unwrap();
    assert!(knee <= capacity, "knee {knee} capacity {capacity}");
    assert!(!search.limited_by_generator);
    assert!(report.render().contains("capacity"), "{}", report.render());
}
