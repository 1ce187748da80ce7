//! Whether the server is stopping, and the waker that tells the parking loop. Whoever decides to
//! stop (a signal, a command) calls [`Lifecycle::stop`]; the loop then drains (see parking.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

#[derive(Default)]
pub struct Lifecycle {
    stopping: AtomicBool,
    waker: OnceLock<Arc<mio::Waker>>,
}

impl Lifecycle {
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The parking loop registers the waker that [`Lifecycle::stop`] pulls.
    pub fn set_waker(&self, waker: Arc<mio::Waker>) {
        let _ = self.waker.set(waker);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(waker) = self.waker.get() {
            let _ = waker.wake();
        }
    }
}
