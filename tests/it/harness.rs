//! Runs the real `trae-proxy` binary on a config written to a fresh folder, on a free loopback
//! port, with its log captured for assertions.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("trae-it-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary under test: this build's, or the one named by `TRAE_PROXY_TEST_BIN` (CI runs the
/// suite against the static aarch64 build that way, under `TRAE_PROXY_TEST_RUNNER`, e.g.
/// `qemu-aarch64-static`).
pub fn binary() -> String {
    std::env::var("TRAE_PROXY_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_trae-proxy").to_owned())
}

/// A command that runs the binary under test (through the runner when one is set).
pub fn command() -> Command {
    match std::env::var("TRAE_PROXY_TEST_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut c = Command::new(runner);
            c.arg(binary());
            c
        }
        _ => Command::new(binary()),
    }
}

/// Whether the binary under test is a Windows build (run under wine): no signals, no Unix
/// permissions, no privileged ports there.
pub fn windows() -> bool {
    binary().ends_with(".exe")
}

/// A process's resident memory in KiB (VmRSS from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// How often `serve` writes the usage file when it changed (bookkeeping.rs).
pub const USAGE_WRITE_EVERY: Duration = Duration::from_secs(5);

/// For a test about something Windows does not have: true (and a note) on a Windows build.
pub fn not_on_windows(what: &str) -> bool {
    if windows() {
        eprintln!("not on Windows ({what}): skipped");
    }
    windows()
}

/// Whether the binary runs under an emulator (`TRAE_PROXY_TEST_RUNNER`), whose own memory is
/// what /proc shows for the process.
pub fn emulated() -> bool {
    std::env::var("TRAE_PROXY_TEST_RUNNER").is_ok_and(|runner| !runner.is_empty())
}

/// The runner and binary as words, for wrapping in another command (setpriv).
pub fn command_words() -> Vec<String> {
    let mut words = Vec::new();
    if let Ok(runner) = std::env::var("TRAE_PROXY_TEST_RUNNER") {
        if !runner.is_empty() {
            words.push(runner);
        }
    }
    words.push(binary());
    words
}

/// A running proxy.
pub struct Proxy {
    child: Child,
    pub port: u16,
    dir: Option<TempDir>,
    log: Arc<Mutex<String>>,
}

/// The config used by most tests: `{UPSTREAM}` is replaced by the mock's base URL.
pub fn config_yaml(upstream: &str, apis: &str, server_extra: &str) -> String {
    format!(
        "domain: api.openai.com\napis:\n{}\nserver:\n  port: 0\n  bind: 127.0.0.1\n  debug: true\n{server_extra}",
        apis.replace("{UPSTREAM}", upstream)
    )
}

impl Proxy {
    /// Starts the proxy on `yaml` in a new folder; waits until it listens.
    pub fn start(yaml: &str) -> Proxy {
        Proxy::start_in(TempDir::new("proxy"), yaml, &[])
    }

    /// Starts the proxy with `yaml` in `dir` (which may already hold a `ca/` folder).
    pub fn start_in(dir: TempDir, yaml: &str, env: &[(&str, &str)]) -> Proxy {
        Proxy::spawn(dir, yaml, env, false)
    }

    /// Starts the proxy and closes the reading end of its stderr once it listens, as a log
    /// shipper that dies or `| tee` that ends would: every later log write fails.
    pub fn start_with_log_closed(yaml: &str) -> Proxy {
        Proxy::spawn(TempDir::new("proxy"), yaml, &[], true)
    }

    fn spawn(dir: TempDir, yaml: &str, env: &[(&str, &str)], close_log: bool) -> Proxy {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = command();
        // Run from elsewhere: paths in the config must resolve against its folder, not the cwd.
        cmd.current_dir("/")
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = String::new();
                let mut sent = false;
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    // Log first: a test reading the log once the port is known must see the line.
                    log.lock().unwrap().push_str(&line);
                    if !sent {
                        if let Some(port) = listening_port(&line) {
                            let _ = tx.send(port);
                            sent = true;
                            if close_log {
                                // Dropping the reader closes the pipe.
                                return;
                            }
                        }
                    }
                    line.clear();
                }
            });
        }
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("proxy did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Proxy {
            child,
            port,
            dir: Some(dir),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (log lines are written after the response).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The folder holding `config.yaml` and `ca/`.
    pub fn dir(&self) -> &Path {
        // unwrap: only stop_keep_dir() takes it, and that consumes self.
        self.dir.as_ref().unwrap().path()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir().join("ca").join("ca.crt")
    }

    /// Stops the proxy and hands over its folder, for a restart on the same files.
    pub fn stop_keep_dir(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().unwrap()
    }

    /// Stops the proxy and returns everything it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        self.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The port of the address logged after " on " in the first line containing `marker`
    /// (the admin and plain-HTTP listeners log where they listen).
    pub fn logged_port(&self, marker: &str) -> u16 {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?} in the log:\n{log}"));
        let addr = line
            .split(" on ")
            .nth(1)
            .unwrap()
            .split([' ', '/'])
            .next()
            .unwrap()
            .trim_end_matches(':');
        addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("TERM", "HUP", ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit code, if the process ends within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Replaces the config file (for a reload).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(self.dir().join("config.yaml"), yaml).unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_port(line: &str) -> Option<u16> {
    let rest = line.split("listening on ").nth(1)?;
    let addr = rest.split_whitespace().next()?;
    addr.rsplit(':').next()?.parse().ok()
}

/// Runs the binary to completion with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let mut child = command()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "command did not finish: {args:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code().unwrap_or(-1), out, err)
}
