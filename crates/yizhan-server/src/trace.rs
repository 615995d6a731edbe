//! Trace fields (RFC 5321 4.4, 6.3): counting the `Received:` fields of a message as it streams
//! in, to end mail loops.
//!
//! RFC 5321 6.3: a server should refuse a message whose trace shows it has been relayed "too
//! many" times (at least 100 hops must be allowed). Counting happens while the body is written
//! to the spool, on the header section only, so a message is never read twice.

/// Counts the `Received:` fields in a message's header section, fed in pieces of any size.
///
/// A field name is matched without regard to case and with the obsolete white space before the
/// colon (RFC 5322 4.5). The header section ends at the first empty line; continuation lines
/// (starting with a space or tab) are not fields.
#[derive(Debug, Clone, Default)]
pub struct HopCounter {
    hops: usize,
    /// The header section has ended: nothing more to look at.
    done: bool,
    /// The first bytes of the current line (at most [`PREFIX`]), or `None` once the line is
    /// known not to start a `Received` field.
    line: Option<Vec<u8>>,
    /// Within a line that is known not to start a `Received` field (or already counted).
    skipping: bool,
}

/// Enough of a line to tell: `received`, white space, `:`.
const PREFIX: usize = 32;

impl HopCounter {
    /// A counter at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `Received:` fields seen so far.
    pub fn hops(&self) -> usize {
        self.hops
    }

    /// Feeds the next piece of the message (CRLF or LF line ends).
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !self.done && !bytes.is_empty() {
            if self.skipping {
                match bytes.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        self.skipping = false;
                        bytes = &bytes[i + 1..];
                    }
                    None => return,
                }
                continue;
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            self.byte(byte);
        }
    }

    fn byte(&mut self, byte: u8) {
        let line = self.line.get_or_insert_with(Vec::new);
        if byte == b'\n' {
            // An empty line (or a lone CR) ends the header section.
            if line.is_empty() || line.as_slice() == b"\r" {
                self.done = true;
            }
            self.line = None;
            return;
        }
        line.push(byte);
        match verdict(line) {
            Verdict::Undecided if line.len() < PREFIX => {}
            Verdict::Received => {
                self.hops += 1;
                self.skip();
            }
            Verdict::Undecided | Verdict::Other => self.skip(),
        }
    }

    fn skip(&mut self) {
        self.line = None;
        self.skipping = true;
    }
}

enum Verdict {
    Received,
    Other,
    Undecided,
}

/// Whether the start of a line is the name of a `Received` field.
fn verdict(line: &[u8]) -> Verdict {
    const NAME: &[u8] = b"received";
    if line == b"\r" {
        // Perhaps the empty line that ends the header section.
        return Verdict::Undecided;
    }
    let n = line.len().min(NAME.len());
    if !line[..n].eq_ignore_ascii_case(&NAME[..n]) {
        return Verdict::Other;
    }
    if line.len() <= NAME.len() {
        return Verdict::Undecided;
    }
    for &b in &line[NAME.len()..] {
        match b {
            b':' => return Verdict::Received,
            b' ' | b'\t' => {}
            _ => return Verdict::Other,
        }
    }
    Verdict::Undecided
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(message: &[u8]) -> usize {
        let mut c = HopCounter::new();
        c.feed(message);
        c.hops()
    }

    #[test]
    fn counts_received_fields_of_the_header_only() {
        let m = [
            "Received: from a by b; now\r\n\tcontinued\r\nRECEIVED : x\r\n",
            "X-Received: no\r\nReceivedx: no\r\nSubject: Received: no\r\n",
            " Received: a continuation, no\r\n\r\nReceived: in the body, no\r\n",
        ]
        .concat();
        assert_eq!(count(m.as_bytes()), 2);
        assert_eq!(count(b"Received: a\nreceived:b\n\nReceived: c\n"), 2);
        assert_eq!(count(b""), 0);
        assert_eq!(count(b"\r\nReceived: x\r\n"), 0);
    }

    proptest! {
        #[test]
        fn the_count_does_not_depend_on_how_the_message_is_cut(
            fields in prop::collection::vec(
                prop_oneof![
                    Just("Received: from x\r\n"),
                    Just("received :y\r\n"),
                    Just("Subject: Received:\r\n"),
                    Just("\tReceived: z\r\n"),
                    Just("Rec: no\r\n"),
                    Just("\r\n"),
                ],
                0..30,
            ),
            cut in 1usize..40,
        ) {
            let message = fields.concat().into_bytes();
            let mut c = HopCounter::new();
            for piece in message.chunks(cut) {
                c.feed(piece);
            }
            prop_assert_eq!(c.hops(), count(&message));
        }
    }
}
