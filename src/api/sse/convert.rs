//! Converting between a streamed chat completion (a sequence of `chat.completion.chunk`
//! objects) and a single `chat.completion`, both ways, without losing content,
//! `reasoning_content`, tool calls, `finish_reason` or usage. Used when a backend's
//! `stream_mode` forces a mode the client did not ask for.
//!
//! Built with serde_json values only: quotes, backslashes, newlines and emoji survive, unlike the
//! original's string concatenation.

use serde_json::{Map, Value, json};

/// Folds stream chunks into one `chat.completion`.
#[derive(Default)]
pub struct Aggregator {
    id: Option<Value>,
    created: Option<Value>,
    system_fingerprint: Option<Value>,
    choices: Vec<ChoiceAcc>,
    usage: Option<Value>,
    /// Text folded in so far (content, reasoning, arguments), in bytes.
    text_bytes: usize,
}

#[derive(Default)]
struct ChoiceAcc {
    index: u64,
    role: Option<String>,
    content: String,
    has_content: bool,
    reasoning: String,
    has_reasoning: bool,
    refusal: Option<String>,
    tool_calls: Vec<ToolCallAcc>,
    finish_reason: Value,
}

#[derive(Default)]
struct ToolCallAcc {
    index: u64,
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

impl Aggregator {
    pub fn new() -> Self {
        Aggregator::default()
    }

    /// Adds one chunk (the parsed `data:` of an event).
    /// Text folded in so far (content, reasoning, tool call arguments), in bytes: what keeping
    /// the reply costs.
    pub fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    pub fn push(&mut self, chunk: &Value) {
        let Some(obj) = chunk.as_object() else {
            return;
        };
        for (field, slot) in [
            ("id", &mut self.id),
            ("created", &mut self.created),
            ("system_fingerprint", &mut self.system_fingerprint),
        ] {
            if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
                slot.get_or_insert_with(|| v.clone());
            }
        }
        if let Some(u) = obj.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        for choice in obj
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let acc = self.choice(index);
            if let Some(fr) = choice.get("finish_reason").filter(|v| !v.is_null()) {
                acc.finish_reason = fr.clone();
            }
            let Some(delta) = choice.get("delta").and_then(Value::as_object) else {
                continue;
            };
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                acc.role = Some(role.to_owned());
            }
            let mut added = 0;
            if let Some(c) = delta.get("content").and_then(Value::as_str) {
                acc.content.push_str(c);
                acc.has_content = true;
                added += c.len();
            }
            if let Some(r) = delta.get("reasoning_content").and_then(Value::as_str) {
                acc.reasoning.push_str(r);
                acc.has_reasoning = true;
                added += r.len();
            }
            if let Some(r) = delta.get("refusal").and_then(Value::as_str) {
                acc.refusal.get_or_insert_with(String::new).push_str(r);
                added += r.len();
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                added += acc.push_tool_call(call);
            }
            self.text_bytes += added;
        }
    }

    fn choice(&mut self, index: u64) -> &mut ChoiceAcc {
        let pos = match self.choices.iter().position(|c| c.index == index) {
            Some(p) => p,
            None => {
                self.choices.push(ChoiceAcc {
                    index,
                    finish_reason: Value::Null,
                    ..ChoiceAcc::default()
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[pos]
    }

    /// The complete reply, with `model` set to the client's id.
    pub fn finish(mut self, client_model: &str) -> Value {
        self.choices.sort_by_key(|c| c.index);
        let choices: Vec<Value> = self.choices.into_iter().map(ChoiceAcc::into_json).collect();
        let mut out = Map::new();
        out.insert(
            "id".into(),
            self.id.unwrap_or_else(|| json!("chatcmpl-proxy")),
        );
        out.insert("object".into(), json!("chat.completion"));
        out.insert("created".into(), self.created.unwrap_or_else(|| json!(0)));
        out.insert("model".into(), json!(client_model));
        out.insert("choices".into(), Value::Array(choices));
        if let Some(u) = self.usage {
            out.insert("usage".into(), u);
        }
        if let Some(fp) = self.system_fingerprint {
            out.insert("system_fingerprint".into(), fp);
        }
        Value::Object(out)
    }
}

impl ChoiceAcc {
    /// Folds in one tool call delta; returns the bytes of text it added.
    fn push_tool_call(&mut self, call: &Value) -> usize {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let pos = match self.tool_calls.iter().position(|t| t.index == index) {
            Some(p) => p,
            None => {
                self.tool_calls.push(ToolCallAcc {
                    index,
                    ..ToolCallAcc::default()
                });
                self.tool_calls.len() - 1
            }
        };
        let acc = &mut self.tool_calls[pos];
        if let Some(id) = call.get("id").filter(|v| !v.is_null()) {
            acc.id = Some(id.clone());
        }
        if let Some(kind) = call.get("type").filter(|v| !v.is_null()) {
            acc.kind = Some(kind.clone());
        }
        let mut added = 0;
        if let Some(f) = call.get("function") {
            if let Some(n) = f.get("name").and_then(Value::as_str) {
                acc.name.push_str(n);
                added += n.len();
            }
            if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                acc.arguments.push_str(a);
                added += a.len();
            }
        }
        added
    }

    fn into_json(mut self) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            json!(self.role.unwrap_or_else(|| "assistant".into())),
        );
        // OpenAI sends `content: null` for a reply made only of tool calls.
        let content = if self.has_content || self.tool_calls.is_empty() {
            json!(self.content)
        } else {
            Value::Null
        };
        message.insert("content".into(), content);
        if self.has_reasoning {
            message.insert("reasoning_content".into(), json!(self.reasoning));
        }
        if let Some(r) = self.refusal {
            message.insert("refusal".into(), json!(r));
        }
        if !self.tool_calls.is_empty() {
            self.tool_calls.sort_by_key(|t| t.index);
            let calls: Vec<Value> = self
                .tool_calls
                .into_iter()
                .map(|t| {
                    json!({
                        "id": t.id.unwrap_or(Value::Null),
                        "type": t.kind.unwrap_or_else(|| json!("function")),
                        "function": {"name": t.name, "arguments": t.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        json!({
            "index": self.index,
            "message": Value::Object(message),
            "logprobs": null,
            "finish_reason": self.finish_reason,
        })
    }
}

/// The stream a client would have received for `reply` (a `chat.completion`): per choice a role
/// chunk, reasoning, content, one chunk per tool call, a finish chunk; then a usage chunk when
/// `include_usage`. The caller adds `data: [DONE]`.
pub fn synthesize(reply: &Value, client_model: &str, include_usage: bool) -> Vec<Value> {
    let field = |name: &str| reply.get(name).cloned().unwrap_or(Value::Null);
    let base = |choices: Value| {
        let mut chunk = Map::new();
        chunk.insert("id".into(), field("id"));
        chunk.insert("object".into(), json!("chat.completion.chunk"));
        chunk.insert("created".into(), field("created"));
        chunk.insert("model".into(), json!(client_model));
        if let Some(fp) = reply.get("system_fingerprint") {
            chunk.insert("system_fingerprint".into(), fp.clone());
        }
        chunk.insert("choices".into(), choices);
        Value::Object(chunk)
    };
    let delta_chunk = |index: &Value, delta: Value, finish: Value| {
        base(json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]))
    };

    let mut chunks = Vec::new();
    for choice in reply
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        for delta in deltas(choice) {
            chunks.push(delta_chunk(&index, delta, Value::Null));
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        chunks.push(delta_chunk(&index, json!({}), finish));
    }
    if include_usage {
        if let Some(usage) = reply.get("usage").filter(|u| !u.is_null()) {
            let mut chunk = base(json!([]));
            if let Some(obj) = chunk.as_object_mut() {
                obj.insert("usage".into(), usage.clone());
            }
            chunks.push(chunk);
        }
    }
    chunks
}

/// The deltas one choice's message streams as: its role, then reasoning, content, refusal, and
/// one per tool call (numbered as a streaming backend numbers them).
fn deltas(choice: &Value) -> Vec<Value> {
    let empty = Map::new();
    let message = choice
        .get("message")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let text = |name: &str| message.get(name).and_then(Value::as_str);
    let role = message.get("role").cloned().unwrap_or(json!("assistant"));
    let mut out = vec![json!({"role": role, "content": ""})];
    if let Some(r) = text("reasoning_content").filter(|r| !r.is_empty()) {
        out.push(json!({"reasoning_content": r}));
    }
    if let Some(c) = text("content").filter(|c| !c.is_empty()) {
        out.push(json!({"content": c}));
    }
    if let Some(r) = text("refusal") {
        out.push(json!({"refusal": r}));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (i, call) in calls.into_iter().flatten().enumerate() {
        let mut call = call.clone();
        if let Some(obj) = call.as_object_mut() {
            obj.insert("index".into(), json!(i));
        }
        out.push(json!({"tool_calls": [call]}));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tricky_reply() -> Value {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "backend-model",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "He said \"hi\"\\n\nline2 🦀 中文",
                    "reasoning_content": "think \"hard\"\n",
                    "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"a\\\\b\"}"}},
                        {"id": "call_b", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
                    ]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        })
    }

    #[test]
    fn synthesize_then_aggregate_round_trips() {
        let reply = tricky_reply();
        let chunks = synthesize(&reply, "client-model", true);
        assert!(chunks.iter().all(|c| c["model"] == "client-model"));
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 12);
        let mut agg = Aggregator::new();
        for c in &chunks {
            agg.push(c);
        }
        let back = agg.finish("client-model");
        let mut expected = reply.clone();
        expected["model"] = json!("client-model");
        assert_eq!(back, expected);
    }

    #[test]
    fn aggregate_merges_split_tool_call_arguments_by_index() {
        let chunks = [
            json!({"id":"x","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"c0","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}),
            json!({"id":"x","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c1","type":"function","function":{"name":"g","arguments":""}}]},"finish_reason":null}]}),
            json!({"id":"x","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":null}]}),
            json!({"id":"x","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"id":"x","created":1,"model":"m","choices":[],"usage":{"total_tokens":3}}),
        ];
        let mut agg = Aggregator::new();
        for c in &chunks {
            agg.push(c);
        }
        let out = agg.finish("client");
        let msg = &out["choices"][0]["message"];
        assert_eq!(msg["content"], Value::Null);
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(msg["tool_calls"][1]["id"], "c1");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["usage"]["total_tokens"], 3);
        assert_eq!(out["model"], "client");
    }

    #[test]
    fn usage_chunk_only_when_asked() {
        let chunks = synthesize(&tricky_reply(), "m", false);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }
}
