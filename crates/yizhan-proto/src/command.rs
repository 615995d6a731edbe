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
    /// The value as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
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
                    let body = [Body::SevenBit, Body::EightBitMime, Body::BinaryMime]
                        .into_iter()
                        .find(|b| b.as_str().eq_ignore_ascii_case(v))
                        .ok_or_else(|| bad(key))?;
                    set_once(&mut p.body, body, key)?;
                }
                // RFC 6531 3.4
                "SMTPUTF8" => set_flag(&mut p.smtputf8, value, key)?,
                // RFC 3461 4.3
                "RET" => {
                    let v = required(value, key)?;
                    let ret = [Ret::Full, Ret::Hdrs]
                        .into_iter()
                        .find(|r| r.as_str().eq_ignore_ascii_case(v))
                        .ok_or_else(|| bad(key))?;
                    set_once(&mut p.ret, ret, key)?;
                }
                // RFC 3461 4.4
                "ENVID" => {
                    let v = required(value, key)?;
                    if v.len() > MAX_ENVID {
                        return Err(bad(key));
                    }
                    let envid = xtext_decode(v).ok_or_else(|| bad(key))?;
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
                    let addr = xtext_decode(xtext).ok_or_else(|| bad(key))?;
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
    let mut in_quote = false;
    let mut in_bracket = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '"' if !in_bracket => in_quote = true,
            '[' => in_bracket = true,
            ']' => in_bracket = false,
            '>' if !in_bracket => return Some(i),
            _ => {}
        }
    }
    None
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
