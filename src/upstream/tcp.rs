//! The TCP connection to a backend, in place of ureq's own TCP transport, for one reason: ureq
//! checks that a pooled connection is still usable when it goes back to the pool and again
//! when it is taken out, and its check costs three system calls (non-blocking on, a read that
//! must find nothing, non-blocking off) — half the system calls of a proxied request. Here the
//! check is one: a non-blocking peek (`MSG_PEEK | MSG_DONTWAIT`) that must find nothing, made
//! only as the connection is taken out of the pool (see `is_open`).
//!
//! Everything else follows ureq's transport: connect to the resolved addresses in turn within
//! the connect timeout, `TCP_NODELAY` as configured, per-call timeouts applied with a system
//! call only when they change (by more than 1/64: see [`refresh`]). Except one thing: the socket
//! is not registered for `Agent::shutdown`, which the proxy never calls; ureq's pool walks the
//! registered sockets, idle or in use, twice per request under its lock.
//! Proxy connections (SOCKS, HTTP CONNECT) arrive chained and pass through untouched.
//!
//! The check cannot close a race: a backend may close an idle connection (its keep-alive
//! timeout) just after our check and before our request arrives. A connection that passed the
//! check, then ends or is reset before it has sent a byte, fails with [`StaleConnection`]
//! inside the error, and the caller sends the request again on another connection
//! ([`is_stale`]): the backend closed it without reading the request, so nothing was applied
//! (RFC 9112, section 9.3.1).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
};
use ureq::{Error, Timeout};

#[derive(Debug, Default)]
pub struct BackendTcpConnector;

impl<In: Transport> Connector<In> for BackendTcpConnector {
    type Out = Either<In, BackendTcp>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        if let Some(chained) = chained {
            return Ok(Some(Either::A(chained)));
        }
        let config = details.config;
        let stream = connect(&details.addrs, details.timeout)?;
        if config.no_delay() {
            stream.set_nodelay(true)?;
        }
        Ok(Some(Either::B(BackendTcp {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            write_timeout: None,
            since_check: SinceCheck::Nothing,
        })))
    }
}

/// Tries each address in turn; each gets an equal share of what is left of the connect timeout.
fn connect(addrs: &[SocketAddr], timeout: NextTimeout) -> Result<TcpStream, Error> {
    let deadline = timeout.not_zero().map(|t| std::time::Instant::now() + *t);
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout(timeout.reason));
                }
                let share = left / (addrs.len() - i) as u32;
                TcpStream::connect_timeout(addr, share.max(Duration::from_millis(10)))
            }
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if is_timeout(&e) => Error::Timeout(Timeout::Connect),
        Some(e) => Error::Io(e),
        None => Error::Io(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address to connect to",
        )),
    })
}

pub struct BackendTcp {
    stream: TcpStream,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    since_check: SinceCheck,
}

/// What happened on the connection since ureq last checked its liveness (`is_open`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SinceCheck {
    /// Not checked yet (a new connection), or the check did not look (see `is_open`), or it
    /// found the connection closed.
    Nothing,
    /// Passed the check and has read nothing since: it was reused from the pool, and the
    /// backend has not answered on it yet.
    Unanswered,
    /// The backend sent something.
    Answered,
}

/// ureq's `Transport` wants `Debug`; its address is all a log line about it needs (a derived
/// one formatted every field: 1 KiB of aarch64 code).
impl std::fmt::Debug for BackendTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackendTcp({:?})", self.stream.peer_addr().ok())
    }
}

/// The backend closed or reset a connection taken from the pool before answering on it.
#[derive(Debug)]
pub struct StaleConnection;

impl std::fmt::Display for StaleConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the backend closed a kept-alive connection as it was reused")
    }
}

impl std::error::Error for StaleConnection {}

/// Whether `e` is a [`StaleConnection`]. The transports above ours (TLS) hand our I/O errors
/// up unchanged (ureq's `Error::into_io` unwraps `Error::Io`).
pub fn is_stale(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<StaleConnection>()))
}

impl BackendTcp {
    /// `e`, or a [`StaleConnection`] when the connection was reused and the backend is gone
    /// before its first byte.
    fn failed(&self, e: io::Error) -> Error {
        let gone = matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        );
        if gone && self.since_check == SinceCheck::Unanswered {
            Error::Io(io::Error::new(e.kind(), StaleConnection))
        } else {
            Error::Io(e)
        }
    }
}

impl Transport for BackendTcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let timeout = timeout.for_write();
        if timeout.after.is_zero() {
            return Err(Error::Timeout(timeout.reason));
        }
        let stream = &self.stream;
        refresh(&mut self.write_timeout, &timeout, |t| {
            stream.set_write_timeout(t)
        })?;
        let output = &self.buffers.output()[..amount];
        (&self.stream).write_all(output).map_err(|e| match e {
            e if is_timeout(&e) => Error::Timeout(timeout.reason),
            e => self.failed(e),
        })
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        let timeout = timeout.for_read();
        if timeout.after.is_zero() {
            return Err(Error::Timeout(timeout.reason));
        }
        let stream = &self.stream;
        refresh(&mut self.read_timeout, &timeout, |t| {
            stream.set_read_timeout(t)
        })?;
        let input = self.buffers.input_append_buf();
        let n = loop {
            match (&self.stream).read(input) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(Error::Timeout(timeout.reason)),
                Err(e) => return Err(self.failed(e)),
            }
        };
        if n > 0 {
            self.since_check = SinceCheck::Answered;
        } else if self.since_check == SinceCheck::Unanswered {
            return Err(self.failed(io::ErrorKind::UnexpectedEof.into()));
        }
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    /// Open when nothing is waiting to be read: not the end of the stream (the backend closed
    /// it), not bytes nobody asked for (a reply longer than it said).
    ///
    /// ureq asks twice a request: as the connection goes back to the pool, just after its
    /// answer was read, and as it is taken out again. Only the second check decides: whatever
    /// the first could find (the backend's close, bytes nobody asked for) is still there for
    /// the second, which always comes before the connection carries anything. So the first
    /// costs no system call: one peek a request instead of two (6 system calls a proxied
    /// request -> 5, `strace`).
    fn is_open(&mut self) -> bool {
        if std::mem::replace(&mut self.since_check, SinceCheck::Nothing) == SinceCheck::Answered {
            return true;
        }
        let open = match peek_now(&self.stream) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false,
        };
        if open {
            self.since_check = SinceCheck::Unanswered;
        }
        open
    }
}

/// Peeks at one byte without waiting: `WouldBlock` when nothing is there.
#[cfg(unix)]
fn peek_now(stream: &TcpStream) -> io::Result<usize> {
    use socket2::SockRef;
    use std::mem::MaybeUninit;
    let mut probe = [MaybeUninit::<u8>::uninit()];
    // One system call, the socket's blocking mode untouched.
    SockRef::from(stream).recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT)
}

/// Windows has no per-call MSG_DONTWAIT: the socket is non-blocking for the peek.
#[cfg(not(unix))]
fn peek_now(stream: &TcpStream) -> io::Result<usize> {
    stream.set_nonblocking(true)?;
    let peeked = stream.peek(&mut [0u8]);
    stream.set_nonblocking(false)?;
    peeked
}

/// Sets the socket's timeout to `timeout` unless the one set is at most 1/64 longer. ureq asks
/// for the time left until a deadline, which is a little less on every call; following it
/// exactly would cost a system call per read and write.
fn refresh(
    current: &mut Option<Duration>,
    timeout: &NextTimeout,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let wanted = timeout.not_zero().map(|t| *t);
    let close_enough = match (*current, wanted) {
        (Some(set), Some(wanted)) => set >= wanted && set - wanted <= wanted / 64,
        (set, wanted) => set == wanted,
    };
    if !close_enough {
        set(wanted)?;
        *current = wanted;
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (BackendTcp, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let transport = BackendTcp {
            stream: client,
            buffers: LazyBuffers::new(1024, 1024),
            read_timeout: None,
            write_timeout: None,
            since_check: SinceCheck::Nothing,
        };
        (transport, server)
    }

    fn settle() {
        std::thread::sleep(Duration::from_millis(50));
    }

    #[test]
    fn an_idle_connection_is_open_and_stays_usable() {
        let (mut t, mut server) = pair();
        assert!(t.is_open());
        assert!(t.is_open(), "probing consumes nothing");
        t.buffers().output()[..4].copy_from_slice(b"ping");
        t.transmit_output(4, NextTimeout::default()).unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").unwrap();
        assert!(t.await_input(NextTimeout::default()).unwrap());
        assert_eq!(t.buffers().input(), b"pong");
    }

    #[test]
    fn a_connection_the_backend_closed_is_not_open() {
        let (mut t, server) = pair();
        drop(server);
        settle();
        assert!(!t.is_open());
    }

    #[test]
    fn a_connection_with_unasked_bytes_is_not_open() {
        let (mut t, mut server) = pair();
        server.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        settle();
        assert!(!t.is_open());
    }

    #[test]
    fn only_the_check_as_a_connection_is_taken_out_again_looks_at_the_socket() {
        let (mut t, mut server) = pair();
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert!(t.await_input(NextTimeout::default()).unwrap());
        let len = t.buffers().input().len();
        t.buffers().input_consume(len);
        // The backend closes just after its answer, and sends junk before it does.
        server.write_all(b"junk").unwrap();
        drop(server);
        settle();
        assert!(t.is_open(), "going back to the pool: not looked at");
        assert!(!t.is_open(), "taken out: the close and the junk are seen");
        assert!(!t.is_open(), "and every time after");
    }

    /// The backend reads the request and closes the connection without answering.
    fn request_then_close(t: &mut BackendTcp, mut server: TcpStream) -> Result<bool, Error> {
        t.buffers().output()[..4].copy_from_slice(b"POST");
        t.transmit_output(4, NextTimeout::default())?;
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        drop(server);
        t.await_input(NextTimeout::default())
    }

    #[test]
    fn a_reused_connection_closed_before_an_answer_is_stale() {
        let (mut t, server) = pair();
        assert!(t.is_open(), "checked before reuse");
        match request_then_close(&mut t, server) {
            Err(e) => assert!(is_stale(&e), "expected stale, got {e:?}"),
            Ok(more) => panic!("expected an error, got Ok({more})"),
        }
    }

    #[test]
    fn a_new_connection_closed_before_an_answer_is_not_stale() {
        // Never checked: a first request; the backend ending it is the backend's failure,
        // and nothing says it did not apply the request.
        let (mut t, server) = pair();
        match request_then_close(&mut t, server) {
            Ok(more) => assert!(!more, "the end of the stream"),
            Err(e) => assert!(!is_stale(&e), "not stale: {e:?}"),
        }
    }

    #[test]
    fn the_end_of_a_reply_on_a_reused_connection_is_not_stale() {
        // A reply read up to the close (no length given): the backend answered, so its close is
        // the end of the body, not a stale connection.
        let (mut t, mut server) = pair();
        assert!(t.is_open());
        t.buffers().output()[..4].copy_from_slice(b"POST");
        t.transmit_output(4, NextTimeout::default()).unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        server.write_all(b"HTTP/1.0 200 OK\r\n\r\nbody").unwrap();
        drop(server);
        assert!(t.await_input(NextTimeout::default()).unwrap());
        let len = t.buffers().input().len();
        t.buffers().input_consume(len);
        assert!(
            !t.await_input(NextTimeout::default()).unwrap(),
            "the end of the stream"
        );
    }

    #[test]
    fn a_silent_backend_is_a_timeout_of_the_given_kind() {
        let (mut t, _server) = pair();
        let timeout = NextTimeout {
            per_read: Some(Duration::from_millis(50).into()),
            ..NextTimeout::default()
        };
        match t.await_input(timeout) {
            Err(Error::Timeout(Timeout::PerRead)) => {}
            other => panic!("expected a per-read timeout, got {other:?}"),
        }
    }

    #[test]
    fn timeouts_are_set_again_only_when_they_change_by_more_than_a_64th() {
        let mut current = None;
        let mut calls = Vec::new();
        let mut ask = |secs: f64, current: &mut Option<Duration>| {
            let t = NextTimeout {
                after: Duration::from_secs_f64(secs).into(),
                ..NextTimeout::default()
            };
            refresh(current, &t, |d| {
                calls.push(d);
                Ok(())
            })
            .unwrap();
        };
        ask(300.0, &mut current);
        ask(299.99, &mut current); // a deadline coming closer: the set one is close enough
        ask(296.0, &mut current); // still within 300/64
        ask(290.0, &mut current); // not any more
        ask(295.0, &mut current); // longer than the one set: a read must not end early
        ask(10.0, &mut current);
        let secs: Vec<f64> = calls.iter().map(|d| d.unwrap().as_secs_f64()).collect();
        assert_eq!(secs, vec![300.0, 290.0, 295.0, 10.0]);
        assert_eq!(current, Some(Duration::from_secs(10)));
    }

    #[test]
    fn connecting_to_a_closed_port_fails_and_to_an_open_one_succeeds() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(connect(&[closed], NextTimeout::default()).is_err());
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = open.local_addr().unwrap();
        // The first address refuses; the second is tried.
        assert!(connect(&[closed, addr], NextTimeout::default()).is_ok());
    }
}
