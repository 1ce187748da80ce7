//! The HTTPS server: a listener whose connections are parked on one polling thread while they
//! handshake, send their request (head and body) or sit idle, and a pool of worker threads that
//! each serve one connection at a time once a whole request is there.
//!
//! ```text
//!   accept ──▶ parking (mio, non-blocking) ──request complete──▶ work queue ──▶ worker (blocking)
//!                 ▲   handshake, head, body, idle keep-alive                      │
//!                 └──────────────── keep-alive, next request not complete ◀──────┘
//! ```
//!
//! Why: with blocking I/O, a worker that waits for a client is a worker lost. Parking the
//! waiting ones on a poller (as Apache's event MPM does with keep-alive connections, and nginx
//! by buffering request bodies) means idle and slow clients cost a few KiB each and no thread,
//! while the workers only ever wait on the backend and on writing to the client — the latter
//! under a write-progress deadline.

mod conn;
mod exchange;
mod intake;
mod lifecycle;
mod limits;
pub mod os;
mod parking;
mod pool;
pub mod respond;
mod sys;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

pub use exchange::Handler;
pub use lifecycle::Lifecycle;
pub use limits::{BodyBudget, Clients};
pub use parking::Listener;
pub use respond::{After, BodyStream, Headers, Responder, Transport, Upgrade, json_content_type};

use crate::api_error::ApiError;
use crate::config::Timeouts;
use crate::error::Error;

/// Largest request head (request line and headers) accepted; more is answered with 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the server needs to know from the configuration.
#[derive(Clone)]
pub struct Settings {
    pub workers: usize,
    pub max_connections: usize,
    pub max_body_bytes: u64,
    /// Request bodies held in memory at once, by all connections.
    pub body_budget: BodyBudget,
    /// Connections and requests in flight per client address.
    pub clients: Arc<Clients>,
    /// Bytes per second a request body must average after its first seconds; 0: no minimum.
    pub min_body_rate: u64,
    pub timeouts: Timeouts,
    /// How long a graceful stop waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Counts open client connections (shared with the metrics).
    pub open_connections: Arc<AtomicUsize>,
    /// For `CONNECT` interception: the TLS config of the main listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Connections the kernel may hold for us before we accept them. std listens with 128: a burst
/// of a thousand connects (a team's agents after a restart) overflows that, and a refused SYN
/// is retried after 1, 3, 7 s. nginx uses 511; Linux caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 1024;

/// Binds `addr` (port 0 picks a free port). Separate from [`run`] so that the caller can
/// report the bound address before serving.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let listen = || -> std::io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // As std does: a restart may bind while old connections sit in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    listen().map_err(|source| Error::Bind { addr, source })
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

/// Takes the client's request-in-flight share for the request in `conn.ready`, or says why not.
/// The request carries it until its response's last bytes are written.
fn admit(conn: &mut conn::Conn, clients: &Arc<Clients>) -> Result<(), ApiError> {
    match clients.start_request(conn.peer.ip()) {
        Some(share) => {
            if let Some(ready) = conn.ready.as_mut() {
                ready.share = Some(share);
            }
            Ok(())
        }
        None => Err(ApiError::client_busy(clients.max_requests())),
    }
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
    use std::io::{Read, Write};
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
    let budget = BodyBudget::new(max_body.saturating_mul(2));
    let limits = intake::Limits {
        max_body,
        budget: &budget,
    };
    let mut buf = Vec::new();
    let mut receiving = None;
    let mut chunk = [0u8; 4096];
    loop {
        let mut out = Vec::new();
        let step = intake::advance(&mut receiving, &mut buf, limits, &mut out);
        if !out.is_empty() && sock.write_all(&out).is_err() {
            return;
        }
        let after = match step {
            intake::Step::NeedMore => match sock.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    continue;
                }
            },
            intake::Step::Reject(e) => exchange::reject(&mut sock, &e),
            intake::Step::Ready(complete) => {
                exchange::serve(&mut sock, *complete, peer, Transport::Plain, handler)
            }
        };
        match after {
            Ok(After::KeepAlive) => {}
            Ok(_) | Err(_) => return,
        }
    }
}
