//! Errors that stop the proxy from starting or a command from finishing. Each names the file or
//! address involved and, where there is one, the fix. Errors shown to HTTP clients are a different
//! type: [`crate::api_error::ApiError`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    ConfigRead {
        path: PathBuf,
        source: io::Error,
    },
    ConfigInvalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// A certificate or key file that exists but cannot be used.
    CertInvalid {
        path: PathBuf,
        why: String,
    },
    FileIo {
        path: PathBuf,
        source: io::Error,
    },
    CertGenerate(rcgen::Error),
    Tls(rustls::Error),
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
    /// A config edit that would make the file invalid; the file was left as it was.
    EditRefused {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// A command that cannot be done as asked (unknown entry, last entry, ...).
    Refused(String),
    /// The command line itself is wrong; exit status 2.
    Usage(String),
    /// A check (`check`, `doctor`) found problems it has already reported.
    ChecksFailed(usize),
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ConfigRead { path, source } => {
                write!(f, "cannot read config {}: {source}", path.display())
            }
            Error::ConfigInvalid { path, problems } => {
                write!(f, "config {} is invalid:", path.display())?;
                for p in problems {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
            Error::CertInvalid { path, why } => {
                write!(f, "certificate file {}: {why}", path.display())
            }
            Error::FileIo { path, source } => write!(f, "{}: {source}", path.display()),
            Error::CertGenerate(e) => write!(f, "cannot generate certificate: {e}"),
            Error::Tls(e) => write!(f, "TLS setup failed: {e}"),
            Error::Bind { addr, source } if source.kind() == io::ErrorKind::PermissionDenied => {
                write!(
                    f,
                    "cannot listen on {addr}: {source}. Ports below 1024 need privilege: run as root, \
                     grant the binary the capability (sudo setcap cap_net_bind_service=+ep $(which trae-proxy)), \
                     use the systemd unit (AmbientCapabilities=CAP_NET_BIND_SERVICE), \
                     or set server.port to 1024 or above (e.g. 8443) in the config or with --port"
                )
            }
            Error::Bind { addr, source } if source.kind() == io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen on {addr}: {source}. Another process holds the port; stop it or choose another server.port"
            ),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::EditRefused { path, problems } => {
                write!(
                    f,
                    "not changed: the result would be invalid, {} is as it was:",
                    path.display()
                )?;
                for p in problems {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
            Error::Refused(why) => f.write_str(why),
            Error::Usage(why) => write!(f, "{why} (see --help)"),
            Error::ChecksFailed(n) => write!(f, "{n} check(s) failed"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        Error::CertGenerate(e)
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Error::Tls(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
