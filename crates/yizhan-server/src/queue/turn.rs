//! TURN (RFC 821, with the ATRN meaning of RFC 2645): the mail queued for an authenticated
//! client's domains, delivered over its own connection once the roles are turned.

use tracing::warn;
use yizhan_delivery::smtp::{self, Connection, Outcome, Reason};
use yizhan_proto::address::ForwardPath;
use yizhan_spool::{Envelope, QueueId, Recipient, SpoolError};

use super::claim::Claim;
use super::handle::RunnerHandle;
use super::message::conclude;
use super::outcome::record;
use super::remote::transaction;
use super::shared::Shared;

/// What a TURN session delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnSummary {
    /// Messages offered (one transaction each).
    pub messages: usize,
    /// Recipients the client accepted.
    pub delivered: usize,
    /// Recipients left for later (transient failures, or messages busy elsewhere).
    pub deferred: usize,
    /// Recipients refused for good (reported to their sender).
    pub failed: usize,
}
impl RunnerHandle {
    /// Delivers, over `conn` (a connection whose roles were just turned, RFC 821 `TURN` with
    /// the ATRN meaning of RFC 2645), every pending remote recipient in `domains`, whether due
    /// or not: one transaction per message. Outcomes, reports and removal are recorded exactly
    /// as the runner does. A message the runner is working on at that moment is skipped (and
    /// counted as deferred); the runner and a TURN session never work on one message at once.
    pub async fn deliver_turn(
        &self,
        conn: &mut Connection,
        domains: &[String],
    ) -> Result<TurnSummary, SpoolError> {
        let Some(shared) = self.shared.upgrade() else {
            warn!("TURN: the queue runner has stopped; nothing delivered");
            return Ok(TurnSummary::default());
        };
        let shared = &shared;
        let domains: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        let wanted = |r: &Recipient| {
            r.is_pending()
                && r.mailbox.is_none()
                && super::domain_of(&r.address).is_some_and(|d| domains.contains(&d))
        };
        let mut summary = TurnSummary::default();
        for listed in candidates(shared, &wanted).await? {
            if !conn.is_usable() {
                summary.deferred += listed.recipients.iter().filter(|r| wanted(r)).count();
                continue;
            }
            let Some(_claim) = Claim::take(shared, &listed.id) else {
                summary.deferred += listed.recipients.iter().filter(|r| wanted(r)).count();
                continue;
            };
            // Read again under the claim: the runner may have changed it since the listing.
            let mut envelope = shared.spool.load(&listed.id).await?;
            let members: Vec<(usize, ForwardPath)> = (0..envelope.recipients.len())
                .filter(|&i| wanted(&envelope.recipients[i]))
                .map(|i| {
                    let mailbox = envelope.recipients[i].address.clone();
                    (
                        i,
                        ForwardPath::Path(yizhan_proto::address::Path::new(mailbox)),
                    )
                })
                .collect();
            if members.is_empty() {
                continue;
            }
            let dsn = conn.offers_dsn();
            let tx = transaction(&envelope, &envelope.reverse_path, &members, dsn);
            let mut body = shared.spool.open_body(&envelope.id).await?.into_async();
            summary.messages += 1;
            let host = conn.target().host.clone();
            let outcomes: Vec<Outcome> = match conn.send(tx, &mut body).await {
                Ok(result) => smtp::outcomes(&host, &result, dsn),
                Err(e) => {
                    let reason = Reason::remote(&host, &e.reply());
                    members
                        .iter()
                        .map(|_| Outcome::Transient(reason.clone()))
                        .collect()
                }
            };
            let mut owed = Vec::new();
            for ((i, _), outcome) in members.iter().zip(outcomes) {
                match &outcome {
                    Outcome::Delivered(_) => summary.delivered += 1,
                    Outcome::Transient(_) => summary.deferred += 1,
                    Outcome::Permanent(_) => summary.failed += 1,
                }
                record(shared, &mut envelope, *i, outcome, &mut owed, dsn);
            }
            shared.spool.update(&envelope).await?;
            conclude(shared, &mut envelope, &owed).await?;
        }
        self.wake();
        Ok(summary)
    }
}

/// The messages with recipients a TURN session wants, not held, read page by page (the
/// queue may be large; the candidates are the domain's mail only).
async fn candidates(
    shared: &Shared,
    wanted: &impl Fn(&Recipient) -> bool,
) -> Result<Vec<Envelope>, SpoolError> {
    const PAGE: usize = 1000;
    let mut found = Vec::new();
    let mut after: Option<QueueId> = None;
    loop {
        let page = shared.spool.list_page(after.as_ref(), PAGE).await?;
        let full = page.len() == PAGE;
        after = page.last().map(|e| e.id.clone());
        found.extend(
            page.into_iter()
                .filter(|e| !e.held && e.recipients.iter().any(wanted)),
        );
        if !full {
            return Ok(found);
        }
    }
}
