//! The control socket: how `yizhan queue ...` (and `sendmail`) talk to the running server.
//!
//! Only the running server may open the spool (it holds an exclusive lock on it), so every
//! operation on a live queue goes through the server, which applies it with the same
//! [`Spool`] API the queue runner uses: nothing else ever writes the spool, so it cannot be
//! corrupted by a concurrent writer.
//!
//! Protocol: a Unix stream socket at `<data_dir>/control.sock`, mode `0600` (only the server's
//! own user, and root, may connect). The client writes one JSON [`Request`] per line; the server
//! answers each with one JSON [`Response`] line, in order. A connection may carry many requests.
//! Requests are capped at [`MAX_REQUEST`] bytes, idle connections are closed after
//! [`IDLE_TIMEOUT`], and at most [`MAX_CLIENTS`] connections are served at once.
//!
//! ```text
//! -> {"op":"hold","id":"0190f2c4..."}
//! <- {"result":"done","messages":1,"recipients":1}
//! -> {"op":"show","id":"nonsense"}
//! <- {"result":"error","kind":"bad_request","message":"invalid queue id ..."}
//! ```
//!
//! What the operations mean (see `docs/operations.md`):
//! - `list`: every message, oldest first; `show`: one message and its header section.
//! - `hold`: the message stays in the spool but is never due until released.
//! - `release`: clears the hold and makes the pending recipients due now.
//! - `flush`: makes pending recipients due now (one message, one recipient domain, or all
//!   messages that are not held) and wakes the queue runner (the RFC 5321 4.5.4.1 retry
//!   interval is the runner's; this only moves the next attempt forward).
//! - `delete`: removes the message without a delivery status notification.
//! - `requeue`: starts delivery over (hold cleared, attempts and last errors forgotten, due
//!   now).
//! - `bounce`: fails the pending recipients now, with a failure report to the sender.
//! - `pickup`: wakes the maildrop pickup (sent by `sendmail` after it drops a message).
//!
//! A queue id may be given in full (32 hex digits) or as a unique prefix of at least
//! [`MIN_ID_PREFIX`] digits.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use yizhan_spool::{QueueId, QueueStore, SpoolError};

mod protocol;
mod select;
mod socket;
mod watch;

pub use protocol::{ErrorKind, MAX_ACT_IDS, MessageInfo, RecipientInfo, Request, Response};
pub use select::{ActError, Acted, ActedOn, Action, Filter, STATES, destinations, state};
pub use socket::{
    ClientError, bind_control, request, run_operations, serve_control, serve_control_on, watch,
};

use crate::pickup::PickupHandle;
use crate::queue::{Change, ChangeError, RunnerHandle};

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// How long a connection may stay silent before the server closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many control connections are served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 16;

/// How many `watch` connections (`yizhan watch`) are served at once, apart from the others.
pub const MAX_WATCHERS: usize = 8;

/// The shortest queue id prefix accepted in place of a full id.
pub const MIN_ID_PREFIX: usize = 6;

/// How much of a message body `show` reads looking for the end of the header section.
const MAX_HEADERS: u64 = 64 * 1024;

/// Where the control socket of the server with this data directory lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Why an operation failed (inside the server).
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no message {0} in the queue")]
    NotFound(String),
    #[error("message {0} is held; release it with `yizhan queue release {0}`")]
    Held(QueueId),
    #[error("{0}")]
    Spool(SpoolError),
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("{0}")]
    Config(String),
}

impl From<SpoolError> for OpError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::NotFound(id) => OpError::NotFound(id.to_string()),
            e => OpError::Spool(e),
        }
    }
}

impl From<ChangeError> for OpError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound(id) => OpError::NotFound(id.to_string()),
            ChangeError::Held(id) => OpError::Held(id),
            ChangeError::Spool(e) => OpError::Spool(e),
            ChangeError::Stopped => OpError::Unavailable("the queue runner is not running"),
        }
    }
}

impl OpError {
    fn into_response(self) -> Response {
        let kind = match &self {
            OpError::BadRequest(_) => ErrorKind::BadRequest,
            OpError::NotFound(_) => ErrorKind::NotFound,
            OpError::Held(_) => ErrorKind::Held,
            OpError::Spool(_) => ErrorKind::Spool,
            OpError::Unavailable(_) => ErrorKind::Unavailable,
            OpError::Config(_) => ErrorKind::Config,
        };
        Response::Error {
            kind,
            message: self.to_string(),
        }
    }
}

/// What the control socket works on: the queue (the embedded spool or the shared queue), the
/// runner to wake, the pickup to wake. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    spool: Arc<dyn QueueStore>,
    runner: RunnerHandle,
    pickup: Option<PickupHandle>,
    reload: Option<ReloadRequests>,
}

/// Where `reload` requests go: to whoever loads the configuration file (`yizhan serve`), with
/// a channel for the outcome (the settings needing a restart, or why the file was refused).
pub type ReloadRequests = tokio::sync::mpsc::Sender<ReloadAnswer>;

/// The channel a `reload` request is answered on.
pub type ReloadAnswer = tokio::sync::oneshot::Sender<Result<Vec<String>, String>>;

impl Control {
    /// Operations on `spool`; `runner` is woken when something becomes due; `pickup` (if
    /// running) is woken by the `pickup` request.
    pub fn new(
        spool: Arc<dyn QueueStore>,
        runner: RunnerHandle,
        pickup: Option<PickupHandle>,
    ) -> Self {
        Control {
            spool,
            runner,
            pickup,
            reload: None,
        }
    }

    /// The server's events (live sessions, delivery log, stream, terminals).
    pub fn events(&self) -> &crate::events::Events {
        self.runner.events()
    }

    /// Sends `reload` requests to `requests`.
    pub fn with_reload(mut self, requests: ReloadRequests) -> Self {
        self.reload = Some(requests);
        self
    }

    /// Applies one request and says how it went. Never panics on bad input.
    pub async fn handle(&self, request: Request) -> Response {
        let op = format!("{request:?}");
        match self.apply(request).await {
            Ok(response) => {
                if matches!(response, Response::Done { .. }) {
                    info!(request = %op, "control request applied");
                }
                response
            }
            Err(e) => {
                if matches!(e, OpError::Spool(_)) {
                    warn!(request = %op, error = %e, "control request failed");
                }
                e.into_response()
            }
        }
    }

    async fn apply(&self, request: Request) -> Result<Response, OpError> {
        match request {
            Request::List { after, limit } => {
                let after = match after.as_deref().map(str::parse::<QueueId>) {
                    None => None,
                    Some(Ok(id)) => Some(id),
                    Some(Err(e)) => return Err(OpError::BadRequest(e.to_string())),
                };
                let limit = limit.unwrap_or(usize::MAX);
                let messages = self.spool.list_page(after.as_ref(), limit).await?;
                Ok(Response::Queue {
                    messages: messages.iter().map(MessageInfo::from).collect(),
                })
            }
            Request::Show { id, body } => {
                let id = self.find(&id).await?;
                let envelope = self.spool.load(&id).await?;
                let stored = self.spool.open_body(&id).await?;
                let size = envelope.size;
                let (headers, text) = blocking(move || {
                    let mut reader = io::BufReader::new(stored);
                    let headers = read_headers(&mut reader);
                    let text = body.then(|| read_text(reader, size));
                    (headers, text)
                })
                .await?;
                Ok(Response::Message {
                    message: MessageInfo::from(&envelope),
                    headers,
                    body: text,
                })
            }
            // State changes go to the runner, the one owner of a queued message; it answers
            // once the change is durable (see `queue::changes`).
            Request::Hold { id } => self.change(&id, Change::Hold).await,
            Request::Release { id } => self.change(&id, Change::Release).await,
            Request::Delete { id } => self.change(&id, Change::Delete).await,
            Request::Requeue { id } => self.change(&id, Change::Requeue).await,
            Request::Bounce { id } => self.change(&id, Change::Bounce).await,
            Request::Flush { id, domain } => self.flush(id, domain).await,
            Request::Act { action, ids } => self.act(action, ids).await,
            Request::Pickup => match &self.pickup {
                Some(pickup) => {
                    pickup.wake();
                    Ok(done(0, 0))
                }
                None => Err(OpError::Unavailable("the maildrop pickup is not running")),
            },
            Request::Reload => self.reload().await,
            Request::Watch { .. } => Err(OpError::BadRequest(
                "watch is served by the control socket only".into(),
            )),
        }
    }

    async fn reload(&self) -> Result<Response, OpError> {
        let gone = || OpError::Unavailable("this server does not reload (it is shutting down)");
        let requests = self.reload.as_ref().ok_or_else(gone)?;
        let (answer, outcome) = tokio::sync::oneshot::channel();
        requests.send(answer).await.map_err(|_| gone())?;
        match outcome.await.map_err(|_| gone())? {
            Ok(needs_restart) => Ok(Response::Reloaded { needs_restart }),
            Err(problems) => Err(OpError::Config(problems)),
        }
    }

    async fn flush(&self, id: Option<String>, domain: Option<String>) -> Result<Response, OpError> {
        let domain = domain.map(|d| d.trim().trim_start_matches('@').to_lowercase());
        if domain.as_deref() == Some("") {
            return Err(OpError::BadRequest("empty domain".into()));
        }
        let change = Change::Flush { domain };
        if let Some(id) = id {
            return self.change(&id, change).await;
        }
        // From the index alone: not held, something pending.
        let ids: Vec<QueueId> = self
            .spool
            .schedule_index()
            .await?
            .into_iter()
            .filter(|(_, next_due, held)| next_due.is_some() && !held)
            .map(|(id, _, _)| id)
            .collect();
        // Asked for together: the runner applies them in one round (one group commit).
        let mut asked = tokio::task::JoinSet::new();
        for id in ids {
            let (runner, change) = (self.runner.clone(), change.clone());
            asked.spawn(async move { runner.change(id, change).await });
        }
        let (mut messages, mut recipients) = (0, 0);
        while let Some(joined) = asked.join_next().await {
            match joined {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    messages += 1;
                    recipients += n;
                }
                // Delivered and removed, or held, meanwhile: nothing to flush.
                Ok(Err(ChangeError::NotFound(_) | ChangeError::Held(_))) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(OpError::Unavailable("a flush task failed")),
            }
        }
        Ok(done(messages, recipients))
    }

    /// `action` on each of `ids`, asked of the runner together (it applies them in one round,
    /// one group commit); a failure for one id does not stop the others.
    async fn act(&self, action: Action, ids: Vec<String>) -> Result<Response, OpError> {
        if ids.len() > MAX_ACT_IDS {
            return Err(OpError::BadRequest(format!(
                "at most {MAX_ACT_IDS} ids per request"
            )));
        }
        let change = match action {
            Action::Hold => Change::Hold,
            Action::Release => Change::Release,
            Action::Flush => Change::Flush { domain: None },
            Action::Requeue => Change::Requeue,
            Action::Bounce => Change::Bounce,
            Action::Delete => Change::Delete,
        };
        let mut asked = tokio::task::JoinSet::new();
        for (n, given) in ids.into_iter().enumerate() {
            let (control, change) = (self.clone(), change.clone());
            asked.spawn(async move {
                let result = match control.find(&given).await {
                    Ok(id) => control
                        .runner
                        .change(id.clone(), change)
                        .await
                        .map(|count| (id, count))
                        .map_err(OpError::from),
                    Err(e) => Err(e),
                };
                (n, given, result)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = asked.join_next().await {
            results.push(joined.map_err(|_| OpError::Unavailable("a queue task failed"))?);
        }
        // In the order asked, as the tools print them.
        results.sort_by_key(|(n, _, _)| *n);
        let mut acted = Acted::default();
        for (_, given, result) in results {
            match result {
                Ok((id, recipients)) => {
                    acted.messages += 1;
                    acted.recipients += recipients;
                    acted.done.push(ActedOn {
                        id: id.to_string(),
                        recipients,
                    });
                }
                Err(e) => acted.errors.push(ActError {
                    id: given,
                    error: e.to_string(),
                }),
            }
        }
        if !acted.done.is_empty() {
            info!(
                action = action.done_verb(),
                messages = acted.messages,
                recipients = acted.recipients,
                failed = acted.errors.len(),
                "queue action applied"
            );
        }
        Ok(Response::Acted(acted))
    }

    /// One change of one message (id or unique prefix), made by the runner.
    async fn change(&self, id: &str, change: Change) -> Result<Response, OpError> {
        let id = self.find(id).await?;
        let recipients = self.runner.change(id, change).await?;
        Ok(done(1, recipients))
    }

    /// A queue id from a full id or a unique prefix.
    async fn find(&self, text: &str) -> Result<QueueId, OpError> {
        let text = text.trim().to_ascii_lowercase();
        if let Ok(id) = text.parse::<QueueId>() {
            return Ok(id);
        }
        if text.len() < MIN_ID_PREFIX || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OpError::BadRequest(format!(
                "invalid queue id {text:?}: expected 32 hex digits or a unique prefix of at \
                 least {MIN_ID_PREFIX}"
            )));
        }
        let found = self.spool.ids_with_prefix(&text, 2).await?;
        let mut matching = found.into_iter();
        match (matching.next(), matching.next()) {
            (Some(id), None) => Ok(id),
            (None, _) => Err(OpError::NotFound(text)),
            (Some(_), Some(_)) => Err(OpError::BadRequest(format!(
                "queue id prefix {text:?} is ambiguous"
            ))),
        }
    }
}

fn done(messages: usize, recipients: usize) -> Response {
    Response::Done {
        messages,
        recipients,
    }
}

/// The most of a message's text `show` returns.
const MAX_TEXT: u64 = 256 * 1024;

/// The text after the header section (the reader is past it), at most [`MAX_TEXT`], then a
/// line saying how much of the `size` bytes was left out.
fn read_text(reader: impl BufRead, size: u64) -> String {
    let mut bytes = Vec::new();
    let _ = reader.take(MAX_TEXT).read_to_end(&mut bytes);
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if bytes.len() as u64 == MAX_TEXT && size > MAX_TEXT {
        text.push_str(&format!(
            "\r\n[... the rest of the {size}-byte message is not shown]\r\n"
        ));
    }
    text
}

/// The header section of a message: up to the first empty line, at most [`MAX_HEADERS`];
/// `body` is left just after that line.
fn read_headers(body: &mut impl BufRead) -> String {
    let mut bytes = Vec::new();
    let mut reader = body.take(MAX_HEADERS);
    loop {
        let start = bytes.len();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = &bytes[start..];
                if line == b"\r\n" || line == b"\n" {
                    bytes.truncate(start);
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        OpError::Spool(SpoolError::CommitFailed {
            reason: format!("task failed: {e}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;
    use yizhan_delivery::maildir::Maildir;
    use yizhan_delivery::mx::{DnsError, FakeResolver};
    use yizhan_spool::{ClientInfo, Envelope, Recipient, RecipientStatus, Spool};

    use super::*;
    use crate::queue::{QueueRunner, RunnerSettings, SystemClock, make_due};

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    #[test]
    fn requests_round_trip_as_json_lines() {
        let id = "0190f2c4a1b27c3d8e9f00112233aabb".to_string();
        let cases = [
            (
                Request::List {
                    after: None,
                    limit: None,
                },
                r#"{"op":"list"}"#,
            ),
            (
                Request::Show {
                    id: id.clone(),
                    body: false,
                },
                r#"{"op":"show","id":"0190f2c4a1b27c3d8e9f00112233aabb"}"#,
            ),
            (
                Request::Show {
                    id: id.clone(),
                    body: true,
                },
                r#"{"op":"show","id":"0190f2c4a1b27c3d8e9f00112233aabb","body":true}"#,
            ),
            (
                Request::Flush {
                    id: None,
                    domain: None,
                },
                r#"{"op":"flush"}"#,
            ),
            (
                Request::Flush {
                    id: None,
                    domain: Some("test.example".into()),
                },
                r#"{"op":"flush","domain":"test.example"}"#,
            ),
            (
                Request::Hold { id: id.clone() },
                r#"{"op":"hold","id":"0190f2c4a1b27c3d8e9f00112233aabb"}"#,
            ),
            (
                Request::Release { id: id.clone() },
                r#"{"op":"release","id":"0190f2c4a1b27c3d8e9f00112233aabb"}"#,
            ),
            (
                Request::Delete { id },
                r#"{"op":"delete","id":"0190f2c4a1b27c3d8e9f00112233aabb"}"#,
            ),
            (Request::Pickup, r#"{"op":"pickup"}"#),
        ];
        for (request, json) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), json);
            assert_eq!(serde_json::from_str::<Request>(json).unwrap(), request);
        }
        for bad in [
            r#"{"op":"explode"}"#,
            r#"{"op":"hold"}"#,
            r#"{"op":"hold","id":"x","y":1}"#,
            "list",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let responses = [
            (
                Response::Done {
                    messages: 1,
                    recipients: 2,
                },
                r#"{"result":"done","messages":1,"recipients":2}"#,
            ),
            (
                Response::Error {
                    kind: ErrorKind::NotFound,
                    message: "no".into(),
                },
                r#"{"result":"error","kind":"not_found","message":"no"}"#,
            ),
            (
                Response::Queue { messages: vec![] },
                r#"{"result":"queue","messages":[]}"#,
            ),
        ];
        for (response, json) in responses {
            assert_eq!(serde_json::to_string(&response).unwrap(), json);
            assert_eq!(serde_json::from_str::<Response>(json).unwrap(), response);
        }
    }

    fn envelope(recipients: Vec<Recipient>) -> Envelope {
        Envelope {
            id: "00000000000000000000000000000000".parse().unwrap(),
            received_at: 100,
            size: 0,
            reverse_path: "<sender@test.example>".parse().unwrap(),
            envid: None,
            ret: None,
            body: None,
            smtputf8: false,
            client: ClientInfo::default(),
            recipients,
            held: false,
        }
    }

    #[test]
    fn make_due_moves_pending_recipients_of_the_domain_forward() {
        let later = 10_000;
        let mut delivered = Recipient::to("c@a.example".parse().unwrap(), None, later);
        delivered.status = RecipientStatus::Delivered {
            at: 1,
            detail: "x".into(),
        };
        let recipients = vec![
            Recipient::pending(
                "a@A.example".parse().unwrap(),
                "<a@a.example>".parse().unwrap(),
                None,
                later,
            ),
            Recipient::to("b@b.example".parse().unwrap(), None, later),
            Recipient::to("early@a.example".parse().unwrap(), None, 50),
            delivered,
        ];
        let cases: [(Option<&str>, usize, [i64; 3]); 3] = [
            (Some("a.example"), 2, [500, later, 50]),
            (Some("b.example"), 1, [later, 500, 50]),
            (None, 3, [500, 500, 50]),
        ];
        for (domain, n, want) in cases {
            let mut env = envelope(recipients.clone());
            assert_eq!(make_due(&mut env, domain, 500), n, "{domain:?}");
            let got: Vec<i64> = env.recipients[..3].iter().map(|r| r.next_attempt).collect();
            assert_eq!(got, want, "{domain:?}");
            assert_eq!(env.recipients[3].status, recipients[3].status);
        }
    }

    #[test]
    fn read_headers_stops_at_the_empty_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 3] = [
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n"),
            (b"A: 1\r\n", "A: 1\r\n"),
            (b"", ""),
        ];
        for (i, (body, want)) in cases.into_iter().enumerate() {
            let path = dir.path().join(i.to_string());
            fs::write(&path, body).unwrap();
            assert_eq!(
                read_headers(&mut io::BufReader::new(fs::File::open(&path).unwrap())),
                want
            );
        }
    }

    /// A live spool with a control socket in front of it (no runner task: nothing moves unless
    /// the test moves it).
    struct Live {
        dir: tempfile::TempDir,
        spool: Spool,
        socket: PathBuf,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Live {
        async fn start() -> Live {
            let dir = tempfile::tempdir().unwrap();
            let (spool, _) = Spool::open(&dir.path().join("spool")).unwrap();
            // Name servers that always fail: a flushed message is deferred, never bounced.
            let mut dns = FakeResolver::default();
            for domain in ["a.example", "b.example"] {
                let failure = DnsError::Transient {
                    name: domain.into(),
                    reason: "SERVFAIL".into(),
                };
                dns.mx.insert(domain.into(), Err(failure));
            }
            let runner = QueueRunner::new(
                spool.clone(),
                Maildir::new(dir.path().join("mail")),
                RunnerSettings::default(),
                Arc::new(SystemClock),
            )
            .with_resolver(Arc::new(dns));
            let control = Control::new(Arc::new(spool.clone()), runner.handle(), None);
            let socket = socket_path(dir.path());
            let shutdown = CancellationToken::new();
            tokio::spawn(runner.run(shutdown.clone()));
            let task = tokio::spawn(serve_control(socket.clone(), control, shutdown.clone()));
            while !socket.exists() {
                tokio::task::yield_now().await;
            }
            Live {
                dir,
                spool,
                socket,
                shutdown,
                task,
            }
        }

        async fn queue(&self, to: &[&str], due: i64) -> QueueId {
            let mut incoming = self.spool.create().unwrap();
            incoming.write(b"Subject: test\r\n\r\nbody\r\n").unwrap();
            let recipients = to
                .iter()
                .map(|a| Recipient::to(a.parse().unwrap(), None, due))
                .collect();
            let mut envelope = envelope(recipients);
            envelope.received_at = now();
            self.spool.commit(incoming, envelope).await.unwrap()
        }

        async fn ask(&self, request: Request) -> Response {
            let socket = self.socket.clone();
            tokio::task::spawn_blocking(move || {
                super::request(&socket, &request, Duration::from_secs(10))
            })
            .await
            .unwrap()
            .unwrap()
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.unwrap().unwrap();
            assert!(!self.socket.exists(), "socket removed at shutdown");
        }
    }

    fn error_kind(response: &Response) -> Option<ErrorKind> {
        match response {
            Response::Error { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[tokio::test]
    async fn hold_release_flush_delete_on_a_live_spool() {
        let live = Live::start().await;
        let mode = fs::metadata(&live.socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let far = now() + 86_400;
        let a = live.queue(&["x@a.example", "y@b.example"], far).await;
        let b = live.queue(&["z@b.example"], far).await;

        let Response::Queue { messages } = live
            .ask(Request::List {
                after: None,
                limit: None,
            })
            .await
        else {
            panic!()
        };
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, [a.as_str(), b.as_str()]);

        // hold, by unique prefix (ids differ in their last digits; use the full id's prefix
        // of 31 digits, which is unique).
        let prefix = &a.as_str()[..31];
        assert_eq!(
            live.ask(Request::Hold { id: prefix.into() }).await,
            done(1, 2)
        );
        assert!(live.spool.load(&a).unwrap().held);
        assert!(
            live.spool
                .due(i64::MAX, 10)
                .unwrap()
                .iter()
                .all(|e| e.id != a)
        );
        // A held message is not flushed, alone or in bulk.
        let held = live
            .ask(Request::Flush {
                id: Some(a.to_string()),
                domain: None,
            })
            .await;
        assert_eq!(error_kind(&held), Some(ErrorKind::Held));
        assert_eq!(
            live.ask(Request::Flush {
                id: None,
                domain: None
            })
            .await,
            done(1, 1)
        );
        assert_eq!(live.spool.load(&a).unwrap().recipients[0].next_attempt, far);
        let flushed = live.spool.load(&b).unwrap().recipients[0].clone();
        // Due now, or already tried by the runner (and deferred again).
        assert!(flushed.next_attempt <= now() || flushed.attempts > 0);

        // release: due now.
        assert_eq!(
            live.ask(Request::Release { id: a.to_string() }).await,
            done(1, 2)
        );
        let env = live.spool.load(&a).unwrap();
        assert!(!env.held);
        assert!(
            env.recipients
                .iter()
                .all(|r| r.next_attempt <= now() || r.attempts > 0)
        );

        // show: envelope and headers.
        let Response::Message {
            message, headers, ..
        } = live
            .ask(Request::Show {
                id: a.to_string(),
                body: false,
            })
            .await
        else {
            panic!()
        };
        assert_eq!(message.recipients.len(), 2);
        assert_eq!(headers, "Subject: test\r\n");

        // delete: gone from the spool, body too.
        assert_eq!(
            live.ask(Request::Delete { id: b.to_string() }).await,
            done(1, 1)
        );
        assert!(matches!(live.spool.load(&b), Err(SpoolError::NotFound(_))));
        assert!(!live.spool.body_path(&b).exists());
        let again = live.ask(Request::Delete { id: b.to_string() }).await;
        assert_eq!(error_kind(&again), Some(ErrorKind::NotFound));
        live.stop().await;
    }

    #[tokio::test]
    async fn bad_requests_are_answered_and_the_connection_goes_on() {
        let live = Live::start().await;
        let cases = [
            (
                Request::Show {
                    id: "nonsense".into(),
                    body: false,
                },
                ErrorKind::BadRequest,
            ),
            (
                Request::Show {
                    id: "abc".into(),
                    body: false,
                },
                ErrorKind::BadRequest,
            ),
            (Request::Hold { id: "0".repeat(32) }, ErrorKind::NotFound),
            (
                Request::Hold {
                    id: "0123456".into(),
                },
                ErrorKind::NotFound,
            ),
            (
                Request::Flush {
                    id: None,
                    domain: Some(" ".into()),
                },
                ErrorKind::BadRequest,
            ),
            (Request::Pickup, ErrorKind::Unavailable),
        ];
        for (request, kind) in cases {
            let answer = live.ask(request.clone()).await;
            assert_eq!(error_kind(&answer), Some(kind), "{request:?}");
        }
        // Raw lines on one connection: garbage, then a good request, answered in order.
        let socket = live.socket.clone();
        let lines = tokio::task::spawn_blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            stream.write_all(b"not json\n{\"op\":\"list\"}\n").unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text
        })
        .await
        .unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with(r#"{"result":"error","kind":"bad_request""#));
        assert_eq!(lines[1], r#"{"result":"queue","messages":[]}"#);
        let _ = &live.dir;
        live.stop().await;
    }

    #[test]
    fn client_says_when_the_server_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("control.sock");
        let list = Request::List {
            after: None,
            limit: None,
        };
        let err = request(&missing, &list, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));
        // A stale socket file nobody listens on: connection refused, same answer.
        drop(std::os::unix::net::UnixListener::bind(&missing).unwrap());
        let err = request(&missing, &list, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
    }
}
