//! Mozilla's root certificates, as ureq wants them: certificates. The binary carries them once,
//! as webpki-roots' trust anchors (subject, key, name constraints: what verification uses, at
//! about half the size of whole certificates). Where a backend's `ca_file` has to be added to
//! them, each anchor is wrapped in a minimal certificate carrying exactly those fields; webpki
//! reads the anchor back out of it unchanged (tested below for every root). The wrapper's
//! signature is never checked: a trust anchor is trusted by definition.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, TrustAnchor};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Mozilla's roots plus `extra` (a backend's `ca_file`). Without extras, ureq's own copy of the
/// same roots is used.
pub fn tls_config(extra: &[CertificateDer<'static>]) -> TlsConfig {
    if extra.is_empty() {
        return TlsConfig::builder().root_certs(RootCerts::WebPki).build();
    }
    static PUBLIC: OnceLock<Arc<Vec<Certificate<'static>>>> = OnceLock::new();
    let public = PUBLIC.get_or_init(|| {
        Arc::new(
            webpki_roots::TLS_SERVER_ROOTS
                .iter()
                .map(|anchor| Certificate::from_der(&wrap(anchor)).to_owned())
                .collect(),
        )
    });
    let mut all = public.as_ref().clone();
    all.extend(
        extra
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned()),
    );
    TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(all)))
        .build()
}

/// A minimal X.509 v3 certificate (RFC 5280 §4.1) whose subject, key and name constraints are
/// the anchor's: issuer = subject, validity 2000-9999, a placeholder signature.
fn wrap(anchor: &TrustAnchor<'_>) -> Vec<u8> {
    // ecdsa-with-SHA256; only its shape matters.
    const ALGORITHM: &[u8] = &[
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    let mut tbs = Vec::new();
    tbs.extend_from_slice(&[0xa0, 0x03, 0x02, 0x01, 0x02]); // [0] version v3
    tbs.extend_from_slice(&[0x02, 0x01, 0x01]); // serial 1
    tbs.extend_from_slice(ALGORITHM);
    tlv(0x30, anchor.subject.as_ref(), &mut tbs); // issuer
    let mut validity = Vec::new();
    tlv(0x17, b"000101000000Z", &mut validity);
    tlv(0x18, b"99991231235959Z", &mut validity);
    tlv(0x30, &validity, &mut tbs);
    tlv(0x30, anchor.subject.as_ref(), &mut tbs);
    tlv(0x30, anchor.subject_public_key_info.as_ref(), &mut tbs);
    if let Some(nc) = &anchor.name_constraints {
        let mut value = Vec::new();
        tlv(0x30, nc.as_ref(), &mut value); // NameConstraints
        let mut extension = Vec::new();
        extension.extend_from_slice(&[0x06, 0x03, 0x55, 0x1d, 0x1e]); // id-ce-nameConstraints
        tlv(0x04, &value, &mut extension);
        let mut extensions = Vec::new();
        let mut one = Vec::new();
        tlv(0x30, &extension, &mut one);
        tlv(0x30, &one, &mut extensions);
        tlv(0xa3, &extensions, &mut tbs);
    }
    let mut cert = Vec::new();
    tlv(0x30, &tbs, &mut cert);
    cert.extend_from_slice(ALGORITHM);
    cert.extend_from_slice(&[0x03, 0x02, 0x00, 0x00]); // signature: BIT STRING, one zero byte
    let mut out = Vec::with_capacity(cert.len() + 4);
    tlv(0x30, &cert, &mut out);
    out
}

/// Appends a DER tag-length-value.
fn tlv(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_root_survives_the_round_trip_through_a_wrapper_certificate() {
        let mut constrained = 0;
        for anchor in webpki_roots::TLS_SERVER_ROOTS {
            let der = CertificateDer::from(wrap(anchor));
            let back = webpki::anchor_from_trusted_cert(&der).expect("webpki reads the wrapper");
            assert_eq!(back.subject.as_ref(), anchor.subject.as_ref());
            assert_eq!(
                back.subject_public_key_info.as_ref(),
                anchor.subject_public_key_info.as_ref()
            );
            assert_eq!(
                back.name_constraints.as_ref().map(|n| n.as_ref().to_vec()),
                anchor
                    .name_constraints
                    .as_ref()
                    .map(|n| n.as_ref().to_vec())
            );
            constrained += usize::from(anchor.name_constraints.is_some());
        }
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        assert!(constrained > 0, "name-constrained roots are covered too");
    }
}
