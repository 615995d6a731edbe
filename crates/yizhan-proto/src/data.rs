//! Message data: the DATA reader (RFC 5321 4.5.2 dot-unstuffing, 3.3 end of data), the BDAT
//! chunk reader (RFC 3030) and the dot-stuffer the client uses to send.
//!
//! # DATA (RFC 5321 3.3, 4.1.1.4, 4.5.2)
//!
//! [`DataReader`] starts at the beginning of a line, right after the CRLF of the DATA command.
//! It writes the message content to the caller's buffer, CRLFs included, with one leading dot
//! removed from every line that starts with a dot (4.5.2), and without the terminating
//! `.` CRLF line. Only CRLF `.` CRLF ends the data (or `.` CRLF as the very first line, an empty
//! message). It consumes exactly up to the end of the terminator and returns how much it
//! consumed: the bytes after it belong to the next command (RFC 2920 pipelining).
//!
//! ## Policy: bare CR and bare LF are rejected
//!
//! RFC 5321 2.3.8 says lines end with CRLF only, but MTAs disagree about what a bare LF or a
//! bare CR means: some end the data at `LF . LF` or `CR LF . LF`, some not. An attacker who
//! sends such a sequence through one MTA to another can smuggle a second message past the first
//! one's checks (SMTP smuggling: CVE-2023-51766 Exim, CVE-2023-51764 Postfix, CVE-2023-51765
//! Sendmail). yizhan closes the whole family:
//!
//! - a bare CR or bare LF never ends the data and never starts a new line for dot purposes;
//! - a message that contains a bare CR or bare LF anywhere is **rejected**: the reader keeps
//!   reading to the real end (CRLF `.` CRLF) so the session stays in step, then returns
//!   [`DataEnd::BareLineEnding`] and the server answers `550 5.6.0`
//!   ([`crate::reply::Reply::bare_line_ending`]).
//!
//! Nothing ambiguous is ever stored or relayed.
//!
//! ## Size cap (RFC 1870 6.2, RFC 5321 4.5.3.1.7)
//!
//! Once more than `max_size` unstuffed octets have been seen the reader stops appending to the
//! output but keeps reading to the end, then returns [`DataEnd::TooBig`] (which wins over
//! [`DataEnd::BareLineEnding`]); the server answers `552 5.3.4`. Lines longer than 998 octets
//! (RFC 5322 2.1.1) are accepted and kept unchanged: the limit is a sender's duty, and cutting
//! lines would alter the message.
//!
//! The reader holds a few bytes of state and no buffer; it finds CR and LF with `memchr` and
//! copies the runs between them in bulk.
//!
//! # BDAT (RFC 3030 2)
//!
//! [`BdatReader`] counts off exactly the chunk size given in the BDAT command; the chunk is raw
//! (no dot-stuffing, no line-ending rules).
//!
//! # Sending (RFC 5321 4.5.2)
//!
//! [`DotStuffer`] adds a dot to every line that starts with one, normalises every bare CR and
//! bare LF to CRLF (so the output can never hold a premature terminator, nor be rejected by a
//! receiver with the policy above) and ends the data with CRLF `.` CRLF.

use memchr::memchr2;

/// How the DATA phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataEnd {
    /// The terminator was found; the message is complete and clean.
    Complete,
    /// More than the size cap arrived; the excess was discarded (`552 5.3.4`).
    TooBig,
    /// The message contains a bare CR or LF (`550 5.6.0`, see the module docs).
    BareLineEnding,
}

/// Where the reader is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very start).
    LineStart,
    /// A dot at the start of a line.
    Dot,
    /// A dot and a CR at the start of a line; an LF now ends the data. The CR is not yet
    /// written out.
    DotCr,
    /// Within a line.
    Mid,
    /// Within a line, right after a CR (already written out).
    Cr,
}

/// Reads DATA content: dot-unstuffing, CRLF.CRLF only, size cap, bare CR/LF detection.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    max_size: u64,
    size: u64,
    bare: bool,
    done: Option<DataEnd>,
}

impl DataReader {
    /// A reader positioned at the start of the message, keeping at most `max_size` unstuffed
    /// octets.
    pub fn new(max_size: u64) -> DataReader {
        DataReader {
            state: State::LineStart,
            max_size,
            size: 0,
            bare: false,
            done: None,
        }
    }

    /// The unstuffed octets seen so far, including any discarded beyond the cap.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads from `input`, appending content to `out`. Returns the bytes consumed and, once the
    /// terminator has been consumed, how the data ended; the consumed count then stops right
    /// after the terminator. After the end every call returns `(0, Some(end))` again.
    pub fn read(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<DataEnd>) {
        if let Some(end) = self.done {
            return (0, Some(end));
        }
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Mid {
                // Fast path: copy the run up to the next CR or LF in one go.
                let rest = &input[i..];
                match memchr2(b'\r', b'\n', rest) {
                    None => {
                        self.emit(rest, out);
                        return (input.len(), None);
                    }
                    Some(k) => {
                        self.emit(&rest[..k], out);
                        i += k;
                    }
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b, out) {
                let end = if self.size > self.max_size {
                    DataEnd::TooBig
                } else if self.bare {
                    DataEnd::BareLineEnding
                } else {
                    DataEnd::Complete
                };
                self.done = Some(end);
                return (i, Some(end));
            }
        }
        (input.len(), None)
    }

    /// One byte through the state machine; true when it completed the terminator.
    fn step(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        match self.state {
            State::LineStart if b == b'.' => self.state = State::Dot,
            State::LineStart | State::Mid => self.mid(b, out),
            State::Dot if b == b'\r' => self.state = State::DotCr,
            // RFC 5321 4.5.2: a line starting with a dot and holding more loses that one dot.
            State::Dot => self.mid(b, out),
            State::DotCr if b == b'\n' => return true,
            State::DotCr => {
                // ". CR x": the CR is bare (x is not LF); the dot is dropped as above.
                self.emit(b"\r", out);
                self.cr(b, out);
            }
            State::Cr => self.cr(b, out),
        }
        false
    }

    /// A byte within a line.
    fn mid(&mut self, b: u8, out: &mut Vec<u8>) {
        self.emit(&[b], out);
        self.state = match b {
            b'\r' => State::Cr,
            b'\n' => {
                self.bare = true;
                State::Mid
            }
            _ => State::Mid,
        };
    }

    /// A byte after a CR within a line.
    fn cr(&mut self, b: u8, out: &mut Vec<u8>) {
        self.emit(&[b], out);
        self.state = match b {
            b'\n' => State::LineStart,
            b'\r' => {
                self.bare = true;
                State::Cr
            }
            _ => {
                self.bare = true;
                State::Mid
            }
        };
    }

    /// Counts `bytes` and appends what fits under the cap.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let room = self.max_size.saturating_sub(self.size);
        let keep = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        out.extend_from_slice(&bytes[..keep]);
        self.size = self.size.saturating_add(bytes.len() as u64);
    }
}

/// Counts off one BDAT chunk of exactly `size` raw octets (RFC 3030 2).
#[derive(Debug)]
pub struct BdatReader {
    remaining: u64,
}

impl BdatReader {
    /// A reader for a chunk of `size` octets.
    pub fn new(size: u64) -> BdatReader {
        BdatReader { remaining: size }
    }

    /// Takes up to the remaining count from `input`: returns how many bytes of `input` belong
    /// to the chunk (`input[..n]`) and whether the chunk is now complete.
    pub fn read(&mut self, input: &[u8]) -> (usize, bool) {
        let take = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(input.len());
        self.remaining -= take as u64;
        (take, self.remaining == 0)
    }

    /// Octets of the chunk not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

/// Dot-stuffs message content for sending with DATA (RFC 5321 4.5.2), normalising every bare CR
/// and bare LF to CRLF.
#[derive(Debug)]
pub struct DotStuffer {
    line_start: bool,
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of the message.
    pub fn new() -> DotStuffer {
        DotStuffer {
            line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the stuffed form of `input` to `out`. Content may be given in any pieces.
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            if self.pending_cr {
                // A CR followed by LF is a line end; a CR followed by anything else is bare and
                // becomes CRLF too.
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if input[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            if self.line_start {
                if input[i] == b'.' {
                    out.push(b'.');
                }
                self.line_start = false;
            }
            let rest = &input[i..];
            match memchr2(b'\r', b'\n', rest) {
                None => {
                    out.extend_from_slice(rest);
                    return;
                }
                Some(k) => {
                    out.extend_from_slice(&rest[..k]);
                    if rest[k] == b'\r' {
                        self.pending_cr = true;
                    } else {
                        out.extend_from_slice(b"\r\n");
                        self.line_start = true;
                    }
                    i += k + 1;
                }
            }
        }
    }

    /// Ends the message: CRLF if the content did not end with one, then `.` CRLF. The stuffer
    /// is then ready for a new message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::new();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Reads `pieces` in order until the end; returns (consumed, output, end).
    fn read_pieces(max: u64, pieces: &[&[u8]]) -> (usize, Vec<u8>, Option<DataEnd>) {
        let mut reader = DataReader::new(max);
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            let (n, end) = reader.read(piece, &mut out);
            assert!(n <= piece.len());
            consumed += n;
            if end.is_some() {
                assert_eq!(reader.read(b"more", &mut out), (0, end));
                return (consumed, out, end);
            }
            assert_eq!(n, piece.len());
        }
        (consumed, out, None)
    }

    /// Reads `input` whole, split at every point, and byte by byte; all must agree.
    fn read_all_ways(max: u64, input: &[u8]) -> (usize, Vec<u8>, Option<DataEnd>) {
        let whole = read_pieces(max, &[input]);
        for split in 0..=input.len() {
            let got = read_pieces(max, &[&input[..split], &input[split..]]);
            assert_eq!(got, whole, "split at {split} of {input:?}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(read_pieces(max, &bytes), whole, "byte by byte {input:?}");
        whole
    }

    fn stuff(content: &[u8]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.stuff(content, &mut out);
        s.finish(&mut out);
        out
    }

    use DataEnd::{BareLineEnding, Complete, TooBig};

    // RFC 5321 4.5.2 (transparency) and 3.3 (end of data).
    #[test]
    fn unstuffing_and_end() {
        let cases: &[(&[u8], &[u8], DataEnd)] = &[
            (b".\r\n", b"", Complete),
            (b"a\r\n.\r\n", b"a\r\n", Complete),
            (b"a\r\nb\r\n.\r\n", b"a\r\nb\r\n", Complete),
            (b"\r\n.\r\n", b"\r\n", Complete),
            (b"..\r\n.\r\n", b".\r\n", Complete),
            (b"...\r\n.\r\n", b"..\r\n", Complete),
            (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n", Complete),
            (b".a\r\n.\r\n", b"a\r\n", Complete),
            (b"a.\r\nb..c\r\n.\r\n", b"a.\r\nb..c\r\n", Complete),
            (b"a\r\n. \r\n.\r\n", b"a\r\n \r\n", Complete),
            (b"a\r\n.\r\nMAIL FROM:<>\r\n", b"a\r\n", Complete),
        ];
        for (input, want, end) in cases {
            let (consumed, out, got) = read_all_ways(1 << 20, input);
            assert_eq!(got, Some(*end), "{input:?}");
            assert_eq!(out, *want, "{input:?}");
            let rest = &input[consumed..];
            assert!(rest.is_empty() || rest == b"MAIL FROM:<>\r\n", "{input:?}");
        }
        // Consumes exactly through the terminator and leaves the next command.
        let input = b"x\r\n.\r\nQUIT\r\n";
        assert_eq!(read_all_ways(100, input).0, 6);
    }

    // SMTP smuggling (CVE-2023-51766, -51764, -51765): none of these ends the data; each is
    // rejected at the real end.
    #[test]
    fn smuggling_variants() {
        let variants: &[&[u8]] = &[
            b"\n.\n",
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n.\rX",
            b"\r\n.\r\r\n",
            b"\n.\r",
            b"\r.\r",
            b"\r.\n",
            b"\n\n",
            b"\r\r\n",
            b"x\ry",
        ];
        for v in variants {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n");
            let before_end = input.len();
            input.extend_from_slice(b".\r\nNEXT");
            let (consumed, _, end) = read_all_ways(1 << 20, &input);
            assert_eq!(end, Some(BareLineEnding), "{v:?}");
            assert_eq!(consumed, before_end + 3, "{v:?}");
        }
        // At the very start.
        for start in [&b".\n"[..], b".\r", b"\n.\r\n", b"\r\n.\n"] {
            let input = [start, b"x\r\n.\r\n"].concat();
            let (consumed, _, end) = read_all_ways(1 << 20, &input);
            assert_eq!(
                (consumed, end),
                (input.len(), Some(BareLineEnding)),
                "{start:?}"
            );
        }
        // The same with a cap that is exceeded: TooBig wins.
        let (_, out, end) = read_all_ways(3, b"ab\ncd\r\n.\r\n");
        assert_eq!((out.as_slice(), end), (&b"ab\n"[..], Some(TooBig)));
    }

    #[test]
    fn incomplete_data_never_ends() {
        for input in [
            &b""[..],
            b".",
            b".\r",
            b"a\r\n.",
            b"a\r\n.\r",
            b"a\n.\n",
            b"a\r\n..\r\n",
        ] {
            let (consumed, _, end) = read_all_ways(100, input);
            assert_eq!((consumed, end), (input.len(), None), "{input:?}");
        }
    }

    // RFC 1870 6.2: exact boundaries of the cap (content "abc\r\n" is 5 octets).
    #[test]
    fn size_cap() {
        let input = b"abc\r\n.\r\n";
        let cases: &[(u64, DataEnd, &[u8])] = &[
            (6, Complete, b"abc\r\n"),
            (5, Complete, b"abc\r\n"),
            (4, TooBig, b"abc\r"),
            (0, TooBig, b""),
        ];
        for (max, end, out) in cases {
            let (consumed, got_out, got_end) = read_all_ways(*max, input);
            assert_eq!(
                (consumed, got_end, got_out.as_slice()),
                (input.len(), Some(*end), *out),
                "max {max}"
            );
        }
        let mut r = DataReader::new(4);
        let mut out = Vec::new();
        r.read(input, &mut out);
        assert_eq!(r.size(), 5);
        // The stuffing dot is not counted.
        let mut r = DataReader::new(2);
        assert_eq!(r.read(b"..\r\n.\r\n", &mut out).1, Some(TooBig));
        assert_eq!(r.size(), 3);
        assert_eq!(
            DataReader::new(0).read(b".\r\n", &mut out),
            (3, Some(Complete))
        );
    }

    // RFC 5322 2.1.1's 998-octet limit is not enforced: long lines pass unchanged.
    #[test]
    fn long_lines_kept() {
        let line: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let input = [&line[..], b"\r\n.", &line[..], b"\r\n.\r\n"].concat();
        let (_, out, end) = read_pieces(1 << 20, &[&input]);
        assert_eq!(end, Some(Complete));
        assert_eq!(out, [&line[..], b"\r\n", &line[..], b"\r\n"].concat());
        let (_, out2, _) = read_pieces(1 << 20, &input.chunks(7).collect::<Vec<_>>());
        assert_eq!(out2, out);
    }

    // RFC 3030 2: BDAT chunks are raw and exact.
    #[test]
    fn bdat() {
        let mut r = BdatReader::new(5);
        assert_eq!(r.read(b"ab"), (2, false));
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.read(b".\r\nBDAT 0 LAST\r\n"), (3, true));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.read(b"x"), (0, true));
        assert_eq!(BdatReader::new(0).read(b""), (0, true));
        assert_eq!(BdatReader::new(10).read(b""), (0, false));
    }

    // RFC 5321 4.5.2: the sender's half.
    #[test]
    fn dot_stuffing() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..c", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a.b", b"a.b\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
            (b"\r\r\n", b"\r\n\r\n.\r\n"),
            (b"\n", b"\r\n.\r\n"),
            (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
        ];
        for (content, want) in cases {
            assert_eq!(stuff(content), *want, "{content:?}");
            // Piecewise stuffing agrees.
            for split in 0..=content.len() {
                let mut s = DotStuffer::new();
                let mut out = Vec::new();
                s.stuff(&content[..split], &mut out);
                s.stuff(&content[split..], &mut out);
                s.finish(&mut out);
                assert_eq!(out, *want, "{content:?} split at {split}");
            }
        }
    }

    /// Content with CRLF-only line endings.
    fn crlf_content() -> impl Strategy<Value = Vec<u8>> {
        let line = prop::collection::vec(
            prop_oneof![3 => Just(b'.'), 6 => any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n')],
            0..40,
        );
        (prop::collection::vec(line, 0..8), any::<bool>()).prop_map(|(lines, trailing)| {
            let mut content = lines.join(&b"\r\n"[..]);
            if trailing && !lines.is_empty() {
                content.extend_from_slice(b"\r\n");
            }
            content
        })
    }

    fn with_final_crlf(content: &[u8]) -> Vec<u8> {
        let mut want = content.to_vec();
        if !want.is_empty() && !want.ends_with(b"\r\n") {
            want.extend_from_slice(b"\r\n");
        }
        want
    }

    proptest! {
        #[test]
        fn stuff_then_read_round_trips(content in crlf_content(), cut in any::<prop::sample::Index>()) {
            let stuffed = stuff(&content);
            let mut input = stuffed.clone();
            input.extend_from_slice(b"QUIT\r\n");
            let at = cut.index(input.len() + 1);
            let (consumed, out, end) = read_pieces(u64::MAX, &[&input[..at], &input[at..]]);
            prop_assert_eq!(end, Some(Complete));
            prop_assert_eq!(consumed, stuffed.len());
            prop_assert_eq!(out, with_final_crlf(&content));
        }

        #[test]
        fn stuffing_normalises_any_bytes(content in prop::collection::vec(
            prop::sample::select(b".\r\nab".to_vec()), 0..200)) {
            let stuffed = stuff(&content);
            let (consumed, out, end) = read_pieces(u64::MAX, &[&stuffed]);
            prop_assert_eq!(end, Some(Complete));
            prop_assert_eq!(consumed, stuffed.len());
            // The output is the content with every line ending made a CRLF.
            let mut normal = Vec::new();
            let mut i = 0;
            while i < content.len() {
                match content[i] {
                    b'\r' if content.get(i + 1) == Some(&b'\n') => { normal.extend_from_slice(b"\r\n"); i += 1; }
                    b'\r' | b'\n' => normal.extend_from_slice(b"\r\n"),
                    b => normal.push(b),
                }
                i += 1;
            }
            prop_assert_eq!(out, with_final_crlf(&normal));
        }

        #[test]
        fn splits_agree(input in prop::collection::vec(prop::sample::select(b".\r\na".to_vec()), 0..60),
                        max in 0u64..40) {
            read_all_ways(max, &input);
        }

        #[test]
        fn never_panics(input in prop::collection::vec(any::<u8>(), 0..3000), max in any::<u64>(),
                        cut in any::<prop::sample::Index>()) {
            let at = cut.index(input.len() + 1);
            let whole = read_pieces(max, &[&input]);
            prop_assert!(whole.0 <= input.len());
            prop_assert!(whole.1.len() as u64 <= max);
            prop_assert_eq!(read_pieces(max, &[&input[..at], &input[at..]]), whole);
        }
    }
}
