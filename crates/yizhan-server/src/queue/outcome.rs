//! The one place an attempt's result is written into a recipient.

use std::time::Duration;

use tracing::{info, warn};
use yizhan_delivery::dsn::{Action, NotifyOn};
use yizhan_delivery::smtp::{Outcome, Reason};
use yizhan_spool::{Envelope, RecipientStatus};

use super::shared::Shared;

/// A report line owed for recipient `index`.
pub(super) struct Owed {
    pub(super) index: usize,
    pub(super) action: Action,
    pub(super) reason: Reason,
}

/// Writes an outcome into recipient `i` (in memory; the caller stores it). Permanent failures
/// are not marked failed here: they go into `owed`, and become final once their report is
/// queued.
pub(super) fn record(
    shared: &Shared,
    envelope: &mut Envelope,
    i: usize,
    outcome: Outcome,
    owed: &mut Vec<Owed>,
    dsn_relayed: bool,
) {
    let now = shared.clock.now();
    let id = envelope.id.clone();
    let received_at = envelope.received_at;
    let sender = envelope
        .reverse_path
        .mailbox()
        .map(ToString::to_string)
        .unwrap_or_default();
    let event = |to: &yizhan_proto::address::Mailbox, outcome, detail: &str| {
        shared
            .events
            .delivery(id.as_str(), &to.to_string(), &sender, outcome, detail);
    };
    let recipient = &mut envelope.recipients[i];
    let due = recipient.next_attempt;
    let attempts_before = recipient.attempts;
    recipient.attempts = recipient.attempts.saturating_add(1);
    let kind = if recipient.mailbox.is_some() {
        "local"
    } else {
        "remote"
    };
    let domain = super::domain_of(&recipient.address);
    let owe = |action, reason| Owed {
        index: i,
        action,
        reason,
    };
    match outcome {
        Outcome::Delivered(reason) => {
            info!(queue_id = %id, to = %recipient.address, detail = %reason.text, "delivered");
            let after = u64::try_from(now.saturating_sub(received_at)).unwrap_or(0);
            crate::metrics::delivery(
                "delivered",
                kind,
                domain.as_deref(),
                Some(Duration::from_secs(after)),
            );
            event(&recipient.address, "delivered", &reason.text);
            recipient.status = RecipientStatus::Delivered {
                at: now,
                detail: reason.text.clone(),
            };
            recipient.last_error = None;
            // RFC 3461 6.2.2: a next hop with DSN takes over success reports; otherwise we
            // say "delivered" (local) or "relayed".
            let action = if recipient.mailbox.is_some() {
                Action::Delivered
            } else {
                Action::Relayed
            };
            if !dsn_relayed && NotifyOn::of(recipient.notify.as_ref()).wants(action) {
                owed.push(owe(action, reason));
            }
        }
        Outcome::Transient(reason) => {
            let retry = &shared.config().settings.retry;
            match retry.next_attempt(recipient.attempts, received_at, now) {
                Some(at) => {
                    // Never "again right now", even with a zero back-off configured.
                    let at = at.max(now.saturating_add(1));
                    warn!(queue_id = %id, to = %recipient.address, attempts = recipient.attempts, retry_in = at - now, error = %reason.text, "delivery deferred");
                    crate::metrics::delivery("deferred", kind, domain.as_deref(), None);
                    event(&recipient.address, "deferred", &reason.text);
                    recipient.next_attempt = at;
                    let warn_due = shared.config().outbound.delay_warning.is_some_and(|after| {
                        retry.delay_warning_due(after, received_at, attempts_before, due, now)
                    });
                    if warn_due && NotifyOn::of(recipient.notify.as_ref()).wants(Action::Delayed) {
                        owed.push(owe(Action::Delayed, reason.clone()));
                    }
                }
                None => {
                    crate::metrics::delivery("bounced", kind, domain.as_deref(), None);
                    let reason = expired(&reason, recipient.attempts);
                    event(&recipient.address, "bounced", &reason.text);
                    owed.push(owe(Action::Failed, reason));
                }
            }
            recipient.last_error = Some(reason.text);
        }
        Outcome::Permanent(reason) => {
            crate::metrics::delivery("bounced", kind, domain.as_deref(), None);
            event(&recipient.address, "bounced", &reason.text);
            recipient.last_error = Some(reason.text.clone());
            owed.push(owe(Action::Failed, reason));
        }
    }
}

/// The reason of a recipient given up on after `attempts` (RFC 3463 X.4.7: delivery time
/// expired).
fn expired(last: &Reason, attempts: u32) -> Reason {
    let mut reason = last.clone();
    reason.text = format!("gave up after {attempts} attempts: {}", last.text);
    reason.status = "4.4.7".into();
    reason
}
