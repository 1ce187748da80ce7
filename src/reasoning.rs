//! Replaying `reasoning_content` for thinking models that call tools.
//!
//! DeepSeek (thinking mode), Kimi and others answer with `reasoning_content` beside
//! `tool_calls`, and reject a later request whose history holds that assistant turn without its
//! `reasoning_content` (400 "reasoning_content ... must be passed back"). Trae does not send it
//! back. So the proxy remembers the reasoning of every reply that calls tools, keyed by a hash of
//! the turn's tool calls and content, and puts it back into matching assistant turns that lack
//! it. When nothing is remembered (after a restart, or a turn from another proxy), the
//! backend's `reasoning_fallback` applies: insert an empty `reasoning_content`, or drop that
//! turn's tool calls (and the tool results answering them).
//!
//! Bounded: at most [`MAX_ENTRIES`] turns and [`MAX_BYTES`] of reasoning, each kept [`TTL`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::ReasoningFallback;

pub const MAX_ENTRIES: usize = 4096;
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// An agent session's tool loop is minutes; a day covers a conversation resumed later.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

type Key = [u8; 32];

#[derive(Default)]
pub struct ReasoningCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, (String, Instant)>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<Key>,
    bytes: usize,
}

/// What [`ReasoningCache::restore`] did to one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub replayed: usize,
    pub fell_back: usize,
}

impl ReasoningCache {
    /// Remembers the reasoning of each choice of a `chat.completion` that calls tools.
    pub fn remember_reply(&self, reply: &Value) {
        for choice in reply["choices"].as_array().into_iter().flatten() {
            self.remember(&choice["message"]);
        }
    }

    /// Remembers one assistant message's reasoning, if it has tool calls and reasoning.
    pub fn remember(&self, message: &Value) {
        let Some(reasoning) = message["reasoning_content"]
            .as_str()
            .filter(|r| !r.is_empty())
        else {
            return;
        };
        let Some(key) = key(message) else { return };
        if reasoning.len() > MAX_BYTES {
            return;
        }
        let mut inner = self.lock();
        if let Some((old, _)) = inner.entries.remove(&key) {
            inner.bytes -= old.len();
            inner.order.retain(|k| *k != key);
        }
        inner.bytes += reasoning.len();
        inner
            .entries
            .insert(key, (reasoning.to_owned(), Instant::now()));
        inner.order.push_back(key);
        while inner.entries.len() > MAX_ENTRIES || inner.bytes > MAX_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some((old, _)) = inner.entries.remove(&oldest) {
                inner.bytes -= old.len();
            }
        }
    }

    /// Puts remembered reasoning back into assistant turns with tool calls that lack it;
    /// applies `fallback` to those nothing is remembered for.
    pub fn restore(&self, messages: &mut Vec<Value>, fallback: ReasoningFallback) -> Restored {
        let mut restored = Restored::default();
        let mut dropped_calls: Vec<String> = Vec::new();
        for message in messages.iter_mut() {
            if message["role"] != "assistant" || has_reasoning(message) {
                continue;
            }
            let Some(key) = key(message) else { continue };
            if let Some(reasoning) = self.get(&key) {
                message["reasoning_content"] = Value::String(reasoning);
                restored.replayed += 1;
                continue;
            }
            match fallback {
                ReasoningFallback::Keep => continue,
                ReasoningFallback::Empty => {
                    message["reasoning_content"] = Value::String(String::new());
                }
                ReasoningFallback::Strip => {
                    if let Some(obj) = message.as_object_mut() {
                        if let Some(Value::Array(calls)) = obj.remove("tool_calls") {
                            dropped_calls.extend(
                                calls
                                    .iter()
                                    .filter_map(|c| c["id"].as_str().map(str::to_owned)),
                            );
                        }
                        if obj.get("content").is_none_or(Value::is_null) {
                            obj.insert("content".into(), Value::String(String::new()));
                        }
                    }
                }
            }
            restored.fell_back += 1;
        }
        if !dropped_calls.is_empty() {
            // Tool results answering a dropped call would now answer nothing: backends reject that.
            messages.retain(|m| {
                m["role"] != "tool"
                    || !m["tool_call_id"]
                        .as_str()
                        .is_some_and(|id| dropped_calls.iter().any(|d| d == id))
            });
        }
        restored
    }

    fn get(&self, key: &Key) -> Option<String> {
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some((reasoning, at)) if at.elapsed() < TTL => Some(reasoning.clone()),
            Some(_) => {
                if let Some((old, _)) = inner.entries.remove(key) {
                    inner.bytes -= old.len();
                }
                inner.order.retain(|k| k != key);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

fn has_reasoning(message: &Value) -> bool {
    message["reasoning_content"].is_string()
}

/// The identity of an assistant turn with tool calls: its calls (id, name, arguments) and its
/// text. `None` without tool calls. Null and empty content are the same turn (clients send
/// either back).
fn key(message: &Value) -> Option<Key> {
    let calls = message["tool_calls"].as_array().filter(|c| !c.is_empty())?;
    let mut material = Vec::new();
    for call in calls {
        for part in [
            &call["id"],
            &call["function"]["name"],
            &call["function"]["arguments"],
        ] {
            material.extend_from_slice(part.as_str().unwrap_or_default().as_bytes());
            material.push(0);
        }
    }
    material.push(1);
    material.extend_from_slice(
        message["content"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .as_bytes(),
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, &material);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    Some(key)
}

/// Kimi rejects an assistant turn with tool calls whose `content` is `""`: send `null`.
pub fn null_empty_content_with_tool_calls(messages: &mut [Value]) {
    for m in messages {
        let has_calls = m["tool_calls"].as_array().is_some_and(|c| !c.is_empty());
        if has_calls && m["content"] == "" {
            m["content"] = Value::Null;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn turn(reasoning: Option<&str>, content: Value) -> Value {
        let mut m = json!({
            "role": "assistant",
            "content": content,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]
        });
        if let Some(r) = reasoning {
            m["reasoning_content"] = json!(r);
        }
        m
    }

    fn history(assistant: Value) -> Vec<Value> {
        vec![
            json!({"role": "user", "content": "weather?"}),
            assistant,
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}),
        ]
    }

    #[test]
    fn remembered_reasoning_is_put_back_whatever_the_empty_content_looks_like() {
        let cache = ReasoningCache::default();
        cache.remember(&turn(Some("I should call the tool."), json!("")));
        let mut messages = history(turn(None, Value::Null));
        let r = cache.restore(&mut messages, ReasoningFallback::Keep);
        assert_eq!(
            r,
            Restored {
                replayed: 1,
                fell_back: 0
            }
        );
        assert_eq!(messages[1]["reasoning_content"], "I should call the tool.");
    }

    #[test]
    fn fallbacks_insert_empty_or_strip_the_calls_and_their_results() {
        let cache = ReasoningCache::default();
        let mut messages = history(turn(None, Value::Null));
        cache.restore(&mut messages, ReasoningFallback::Empty);
        assert_eq!(messages[1]["reasoning_content"], "");

        let mut messages = history(turn(None, Value::Null));
        let r = cache.restore(&mut messages, ReasoningFallback::Strip);
        assert_eq!(r.fell_back, 1);
        assert_eq!(messages.len(), 2, "the tool result went with its call");
        assert!(messages[1].get("tool_calls").is_none());
        assert_eq!(messages[1]["content"], "");

        let mut messages = history(turn(None, Value::Null));
        cache.restore(&mut messages, ReasoningFallback::Keep);
        assert!(messages[1].get("reasoning_content").is_none());
    }

    #[test]
    fn turns_with_reasoning_or_without_tool_calls_are_left_alone() {
        let cache = ReasoningCache::default();
        let mut messages = vec![
            turn(Some("mine"), Value::Null),
            json!({"role": "assistant", "content": "plain answer"}),
        ];
        let before = messages.clone();
        assert_eq!(
            cache.restore(&mut messages, ReasoningFallback::Empty),
            Restored::default()
        );
        assert_eq!(messages, before);
    }

    #[test]
    fn memory_is_bounded() {
        let cache = ReasoningCache::default();
        for i in 0..(MAX_ENTRIES + 10) {
            let mut m = turn(Some("r"), Value::Null);
            m["tool_calls"][0]["id"] = json!(format!("call_{i}"));
            cache.remember(&m);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        let big = "x".repeat(MAX_BYTES / 2 + 1);
        cache.remember(&turn(Some(&big), json!("a")));
        cache.remember(&turn(Some(&big), json!("b")));
        assert!(cache.lock().bytes <= MAX_BYTES);
    }

    #[test]
    fn kimi_quirk_nulls_empty_content_beside_tool_calls() {
        let mut messages = vec![
            turn(None, json!("")),
            json!({"role": "assistant", "content": ""}),
        ];
        null_empty_content_with_tool_calls(&mut messages);
        assert_eq!(messages[0]["content"], Value::Null);
        assert_eq!(messages[1]["content"], "");
    }
}
