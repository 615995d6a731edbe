//! SMTP commands: one enum for every verb of RFC 821 and RFC 5321 and the extensions yizhan
//! speaks, with typed MAIL and RCPT parameters.
//!
//! | verb | RFC |
//! | --- | --- |
//! | HELO EHLO MAIL RCPT DATA RSET VRFY EXPN HELP NOOP QUIT | 5321 4.1.1 |
//! | SEND SOML SAML TURN | 821 4.1.1 |
//! | BDAT | 3030 |
//! | ETRN | 1985 |
//! | STARTTLS | 3207 |
//! | AUTH | 4954 |
//!
//! Parameters: SIZE (1870), BODY (6152, 3030), SMTPUTF8 (6531), RET ENVID NOTIFY ORCPT (3461,
//! xtext decoded), AUTH= (4954 5), REQUIRETLS (8689).

use crate::address::{ForwardPath, Host, Mailbox, ReversePath};

/// Which of the four transaction-starting verbs began the transaction (RFC 821 4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailKind {
    /// MAIL: deliver to mailboxes.
    Mail,
    /// SEND: deliver to the recipients' terminals only.
    Send,
    /// SOML: to the terminal if the recipient is active there, else to the mailbox.
    Soml,
    /// SAML: to the terminal (if active) and to the mailbox.
    Saml,
}

/// `BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `7BIT`
    SevenBit,
    /// `8BITMIME`
    EightBitMime,
    /// `BINARYMIME` (only with BDAT)
    BinaryMime,
}

/// `RET=` (RFC 3461 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `FULL`: return the whole message in a failure report.
    Full,
    /// `HDRS`: return the headers only.
    Hdrs,
}

/// `NOTIFY=` (RFC 3461 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notify {
    /// `NEVER`
    Never,
    /// Any non-empty combination of `SUCCESS`, `FAILURE`, `DELAY`.
    On {
        /// `SUCCESS`
        success: bool,
        /// `FAILURE`
        failure: bool,
        /// `DELAY`
        delay: bool,
    },
}

/// `ORCPT=addr-type;xtext` (RFC 3461 4.2), with the xtext decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822` or `utf-8`.
    pub addr_type: String,
    /// The original recipient, xtext-decoded.
    pub addr: String,
}

/// Parameters of MAIL FROM (and SEND/SOML/SAML FROM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954 5): `Some(None)` is `AUTH=<>`, `Some(Some(m))` a mailbox.
    pub auth: Option<Option<Mailbox>>,
    /// `REQUIRETLS` (RFC 8689).
    pub requiretls: bool,
}

/// Parameters of RCPT TO.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RcptParams {
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=` (RFC 3461).
    pub orcpt: Option<Orcpt>,
}

/// One SMTP command, parsed from one line (without its CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain` (RFC 821 form; RFC 5321 also allows an address literal).
    Helo(Host),
    /// `EHLO domain-or-literal`.
    Ehlo(Host),
    /// `MAIL FROM:`, `SEND FROM:`, `SOML FROM:` or `SAML FROM:`.
    Mail {
        /// Which verb.
        kind: MailKind,
        /// The reverse-path.
        from: ReversePath,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:`.
    Rcpt {
        /// The forward-path.
        to: ForwardPath,
        /// The ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// `LAST` was given.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `HELP [string]`.
    Help(Option<String>),
    /// `NOOP [string]`.
    Noop(Option<String>),
    /// `QUIT`.
    Quit,
    /// `TURN` (RFC 821).
    Turn,
    /// `ETRN node` (RFC 1985); the argument is kept as written (`@domain`, `#queue`, `domain`).
    Etrn(String),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954). The initial response is kept as the
    /// base64 text the client sent (`=` means an empty response).
    Auth {
        /// The SASL mechanism name, upper-cased.
        mechanism: String,
        /// The initial response, undecoded.
        initial: Option<String>,
    },
}

/// Why a command line did not parse. [`CommandError::reply`] gives the reply the server sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The verb is not known (500 5.5.1).
    #[error("command not recognized")]
    UnknownCommand,
    /// The line is not valid UTF-8 or contains control characters (500 5.5.2).
    #[error("invalid characters in command line")]
    InvalidCharacters,
    /// Syntax error in the arguments (501 5.5.4); the text says what was expected.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// A path did not parse (501 5.1.3 for RCPT, 501 5.1.7 for MAIL).
    #[error("bad address: {source}")]
    Address {
        /// Whether this was the sender (MAIL) or a recipient (RCPT).
        sender: bool,
        /// The address error.
        source: crate::address::AddressError,
    },
    /// A MAIL/RCPT parameter that yizhan does not know (555 5.5.4).
    #[error("parameter {0} not recognized")]
    UnknownParameter(String),
    /// A known parameter with a malformed value, or given twice (501 5.5.4).
    #[error("bad value for parameter {0}")]
    BadParameter(String),
}
