//! Starting up: clear errors for a privileged port and for broken config files, paths relative
//! to the config file, `--version`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::{Proxy, TempDir, command, command_words, config_yaml, run};
use crate::mock::Mock;
use crate::standard_apis;

#[test]
fn port_443_without_privilege_says_how_to_fix_it() {
    let dir = TempDir::new("priv");
    let yaml = "domain: api.openai.com\napis: []\nserver:\n  port: 443\n  bind: 127.0.0.1\n";
    std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
    let config = dir.path().join("config.yaml");
    let is_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    // The binary may sit where nobody cannot reach it (a checkout under /root): run a copy.
    let exe_dir = TempDir::new("exe");
    let exe = exe_dir.path().join("trae-proxy");
    std::fs::copy(crate::harness::binary(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut words = command_words();
    if let Some(last) = words.last_mut() {
        *last = exe.display().to_string();
    }
    let mut cmd = if is_root {
        // Drop to nobody, capabilities included, as an unprivileged user would run it.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .args(&words);
        c
    } else {
        command()
    };
    let out = cmd
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("127.0.0.1:443"), "{err}");
    assert!(
        err.contains("CAP_NET_BIND_SERVICE") && err.contains("root"),
        "{err}"
    );
    assert!(err.contains("server.port"), "{err}");
    assert!(
        !dir.path().join("ca").exists(),
        "nothing is created before the bind succeeds"
    );
}

#[test]
fn broken_config_lists_every_problem_and_exits_1() {
    let dir = TempDir::new("broken");
    let yaml = r#"
domain: api.openai.com
apis:
  - name: a
    endpoint: "ftp://example.com"
    custom_model_id: m
    target_model_id: t
  - name: b
    endpoint: "https://example.com"
    custom_model_id: ""
    target_model_id: t
    stream_mode: sometimes
server:
  port: 8443
"#;
    std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
    let (code, _, err) = run(&["serve", "--config", "config.yaml"], dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("config.yaml"), "{err}");
    assert!(err.contains("apis[0]") && err.contains("endpoint"), "{err}");
    assert!(
        err.contains("apis[1]") && err.contains("custom_model_id"),
        "{err}"
    );
    assert!(err.contains("stream_mode"), "{err}");

    std::fs::write(dir.path().join("config.yaml"), "server:\n  prot: 1\n").unwrap();
    let (code, _, err) = run(&["serve", "--config", "config.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("prot") && err.contains("line"), "{err}");

    let (code, _, err) = run(&["serve", "--config", "missing.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("missing.yaml"), "{err}");
}

#[test]
fn cert_folder_is_relative_to_the_config_file_not_the_cwd() {
    let mock = Mock::start();
    // The harness runs the proxy from "/" with an absolute config path.
    let proxy = Proxy::start(&config_yaml(&mock.url(), &standard_apis(), ""));
    assert!(proxy.dir().join("ca/ca.crt").exists());
    assert!(proxy.dir().join("ca/api.openai.com.crt").exists());
    assert!(!std::path::Path::new("/ca").exists());
}

#[test]
fn version_names_commit_and_target() {
    let (code, out, _) = run(&["--version"], std::path::Path::new("/"));
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("trae-proxy {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("commit ") && out.contains("target "), "{out}");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let (code, _, err) = run(&["serve", "--no-such-flag"], std::path::Path::new("/"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-flag"), "{err}");
    let (code, out, _) = run(&["serve", "--help"], std::path::Path::new("/"));
    assert_eq!(code, 0);
    assert!(out.contains("--config"), "{out}");
}

#[test]
fn under_systemd_log_lines_carry_the_level_but_no_second_timestamp() {
    let mock = Mock::start();
    let yaml = config_yaml(&mock.url(), &standard_apis(), "");
    let journal = Proxy::start_in(
        TempDir::new("journal"),
        &yaml,
        &[("JOURNAL_STREAM", "8:12345")],
    );
    let line = journal
        .log()
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap()
        .to_owned();
    assert!(line.starts_with("INFO "), "{line}");
    let plain = Proxy::start(&yaml);
    let line = plain
        .log()
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap()
        .to_owned();
    assert!(
        line.starts_with("20") && line.contains(" INFO "),
        "timestamped: {line}"
    );
}
