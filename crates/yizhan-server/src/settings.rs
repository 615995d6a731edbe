//! Typed settings the server receives.
//!
//! The binary parses and validates its configuration file and hands the server these plain
//! values; this module knows nothing about any file format. Every default lives in exactly one
//! place: the `Default` impls below (the binary's configuration layer starts from
//! [`Settings::default`] and overrides what the file says).
//!
//! RFC sections behind the defaults:
//! - RFC 5321 4.5.3.1.4: a command line is at least 512 octets; [`MIN_LINE_LENGTH`].
//! - RFC 5321 4.5.3.1.8: at least 100 recipients must be buffered; we default to 1000.
//! - RFC 5321 4.5.3.2: the timeouts in [`Timeouts`] (4.5.3.2.7 for commands; the data timeouts
//!   mirror the sender's 4.5.3.2.5 and 4.5.3.2.6).
//! - RFC 1870: the `SIZE` limit advertised from [`SmtpSettings::max_message_size`].
//! - RFC 5321 3.5.3 and 7.3: VRFY / EXPN may be disabled or answered with 252 ([`VerifyPolicy`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::directory::Directory;

/// The smallest line length limit allowed: RFC 5321 4.5.3.1.4 (512 octets including CRLF).
pub const MIN_LINE_LENGTH: usize = 512;

/// Everything the server needs to run, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The name this server uses for itself in the greeting, `EHLO` reply and `Received:` lines.
    pub hostname: String,
    /// The directory holding the spool and the local mailboxes.
    pub data_dir: PathBuf,
    /// The sockets to listen on.
    pub listeners: Vec<ListenerSettings>,
    /// SMTP session limits and extensions.
    pub smtp: SmtpSettings,
    /// Local domains, mailboxes, aliases and relocated users.
    pub directory: Directory,
    /// The outgoing queue's schedule.
    pub queue: QueueSettings,
    /// Time given to sessions in flight on SIGTERM before they are answered 421 and closed.
    pub shutdown_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            data_dir: PathBuf::from("./yizhan-data"),
            listeners: vec![ListenerSettings::default()],
            smtp: SmtpSettings::default(),
            directory: Directory::default(),
            queue: QueueSettings::default(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSettings {
    /// The address and port to bind.
    pub address: SocketAddr,
    /// What is spoken on it.
    pub kind: ListenerKind,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 2525)),
            kind: ListenerKind::Smtp,
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Relay / MX service (RFC 5321), usually port 25.
    Smtp,
    /// Message submission (RFC 6409), usually port 587.
    Submission,
    /// Message submission over implicit TLS (RFC 8314), usually port 465.
    Submissions,
}

impl ListenerKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [ListenerKind; 3] = [Self::Smtp, Self::Submission, Self::Submissions];

    /// The name used in the configuration file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::Submission => "submission",
            Self::Submissions => "submissions",
        }
    }

    /// The kind named `name` (exact, lower-case), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SMTP session limits and the extensions offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// The largest message accepted, in octets; advertised with `SIZE` (RFC 1870).
    pub max_message_size: u64,
    /// The most recipients accepted per transaction (RFC 5321 4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// The longest command line accepted, in octets including CRLF (at least
    /// [`MIN_LINE_LENGTH`], RFC 5321 4.5.3.1.4).
    pub max_line_length: usize,
    /// After this many error replies in one session the server answers 421 and closes.
    pub max_errors: u32,
    /// The most simultaneous connections over all listeners.
    pub max_connections: usize,
    /// The most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// How long the server waits for the client (RFC 5321 4.5.3.2).
    pub timeouts: Timeouts,
    /// How `VRFY` is answered (RFC 5321 3.5.1, 7.3).
    pub vrfy: VerifyPolicy,
    /// How `EXPN` is answered (RFC 5321 3.5.2, 7.3).
    pub expn: VerifyPolicy,
    /// Whether the RFC 821 `SEND`, `SOML` and `SAML` commands are served (else 502).
    pub send_soml_saml: bool,
    /// Whether `HELP` is answered (else 502).
    pub help: bool,
    /// Offer `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// Offer `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// Offer `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// Offer `CHUNKING` / `BDAT` (RFC 3030).
    pub chunking: bool,
    /// Offer `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 2048,
            max_errors: 20,
            max_connections: 1000,
            max_connections_per_ip: 50,
            timeouts: Timeouts::default(),
            // Answer VRFY honestly-but-uselessly (252) and refuse EXPN: neither leaks the
            // directory to anonymous clients (RFC 5321 7.3), and 252 keeps naive senders happy.
            vrfy: VerifyPolicy::CannotVerify,
            expn: VerifyPolicy::Disabled,
            send_soml_saml: true,
            help: true,
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            chunking: true,
            enhanced_status_codes: true,
        }
    }
}

/// Server-side timeouts (RFC 5321 4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the next command (RFC 5321 4.5.3.2.7: 5 minutes).
    pub command: Duration,
    /// Waiting for the next chunk of message data (3 minutes, mirroring the sender's DATA block
    /// timeout of RFC 5321 4.5.3.2.5).
    pub data_block: Duration,
    /// The whole of the message data, up to the final dot (10 minutes, mirroring the sender's
    /// DATA termination timeout of RFC 5321 4.5.3.2.6).
    pub data_termination: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            data_termination: Duration::from_secs(600),
        }
    }
}

/// How `VRFY` or `EXPN` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyPolicy {
    /// `502` command not implemented.
    Disabled,
    /// `252` cannot verify, but will accept the message and attempt delivery (RFC 5321 3.5.3).
    CannotVerify,
    /// Real answers from the directory.
    Enabled,
}

impl VerifyPolicy {
    /// Every policy, in the order they are documented.
    pub const ALL: [VerifyPolicy; 3] = [Self::Disabled, Self::CannotVerify, Self::Enabled];

    /// The name used in the configuration file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::CannotVerify => "cannot-verify",
            Self::Enabled => "enabled",
        }
    }

    /// The policy named `name` (exact, lower-case), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.as_str() == name)
    }
}

impl std::fmt::Display for VerifyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outgoing queue's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// The most deliveries in flight at once.
    pub concurrency: usize,
    /// The delay before the first retry after a temporary failure.
    pub retry_initial: Duration,
    /// The longest delay between two retries (the backoff stops growing here).
    pub retry_max_backoff: Duration,
    /// After this long in the queue a message is bounced (RFC 5321 4.5.4.1: 4-5 days).
    pub give_up_after: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            retry_initial: Duration::from_secs(300),
            retry_max_backoff: Duration::from_secs(4000),
            give_up_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let s = Settings::default();
        assert_eq!(s.hostname, "localhost");
        assert_eq!(s.data_dir, PathBuf::from("./yizhan-data"));
        assert_eq!(
            s.listeners,
            vec![ListenerSettings {
                address: "127.0.0.1:2525".parse().unwrap(),
                kind: ListenerKind::Smtp
            }]
        );
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.smtp.max_message_size, 10_485_760);
        // RFC 5321 4.5.3.1.4: never below 512.
        assert!(s.smtp.max_line_length >= MIN_LINE_LENGTH);
        // RFC 5321 4.5.3.1.8: at least 100 recipients.
        assert!(s.smtp.max_recipients >= 100);
        // RFC 5321 4.5.3.2.
        assert_eq!(s.smtp.timeouts.command, Duration::from_secs(300));
        assert_eq!(s.smtp.timeouts.data_block, Duration::from_secs(180));
        assert_eq!(s.smtp.timeouts.data_termination, Duration::from_secs(600));
        assert_eq!(s.smtp.vrfy, VerifyPolicy::CannotVerify);
        assert_eq!(s.smtp.expn, VerifyPolicy::Disabled);
        assert_eq!(s.queue.give_up_after, Duration::from_secs(432_000));
        assert!(s.directory.is_local_domain("localhost"));
    }

    #[test]
    fn names_round_trip() {
        for kind in ListenerKind::ALL {
            assert_eq!(ListenerKind::from_name(kind.as_str()), Some(kind));
        }
        for policy in VerifyPolicy::ALL {
            assert_eq!(VerifyPolicy::from_name(policy.as_str()), Some(policy));
        }
        assert_eq!(ListenerKind::from_name("SMTP"), None);
        assert_eq!(VerifyPolicy::from_name("yes"), None);
    }
}
