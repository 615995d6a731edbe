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

/// Whether connections made with `config` may end up in clear text without an error:
/// `sslmode=prefer` (the default) over TCP, to a server that offers no TLS.
pub(super) fn may_fall_back_to_clear_text(config: &tokio_postgres::Config) -> bool {
    config.get_ssl_mode() == tokio_postgres::config::SslMode::Prefer
        && config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)))
}

/// Says so, once at start, when the connection `client` is on is in clear text: someone on
/// the path may read every message (and a password sent in clear), or may have stripped the
/// server's offer of TLS.
pub(super) async fn warn_if_clear_text(client: &tokio_postgres::Client) {
    let encrypted = client
        .query_opt(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|row| row.get::<_, bool>(0));
    if encrypted == Some(false) {
        tracing::warn!(
            "the connections to the queue database are in clear text (the server offered no TLS): mail and credentials cross the network readable; sslmode=require in [store] url refuses clear text, sslmode=disable says it is meant"
        );
    }
}
