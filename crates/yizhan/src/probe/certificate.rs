//! What the probe says about the server's certificate: its validity period, whether it names
//! the host, whether it chains to a trusted authority (the system store, or `--ca-file`). The
//! handshake itself accepts any certificate, so the probe can report on a bad one instead of
//! stopping at it; the judgement is made here, with rustls' own WebPKI checks.

use std::path::Path;

use rustls::RootCertStore;
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;

/// A certificate expiring within this many days is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The leaf certificate, described and judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examined {
    /// Its subject (`CN=mx.example`).
    pub subject: String,
    /// Who issued it.
    pub issuer: String,
    /// Its DNS and IP subject alternative names.
    pub names: Vec<String>,
    /// The end of its validity, in seconds since the epoch.
    pub not_after: i64,
    /// The start of its validity.
    pub not_before: i64,
    /// `Ok` when it is valid for the name probed, else why not.
    pub name: Result<(), String>,
    /// `Ok` when it chains to a trusted authority, else why not.
    pub chain: Result<(), String>,
}

/// The authorities a certificate is checked against: the system's store (rustls-native-certs),
/// plus a PEM file of extra ones (a private CA).
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if let Some(path) = ca_file {
        roots.add_parsable_certificates(yizhan::ca_file::load(path)?);
    }
    Ok(roots)
}

/// Examines `chain` (leaf first) as presented for `name`, at `now`. `None` when there is no
/// certificate or the leaf does not parse as X.509.
pub fn examine(
    chain: &[CertificateDer<'_>],
    name: &ServerName<'_>,
    roots: &RootCertStore,
    now: UnixTime,
) -> Option<Examined> {
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let parsed = ParsedCertificate::try_from(leaf);
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let (name_result, chain_result) = match &parsed {
        Ok(parsed) => (
            verify_server_name(parsed, name).map_err(|e| reason(&e)),
            verify_server_cert_signed_by_trust_anchor(parsed, roots, &chain[1..], now, algorithms)
                .map_err(|e| reason(&e)),
        ),
        Err(e) => (Err(reason(e)), Err(reason(e))),
    };
    let validity = cert.validity();
    Some(Examined {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names,
        not_after: validity.not_after.timestamp(),
        not_before: validity.not_before.timestamp(),
        name: name_result,
        chain: chain_result,
    })
}

fn ip_text(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets)
            .ok()
            .map(|o| std::net::Ipv4Addr::from(o).to_string()),
        16 => <[u8; 16]>::try_from(octets)
            .ok()
            .map(|o| std::net::Ipv6Addr::from(o).to_string()),
        _ => None,
    }
}

/// A rustls error as a `{marker}` the report card puts in the catalogue's words
/// (`probe_unknown_issuer`, ...); an error it has no words for, as rustls says it.
fn reason(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let marker = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "unknown_issuer",
            C::Expired | C::ExpiredContext { .. } => "cert_expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::NotValidForName | C::NotValidForNameContext { .. } => "wrong_name",
            C::Revoked => "revoked",
            C::BadSignature => "bad_signature",
            C::BadEncoding => "bad_encoding",
            C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => "ca_as_leaf",
            other => return format!("{other:?}"),
        },
        other => return other.to_string(),
    };
    format!("{{{marker}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, a leaf it signed for `mx.test.example` and 127.0.0.1, and a self-signed leaf.
    fn certificates() -> (
        CertificateDer<'static>,
        CertificateDer<'static>,
        CertificateDer<'static>,
    ) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "yizhan test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["mx.test.example".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let own_key = KeyPair::generate().unwrap();
        let own = CertificateParams::new(vec!["mx.test.example".into()])
            .unwrap()
            .self_signed(&own_key)
            .unwrap();
        (ca.der().clone(), leaf.der().clone(), own.der().clone())
    }

    #[test]
    fn a_certificate_is_judged_on_name_and_chain() {
        let (ca, leaf, own) = certificates();
        let mut roots = RootCertStore::empty();
        roots.add(ca).unwrap();
        let now = UnixTime::now();
        let name = ServerName::try_from("mx.test.example").unwrap();
        let good = examine(std::slice::from_ref(&leaf), &name, &roots, now).unwrap();
        assert_eq!(good.name, Ok(()));
        assert_eq!(good.chain, Ok(()));
        assert_eq!(good.names, ["mx.test.example", "127.0.0.1"]);
        assert!(good.not_after > now.as_secs() as i64);

        let ip = ServerName::try_from("127.0.0.1").unwrap();
        assert_eq!(
            examine(std::slice::from_ref(&leaf), &ip, &roots, now)
                .unwrap()
                .name,
            Ok(())
        );

        let other = ServerName::try_from("other.example").unwrap();
        let wrong = examine(std::slice::from_ref(&leaf), &other, &roots, now).unwrap();
        assert_eq!(wrong.name, Err("{wrong_name}".into()));
        assert_eq!(wrong.chain, Ok(()));

        let untrusted = examine(std::slice::from_ref(&own), &name, &roots, now).unwrap();
        assert_eq!(untrusted.name, Ok(()));
        assert_eq!(untrusted.chain, Err("{unknown_issuer}".into()));

        assert!(examine(&[], &name, &roots, now).is_none());
        assert!(examine(&[CertificateDer::from(vec![1, 2, 3])], &name, &roots, now).is_none());
    }

    #[test]
    fn a_ca_file_that_is_not_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(roots(Some(&empty)).unwrap_err().contains("no CERTIFICATE"));
        assert!(
            roots(Some(&dir.path().join("missing.pem")))
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
