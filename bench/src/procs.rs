//! The processes under test: trae-proxy (release build) and nginx, each on a free loopback port
//! in front of the same backend, and what /proc says about them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Client, Target, tls_config};

pub struct Server {
    pub child: Child,
    pub port: u16,
    /// From spawn to the first completed TLS handshake.
    pub startup: Duration,
}

impl Drop for Server {
    /// SIGTERM first: a SIGKILLed nginx master leaves its workers running, holding their port
    /// and memory after the bench has ended. SIGKILL only if it has not ended within 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback listener with a backlog of 4096 (std listens with 128: a burst of a thousand
/// connects would wait for SYN retries).
pub fn listen_deep(port: u16) -> std::net::TcpListener {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("reuse");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("bind");
    socket.listen(4096).expect("listen");
    socket.into()
}

/// `pid` and its children (nginx: the master and its workers).
pub fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // The parent is the second field after the command's closing parenthesis.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// CPU time used so far by these processes, in seconds: (user, system).
pub fn cpu_seconds(pids: &[u32]) -> (f64, f64) {
    // Linux reports it in clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
    const TICKS_PER_SECOND: f64 = 100.0;
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            // utime and stime are fields 14 and 15, the 12th and 13th after the command.
            let field = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (
                field(11) as f64 / TICKS_PER_SECOND,
                field(12) as f64 / TICKS_PER_SECOND,
            )
        })
        .fold((0.0, 0.0), |(u, s), (pu, ps)| (u + pu, s + ps))
}

/// Context switches so far (voluntary and not) of every thread of these processes.
pub fn context_switches(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    total
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until the server completes a TLS handshake verified against `ca`. Not just a TCP
/// connect: trae-proxy binds its port before it creates missing certificates, and the kernel
/// accepts connections into the backlog before anything serves them.
fn wait_serving(child: &mut Child, port: u16, ca: &Path, started: Instant) -> Duration {
    loop {
        if ca.exists() {
            let target = Target::Tls(port, tls_config(ca));
            if Client::connect(&target).is_ok() {
                return started.elapsed();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Writes the proxy's config into `dir` (certificates go to `dir/ca`): the default settings,
/// one entry for the benchmark's model and one for a model the backend never answers.
pub fn proxy_config(dir: &Path, port: u16, backend: u16) {
    let yaml = format!(
        "domain: api.openai.com\napis:\n  - name: bench\n    endpoint: \"http://127.0.0.1:{backend}\"\n    \
         custom_model_id: gpt-4o\n    target_model_id: bench-backend\n  - name: hung\n    \
         endpoint: \"http://127.0.0.1:{backend}\"\n    custom_model_id: hang\n    target_model_id: hang\n\
         server:\n  port: {port}\n  bind: 127.0.0.1\n"
    );
    std::fs::write(dir.join("config.yaml"), yaml).expect("write config");
}

pub fn start_proxy(binary: &Path, dir: &Path, port: u16) -> Server {
    let started = Instant::now();
    // BENCH_PROXY_LOG=FILE keeps the proxies' logs (info level, appended, one after another)
    // for a look at what a run did.
    let (level, log) = match std::env::var_os("BENCH_PROXY_LOG") {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path);
            ("info", file.map_or(Stdio::null(), Stdio::from))
        }
        None => ("warn", Stdio::null()),
    };
    let mut child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(dir.join("config.yaml"))
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start trae-proxy");
    let startup = wait_serving(&mut child, port, &dir.join("ca/ca.crt"), started);
    Server {
        child,
        port,
        startup,
    }
}

pub fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Installs nginx from Debian when we may (root, apt-get present).
pub fn install_nginx() -> Option<PathBuf> {
    let root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
    if !root {
        return None;
    }
    eprintln!("installing nginx from Debian for the comparison ...");
    let quiet = || Stdio::null();
    Command::new("apt-get")
        .args(["update", "-qq"])
        .stdout(quiet())
        .status()
        .ok()?;
    Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "nginx-light",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(quiet())
        .status()
        .ok()
        .filter(|s| s.success())
        .or_else(|| {
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "nginx"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(quiet())
                .status()
                .ok()
        })?;
    find_nginx()
}

/// nginx terminating TLS with the proxy's certificate and forwarding to the backend with
/// upstream keep-alive and no buffering: the way one would do this job with nginx.
pub fn start_nginx(nginx: &Path, dir: &Path, cert_dir: &Path, port: u16, backend: u16) -> Server {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).expect("nginx dir");
    let chain = prefix.join("chain.pem");
    let leaf = std::fs::read_to_string(cert_dir.join("api.openai.com.crt")).expect("leaf");
    let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).expect("ca");
    std::fs::write(&chain, format!("{leaf}{ca}")).expect("chain");
    let conf = format!(
        r#"worker_processes auto;
error_log {logs}/error.log error;
pid {logs}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 256; }}
    client_max_body_size 32m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#,
        logs = prefix.join("logs").display(),
        chain = chain.display(),
        key = cert_dir.join("api.openai.com.key").display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let started = Instant::now();
    let mut child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let startup = wait_serving(&mut child, port, &cert_dir.join("ca.crt"), started);
    Server {
        child,
        port,
        startup,
    }
}

/// VmRSS in KiB and the thread count of `pid`.
pub fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
