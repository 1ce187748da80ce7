//! The few fields of an X.509 certificate the proxy reads: names, validity, whether it is a CA,
//! its subject key identifier. Enough to show a certificate and to issue leaves from an existing
//! CA (the original's), read straight from the DER.
//!
//! Hand-written because a full X.509 parser (x509-parser and its ASN.1 stack) cost 131 KiB of the
//! aarch64 size budget for these six fields. Nothing here trusts the input: every length is
//! checked against what is left, and anything unexpected is an error, never a panic
//! (property-tested). Signatures are not checked here; rustls and clients do that.

use rcgen::string::{BmpString, UniversalString};
use rcgen::{DistinguishedName, DnType, DnValue};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;
/// `[0] EXPLICIT` version and `[3] EXPLICIT` extensions of the TBSCertificate.
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
/// GeneralName choices in a subjectAltName: `[2] dNSName`, `[7] iPAddress` (primitive).
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;

const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];

pub struct Certificate<'a> {
    pub subject: Name<'a>,
    pub issuer: Name<'a>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// subjectAltName entries as `DNS:name` and `IP:address`.
    pub names: Vec<String>,
    pub is_ca: bool,
    pub subject_key_id: Option<&'a [u8]>,
}

/// A distinguished name: its attributes in order, one per RDN.
pub struct Name<'a> {
    attributes: Vec<Attribute<'a>>,
}

struct Attribute<'a> {
    /// Which RDN (SET) it is in.
    rdn: usize,
    oid: Vec<u64>,
    tag: u8,
    value: &'a [u8],
}

/// Reads a DER certificate.
pub fn parse(der: &[u8]) -> Result<Certificate<'_>, String> {
    let mut outer = Reader::new(der);
    let mut cert = Reader::new(outer.expect(SEQUENCE)?);
    outer.end()?;
    let mut tbs = Reader::new(cert.expect(SEQUENCE)?);
    if tbs.peek() == Some(VERSION) {
        tbs.any()?;
    }
    tbs.expect(0x02)?; // serial number
    tbs.expect(SEQUENCE)?; // signature algorithm
    let issuer = Name::parse(tbs.expect(SEQUENCE)?)?;
    let mut validity = Reader::new(tbs.expect(SEQUENCE)?);
    let not_before = time(&mut validity)?;
    let not_after = time(&mut validity)?;
    let subject = Name::parse(tbs.expect(SEQUENCE)?)?;
    tbs.expect(SEQUENCE)?; // subject public key info
    let mut found = Certificate {
        subject,
        issuer,
        not_before,
        not_after,
        names: Vec::new(),
        is_ca: false,
        subject_key_id: None,
    };
    while let Some(tag) = tbs.peek() {
        let value = tbs.any()?.1;
        if tag == EXTENSIONS {
            let mut list = Reader::new(Reader::new(value).expect(SEQUENCE)?);
            while !list.is_empty() {
                extension(list.expect(SEQUENCE)?, &mut found)?;
            }
        }
    }
    Ok(found)
}

fn extension<'a>(der: &'a [u8], found: &mut Certificate<'a>) -> Result<(), String> {
    let mut ext = Reader::new(der);
    let oid = oid_arcs(ext.expect(OID)?)?;
    if ext.peek() == Some(BOOLEAN) {
        ext.any()?; // critical
    }
    let value = ext.expect(OCTET_STRING)?;
    if oid == SUBJECT_ALT_NAME {
        let mut names = Reader::new(Reader::new(value).expect(SEQUENCE)?);
        while let Some(tag) = names.peek() {
            let name = names.any()?.1;
            match tag {
                DNS_NAME => found
                    .names
                    .push(format!("DNS:{}", String::from_utf8_lossy(name))),
                IP_ADDRESS => found.names.push(match name.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::new(name[0], name[1], name[2], name[3])
                    ),
                    16 => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(name);
                        format!("IP:{}", std::net::Ipv6Addr::from(octets))
                    }
                    _ => "IP:?".to_owned(),
                }),
                _ => found.names.push(format!("[{}]", tag & 0x1f)),
            }
        }
    } else if oid == BASIC_CONSTRAINTS {
        let mut constraints = Reader::new(Reader::new(value).expect(SEQUENCE)?);
        if constraints.peek() == Some(BOOLEAN) {
            found.is_ca = constraints.expect(BOOLEAN)? != [0];
        }
    } else if oid == SUBJECT_KEY_ID {
        found.subject_key_id = Some(Reader::new(value).expect(OCTET_STRING)?);
    }
    Ok(())
}

impl<'a> Name<'a> {
    fn parse(der: &'a [u8]) -> Result<Name<'a>, String> {
        let mut rdns = Reader::new(der);
        let mut attributes = Vec::new();
        let mut index = 0;
        while !rdns.is_empty() {
            let mut rdn = Reader::new(rdns.expect(SET)?);
            while !rdn.is_empty() {
                let mut pair = Reader::new(rdn.expect(SEQUENCE)?);
                let oid = oid_arcs(pair.expect(OID)?)?;
                let (tag, value) = pair.any()?;
                attributes.push(Attribute {
                    rdn: index,
                    oid,
                    tag,
                    value,
                });
            }
            index += 1;
        }
        Ok(Name { attributes })
    }

    /// The name for rcgen, to write it as the issuer of a leaf: the same attributes, string types
    /// and order, so it encodes to the same bytes (clients match issuer to subject bytewise).
    /// rcgen writes one attribute per RDN and each attribute type once, so a name with a
    /// multi-valued RDN or a repeated type would come out different: an error, not a leaf that
    /// silently fails to chain.
    pub fn to_distinguished_name(&self) -> Result<DistinguishedName, String> {
        let mut dn = DistinguishedName::new();
        for (i, a) in self.attributes.iter().enumerate() {
            let earlier = &self.attributes[..i];
            if earlier.iter().any(|e| e.rdn == a.rdn || e.oid == a.oid) {
                return Err(format!(
                    "its name ({self}) has a multi-valued RDN or a repeated attribute, which \
                     cannot be written back exactly"
                ));
            }
            let text = || {
                std::str::from_utf8(a.value)
                    .map(str::to_owned)
                    .map_err(|_| "a name attribute is not valid text".to_owned())
            };
            let value = match a.tag {
                UTF8_STRING => DnValue::Utf8String(text()?),
                PRINTABLE_STRING => {
                    DnValue::PrintableString(text()?.try_into().map_err(|e| format!("{e}"))?)
                }
                IA5_STRING => DnValue::Ia5String(text()?.try_into().map_err(|e| format!("{e}"))?),
                T61_STRING => {
                    DnValue::TeletexString(text()?.try_into().map_err(|e| format!("{e}"))?)
                }
                BMP_STRING => DnValue::BmpString(
                    BmpString::from_utf16be(a.value.to_vec()).map_err(|e| format!("{e}"))?,
                ),
                UNIVERSAL_STRING => DnValue::UniversalString(
                    UniversalString::from_utf32be(a.value.to_vec()).map_err(|e| format!("{e}"))?,
                ),
                other => return Err(format!("unsupported string type 0x{other:02x} in a name")),
            };
            dn.push(DnType::from_oid(&a.oid), value);
        }
        Ok(dn)
    }
}

/// `CN=Trae-Proxy CA, O=...`, the way certificate tools print names.
impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, a) in self.attributes.iter().enumerate() {
            let key = match a.oid.as_slice() {
                [2, 5, 4, 3] => "CN".to_owned(),
                [2, 5, 4, 6] => "C".to_owned(),
                [2, 5, 4, 7] => "L".to_owned(),
                [2, 5, 4, 8] => "ST".to_owned(),
                [2, 5, 4, 10] => "O".to_owned(),
                [2, 5, 4, 11] => "OU".to_owned(),
                arcs => arcs
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("."),
            };
            let value = match a.tag {
                BMP_STRING => String::from_utf16_lossy(
                    &a.value
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect::<Vec<_>>(),
                ),
                _ => String::from_utf8_lossy(a.value).into_owned(),
            };
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{key}={value}")?;
        }
        Ok(())
    }
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn time(reader: &mut Reader<'_>) -> Result<OffsetDateTime, String> {
    let (tag, value) = reader.any()?;
    let (year, rest) = match tag {
        UTC_TIME => {
            let yy = digits(value.get(..2))?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, value.get(2..))
        }
        GENERALIZED_TIME => (digits(value.get(..4))?, value.get(4..)),
        _ => return Err("a validity time is neither UTCTime nor GeneralizedTime".to_owned()),
    };
    let rest = rest.ok_or("a validity time is cut short")?;
    if rest.len() != 11 || rest[10] != b'Z' {
        return Err("a validity time is not in UTC (…Z)".to_owned());
    }
    let field = |i: usize| digits(rest.get(i..i + 2));
    let bad = |_| "a validity time is not a valid date".to_owned();
    let month = Month::try_from(u8::try_from(field(0)?).map_err(|_| "bad month")?).map_err(bad)?;
    let date = Date::from_calendar_date(
        i32::try_from(year).map_err(|_| "bad year")?,
        month,
        u8::try_from(field(2)?).map_err(|_| "bad day")?,
    )
    .map_err(bad)?;
    let clock = Time::from_hms(
        u8::try_from(field(4)?).map_err(|_| "bad hour")?,
        u8::try_from(field(6)?).map_err(|_| "bad minute")?,
        u8::try_from(field(8)?).map_err(|_| "bad second")?,
    )
    .map_err(bad)?;
    Ok(PrimitiveDateTime::new(date, clock).assume_utc())
}

fn digits(text: Option<&[u8]>) -> Result<u32, String> {
    let text = text.ok_or("a validity time is cut short")?;
    text.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit()
            .then(|| n * 10 + u32::from(c - b'0'))
            .ok_or_else(|| "a validity time has a non-digit".to_owned())
    })
}

/// An OBJECT IDENTIFIER's arcs: the first byte holds two, the rest are base-128.
fn oid_arcs(der: &[u8]) -> Result<Vec<u64>, String> {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in der.iter().enumerate() {
        if value > u64::MAX >> 7 {
            return Err("an object identifier arc is too large".to_owned());
        }
        value = value << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == der.len() {
            return Err("an object identifier is cut short".to_owned());
        }
    }
    if arcs.is_empty() {
        return Err("an empty object identifier".to_owned());
    }
    Ok(arcs)
}

/// DER tag-length-value items, one after the other.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(der: &'a [u8]) -> Self {
        Reader { rest: der }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn end(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("bytes after the certificate".to_owned())
        }
    }

    fn expect(&mut self, tag: u8) -> Result<&'a [u8], String> {
        match self.any()? {
            (t, value) if t == tag => Ok(value),
            (t, _) => Err(format!("expected DER tag 0x{tag:02x}, found 0x{t:02x}")),
        }
    }

    /// The next item's tag and value. Only one-byte tags occur in what we read.
    fn any(&mut self) -> Result<(u8, &'a [u8]), String> {
        let cut = || "the certificate is cut short".to_owned();
        let (&tag, rest) = self.rest.split_first().ok_or_else(cut)?;
        if tag & 0x1f == 0x1f {
            return Err("a multi-byte DER tag".to_owned());
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(cut)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 {
                return Err("an unsupported DER length".to_owned());
            }
            let (bytes, after) = rest.split_at_checked(count).ok_or_else(cut)?;
            rest = after;
            bytes.iter().fold(0usize, |n, &b| n << 8 | usize::from(b))
        };
        let (value, after) = rest.split_at_checked(len).ok_or_else(cut)?;
        self.rest = after;
        Ok((tag, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{CertificateParams, IsCa, KeyPair, SanType};

    fn generated(ca: bool) -> (Vec<u8>, CertificateParams) {
        let mut params =
            CertificateParams::new(vec!["api.openai.com".to_owned(), "x.test".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("::1".parse().unwrap()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Trae-Proxy CA");
        dn.push(
            DnType::OrganizationName,
            DnValue::PrintableString("Home Lab".try_into().unwrap()),
        );
        params.distinguished_name = dn;
        if ca {
            params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.clone().self_signed(&key).unwrap();
        (cert.der().to_vec(), params)
    }

    #[test]
    fn reads_names_validity_and_ca_flag_of_a_certificate() {
        let (der, params) = generated(true);
        let cert = parse(&der).unwrap();
        assert_eq!(cert.subject.to_string(), "CN=Trae-Proxy CA, O=Home Lab");
        assert_eq!(cert.issuer.to_string(), cert.subject.to_string());
        assert_eq!(cert.names, ["DNS:api.openai.com", "DNS:x.test", "IP:::1"]);
        assert_eq!(cert.not_before, params.not_before);
        assert_eq!(cert.not_after, params.not_after);
        assert!(cert.is_ca);
        assert!(cert.subject_key_id.is_some());
        assert!(!parse(&generated(false).0).unwrap().is_ca);
    }

    #[test]
    fn a_name_goes_back_to_the_same_bytes_through_rcgen() {
        // Issue a leaf from the parsed name and key id; its issuer must be the CA's subject
        // byte for byte, and its authority key id the CA's subject key id.
        let (der, _) = generated(true);
        let ca = parse(&der).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = ca.subject.to_distinguished_name().unwrap();
        params.key_identifier_method =
            rcgen::KeyIdMethod::PreSpecified(ca.subject_key_id.unwrap().to_vec());
        let issuer = rcgen::Issuer::new(params, KeyPair::generate().unwrap());
        let mut leaf = CertificateParams::new(vec!["api.openai.com".to_owned()]).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        let leaf = leaf
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let raw_subject = |der: &[u8]| {
            let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
            c.subject().as_raw().to_vec()
        };
        let (_, parsed_leaf) = x509_parser::parse_x509_certificate(leaf.der()).unwrap();
        assert_eq!(parsed_leaf.issuer().as_raw(), raw_subject(&der).as_slice());
        let authority_key_id =
            parsed_leaf
                .iter_extensions()
                .find_map(|e| match e.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                        a.key_identifier.as_ref().map(|k| k.0.to_vec())
                    }
                    _ => None,
                });
        assert_eq!(authority_key_id.as_deref(), ca.subject_key_id);
    }

    #[test]
    fn reads_the_original_python_ca_as_a_full_parser_does() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pem = include_bytes!("../../tests/fixtures/original-ca/ca.crt");
        let der = CertificateDer::from_pem_slice(pem).unwrap();
        let ours = parse(&der).unwrap();
        let (_, theirs) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(ours.subject.to_string(), theirs.subject().to_string());
        assert_eq!(ours.issuer.to_string(), theirs.issuer().to_string());
        assert_eq!(ours.not_before, theirs.validity().not_before.to_datetime());
        assert_eq!(ours.not_after, theirs.validity().not_after.to_datetime());
        assert_eq!(ours.is_ca, theirs.is_ca());
        // Its name re-encodes to the same bytes, so leaves we issue chain to it.
        let mut params = CertificateParams::default();
        params.distinguished_name = ours.subject.to_distinguished_name().unwrap();
        let issuer = rcgen::Issuer::new(params, KeyPair::generate().unwrap());
        let leaf = CertificateParams::new(vec!["api.openai.com".to_owned()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(leaf.der()).unwrap();
        assert_eq!(leaf.issuer().as_raw(), theirs.subject().as_raw());
    }

    #[test]
    fn names_that_cannot_be_written_back_exactly_are_errors() {
        let cn = |v: &'static [u8]| Attribute {
            rdn: 0,
            oid: vec![2, 5, 4, 3],
            tag: UTF8_STRING,
            value: v,
        };
        let o = Attribute {
            rdn: 1,
            oid: vec![2, 5, 4, 10],
            tag: PRINTABLE_STRING,
            value: b"Lab",
        };
        let fine = Name {
            attributes: vec![cn(b"CA"), o],
        };
        assert!(fine.to_distinguished_name().is_ok());
        let repeated = Name {
            attributes: vec![cn(b"A"), Attribute { rdn: 1, ..cn(b"B") }],
        };
        assert!(repeated.to_distinguished_name().is_err());
        let multi_valued = Name {
            attributes: vec![
                cn(b"A"),
                Attribute {
                    rdn: 0,
                    oid: vec![2, 5, 4, 10],
                    tag: UTF8_STRING,
                    value: b"Lab",
                },
            ],
        };
        assert!(multi_valued.to_distinguished_name().is_err());
    }

    #[test]
    fn utc_and_generalized_times() {
        let utc = [
            UTC_TIME, 13, b'4', b'9', b'1', b'2', b'3', b'1', b'2', b'3', b'5', b'9', b'5', b'9',
            b'Z',
        ];
        assert_eq!(
            time(&mut Reader::new(&utc)).unwrap().to_string(),
            "2049-12-31 23:59:59.0 +00:00:00"
        );
        let generalized = *b"\x18\x0f20500101000000Z";
        assert_eq!(time(&mut Reader::new(&generalized)).unwrap().year(), 2050);
        let local = *b"\x18\x0f20500101000000+";
        assert!(time(&mut Reader::new(&local)).is_err());
        let feb30 = *b"\x17\x0d500230000000Z";
        assert!(time(&mut Reader::new(&feb30)).is_err());
    }

    #[test]
    fn object_identifiers() {
        assert_eq!(oid_arcs(&[0x55, 0x1d, 0x11]).unwrap(), [2, 5, 29, 17]);
        assert_eq!(
            oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]).unwrap(),
            [1, 2, 840, 113549]
        );
        assert!(oid_arcs(&[0x2a, 0x86]).is_err());
        assert!(oid_arcs(&[]).is_err());
    }

    #[test]
    fn truncated_and_padded_certificates_are_errors() {
        let (der, _) = generated(false);
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert!(parse(&der[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = der.clone();
        padded.push(0);
        assert!(parse(&padded).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_an_error_or_a_certificate(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn mutated_certificates_are_an_error_or_a_certificate(at in 0usize..4096, byte in any::<u8>()) {
            let (mut der, _) = generated(true);
            let i = at % der.len();
            der[i] = byte;
            let _ = parse(&der);
        }
    }
}
