//! The command line reader (RFC 5321 2.3.8: lines end with CRLF only; 4.5.3.1.4: command lines
//! of at least 512 octets).
//!
//! - RFC 5321 2.3.8: only the sequence CR LF ends a line. A bare LF or a bare CR is kept in the
//!   line's content, where the command parser rejects it; it never ends a line, so a client
//!   cannot make the server see a command boundary that another MTA would not see.
//! - RFC 5321 4.5.3.1.4: a command line is at least 512 octets with its CRLF; the limit is
//!   configurable upward. A longer line is discarded while it arrives (memory stays bounded by
//!   the limit) and reported once, at its CRLF, as [`LineEvent::TooLong`]; the next line is read
//!   normally, so the reader stays in step with the client (the server answers
//!   `500 5.5.2 Line too long`).
//! - A CR at the end of one read and the LF at the start of the next still form a CRLF.

use memchr::memchr_iter;

/// The smallest line limit, CRLF included (RFC 5321 4.5.3.1.4).
pub const MIN_LINE_LEN: usize = 512;

/// What [`LineReader::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line: its content without the CRLF (may contain bare CR or LF).
    Line(Vec<u8>),
    /// A line longer than the limit ended; its content was discarded.
    TooLong,
}

/// Splits a byte stream into CRLF-terminated lines with a length cap.
#[derive(Debug)]
pub struct LineReader {
    /// The partial line so far (at most `max_len` octets); empty while discarding.
    buf: Vec<u8>,
    /// The limit, CRLF included.
    max_len: usize,
    /// Inside an over-long line, skipping to its CRLF.
    discarding: bool,
    /// While discarding: the last byte seen was CR.
    pending_cr: bool,
}

impl LineReader {
    /// A reader for lines of at most `max_len` octets with their CRLF; `max_len` is raised to
    /// at least 512 (RFC 5321 4.5.3.1.4).
    pub fn new(max_len: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            max_len: max_len.max(MIN_LINE_LEN),
            discarding: false,
            pending_cr: false,
        }
    }

    /// Consumes `input` up to and including the first CRLF and returns that line, or consumes
    /// all of `input` and keeps the partial line. Returns the number of bytes consumed; never
    /// more than one line per call, so call again with the rest.
    pub fn read(&mut self, input: &[u8]) -> (usize, Option<LineEvent>) {
        let prev_cr = if self.discarding {
            self.pending_cr
        } else {
            self.buf.last() == Some(&b'\r')
        };
        let crlf = memchr_iter(b'\n', input).find(|&i| {
            if i == 0 {
                prev_cr
            } else {
                input[i - 1] == b'\r'
            }
        });
        match crlf {
            Some(i) => {
                let consumed = i + 1;
                if self.discarding {
                    self.discarding = false;
                    self.pending_cr = false;
                    return (consumed, Some(LineEvent::TooLong));
                }
                if self.buf.len() + consumed > self.max_len {
                    self.buf.clear();
                    return (consumed, Some(LineEvent::TooLong));
                }
                let mut line = if self.buf.is_empty() {
                    input[..consumed].to_vec()
                } else {
                    let mut line = std::mem::take(&mut self.buf);
                    line.extend_from_slice(&input[..consumed]);
                    line
                };
                line.truncate(line.len() - 2);
                (consumed, Some(LineEvent::Line(line)))
            }
            None => {
                if self.discarding {
                    if let Some(&last) = input.last() {
                        self.pending_cr = last == b'\r';
                    }
                } else if self.buf.len() + input.len() >= self.max_len {
                    // Without its LF the line already fills the limit: the CRLF would push it
                    // over. Drop it now and skip to its end.
                    self.discarding = true;
                    self.pending_cr = input.last().or(self.buf.last()) == Some(&b'\r');
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(input);
                }
                (input.len(), None)
            }
        }
    }

    /// Forgets any partial line (after STARTTLS, RFC 3207 4.2: plaintext sent before the
    /// handshake must not be taken as a command afterwards).
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.discarding = false;
        self.pending_cr = false;
    }

    /// Whether part of a line has been consumed and its CRLF not yet seen.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.discarding
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `input` in the given pieces, collecting every event and checking consumption.
    fn feed(reader: &mut LineReader, pieces: &[&[u8]]) -> Vec<LineEvent> {
        let mut events = Vec::new();
        for piece in pieces {
            let mut rest = *piece;
            while !rest.is_empty() {
                let (n, event) = reader.read(rest);
                assert!(n <= rest.len());
                assert!(n > 0 || event.is_some());
                events.extend(event);
                rest = &rest[n..];
            }
        }
        events
    }

    fn line(s: &[u8]) -> LineEvent {
        LineEvent::Line(s.to_vec())
    }

    fn all_splits(input: &[u8], max: usize) -> Vec<LineEvent> {
        let whole = feed(&mut LineReader::new(max), &[input]);
        for split in 0..=input.len() {
            let got = feed(
                &mut LineReader::new(max),
                &[&input[..split], &input[split..]],
            );
            assert_eq!(got, whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            feed(&mut LineReader::new(max), &bytes),
            whole,
            "byte by byte"
        );
        whole
    }

    // RFC 5321 2.3.8: only CRLF ends a line.
    #[test]
    fn crlf_only() {
        let cases: &[(&[u8], Vec<LineEvent>)] = &[
            (b"EHLO x\r\n", vec![line(b"EHLO x")]),
            (b"\r\n", vec![line(b"")]),
            (b"A\r\nB\r\n", vec![line(b"A"), line(b"B")]),
            (b"A\nB\r\n", vec![line(b"A\nB")]),
            (b"A\rB\r\n", vec![line(b"A\rB")]),
            (b"A\r\rB\r\n", vec![line(b"A\r\rB")]),
            (b"A\r\r\n", vec![line(b"A\r")]),
            (b"\n\r\n", vec![line(b"\n")]),
            (b"A\n", vec![]),
            (b"A\r", vec![]),
            (b"NOOP\r\nQUIT", vec![line(b"NOOP")]),
        ];
        for (input, want) in cases {
            assert_eq!(&all_splits(input, 512), want, "{input:?}");
        }
    }

    #[test]
    fn one_line_per_call() {
        let mut r = LineReader::new(512);
        let input = b"A\r\nB\r\nC";
        assert_eq!(r.read(input), (3, Some(line(b"A"))));
        assert_eq!(r.read(&input[3..]), (3, Some(line(b"B"))));
        assert_eq!(r.read(&input[6..]), (1, None));
        assert!(r.has_partial());
        assert_eq!(r.read(b"\r"), (1, None));
        assert_eq!(r.read(b"\n"), (1, Some(line(b"C"))));
        assert!(!r.has_partial());
    }

    // RFC 5321 4.5.3.1.4: 512 octets with the CRLF is accepted, 513 is not.
    #[test]
    fn length_limit() {
        let ok = [vec![b'x'; 510], b"\r\n".to_vec()].concat();
        assert_eq!(all_splits(&ok, 512), vec![line(&[b'x'; 510])]);
        let long = [vec![b'x'; 511], b"\r\nNOOP\r\n".to_vec()].concat();
        assert_eq!(
            all_splits(&long, 512),
            vec![LineEvent::TooLong, line(b"NOOP")]
        );
        // A CR right at the limit, then LF.
        let cr_edge = [vec![b'x'; 511], b"\r\n\r\n".to_vec()].concat();
        assert_eq!(
            all_splits(&cr_edge, 512),
            vec![LineEvent::TooLong, line(b"")]
        );
        // Very long, with bare CR and LF inside, then two more lines.
        let mut huge = vec![b'y'; 5000];
        huge[100] = b'\n';
        huge[2000] = b'\r';
        huge[4999] = b'\r';
        huge.extend_from_slice(b"\nA\r\nB\r\n");
        assert_eq!(
            all_splits(&huge, 512),
            vec![LineEvent::TooLong, line(b"A"), line(b"B")]
        );
        // A limit below 512 is raised.
        assert_eq!(all_splits(&ok, 10), vec![line(&[b'x'; 510])]);
        let big = [vec![b'x'; 998], b"\r\n".to_vec()].concat();
        assert_eq!(all_splits(&big, 1000), vec![line(&[b'x'; 998])]);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = LineReader::new(512);
        for _ in 0..1000 {
            assert_eq!(r.read(&[b'z'; 100]), (100, None));
            assert!(r.buf.capacity() <= 1024);
        }
        assert_eq!(r.read(b"\r\n"), (2, Some(LineEvent::TooLong)));
    }

    #[test]
    fn reset_forgets_partial() {
        for partial in [&b"MAIL FROM:<a@b>"[..], b"x\r", &[b'x'; 600]] {
            let mut r = LineReader::new(512);
            r.read(partial);
            assert!(r.has_partial());
            r.reset();
            assert!(!r.has_partial());
            assert_eq!(feed(&mut r, &[b"\nEHLO x\r\n"]), vec![line(b"\nEHLO x")]);
        }
    }

    proptest! {
        #[test]
        fn splits_agree(input in prop::collection::vec(prop::sample::select(b"ab\r\n".to_vec()), 0..1400),
                        cut in any::<prop::sample::Index>()) {
            let whole = feed(&mut LineReader::new(512), &[&input]);
            let at = cut.index(input.len() + 1);
            let split = feed(&mut LineReader::new(512), &[&input[..at], &input[at..]]);
            prop_assert_eq!(&split, &whole);
            // Every line is what lies between CRLFs in the input.
            for event in &whole {
                if let LineEvent::Line(l) = event {
                    prop_assert!(l.len() <= 510);
                    prop_assert!(!l.windows(2).any(|w| w == b"\r\n"));
                }
            }
        }
    }
}
