//! `POST /v1/ocr` and OCR over KServe v2, end to end: every body form and
//! its errors against a synthetic OCR model, and the real PP-OCRv4 models on
//! text rendered at test time with a Debian font (fonts-dejavu-core); and infergate-load's
//! OCR scenario entries against both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Cursor;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use base64::Engine;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use infergate_e2e::{client, repo_root, status_kib, Gateway, TEST_KEY, WEB_TENANT};
use serde_json::{json, Value};

const MODELS: &str = r#"
[limits]
max_image_pixels = 4000000

[[models]]
name = "synthetic-ocr"
task = "ocr"
backend = { kind = "synthetic", base_latency = "1ms" }

[[models]]
name = "pp-ocrv4"
task = "ocr"
backend = { kind = "onnx", pipeline = "ocr", model = "models/ppocr", intra_threads = 2 }

[[models]]
name = "embed"
task = "embeddings"
backend = { kind = "synthetic" }
"#;

const LINES: [&str; 3] =
    ["Deadlines first, then fairness.", "Order 4471 ships on 2026-12-01", "Questions? ops@example.com"];

fn render(lines: &[&str]) -> RgbImage {
    let data = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").expect("fonts-dejavu-core");
    let font = FontRef::try_from_slice(&data).unwrap();
    let size = PxScale::from(26.0);
    let scaled = font.as_scaled(size);
    let mut image = RgbImage::from_pixel(560, 60 + 48 * lines.len() as u32, Rgb([250, 250, 245]));
    for (row, line) in lines.iter().enumerate() {
        let (mut x, baseline) = (30.0, 30.0 + 48.0 * row as f32 + scaled.ascent());
        for c in line.chars() {
            let glyph = font.glyph_id(c).with_scale_and_position(size, ab_glyph::point(x, baseline));
            x += scaled.h_advance(font.glyph_id(c));
            if let Some(outlined) = font.outline_glyph(glyph) {
                let b = outlined.px_bounds();
                outlined.draw(|gx, gy, cov| {
                    let (px, py) = (b.min.x as u32 + gx, b.min.y as u32 + gy);
                    if px < image.width() && py < image.height() {
                        let v = (250.0 * (1.0 - cov.clamp(0.0, 1.0))) as u8;
                        let p = image.get_pixel_mut(px, py);
                        p.0 = [p.0[0].min(v), p.0[1].min(v), p.0[2].min(v)];
                    }
                });
            }
        }
    }
    image
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(image.clone()).write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_form_and_its_errors() {
    let gw = Gateway::start_with(&format!("{WEB_TENANT}{MODELS}"));
    let client = client();
    let png = encode(&RgbImage::from_pixel(64, 32, Rgb([255, 255, 255])), ImageFormat::Png);

    // JSON with a data URL, JSON with bare base64, multipart, raw body.
    let json_url = client
        .post(gw.url("/v1/ocr"))
        .json(&json!({"model": "synthetic-ocr", "image": format!("data:image/png;base64,{}", b64(&png))}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_url.status(), 200);
    assert!(json_url.headers().contains_key("x-infergate-queue-ms"));
    let body: Value = json_url.json().await.unwrap();
    assert_eq!(body["object"], "ocr.result");
    assert_eq!((body["width"].as_u64(), body["height"].as_u64()), (Some(64), Some(32)));
    assert_eq!(body["lines"][0]["box"], json!([[0.0, 0.0], [64.0, 0.0], [64.0, 32.0], [0.0, 32.0]]));
    assert_eq!(body["text"], body["lines"][0]["text"]);
    assert!(body["usage"]["megapixels"].as_f64().unwrap() > 0.0);
    let bare = client
        .post(gw.url("/v1/ocr"))
        .json(&json!({"model": "synthetic-ocr", "image": b64(&png)}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200);
    let form = reqwest::multipart::Form::new()
        .text("model", "synthetic-ocr")
        .part("file", reqwest::multipart::Part::bytes(png.clone()).file_name("a.png"));
    assert_eq!(client.post(gw.url("/v1/ocr")).multipart(form).send().await.unwrap().status(), 200);
    let raw = client
        .post(gw.url("/v1/ocr?model=synthetic-ocr"))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);

    // Errors, each a 4xx in OpenAI's shape naming what is wrong.
    let post = |body: Value| client.post(gw.url("/v1/ocr")).json(&body).send();
    let (status, e) =
        error_of(post(json!({"model": "synthetic-ocr", "image": "@@not base64@@"})).await.unwrap()).await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("image")), "{e}");
    let (status, e) = error_of(
        post(json!({"model": "synthetic-ocr", "image": b64(b"GIF89a\x01\x00\x01\x00")})).await.unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    let (status, e) =
        error_of(post(json!({"model": "synthetic-ocr", "image": b64(&png[..20])})).await.unwrap()).await;
    assert_eq!(status, 400, "truncated: {e}");
    let huge = encode(&RgbImage::new(2100, 2000), ImageFormat::Png);
    let (status, e) =
        error_of(post(json!({"model": "synthetic-ocr", "image": b64(&huge)})).await.unwrap()).await;
    assert!(status == 400 && e["error"]["message"].as_str().unwrap().contains("4000000"), "{e}");
    let (status, _) = error_of(post(json!({"model": "nope", "image": b64(&png)})).await.unwrap()).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(post(json!({"model": "embed", "image": b64(&png)})).await.unwrap()).await;
    assert_eq!(status, 400, "an embeddings model cannot read images");
    let (status, _) = error_of(post(json!({"image": b64(&png), "extra": 1})).await.unwrap()).await;
    assert_eq!(status, 400, "unknown field");
    let text =
        client.post(gw.url("/v1/ocr")).header("content-type", "text/plain").body("hi").send().await.unwrap();
    assert_eq!(text.status(), 415);
    let empty_form = reqwest::multipart::Form::new().text("model", "synthetic-ocr");
    let (status, e) =
        error_of(client.post(gw.url("/v1/ocr")).multipart(empty_form).send().await.unwrap()).await;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("file")));
    // A corrupt image passes the header check and fails in the real backend: still a 400.
    let mut corrupt = encode(&render(&LINES), ImageFormat::Png);
    let middle = corrupt.len() / 2;
    corrupt[middle..middle + 64].fill(0xAB);
    let (status, e) =
        error_of(post(json!({"model": "pp-ocrv4", "image": b64(&corrupt)})).await.unwrap()).await;
    assert_eq!(status, 400, "{e}");
    let health = client.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_models_read_rendered_text_over_both_apis() {
    let gw = Gateway::start_with(&format!("{WEB_TENANT}{MODELS}"));
    let client = client();
    let page = encode(&render(&LINES), ImageFormat::Jpeg);
    let body: Value = client
        .post(gw.url("/v1/ocr"))
        .json(&json!({"model": "pp-ocrv4", "image": format!("data:image/jpeg;base64,{}", b64(&page))}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = body["text"].as_str().unwrap();
    let expected = LINES.join("\n");
    let accuracy = 1.0 - edit_distance(text, &expected) as f64 / expected.chars().count() as f64;
    assert!(accuracy >= 0.95 && body["lines"].as_array().unwrap().len() == 3, "{accuracy}: {body:#}");

    // KServe v2: the image as one BYTES element.
    let infer: Value = client
        .post(gw.url("/v2/models/pp-ocrv4/infer"))
        .json(&json!({"id": "r1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(&page)]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(infer["id"], "r1");
    let outputs = infer["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["text", "confidence", "boxes"]);
    assert_eq!(outputs[0]["data"].as_array().unwrap().len(), 3);
    assert_eq!(outputs[2]["shape"], json!([3, 4, 2]));
    assert_eq!(outputs[0]["data"][1], body["lines"][1]["text"]);
    let bad = client
        .post(gw.url("/v2/models/pp-ocrv4/infer"))
        .json(&json!({"inputs": [{"name": "image", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Triton's official client sends the image's bytes as binary tensor data.
    let file = std::env::temp_dir().join(format!("infergate-ocr-{}.jpg", std::process::id()));
    std::fs::write(&file, &page).unwrap();
    let host = gw.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let out = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/triton_client_check.py"))
        .args(["--url", &host, "--api-key", TEST_KEY, "--ocr-model", "pp-ocrv4"])
        .arg("--ocr-image")
        .arg(&file)
        .args(["--ocr-expect", "Deadlines fairness. 4471"])
        .output()
        .expect("run the Triton client check");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("PASS"), "{stdout}");
}

/// `infergate-load --scenario` with OCR entries: the rendered page as a file, sent to the
/// synthetic and the real model (a few requests: the real one runs on ONNX Runtime here).
#[test]
fn an_infergate_load_scenario_sends_images_to_both_ocr_models() {
    let gw = Gateway::start_with(&format!("{WEB_TENANT}{MODELS}"));
    let dir = std::env::temp_dir().join(format!("infergate-ocr-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("page.png"), encode(&render(&LINES), ImageFormat::Png)).unwrap();
    // Best effort (no deadline): on a busy machine the real model's learned
    // latency can make a deadline look infeasible, and this test is about
    // the mix, not the deadline.
    std::fs::write(
        dir.join("ocr.toml"),
        format!(
            "[defaults]\nkey = \"{TEST_KEY}\"\n\n\
             [defaults.headers]\n\"x-request-timeout\" = \"none\"\n\n\
             [[request]]\nname = \"synthetic\"\nkind = \"ocr\"\nmodel = \"synthetic-ocr\"\nimage = \"page.png\"\nweight = 3\n\n\
             [[request]]\nname = \"real\"\nkind = \"ocr\"\nmodel = \"pp-ocrv4\"\nimage = \"page.png\"\n"
        ),
    )
    .unwrap();
    let json = dir.join("run.json");
    let tool = repo_root().join("target/debug/infergate-load");
    let out = std::process::Command::new(&tool)
        .args(["run", "--url", &gw.url("/"), "--scenario"])
        .arg(dir.join("ocr.toml"))
        .args(["--requests", "16", "-c", "2", "--quiet", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let s = &report["summary"];
    assert_eq!((s["requests"].as_u64(), s["successes"].as_u64()), (Some(16), Some(16)), "{stdout}");
    let scenarios = s["scenarios"].as_object().unwrap();
    let (synthetic, real) =
        (scenarios["synthetic"]["requests"].as_u64(), scenarios["real"]["requests"].as_u64());
    assert_eq!(synthetic.unwrap() + real.unwrap(), 16, "{stdout}");
    assert!(real.unwrap() >= 1 && synthetic.unwrap() > real.unwrap(), "3:1 weights: {stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A field of `/proc/PID/status` in KiB.
#[tokio::test]
async fn thin_images_cost_what_the_detector_computes() {
    let config = format!("{WEB_TENANT}{MODELS}");
    let gateway = Gateway::start_with(&config);
    let http = client();
    let ocr = |image: RgbImage| {
        let body = json!({"model": "pp-ocrv4", "image": format!("data:image/png;base64,{}", b64(&encode(&image, ImageFormat::Png)))});
        let request = http.post(gateway.url("/v1/ocr")).json(&body);
        async move {
            let start = std::time::Instant::now();
            let response = request.send().await.unwrap();
            (response.status().as_u16(), start.elapsed())
        }
    };
    // Warm the model up, then take the idle footprint.
    assert_eq!(ocr(render(&LINES[..1])).await.0, 200);
    let idle = status_kib(gateway.pid(), "VmRSS:");
    // Strips whose short side the detector once scaled up to 736 px with no
    // bound on the long one (a 2000x20 strip grew past 8 GB).
    for (w, h) in [(2000, 20), (20, 2000), (16_000, 250), (250, 16_000)] {
        let mut strip = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        for x in (0..w).step_by(7) {
            for y in 0..h.min(12) {
                strip.put_pixel(x, y, Rgb([0, 0, 0]));
            }
        }
        let (status, took) = ocr(strip).await;
        assert_eq!(status, 200, "{w}x{h}");
        assert!(took < std::time::Duration::from_secs(30), "{w}x{h} took {took:?}");
    }
    let peak = status_kib(gateway.pid(), "VmHWM:");
    assert!(peak < idle + 1024 * 1024, "peak RSS {peak} KiB vs idle {idle} KiB");
    assert_eq!(ocr(render(&LINES)).await.0, 200, "the gateway still serves");
}
