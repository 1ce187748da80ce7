//! A JSON reply relayed whole, with `model` set back to the client's id. Also the pieces the
//! stream synthesis shares: reading the reply, and sending it on when it cannot be converted.

use std::io::{self, Read};

use serde_json::Value;

use super::{Head, Job, read_bounded};
use crate::api::context::Ctx;
use crate::api::reply;
use crate::api_error::ApiError;
use crate::json::Fields;
use crate::server::{After, Responder, json_content_type};

pub fn answer(
    head: Head,
    body: &mut impl Read,
    job: &Job<'_>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    let raw = match read_bounded(body, head.length, job.backend) {
        Ok(raw) => raw,
        Err(e) => return reply::error(responder, ctx, &e),
    };
    let Ok(fields) = Fields::parse(&raw) else {
        return as_is(head, &raw, responder, ctx);
    };
    if let Some(usage) = fields.get("usage") {
        ctx.take_usage_json(usage);
    }
    // The reply as values only when its tool calls' reasoning is to be remembered.
    if let Some(cache) = job.reasoning {
        let calls_tools = fields
            .get("choices")
            .is_some_and(|c| c.contains("\"tool_calls\""));
        if let Some(reply) = calls_tools
            .then(|| serde_json::from_slice::<Value>(&raw).ok())
            .flatten()
        {
            cache.remember_reply(&reply, job.backend);
        }
    }
    with_client_model(head, fields, job, responder, ctx)
}

/// Claimed JSON but is not: relayed as it came rather than guessed at.
pub fn as_is(
    mut head: Head,
    raw: &[u8],
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    head.headers.push(json_content_type());
    reply::send(responder, ctx, head.status, head.headers, raw)
}

/// The reply with the client's model id, if it names one.
fn with_client_model(
    mut head: Head,
    mut fields: Fields<'_>,
    job: &Job<'_>,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    if fields.contains("model") {
        if let Err(e) = fields.set("model", &job.ask.model) {
            return reply::error(responder, ctx, &ApiError::internal(&e.to_string()));
        }
    }
    head.headers.push(json_content_type());
    let bytes = fields.to_vec();
    reply::send(responder, ctx, head.status, head.headers, &bytes)
}
