//! `infergate-load` against the real gateway (`examples/synthetic.toml`): streamed chat
//! gives TTFT, inter-token and per-token times; the gateway's queue time comes from its
//! headers and its `/metrics` are scraped on the run's clock; the HTML reports of a run and
//! of a capacity search render in headless Chromium (screenshot: not blank, plots drawn); a
//! scenario file mixes every kind of request over HTTP/2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use infergate_e2e::{repo_root, Gateway, TEST_KEY};
use serde_json::Value;

fn load_tool() -> PathBuf {
    let path = repo_root().join("target/debug/infergate-load");
    assert!(path.exists(), "{} is missing: run `cargo build --bins`", path.display());
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infergate-load-report-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_tool(args: &[&str]) -> String {
    let out = Command::new(load_tool()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Headless Chromium's screenshot of `html` and the DOM after it loaded.
fn render(html: &Path, dir: &Path) -> (image::RgbImage, String) {
    let png = dir.join("shot.png");
    let chromium = |extra: &[&str]| {
        let out = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(format!("file://{}", html.display()))
            .output()
            .expect("chromium is installed by scripts/setup.sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    chromium(&[&format!("--screenshot={}", png.display()), "--window-size=900,1400"]);
    let dom = chromium(&["--dump-dom"]);
    (image::open(&png).unwrap().to_rgb8(), dom)
}

/// Pixels within `tolerance` per channel of `hex` (`#rrggbb`).
fn pixels_of(shot: &image::RgbImage, hex: &str, tolerance: u8) -> usize {
    let c = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    let want = [(c >> 16) as u8, (c >> 8) as u8, c as u8];
    shot.pixels().filter(|p| p.0.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= tolerance)).count()
}

fn assert_rendered(shot: &image::RgbImage, dom: &str, charts: usize, colours: &[&str]) {
    let total = (shot.width() * shot.height()) as usize;
    let blank = pixels_of(shot, "#ffffff", 0);
    assert!(blank < total * 97 / 100, "the screenshot is blank ({blank} of {total} pixels white)");
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), charts, "{dom}");
    assert!(!dom.contains("no data"), "a chart has no data: {dom}");
    for colour in colours {
        let n = pixels_of(shot, colour, 10);
        assert!(n > 100, "the {colour} series is not drawn ({n} pixels)");
    }
}

#[test]
fn a_streamed_chat_run_measures_tokens_and_queue_and_its_report_renders() {
    let gw = Gateway::start("examples/synthetic.toml");
    let dir = scratch("run");
    let (json, html) = (dir.join("run.json"), dir.join("run.html"));
    let body = r#"{"model":"synthetic-chat","messages":[{"role":"user","content":"Count to ten."}],"max_tokens":12,"stream":true}"#;
    run_tool(&[
        "run",
        "--url",
        &gw.url("/v1/chat/completions"),
        "-H",
        &format!("Authorization: Bearer {TEST_KEY}"),
        "--body-json",
        body,
        "--rate",
        "40",
        "--duration",
        "3s",
        "--warmup",
        "500ms",
        "--max-lag",
        "50ms",
        "--metrics-url",
        &gw.url("/metrics"),
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--quiet",
    ]);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let s = &report["summary"];
    assert_eq!(s["successes"], s["requests"], "{s}");
    let n = s["requests"].as_u64().unwrap();
    assert!((100..=140).contains(&n), "40/s for 3 s: {n}");
    // The synthetic model streams a token every 2 ms after a 5 ms+ first step.
    let ms = |metric: &str, q: &str| s[metric][q].as_f64().unwrap_or_else(|| panic!("{metric}.{q}: {s}"));
    assert!(ms("ttft_ms", "p50") >= 5.0 && ms("ttft_ms", "p50") < ms("latency_ms", "p50"), "{s}");
    assert!((1.5..50.0).contains(&ms("itl_ms", "p50")), "{s}");
    assert!((1.5..50.0).contains(&ms("tpot_ms", "p50")), "{s}");
    assert!(s["output_tokens"].as_u64().unwrap() >= n * 2, "{s}");
    assert_eq!(s["queue_ms_responses"], n, "every answer carries x-infergate-queue-ms: {s}");
    assert!(ms("queue_ms", "p50") >= 0.0);
    let timeline = s["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 3, "{s}");
    assert!(timeline.iter().all(|m| m["successes"].as_u64().unwrap() >= 30), "{s}");
    let scraped = s["scraped"].as_array().unwrap();
    assert!(scraped.len() >= 3, "a scrape a second: {s}");
    assert!(scraped.iter().any(|x| x["t_s"].as_f64().unwrap() < 0.0), "warmup scrapes come first: {s}");
    assert!(scraped.iter().all(|x| x["values"]["infergate_requests_in_flight"].is_number()), "{s}");
    assert!(scraped.iter().all(|x| x["values"]["infergate_queue_depth"].is_number()), "{s}");

    let (shot, dom) = render(&html, &dir);
    // Percentiles, throughput and the scraped queue over time.
    assert_rendered(&shot, &dom, 3, &["#1f77b4", "#d62728", "#2ca02c"]);
    assert!(dom.contains("TTFT p99") && dom.contains("requests_in_flight"), "{dom}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_capacity_search_report_renders_its_curves() {
    let gw = Gateway::start("examples/synthetic.toml");
    let dir = scratch("capacity");
    let (html, json) = (dir.join("capacity.html"), dir.join("capacity.json"));
    let body = r#"{"model":"synthetic-embed","input":["a short sentence to embed"]}"#;
    let stdout = run_tool(&[
        "capacity",
        "--url",
        &gw.url("/v1/embeddings"),
        "-H",
        &format!("Authorization: Bearer {TEST_KEY}"),
        "--body-json",
        body,
        "--start",
        "20",
        "--max",
        "80",
        "--step",
        "1s",
        "--warmup",
        "200ms",
        "--slo-latency",
        "500ms",
        "--arrivals",
        "constant",
        // Debug builds of both sides share two cores: a hiccup must not end the search.
        "--max-lag",
        "50ms",
        "--html",
        html.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--metrics-url",
        &gw.url("/metrics"),
        "--model",
        "synthetic-embed",
        "--quiet",
    ]);
    assert!(stdout.contains("capacity"), "{stdout}");
    // Each step read the gateway's batching of this model.
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let steps = report["searches"][0]["steps"].as_array().unwrap();
    for step in steps {
        let batch = &step["batch"];
        assert!(batch["batches"].as_f64().unwrap() > 0.0, "{step}");
        assert!((1.0..=32.0).contains(&batch["mean_size"].as_f64().unwrap()), "{step}");
        assert!(batch["mean_execute_ms"].as_f64().unwrap() >= 2.0, "the model's base latency: {step}");
    }
    // `tune` turns them into the model's batch settings, which infergate accepts.
    let out = dir.join("tune");
    let said = run_tool(&[
        "tune",
        "--capacity",
        json.to_str().unwrap(),
        "--baseline-rate",
        "10",
        "--peak-rate",
        "100",
        "--model",
        "synthetic-embed",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(said.contains("scheduler: batch cost"), "{said}");
    let scheduler = std::fs::read_to_string(out.join("scheduler.toml")).unwrap();
    let batch_line = scheduler.lines().find(|l| l.starts_with("batch = ")).unwrap();
    let example = std::fs::read_to_string(repo_root().join("examples/synthetic.toml")).unwrap();
    let original = "batch = { max_size = 32, max_delay = \"2ms\" }";
    assert!(example.contains(original), "examples/synthetic.toml's embedding model changed");
    let tuned = dir.join("tuned.toml");
    std::fs::write(&tuned, example.replacen(original, batch_line, 1)).unwrap();
    let check = Command::new(infergate_e2e::binary()).arg("check-config").arg(&tuned).output().unwrap();
    assert!(check.status.success(), "{scheduler}\n{}", String::from_utf8_lossy(&check.stderr));
    let (shot, dom) = render(&html, &dir);
    // Latency vs throughput and goodput vs offered load.
    assert_rendered(&shot, &dom, 2, &["#1f77b4", "#d62728", "#2ca02c"]);
    assert_eq!(dom.matches("<tr>").count(), 4, "a header and three steps (20, 40, 80): {dom}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_scenario_mixes_chat_embeddings_audio_and_images_with_their_tenants_and_deadlines() {
    let gw = Gateway::start("examples/synthetic.toml");
    let dir = scratch("scenario");
    std::fs::write(dir.join("speech.wav"), infergate_e2e::wav(1.5, 16_000)).unwrap();
    std::fs::write(dir.join("photo.png"), infergate_e2e::images::png_gray1(64, 48)).unwrap();
    let scenario = dir.join("mix.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"seed = 11
[defaults]
key = "{TEST_KEY}"
timeout = "10s"

[[request]]
name = "chat"
kind = "chat"
weight = 2
model = "synthetic-chat"
stream = true
prompt_words = [5, 40]
max_tokens = {{ mean = 10, sd = 3 }}
class = "interactive"

[[request]]
name = "embed-bulk"
kind = "embeddings"
model = "synthetic-embed"
key = "sk-infergate-batch"
inputs = [1, 4]
input_words = [3, 30]

[[request]]
name = "speech"
kind = "transcription"
model = "synthetic-whisper"
audio = "speech.wav"

[[request]]
name = "photo"
kind = "moderation"
model = "synthetic-moderation"
image = "photo.png"
"#
        ),
    )
    .unwrap();
    let (json, html) = (dir.join("run.json"), dir.join("run.html"));
    let stdout = run_tool(&[
        "run",
        "--url",
        &gw.url("/"),
        "--html",
        html.to_str().unwrap(),
        "--scenario",
        scenario.to_str().unwrap(),
        // The gateway speaks h2c too: every request a stream on one connection.
        "--http2",
        "--rate",
        "40",
        "--duration",
        "3s",
        "--max-lag",
        "50ms",
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(stdout.contains("| scenario |") && stdout.contains("(HTTP/2)"), "{stdout}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let s = &report["summary"];
    assert_eq!(s["successes"], s["requests"], "{stdout}");
    let scenarios = s["scenarios"].as_object().unwrap();
    let count = |name: &str| scenarios[name]["requests"].as_u64().unwrap();
    let total: u64 = ["chat", "embed-bulk", "speech", "photo"].iter().map(|n| count(n)).sum();
    assert_eq!(total, s["requests"].as_u64().unwrap());
    // Weights 2:1:1:1 over ~120 requests.
    assert!(count("chat") > count("embed-bulk") && count("chat") > count("photo"), "{stdout}");
    assert!(["embed-bulk", "speech", "photo"].iter().all(|n| count(n) >= 10), "{stdout}");
    assert!(scenarios["chat"]["ttft_ms"]["p50"].is_number(), "streamed chat has TTFT: {stdout}");
    assert!(scenarios["speech"].get("ttft_ms").is_none());
    // The tenants' classes reached the scheduler: the bulk key's embeddings ran as `batch`,
    // every request had a deadline.
    let scrape = Command::new("curl").args(["-sf", &gw.url("/metrics")]).output().unwrap();
    let metrics = String::from_utf8_lossy(&scrape.stdout);
    let outcomes = |model: &str, class: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("infergate_deadline_outcomes_total{"))
            .filter(|l| {
                l.contains(&format!("model=\"{model}\"")) && l.contains(&format!("class=\"{class}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(outcomes("synthetic-embed", "batch"), count("embed-bulk") as f64, "{metrics}");
    assert_eq!(outcomes("synthetic-chat", "interactive"), count("chat") as f64, "{metrics}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("By scenario entry") && page.contains("<td>embed-bulk</td>"), "{page}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn four_shards_send_one_schedule_between_them_and_merge_into_its_report() {
    let gw = Gateway::start("examples/synthetic.toml");
    let dir = scratch("shards");
    let scenario = dir.join("mix.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"seed = 5
[defaults]
key = "{TEST_KEY}"

[[request]]
name = "chat"
kind = "chat"
model = "synthetic-chat"
prompt_words = [2, 20]
max_tokens = {{ mean = 6, sd = 2 }}

[[request]]
name = "embed"
kind = "embeddings"
model = "synthetic-embed"
inputs = [1, 3]
"#
        ),
    )
    .unwrap();
    let url = gw.url("/");
    let args = |json: &Path, shard: Option<String>| {
        let mut args: Vec<String> = [
            "run",
            "--url",
            &url,
            "--scenario",
            scenario.to_str().unwrap(),
            "--rate",
            "60",
            "--arrivals",
            "poisson",
            "--seed",
            "9",
            "--duration",
            "2s",
            "--max-lag",
            "100ms",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(shard.map(|s| ["--shard".to_owned(), s]).into_iter().flatten());
        args
    };
    // The four shards at once, as four load machines would run them; then the whole schedule.
    let shards: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("shard-{i}.json"))).collect();
    let running: Vec<_> = (shards.iter().enumerate())
        .map(|(i, json)| Command::new(load_tool()).args(args(json, Some(format!("{i}/4")))).spawn().unwrap())
        .collect();
    for mut child in running {
        assert!(child.wait().unwrap().success());
    }
    let whole = dir.join("whole.json");
    run_tool(&args(&whole, None).iter().map(String::as_str).collect::<Vec<_>>());

    let merged = dir.join("merged.json");
    let mut merge = vec!["merge".to_owned()];
    merge.extend(shards.iter().map(|p| p.display().to_string()));
    merge.extend(["--json".to_owned(), merged.display().to_string()]);
    let stdout = run_tool(&merge.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stdout.contains("4 shards merged"), "{stdout}");
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let (merged, whole) = (read(&merged), read(&whole));
    let shard_requests: u64 = shards.iter().map(|p| read(p)["summary"]["requests"].as_u64().unwrap()).sum();
    let requests = |r: &Value, entry: Option<&str>| match entry {
        None => r["summary"]["requests"].as_u64().unwrap(),
        Some(e) => r["summary"]["scenarios"][e]["requests"].as_u64().unwrap(),
    };
    assert_eq!(requests(&merged, None), shard_requests);
    // One seeded schedule: the same arrivals, and each drew the same entry.
    assert_eq!(requests(&merged, None), requests(&whole, None));
    assert!(requests(&whole, None) > 60, "{}", requests(&whole, None));
    for entry in ["chat", "embed"] {
        assert_eq!(requests(&merged, Some(entry)), requests(&whole, Some(entry)), "{entry}");
    }
    assert_eq!(merged["summary"]["schedule"]["offered_per_s"], whole["summary"]["schedule"]["offered_per_s"]);
    assert_eq!(merged["params"]["merged_shards"], 4);

    // Every shard is needed.
    let out = Command::new(load_tool()).arg("merge").args(&shards[..3]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards missing: 3/4"));
}
