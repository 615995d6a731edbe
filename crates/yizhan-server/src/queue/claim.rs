//! Claims: a message is worked on by one worker at a time (a runner task, a TURN session, or
//! the runner applying an operator's change).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use yizhan_spool::QueueId;

use super::shared::Shared;

/// A message claimed by one worker; released on drop.
pub(super) struct Claim {
    shared: Arc<Shared>,
    id: QueueId,
    /// Cancelled when the operator deletes the message: the worker stops at the next step.
    pub(super) cancel: CancellationToken,
}

impl Claim {
    /// Claims `id`, unless someone else holds it.
    pub(super) fn take(shared: &Arc<Shared>, id: &QueueId) -> Option<Claim> {
        let mut busy = shared
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if busy.contains_key(id) {
            return None;
        }
        let cancel = CancellationToken::new();
        busy.insert(id.clone(), cancel.clone());
        Some(Claim {
            shared: shared.clone(),
            id: id.clone(),
            cancel,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut busy = self
            .shared
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        busy.remove(&self.id);
        drop(busy);
        // An operator's change may be waiting for this message (see `changes`).
        if self.shared.changes_waiting.load(Ordering::Acquire) {
            self.shared.wake.notify_one();
        }
    }
}

impl Shared {
    /// Whether some worker has `id`.
    pub(super) fn is_claimed(&self, id: &QueueId) -> bool {
        self.busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(id)
    }

    /// Asks the worker that has `id` to stop.
    pub(super) fn cancel_claim(&self, id: &QueueId) {
        if let Some(cancel) = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
        {
            cancel.cancel();
        }
    }

    /// Whether changes wait for claims to be released (then a release wakes the runner).
    pub(super) fn set_changes_waiting(&self, waiting: bool) {
        self.changes_waiting.store(waiting, Ordering::Release);
    }
}
