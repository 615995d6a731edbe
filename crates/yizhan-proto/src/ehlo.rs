//! Typed EHLO capabilities (RFC 5321 4.1.1.1, RFC 1869).
//!
//! Each line after the first of a 250 reply to EHLO is `keyword *(SP param)` (RFC 5321 4.1.1.1,
//! RFC 1869 4.3); keywords are case-insensitive. The known ones:
//!
//! | keyword | RFC |
//! | --- | --- |
//! | PIPELINING | 2920 |
//! | `SIZE [n]` | 1870 (no number, or 0, means no fixed limit) |
//! | 8BITMIME | 6152 |
//! | ENHANCEDSTATUSCODES | 2034 |
//! | SMTPUTF8 | 6531 |
//! | CHUNKING, BINARYMIME | 3030 |
//! | DSN | 3461 |
//! | STARTTLS | 3207 |
//! | AUTH mech... | 4954 |
//! | AUTH=mech... | the pre-standard form that old clients (Outlook Express era) look for |
//! | ETRN | 1985 |
//! | HELP | 5321 4.1.1.8 |
//! | REQUIRETLS | 8689 |
//!
//! Anything else is kept as [`Capability::Other`].

use std::fmt;

use crate::reply::Reply;

/// One EHLO capability line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `PIPELINING` (RFC 2920).
    Pipelining,
    /// `SIZE [n]` (RFC 1870); `None` when no number is given.
    Size(Option<u64>),
    /// `8BITMIME` (RFC 6152).
    EightBitMime,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    EnhancedStatusCodes,
    /// `SMTPUTF8` (RFC 6531).
    SmtpUtf8,
    /// `CHUNKING` (RFC 3030).
    Chunking,
    /// `BINARYMIME` (RFC 3030).
    BinaryMime,
    /// `DSN` (RFC 3461).
    Dsn,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mech...` (RFC 4954), mechanism names upper-cased.
    Auth(Vec<String>),
    /// `AUTH=mech...`: the pre-RFC 2554 form some old clients look for.
    AuthLegacy(Vec<String>),
    /// `ETRN` (RFC 1985).
    Etrn,
    /// `HELP` (RFC 5321 4.1.1.8).
    Help,
    /// `REQUIRETLS` (RFC 8689).
    RequireTls,
    /// Any other keyword, as written.
    Other {
        /// The keyword.
        keyword: String,
        /// Its parameters.
        params: Vec<String>,
    },
}

impl Capability {
    /// Parses one capability line (the text after `250-` or `250 `). Keywords are matched
    /// case-insensitively; unexpected parameters of known keywords are ignored; `SIZE` without
    /// a valid number is `Size(None)`.
    pub fn parse(line: &str) -> Capability {
        let mut tokens = line.split_ascii_whitespace();
        let keyword = tokens.next().unwrap_or("");
        let params: Vec<&str> = tokens.collect();
        let upper = keyword.to_ascii_uppercase();
        let mechanisms = |first: Option<&str>| -> Vec<String> {
            first
                .into_iter()
                .filter(|m| !m.is_empty())
                .chain(params.iter().copied())
                .map(str::to_ascii_uppercase)
                .collect()
        };
        if let Some(first) = upper.strip_prefix("AUTH=") {
            return Capability::AuthLegacy(mechanisms(Some(first)));
        }
        match upper.as_str() {
            "PIPELINING" => Capability::Pipelining,
            "SIZE" => Capability::Size(params.first().and_then(|n| n.parse().ok())),
            "8BITMIME" => Capability::EightBitMime,
            "ENHANCEDSTATUSCODES" => Capability::EnhancedStatusCodes,
            "SMTPUTF8" => Capability::SmtpUtf8,
            "CHUNKING" => Capability::Chunking,
            "BINARYMIME" => Capability::BinaryMime,
            "DSN" => Capability::Dsn,
            "STARTTLS" => Capability::StartTls,
            "AUTH" => Capability::Auth(mechanisms(None)),
            "ETRN" => Capability::Etrn,
            "HELP" => Capability::Help,
            "REQUIRETLS" => Capability::RequireTls,
            _ => Capability::Other {
                keyword: keyword.to_string(),
                params: params.iter().map(|p| p.to_string()).collect(),
            },
        }
    }

    /// The keyword, upper-case for known capabilities (`AUTH` for both AUTH forms).
    pub fn keyword(&self) -> &str {
        match self {
            Capability::Pipelining => "PIPELINING",
            Capability::Size(_) => "SIZE",
            Capability::EightBitMime => "8BITMIME",
            Capability::EnhancedStatusCodes => "ENHANCEDSTATUSCODES",
            Capability::SmtpUtf8 => "SMTPUTF8",
            Capability::Chunking => "CHUNKING",
            Capability::BinaryMime => "BINARYMIME",
            Capability::Dsn => "DSN",
            Capability::StartTls => "STARTTLS",
            Capability::Auth(_) | Capability::AuthLegacy(_) => "AUTH",
            Capability::Etrn => "ETRN",
            Capability::Help => "HELP",
            Capability::RequireTls => "REQUIRETLS",
            Capability::Other { keyword, .. } => keyword,
        }
    }
}

/// The EHLO line text: `SIZE 10485760`, `AUTH PLAIN LOGIN`, `AUTH=PLAIN LOGIN`.
impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Size(Some(n)) => write!(f, "SIZE {n}"),
            Capability::Auth(mechs) => {
                f.write_str("AUTH")?;
                mechs.iter().try_for_each(|m| write!(f, " {m}"))
            }
            Capability::AuthLegacy(mechs) => write!(f, "AUTH={}", mechs.join(" ")),
            Capability::Other { keyword, params } => {
                f.write_str(keyword)?;
                params.iter().try_for_each(|p| write!(f, " {p}"))
            }
            other => f.write_str(other.keyword()),
        }
    }
}

/// The capabilities of one EHLO reply, in the order advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities(pub Vec<Capability>);

impl Capabilities {
    /// Reads the capabilities from a 250 reply to EHLO: every line after the first (the
    /// greeting, RFC 5321 4.1.1.1); empty lines are skipped.
    pub fn from_ehlo_reply(reply: &Reply) -> Capabilities {
        Capabilities(
            reply
                .lines
                .iter()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .map(|l| Capability::parse(l))
                .collect(),
        )
    }

    /// The lines to advertise, one per capability (for [`Reply::ehlo_ok`]).
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(Capability::to_string).collect()
    }

    /// The capabilities in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Capability> {
        self.0.iter()
    }

    /// Whether a capability with this keyword (case-insensitive) was advertised; for keywords
    /// without a typed accessor.
    pub fn has_keyword(&self, keyword: &str) -> bool {
        self.0
            .iter()
            .any(|c| c.keyword().eq_ignore_ascii_case(keyword))
    }

    fn has(&self, probe: &Capability) -> bool {
        self.0.contains(probe)
    }

    /// `PIPELINING` (RFC 2920).
    pub fn pipelining(&self) -> bool {
        self.has(&Capability::Pipelining)
    }

    /// The `SIZE` limit (RFC 1870): `None` if SIZE is not advertised, `Some(0)` if it is but
    /// with no fixed limit.
    pub fn size(&self) -> Option<u64> {
        self.0.iter().find_map(|c| match c {
            Capability::Size(n) => Some(n.unwrap_or(0)),
            _ => None,
        })
    }

    /// `8BITMIME` (RFC 6152).
    pub fn eight_bit_mime(&self) -> bool {
        self.has(&Capability::EightBitMime)
    }

    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub fn enhanced_status_codes(&self) -> bool {
        self.has(&Capability::EnhancedStatusCodes)
    }

    /// `SMTPUTF8` (RFC 6531).
    pub fn smtputf8(&self) -> bool {
        self.has(&Capability::SmtpUtf8)
    }

    /// `CHUNKING` (RFC 3030).
    pub fn chunking(&self) -> bool {
        self.has(&Capability::Chunking)
    }

    /// `BINARYMIME` (RFC 3030).
    pub fn binarymime(&self) -> bool {
        self.has(&Capability::BinaryMime)
    }

    /// `DSN` (RFC 3461).
    pub fn dsn(&self) -> bool {
        self.has(&Capability::Dsn)
    }

    /// `STARTTLS` (RFC 3207).
    pub fn starttls(&self) -> bool {
        self.has(&Capability::StartTls)
    }

    /// `ETRN` (RFC 1985).
    pub fn etrn(&self) -> bool {
        self.has(&Capability::Etrn)
    }

    /// `REQUIRETLS` (RFC 8689).
    pub fn requiretls(&self) -> bool {
        self.has(&Capability::RequireTls)
    }

    /// The SASL mechanisms offered: the union of `AUTH` and `AUTH=` lines, in order, without
    /// duplicates (RFC 4954 3).
    pub fn auth_mechanisms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.0 {
            if let Capability::Auth(mechs) | Capability::AuthLegacy(mechs) = c {
                for m in mechs {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
            }
        }
        out
    }
}

impl From<Vec<Capability>> for Capabilities {
    fn from(caps: Vec<Capability>) -> Capabilities {
        Capabilities(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::ReplyParser;

    // Display then parse gives the same capability, for every variant.
    #[test]
    fn round_trip() {
        let cases: &[(Capability, &str)] = &[
            (Capability::Pipelining, "PIPELINING"),
            (Capability::Size(Some(10485760)), "SIZE 10485760"),
            (Capability::Size(Some(0)), "SIZE 0"),
            (Capability::Size(None), "SIZE"),
            (Capability::EightBitMime, "8BITMIME"),
            (Capability::EnhancedStatusCodes, "ENHANCEDSTATUSCODES"),
            (Capability::SmtpUtf8, "SMTPUTF8"),
            (Capability::Chunking, "CHUNKING"),
            (Capability::BinaryMime, "BINARYMIME"),
            (Capability::Dsn, "DSN"),
            (Capability::StartTls, "STARTTLS"),
            (
                Capability::Auth(vec!["PLAIN".into(), "LOGIN".into()]),
                "AUTH PLAIN LOGIN",
            ),
            (Capability::Auth(vec![]), "AUTH"),
            (
                Capability::AuthLegacy(vec!["PLAIN".into(), "LOGIN".into()]),
                "AUTH=PLAIN LOGIN",
            ),
            (Capability::AuthLegacy(vec![]), "AUTH="),
            (Capability::Etrn, "ETRN"),
            (Capability::Help, "HELP"),
            (Capability::RequireTls, "REQUIRETLS"),
            (
                Capability::Other {
                    keyword: "X-FOO".into(),
                    params: vec![],
                },
                "X-FOO",
            ),
            (
                Capability::Other {
                    keyword: "MT-PRIORITY".into(),
                    params: vec!["MIXER".into()],
                },
                "MT-PRIORITY MIXER",
            ),
        ];
        for (cap, text) in cases {
            assert_eq!(cap.to_string(), *text);
            assert_eq!(Capability::parse(text), *cap, "{text}");
        }
    }

    // RFC 1869 4.3: keywords are case-insensitive; odd forms are handled leniently.
    #[test]
    fn parse_lenient() {
        let cases: &[(&str, Capability)] = &[
            ("pipelining", Capability::Pipelining),
            ("Size 100", Capability::Size(Some(100))),
            ("SIZE abc", Capability::Size(None)),
            ("SIZE  200  ", Capability::Size(Some(200))),
            (
                "auth login  cram-md5",
                Capability::Auth(vec!["LOGIN".into(), "CRAM-MD5".into()]),
            ),
            ("auth=login", Capability::AuthLegacy(vec!["LOGIN".into()])),
            ("AUTH= LOGIN", Capability::AuthLegacy(vec!["LOGIN".into()])),
            ("starttls", Capability::StartTls),
            (
                "",
                Capability::Other {
                    keyword: String::new(),
                    params: vec![],
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Capability::parse(text), *want, "{text}");
        }
    }

    // The seed's capture of a real (Coremail) server's EHLO reply.
    #[test]
    fn parse_seed_capture() {
        let wire =
            b"250-mail\r\n250-PIPELINING\r\n250-AUTH LOGIN PLAIN\r\n250-AUTH=LOGIN PLAIN\r\n\
250-coremail 1Uxr2xKj7kG0xkI17xGrU7I0s8FY2U3Uj8Cz28x1UUUUU7Ic2I0Y2UFjiwORUCa0xDrUUUUj\r\n\
250-STARTTLS\r\n250 8BITMIME\r\n";
        let mut parser = ReplyParser::new(512);
        parser.push(wire);
        let reply = parser
            .next_reply()
            .and_then(Result::ok)
            .expect("the capture parses");
        let caps = Capabilities::from_ehlo_reply(&reply);
        let login_plain = vec!["LOGIN".to_string(), "PLAIN".to_string()];
        assert_eq!(
            caps.0,
            vec![
                Capability::Pipelining,
                Capability::Auth(login_plain.clone()),
                Capability::AuthLegacy(login_plain.clone()),
                Capability::Other {
                    keyword: "coremail".into(),
                    params: vec![
                        "1Uxr2xKj7kG0xkI17xGrU7I0s8FY2U3Uj8Cz28x1UUUUU7Ic2I0Y2UFjiwORUCa0xDrUUUUj"
                            .into()
                    ],
                },
                Capability::StartTls,
                Capability::EightBitMime,
            ]
        );
        assert!(caps.pipelining() && caps.starttls() && caps.eight_bit_mime());
        assert!(!caps.chunking() && !caps.smtputf8() && !caps.dsn());
        assert_eq!(caps.auth_mechanisms(), login_plain);
        assert_eq!(caps.size(), None);
        assert!(caps.has_keyword("COREMAIL"));
        // The lines re-advertise the same capabilities.
        let again = Capabilities::from_ehlo_reply(&Reply::ehlo_ok("h", "p", &caps.lines()));
        assert_eq!(again, caps);
    }

    #[test]
    fn accessors() {
        let caps = Capabilities::from(vec![
            Capability::Size(None),
            Capability::EnhancedStatusCodes,
            Capability::SmtpUtf8,
            Capability::Chunking,
            Capability::BinaryMime,
            Capability::Dsn,
            Capability::Etrn,
            Capability::RequireTls,
            Capability::AuthLegacy(vec!["LOGIN".into()]),
            Capability::Auth(vec!["PLAIN".into(), "LOGIN".into()]),
        ]);
        assert_eq!(caps.size(), Some(0));
        assert!(caps.enhanced_status_codes() && caps.smtputf8() && caps.chunking());
        assert!(caps.binarymime() && caps.dsn() && caps.etrn() && caps.requiretls());
        assert!(!caps.pipelining() && !caps.starttls() && !caps.eight_bit_mime());
        assert_eq!(
            caps.auth_mechanisms(),
            vec!["LOGIN".to_string(), "PLAIN".to_string()]
        );
        assert_eq!(
            Capabilities::from(vec![Capability::Size(Some(5))]).size(),
            Some(5)
        );
        assert_eq!(caps.iter().count(), 10);
        // The greeting line is skipped even when it looks like a keyword.
        let reply = Reply::multi(
            250,
            None,
            vec!["STARTTLS".into(), "SIZE 9".into(), String::new()],
        );
        assert_eq!(
            Capabilities::from_ehlo_reply(&reply).0,
            vec![Capability::Size(Some(9))]
        );
    }
}
