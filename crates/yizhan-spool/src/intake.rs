//! Where an accepted message is committed before its 250: the embedded spool (its own body
//! file and group-committed index), or the shared queue on PostgreSQL. Either way the body is
//! first written as it arrives into an [`Incoming`] of the local spool (in memory while small,
//! else a local file), so a slow client holds no database connection.

use crate::postgres::PgStore;
use crate::{Envelope, Incoming, QueueId, Spool, SpoolError};

/// The receiving side's store.
#[derive(Debug, Clone)]
pub enum Intake {
    /// The embedded spool (the default).
    Embedded(Spool),
    /// The shared queue; the local spool only holds bodies being received.
    Shared {
        /// The local spool, for [`Incoming`] bodies.
        spool: Spool,
        /// The shared queue.
        store: PgStore,
    },
}

impl Intake {
    /// The local spool (bodies being received; the whole queue when embedded).
    pub fn spool(&self) -> &Spool {
        match self {
            Intake::Embedded(spool) | Intake::Shared { spool, .. } => spool,
        }
    }

    /// The queue as the runner, the control socket and the admin API see it.
    pub fn queue_store(&self) -> std::sync::Arc<dyn crate::QueueStore> {
        match self {
            Intake::Embedded(spool) => std::sync::Arc::new(spool.clone()),
            Intake::Shared { store, .. } => std::sync::Arc::new(store.clone()),
        }
    }

    /// A new message being received.
    pub fn create(&self) -> Result<Incoming, SpoolError> {
        self.spool().create()
    }

    /// Commits it durably (the 250 promise); its queue id.
    pub async fn commit(
        &self,
        incoming: Incoming,
        envelope: Envelope,
    ) -> Result<QueueId, SpoolError> {
        match self {
            Intake::Embedded(spool) => spool.commit(incoming, envelope).await,
            Intake::Shared { store, .. } => store.commit_incoming(incoming, envelope).await,
        }
    }
}
