//! The shared queue as the runner's [`QueueStore`]: what this node claimed it writes by
//! compare-and-set on the version it read (kept here per message); what it did not claim (an
//! operator's change applied by this node) it writes as operators do, moving the version on
//! so that whoever holds the message re-reads it.

use std::io::Cursor;

use crate::store::StoreFuture;
use crate::{Body, Envelope, QueueId, QueueStore, SpoolError};

use super::lease::Claimed;
use super::{PgStore, db, parse};

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

    /// Claims one message by id (free, lease expired, or already this node's).
    async fn claim_one(&self, id: &QueueId) -> Result<Option<Envelope>, SpoolError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE yizhan_messages
                 SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
                 WHERE id = $1
                   AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $2)
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
        let new = self.record(&claimed, envelope).await;
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
        let result = match self.claimed_version(id) {
            Some(version) => self.remove_claimed(id, version).await,
            None => self.delete(id).await.map(|_| ()),
        };
        self.set_claimed(id, None);
        result
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
        Box::pin(async move { Ok(Body::Inline(Cursor::new(self.body(id).await?))) })
    }

    fn update<'a>(&'a self, envelope: &'a Envelope) -> StoreFuture<'a, ()> {
        Box::pin(self.write(envelope))
    }

    fn remove<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, ()> {
        Box::pin(self.remove_any(id))
    }

    fn remove_soon(&self, id: &QueueId) {
        let (store, id) = (self.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.remove_any(&id).await {
                tracing::warn!(queue_id = %id, error = %e, "removing a finished message failed; it is removed again later");
            }
        });
    }

    fn enqueue<'a>(&'a self, body: &'a [u8], envelope: Envelope) -> StoreFuture<'a, Envelope> {
        Box::pin(PgStore::enqueue(self, body, envelope))
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn claim<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Option<Envelope>> {
        Box::pin(self.claim_one(id))
    }

    fn unclaim<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.set_claimed(id, None);
            self.release(id).await
        })
    }
}
