//! The parking loop: one thread that accepts connections and holds every connection that is not
//! being served — handshaking, sending its request head or body, or idle between requests — on a
//! non-blocking socket polled with mio. A connection goes to the work queue only once a whole
//! request (head and body) has arrived ([`intake`](super::intake)), so slow or idle clients never
//! hold a worker.
//!
//! Deadlines, swept once a second: handshake + request head within `request_head_timeout` of the
//! first byte waited for (a client sending a byte a second gets a 408, or a close mid-handshake);
//! a request body within `request_body_timeout` of its head, and after the first
//! [`BODY_GRACE`] at no less than `min_request_body_rate` on average (408); an idle keep-alive
//! connection is closed after `idle_timeout`.
//!
//! Shares: each client address may hold `max_connections_per_client` connections. When all
//! `max_connections` places are taken, the connection idle for longest is closed to let a new
//! one in (nginx does the same with keep-alive connections when it runs short).

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ServerConnection;

use super::Lifecycle;
use super::conn::{Conn, Slot};
use super::exchange::Handler;
use super::intake::{Limits, Step};
use super::limits::{BodyBudget, Clients, client_key};
use super::pool::{Returns, WorkQueue};
use super::respond::raw_error;
use super::sys::{self, REARM, Source};
use super::{Settings, admit};
use crate::api_error::ApiError;
use crate::error::Error;
use crate::logging::Field;

const WAKER: Token = Token(0);
/// Tokens 1 and 2: the TLS listener and the optional plain-HTTP one.
const FIRST_LISTENER: usize = 1;
const FIRST_CONN: usize = 3;
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// While draining, how often to look whether the last request has finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Log a refused connection at most this often, so a flood does not flood the log too.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);
/// A request body's minimum rate is judged only after this long: a client may pause before it
/// starts (curl waits up to a second for `100 Continue`).
pub const BODY_GRACE: Duration = Duration::from_secs(10);
/// Lingering close after an error answer (nginx's `lingering_time` and `lingering_timeout`):
/// what the client still sends is read and discarded for at most this long in all ...
const LINGER_FOR: Duration = Duration::from_secs(30);
/// ... and until it has sent nothing for this long.
const LINGER_QUIET: Duration = Duration::from_secs(5);

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
    clients: Arc<Clients>,
    budget: BodyBudget,
    max_body: u64,
    head_timeout: Duration,
    body_timeout: Duration,
    min_body_rate: u64,
    idle_timeout: Duration,
    last_cap_warning: Option<Instant>,
    last_client_warning: Option<Instant>,
}

struct Parked {
    conn: Conn,
    /// For the handshake and the request head, an idle connection, or a lingering close.
    deadline: Instant,
    /// Answered with an error and closing: what arrives is discarded; when it last did.
    lingering: Option<Instant>,
    /// Since when it waits for its next request with nothing received (the idle deadline).
    idle_since: Option<Instant>,
    /// Whether write interest is registered (a handshake flight or a `100 Continue` did not fit
    /// the socket buffer).
    writing: bool,
}

/// How a connection leaves the parking loop when it is not handed to a worker.
enum Ending {
    /// Routine: closed, or told goodbye (idle, draining).
    Quiet,
    /// The client went away or broke the connection.
    Gone,
    /// An error answer, then close.
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
                &mut Source(&listener.socket),
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
        let queue = WorkQueue::new(settings, handler, returns, Arc::clone(&lifecycle))?;
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
            clients: Arc::clone(&settings.clients),
            budget: settings.body_budget.clone(),
            max_body: settings.max_body_bytes,
            head_timeout: settings.timeouts.request_head,
            body_timeout: settings.timeouts.request_body,
            min_body_rate: settings.min_body_rate,
            idle_timeout: settings.timeouts.idle,
            last_cap_warning: None,
            last_client_warning: None,
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
                let running = self.queue.in_flight() + self.receiving();
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
                DRAIN_POLL.min(next_sweep.saturating_duration_since(Instant::now()))
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

    /// Connections whose request body is still arriving.
    fn receiving(&self) -> usize {
        self.parked
            .iter()
            .flatten()
            .filter(|p| p.conn.receiving.is_some())
            .count()
    }

    /// Stops accepting and closes every parked connection that has no request under way; a
    /// request whose body is still arriving may finish within the drain.
    fn begin_drain(&mut self) {
        for listener in self.listeners.drain(..) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut Source(&listener.socket));
        }
        for index in 0..self.parked.len() {
            let receiving = self.parked[index]
                .as_ref()
                .is_some_and(|p| p.conn.receiving.is_some());
            if !receiving {
                self.end(index, Ending::Quiet);
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(FIRST_LISTENER + which);
                    let registry = self.poll.registry();
                    sys::rearm(registry, &listener.socket, token, Interest::READABLE);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog until something closes.
                    warn!("accept failed: {e}; check the open-files limit (ulimit -n)");
                    return;
                }
            };
            let tls = listener.tls.clone();
            // The client's own share first: one that has its share open loses its own idle
            // connection, never another client's.
            let mut client = self.clients.connect(peer.ip());
            if client.is_none() && self.evict_oldest_idle(Some(peer.ip())) {
                client = self.clients.connect(peer.ip());
            }
            let Some(client) = client else {
                if warn_now(&mut self.last_client_warning) {
                    warn!(
                        "{} has its share of connections open (server.max_connections_per_client); \
                         refusing more from it",
                        peer.ip()
                    );
                }
                continue;
            };
            let slot = match Slot::take(&self.open, self.max_connections) {
                Some(slot) => Some(slot),
                None if self.evict_oldest_idle(None) => {
                    Slot::take(&self.open, self.max_connections)
                }
                None => None,
            };
            let Some(slot) = slot else {
                if warn_now(&mut self.last_cap_warning) {
                    warn!(
                        "connection limit reached (server.max_connections = {}) with none idle: \
                         refusing new connections",
                        self.max_connections
                    );
                }
                continue;
            };
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            // Small SSE events must leave at once, not wait for Nagle.
            let _ = sock.set_nodelay(true);
            let tls = match tls.map(ServerConnection::new) {
                None => None,
                Some(Ok(t)) => Some(Box::new(t)),
                Some(Err(e)) => {
                    warn!("TLS session setup failed: {e}");
                    continue;
                }
            };
            let conn = Conn::new(sock, tls, peer, (slot, client));
            let deadline = conn.since + self.head_timeout;
            self.park(conn, deadline);
        }
    }

    /// Closes the connection that has been idle for longest (of the client at `of`, if given),
    /// to make room. False when none is idle.
    fn evict_oldest_idle(&mut self, of: Option<std::net::IpAddr>) -> bool {
        let client = of.map(client_key);
        let oldest = self
            .parked
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let p = p.as_ref()?;
                let mine = client.is_none_or(|c| client_key(p.conn.peer.ip()) == c);
                mine.then_some((i, p.idle_since?))
            })
            .min_by_key(|(_, since)| *since)
            .map(|(i, _)| i);
        match oldest {
            Some(index) => {
                debug!("connection limit reached: closing the connection idle for longest");
                self.end(index, Ending::Quiet);
                true
            }
            None => false,
        }
    }

    /// Connections the workers kept alive.
    fn take_returns(&mut self) {
        while let Ok(mut conn) = self.returns_rx.try_recv() {
            if self.lifecycle.stopping() && conn.receiving.is_none() {
                conn.say_goodbye();
                continue;
            }
            let deadline = Instant::now()
                + if conn.is_idle() {
                    self.idle_timeout
                } else {
                    self.head_timeout
                };
            self.park(conn, deadline);
        }
    }

    fn park(&mut self, mut conn: Conn, deadline: Instant) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.parked.push(None);
            self.parked.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut Source(&conn.sock),
            Token(index + FIRST_CONN),
            Interest::READABLE,
        ) {
            debug!("{}: cannot poll the connection: {e}", conn.peer);
            conn.say_goodbye();
            self.free.push(index);
            return;
        }
        let idle_since = (conn.is_idle() && !conn.is_handshaking()).then(Instant::now);
        if let Some(slot) = self.parked.get_mut(index) {
            *slot = Some(Parked {
                conn,
                deadline,
                lingering: None,
                idle_since,
                writing: false,
            });
        }
        // Bytes may have arrived before registration, or sit decrypted in rustls already.
        self.step(index);
    }

    /// Answers with `err` and closes after a lingering close: the client may still be sending
    /// (an upload refused at its head), and closing with unread bytes makes the kernel reset the
    /// connection, destroying the answer before the client reads it. So the answer and a FIN go
    /// out, and what arrives is read and discarded until the client closes, is quiet for
    /// [`LINGER_QUIET`], or [`LINGER_FOR`] has passed.
    fn reject_and_linger(&mut self, mut conn: Conn, err: &ApiError) {
        if conn.is_handshaking() || !write_error(&mut conn, err) {
            return;
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.parked.push(None);
            self.parked.len() - 1
        });
        let registered = self.poll.registry().register(
            &mut Source(&conn.sock),
            Token(index + FIRST_CONN),
            Interest::READABLE,
        );
        if registered.is_err() {
            self.free.push(index);
            return;
        }
        let now = Instant::now();
        if let Some(slot) = self.parked.get_mut(index) {
            *slot = Some(Parked {
                conn,
                deadline: now + LINGER_FOR,
                lingering: Some(now),
                idle_since: None,
                writing: false,
            });
        }
        self.step(index);
    }

    /// Reads and discards what a lingering connection has sent; closes it at its end.
    fn discard(&mut self, index: usize) {
        let Some(parked) = self.parked.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let mut sink = [0u8; 16 * 1024];
        loop {
            match io::Read::read(&mut parked.conn.sock, &mut sink) {
                Ok(0) => return self.end(index, Ending::Gone),
                Ok(_) => parked.lingering = Some(Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(index + FIRST_CONN);
                    let registry = self.poll.registry();
                    sys::rearm(registry, &parked.conn.sock, token, Interest::READABLE);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.end(index, Ending::Gone),
            }
        }
    }

    fn step(&mut self, index: usize) {
        let limits = Limits {
            max_body: self.max_body,
            budget: &self.budget,
        };
        let head_timeout = self.head_timeout;
        let Some(parked) = self.parked.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if parked.lingering.is_some() {
            return self.discard(index);
        }
        let conn = &mut parked.conn;
        // Read and receive in turns until the socket is drained or a request is complete.
        let (step, eof) = loop {
            let Some(read) = read_available(conn) else {
                return self.end(index, Ending::Gone);
            };
            let step = if conn.is_handshaking() {
                Step::NeedMore
            } else {
                conn.receive(limits)
            };
            if !matches!(step, Step::NeedMore) || read.eof || !read.more {
                break (step, read.eof);
            }
        };
        let writing = match conn.flush_nonblocking() {
            Ok(more) => more,
            Err(_) => return self.end(index, Ending::Gone),
        };
        match step {
            Step::Ready(complete) => {
                let Some(mut parked) = self.unpark(index) else {
                    return;
                };
                parked.conn.ready = Some(complete);
                match admit(&mut parked.conn, &self.clients) {
                    Ok(()) => self.queue.push(parked.conn),
                    Err(e) => {
                        parked.conn.ready = None;
                        self.reject_and_linger(parked.conn, &e);
                    }
                }
            }
            Step::Reject(e) => self.end(index, Ending::Reject(e)),
            Step::NeedMore if eof => self.end(index, Ending::Gone),
            Step::NeedMore => {
                if parked.idle_since.is_some() && !parked.conn.is_idle() {
                    // The next request has begun: it gets the head deadline, not the idle one.
                    parked.idle_since = None;
                    parked.deadline = parked.deadline.min(Instant::now() + head_timeout);
                }
                if writing != parked.writing || REARM {
                    parked.writing = writing;
                    let interest = if writing {
                        Interest::READABLE | Interest::WRITABLE
                    } else {
                        Interest::READABLE
                    };
                    let token = Token(index + FIRST_CONN);
                    let registered = self.poll.registry().reregister(
                        &mut Source(&parked.conn.sock),
                        token,
                        interest,
                    );
                    if registered.is_err() {
                        self.end(index, Ending::Gone);
                    }
                }
            }
        }
    }

    fn unpark(&mut self, index: usize) -> Option<Parked> {
        let parked = self.parked.get_mut(index)?.take()?;
        let _ = self
            .poll
            .registry()
            .deregister(&mut Source(&parked.conn.sock));
        self.free.push(index);
        Some(parked)
    }

    /// Takes a connection out of the loop for good: says goodbye, answers with an error, or
    /// just closes; a request whose body was arriving gets its access-log line.
    fn end(&mut self, index: usize, ending: Ending) {
        let Some(mut parked) = self.unpark(index) else {
            return;
        };
        let conn = &mut parked.conn;
        if let Some(r) = conn.receiving.as_ref() {
            let (method, path) = r.describe();
            let status = match &ending {
                Ending::Reject(e) => e.status.as_u16().to_string(),
                Ending::Quiet | Ending::Gone => "-".to_owned(),
            };
            info!(
                target: "trae_proxy::access",
                "{} {} status={status} model=- backend=- failovers=0 ms={} bytes=0 peer={} \
                 aborted=client (request body: {} bytes received)",
                Field(method.as_str()),
                Field(path),
                r.started.elapsed().as_millis(),
                conn.peer,
                r.received(),
            );
        }
        match ending {
            Ending::Quiet => conn.say_goodbye(),
            Ending::Gone => {}
            Ending::Reject(e) => {
                parked.conn.receiving = None;
                self.reject_and_linger(parked.conn, &e);
            }
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        for index in 0..self.parked.len() {
            let Some(parked) = self.parked[index].as_ref() else {
                continue;
            };
            let conn = &parked.conn;
            let ending = if let Some(last) = parked.lingering {
                (parked.deadline <= now || now.duration_since(last) >= LINGER_QUIET)
                    .then_some(Ending::Gone)
            } else if let Some(r) = conn.receiving.as_ref() {
                let elapsed = now.saturating_duration_since(r.started);
                let too_slow = self.min_body_rate > 0
                    && elapsed > BODY_GRACE
                    && (r.received() as f64) < self.min_body_rate as f64 * elapsed.as_secs_f64();
                if elapsed >= self.body_timeout || too_slow {
                    debug!(
                        "{}: request body too slow ({} bytes in {} ms); 408",
                        conn.peer,
                        r.received(),
                        elapsed.as_millis()
                    );
                    Some(Ending::Reject(ApiError::request_timeout()))
                } else {
                    None
                }
            } else if parked.deadline > now {
                None
            } else if conn.is_handshaking() {
                debug!("{}: TLS handshake not completed in time; closed", conn.peer);
                Some(Ending::Gone)
            } else if conn.is_idle() {
                // An idle keep-alive connection: closing it is routine, not an error.
                Some(Ending::Quiet)
            } else {
                debug!("{}: request head not completed in time; 408", conn.peer);
                Some(Ending::Reject(ApiError::request_timeout()))
            };
            if let Some(ending) = ending {
                self.end(index, ending);
            }
        }
    }
}

/// Whether a rate-limited warning is due now; records it if so.
fn warn_now(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= CAP_WARN_EVERY) {
        *last = Some(now);
        true
    } else {
        false
    }
}

/// Most plaintext collected in one turn before intake consumes it: a fast sender cannot make a
/// connection's buffer grow by the whole socket buffer (megabytes) at once.
const READ_PER_TURN: usize = 64 * 1024;

/// What one turn of reading left.
struct Read {
    /// The client has ended its side (TCP or TLS close).
    eof: bool,
    /// The socket may hold more (the turn stopped at [`READ_PER_TURN`]).
    more: bool,
}

/// Reads what the socket has (up to [`READ_PER_TURN`]), advances the TLS handshake and collects
/// plaintext, without blocking. `None`: the connection broke (a TLS error's alert is sent
/// first).
fn read_available(conn: &mut Conn) -> Option<Read> {
    if conn.tls.is_none() {
        return read_plain(conn);
    }
    let mut read = Read {
        eof: false,
        more: false,
    };
    loop {
        let tls = conn.tls.as_mut()?;
        // rustls reads at most one buffer's worth per call; keep going until the socket says
        // WouldBlock, as edge-triggered polling requires.
        let drained = match tls.read_tls(&mut conn.sock) {
            Ok(0) => {
                read.eof = true;
                true
            }
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        if let Err(e) = tls.process_new_packets() {
            debug!("{}: TLS error: {e}", conn.peer);
            // Send the alert rustls queued, so the client learns why.
            let _ = tls.write_tls(&mut conn.sock);
            return None;
        }
        if conn.take_plaintext() {
            read.eof = true;
        }
        if read.eof || drained {
            return Some(read);
        }
        if conn.buf.len() >= READ_PER_TURN {
            read.more = true;
            return Some(read);
        }
    }
}

/// `read_available` for the plain-HTTP listener.
fn read_plain(conn: &mut Conn) -> Option<Read> {
    let mut chunk = [0u8; 4096];
    loop {
        match io::Read::read(&mut conn.sock, &mut chunk) {
            Ok(0) => {
                return Some(Read {
                    eof: true,
                    more: false,
                });
            }
            Ok(n) => conn.buf.extend_from_slice(chunk.get(..n)?),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Some(Read {
                    eof: false,
                    more: false,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if conn.buf.len() >= READ_PER_TURN {
            return Some(Read {
                eof: false,
                more: true,
            });
        }
    }
}

/// Writes an error response without blocking (best effort: a client that does not read gets
/// nothing), then ends our side: TLS close_notify and a FIN. False when the connection broke.
fn write_error(conn: &mut Conn, err: &ApiError) -> bool {
    let written = match conn.tls.as_mut() {
        None => io::Write::write_all(&mut conn.sock, &raw_error(err)).is_ok(),
        Some(tls) => {
            let _ = io::Write::write_all(&mut tls.writer(), &raw_error(err));
            tls.send_close_notify();
            let mut ok = true;
            while tls.wants_write() {
                if tls.write_tls(&mut conn.sock).is_err() {
                    ok = false;
                    break;
                }
            }
            ok
        }
    };
    written && conn.sock.shutdown(std::net::Shutdown::Write).is_ok()
}
