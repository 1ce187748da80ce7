//! Usage for streams whose client did not ask for it. Chat and text completion streams carry
//! `usage` only when the request says `stream_options: {"include_usage": true}`; to count a
//! stream's tokens the proxy asks for it, and takes back out what the client did not ask for:
//! the `"usage": null` in every chunk and the usage-only chunk at the end ([`strip`]).
//!
//! Some backends refuse the field (Mistral answers 422 `extra_forbidden` and sends usage in a
//! stream's last chunk unasked). One that answers 400/422 naming `stream_options` to a request
//! that had it (the proxy's or the client's) is remembered ([`Refusals`]) and gets the request
//! again without it, and so does every later request: a client that asks for usage still gets
//! it from such a backend, and is not refused.

use std::sync::Mutex;

use serde_json::Value;

use crate::api::endpoint::Endpoint;

/// The endpoints whose streams take `stream_options`.
pub fn endpoint_takes_it(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
}

/// Whether the proxy adds `include_usage` to a request that streams upstream, given whether
/// the client asked for it and the backend refused it.
pub fn adds(client_asked: bool, endpoint: Endpoint, refused: bool) -> bool {
    endpoint_takes_it(endpoint) && !client_asked && !refused
}

/// Backends (by `name`) that refused `stream_options`: a few at most.
#[derive(Default)]
pub struct Refusals(Mutex<Vec<String>>);

impl Refusals {
    pub fn refused(&self, backend: &str) -> bool {
        self.lock().iter().any(|b| b == backend)
    }

    /// Remembers a refusal; `false` if it was known.
    pub fn learn(&self, backend: &str) -> bool {
        let mut known = self.lock();
        if known.iter().any(|b| b == backend) {
            return false;
        }
        known.push(backend.to_owned());
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an error body names `stream_options`.
pub fn names_it(body: &[u8]) -> bool {
    body.windows(b"stream_options".len())
        .any(|w| w == b"stream_options")
}

/// What the client sees of a chunk when the proxy asked for usage on its behalf: without its
/// `usage` field, and nothing at all for the usage-only chunk (`choices` empty). Returns
/// `None` to drop the chunk, otherwise whether it changed.
pub fn strip(chunk: &mut Value) -> Option<bool> {
    let Some(obj) = chunk.as_object_mut() else {
        return Some(false);
    };
    let Some(usage) = obj.remove("usage") else {
        return Some(false);
    };
    let no_choices = obj
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty());
    if !usage.is_null() && no_choices {
        return None;
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_the_usage_the_client_did_not_ask_for() {
        let mut content = json!({"choices": [{"delta": {"content": "hi"}}], "usage": null});
        assert_eq!(strip(&mut content), Some(true));
        assert_eq!(content, json!({"choices": [{"delta": {"content": "hi"}}]}));
        let mut last = json!({"choices": [], "usage": {"prompt_tokens": 3}});
        assert_eq!(strip(&mut last), None);
        // Usage in a chunk that also carries content (Mistral's last chunk): kept, usage gone.
        let mut both = json!({"choices": [{"delta": {}}], "usage": {"prompt_tokens": 3}});
        assert_eq!(strip(&mut both), Some(true));
        assert!(both.get("usage").is_none());
        let mut plain = json!({"choices": []});
        assert_eq!(strip(&mut plain), Some(false));
    }

    #[test]
    fn learns_refusals_once() {
        let r = Refusals::default();
        assert!(!r.refused("mistral"));
        assert!(r.learn("mistral"));
        assert!(!r.learn("mistral"));
        assert!(r.refused("mistral"));
        assert!(names_it(br#"{"loc":["body","stream_options"]}"#));
        assert!(!names_it(br#"{"error":"bad"}"#));
    }
}
