//! The shared queue as the runner's [`QueueStore`]: what this node claimed it writes by
//! compare-and-set on the version it read (kept here per message); what it did not claim (an
//! operator's change applied by this node) it writes as operators do, moving the version on
//! so that whoever holds the message re-reads it.

use std::io::Cursor;

use crate::store::{DestinationPermit, StoreFuture};
use crate::{Body, Envelope, QueueId, QueueStore, SpoolError};

use super::lease::Claimed;
use super::{CHUNK, PgStore, db, parse};

impl PgStore {
    fn claimed_version(&self, id: &QueueId) -> Option<i64> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied()
    }

    fn set_claimed(&self, id: &QueueId, version: Option<i64>) {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match version {
            Some(v) => claims.insert(id.clone(), v),
            None => claims.remove(id),
        };
    }

    /// Claims one message by id (free, lease expired, or already this node's), skipping it,
    /// not waiting, while another node is claiming or writing it (`SKIP LOCKED`). A message
    /// this node just committed is claimed already: its first attempt reads nothing, as long
    /// as it starts within half the lease (a node with a long backlog claims again, so it
    /// never works on a claim that may have expired).
    async fn claim_one(&self, id: &QueueId) -> Result<Option<Envelope>, SpoolError> {
        if let Some((envelope, at)) = self.fresh.take_envelope(id)
            && at.elapsed() < self.lease / 2
            && self.claimed_version(id).is_some()
        {
            return Ok(Some(envelope));
        }
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE yizhan_messages
                 SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
                 WHERE id = (SELECT id FROM yizhan_messages
                             WHERE id = $1
                               AND (lease_until IS NULL OR lease_until < now()
                                    OR lease_owner = $2)
                             FOR UPDATE SKIP LOCKED)
                 RETURNING envelope, version",
                &[&id.as_str(), &self.node, &self.lease.as_secs_f64()],
            )
            .await
            .map_err(db)?;
        match row {
            Some(row) => {
                let envelope = parse(id.as_str(), row.get(0))?;
                self.set_claimed(id, Some(row.get(1)));
                Ok(Some(envelope))
            }
            None => {
                // Not this node's to attempt (or gone): its first attempt is not here.
                self.fresh.forget(id);
                let exists = client
                    .query_opt(
                        "SELECT 1 FROM yizhan_messages WHERE id = $1",
                        &[&id.as_str()],
                    )
                    .await
                    .map_err(db)?;
                match exists {
                    Some(_) => Ok(None),
                    None => Err(SpoolError::NotFound(id.clone())),
                }
            }
        }
    }

    /// One of `limit` advisory locks on `destination` (the pair `hashtext(destination)`,
    /// slot), held on a connection of its own for as long as the permit lives: PostgreSQL
    /// counts the deliveries of every node, and frees a dead node's places with its
    /// connections.
    async fn destination_lock(
        &self,
        destination: &str,
        limit: usize,
    ) -> Result<Option<DestinationPermit>, SpoolError> {
        let client = self.client().await?;
        for slot in 0..i32::try_from(limit).unwrap_or(i32::MAX) {
            let taken: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtext($1), $2)",
                    &[&destination, &slot],
                )
                .await
                .map_err(db)?
                .get(0);
            if taken {
                let guard = DestinationLock {
                    client: Some(client),
                    destination: destination.to_owned(),
                    slot,
                };
                return Ok(Some(DestinationPermit::holding(guard)));
            }
        }
        Ok(None)
    }

    /// A body to deliver: the copy kept since this node received it (its first attempt), or
    /// from the database: in memory when it is one chunk at most; else copied chunk by chunk
    /// into an anonymous temporary file (gone when closed), so a large message is never held
    /// whole in memory.
    async fn open_body_bounded(&self, id: &QueueId) -> Result<Body, SpoolError> {
        if let Some(body) = self.fresh.body(id) {
            return Ok(Body::Inline(Cursor::new(body)));
        }
        let mut chunks = self.body_chunks(id).await?;
        if chunks.size <= CHUNK as i64 {
            let body = chunks.next().await?.unwrap_or_default();
            chunks.finish()?;
            return Ok(Body::Inline(Cursor::new(body)));
        }
        let mut file = tempfile::tempfile().map_err(db)?;
        while let Some(chunk) = chunks.next().await? {
            file = tokio::task::spawn_blocking(move || {
                std::io::Write::write_all(&mut file, &chunk).map(|()| file)
            })
            .await
            .map_err(db)?
            .map_err(db)?;
        }
        chunks.finish()?;
        std::io::Seek::rewind(&mut file).map_err(db)?;
        Ok(Body::File(file))
    }

    /// Extends this node's lease on `id` (whatever its version: an operator's change leaves
    /// the claim where it is).
    async fn renew_lease(&self, id: &QueueId) -> Result<bool, SpoolError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE yizhan_messages SET lease_until = now() + make_interval(secs => $1)
                 WHERE id = $2 AND lease_owner = $3 AND lease_until >= now()",
                &[&self.lease.as_secs_f64(), &id.as_str(), &self.node],
            )
            .await
            .map_err(db)?;
        Ok(n == 1)
    }

    /// After a conflict: if this node still holds the claim (an operator changed the message
    /// meanwhile), the operator's state with this attempt's outcomes on top, at its version.
    async fn merged(&self, ours: &Envelope) -> Result<Option<Claimed>, SpoolError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT envelope, version FROM yizhan_messages
                 WHERE id = $1 AND lease_owner = $2 AND lease_until >= now()",
                &[&ours.id.as_str(), &self.node],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let mut theirs = parse(ours.id.as_str(), row.get(0))?;
        merge(&mut theirs, ours);
        Ok(Some(Claimed {
            envelope: theirs,
            version: row.get(1),
        }))
    }

    /// Writes `envelope`: by compare-and-set under this node's claim, else as an operator.
    async fn write(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        let Some(version) = self.claimed_version(&envelope.id) else {
            let text = serde_json::to_string(envelope).map_err(db)?;
            let n = self
                .client()
                .await?
                .execute(
                    "UPDATE yizhan_messages
                     SET envelope = $1, next_due = $2, held = $3, version = version + 1
                     WHERE id = $4",
                    &[
                        &text,
                        &envelope.next_due(),
                        &envelope.held,
                        &envelope.id.as_str(),
                    ],
                )
                .await
                .map_err(db)?;
            return if n == 1 {
                Ok(())
            } else {
                Err(SpoolError::NotFound(envelope.id.clone()))
            };
        };
        let claimed = Claimed {
            envelope: envelope.clone(),
            version,
        };
        let mut new = self.record(&claimed, envelope).await;
        if matches!(new, Err(SpoolError::Conflict(_)))
            && let Some(current) = self.merged(envelope).await?
        {
            new = self.record(&current, &current.envelope).await;
        }
        match new {
            Ok(v) => {
                self.set_claimed(&envelope.id, Some(v));
                Ok(())
            }
            Err(e) => {
                self.set_claimed(&envelope.id, None);
                Err(e)
            }
        }
    }

    async fn remove_any(&self, id: &QueueId) -> Result<(), SpoolError> {
        self.fresh.forget(id);
        let result = match self.claimed_version(id) {
            Some(version) => self.remove_claimed(id, version).await,
            None => self.delete(id).await.map(|_| ()),
        };
        self.set_claimed(id, None);
        result
    }
}

/// A held advisory lock: given back (and its connection to the pool) when dropped.
struct DestinationLock {
    client: Option<deadpool_postgres::Object>,
    destination: String,
    slot: i32,
}

impl Drop for DestinationLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let (destination, slot) = (std::mem::take(&mut self.destination), self.slot);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let unlocked = client
                        .query_one(
                            "SELECT pg_advisory_unlock(hashtext($1), $2)",
                            &[&destination, &slot],
                        )
                        .await;
                    if unlocked.is_err() {
                        // Never back into the pool with the lock held.
                        let _ = deadpool_postgres::Object::take(client);
                    }
                });
            }
            // No runtime left: the connection closes, and the lock with it.
            Err(_) => drop(deadpool_postgres::Object::take(client)),
        }
    }
}

/// An attempt's outcomes laid over the state an operator left: a recipient this attempt
/// finished (delivered or failed) is finished; one still pending keeps the operator's timing
/// (a flush, a requeue) with the attempts counted; the hold is the operator's.
fn merge(theirs: &mut Envelope, ours: &Envelope) {
    for (t, o) in theirs.recipients.iter_mut().zip(&ours.recipients) {
        if t.address != o.address || !t.is_pending() {
            continue;
        }
        if o.is_pending() {
            t.attempts = t.attempts.max(o.attempts);
            if o.last_error.is_some() {
                t.last_error.clone_from(&o.last_error);
            }
        } else {
            *t = o.clone();
        }
    }
}

impl QueueStore for PgStore {
    fn schedule_index(&self) -> StoreFuture<'_, Vec<(QueueId, Option<i64>, bool)>> {
        Box::pin(PgStore::schedule_index(self))
    }

    fn load<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Envelope> {
        Box::pin(PgStore::load(self, id))
    }

    fn list_page<'a>(
        &'a self,
        after: Option<&'a QueueId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Envelope>> {
        Box::pin(PgStore::list_page(self, after, limit))
    }

    fn open_body<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Body> {
        Box::pin(self.open_body_bounded(id))
    }

    fn ids_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<QueueId>> {
        Box::pin(async move {
            // Hex only (checked by the caller), so no LIKE metacharacter can be in it.
            let pattern = format!("{}%", prefix.replace(['%', '_', '\\'], ""));
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT id FROM yizhan_messages WHERE id LIKE $1 ORDER BY id LIMIT $2",
                    &[&pattern, &limit],
                )
                .await
                .map_err(db)?;
            Ok(super::ids(&rows))
        })
    }

    fn update<'a>(&'a self, envelope: &'a Envelope) -> StoreFuture<'a, ()> {
        Box::pin(self.write(envelope))
    }

    fn remove<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, ()> {
        Box::pin(self.remove_any(id))
    }

    fn remove_soon(&self, id: &QueueId) {
        // The version now, and the claim forgotten at once: releasing it is the removal's
        // job (one statement, batched with the other removals of the moment).
        let version = self.claimed_version(id);
        self.set_claimed(id, None);
        self.fresh.forget(id);
        if let Some(version) = version {
            if self.removals.send((id.clone(), version)).is_err() {
                // The removal task is gone (the runtime is shutting down): this one alone,
                // with the same checks.
                let (store, id) = (self.clone(), id.clone());
                tokio::spawn(async move { store.remove_claimed(&id, version).await });
            }
            return;
        }
        // Not claimed by this node (an operator's removal): as an operator deletes.
        let (store, id) = (self.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.delete(&id).await {
                tracing::warn!(queue_id = %id, error = %e, "removing a finished message failed; it stays queued and its next attempt finds it delivered");
            }
        });
    }

    fn enqueue<'a>(&'a self, body: &'a [u8], envelope: Envelope) -> StoreFuture<'a, Envelope> {
        Box::pin(PgStore::enqueue(self, body, envelope))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn destination_permit<'a>(
        &'a self,
        destination: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<DestinationPermit>> {
        Box::pin(self.destination_lock(destination, limit))
    }

    fn claim<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Option<Envelope>> {
        Box::pin(self.claim_one(id))
    }

    fn renew_every(&self) -> Option<std::time::Duration> {
        Some(self.lease / 3)
    }

    fn renew_claim<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, bool> {
        Box::pin(self.renew_lease(id))
    }

    fn unclaim<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.fresh.forget(id);
            // Removed meanwhile (or lost): nothing to release.
            if self.claimed_version(id).is_none() {
                return Ok(());
            }
            self.set_claimed(id, None);
            self.release(id).await
        })
    }
}
