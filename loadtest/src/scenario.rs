//! Scenario files: a weighted mix of request kinds — chat (prompt and output lengths drawn
//! from distributions, optionally streamed), embeddings, translation (DeepL's
//! `/v2/translate`), transcription (an audio file), OCR and moderation (an image file), or
//! any raw request — each with its own class, tenant key and deadline headers. Every
//! request draws its kind and lengths from a seeded stream indexed by the request's number,
//! so a mix repeats run to run. With `distinct = N`, an entry's texts (prompts, inputs,
//! texts to translate) are drawn from N fixed strings, by rank with a Zipf law of exponent
//! `zipf` (1.1 by default; 0 draws them uniformly): the repeats a response cache sees.
//!
//! ```toml
//! seed = 7
//! [defaults]
//! key = "sk-infergate-dev"            # Authorization: Bearer …, the tenant
//!
//! [[request]]
//! name = "chat"
//! kind = "chat"
//! weight = 3
//! model = "qwen2.5-0.5b-instruct"
//! stream = true
//! prompt_words = [20, 200]           # uniform; or { mean = 100, sd = 30 }; or 50
//! system_words = 400                 # a system message before it…
//! system_prompts = 8                 # …one of 8 fixed ones, drawn uniformly
//! max_tokens = [16, 128]
//! class = "interactive"              # x-priority
//! timeout = "2s"                     # x-request-timeout
//!
//! [[request]]
//! kind = "transcription"
//! model = "whisper-tiny"
//! audio = "speech.wav"               # relative to this file
//!
//! [[request]]
//! kind = "translation"               # POST /v2/translate
//! target_lang = "DE"
//! texts = 1                          # texts per request
//! text_words = [3, 12]
//! distinct = 2000                    # texts drawn from 2,000 strings…
//! zipf = 1.1                         # …the k-th most common with weight 1/k^1.1
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use infergate_rng::SplitMix64;
use serde::Deserialize;
use serde_json::json;

use crate::random::{normal, unit};

/// A length: fixed, uniform over `[min, max]`, or normal (rounded, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Length {
    Fixed(u32),
    Uniform([u32; 2]),
    Normal { mean: f64, sd: f64 },
}

impl Length {
    fn draw(self, rng: &mut SplitMix64) -> u32 {
        match self {
            Length::Fixed(n) => n,
            Length::Uniform([a, b]) => {
                let (lo, hi) = (a.min(b), a.max(b));
                lo + (unit(rng) * f64::from(hi - lo + 1)).floor().min(f64::from(hi - lo)) as u32
            }
            Length::Normal { mean, sd } => (mean + sd * normal(rng)).round().max(1.0) as u32,
        }
    }

    fn check(self, what: &str) -> anyhow::Result<()> {
        let ok = match self {
            Length::Fixed(n) => n > 0,
            Length::Uniform([a, b]) => a > 0 && b > 0,
            Length::Normal { mean, sd } => mean.is_finite() && mean >= 1.0 && sd.is_finite() && sd >= 0.0,
        };
        anyhow::ensure!(ok, "{what}: lengths are at least 1 (a number, [min, max], or {{ mean, sd }})");
        Ok(())
    }
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Chat,
    Embeddings,
    Transcription,
    Ocr,
    Moderation,
    Translation,
    Raw,
}

/// Headers every request of an entry carries; an entry's own settings win over `[defaults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    /// The tenant's API key, sent as `Authorization: Bearer`.
    pub key: Option<String>,
    /// Scheduling class, sent as `x-priority` (`interactive`, `standard`, `batch`).
    pub class: Option<String>,
    /// Deadline relative to sending, sent as `x-request-timeout` (e.g. `2s`, `500ms`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// One `[[request]]` of a scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryConfig {
    /// Shown in the per-scenario statistics; the kind if unset.
    pub name: Option<String>,
    pub kind: Kind,
    #[serde(default = "one")]
    pub weight: f64,
    pub model: Option<String>,
    /// Path on the target; each kind has the OpenAI/infergate default.
    pub path: Option<String>,
    /// Chat: stream the answer (server-sent events) and measure its tokens.
    #[serde(default)]
    pub stream: bool,
    /// Chat: words in the user message.
    pub prompt_words: Option<Length>,
    /// Chat: a system message of this many words before the user's, one of
    /// `system_prompts` fixed ones (default 1) drawn uniformly, so that
    /// prompts share long prefixes as a product's system prompts make them.
    pub system_words: Option<Length>,
    pub system_prompts: Option<u32>,
    /// Chat: `max_tokens`.
    pub max_tokens: Option<Length>,
    /// Embeddings: inputs per request, and words per input.
    pub inputs: Option<Length>,
    pub input_words: Option<Length>,
    /// Transcription: an audio file (WAV, FLAC, MP3, OGG), relative to the scenario file.
    pub audio: Option<String>,
    /// OCR and moderation: an image file (PNG, JPEG, WebP), relative to the scenario file.
    pub image: Option<String>,
    /// Moderation of text (when no image is given) and translation: words in a text.
    pub text_words: Option<Length>,
    /// Translation: texts per request, and the DeepL target language (`DE`).
    pub texts: Option<Length>,
    pub target_lang: Option<String>,
    /// Chat, embeddings, moderation text and translation: draw every text from this many
    /// fixed strings (their lengths drawn once each), by rank with a Zipf law of exponent
    /// `zipf` (default 1.1; 0 is uniform). Unset: every text is new.
    pub distinct: Option<u32>,
    pub zipf: Option<f64>,
    /// Raw: method, body (text) or body file, and content type.
    pub method: Option<String>,
    pub body: Option<String>,
    pub body_file: Option<String>,
    pub content_type: Option<String>,
    #[serde(flatten)]
    pub common: Common,
}

fn one() -> f64 {
    1.0
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    #[serde(default = "one_u64")]
    pub seed: u64,
    #[serde(default)]
    pub defaults: Common,
    pub request: Vec<EntryConfig>,
}

fn one_u64() -> u64 {
    1
}

/// How one entry's body is made.
#[derive(Debug)]
enum Body {
    /// The same bytes every time (files, raw bodies).
    Fixed(Bytes),
    Chat {
        model: Option<String>,
        stream: bool,
        system: Option<Texts>,
        prompt: Texts,
        max_tokens: Length,
    },
    Embeddings {
        model: Option<String>,
        inputs: Length,
        words: Texts,
    },
    ModerationText {
        model: Option<String>,
        words: Texts,
    },
    Translation {
        texts: Length,
        words: Texts,
        target: String,
    },
}

/// Where an entry's texts come from: new words every time, or a fixed pool drawn by rank.
#[derive(Debug)]
struct Texts {
    words: Length,
    pool: Option<Pool>,
}

/// `distinct` fixed strings and the cumulative Zipf weights of their ranks.
#[derive(Debug)]
struct Pool {
    cumulative: Vec<f64>,
    seed: u64,
}

impl Texts {
    fn new(config: &EntryConfig, words: Length, seed: u64) -> anyhow::Result<Texts> {
        match config.distinct {
            None => {
                anyhow::ensure!(config.zipf.is_none(), "zipf: needs distinct");
                Ok(Texts { words, pool: None })
            }
            Some(distinct) => Texts::pool(words, distinct, config.zipf.unwrap_or(1.1), seed),
        }
    }

    /// `distinct` fixed strings drawn by rank with a Zipf law of exponent `s` (0: uniform).
    fn pool(words: Length, distinct: u32, s: f64, seed: u64) -> anyhow::Result<Texts> {
        anyhow::ensure!((1..=10_000_000).contains(&distinct), "distinct: 1 to 10,000,000 strings");
        anyhow::ensure!(s.is_finite() && (0.0..=10.0).contains(&s), "zipf: an exponent in [0, 10]");
        let mut total = 0.0;
        let cumulative = (1..=distinct)
            .map(|rank| {
                total += f64::from(rank).powf(-s);
                total
            })
            .collect();
        Ok(Texts { words, pool: Some(Pool { cumulative, seed }) })
    }

    /// One text: new words, or the string of a rank drawn from the pool.
    fn draw(&self, rng: &mut SplitMix64) -> String {
        let Some(pool) = &self.pool else { return words(self.words.draw(rng), rng) };
        let total = pool.cumulative.last().copied().unwrap_or(1.0);
        let pick = unit(rng) * total;
        let rank = pool.cumulative.partition_point(|c| *c <= pick) as u64;
        // The rank's own stream: the same string every time it is drawn.
        let mut own = SplitMix64::new(pool.seed ^ (rank + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        words(self.words.draw(&mut own), &mut own)
    }
}

/// One prepared entry of the mix.
#[derive(Debug)]
pub struct Entry {
    pub name: Arc<str>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
}

/// A prepared scenario: entries, their cumulative weights, and the request counter.
#[derive(Debug)]
pub struct Mix {
    entries: Vec<Entry>,
    cumulative: Vec<f64>,
    seed: u64,
    next: AtomicU64,
}

/// One request drawn from the mix.
pub struct Drawn<'a> {
    pub entry: &'a Entry,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Mix {
    /// Read and prepare a scenario file; request paths are joined to `base` (scheme and
    /// authority of `--url`), files are read relative to the scenario file.
    pub fn load(path: &Path, base: &Uri) -> anyhow::Result<Mix> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --scenario {}", path.display()))?;
        let file: ScenarioFile =
            toml::from_str(&text).with_context(|| format!("--scenario {}", path.display()))?;
        Mix::new(file, path.parent().unwrap_or(Path::new(".")), base)
    }

    pub fn new(file: ScenarioFile, dir: &Path, base: &Uri) -> anyhow::Result<Mix> {
        anyhow::ensure!(!file.request.is_empty(), "a scenario needs at least one [[request]]");
        let mut entries = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (i, config) in file.request.iter().enumerate() {
            let label = config.name.clone().unwrap_or_else(|| format!("{:?}", config.kind).to_lowercase());
            let entry =
                prepare(config, label.as_str().into(), &file.defaults, dir, base, file.seed ^ i as u64)
                    .with_context(|| format!("[[request]] {} ({label})", i + 1))?;
            anyhow::ensure!(
                config.weight.is_finite() && config.weight >= 0.0,
                "[[request]] {}: weight must be ≥ 0",
                i + 1
            );
            total += config.weight;
            cumulative.push(total);
            entries.push(entry);
        }
        anyhow::ensure!(total > 0.0, "the weights add up to zero");
        Ok(Mix { entries, cumulative, seed: file.seed, next: AtomicU64::new(0) })
    }

    /// Add `extra` (the command line's `-H`) to every entry that does not set the header.
    pub fn with_headers(mut self, extra: &HeaderMap) -> Self {
        for entry in &mut self.entries {
            for (name, value) in extra {
                if !entry.headers.contains_key(name) {
                    entry.headers.insert(name.clone(), value.clone());
                }
            }
        }
        self
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The next request (the `number`-th of a schedule, or the next in turn): its entry by
    /// weight, and its body with freshly drawn lengths.
    pub fn draw(&self, number: Option<u64>) -> Drawn<'_> {
        let n = number.unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed));
        // The n-th request's own stream: its draws do not depend on how many the others made.
        let mut rng = SplitMix64::new(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let pick = unit(&mut rng) * total;
        let index = self.cumulative.iter().position(|c| pick < *c).unwrap_or(self.entries.len() - 1);
        let entry = &self.entries[index];
        let body = match &entry.body {
            Body::Fixed(bytes) => bytes.clone(),
            Body::Chat { model, stream, system, prompt, max_tokens } => {
                let mut messages = Vec::with_capacity(2);
                if let Some(system) = system {
                    messages.push(json!({"role": "system", "content": system.draw(&mut rng)}));
                }
                messages.push(json!({"role": "user", "content": prompt.draw(&mut rng)}));
                let mut body = json!({
                    "messages": messages,
                    "max_tokens": max_tokens.draw(&mut rng),
                    "stream": stream,
                });
                if let Some(model) = model {
                    body["model"] = json!(model);
                }
                if *stream {
                    body["stream_options"] = json!({"include_usage": true});
                }
                Bytes::from(body.to_string())
            }
            Body::Embeddings { model, inputs, words: n } => {
                let count = inputs.draw(&mut rng);
                let input: Vec<String> = (0..count).map(|_| n.draw(&mut rng)).collect();
                let mut body = json!({ "input": input });
                if let Some(model) = model {
                    body["model"] = json!(model);
                }
                Bytes::from(body.to_string())
            }
            Body::ModerationText { model, words: n } => {
                let mut body = json!({ "input": n.draw(&mut rng) });
                if let Some(model) = model {
                    body["model"] = json!(model);
                }
                Bytes::from(body.to_string())
            }
            Body::Translation { texts, words: n, target } => {
                let count = texts.draw(&mut rng);
                let text: Vec<String> = (0..count).map(|_| n.draw(&mut rng)).collect();
                Bytes::from(json!({ "text": text, "target_lang": target }).to_string())
            }
        };
        Drawn {
            entry,
            method: entry.method.clone(),
            uri: entry.uri.clone(),
            headers: entry.headers.clone(),
            body,
        }
    }
}

fn prepare(
    config: &EntryConfig,
    name: Arc<str>,
    defaults: &Common,
    dir: &Path,
    base: &Uri,
    seed: u64,
) -> anyhow::Result<Entry> {
    let texts = |words: Length| Texts::new(config, words, seed);
    let no_pool = || {
        anyhow::ensure!(
            config.distinct.is_none() && config.zipf.is_none(),
            "distinct and zipf: for chat, embeddings, moderation text and translation"
        );
        Ok(())
    };
    let model = config.model.clone();
    let read = |file: &str| -> anyhow::Result<Vec<u8>> {
        let path = dir.join(file);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let default_path = match config.kind {
        Kind::Chat => "/v1/chat/completions",
        Kind::Embeddings => "/v1/embeddings",
        Kind::Transcription => "/v1/audio/transcriptions",
        Kind::Ocr => "/v1/ocr",
        Kind::Moderation => "/v1/moderations",
        Kind::Translation => "/v2/translate",
        Kind::Raw => "",
    };
    let path = config.path.clone().unwrap_or_else(|| default_path.to_owned());
    anyhow::ensure!(path.starts_with('/'), "path: an absolute path (e.g. /v2/translate) is required");
    let mut content_type = "application/json".to_owned();
    let body = match config.kind {
        Kind::Chat => {
            let prompt = config.prompt_words.unwrap_or(Length::Fixed(32));
            let max_tokens = config.max_tokens.unwrap_or(Length::Fixed(64));
            prompt.check("prompt_words")?;
            max_tokens.check("max_tokens")?;
            let system = match (config.system_words, config.system_prompts) {
                (None, None) => None,
                (None, Some(_)) => anyhow::bail!("system_prompts: needs system_words"),
                (Some(words), count) => {
                    words.check("system_words")?;
                    let count = count.unwrap_or(1);
                    anyhow::ensure!((1..=100_000).contains(&count), "system_prompts: 1 to 100,000");
                    Some(Texts::pool(words, count, 0.0, seed ^ 0x0051_57E3)?)
                }
            };
            Body::Chat { model, stream: config.stream, system, prompt: texts(prompt)?, max_tokens }
        }
        Kind::Embeddings => {
            let (inputs, words) =
                (config.inputs.unwrap_or(Length::Fixed(1)), config.input_words.unwrap_or(Length::Fixed(16)));
            inputs.check("inputs")?;
            words.check("input_words")?;
            Body::Embeddings { model, inputs, words: texts(words)? }
        }
        Kind::Translation => {
            let (count, words) = (
                config.texts.unwrap_or(Length::Fixed(1)),
                config.text_words.unwrap_or(Length::Uniform([3, 12])),
            );
            count.check("texts")?;
            words.check("text_words")?;
            let target = config.target_lang.clone().unwrap_or_else(|| "DE".to_owned());
            Body::Translation { texts: count, words: texts(words)?, target }
        }
        Kind::Transcription => {
            no_pool()?;
            let file = config.audio.as_deref().context("audio: a transcription needs an audio file")?;
            let audio = read(file)?;
            let mut fields = vec![("response_format", "json".to_owned())];
            if let Some(model) = &model {
                fields.push(("model", model.clone()));
            }
            let (kind, bytes) = multipart(&audio, file, &fields);
            content_type = kind;
            Body::Fixed(bytes)
        }
        Kind::Ocr => {
            no_pool()?;
            let file = config.image.as_deref().context("image: OCR needs an image file")?;
            let url = data_url(&read(file)?, file);
            Body::Fixed(Bytes::from(json!({ "model": model, "image": url }).to_string()))
        }
        Kind::Moderation => match &config.image {
            Some(file) => {
                no_pool()?;
                let url = data_url(&read(file)?, file);
                let input = json!([{"type": "image_url", "image_url": {"url": url}}]);
                let mut body = json!({ "input": input });
                if let Some(model) = &model {
                    body["model"] = json!(model);
                }
                Body::Fixed(Bytes::from(body.to_string()))
            }
            None => {
                let words = config.text_words.unwrap_or(Length::Fixed(24));
                words.check("text_words")?;
                Body::ModerationText { model, words: texts(words)? }
            }
        },
        Kind::Raw => {
            no_pool()?;
            anyhow::ensure!(config.path.is_some(), "path: a raw request needs one");
            if let Some(kind) = &config.content_type {
                content_type = kind.clone();
            }
            match (&config.body, &config.body_file) {
                (Some(text), None) => Body::Fixed(Bytes::from(text.clone())),
                (None, Some(file)) => Body::Fixed(Bytes::from(read(file)?)),
                (None, None) => Body::Fixed(Bytes::new()),
                (Some(_), Some(_)) => anyhow::bail!("body and body_file: give one"),
            }
        }
    };
    let method = match &config.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).context("method")?,
        None if matches!(&body, Body::Fixed(b) if b.is_empty()) => Method::GET,
        None => Method::POST,
    };
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().context("--url needs a host")?;
    let uri: Uri =
        format!("{scheme}://{authority}{path}").parse().with_context(|| format!("path {path:?}"))?;
    let mut headers = HeaderMap::new();
    if !matches!(&body, Body::Fixed(b) if b.is_empty()) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(&content_type).context("content_type")?);
    }
    for (name, value) in defaults.headers.iter().chain(&config.common.headers) {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("header {name:?}"))?,
            HeaderValue::from_str(value).with_context(|| format!("header {name:?}"))?,
        );
    }
    if let Some(key) = config.common.key.as_ref().or(defaults.key.as_ref()) {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {key}")).context("key")?);
    }
    if let Some(class) = config.common.class.as_ref().or(defaults.class.as_ref()) {
        headers.insert("x-priority", HeaderValue::from_str(class).context("class")?);
    }
    if let Some(timeout) = config.common.timeout.or(defaults.timeout) {
        let ms = HeaderValue::from_str(&format!("{}ms", timeout.as_millis().max(1))).context("timeout")?;
        headers.insert("x-request-timeout", ms);
    }
    Ok(Entry { name, method, uri, headers, body })
}

/// `data:<type>;base64,…` of a file, its type from the extension.
fn data_url(bytes: &[u8], file: &str) -> String {
    format!("data:{};base64,{}", media_type(file), base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn media_type(file: &str) -> &'static str {
    match file.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("wav") => "audio/wav",
        Some("flac") => "audio/flac",
        Some("mp3") => "audio/mpeg",
        Some("ogg") => "audio/ogg",
        _ => "application/octet-stream",
    }
}

/// A `multipart/form-data` body with `file` and text fields; its content type.
fn multipart(file: &[u8], name: &str, fields: &[(&str, String)]) -> (String, Bytes) {
    let boundary = "infergate-load-7d1f0c2a9b";
    let mut body = Vec::with_capacity(file.len() + 512);
    for (field, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    let file_name = Path::new(name).file_name().and_then(|n| n.to_str()).unwrap_or("audio").replace('"', "");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {}\r\n\r\n",
            media_type(name)
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), Bytes::from(body))
}

/// `n` words of filler text (a word is about one to two tokens).
fn words(n: u32, rng: &mut SplitMix64) -> String {
    const VOCABULARY: [&str; 32] = [
        "the",
        "model",
        "answers",
        "a",
        "question",
        "about",
        "latency",
        "and",
        "throughput",
        "under",
        "load",
        "while",
        "the",
        "gateway",
        "schedules",
        "requests",
        "by",
        "deadline",
        "for",
        "every",
        "tenant",
        "in",
        "each",
        "class",
        "with",
        "batches",
        "of",
        "tokens",
        "images",
        "audio",
        "text",
        "translation",
    ];
    let mut text = String::with_capacity(n as usize * 7);
    for i in 0..n {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(VOCABULARY[(unit(rng) * VOCABULARY.len() as f64) as usize % VOCABULARY.len()]);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(toml_text: &str) -> anyhow::Result<Mix> {
        let file: ScenarioFile = toml::from_str(toml_text)?;
        Mix::new(file, Path::new("."), &"http://127.0.0.1:9/ignored".parse().unwrap_or_default())
    }

    #[test]
    fn chat_prompts_open_with_one_of_the_fixed_system_messages() {
        let m =
            mix("[[request]]\nkind = \"chat\"\nsystem_words = 50\nsystem_prompts = 3\nprompt_words = 5\n")
                .unwrap_or_else(|e| panic!("{e:#}"));
        let mut systems = std::collections::BTreeMap::<String, usize>::new();
        let mut users = std::collections::BTreeSet::new();
        for _ in 0..600 {
            let body: serde_json::Value = serde_json::from_slice(&m.draw(None).body).unwrap_or_default();
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            assert_eq!(
                (messages[0]["role"].as_str(), messages[1]["role"].as_str()),
                (Some("system"), Some("user"))
            );
            let system = messages[0]["content"].as_str().unwrap_or_default().to_owned();
            assert_eq!(system.split(' ').count(), 50);
            *systems.entry(system).or_default() += 1;
            users.insert(messages[1]["content"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(systems.len(), 3);
        assert!(systems.values().all(|&n| (150..250).contains(&n)), "uniform: {systems:?}");
        assert!(users.len() > 500, "user messages are new each time");
        let err = mix("[[request]]\nkind = \"chat\"\nsystem_prompts = 3\n").err().map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("system_prompts: needs system_words")));
    }

    #[test]
    fn requests_follow_the_weights_and_carry_their_headers() {
        let m = mix(r#"
seed = 3
[defaults]
key = "sk-default"
[[request]]
name = "chat"
kind = "chat"
weight = 3
model = "m"
stream = true
prompt_words = [4, 8]
max_tokens = { mean = 50, sd = 10 }
class = "interactive"
timeout = "2s"
[[request]]
kind = "embeddings"
key = "sk-bulk"
inputs = 2
input_words = 3
"#)
        .unwrap_or_else(|e| panic!("{e:#}"));
        let mut chats = 0;
        for _ in 0..4000 {
            let d = m.draw(None);
            let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap_or_default();
            if &*d.entry.name == "chat" {
                chats += 1;
                assert_eq!(d.uri, "http://127.0.0.1:9/v1/chat/completions");
                assert_eq!(d.headers["authorization"], "Bearer sk-default");
                assert_eq!(d.headers["x-priority"], "interactive");
                assert_eq!(d.headers["x-request-timeout"], "2000ms");
                let prompt = body["messages"][0]["content"].as_str().unwrap_or_default();
                assert!((4..=8).contains(&prompt.split(' ').count()), "{prompt}");
                assert_eq!((body["model"].as_str(), body["stream"].as_bool()), (Some("m"), Some(true)));
            } else {
                assert_eq!(&*d.entry.name, "embeddings");
                assert_eq!(d.headers["authorization"], "Bearer sk-bulk");
                assert!(!d.headers.contains_key("x-priority"));
                let inputs = body["input"].as_array().cloned().unwrap_or_default();
                assert_eq!(inputs.len(), 2);
                assert!(inputs.iter().all(|i| i.as_str().is_some_and(|t| t.split(' ').count() == 3)));
            }
        }
        assert!((2850..3150).contains(&chats), "3:1 weights: {chats} of 4000");
    }

    #[test]
    fn the_same_seed_draws_the_same_requests() {
        let text =
            "[[request]]\nkind = \"chat\"\nprompt_words = [1, 100]\n[[request]]\nkind = \"moderation\"\n";
        let (a, b) =
            (mix(text).unwrap_or_else(|e| panic!("{e}")), mix(text).unwrap_or_else(|e| panic!("{e}")));
        for _ in 0..50 {
            assert_eq!(a.draw(None).body, b.draw(None).body);
        }
    }

    #[test]
    fn zipf_draws_repeat_the_common_strings_most() {
        let m = mix(r#"
[[request]]
kind = "translation"
target_lang = "FR"
texts = 2
distinct = 2000
zipf = 1.1
"#)
        .unwrap_or_else(|e| panic!("{e:#}"));
        let mut seen = std::collections::HashMap::<String, u32>::new();
        for _ in 0..20_000 {
            let d = m.draw(None);
            assert_eq!(d.uri, "http://127.0.0.1:9/v2/translate");
            let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap_or_default();
            assert_eq!(body["target_lang"], "FR");
            for text in body["text"].as_array().cloned().unwrap_or_default() {
                *seen.entry(text.as_str().unwrap_or_default().to_owned()).or_default() += 1;
            }
        }
        let mut counts: Vec<u32> = seen.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // 40,000 texts from at most 2,000 strings; under Zipf(1.1) over 2,000 ranks the most
        // common string has 1/H ≈ 17% of the draws and the first ten about half.
        assert!(counts.len() <= 2000 && counts.len() > 1000, "{} distinct", counts.len());
        let share = |n: usize| f64::from(counts[..n].iter().sum::<u32>()) / 40_000.0;
        assert!((0.14..0.20).contains(&share(1)), "top string {}", share(1));
        assert!((0.42..0.55).contains(&share(10)), "top ten {}", share(10));
        // Uniform with zipf = 0: no string stands out.
        let flat = mix("[[request]]\nkind = \"embeddings\"\ndistinct = 100\nzipf = 0\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut seen = std::collections::HashMap::<String, u32>::new();
        for _ in 0..10_000 {
            let body: serde_json::Value = serde_json::from_slice(&flat.draw(None).body).unwrap_or_default();
            *seen.entry(body["input"][0].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
        assert_eq!(seen.len(), 100);
        assert!(seen.values().all(|c| (50..160).contains(c)), "{seen:?}");
        assert!(mix("[[request]]\nkind = \"ocr\"\nimage = \"x.png\"\ndistinct = 5\n").is_err());
        assert!(mix("[[request]]\nkind = \"chat\"\nzipf = 1.0\n").is_err());
    }

    #[test]
    fn lengths_have_their_distributions() {
        let mut rng = SplitMix64::new(1);
        let draws: Vec<u32> =
            (0..20_000).map(|_| Length::Normal { mean: 100.0, sd: 20.0 }.draw(&mut rng)).collect();
        let mean = draws.iter().map(|d| f64::from(*d)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 100.0).abs() < 1.0, "{mean}");
        let uniform: Vec<u32> = (0..20_000).map(|_| Length::Uniform([3, 5]).draw(&mut rng)).collect();
        assert!(uniform.iter().all(|n| (3..=5).contains(n)));
        assert!([3, 4, 5].iter().all(|v| uniform.contains(v)));
    }

    #[test]
    fn bad_scenarios_are_refused_with_their_place() {
        for (text, needle) in [
            ("[[request]]\nkind = \"transcription\"\n", "audio"),
            ("[[request]]\nkind = \"raw\"\n", "path"),
            ("[[request]]\nkind = \"chat\"\nprompt_words = 0\n", "prompt_words"),
            ("[[request]]\nkind = \"chat\"\nweight = 0\n", "zero"),
            ("[[request]]\nkind = \"ocr\"\nimage = \"/nonexistent.png\"\n", "nonexistent"),
        ] {
            let error = format!("{:#}", mix(text).err().unwrap_or_else(|| panic!("{text} was accepted")));
            assert!(error.contains(needle), "{needle:?} not in {error}");
        }
        assert!(toml::from_str::<ScenarioFile>("[[request]]\nkind = \"chat\"\nbogus = 1\n").is_err());
    }

    #[test]
    fn files_become_multipart_and_data_urls() {
        let (kind, body) = multipart(b"RIFF", "dir/a.wav", &[("model", "w".into())]);
        let text = String::from_utf8_lossy(&body);
        assert!(kind.starts_with("multipart/form-data; boundary="));
        assert!(text.contains("name=\"model\"\r\n\r\nw\r\n"));
        assert!(text.contains("filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n"));
        assert_eq!(data_url(b"\x89PNG", "x.PNG"), "data:image/png;base64,iVBORw==");
    }
}
