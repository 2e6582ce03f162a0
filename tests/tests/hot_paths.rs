//! The hot paths on the real binary. The response cache and request
//! coalescing: hits are the stored answer byte for byte, `Cache-Control` is
//! heeded, tenants keep their own answers unless the model is `shared`,
//! identical requests in flight run one job, `/v2/translate` runs only the
//! texts it has not seen, replicas share answers through Redis. Feedback and
//! captured low-confidence answers: they reach a JSON-lines file, a real
//! Redis stream and a real OTLP receiver, and export as a dataset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use infergate_e2e::{client, metric, metrics_text, sse_data, Gateway};
use serde_json::{json, Value};

const WEB: &str = infergate_e2e::TEST_KEY_SHA256;
const BULK: &str = infergate_e2e::BULK_KEY_SHA256;
use infergate_e2e::BULK_KEY;

/// Tenants `web` and `bulk`; cached synthetic models (`slow-embed` takes
/// 400 ms a job, `shared-embed` shares answers between tenants) and one
/// without a cache.
fn gateway() -> Gateway {
    Gateway::start_with(&format!(
        r#"
[translation]
model = "chat"

[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["{WEB}"]

[[tenants]]
name = "bulk"
class = "batch"
api_key_sha256 = ["{BULK}"]

[[models]]
name = "chat"
task = "chat"
concurrency = 4
batch = {{ max_size = 8, max_delay = "2ms" }}
cache = {{ ttl = "1h", max_bytes = 1048576 }}
backend = {{ kind = "synthetic", base_latency = "2ms", per_cost = "10us", token_interval = "1ms" }}

[[models]]
name = "embed"
task = "embeddings"
concurrency = 2
batch = {{ max_size = 32, max_delay = "1ms" }}
cache = {{ ttl = "1h", max_bytes = 1048576 }}
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = 8 }}

[[models]]
name = "slow-embed"
task = "embeddings"
concurrency = 4
batch = {{ max_size = 1 }}
cache = {{}}
backend = {{ kind = "synthetic", base_latency = "400ms", per_cost = "1us", dimensions = 8 }}

[[models]]
name = "shared-embed"
task = "embeddings"
cache = {{ shared = true }}
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = 8 }}

[[models]]
name = "plain-embed"
task = "embeddings"
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = 8 }}
"#
    ))
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn post(
    request: reqwest::RequestBuilder,
    body: &Value,
) -> (reqwest::StatusCode, Option<String>, String) {
    let r = request.json(body).send().await.unwrap();
    let (status, cache) = (r.status(), header(&r, "x-infergate-cache"));
    (status, cache, r.text().await.unwrap())
}

/// Jobs `model` has run: the sum of its batch sizes.
async fn jobs(gw: &Gateway, model: &str) -> f64 {
    metric(&metrics_text(gw).await, &format!("infergate_batch_size_sum{{model=\"{model}\"}}"))
}

/// An answer without its per-answer fields.
fn without_ids(body: &str) -> Value {
    let mut value: Value = serde_json::from_str(body).unwrap();
    value.as_object_mut().unwrap().remove("created");
    value.as_object_mut().unwrap().remove("id");
    value
}

#[tokio::test]
async fn hits_are_the_stored_answer_and_say_so() {
    let gw = gateway();
    let c = client();
    let body = json!({ "model": "embed", "input": ["a cached sentence", "and another"] });
    let first = c.post(gw.url("/v1/embeddings")).json(&body).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-infergate-cache").as_deref(), Some("miss"));
    assert!(header(&first, "x-infergate-batch-size").is_some());
    let first = first.text().await.unwrap();
    let second = c.post(gw.url("/v1/embeddings")).json(&body).send().await.unwrap();
    assert_eq!(header(&second, "x-infergate-cache").as_deref(), Some("hit"));
    assert_eq!(header(&second, "x-infergate-queue-ms").as_deref(), Some("0"));
    assert_eq!(header(&second, "x-infergate-batch-size"), None, "a hit ran in no batch");
    assert!(header(&second, "x-request-id").is_some_and(|id| !id.is_empty()));
    assert_eq!(second.text().await.unwrap(), first, "a hit is the stored answer, byte for byte");
    assert_eq!(jobs(&gw, "embed").await, 1.0, "the hit ran no job");

    // Chat at temperature 0: the same answer, with an id and time of its own.
    let chat = json!({ "model": "chat", "messages": [{ "role": "user", "content": "hello" }],
                       "temperature": 0, "max_tokens": 8 });
    let (_, miss, first) = post(c.post(gw.url("/v1/chat/completions")), &chat).await;
    let (_, hit, second) = post(c.post(gw.url("/v1/chat/completions")), &chat).await;
    assert_eq!((miss.as_deref(), hit.as_deref()), (Some("miss"), Some("hit")));
    assert_eq!(without_ids(&second), without_ids(&first));
    let ids = |body: &str| serde_json::from_str::<Value>(body).unwrap()["id"].clone();
    assert_ne!(ids(&first), ids(&second), "each answer has its own id");

    // Sampling without a seed cannot be cached; with a seed it can.
    let sampled = json!({ "model": "chat", "messages": [{ "role": "user", "content": "hello" }],
                          "temperature": 0.8, "max_tokens": 8 });
    let (_, none, _) = post(c.post(gw.url("/v1/chat/completions")), &sampled).await;
    assert_eq!(none.as_deref(), Some("none"));
    let seeded = json!({ "model": "chat", "messages": [{ "role": "user", "content": "hello" }],
                         "temperature": 0.8, "seed": 7, "max_tokens": 8 });
    let (_, miss, _) = post(c.post(gw.url("/v1/chat/completions")), &seeded).await;
    let (_, hit, _) = post(c.post(gw.url("/v1/chat/completions")), &seeded).await;
    assert_eq!((miss.as_deref(), hit.as_deref()), (Some("miss"), Some("hit")));

    // A streamed answer is replayed as the same events.
    let streamed = json!({ "model": "chat", "messages": [{ "role": "user", "content": "tell me a story" }],
                           "temperature": 0, "max_tokens": 12, "stream": true });
    let (_, miss, first) = post(c.post(gw.url("/v1/chat/completions")), &streamed).await;
    let (_, hit, second) = post(c.post(gw.url("/v1/chat/completions")), &streamed).await;
    assert_eq!((miss.as_deref(), hit.as_deref()), (Some("miss"), Some("hit")));
    let events = |body: &str| -> Vec<Value> {
        sse_data(body).iter().filter(|d| *d != "[DONE]").map(|d| without_ids(d)).collect()
    };
    assert!(events(&first).len() > 2, "{first}");
    assert_eq!(events(&second), events(&first));
    assert_eq!(sse_data(&second).last().map(String::as_str), Some("[DONE]"));

    // A model without a cache says nothing of one.
    let plain = c.post(gw.url("/v1/embeddings")).json(&json!({ "model": "plain-embed", "input": "x" }));
    let (status, cache, _) = post(plain, &json!({ "model": "plain-embed", "input": "x" })).await;
    assert_eq!((status.as_u16(), cache), (200, None));

    let text = metrics_text(&gw).await;
    assert_eq!(metric(&text, r#"infergate_cache_requests_total{model="embed",result="hit"}"#), 1.0);
    assert_eq!(metric(&text, r#"infergate_cache_requests_total{model="chat",result="hit"}"#), 3.0);
    assert_eq!(metric(&text, r#"infergate_cache_requests_total{model="chat",result="none"}"#), 1.0);
    assert!(metric(&text, r#"infergate_cache_bytes{model="chat"}"#) > 0.0, "{text}");
    assert_eq!(metric(&text, r#"infergate_cache_entries{model="embed"}"#), 1.0);
    // Hits are requests of the tenant, marked, without tokens of their own.
    let hits = r#"infergate_tenant_requests_total{tenant="web",model="chat",outcome="ok",cache="hit"}"#;
    assert_eq!(metric(&text, hits), 3.0, "{text}");
}

#[tokio::test]
async fn no_cache_refreshes_the_stored_answer_and_no_store_leaves_no_trace() {
    let gw = gateway();
    let c = client();
    let embed = |input: &str| json!({ "model": "embed", "input": input });
    let (_, cache, _) =
        post(c.post(gw.url("/v1/embeddings")).header("cache-control", "no-cache"), &embed("one")).await;
    assert_eq!(cache.as_deref(), Some("bypass"));
    let (_, cache, _) = post(c.post(gw.url("/v1/embeddings")), &embed("one")).await;
    assert_eq!(cache.as_deref(), Some("hit"), "no-cache stored the fresh answer");
    let (_, cache, _) =
        post(c.post(gw.url("/v1/embeddings")).header("cache-control", "no-cache"), &embed("one")).await;
    assert_eq!(cache.as_deref(), Some("bypass"), "no-cache skips a stored answer");

    let (_, cache, _) =
        post(c.post(gw.url("/v1/embeddings")).header("cache-control", "no-store"), &embed("two")).await;
    assert_eq!(cache.as_deref(), Some("bypass"));
    let (_, cache, _) = post(c.post(gw.url("/v1/embeddings")), &embed("two")).await;
    assert_eq!(cache.as_deref(), Some("miss"), "no-store stored nothing");
    assert_eq!(jobs(&gw, "embed").await, 4.0);
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_answer_unless_the_model_is_shared() {
    let gw = gateway();
    let (web, bulk) = (client(), reqwest::Client::new());
    let body = json!({ "model": "embed", "input": "private text" });
    let (_, cache, _) = post(web.post(gw.url("/v1/embeddings")), &body).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    let (_, cache, _) = post(bulk.post(gw.url("/v1/embeddings")).bearer_auth(BULK_KEY), &body).await;
    assert_eq!(cache.as_deref(), Some("miss"), "bulk does not get web's answer");
    let (_, cache, _) = post(bulk.post(gw.url("/v1/embeddings")).bearer_auth(BULK_KEY), &body).await;
    assert_eq!(cache.as_deref(), Some("hit"), "but its own");

    let body = json!({ "model": "shared-embed", "input": "public text" });
    let (_, cache, first) = post(web.post(gw.url("/v1/embeddings")), &body).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    let (_, cache, second) = post(bulk.post(gw.url("/v1/embeddings")).bearer_auth(BULK_KEY), &body).await;
    assert_eq!(cache.as_deref(), Some("hit"), "a shared model's answers are everyone's");
    assert_eq!(first, second);
}

#[tokio::test]
async fn identical_requests_in_flight_run_one_job_and_a_leaver_cancels_nothing() {
    let gw = gateway();
    let body = json!({ "model": "slow-embed", "input": "asked by twenty at once" });
    let requests = (0..20).map(|_| {
        let (c, url, body) = (client(), gw.url("/v1/embeddings"), body.clone());
        tokio::spawn(async move { post(c.post(url), &body).await })
    });
    let answers: Vec<_> =
        futures_util::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    let statuses: Vec<&str> = answers.iter().map(|(_, cache, _)| cache.as_deref().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "miss").count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| ["miss", "coalesced", "hit"].contains(s)), "{statuses:?}");
    assert!(answers.iter().all(|(_, _, body)| *body == answers[0].2), "every waiter got the answer");
    assert_eq!(jobs(&gw, "slow-embed").await, 1.0, "twenty requests, one job");

    // The first asker leaves; the second still gets the answer of the one job.
    let body = json!({ "model": "slow-embed", "input": "the first asker leaves" });
    let leaver = {
        let (c, url, body) = (client(), gw.url("/v1/embeddings"), body.clone());
        tokio::spawn(async move { post(c.post(url), &body).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stayer = {
        let (c, url, body) = (client(), gw.url("/v1/embeddings"), body.clone());
        tokio::spawn(async move { post(c.post(url), &body).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    leaver.abort();
    let (status, cache, _) = stayer.await.unwrap();
    assert_eq!((status.as_u16(), cache.as_deref()), (200, Some("coalesced")));
    assert_eq!(jobs(&gw, "slow-embed").await, 2.0);

    // A lone asker that leaves stops its job: nothing is stored, so the
    // same request after the job would have ended runs anew.
    let body = json!({ "model": "slow-embed", "input": "asked once, then abandoned" });
    let lone = {
        let (c, url, body) = (client(), gw.url("/v1/embeddings"), body.clone());
        tokio::spawn(async move { post(c.post(url), &body).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    lone.abort();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, cache, _) = post(client().post(gw.url("/v1/embeddings")), &body).await;
    assert_eq!((status.as_u16(), cache.as_deref()), (200, Some("miss")), "the abandoned job stored nothing");
    assert_eq!(jobs(&gw, "slow-embed").await, 4.0);

    // A newcomer due sooner than the job in flight runs its own.
    let body = json!({ "model": "slow-embed", "input": "an urgent repeat" });
    let relaxed = {
        let (c, url, body) = (client(), gw.url("/v1/embeddings"), body.clone());
        tokio::spawn(async move { post(c.post(url).header("x-request-timeout", "5s"), &body).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, cache, _) =
        post(client().post(gw.url("/v1/embeddings")).header("x-request-timeout", "2s"), &body).await;
    assert_eq!((status.as_u16(), cache.as_deref()), (200, Some("miss")));
    assert_eq!(relaxed.await.unwrap().1.as_deref(), Some("miss"));
    assert_eq!(jobs(&gw, "slow-embed").await, 6.0);
}

#[tokio::test]
async fn translate_runs_only_the_texts_it_has_not_seen() {
    let gw = gateway();
    let c = client();
    let translate = |texts: Vec<String>| {
        let request = c.post(gw.url("/v2/translate")).json(&json!({ "text": texts, "target_lang": "DE" }));
        async move { request.send().await.unwrap() }
    };
    let text = |i: usize| format!("The parcel number {i} was delivered to the wrong house yesterday.");
    let seen: Vec<String> = (0..45).map(text).collect();
    let r = translate(seen.clone()).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-infergate-cache").as_deref()), (200, Some("miss")));
    let first: Value = r.json().await.unwrap();
    assert_eq!(jobs(&gw, "chat").await, 45.0);

    let texts: Vec<String> = (0..50).map(text).collect();
    let r = translate(texts.clone()).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-infergate-cache").as_deref()), (200, Some("miss")));
    let second: Value = r.json().await.unwrap();
    assert_eq!(jobs(&gw, "chat").await, 50.0, "45 of the 50 texts came from the cache");
    assert_eq!(
        second["translations"].as_array().unwrap()[..45],
        first["translations"].as_array().unwrap()[..]
    );
    assert_eq!(second["translations"].as_array().unwrap().len(), 50);

    let r = translate(texts.clone()).await;
    assert_eq!(header(&r, "x-infergate-cache").as_deref(), Some("hit"));
    assert_eq!(header(&r, "x-infergate-batch-size"), None);
    assert_eq!(r.json::<Value>().await.unwrap(), second);
    assert_eq!(jobs(&gw, "chat").await, 50.0);
}

#[tokio::test]
async fn a_remote_models_cached_answer_is_the_upstreams_with_an_id_and_time_of_its_own() {
    let fake = infergate_e2e::FakeUpstream::start("127.0.0.1:0", &[]);
    let gw = Gateway::start_with(&format!(
        r#"{}
[[models]]
name = "remote"
task = "chat"
concurrency = 8
cache = {{}}
backend = {{ kind = "openai", endpoints = ["{}"], upstream_model = "fake-model" }}
"#,
        infergate_e2e::WEB_TENANT,
        fake.base
    ));
    let c = client();
    let chat = json!({ "model": "remote", "messages": [{ "role": "user", "content": "hi there" }],
                       "temperature": 0, "max_tokens": 8 });
    let (_, miss, first) = post(c.post(gw.url("/v1/chat/completions")), &chat).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, hit, second) = post(c.post(gw.url("/v1/chat/completions")), &chat).await;
    assert_eq!((miss.as_deref(), hit.as_deref()), (Some("miss"), Some("hit")));
    assert_eq!(fake.count("/v1/chat/completions").await, 1, "the hit did not go upstream");
    let (a, b): (Value, Value) =
        (serde_json::from_str(&first).unwrap(), serde_json::from_str(&second).unwrap());
    assert_eq!(a["model"], "remote");
    assert_eq!(b["model"], "remote");
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["created"], b["created"]);
    assert_eq!(without_ids(&second), without_ids(&first));

    // A streamed request on a model that relays the upstream's chunks is not cached.
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let (status, cache, _) = post(c.post(gw.url("/v1/chat/completions")), &streamed).await;
    assert_eq!((status.as_u16(), cache.as_deref()), (200, Some("none")));
}

/// A gateway whose `shared-embed` model shares answers through `redis`;
/// `dimensions` is a setting that changes its answers.
fn replica(redis: &infergate_e2e::Redis, dimensions: u32) -> Gateway {
    Gateway::start_with(&format!(
        r#"{}
[store]
url = "{}"
timeout = "1s"

[[models]]
name = "shared-embed"
task = "embeddings"
cache = {{ shared = true, ttl = "10m" }}
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = {dimensions} }}
"#,
        infergate_e2e::WEB_TENANT,
        redis.url()
    ))
}

#[tokio::test]
async fn replicas_share_answers_in_redis_and_a_changed_model_does_not_serve_old_ones() {
    let redis = infergate_e2e::Redis::start();
    let (one, two) = (replica(&redis, 8), replica(&redis, 8));
    let c = client();
    // Entries in Redis (the writes are not waited for).
    let stored = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "--scan", "--pattern", "infergate:cache:shared-embed:*"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let until = |n: usize| async move {
        for _ in 0..200 {
            if stored() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    };
    // A first answer warms the connection (it connects lazily; on a busy
    // machine its first write may miss the time it is given).
    for i in 0.. {
        let warm = json!({ "model": "shared-embed", "input": format!("warm-up {i}") });
        let (status, _, _) = post(c.post(one.url("/v1/embeddings")), &warm).await;
        assert_eq!(status, 200);
        if until(1).await {
            break;
        }
        assert!(i < 5, "no answer reached Redis");
    }
    let before = stored();
    let body = json!({ "model": "shared-embed", "input": ["asked of one replica", "then of another"] });
    let (_, cache, first) = post(c.post(one.url("/v1/embeddings")), &body).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert!(until(before + 1).await, "the first replica stored its answer in Redis");
    let (_, cache, second) = post(c.post(two.url("/v1/embeddings")), &body).await;
    assert_eq!(cache.as_deref(), Some("hit"), "the second replica found the first one's answer");
    assert_eq!(second, first);
    assert_eq!(jobs(&two, "shared-embed").await, 0.0, "and ran no job for it");
    let (_, cache, _) = post(c.post(two.url("/v1/embeddings")), &body).await;
    assert_eq!(cache.as_deref(), Some("hit"), "now from its own memory");

    // Another version of the model (a setting that changes its answers):
    // the same request is a new one.
    let changed = replica(&redis, 16);
    let (status, cache, third) = post(c.post(changed.url("/v1/embeddings")), &body).await;
    assert_eq!((status.as_u16(), cache.as_deref()), (200, Some("miss")));
    assert_ne!(third, first);
}

/// Run `infergate export-feedback ARGS`; its stdout.
fn export(args: &[&str]) -> String {
    let out = std::process::Command::new(infergate_e2e::binary())
        .arg("export-feedback")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn events(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn feedback_and_low_confidence_answers_reach_every_sink() {
    let redis = infergate_e2e::Redis::start();
    let receiver = infergate_e2e::otlp::Receiver::start().await;
    let dir = std::env::temp_dir().join(format!("infergate-feedback-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jsonl = dir.join("events.jsonl");
    let gw = Gateway::start_with(&format!(
        r#"
[telemetry]
otlp_endpoint = "{otlp}"
export_interval = "100ms"
export_logs = false

[store]
url = "{redis}"

[feedback]
jsonl = "{jsonl}"
redis_stream = "infergate:feedback"
otlp = true

[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["{WEB}"]
capture_content = true

[[tenants]]
name = "bulk"
class = "batch"
api_key_sha256 = ["{BULK}"]

[[models]]
name = "embed"
task = "embeddings"
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = 8 }}

[[models]]
name = "moderation"
task = "moderation"
capture = {{ sample = 1.0, below = 1.0 }}
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us" }}
"#,
        otlp = receiver.endpoint,
        redis = redis.url(),
        jsonl = jsonl.display(),
    ));
    let (web, bulk) = (client(), reqwest::Client::new());
    let ask = |c: &reqwest::Client, id: &str, path: &str, body: Value, bulk_key: bool| {
        let request = c.post(gw.url(path)).header("x-request-id", id).json(&body);
        let request = if bulk_key { request.bearer_auth(BULK_KEY) } else { request };
        async move { request.send().await.unwrap() }
    };
    let embed = json!({ "model": "embed", "input": "feedback me" });
    assert_eq!(ask(&web, "req-web-1", "/v1/embeddings", embed.clone(), false).await.status(), 200);
    assert_eq!(ask(&bulk, "req-bulk-1", "/v1/embeddings", embed.clone(), true).await.status(), 200);
    // A client-chosen id used twice: feedback goes to the latest answer.
    assert_eq!(ask(&web, "dup", "/v1/embeddings", embed.clone(), false).await.status(), 200);
    let moderate = json!({ "model": "moderation", "input": "is this fine?" });
    assert_eq!(ask(&web, "dup", "/v1/moderations", moderate.clone(), false).await.status(), 200);
    assert_eq!(ask(&bulk, "req-bulk-2", "/v1/moderations", moderate, true).await.status(), 200);

    let feedback = |body: Value, bulk_key: bool| {
        ask(if bulk_key { &bulk } else { &web }, "fb", "/v1/feedback", body, bulk_key)
    };
    let r = feedback(
        json!({ "request_id": "req-web-1", "score": 0.2, "correction": "a better answer", "comment": "meh" }),
        false,
    )
    .await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(
        (accepted["status"].as_str(), accepted["content_recorded"].as_bool()),
        (Some("accepted"), Some(true))
    );
    let r = feedback(
        json!({ "request_id": "req-bulk-1", "label": "wrong_language", "correction": "secret" }),
        true,
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(feedback(json!({ "request_id": "dup", "score": 1 }), false).await.status(), 202);
    // Another tenant's answer, an unknown id, and bad bodies.
    let r = feedback(json!({ "request_id": "req-web-1", "score": 1 }), true).await;
    assert_eq!(r.status(), 404);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "request_not_found");
    assert_eq!(feedback(json!({ "request_id": "never", "score": 1 }), false).await.status(), 404);
    assert_eq!(feedback(json!({ "request_id": "req-web-1", "score": 1.5 }), false).await.status(), 400);
    assert_eq!(feedback(json!({ "request_id": "req-web-1" }), false).await.status(), 400);
    assert_eq!(
        feedback(json!({ "request_id": "req-web-1", "score": 1, "extra": 1 }), false).await.status(),
        400
    );

    // The JSON-lines file.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&jsonl).map(|t| events(&t)).unwrap_or_default();
        if lines.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let of = |kind: &str| lines.iter().filter(|e| e["type"] == kind).cloned().collect::<Vec<Value>>();
    let (given, captured) = (of("feedback"), of("low_confidence"));
    assert_eq!(given.len(), 3, "{lines:?}");
    assert_eq!(captured.len(), 2, "{lines:?}");
    let web_one = given.iter().find(|e| e["request_id"] == "req-web-1").unwrap();
    assert_eq!((web_one["tenant"].as_str(), web_one["model"].as_str()), (Some("web"), Some("embed")));
    assert_eq!(
        (web_one["score"].as_f64(), web_one["correction"].as_str()),
        (Some(0.2), Some("a better answer"))
    );
    assert!(web_one["answered_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(web_one["input"], json!(["feedback me"]), "web allows content: the answer's input is kept");
    let bulk_one = given.iter().find(|e| e["request_id"] == "req-bulk-1").unwrap();
    assert_eq!(bulk_one["label"], "wrong_language");
    assert!(bulk_one.get("correction").is_none(), "bulk does not allow content: {bulk_one}");
    assert!(bulk_one.get("input").is_none(), "{bulk_one}");
    let dup = given.iter().find(|e| e["request_id"] == "dup").unwrap();
    assert_eq!(dup["model"], "moderation", "the latest answer to a repeated id");
    assert_eq!((dup["input"].clone(), dup["output"].clone()), (json!(["is this fine?"]), json!([false])));
    let web_capture = captured.iter().find(|e| e["tenant"] == "web").unwrap();
    assert_eq!(web_capture["reason"], "moderation_near_threshold");
    assert!(web_capture["confidence"].as_f64().is_some_and(|c| (0.0..1.0).contains(&c)));
    assert!(web_capture["output"]["flagged"].is_array(), "{web_capture}");
    let bulk_capture = captured.iter().find(|e| e["tenant"] == "bulk").unwrap();
    assert!(bulk_capture.get("output").is_none(), "{bulk_capture}");

    // The Redis stream, through the export command.
    let streamed = events(&export(&["--redis", &redis.url(), "--stream", "infergate:feedback"]));
    assert_eq!(streamed.len(), 5, "{streamed:?}");
    assert_eq!(streamed.iter().filter(|e| e["type"] == "feedback").count(), 3);
    // The JSON-lines file as a dataset: only the feedback, only the dataset's fields.
    let dataset = events(&export(&["--jsonl", jsonl.to_str().unwrap(), "--type", "feedback"]));
    assert_eq!(dataset.len(), 3);
    assert!(dataset.iter().all(|row| row.get("answered_at").is_some() && row["type"] == "feedback"));

    // OTLP log records, with their event names.
    let mut logs = Vec::new();
    for _ in 0..100 {
        logs = receiver.logs();
        if logs.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let named = |name: &str| {
        logs.iter().filter(|l| l.attributes.get("event.name").map(String::as_str) == Some(name)).count()
    };
    assert_eq!((named("infergate.feedback"), named("infergate.low_confidence")), (3, 2), "{logs:?}");
    let record = logs.iter().find(|l| l.body.contains("req-web-1")).unwrap();
    assert_eq!(record.attributes.get("infergate.tenant").map(String::as_str), Some("web"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn feedback_may_reach_another_replica_than_the_one_that_answered() {
    let redis = infergate_e2e::Redis::start();
    let dir = std::env::temp_dir().join(format!("infergate-feedback-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let replica = |name: &str| {
        Gateway::start_with(&format!(
            r#"{}
[store]
url = "{}"
timeout = "1s"

[feedback]
jsonl = "{}"

[[models]]
name = "embed"
task = "embeddings"
backend = {{ kind = "synthetic", base_latency = "1ms", per_cost = "1us", dimensions = 8 }}
"#,
            infergate_e2e::WEB_TENANT,
            redis.url(),
            dir.join(format!("{name}.jsonl")).display()
        ))
    };
    let (one, two) = (replica("one"), replica("two"));
    let c = client();
    let r = c
        .post(one.url("/v1/embeddings"))
        .header("x-request-id", "answered-by-one")
        .json(&json!({ "model": "embed", "input": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The answer reaches Redis without being waited for.
    let mut status = 0;
    for _ in 0..100 {
        let r = c
            .post(two.url("/v1/feedback"))
            .json(&json!({ "request_id": "answered-by-one", "score": 0.9 }))
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 202, "the second replica found the first one's answer");
    let mut lines = String::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(dir.join("two.jsonl")).unwrap_or_default();
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let event: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!((event["model"].as_str(), event["operation"].as_str()), (Some("embed"), Some("embeddings")));
    let r = c
        .post(two.url("/v1/feedback"))
        .json(&json!({ "request_id": "never-answered", "score": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let _ = std::fs::remove_dir_all(&dir);
}
