//! What the runner and its tasks share.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;
use yizhan_delivery::maildir::Maildir;
use yizhan_delivery::mx::{DnsError, HickoryResolver, Resolver};
use yizhan_delivery::smtp::{Connection, TlsClient};
use yizhan_spool::{Envelope, QueueId, QueueStore};

use super::changes::Request;
use super::destination::Destinations;
use super::local::LocalQueue;
use super::settings::{Clock, OutboundSettings, RunnerSettings};
use crate::directory::Directory;

pub(super) struct Shared {
    /// The store: the embedded spool, or any other [`QueueStore`].
    pub(super) spool: Arc<dyn QueueStore>,
    pub(super) maildir: Arc<Maildir>,
    /// The settings in force: replaced whole by [`RunnerHandle::reconfigure`] (a reload);
    /// a delivery reads them once when it starts.
    pub(super) config: ArcSwap<RunnerConfig>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) deliveries: Arc<Semaphore>,
    pub(super) destinations: Destinations,
    /// The resolver, once one could be made.
    pub(super) resolver: OnceLock<Arc<dyn Resolver>>,
    /// Makes it (the system's); asked again at the next attempt when it fails.
    pub(super) new_resolver: ResolverFactory,
    pub(super) tls: Option<TlsClient>,
    pub(super) pool: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    pub(super) wake: Arc<Notify>,
    pub(super) flushes: Arc<Mutex<Vec<Option<String>>>>,
    /// Messages handed over by [`RunnerHandle::submit`], not yet scheduled.
    pub(super) inbox: Arc<Mutex<Vec<Envelope>>>,
    /// Set by [`RunnerHandle::wake`]: read the spool again.
    pub(super) rescan: Arc<AtomicBool>,
    /// Whole-spool reads so far.
    pub(super) scans: Arc<AtomicU64>,
    /// How often the spool is read again regardless.
    pub(super) rescan_every: Duration,
    /// Messages being worked on (by a runner task or a TURN session).
    pub(super) busy: Mutex<HashMap<QueueId, CancellationToken>>,
    /// Operators' changes not yet taken by the runner.
    pub(super) changes: Mutex<Vec<Request>>,
    /// Some change waits for a claim to be released.
    pub(super) changes_waiting: AtomicBool,
    /// Flush requests (ETRN) that met a message in flight, applied once it is done.
    pub(super) late_flushes: Mutex<HashMap<QueueId, Vec<Option<String>>>>,
    /// Local deliveries waiting for the next Maildir batch.
    pub(super) local: Mutex<LocalQueue>,
    /// Maildir batches written so far.
    pub(super) local_batches: AtomicU64,
    /// Delivery outcomes go there (the console's log, `yizhan watch`).
    pub(super) events: crate::events::Events,
}
/// What a reload can change in the runner.
#[derive(Debug, Clone)]
pub(super) struct RunnerConfig {
    pub(super) settings: RunnerSettings,
    pub(super) outbound: OutboundSettings,
    /// The directory, to deliver reports to local senders into their Maildir.
    pub(super) directory: Option<Directory>,
}

/// Makes a resolver (see [`Shared::resolver`]).
pub(super) type ResolverFactory =
    Arc<dyn Fn() -> Result<Arc<dyn Resolver>, DnsError> + Send + Sync>;

/// The system's resolver, from `/etc/resolv.conf`.
pub(super) fn system_resolver() -> Result<Arc<dyn Resolver>, DnsError> {
    HickoryResolver::from_system().map(|r| Arc::new(r) as Arc<dyn Resolver>)
}

impl Shared {
    /// The late flush requests of messages no longer in flight (removed from the waiting list).
    pub(super) fn take_late_flushes(
        &self,
        in_flight: &HashSet<&QueueId>,
    ) -> HashMap<QueueId, Vec<Option<String>>> {
        let mut late = self
            .late_flushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let done: Vec<QueueId> = late
            .keys()
            .filter(|id| !in_flight.contains(id))
            .cloned()
            .collect();
        done.into_iter()
            .filter_map(|id| late.remove_entry(&id))
            .collect()
    }

    /// Keeps flush requests for a message in flight until it is done.
    pub(super) fn keep_late_flush(&self, id: &QueueId, requests: &[Option<String>]) {
        let mut late = self
            .late_flushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        late.entry(id.clone())
            .or_default()
            .extend(requests.iter().cloned());
    }

    pub(super) fn lock_local(&self) -> std::sync::MutexGuard<'_, LocalQueue> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The resolver. One that cannot be made (no `/etc/resolv.conf` yet, say) is not
    /// remembered as missing: the next attempt asks again.
    pub(super) fn resolver(&self) -> Result<Arc<dyn Resolver>, DnsError> {
        if let Some(resolver) = self.resolver.get() {
            return Ok(resolver.clone());
        }
        match (self.new_resolver)() {
            Ok(made) => Ok(self.resolver.get_or_init(|| made).clone()),
            Err(e) => {
                error!(error = %e, "no DNS resolver; remote delivery is deferred and the resolver asked for again at the next attempt");
                Err(e)
            }
        }
    }

    /// The settings in force now.
    pub(super) fn config(&self) -> Arc<RunnerConfig> {
        self.config.load_full()
    }

    /// Changes the settings in force with `change`.
    pub(super) fn reconfigure(&self, change: impl FnOnce(&mut RunnerConfig)) {
        let mut config = RunnerConfig::clone(&self.config.load());
        change(&mut config);
        self.config.store(Arc::new(config));
    }

    pub(super) fn helo_name(&self) -> String {
        let config = self.config();
        if config.outbound.smtp.helo_name.is_empty() {
            config.settings.hostname.clone()
        } else {
            config.outbound.smtp.helo_name.clone()
        }
    }
}
