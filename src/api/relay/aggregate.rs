//! A backend's stream folded into one `chat.completion`, for a client that did not ask to
//! stream (the backend's `stream_mode: force_stream`).

use std::io::{self, Read};

use serde_json::Value;

use super::{Head, Job, MAX_UPSTREAM_BODY, READ_BUF};
use crate::api::context::Ctx;
use crate::api::reply;
use crate::api::sse::convert::Aggregator;
use crate::api::sse::{self, Item, Parser, rewrite};
use crate::api_error::ApiError;
use crate::server::{After, Responder, json_content_type};
use crate::upstream;

pub fn answer(
    mut head: Head,
    body: &mut impl Read,
    job: &Job<'_>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    let reply = match fold(body, &job.ask.model, job.backend) {
        Ok(reply) => reply,
        Err(e) => return reply::error(responder, ctx, &e),
    };
    ctx.take_usage(&reply);
    if let Some(cache) = job.reasoning {
        cache.remember_reply(&reply, job.backend);
    }
    head.headers.push(json_content_type());
    let bytes = serde_json::to_vec(&reply).unwrap_or_default();
    reply::send(responder, ctx, head.status, head.headers, &bytes)
}

/// Reads the stream to its end (at most `MAX_UPSTREAM_BODY`) and folds its chunks; an error
/// event in it fails the whole reply.
fn fold(body: &mut impl Read, client_model: &str, backend: &str) -> Result<Value, ApiError> {
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
