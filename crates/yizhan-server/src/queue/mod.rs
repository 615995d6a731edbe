//! The queue runner: takes due messages from the spool and delivers them, locally into
//! Maildirs and remotely over SMTP, and sends the delivery status notifications owed.
//!
//! One task owns the schedule. The spool is the truth (DESIGN.md invariant 2); the schedule is
//! a copy in memory (due time per message), rebuilt from the spool at start, when woken
//! ([`RunnerHandle::wake`] after the spool was changed behind the runner's back: hold,
//! release, delete; [`RunnerHandle::flush`] for ETRN-like "deliver now") and every minute as a
//! safety net. In between, freshly committed messages are handed over with
//! [`RunnerHandle::submit`] and started as given, and finished tasks report when what is left
//! falls due; a message whose time comes is read again from the spool before it is worked on
//! (it may have been held, deleted or changed). One task per message, at most
//! `4 × concurrency` (and at least 256) messages in flight.
//! Remote deliveries are bounded by a semaphore of `concurrency` permits, and also by
//! `per_destination` permits per destination (MX domain or smarthost). Local deliveries are
//! batched instead: the recipients of every message in flight queue up, and a batch of them is
//! written and made durable together ([`Maildir::deliver_batch`], one `syncfs` per step
//! instead of two flushes per file), while the next batch gathers.
//!
//! Per message task:
//!
//! 1. every due recipient is routed ([`yizhan_delivery::route`]): local ones go into their
//!    Maildir in the next batch; remote ones are grouped by destination, and each group is one SMTP
//!    transaction (RFC 5321 3.3) to the first MX host (RFC 5321 5.1) that takes it, over a
//!    connection reused across messages to the same host;
//! 2. each outcome is written to the spool before moving on (invariant 3): delivered, or "try
//!    again at" per [`RetryPolicy`] (RFC 5321 4.5.4.1);
//! 3. permanent failures (and transient ones past the give-up time) are gathered, one report
//!    (RFC 3464) lists them all and is committed to the spool with a null reverse-path, and only
//!    then are they recorded as failed: a recipient is never final without its report queued
//!    (a crash in between sends the report twice, never zero times);
//! 4. delay warnings (after `delay_warning`, RFC 3464 "delayed") and success reports (NOTIFY=SUCCESS,
//!    RFC 3461) go the same way; a message with a null reverse-path never gets a report.
//!
//! A message is removed once every recipient is delivered or failed. Errors never drop a
//! message: a spool error leaves it as last recorded, and it is picked up again later
//!
//! The parts, each with one job:
//!
//! | module | job |
//! | --- | --- |
//! | `runner` | the loop: inbox, schedule rebuilds, starting message tasks, finished tasks |
//! | `schedule` | due times in memory |
//! | `claim` | one worker per message (runner task, TURN session, operator's change) |
//! | `changes` | hold, release, delete, flush: applied by the runner, answered when durable |
//! | `message` | one message task: route, deliver, record, conclude |
//! | `local` | Maildir batches |
//! | `remote` | SMTP transactions per destination |
//! | `destination` | permits per destination, parking, a destination's own back-off |
//! | `pool` | idle connections per host |
//! | `outcome` | the one place a result is written into a recipient |
//! | `reports` | RFC 3464 reports queued as new messages |
//! | `turn` | TURN / ATRN deliveries over a turned connection |
//! | `handle` | [`RunnerHandle`], how the rest of the server reaches the runner |

mod changes;
mod claim;
mod destination;
mod handle;
mod local;
mod message;
mod outcome;
mod pool;
mod remote;
mod reports;
mod runner;
mod schedule;
mod settings;
mod shared;
mod turn;

#[cfg(test)]
mod tests;

pub use changes::{Change, ChangeError, make_due};
pub use handle::RunnerHandle;
pub use reports::Expanded;
pub use runner::QueueRunner;
pub use settings::{Clock, OutboundSettings, RunnerSettings, SystemClock};
pub use turn::TurnSummary;

use yizhan_proto::address::Mailbox;

/// The lower-case domain of a mailbox (`None` for an address literal).
fn domain_of(mailbox: &Mailbox) -> Option<String> {
    mailbox.domain().map(|d| d.as_str().to_ascii_lowercase())
}
