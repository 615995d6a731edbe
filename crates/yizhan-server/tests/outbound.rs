//! Outbound delivery end to end inside one process: the queue runner delivers spooled mail to a
//! scripted SMTP server on 127.0.0.x (found through a fake resolver), records per-recipient
//! outcomes, and queues delivery status notifications (RFC 3464) into the sender's Maildir.
//! Time: the runner's Unix clock is a manual one that the tests move (then wake the runner), so
//! a retry "five minutes later" happens at once; nothing waits for time to pass. tokio's clock
//! is not paused here: it would jump past the SMTP read timeouts whenever the runtime waits for
//! the spool's committer thread.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use yizhan_delivery::maildir::Maildir;
use yizhan_delivery::mx::FakeResolver;
use yizhan_server::directory::Directory;
use yizhan_server::queue::{
    Change, ChangeError, Clock, OutboundSettings, QueueRunner, RunnerHandle, RunnerSettings,
};
use yizhan_spool::{ClientInfo, Envelope, QueueId, Recipient, RecipientStatus, Spool};

const T0: i64 = 1_700_000_000;
const BODY: &[u8] =
    b"Received: from client by here\r\nSubject: outbound test\r\n\r\nHello.\r\n.leading dot\r\n";

/// Unix time that only moves when the test says so (tokio's paused clock jumps whenever the
/// runtime waits for the spool's committer thread, which would make times inexact).
struct ManualClock(AtomicI64);

impl ManualClock {
    fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One message as the server got it: MAIL line, accepted RCPT lines, unstuffed data.
type Received = (String, Vec<String>, Vec<u8>);

/// What the scripted server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// (MAIL line, RCPT lines, unstuffed data) per message.
    messages: Mutex<Vec<Received>>,
}

/// A scripted SMTP server: replies to RCPT per address from a queue (then 250), DSN offered
/// or not.
struct Script {
    rcpt: Mutex<HashMap<String, VecDeque<&'static str>>>,
    dsn: bool,
    seen: Seen,
}

impl Script {
    fn new(dsn: bool, rcpt: &[(&str, &[&'static str])]) -> Arc<Script> {
        Arc::new(Script {
            rcpt: Mutex::new(
                rcpt.iter()
                    .map(|(a, r)| (a.to_string(), r.iter().copied().collect()))
                    .collect(),
            ),
            dsn,
            seen: Seen::default(),
        })
    }

    fn messages(&self) -> Vec<Received> {
        self.seen.messages.lock().unwrap().clone()
    }
}

async fn serve(listener: TcpListener, script: Arc<Script>) {
    serve_gated(listener, script, None).await;
}

/// Like `serve`; with a gate, each session waits for a permit of it before its greeting.
async fn serve_gated(listener: TcpListener, script: Arc<Script>, gate: Option<Arc<Semaphore>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        script.seen.connections.fetch_add(1, Ordering::SeqCst);
        let script = script.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            if let Some(gate) = gate {
                let Ok(permit) = gate.acquire().await else {
                    return;
                };
                permit.forget();
            }
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let _ = write.write_all(b"220 mx.far.example ESMTP test\r\n").await;
            let (mut mail, mut rcpts, mut accepted) = (String::new(), Vec::new(), 0);
            loop {
                let mut line = String::new();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let upper = line.to_ascii_uppercase();
                let reply: String = if upper.starts_with("EHLO") {
                    let dsn = if script.dsn { "250-DSN\r\n" } else { "" };
                    format!(
                        "250-mx.far.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n{dsn}250 SIZE 1000000\r\n"
                    )
                } else if upper.starts_with("MAIL") {
                    mail = line.trim_end().to_string();
                    rcpts.clear();
                    accepted = 0;
                    "250 2.1.0 ok\r\n".into()
                } else if upper.starts_with("RCPT") {
                    let addr = line
                        .split_once('<')
                        .and_then(|(_, r)| r.split_once('>'))
                        .map(|(a, _)| a.to_string())
                        .unwrap_or_default();
                    let scripted = script
                        .rcpt
                        .lock()
                        .unwrap()
                        .get_mut(&addr)
                        .and_then(VecDeque::pop_front);
                    let reply = scripted.unwrap_or("250 2.1.5 ok");
                    if reply.starts_with('2') {
                        accepted += 1;
                        rcpts.push(line.trim_end().to_string());
                    }
                    format!("{reply}\r\n")
                } else if upper.starts_with("DATA") {
                    if accepted == 0 {
                        "554 5.5.1 no valid recipients\r\n".into()
                    } else {
                        let _ = write.write_all(b"354 go ahead\r\n").await;
                        let mut data = Vec::new();
                        loop {
                            let mut l = Vec::new();
                            if lines.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if l == b".\r\n" {
                                break;
                            }
                            let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                            data.extend_from_slice(l);
                        }
                        script.seen.messages.lock().unwrap().push((
                            mail.clone(),
                            rcpts.clone(),
                            data,
                        ));
                        "250 2.0.0 queued\r\n".into()
                    }
                } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
                    "250 2.0.0 ok\r\n".into()
                } else if upper.starts_with("QUIT") {
                    let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                    // Drain until the client closes.
                    let mut rest = Vec::new();
                    let _ = lines.read_to_end(&mut rest).await;
                    return;
                } else {
                    "500 5.5.2 what?\r\n".into()
                };
                if write.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    spool: Spool,
    clock: Arc<ManualClock>,
    dns: FakeResolver,
    port: u16,
}

impl Fixture {
    /// A spool and one scripted server per (IP, domain, script), all on the same port.
    async fn new(servers: &[(IpAddr, &str, Arc<Script>)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap().0;
        let mut dns = FakeResolver::default();
        let mut port = 0;
        for (ip, domain, script) in servers {
            let listener = TcpListener::bind(SocketAddr::new(*ip, port)).await.unwrap();
            port = listener.local_addr().unwrap().port();
            dns.hosts.insert(domain.to_string(), vec![*ip]);
            tokio::spawn(serve(listener, script.clone()));
        }
        Fixture {
            dir,
            spool,
            clock: Arc::new(ManualClock(AtomicI64::new(T0))),
            dns,
            port,
        }
    }

    fn start(
        &self,
        per_destination: usize,
    ) -> (RunnerHandle, CancellationToken, tokio::task::JoinHandle<()>) {
        self.start_with(per_destination, |_| {})
    }

    /// Like `start`, with the outbound settings adjusted by `tweak`.
    fn start_with(
        &self,
        per_destination: usize,
        tweak: impl FnOnce(&mut OutboundSettings),
    ) -> (RunnerHandle, CancellationToken, tokio::task::JoinHandle<()>) {
        let mut directory = Directory::builder();
        directory
            .domain("here.example")
            .mailbox("sender@here.example", None);
        let directory = directory.build().unwrap();
        let mut outbound = OutboundSettings::default();
        outbound.smtp.port = self.port;
        outbound.per_destination = per_destination;
        tweak(&mut outbound);
        let runner = QueueRunner::new(
            self.spool.clone(),
            Maildir::with_hostname(self.dir.path().join("mail"), "mx.here.example"),
            RunnerSettings {
                hostname: "mx.here.example".into(),
                ..RunnerSettings::default()
            },
            self.clock.clone(),
        )
        .with_outbound(outbound)
        .with_resolver(Arc::new(self.dns.clone()))
        .with_directory(directory);
        let handle = runner.handle();
        let token = CancellationToken::new();
        let task = tokio::spawn(runner.run(token.clone()));
        (handle, token, task)
    }

    /// Messages in the sender's Maildir.
    fn sender_inbox(&self) -> Vec<String> {
        let new = self.dir.path().join("mail/here.example/sender/new");
        match std::fs::read_dir(new) {
            Ok(entries) => entries
                .map(|e| String::from_utf8(std::fs::read(e.unwrap().path()).unwrap()).unwrap())
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Commits a message from `from` ("" = null) to remote recipients (address, NOTIFY).
    async fn commit(&self, from: &str, to: &[(&str, Option<&str>)]) -> QueueId {
        let mut incoming = self.spool.create().unwrap();
        incoming.write(BODY).unwrap();
        let envelope = Envelope {
            id: incoming.id().clone(),
            received_at: T0,
            size: 0,
            reverse_path: format!("<{from}>").parse().unwrap(),
            envid: Some("ENV-1".into()),
            ret: None,
            body: None,
            smtputf8: false,
            client: ClientInfo::default(),
            recipients: to
                .iter()
                .map(|(a, notify)| {
                    let mut r = Recipient::to(a.parse().unwrap(), None, T0);
                    r.notify = notify.map(|n| yizhan_proto::command::Notify::parse(n).unwrap());
                    r.orcpt = Some(yizhan_proto::command::Orcpt {
                        addr_type: "rfc822".into(),
                        addr: a.to_string(),
                    });
                    r
                })
                .collect(),
            held: false,
        };
        self.spool.commit(incoming, envelope).await.unwrap()
    }
}

/// Polls until `done` holds (the work is on other tasks; this only yields to them).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn lo(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// The delivery-status fields of a report, for one recipient (in a Maildir file: LF line
/// ends).
fn recipient_block<'a>(report: &'a str, address: &str) -> Option<&'a str> {
    report
        .split("\n\n")
        .find(|b| b.contains(&format!("Final-Recipient: rfc822; {address}\n")))
}

#[tokio::test]
async fn mixed_recipients_one_report_lists_only_the_failed() {
    let script = Script::new(
        false,
        &[
            ("bad@far.example", &["550 5.1.1 no such user here"]),
            ("gone@far.example", &["553 5.1.2 gone away"]),
        ],
    );
    let fx = Fixture::new(&[(lo(2), "far.example", script.clone())]).await;
    fx.commit(
        "sender@here.example",
        &[
            ("ok@far.example", None),
            ("bad@far.example", None),
            ("gone@far.example", None),
        ],
    )
    .await;
    let (_h, token, task) = fx.start(4);
    until("the report and an empty spool", || {
        !fx.sender_inbox().is_empty() && fx.spool.list().unwrap().is_empty()
    })
    .await;
    // RFC 5321 3.3: the good recipient got the message, once.
    let messages = script.messages();
    assert_eq!(messages.len(), 1);
    // RFC 1870: SIZE= because the server advertises SIZE.
    assert_eq!(
        messages[0].0,
        format!("MAIL FROM:<sender@here.example> SIZE={}", BODY.len())
    );
    assert_eq!(messages[0].1, ["RCPT TO:<ok@far.example>"]);
    assert!(messages[0].2.ends_with(b"Hello.\r\n.leading dot\r\n"));
    // One report, to the sender, with a null Return-Path, about the two failures only.
    let inbox = fx.sender_inbox();
    assert_eq!(inbox.len(), 1);
    let report = &inbox[0];
    assert!(report.starts_with("Return-Path: <>\n"), "{report}");
    // The parameter value quoted or not (RFC 2045 5.1 allows both; mail-builder quotes).
    assert!(
        report.contains("report-type=\"delivery-status\"")
            || report.contains("report-type=delivery-status"),
        "{report}"
    );
    assert!(report.contains("Original-Envelope-Id: ENV-1\n"));
    let bad = recipient_block(report, "bad@far.example").expect("bad listed");
    assert!(bad.contains("Action: failed\n"));
    assert!(bad.contains("Status: 5.1.1\n"));
    assert!(bad.contains("Remote-MTA: dns; far.example\n"));
    assert!(bad.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user here"));
    assert!(bad.contains("Original-Recipient: rfc822; bad@far.example"));
    let gone = recipient_block(report, "gone@far.example").expect("gone listed");
    assert!(gone.contains("Status: 5.1.2\n"));
    assert!(recipient_block(report, "ok@far.example").is_none());
    // RET absent: the whole original comes back.
    assert!(report.contains("Subject: outbound test\n"));
    assert!(report.contains("Hello.\n"));
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn transient_failure_then_success_on_retry() {
    // RFC 5321 4.5.4.1: a 4xx is retried later (5 minutes by default), then succeeds.
    let script = Script::new(
        false,
        &[("later@far.example", &["451 4.2.0 try again later"])],
    );
    let fx = Fixture::new(&[(lo(2), "far.example", script.clone())]).await;
    let id = fx
        .commit("sender@here.example", &[("later@far.example", None)])
        .await;
    let (handle, token, task) = fx.start(4);
    until("the first attempt", || {
        fx.spool
            .load(&id)
            .is_ok_and(|e| e.recipients[0].attempts == 1)
    })
    .await;
    let r = fx.spool.load(&id).unwrap().recipients[0].clone();
    assert!(r.is_pending());
    assert!(
        r.last_error
            .as_deref()
            .is_some_and(|e| e.contains("451 4.2.0 try again later")),
        "{:?}",
        r.last_error
    );
    assert_eq!(r.next_attempt, T0 + 300);
    // Not before its time: nothing is due yet.
    assert!(fx.spool.due(T0 + 299, 10).unwrap().is_empty());
    fx.clock.set(T0 + 300);
    handle.wake();
    until("the retry", || fx.spool.list().unwrap().is_empty()).await;
    assert_eq!(script.messages().len(), 1);
    // No report: nothing failed, no delay warning before 4 hours, no NOTIFY=SUCCESS.
    assert!(fx.sender_inbox().is_empty());
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn no_report_for_notify_never_or_a_null_sender() {
    // RFC 3461 4.1 NOTIFY=NEVER; RFC 5321 4.5.5: never a report about a report.
    let script = Script::new(
        false,
        &[
            ("bad@far.example", &["550 5.1.1 no"]),
            ("bad2@far.example", &["550 5.1.1 no"]),
        ],
    );
    let fx = Fixture::new(&[(lo(2), "far.example", script.clone())]).await;
    fx.commit("sender@here.example", &[("bad@far.example", Some("NEVER"))])
        .await;
    fx.commit("", &[("bad2@far.example", None)]).await;
    // NOTIFY=SUCCESS only: a failure is not reported either.
    script
        .rcpt
        .lock()
        .unwrap()
        .insert("bad3@far.example".into(), ["550 5.1.1 no"].into());
    fx.commit(
        "sender@here.example",
        &[("bad3@far.example", Some("SUCCESS"))],
    )
    .await;
    let (_h, token, task) = fx.start(4);
    // A report would have been queued before its message was removed, and removed itself only
    // once delivered: with the spool empty, the inbox tells the whole story.
    until("an empty spool", || fx.spool.list().unwrap().is_empty()).await;
    assert!(fx.sender_inbox().is_empty(), "{:?}", fx.sender_inbox());
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn notify_success_is_relayed_or_reported() {
    // RFC 3461 6.2: a next hop with DSN gets NOTIFY/ORCPT/ENVID and takes over; one without DSN
    // makes us report "relayed" ourselves.
    let with_dsn = Script::new(true, &[]);
    let without = Script::new(false, &[]);
    let fx = Fixture::new(&[
        (lo(2), "dsn.example", with_dsn.clone()),
        (lo(3), "plain.example", without.clone()),
    ])
    .await;
    fx.commit(
        "sender@here.example",
        &[
            ("a@dsn.example", Some("SUCCESS,FAILURE")),
            ("b@plain.example", Some("SUCCESS")),
        ],
    )
    .await;
    let (_h, token, task) = fx.start(4);
    until("both deliveries and a report", || {
        fx.spool.list().unwrap().is_empty() && !fx.sender_inbox().is_empty()
    })
    .await;
    let m = with_dsn.messages();
    assert_eq!(m.len(), 1);
    assert!(m[0].0.contains("ENVID=ENV-1"), "{}", m[0].0);
    assert_eq!(
        m[0].1,
        ["RCPT TO:<a@dsn.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@dsn.example"]
    );
    let m = without.messages();
    assert_eq!(m[0].1, ["RCPT TO:<b@plain.example>"]);
    let inbox = fx.sender_inbox();
    assert_eq!(inbox.len(), 1);
    let b = recipient_block(&inbox[0], "b@plain.example").expect("b reported");
    assert!(b.contains("Action: relayed\n"));
    assert!(recipient_block(&inbox[0], "a@dsn.example").is_none());
    // A success report carries the headers only.
    assert!(inbox[0].contains("text/rfc822-headers"));
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn two_messages_share_one_connection() {
    let script = Script::new(false, &[]);
    let fx = Fixture::new(&[(lo(2), "far.example", script.clone())]).await;
    fx.commit("sender@here.example", &[("x@far.example", None)])
        .await;
    fx.commit("sender@here.example", &[("y@far.example", None)])
        .await;
    // One delivery at a time to the destination, so the second message finds the first's
    // connection idle in the pool.
    let (_h, token, task) = fx.start(1);
    until("both deliveries", || script.messages().len() == 2).await;
    until("an empty spool", || fx.spool.list().unwrap().is_empty()).await;
    assert_eq!(script.seen.connections.load(Ordering::SeqCst), 1);
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn unreachable_host_is_transient_and_flush_retries_now() {
    // Nothing listens on 127.0.0.9: connection refused is transient (RFC 5321 4.5.4.1);
    // RunnerHandle::flush (ETRN, RFC 1985) makes the recipient due at once.
    let script = Script::new(false, &[]);
    let mut fx = Fixture::new(&[(lo(2), "far.example", script.clone())]).await;
    fx.dns.hosts.insert("down.example".into(), vec![lo(9)]);
    let id = fx
        .commit("sender@here.example", &[("z@down.example", None)])
        .await;
    let (handle, token, task) = fx.start(4);
    until("the first attempt", || {
        fx.spool
            .load(&id)
            .is_ok_and(|e| e.recipients[0].attempts == 1)
    })
    .await;
    let r = fx.spool.load(&id).unwrap().recipients[0].clone();
    assert!(r.is_pending());
    assert_eq!(r.next_attempt, T0 + 300);
    handle.flush(Some("DOWN.example".into()));
    until("the flushed attempt", || {
        fx.spool
            .load(&id)
            .is_ok_and(|e| e.recipients[0].attempts == 2)
    })
    .await;
    let r = fx.spool.load(&id).unwrap().recipients[0].clone();
    assert!(r.attempts == 2 && r.is_pending());
    assert_eq!(fx.clock.now(), T0, "flushed before the scheduled retry");
    assert!(!matches!(r.status, RecipientStatus::Failed { .. }));
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn dns_answers_decide_bounce_or_retry() {
    // RFC 7505: a null MX is a permanent failure; NXDOMAIN is permanent; SERVFAIL (could not
    // decide) is transient and retried (DESIGN.md invariant 5). One report lists the two
    // permanent failures; the third recipient stays queued.
    use yizhan_delivery::mx::{DnsError, MxAnswer};
    let mut fx = Fixture::new(&[]).await;
    fx.dns
        .mx
        .insert("nullmx.example".into(), Ok(MxAnswer::Null));
    fx.dns.mx.insert(
        "servfail.example".into(),
        Err(DnsError::Transient {
            name: "servfail.example".into(),
            reason: "SERVFAIL".into(),
        }),
    );
    let id = fx
        .commit(
            "sender@here.example",
            &[
                ("a@nullmx.example", None),
                ("b@nxdomain.example", None),
                ("c@servfail.example", None),
            ],
        )
        .await;
    let (_handle, token, task) = fx.start(4);
    until("the bounce", || !fx.sender_inbox().is_empty()).await;
    until("the outcomes recorded", || {
        fx.spool.load(&id).is_ok_and(|e| {
            matches!(e.recipients[0].status, RecipientStatus::Failed { .. })
                && matches!(e.recipients[1].status, RecipientStatus::Failed { .. })
                && e.recipients[2].attempts == 1
        })
    })
    .await;
    let envelope = fx.spool.load(&id).unwrap();
    let deferred = &envelope.recipients[2];
    assert!(deferred.is_pending());
    assert!(deferred.next_attempt > T0, "{deferred:?}");
    let inbox = fx.sender_inbox();
    assert_eq!(inbox.len(), 1, "one report for both permanent failures");
    let report = &inbox[0];
    for address in ["a@nullmx.example", "b@nxdomain.example"] {
        let block = recipient_block(report, address).expect(address);
        assert!(block.contains("Action: failed"), "{block}");
        assert!(block.contains("Status: 5."), "{block}");
    }
    assert!(recipient_block(report, "c@servfail.example").is_none());
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn source_route_goes_to_its_next_hop_with_paths_rewritten() {
    // RFC 821 3.6, as the seed shows it: at HOSTA, FROM:<USERX@HOSTY> TO:<@HOSTA,@HOSTB:USERC@HOSTD>
    // leaves as FROM:<@HOSTA:USERX@HOSTY> TO:<@HOSTB:USERC@HOSTD>, sent to HOSTB (not to HOSTD's MX).
    let script = Script::new(false, &[]);
    let fx = Fixture::new(&[(lo(2), "hostb.example", script.clone())]).await;
    let mut incoming = fx.spool.create().unwrap();
    incoming.write(BODY).unwrap();
    let mut rcpt = Recipient::pending(
        "userc@hostd.example".parse().unwrap(),
        "<@mx.here.example,@hostb.example:userc@hostd.example>"
            .parse()
            .unwrap(),
        None,
        T0,
    );
    rcpt.notify = Some(yizhan_proto::command::Notify::Never);
    let envelope = Envelope {
        id: incoming.id().clone(),
        received_at: T0,
        size: 0,
        reverse_path: "<userx@hosty.example>".parse().unwrap(),
        envid: None,
        ret: None,
        body: None,
        smtputf8: false,
        client: ClientInfo::default(),
        recipients: vec![rcpt],
        held: false,
    };
    fx.spool.commit(incoming, envelope).await.unwrap();
    let (_handle, token, task) = fx.start_with(4, |outbound| {
        outbound.routing.honour_source_routes = true;
        outbound.routing.local_names = vec!["mx.here.example".into()];
    });
    until("the relayed copy", || !script.messages().is_empty()).await;
    let messages = script.messages();
    assert!(
        messages[0]
            .0
            .starts_with("MAIL FROM:<@mx.here.example:userx@hosty.example>"),
        "{}",
        messages[0].0
    );
    assert_eq!(
        messages[0].1,
        ["RCPT TO:<@hostb.example:userc@hostd.example>"]
    );
    until("the spool emptied", || fx.spool.list().unwrap().is_empty()).await;
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn one_delay_warning_once_the_message_is_late() {
    // RFC 3464 / 3461: after `delay_warning` a "delayed" report goes to the sender (NOTIFY
    // absent means FAILURE,DELAY), once; the message stays queued and is delivered later.
    let script = Script::new(
        false,
        &[(
            "slow@far.example",
            &["451 4.2.0 busy", "451 4.2.0 busy", "451 4.2.0 busy"],
        )],
    );
    let fx = Fixture::new(&[(lo(2), "far.example", script.clone())]).await;
    let id = fx
        .commit("sender@here.example", &[("slow@far.example", None)])
        .await;
    let (handle, token, task) = fx.start_with(4, |outbound| {
        outbound.delay_warning = Some(Duration::from_secs(600));
    });
    let attempts = |n: u32| {
        let spool = fx.spool.clone();
        let id = id.clone();
        move || spool.load(&id).is_ok_and(|e| e.recipients[0].attempts >= n)
    };
    // Attempt 1 at T0, 2 at T0+300 (retry_initial), 3 at T0+900 (the wait doubles).
    until("attempt 1", attempts(1)).await;
    fx.clock.set(T0 + 300);
    handle.wake();
    until("attempt 2", attempts(2)).await;
    assert!(fx.sender_inbox().is_empty(), "no warning before 10 minutes");
    fx.clock.set(T0 + 900);
    handle.wake();
    until("the delay warning", || !fx.sender_inbox().is_empty()).await;
    let inbox = fx.sender_inbox();
    assert_eq!(inbox.len(), 1);
    let block = recipient_block(&inbox[0], "slow@far.example").expect("recipient block");
    assert!(block.contains("Action: delayed"), "{block}");
    assert!(block.contains("Status: 4."), "{block}");
    assert!(fx.spool.load(&id).unwrap().recipients[0].is_pending());
    // Attempt 4 succeeds; no second warning, no other report.
    let next = fx.spool.load(&id).unwrap().recipients[0].next_attempt;
    fx.clock.set(next);
    handle.wake();
    until("the delivery", || fx.spool.list().unwrap().is_empty()).await;
    assert_eq!(script.messages().len(), 1);
    assert_eq!(fx.sender_inbox().len(), 1);
    token.cancel();
    task.await.unwrap();
}

/// A host that takes connections and never says a word (a tarpit), or, with `close`, closes
/// each one at once. Counts the connections.
async fn silent_host(ip: IpAddr, port: u16, close: bool) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await.unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            if !close {
                held.push(stream);
            }
        }
    });
    count
}

#[tokio::test]
async fn a_tarpit_destination_does_not_delay_mail_for_others() {
    // Issue #12: with 300 messages queued for a host that accepts TCP and never answers, mail
    // for a healthy destination used to wait behind them (every slot waited for the dead
    // destination's permits). Now a message that finds its destination full is parked.
    let script = Script::new(false, &[]);
    let mut fx = Fixture::new(&[(lo(2), "live.example", script.clone())]).await;
    let tarpit = silent_host(lo(3), fx.port, false).await;
    fx.dns.hosts.insert("dead.example".into(), vec![lo(3)]);
    for _ in 0..300 {
        fx.commit("sender@here.example", &[("x@dead.example", None)])
            .await;
    }
    for n in 0..5 {
        let to = format!("user{n}@live.example");
        fx.commit("sender@here.example", &[(to.as_str(), None)])
            .await;
    }
    let (_h, token, task) = fx.start(4);
    until("the five messages to the live destination", || {
        script.messages().len() == 5
    })
    .await;
    // The tarpit got no more connections than its destination's permits.
    let connections = tarpit.load(Ordering::SeqCst);
    assert!((1..=4).contains(&connections), "{connections} connections");
    // Nothing for the dead destination was given up or counted as tried.
    until("the live messages removed", || {
        fx.spool.list().unwrap().len() == 300
    })
    .await;
    let stuck = fx.spool.list().unwrap();
    assert!(stuck.iter().all(|e| e.recipients[0].is_pending()));
    token.cancel();
    task.abort();
}

#[tokio::test]
async fn a_destination_that_is_down_is_tried_once_not_per_message() {
    // Every connection closed before the greeting: the destination is down after the first
    // attempts, and its other messages are deferred without connecting ("delivery
    // temporarily suspended"), not before the destination's own back-off ends. A flush (ETRN)
    // brings it back at once, as Postfix's flush resets dead destinations.
    let script = Script::new(false, &[]);
    let mut fx = Fixture::new(&[(lo(2), "live.example", script.clone())]).await;
    let closer = silent_host(lo(4), fx.port, true).await;
    fx.dns.hosts.insert("closed.example".into(), vec![lo(4)]);
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(
            fx.commit("sender@here.example", &[("x@closed.example", None)])
                .await,
        );
    }
    let (handle, token, task) = fx.start(4);
    until("one attempt for every message", || {
        ids.iter().all(|id| {
            fx.spool
                .load(id)
                .is_ok_and(|e| e.recipients[0].attempts == 1)
        })
    })
    .await;
    let connections = closer.load(Ordering::SeqCst);
    assert!((1..=4).contains(&connections), "{connections} connections");
    let suspended = ids
        .iter()
        .map(|id| fx.spool.load(id).unwrap().recipients[0].clone())
        .filter(|r| {
            r.last_error
                .as_deref()
                .is_some_and(|e| e.contains("delivery temporarily suspended"))
        })
        .inspect(|r| assert!(r.next_attempt >= T0 + 60, "not before the back-off"))
        .count();
    assert!(suspended >= 36, "{suspended} suspended");
    handle.flush(Some("closed.example".into()));
    until("a second round after the flush", || {
        closer.load(Ordering::SeqCst) > connections
    })
    .await;
    token.cancel();
    task.await.unwrap();
}

/// A scripted host on `ip` whose sessions wait at the greeting until the gate opens.
async fn gated_host(fx: &mut Fixture, ip: IpAddr, domain: &str) -> (Arc<Script>, Arc<Semaphore>) {
    let script = Script::new(false, &[]);
    let gate = Arc::new(Semaphore::new(0));
    let listener = TcpListener::bind(SocketAddr::new(ip, fx.port))
        .await
        .unwrap();
    fx.port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_gated(listener, script.clone(), Some(gate.clone())));
    fx.dns.hosts.insert(domain.into(), vec![ip]);
    (script, gate)
}

#[tokio::test]
async fn a_hold_during_an_attempt_is_honoured_after_it() {
    // Issue #12: `yizhan queue hold` during an attempt used to be undone when the attempt
    // recorded its outcome (both wrote the whole row). Now the runner applies it after the
    // attempt, and answers once it is durable.
    let script = Script::new(false, &[("later@live.example", &["450 4.2.0 try later"])]);
    let mut fx = Fixture::new(&[(lo(2), "live.example", script.clone())]).await;
    let (slow, gate) = gated_host(&mut fx, lo(5), "slow.example").await;
    let id = fx
        .commit(
            "sender@here.example",
            &[("a@slow.example", None), ("later@live.example", None)],
        )
        .await;
    let (handle, token, task) = fx.start(4);
    until("the attempt under way", || {
        slow.seen.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    let hold = tokio::spawn({
        let handle = handle.clone();
        let id = id.clone();
        async move { handle.change(id, Change::Hold).await }
    });
    // The attempt is still waiting for its greeting: the hold waits for it.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!hold.is_finished(), "answered before the attempt ended");
    gate.add_permits(1);
    // Answered after the attempt: one recipient delivered, one deferred and still pending.
    assert_eq!(hold.await.unwrap().unwrap(), 1);
    let envelope = fx.spool.load(&id).unwrap();
    assert!(envelope.held, "the attempt's outcome did not undo the hold");
    assert!(matches!(
        envelope.recipients[0].status,
        RecipientStatus::Delivered { .. }
    ));
    assert_eq!(slow.messages().len(), 1);
    token.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_delete_during_an_attempt_stops_it_and_nothing_is_delivered_after() {
    // Issue #12: a delete while a message was in flight made the runner's next write fail
    // and stalled it; and the attempt went on. Now the delete stops the attempt (the peer
    // never sees the end of the data) and is answered once the message is gone.
    let mut fx = Fixture::new(&[]).await;
    let (slow, gate) = gated_host(&mut fx, lo(6), "slow.example").await;
    let id = fx
        .commit("sender@here.example", &[("a@slow.example", None)])
        .await;
    let other = fx
        .commit("sender@here.example", &[("b@slow.example", None)])
        .await;
    let (handle, token, task) = fx.start(1);
    until("the attempt under way", || {
        slow.seen.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    // Which of the two is in flight is the runner's choice: delete both, in flight or not.
    assert_eq!(handle.change(id.clone(), Change::Delete).await.unwrap(), 1);
    assert_eq!(
        handle.change(other.clone(), Change::Delete).await.unwrap(),
        1
    );
    assert!(matches!(
        handle.change(id.clone(), Change::Delete).await,
        Err(ChangeError::NotFound(_))
    ));
    gate.add_permits(10);
    // Let the peer's sessions run; nothing may arrive.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(slow.messages().is_empty(), "delivered after the delete");
    assert!(fx.spool.list().unwrap().is_empty());
    assert!(
        fx.sender_inbox().is_empty(),
        "no report for a deleted message"
    );
    token.cancel();
    task.await.unwrap();
}
