//! The optional admin listener (`server.admin_bind`): plain HTTP, `GET /healthz` for liveness,
//! `GET /metrics` for Prometheus, and the status page (`GET /`, `GET /status.json`). Never on
//! the public TLS port: metrics and usage name backends, models and key names, which are
//! nobody else's business. One thread answers one short request at a time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use log::debug;
use serde_json::Value;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::status;

/// What the admin listener serves. The status report is given once the proxy is built (the
/// listener is bound before: its address must be known to the proxy's tunnel rules).
pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The status report as JSON text.
    pub status: OnceLock<Box<dyn Fn() -> String + Send + Sync>>,
    /// Reloads the config file (`POST /reload`, from this machine only): the outcome in words.
    pub reload: OnceLock<Box<dyn Fn() -> Result<String, String> + Send + Sync>>,
}

/// A request head larger than this is not a scrape.
const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` and answers on a thread of its own. Returns the bound address.
pub fn start(addr: SocketAddr, admin: Arc<Admin>) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("admin".to_owned())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let local = conn.peer_addr().is_ok_and(|p| p.ip().is_loopback());
                if let Err(e) = answer(conn, &admin, local) {
                    debug!("admin request failed: {e}");
                }
            }
        })?;
    Ok(bound)
}

/// One request; `local` when it came from this machine (loopback).
fn answer(mut conn: TcpStream, admin: &Admin, local: bool) -> io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_HEAD {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    // The page refreshes itself with the same URL; a query string changes nothing.
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let report = || {
        admin
            .status
            .get()
            .map_or_else(|| "null".to_owned(), |report| report())
    };
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            admin.metrics.render(),
        ),
        (b"GET", b"/status.json") => ("200 OK", "application/json", report()),
        (b"GET", b"/") => {
            let report = serde_json::from_str(&report()).unwrap_or(Value::Null);
            (
                "200 OK",
                "text/html; charset=utf-8",
                status::page::render(&report),
            )
        }
        // The one mechanism for every OS (Windows has no SIGHUP): `trae-proxy reload` posts
        // here. Only from this machine: the listener may be on the LAN for Prometheus.
        (b"POST", b"/reload") if !local => (
            "403 Forbidden",
            "text/plain",
            "reload is accepted from this machine only\n".to_owned(),
        ),
        (b"POST", b"/reload") => match admin.reload.get().map(|reload| reload()) {
            Some(Ok(done)) => ("200 OK", "text/plain", format!("{done}\n")),
            Some(Err(why)) => (
                "500 Internal Server Error",
                "text/plain",
                format!("{why}\n"),
            ),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "starting\n".to_owned(),
            ),
        },
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only (and POST /reload)\n".to_owned(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
