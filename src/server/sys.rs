//! The one place the server touches the operating system's socket handles: mio polls a
//! std socket through its file descriptor (`SourceFd`), which lets the same `TcpStream` move
//! between the poller (non-blocking) and a worker (blocking).

use std::io;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// A std socket as a mio event source, borrowed for one (de)registration.
pub struct Source<'a, T: AsRawFd>(pub &'a T);

impl<T: AsRawFd> mio::event::Source for Source<'_, T> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}
