//! Claims on the shared queue. A node claims due messages with a lease (on the database's
//! clock, so the nodes' clocks need not agree); while it holds the lease it alone records
//! outcomes, each a compare-and-set on the row's `version` and the lease. An operator's
//! change from any node bumps `version`, so the holder's next write is a conflict: it re-reads
//! and applies its outcomes to the new state. A node that dies simply stops renewing: its
//! leases expire and another node claims the messages.

use crate::{Envelope, QueueId, SpoolError};

use super::{PgStore, db, parse};

/// A message this node holds the lease of, at the version it read.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The envelope as read.
    pub envelope: Envelope,
    /// Its version: the next write must find this one.
    pub version: i64,
}

/// What an operator does to a message, from any node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop delivering it until released.
    Hold,
    /// Deliver it again when due.
    Release,
}

impl PgStore {
    fn lease_seconds(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Claims up to `limit` due messages (not held, `next_due <= now`, not leased by a live
    /// claim): the longest due first; rows another node is claiming right now are skipped,
    /// not waited for. The paged form of the claim; the runner claims each message by id as
    /// it falls due (`QueueStore::claim`), since its scan already knows every due time.
    pub async fn claim_due(&self, now: i64, limit: usize) -> Result<Vec<Claimed>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                "WITH due AS (
                     SELECT id FROM yizhan_messages
                     WHERE NOT held AND next_due IS NOT NULL AND next_due <= $1
                       AND (lease_until IS NULL OR lease_until < now())
                     ORDER BY next_due, id
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 UPDATE yizhan_messages m
                 SET lease_owner = $3, lease_until = now() + make_interval(secs => $4)
                 FROM due WHERE m.id = due.id
                 RETURNING m.id, m.envelope, m.version",
                &[&now, &limit, &self.node, &self.lease_seconds()],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    envelope: parse(r.get(0), r.get(1))?,
                    version: r.get(2),
                })
            })
            .collect()
    }

    /// Extends a claim while an attempt runs; `false` when it is no longer this node's (it
    /// expired and another node took it, or an operator changed the message).
    pub async fn renew(&self, claimed: &Claimed) -> Result<bool, SpoolError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE yizhan_messages SET lease_until = now() + make_interval(secs => $1)
                 WHERE id = $2 AND version = $3 AND lease_owner = $4 AND lease_until >= now()",
                &[
                    &self.lease_seconds(),
                    &claimed.envelope.id.as_str(),
                    &claimed.version,
                    &self.node,
                ],
            )
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    /// Records the message's new state (outcomes, due times) if this node still holds the
    /// claim at the version it read: the new version, or [`SpoolError::Conflict`]. The claim
    /// is kept (release it with [`PgStore::release`]).
    pub async fn record(&self, claimed: &Claimed, envelope: &Envelope) -> Result<i64, SpoolError> {
        let text = serde_json::to_string(envelope).map_err(db)?;
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE yizhan_messages
                 SET envelope = $1, next_due = $2, held = $3, version = version + 1
                 WHERE id = $4 AND version = $5 AND lease_owner = $6 AND lease_until >= now()
                 RETURNING version",
                &[
                    &text,
                    &envelope.next_due(),
                    &envelope.held,
                    &envelope.id.as_str(),
                    &claimed.version,
                    &self.node,
                ],
            )
            .await
            .map_err(db)?;
        row.map(|r| r.get(0))
            .ok_or_else(|| SpoolError::Conflict(envelope.id.clone()))
    }

    /// Gives a claim up (the attempt is over): the message is free for whoever finds it due.
    pub async fn release(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.client()
            .await?
            .execute(
                "UPDATE yizhan_messages SET lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2",
                &[&id.as_str(), &self.node],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Removes a finished message this node holds, or held and released, at `version` (its
    /// body too, in the same transaction): [`SpoolError::Conflict`] if another node claimed
    /// it since or the message changed.
    pub async fn remove_claimed(&self, id: &QueueId, version: i64) -> Result<(), SpoolError> {
        let removed =
            super::removals::remove(&self.pool, &self.node, &[(id.clone(), version)]).await?;
        match removed.is_empty() {
            true => Err(SpoolError::Conflict(id.clone())),
            false => Ok(()),
        }
    }

    /// An operator's hold or release, from any node, whoever holds the claim: the envelope
    /// and its `held` column change and `version` moves on (a holder's write then conflicts
    /// and re-reads). `false` if there is no such message.
    pub async fn control(&self, id: &QueueId, control: Control) -> Result<bool, SpoolError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let Some(row) = tx
            .query_opt(
                "SELECT envelope FROM yizhan_messages WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(db)?
        else {
            return Ok(false);
        };
        let mut envelope = parse(id.as_str(), row.get(0))?;
        envelope.held = control == Control::Hold;
        let text = serde_json::to_string(&envelope).map_err(db)?;
        tx.execute(
            "UPDATE yizhan_messages SET envelope = $1, held = $2, version = version + 1
             WHERE id = $3",
            &[&text, &envelope.held, &id.as_str()],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// An operator's delete, from any node: the message and its body go, whoever holds the
    /// claim (the holder's next write is a conflict and finds it gone). `false` if absent.
    pub async fn delete(&self, id: &QueueId) -> Result<bool, SpoolError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let n = tx
            .execute("DELETE FROM yizhan_messages WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db)?;
        tx.execute("DELETE FROM yizhan_bodies WHERE id = $1", &[&id.as_str()])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n == 1)
    }
}
