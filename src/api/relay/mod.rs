//! The answer to the client, from a backend's response. What to do is decided first, by a pure
//! function of the response head and what the client asked ([`decide`]); each [`Mode`] then has
//! a function of its own:
//!
//! - [`passthrough`]: errors and anything unexpected, the backend's status and body unchanged;
//! - [`sse`]: a stream relayed event by event (model rewritten, vendor events dropped);
//! - [`aggregate`]: a stream folded into one JSON reply, for a client that did not stream;
//! - [`synthesize`]: a JSON reply turned into a stream, for a client that did;
//! - [`json`]: a JSON reply with its model rewritten.

mod aggregate;
mod json;
mod passthrough;
mod sse;
mod synthesize;

use std::io::{self, Read};

use http::{HeaderMap, HeaderValue, StatusCode, header};
use log::debug;

use crate::api::context::Ctx;
use crate::api::endpoint::Endpoint;
use crate::api::reasoning::ReasoningCache;
use crate::api::request::Ask;
use crate::api_error::ApiError;
use crate::server::{After, Headers, Responder};
use crate::upstream::{self, UpstreamResponse};

/// Largest backend body read whole (a non-streamed reply, or a stream being aggregated).
const MAX_UPSTREAM_BODY: u64 = 64 * 1024 * 1024;
/// Backend reads. An SSE event is a few hundred bytes, ureq buffers the connection's input
/// anyway (10 KiB), and an open stream keeps this buffer for its whole life: a thousand
/// streams at 4 KiB were 4 MiB.
const READ_BUF: usize = 1024;

/// How a response reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Passthrough,
    RelaySse,
    AggregateSse,
    SynthesizeSse,
    Json,
}

/// The mode for a backend's `status` and `content_type`, given whether the client asked for a
/// stream. Only chat completions convert between stream and JSON (`stream_mode`); on the other
/// endpoints a backend's stream is relayed as one whatever the client said.
pub fn decide(
    status: StatusCode,
    content_type: &str,
    client_streams: bool,
    endpoint: Endpoint,
) -> Mode {
    let content_type = content_type.to_ascii_lowercase();
    let is_sse = content_type.starts_with("text/event-stream");
    let is_json = content_type.contains("json");
    if !status.is_success() || !(is_sse || is_json) {
        return Mode::Passthrough;
    }
    let converts = endpoint.converts_streams();
    match (is_sse, client_streams) {
        (true, _) if !converts => Mode::RelaySse,
        (true, true) => Mode::RelaySse,
        (true, false) => Mode::AggregateSse,
        (false, true) if converts => Mode::SynthesizeSse,
        (false, _) => Mode::Json,
    }
}

/// What the relay needs to know about the request.
pub struct Job<'a> {
    pub endpoint: Endpoint,
    /// The backend's `name`, for errors and the log.
    pub backend: &'a str,
    pub ask: &'a Ask,
    /// Where the reply's reasoning is remembered, when the backend replays it.
    pub reasoning: Option<&'a ReasoningCache>,
    /// The proxy asked for the stream's usage, the client did not: take it out again.
    pub hide_usage: bool,
}

/// The backend's response head, as the modes use it.
pub struct Head {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// The backend's headers that go back to the client (request ids, rate limits).
    pub headers: Headers,
    /// The declared length, to size a buffer once.
    pub length: Option<u64>,
}

/// Answers the client from the backend's response in the mode [`decide`] picks.
pub fn answer(
    response: UpstreamResponse,
    job: &Job<'_>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    let (parts, body) = response.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    let head = Head {
        status: parts.status,
        headers: parts
            .headers
            .iter()
            .filter(|(n, _)| upstream::is_returned_header(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        length: content_length(&parts.headers),
        content_type,
    };
    let type_text = head
        .content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mode = decide(head.status, type_text, job.ask.stream, job.endpoint);
    debug!(
        "backend={:?} answered {} ({type_text}); client asked stream={}: {mode:?}",
        job.backend, head.status, job.ask.stream
    );
    ctx.status = head.status.as_u16();
    let mut body = body.into_reader();
    match mode {
        Mode::Passthrough => passthrough::answer(head, &mut body, job, responder, ctx),
        Mode::RelaySse => sse::answer(head, &mut body, job, responder, ctx),
        Mode::AggregateSse => aggregate::answer(head, &mut body, job, responder, ctx),
        Mode::SynthesizeSse => synthesize::answer(head, &mut body, job, responder, ctx),
        Mode::Json => json::answer(head, &mut body, job, responder, ctx),
    }
}

/// `Content-Length`, when it is a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
}

/// The whole body, at most `MAX_UPSTREAM_BODY`; `length` (the declared one) sizes the buffer
/// once instead of growing it read by read.
pub fn read_bounded(
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

#[cfg(test)]
mod tests {
    use super::*;

    const OK: StatusCode = StatusCode::OK;

    #[test]
    fn failures_and_unknown_types_pass_through() {
        for status in [400, 401, 404, 429, 500, 503] {
            let status = StatusCode::from_u16(status).unwrap();
            for ct in ["application/json", "text/event-stream"] {
                for streams in [false, true] {
                    let mode = decide(status, ct, streams, Endpoint::ChatCompletions);
                    assert_eq!(mode, Mode::Passthrough, "{status} {ct} {streams}");
                }
            }
        }
        for ct in ["audio/mpeg", "text/plain", ""] {
            assert_eq!(
                decide(OK, ct, true, Endpoint::ChatCompletions),
                Mode::Passthrough
            );
            assert_eq!(
                decide(OK, ct, false, Endpoint::AudioSpeech),
                Mode::Passthrough
            );
        }
    }

    #[test]
    fn chat_converts_to_what_the_client_asked() {
        let chat = Endpoint::ChatCompletions;
        assert_eq!(decide(OK, "text/event-stream", true, chat), Mode::RelaySse);
        assert_eq!(
            decide(OK, "Text/Event-Stream; charset=utf-8", false, chat),
            Mode::AggregateSse
        );
        assert_eq!(
            decide(OK, "application/json", true, chat),
            Mode::SynthesizeSse
        );
        assert_eq!(
            decide(OK, "application/json; charset=utf-8", false, chat),
            Mode::Json
        );
    }

    #[test]
    fn other_endpoints_never_convert() {
        for endpoint in [
            Endpoint::Completions,
            Endpoint::Responses,
            Endpoint::Embeddings,
        ] {
            for streams in [false, true] {
                assert_eq!(
                    decide(OK, "text/event-stream", streams, endpoint),
                    Mode::RelaySse
                );
                assert_eq!(
                    decide(OK, "application/json", streams, endpoint),
                    Mode::Json
                );
            }
        }
    }
}
