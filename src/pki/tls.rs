//! The rustls server configuration: ring provider, TLS 1.2 and 1.3, ALPN `http/1.1` and
//! `http/1.0`, and a certificate resolver whose certificate can be swapped while the server runs
//! (renewal, reload) without touching connections already established.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::Error;
use crate::pki::certs::{self, CertPaths};

/// Serves the current certificate to every client, whatever name it sent: clients that send no
/// SNI (connecting by IP, some older Java stacks) still get the domain's chain, which carries IP
/// SANs for loopback.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        CertResolver {
            current: RwLock::new(Arc::new(key)),
        }
    }
}

impl CertResolver {
    /// Later handshakes use `key`; established connections keep theirs.
    pub fn replace(&self, key: CertifiedKey) {
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Arc::new(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let slot = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(Arc::clone(&slot))
    }
}

/// Loads the chain and key from `paths` and checks that they belong together.
pub fn load_certified_key(paths: &CertPaths) -> Result<CertifiedKey, Error> {
    let (chain, key) = certs::load_identity(paths)?;
    let provider = ring::default_provider();
    let certified =
        CertifiedKey::from_der(chain, key, &provider).map_err(|e| Error::CertInvalid {
            path: paths.leaf_key.clone(),
            why: format!(
                "key unusable or does not match {}: {e}",
                paths.leaf_cert.display()
            ),
        })?;
    Ok(certified)
}

pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // We speak HTTP/1.1 and 1.0. rustls picks the first of ours the client offers, so a client
    // offering h2 and http/1.1 gets http/1.1, and one offering only http/1.0 (curl --http1.0)
    // gets that rather than a handshake failure.
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}
