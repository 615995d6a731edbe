//! One message task: its due recipients are delivered, the outcomes recorded, reports queued.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use yizhan_delivery::dsn::Action;
use yizhan_delivery::route::{self};
use yizhan_delivery::smtp::{Outcome, Reason};
use yizhan_spool::{Envelope, RecipientStatus, SpoolError};

use super::claim::Claim;
use super::local::{LocalDelivery, deliver_local};
use super::outcome::{Owed, record};
use super::remote::{Group, GroupOutcome, deliver_remote, destination_key, held_for_turn};
use super::reports::{report_refused, send_reports};
use super::shared::Shared;

/// What a message task leaves for the runner.
#[derive(Debug, Default)]
pub(super) struct Done {
    /// When what is left of the message falls due (`None`: removed, or nothing due).
    pub(super) next_due: Option<i64>,
    /// Destinations that had no free permit: the message waits for one of them (and is not
    /// due by time until then).
    pub(super) parked: Vec<String>,
}

impl Done {
    fn due(next_due: Option<i64>) -> Done {
        Done {
            next_due,
            parked: Vec::new(),
        }
    }
}

/// Works through the due recipients of one message, recording each outcome before the next.
pub(super) async fn process(
    shared: Arc<Shared>,
    mut envelope: Envelope,
    shutdown: CancellationToken,
) -> Result<Done, SpoolError> {
    let id = envelope.id.clone();
    let Some(claim) = Claim::take(&shared, &id) else {
        debug!(queue_id = %id, "busy elsewhere (TURN); skipped");
        return Ok(Done::due(envelope.next_due()));
    };
    report_refused(&shared, &mut envelope).await?;
    let now = shared.clock.now();
    let due: Vec<usize> = (0..envelope.recipients.len())
        .filter(|&i| {
            let r = &envelope.recipients[i];
            r.is_pending() && r.next_attempt <= now
        })
        .collect();
    let mut owed: Vec<Owed> = Vec::new();

    // Local recipients, concurrently (bounded by the delivery permits). Each Maildir file is
    // named after the message and the recipient (`deliver_once`), so a crash before the
    // outcomes below are recorded cannot deliver anything twice: the retry finds its own file.
    // That is what lets one spool update cover the whole batch.
    let mut local = tokio::task::JoinSet::new();
    for &i in &due {
        let Some(mailbox) = envelope.recipients[i].mailbox.clone() else {
            continue;
        };
        let shared = shared.clone();
        let key = format!("{}.Y{}R{i}", envelope.received_at, envelope.id);
        let id = envelope.id.clone();
        // RFC 5321 4.4: the reverse-path's mailbox (`<>` for a report), without its route.
        let return_path = envelope
            .reverse_path
            .mailbox()
            .map(ToString::to_string)
            .unwrap_or_default();
        let delivery = LocalDelivery {
            id,
            key,
            return_path,
            mailbox,
            cancel: claim.cancel.clone(),
        };
        local.spawn(async move { (i, deliver_local(&shared, delivery).await) });
    }
    let mut delivered_local = false;
    while let Some(joined) = local.join_next().await {
        let (i, outcome) = match joined {
            Ok(pair) => pair,
            // A panicked delivery task: its recipient stays pending and is retried.
            Err(e) => {
                warn!(queue_id = %id, error = %e, "local delivery task failed");
                continue;
            }
        };
        record(&shared, &mut envelope, i, outcome, &mut owed, false);
        delivered_local = true;
    }
    // A message that is now finished is removed below: one commit instead of two.
    if delivered_local && !envelope.is_finished() {
        shared.spool.update(&envelope).await?;
    }
    if shutdown.is_cancelled() || claim.cancel.is_cancelled() {
        return Ok(Done::due(envelope.next_due()));
    }

    // Remote recipients, grouped by destination: one transaction per group.
    let mut groups: Vec<Group> = Vec::new();
    let mut unroutable = false;
    for &i in &due {
        let r = &envelope.recipients[i];
        if r.mailbox.is_some() {
            continue;
        }
        if held_for_turn(&shared.outbound, &r.address) {
            let outcome = Outcome::Transient(Reason::local(
                "4.4.0",
                "held for the domain's client to collect with TURN",
            ));
            record(&shared, &mut envelope, i, outcome, &mut owed, false);
            unroutable = true;
            continue;
        }
        match route::route(r, &shared.outbound.routing) {
            Ok(routed) => {
                let key = destination_key(&routed.route);
                match groups
                    .iter_mut()
                    .find(|g| g.0 == key && !g.2 && !routed.source_routed)
                {
                    Some(g) => g.3.push((i, routed.forward_path)),
                    None => groups.push((
                        key,
                        routed.route,
                        routed.source_routed,
                        vec![(i, routed.forward_path)],
                    )),
                }
            }
            Err(e) => {
                let outcome = Outcome::Permanent(Reason::local("5.1.3", e.to_string()));
                record(&shared, &mut envelope, i, outcome, &mut owed, false);
                unroutable = true;
            }
        }
    }
    if unroutable {
        shared.spool.update(&envelope).await?;
    }
    let mut parked = Vec::new();
    for (key, route, source_routed, members) in groups {
        if shutdown.is_cancelled() || claim.cancel.is_cancelled() {
            break;
        }
        let group = (key.as_str(), &route, source_routed, members.as_slice());
        match deliver_remote(&shared, &envelope, group, &claim.cancel).await {
            GroupOutcome::Done(results) => {
                for (i, outcome, dsn_relayed) in results {
                    record(&shared, &mut envelope, i, outcome, &mut owed, dsn_relayed);
                }
            }
            GroupOutcome::Suspended { until, reason } => {
                for (i, _) in &members {
                    let outcome = Outcome::Transient(reason.clone());
                    record(&shared, &mut envelope, *i, outcome, &mut owed, false);
                    let r = &mut envelope.recipients[*i];
                    if r.is_pending() {
                        r.next_attempt = r.next_attempt.max(until);
                    }
                }
            }
            GroupOutcome::Parked => {
                debug!(queue_id = %id, destination = %key, "destination busy; parked");
                parked.push(key);
                continue;
            }
        }
        shared.spool.update(&envelope).await?;
    }

    if claim.cancel.is_cancelled() {
        // Deleted by the operator: what was recorded stays until the runner removes it; no
        // report is owed for a message deleted without one.
        return Ok(Done::default());
    }
    conclude(&shared, &mut envelope, &owed).await?;
    Ok(Done {
        next_due: envelope.next_due(),
        parked,
    })
}

/// The end of a round on one message: the reports owed are queued, then the failures become
/// final (invariant 3), and a message with nothing left to do is removed.
pub(super) async fn conclude(
    shared: &Arc<Shared>,
    envelope: &mut Envelope,
    owed: &[Owed],
) -> Result<(), SpoolError> {
    let id = envelope.id.clone();
    if !owed.is_empty() {
        send_reports(shared, envelope, owed).await?;
        let now = shared.clock.now();
        for o in owed {
            if o.action == Action::Failed {
                let r = &mut envelope.recipients[o.index];
                warn!(queue_id = %id, to = %r.address, detail = %o.reason.text, "delivery failed permanently");
                r.status = RecipientStatus::Failed {
                    at: now,
                    detail: o.reason.text.clone(),
                };
            }
        }
        shared.spool.update(envelope).await?;
    }
    if envelope.is_finished() {
        // Not waited for: everything in it is recorded or, for a Maildir delivery, found
        // again by its file name if a crash undoes the removal.
        shared.spool.remove_soon(&id);
        info!(queue_id = %id, "message done, removed from the spool");
    }
    Ok(())
}
