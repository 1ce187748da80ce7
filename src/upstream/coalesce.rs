//! Combines a request's writes to a backend: ureq sends the head and then the body, each with
//! its own write, so a small request costs two segments (with TLS, two records) and, on
//! loopback, two passes through the receiving side of the network stack. Here small writes are
//! held back until more arrives, a full buffer can go out, or ureq waits for the response —
//! so a typical chat request leaves in one write.
//!
//! A layer in ureq's connector chain over whatever connection the layers before made (TCP, or a
//! proxy's), below TLS: ureq's connector chains are part of its `unversioned` API, which is
//! why Cargo.toml takes ureq 3.5.x only (a tilde requirement).

use ureq::Error;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Writes up to this size wait for more: a request head, a small body.
const HOLD_MAX: usize = 4 * 1024;

#[derive(Debug, Default)]
pub struct CoalescingConnector;

impl<In: Transport> Connector<In> for CoalescingConnector {
    type Out = Coalesced<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(|inner| Coalesced {
            inner,
            held: Vec::new(),
            spare: Vec::new(),
        }))
    }
}

#[derive(Debug)]
pub struct Coalesced<T> {
    inner: T,
    /// Bytes given to `transmit_output` and not yet written; at most `HOLD_MAX`.
    held: Vec<u8>,
    /// Scratch for the part of a write that does not fit the output buffer.
    spare: Vec<u8>,
}

impl<T: Transport> Coalesced<T> {
    /// Writes what is held.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), Error> {
        let n = self.held.len();
        if n == 0 {
            return Ok(());
        }
        self.inner.buffers().output()[..n].copy_from_slice(&self.held);
        self.held.clear();
        self.inner.transmit_output(n, timeout)
    }
}

impl<T: Transport> Transport for Coalesced<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let h = self.held.len();
        if h + amount <= HOLD_MAX {
            self.held
                .extend_from_slice(&self.inner.buffers().output()[..amount]);
            return Ok(());
        }
        // ureq wrote `amount` bytes at the start of the output buffer; the held bytes go in
        // front of them, and what then overflows the buffer is held for the next write (at
        // most `h` bytes, so within HOLD_MAX).
        let output = self.inner.buffers().output();
        let cap = output.len();
        if h > cap {
            // An output buffer smaller than what is held: not ureq's, but stay correct.
            let current = output[..amount].to_vec();
            self.flush(timeout)?;
            self.inner.buffers().output()[..amount].copy_from_slice(&current);
            return self.inner.transmit_output(amount, timeout);
        }
        let fits = amount.min(cap - h);
        self.spare.clear();
        self.spare.extend_from_slice(&output[fits..amount]);
        output.copy_within(..fits, h);
        output[..h].copy_from_slice(&self.held);
        std::mem::swap(&mut self.held, &mut self.spare);
        self.inner.transmit_output(h + fits, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush(timeout)?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ureq::unversioned::transport::LazyBuffers;

    /// Records each write; its output buffer is ureq's default kind, 8 KiB as configured.
    #[derive(Debug)]
    struct Recorder {
        buffers: LazyBuffers,
        writes: Vec<Vec<u8>>,
    }

    impl Transport for Recorder {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }
        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), Error> {
            self.writes.push(self.buffers.output()[..amount].to_vec());
            Ok(())
        }
        fn await_input(&mut self, _: NextTimeout) -> Result<bool, Error> {
            Ok(false)
        }
        fn is_open(&mut self) -> bool {
            true
        }
    }

    fn coalesced() -> Coalesced<Recorder> {
        Coalesced {
            inner: Recorder {
                buffers: LazyBuffers::new(10 * 1024, 8 * 1024),
                writes: Vec::new(),
            },
            held: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Sends `chunks` the way ureq does (each written at the start of the output buffer), then
    /// waits for the response; returns the writes that reached the socket.
    fn send(chunks: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut t = coalesced();
        for chunk in chunks {
            t.buffers().output()[..chunk.len()].copy_from_slice(chunk);
            t.transmit_output(chunk.len(), NextTimeout::default())
                .unwrap();
        }
        t.await_input(NextTimeout::default()).unwrap();
        t.inner.writes
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_small_request_leaves_in_one_write() {
        let head = bytes(300, 1);
        let body = bytes(200, 2);
        let writes = send(&[head.clone(), body.clone()]);
        assert_eq!(writes, vec![[head, body].concat()]);
    }

    #[test]
    fn a_large_body_goes_out_in_full_buffers_with_the_head_in_front() {
        let head = bytes(300, 1);
        let first = bytes(8192, 2);
        let last = bytes(2000, 3);
        let writes = send(&[head.clone(), first.clone(), last.clone()]);
        let lengths: Vec<usize> = writes.iter().map(Vec::len).collect();
        assert_eq!(lengths, vec![8192, 2300]);
        assert_eq!(writes.concat(), [head, first, last].concat());
    }

    #[test]
    fn nothing_is_written_before_the_response_is_awaited_while_small() {
        let mut t = coalesced();
        t.buffers().output()[..10].copy_from_slice(b"0123456789");
        t.transmit_output(10, NextTimeout::default()).unwrap();
        assert!(t.inner.writes.is_empty());
        t.await_input(NextTimeout::default()).unwrap();
        assert_eq!(t.inner.writes, vec![b"0123456789".to_vec()]);
        // Nothing held any more: a second wait writes nothing.
        t.await_input(NextTimeout::default()).unwrap();
        assert_eq!(t.inner.writes.len(), 1);
    }

    proptest! {
        #[test]
        fn bytes_arrive_in_order_in_no_more_writes(sizes in proptest::collection::vec(0usize..=8192, 0..12)) {
            let chunks: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| bytes(*n, i as u8)).collect();
            let writes = send(&chunks);
            prop_assert_eq!(writes.concat(), chunks.concat());
            prop_assert!(writes.len() <= chunks.len().max(1));
            prop_assert!(writes.iter().all(|w| !w.is_empty() && w.len() <= 8192));
        }
    }
}
