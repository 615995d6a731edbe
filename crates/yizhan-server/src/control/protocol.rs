//! The control protocol: one JSON [`Request`] per line, one JSON [`Response`] line each, and
//! the stable view of a queued message they carry ([`MessageInfo`]).

use serde::{Deserialize, Serialize};
use yizhan_spool::{Envelope, RecipientStatus};

use super::select::{Acted, Action};

/// The most ids one `act` request may name (the tools send bigger selections in parts).
pub const MAX_ACT_IDS: usize = 10_000;

/// One request line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The messages in the queue, oldest first: all of them, or a page of `limit` after the
    /// id `after` (`queue list` pages through a large queue so).
    List {
        /// Only messages after this id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// At most this many.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// One message with its header section.
    Show {
        /// Queue id or unique prefix.
        id: String,
        /// Also the message text after the header section (at most 256 KiB of it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        body: bool,
    },
    /// Make pending recipients due now: of one message, of one recipient domain, or (neither
    /// given) of every message that is not held.
    Flush {
        /// Queue id or unique prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Recipient domain (case-insensitive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
    },
    /// Keep a message in the queue without trying to deliver it.
    Hold {
        /// Queue id or unique prefix.
        id: String,
    },
    /// Undo `hold`; pending recipients become due now.
    Release {
        /// Queue id or unique prefix.
        id: String,
    },
    /// Remove a message from the queue, without a report to its sender.
    Delete {
        /// Queue id or unique prefix.
        id: String,
    },
    /// Start delivery over: clears a hold; the pending recipients lose their attempts and
    /// last error and are due now.
    Requeue {
        /// Queue id or unique prefix.
        id: String,
    },
    /// Give up on the pending recipients now, with a failure report to the sender.
    Bounce {
        /// Queue id or unique prefix.
        id: String,
    },
    /// One action on each of many messages, applied together (one group commit); the
    /// answer says what happened to each.
    Act {
        /// What to do.
        action: Action,
        /// Queue ids or unique prefixes, at most [`MAX_ACT_IDS`].
        ids: Vec<String>,
    },
    /// Follow what happens: the connection then carries a [`Response::Watching`] line and one
    /// line per event ([`Response::Event`]) until the client closes it.
    Watch {
        /// Only events about this address (part of it, without case).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// Instead, open this user's terminal (RFC 821 SEND, SOML, SAML): one
        /// [`Response::Terminal`] line per message; the client answers each with an empty
        /// line once it has shown it (a message not answered within two seconds is stored
        /// in the mailbox instead).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Look into the maildrop now.
    Pickup,
    /// Read the configuration file again and apply it (as SIGHUP does).
    Reload,
}

/// One response line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `list`.
    Queue {
        /// Oldest first.
        messages: Vec<MessageInfo>,
    },
    /// Answer to `show`.
    Message {
        /// The envelope.
        message: MessageInfo,
        /// The message's header section (lossy UTF-8, CRLF line ends, at most 64 KiB).
        headers: String,
        /// The text after the header section when asked (lossy UTF-8, at most 256 KiB, then a
        /// line saying how much was left out).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// Answer to the operations that change something.
    Done {
        /// Messages affected.
        messages: usize,
        /// Pending recipients in them.
        recipients: usize,
    },
    /// Answer to `act`.
    Acted(Acted),
    /// Answer to `watch`: events follow.
    Watching,
    /// Something happened (see `yizhan_server::events::Event`).
    Event {
        /// The event, as the admin API's stream gives it.
        event: serde_json::Value,
    },
    /// A message shown on the watched user's terminal.
    Terminal {
        /// The message.
        message: crate::events::TerminalMessage,
    },
    /// The watcher read too slowly: this many events were skipped.
    Missed {
        /// How many.
        count: u64,
    },
    /// Answer to `reload`: the new configuration is in force.
    Reloaded {
        /// Settings that differ in the file but need a restart (kept as they were).
        needs_restart: Vec<String>,
    },
    /// The request failed; nothing was changed.
    Error {
        /// What kind of failure.
        kind: ErrorKind,
        /// For humans.
        message: String,
    },
}

/// Why a request failed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request does not parse, or its id is not a queue id (or an ambiguous prefix).
    BadRequest,
    /// No such message.
    NotFound,
    /// The message is held (`flush` of one held message).
    Held,
    /// The spool failed (transient; try again).
    Spool,
    /// The server does not offer this (e.g. no pickup task running).
    Unavailable,
    /// The configuration file has problems (`reload`); the old one stays in force.
    Config,
}

/// A message as the control protocol shows it: a stable view of the spool [`Envelope`]
/// (the spool's own format may change; this is the interface of `queue list --json`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Queue id (32 hex digits).
    pub id: String,
    /// Arrival, Unix seconds.
    pub received_at: i64,
    /// Body size in bytes.
    pub size: u64,
    /// Reverse-path; `""` for the null sender `<>`.
    pub sender: String,
    /// Whether the message is on hold.
    pub held: bool,
    /// Every recipient with its state.
    pub recipients: Vec<RecipientInfo>,
    /// The id of the recorded session that brought it (`yizhan sessions show ID`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
}

/// One recipient of a [`MessageInfo`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RecipientInfo {
    /// Address delivered to (after alias expansion).
    pub address: String,
    /// The forward-path as given by the client.
    pub original: String,
    /// Local mailbox (`true`) or remote.
    pub local: bool,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Next attempt (Unix seconds), while pending.
    pub next_attempt: Option<i64>,
    /// Error of the last attempt.
    pub last_error: Option<String>,
    /// Where delivered to, or why it failed, once final.
    pub detail: Option<String>,
}

impl From<&Envelope> for MessageInfo {
    fn from(envelope: &Envelope) -> Self {
        MessageInfo {
            id: envelope.id.to_string(),
            received_at: envelope.received_at,
            size: envelope.size,
            sender: envelope
                .reverse_path
                .mailbox()
                .map(ToString::to_string)
                .unwrap_or_default(),
            held: envelope.held,
            recording: envelope.client.recording.clone(),
            recipients: envelope
                .recipients
                .iter()
                .map(|r| {
                    let (state, detail) = match &r.status {
                        RecipientStatus::Pending => ("pending", None),
                        RecipientStatus::Delivered { detail, .. } => {
                            ("delivered", Some(detail.clone()))
                        }
                        RecipientStatus::Failed { detail, .. } => ("failed", Some(detail.clone())),
                    };
                    RecipientInfo {
                        address: r.address.to_string(),
                        original: r.original.to_string(),
                        local: r.mailbox.is_some(),
                        state: state.to_owned(),
                        attempts: r.attempts,
                        next_attempt: r.is_pending().then_some(r.next_attempt),
                        last_error: r.last_error.clone(),
                        detail,
                    }
                })
                .collect(),
        }
    }
}
