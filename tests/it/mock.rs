//! A mock OpenAI-compatible backend on plain HTTP/1.1 loopback. What it does is chosen by the
//! `model` the proxy sends (the entry's `target_model_id`):
//!
//! - `chat`: the canonical reply below, streamed (events 30 ms apart, a GLM-style
//!   `progress_notice` event and a comment mixed in, ending with `[DONE]`) when the request says
//!   `stream: true`, else as one JSON object.
//! - `chat-slow`: streamed with 200 ms between events, to see them arrive one by one.
//! - `chat-nodone`: streamed, ends cleanly without `data: [DONE]`.
//! - `status-500`, `status-400`, `status-429`: that status with an OpenAI-style error body.
//! - `drop`: two stream events, then the connection is cut mid-body.
//! - `hang`: reads the request and never answers.
//! - `close-after`: the canonical JSON reply, then the connection is closed without a
//!   `Connection: close` header (a server that does not keep connections alive, and says not).
//! - `close-when-reused`: the canonical JSON reply on a new connection; a request arriving on
//!   a connection that already served one is read and the connection closed unanswered (a
//!   server whose keep-alive timeout struck as the request came).
//! - `stall`: two stream events, then silence (connection open) for 30 s.
//! - `garbage-sse`: `text/event-stream` whose body is not SSE at all.
//! - `flood`: 4000 stream events of ~4 KiB, as fast as the reader takes them.
//! - `empty-json`: 200, `application/json`, `Content-Length: 0` (a body the proxy cannot parse,
//!   relayed as it is).
//! - `long-header`: the canonical JSON reply with a 6,000-byte `openai-trace` header.
//! - `thinking`: a DeepSeek-style thinking model with a weather tool: answers a user turn with
//!   `reasoning_content` and a tool call, a tool result with the final answer; and, like the real
//!   one, answers 400 when a tool-call turn in the history lacks its `reasoning_content`.
//! - `kimi-strict`: as `thinking`, and also 400 for `content: ""` beside tool calls (Kimi).
//! - `strict`: the same weather tool loop from a backend that returns no reasoning and, like
//!   Mistral, answers 422 `extra_forbidden` for any message field it does not know
//!   (`reasoning_content` among them), and for `stream_options`.
//! - `strict-reasoning`: as `strict`, but its replies carry `reasoning_content` (an older vLLM
//!   with a reasoning parser: it returns the field and rejects it back).
//!
//! Other paths (`/v1/embeddings`, `/v1/responses`, `/v1/audio/speech`, ...) get a small reply of
//! their kind; `status-*` models work there too. Any other model behaves as `chat`.
//!
//! `Mock::start_tls` serves the same over HTTPS with a certificate for `localhost`.
//! Every request is recorded for assertions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub struct Mock {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Connections accepted so far: how many the proxy opened.
    connections: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
    /// PEM of the TLS mock's certificate (its own trust anchor).
    pub cert_pem: Option<String>,
}

impl Mock {
    pub fn start() -> Mock {
        Mock::spawn(None)
    }

    /// The same backend over HTTPS, with a self-signed certificate for `localhost`.
    pub fn start_tls() -> Mock {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(generated.cert.der().to_vec());
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let mut mock = Mock::spawn(Some(Arc::new(config)));
        mock.cert_pem = Some(generated.cert.pem());
        mock
    }

    fn spawn(tls: Option<Arc<rustls::ServerConfig>>) -> Mock {
        // A deep backlog: a thousand proxied streams connect at once (std listens with 128).
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(2048).unwrap();
        let listener: TcpListener = socket.into();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let open = Arc::new(AtomicUsize::new(0));
        let still_open = Arc::clone(&open);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                still_open.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_nodelay(true);
                let recorded = Arc::clone(&recorded);
                let tls = tls.clone();
                let open = Arc::clone(&still_open);
                std::thread::spawn(move || {
                    match tls {
                        None => serve(conn, &recorded),
                        Some(config) => {
                            let server = rustls::ServerConnection::new(config).unwrap();
                            serve(rustls::StreamOwned::new(server, conn), &recorded);
                        }
                    }
                    // The proxy closed it (or it was cut here).
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Mock {
            port,
            requests,
            connections,
            open,
            cert_pem: None,
        }
    }

    pub fn url(&self) -> String {
        match self.cert_pem {
            None => format!("http://127.0.0.1:{}", self.port),
            Some(_) => format!("https://localhost:{}", self.port),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections open now: accepted and not yet closed.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// The reply every `chat*` model gives, with quotes, a backslash, newlines, emoji, CJK,
/// reasoning and a tool call: what a lossy relay or conversion would break.
pub fn canonical_reply() -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "He said \"hi\"\\ \n🦀 中文",
                "reasoning_content": "think \"hard\"\n",
                "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}
                }]
            },
            "logprobs": null,
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}
    })
}

/// The canonical reply as stream chunks, content and arguments split across events.
pub fn canonical_chunks(include_usage: bool) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": "upstream-model",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut chunks = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(
            json!({"reasoning_content": "think \"hard\"\n"}),
            Value::Null,
        ),
        chunk(json!({"content": "He said "}), Value::Null),
        chunk(json!({"content": "\"hi\"\\ \n"}), Value::Null),
        chunk(json!({"content": "🦀 中文"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Zürich\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    if include_usage {
        // As OpenAI: `"usage": null` in every chunk, then one chunk with the counts only.
        for c in &mut chunks {
            c["usage"] = Value::Null;
        }
        chunks.push(
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": "upstream-model", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33,
                      "prompt_tokens_details": {"cached_tokens": 8},
                      "completion_tokens_details": {"reasoning_tokens": 5}}}),
        );
    }
    chunks
}

fn serve<S: Read + Write>(conn: S, recorded: &Mutex<Vec<Recorded>>) {
    let mut reader = BufReader::new(conn);
    for served in 0.. {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let writer = reader.get_mut();
        recorded.lock().unwrap().push(request.clone());
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or("").to_owned();
        let stream = body["stream"] == json!(true);
        let include_usage = body["stream_options"]["include_usage"] == json!(true);
        let keep_going = match model.as_str() {
            "thinking" | "kimi-strict" => thinking(writer, &body, model == "kimi-strict", stream),
            "strict" | "strict-reasoning" => {
                strict(writer, &body, model == "strict-reasoning", stream)
            }
            m if !m.starts_with("status-") && request.path != "/v1/chat/completions" => {
                other_endpoint(writer, &request.path, stream)
            }
            "chat" | "chat-slow" | "chat-nodone" if stream => {
                let gap = if model == "chat-slow" { 200 } else { 30 };
                send_stream(writer, include_usage, gap, model != "chat-nodone")
            }
            "status-500" => send_json(writer, 500, &[], &error_body("boom", "server_error")),
            "status-400" => send_json(
                writer,
                400,
                &[],
                &error_body("bad messages", "invalid_request_error"),
            ),
            "status-429" => send_json(
                writer,
                429,
                &[("retry-after", "7")],
                &error_body("slow down", "rate_limit_error"),
            ),
            "drop" => {
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                for chunk in canonical_chunks(false).iter().take(2) {
                    write_chunk(writer, &format!("data: {chunk}\n\n"));
                }
                false
            }
            "hang" => {
                std::thread::sleep(Duration::from_secs(30));
                false
            }
            "close-after" => {
                send_json(writer, 200, &[], &canonical_reply());
                false
            }
            "close-when-reused" if served > 0 => false,
            "close-when-reused" => send_json(writer, 200, &[], &canonical_reply()),
            "stall" => {
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                for chunk in canonical_chunks(false).iter().take(2) {
                    write_chunk(writer, &format!("data: {chunk}\n\n"));
                }
                std::thread::sleep(Duration::from_secs(30));
                false
            }
            "garbage-sse" => {
                let body: &[u8] =
                    b"this is not SSE\n{\"json\": true}\n\0\xff\xfe binary\r\n\r\nevent\n\n::::\n";
                let _ = write!(
                    writer,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                writer.write_all(body).is_ok()
            }
            "flood" => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let filler = "x".repeat(4000);
                for i in 0..4000 {
                    let event = format!(
                        "data: {{\"model\":\"upstream-model\",\"i\":{i},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{filler}\"}}}}]}}\n\n"
                    );
                    if write!(writer, "{:x}\r\n{event}\r\n", event.len()).is_err() {
                        return;
                    }
                }
                write_chunk(writer, "data: [DONE]\n\n");
                writer.write_all(b"0\r\n\r\n").is_ok()
            }
            "empty-json" => writer
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
                )
                .is_ok(),
            "long-header" => {
                let trace = "t".repeat(6000);
                send_json(writer, 200, &[("openai-trace", &trace)], &canonical_reply())
            }
            _ => send_json(writer, 200, &[], &canonical_reply()),
        };
        if !keep_going {
            // Dropping the stream closes the connection, mid-body where the reply was cut.
            return;
        }
    }
}

/// The thinking model: validates the history as DeepSeek and Kimi do, then answers.
fn thinking<W: Write>(w: &mut W, body: &Value, kimi: bool, stream: bool) -> bool {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    for (i, m) in messages.iter().enumerate() {
        let calls = m["tool_calls"].as_array().is_some_and(|c| !c.is_empty());
        if m["role"] == "assistant" && calls && !m["reasoning_content"].is_string() {
            return send_json(
                w,
                400,
                &[],
                &error_body(
                    "The reasoning_content in the thinking mode must be passed back to the API.",
                    "invalid_request_error",
                ),
            );
        }
        if kimi && m["role"] == "assistant" && calls && m["content"] == "" {
            return send_json(
                w,
                400,
                &[],
                &error_body(
                    &format!(
                        "Invalid request: the message at position {i} with role 'assistant' must not be empty"
                    ),
                    "invalid_request_error",
                ),
            );
        }
    }
    let after_tool = messages.last().is_some_and(|m| m["role"] == "tool");
    let message = if after_tool {
        json!({"role": "assistant", "content": "It is sunny in Paris.", "reasoning_content": "The tool said sunny."})
    } else {
        json!({"role": "assistant", "content": "", "reasoning_content": "I need the weather tool for Paris.",
               "tool_calls": [{"id": "call_w1", "type": "function",
                               "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    };
    weather_answer(w, message, after_tool, stream)
}

/// A Mistral-like backend: no reasoning, and 422 for any message field it does not know.
fn strict<W: Write>(w: &mut W, body: &Value, reasons: bool, stream: bool) -> bool {
    const KNOWN: &[&str] = &[
        "role",
        "content",
        "name",
        "tool_calls",
        "tool_call_id",
        "prefix",
    ];
    if let Some(options) = body.get("stream_options") {
        // Mistral refuses stream_options too (and sends usage in a stream unasked).
        let detail = json!({"object": "error", "type": "invalid_request_error",
            "message": {"detail": [{"type": "extra_forbidden",
                "loc": ["body", "stream_options"],
                "msg": "Extra inputs are not permitted", "input": options}]},
            "param": null, "code": null});
        return send_json(w, 422, &[], &detail);
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        for key in m.as_object().into_iter().flat_map(|o| o.keys()) {
            if !KNOWN.contains(&key.as_str()) {
                let detail = json!({"object": "error", "type": "invalid_request_message_error",
                    "message": {"detail": [{"type": "extra_forbidden",
                        "loc": ["body", "messages", i, role, key],
                        "msg": "Extra inputs are not permitted", "input": m[key]}]},
                    "param": null, "code": null});
                return send_json(w, 422, &[], &detail);
            }
        }
    }
    let after_tool = messages.last().is_some_and(|m| m["role"] == "tool");
    let mut message = if after_tool {
        json!({"role": "assistant", "content": "It is sunny in Paris."})
    } else {
        json!({"role": "assistant", "content": "",
               "tool_calls": [{"id": "call_w1", "type": "function",
                               "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    };
    if reasons {
        message["reasoning_content"] = json!("Let me think about Paris.");
    }
    weather_answer(w, message, after_tool, stream)
}

/// The weather loop's reply, as JSON or streamed with reasoning, content and the call split
/// into chunks.
fn weather_answer<W: Write>(w: &mut W, message: Value, after_tool: bool, stream: bool) -> bool {
    let finish = if after_tool { "stop" } else { "tool_calls" };
    if !stream {
        return send_json(
            w,
            200,
            &[],
            &json!({
                "id": "chatcmpl-think", "object": "chat.completion", "created": 1, "model": "deepseek-reasoner",
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            }),
        );
    }
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-think", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-reasoner",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(reasoning) = message["reasoning_content"].as_str() {
        let (a, b) = reasoning.split_at(reasoning.len() / 2);
        chunks.push(chunk(json!({"reasoning_content": a}), Value::Null));
        chunks.push(chunk(json!({"reasoning_content": b}), Value::Null));
    }
    if let Some(content) = message["content"].as_str().filter(|c| !c.is_empty()) {
        chunks.push(chunk(json!({"content": content}), Value::Null));
    }
    if let Some(calls) = message["tool_calls"].as_array() {
        let mut call = calls[0].clone();
        call["index"] = json!(0);
        chunks.push(chunk(json!({"tool_calls": [call]}), Value::Null));
    }
    chunks.push(chunk(json!({}), json!(finish)));
    for c in chunks {
        write_chunk(w, &format!("data: {c}\n\n"));
    }
    write_chunk(w, "data: [DONE]\n\n");
    w.write_all(b"0\r\n\r\n").is_ok()
}

/// Replies for the endpoints other than chat completions.
fn other_endpoint<W: Write>(w: &mut W, path: &str, stream: bool) -> bool {
    match path {
        "/v1/embeddings" => send_json(
            w,
            200,
            &[],
            &json!({"object": "list", "model": "upstream-model",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
                    "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
        ),
        "/v1/responses" if stream => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            if w.write_all(head.as_bytes()).is_err() {
                return false;
            }
            for (name, data) in [
                (
                    "response.created",
                    json!({"type": "response.created", "response": {"id": "resp_1", "model": "upstream-model"}}),
                ),
                (
                    "response.output_text.delta",
                    json!({"type": "response.output_text.delta", "delta": "Hi"}),
                ),
                (
                    "response.completed",
                    json!({"type": "response.completed", "response": {"id": "resp_1", "model": "upstream-model",
                        "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12,
                                  "output_tokens_details": {"reasoning_tokens": 3}}}}),
                ),
            ] {
                write_chunk(w, &format!("event: {name}\ndata: {data}\n\n"));
            }
            w.write_all(b"0\r\n\r\n").is_ok()
        }
        "/v1/audio/speech" => {
            let audio = [0xffu8, 0xfb, 0x90, 0x00, 0x00, 0x01, 0x02];
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: audio/mpeg\r\ncontent-length: {}\r\n\r\n",
                audio.len()
            );
            w.write_all(head.as_bytes()).is_ok() && w.write_all(&audio).is_ok()
        }
        _ => send_json(
            w,
            200,
            &[],
            &json!({"id": "x", "object": path.trim_start_matches("/v1/"), "model": "upstream-model"}),
        ),
    }
}

fn error_body(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": null}})
}

fn send_json<W: Write>(w: &mut W, status: u16, extra: &[(&str, &str)], body: &Value) -> bool {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: req-123\r\nx-ratelimit-remaining-requests: 99\r\nset-cookie: backend-session=1\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).is_ok() && w.write_all(body.as_bytes()).is_ok()
}

fn send_stream<W: Write>(w: &mut W, include_usage: bool, gap_ms: u64, done: bool) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\
                x-request-id: req-456\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for (i, chunk) in canonical_chunks(include_usage).iter().enumerate() {
        if i == 1 {
            write_chunk(w, "event: progress_notice\ndata: {\"progress\":1}\n\n");
            write_chunk(w, ": keep-alive\n\n");
        }
        // Events use \r\n line endings on purpose: backends do.
        write_chunk(w, &format!("data: {chunk}\r\n\r\n"));
        std::thread::sleep(Duration::from_millis(gap_ms));
    }
    if done {
        write_chunk(w, "data: [DONE]\n\n");
    }
    w.write_all(b"0\r\n\r\n").is_ok()
}

fn write_chunk<W: Write>(w: &mut W, data: &str) {
    let _ = write!(w, "{:x}\r\n{data}\r\n", data.len());
    let _ = w.flush();
}

fn read_request<R: Read>(reader: &mut BufReader<R>) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}
