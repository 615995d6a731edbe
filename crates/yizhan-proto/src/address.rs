//! Mailboxes and paths (RFC 5321 4.1.2 and 4.1.3, RFC 821 source routes, RFC 6531 UTF-8).
//!
//! Grammar implemented (RFC 5321 4.1.2, extended by RFC 6531 3.3 when UTF-8 is allowed):
//!
//! ```text
//! Reverse-path   = Path / "<>"
//! Forward-path   = Path
//! Path           = "<" [ A-d-l ":" ] Mailbox ">"
//! A-d-l          = At-domain *( "," At-domain )      ; the source route, kept as data
//! At-domain      = "@" Domain
//! Mailbox        = Local-part "@" ( Domain / address-literal )
//! Local-part     = Dot-string / Quoted-string
//! ```
//!
//! Case is preserved everywhere; domains compare case-insensitively (ASCII case folding; U-labels
//! are compared after Unicode lower-casing), local parts compare exactly (RFC 5321 2.4).
//! `<postmaster>` without a domain is only valid as a forward-path (RFC 5321 4.1.1.3).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why an address did not parse. Each variant names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The path is not enclosed in `<` and `>`.
    #[error("path must be enclosed in angle brackets")]
    MissingBrackets,
    /// Nothing where a mailbox was expected.
    #[error("empty address")]
    Empty,
    /// No `@` between local part and domain.
    #[error("missing '@' between local part and domain")]
    MissingAt,
    /// The local part is not a valid dot-string or quoted-string.
    #[error("invalid local part: {0}")]
    LocalPart(&'static str),
    /// The domain is not a valid domain name.
    #[error("invalid domain: {0}")]
    Domain(&'static str),
    /// The address literal (`[...]`) is not valid.
    #[error("invalid address literal: {0}")]
    AddressLiteral(&'static str),
    /// The source route (`@a,@b:`) is not valid.
    #[error("invalid source route: {0}")]
    SourceRoute(&'static str),
    /// Non-ASCII characters where SMTPUTF8 was not negotiated (RFC 6531 3.4).
    #[error("non-ASCII address requires SMTPUTF8")]
    NeedsUtf8,
    /// Local part longer than 64 octets or domain longer than 255 (RFC 5321 4.5.3.1).
    #[error("{0} too long")]
    TooLong(&'static str),
}

/// A domain name as written by the peer (A-labels or, with SMTPUTF8, U-labels).
/// Equality and hashing ignore case.
#[derive(Debug, Clone, Eq)]
pub struct Domain(String);

/// An address literal: `[192.0.2.1]`, `[IPv6:2001:db8::1]` or a general `[tag:content]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddressLiteral {
    /// `[a.b.c.d]`
    V4(Ipv4Addr),
    /// `[IPv6:...]`
    V6(Ipv6Addr),
    /// `[Standardized-tag:dcontent]` (RFC 5321 4.1.3)
    General {
        /// The standardized tag (letters, digits, hyphens).
        tag: String,
        /// The content after the colon.
        content: String,
    },
}

/// What follows the `@` of a mailbox, and the argument of HELO/EHLO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name.
    Domain(Domain),
    /// An address literal.
    Literal(AddressLiteral),
}

/// The local part, stored *unquoted* (the content of a quoted-string with its escapes removed).
/// [`fmt::Display`] writes it back as a dot-string when it is one, else as a quoted-string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalPart(String);

/// `local-part@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local: LocalPart,
    host: Host,
}

/// A path: an optional RFC 821 source route and a mailbox. `<@a,@b:user@d>` has route `[a, b]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    /// The source route (the A-d-l), first hop first. Empty for ordinary paths.
    pub route: Vec<Domain>,
    /// The mailbox.
    pub mailbox: Mailbox,
}

/// The argument of MAIL FROM (and SEND/SOML/SAML FROM).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: notifications and bounces (RFC 5321 4.5.5).
    Null,
    /// An ordinary path.
    Path(Path),
}

/// The argument of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<postmaster>` with no domain (RFC 5321 4.1.1.3); case-insensitive.
    Postmaster,
    /// An ordinary path (which may itself be `postmaster@domain`).
    Path(Path),
}

impl PartialEq for Domain {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_lowercase() == other.0.to_lowercase()
    }
}

impl Hash for Domain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_lowercase().hash(state);
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
