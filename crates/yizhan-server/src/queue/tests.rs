//! The runner, run on a temporary spool and Maildir with tokio's paused clock.

use std::fs;
use std::path::{Path, PathBuf};

use yizhan_delivery::mx::{DnsError, FakeResolver};

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use yizhan_delivery::maildir::Maildir;
use yizhan_spool::{
    ClientInfo, Envelope, LocalMailbox, QueueId, Recipient, RecipientStatus, Spool,
};

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
    Recipient::to(
        format!("{user}@{domain}").parse().unwrap(),
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
        reverse_path: "<sender@client.example>".parse().unwrap(),
        envid: None,
        ret: None,
        body: None,
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

/// RFC 5321 4.4: Return-Path first, then the body, with LF line ends on disk.
fn assert_delivered(file: &[u8]) {
    let mut want = b"Return-Path: <sender@client.example>\n".to_vec();
    want.extend_from_slice(
        &String::from_utf8_lossy(BODY)
            .replace("\r\n", "\n")
            .into_bytes(),
    );
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
    Recipient::to("x@remote.example".parse().unwrap(), None, due)
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
    let mut unusable = local("test.example", "user", T0);
    unusable.mailbox.as_mut().unwrap().local = String::new();
    let cases = [
        (T0, unusable),
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

#[tokio::test(start_paused = true)]
async fn a_resolver_that_cannot_be_made_is_asked_for_again_at_the_next_attempt() {
    // Issue #12: a resolver that failed to start once was remembered as missing for the life
    // of the process, and every remote recipient deferred until it bounced.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use yizhan_delivery::mx::Resolver;

    let fx = Fixture::new();
    let spool = fx.spool();
    let id = commit(&spool, T0, vec![remote(T0)]).await;
    let made = Arc::new(AtomicUsize::new(0));
    let calls = made.clone();
    let runner = fx.runner(&spool).with_resolver_factory(Arc::new(move || {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(DnsError::Transient {
                name: "/etc/resolv.conf".into(),
                reason: "no name server yet".into(),
            })
        } else {
            Ok(Arc::new(flaky_dns()) as Arc<dyn Resolver>)
        }
    }));
    let token = CancellationToken::new();
    let task = tokio::spawn(runner.run(token.clone()));
    until("the first attempt", || {
        spool.load(&id).unwrap().recipients[0].attempts == 1
    })
    .await;
    let first = spool.load(&id).unwrap().recipients[0].last_error.clone();
    assert!(
        first
            .as_deref()
            .is_some_and(|e| e.contains("no DNS resolver")),
        "{first:?}"
    );
    until("the second attempt", || {
        spool.load(&id).unwrap().recipients[0].attempts == 2
    })
    .await;
    let second = spool.load(&id).unwrap().recipients[0].last_error.clone();
    assert!(
        second.as_deref().is_some_and(|e| e.contains("SERVFAIL")),
        "the second attempt used a resolver: {second:?}"
    );
    assert_eq!(made.load(Ordering::SeqCst), 2);
    token.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn recipients_refused_at_submission_are_reported_to_the_sender_once() {
    // Issue #12: `sendmail` to an address the directory rejects stored it failed, and the
    // message went without a word to the submitting user. Postfix bounces it; so do we.
    let fx = Fixture::new();
    let spool = fx.spool();
    let mut refused = Recipient::to("nobody@test.example".parse().unwrap(), None, T0);
    refused.status = RecipientStatus::Failed {
        at: T0,
        detail: "550 5.1.1 no such user here".into(),
    };
    let id = commit(
        &spool,
        T0,
        vec![local("test.example", "alice", T0), refused],
    )
    .await;
    let mut directory = crate::directory::Directory::builder();
    directory
        .domain("client.example")
        .mailbox("sender@client.example", None);
    let runner = fx.runner(&spool).with_directory(directory.build().unwrap());
    let token = CancellationToken::new();
    let task = tokio::spawn(runner.run(token.clone()));
    until("alice's copy and the sender's report", || {
        fx.inbox("test.example", "alice").len() == 1
            && fx.inbox("client.example", "sender").len() == 1
    })
    .await;
    until("an empty spool", || spool.list().unwrap().is_empty()).await;
    let report = String::from_utf8(fx.inbox("client.example", "sender").remove(0)).unwrap();
    assert!(
        report.contains("Final-Recipient: rfc822; nobody@test.example"),
        "{report}"
    );
    assert!(report.contains("Status: 5.1.1"), "{report}");
    assert!(matches!(
        spool.load(&id),
        Err(yizhan_spool::SpoolError::NotFound(_))
    ));
    assert_eq!(fx.inbox("client.example", "sender").len(), 1, "one report");
    token.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_spool_from_the_schema_3_release_is_delivered_after_the_upgrade() {
    // crates/yizhan-spool/tests/fixtures/spool-v3 (see its README): bob@test.example, local,
    // is due; the upgrade keeps him and the runner delivers him.
    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../yizhan-spool/tests/fixtures/spool-v3");
    let fx = Fixture::new();
    copy_dir(&fixture, &fx.dir.path().join("spool"));
    let spool = fx.spool();
    // The fixture's messages arrived at 1_750_000_000 and after.
    let clock = Arc::new(TestClock {
        base: 1_750_001_000,
        start: Instant::now(),
    });
    let runner = QueueRunner::new(
        spool.clone(),
        Maildir::with_hostname(fx.mail_root(), "mx.test.example"),
        RunnerSettings::default(),
        clock,
    )
    .with_resolver(Arc::new(flaky_dns()));
    let token = CancellationToken::new();
    let task = tokio::spawn(runner.run(token.clone()));
    until("bob's copy", || fx.inbox("test.example", "bob").len() == 1).await;
    let file = String::from_utf8(fx.inbox("test.example", "bob").remove(0)).unwrap();
    assert!(
        file.starts_with("Return-Path: <alice@example.org>"),
        "{file}"
    );
    assert!(file.contains("First message."), "{file}");
    token.cancel();
    task.await.unwrap();
}
