//! A client connection as it moves between the parking loop and the workers: the socket, its
//! TLS state (none on the plain-HTTP listener), and decrypted bytes received but not yet
//! consumed.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use super::intake::{self, Complete, Limits, Receiving, Step};
use super::limits::{ClientConnection, ClientRequest};

pub struct Conn {
    pub sock: TcpStream,
    /// `None` on the plain-HTTP listener (`server.http_bind`). Boxed: it is most of a
    /// connection's size (1.2 KiB), and connections move between threads and wait in queues
    /// whose capacity stays at its peak.
    pub tls: Option<Box<ServerConnection>>,
    /// Plaintext received and not yet consumed: a partial request head, or a whole pipelined one.
    pub buf: Vec<u8>,
    pub peer: SocketAddr,
    /// When the connection was accepted, for the handshake + first head deadline.
    pub since: Instant,
    /// The socket's timeouts as last set: a worker switches between a short wait for the next
    /// request and the client I/O timeout, and each change is a system call, so only changes
    /// are made.
    pub read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// The request being received: its head parsed, its body arriving.
    pub receiving: Option<Box<Receiving>>,
    /// A request received whole, waiting for or held by a worker.
    pub ready: Option<Box<Complete>>,
    /// This client's request-in-flight share while a worker serves `ready`.
    pub in_flight: Option<ClientRequest>,
    /// Bytes for a plain-HTTP client not yet written (a `100 Continue`); TLS keeps its own.
    pending: Vec<u8>,
    _slot: Slot,
    _client: ClientConnection,
}

impl Conn {
    pub fn new(
        sock: TcpStream,
        tls: Option<Box<ServerConnection>>,
        peer: SocketAddr,
        places: (Slot, ClientConnection),
    ) -> Self {
        Conn {
            sock,
            tls,
            buf: Vec::new(),
            peer,
            since: Instant::now(),
            read_timeout: None,
            write_timeout: None,
            receiving: None,
            ready: None,
            in_flight: None,
            pending: Vec::new(),
            _slot: places.0,
            _client: places.1,
        }
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let sock = &self.sock;
        set_if_changed(&mut self.read_timeout, timeout, |t| {
            sock.set_read_timeout(t)
        })
    }

    pub fn set_write_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let sock = &self.sock;
        set_if_changed(&mut self.write_timeout, timeout, |t| {
            sock.set_write_timeout(t)
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Tells a TLS client we are closing (close_notify), without blocking; nothing for plain.
    pub fn say_goodbye(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.sock);
        }
    }

    /// Moves the plaintext rustls has decrypted into `buf`, straight from rustls' buffer (one
    /// copy, no bounce buffer). True when the client has ended the TLS stream, cleanly or not.
    pub fn take_plaintext(&mut self) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        let mut reader = tls.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => return true,
                Ok(chunk) => {
                    let n = chunk.len();
                    self.buf.extend_from_slice(chunk);
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    /// Drops empty lines before a request (RFC 9112 section 2.2 lets a server ignore them), so
    /// a client cannot pass blank lines off as a request head.
    pub fn skip_blank_lines(&mut self) {
        if self.receiving.is_some() {
            return;
        }
        let blank = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if blank > 0 {
            self.buf.drain(..blank);
        }
    }

    /// Runs [`intake::advance`] on what `buf` holds. A `100 Continue` it produces is queued for
    /// the client; the caller flushes it ([`Conn::flush_nonblocking`] or [`Conn::flush_blocking`]).
    pub fn receive(&mut self, limits: Limits<'_>) -> Step {
        self.skip_blank_lines();
        if self.buf.is_empty() && self.receiving.is_none() {
            return Step::NeedMore;
        }
        let mut out = Vec::new();
        let step = intake::advance(&mut self.receiving, &mut self.buf, limits, &mut out);
        if !out.is_empty() {
            match self.tls.as_mut() {
                // Buffered in rustls, encrypted when flushed; cannot fail short of memory.
                Some(tls) => {
                    let _ = tls.writer().write_all(&out);
                }
                None => self.pending.extend_from_slice(&out),
            }
        }
        step
    }

    /// Writes what is queued for the client without blocking. `Ok(true)` when some is left
    /// (the caller waits for the socket to be writable).
    pub fn flush_nonblocking(&mut self) -> io::Result<bool> {
        match self.tls.as_mut() {
            Some(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            None => {
                while !self.pending.is_empty() {
                    match self.sock.write(&self.pending) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            self.pending.drain(..n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(false)
    }

    /// Writes what is queued for the client, waiting as the socket's write timeout allows.
    pub fn flush_blocking(&mut self) -> io::Result<()> {
        match self.tls.as_mut() {
            Some(tls) => {
                while tls.wants_write() {
                    tls.write_tls(&mut self.sock)?;
                }
            }
            None => {
                self.sock.write_all(&self.pending)?;
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// Nothing of a next request has arrived: the connection is idle between requests.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.receiving.is_none() && self.ready.is_none()
    }
}

/// The byte stream a worker reads requests from and writes responses to. Reads get the client
/// I/O timeout, but lazily: the socket may still have the worker's short wait for a next
/// request set, and a read is first tried with that. The rest of a request usually follows its
/// head at once (many clients write the body separately), so switching timeouts — a system call
/// each way, every request — is only done when a read actually has to wait.
pub struct Stream<'a> {
    io: Io<'a>,
    read_timeout: &'a mut Option<Duration>,
    io_timeout: Duration,
}

enum Io<'a> {
    Tls(rustls::Stream<'a, ServerConnection, TcpStream>),
    Plain(&'a mut TcpStream),
}

impl<'a> Stream<'a> {
    /// Over a connection's fields (borrowed apart, so its buffer stays usable).
    pub fn of(
        tls: &'a mut Option<Box<ServerConnection>>,
        sock: &'a mut TcpStream,
        read_timeout: &'a mut Option<Duration>,
        io_timeout: Duration,
    ) -> Self {
        let io = match tls.as_mut() {
            Some(tls) => Io::Tls(rustls::Stream::new(tls, sock)),
            None => Io::Plain(sock),
        };
        Stream {
            io,
            read_timeout,
            io_timeout,
        }
    }

    fn use_io_timeout(&mut self) -> io::Result<()> {
        let sock: &TcpStream = match &self.io {
            Io::Tls(s) => s.sock,
            Io::Plain(s) => s,
        };
        set_if_changed(self.read_timeout, self.io_timeout, |t| {
            sock.set_read_timeout(t)
        })
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Tls(s) => s.read(buf),
            Io::Plain(s) => s.read(buf),
        }
    }
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.read_now(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && *self.read_timeout != Some(self.io_timeout) =>
            {
                self.use_io_timeout()?;
                self.read_now(buf)
            }
            other => other,
        }
    }
}

impl Write for Stream<'_> {
    // Writes use the write timeout, set once per connection. (A TLS write reads only during a
    // handshake, which the parking loop finishes before a worker sees the connection.)
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Tls(s) => s.write(buf),
            Io::Plain(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.io {
            Io::Tls(s) => s.flush(),
            Io::Plain(s) => s.flush(),
        }
    }
}

/// Sets a socket timeout through `set` unless `current` says it is already `wanted`.
fn set_if_changed(
    current: &mut Option<Duration>,
    wanted: Duration,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    if *current != Some(wanted) {
        set(Some(wanted))?;
        *current = Some(wanted);
    }
    Ok(())
}

/// Index just past the empty line that ends a request head (CRLF or bare LF line endings).
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = buf.get(i..)?.iter().position(|b| *b == b'\n') {
        let nl = i + pos;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n']) => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

/// One of the `server.max_connections` places; given back when the connection is dropped,
/// wherever that happens.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Takes a place if one is free.
    pub fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_with_crlf_and_bare_lf() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"),
            Some(27)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\nHost: a\n\nBODY"), Some(24));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(find_head_end(b""), None);
    }

    #[test]
    fn slots_are_bounded_and_returned() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).unwrap();
        let _b = Slot::take(&open, 2).unwrap();
        assert!(Slot::take(&open, 2).is_none());
        drop(a);
        assert!(Slot::take(&open, 2).is_some());
    }
}
