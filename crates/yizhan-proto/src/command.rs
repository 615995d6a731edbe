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

use std::fmt::{self, Write as _};

use crate::address::{AddressError, ForwardPath, Host, Mailbox, ReversePath};

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

// ---------------------------------------------------------------------------------------------
// Limits

/// Maximum length of the ENVID value as written (RFC 3461 4.4).
pub const MAX_ENVID: usize = 100;
/// Maximum length of the ORCPT value as written (RFC 3461 4.2).
pub const MAX_ORCPT: usize = 500;
/// Maximum digits in a SIZE value (RFC 1870 5: `1*20DIGIT`).
const MAX_SIZE_DIGITS: usize = 20;
/// Maximum length of a SASL mechanism name (RFC 4422 3.1).
const MAX_MECHANISM: usize = 20;

// ---------------------------------------------------------------------------------------------
// xtext (RFC 3461 4)

/// Decodes `xtext` (RFC 3461 4): `xchar` is `%d33-126` except `+` and `=`, and `+XX` (two
/// upper-case hex digits) stands for the octet XX. Returns `None` for anything else, or when
/// the decoded octets are not UTF-8.
pub fn xtext_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hi = upper_hex(bytes.next()?)?;
                let lo = upper_hex(bytes.next()?)?;
                out.push((hi << 4) | lo);
            }
            b'=' => return None,
            33..=126 => out.push(b),
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// [`xtext_decode`], refusing decoded control characters: ENVID and ORCPT values are copied into
/// DSN header fields (RFC 3464 2.2.1, 2.3.1), where CR, LF or NUL must never appear.
fn xtext_decode_text(s: &str) -> Option<String> {
    xtext_decode(s).filter(|d| !d.chars().any(char::is_control))
}

/// The value of an upper-case hex digit (RFC 3461 4 requires upper case).
fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Encodes `s` as `xtext` (RFC 3461 4): octets outside `%d33-126`, `+` and `=` become `+XX`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if matches!(b, 33..=126) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Parameter keywords and values

impl MailKind {
    /// The verb: `MAIL`, `SEND`, `SOML` or `SAML`.
    pub fn verb(self) -> &'static str {
        match self {
            MailKind::Mail => "MAIL",
            MailKind::Send => "SEND",
            MailKind::Soml => "SOML",
            MailKind::Saml => "SAML",
        }
    }
}

impl Body {
    /// The value as written on the wire, case-insensitively.
    pub fn parse(v: &str) -> Option<Body> {
        [Body::SevenBit, Body::EightBitMime, Body::BinaryMime]
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(v))
    }

    /// The value as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Body::SevenBit => "7BIT",
            Body::EightBitMime => "8BITMIME",
            Body::BinaryMime => "BINARYMIME",
        }
    }
}

impl Ret {
    /// The value as written on the wire, case-insensitively.
    pub fn parse(v: &str) -> Option<Ret> {
        [Ret::Full, Ret::Hdrs]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(v))
    }

    /// The value as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

impl Notify {
    /// `NEVER` or a comma list of distinct `SUCCESS`, `FAILURE`, `DELAY`, case-insensitively.
    pub fn parse(v: &str) -> Option<Notify> {
        parse_notify(v)
    }
}

impl fmt::Display for Notify {
    /// `NEVER` or the comma list in the order SUCCESS, FAILURE, DELAY.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Notify::Never => f.write_str("NEVER"),
            Notify::On {
                success,
                failure,
                delay,
            } => {
                let items = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")];
                let mut first = true;
                for (_, name) in items.iter().filter(|(on, _)| *on) {
                    if !first {
                        f.write_char(',')?;
                    }
                    first = false;
                    f.write_str(name)?;
                }
                Ok(())
            }
        }
    }
}

/// Splits space-separated `esmtp-param`s (RFC 5321 4.1.2) into keyword and optional value.
fn esmtp_params(
    s: Option<&str>,
) -> impl Iterator<Item = Result<(&str, Option<&str>), CommandError>> {
    s.into_iter().flat_map(|s| s.split(' ')).map(|token| {
        let (keyword, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        let ok = keyword.starts_with(|c: char| c.is_ascii_alphanumeric())
            && keyword
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if token.is_empty() {
            Err(CommandError::Syntax("empty ESMTP parameter"))
        } else if !ok {
            Err(CommandError::Syntax("malformed ESMTP parameter"))
        } else {
            Ok((keyword, value))
        }
    })
}

fn bad(keyword: &str) -> CommandError {
    CommandError::BadParameter(keyword.to_owned())
}

/// Stores `value` in an empty slot; a parameter given twice is a [`CommandError::BadParameter`].
fn set_once<T>(slot: &mut Option<T>, value: T, keyword: &str) -> Result<(), CommandError> {
    if slot.is_some() {
        return Err(bad(keyword));
    }
    *slot = Some(value);
    Ok(())
}

/// Sets a value-less flag parameter once.
fn set_flag(flag: &mut bool, value: Option<&str>, keyword: &str) -> Result<(), CommandError> {
    if *flag || value.is_some() {
        return Err(bad(keyword));
    }
    *flag = true;
    Ok(())
}

/// The value of a parameter that requires one.
fn required<'a>(value: Option<&'a str>, keyword: &str) -> Result<&'a str, CommandError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| bad(keyword))
}

impl MailParams {
    /// Parses the space-separated parameters after the reverse-path (RFC 5321 4.1.1.2).
    pub fn parse(s: &str) -> Result<MailParams, CommandError> {
        Self::parse_opt(Some(s))
    }

    fn parse_opt(s: Option<&str>) -> Result<MailParams, CommandError> {
        let mut p = MailParams::default();
        for param in esmtp_params(s) {
            let (keyword, value) = param?;
            let key = keyword.to_ascii_uppercase();
            let key = key.as_str();
            match key {
                // RFC 1870 5: size-value = 1*20DIGIT
                "SIZE" => {
                    let v = required(value, key)?;
                    if v.len() > MAX_SIZE_DIGITS || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad(key));
                    }
                    let n = v.parse().map_err(|_| bad(key))?;
                    set_once(&mut p.size, n, key)?;
                }
                // RFC 6152 2, RFC 3030 3
                "BODY" => {
                    let v = required(value, key)?;
                    let body = Body::parse(v).ok_or_else(|| bad(key))?;
                    set_once(&mut p.body, body, key)?;
                }
                // RFC 6531 3.4
                "SMTPUTF8" => set_flag(&mut p.smtputf8, value, key)?,
                // RFC 3461 4.3
                "RET" => {
                    let v = required(value, key)?;
                    let ret = Ret::parse(v).ok_or_else(|| bad(key))?;
                    set_once(&mut p.ret, ret, key)?;
                }
                // RFC 3461 4.4
                "ENVID" => {
                    let v = required(value, key)?;
                    if v.len() > MAX_ENVID {
                        return Err(bad(key));
                    }
                    let envid = xtext_decode_text(v).ok_or_else(|| bad(key))?;
                    set_once(&mut p.envid, envid, key)?;
                }
                // RFC 4954 5: AUTH=<> or AUTH=xtext(mailbox)
                "AUTH" => {
                    let v = required(value, key)?;
                    let decoded = xtext_decode(v).ok_or_else(|| bad(key))?;
                    let auth = if decoded == "<>" {
                        None
                    } else {
                        Some(Mailbox::parse(&decoded).map_err(|_| bad(key))?)
                    };
                    set_once(&mut p.auth, auth, key)?;
                }
                // RFC 8689 4.1
                "REQUIRETLS" => set_flag(&mut p.requiretls, value, key)?,
                _ => return Err(CommandError::UnknownParameter(keyword.to_owned())),
            }
        }
        Ok(p)
    }
}

impl fmt::Display for MailParams {
    /// Each parameter preceded by a space, in a fixed order; values xtext-encoded as needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(size) = self.size {
            write!(f, " SIZE={size}")?;
        }
        if let Some(body) = self.body {
            write!(f, " BODY={}", body.as_str())?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
        }
        if let Some(ret) = self.ret {
            write!(f, " RET={}", ret.as_str())?;
        }
        if let Some(envid) = &self.envid {
            write!(f, " ENVID={}", xtext_encode(envid))?;
        }
        match &self.auth {
            None => {}
            Some(None) => f.write_str(" AUTH=<>")?,
            Some(Some(m)) => write!(f, " AUTH={}", xtext_encode(&m.to_string()))?,
        }
        if self.requiretls {
            f.write_str(" REQUIRETLS")?;
        }
        Ok(())
    }
}

impl RcptParams {
    /// Parses the space-separated parameters after the forward-path (RFC 5321 4.1.1.3).
    pub fn parse(s: &str) -> Result<RcptParams, CommandError> {
        Self::parse_opt(Some(s))
    }

    fn parse_opt(s: Option<&str>) -> Result<RcptParams, CommandError> {
        let mut p = RcptParams::default();
        for param in esmtp_params(s) {
            let (keyword, value) = param?;
            let key = keyword.to_ascii_uppercase();
            let key = key.as_str();
            match key {
                // RFC 3461 4.1
                "NOTIFY" => {
                    let notify = parse_notify(required(value, key)?).ok_or_else(|| bad(key))?;
                    set_once(&mut p.notify, notify, key)?;
                }
                // RFC 3461 4.2
                "ORCPT" => {
                    let v = required(value, key)?;
                    if v.len() > MAX_ORCPT {
                        return Err(bad(key));
                    }
                    let (addr_type, xtext) = v.split_once(';').ok_or_else(|| bad(key))?;
                    // addr-type = atom (RFC 822), which must also fit in an esmtp-value.
                    let type_ok = !addr_type.is_empty()
                        && addr_type
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/?^_`{|}~".contains(c));
                    if !type_ok {
                        return Err(bad(key));
                    }
                    let addr = xtext_decode_text(xtext).ok_or_else(|| bad(key))?;
                    let orcpt = Orcpt {
                        addr_type: addr_type.to_owned(),
                        addr,
                    };
                    set_once(&mut p.orcpt, orcpt, key)?;
                }
                _ => return Err(CommandError::UnknownParameter(keyword.to_owned())),
            }
        }
        Ok(p)
    }
}

/// `NOTIFY=NEVER` or a comma list of distinct `SUCCESS`, `FAILURE`, `DELAY` (RFC 3461 4.1).
fn parse_notify(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for item in v.split(',') {
        let slot = match item.to_ascii_uppercase().as_str() {
            "SUCCESS" => &mut success,
            "FAILURE" => &mut failure,
            "DELAY" => &mut delay,
            _ => return None, // includes NEVER combined with others, and empty items
        };
        if *slot {
            return None;
        }
        *slot = true;
    }
    Some(Notify::On {
        success,
        failure,
        delay,
    })
}

impl fmt::Display for RcptParams {
    /// Each parameter preceded by a space; the ORCPT address xtext-encoded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(notify) = &self.notify {
            write!(f, " NOTIFY={notify}")?;
        }
        if let Some(orcpt) = &self.orcpt {
            write!(
                f,
                " ORCPT={};{}",
                orcpt.addr_type,
                xtext_encode(&orcpt.addr)
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

impl Command {
    /// Parses one command line, given without its CRLF (RFC 5321 4.1.1).
    ///
    /// Verbs and the `FROM:`/`TO:` keywords are case-insensitive. Trailing spaces and tabs are
    /// ignored. One space after `FROM:`/`TO:` is tolerated (`MAIL FROM: <a@b>`), as most MTAs
    /// do; otherwise the grammar is strict: single spaces between arguments and parameters.
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.iter().any(|&b| b < 0x20 && b != b'\t') {
            return Err(CommandError::InvalidCharacters);
        }
        let line = std::str::from_utf8(line).map_err(|_| CommandError::InvalidCharacters)?;
        let line = line.trim_end_matches([' ', '\t']);
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb, Some(arg)),
            None => (line, None),
        };
        if verb.len() > 8 {
            return Err(CommandError::UnknownCommand);
        }
        match verb.to_ascii_uppercase().as_str() {
            "HELO" => {
                parse_hello(arg, "HELO requires a domain or address literal").map(Command::Helo)
            }
            "EHLO" => {
                parse_hello(arg, "EHLO requires a domain or address literal").map(Command::Ehlo)
            }
            "MAIL" => parse_mail(MailKind::Mail, arg),
            "SEND" => parse_mail(MailKind::Send, arg),
            "SOML" => parse_mail(MailKind::Soml, arg),
            "SAML" => parse_mail(MailKind::Saml, arg),
            "RCPT" => parse_rcpt(arg),
            "DATA" => no_arg(arg, Command::Data),
            "RSET" => no_arg(arg, Command::Rset),
            "QUIT" => no_arg(arg, Command::Quit),
            "TURN" => no_arg(arg, Command::Turn),
            "STARTTLS" => no_arg(arg, Command::StartTls),
            "VRFY" => required_arg(arg, "VRFY requires an argument").map(Command::Vrfy),
            "EXPN" => required_arg(arg, "EXPN requires an argument").map(Command::Expn),
            "HELP" => Ok(Command::Help(arg.map(str::to_owned))),
            "NOOP" => Ok(Command::Noop(arg.map(str::to_owned))),
            "BDAT" => parse_bdat(arg),
            "ETRN" => parse_etrn(arg),
            "AUTH" => parse_auth(arg),
            _ => Err(CommandError::UnknownCommand),
        }
    }

    /// The verb, upper-cased (`"MAIL"`, `"SOML"`, `"BDAT"`...).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Helo(_) => "HELO",
            Command::Ehlo(_) => "EHLO",
            Command::Mail { kind, .. } => kind.verb(),
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::Help(_) => "HELP",
            Command::Noop(_) => "NOOP",
            Command::Quit => "QUIT",
            Command::Turn => "TURN",
            Command::Etrn(_) => "ETRN",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
        }
    }
}

/// HELO/EHLO argument: a domain or an address literal (RFC 5321 4.1.1.1).
fn parse_hello(arg: Option<&str>, msg: &'static str) -> Result<Host, CommandError> {
    let arg = arg.ok_or(CommandError::Syntax(msg))?;
    Host::parse(arg).map_err(|_| CommandError::Syntax(msg))
}

fn no_arg(arg: Option<&str>, cmd: Command) -> Result<Command, CommandError> {
    match arg {
        None => Ok(cmd),
        Some(_) => Err(CommandError::Syntax("this command takes no argument")),
    }
}

fn required_arg(arg: Option<&str>, msg: &'static str) -> Result<String, CommandError> {
    arg.map(str::to_owned).ok_or(CommandError::Syntax(msg))
}

/// Strips an ASCII-case-insensitive prefix.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `<path>[ params]` after `FROM:`/`TO:`. The path ends at the first `>` outside a
/// quoted string and outside an address literal.
fn split_path(rest: &str, sender: bool) -> Result<(&str, Option<&str>), CommandError> {
    let address = |source| CommandError::Address { sender, source };
    if rest.is_empty() {
        return Err(address(AddressError::Empty));
    }
    if !rest.starts_with('<') {
        return Err(address(AddressError::MissingBrackets));
    }
    let end = path_end(rest).ok_or_else(|| address(AddressError::MissingBrackets))?;
    let (path, after) = rest.split_at(end + 1);
    if after.is_empty() {
        return Ok((path, None));
    }
    match after.strip_prefix(' ') {
        Some(params) => Ok((path, Some(params))),
        None => Err(CommandError::Syntax("expected a space after the path")),
    }
}

/// Byte index of the `>` closing the path that `s` starts with.
fn path_end(s: &str) -> Option<usize> {
    crate::address::structural_chars(s)
        .find(|&(_, c)| c == '>')
        .map(|(i, _)| i)
}

/// `MAIL FROM:<reverse-path> [SP Mail-parameters]` (RFC 5321 4.1.1.2, RFC 821 4.1.1 for
/// SEND/SOML/SAML).
fn parse_mail(kind: MailKind, arg: Option<&str>) -> Result<Command, CommandError> {
    const MSG: &str = "expected FROM:<reverse-path>";
    let rest = arg
        .and_then(|a| strip_prefix_ci(a, "FROM:"))
        .ok_or(CommandError::Syntax(MSG))?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (path, params) = split_path(rest, true)?;
    let from = ReversePath::parse(path).map_err(|source| CommandError::Address {
        sender: true,
        source,
    })?;
    let params = MailParams::parse_opt(params)?;
    Ok(Command::Mail { kind, from, params })
}

/// `RCPT TO:<forward-path> [SP Rcpt-parameters]` (RFC 5321 4.1.1.3).
fn parse_rcpt(arg: Option<&str>) -> Result<Command, CommandError> {
    const MSG: &str = "expected TO:<forward-path>";
    let rest = arg
        .and_then(|a| strip_prefix_ci(a, "TO:"))
        .ok_or(CommandError::Syntax(MSG))?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (path, params) = split_path(rest, false)?;
    let to = ForwardPath::parse(path).map_err(|source| CommandError::Address {
        sender: false,
        source,
    })?;
    let params = RcptParams::parse_opt(params)?;
    Ok(Command::Rcpt { to, params })
}

/// `BDAT chunk-size [SP end-marker]` (RFC 3030 2).
fn parse_bdat(arg: Option<&str>) -> Result<Command, CommandError> {
    const MSG: &str = "expected BDAT <size> [LAST]";
    let arg = arg.ok_or(CommandError::Syntax(MSG))?;
    let (size, last) = match arg.split_once(' ') {
        Some((size, marker)) if marker.eq_ignore_ascii_case("LAST") => (size, true),
        Some(_) => return Err(CommandError::Syntax(MSG)),
        None => (arg, false),
    };
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Syntax(MSG));
    }
    let size = size
        .parse()
        .map_err(|_| CommandError::Syntax("BDAT size too large"))?;
    Ok(Command::Bdat { size, last })
}

/// `ETRN node` (RFC 1985 3): one token, kept as written.
fn parse_etrn(arg: Option<&str>) -> Result<Command, CommandError> {
    const MSG: &str = "expected ETRN <node>";
    match arg {
        Some(node) if !node.contains([' ', '\t']) => Ok(Command::Etrn(node.to_owned())),
        _ => Err(CommandError::Syntax(MSG)),
    }
}

/// `AUTH mechanism [initial-response]` (RFC 4954 4). The mechanism is `1*20` of upper-case
/// letters, digits, `-` and `_` (RFC 4422 3.1), accepted in any case and upper-cased.
fn parse_auth(arg: Option<&str>) -> Result<Command, CommandError> {
    const MSG: &str = "expected AUTH <mechanism> [initial-response]";
    let arg = arg.ok_or(CommandError::Syntax(MSG))?;
    let mut parts = arg.split(' ');
    let mechanism = parts.next().unwrap_or_default();
    let initial = parts.next();
    if parts.next().is_some() || initial.is_some_and(|i| i.is_empty() || i.contains('\t')) {
        return Err(CommandError::Syntax(MSG));
    }
    let mech_ok = (1..=MAX_MECHANISM).contains(&mechanism.len())
        && mechanism
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !mech_ok {
        return Err(CommandError::Syntax("invalid SASL mechanism name"));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(str::to_owned),
    })
}

impl fmt::Display for Command {
    /// The canonical wire form, without CRLF; [`Command::parse`] gives back the same command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.verb();
        match self {
            Command::Helo(host) | Command::Ehlo(host) => write!(f, "{verb} {host}"),
            Command::Mail { from, params, .. } => write!(f, "{verb} FROM:{from}{params}"),
            Command::Rcpt { to, params } => write!(f, "{verb} TO:{to}{params}"),
            Command::Bdat { size, last } => {
                write!(f, "{verb} {size}")?;
                if *last {
                    f.write_str(" LAST")?;
                }
                Ok(())
            }
            Command::Vrfy(s) | Command::Expn(s) | Command::Etrn(s) => write!(f, "{verb} {s}"),
            Command::Help(s) | Command::Noop(s) => match s {
                Some(s) => write!(f, "{verb} {s}"),
                None => f.write_str(verb),
            },
            Command::Auth { mechanism, initial } => {
                write!(f, "{verb} {mechanism}")?;
                if let Some(initial) = initial {
                    write!(f, " {initial}")?;
                }
                Ok(())
            }
            Command::Data | Command::Rset | Command::Quit | Command::Turn | Command::StartTls => {
                f.write_str(verb)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::address::{AddressLiteral, Domain, LocalPart, Path};

    fn parse(s: &str) -> Result<Command, CommandError> {
        Command::parse(s.as_bytes())
    }

    fn host(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    fn mailbox(s: &str) -> Mailbox {
        Mailbox::parse(s).unwrap()
    }

    fn mail(from: &str, params: MailParams) -> Command {
        Command::Mail {
            kind: MailKind::Mail,
            from: ReversePath::parse(from).unwrap(),
            params,
        }
    }

    fn rcpt(to: &str, params: RcptParams) -> Command {
        Command::Rcpt {
            to: ForwardPath::parse(to).unwrap(),
            params,
        }
    }

    fn syntax(s: &'static str) -> CommandError {
        CommandError::Syntax(s)
    }

    fn bad(s: &str) -> CommandError {
        CommandError::BadParameter(s.into())
    }

    fn unknown(s: &str) -> CommandError {
        CommandError::UnknownParameter(s.into())
    }

    fn addr(sender: bool, source: AddressError) -> CommandError {
        CommandError::Address { sender, source }
    }

    /// Runs a table; every valid command must also survive a format/parse round trip.
    fn check(cases: &[(&str, Result<Command, CommandError>)]) {
        for (line, want) in cases {
            let got = parse(line);
            assert_eq!(&got, want, "{line:?}");
            if let Ok(cmd) = got {
                assert_eq!(
                    parse(&cmd.to_string()),
                    Ok(cmd.clone()),
                    "round trip of {line:?}"
                );
            }
        }
    }

    // RFC 5321 2.3.8 / 4.1.1: lines are text; no NUL, bare CR or LF, controls; UTF-8 only.
    #[test]
    fn invalid_characters() {
        for line in [
            &b"NOOP\0"[..],
            b"NOOP a\rb",
            b"NOOP a\nb",
            b"NOOP \x1b[0m",
            b"MAIL FROM:<a\x01@b>",
            b"NOOP \xff",
            b"NOOP \xc3",
            b"\x00",
        ] {
            assert_eq!(
                Command::parse(line),
                Err(CommandError::InvalidCharacters),
                "{line:?}"
            );
        }
        // TAB is allowed (it is not a separator though).
        assert_eq!(parse("NOOP a\tb"), Ok(Command::Noop(Some("a\tb".into()))));
    }

    // RFC 5321 4.1.1: verbs are case-insensitive; unknown verbs are 500.
    #[test]
    fn verbs() {
        check(&[
            ("", Err(CommandError::UnknownCommand)),
            ("FOO", Err(CommandError::UnknownCommand)),
            ("MAILX FROM:<>", Err(CommandError::UnknownCommand)),
            ("STARTTLSX", Err(CommandError::UnknownCommand)),
            (" NOOP", Err(CommandError::UnknownCommand)),
            ("NOOP\tx", Err(CommandError::UnknownCommand)),
            ("ÉHLO x", Err(CommandError::UnknownCommand)),
            ("data", Ok(Command::Data)),
            ("DaTa", Ok(Command::Data)),
            ("rset", Ok(Command::Rset)),
            ("Quit", Ok(Command::Quit)),
            ("QUIT  \t ", Ok(Command::Quit)),
            ("turn", Ok(Command::Turn)),
            ("StartTLS", Ok(Command::StartTls)),
        ]);
    }

    // RFC 5321 4.1.1.4 (DATA), 4.1.1.5 (RSET), 4.1.1.10 (QUIT), RFC 821 4.1.1 (TURN),
    // RFC 3207 4 (STARTTLS): no argument.
    #[test]
    fn no_argument_verbs() {
        for verb in ["DATA", "RSET", "QUIT", "TURN", "STARTTLS"] {
            assert_eq!(
                parse(&format!("{verb} x")),
                Err(syntax("this command takes no argument")),
                "{verb}"
            );
        }
    }

    // RFC 5321 4.1.1.1: HELO/EHLO with a domain or an address literal.
    #[test]
    fn helo_ehlo() {
        check(&[
            (
                "HELO mx.example.com",
                Ok(Command::Helo(host("mx.example.com"))),
            ),
            ("helo [192.0.2.1]", Ok(Command::Helo(host("[192.0.2.1]")))),
            (
                "EHLO Client.Example",
                Ok(Command::Ehlo(host("Client.Example"))),
            ),
            (
                "EHLO [IPv6:2001:db8::5]",
                Ok(Command::Ehlo(host("[IPv6:2001:db8::5]"))),
            ),
            ("EHLO [x-foo:bar]", Ok(Command::Ehlo(host("[x-foo:bar]")))),
            (
                "EHLO bücher.example",
                Ok(Command::Ehlo(host("bücher.example"))),
            ),
            ("EHLO localhost ", Ok(Command::Ehlo(host("localhost")))),
            (
                "HELO",
                Err(syntax("HELO requires a domain or address literal")),
            ),
            (
                "HELO ",
                Err(syntax("HELO requires a domain or address literal")),
            ),
            (
                "EHLO",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
            (
                "EHLO a b",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
            (
                "EHLO  a",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
            (
                "EHLO a.",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
            (
                "EHLO a..b",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
            (
                "EHLO my_host",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
            (
                "EHLO [1.2.3.999]",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
            (
                "EHLO 1.2.3.4]",
                Err(syntax("EHLO requires a domain or address literal")),
            ),
        ]);
    }

    // RFC 5321 4.1.1.2 MAIL FROM:<reverse-path>; RFC 821 4.1.1 SEND/SOML/SAML.
    #[test]
    fn mail_from() {
        let none = MailParams::default;
        check(&[
            ("MAIL FROM:<a@b.example>", Ok(mail("<a@b.example>", none()))),
            ("mail from:<a@b>", Ok(mail("<a@b>", none()))),
            ("MAIL From:<>", Ok(mail("<>", none()))),
            ("MAIL FROM: <a@b>", Ok(mail("<a@b>", none()))),
            ("MAIL FROM: <>", Ok(mail("<>", none()))),
            ("MAIL FROM:<@r1,@r2:u@d>", Ok(mail("<@r1,@r2:u@d>", none()))),
            ("MAIL FROM:<\"a b\"@d>", Ok(mail("<\"a b\"@d>", none()))),
            ("MAIL FROM:<\"a>b\"@d>", Ok(mail("<\"a>b\"@d>", none()))),
            ("MAIL FROM:<u@[x:a>b]>", Ok(mail("<u@[x:a>b]>", none()))),
            (
                "MAIL FROM:<用户@例子.广告>",
                Ok(mail("<用户@例子.广告>", none())),
            ),
            (
                "MAIL FROM:<a@[IPv6:::1]>",
                Ok(mail("<a@[IPv6:::1]>", none())),
            ),
            (
                "SEND FROM:<a@b>",
                Ok(Command::Mail {
                    kind: MailKind::Send,
                    from: ReversePath::parse("<a@b>").unwrap(),
                    params: none(),
                }),
            ),
            (
                "soml from:<>",
                Ok(Command::Mail {
                    kind: MailKind::Soml,
                    from: ReversePath::Null,
                    params: none(),
                }),
            ),
            (
                "SAML FROM:<>",
                Ok(Command::Mail {
                    kind: MailKind::Saml,
                    from: ReversePath::Null,
                    params: none(),
                }),
            ),
            ("MAIL", Err(syntax("expected FROM:<reverse-path>"))),
            ("MAIL <a@b>", Err(syntax("expected FROM:<reverse-path>"))),
            (
                "MAIL FROM <a@b>",
                Err(syntax("expected FROM:<reverse-path>")),
            ),
            ("MAIL TO:<a@b>", Err(syntax("expected FROM:<reverse-path>"))),
            (
                "MAIL  FROM:<a@b>",
                Err(syntax("expected FROM:<reverse-path>")),
            ),
            ("SEND", Err(syntax("expected FROM:<reverse-path>"))),
            ("MAIL FROM:", Err(addr(true, AddressError::Empty))),
            (
                "MAIL FROM:  <a@b>",
                Err(addr(true, AddressError::MissingBrackets)),
            ),
            (
                "MAIL FROM:a@b",
                Err(addr(true, AddressError::MissingBrackets)),
            ),
            (
                "MAIL FROM:<a@b",
                Err(addr(true, AddressError::MissingBrackets)),
            ),
            (
                "MAIL FROM:<postmaster>",
                Err(addr(true, AddressError::MissingAt)),
            ),
            (
                "MAIL FROM:<a@b.>",
                Err(addr(true, AddressError::Domain("trailing dot"))),
            ),
            (
                "MAIL FROM:<a..b@c>",
                Err(addr(true, AddressError::LocalPart("empty atom"))),
            ),
            (
                "MAIL FROM:<a@b>x",
                Err(syntax("expected a space after the path")),
            ),
            (
                "MAIL FROM:<a@b><c@d>",
                Err(syntax("expected a space after the path")),
            ),
            (
                "MAIL FROM:<a@b>\tSIZE=1",
                Err(syntax("expected a space after the path")),
            ),
        ]);
    }

    // RFC 5321 4.5.3.1: local part 64, domain 255, path 256 octets.
    #[test]
    fn mail_from_lengths() {
        let local = "a".repeat(65);
        assert_eq!(
            parse(&format!("MAIL FROM:<{local}@b>")),
            Err(addr(true, AddressError::TooLong("local part")))
        );
        let path = format!(
            "<{}@{}.{}.{}.{}>",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
            "e"
        );
        assert_eq!(
            parse(&format!("MAIL FROM:{path}")),
            Err(addr(true, AddressError::TooLong("path")))
        );
        assert_eq!(
            parse(&format!("RCPT TO:{path}")),
            Err(addr(false, AddressError::TooLong("path")))
        );
        let label = format!("a@{}.com", "x".repeat(64));
        assert_eq!(
            parse(&format!("RCPT TO:<{label}>")),
            Err(addr(false, AddressError::TooLong("domain label")))
        );
    }

    // RFC 1870 (SIZE), RFC 6152 / RFC 3030 (BODY), RFC 6531 (SMTPUTF8), RFC 3461 4.3/4.4
    // (RET, ENVID), RFC 4954 5 (AUTH=), RFC 8689 (REQUIRETLS); RFC 5321 4.1.2 esmtp-param.
    #[test]
    fn mail_parameters() {
        let p = |f: fn(&mut MailParams)| {
            let mut p = MailParams::default();
            f(&mut p);
            p
        };
        let m = |params| Ok(mail("<a@b>", params));
        check(&[
            ("MAIL FROM:<a@b> SIZE=0", m(p(|p| p.size = Some(0)))),
            ("MAIL FROM:<a@b> size=1000", m(p(|p| p.size = Some(1000)))),
            ("MAIL FROM:<a@b> SIZE=007", m(p(|p| p.size = Some(7)))),
            (
                "MAIL FROM:<a@b> SIZE=18446744073709551615",
                m(p(|p| p.size = Some(u64::MAX))),
            ),
            (
                "MAIL FROM:<a@b> BODY=7BIT",
                m(p(|p| p.body = Some(Body::SevenBit))),
            ),
            (
                "MAIL FROM:<a@b> body=8bitmime",
                m(p(|p| p.body = Some(Body::EightBitMime))),
            ),
            (
                "MAIL FROM:<a@b> BODY=BinaryMIME",
                m(p(|p| p.body = Some(Body::BinaryMime))),
            ),
            ("MAIL FROM:<a@b> SMTPUTF8", m(p(|p| p.smtputf8 = true))),
            ("MAIL FROM:<a@b> smtputf8", m(p(|p| p.smtputf8 = true))),
            (
                "MAIL FROM:<a@b> RET=FULL",
                m(p(|p| p.ret = Some(Ret::Full))),
            ),
            (
                "MAIL FROM:<a@b> ret=hdrs",
                m(p(|p| p.ret = Some(Ret::Hdrs))),
            ),
            (
                "MAIL FROM:<a@b> ENVID=QQ314159",
                m(p(|p| p.envid = Some("QQ314159".into()))),
            ),
            (
                "MAIL FROM:<a@b> ENVID=a+2Bb+3Dc+20d",
                m(p(|p| p.envid = Some("a+b=c d".into()))),
            ),
            (
                "MAIL FROM:<a@b> ENVID=+C3+A9",
                m(p(|p| p.envid = Some("é".into()))),
            ),
            ("MAIL FROM:<a@b> AUTH=<>", m(p(|p| p.auth = Some(None)))),
            (
                "MAIL FROM:<a@b> AUTH=e+2Bf@d",
                m(p(|p| p.auth = Some(Some(mailbox("e+f@d"))))),
            ),
            (
                "MAIL FROM:<a@b> AUTH=+22x+20y+22@d",
                m(p(|p| p.auth = Some(Some(mailbox("\"x y\"@d"))))),
            ),
            ("MAIL FROM:<a@b> REQUIRETLS", m(p(|p| p.requiretls = true))),
            (
                "MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<> REQUIRETLS",
                m(MailParams {
                    size: Some(10),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    ret: Some(Ret::Hdrs),
                    envid: Some("x".into()),
                    auth: Some(None),
                    requiretls: true,
                }),
            ),
            (
                "MAIL FROM: <a@b> REQUIRETLS SIZE=5",
                m(p(|p| {
                    p.requiretls = true;
                    p.size = Some(5);
                })),
            ),
            // SIZE: 1*20DIGIT fitting in u64
            ("MAIL FROM:<a@b> SIZE", Err(bad("SIZE"))),
            ("MAIL FROM:<a@b> SIZE=", Err(bad("SIZE"))),
            ("MAIL FROM:<a@b> SIZE=-1", Err(bad("SIZE"))),
            ("MAIL FROM:<a@b> SIZE=+1", Err(bad("SIZE"))),
            ("MAIL FROM:<a@b> SIZE=1k", Err(bad("SIZE"))),
            (
                "MAIL FROM:<a@b> size=18446744073709551616",
                Err(bad("SIZE")),
            ),
            (
                "MAIL FROM:<a@b> SIZE=000000000000000000001",
                Err(bad("SIZE")),
            ),
            ("MAIL FROM:<a@b> SIZE=1 SIZE=1", Err(bad("SIZE"))),
            // BODY
            ("MAIL FROM:<a@b> BODY=8BIT", Err(bad("BODY"))),
            ("MAIL FROM:<a@b> BODY", Err(bad("BODY"))),
            ("MAIL FROM:<a@b> BODY=7BIT BODY=7BIT", Err(bad("BODY"))),
            // SMTPUTF8 and REQUIRETLS take no value
            ("MAIL FROM:<a@b> SMTPUTF8=yes", Err(bad("SMTPUTF8"))),
            ("MAIL FROM:<a@b> SMTPUTF8=", Err(bad("SMTPUTF8"))),
            ("MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8", Err(bad("SMTPUTF8"))),
            ("MAIL FROM:<a@b> requiretls=1", Err(bad("REQUIRETLS"))),
            (
                "MAIL FROM:<a@b> REQUIRETLS REQUIRETLS",
                Err(bad("REQUIRETLS")),
            ),
            // RET
            ("MAIL FROM:<a@b> RET=ALL", Err(bad("RET"))),
            ("MAIL FROM:<a@b> RET", Err(bad("RET"))),
            ("MAIL FROM:<a@b> RET=FULL RET=HDRS", Err(bad("RET"))),
            // ENVID: xtext, upper-case hex, at most 100 characters
            ("MAIL FROM:<a@b> ENVID=a+2b", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=a+2", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=a+", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=a=b", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=é", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=+FF", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=a+0D+0Ab", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=+00", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID", Err(bad("ENVID"))),
            ("MAIL FROM:<a@b> ENVID=x envid=y", Err(bad("ENVID"))),
            // AUTH=
            ("MAIL FROM:<a@b> AUTH=nobody", Err(bad("AUTH"))),
            ("MAIL FROM:<a@b> AUTH=<a@b>", Err(bad("AUTH"))),
            ("MAIL FROM:<a@b> AUTH=a+2g@b", Err(bad("AUTH"))),
            ("MAIL FROM:<a@b> AUTH", Err(bad("AUTH"))),
            ("MAIL FROM:<a@b> AUTH=<> AUTH=<>", Err(bad("AUTH"))),
            // unknown keywords, RCPT keywords, malformed parameters
            ("MAIL FROM:<a@b> X-FOO=bar", Err(unknown("X-FOO"))),
            ("MAIL FROM:<a@b> Frob", Err(unknown("Frob"))),
            ("MAIL FROM:<a@b> NOTIFY=NEVER", Err(unknown("NOTIFY"))),
            ("MAIL FROM:<a@b> orcpt=rfc822;a@b", Err(unknown("orcpt"))),
            (
                "MAIL FROM:<a@b>  SIZE=1",
                Err(syntax("empty ESMTP parameter")),
            ),
            (
                "MAIL FROM:<a@b> SIZE=1  BODY=7BIT",
                Err(syntax("empty ESMTP parameter")),
            ),
            (
                "MAIL FROM:<a@b> =1",
                Err(syntax("malformed ESMTP parameter")),
            ),
            (
                "MAIL FROM:<a@b> -X=1",
                Err(syntax("malformed ESMTP parameter")),
            ),
            (
                "MAIL FROM:<a@b> SI_ZE=1",
                Err(syntax("malformed ESMTP parameter")),
            ),
        ]);
        let envid = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(100));
        assert_eq!(parse(&envid), m(p(|p| p.envid = Some("x".repeat(100)))));
        let envid = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(101));
        assert_eq!(parse(&envid), Err(bad("ENVID")));
    }

    // RFC 5321 4.1.1.3 RCPT TO:<forward-path>, <Postmaster>, source routes.
    #[test]
    fn rcpt_to() {
        let none = RcptParams::default;
        check(&[
            ("RCPT TO:<a@b>", Ok(rcpt("<a@b>", none()))),
            ("rcpt to:<A@B>", Ok(rcpt("<A@B>", none()))),
            ("RCPT TO: <a@b>", Ok(rcpt("<a@b>", none()))),
            ("RCPT TO:<postmaster>", Ok(rcpt("<postmaster>", none()))),
            ("RCPT TO:<POSTMASTER>", Ok(rcpt("<postmaster>", none()))),
            (
                "RCPT TO:<Postmaster@Example.com>",
                Ok(rcpt("<Postmaster@Example.com>", none())),
            ),
            (
                "RCPT TO:<@hosta.int,@jkl.org:userc@d.bar.org>",
                Ok(rcpt("<@hosta.int,@jkl.org:userc@d.bar.org>", none())),
            ),
            (
                "RCPT TO:<\"john\\\\doe\"@x>",
                Ok(rcpt("<\"john\\\\doe\"@x>", none())),
            ),
            (
                "RCPT TO:<u@[192.0.2.1]>",
                Ok(rcpt("<u@[192.0.2.1]>", none())),
            ),
            (
                "RCPT TO:<用户@例子.广告>",
                Ok(rcpt("<用户@例子.广告>", none())),
            ),
            ("RCPT", Err(syntax("expected TO:<forward-path>"))),
            ("RCPT FROM:<a@b>", Err(syntax("expected TO:<forward-path>"))),
            ("RCPT TO <a@b>", Err(syntax("expected TO:<forward-path>"))),
            ("RCPT TO:", Err(addr(false, AddressError::Empty))),
            ("RCPT TO:<>", Err(addr(false, AddressError::Empty))),
            (
                "RCPT TO:a@b",
                Err(addr(false, AddressError::MissingBrackets)),
            ),
            (
                "RCPT TO:<a@b",
                Err(addr(false, AddressError::MissingBrackets)),
            ),
            ("RCPT TO:<a>", Err(addr(false, AddressError::MissingAt))),
            (
                "RCPT TO:<a@>",
                Err(addr(false, AddressError::Domain("empty"))),
            ),
            (
                "RCPT TO:<a@b.>",
                Err(addr(false, AddressError::Domain("trailing dot"))),
            ),
            (
                "RCPT TO:<a@b..c>",
                Err(addr(false, AddressError::Domain("empty label"))),
            ),
            (
                "RCPT TO:<\"a@b>",
                Err(addr(false, AddressError::MissingBrackets)),
            ),
            (
                "RCPT TO:<@a:b:u@d>",
                Err(addr(false, AddressError::LocalPart("invalid character"))),
            ),
            (
                "RCPT TO:<@a,b:u@d>",
                Err(addr(
                    false,
                    AddressError::SourceRoute("hop must start with '@'"),
                )),
            ),
            (
                "RCPT TO:<a@b>c",
                Err(syntax("expected a space after the path")),
            ),
        ]);
    }

    // RFC 3461 4.1 (NOTIFY) and 4.2 (ORCPT).
    #[test]
    fn rcpt_parameters() {
        let on = |success, failure, delay| Notify::On {
            success,
            failure,
            delay,
        };
        let n = |notify| {
            Ok(rcpt(
                "<a@b>",
                RcptParams {
                    notify: Some(notify),
                    orcpt: None,
                },
            ))
        };
        let o = |addr_type: &str, addr: &str| {
            Ok(rcpt(
                "<a@b>",
                RcptParams {
                    notify: None,
                    orcpt: Some(Orcpt {
                        addr_type: addr_type.into(),
                        addr: addr.into(),
                    }),
                },
            ))
        };
        check(&[
            ("RCPT TO:<a@b> NOTIFY=NEVER", n(Notify::Never)),
            ("RCPT TO:<a@b> notify=never", n(Notify::Never)),
            ("RCPT TO:<a@b> NOTIFY=SUCCESS", n(on(true, false, false))),
            ("RCPT TO:<a@b> NOTIFY=FAILURE", n(on(false, true, false))),
            ("RCPT TO:<a@b> NOTIFY=DELAY", n(on(false, false, true))),
            (
                "RCPT TO:<a@b> NOTIFY=DELAY,SUCCESS",
                n(on(true, false, true)),
            ),
            (
                "RCPT TO:<a@b> NOTIFY=success,failure,delay",
                n(on(true, true, true)),
            ),
            ("RCPT TO:<a@b> ORCPT=rfc822;a@b", o("rfc822", "a@b")),
            (
                "RCPT TO:<a@b> ORCPT=RFC822;Bob+2Bx@Example.COM",
                o("RFC822", "Bob+x@Example.COM"),
            ),
            ("RCPT TO:<a@b> ORCPT=utf-8;+E7+94+A8@x", o("utf-8", "用@x")),
            ("RCPT TO:<a@b> ORCPT=rfc822;", o("rfc822", "")),
            (
                "RCPT TO:<postmaster> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x@y",
                Ok(Command::Rcpt {
                    to: ForwardPath::Postmaster,
                    params: RcptParams {
                        notify: Some(on(false, true, true)),
                        orcpt: Some(Orcpt {
                            addr_type: "rfc822".into(),
                            addr: "x@y".into(),
                        }),
                    },
                }),
            ),
            ("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", Err(bad("NOTIFY"))),
            ("RCPT TO:<a@b> NOTIFY=SUCCESS,NEVER", Err(bad("NOTIFY"))),
            ("RCPT TO:<a@b> NOTIFY=SUCCESS,SUCCESS", Err(bad("NOTIFY"))),
            ("RCPT TO:<a@b> NOTIFY=SUCCESS,", Err(bad("NOTIFY"))),
            ("RCPT TO:<a@b> NOTIFY=ALWAYS", Err(bad("NOTIFY"))),
            ("RCPT TO:<a@b> NOTIFY", Err(bad("NOTIFY"))),
            ("RCPT TO:<a@b> NOTIFY=", Err(bad("NOTIFY"))),
            (
                "RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER",
                Err(bad("NOTIFY")),
            ),
            ("RCPT TO:<a@b> ORCPT=a@b", Err(bad("ORCPT"))),
            ("RCPT TO:<a@b> ORCPT=;a@b", Err(bad("ORCPT"))),
            ("RCPT TO:<a@b> ORCPT=rfc 822;a@b", Err(bad("ORCPT"))),
            ("RCPT TO:<a@b> ORCPT=rfc822;a+2x", Err(bad("ORCPT"))),
            ("RCPT TO:<a@b> ORCPT", Err(bad("ORCPT"))),
            ("RCPT TO:<a@b> ORCPT=rfc822;a+0Ab", Err(bad("ORCPT"))),
            (
                "RCPT TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;b",
                Err(bad("ORCPT")),
            ),
            ("RCPT TO:<a@b> SIZE=10", Err(unknown("SIZE"))),
            ("RCPT TO:<a@b> BODY=8BITMIME", Err(unknown("BODY"))),
            ("RCPT TO:<a@b> smtputf8", Err(unknown("smtputf8"))),
            ("RCPT TO:<a@b> X-Y", Err(unknown("X-Y"))),
            (
                "RCPT TO:<a@b>  NOTIFY=NEVER",
                Err(syntax("empty ESMTP parameter")),
            ),
        ]);
        let long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "x".repeat(493));
        assert!(parse(&long).is_ok());
        let long = format!("RCPT TO:<a@b> ORCPT=rfc822;{}", "x".repeat(494));
        assert_eq!(parse(&long), Err(bad("ORCPT")));
    }

    // RFC 5321 4.1.1.6 (VRFY), 4.1.1.7 (EXPN): a required string argument;
    // 4.1.1.8 (HELP), 4.1.1.9 (NOOP): optional argument.
    #[test]
    fn string_arguments() {
        check(&[
            ("VRFY postmaster", Ok(Command::Vrfy("postmaster".into()))),
            ("vrfy Smith", Ok(Command::Vrfy("Smith".into()))),
            ("VRFY <a@b>", Ok(Command::Vrfy("<a@b>".into()))),
            (
                "VRFY \"John Doe\" x",
                Ok(Command::Vrfy("\"John Doe\" x".into())),
            ),
            (
                "EXPN Example-People",
                Ok(Command::Expn("Example-People".into())),
            ),
            ("EXPN  lead", Ok(Command::Expn(" lead".into()))),
            ("VRFY", Err(syntax("VRFY requires an argument"))),
            ("VRFY ", Err(syntax("VRFY requires an argument"))),
            ("EXPN", Err(syntax("EXPN requires an argument"))),
            ("HELP", Ok(Command::Help(None))),
            ("HELP  ", Ok(Command::Help(None))),
            ("help MAIL", Ok(Command::Help(Some("MAIL".into())))),
            ("HELP a b c", Ok(Command::Help(Some("a b c".into())))),
            ("NOOP", Ok(Command::Noop(None))),
            (
                "noop hello world",
                Ok(Command::Noop(Some("hello world".into()))),
            ),
            ("NOOP 你好", Ok(Command::Noop(Some("你好".into())))),
        ]);
    }

    // RFC 3030 2: BDAT chunk-size [SP end-marker].
    #[test]
    fn bdat() {
        const MSG: &str = "expected BDAT <size> [LAST]";
        check(&[
            (
                "BDAT 0",
                Ok(Command::Bdat {
                    size: 0,
                    last: false,
                }),
            ),
            (
                "BDAT 1000",
                Ok(Command::Bdat {
                    size: 1000,
                    last: false,
                }),
            ),
            (
                "bdat 86 LAST",
                Ok(Command::Bdat {
                    size: 86,
                    last: true,
                }),
            ),
            (
                "BDAT 0 last",
                Ok(Command::Bdat {
                    size: 0,
                    last: true,
                }),
            ),
            (
                "BDAT 007 Last",
                Ok(Command::Bdat {
                    size: 7,
                    last: true,
                }),
            ),
            (
                "BDAT 18446744073709551615",
                Ok(Command::Bdat {
                    size: u64::MAX,
                    last: false,
                }),
            ),
            ("BDAT", Err(syntax(MSG))),
            ("BDAT LAST", Err(syntax(MSG))),
            ("BDAT -1", Err(syntax(MSG))),
            ("BDAT +1", Err(syntax(MSG))),
            ("BDAT 1.5", Err(syntax(MSG))),
            ("BDAT 1 FIRST", Err(syntax(MSG))),
            ("BDAT 1 LAST x", Err(syntax(MSG))),
            ("BDAT 1  LAST", Err(syntax(MSG))),
            ("BDAT  1", Err(syntax(MSG))),
            (
                "BDAT 18446744073709551616",
                Err(syntax("BDAT size too large")),
            ),
        ]);
    }

    // RFC 1985 3: ETRN node (kept as written: domain, @domain, #queue).
    #[test]
    fn etrn() {
        const MSG: &str = "expected ETRN <node>";
        check(&[
            ("ETRN example.com", Ok(Command::Etrn("example.com".into()))),
            (
                "etrn @example.com",
                Ok(Command::Etrn("@example.com".into())),
            ),
            ("ETRN #queue1", Ok(Command::Etrn("#queue1".into()))),
            ("ETRN", Err(syntax(MSG))),
            ("ETRN a b", Err(syntax(MSG))),
            ("ETRN a\tb", Err(syntax(MSG))),
        ]);
    }

    // RFC 4954 4: AUTH mechanism [initial-response]; RFC 4422 3.1 mechanism names.
    #[test]
    fn auth() {
        const MSG: &str = "expected AUTH <mechanism> [initial-response]";
        const MECH: &str = "invalid SASL mechanism name";
        let a = |m: &str, i: Option<&str>| {
            Ok(Command::Auth {
                mechanism: m.into(),
                initial: i.map(Into::into),
            })
        };
        check(&[
            ("AUTH PLAIN", a("PLAIN", None)),
            ("auth plain", a("PLAIN", None)),
            (
                "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
                a("PLAIN", Some("AGFsaWNlAHNlY3JldA==")),
            ),
            ("AUTH PLAIN =", a("PLAIN", Some("="))),
            ("AUTH cram-md5", a("CRAM-MD5", None)),
            (
                "AUTH SCRAM-SHA-256-PLUS biwsbj11c2Vy",
                a("SCRAM-SHA-256-PLUS", Some("biwsbj11c2Vy")),
            ),
            ("AUTH x_oauth2 abc", a("X_OAUTH2", Some("abc"))),
            ("AUTH", Err(syntax(MSG))),
            ("AUTH PLAIN a b", Err(syntax(MSG))),
            ("AUTH PLAIN  a", Err(syntax(MSG))),
            ("AUTH PLAIN a\tb", Err(syntax(MSG))),
            ("AUTH  PLAIN", Err(syntax(MECH))),
            ("AUTH PL/AIN", Err(syntax(MECH))),
            ("AUTH ABCDEFGHIJKLMNOPQRSTU", Err(syntax(MECH))),
            ("AUTH PLAIN\tx", Err(syntax(MECH))),
        ]);
    }

    #[test]
    fn verb_names() {
        let cases = [
            ("HELO a", "HELO"),
            ("EHLO a", "EHLO"),
            ("MAIL FROM:<>", "MAIL"),
            ("SEND FROM:<>", "SEND"),
            ("SOML FROM:<>", "SOML"),
            ("SAML FROM:<>", "SAML"),
            ("RCPT TO:<postmaster>", "RCPT"),
            ("DATA", "DATA"),
            ("BDAT 1", "BDAT"),
            ("RSET", "RSET"),
            ("VRFY x", "VRFY"),
            ("EXPN x", "EXPN"),
            ("HELP", "HELP"),
            ("NOOP", "NOOP"),
            ("QUIT", "QUIT"),
            ("TURN", "TURN"),
            ("ETRN x", "ETRN"),
            ("STARTTLS", "STARTTLS"),
            ("AUTH PLAIN", "AUTH"),
        ];
        for (line, verb) in cases {
            let cmd = parse(&line.to_lowercase()).unwrap();
            assert_eq!(cmd.verb(), verb);
            assert_eq!(cmd.to_string(), line, "canonical form");
        }
    }

    // Canonical forms written by Display (the client relies on these).
    #[test]
    fn display() {
        let cases = [
            (
                "mail from: <a@b> smtputf8 size=10 body=8bitmime",
                "MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8",
            ),
            (
                "MAIL FROM:<\"a\"@b> ENVID=+41 AUTH=+3C+3E",
                "MAIL FROM:<a@b> ENVID=A AUTH=<>",
            ),
            (
                "MAIL FROM:<> AUTH=\"a+20b\"@c",
                "MAIL FROM:<> AUTH=\"a+20b\"@c",
            ),
            ("MAIL FROM:<> ENVID=a+2Bb", "MAIL FROM:<> ENVID=a+2Bb"),
            (
                "rcpt to:<Postmaster> notify=delay,failure",
                "RCPT TO:<postmaster> NOTIFY=FAILURE,DELAY",
            ),
            (
                "RCPT TO:<a@b> ORCPT=rfc822;+61+20b",
                "RCPT TO:<a@b> ORCPT=rfc822;a+20b",
            ),
            ("EHLO [IPV6:0:0:0:0:0:0:0:1]", "EHLO [IPv6:::1]"),
            ("bdat 5 last", "BDAT 5 LAST"),
            ("NOOP  ", "NOOP"),
        ];
        for (line, shown) in cases {
            assert_eq!(parse(line).unwrap().to_string(), shown, "{line}");
        }
    }

    // RFC 3461 4: xtext.
    #[test]
    fn xtext() {
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some("")),
            ("abc", Some("abc")),
            ("a+2Bb", Some("a+b")),
            ("+3D", Some("=")),
            ("+20+7E", Some(" ~")),
            ("+E4+BD+A0", Some("你")),
            ("+2b", None),
            ("+2", None),
            ("+", None),
            ("+G0", None),
            ("a=b", None),
            ("a b", None),
            ("é", None),
            ("+C3", None),
        ];
        for (s, want) in cases {
            assert_eq!(xtext_decode(s).as_deref(), *want, "{s:?}");
        }
        assert_eq!(xtext_encode("a+b=c d~\u{7f}é"), "a+2Bb+3Dc+20d~+7F+C3+A9");
        assert_eq!(xtext_encode(""), "");
    }

    // ---- property tests ------------------------------------------------------------------

    fn label() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?",
            "[a-zéü中文Ж][a-zéü中文Ж0-9-]{0,5}[a-z中]",
        ]
    }

    fn domain() -> impl Strategy<Value = Domain> {
        prop::collection::vec(label(), 1..4).prop_map(|l| Domain::parse(&l.join(".")).unwrap())
    }

    fn literal() -> impl Strategy<Value = AddressLiteral> {
        prop_oneof![
            any::<u32>().prop_map(|a| AddressLiteral::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| AddressLiteral::V6(Ipv6Addr::from(a))),
            ("[a-zA-Z][a-zA-Z0-9-]{0,6}[a-zA-Z0-9]", "[!-Z^-~]{1,12}")
                .prop_filter("not the IPv6 tag", |(t, _)| !t.eq_ignore_ascii_case("ipv6"))
                .prop_map(|(tag, content)| AddressLiteral::General { tag, content }),
        ]
    }

    fn arb_host() -> impl Strategy<Value = Host> {
        prop_oneof![3 => domain().prop_map(Host::Domain), 1 => literal().prop_map(Host::Literal)]
    }

    fn local_part() -> impl Strategy<Value = LocalPart> {
        prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~é中-]{1,10}(\\.[a-zA-Z0-9+_-]{1,8}){0,2}"
                .prop_map(|s| LocalPart::parse(&s).unwrap()),
            "[ -~é中\u{a0}]{0,30}".prop_filter_map("too long", |s| LocalPart::new_unquoted(s).ok()),
        ]
    }

    fn arb_mailbox() -> impl Strategy<Value = Mailbox> {
        (local_part(), arb_host()).prop_map(|(l, h)| Mailbox::new(l, h))
    }

    fn path() -> impl Strategy<Value = Path> {
        (prop::collection::vec(domain(), 0..3), arb_mailbox())
            .prop_map(|(route, mailbox)| Path { route, mailbox })
            .prop_filter("path too long", |p| p.to_string().len() <= 256)
    }

    fn reverse_path() -> impl Strategy<Value = ReversePath> {
        prop_oneof![1 => Just(ReversePath::Null), 4 => path().prop_map(ReversePath::Path)]
    }

    fn forward_path() -> impl Strategy<Value = ForwardPath> {
        prop_oneof![1 => Just(ForwardPath::Postmaster), 4 => path().prop_map(ForwardPath::Path)]
    }

    fn any_text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
    }

    /// Any text without control characters (ENVID and ORCPT refuse them once decoded).
    fn printable_text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            any::<char>().prop_filter("control", |c| !c.is_control()),
            0..max,
        )
        .prop_map(String::from_iter)
    }

    fn mail_params() -> impl Strategy<Value = MailParams> {
        let body = prop_oneof![
            Just(Body::SevenBit),
            Just(Body::EightBitMime),
            Just(Body::BinaryMime)
        ];
        let ret = prop_oneof![Just(Ret::Full), Just(Ret::Hdrs)];
        let envid = printable_text(20).prop_filter("ENVID is 1 to 100 characters", |s| {
            (1..=MAX_ENVID).contains(&xtext_encode(s).len())
        });
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(body),
            any::<bool>(),
            proptest::option::of(ret),
            proptest::option::of(envid),
            proptest::option::of(proptest::option::of(arb_mailbox())),
            any::<bool>(),
        )
            .prop_map(
                |(size, body, smtputf8, ret, envid, auth, requiretls)| MailParams {
                    size,
                    body,
                    smtputf8,
                    ret,
                    envid,
                    auth,
                    requiretls,
                },
            )
    }

    fn rcpt_params() -> impl Strategy<Value = RcptParams> {
        let notify = prop_oneof![
            Just(Notify::Never),
            (any::<bool>(), any::<bool>(), any::<bool>())
                .prop_filter("at least one", |(s, f, d)| *s || *f || *d)
                .prop_map(|(success, failure, delay)| Notify::On {
                    success,
                    failure,
                    delay
                }),
        ];
        let orcpt = ("[a-zA-Z0-9-]{1,10}", printable_text(30))
            .prop_map(|(addr_type, addr)| Orcpt { addr_type, addr });
        (proptest::option::of(notify), proptest::option::of(orcpt))
            .prop_map(|(notify, orcpt)| RcptParams { notify, orcpt })
    }

    /// Text with no leading or trailing white space and no controls but TAB.
    fn arg_text() -> impl Strategy<Value = String> {
        "[!-~é你]([ -~\té你]{0,20}[!-~é你])?"
    }

    fn command() -> impl Strategy<Value = Command> {
        let kind = prop_oneof![
            Just(MailKind::Mail),
            Just(MailKind::Send),
            Just(MailKind::Soml),
            Just(MailKind::Saml)
        ];
        let simple = prop_oneof![
            Just(Command::Data),
            Just(Command::Rset),
            Just(Command::Quit),
            Just(Command::Turn),
            Just(Command::StartTls),
            (any::<u64>(), any::<bool>()).prop_map(|(size, last)| Command::Bdat { size, last }),
            "[!-~é]{1,20}".prop_map(Command::Etrn),
            ("[A-Z0-9_-]{1,20}", proptest::option::of("[!-~]{1,30}"))
                .prop_map(|(mechanism, initial)| Command::Auth { mechanism, initial }),
        ];
        let text = prop_oneof![
            arg_text().prop_map(Command::Vrfy),
            arg_text().prop_map(Command::Expn),
            proptest::option::of(arg_text()).prop_map(Command::Help),
            proptest::option::of(arg_text()).prop_map(Command::Noop),
        ];
        prop_oneof![
            1 => arb_host().prop_map(Command::Helo),
            1 => arb_host().prop_map(Command::Ehlo),
            3 => (kind, reverse_path(), mail_params())
                .prop_map(|(kind, from, params)| Command::Mail { kind, from, params }),
            3 => (forward_path(), rcpt_params()).prop_map(|(to, params)| Command::Rcpt { to, params }),
            2 => simple,
            2 => text,
        ]
    }

    /// Lines built from real verbs and the characters that matter to the grammar.
    fn verb_line() -> impl Strategy<Value = String> {
        let verb = prop::sample::select(vec![
            "HELO ",
            "EHLO ",
            "MAIL FROM:",
            "SEND FROM:",
            "RCPT TO:",
            "DATA",
            "BDAT ",
            "RSET",
            "VRFY ",
            "EXPN ",
            "HELP",
            "NOOP ",
            "QUIT",
            "TURN",
            "ETRN ",
            "STARTTLS",
            "AUTH ",
            "mail from: <",
            "RCPT TO:<",
        ]);
        let tail = prop_oneof!["[<>@\":,.;=+ \\\\\\[\\]a-zA-Z0-9é\t-]{0,80}", any_text(80),];
        (verb, tail).prop_map(|(v, t)| format!("{v}{t}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every valid command survives Display then parse (the canonical wire form).
        #[test]
        fn format_then_parse(cmd in command()) {
            let line = cmd.to_string();
            prop_assert_eq!(Command::parse(line.as_bytes()), Ok(cmd), "line {:?}", line);
        }

        /// xtext encoding is reversible for any text.
        #[test]
        fn xtext_round_trip(s in any_text(40)) {
            let encoded = xtext_encode(&s);
            prop_assert!(encoded.bytes().all(|b| (33..=126).contains(&b) && b != b'='));
            prop_assert_eq!(xtext_decode(&encoded), Some(s));
        }

        /// Arbitrary bytes never panic, and whatever parses has a stable canonical form.
        #[test]
        fn parse_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(cmd) = Command::parse(&bytes) {
                prop_assert_eq!(Command::parse(cmd.to_string().as_bytes()), Ok(cmd));
            }
        }

        /// Lines that start with a real verb never panic, and what parses round-trips.
        #[test]
        fn parse_verb_lines(line in verb_line()) {
            if let Ok(cmd) = Command::parse(line.as_bytes()) {
                prop_assert_eq!(Command::parse(cmd.to_string().as_bytes()), Ok(cmd));
            }
        }
    }
}
