//! Fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/` and by the test that replays
//! the crashers checked in under `crates/yizhan-proto/tests/fuzz_regressions/`.
//!
//! Each function takes arbitrary bytes and panics only when it finds a bug:
//!
//! - [`command`]: [`Command::parse`] never panics, and a parsed command formats to a line that
//!   parses back to the same command (RFC 5321 4.1.1 grammar both ways);
//! - [`readers`]: [`LineReader`], [`DataReader`] and [`BdatReader`] give the same result whether
//!   the input arrives in one piece or split at a fuzzer-chosen point;
//! - [`session`]: a [`ServerSession`] fed the input in fuzzer-chosen chunks, with every question
//!   accepted, never panics, answers every question once, writes only whole CRLF lines and
//!   ends up waiting for input, a decision it was asked for, or finished.

use yizhan_proto::command::Command;
use yizhan_proto::data::{BdatReader, DataEnd, DataReader};
use yizhan_proto::line::{LineEvent, LineReader};
use yizhan_proto::reply::Reply;
use yizhan_proto::server::{Decision, Event, Phase, ServerConfig, ServerSession};

/// Parse, then format and parse again.
pub fn command(data: &[u8]) {
    let Ok(command) = Command::parse(data) else {
        return;
    };
    let text = command.to_string();
    let again = Command::parse(text.as_bytes());
    assert_eq!(
        again.as_ref(),
        Ok(&command),
        "{command:?} formats as {text:?} which parses differently"
    );
}

/// The first two bytes choose the split point and the limits; the rest is the input.
pub fn readers(data: &[u8]) {
    let (&[a, b], input) = data.split_at_checked(2).unwrap_or((&[0, 0], data)) else {
        return;
    };
    let split = if input.is_empty() {
        0
    } else {
        usize::from(u16::from_be_bytes([a, b])) % (input.len() + 1)
    };
    let limit = 512 + usize::from(b) * 4;
    let max_size = u64::from(a) * 8;
    let chunk = u64::from(b);

    assert_eq!(
        read_lines(limit, &[input]),
        read_lines(limit, &[&input[..split], &input[split..]]),
        "LineReader split at {split}"
    );
    assert_eq!(
        read_data(max_size, &[input]),
        read_data(max_size, &[&input[..split], &input[split..]]),
        "DataReader split at {split}"
    );
    assert_eq!(
        read_bdat(chunk, &[input]),
        read_bdat(chunk, &[&input[..split], &input[split..]]),
        "BdatReader split at {split}"
    );
}

fn read_lines(limit: usize, pieces: &[&[u8]]) -> Vec<LineEvent> {
    let mut reader = LineReader::new(limit);
    let mut events = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            let (used, event) = reader.read(rest);
            assert!(used > 0 && used <= rest.len(), "LineReader consumed {used}");
            rest = &rest[used..];
            events.extend(event);
        }
    }
    events
}

fn read_data(max_size: u64, pieces: &[&[u8]]) -> (Vec<u8>, Option<DataEnd>, usize, u64) {
    let mut reader = DataReader::new(max_size);
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let (used, end) = reader.read(piece, &mut out);
        assert!(used <= piece.len());
        consumed += used;
        if let Some(end) = end {
            assert!(
                out.len() as u64 <= max_size,
                "DataReader kept more than its cap"
            );
            return (out, Some(end), consumed, reader.size());
        }
        assert_eq!(used, piece.len(), "DataReader stopped early without an end");
    }
    (out, None, consumed, reader.size())
}

fn read_bdat(size: u64, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut reader = BdatReader::new(size);
    let mut out = Vec::new();
    for piece in pieces {
        let (used, done) = reader.read(piece);
        out.extend_from_slice(&piece[..used]);
        if done {
            assert_eq!(out.len() as u64, size);
            return (out, true);
        }
    }
    (out, false)
}

/// A session configuration with everything switched on, so the fuzzer reaches every verb.
pub fn fuzz_config() -> ServerConfig {
    let mut config = ServerConfig {
        max_message_size: 4096,
        max_recipients: 5,
        max_errors: 50,
        ..ServerConfig::default()
    };
    let ext = &mut config.extensions;
    ext.starttls = true;
    ext.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
    ext.auth_requires_tls = false;
    ext.dsn = true;
    ext.binarymime = true;
    ext.etrn = true;
    config.verbs.turn = true;
    config
}

/// The first byte picks how the rest is cut into chunks (fixed sizes 1..=16, or at every
/// `\0`), then the chunks go to a session whose every question is accepted.
pub fn session(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let mut session = ServerSession::new(fuzz_config());
    let mut driver = AcceptAll::default();
    driver.drive(&mut session);
    if mode & 0x80 != 0 {
        for chunk in input.split(|&b| b == 0) {
            session.receive(chunk);
            driver.drive(&mut session);
        }
    } else {
        for chunk in input.chunks(usize::from(mode % 16) + 1) {
            session.receive(chunk);
            driver.drive(&mut session);
        }
    }
    assert!(
        matches!(
            session.phase(),
            Phase::Command | Phase::Data | Phase::Finished
        ),
        "left in {:?}",
        session.phase()
    );
    // Shutting down is always possible and ends the session.
    session.close_with(Reply::shutting_down("fuzz"));
    driver.drive(&mut session);
    assert_eq!(session.phase(), Phase::Finished);
}

/// A driver that accepts everything (AUTH included) and checks what the session emits.
#[derive(Debug, Default)]
pub struct AcceptAll {
    /// Questions answered.
    pub asked: usize,
    /// Octets written to the client.
    pub sent: usize,
    /// `Close` or `Turn` seen.
    pub finished: bool,
}

impl AcceptAll {
    /// Runs `session` until it needs input.
    pub fn drive(&mut self, session: &mut ServerSession) {
        while let Some(event) = session.next_event() {
            assert!(!self.finished, "event after Close/Turn: {event:?}");
            match event {
                Event::Send(bytes) => {
                    assert!(bytes.ends_with(b"\r\n"), "partial reply line: {bytes:?}");
                    self.sent += bytes.len();
                }
                Event::Ask(_) => {
                    assert_eq!(session.phase(), Phase::Deciding);
                    self.asked += 1;
                    session.decide(Decision::Accept);
                }
                Event::Body(_) | Event::DataAborted => {}
                Event::StartTls => session.tls_established(),
                Event::Turn | Event::Close => self.finished = true,
            }
        }
    }
}

/// `yizhan_proto::header::without_our_results` on any bytes: the first byte chooses the
/// authserv-id (one of a few, so that some fields match), the rest is the message. Never
/// panics; the body is never touched; the result is no longer than the input; a second pass
/// removes nothing more.
pub fn header(data: &[u8]) {
    use yizhan_proto::header::without_our_results;
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let id = ["mx.test.example", "a", "", "MX.TEST.EXAMPLE"][usize::from(pick % 4)];
    let (kept, removed) = without_our_results(message, id);
    assert!(kept.len() <= message.len());
    assert_eq!(
        removed == 0,
        kept == message,
        "removed {removed} but unchanged, or the reverse"
    );
    let (again, more) = without_our_results(&kept, id);
    assert_eq!(
        (again.as_slice(), more),
        (kept.as_slice(), 0),
        "not idempotent"
    );
}

/// `yizhan explain` on any bytes: as a transcript, and as a packet capture (with a pcap file
/// header put in front when the first byte is even, so that the records are reached). Never
/// panics, in every language and format; nothing that is not in the input appears as a
/// dialogue line.
pub fn explain(data: &[u8]) {
    use yizhan_explain::render::{Format, render};
    use yizhan_explain::{Catalogue, Lang, capture, explain, transcript};
    let text = String::from_utf8_lossy(data);
    let lines = transcript::parse(&text);
    for lang in Lang::ALL {
        let cat = Catalogue::load(lang).expect("the catalogues parse");
        let explained = explain(&lines, &cat);
        assert_eq!(explained.entries.len(), lines.len(), "one entry per line");
        for format in [Format::Text, Format::Markdown, Format::Json] {
            let _ = render(&explained, format, &cat);
        }
    }
    let mut pcap = Vec::new();
    if data.first().is_some_and(|b| b % 2 == 0) {
        // Little-endian pcap, version 2.4, snaplen 65535, Ethernet.
        pcap.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&[0xff, 0xff, 0, 0, 1, 0, 0, 0]);
    }
    pcap.extend_from_slice(data);
    if let Ok(conversations) = capture::read(&pcap, &capture::SMTP_PORTS) {
        let cat = Catalogue::load(Lang::En).expect("the catalogue parses");
        for c in conversations {
            let _ = explain(&c.lines, &cat);
        }
    }
}
