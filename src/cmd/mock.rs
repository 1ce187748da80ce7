//! `trae-proxy mock`: an OpenAI-compatible backend that answers deterministically, without a
//! key and without cost, so an IDE or agent setup can be tried end to end before spending
//! tokens. Plain HTTP; it answers whatever model id it is sent (its model list shows
//! `mock-model`), so any `target_model_id` works.
//!
//! - `GET /v1/models`
//! - `POST /v1/chat/completions`, streamed or not: echoes the last user message, word by word
//!   at `--tokens-per-second`. When the request offers tools and the last user message names
//!   one of them, it calls that tool instead (arguments filled from the tool's schema); after a
//!   tool result it answers with text.
//! - `POST /v1/responses` (the Responses API, as Codex CLI uses it), streamed or not, with the
//!   same rules: text, or a `function_call` item.
//! - `POST /v1/embeddings`: an 8-dimensional vector derived from each input.
//!
//! `--config F` listens where F's first active entry with a local `http://` endpoint points,
//! so the shipped config and the mock meet without editing either. `--strict` answers 422 for a
//! chat message field that OpenAI's API does not define (`reasoning_content`, say), as Mistral
//! and Cerebras do, and for `stream_options`, as Mistral does (which sends usage in a stream's
//! last chunk unasked): a client or proxy that adds one fails here as it would there.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, StatusCode, header};
use log::info;
use serde_json::{Map, Value, json};

use crate::api_error::ApiError;
use crate::cli::MockArgs;
use crate::config::Config;
use crate::error::Error;
use crate::server::{After, BodyStream, Handler, Responder, json_content_type, serve_plain};

const MODEL: &str = "mock-model";
const DEFAULT_PORT: u16 = 8000;

/// The fields of a chat message in OpenAI's API; `--strict` refuses any other.
const MESSAGE_FIELDS: &[&str] = &[
    "role",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "refusal",
    "audio",
    "function_call",
];

struct Mock {
    strict: bool,
    latency: Duration,
    /// Pause between streamed words; zero sends them at once.
    pace: Duration,
}

pub fn run(args: &MockArgs) -> Result<(), Error> {
    crate::logging::init(false);
    let port = match (args.port, &args.config) {
        (Some(port), _) => port,
        (None, Some(path)) => configured_port(path)?,
        (None, None) => DEFAULT_PORT,
    };
    let addr = SocketAddr::new(args.bind, port);
    let listener = TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    let mock = Arc::new(Mock {
        strict: args.strict,
        latency: Duration::from_millis(args.latency_ms),
        pace: match args.tokens_per_second {
            0 => Duration::ZERO,
            n => Duration::from_secs(1) / n,
        },
    });
    let at = listener.local_addr()?;
    info!(
        "mock backend listening on http://{at} (answers any model id; serves chat completions, \
         responses, embeddings, models); try: curl http://{at}/v1/models"
    );
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let mock = Arc::clone(&mock);
        std::thread::spawn(move || {
            serve_plain(conn, mock.as_ref(), 1024 * 1024, Duration::from_secs(60));
        });
    }
    Ok(())
}

/// The port of the first active entry of `path` whose endpoint is `http://` on this machine.
fn configured_port(path: &Path) -> Result<u16, Error> {
    let config = Config::load(path)?;
    config
        .active_backends()
        .find_map(|b| {
            let uri: http::Uri = b.endpoint.parse().ok()?;
            let host = uri.host()?.trim_matches(['[', ']']);
            let local = host.eq_ignore_ascii_case("localhost")
                || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            (uri.scheme_str() == Some("http") && local).then(|| uri.port_u16().unwrap_or(80))
        })
        .ok_or_else(|| {
            Error::Refused(format!(
                "no active entry in {} has a local http:// endpoint (such as \
                 http://127.0.0.1:8000) for the mock to serve; give --port instead",
                path.display()
            ))
        })
}

impl Handler for Mock {
    fn handle(
        &self,
        request: Request<Vec<u8>>,
        _: SocketAddr,
        responder: Responder<'_>,
    ) -> io::Result<After> {
        std::thread::sleep(self.latency);
        let path = request.uri().path().trim_end_matches('/');
        let path = path.strip_prefix("/v1").unwrap_or(path);
        if request.method() == Method::GET && path == "/models" {
            return json_reply(
                responder,
                &json!({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "trae-proxy-mock"}]}),
            );
        }
        let body = match (request.method(), path) {
            (&Method::POST, "/chat/completions" | "/responses" | "/embeddings") => {
                match serde_json::from_slice::<Value>(request.body()) {
                    Ok(body) if body.is_object() => body,
                    Ok(_) => {
                        return responder.error(&ApiError::invalid_json(
                            "request body must be a JSON object".to_owned(),
                        ));
                    }
                    Err(e) => {
                        return responder.error(&ApiError::invalid_json(e.to_string()));
                    }
                }
            }
            _ => {
                return responder.error(&ApiError::unknown_url(request.method().as_str(), path));
            }
        };
        match path {
            "/chat/completions" => self.chat(&body, responder),
            "/responses" => self.responses(&body, responder),
            _ => json_reply(responder, &embedding(&body)),
        }
    }
}

/// What the mock answers a conversation with.
enum Answer {
    Text(String),
    /// A call of the named tool with these arguments (JSON text).
    Call {
        name: String,
        arguments: String,
    },
}

impl Answer {
    /// A tool call when the request offers tools, the conversation does not end with a tool's
    /// result, and the last user message names an offered tool; else an echo of that message.
    fn of(prompt: &str, tools: &[(String, Value)], after_tool: bool) -> Answer {
        let named = tools
            .iter()
            .find(|(name, _)| !after_tool && !name.is_empty() && prompt.contains(name.as_str()));
        match named {
            Some((name, schema)) => Answer::Call {
                name: name.clone(),
                arguments: arguments_for(schema).to_string(),
            },
            None if after_tool => Answer::Text("Mock reply after the tool result.".to_owned()),
            None => Answer::Text(format!("Mock reply to: {prompt}")),
        }
    }

    fn words(&self) -> usize {
        match self {
            Answer::Text(text) => text.split_whitespace().count(),
            Answer::Call { .. } => 1,
        }
    }
}

/// An object with a value of the right type for each property of a JSON schema.
fn arguments_for(schema: &Value) -> Value {
    let mut args = Map::new();
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let value = match property["type"].as_str() {
            Some("string") => json!("mock"),
            Some("integer" | "number") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => Value::Null,
        };
        args.insert(name.clone(), value);
    }
    Value::Object(args)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Mock {
    fn chat(&self, body: &Value, responder: Responder<'_>) -> io::Result<After> {
        let model = body["model"].as_str().unwrap_or(MODEL).to_owned();
        let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
        if self.strict {
            if let Some(e) = unknown_message_field(messages) {
                return responder.error(&e);
            }
            if body.get("stream_options").is_some() {
                // As Mistral: it sends usage in its last chunk unasked and refuses the field.
                let e = ApiError::extra_forbidden(
                    "stream_options: extra inputs are not permitted (mock --strict)".to_owned(),
                );
                return responder.error(&e);
            }
        }
        let prompt = last_user_text(messages);
        let tools: Vec<(String, Value)> = body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let f = &t["function"];
                (
                    f["name"].as_str().unwrap_or_default().to_owned(),
                    f["parameters"].clone(),
                )
            })
            .collect();
        let after_tool = messages.last().is_some_and(|m| m["role"] == "tool");
        let answer = Answer::of(&prompt, &tools, after_tool);
        let prompt_tokens = prompt.split_whitespace().count();
        let usage = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": answer.words(),
            "total_tokens": prompt_tokens + answer.words(),
        });
        let created = now();
        let (message, finish) = match &answer {
            Answer::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
            Answer::Call { name, arguments } => (
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock",
                    "type": "function", "function": {"name": name, "arguments": arguments}}]}),
                "tool_calls",
            ),
        };
        if body["stream"] != json!(true) {
            return json_reply(
                responder,
                &json!({
                    "id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                    "usage": usage,
                }),
            );
        }
        let mut stream = responder.stream(StatusCode::OK, sse_headers())?;
        let include_usage = body["stream_options"]["include_usage"] == json!(true);
        let chunk = |delta: Value, finish: Value| {
            let mut chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if include_usage {
                // As OpenAI does: `"usage": null` in every chunk, the counts in a last one.
                chunk["usage"] = Value::Null;
            }
            chunk
        };
        send(
            &mut stream,
            None,
            &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        )?;
        match &answer {
            Answer::Text(text) => {
                for word in text.split_inclusive(' ') {
                    std::thread::sleep(self.pace);
                    send(
                        &mut stream,
                        None,
                        &chunk(json!({"content": word}), Value::Null),
                    )?;
                }
            }
            Answer::Call { name, arguments } => {
                let call = json!({"index": 0, "id": "call_mock", "type": "function",
                                  "function": {"name": name, "arguments": arguments}});
                send(
                    &mut stream,
                    None,
                    &chunk(json!({"tool_calls": [call]}), Value::Null),
                )?;
            }
        }
        let mut last = chunk(json!({}), json!(finish));
        if self.strict {
            last["usage"] = usage.clone();
        }
        send(&mut stream, None, &last)?;
        if include_usage {
            send(
                &mut stream,
                None,
                &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": usage}),
            )?;
        }
        stream.write(b"data: [DONE]\n\n")?;
        stream.finish()
    }

    /// The Responses API: `input` is a string or a list of items (messages, function call
    /// outputs); the answer is one output item, a message or a function call.
    fn responses(&self, body: &Value, responder: Responder<'_>) -> io::Result<After> {
        let model = body["model"].as_str().unwrap_or(MODEL).to_owned();
        let items = match &body["input"] {
            Value::String(text) => vec![json!({"role": "user", "content": text})],
            Value::Array(items) => items.clone(),
            _ => Vec::new(),
        };
        let prompt = last_user_text(&items);
        let tools: Vec<(String, Value)> = body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["type"] == "function")
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or_default().to_owned(),
                    t["parameters"].clone(),
                )
            })
            .collect();
        let after_tool = items
            .last()
            .is_some_and(|i| i["type"] == "function_call_output");
        let answer = Answer::of(&prompt, &tools, after_tool);
        let input_tokens = prompt.split_whitespace().count();
        let usage = json!({"input_tokens": input_tokens, "output_tokens": answer.words(),
                           "total_tokens": input_tokens + answer.words(),
                           "input_tokens_details": {"cached_tokens": 0},
                           "output_tokens_details": {"reasoning_tokens": 0}});
        let item = match &answer {
            Answer::Text(text) => {
                json!({"type": "message", "id": "msg_mock", "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]})
            }
            Answer::Call { name, arguments } => json!({"type": "function_call", "id": "fc_mock",
                "call_id": "call_mock", "name": name, "arguments": arguments, "status": "completed"}),
        };
        let response = |status: &str, output: Value, usage: Value| {
            json!({"id": "resp_mock", "object": "response", "created_at": now(), "status": status,
                   "model": model, "output": output, "usage": usage})
        };
        if body["stream"] != json!(true) {
            return json_reply(responder, &response("completed", json!([item]), usage));
        }
        let mut stream = responder.stream(StatusCode::OK, sse_headers())?;
        let mut seq = 0u32;
        let mut event = |stream: &mut BodyStream<'_>, kind: &str, mut data: Value| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(seq);
            seq += 1;
            send(stream, Some(kind), &data)
        };
        let pending = response("in_progress", json!([]), Value::Null);
        event(
            &mut stream,
            "response.created",
            json!({"response": pending}),
        )?;
        event(
            &mut stream,
            "response.in_progress",
            json!({"response": pending}),
        )?;
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        match &answer {
            Answer::Text(text) => {
                added["content"] = json!([]);
                let at = json!({"output_index": 0, "item_id": "msg_mock", "content_index": 0});
                event(
                    &mut stream,
                    "response.output_item.added",
                    json!({"output_index": 0, "item": added}),
                )?;
                let mut part = at.clone();
                part["part"] = json!({"type": "output_text", "text": "", "annotations": []});
                event(&mut stream, "response.content_part.added", part)?;
                for word in text.split_inclusive(' ') {
                    std::thread::sleep(self.pace);
                    let mut delta = at.clone();
                    delta["delta"] = json!(word);
                    event(&mut stream, "response.output_text.delta", delta)?;
                }
                let mut done = at.clone();
                done["text"] = json!(text);
                event(&mut stream, "response.output_text.done", done)?;
                let mut part = at;
                part["part"] = json!({"type": "output_text", "text": text, "annotations": []});
                event(&mut stream, "response.content_part.done", part)?;
            }
            Answer::Call { arguments, .. } => {
                added["arguments"] = json!("");
                event(
                    &mut stream,
                    "response.output_item.added",
                    json!({"output_index": 0, "item": added}),
                )?;
                let at = json!({"output_index": 0, "item_id": "fc_mock"});
                let mut delta = at.clone();
                delta["delta"] = json!(arguments);
                event(&mut stream, "response.function_call_arguments.delta", delta)?;
                let mut done = at;
                done["arguments"] = json!(arguments);
                event(&mut stream, "response.function_call_arguments.done", done)?;
            }
        }
        event(
            &mut stream,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        )?;
        event(
            &mut stream,
            "response.completed",
            json!({"response": response("completed", json!([item]), usage)}),
        )?;
        stream.finish()
    }
}

/// The first message field OpenAI's API does not define, as a 422.
fn unknown_message_field(messages: &[Value]) -> Option<ApiError> {
    messages.iter().enumerate().find_map(|(i, m)| {
        let field = m
            .as_object()?
            .keys()
            .find(|k| !MESSAGE_FIELDS.contains(&k.as_str()))?;
        Some(ApiError::extra_forbidden(format!(
            "messages[{i}].{field}: extra inputs are not permitted (mock --strict)"
        )))
    })
}

fn sse_headers() -> Vec<(http::HeaderName, HeaderValue)> {
    vec![(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    )]
}

/// One SSE event, named or not.
fn send(stream: &mut BodyStream<'_>, name: Option<&str>, data: &Value) -> io::Result<()> {
    let event = match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    };
    stream.write(event.as_bytes())
}

/// The text of the last user message among chat messages or Responses input items; content
/// parts (`text`, `input_text`) are joined.
fn last_user_text(items: &[Value]) -> String {
    items
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

/// A deterministic 8-dimensional vector per input string; as base64 of little-endian f32s when
/// `encoding_format` says so (the OpenAI Node SDK asks for that by default).
fn embedding(body: &Value) -> Value {
    let base64 = body["encoding_format"] == "base64";
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
            let vector: Vec<f32> = digest.as_ref()[..8]
                .iter()
                .map(|b| (f32::from(*b) - 127.5) / 127.5)
                .collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "model": body["model"].as_str().unwrap_or(MODEL), "data": data,
           "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()}})
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn json_reply(responder: Responder<'_>, value: &Value) -> io::Result<After> {
    responder.send(
        StatusCode::OK,
        vec![json_content_type()],
        value.to_string().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn tool_calls_only_when_a_prompt_names_an_offered_tool() {
        let tools = vec![(
            "get_weather".to_owned(),
            json!({"properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}),
        )];
        match Answer::of("use get_weather", &tools, false) {
            Answer::Call { name, arguments } => {
                assert_eq!(name, "get_weather");
                assert_eq!(arguments, r#"{"city":"mock","days":1}"#);
            }
            Answer::Text(t) => panic!("text: {t}"),
        }
        assert!(
            matches!(Answer::of("hello", &tools, false), Answer::Text(t) if t == "Mock reply to: hello")
        );
        assert!(matches!(
            Answer::of("use get_weather", &tools, true),
            Answer::Text(_)
        ));
    }
}
