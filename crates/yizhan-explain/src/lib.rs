//! `yizhan explain`: an SMTP dialogue, line by line, with what each line means, in the form
//! of the protocol analysis yizhan comes from (the seed article walks a JavaMail capture the
//! same way): what each command asks and which of RFC 821's three buffers it fills or clears,
//! what each reply code (and RFC 3463 enhanced code) means and whether it was the expected
//! answer, each EHLO capability, the AUTH prompts decoded with the credentials masked, the
//! envelope at DATA, and findings (AUTH offered before TLS, pipelining misuse, ...).
//!
//! The words are data ([`catalogue`], one file per language); the walk is [`engine`];
//! [`render`] writes text, Markdown or JSON. No I/O here: the caller reads the input.
#![forbid(unsafe_code)]

pub mod capture;
pub mod catalogue;
mod engine;
mod expect;
mod mask;
pub mod render;
pub mod transcript;

use serde::Serialize;

pub use catalogue::{Catalogue, Lang};
pub use engine::explain;
pub use transcript::{Direction, Line};

/// Every command verb the protocol core knows (`yizhan_proto::command`).
pub const KNOWN_VERBS: [&str; 19] = [
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP", "NOOP", "QUIT",
    "SEND", "SOML", "SAML", "TURN", "ETRN", "STARTTLS", "AUTH",
];

/// Every reply code yizhan sends (`yizhan_proto::reply`), and those of RFC 5321 4.2.
pub const KNOWN_REPLIES: [u16; 36] = [
    211, 214, 220, 221, 235, 250, 251, 252, 253, 334, 354, 421, 432, 450, 451, 452, 454, 455, 458,
    459, 500, 501, 502, 503, 504, 521, 530, 534, 535, 538, 550, 551, 552, 553, 554, 555,
];

/// Every EHLO keyword yizhan offers.
pub const KNOWN_CAPABILITIES: [&str; 14] = [
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "SMTPUTF8",
    "CHUNKING",
    "BINARYMIME",
    "DSN",
    "STARTTLS",
    "AUTH",
    "AUTH=",
    "ENHANCEDSTATUSCODES",
    "ETRN",
    "HELP",
    "REQUIRETLS",
];

/// A dialogue explained.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Explanation {
    /// Every line, in order, with its notes.
    pub entries: Vec<Entry>,
    /// What does not follow the protocol, or is unsafe.
    pub findings: Vec<Finding>,
    /// Commands, replies and messages, in one sentence.
    pub summary: String,
}

/// One line of the dialogue.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// Who sent it.
    pub direction: Direction,
    /// The line, with any secret masked.
    pub text: String,
    /// What it means.
    pub notes: Vec<Note>,
}

/// One explanation of a line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Note {
    /// The explanation.
    pub text: String,
    /// Where the RFCs say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfc: Option<String>,
}

/// Something flagged.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// Its name in the catalogue (`auth_before_tls`, ...).
    pub key: String,
    /// The line it is about (1-based, in [`Explanation::entries`]).
    pub line: usize,
    /// What it means.
    pub text: String,
    /// Where the RFCs say so.
    pub rfc: String,
}
