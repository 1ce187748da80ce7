//! The request's body: what the client asked for ([`Ask`]), read once, and the body as one
//! backend gets it (its model id, `stream` as its `stream_mode` wants, the history mended for
//! reasoning replay and quirks).

use log::debug;
use serde_json::{Value, json};

use crate::api::endpoint::Endpoint;
use crate::api::reasoning::{self, Mend, ReasoningCache, Restored};
use crate::api::state::Proxy;
use crate::api_error::ApiError;
use crate::config::{Backend, StreamMode};
use crate::json::{self, Fields};

/// What the client asked for, read before the body is rewritten.
pub struct Ask {
    /// The model id as the client sent it (and sees it in replies).
    pub model: String,
    /// The id routed by: `model` without a `strip_model_prefixes` prefix.
    pub route: String,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses the body: a JSON object with a `model`.
pub fn parse<'a>(proxy: &Proxy, body: &'a [u8]) -> Result<(Fields<'a>, Ask), ApiError> {
    let fields = Fields::parse(body).map_err(|e| ApiError::invalid_json(not_an_object(body, e)))?;
    let model = fields
        .get("model")
        .and_then(|m| serde_json::from_str::<String>(m).ok())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::missing_model(&proxy.router.model_list()))?;
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

/// Why a body was refused. serde_json says why text is not JSON, with the position; the scan
/// only knows that it is not.
fn not_an_object(body: &[u8], e: json::Invalid) -> String {
    const TOO_DEEP: &str = concat!(
        "request body is nested deeper than ",
        json::max_depth!(),
        " levels"
    );
    match e {
        json::Invalid::TooDeep => TOO_DEEP.to_owned(),
        json::Invalid::Syntax => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Err(e) => format!("request body is not valid JSON: {e}"),
            Ok(_) => "request body must be a JSON object".to_owned(),
        },
    }
}

/// How one backend is to get the request.
pub struct Rewrite<'a> {
    pub endpoint: Endpoint,
    pub backend: &'a Backend,
    pub reasoning: &'a ReasoningCache,
    pub mend: Mend,
    /// Add `stream_options.include_usage` to a stream the client did not ask usage for.
    pub add_usage: bool,
    /// The backend refuses `stream_options` (it sends usage unasked): none is sent, the
    /// client's included.
    pub drop_stream_options: bool,
}

/// The body for one backend, with what the mending of its history did.
pub fn upstream_body(
    fields: &Fields<'_>,
    ask: &Ask,
    how: &Rewrite<'_>,
) -> Result<(Vec<u8>, Restored), ApiError> {
    let mut fields = fields.clone();
    let backend = how.backend;
    let mends_history = how.mend != Mend::Off || backend.null_content_with_tool_calls;
    let restored = if how.endpoint == Endpoint::ChatCompletions && mends_history {
        mend_history(&mut fields, how)?
    } else {
        Restored::default()
    };
    fields
        .set("model", backend.target_for(&ask.route))
        .map_err(encode_error)?;
    let upstream_stream = match backend.stream_mode {
        _ if !how.endpoint.converts_streams() => ask.stream,
        StreamMode::Client => ask.stream,
        StreamMode::ForceStream => true,
        StreamMode::ForceNonStream => false,
    };
    if upstream_stream != ask.stream {
        fields
            .set("stream", &upstream_stream)
            .map_err(encode_error)?;
        if !upstream_stream {
            // Backends reject stream_options on non-streaming requests.
            fields.remove("stream_options");
        }
    }
    if how.drop_stream_options {
        fields.remove("stream_options");
    } else if upstream_stream && how.add_usage {
        // Counting a stream's tokens needs its usage (the relay takes it out again for a
        // client that did not ask); the client's other stream_options stay.
        let mut options = fields
            .get("stream_options")
            .and_then(|o| serde_json::from_str::<Value>(o).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        options["include_usage"] = Value::Bool(true);
        fields
            .set("stream_options", &options)
            .map_err(encode_error)?;
    }
    Ok((fields.to_vec(), restored))
}

/// Reasoning replayed into (or taken out of) the history's tool-call turns, and empty content
/// beside tool calls made `null` where the backend wants that.
fn mend_history(fields: &mut Fields<'_>, how: &Rewrite<'_>) -> Result<Restored, ApiError> {
    let backend = how.backend;
    // Only histories with tool calls need it; the rest is copied as it came.
    let raw = fields
        .get("messages")
        .filter(|m| m.contains("\"tool_calls\""));
    let Some(mut messages) = raw.and_then(|m| serde_json::from_str::<Vec<Value>>(m).ok()) else {
        return Ok(Restored::default());
    };
    let restored = how
        .reasoning
        .restore(&mut messages, &backend.name, how.mend);
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
    Ok(restored)
}

fn encode_error(e: serde_json::Error) -> ApiError {
    ApiError::internal(&format!("cannot encode the request: {e}"))
}
