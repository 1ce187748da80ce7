//! The one place the server touches the operating system's socket handles: mio polls a std
//! socket by its handle, which lets the same `TcpStream` move between the poller
//! (non-blocking) and a worker (blocking).
//!
//! Unix: mio's `SourceFd` registers any file descriptor. Windows: mio polls sockets through
//! its own socket types only (their registration state lives in them), so each registered
//! socket gets a mio `TcpStream` view of the same handle, kept here until deregistered and
//! then given back without closing the socket. mio on Windows also reports a readiness once
//! until the socket is registered again (it stands in for edge triggering by watching the I/O
//! done through its own types, which ours is not): the parking loop calls [`rearm`] where a
//! socket is drained, and re-registers after each event where it sets interests anyway
//! ([`REARM`]).

use std::io;

use mio::{Interest, Registry, Token};

/// Whether a socket must be registered again after each of its events.
pub const REARM: bool = cfg!(windows);

/// Where a socket was read until `WouldBlock`: on Windows, arms it again for `interest`; on
/// Unix nothing (the registration stands). A failure shows at the socket's deadline.
pub fn rearm<T: AsHandle>(registry: &Registry, sock: &T, token: Token, interest: Interest) {
    if REARM {
        let _ = imp::reregister(sock, registry, token, interest);
    }
}

#[cfg(unix)]
mod imp {
    pub use std::os::fd::AsRawFd as AsHandle;

    use std::io;

    use mio::event::Source as _;
    use mio::unix::SourceFd;
    use mio::{Interest, Registry, Token};

    pub fn register<T: AsHandle>(s: &T, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&s.as_raw_fd()).register(r, t, i)
    }

    pub fn reregister<T: AsHandle>(s: &T, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        SourceFd(&s.as_raw_fd()).reregister(r, t, i)
    }

    pub fn deregister<T: AsHandle>(s: &T, r: &Registry) -> io::Result<()> {
        SourceFd(&s.as_raw_fd()).deregister(r)
    }
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod imp {
    pub use std::os::windows::io::AsRawSocket as AsHandle;

    use std::collections::HashMap;
    use std::io;
    use std::mem::ManuallyDrop;
    use std::os::windows::io::{FromRawSocket, IntoRawSocket, RawSocket};
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use mio::event::Source as _;
    use mio::{Interest, Registry, Token};

    /// The mio view of each registered socket. `ManuallyDrop`: the socket belongs to its std
    /// owner; the view is given back with `into_raw_socket`, never dropped as a socket.
    type Views = HashMap<RawSocket, ManuallyDrop<mio::net::TcpStream>>;

    fn views() -> MutexGuard<'static, Views> {
        static VIEWS: OnceLock<Mutex<Views>> = OnceLock::new();
        VIEWS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Gives a view back without closing its socket (its registration state is dropped).
    fn release(view: ManuallyDrop<mio::net::TcpStream>) {
        let _ = ManuallyDrop::into_inner(view).into_raw_socket();
    }

    pub fn register<T: AsHandle>(s: &T, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        let raw = s.as_raw_socket();
        // SAFETY: the view shares the handle of a socket that stays open while it is
        // registered (the parking loop deregisters before it closes or hands one on); the
        // view is never closed, see `release`.
        let mut view = ManuallyDrop::new(unsafe { mio::net::TcpStream::from_raw_socket(raw) });
        let result = view.register(r, t, i);
        let mut views = views();
        if let Some(stale) = views.remove(&raw) {
            // A socket closed while registered, whose handle value came back: its old view.
            release(stale);
        }
        match result {
            Ok(()) => {
                views.insert(raw, view);
                Ok(())
            }
            Err(e) => {
                release(view);
                Err(e)
            }
        }
    }

    pub fn reregister<T: AsHandle>(s: &T, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match views().get_mut(&s.as_raw_socket()) {
            Some(view) => view.reregister(r, t, i),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    pub fn deregister<T: AsHandle>(s: &T, r: &Registry) -> io::Result<()> {
        let Some(mut view) = views().remove(&s.as_raw_socket()) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let result = view.deregister(r);
        release(view);
        result
    }
}

pub use imp::AsHandle;

/// A std socket as a mio event source, borrowed for one (de)registration.
pub struct Source<'a, T: AsHandle>(pub &'a T);

impl<T: AsHandle> mio::event::Source for Source<'_, T> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        imp::register(self.0, registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        imp::reregister(self.0, registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        imp::deregister(self.0, registry)
    }
}
