//! Ways in for the fuzz targets in `fuzz/` (feature `fuzzing`, off by
//! default): each runs one of the crate's readers of untrusted bytes and
//! checks what must hold whatever the bytes. A panic here is a bug in the
//! reader (or in the property); errors are the expected answer to most
//! inputs. Not part of the crate's API.

// A property that fails panics: that is how a fuzz target reports it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use serde_json::{json, Value};

use crate::remote::answers;
use crate::{audio, json_object, onnx::images, Output};

/// The JSON object scanner against serde_json: what serde_json reads as an
/// object the scanner reads too, with the same members, and a rewrite of it
/// is JSON again; an upstream chat answer's `model` value is spliced where
/// the scanner says it lies.
pub fn json_object(data: &[u8]) {
    let scanned = json_object::members(data);
    let parsed = serde_json::from_slice::<Value>(data);
    if let Ok(Value::Object(object)) = &parsed {
        let members =
            scanned.as_ref().unwrap_or_else(|e| panic!("serde_json reads an object, the scanner: {e}"));
        for (key, raw) in members {
            let value: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("member {key}: {e}"));
            assert!(object.contains_key(key.as_ref()), "member {key} is not in serde_json's object");
            // serde_json keeps the last of duplicate keys.
            if members.iter().rev().find(|(k, _)| k == key).map(|(_, r)| r) == Some(raw) {
                assert_eq!(object.get(key.as_ref()), Some(&value), "member {key}");
            }
        }
    }
    if scanned.is_err() {
        return;
    }
    let changes =
        [("model", Some(json!("fuzz/model"))), ("stream", None), ("added", Some(json!([1, "two"])))];
    let rewritten = json_object::rewrite(data, &changes).unwrap_or_else(|e| panic!("rewrite: {e}"));
    let again = json_object::members(&rewritten).unwrap_or_else(|e| panic!("the rewrite does not scan: {e}"));
    assert!(again.iter().any(|(k, raw)| k == "model" && *raw == r#""fuzz/model""#));
    assert!(!again.iter().any(|(k, _)| k == "stream"));
    if parsed.is_ok() {
        let value: Value = serde_json::from_slice(&rewritten).unwrap_or_else(|e| panic!("rewrite: {e}"));
        assert_eq!(value["model"], "fuzz/model");
    }
    if let Ok(Output::Chat(chat)) = answers::chat_answer(Bytes::copy_from_slice(data)) {
        let Some(upstream) = chat.upstream else { return };
        let Some(at) = upstream.model_at else { return };
        let spliced =
            json_object::splice(&upstream.body, at, &json!("renamed")).unwrap_or_else(|e| panic!("{e}"));
        let members =
            json_object::members(&spliced).unwrap_or_else(|e| panic!("the splice does not scan: {e}"));
        assert!(members.iter().any(|(k, raw)| k == "model" && *raw == r#""renamed""#));
    }
}

/// The SSE relay: `data` split into body pieces at `cuts` (offsets) gives
/// the same chunks and output as `data` in one piece.
pub fn sse_relay_cut(data: &[u8], cuts: &[usize]) {
    let whole = relay(&[data]);
    let mut pieces = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let cut = cut.clamp(at, data.len());
        pieces.push(&data[at..cut]);
        at = cut;
    }
    pieces.push(&data[at..]);
    assert_eq!(relay(&pieces), whole, "split at {cuts:?}");
}

/// Chunks relayed (their JSON), then the output (as debug text), or the error.
fn relay(pieces: &[&[u8]]) -> (Vec<String>, Result<Option<String>, String>) {
    let (chunks, output) = answers::relay_pieces(pieces);
    (chunks, output.map(|o| o.map(|o| format!("{o:?}"))))
}

/// Audio: the container sniffer, the WAV header reader and the decoders to
/// 16 kHz mono (at most `max_seconds`), then the split into chunks.
pub fn audio(data: &[u8], max_seconds: f64) {
    let _ = audio::AudioFormat::sniff(data);
    if let Ok(info) = audio::WavInfo::parse(data) {
        assert!(info.data_bytes <= data.len());
        let _ = info.duration();
    }
    let limits = audio::DecodeLimits { max_seconds, max_sample_rate: 192_000 };
    if let Ok(pcm) = audio::decode(data, limits, &|| false) {
        assert!(!pcm.samples.is_empty());
        // The limit is checked on the source's frames; resampling rounds.
        assert!(pcm.seconds() <= max_seconds + 0.01, "{} s decoded", pcm.seconds());
        let chunks = audio::split(&pcm.samples, None, 30.0);
        assert!(chunks.iter().all(|(start, end)| start <= end));
    }
}

/// Images: the header check the gateway makes before queueing, the
/// backend's decode under a pixel limit, and `data:` URLs.
pub fn image(data: &[u8], max_pixels: u64) {
    let header = images::dimensions(data);
    if let Ok(image) = images::decode(data, max_pixels) {
        let (width, height) = header.unwrap_or_else(|e| panic!("decodes, but its header does not read: {e}"));
        assert!(u64::from(width) * u64::from(height) <= max_pixels);
        // EXIF orientation may swap the sides.
        let mut sides = [image.width(), image.height()];
        sides.sort_unstable();
        let mut expected = [width, height];
        expected.sort_unstable();
        assert_eq!(sides, expected);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = images::bytes_from_url(text);
    }
}

/// [`sse_relay_cut`] with the cuts read first: a count byte (mod 8), then
/// that many little-endian `u16` offsets.
pub fn sse_relay(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else { return };
    let count = usize::from(count % 8).min(rest.len() / 2);
    let (cuts, stream) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> =
        cuts.chunks_exact(2).map(|c| usize::from(u16::from_le_bytes([c[0], c[1]]))).collect();
    cuts.sort_unstable();
    sse_relay_cut(stream, &cuts);
}

#[cfg(test)]
mod tests {
    /// Every committed seed of the backends' fuzz targets, through its entry
    /// point with the target's settings.
    #[test]
    fn the_committed_seeds_run() {
        /// A target's seed directory and entry point.
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 4] = [
            ("json_object", super::json_object),
            ("audio_decode", |data| super::audio(data, 30.0)),
            ("image_header", |data| super::image(data, 4_000_000)),
            ("sse_relay", super::sse_relay),
        ];
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (target, run) in targets {
            let seeds = std::fs::read_dir(corpus.join(target)).unwrap_or_else(|e| panic!("{target}: {e}"));
            for seed in seeds {
                let path = seed.unwrap_or_else(|e| panic!("{target}: {e}")).path();
                run(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
            }
        }
    }
}
