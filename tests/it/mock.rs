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
//!
//! Every request is recorded for assertions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
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
}

impl Mock {
    pub fn start() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || serve(conn, &recorded));
            }
        });
        Mock { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
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
fn canonical_chunks(include_usage: bool) -> Vec<Value> {
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
        chunks.push(
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": "upstream-model", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}}),
        );
    }
    chunks
}

fn serve(conn: TcpStream, recorded: &Mutex<Vec<Recorded>>) {
    let _ = conn.set_nodelay(true);
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        recorded.lock().unwrap().push(request.clone());
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or("").to_owned();
        let stream = body["stream"] == json!(true);
        let include_usage = body["stream_options"]["include_usage"] == json!(true);
        let keep_going = match model.as_str() {
            "chat" | "chat-slow" | "chat-nodone" if stream => {
                let gap = if model == "chat-slow" { 200 } else { 30 };
                send_stream(&mut writer, include_usage, gap, model != "chat-nodone")
            }
            m if m.starts_with("chat") => send_json(&mut writer, 200, &[], &canonical_reply()),
            "status-500" => send_json(&mut writer, 500, &[], &error_body("boom", "server_error")),
            "status-400" => send_json(
                &mut writer,
                400,
                &[],
                &error_body("bad messages", "invalid_request_error"),
            ),
            "status-429" => send_json(
                &mut writer,
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
                    write_chunk(&mut writer, &format!("data: {chunk}\n\n"));
                }
                false
            }
            "hang" => {
                std::thread::sleep(Duration::from_secs(30));
                false
            }
            _ => send_json(
                &mut writer,
                404,
                &[],
                &error_body("no such model", "invalid_request_error"),
            ),
        };
        if !keep_going {
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

fn error_body(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": null}})
}

fn send_json(w: &mut TcpStream, status: u16, extra: &[(&str, &str)], body: &Value) -> bool {
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

fn send_stream(w: &mut TcpStream, include_usage: bool, gap_ms: u64, done: bool) -> bool {
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

fn write_chunk(w: &mut TcpStream, data: &str) {
    let _ = write!(w, "{:x}\r\n{data}\r\n", data.len());
    let _ = w.flush();
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Recorded> {
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
