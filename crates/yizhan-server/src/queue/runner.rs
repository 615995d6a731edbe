//! The runner loop: its schedule, what it starts, and what it learns from finished tasks.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};
use yizhan_delivery::maildir::Maildir;
use yizhan_delivery::mx::Resolver;
use yizhan_delivery::smtp::TlsClient;
use yizhan_spool::{Envelope, QueueId, QueueStore, SpoolError};

use super::changes::Waiting;
use super::destination::Destinations;
use super::handle::RunnerHandle;
use super::local::{LOCAL_BATCH, LocalQueue};
use super::message::{Done, process};
use super::schedule::Schedule;
use super::settings::{Clock, OutboundSettings, RunnerSettings};
use super::shared::{RunnerConfig, Shared, system_resolver};
use crate::directory::Directory;

/// The longest the runner sleeps without looking at the spool again (guards against clock
/// jumps and missed wake-ups).
pub(super) const MAX_IDLE: Duration = Duration::from_secs(60);

/// Messages read at a time by a flush (ETRN) that goes through the whole queue.
const FLUSH_PAGE: usize = 1000;

/// How long the runner waits after a spool error before it tries again.
pub(super) const ERROR_BACKOFF: Duration = Duration::from_secs(10);

/// How often the runner reads the whole spool again, as a safety net for changes it was not
/// told about (default; see [`QueueRunner::with_rescan_interval`]).
pub(super) const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// Submitted envelopes kept in memory while waiting for a free slot; past this, only their
/// id and due time are kept and the envelope is read again from the spool when its turn comes.
pub(super) const READY_LIMIT: usize = 10_000;

/// The message tasks in flight: at most `window` of them, each with its message.
struct Flight {
    tasks: JoinSet<Result<Done, SpoolError>>,
    active: HashMap<tokio::task::Id, QueueId>,
    window: usize,
}

impl Flight {
    /// Whether another task may start.
    fn has_room(&self) -> bool {
        self.active.len() < self.window
    }
}

/// The queue runner. Build it with [`QueueRunner::new`], keep a [`RunnerHandle`], then
/// [`run`](QueueRunner::run) it on its own task.
pub struct QueueRunner {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for QueueRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueRunner")
            .field("spool", &self.shared.spool)
            .field("maildir", &self.shared.maildir)
            .field("config", &self.shared.config())
            .finish_non_exhaustive()
    }
}

impl QueueRunner {
    /// A runner delivering from `spool` (the embedded [`yizhan_spool::Spool`], or any other
    /// [`QueueStore`]) into `maildir`, and remotely with the default [`OutboundSettings`] and
    /// the system resolver.
    pub fn new(
        spool: impl QueueStore,
        maildir: Maildir,
        settings: RunnerSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let deliveries = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        QueueRunner {
            shared: Arc::new(Shared {
                spool: Arc::new(spool),
                maildir: Arc::new(maildir),
                config: ArcSwap::from_pointee(RunnerConfig {
                    settings,
                    outbound: OutboundSettings::default(),
                    directory: None,
                }),
                clock,
                deliveries,
                destinations: Destinations::default(),
                resolver: OnceLock::new(),
                new_resolver: Arc::new(system_resolver),
                tls: None,
                pool: Mutex::new(HashMap::new()),
                wake: Arc::new(Notify::new()),
                flushes: Arc::new(Mutex::new(Vec::new())),
                inbox: Arc::new(Mutex::new(Vec::new())),
                rescan: Arc::new(AtomicBool::new(true)),
                scans: Arc::new(AtomicU64::new(0)),
                rescan_every: RESCAN_EVERY,
                busy: Mutex::new(HashMap::new()),
                changes: Mutex::new(Vec::new()),
                changes_waiting: AtomicBool::new(false),
                late_flushes: Mutex::new(HashMap::new()),
                local: Mutex::new(LocalQueue::default()),
                local_batches: AtomicU64::new(0),
                events: crate::events::Events::default(),
            }),
        }
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.shared).expect("configured before run() and handle()")
    }

    /// Sets how remote delivery and reports work.
    pub fn with_outbound(self, outbound: OutboundSettings) -> Self {
        self.shared.reconfigure(|c| c.outbound = outbound);
        self
    }

    /// Uses this resolver instead of the system's (tests: a fake, or hickory pointed at a test
    /// DNS server).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.shared_mut().new_resolver = Arc::new(move || Ok(resolver.clone()));
        self
    }

    /// Makes the resolver with `factory` when it is first needed, and again at the next
    /// attempt as long as it fails (tests: a resolver that cannot be made at first).
    #[cfg(test)]
    pub(super) fn with_resolver_factory(mut self, factory: super::shared::ResolverFactory) -> Self {
        self.shared_mut().new_resolver = factory;
        self
    }

    /// Enables STARTTLS towards remote hosts with these client configurations.
    pub fn with_tls(mut self, tls: TlsClient) -> Self {
        self.shared_mut().tls = Some(tls);
        self
    }

    /// The directory, to deliver reports to local senders into their Maildir.
    pub fn with_directory(self, directory: Directory) -> Self {
        self.shared.reconfigure(|c| c.directory = Some(directory));
        self
    }

    /// How often the whole spool is read again as a safety net (default 60 s).
    pub fn with_rescan_interval(mut self, every: Duration) -> Self {
        self.shared_mut().rescan_every = every.max(Duration::from_secs(1));
        self
    }

    /// A handle to wake the runner.
    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle {
            wake: self.shared.wake.clone(),
            flushes: self.shared.flushes.clone(),
            inbox: self.shared.inbox.clone(),
            rescan: self.shared.rescan.clone(),
            scans: self.shared.scans.clone(),
            events: self.shared.events.clone(),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// How many message tasks may be in flight: four per delivery slot. Local deliveries take
    /// no delivery permit (they are batched), so the window leaves room for a full batch of
    /// them whatever `concurrency` is.
    fn window(&self) -> usize {
        let concurrency = self.shared.config().settings.concurrency;
        concurrency.max(1).saturating_mul(4).max(LOCAL_BATCH)
    }

    /// Runs until `shutdown` is cancelled. Then it starts nothing new, lets the deliveries in
    /// flight finish and record their outcome, closes idle connections and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut flight = Flight {
            tasks: JoinSet::new(),
            active: HashMap::new(),
            window: self.window(),
        };
        let mut schedule = Schedule::default();
        let mut waiting = Waiting::new();
        let mut backoff_until: Option<Instant> = None;
        let mut last_scan = Instant::now();
        info!("queue runner started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            if backoff_until.is_some_and(|t| t <= now) {
                backoff_until = None;
            }
            if now >= last_scan + self.shared.rescan_every {
                self.shared.rescan.store(true, Ordering::Release);
            }
            // A reload may have changed `concurrency`.
            flight.window = self.window();
            self.shared.sweep_pool(false);
            self.unpark(&mut schedule);
            self.apply_changes(&mut schedule, &mut waiting).await;
            let mut wait_until = None;
            if backoff_until.is_none() {
                let filled = self
                    .start_due(&mut schedule, &mut flight, &shutdown, &mut last_scan)
                    .await;
                match filled {
                    Ok(next) => wait_until = next,
                    Err(e) => {
                        error!(error = %e, "queue runner cannot read the spool; will retry");
                        backoff_until = Some(now + ERROR_BACKOFF);
                    }
                }
            }
            let mut deadline = backoff_until
                .or(wait_until)
                .unwrap_or(now + MAX_IDLE)
                .min(now + MAX_IDLE)
                .min(last_scan + self.shared.rescan_every);
            if let Some(expiry) = self.shared.pool_expiry() {
                deadline = deadline.min(expiry);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.shared.wake.notified() => {}
                Some(joined) = flight.tasks.join_next_with_id(), if !flight.tasks.is_empty() => {
                    let mut ok = self.finished(joined, &mut flight.active, &mut schedule);
                    // Everything else that finished meanwhile too: one round of the loop for
                    // a whole batch of deliveries, not one per message.
                    while let Some(joined) = flight.tasks.try_join_next_with_id() {
                        ok &= self.finished(joined, &mut flight.active, &mut schedule);
                    }
                    if !ok {
                        backoff_until = Some(Instant::now() + ERROR_BACKOFF);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        info!(in_flight = flight.active.len(), "queue runner stopping");
        while let Some(joined) = flight.tasks.join_next_with_id().await {
            self.finished(joined, &mut flight.active, &mut schedule);
        }
        self.shared.sweep_pool(true);
        info!("queue runner stopped");
    }

    /// Starts what is due: flushes applied, the schedule rebuilt from the spool if asked for,
    /// then tasks for due messages ([`QueueRunner::fill`]). Says when to look again.
    async fn start_due(
        &self,
        schedule: &mut Schedule,
        flight: &mut Flight,
        shutdown: &CancellationToken,
        last_scan: &mut Instant,
    ) -> Result<Option<Instant>, SpoolError> {
        if self.apply_flushes(&flight.active).await? {
            self.shared.rescan.store(true, Ordering::Release);
        }
        if self.shared.rescan.swap(false, Ordering::AcqRel) {
            *last_scan = Instant::now();
            if let Err(e) = self.rescan(schedule, &flight.active).await {
                self.shared.rescan.store(true, Ordering::Release);
                return Err(e);
            }
        }
        self.fill(schedule, flight, shutdown).await
    }

    /// Wakes messages parked on destinations that got a permit back (all of them for a
    /// destination that is down: they are deferred without connecting).
    fn unpark(&self, schedule: &mut Schedule) {
        let freed = self.shared.destinations.take_freed();
        if freed.is_empty() {
            return;
        }
        let now = self.shared.clock.now();
        for key in freed {
            let room = self.shared.destination_room(&key, now);
            for id in schedule.parked.wake(&key, room) {
                schedule.at(id, now);
            }
        }
    }

    /// Makes the recipients asked for by [`RunnerHandle::flush`] due now. Returns whether the
    /// spool was changed (the schedule in memory is then out of date).
    async fn apply_flushes(
        &self,
        active: &HashMap<tokio::task::Id, QueueId>,
    ) -> Result<bool, SpoolError> {
        let requests: Vec<Option<String>> = match self.shared.flushes.lock() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(_) => return Ok(false),
        };
        let late = !self
            .shared
            .late_flushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty();
        if requests.is_empty() && !late {
            return Ok(false);
        }
        let busy = self
            .shared
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let in_flight: HashSet<&QueueId> = active.values().chain(busy.keys()).collect();
        // Requests that met a message in flight wait for it to finish: its task may be about
        // to record a new retry time, which the request must still cut short.
        let ready = self.shared.take_late_flushes(&in_flight);
        if requests.is_empty() && ready.is_empty() {
            return Ok(false);
        }
        for domain in &requests {
            self.shared.revive_destinations(domain.as_deref());
        }
        let now = self.shared.clock.now();
        self.shared.scans.fetch_add(1, Ordering::Relaxed);
        let mut any = false;
        // Page by page: a large backlog is never read whole.
        let mut after: Option<QueueId> = None;
        loop {
            let page = self
                .shared
                .spool
                .list_page(after.as_ref(), FLUSH_PAGE)
                .await?;
            let full = page.len() == FLUSH_PAGE;
            after = page.last().map(|e| e.id.clone());
            for mut envelope in page {
                let mut wanted: Vec<Option<String>> = requests.clone();
                if let Some(more) = ready.get(&envelope.id) {
                    wanted.extend(more.iter().cloned());
                }
                if wanted.is_empty() {
                    continue;
                }
                if in_flight.contains(&envelope.id) {
                    self.shared.keep_late_flush(&envelope.id, &wanted);
                    continue;
                }
                if flush_remote(&mut envelope, &wanted, now) {
                    self.shared.spool.update(&envelope).await?;
                    any = true;
                }
            }
            if !full {
                break;
            }
        }
        Ok(any)
    }

    /// Rebuilds the schedule from the spool (the truth, DESIGN.md invariant 2): every message
    /// not held and not in flight, with its due time; messages with nothing left to do (left
    /// behind by a crash or a failed removal) are due now, their task just removes them. Only
    /// the index columns are read (no envelope is parsed), on the blocking pool: a backlog of a
    /// million messages is scheduled in about a second without stalling anything else.
    async fn rescan(
        &self,
        schedule: &mut Schedule,
        active: &HashMap<tokio::task::Id, QueueId>,
    ) -> Result<(), SpoolError> {
        // Whatever was submitted so far is in the spool already (submit follows commit).
        if let Ok(mut inbox) = self.shared.inbox.lock() {
            inbox.clear();
        }
        self.shared.scans.fetch_add(1, Ordering::Relaxed);
        let index = self.shared.spool.schedule_index().await?;
        schedule.clear();
        let now = self.shared.clock.now();
        let in_flight: HashSet<&QueueId> = active.values().collect();
        for (id, next_due, held) in index {
            if in_flight.contains(&id) || schedule.parked.contains(&id) {
                continue;
            }
            match next_due {
                None => schedule.at(id, now),
                Some(due) if !held => schedule.at(id, due),
                Some(_) => {}
            }
        }
        debug!(
            scheduled = schedule.known.len(),
            ready = schedule.ready.len(),
            parked = schedule.parked.len(),
            "schedule rebuilt from the spool"
        );
        Ok(())
    }

    /// Starts tasks for due messages (up to `window` in flight): first those handed over by
    /// [`RunnerHandle::submit`] (as given, without reading the spool), then those whose time
    /// came (read again from the spool first: it may have been held, deleted or changed).
    /// Says when the next message falls due (`None`: nothing to wait for but a wake-up or a
    /// task finishing).
    async fn fill(
        &self,
        schedule: &mut Schedule,
        flight: &mut Flight,
        shutdown: &CancellationToken,
    ) -> Result<Option<Instant>, SpoolError> {
        let now = self.shared.clock.now();
        self.take_submitted(schedule, &flight.active, now);
        let busy = |id: &QueueId| {
            self.shared
                .busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(id)
        };
        let start = |envelope: Envelope, flight: &mut Flight| {
            let id = envelope.id.clone();
            let shared = self.shared.clone();
            let handle = flight
                .tasks
                .spawn(process(shared, envelope, shutdown.clone()));
            flight.active.insert(handle.id(), id);
        };
        let mut later = Vec::new();
        while flight.has_room() {
            if let Some(envelope) = schedule.ready.pop_front() {
                if busy(&envelope.id) {
                    later.push(envelope.id);
                    continue;
                }
                start(envelope, flight);
                continue;
            }
            let Some(id) = schedule.pop_due(now) else {
                break;
            };
            if busy(&id) {
                // A TURN session has it; look again shortly.
                later.push(id);
                continue;
            }
            let envelope = match self.shared.spool.load(&id).await {
                Ok(envelope) => envelope,
                // Deleted meanwhile.
                Err(SpoolError::NotFound(_)) => continue,
                Err(e) => {
                    schedule.at(id, now);
                    return Err(e);
                }
            };
            if envelope.is_finished() {
                start(envelope, flight);
                continue;
            }
            if envelope.held {
                // Released with a wake-up, which reads the spool again.
                continue;
            }
            match envelope.next_due() {
                Some(due) if due > now => schedule.at(id, due),
                Some(_) => start(envelope, flight),
                None => {}
            }
        }
        for id in later {
            schedule.at(id, now + 1);
        }
        Ok(next_wake(schedule, flight.has_room(), now))
    }

    /// Takes the envelopes handed over by [`RunnerHandle::submit`] into the schedule (as
    /// given, without reading the spool; past [`READY_LIMIT`] only their due time is kept).
    fn take_submitted(
        &self,
        schedule: &mut Schedule,
        active: &HashMap<tokio::task::Id, QueueId>,
        now: i64,
    ) {
        let submitted: Vec<Envelope> = match self.shared.inbox.lock() {
            Ok(mut inbox) => std::mem::take(&mut *inbox),
            Err(_) => return,
        };
        if submitted.is_empty() {
            return;
        }
        let in_flight: HashSet<&QueueId> = active.values().collect();
        for envelope in submitted {
            schedule.known.remove(&envelope.id);
            // Started already from a fresh read of the spool: its task reports what is left.
            if envelope.held || in_flight.contains(&envelope.id) {
                continue;
            }
            let due = envelope.next_due();
            match due {
                Some(due) if due > now => schedule.at(envelope.id, due),
                _ if schedule.ready.len() >= READY_LIMIT => {
                    schedule.at(envelope.id, due.unwrap_or(now))
                }
                _ => schedule.ready.push_back(envelope),
            }
        }
    }

    /// Bookkeeping for a finished message task: what is left of the message goes back on the
    /// schedule. Returns false if it failed (the caller backs off).
    fn finished(
        &self,
        joined: Result<(tokio::task::Id, Result<Done, SpoolError>), tokio::task::JoinError>,
        active: &mut HashMap<tokio::task::Id, QueueId>,
        schedule: &mut Schedule,
    ) -> bool {
        let retry_at = self.shared.clock.now() + ERROR_BACKOFF.as_secs() as i64;
        match joined {
            Ok((task, Ok(done))) => {
                let Some(id) = active.remove(&task) else {
                    return true;
                };
                if done.parked.is_empty() {
                    if let Some(due) = done.next_due {
                        schedule.at(id, due);
                    }
                    return true;
                }
                // A permit given back while the task was on its way out has been heard of
                // already: look again instead of waiting for the next one.
                let now = self.shared.clock.now();
                if done
                    .parked
                    .iter()
                    .any(|key| self.shared.destination_room(key, now) > 0)
                {
                    schedule.at(id, now);
                } else {
                    schedule.parked.park(id, done.parked);
                }
                true
            }
            Ok((task, Err(SpoolError::NotFound(_)))) => {
                // Removed while it was worked on: nothing left to schedule, nothing to wait for.
                if let Some(id) = active.remove(&task) {
                    info!(queue_id = %id, "message removed during its attempt");
                }
                true
            }
            Ok((task, Err(e))) => {
                let id = active.remove(&task);
                error!(queue_id = ?id, error = %e, "cannot record delivery state; the message stays queued");
                if let Some(id) = id {
                    schedule.at(id, retry_at);
                }
                false
            }
            Err(e) => {
                let id = active.remove(&e.id());
                error!(queue_id = ?id, error = %e, "delivery task failed; the message stays queued");
                if let Some(id) = id {
                    schedule.at(id, retry_at);
                }
                false
            }
        }
    }
}

/// Makes the pending remote recipients asked for (by domain, or all with `None`) due `now`;
/// whether any was.
fn flush_remote(envelope: &mut Envelope, requests: &[Option<String>], now: i64) -> bool {
    let mut changed = false;
    for r in envelope.recipients.iter_mut() {
        if !r.is_pending() || r.mailbox.is_some() || r.next_attempt <= now {
            continue;
        }
        let domain = super::domain_of(&r.address);
        if requests
            .iter()
            .any(|want| want.is_none() || *want == domain)
        {
            r.next_attempt = now;
            changed = true;
        }
    }
    changed
}

/// When the runner must look at the schedule again (`None`: only when a task finishes or
/// something wakes it); `room`: the window has room for another task.
fn next_wake(schedule: &mut Schedule, room: bool, now: i64) -> Option<Instant> {
    if !schedule.ready.is_empty() {
        // Ready already; a task must finish first.
        return None;
    }
    match schedule.next() {
        Some(t) if t > now => {
            let wait = u64::try_from(t - now).unwrap_or(u64::MAX);
            Some(Instant::now() + Duration::from_secs(wait).min(MAX_IDLE))
        }
        // Due already: if there is room, look again at once; otherwise a task must finish.
        Some(_) if room => Some(Instant::now()),
        _ => None,
    }
}
