//! Process signals. SIGTERM or SIGINT: stop accepting, let requests in flight (streams included)
//! finish within `server.shutdown_timeout`, exit 0; a second one exits at once. SIGHUP: reload
//! the configuration and certificates (see `live.rs`).
//!
//! Signals arrive on a thread of their own (signal-hook's self-pipe: installing a handler safely
//! needs unsafe code we would rather not write), which flags the stop on the server's
//! [`Lifecycle`] and so wakes the parking loop.

use std::sync::Arc;

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::Error;
use crate::server::Lifecycle;

/// Exit status after a second stop signal: the drain was cut short.
const EXIT_FORCED: i32 = 1;

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
