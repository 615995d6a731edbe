//! TLS to PostgreSQL (rustls, through `tokio-postgres-rustls`). The URL's `sslmode` decides
//! whether: `disable` is clear text; `prefer` (the default) is TLS whenever the server offers
//! it; `require` refuses a server that does not. Whenever TLS is used, the server's
//! certificate is verified, name and chain, against the system's authorities plus
//! `[store] ca_file`: the queue database sees every message and the password, so yizhan never
//! encrypts to a server it has not authenticated (unlike libpq's `require`, which does not
//! verify). A Unix socket is never encrypted (PostgreSQL does not offer TLS on one).

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::SpoolError;

/// What to add to a connection error whose cause is the server's certificate.
const CERTIFICATE_HINT: &str = "(the server's certificate must chain to a system authority or to one in [store] ca_file, and name the host in the URL; sslmode=disable in the URL turns TLS off)";

/// The connector: system authorities plus `extra`.
pub(super) fn connector(
    extra: &[CertificateDer<'static>],
) -> Result<MakeRustlsConnect, SpoolError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots.add_parsable_certificates(extra.iter().cloned());
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(super::db)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A connection error, with what to do about it when the certificate was refused.
pub(super) fn explained(e: SpoolError) -> SpoolError {
    match e {
        SpoolError::Database(text) if text.contains("certificate") => {
            SpoolError::Database(format!("{text} {CERTIFICATE_HINT}"))
        }
        other => other,
    }
}

/// How the connections to `url` are protected, for `check-config` and the start-up summary.
pub fn describe(url: &str, extra_authorities: usize) -> String {
    let authorities = match extra_authorities {
        0 => "system authorities".to_owned(),
        n => format!("system authorities + {n} from ca_file"),
    };
    match url
        .parse::<tokio_postgres::Config>()
        .map(|c| c.get_ssl_mode())
    {
        Ok(tokio_postgres::config::SslMode::Disable) => "tls off (sslmode=disable)".to_owned(),
        Ok(tokio_postgres::config::SslMode::Require) => {
            format!("tls required, verified against {authorities}")
        }
        _ => format!("tls when the server offers it, verified against {authorities}"),
    }
}
