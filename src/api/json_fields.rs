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
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

#[derive(Clone, Debug)]
pub struct Fields<'a> {
    /// Keys as decoded text; values as JSON text, borrowed unless set here.
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// Deepest nesting of arrays and objects accepted: serde_json's own limit when it builds values
/// (the proxy does, for histories and stream events), enforced here for text it only skips.
pub const MAX_DEPTH: usize = 128;

impl<'a> Fields<'a> {
    /// Parses `text`, which must be one JSON object nested at most [`MAX_DEPTH`] levels.
    pub fn parse(text: &'a [u8]) -> serde_json::Result<Self> {
        if !within_depth(text, MAX_DEPTH) {
            return Err(de::Error::custom(format_args!(
                "recursion limit exceeded (nested deeper than {MAX_DEPTH} levels)"
            )));
        }
        serde_json::from_slice(text)
    }

    /// The value's JSON text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| &*self.entries[i].1)
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
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, key);
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

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut fields = Fields {
            entries: Vec::with_capacity(map.size_hint().unwrap_or(8)),
        };
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            match fields.position(&key) {
                Some(i) => fields.entries[i].1 = Cow::Borrowed(value.get()),
                None => fields.entries.push((key, Cow::Borrowed(value.get()))),
            }
        }
        Ok(fields)
    }
}

/// A key borrowed from the text when it has no escapes, decoded into its own string when it has.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Whether arrays and objects in `text` nest at most `max` levels, counting outside strings.
/// Malformed text passes: the parser that follows reports it.
///
/// Every request and reply body is scanned, and a chat history is mostly string contents: a
/// string is skipped by searching for its next quote or backslash rather than stepping through a
/// state machine byte by byte. On a 92 KB history that took 2.4-2.5 ns a byte, this takes
/// 0.9-1.3 (x86_64, release build; the `depth_scan_speed` test), and `Fields::parse` as a whole
/// 1.7 instead of about 3.2.
pub fn within_depth(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'"' => rest = after_string(rest),
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// What follows the string whose opening quote came just before `text` (nothing when it does
/// not end).
fn after_string(mut text: &[u8]) -> &[u8] {
    while let Some(i) = text.iter().position(|&c| c == b'"' || c == b'\\') {
        let Some((&special, tail)) = text.get(i..).and_then(<[u8]>::split_first) else {
            break;
        };
        if special == b'"' {
            return tail;
        }
        // A backslash escapes the byte after it, whatever it is.
        text = tail.get(1..).unwrap_or_default();
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan as it was: one state machine step per byte. The fast one must agree with it.
    fn within_depth_bytewise(text: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in text {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    proptest::proptest! {
        #[test]
        fn the_depth_scan_agrees_with_a_byte_by_byte_one(
            text in proptest::collection::vec(
                proptest::sample::select(b"[]{}\"\\a:,".to_vec()), 0..64),
            max in 0usize..6,
        ) {
            proptest::prop_assert_eq!(within_depth(&text, max), within_depth_bytewise(&text, max));
        }
    }

    /// `cargo test --release -p trae-proxy depth_scan_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn depth_scan_speed() {
        let message = r#"{"role":"user","content":"Explain this function, and say why it is \"slow\": fn f(x: &[u8]) -> usize { x.len() }"},"#;
        let history = format!(
            r#"{{"model":"m","messages":[{}{{}}]}}"#,
            message.repeat(800)
        );
        for (name, scan) in [
            (
                "bytewise",
                within_depth_bytewise as fn(&[u8], usize) -> bool,
            ),
            ("by string", within_depth),
        ] {
            let started = std::time::Instant::now();
            for _ in 0..200 {
                assert!(scan(std::hint::black_box(history.as_bytes()), MAX_DEPTH));
            }
            let per_byte = started.elapsed().as_nanos() as f64 / 200.0 / history.len() as f64;
            println!(
                "{name}: {per_byte:.2} ns per byte of a {} byte history",
                history.len()
            );
        }
        let started = std::time::Instant::now();
        for _ in 0..200 {
            assert!(Fields::parse(std::hint::black_box(history.as_bytes())).is_ok());
        }
        let per_byte = started.elapsed().as_nanos() as f64 / 200.0 / history.len() as f64;
        println!("Fields::parse, the scan included: {per_byte:.2} ns per byte");
    }

    #[test]
    fn depth_counts_nesting_outside_strings_only() {
        assert!(within_depth(br#"{"a":[[1]]}"#, 3));
        assert!(!within_depth(br#"{"a":[[1]]}"#, 2));
        assert!(
            within_depth(br#"{"a":"[[[[[\"{{{"}"#, 1),
            "brackets in strings do not count"
        );
        assert!(
            within_depth(br#"["\\"]"#, 1),
            "an escaped backslash ends no string"
        );
        assert!(!within_depth(br#"["\\",[]]"#, 1));
        assert!(within_depth(br#"["unterminated [[["#, 1));
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(Fields::parse(format!(r#"{{"x":{deep}}}"#).as_bytes()).is_err());
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
        for bad in ["[1,2]", "\"s\"", "{\"a\":}", "{\"a\":1", "", "{\"a\":1} x"] {
            assert!(Fields::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        assert_eq!(round_trip("{}"), json!({}));
    }
}
