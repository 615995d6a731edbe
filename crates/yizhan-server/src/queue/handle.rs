//! [`RunnerHandle`]: how the rest of the server talks to the runner.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use yizhan_spool::Envelope;

use super::settings::{OutboundSettings, RunnerSettings};
use super::shared::Shared;
use crate::directory::Directory;

/// Wakes the runner, e.g. right after a message was committed. Cheap to clone.
#[derive(Clone)]
pub struct RunnerHandle {
    pub(super) wake: Arc<Notify>,
    pub(super) flushes: Arc<Mutex<Vec<Option<String>>>>,
    pub(super) inbox: Arc<Mutex<Vec<Envelope>>>,
    pub(super) rescan: Arc<AtomicBool>,
    pub(super) scans: Arc<AtomicU64>,
    pub(super) events: crate::events::Events,
    /// Weak: a handle must not keep the spool open after the runner is gone.
    pub(super) shared: std::sync::Weak<Shared>,
}

impl fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerHandle").finish_non_exhaustive()
    }
}

impl RunnerHandle {
    /// Makes the runner read the spool again now: call it after changing the spool behind the
    /// runner's back (hold, release, delete, flush). Wake-ups while it is busy are not lost.
    pub fn wake(&self) {
        self.rescan.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Hands a message just committed to the spool ([`Spool::commit`]) to the runner, which
    /// schedules it without reading the spool. `envelope` must be as stored: the id returned by
    /// the commit and the body size set.
    pub fn submit(&self, envelope: Envelope) {
        self.events.accepted(|at| crate::events::Event::Accepted {
            at,
            queue_id: envelope.id.to_string(),
            sender: envelope
                .reverse_path
                .mailbox()
                .map(ToString::to_string)
                .unwrap_or_default(),
            recipients: envelope
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect(),
            size: envelope.size,
            origin: match envelope.client.origin {
                yizhan_spool::Origin::Network { address } => address.to_string(),
                _ => "local".into(),
            },
        });
        if let Ok(mut inbox) = self.inbox.lock() {
            inbox.push(envelope);
        }
        self.wake.notify_one();
    }

    /// The server's events: live sessions, the delivery log, the stream, the terminals.
    pub fn events(&self) -> &crate::events::Events {
        &self.events
    }

    /// How many times the runner has read the whole spool (at start, on [`wake`](Self::wake),
    /// after a flush, and periodically).
    pub fn spool_scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// How many Maildir batches the runner has written so far (see [`Maildir::deliver_batch`]).
    pub fn local_batches(&self) -> u64 {
        self.shared
            .upgrade()
            .map_or(0, |shared| shared.local_batches.load(Ordering::Relaxed))
    }

    /// Replaces the runner's settings (a configuration reload): deliveries that start from
    /// now on use them, those in flight finish with the ones they started with. A new
    /// `concurrency` resizes the delivery slots (a smaller one as deliveries end).
    pub fn reconfigure(
        &self,
        settings: RunnerSettings,
        outbound: OutboundSettings,
        directory: Directory,
    ) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let old = shared.config().settings.concurrency.max(1);
        let new = settings.concurrency.max(1);
        shared.reconfigure(|c| {
            c.settings = settings;
            c.outbound = outbound;
            c.directory = Some(directory);
        });
        crate::reload::resize(&shared.deliveries, old, new);
    }

    /// Sends the `expanded` report for the aliases and lists of `envelope` (just committed)
    /// that expanded to several members and asked for a success report. In the background,
    /// after the 250: a report lost to a crash here is a success notice, never mail.
    pub fn report_expanded(&self, envelope: Envelope, expanded: Vec<super::Expanded>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(error) = super::reports::send_expanded(&shared, &envelope, &expanded).await {
                tracing::warn!(queue_id = %envelope.id, %error, "cannot queue the expanded report");
            }
        });
    }

    /// Makes every pending remote recipient (of `domain`, or all with `None`) due now, as ETRN
    /// (RFC 1985) asks: "start the queue for this domain".
    pub fn flush(&self, domain: Option<String>) {
        if let Ok(mut f) = self.flushes.lock() {
            f.push(domain.map(|d| d.to_ascii_lowercase()));
        }
        // The runner reads the spool again if the flush changed anything.
        self.wake.notify_one();
    }
}
