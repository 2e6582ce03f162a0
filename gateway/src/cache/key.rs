//! What a cached answer is filed under: a BLAKE3 hash over the model's
//! identity (its files' contents and its settings), the tenant unless the
//! cache is shared, and every request field that changes the answer. Fields
//! go in tagged and length-prefixed, so two different requests never write
//! the same bytes; a cryptographic hash so that nobody can make two
//! requests collide and read another's answer from a shared cache (BLAKE3
//! rather than SHA-256: a quarter of the instructions on a short request).

use std::path::Path;

use infergate_backends::tensor::TensorData;
use infergate_backends::{EmbeddingInput, ModerationInput, Request};

use crate::config::ModelConfig;

/// A cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

/// Hashes a [`Key`] (already a uniform hash) by its first eight bytes, for
/// the maps keyed by it: SipHash over 32 bytes again would cost a few
/// hundred instructions a look-up for nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // The key's bytes come first (a `[u8; 32]` writes its length, then them).
        for &b in bytes.iter().take(8) {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.0 ^= u64::from(b);
    }

    fn write_usize(&mut self, _: usize) {}
}

/// [`KeyHasher`]'s builder.
pub type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

/// Fields gathered before they are hashed: BLAKE3 takes one call for a
/// short request instead of one a field.
const BUFFER: usize = 4096;

/// Length-prefixed fields into BLAKE3.
pub(super) struct KeyWriter(Vec<u8>, blake3::Hasher);

impl KeyWriter {
    pub(super) fn new() -> Self {
        KeyWriter(Vec::with_capacity(512), blake3::Hasher::new())
    }

    fn update(&mut self, bytes: &[u8]) {
        if self.0.len() + bytes.len() > BUFFER {
            self.1.update(&self.0);
            self.0.clear();
            if bytes.len() > BUFFER {
                self.1.update(bytes);
                return;
            }
        }
        self.0.extend_from_slice(bytes);
    }

    fn tag(&mut self, tag: u8) {
        self.update(&[tag]);
    }

    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
    }

    pub(super) fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.update(&value.to_le_bytes());
    }

    /// Floats by their bits: `-0.0` and `0.0` differ, as they may in the answer.
    fn f64(&mut self, value: f64) {
        self.u64(value.to_bits());
    }

    fn option_u64(&mut self, value: Option<u64>) {
        match value {
            Some(v) => {
                self.tag(1);
                self.u64(v);
            }
            None => self.tag(0),
        }
    }

    fn samples(&mut self, pcm: &[f32]) {
        self.u64(pcm.len() as u64);
        // Four bytes per sample, little-endian, in runs that stay on the stack.
        let mut buffer = [0u8; 4096];
        for run in pcm.chunks(buffer.len() / 4) {
            for (out, sample) in buffer.chunks_exact_mut(4).zip(run) {
                out.copy_from_slice(&sample.to_le_bytes());
            }
            self.update(&buffer[..run.len() * 4]);
        }
    }

    pub(super) fn finish(mut self) -> Key {
        self.1.update(&self.0);
        Key(*self.1.finalize().as_bytes())
    }
}

/// Feed the fields of `request` that change its answer; `false` when the
/// answer may differ between two runs of the same request (sampling without
/// a seed) or depends on something outside the request (an image behind
/// an `http(s)` URL).
pub(super) fn write_request(key: &mut KeyWriter, request: &Request) -> bool {
    match request {
        Request::Chat(chat) => {
            if chat.temperature > 0.0 && chat.seed.is_none() {
                return false;
            }
            key.tag(1);
            key.u64(u64::from(chat.max_tokens));
            key.f64(f64::from(chat.temperature));
            key.option_u64(chat.seed);
            match &chat.passthrough {
                // A remote model gets the client's body, which holds every
                // field that changes its answer (the messages among them).
                Some(body) => {
                    key.tag(1);
                    key.bytes(body);
                }
                None => {
                    key.tag(0);
                    key.u64(chat.messages.len() as u64);
                    for message in &chat.messages {
                        key.str(&message.role);
                        key.str(&message.content);
                    }
                    key.f64(f64::from(chat.top_p));
                    key.option_u64(chat.top_k.map(u64::from));
                    key.u64(chat.stop.len() as u64);
                    for stop in &chat.stop {
                        key.str(stop);
                    }
                    key.tag(u8::from(chat.json));
                }
            }
        }
        Request::Embeddings(embeddings) => {
            key.tag(2);
            key.u64(embeddings.inputs.len() as u64);
            for input in &embeddings.inputs {
                match input {
                    EmbeddingInput::Text(text) => {
                        key.tag(0);
                        key.str(text);
                    }
                    EmbeddingInput::Tokens(tokens) => {
                        key.tag(1);
                        key.u64(tokens.len() as u64);
                        for token in tokens {
                            key.update(&token.to_le_bytes());
                        }
                    }
                }
            }
            key.option_u64(embeddings.dimensions.map(u64::from));
        }
        Request::Transcription(audio) => {
            if audio.temperature > 0.0 {
                return false;
            }
            key.tag(3);
            key.samples(&audio.pcm);
            key.f64(audio.offset);
            key.tag(audio.task as u8);
            key.str(audio.language.as_deref().unwrap_or(""));
            key.tag(u8::from(audio.language.is_some()));
            key.str(audio.prompt.as_deref().unwrap_or(""));
            key.tag(u8::from(audio.prompt.is_some()));
            key.f64(f64::from(audio.temperature));
            key.tag(u8::from(audio.timestamps));
        }
        Request::Moderation(moderation) => {
            key.tag(4);
            key.u64(moderation.groups.len() as u64);
            for group in &moderation.groups {
                key.u64(group.len() as u64);
                for input in group {
                    match input {
                        ModerationInput::Text(text) => {
                            key.tag(0);
                            key.str(text);
                        }
                        ModerationInput::ImageUrl(url) if url.starts_with("data:") => {
                            key.tag(1);
                            key.str(url);
                        }
                        ModerationInput::ImageUrl(_) => return false,
                    }
                }
            }
        }
        Request::Tensor(tensor) => {
            key.tag(5);
            key.u64(tensor.inputs.len() as u64);
            for input in &tensor.inputs {
                key.str(&input.name);
                key.str(input.datatype.as_str());
                key.u64(input.shape.len() as u64);
                for d in &input.shape {
                    key.u64(*d);
                }
                match &input.data {
                    TensorData::Bool(v) => {
                        key.tag(0);
                        key.u64(v.len() as u64);
                        v.iter().for_each(|b| key.tag(u8::from(*b)));
                    }
                    TensorData::Int(v) => {
                        key.tag(1);
                        key.u64(v.len() as u64);
                        v.iter().for_each(|i| key.update(&i.to_le_bytes()));
                    }
                    TensorData::Float(v) => {
                        key.tag(2);
                        key.u64(v.len() as u64);
                        v.iter().for_each(|f| key.f64(*f));
                    }
                    TensorData::Bytes(v) => {
                        key.tag(3);
                        key.u64(v.len() as u64);
                        v.iter().for_each(|s| key.str(s));
                    }
                }
            }
            key.u64(tensor.outputs.len() as u64);
            for name in &tensor.outputs {
                key.str(name);
            }
        }
        Request::Ocr(ocr) => {
            key.tag(6);
            key.bytes(&ocr.image);
        }
        Request::VoiceActivity(vad) => {
            key.tag(7);
            key.samples(&vad.pcm);
        }
    }
    true
}

/// The model's identity: its name, task and backend settings (a remote
/// model's upstream name and endpoints among them), its translation
/// prompt, and the BLAKE3 hash of every file it loads (a directory's files in
/// name order). A model whose files or settings change answers under a new
/// identity, so old answers are never served for it.
pub fn model_identity(model: &ModelConfig) -> std::io::Result<[u8; 32]> {
    let mut key = KeyWriter::new();
    key.str(&model.name);
    key.str(model.task.as_str());
    key.str(&format!("{:?}", model.backend));
    key.str(model.translation_prompt.as_deref().unwrap_or(""));
    for path in model.backend.files() {
        hash_path(&mut key, path)?;
    }
    Ok(key.finish().0)
}

fn hash_path(key: &mut KeyWriter, path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            key.str(&entry.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            hash_path(key, &entry)?;
        }
        return Ok(());
    }
    let mut digest = blake3::Hasher::new();
    digest.update_reader(std::fs::File::open(path)?)?;
    key.bytes(digest.finalize().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use infergate_backends::{ChatMessage, ChatRequest, EmbeddingsRequest};

    use super::*;

    fn key_of(request: &Request) -> Option<Key> {
        let mut key = KeyWriter::new();
        write_request(&mut key, request).then(|| key.finish())
    }

    fn chat(temperature: f32, seed: Option<u64>, content: &str) -> Request {
        Request::Chat(ChatRequest {
            messages: vec![ChatMessage { role: "user".into(), content: content.into() }],
            max_tokens: 16,
            temperature,
            top_p: 1.0,
            top_k: None,
            seed,
            stop: Vec::new(),
            stream: false,
            json: false,
            passthrough: None,
        })
    }

    #[test]
    fn only_deterministic_requests_have_keys() {
        assert!(key_of(&chat(0.0, None, "hi")).is_some());
        assert!(key_of(&chat(0.7, Some(3), "hi")).is_some());
        assert!(key_of(&chat(0.7, None, "hi")).is_none());
        assert_ne!(key_of(&chat(0.7, Some(3), "hi")), key_of(&chat(0.7, Some(4), "hi")));
    }

    #[test]
    fn streaming_does_not_change_the_key_but_every_answer_field_does() {
        let Request::Chat(mut streamed) = chat(0.0, None, "hi") else { unreachable!() };
        streamed.stream = true;
        assert_eq!(key_of(&Request::Chat(streamed.clone())), key_of(&chat(0.0, None, "hi")));
        streamed.max_tokens = 17;
        assert_ne!(key_of(&Request::Chat(streamed)), key_of(&chat(0.0, None, "hi")));
        assert_ne!(key_of(&chat(0.0, None, "hi")), key_of(&chat(0.0, None, "hj")));
    }

    #[test]
    fn fields_are_framed_so_that_moving_bytes_between_them_changes_the_key() {
        let embed = |texts: &[&str]| {
            key_of(&Request::Embeddings(EmbeddingsRequest {
                inputs: texts.iter().map(|t| EmbeddingInput::Text((*t).into())).collect(),
                dimensions: None,
            }))
        };
        assert_ne!(embed(&["ab", "c"]), embed(&["a", "bc"]));
        assert_ne!(embed(&["abc"]), embed(&["ab", "c"]));
        assert_eq!(embed(&["ab", "c"]), embed(&["ab", "c"]));
    }

    #[test]
    fn a_model_whose_file_or_settings_change_is_a_new_model() {
        let dir = std::env::temp_dir().join(format!("infergate-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("model.bin");
        let model = |threads: u32| -> ModelConfig {
            let text = format!(
                "name = \"m\"\ntask = \"transcription\"\nbackend = {{ kind = \"whisper\", model = {:?}, threads = {threads} }}",
                file.display().to_string()
            );
            toml::from_str(&text).unwrap()
        };
        std::fs::write(&file, b"weights, version 1").unwrap();
        let first = model_identity(&model(1)).unwrap();
        assert_eq!(model_identity(&model(1)).unwrap(), first, "the same model, the same identity");
        assert_ne!(model_identity(&model(2)).unwrap(), first, "other settings");
        std::fs::write(&file, b"weights, version 2").unwrap();
        assert_ne!(model_identity(&model(1)).unwrap(), first, "other weights");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(model_identity(&model(1)).is_err(), "a missing file is an error, not an empty identity");
    }
}
