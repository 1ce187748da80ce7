//! The token counts a backend reports in a reply's or a stream chunk's `usage`: chat and
//! completions (`prompt_tokens`, `completion_tokens`, their `*_details`), the Responses API
//! (`input_tokens`, `output_tokens`, inside `response` in its stream events) and embeddings
//! (`prompt_tokens` only).

use serde_json::Value;

use crate::json::Fields;

/// What one request used, as the backend reported it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt (input) tokens, cached ones included.
    pub prompt: u64,
    /// Completion (output) tokens, reasoning ones included.
    pub completion: u64,
    /// Of `completion`: reasoning tokens, where the backend says.
    pub reasoning: u64,
    /// Of `prompt`: tokens served from the backend's prompt cache, where it says.
    pub cached: u64,
}

impl Tokens {
    /// From a reply or a chunk read as a value, if it carries a `usage` object (at the top,
    /// or in a Responses API event's `response`).
    pub fn from_message(value: &Value) -> Option<Tokens> {
        let usage = value.get("usage").filter(|u| u.is_object()).or_else(|| {
            value
                .get("response")?
                .get("usage")
                .filter(|u| u.is_object())
        })?;
        // Written out and read again (once a stream, a few dozen bytes): one reader of usage
        // objects rather than a second one for values.
        Tokens::from_usage_json(&serde_json::to_string(usage).ok()?)
    }

    /// From the text of a `usage` field. Every whole reply has one: read as top-level fields,
    /// not built as a value (an ordered map, each key hashed) and looked up path by path,
    /// which was about 8 % of the proxy's instructions per request.
    ///
    /// Both APIs' names are read; a backend uses one or the other. A count that is missing or
    /// not a whole, non-negative number is 0, and so is one in a `*_details` that is not an
    /// object.
    pub fn from_usage_json(usage: &str) -> Option<Tokens> {
        let usage = Fields::parse(usage.as_bytes()).ok()?;
        let detail = |object: &str, name: &str| {
            Fields::parse(object.as_bytes())
                .ok()
                .and_then(|o| o.get(name).map(whole_number))
                .unwrap_or(0)
        };
        // One pass over the members, not a lookup per name (nine of them). A name given twice
        // counts with the larger of its values.
        let mut tokens = Tokens::default();
        for (key, value) in usage.iter() {
            let (count, n) = match key {
                "prompt_tokens" | "input_tokens" => (&mut tokens.prompt, whole_number(value)),
                "completion_tokens" | "output_tokens" => {
                    (&mut tokens.completion, whole_number(value))
                }
                "completion_tokens_details" | "output_tokens_details" => {
                    (&mut tokens.reasoning, detail(value, "reasoning_tokens"))
                }
                "prompt_tokens_details" | "input_tokens_details" => {
                    (&mut tokens.cached, detail(value, "cached_tokens"))
                }
                // DeepSeek's name for it.
                "prompt_cache_hit_tokens" => (&mut tokens.cached, whole_number(value)),
                _ => continue,
            };
            *count = (*count).max(n);
        }
        Some(tokens)
    }

    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// A value's JSON text as a count: digits only (JSON numbers have no `+`), within `u64`.
/// A fraction, an exponent, a sign, an overflow or any other kind of value is 0, as
/// `Value::as_u64` would have it.
fn whole_number(json: &str) -> u64 {
    json.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_and_responses_names() {
        let chat = json!({"usage": {"prompt_tokens": 3, "completion_tokens": 5}});
        assert_eq!(
            Tokens::from_message(&chat),
            Some(Tokens {
                prompt: 3,
                completion: 5,
                ..Tokens::default()
            })
        );
        let responses = r#"{"input_tokens": 7, "output_tokens": 11, "total_tokens": 18}"#;
        assert_eq!(
            Tokens::from_usage_json(responses),
            Some(Tokens {
                prompt: 7,
                completion: 11,
                ..Tokens::default()
            })
        );
    }

    #[test]
    fn reasoning_and_cached_tokens() {
        let chat = json!({"usage": {
            "prompt_tokens": 100, "completion_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 64},
            "completion_tokens_details": {"reasoning_tokens": 30}}});
        let want = Tokens {
            prompt: 100,
            completion: 40,
            reasoning: 30,
            cached: 64,
        };
        assert_eq!(Tokens::from_message(&chat), Some(want));
        // The Responses API's stream: usage in the `response.completed` event's response.
        let completed = json!({"type": "response.completed", "response": {"usage": {
            "input_tokens": 100, "output_tokens": 40,
            "input_tokens_details": {"cached_tokens": 64},
            "output_tokens_details": {"reasoning_tokens": 30}}}});
        assert_eq!(Tokens::from_message(&completed), Some(want));
        let deepseek = r#"{"prompt_tokens": 100, "completion_tokens": 40,
            "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36,
            "completion_tokens_details": {"reasoning_tokens": 30}}"#;
        assert_eq!(Tokens::from_usage_json(deepseek), Some(want));
        let embeddings = r#"{"prompt_tokens": 9, "total_tokens": 9}"#;
        assert_eq!(
            Tokens::from_usage_json(embeddings).map(|t| (t.prompt, t.total())),
            Some((9, 9))
        );
    }

    /// Every name the reading looks at.
    const NAMES: [&str; 11] = [
        "prompt_tokens",
        "input_tokens",
        "completion_tokens",
        "output_tokens",
        "prompt_cache_hit_tokens",
        "reasoning_tokens",
        "cached_tokens",
        "prompt_tokens_details",
        "input_tokens_details",
        "completion_tokens_details",
        "output_tokens_details",
    ];

    /// The reading this replaced: the object built as a value, each count looked up by path.
    fn by_paths(usage: &Value) -> Tokens {
        let count = |path: &[&str]| {
            path.iter()
                .try_fold(usage, |v, k| v.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Tokens {
            prompt: count(&["prompt_tokens"]).max(count(&["input_tokens"])),
            completion: count(&["completion_tokens"]).max(count(&["output_tokens"])),
            reasoning: count(&["completion_tokens_details", "reasoning_tokens"])
                .max(count(&["output_tokens_details", "reasoning_tokens"])),
            cached: count(&["prompt_tokens_details", "cached_tokens"])
                .max(count(&["input_tokens_details", "cached_tokens"]))
                .max(count(&["prompt_cache_hit_tokens"])),
        }
    }

    /// Any JSON value likely to sit where a count or a details object is expected.
    fn odd_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e3f64..1e3).prop_map(Value::from),
            Just(json!(1.0e30)),
            "[a-z0-9]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            let name = proptest::sample::select(
                NAMES
                    .iter()
                    .copied()
                    .chain(["total_tokens", "other"])
                    .collect::<Vec<_>>(),
            );
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                proptest::collection::vec((name, inner), 0..6).prop_map(|pairs| {
                    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn reads_what_the_path_lookups_read(
            pairs in proptest::collection::vec(
                (proptest::sample::select(NAMES.iter().copied()
                    .chain(["total_tokens", "prompt\\u005ftokens"]).collect::<Vec<_>>()),
                 odd_value()),
                0..10),
        ) {
            // Written by hand so that a key may repeat (the last one counts) or be escaped.
            let body = pairs.iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect::<Vec<_>>()
                .join(",");
            let text = format!("{{{body}}}");
            let value: Value = serde_json::from_str(&text).unwrap();
            proptest::prop_assert_eq!(Tokens::from_usage_json(&text), Some(by_paths(&value)));
            proptest::prop_assert_eq!(
                Tokens::from_message(&json!({"usage": value.clone()})),
                Some(by_paths(&value))
            );
        }
    }

    #[test]
    fn details_that_are_null_or_not_objects_count_nothing() {
        let usage = r#"{"prompt_tokens": 5, "completion_tokens": 2.0,
            "prompt_tokens_details": null, "completion_tokens_details": [1, {"a": []}],
            "output_tokens_details": {"reasoning_tokens": 18446744073709551615},
            "input_tokens_details": {"cached_tokens": 3, "input_tokens_details": {"cached_tokens": 9}},
            "other": {"deep": [[[{}]]]}}"#;
        assert_eq!(
            Tokens::from_usage_json(usage),
            Some(Tokens {
                prompt: 5,
                completion: 0,
                reasoning: u64::MAX,
                cached: 3,
            })
        );
        // Not JSON at all: no counts rather than zeros.
        assert_eq!(Tokens::from_usage_json("{\"prompt_tokens\": 5,"), None);
    }

    #[test]
    fn null_usage_and_odd_counts() {
        assert_eq!(Tokens::from_message(&json!({"usage": null})), None);
        assert_eq!(Tokens::from_message(&json!({"choices": []})), None);
        assert_eq!(Tokens::from_usage_json("null"), None);
        let odd = json!({"usage": {"prompt_tokens": -1, "completion_tokens": "2"}});
        assert_eq!(Tokens::from_message(&odd), Some(Tokens::default()));
    }
}
