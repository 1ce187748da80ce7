//! The proxy's certificate authority and its leaf certificate for `domain`: finding them in the
//! certificate folder, creating what is missing, and loading the chain to serve.
//!
//! Compatibility: the Python original left `ca/ca.crt`, `ca/ca.key` (RSA-2048, PKCS#8 or PKCS#1
//! PEM) and `ca/<domain>.crt`, `ca/<domain>.key`. Users trusted that CA on their machines, so an
//! existing CA is never replaced here, and an RSA CA can still sign a new leaf.
//!
//! What we create ourselves is ECDSA P-256: signing is ~20x cheaper than RSA-2048 on a Pi's
//! handshake path, and every TLS client of the last decade accepts it.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::files::{MODE_PUBLIC, MODE_SECRET, write_atomic};

/// Leaf lifetime. Apple platforms reject TLS server certificates valid for more than 825 days
/// even from user-trusted roots, and public CAs are capped at 398; stay under both.
const LEAF_VALIDITY: Duration = Duration::days(397);
const CA_VALIDITY: Duration = Duration::days(3650);

/// The four files of a certificate folder.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub leaf_cert: PathBuf,
    pub leaf_key: PathBuf,
}

impl CertPaths {
    pub fn new(dir: &Path, domain: &str) -> CertPaths {
        CertPaths {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            leaf_cert: dir.join(format!("{domain}.crt")),
            leaf_key: dir.join(format!("{domain}.key")),
        }
    }
}

/// A leaf is renewed this long before it expires.
pub const RENEW_WITHIN: Duration = Duration::days(30);
/// A CA this close to its end is warned about at start.
pub const CA_WARN_WITHIN: Duration = Duration::days(90);

/// What `certs show` prints of a certificate.
#[derive(Debug)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    /// SHA-256 of the DER, as colon-separated hex (what browsers and `openssl x509 -fingerprint`
    /// show).
    pub sha256: String,
}

impl CertInfo {
    pub fn days_left(&self) -> i64 {
        (self.not_after - OffsetDateTime::now_utc()).whole_days()
    }
}

/// Reads the first certificate of a PEM file.
pub fn read_info(path: &Path) -> Result<CertInfo, Error> {
    let der = first_cert(path)?;
    let cert = crate::pki::x509::parse(&der).map_err(|why| Error::CertInvalid {
        path: path.to_owned(),
        why: format!("not a valid certificate: {why}"),
    })?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let sha256 = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(CertInfo {
        subject: cert.subject.to_string(),
        issuer: cert.issuer.to_string(),
        names: cert.names,
        not_before: cert.not_before,
        not_after: cert.not_after,
        is_ca: cert.is_ca,
        sha256,
    })
}

/// What [`ensure`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Created {
    pub ca: bool,
    /// Why a leaf was issued, when one was.
    pub leaf: Option<LeafReason>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LeafReason {
    Missing,
    /// The leaf does not cover this configured name.
    LacksName(String),
    /// Days left before the leaf expires.
    Expiring(i64),
}

impl std::fmt::Display for LeafReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeafReason::Missing => f.write_str("there was none"),
            LeafReason::LacksName(n) => write!(f, "the old one did not cover {n}"),
            LeafReason::Expiring(days) => {
                write!(f, "the old one expired or expires in {days} days")
            }
        }
    }
}

/// What [`ensure`] would do to the certificate folder: issue a leaf (and why), and whether
/// it would create the CA first. `check` reports it; `serve` carries it out.
pub fn plan(paths: &CertPaths, names: &[String]) -> Result<Created, Error> {
    let mut plan = Created::default();
    let Some(reason) = leaf_problem(paths, names)? else {
        return Ok(plan);
    };
    match (paths.ca_cert.exists(), paths.ca_key.exists()) {
        (true, true) => {}
        (false, false) => plan.ca = true,
        (has_cert, _) => {
            let (missing, present) = if has_cert {
                (&paths.ca_key, &paths.ca_cert)
            } else {
                (&paths.ca_cert, &paths.ca_key)
            };
            return Err(Error::CertInvalid {
                path: missing.clone(),
                why: format!(
                    "is missing while {} exists; restore it (clients trust that CA), \
                     or remove both to create a new CA",
                    present.display()
                ),
            });
        }
    }
    plan.leaf = Some(reason);
    Ok(plan)
}

/// Makes sure a usable leaf for `names` (the domain first) exists. A leaf is issued from the CA
/// when it is missing, lacks one of the names, or expires within [`RENEW_WITHIN`]; the CA is
/// created only when neither of its files exists. Never overwrites an existing CA.
pub fn ensure(paths: &CertPaths, names: &[String]) -> Result<Created, Error> {
    let plan = plan(paths, names)?;
    if plan.ca {
        create_ca(paths)?;
    }
    if plan.leaf.is_some() {
        issue_leaf(paths, names)?;
    }
    Ok(plan)
}

/// What about the folder's files deserves the operator's attention: keys others can read, a
/// folder others can write to.
pub fn warnings(paths: &CertPaths) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(dir) = paths
        .ca_cert
        .parent()
        .filter(|d| crate::files::writable_by_others(d))
    {
        warnings.push(format!(
            "certificate folder {} is writable by other users, who could swap the certificates; \
             run: chmod 700 {}",
            dir.display(),
            dir.display()
        ));
    }
    for key in [&paths.ca_key, &paths.leaf_key] {
        if crate::files::readable_by_others(key) {
            warnings.push(format!(
                "private key {} is readable by other users; run: chmod 600 {}",
                key.display(),
                key.display()
            ));
        }
    }
    warnings
}

/// Why the leaf must be (re)issued, if it must.
fn leaf_problem(paths: &CertPaths, names: &[String]) -> Result<Option<LeafReason>, Error> {
    if !paths.leaf_cert.exists() || !paths.leaf_key.exists() {
        return Ok(Some(LeafReason::Missing));
    }
    let info = read_info(&paths.leaf_cert)?;
    let covered: Vec<String> = info
        .names
        .iter()
        .filter_map(|n| n.strip_prefix("DNS:"))
        .map(str::to_ascii_lowercase)
        .collect();
    if let Some(missing) = names
        .iter()
        .find(|n| !covered.contains(&n.to_ascii_lowercase()))
    {
        return Ok(Some(LeafReason::LacksName(missing.clone())));
    }
    let left = info.not_after - OffsetDateTime::now_utc();
    if left < RENEW_WITHIN {
        return Ok(Some(LeafReason::Expiring(left.whole_days().max(0))));
    }
    Ok(None)
}

/// Creates a new CA key and self-signed certificate.
pub fn create_ca(paths: &CertPaths) -> Result<(), Error> {
    if let Some(dir) = paths.ca_cert.parent() {
        crate::files::create_private_dir(dir).map_err(|source| Error::FileIo {
            path: dir.to_owned(),
            source,
        })?;
    }
    let key = KeyPair::generate()?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "trae-proxy");
    // The date tells two CAs apart in a trust store listing.
    dn.push(
        DnType::CommonName,
        format!("trae-proxy local CA {}", now.date()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // No cRLSign: with it, Windows Schannel expects a CRL and fails the revocation check.
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;

    write_atomic(&paths.ca_key, key.serialize_pem().as_bytes(), MODE_SECRET).map_err(|source| {
        Error::FileIo {
            path: paths.ca_key.clone(),
            source,
        }
    })?;
    write_atomic(&paths.ca_cert, cert.pem().as_bytes(), MODE_PUBLIC).map_err(|source| {
        Error::FileIo {
            path: paths.ca_cert.clone(),
            source,
        }
    })
}

/// Issues a new leaf for `names` (the first is the subject) from the CA in `paths` (ours or the
/// original's RSA one) and writes it, replacing any previous leaf.
pub fn issue_leaf(paths: &CertPaths, names: &[String]) -> Result<(), Error> {
    let domain = names.first().map_or("localhost", String::as_str);
    let ca_key_pem = read_text(&paths.ca_key)?;
    let ca_key = signing_key_from_pem(&ca_key_pem).map_err(|why| Error::CertInvalid {
        path: paths.ca_key.clone(),
        why,
    })?;
    let issuer = issuer(&paths.ca_cert, ca_key)?;

    let key = KeyPair::generate()?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, domain);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = now - Duration::hours(1);
    params.not_after = params.not_before + LEAF_VALIDITY;
    let cert = params.signed_by(&key, &issuer)?;

    write_atomic(&paths.leaf_key, key.serialize_pem().as_bytes(), MODE_SECRET).map_err(
        |source| Error::FileIo {
            path: paths.leaf_key.clone(),
            source,
        },
    )?;
    write_atomic(&paths.leaf_cert, cert.pem().as_bytes(), MODE_PUBLIC).map_err(|source| {
        Error::FileIo {
            path: paths.leaf_cert.clone(),
            source,
        }
    })
}

/// The chain to serve (leaf first, then the CA unless the leaf file already carries it) and the
/// leaf's private key, in any PEM form rustls reads (PKCS#8, PKCS#1, SEC1).
pub fn load_identity(
    paths: &CertPaths,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let mut chain = read_certs(&paths.leaf_cert)?;
    if paths.ca_cert.exists() {
        for ca in read_certs(&paths.ca_cert)? {
            if !chain.contains(&ca) {
                chain.push(ca);
            }
        }
    }
    let key =
        PrivateKeyDer::from_pem_slice(read_text(&paths.leaf_key)?.as_bytes()).map_err(|e| {
            Error::CertInvalid {
                path: paths.leaf_key.clone(),
                why: format!("no usable private key in PEM form: {e}"),
            }
        })?;
    Ok((chain, key))
}

/// The CA in `path` as rcgen's issuer: its subject (byte for byte, as the leaves' issuer) and its
/// subject key identifier (as their authority key identifier), or a SHA-256 one if it has none.
fn issuer(path: &Path, key: KeyPair) -> Result<Issuer<'static, KeyPair>, Error> {
    let invalid = |why: String| Error::CertInvalid {
        path: path.to_owned(),
        why: format!("not a usable CA certificate: {why}"),
    };
    let der = first_cert(path)?;
    let ca = crate::pki::x509::parse(&der).map_err(invalid)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = ca.subject.to_distinguished_name().map_err(invalid)?;
    params.key_identifier_method = match ca.subject_key_id {
        Some(id) => KeyIdMethod::PreSpecified(id.to_vec()),
        None => KeyIdMethod::Sha256,
    };
    Ok(Issuer::new(params, key))
}

fn first_cert(path: &Path) -> Result<CertificateDer<'static>, Error> {
    read_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::CertInvalid {
            path: path.to_owned(),
            why: "no certificate".to_owned(),
        })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let text = read_text(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::CertInvalid {
            path: path.to_owned(),
            why: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::CertInvalid {
            path: path.to_owned(),
            why: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
}

fn read_text(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::FileIo {
        path: path.to_owned(),
        source,
    })
}

/// A signing key from PEM. ring reads only PKCS#8, so a PKCS#1 RSA key (what the original's
/// `openssl genrsa` wrote) is wrapped into PKCS#8 first.
fn signing_key_from_pem(pem: &str) -> Result<KeyPair, String> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("no private key in PEM form: {e}"))?;
    let pkcs8 = match key {
        PrivateKeyDer::Pkcs8(k) => k,
        PrivateKeyDer::Pkcs1(k) => {
            PrivatePkcs8KeyDer::from(rsa_pkcs1_to_pkcs8(k.secret_pkcs1_der()))
        }
        PrivateKeyDer::Sec1(_) => {
            return Err(
                "EC keys must be PKCS#8 (convert: openssl pkcs8 -topk8 -nocrypt)".to_owned(),
            );
        }
        _ => return Err("unsupported private key format".to_owned()),
    };
    KeyPair::try_from(&PrivateKeyDer::Pkcs8(pkcs8))
        .map_err(|e| format!("unsupported private key: {e}"))
}

/// PKCS#1 `RSAPrivateKey` -> PKCS#8 `PrivateKeyInfo` (RFC 5208 §5): version 0, the
/// rsaEncryption algorithm identifier, and the PKCS#1 bytes as an OCTET STRING.
fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const VERSION_AND_ALGORITHM: &[u8] = &[
        0x02, 0x01, 0x00, // INTEGER 0
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
        0x00, // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    ];
    let mut octets = vec![0x04];
    der_len(pkcs1.len(), &mut octets);
    octets.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(VERSION_AND_ALGORITHM.len() + octets.len(), &mut out);
    out.extend_from_slice(VERSION_AND_ALGORITHM);
    out.extend_from_slice(&octets);
    out
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// 16 random bytes, positive as a DER INTEGER and never zero (RFC 5280 §4.1.2.2).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    let rng = rustls::crypto::ring::default_provider().secure_random;
    if rng.fill(&mut bytes).is_err() {
        // The OS RNG failing is not recoverable in any useful way; fall back to the clock so the
        // serial is at least unique.
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        let mut v = Vec::new();
        der_len(5, &mut v);
        der_len(0x80, &mut v);
        der_len(0x1234, &mut v);
        assert_eq!(v, [5, 0x81, 0x80, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().to_bytes();
        let b = random_serial().to_bytes();
        assert_ne!(a, b);
        assert_eq!(a[0] & 0x80, 0);
        assert_ne!(a[0], 0);
    }
}
