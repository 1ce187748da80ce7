//! Starting up: clear errors for a privileged port and for broken config files, paths relative
//! to the config file, `--version`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::{Proxy, TempDir, command, command_words, config_yaml, run};
use crate::mock::Mock;
use crate::standard_apis;

#[test]
fn port_443_without_privilege_says_how_to_fix_it() {
    if crate::harness::not_on_windows("privileged ports") {
        return;
    }
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

#[test]
fn the_open_files_limit_is_raised_and_max_connections_fits_what_is_left() {
    if crate::harness::not_on_windows("rlimits") {
        return;
    }
    use std::io::Read;
    let dir = crate::harness::TempDir::new("nofile");
    std::fs::write(
        dir.path().join("config.yaml"),
        "apis: []\nserver: {port: 0, bind: 127.0.0.1}\n",
    )
    .unwrap();
    let start = |limits: &str| {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{limits}; exec {} serve --config config.yaml",
                crate::harness::command_words().join(" ")
            ))
            .current_dir(dir.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = String::new();
        let mut stderr = child.stderr.take().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !log.contains("listening on") && std::time::Instant::now() < deadline {
            let mut buf = [0u8; 1024];
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => log.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        (log, limits)
    };
    // A low soft limit under a higher hard one: raised to the hard one.
    let (log, limits) = start("ulimit -H -n 20000; ulimit -S -n 1024");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    if !crate::harness::emulated() {
        assert!(open_files.contains("20000"), "{open_files}");
    }
    assert!(!log.contains("open files"), "{log}");
    // Both low: max_connections is lowered to what fits, and the log says so.
    let (log, _) = start("ulimit -S -n 1024; ulimit -H -n 1024");
    assert!(log.contains("serving at most 480 connections"), "{log}");
}
