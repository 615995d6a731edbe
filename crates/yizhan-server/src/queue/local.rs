//! Local delivery: Maildir batches (group commit for mailboxes).

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use yizhan_delivery::maildir::BatchJob;
use yizhan_delivery::smtp::{Outcome, Reason};
use yizhan_spool::{LocalMailbox, QueueId, QueueStore};

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
pub(super) async fn deliver_local(shared: &Arc<Shared>, delivery: LocalDelivery) -> Outcome {
    let (reply, outcome) = oneshot::channel();
    let start = shared.lock_local().push(LocalJob { delivery, reply });
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
            if std::thread::panicking() {
                let mut queue = self.0.lock_local();
                queue.draining -= 1;
                queue.jobs.clear();
            }
        }
    }
    let _draining = Draining(shared);
    let mut lingered = false;
    loop {
        // Not in the match: the lock must not be held while lingering.
        let next = shared.lock_local().next_batch(lingered);
        let batch = match next {
            Next::Batch(batch) => batch,
            Next::Linger => {
                std::thread::sleep(LOCAL_LINGER);
                lingered = true;
                continue;
            }
            Next::Leave => return,
        };
        lingered = false;
        let mut jobs = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            let d = job.delivery;
            // Deleted by the operator while it waited: not written.
            if d.cancel.is_cancelled() {
                let deleted = Reason::local("4.3.0", "the message was deleted during delivery");
                let _ = job.reply.send(Outcome::Transient(deleted));
                continue;
            }
            jobs.push(BatchJob {
                domain: d.mailbox.domain,
                local: d.mailbox.local,
                key: d.key,
                return_path: d.return_path,
                body: LazyBody {
                    spool: shared.spool.as_ref(),
                    id: d.id,
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
    jobs: Vec<LocalJob>,
    /// Drainers running on the blocking pool (at most [`LOCAL_DRAINERS`]).
    draining: usize,
}

/// What a drainer does next.
enum Next {
    Batch(Vec<LocalJob>),
    /// Few jobs: wait [`LOCAL_LINGER`] for more, once.
    Linger,
    /// Nothing left: the drainer has been counted out (under the same lock).
    Leave,
}

impl LocalQueue {
    /// Queues a job; true if the caller must start a drainer (none is running to take it).
    fn push(&mut self, job: LocalJob) -> bool {
        self.jobs.push(job);
        let start = self.draining < LOCAL_DRAINERS;
        if start {
            self.draining += 1;
        }
        start
    }

    /// The next batch for a drainer. A drainer that finds nothing leaves in the same critical
    /// section in which it saw the queue empty, so a job pushed after that starts a new one:
    /// no job can be left behind by a drainer on its way out.
    fn next_batch(&mut self, lingered: bool) -> Next {
        if self.jobs.is_empty() {
            self.draining -= 1;
            return Next::Leave;
        }
        if self.jobs.len() < LOCAL_LINGER_JOBS && !lingered {
            return Next::Linger;
        }
        let n = self.jobs.len().min(LOCAL_BATCH);
        Next::Batch(self.jobs.drain(..n).collect())
    }
}

/// One recipient's Maildir delivery.
pub(super) struct LocalDelivery {
    pub(super) id: QueueId,
    /// The file name's unique part: message and recipient (see `Maildir::deliver_batch`).
    pub(super) key: String,
    pub(super) return_path: String,
    pub(super) mailbox: LocalMailbox,
    /// The message was deleted: skip it if it has not been written yet.
    pub(super) cancel: CancellationToken,
}

/// A delivery waiting for a batch, and where its outcome goes.
struct LocalJob {
    delivery: LocalDelivery,
    reply: oneshot::Sender<Outcome>,
}

/// A message body opened from the spool when the batch gets to it, and let go at its end,
/// so that a batch holds one body in memory at a time.
pub(super) struct LazyBody<'a> {
    pub(super) spool: &'a dyn QueueStore,
    pub(super) id: QueueId,
    pub(super) body: Option<yizhan_spool::Body>,
}

impl Read for LazyBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let body = match &mut self.body {
            Some(body) => body,
            // On the Maildir writer's blocking thread: the embedded store answers at once,
            // another store's read runs on the runtime meanwhile.
            None => self.body.insert(
                tokio::runtime::Handle::current()
                    .block_on(self.spool.open_body(&self.id))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (LocalJob, oneshot::Receiver<Outcome>) {
        let (reply, outcome) = oneshot::channel();
        let delivery = LocalDelivery {
            id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            key: "k".into(),
            return_path: String::new(),
            mailbox: LocalMailbox {
                domain: "example.org".into(),
                local: "bob".into(),
            },
            cancel: CancellationToken::new(),
        };
        let job = LocalJob { delivery, reply };
        (job, outcome)
    }

    /// The race of issue #12: a drainer that found the queue empty but had not yet counted
    /// itself out made a new job wait for ever. Leaving is now part of finding it empty.
    #[test]
    fn a_job_pushed_after_the_drainer_saw_the_queue_empty_starts_a_new_drainer() {
        let mut queue = LocalQueue::default();
        let (first, _r1) = job();
        assert!(queue.push(first), "the first job starts a drainer");
        let (second, _r2) = job();
        assert!(!queue.push(second), "one drainer at a time");
        assert!(matches!(queue.next_batch(false), Next::Linger));
        match queue.next_batch(true) {
            Next::Batch(batch) => assert_eq!(batch.len(), 2),
            _ => panic!("expected a batch"),
        }
        assert!(matches!(queue.next_batch(false), Next::Leave));
        assert_eq!(queue.draining, 0);
        let (third, _r3) = job();
        assert!(
            queue.push(third),
            "nobody is draining: the pusher starts one"
        );
    }
}
