//! Logging to stderr. Level: `RUST_LOG` (a level name: error, warn, info, debug, trace; release
//! builds compile trace out, see Cargo.toml) when set, else debug with `server.debug: true`,
//! else info.
//!
//! The HTTP and TLS libraries are capped at warn whatever the level: at debug/trace they print
//! whole request heads, and a request head carries the user's API key.

use log::LevelFilter;
use simple_logger::SimpleLogger;

const QUIET_DEPENDENCIES: &[&str] = &["ureq", "ureq_proto", "rustls", "mio"];

pub fn init(debug: bool) {
    let default = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let mut logger = SimpleLogger::new().with_level(default).env();
    for module in QUIET_DEPENDENCIES {
        logger = logger.with_module_level(module, LevelFilter::Warn);
    }
    // systemd's journal stamps every line itself; a second timestamp is noise.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logger = logger.without_timestamps();
    } else {
        logger = logger.with_utc_timestamps();
    }
    // Fails only if a logger is already set, which cannot happen: this runs once at start.
    let _ = logger.init();
}
