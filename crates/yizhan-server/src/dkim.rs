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

/// Whose `From:` a message may carry and still be signed: a signature is our domain's word
/// that the author is who the `From:` says, so it is given only to senders who own that
/// address (an authenticated user of one hosted domain must not sign as another, a local
/// user must not sign as `ceo@`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignFor {
    /// Any `From:` domain with a key: `relay_networks` clients, root and the server's account
    /// (they may send as anyone anyway).
    AnyDomain,
    /// An authenticated user: `From:` addresses that are theirs (their own, and the aliases
    /// they are a member of, as `sender_must_match` allows), or in a domain they own
    /// (`turn_domains`), lower-case. A colleague's address in the same domain is not theirs.
    User {
        /// Addresses they may write as.
        addresses: Vec<String>,
        /// Whole domains they own.
        domains: Vec<String>,
    },
    /// An untrusted local user: only their own address (the envelope sender they were given).
    Address(String),
}

impl SignFor {
    /// An authenticated user who may write as `addresses` (canonical) and owns `domains`.
    pub fn user(addresses: &[String], domains: &[String]) -> Self {
        let lower = |list: &[String]| list.iter().map(|a| a.to_ascii_lowercase()).collect();
        SignFor::User {
            addresses: lower(addresses),
            domains: lower(domains),
        }
    }

    /// Whether `from` (an address of the `From:` field) may be signed for.
    fn allows(&self, from: &str) -> bool {
        match self {
            SignFor::AnyDomain => true,
            SignFor::User { addresses, domains } => {
                addresses.iter().any(|a| a.eq_ignore_ascii_case(from))
                    || domain_of(from).is_some_and(|d| domains.contains(&d))
            }
            SignFor::Address(address) => from.eq_ignore_ascii_case(address),
        }
    }
}

/// What signs outgoing mail: the seam between yizhan and the DKIM library.
pub trait Signer {
    /// The `DKIM-Signature:` field (CRLF included) for `message`, signed with the key of its
    /// `From:` domain; `None` when no key is configured for that domain, the message has no
    /// `From:` address, or one of its `From:` addresses is not the sender's to sign for
    /// (`sender`).
    fn signature(&self, message: &[u8], sender: &SignFor) -> Result<Option<String>, DkimError>;
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
    fn signature(&self, message: &[u8], sender: &SignFor) -> Result<Option<String>, DkimError> {
        if self.is_empty() {
            return Ok(None);
        }
        let from = from_addresses(message);
        let Some(domain) = from.first().and_then(|a| domain_of(a)) else {
            return Ok(None);
        };
        let Some(key) = self.for_domain(&domain) else {
            return Ok(None);
        };
        if let Some(other) = from.iter().find(|a| !sender.allows(a)) {
            tracing::info!(from = %other, "not DKIM-signed: the From: address is not the sender's own");
            return Ok(None);
        }
        key.sign(message).map(Some)
    }
}

/// Every address of every `From:` field of `message` (normally one).
fn from_addresses(message: &[u8]) -> Vec<String> {
    mail_auth::AuthenticatedMessage::parse(message)
        .map(|parsed| {
            parsed
                .from
                .iter()
                .map(|a| a.trim_matches(['<', '>']).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The domain of `address`, lower-case.
fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    Some(domain.trim_end_matches('>').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authenticated_user_signs_only_as_themselves() {
        let user = SignFor::user(
            &["alice@Example.COM".into(), "team@example.com".into()],
            &["Owned.example".into()],
        );
        assert!(user.allows("alice@example.com"));
        assert!(
            user.allows("team@example.com"),
            "an alias she is a member of"
        );
        assert!(!user.allows("ceo@example.com"), "a colleague");
        assert!(user.allows("x@owned.EXAMPLE"), "a domain she owns");
        assert!(!user.allows("ceo@other.example"));
        assert!(!user.allows("no-domain"));
    }

    #[test]
    fn an_untrusted_local_user_signs_only_as_themselves() {
        let local = SignFor::Address("joe@mx.example".into());
        assert!(local.allows("Joe@mx.example"));
        assert!(!local.allows("ceo@mx.example"));
        assert!(SignFor::AnyDomain.allows("anyone@anywhere.example"));
    }

    #[test]
    fn every_from_address_is_seen() {
        let message =
            b"From: a@one.example, <b@two.example>\r\nFrom: c@three.example\r\n\r\nbody\r\n";
        let from = from_addresses(message);
        assert!(from.contains(&"a@one.example".to_owned()), "{from:?}");
        assert!(from.contains(&"b@two.example".to_owned()), "{from:?}");
        assert_eq!(domain_of("x@Two.Example").as_deref(), Some("two.example"));
    }
}
