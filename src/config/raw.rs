//! The file format: the shape serde reads, every field optional where the Python original
//! allowed it to be missing, unknown fields refused (a typo must not be silently ignored).
//! Nothing here is checked beyond its type; [`validate`](super::validate) does that.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) domain: Option<String>,
    pub(super) domains: Option<Vec<String>>,
    /// Strings, or maps with `key`, `name` and limits: read by hand (validate.rs) so that
    /// each problem is named; serde's untagged enums only say "did not match any variant".
    pub(super) access_keys: Option<Vec<serde_norway::Value>>,
    #[serde(default)]
    pub(super) apis: Vec<RawApi>,
    #[serde(default)]
    pub(super) server: RawServer,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) name: String,
    pub(super) endpoint: String,
    pub(super) custom_model_id: String,
    #[serde(default)]
    pub(super) target_model_id: Option<String>,
    #[serde(default)]
    pub(super) stream_mode: Option<LenientBool>,
    #[serde(default)]
    pub(super) active: Option<LenientBool>,
    pub(super) weight: Option<u32>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) api_key: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) headers: Option<std::collections::BTreeMap<String, String>>,
    pub(super) timeout: Option<RawBackendTimeouts>,
    pub(super) proxy: Option<String>,
    pub(super) ca_file: Option<String>,
    pub(super) reasoning_replay: Option<LenientBool>,
    pub(super) reasoning_fallback: Option<String>,
    pub(super) quirks: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendTimeouts {
    pub(super) connect: Option<u64>,
    pub(super) first_byte: Option<u64>,
    pub(super) read: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) port: Option<u16>,
    pub(super) debug: Option<LenientBool>,
    pub(super) bind: Option<String>,
    pub(super) workers: Option<usize>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) max_buffered_body_bytes: Option<u64>,
    pub(super) min_request_body_rate: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_client: Option<usize>,
    pub(super) max_requests_per_client: Option<usize>,
    pub(super) cert_dir: Option<String>,
    pub(super) request_head_timeout: Option<u64>,
    pub(super) idle_timeout: Option<u64>,
    pub(super) request_body_timeout: Option<u64>,
    pub(super) client_io_timeout: Option<u64>,
    pub(super) connect_timeout: Option<u64>,
    pub(super) first_byte_timeout: Option<u64>,
    pub(super) read_timeout: Option<u64>,
    pub(super) max_attempts: Option<usize>,
    pub(super) failures_before_cooldown: Option<u32>,
    pub(super) cooldown: Option<u64>,
    pub(super) max_cooldown: Option<u64>,
    pub(super) shutdown_timeout: Option<u64>,
    pub(super) admin_bind: Option<String>,
    pub(super) cert_check_interval: Option<u64>,
    pub(super) http_bind: Option<String>,
    pub(super) strip_model_prefixes: Option<Vec<String>>,
    pub(super) tunnel: Option<String>,
    pub(super) tunnel_allow: Option<Vec<String>>,
    pub(super) tunnel_ports: Option<Vec<u16>>,
}

/// A YAML boolean, or the quoted `"true"`/`"false"` strings the original CLI wrote. The original
/// compared strings, so a real YAML `true` silently meant "null" there; here both mean true.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum LenientBool {
    Bool(bool),
    Text(String),
}

impl LenientBool {
    /// The value as written, for an error message.
    pub(super) fn describe(&self) -> String {
        match self {
            LenientBool::Bool(b) => b.to_string(),
            LenientBool::Text(t) => format!("{t:?}"),
        }
    }

    /// `Ok(None)` stands for "unset" (`"null"`, `"none"`, `""`).
    pub(super) fn parse(&self) -> Result<Option<bool>, String> {
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
