//! Delivery status notifications (RFC 3464) queued as new messages.

use std::io::Read;
use std::sync::Arc;

use tracing::{info, warn};
use yizhan_delivery::dsn::{self, Action, NotifyOn, RecipientReport, Report, Return};
use yizhan_delivery::smtp::Reason;
use yizhan_proto::address::{ForwardPath, Path, ReversePath};
use yizhan_proto::command::{Body, Ret};
use yizhan_spool::{ClientInfo, Envelope, QueueId, Recipient, RecipientStatus, SpoolError};

use super::outcome::Owed;
use super::shared::Shared;
use crate::directory::Resolution;
use crate::policy;

/// Commits the reports owed for this round: one per kind (failures, delays, successes), each
/// listing only the recipients it is about, and only those whose NOTIFY asks for it. Nothing
/// for a message with a null reverse-path (RFC 5321 4.5.5, RFC 3461 6.2: never a report about a
/// report).
pub(super) async fn send_reports(
    shared: &Arc<Shared>,
    envelope: &Envelope,
    owed: &[Owed],
) -> Result<(), SpoolError> {
    let Some(sender) = envelope.reverse_path.mailbox() else {
        // The one way an accepted message ends without delivery or report: said in the log,
        // with what is dropped and why.
        for o in owed.iter().filter(|o| o.action == Action::Failed) {
            let to = &envelope.recipients[o.index].address;
            info!(queue_id = %envelope.id, %to, reason = %o.reason.text, "dropped: a message with a null reverse-path gets no report (RFC 5321 4.5.5)");
        }
        return Ok(());
    };
    let sender = sender.to_string();
    let now = shared.clock.now();
    for (kind, actions) in [
        ("failed", &[Action::Failed][..]),
        ("delayed", &[Action::Delayed][..]),
        ("success", &[Action::Delivered, Action::Relayed][..]),
    ] {
        let recipients: Vec<RecipientReport> = owed
            .iter()
            .filter(|o| actions.contains(&o.action))
            .filter(|o| NotifyOn::of(envelope.recipients[o.index].notify.as_ref()).wants(o.action))
            .map(|o| {
                let r = &envelope.recipients[o.index];
                let give_up = envelope.received_at.saturating_add(
                    i64::try_from(shared.config().settings.retry.give_up_after.as_secs())
                        .unwrap_or(i64::MAX),
                );
                RecipientReport {
                    final_recipient: r.address.to_string(),
                    original_recipient: r
                        .orcpt
                        .as_ref()
                        .map(|o| format!("{};{}", o.addr_type, o.addr)),
                    action: o.action,
                    status: o.reason.status.clone(),
                    remote_mta: o.reason.remote_mta.clone(),
                    diagnostic: o.reason.reply.clone(),
                    text: o.reason.text.clone(),
                    last_attempt: Some(now),
                    will_retry_until: (o.action == Action::Delayed).then_some(give_up),
                }
            })
            .collect();
        if recipients.is_empty() {
            continue;
        }
        let full = kind == "failed"
            && envelope.ret != Some(Ret::Hdrs)
            && envelope.size <= shared.config().outbound.report_original_limit;
        let original = read_original(shared, &envelope.id, full).await?;
        let unique = format!("{}.{kind}.{}", envelope.id, now);
        let report = Report {
            reporting_mta: &shared.config().settings.hostname,
            to: &sender,
            envid: envelope.envid.as_deref(),
            arrival: envelope.received_at,
            date: now,
            unique: &unique,
            recipients,
            original: &original,
            ret: if full { Return::Full } else { Return::Headers },
        };
        let bytes = report.build();
        let id = commit_report(shared, envelope, &bytes).await?;
        info!(queue_id = %envelope.id, report = %id, kind, "delivery status notification queued");
    }
    Ok(())
}

/// An address that was expanded (an alias or list with several members) and asked for a
/// success report: it gets an `expanded` report (RFC 3461 6.2.7.3, RFC 3464 2.3.3), since its
/// members are not asked to report success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The address as the client gave it.
    pub address: String,
    /// Its `ORCPT`, as `type;address`.
    pub original_recipient: Option<String>,
}

/// Queues the `expanded` report about `expanded` addresses of the message `envelope` (its
/// header section attached), to its sender.
pub(super) async fn send_expanded(
    shared: &Arc<Shared>,
    envelope: &Envelope,
    expanded: &[Expanded],
) -> Result<(), SpoolError> {
    let Some(sender) = envelope.reverse_path.mailbox() else {
        return Ok(());
    };
    let sender = sender.to_string();
    let now = shared.clock.now();
    let recipients = expanded
        .iter()
        .map(|e| RecipientReport {
            final_recipient: e.address.clone(),
            original_recipient: e.original_recipient.clone(),
            action: Action::Expanded,
            status: "2.0.0".into(),
            remote_mta: None,
            diagnostic: None,
            text: "delivered to the members of this alias or list".into(),
            last_attempt: Some(now),
            will_retry_until: None,
        })
        .collect();
    let original = read_original(shared, &envelope.id, false).await?;
    let unique = format!("{}.expanded.{now}", envelope.id);
    let config = shared.config();
    let report = Report {
        reporting_mta: &config.settings.hostname,
        to: &sender,
        envid: envelope.envid.as_deref(),
        arrival: envelope.received_at,
        date: now,
        unique: &unique,
        recipients,
        original: &original,
        ret: Return::Headers,
    };
    let id = commit_report(shared, envelope, &report.build()).await?;
    info!(queue_id = %envelope.id, report = %id, kind = "expanded", "delivery status notification queued");
    Ok(())
}

/// Recipients refused when the message was submitted (`sendmail` to an address the directory
/// rejects: unknown, relocated, invalid) are stored failed and never tried (`attempts == 0`):
/// their report is owed to the sender, as Postfix bounces them. It is queued first, then they
/// are counted as tried, so the report goes out once (twice after a crash in between, never
/// zero times).
pub(super) async fn report_refused(
    shared: &Arc<Shared>,
    envelope: &mut Envelope,
) -> Result<(), SpoolError> {
    let owed: Vec<Owed> = envelope
        .recipients
        .iter()
        .enumerate()
        .filter_map(|(index, r)| match (&r.status, r.attempts) {
            (RecipientStatus::Failed { detail, .. }, 0) => Some(Owed {
                index,
                action: Action::Failed,
                reason: refused(detail),
            }),
            _ => None,
        })
        .collect();
    if owed.is_empty() {
        return Ok(());
    }
    send_reports(shared, envelope, &owed).await?;
    for o in &owed {
        envelope.recipients[o.index].attempts = 1;
    }
    shared.spool.update(envelope).await
}

/// The reason of a recipient refused at submission, from its stored detail (`550 5.1.1 no
/// such user here`): its enhanced status when it has one.
fn refused(detail: &str) -> Reason {
    let status = detail
        .split_whitespace()
        .nth(1)
        .filter(|s| s.split('.').count() == 3 && s.starts_with('5'))
        .unwrap_or("5.1.1");
    Reason::local(status, detail)
}

/// The original message (all of it, or up to the end of its header section).
pub(super) async fn read_original(
    shared: &Arc<Shared>,
    id: &QueueId,
    full: bool,
) -> Result<Vec<u8>, SpoolError> {
    let body = shared.spool.open_body(id).await?;
    let id = id.clone();
    let limit = shared.config().outbound.report_original_limit;
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, SpoolError> {
        let mut bytes = Vec::new();
        let cap = if full {
            limit.saturating_add(1)
        } else {
            256 * 1024
        };
        body.take(cap)
            .read_to_end(&mut bytes)
            .map_err(|e| SpoolError::Corrupt {
                id: id.to_string(),
                reason: format!("cannot read the body: {e}"),
            })?;
        Ok(if full {
            bytes
        } else {
            dsn::header_section(&bytes).to_vec()
        })
    });
    read.await.map_err(|e| SpoolError::CommitFailed {
        reason: format!("reading the original failed: {e}"),
    })?
}

/// Queues a report as a new message: null reverse-path, the original sender as recipient
/// (into the Maildir when the sender is local, else outbound).
pub(super) async fn commit_report(
    shared: &Arc<Shared>,
    original: &Envelope,
    bytes: &[u8],
) -> Result<QueueId, SpoolError> {
    let now = shared.clock.now();
    let Some(sender) = original.reverse_path.mailbox().cloned() else {
        return Ok(original.id.clone());
    };
    let path = ForwardPath::Path(Path::new(sender.clone()));
    let mut recipients = Vec::new();
    match shared
        .config()
        .directory
        .as_ref()
        .map(|d| policy::resolve(d, &path))
    {
        Some(Resolution::Deliver(targets)) => {
            recipients.extend(
                targets
                    .into_iter()
                    .filter_map(|t| policy::queued(t, path.clone(), now)),
            );
        }
        Some(Resolution::UnknownUser | Resolution::Relocated(_)) => {
            warn!(queue_id = %original.id, to = %sender, "report not sent: the sender is no mailbox here");
            return Ok(original.id.clone());
        }
        _ => recipients.push(Recipient::to(sender.clone(), None, now)),
    }
    let envelope = Envelope {
        id: QueueId::nil(),
        received_at: now,
        size: 0,
        reverse_path: ReversePath::Null,
        envid: None,
        ret: None,
        body: Report::is_eight_bit(bytes).then_some(Body::EightBitMime),
        // RFC 6531 3.4: a UTF-8 recipient or UTF-8 in the report's own header section.
        smtputf8: !sender.is_ascii() || Report::needs_smtputf8(bytes),
        // Made here: no client, no HELO.
        client: ClientInfo::default(),
        recipients,
        held: false,
    };
    let stored = shared.spool.enqueue(bytes, envelope).await?;
    let id = stored.id.clone();
    if let Ok(mut inbox) = shared.inbox.lock() {
        inbox.push(stored);
    }
    shared.wake.notify_one();
    Ok(id)
}
