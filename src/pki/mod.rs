//! The proxy's certificates: the CA and leaf files (created, renewed, read), the rustls server
//! configuration that serves them, and the few X.509 fields read from them.

pub mod certs;
pub mod tls;
pub mod x509;
