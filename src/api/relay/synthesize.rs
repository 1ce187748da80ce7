//! A JSON `chat.completion` turned into a stream, for a client that asked to stream from a
//! backend that does not (`stream_mode: force_non_stream`): the chunks a streaming backend
//! would have sent, then `data: [DONE]`.

use std::io::{self, Read};

use serde_json::Value;

use super::{Head, Job, json, read_bounded, sse_headers};
use crate::api::context::Ctx;
use crate::api::reply;
use crate::api::sse::{convert, rewrite};
use crate::server::{After, Responder};

pub fn answer(
    mut head: Head,
    body: &mut impl Read,
    job: &Job<'_>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    let raw = match read_bounded(body, head.length, job.backend) {
        Ok(raw) => raw,
        Err(e) => return reply::error(responder, ctx, &e),
    };
    let Ok(reply) = serde_json::from_slice::<Value>(&raw) else {
        return json::as_is(head, &raw, responder, ctx);
    };
    if !reply.is_object() {
        return json::as_is(head, &raw, responder, ctx);
    }
    ctx.take_usage(&reply);
    if let Some(cache) = job.reasoning {
        cache.remember_reply(&reply, job.backend);
    }
    let mut out = Vec::new();
    for chunk in convert::synthesize(&reply, &job.ask.model, job.ask.include_usage) {
        rewrite::encode_json(&chunk, &mut out);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    head.headers.extend(sse_headers());
    let mut sink = responder.stream(head.status, head.headers)?;
    sink.write(&out)?;
    ctx.bytes = sink.bytes;
    sink.finish()
}
