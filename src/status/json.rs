//! A small JSON writer for the status report: objects of numbers, strings and nested values,
//! written straight into a string. (serde_json's `json!` builds a value per field through
//! generic conversions; for the report's forty-odd fields that cost the aarch64 binary several
//! KiB of its budget.)

use std::fmt::Write as _;

/// An object being written; fields are separated as they come.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn open(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn num(&mut self, key: &str, value: u64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    /// A number, or `null`.
    pub fn opt(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        match value {
            Some(v) => self.num(key, v),
            None => {
                self.key(key).push_str("null");
                self
            }
        }
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let out = self.key(key);
        string(out, value);
        self
    }

    /// A string, or `null`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key).push_str("null");
                self
            }
        }
    }

    /// A nested object.
    pub fn obj(&mut self, key: &str, fill: impl FnOnce(&mut Obj<'_>)) -> &mut Self {
        let out = self.key(key);
        let mut inner = Obj::open(out);
        fill(&mut inner);
        inner.close();
        self
    }

    /// An array of objects, one per item.
    pub fn list<T>(
        &mut self,
        key: &str,
        items: &[T],
        fill: impl Fn(&mut Obj<'_>, &T),
    ) -> &mut Self {
        let out = self.key(key);
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut inner = Obj::open(out);
            fill(&mut inner, item);
            inner.close();
        }
        out.push(']');
        self
    }

    pub fn close(self) {
        self.out.push('}');
    }
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_serde_reads_back() {
        let mut out = String::new();
        let mut o = Obj::open(&mut out);
        o.num("n", 7)
            .opt("none", None)
            .str("s", "a \"q\" \\ \n\u{1} ü")
            .opt_str("o", Some("x"))
            .obj("inner", |i| {
                i.num("k", 1);
            })
            .list("items", &[1u64, 2], |i, v| {
                i.num("v", *v);
            })
            .list("empty", &[] as &[u64], |_, _| {});
        o.close();
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"n": 7, "none": null, "s": "a \"q\" \\ \n\u{1} ü", "o": "x",
                               "inner": {"k": 1}, "items": [{"v": 1}, {"v": 2}], "empty": []})
        );
    }
}
