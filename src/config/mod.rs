//! The configuration file: its YAML format, and the validated [`Config`] built from it.
//!
//! The format is a superset of the Python Trae-Proxy's `config.yaml`, so an existing file works
//! unchanged. Parsing happens in two steps: serde reads the raw shape (every field optional where
//! the original allowed it), then [`Config::from_yaml`] checks each entry and collects *all* problems,
//! each naming the entry and field, instead of stopping at the first. A `Config` that exists is valid.

pub mod edit;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;

/// Where to listen when the file names no `server.bind`: every IPv4 interface, like the original.
const DEFAULT_BIND: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
const DEFAULT_PORT: u16 = 443;
const DEFAULT_DOMAIN: &str = "api.openai.com";
const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// Enough for a team box's idle keep-alive connections and a thousand streams; idle ones are
/// closed first when it runs short.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Bodies and their rewritten copies held in memory at once: 16 uploads of 30 MB must not run a
/// 1 GiB Raspberry Pi out of memory.
const DEFAULT_MAX_BUFFERED_BODY_BYTES: u64 = 128 * 1024 * 1024;
/// A body slower than this on average (after its first 10 s) is a slow-body attack, not a
/// client on a slow link: 1 KiB/s is a 56k modem.
const DEFAULT_MIN_BODY_RATE: u64 = 1024;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host name the proxy impersonates; the leaf certificate is issued for it.
    pub domain: String,
    /// More names the certificate covers and the proxy answers for (`domains:`).
    pub extra_domains: Vec<String>,
    /// `access_keys:`: when not empty, every request must carry one of them as a Bearer token.
    pub access_keys: Vec<Secret>,
    /// Every entry of `apis`, active or not, in file order.
    pub backends: Vec<Backend>,
    pub server: Server,
    /// Folder of `ca.crt`, `ca.key`, `<domain>.crt`, `<domain>.key`; relative paths in the file
    /// are resolved against the config file's folder.
    pub cert_dir: PathBuf,
}

/// One `apis` entry.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Used in logs and in errors shown to clients: never the URL, never a key.
    pub name: String,
    /// The endpoint as written, without trailing slashes.
    pub endpoint: String,
    /// The model id clients ask for; [`CATCH_ALL`] serves every id no other entry has.
    pub custom_model_id: String,
    pub target: TargetModel,
    pub stream_mode: StreamMode,
    pub active: bool,
    /// Share of a pool's requests (smooth weighted round-robin). Defaults to 1.
    pub weight: u32,
    /// Requests this backend serves at once; beyond, another pool member or a quick 503.
    /// Defaults (`None`) to half of `server.workers`.
    pub max_in_flight: Option<usize>,
    /// Sent upstream as `Authorization: Bearer ...` instead of the client's key.
    pub api_key: Option<Secret>,
    /// Extra headers for every request to this backend (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Overrides of the `server` timeouts for this backend.
    pub timeouts: BackendTimeouts,
    /// Upstream proxy URL (http, https, socks4, socks4a, socks5).
    pub proxy: Option<String>,
    /// Extra trusted roots for this backend (`ca_file`), besides the public ones.
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Whether this backend is a thinking model that needs `reasoning_content` back in
    /// tool-call turns (`reasoning_replay`). Defaults to [`ReasoningReplay::Auto`].
    pub reasoning_replay: ReasoningReplay,
    /// What a known thinking backend gets for a tool-call turn whose reasoning is not
    /// remembered. Defaults to [`ReasoningFallback::Empty`].
    pub reasoning_fallback: ReasoningFallback,
    /// `quirks: [null_content_with_tool_calls]`: send `content: null`, not `""`, beside tool
    /// calls in history (Kimi rejects `""`).
    pub null_content_with_tool_calls: bool,
}

/// `reasoning_replay`: whether a backend must get `reasoning_content` back in the assistant
/// tool-call turns of a history. A field a backend did not produce is sent only to a backend
/// known to need it: strict ones (Mistral, Cerebras, older vLLM) reject unknown fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningReplay {
    /// Learned at run time (the default): the backend's own reasoning is replayed to it; the
    /// fallback applies once it is known to think (it returned `reasoning_content` beside tool
    /// calls, or answered an error naming the field for a turn without it).
    Auto,
    /// `true`: known to think; replay and fallback from the first request.
    On,
    /// `false`: histories are sent as the client wrote them.
    Off,
}

/// What to do with a tool-call turn whose reasoning is not remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningFallback {
    /// Insert `reasoning_content: ""` (the default).
    Empty,
    /// Drop that turn's tool calls and the tool results answering them.
    Strip,
    /// Send the turn as the client did.
    Keep,
}

/// `custom_model_id` of the catch-all entry.
pub const CATCH_ALL: &str = "*";

/// What model the backend is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModel {
    Fixed(String),
    /// `target_model_id` empty or `"*"`: the client's model id, unchanged.
    Passthrough,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct BackendTimeouts {
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub read: Option<Duration>,
}

impl BackendTimeouts {
    pub fn is_default(&self) -> bool {
        self.connect.is_none() && self.first_byte.is_none() && self.read.is_none()
    }
}

/// A key or token from the config. Its `Debug` never shows it, so no log line or error can.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    #[cfg(test)]
    pub fn from_config(value: &str) -> Self {
        Secret(value.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the proxy asks upstream for, whatever the client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// `stream_mode: null`: keep the client's choice.
    Client,
    /// `stream_mode: true`: always stream from upstream.
    ForceStream,
    /// `stream_mode: false`: never stream from upstream.
    ForceNonStream,
}

/// The `server` section.
#[derive(Debug, Clone)]
pub struct Server {
    pub bind: IpAddr,
    pub port: u16,
    /// `server.debug`: log at debug level (requests in detail, never headers or keys).
    pub debug: bool,
    /// Requests served at once: worker threads are started on demand up to this many and end
    /// after a few idle seconds. Defaults to 2048: a request holds its thread while it waits on
    /// the backend and for its whole stream, and a thread costs a few tens of KiB (see
    /// docs/performance.md); an idle pool costs nothing.
    pub workers: usize,
    /// Largest request body accepted. Defaults to 32 MiB.
    pub max_body_bytes: u64,
    /// Request bodies (and their rewritten copies) held in memory at once; more is refused with
    /// 503. Defaults to 128 MiB.
    pub max_buffered_body_bytes: u64,
    /// Bytes per second a request body must average after its first 10 s, or 408. Defaults to
    /// 1024; 0 turns the check off.
    pub min_body_rate: u64,
    /// Open client connections at once (idle ones included). Defaults to 4096.
    pub max_connections: usize,
    /// Open connections of one client address (IPv6: one /64). Defaults to half of
    /// `max_connections`.
    pub max_connections_per_client: usize,
    /// Requests in flight of one client address. Defaults to half of `workers`.
    pub max_requests_per_client: usize,
    pub timeouts: Timeouts,
    pub health: Health,
    /// How long a stop signal waits for requests in flight. Defaults to 30 s.
    pub shutdown_timeout: Duration,
    /// `server.admin_bind`: where `/healthz` and `/metrics` are served (plain HTTP), if anywhere.
    pub admin_bind: Option<std::net::SocketAddr>,
    /// How often the running proxy checks whether its certificate needs renewing. Defaults to
    /// one day.
    pub cert_check_interval: Duration,
    /// `server.http_bind`: a plain-HTTP listener for clients with a base-URL setting. Off by default.
    pub http_bind: Option<std::net::SocketAddr>,
    /// `server.strip_model_prefixes`: prefixes removed from a requested model id before routing
    /// (some clients send `custom_openai_compatible//<id>`).
    pub strip_model_prefixes: Vec<String>,
    /// `server.tunnel`: who may `CONNECT` to hosts other than ours. Defaults to `local`.
    pub tunnel: TunnelPolicy,
    /// `server.tunnel_allow`: loopback, private and link-local networks a tunnel may reach
    /// (public addresses need no entry). Defaults to none.
    pub tunnel_allow: Vec<crate::cidr::Cidr>,
    /// `server.tunnel_ports`: ports a tunnel may reach; empty means any. Defaults to 443.
    pub tunnel_ports: Vec<u16>,
}

/// `server.tunnel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelPolicy {
    Allow,
    Deny,
    /// Clients on loopback or the LAN only.
    Local,
}

/// Failover and passive health of backend pools.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    /// Backends tried for one request at most (each at most once). Defaults to 3.
    pub max_attempts: usize,
    /// Consecutive failures after which a backend cools down. Defaults to 1: a pool has others.
    pub failures_before_cooldown: u32,
    /// First cool-down; doubled on each further failure. Defaults to 10 s.
    pub cooldown: Duration,
    /// Longest cool-down. Defaults to 300 s.
    pub max_cooldown: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            max_attempts: 3,
            failures_before_cooldown: 1,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// Every timeout, in the file as whole seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TLS handshake plus the complete request head, from accept. Defaults to 10 s: enough for a
    /// slow network, short enough that a client sending a byte a second cannot hold a slot.
    pub request_head: Duration,
    /// A keep-alive connection with no request in flight. Defaults to 75 s.
    pub idle: Duration,
    /// A whole request body, from its head. Defaults to 120 s.
    pub request_body: Duration,
    /// Each write to the client: a client that takes nothing for this long is cut off (the
    /// write-progress deadline). Defaults to 60 s.
    pub client_io: Duration,
    /// TCP + TLS connect to a backend. Defaults to 10 s.
    pub connect: Duration,
    /// From the request sent to the backend's response head. Defaults to 300 s: reasoning models
    /// can think for minutes before their first byte when not streaming.
    pub first_byte: Duration,
    /// Longest silence while reading a backend's body. Defaults to 300 s, for the same reason.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_head: Duration::from_secs(10),
            idle: Duration::from_secs(75),
            request_body: Duration::from_secs(120),
            client_io: Duration::from_secs(60),
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(300),
            read: Duration::from_secs(300),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`; relative paths inside it are resolved against
    /// its folder.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Config::from_yaml(&text, base).map_err(|problems| Error::ConfigInvalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses and validates YAML text. `base_dir` anchors relative paths. On failure returns
    /// every problem found, each naming where it is.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Config, Vec<String>> {
        let raw: RawConfig = serde_norway::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();

        let domain = raw.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_owned());
        if let Err(why) = check_domain(&domain) {
            problems.push(format!("domain: {why}"));
        }

        let mut extra_domains = Vec::new();
        for (i, d) in raw.domains.unwrap_or_default().into_iter().enumerate() {
            let d = d.trim().to_ascii_lowercase();
            match check_domain(&d) {
                Err(why) => problems.push(format!("domains[{i}]: {why}")),
                Ok(()) if d == domain || extra_domains.contains(&d) => {
                    problems.push(format!("domains[{i}]: {d:?} is listed twice"));
                }
                Ok(()) => extra_domains.push(d),
            }
        }
        let mut access_keys = Vec::new();
        for (i, k) in raw.access_keys.unwrap_or_default().into_iter().enumerate() {
            if k.trim().is_empty() {
                problems.push(format!("access_keys[{i}]: must not be empty"));
            } else {
                access_keys.push(Secret(k.trim().to_owned()));
            }
        }

        // Names are compared before each entry is checked, so a duplicate is reported even
        // when one of the two has other problems.
        let names: Vec<String> = raw.apis.iter().map(|a| a.name.trim().to_owned()).collect();
        let mut backends = Vec::with_capacity(raw.apis.len());
        for (i, api) in raw.apis.into_iter().enumerate() {
            if names[..i].contains(&names[i]) {
                problems.push(format!("apis[{i}]: name {:?} is used twice", names[i]));
            }
            match Backend::from_raw(api, base_dir) {
                Ok(b) => backends.push(b),
                Err(errs) => problems.extend(errs.into_iter().map(|e| format!("apis[{i}]: {e}"))),
            }
        }

        let server = Server::from_raw(&raw.server, &mut problems);
        let cert_dir = base_dir.join(raw.server.cert_dir.as_deref().unwrap_or("ca"));

        if problems.is_empty() {
            Ok(Config {
                domain,
                extra_domains,
                access_keys,
                backends,
                server,
                cert_dir,
            })
        } else {
            Err(problems)
        }
    }

    /// The active entries, in file order.
    pub fn active_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends.iter().filter(|b| b.active)
    }

    /// Settings that work but are probably not what the operator wants: `serve` logs them at
    /// start and on reload, `check` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let injects_keys = self.active_backends().any(|b| b.api_key.is_some());
        if injects_keys && self.access_keys.is_empty() && !self.server.bind.is_loopback() {
            warnings.push(format!(
                "OPEN RELAY: backends add their own API keys, no access_keys are set, and the \
                 proxy listens on {}: anyone who can reach it spends your keys. Set access_keys, \
                 or server.bind: 127.0.0.1",
                self.server.bind
            ));
        }
        if let Some(addr) = self.server.http_bind {
            if self.access_keys.is_empty() && !addr.ip().is_loopback() {
                warnings.push(format!(
                    "the plain-HTTP listener {addr} is reachable from the network without \
                     access_keys: anyone there can use it, and keys sent to it travel \
                     unencrypted. Set access_keys, or bind it to 127.0.0.1"
                ));
            }
        }
        if self.active_backends().next().is_none() {
            warnings.push(
                "no active entry in apis: every model request will be answered 404".to_owned(),
            );
        }
        warnings
    }
}

impl Backend {
    fn from_raw(raw: RawApi, base_dir: &Path) -> Result<Backend, Vec<String>> {
        let mut errs = Vec::new();
        let name = raw.name.trim().to_owned();
        if name.is_empty() {
            errs.push("name: must not be empty".to_owned());
        }
        let endpoint = raw.endpoint.trim().trim_end_matches('/').to_owned();
        if let Err(why) = check_endpoint(&endpoint) {
            errs.push(format!("endpoint: {why}"));
        }
        let custom_model_id = raw.custom_model_id.trim().to_owned();
        if custom_model_id.is_empty() {
            errs.push("custom_model_id: must not be empty".to_owned());
        }
        let target = match raw.target_model_id.as_deref().map(str::trim) {
            None | Some("") | Some(CATCH_ALL) => TargetModel::Passthrough,
            Some(t) => TargetModel::Fixed(t.to_owned()),
        };
        let stream_mode = match raw.stream_mode.as_ref().map(LenientBool::parse) {
            None | Some(Ok(None)) => StreamMode::Client,
            Some(Ok(Some(true))) => StreamMode::ForceStream,
            Some(Ok(Some(false))) => StreamMode::ForceNonStream,
            Some(Err(why)) => {
                errs.push(format!("stream_mode: {why}"));
                StreamMode::Client
            }
        };
        let active = flag(raw.active.as_ref(), true, "active", &mut errs);
        let weight = raw.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            errs.push(format!("weight: expected 1 to 1000, got {weight}"));
        }
        if raw.max_in_flight == Some(0) {
            errs.push("max_in_flight: must be at least 1".to_owned());
        }
        let api_key = match (raw.api_key, raw.api_key_env) {
            (Some(_), Some(_)) => {
                errs.push("api_key and api_key_env: set one, not both".to_owned());
                None
            }
            (Some(k), None) if k.trim().is_empty() => {
                errs.push("api_key: must not be empty".to_owned());
                None
            }
            (Some(k), None) => Some(Secret(k.trim().to_owned())),
            (None, Some(var)) => match std::env::var(var.trim()) {
                Ok(k) if !k.trim().is_empty() => Some(Secret(k.trim().to_owned())),
                _ => {
                    errs.push(format!(
                        "api_key_env: environment variable {:?} is not set or empty",
                        var.trim()
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        let mut headers = Vec::new();
        for (k, v) in raw.headers.unwrap_or_default() {
            match parse_header(&k, &v) {
                Ok(h) => headers.push(h),
                Err(why) => errs.push(format!("headers.{k}: {why}")),
            }
        }
        let timeouts = match raw.timeout {
            None => BackendTimeouts::default(),
            Some(t) => {
                let mut secs = |field: &str, v: Option<u64>| match v {
                    Some(0) => {
                        errs.push(format!("timeout.{field}: must be at least 1 second"));
                        None
                    }
                    other => other.map(Duration::from_secs),
                };
                BackendTimeouts {
                    connect: secs("connect", t.connect),
                    first_byte: secs("first_byte", t.first_byte),
                    read: secs("read", t.read),
                }
            }
        };
        let proxy = raw.proxy.map(|p| p.trim().to_owned());
        if let Some(p) = &proxy {
            if let Err(why) = check_proxy(p) {
                errs.push(format!("proxy: {why}"));
            }
        }
        let mut ca_certs = Vec::new();
        if let Some(file) = raw.ca_file {
            match load_ca_file(&base_dir.join(file.trim())) {
                Ok(certs) => ca_certs = certs,
                Err(why) => errs.push(format!("ca_file: {why}")),
            }
        }
        let reasoning_replay = match raw.reasoning_replay.as_ref() {
            None => ReasoningReplay::Auto,
            Some(LenientBool::Text(t)) if t.trim().eq_ignore_ascii_case("auto") => {
                ReasoningReplay::Auto
            }
            Some(value) => match value.parse() {
                Ok(None) => ReasoningReplay::Auto,
                Ok(Some(true)) => ReasoningReplay::On,
                Ok(Some(false)) => ReasoningReplay::Off,
                Err(_) => {
                    errs.push(format!(
                        "reasoning_replay: expected auto, true or false, got {}",
                        value.describe()
                    ));
                    ReasoningReplay::Auto
                }
            },
        };
        let reasoning_fallback = match raw.reasoning_fallback.as_deref().map(str::trim) {
            None | Some("empty") => ReasoningFallback::Empty,
            Some("strip") => ReasoningFallback::Strip,
            Some("keep") => ReasoningFallback::Keep,
            Some(other) => {
                errs.push(format!(
                    "reasoning_fallback: expected empty, strip or keep, got {other:?}"
                ));
                ReasoningFallback::Empty
            }
        };
        let mut null_content_with_tool_calls = false;
        for quirk in raw.quirks.unwrap_or_default() {
            match quirk.trim() {
                "null_content_with_tool_calls" => null_content_with_tool_calls = true,
                other => errs.push(format!(
                    "quirks: unknown quirk {other:?} (known: null_content_with_tool_calls)"
                )),
            }
        }
        if !errs.is_empty() {
            return Err(errs
                .into_iter()
                .map(|e| format!("(name {name:?}) {e}"))
                .collect());
        }
        Ok(Backend {
            name,
            endpoint,
            custom_model_id,
            target,
            stream_mode,
            active,
            weight,
            max_in_flight: raw.max_in_flight,
            api_key,
            headers,
            timeouts,
            proxy,
            ca_certs,
            reasoning_replay,
            reasoning_fallback,
            null_content_with_tool_calls,
        })
    }

    /// The model id to send this backend for a client's `requested` id.
    pub fn target_for<'a>(&'a self, requested: &'a str) -> &'a str {
        match &self.target {
            TargetModel::Fixed(t) => t,
            TargetModel::Passthrough => requested,
        }
    }

    /// The backend URL for an OpenAI API path such as `/chat/completions`: `endpoint` + `/v1` +
    /// path, without doubling a `/v1` the endpoint already ends in.
    pub fn url_for(&self, api_path: &str) -> String {
        if self.endpoint.ends_with("/v1") {
            format!("{}{api_path}", self.endpoint)
        } else {
            format!("{}/v1{api_path}", self.endpoint)
        }
    }
}

impl Server {
    fn from_raw(raw: &RawServer, problems: &mut Vec<String>) -> Server {
        let bind = match raw.bind.as_deref() {
            None => DEFAULT_BIND,
            Some(text) => text.trim().parse().unwrap_or_else(|_| {
                problems.push(format!(
                    "server.bind: expected an IP address such as 0.0.0.0, 127.0.0.1 or ::, got {text:?}"
                ));
                DEFAULT_BIND
            }),
        };
        let debug = flag(raw.debug.as_ref(), false, "server.debug", problems);
        let workers = raw.workers.unwrap_or(DEFAULT_WORKERS);
        if workers == 0 || workers > MAX_WORKERS {
            problems.push(format!(
                "server.workers: expected 1 to {MAX_WORKERS}, got {workers}"
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            problems.push("server.max_connections: must be at least 1".to_owned());
        }
        let at_least_one =
            |field: &str, value: Option<usize>, default: usize, problems: &mut Vec<String>| {
                match value {
                    Some(0) => {
                        problems.push(format!("server.{field}: must be at least 1"));
                        default
                    }
                    Some(n) => n,
                    None => default,
                }
            };
        let max_connections_per_client = at_least_one(
            "max_connections_per_client",
            raw.max_connections_per_client,
            (max_connections / 2).max(1),
            problems,
        );
        let max_requests_per_client = at_least_one(
            "max_requests_per_client",
            raw.max_requests_per_client,
            (workers / 2).max(1),
            problems,
        );
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            problems.push("server.max_body_bytes: must be at least 1".to_owned());
        }
        let max_buffered_body_bytes = raw
            .max_buffered_body_bytes
            .unwrap_or(DEFAULT_MAX_BUFFERED_BODY_BYTES);
        if max_buffered_body_bytes < max_body_bytes.saturating_mul(2) {
            problems.push(format!(
                "server.max_buffered_body_bytes: must hold at least one largest body twice \
                 (2 x server.max_body_bytes = {}), got {max_buffered_body_bytes}",
                max_body_bytes.saturating_mul(2)
            ));
        }
        let min_body_rate = raw.min_request_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE);

        let defaults = Timeouts::default();
        let mut secs = |field: &str, value: Option<u64>, default: Duration| match value {
            None => default,
            Some(0) => {
                problems.push(format!("server.{field}: must be at least 1 second"));
                default
            }
            Some(s) => Duration::from_secs(s),
        };
        let timeouts = Timeouts {
            request_head: secs(
                "request_head_timeout",
                raw.request_head_timeout,
                defaults.request_head,
            ),
            idle: secs("idle_timeout", raw.idle_timeout, defaults.idle),
            request_body: secs(
                "request_body_timeout",
                raw.request_body_timeout,
                defaults.request_body,
            ),
            client_io: secs(
                "client_io_timeout",
                raw.client_io_timeout,
                defaults.client_io,
            ),
            connect: secs("connect_timeout", raw.connect_timeout, defaults.connect),
            first_byte: secs(
                "first_byte_timeout",
                raw.first_byte_timeout,
                defaults.first_byte,
            ),
            read: secs("read_timeout", raw.read_timeout, defaults.read),
        };
        let health_defaults = Health::default();
        let cooldown = secs("cooldown", raw.cooldown, health_defaults.cooldown);
        let max_cooldown = secs(
            "max_cooldown",
            raw.max_cooldown,
            health_defaults.max_cooldown,
        );
        let shutdown_timeout = secs(
            "shutdown_timeout",
            raw.shutdown_timeout,
            Duration::from_secs(30),
        );
        let cert_check_interval = secs(
            "cert_check_interval",
            raw.cert_check_interval,
            Duration::from_secs(24 * 3600),
        );

        let http_bind = socket_addr(
            raw.http_bind.as_deref(),
            "server.http_bind",
            "0.0.0.0:8080",
            problems,
        );
        let strip_model_prefixes: Vec<String> = raw
            .strip_model_prefixes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        let tunnel = match raw.tunnel.as_deref().map(str::trim) {
            None | Some("local") => TunnelPolicy::Local,
            Some("allow") => TunnelPolicy::Allow,
            Some("deny") => TunnelPolicy::Deny,
            Some(other) => {
                problems.push(format!(
                    "server.tunnel: expected allow, deny or local, got {other:?}"
                ));
                TunnelPolicy::Local
            }
        };
        let mut tunnel_allow = Vec::new();
        for (i, entry) in raw.tunnel_allow.iter().flatten().enumerate() {
            match crate::cidr::Cidr::parse(entry) {
                Ok(cidr) => tunnel_allow.push(cidr),
                Err(why) => problems.push(format!("server.tunnel_allow[{i}]: {why}")),
            }
        }
        let tunnel_ports = raw.tunnel_ports.clone().unwrap_or_else(|| vec![443]);
        if tunnel_ports.contains(&0) {
            problems.push("server.tunnel_ports: 0 is not a port".to_owned());
        }
        let admin_bind = socket_addr(
            raw.admin_bind.as_deref(),
            "server.admin_bind",
            "127.0.0.1:9090",
            problems,
        );
        let max_attempts = raw.max_attempts.unwrap_or(health_defaults.max_attempts);
        if !(1..=10).contains(&max_attempts) {
            problems.push(format!(
                "server.max_attempts: expected 1 to 10, got {max_attempts}"
            ));
        }
        let failures_before_cooldown = raw
            .failures_before_cooldown
            .unwrap_or(health_defaults.failures_before_cooldown);
        if failures_before_cooldown == 0 {
            problems.push("server.failures_before_cooldown: must be at least 1".to_owned());
        }
        let health = Health {
            max_attempts,
            failures_before_cooldown,
            cooldown,
            max_cooldown,
        };

        Server {
            bind,
            port: raw.port.unwrap_or(DEFAULT_PORT),
            debug,
            workers,
            max_body_bytes,
            max_buffered_body_bytes,
            min_body_rate,
            max_connections,
            max_connections_per_client,
            max_requests_per_client,
            timeouts,
            health,
            shutdown_timeout,
            admin_bind,
            cert_check_interval,
            http_bind,
            strip_model_prefixes,
            tunnel,
            tunnel_allow,
            tunnel_ports,
        }
    }
}

const DEFAULT_WORKERS: usize = 2048;
const MAX_WORKERS: usize = 65536;

fn check_domain(domain: &str) -> Result<(), String> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected a host name such as api.openai.com, got {domain:?}"
        ))
    }
}

/// A URL for messages: the user-info part (`user:password@`) replaced by `***`, so that no
/// message, log line or listing shows a credential written into an endpoint.
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        None => std::borrow::Cow::Borrowed(url),
        Some(at) => {
            let host = &rest[at + 1..];
            std::borrow::Cow::Owned(match scheme {
                Some(scheme) => format!("{scheme}://***@{host}"),
                None => format!("***@{host}"),
            })
        }
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let shown = redact_url(endpoint);
    let endpoint = endpoint.trim();
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("expected a URL such as https://api.deepseek.com, got {shown:?}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "expected an http:// or https:// URL, got {shown:?}"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("URL has no host: {shown:?}"));
    }
    if uri.query().is_some() {
        return Err(format!("URL must not have a query string: {shown:?}"));
    }
    Ok(())
}

/// An optional `address:port` field; a bad value is reported under `field` with an example.
fn socket_addr(
    raw: Option<&str>,
    field: &str,
    example: &str,
    problems: &mut Vec<String>,
) -> Option<std::net::SocketAddr> {
    let text = raw?;
    match text.trim().parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!(
                "{field}: expected an address with port such as {example}, got {text:?}"
            ));
            None
        }
    }
}

/// A true/false field (YAML boolean or the original's quoted string); unset or "null" means
/// `default`. A bad value is reported under `field`.
fn flag(raw: Option<&LenientBool>, default: bool, field: &str, problems: &mut Vec<String>) -> bool {
    match raw.map(LenientBool::parse) {
        None | Some(Ok(None)) => default,
        Some(Ok(Some(v))) => v,
        Some(Err(why)) => {
            problems.push(format!("{field}: {why}"));
            default
        }
    }
}

/// Headers a backend entry may not set: ours to manage, or the key (use `api_key`).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

fn parse_header(name: &str, value: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| "not a valid header name".to_owned())?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err("set by the proxy (use api_key for authorization)".to_owned());
    }
    let value = http::HeaderValue::from_str(value.trim())
        .map_err(|_| "value has characters a header cannot carry".to_owned())?;
    Ok((name, value))
}

fn check_proxy(url: &str) -> Result<(), String> {
    // The URL may carry credentials: name only its scheme in errors.
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https" | "socks4" | "socks4a" | "socks5" | "socks") => {}
        _ => {
            return Err(
                "expected a URL with scheme http, https, socks4, socks4a or socks5".to_owned(),
            );
        }
    }
    ureq::Proxy::new(url)
        .map(|_| ())
        .map_err(|_| "not a valid proxy URL".to_owned())
}

fn load_ca_file(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block found", path.display()));
    }
    Ok(certs)
}

// ---------------------------------------------------------------------------------------------
// The file's raw shape.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    domain: Option<String>,
    domains: Option<Vec<String>>,
    access_keys: Option<Vec<String>>,
    #[serde(default)]
    apis: Vec<RawApi>,
    #[serde(default)]
    server: RawServer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    name: String,
    endpoint: String,
    custom_model_id: String,
    #[serde(default)]
    target_model_id: Option<String>,
    #[serde(default)]
    stream_mode: Option<LenientBool>,
    #[serde(default)]
    active: Option<LenientBool>,
    weight: Option<u32>,
    max_in_flight: Option<usize>,
    api_key: Option<String>,
    api_key_env: Option<String>,
    headers: Option<std::collections::BTreeMap<String, String>>,
    timeout: Option<RawBackendTimeouts>,
    proxy: Option<String>,
    ca_file: Option<String>,
    reasoning_replay: Option<LenientBool>,
    reasoning_fallback: Option<String>,
    quirks: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendTimeouts {
    connect: Option<u64>,
    first_byte: Option<u64>,
    read: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    port: Option<u16>,
    debug: Option<LenientBool>,
    bind: Option<String>,
    workers: Option<usize>,
    max_body_bytes: Option<u64>,
    max_buffered_body_bytes: Option<u64>,
    min_request_body_rate: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    max_requests_per_client: Option<usize>,
    cert_dir: Option<String>,
    request_head_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    request_body_timeout: Option<u64>,
    client_io_timeout: Option<u64>,
    connect_timeout: Option<u64>,
    first_byte_timeout: Option<u64>,
    read_timeout: Option<u64>,
    max_attempts: Option<usize>,
    failures_before_cooldown: Option<u32>,
    cooldown: Option<u64>,
    max_cooldown: Option<u64>,
    shutdown_timeout: Option<u64>,
    admin_bind: Option<String>,
    cert_check_interval: Option<u64>,
    http_bind: Option<String>,
    strip_model_prefixes: Option<Vec<String>>,
    tunnel: Option<String>,
    tunnel_allow: Option<Vec<String>>,
    tunnel_ports: Option<Vec<u16>>,
}

/// A YAML boolean, or the quoted `"true"`/`"false"` strings the original CLI wrote. The original
/// compared strings, so a real YAML `true` silently meant "null" there; here both mean true.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum LenientBool {
    Bool(bool),
    Text(String),
}

impl LenientBool {
    /// The value as written, for an error message.
    fn describe(&self) -> String {
        match self {
            LenientBool::Bool(b) => b.to_string(),
            LenientBool::Text(t) => format!("{t:?}"),
        }
    }

    /// `Ok(None)` stands for "unset" (`"null"`, `"none"`, `""`).
    fn parse(&self) -> Result<Option<bool>, String> {
        match self {
            LenientBool::Bool(b) => Ok(Some(*b)),
            LenientBool::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(Some(true)),
                "false" | "no" | "off" => Ok(Some(false)),
                "" | "null" | "none" | "~" => Ok(None),
                _ => Err(format!("expected true, false or null, got {t:?}")),
            },
        }
    }
}

impl fmt::Display for StreamMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamMode::Client => "null",
            StreamMode::ForceStream => "true",
            StreamMode::ForceNonStream => "false",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const ORIGINAL: &str = r#"
domain: api.openai.com
apis:
  - name: "deepseek-r1"
    endpoint: "https://api.deepseek.com"
    custom_model_id: "deepseek-reasoner"
    target_model_id: "deepseek-reasoner"
    stream_mode: null
    active: true
  - name: "qwen"
    endpoint: "https://dashscope.aliyuncs.com/compatible-mode/"
    custom_model_id: "qwen3-coder-plus"
    target_model_id: "qwen3-coder-plus"
    stream_mode: "false"
    active: false
server:
  port: 443
  debug: true
"#;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::from_yaml(text, Path::new("/etc/trae-proxy"))
    }

    #[test]
    fn original_file_loads_with_quoted_stream_mode() {
        let c = parse(ORIGINAL).unwrap();
        assert_eq!(c.domain, "api.openai.com");
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[0].stream_mode, StreamMode::Client);
        assert_eq!(c.backends[1].stream_mode, StreamMode::ForceNonStream);
        assert!(!c.backends[1].active);
        assert_eq!(c.server.port, 443);
        assert!(c.server.debug);
        assert_eq!(c.cert_dir, Path::new("/etc/trae-proxy/ca"));
        assert_eq!(c.active_backends().count(), 1);
    }

    #[test]
    fn yaml_booleans_mean_what_they_say() {
        let text = ORIGINAL.replace("stream_mode: \"false\"", "stream_mode: true");
        assert_eq!(
            parse(&text).unwrap().backends[1].stream_mode,
            StreamMode::ForceStream
        );
        let text = ORIGINAL.replace("stream_mode: \"false\"", "stream_mode: \"True\"");
        assert_eq!(
            parse(&text).unwrap().backends[1].stream_mode,
            StreamMode::ForceStream
        );
    }

    #[test]
    fn upstream_url_appends_v1_once() {
        let c = parse(ORIGINAL).unwrap();
        assert_eq!(
            c.backends[0].url_for("/chat/completions"),
            "https://api.deepseek.com/v1/chat/completions"
        );
        assert_eq!(
            c.backends[1].url_for("/chat/completions"),
            "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions"
        );
        let text = ORIGINAL.replace("https://api.deepseek.com", "http://127.0.0.1:8000/v1/");
        assert_eq!(
            parse(&text).unwrap().backends[0].url_for("/chat/completions"),
            "http://127.0.0.1:8000/v1/chat/completions"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = ORIGINAL
            .replace("https://api.deepseek.com", "ftp://x")
            .replace(
                "custom_model_id: \"qwen3-coder-plus\"",
                "custom_model_id: \"\"",
            )
            .replace("port: 443", "port: 443\n  bind: nowhere");
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("apis[0]: (name \"deepseek-r1\") endpoint:"));
        assert!(problems[1].starts_with("apis[1]: (name \"qwen\") custom_model_id:"));
        assert!(problems[2].starts_with("server.bind:"));
    }

    #[test]
    fn unknown_fields_and_bad_types_name_the_place() {
        let err = parse("domain: x.y\nserver:\n  prot: 1\n").unwrap_err();
        assert!(err[0].contains("prot"), "{err:?}");
        let err = parse("server:\n  port: 70000\n").unwrap_err();
        assert!(err[0].contains("port"), "{err:?}");
        let err = parse(&ORIGINAL.replace("stream_mode: null", "stream_mode: maybe")).unwrap_err();
        assert!(
            err[0].contains("stream_mode: expected true, false or null"),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let text = ORIGINAL.replace("name: \"qwen\"", "name: \"deepseek-r1\"");
        let err = parse(&text).unwrap_err();
        assert!(err[0].contains("used twice"), "{err:?}");
    }

    #[test]
    fn backend_extras_are_validated_with_their_place() {
        let text = r#"
domains: [api.openai.com, "bad domain"]
access_keys: [""]
apis:
  - name: a
    endpoint: "https://a.example"
    custom_model_id: m
    target_model_id: t
    weight: 0
    api_key: k
    api_key_env: K
    headers: {Authorization: x, "Bad Header": y}
    proxy: "ftp://p:1"
    ca_file: no-such-file.pem
    timeout: {first_byte: 0}
  - name: b
    endpoint: "https://b.example"
    custom_model_id: m
    api_key_env: TRAE_PROXY_SURELY_UNSET_VAR
"#;
        let problems = parse(text).unwrap_err().join("\n");
        for needle in [
            "domains[0]: \"api.openai.com\" is listed twice",
            "domains[1]",
            "access_keys[0]: must not be empty",
            "weight: expected 1 to 1000",
            "api_key and api_key_env: set one, not both",
            "headers.Authorization: set by the proxy",
            "headers.Bad Header: not a valid header name",
            "proxy: expected a URL with scheme",
            "ca_file: /etc/trae-proxy/no-such-file.pem",
            "timeout.first_byte: must be at least 1 second",
            "apis[1]: (name \"b\") api_key_env: environment variable \"TRAE_PROXY_SURELY_UNSET_VAR\" is not set",
        ] {
            assert!(
                problems.contains(needle),
                "missing {needle:?} in:\n{problems}"
            );
        }
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(redact_url("https://u:p@host/v1"), "https://***@host/v1");
        assert_eq!(redact_url("htp://u:p@host"), "htp://***@host");
        assert_eq!(
            redact_url("https://host/a@b"),
            "https://host/a@b",
            "an @ in the path"
        );
        assert_eq!(
            redact_url("https://api.deepseek.com"),
            "https://api.deepseek.com"
        );
        assert_eq!(redact_url("user:pw@host:1"), "***@host:1");
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let text = ORIGINAL.replace(
            "target_model_id: \"deepseek-reasoner\"",
            "target_model_id: \"\"\n    api_key: sk-very-secret",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.backends[0].target, TargetModel::Passthrough);
        assert_eq!(
            config.backends[0].api_key.as_ref().unwrap().expose(),
            "sk-very-secret"
        );
        assert!(!format!("{config:?}").contains("sk-very-secret"));
    }
}

/// Property tests: no file, however broken, makes the loader panic; it answers with problems.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_is_an_error_or_a_config(text in "\\PC{0,300}") {
            let _ = Config::from_yaml(&text, Path::new("."));
        }

        #[test]
        fn mutated_valid_files_are_an_error_or_a_config(
            cut in 0usize..700,
            insert in "[ -~\n]{0,12}",
        ) {
            let base = tests::ORIGINAL;
            let at = base.char_indices().map(|(i, _)| i).nth(cut % base.chars().count()).unwrap_or(0);
            let text = format!("{}{insert}{}", &base[..at], &base[at..]);
            if let Err(problems) = Config::from_yaml(&text, Path::new(".")) {
                prop_assert!(!problems.is_empty());
            }
        }
    }
}
