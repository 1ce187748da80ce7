//! Talking to backends: ureq agents (one per worker thread, agents.rs; the kept-alive
//! connections to every backend shared by all of them, idle.rs), which request headers go up,
//! which response headers come back, and what a failure becomes for the client.
//!
//! Agents never decode (no gzip feature; `Accept-Encoding` is not forwarded, so backends
//! answer uncompressed bodies we can rewrite), never follows redirects, never turns a status
//! into an error, and ignores `HTTPS_PROXY` and friends: the proxy's own environment must not
//! silently reroute users' keys.

pub mod agents;
pub mod coalesce;
pub mod idle;
pub mod resolve;
pub mod roots;
pub mod route;
pub mod target;
pub mod tcp;

use std::io;

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use log::{debug, warn};
use rustls::pki_types::CertificateDer;
use ureq::config::AutoHeaderValue;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    ConnectProxyConnector, Connector, RustlsConnector, SocksConnector,
};
use ureq::{Agent, Body};

use crate::api_error::ApiError;
use crate::config::{Backend, Config, Timeouts};
use agents::Agents;
use coalesce::CoalescingConnector;
use idle::Keeping;
use resolve::CachingResolver;
use target::Targets;
use tcp::BackendTcpConnector;

pub type UpstreamResponse = http::Response<Body>;

/// Request headers forwarded to the backend besides `x-*`. `Accept-Encoding` is left out on
/// purpose (see the module doc); hop-by-hop headers and `Host`/`Content-Length` are ours to set.
const FORWARD_REQUEST: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
];
const FORWARD_REQUEST_NAMED: &[&str] = &["openai-organization", "openai-project", "openai-beta"];

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), even when `x-` prefixed
/// ones would otherwise pass.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The agents: one shared by every backend with default settings, one of its own for each
/// backend with a proxy, extra roots or different timeouts (each, per worker thread).
pub struct Upstream {
    agents: Agents,
    /// The recipe of each backend with an agent of its own; the others use recipe 0.
    own: HashMap<String, usize>,
    /// With access keys configured the client's `Authorization` is the proxy's key, not the
    /// backend's: it must not travel on.
    strip_client_auth: bool,
    targets: Targets,
}

impl Upstream {
    pub fn new(config: &Config) -> Self {
        let server = &config.server;
        let mut agents = Agents::new();
        add_agent(&mut agents, &server.timeouts, None, &[]);
        let own = config
            .active_backends()
            .filter(|b| b.proxy.is_some() || !b.ca_certs.is_empty() || !b.timeouts.is_default())
            .map(|b| {
                let t = Timeouts {
                    connect: b.timeouts.connect.unwrap_or(server.timeouts.connect),
                    first_byte: b.timeouts.first_byte.unwrap_or(server.timeouts.first_byte),
                    read: b.timeouts.read.unwrap_or(server.timeouts.read),
                    ..server.timeouts
                };
                let index = add_agent(&mut agents, &t, b.proxy.as_deref(), &b.ca_certs);
                (b.name.clone(), index)
            })
            .collect();
        Upstream {
            agents,
            own,
            strip_client_auth: !config.access_keys.is_empty(),
            targets: Targets::default(),
        }
    }

    /// POSTs `body` (JSON) to `backend` at `api_path`, with the client's forwardable headers,
    /// the backend's key and extra headers. Returns the response head with its body unread, or
    /// the client-facing error.
    ///
    /// Sent a second time, on another connection, when the backend closed the pooled one it went
    /// out on without answering: a backend's keep-alive timeout can close it between our check
    /// and our request (tcp.rs), and it did not read the request.
    pub fn post_json(
        &self,
        backend: &Backend,
        api_path: &'static str,
        client_headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<UpstreamResponse, ApiError> {
        let index = self.own.get(&backend.name).copied().unwrap_or(0);
        self.agents.with(index, |agent| {
            let request = self.request(backend, api_path, client_headers, &body)?;
            let sent = match agent.run(request) {
                Err(e) if tcp::is_stale(&e) => {
                    debug!(
                        "backend={:?} closed a kept-alive connection as it was reused; sending again",
                        backend.name
                    );
                    let request = self.request(backend, api_path, client_headers, &body)?;
                    agent.run(request)
                }
                sent => sent,
            };
            sent.map_err(|e| classify(&backend.name, &e))
        })
    }

    fn request<'b>(
        &self,
        backend: &Backend,
        api_path: &'static str,
        client_headers: &HeaderMap,
        body: &'b [u8],
    ) -> Result<Request<&'b [u8]>, ApiError> {
        let target = self.targets.get(backend, api_path)?;
        // Filled in place: the builder moves the whole request head once per call.
        let mut request = Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = target.uri;
        let headers = request.headers_mut();
        for (name, value) in forwardable(client_headers) {
            headers.append(name.clone(), value.clone());
        }
        match target.authorization {
            Some(value) => {
                headers.insert(header::AUTHORIZATION, value);
            }
            None if self.strip_client_auth => {
                headers.remove(header::AUTHORIZATION);
            }
            None => {}
        }
        for (name, value) in &backend.headers {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(request)
    }
}

/// Adds the recipe of an agent with these settings; returns its index.
fn add_agent(
    agents: &mut Agents,
    timeouts: &Timeouts,
    proxy: Option<&str>,
    extra_roots: &[CertificateDer<'static>],
) -> usize {
    let mut config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        // Validated at load; a proxy that cannot be parsed here is left out rather than
        // silently replaced by the environment's.
        .proxy(proxy.and_then(|p| ureq::Proxy::new(p).ok()))
        .no_delay(true)
        .user_agent(AutoHeaderValue::None)
        .accept(AutoHeaderValue::None)
        .accept_encoding(AutoHeaderValue::None)
        .timeout_connect(Some(timeouts.connect))
        .timeout_recv_response(Some(timeouts.first_byte))
        // Per read, not per body: a generation may stream for many minutes, but a backend
        // silent for this long is gone.
        .timeout_per_read(Some(timeouts.read))
        .timeout_per_write(Some(timeouts.read))
        // Kept by the connector chain instead (idle.rs): ureq's own pool holds none.
        .max_idle_connections(0)
        // Small buffers, not ureq's 128 KiB: a streaming response is relayed a read at a time,
        // and with hundreds of streams the buffers would be most of the memory. The input
        // buffer grows when a response head needs more. Not below 10 KiB: ureq borrows that
        // much of it as scratch space while sending a body, and a smaller one is cut back and
        // zero-filled again on every request (17% of the instructions per request at 8 KiB).
        .input_buffer_size(10 * 1024)
        .output_buffer_size(8 * 1024);
    config = config.tls_config(crate::upstream::roots::tls_config(extra_roots));
    // ureq looks the name up before its pool, on every request: keep the answers (resolve.rs).
    agents.add(
        config.build(),
        connector(),
        CachingResolver::new(DefaultResolver::default()),
    )
}

/// ureq's default chain (SOCKS, HTTP CONNECT proxy, TCP, rustls) with our TCP connection, whose
/// liveness check is one system call (tcp.rs), small writes combined below TLS (coalesce.rs),
/// and idle connections kept for reuse around it all (idle.rs).
fn connector() -> impl Connector {
    Keeping::new(
        ().chain(SocksConnector::default())
            .chain(ConnectProxyConnector::default())
            .chain(BackendTcpConnector)
            .chain(CoalescingConnector)
            .chain(RustlsConnector::default()),
    )
}

/// The client's headers that go upstream: the named allow-list and `x-*`, minus hop-by-hop
/// ones and any the client's `Connection` header names.
pub fn forwardable(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    let connection_named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    headers.iter().filter(move |(name, _)| {
        let n = name.as_str();
        let allowed = FORWARD_REQUEST.contains(name)
            || FORWARD_REQUEST_NAMED.contains(&n)
            || n.starts_with("x-");
        allowed
            && n != header::CONTENT_TYPE.as_str() // set by us: the body is always JSON
            && !HOP_BY_HOP.contains(&n)
            && !connection_named.iter().any(|c| c == n)
    })
}

/// Whether a backend response header is worth returning to the client: request ids, rate-limit
/// state and retry hints, which SDKs read (the OpenAI SDKs back off on `retry-after`).
pub fn is_returned_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "x-request-id"
        || n == "request-id"
        || n == "retry-after"
        || n == "retry-after-ms"
        || n.starts_with("openai-")
        || n.starts_with("x-ratelimit-")
}

/// A ureq error as the client sees it: 504 for anything that ran out of time, 502 otherwise.
/// The backend is named; its URL and the error's text (which may carry it) go only to the log.
pub fn classify(backend: &str, e: &ureq::Error) -> ApiError {
    warn!("backend={backend:?} request failed: {e}");
    match reason(e) {
        Reason::Timeout => ApiError::gateway_timeout(backend),
        Reason::Failed(what) => ApiError::bad_gateway(backend, what),
    }
}

/// Why a request to a backend failed, in words fit for a user: no URL, no key.
pub enum Reason {
    Timeout,
    Failed(&'static str),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Timeout => "timed out",
            Reason::Failed(what) => what,
        })
    }
}

/// std reports resolver failures as an uncategorised io::Error: on Unix with the text below,
/// on Windows with WSAHOST_NOT_FOUND (11001) or WSANO_DATA (11004).
fn is_host_not_found(io: &io::Error) -> bool {
    io.to_string().contains("lookup address")
        || (cfg!(windows) && matches!(io.raw_os_error(), Some(11001 | 11004)))
}

/// The one wording of a backend failure, for the proxy's errors and `doctor` alike.
pub fn reason(e: &ureq::Error) -> Reason {
    let failed = Reason::Failed;
    match e {
        ureq::Error::Timeout(_) => Reason::Timeout,
        ureq::Error::Io(io) if is_timeout(io) => Reason::Timeout,
        ureq::Error::HostNotFound => failed("host name not found"),
        ureq::Error::ConnectionFailed => failed("connection refused"),
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            failed("connection refused")
        }
        ureq::Error::Io(io) if is_host_not_found(io) => failed("host name not found"),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => failed("TLS handshake failed"),
        // rustls errors during the handshake arrive wrapped in io::Error.
        ureq::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
        {
            failed("TLS handshake failed (is its certificate trusted? see ca_file)")
        }
        ureq::Error::Protocol(_) => failed("invalid HTTP response"),
        _ => failed("connection failed"),
    }
}

/// A failure while reading a backend's body, as the client sees it.
pub fn classify_read(backend: &str, e: &io::Error) -> ApiError {
    warn!("backend={backend:?} response body failed: {e}");
    if is_timeout(e) {
        ApiError::gateway_timeout(backend)
    } else {
        ApiError::bad_gateway(backend, "connection lost during the response")
    }
}

fn is_timeout(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        return true;
    }
    // ureq wraps its own errors, a timeout among them, in io::Error for Read.
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_allow_list_and_x_headers_only() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer k"),
            ("accept", "text/event-stream"),
            ("accept-encoding", "gzip"),
            ("openai-organization", "org"),
            ("x-stainless-lang", "python"),
            ("x-drop-me", "1"),
            ("connection", "keep-alive, x-drop-me"),
            ("cookie", "a=b"),
            ("host", "api.openai.com"),
            ("content-length", "5"),
            ("content-type", "text/plain"),
            ("te", "trailers"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let mut names: Vec<&str> = forwardable(&h).map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "openai-organization",
                "x-stainless-lang"
            ]
        );
    }

    #[test]
    fn returns_useful_response_headers() {
        for n in [
            "x-request-id",
            "openai-processing-ms",
            "x-ratelimit-remaining-tokens",
            "retry-after",
        ] {
            assert!(is_returned_header(&HeaderName::from_static(n)), "{n}");
        }
        for n in [
            "set-cookie",
            "server",
            "content-length",
            "transfer-encoding",
            "connection",
        ] {
            assert!(!is_returned_header(&HeaderName::from_static(n)), "{n}");
        }
    }
}
