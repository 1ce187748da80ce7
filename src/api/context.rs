//! One request's record, in the spirit of pingora's per-request `CTX`: every step notes what
//! it learned here (model, backend, status, bytes, tokens), and when the request is over the
//! dispatcher turns it into the access-log line and the metrics observation. The record only
//! collects; responses are written by the responder ([`reply`](super::reply)).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use log::info;

use crate::logging::Field;
use crate::metrics::Observation;
use crate::usage::{Ledger, Tokens, day};

pub struct Ctx {
    pub started: Instant,
    /// The model id as the client sent it.
    pub model: Option<String>,
    /// The `name` of the backend that served (or was tried last), or `connect:<host>`.
    pub backend: Option<String>,
    /// The `custom_model_id` of the entry that served (for metrics labels).
    pub route: Option<String>,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// Backends given up on before the one that answered.
    pub failovers: u32,
    /// From request sent upstream to the backend's response head.
    pub ttfb: Option<Duration>,
    /// When the request was sent to the backend that answered (for the first-token time).
    pub sent: Option<Instant>,
    /// From request sent to the first event of a stream relayed to the client.
    pub first_token: Option<Duration>,
    /// What the backend reported; `None` when it reported no usage.
    pub tokens: Option<Tokens>,
    /// The name of the access key the request came with (`None` without access keys).
    pub key: Option<std::sync::Arc<str>>,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            started: Instant::now(),
            model: None,
            backend: None,
            route: None,
            status: 0,
            bytes: 0,
            failovers: 0,
            ttfb: None,
            sent: None,
            first_token: None,
            tokens: None,
            key: None,
        }
    }

    /// Takes the token counts from a reply or a stream chunk, if it reports them.
    pub fn take_usage(&mut self, value: &serde_json::Value) {
        if let Some(tokens) = Tokens::from_message(value) {
            self.tokens = Some(tokens);
        }
    }

    /// The same from the text of a reply's `usage` field.
    pub fn take_usage_json(&mut self, usage: &str) {
        if let Some(tokens) = Tokens::from_usage_json(usage) {
            self.tokens = Some(tokens);
        }
    }

    /// One key=value line per request; never a header, a key or a body. Values a client chose
    /// are escaped and cut ([`Field`]).
    pub fn log(&self, request: &Request<Vec<u8>>, peer: SocketAddr, completed: bool) {
        info!(
            "{} {} status={} model={} backend={} failovers={} ms={} bytes={} peer={}{}",
            Field(request.method().as_str()),
            Field(request.uri().path()),
            self.status,
            Field(self.model.as_deref().unwrap_or("-")),
            Field(self.backend.as_deref().unwrap_or("-")),
            self.failovers,
            self.started.elapsed().as_millis(),
            self.bytes,
            peer,
            if completed { "" } else { " aborted=client" },
        );
    }

    /// Counts the request in the usage ledger if a backend answered it with a success (a
    /// refused or failed request used no tokens and is in the metrics only).
    pub fn record_usage(&self, ledger: &Ledger) {
        let (Some(model), Some(backend)) = (&self.model, &self.backend) else {
            return;
        };
        if self.ttfb.is_none() || !(200..300).contains(&self.status) {
            return;
        }
        let key = self.key.as_deref().unwrap_or("-");
        ledger.record(day::unix_now(), model, backend, key, self.tokens);
    }

    pub fn observation(&self) -> Observation<'_> {
        Observation {
            backend: self.backend.as_deref().unwrap_or("-"),
            // The entry's id, not the client's text: a catch-all must not make labels unbounded.
            model: self.route.as_deref().unwrap_or("-"),
            status: self.status,
            bytes: self.bytes,
            failovers: self.failovers,
            ttfb: self.ttfb,
            first_token: self.first_token,
            duration: self.started.elapsed(),
            key: self.key.as_deref().unwrap_or("-"),
            tokens: self.tokens.unwrap_or_default(),
        }
    }
}
