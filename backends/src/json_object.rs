//! Rewriting a few top-level members of a JSON object without building a
//! `serde_json::Value` of the rest.
//!
//! A proxied request or answer is mostly fields infergate does not
//! interpret (messages, tools, choices, logprobs). Decoding all of it into a
//! `Value` tree and writing it out again costs an allocation per node and
//! sorts the keys; here every other member is copied as it was written, in
//! its order, and only the named members are replaced, added or removed.

use std::borrow::Cow;

use serde_json::Value;

/// What to do with one member: `Some(value)` sets it (in place when present,
/// at the end otherwise), `None` removes it.
pub type Change<'a> = (&'a str, Option<Value>);

/// `object` (a JSON object's text) with `changes` applied. Duplicate keys
/// are kept as written except for the changed ones, which appear once.
pub fn rewrite(object: &[u8], changes: &[Change<'_>]) -> Result<Vec<u8>, serde_json::Error> {
    let members = members(object)?;
    let mut out = Vec::with_capacity(object.len() + 64);
    let mut done = vec![false; changes.len()];
    let mut first = true;
    out.push(b'{');
    for (key, raw) in &members {
        match changes.iter().position(|(name, _)| *name == key.as_ref()) {
            None => {
                member(&mut out, &mut first, key)?;
                out.extend_from_slice(raw.as_bytes());
            }
            Some(i) if done[i] => {}
            Some(i) => {
                done[i] = true;
                if let Some(value) = &changes[i].1 {
                    member(&mut out, &mut first, key)?;
                    serde_json::to_writer(&mut out, value)?;
                }
            }
        }
    }
    for (i, (key, value)) in changes.iter().enumerate() {
        if let (false, Some(value)) = (done[i], value) {
            member(&mut out, &mut first, key)?;
            serde_json::to_writer(&mut out, value)?;
        }
    }
    out.push(b'}');
    Ok(out)
}

/// `,"key":` (no comma before the first member).
fn member(out: &mut Vec<u8>, first: &mut bool, key: &str) -> Result<(), serde_json::Error> {
    if !std::mem::take(first) {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    Ok(())
}

/// `object` with the bytes at `at` (a member's value, as
/// [`UpstreamAnswer::model_at`](crate::UpstreamAnswer::model_at) locates it) replaced by `value`.
pub fn splice(
    object: &[u8],
    at: std::ops::Range<usize>,
    value: &Value,
) -> Result<Vec<u8>, serde_json::Error> {
    let (Some(head), Some(tail)) = (object.get(..at.start), object.get(at.end..)) else {
        return Err(serde::de::Error::custom("the value to replace is outside the object"));
    };
    let mut out = Vec::with_capacity(object.len() + 64);
    out.extend_from_slice(head);
    serde_json::to_writer(&mut out, value)?;
    out.extend_from_slice(tail);
    Ok(out)
}

/// Where `value`, a member's value borrowed from `object`, lies within it.
pub(crate) fn value_range(object: &[u8], value: &str) -> std::ops::Range<usize> {
    let start = (value.as_ptr() as usize).saturating_sub(object.as_ptr() as usize);
    start..start + value.len()
}

/// A top-level member: its key (borrowed unless it had escapes) and its
/// value's text as written, borrowed from the object.
pub(crate) type Member<'a> = (Cow<'a, str>, &'a str);

/// How deep arrays and objects may nest (serde_json's limit too).
const MAX_DEPTH: usize = 128;

/// The top-level members of a JSON object, values as written.
///
/// One pass of a validating scanner: the whole text is checked against
/// JSON's grammar (RFC 8259; UTF-8, string escapes, numbers, nesting up
/// to 128 levels) but nothing is decoded except keys with escapes. It does
/// the work serde_json's `RawValue` did here in about a third of the
/// instructions, which matters on a proxy's path: every proxied chat
/// request and answer goes through it.
pub(crate) fn members(object: &[u8]) -> Result<Vec<Member<'_>>, serde_json::Error> {
    let text = std::str::from_utf8(object).map_err(|e| invalid(e.valid_up_to(), "not UTF-8"))?;
    let mut scan = Scan { bytes: object, at: 0 };
    let mut members = Vec::with_capacity(16);
    scan.space();
    scan.expect(b'{', "expected an object")?;
    scan.space();
    if scan.peek() == Some(b'}') {
        scan.at += 1;
    } else {
        loop {
            scan.expect(b'"', "expected a key")?;
            let start = scan.at;
            let escaped = scan.string_body()?;
            let raw_key = &text[start..scan.at - 1];
            let key = if escaped {
                Cow::Owned(serde_json::from_str(&text[start - 1..scan.at])?)
            } else {
                Cow::Borrowed(raw_key)
            };
            scan.space();
            scan.expect(b':', "expected `:`")?;
            scan.space();
            let start = scan.at;
            scan.value(1)?;
            members.push((key, &text[start..scan.at]));
            scan.space();
            match scan.next() {
                Some(b',') => scan.space(),
                Some(b'}') => break,
                _ => return Err(invalid(scan.at, "expected `,` or `}`")),
            }
        }
    }
    scan.space();
    if scan.at < object.len() {
        return Err(invalid(scan.at, "trailing characters after the object"));
    }
    Ok(members)
}

/// How many bytes at the start of `rest` a string holds as they are: up to
/// the first `"`, `\\` or control character (or the end).
///
/// Eight bytes are tested at once, as one little-endian `u64` (SWAR): for
/// each kind of byte looked for, `(x - 0x01…) & !x & 0x80…` sets the high
/// bit of a byte of `x` that is zero (for `"` and `\\`, `x` is the word
/// XORed with that byte repeated) and `(w - 0x20…) & !w & 0x80…` that of a
/// byte below 0x20. A borrow can mark a byte above a true hit but never
/// below one, so the lowest mark is the first byte to stop at. Bytes of
/// 0x80 and above (UTF-8 sequences) are never marked.
fn plain_run(rest: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = rest.chunks_exact(8);
    let mut run = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let marks = zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if marks != 0 {
            return run + marks.trailing_zeros() as usize / 8;
        }
        run += 8;
    }
    let tail = chunks.remainder();
    run + tail.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(tail.len())
}

fn invalid(at: usize, what: &str) -> serde_json::Error {
    serde::de::Error::custom(format_args!("invalid JSON at byte {at}: {what}"))
}

/// A cursor over JSON text that checks what it skips.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), serde_json::Error> {
        match self.next() {
            Some(b) if b == byte => Ok(()),
            _ => Err(invalid(self.at.saturating_sub(1), what)),
        }
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Skip one value, checking it; `depth` is its nesting level.
    fn value(&mut self, depth: usize) -> Result<(), serde_json::Error> {
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                self.string_body().map(drop)
            }
            Some(b'{') => self.container(depth, b'}', true),
            Some(b'[') => self.container(depth, b']', false),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(invalid(self.at, "expected a value")),
        }
    }

    /// An object (`keyed`) or an array, from its opening bracket.
    fn container(&mut self, depth: usize, close: u8, keyed: bool) -> Result<(), serde_json::Error> {
        if depth > MAX_DEPTH {
            return Err(invalid(self.at, "nested too deeply"));
        }
        self.at += 1;
        self.space();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            if keyed {
                self.expect(b'"', "expected a key")?;
                self.string_body()?;
                self.space();
                self.expect(b':', "expected `:`")?;
                self.space();
            }
            self.value(depth + 1)?;
            self.space();
            match self.next() {
                Some(b',') => self.space(),
                Some(b) if b == close => return Ok(()),
                _ => return Err(invalid(self.at.saturating_sub(1), "expected `,` or a closing bracket")),
            }
        }
    }

    /// The rest of a string after its opening quote, through its closing
    /// quote; whether it had escapes.
    fn string_body(&mut self) -> Result<bool, serde_json::Error> {
        let mut escaped = false;
        loop {
            // Plain bytes are most of a string: skip them eight at a time.
            self.at += plain_run(self.bytes.get(self.at..).unwrap_or_default());
            match self.next() {
                Some(b'"') => return Ok(escaped),
                Some(b'\\') => {
                    escaped = true;
                    match self.next() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                        Some(b'u') => {
                            let hex = self.bytes.get(self.at..self.at + 4).unwrap_or_default();
                            if hex.len() < 4 || !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(invalid(self.at, "expected four hex digits after `\\u`"));
                            }
                            self.at += 4;
                        }
                        _ => return Err(invalid(self.at.saturating_sub(1), "invalid escape")),
                    }
                }
                Some(_) => return Err(invalid(self.at - 1, "control character in a string")),
                None => return Err(invalid(self.at, "unterminated string")),
            }
        }
    }

    fn word(&mut self, word: &[u8]) -> Result<(), serde_json::Error> {
        if self.bytes.get(self.at..self.at + word.len()) != Some(word) {
            return Err(invalid(self.at, "expected a value"));
        }
        self.at += word.len();
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), serde_json::Error> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(invalid(self.at.saturating_sub(1), "invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), serde_json::Error> {
        let start = self.at;
        self.digits();
        if self.at == start {
            return Err(invalid(self.at, "invalid number"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(object: &str, changes: &[Change<'_>]) -> String {
        String::from_utf8(rewrite(object.as_bytes(), changes).unwrap()).unwrap()
    }

    #[test]
    fn a_members_value_is_found_in_place_and_replaced_there() {
        let object = "{ \"id\": \"x\",\n  \"model\" :  \"up/b\\u0031\" , \"n\": [1, {\"model\": 2}] }";
        let bytes = object.as_bytes();
        let members = members(bytes).unwrap();
        let (_, raw) = members.iter().find(|(k, _)| k == "model").unwrap();
        let at = value_range(bytes, raw);
        assert_eq!(&object[at.clone()], "\"up/b\\u0031\"");
        let out = String::from_utf8(splice(bytes, at, &json!("a \"quoted\" name")).unwrap()).unwrap();
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value, json!({"id": "x", "model": "a \"quoted\" name", "n": [1, {"model": 2}]}));
        assert!(out.starts_with("{ \"id\": \"x\",\n"), "the rest stays as written: {out}");
        assert!(splice(bytes, 0..bytes.len() + 1, &json!(1)).is_err());
    }

    #[test]
    fn replaces_in_place_adds_at_the_end_and_removes() {
        let object = r#"{"model":"a","messages":[{"role":"user","content":"hi \"there\""}],"n":2,"stream_options":{"x":1}}"#;
        let changes =
            [("model", Some(json!("upstream/b"))), ("stream", Some(json!(false))), ("stream_options", None)];
        assert_eq!(
            text(object, &changes),
            r#"{"model":"upstream/b","messages":[{"role":"user","content":"hi \"there\""}],"n":2,"stream":false}"#
        );
    }

    #[test]
    fn keeps_whitespace_inside_values_escaped_keys_and_order() {
        let object = "{ \"z\" : [1, 2],\n \"a\\u0041\": {\"k\": null}, \"model\": \"x\" }";
        let out = text(object, &[("model", Some(json!("y")))]);
        assert_eq!(out, r#"{"z":[1, 2],"aA":{"k": null},"model":"y"}"#);
        let round: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(round, json!({"z": [1, 2], "aA": {"k": null}, "model": "y"}));
    }

    #[test]
    fn a_changed_duplicate_key_appears_once() {
        assert_eq!(
            text(r#"{"model":"a","x":1,"model":"b"}"#, &[("model", Some(json!("c")))]),
            r#"{"model":"c","x":1}"#
        );
        assert_eq!(text("{}", &[("model", Some(json!("c")))]), r#"{"model":"c"}"#);
        assert_eq!(text("{}", &[("model", None)]), "{}");
    }

    /// What serde_json makes of `text` read as an object whose values are
    /// skipped: the member keys, or none. serde_json skips bytes inside
    /// strings without checking their UTF-8; its `RawValue`s, which this
    /// scanner replaces, did check it.
    fn serde_keys(text: &[u8]) -> Option<Vec<String>> {
        struct Keys(Vec<String>);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((k, serde::de::IgnoredAny)) = map.next_entry::<String, _>()? {
                            keys.push(k);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(V)
            }
        }
        std::str::from_utf8(text).ok()?;
        serde_json::from_slice::<Keys>(text).ok().map(|k| k.0)
    }

    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let seeds: &[&[u8]] = &[
            br#"{"choices":[{"finish_reason":"length","index":0,"logprobs":null,"message":{"content":"a \"b\" \u00e9\n","role":"assistant"}}],"created":0,"usage":{"completion_tokens":4,"x":-1.5e+3}}"#,
            b"{ \"a\\u0041\" : [ 1 , 2.0 , -0 , 0.5E-2 , true , false , null , { } , [ ] ] ,\n\t\"\xc3\xa9\" : \"\\/\\b\\f\\r\\t\\ud83d\\ude00\" }",
            br#"{}"#,
            br#"{"a":{"b":{"c":[[["x"]]]}}}"#,
        ];
        let alphabet = b"{}[]\",:\\/ \n\t01-9.eE+-tfnulrasbu\x01\xff\xc3\xa9";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..40_000 {
            let mut text = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + random(3) {
                let at = random(text.len() + 1);
                match random(3) {
                    0 if at < text.len() => {
                        text.remove(at);
                    }
                    1 if at < text.len() => text[at] = alphabet[random(alphabet.len())],
                    _ => text.insert(at, alphabet[random(alphabet.len())]),
                }
            }
            let ours = members(&text).ok().map(|m| m.into_iter().map(|(k, _)| k.into_owned()).collect());
            assert_eq!(ours, serde_keys(&text), "{}", String::from_utf8_lossy(&text));
            if ours.is_some() {
                accepted += 1
            } else {
                refused += 1
            }
        }
        assert!(accepted > 1_000 && refused > 1_000, "{accepted} accepted, {refused} refused");
        // Nesting: serde_json skips values of any depth; the scanner, which
        // recurses, stops at 128 levels (serde_json's limit when it builds
        // values) with an error rather than a stack overflow.
        let nested = |depth: usize| format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        for depth in 120..=MAX_DEPTH {
            assert!(members(nested(depth).as_bytes()).is_ok(), "depth {depth}");
            assert!(serde_keys(nested(depth).as_bytes()).is_some(), "depth {depth}");
        }
        for depth in [MAX_DEPTH + 1, 1_000_000] {
            let error = members(nested(depth).as_bytes()).unwrap_err().to_string();
            assert!(error.contains("nested too deeply"), "{error}");
        }
    }

    #[test]
    fn plain_runs_stop_at_the_first_quote_backslash_or_control_byte() {
        let slow = |rest: &[u8]| rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        // Every byte value, at every place in and around a word, after plain
        // text and after UTF-8 (bytes of 0x80 and above, which never stop a run).
        for stop in 0..=255u8 {
            for place in 0..20 {
                for filler in [b'a', 0xc3, 0x7f, b'!', b'#', b']'] {
                    let mut text = vec![filler; 24];
                    text[place] = stop;
                    assert_eq!(
                        super::plain_run(&text),
                        slow(&text).unwrap_or(text.len()),
                        "{stop:#x} at {place}"
                    );
                }
            }
        }
        assert_eq!(super::plain_run(b""), 0);
        assert_eq!(super::plain_run("é\"".as_bytes()), 2);
    }

    #[test]
    fn values_are_their_text_as_written() {
        let object = br#"{"a" : [1, {"b": "}"}] , "c":"x\"y", "d": -2.5e3 ,"e":null}"#;
        let values: Vec<(String, &str)> =
            members(object).unwrap().into_iter().map(|(k, v)| (k.into_owned(), v)).collect();
        assert_eq!(
            values,
            [
                ("a".into(), r#"[1, {"b": "}"}]"#),
                ("c".into(), r#""x\"y""#),
                ("d".into(), "-2.5e3"),
                ("e".into(), "null")
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for bad in ["[1]", "\"s\"", "{\"a\":1} {}", "{\"a\":}", "{\"a\":1", ""] {
            assert!(rewrite(bad.as_bytes(), &[]).is_err(), "{bad}");
        }
    }
}
