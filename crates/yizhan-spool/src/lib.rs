//! yizhan's durable message spool, with group commit.
//!
//! The spool is the only source of truth about accepted mail (DESIGN.md invariants 1-3):
//!
//! - a message is acknowledged (`250` after DATA, RFC 5321 4.1.1.4) only once
//!   [`Spool::commit`] has returned, i.e. its body file is `fdatasync`ed (a body of at most
//!   [`INLINE_BODY_MAX`] bytes has no file: it is stored in the index) and its envelope row is
//!   committed in a `synchronous=FULL` SQLite transaction;
//! - the queue runner's schedule is rebuilt from it at start ([`Spool::due`],
//!   [`Spool::next_due`]);
//! - recipient state is written ([`Spool::update`]) before the runner moves on, and a message is
//!   removed ([`Spool::remove`]) only once every recipient is final.
//!
//! | module | what | RFCs |
//! | --- | --- | --- |
//! | [`embedded`] | the embedded backend: inline bodies or body files + SQLite index + group-commit thread, recovery | 5321 4.1.1.4, 6.1 |
//! | [`envelope`] | envelope and per-recipient state in `yizhan-proto`'s types, stored as JSON | 5321 4.1.1.2-3, 3461, 6152, 6531 |
//! | `legacy` | schema-3 envelopes (strings) and their upgrade | |
//! | [`intake`] | [`Intake`]: where accepted messages are committed (the embedded spool or the shared queue) |
//! | [`id`] | [`QueueId`]: UUID v7 as 32 hex digits | 9562 5.7 |
//! | [`schedule`] | the pure retry schedule | 5321 4.5.4.1 |
//! | [`store`] | [`QueueStore`]: what the queue runner needs of a store, implemented by [`Spool`] | |
//! | [`error`] | [`SpoolError`] | |
//! | [`metrics`] | group commit sizes and times, through the `metrics` facade |
//! | [`postgres`] | the shared queue on PostgreSQL: schema, leases, compare-and-set (not yet wired in) | |
//!
//! The queue runner sees a store only through [`QueueStore`]; a shared PostgreSQL store can be
//! added behind it (ARCHITECTURE.md, "The queue store").
#![forbid(unsafe_code)]

pub mod embedded;
pub mod envelope;
pub mod error;
pub mod id;
pub mod intake;
mod legacy;
pub mod metrics;
pub mod postgres;
pub mod schedule;
pub mod store;

pub use embedded::{AsyncBody, Body, INLINE_BODY_MAX, Incoming, IncomingBody, Recovery, Spool};
pub use envelope::{ClientInfo, Envelope, LocalMailbox, Origin, Recipient, RecipientStatus};
pub use error::SpoolError;
pub use id::{InvalidQueueId, QueueId};
pub use intake::Intake;
pub use schedule::RetryPolicy;
pub use store::{DestinationPermit, QueueStore, StoreFuture};
