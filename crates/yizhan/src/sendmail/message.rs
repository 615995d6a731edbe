//! The message `sendmail` queues: read from standard input (LF or CRLF, the lone `.`),
//! recipients from the arguments and `-t`, `Bcc:` removed, `From:`, `Date:` and `Message-ID:`
//! added when missing.

use std::io::BufRead;

use yizhan_server::pickup;

use super::{Options, SendmailError};

/// Reads the message from `input`: LF or CRLF line ends become CRLF; without `ignore_dots` a
/// line holding only `.` ends the input (and is not part of the message). Fails with
/// [`SendmailError::TooLarge`] once the message passes `max` bytes.
pub fn read_message(
    mut input: impl BufRead,
    ignore_dots: bool,
    max: u64,
) -> Result<Vec<u8>, SendmailError> {
    let mut message = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .map_err(SendmailError::Read)?
            == 0
        {
            break;
        }
        let mut content = line.as_slice();
        if let Some(c) = content.strip_suffix(b"\n") {
            content = c.strip_suffix(b"\r").unwrap_or(c);
        }
        if !ignore_dots && content == b"." {
            break;
        }
        message.extend_from_slice(content);
        message.extend_from_slice(b"\r\n");
        if message.len() as u64 > max {
            return Err(SendmailError::TooLarge(max));
        }
    }
    Ok(message)
}

/// Who is sending, and when: what [`prepare`] needs from the world.
#[derive(Debug, Clone)]
pub struct Context {
    /// The invoking user's login name.
    pub user: String,
    /// The server's host name (for the default sender and the `Message-ID:`).
    pub hostname: String,
    /// Now.
    pub now: jiff::ZonedDateTime,
}

impl Context {
    /// The current user, time and the given host name.
    pub fn current(hostname: &str) -> Context {
        Context {
            user: login_name(),
            hostname: hostname.to_owned(),
            now: jiff::ZonedDateTime::now(),
        }
    }
}

/// The login name: `$LOGNAME`, else `$USER`, else the name of this process's uid in
/// `/etc/passwd`, else `nobody`.
fn login_name() -> String {
    use std::os::unix::fs::MetadataExt as _;

    for var in ["LOGNAME", "USER"] {
        if let Ok(name) = std::env::var(var)
            && pickup::check_address(&name).is_ok()
            && !name.contains('@')
        {
            return name;
        }
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    uid.and_then(|uid| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let entry_uid: u32 = fields.nth(1)?.parse().ok()?;
            (entry_uid == uid).then(|| name.to_owned())
        })
    })
    .unwrap_or_else(|| "nobody".to_owned())
}

/// A message ready for the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The envelope sender (`""` for `<>`).
    pub sender: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The message, CRLF line ends, completed header.
    pub message: Vec<u8>,
}

/// One header field: its name and its raw lines (with folding, CRLF).
struct Field {
    name: String,
    raw: Vec<u8>,
}

impl Field {
    /// The unfolded value (RFC 5322 2.2.3), lossy UTF-8.
    fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value.replace("\r\n", "")
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Splits a CRLF message into its header fields and the body (after the empty line). A leading
/// mbox `From ` line is dropped; a line that is neither a field nor a continuation ends the
/// header section (and is the first body line).
fn split_message(message: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut fields: Vec<Field> = Vec::new();
    let mut rest = message;
    if rest.starts_with(b"From ") {
        rest = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(end) => &rest[end + 2..],
            None => b"",
        };
    }
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |p| p + 2);
        let line = &rest[..end];
        if line == b"\r\n" {
            return (fields, &rest[end..]);
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.raw.extend_from_slice(line);
                rest = &rest[end..];
                continue;
            }
            return (fields, rest);
        }
        let name_end = line.iter().position(|&b| b == b':');
        let name = name_end
            .map(|n| &line[..n])
            .filter(|n| !n.is_empty() && n.iter().all(|&b| (33..=126).contains(&b)));
        let Some(name) = name else {
            return (fields, rest);
        };
        fields.push(Field {
            name: String::from_utf8_lossy(name).into_owned(),
            raw: line.to_vec(),
        });
        rest = &rest[end..];
    }
    (fields, rest)
}

/// The addresses in an RFC 5322 3.4 `address-list`: display names, comments, quoted strings
/// and groups (`name: a@x, b@y;`) are understood; each mailbox's `addr-spec` is returned.
pub fn parse_address_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut bare = String::new();
    let mut angle = String::new();
    let mut in_angle = false;
    let mut angled: Option<String> = None;
    let mut in_quote = false;
    let mut comment = 0usize;
    let mut escaped = false;
    let finish = |bare: &mut String, angled: &mut Option<String>, out: &mut Vec<String>| {
        let address = match angled.take() {
            // Drop an RFC 822 source route: <@a,@b:user@x>.
            Some(a) => match a.trim().strip_prefix('@') {
                Some(route) => route
                    .split_once(':')
                    .map_or("", |(_, a)| a)
                    .trim()
                    .to_owned(),
                None => a.trim().to_owned(),
            },
            None => bare.trim().to_owned(),
        };
        bare.clear();
        if !address.is_empty() {
            out.push(address);
        }
    };
    for c in value.chars() {
        let target = if in_angle { &mut angle } else { &mut bare };
        if escaped {
            escaped = false;
            if comment == 0 {
                target.push(c);
            }
            continue;
        }
        if comment > 0 {
            match c {
                '\\' => escaped = true,
                '(' => comment += 1,
                ')' => comment -= 1,
                _ => {}
            }
            continue;
        }
        if in_quote {
            target.push(c);
            match c {
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_quote = true;
                target.push(c);
            }
            '(' => comment = 1,
            '<' if !in_angle => {
                in_angle = true;
                angle.clear();
            }
            '>' if in_angle => {
                in_angle = false;
                angled = Some(std::mem::take(&mut angle));
            }
            // A group's display name ends here; its members follow.
            ':' if !in_angle => bare.clear(),
            ',' | ';' if !in_angle => finish(&mut bare, &mut angled, &mut out),
            c => target.push(c),
        }
    }
    finish(&mut bare, &mut angled, &mut out);
    // "Display Name" without an address is not an address.
    out.retain(|a| !a.starts_with('"') || a.contains('@'));
    out
}

/// Completes the header and works out the envelope: recipients from the arguments (and from
/// the header with `-t`), `Bcc:` removed, `From:`, `Date:` and `Message-ID:` added if missing.
pub fn prepare(
    message: &[u8],
    options: &Options,
    context: &Context,
) -> Result<Prepared, SendmailError> {
    let (mut fields, body) = split_message(message);
    let mut recipients: Vec<String> = Vec::new();
    for arg in &options.recipients {
        recipients.extend(parse_address_list(arg));
    }
    if options.extract_recipients {
        let resent = fields
            .iter()
            .any(|f| f.is("Resent-To") || f.is("Resent-Cc") || f.is("Resent-Bcc"));
        let names: [&str; 3] = if resent {
            ["Resent-To", "Resent-Cc", "Resent-Bcc"]
        } else {
            ["To", "Cc", "Bcc"]
        };
        for field in fields.iter().filter(|f| names.iter().any(|n| f.is(n))) {
            recipients.extend(parse_address_list(&field.value()));
        }
    }
    let mut checked: Vec<String> = Vec::new();
    for r in recipients {
        let r = pickup::check_address(&r).map_err(SendmailError::BadAddress)?;
        if !checked.iter().any(|c| c.eq_ignore_ascii_case(&r)) {
            checked.push(r);
        }
    }
    if checked.is_empty() {
        return Err(SendmailError::NoRecipients);
    }
    let default_sender = format!("{}@{}", context.user, context.hostname);
    let sender = match options.sender.as_deref().map(str::trim) {
        Some("" | "<>") => String::new(),
        Some(s) => {
            let s = pickup::check_address(s).map_err(SendmailError::BadAddress)?;
            if s.contains('@') {
                s
            } else {
                format!("{s}@{}", context.hostname)
            }
        }
        None => default_sender.clone(),
    };
    // RFC 5322 3.6.3: Bcc recipients must not be shown to the others.
    fields.retain(|f| !f.is("Bcc") && !f.is("Resent-Bcc"));
    let mut added: Vec<String> = Vec::new();
    if !fields.iter().any(|f| f.is("From")) {
        let address = if sender.is_empty() {
            &default_sender
        } else {
            &sender
        };
        added.push(from_field(options.full_name.as_deref(), address));
    }
    if !fields.iter().any(|f| f.is("Date")) {
        let date =
            jiff::fmt::rfc2822::to_string(&context.now).unwrap_or_else(|_| context.now.to_string());
        added.push(format!("Date: {date}"));
    }
    if !fields.iter().any(|f| f.is("Message-ID")) {
        added.push(format!(
            "Message-ID: <{}.{}@{}>",
            context.now.timestamp().as_microsecond(),
            std::process::id(),
            context.hostname
        ));
    }
    let mut out = Vec::with_capacity(message.len() + 256);
    for field in &fields {
        out.extend_from_slice(&field.raw);
        if !field.raw.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    for line in &added {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(Prepared {
        sender,
        recipients: checked,
        message: out,
    })
}

/// The `From:` field added for `address`, with the `-F` full name as its display name: a
/// quoted string, or RFC 2047 encoded words when it is not plain ASCII (written by
/// mail-builder, folded as RFC 5322 2.2.3 allows).
pub(super) fn from_field(full_name: Option<&str>, address: &str) -> String {
    use mail_builder::headers::Header as _;
    use mail_builder::headers::address::Address;
    match full_name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => {
            let mut out = b"From: ".to_vec();
            Address::new_address(Some(name), address).write_header(&mut out, "From: ".len());
            String::from_utf8_lossy(&out)
                .trim_end_matches("\r\n")
                .to_owned()
        }
        None => format!("From: {address}"),
    }
}
