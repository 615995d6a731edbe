//! What this node knows of the messages it has just committed, until their first attempt
//! ends: the envelope as committed (the claim taken in the same INSERT makes reading it back
//! pointless) and, while they fit in [`FRESH_BODY_BYTES`], the small bodies (already in memory
//! when received): the first attempt then reads nothing from the database at all.
//!
//! A body never changes once committed, so a copy is right for as long as it is kept; the
//! envelope is trusted only within half the lease (see `PgStore::claim_one`). Whatever is
//! older than the lease is let go, whether or not its attempt ever came (a message deleted by
//! an operator on another node before it, say): the cache cannot fill with the forgotten.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{Envelope, QueueId};

/// At most this many octets of bodies are kept (beyond it, first attempts read their bodies
/// from the database, as every later attempt does).
pub const FRESH_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How many insertions between two sweeps of what is older than the lease.
const SWEEP_EVERY: u32 = 256;

/// See the module's documentation.
#[derive(Debug)]
pub(super) struct Fresh {
    inner: Mutex<Inner>,
    /// Kept no longer than this (the lease).
    max_age: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    envelopes: HashMap<QueueId, (Envelope, Instant)>,
    bodies: HashMap<QueueId, (Vec<u8>, Instant)>,
    body_bytes: usize,
    inserted: u32,
}

impl Inner {
    /// Lets go of everything older than `max_age`.
    fn sweep(&mut self, max_age: Duration) {
        self.envelopes.retain(|_, (_, at)| at.elapsed() < max_age);
        let mut freed = 0;
        self.bodies.retain(|_, (body, at)| {
            let keep = at.elapsed() < max_age;
            if !keep {
                freed += body.len();
            }
            keep
        });
        self.body_bytes -= freed;
    }
}

impl Fresh {
    /// Keeping nothing longer than `max_age` (the lease).
    pub(super) fn new(max_age: Duration) -> Fresh {
        Fresh {
            inner: Mutex::default(),
            max_age,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A message just committed, and its body if it is small and there is room.
    pub(super) fn insert(&self, envelope: Envelope, body: Option<Vec<u8>>) {
        let mut inner = self.inner();
        inner.inserted = inner.inserted.wrapping_add(1);
        let full = body
            .as_ref()
            .is_some_and(|b| inner.body_bytes + b.len() > FRESH_BODY_BYTES);
        if full || inner.inserted.is_multiple_of(SWEEP_EVERY) {
            inner.sweep(self.max_age);
        }
        let (id, now) = (envelope.id.clone(), Instant::now());
        if let Some(body) = body
            && inner.body_bytes + body.len() <= FRESH_BODY_BYTES
        {
            inner.body_bytes += body.len();
            if let Some((old, _)) = inner.bodies.insert(id.clone(), (body, now)) {
                inner.body_bytes -= old.len();
            }
        }
        inner.envelopes.insert(id, (envelope, now));
    }

    /// The envelope as committed and when, once (the first claim); the body stays for the
    /// attempt.
    pub(super) fn take_envelope(&self, id: &QueueId) -> Option<(Envelope, Instant)> {
        self.inner().envelopes.remove(id)
    }

    /// A copy of the body, if it is kept.
    pub(super) fn body(&self, id: &QueueId) -> Option<Vec<u8>> {
        self.inner().bodies.get(id).map(|(body, _)| body.clone())
    }

    /// The first attempt is over (or will not happen here): nothing more is kept.
    pub(super) fn forget(&self, id: &QueueId) {
        let mut inner = self.inner();
        inner.envelopes.remove(id);
        if let Some((body, _)) = inner.bodies.remove(id) {
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

    pub(super) fn envelope() -> Envelope {
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
        let fresh = Fresh::new(Duration::from_secs(300));
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

#[cfg(test)]
mod aging {
    use super::*;

    #[test]
    fn what_outlives_the_lease_is_let_go_even_if_its_attempt_never_comes() {
        let fresh = Fresh::new(Duration::ZERO);
        let forgotten = tests::envelope();
        fresh.insert(forgotten.clone(), Some(vec![0; FRESH_BODY_BYTES]));
        // The next body does not fit: the sweep lets the old one go, and it takes its place.
        let next = tests::envelope();
        fresh.insert(next.clone(), Some(vec![1; 10]));
        assert!(fresh.body(&forgotten.id).is_none());
        assert_eq!(fresh.body_bytes(), 10);
        // And every few hundred insertions, whether or not the bodies fill the room.
        for _ in 0..SWEEP_EVERY {
            fresh.insert(tests::envelope(), None);
        }
        assert!(fresh.take_envelope(&forgotten.id).is_none());
        assert!(fresh.inner().envelopes.len() < SWEEP_EVERY as usize);
    }
}
