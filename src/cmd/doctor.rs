//! `trae-proxy doctor`: run on the machine with the IDE, it checks each link of the chain and
//! prints one line per check, with what to do when one fails:
//! the domain resolves to the proxy (hosts file), the TLS handshake verifies with the proxy's CA
//! and with this machine's trust store, `GET /v1/models` answers, and each active backend is
//! reachable and accepts its key.

use crate::output::say;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;

use crate::cli::DoctorArgs;
use crate::config::{Backend, Config};
use crate::error::Error;
use crate::pki::certs::CertPaths;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Where Linux distributions keep the system trust store as one PEM bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, what: &str) {
        say!("[ok]   {what}");
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.failed += 1;
        say!("[FAIL] {what}\n       fix: {fix}");
    }
    fn skip(&mut self, what: &str) {
        say!("[skip] {what}");
    }
}

pub fn run(args: &DoctorArgs) -> Result<(), Error> {
    let config = Config::load(&args.config)?;
    let mut report = Report { failed: 0 };
    let port = args.port.unwrap_or(config.server.port);
    let domain = &config.domain;

    // 1. Where does the domain lead?
    let addr = match args.resolve {
        Some(ip) => {
            report.ok(&format!("{domain} -> {ip} (--resolve)"));
            Some(SocketAddr::new(ip, port))
        }
        None => match (domain.as_str(), port).to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                match args.proxy {
                    Some(proxy) if !addrs.iter().any(|a| a.ip() == proxy) => report.fail(
                        &format!(
                            "{domain} resolves to {}, not the proxy {proxy}",
                            ips.join(", ")
                        ),
                        &format!(
                            "add the line `{proxy} {domain}` to the hosts file ({})",
                            hosts_file()
                        ),
                    ),
                    _ => report.ok(&format!("{domain} resolves to {}", ips.join(", "))),
                }
                addrs.first().copied()
            }
            Err(e) => {
                report.fail(
                    &format!("{domain} does not resolve: {e}"),
                    &format!(
                        "add `<proxy address> {domain}` to the hosts file ({})",
                        hosts_file()
                    ),
                );
                None
            }
        },
    };

    // 2. TLS with the proxy's CA, 3. with this machine's store, 4. the model list.
    let paths = CertPaths::new(&config.cert_dir, domain);
    if let Some(addr) = addr {
        match roots_from(&paths.ca_cert) {
            Err(e) => report.fail(&format!("cannot read the CA: {e}"), "run `trae-proxy certs` on the proxy and copy ca/ca.crt here"),
            Ok(roots) => match handshake(addr, domain, roots) {
                Ok(mut tls) => {
                    report.ok(&format!("TLS to {addr} as {domain} verifies with {}", paths.ca_cert.display()));
                    models(&mut tls, &mut report);
                }
                Err(e) => report.fail(
                    &format!("TLS to {addr} as {domain} with {}: {e}", paths.ca_cert.display()),
                    "make sure the address is the proxy's and that it runs, and that this CA file is the proxy's ca/ca.crt",
                ),
            },
        }
        match SYSTEM_BUNDLES.iter().find(|p| Path::new(p).exists()) {
            None => report.skip("this machine's trust store: no PEM bundle found (Windows/macOS: check in the browser)"),
            Some(bundle) => match roots_from(Path::new(bundle)).and_then(|r| handshake(addr, domain, r)) {
                Ok(_) => report.ok(&format!("TLS verifies with this machine's trust store ({bundle})")),
                Err(e) => report.fail(
                    &format!("TLS does not verify with this machine's trust store ({bundle}): {e}"),
                    "trust the proxy's CA on this machine: `trae-proxy certs trust-help`",
                ),
            },
        }
    }

    // 5. Each backend, directly.
    for backend in config.active_backends() {
        check_backend(backend, args.api_key.as_deref(), &mut report);
    }

    if report.failed > 0 {
        return Err(Error::ChecksFailed(report.failed));
    }
    say!("all checks passed");
    Ok(())
}

fn hosts_file() -> &'static str {
    if cfg!(windows) {
        r"C:\Windows\System32\drivers\etc\hosts"
    } else {
        "/etc/hosts"
    }
}

fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in certs.flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificates", path.display()));
    }
    Ok(roots)
}

fn handshake(
    addr: SocketAddr,
    domain: &str,
    roots: RootCertStore,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let sock = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(domain.to_owned()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| e.to_string())?;
    }
    Ok(tls)
}

fn models(tls: &mut StreamOwned<ClientConnection, TcpStream>, report: &mut Report) {
    let request = "GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nConnection: close\r\n\r\n";
    let mut text = String::new();
    let result = tls
        .write_all(request.as_bytes())
        .and_then(|()| tls.flush())
        .and_then(|()| {
            let mut reader = BufReader::new(&mut *tls);
            let mut status = String::new();
            reader.read_line(&mut status)?;
            let _ = reader.read_to_string(&mut text);
            Ok(status)
        });
    match result {
        Ok(status) if status.contains(" 200 ") => {
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
            let ids: Vec<String> = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| v["data"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect();
            report.ok(&format!("GET /v1/models: {}", if ids.is_empty() { "(no models)".to_owned() } else { ids.join(", ") }));
        }
        Ok(status) => report.fail(
            &format!("GET /v1/models answered {}", status.trim()),
            "with access_keys set, doctor cannot list models without a key; otherwise see the proxy's log",
        ),
        Err(e) => report.fail(&format!("GET /v1/models: {e}"), "see the proxy's log"),
    }
}

/// A cheap authenticated request straight to the backend: its model list.
fn check_backend(backend: &Backend, key: Option<&str>, report: &mut Report) {
    let url = backend.url_for("/models");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .proxy(
                backend
                    .proxy
                    .as_deref()
                    .and_then(|p| ureq::Proxy::new(p).ok()),
            )
            .tls_config(crate::upstream::roots::tls_config(&backend.ca_certs))
            .build(),
    );
    let key = backend
        .api_key
        .as_ref()
        .map(|k| k.expose().to_owned())
        .or(key.map(str::to_owned));
    let mut request = agent.get(&url);
    if let Some(k) = &key {
        request = request.header("authorization", &format!("Bearer {k}"));
    }
    let name = &backend.name;
    match request.call() {
        Ok(r) if r.status().is_success() => report.ok(&format!("backend {name:?}: reachable, key accepted")),
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) && key.is_none() => report.fail(
            &format!("backend {name:?}: reachable, but it wants a key ({})", r.status()),
            "pass --api-key (the key you enter in the IDE), or set api_key/api_key_env on the entry",
        ),
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => report.fail(
            &format!("backend {name:?}: reachable, key rejected ({})", r.status()),
            "check the key for this provider",
        ),
        // Some OpenAI-compatible servers have no model list; reaching them is what counts.
        Ok(r) if r.status().as_u16() == 404 => report.ok(&format!("backend {name:?}: reachable (no /v1/models there)")),
        Ok(r) => report.fail(&format!("backend {name:?}: answered {}", r.status()), "check the endpoint URL and the provider's status"),
        Err(e) => report.fail(
            &format!("backend {name:?}: unreachable ({})", crate::upstream::reason(&e)),
            "check the endpoint, DNS and network from the proxy's machine (this check runs from here)",
        ),
    }
}
