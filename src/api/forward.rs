//! The model-bearing endpoints (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`, `/v1/moderations`, `/v1/audio/speech`): route by `model` to a pool, rewrite
//! the model, forward with failover, and answer the client in the mode it asked for — relaying
//! a stream event by event, converting when a backend's `stream_mode` forces the other mode
//! (chat completions), rewriting `model` so the client always sees its own id.
//!
//! Failover happens only before the client has received a byte: a backend that cannot be
//! reached, times out before its response head, or answers 5xx or 429 hands the request to the
//! next one in the pool. Other 4xx are the client's problem and are returned as they are.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, StatusCode, header};
use log::{debug, warn};
use serde_json::{Value, json};

use crate::api::dispatch::{Access, Proxy};
use crate::api::json_fields::{self, Fields};
use crate::api::reasoning::{self, Learned, Mend, ReasoningCache, Restored};
use crate::api::sse::convert::{self, Aggregator};
use crate::api::sse::parser::Event;
use crate::api::sse::{self, Item, Parser, rewrite};
use crate::api_error::ApiError;
use crate::config::{Backend, ReasoningReplay, StreamMode};
use crate::server::{After, BodyStream, Headers, Responder, json_content_type};
use crate::upstream::{self, UpstreamResponse};

/// Largest backend body read whole (a non-streamed reply, or a stream being aggregated).
const MAX_UPSTREAM_BODY: u64 = 64 * 1024 * 1024;
/// Most text of a streamed reply folded up to remember its reasoning (see `Relayer::capture`).
const MAX_CAPTURE: usize = 1024 * 1024;
/// Backend reads. An SSE event is a few hundred bytes, ureq buffers the connection's input
/// anyway (10 KiB), and an open stream keeps this buffer for its whole life: a thousand
/// streams at 4 KiB were 4 MiB.
const READ_BUF: usize = 1024;

/// A JSON endpoint that names a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Moderations,
    AudioSpeech,
}

impl Endpoint {
    /// The endpoint for a request path under `/v1`.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/responses" => Endpoint::Responses,
            "/v1/moderations" => Endpoint::Moderations,
            "/v1/audio/speech" => Endpoint::AudioSpeech,
            _ => return None,
        })
    }

    /// The path after `/v1`, appended to a backend's endpoint.
    fn api_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
            Endpoint::Responses => "/responses",
            Endpoint::Moderations => "/moderations",
            Endpoint::AudioSpeech => "/audio/speech",
        }
    }

    /// Only chat completions have a stream <-> JSON conversion (`stream_mode`).
    fn converts_streams(self) -> bool {
        self == Endpoint::ChatCompletions
    }

    /// The Responses API names every event (`response.created`, ...); the others name none,
    /// and a named one there is a vendor extension clients choke on.
    fn keeps_named_events(self) -> bool {
        self == Endpoint::Responses
    }

    /// Chat and text completion streams end with `data: [DONE]`; Responses streams end with a
    /// `response.completed` event and no `[DONE]`.
    fn ends_with_done(self) -> bool {
        self != Endpoint::Responses
    }
}

/// What the client asked for, read before the body is rewritten.
struct Ask {
    /// The model id as the client sent it (and sees it in replies).
    model: String,
    /// The id routed by: `model` without a `strip_model_prefixes` prefix.
    route: String,
    stream: bool,
    include_usage: bool,
}

pub fn handle(
    proxy: &Proxy,
    endpoint: Endpoint,
    request: &Request<Vec<u8>>,
    responder: Responder<'_>,
    access: &mut Access,
) -> io::Result<After> {
    let (fields, ask) = match parse(proxy, request.body()) {
        Ok(v) => v,
        Err(e) => return access.error(responder, &e),
    };
    access.model = Some(ask.model.clone());
    let Some(plan) = proxy.router.plan(&ask.route) else {
        let e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{}` is not configured on this proxy. Available models: {}",
                ask.model,
                proxy.router.model_list()
            ),
        );
        return access.error(responder, &e);
    };
    let mut last_error = None;
    for (i, attempt) in plan.iter().enumerate() {
        let backend = attempt.backend();
        let is_last = i + 1 == plan.len();
        access.backend = Some(backend.name.clone());
        access.route = Some(backend.custom_model_id.clone());
        // Held until the answer is relayed: the backend's share of requests in flight.
        let Some(_entered) = proxy.router.enter(attempt) else {
            debug!(
                "backend={:?} is at its max_in_flight; skipped",
                backend.name
            );
            proxy.shared.metrics.backend_busy(&backend.name);
            last_error = Some(ApiError::backend_busy(&backend.name));
            continue;
        };
        let sent = Instant::now();
        match send(proxy, endpoint, request, &fields, &ask, backend) {
            Err(e) => {
                proxy.router.failed(attempt, None);
                last_error = Some(e);
            }
            Ok(response) => {
                access.ttfb = Some(sent.elapsed());
                let status = response.status();
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    proxy.router.failed(attempt, retry_after(&response));
                    if !is_last {
                        warn!("backend={:?} answered {status}; failing over", backend.name);
                        access.failovers += 1;
                        continue;
                    }
                } else {
                    proxy.router.succeeded(attempt);
                }
                let reasoning = (endpoint == Endpoint::ChatCompletions
                    && backend.reasoning_replay != ReasoningReplay::Off)
                    .then_some(&proxy.shared.reasoning);
                return answer(
                    response, endpoint, backend, &ask, responder, access, reasoning,
                );
            }
        }
        if !is_last {
            access.failovers += 1;
        }
    }
    let e = last_error.unwrap_or_else(|| ApiError::internal("no backend to try"));
    access.error(responder, &e)
}

/// Sends the request to one backend. A backend in `reasoning_replay: auto` that answers 400 or
/// 422 about `reasoning_content` has shown whether it needs the field or rejects it: that is
/// learned, and the request is sent once more, mended accordingly (the backend refused it, so
/// nothing was applied).
fn send(
    proxy: &Proxy,
    endpoint: Endpoint,
    request: &Request<Vec<u8>>,
    fields: &Fields<'_>,
    ask: &Ask,
    backend: &Backend,
) -> Result<UpstreamResponse, ApiError> {
    let cache = &proxy.shared.reasoning;
    let mend = match endpoint {
        Endpoint::ChatCompletions => cache.mend_for(backend),
        _ => Mend::Off,
    };
    let (body, restored) = upstream_body(fields, ask, backend, endpoint, cache, mend)?;
    let post = |body| {
        proxy
            .upstream
            .post_json(backend, endpoint.api_path(), request.headers(), body)
    };
    let response = post(body)?;
    let status = response.status().as_u16();
    if backend.reasoning_replay != ReasoningReplay::Auto || !matches!(status, 400 | 422) {
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let length = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let raw = read_bounded(&mut body.into_reader(), length, &backend.name)?;
    let lesson = if !reasoning::error_names_reasoning(&raw) {
        None
    } else if restored.lacking > 0 && mend == Mend::Own {
        Some(Learned::Thinking)
    } else if restored.added() {
        Some(Learned::Rejects)
    } else {
        None
    };
    let Some(lesson) = lesson.filter(|l| cache.learn(&backend.name, *l)) else {
        // Not about what the proxy did: the client gets the backend's answer as it was.
        let body = ureq::Body::builder().data(raw);
        return Ok(http::Response::from_parts(head, body));
    };
    match lesson {
        Learned::Thinking => warn!(
            "backend={:?} needs reasoning_content in tool-call turns (it answered {status} \
             without it); treating it as a thinking model from now on and sending again",
            backend.name
        ),
        Learned::Rejects => warn!(
            "backend={:?} rejects reasoning_content (it answered {status}); sending histories \
             to it as clients write them from now on, and this request again",
            backend.name
        ),
    }
    let (body, _) = upstream_body(
        fields,
        ask,
        backend,
        endpoint,
        cache,
        cache.mend_for(backend),
    )?;
    post(body)
}

/// Parses the body: a JSON object with a `model`.
fn parse<'a>(proxy: &Proxy, body: &'a [u8]) -> Result<(Fields<'a>, Ask), ApiError> {
    let fields = Fields::parse(body).map_err(|e| {
        // Tell "not JSON" (with serde's position) from "JSON, but not an object".
        let deep = !json_fields::within_depth(body, json_fields::MAX_DEPTH);
        let why = match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) if !deep => "request body must be a JSON object".to_owned(),
            _ => format!("request body is not valid JSON: {e}"),
        };
        ApiError::invalid_request("invalid_json", why)
    })?;
    let model = fields
        .get("model")
        .and_then(|m| serde_json::from_str::<String>(m).ok())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_request(
                "missing_model",
                format!(
                    "you must provide a model parameter; available models: {}",
                    proxy.router.model_list()
                ),
            )
        })?;
    let include_usage = fields
        .get("stream_options")
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .is_some_and(|o| o["include_usage"] == Value::Bool(true));
    let ask = Ask {
        route: proxy.route_model(&model).to_owned(),
        stream: fields.get("stream").is_some_and(|s| s.trim() == "true"),
        include_usage,
        model,
    };
    Ok((fields, ask))
}

/// The body for one backend: its model id, `stream` forced when its `stream_mode` says so, and
/// (chat) the message history mended for thinking models and quirks as `mend` says; with what
/// the mending did.
fn upstream_body(
    fields: &Fields<'_>,
    ask: &Ask,
    backend: &Backend,
    endpoint: Endpoint,
    reasoning: &ReasoningCache,
    mend: Mend,
) -> Result<(Vec<u8>, Restored), ApiError> {
    let mut fields = fields.clone();
    let mut restored = Restored::default();
    let mends_history = mend != Mend::Off || backend.null_content_with_tool_calls;
    if endpoint == Endpoint::ChatCompletions && mends_history {
        // Only histories with tool calls need it; the rest is copied as it came.
        let raw = fields
            .get("messages")
            .filter(|m| m.contains("\"tool_calls\""));
        if let Some(mut messages) = raw.and_then(|m| serde_json::from_str::<Vec<Value>>(m).ok()) {
            restored = reasoning.restore(&mut messages, &backend.name, mend);
            if restored.added() {
                debug!(
                    "backend={:?}: reasoning_content replayed into {} turn(s), fallback for {}",
                    backend.name, restored.replayed, restored.fell_back
                );
            }
            if backend.null_content_with_tool_calls {
                reasoning::null_empty_content_with_tool_calls(&mut messages);
            }
            fields.set("messages", &messages).map_err(encode_error)?;
        }
    }
    fields
        .set("model", backend.target_for(&ask.route))
        .map_err(encode_error)?;
    let upstream_stream = match backend.stream_mode {
        _ if !endpoint.converts_streams() => ask.stream,
        StreamMode::Client => ask.stream,
        StreamMode::ForceStream => true,
        StreamMode::ForceNonStream => false,
    };
    if upstream_stream != ask.stream {
        fields
            .set("stream", &upstream_stream)
            .map_err(encode_error)?;
        if upstream_stream {
            // Aggregating for a non-streaming client needs usage in the stream.
            fields
                .set("stream_options", &json!({"include_usage": true}))
                .map_err(encode_error)?;
        } else {
            // Backends reject stream_options on non-streaming requests.
            fields.remove("stream_options");
        }
    }
    Ok((fields.to_vec(), restored))
}

fn encode_error(e: serde_json::Error) -> ApiError {
    ApiError::internal(&format!("cannot encode the request: {e}"))
}

/// A 429's `Retry-After` in seconds (the HTTP-date form is rare from APIs and not used).
fn retry_after(response: &UpstreamResponse) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Answers the client from the backend's response, converting as needed.
fn answer(
    response: UpstreamResponse,
    endpoint: Endpoint,
    backend: &Backend,
    ask: &Ask,
    responder: Responder<'_>,
    access: &mut Access,
    reasoning: Option<&ReasoningCache>,
) -> io::Result<After> {
    let status = response.status();
    let upstream_content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let content_type = upstream_content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_sse = content_type.starts_with("text/event-stream");
    let is_json = content_type.contains("json");
    let mut headers: Headers = response
        .headers()
        .iter()
        .filter(|(n, _)| upstream::is_returned_header(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut body = response.into_body().into_reader();
    access.status = status.as_u16();
    debug!(
        "backend={:?} answered {status} ({content_type}); client asked stream={}",
        backend.name, ask.stream
    );

    if !status.is_success() || !(is_sse || is_json) {
        // Errors and anything unexpected: the backend's own status and body, unchanged.
        if let Some(ct) = upstream_content_type {
            headers.push((header::CONTENT_TYPE, ct));
        }
        let mut sink = responder.stream(status, headers)?;
        let result = copy_raw(&mut body, &mut sink, &backend.name);
        access.bytes = sink.bytes;
        return match result {
            Ok(()) => sink.finish(),
            Err(()) => Ok(sink.abort()),
        };
    }

    match (is_sse, ask.stream || !endpoint.converts_streams()) {
        (true, true) => {
            headers.extend(sse_headers());
            let mut sink = responder.stream(status, headers)?;
            let mut relayer = Relayer {
                client_model: &ask.model,
                endpoint,
                done: false,
                out: Vec::new(),
                capture: reasoning.map(|_| Aggregator::new()),
            };
            let result = relay(&mut body, &mut sink, &backend.name, &mut relayer, access);
            access.bytes = sink.bytes;
            match result? {
                Relay::Complete => {
                    if let (Some(cache), Some(capture)) = (reasoning, relayer.capture.take()) {
                        cache.remember_reply(&capture.finish(&ask.model), &backend.name);
                    }
                    sink.finish()
                }
                Relay::Failed => Ok(sink.abort()),
            }
        }
        (true, false) => match aggregate(&mut body, &ask.model, &backend.name) {
            Ok(reply) => {
                access.take_usage(&reply);
                if let Some(cache) = reasoning {
                    cache.remember_reply(&reply, &backend.name);
                }
                headers.push(json_content_type());
                let bytes = to_vec(&reply);
                access.bytes = bytes.len() as u64;
                responder.send(status, headers, &bytes)
            }
            Err(e) => access.error(responder, &e),
        },
        (false, stream) => {
            let raw = match read_bounded(&mut body, length, &backend.name) {
                Ok(raw) => raw,
                Err(e) => return access.error(responder, &e),
            };
            let Ok(mut fields) = Fields::parse(&raw) else {
                // Claimed JSON but is not: relay it as it came rather than guess.
                headers.push(json_content_type());
                access.bytes = raw.len() as u64;
                return responder.send(status, headers, &raw);
            };
            if let Some(usage) = fields.get("usage") {
                access.take_usage_json(usage);
            }
            // The whole reply as values only where it is needed: a stream to synthesize, or
            // tool calls whose reasoning is to be remembered.
            let calls_tools = fields
                .get("choices")
                .is_some_and(|c| c.contains("\"tool_calls\""));
            let synthesize = stream && endpoint.converts_streams();
            let reply = (synthesize || (reasoning.is_some() && calls_tools))
                .then(|| serde_json::from_slice::<Value>(&raw).ok())
                .flatten();
            if let (Some(cache), Some(reply)) = (reasoning, &reply) {
                cache.remember_reply(reply, &backend.name);
            }
            match reply {
                Some(reply) if synthesize => {
                    headers.extend(sse_headers());
                    let mut sink = responder.stream(status, headers)?;
                    let mut out = Vec::new();
                    for chunk in convert::synthesize(&reply, &ask.model, ask.include_usage) {
                        rewrite::encode_json(&chunk, &mut out);
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    sink.write(&out)?;
                    access.bytes = sink.bytes;
                    sink.finish()
                }
                _ => {
                    if fields.contains("model") {
                        if let Err(e) = fields.set("model", &ask.model) {
                            return access.error(responder, &ApiError::internal(&e.to_string()));
                        }
                    }
                    headers.push(json_content_type());
                    let bytes = fields.to_vec();
                    access.bytes = bytes.len() as u64;
                    responder.send(status, headers, &bytes)
                }
            }
        }
    }
}

enum Relay {
    Complete,
    /// The backend failed mid-stream; the client got an error event and must see no clean end.
    Failed,
}

/// Relays a backend's SSE stream event by event: each complete event is written and flushed
/// at once. Drops non-standard named events, rewrites `model`, adds `data: [DONE]` when the
/// backend ends cleanly without it. With `capture`, the chunks are also folded into one reply
/// (for the reasoning cache). Client write errors end the relay with `Err`.
fn relay(
    body: &mut impl Read,
    sink: &mut BodyStream<'_>,
    backend: &str,
    relayer: &mut Relayer<'_>,
    access: &mut Access,
) -> io::Result<Relay> {
    let mut parser = Parser::new();
    let mut items = Vec::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let err = upstream::classify_read(backend, &e);
                fail_stream(sink, &err)?;
                return Ok(Relay::Failed);
            }
        };
        if parser.feed(&buf[..n], &mut items).is_err() {
            let err = ApiError::bad_gateway(backend, "oversized stream event");
            fail_stream(sink, &err)?;
            return Ok(Relay::Failed);
        }
        relayer.emit(&mut items, sink, access)?;
    }
    parser.finish(&mut items);
    relayer.emit(&mut items, sink, access)?;
    if !relayer.done && relayer.endpoint.ends_with_done() {
        sink.write(b"data: [DONE]\n\n")?;
    }
    Ok(Relay::Complete)
}

/// The state of one relayed stream.
struct Relayer<'a> {
    client_model: &'a str,
    endpoint: Endpoint,
    /// `[DONE]` was sent.
    done: bool,
    out: Vec<u8>,
    /// Folds the chunks into a reply when its reasoning is to be remembered.
    capture: Option<Aggregator>,
}

impl Relayer<'_> {
    fn emit(
        &mut self,
        items: &mut Vec<Item>,
        sink: &mut BodyStream<'_>,
        access: &mut Access,
    ) -> io::Result<()> {
        for item in items.drain(..) {
            if self.done {
                // Nothing after [DONE] is for the client; the rest is read only to keep the
                // backend connection reusable.
                continue;
            }
            let out = &mut self.out;
            out.clear();
            match item {
                Item::Comment(text) => rewrite::encode_comment(&text, out),
                Item::Event(event)
                    if !self.endpoint.keeps_named_events() && !rewrite::keep(&event) =>
                {
                    continue;
                }
                Item::Event(event) if event.data.trim() == sse::DONE => {
                    self.done = true;
                    let done = Event {
                        data: sse::DONE.into(),
                        ..event
                    };
                    rewrite::encode(&done, None, out);
                }
                Item::Event(event) => match serde_json::from_str::<Value>(&event.data) {
                    Ok(mut value) => {
                        access.take_usage(&value);
                        if let Some(capture) = self.capture.as_mut() {
                            capture.push(&value);
                            if capture.text_bytes() > MAX_CAPTURE {
                                // A reply this long is not a tool-call turn a history replays;
                                // keeping it would make a long stream cost its whole length.
                                debug!(
                                    "reply over {MAX_CAPTURE} bytes: its reasoning is not remembered"
                                );
                                self.capture = None;
                            }
                        }
                        if rewrite::set_client_model(&mut value, self.client_model) {
                            let data = serde_json::to_string(&value).unwrap_or_default();
                            rewrite::encode(&event, Some(&data), out);
                        } else {
                            rewrite::encode(&event, None, out);
                        }
                    }
                    // Not JSON: passed on as it came.
                    Err(_) => rewrite::encode(&event, None, out),
                },
            }
            sink.write(out)?;
        }
        Ok(())
    }
}

/// Tells a streaming client that the backend failed, in the form the OpenAI SDKs raise on.
fn fail_stream(sink: &mut BodyStream<'_>, err: &ApiError) -> io::Result<()> {
    let mut out = Vec::new();
    rewrite::encode_json(&err.to_json(), &mut out);
    sink.write(&out)
}

/// Folds a backend stream into one `chat.completion`.
fn aggregate(body: &mut impl Read, client_model: &str, backend: &str) -> Result<Value, ApiError> {
    let mut parser = Parser::new();
    let mut items = Vec::new();
    let mut agg = Aggregator::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut total = 0u64;
    let mut ended = false;
    while !ended {
        let n = body
            .read(&mut buf)
            .map_err(|e| upstream::classify_read(backend, &e))?;
        if n == 0 {
            parser.finish(&mut items);
            ended = true;
        } else {
            total += n as u64;
            if total > MAX_UPSTREAM_BODY {
                return Err(ApiError::bad_gateway(backend, "response too large"));
            }
            parser
                .feed(&buf[..n], &mut items)
                .map_err(|_| ApiError::bad_gateway(backend, "oversized stream event"))?;
        }
        for item in items.drain(..) {
            let Item::Event(event) = item else { continue };
            if !rewrite::keep(&event) || event.data.trim() == sse::DONE {
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if let Some(error) = chunk.get("error") {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("error in stream");
                return Err(ApiError::bad_gateway(backend, message));
            }
            agg.push(&chunk);
        }
    }
    Ok(agg.finish(client_model))
}

/// Copies a body as it comes, a flush per read.
fn copy_raw(body: &mut impl Read, sink: &mut BodyStream<'_>, backend: &str) -> Result<(), ()> {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        match body.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => sink.write(&buf[..n]).map_err(|_| ())?,
            Err(e) => {
                upstream::classify_read(backend, &e);
                return Err(());
            }
        }
    }
}

/// The whole body, at most `MAX_UPSTREAM_BODY`; `length` (the declared one) sizes the buffer
/// once instead of growing it read by read.
fn read_bounded(
    body: &mut impl Read,
    length: Option<u64>,
    backend: &str,
) -> Result<Vec<u8>, ApiError> {
    let mut raw = Vec::with_capacity(length.unwrap_or(0).min(MAX_UPSTREAM_BODY) as usize);
    body.take(MAX_UPSTREAM_BODY + 1)
        .read_to_end(&mut raw)
        .map_err(|e| upstream::classify_read(backend, &e))?;
    if raw.len() as u64 > MAX_UPSTREAM_BODY {
        return Err(ApiError::bad_gateway(backend, "response too large"));
    }
    Ok(raw)
}

fn sse_headers() -> [(http::HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
