//! The HTTPS server: a listener whose connections are parked on one polling thread while they
//! handshake, send their request head or sit idle, and a fixed pool of worker threads that each
//! serve one connection at a time once a complete request head is there.
//!
//! ```text
//!   accept ──▶ parking (mio, non-blocking) ──head complete──▶ work queue ──▶ worker (blocking)
//!                 ▲   handshake, head, idle keep-alive                          │
//!                 └────────────── keep-alive, nothing buffered ◀────────────────┘
//! ```
//!
//! Why: with blocking I/O, a worker that waits for a client's next request is a worker lost.
//! Parking the waiting ones on a poller (as Apache's event MPM does with keep-alive connections)
//! means idle and slow clients cost a few KiB each and no thread, while the workers only ever
//! wait on the backend and on writing to the client.

mod conn;
mod exchange;
mod parking;
mod pool;
pub mod respond;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

pub use exchange::{Handler, Transport};
pub use parking::Listener;
pub use respond::{After, BodyStream, Headers, Responder, Upgrade, json_content_type};

use crate::config::Timeouts;
use crate::error::Error;
use crate::lifecycle::Lifecycle;

/// Largest request head (request line and headers) accepted; more is answered with 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the server needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub max_connections: usize,
    pub max_body_bytes: u64,
    pub timeouts: Timeouts,
    /// How long a graceful stop waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Counts open client connections (shared with the metrics).
    pub open_connections: Arc<AtomicUsize>,
    /// For `CONNECT` interception: the TLS config of the main listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Binds `addr` (port 0 picks a free port). Separate from [`run`] so that the caller can
/// report the bound address before serving.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })
}

/// Serves until `lifecycle` says stop and the requests in flight are done (or
/// `shutdown_timeout` has passed).
pub fn run(
    listeners: Vec<Listener>,
    handler: Arc<dyn Handler>,
    settings: Settings,
    lifecycle: Arc<Lifecycle>,
) -> Result<(), Error> {
    let mut parking = parking::Parking::new(listeners, handler, &settings, lifecycle)?;
    parking.run()
}

/// Serves one plain-HTTP connection on the calling thread until it closes: for small
/// side servers (the built-in `mock` backend) that want the same parsing, limits and error
/// answers as the proxy without TLS or the worker pool.
pub fn serve_plain(
    mut sock: std::net::TcpStream,
    handler: &dyn Handler,
    max_body: u64,
    io_timeout: Duration,
) {
    use std::io::Read;
    let peer = match sock.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    if sock.set_read_timeout(Some(io_timeout)).is_err()
        || sock.set_write_timeout(Some(io_timeout)).is_err()
    {
        return;
    }
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while conn::find_head_end(&buf).is_none() {
            if buf.len() > MAX_HEAD_BYTES {
                let _ = std::io::Write::write_all(
                    &mut sock,
                    &respond::raw_error(&crate::api_error::ApiError::header_too_large(
                        MAX_HEAD_BYTES,
                    )),
                );
                return;
            }
            match sock.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        match exchange::serve(
            &mut sock,
            &mut buf,
            peer,
            Transport::Plain,
            max_body,
            handler,
        ) {
            Ok(After::KeepAlive) => {}
            Ok(_) | Err(_) => return,
        }
    }
}
