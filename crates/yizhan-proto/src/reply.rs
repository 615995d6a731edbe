//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 3463, RFC 2034), and every reply
//! text the server ever sends, as a named constructor.
//!
//! Implemented:
//!
//! - RFC 5321 4.2: reply lines `code SP text CRLF`, multi-line replies `code "-" text CRLF` with
//!   the same code on every line; the text is optional (`250` alone is a valid line).
//! - RFC 5321 4.2.1: the first digit gives the class ([`Reply::is_positive`] and friends).
//! - RFC 5321 4.5.3.1.5: reply lines are at most 512 octets with the CRLF; [`Reply::write_to`]
//!   truncates longer text (on a UTF-8 character boundary) and replaces CR and LF with spaces.
//! - RFC 3463 2 / RFC 2034 3: enhanced status codes `class.subject.detail`, written at the start
//!   of every line's text when the session negotiated ENHANCEDSTATUSCODES. As RFC 2034 3 says,
//!   the greeting and the HELO/EHLO replies carry none; neither do 354 and 334, which are
//!   prompts, not outcomes.
//! - [`ReplyParser`], for the client side: incremental, bounded, multi-line, strips an enhanced
//!   code only when it matches the reply's class (RFC 3463 2: class is 2, 4 or 5 and equals the
//!   first digit of the reply code).
//!
//! Every reply the server sends is built by one of the named constructors on [`Reply`] (grouped
//! below by the command they answer), so all reply texts live in this file.

use std::fmt;
use std::str::FromStr;

use crate::command::CommandError;

/// The longest reply line, with its CRLF (RFC 5321 4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// The most lines [`ReplyParser`] accepts in one reply before giving up with
/// [`ReplyError::TooManyLines`] (keeps a hostile server from growing our memory without bound).
pub const MAX_REPLY_LINES: usize = 4096;

/// An enhanced status code `class.subject.detail` (RFC 3463 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2, 4 or 5.
    pub class: u8,
    /// Subject (0..=999).
    pub subject: u16,
    /// Detail (0..=999).
    pub detail: u16,
}

/// A reply: a three-digit code, an optional enhanced status code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (200..=599).
    pub code: u16,
    /// The enhanced status code, written at the start of every line when the session has
    /// ENHANCEDSTATUSCODES on.
    pub enhanced: Option<EnhancedCode>,
    /// The text lines (at least one; may be empty strings). No CR or LF inside.
    pub lines: Vec<String>,
}

/// Why an enhanced status code did not parse (RFC 3463 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an enhanced status code (expected class.subject.detail, class 2, 4 or 5)")]
pub struct EnhancedCodeError;

/// Why [`ReplyParser`] rejected what the server sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line (with its line ending) was longer than the parser's limit; it was discarded.
    #[error("reply line longer than {0} octets")]
    TooLong(usize),
    /// The line does not start with a three-digit reply code 2xx..5xx (RFC 5321 4.2).
    #[error("reply line does not start with a valid reply code")]
    BadCode,
    /// The code is followed by something other than SP, `-` or the end of the line.
    #[error("reply code not followed by SP, '-' or end of line")]
    BadSeparator,
    /// A continuation line carries a different code from the first line (RFC 5321 4.2.1).
    #[error("multi-line reply changed code from {expected} to {found}")]
    MismatchedCode {
        /// The code of the first line.
        expected: u16,
        /// The code of the offending line.
        found: u16,
    },
    /// The multi-line reply has more than [`MAX_REPLY_LINES`] lines.
    #[error("multi-line reply has too many lines")]
    TooManyLines,
}

impl EnhancedCode {
    /// `class.subject.detail`.
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedCode {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// Parses the enhanced code at the start of `text` (RFC 3463 2: `class "." subject "."
    /// detail`, class one digit of 2/4/5, subject and detail one to three digits). It must be
    /// followed by a space or the end of `text`. Returns the code and the length it occupies.
    fn parse_prefix(text: &[u8]) -> Option<(EnhancedCode, usize)> {
        let class = match text.first() {
            Some(c @ (b'2' | b'4' | b'5')) => c - b'0',
            _ => return None,
        };
        if text.get(1) != Some(&b'.') {
            return None;
        }
        let (subject, n1) = parse_number(&text[2..])?;
        let after = 2 + n1;
        if text.get(after) != Some(&b'.') {
            return None;
        }
        let (detail, n2) = parse_number(&text[after + 1..])?;
        let end = after + 1 + n2;
        match text.get(end) {
            None | Some(b' ') => Some((EnhancedCode::new(class, subject, detail), end)),
            _ => None,
        }
    }
}

/// One to three ASCII digits at the start of `s` (not followed by a fourth).
fn parse_number(s: &[u8]) -> Option<(u16, usize)> {
    let n = s.iter().take(4).take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 3 {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    Some((v, n))
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedCode {
    type Err = EnhancedCodeError;

    fn from_str(s: &str) -> Result<EnhancedCode, EnhancedCodeError> {
        match EnhancedCode::parse_prefix(s.as_bytes()) {
            Some((code, len)) if len == s.len() => Ok(code),
            _ => Err(EnhancedCodeError),
        }
    }
}

/// Replaces CR and LF with spaces: a reply line can never be split or smuggle a second reply.
fn sanitize(text: String) -> String {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ")
    } else {
        text
    }
}

/// The longest prefix of `s` that is at most `max` octets and ends on a character boundary.
fn truncate_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Shorthand for the constructors below.
const fn enh(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode::new(class, subject, detail))
}

impl Reply {
    /// A one-line reply. CR and LF in `text` are replaced with spaces.
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            lines: vec![sanitize(text.into())],
        }
    }

    /// A multi-line reply (RFC 5321 4.2.1). CR and LF in the lines are replaced with spaces; an
    /// empty `lines` becomes one empty line.
    pub fn multi(code: u16, enhanced: Option<EnhancedCode>, lines: Vec<String>) -> Reply {
        let mut lines: Vec<String> = lines.into_iter().map(sanitize).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// 2yz: positive completion (RFC 5321 4.2.1).
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3yz: positive intermediate (354, 334).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4yz: transient negative completion; the sender may try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5yz: permanent negative completion.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The text lines joined with a single space (for logs and delivery reports).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Writes the reply in wire form: `250-first\r\n ... 250 last\r\n`. With `enhanced` true and
    /// an enhanced code present, every line's text starts with the code and a space
    /// (RFC 2034 3). CR/LF in the text become spaces and each line is cut to at most 512 octets
    /// with its CRLF (RFC 5321 4.5.3.1.5). The last line always has the space after the code,
    /// even with no text (`334 ` as RFC 4954 4 requires).
    pub fn write_to(&self, out: &mut Vec<u8>, enhanced: bool) {
        let code = self.code.min(999);
        let digits = [
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        let prefix = match self.enhanced {
            Some(e) if enhanced => Some(e.to_string()),
            _ => None,
        };
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            out.extend_from_slice(&digits);
            out.push(if last { b' ' } else { b'-' });
            // Room for the text: 512 - code - separator - CRLF - the enhanced code and its space.
            let mut room = MAX_REPLY_LINE - 3 - 1 - 2;
            if let Some(p) = &prefix {
                out.extend_from_slice(p.as_bytes());
                room -= p.len() + 1;
                if line.is_empty() {
                    out.extend_from_slice(b"\r\n");
                    continue;
                }
                out.push(b' ');
            }
            let text = truncate_to(line, room);
            let start = out.len();
            out.extend_from_slice(text.as_bytes());
            for b in &mut out[start..] {
                if *b == b'\r' || *b == b'\n' {
                    *b = b' ';
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// [`Reply::write_to`] into a new buffer.
    pub fn to_bytes(&self, enhanced: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_to(&mut out, enhanced);
        out
    }
}

/// One line per reply line: `250-2.0.0 text`, for logs.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes(true);
        let text = String::from_utf8_lossy(&bytes);
        f.write_str(
            text.trim_end_matches("\r\n")
                .replace("\r\n", " / ")
                .as_str(),
        )
    }
}

/// Every reply the server sends. Grouped by the command or event they answer; each names the
/// RFC section that defines it. Reply texts are short, conventional English.
impl Reply {
    // ---- connection: greeting, closing, shutdown (RFC 5321 3.1, 4.1.1.10, 3.8) ----

    /// The greeting when a connection opens (RFC 5321 3.1, 4.2: `220 domain`). No enhanced code
    /// (RFC 2034 3).
    pub fn greeting(host: &str) -> Reply {
        Reply::new(220, None, format!("{host} ESMTP yizhan"))
    }

    /// The answer to QUIT (RFC 5321 4.1.1.10), saying what the session carried when it
    /// carried anything (as the seed article's server reports the octets it received).
    pub fn closing(host: &str, messages: u64, octets: u64) -> Reply {
        let text = match messages {
            0 => format!("{host} Service closing transmission channel"),
            1 => format!("{host} closing: 1 message, {octets} octets received"),
            n => format!("{host} closing: {n} messages, {octets} octets received"),
        };
        Reply::new(221, enh(2, 0, 0), text)
    }

    /// The server is shutting down: sent in place of any reply, then the connection closes
    /// (RFC 5321 3.8, 4.2.3 `421`).
    pub fn shutting_down(host: &str) -> Reply {
        Reply::new(
            421,
            enh(4, 3, 2),
            format!("{host} Service shutting down, closing transmission channel"),
        )
    }

    /// Connection refused at accept because the connection limit is reached (RFC 5321 3.8).
    pub fn too_many_connections(host: &str) -> Reply {
        Reply::new(
            421,
            enh(4, 7, 0),
            format!("{host} Too many connections, try again later"),
        )
    }

    /// The client's address went over a rate limit (issue #13: connections or failed AUTH
    /// attempts per minute); sent before closing.
    pub fn rate_limited(host: &str, what: &str) -> Reply {
        Reply::new(
            421,
            enh(4, 7, 0),
            format!("{host} Too many {what} from your address, try again later"),
        )
    }

    /// The session reached its lifetime or its byte quota (issue #13); sent before closing.
    pub fn session_limit(host: &str, what: &str) -> Reply {
        Reply::new(
            421,
            enh(4, 7, 0),
            format!("{host} Session {what} limit reached, closing transmission channel"),
        )
    }

    /// Too many VRFY or EXPN commands from this address in a minute (issue #13).
    pub fn verify_rate_limited() -> Reply {
        Reply::new(
            450,
            enh(4, 7, 1),
            "Too many VRFY/EXPN requests from your address, try again later",
        )
    }

    /// The client was idle longer than the command or data timeout (RFC 5321 4.5.3.2; 4.4.2 is
    /// "bad connection").
    pub fn timeout(host: &str) -> Reply {
        Reply::new(
            421,
            enh(4, 4, 2),
            format!("{host} Timeout exceeded, closing transmission channel"),
        )
    }

    /// The client made too many errors and is disconnected (RFC 5321 3.8).
    pub fn too_many_errors(host: &str) -> Reply {
        Reply::new(
            421,
            enh(4, 7, 0),
            format!("{host} Too many errors, closing transmission channel"),
        )
    }

    /// The client sent a command before the greeting (a pipelining violation, RFC 2920 3.1 /
    /// RFC 5321 4.3.1); sent before closing.
    pub fn early_talker(host: &str) -> Reply {
        Reply::new(
            554,
            enh(5, 5, 1),
            format!("{host} Protocol error: command sent before the greeting"),
        )
    }

    /// The client sent more input without waiting for a reply it had to wait for (RFC 2920
    /// 3.1): after a refused DATA, or any command when PIPELINING was not offered (no EHLO
    /// yet, HELO, or PIPELINING switched off). What it sent is never run as commands: this
    /// is sent and the connection closed (Postfix's `smtpd_forbid_unauth_pipelining`).
    pub fn improper_pipelining(host: &str) -> Reply {
        Reply::new(
            554,
            enh(5, 5, 0),
            format!("{host} Protocol error: improper command pipelining"),
        )
    }

    // ---- HELO / EHLO (RFC 5321 4.1.1.1, RFC 821 4.1.1, RFC 1869) ----

    /// The answer to HELO: the plain RFC 821 form, `250 domain`, no enhanced code (RFC 2034 3).
    pub fn helo_ok(host: &str) -> Reply {
        Reply::new(250, None, host)
    }

    /// The answer to EHLO (RFC 5321 4.1.1.1, RFC 1869 4.3): `250-{host} Hello {peer_name}`, then
    /// one line per capability keyword (see [`crate::ehlo::Capabilities::lines`]). No enhanced
    /// code (RFC 2034 3).
    pub fn ehlo_ok(host: &str, peer_name: &str, capability_lines: &[String]) -> Reply {
        let mut lines = Vec::with_capacity(1 + capability_lines.len());
        lines.push(format!("{host} Hello {peer_name}"));
        lines.extend(capability_lines.iter().cloned());
        Reply::multi(250, None, lines)
    }

    // ---- generic ----

    /// A plain success (RFC 5321 4.2.2 `250`).
    pub fn ok() -> Reply {
        Reply::new(250, enh(2, 0, 0), "OK")
    }

    /// The answer to NOOP (RFC 5321 4.1.1.9).
    pub fn noop_ok() -> Reply {
        Reply::new(250, enh(2, 0, 0), "OK")
    }

    /// The answer to RSET (RFC 5321 4.1.1.5).
    pub fn reset_ok() -> Reply {
        Reply::new(250, enh(2, 0, 0), "Reset OK")
    }

    // ---- MAIL / SEND / SOML / SAML (RFC 5321 4.1.1.2, RFC 821 4.1.1) ----

    /// The sender was accepted (RFC 5321 4.1.1.2; RFC 3463 3.2 X.1.0 "other address status").
    pub fn sender_ok() -> Reply {
        Reply::new(250, enh(2, 1, 0), "Sender OK")
    }

    /// MAIL inside a transaction (RFC 5321 4.1.4: a second MAIL is a bad sequence).
    pub fn nested_mail() -> Reply {
        Reply::new(503, enh(5, 5, 1), "Sender already specified")
    }

    /// The declared `SIZE=` exceeds the server's limit, answered at MAIL (RFC 1870 6.1).
    pub fn size_exceeds_limit(max: u64) -> Reply {
        Reply::new(
            552,
            enh(5, 3, 4),
            format!("Message size exceeds fixed limit of {max} octets"),
        )
    }

    /// A UTF-8 address or `SMTPUTF8` content without the SMTPUTF8 parameter
    /// (RFC 6531 3.7.4.1: 553 5.6.7).
    pub fn needs_smtputf8() -> Reply {
        Reply::new(553, enh(5, 6, 7), "Non-ASCII address requires SMTPUTF8")
    }

    /// The sender address did not parse (RFC 5321 4.1.1.2, RFC 3463 X.1.7 "bad sender's mailbox
    /// address syntax").
    pub fn bad_sender_address(detail: &str) -> Reply {
        Reply::new(
            501,
            enh(5, 1, 7),
            format!("Bad sender address syntax: {detail}"),
        )
    }

    // ---- RCPT (RFC 5321 4.1.1.3, 3.4) ----

    /// The recipient was accepted (RFC 3463 X.1.5 "destination address valid").
    pub fn recipient_ok() -> Reply {
        Reply::new(250, enh(2, 1, 5), "Recipient OK")
    }

    /// The recipient is not local and the server will forward (RFC 5321 3.4, 4.2.2 `251`).
    pub fn will_forward(path: &str) -> Reply {
        Reply::new(
            251,
            enh(2, 1, 5),
            format!("User not local; will forward to {path}"),
        )
    }

    /// The recipient is not local and the client should send to `path` itself (RFC 5321 3.4,
    /// 4.2.2 `551`; RFC 3463 X.1.6 "destination mailbox has moved").
    pub fn user_not_local(path: &str) -> Reply {
        Reply::new(
            551,
            enh(5, 1, 6),
            format!("User not local; please try {path}"),
        )
    }

    /// The recipient address did not parse (RFC 3463 X.1.3 "bad destination mailbox address
    /// syntax").
    pub fn bad_recipient_address(detail: &str) -> Reply {
        Reply::new(
            501,
            enh(5, 1, 3),
            format!("Bad recipient address syntax: {detail}"),
        )
    }

    /// More recipients than the server accepts in one transaction (RFC 5321 4.5.3.1.10: 452,
    /// the client sends the rest later; RFC 3463 X.5.3).
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, enh(4, 5, 3), "Too many recipients")
    }

    /// The recipient does not exist (RFC 5321 4.2.2 `550`; RFC 3463 X.1.1 "bad destination
    /// mailbox address"). Also the answer to VRFY for an unknown user.
    pub fn no_such_user(addr: &str) -> Reply {
        Reply::new(550, enh(5, 1, 1), format!("No such user: {addr}"))
    }

    /// The server is not a relay for this recipient (RFC 5321 3.6.2; RFC 3463 X.7.1).
    pub fn relay_denied(addr: &str) -> Reply {
        Reply::new(550, enh(5, 7, 1), format!("Relaying denied: {addr}"))
    }

    /// The mailbox is temporarily unavailable (RFC 5321 4.2.2 `450`; RFC 3463 X.2.1 "mailbox
    /// disabled").
    pub fn mailbox_unavailable_temp(addr: &str) -> Reply {
        Reply::new(
            450,
            enh(4, 2, 1),
            format!("Mailbox temporarily unavailable: {addr}"),
        )
    }

    /// SEND to a recipient with no live terminal session (RFC 821 4.1.1 SEND: "450 User not
    /// active"; here a watcher attached to the mailbox).
    pub fn user_not_active(addr: &str) -> Reply {
        Reply::new(
            450,
            enh(4, 2, 1),
            format!("User not active (no terminal session): {addr}"),
        )
    }

    /// The mailbox name is not allowed (RFC 5321 4.2.2 `553`; RFC 3463 X.1.3).
    pub fn mailbox_name_invalid(addr: &str) -> Reply {
        Reply::new(
            553,
            enh(5, 1, 3),
            format!("Mailbox name not allowed: {addr}"),
        )
    }

    // ---- DATA / BDAT (RFC 5321 4.1.1.4, RFC 3030) ----

    /// The go-ahead after DATA (RFC 5321 4.1.1.4, 4.2.2 `354`). No enhanced code: a prompt.
    pub fn start_data() -> Reply {
        Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
    }

    /// The message is durably queued (RFC 5321 4.1.1.4; yizhan answers only after the spool
    /// commit).
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, enh(2, 0, 0), format!("OK queued as {id}"))
    }

    /// A SEND or SOML message was shown on every recipient's terminal (RFC 821 4.1.1) and so
    /// not queued for a mailbox.
    pub fn shown_on_terminal(users: usize) -> Reply {
        let whose = if users == 1 {
            "the user's terminal".to_owned()
        } else {
            format!("the terminals of {users} users")
        };
        Reply::new(250, enh(2, 0, 0), format!("OK shown on {whose}"))
    }

    /// A non-LAST BDAT chunk was received (RFC 3030 2, 4.2).
    pub fn bdat_chunk_ok(octets: u64) -> Reply {
        Reply::new(250, enh(2, 0, 0), format!("{octets} octets received"))
    }

    /// The message exceeded the size limit while it arrived (RFC 5321 4.2.2 `552`, RFC 1870 6.2;
    /// RFC 3463 X.3.4 "message too big for system").
    pub fn message_too_big(max: u64) -> Reply {
        Reply::new(
            552,
            enh(5, 3, 4),
            format!("Message too big (limit {max} octets)"),
        )
    }

    /// The message contained a bare CR or LF; yizhan rejects it (RFC 5321 2.3.8, see
    /// [`crate::data`]). RFC 3463 X.6.0 "other media error".
    pub fn bare_line_ending() -> Reply {
        Reply::new(
            550,
            enh(5, 6, 0),
            "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)",
        )
    }

    /// DATA after `BODY=BINARYMIME` (RFC 3030 3: BINARYMIME must be sent with BDAT).
    pub fn binarymime_needs_bdat() -> Reply {
        Reply::new(503, enh(5, 5, 1), "BINARYMIME requires BDAT")
    }

    /// DATA after BDAT in the same transaction (RFC 3030 2: "503 5.5.1").
    pub fn mixed_data_bdat() -> Reply {
        Reply::new(
            503,
            enh(5, 5, 1),
            "DATA and BDAT cannot be mixed in one transaction",
        )
    }

    /// DATA/BDAT LAST when every RCPT was rejected (RFC 5321 3.3: "554 No valid recipients").
    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, enh(5, 5, 1), "No valid recipients")
    }

    /// The message has more trace fields than `max` (RFC 5321 6.3): it is probably looping
    /// (`5.4.6`, routing loop detected, RFC 3463).
    pub fn too_many_hops(max: usize) -> Reply {
        Reply::new(
            554,
            enh(5, 4, 6),
            format!("Too many hops (more than {max} Received: fields): mail loop"),
        )
    }

    /// SPF (RFC 7208 8.4) says `domain` does not send from this client: refused with the
    /// code of RFC 7372 (`5.7.23`, SPF validation failed).
    pub fn spf_fail(domain: &str) -> Reply {
        Reply::new(
            550,
            enh(5, 7, 23),
            format!("SPF check failed: {domain} does not designate this host as a sender"),
        )
    }

    /// The SPF record of `domain` could not be read now (RFC 7208 8.6, `4.7.24`, RFC 7372).
    pub fn spf_temp_error(domain: &str) -> Reply {
        Reply::new(
            451,
            enh(4, 7, 24),
            format!("SPF check of {domain} failed temporarily (DNS); try again later"),
        )
    }

    /// The author domain's DMARC policy is `p=reject` and the message does not pass
    /// (RFC 7489 6.6.3, 7.3: `5.7.1`).
    pub fn dmarc_reject(domain: &str) -> Reply {
        Reply::new(
            550,
            enh(5, 7, 1),
            format!("Rejected by the DMARC policy of {domain}: the message is not authenticated"),
        )
    }

    /// A `From:` naming several author domains, which DMARC cannot evaluate (RFC 7489 6.6.1:
    /// the receiver may reject it).
    pub fn several_author_domains(domains: &str) -> Reply {
        Reply::new(
            550,
            enh(5, 7, 1),
            format!(
                "Rejected: the From: field names several domains ({domains}); DMARC cannot apply"
            ),
        )
    }

    /// The DMARC evaluation of `domain` hit a temporary DNS error where its policy would
    /// decide (RFC 7489 6.6.3): deferred, never passed.
    pub fn dmarc_temp_error(domain: &str) -> Reply {
        Reply::new(
            451,
            enh(4, 7, 1),
            format!("DMARC check of {domain} failed temporarily (DNS); try again later"),
        )
    }

    /// The transaction failed for a reason given in `detail` (RFC 5321 4.2.2 `554`).
    pub fn transaction_failed(detail: &str) -> Reply {
        Reply::new(554, enh(5, 0, 0), format!("Transaction failed: {detail}"))
    }

    // ---- sequence errors (RFC 5321 4.1.4, 4.2.2 `503`) ----

    /// MAIL (or another command) before HELO/EHLO.
    pub fn need_helo() -> Reply {
        Reply::new(503, enh(5, 5, 1), "Send HELO or EHLO first")
    }

    /// RCPT or DATA before MAIL.
    pub fn need_mail() -> Reply {
        Reply::new(503, enh(5, 5, 1), "Need MAIL command first")
    }

    /// DATA or BDAT before any RCPT.
    pub fn need_rcpt() -> Reply {
        Reply::new(503, enh(5, 5, 1), "Need RCPT command first")
    }

    // ---- syntax (RFC 5321 4.2.2 `500`/`501`/`502`/`504`/`555`, 4.5.3.1.4) ----

    /// The verb is not known (RFC 5321 4.2.2 `500`; RFC 3463 X.5.1 "invalid command").
    pub fn unknown_command() -> Reply {
        Reply::new(500, enh(5, 5, 1), "Command not recognized")
    }

    /// The command line has invalid characters (non-UTF-8, control characters, bare CR/LF).
    /// RFC 3463 X.5.2 "syntax error".
    pub fn invalid_characters() -> Reply {
        Reply::new(500, enh(5, 5, 2), "Invalid characters in command line")
    }

    /// The command line exceeded the limit (RFC 5321 4.5.3.1.4 and 4.2.2 `500 ... line too
    /// long`).
    pub fn line_too_long() -> Reply {
        Reply::new(500, enh(5, 5, 2), "Line too long")
    }

    /// Syntax error in the arguments (RFC 5321 4.2.2 `501`; RFC 3463 X.5.4 "invalid command
    /// arguments").
    pub fn syntax(detail: &str) -> Reply {
        Reply::new(501, enh(5, 5, 4), format!("Syntax error: {detail}"))
    }

    /// A known verb that yizhan does not implement or has switched off (RFC 5321 4.2.2 `502`).
    pub fn not_implemented(verb: &str) -> Reply {
        Reply::new(502, enh(5, 5, 1), format!("{verb} command not implemented"))
    }

    /// A verb yizhan knows but this server's configuration switched off (RFC 5321 4.2.4
    /// `502`, saying so rather than "not implemented").
    pub fn disabled(verb: &str) -> Reply {
        Reply::new(
            502,
            enh(5, 5, 1),
            format!("{verb} is disabled on this server"),
        )
    }

    /// An ESMTP verb sent after HELO (RFC 5321 4.1.4: `EHLO` opens the extensions).
    pub fn needs_ehlo(verb: &str) -> Reply {
        Reply::new(
            502,
            enh(5, 5, 1),
            format!("{verb} is an ESMTP command: say EHLO first"),
        )
    }

    /// A MAIL/RCPT parameter that is not recognised (RFC 5321 4.1.1.11 `555`).
    pub fn parameter_not_implemented(name: &str) -> Reply {
        Reply::new(
            555,
            enh(5, 5, 4),
            format!("Parameter {name} not recognized or not implemented"),
        )
    }

    /// A recognised parameter that this session does not support, e.g. one whose extension was
    /// not advertised (RFC 5321 4.2.2 `504`).
    pub fn parameter_unsupported(name: &str) -> Reply {
        Reply::new(504, enh(5, 5, 4), format!("Parameter {name} not supported"))
    }

    /// A known parameter with a bad value or given twice (RFC 5321 4.2.2 `501`).
    pub fn bad_parameter(name: &str) -> Reply {
        Reply::new(501, enh(5, 5, 4), format!("Bad value for parameter {name}"))
    }

    // ---- HELP (RFC 5321 4.1.1.8) ----

    /// HELP without argument: the list of commands (RFC 5321 4.1.1.8, 4.2.2 `214`).
    pub fn help_general(verbs: &[&str]) -> Reply {
        let mut lines = vec!["yizhan commands:".to_string()];
        for chunk in verbs.chunks(8) {
            lines.push(format!("  {}", chunk.join(" ")));
        }
        lines.push("Use HELP <command> for its syntax".to_string());
        Reply::multi(214, enh(2, 0, 0), lines)
    }

    /// The syntax summary of one verb, or `None` when the verb is not known.
    pub fn help_syntax(verb: &str) -> Option<&'static str> {
        let text = match verb.to_ascii_uppercase().as_str() {
            "HELO" => "HELO <domain>",
            "EHLO" => "EHLO <domain or address literal>",
            "MAIL" => {
                "MAIL FROM:<reverse-path> [SIZE=n] [BODY=7BIT|8BITMIME|BINARYMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=id] [AUTH=mailbox] [REQUIRETLS]"
            }
            "RCPT" => {
                "RCPT TO:<forward-path> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY] [ORCPT=type;address]"
            }
            "DATA" => "DATA, then the message, ended by a line with a single dot",
            "BDAT" => "BDAT <size> [LAST], followed by exactly <size> octets",
            "RSET" => "RSET (abort the current transaction)",
            "VRFY" => "VRFY <user or mailbox>",
            "EXPN" => "EXPN <mailing list>",
            "HELP" => "HELP [command]",
            "NOOP" => "NOOP [string]",
            "QUIT" => "QUIT (close the connection)",
            "SEND" => "SEND FROM:<reverse-path> (deliver to the recipient's terminal)",
            "SOML" => "SOML FROM:<reverse-path> (to the terminal if active, else the mailbox)",
            "SAML" => "SAML FROM:<reverse-path> (to the terminal if active, and the mailbox)",
            "TURN" => "TURN (swap client and server roles)",
            "ETRN" => "ETRN <domain> | @<domain> | #<queue>",
            "STARTTLS" => "STARTTLS (begin TLS negotiation)",
            "AUTH" => "AUTH <mechanism> [initial-response]",
            _ => return None,
        };
        Some(text)
    }

    /// HELP with a verb: its one-line `syntax` (RFC 5321 4.1.1.8, `214`).
    pub fn help_topic(syntax: &str) -> Reply {
        Reply::new(214, enh(2, 0, 0), syntax)
    }

    /// HELP for a verb yizhan knows that this session does not offer now: its syntax, and
    /// that it is not available (switched off, or needing EHLO or TLS first).
    pub fn help_not_offered(verb: &str, syntax: &str) -> Reply {
        Reply::multi(
            214,
            enh(2, 0, 0),
            vec![
                syntax.to_owned(),
                format!(
                    "{verb} is not available in this session (switched off, or EHLO/TLS first)"
                ),
            ],
        )
    }

    /// HELP with a topic yizhan has no help for (RFC 5321 4.2.2 `504`).
    pub fn help_unknown(topic: &str) -> Reply {
        Reply::new(504, enh(5, 5, 1), format!("No help available for {topic}"))
    }

    // ---- VRFY / EXPN (RFC 5321 3.5, 4.1.1.6, 4.1.1.7, 7.3) ----

    /// VRFY when yizhan will not tell (RFC 5321 3.5.3 `252`).
    pub fn vrfy_cannot_verify() -> Reply {
        Reply::new(
            252,
            enh(2, 1, 5),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }

    /// VRFY success: `250 Full Name <mailbox>` or `250 <mailbox>` (RFC 5321 3.5.1).
    pub fn vrfy_user(mailbox_display: &str, full_name: Option<&str>) -> Reply {
        let text = match full_name {
            Some(name) => format!("{name} <{mailbox_display}>"),
            None => format!("<{mailbox_display}>"),
        };
        Reply::new(250, enh(2, 1, 5), text)
    }

    /// EXPN success: one member per line (RFC 5321 3.5.2), each as given (e.g. `Name <a@b>`).
    pub fn expn_members(members: &[String]) -> Reply {
        Reply::multi(250, enh(2, 1, 5), members.to_vec())
    }

    /// EXPN of something that is not a list (RFC 5321 3.5.2 `550`).
    pub fn no_such_list(addr: &str) -> Reply {
        Reply::new(550, enh(5, 1, 1), format!("No such mailing list: {addr}"))
    }

    /// VRFY matched several users (RFC 5321 3.5.1 `553 User ambiguous`; RFC 3463 X.1.4).
    pub fn ambiguous_user(addr: &str) -> Reply {
        Reply::new(553, enh(5, 1, 4), format!("User ambiguous: {addr}"))
    }

    // ---- AUTH (RFC 4954) ----

    /// A SASL challenge (RFC 4954 4: `334 SP [base64]`). No enhanced code.
    pub fn auth_challenge(b64: &str) -> Reply {
        Reply::new(334, None, b64)
    }

    /// Authentication succeeded (RFC 4954 6: 235 2.7.0).
    pub fn auth_ok() -> Reply {
        Reply::new(235, enh(2, 7, 0), "Authentication successful")
    }

    /// Wrong credentials (RFC 4954 6: 535 5.7.8).
    pub fn auth_failed() -> Reply {
        Reply::new(535, enh(5, 7, 8), "Authentication credentials invalid")
    }

    /// The client answered `*` (RFC 4954 4: 501).
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, enh(5, 0, 0), "Authentication cancelled")
    }

    /// A response that is not valid base64 (RFC 4954 4: 501 5.5.2).
    pub fn auth_bad_base64() -> Reply {
        Reply::new(501, enh(5, 5, 2), "Cannot decode base64 response")
    }

    /// An AUTH response line longer than the limit (RFC 4954 4: 500 5.5.6).
    pub fn auth_line_too_long() -> Reply {
        Reply::new(
            500,
            enh(5, 5, 6),
            "Authentication exchange line is too long",
        )
    }

    /// A mechanism yizhan does not offer (RFC 4954 4: 504 5.5.4).
    pub fn auth_mechanism_unknown() -> Reply {
        Reply::new(504, enh(5, 5, 4), "Unrecognized authentication mechanism")
    }

    /// AUTH after a successful AUTH (RFC 4954 4: 503).
    pub fn auth_already() -> Reply {
        Reply::new(503, enh(5, 5, 1), "Already authenticated")
    }

    /// An authenticated client used a sender address it does not own (RFC 4954 6 and RFC 3463
    /// X.7.1: 553 5.7.1, as RFC 6409 6.1 submission servers answer).
    pub fn sender_not_owned(addr: &str) -> Reply {
        Reply::new(
            553,
            enh(5, 7, 1),
            format!("Sender address not owned by the authenticated user: {addr}"),
        )
    }

    /// The listener requires authentication first (RFC 4954 6: 530 5.7.0).
    pub fn auth_required() -> Reply {
        Reply::new(530, enh(5, 7, 0), "Authentication required")
    }

    /// The mechanism needs TLS (RFC 4954 6: 538 5.7.11).
    pub fn auth_needs_tls() -> Reply {
        Reply::new(
            538,
            enh(5, 7, 11),
            "Encryption required for requested authentication mechanism",
        )
    }

    /// AUTH during a mail transaction (RFC 4954 4: 503).
    pub fn auth_in_transaction() -> Reply {
        Reply::new(
            503,
            enh(5, 5, 1),
            "AUTH not allowed during a mail transaction",
        )
    }

    /// A transient failure of the credential store (RFC 4954 6: 454 4.7.0).
    pub fn auth_temp_failure() -> Reply {
        Reply::new(454, enh(4, 7, 0), "Temporary authentication failure")
    }

    /// Too many failed attempts; the connection closes (RFC 5321 3.8 `421`).
    pub fn auth_too_many_failures(host: &str) -> Reply {
        Reply::new(
            421,
            enh(4, 7, 0),
            format!("{host} Too many authentication failures, closing transmission channel"),
        )
    }

    // ---- STARTTLS (RFC 3207) ----

    /// The go-ahead for the TLS handshake (RFC 3207 4).
    pub fn starttls_ready() -> Reply {
        Reply::new(220, enh(2, 0, 0), "Ready to start TLS")
    }

    /// STARTTLS on a connection that already has TLS (RFC 3207 4: 503 is usual; 4.2 forbids a
    /// second negotiation).
    pub fn tls_already_active() -> Reply {
        Reply::new(503, enh(5, 5, 1), "TLS already active")
    }

    /// TLS is not available now (RFC 3207 4: 454).
    pub fn tls_unavailable() -> Reply {
        Reply::new(
            454,
            enh(4, 7, 0),
            "TLS not available due to temporary reason",
        )
    }

    /// The listener requires TLS before this command (RFC 3207 4: 530).
    pub fn starttls_required() -> Reply {
        Reply::new(530, enh(5, 7, 0), "Must issue a STARTTLS command first")
    }

    // ---- TURN (RFC 821 4.1.1) and ETRN (RFC 1985) ----

    /// TURN refused (RFC 821 4.1.1: `502`; RFC 2821 removed TURN for lack of authentication).
    pub fn turn_refused() -> Reply {
        Reply::new(502, enh(5, 5, 1), "TURN not allowed")
    }

    /// TURN before AUTH (yizhan allows TURN only for an authenticated client).
    pub fn turn_needs_auth() -> Reply {
        Reply::new(503, enh(5, 5, 1), "TURN requires authentication")
    }

    /// TURN accepted; the roles swap (RFC 821 4.1.1).
    pub fn turn_ok() -> Reply {
        Reply::new(250, enh(2, 0, 0), "OK, turning around")
    }

    /// ETRN accepted and a queue run started (RFC 1985 5.1: 250).
    pub fn etrn_started(node: &str) -> Reply {
        Reply::new(
            250,
            enh(2, 0, 0),
            format!("Queuing for node {node} started"),
        )
    }

    /// ETRN for a node with nothing waiting (RFC 1985 5.1: 251).
    pub fn etrn_no_messages(node: &str) -> Reply {
        Reply::new(
            251,
            enh(2, 0, 0),
            format!("No messages waiting for node {node}"),
        )
    }

    /// ETRN refused: unable to queue for the node (RFC 1985 5.1: 458).
    pub fn etrn_refused(node: &str) -> Reply {
        Reply::new(
            458,
            enh(4, 0, 0),
            format!("Unable to queue messages for node {node}"),
        )
    }

    /// ETRN for a node this client may not ask for (RFC 1985 5.1: 459).
    pub fn etrn_not_allowed(node: &str) -> Reply {
        Reply::new(459, enh(4, 7, 1), format!("Node {node} not allowed"))
    }

    // ---- local failures (RFC 5321 4.2.2 `451`, `452`) ----

    /// A local error (spool, lookup) prevented the action; try again later (RFC 3463 X.3.0).
    pub fn local_error() -> Reply {
        Reply::new(
            451,
            enh(4, 3, 0),
            "Local error in processing, try again later",
        )
    }

    /// The memory for messages kept whole while they are checked is used up by other
    /// sessions (RFC 3463 X.3.2 "system not accepting network messages"): try again later.
    pub fn too_busy_to_check() -> Reply {
        Reply::new(
            451,
            enh(4, 3, 2),
            "Too many messages are being checked at once; try again later",
        )
    }

    /// The spool is out of space (RFC 5321 4.2.2 `452`; RFC 3463 X.3.1 "mail system full").
    pub fn insufficient_storage() -> Reply {
        Reply::new(452, enh(4, 3, 1), "Insufficient system storage")
    }
}

impl CommandError {
    /// The reply the server sends for a command line that did not parse (RFC 5321 4.2.2,
    /// 4.1.1.11; RFC 3463 3.6).
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::UnknownCommand => Reply::unknown_command(),
            CommandError::InvalidCharacters => Reply::invalid_characters(),
            CommandError::Syntax(detail) => Reply::syntax(detail),
            CommandError::Address {
                sender: true,
                source,
            } => Reply::bad_sender_address(&source.to_string()),
            CommandError::Address {
                sender: false,
                source,
            } => Reply::bad_recipient_address(&source.to_string()),
            CommandError::UnknownParameter(name) => Reply::parameter_not_implemented(name),
            CommandError::BadParameter(name) => Reply::bad_parameter(name),
        }
    }
}

/// A reply being assembled from its lines.
#[derive(Debug)]
struct PartialReply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

/// Incremental reply parser for the sender-SMTP side (RFC 5321 4.2).
///
/// Push bytes as they arrive, then call [`ReplyParser::next_reply`] until it returns `None`.
/// Lines end with CRLF; a bare LF is also accepted as a line end (replies are only read, never
/// relayed, so leniency costs nothing here), and a stray CR inside a line becomes a space.
/// A line longer than the limit is discarded up to its line end and reported once as
/// [`ReplyError::TooLong`]. After any error the partial reply is dropped and parsing resumes at
/// the next line.
#[derive(Debug)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Offset of the first unparsed byte in `buf`.
    start: usize,
    max_line: usize,
    /// Inside an over-long line that was already reported; skip to its LF.
    discarding: bool,
    partial: Option<PartialReply>,
}

impl ReplyParser {
    /// A parser accepting lines of up to `max_line` octets with their CRLF; raised to at least
    /// 512 (RFC 5321 4.5.3.1.5).
    pub fn new(max_line: usize) -> ReplyParser {
        ReplyParser {
            buf: Vec::new(),
            start: 0,
            max_line: max_line.max(MAX_REPLY_LINE),
            discarding: false,
            partial: None,
        }
    }

    /// Appends bytes read from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes are buffered that are not yet part of a returned reply. After the `220`
    /// to STARTTLS this must be false: anything else was injected before the handshake
    /// (RFC 3207 6) and the client should drop the connection.
    pub fn has_buffered(&self) -> bool {
        self.start < self.buf.len() || self.partial.is_some() || self.discarding
    }

    /// Drops every buffered byte and any partial reply (after STARTTLS, RFC 3207 4.2).
    pub fn reset_buffer(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.discarding = false;
        self.partial = None;
    }

    /// The next complete reply, an error for a malformed line, or `None` when more bytes are
    /// needed.
    pub fn next_reply(&mut self) -> Option<Result<Reply, ReplyError>> {
        loop {
            let pending = &self.buf[self.start..];
            let newline = memchr::memchr(b'\n', pending);
            if self.discarding {
                match newline {
                    None => {
                        self.buf.clear();
                        self.start = 0;
                        return None;
                    }
                    Some(i) => {
                        self.start += i + 1;
                        self.discarding = false;
                        continue;
                    }
                }
            }
            let Some(i) = newline else {
                if pending.len() >= self.max_line {
                    self.buf.clear();
                    self.start = 0;
                    self.discarding = true;
                    self.partial = None;
                    return Some(Err(ReplyError::TooLong(self.max_line)));
                }
                return None;
            };
            let line_start = self.start;
            self.start += i + 1;
            if i + 1 > self.max_line {
                self.partial = None;
                return Some(Err(ReplyError::TooLong(self.max_line)));
            }
            let mut end = line_start + i;
            if end > line_start && self.buf[end - 1] == b'\r' {
                end -= 1;
            }
            let line = self.buf[line_start..end].to_vec();
            match self.parse_line(&line) {
                Ok(Some(reply)) => return Some(Ok(reply)),
                Ok(None) => {}
                Err(e) => {
                    self.partial = None;
                    return Some(Err(e));
                }
            }
        }
    }

    /// One line without its line ending. `Ok(Some)` when it was the last line of a reply.
    fn parse_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let code = match line {
            [a @ b'2'..=b'5', b, c, ..] if b.is_ascii_digit() && c.is_ascii_digit() => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(ReplyError::BadCode),
        };
        let (last, mut text) = match line.get(3) {
            None => (true, &line[3..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(ReplyError::BadSeparator),
        };
        let mut partial = match self.partial.take() {
            Some(p) if p.code != code => {
                return Err(ReplyError::MismatchedCode {
                    expected: p.code,
                    found: code,
                });
            }
            Some(p) => p,
            None => {
                // The first line decides whether the reply carries an enhanced code.
                let class = (code / 100) as u8;
                let enhanced = match EnhancedCode::parse_prefix(text) {
                    Some((e, _)) if e.class == class => Some(e),
                    _ => None,
                };
                PartialReply {
                    code,
                    enhanced,
                    lines: Vec::new(),
                }
            }
        };
        if let Some(e) = partial.enhanced
            && let Some((found, len)) = EnhancedCode::parse_prefix(text)
            && found == e
        {
            text = &text[len..];
            if let [b' ', rest @ ..] = text {
                text = rest;
            }
        }
        let mut text = String::from_utf8_lossy(text).into_owned();
        if text.contains('\r') {
            text = text.replace('\r', " ");
        }
        partial.lines.push(text);
        if partial.lines.len() > MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        if last {
            Ok(Some(Reply {
                code: partial.code,
                enhanced: partial.enhanced,
                lines: partial.lines,
            }))
        } else {
            self.partial = Some(partial);
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        let mut p = ReplyParser::new(512);
        p.push(bytes);
        std::iter::from_fn(|| p.next_reply()).collect()
    }

    fn parse_one(bytes: &[u8]) -> Result<Reply, ReplyError> {
        let mut all = parse_all(bytes);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    // RFC 3463 2: class.subject.detail.
    #[test]
    fn enhanced_code_display_and_parse() {
        let cases: &[(&str, Option<EnhancedCode>)] = &[
            ("2.1.0", Some(EnhancedCode::new(2, 1, 0))),
            ("5.7.11", Some(EnhancedCode::new(5, 7, 11))),
            ("4.999.999", Some(EnhancedCode::new(4, 999, 999))),
            ("3.1.0", None),
            ("2.1000.0", None),
            ("2.1", None),
            ("2..0", None),
            ("2.1.0 ", None),
            ("x.1.0", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<EnhancedCode>().ok(), *want, "{text}");
            if let Some(code) = want {
                assert_eq!(code.to_string(), *text);
            }
        }
    }

    // RFC 5321 4.2 and RFC 2034 3: formatting.
    #[test]
    fn format_single_and_multi() {
        let cases: &[(Reply, bool, &str)] = &[
            (Reply::ok(), true, "250 2.0.0 OK\r\n"),
            (Reply::ok(), false, "250 OK\r\n"),
            (
                Reply::greeting("mx.example"),
                true,
                "220 mx.example ESMTP yizhan\r\n",
            ),
            (
                Reply::start_data(),
                true,
                "354 End data with <CR><LF>.<CR><LF>\r\n",
            ),
            (Reply::auth_challenge(""), true, "334 \r\n"),
            (
                Reply::new(250, EnhancedCode::parse_prefix(b"2.0.0").map(|x| x.0), ""),
                true,
                "250 2.0.0\r\n",
            ),
            (
                Reply::multi(
                    250,
                    enh(2, 1, 5),
                    vec!["a".into(), String::new(), "c".into()],
                ),
                true,
                "250-2.1.5 a\r\n250-2.1.5\r\n250 2.1.5 c\r\n",
            ),
            (
                Reply::multi(
                    250,
                    enh(2, 1, 5),
                    vec!["a".into(), String::new(), "c".into()],
                ),
                false,
                "250-a\r\n250-\r\n250 c\r\n",
            ),
            (
                Reply::ehlo_ok("mx", "client", &["PIPELINING".into(), "8BITMIME".into()]),
                true,
                "250-mx Hello client\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            ),
            (
                Reply::new(500, None, "a\r\nb\rc\nd"),
                false,
                "500 a  b c d\r\n",
            ),
            (
                Reply {
                    code: 250,
                    enhanced: None,
                    lines: vec![],
                },
                false,
                "250 \r\n",
            ),
            (
                Reply {
                    code: 250,
                    enhanced: None,
                    lines: vec!["x\r\n250 y".into()],
                },
                false,
                "250 x  250 y\r\n",
            ),
        ];
        for (reply, enhanced, want) in cases {
            assert_eq!(
                String::from_utf8_lossy(&reply.to_bytes(*enhanced)),
                *want,
                "{reply:?}"
            );
        }
    }

    // RFC 5321 4.5.3.1.5: 512 octets per reply line, CRLF included.
    #[test]
    fn format_truncates_to_512() {
        for enhanced in [false, true] {
            for text in ["x".repeat(600), "é".repeat(300), "x".repeat(505)] {
                let reply = Reply::multi(550, enh(5, 1, 1), vec![text.clone(), text.clone()]);
                let bytes = reply.to_bytes(enhanced);
                for line in bytes.split_inclusive(|b| *b == b'\n') {
                    assert!(line.len() <= 512, "{}", line.len());
                    assert!(line.ends_with(b"\r\n"));
                    assert!(std::str::from_utf8(line).is_ok());
                }
            }
        }
        let exact = Reply::new(250, None, "x".repeat(506));
        assert_eq!(exact.to_bytes(false).len(), 512);
        let over = Reply::new(250, None, "x".repeat(507));
        assert_eq!(over.to_bytes(false).len(), 512);
    }

    #[test]
    fn classes() {
        let r = |code| Reply::new(code, None, "");
        assert!(r(250).is_positive() && !r(250).is_transient());
        assert!(r(354).is_intermediate() && r(334).is_intermediate());
        assert!(r(421).is_transient() && !r(421).is_permanent());
        assert!(r(554).is_permanent() && !r(554).is_positive());
        assert_eq!(
            Reply::multi(250, None, vec!["a".into(), "b".into()]).text(),
            "a b"
        );
    }

    // RFC 5321 4.2: parsing, including a bare code with no text.
    #[test]
    fn parse_cases() {
        let e = |c, s, d| Some(EnhancedCode::new(c, s, d));
        let cases: &[(&str, u16, Option<EnhancedCode>, &[&str])] = &[
            ("250 OK\r\n", 250, None, &["OK"]),
            ("250\r\n", 250, None, &[""]),
            ("250 \r\n", 250, None, &[""]),
            ("250 2.0.0 OK\r\n", 250, e(2, 0, 0), &["OK"]),
            ("250 2.0.0\r\n", 250, e(2, 0, 0), &[""]),
            ("250 2.0.0x OK\r\n", 250, None, &["2.0.0x OK"]),
            // Class must match the code's first digit (RFC 3463 2).
            ("550 2.0.0 OK\r\n", 550, None, &["2.0.0 OK"]),
            ("354 2.0.0 go\r\n", 354, None, &["2.0.0 go"]),
            ("250-a\r\n250-b\r\n250 c\r\n", 250, None, &["a", "b", "c"]),
            (
                "250-2.1.5 a\r\n250-2.1.5 b\r\n250 2.1.5 c\r\n",
                250,
                e(2, 1, 5),
                &["a", "b", "c"],
            ),
            // A later line with another code keeps it as text.
            (
                "250-2.1.5 a\r\n250 2.1.0 c\r\n",
                250,
                e(2, 1, 5),
                &["a", "2.1.0 c"],
            ),
            ("250-\r\n250\r\n", 250, None, &["", ""]),
            // Bare LF accepted as a line end; stray CR becomes a space.
            ("250-a\n250 b\r\n", 250, None, &["a", "b"]),
            ("250 a\rb\r\n", 250, None, &["a b"]),
            ("220 mx ESMTP\r\n", 220, None, &["mx ESMTP"]),
        ];
        for (input, code, enhanced, lines) in cases {
            let reply = parse_one(input.as_bytes()).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(reply.code, *code, "{input:?}");
            assert_eq!(reply.enhanced, *enhanced, "{input:?}");
            assert_eq!(reply.lines, *lines, "{input:?}");
        }
    }

    #[test]
    fn parse_malformed() {
        let cases: &[(&str, ReplyError)] = &[
            (
                "250-a\r\n251 b\r\n",
                ReplyError::MismatchedCode {
                    expected: 250,
                    found: 251,
                },
            ),
            ("25a OK\r\n", ReplyError::BadCode),
            ("OK\r\n", ReplyError::BadCode),
            ("25\r\n", ReplyError::BadCode),
            ("\r\n", ReplyError::BadCode),
            ("150 OK\r\n", ReplyError::BadCode),
            ("650 OK\r\n", ReplyError::BadCode),
            ("250OK\r\n", ReplyError::BadSeparator),
            ("2500 OK\r\n", ReplyError::BadSeparator),
        ];
        for (input, want) in cases {
            let got = parse_all(input.as_bytes());
            assert_eq!(got.first(), Some(&Err(want.clone())), "{input:?}");
        }
    }

    #[test]
    fn parse_recovers_after_error() {
        let got = parse_all(b"250-a\r\n251 b\r\n220 ok\r\n");
        assert_eq!(got.len(), 2);
        assert!(got[0].is_err());
        assert_eq!(got[1], Ok(Reply::new(220, None, "ok")));
    }

    // Over-long lines are discarded, reported once, and parsing resumes (RFC 5321 4.5.3.1.5).
    #[test]
    fn parse_too_long() {
        let ok = format!("250 {}\r\n", "x".repeat(506));
        assert_eq!(ok.len(), 512);
        assert_eq!(parse_one(ok.as_bytes()).map(|r| r.lines[0].len()), Ok(506));
        let long = format!("250 {}\r\n220 ok\r\n", "x".repeat(507));
        assert_eq!(
            parse_all(long.as_bytes()),
            vec![
                Err(ReplyError::TooLong(512)),
                Ok(Reply::new(220, None, "ok"))
            ]
        );

        // Fed in pieces without a line end: the error comes as soon as the limit is passed and
        // memory stays bounded.
        let mut p = ReplyParser::new(512);
        p.push(b"250 ");
        assert_eq!(p.next_reply(), None);
        for _ in 0..100 {
            p.push(&[b'x'; 100]);
            if let Some(r) = p.next_reply() {
                assert_eq!(r, Err(ReplyError::TooLong(512)));
            }
            assert!(p.buf.len() <= 600);
        }
        p.push(b"xx\r\n221 bye\r\n");
        assert_eq!(p.next_reply(), Some(Ok(Reply::new(221, None, "bye"))));
        assert_eq!(p.next_reply(), None);
        assert!(!p.has_buffered());
    }

    #[test]
    fn too_many_lines() {
        let mut input = Vec::new();
        for _ in 0..=MAX_REPLY_LINES {
            input.extend_from_slice(b"250-x\r\n");
        }
        assert_eq!(
            parse_all(&input).first(),
            Some(&Err(ReplyError::TooManyLines))
        );
    }

    #[test]
    fn parser_at_every_split_point() {
        let input =
            b"220 mx ESMTP\r\n250-mx Hello c\r\n250-PIPELINING\r\n250 8BITMIME\r\n250 2.1.0 OK\r\n";
        let whole = parse_all(input);
        assert_eq!(whole.len(), 3);
        for split in 0..=input.len() {
            let mut p = ReplyParser::new(512);
            let mut got = Vec::new();
            for part in [&input[..split], &input[split..]] {
                p.push(part);
                got.extend(std::iter::from_fn(|| p.next_reply()));
            }
            assert_eq!(got, whole, "split at {split}");
        }
        let mut p = ReplyParser::new(512);
        let mut got = Vec::new();
        for b in input {
            p.push(std::slice::from_ref(b));
            got.extend(std::iter::from_fn(|| p.next_reply()));
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn reset_buffer_drops_injected_bytes() {
        // RFC 3207 6 / CVE-2011-0411 style: bytes after the 220 to STARTTLS are discarded.
        let mut p = ReplyParser::new(512);
        p.push(b"220 2.0.0 Ready to start TLS\r\n250 injected\r\n");
        assert_eq!(p.next_reply().map(|r| r.map(|r| r.code)), Some(Ok(220)));
        assert!(p.has_buffered());
        p.reset_buffer();
        assert!(!p.has_buffered());
        assert_eq!(p.next_reply(), None);
    }

    // Every canned reply is well-formed and parses back to itself.
    #[test]
    fn canned_replies_round_trip() {
        let err = CommandError::Address {
            sender: true,
            source: crate::address::AddressError::MissingAt,
        };
        let replies = vec![
            Reply::greeting("h"),
            Reply::closing("h", 0, 0),
            Reply::closing("h", 2, 48213),
            Reply::shutting_down("h"),
            Reply::too_many_connections("h"),
            Reply::timeout("h"),
            Reply::too_many_errors("h"),
            Reply::early_talker("h"),
            Reply::helo_ok("h"),
            Reply::ehlo_ok("h", "p", &["SIZE 10".to_string(), "PIPELINING".to_string()]),
            Reply::ok(),
            Reply::noop_ok(),
            Reply::reset_ok(),
            Reply::sender_ok(),
            Reply::nested_mail(),
            Reply::size_exceeds_limit(10),
            Reply::needs_smtputf8(),
            Reply::recipient_ok(),
            Reply::will_forward("<a@b>"),
            Reply::user_not_local("<a@b>"),
            Reply::too_many_recipients(),
            Reply::no_such_user("a@b"),
            Reply::relay_denied("a@b"),
            Reply::mailbox_unavailable_temp("a@b"),
            Reply::user_not_active("a@b"),
            Reply::mailbox_name_invalid("a@b"),
            Reply::start_data(),
            Reply::queued("id"),
            Reply::bdat_chunk_ok(5),
            Reply::message_too_big(5),
            Reply::bare_line_ending(),
            Reply::binarymime_needs_bdat(),
            Reply::mixed_data_bdat(),
            Reply::no_valid_recipients(),
            Reply::transaction_failed("x"),
            Reply::too_many_hops(100),
            Reply::rate_limited("h", "connections"),
            Reply::verify_rate_limited(),
            Reply::session_limit("h", "time"),
            Reply::need_helo(),
            Reply::need_mail(),
            Reply::need_rcpt(),
            Reply::unknown_command(),
            Reply::line_too_long(),
            Reply::syntax("x"),
            Reply::not_implemented("TURN"),
            Reply::parameter_not_implemented("FOO"),
            Reply::parameter_unsupported("FOO"),
            Reply::help_general(&[
                "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN",
            ]),
            Reply::help_topic("MAIL FROM:<reverse-path>"),
            Reply::help_not_offered("TURN", "TURN"),
            Reply::disabled("EXPN"),
            Reply::needs_ehlo("BDAT"),
            Reply::help_unknown("x"),
            Reply::vrfy_cannot_verify(),
            Reply::vrfy_user("a@b", Some("A B")),
            Reply::expn_members(&["<a@b>".to_string(), "<c@d>".to_string()]),
            Reply::no_such_list("l"),
            Reply::ambiguous_user("a"),
            Reply::auth_challenge("VXNlcm5hbWU6"),
            Reply::auth_ok(),
            Reply::auth_failed(),
            Reply::auth_cancelled(),
            Reply::auth_bad_base64(),
            Reply::auth_line_too_long(),
            Reply::auth_mechanism_unknown(),
            Reply::auth_already(),
            Reply::auth_required(),
            Reply::sender_not_owned("a@b"),
            Reply::auth_needs_tls(),
            Reply::auth_in_transaction(),
            Reply::auth_temp_failure(),
            Reply::auth_too_many_failures("h"),
            Reply::starttls_ready(),
            Reply::tls_already_active(),
            Reply::tls_unavailable(),
            Reply::starttls_required(),
            Reply::turn_refused(),
            Reply::turn_needs_auth(),
            Reply::turn_ok(),
            Reply::etrn_started("d"),
            Reply::etrn_no_messages("d"),
            Reply::etrn_refused("d"),
            Reply::etrn_not_allowed("d"),
            Reply::local_error(),
            Reply::insufficient_storage(),
            err.reply(),
        ];
        for reply in replies {
            assert!((200..600).contains(&reply.code), "{reply:?}");
            if let Some(e) = reply.enhanced {
                assert_eq!(u16::from(e.class), reply.code / 100, "{reply:?}");
            }
            assert_eq!(parse_one(&reply.to_bytes(true)), Ok(reply.clone()));
        }
    }

    // RFC 5321 4.1.1.8: every verb has a HELP topic.
    #[test]
    fn help_for_every_verb() {
        for verb in [
            "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP", "NOOP",
            "QUIT", "SEND", "SOML", "SAML", "TURN", "ETRN", "STARTTLS", "AUTH",
        ] {
            let syntax = Reply::help_syntax(&verb.to_ascii_lowercase()).expect(verb);
            assert!(syntax.starts_with(verb), "{verb}");
        }
        assert!(Reply::help_syntax("FOO").is_none());
        let general = Reply::help_general(&["HELO", "QUIT"]);
        assert_eq!(general.code, 214);
        assert!(general.lines.iter().any(|l| l.contains("HELO QUIT")));
    }

    #[test]
    fn command_error_replies() {
        use crate::address::AddressError;
        let cases: &[(CommandError, u16, EnhancedCode)] = &[
            (
                CommandError::UnknownCommand,
                500,
                EnhancedCode::new(5, 5, 1),
            ),
            (
                CommandError::InvalidCharacters,
                500,
                EnhancedCode::new(5, 5, 2),
            ),
            (CommandError::Syntax("x"), 501, EnhancedCode::new(5, 5, 4)),
            (
                CommandError::Address {
                    sender: true,
                    source: AddressError::Empty,
                },
                501,
                EnhancedCode::new(5, 1, 7),
            ),
            (
                CommandError::Address {
                    sender: false,
                    source: AddressError::Empty,
                },
                501,
                EnhancedCode::new(5, 1, 3),
            ),
            (
                CommandError::UnknownParameter("FOO".into()),
                555,
                EnhancedCode::new(5, 5, 4),
            ),
            (
                CommandError::BadParameter("SIZE".into()),
                501,
                EnhancedCode::new(5, 5, 4),
            ),
        ];
        for (err, code, enhanced) in cases {
            let reply = err.reply();
            assert_eq!(
                (reply.code, reply.enhanced),
                (*code, Some(*enhanced)),
                "{err:?}"
            );
        }
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let code = (2u16..=5, 0u16..=5, 0u16..=9).prop_map(|(a, b, c)| a * 100 + b * 10 + c);
        // Text that does not start with a digit, so it cannot look like an enhanced code.
        let line = "([a-zA-Z ][ -~é中]{0,60})?";
        (
            code,
            any::<bool>(),
            0u16..1000,
            0u16..1000,
            prop::collection::vec(line, 1..6),
        )
            .prop_map(|(code, with_enh, s, d, lines)| {
                let class = (code / 100) as u8;
                let enhanced = (with_enh && class != 3).then(|| EnhancedCode::new(class, s, d));
                Reply::multi(code, enhanced, lines)
            })
    }

    proptest! {
        #[test]
        fn round_trip(reply in arb_reply()) {
            prop_assert_eq!(parse_one(&reply.to_bytes(true)), Ok(reply.clone()));
            let plain = Reply { enhanced: None, ..reply.clone() };
            prop_assert_eq!(parse_one(&reply.to_bytes(false)), Ok(plain));
        }

        #[test]
        fn round_trip_split(reply in arb_reply(), split in any::<prop::sample::Index>()) {
            let bytes = reply.to_bytes(true);
            let at = split.index(bytes.len() + 1);
            let mut p = ReplyParser::new(512);
            p.push(&bytes[..at]);
            let first = p.next_reply();
            p.push(&bytes[at..]);
            let got = first.or_else(|| p.next_reply());
            prop_assert_eq!(got, Some(Ok(reply)));
        }

        #[test]
        fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut p = ReplyParser::new(512);
            p.push(&bytes);
            while let Some(r) = p.next_reply() {
                if let Ok(reply) = r {
                    prop_assert!(reply.lines.iter().all(|l| !l.contains(['\r', '\n'])));
                }
            }
        }
    }
}
