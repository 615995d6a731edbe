//! The maildrop and its pickup: how `sendmail` queues mail without talking SMTP, and without
//! needing the server to be up.
//!
//! `sendmail` writes each message with [`drop_message`] into `<data_dir>/maildrop/`: a file in
//! `tmp/`, written, `fsync`ed, then renamed into `new/` (and `new/` synced), so the server never
//! sees half a file. A maildrop file is one line of JSON ([`Submission`]: the envelope) followed
//! by the message exactly as it is to be stored (RFC 5322, CRLF line ends).
//!
//! The running server's [`Pickup`] task looks into `new/` every second (and when woken through
//! the control socket), and imports each file into the spool: recipients are resolved like SMTP
//! ones (local mailbox or remote, aliases expanded, RFC 5321 3.4 relocated and unknown users
//! failed at once), a `Received:` line is prepended (RFC 5321 4.4) and the message is committed;
//! only then is the maildrop file deleted. A crash in between imports the file again
//! (at-least-once, never lost). A file that can never be imported (it does not parse, or is too
//! large) is moved to `maildrop/bad/` and logged.

mod import;

pub use import::{Importer, resolve_recipients};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::OFlags;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use yizhan_proto::address::Mailbox;
use yizhan_spool::Intake;

use crate::dkim::SignFor;
use crate::queue::RunnerHandle;
use crate::settings::LiveSettings;

/// How often the pickup looks into the maildrop without being woken.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The version written in every [`Submission`]; files with another version are set aside.
pub const FORMAT_VERSION: u32 = 1;

/// The longest envelope line accepted in a maildrop file.
const MAX_ENVELOPE_LINE: usize = 1024 * 1024;

/// The maildrop directory of the server with this data directory.
pub fn maildrop_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("maildrop")
}

/// Makes the maildrop `dir` (`tmp/`, `new/`, `bad/`) if it is missing. The server does this when
/// it opens its spool, before it says it is ready: a maildrop that exists is what tells
/// `sendmail` that a server reads this data directory ([`drop_message`]).
pub fn make_maildrop(dir: &Path) -> io::Result<()> {
    for sub in ["tmp", "new", "bad"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    Ok(())
}

/// The envelope of a dropped message: the first line of a maildrop file, as JSON.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The envelope sender (`user@domain`), `""` for the null reverse-path `<>`.
    pub sender: String,
    /// The recipients as given (`user@domain`, or a bare local part meaning the primary
    /// local domain).
    pub recipients: Vec<String>,
    /// What delivery status notifications are asked for (`sendmail -N`, `-R`, `-V`).
    #[serde(default, skip_serializing_if = "Dsn::is_empty")]
    pub dsn: Dsn,
}

/// The DSN requests of a local submission (RFC 3461), as `sendmail` takes them: `-N` NOTIFY
/// for every recipient, `-R` RET, `-V` ENVID. Text here, checked by [`Dsn::parse`] where it
/// is given (sendmail) and again where it is read (the server: a maildrop file is input).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Dsn {
    /// `never`, or a comma list of `success`, `failure`, `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// `full` or `hdrs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// The envelope id: 1 to 100 printable ASCII characters, no space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
}

/// The requests of a [`Dsn`], checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnRequest {
    /// NOTIFY for every recipient.
    pub notify: Option<yizhan_proto::command::Notify>,
    /// RET.
    pub ret: Option<yizhan_proto::command::Ret>,
    /// ENVID.
    pub envid: Option<String>,
}

impl Dsn {
    /// Whether nothing is asked.
    pub fn is_empty(&self) -> bool {
        *self == Dsn::default()
    }

    /// The requests, or what is wrong with them (naming the sendmail flag).
    pub fn parse(&self) -> Result<DsnRequest, String> {
        use yizhan_proto::command::{Notify, Ret};
        let notify = match self.notify.as_deref() {
            None => None,
            Some(text) => Some(Notify::parse(text).ok_or_else(|| {
                format!("-N {text:?}: expected never, or a comma list of success, failure, delay")
            })?),
        };
        let ret = match self.ret.as_deref() {
            None => None,
            Some(text) => Some(
                Ret::parse(text).ok_or_else(|| format!("-R {text:?}: expected full or hdrs"))?,
            ),
        };
        if let Some(id) = &self.envid {
            let printable = id.bytes().all(|b| b.is_ascii_graphic());
            if id.is_empty() || id.len() > 100 || !printable {
                return Err(format!(
                    "-V {id:?}: an envelope id is 1 to 100 printable ASCII characters"
                ));
            }
        }
        Ok(DsnRequest {
            notify,
            ret,
            envid: self.envid.clone(),
        })
    }
}

/// Why a message could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// The maildrop could not be written (missing directory, permissions, disk full).
    #[error("cannot write into the maildrop {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The envelope cannot be encoded.
    #[error("cannot encode the envelope: {0}")]
    Encode(String),
    /// No server has ever used this data directory: a message dropped here would never be
    /// read. Nothing was written. (How to fix it depends on the program; `sendmail` says.)
    #[error(
        "no yizhan server uses the data directory {}: its maildrop {} does not exist (a \
         server makes it when it starts)",
        data_dir.display(),
        maildrop.display()
    )]
    NoServer {
        /// The data directory looked in.
        data_dir: PathBuf,
        /// The maildrop that is missing.
        maildrop: PathBuf,
    },
}

static DROP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Durably writes `message` with its `submission` envelope into the maildrop `dir` and returns
/// the file's path in `new/`. The maildrop must exist: the server makes it when it starts, and
/// one that does not exist belongs to no server ([`DropError::NoServer`]; a message left there
/// would never be read, so nothing is written). A server that is not running now reads it
/// when it starts, as Postfix's maildrop.
///
/// The file is written in `tmp/`, synced, renamed into `new/` and the directory synced: when
/// this returns `Ok`, the message survives a crash. Files are created mode `0640`.
pub fn drop_message(
    dir: &Path,
    submission: &Submission,
    message: &[u8],
) -> Result<PathBuf, DropError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DropError::Io { path, source }
    };
    check_maildrop(dir)?;
    let tmp_dir = dir.join("tmp");
    let new_dir = dir.join("new");
    let mut line = serde_json::to_vec(submission).map_err(|e| DropError::Encode(e.to_string()))?;
    line.push(b'\n');
    let (name, mut file, tmp) = loop {
        let name = format!(
            "{}.{}.{}",
            jiff::Timestamp::now().as_microsecond(),
            std::process::id(),
            DROP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = tmp_dir.join(&name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)
        {
            Ok(file) => break (name, file, tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&tmp)(e)),
        }
    };
    let written = give_to_maildrop_owner(&file, dir)
        .and_then(|()| file.write_all(&line))
        .and_then(|()| file.write_all(message))
        .and_then(|()| file.sync_all());
    drop(file);
    let target = new_dir.join(&name);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, &target)) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    File::open(&new_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&new_dir))?;
    Ok(target)
}

/// Run by root (`sendmail` from cron, say), the file is given to the maildrop's owner, the
/// account the server runs as, so that it can read it (its mode is 0640). The submitter is
/// then recorded as that account; root may submit as anyone anyway.
fn give_to_maildrop_owner(file: &File, dir: &Path) -> io::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let owner = fs::metadata(dir)?;
    if owner.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))
}

/// Checks that the maildrop `dir` belongs to a server: it exists, with its `tmp/` and `new/`,
/// which only a server makes ([`make_maildrop`]). [`drop_message`] checks it too; `sendmail`
/// calls it before reading its input, so that it refuses at once.
pub fn check_maildrop(dir: &Path) -> Result<(), DropError> {
    if dir.join("tmp").is_dir() && dir.join("new").is_dir() {
        return Ok(());
    }
    Err(DropError::NoServer {
        data_dir: dir.parent().unwrap_or(dir).to_path_buf(),
        maildrop: dir.to_path_buf(),
    })
}

/// Checks an address given to `sendmail` (`user@domain` or a bare local part); returns it
/// without surrounding angle brackets, or why it is not acceptable.
pub fn check_address(address: &str) -> Result<String, String> {
    let address = address.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    if address.contains('@') {
        Mailbox::parse(address)
            .map(|m| m.to_string())
            .map_err(|e| format!("invalid address {address:?}: {e}"))
    } else {
        yizhan_proto::address::LocalPart::parse(address)
            .map(|l| l.to_string())
            .map_err(|e| format!("invalid address {address:?}: {e}"))
    }
}

/// Wakes the pickup. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PickupHandle {
    wake: Arc<Notify>,
}

impl PickupHandle {
    /// Makes the pickup look into the maildrop now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The pickup task: imports maildrop files into the spool.
#[derive(Debug)]
pub struct Pickup {
    dir: PathBuf,
    importer: Importer,
    wake: Arc<Notify>,
    /// Bad entries that could be neither moved aside nor removed (a directory or FIFO owned
    /// by someone else): skipped from then on, so they are logged once, not every second.
    stuck: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

/// Why one maildrop file was not imported.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImportError {
    /// Try again later (spool or disk trouble); the file stays.
    #[error("{0}")]
    Transient(String),
    /// It will never import; the file goes to `bad/`.
    #[error("{0}")]
    Bad(String),
    /// Someone else took it (e.g. removed by hand); nothing to do.
    #[error("gone")]
    Gone,
}

impl Pickup {
    /// A pickup of maildrop `dir` into `spool`, resolving recipients with
    /// `settings.directory`, naming itself `settings.hostname` in the `Received:` line and
    /// refusing messages over `settings.smtp.max_message_size`.
    pub fn new(dir: PathBuf, spool: Intake, runner: RunnerHandle, settings: LiveSettings) -> Self {
        Pickup {
            dir,
            importer: Importer {
                spool,
                runner,
                settings,
            },
            wake: Arc::new(Notify::new()),
            stuck: std::sync::Mutex::default(),
        }
    }

    /// What queues a local user's message (for the submission socket).
    pub fn importer(&self) -> Importer {
        self.importer.clone()
    }

    /// A handle to wake the pickup.
    pub fn handle(&self) -> PickupHandle {
        PickupHandle {
            wake: self.wake.clone(),
        }
    }

    /// Looks into the maildrop every [`POLL_INTERVAL`] and when woken, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        // Made at bind already; again here for a pickup run on its own (tests).
        if let Err(e) = make_maildrop(&self.dir) {
            warn!(dir = %self.dir.display(), error = %e, "cannot create the maildrop directory");
        }
        info!(dir = %self.dir.display(), "maildrop pickup started");
        loop {
            let _ = self.scan().await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
        info!("maildrop pickup stopped");
    }

    /// Imports every file now in `new/`, oldest name first; returns how many were queued.
    pub async fn scan(&self) -> usize {
        let new_dir = self.dir.join("new");
        let mut names: Vec<PathBuf> = match fs::read_dir(&new_dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
            Err(e) => {
                warn!(dir = %new_dir.display(), error = %e, "cannot read the maildrop");
                return 0;
            }
        };
        names.sort();
        if let Ok(stuck) = self.stuck.lock() {
            names.retain(|n| !stuck.contains(n));
        }
        let mut queued = 0;
        for path in names {
            match self.import(&path).await {
                Ok(()) => queued += 1,
                Err(ImportError::Gone) => {}
                Err(ImportError::Transient(e)) => {
                    warn!(file = %path.display(), error = %e, "cannot import from the maildrop now; will retry");
                    // The spool is in trouble: the rest would fail the same way.
                    break;
                }
                Err(ImportError::Bad(e)) => {
                    error!(file = %path.display(), error = %e, "maildrop file cannot be imported; moved to bad/");
                    self.set_aside(&path);
                }
            }
        }
        queued
    }

    fn set_aside(&self, path: &Path) {
        let bad = self.dir.join("bad");
        let _ = fs::create_dir_all(&bad);
        if let Some(name) = path.file_name()
            && let Err(e) = fs::rename(path, bad.join(name))
        {
            if fs::remove_file(path).is_ok() {
                error!(file = %path.display(), error = %e, "cannot move a bad maildrop file aside; removed it");
            } else {
                error!(file = %path.display(), error = %e, "cannot move a bad maildrop entry aside nor remove it; ignoring it until restart (remove it by hand)");
                if let Ok(mut stuck) = self.stuck.lock() {
                    stuck.insert(path.to_path_buf());
                }
            }
        }
    }

    async fn import(&self, path: &Path) -> Result<(), ImportError> {
        let max = self.importer.settings.load().smtp.max_message_size;
        let read_path = path.to_path_buf();
        let (submission, message, uid) =
            tokio::task::spawn_blocking(move || read_drop(&read_path, max))
                .await
                .map_err(|e| ImportError::Transient(e.to_string()))??;
        let from = path.display().to_string();
        self.importer
            // Only root and the server's account can write to the maildrop.
            .queue(&submission, &message, uid, &from, &SignFor::AnyDomain)
            .await?;
        // Committed: only now may the drop go. If this fails, the next scan imports it again.
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            error!(file = %path.display(), error = %e, "cannot remove an imported maildrop file; it will be imported again");
        }
        Ok(())
    }
}

/// Reads one maildrop file: its envelope, message and owner.
fn read_drop(path: &Path, max_size: u64) -> Result<(Submission, Vec<u8>, u32), ImportError> {
    // Never follow a link, never wait on a FIFO or a device: open without blocking, then
    // look at what was opened (a FIFO dropped into the maildrop once wedged the pickup and
    // SIGTERM with it).
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ImportError::Gone),
        Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
            return Err(ImportError::Bad("a symbolic link, not a file".into()));
        }
        Err(e) => return Err(ImportError::Transient(e.to_string())),
    };
    let meta = file
        .metadata()
        .map_err(|e| ImportError::Transient(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(ImportError::Bad(format!(
            "not a regular file ({})",
            describe(meta.file_type())
        )));
    }
    let limit = max_size.saturating_add(MAX_ENVELOPE_LINE as u64);
    if meta.len() > limit {
        return Err(ImportError::Bad(format!(
            "message larger than the limit of {max_size} bytes"
        )));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ImportError::Transient(e.to_string()))?;
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(ImportError::Bad("no envelope line".into()));
    };
    let submission: Submission = serde_json::from_slice(&bytes[..end])
        .map_err(|e| ImportError::Bad(format!("envelope does not parse: {e}")))?;
    if submission.version != FORMAT_VERSION {
        return Err(ImportError::Bad(format!(
            "maildrop format version {} (this yizhan reads {FORMAT_VERSION})",
            submission.version
        )));
    }
    let message = bytes.split_off(end + 1);
    if message.len() as u64 > max_size {
        return Err(ImportError::Bad(format!(
            "message larger than the limit of {max_size} bytes"
        )));
    }
    Ok((submission, message, meta.uid()))
}

/// What a maildrop entry that is not a regular file is, for the log.
fn describe(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use yizhan_spool::{Recipient, RecipientStatus};

    use super::import::received_line;
    use super::*;
    use crate::directory::Directory;

    fn directory() -> Directory {
        let mut b = Directory::builder();
        b.domain("test.example")
            .mailbox("user@test.example", None)
            .mailbox("user2@test.example", None)
            .alias(
                "list@test.example",
                [
                    "user@test.example",
                    "user2@test.example",
                    "far@remote.example",
                ],
            )
            .relocated("moved@test.example", "moved@elsewhere.example")
            .postmaster("user@test.example");
        b.build().unwrap()
    }

    fn summary(r: &Recipient) -> (String, bool, &'static str) {
        let state = match r.status {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Delivered { .. } => "delivered",
            RecipientStatus::Failed { .. } => "failed",
        };
        (r.address.to_string(), r.mailbox.is_some(), state)
    }

    /// Recipients resolve as SMTP RCPT does (RFC 5321 3.4: aliases, 251 forward, 551, 550).
    #[test]
    fn recipients_resolve_like_smtp() {
        let d = directory();
        type Want<'a> = &'a [(&'a str, bool, &'a str)];
        let cases: &[(&[&str], Want)] = &[
            (
                &["user@test.example"],
                &[("user@test.example", true, "pending")],
            ),
            (
                &["USER@Test.Example"],
                &[("user@test.example", true, "pending")],
            ),
            (
                &["<user@test.example>"],
                &[("user@test.example", true, "pending")],
            ),
            // A bare local part is in the primary domain.
            (&["user2"], &[("user2@test.example", true, "pending")]),
            (
                &["list@test.example", "user@test.example"],
                &[
                    ("user@test.example", true, "pending"),
                    ("user2@test.example", true, "pending"),
                    ("far@remote.example", false, "pending"),
                ],
            ),
            (
                &["someone@remote.example"],
                &[("someone@remote.example", false, "pending")],
            ),
            (
                &["moved@test.example"],
                &[("moved@test.example", false, "failed")],
            ),
            (
                &["nobody@test.example"],
                &[("nobody@test.example", false, "failed")],
            ),
            (
                // No address at all (sendmail refuses it before dropping): skipped, logged.
                &["a b@test.example"],
                &[],
            ),
            (&["postmaster"], &[("user@test.example", true, "pending")]),
        ];
        for (given, want) in cases {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            let got: Vec<_> = resolve_recipients(&d, "mx.test.example", &given, 100)
                .iter()
                .map(summary)
                .collect();
            let want: Vec<_> = want
                .iter()
                .map(|(a, l, s)| (a.to_string(), *l, *s))
                .collect();
            assert_eq!(got, want, "{given:?}");
        }
    }

    #[test]
    fn relocated_failure_names_the_new_address() {
        let r = resolve_recipients(&directory(), "h", &["moved@test.example".into()], 5);
        assert_eq!(
            r[0].status,
            RecipientStatus::Failed {
                at: 5,
                detail: "551 5.1.6 user not local; please try <moved@elsewhere.example>".into()
            }
        );
    }

    #[test]
    fn check_address_accepts_mailboxes_and_local_parts() {
        let cases = [
            ("user@test.example", Some("user@test.example")),
            (" <user@test.example> ", Some("user@test.example")),
            ("user", Some("user")),
            ("a b@test.example", None),
            ("user@", None),
            ("", None),
        ];
        for (given, want) in cases {
            assert_eq!(check_address(given).ok().as_deref(), want, "{given:?}");
        }
    }

    #[test]
    fn drop_then_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let submission = Submission {
            version: FORMAT_VERSION,
            sender: "me@test.example".into(),
            recipients: vec!["user@test.example".into()],
            dsn: Default::default(),
        };
        let message = b"Subject: hi\r\n\r\nbody\r\n";
        // No maildrop: no server uses this directory, nothing is written.
        let missing = drop_message(&dir.path().join("maildrop"), &submission, message);
        assert!(
            matches!(missing, Err(DropError::NoServer { .. })),
            "{missing:?}"
        );
        assert!(!dir.path().join("maildrop").exists());
        // What a server makes when it starts.
        make_maildrop(dir.path()).unwrap();
        check_maildrop(dir.path()).unwrap();
        let path = drop_message(dir.path(), &submission, message).unwrap();
        assert_eq!(path.parent().unwrap(), dir.path().join("new"));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let (got, body, _uid) = read_drop(&path, 1000).unwrap();
        assert_eq!(got, submission);
        assert_eq!(body, message);
        // Over the size limit: never importable.
        assert!(matches!(read_drop(&path, 5), Err(ImportError::Bad(_))));
    }

    #[test]
    fn bad_drops_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &[u8])] = &[
            ("no-newline", b"{\"version\":1}"),
            ("not-json", b"hello\nbody"),
            (
                "wrong-version",
                b"{\"version\":9,\"sender\":\"\",\"recipients\":[]}\nx",
            ),
            (
                "unknown-field",
                b"{\"version\":1,\"sender\":\"\",\"recipients\":[],\"x\":1}\nx",
            ),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            assert!(
                matches!(read_drop(&path, 1000), Err(ImportError::Bad(_))),
                "{name}"
            );
        }
        assert!(matches!(
            read_drop(&dir.path().join("missing"), 1000),
            Err(ImportError::Gone)
        ));
    }

    #[test]
    fn fifos_links_and_devices_are_refused_without_blocking() {
        // Before, `File::open` on a FIFO waited for a writer for ever (pickup and SIGTERM
        // with it). Each must be recognised at once as not importable (moved aside).
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(
            &target,
            b"{\"version\":1,\"sender\":\"\",\"recipients\":[]}\nx",
        )
        .unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        for (path, what) in [
            (&fifo, "a FIFO"),
            (&link, "a symbolic link"),
            (&sub, "a directory"),
            (&PathBuf::from("/dev/null"), "a device"),
        ] {
            match read_drop(path, 1000) {
                Err(ImportError::Bad(e)) => assert!(e.contains(what), "{e}"),
                other => panic!("{path:?}: {other:?}"),
            }
        }
    }

    /// RFC 5321 4.4: by, id, for (one recipient), date.
    #[test]
    fn received_line_shape() {
        let r = [Recipient::to("u@d".parse().unwrap(), None, 0)];
        let line = received_line("mx.test.example", 1000, "abc", &r);
        assert!(
            line.starts_with(
                "Received: by mx.test.example (yizhan pickup, from userid 1000)\r\n\tid abc\r\n\tfor <u@d>;\r\n\t"
            ),
            "{line}"
        );
        assert!(line.ends_with("\r\n"));
        let line = received_line("h", 0, "abc", &[]);
        assert!(!line.contains("for"));
    }
}
