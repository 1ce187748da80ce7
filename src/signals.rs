//! Process signals. SIGTERM or SIGINT: stop accepting, let requests in flight (streams included)
//! finish within `server.shutdown_timeout`, exit 0; a second one exits at once. SIGHUP: reload
//! the configuration and certificates (see `live.rs`).
//!
//! Signals arrive on a thread of their own (signal-hook's self-pipe: installing a handler safely
//! needs unsafe code we would rather not write), which flags the stop on the server's
//! [`Lifecycle`] and so wakes the parking loop.
//!
//! Windows has no signals: Ctrl+C, Ctrl+Break and closing the console window stop the same
//! way (`server::os::on_console_stop`), and `trae-proxy reload` stands in for SIGHUP.

use std::sync::Arc;

use log::{info, warn};

use crate::error::Error;
use crate::server::Lifecycle;

/// Exit status after a second stop signal: the drain was cut short.
const EXIT_FORCED: i32 = 1;

/// A stop signal called `name`: the first drains, a second exits at once.
fn stop(lifecycle: &Lifecycle, name: &str) {
    if lifecycle.stopping() {
        warn!("second stop signal: exiting without waiting for requests in flight");
        std::process::exit(EXIT_FORCED);
    }
    info!(
        "{name}: no new connections; finishing requests in flight (a second signal exits at once)"
    );
    lifecycle.stop();
}

/// Starts the signal thread. `reload` runs on it for each SIGHUP.
#[cfg(unix)]
pub fn watch<F>(
    lifecycle: Arc<Lifecycle>,
    reload: F,
    _drain: std::time::Duration,
) -> Result<(), Error>
where
    F: Fn() + Send + 'static,
{
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload(),
                    SIGINT => stop(&lifecycle, "SIGINT"),
                    _ => stop(&lifecycle, "SIGTERM"),
                }
            }
        })?;
    Ok(())
}

/// Windows: the console's stop events; no reload event (see `trae-proxy reload`).
#[cfg(windows)]
pub fn watch<F>(
    lifecycle: Arc<Lifecycle>,
    _reload: F,
    drain: std::time::Duration,
) -> Result<(), Error>
where
    F: Fn() + Send + 'static,
{
    let on_stop = Box::new(move |name: &'static str| stop(&lifecycle, name));
    crate::server::os::on_console_stop(on_stop, drain)?;
    Ok(())
}
