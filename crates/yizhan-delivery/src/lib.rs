//! yizhan delivery: routing, Maildir (local), MX resolution, the SMTP client driver and
//! delivery status notifications.
//!
//! | module | what |
//! | --- | --- |
//! | [`route`] | pure routing: local, smarthost or MX; RFC 821 source routes |
//! | [`maildir`] | local delivery into Maildir folders |
//! | [`mx`] | the [`mx::Resolver`] trait, its hickory implementation and MX host ordering |
//! | [`smtp`] | the tokio driver around `yizhan_proto::client::ClientSession` |
//! | [`lmtp`] | LMTP (RFC 2033) endpoints and connections to a mail store |
//! | [`dsn`] | RFC 3464 delivery status notifications, RFC 3461 NOTIFY/ORCPT text forms |
#![forbid(unsafe_code)]

pub mod dsn;
pub mod lmtp;
pub mod maildir;
pub mod mx;
pub mod route;
pub mod smtp;
