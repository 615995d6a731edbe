//! The envelope: everything about a message except its body, with a state per recipient.
//!
//! It keeps the RFC 5321 envelope (reverse-path, forward-paths, MAIL/RCPT parameters of
//! RFC 3461 DSN, RFC 6152 8BITMIME and RFC 6531 SMTPUTF8), what we know about the client (for
//! the trace and for reports) and, per recipient, the delivery state the queue runner records
//! before it moves on (DESIGN.md invariant 3). It is stored as JSON in the index row.

use serde::{Deserialize, Serialize};
use yizhan_proto::address::{ForwardPath, Host, Mailbox, ReversePath};
use yizhan_proto::command::{Body, Notify, Orcpt, Ret};

use crate::QueueId;

/// One message in the spool, minus its body. Addresses and parameters are `yizhan-proto`'s
/// types, parsed once when the message came in and stored in their SMTP form (schema 4).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The queue id; [`Spool::commit`](crate::Spool::commit) sets it from the `Incoming`.
    pub id: QueueId,
    /// When the message was accepted, in Unix seconds. The retry schedule gives up relative to it.
    pub received_at: i64,
    /// Size of the body file in bytes; [`Spool::commit`](crate::Spool::commit) sets it.
    pub size: u64,
    /// The reverse-path with its RFC 821 source route, if any; `<>` (RFC 5321 4.5.5: a report,
    /// never to be reported on again).
    pub reverse_path: ReversePath,
    /// `ENVID=` of MAIL (RFC 3461 4.4), xtext-decoded.
    #[serde(default)]
    pub envid: Option<String>,
    /// `RET=` of MAIL (RFC 3461 4.3).
    #[serde(default)]
    pub ret: Option<Ret>,
    /// `BODY=` of MAIL (RFC 6152, RFC 3030).
    #[serde(default)]
    pub body: Option<Body>,
    /// Whether MAIL carried `SMTPUTF8` (RFC 6531 3.4).
    #[serde(default)]
    pub smtputf8: bool,
    /// Who sent it to us.
    pub client: ClientInfo,
    /// The recipients, each with its own delivery state.
    pub recipients: Vec<Recipient>,
    /// Held messages stay in the spool but are never due (an operator releases them).
    #[serde(default)]
    pub held: bool,
}

/// What we know about the client that handed us the message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// The HELO/EHLO argument (`None` for a message made here or dropped by `sendmail`).
    #[serde(default)]
    pub helo: Option<Host>,
    /// Where it came from.
    pub origin: Origin,
    /// The authenticated user (RFC 4954), if any.
    #[serde(default)]
    pub auth_user: Option<Mailbox>,
    /// The TLS version and cipher, if the session used STARTTLS (RFC 3207) or implicit TLS.
    #[serde(default)]
    pub tls: Option<String>,
    /// The id of the session's recording (`[record]`), if it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
}

/// Where a message came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// An SMTP client at this address.
    Network {
        /// Its address and port.
        address: std::net::SocketAddr,
    },
    /// This host: `sendmail` run by `uid`, or the server itself (a report) with none.
    Local {
        /// The user id of the submitting process.
        #[serde(default)]
        uid: Option<u32>,
    },
}

impl Default for Origin {
    fn default() -> Self {
        Origin::Local { uid: None }
    }
}

/// One recipient of a message and its delivery state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Recipient {
    /// The mailbox to deliver to, after alias expansion, e.g. `user@test.example`.
    pub address: Mailbox,
    /// The forward-path as the client gave it, e.g. `<list@test.example>` (for reports, for
    /// `ORCPT` when relaying, and for its source route).
    pub original: ForwardPath,
    /// `Some` for local delivery into this mailbox; `None` for a remote recipient.
    pub mailbox: Option<LocalMailbox>,
    /// `NOTIFY=` of RCPT (RFC 3461 4.1).
    #[serde(default)]
    pub notify: Option<Notify>,
    /// `ORCPT=` of RCPT (RFC 3461 4.2).
    #[serde(default)]
    pub orcpt: Option<Orcpt>,
    /// Where delivery stands.
    #[serde(default)]
    pub status: RecipientStatus,
    /// How many delivery attempts have been made.
    #[serde(default)]
    pub attempts: u32,
    /// When the next attempt is due (Unix seconds); meaningful while `Pending`.
    #[serde(default)]
    pub next_attempt: i64,
    /// The error of the last failed attempt, for `mailq`-style listings.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Recipient {
    /// A recipient that is due at once: `Pending`, no attempts, `next_attempt = due`
    /// (use the message's `received_at`).
    pub fn pending(
        address: Mailbox,
        original: ForwardPath,
        mailbox: Option<LocalMailbox>,
        due: i64,
    ) -> Self {
        Recipient {
            address,
            original,
            mailbox,
            notify: None,
            orcpt: None,
            status: RecipientStatus::Pending,
            attempts: 0,
            next_attempt: due,
            last_error: None,
        }
    }

    /// A pending recipient given as `<address>` (no route, no alias), due at `due`.
    pub fn to(address: Mailbox, mailbox: Option<LocalMailbox>, due: i64) -> Self {
        let original = ForwardPath::Path(yizhan_proto::address::Path::new(address.clone()));
        Recipient::pending(address, original, mailbox, due)
    }

    /// Whether the recipient still waits for delivery.
    pub fn is_pending(&self) -> bool {
        matches!(self.status, RecipientStatus::Pending)
    }
}

/// A local mailbox, already canonical (lower-cased domain and local part).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LocalMailbox {
    /// The domain, e.g. `test.example`.
    pub domain: String,
    /// The local part, e.g. `user`.
    pub local: String,
}

/// The delivery state of one recipient.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Not delivered yet; due at `next_attempt`.
    #[default]
    Pending,
    /// Delivered (final).
    Delivered {
        /// When, in Unix seconds.
        at: i64,
        /// Where to, e.g. the Maildir file, or the remote server's reply.
        detail: String,
    },
    /// Failed permanently or gave up (final); a report is owed to the sender.
    Failed {
        /// When, in Unix seconds.
        at: i64,
        /// Why.
        detail: String,
    },
}

impl Envelope {
    /// The earliest `next_attempt` of a pending recipient, or `None` when none is pending.
    /// A held message still has one; [`Spool::due`](crate::Spool::due) skips held messages.
    pub fn next_due(&self) -> Option<i64> {
        self.recipients
            .iter()
            .filter(|r| r.is_pending())
            .map(|r| r.next_attempt)
            .min()
    }

    /// Whether every recipient is `Delivered` or `Failed`, so the message can be removed.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| !r.is_pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(address: &str, due: i64) -> Recipient {
        Recipient::to(address.parse().unwrap(), None, due)
    }

    fn envelope() -> Envelope {
        Envelope {
            id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            received_at: 1000,
            size: 10,
            reverse_path: ReversePath::Null,
            envid: None,
            ret: None,
            body: None,
            smtputf8: false,
            client: ClientInfo::default(),
            recipients: vec![recipient("a@x", 1500), recipient("b@x", 1200)],
            held: false,
        }
    }

    #[test]
    fn next_due_is_the_earliest_pending_recipient() {
        let mut env = envelope();
        assert_eq!(env.next_due(), Some(1200));
        assert!(!env.is_finished());
        env.recipients[1].status = RecipientStatus::Delivered {
            at: 1201,
            detail: "ok".into(),
        };
        assert_eq!(env.next_due(), Some(1500));
        env.recipients[0].status = RecipientStatus::Failed {
            at: 1501,
            detail: "no".into(),
        };
        assert_eq!(env.next_due(), None);
        assert!(env.is_finished());
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let mut env = envelope();
        env.recipients[0].status = RecipientStatus::Failed {
            at: 7,
            detail: "550 no such user".into(),
        };
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), env);
        // Optional fields may be absent (older or hand-written rows).
        let minimal = r#"{"id":"0123456789abcdef0123456789abcdef","received_at":1,"size":2,
            "reverse_path":"<>","client":{"origin":{"kind":"local"}},
            "recipients":[{"address":"u@d","original":"<u@d>","mailbox":{"domain":"d","local":"u"}}]}"#;
        let env: Envelope = serde_json::from_str(minimal).unwrap();
        assert_eq!(env.recipients[0].status, RecipientStatus::Pending);
        assert!(!env.held);
    }
}
