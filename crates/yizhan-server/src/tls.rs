//! TLS for the receiving side: STARTTLS (RFC 3207) and implicit TLS (RFC 8314).
//!
//! - Certificate chain and private key come from PEM files, parsed with the `PemObject` trait
//!   of `rustls-pki-types` (re-exported by rustls).
//! - TLS 1.2 and 1.3 only (RFC 8314 4.1 asks for TLS 1.2 or later), with the aws-lc-rs provider.
//! - The current configuration sits behind an [`ArcSwap`]: [`TlsStore::reload`] swaps in a
//!   renewed certificate without a restart, and a failed reload keeps the old one. Sessions in
//!   flight keep the configuration they started with.
//! - [`CertInfo`] describes a certificate's subject and validity, for `check-config` and logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::settings::TlsSettings;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("{path}: cannot read certificates: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file could not be read or holds no PEM private key.
    #[error("{path}: cannot read the private key: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject distinguished name.
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// Seconds left until expiry at `now` (negative once expired).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after - now
    }

    /// A one-line report: subject, expiry date and days left (or how long ago it expired).
    pub fn describe(&self, now: i64) -> String {
        let expiry = jiff::Timestamp::from_second(self.not_after)
            .map_or_else(|_| self.not_after.to_string(), |t| t.to_string());
        let days = self.seconds_left(now).div_euclid(86_400);
        if days < 0 {
            format!("{}: EXPIRED on {expiry} ({} days ago)", self.subject, -days)
        } else {
            format!("{}: expires {expiry} (in {days} days)", self.subject)
        }
    }
}

/// Reads the certificate chain (leaf first) from a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Reads the leaf certificate of a PEM file and reports its subject and validity.
pub fn cert_info(path: &Path) -> Result<CertInfo, TlsError> {
    let certs = read_certs(path)?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs[0].as_ref()).map_err(|e| {
        TlsError::Certificate {
            path: path.to_owned(),
            reason: format!("not an X.509 certificate: {e}"),
        }
    })?;
    let validity = cert.validity();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// Builds a rustls server configuration (TLS 1.2 and 1.3, aws-lc-rs) from the PEM files.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    Ok(Arc::new(config))
}

/// The modification times of the two files, to notice a renewal.
fn stamps(settings: &TlsSettings) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&settings.cert), modified(&settings.key))
}

/// The TLS configuration in use, replaceable while the server runs.
#[derive(Debug)]
pub struct TlsStore {
    /// The files and the check interval; replaced by a reload that names other files.
    settings: std::sync::Mutex<TlsSettings>,
    current: ArcSwap<ServerConfig>,
    stamps: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl TlsStore {
    /// Loads the certificate and key named by `settings`.
    pub fn load(settings: TlsSettings) -> Result<Arc<TlsStore>, TlsError> {
        let stamps = stamps(&settings);
        let config = load_config(&settings.cert, &settings.key)?;
        Ok(Arc::new(TlsStore {
            settings: std::sync::Mutex::new(settings),
            current: ArcSwap::new(config),
            stamps: std::sync::Mutex::new(stamps),
        }))
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files again and, if they are good, uses them for new handshakes. On error the
    /// previous certificate stays in use.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        self.replace(self.settings())
    }

    /// Uses the files `settings` names from now on (a configuration reload), if they load;
    /// on error nothing changes.
    pub fn replace(&self, settings: TlsSettings) -> Result<CertInfo, TlsError> {
        let stamps = stamps(&settings);
        let config = load_config(&settings.cert, &settings.key)?;
        let info = cert_info(&settings.cert)?;
        self.current.store(config);
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        Ok(info)
    }

    /// The files in use and the check interval.
    pub fn settings(&self) -> TlsSettings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads and logs the outcome (for SIGHUP and the file watcher).
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(info) => {
                let now = jiff::Timestamp::now().as_second();
                info!(why, certificate = %info.describe(now), "TLS certificate reloaded");
            }
            Err(error) => warn!(why, %error, "TLS reload failed; keeping the previous certificate"),
        }
    }

    /// Whether either file changed since the last load.
    fn changed(&self) -> bool {
        let now = stamps(&self.settings());
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// Checks the files every `reload_interval` and reloads when they change, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let interval = self
                .settings()
                .reload_interval
                .max(Duration::from_millis(10));
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            if self.changed() {
                self.reload_and_log("certificate files changed");
            }
        }
    }
}

/// A short description of a finished handshake for the `Received:` line and the envelope:
/// `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`.
pub fn describe(connection: &rustls::ServerConnection) -> String {
    let version = version(connection);
    crate::metrics::tls_handshake(version.clone());
    match connection.negotiated_cipher_suite() {
        Some(suite) => format!("{version} with cipher {:?}", suite.suite()),
        None => version,
    }
}

/// The protocol version of an established connection (`TLSv1.3`, `TLSv1.2`).
fn version(connection: &rustls::ServerConnection) -> String {
    match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "TLS".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        _dir: tempfile::TempDir,
        settings: TlsSettings,
    }

    fn write_cert(settings: &TlsSettings, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(&settings.cert, cert.pem()).unwrap();
        std::fs::write(&settings.key, key.serialize_pem()).unwrap();
    }

    fn files(name: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsSettings {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            reload_interval: Duration::from_secs(60),
        };
        write_cert(&settings, name);
        Files {
            _dir: dir,
            settings,
        }
    }

    #[test]
    fn loads_pem_and_reports_expiry() {
        let f = files("mx.test.example");
        let store = TlsStore::load(f.settings.clone()).unwrap();
        let _ = store.acceptor();
        let info = cert_info(&f.settings.cert).unwrap();
        assert!(info.subject.contains("mx.test.example"), "{}", info.subject);
        assert!(info.not_after > info.not_before);
        let text = info.describe(info.not_after - 3 * 86_400);
        assert!(text.contains("in 3 days"), "{text}");
        let text = info.describe(info.not_after + 2 * 86_400);
        assert!(text.contains("EXPIRED"), "{text}");
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_the_old_one_on_error() {
        let f = files("old.test.example");
        let store = TlsStore::load(f.settings.clone()).unwrap();
        write_cert(&f.settings, "new.test.example");
        let info = store.reload().unwrap();
        assert!(info.subject.contains("new.test.example"));
        std::fs::write(&f.settings.key, "not a key").unwrap();
        let before = store.current.load_full();
        assert!(matches!(store.reload(), Err(TlsError::Key { .. })));
        assert!(Arc::ptr_eq(&before, &store.current.load_full()));
    }

    #[test]
    fn errors_name_the_file() {
        let f = files("x.test.example");
        std::fs::write(&f.settings.cert, "garbage").unwrap();
        let e = load_config(&f.settings.cert, &f.settings.key).unwrap_err();
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let missing = Path::new("/nonexistent/cert.pem");
        assert!(matches!(
            load_config(missing, &f.settings.key),
            Err(TlsError::Certificate { .. })
        ));
    }
}
