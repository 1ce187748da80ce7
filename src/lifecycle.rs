//! Process signals. SIGTERM or SIGINT: stop accepting, let requests in flight (streams included)
//! finish within `server.shutdown_timeout`, exit 0; a second one exits at once. SIGHUP: reload
//! the configuration and certificates (see `reload.rs`).
//!
//! Signals arrive on a thread of their own (signal-hook's self-pipe: installing a handler safely
//! needs unsafe code we would rather not write), which flags the stop and wakes the parking loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::Error;

/// Exit status after a second stop signal: the drain was cut short.
const EXIT_FORCED: i32 = 1;

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

/// Starts the signal thread. `reload` runs on it for each SIGHUP.
pub fn watch<F>(lifecycle: Arc<Lifecycle>, reload: F) -> Result<(), Error>
where
    F: Fn() + Send + 'static,
{
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload(),
                    _ if lifecycle.stopping() => {
                        warn!("second stop signal: exiting without waiting for requests in flight");
                        std::process::exit(EXIT_FORCED);
                    }
                    _ => {
                        let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                        info!("{name}: no new connections; finishing requests in flight (a second signal exits at once)");
                        lifecycle.stop();
                    }
                }
            }
        })?;
    Ok(())
}
