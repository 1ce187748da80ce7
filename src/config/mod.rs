//! The configuration: the validated model every other part reads ([`Config`]). The file's
//! format is a superset of the Python Trae-Proxy's `config.yaml`, so an existing file works
//! unchanged. Loading happens in two steps: serde reads the raw shape ([`raw`]), then
//! [`validate`] checks each entry and collects *all* problems, each naming the entry and field,
//! instead of stopping at the first. [`edit`] changes the file in place for the `api` commands.

pub mod edit;
mod raw;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

pub use validate::redact_url;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host name the proxy impersonates; the leaf certificate is issued for it.
    pub domain: String,
    /// More names the certificate covers and the proxy answers for (`domains:`).
    pub extra_domains: Vec<String>,
    /// `access_keys:`: when not empty, every request must carry one of them as a Bearer token.
    pub access_keys: Vec<AccessKey>,
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
    /// A key as written in the file or the environment, surrounding blanks dropped.
    pub fn from_config(value: &str) -> Self {
        Secret(value.trim().to_owned())
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

/// One `access_keys` entry.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub key: Secret,
    /// What usage is counted under: the entry's `name`, or for a plain string `key-` and six
    /// hex digits of the key's SHA-256 (stable, and saying nothing usable about the key).
    pub name: String,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_day: Option<u64>,
}

impl AccessKey {
    pub fn derived_name(key: &Secret) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, key.expose().as_bytes());
        let hex: String = digest.as_ref()[..3]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("key-{hex}")
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
        let raw: raw::RawConfig = serde_norway::from_str(text).map_err(|e| vec![e.to_string()])?;
        validate::config(raw, base_dir)
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
    fn access_keys_are_strings_or_named_entries_with_limits() {
        let text = format!(
            "{ORIGINAL}access_keys:\n  - plain-key-1\n  - key: alice-secret\n    name: alice\n    \
             requests_per_minute: 30\n    tokens_per_day: 100000\n  - {{key: bob-secret}}\n"
        );
        let c = parse(&text).unwrap();
        let keys: Vec<_> = c
            .access_keys
            .iter()
            .map(|k| (k.name.as_str(), k.requests_per_minute, k.tokens_per_day))
            .collect();
        let plain = AccessKey::derived_name(&Secret::from_config("plain-key-1"));
        assert!(plain.starts_with("key-") && plain.len() == 10, "{plain}");
        assert!(!plain.contains("plain"));
        let bob = AccessKey::derived_name(&Secret::from_config("bob-secret"));
        assert_eq!(
            keys,
            [
                (plain.as_str(), None, None),
                ("alice", Some(30), Some(100_000)),
                (bob.as_str(), None, None)
            ]
        );
        let bad = format!(
            "{ORIGINAL}access_keys:\n  - key: same\n    name: same\n  - key: k2\n    rpm: 3\n    \
             tokens_per_day: -1\n  - 12\n  - key: k3\n    name: alice\n  - key: k4\n    name: alice\n"
        );
        let err = parse(&bad).unwrap_err();
        for want in [
            "access_keys[0]: `name` must not be the key itself",
            "access_keys[1]: unknown field",
            "access_keys[1]: `tokens_per_day` must be a whole number above 0",
            "access_keys[2]: must be a string or a map with `key`",
            "access_keys[4]: name \"alice\" is used twice",
        ] {
            assert!(err.iter().any(|e| e.starts_with(want)), "{want}: {err:?}");
        }
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
