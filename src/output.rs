//! What the commands print for people. `println!` panics when stdout is a pipe that has closed
//! (`trae-proxy certs show | head -1`: Rust ignores SIGPIPE, so the write fails with EPIPE);
//! a command line tool ends quietly there instead, as ripgrep does.

use std::fmt;
use std::io::{self, Write};

/// Writes one line to stdout (`say!` builds the arguments).
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        ended(&e);
    }
}

/// Writes text as it is (no newline added).
pub fn text(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        ended(&e);
    }
}

/// Writes a line to stderr; a failure there has nowhere to be reported and is dropped.
pub fn complain(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// The reader went away (exit 0: it had what it wanted), or stdout failed otherwise (exit 1).
fn ended(e: &io::Error) -> ! {
    // Windows says ERROR_NO_DATA (232, mapped to BrokenPipe) or ERROR_PIPE_NOT_CONNECTED (233).
    if e.kind() == io::ErrorKind::BrokenPipe || (cfg!(windows) && e.raw_os_error() == Some(233)) {
        std::process::exit(0);
    }
    complain(format_args!("trae-proxy: cannot write to stdout: {e}"));
    std::process::exit(1);
}

/// `println!` for command output; see the module doc.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

pub(crate) use say;
