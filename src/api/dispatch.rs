//! The application behind the server: each request is routed by method and path, and when it
//! is over its record ([`Ctx`]) becomes one access-log line and one metrics observation.

use std::io;
use std::net::SocketAddr;

use http::{Method, Request, header};

use crate::api::context::Ctx;
use crate::api::endpoint::Endpoint;
use crate::api::state::Proxy;
use crate::api::{forward, limits, models, reply};
use crate::api_error::ApiError;
use crate::server::{After, Handler, Responder};

impl Handler for Proxy {
    fn handle(
        &self,
        request: Request<Vec<u8>>,
        peer: SocketAddr,
        responder: Responder<'_>,
    ) -> io::Result<After> {
        let metrics = &self.shared.metrics;
        let _in_flight = metrics.start_request();
        let mut ctx = Ctx::new();
        let result = dispatch(self, &request, peer, responder, &mut ctx);
        ctx.log(&request, peer, result.is_ok());
        metrics.observe(&ctx.observation());
        ctx.record_usage(&self.shared.ledger);
        result
    }
}

fn dispatch(
    proxy: &Proxy,
    request: &Request<Vec<u8>>,
    peer: SocketAddr,
    responder: Responder<'_>,
    ctx: &mut Ctx,
) -> io::Result<After> {
    let method = request.method();
    if method == Method::CONNECT {
        return proxy.connect.handle(request, peer, responder, ctx);
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
        // No Upgrade header in the 426 (RFC 9110 section 15.5.22 wants the protocol to switch
        // to): there is none, the answer means "stay on HTTP", and Codex reads only the
        // status. The connection closes: its client expected to leave HTTP on it.
        let e = ApiError::websocket_not_supported();
        return reply::error(responder.closing(), ctx, &e);
    }
    let key = match proxy.access_keys.check(request.headers()) {
        Ok(key) => key,
        Err(e) => return reply::error(responder, ctx, &e),
    };
    if let Some(key) = key {
        ctx.key = Some(key.name.as_str().into());
        let shared = &proxy.shared;
        if let Err(e) = limits::check(key, &shared.rates, &shared.ledger) {
            return reply::error(responder, ctx, &e);
        }
    }
    let models_path = path == "/v1/models" || path.starts_with("/v1/models/");
    match (Endpoint::from_path(path), method) {
        (Some(endpoint), &Method::POST) => {
            forward::handle(proxy, endpoint, request, responder, ctx)
        }
        (Some(_), _) => reply::not_allowed(responder, ctx, method, path, "POST"),
        (None, &Method::GET) if path == "/v1/models" => models::list(proxy, responder, ctx),
        (None, &Method::GET) if models_path => {
            models::one(proxy, &path["/v1/models/".len()..], responder, ctx)
        }
        (None, _) if models_path => reply::not_allowed(responder, ctx, method, path, "GET"),
        (None, _) => {
            let e = ApiError::unknown_url(method.as_str(), path);
            reply::error(responder, ctx, &e)
        }
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
