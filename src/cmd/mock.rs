//! `trae-proxy mock`: an OpenAI-compatible backend that answers deterministically, without a
//! key and without cost, so an IDE setup can be tried end to end before spending tokens. It
//! serves `GET /v1/models`, `POST /v1/chat/completions` (streamed or not: it echoes the last user
//! message, word by word at `--tokens-per-second`) and `POST /v1/embeddings` (a vector derived
//! from the input). Plain HTTP; point a config entry's `endpoint` at it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, StatusCode, header};
use log::info;
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::cli::MockArgs;
use crate::error::Error;
use crate::server::{After, Handler, Responder, json_content_type, serve_plain};

const MODEL: &str = "mock-model";

struct Mock {
    latency: Duration,
    /// Pause between streamed words; zero sends them at once.
    pace: Duration,
}

pub fn run(args: &MockArgs) -> Result<(), Error> {
    crate::logging::init(false);
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    let mock = Arc::new(Mock {
        latency: Duration::from_millis(args.latency_ms),
        pace: match args.tokens_per_second {
            0 => Duration::ZERO,
            n => Duration::from_secs(1) / n,
        },
    });
    info!(
        "mock backend listening on http://{} (model {MODEL}); try: curl http://{}/v1/models",
        listener.local_addr()?,
        listener.local_addr()?
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
        match (request.method(), path) {
            (&Method::GET, "/models") => json_reply(
                responder,
                &json!({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "trae-proxy-mock"}]}),
            ),
            (&Method::POST, "/chat/completions") => {
                match serde_json::from_slice::<Value>(request.body()) {
                    Ok(body) => self.chat(&body, responder),
                    Err(e) => {
                        responder.error(&ApiError::invalid_request("invalid_json", e.to_string()))
                    }
                }
            }
            (&Method::POST, "/embeddings") => match serde_json::from_slice::<Value>(request.body())
            {
                Ok(body) => json_reply(responder, &embedding(&body)),
                Err(e) => {
                    responder.error(&ApiError::invalid_request("invalid_json", e.to_string()))
                }
            },
            _ => responder.error(&ApiError::not_found(format!(
                "the mock does not serve {path}"
            ))),
        }
    }
}

impl Mock {
    fn chat(&self, body: &Value, responder: Responder<'_>) -> io::Result<After> {
        let model = body["model"].as_str().unwrap_or(MODEL).to_owned();
        let prompt = last_user_message(body);
        let reply = format!("Mock reply to: {prompt}");
        let words: Vec<String> = reply.split_inclusive(' ').map(str::to_owned).collect();
        let usage = json!({
            "prompt_tokens": prompt.split_whitespace().count(),
            "completion_tokens": words.len(),
            "total_tokens": prompt.split_whitespace().count() + words.len(),
        });
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if body["stream"] != json!(true) {
            return json_reply(
                responder,
                &json!({
                    "id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "logprobs": null, "finish_reason": "stop"}],
                    "usage": usage,
                }),
            );
        }
        let headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        )];
        let mut stream = responder.stream(StatusCode::OK, headers)?;
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        };
        let send = |stream: &mut crate::server::BodyStream<'_>, value: &Value| {
            stream.write(format!("data: {value}\n\n").as_bytes())
        };
        send(
            &mut stream,
            &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        )?;
        for word in &words {
            std::thread::sleep(self.pace);
            send(&mut stream, &chunk(json!({"content": word}), Value::Null))?;
        }
        send(&mut stream, &chunk(json!({}), json!("stop")))?;
        if body["stream_options"]["include_usage"] == json!(true) {
            send(
                &mut stream,
                &json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": usage}),
            )?;
        }
        stream.write(b"data: [DONE]\n\n")?;
        stream.finish()
    }
}

fn last_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            // Content parts: the text ones, joined.
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

/// A deterministic 8-dimensional vector per input string.
fn embedding(body: &Value) -> Value {
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
            let vector: Vec<f64> = digest.as_ref()[..8]
                .iter()
                .map(|b| (f64::from(*b) - 127.5) / 127.5)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": vector})
        })
        .collect();
    json!({"object": "list", "model": body["model"].as_str().unwrap_or(MODEL), "data": data,
           "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()}})
}

fn json_reply(responder: Responder<'_>, value: &Value) -> io::Result<After> {
    responder.send(
        StatusCode::OK,
        vec![json_content_type()],
        value.to_string().as_bytes(),
    )
}
