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
//! (delivery is at-least-once).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use yizhan_delivery::dsn::{self, Action, RecipientReport, Report, Return};
use yizhan_delivery::maildir::{BatchJob, Maildir};
use yizhan_delivery::mx::{self, HickoryResolver, Resolver};
use yizhan_delivery::route::{self, Route, RoutingTable};
use yizhan_delivery::smtp::{self, Connection, Outcome, Reason, SmtpSettings, TlsClient};
use yizhan_proto::address::{Domain, ForwardPath, ReversePath};
use yizhan_proto::client::{Credentials, Transaction};
use yizhan_proto::command::{MailParams, RcptParams, Ret};
use yizhan_spool::{
    ClientInfo, Envelope, LocalMailbox, QueueId, Recipient, RecipientStatus, RetryPolicy, Spool,
    SpoolError,
};

use crate::directory::{Directory, Resolution, Target as DirTarget};

/// The longest the runner sleeps without looking at the spool again (guards against clock
/// jumps and missed wake-ups).
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Local deliveries written and synced together at most (see [`drain_local`]).
const LOCAL_BATCH: usize = 256;

/// Local delivery batches in progress at once. One: what arrives while a batch is being
/// synced makes the next batch bigger (two drainers split the queue into smaller batches and
/// measured no faster).
const LOCAL_DRAINERS: usize = 1;

/// A batch smaller than this waits [`LOCAL_LINGER`] for more deliveries first: under a light
/// load (one client sending one message after another) that turns two flushes per message
/// into two per few messages, which leaves the disk to the spool's commits, which the client
/// is waiting for. A few milliseconds more for a delivery nobody waits for.
const LOCAL_LINGER_JOBS: usize = 32;

/// See [`LOCAL_LINGER_JOBS`].
const LOCAL_LINGER: Duration = Duration::from_millis(2);

/// How long the runner waits after a spool error before it tries again.
const ERROR_BACKOFF: Duration = Duration::from_secs(10);

/// How often the runner reads the whole spool again, as a safety net for changes it was not
/// told about (default; see [`QueueRunner::with_rescan_interval`]).
const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// Submitted envelopes kept in memory while waiting for a free slot; past this, only their
/// id and due time are kept and the envelope is read again from the spool when its turn comes.
const READY_LIMIT: usize = 10_000;

/// The current time in Unix seconds. Injected so that tests can drive it.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix seconds.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// How the runner works.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// How many deliveries run at once (default 8).
    pub concurrency: usize,
    /// When to retry and when to give up.
    pub retry: RetryPolicy,
    /// The name this server uses for itself (for reports and logs).
    pub hostname: String,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            concurrency: 8,
            retry: RetryPolicy::default(),
            hostname: "localhost".into(),
        }
    }
}

/// How remote delivery and reports work (set with [`QueueRunner::with_outbound`]).
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// Smarthosts, TLS policies, source routes.
    pub routing: RoutingTable,
    /// The SMTP client: remote port, timeouts, MX host cap. `helo_name` defaults to the
    /// runner's hostname when left empty.
    pub smtp: SmtpSettings,
    /// Deliveries at once to one destination (an MX domain or a smarthost; default 4).
    pub per_destination: usize,
    /// How long an idle connection is kept for the next message to the same host (default 5 s).
    pub connection_idle: Duration,
    /// Messages per connection before it is closed (default 100).
    pub messages_per_connection: usize,
    /// After how long a still-undelivered recipient gets a delay warning (default 4 hours;
    /// RFC 3464 "delayed"). `None`: never.
    pub delay_warning: Option<Duration>,
    /// The largest original returned whole in a failure report; larger ones (and every delay
    /// or success report) get the headers only (default 1 MiB).
    pub report_original_limit: u64,
    /// Recipient domains (lower-case) whose mail waits for their client to collect it with
    /// `TURN` ([`RunnerHandle::deliver_turn`], ATRN semantics of RFC 2645): never sent by MX
    /// or smarthost; retried (so they expire and get delay warnings) like any deferred mail.
    pub held_domains: HashSet<String>,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            routing: RoutingTable::default(),
            smtp: SmtpSettings {
                helo_name: String::new(),
                ..SmtpSettings::default()
            },
            per_destination: 4,
            connection_idle: Duration::from_secs(5),
            messages_per_connection: 100,
            delay_warning: Some(Duration::from_secs(4 * 3600)),
            report_original_limit: 1024 * 1024,
            held_domains: HashSet::new(),
        }
    }
}

/// Wakes the runner, e.g. right after a message was committed. Cheap to clone.
#[derive(Clone)]
pub struct RunnerHandle {
    wake: Arc<Notify>,
    flushes: Arc<Mutex<Vec<Option<String>>>>,
    inbox: Arc<Mutex<Vec<Envelope>>>,
    rescan: Arc<AtomicBool>,
    scans: Arc<AtomicU64>,
    /// Weak: a handle must not keep the spool open after the runner is gone.
    shared: std::sync::Weak<Shared>,
}

impl fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerHandle").finish_non_exhaustive()
    }
}

/// What a TURN session delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnSummary {
    /// Messages offered (one transaction each).
    pub messages: usize,
    /// Recipients the client accepted.
    pub delivered: usize,
    /// Recipients left for later (transient failures, or messages busy elsewhere).
    pub deferred: usize,
    /// Recipients refused for good (reported to their sender).
    pub failed: usize,
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
        if let Ok(mut inbox) = self.inbox.lock() {
            inbox.push(envelope);
        }
        self.wake.notify_one();
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

    /// Makes every pending remote recipient (of `domain`, or all with `None`) due now, as ETRN
    /// (RFC 1985) asks: "start the queue for this domain".
    pub fn flush(&self, domain: Option<String>) {
        if let Ok(mut f) = self.flushes.lock() {
            f.push(domain.map(|d| d.to_ascii_lowercase()));
        }
        // The runner reads the spool again if the flush changed anything.
        self.wake.notify_one();
    }

    /// Delivers, over `conn` (a connection whose roles were just turned, RFC 821 `TURN` with
    /// the ATRN meaning of RFC 2645), every pending remote recipient in `domains`, whether due
    /// or not: one transaction per message. Outcomes, reports and removal are recorded exactly
    /// as the runner does. A message the runner is working on at that moment is skipped (and
    /// counted as deferred); the runner and a TURN session never work on one message at once.
    pub async fn deliver_turn(
        &self,
        conn: &mut Connection,
        domains: &[String],
    ) -> Result<TurnSummary, SpoolError> {
        let Some(shared) = self.shared.upgrade() else {
            warn!("TURN: the queue runner has stopped; nothing delivered");
            return Ok(TurnSummary::default());
        };
        let shared = &shared;
        let domains: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        let wanted = |r: &Recipient| {
            r.is_pending()
                && r.mailbox.is_none()
                && r.address
                    .rsplit_once('@')
                    .is_some_and(|(_, d)| domains.contains(&d.to_ascii_lowercase()))
        };
        let mut summary = TurnSummary::default();
        for listed in shared.spool.list()? {
            if listed.held || !listed.recipients.iter().any(wanted) {
                continue;
            }
            if !conn.is_usable() {
                summary.deferred += listed.recipients.iter().filter(|r| wanted(r)).count();
                continue;
            }
            let Some(_claim) = Claim::take(shared, &listed.id) else {
                summary.deferred += listed.recipients.iter().filter(|r| wanted(r)).count();
                continue;
            };
            // Read again under the claim: the runner may have changed it since the listing.
            let mut envelope = shared.spool.load(&listed.id)?;
            let members: Vec<(usize, ForwardPath)> = (0..envelope.recipients.len())
                .filter(|&i| wanted(&envelope.recipients[i]))
                .filter_map(|i| {
                    let mailbox =
                        yizhan_proto::address::Mailbox::parse(&envelope.recipients[i].address)
                            .ok()?;
                    Some((
                        i,
                        ForwardPath::Path(yizhan_proto::address::Path::new(mailbox)),
                    ))
                })
                .collect();
            if members.is_empty() {
                continue;
            }
            let dsn = conn.offers_dsn();
            let tx = transaction(&envelope, &reverse_path(&envelope), &members, dsn);
            let mut body = shared.spool.open_body(&envelope.id)?.into_async();
            summary.messages += 1;
            let host = conn.target().host.clone();
            let outcomes: Vec<Outcome> = match conn.send(tx, &mut body).await {
                Ok(result) => smtp::outcomes(&host, &result, dsn),
                Err(e) => {
                    let reason = Reason::remote(&host, &e.reply());
                    members
                        .iter()
                        .map(|_| Outcome::Transient(reason.clone()))
                        .collect()
                }
            };
            let mut owed = Vec::new();
            for ((i, _), outcome) in members.iter().zip(outcomes) {
                match &outcome {
                    Outcome::Delivered(_) => summary.delivered += 1,
                    Outcome::Transient(_) => summary.deferred += 1,
                    Outcome::Permanent(_) => summary.failed += 1,
                }
                record(shared, &mut envelope, *i, outcome, &mut owed, dsn);
            }
            shared.spool.update(&envelope).await?;
            conclude(shared, &mut envelope, &owed).await?;
        }
        self.wake();
        Ok(summary)
    }
}

/// A message claimed by one worker (a runner task or a TURN session); released on drop.
struct Claim {
    shared: Arc<Shared>,
    id: QueueId,
}

impl Claim {
    /// Claims `id`, unless someone else holds it.
    fn take(shared: &Arc<Shared>, id: &QueueId) -> Option<Claim> {
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

/// The queue runner. Build it with [`QueueRunner::new`], keep a [`RunnerHandle`], then
/// [`run`](QueueRunner::run) it on its own task.
pub struct QueueRunner {
    shared: Arc<Shared>,
}

struct Shared {
    spool: Spool,
    maildir: Arc<Maildir>,
    settings: RunnerSettings,
    outbound: OutboundSettings,
    clock: Arc<dyn Clock>,
    deliveries: Arc<Semaphore>,
    destinations: Mutex<HashMap<String, Arc<Semaphore>>>,
    resolver: OnceLock<Option<Arc<dyn Resolver>>>,
    tls: Option<TlsClient>,
    directory: Option<Directory>,
    pool: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    wake: Arc<Notify>,
    flushes: Arc<Mutex<Vec<Option<String>>>>,
    /// Messages handed over by [`RunnerHandle::submit`], not yet scheduled.
    inbox: Arc<Mutex<Vec<Envelope>>>,
    /// Set by [`RunnerHandle::wake`]: read the spool again.
    rescan: Arc<AtomicBool>,
    /// Whole-spool reads so far.
    scans: Arc<AtomicU64>,
    /// How often the spool is read again regardless.
    rescan_every: Duration,
    seed: AtomicU64,
    /// Messages being worked on (by a runner task or a TURN session).
    busy: Mutex<HashSet<QueueId>>,
    /// Flush requests (ETRN) that met a message in flight, applied once it is done.
    late_flushes: Mutex<HashMap<QueueId, Vec<Option<String>>>>,
    /// Local deliveries waiting for the next Maildir batch.
    local: Mutex<LocalQueue>,
    /// Maildir batches written so far.
    local_batches: AtomicU64,
}

impl fmt::Debug for QueueRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueRunner")
            .field("spool", &self.shared.spool)
            .field("maildir", &self.shared.maildir)
            .field("settings", &self.shared.settings)
            .field("outbound", &self.shared.outbound)
            .finish_non_exhaustive()
    }
}

impl QueueRunner {
    /// A runner delivering from `spool` into `maildir`, and remotely with the default
    /// [`OutboundSettings`] and the system resolver.
    pub fn new(
        spool: Spool,
        maildir: Maildir,
        settings: RunnerSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let deliveries = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        let seed = clock.now() as u64 ^ 0x5DEE_CE66_D1CE_4E5B;
        QueueRunner {
            shared: Arc::new(Shared {
                spool,
                maildir: Arc::new(maildir),
                settings,
                outbound: OutboundSettings::default(),
                clock,
                deliveries,
                destinations: Mutex::new(HashMap::new()),
                resolver: OnceLock::new(),
                tls: None,
                directory: None,
                pool: Mutex::new(HashMap::new()),
                wake: Arc::new(Notify::new()),
                flushes: Arc::new(Mutex::new(Vec::new())),
                inbox: Arc::new(Mutex::new(Vec::new())),
                rescan: Arc::new(AtomicBool::new(true)),
                scans: Arc::new(AtomicU64::new(0)),
                rescan_every: RESCAN_EVERY,
                seed: AtomicU64::new(seed),
                busy: Mutex::new(HashSet::new()),
                late_flushes: Mutex::new(HashMap::new()),
                local: Mutex::new(LocalQueue::default()),
                local_batches: AtomicU64::new(0),
            }),
        }
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.shared).expect("configured before run() and handle()")
    }

    /// Sets how remote delivery and reports work.
    pub fn with_outbound(mut self, outbound: OutboundSettings) -> Self {
        self.shared_mut().outbound = outbound;
        self
    }

    /// Uses this resolver instead of the system's (tests: a fake, or hickory pointed at a test
    /// DNS server).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(Some(resolver));
        self.shared_mut().resolver = cell;
        self
    }

    /// Enables STARTTLS towards remote hosts with these client configurations.
    pub fn with_tls(mut self, tls: TlsClient) -> Self {
        self.shared_mut().tls = Some(tls);
        self
    }

    /// The directory, to deliver reports to local senders into their Maildir.
    pub fn with_directory(mut self, directory: Directory) -> Self {
        self.shared_mut().directory = Some(directory);
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
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Runs until `shutdown` is cancelled. Then it starts nothing new, lets the deliveries in
    /// flight finish and record their outcome, closes idle connections and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        // Local deliveries take no delivery permit (they are batched), so the window leaves
        // room for a full batch of them whatever `concurrency` is.
        let window = self
            .shared
            .settings
            .concurrency
            .max(1)
            .saturating_mul(4)
            .max(LOCAL_BATCH);
        let mut tasks: JoinSet<Result<Option<i64>, SpoolError>> = JoinSet::new();
        let mut active: HashMap<tokio::task::Id, QueueId> = HashMap::new();
        let mut schedule = Schedule::default();
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
            self.shared.sweep_pool(false);
            let mut wait_until = None;
            if backoff_until.is_none() {
                let filled = match self.apply_flushes(&active).await {
                    Ok(changed) => {
                        if changed {
                            self.shared.rescan.store(true, Ordering::Release);
                        }
                        let rescanned = if self.shared.rescan.swap(false, Ordering::AcqRel) {
                            last_scan = Instant::now();
                            self.rescan(&mut schedule, &active)
                        } else {
                            Ok(())
                        };
                        match rescanned {
                            Ok(()) => {
                                self.fill(&mut schedule, &mut tasks, &mut active, window, &shutdown)
                            }
                            Err(e) => {
                                self.shared.rescan.store(true, Ordering::Release);
                                Err(e)
                            }
                        }
                    }
                    Err(e) => Err(e),
                };
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
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let mut ok = self.finished(joined, &mut active, &mut schedule);
                    // Everything else that finished meanwhile too: one round of the loop for
                    // a whole batch of deliveries, not one per message.
                    while let Some(joined) = tasks.try_join_next_with_id() {
                        ok &= self.finished(joined, &mut active, &mut schedule);
                    }
                    if !ok {
                        backoff_until = Some(Instant::now() + ERROR_BACKOFF);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        info!(in_flight = active.len(), "queue runner stopping");
        while let Some(joined) = tasks.join_next_with_id().await {
            self.finished(joined, &mut active, &mut schedule);
        }
        self.shared.sweep_pool(true);
        info!("queue runner stopped");
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
        let in_flight: HashSet<&QueueId> = active.values().chain(busy.iter()).collect();
        // Requests that met a message in flight wait for it to finish: its task may be about
        // to record a new retry time, which the request must still cut short.
        let ready = self.shared.take_late_flushes(&in_flight);
        if requests.is_empty() && ready.is_empty() {
            return Ok(false);
        }
        let now = self.shared.clock.now();
        self.shared.scans.fetch_add(1, Ordering::Relaxed);
        let mut any = false;
        for mut envelope in self.shared.spool.list()? {
            let mut wanted: Vec<Option<String>> = requests.clone();
            if let Some(more) = ready.get(&envelope.id) {
                wanted.extend(more.iter().cloned());
            }
            let requests = &wanted;
            if requests.is_empty() {
                continue;
            }
            if in_flight.contains(&envelope.id) {
                self.shared.keep_late_flush(&envelope.id, requests);
                continue;
            }
            let mut changed = false;
            for r in envelope.recipients.iter_mut() {
                if !r.is_pending() || r.mailbox.is_some() || r.next_attempt <= now {
                    continue;
                }
                let domain = r
                    .address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase());
                if requests
                    .iter()
                    .any(|want| want.is_none() || *want == domain)
                {
                    r.next_attempt = now;
                    changed = true;
                }
            }
            if changed {
                self.shared.spool.update(&envelope).await?;
                any = true;
            }
        }
        Ok(any)
    }

    /// Rebuilds the schedule from the spool (the truth, DESIGN.md invariant 2): every message
    /// not held and not in flight, with its due time; messages with nothing left to do (left
    /// behind by a crash or a failed removal) are made ready, their task just removes them.
    fn rescan(
        &self,
        schedule: &mut Schedule,
        active: &HashMap<tokio::task::Id, QueueId>,
    ) -> Result<(), SpoolError> {
        // Whatever was submitted so far is in the spool already (submit follows commit).
        if let Ok(mut inbox) = self.shared.inbox.lock() {
            inbox.clear();
        }
        self.shared.scans.fetch_add(1, Ordering::Relaxed);
        let listed = self.shared.spool.list()?;
        schedule.clear();
        let in_flight: HashSet<&QueueId> = active.values().collect();
        for envelope in listed {
            if in_flight.contains(&envelope.id) {
                continue;
            }
            if envelope.is_finished() {
                schedule.ready.push_back(envelope);
            } else if !envelope.held
                && let Some(due) = envelope.next_due()
            {
                schedule.at(envelope.id, due);
            }
        }
        debug!(
            scheduled = schedule.known.len(),
            ready = schedule.ready.len(),
            "schedule rebuilt from the spool"
        );
        Ok(())
    }

    /// Starts tasks for due messages (up to `window` in flight): first those handed over by
    /// [`RunnerHandle::submit`] (as given, without reading the spool), then those whose time
    /// came (read again from the spool first: it may have been held, deleted or changed).
    /// Says when the next message falls due (`None`: nothing to wait for but a wake-up or a
    /// task finishing).
    fn fill(
        &self,
        schedule: &mut Schedule,
        tasks: &mut JoinSet<Result<Option<i64>, SpoolError>>,
        active: &mut HashMap<tokio::task::Id, QueueId>,
        window: usize,
        shutdown: &CancellationToken,
    ) -> Result<Option<Instant>, SpoolError> {
        let now = self.shared.clock.now();
        let submitted: Vec<Envelope> = match self.shared.inbox.lock() {
            Ok(mut inbox) => std::mem::take(&mut *inbox),
            Err(_) => Vec::new(),
        };
        let in_flight: HashSet<&QueueId> = if submitted.is_empty() {
            HashSet::new()
        } else {
            active.values().collect()
        };
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
        drop(in_flight);
        let busy = |id: &QueueId| {
            self.shared
                .busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(id)
        };
        let start = |envelope: Envelope,
                     tasks: &mut JoinSet<Result<Option<i64>, SpoolError>>,
                     active: &mut HashMap<tokio::task::Id, QueueId>| {
            let id = envelope.id.clone();
            let shared = self.shared.clone();
            let handle = tasks.spawn(process(shared, envelope, shutdown.clone()));
            active.insert(handle.id(), id);
        };
        let mut later = Vec::new();
        while active.len() < window {
            if let Some(envelope) = schedule.ready.pop_front() {
                if busy(&envelope.id) {
                    later.push(envelope.id);
                    continue;
                }
                start(envelope, tasks, active);
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
            let envelope = match self.shared.spool.load(&id) {
                Ok(envelope) => envelope,
                // Deleted meanwhile.
                Err(SpoolError::NotFound(_)) => continue,
                Err(e) => {
                    schedule.at(id, now);
                    return Err(e);
                }
            };
            if envelope.is_finished() {
                start(envelope, tasks, active);
                continue;
            }
            if envelope.held {
                // Released with a wake-up, which reads the spool again.
                continue;
            }
            match envelope.next_due() {
                Some(due) if due > now => schedule.at(id, due),
                Some(_) => start(envelope, tasks, active),
                None => {}
            }
        }
        for id in later {
            schedule.at(id, now + 1);
        }
        if !schedule.ready.is_empty() {
            // Ready already; a task must finish first.
            return Ok(None);
        }
        Ok(match schedule.next() {
            Some(t) if t > now => {
                let wait = u64::try_from(t - now).unwrap_or(u64::MAX);
                Some(Instant::now() + Duration::from_secs(wait).min(MAX_IDLE))
            }
            // Due already: if there is room, look again at once; otherwise a task must finish.
            Some(_) if active.len() < window => Some(Instant::now()),
            _ => None,
        })
    }

    /// Bookkeeping for a finished message task: what is left of the message goes back on the
    /// schedule. Returns false if it failed (the caller backs off).
    fn finished(
        &self,
        joined: Result<(tokio::task::Id, Result<Option<i64>, SpoolError>), tokio::task::JoinError>,
        active: &mut HashMap<tokio::task::Id, QueueId>,
        schedule: &mut Schedule,
    ) -> bool {
        let retry_at = self.shared.clock.now() + ERROR_BACKOFF.as_secs() as i64;
        match joined {
            Ok((task, Ok(next))) => {
                if let (Some(id), Some(due)) = (active.remove(&task), next) {
                    schedule.at(id, due);
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

/// The runner's schedule in memory: when each known message not in flight falls due, and
/// the messages ready to start. Rebuilt from the spool at start, on a wake-up and
/// periodically; in between it learns from submitted messages and finished tasks.
#[derive(Default)]
struct Schedule {
    /// (due, id), earliest first; an entry is current only if `known` has the same time.
    heap: BinaryHeap<Reverse<(i64, QueueId)>>,
    known: HashMap<QueueId, i64>,
    /// Envelopes to start as they are, in order.
    ready: VecDeque<Envelope>,
}

impl Schedule {
    fn clear(&mut self) {
        self.heap.clear();
        self.known.clear();
        self.ready.clear();
    }

    /// Schedules `id` at `due` (replacing any earlier time).
    fn at(&mut self, id: QueueId, due: i64) {
        self.known.insert(id.clone(), due);
        self.heap.push(Reverse((due, id)));
        // Stale entries pile up only if messages are rescheduled without coming due.
        if self.heap.len() > 2 * self.known.len() + 1024 {
            self.heap = self
                .known
                .iter()
                .map(|(id, due)| Reverse((*due, id.clone())))
                .collect();
        }
    }

    fn is_current(&self, due: i64, id: &QueueId) -> bool {
        self.known.get(id) == Some(&due)
    }

    /// Takes the earliest message due at `now`, if any.
    fn pop_due(&mut self, now: i64) -> Option<QueueId> {
        while let Some(Reverse((due, id))) = self.heap.peek() {
            if !self.is_current(*due, id) {
                self.heap.pop();
                continue;
            }
            if *due > now {
                return None;
            }
            let Reverse((_, id)) = self.heap.pop()?;
            self.known.remove(&id);
            return Some(id);
        }
        None
    }

    /// When the earliest known message falls due.
    fn next(&mut self) -> Option<i64> {
        while let Some(Reverse((due, id))) = self.heap.peek() {
            if self.is_current(*due, id) {
                return Some(*due);
            }
            self.heap.pop();
        }
        None
    }
}

impl Shared {
    /// The late flush requests of messages no longer in flight (removed from the waiting list).
    fn take_late_flushes(
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
    fn keep_late_flush(&self, id: &QueueId, requests: &[Option<String>]) {
        let mut late = self
            .late_flushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        late.entry(id.clone())
            .or_default()
            .extend(requests.iter().cloned());
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, LocalQueue> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn resolver(&self) -> Option<Arc<dyn Resolver>> {
        self.resolver
            .get_or_init(|| match HickoryResolver::from_system() {
                Ok(r) => Some(Arc::new(r) as Arc<dyn Resolver>),
                Err(e) => {
                    error!(error = %e, "no DNS resolver; remote delivery will be deferred");
                    None
                }
            })
            .clone()
    }

    fn helo_name(&self) -> String {
        if self.outbound.smtp.helo_name.is_empty() {
            self.settings.hostname.clone()
        } else {
            self.outbound.smtp.helo_name.clone()
        }
    }

    fn destination_permits(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self
            .destinations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.outbound.per_destination.max(1))))
            .clone()
    }

    /// An idle connection to this host with this policy, if one is kept.
    fn take_connection(&self, key: &str) -> Option<Connection> {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = self.outbound.connection_idle;
        let list = pool.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < idle && conn.is_usable() {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    fn return_connection(&self, key: String, conn: Connection) {
        if !conn.is_usable() || conn.messages() >= self.outbound.messages_per_connection {
            tokio::spawn(conn.quit());
            return;
        }
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.entry(key).or_default().push((conn, Instant::now()));
        drop(pool);
        // The runner sleeps until the earliest idle expiry; let it recompute.
        self.wake.notify_one();
    }

    /// Closes idle connections past their time (all of them with `all`).
    fn sweep_pool(&self, all: bool) {
        let idle = self.outbound.connection_idle;
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for list in pool.values_mut() {
            let (keep, close): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|(_, since)| !all && since.elapsed() < idle);
            *list = keep;
            for (conn, _) in close {
                debug!(target = ?conn.target(), "closing idle connection");
                tokio::spawn(conn.quit());
            }
        }
        pool.retain(|_, list| !list.is_empty());
    }

    fn pool_expiry(&self) -> Option<Instant> {
        let pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.values()
            .flatten()
            .map(|(_, since)| *since + self.outbound.connection_idle)
            .min()
    }

    fn next_seed(&self) -> u64 {
        self.seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
    }
}

/// A report line owed for recipient `index`.
struct Owed {
    index: usize,
    action: Action,
    reason: Reason,
}

/// Works through the due recipients of one message, recording each outcome before the next.
/// Returns when what is left of the message falls due (`None`: removed).
async fn process(
    shared: Arc<Shared>,
    mut envelope: Envelope,
    shutdown: CancellationToken,
) -> Result<Option<i64>, SpoolError> {
    let id = envelope.id.clone();
    let Some(_claim) = Claim::take(&shared, &id) else {
        debug!(queue_id = %id, "busy elsewhere (TURN); skipped");
        return Ok(envelope.next_due());
    };
    let now = shared.clock.now();
    let due: Vec<usize> = (0..envelope.recipients.len())
        .filter(|&i| {
            let r = &envelope.recipients[i];
            r.is_pending() && r.next_attempt <= now
        })
        .collect();
    let mut owed: Vec<Owed> = Vec::new();

    // Local recipients, concurrently (bounded by the delivery permits). Each Maildir file is
    // named after the message and the recipient (`deliver_once`), so a crash before the
    // outcomes below are recorded cannot deliver anything twice: the retry finds its own file.
    // That is what lets one spool update cover the whole batch.
    let mut local = tokio::task::JoinSet::new();
    for &i in &due {
        let Some(mailbox) = envelope.recipients[i].mailbox.clone() else {
            continue;
        };
        let shared = shared.clone();
        let key = format!("{}.Y{}R{i}", envelope.received_at, envelope.id);
        let (id, return_path) = (envelope.id.clone(), envelope.reverse_path.clone());
        local.spawn(async move {
            (
                i,
                deliver_local(&shared, id, return_path, key, mailbox).await,
            )
        });
    }
    let mut delivered_local = false;
    while let Some(joined) = local.join_next().await {
        let (i, outcome) = match joined {
            Ok(pair) => pair,
            // A panicked delivery task: its recipient stays pending and is retried.
            Err(e) => {
                warn!(queue_id = %id, error = %e, "local delivery task failed");
                continue;
            }
        };
        record(&shared, &mut envelope, i, outcome, &mut owed, false);
        delivered_local = true;
    }
    // A message that is now finished is removed below: one commit instead of two.
    if delivered_local && !envelope.is_finished() {
        shared.spool.update(&envelope).await?;
    }
    if shutdown.is_cancelled() {
        return Ok(envelope.next_due());
    }

    // Remote recipients, grouped by destination: one transaction per group.
    let mut groups: Vec<Group> = Vec::new();
    let mut unroutable = false;
    for &i in &due {
        let r = &envelope.recipients[i];
        if r.mailbox.is_some() {
            continue;
        }
        if held_for_turn(&shared.outbound, &r.address) {
            let outcome = Outcome::Transient(Reason::local(
                "4.4.0",
                "held for the domain's client to collect with TURN",
            ));
            record(&shared, &mut envelope, i, outcome, &mut owed, false);
            unroutable = true;
            continue;
        }
        match route::route(r, &shared.outbound.routing) {
            Ok(routed) => {
                let key = destination_key(&routed.route);
                match groups
                    .iter_mut()
                    .find(|g| g.0 == key && !g.2 && !routed.source_routed)
                {
                    Some(g) => g.3.push((i, routed.forward_path)),
                    None => groups.push((
                        key,
                        routed.route,
                        routed.source_routed,
                        vec![(i, routed.forward_path)],
                    )),
                }
            }
            Err(e) => {
                let outcome = Outcome::Permanent(Reason::local("5.1.3", e.to_string()));
                record(&shared, &mut envelope, i, outcome, &mut owed, false);
                unroutable = true;
            }
        }
    }
    if unroutable {
        shared.spool.update(&envelope).await?;
    }
    for (key, route, source_routed, members) in groups {
        if shutdown.is_cancelled() {
            break;
        }
        let results =
            deliver_remote(&shared, &envelope, &key, &route, source_routed, &members).await;
        for (i, outcome, dsn_relayed) in results {
            record(&shared, &mut envelope, i, outcome, &mut owed, dsn_relayed);
        }
        shared.spool.update(&envelope).await?;
    }

    conclude(&shared, &mut envelope, &owed).await?;
    Ok(envelope.next_due())
}

/// Whether `address` is in a domain whose mail waits for TURN.
fn held_for_turn(outbound: &OutboundSettings, address: &str) -> bool {
    !outbound.held_domains.is_empty()
        && address
            .rsplit_once('@')
            .is_some_and(|(_, d)| outbound.held_domains.contains(&d.to_ascii_lowercase()))
}

/// The end of a round on one message: the reports owed are queued, then the failures become
/// final (invariant 3), and a message with nothing left to do is removed.
async fn conclude(
    shared: &Arc<Shared>,
    envelope: &mut Envelope,
    owed: &[Owed],
) -> Result<(), SpoolError> {
    let id = envelope.id.clone();
    if !owed.is_empty() {
        send_reports(shared, envelope, owed).await?;
        let now = shared.clock.now();
        for o in owed {
            if o.action == Action::Failed {
                let r = &mut envelope.recipients[o.index];
                warn!(queue_id = %id, to = %r.address, detail = %o.reason.text, "delivery failed permanently");
                r.status = RecipientStatus::Failed {
                    at: now,
                    detail: o.reason.text.clone(),
                };
            }
        }
        shared.spool.update(envelope).await?;
    }
    if envelope.is_finished() {
        // Not waited for: everything in it is recorded or, for a Maildir delivery, found
        // again by its file name if a crash undoes the removal.
        shared.spool.remove_soon(&id);
        info!(queue_id = %id, "message done, removed from the spool");
    }
    Ok(())
}

/// Recipients for one transaction: (destination key, route, source-routed, (index, RCPT path)).
type Group = (String, Route, bool, Vec<(usize, ForwardPath)>);

/// The key that groups recipients into one transaction and bounds per-destination concurrency.
fn destination_key(route: &Route) -> String {
    match route {
        Route::Local(_) => "local".into(),
        Route::Smarthost(h) => format!("smarthost:{}:{}", h.host.to_ascii_lowercase(), h.port),
        Route::Mx { domain, .. } => format!("mx:{domain}"),
    }
}

/// One Maildir delivery, in the next batch ([`drain_local`]).
async fn deliver_local(
    shared: &Arc<Shared>,
    id: QueueId,
    return_path: String,
    key: String,
    mailbox: LocalMailbox,
) -> Outcome {
    let (reply, outcome) = oneshot::channel();
    let start = {
        let mut queue = shared.lock_local();
        queue.jobs.push(LocalJob {
            id,
            key,
            return_path,
            mailbox,
            reply,
        });
        let start = queue.draining < LOCAL_DRAINERS;
        if start {
            queue.draining += 1;
        }
        start
    };
    if start {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || drain_local(&shared));
    }
    outcome.await.unwrap_or_else(|_| {
        Outcome::Transient(Reason::local("4.3.0", "local delivery batch failed"))
    })
}

/// Delivers the waiting local jobs in batches until none is left (on the blocking pool).
/// Everything that arrives while a batch is being written and synced goes into the next one:
/// group commit for Maildirs, as the spool does for the queue.
fn drain_local(shared: &Shared) {
    // If a batch panics, its jobs (and those waiting) are answered by their dropped reply
    // channel (a transient failure, retried later), and another drainer may start.
    struct Draining<'a>(&'a Shared);
    impl Drop for Draining<'_> {
        fn drop(&mut self) {
            let mut queue = self.0.lock_local();
            queue.draining -= 1;
            if std::thread::panicking() {
                queue.jobs.clear();
            }
        }
    }
    let _draining = Draining(shared);
    let mut lingered = false;
    loop {
        let batch: Vec<LocalJob> = {
            let mut queue = shared.lock_local();
            if queue.jobs.is_empty() {
                return;
            }
            if queue.jobs.len() < LOCAL_LINGER_JOBS && !lingered {
                drop(queue);
                std::thread::sleep(LOCAL_LINGER);
                lingered = true;
                continue;
            }
            lingered = false;
            let n = queue.jobs.len().min(LOCAL_BATCH);
            queue.jobs.drain(..n).collect()
        };
        let mut jobs = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            jobs.push(BatchJob {
                domain: job.mailbox.domain,
                local: job.mailbox.local,
                key: job.key,
                return_path: job.return_path,
                body: LazyBody {
                    spool: &shared.spool,
                    id: job.id,
                    body: None,
                },
            });
            replies.push(job.reply);
        }
        let results = shared.maildir.deliver_batch(&mut jobs);
        shared.local_batches.fetch_add(1, Ordering::Relaxed);
        debug!(deliveries = jobs.len(), "local delivery batch written");
        for (reply, result) in replies.into_iter().zip(results) {
            let outcome = match result {
                Ok((path, _fresh)) => {
                    Outcome::Delivered(Reason::local("2.0.0", path.display().to_string()))
                }
                Err(e) if e.is_transient() => {
                    Outcome::Transient(Reason::local("4.2.0", e.to_string()))
                }
                Err(e) => Outcome::Permanent(Reason::local("5.1.1", e.to_string())),
            };
            // The message task may be gone (shutdown): its recipient stays pending.
            let _ = reply.send(outcome);
        }
    }
}

/// Local deliveries waiting for the next batch.
#[derive(Default)]
struct LocalQueue {
    jobs: Vec<LocalJob>,
    /// Drainers running on the blocking pool (at most [`LOCAL_DRAINERS`]).
    draining: usize,
}

/// One recipient's Maildir delivery, and where its outcome goes.
struct LocalJob {
    id: QueueId,
    key: String,
    return_path: String,
    mailbox: LocalMailbox,
    reply: oneshot::Sender<Outcome>,
}

/// A message body opened from the spool when the batch gets to it, and let go at its end,
/// so that a batch holds one body in memory at a time.
struct LazyBody<'a> {
    spool: &'a Spool,
    id: QueueId,
    body: Option<yizhan_spool::Body>,
}

impl Read for LazyBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let body = match &mut self.body {
            Some(body) => body,
            None => self.body.insert(
                self.spool
                    .open_body(&self.id)
                    .map_err(std::io::Error::other)?,
            ),
        };
        let n = body.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.body = None;
        }
        Ok(n)
    }
}

/// The reverse-path of the stored envelope.
fn reverse_path(envelope: &Envelope) -> ReversePath {
    if envelope.reverse_path.is_empty() {
        return ReversePath::Null;
    }
    let route = if envelope.reverse_route.is_empty() {
        String::new()
    } else {
        let hops: Vec<String> = envelope
            .reverse_route
            .iter()
            .map(|d| format!("@{d}"))
            .collect();
        format!("{}:", hops.join(","))
    };
    ReversePath::parse(&format!("<{route}{}>", envelope.reverse_path)).unwrap_or(ReversePath::Null)
}

/// One transaction for a group of remote recipients: the hosts of the destination are tried in
/// order until one gives an answer about the message. Returns (index, outcome, next hop
/// offered DSN) per member.
async fn deliver_remote(
    shared: &Arc<Shared>,
    envelope: &Envelope,
    key: &str,
    route: &Route,
    source_routed: bool,
    members: &[(usize, ForwardPath)],
) -> Vec<(usize, Outcome, bool)> {
    let all = |outcome: Outcome| -> Vec<(usize, Outcome, bool)> {
        members
            .iter()
            .map(|(i, _)| (*i, outcome.clone(), false))
            .collect()
    };
    let per_dest = shared.destination_permits(key);
    let Ok(_dest) = per_dest.acquire_owned().await else {
        return all(Outcome::Transient(Reason::local(
            "4.3.0",
            "semaphore closed",
        )));
    };
    let Ok(_permit) = shared.deliveries.clone().acquire_owned().await else {
        return all(Outcome::Transient(Reason::local(
            "4.3.0",
            "semaphore closed",
        )));
    };
    let Some(resolver) = shared.resolver() else {
        return all(Outcome::Transient(Reason::local(
            "4.4.3",
            "no DNS resolver available",
        )));
    };
    let smtp_settings = SmtpSettings {
        helo_name: shared.helo_name(),
        ..shared.outbound.smtp.clone()
    };
    let (targets, tls, auth) = match route {
        Route::Smarthost(h) => (
            mx::host_targets(resolver.as_ref(), std::slice::from_ref(&h.host), h.port).await,
            h.tls,
            h.auth.clone(),
        ),
        Route::Mx { domain, tls } => (
            mx::targets(
                resolver.as_ref(),
                domain,
                smtp_settings.port,
                smtp_settings.max_hosts,
                shared.next_seed(),
            )
            .await,
            *tls,
            None,
        ),
        Route::Local(_) => return all(Outcome::Transient(Reason::local("4.3.0", "misrouted"))),
    };
    let targets = match targets {
        Ok(t) => t,
        Err(e) => {
            let reason = Reason::local(e.status(), e.to_string());
            return all(if e.is_permanent() {
                Outcome::Permanent(reason)
            } else {
                Outcome::Transient(reason)
            });
        }
    };

    let mut from = reverse_path(envelope);
    if source_routed && let Ok(us) = Domain::parse(&shared.settings.hostname) {
        from = route::prepend_hop(&from, &us);
    }
    let mut last_failure: Option<(Reason, bool)> = None;
    let auth_user = auth
        .as_ref()
        .map(|c: &Credentials| c.username.clone())
        .unwrap_or_default();
    for target in &targets {
        let pool_key = format!(
            "{}|{}|{}|{}",
            target.host,
            target.address,
            tls.as_str(),
            auth_user
        );
        let mut conn = match shared.take_connection(&pool_key) {
            Some(conn) => conn,
            None => match Connection::open(
                target,
                tls,
                auth.clone(),
                &smtp_settings,
                shared.tls.as_ref(),
            )
            .await
            {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(queue_id = %envelope.id, host = %target.host, address = %target.address, error = %e, "cannot deliver to this host");
                    let reason = Reason::remote(&target.host, &e.reply());
                    last_failure = Some((reason, e.is_permanent()));
                    continue;
                }
            },
        };
        let dsn = conn.offers_dsn();
        let tx = transaction(envelope, &from, members, dsn);
        let mut body = match shared.spool.open_body(&envelope.id) {
            Ok(body) => body.into_async(),
            Err(e) => {
                shared.return_connection(pool_key, conn);
                return all(Outcome::Transient(Reason::local("4.3.0", e.to_string())));
            }
        };
        let result = conn.send(tx, &mut body).await;
        let host = target.host.clone();
        shared.return_connection(pool_key, conn);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                last_failure = Some((Reason::remote(&host, &e.reply()), false));
                continue;
            }
        };
        // The whole transaction failed for a reason of this host (MAIL refused with 4xx, the
        // connection lost before any answer): the next host may do better.
        let none_answered =
            result.recipients.iter().all(|(_, r)| r.is_err()) && !result.mail.is_positive();
        if none_answered && result.mail.is_transient() && result.error.is_none() {
            last_failure = Some((Reason::remote(&host, &result.mail), false));
            continue;
        }
        info!(queue_id = %envelope.id, host = %host, address = %target.address, accepted = result.delivered_recipients().count(), "transaction done");
        return members
            .iter()
            .zip(smtp::outcomes(&host, &result, dsn))
            .map(|((i, _), o)| (*i, o, dsn))
            .collect();
    }
    match last_failure {
        Some((reason, true)) => all(Outcome::Permanent(reason)),
        Some((reason, false)) => all(Outcome::Transient(reason)),
        None => all(Outcome::Transient(Reason::local("4.4.1", "no host to try"))),
    }
}

/// The transaction for a group; DSN parameters go along when the next hop offers DSN
/// (RFC 3461 6.2); the session drops them otherwise anyway.
fn transaction(
    envelope: &Envelope,
    from: &ReversePath,
    members: &[(usize, ForwardPath)],
    dsn: bool,
) -> Transaction {
    let body = envelope.body_type.as_deref().map(str::to_ascii_uppercase);
    let mut params = MailParams::default();
    if dsn {
        params.envid = envelope.envid.clone();
        params.ret = match envelope
            .ret
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("FULL") => Some(Ret::Full),
            Some("HDRS") => Some(Ret::Hdrs),
            _ => None,
        };
    }
    Transaction {
        from: from.clone(),
        params,
        recipients: members
            .iter()
            .map(|(i, fp)| {
                let r = &envelope.recipients[*i];
                let rcpt = if dsn {
                    RcptParams {
                        notify: dsn::notify_param(r.notify.as_deref()),
                        orcpt: dsn::orcpt_param(r.orcpt.as_deref()),
                    }
                } else {
                    RcptParams::default()
                };
                (fp.clone(), rcpt)
            })
            .collect(),
        size: envelope.size,
        eight_bit: body.as_deref() == Some("8BITMIME"),
        needs_smtputf8: envelope.smtputf8,
        binary: body.as_deref() == Some("BINARYMIME"),
    }
}

/// Writes an outcome into recipient `i` (in memory; the caller stores it). Permanent failures
/// are not marked failed here: they go into `owed`, and become final once their report is
/// queued.
fn record(
    shared: &Shared,
    envelope: &mut Envelope,
    i: usize,
    outcome: Outcome,
    owed: &mut Vec<Owed>,
    dsn_relayed: bool,
) {
    let now = shared.clock.now();
    let id = envelope.id.clone();
    let received_at = envelope.received_at;
    let recipient = &mut envelope.recipients[i];
    let due = recipient.next_attempt;
    let attempts_before = recipient.attempts;
    recipient.attempts = recipient.attempts.saturating_add(1);
    match outcome {
        Outcome::Delivered(reason) => {
            info!(queue_id = %id, to = %recipient.address, detail = %reason.text, "delivered");
            recipient.status = RecipientStatus::Delivered {
                at: now,
                detail: reason.text.clone(),
            };
            recipient.last_error = None;
            // RFC 3461 6.2.2: a next hop with DSN takes over success reports; otherwise we
            // say "delivered" (local) or "relayed".
            let action = if recipient.mailbox.is_some() {
                Action::Delivered
            } else {
                Action::Relayed
            };
            if !dsn_relayed && dsn::parse_notify(recipient.notify.as_deref()).wants(action) {
                owed.push(Owed {
                    index: i,
                    action,
                    reason,
                });
            }
        }
        Outcome::Transient(reason) => {
            match shared
                .settings
                .retry
                .next_attempt(recipient.attempts, received_at, now)
            {
                Some(at) => {
                    // Never "again right now", even with a zero back-off configured.
                    let at = at.max(now.saturating_add(1));
                    warn!(
                        queue_id = %id,
                        to = %recipient.address,
                        attempts = recipient.attempts,
                        retry_in = at - now,
                        error = %reason.text,
                        "delivery deferred"
                    );
                    recipient.next_attempt = at;
                    let warn_due = shared.outbound.delay_warning.is_some_and(|after| {
                        shared.settings.retry.delay_warning_due(
                            after,
                            received_at,
                            attempts_before,
                            due,
                            now,
                        )
                    });
                    if warn_due
                        && dsn::parse_notify(recipient.notify.as_deref()).wants(Action::Delayed)
                    {
                        owed.push(Owed {
                            index: i,
                            action: Action::Delayed,
                            reason: reason.clone(),
                        });
                    }
                }
                None => {
                    let mut reason = reason.clone();
                    reason.text = format!(
                        "gave up after {} attempts: {}",
                        recipient.attempts, reason.text
                    );
                    // RFC 3463 X.4.7: delivery time expired.
                    reason.status = "4.4.7".into();
                    owed.push(Owed {
                        index: i,
                        action: Action::Failed,
                        reason,
                    });
                }
            }
            recipient.last_error = Some(reason.text);
        }
        Outcome::Permanent(reason) => {
            recipient.last_error = Some(reason.text.clone());
            owed.push(Owed {
                index: i,
                action: Action::Failed,
                reason,
            });
        }
    }
}

/// Commits the reports owed for this round: one per kind (failures, delays, successes), each
/// listing only the recipients it is about, and only those whose NOTIFY asks for it. Nothing
/// for a message with a null reverse-path (RFC 5321 4.5.5, RFC 3461 6.2: never a report about a
/// report).
async fn send_reports(
    shared: &Arc<Shared>,
    envelope: &Envelope,
    owed: &[Owed],
) -> Result<(), SpoolError> {
    if envelope.reverse_path.is_empty() {
        debug!(queue_id = %envelope.id, "no report for a message with a null reverse-path");
        return Ok(());
    }
    let now = shared.clock.now();
    for (kind, actions) in [
        ("failed", &[Action::Failed][..]),
        ("delayed", &[Action::Delayed][..]),
        ("success", &[Action::Delivered, Action::Relayed][..]),
    ] {
        let recipients: Vec<RecipientReport> = owed
            .iter()
            .filter(|o| actions.contains(&o.action))
            .filter(|o| {
                dsn::parse_notify(envelope.recipients[o.index].notify.as_deref()).wants(o.action)
            })
            .map(|o| {
                let r = &envelope.recipients[o.index];
                let give_up = envelope.received_at.saturating_add(
                    i64::try_from(shared.settings.retry.give_up_after.as_secs())
                        .unwrap_or(i64::MAX),
                );
                RecipientReport {
                    final_recipient: r.address.clone(),
                    original_recipient: r.orcpt.clone(),
                    action: o.action,
                    status: o.reason.status.clone(),
                    remote_mta: o.reason.remote_mta.clone(),
                    diagnostic: o.reason.reply.clone(),
                    text: o.reason.text.clone(),
                    last_attempt: Some(now),
                    will_retry_until: (o.action == Action::Delayed).then_some(give_up),
                }
            })
            .collect();
        if recipients.is_empty() {
            continue;
        }
        let full = kind == "failed"
            && envelope
                .ret
                .as_deref()
                .is_none_or(|r| !r.eq_ignore_ascii_case("HDRS"))
            && envelope.size <= shared.outbound.report_original_limit;
        let original = read_original(shared, &envelope.id, full).await?;
        let unique = format!("{}.{kind}.{}", envelope.id, now);
        let report = Report {
            reporting_mta: &shared.settings.hostname,
            to: &envelope.reverse_path,
            envid: envelope.envid.as_deref(),
            arrival: envelope.received_at,
            date: now,
            unique: &unique,
            recipients,
            original: &original,
            ret: if full { Return::Full } else { Return::Headers },
        };
        let bytes = report.build();
        let id = commit_report(shared, envelope, &bytes).await?;
        info!(queue_id = %envelope.id, report = %id, kind, "delivery status notification queued");
    }
    Ok(())
}

/// The original message (all of it, or up to the end of its header section).
async fn read_original(
    shared: &Arc<Shared>,
    id: &QueueId,
    full: bool,
) -> Result<Vec<u8>, SpoolError> {
    let spool = shared.spool.clone();
    let id = id.clone();
    let limit = shared.outbound.report_original_limit;
    let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, SpoolError> {
        let body = spool.open_body(&id)?;
        let mut bytes = Vec::new();
        let cap = if full {
            limit.saturating_add(1)
        } else {
            256 * 1024
        };
        body.take(cap)
            .read_to_end(&mut bytes)
            .map_err(|source| SpoolError::Io {
                path: spool.body_path(&id),
                source,
            })?;
        Ok(if full {
            bytes
        } else {
            dsn::header_section(&bytes).to_vec()
        })
    });
    read.await.map_err(|e| SpoolError::CommitFailed {
        reason: format!("reading the original failed: {e}"),
    })?
}

/// Queues a report as a new message: null reverse-path, the original sender as recipient
/// (into the Maildir when the sender is local, else outbound).
async fn commit_report(
    shared: &Arc<Shared>,
    original: &Envelope,
    bytes: &[u8],
) -> Result<QueueId, SpoolError> {
    let now = shared.clock.now();
    let sender = original.reverse_path.clone();
    let mut recipients = Vec::new();
    let local = shared.directory.as_ref().map(|d| {
        let (local, domain) = sender.rsplit_once('@').unwrap_or((sender.as_str(), ""));
        d.resolve(local, Some(domain))
    });
    match local {
        Some(Resolution::Deliver(targets)) => {
            for t in targets {
                let (address, mailbox) = match t {
                    DirTarget::Local(t) => {
                        let mailbox = LocalMailbox {
                            domain: t.domain,
                            local: t.local,
                        };
                        (t.address, Some(mailbox))
                    }
                    DirTarget::Remote(address) => (address, None),
                };
                recipients.push(Recipient::pending(
                    address,
                    format!("<{sender}>"),
                    mailbox,
                    now,
                ));
            }
        }
        Some(Resolution::UnknownUser | Resolution::Relocated(_)) => {
            warn!(queue_id = %original.id, to = %sender, "report not sent: the sender is no mailbox here");
            return Ok(original.id.clone());
        }
        _ => recipients.push(Recipient::pending(
            sender.clone(),
            format!("<{sender}>"),
            None,
            now,
        )),
    }
    let mut incoming = shared.spool.create()?;
    incoming.write(bytes)?;
    let envelope = Envelope {
        id: incoming.id().clone(),
        received_at: now,
        size: 0,
        reverse_path: String::new(),
        reverse_route: Vec::new(),
        envid: None,
        ret: None,
        body_type: Report::is_eight_bit(bytes).then(|| "8BITMIME".to_owned()),
        smtputf8: !sender.is_ascii(),
        client: ClientInfo {
            helo: shared.settings.hostname.clone(),
            address: "local".into(),
            auth_user: None,
            tls: None,
        },
        recipients,
        held: false,
    };
    let mut stored = envelope.clone();
    stored.size = incoming.size();
    let id = shared.spool.commit(incoming, envelope).await?;
    stored.id = id.clone();
    if let Ok(mut inbox) = shared.inbox.lock() {
        inbox.push(stored);
    }
    shared.wake.notify_one();
    Ok(id)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use yizhan_delivery::mx::{DnsError, FakeResolver};

    use super::*;

    /// Unix time that moves with tokio's (paused) clock.
    struct TestClock {
        base: i64,
        start: Instant,
    }

    impl Clock for TestClock {
        fn now(&self) -> i64 {
            self.base + i64::try_from(self.start.elapsed().as_secs()).unwrap()
        }
    }

    const T0: i64 = 1_700_000_000;

    /// DNS where `remote.example` always fails transiently (SERVFAIL), so a remote recipient
    /// keeps a message in the spool; every other name is NXDOMAIN.
    fn flaky_dns() -> FakeResolver {
        let mut dns = FakeResolver::default();
        dns.mx.insert(
            "remote.example".into(),
            Err(DnsError::Transient {
                name: "remote.example".into(),
                reason: "SERVFAIL".into(),
            }),
        );
        dns
    }
    const BODY: &[u8] = b"Subject: test\r\n\r\nHello.\r\n..dot stays unstuffed in storage\r\n";

    struct Fixture {
        dir: tempfile::TempDir,
        clock: Arc<TestClock>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                clock: Arc::new(TestClock {
                    base: T0,
                    start: Instant::now(),
                }),
            }
        }

        fn spool(&self) -> Spool {
            Spool::open(&self.dir.path().join("spool")).unwrap().0
        }

        fn mail_root(&self) -> PathBuf {
            self.dir.path().join("mail")
        }

        fn runner(&self, spool: &Spool) -> QueueRunner {
            QueueRunner::new(
                spool.clone(),
                Maildir::with_hostname(self.mail_root(), "mx.test.example"),
                RunnerSettings::default(),
                self.clock.clone(),
            )
            .with_resolver(Arc::new(flaky_dns()))
        }

        fn start(
            &self,
            spool: &Spool,
        ) -> (RunnerHandle, CancellationToken, tokio::task::JoinHandle<()>) {
            let runner = self.runner(spool);
            let handle = runner.handle();
            let token = CancellationToken::new();
            let task = tokio::spawn(runner.run(token.clone()));
            (handle, token, task)
        }

        fn inbox(&self, domain: &str, local: &str) -> Vec<Vec<u8>> {
            let new = self.mail_root().join(domain).join(local).join("new");
            match fs::read_dir(new) {
                Ok(entries) => entries
                    .map(|e| fs::read(e.unwrap().path()).unwrap())
                    .collect(),
                Err(_) => vec![],
            }
        }
    }

    fn local(domain: &str, user: &str, due: i64) -> Recipient {
        Recipient::pending(
            format!("{user}@{domain}"),
            format!("<{user}@{domain}>"),
            Some(LocalMailbox {
                domain: domain.into(),
                local: user.into(),
            }),
            due,
        )
    }

    async fn commit(spool: &Spool, received_at: i64, recipients: Vec<Recipient>) -> QueueId {
        let mut incoming = spool.create().unwrap();
        incoming.write(BODY).unwrap();
        let envelope = Envelope {
            id: incoming.id().clone(),
            received_at,
            size: 0,
            reverse_path: "sender@client.example".into(),
            reverse_route: vec![],
            envid: None,
            ret: None,
            body_type: None,
            smtputf8: false,
            client: ClientInfo::default(),
            recipients,
            held: false,
        };
        // Committed from a blocking task: while one runs, tokio's paused clock stands still
        // (otherwise it would jump ahead while we wait for the committer thread).
        let spool = spool.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || runtime.block_on(spool.commit(incoming, envelope)))
            .await
            .unwrap()
            .unwrap()
    }

    /// `Spool::update` from a blocking task, so that the paused clock stands still (see `commit`).
    async fn update(spool: &Spool, envelope: &Envelope) {
        let (spool, envelope) = (spool.clone(), envelope.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || runtime.block_on(spool.update(&envelope)))
            .await
            .unwrap()
            .unwrap();
    }

    /// Waits in virtual time (paused clock) until `done` holds.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..100_000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// RFC 5321 4.4: Return-Path first, then the body byte for byte.
    fn assert_delivered(file: &[u8]) {
        let mut want = b"Return-Path: <sender@client.example>\r\n".to_vec();
        want.extend_from_slice(BODY);
        assert_eq!(file, want);
    }

    fn recipient(spool: &Spool, id: &QueueId, i: usize) -> Recipient {
        spool.load(id).unwrap().recipients[i].clone()
    }

    fn block_domain(root: &Path, domain: &str) -> PathBuf {
        fs::create_dir_all(root).unwrap();
        let file = root.join(domain);
        fs::write(&file, b"a file where the domain directory should be").unwrap();
        file
    }

    fn remote(due: i64) -> Recipient {
        Recipient::pending("x@remote.example", "<x@remote.example>", None, due)
    }

    /// When recipient `i` was delivered, if it was.
    fn delivered_at(spool: &Spool, id: &QueueId, i: usize) -> Option<i64> {
        match recipient(spool, id, i).status {
            RecipientStatus::Delivered { at, .. } => Some(at),
            _ => None,
        }
    }

    // About time in these tests: tokio's paused clock jumps ahead whenever the runtime is idle,
    // which includes the runner waiting for the spool's committer thread. Time-sensitive checks
    // therefore look at the times the runner recorded (a remote recipient keeps the message in
    // the spool so that they can be read), not at when the test observed something.

    #[tokio::test(start_paused = true)]
    async fn delivers_to_every_local_recipient_and_removes_the_message() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let id = commit(
            &spool,
            T0,
            vec![
                local("test.example", "alice", T0),
                local("other.example", "bob", T0),
            ],
        )
        .await;
        let (_handle, token, task) = fx.start(&spool);
        // The row goes first, then the body file (Spool::remove).
        until("the spool to empty", || {
            spool.list().unwrap().is_empty() && !spool.body_path(&id).exists()
        })
        .await;
        for (domain, user) in [("test.example", "alice"), ("other.example", "bob")] {
            let inbox = fx.inbox(domain, user);
            assert_eq!(inbox.len(), 1, "{user}");
            assert_delivered(&inbox[0]);
        }
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_starts_delivery_at_once() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let (handle, token, task) = fx.start(&spool);
        tokio::time::sleep(Duration::from_secs(1)).await; // the runner is idle now
        let now = fx.clock.now();
        let id = commit(
            &spool,
            now,
            vec![local("test.example", "alice", now), remote(now)],
        )
        .await;
        let committed_at = fx.clock.now();
        handle.wake();
        until("the delivery", || delivered_at(&spool, &id, 0).is_some()).await;
        let at = delivered_at(&spool, &id, 0).unwrap();
        // Without the wake-up it would wait for the idle timer (MAX_IDLE).
        assert!(
            at - committed_at <= 1,
            "delivered {}s after the commit",
            at - committed_at
        );
        token.cancel();
        task.await.unwrap();
    }

    /// A runner that reads the spool only at start (no periodic safety-net scan in the test).
    fn start_without_rescans(
        fx: &Fixture,
        spool: &Spool,
    ) -> (RunnerHandle, CancellationToken, tokio::task::JoinHandle<()>) {
        let runner = fx
            .runner(spool)
            .with_rescan_interval(Duration::from_secs(365 * 24 * 3600));
        let handle = runner.handle();
        let token = CancellationToken::new();
        let task = tokio::spawn(runner.run(token.clone()));
        (handle, token, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_submitted_message_is_delivered_without_reading_the_spool() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let (handle, token, task) = start_without_rescans(&fx, &spool);
        tokio::time::sleep(Duration::from_secs(1)).await; // the runner is idle now
        assert_eq!(handle.spool_scans(), 1, "one scan at start");
        let now = fx.clock.now();
        let id = commit(&spool, now, vec![local("test.example", "alice", now)]).await;
        handle.submit(spool.load(&id).unwrap());
        until("the delivery and removal", || {
            fx.inbox("test.example", "alice").len() == 1 && spool.list().unwrap().is_empty()
        })
        .await;
        assert_delivered(&fx.inbox("test.example", "alice")[0]);
        assert_eq!(handle.spool_scans(), 1, "no scan after the start");
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_local_mail_is_written_in_batches() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let (handle, token, task) = start_without_rescans(&fx, &spool);
        tokio::time::sleep(Duration::from_secs(1)).await; // the runner is idle now
        let now = fx.clock.now();
        const MESSAGES: usize = 60;
        let mut envelopes = Vec::new();
        for i in 0..MESSAGES {
            let user = ["alice", "bob", "carol"][i % 3];
            let id = commit(&spool, now, vec![local("test.example", user, now)]).await;
            envelopes.push(spool.load(&id).unwrap());
        }
        // As from many connections finishing DATA at the same moment.
        for envelope in envelopes {
            handle.submit(envelope);
        }
        until("every delivery and removal", || {
            ["alice", "bob", "carol"]
                .iter()
                .map(|u| fx.inbox("test.example", u).len())
                .sum::<usize>()
                == MESSAGES
                && spool.list().unwrap().is_empty()
        })
        .await;
        for user in ["alice", "bob", "carol"] {
            let inbox = fx.inbox("test.example", user);
            assert_eq!(inbox.len(), MESSAGES / 3, "{user}");
            inbox.iter().for_each(|m| assert_delivered(m));
        }
        // Submitted together, they queue up behind the first batch: far fewer batches than
        // messages (the exact count depends on thread timing).
        let batches = handle.local_batches();
        assert!(
            (1..=MESSAGES as u64 / 2).contains(&batches),
            "{batches} batches"
        );
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_held_before_its_turn_is_not_delivered() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let id = commit(&spool, T0, vec![local("test.example", "alice", T0 + 100)]).await;
        let (handle, token, task) = start_without_rescans(&fx, &spool);
        tokio::time::sleep(Duration::from_secs(1)).await; // scheduled in memory for T0+100
        // Held through the spool alone (no wake-up): the schedule in memory is out of date.
        let mut envelope = spool.load(&id).unwrap();
        envelope.held = true;
        update(&spool, &envelope).await;
        assert!(fx.clock.now() < T0 + 100, "held before its turn");
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(fx.inbox("test.example", "alice").is_empty());
        assert!(recipient(&spool, &id, 0).is_pending());
        assert_eq!(handle.spool_scans(), 1);
        // Released (as the control socket does: spool, then wake-up): delivered.
        envelope.held = false;
        update(&spool, &envelope).await;
        handle.wake();
        until("the delivery", || {
            fx.inbox("test.example", "alice").len() == 1
        })
        .await;
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failure_is_retried_on_schedule() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let blocker = block_domain(&fx.mail_root(), "test.example");
        let id = commit(
            &spool,
            T0,
            vec![local("test.example", "user", T0), remote(T0)],
        )
        .await;
        let (_handle, token, task) = fx.start(&spool);

        until("the first attempt", || {
            recipient(&spool, &id, 0).attempts == 1
        })
        .await;
        let r = recipient(&spool, &id, 0);
        assert!(r.is_pending());
        assert!(r.last_error.is_some());
        // RFC 5321 4.5.4.1 via RetryPolicy: first retry 5 minutes after the failed attempt.
        assert_eq!(r.next_attempt, T0 + 300);
        assert!(fx.inbox("test.example", "user").is_empty());

        fs::remove_file(blocker).unwrap();
        until("the retry", || delivered_at(&spool, &id, 0).is_some()).await;
        let at = delivered_at(&spool, &id, 0).unwrap();
        assert!(
            (T0 + 300..=T0 + 301).contains(&at),
            "retried at T0+{}",
            at - T0
        );
        let r = recipient(&spool, &id, 0);
        assert_eq!(r.attempts, 2);
        assert_eq!(r.last_error, None);
        assert_eq!(fx.inbox("test.example", "user").len(), 1);
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_runner_resumes_pending_work() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let blocker = block_domain(&fx.mail_root(), "broken.example");
        let id = commit(
            &spool,
            T0,
            vec![
                local("test.example", "alice", T0),
                local("broken.example", "bob", T0),
            ],
        )
        .await;
        let (_handle, token, task) = fx.start(&spool);
        until("one delivery and one deferral", || {
            let env = spool.load(&id).unwrap();
            !env.recipients[0].is_pending() && env.recipients[1].attempts == 1
        })
        .await;
        token.cancel();
        task.await.unwrap();
        drop(spool);

        // "Restart": a new spool handle on the same directory and a new runner.
        fs::remove_file(blocker).unwrap();
        let spool = fx.spool();
        let env = spool.load(&id).unwrap();
        assert!(matches!(
            env.recipients[0].status,
            RecipientStatus::Delivered { .. }
        ));
        assert!(env.recipients[1].is_pending());
        let (_handle, token, task) = fx.start(&spool);
        until("the spool to empty", || spool.list().unwrap().is_empty()).await;
        // Alice got it once (her state was recorded before the restart), Bob got it too.
        assert_eq!(fx.inbox("test.example", "alice").len(), 1);
        assert_eq!(fx.inbox("broken.example", "bob").len(), 1);
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_cannot_be_retried_end_the_message() {
        let fx = Fixture::new();
        let spool = fx.spool();
        block_domain(&fx.mail_root(), "blocked.example");
        let five_days = 5 * 24 * 3600;
        // (received_at, recipient): an invalid mailbox name is permanent; a transient error after
        // the give-up time is final too (RFC 5321 4.5.4.1).
        let cases = [
            (T0, local("test.example", "", T0)),
            (T0 - five_days, local("blocked.example", "user", T0)),
        ];
        let mut ids = vec![];
        for (received_at, recipient) in cases {
            ids.push(commit(&spool, received_at, vec![recipient]).await);
        }
        let (_handle, token, task) = fx.start(&spool);
        // The row goes first, then the body file (Spool::remove).
        until("the spool to empty", || {
            spool.list().unwrap().is_empty() && ids.iter().all(|id| !spool.body_path(id).exists())
        })
        .await;
        assert!(fs::read_dir(fx.mail_root().join("test.example")).is_err());
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn finished_messages_left_behind_are_removed() {
        // A crash between the last `update` and `remove` leaves a message with no pending
        // recipient; it is never "due", but the runner still removes it.
        let fx = Fixture::new();
        let spool = fx.spool();
        let mut done = local("test.example", "alice", T0);
        done.status = RecipientStatus::Delivered {
            at: T0,
            detail: "new/1".into(),
        };
        let id = commit(&spool, T0, vec![done]).await;
        assert_eq!(spool.due(i64::MAX, 10).unwrap(), vec![]);
        let (_handle, token, task) = fx.start(&spool);
        until("the removal", || spool.list().unwrap().is_empty()).await;
        assert!(!spool.body_path(&id).exists());
        assert!(fx.inbox("test.example", "alice").is_empty());
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn remote_recipients_are_deferred_when_dns_fails() {
        // RFC 5321 4.5.4.1 and DESIGN.md invariant 5: a DNS failure that is not NXDOMAIN is
        // transient: the recipient is retried on the schedule, the local one is delivered.
        let fx = Fixture::new();
        let spool = fx.spool();
        let id = commit(
            &spool,
            T0,
            vec![remote(T0), local("test.example", "alice", T0)],
        )
        .await;
        let (_handle, token, task) = fx.start(&spool);
        until("both attempts", || {
            let env = spool.load(&id).unwrap();
            !env.recipients[1].is_pending() && env.recipients[0].attempts == 1
        })
        .await;
        let env = spool.load(&id).unwrap();
        assert!(env.recipients[0].is_pending());
        // First retry 5 minutes after the attempt (which came after the local delivery; the
        // paused clock moves while the spool commits, see above).
        let next = env.recipients[0].next_attempt;
        assert!((T0 + 300..=T0 + 360).contains(&next), "T0+{}", next - T0);
        assert!(
            env.recipients[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("SERVFAIL")),
            "{:?}",
            env.recipients[0].last_error
        );
        assert_eq!(fx.inbox("test.example", "alice").len(), 1);
        token.cancel();
        task.await.unwrap();
        assert_eq!(spool.list().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_runner() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let (_handle, token, task) = fx.start(&spool);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!task.is_finished());
        token.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("runner did not stop")
            .unwrap();
        // Nothing was delivered after shutdown.
        let id = commit(&spool, T0, vec![local("test.example", "alice", T0)]).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(spool.load(&id).unwrap().recipients[0].is_pending());
    }
}
