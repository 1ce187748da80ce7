//! The fixed pool of worker threads, the queue that feeds them, and what a worker does with
//! one connection: serve requests while complete heads are buffered, then give it back to the
//! parking loop or close it.
//!
//! A panic while serving is caught here: that connection is dropped and logged, the worker and
//! the process go on.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use log::{debug, error};

use super::Settings;
use super::conn::Conn;
use super::exchange::{self, Handler};
use super::respond::After;
use crate::error::Error;

/// Connections with a complete request head, waiting for a worker. Its length is bounded by
/// `server.max_connections`, since every queued connection holds a slot.
#[derive(Default)]
pub struct WorkQueue {
    items: Mutex<VecDeque<Conn>>,
    ready: Condvar,
}

impl WorkQueue {
    pub fn push(&self, conn: Conn) {
        lock(&self.items).push_back(conn);
        self.ready.notify_one();
    }

    fn pop(&self) -> Conn {
        let mut items = lock(&self.items);
        loop {
            if let Some(conn) = items.pop_front() {
                return conn;
            }
            items = self
                .ready
                .wait(items)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
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

pub fn spawn_workers(
    settings: &Settings,
    queue: Arc<WorkQueue>,
    handler: Arc<dyn Handler>,
    returns: Returns,
) -> Result<(), Error> {
    for i in 0..settings.workers {
        let queue = Arc::clone(&queue);
        let handler = Arc::clone(&handler);
        let returns = returns.clone();
        let settings = settings.clone();
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            // Parsing JSON nests up to serde_json's limit of 128 levels; 1 MiB leaves room even
            // in debug builds. Only touched pages count towards RSS.
            .stack_size(1024 * 1024)
            .spawn(move || {
                loop {
                    let conn = queue.pop();
                    let peer = conn.peer;
                    let served = catch_unwind(AssertUnwindSafe(|| {
                        serve_connection(conn, &settings, handler.as_ref())
                    }));
                    match served {
                        Ok(Some(conn)) => returns.park(conn),
                        Ok(None) => {}
                        Err(_) => error!(
                            "internal error: a panic while serving {peer}; its connection was dropped \
                             and the server goes on. Please report this with the log above."
                        ),
                    }
                }
            })?;
    }
    Ok(())
}

/// Serves requests on `conn` while complete heads are buffered. Returns the connection when it
/// should be parked to wait for the next request, `None` when it was closed.
fn serve_connection(mut conn: Conn, settings: &Settings, handler: &dyn Handler) -> Option<Conn> {
    let io_timeout = Some(settings.timeouts.client_io);
    if let Err(e) = conn
        .sock
        .set_nonblocking(false)
        .and_then(|()| conn.sock.set_read_timeout(io_timeout))
        .and_then(|()| conn.sock.set_write_timeout(io_timeout))
    {
        debug!("{}: socket setup failed: {e}", conn.peer);
        return None;
    }
    loop {
        let after = {
            let mut stream = rustls::Stream::new(&mut conn.tls, &mut conn.sock);
            exchange::serve(
                &mut stream,
                &mut conn.buf,
                conn.peer,
                settings.max_body_bytes,
                handler,
            )
        };
        match after {
            Ok(After::KeepAlive) => {}
            Ok(After::Close) => {
                close(conn);
                return None;
            }
            Err(e) => {
                debug!("{}: connection ended: {e}", conn.peer);
                return None;
            }
        }
        take_decrypted(&mut conn);
        if !conn.has_complete_head() {
            break;
        }
    }
    match conn.sock.set_nonblocking(true) {
        Ok(()) => Some(conn),
        Err(_) => None,
    }
}

/// Moves plaintext that rustls already decrypted into `conn.buf`, without touching the socket:
/// a pipelined request may be waiting there, and the poller would never see it.
fn take_decrypted(conn: &mut Conn) {
    let mut tmp = [0u8; 4096];
    loop {
        match conn.tls.reader().read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => conn.buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// Closes after telling the client (close_notify, FIN), then reads and discards what it may
/// still be sending for a moment: closing with unread input makes the kernel send a reset,
/// which can destroy our last response (a 413, say) before the client has read it.
fn close(mut conn: Conn) {
    conn.tls.send_close_notify();
    while conn.tls.wants_write() {
        if conn.tls.write_tls(&mut conn.sock).is_err() {
            return;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic never happens while this lock is held (push/pop only), but be robust anyway.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
