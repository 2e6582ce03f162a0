//! Tenant limits, quotas, allow-lists, usage and hot reload against the
//! real binary, in memory and on a real `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use infergate_e2e::{metric, metrics_text, repo_root, Gateway, Redis};
use serde_json::{json, Value};

const WEB: &str = infergate_e2e::TEST_KEY_SHA256;
const BULK: &str = infergate_e2e::BULK_KEY_SHA256;
const WEB_KEY: &str = "sk-infergate-test";
use infergate_e2e::BULK_KEY;

/// Two tenants (`web`: interactive, `bulk`: batch) with extra lines each,
/// `store` lines, and synthetic chat and embeddings models (one slow).
fn config(web: &str, bulk: &str, store: &str) -> String {
    format!(
        r#"
[translation]
model = "synthetic-chat"

{store}

[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["{WEB}"]
{web}

[[tenants]]
name = "bulk"
class = "batch"
{bulk}

[[models]]
name = "synthetic-chat"
task = "chat"
concurrency = 4
batch = {{ max_size = 8, max_delay = "2ms" }}
backend = {{ kind = "synthetic", base_latency = "2ms", per_cost = "10us", token_interval = "1ms" }}

[[models]]
name = "synthetic-embed"
task = "embeddings"
concurrency = 2
batch = {{ max_size = 32, max_delay = "1ms" }}
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = 8 }}

[[models]]
name = "slow-embed"
task = "embeddings"
concurrency = 4
batch = {{ max_size = 1 }}
backend = {{ kind = "synthetic", base_latency = "400ms", per_cost = "1us", dimensions = 8 }}
"#
    )
}

fn bulk_key() -> String {
    format!("api_key_sha256 = [\"{BULK}\"]")
}

fn http() -> reqwest::Client {
    infergate_e2e::client()
}

async fn embed(c: &reqwest::Client, gw_base: &str, key: &str, model: &str, input: &str) -> reqwest::Response {
    c.post(format!("{gw_base}/v1/embeddings"))
        .bearer_auth(key)
        .json(&json!({ "model": model, "input": input }))
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Offer `rate` requests a second for `secs`, open loop, spread over
/// `bases`; count 200s and 429s (anything else fails the test).
async fn offer(bases: &[String], rate: f64, secs: f64) -> (u64, u64) {
    let c = http();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (rate * secs).round() as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        let base = bases[i % bases.len()].clone();
        let c = c.clone();
        tasks.spawn(
            async move { embed(&c, &base, WEB_KEY, "synthetic-embed", "hello").await.status().as_u16() },
        );
    }
    let (mut ok, mut limited) = (0, 0);
    while let Some(status) = tasks.join_next().await {
        match status.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, limited)
}

/// 600 requests a minute (burst: one minute's), offered 30 a second for
/// 60 s: 600 + 600 admitted.
const RPM: &str = "rate_limits = { requests_per_minute = 600 }";

/// Both runs at once (one test, one minute): in memory, and two gateway
/// processes sharing one real Redis, each offered 3x the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_at_three_times_its_rate_for_a_minute_in_memory_and_across_replicas_on_redis() {
    let gw = Gateway::start_with(&config(RPM, &bulk_key(), ""));
    let redis = Redis::start();
    // Counting is under test, not the store's latency: a timeout no loaded
    // machine reaches, so no admission falls back to on_error.
    let store = format!("[store]\nurl = \"{}\"\ntimeout = \"1s\"", redis.url());
    let a = Gateway::start_with(&config(RPM, &bulk_key(), &store));
    let b = Gateway::start_with(&config(RPM, &bulk_key(), &store));
    let shared = [a.base.clone(), b.base.clone()];
    let ((ok, limited), (shared_ok, shared_limited)) =
        tokio::join!(offer(std::slice::from_ref(&gw.base), 30.0, 60.0), offer(&shared, 30.0, 60.0));
    let expected = 600.0 + 600.0;
    println!("memory: admitted {ok}, refused {limited}; redis, two gateways: admitted {shared_ok}, refused {shared_limited}; expected {expected}");
    assert!(
        (ok as f64 - expected).abs() <= 0.02 * expected,
        "memory: admitted {ok}, expected {expected} ± 2%"
    );
    assert_eq!(ok + limited, 1800);
    assert!(
        (shared_ok as f64 - expected).abs() <= 0.05 * expected,
        "redis: admitted {shared_ok}, expected {expected} ± 5%"
    );
    let text = metrics_text(&gw).await;
    let refused = metric(
        &text,
        r#"infergate_tenant_requests_total{tenant="web",model="synthetic-embed",outcome="rate_limited",cache="miss"}"#,
    );
    assert_eq!(refused, limited as f64, "refusals are metered per tenant");
    let named = metric(&text, r#"infergate_tenant_limited_total{tenant="web",limit="requests_per_minute"}"#);
    assert_eq!(named, limited as f64);
    let errors = metric(&metrics_text(&a).await, "infergate_store_errors_total");
    assert_eq!(errors, 0.0, "no store errors at 30 req/s");
}

#[tokio::test]
async fn headers_count_down_refusals_say_when_and_the_limit_resets() {
    let c = http();
    // Two a second, a bucket of two; tokens metered too.
    let web = "model_rate_limits = { \"synthetic-embed\" = { requests_per_minute = 120, burst = \"1s\" } }\n\
               rate_limits = { tokens_per_minute = 600 }";
    let gw = Gateway::start_with(&config(web, &bulk_key(), ""));
    let words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
    let first = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", words).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit-requests"), "120");
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "1");
    assert_eq!(header(&first, "x-ratelimit-reset-requests"), "500ms");
    assert_eq!(header(&first, "x-ratelimit-limit-tokens"), "600");
    assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), "600", "nothing used before it");
    let second = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "five").await;
    assert_eq!(header(&second, "x-ratelimit-remaining-requests"), "0");
    let tokens: u64 = header(&second, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert!(tokens <= 590, "the first request's tokens count (ten a second come back): {tokens}");

    let refused = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "six").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-should-retry"), "true");
    assert_eq!(header(&refused, "retry-after"), "1");
    let wait: u64 = header(&refused, "retry-after-ms").parse().unwrap();
    assert!((1..=600).contains(&wait), "retry-after-ms {wait}");
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("requests per minute"), "{body}");

    // The other model has no such limit, and the tenant-wide one is far off.
    let chat = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(WEB_KEY)
        .json(&json!({ "model": "synthetic-chat", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert_eq!(header(&chat, "x-ratelimit-limit-requests"), "", "no request limit on this model");

    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    let again = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "seven").await;
    assert_eq!(again.status(), 200, "the bucket refilled");
    assert_eq!(header(&again, "x-ratelimit-remaining-requests"), "0");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let full = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "eight").await;
    assert_eq!(header(&full, "x-ratelimit-remaining-requests"), "1", "back to the full bucket");
}

#[tokio::test]
async fn daily_tokens_and_monthly_characters_are_quotas() {
    let c = http();
    let bulk = format!("{}\nrate_limits = {{ tokens_per_day = 20 }}", bulk_key());
    let web = "rate_limits = { characters_per_month = 40 }";
    let gw = Gateway::start_with(&config(web, &bulk, ""));
    let long = "a fairly long sentence that certainly has more than twenty tokens in it when counted by the estimate";
    assert_eq!(embed(&c, &gw.base, BULK_KEY, "synthetic-embed", long).await.status(), 200, "allowance left");
    let refused = embed(&c, &gw.base, BULK_KEY, "synthetic-embed", "short").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-should-retry"), "false", "a quota is not retried");
    let until_midnight: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&until_midnight));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    let text = metrics_text(&gw).await;
    let used =
        metric(&text, r#"infergate_tenant_tokens_total{tenant="bulk",model="synthetic-embed",type="input"}"#);
    assert!(used > 20.0, "input tokens metered: {used}");
    let quota = metric(
        &text,
        r#"infergate_tenant_requests_total{tenant="bulk",model="synthetic-embed",outcome="quota_exceeded",cache="miss"}"#,
    );
    assert_eq!(quota, 1.0);

    // DeepL: the month's characters, then 456.
    let translate = |text: &'static str| {
        c.post(gw.url("/v2/translate"))
            .header("authorization", format!("DeepL-Auth-Key {WEB_KEY}"))
            .json(&json!({ "text": [text], "target_lang": "DE" }))
            .send()
    };
    let first = translate("Good morning, how are you today, my friend?").await.unwrap();
    assert_eq!(first.status(), 200);
    let usage: Value = c
        .get(gw.url("/v2/usage"))
        .header("authorization", format!("DeepL-Auth-Key {WEB_KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["character_limit"], 40);
    assert_eq!(usage["character_count"], 43, "{usage}");
    let over = translate("Hello").await.unwrap();
    assert_eq!(over.status().as_u16(), 456);
    let body: Value = over.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("quota"), "{body}");
    let embeddings = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "x").await;
    assert_eq!(embeddings.status(), 200, "a characters quota does not stop embeddings");
}

#[tokio::test]
async fn an_allow_list_hides_other_models() {
    let c = http();
    let bulk = format!("{}\nmodels = [\"synthetic-embed\"]", bulk_key());
    let gw = Gateway::start_with(&config("", &bulk, ""));
    let list = |key: &'static str| c.get(gw.url("/v1/models")).bearer_auth(key).send();
    let names = |v: Value| -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(list(BULK_KEY).await.unwrap().json().await.unwrap()), vec!["synthetic-embed"]);
    assert_eq!(names(list(WEB_KEY).await.unwrap().json().await.unwrap()).len(), 3);
    let chat = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(BULK_KEY)
        .json(&json!({ "model": "synthetic-chat", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 404);
    let body: Value = chat.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    let one = c.get(gw.url("/v1/models/synthetic-chat")).bearer_auth(BULK_KEY).send().await.unwrap();
    assert_eq!(one.status(), 404);
    let kserve = c.get(gw.url("/v2/models/slow-embed")).bearer_auth(BULK_KEY).send().await.unwrap();
    assert_eq!(kserve.status(), 404);
    assert_eq!(embed(&c, &gw.base, BULK_KEY, "synthetic-embed", "x").await.status(), 200);
}

#[tokio::test]
async fn concurrency_counts_requests_in_flight() {
    let c = http();
    let gw = Gateway::start_with(&config("rate_limits = { concurrent = 1 }", &bulk_key(), ""));
    let base = gw.base.clone();
    let c2 = c.clone();
    let slow = tokio::spawn(async move { embed(&c2, &base, WEB_KEY, "slow-embed", "x").await.status() });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "y").await;
    assert_eq!(second.status(), 429, "one in flight already, on any model");
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "z").await.status(),
        200,
        "its slot is free again"
    );
    assert_eq!(
        embed(&c, &gw.base, BULK_KEY, "slow-embed", "w").await.status(),
        200,
        "other tenants are not counted"
    );
}

#[tokio::test]
async fn concurrency_is_counted_across_replicas_on_redis() {
    let c = http();
    let redis = Redis::start();
    // Counting is under test, not the store's latency: a timeout no loaded
    // machine reaches, so no admission falls back to on_error.
    let store = format!("[store]\nurl = \"{}\"\ntimeout = \"1s\"", redis.url());
    let limits = "rate_limits = { concurrent = 2 }";
    let a = Gateway::start_with(&config(limits, &bulk_key(), &store));
    let b = Gateway::start_with(&config(limits, &bulk_key(), &store));
    // Both have connected (in the background at start).
    for gw in [&a, &b] {
        let start = Instant::now();
        while embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "x").await.status() != 200 {
            assert!(start.elapsed() < Duration::from_secs(5), "the store is not answering");
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let slow = |base: String| {
        let c = c.clone();
        tokio::spawn(async move { embed(&c, &base, WEB_KEY, "slow-embed", "x").await.status().as_u16() })
    };
    let (one, two) = (slow(a.base.clone()), slow(a.base.clone()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let third = embed(&c, &b.base, WEB_KEY, "synthetic-embed", "y").await;
    assert_eq!(third.status(), 429, "two in flight on the other replica");
    assert_eq!((one.await.unwrap(), two.await.unwrap()), (200, 200));
    // The slots went back (a quiet replica keeps none).
    let start = Instant::now();
    while embed(&c, &b.base, WEB_KEY, "synthetic-embed", "z").await.status() != 200 {
        assert!(start.elapsed() < Duration::from_secs(2), "the slots were not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("slots free again {:?} after the requests ended", start.elapsed());
}

/// Poll until `key` gets `status` on `/v1/models`; how long it took.
async fn until_status(
    c: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    status: u16,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = c.get(gw.url("/v1/models")).bearer_auth(key).send().await.unwrap().status().as_u16();
        if got == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "still {got} after {limit:?}, wanted {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_and_limits_reload_on_sighup_and_file_changes_and_bad_files_are_refused() {
    let c = http();
    let dir = std::env::temp_dir().join(format!("infergate-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("bulk.keys");
    std::fs::write(&keys, format!("# bulk's keys\n{BULK}\n")).unwrap();
    let bulk = format!("api_key_sha256_file = \"{}\"", keys.display());
    let text = config("", &bulk, "");
    let gw = Gateway::start_with(&text);
    let path = gw.config_path().unwrap().to_owned();
    until_status(&c, &gw, BULK_KEY, 200, Duration::ZERO).await; // the key file's key works

    // A limit added by SIGHUP applies at once.
    std::fs::write(&path, config("rate_limits = { requests_per_minute = 1, burst = \"1s\" }", &bulk, ""))
        .unwrap();
    gw.signal("HUP");
    let start = Instant::now();
    loop {
        let a = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "x").await.status().as_u16();
        let b = embed(&c, &gw.base, WEB_KEY, "synthetic-embed", "x").await.status().as_u16();
        if (a, b) == (200, 429) || (a, b) == (429, 429) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "the new limit did not apply within 1 s");
    }

    // A file that does not parse, or that changes [server], is refused whole.
    std::fs::write(&path, "this is = not [valid").unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_status(&c, &gw, BULK_KEY, 200, Duration::ZERO).await;
    let restart = config("", "", "[server]\ndefault_timeout = \"5s\"");
    std::fs::write(&path, restart).unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = c.get(gw.url("/v1/models")).bearer_auth(BULK_KEY).send().await.unwrap();
    assert_eq!(still.status(), 200, "bulk's key was kept: the reload needing a restart was refused");

    // Revoked in the key file: 401 within a second of the change being seen
    // (the watcher looks every 500 ms), without a signal.
    std::fs::write(&path, &text).unwrap();
    gw.signal("HUP");
    until_status(&c, &gw, BULK_KEY, 200, Duration::from_secs(1)).await;
    std::fs::write(&keys, "# revoked\n").unwrap();
    let took = until_status(&c, &gw, BULK_KEY, 401, Duration::from_millis(1500)).await;
    println!("revoked key refused {took:?} after the key file changed");
    // And by SIGHUP, at once.
    std::fs::write(&keys, format!("{BULK}\n")).unwrap();
    gw.signal("HUP");
    until_status(&c, &gw, BULK_KEY, 200, Duration::from_secs(1)).await;
    std::fs::write(&path, config("", "api_key_sha256 = []", "")).unwrap();
    gw.signal("HUP");
    let took = until_status(&c, &gw, BULK_KEY, 401, Duration::from_secs(1)).await;
    println!("revoked key refused {took:?} after SIGHUP");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn redis_going_away_follows_on_error_without_holding_requests() {
    let c = http();
    let mut redis = Redis::start();
    // A timeout far above what a loaded machine's Redis takes, so a request
    // before the kill is always answered by the store, and one that waited
    // for the store after it would show.
    let store = |on_error: &str| {
        format!("[store]\nurl = \"{}\"\non_error = \"{on_error}\"\ntimeout = \"1s\"", redis.url())
    };
    let limits = "rate_limits = { requests_per_minute = 100000, concurrent = 1000 }";
    let allow = Gateway::start_with(&config(limits, &bulk_key(), &store("allow")));
    let deny = Gateway::start_with(&config(limits, &bulk_key(), &store("deny")));
    let timed = |gw: &Gateway| {
        let base = gw.base.clone();
        let c = c.clone();
        async move {
            let start = Instant::now();
            let r = embed(&c, &base, WEB_KEY, "synthetic-embed", "x").await;
            (r.status().as_u16(), start.elapsed(), header(&r, "x-ratelimit-limit-requests"))
        }
    };
    // Both have connected (they do so in the background at start).
    for gw in [&allow, &deny] {
        let start = Instant::now();
        while timed(gw).await.2.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "no limit headers: the store is not answering");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut before = Vec::new();
    for _ in 0..40 {
        let (status, took, limit) = timed(&allow).await;
        assert_eq!((status, limit.as_str()), (200, "100000"));
        before.push(took);
    }
    assert_eq!(timed(&deny).await.0, 200);
    redis.kill();
    let mut after = Vec::new();
    for _ in 0..40 {
        // Served from the allowance this replica leased, or unlimited once
        // that is spent: never waiting for the store.
        let (status, took, _) = timed(&allow).await;
        assert_eq!(status, 200, "on_error = allow serves");
        after.push(took);
    }
    // Leased allowance lapses after a second; then the store's absence shows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _, limit) = timed(&allow).await;
    assert_eq!((status, limit.as_str()), (200, ""), "unlimited while the store is away");
    let (status, took, _) = timed(&deny).await;
    assert_eq!(status, 503, "on_error = deny refuses");
    before.sort();
    after.sort();
    let (worst_before, worst_after) = (before[before.len() - 1], after[after.len() - 1]);
    println!("latency with Redis: median {:?} max {worst_before:?}; without: median {:?} max {worst_after:?}; deny {took:?}", before[20], after[20]);
    assert!(after[20] <= before[20] + Duration::from_millis(10), "median wait grew by more than 10 ms");
    assert!(
        worst_after < Duration::from_millis(900),
        "a request waited out the store timeout: {worst_after:?}"
    );
    let errors = metric(&metrics_text(&allow).await, "infergate_store_errors_total");
    assert!(errors >= 1.0, "failed admissions are counted: {errors}");
}

#[test]
fn the_official_clients_see_rate_limits_and_quotas() {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (make test does)", python.display());
    let web = "model_rate_limits = { \"synthetic-embed\" = { requests_per_minute = 60, burst = \"2s\" } }\n\
               rate_limits = { characters_per_month = 30 }";
    let bulk = format!("{}\nrate_limits = {{ tokens_per_day = 5 }}", bulk_key());
    let gw = Gateway::start_with(&config(web, &bulk, ""));
    let out = std::process::Command::new(python)
        .arg(repo_root().join("tests/python/limits_check.py"))
        .args(["--base-url", &gw.base, "--key", WEB_KEY, "--quota-key", BULK_KEY])
        .output()
        .expect("run the limits check");
    infergate_e2e::assert_passed(&out, "client checks");
}
