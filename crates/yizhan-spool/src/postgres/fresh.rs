//! What this node knows of the messages it has just committed, until their first attempt
//! ends: the envelope as committed (the claim taken in the same INSERT makes reading it back
//! pointless) and, while they fit in [`FRESH_BODY_BYTES`], the small bodies (already in memory
//! when received): the first attempt then reads nothing from the database at all.
//!
//! A body never changes once committed, so a copy is right for as long as it is kept; the
//! envelope is trusted only within half the lease (see `PgStore::claim_one`).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::{Envelope, QueueId};

/// At most this many octets of bodies are kept (beyond it, first attempts read their bodies
/// from the database, as every later attempt does).
pub const FRESH_BODY_BYTES: usize = 32 * 1024 * 1024;

/// See the module's documentation.
#[derive(Debug, Default)]
pub(super) struct Fresh {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    envelopes: HashMap<QueueId, (Envelope, Instant)>,
    bodies: HashMap<QueueId, Vec<u8>>,
    body_bytes: usize,
}

impl Fresh {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A message just committed, and its body if it is small and there is room.
    pub(super) fn insert(&self, envelope: Envelope, body: Option<Vec<u8>>) {
        let mut inner = self.inner();
        let id = envelope.id.clone();
        if let Some(body) = body
            && inner.body_bytes + body.len() <= FRESH_BODY_BYTES
        {
            inner.body_bytes += body.len();
            if let Some(old) = inner.bodies.insert(id.clone(), body) {
                inner.body_bytes -= old.len();
            }
        }
        inner.envelopes.insert(id, (envelope, Instant::now()));
    }

    /// The envelope as committed and when, once (the first claim); the body stays for the
    /// attempt.
    pub(super) fn take_envelope(&self, id: &QueueId) -> Option<(Envelope, Instant)> {
        self.inner().envelopes.remove(id)
    }

    /// A copy of the body, if it is kept.
    pub(super) fn body(&self, id: &QueueId) -> Option<Vec<u8>> {
        self.inner().bodies.get(id).cloned()
    }

    /// The first attempt is over (or will not happen here): nothing more is kept.
    pub(super) fn forget(&self, id: &QueueId) {
        let mut inner = self.inner();
        inner.envelopes.remove(id);
        if let Some(body) = inner.bodies.remove(id) {
            inner.body_bytes -= body.len();
        }
    }

    /// How many octets of bodies are kept (for tests).
    #[cfg(test)]
    fn body_bytes(&self) -> usize {
        self.inner().body_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            id: QueueId::generate(),
            received_at: 1000,
            size: 10,
            reverse_path: yizhan_proto::address::ReversePath::Null,
            envid: None,
            ret: None,
            body: None,
            smtputf8: false,
            client: crate::ClientInfo::default(),
            recipients: Vec::new(),
            held: false,
        }
    }

    #[test]
    fn bodies_are_kept_within_the_bound_and_forgotten_after_the_first_attempt() {
        let fresh = Fresh::default();
        let big = envelope();
        fresh.insert(big.clone(), Some(vec![0; FRESH_BODY_BYTES - 10]));
        let small = envelope();
        fresh.insert(small.clone(), Some(vec![1; 11]));
        assert!(
            fresh.body(&small.id).is_none(),
            "no room: read from the database"
        );
        assert!(fresh.take_envelope(&small.id).is_some());
        assert!(fresh.take_envelope(&small.id).is_none(), "taken once");
        assert_eq!(
            fresh.body(&big.id).map(|b| b.len()),
            Some(FRESH_BODY_BYTES - 10)
        );
        assert!(fresh.take_envelope(&big.id).is_some());
        assert!(fresh.body(&big.id).is_some(), "kept for the whole attempt");
        fresh.forget(&big.id);
        assert_eq!(fresh.body_bytes(), 0);
        let later = envelope();
        fresh.insert(later.clone(), Some(vec![2; 11]));
        assert_eq!(fresh.body(&later.id), Some(vec![2; 11]));
        fresh.forget(&later.id);
        fresh.forget(&later.id);
        assert_eq!(fresh.body_bytes(), 0);
    }
}
