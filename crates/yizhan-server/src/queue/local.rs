//! Local delivery: Maildir batches (group commit for mailboxes).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::debug;
use yizhan_delivery::maildir::BatchJob;
use yizhan_delivery::smtp::{Outcome, Reason};
use yizhan_spool::{LocalMailbox, QueueId, Spool};

use super::shared::Shared;

/// Local deliveries written and synced together at most (see [`drain_local`]).
pub(super) const LOCAL_BATCH: usize = 256;

/// Local delivery batches in progress at once. One: what arrives while a batch is being
/// synced makes the next batch bigger (two drainers split the queue into smaller batches and
/// measured no faster).
pub(super) const LOCAL_DRAINERS: usize = 1;

/// A batch smaller than this waits [`LOCAL_LINGER`] for more deliveries first: under a light
/// load (one client sending one message after another) that turns two flushes per message
/// into two per few messages, which leaves the disk to the spool's commits, which the client
/// is waiting for. A few milliseconds more for a delivery nobody waits for.
pub(super) const LOCAL_LINGER_JOBS: usize = 32;

/// See [`LOCAL_LINGER_JOBS`].
pub(super) const LOCAL_LINGER: Duration = Duration::from_millis(2);

/// One Maildir delivery, in the next batch ([`drain_local`]).
pub(super) async fn deliver_local(
    shared: &Arc<Shared>,
    id: QueueId,
    return_path: String,
    key: String,
    mailbox: LocalMailbox,
) -> Outcome {
    let (reply, outcome) = oneshot::channel();
    let start = {
        let mut queue = shared.lock_local();
        queue.jobs.push(LocalJob {
            id,
            key,
            return_path,
            mailbox,
            reply,
        });
        let start = queue.draining < LOCAL_DRAINERS;
        if start {
            queue.draining += 1;
        }
        start
    };
    if start {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || drain_local(&shared));
    }
    outcome.await.unwrap_or_else(|_| {
        Outcome::Transient(Reason::local("4.3.0", "local delivery batch failed"))
    })
}

/// Delivers the waiting local jobs in batches until none is left (on the blocking pool).
/// Everything that arrives while a batch is being written and synced goes into the next one:
/// group commit for Maildirs, as the spool does for the queue.
pub(super) fn drain_local(shared: &Shared) {
    // If a batch panics, its jobs (and those waiting) are answered by their dropped reply
    // channel (a transient failure, retried later), and another drainer may start.
    struct Draining<'a>(&'a Shared);
    impl Drop for Draining<'_> {
        fn drop(&mut self) {
            let mut queue = self.0.lock_local();
            queue.draining -= 1;
            if std::thread::panicking() {
                queue.jobs.clear();
            }
        }
    }
    let _draining = Draining(shared);
    let mut lingered = false;
    loop {
        let batch: Vec<LocalJob> = {
            let mut queue = shared.lock_local();
            if queue.jobs.is_empty() {
                return;
            }
            if queue.jobs.len() < LOCAL_LINGER_JOBS && !lingered {
                drop(queue);
                std::thread::sleep(LOCAL_LINGER);
                lingered = true;
                continue;
            }
            lingered = false;
            let n = queue.jobs.len().min(LOCAL_BATCH);
            queue.jobs.drain(..n).collect()
        };
        let mut jobs = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            jobs.push(BatchJob {
                domain: job.mailbox.domain,
                local: job.mailbox.local,
                key: job.key,
                return_path: job.return_path,
                body: LazyBody {
                    spool: &shared.spool,
                    id: job.id,
                    body: None,
                },
            });
            replies.push(job.reply);
        }
        let results = shared.maildir.deliver_batch(&mut jobs);
        shared.local_batches.fetch_add(1, Ordering::Relaxed);
        debug!(deliveries = jobs.len(), "local delivery batch written");
        for (reply, result) in replies.into_iter().zip(results) {
            let outcome = match result {
                Ok((path, _fresh)) => {
                    Outcome::Delivered(Reason::local("2.0.0", path.display().to_string()))
                }
                Err(e) if e.is_transient() => {
                    Outcome::Transient(Reason::local("4.2.0", e.to_string()))
                }
                Err(e) => Outcome::Permanent(Reason::local("5.1.1", e.to_string())),
            };
            // The message task may be gone (shutdown): its recipient stays pending.
            let _ = reply.send(outcome);
        }
    }
}

/// Local deliveries waiting for the next batch.
#[derive(Default)]
pub(super) struct LocalQueue {
    pub(super) jobs: Vec<LocalJob>,
    /// Drainers running on the blocking pool (at most [`LOCAL_DRAINERS`]).
    pub(super) draining: usize,
}

/// One recipient's Maildir delivery, and where its outcome goes.
pub(super) struct LocalJob {
    pub(super) id: QueueId,
    pub(super) key: String,
    pub(super) return_path: String,
    pub(super) mailbox: LocalMailbox,
    pub(super) reply: oneshot::Sender<Outcome>,
}

/// A message body opened from the spool when the batch gets to it, and let go at its end,
/// so that a batch holds one body in memory at a time.
pub(super) struct LazyBody<'a> {
    pub(super) spool: &'a Spool,
    pub(super) id: QueueId,
    pub(super) body: Option<yizhan_spool::Body>,
}

impl Read for LazyBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let body = match &mut self.body {
            Some(body) => body,
            None => self.body.insert(
                self.spool
                    .open_body(&self.id)
                    .map_err(std::io::Error::other)?,
            ),
        };
        let n = body.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.body = None;
        }
        Ok(n)
    }
}
