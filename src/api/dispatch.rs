//! The application behind the HTTPS server: the routes of the OpenAI API we serve, the model
//! list, and one access-log line per request.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, StatusCode, header};
use log::info;
use serde_json::{Value, json};

use crate::api::access_keys::AccessKeys;
use crate::api::connect::Connect;
use crate::api::forward::{self, Endpoint};
use crate::api::reasoning::ReasoningCache;
use crate::api_error::ApiError;
use crate::config::Config;
use crate::logging::Field;
use crate::metrics::{Metrics, Observation};
use crate::server::{After, Handler, Headers, Responder, json_content_type};
use crate::upstream::Upstream;
use crate::upstream::route::{Bulkheads, Router};

/// What lives as long as the process and is shared by every configuration a reload brings.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// Remembered reasoning, and what each backend has shown about it.
    pub reasoning: ReasoningCache,
    /// Requests in flight per backend.
    pub bulkheads: Bulkheads,
    /// Where this process listens: a tunnel must never lead back to one of them.
    pub listening: Vec<SocketAddr>,
}

pub struct Proxy {
    connect: Connect,
    /// `server.strip_model_prefixes`.
    model_prefixes: Vec<String>,
    pub shared: Arc<Shared>,
    access_keys: AccessKeys,
    pub router: Router,
    pub upstream: Upstream,
    /// `created` of every model in the list: when this proxy started.
    created: u64,
}

impl Proxy {
    pub fn new(config: &Config, shared: Arc<Shared>) -> Self {
        Proxy {
            connect: Connect::new(config, shared.listening.clone()),
            model_prefixes: config.server.strip_model_prefixes.clone(),
            access_keys: AccessKeys::new(config.access_keys.clone()),
            router: Router::new(config, Arc::clone(&shared.metrics), &shared.bulkheads),
            shared,
            upstream: Upstream::new(config),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// The model id to route by: the client's, minus a configured prefix.
    pub fn route_model<'m>(&self, model: &'m str) -> &'m str {
        self.model_prefixes
            .iter()
            .find_map(|p| model.strip_prefix(p.as_str()))
            .unwrap_or(model)
    }

    fn dispatch(
        &self,
        request: &Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
        access: &mut Access,
    ) -> io::Result<After> {
        let method = request.method();
        if method == Method::CONNECT {
            return self.connect.handle(request, peer, responder, access);
        }
        // Clients given a base URL without `/v1` append only `/chat/completions`.
        let full;
        let path = match request.uri().path() {
            p if p == "/v1" || p.starts_with("/v1/") => p,
            p => {
                full = format!("/v1{p}");
                full.as_str()
            }
        };
        if is_websocket_upgrade(request.headers()) {
            // No Upgrade header in the 426 (RFC 9110 section 15.5.22 wants the protocol to
            // switch to): there is none, the answer means "stay on HTTP", and Codex reads only
            // the status. The connection closes: its client expected to leave HTTP on it.
            return access.error(responder.closing(), &ApiError::websocket_not_supported());
        }
        if let Err(e) = self.access_keys.check(request.headers()) {
            return access.error(responder, &e);
        }
        match path {
            _ if Endpoint::from_path(path).is_some() => match Endpoint::from_path(path) {
                Some(endpoint) if method == Method::POST => {
                    forward::handle(self, endpoint, request, responder, access)
                }
                _ => access.not_allowed(responder, method, path, "POST"),
            },
            "/v1/models" if method == Method::GET => {
                let data: Vec<Value> = self
                    .router
                    .models()
                    .map(|b| self.model_object(&b.custom_model_id, &b.name))
                    .collect();
                access.json(
                    responder,
                    StatusCode::OK,
                    &json!({"object": "list", "data": data}),
                )
            }
            _ if path.starts_with("/v1/models/") && method == Method::GET => {
                let id = percent_decode(&path["/v1/models/".len()..]);
                match self.router.lookup(&id) {
                    Some(b) => access.json(
                        responder,
                        StatusCode::OK,
                        &self.model_object(&b.custom_model_id, &b.name),
                    ),
                    None => access.error(
                        responder,
                        &ApiError::new(
                            StatusCode::NOT_FOUND,
                            "invalid_request_error",
                            "model_not_found",
                            format!(
                                "The model `{id}` is not configured on this proxy. Available models: {}",
                                self.router.model_list()
                            ),
                        ),
                    ),
                }
            }
            _ if path == "/v1/models" || path.starts_with("/v1/models/") => {
                access.not_allowed(responder, method, path, "GET")
            }
            _ => access.error(
                responder,
                &ApiError::not_found(format!("Invalid URL ({method} {path})")),
            ),
        }
    }

    fn model_object(&self, id: &str, owner: &str) -> Value {
        json!({"id": id, "object": "model", "created": self.created, "owned_by": owner})
    }
}

impl Handler for Proxy {
    fn handle(
        &self,
        request: Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
    ) -> io::Result<After> {
        let started = Instant::now();
        let metrics = &self.shared.metrics;
        let _in_flight = metrics.start_request();
        let mut access = Access::default();
        let result = self.dispatch(&request, peer, responder, &mut access);
        access.log(&request, peer, started, result.is_ok());
        metrics.observe(&Observation {
            backend: access.backend.as_deref().unwrap_or("-"),
            // The entry's id, not the client's text: a catch-all must not make labels unbounded.
            model: access.route.as_deref().unwrap_or("-"),
            status: access.status,
            bytes: access.bytes,
            failovers: access.failovers,
            ttfb: access.ttfb,
            duration: started.elapsed(),
            prompt_tokens: access.usage.0,
            completion_tokens: access.usage.1,
        });
        result
    }
}

/// The facts of one request for its access-log line.
#[derive(Default)]
pub struct Access {
    pub model: Option<String>,
    pub backend: Option<String>,
    pub status: u16,
    pub bytes: u64,
    /// Backends given up on before the one that answered.
    pub failovers: u32,
    /// The `custom_model_id` of the entry that served (for metrics labels).
    pub route: Option<String>,
    /// From request sent upstream to the backend's response head.
    pub ttfb: Option<std::time::Duration>,
    /// Prompt and completion tokens the backend reported.
    pub usage: (u64, u64),
}

impl Access {
    /// Takes the token counts from a reply's or a chunk's `usage`, if it has one.
    pub fn take_usage(&mut self, value: &Value) {
        let Some(usage) = value.get("usage").filter(|u| u.is_object()) else {
            return;
        };
        self.usage = Usage::of(usage).counts();
    }

    /// The same from a reply's `usage` field as JSON text, read without building it as a value.
    pub fn take_usage_json(&mut self, usage: &str) {
        if !usage.trim_start().starts_with('{') {
            return;
        }
        if let Ok(usage) = serde_json::from_str::<Usage>(usage) {
            self.usage = usage.counts();
        }
    }
}

/// The token counts of a `usage` object, under OpenAI's names or the Responses API's.
#[derive(serde::Deserialize)]
struct Usage {
    prompt_tokens: Option<Value>,
    input_tokens: Option<Value>,
    completion_tokens: Option<Value>,
    output_tokens: Option<Value>,
}

impl Usage {
    /// From an object already read as a value. (Not `Usage::deserialize(value)`: that builds a
    /// second deserializer for the struct, 12 KiB of binary.)
    fn of(usage: &Value) -> Usage {
        let field = |name: &str| usage.get(name).cloned();
        Usage {
            prompt_tokens: field("prompt_tokens"),
            input_tokens: field("input_tokens"),
            completion_tokens: field("completion_tokens"),
            output_tokens: field("output_tokens"),
        }
    }

    /// Prompt and completion tokens; a count that is missing or not a whole number is 0.
    fn counts(&self) -> (u64, u64) {
        let count = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64).unwrap_or(0);
        (
            count(&self.prompt_tokens).max(count(&self.input_tokens)),
            count(&self.completion_tokens).max(count(&self.output_tokens)),
        )
    }
}

impl Access {
    pub fn error(&mut self, responder: Responder<'_>, err: &ApiError) -> io::Result<After> {
        let mut headers = vec![json_content_type()];
        if matches!(err.status.as_u16(), 429 | 503) {
            // Busy: the OpenAI SDKs wait this long before their retry.
            headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        self.send(responder, err.status, headers, &err.to_body())
    }

    fn not_allowed(
        &mut self,
        responder: Responder<'_>,
        method: &Method,
        path: &str,
        allow: &'static str,
    ) -> io::Result<After> {
        let err = ApiError::method_not_allowed(method.as_str(), path);
        let headers = vec![
            json_content_type(),
            (header::ALLOW, HeaderValue::from_static(allow)),
        ];
        self.send(responder, err.status, headers, &err.to_body())
    }

    fn json(
        &mut self,
        responder: Responder<'_>,
        status: StatusCode,
        value: &Value,
    ) -> io::Result<After> {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.send(responder, status, vec![json_content_type()], &body)
    }

    /// Sends a complete reply and records its status and size for the log.
    fn send(
        &mut self,
        responder: Responder<'_>,
        status: StatusCode,
        headers: Headers,
        body: &[u8],
    ) -> io::Result<After> {
        self.status = status.as_u16();
        self.bytes = body.len() as u64;
        responder.send(status, headers, body)
    }

    /// One key=value line per request; never a header, a key or a body. Values a client chose
    /// are escaped and cut ([`Field`]).
    fn log(&self, request: &Request<Vec<u8>>, peer: SocketAddr, started: Instant, completed: bool) {
        info!(
            "{} {} status={} model={} backend={} failovers={} ms={} bytes={} peer={}{}",
            Field(request.method().as_str()),
            Field(request.uri().path()),
            self.status,
            Field(self.model.as_deref().unwrap_or("-")),
            Field(self.backend.as_deref().unwrap_or("-")),
            self.failovers,
            started.elapsed().as_millis(),
            self.bytes,
            peer,
            if completed { "" } else { " aborted=client" },
        );
    }
}

/// `Upgrade: websocket` (the token anywhere in the list, any case).
fn is_websocket_upgrade(headers: &http::HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    })
}

/// `%XX` sequences decoded (model ids such as `qwen/qwen3` arrive as `qwen%2Fqwen3`); anything
/// malformed stays as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("qwen%2Fqwen3"), "qwen/qwen3");
        assert_eq!(percent_decode("a%zzb%"), "a%zzb%");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
