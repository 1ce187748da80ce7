//! A client connection as it moves between the parking loop and the workers: the socket, its
//! TLS state (none on the plain-HTTP listener), and decrypted bytes received but not yet
//! consumed.

use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use super::intake::{self, Complete, Limits, Receiving, Step};
use super::limits::ClientConnection;

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

/// What a worker writes a response to: TLS records, or plain bytes, each socket write under
/// the connection's write timeout (`client_io_timeout`, the write-progress deadline). It never
/// reads. rustls' own `Stream` does: when a write blocks, its `complete_io` goes on to read the
/// client's socket, which has no read timeout — a client that stopped reading held its worker
/// for good, past the write deadline.
pub struct Writer<'a> {
    tls: Option<&'a mut ServerConnection>,
    sock: &'a mut TcpStream,
}

impl<'a> Writer<'a> {
    /// Over a connection's fields (borrowed apart, so its buffer stays usable).
    pub fn of(tls: &'a mut Option<Box<ServerConnection>>, sock: &'a mut TcpStream) -> Self {
        Writer {
            tls: tls.as_deref_mut(),
            sock,
        }
    }

    /// Writes every TLS record rustls has queued. A socket write that makes no progress within
    /// the write timeout is an error (TimedOut).
    fn send_records(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        while tls.wants_write() {
            match tls.write_tls(self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out(e)),
            }
        }
        Ok(())
    }
}

impl Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.sock.write(buf).map_err(timed_out),
            Some(tls) => {
                // rustls takes at most its buffer limit; the records go out before more.
                let n = tls.writer().write(buf)?;
                self.send_records()?;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_records()?;
        self.sock.flush()
    }
}

/// A blocking write that ran out of its timeout reports WouldBlock; call it what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "no progress writing to the client")
    } else {
        e
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
    fn slots_are_bounded_and_returned() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).unwrap();
        let _b = Slot::take(&open, 2).unwrap();
        assert!(Slot::take(&open, 2).is_none());
        drop(a);
        assert!(Slot::take(&open, 2).is_some());
    }
}
