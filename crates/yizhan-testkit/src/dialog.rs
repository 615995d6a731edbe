//! Golden SMTP dialogues: the `.dialog` format and its parser.
//!
//! ```text
//! # comment (also: blank lines)
//! ! memory-only                 directives, before the first step
//! ! max_recipients 100          (a configuration directive requires `! memory-only`)
//! C: EHLO client.test           a client line; CRLF is appended
//! R: "MAIL FROM:<>\r\nRSET\r\n" raw client bytes; escapes \r \n \t \\ \" \xNN; nothing appended
//! S: 250 2.1.0 Sender OK        the next server line, exactly; `{*}` matches one or more
//!                               non-space characters (`250 2.0.0 OK queued as {*}`)
//! S~ 250                        the next server line starts with this
//! S* 250                        a whole reply with this code: any `250-` lines, then `250 `
//! ```
//!
//! The server's output is checked line by line, in order; after the last step nothing else may
//! come. The runner is `crates/yizhan/tests/dialogs.rs`: it runs every dialogue on the real
//! server, in memory and (those without directives) over TCP against the binary, sending the
//! client steps and matching the lines it reads with [`Expect::matches`]. A directive is a
//! change of the server's configuration (`tests/dialogs/yizhan.toml`); the runner's `apply`
//! lists them. A dialogue with directives needs a server of its own, hence `! memory-only`.

use std::path::Path;

/// A parsed dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// `! memory-only`: the dialogue needs a server configured for it, so it runs in memory
    /// only (the TCP tier runs one server with the base configuration).
    pub memory_only: bool,
    /// The configuration directives (`!` lines other than `memory-only`), with their line
    /// numbers.
    pub directives: Vec<(usize, String)>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// One step of a dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The line number in the file (1-based).
    pub line: usize,
    /// What happens.
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// The client sends these bytes (`C:` with its CRLF, or `R:`).
    Client(Vec<u8>),
    /// The server must write a line matching this.
    Server(Expect),
}

/// What the next server line(s) must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `S:` the whole line (with `{*}` wildcards).
    Exact(String),
    /// `S~` the line starts with this.
    Prefix(String),
    /// `S*` a whole reply with this code.
    Reply(u16),
}

/// Whether a line matched an [`Expect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMatch {
    /// The expectation is met.
    Done,
    /// Matched a continuation line of an [`Expect::Reply`]; read the next line.
    Continue,
    /// The line does not match.
    Mismatch,
}

impl Expect {
    /// Matches one server line (without its CRLF).
    pub fn matches(&self, line: &str) -> LineMatch {
        let ok = |b| {
            if b {
                LineMatch::Done
            } else {
                LineMatch::Mismatch
            }
        };
        match self {
            Expect::Exact(pattern) => ok(glob(pattern, line)),
            Expect::Prefix(prefix) => ok(line.starts_with(prefix.as_str())),
            Expect::Reply(code) => {
                let code = code.to_string();
                match line.strip_prefix(code.as_str()) {
                    Some(rest) if rest.starts_with('-') => LineMatch::Continue,
                    Some(rest) if rest.is_empty() || rest.starts_with(' ') => LineMatch::Done,
                    _ => LineMatch::Mismatch,
                }
            }
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Exact(s) => write!(f, "S: {s}"),
            Expect::Prefix(s) => write!(f, "S~ {s}"),
            Expect::Reply(code) => write!(f, "S* {code}"),
        }
    }
}

/// `{*}` in `pattern` matches one or more non-space characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once("{*}") {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            let run = rest.find(' ').unwrap_or(rest.len());
            // Try every length of the wildcard run (at least one character).
            (1..=run)
                .filter(|&n| rest.is_char_boundary(n))
                .any(|n| glob(tail, &rest[n..]))
        }
    }
}

/// Why a dialogue did not parse or did not run as written.
#[derive(Debug, thiserror::Error)]
pub enum DialogError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// The error.
        source: std::io::Error,
    },
    /// A line of the file is not valid dialogue syntax.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The server did not answer as the dialogue expects.
    #[error("{file}:{line}: expected `{expected}`, got {got}\n--- transcript ---\n{transcript}")]
    Mismatch {
        /// The file.
        file: String,
        /// The line number of the expectation (or client step) that failed.
        line: usize,
        /// The expectation.
        expected: String,
        /// What the server wrote instead.
        got: String,
        /// Everything exchanged up to the failure.
        transcript: String,
    },
    /// The server wrote more than the dialogue expects.
    #[error(
        "{file}: unexpected output after the last step: {got}\n--- transcript ---\n{transcript}"
    )]
    Unexpected {
        /// The file.
        file: String,
        /// The extra output.
        got: String,
        /// Everything exchanged.
        transcript: String,
    },
}

impl DialogError {
    fn in_file(self, name: &str) -> DialogError {
        match self {
            DialogError::Parse { line, message, .. } => DialogError::Parse {
                file: name.to_string(),
                line,
                message,
            },
            other => other,
        }
    }
}

/// Parses a dialogue. Errors name the line ([`read_dialog`] adds the file).
pub fn parse_dialog(text: &str) -> Result<Dialog, DialogError> {
    let mut dialog = Dialog {
        memory_only: false,
        directives: Vec::new(),
        steps: Vec::new(),
    };
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let error = |message: String| DialogError::Parse {
            file: "<dialog>".to_string(),
            line,
            message,
        };
        let trimmed = raw.trim_end_matches('\r');
        if trimmed.trim().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        if let Some(directive) = trimmed.strip_prefix('!') {
            if !dialog.steps.is_empty() {
                return Err(error("directives must come before the first step".into()));
            }
            let directive = directive.trim();
            if directive == "memory-only" {
                dialog.memory_only = true;
            } else if directive.is_empty() {
                return Err(error("an empty directive".into()));
            } else {
                dialog.directives.push((line, directive.to_string()));
            }
            continue;
        }
        let (tag, rest) = if trimmed.len() >= 2 && trimmed.is_char_boundary(2) {
            trimmed.split_at(2)
        } else {
            return Err(error(format!("not a dialogue line: {trimmed}")));
        };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let kind = match tag {
            "C:" => {
                if rest.contains(['\r', '\n']) {
                    return Err(error("C: lines cannot hold CR or LF; use R:".into()));
                }
                let mut bytes = rest.as_bytes().to_vec();
                bytes.extend_from_slice(b"\r\n");
                StepKind::Client(bytes)
            }
            "R:" => StepKind::Client(unescape(rest).map_err(error)?),
            "S:" => StepKind::Server(Expect::Exact(rest.to_string())),
            "S~" => StepKind::Server(Expect::Prefix(rest.to_string())),
            "S*" => match rest.trim().parse::<u16>() {
                Ok(code) if (200..600).contains(&code) => StepKind::Server(Expect::Reply(code)),
                _ => return Err(error(format!("S* needs a reply code, got `{rest}`"))),
            },
            _ => return Err(error(format!("unknown line tag `{tag}`"))),
        };
        dialog.steps.push(Step { line, kind });
    }
    if !dialog.directives.is_empty() && !dialog.memory_only {
        let line = dialog.directives[0].0;
        return Err(DialogError::Parse {
            file: "<dialog>".to_string(),
            line,
            message:
                "configuration directives need `! memory-only` (the TCP tier runs the base configuration)"
                    .to_string(),
        });
    }
    Ok(dialog)
}

/// Reads and parses one `.dialog` file; errors name the file.
pub fn read_dialog(path: impl AsRef<Path>) -> Result<Dialog, DialogError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DialogError::Io {
        file: name.clone(),
        source,
    })?;
    parse_dialog(&text).map_err(|e| e.in_file(&name))
}

/// Decodes the quoted string of an `R:` line.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let inner = text.strip_prefix('"').ok_or("R: needs a quoted string")?;
    let mut out = Vec::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let after = inner[i + 1..].trim();
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(format!("text after the closing quote: {after}"));
                }
                return Ok(out);
            }
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('r') => out.push(b'\r'),
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('\\') => out.push(b'\\'),
                Some('"') => out.push(b'"'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                    let byte = u8::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 2)
                        .ok_or(format!("bad \\x escape: \\x{hex}"))?;
                    out.push(byte);
                }
                other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
            },
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Err("missing closing quote".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_line_kind() {
        let text = "# c\n! memory-only\n! max_recipients 2\n\nC: EHLO a.test\nR: \"A\\r\\n\\x00\\\\\\\"\" # c\nS: 250 ok\nS~ 25\nS* 250\n";
        let dialog = parse_dialog(text).unwrap();
        assert!(dialog.memory_only);
        assert_eq!(dialog.directives, vec![(3, "max_recipients 2".to_string())]);
        let kinds: Vec<StepKind> = dialog.steps.into_iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            vec![
                StepKind::Client(b"EHLO a.test\r\n".to_vec()),
                StepKind::Client(b"A\r\n\x00\\\"".to_vec()),
                StepKind::Server(Expect::Exact("250 ok".into())),
                StepKind::Server(Expect::Prefix("25".into())),
                StepKind::Server(Expect::Reply(250)),
            ]
        );
    }

    #[test]
    fn rejects_bad_lines() {
        for (text, line) in [
            ("X: foo\n", 1),
            ("C: a\n! starttls\n", 2),
            ("! starttls\nC: a\n", 1),
            ("!\n", 1),
            ("R: \"abc\n", 1),
            ("R: abc\n", 1),
            ("R: \"\\q\"\n", 1),
            ("R: \"\\x4\"\n", 1),
            ("S* abc\n", 1),
        ] {
            match parse_dialog(text) {
                Err(DialogError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn expectations_match() {
        let cases = [
            (Expect::Exact("250 OK".into()), "250 OK", LineMatch::Done),
            (
                Expect::Exact("250 OK".into()),
                "250 OK ",
                LineMatch::Mismatch,
            ),
            (
                Expect::Exact("250 as {*}".into()),
                "250 as ABC",
                LineMatch::Done,
            ),
            (
                Expect::Exact("250 as {*}".into()),
                "250 as ",
                LineMatch::Mismatch,
            ),
            (
                Expect::Exact("250 as {*}".into()),
                "250 as A B",
                LineMatch::Mismatch,
            ),
            (Expect::Exact("<{*}> x".into()), "<a> x", LineMatch::Done),
            (Expect::Prefix("25".into()), "250 OK", LineMatch::Done),
            (Expect::Prefix("25".into()), "550 no", LineMatch::Mismatch),
            (Expect::Reply(250), "250-a", LineMatch::Continue),
            (Expect::Reply(250), "250 a", LineMatch::Done),
            (Expect::Reply(250), "250", LineMatch::Done),
            (Expect::Reply(250), "2500", LineMatch::Mismatch),
            (Expect::Reply(250), "251 a", LineMatch::Mismatch),
        ];
        for (expect, line, want) in cases {
            assert_eq!(expect.matches(line), want, "{expect} vs {line}");
        }
    }
}
