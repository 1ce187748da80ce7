//! Finds a JSON object's top-level members and checks the whole text is JSON, without building
//! anything.
//!
//! Every request body and every whole reply is read this way. serde_json did it before (its
//! `RawValue` for each member, after a scan of the nesting depth), and at the size-first
//! optimisation level the binary is built with it took 7-8 thousand instructions for a 100-300
//! byte body, about 13 % of the proxy's instructions per request; this takes about half as
//! many (callgrind), and scans a 92 KB chat history in 69 µs. What it accepts is exactly what
//! serde_json accepts when it reads text into an object of raw values (RFC 8259, UTF-8, at most
//! [`MAX_DEPTH`] levels, `\u` escapes checked only in top-level keys, which the caller decodes);
//! a property test holds the two together. Why a text is not JSON is left to
//! serde_json to say: errors are rare, and its messages name the position.

/// [`MAX_DEPTH`] as a literal, for messages that name it (`concat!` takes literals only).
macro_rules! max_depth {
    () => {
        128
    };
}
pub(crate) use max_depth;

/// Deepest nesting of arrays and objects accepted, the object itself being the first level:
/// serde_json's own limit when it builds values (the proxy does, for histories and stream
/// events), and the README's promise.
pub const MAX_DEPTH: usize = max_depth!();

/// Why a text was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not one JSON object (or not JSON at all).
    Syntax,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// One top-level member: its key as written between the quotes, and its value's JSON text.
pub struct Member<'a> {
    pub key: &'a str,
    /// The key with its quotes, when it has escapes to decode.
    pub escaped: Option<&'a str>,
    pub value: &'a str,
}

/// The members of the object `text` holds, in order, once the whole text is known to be that
/// object and nothing else (surrounding whitespace aside): a caller never acts on the first
/// half of a body whose second half is broken.
// Not inlined: it would be copied into each of its callers (4 KiB of aarch64 binary).
#[inline(never)]
pub fn members(text: &[u8]) -> Result<Vec<Member<'_>>, Invalid> {
    // Checked once for the whole text: every slice below starts and ends at an ASCII byte, so
    // each is valid UTF-8 too.
    let text = std::str::from_utf8(text).map_err(|_| Invalid::Syntax)?;
    let mut scan = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
        depth: 1,
    };
    let mut found = Vec::with_capacity(8);
    scan.space();
    scan.expect(b'{')?;
    scan.container(true, Some(&mut found))?;
    scan.space();
    if scan.at != scan.bytes.len() {
        return Err(Invalid::Syntax);
    }
    Ok(found)
}

/// Where the first quote, backslash or control character in `text` is (its length if none):
/// eight bytes a step, as serde_json does, since bodies are mostly string contents. At the
/// size-first optimisation level a byte-by-byte search took 8-10 instructions a byte.
pub fn special(text: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `x` is zero -> its high bit is set here (and none is set when no byte is;
    // a set bit above a zero byte may be wrong, so only the lowest one is used).
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut at = 0;
    for chunk in text.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        let hits = zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            // Below 0x20: the byte minus 0x20 borrows. ASCII only: a byte of 0x80 or more has
            // its high bit set already and is masked out by `!x`.
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let tail = text.get(at..).unwrap_or_default();
    at + tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(tail.len())
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Levels of arrays and objects open around `at`.
    depth: usize,
}

impl<'a> Scanner<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline(always)]
    fn eat(&mut self, b: u8) -> bool {
        let here = self.peek() == Some(b);
        self.at += usize::from(here);
        here
    }

    #[inline(always)]
    fn expect(&mut self, b: u8) -> Result<(), Invalid> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(Invalid::Syntax)
        }
    }

    #[inline(always)]
    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Result<(), Invalid> {
        match self.peek().ok_or(Invalid::Syntax)? {
            b'"' => {
                self.at += 1;
                self.string().map(|_| ())
            }
            open @ (b'{' | b'[') => {
                self.at += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(Invalid::TooDeep);
                }
                self.container(open == b'{', None)?;
                self.depth -= 1;
                Ok(())
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => Err(Invalid::Syntax),
        }
    }

    /// An object's or an array's members, after its opening bracket; the object's members go
    /// to `found` when given (the top level).
    fn container(
        &mut self,
        object: bool,
        mut found: Option<&mut Vec<Member<'a>>>,
    ) -> Result<(), Invalid> {
        let close = if object { b'}' } else { b']' };
        self.space();
        if self.eat(close) {
            return Ok(());
        }
        loop {
            let mut key = None;
            if object {
                // Keys below the top level are skipped like any string, `\u` escapes unchecked
                // (serde_json's `ignore_value` does the same); the caller decodes top-level ones.
                self.expect(b'"')?;
                let key_at = self.at;
                let (name, escaped) = self.string()?;
                let quoted = match escaped {
                    true => Some(self.text.get(key_at - 1..self.at).ok_or(Invalid::Syntax)?),
                    false => None,
                };
                key = Some((name, quoted));
                self.space();
                self.expect(b':')?;
                self.space();
            }
            let start = self.at;
            self.value()?;
            if let (Some(found), Some((key, escaped))) = (found.as_deref_mut(), key) {
                let value = self.text.get(start..self.at).ok_or(Invalid::Syntax)?;
                found.push(Member {
                    key,
                    escaped,
                    value,
                });
            }
            self.space();
            if self.eat(close) {
                return Ok(());
            }
            self.expect(b',')?;
            self.space();
        }
    }

    /// A string's contents, after its opening quote, and whether it has escapes.
    fn string(&mut self) -> Result<(&'a str, bool), Invalid> {
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at += special(self.bytes.get(self.at..).unwrap_or_default());
            match self.peek() {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
                // A control character: RFC 8259 section 7 wants it escaped.
                _ => return Err(Invalid::Syntax),
            }
        }
        let contents = self.text.get(start..self.at).ok_or(Invalid::Syntax)?;
        self.at += 1;
        Ok((contents, escaped))
    }

    /// One escape, at its backslash.
    fn escape(&mut self) -> Result<(), Invalid> {
        match self.bytes.get(self.at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 2,
            Some(b'u') => {
                let hex = self.bytes.get(self.at + 2..self.at + 6);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return Err(Invalid::Syntax);
                }
                self.at += 6;
            }
            _ => return Err(Invalid::Syntax),
        }
        Ok(())
    }

    /// RFC 8259 section 6: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
    fn number(&mut self) -> Result<(), Invalid> {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Invalid::Syntax),
        }
        if self.eat(b'.') {
            self.some_digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.some_digits()?;
        }
        Ok(())
    }

    #[inline(always)]
    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Invalid> {
        let start = self.at;
        self.digits();
        if self.at == start {
            Err(Invalid::Syntax)
        } else {
            Ok(())
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), Invalid> {
        if self
            .bytes
            .get(self.at..)
            .is_some_and(|b| b.starts_with(word.as_bytes()))
        {
            self.at += word.len();
            Ok(())
        } else {
            Err(Invalid::Syntax)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::*;

    /// What the proxy accepted before, with serde_json: the text read as an object of raw
    /// values (repeated keys: the last value), after a nesting check.
    fn by_serde(text: &[u8]) -> Result<BTreeMap<String, String>, Invalid> {
        if depth(text) > MAX_DEPTH {
            return Err(Invalid::TooDeep);
        }
        serde_json::from_slice::<BTreeMap<String, &RawValue>>(text)
            .map(|map| {
                map.into_iter()
                    .map(|(k, v)| (k, v.get().to_owned()))
                    .collect()
            })
            .map_err(|_| Invalid::Syntax)
    }

    /// Nesting of brackets outside strings, byte by byte (exact for JSON text).
    fn depth(text: &[u8]) -> usize {
        let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
        for &b in text {
            match b {
                _ if in_string && escaped => escaped = false,
                b'\\' if in_string => escaped = true,
                b'"' => in_string = !in_string,
                _ if in_string => {}
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }

    fn by_scan(text: &[u8]) -> Result<BTreeMap<String, String>, Invalid> {
        let mut map = BTreeMap::new();
        for m in members(text)? {
            let key = match m.escaped {
                Some(quoted) => {
                    serde_json::from_str::<String>(quoted).map_err(|_| Invalid::Syntax)?
                }
                None => m.key.to_owned(),
            };
            map.insert(key, m.value.to_owned());
        }
        Ok(map)
    }

    /// JSON text as clients and backends write it, compact or pretty.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\\/\u{0}-\u{1f}é😀]{0,6}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec(("[a-z\"é]{0,3}", inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        });
        (
            prop::collection::vec(("[a-z\"\\\\]{0,3}", value), 0..5),
            any::<bool>(),
        )
            .prop_map(|(pairs, pretty)| {
                let object = Value::Object(pairs.into_iter().collect());
                if pretty {
                    serde_json::to_string_pretty(&object).unwrap_or_default()
                } else {
                    object.to_string()
                }
            })
    }

    /// Pieces that make JSON text almost right: odd numbers, escapes, surrogates, bad UTF-8.
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\"",
        b"\\",
        b" ",
        b"\n",
        b"\t",
        b"\r",
        b"\x0c",
        b"\x01",
        b"0",
        b"01",
        b"-",
        b"-0",
        b"1.",
        b".5",
        b"1e",
        b"1E+",
        b"2e-3",
        b"+1",
        b"true",
        b"tru",
        b"null",
        b"nul",
        b"false",
        b"\\u",
        b"\\ud800",
        b"\\udc00",
        b"\\u00e9",
        b"\\x",
        b"\\/",
        b"\xff",
        b"\xc3\xa9",
        b"\xc3",
        b"\"k\":",
        b"\"\\ud800\":1",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn accepts_what_serde_json_accepts_and_finds_the_same_members(
            text in json_text(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..3,
                prop::sample::select(PIECES)), 0..3),
        ) {
            // Some texts as written, the rest broken in one to three places.
            let mut bytes = text.into_bytes();
            for (at, how, piece) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 => drop(bytes.splice(i..i, piece.iter().copied())),
                    1 if i < bytes.len() => drop(bytes.remove(i)),
                    _ => {
                        let end = (i + piece.len()).min(bytes.len());
                        drop(bytes.splice(i..end, piece.iter().copied()));
                    }
                }
            }
            prop_assert_eq!(by_scan(&bytes), by_serde(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        }

        /// `cargo test fuzz` (README): any bytes at all, an answer and never a panic.
        #[test]
        fn fuzz_arbitrary_bytes_agree_with_serde_json(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            prefix in prop::sample::select(vec![&b""[..], b"{", b"{\"a\":", b"{\"a\":[\""]),
        ) {
            let bytes = [prefix, &bytes].concat();
            prop_assert_eq!(by_scan(&bytes), by_serde(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn agrees_on_short_texts_of_json_pieces(
            pieces in prop::collection::vec(prop::sample::select(PIECES), 0..12),
        ) {
            let bytes = pieces.concat();
            prop_assert_eq!(by_scan(&bytes), by_serde(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn nesting_over_the_limit_is_too_deep_whatever_follows() {
        let deep =
            |levels: usize| format!(r#"{{"x":{}1{}}}"#, "[".repeat(levels), "]".repeat(levels));
        assert!(by_scan(deep(MAX_DEPTH - 1).as_bytes()).is_ok());
        assert_eq!(by_scan(deep(MAX_DEPTH).as_bytes()), Err(Invalid::TooDeep));
        let broken_after = format!(r#"{{"x":{}"#, "[".repeat(MAX_DEPTH + 5));
        assert_eq!(by_scan(broken_after.as_bytes()), Err(Invalid::TooDeep));
    }

    proptest! {
        #[test]
        fn the_word_search_finds_the_first_special_byte(
            text in prop::collection::vec(prop::sample::select(
                b"a \"\\\x00\x1f\x20\x7f\x80\xff\xa2\xdc!".to_vec()), 0..40),
        ) {
            let bytewise = text.iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(text.len());
            prop_assert_eq!(special(&text), bytewise);
        }
    }

    /// `cargo test --release -p trae-proxy scan_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn scan_speed() {
        let message = r#"{"role":"user","content":"Explain this function, and say why it is \"slow\": fn f(x: &[u8]) -> usize { x.len() }"},"#;
        let history = format!(
            r#"{{"model":"m","messages":[{}{{}}]}}"#,
            message.repeat(800)
        );
        let small = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}]}"#;
        for (name, text, rounds) in [
            ("92 KB history", &history[..], 200),
            ("small body", small, 200_000),
        ] {
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                assert!(members(std::hint::black_box(text.as_bytes())).is_ok());
            }
            let scan = started.elapsed().as_nanos() as f64 / rounds as f64;
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                assert!(by_serde(std::hint::black_box(text.as_bytes())).is_ok());
            }
            let serde = started.elapsed().as_nanos() as f64 / rounds as f64;
            println!("{name}: scan {scan:.0} ns, serde_json {serde:.0} ns");
        }
    }

    #[test]
    fn members_are_spans_of_the_text() {
        let found = members(br#" {"a" : [1, {"b":null}] ,"c\n":"\""} "#).unwrap();
        let found: Vec<_> = found.iter().map(|m| (m.key, m.escaped, m.value)).collect();
        assert_eq!(
            found,
            [
                ("a", None, r#"[1, {"b":null}]"#),
                (r"c\n", Some(r#""c\n""#), r#""\"""#)
            ]
        );
    }
}
