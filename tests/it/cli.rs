//! The management commands, run as a user would: output, exit status, and what they leave in
//! the config file and the certificate folder.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::client::{chat_request, connect, roundtrip};
use crate::harness::{Proxy, TempDir, command, config_yaml, run};
use crate::mock::Mock;
use crate::standard_apis;

const CONFIG: &str = r#"domain: api.openai.com
apis:
  - name: first
    endpoint: "https://api.deepseek.com"
    custom_model_id: m1
    target_model_id: t1
    stream_mode: "true"
    active: true
  - name: second
    endpoint: "https://api.moonshot.cn"
    custom_model_id: m2
    target_model_id: t2
    stream_mode: null
    active: true
server:
  port: 8443
"#;

fn dir_with_config() -> TempDir {
    let dir = TempDir::new("cli");
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    dir
}

fn tp(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run(args, dir)
}

#[test]
fn check_reports_ok_or_every_problem() {
    let dir = dir_with_config();
    let (code, out, _) = tp(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok — 2 entries (2 active)"), "{out}");
    std::fs::write(
        dir.path().join("config.yaml"),
        CONFIG
            .replace("https://api.moonshot.cn", "ftp://x")
            .replace("name: first", "name: second"),
    )
    .unwrap();
    let (code, out, _) = tp(dir.path(), &["check", "--config", "config.yaml"]);
    assert_eq!(code, 1);
    assert!(out.contains("apis[1]: (name \"second\") endpoint"), "{out}");
    assert!(out.contains("name \"second\" is used twice"), "{out}");
    // A certificate without its key is a problem too.
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    std::fs::create_dir_all(dir.path().join("ca")).unwrap();
    std::fs::write(dir.path().join("ca/api.openai.com.crt"), "x").unwrap();
    let (code, out, _) = tp(dir.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains("api.openai.com.key: missing"), "{out}");
}

#[test]
fn api_commands_edit_only_what_they_are_told() {
    let dir = dir_with_config();
    let config = dir.path().join("config.yaml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();

    let (code, out, _) = tp(dir.path(), &["api", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("1  first") && out.contains("m1 -> t1") && out.contains("true"),
        "{out}"
    );

    // update without --active keeps the entry active (the original deactivated it), and
    // stream_mode can go back to null.
    let (code, _, err) = tp(
        dir.path(),
        &[
            "api",
            "update",
            "1",
            "--stream-mode",
            "null",
            "--target-model-id",
            "t1b",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = tp(dir.path(), &["api", "list"]);
    assert!(
        out.contains("m1 -> t1b") && out.contains("null") && !out.contains(" no "),
        "{out}"
    );
    assert!(dir.path().join("config.yaml.bak").exists());
    if !crate::harness::windows() {
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "permissions kept");
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.find("domain").unwrap() < text.find("apis").unwrap(),
        "key order kept:\n{text}"
    );

    let (code, _, _) = tp(
        dir.path(),
        &[
            "api",
            "add",
            "--name",
            "third",
            "--endpoint",
            "http://127.0.0.1:8000",
            "--custom-model-id",
            "m3",
        ],
    );
    assert_eq!(code, 0);
    let (code, _, _) = tp(dir.path(), &["api", "enable", "third", "--only"]);
    assert_eq!(code, 0);
    let (_, out, _) = tp(dir.path(), &["api", "list"]);
    let active: Vec<&str> = out.lines().filter(|l| l.contains(" yes ")).collect();
    assert_eq!(active.len(), 1, "{out}");
    assert!(active[0].contains("third"));
    let (code, _, _) = tp(dir.path(), &["api", "disable", "3"]);
    assert_eq!(code, 0);
    let (code, _, _) = tp(dir.path(), &["api", "remove", "second"]);
    assert_eq!(code, 0);
    let (_, out, _) = tp(dir.path(), &["api", "list"]);
    assert!(!out.contains("second") && out.contains("third"), "{out}");
}

#[test]
fn refused_edits_leave_the_file_byte_identical() {
    let dir = dir_with_config();
    let config = dir.path().join("config.yaml");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "api",
                "add",
                "--name",
                "first",
                "--endpoint",
                "https://x.y",
                "--custom-model-id",
                "m",
            ],
            1,
            "used twice",
        ),
        (
            &[
                "api",
                "add",
                "--name",
                "x",
                "--endpoint",
                "not a url",
                "--custom-model-id",
                "m",
            ],
            1,
            "endpoint",
        ),
        (
            &["api", "update", "first", "--endpoint", "ftp://nope"],
            1,
            "endpoint",
        ),
        (
            &["api", "remove", "nonexistent"],
            1,
            "no entry named or numbered \"nonexistent\"",
        ),
        (&["api", "update", "9", "--name", "x"], 1, "no entry"),
        (
            &["api", "update", "first", "--stream-mode", "maybe"],
            2,
            "--stream-mode takes null, true or false",
        ),
        (&["domain", "set", "not a domain"], 1, "domain"),
    ];
    for (args, expected, needle) in cases {
        let (code, _, err) = tp(dir.path(), args);
        assert_eq!(code, *expected, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            CONFIG,
            "{args:?} changed the file"
        );
    }
    // The last entry cannot be removed.
    tp(dir.path(), &["api", "remove", "first"]);
    let (code, _, err) = tp(dir.path(), &["api", "remove", "second"]);
    assert_eq!(code, 1);
    assert!(err.contains("last entry"), "{err}");
}

fn read_leaf_issuer_and_expiry(dir: &Path, name: &str) -> (String, i64) {
    let pem = std::fs::read(dir.join("ca").join(format!("{name}.crt"))).unwrap();
    let der = x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    (
        cert.issuer().to_string(),
        cert.validity().not_after.timestamp(),
    )
}

#[test]
fn certs_create_renew_show_and_replace() {
    let dir = dir_with_config();
    let (code, out, _) = tp(dir.path(), &["certs"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("created CA"));
    let ca = std::fs::read(dir.path().join("ca/ca.crt")).unwrap();
    let leaf = std::fs::read(dir.path().join("ca/api.openai.com.crt")).unwrap();
    let (_, out, _) = tp(dir.path(), &["certs"]);
    assert!(out.contains("nothing to do"), "{out}");

    let (code, out, _) = tp(dir.path(), &["certs", "renew"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("ca/ca.crt")).unwrap(),
        ca,
        "renew keeps the CA"
    );
    assert_ne!(
        std::fs::read(dir.path().join("ca/api.openai.com.crt")).unwrap(),
        leaf
    );
    // The new leaf verifies against the kept CA.
    let ca_der = x509_parser::pem::parse_x509_pem(&ca).unwrap().1.contents;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let leaf_pem = std::fs::read(dir.path().join("ca/api.openai.com.crt")).unwrap();
    let leaf_der = x509_parser::pem::parse_x509_pem(&leaf_pem)
        .unwrap()
        .1
        .contents;
    let (_, leaf_cert) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    leaf_cert
        .verify_signature(Some(ca_cert.public_key()))
        .unwrap();

    let (code, out, _) = tp(dir.path(), &["certs", "show"]);
    assert_eq!(code, 0);
    for needle in [
        "CA: ",
        "is a CA:     yes",
        "names:       DNS:api.openai.com, IP:127.0.0.1, IP:::1",
        "days left:   39",
        "SHA-256:     ",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    let (code, out, _) = tp(dir.path(), &["certs", "trust-help"]);
    assert_eq!(code, 0);
    for needle in [
        "Import-Certificate",
        "add-trusted-cert",
        "update-ca-certificates",
        "update-ca-trust",
        "trust anchor",
        "certutil",
        "SHA-256",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }

    let (code, _, err) = tp(dir.path(), &["certs", "new-ca"]);
    assert_eq!(code, 0);
    assert!(err.contains("Every client must trust the new"), "{err}");
    assert_ne!(std::fs::read(dir.path().join("ca/ca.crt")).unwrap(), ca);
    assert_eq!(
        std::fs::read(dir.path().join("ca/ca.crt.old")).unwrap(),
        ca,
        "old CA kept"
    );
    if !crate::harness::windows() {
        let mode = std::fs::metadata(dir.path().join("ca/ca.key.old"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn certs_renew_from_the_original_rsa_ca() {
    let dir = dir_with_config();
    std::fs::create_dir_all(dir.path().join("ca")).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/original-ca");
    std::fs::copy(fixture.join("ca.crt"), dir.path().join("ca/ca.crt")).unwrap();
    std::fs::copy(fixture.join("ca-pkcs1.key"), dir.path().join("ca/ca.key")).unwrap();
    let (code, out, err) = tp(dir.path(), &["certs", "renew"]);
    assert_eq!(code, 0, "{out}{err}");
    let (issuer, _) = read_leaf_issuer_and_expiry(dir.path(), "api.openai.com");
    assert!(issuer.contains("Trae-Proxy CA"), "{issuer}");
}

#[test]
fn domain_set_issues_a_leaf_from_the_same_ca() {
    let dir = dir_with_config();
    tp(dir.path(), &["certs"]);
    let ca = std::fs::read(dir.path().join("ca/ca.crt")).unwrap();
    let (code, out, _) = tp(dir.path(), &["domain", "set", "api.example.org"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("api.example.org"));
    assert!(dir.path().join("ca/api.example.org.crt").exists());
    assert_eq!(std::fs::read(dir.path().join("ca/ca.crt")).unwrap(), ca);
    let (_, out, _) = tp(dir.path(), &["check"]);
    assert!(out.contains("domain api.example.org"), "{out}");
}

#[test]
fn doctor_passes_against_a_running_proxy_and_names_what_is_wrong() {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(&mock.url(), &standard_apis(), ""));
    let config = proxy.dir().join("config.yaml");
    let port = proxy.port.to_string();
    let config_arg = config.display().to_string();
    // Only the reachable backends: keep the check about the proxy.
    let (code, out, _) = tp(
        proxy.dir(),
        &[
            "doctor",
            "--config",
            &config_arg,
            "--resolve",
            "127.0.0.1",
            "--port",
            &port,
        ],
    );
    assert!(
        out.contains("[ok]   api.openai.com -> 127.0.0.1 (--resolve)"),
        "{out}"
    );
    assert!(out.contains("[ok]   TLS to 127.0.0.1:"), "{out}");
    assert!(out.contains("[ok]   GET /v1/models: gpt-4o"), "{out}");
    assert!(
        out.contains("[ok]   backend \"chat-backend\": reachable"),
        "{out}"
    );
    assert!(
        out.contains("[FAIL] backend \"refused-backend\": unreachable"),
        "{out}"
    );
    assert_eq!(code, 1, "one backend is down");

    // A CA that is not the proxy's.
    let other = TempDir::new("other-ca");
    std::fs::write(
        other.path().join("config.yaml"),
        config_yaml(
            &mock.url(),
            "  - {name: m, endpoint: \"{UPSTREAM}\", custom_model_id: m, target_model_id: chat}",
            "",
        ),
    )
    .unwrap();
    tp(other.path(), &["certs"]);
    let (code, out, _) = tp(
        other.path(),
        &["doctor", "--resolve", "127.0.0.1", "--port", &port],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("[FAIL] TLS to 127.0.0.1:") && out.contains("fix: "),
        "{out}"
    );

    // The proxy down.
    drop(proxy);
    let (code, out, _) = tp(
        other.path(),
        &["doctor", "--resolve", "127.0.0.1", "--port", &port],
    );
    assert_eq!(code, 1);
    assert!(out.contains("connect"), "{out}");
}

#[test]
fn built_in_mock_backend_serves_the_proxy() {
    let (mut mock, url) = start_mock();
    let apis = "  - {name: mock, endpoint: \"{UPSTREAM}\", custom_model_id: mocked, target_model_id: mock-model}";
    let proxy = Proxy::start(&config_yaml(&url, apis, ""));
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(
            r#"{"model":"mocked","messages":[{"role":"user","content":"hello there"}]}"#,
            "",
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Mock reply to: hello there"
    );
    assert_eq!(r.json()["model"], "mocked");
    let r = roundtrip(
        proxy.port,
        &proxy.ca_path(),
        &chat_request(
            r#"{"model":"mocked","stream":true,"messages":[{"role":"user","content":"a b"}]}"#,
            "",
        ),
    );
    let text: String = r
        .sse_data()
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Mock reply to: a b");
    let body = r#"{"model":"mocked","input":"x"}"#;
    let raw = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = roundtrip(proxy.port, &proxy.ca_path(), raw.as_bytes());
    assert_eq!(
        r.json()["data"][0]["embedding"].as_array().unwrap().len(),
        8
    );
    let _ = mock.kill();
    let _ = mock.wait();
}

#[test]
fn expiring_leaf_is_renewed_while_running_and_an_old_ca_is_warned_about() {
    // A CA of our own that expires in 30 days, with no leaf: warned at start.
    let dir = TempDir::new("expiring");
    std::fs::create_dir_all(dir.path().join("ca")).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "short-lived test CA");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(30);
    let ca_cert = params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.path().join("ca/ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("ca/ca.key"), ca_key.serialize_pem()).unwrap();
    let mock = Mock::start();
    let yaml = config_yaml(&mock.url(), &standard_apis(), "  cert_check_interval: 1\n");
    let proxy = Proxy::start_in(dir, &yaml, &[]);
    let log = proxy.wait_for_log("expires in 29 days");
    assert!(log.contains("expires in 29 days"), "{log}");

    // Replace the leaf on disk with one that expires in 5 days: the running proxy renews it.
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["api.openai.com".to_owned()]).unwrap();
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(5);
    let short = leaf.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(proxy.dir().join("ca/api.openai.com.crt"), short.pem()).unwrap();
    std::fs::write(
        proxy.dir().join("ca/api.openai.com.key"),
        leaf_key.serialize_pem(),
    )
    .unwrap();
    let log = proxy.wait_for_log("expired or expires in");
    assert!(
        log.contains("issued a new certificate for api.openai.com"),
        "{log}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (_, expires) = read_leaf_issuer_and_expiry(proxy.dir(), "api.openai.com");
    assert!(
        expires - now.unix_timestamp() > 300 * 86_400,
        "renewed on disk"
    );
    // And served: the handshake now presents a leaf valid for about 397 days.
    let tls = connect(proxy.port, &proxy.ca_path());
    let served = tls.conn.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&served).unwrap();
    assert!(cert.validity().not_after.timestamp() - now.unix_timestamp() > 300 * 86_400);
}

#[test]
fn config_is_accepted_before_and_after_the_action() {
    let dir = dir_with_config();
    let config = dir.path().join("config.yaml").display().to_string();
    let elsewhere = TempDir::new("cwd");
    let cwd = elsewhere.path();
    for args in [
        vec!["api", "list", "--config", &config],
        vec!["api", "--config", &config, "list"],
        vec!["api", "list", "-c", &config],
    ] {
        let (code, out, err) = tp(cwd, &args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("first"), "{args:?}: {out}");
    }
    let (code, _, err) = tp(cwd, &["certs", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = tp(cwd, &["certs", "show", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SHA-256"), "{out}");
    let (code, out, _) = tp(cwd, &["certs", "trust-help", "--config", &config]);
    assert_eq!(code, 0);
    assert!(out.contains("Import-Certificate"), "{out}");
    let (code, out, err) = tp(cwd, &["api", "disable", "second", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("disabled entry 2"), "{out}");
    let (code, out, err) = tp(cwd, &["domain", "set", "llm.example", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("domain is now llm.example"), "{out}");
    assert!(dir.path().join("ca/llm.example.crt").exists());
    // Two different files is a usage error, not a guess.
    let (code, _, err) = tp(
        cwd,
        &["api", "--config", "a.yaml", "list", "--config", "b.yaml"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--config given twice"), "{err}");
}

#[test]
fn mock_with_config_listens_where_the_config_points() {
    let port = crate::closed_port();
    let dir = TempDir::new("mock-config");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apis:\n  - {{name: far, endpoint: \"https://api.deepseek.com\", custom_model_id: a}}\n  \
             - {{name: local, endpoint: \"http://127.0.0.1:{port}/v1\", custom_model_id: b}}\n"
        ),
    )
    .unwrap();
    let mut mock = command()
        .args(["mock", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(mock.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut sock, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = crate::client::read_response(&mut BufReader::new(sock)).unwrap();
    assert_eq!(r.status, 200);
    let _ = mock.kill();
    let _ = mock.wait();
    // Nothing local to serve: said so, exit 1.
    std::fs::write(
        &config,
        "apis:\n  - {name: far, endpoint: \"https://api.deepseek.com\", custom_model_id: a}\n",
    )
    .unwrap();
    let (code, _, err) = tp(dir.path(), &["mock", "--config", "config.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("no active entry"), "{err}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `trae-proxy --help | head -1`: head exits, the pipe closes, the next write fails. A
    // command line tool ends there with status 0, not a panic (status 101).
    let dir = dir_with_config();
    tp(dir.path(), &["certs"]);
    for args in [
        &["--help"][..],
        &["certs", "show"],
        &["certs", "trust-help"],
        &["api", "list"],
        &["--version"],
    ] {
        for _ in 0..5 {
            let mut child = command()
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            drop(child.stdout.take());
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
            assert!(
                !err.contains("panicked") && !err.contains("Broken pipe"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn api_list_stays_aligned_with_long_names() {
    let dir = TempDir::new("align");
    std::fs::write(
        dir.path().join("config.yaml"),
        "apis:\n  - {name: a-rather-long-backend-name-here, endpoint: \"https://a.example\", custom_model_id: m, target_model_id: t}\n  \
         - {name: ü, endpoint: \"https://b.example\", custom_model_id: a-long-model-id-for-the-second-entry-of-all}\n",
    )
    .unwrap();
    let (code, out, _) = tp(dir.path(), &["api", "list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // Every column starts at the same character in every line.
    for column in ["model -> backend model", "stream", "active", "endpoint"] {
        let at = lines[0].find(column).unwrap();
        let at = lines[0][..at].chars().count();
        for line in &lines[1..] {
            let before: String = line.chars().take(at).collect();
            assert!(
                before.ends_with("  ") && !line.chars().nth(at).unwrap().is_whitespace(),
                "{column} misaligned:\n{out}"
            );
        }
    }
}

#[test]
fn doctor_says_host_name_not_found_like_serve() {
    let dir = TempDir::new("doctor-dns");
    std::fs::write(
        dir.path().join("config.yaml"),
        "apis:\n  - {name: nowhere, endpoint: \"https://no-such-host.invalid\", custom_model_id: m}\n",
    )
    .unwrap();
    let (code, out, _) = tp(
        dir.path(),
        &[
            "doctor",
            "--resolve",
            "127.0.0.1",
            "--port",
            &crate::closed_port().to_string(),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("backend \"nowhere\": unreachable (host name not found)"),
        "{out}"
    );
}

/// Starts `trae-proxy mock` on a free port; returns the child and its base URL.
fn start_mock() -> (std::process::Child, String) {
    start_mock_with(&[])
}

fn start_mock_with(extra: &[&str]) -> (std::process::Child, String) {
    let mut mock = command()
        .args(["mock", "--port", "0", "--tokens-per-second", "0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(mock.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    (mock, url)
}

#[test]
fn built_in_mock_serves_responses_and_calls_the_tool_a_prompt_names() {
    use serde_json::{Value, json};
    let (mut mock, url) = start_mock();
    let apis = "  - {name: mock, endpoint: \"{UPSTREAM}\", custom_model_id: mocked, target_model_id: anything}";
    let proxy = Proxy::start(&config_yaml(&url, apis, ""));
    let post = |path: &str, body: &Value| {
        let body = body.to_string();
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        roundtrip(proxy.port, &proxy.ca_path(), raw.as_bytes())
    };
    // Responses API, plain and streamed.
    let r = post(
        "/v1/responses",
        &json!({"model": "mocked", "input": "hi there"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["output"][0]["content"][0]["text"],
        "Mock reply to: hi there"
    );
    assert_eq!(r.json()["model"], "mocked");
    let r = post(
        "/v1/responses",
        &json!({"model": "mocked", "stream": true, "input": [{"role": "user", "content": [{"type": "input_text", "text": "a b"}]}]}),
    );
    let events: Vec<Value> = r
        .sse_data()
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Mock reply to: a b");
    assert!(
        events.last().unwrap()["response"]["usage"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Chat with tools: named in the prompt, the tool is called with schema-shaped arguments.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let r = post(
        "/v1/chat/completions",
        &json!({"model": "mocked", "tools": tools, "messages": [{"role": "user", "content": "use get_weather"}]}),
    );
    let call = &r.json()["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{}", r.text());
    assert_eq!(call["function"]["arguments"], "{\"city\":\"mock\"}");
    // Not named: a text answer; after the tool's result: a text answer.
    let r = post(
        "/v1/chat/completions",
        &json!({"model": "mocked", "tools": tools, "messages": [{"role": "user", "content": "hello"}]}),
    );
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Mock reply to: hello"
    );
    let r = post(
        "/v1/responses",
        &json!({"model": "mocked", "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
                "input": [{"role": "user", "content": "use get_weather"},
                          {"type": "function_call", "call_id": "call_mock", "name": "get_weather", "arguments": "{}"},
                          {"type": "function_call_output", "call_id": "call_mock", "output": "sunny"}]}),
    );
    assert_eq!(
        r.json()["output"][0]["content"][0]["text"],
        "Mock reply after the tool result."
    );
    let _ = mock.kill();
    let _ = mock.wait();
}

#[test]
fn strict_mock_refuses_message_fields_openai_does_not_define() {
    let (mut mock, url) = start_mock_with(&["--strict"]);
    let addr = url.trim_start_matches("http://").to_owned();
    let post = |body: &str| {
        let mut sock = std::net::TcpStream::connect(&addr).unwrap();
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        std::io::Write::write_all(&mut sock, raw.as_bytes()).unwrap();
        crate::client::read_response(&mut BufReader::new(sock)).unwrap()
    };
    let r = post(r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"me"}]}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"","reasoning_content":""}]}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "extra_forbidden");
    assert!(
        r.text().contains("messages[1].reasoning_content"),
        "{}",
        r.text()
    );
    let _ = mock.kill();
    let _ = mock.wait();
}

#[test]
fn the_cert_folder_is_private_whatever_the_umask() {
    if crate::harness::not_on_windows("umask and modes") {
        return;
    }
    let dir = dir_with_config();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {} certs --config config.yaml",
            crate::harness::command_words().join(" ")
        ))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca"), 0o700, "nobody else may add or swap files there");
    assert_eq!(mode("ca/ca.key"), 0o600);
    assert_eq!(mode("ca/api.openai.com.key"), 0o600);
}

#[test]
fn check_reports_what_serve_warns_about_or_fails_on() {
    let dir = TempDir::new("check-agrees");
    std::fs::write(dir.path().join("config.yaml"), "apis: []\n").unwrap();
    // No active backend: serve warns that every request will be 404.
    let (code, out, _) = tp(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: no active entry in apis"), "{out}");
    // A private key others can read: serve warns.
    tp(dir.path(), &["certs"]);
    let key = dir.path().join("ca/api.openai.com.key");
    if !crate::harness::windows() {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, out, _) = tp(dir.path(), &["check"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("is readable by other users"), "{out}");
    }
    // ca.key without ca.crt, and no leaf yet: serve cannot start, so check fails.
    std::fs::remove_file(dir.path().join("ca/ca.crt")).unwrap();
    std::fs::remove_file(dir.path().join("ca/api.openai.com.crt")).unwrap();
    std::fs::remove_file(&key).unwrap();
    let (code, out, _) = tp(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ca.crt") && out.contains("is missing while"),
        "{out}"
    );
}

#[test]
fn credentials_in_an_endpoint_are_never_echoed() {
    let dir = TempDir::new("creds");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apis:\n  - {name: a, endpoint: \"htp://user:s3cret@host\", custom_model_id: m}\n",
    )
    .unwrap();
    let (code, out, err) = tp(dir.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains("endpoint"), "{out}");
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );
    std::fs::write(
        &config,
        "apis:\n  - {name: a, endpoint: \"https://user:s3cret@host\", custom_model_id: m}\n",
    )
    .unwrap();
    for args in [&["check"][..], &["api", "list"]] {
        let (_, out, err) = tp(dir.path(), args);
        assert!(
            !out.contains("s3cret") && !err.contains("s3cret"),
            "{args:?}: {out}{err}"
        );
    }
    let (_, out, _) = tp(dir.path(), &["api", "list"]);
    assert!(out.contains("https://***@host"), "{out}");
}
