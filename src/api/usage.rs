//! The token counts a backend reports in a reply's or a stream chunk's `usage`.

use serde_json::Value;

/// Prompt (input) and completion (output) tokens of one request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
}

impl Tokens {
    /// From a reply or a chunk read as a value, if it carries a `usage` object.
    pub fn from_message(value: &Value) -> Option<Tokens> {
        let usage = value.get("usage").filter(|u| u.is_object())?;
        Some(Usage::of(usage).counts())
    }

    /// From the text of a `usage` field, read without building the reply as a value.
    pub fn from_usage_json(usage: &str) -> Option<Tokens> {
        if !usage.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str::<Usage>(usage)
            .ok()
            .map(|u| u.counts())
    }
}

/// A `usage` object under OpenAI's names or the Responses API's.
#[derive(serde::Deserialize)]
struct Usage {
    prompt_tokens: Option<Value>,
    input_tokens: Option<Value>,
    completion_tokens: Option<Value>,
    output_tokens: Option<Value>,
}

impl Usage {
    /// From an object already read as a value. (Not `Usage::deserialize(value)`: that builds a
    /// second deserializer for the struct, 12 KiB of binary.)
    fn of(usage: &Value) -> Usage {
        let field = |name: &str| usage.get(name).cloned();
        Usage {
            prompt_tokens: field("prompt_tokens"),
            input_tokens: field("input_tokens"),
            completion_tokens: field("completion_tokens"),
            output_tokens: field("output_tokens"),
        }
    }

    /// A count that is missing or not a whole number is 0.
    fn counts(&self) -> Tokens {
        let count = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64).unwrap_or(0);
        Tokens {
            prompt: count(&self.prompt_tokens).max(count(&self.input_tokens)),
            completion: count(&self.completion_tokens).max(count(&self.output_tokens)),
        }
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
                completion: 5
            })
        );
        let responses = r#"{"input_tokens": 7, "output_tokens": 11, "total_tokens": 18}"#;
        assert_eq!(
            Tokens::from_usage_json(responses),
            Some(Tokens {
                prompt: 7,
                completion: 11
            })
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
