//! Speech end to end on the real whisper.cpp models (converted by
//! `scripts/setup.sh` into models/whisper/), with speech synthesised at test
//! time by espeak-ng: English accuracy, German detection and translation,
//! subtitle formats, a 2-minute recording cut at its silences, the OpenAI
//! SDK, and bad audio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use infergate_e2e::{client, repo_root, wav_of as wav, Gateway, TEST_KEY, WEB_TENANT};
use serde_json::Value;

const MODELS: &str = r#"
[limits]
max_audio_seconds = 150

[audio]
vad_model = "silero-vad"

[[models]]
name = "silero-vad"
task = "tensor"
backend = { kind = "onnx", pipeline = "voice-activity", model = "models/silero_vad/silero_vad.onnx" }

[[models]]
name = "whisper-tiny.en"
task = "transcription"
concurrency = 2
backend = { kind = "whisper", model = "models/whisper/ggml-tiny.en.bin", states = 2, threads = 1 }

[[models]]
name = "whisper-base"
task = "transcription"
concurrency = 1
backend = { kind = "whisper", model = "models/whisper/ggml-base.bin", states = 1, threads = 2 }
"#;

fn gateway() -> Gateway {
    Gateway::start_with_env(
        &format!("{WEB_TENANT}{MODELS}"),
        &[("INFERGATE__SERVER__DEFAULT_TIMEOUT", "120s")],
    )
}

/// espeak-ng speech (16-bit mono WAV at 22.05 kHz).
fn speak(voice: &str, text: &str) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!(
        "infergate-speech-{}-{voice}-{}.wav",
        std::process::id(),
        text.len()
    ));
    let status = Command::new("espeak-ng").args(["-v", voice, "-w"]).arg(&path).arg(text).status();
    assert!(status.is_ok_and(|s| s.success()), "espeak-ng failed (scripts/setup.sh installs it)");
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(path);
    bytes
}

/// The 16-bit samples and rate of a PCM WAV (espeak-ng writes the simple layout).
fn samples(wav: &[u8]) -> (Vec<i16>, u32) {
    let rate = u32::from_le_bytes(wav[24..28].try_into().unwrap());
    let data = wav.windows(4).position(|w| w == b"data").unwrap() + 8;
    (wav[data..].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(), rate)
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Word error rate: word-level edit distance over the reference length.
fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(rw != hw));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[h.len()] as f64 / r.len() as f64
}

async fn transcribe(
    gw: &Gateway,
    route: &str,
    model: &str,
    audio: Vec<u8>,
    format: &str,
) -> reqwest::Response {
    let form = reqwest::multipart::Form::new()
        .text("model", model.to_owned())
        .text("response_format", format.to_owned())
        .part("file", reqwest::multipart::Part::bytes(audio).file_name("speech.wav"));
    client().post(gw.url(route)).multipart(form).send().await.unwrap()
}

const ENGLISH: &str =
    "The weather today is sunny with a light breeze. Please send the quarterly report by Friday afternoon. \
     Our gateway schedules every request by its deadline.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_is_transcribed_accurately_in_every_format() {
    let gw = gateway();
    let audio = speak("en-us", ENGLISH);
    let verbose: Value =
        transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", audio.clone(), "verbose_json")
            .await
            .json()
            .await
            .unwrap();
    let text = verbose["text"].as_str().unwrap();
    let error = wer(ENGLISH, text);
    assert!(error <= 0.20, "WER {error:.2}: {text}");
    assert_eq!(verbose["language"], "en");
    let (pcm, rate) = samples(&audio);
    let seconds = pcm.len() as f64 / f64::from(rate);
    assert!((verbose["duration"].as_f64().unwrap() - seconds).abs() < 0.05, "{verbose}");
    let segments = verbose["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    for s in segments {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(0.0 <= start && start <= end && end <= seconds + 0.01, "{s}");
        // whisper.cpp's own confidence, as OpenAI's verbose_json gives it: clear speech is
        // likely (a mean log-probability near 0) and not silence.
        let (logprob, silence) = (s["avg_logprob"].as_f64().unwrap(), s["no_speech_prob"].as_f64().unwrap());
        assert!((-1.0..=0.0).contains(&logprob) && (0.0..0.5).contains(&silence), "{s}");
    }

    // SubRip and WebVTT parse: numbered cues, well-formed increasing times.
    let srt = transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", audio.clone(), "srt")
        .await
        .text()
        .await
        .unwrap();
    let vtt = transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", audio, "vtt")
        .await
        .text()
        .await
        .unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");
    for (subtitles, separator) in [(srt.as_str(), ','), (vtt.trim_start_matches("WEBVTT\n\n"), '.')] {
        let cues: Vec<&str> = subtitles.split("\n\n").filter(|c| !c.trim().is_empty()).collect();
        assert_eq!(cues.len(), segments.len(), "{subtitles}");
        let mut last = 0.0;
        for (i, cue) in cues.iter().enumerate() {
            let mut lines = cue.lines();
            if separator == ',' {
                assert_eq!(lines.next(), Some((i + 1).to_string().as_str()), "{cue}");
            }
            let times = lines.next().unwrap();
            let (a, b) = times.split_once(" --> ").unwrap();
            let secs = |t: &str| {
                let (hms, ms) = t.split_once(separator).unwrap();
                let p: Vec<f64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
                p[0] * 3600.0 + p[1] * 60.0 + p[2] + ms.parse::<f64>().unwrap() / 1000.0
            };
            assert!(secs(a) >= last && secs(b) >= secs(a), "{cue}");
            last = secs(a);
            assert!(lines.next().is_some_and(|t| !t.is_empty()), "{cue}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn german_is_detected_and_translated_and_the_sdk_works() {
    let gw = gateway();
    let audio = speak("de", "Guten Morgen. Ich möchte gerne einen Kaffee und ein Stück Kuchen bestellen.");
    let path = std::env::temp_dir().join(format!("infergate-german-{}.wav", std::process::id()));
    std::fs::write(&path, &audio).unwrap();
    let python = repo_root().join(".venv/bin/python");
    let out = Command::new(python)
        .arg(repo_root().join("tests/python/openai_sdk_speech.py"))
        .args(["--base-url", &gw.url("/v1"), "--api-key", TEST_KEY, "--file"])
        .arg(&path)
        .args(["--transcribe-model", "whisper-base", "--translate-model", "whisper-base"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["language"], "de", "{result}");
    let german = words(result["text"].as_str().unwrap());
    assert!(german.iter().any(|w| w == "morgen") && german.iter().any(|w| w == "kuchen"), "{result}");
    let english = words(result["translation"].as_str().unwrap());
    assert!(english.iter().any(|w| w == "morning"), "{result}");
    assert!(english.iter().any(|w| w == "cake" || w == "coffee"), "{result}");
    assert!(result["srt"].as_str().unwrap().starts_with("1\n00:00:00,"), "{result}");
}

/// espeak-ng clips placed at known times in two minutes of silence.
fn recording() -> (Vec<u8>, Vec<(f64, &'static str)>) {
    let clips = [
        (2.0, "First, the scheduler admits the request and puts it in the queue."),
        (37.0, "Second, the batch runs on the model and the results come back."),
        (71.0, "Third, the answer goes back to the client over the network."),
        (104.0, "Finally, the trace shows every step of the request."),
    ];
    let rate = 22_050;
    let mut all = vec![0i16; 120 * rate as usize];
    for (at, text) in clips {
        let (pcm, r) = samples(&speak("en-us", text));
        assert_eq!(r, rate);
        let from = (at * f64::from(rate)) as usize;
        all[from..from + pcm.len()].copy_from_slice(&pcm);
    }
    (wav(&all, rate), clips.to_vec())
}

fn batches(metrics: &str, model: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("infergate_batch_size_count") && l.contains(&format!("model=\"{model}\"")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_recording_is_cut_at_silences_with_correct_times() {
    let gw = gateway();
    let (audio, clips) = recording();
    let before =
        batches(&reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap(), "whisper-tiny.en");
    let verbose: Value =
        transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", audio, "verbose_json")
            .await
            .json()
            .await
            .unwrap();
    let after =
        batches(&reqwest::get(gw.url("/metrics")).await.unwrap().text().await.unwrap(), "whisper-tiny.en");
    assert!(after - before >= 4.0, "the recording ran as one job per stretch of speech: {before} -> {after}");
    assert!((verbose["duration"].as_f64().unwrap() - 120.0).abs() < 0.01);
    let segments = verbose["segments"].as_array().unwrap();
    let times: Vec<(f64, f64)> =
        segments.iter().map(|s| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap())).collect();
    assert!(times.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 + 0.01), "{times:?}");
    assert!(segments.iter().enumerate().all(|(i, s)| s["id"] == i), "ids renumbered");
    // Each clip is heard (one of two words that only it says), at its time (± 1.5 s).
    let keys = [["first", "scheduler"], ["second", "batch"], ["third", "answer"], ["finally", "trace"]];
    for ((at, _), keys) in clips.iter().zip(keys) {
        let segment = segments
            .iter()
            .find(|s| words(s["text"].as_str().unwrap()).iter().any(|w| keys.contains(&w.as_str())))
            .unwrap_or_else(|| panic!("{keys:?} not heard: {verbose}"));
        let start = segment["start"].as_f64().unwrap();
        assert!((start - at).abs() <= 1.5, "{keys:?} at {start}, spoken at {at}: {verbose}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_audio_is_refused_and_good_requests_beside_it_succeed() {
    let gw = gateway();
    let good = speak("en-us", "The answer arrives while the bad requests are refused.");
    let (pcm, rate) = samples(&good);
    let truncated_header = good[..30].to_vec();
    let header_only = wav(&[], rate);
    let too_long = wav(&vec![0i16; 160 * rate as usize], rate);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not audio", b"hello, this is plain text and not audio".to_vec()),
        ("an image", png),
        ("zero bytes", Vec::new()),
        ("truncated header", truncated_header),
        ("no samples", header_only),
        ("over the limit", too_long),
    ];
    let good_request = transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", good.clone(), "json");
    let refused = futures_util::future::join_all(bad.iter().map(|(_, audio)| {
        transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", audio.clone(), "json")
    }));
    let (good_response, refused) = tokio::join!(good_request, refused);
    for ((what, _), response) in bad.iter().zip(refused) {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert!((400..500).contains(&status), "{what}: {status} {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
    assert_eq!(good_response.status(), 200);
    let text: Value = good_response.json().await.unwrap();
    assert!(words(text["text"].as_str().unwrap()).contains(&"answer".to_owned()), "{text}");
    // Malformed multipart: a boundary that never closes.
    let malformed = client()
        .post(gw.url("/v1/audio/transcriptions"))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-tiny.en")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    // An English-only model cannot translate.
    let translate =
        transcribe(&gw, "/v1/audio/translations", "whisper-tiny.en", wav(&pcm, rate), "json").await;
    assert_eq!(translate.status(), 400);
}

/// `sox` converts the clip (FLAC at 44.1 kHz stereo, OGG/Vorbis at 48 kHz).
fn convert(wav: &[u8], extension: &str, args: &[&str]) -> Vec<u8> {
    let dir = std::env::temp_dir();
    let (input, output) = (
        dir.join(format!("infergate-sox-{}.wav", std::process::id())),
        dir.join(format!("infergate-sox-{}.{extension}", std::process::id())),
    );
    std::fs::write(&input, wav).unwrap();
    let status = Command::new("sox").arg(&input).args(args).arg(&output).status().unwrap();
    assert!(status.success(), "sox failed");
    let bytes = std::fs::read(&output).unwrap();
    let _ = (std::fs::remove_file(input), std::fs::remove_file(output));
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flac_ogg_m4a_mp4_and_webm_at_other_rates_and_a_streamed_answer() {
    let gw = gateway();
    let clip = speak("en-us", ENGLISH);
    // What phones and browsers record (tests/fixtures/audio: the same
    // sentences, encoded by ffmpeg): AAC in M4A, fragmented as Safari's
    // MediaRecorder writes it, and in a video file; Opus in OGG and in
    // WebM, live (unknown sizes) as Chrome's and Firefox's MediaRecorder write it.
    let recorded =
        |name: &str| std::fs::read(format!("{}/fixtures/audio/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for (name, audio) in [
        ("flac", convert(&clip, "flac", &["-r", "44100", "-c", "2"])),
        ("ogg", convert(&clip, "ogg", &["-r", "48000"])),
        ("m4a", recorded("english-aac.m4a")),
        ("fragmented m4a", recorded("english-aac-fragmented.m4a")),
        ("mp4 video", recorded("english-video.mp4")),
        ("ogg opus", recorded("english-opus.ogg")),
        ("webm opus", recorded("english-opus-live.webm")),
    ] {
        let body: Value = transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", audio, "json")
            .await
            .json()
            .await
            .unwrap();
        let error = wer(ENGLISH, body["text"].as_str().unwrap());
        assert!(error <= 0.25, "{name}: WER {error:.2}: {body}");
    }
    // stream=true: segment and delta events, then the whole text.
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-tiny.en")
        .text("stream", "true")
        .part("file", reqwest::multipart::Part::bytes(clip).file_name("speech.wav"));
    let response = client().post(gw.url("/v1/audio/transcriptions")).multipart(form).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.last(), Some(&"transcript.text.done"), "{body}");
    assert!(kinds.contains(&"transcript.text.segment") && kinds.contains(&"transcript.text.delta"), "{body}");
    let deltas: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(deltas.trim(), events.last().unwrap()["text"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_is_captured_with_its_confidence() {
    let dir = std::env::temp_dir().join(format!("infergate-speech-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jsonl = dir.join("events.jsonl");
    // Every answer under a confidence of 1 is captured, with its text
    // (the web tenant allows content).
    let gw = Gateway::start_with(&format!(
        r#"
[feedback]
jsonl = "{}"

[[tenants]]
name = "web"
class = "interactive"
api_key_sha256 = ["3b978aa9b13194c6acccdc77d6d65ded5407e7e4fd82b5647e744e3427d71df4"]
capture_content = true

[[models]]
name = "whisper-tiny.en"
task = "transcription"
capture = {{ sample = 1.0, below = 1.0 }}
backend = {{ kind = "whisper", model = "models/whisper/ggml-tiny.en.bin", states = 1, threads = 2 }}
"#,
        jsonl.display()
    ));
    let r =
        transcribe(&gw, "/v1/audio/transcriptions", "whisper-tiny.en", speak("en-us", ENGLISH), "json").await;
    assert_eq!(r.status(), 200);
    let text = r.json::<Value>().await.unwrap()["text"].as_str().unwrap().to_owned();
    let mut events = Vec::new();
    for _ in 0..100 {
        events = std::fs::read_to_string(&jsonl)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let event = events.first().unwrap_or_else(|| panic!("no event in {}", jsonl.display()));
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("low_confidence"), Some("transcript_low_probability"))
    );
    let confidence = event["confidence"].as_f64().unwrap();
    // Clear synthetic speech: the model is fairly sure, but not certain.
    assert!((0.3..1.0).contains(&confidence), "{event}");
    assert_eq!(event["output"].as_str(), Some(text.as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}
