//! A JSON object's top-level fields, in order, borrowed from the text they were parsed from.
//!
//! The proxy reads a few top-level fields of every request and reply (`model`, `stream`,
//! `usage`, ...), replaces one or two, and copies the rest — the message history, mostly —
//! as it came. Building those as values, or even copying each one into its own allocation,
//! was a large share of the work per request; here a field's value stays a slice of the
//! original text until it is written out again.
//!
//! Semantics follow a JSON object read into an ordered map: a repeated key keeps its first
//! position and its last value; setting a key that exists replaces its value in place,
//! a new key is appended; output is compact (no whitespace between fields).

use std::borrow::Cow;

use super::scan::{self, Invalid};

#[derive(Clone, Debug)]
pub struct Fields<'a> {
    /// Keys as decoded text; values as JSON text, borrowed unless set here.
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Fields<'a> {
    /// Parses `text`, which must be one JSON object nested at most
    /// [`MAX_DEPTH`](super::scan::MAX_DEPTH) levels.
    pub fn parse(text: &'a [u8]) -> Result<Self, Invalid> {
        let mut fields = Fields {
            entries: Vec::with_capacity(8),
        };
        for m in scan::members(text)? {
            let key = match m.escaped {
                // Rare, so decoded by serde_json, which also refuses a lone surrogate here.
                // (As a value: that reader is in the binary already.)
                Some(quoted) => match serde_json::from_str(quoted) {
                    Ok(serde_json::Value::String(key)) => Cow::Owned(key),
                    _ => return Err(Invalid::Syntax),
                },
                None => Cow::Borrowed(m.key),
            };
            match fields.position(&key) {
                Some(i) => fields.entries[i].1 = Cow::Borrowed(m.value),
                None => fields.entries.push((key, Cow::Borrowed(m.value))),
            }
        }
        Ok(fields)
    }

    /// The value's JSON text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| &*self.entries[i].1)
    }

    /// The members in order: each key (decoded) and its value's JSON text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` to `value` encoded as JSON.
    pub fn set<T: serde::Serialize + ?Sized>(
        &mut self,
        key: &'a str,
        value: &T,
    ) -> serde_json::Result<()> {
        let json = serde_json::to_string(value)?;
        match self.position(key) {
            Some(i) => self.entries[i].1 = Cow::Owned(json),
            None => self.entries.push((Cow::Borrowed(key), Cow::Owned(json))),
        }
        Ok(())
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(i) = self.position(key) {
            self.entries.remove(i);
        }
    }

    /// The object as compact JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        let size: usize = self
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        for (i, (key, value)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Keys are nearly always plain: written as they are, which is what encoding them
            // would give (JSON escapes only quotes, backslashes and control characters, the
            // bytes the scan's string search stops at).
            if scan::special(key.as_bytes()) < key.len() {
                // Encoding a string cannot fail.
                out.extend_from_slice(serde_json::to_string(&**key).unwrap_or_default().as_bytes());
            } else {
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.push(b'"');
            }
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
        out
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::scan::MAX_DEPTH;

    #[test]
    fn depth_is_counted_outside_strings_only() {
        let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        // The object is the first level.
        let at_limit = format!(r#"{{"x":{},"s":"[[[[{{"}}"#, nested(MAX_DEPTH - 1));
        assert!(Fields::parse(at_limit.as_bytes()).is_ok());
        let over = format!(r#"{{"x":{}}}"#, nested(MAX_DEPTH));
        assert_eq!(
            Fields::parse(over.as_bytes()).unwrap_err(),
            Invalid::TooDeep
        );
    }

    use serde_json::{Value, json};

    fn round_trip(text: &str) -> Value {
        let fields = Fields::parse(text.as_bytes()).unwrap();
        serde_json::from_slice(&fields.to_vec()).unwrap()
    }

    #[test]
    fn values_are_copied_as_written_and_order_is_kept() {
        let text = r#"{ "model" : "gpt-4o", "messages":[{"role":"user","content":"héllo \"x\""}],"n":1.50 }"#;
        let fields = Fields::parse(text.as_bytes()).unwrap();
        assert_eq!(fields.get("model"), Some(r#""gpt-4o""#));
        assert_eq!(fields.get("n"), Some("1.50"));
        assert_eq!(
            String::from_utf8(fields.to_vec()).unwrap(),
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"héllo \"x\""}],"n":1.50}"#
        );
    }

    #[test]
    fn set_replaces_in_place_and_appends_new_keys() {
        let mut fields = Fields::parse(br#"{"model":"a","stream":false,"x":1}"#).unwrap();
        fields.set("model", "b").unwrap();
        fields
            .set("stream_options", &json!({"include_usage": true}))
            .unwrap();
        fields.remove("x");
        fields.remove("absent");
        assert_eq!(
            String::from_utf8(fields.to_vec()).unwrap(),
            r#"{"model":"b","stream":false,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn escaped_keys_are_decoded_and_written_back_escaped() {
        let fields = Fields::parse(br#"{"mo\u0064el":"a","q\"k":2}"#).unwrap();
        assert_eq!(fields.get("model"), Some(r#""a""#));
        assert_eq!(round_trip(r#"{"q\"k":2}"#), json!({"q\"k": 2}));
    }

    #[test]
    fn repeated_keys_keep_the_first_position_and_the_last_value() {
        let fields = Fields::parse(br#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(
            String::from_utf8(fields.to_vec()).unwrap(),
            r#"{"a":3,"b":2}"#
        );
    }

    #[test]
    fn only_objects_parse() {
        for bad in [
            "[1,2]",
            "\"s\"",
            "{\"a\":}",
            "{\"a\":1",
            "",
            "{\"a\":1} x",
            r#"{"\ud800":1}"#,
        ] {
            assert!(Fields::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        assert_eq!(round_trip("{}"), json!({}));
    }
}
