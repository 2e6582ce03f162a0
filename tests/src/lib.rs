//! Helpers shared by the end-to-end tests: start the real `infergate`
//! binary on a free port, talk to it, stop it.

// A test harness: failing loudly on a broken setup is its job.
#![allow(clippy::expect_used, clippy::panic)]

pub mod images;
pub mod otlp;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The key of tenant `web` (interactive) in `examples/synthetic.toml`.
pub const TEST_KEY: &str = "sk-infergate-test";

/// The SHA-256 of [`TEST_KEY`], for tenants that tests write.
pub const TEST_KEY_SHA256: &str = "3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4";
/// The key of tenant `bulk` (batch) in `examples/synthetic.toml`, and its SHA-256.
pub const BULK_KEY: &str = "sk-infergate-batch";
pub const BULK_KEY_SHA256: &str = "efc7d0fa4cad2961037188937a43340411abb642686296bfff9ec39b07c5f661";

/// A `[[tenants]]` entry for configs written by tests: tenant `web`,
/// interactive, authenticated by [`TEST_KEY`].
pub const WEB_TENANT: &str = r#"
[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]
"#;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `infergate` binary: `$INFERGATE_BIN`, else `target/debug/infergate`
/// (built by `make test` before the tests run).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("INFERGATE_BIN") {
        return PathBuf::from(path);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug").join("infergate");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` (make test does) or set INFERGATE_BIN",
        path.display()
    );
    path
}

/// A running gateway process, killed when dropped.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https://` with `server.tls`)
    pub base: String,
    /// `http://127.0.0.1:PORT` of `server.metrics_listen`, when set.
    pub metrics_base: Option<String>,
    _config: Option<tempfile_path::TempConfig>,
}

mod tempfile_path {
    use std::path::PathBuf;

    /// A config file written for one test, removed when dropped.
    pub struct TempConfig(pub PathBuf);

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Gateway {
    /// Start with a config file from the repository (e.g. `examples/synthetic.toml`).
    pub fn start(config: &str) -> Gateway {
        Gateway::spawn(&repo_root().join(config), None, &[])
    }

    /// Start with a config given as TOML text.
    pub fn start_with(toml: &str) -> Gateway {
        Gateway::start_with_env(toml, &[])
    }

    /// Start with a config given as TOML text and extra environment.
    pub fn start_with_env(toml: &str, env: &[(&str, &str)]) -> Gateway {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("infergate-e2e-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, toml).expect("write test config");
        let temp = tempfile_path::TempConfig(path.clone());
        Gateway::spawn(&path, Some(temp), env)
    }

    fn spawn(config: &Path, temp: Option<tempfile_path::TempConfig>, env: &[(&str, &str)]) -> Gateway {
        install_crypto_provider();
        let mut command = Command::new(binary());
        command
            // Model paths in configs are relative to the repository root, as for `make run`.
            .current_dir(repo_root())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start infergate");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // The metrics listener's line, if any, comes before the main one.
        let metrics = std::sync::Arc::new(std::sync::Mutex::new(None));
        let metrics_line = metrics.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("infergate metrics on ") {
                    *metrics_line.lock().expect("metrics line") = Some(addr.to_owned());
                }
                if let Some(addr) = line.strip_prefix("infergate listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => base,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!("infergate exited ({status}) before reporting its address; see its stderr above");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("infergate did not report its address within 30 s");
            }
        };
        let metrics_base = metrics.lock().expect("metrics line").clone();
        Gateway { child, base, metrics_base, _config: temp }
    }

    /// The full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file written by [`Gateway::start_with`], to rewrite it.
    pub fn config_path(&self) -> Option<&Path> {
        self._config.as_ref().map(|c| c.0.as_path())
    }

    /// Send a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Wait for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// reqwest's TLS is rustls without a built-in crypto provider (its
/// default, aws-lc-rs, needs a C build), and building any client panics
/// until the process has one. Every test starts a [`Gateway`] or a
/// [`FakeUpstream`] before its first request: they, and [`client`],
/// install ring's first.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that authenticates as tenant `web`.
pub fn client() -> reqwest::Client {
    install_crypto_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {TEST_KEY}").parse().expect("valid header");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A 16-bit mono PCM WAV of `seconds` of a 440 Hz tone.
pub fn wav(seconds: f64, sample_rate: u32) -> Vec<u8> {
    let samples: Vec<i16> = (0..(seconds * f64::from(sample_rate)) as u32)
        .map(|i| {
            let t = f64::from(i) / f64::from(sample_rate);
            ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
        })
        .collect();
    wav_of(&samples, sample_rate)
}

/// A 16-bit mono PCM WAV of these samples.
pub fn wav_of(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A FLAC file of `seconds` of silence at `sample_rate` with `channels`
/// channels (16-bit), each frame of 16384 samples one CONSTANT subframe per
/// channel: a few bytes of upload for every second of audio, the smallest
/// file that makes a decoder work the longest.
pub fn flac_silence(seconds: u32, sample_rate: u32, channels: u8) -> Vec<u8> {
    const BLOCK: u32 = 16384;
    assert!((1..=8).contains(&channels) && sample_rate < 1 << 20);
    let total = u64::from(seconds) * u64::from(sample_rate);
    let mut out = b"fLaC".to_vec();
    // STREAMINFO, the last metadata block: block sizes, frame sizes unknown,
    // rate (20 bits), channels - 1 (3), bits - 1 (5), samples (36), no MD5.
    out.extend_from_slice(&[0x80, 0, 0, 34]);
    out.extend_from_slice(&(BLOCK as u16).to_be_bytes());
    out.extend_from_slice(&(BLOCK as u16).to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    let packed = (u64::from(sample_rate) << 44)
        | (u64::from(channels - 1) << 41)
        | (15u64 << 36)
        | (total & ((1 << 36) - 1));
    out.extend_from_slice(&packed.to_be_bytes());
    out.extend_from_slice(&[0; 16]);
    let mut left = total;
    let mut number = 0u32;
    while left > 0 {
        let size = left.min(u64::from(BLOCK)) as u32;
        left -= u64::from(size);
        let start = out.len();
        // Sync and fixed block size; block size from the 16 bits at the end
        // of the header, rate from STREAMINFO; independent channels, 16 bits.
        out.extend_from_slice(&[0xFF, 0xF8, 0x70, ((channels - 1) << 4) | 0x08]);
        // The frame number, UTF-8 coded (at most 3 bytes here).
        match number {
            0..=0x7F => out.push(number as u8),
            0x80..=0x7FF => {
                out.extend_from_slice(&[0xC0 | (number >> 6) as u8, 0x80 | (number & 0x3F) as u8])
            }
            _ => out.extend_from_slice(&[
                0xE0 | (number >> 12) as u8,
                0x80 | ((number >> 6) & 0x3F) as u8,
                0x80 | (number & 0x3F) as u8,
            ]),
        }
        out.extend_from_slice(&((size - 1) as u16).to_be_bytes());
        out.push(crc(&out[start..], 8, 0x07) as u8);
        for _ in 0..channels {
            // A CONSTANT subframe of the value 0.
            out.extend_from_slice(&[0x00, 0x00, 0x00]);
        }
        let crc16 = crc(&out[start..], 16, 0x8005) as u16;
        out.extend_from_slice(&crc16.to_be_bytes());
        number += 1;
    }
    out
}

/// An unreflected CRC of `bits` bits with this polynomial, starting at 0
/// (FLAC's CRC-8 and CRC-16).
fn crc(bytes: &[u8], bits: u32, poly: u32) -> u32 {
    let top = 1 << (bits - 1);
    let mask = if bits == 32 { u32::MAX } else { (1 << bits) - 1 };
    let mut crc = 0u32;
    for &byte in bytes {
        crc ^= u32::from(byte) << (bits - 8);
        for _ in 0..8 {
            let shifted = if crc & top != 0 { (crc << 1) ^ poly } else { crc << 1 };
            crc = shifted & mask;
        }
    }
    crc
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
    let line = text.lines().find(|l| l.starts_with(field)).expect("the field");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
}

/// The CPU time (user and system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    // Fields after the command name (which may hold spaces), from field 3 on.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // Linux reports these in USER_HZ, 100 on every architecture it runs on.
    ticks / 100.0
}

/// The CPU seconds a process uses from 1 s to 3 s after now: called when a
/// client has just left, what work on its request did not stop within a
/// second (near 0 when it did, near 2 per busy core when not).
pub async fn cpu_after_a_second(pid: u32) -> f64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cpu_seconds(pid) - before
}

/// The gateway's `/metrics` text (as tenant `web`).
pub async fn metrics_text(gw: &Gateway) -> String {
    client().get(gw.url("/metrics")).send().await.expect("GET /metrics").text().await.expect("metrics body")
}

/// The value of the first metrics line that starts with `prefix` (0 if none).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Parse an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> =
                event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// A running `infergate-fake-upstream`, killed when dropped.
pub struct FakeUpstream {
    child: Child,
    /// `http://ADDR:PORT`
    pub base: String,
    args: Vec<String>,
}

impl FakeUpstream {
    /// Start one listening on `listen` (e.g. `127.0.0.2:0`) with extra arguments.
    pub fn start(listen: &str, extra: &[&str]) -> FakeUpstream {
        install_crypto_provider();
        let mut args: Vec<String> = vec!["--listen".into(), listen.into()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let path = binary().with_file_name("infergate-fake-upstream");
        let mut child = Command::new(&path)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("fake upstream prints its address");
        let addr = line.trim().strip_prefix("listening on ").expect("listening on ADDR").to_owned();
        FakeUpstream { child, base: format!("http://{addr}"), args }
    }

    /// Kill it at once (SIGKILL), as a crashed server.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same address.
    pub fn restart(&mut self) {
        self.kill();
        let addr = self.base.trim_start_matches("http://").to_owned();
        let extra: Vec<&str> = self.args.iter().skip(2).map(String::as_str).collect();
        *self = FakeUpstream::start(&addr, &extra);
    }

    /// Set its fault mode (`ok`, `error`, `slow`, `hang`, `disconnect`).
    pub async fn fault(&self, mode: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/fault", self.base))
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .expect("fault endpoint");
        assert!(r.status().is_success());
    }

    /// What its `/debug/requests` says.
    async fn debug(&self) -> serde_json::Value {
        reqwest::get(format!("{}/debug/requests", self.base))
            .await
            .expect("debug endpoint")
            .json()
            .await
            .expect("json")
    }

    /// How many requests it has received on a path.
    pub async fn count(&self, path: &str) -> u64 {
        self.debug().await["counts"][path].as_u64().unwrap_or(0)
    }

    /// The last requests it has received on a path, with their headers.
    pub async fn seen(&self, path: &str) -> Vec<serde_json::Value> {
        self.debug().await["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real `redis-server` (Debian's, installed by `scripts/setup.sh`) on a
/// free loopback port, without persistence; killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server (scripts/setup.sh installs it)");
        let redis = Redis { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill it now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The stdout of a finished Python client check (`tests/python/*.py`),
/// printed; panics unless it exited 0 and printed `PASS`.
pub fn assert_passed(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("PASS"), "{what}: no PASS in\n{stdout}");
    stdout
}

/// Stream "What is the capital of France?" from `model` with the official
/// OpenAI Python SDK (tests/python/openai_sdk_chat_stream.py) and check
/// what arrived: several pieces, "Paris", a `stop` and the usage chunk.
pub fn assert_the_openai_sdk_streams(gw: &Gateway, model: &str) {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/openai_sdk_chat_stream.py"))
        .args(["--base-url", &gw.url("/v1"), "--api-key", "sk-infergate-dev", "--model", model])
        .output()
        .expect("run the OpenAI SDK");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let pieces = result["pieces"].as_array().map_or(0, Vec::len);
    assert!(pieces > 3, "token by token: {result}");
    assert!(result["text"].as_str().is_some_and(|t| t.contains("Paris")), "{result}");
    assert_eq!(result["finish_reason"], "stop", "{result}");
    assert!(result["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 3), "{result}");
}

/// Decoding steps `model` has run: one backend execution per step of a
/// generative model (from the gateway's /metrics).
pub async fn decoding_steps(gw: &Gateway, model: &str) -> u64 {
    let metrics = reqwest::get(gw.url("/metrics")).await.expect("GET /metrics");
    let metrics = metrics.text().await.expect("the metrics' text");
    let label = format!("model=\"{model}\"");
    metrics
        .lines()
        .find(|l| l.starts_with("infergate_backend_execute_duration_seconds_count") && l.contains(&label))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
