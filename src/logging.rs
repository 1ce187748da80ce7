//! Logging to stderr. Level: `RUST_LOG` (a level name: error, warn, info, debug, trace; release
//! builds compile trace out, see Cargo.toml) when set, else debug with `server.debug: true`,
//! else info.
//!
//! The HTTP and TLS libraries are capped at warn whatever the level: at debug/trace they print
//! whole request heads, and a request head carries the user's API key.
//!
//! Our own logger, not simple_logger: that one writes with `eprintln!`, which panics when stderr
//! is a pipe nobody reads any more (a log shipper restarting, `| tee` ending), and a panic on the
//! signal thread left SIGTERM ignored. Here a line that cannot be written is dropped and counted
//! ([`dropped`], exported as a metric). Each line is formatted first and written with one call,
//! so lines from different threads do not interleave.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

const QUIET_DEPENDENCIES: &[&str] = &["ureq", "ureq_proto", "rustls", "mio"];

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines that could not be written since the start.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

struct Logger {
    level: LevelFilter,
    /// systemd's journal stamps every line itself; a second timestamp is noise.
    timestamps: bool,
}

pub fn init(debug: bool) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    let logger = Logger {
        level,
        timestamps: std::env::var_os("JOURNAL_STREAM").is_none(),
    };
    // Lives as long as the process. Fails only if a logger is already set (a second init in
    // one process): keep the first.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        log::set_max_level(level);
    }
}

impl Logger {
    fn level_for(&self, target: &str) -> LevelFilter {
        let quiet = QUIET_DEPENDENCIES.iter().any(|m| {
            target == *m
                || target
                    .strip_prefix(m)
                    .is_some_and(|rest| rest.starts_with("::"))
        });
        if quiet {
            self.level.min(LevelFilter::Warn)
        } else {
            self.level
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::with_capacity(160);
        if self.timestamps {
            let now = time::OffsetDateTime::now_utc();
            let _ = write!(
                line,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z ",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second(),
                now.millisecond()
            );
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let _ = writeln!(line, "{level} [{}] {}", record.target(), record.args());
        if std::io::stderr().lock().write_all(line.as_bytes()).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// A value from the network (a model name, a path) made safe for a `key=value` log line: control
/// characters (newlines, ANSI escapes) escaped, so a client cannot forge lines or colour a
/// terminal; quoted when it holds a space, `=` or `"`, so it cannot pose as another field; cut at
/// [`FIELD_MAX`] characters.
pub struct Field<'a>(pub &'a str);

/// Longest value logged as it is; the rest is cut and marked.
pub const FIELD_MAX: usize = 200;

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0;
        let plain = !text.is_empty()
            && text
                .chars()
                .all(|c| !c.is_control() && c != ' ' && c != '"' && c != '=' && c != '\\');
        let cut = text.chars().count() > FIELD_MAX;
        if plain && !cut {
            return f.write_str(text);
        }
        f.write_char('"')?;
        for c in text.chars().take(FIELD_MAX) {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        if cut {
            f.write_str("...")?;
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_from_the_network_cannot_forge_lines_or_fields() {
        assert_eq!(Field("gpt-4o").to_string(), "gpt-4o");
        assert_eq!(Field("qwen/qwen3:7b").to_string(), "qwen/qwen3:7b");
        assert_eq!(
            Field("x\nINFO forged status=200").to_string(),
            r#""x\u{a}INFO forged status=200""#
        );
        assert_eq!(Field("\u{1b}[31mred").to_string(), r#""\u{1b}[31mred""#);
        assert_eq!(Field(r#"a"b\"#).to_string(), r#""a\"b\\""#);
        assert_eq!(Field("").to_string(), r#""""#);
        let long = "m".repeat(FIELD_MAX + 50);
        let shown = Field(&long).to_string();
        assert_eq!(shown.len(), FIELD_MAX + 5, "cut, quoted and marked");
        assert!(shown.ends_with("...\""));
    }

    #[test]
    fn dependencies_are_held_at_warn() {
        let logger = Logger {
            level: LevelFilter::Trace,
            timestamps: false,
        };
        assert_eq!(logger.level_for("ureq::unversioned"), LevelFilter::Warn);
        assert_eq!(logger.level_for("rustls"), LevelFilter::Warn);
        assert_eq!(logger.level_for("ureqx"), LevelFilter::Trace);
        assert_eq!(logger.level_for("trae_proxy::proxy"), LevelFilter::Trace);
    }
}
