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
    if !shared.spool.is_shared() {
        return work(&shared, envelope, &claim, &shutdown).await;
    }
    // A queue shared with other nodes: this node's lease first, and the message as it is now.
    match shared.spool.claim(&id).await {
        Ok(Some(current)) => envelope = current,
        Ok(None) => {
            debug!(queue_id = %id, "claimed by another node; skipped");
            return Ok(Done::due(Some(shared.clock.now() + OTHER_NODE_RETRY)));
        }
        Err(SpoolError::NotFound(_)) => return Ok(Done::default()),
        Err(e) => return Err(e),
    }
    // The claim is renewed while the attempt runs; once lost, the attempt stops where it is
    // (another node has the message) and what it did is written only if the claim is back.
    let renewing = shared.spool.renew_every().map(|every| {
        let (shared, id, cancel) = (shared.clone(), id.clone(), claim.cancel.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !matches!(shared.spool.renew_claim(&id).await, Ok(true)) {
                    warn!(queue_id = %id, "claim on the shared queue lost during an attempt; stopping it");
                    cancel.cancel();
                    return;
                }
            }
        })
    });
    let done = work(&shared, envelope, &claim, &shutdown).await;
    if let Some(renewing) = renewing {
        renewing.abort();
    }
    if let Err(e) = shared.spool.unclaim(&id).await {
        debug!(queue_id = %id, error = %e, "lease not released; it expires");
    }
    done
}

/// How long a message claimed by another node waits before this node looks at it again.
const OTHER_NODE_RETRY: i64 = 60;

/// The work of [`process`] on a message this node holds.
async fn work(
    shared: &Arc<Shared>,
    mut envelope: Envelope,
    claim: &Claim,
    shutdown: &CancellationToken,
) -> Result<Done, SpoolError> {
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    report_refused(&shared, &mut envelope).await?;
    let now = shared.clock.now();
    let due: Vec<usize> = (0..envelope.recipients.len())
        .filter(|&i| {
            let r = &envelope.recipients[i];
            r.is_pending() && r.next_attempt <= now
        })
        .collect();
    let mut round = Round {
        shared: &shared,
        envelope,
        owed: Vec::new(),
        cancel: &claim.cancel,
    };
    round.local(&due).await?;
    if shutdown.is_cancelled() || claim.cancel.is_cancelled() {
        return Ok(Done::due(round.envelope.next_due()));
    }
    let groups = round.route(&due).await?;
    let parked = round.remote(groups, &shutdown).await?;
    if claim.cancel.is_cancelled() {
        // Deleted by the operator: what was recorded stays until the runner removes it; no
        // report is owed for a message deleted without one.
        return Ok(Done::default());
    }
    let mut envelope = round.envelope;
    conclude(&shared, &mut envelope, &round.owed).await?;
    Ok(Done {
        next_due: envelope.next_due(),
        parked,
    })
}

/// One round of work on a claimed message: its envelope as recorded so far, and the reports
/// owed by what happened in the round.
struct Round<'a> {
    shared: &'a Arc<Shared>,
    envelope: Envelope,
    owed: Vec<Owed>,
    /// The operator deleted the message: stop.
    cancel: &'a CancellationToken,
}

impl Round<'_> {
    fn record(&mut self, i: usize, outcome: Outcome, dsn_relayed: bool) {
        record(
            self.shared,
            &mut self.envelope,
            i,
            outcome,
            &mut self.owed,
            dsn_relayed,
        );
    }

    /// The local recipients among `due`, in the next Maildir batch. Each Maildir file is
    /// named after the message and the recipient (`deliver_once`), so a crash before the
    /// outcomes are recorded cannot deliver anything twice: the retry finds its own file.
    /// That is what lets one spool update cover the whole batch.
    async fn local(&mut self, due: &[usize]) -> Result<(), SpoolError> {
        let envelope = &self.envelope;
        // RFC 5321 4.4: the reverse-path's mailbox (`<>` for a report), without its route.
        let return_path = envelope
            .reverse_path
            .mailbox()
            .map(ToString::to_string)
            .unwrap_or_default();
        let mut local = tokio::task::JoinSet::new();
        let lmtp = &self.shared.config().outbound.routing.lmtp;
        for &i in due {
            let Some(mailbox) = envelope.recipients[i].mailbox.clone() else {
                continue;
            };
            if lmtp.contains_key(&mailbox.domain) {
                continue; // handed to the mail store over LMTP (`route`)
            }
            let shared = self.shared.clone();
            let delivery = LocalDelivery {
                id: envelope.id.clone(),
                key: format!("{}.Y{}R{i}", envelope.received_at, envelope.id),
                return_path: return_path.clone(),
                mailbox,
                cancel: self.cancel.clone(),
            };
            local.spawn(async move { (i, deliver_local(&shared, delivery).await) });
        }
        let mut delivered = false;
        while let Some(joined) = local.join_next().await {
            match joined {
                Ok((i, outcome)) => {
                    self.record(i, outcome, false);
                    delivered = true;
                }
                // A panicked delivery task: its recipient stays pending and is retried.
                Err(e) => {
                    warn!(queue_id = %self.envelope.id, error = %e, "local delivery task failed")
                }
            }
        }
        // A message that is now finished is removed at its end: one commit instead of two.
        if delivered && !self.envelope.is_finished() {
            self.shared.spool.update(&self.envelope).await?;
        }
        Ok(())
    }

    /// The remote recipients among `due`, and the local ones kept in a mail store (LMTP),
    /// grouped by destination (one transaction per group);
    /// those held for TURN or that cannot be routed are recorded here.
    async fn route(&mut self, due: &[usize]) -> Result<Vec<Group>, SpoolError> {
        let mut groups: Vec<Group> = Vec::new();
        let mut recorded = false;
        let lmtp = &self.shared.config().outbound.routing.lmtp;
        for &i in due {
            let r = &self.envelope.recipients[i];
            if r.mailbox
                .as_ref()
                .is_some_and(|m| !lmtp.contains_key(&m.domain))
            {
                continue; // a Maildir here (`local`)
            }
            if held_for_turn(&self.shared.config().outbound, &r.address) {
                let text = "held for the domain's client to collect with TURN";
                self.record(i, Outcome::Transient(Reason::local("4.4.0", text)), false);
                recorded = true;
                continue;
            }
            match route::route(r, &self.shared.config().outbound.routing) {
                Ok(routed) => {
                    let key = destination_key(&routed.route);
                    let joins = |g: &&mut Group| g.0 == key && !g.2 && !routed.source_routed;
                    match groups.iter_mut().find(joins) {
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
                    let reason = Reason::local("5.1.3", e.to_string());
                    self.record(i, Outcome::Permanent(reason), false);
                    recorded = true;
                }
            }
        }
        if recorded {
            self.shared.spool.update(&self.envelope).await?;
        }
        Ok(groups)
    }

    /// One transaction per group, each outcome recorded before the next; returns the
    /// destinations that had no free slot (the message is parked on them).
    async fn remote(
        &mut self,
        groups: Vec<Group>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<String>, SpoolError> {
        let mut parked = Vec::new();
        for (key, route, source_routed, members) in groups {
            if shutdown.is_cancelled() || self.cancel.is_cancelled() {
                break;
            }
            let group = (key.as_str(), &route, source_routed, members.as_slice());
            match deliver_remote(self.shared, &self.envelope, group, self.cancel).await {
                GroupOutcome::Done(results) => {
                    for (i, outcome, dsn_relayed) in results {
                        self.record(i, outcome, dsn_relayed);
                    }
                }
                GroupOutcome::Suspended { until, reason } => {
                    for (i, _) in &members {
                        self.record(*i, Outcome::Transient(reason.clone()), false);
                        let r = &mut self.envelope.recipients[*i];
                        if r.is_pending() {
                            r.next_attempt = r.next_attempt.max(until);
                        }
                    }
                }
                GroupOutcome::Later { until } => {
                    for (i, _) in &members {
                        let r = &mut self.envelope.recipients[*i];
                        if r.is_pending() {
                            r.next_attempt = r.next_attempt.max(until);
                        }
                    }
                }
                GroupOutcome::Parked => {
                    debug!(queue_id = %self.envelope.id, destination = %key, "destination busy; parked");
                    parked.push(key);
                    continue;
                }
            }
            self.shared.spool.update(&self.envelope).await?;
        }
        Ok(parked)
    }
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
