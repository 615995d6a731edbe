//! The queue runner: takes due messages from the spool and delivers them (local Maildir only,
//! for now).
//!
//! One task owns the schedule, which is nothing but the spool itself (DESIGN.md invariant 2):
//! at start, whenever woken ([`RunnerHandle::wake`] after a commit) and whenever the next
//! message falls due, it asks the spool for due messages and starts one task per message, at
//! most `4 × concurrency` messages in flight; the Maildir writes themselves (blocking, on the
//! blocking pool) are bounded by a semaphore of `concurrency` permits.
//!
//! Per recipient the outcome is written to the spool before the task moves on (invariant 3):
//! delivered, failed for good, or "try again at" per [`RetryPolicy`] (RFC 5321 4.5.4.1). A
//! message is removed once every recipient is delivered or failed. Errors never drop a message:
//! a spool error leaves the message as last recorded, and it is picked up again later (delivery
//! is at-least-once).
//!
//! Not yet: remote recipients (outbound SMTP) stay pending and are looked at again hourly;
//! permanent failures are logged but no delivery status notification (RFC 3464) is sent.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use yizhan_delivery::maildir::Maildir;
use yizhan_spool::{
    Envelope, LocalMailbox, QueueId, RecipientStatus, RetryPolicy, Spool, SpoolError,
};

/// The longest the runner sleeps without looking at the spool again (guards against clock
/// jumps and missed wake-ups).
const MAX_IDLE: Duration = Duration::from_secs(60);

/// How long the runner waits after a spool error before it tries again.
const ERROR_BACKOFF: Duration = Duration::from_secs(10);

/// How far a remote recipient is pushed back while outbound delivery does not exist yet.
const REMOTE_RECHECK: i64 = 3600;

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

/// Wakes the runner, e.g. right after a message was committed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RunnerHandle {
    wake: Arc<Notify>,
}

impl RunnerHandle {
    /// Makes the runner look at the spool now. Wake-ups while it is busy are not lost.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The queue runner. Build it with [`QueueRunner::new`], keep a [`RunnerHandle`], then
/// [`run`](QueueRunner::run) it on its own task.
pub struct QueueRunner {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
}

struct Shared {
    spool: Spool,
    maildir: Arc<Maildir>,
    settings: RunnerSettings,
    clock: Arc<dyn Clock>,
    deliveries: Arc<Semaphore>,
}

impl fmt::Debug for QueueRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueRunner")
            .field("spool", &self.shared.spool)
            .field("maildir", &self.shared.maildir)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

/// What one delivery attempt to one recipient came to.
enum Outcome {
    Delivered(String),
    Transient(String),
    Permanent(String),
}

impl QueueRunner {
    /// A runner delivering from `spool` into `maildir`.
    pub fn new(
        spool: Spool,
        maildir: Maildir,
        settings: RunnerSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let deliveries = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        QueueRunner {
            shared: Arc::new(Shared {
                spool,
                maildir: Arc::new(maildir),
                settings,
                clock,
                deliveries,
            }),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A handle to wake the runner.
    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle {
            wake: self.wake.clone(),
        }
    }

    /// Runs until `shutdown` is cancelled. Then it starts nothing new, lets the deliveries in
    /// flight finish and record their outcome, and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let window = self.shared.settings.concurrency.max(1).saturating_mul(4);
        let mut tasks: JoinSet<Result<(), SpoolError>> = JoinSet::new();
        let mut active: HashMap<tokio::task::Id, QueueId> = HashMap::new();
        let mut backoff_until: Option<Instant> = None;
        info!("queue runner started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            if backoff_until.is_some_and(|t| t <= now) {
                backoff_until = None;
            }
            let mut wait_until = None;
            if backoff_until.is_none() {
                match self.fill(&mut tasks, &mut active, window, &shutdown) {
                    Ok(next) => wait_until = next,
                    Err(e) => {
                        error!(error = %e, "queue runner cannot read the spool; will retry");
                        backoff_until = Some(now + ERROR_BACKOFF);
                    }
                }
            }
            let deadline = backoff_until
                .or(wait_until)
                .unwrap_or(now + MAX_IDLE)
                .min(now + MAX_IDLE);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    if !finished(joined, &mut active) {
                        backoff_until = Some(Instant::now() + ERROR_BACKOFF);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        info!(in_flight = active.len(), "queue runner stopping");
        while let Some(joined) = tasks.join_next_with_id().await {
            finished(joined, &mut active);
        }
        info!("queue runner stopped");
    }

    /// Starts tasks for due messages not already in flight (up to `window` in flight), and says
    /// when the next message not in flight falls due (`None`: nothing to wait for but a wake-up
    /// or a task finishing).
    fn fill(
        &self,
        tasks: &mut JoinSet<Result<(), SpoolError>>,
        active: &mut HashMap<tokio::task::Id, QueueId>,
        window: usize,
        shutdown: &CancellationToken,
    ) -> Result<Option<Instant>, SpoolError> {
        let spool = &self.shared.spool;
        let now = self.shared.clock.now();
        if active.len() < window {
            let in_flight: HashSet<&QueueId> = active.values().collect();
            // Messages with nothing left to do (left behind by a crash or a failed removal)
            // go through the same task, which just removes them.
            let mut candidates = spool.finished(window)?;
            candidates.extend(spool.due(now, window)?);
            let start: Vec<Envelope> = candidates
                .into_iter()
                .filter(|e| !in_flight.contains(&e.id))
                .take(window - active.len())
                .collect();
            for envelope in start {
                let id = envelope.id.clone();
                let shared = self.shared.clone();
                let shutdown = shutdown.clone();
                let handle = tasks.spawn(process(shared, envelope, shutdown));
                active.insert(handle.id(), id);
            }
        }
        let in_flight: HashSet<&QueueId> = active.values().collect();
        let next = spool
            .due(i64::MAX, active.len() + 1)?
            .iter()
            .filter(|e| !in_flight.contains(&e.id))
            .filter_map(Envelope::next_due)
            .min();
        Ok(match next {
            Some(t) if t > now => {
                let wait = u64::try_from(t - now).unwrap_or(u64::MAX);
                Some(Instant::now() + Duration::from_secs(wait).min(MAX_IDLE))
            }
            // Due already: if there is room, look again at once; otherwise a task must finish.
            Some(_) if active.len() < window => Some(Instant::now()),
            _ => None,
        })
    }
}

/// Bookkeeping for a finished message task. Returns false if it failed (the caller backs off).
fn finished(
    joined: Result<(tokio::task::Id, Result<(), SpoolError>), tokio::task::JoinError>,
    active: &mut HashMap<tokio::task::Id, QueueId>,
) -> bool {
    match joined {
        Ok((task, Ok(()))) => {
            active.remove(&task);
            true
        }
        Ok((task, Err(e))) => {
            let id = active.remove(&task);
            error!(queue_id = ?id, error = %e, "cannot record delivery state; the message stays queued");
            false
        }
        Err(e) => {
            let id = active.remove(&e.id());
            error!(queue_id = ?id, error = %e, "delivery task failed; the message stays queued");
            false
        }
    }
}

/// Works through the due recipients of one message, recording each outcome before the next.
async fn process(
    shared: Arc<Shared>,
    mut envelope: Envelope,
    shutdown: CancellationToken,
) -> Result<(), SpoolError> {
    let id = envelope.id.clone();
    let mut dirty = false;
    for i in 0..envelope.recipients.len() {
        if shutdown.is_cancelled() {
            break;
        }
        let now = shared.clock.now();
        let recipient = &envelope.recipients[i];
        if !recipient.is_pending() || recipient.next_attempt > now {
            continue;
        }
        let Some(mailbox) = recipient.mailbox.clone() else {
            info!(
                queue_id = %id,
                to = %recipient.address,
                "waiting for outbound delivery, which this version does not do yet"
            );
            envelope.recipients[i].next_attempt = now.saturating_add(REMOTE_RECHECK);
            dirty = true;
            continue;
        };
        let outcome = deliver_local(&shared, &envelope, mailbox).await;
        record(&shared, &mut envelope, i, outcome);
        shared.spool.update(&envelope).await?;
        dirty = false;
    }
    if dirty {
        shared.spool.update(&envelope).await?;
    }
    if envelope.is_finished() {
        shared.spool.remove(&id).await?;
        info!(queue_id = %id, "message done, removed from the spool");
    }
    Ok(())
}

/// One Maildir delivery on the blocking pool, under a delivery permit.
async fn deliver_local(
    shared: &Arc<Shared>,
    envelope: &Envelope,
    mailbox: LocalMailbox,
) -> Outcome {
    let Ok(_permit) = shared.deliveries.clone().acquire_owned().await else {
        return Outcome::Transient("delivery semaphore closed".into());
    };
    let spool = shared.spool.clone();
    let maildir = shared.maildir.clone();
    let id = envelope.id.clone();
    let return_path = envelope.reverse_path.clone();
    let job = tokio::task::spawn_blocking(move || {
        let mut body = match spool.open_body(&id) {
            Ok(body) => body,
            Err(e) => return Outcome::Transient(e.to_string()),
        };
        match maildir.deliver(&mailbox.domain, &mailbox.local, &return_path, &mut body) {
            Ok(path) => Outcome::Delivered(path.display().to_string()),
            Err(e) if e.is_transient() => Outcome::Transient(e.to_string()),
            Err(e) => Outcome::Permanent(e.to_string()),
        }
    });
    match job.await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Transient(format!("delivery task failed: {e}")),
    }
}

/// Writes an outcome into recipient `i` (in memory; the caller stores it).
fn record(shared: &Shared, envelope: &mut Envelope, i: usize, outcome: Outcome) {
    let now = shared.clock.now();
    let id = envelope.id.clone();
    let received_at = envelope.received_at;
    let recipient = &mut envelope.recipients[i];
    recipient.attempts = recipient.attempts.saturating_add(1);
    match outcome {
        Outcome::Delivered(path) => {
            info!(queue_id = %id, to = %recipient.address, path = %path, "delivered");
            recipient.status = RecipientStatus::Delivered {
                at: now,
                detail: path,
            };
            recipient.last_error = None;
        }
        Outcome::Transient(error) => {
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
                        %error,
                        "delivery deferred"
                    );
                    recipient.next_attempt = at;
                }
                None => {
                    let detail = format!("gave up after {} attempts: {error}", recipient.attempts);
                    fail(&id, recipient, now, detail);
                }
            }
            recipient.last_error = Some(error);
        }
        Outcome::Permanent(error) => {
            fail(&id, recipient, now, error.clone());
            recipient.last_error = Some(error);
        }
    }
}

fn fail(id: &QueueId, recipient: &mut yizhan_spool::Recipient, now: i64, detail: String) {
    warn!(
        queue_id = %id,
        to = %recipient.address,
        %detail,
        "delivery failed permanently (no delivery status notification yet)"
    );
    recipient.status = RecipientStatus::Failed { at: now, detail };
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};

    use yizhan_spool::{ClientInfo, Recipient};

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
        until("the removal", || !spool.body_path(&id).exists()).await;
        assert!(spool.list().unwrap().is_empty());
        assert!(fx.inbox("test.example", "alice").is_empty());
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn remote_recipients_wait_for_outbound_delivery() {
        let fx = Fixture::new();
        let spool = fx.spool();
        let id = commit(
            &spool,
            T0,
            vec![remote(T0), local("test.example", "alice", T0)],
        )
        .await;
        let (_handle, token, task) = fx.start(&spool);
        until("the local delivery", || {
            !spool.load(&id).unwrap().recipients[1].is_pending()
        })
        .await;
        let env = spool.load(&id).unwrap();
        assert!(env.recipients[0].is_pending());
        assert_eq!(env.recipients[0].attempts, 0);
        assert!(env.recipients[0].next_attempt >= T0 + REMOTE_RECHECK);
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
