//! Operating a live queue (issue #5, item 8): `queue list/show/flush/hold/release/delete` and
//! `sendmail -t`, end to end.
//!
//! The in-process tests run what `yizhan serve` runs for these features (the spool, the queue
//! runner delivering into Maildirs, the control socket and the maildrop pickup, via
//! `control::run_operations`) and drive them with the very client code of `yizhan queue` and
//! `yizhan sendmail` (the binary's modules, included below).
//!
//! The `binary_*` tests drive the real `yizhan` executable (and it invoked as `sendmail`).
//! They need a `yizhan` binary built by this workspace (cargo builds it for integration tests).

#[path = "../src/queue_cmd/mod.rs"]
#[allow(dead_code)]
mod queue_cmd;
#[path = "../src/sendmail/mod.rs"]
#[allow(dead_code)]
mod sendmail;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use tokio_util::sync::CancellationToken;
use yizhan_delivery::maildir::Maildir;
use yizhan_server::control::{self, MessageInfo};
use yizhan_server::directory::Directory;
use yizhan_server::queue::{QueueRunner, RunnerSettings, SystemClock};
use yizhan_server::settings::Settings;
use yizhan_spool::{ClientInfo, Envelope, LocalMailbox, QueueId, Recipient, Spool};

use crate::queue_cmd::{FilterArgs, QueueCommand, Selection};

/// A selection by ids.
fn selection(ids: Vec<String>) -> Selection {
    Selection {
        ids,
        ..Selection::default()
    }
}

/// Waits (polling) until `done` holds; fails after 20 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn settings(data_dir: &Path) -> Settings {
    let mut directory = Directory::builder();
    directory
        .domain("test.example")
        .mailbox("user@test.example", None)
        .mailbox("user2@test.example", None)
        .alias(
            "list@test.example",
            ["user@test.example", "user2@test.example"],
        );
    Settings {
        hostname: "mx.test.example".into(),
        data_dir: data_dir.to_path_buf(),
        directory: directory.build().unwrap(),
        ..Settings::default()
    }
}

/// What `yizhan serve` runs for queue operations, in process.
struct Live {
    _dir: tempfile::TempDir,
    data: PathBuf,
    spool: Spool,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Live {
    async fn start() -> Live {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let settings = Arc::new(settings(&data));
        let (spool, _) = Spool::open(&data.join("spool")).unwrap();
        let runner = QueueRunner::new(
            spool.clone(),
            Maildir::new(data.join("mail")),
            RunnerSettings {
                hostname: settings.hostname.clone(),
                ..RunnerSettings::default()
            },
            Arc::new(SystemClock),
        );
        let handle = runner.handle();
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(runner.run(stop.clone())),
            tokio::spawn(control::run_operations(
                yizhan_server::settings::live(settings),
                yizhan_spool::Intake::Embedded(spool.clone()),
                handle,
                None,
                None,
                None,
                stop.clone(),
            )),
        ];
        let socket = control::socket_path(&data);
        until("the control socket", || socket.exists()).await;
        Live {
            _dir: dir,
            data,
            spool,
            stop,
            tasks,
        }
    }

    /// Runs a `yizhan queue` command; returns its output or its error text.
    async fn queue(&self, command: QueueCommand) -> Result<String, String> {
        let socket = control::socket_path(&self.data);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            queue_cmd::run(&command, &socket, &mut out, &TimeZone::UTC)
                .map(|()| String::from_utf8(out).unwrap())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap()
    }

    async fn list(&self) -> Vec<MessageInfo> {
        let json = self
            .queue(QueueCommand::List {
                filter: FilterArgs::default(),
                json: true,
            })
            .await
            .unwrap();
        serde_json::from_str(&json).unwrap()
    }

    /// Commits a message for `local@test.example` (due at `due`), as an SMTP session would.
    async fn commit(&self, local: &str, due: i64, held: bool) -> QueueId {
        let mut incoming = self.spool.create().unwrap();
        incoming
            .write(format!("Subject: for {local}\r\n\r\nhello\r\n").as_bytes())
            .unwrap();
        let mailbox = LocalMailbox {
            domain: "test.example".into(),
            local: local.into(),
        };
        let address = format!("{local}@test.example");
        let envelope = Envelope {
            id: "00000000000000000000000000000000".parse().unwrap(),
            received_at: now(),
            size: 0,
            reverse_path: "<sender@remote.example>".parse().unwrap(),
            envid: None,
            ret: None,
            body: None,
            smtputf8: false,
            client: ClientInfo::default(),
            recipients: vec![Recipient::to(address.parse().unwrap(), Some(mailbox), due)],
            held,
        };
        self.spool.commit(incoming, envelope).await.unwrap()
    }

    fn delivered(&self, local: &str) -> Vec<String> {
        let new = self.data.join("mail/test.example").join(local).join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return vec![];
        };
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
        assert!(!control::socket_path(&self.data).exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_bounce_and_selection_by_filter() {
    let live = Live::start().await;
    let later = now() + 3600;
    // Requeue by a filter: delivery starts over at once.
    let waiting = live.commit("user", later, false).await;
    let mut envelope = live.spool.load(&waiting).unwrap();
    envelope.recipients[0].attempts = 3;
    envelope.recipients[0].last_error = Some("451 try later".into());
    live.spool.update(&envelope).await.unwrap();
    live.queue(QueueCommand::Hold(selection(vec![waiting.to_string()])))
        .await
        .unwrap();
    let none = live
        .queue(QueueCommand::Requeue(Selection {
            filter: FilterArgs {
                state: Some("deferred".into()),
                ..FilterArgs::default()
            },
            ..Selection::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        none, "requeued 0 messages (0 pending recipients)\n",
        "held is not deferred"
    );
    let out = live
        .queue(QueueCommand::Requeue(Selection {
            filter: FilterArgs {
                state: Some("held".into()),
                recipient: Some("USER@".into()),
                ..FilterArgs::default()
            },
            ..Selection::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        out,
        format!(
            "requeued {waiting} (1 pending recipient)\nrequeued 1 message (1 pending recipient)\n"
        )
    );
    until("the requeued delivery", || {
        live.delivered("user").len() == 1
    })
    .await;

    // Bounce --all: the pending recipient fails, the sender gets a report (queued for the
    // remote sender), the message leaves the queue.
    let doomed = live.commit("user2", later, false).await;
    let json = live
        .queue(QueueCommand::Bounce(Selection {
            all: true,
            json: true,
            ..Selection::default()
        }))
        .await
        .unwrap();
    let acted: control::Acted = serde_json::from_str(&json).unwrap();
    assert_eq!((acted.messages, acted.recipients), (1, 1), "{json}");
    assert_eq!(acted.done[0].id, doomed.to_string());
    until("the bounced message removed", || {
        live.spool.load(&doomed).is_err()
    })
    .await;
    let queued = live.list().await;
    let [report] = &queued[..] else {
        panic!("one report expected: {queued:?}")
    };
    assert_eq!(report.sender, "", "a report has the null sender");
    assert_eq!(report.recipients[0].address, "sender@remote.example");
    let show = live
        .queue(QueueCommand::Show {
            id: report.id.clone(),
            body: true,
            json: false,
        })
        .await
        .unwrap();
    assert!(show.contains("Status: 5.3.0"), "{show}");
    assert!(
        show.contains("returned to the sender by the mail system's operator"),
        "{show}"
    );
    assert!(live.delivered("user2").is_empty());
    live.queue(QueueCommand::Delete(Selection {
        filter: FilterArgs {
            sender: Some("<>".into()),
            ..FilterArgs::default()
        },
        ..Selection::default()
    }))
    .await
    .unwrap();
    until("an empty queue", || live.spool.list().unwrap().is_empty()).await;
    live.stop().await;
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_release_delete_flush_on_a_live_queue() {
    let live = Live::start().await;
    assert_eq!(
        live.queue(QueueCommand::List {
            filter: FilterArgs::default(),
            json: false,
        })
        .await
        .unwrap(),
        "Mail queue is empty\n"
    );

    // A held message stays; list shows it held (`!`); release delivers it.
    let held = live.commit("user", now(), true).await;
    let table = live
        .queue(QueueCommand::List {
            filter: FilterArgs::default(),
            json: false,
        })
        .await
        .unwrap();
    assert!(table.contains(&format!("{held}!")), "{table}");
    assert!(table.contains("user@test.example"), "{table}");
    let listed = live.list().await;
    assert!(listed[0].held);
    let out = live
        .queue(QueueCommand::Flush {
            id: Some(held.to_string()),
            domain: None,
            json: false,
        })
        .await
        .unwrap_err();
    assert!(out.contains("is held"), "{out}");
    assert!(live.delivered("user").is_empty());
    let out = live
        .queue(QueueCommand::Release(selection(vec![held.to_string()])))
        .await
        .unwrap();
    assert_eq!(out, format!("released {held} (1 pending recipient)\n"));
    until("the released message's delivery", || {
        live.delivered("user").len() == 1
    })
    .await;

    // Hold a message that is waiting for a retry, by prefix; then release it: delivered now.
    let later = now() + 3600;
    let waiting = live.commit("user2", later, false).await;
    let prefix = waiting.as_str()[..20].to_string();
    live.queue(QueueCommand::Hold(selection(vec![prefix])))
        .await
        .unwrap();
    assert!(live.spool.load(&waiting).unwrap().held);
    let show = live
        .queue(QueueCommand::Show {
            id: waiting.to_string(),
            body: false,
            json: false,
        })
        .await
        .unwrap();
    assert!(show.contains("Status:   held"), "{show}");
    assert!(show.contains("Subject: for user2"), "{show}");
    let with_body = live
        .queue(QueueCommand::Show {
            id: waiting.to_string(),
            body: true,
            json: false,
        })
        .await
        .unwrap();
    assert!(with_body.starts_with(&show), "{with_body}");
    assert!(
        with_body.len() > show.len(),
        "the text follows: {with_body}"
    );
    live.queue(QueueCommand::Release(selection(vec![waiting.to_string()])))
        .await
        .unwrap();
    until("the retry after release", || {
        live.delivered("user2").len() == 1
    })
    .await;

    // Delete: gone from the queue and the disk, never delivered.
    let doomed = live.commit("user", later, false).await;
    let out = live
        .queue(QueueCommand::Delete(selection(vec![doomed.to_string()])))
        .await
        .unwrap();
    assert_eq!(out, format!("deleted {doomed} (1 pending recipient)\n"));
    assert!(!live.spool.body_path(&doomed).exists());
    let err = live
        .queue(QueueCommand::Delete(selection(vec![doomed.to_string()])))
        .await
        .unwrap_err();
    // The reason ("no message ...") went to stderr where it happened; the error says how many.
    assert!(
        err.contains("1 of the messages could not be changed"),
        "{err}"
    );

    // Flush one domain: only its recipients become due.
    let local = live.commit("user", later, false).await;
    let out = live
        .queue(QueueCommand::Flush {
            id: None,
            domain: Some("other.example".into()),
            json: false,
        })
        .await
        .unwrap();
    assert_eq!(out, "flushed 0 recipients in 0 messages\n");
    assert_eq!(
        live.spool.load(&local).unwrap().recipients[0].next_attempt,
        later
    );
    let out = live
        .queue(QueueCommand::Flush {
            id: None,
            domain: Some("TEST.example".into()),
            json: false,
        })
        .await
        .unwrap();
    assert_eq!(out, "flushed 1 recipient in 1 message\n");
    until("the flushed delivery", || live.delivered("user").len() == 2).await;
    until("an empty queue", || live.spool.list().unwrap().is_empty()).await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendmail_t_is_picked_up_and_delivered() {
    let live = Live::start().await;
    let settings = settings(&live.data);
    let options = sendmail::parse_args(&["-t".to_string(), "-i".to_string()]).unwrap();
    let context = sendmail::Context {
        user: "cron".into(),
        hostname: settings.hostname.clone(),
        now: jiff::ZonedDateTime::now(),
    };
    let input = b"To: Team <list@test.example>\nBcc: \"Hidden, Person\" <user2@test.example>\nSubject: nightly\n\nreport\n.\nstill the report\n";
    let dropped = tokio::task::spawn_blocking(move || {
        sendmail::submit(&options, &settings, &input[..], &context).unwrap()
    })
    .await
    .unwrap();
    let sendmail::Queued::Dropped(dropped) = dropped else {
        panic!("root drops into the maildrop, got {dropped:?}");
    };
    assert!(dropped.starts_with(live.data.join("maildrop/new")));

    until("delivery to both list members", || {
        live.delivered("user").len() == 1 && live.delivered("user2").len() == 1
    })
    .await;
    let message = &live.delivered("user")[0];
    assert!(
        message.contains("Received: by mx.test.example (yizhan pickup, from userid "),
        "{message}"
    );
    assert!(
        message.contains("To: Team <list@test.example>\n"),
        "{message}"
    );
    assert!(
        message.contains("From: cron@mx.test.example\n"),
        "{message}"
    );
    assert!(
        !message.contains("Bcc") && !message.contains("Hidden"),
        "{message}"
    );
    assert!(
        message.contains("\n\nreport\n.\nstill the report\n"),
        "{message}"
    );
    until("the maildrop emptied", || !dropped.exists()).await;
    until("an empty queue", || live.spool.list().unwrap().is_empty()).await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_maildrop_file_is_set_aside_and_the_rest_imported() {
    let live = Live::start().await;
    let new = live.data.join("maildrop/new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("0-garbage"), b"not an envelope").unwrap();
    let submission = yizhan_server::pickup::Submission {
        version: yizhan_server::pickup::FORMAT_VERSION,
        sender: "".into(),
        recipients: vec!["user".into()],
        dsn: Default::default(),
    };
    yizhan_server::pickup::drop_message(
        &live.data.join("maildrop"),
        &submission,
        b"Subject: bounce\r\n\r\nx\r\n",
    )
    .unwrap();
    until("the good one delivered", || {
        live.delivered("user").len() == 1
    })
    .await;
    until("the bad one set aside", || {
        live.data.join("maildrop/bad/0-garbage").exists()
    })
    .await;
    live.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary (needs the wiring in main.rs and listener.rs).

const CONFIG: &str = r#"hostname = "mx.test.example"

[[listener]]
address = "127.0.0.1:0"
kind = "smtp"

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"
"#;

fn yizhan(name: &str, dir: &Path) -> Command {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_yizhan"));
    let program = if name == "yizhan" {
        exe
    } else {
        let link = dir.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(&exe, &link).unwrap();
        }
        link
    };
    let mut cmd = Command::new(program);
    cmd.env_remove("RUST_LOG")
        .env("YIZHAN_CONFIG", dir.join("yizhan.toml"));
    cmd
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_sendmail_t_then_queue_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("yizhan.toml"),
        format!("data_dir = {:?}\n{CONFIG}", data.display().to_string()),
    )
    .unwrap();

    // Issue #12: a data directory no server has used is refused (exit 75), and nothing is
    // written where no server would ever read it.
    let sendmail = |input: &[u8]| {
        let mut child = yizhan("sendmail", dir.path())
            .args(["-t", "-oi"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // sendmail refuses before it reads its input (exit 75): it may be gone before the
        // message is written, and a broken pipe here is expected then.
        let written = child.stdin.take().unwrap().write_all(input);
        assert!(
            written
                .as_ref()
                .map_or_else(|e| e.kind() == std::io::ErrorKind::BrokenPipe, |()| true),
            "{written:?}"
        );
        child.wait_with_output().unwrap()
    };
    let refused = sendmail(b"To: user@test.example\nSubject: nowhere\n\nhi\n");
    assert_eq!(refused.status.code(), Some(75));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no yizhan server uses") && err.contains(&data.display().to_string()),
        "{err}"
    );
    assert!(!data.join("maildrop").exists(), "nothing written");

    // A server used it before (it made the maildrop): sendmail works with the server down,
    // the message waits in the maildrop.
    for sub in ["tmp", "new"] {
        std::fs::create_dir_all(data.join("maildrop").join(sub)).unwrap();
    }
    let mut child = yizhan("sendmail", dir.path())
        .args(["-t", "-oi"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"To: user@test.example\nSubject: via sendmail\n\nhi\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let out = yizhan("yizhan", dir.path())
        .args(["queue", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not running") && err.contains("control.sock"),
        "{err}"
    );

    let mut server = yizhan("yizhan", dir.path())
        .arg("serve")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mailbox = data.join("mail/test.example/user/new");
    wait_for("delivery from the maildrop", || {
        std::fs::read_dir(&mailbox).is_ok_and(|mut d| d.next().is_some())
    });
    // The Maildir file appears before the runner records the outcome and removes the message.
    wait_for("the queue to empty after delivery", || {
        let out = yizhan("mailq", dir.path()).output().unwrap();
        String::from_utf8_lossy(&out.stdout) == "Mail queue is empty\n"
    });
    let out = yizhan("yizhan", dir.path())
        .args(["sendmail", "-f", "me@test.example", "user@test.example"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A bad id among several: named once on stderr, a non-zero exit, the others still done.
    let out = yizhan("yizhan", dir.path())
        .args(["queue", "hold", "abc"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("invalid queue id \"abc\"").count(), 1, "{err}");
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert!(server.wait().unwrap().success());
}
