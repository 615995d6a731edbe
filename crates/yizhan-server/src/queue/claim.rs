//! Claims: a message is worked on by one worker at a time (a runner task or a TURN session).

use std::sync::Arc;

use yizhan_spool::QueueId;

use super::shared::Shared;

/// A message claimed by one worker (a runner task or a TURN session); released on drop.
pub(super) struct Claim {
    pub(super) shared: Arc<Shared>,
    pub(super) id: QueueId,
}

impl Claim {
    /// Claims `id`, unless someone else holds it.
    pub(super) fn take(shared: &Arc<Shared>, id: &QueueId) -> Option<Claim> {
        let mut busy = shared
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        busy.insert(id.clone()).then(|| Claim {
            shared: shared.clone(),
            id: id.clone(),
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
    }
}
