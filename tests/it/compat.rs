//! Users of the Python Trae-Proxy drop in their `config.yaml` and `ca/` folder unchanged.

use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::client::{chat_request, connect, read_response, roundtrip};
use crate::harness::{Proxy, TempDir};
use crate::mock::Mock;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/original-ca");

/// The original's sample config, fields and quoting as its CLI wrote them, pointed at the mock.
fn original_config(upstream: &str) -> String {
    format!(
        r#"# Trae-Proxy configuration file
domain: api.openai.com
apis:
  - name: "deepseek-r1"
    endpoint: "{upstream}"
    custom_model_id: "deepseek-reasoner"
    target_model_id: "chat"
    stream_mode: "false"
    active: true
  - name: "kimi-k2"
    endpoint: "{upstream}/"
    custom_model_id: "kimi-k2-0711-preview"
    target_model_id: "chat"
    stream_mode: "true"
    active: true
  - name: "qwen3-coder-plus"
    endpoint: "{upstream}"
    custom_model_id: "qwen3-coder-plus"
    target_model_id: "chat"
    stream_mode: null
    active: false
server:
  port: 0
  debug: true
"#
    )
}

fn copy_files(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("ca")).unwrap();
    for (from, to) in files {
        std::fs::copy(Path::new(FIXTURE).join(from), dir.join("ca").join(to)).unwrap();
    }
}

#[test]
fn original_config_and_rsa_ca_folder_work_unchanged() {
    let mock = Mock::start();
    let dir = TempDir::new("original");
    copy_files(
        dir.path(),
        &[
            ("ca.crt", "ca.crt"),
            ("ca.key", "ca.key"),
            ("api.openai.com.crt", "api.openai.com.crt"),
            ("api.openai.com.key", "api.openai.com.key"),
        ],
    );
    // Keys as a careless copy leaves them: the proxy serves them but tells the operator.
    let leaf_key = dir.path().join("ca/api.openai.com.key");
    let windows = crate::harness::windows();
    if !windows {
        std::fs::set_permissions(&leaf_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let proxy = Proxy::start_in(dir, &original_config(&mock.url()), &[]);
    assert!(
        windows
            || proxy
                .log()
                .contains("is readable by other users; run: chmod 600"),
        "{}",
        proxy.log()
    );
    let fixture_ca = Path::new(FIXTURE).join("ca.crt");
    let served_leaf = std::fs::read_to_string(proxy.dir().join("ca/api.openai.com.crt")).unwrap();
    assert_eq!(
        served_leaf,
        std::fs::read_to_string(Path::new(FIXTURE).join("api.openai.com.crt")).unwrap(),
        "the existing leaf is served, not replaced"
    );

    let tls = connect(proxy.port, &fixture_ca);
    assert_eq!(tls.conn.peer_certificates().unwrap().len(), 2);
    drop(tls);

    // stream_mode "false" (quoted): a streaming client still gets a stream.
    let r = roundtrip(
        proxy.port,
        &fixture_ca,
        &chat_request(
            r#"{"model":"deepseek-reasoner","stream":true,"messages":[]}"#,
            "",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.sse_data().last().map(String::as_str), Some("[DONE]"));
    assert_eq!(mock.requests()[0].json()["stream"], false);

    // stream_mode "true" (quoted): a non-streaming client gets one JSON reply.
    let r = roundtrip(
        proxy.port,
        &fixture_ca,
        &chat_request(r#"{"model":"kimi-k2-0711-preview","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "kimi-k2-0711-preview");
    assert_eq!(mock.requests()[1].json()["stream"], true);

    // Inactive entries are not served (the original sent them to the first backend).
    let r = roundtrip(
        proxy.port,
        &fixture_ca,
        &chat_request(r#"{"model":"qwen3-coder-plus","messages":[]}"#, ""),
    );
    assert_eq!(r.status, 404);
}

/// A user changed `domain`, or deleted the leaf: the new leaf must come from the CA they already
/// trust, whichever PEM form its RSA key is in.
#[test]
fn missing_leaf_is_issued_from_the_original_rsa_ca() {
    for key in ["ca.key", "ca-pkcs1.key"] {
        let mock = Mock::start();
        let dir = TempDir::new("rsa-ca");
        copy_files(dir.path(), &[("ca.crt", "ca.crt"), (key, "ca.key")]);
        let proxy = Proxy::start_in(dir, &original_config(&mock.url()), &[]);
        let ca_dir = proxy.dir().join("ca");
        assert_eq!(
            std::fs::read(ca_dir.join("ca.crt")).unwrap(),
            std::fs::read(Path::new(FIXTURE).join("ca.crt")).unwrap(),
            "the CA users trust is never replaced"
        );
        assert!(ca_dir.join("api.openai.com.crt").exists());
        // Verifies against the original CA only.
        let mut tls = connect(proxy.port, &Path::new(FIXTURE).join("ca.crt"));
        tls.write_all(&crate::client::get_request("/v1/models"))
            .unwrap();
        let r = read_response(&mut BufReader::new(tls)).unwrap();
        assert_eq!(r.status, 200, "with CA key {key}");
    }
}
