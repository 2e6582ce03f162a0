//! `https://` targets: a TLS server on 127.0.0.1 port 0 with a self-signed
//! certificate made here (rcgen), trusted through `--cacert`, or not
//! trusted at all but accepted with `--insecure`; h2 over ALPN with `--http2`.

// A test harness: failing loudly on a broken setup is its job.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser as _;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use infergate_load::{Cli, Command, Report};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS server answering 200 to everything; its address, the certificate's
/// PEM file, and the count of HTTP/2 requests.
async fn serve() -> (SocketAddr, PathBuf, Arc<AtomicU64>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = generated.cert.pem();
    let path =
        std::env::temp_dir().join(format!("infergate-load-https-{}-{:p}.pem", std::process::id(), &cert_pem));
    std::fs::write(&path, &cert_pem).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes()).unwrap();
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http2 = Arc::new(AtomicU64::new(0));
    let counter = http2.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let service = service_fn(move |request: Request<Incoming>| {
                    if request.version() == http::Version::HTTP_2 {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}")))) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, path, http2)
}

async fn load(addr: SocketAddr, args: &[&str]) -> Report {
    let url = format!("https://{addr}/v1/models");
    let argv = ["infergate-load", "run", "--url", &url].into_iter().chain(args.iter().copied());
    let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else { panic!("not a run") };
    infergate_load::run(args.to_config().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_are_trusted_through_cacert_or_insecure() {
    let (addr, cert, http2) = serve().await;
    let cacert = cert.to_str().unwrap();

    let s = load(addr, &["--requests", "20", "-c", "2", "--cacert", cacert]).await.summary;
    assert_eq!((s.requests, s.successes), (20, 20));
    assert_eq!(http2.load(Ordering::Relaxed), 0, "HTTP/1.1 unless --http2");

    let s = load(addr, &["--requests", "20", "-c", "4", "--cacert", cacert, "--http2"]).await.summary;
    assert_eq!((s.requests, s.successes), (20, 20));
    assert_eq!(http2.load(Ordering::Relaxed), 20, "h2 chosen in ALPN");

    // A certificate nobody vouches for fails, unless told not to care.
    let s = load(addr, &["--requests", "3", "-c", "1"]).await.summary;
    assert_eq!((s.requests, s.successes), (3, 0));
    let s = load(addr, &["--requests", "3", "-c", "1", "--insecure"]).await.summary;
    assert_eq!((s.requests, s.successes), (3, 3));
    let _ = std::fs::remove_file(cert);
}
