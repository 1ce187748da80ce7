//! Validation: the raw file ([`raw`](super::raw)) checked field by field into the model
//! ([`Config`]). Every problem is collected, each naming its place (`apis[2]: (name "kimi")
//! weight: ...`), so one run of `check` lists them all; a `Config` that exists is valid.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::raw::{LenientBool, RawApi, RawBackendTimeouts, RawConfig, RawServer};
use super::{
    AccessKey, Backend, BackendTimeouts, CATCH_ALL, Config, Health, ReasoningFallback,
    ReasoningReplay, Secret, Server, StreamMode, TargetModel, Timeouts, TunnelPolicy,
};
use crate::cidr::Cidr;

/// Problems found so far, each a line for the user.
type Problems = Vec<String>;

pub fn config(raw: RawConfig, base_dir: &Path) -> Result<Config, Problems> {
    let mut problems = Vec::new();
    let domain = raw.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_owned());
    if let Err(why) = check_domain(&domain) {
        problems.push(format!("domain: {why}"));
    }
    let extra_domains = extra_domains(raw.domains.unwrap_or_default(), &domain, &mut problems);
    let access_keys = access_keys(raw.access_keys.unwrap_or_default(), &mut problems);
    // Names are compared before each entry is checked, so a duplicate is reported even when
    // one of the two has other problems.
    let names: Vec<String> = raw.apis.iter().map(|a| a.name.trim().to_owned()).collect();
    let mut backends = Vec::with_capacity(raw.apis.len());
    for (i, api) in raw.apis.into_iter().enumerate() {
        if names[..i].contains(&names[i]) {
            problems.push(format!("apis[{i}]: name {:?} is used twice", names[i]));
        }
        match backend(api, base_dir) {
            Ok(b) => backends.push(b),
            Err(errs) => problems.extend(errs.into_iter().map(|e| format!("apis[{i}]: {e}"))),
        }
    }
    let server = server(&raw.server, &mut problems);
    let cert_dir = base_dir.join(raw.server.cert_dir.as_deref().unwrap_or("ca"));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        domain,
        extra_domains,
        access_keys,
        backends,
        server,
        cert_dir,
    })
}

/// `domains:`, lower-case, each once and none the `domain` itself.
fn extra_domains(raw: Vec<String>, domain: &str, problems: &mut Problems) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let d = d.trim().to_ascii_lowercase();
        match check_domain(&d) {
            Err(why) => problems.push(format!("domains[{i}]: {why}")),
            Ok(()) if d == domain || out.contains(&d) => {
                problems.push(format!("domains[{i}]: {d:?} is listed twice"));
            }
            Ok(()) => out.push(d),
        }
    }
    out
}

/// Each entry a string (the key) or a map `{key, name, requests_per_minute, tokens_per_day}`.
fn access_keys(raw: Vec<serde_norway::Value>, problems: &mut Problems) -> Vec<AccessKey> {
    let mut out: Vec<AccessKey> = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let parsed = match entry {
            serde_norway::Value::String(k) => plain_key(&k),
            serde_norway::Value::Mapping(map) => named_key(&map),
            _ => Err(vec!["must be a string or a map with `key`".to_owned()]),
        };
        match parsed {
            Ok(key) => {
                if out.iter().any(|k| k.key.expose() == key.key.expose()) {
                    problems.push(format!("access_keys[{i}]: the same key is listed twice"));
                } else if out.iter().any(|k| k.name == key.name) {
                    problems.push(format!(
                        "access_keys[{i}]: name {:?} is used twice",
                        key.name
                    ));
                } else {
                    out.push(key);
                }
            }
            Err(errs) => {
                problems.extend(errs.into_iter().map(|e| format!("access_keys[{i}]: {e}")))
            }
        }
    }
    out
}

fn plain_key(k: &str) -> Result<AccessKey, Problems> {
    if k.trim().is_empty() {
        return Err(vec!["must not be empty".to_owned()]);
    }
    let key = Secret::from_config(k);
    Ok(AccessKey {
        name: AccessKey::derived_name(&key),
        key,
        requests_per_minute: None,
        tokens_per_day: None,
    })
}

fn named_key(map: &serde_norway::Mapping) -> Result<AccessKey, Problems> {
    let mut errs = Vec::new();
    let field = |name: &str| map.get(name);
    for (k, _) in map {
        let known = ["key", "name", "requests_per_minute", "tokens_per_day"];
        if !k.as_str().is_some_and(|k| known.contains(&k)) {
            errs.push(format!("unknown field {k:?} (expected one of {known:?})"));
        }
    }
    let key = match field("key").and_then(|v| v.as_str()) {
        Some(k) if !k.trim().is_empty() => Some(Secret::from_config(k)),
        _ => {
            errs.push("`key` must be a non-empty string".to_owned());
            None
        }
    };
    let name = match field("name") {
        None => None,
        Some(v) => match v.as_str().map(str::trim) {
            Some(n) if !n.is_empty() && n.len() <= 64 && !n.chars().any(char::is_control) => {
                Some(n.to_owned())
            }
            _ => {
                errs.push("`name` must be a string of 1 to 64 printable characters".to_owned());
                None
            }
        },
    };
    if let (Some(key), Some(name)) = (&key, &name) {
        if key.expose() == name {
            // The name is shown on the status page and written to logs and the usage file.
            errs.push("`name` must not be the key itself".to_owned());
        }
    }
    let limit = |field_name: &str, errs: &mut Vec<String>| match field(field_name) {
        None | Some(serde_norway::Value::Null) => None,
        Some(v) => match v.as_u64().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => {
                errs.push(format!("`{field_name}` must be a whole number above 0"));
                None
            }
        },
    };
    let requests_per_minute =
        limit("requests_per_minute", &mut errs).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let tokens_per_day = limit("tokens_per_day", &mut errs);
    match key {
        Some(key) if errs.is_empty() => Ok(AccessKey {
            name: name.unwrap_or_else(|| AccessKey::derived_name(&key)),
            key,
            requests_per_minute,
            tokens_per_day,
        }),
        _ => Err(errs),
    }
}

// --- One `apis` entry --------------------------------------------------------------------------

fn backend(raw: RawApi, base_dir: &Path) -> Result<Backend, Problems> {
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
    let weight = raw.weight.unwrap_or(1);
    if !(1..=1000).contains(&weight) {
        errs.push(format!("weight: expected 1 to 1000, got {weight}"));
    }
    if raw.max_in_flight == Some(0) {
        errs.push("max_in_flight: must be at least 1".to_owned());
    }
    let proxy = raw.proxy.as_deref().map(|p| p.trim().to_owned());
    if let Some(Err(why)) = proxy.as_deref().map(check_proxy) {
        errs.push(format!("proxy: {why}"));
    }
    let ca_certs = match raw.ca_file.as_deref() {
        None => Vec::new(),
        Some(file) => load_ca_file(&base_dir.join(file.trim())).unwrap_or_else(|why| {
            errs.push(format!("ca_file: {why}"));
            Vec::new()
        }),
    };
    let backend = Backend {
        stream_mode: stream_mode(raw.stream_mode.as_ref(), &mut errs),
        active: flag(raw.active.as_ref(), true, "active", &mut errs),
        api_key: api_key(&raw, &mut errs),
        headers: headers(raw.headers.unwrap_or_default(), &mut errs),
        timeouts: backend_timeouts(raw.timeout.as_ref(), &mut errs),
        reasoning_replay: reasoning_replay(raw.reasoning_replay.as_ref(), &mut errs),
        reasoning_fallback: reasoning_fallback(raw.reasoning_fallback.as_deref(), &mut errs),
        null_content_with_tool_calls: quirks(raw.quirks.unwrap_or_default(), &mut errs),
        max_in_flight: raw.max_in_flight,
        name,
        endpoint,
        custom_model_id,
        target,
        weight,
        proxy,
        ca_certs,
    };
    if !errs.is_empty() {
        let name = &backend.name;
        return Err(errs
            .into_iter()
            .map(|e| format!("(name {name:?}) {e}"))
            .collect());
    }
    Ok(backend)
}

fn stream_mode(raw: Option<&LenientBool>, errs: &mut Problems) -> StreamMode {
    match raw.map(LenientBool::parse) {
        None | Some(Ok(None)) => StreamMode::Client,
        Some(Ok(Some(true))) => StreamMode::ForceStream,
        Some(Ok(Some(false))) => StreamMode::ForceNonStream,
        Some(Err(why)) => {
            errs.push(format!("stream_mode: {why}"));
            StreamMode::Client
        }
    }
}

/// `api_key`, or the variable `api_key_env` names; one of them at most.
fn api_key(raw: &RawApi, errs: &mut Problems) -> Option<Secret> {
    match (&raw.api_key, &raw.api_key_env) {
        (Some(_), Some(_)) => {
            errs.push("api_key and api_key_env: set one, not both".to_owned());
            None
        }
        (Some(k), None) if k.trim().is_empty() => {
            errs.push("api_key: must not be empty".to_owned());
            None
        }
        (Some(k), None) => Some(Secret::from_config(k)),
        (None, Some(var)) => match std::env::var(var.trim()) {
            Ok(k) if !k.trim().is_empty() => Some(Secret::from_config(&k)),
            _ => {
                errs.push(format!(
                    "api_key_env: environment variable {:?} is not set or empty",
                    var.trim()
                ));
                None
            }
        },
        (None, None) => None,
    }
}

fn headers(
    raw: std::collections::BTreeMap<String, String>,
    errs: &mut Problems,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in raw {
        match parse_header(&k, &v) {
            Ok(h) => out.push(h),
            Err(why) => errs.push(format!("headers.{k}: {why}")),
        }
    }
    out
}

fn backend_timeouts(raw: Option<&RawBackendTimeouts>, errs: &mut Problems) -> BackendTimeouts {
    let Some(t) = raw else {
        return BackendTimeouts::default();
    };
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

fn reasoning_replay(raw: Option<&LenientBool>, errs: &mut Problems) -> ReasoningReplay {
    let Some(value) = raw else {
        return ReasoningReplay::Auto;
    };
    if let LenientBool::Text(t) = value {
        if t.trim().eq_ignore_ascii_case("auto") {
            return ReasoningReplay::Auto;
        }
    }
    match value.parse() {
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
    }
}

fn reasoning_fallback(raw: Option<&str>, errs: &mut Problems) -> ReasoningFallback {
    match raw.map(str::trim) {
        None | Some("empty") => ReasoningFallback::Empty,
        Some("strip") => ReasoningFallback::Strip,
        Some("keep") => ReasoningFallback::Keep,
        Some(other) => {
            errs.push(format!(
                "reasoning_fallback: expected empty, strip or keep, got {other:?}"
            ));
            ReasoningFallback::Empty
        }
    }
}

/// `quirks:`; today the one known quirk, `null_content_with_tool_calls`.
fn quirks(raw: Vec<String>, errs: &mut Problems) -> bool {
    let mut null_content_with_tool_calls = false;
    for quirk in raw {
        match quirk.trim() {
            "null_content_with_tool_calls" => null_content_with_tool_calls = true,
            other => errs.push(format!(
                "quirks: unknown quirk {other:?} (known: null_content_with_tool_calls)"
            )),
        }
    }
    null_content_with_tool_calls
}

// --- `server:` ---------------------------------------------------------------------------------

fn server(raw: &RawServer, problems: &mut Problems) -> Server {
    let bind = match raw.bind.as_deref() {
        None => DEFAULT_BIND,
        Some(text) => text.trim().parse().unwrap_or_else(|_| {
            problems.push(format!(
                "server.bind: expected an IP address such as 0.0.0.0, 127.0.0.1 or ::, got {text:?}"
            ));
            DEFAULT_BIND
        }),
    };
    let limits = limits(raw, problems);
    let (tunnel, tunnel_allow, tunnel_ports) = tunnel(raw, problems);
    let shutdown_timeout = Duration::from_secs(30);
    let shutdown_timeout = seconds(
        "shutdown_timeout",
        raw.shutdown_timeout,
        shutdown_timeout,
        problems,
    );
    let daily = Duration::from_secs(24 * 3600);
    let cert_check_interval = seconds(
        "cert_check_interval",
        raw.cert_check_interval,
        daily,
        problems,
    );
    Server {
        bind,
        port: raw.port.unwrap_or(DEFAULT_PORT),
        debug: flag(raw.debug.as_ref(), false, "server.debug", problems),
        workers: limits.workers,
        max_body_bytes: limits.max_body_bytes,
        max_buffered_body_bytes: limits.max_buffered_body_bytes,
        min_body_rate: raw.min_request_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE),
        max_connections: limits.max_connections,
        max_connections_per_client: limits.max_connections_per_client,
        max_requests_per_client: limits.max_requests_per_client,
        timeouts: timeouts(raw, problems),
        health: health(raw, problems),
        shutdown_timeout,
        cert_check_interval,
        admin_bind: socket_addr(
            raw.admin_bind.as_deref(),
            "server.admin_bind",
            "127.0.0.1:9090",
            problems,
        ),
        http_bind: socket_addr(
            raw.http_bind.as_deref(),
            "server.http_bind",
            "0.0.0.0:8080",
            problems,
        ),
        strip_model_prefixes: raw
            .strip_model_prefixes
            .iter()
            .flatten()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
        tunnel,
        tunnel_allow,
        tunnel_ports,
    }
}

/// `server.<field>`: a whole number of seconds, at least 1; `default` when unset.
fn seconds(
    field: &str,
    value: Option<u64>,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    match value {
        None => default,
        Some(0) => {
            problems.push(format!("server.{field}: must be at least 1 second"));
            default
        }
        Some(s) => Duration::from_secs(s),
    }
}

/// The server's size limits.
struct Limits {
    workers: usize,
    max_connections: usize,
    max_connections_per_client: usize,
    max_requests_per_client: usize,
    max_body_bytes: u64,
    max_buffered_body_bytes: u64,
}

fn limits(raw: &RawServer, problems: &mut Problems) -> Limits {
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
    let mut at_least_one = |field: &str, value: Option<usize>, default: usize| match value {
        Some(0) => {
            problems.push(format!("server.{field}: must be at least 1"));
            default
        }
        Some(n) => n,
        None => default,
    };
    // A client gets half of each total by default: one address cannot take the whole box.
    let max_connections_per_client = at_least_one(
        "max_connections_per_client",
        raw.max_connections_per_client,
        (max_connections / 2).max(1),
    );
    let max_requests_per_client = at_least_one(
        "max_requests_per_client",
        raw.max_requests_per_client,
        (workers / 2).max(1),
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
    Limits {
        workers,
        max_connections,
        max_connections_per_client,
        max_requests_per_client,
        max_body_bytes,
        max_buffered_body_bytes,
    }
}

fn timeouts(raw: &RawServer, problems: &mut Problems) -> Timeouts {
    let defaults = Timeouts::default();
    let mut or = |field: &str, value: Option<u64>, default: Duration| {
        seconds(field, value, default, problems)
    };
    Timeouts {
        request_head: or(
            "request_head_timeout",
            raw.request_head_timeout,
            defaults.request_head,
        ),
        idle: or("idle_timeout", raw.idle_timeout, defaults.idle),
        request_body: or(
            "request_body_timeout",
            raw.request_body_timeout,
            defaults.request_body,
        ),
        client_io: or(
            "client_io_timeout",
            raw.client_io_timeout,
            defaults.client_io,
        ),
        connect: or("connect_timeout", raw.connect_timeout, defaults.connect),
        first_byte: or(
            "first_byte_timeout",
            raw.first_byte_timeout,
            defaults.first_byte,
        ),
        read: or("read_timeout", raw.read_timeout, defaults.read),
    }
}

/// Failover and cool-down.
fn health(raw: &RawServer, problems: &mut Problems) -> Health {
    let defaults = Health::default();
    let max_attempts = raw.max_attempts.unwrap_or(defaults.max_attempts);
    if !(1..=10).contains(&max_attempts) {
        problems.push(format!(
            "server.max_attempts: expected 1 to 10, got {max_attempts}"
        ));
    }
    let failures_before_cooldown = raw
        .failures_before_cooldown
        .unwrap_or(defaults.failures_before_cooldown);
    if failures_before_cooldown == 0 {
        problems.push("server.failures_before_cooldown: must be at least 1".to_owned());
    }
    Health {
        max_attempts,
        failures_before_cooldown,
        cooldown: seconds("cooldown", raw.cooldown, defaults.cooldown, problems),
        max_cooldown: seconds(
            "max_cooldown",
            raw.max_cooldown,
            defaults.max_cooldown,
            problems,
        ),
    }
}

/// `tunnel`, `tunnel_allow`, `tunnel_ports`: where `CONNECT` may lead.
fn tunnel(raw: &RawServer, problems: &mut Problems) -> (TunnelPolicy, Vec<Cidr>, Vec<u16>) {
    let policy = match raw.tunnel.as_deref().map(str::trim) {
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
    let mut allow = Vec::new();
    for (i, entry) in raw.tunnel_allow.iter().flatten().enumerate() {
        match Cidr::parse(entry) {
            Ok(cidr) => allow.push(cidr),
            Err(why) => problems.push(format!("server.tunnel_allow[{i}]: {why}")),
        }
    }
    let ports = raw.tunnel_ports.clone().unwrap_or_else(|| vec![443]);
    if ports.contains(&0) {
        problems.push("server.tunnel_ports: 0 is not a port".to_owned());
    }
    (policy, allow, ports)
}

// --- Single values -------------------------------------------------------------------------------

/// Where to listen when the file names no `server.bind`: every IPv4 interface, like the
/// original.
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

/// Threads answering requests; each costs about 60 KiB while it streams and returns its stack
/// when idle, so the pool can be large enough that streams are never queued.
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
