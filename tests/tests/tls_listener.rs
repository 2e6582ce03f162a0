//! The listener over TLS, against the real binary with certificates made
//! in the test: a request over https, mutual TLS, a certificate replaced on
//! disk and served without a restart, ALPN (h2, or only http/1.1 with
//! `server.http2 = false`), and the official OpenAI SDK over https.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use infergate_e2e::tls::{handshake, host_port, https_client, Issued, TempDir, TestCa};
use infergate_e2e::{repo_root, Gateway, TEST_KEY};
use serde_json::json;

/// `examples/synthetic.toml` with `extra` added to its `[server]` table.
fn synthetic_with(extra: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("examples/synthetic.toml")).unwrap();
    text.replacen("[server]\n", &format!("[server]\n{extra}\n"), 1)
}

/// A gateway serving `server` over TLS (and asking for client certificates
/// signed by `client_ca` when given); the files live in `dir`.
fn tls_gateway(dir: &TempDir, server: &Issued, client_ca: Option<&TestCa>, extra: &str) -> Gateway {
    let cert = dir.write("server.pem", &server.cert);
    let key = dir.write("server.key", &server.key);
    let client_ca = client_ca
        .map(|ca| format!(", client_ca = \"{}\"", dir.write("client-ca.pem", ca.pem()).display()))
        .unwrap_or_default();
    let tls =
        format!("tls = {{ cert = \"{}\", key = \"{}\"{client_ca} }}\n{extra}", cert.display(), key.display());
    Gateway::start_with(&synthetic_with(&tls))
}

async fn chat(client: &reqwest::Client, gw: &Gateway) -> reqwest::Result<reqwest::Response> {
    client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(TEST_KEY)
        .json(&json!({"model": "synthetic-chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
}

#[tokio::test]
async fn requests_are_served_over_https_and_h2_is_chosen_in_alpn() {
    let (ca, dir) = (TestCa::default(), TempDir::new("tls-basic"));
    let gw = tls_gateway(&dir, &ca.server("gateway"), None, "");
    assert!(gw.base.starts_with("https://"), "{}", gw.base);

    let client = https_client(ca.pem(), None);
    let response = chat(&client, &gw).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN picked h2");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string(), "{body}");

    let h2 = handshake(host_port(&gw.base), ca.pem(), &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    let h1 = handshake(host_port(&gw.base), ca.pem(), &[b"http/1.1"]).await.unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));

    // A client that does not trust the authority fails at the handshake.
    let stranger = https_client(TestCa::new("someone else").pem(), None);
    assert!(chat(&stranger, &gw).await.is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new();
    let url = gw.url("/healthz").replacen("https://", "http://", 1);
    assert!(plain.get(url).timeout(Duration::from_secs(5)).send().await.is_err());
}

#[tokio::test]
async fn without_http2_alpn_offers_only_http1() {
    let (ca, dir) = (TestCa::default(), TempDir::new("tls-h1"));
    let gw = tls_gateway(&dir, &ca.server("gateway"), None, "http2 = false");
    let offered = handshake(host_port(&gw.base), ca.pem(), &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(offered.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let response = chat(&https_client(ca.pem(), None), &gw).await.unwrap();
    assert_eq!((response.status().as_u16(), response.version()), (200, reqwest::Version::HTTP_11));
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_client_ca() {
    let (ca, clients, dir) = (TestCa::default(), TestCa::new("client CA"), TempDir::new("tls-mtls"));
    let gw = tls_gateway(&dir, &ca.server("gateway"), Some(&clients), "");

    let anonymous = https_client(ca.pem(), None);
    let refused = chat(&anonymous, &gw).await;
    assert!(refused.is_err(), "a client without a certificate got {:?}", refused.map(|r| r.status()));

    let wrong = https_client(ca.pem(), Some(&TestCa::new("other").client("mallory")));
    assert!(chat(&wrong, &gw).await.is_err(), "a certificate of another authority is refused");

    let good = https_client(ca.pem(), Some(&clients.client("alice")));
    assert_eq!(chat(&good, &gw).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let (ca, dir) = (TestCa::default(), TempDir::new("tls-rotate"));
    let first = ca.server("first");
    let gw = tls_gateway(&dir, &first, None, "");
    let addr = host_port(&gw.base).to_owned();
    assert_eq!(handshake(&addr, ca.pem(), &[]).await.unwrap().peer, first.der());

    // A broken file keeps the old certificate.
    dir.write("server.pem", "not a certificate");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(handshake(&addr, ca.pem(), &[]).await.unwrap().peer, first.der());

    let second = ca.server("second");
    dir.write("server.pem", &second.cert);
    dir.write("server.key", &second.key);
    let start = Instant::now();
    loop {
        let served = handshake(&addr, ca.pem(), &[]).await.unwrap().peer;
        if served == second.der() {
            break;
        }
        assert_eq!(served, first.der());
        assert!(start.elapsed() < Duration::from_secs(10), "the new certificate was not served within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(chat(&https_client(ca.pem(), None), &gw).await.unwrap().status(), 200);
}

#[test]
fn a_missing_certificate_file_stops_start_up_by_its_key() {
    let dir = TempDir::new("tls-missing");
    let config = dir.write(
        "config.toml",
        &synthetic_with(&format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            dir.path("nope.pem"),
            dir.path("nope.key")
        )),
    );
    let out = Command::new(infergate_e2e::binary()).arg("check-config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("server.tls.cert") && stderr.contains("nope.pem"), "{stderr}");
}

#[test]
fn official_openai_sdk_works_over_https() {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (make test does)", python.display());
    let (ca, dir) = (TestCa::default(), TempDir::new("tls-sdk"));
    let gw = tls_gateway(&dir, &ca.server("gateway"), None, "");
    let ca_file = dir.write("ca.pem", ca.pem());
    let out = Command::new(python)
        .arg(repo_root().join("tests/python/openai_sdk_check.py"))
        .args(["--base-url", &gw.url("/v1"), "--api-key", TEST_KEY])
        // httpx (the SDK's client) trusts this file instead of the system's roots.
        .env("SSL_CERT_FILE", &ca_file)
        .output()
        .expect("run the SDK check");
    let stdout = infergate_e2e::assert_passed(&out, "SDK checks");
    assert!(stdout.contains("https://"), "{stdout}");
}
