//! A session's dialogue as it crossed the wire, for recording (issue #16): every command line
//! and reply line in order, with the secrets masked where the session still knows what each
//! line is (an AUTH answer is never kept, nor its base64: only "user name `alice`" for a
//! LOGIN user name or a PLAIN answer, and the password's length), and the message text
//! summarised (octets, lines, header field names) unless the text is asked for.
//!
//! Off unless the driver asks ([`crate::server::ServerSession::record`]); then every line
//! costs one small string.

use base64::Engine as _;

/// One recorded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// A line the client sent (masked where it carried a secret).
    Client(String),
    /// A line the server sent.
    Server(String),
    /// What the session noted between lines (the message text summarised, TLS begun).
    Note(String),
}

/// The recorder inside a session.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) on: bool,
    /// Keep the message text itself (up to this many octets), not only its summary.
    bodies: Option<usize>,
    pub(crate) said: Vec<Said>,
    /// The SASL mechanism in progress and the answers given so far.
    auth: Option<(String, usize)>,
    body: Body,
}

/// What is counted of a message text.
#[derive(Debug, Default)]
struct Body {
    octets: u64,
    lines: u64,
    /// Still in the header section, and the part of a line not ended yet.
    in_header: bool,
    partial: Vec<u8>,
    headers: Vec<String>,
    text: Vec<u8>,
}

/// Header names kept per message, at most.
const MAX_HEADER_NAMES: usize = 64;

impl Recorder {
    pub(crate) fn start(&mut self, bodies: Option<usize>) {
        self.on = true;
        self.bodies = bodies;
    }

    /// A command line the client sent: an AUTH initial response masked, and any line that is
    /// no command but could be a credential (base64, e.g. an answer sent after a refused AUTH,
    /// or pipelined ahead of its prompt) masked whole.
    pub(crate) fn command(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).into_owned();
        let mut words = text.split_whitespace();
        let verb = words.next().unwrap_or("");
        if verb.eq_ignore_ascii_case("AUTH") {
            let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
            let shown = match words.next() {
                Some(initial) => {
                    let masked = mask(&mechanism, 0, initial.as_bytes());
                    self.auth = Some((mechanism.clone(), 1));
                    format!("AUTH {mechanism} {masked}")
                }
                None => {
                    self.auth = Some((mechanism.clone(), 0));
                    format!("AUTH {mechanism}")
                }
            };
            self.said.push(Said::Client(shown));
            return;
        }
        if crate::command::Command::parse(line).is_err() && could_be_base64(line) {
            let shown = mask("", 0, line);
            self.said.push(Said::Client(shown));
            return;
        }
        self.said.push(Said::Client(text));
    }

    /// The message text was abandoned (too big, RSET between BDAT chunks): nothing of it is
    /// kept for the next message.
    pub(crate) fn drop_body(&mut self) {
        self.body = Body::default();
    }

    /// An answer in an AUTH exchange: never kept, only described.
    pub(crate) fn auth_answer(&mut self, line: &[u8]) {
        let (mechanism, step) = self.auth.clone().unwrap_or_default();
        self.said.push(Said::Client(mask(&mechanism, step, line)));
        self.auth = Some((mechanism, step + 1));
    }

    /// The reply bytes just written (one or more lines).
    pub(crate) fn reply(&mut self, bytes: &[u8]) {
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                self.said
                    .push(Said::Server(String::from_utf8_lossy(line).into_owned()));
            }
        }
    }

    /// A piece of the message text (after dot-unstuffing).
    pub(crate) fn body(&mut self, chunk: &[u8]) {
        let b = &mut self.body;
        if b.octets == 0 && b.partial.is_empty() {
            b.in_header = true;
        }
        b.octets += chunk.len() as u64;
        b.lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
        if let Some(max) = self.bodies {
            let room = max.saturating_sub(b.text.len());
            b.text.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if !b.in_header {
            return;
        }
        b.partial.extend_from_slice(chunk);
        // Each line once, and one drain per piece: a header of many short lines costs linear
        // time; past MAX_HEADER_NAMES names nothing more is read.
        let mut start = 0;
        let ends: Vec<usize> = memchr::memchr_iter(b'\n', &b.partial).collect();
        for end in ends {
            let line = &b.partial[start..end];
            start = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || b.headers.len() == MAX_HEADER_NAMES {
                b.in_header = false;
                b.partial.clear();
                return;
            }
            let folded = line.first().is_some_and(|c| *c == b' ' || *c == b'\t');
            if !folded && let Some(colon) = line.iter().position(|&c| c == b':') {
                let name = String::from_utf8_lossy(&line[..colon]).into_owned();
                b.headers.push(name);
            }
        }
        b.partial.drain(..start);
        // A header line longer than any sane one is not kept whole.
        if b.partial.len() > 4096 {
            b.partial.clear();
        }
    }

    /// The message text ended: its summary, or the text (dot-stuffed again, as it crossed
    /// the wire); then the `.` that ended it, for DATA (`dot`), not for BDAT.
    pub(crate) fn end_of_body(&mut self, dot: bool) {
        let b = std::mem::take(&mut self.body);
        if let Some(max) = self.bodies {
            for line in String::from_utf8_lossy(&b.text).lines() {
                let stuffed = if line.starts_with('.') { "." } else { "" };
                self.said.push(Said::Client(format!("{stuffed}{line}")));
            }
            if b.octets > max as u64 {
                self.said.push(Said::Note(format!(
                    "message text cut for the recording: the first {max} of {} octets kept",
                    b.octets
                )));
            }
        } else if b.octets > 0 {
            let lines = b.lines;
            let s = if lines == 1 { "" } else { "s" };
            self.said.push(Said::Note(format!(
                "message text: {} octets, {lines} line{s}; header fields: {}",
                b.octets,
                b.headers.join(", ")
            )));
        }
        if dot {
            self.said.push(Said::Client(".".into()));
        }
    }
}

/// Whether a line could be base64 (a credential sent where a command was expected): it
/// decodes, padded or not, stray low bits allowed (erring towards masking). A word such as
/// `XYZZY` (five letters: no base64 has that length) is no credential.
pub fn could_be_base64(line: &[u8]) -> bool {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let line = line.trim_ascii();
    !line.is_empty() && LENIENT.decode(line).is_ok()
}

/// What a recording shows for an AUTH answer: a LOGIN user name (the first answer) or a
/// PLAIN answer's user, and the password's length; never the password or its base64.
pub fn mask(mechanism: &str, step: usize, answer: &[u8]) -> String {
    if answer == b"*" {
        return "*".to_owned();
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer.trim_ascii())
        .unwrap_or_default();
    match (mechanism, step) {
        ("LOGIN", 0) => format!("[user name `{}` (base64)]", String::from_utf8_lossy(&bytes)),
        ("LOGIN", _) => format!("[password ({} octets), masked]", bytes.len()),
        ("PLAIN", _) => {
            let mut parts = bytes.split(|&c| c == 0);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(_), Some(user), Some(password)) => format!(
                    "[user name `{}`, password ({} octets), masked]",
                    String::from_utf8_lossy(user),
                    password.len()
                ),
                _ => format!("[credentials ({} octets), masked]", bytes.len()),
            }
        }
        _ => format!("[credentials ({} octets), masked]", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_told_from_an_unknown_word() {
        assert!(could_be_base64(b"aHVudGVyMg=="));
        assert!(could_be_base64(b"aHVudGVyMg"));
        assert!(could_be_base64(b"  YWxpY2U=  "));
        assert!(!could_be_base64(b"XYZZY"));
        assert!(!could_be_base64(b"hello world"));
        assert!(!could_be_base64(b""));
    }

    #[test]
    fn secrets_are_never_recorded() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut r = Recorder::default();
        r.start(None);
        r.command(format!("AUTH PLAIN {}", b64("\0ann\0hunter2")).as_bytes());
        r.command(b"AUTH LOGIN");
        r.auth_answer(b64("ann@x").as_bytes());
        r.auth_answer(b64("hunter2").as_bytes());
        // Sent where a command was expected (after a refused AUTH), or with odd spacing.
        r.command(b64("hunter2").as_bytes());
        r.command(format!("AUTH\tPLAIN {}", b64("\0ann\0hunter2")).as_bytes());
        r.command(format!(" auth  plain {}", b64("\0ann\0hunter2")).as_bytes());
        let all = format!("{:?}", r.said);
        assert!(
            !all.contains("hunter2") && !all.contains(&b64("hunter2")),
            "{all}"
        );
        assert!(!all.contains(&b64("\0ann\0hunter2")), "{all}");
        assert_eq!(
            r.said[0],
            Said::Client("AUTH PLAIN [user name `ann`, password (7 octets), masked]".into())
        );
        assert_eq!(
            r.said[2],
            Said::Client("[user name `ann@x` (base64)]".into())
        );
        assert_eq!(
            r.said[3],
            Said::Client("[password (7 octets), masked]".into())
        );
    }

    #[test]
    fn a_message_is_summarised() {
        let mut r = Recorder::default();
        r.start(None);
        r.body(b"From: a\r\nSub");
        r.body(b"ject: x\r\n continued\r\n\r\nsecret text\r\n");
        r.end_of_body(true);
        assert_eq!(
            r.said,
            [
                Said::Note("message text: 48 octets, 5 lines; header fields: From, Subject".into()),
                Said::Client(".".into())
            ]
        );
        let mut kept = Recorder::default();
        kept.start(Some(1000));
        kept.body(b"Subject: y\r\n\r\n.hello\r\n");
        kept.end_of_body(false);
        assert_eq!(kept.said.last(), Some(&Said::Client("..hello".into())));
        // Past the limit the text is counted, not held.
        let mut cut = Recorder::default();
        cut.start(Some(16));
        cut.body(b"Subject: y\r\n\r\n");
        cut.body(&b"x".repeat(100_000));
        cut.end_of_body(true);
        assert_eq!(cut.body.text.capacity(), 0, "taken at the end");
        assert_eq!(
            cut.said,
            [
                Said::Client("Subject: y".into()),
                Said::Client(String::new()),
                Said::Client("xx".into()),
                Said::Note(
                    "message text cut for the recording: the first 16 of 100014 octets kept".into()
                ),
                Said::Client(".".into()),
            ]
        );
    }
}
