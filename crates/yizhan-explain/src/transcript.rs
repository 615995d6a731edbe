//! Reading a dialogue written down as text: the common forms administrators paste.
//!
//! - `C: EHLO x` / `S: 250 ok` (RFC examples, the seed article), also `c:`/`s:`;
//! - swaks: ` -> EHLO x` (client), `<-  250 ok` (server), `~>`/`<~` inside TLS, `===` and
//!   `***` lines are swaks' own remarks;
//! - `>>> ` / `<<< ` (some clients' debug logs), `-> ` / `<- ` without swaks' indentation;
//! - bare lines, as `openssl s_client` or a telnet session shows them: a line that starts with
//!   a three-digit code and a space or hyphen is the server's, any other is the client's.
//!
//! The first form that recognises a line decides; a line in none of them (a blank line, a
//! remark) is dropped unless the whole text is bare.

use serde::Serialize;

/// Who sent a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The SMTP client (sender-SMTP).
    Client,
    /// The SMTP server (receiver-SMTP).
    Server,
    /// A remark of the recorder between lines (TLS begun, the message text summarised).
    Note,
}

/// One line of a dialogue, without its line end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Who sent it.
    pub direction: Direction,
    /// Its text.
    pub text: String,
    /// Sent inside TLS (swaks' `~>`/`<~`), as far as the transcript says.
    pub tls: bool,
    /// Ended on the wire by a bare LF, not CRLF (known only from a capture: a transcript's
    /// line ends are those of the paste).
    pub bare_lf: bool,
}

/// The prefixed forms: (prefix, direction, inside TLS).
const PREFIXES: [(&str, Direction, bool); 10] = [
    ("C: ", Direction::Client, false),
    ("S: ", Direction::Server, false),
    ("c: ", Direction::Client, false),
    ("s: ", Direction::Server, false),
    ("~> ", Direction::Client, true),
    ("<~ ", Direction::Server, true),
    ("-> ", Direction::Client, false),
    ("<- ", Direction::Server, false),
    (">>> ", Direction::Client, false),
    ("<<< ", Direction::Server, false),
];

/// Reads a transcript into lines (see the module documentation).
pub fn parse(text: &str) -> Vec<Line> {
    let raw: Vec<&str> = text.lines().collect();
    let prefixed = raw.iter().any(|l| prefixed(l).is_some());
    let mut lines = Vec::new();
    for l in raw {
        let l = l.strip_suffix('\r').unwrap_or(l);
        if prefixed {
            if let Some(line) = prefixed_line(l) {
                lines.push(line);
            }
        } else if !l.trim().is_empty() {
            lines.push(bare(l));
        }
    }
    lines
}

/// The line of a prefixed form (swaks indents its prefixes), or `None`.
fn prefixed(l: &str) -> Option<(Direction, bool, &str)> {
    let trimmed = l.trim_start();
    PREFIXES.iter().find_map(|(prefix, direction, tls)| {
        let rest = trimmed
            .strip_prefix(prefix)
            .or_else(|| (trimmed == prefix.trim_end()).then_some(""))?;
        // swaks pads its server prefix with a second space (`<-  250`).
        let rest = if *direction == Direction::Server {
            rest.trim_start_matches(' ')
        } else {
            rest
        };
        Some((*direction, *tls, rest))
    })
}

fn prefixed_line(l: &str) -> Option<Line> {
    let (direction, tls, text) = prefixed(l)?;
    Some(Line {
        direction,
        text: text.to_owned(),
        tls,
        bare_lf: false,
    })
}

/// A line without a prefix: the server's when it starts like a reply.
fn bare(l: &str) -> Line {
    let b = l.as_bytes();
    let reply = b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-');
    Line {
        direction: if reply {
            Direction::Server
        } else {
            Direction::Client
        },
        text: l.to_owned(),
        tls: false,
        bare_lf: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(lines: &[Line]) -> Vec<(Direction, &str)> {
        lines
            .iter()
            .map(|l| (l.direction, l.text.as_str()))
            .collect()
    }

    #[test]
    fn c_s_form() {
        let lines = parse("S: 220 hi\r\nC: EHLO x\r\n\r\nS: 250-a\nS: 250 b\nremark\n");
        assert_eq!(
            dirs(&lines),
            [
                (Direction::Server, "220 hi"),
                (Direction::Client, "EHLO x"),
                (Direction::Server, "250-a"),
                (Direction::Server, "250 b"),
            ]
        );
    }

    #[test]
    fn swaks_form() {
        let text = "=== Trying 127.0.0.1:25...\n<-  220 mx ESMTP\n -> EHLO me\n<-  250 ok\n -> STARTTLS\n<-  220 go\n=== TLS started\n ~> EHLO me\n<~  250 ok\n";
        let lines = parse(text);
        assert_eq!(lines.len(), 7);
        assert_eq!(
            (lines[1].direction, lines[1].text.as_str()),
            (Direction::Client, "EHLO me")
        );
        assert!(lines[5].tls && lines[6].tls && !lines[4].tls);
        assert_eq!(lines[6].text, "250 ok");
    }

    #[test]
    fn bare_form() {
        let lines = parse("220 mx ESMTP\nehlo me\n250-mx\n250 SIZE 10\nquit\n221 bye\n");
        assert_eq!(
            lines.iter().map(|l| l.direction).collect::<Vec<_>>(),
            [
                Direction::Server,
                Direction::Client,
                Direction::Server,
                Direction::Server,
                Direction::Client,
                Direction::Server
            ]
        );
    }
}
