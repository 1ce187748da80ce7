//! Whole replies (errors, JSON, a backend's body) written through the responder, with what was
//! sent noted in the request's record for its log line.

use std::io;

use http::{HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use crate::api::context::Ctx;
use crate::api_error::ApiError;
use crate::server::{After, Headers, Responder, json_content_type};

/// An OpenAI-shaped error; 429 and 503 say when to come back.
pub fn error(responder: Responder<'_>, ctx: &mut Ctx, err: &ApiError) -> io::Result<After> {
    let mut headers = vec![json_content_type()];
    if matches!(err.status.as_u16(), 429 | 503) {
        // Busy: the OpenAI SDKs wait this long before their retry.
        let seconds = HeaderValue::from(err.retry_after.unwrap_or(1));
        headers.push((header::RETRY_AFTER, seconds));
    }
    send(responder, ctx, err.status, headers, &err.to_body())
}

/// 405 with the one method the path takes.
pub fn not_allowed(
    responder: Responder<'_>,
    ctx: &mut Ctx,
    method: &Method,
    path: &str,
    allow: &'static str,
) -> io::Result<After> {
    let err = ApiError::method_not_allowed(method.as_str(), path);
    let headers = vec![
        json_content_type(),
        (header::ALLOW, HeaderValue::from_static(allow)),
    ];
    send(responder, ctx, err.status, headers, &err.to_body())
}

pub fn json(responder: Responder<'_>, ctx: &mut Ctx, value: &Value) -> io::Result<After> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    send(
        responder,
        ctx,
        StatusCode::OK,
        vec![json_content_type()],
        &body,
    )
}

/// A complete reply.
pub fn send(
    responder: Responder<'_>,
    ctx: &mut Ctx,
    status: StatusCode,
    headers: Headers,
    body: &[u8],
) -> io::Result<After> {
    ctx.status = status.as_u16();
    ctx.bytes = body.len() as u64;
    responder.send(status, headers, body)
}
