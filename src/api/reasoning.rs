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
//! Strict backends (Mistral, Cerebras, older vLLM) reject a message field they do not know, so a
//! backend gets a field it did not produce only when it is known to need it ([`Mend`]):
//! replaying its own reasoning is always safe; the fallback is for known thinking backends,
//! configured (`reasoning_replay: true`) or [`Learned`] while running.
//!
//! Bounded: at most [`MAX_ENTRIES`] turns and [`MAX_BYTES`] of reasoning, each kept [`TTL`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Backend, ReasoningFallback, ReasoningReplay};

pub const MAX_ENTRIES: usize = 4096;
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// An agent session's tool loop is minutes; a day covers a conversation resumed later.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

type Key = [u8; 32];

/// Lives as long as the process: reloads keep what was remembered and learned.
#[derive(Default)]
pub struct ReasoningCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<Key>,
    bytes: usize,
    /// By backend name; bounded by the names configured (reloads included).
    learned: HashMap<String, Learned>,
}

struct Entry {
    reasoning: String,
    /// The backend (entry name) that produced it.
    producer: String,
    at: Instant,
}

/// What a backend in `reasoning_replay: auto` has shown about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// It returned `reasoning_content` beside tool calls, or rejected a turn without it.
    Thinking,
    /// It rejected a `reasoning_content` the proxy had added.
    Rejects,
}

/// What one request's history gets for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mend {
    /// Sent as the client wrote it.
    Off,
    /// Only reasoning this backend produced itself is put back.
    Own,
    /// Any remembered reasoning is put back; the fallback covers the rest.
    All(ReasoningFallback),
}

/// What [`ReasoningCache::restore`] did to one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub replayed: usize,
    pub fell_back: usize,
    /// Assistant tool-call turns still without `reasoning_content`.
    pub lacking: usize,
}

impl Restored {
    /// Whether the history now holds a `reasoning_content` the client did not send.
    pub fn added(&self) -> bool {
        self.replayed > 0 || self.fell_back > 0
    }
}

impl ReasoningCache {
    /// How `backend`'s histories are mended, from its setting and what it has shown.
    pub fn mend_for(&self, backend: &Backend) -> Mend {
        match backend.reasoning_replay {
            ReasoningReplay::Off => Mend::Off,
            ReasoningReplay::On => Mend::All(backend.reasoning_fallback),
            ReasoningReplay::Auto => match self.learned(&backend.name) {
                Some(Learned::Thinking) => Mend::All(backend.reasoning_fallback),
                Some(Learned::Rejects) => Mend::Off,
                None => Mend::Own,
            },
        }
    }

    pub fn learned(&self, backend: &str) -> Option<Learned> {
        self.lock().learned.get(backend).copied()
    }

    /// Records what `backend` has shown; false when it was known already.
    pub fn learn(&self, backend: &str, what: Learned) -> bool {
        self.lock().learned.insert(backend.to_owned(), what) != Some(what)
    }

    /// Remembers the reasoning of each choice of a `chat.completion` from `backend` that calls
    /// tools. Such a reply shows the backend thinks, unless it is known to reject the field.
    pub fn remember_reply(&self, reply: &Value, backend: &str) {
        for choice in reply["choices"].as_array().into_iter().flatten() {
            self.remember(&choice["message"], backend);
        }
    }

    /// Remembers one assistant message's reasoning, if it has tool calls and reasoning.
    pub fn remember(&self, message: &Value, backend: &str) {
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
        if !inner.learned.contains_key(backend) {
            inner.learned.insert(backend.to_owned(), Learned::Thinking);
        }
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.reasoning.len();
            inner.order.retain(|k| *k != key);
        }
        inner.bytes += reasoning.len();
        inner.entries.insert(
            key,
            Entry {
                reasoning: reasoning.to_owned(),
                producer: backend.to_owned(),
                at: Instant::now(),
            },
        );
        inner.order.push_back(key);
        while inner.entries.len() > MAX_ENTRIES || inner.bytes > MAX_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.reasoning.len();
            }
        }
    }

    /// Puts remembered reasoning back into assistant turns with tool calls that lack it, as
    /// `mend` allows for `backend`; applies the fallback to those nothing is remembered for.
    pub fn restore(&self, messages: &mut Vec<Value>, backend: &str, mend: Mend) -> Restored {
        let mut restored = Restored::default();
        let mut dropped_calls: Vec<String> = Vec::new();
        for message in messages.iter_mut() {
            if message["role"] != "assistant" || has_reasoning(message) {
                continue;
            }
            let Some(key) = key(message) else { continue };
            let remembered = match mend {
                Mend::Off => None,
                Mend::Own => self.get(&key, Some(backend)),
                Mend::All(_) => self.get(&key, None),
            };
            if let Some(reasoning) = remembered {
                message["reasoning_content"] = Value::String(reasoning);
                restored.replayed += 1;
                continue;
            }
            let Mend::All(fallback) = mend else {
                restored.lacking += 1;
                continue;
            };
            match fallback {
                ReasoningFallback::Keep => {
                    restored.lacking += 1;
                    continue;
                }
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

    /// The reasoning remembered under `key`, if fresh and (with `producer`) from that backend.
    fn get(&self, key: &Key, producer: Option<&str>) -> Option<String> {
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some(e) if e.at.elapsed() < TTL => producer
                .is_none_or(|p| p == e.producer)
                .then(|| e.reasoning.clone()),
            Some(_) => {
                if let Some(old) = inner.entries.remove(key) {
                    inner.bytes -= old.reasoning.len();
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

/// Whether a backend's error answer (400 or 422) is about `reasoning_content`: DeepSeek and Kimi
/// name the field when it is missing, Mistral, Cerebras and vLLM when it is not allowed.
pub fn error_names_reasoning(body: &[u8]) -> bool {
    body.windows(b"reasoning_content".len())
        .any(|w| w == b"reasoning_content")
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

    const ALL_EMPTY: Mend = Mend::All(ReasoningFallback::Empty);

    #[test]
    fn remembered_reasoning_is_put_back_whatever_the_empty_content_looks_like() {
        let cache = ReasoningCache::default();
        cache.remember(&turn(Some("I should call the tool."), json!("")), "ds");
        let mut messages = history(turn(None, Value::Null));
        let r = cache.restore(&mut messages, "ds", Mend::All(ReasoningFallback::Keep));
        assert_eq!(
            r,
            Restored {
                replayed: 1,
                fell_back: 0,
                lacking: 0
            }
        );
        assert_eq!(messages[1]["reasoning_content"], "I should call the tool.");
    }

    #[test]
    fn fallbacks_insert_empty_or_strip_the_calls_and_their_results() {
        let cache = ReasoningCache::default();
        let mut messages = history(turn(None, Value::Null));
        cache.restore(&mut messages, "ds", ALL_EMPTY);
        assert_eq!(messages[1]["reasoning_content"], "");

        let mut messages = history(turn(None, Value::Null));
        let r = cache.restore(&mut messages, "ds", Mend::All(ReasoningFallback::Strip));
        assert_eq!(r.fell_back, 1);
        assert_eq!(messages.len(), 2, "the tool result went with its call");
        assert!(messages[1].get("tool_calls").is_none());
        assert_eq!(messages[1]["content"], "");

        let mut messages = history(turn(None, Value::Null));
        let r = cache.restore(&mut messages, "ds", Mend::All(ReasoningFallback::Keep));
        assert!(messages[1].get("reasoning_content").is_none());
        assert_eq!(r.lacking, 1);
    }

    #[test]
    fn an_unknown_backend_gets_only_its_own_reasoning_and_no_fallback() {
        let cache = ReasoningCache::default();
        cache.remember(&turn(Some("deepseek's thought"), Value::Null), "ds");
        let mut messages = history(turn(None, Value::Null));
        let r = cache.restore(&mut messages, "mistral", Mend::Own);
        assert_eq!(
            r,
            Restored {
                replayed: 0,
                fell_back: 0,
                lacking: 1
            }
        );
        assert!(messages[1].get("reasoning_content").is_none());
        let r = cache.restore(&mut messages, "ds", Mend::Own);
        assert_eq!(r.replayed, 1);
        assert_eq!(messages[1]["reasoning_content"], "deepseek's thought");
        let mut messages = history(turn(None, Value::Null));
        assert_eq!(cache.restore(&mut messages, "ds", Mend::Off).replayed, 0);
    }

    #[test]
    fn backends_are_learned_from_replies_and_errors() {
        let cache = ReasoningCache::default();
        let backend = |replay| {
            let mut b = crate::config::Config::from_yaml(
                "apis: [{name: b, endpoint: \"http://x\", custom_model_id: m}]",
                std::path::Path::new("."),
            )
            .unwrap()
            .backends
            .remove(0);
            b.reasoning_replay = replay;
            b
        };
        let auto = backend(ReasoningReplay::Auto);
        assert_eq!(cache.mend_for(&auto), Mend::Own);
        cache.remember(&turn(Some("thought"), Value::Null), "b");
        assert_eq!(cache.mend_for(&auto), ALL_EMPTY, "it returned reasoning");
        assert!(cache.learn("b", Learned::Rejects));
        assert!(!cache.learn("b", Learned::Rejects), "known already");
        assert_eq!(cache.mend_for(&auto), Mend::Off);
        cache.remember(&turn(Some("again"), json!("x")), "b");
        assert_eq!(
            cache.learned("b"),
            Some(Learned::Rejects),
            "a reply does not undo it"
        );
        assert_eq!(cache.mend_for(&backend(ReasoningReplay::On)), ALL_EMPTY);
        assert_eq!(cache.mend_for(&backend(ReasoningReplay::Off)), Mend::Off);
        assert!(error_names_reasoning(
            br#"{"loc":["messages",1,"reasoning_content"]}"#
        ));
        assert!(!error_names_reasoning(br#"{"error":"bad tools"}"#));
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
            cache.restore(&mut messages, "ds", ALL_EMPTY),
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
            cache.remember(&m, "ds");
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        let big = "x".repeat(MAX_BYTES / 2 + 1);
        cache.remember(&turn(Some(&big), json!("a")), "ds");
        cache.remember(&turn(Some(&big), json!("b")), "ds");
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
