//! Changes an operator asks for (`yizhan queue hold|release|delete|flush ID`), applied by the
//! runner: it is the one owner of every state change of a queued message.
//!
//! A change is a message to the runner's inbox ([`RunnerHandle::change`]); the answer comes
//! once the change is durable in the spool. The runner applies it under the message's claim
//! (see `claim`), so it never meets a delivery attempt half way:
//! - a message nobody works on is changed at once;
//! - a message in an attempt is changed when the attempt has recorded its outcome: a hold is
//!   honoured after it, a flush moves the retry the attempt just recorded;
//! - a delete also stops the attempt: nothing more is delivered, and a transaction under way
//!   is cut off before its end of data when it can be (a peer that had already accepted the
//!   message keeps it; that recipient is recorded as delivered before the message goes).
//!
//! Before, `yizhan queue` wrote the row itself beside the runner (load, modify, write the whole
//! envelope back): a hold made during an attempt was undone by the attempt's outcome, and a
//! flush landing between the runner's load and its "delivered" write could make a delivered
//! recipient pending again.

use std::collections::HashMap;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::info;
use yizhan_spool::{Envelope, QueueId, SpoolError};

use yizhan_delivery::dsn::Action;
use yizhan_delivery::smtp::Reason;

use super::claim::Claim;
use super::handle::RunnerHandle;
use super::outcome::Owed;
use super::runner::QueueRunner;
use super::schedule::Schedule;

/// What an operator can do to one queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Never due until released.
    Hold,
    /// Clears a hold and makes the pending recipients due now.
    Release,
    /// Removes the message without a report.
    Delete,
    /// Makes the pending recipients (of `domain`, if given) due now.
    Flush {
        /// Lower-case recipient domain, or every recipient.
        domain: Option<String>,
    },
    /// Starts delivery over: clears a hold, and every pending recipient loses its attempts
    /// and last error and is due now (its retry back-off starts again from the first step;
    /// the message's lifetime still counts from its arrival). Routes are looked up afresh at
    /// every attempt, so a requeue after a reload goes by the new ones.
    Requeue,
    /// Gives up on the pending recipients now: each fails with `5.3.0 returned by the
    /// operator`, and the sender gets the usual failure report (as for any bounce; none for a
    /// null sender).
    Bounce,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such message (never queued, or delivered and removed).
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// A flush of a held message.
    #[error("message {0} is held; release it instead")]
    Held(QueueId),
    /// The spool failed; nothing was changed.
    #[error(transparent)]
    Spool(SpoolError),
    /// The runner has stopped (the server is shutting down).
    #[error("the queue runner is not running")]
    Stopped,
}

/// One change on its way to the runner, and where its answer goes.
pub(super) struct Request {
    id: QueueId,
    change: Change,
    reply: oneshot::Sender<Result<usize, ChangeError>>,
}

/// Changes waiting for a message's attempt to end, by message.
pub(super) type Waiting = HashMap<QueueId, Vec<Request>>;

impl RunnerHandle {
    /// Asks the runner to make `change` to message `id`; answers once it is durable, with the
    /// number of recipients it concerned (pending ones; for a flush, those made due).
    pub async fn change(&self, id: QueueId, change: Change) -> Result<usize, ChangeError> {
        let Some(shared) = self.shared.upgrade() else {
            return Err(ChangeError::Stopped);
        };
        let (reply, answer) = oneshot::channel();
        shared
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Request { id, change, reply });
        shared.wake.notify_one();
        drop(shared);
        answer.await.unwrap_or(Err(ChangeError::Stopped))
    }
}

impl QueueRunner {
    /// Applies the changes asked for, and those whose message's attempt has ended.
    pub(super) async fn apply_changes(&self, schedule: &mut Schedule, waiting: &mut Waiting) {
        let shared = &self.shared;
        let mut requests: Vec<Request> = std::mem::take(
            &mut *shared
                .changes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !waiting.is_empty() {
            let free: Vec<QueueId> = waiting
                .keys()
                .filter(|id| !shared.is_claimed(id))
                .cloned()
                .collect();
            for id in free {
                requests.extend(waiting.remove(&id).unwrap_or_default());
            }
        }
        // The writes go to the spool together (one group commit); each answer is sent, and
        // each claim released, once its own write is durable.
        let mut commits = JoinSet::new();
        for request in requests {
            let Some(claim) = Claim::take(shared, &request.id) else {
                if request.change == Change::Delete {
                    shared.cancel_claim(&request.id);
                }
                waiting.entry(request.id.clone()).or_default().push(request);
                continue;
            };
            let (write, count) = match self.prepare(&request.id, &request.change, schedule).await {
                Ok(prepared) => prepared,
                Err(e) => {
                    let _ = request.reply.send(Err(e));
                    continue;
                }
            };
            let spool = shared.spool.clone();
            let shared = shared.clone();
            commits.spawn(async move {
                let written = match write {
                    Write::Nothing => Ok(()),
                    Write::Update(envelope) => spool.update(&envelope).await,
                    Write::Remove(id) => spool.remove(&id).await,
                    Write::Bounce(mut envelope, owed) => {
                        let done = super::message::conclude(&shared, &mut envelope, &owed).await;
                        if done.is_ok() {
                            counted_bounces(&shared, &envelope, &owed);
                        }
                        done
                    }
                };
                drop(claim);
                let _ = request
                    .reply
                    .send(written.map(|()| count).map_err(ChangeError::Spool));
            });
        }
        while commits.join_next().await.is_some() {}
        shared.set_changes_waiting(!waiting.is_empty());
    }

    /// One change, under the message's claim: what to write, and how many recipients it
    /// concerns. The schedule in memory is changed at once.
    async fn prepare(
        &self,
        id: &QueueId,
        change: &Change,
        schedule: &mut Schedule,
    ) -> Result<(Write, usize), ChangeError> {
        let mut envelope = match self.shared.spool.load(id).await {
            Ok(envelope) => envelope,
            Err(SpoolError::NotFound(_)) => return Err(ChangeError::NotFound(id.clone())),
            Err(e) => return Err(ChangeError::Spool(e)),
        };
        let now = self.shared.clock.now();
        let pending = envelope
            .recipients
            .iter()
            .filter(|r| r.is_pending())
            .count();
        Ok(match change {
            Change::Hold => {
                schedule.forget(id);
                info!(queue_id = %id, "held by the operator");
                if envelope.held {
                    (Write::Nothing, pending)
                } else {
                    envelope.held = true;
                    (Write::Update(Box::new(envelope)), pending)
                }
            }
            Change::Release => {
                envelope.held = false;
                let n = make_due(&mut envelope, None, now);
                schedule.at(id.clone(), now);
                info!(queue_id = %id, "released by the operator");
                (Write::Update(Box::new(envelope)), n)
            }
            Change::Delete => {
                schedule.forget(id);
                info!(queue_id = %id, pending, "deleted by the operator; no report is sent");
                (Write::Remove(id.clone()), pending)
            }
            Change::Flush { domain } => {
                if envelope.held {
                    return Err(ChangeError::Held(id.clone()));
                }
                self.shared.revive_destinations(domain.as_deref());
                let n = make_due(&mut envelope, domain.as_deref(), now);
                if n == 0 {
                    (Write::Nothing, 0)
                } else {
                    schedule.at(id.clone(), now);
                    (Write::Update(Box::new(envelope)), n)
                }
            }
            Change::Requeue => {
                envelope.held = false;
                for r in envelope.recipients.iter_mut().filter(|r| r.is_pending()) {
                    r.attempts = 0;
                    r.last_error = None;
                    r.next_attempt = now;
                }
                for domain in pending_domains(&envelope) {
                    self.shared.revive_destinations(Some(&domain));
                }
                schedule.at(id.clone(), now);
                info!(queue_id = %id, pending, "requeued by the operator: delivery starts over");
                (Write::Update(Box::new(envelope)), pending)
            }
            Change::Bounce => {
                schedule.forget(id);
                let owed: Vec<Owed> = (0..envelope.recipients.len())
                    .filter(|&i| envelope.recipients[i].is_pending())
                    .map(|index| Owed {
                        index,
                        action: Action::Failed,
                        reason: Reason::local(OPERATOR_BOUNCE_STATUS, OPERATOR_BOUNCE_TEXT),
                    })
                    .collect();
                info!(queue_id = %id, pending, "bounced by the operator");
                (Write::Bounce(Box::new(envelope), owed), pending)
            }
        })
    }
}

/// The recipients an operator's bounce failed, counted (metrics, the delivery log) once their
/// failure is stored.
fn counted_bounces(shared: &super::shared::Shared, envelope: &Envelope, owed: &[Owed]) {
    let sender = envelope
        .reverse_path
        .mailbox()
        .map(ToString::to_string)
        .unwrap_or_default();
    for o in owed {
        let r = &envelope.recipients[o.index];
        let kind = if r.mailbox.is_some() {
            "local"
        } else {
            "remote"
        };
        let domain = super::domain_of(&r.address);
        crate::metrics::delivery("bounced", kind, domain.as_deref(), None);
        let (id, to) = (envelope.id.as_str(), r.address.to_string());
        shared
            .events
            .delivery(id, &to, &sender, "bounced", OPERATOR_BOUNCE_TEXT);
    }
}

/// The status and text of a recipient bounced by the operator (RFC 3463 X.3.0: other or
/// undefined mail system status; the sender's report says who gave up).
const OPERATOR_BOUNCE_STATUS: &str = "5.3.0";
const OPERATOR_BOUNCE_TEXT: &str = "returned to the sender by the mail system's operator";

/// The lower-case domains of the pending recipients of `envelope`.
fn pending_domains(envelope: &Envelope) -> std::collections::BTreeSet<String> {
    envelope
        .recipients
        .iter()
        .filter(|r| r.is_pending())
        .filter_map(|r| super::domain_of(&r.address))
        .collect()
}

/// What a change writes to the spool.
enum Write {
    Nothing,
    Update(Box<Envelope>),
    Remove(QueueId),
    /// The failure reports are queued, then the failures recorded (`message::conclude`).
    Bounce(Box<Envelope>, Vec<Owed>),
}

/// Makes the pending recipients (in `domain`, lower-case, if given) due at `now`; returns how
/// many.
pub fn make_due(envelope: &mut Envelope, domain: Option<&str>, now: i64) -> usize {
    let mut n = 0;
    for r in envelope.recipients.iter_mut().filter(|r| r.is_pending()) {
        if let Some(domain) = domain {
            let in_domain = super::domain_of(&r.address).is_some_and(|d| d == domain);
            if !in_domain {
                continue;
            }
        }
        r.next_attempt = r.next_attempt.min(now);
        n += 1;
    }
    n
}
