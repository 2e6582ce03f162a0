//! Rewriting a few top-level members of a JSON object without building a
//! `serde_json::Value` of the rest.
//!
//! A proxied request or answer is mostly fields infergate does not
//! interpret (messages, tools, choices, logprobs). Decoding all of it into a
//! `Value` tree and writing it out again costs an allocation per node and
//! sorts the keys; here every other member is copied as it was written, in
//! its order, and only the named members are replaced, added or removed.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
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
                out.extend_from_slice(raw.get().as_bytes());
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

/// `object` with the bytes at `at` (a member's value, from [`value_range`])
/// replaced by `value`.
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

/// Where `raw`, a value borrowed from `object`, lies within it.
pub fn value_range(object: &[u8], raw: &RawValue) -> std::ops::Range<usize> {
    let start = (raw.get().as_ptr() as usize).saturating_sub(object.as_ptr() as usize);
    start..start + raw.get().len()
}

/// The top-level members of a JSON object, values as written (borrowed
/// from `object`).
pub fn members(object: &[u8]) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(object);
    let members = de.deserialize_map(Members)?;
    de.end()?;
    Ok(members)
}

struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value::<&RawValue>()?));
        }
        Ok(members)
    }
}

/// A key, borrowed from the input unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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

    #[test]
    fn refuses_what_is_not_one_object() {
        for bad in ["[1]", "\"s\"", "{\"a\":1} {}", "{\"a\":}", "{\"a\":1", ""] {
            assert!(rewrite(bad.as_bytes(), &[]).is_err(), "{bad}");
        }
    }
}
