//! Many messages at once: the [`Filter`] that selects them (the same for `GET /api/queue`,
//! the console and `yizhan queue ... --all/--state/...`), and the [`Action`] applied to each
//! of a list of ids (`Request::Act`, `POST /api/queue/actions`).

use serde::{Deserialize, Serialize};

use super::protocol::MessageInfo;

/// What an operator can do to many messages at once.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Kept in the queue, never tried until released.
    Hold,
    /// Hold lifted, pending recipients due now.
    Release,
    /// Pending recipients due now (held messages are refused).
    Flush,
    /// Delivery starts over: hold lifted, attempts and last errors forgotten, due now.
    Requeue,
    /// Pending recipients failed now, with a failure report to the sender.
    Bounce,
    /// Removed without a report.
    Delete,
}

impl Action {
    /// Every action, in the order the tools list them.
    pub const ALL: [Action; 6] = [
        Action::Hold,
        Action::Release,
        Action::Flush,
        Action::Requeue,
        Action::Bounce,
        Action::Delete,
    ];

    /// The past tense shown after the action (`held ID`).
    pub fn done_verb(self) -> &'static str {
        match self {
            Action::Hold => "held",
            Action::Release => "released",
            Action::Flush => "flushed",
            Action::Requeue => "requeued",
            Action::Bounce => "bounced",
            Action::Delete => "deleted",
        }
    }
}

/// The answer to `Request::Act`: what was done to each message.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Acted {
    /// Messages changed.
    pub messages: usize,
    /// Pending recipients in them.
    pub recipients: usize,
    /// Each message changed, with its pending recipients.
    pub done: Vec<ActedOn>,
    /// The ids that could not be acted on, and why.
    pub errors: Vec<ActError>,
}

/// One message an action was applied to.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ActedOn {
    /// The full queue id.
    pub id: String,
    /// Its pending recipients the action concerned.
    pub recipients: usize,
}

/// One id an action could not be applied to.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ActError {
    /// The id as given.
    pub id: String,
    /// Why, for humans.
    pub error: String,
}

/// Which messages: every field given must match (none given: every message).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// `active` (waiting for its first attempt), `deferred` (tried and failed, will be tried
    /// again), `held`, or `done` (nothing pending: being removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Part of the sender address, without case (`<>` is the null sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Part of any recipient address, without case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The domain of a pending remote recipient, without case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Only messages that arrived at least this many seconds ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age: Option<i64>,
}

/// The states a [`Filter`] may name.
pub const STATES: [&str; 4] = ["active", "deferred", "held", "done"];

impl Filter {
    /// Whether the filter names nothing (it matches every message).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Refuses a state that is not one of [`STATES`], and an empty value (it would match
    /// every message: `--recipient ""` must not mean `--all`).
    pub fn check(&self) -> Result<(), String> {
        let texts = [
            ("sender", &self.sender),
            ("recipient", &self.recipient),
            ("destination", &self.destination),
        ];
        for (name, value) in texts {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!("the {name} filter is empty"));
            }
        }
        match self.state.as_deref() {
            Some(s) if !STATES.contains(&s) => Err(format!(
                "unknown state {s:?} (expected {})",
                STATES.join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// Whether `message` is selected, `now` in Unix seconds.
    pub fn matches(&self, message: &MessageInfo, now: i64) -> bool {
        let contains = |text: &str, part: &str| {
            text.to_ascii_lowercase()
                .contains(&part.to_ascii_lowercase())
        };
        self.state.as_deref().is_none_or(|s| s == state(message))
            && self.sender.as_deref().is_none_or(|part| {
                if part == "<>" {
                    message.sender.is_empty()
                } else {
                    contains(&message.sender, part)
                }
            })
            && self.recipient.as_deref().is_none_or(|part| {
                message
                    .recipients
                    .iter()
                    .any(|r| contains(&r.address, part) || contains(&r.original, part))
            })
            && self.destination.as_deref().is_none_or(|d| {
                let d = d.trim().trim_start_matches('@');
                destinations(message).any(|mine| mine.eq_ignore_ascii_case(d))
            })
            && self
                .min_age
                .is_none_or(|age| now.saturating_sub(message.received_at) >= age)
    }
}

/// The state of a message: `held`, `deferred` (a pending recipient was tried and failed),
/// `active` (pending, not tried yet) or `done` (nothing pending).
pub fn state(message: &MessageInfo) -> &'static str {
    let pending = || message.recipients.iter().filter(|r| r.state == "pending");
    if message.held {
        "held"
    } else if pending().any(|r| r.attempts > 0) {
        "deferred"
    } else if pending().next().is_some() {
        "active"
    } else {
        "done"
    }
}

/// The lower-case domains of the pending remote recipients of `message` (an address literal
/// as written, `[192.0.2.1]`).
pub fn destinations(message: &MessageInfo) -> impl Iterator<Item = String> + '_ {
    message
        .recipients
        .iter()
        .filter(|r| r.state == "pending" && !r.local)
        .filter_map(|r| r.address.rsplit_once('@'))
        .map(|(_, domain)| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::RecipientInfo;

    fn message(sender: &str, held: bool, recipients: &[(&str, bool, &str, u32)]) -> MessageInfo {
        MessageInfo {
            recording: None,
            id: "0".repeat(32),
            received_at: 1000,
            size: 10,
            sender: sender.into(),
            held,
            recipients: recipients
                .iter()
                .map(|&(address, local, state, attempts)| RecipientInfo {
                    address: address.into(),
                    original: format!("<{address}>"),
                    local,
                    state: state.into(),
                    attempts,
                    next_attempt: None,
                    last_error: None,
                    detail: None,
                })
                .collect(),
        }
    }

    #[test]
    fn states() {
        let active = message("a@x", false, &[("b@Y.example", false, "pending", 0)]);
        let deferred = message("a@x", false, &[("b@y", false, "pending", 2)]);
        let held = message("a@x", true, &[("b@y", false, "pending", 2)]);
        let done = message("a@x", false, &[("b@y", true, "delivered", 1)]);
        assert_eq!(state(&active), "active");
        assert_eq!(state(&deferred), "deferred");
        assert_eq!(state(&held), "held");
        assert_eq!(state(&done), "done");
        assert_eq!(destinations(&active).collect::<Vec<_>>(), ["y.example"]);
        assert_eq!(destinations(&done).count(), 0, "local and delivered: none");
    }

    #[test]
    fn every_field_must_match() {
        let m = message(
            "Alice@Sender.example",
            false,
            &[
                ("bob@far.example", false, "pending", 1),
                ("carol@here.example", true, "delivered", 1),
            ],
        );
        let now = 1000 + 3600;
        let yes = [
            Filter::default(),
            Filter {
                state: Some("deferred".into()),
                ..Filter::default()
            },
            Filter {
                sender: Some("alice@".into()),
                ..Filter::default()
            },
            Filter {
                recipient: Some("CAROL".into()),
                ..Filter::default()
            },
            Filter {
                destination: Some("@FAR.example".into()),
                min_age: Some(3600),
                ..Filter::default()
            },
        ];
        for f in yes {
            assert!(f.matches(&m, now), "{f:?}");
        }
        let no = [
            Filter {
                state: Some("held".into()),
                ..Filter::default()
            },
            Filter {
                sender: Some("<>".into()),
                ..Filter::default()
            },
            Filter {
                destination: Some("here.example".into()),
                ..Filter::default()
            },
            Filter {
                sender: Some("alice".into()),
                min_age: Some(3601),
                ..Filter::default()
            },
        ];
        for f in no {
            assert!(!f.matches(&m, now), "{f:?}");
        }
        let bounce = message("", false, &[("a@b", false, "pending", 0)]);
        let null = Filter {
            sender: Some("<>".into()),
            ..Filter::default()
        };
        assert!(null.matches(&bounce, now));
    }

    #[test]
    fn unknown_states_are_refused() {
        let bad = Filter {
            state: Some("frozen".into()),
            ..Filter::default()
        };
        assert!(
            bad.check()
                .unwrap_err()
                .contains("active, deferred, held, done")
        );
        assert!(Filter::default().check().is_ok());
        let empty = Filter {
            recipient: Some(" ".into()),
            ..Filter::default()
        };
        assert_eq!(empty.check().unwrap_err(), "the recipient filter is empty");
    }
}
