//! The one place where a failure becomes an HTTP status and OpenAI-shaped JSON:
//! `{"error":{"message":..,"type":..,"param":null,"code":..}}`. Clients (the OpenAI SDKs, IDEs)
//! parse exactly this shape; the original's `{"error":"text"}` made them show "unknown error".
//!
//! Messages name a backend by its configured `name`, never by URL, and never carry a key.

use http::StatusCode;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `api_error`, ...
    pub kind: &'static str,
    /// OpenAI's `code`: machine-readable, e.g. `model_not_found`.
    pub code: &'static str,
    pub message: String,
    /// Seconds a 429 or 503 tells the client to wait (`Retry-After`); 1 when not set.
    pub retry_after: Option<u64>,
}

/// One constructor per error a client can get, so that each `code` has one wording; `new` is
/// private to keep it that way.
impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            kind,
            code,
            message,
            retry_after: None,
        }
    }

    /// The body is not JSON, or not an object; `why` says which (with serde's position).
    pub fn invalid_json(why: String) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            why,
        )
    }

    /// The body names no model; `available` lists the ones that would do.
    pub fn missing_model(available: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "missing_model",
            format!("you must provide a model parameter; available models: {available}"),
        )
    }

    /// The model is not configured (`POST` endpoints and `GET /v1/models/{id}` alike).
    pub fn model_not_found(model: &str, available: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "The model `{model}` is not configured on this proxy. Available models: {available}"
            ),
        )
    }

    /// A path this proxy does not serve.
    pub fn unknown_url(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            format!("Invalid URL ({method} {path})"),
        )
    }

    /// `access_keys` are set and the request's Bearer token is none of them.
    pub fn invalid_api_key() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided: this proxy requires one of its access keys as a Bearer token"
                .to_owned(),
        )
    }

    /// A `CONNECT` the tunnel policy refuses; `why` names the setting that decided it.
    pub fn tunnel_denied(why: String) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "tunnel_denied",
            why,
        )
    }

    /// A permitted `CONNECT` whose target could not be reached.
    pub fn tunnel_unreachable(host: &str, port: u16) -> Self {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "tunnel_unreachable",
            format!("cannot reach {host}:{port}"),
        )
    }

    /// What the mock backend answers in `--strict` mode to a message field OpenAI does not
    /// define, as strict OpenAI-compatible servers (vLLM, LiteLLM) do.
    pub fn extra_forbidden(what: String) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            "extra_forbidden",
            what,
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("method {method} is not allowed on {path}"),
        )
    }

    /// A WebSocket upgrade: we speak plain HTTP only. Codex CLI tries a WebSocket to
    /// `/v1/responses` first and falls back to HTTP at once on 426 (it retries anything else
    /// with back-off, seconds per session).
    pub fn websocket_not_supported() -> Self {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "invalid_request_error",
            "websocket_not_supported",
            "this proxy does not relay WebSockets; send the request over HTTP".to_owned(),
        )
    }

    /// A shared resource is used up (memory for request bodies, a backend's share of requests):
    /// a moment later it may not be. Sent with `Retry-After`.
    pub fn server_busy(why: &str) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "server_busy",
            format!("the proxy is busy ({why}); retry shortly"),
        )
    }

    /// Every backend for the model is serving its `max_in_flight` requests already.
    pub fn backend_busy(backend: &str) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "backend_busy",
            format!(
                "backend {backend:?} is serving as many requests as it may at once \
                 (max_in_flight); retry shortly"
            ),
        )
    }

    /// The access key `name` has made its `requests_per_minute` in the last minute.
    pub fn key_rate_limited(name: &str, per_minute: u32, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                format!(
                    "Rate limit reached for access key {name:?}: {per_minute} requests per minute. \
                     Please try again in {retry_after}s."
                ),
            )
        }
    }

    /// The access key `name` has used its `tokens_per_day` today (UTC).
    pub fn key_token_budget_spent(name: &str, used: u64, per_day: u64, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tokens",
                "daily_token_limit_exceeded",
                format!(
                    "Access key {name:?} has used {used} of its {per_day} tokens for today (UTC); \
                     the budget renews at midnight UTC, in {retry_after}s."
                ),
            )
        }
    }

    /// This client has its share of requests in flight already (`server.max_requests_per_client`).
    pub fn client_busy(limit: usize) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "too_many_requests_in_flight",
            format!(
                "this client address has {limit} requests in flight already \
                 (server.max_requests_per_client); retry when one has finished"
            ),
        )
    }

    pub fn body_too_large(limit: u64) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("request body exceeds the limit of {limit} bytes (server.max_body_bytes)"),
        )
    }

    pub fn header_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            "request_header_too_large",
            format!("request head exceeds {limit} bytes or 128 header lines"),
        )
    }

    pub fn malformed_http(why: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "malformed_request",
            format!("malformed HTTP request: {why}"),
        )
    }

    pub fn request_timeout() -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "the request was not received in time".to_owned(),
        )
    }

    /// The backend could not be reached (refused, DNS, TLS) or answered nonsense.
    pub fn bad_gateway(backend: &str, what: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "upstream_unavailable",
            format!("backend {backend:?} failed: {what}"),
        )
    }

    pub fn gateway_timeout(backend: &str) -> Self {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            "upstream_timeout",
            format!("backend {backend:?} did not answer in time"),
        )
    }

    pub fn internal(message: &str) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            message.to_owned(),
        )
    }

    /// The JSON object, for a response body or an SSE `data:` line.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.code,
            }
        })
    }

    pub fn to_body(&self) -> Vec<u8> {
        // unwrap: serializing a Value built from strings cannot fail.
        #[allow(clippy::unwrap_used)]
        serde_json::to_vec(&self.to_json()).unwrap()
    }
}
