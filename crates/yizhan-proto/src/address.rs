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

use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

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

// ---------------------------------------------------------------------------------------------
// Limits (RFC 5321 4.5.3.1)

/// Maximum octets in a local part (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Maximum octets in a domain (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Maximum octets in one domain label (RFC 1035 2.3.4).
pub const MAX_LABEL: usize = 63;
/// Maximum octets in a reverse- or forward-path, brackets included (RFC 5321 4.5.3.1.3).
pub const MAX_PATH: usize = 256;

// ---------------------------------------------------------------------------------------------
// Character classes

/// `atext` of RFC 5322 3.2.3, plus any non-ASCII character that is neither a control nor
/// white space (RFC 6531 3.3: `atext =/ UTF8-non-ascii`).
fn is_atext(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
    } else {
        !c.is_control() && !c.is_whitespace()
    }
}

/// `qtextSMTP` of RFC 5321 4.1.2 (`%d32-33 / %d35-91 / %d93-126`), plus non-ASCII characters
/// that are not controls (RFC 6531 3.3).
fn is_qtext(c: char) -> bool {
    if c.is_ascii() {
        matches!(c, ' ' | '!' | '#'..='[' | ']'..='~')
    } else {
        !c.is_control()
    }
}

/// A non-ASCII character allowed in a U-label (RFC 6531 3.3, `sub-domain =/ U-label`).
///
/// This is an approximation of IDNA2008 (RFC 5892) without its tables: letters, digits and
/// marks are accepted; controls, white space, punctuation and symbol blocks, the ideographic and
/// full-width full stops (which IDNA maps to `.`), private-use and special code points are not.
fn is_u_label_char(c: char) -> bool {
    if c.is_alphanumeric() {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(
        u32::from(c),
        0x80..=0xBF             // Latin-1 punctuation and symbols
        | 0x2000..=0x200B       // General Punctuation (ZWNJ/ZWJ 200C-200D allowed) ...
        | 0x200E..=0x206F
        | 0x2190..=0x2BFF       // arrows, mathematical operators, box drawing, dingbats...
        | 0x2E00..=0x2E7F       // Supplemental Punctuation
        | 0x3000..=0x303F       // CJK symbols and punctuation (incl. U+3002 ideographic stop)
        | 0xE000..=0xF8FF       // private use
        | 0xFE10..=0xFE1F       // vertical forms
        | 0xFE30..=0xFE6F       // CJK compatibility and small form variants
        | 0xFEFF                // BOM / ZWNBSP
        | 0xFF00..=0xFF0F       // full-width punctuation (incl. U+FF0E full stop)
        | 0xFF1A..=0xFF20
        | 0xFF3B..=0xFF40
        | 0xFF5B..=0xFF65       // (incl. U+FF61 half-width ideographic stop)
        | 0xFFF0..=0xFFFF       // specials
        | 0x1F000..=0x1FAFF     // emoji and pictographs
        | 0xF0000..=0x10FFFF // supplementary private use
    )
}

/// True when `s` is a `Dot-string` (RFC 5321 4.1.2): one or more atoms joined by single dots.
fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

// ---------------------------------------------------------------------------------------------
// Domain

impl Domain {
    /// Parses a domain (RFC 5321 4.1.2 `Domain`, RFC 6531 3.3 U-labels).
    ///
    /// Each label is `Let-dig [Ldh-str]` (or a U-label of letters, digits, marks and inner
    /// hyphens), 1 to 63 octets; the whole name is at most 255 octets. A trailing dot (a
    /// root-anchored name) is rejected, as RFC 5321 does not allow it.
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Domain("empty"));
        }
        if s.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong("domain"));
        }
        if s.ends_with('.') {
            return Err(AddressError::Domain("trailing dot"));
        }
        for label in s.split('.') {
            check_label(label)?;
        }
        Ok(Domain(s.to_owned()))
    }

    /// The domain as written by the peer (case preserved).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the domain has no U-labels (it can be used without SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }

    /// The characters used for comparison and hashing: each character lower-cased on its own
    /// (ASCII folding for ASCII, Unicode lower-casing for U-labels).
    fn folded(&self) -> impl Iterator<Item = char> + '_ {
        self.0.chars().flat_map(char::to_lowercase)
    }
}

/// Checks one label: `Let-dig [Ldh-str]` or a U-label, 1..=63 octets.
fn check_label(label: &str) -> Result<(), AddressError> {
    if label.is_empty() {
        return Err(AddressError::Domain("empty label"));
    }
    if label.len() > MAX_LABEL {
        return Err(AddressError::TooLong("domain label"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(AddressError::Domain("label starts or ends with a hyphen"));
    }
    let ok = label.chars().all(|c| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric() || c == '-'
        } else {
            is_u_label_char(c)
        }
    });
    if ok {
        Ok(())
    } else {
        Err(AddressError::Domain("invalid character"))
    }
}

impl PartialEq for Domain {
    fn eq(&self, other: &Self) -> bool {
        if self.0.is_ascii() && other.0.is_ascii() {
            self.0.eq_ignore_ascii_case(&other.0)
        } else {
            self.folded().eq(other.folded())
        }
    }
}

impl Hash for Domain {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Consistent with `eq`: char::to_lowercase agrees with ASCII folding on ASCII.
        for c in self.folded() {
            state.write_u32(u32::from(c));
        }
        state.write_u8(0xff);
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Domain {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Address literals

impl AddressLiteral {
    /// Parses a bracketed address literal (RFC 5321 4.1.3): `[192.0.2.1]`, `[IPv6:2001:db8::1]`
    /// (tag case-insensitive) or `[Standardized-tag:dcontent]`.
    pub fn parse(s: &str) -> Result<AddressLiteral, AddressError> {
        if s.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong("address literal"));
        }
        let inner = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or(AddressError::AddressLiteral("missing brackets"))?;
        if inner.is_empty() {
            return Err(AddressError::AddressLiteral("empty"));
        }
        let Some((tag, content)) = inner.split_once(':') else {
            return parse_ipv4(inner).map(AddressLiteral::V4);
        };
        if tag.eq_ignore_ascii_case("IPv6") {
            return content
                .parse::<Ipv6Addr>()
                .map(AddressLiteral::V6)
                .map_err(|_| AddressError::AddressLiteral("invalid IPv6 address"));
        }
        // Standardized-tag = Ldh-str; Ldh-str ends in a Let-dig.
        let tag_ok = tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && tag.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !tag_ok {
            return Err(AddressError::AddressLiteral("invalid tag"));
        }
        // dcontent = %d33-90 / %d94-126
        let content_ok =
            !content.is_empty() && content.bytes().all(|b| matches!(b, 33..=90 | 94..=126));
        if !content_ok {
            return Err(AddressError::AddressLiteral("invalid content"));
        }
        Ok(AddressLiteral::General {
            tag: tag.to_owned(),
            content: content.to_owned(),
        })
    }
}

/// `IPv4-address-literal = Snum 3("."  Snum)`, `Snum = 1*3DIGIT` with value 0..=255.
fn parse_ipv4(s: &str) -> Result<Ipv4Addr, AddressError> {
    let err = AddressError::AddressLiteral("invalid IPv4 address");
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next().ok_or(err.clone())?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err);
        }
        *octet = part.parse().map_err(|_| err.clone())?;
    }
    if parts.next().is_some() {
        return Err(err);
    }
    Ok(Ipv4Addr::from(octets))
}

impl fmt::Display for AddressLiteral {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressLiteral::V4(a) => write!(f, "[{a}]"),
            AddressLiteral::V6(a) => write!(f, "[IPv6:{a}]"),
            AddressLiteral::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

impl FromStr for AddressLiteral {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AddressLiteral::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Host

impl Host {
    /// Parses a domain, or an address literal when `s` starts with `[` (RFC 5321 4.1.2).
    pub fn parse(s: &str) -> Result<Host, AddressError> {
        if s.starts_with('[') {
            AddressLiteral::parse(s).map(Host::Literal)
        } else {
            Domain::parse(s).map(Host::Domain)
        }
    }

    /// The domain, if this is not an address literal.
    pub fn as_domain(&self) -> Option<&Domain> {
        match self {
            Host::Domain(d) => Some(d),
            Host::Literal(_) => None,
        }
    }

    /// True when the host can be used without SMTPUTF8 (literals always can).
    pub fn is_ascii(&self) -> bool {
        match self {
            Host::Domain(d) => d.is_ascii(),
            Host::Literal(_) => true,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => d.fmt(f),
            Host::Literal(l) => l.fmt(f),
        }
    }
}

impl FromStr for Host {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Host::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Local part

impl LocalPart {
    /// Parses a local part in its wire form (RFC 5321 4.1.2 `Dot-string / Quoted-string`,
    /// RFC 6531 3.3), at most 64 octets as written. A quoted-string is stored unquoted.
    pub fn parse(s: &str) -> Result<LocalPart, AddressError> {
        if s.is_empty() {
            return Err(AddressError::LocalPart("empty"));
        }
        if s.len() > MAX_LOCAL_PART {
            return Err(AddressError::TooLong("local part"));
        }
        if let Some(rest) = s.strip_prefix('"') {
            return parse_quoted(rest).map(LocalPart);
        }
        for atom in s.split('.') {
            if atom.is_empty() {
                return Err(AddressError::LocalPart("empty atom"));
            }
            if !atom.chars().all(is_atext) {
                return Err(AddressError::LocalPart("invalid character"));
            }
        }
        Ok(LocalPart(s.to_owned()))
    }

    /// Builds a local part from its unquoted content. Any printable content is accepted (it is
    /// quoted when written if it is not a dot-string); controls (CR, LF, NUL, TAB...) are not,
    /// and the written form must fit in 64 octets.
    pub fn new_unquoted(s: impl Into<String>) -> Result<LocalPart, AddressError> {
        let s = s.into();
        if s.chars().any(char::is_control) {
            return Err(AddressError::LocalPart("control character"));
        }
        let local = LocalPart(s);
        if local.wire_len() > MAX_LOCAL_PART {
            return Err(AddressError::TooLong("local part"));
        }
        Ok(local)
    }

    /// The unquoted content.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `postmaster` in any case (RFC 5321 4.5.1).
    pub fn is_postmaster(&self) -> bool {
        self.0.eq_ignore_ascii_case("postmaster")
    }

    /// True when the local part can be used without SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }

    /// True when [`fmt::Display`] writes the content as a quoted-string.
    pub fn needs_quoting(&self) -> bool {
        !is_dot_string(&self.0)
    }

    /// Octets of the written form.
    fn wire_len(&self) -> usize {
        if self.needs_quoting() {
            2 + self.0.len() + self.0.chars().filter(|c| matches!(c, '"' | '\\')).count()
        } else {
            self.0.len()
        }
    }
}

/// Parses the rest of a quoted-string after its opening quote; returns the unquoted content.
fn parse_quoted(rest: &str) -> Result<String, AddressError> {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.as_str().is_empty() {
                    Ok(out)
                } else {
                    Err(AddressError::LocalPart("text after quoted string"))
                };
            }
            // quoted-pairSMTP = %d92 %d32-126
            '\\' => match chars.next() {
                Some(q @ ' '..='~') => out.push(q),
                Some(_) => return Err(AddressError::LocalPart("invalid quoted pair")),
                None => break,
            },
            c if is_qtext(c) => out.push(c),
            _ => {
                return Err(AddressError::LocalPart(
                    "invalid character in quoted string",
                ));
            }
        }
    }
    Err(AddressError::LocalPart("unterminated quoted string"))
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.needs_quoting() {
            return f.write_str(&self.0);
        }
        f.write_char('"')?;
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
}

impl FromStr for LocalPart {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LocalPart::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Mailbox

impl Mailbox {
    /// A mailbox from its parts.
    pub fn new(local: LocalPart, host: Host) -> Mailbox {
        Mailbox { local, host }
    }

    /// Parses `Local-part "@" ( Domain / address-literal )` without angle brackets
    /// (RFC 5321 4.1.2). The split is at the last `@` outside a quoted string and outside an
    /// address literal.
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let at = last_at(s).ok_or(AddressError::MissingAt)?;
        let local = LocalPart::parse(&s[..at])?;
        let host = Host::parse(&s[at + 1..])?;
        Ok(Mailbox { local, host })
    }

    /// The local part.
    pub fn local_part(&self) -> &LocalPart {
        &self.local
    }

    /// The domain or address literal after the `@`.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The domain, unless the host is an address literal.
    pub fn domain(&self) -> Option<&Domain> {
        self.host.as_domain()
    }

    /// False when the local part or the domain needs SMTPUTF8 (RFC 6531 3.4).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.host.is_ascii()
    }
}

/// The characters of `s` (with their byte index) that stand outside a quoted string (with its
/// `\` escapes) and outside an address literal `[...]`: where `@` and `>` delimit addresses.
pub(crate) fn structural_chars(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut in_quote = false;
    let mut in_bracket = false;
    let mut escaped = false;
    s.char_indices().filter(move |&(_, c)| {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            return false;
        }
        match c {
            '"' if !in_bracket => in_quote = true,
            '[' => in_bracket = true,
            ']' => in_bracket = false,
            _ => return !in_bracket,
        }
        false
    })
}

/// Byte index of the last `@` that is outside a quoted string and outside `[...]`.
fn last_at(s: &str) -> Option<usize> {
    structural_chars(s)
        .filter(|&(_, c)| c == '@')
        .last()
        .map(|(i, _)| i)
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.host)
    }
}

impl FromStr for Mailbox {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mailbox::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

impl Path {
    /// A path without a source route.
    pub fn new(mailbox: Mailbox) -> Path {
        Path {
            route: Vec::new(),
            mailbox,
        }
    }

    /// Parses `"<" [ A-d-l ":" ] Mailbox ">"` (RFC 5321 4.1.2), at most 256 octets
    /// (RFC 5321 4.5.3.1.3). The source route is kept; RFC 5321 4.1.1.3 says to ignore it when
    /// delivering, which is the caller's business.
    pub fn parse(s: &str) -> Result<Path, AddressError> {
        let inner = s
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .ok_or(AddressError::MissingBrackets)?;
        if s.len() > MAX_PATH {
            return Err(AddressError::TooLong("path"));
        }
        if inner.is_empty() {
            return Err(AddressError::Empty);
        }
        let (route, mailbox) = if inner.starts_with('@') {
            let (adl, mailbox) = inner
                .split_once(':')
                .ok_or(AddressError::SourceRoute("missing ':' after the route"))?;
            let route = adl
                .split(',')
                .map(|hop| {
                    let domain = hop
                        .strip_prefix('@')
                        .ok_or(AddressError::SourceRoute("hop must start with '@'"))?;
                    Domain::parse(domain)
                })
                .collect::<Result<Vec<_>, _>>()?;
            (route, mailbox)
        } else {
            (Vec::new(), inner)
        };
        Ok(Path {
            route,
            mailbox: Mailbox::parse(mailbox)?,
        })
    }

    /// False when any part (route or mailbox) needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.mailbox.is_ascii() && self.route.iter().all(Domain::is_ascii)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('<')?;
        for (i, hop) in self.route.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "@{hop}")?;
        }
        if !self.route.is_empty() {
            f.write_char(':')?;
        }
        write!(f, "{}>", self.mailbox)
    }
}

impl FromStr for Path {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::parse(s)
    }
}

impl ReversePath {
    /// Parses `"<>"` or a [`Path`] (RFC 5321 4.1.2 `Reverse-path`).
    pub fn parse(s: &str) -> Result<ReversePath, AddressError> {
        if s == "<>" {
            Ok(ReversePath::Null)
        } else {
            Path::parse(s).map(ReversePath::Path)
        }
    }

    /// The mailbox, unless this is the null path.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Path(p) => Some(&p.mailbox),
        }
    }

    /// False when the path needs SMTPUTF8. The null path is ASCII.
    pub fn is_ascii(&self) -> bool {
        match self {
            ReversePath::Null => true,
            ReversePath::Path(p) => p.is_ascii(),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Path(p) => p.fmt(f),
        }
    }
}

impl FromStr for ReversePath {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReversePath::parse(s)
    }
}

impl ForwardPath {
    /// Parses `"<Postmaster>"` (any case, RFC 5321 4.1.1.3) or a [`Path`].
    pub fn parse(s: &str) -> Result<ForwardPath, AddressError> {
        if s.eq_ignore_ascii_case("<postmaster>") {
            Ok(ForwardPath::Postmaster)
        } else {
            Path::parse(s).map(ForwardPath::Path)
        }
    }

    /// The mailbox, unless this is the bare `<postmaster>`.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Path(p) => Some(&p.mailbox),
        }
    }

    /// False when the path needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        match self {
            ForwardPath::Postmaster => true,
            ForwardPath::Path(p) => p.is_ascii(),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Path(p) => p.fmt(f),
        }
    }
}

impl FromStr for ForwardPath {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ForwardPath::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;

    use super::*;

    fn hash_of<T: Hash>(t: &T) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    fn dom(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    // RFC 5321 4.1.2 (Domain, sub-domain = Let-dig [Ldh-str]), 4.5.3.1.2 (255 octets),
    // RFC 1035 2.3.4 (63-octet labels), RFC 6531 3.3 (U-labels).
    #[test]
    fn domain_valid() {
        let long_label = "a".repeat(63);
        let long_domain = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63),
        ]
        .join(".");
        assert_eq!(long_domain.len(), 255);
        for s in [
            "example.com",
            "Example.COM",
            "localhost",
            "a",
            "1.2.3.4",
            "a-b.c--d.e",
            "xn--bcher-kva.example",
            "0day.example",
            "bücher.example",
            "例え.テスト",
            "пример.рф",
            "मेरा.भारत",
            long_label.as_str(),
            long_domain.as_str(),
        ] {
            let d = Domain::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(d.as_str(), s, "case and text preserved");
            assert_eq!(d.to_string(), s);
            assert_eq!(s.parse::<Domain>(), Ok(d));
        }
    }

    #[test]
    fn domain_invalid() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_domain = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(64),
        ]
        .join(".");
        let cases: &[(&str, AddressError)] = &[
            ("", AddressError::Domain("empty")),
            ("example.com.", AddressError::Domain("trailing dot")),
            (".", AddressError::Domain("trailing dot")),
            (".example.com", AddressError::Domain("empty label")),
            ("a..b", AddressError::Domain("empty label")),
            (
                "-a.com",
                AddressError::Domain("label starts or ends with a hyphen"),
            ),
            (
                "a-.com",
                AddressError::Domain("label starts or ends with a hyphen"),
            ),
            ("a_b.com", AddressError::Domain("invalid character")),
            ("a b.com", AddressError::Domain("invalid character")),
            ("a@b.com", AddressError::Domain("invalid character")),
            ("[1.2.3.4]", AddressError::Domain("invalid character")),
            ("a\u{3002}b", AddressError::Domain("invalid character")),
            ("a\u{FF0E}b", AddressError::Domain("invalid character")),
            ("a\u{00A0}b", AddressError::Domain("invalid character")),
            ("a\u{200B}b", AddressError::Domain("invalid character")),
            ("a\u{0085}b", AddressError::Domain("invalid character")),
            ("\u{1F600}.com", AddressError::Domain("invalid character")),
            ("a«b.com", AddressError::Domain("invalid character")),
            (long_label.as_str(), AddressError::TooLong("domain label")),
            (long_domain.as_str(), AddressError::TooLong("domain")),
        ];
        for (s, err) in cases {
            assert_eq!(Domain::parse(s).as_ref(), Err(err), "{s:?}");
        }
    }

    // RFC 5321 2.4: domain names are case-insensitive; U-labels compare after lower-casing.
    #[test]
    fn domain_equality_and_hash() {
        let equal = [
            ("example.com", "EXAMPLE.com"),
            ("Bücher.Example", "bücher.example"),
            ("BÜCHER.example", "bücher.EXAMPLE"),
            ("ПРИМЕР.РФ", "пример.рф"),
        ];
        for (a, b) in equal {
            assert_eq!(dom(a), dom(b), "{a} == {b}");
            assert_eq!(hash_of(&dom(a)), hash_of(&dom(b)), "hash {a} == {b}");
        }
        for (a, b) in [
            ("example.com", "example.org"),
            ("bücher.de", "bucher.de"),
            ("a.b", "ab"),
        ] {
            assert_ne!(dom(a), dom(b), "{a} != {b}");
        }
        assert!(dom("example.com").is_ascii());
        assert!(!dom("bücher.de").is_ascii());
    }

    // RFC 5321 4.1.3: IPv4, IPv6 and general address literals.
    #[test]
    fn address_literal_valid() {
        let cases: &[(&str, AddressLiteral, &str)] = &[
            (
                "[192.0.2.1]",
                AddressLiteral::V4(Ipv4Addr::new(192, 0, 2, 1)),
                "[192.0.2.1]",
            ),
            (
                "[0.0.0.0]",
                AddressLiteral::V4(Ipv4Addr::UNSPECIFIED),
                "[0.0.0.0]",
            ),
            (
                "[010.0.0.255]",
                AddressLiteral::V4(Ipv4Addr::new(10, 0, 0, 255)),
                "[10.0.0.255]",
            ),
            (
                "[IPv6:2001:db8::1]",
                AddressLiteral::V6("2001:db8::1".parse().unwrap()),
                "[IPv6:2001:db8::1]",
            ),
            (
                "[ipv6:::1]",
                AddressLiteral::V6(Ipv6Addr::LOCALHOST),
                "[IPv6:::1]",
            ),
            (
                "[IPV6:2001:DB8:0:0:0:0:0:1]",
                AddressLiteral::V6("2001:db8::1".parse().unwrap()),
                "[IPv6:2001:db8::1]",
            ),
            (
                "[IPv6:::ffff:192.0.2.1]",
                AddressLiteral::V6("::ffff:192.0.2.1".parse().unwrap()),
                "[IPv6:::ffff:192.0.2.1]",
            ),
            (
                "[x-tag:some@content!]",
                AddressLiteral::General {
                    tag: "x-tag".into(),
                    content: "some@content!".into(),
                },
                "[x-tag:some@content!]",
            ),
            (
                "[Future:a:b^~]",
                AddressLiteral::General {
                    tag: "Future".into(),
                    content: "a:b^~".into(),
                },
                "[Future:a:b^~]",
            ),
        ];
        for (s, lit, shown) in cases {
            assert_eq!(AddressLiteral::parse(s).as_ref(), Ok(lit), "{s}");
            assert_eq!(lit.to_string(), *shown);
            assert_eq!(AddressLiteral::parse(shown).as_ref(), Ok(lit), "{shown}");
        }
    }

    #[test]
    fn address_literal_invalid() {
        let cases: &[(&str, &str)] = &[
            ("192.0.2.1", "missing brackets"),
            ("[192.0.2.1", "missing brackets"),
            ("[]", "empty"),
            ("[1.2.3]", "invalid IPv4 address"),
            ("[1.2.3.4.5]", "invalid IPv4 address"),
            ("[1.2.3.256]", "invalid IPv4 address"),
            ("[1.2.3.0004]", "invalid IPv4 address"),
            ("[1.2..4]", "invalid IPv4 address"),
            ("[1.2.3.-4]", "invalid IPv4 address"),
            ("[example.com]", "invalid IPv4 address"),
            ("[IPv6:1.2.3.4]", "invalid IPv6 address"),
            ("[IPv6:2001:db8::g]", "invalid IPv6 address"),
            ("[IPv6:fe80::1%eth0]", "invalid IPv6 address"),
            ("[IPv6:]", "invalid IPv6 address"),
            ("[:abc]", "invalid tag"),
            ("[x-:abc]", "invalid tag"),
            ("[x_y:abc]", "invalid tag"),
            ("[x:]", "invalid content"),
            ("[x:a b]", "invalid content"),
            ("[x:a\\b]", "invalid content"),
            ("[x:a[b]", "invalid content"),
            ("[x:é]", "invalid content"),
        ];
        for (s, why) in cases {
            assert_eq!(
                AddressLiteral::parse(s),
                Err(AddressError::AddressLiteral(why)),
                "{s}"
            );
        }
    }

    // RFC 5321 4.1.2: Host = Domain / address-literal (also the HELO/EHLO argument).
    #[test]
    fn host_parse() {
        assert_eq!(
            Host::parse("mx.example"),
            Ok(Host::Domain(dom("mx.example")))
        );
        assert_eq!(
            Host::parse("[127.0.0.1]"),
            Ok(Host::Literal(AddressLiteral::V4(Ipv4Addr::LOCALHOST)))
        );
        assert_eq!(Host::parse("[127.0.0.1]").unwrap().as_domain(), None);
        assert_eq!(Host::parse("A.b").unwrap().as_domain(), Some(&dom("a.B")));
        assert_eq!(Host::parse("[IPv6:::1]").unwrap().to_string(), "[IPv6:::1]");
        assert!(Host::parse("[1.2.3.4]").unwrap().is_ascii());
        assert!(!Host::parse("bücher.de").unwrap().is_ascii());
        assert!(Host::parse("").is_err());
    }

    // RFC 5321 4.1.2: Local-part = Dot-string / Quoted-string; RFC 5322 3.2.3 atext;
    // RFC 6531 3.3 UTF-8; RFC 5321 4.5.3.1.1 64 octets.
    #[test]
    fn local_part_valid() {
        let max = "a".repeat(64);
        let cases: &[(&str, &str, &str)] = &[
            // wire form, unquoted content, Display
            ("user", "user", "user"),
            ("First.Last", "First.Last", "First.Last"),
            ("a+tag", "a+tag", "a+tag"),
            (
                "!#$%&'*+-/=?^_`{|}~",
                "!#$%&'*+-/=?^_`{|}~",
                "!#$%&'*+-/=?^_`{|}~",
            ),
            ("用户", "用户", "用户"),
            ("josé.garcía", "josé.garcía", "josé.garcía"),
            ("\"john doe\"", "john doe", "\"john doe\""),
            ("\"user\"", "user", "user"),
            ("\"a\\\"b\"", "a\"b", "\"a\\\"b\""),
            ("\"a\\\\b\"", "a\\b", "\"a\\\\b\""),
            ("\"\\a\\b\"", "ab", "ab"),
            ("\"a..b\"", "a..b", "\"a..b\""),
            ("\".a\"", ".a", "\".a\""),
            ("\"a@b\"", "a@b", "\"a@b\""),
            ("\"\"", "", "\"\""),
            ("\"(comment) <x>\"", "(comment) <x>", "\"(comment) <x>\""),
            ("\"日本 語\"", "日本 語", "\"日本 語\""),
            (max.as_str(), max.as_str(), max.as_str()),
        ];
        for (wire, content, shown) in cases {
            let l = LocalPart::parse(wire).unwrap_or_else(|e| panic!("{wire}: {e}"));
            assert_eq!(l.as_str(), *content, "{wire}");
            assert_eq!(l.to_string(), *shown, "{wire}");
            assert_eq!(LocalPart::parse(shown).as_ref(), Ok(&l), "{shown}");
            assert_eq!(
                LocalPart::new_unquoted(*content).as_ref(),
                Ok(&l),
                "{content}"
            );
        }
    }

    #[test]
    fn local_part_invalid() {
        let long = "a".repeat(65);
        let long_quoted = format!("\"{}\"", "a".repeat(63));
        let cases: &[(&str, AddressError)] = &[
            ("", AddressError::LocalPart("empty")),
            (".a", AddressError::LocalPart("empty atom")),
            ("a.", AddressError::LocalPart("empty atom")),
            ("a..b", AddressError::LocalPart("empty atom")),
            ("a b", AddressError::LocalPart("invalid character")),
            ("a(b)", AddressError::LocalPart("invalid character")),
            ("a\"b", AddressError::LocalPart("invalid character")),
            ("a@b", AddressError::LocalPart("invalid character")),
            ("a\\b", AddressError::LocalPart("invalid character")),
            ("a\u{00A0}b", AddressError::LocalPart("invalid character")),
            (
                "\"abc",
                AddressError::LocalPart("unterminated quoted string"),
            ),
            (
                "\"abc\\\"",
                AddressError::LocalPart("unterminated quoted string"),
            ),
            ("\"", AddressError::LocalPart("unterminated quoted string")),
            (
                "\"a\"b",
                AddressError::LocalPart("text after quoted string"),
            ),
            (
                "\"a\"\"b\"",
                AddressError::LocalPart("text after quoted string"),
            ),
            (
                "\"a\tb\"",
                AddressError::LocalPart("invalid character in quoted string"),
            ),
            ("\"a\\\tb\"", AddressError::LocalPart("invalid quoted pair")),
            ("\"a\\éb\"", AddressError::LocalPart("invalid quoted pair")),
            (long.as_str(), AddressError::TooLong("local part")),
            (long_quoted.as_str(), AddressError::TooLong("local part")),
        ];
        for (s, err) in cases {
            assert_eq!(LocalPart::parse(s).as_ref(), Err(err), "{s:?}");
        }
    }

    #[test]
    fn local_part_new_unquoted() {
        for bad in ["a\rb", "a\nb", "a\0b", "a\tb", "\u{7f}", "\u{85}"] {
            assert_eq!(
                LocalPart::new_unquoted(bad),
                Err(AddressError::LocalPart("control character")),
                "{bad:?}"
            );
        }
        // 62 characters plus one quote to escape: 2 + 62 + 1 = 65 octets written.
        let s = format!("{}\"", "a".repeat(61));
        assert_eq!(
            LocalPart::new_unquoted(s),
            Err(AddressError::TooLong("local part"))
        );
        let l = LocalPart::new_unquoted("a b").unwrap();
        assert!(l.needs_quoting());
        assert!(!LocalPart::new_unquoted("a.b").unwrap().needs_quoting());
    }

    // RFC 5321 4.5.1: postmaster is case-insensitive.
    #[test]
    fn local_part_postmaster() {
        for (s, yes) in [
            ("postmaster", true),
            ("PostMaster", true),
            ("\"POSTMASTER\"", true),
        ] {
            assert_eq!(LocalPart::parse(s).unwrap().is_postmaster(), yes, "{s}");
        }
        for s in ["postmasters", "post.master", "abuse"] {
            assert!(!LocalPart::parse(s).unwrap().is_postmaster(), "{s}");
        }
    }

    // RFC 5321 4.1.2: Mailbox = Local-part "@" ( Domain / address-literal ).
    #[test]
    fn mailbox_valid() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // input, local (unquoted), host, Display
            (
                "user@example.com",
                "user",
                "example.com",
                "user@example.com",
            ),
            (
                "User@Example.COM",
                "User",
                "Example.COM",
                "User@Example.COM",
            ),
            (
                "\"a@b\"@example.com",
                "a@b",
                "example.com",
                "\"a@b\"@example.com",
            ),
            (
                "\"a b\"@[192.0.2.1]",
                "a b",
                "[192.0.2.1]",
                "\"a b\"@[192.0.2.1]",
            ),
            ("u@[IPv6:::1]", "u", "[IPv6:::1]", "u@[IPv6:::1]"),
            ("u@[x:a@b]", "u", "[x:a@b]", "u@[x:a@b]"),
            ("用户@例子.广告", "用户", "例子.广告", "用户@例子.广告"),
            ("\"\\\"@\"@d", "\"@", "d", "\"\\\"@\"@d"),
        ];
        for (s, local, host, shown) in cases {
            let m = Mailbox::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(m.local_part().as_str(), *local, "{s}");
            assert_eq!(m.host().to_string(), *host, "{s}");
            assert_eq!(m.to_string(), *shown, "{s}");
            assert_eq!(shown.parse::<Mailbox>().as_ref(), Ok(&m), "{shown}");
        }
        let m = Mailbox::parse("a@b.c").unwrap();
        assert_eq!(m.domain(), Some(&dom("B.C")));
        assert_eq!(Mailbox::parse("a@[1.2.3.4]").unwrap().domain(), None);
        assert_eq!(
            Mailbox::new(
                LocalPart::new_unquoted("x y").unwrap(),
                Host::Domain(dom("d"))
            )
            .to_string(),
            "\"x y\"@d"
        );
    }

    // RFC 6531 3.4: an address with UTF-8 needs SMTPUTF8.
    #[test]
    fn mailbox_is_ascii() {
        for (s, ascii) in [
            ("a@b.c", true),
            ("\"a b\"@[1.2.3.4]", true),
            ("é@b.c", false),
            ("a@é.c", false),
            ("\"é\"@b.c", false),
        ] {
            assert_eq!(Mailbox::parse(s).unwrap().is_ascii(), ascii, "{s}");
        }
    }

    #[test]
    fn mailbox_invalid() {
        let cases: &[(&str, AddressError)] = &[
            ("", AddressError::Empty),
            ("user", AddressError::MissingAt),
            ("\"a@b\"", AddressError::MissingAt),
            ("@example.com", AddressError::LocalPart("empty")),
            ("user@", AddressError::Domain("empty")),
            ("a@b@c", AddressError::LocalPart("invalid character")),
            ("a@b.", AddressError::Domain("trailing dot")),
            ("a@b..c", AddressError::Domain("empty label")),
            (
                "a@[1.2.3]",
                AddressError::AddressLiteral("invalid IPv4 address"),
            ),
            ("a b@c", AddressError::LocalPart("invalid character")),
        ];
        for (s, err) in cases {
            assert_eq!(Mailbox::parse(s).as_ref(), Err(err), "{s:?}");
        }
    }

    // RFC 5321 4.1.2 Path, RFC 821 3.6 / RFC 5321 4.1.1.3 and C source routes,
    // RFC 5321 4.5.3.1.3 256-octet paths.
    #[test]
    fn path_valid() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("<a@b>", &[], "<a@b>"),
            (
                "<@relay.example:u@d>",
                &["relay.example"],
                "<@relay.example:u@d>",
            ),
            ("<@a,@b:u@d>", &["a", "b"], "<@a,@b:u@d>"),
            ("<@a,@B.c:\"x:y\"@d>", &["a", "b.C"], "<@a,@B.c:\"x:y\"@d>"),
            ("<\"a>b\"@d>", &[], "<\"a>b\"@d>"),
        ];
        for (s, route, shown) in cases {
            let p = Path::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let want: Vec<Domain> = route.iter().map(|d| dom(d)).collect();
            assert_eq!(p.route, want, "{s}");
            assert_eq!(p.to_string(), *shown);
            assert_eq!(shown.parse::<Path>().as_ref(), Ok(&p));
        }
        assert_eq!(
            Path::new(Mailbox::parse("a@b").unwrap()).to_string(),
            "<a@b>"
        );
        // exactly 256 octets is allowed
        let p = format!(
            "<{}@{}.{}.{}.{}>",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(60),
            "e"
        );
        assert_eq!(p.len(), 256);
        assert!(Path::parse(&p).is_ok());
    }

    #[test]
    fn path_invalid() {
        let long = format!(
            "<{}@{}.{}.{}.{}>",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
            "e"
        );
        assert_eq!(long.len(), 257);
        let cases: &[(&str, AddressError)] = &[
            ("a@b", AddressError::MissingBrackets),
            ("<a@b", AddressError::MissingBrackets),
            ("a@b>", AddressError::MissingBrackets),
            ("", AddressError::MissingBrackets),
            ("<", AddressError::MissingBrackets),
            ("<>", AddressError::Empty),
            ("<postmaster>", AddressError::MissingAt),
            ("< a@b>", AddressError::LocalPart("invalid character")),
            ("<@a:>", AddressError::Empty),
            (
                "<@a>",
                AddressError::SourceRoute("missing ':' after the route"),
            ),
            (
                "<@a,b:u@d>",
                AddressError::SourceRoute("hop must start with '@'"),
            ),
            (
                "<@a,:u@d>",
                AddressError::SourceRoute("hop must start with '@'"),
            ),
            ("<@:u@d>", AddressError::Domain("empty")),
            ("<@a.:u@d>", AddressError::Domain("trailing dot")),
            (
                "<@[1.2.3.4]:u@d>",
                AddressError::Domain("invalid character"),
            ),
            (long.as_str(), AddressError::TooLong("path")),
        ];
        for (s, err) in cases {
            assert_eq!(Path::parse(s).as_ref(), Err(err), "{s:?}");
        }
        let mut over = format!("<{}@", "a".repeat(64));
        over.push_str(&"b".repeat(63));
        over.push('>');
        assert_eq!(
            Path::parse(&over),
            Ok(Path::new(Mailbox::parse(&over[1..over.len() - 1]).unwrap()))
        );
        let too_long_local = format!("<{}@b>", "a".repeat(65));
        assert_eq!(
            Path::parse(&too_long_local),
            Err(AddressError::TooLong("local part"))
        );
    }

    // RFC 5321 4.1.2 Reverse-path = Path / "<>"; 4.5.5 null reverse-path.
    #[test]
    fn reverse_path() {
        assert_eq!(ReversePath::parse("<>"), Ok(ReversePath::Null));
        assert_eq!(ReversePath::Null.to_string(), "<>");
        assert_eq!(ReversePath::Null.mailbox(), None);
        let r = ReversePath::parse("<@a:u@d>").unwrap();
        assert_eq!(r.mailbox().map(ToString::to_string).as_deref(), Some("u@d"));
        assert_eq!(r.to_string(), "<@a:u@d>");
        assert_eq!(
            ReversePath::parse("< @d>"),
            Err(AddressError::LocalPart("invalid character"))
        );
        assert_eq!(
            ReversePath::parse("<postmaster>"),
            Err(AddressError::MissingAt)
        );
        assert_eq!(ReversePath::parse(""), Err(AddressError::MissingBrackets));
        assert!(!ReversePath::parse("<é@d>").unwrap().is_ascii());
        assert!(!ReversePath::parse("<@é:a@d>").unwrap().is_ascii());
        assert!(ReversePath::Null.is_ascii());
    }

    // RFC 5321 4.1.1.3: "<Postmaster>" without a domain, case-insensitive.
    #[test]
    fn forward_path() {
        for s in ["<postmaster>", "<Postmaster>", "<POSTMASTER>"] {
            assert_eq!(ForwardPath::parse(s), Ok(ForwardPath::Postmaster), "{s}");
        }
        assert_eq!(ForwardPath::Postmaster.to_string(), "<postmaster>");
        assert_eq!(ForwardPath::Postmaster.mailbox(), None);
        let f = ForwardPath::parse("<Postmaster@Example.com>").unwrap();
        assert!(f.mailbox().unwrap().local_part().is_postmaster());
        assert_eq!(f.to_string(), "<Postmaster@Example.com>");
        assert_eq!(ForwardPath::parse("<>"), Err(AddressError::Empty));
        assert_eq!(
            ForwardPath::parse("postmaster"),
            Err(AddressError::MissingBrackets)
        );
        assert_eq!(
            ForwardPath::parse("<\"postmaster\">"),
            Err(AddressError::MissingAt)
        );
        assert!(ForwardPath::Postmaster.is_ascii());
    }
}
