//! Finished messages leave the shared queue in batches: whatever finished while the last
//! removal ran goes in the next one, one statement and one commit for all of them (a node
//! delivering sixteen messages at once removes them in a handful of commits, not sixteen).
//! Nothing waits for a removal: a message whose removal is lost (a crash, a failed statement)
//! stays queued, claimed by this node until its lease ends, and its next attempt finds it
//! delivered (a Maildir keeps it under its queue id) or delivers it again (RFC 5321 6.1
//! allows the duplicate; it never allows the loss).

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use super::db;
use crate::{QueueId, SpoolError};

/// A finished message this node held, at the version it last wrote.
pub(super) type Removal = (QueueId, i64);

/// At most this many messages in one removal.
const BATCH: usize = 256;

/// A removal that fails (a connection reset, a statement timeout) is tried this many times in
/// all, this long apart times the try's number, before its messages are left to their leases.
const TRIES: u32 = 3;
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// Removes each message at its version if this node holds it or no one does (another node
/// that claimed it since, or an operator's change, keeps it), with its chunks if it has any,
/// all in one statement; the ids removed.
const REMOVE: &str = "
    WITH gone AS (
        DELETE FROM yizhan_messages m
        USING unnest($1::text[], $2::bigint[]) AS r(id, version)
        WHERE m.id = r.id AND m.version = r.version
          AND (m.lease_owner = $3 OR m.lease_owner IS NULL)
        RETURNING m.id, m.body IS NULL AS chunked),
    chunks AS (
        DELETE FROM yizhan_bodies WHERE id IN (SELECT id FROM gone WHERE chunked))
    SELECT id FROM gone";

/// The task that removes finished messages in batches, for as long as a sender lives.
pub(super) fn spawn(pool: Pool, node: String) -> mpsc::UnboundedSender<Removal> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Removal>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while receiver.recv_many(&mut batch, BATCH).await > 0 {
            let mut result = remove(&pool, &node, &batch).await;
            for try_number in 1..TRIES {
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(RETRY_DELAY * try_number).await;
                result = remove(&pool, &node, &batch).await;
            }
            match result {
                Ok(removed) => {
                    for (id, _) in batch.iter().filter(|(id, _)| !removed.contains(id)) {
                        tracing::warn!(queue_id = %id, "a finished message changed or was claimed by another node before its removal; it stays queued");
                    }
                }
                Err(e) => {
                    tracing::warn!(messages = batch.len(), error = %e, tries = TRIES, "removing finished messages failed; each stays queued, and its next attempt (once its lease ends) finds it delivered or delivers it again");
                }
            }
            batch.clear();
        }
    });
    sender
}

/// Removes `batch` (see [`REMOVE`]); the ids removed.
pub(super) async fn remove(
    pool: &Pool,
    node: &str,
    batch: &[Removal],
) -> Result<Vec<QueueId>, SpoolError> {
    // In id order: two nodes removing overlapping batches lock rows in the same order.
    let mut sorted: Vec<&Removal> = batch.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let ids: Vec<&str> = sorted.iter().map(|(id, _)| id.as_str()).collect();
    let versions: Vec<i64> = sorted.iter().map(|(_, v)| *v).collect();
    let client = super::connection(pool).await?;
    let statement = client.prepare_cached(REMOVE).await.map_err(db)?;
    let rows = client
        .query(&statement, &[&ids, &versions, &node])
        .await
        .map_err(db)?;
    Ok(super::ids(&rows))
}
