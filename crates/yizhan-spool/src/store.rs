//! [`QueueStore`]: what the queue runner needs of a store, so that a second store (a shared
//! one on PostgreSQL, ARCHITECTURE.md "The queue store") can stand where the embedded
//! [`Spool`] stands today.
//!
//! The receiving side streams a message into the embedded spool through [`Spool::create`] and
//! [`Spool::commit`] (the 250 promise, group-committed); everything the queue does after that
//! goes through this trait: the schedule it reads, the envelopes it loads and records, the
//! bodies it delivers, the reports it enqueues and the messages it removes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::{Body, Envelope, QueueId, Spool, SpoolError};

/// A boxed, sendable future (the trait is used as `dyn QueueStore`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SpoolError>> + Send + 'a>>;

/// A place among the deliveries to one destination at once, held until dropped: for a store
/// shared by several nodes, counted across all of them.
pub struct DestinationPermit(#[allow(dead_code)] Option<Box<dyn std::any::Any + Send + Sync>>);

impl DestinationPermit {
    /// A permit that only this node's own limits stand behind (one node: nothing to share).
    pub fn local() -> DestinationPermit {
        DestinationPermit(None)
    }

    /// A permit that holds `guard` (which gives the place back when dropped).
    pub fn holding(guard: impl std::any::Any + Send + Sync) -> DestinationPermit {
        DestinationPermit(Some(Box::new(guard)))
    }
}

impl fmt::Debug for DestinationPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "DestinationPermit(shared)"
        } else {
            "DestinationPermit(local)"
        })
    }
}

/// The queue's view of a store. Each write answers once it is durable.
pub trait QueueStore: Send + Sync + fmt::Debug + 'static {
    /// Every message's id, earliest pending attempt (`None`: nothing pending) and hold, from
    /// the index alone (the schedule is rebuilt from it).
    fn schedule_index(&self) -> StoreFuture<'_, Vec<(QueueId, Option<i64>, bool)>>;

    /// One message's envelope.
    fn load<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Envelope>;

    /// Up to `limit` envelopes after `after`, in id (arrival) order.
    fn list_page<'a>(
        &'a self,
        after: Option<&'a QueueId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Envelope>>;

    /// A message's body, to read from the start.
    fn open_body<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Body>;

    /// The ids that start with `prefix` (lower-case hex), at most `limit` of them.
    fn ids_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<QueueId>>;

    /// Records a message's new state (outcomes, hold, due times).
    fn update<'a>(&'a self, envelope: &'a Envelope) -> StoreFuture<'a, ()>;

    /// Removes a message, durably.
    fn remove<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, ()>;

    /// Removes a finished message, not waited for (a crash may leave it; it is removed again).
    fn remove_soon(&self, id: &QueueId);

    /// Queues a new message made here (a report): `body` whole, `envelope` as given (its id
    /// and size are set by the store). Returns the stored envelope.
    fn enqueue<'a>(&'a self, body: &'a [u8], envelope: Envelope) -> StoreFuture<'a, Envelope>;

    /// Every envelope, in pages of 1000 (a listing for people, not for the runner).
    fn list_all(&self) -> StoreFuture<'_, Vec<Envelope>> {
        Box::pin(async move {
            let mut all: Vec<Envelope> = Vec::new();
            loop {
                let after = all.last().map(|e| e.id.clone());
                let page = self.list_page(after.as_ref(), 1000).await?;
                let full = page.len() == 1000;
                all.extend(page);
                if !full {
                    return Ok(all);
                }
            }
        })
    }

    /// One of `limit` places for deliveries to `destination` at once, across every node that
    /// shares the store; `None` while all are taken. The embedded store has one node, whose
    /// own limits suffice: always a place.
    fn destination_permit<'a>(
        &'a self,
        _destination: &'a str,
        _limit: usize,
    ) -> StoreFuture<'a, Option<DestinationPermit>> {
        Box::pin(std::future::ready(Ok(Some(DestinationPermit::local()))))
    }

    /// Whether other nodes share this store (then attempts [`claim`](Self::claim) first).
    fn is_shared(&self) -> bool {
        false
    }

    /// Claims a message for an attempt and reads it: `None` when another node holds it. A
    /// store shared by several nodes takes a lease here, and [`QueueStore::update`] and
    /// [`QueueStore::remove`] then write only while it holds it; the embedded store has one
    /// process, whose in-memory claims suffice, and only reads.
    fn claim<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Option<Envelope>> {
        Box::pin(async move { self.load(id).await.map(Some) })
    }

    /// How often a claim must be renewed while an attempt runs (`None`: claims do not
    /// expire, as in the embedded store).
    fn renew_every(&self) -> Option<std::time::Duration> {
        None
    }

    /// Renews this node's claim on a message during a long attempt; `false` when it is lost.
    fn renew_claim<'a>(&'a self, _id: &'a QueueId) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(true)))
    }

    /// The attempt is over: the claim may go (nothing to do for the embedded store).
    fn unclaim<'a>(&'a self, _id: &'a QueueId) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The embedded spool's reads are short SQLite queries on its reader connection: answered
/// at once, as they were before the trait was asynchronous.
impl QueueStore for Spool {
    fn schedule_index(&self) -> StoreFuture<'_, Vec<(QueueId, Option<i64>, bool)>> {
        Box::pin(std::future::ready(Spool::schedule_index(self)))
    }

    fn load<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Envelope> {
        Box::pin(std::future::ready(Spool::load(self, id)))
    }

    fn list_page<'a>(
        &'a self,
        after: Option<&'a QueueId>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Envelope>> {
        Box::pin(std::future::ready(Spool::list_page(self, after, limit)))
    }

    fn open_body<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, Body> {
        Box::pin(std::future::ready(Spool::open_body(self, id)))
    }

    fn ids_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<QueueId>> {
        Box::pin(std::future::ready(Spool::ids_with_prefix(
            self, prefix, limit,
        )))
    }

    fn update<'a>(&'a self, envelope: &'a Envelope) -> StoreFuture<'a, ()> {
        Box::pin(Spool::update(self, envelope))
    }

    fn remove<'a>(&'a self, id: &'a QueueId) -> StoreFuture<'a, ()> {
        Box::pin(Spool::remove(self, id))
    }

    fn remove_soon(&self, id: &QueueId) {
        Spool::remove_soon(self, id);
    }

    fn enqueue<'a>(&'a self, body: &'a [u8], envelope: Envelope) -> StoreFuture<'a, Envelope> {
        Box::pin(async move {
            let mut incoming = self.create()?;
            incoming.write(body)?;
            let mut stored = envelope.clone();
            stored.size = incoming.size();
            stored.id = self.commit(incoming, envelope).await?;
            Ok(stored)
        })
    }
}
