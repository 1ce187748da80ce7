//! The worker pool, the queue that feeds it, and what a worker does with one connection: serve
//! requests while complete heads are buffered (or arrive within a moment), then give it back to
//! the parking loop or close it.
//!
//! The pool is bounded by `server.workers` but started on demand: a connection queued while no
//! worker is idle starts one, and a worker idle for [`IDLE_RETIRE`] ends (down to
//! [`MIN_WORKERS`]). A small box idles with a handful of threads; a burst of long streams gets a
//! thread each, up to the bound, and gives the memory back afterwards. Idle workers are woken
//! most recently idle first (`State::asleep` says why).
//!
//! A panic while serving is caught here: that connection is dropped and logged, the worker and
//! the process go on.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::{debug, error};

use super::Lifecycle;
use super::conn::{Conn, Writer};
use super::exchange::{self, Handler};
use super::intake::{Limits, Step};
use super::respond::Transport;
use super::respond::{After, Upgrade};
use super::{Settings, admit};

/// Workers kept even when idle, so a request after a quiet spell finds one ready.
const MIN_WORKERS: usize = 2;
/// An idle worker beyond [`MIN_WORKERS`] ends after this long.
pub const IDLE_RETIRE: Duration = Duration::from_secs(5);
/// How long a worker waits for a connection before it gives up what it keeps for itself
/// ([`Handler::idle`]). Under load the next connection comes sooner, and nothing moves.
const RELEASE_AFTER: Duration = Duration::from_millis(100);
/// How long the last worker of a burst to retire waits for the others to end before it trims
/// the allocator.
const TRIM_AFTER: Duration = Duration::from_millis(200);
/// How long a worker waits for the next request on a connection before parking it. Parking and
/// waking cost two thread hand-offs and two epoll updates (~30-40 µs on a 2-core machine); a
/// client with more to send sends it within this time, an idle one costs the worker a moment.
const LINGER: Duration = Duration::from_millis(2);
/// Worker stack: parsing JSON nests up to serde_json's limit of 128 levels, and 1 MiB leaves
/// room even in debug builds. Only touched pages count towards RSS.
const STACK: usize = 1024 * 1024;

/// Connections with a complete request head, waiting for a worker, and the workers. The queue's
/// length is bounded by `server.max_connections`, since every queued connection holds a slot.
pub struct WorkQueue {
    state: Mutex<State>,
    /// Wakes the starter thread when workers are wanted (`State::to_start`).
    wanted: Condvar,
    /// Connections queued or being served: what a graceful stop waits for.
    in_flight: AtomicUsize,
    max_workers: usize,
    job: Job,
}

#[derive(Default)]
struct State {
    items: VecDeque<Conn>,
    /// Workers waiting for a connection and not yet claimed by one, the most recently idle
    /// last: that one is woken first. It is the worker most likely to hold a kept backend
    /// connection to the backend the next request goes to (it released none yet, see
    /// [`RELEASE_AFTER`]) and warm caches, and under a light load the same few workers serve
    /// while the others reach [`IDLE_RETIRE`] and end. Woken in turn, every worker would serve
    /// now and then, and an agent's tool loop would open a backend connection per worker.
    ///
    /// A worker counts as busy from the moment it is claimed (taken off here), not from when
    /// it wakes: otherwise a burst of connections sees the same few "idle" workers and starts
    /// none.
    asleep: Vec<Arc<Waiter>>,
    /// Workers alive, or asked of the starter thread.
    total: usize,
    /// Workers the starter thread is yet to start.
    to_start: usize,
}

/// An idle worker's place in line, with a wake-up of its own (see `State::asleep`).
#[derive(Default)]
struct Waiter {
    wake: Condvar,
    /// Taken off the line for a connection (set under the state's lock).
    claimed: AtomicBool,
}

impl State {
    /// Takes `waiter` off the line, if it is on it.
    fn leave(&mut self, waiter: &Arc<Waiter>) {
        if let Some(i) = self.asleep.iter().rposition(|s| Arc::ptr_eq(s, waiter)) {
            self.asleep.remove(i);
        }
    }
}

/// What every worker needs.
#[derive(Clone)]
struct Job {
    settings: Settings,
    handler: Arc<dyn Handler>,
    returns: Returns,
    lifecycle: Arc<Lifecycle>,
}

impl WorkQueue {
    pub fn new(
        settings: &Settings,
        handler: Arc<dyn Handler>,
        returns: Returns,
        lifecycle: Arc<Lifecycle>,
    ) -> io::Result<Arc<Self>> {
        let queue = Arc::new(WorkQueue {
            state: Mutex::new(State::default()),
            wanted: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            max_workers: settings.workers,
            job: Job {
                settings: settings.clone(),
                handler,
                returns,
                lifecycle,
            },
        });
        {
            // The first workers come from the starter thread, like every other.
            let mut state = queue.lock();
            state.total = MIN_WORKERS.min(settings.workers);
            state.to_start = state.total;
        }
        // Without it no worker would ever start: the server does not start.
        let starter = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("starter".to_owned())
            .spawn(move || starter.start_wanted())?;
        Ok(queue)
    }

    pub fn push(self: &Arc<Self>, conn: Conn) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut state = self.lock();
        state.items.push_back(conn);
        if let Some(waiter) = state.asleep.pop() {
            waiter.claimed.store(true, Ordering::Relaxed);
            drop(state);
            waiter.wake.notify_one();
        } else if state.total < self.max_workers {
            // Started by the starter thread, not here on the parking loop: creating a thread
            // took up to 0.7 s while hundreds of others were running (a burst of 1,000 streams,
            // docs/operations.md), and the parking loop serves every other connection.
            state.total += 1;
            state.to_start += 1;
            drop(state);
            self.wanted.notify_one();
        }
        // Otherwise every worker is busy at the bound; the first one free takes it.
    }

    /// The starter thread: starts the workers `push` asked for, one after another.
    fn start_wanted(self: Arc<Self>) {
        loop {
            let mut state = self.lock();
            while state.to_start == 0 {
                state = self
                    .wanted
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            state.to_start -= 1;
            drop(state);
            self.spawn();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn spawn(self: &Arc<Self>) {
        let queue = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("worker".to_owned())
            .stack_size(STACK)
            .spawn(move || queue.work());
        if let Err(e) = spawned {
            // Out of threads or memory: the queued connection waits for a busy worker.
            error!(
                "cannot start a worker thread: {e}; serving with fewer (check ulimit -u and memory)"
            );
            self.lock().total -= 1;
        }
    }

    /// A worker's life: take connections until idle for too long.
    fn work(&self) {
        thread_cache::enable();
        super::os::note_stack();
        let waiter = Arc::new(Waiter::default());
        while let Some(conn) = self.next(&waiter) {
            let peer = conn.peer;
            let job = &self.job;
            let served = catch_unwind(AssertUnwindSafe(|| {
                serve_connection(conn, &job.settings, job.handler.as_ref(), &job.lifecycle)
            }));
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            match served {
                Ok(Some(conn)) => job.returns.park(conn),
                Ok(None) => {}
                Err(_) => error!(
                    "internal error: a panic while serving {peer}; its connection was dropped \
                     and the server goes on. Please report this with the log above."
                ),
            }
        }
    }

    /// The next connection, or `None` when this worker should end.
    fn next(&self, waiter: &Arc<Waiter>) -> Option<Conn> {
        let mut state = self.lock();
        // Whether the handler was told this worker is idle, since it last served.
        let mut released = false;
        // Whether `waiter` is in line (`State::asleep`).
        let mut asleep = false;
        loop {
            if asleep && waiter.claimed.swap(false, Ordering::Relaxed) {
                asleep = false;
            }
            if let Some(conn) = state.items.pop_front() {
                if asleep {
                    // Taken on its own: whoever was claimed for it finds nothing, and waits on.
                    state.leave(waiter);
                }
                return Some(conn);
            }
            if !asleep {
                state.asleep.push(Arc::clone(waiter));
                asleep = true;
            }
            let wait = if released { IDLE_RETIRE } else { RELEASE_AFTER };
            let (guard, waited) = waiter
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = guard;
            if waiter.claimed.load(Ordering::Relaxed) || !waited.timed_out() {
                // Claimed, or a spurious wake-up (or a claim's late one): back to the top.
                continue;
            }
            // Told it is idle after RELEASE_AFTER, and again after each IDLE_RETIRE (what it
            // kept ages meanwhile); still in line, in its place, while told.
            drop(state);
            self.idle();
            state = self.lock();
            if !released || waiter.claimed.load(Ordering::Relaxed) {
                released = true;
                continue;
            }
            // Idle for RELEASE_AFTER and IDLE_RETIRE: it ends, or stays as one of the few.
            if state.items.is_empty() && state.total > MIN_WORKERS {
                state.leave(waiter);
                state.total -= 1;
                let last_of_burst = state.total == MIN_WORKERS;
                drop(state);
                if last_of_burst {
                    // The other surplus workers timed out at the same moment and are ending
                    // now, their memory freed as they go; let them finish, then hand the free
                    // memory back (glibc keeps it otherwise, see thread_cache::trim). A worker
                    // that is ending anyway is the one to wait.
                    std::thread::sleep(TRIM_AFTER);
                    thread_cache::trim();
                }
                return None;
            }
            // Kept through a quiet spell: the blocks it cached would pin the allocator's pages.
            drop(state);
            thread_cache::flush();
            state = self.lock();
        }
    }

    /// Tells the handler this worker is idle. A panic there is caught as one while serving is:
    /// a worker lost outside `catch_unwind` would still be counted in `State::total`.
    fn idle(&self) {
        if catch_unwind(AssertUnwindSafe(|| self.job.handler.idle())).is_err() {
            error!("internal error: a panic in an idle worker's upkeep; the worker goes on");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding this lock, but stay robust anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn workers(&self) -> usize {
        self.lock().total
    }
}

/// The way back to the parking loop for connections kept alive.
#[derive(Clone)]
pub struct Returns {
    pub tx: Sender<Conn>,
    pub waker: Arc<mio::Waker>,
}

impl Returns {
    fn park(&self, conn: Conn) {
        if self.tx.send(conn).is_ok() {
            // A failed wake means the poller is gone; the process is ending.
            let _ = self.waker.wake();
        }
    }
}

/// Serves the request in `conn.ready`, then any next request already complete in its buffer
/// (or within [`LINGER`]). Returns the connection when it should be parked to wait for more,
/// `None` when it was closed.
fn serve_connection(
    mut conn: Conn,
    settings: &Settings,
    handler: &dyn Handler,
    lifecycle: &Lifecycle,
) -> Option<Conn> {
    let io_timeout = settings.timeouts.client_io;
    if let Err(e) = conn
        .sock
        .set_nonblocking(false)
        .and_then(|()| conn.set_write_timeout(io_timeout))
    {
        debug!("{}: socket setup failed: {e}", conn.peer);
        return None;
    }
    while let Some(complete) = conn.ready.take() {
        let after = {
            let transport = if conn.tls.is_some() {
                Transport::Tls
            } else {
                Transport::Plain
            };
            let mut writer = Writer::of(&mut conn.tls, &mut conn.sock);
            exchange::serve(&mut writer, *complete, conn.peer, transport, handler)
        };
        match after {
            // Stopping: the response is complete; no further request on this connection.
            Ok(After::KeepAlive) if lifecycle.stopping() => {
                close(conn);
                return None;
            }
            Ok(After::KeepAlive) => {}
            Ok(After::Close) => {
                close(conn);
                return None;
            }
            Ok(After::Upgrade(Upgrade::Intercept)) => return intercept(conn, settings),
            Ok(After::Upgrade(Upgrade::Tunnel(upstream))) => {
                tunnel(conn, upstream, settings.timeouts.idle);
                return None;
            }
            Err(e) => {
                debug!("{}: connection ended: {e}", conn.peer);
                return None;
            }
        }
        // Without touching the socket: a pipelined request may be waiting in rustls' buffer,
        // where the poller would never see it.
        conn.take_plaintext();
        if !next_request(&mut conn, settings) {
            // Closed, or answered with an error: a lingering close either way.
            close(conn);
            return None;
        }
    }
    match conn.sock.set_nonblocking(true) {
        Ok(()) => Some(conn),
        Err(_) => None,
    }
}

/// Receives the next request from what is buffered, waiting [`LINGER`] once for more. Sets
/// `conn.ready` when it is complete (and admitted); false when the connection was closed.
// Not inlined: its locals would sit in every worker's frame for the life of every stream.
#[inline(never)]
fn next_request(conn: &mut Conn, settings: &Settings) -> bool {
    let limits = Limits {
        max_body: settings.max_body_bytes,
        budget: &settings.body_budget,
    };
    for lingered in [false, true] {
        let step = conn.receive(limits);
        // A 100 Continue for a pipelined request: the client waits for it.
        if conn.flush_blocking().is_err() {
            return false;
        }
        let error = match step {
            Step::Ready(complete) => {
                conn.ready = Some(complete);
                match admit(conn, &settings.clients) {
                    Ok(()) => return true,
                    Err(e) => e,
                }
            }
            Step::Reject(e) => e,
            Step::NeedMore if lingered || conn.receiving.is_some() => return true,
            Step::NeedMore => {
                if !linger(conn) {
                    return false;
                }
                continue;
            }
        };
        conn.ready = None;
        let mut writer = Writer::of(&mut conn.tls, &mut conn.sock);
        let _ = exchange::reject(&mut writer, &error);
        return false;
    }
    true
}

/// After `CONNECT` to our own domain: the client now starts TLS on this connection, as it would
/// with `api.openai.com`. The connection goes back to the parking loop, which runs the
/// handshake like any new one; bytes the client already sent are its first TLS records.
// Not inlined: its locals would sit in every worker's frame for the life of every stream.
#[inline(never)]
fn intercept(mut conn: Conn, settings: &Settings) -> Option<Conn> {
    let config = settings.tls.as_ref()?;
    let mut tls = rustls::ServerConnection::new(Arc::clone(config)).ok()?;
    if !conn.buf.is_empty() {
        let early = std::mem::take(&mut conn.buf);
        let mut reader: &[u8] = &early;
        while !reader.is_empty() {
            if tls.read_tls(&mut reader).ok()? == 0 {
                break;
            }
        }
    }
    conn.tls = Some(Box::new(tls));
    conn.sock.set_nonblocking(true).ok()?;
    Some(conn)
}

/// Relays bytes both ways between the client and `upstream` until either closes or neither
/// sends anything for `idle`. One direction runs on a helper thread; the worker is held for the
/// tunnel's life, which the idle limit bounds.
// Not inlined: its locals would sit in every worker's frame for the life of every stream.
#[inline(never)]
fn tunnel(mut conn: Conn, upstream: std::net::TcpStream, idle: Duration) {
    use std::sync::atomic::AtomicU64;
    /// Reads wake up this often to see whether the whole tunnel went idle.
    const TICK: Duration = Duration::from_millis(500);
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (Ok(mut up_read), Ok(mut client_write)) = (upstream.try_clone(), conn.sock.try_clone())
    else {
        return;
    };
    let mut up_write = upstream;
    if !conn.buf.is_empty() && io::Write::write_all(&mut up_write, &conn.buf).is_err() {
        return;
    }
    let _ = up_write.set_nodelay(true);
    let copy = move |from: &mut std::net::TcpStream,
                     to: &mut std::net::TcpStream,
                     last: &AtomicU64| {
        let _ = from.set_read_timeout(Some(TICK));
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if io::Write::write_all(to, &buf[..n]).is_err() {
                        break;
                    }
                    last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let quiet = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                    if Duration::from_millis(quiet) >= idle {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Pass the end on, so the other direction ends too.
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    };
    let back = {
        let last = Arc::clone(&last);
        std::thread::Builder::new()
            .name("tunnel".to_owned())
            .spawn(move || copy(&mut up_read, &mut client_write, &last))
    };
    copy(&mut conn.sock, &mut up_write, &last);
    if let Ok(handle) = back {
        let _ = handle.join();
    }
}

/// Waits up to [`LINGER`] for more of the client's bytes. `false` when the client closed or the
/// connection broke.
// Not inlined: its locals would sit in every worker's frame for the life of every stream.
#[inline(never)]
fn linger(conn: &mut Conn) -> bool {
    if conn.set_read_timeout(LINGER).is_err() {
        return false;
    }
    let read = match conn.tls.as_mut() {
        Some(tls) => tls.read_tls(&mut conn.sock).and_then(|n| {
            tls.process_new_packets()
                .map(|_| n)
                .map_err(io::Error::other)
        }),
        None => {
            let mut tmp = [0u8; 4096];
            conn.sock
                .read(&mut tmp)
                .inspect(|&n| conn.buf.extend_from_slice(&tmp[..n]))
        }
    };
    let alive = match read {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
        ),
    };
    conn.take_plaintext();
    alive
}

/// Closes after telling the client (close_notify, FIN), then reads and discards what it may
/// still be sending for a moment: closing with unread input makes the kernel send a reset,
/// which can destroy our last response (a 413, say) before the client has read it.
// Not inlined: its locals would sit in every worker's frame for the life of every stream.
#[inline(never)]
fn close(mut conn: Conn) {
    if let Some(tls) = conn.tls.as_mut() {
        tls.send_close_notify();
        while tls.wants_write() {
            if tls.write_tls(&mut conn.sock).is_err() {
                return;
            }
        }
    }
    if conn.sock.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let _ = conn.sock.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 8192];
    let mut drained = 0usize;
    while Instant::now() < deadline && drained < 1024 * 1024 {
        match conn.sock.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;

    use http::{Request, StatusCode};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::sign::CertifiedKey;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection, StreamOwned};

    use super::*;
    use crate::config::Timeouts;
    use crate::pki::tls::{CertResolver, server_config};
    use crate::server::Responder;
    use crate::server::conn::Slot;

    /// Panics on the first request it sees, answers the others.
    struct PanicOnce(AtomicBool);

    impl Handler for PanicOnce {
        fn handle(
            &self,
            _: Request<Vec<u8>>,
            _: SocketAddr,
            r: Responder<'_>,
        ) -> io::Result<After> {
            if !self.0.swap(true, Ordering::SeqCst) {
                panic!("handler bug");
            }
            r.send(StatusCode::OK, Vec::new(), b"ok")
        }
    }

    fn configs() -> (Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = CertificateDer::from(generated.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(vec![cert.clone()], key, &provider).unwrap();
        let server = server_config(Arc::new(CertResolver::new(certified))).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    fn settings(workers: usize) -> Settings {
        Settings {
            workers,
            max_connections: 10,
            max_body_bytes: 1024,
            body_budget: crate::server::BodyBudget::new(4096),
            clients: crate::server::Clients::new(10, 10),
            min_body_rate: 0,
            timeouts: Timeouts::default(),
            shutdown_timeout: Duration::from_secs(1),
            open_connections: Arc::default(),
            tls: None,
        }
    }

    /// A queue of `workers` in front of `handler`, the listener its clients connect to (accepted
    /// as the parking loop would), and what it needs kept alive: a poller that never runs, and
    /// the channel that parked connections would go back to it through.
    struct Rig {
        queue: Arc<WorkQueue>,
        settings: Settings,
        listener: TcpListener,
        server_tls: Arc<rustls::ServerConfig>,
        client_tls: Arc<ClientConfig>,
        /// Connection slots taken (`server.max_connections`).
        open: Arc<AtomicUsize>,
        _poll: mio::Poll,
        _parked: std::sync::mpsc::Receiver<Conn>,
    }

    impl Rig {
        /// One `GET` from a client on a new connection, through the queue; the whole answer.
        fn get(&self) -> Vec<u8> {
            let addr = self.listener.local_addr().unwrap();
            let client_tls = Arc::clone(&self.client_tls);
            let client = std::thread::spawn(move || get(addr, client_tls));
            self.queue.push(self.accept_ready());
            client.join().unwrap()
        }

        /// Accepts one connection, completes its handshake and receives its request, as the
        /// parking loop would, and returns it ready for a worker.
        fn accept_ready(&self) -> Conn {
            let (mut sock, peer) = self.listener.accept().unwrap();
            let mut server = ServerConnection::new(Arc::clone(&self.server_tls)).unwrap();
            let mut buf = Vec::new();
            while server.is_handshaking() || !buf.ends_with(b"\r\n\r\n") {
                server.complete_io(&mut sock).unwrap();
                let mut tmp = [0u8; 1024];
                if let Ok(n) = server.reader().read(&mut tmp) {
                    buf.extend_from_slice(&tmp[..n]);
                }
            }
            let settings = &self.settings;
            let client = settings.clients.connect(peer.ip()).unwrap();
            let mut conn = Conn::new(
                sock,
                Some(Box::new(server)),
                peer,
                (Slot::take(&self.open, 10).unwrap(), client),
            );
            conn.buf = buf;
            let limits = Limits {
                max_body: settings.max_body_bytes,
                budget: &settings.body_budget,
            };
            let Step::Ready(complete) = conn.receive(limits) else {
                panic!("request not complete")
            };
            conn.ready = Some(complete);
            conn
        }
    }

    fn rig(workers: usize, handler: Arc<dyn Handler>) -> Rig {
        let poll = mio::Poll::new().unwrap();
        let (tx, parked) = std::sync::mpsc::channel();
        let returns = Returns {
            tx,
            waker: Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap()),
        };
        let settings = settings(workers);
        let queue =
            WorkQueue::new(&settings, handler, returns, Arc::new(Lifecycle::default())).unwrap();
        let (server_tls, client_tls) = configs();
        Rig {
            queue,
            settings,
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            server_tls,
            client_tls,
            open: Arc::new(AtomicUsize::new(0)),
            _poll: poll,
            _parked: parked,
        }
    }

    /// One `GET` on a new connection; the whole answer.
    fn get(addr: SocketAddr, client_tls: Arc<ClientConfig>) -> Vec<u8> {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(client_tls, name).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer);
        answer
    }

    /// Answers with the name of the worker thread that served, and counts `idle` calls.
    #[derive(Default)]
    struct Named {
        idle: AtomicUsize,
    }

    impl Handler for Named {
        fn handle(
            &self,
            _: Request<Vec<u8>>,
            _: SocketAddr,
            r: Responder<'_>,
        ) -> io::Result<After> {
            let thread = format!("{:?}", std::thread::current().id());
            r.send(StatusCode::OK, Vec::new(), thread.as_bytes())
        }

        fn idle(&self) {
            self.idle.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_worker_idle_the_shortest_time_serves_next_and_an_idle_one_is_told() {
        let handler = Arc::new(Named::default());
        let rig = rig(4, Arc::clone(&handler) as Arc<dyn Handler>);
        let queue = &rig.queue;
        // Until both workers kept warm are in line (idle), as they are before each request.
        let all_idle = || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while queue.lock().asleep.len() < MIN_WORKERS && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let mut served_by = Vec::new();
        for _ in 0..4 {
            all_idle();
            let answer = String::from_utf8(rig.get()).unwrap();
            served_by.push(answer.rsplit("\r\n").next().unwrap_or("").to_owned());
        }
        assert!(
            served_by.iter().all(|t| *t == served_by[0]),
            "served by {served_by:?}: not the worker idle the shortest time"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while handler.idle.load(Ordering::SeqCst) < MIN_WORKERS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            handler.idle.load(Ordering::SeqCst) >= MIN_WORKERS,
            "idle workers were not told so"
        );
    }

    /// Answers every request; panics whenever told it is idle.
    struct PanicWhenIdle;

    impl Handler for PanicWhenIdle {
        fn handle(
            &self,
            _: Request<Vec<u8>>,
            _: SocketAddr,
            r: Responder<'_>,
        ) -> io::Result<After> {
            r.send(StatusCode::OK, Vec::new(), b"ok")
        }

        fn idle(&self) {
            panic!("upkeep bug");
        }
    }

    #[test]
    fn a_panic_in_an_idle_worker_s_upkeep_loses_no_worker() {
        let rig = rig(MIN_WORKERS, Arc::new(PanicWhenIdle));
        // Both workers are told they are idle (and panic) after RELEASE_AFTER.
        std::thread::sleep(RELEASE_AFTER * 3);
        for _ in 0..2 {
            let answer = rig.get();
            assert!(answer.starts_with(b"HTTP/1.1 200"), "no worker answered");
        }
        assert_eq!(rig.queue.workers(), MIN_WORKERS);
    }

    #[test]
    fn a_panicking_request_drops_its_connection_and_the_worker_goes_on() {
        let rig = rig(1, Arc::new(PanicOnce(AtomicBool::new(false))));
        let (queue, open) = (&rig.queue, &rig.open);
        let answers = [rig.get(), rig.get()];
        assert!(
            answers[0].is_empty(),
            "the panicking request gets no answer"
        );
        assert!(
            answers[1].starts_with(b"HTTP/1.1 200"),
            "the single worker survived: {}",
            String::from_utf8_lossy(&answers[1])
        );
        // The worker finishes closing just after the client has read everything.
        let deadline = Instant::now() + Duration::from_secs(3);
        while (open.load(Ordering::SeqCst) > 0 || queue.in_flight() > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(open.load(Ordering::SeqCst), 0, "both slots were given back");
        assert_eq!(queue.in_flight(), 0, "nothing counted as still running");
        assert_eq!(queue.workers(), 1, "never more than server.workers");
    }
}
