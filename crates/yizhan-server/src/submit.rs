//! The submission socket: how a local user who may not write into the maildrop (anyone but
//! root and the service account) queues mail with `sendmail` and sees their own queued mail
//! with `mailq`, without a world-writable directory (issue #13; OpenSMTPD's model).
//!
//! `<data_dir>/public/submit.sock` is 0666 in a 0711 directory (the data directory itself is
//! 0711: others may pass through it, not list it). The server asks the kernel who is on the
//! other end (`SO_PEERCRED`) and believes nothing the client says about itself:
//!
//! - the message is queued with that uid in its `Received:` line and envelope, and only once it
//!   is durably in the spool does the client hear `queued`;
//! - the envelope sender of an untrusted user (not root, not the server's own account) is
//!   their own login at the hostname, whatever `-f` asked for;
//! - `list` shows an untrusted user only the messages they submitted.
//!
//! Protocol: one JSON line ([`SubmitRequest`]), for `submit` followed by exactly `size` bytes
//! of message; one JSON line back ([`SubmitResponse`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use yizhan_spool::{Origin, QueueStore};

use crate::control::MessageInfo;
use crate::dkim::SignFor;
use crate::pickup::{FORMAT_VERSION, ImportError, Importer, Submission};

/// The directory, in the data directory, that other local users may reach.
pub const PUBLIC_DIR: &str = "public";

/// The socket's name in [`PUBLIC_DIR`].
pub const SOCKET_NAME: &str = "submit.sock";

/// Clients served at once; more wait in the kernel's backlog.
const MAX_CLIENTS: usize = 32;

/// How many of those one local user (other than root and the server's account) may hold: one
/// user cannot take every slot and shut the others out.
const MAX_PER_USER: usize = 4;

/// How long an answer may still take to write once the server is stopping (a client that
/// never reads must not hold up a shutdown; one that does read learns its queue id).
const ANSWER_GRACE_AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// How long a client may take to send its request and its message.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest request line.
const MAX_REQUEST: usize = 64 * 1024;

/// The socket of the server whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PUBLIC_DIR).join(SOCKET_NAME)
}

/// One request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SubmitRequest {
    /// Queue a message: `size` bytes follow the line.
    Submit {
        /// The envelope sender asked for (`""` for `<>`); an untrusted user gets their own.
        sender: String,
        /// The recipients, as `sendmail` takes them.
        recipients: Vec<String>,
        /// The message's length in bytes.
        size: u64,
        /// The DSN requests (`sendmail -N`, `-R`, `-V`).
        #[serde(default, skip_serializing_if = "crate::pickup::Dsn::is_empty")]
        dsn: crate::pickup::Dsn,
    },
    /// The queued messages this user may see.
    List,
}

/// One answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum SubmitResponse {
    /// The message is in the spool.
    Queued {
        /// Its queue id.
        id: String,
        /// The envelope sender it was queued with.
        sender: String,
    },
    /// Answer to `list`.
    Queue {
        /// Oldest first.
        messages: Vec<MessageInfo>,
    },
    /// Refused; nothing was queued.
    Error {
        /// For humans.
        message: String,
        /// Whether trying again later may work (the spool was busy or failing).
        temporary: bool,
    },
}

/// Makes `<data_dir>/public` (0711) and binds the socket in it (0666), replacing a stale one.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = data_dir.join(PUBLIC_DIR);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    let path = dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves the socket until `shutdown`.
pub async fn serve(
    listener: UnixListener,
    importer: Importer,
    spool: Arc<dyn QueueStore>,
    shutdown: CancellationToken,
) {
    info!("submission socket listening");
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let served = Arc::new(Served {
        importer,
        spool,
        per_user: PerUser::default(),
    });
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "submission socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        tracker.spawn(connection(stream, served.clone(), shutdown.clone(), slot));
    }
    tracker.close();
    tracker.wait().await;
}

/// What every connection shares.
struct Served {
    importer: Importer,
    spool: Arc<dyn QueueStore>,
    per_user: PerUser,
}

/// Connections open per untrusted uid, at most [`MAX_PER_USER`] each.
#[derive(Default)]
struct PerUser(Mutex<HashMap<u32, usize>>);

/// One of a user's connections, given back when dropped.
struct UserSlot<'a> {
    per_user: &'a PerUser,
    uid: u32,
}

impl PerUser {
    /// A slot for `uid` (`Some(None)` for root and the server's account, never counted), or
    /// `None` when it holds [`MAX_PER_USER`] already.
    fn take(&self, uid: u32) -> Option<Option<UserSlot<'_>>> {
        if trusted(uid) {
            return Some(None);
        }
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(uid).or_default();
        if *count >= MAX_PER_USER {
            return None;
        }
        *count += 1;
        Some(Some(UserSlot {
            per_user: self,
            uid,
        }))
    }
}

impl Drop for UserSlot<'_> {
    fn drop(&mut self) {
        let mut counts = self.per_user.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.uid);
            }
        }
    }
}

async fn connection(
    stream: UnixStream,
    served: Arc<Served>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let Ok(cred) = stream.peer_cred() else {
        warn!("submission socket: cannot tell who the client is; closed");
        return;
    };
    let uid = cred.uid();
    let (read, mut write) = stream.into_split();
    let Some(_user_slot) = served.per_user.take(uid) else {
        warn!(
            uid,
            limit = MAX_PER_USER,
            "submission socket: too many connections from one user; refused"
        );
        let busy = refused(
            format!("too many submissions at once from uid {uid}; try again later"),
            true,
        );
        send_answer(&mut write, &busy, &shutdown).await;
        return;
    };
    let mut read = BufReader::new(read);
    let max = served.importer.settings.load().smtp.max_message_size;
    // Waiting for the client ends with the server: a slow client never holds up a shutdown.
    // Once the message is read it is queued (or not) whole.
    let asked = tokio::select! {
        asked = tokio::time::timeout(CLIENT_TIMEOUT, read_request(&mut read, max)) => {
            asked.unwrap_or_else(|_| Err(refused("timed out waiting for the message", false)))
        }
        _ = shutdown.cancelled() => Err(refused("the server is shutting down; try again later", true)),
    };
    let answer = match asked {
        Ok(asked) => answer(asked, uid, &served).await,
        Err(refusal) => refusal,
    };
    send_answer(&mut write, &answer, &shutdown).await;
}

/// Writes `answer` as one line; at most [`CLIENT_TIMEOUT`], and at most
/// [`ANSWER_GRACE_AT_SHUTDOWN`] once the server is stopping.
async fn send_answer<W: tokio::io::AsyncWrite + Unpin>(
    write: &mut W,
    answer: &SubmitResponse,
    shutdown: &CancellationToken,
) {
    let Ok(mut line) = serde_json::to_vec(answer) else {
        return;
    };
    line.push(b'\n');
    let written = tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(&line));
    tokio::pin!(written);
    tokio::select! {
        _ = &mut written => {}
        _ = shutdown.cancelled() => {
            let _ = tokio::time::timeout(ANSWER_GRACE_AT_SHUTDOWN, written).await;
        }
    }
}

fn refused(message: impl Into<String>, temporary: bool) -> SubmitResponse {
    SubmitResponse::Error {
        message: message.into(),
        temporary,
    }
}

/// What a client asked for, its message read.
enum Asked {
    Submit {
        sender: String,
        recipients: Vec<String>,
        dsn: crate::pickup::Dsn,
        message: Vec<u8>,
    },
    List,
}

/// Reads the request line and, for `submit`, the message (at most `max` bytes).
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    max: u64,
) -> Result<Asked, SubmitResponse> {
    let mut line = Vec::new();
    let mut limited = (&mut *read).take(MAX_REQUEST as u64);
    if limited.read_until(b'\n', &mut line).await.is_err() || !line.ends_with(b"\n") {
        return Err(refused("no complete request line", false));
    }
    let request: SubmitRequest = serde_json::from_slice(line.trim_ascii())
        .map_err(|e| refused(format!("bad request: {e}"), false))?;
    match request {
        SubmitRequest::Submit {
            sender,
            recipients,
            size,
            dsn,
        } => {
            if size > max {
                let why = format!("message larger than the limit of {max} bytes");
                return Err(refused(why, false));
            }
            // Grown as the bytes arrive: a client that announces a large message and sends
            // nothing holds no memory for it.
            let mut message = Vec::new();
            let got = (&mut *read).take(size).read_to_end(&mut message).await;
            if got.is_err() || message.len() as u64 != size {
                return Err(refused("the message ended early", false));
            }
            Ok(Asked::Submit {
                sender,
                recipients,
                dsn,
                message,
            })
        }
        SubmitRequest::List => Ok(Asked::List),
    }
}

async fn answer(asked: Asked, uid: u32, served: &Served) -> SubmitResponse {
    let (importer, spool) = (&served.importer, &served.spool);
    match asked {
        Asked::Submit {
            sender,
            recipients,
            dsn,
            message,
        } => {
            let submission = Submission {
                version: FORMAT_VERSION,
                sender,
                recipients,
                dsn,
            };
            submit(importer, uid, submission, &message).await
        }
        Asked::List => list(spool, uid).await,
    }
}

/// Root and the server's own account may name any sender and see every message.
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// The login of `uid`, from the password database.
fn login(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|user| user.name)
}

async fn submit(
    importer: &Importer,
    uid: u32,
    mut submission: Submission,
    message: &[u8],
) -> SubmitResponse {
    let asked = std::mem::take(&mut submission.sender);
    let (sender, sign_for) = if trusted(uid) {
        (asked, SignFor::AnyDomain)
    } else {
        let Some(login) = login(uid) else {
            return refused(format!("uid {uid} has no account name"), false);
        };
        let own = format!("{login}@{}", importer.settings.load().hostname);
        if asked != own {
            info!(uid, asked = %asked, sender = %own, "untrusted local sender: envelope sender set to the login");
        }
        // A signature vouches for the From: address: only the user's own is signed.
        (own.clone(), SignFor::Address(own))
    };
    submission.sender.clone_from(&sender);
    match importer
        .queue(&submission, message, uid, SOCKET_NAME, &sign_for)
        .await
    {
        Ok(id) => SubmitResponse::Queued {
            id: id.to_string(),
            sender,
        },
        Err(ImportError::Bad(why)) => refused(why, false),
        Err(e) => refused(format!("cannot queue now: {e}"), true),
    }
}

async fn list(spool: &Arc<dyn QueueStore>, uid: u32) -> SubmitResponse {
    let envelopes = match spool.list_all().await {
        Ok(envelopes) => envelopes,
        Err(e) => return refused(format!("cannot read the queue now: {e}"), true),
    };
    let everyone = trusted(uid);
    let messages = envelopes
        .iter()
        .filter(|e| everyone || e.client.origin == Origin::Local { uid: Some(uid) })
        .map(MessageInfo::from)
        .map(|info| if everyone { info } else { as_submitted(info) })
        .collect();
    SubmitResponse::Queue { messages }
}

/// What another local user may see of their own message: the recipients as they gave them
/// (not what aliases expanded them to), and no local delivery detail (it names paths in the
/// server's data directory); remote errors (the peer's reply) stay.
fn as_submitted(mut info: MessageInfo) -> MessageInfo {
    let mut seen = std::collections::HashSet::new();
    info.recipients.retain(|r| seen.insert(r.original.clone()));
    for r in &mut info.recipients {
        r.address.clone_from(&r.original);
        if r.local {
            let hidden = |text: &mut Option<String>, what: &str| {
                if text.is_some() {
                    *text = Some(what.to_owned());
                }
            };
            hidden(
                &mut r.last_error,
                "local delivery deferred (the server's log says why)",
            );
            hidden(
                &mut r.detail,
                "local delivery finished (the server's log has the detail)",
            );
        }
    }
    info
}

/// Sends one request (and, for `submit`, the message) to the socket of `data_dir` and waits
/// for the answer. Blocking; for `sendmail` and `mailq`.
pub fn request(
    data_dir: &Path,
    request: &SubmitRequest,
    message: &[u8],
) -> std::io::Result<SubmitResponse> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket_path(data_dir))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.write_all(message)?;
    stream.flush()?;
    let mut answer = Vec::new();
    std::io::BufReader::new(stream).read_until(b'\n', &mut answer)?;
    serde_json::from_slice(answer.trim_ascii()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::RecipientInfo;

    #[test]
    fn another_user_sees_what_they_submitted_not_where_it_went() {
        let recipient = |address: &str, original: &str, local: bool| RecipientInfo {
            address: address.into(),
            original: original.into(),
            local,
            state: "pending".into(),
            attempts: 1,
            next_attempt: None,
            last_error: Some("cannot write /var/lib/yizhan/mail/x".into()),
            detail: None,
        };
        let info = MessageInfo {
            recording: None,
            id: "0".repeat(32),
            received_at: 0,
            size: 1,
            sender: "joe@host.example".into(),
            held: false,
            recipients: vec![
                recipient("alice@test.example", "team@test.example", true),
                recipient("bob@test.example", "team@test.example", true),
                recipient("x@far.example", "x@far.example", false),
            ],
        };
        let shown = as_submitted(info);
        assert_eq!(shown.recipients.len(), 2, "one line per address given");
        assert_eq!(shown.recipients[0].address, "team@test.example");
        let error = shown.recipients[0].last_error.as_deref().unwrap();
        assert!(!error.contains('/'), "{error}");
        assert_eq!(
            shown.recipients[1].last_error.as_deref(),
            Some("cannot write /var/lib/yizhan/mail/x"),
            "a remote error is the peer's and stays"
        );
    }

    #[test]
    fn one_user_holds_at_most_a_few_connections() {
        let per_user = PerUser::default();
        let uid = rustix::process::geteuid().as_raw().wrapping_add(4242);
        let held: Vec<_> = (0..MAX_PER_USER)
            .map(|_| per_user.take(uid).expect("within the cap"))
            .collect();
        assert!(per_user.take(uid).is_none(), "over the cap");
        assert!(
            per_user.take(uid + 1).is_some(),
            "another user is not affected"
        );
        assert!(
            matches!(per_user.take(0), Some(None)),
            "root is not counted"
        );
        drop(held);
        assert!(per_user.take(uid).is_some(), "slots come back");
        assert!(per_user.0.lock().unwrap().get(&uid).is_none());
    }
}
