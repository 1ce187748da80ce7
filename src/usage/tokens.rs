//! The token counts a backend reports in a reply's or a stream chunk's `usage`: chat and
//! completions (`prompt_tokens`, `completion_tokens`, their `*_details`), the Responses API
//! (`input_tokens`, `output_tokens`, inside `response` in its stream events) and embeddings
//! (`prompt_tokens` only).

use serde_json::Value;

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
        Some(Tokens::of(usage))
    }

    /// From the text of a `usage` field, read without building the reply as a value.
    pub fn from_usage_json(usage: &str) -> Option<Tokens> {
        if !usage.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str::<Value>(usage)
            .ok()
            .map(|u| Tokens::of(&u))
    }

    /// A count that is missing or not a whole number is 0. Both APIs' names are read; a
    /// backend uses one or the other.
    fn of(usage: &Value) -> Tokens {
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
                // DeepSeek's name for it.
                .max(count(&["prompt_cache_hit_tokens"])),
        }
    }

    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
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

    #[test]
    fn null_usage_and_odd_counts() {
        assert_eq!(Tokens::from_message(&json!({"usage": null})), None);
        assert_eq!(Tokens::from_message(&json!({"choices": []})), None);
        assert_eq!(Tokens::from_usage_json("null"), None);
        let odd = json!({"usage": {"prompt_tokens": -1, "completion_tokens": "2"}});
        assert_eq!(Tokens::from_message(&odd), Some(Tokens::default()));
    }
}
