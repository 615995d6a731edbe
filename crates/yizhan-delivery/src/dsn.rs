//! Delivery status notifications: RFC 3464 reports, and the RFC 3461 parameters that ask for
//! them.
//!
//! | RFC | what |
//! | --- | --- |
//! | 3464 2, 6462 | `multipart/report; report-type=delivery-status`: a human part, the `message/delivery-status` part, the original message or its headers |
//! | 3464 2.2 | per-message fields: `Reporting-MTA`, `Original-Envelope-Id`, `Arrival-Date` |
//! | 3464 2.3 | per-recipient fields: `Final-Recipient`, `Original-Recipient`, `Action`, `Status`, `Remote-MTA`, `Diagnostic-Code`, `Last-Attempt-Date`, `Will-Retry-Until` |
//! | 3461 4.1 | `NOTIFY`: NEVER, or any of SUCCESS, FAILURE, DELAY; absent means FAILURE,DELAY |
//! | 3461 4.2, 4.3, 4.4 | `ORCPT` becomes `Original-Recipient`; `RET=HDRS` returns the headers only (`text/rfc822-headers`); `ENVID` is echoed |
//! | 5321 4.5.5, 3834 | reports go out with a null reverse-path and `Auto-Submitted: auto-replied`; a message with a null reverse-path never gets one |
//! | 6533 3 | the `utf-8` address type: a non-ASCII Final-Recipient or Original-Recipient, and an ORCPT given as `utf-8` (its `\x{HEXPOINT}` decoded) |
//! | 6533 6.1, 6.3, 6.4 | a report with UTF-8 in its addresses or fields, to a UTF-8 sender, or about an original with a UTF-8 header section is `report-type=global-delivery-status` with `message/global-delivery-status`, and returns `message/global` or `message/global-headers` when that header section is UTF-8 |
//!
//! The MIME structure is built with mail-builder (every part with an explicit transfer
//! encoding, so the original is attached byte for byte: an 8-bit original stays 8-bit, never
//! re-encoded); the delivery-status fields are RFC 3464's own syntax, written here. The tests
//! parse the result back with mail-parser.
//!
//! `NOTIFY` and `ORCPT` come as the protocol parsed them (`yizhan-proto` types, stored so in
//! the spool); [`NotifyOn::of`] says which reports a recipient asked for.

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use yizhan_proto::command::Notify;

/// The `Action` of one recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Could not be delivered.
    Failed,
    /// Not delivered yet; still trying.
    Delayed,
    /// Delivered into the mailbox.
    Delivered,
    /// Passed on to a system that does not send DSNs.
    Relayed,
    /// An alias or list, delivered to several addresses, which will not report success
    /// themselves (RFC 3461 6.2.7.3, RFC 3464 2.3.3).
    Expanded,
}

impl Action {
    /// The field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// Which notifications a recipient asked for (RFC 3461 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyOn {
    /// SUCCESS
    pub success: bool,
    /// FAILURE
    pub failure: bool,
    /// DELAY
    pub delay: bool,
}

impl NotifyOn {
    /// NOTIFY absent: failures and delays (RFC 3461 4.1 leaves DELAY to the implementation;
    /// like Postfix and Exim we send it).
    pub const DEFAULT: NotifyOn = NotifyOn {
        success: false,
        failure: true,
        delay: true,
    };

    /// Whether a report with this action is wanted.
    pub fn wants(self, action: Action) -> bool {
        match action {
            Action::Failed => self.failure,
            Action::Delayed => self.delay,
            Action::Delivered | Action::Relayed | Action::Expanded => self.success,
        }
    }
}

impl NotifyOn {
    /// What a recipient's `NOTIFY=` asks for; none given is the default (RFC 3461 4.1).
    pub fn of(notify: Option<&Notify>) -> NotifyOn {
        match notify {
            None => NotifyOn::DEFAULT,
            Some(Notify::Never) => NotifyOn {
                success: false,
                failure: false,
                delay: false,
            },
            Some(&Notify::On {
                success,
                failure,
                delay,
            }) => NotifyOn {
                success,
                failure,
                delay,
            },
        }
    }
}

/// What to attach of the original message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// The whole message (`message/rfc822`).
    Full,
    /// Its header section (`text/rfc822-headers`).
    Headers,
}

/// One recipient's part of a report (RFC 3464 2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The address delivery was attempted to (`Final-Recipient: rfc822; ...`).
    pub final_recipient: String,
    /// `ORCPT` as stored (`rfc822;addr`), for `Original-Recipient`.
    pub original_recipient: Option<String>,
    /// What happened.
    pub action: Action,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The remote host that answered.
    pub remote_mta: Option<String>,
    /// The remote reply, one line (`Diagnostic-Code: smtp; ...`).
    pub diagnostic: Option<String>,
    /// A sentence for the human part.
    pub text: String,
    /// When the last attempt was made (Unix seconds).
    pub last_attempt: Option<i64>,
    /// For `delayed`: when we give up (Unix seconds).
    pub will_retry_until: Option<i64>,
}

/// A delivery status notification about one message.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Our host name (`Reporting-MTA: dns; ...`, the From address's domain).
    pub reporting_mta: &'a str,
    /// Whom the report goes to: the original reverse-path (never empty).
    pub to: &'a str,
    /// The original `ENVID` (RFC 3461 4.4).
    pub envid: Option<&'a str>,
    /// When the original arrived (Unix seconds).
    pub arrival: i64,
    /// Now (Unix seconds), for `Date:`.
    pub date: i64,
    /// A unique id for `Message-ID:` (e.g. the original's queue id and a suffix).
    pub unique: &'a str,
    /// The recipients reported on (at least one).
    pub recipients: Vec<RecipientReport>,
    /// The original message (as spooled: our `Received:` first).
    pub original: &'a [u8],
    /// How much of it to attach.
    pub ret: Return,
}

/// The header section of a message, up to and including the empty line (or all of it when
/// there is no body).
pub fn header_section(message: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < message.len() {
        let end = message[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |k| i + k + 1);
        let line = &message[i..end];
        if line == b"\r\n" || line == b"\n" {
            return &message[..end];
        }
        i = end;
    }
    message
}

impl Report<'_> {
    /// The description of the returned part: undelivered only in a failure report.
    fn original_description(&self) -> &'static str {
        if self.recipients.iter().any(|r| r.action == Action::Failed) {
            "Undelivered message"
        } else {
            "Original message"
        }
    }

    /// The subject line for this report.
    fn subject(&self) -> &'static str {
        if self.recipients.iter().any(|r| r.action == Action::Failed) {
            "Undelivered Mail Returned to Sender"
        } else if self.recipients.iter().any(|r| r.action == Action::Delayed) {
            "Delayed Mail (still being retried)"
        } else {
            "Successful Mail Delivery Report"
        }
    }

    /// Whether the report has 8-bit content (so it needs 8BITMIME to be relayed).
    pub fn is_eight_bit(bytes: &[u8]) -> bool {
        bytes.iter().any(|b| *b >= 0x80)
    }

    /// Whether the report needs SMTPUTF8 to be relayed (RFC 6531 3.4): its own header section
    /// has UTF-8 in it (a `To:` with a UTF-8 address). The global parts of a report
    /// (`message/global-delivery-status`, `message/global`, `message/global-headers`) are body
    /// parts with an 8-bit transfer encoding: they need 8BITMIME ([`Report::is_eight_bit`]),
    /// not SMTPUTF8 (RFC 6532 3.7, RFC 6533 6).
    pub fn needs_smtputf8(bytes: &[u8]) -> bool {
        !header_section(bytes).is_ascii()
    }

    /// The whole report as a message (CRLF line ends), ready to be spooled with a null
    /// reverse-path and [`Report::to`] as its recipient.
    pub fn build(&self) -> Vec<u8> {
        let attached = match self.ret {
            Return::Full => self.original,
            Return::Headers => header_section(self.original),
        };
        let boundary = boundary(self.unique, attached);
        let mta = clean(self.reporting_mta);
        let (status, utf8_address) = self.status_fields(&mta);
        // RFC 6533: a report with an address of the utf-8 type, any other UTF-8 of its own
        // (a diagnostic, an envelope id), to a UTF-8 sender, or about a message whose header
        // section is UTF-8 (one that needed SMTPUTF8) is a global one.
        let utf8_original = !header_section(attached).is_ascii();
        let global = utf8_address || !status.is_ascii() || !self.to.is_ascii() || utf8_original;
        let report_type = if global {
            "global-delivery-status"
        } else {
            "delivery-status"
        };
        let human = self.human_text();
        let seven_or_eight = |bytes: &[u8]| if bytes.is_ascii() { "7bit" } else { "8bit" };
        // Every part gets an explicit transfer encoding, so mail-builder writes its body as
        // given: the original byte for byte (8-bit stays 8-bit, never re-encoded).
        let notification = MimePart::new(
            ContentType::new("text/plain").attribute("charset", "utf-8"),
            BodyPart::Binary(human.as_bytes().into()),
        )
        .transfer_encoding(seven_or_eight(human.as_bytes()))
        .header("Content-Description", Raw::new("Notification"));
        // For machines (RFC 3464 2.1; RFC 6533 6.1 when global, 8-bit).
        let delivery_status = MimePart::new(
            ContentType::new(format!("message/{report_type}")),
            BodyPart::Binary(status.as_bytes().into()),
        )
        .transfer_encoding(seven_or_eight(status.as_bytes()))
        .header("Content-Description", Raw::new("Delivery report"));
        // The original (RFC 3464 2: message/rfc822 or text/rfc822-headers; RFC 6533 6.3, 6.4:
        // message/global or message/global-headers when its header section is UTF-8).
        let kind = match (self.ret, utf8_original) {
            (Return::Full, false) => "message/rfc822",
            (Return::Full, true) => "message/global",
            (Return::Headers, false) => "text/rfc822-headers",
            (Return::Headers, true) => "message/global-headers",
        };
        let mut original = attached.to_vec();
        if !original.ends_with(b"\n") {
            original.extend_from_slice(b"\r\n");
        }
        let returned = MimePart::new(ContentType::new(kind), BodyPart::Binary(original.into()))
            .transfer_encoding(seven_or_eight(attached))
            .header("Content-Description", Raw::new(self.original_description()));
        let report = MimePart::new(
            ContentType::new("multipart/report")
                .attribute("report-type", report_type)
                .attribute("boundary", boundary),
            BodyPart::Multipart(vec![notification, delivery_status, returned]),
        );
        MessageBuilder::new()
            .header(
                "From",
                Raw::new(format!("Mail Delivery System <MAILER-DAEMON@{mta}>")),
            )
            .header("To", Raw::new(format!("<{}>", clean(self.to))))
            .header("Subject", Raw::new(self.subject()))
            .header("Date", Raw::new(rfc2822(self.date)))
            .header(
                "Message-ID",
                Raw::new(format!("<{}.dsn@{mta}>", clean(self.unique))),
            )
            .header("Auto-Submitted", Raw::new("auto-replied"))
            .header("MIME-Version", Raw::new("1.0"))
            .body(report)
            .write_to_vec()
            .unwrap_or_default()
    }

    /// The fields of the status part (RFC 3464 2.2, 2.3), and whether an address among them
    /// has the `utf-8` type (RFC 6533 3).
    fn status_fields(&self, mta: &str) -> (String, bool) {
        let mut out = String::new();
        let mut utf8_address = false;
        let mut h = |name: &str, value: &str| push_field(&mut out, name, value);
        h("Reporting-MTA", &format!("dns; {mta}"));
        if let Some(envid) = self.envid {
            h("Original-Envelope-Id", &clean(envid));
        }
        h("Arrival-Date", &rfc2822(self.arrival));
        for r in &self.recipients {
            out.push_str("\r\n");
            let mut h = |name: &str, value: &str| push_field(&mut out, name, value);
            let (value, utf8) = address_field("rfc822", &r.final_recipient);
            utf8_address |= utf8;
            h("Final-Recipient", &value);
            if let Some((kind, addr)) = r.original_recipient.as_deref().and_then(orcpt_field) {
                let (value, utf8) = address_field(kind, &addr);
                utf8_address |= utf8;
                h("Original-Recipient", &value);
            }
            h("Action", r.action.as_str());
            h("Status", &clean(&r.status));
            if let Some(mta) = &r.remote_mta {
                h("Remote-MTA", &format!("dns; {}", clean(mta)));
            }
            if let Some(diag) = &r.diagnostic {
                h("Diagnostic-Code", &format!("smtp; {}", clean(diag)));
            }
            if let Some(t) = r.last_attempt {
                h("Last-Attempt-Date", &rfc2822(t));
            }
            if let Some(t) = r.will_retry_until {
                h("Will-Retry-Until", &rfc2822(t));
            }
        }
        (out, utf8_address)
    }

    fn human_text(&self) -> String {
        let mut t = format!(
            "This is the mail system at host {}.\r\n\r\n",
            clean(self.reporting_mta)
        );
        let failed: Vec<_> = self
            .recipients
            .iter()
            .filter(|r| r.action == Action::Failed)
            .collect();
        let delayed: Vec<_> = self
            .recipients
            .iter()
            .filter(|r| r.action == Action::Delayed)
            .collect();
        let done: Vec<_> = self
            .recipients
            .iter()
            .filter(|r| {
                matches!(
                    r.action,
                    Action::Delivered | Action::Relayed | Action::Expanded
                )
            })
            .collect();
        if !failed.is_empty() {
            t.push_str(
                "Your message could not be delivered to the recipients below. \
                 This is a permanent error; it will not be retried.\r\n\r\n",
            );
            for r in failed {
                t.push_str(&format!(
                    "<{}>: {}\r\n",
                    clean(&r.final_recipient),
                    clean(&r.text)
                ));
            }
            t.push_str("\r\n");
        }
        if !delayed.is_empty() {
            t.push_str(
                "Your message has not been delivered yet to the recipients below. \
                 It is still being retried; you need not send it again.\r\n\r\n",
            );
            for r in delayed {
                t.push_str(&format!(
                    "<{}>: {}\r\n",
                    clean(&r.final_recipient),
                    clean(&r.text)
                ));
            }
            t.push_str("\r\n");
        }
        if !done.is_empty() {
            t.push_str("Your message was delivered to the recipients below.\r\n\r\n");
            for r in done {
                t.push_str(&format!(
                    "<{}>: {}\r\n",
                    clean(&r.final_recipient),
                    r.action.as_str()
                ));
            }
            t.push_str("\r\n");
        }
        t
    }
}

/// `type; address` for Final-Recipient and Original-Recipient, and whether the type is
/// `utf-8`: an address that is not ASCII (or was given with the utf-8 type) is of type `utf-8`
/// (RFC 6533 3), any other keeps `kind`.
fn address_field(kind: &str, address: &str) -> (String, bool) {
    let utf8 = !address.is_ascii() || kind.eq_ignore_ascii_case("utf-8");
    let kind = if utf8 { "utf-8" } else { kind };
    (format!("{}; {}", clean(kind), clean(address)), utf8)
}

/// An ORCPT as stored (`type;address`, the xtext already decoded; RFC 3461 4.2) as the type
/// and the address to show in Original-Recipient. An address of the `utf-8` type is in the
/// utf-8-addr-xtext or utf-8-addr-unitext form of RFC 6533 3, where a character may be written
/// `\x{HEXPOINT}`: it is shown decoded (utf-8-address), or as given when it does not decode.
fn orcpt_field(orcpt: &str) -> Option<(&str, String)> {
    let (kind, addr) = orcpt.split_once(';')?;
    let (kind, addr) = (kind.trim(), addr.trim());
    let shown = if kind.eq_ignore_ascii_case("utf-8") {
        utf8_addr_decode(addr).unwrap_or_else(|| addr.to_owned())
    } else {
        addr.to_owned()
    };
    Some((kind, shown))
}

/// Decodes every `\x{HEXPOINT}` (RFC 6533 3, EmbeddedUnicodeChar) in `s`. `None` when a
/// backslash does not start a well-formed one (2 to 6 hex digits, no leading zero beyond two
/// digits, no surrogate, at most U+10FFFF), or one names a control character: the address is
/// then better shown as it was given.
fn utf8_addr_decode(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let tail = rest[i..].strip_prefix("\\x{")?;
        let end = tail.find('}')?;
        let hex = &tail[..end];
        let minimal = match hex.len() {
            2 => true,
            3..=6 => !hex.starts_with('0'),
            _ => false,
        };
        if !minimal || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let c = u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .filter(|c| !c.is_control())?;
        out.push(c);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// A field, folded at spaces so that lines stay under 78 characters where possible.
fn push_field(out: &mut String, name: &str, value: &str) {
    let mut line_len = name.len() + 1;
    out.push_str(name);
    out.push(':');
    for (i, word) in value.split(' ').enumerate() {
        if i > 0 && line_len + 1 + word.len() > 78 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
}

/// No control characters (no CR/LF injection into fields); runs of spaces kept single.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// A boundary that does not occur in the attached content.
fn boundary(unique: &str, content: &[u8]) -> String {
    let base: String = unique
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    let mut n = 0u32;
    loop {
        let b = format!("=_yizhan_dsn_{base}_{n}");
        if !content.windows(b.len()).any(|w| w == b.as_bytes()) {
            return b;
        }
        n += 1;
    }
}

/// An RFC 5322 date in UTC.
pub fn rfc2822(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

#[cfg(test)]
mod tests {
    use mail_parser::{MessageParser, MimeHeaders, PartType};

    use super::*;

    const ORIGINAL: &[u8] = b"Received: from client.example by mx.here.example\r\n\
        From: Sender <sender@client.example>\r\n\
        Subject: hello\r\n\
        Message-ID: <orig@client.example>\r\n\
        \r\n\
        Body line one.\r\n\
        --=_yizhan_dsn_q1_0\r\n";

    fn failed(addr: &str) -> RecipientReport {
        RecipientReport {
            final_recipient: addr.into(),
            original_recipient: Some(format!("rfc822;{addr}")),
            action: Action::Failed,
            status: "5.1.1".into(),
            remote_mta: Some("mx.far.example".into()),
            diagnostic: Some(
                "550 5.1.1 <nobody@far.example>: no such user\r\nBcc: injected".into(),
            ),
            text: "mx.far.example said: 550 5.1.1 no such user".into(),
            last_attempt: Some(1_700_000_100),
            will_retry_until: None,
        }
    }

    fn report(recipients: Vec<RecipientReport>, ret: Return) -> Vec<u8> {
        Report {
            reporting_mta: "mx.here.example",
            to: "sender@client.example",
            envid: Some("ENV-42"),
            arrival: 1_700_000_000,
            date: 1_700_000_200,
            unique: "q1",
            recipients,
            original: ORIGINAL,
            ret,
        }
        .build()
    }

    /// The `message/delivery-status` part as groups of (name, value), per RFC 3464 2.1.
    fn status_groups(raw: &str) -> Vec<Vec<(String, String)>> {
        let unfolded = raw.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded
            .split("\r\n\r\n")
            .filter(|g| !g.trim().is_empty())
            .map(|g| {
                g.lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect()
            })
            .collect()
    }

    fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
        group
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn failure_report_parses_back_with_every_field() {
        // RFC 3464 2: multipart/report with three parts.
        let raw = report(
            vec![failed("nobody@far.example"), failed("ghost@far.example")],
            Return::Full,
        );
        let msg = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        // The boundary avoided the one planted in the original.
        assert_ne!(ct.attribute("boundary"), Some("=_yizhan_dsn_q1_0"));
        assert_eq!(msg.parts.len(), 4, "root + 3 parts");
        let human = msg.body_text(0).unwrap();
        assert!(human.contains("<nobody@far.example>: mx.far.example said: 550 5.1.1"));

        let status_part = &msg.parts[2];
        let sct = status_part.content_type().unwrap();
        assert_eq!(
            (sct.ctype(), sct.subtype()),
            ("message", Some("delivery-status"))
        );
        let raw_status = body_text(status_part);
        let groups = status_groups(&raw_status);
        assert_eq!(groups.len(), 3, "per-message + 2 recipients: {raw_status}");
        // RFC 3464 2.2: per-message fields.
        assert_eq!(
            field(&groups[0], "Reporting-MTA"),
            Some("dns; mx.here.example")
        );
        assert_eq!(field(&groups[0], "Original-Envelope-Id"), Some("ENV-42"));
        assert_eq!(
            field(&groups[0], "Arrival-Date"),
            Some("Tue, 14 Nov 2023 22:13:20 +0000")
        );
        // RFC 3464 2.3: per-recipient fields.
        let r = &groups[1];
        assert_eq!(
            field(r, "Final-Recipient"),
            Some("rfc822; nobody@far.example")
        );
        assert_eq!(
            field(r, "Original-Recipient"),
            Some("rfc822; nobody@far.example")
        );
        assert_eq!(field(r, "Action"), Some("failed"));
        assert_eq!(field(r, "Status"), Some("5.1.1"));
        assert_eq!(field(r, "Remote-MTA"), Some("dns; mx.far.example"));
        // The CR LF in the reply did not start a new field.
        assert_eq!(
            field(r, "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 <nobody@far.example>: no such user Bcc: injected")
        );
        assert!(field(r, "Bcc").is_none());
        assert!(field(r, "Last-Attempt-Date").is_some());
        assert_eq!(
            field(&groups[2], "Final-Recipient"),
            Some("rfc822; ghost@far.example")
        );

        // RET=FULL: the original as message/rfc822, byte for byte.
        let orig = &msg.parts[3];
        let oct = orig.content_type().unwrap();
        assert_eq!((oct.ctype(), oct.subtype()), ("message", Some("rfc822")));
        let inner = match &orig.body {
            PartType::Message(m) => m,
            other => panic!("not a message: {other:?}"),
        };
        assert_eq!(inner.subject(), Some("hello"));
        assert!(raw.windows(ORIGINAL.len()).any(|w| w == ORIGINAL));
    }

    /// A report parsed back with mail-parser: its own header, the Content-Type (with the
    /// report-type, if any) and Content-Transfer-Encoding of each part, root first, and the
    /// status part's fields group by group.
    struct Parsed<'a> {
        msg: mail_parser::Message<'a>,
        types: Vec<String>,
        encodings: Vec<Option<String>>,
        groups: Vec<Vec<(String, String)>>,
    }

    fn parse(raw: &[u8]) -> Parsed<'_> {
        let msg = MessageParser::default().parse(raw).expect("parses");
        let types = msg
            .parts
            .iter()
            .map(|p| {
                let ct = p.content_type().unwrap();
                let report = ct
                    .attribute("report-type")
                    .map_or(String::new(), |t| format!(";{t}"));
                format!("{}/{}{report}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        let encodings = msg
            .parts
            .iter()
            .map(|p| p.content_transfer_encoding().map(str::to_owned))
            .collect();
        let groups = status_groups(&body_text(&msg.parts[2]));
        Parsed {
            msg,
            types,
            encodings,
            groups,
        }
    }

    /// The body of a part that is not a message, as text.
    fn body_text(part: &mail_parser::MessagePart<'_>) -> String {
        match &part.body {
            PartType::Text(t) => t.to_string(),
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                String::from_utf8(b.to_vec()).unwrap()
            }
            other => panic!("unexpected body {other:?}"),
        }
    }

    const UTF8_ORIGINAL: &[u8] =
        "From: <用户@例子.example>\r\nSubject: 八月\r\n\r\nbody\r\n".as_bytes();

    fn report_about(to: &str, recipient: RecipientReport, original: &[u8], ret: Return) -> Vec<u8> {
        Report {
            reporting_mta: "mx.here.example",
            to,
            envid: None,
            arrival: 1_700_000_000,
            date: 1_700_000_200,
            unique: "q2",
            recipients: vec![recipient],
            original,
            ret,
        }
        .build()
    }

    /// An all-ASCII report is exactly RFC 3464's, even when the returned body is 8-bit.
    #[test]
    fn an_ascii_report_stays_rfc_3464() {
        let eight_bit_body = b"Subject: hello\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n";
        for (original, eight_bit) in [(ORIGINAL, false), (&eight_bit_body[..], true)] {
            let raw = report_about(
                "sender@client.example",
                failed("nobody@far.example"),
                original,
                Return::Full,
            );
            let p = parse(&raw);
            // mail-parser lists the returned message's own parts after ours: compare ours.
            assert_eq!(
                p.types[..4],
                [
                    "multipart/report;delivery-status",
                    "text/plain",
                    "message/delivery-status",
                    "message/rfc822",
                ]
            );
            assert_eq!(
                p.encodings[2].as_deref(),
                Some("7bit"),
                "the status part is 7-bit"
            );
            let original = if eight_bit { "8bit" } else { "7bit" };
            assert_eq!(p.encodings[3].as_deref(), Some(original));
            let r = &p.groups[1];
            assert_eq!(
                field(r, "Final-Recipient"),
                Some("rfc822; nobody@far.example")
            );
            assert_eq!(
                field(r, "Original-Recipient"),
                Some("rfc822; nobody@far.example")
            );
            assert_eq!(Report::is_eight_bit(&raw), eight_bit);
            assert!(!Report::needs_smtputf8(&raw));
        }
    }

    /// RFC 6533 3, 6.1: a UTF-8 recipient makes the report global, its addresses of the utf-8
    /// type; an ORCPT given as utf-8 is shown decoded. The ASCII original stays message/rfc822.
    #[test]
    fn a_utf8_recipient_gets_a_global_report() {
        let mut r = failed("δοκιμή@far.example");
        // utf-8-addr-xtext (RFC 6533 3), as a client without SMTPUTF8 sends it.
        r.original_recipient = Some("utf-8;\\x{3B4}\\x{3BF}κιμή@far.example".into());
        let raw = report_about("sender@client.example", r, ORIGINAL, Return::Full);
        let p = parse(&raw);
        assert_eq!(
            p.types[..4],
            [
                "multipart/report;global-delivery-status",
                "text/plain",
                "message/global-delivery-status",
                "message/rfc822",
            ]
        );
        assert_eq!(p.encodings[2].as_deref(), Some("8bit"));
        assert_eq!(
            field(&p.groups[0], "Reporting-MTA"),
            Some("dns; mx.here.example")
        );
        let g = &p.groups[1];
        assert_eq!(
            field(g, "Final-Recipient"),
            Some("utf-8; δοκιμή@far.example")
        );
        assert_eq!(
            field(g, "Original-Recipient"),
            Some("utf-8; δοκιμή@far.example")
        );
        assert_eq!(field(g, "Action"), Some("failed"));
        assert_eq!(field(g, "Status"), Some("5.1.1"));
        assert!(p.msg.body_text(0).unwrap().contains("<δοκιμή@far.example>"));
        // Only the status part is UTF-8: 8BITMIME, not SMTPUTF8, to send it on.
        assert!(Report::is_eight_bit(&raw));
        assert!(!Report::needs_smtputf8(&raw));
    }

    /// A UTF-8 sender: the report's own header has the UTF-8 address, so it needs SMTPUTF8,
    /// and is global; the ASCII recipient keeps the rfc822 type.
    #[test]
    fn a_utf8_sender_gets_a_global_report() {
        let raw = report_about(
            "用户@例子.example",
            failed("nobody@far.example"),
            ORIGINAL,
            Return::Full,
        );
        let p = parse(&raw);
        assert_eq!(
            p.types[..4],
            [
                "multipart/report;global-delivery-status",
                "text/plain",
                "message/global-delivery-status",
                "message/rfc822",
            ]
        );
        let to = p.msg.to().and_then(|a| a.first()).and_then(|a| a.address());
        assert_eq!(to, Some("用户@例子.example"));
        let g = &p.groups[1];
        assert_eq!(
            field(g, "Final-Recipient"),
            Some("rfc822; nobody@far.example")
        );
        assert_eq!(
            field(g, "Original-Recipient"),
            Some("rfc822; nobody@far.example")
        );
        assert!(Report::is_eight_bit(&raw));
        assert!(Report::needs_smtputf8(&raw));
    }

    /// RFC 6533 6.3, 6.4: an original whose header section is UTF-8 (it needed SMTPUTF8)
    /// makes the report global, and comes back as message/global when whole, as
    /// message/global-headers when only its header section is returned.
    #[test]
    fn an_original_with_utf8_headers_comes_back_as_message_global() {
        for ret in [Return::Full, Return::Headers] {
            let raw = report_about(
                "sender@client.example",
                failed("nobody@far.example"),
                UTF8_ORIGINAL,
                ret,
            );
            let p = parse(&raw);
            let returned = match ret {
                Return::Full => "message/global",
                Return::Headers => "message/global-headers",
            };
            assert_eq!(
                p.types[..4],
                [
                    "multipart/report;global-delivery-status",
                    "text/plain",
                    "message/global-delivery-status",
                    returned,
                ]
            );
            assert_eq!(p.encodings[3].as_deref(), Some("8bit"));
            assert_eq!(
                field(&p.groups[1], "Final-Recipient"),
                Some("rfc822; nobody@far.example")
            );
            match (&p.msg.parts[3].body, ret) {
                (PartType::Message(inner), Return::Full) => {
                    assert_eq!(inner.subject(), Some("八月"));
                    assert_eq!(inner.body_text(0).as_deref(), Some("body\r\n"));
                }
                (_, Return::Headers) => {
                    let headers = body_text(&p.msg.parts[3]);
                    assert!(headers.contains("Subject: 八月\r\n"), "{headers}");
                    assert!(!headers.contains("body"), "{headers}");
                }
                (other, _) => panic!("not a message: {other:?}"),
            }
            assert!(!Report::needs_smtputf8(&raw));
        }
    }

    /// The report's own data: a UTF-8 reply from the peer cannot go into message/delivery-status
    /// (US-ASCII); the report is global and carries it as it came.
    #[test]
    fn a_utf8_diagnostic_makes_the_report_global() {
        let mut r = failed("nobody@far.example");
        r.diagnostic = Some("550 5.1.1 用户不存在".into());
        let raw = report_about("sender@client.example", r, ORIGINAL, Return::Full);
        let p = parse(&raw);
        assert_eq!(p.types[2], "message/global-delivery-status");
        let g = &p.groups[1];
        assert_eq!(
            field(g, "Diagnostic-Code"),
            Some("smtp; 550 5.1.1 用户不存在")
        );
        assert_eq!(
            field(g, "Final-Recipient"),
            Some("rfc822; nobody@far.example")
        );
    }

    /// RFC 6533 3: `\x{HEXPOINT}` in an ORCPT of the utf-8 type; what does not decode is shown
    /// as given, and other types are never decoded.
    #[test]
    fn orcpt_of_the_utf8_type_is_decoded() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("utf-8;\\x{7528}\\x{6237}@x", Some(("utf-8", "用户@x"))),
            ("UTF-8; a\\x{2B}b@x", Some(("UTF-8", "a+b@x"))),
            ("utf-8;用户@x", Some(("utf-8", "用户@x"))),
            ("utf-8;\\x{1F600}@x", Some(("utf-8", "😀@x"))),
            ("utf-8;\\x{10FFFF}@x", Some(("utf-8", "\u{10FFFF}@x"))),
            // Not well-formed, or not a character to show: as given.
            ("utf-8;\\x{0041}@x", Some(("utf-8", "\\x{0041}@x"))),
            ("utf-8;\\x{D800}@x", Some(("utf-8", "\\x{D800}@x"))),
            ("utf-8;\\x{110000}@x", Some(("utf-8", "\\x{110000}@x"))),
            ("utf-8;\\x{0A}@x", Some(("utf-8", "\\x{0A}@x"))),
            ("utf-8;\\x{}@x", Some(("utf-8", "\\x{}@x"))),
            ("utf-8;\\x{7528@x", Some(("utf-8", "\\x{7528@x"))),
            ("utf-8;\\x{+7528}@x", Some(("utf-8", "\\x{+7528}@x"))),
            ("utf-8;a\\b@x", Some(("utf-8", "a\\b@x"))),
            ("rfc822;\\x{7528}@x", Some(("rfc822", "\\x{7528}@x"))),
            ("no type", None),
        ];
        for (orcpt, want) in cases {
            let got = orcpt_field(orcpt);
            assert_eq!(
                got.as_ref().map(|(k, a)| (*k, a.as_str())),
                *want,
                "{orcpt:?}"
            );
        }
    }

    #[test]
    fn headers_only_and_delay_report() {
        // RFC 3461 4.3: RET=HDRS; RFC 3464 2.3.3 "delayed" with Will-Retry-Until.
        let mut r = failed("slow@far.example");
        r.action = Action::Delayed;
        r.status = "4.4.1".into();
        r.will_retry_until = Some(1_700_432_000);
        r.original_recipient = None;
        let raw = report(vec![r], Return::Headers);
        let msg = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
        let orig = &msg.parts[3];
        assert_eq!(
            orig.content_type().unwrap().subtype(),
            Some("rfc822-headers")
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("Action: delayed\r\n"));
        assert!(text.contains("Will-Retry-Until: "));
        assert!(!text.contains("Original-Recipient"));
        assert!(text.contains("Subject: hello\r\n"));
        assert!(!text.contains("Body line one."));
    }

    #[test]
    fn header_section_stops_at_the_empty_line() {
        let cases: [(&[u8], &[u8]); 3] = [
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n\r\n"),
            (b"A: 1\r\n", b"A: 1\r\n"),
            (b"A: 1\n\nbody", b"A: 1\n\n"),
        ];
        for (message, want) in cases {
            assert_eq!(header_section(message), want);
        }
    }

    #[test]
    fn notify_decides_which_reports_go_out() {
        // RFC 3461 4.1: none given means FAILURE,DELAY; NEVER means none.
        let never = NotifyOn::of(Some(&Notify::Never));
        for action in [Action::Failed, Action::Delayed, Action::Delivered] {
            assert!(!never.wants(action));
        }
        let default = NotifyOn::of(None);
        assert_eq!(default, NotifyOn::DEFAULT);
        assert!(default.wants(Action::Failed) && default.wants(Action::Delayed));
        assert!(!default.wants(Action::Delivered));
        let success = NotifyOn::of(Some(&Notify::On {
            success: true,
            failure: false,
            delay: false,
        }));
        assert!(success.wants(Action::Delivered) && success.wants(Action::Relayed));
        assert!(!success.wants(Action::Failed));
    }
}
