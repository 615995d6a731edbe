//! DKIM signing (RFC 6376; Ed25519, RFC 8463) of mail our users send, with `mail-auth` behind
//! this module: no other file names it, so its API can change under one file.
//!
//! A message from an authenticated user, a `relay_networks` client or a local user is signed
//! once, before it is queued, with the key of its `From:` domain (when one is configured), so
//! every retry sends the same bytes. Canonicalization is relaxed/relaxed; the signed header
//! fields are [`DEFAULT_SIGNED_HEADERS`] unless the configuration says otherwise, with `From`
//! signed twice so that a second `From:` added later breaks the signature.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_auth::common::crypto::{DkimKey as Key, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

/// The header fields signed when `headers` is not configured (RFC 6376 5.4.1's recommendation
/// and what the big providers sign). `From` twice: over-signed, so none can be added.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Reply-To",
    "In-Reply-To",
    "References",
];

/// A signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `ed25519-sha256` (RFC 8463): short keys, not yet verified everywhere.
    Ed25519Sha256,
    /// `rsa-sha256` (RFC 6376): verified by everyone.
    RsaSha256,
}

impl Algorithm {
    /// Every algorithm, in the order they are documented.
    pub const ALL: [Algorithm; 2] = [Self::Ed25519Sha256, Self::RsaSha256];

    /// The name in the configuration and in the `a=` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519Sha256 => "ed25519-sha256",
            Self::RsaSha256 => "rsa-sha256",
        }
    }

    /// The algorithm called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The `k=` tag of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Self::Ed25519Sha256 => "ed25519",
            Self::RsaSha256 => "rsa",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key cannot be used or a message cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// The key file cannot be read or is not a PEM private key.
    #[error("{}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signing failed (a message without the header fields to sign).
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// One `[[dkim]]` key, loaded.
#[derive(Clone)]
pub struct DkimKey {
    /// The signing domain (`d=`), lower-case.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The PEM file the key was read from.
    pub key_path: PathBuf,
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The header fields signed.
    pub headers: Vec<String>,
    signer: Arc<DkimSigner<Key, Done>>,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("key_path", &self.key_path)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Two keys are the same configuration when they name the same things (the key material is
/// read from `key_path`).
impl PartialEq for DkimKey {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.domain,
            &self.selector,
            &self.key_path,
            self.algorithm,
            &self.headers,
        ) == (
            &other.domain,
            &other.selector,
            &other.key_path,
            other.algorithm,
            &other.headers,
        )
    }
}

impl Eq for DkimKey {}

impl DkimKey {
    /// Reads the private key at `key_path` (PEM: PKCS#8, or PKCS#1 for RSA) for `algorithm`.
    pub fn load(
        domain: &str,
        selector: &str,
        key_path: &Path,
        algorithm: Algorithm,
        headers: Vec<String>,
    ) -> Result<Self, DkimError> {
        let key_error = |reason: String| DkimError::Key {
            path: key_path.to_path_buf(),
            reason,
        };
        let der = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| key_error(format!("cannot read the private key: {e}")))?;
        let key = match (algorithm, &der) {
            (Algorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(pkcs8)) => {
                Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
                    .map(Key::from)
                    .map_err(|e| key_error(format!("not an Ed25519 key: {e}")))?
            }
            (Algorithm::Ed25519Sha256, _) => {
                return Err(key_error(
                    "an Ed25519 key must be PKCS#8 (BEGIN PRIVATE KEY)".into(),
                ));
            }
            (Algorithm::RsaSha256, _) => RsaKey::<Sha256>::from_key_der(der.clone_key())
                .map(Key::from)
                .map_err(|e| key_error(format!("not an RSA key: {e}")))?,
        };
        let signer = DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(headers.iter().cloned())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        Ok(DkimKey {
            domain: domain.to_ascii_lowercase(),
            selector: selector.to_owned(),
            key_path: key_path.to_path_buf(),
            algorithm,
            headers,
            signer: Arc::new(signer),
        })
    }

    /// The `DKIM-Signature:` field for `message` (header and body, CRLF line ends), CRLF
    /// included.
    pub fn sign(&self, message: &[u8]) -> Result<String, DkimError> {
        let signature = self
            .signer
            .sign(message)
            .map_err(|e| DkimError::Sign(e.to_string()))?;
        Ok(signature.to_header())
    }
}

/// What signs outgoing mail: the seam between yizhan and the DKIM library.
pub trait Signer {
    /// The `DKIM-Signature:` field (CRLF included) for `message`, signed with the key of its
    /// `From:` domain; `None` when no key is configured for that domain (or the message has
    /// no `From:` address).
    fn signature(&self, message: &[u8]) -> Result<Option<String>, DkimError>;
}

/// Every configured key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DkimKeys(pub Vec<DkimKey>);

impl DkimKeys {
    /// Whether no key is configured (then nothing is ever signed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key for `domain` (compared without case), if any.
    pub fn for_domain(&self, domain: &str) -> Option<&DkimKey> {
        self.0
            .iter()
            .find(|k| k.domain.eq_ignore_ascii_case(domain))
    }
}

impl Signer for DkimKeys {
    fn signature(&self, message: &[u8]) -> Result<Option<String>, DkimError> {
        if self.is_empty() {
            return Ok(None);
        }
        let Some(domain) = from_domain(message) else {
            return Ok(None);
        };
        match self.for_domain(&domain) {
            Some(key) => key.sign(message).map(Some),
            None => Ok(None),
        }
    }
}

/// The domain of the first `From:` address of `message`.
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_auth::AuthenticatedMessage::parse(message)?;
    let from = parsed.from.first()?;
    let (_, domain) = from.rsplit_once('@')?;
    Some(domain.trim_end_matches('>').to_ascii_lowercase())
}
