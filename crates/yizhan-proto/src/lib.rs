//! The SMTP protocol core of yizhan.
//!
//! This crate is *sans-I/O*: it turns bytes into commands, replies and message data and walks
//! both roles of an SMTP conversation through their states, but it never reads a socket, a file
//! or a clock. The server and client drivers (in `yizhan-server` and `yizhan-delivery`) own all
//! I/O and answer the questions the sessions ask.
//!
//! | module | what | RFCs |
//! | --- | --- | --- |
//! | [`address`] | mailboxes, domains, address literals, reverse- and forward-paths, source routes | 5321 4.1.2-4.1.3, 821 3.6/4.1.2, 6531 |
//! | [`command`] | every command verb, typed MAIL/RCPT parameters, parse and format | 5321 4.1.1, 821, 1869, 1870, 1985, 2920, 3030, 3207, 3461, 4954, 6152, 6531, 8689 |
//! | [`reply`] | replies, enhanced status codes, every canned reply text | 5321 4.2, 3463, 2034 |
//! | [`line`](mod@line) | the command line reader (CRLF only, length cap) | 5321 2.3.8, 4.5.3.1.4 |
//! | [`data`] | DATA (dot-unstuffing, CRLF.CRLF only), BDAT chunks, dot-stuffing for sending | 5321 4.5.2, 3030 |
//! | [`ehlo`] | typed EHLO capabilities | 5321 4.1.1.1, 1869 |
//! | [`server`] | the receiver-SMTP state machine | 5321, 821 |
//! | [`client`] | the sender-SMTP state machine | 5321, 2920, 3207, 4954 |
#![forbid(unsafe_code)]

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod ehlo;
pub mod header;
pub mod line;
pub mod reply;
#[cfg(feature = "serde")]
mod serde_impls;
pub mod server;
pub mod transcript;

pub use address::{
    AddressError, AddressLiteral, Domain, ForwardPath, Host, LocalPart, Mailbox, Path, ReversePath,
};
pub use command::{Command, CommandError, MailKind, MailParams, RcptParams};
pub use reply::{EnhancedCode, Reply};
