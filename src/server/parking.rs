//! The parking loop: one thread that accepts connections and holds every connection that is not
//! being served — handshaking, sending its request head, or idle between requests — on a
//! non-blocking socket polled with mio. A connection goes to the work queue only once a complete
//! request head has been decrypted, so slow or idle clients never hold a worker.
//!
//! Deadlines: handshake + request head within `request_head_timeout` of the first byte we wait
//! for (a client sending one byte a second gets a 408, or a close mid-handshake); an idle
//! keep-alive connection is closed after `idle_timeout`. Deadlines are swept once a second.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ServerConnection;

use super::conn::{Conn, Slot};
use super::exchange::Handler;
use super::pool::{Returns, WorkQueue};
use super::respond::raw_error;
use super::{MAX_HEAD_BYTES, Settings};
use crate::api_error::ApiError;
use crate::error::Error;
use crate::lifecycle::Lifecycle;

const WAKER: Token = Token(0);
/// Tokens 1 and 2: the TLS listener and the optional plain-HTTP one.
const FIRST_LISTENER: usize = 1;
const FIRST_CONN: usize = 3;
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// While draining, how often to look whether the last request has finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Log the connection cap at most this often, so a flood does not flood the log too.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);

/// A listening socket and how its connections speak: TLS with our certificate, or plain HTTP.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct Parking {
    poll: Poll,
    /// Emptied once stopping: dropping them closes the ports to new connections.
    listeners: Vec<Listener>,
    lifecycle: Arc<Lifecycle>,
    shutdown_timeout: Duration,
    queue: Arc<WorkQueue>,
    returns_rx: Receiver<Conn>,
    parked: Vec<Option<Parked>>,
    free: Vec<usize>,
    open: Arc<AtomicUsize>,
    max_connections: usize,
    head_timeout: Duration,
    idle_timeout: Duration,
    last_cap_warning: Option<Instant>,
}

struct Parked {
    conn: Conn,
    deadline: Instant,
    /// Waiting for the next request with nothing received yet (the idle deadline applies).
    idle: bool,
    /// Whether write interest is registered (a handshake flight did not fit the socket buffer).
    writing: bool,
}

/// What a read/handshake step left the connection in.
enum Step {
    Waiting { writing: bool },
    HeadReady,
    Close,
    Reject(ApiError),
}

impl Parking {
    pub fn new(
        listeners: Vec<Listener>,
        handler: Arc<dyn Handler>,
        settings: &Settings,
        lifecycle: Arc<Lifecycle>,
    ) -> Result<Self, Error> {
        let poll = Poll::new()?;
        for (i, listener) in listeners.iter().enumerate() {
            listener.socket.set_nonblocking(true)?;
            poll.registry().register(
                &mut SourceFd(&listener.socket.as_raw_fd()),
                Token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        lifecycle.set_waker(Arc::clone(&waker));
        let (returns_tx, returns_rx) = mpsc::channel();
        let returns = Returns {
            tx: returns_tx,
            waker: Arc::clone(&waker),
        };
        let queue = WorkQueue::new(settings, handler, returns, Arc::clone(&lifecycle));
        Ok(Parking {
            poll,
            listeners,
            lifecycle,
            shutdown_timeout: settings.shutdown_timeout,
            queue,
            returns_rx,
            parked: Vec::new(),
            free: Vec::new(),
            open: Arc::clone(&settings.open_connections),
            max_connections: settings.max_connections,
            head_timeout: settings.timeouts.request_head,
            idle_timeout: settings.timeouts.idle,
            last_cap_warning: None,
        })
    }

    /// Runs until stopped and drained.
    pub fn run(&mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if self.lifecycle.stopping() {
                let deadline = *drain_deadline.get_or_insert_with(|| {
                    self.begin_drain();
                    Instant::now() + self.shutdown_timeout
                });
                let running = self.queue.in_flight();
                if running == 0 {
                    info!("all requests finished; exiting");
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    warn!(
                        "{running} request(s) still running after server.shutdown_timeout ({}s); exiting",
                        self.shutdown_timeout.as_secs()
                    );
                    return Ok(());
                }
            }
            let timeout = if drain_deadline.is_some() {
                DRAIN_POLL
            } else {
                next_sweep.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for event in &events {
                match event.token() {
                    WAKER => self.take_returns(),
                    Token(t) if t < FIRST_CONN => self.accept_all(t - FIRST_LISTENER),
                    Token(t) => self.step(t - FIRST_CONN),
                }
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + SWEEP_EVERY;
            }
        }
    }

    /// Stops accepting and closes every parked connection: none has a request in flight.
    fn begin_drain(&mut self) {
        for listener in self.listeners.drain(..) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&listener.socket.as_raw_fd()));
        }
        for index in 0..self.parked.len() {
            if let Some(mut parked) = self.unpark(index) {
                parked.conn.say_goodbye();
            }
        }
    }

    fn accept_all(&mut self, which: usize) {
        loop {
            let Some(listener) = self.listeners.get(which) else {
                return;
            };
            let (sock, peer) = match listener.socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog until something closes.
                    warn!("accept failed: {e}; check the open-files limit (ulimit -n)");
                    return;
                }
            };
            let Some(slot) = Slot::take(&self.open, self.max_connections) else {
                let now = Instant::now();
                if self
                    .last_cap_warning
                    .is_none_or(|t| now.duration_since(t) >= CAP_WARN_EVERY)
                {
                    warn!(
                        "connection limit reached (server.max_connections = {}): refusing new connections",
                        self.max_connections
                    );
                    self.last_cap_warning = Some(now);
                }
                drop(sock);
                continue;
            };
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            // Small SSE events must leave at once, not wait for Nagle.
            let _ = sock.set_nodelay(true);
            let tls = match listener
                .tls
                .as_ref()
                .map(|c| ServerConnection::new(Arc::clone(c)))
            {
                None => None,
                Some(Ok(t)) => Some(Box::new(t)),
                Some(Err(e)) => {
                    warn!("TLS session setup failed: {e}");
                    continue;
                }
            };
            let conn = Conn::new(sock, tls, peer, slot);
            let deadline = conn.since + self.head_timeout;
            self.park(conn, deadline);
        }
    }

    /// Connections the workers kept alive.
    fn take_returns(&mut self) {
        while let Ok(mut conn) = self.returns_rx.try_recv() {
            if self.lifecycle.stopping() {
                conn.say_goodbye();
                continue;
            }
            let deadline = Instant::now()
                + if conn.buf.is_empty() {
                    self.idle_timeout
                } else {
                    self.head_timeout
                };
            self.park(conn, deadline);
        }
    }

    fn park(&mut self, conn: Conn, deadline: Instant) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.parked.push(None);
            self.parked.len() - 1
        });
        let fd = conn.sock.as_raw_fd();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(index + FIRST_CONN),
            Interest::READABLE,
        ) {
            debug!("{}: cannot poll the connection: {e}", conn.peer);
            self.free.push(index);
            return;
        }
        if let Some(slot) = self.parked.get_mut(index) {
            *slot = Some(Parked {
                idle: conn.buf.is_empty() && !conn.is_handshaking(),
                conn,
                deadline,
                writing: false,
            });
        }
        // Bytes may have arrived before registration, or sit decrypted in rustls already.
        self.step(index);
    }

    fn step(&mut self, index: usize) {
        let Some(parked) = self.parked.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        match advance(&mut parked.conn) {
            Step::Waiting { writing } => {
                if parked.idle && !parked.conn.buf.is_empty() {
                    // The next request has begun: it gets the head deadline, not the idle one.
                    parked.idle = false;
                    parked.deadline = parked.deadline.min(Instant::now() + self.head_timeout);
                }
                if writing != parked.writing {
                    parked.writing = writing;
                    let interest = if writing {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    let fd = parked.conn.sock.as_raw_fd();
                    if self
                        .poll
                        .registry()
                        .reregister(&mut SourceFd(&fd), Token(index + FIRST_CONN), interest)
                        .is_err()
                    {
                        self.unpark(index);
                    }
                }
            }
            Step::HeadReady => {
                if let Some(parked) = self.unpark(index) {
                    self.queue.push(parked.conn);
                }
            }
            Step::Close => {
                self.unpark(index);
            }
            Step::Reject(err) => {
                if let Some(mut parked) = self.unpark(index) {
                    reject(&mut parked.conn, &err);
                }
            }
        }
    }

    fn unpark(&mut self, index: usize) -> Option<Parked> {
        let parked = self.parked.get_mut(index)?.take()?;
        let fd = parked.conn.sock.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        self.free.push(index);
        Some(parked)
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        for index in 0..self.parked.len() {
            let expired = self.parked[index]
                .as_ref()
                .is_some_and(|p| p.deadline <= now);
            if !expired {
                continue;
            }
            let Some(mut parked) = self.unpark(index) else {
                continue;
            };
            let conn = &mut parked.conn;
            if conn.is_handshaking() {
                debug!("{}: TLS handshake not completed in time; closed", conn.peer);
            } else if conn.buf.is_empty() {
                // An idle keep-alive connection: closing it is routine, not an error.
                conn.say_goodbye();
            } else {
                debug!("{}: request head not completed in time; 408", conn.peer);
                reject(conn, &ApiError::request_timeout());
            }
        }
    }
}

/// Reads what the socket has, advances the handshake, collects plaintext, and writes any
/// handshake flight, all without blocking.
fn advance(conn: &mut Conn) -> Step {
    if conn.tls.is_none() {
        return advance_plain(conn);
    }
    let mut eof = false;
    loop {
        // rustls reads at most one buffer's worth per call; keep going until the socket says
        // WouldBlock, as edge-triggered polling requires.
        let Some(tls) = conn.tls.as_mut() else {
            return Step::Close;
        };
        let more = match tls.read_tls(&mut conn.sock) {
            Ok(0) => {
                eof = true;
                false
            }
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Step::Close,
        };
        if let Err(e) = tls.process_new_packets() {
            debug!("{}: TLS error: {e}", conn.peer);
            // Send the alert rustls queued, so the client learns why.
            let _ = tls.write_tls(&mut conn.sock);
            return Step::Close;
        }
        if conn.take_plaintext() {
            eof = true;
        }
        if conn.buf.len() > MAX_HEAD_BYTES && !conn.has_complete_head() {
            return Step::Reject(ApiError::header_too_large(MAX_HEAD_BYTES));
        }
        if eof || !more {
            break;
        }
    }
    let mut writing = false;
    let Some(tls) = conn.tls.as_mut() else {
        return Step::Close;
    };
    while tls.wants_write() {
        match tls.write_tls(&mut conn.sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                writing = true;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
    if conn.has_complete_head() {
        return Step::HeadReady;
    }
    if eof {
        return Step::Close;
    }
    Step::Waiting { writing }
}

/// `advance` for the plain-HTTP listener: collect bytes until a head is complete.
fn advance_plain(conn: &mut Conn) -> Step {
    let mut chunk = [0u8; 4096];
    loop {
        match conn.sock.read(&mut chunk) {
            Ok(0) => {
                return if conn.has_complete_head() {
                    Step::HeadReady
                } else {
                    Step::Close
                };
            }
            Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
        if conn.buf.len() > MAX_HEAD_BYTES && !conn.has_complete_head() {
            return Step::Reject(ApiError::header_too_large(MAX_HEAD_BYTES));
        }
    }
    if conn.has_complete_head() {
        Step::HeadReady
    } else {
        Step::Waiting { writing: false }
    }
}

/// Writes an error response without blocking (best effort: a client that does not read gets
/// nothing) and closes.
fn reject(conn: &mut Conn, err: &ApiError) {
    if conn.is_handshaking() {
        return;
    }
    match conn.tls.as_mut() {
        None => {
            let _ = conn.sock.write_all(&raw_error(err));
        }
        Some(tls) => {
            let _ = tls.writer().write_all(&raw_error(err));
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(&mut conn.sock).is_err() {
                    break;
                }
            }
        }
    }
}
