//! Idle backend connections kept for the next request: the proxy's pool, in place of ureq's.
//!
//! ureq's pool is a list behind its agent's lock, tidied on every checkout and again on every
//! check-in by recounting the connections kept per host (each one's host compared with every
//! other's). With 16 kept per backend and 32 clients that was about 6,500 instructions a
//! request, 7 % of the proxy's work in user space, and its lock, taken by every worker twice a
//! request, was contended on two cores (callgrind, strace; docs/performance.md).
//!
//! Here each thread first keeps the connection it last used, one per backend host, without a
//! lock: a worker serves one request at a time, so under load every request finds its thread's
//! connection and nothing is shared. Connections beyond that, those of a thread that has been
//! idle for a moment ([`share_own`]) and those of a thread that ends go to a shared list per
//! host (newest last, at most [`PER_HOST`], and [`QUIET_KEEP`] once quiet); a thread without
//! one of its own takes the newest there (the least likely to have been closed by the backend's
//! keep-alive timeout; the others age out when fewer are needed), else connects. So a
//! connection outlives the worker that made it, and any worker reuses it, as with ureq's pool.
//!
//! How it sits in ureq: [`Keeping`] wraps the whole connector chain, every thread has its own
//! agent (agents.rs), and the agents keep no connection themselves (`max_idle_connections(0)`).
//! A checkout is the chain's `connect`: a kept connection that passes the liveness check
//! (tcp.rs), else a new one. A check-in is ureq deciding a connection can be reused: it asks
//! the transport `is_open` once the response has been read to its end with nothing unread, and
//! then drops it, as its own pool is full. ureq asks `is_open` nowhere else (its pool's checkout
//! never runs with nothing in it), so a [`Kept`] dropped right after answering `true` comes back
//! here; dropped at any other moment (an error, a body not read to its end, `Connection:
//! close`) it closes. Cargo.toml takes ureq 3.5.x only; tests hold the contract.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ureq::Error;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// How long a connection may stay idle. Backends close idle connections after their own
/// keep-alive timeout (often 60 s or more); one closed sooner is caught by the liveness check,
/// or sent again when the close crosses our request (mod.rs).
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(50);
/// Kept in the shared list per backend host: with 8, 32 clients at once made the proxy open a
/// new backend connection for 6 % of its requests (a TCP and, for a remote backend, a TLS
/// handshake each), with 16 for 0.4 %; 64 gained nothing and kept 1.5-3 MiB more after a burst.
pub const PER_HOST: usize = 16;
/// Kept in the shared list per backend host once none has been taken for a while ([`QUIET_AFTER`]):
/// the 16 serve bursts of concurrent requests; after one, a few are enough for the next
/// requests, and the others' buffers (18 KiB each) and sockets go back.
pub const QUIET_KEEP: usize = 4;
/// How long a connection beyond [`QUIET_KEEP`] may stay idle. Below the worker pool's 5 s
/// `IDLE_RETIRE`, so that a burst's surplus is closed as its workers end.
pub const QUIET_AFTER: Duration = Duration::from_secs(4);
/// Hosts tracked at most: a configuration names few, and a reload builds new pools.
const MAX_HOSTS: usize = 64;

type Boxed = Box<dyn Transport>;

/// The connector chain `C`, with kept connections handed out before new ones are made.
pub struct Keeping<C> {
    chain: C,
    pool: Arc<Pool>,
}

/// The shared lists, per backend host, oldest first.
struct Pool {
    hosts: Mutex<Vec<Host>>,
    /// Its [`Keeping`] is gone (a reload replaced the agents): threads drop their places for it.
    retired: AtomicBool,
}

struct Host {
    scheme: String,
    authority: String,
    idle: Vec<(Instant, Boxed)>,
}

/// A thread's own kept connection for one host of one pool. Given back to the pool when the
/// thread ends.
struct Own {
    pool: Arc<Pool>,
    host: usize,
    scheme: String,
    authority: String,
    idle: Option<(Instant, Boxed)>,
}

thread_local! {
    static OWN: RefCell<Vec<Own>> = const { RefCell::new(Vec::new()) };
}

/// A connection made or handed out by [`Keeping`], which comes back when dropped right after
/// ureq found it reusable.
pub struct Kept {
    transport: Option<Boxed>,
    /// `is_open` said yes, and nothing was sent or read since.
    reusable: bool,
    /// Its host in the pool; `None` when no more hosts could be tracked.
    host: Option<usize>,
    pool: Arc<Pool>,
}

impl<C> Keeping<C> {
    pub fn new(chain: C) -> Self {
        Keeping {
            chain,
            pool: Arc::new(Pool {
                hosts: Mutex::new(Vec::new()),
                retired: AtomicBool::new(false),
            }),
        }
    }
}

impl<C: Connector> Connector for Keeping<C> {
    type Out = Kept;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Kept>, Error> {
        let scheme = details.uri.scheme_str().unwrap_or_default();
        let authority = details.uri.authority().map_or("", |a| a.as_str());
        let (host, mut candidate) = match own(&self.pool, scheme, authority) {
            Some((host, Some(mine))) => (Some(host), Some(mine)),
            Some((host, None)) => (Some(host), self.pool.take_at(host)),
            None => self.pool.take_shared(scheme, authority),
        };
        while let Some(mut transport) = candidate {
            if transport.is_open() {
                return Ok(Some(self.wrap(transport, host)));
            }
            // Closed by the backend, or it sent bytes nobody asked for: dropped, next one.
            candidate = host.and_then(|h| self.pool.take_at(h));
        }
        let made = self.chain.connect(details, chained)?;
        Ok(made.map(|transport| self.wrap(Box::new(transport), host)))
    }
}

impl<C> Keeping<C> {
    fn wrap(&self, transport: Boxed, host: Option<usize>) -> Kept {
        Kept {
            transport: Some(transport),
            reusable: false,
            host,
            pool: Arc::clone(&self.pool),
        }
    }
}

/// This thread's own connection to the host, if it has a place for that host: the host's index
/// and what the place holds (taken out; `None` when empty or too old).
fn own(pool: &Arc<Pool>, scheme: &str, authority: &str) -> Option<(usize, Option<Boxed>)> {
    OWN.with_borrow_mut(|own| {
        let place = own.iter_mut().find(|o| {
            Arc::ptr_eq(&o.pool, pool)
                && o.authority.eq_ignore_ascii_case(authority)
                && o.scheme.eq_ignore_ascii_case(scheme)
        })?;
        let mine = place
            .idle
            .take()
            .filter(|(since, _)| since.elapsed() < MAX_IDLE_AGE)
            .map(|(_, transport)| transport);
        Some((place.host, mine))
    })
}

/// Gives this thread's own kept connections to the shared lists, where any thread finds them,
/// and closes what has been idle too long there: called when the thread has had nothing to do
/// for a moment, and again after each longer wait (a worker between connections, through
/// `Handler::idle`). Under load a worker is rarely idle that long and keeps its own; when
/// requests come one at a time, another worker may serve the next, and finds the connection
/// the last one used. Nothing else runs when the proxy is quiet, so the surplus of a burst is
/// closed here (see [`QUIET_KEEP`]).
pub fn share_own() {
    OWN.with_borrow_mut(|own| {
        // A reload's old pools: their connections close here, not when this thread next meets
        // a new host.
        own.retain(|o| !o.pool.retired.load(Ordering::Relaxed));
        for place in own.iter_mut() {
            match place.idle.take() {
                Some((since, transport)) => place.pool.share(place.host, since, transport),
                None => place.pool.tidy(place.host),
            }
        }
    });
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Vec<Host>> {
        // Nothing panics while holding it; stay usable anyway.
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For a thread without a place for this host yet: the host's index (added if new, when
    /// there is room), a place for it in this thread, and the newest shared connection.
    fn take_shared(
        self: &Arc<Self>,
        scheme: &str,
        authority: &str,
    ) -> (Option<usize>, Option<Boxed>) {
        let mut hosts = self.lock();
        let known = hosts.iter().position(|h| {
            h.authority.eq_ignore_ascii_case(authority) && h.scheme.eq_ignore_ascii_case(scheme)
        });
        let host = match known {
            Some(host) => host,
            None if hosts.len() < MAX_HOSTS => {
                hosts.push(Host {
                    scheme: scheme.to_owned(),
                    authority: authority.to_owned(),
                    idle: Vec::new(),
                });
                hosts.len() - 1
            }
            None => return (None, None),
        };
        drop(hosts);
        OWN.with_borrow_mut(|own| {
            own.retain(|o| !o.pool.retired.load(Ordering::Relaxed));
            own.push(Own {
                pool: Arc::clone(self),
                host,
                scheme: scheme.to_owned(),
                authority: authority.to_owned(),
                idle: None,
            })
        });
        (Some(host), self.take_at(host))
    }

    /// The newest shared connection of `host`, unless it is too old, and then so are the
    /// others: dropped once the lock is released (closing a socket is a system call).
    fn take_at(&self, host: usize) -> Option<Boxed> {
        let mut hosts = self.lock();
        let idle = &mut hosts[host].idle;
        match idle.pop() {
            Some((since, transport)) if since.elapsed() < MAX_IDLE_AGE => Some(transport),
            Some(newest) => {
                let old = std::mem::take(idle);
                drop(hosts);
                drop((newest, old));
                None
            }
            None => None,
        }
    }

    /// Adds a connection to the shared list of `host`, and closes what [`expired`] says.
    fn share(&self, host: usize, since: Instant, transport: Boxed) {
        let mut hosts = self.lock();
        let idle = &mut hosts[host].idle;
        idle.push((since, transport));
        let closing = expired(idle, Instant::now());
        drop(hosts);
        drop(closing);
    }

    /// Closes what [`expired`] says of the shared list of `host`.
    fn tidy(&self, host: usize) {
        let mut hosts = self.lock();
        let closing = expired(&mut hosts[host].idle, Instant::now());
        drop(hosts);
        drop(closing);
    }
}

/// Takes out of `idle` (oldest first) what is to be closed at `now`: the oldest beyond
/// [`PER_HOST`], any idle for [`MAX_IDLE_AGE`], and of those idle for [`QUIET_AFTER`] all but
/// [`QUIET_KEEP`] of the list. Closed by the caller once the lock is released.
fn expired<T>(idle: &mut Vec<(Instant, T)>, now: Instant) -> Vec<(Instant, T)> {
    let age = |since: &Instant| now.saturating_duration_since(*since);
    let stale = idle
        .iter()
        .position(|(since, _)| age(since) < MAX_IDLE_AGE)
        .unwrap_or(idle.len());
    let quiet = idle
        .iter()
        .take_while(|(since, _)| age(since) >= QUIET_AFTER)
        .count();
    let surplus = idle.len().saturating_sub(QUIET_KEEP).min(quiet);
    let over = idle.len().saturating_sub(PER_HOST);
    idle.drain(..stale.max(surplus).max(over)).collect()
}

impl Drop for Kept {
    fn drop(&mut self) {
        let (Some(transport), Some(host), true) = (self.transport.take(), self.host, self.reusable)
        else {
            return;
        };
        let now = Instant::now();
        // This thread's place for the host, when empty; otherwise the shared list.
        let shared = OWN.with_borrow_mut(|own| {
            match own
                .iter_mut()
                .find(|o| o.host == host && Arc::ptr_eq(&o.pool, &self.pool))
            {
                Some(place) if place.idle.is_none() => {
                    place.idle = Some((now, transport));
                    None
                }
                _ => Some(transport),
            }
        });
        if let Some(transport) = shared {
            self.pool.share(host, now, transport);
        }
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        let kept = self.idle.take();
        if let Some((since, transport)) = kept {
            if !self.pool.retired.load(Ordering::Relaxed) {
                self.pool.share(self.host, since, transport);
            }
        }
    }
}

impl<C> Drop for Keeping<C> {
    fn drop(&mut self) {
        self.pool.retired.store(true, Ordering::Relaxed);
    }
}

impl Kept {
    fn inner(&mut self) -> &mut Boxed {
        match self.transport.as_mut() {
            Some(transport) => transport,
            None => unreachable!("only drop takes the transport"),
        }
    }
}

impl Transport for Kept {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner().buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        self.reusable = false;
        self.inner().transmit_output(amount, timeout)
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.reusable = false;
        self.inner().maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.reusable = false;
        self.inner().await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.reusable = self.inner().is_open();
        self.reusable
    }

    fn is_tls(&self) -> bool {
        self.transport.as_ref().is_some_and(|t| t.is_tls())
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Some(t) => t.fmt(f),
            None => f.write_str("Kept(returned)"),
        }
    }
}

impl<C> std::fmt::Debug for Keeping<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeping").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use ureq::Agent;
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::TcpConnector;

    /// A backend on loopback that counts its connections and answers by path: `/ok` a body of
    /// two bytes, `/close` the same with `Connection: close`, `/extra` five bytes more than its
    /// `Content-Length`, `/bye` an answer and then the end of the connection 50 ms later.
    fn backend() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(stream));
            }
        });
        (url, accepted)
    }

    fn serve(stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            while line != "\r\n" {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
            }
            let reply: &[u8] = match path.as_str() {
                "/close" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                "/extra" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            };
            if writer.write_all(reply).is_err() || path == "/close" {
                return;
            }
            if path == "/bye" {
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
        }
    }

    fn agent() -> Agent {
        let config = Agent::config_builder()
            .max_idle_connections(0)
            .http_status_as_error(false)
            .build();
        Agent::with_parts(
            config,
            Keeping::new(().chain(TcpConnector::default())),
            DefaultResolver::default(),
        )
    }

    /// GETs `path` and reads the whole body.
    fn get(agent: &Agent, url: &str, path: &str) -> String {
        let mut response = agent.get(format!("{url}{path}")).call().unwrap();
        response.body_mut().read_to_string().unwrap()
    }

    fn accepted(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }

    #[test]
    fn a_connection_read_to_its_end_is_reused_by_its_thread_and_by_others_once_shared() {
        let (url, counter) = backend();
        let agent = agent();
        for _ in 0..3 {
            assert_eq!(get(&agent, &url, "/ok"), "ok");
        }
        assert_eq!(accepted(&counter), 1, "this thread reused its connection");
        // Another thread does not see this thread's own connection: it makes one, and gives
        // it to the shared list as it ends.
        std::thread::scope(|s| s.spawn(|| get(&agent, &url, "/ok")).join().unwrap());
        assert_eq!(accepted(&counter), 2);
        std::thread::scope(|s| s.spawn(|| get(&agent, &url, "/ok")).join().unwrap());
        assert_eq!(
            accepted(&counter),
            2,
            "the ended thread's connection was not reused"
        );
        // This thread shares its own; two more threads at once find one each.
        share_own();
        std::thread::scope(|s| {
            let (a, b) = (
                s.spawn(|| get(&agent, &url, "/ok")),
                s.spawn(|| get(&agent, &url, "/ok")),
            );
            assert_eq!(
                (a.join().unwrap(), b.join().unwrap()),
                ("ok".into(), "ok".into())
            );
        });
        assert_eq!(accepted(&counter), 2, "a shared connection was not reused");
    }

    #[test]
    fn a_connection_closed_cut_short_or_overlong_is_not_reused() {
        let (url, counter) = backend();
        let agent = agent();
        assert_eq!(get(&agent, &url, "/close"), "ok");
        assert_eq!(get(&agent, &url, "/ok"), "ok");
        assert_eq!(accepted(&counter), 2, "reused after Connection: close");
        // Answered, but its body not read: the connection cannot carry another request.
        drop(agent.get(format!("{url}/ok")).call().unwrap());
        assert_eq!(get(&agent, &url, "/ok"), "ok");
        assert_eq!(accepted(&counter), 3, "reused with a body left unread");
        // More bytes than the body: they must not become the next answer.
        assert_eq!(get(&agent, &url, "/extra"), "ok");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(get(&agent, &url, "/ok"), "ok");
        assert_eq!(accepted(&counter), 4, "reused with bytes nobody asked for");
    }

    #[test]
    fn a_replaced_pool_closes_the_connection_a_thread_kept_once_it_is_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while line != "\r\n" {
                line.clear();
                reader.read_line(&mut line).unwrap();
            }
            (&stream)
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            // The end of the stream: the proxy closed it.
            let _ = closed_tx.send(reader.read_line(&mut line).unwrap_or(0));
        });
        let agent = agent();
        assert_eq!(get(&agent, &url, "/ok"), "ok");
        // A reload drops the agents (and with them the pool); this thread still holds its
        // connection until it is idle.
        drop(agent);
        assert!(closed_rx.recv_timeout(Duration::from_millis(100)).is_err());
        share_own();
        assert_eq!(
            closed_rx.recv_timeout(Duration::from_secs(5)),
            Ok(0),
            "the retired pool's connection was not closed"
        );
    }

    #[test]
    fn a_burst_s_surplus_is_closed_once_quiet_and_nothing_outlives_its_age() {
        let now = Instant::now() + MAX_IDLE_AGE + Duration::from_secs(10);
        // Oldest first, as the list keeps them; each value its age in seconds.
        let list = |ages: &[u64]| -> Vec<(Instant, u64)> {
            ages.iter()
                .map(|&a| (now - Duration::from_secs(a), a))
                .collect()
        };
        let ages = |v: &[(Instant, u64)]| v.iter().map(|(_, a)| *a).collect::<Vec<_>>();

        // Sixteen from a burst 1 s ago: all kept.
        let mut idle = list(&[1; PER_HOST]);
        assert!(expired(&mut idle, now).is_empty());
        // The same, quiet for QUIET_AFTER: all but QUIET_KEEP closed, the oldest first.
        let mut idle = list(&[9, 8, 7, 6, 5, 5, 4, 4]);
        assert_eq!(ages(&expired(&mut idle, now)), [9, 8, 7, 6]);
        assert_eq!(ages(&idle), [5, 5, 4, 4]);
        // Quiet ones beside recently used ones: the surplus goes, the recent ones stay.
        let mut idle = list(&[20, 10, 6, 3, 2, 1, 0]);
        assert_eq!(ages(&expired(&mut idle, now)), [20, 10, 6]);
        assert_eq!(ages(&idle), [3, 2, 1, 0]);
        // Fewer than QUIET_KEEP: kept however quiet, up to MAX_IDLE_AGE.
        let max = MAX_IDLE_AGE.as_secs();
        let mut idle = list(&[max + 1, max - 1, 30]);
        assert_eq!(ages(&expired(&mut idle, now)), [max + 1]);
        assert_eq!(ages(&idle), [max - 1, 30]);
        // More than PER_HOST, all recent: the oldest beyond it.
        let mut idle = list(&[3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1]);
        assert_eq!(ages(&expired(&mut idle, now)), [3]);
        assert_eq!(idle.len(), PER_HOST);
    }

    #[test]
    fn a_kept_connection_the_backend_closed_is_replaced() {
        let (url, counter) = backend();
        let agent = agent();
        assert_eq!(get(&agent, &url, "/bye"), "ok");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(get(&agent, &url, "/ok"), "ok");
        assert_eq!(accepted(&counter), 2);
    }
}
