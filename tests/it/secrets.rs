//! API keys never reach the log, at any level; private keys are created 0600; an existing CA
//! survives restarts.

use std::os::unix::fs::PermissionsExt;

use crate::client::{chat_request, roundtrip};
use crate::harness::{Proxy, TempDir, config_yaml};
use crate::mock::Mock;
use crate::standard_apis;

const SECRET: &str = "sk-SECRET-0123456789abcdef";

#[test]
fn api_key_never_appears_in_logs_even_at_trace() {
    let mock = Mock::start();
    let yaml = config_yaml(&mock.url(), &standard_apis(), "  first_byte_timeout: 1\n");
    let proxy = Proxy::start_in(TempDir::new("secrets"), &yaml, &[("RUST_LOG", "trace")]);
    let auth = format!("Authorization: Bearer {SECRET}\r\nX-Api-Key: {SECRET}\r\n");
    for body in [
        r#"{"model":"gpt-4o","messages":[]}"#,
        r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        r#"{"model":"err500","messages":[]}"#,
        r#"{"model":"refused","messages":[]}"#,
        r#"{"model":"unknown","messages":[]}"#,
        "{broken",
    ] {
        // chat_request sends its own Authorization first; ours is a second one.
        let r = roundtrip(proxy.port, &proxy.ca_path(), &chat_request(body, &auth));
        assert!(r.status > 0);
        assert!(
            !r.text().contains(SECRET),
            "key echoed to the client: {}",
            r.text()
        );
    }
    let _ = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        format!("GARBAGE {SECRET}\r\nAuthorization: Bearer {SECRET}\r\n\r\n").as_bytes(),
    );
    proxy.wait_for_log("model=- backend=- failovers=0");
    let log = proxy.stop();
    assert!(
        log.contains("status=200 model=gpt-4o backend=chat-backend"),
        "logging was on:\n{log}"
    );
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "debug level was on"
    );
    assert!(!log.contains(SECRET), "API key in the log:\n{log}");
    assert!(
        !log.to_ascii_lowercase().contains("authorization:"),
        "headers in the log:\n{log}"
    );
}

#[test]
fn private_keys_are_0600_and_the_ca_survives_restarts() {
    let mock = Mock::start();
    let yaml = config_yaml(&mock.url(), &standard_apis(), "");
    let proxy = Proxy::start(&yaml);
    let ca_dir = proxy.dir().join("ca");
    // Windows has no modes: the folder's access list protects the keys (operations.md).
    let keys: &[&str] = if crate::harness::windows() {
        &[]
    } else {
        &["ca.key", "api.openai.com.key"]
    };
    for key in keys {
        let mode = std::fs::metadata(ca_dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let ca_before = std::fs::read(ca_dir.join("ca.crt")).unwrap();
    let leaf_before = std::fs::read(ca_dir.join("api.openai.com.crt")).unwrap();
    let keep = proxy.stop_keep_dir();
    let again = Proxy::start_in(keep, &yaml, &[]);
    let ca_dir = again.dir().join("ca");
    assert_eq!(std::fs::read(ca_dir.join("ca.crt")).unwrap(), ca_before);
    assert_eq!(
        std::fs::read(ca_dir.join("api.openai.com.crt")).unwrap(),
        leaf_before
    );
}
