//! The certificates the proxy creates: every field clients check.

use std::time::Duration;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::X509Certificate;

use crate::harness::{Proxy, config_yaml};
use crate::mock::Mock;
use crate::standard_apis;

fn read(path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    parse_x509_pem(&pem).unwrap().1.contents
}

fn days(cert: &X509Certificate<'_>) -> i64 {
    let v = cert.validity();
    (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400
}

#[test]
fn generated_leaf_and_ca_have_the_fields_clients_require() {
    let mock = Mock::start();
    let proxy = Proxy::start(&config_yaml(&mock.url(), &standard_apis(), ""));
    let ca_der = read(&proxy.dir().join("ca/ca.crt"));
    let leaf_der = read(&proxy.dir().join("ca/api.openai.com.crt"));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();

    // CA
    assert!(ca.is_ca());
    let ku = ca.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign());
    assert!(
        !ku.crl_sign(),
        "cRLSign makes Windows Schannel demand a CRL"
    );
    let ca_days = days(&ca);
    assert!((3640..=3660).contains(&ca_days), "CA valid {ca_days} days");

    // Leaf
    assert!(!leaf.is_ca());
    assert!(
        leaf.basic_constraints().unwrap().is_some(),
        "basicConstraints CA:false present"
    );
    assert_eq!(leaf.issuer(), ca.subject());
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(ip) => format!("IP:{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans[0], "DNS:api.openai.com");
    assert!(sans.contains(&"IP:[127, 0, 0, 1]".to_owned()), "{sans:?}");
    assert_eq!(sans.len(), 3, "{sans:?}");
    assert!(
        leaf.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
    let leaf_days = days(&leaf);
    assert!(
        leaf_days <= 397,
        "Apple rejects long-lived leaves: {leaf_days} days"
    );
    assert!(leaf_days >= 390);
    let aki = leaf.extensions().iter().any(|e| {
        matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )
    });
    assert!(aki, "authority key id present");
    assert!(leaf.tbs_certificate.serial.bits() > 64, "random serial");
    leaf.verify_signature(Some(ca.public_key())).unwrap();

    // Serials differ between CA and leaf, and certificates are current.
    assert_ne!(ca.tbs_certificate.serial, leaf.tbs_certificate.serial);
    assert!(leaf.validity().time_to_expiration().unwrap() > Duration::from_secs(390 * 86_400));
}
