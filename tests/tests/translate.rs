//! DeepL-compatible `/v2/translate` on the real binary with
//! `examples/synthetic.toml` (every text is a job for `synthetic-chat`), and
//! DeepL's official Python client pointed at it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use infergate_e2e::{client, repo_root, Gateway, WEB_TENANT};
use serde_json::{json, Value};

fn gateway() -> Gateway {
    Gateway::start("examples/synthetic.toml")
}

const SYNTHETIC: &str = "[synthetic synthetic-chat]";

#[tokio::test]
async fn several_texts_are_detected_translated_in_order_and_batched() {
    // A batching window wide enough that a request's texts always meet in
    // one batch, however busy the machine.
    let gw = Gateway::start_with(&format!(
        r#"{WEB_TENANT}
[translation]
model = "synthetic-chat"

[[models]]
name = "synthetic-chat"
task = "chat"
batch = {{ max_size = 8, max_delay = "200ms" }}
backend = {{ kind = "synthetic", base_latency = "5ms", per_cost = "10us", token_interval = "1ms" }}
"#
    ));
    let texts = [
        "The weather is lovely today and we are going for a walk in the park.",
        "Das Wetter ist heute schön und wir gehen im Park spazieren.",
        "Il fait beau aujourd'hui et nous allons nous promener dans le parc.",
        "Hoy hace buen tiempo y vamos a dar un paseo por el parque.",
        "12345",
        "Where is the railway station, please?",
    ];
    let r = client()
        .post(gw.url("/v2/translate"))
        .json(&json!({ "text": texts, "target_lang": "de", "show_billed_characters": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let batch: usize = r.headers()["x-infergate-batch-size"].to_str().unwrap().parse().unwrap();
    let body: Value = r.json().await.unwrap();
    let out = body["translations"].as_array().unwrap();
    assert_eq!(out.len(), texts.len());
    let detected: Vec<&str> = out.iter().map(|t| t["detected_source_language"].as_str().unwrap()).collect();
    assert_eq!(detected[..4], ["EN", "DE", "FR", "ES"]);
    assert_eq!(detected[5], "EN");
    // German is already German and digits have nothing to translate.
    assert_eq!(out[1]["text"], texts[1]);
    assert_eq!(out[4]["text"], "12345");
    let translated: Vec<&str> = [0, 2, 3, 5].iter().map(|&i| out[i]["text"].as_str().unwrap()).collect();
    assert!(translated.iter().all(|t| t.starts_with(SYNTHETIC)), "{translated:?}");
    let distinct: std::collections::HashSet<_> = translated.iter().collect();
    assert_eq!(distinct.len(), 4, "each text got its own answer, in order: {translated:?}");
    for (entry, text) in out.iter().zip(texts) {
        assert_eq!(entry["billed_characters"], text.chars().count());
    }
    assert!(batch >= 2, "the texts' jobs ran batched, not one by one (batch {batch})");

    // The same request twice gives the same answers (greedy, seeded).
    let again: Value = client()
        .post(gw.url("/v2/translate"))
        .json(&json!({ "text": texts, "target_lang": "DE" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["translations"][0]["text"], out[0]["text"]);
    assert!(again["translations"][0].get("billed_characters").is_none());
}

#[tokio::test]
async fn form_bodies_deepl_keys_languages_and_usage() {
    let gw = gateway();
    let http = reqwest::Client::new();
    let form = "text=Good%20morning&text=See+you+tomorrow&target_lang=FR&source_lang=en&model_type=latency_optimized";
    let r = http
        .post(gw.url("/v2/translate"))
        .header("authorization", "DeepL-Auth-Key sk-infergate-test")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let out = body["translations"].as_array().unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|t| t["detected_source_language"] == "EN"));
    assert!(out.iter().all(|t| t["model_type_used"] == "latency_optimized"));

    let targets: Value =
        client().get(gw.url("/v2/languages?type=target")).send().await.unwrap().json().await.unwrap();
    let codes: Vec<&str> =
        targets.as_array().unwrap().iter().map(|l| l["language"].as_str().unwrap()).collect();
    assert!(codes.contains(&"EN-GB") && codes.contains(&"DE") && !codes.contains(&"EN"), "{codes:?}");
    assert!(targets[0]["supports_formality"].is_boolean());
    let sources: Value = client().get(gw.url("/v2/languages")).send().await.unwrap().json().await.unwrap();
    assert!(sources.as_array().unwrap().iter().any(|l| l["language"] == "EN"));

    let usage: Value = client().get(gw.url("/v2/usage")).send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["character_count"], "Good morning".len() + "See you tomorrow".len());
}

#[tokio::test]
async fn bad_requests_get_deepl_errors() {
    let gw = gateway();
    let post = |body: Value| client().post(gw.url("/v2/translate")).json(&body).send();
    let cases = [
        (json!({ "target_lang": "DE" }), "text"),
        (json!({ "text": ["x"] }), "target_lang"),
        (json!({ "text": ["x"], "target_lang": "KLINGON" }), "target_lang"),
        (json!({ "text": ["x"], "target_lang": "DE", "source_lang": "EN-GB" }), "source_lang"),
        (json!({ "text": ["x"], "target_lang": "DE", "tag_handling": "xml" }), "Tag handling"),
        (json!({ "text": ["x"], "target_lang": "DE", "glossary_id": "g" }), "Glossaries"),
        (
            json!({ "text": (0..51).map(|i| i.to_string()).collect::<Vec<_>>(), "target_lang": "DE" }),
            "Too many",
        ),
        (json!({ "text": "x", "target_lang": 5 }), "target_lang"),
    ];
    for (body, words) in cases {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let error: Value = r.json().await.unwrap();
        let message = error["message"].as_str().unwrap_or_else(|| panic!("DeepL shape: {error}"));
        assert!(message.contains(words), "{body}: {message}");
        assert!(error.get("error").is_none());
    }
    let r =
        client().post(gw.url("/v2/translate")).body("{not json").header("content-type", "application/json");
    assert_eq!(r.send().await.unwrap().status(), 400);
    let r = client().post(gw.url("/v2/translate")).body("x").header("content-type", "text/plain");
    assert_eq!(r.send().await.unwrap().status(), 415);
    let r = reqwest::Client::new()
        .post(gw.url("/v2/translate"))
        .header("authorization", "DeepL-Auth-Key wrong")
        .json(&json!({ "text": ["x"], "target_lang": "DE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "DeepL answers a bad key with 403");
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());
    // Good requests still work after the bad ones.
    assert_eq!(post(json!({ "text": ["Hello there"], "target_lang": "IT" })).await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_official_deepl_client_translates_through_the_gateway() {
    let gw = gateway();
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/deepl_client_check.py"))
        .args(["--server-url", &gw.url(""), "--auth-key", "sk-infergate-test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["one"]["detected_source_lang"], "EN", "{result}");
    assert!(result["one"]["text"].as_str().unwrap().starts_with(SYNTHETIC), "{result}");
    assert_eq!(result["one"]["billed_characters"], "Good morning, how are you?".len());
    let many = result["many"].as_array().unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many[1]["detected_source_lang"], "DE", "{result}");
    assert_eq!(many[1]["text"], "Guten Morgen, wie geht es dir?", "German into German stays");
    assert!(result["usage"]["character_count"].as_u64().unwrap() > 0, "{result}");
    assert!(result["target_languages"].as_array().unwrap().iter().any(|c| c == "PT-BR"), "{result}");
    assert_eq!(result["bad_key"], "AuthorizationException", "{result}");
    assert_eq!(result["bad_target"], "DeepLException", "{result}");
}

#[tokio::test]
async fn texts_are_split_at_sentences_unless_asked_not_to() {
    let gw = gateway();
    let text = "Good morning, dear neighbours\nHow are you today? We meet at the station at noon.";
    let translate = |split: Option<&str>| {
        let mut body = json!({ "text": [text], "target_lang": "DE", "source_lang": "EN" });
        if let Some(split) = split {
            body["split_sentences"] = json!(split);
        }
        let gw = &gw;
        async move {
            let r = client().post(gw.url("/v2/translate")).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            body["translations"][0]["text"].as_str().unwrap().to_owned()
        }
    };
    // One answer a sentence, joined with the source's separators.
    let split = translate(None).await;
    assert_eq!(split.matches(SYNTHETIC).count(), 3, "{split}");
    let lines: Vec<&str> = split.split('\n').collect();
    assert_eq!(lines.len(), 2, "{split}");
    assert_eq!(lines[1].matches(SYNTHETIC).count(), 2, "{split}");
    assert_eq!(translate(Some("1")).await, split);
    // With nonewlines only punctuation cuts: the unpunctuated first line and
    // the question are one job.
    assert_eq!(translate(Some("nonewlines")).await.matches(SYNTHETIC).count(), 2);
    // 0: the whole text is one job.
    assert_eq!(translate(Some("0")).await.matches(SYNTHETIC).count(), 1);
}
