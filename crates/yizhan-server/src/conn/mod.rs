//! One connection: the client's byte stream on one side, a [`ServerSession`] on the other.
//!
//! This is the only place that writes to a client. It reads with the RFC 5321 4.5.3.2
//! timeouts, feeds the session, answers its questions through [`crate::policy`] and
//! [`crate::auth`], streams message data into the spool and sends `250` after DATA only once
//! [`Spool::commit`] has made the message durable.
//!
//! The code is generic over the stream (`AsyncRead + AsyncWrite`): a TCP socket from
//! [`crate::listener`], or an in-memory pipe in tests, with the peer's and the listener's
//! addresses passed in as values. The stream is plain or TLS (`Stream`): implicit TLS
//! (RFC 8314) shakes hands before the greeting; STARTTLS (RFC 3207) upgrades the same stream
//! when the session emits [`Event::StartTls`], after which the session has discarded every
//! plaintext byte it held and the client must EHLO again. AUTH (RFC 4954) payloads and
//! passwords never reach a log.

mod answer;
mod checks;
mod data;
mod session_auth;
mod stream;
mod terminal;
mod turn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use yizhan_proto::address::{ForwardPath, Host, Mailbox};
use yizhan_proto::command::MailKind;
use yizhan_proto::reply::Reply;
use yizhan_proto::server::{Decision, Event, Phase, Question, ServerSession, Transaction};
use yizhan_spool::{ClientInfo, Envelope, Incoming, Intake, Origin, QueueId, Recipient};

use crate::auth::{self, Credentials, Exchange, Mechanism, Step};
use crate::directory::Target;
use crate::limits::Event as Limited;
use crate::policy::{self, Client, ListenerPolicy};
use crate::queue::RunnerHandle;
use crate::settings::{ListenerKind, Settings};
use crate::tls::{self, TlsStore};
use crate::trace::HopCounter;
use stream::Stream;

/// What every connection shares: one configuration in force with what is derived from it. A
/// reload makes a new one ([`crate::reload`]); each session keeps the one it was accepted
/// under until it ends.
#[derive(Debug)]
pub struct Shared {
    /// The settings.
    pub settings: Arc<Settings>,
    /// Each listener's policy, in the order of [`Settings::listeners`].
    pub policies: Vec<Arc<ListenerPolicy>>,
    /// The spool.
    pub spool: Intake,
    /// Wakes the queue runner after a commit.
    pub runner: RunnerHandle,
    /// The TLS certificate in use, if TLS is configured.
    pub tls: Option<Arc<TlsStore>>,
    /// The password hashes, shared with the blocking verifier threads.
    pub credentials: Arc<Credentials>,
    /// The bound on password checks running at once.
    pub password_checks: Arc<auth::PasswordChecks>,
    /// Rate limits per client address.
    pub limits: Arc<crate::limits::RateLimits>,
    /// What runs the inbound checks (`None`: DNS could not be set up; checked mail is then
    /// deferred, never passed).
    pub checker: Option<Arc<crate::checks::Checker>>,
    /// The memory all sessions together may use for messages kept whole (to be signed or
    /// checked), in KiB (`[smtp] max_held_bytes`; fixed at start).
    pub held_budget: Arc<tokio::sync::Semaphore>,
}

/// A budget of `bytes` (in KiB permits) for messages kept whole: beyond it, a message to be
/// checked is answered 451 (try later) and one to be signed goes unsigned, so memory stays
/// bounded however many large messages arrive at once.
pub fn held_budget(bytes: u64) -> Arc<tokio::sync::Semaphore> {
    let kib = usize::try_from(bytes.div_ceil(1024)).unwrap_or(usize::MAX);
    Arc::new(tokio::sync::Semaphore::new(
        kib.min(tokio::sync::Semaphore::MAX_PERMITS),
    ))
}

/// Serves one connection to a listener until it closes: `stream` is any byte stream (a TCP
/// socket the listener accepted, or an in-memory pipe), `peer` the client's address and `local`
/// the listener's, given as values since the stream need not be a socket.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    session_id: u64,
    shared: Arc<Shared>,
    listener: Arc<ListenerPolicy>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!(
        "session",
        id = session_id,
        peer = %peer,
        local = %local,
        listener = %listener.kind
    );
    async move {
        info!("connect");
        let kind = listener.kind.as_str();
        crate::metrics::connection_opened(kind);
        // Counted closed however the task ends (an early return on a TLS failure too).
        let _open = scopeguard_closed(kind);
        let mut tls_info = None;
        let stream = if listener.kind == ListenerKind::Submissions {
            // RFC 8314 3.3: the TLS handshake comes first; the greeting is sent inside TLS.
            let Some(store) = shared.tls.clone() else {
                warn!("implicit TLS listener without a certificate");
                return;
            };
            let timeout = listener.smtp.timeouts.command;
            // Boxed, like every rare and large future here, so that the task of every connection
            // stays small (an idle connection costs its task).
            let accept = Box::pin(tokio::time::timeout(
                timeout,
                store.acceptor().accept(stream),
            ));
            match accept.await {
                Ok(Ok(tls_stream)) => {
                    let described = tls::describe(tls_stream.get_ref().1);
                    info!(tls = %described, "TLS established (implicit)");
                    tls_info = Some(described);
                    Stream::Tls(Box::new(tls_stream))
                }
                Ok(Err(error)) => {
                    crate::metrics::tls_handshake("failed".into());
                    info!(%error, reason = "TLS handshake failed", "disconnect");
                    return;
                }
                Err(_) => {
                    info!(reason = "TLS handshake timed out", "disconnect");
                    return;
                }
            }
        } else {
            Stream::Plain(stream)
        };
        let config =
            policy::server_config(&shared.settings.hostname, &listener, tls_info.is_some());
        let trusted = policy::is_trusted(&listener.smtp, peer.ip());
        let exempt = policy::is_limit_exempt(&listener.smtp, peer.ip());
        let live = shared.runner.events().session(session_id, peer, kind);
        let mut session = ServerSession::new(config);
        let record = &shared.settings.record;
        let recording = record.wants(listener.record, peer.ip()).then(|| {
            let max = record.max_session_bytes;
            // The text kept is cut where the recording would be cut anyway.
            let text_limit = usize::try_from(max).unwrap_or(usize::MAX);
            session.record(record.bodies.then_some(text_limit));
            let mut recording = crate::record::Recording::start(session_id, peer, local, kind, max);
            if let Some(tls) = &tls_info {
                recording.add(vec![yizhan_proto::transcript::Said::Note(format!(
                    "TLS established (implicit): {tls}"
                ))]);
            }
            recording
        });
        live.update(|v| v.tls.clone_from(&tls_info));
        let mut conn = Connection {
            live,
            stream,
            peer,
            session,
            recording,
            shared,
            listener,
            incoming: None,
            write_failed: false,
            hops: HopCounter::new(),
            held: None,
            held_permit: None,
            over_budget: false,
            header: None,
            spf: None,
            data_deadline: None,
            started: tokio::time::Instant::now(),
            bytes_in: 0,
            exempt,
            shutdown,
            tls_info,
            trusted,
            auth: None,
            auth_failures: 0,
            user: None,
            terminal_copy: None,
            accepted: HashMap::new(),
        };
        let reason = conn.run().await;
        // The last commands (QUIT) end the loop before it counts them.
        conn.count_commands();
        conn.live.ended(reason);
        if let Some(mut recording) = conn.recording.take() {
            recording.add(conn.session.take_transcript());
            info!(recording = recording.id(), "session recorded");
            let settings = &conn.shared.settings;
            recording.save(&settings.data_dir, &settings.record);
        }
        info!(reason, "disconnect");
    }
    .instrument(span)
    .await
}

/// How long a session that was busy when the shutdown began may take, after its last reply,
/// to send QUIT (answered 221) before it is told 421.
const QUIT_LINGER: Duration = Duration::from_secs(2);

/// Counts the connection closed when dropped.
fn scopeguard_closed(kind: &'static str) -> impl Drop {
    struct Closed(&'static str);
    impl Drop for Closed {
        fn drop(&mut self) {
            crate::metrics::connection_closed(self.0);
        }
    }
    Closed(kind)
}

/// Which limit ends a wait for the client ([`Connection::read_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// The command or data block timeout.
    Read,
    /// `data_termination_timeout`.
    WholeData,
    /// `session_lifetime`.
    Session,
}

/// Answers `421` to a connection refused before a session starts (too many connections).
pub async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, reply: Reply) {
    let mut bytes = Vec::new();
    // With its enhanced code (421 4.7.0): the client has not said EHLO, but RFC 2034 does not
    // forbid it and an administrator reading a client's log learns more.
    reply.write_to(&mut bytes, true);
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&bytes)).await;
    let _ = stream.shutdown().await;
}

struct Connection<S> {
    /// This session in the console's list of live sessions.
    live: crate::events::SessionEntry,
    /// The recording of this session, when `[record]` or the listener asks for one.
    recording: Option<crate::record::Recording>,
    stream: Stream<S>,
    peer: SocketAddr,
    session: ServerSession,
    shared: Arc<Shared>,
    listener: Arc<ListenerPolicy>,
    /// The spool writer of the message being received, if data has started.
    incoming: Option<Incoming>,
    /// Writing the body to the spool failed: the end of data answers 451.
    write_failed: bool,
    /// The `Received:` fields of the message being received (RFC 5321 6.3).
    hops: HopCounter,
    /// The message as received, when it is to be DKIM-signed (our own user's mail, when a
    /// key exists) or checked (DKIM, ARC, DMARC) before it is stored: both read the whole
    /// message, so it is kept here until the end of data instead of going straight to the
    /// spool. Anyone else's streams to the spool.
    held: Option<(data::Hold, Vec<u8>)>,
    /// The share of [`Shared::held_budget`] the held message takes (KiB), given back with it.
    held_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// A message to be checked outgrew [`Shared::held_budget`]: answered 451 at its end.
    over_budget: bool,
    /// The header section of a streamed message, until its end (with how far it was scanned):
    /// written then without forged `Authentication-Results` fields under our name.
    header: Option<(Vec<u8>, usize)>,
    /// The SPF results of this transaction (checked clients only), found at MAIL.
    spf: Option<crate::checks::SpfVerdict>,
    /// When the message data (DATA, or all BDAT chunks together) must have ended:
    /// `data_termination_timeout` after it started.
    data_deadline: Option<tokio::time::Instant>,
    /// When the session began (`session_lifetime`).
    started: tokio::time::Instant,
    /// Bytes read from the client so far (`max_session_bytes`).
    bytes_in: u64,
    /// The client is in `limit_exceptions`: no session lifetime or byte quota.
    exempt: bool,
    shutdown: CancellationToken,
    /// TLS version and cipher once TLS is active.
    tls_info: Option<String>,
    /// The client is in `relay_networks`.
    trusted: bool,
    /// The SASL exchange in progress.
    auth: Option<Exchange>,
    /// Failed AUTH attempts on this connection.
    auth_failures: u32,
    /// The authenticated user (canonical address).
    user: Option<String>,
    /// The start of a SEND, SOML or SAML message, for the users' terminals (at most
    /// `events::MAX_TERMINAL_TEXT` bytes).
    terminal_copy: Option<Vec<u8>>,
    /// What each recipient accepted in this transaction is queued as, decided at RCPT time
    /// (by forward-path as given).
    accepted: HashMap<String, Vec<Target>>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Counts the commands the session read (every one, NOOP, RSET and QUIT too) and shows
    /// the last in the live view, with the HELO name.
    fn count_commands(&mut self) {
        if let Some(recording) = self.recording.as_mut() {
            recording.add(self.session.take_transcript());
        }
        let mut last = None;
        let mut n = 0;
        for verb in self.session.take_commands() {
            crate::metrics::command(verb);
            last = Some(verb);
            n += 1;
        }
        if n > 0 {
            let helo = self.session.helo();
            self.live.update(|v| {
                v.commands += n;
                v.command = last;
                if v.helo.is_none() {
                    v.helo = helo.map(ToString::to_string);
                }
            });
        }
    }

    /// Runs the session; returns why it ended, for the log.
    async fn run(&mut self) -> &'static str {
        let mut shutting_down = false;
        let mut grace = None;
        // A session busy when the shutdown began gets a moment after its last reply for the
        // QUIT a client sends next (answered 221), rather than a 421 racing it.
        let mut busy_at_shutdown = false;
        let mut linger: Option<tokio::time::Instant> = None;
        loop {
            while let Some(event) = self.session.next_event() {
                match event {
                    Event::Send(bytes) => {
                        crate::metrics::replies_sent(&bytes);
                        let smtp = &self.listener.smtp;
                        if self.session.errors() >= smtp.soft_error_limit {
                            // A client making many errors is slowed down (Postfix's
                            // smtpd_error_sleep_time), not served at full speed.
                            tokio::time::sleep(smtp.error_sleep).await;
                        }
                        let timeout = self.listener.smtp.timeouts.command;
                        match tokio::time::timeout(timeout, self.stream.write_all(&bytes)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) | Err(_) => return "write failed",
                        }
                    }
                    Event::Ask(question) => {
                        self.count_commands();
                        let decision = self.answer(question).await;
                        self.session.decide(decision);
                    }
                    Event::Body(chunk) => self.body(&chunk),
                    Event::DataAborted => {
                        self.incoming = None;
                        self.terminal_copy = None;
                        self.held = None;
                        self.held_permit = None;
                        self.header = None;
                        self.write_failed = false;
                        self.data_deadline = None;
                    }
                    Event::StartTls => {
                        if let Err(reason) = Box::pin(self.start_tls()).await {
                            return reason;
                        }
                    }
                    Event::Turn => return Box::pin(self.turn()).await,
                    Event::Close => {
                        let _ = self.stream.shutdown().await;
                        return if shutting_down { "shutdown" } else { "closed" };
                    }
                }
            }
            self.count_commands();
            if shutting_down && self.session.is_idle() {
                let now = tokio::time::Instant::now();
                match linger {
                    None if busy_at_shutdown => linger = Some(now + QUIT_LINGER),
                    Some(until) if now < until => {}
                    _ => {
                        let host = self.shared.settings.hostname.clone();
                        self.session.close_with(Reply::shutting_down(&host));
                        continue;
                    }
                }
            }
            let (timeout, expiry) = self.read_timeout();
            tokio::select! {
                read = tokio::time::timeout(
                    timeout,
                    self.stream.read_into(&mut self.session),
                ) => match read {
                    Ok(Ok(0)) => return "client closed the connection",
                    Ok(Ok(n)) => self.count_bytes(n),
                    Ok(Err(_)) => return "read failed",
                    Err(_) => self.expired(expiry),
                },
                _ = self.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    busy_at_shutdown = !self.session.is_idle();
                    grace = Some(tokio::time::Instant::now() + self.shared.settings.shutdown_grace);
                }
                _ = sleep_until(linger), if linger.is_some() => {}
                _ = sleep_until(grace), if grace.is_some() => {
                    let host = self.shared.settings.hostname.clone();
                    self.session.close_with(Reply::shutting_down(&host));
                    grace = None;
                }
            }
        }
    }

    /// How long to wait for the client's next bytes, and which limit ends that wait: one
    /// read's timeout, the `data_termination_timeout` (the whole message), or the session's
    /// lifetime.
    fn read_timeout(&self) -> (Duration, Expiry) {
        let smtp = &self.listener.smtp;
        let read = match self.session.phase() {
            Phase::Data => smtp.timeouts.data_block,
            _ => smtp.timeouts.command,
        };
        let now = tokio::time::Instant::now();
        let mut wait = (read, Expiry::Read);
        if let Some(deadline) = self.data_deadline {
            let left = deadline.saturating_duration_since(now);
            if left < wait.0 {
                wait = (left, Expiry::WholeData);
            }
        }
        let left = (self.started + smtp.session_lifetime).saturating_duration_since(now);
        if left < wait.0 && !self.exempt {
            wait = (left, Expiry::Session);
        }
        wait
    }

    /// A wait for the client ran out: 421 and close, with the reason logged.
    fn expired(&mut self, expiry: Expiry) {
        let smtp = &self.listener.smtp;
        let host = self.shared.settings.hostname.clone();
        let reply = match expiry {
            Expiry::Read => {
                warn!("timeout");
                Reply::timeout(&host)
            }
            Expiry::WholeData => {
                warn!(limit = ?smtp.timeouts.data_termination, "timeout: the message data took too long");
                Reply::timeout(&host)
            }
            Expiry::Session => {
                warn!(limit = ?smtp.session_lifetime, "session lifetime reached; closing");
                Reply::session_limit(&host, "time")
            }
        };
        self.session.close_with(reply);
    }

    /// Counts bytes read from the client against `max_session_bytes`.
    fn count_bytes(&mut self, n: usize) {
        self.bytes_in = self.bytes_in.saturating_add(n as u64);
        let quota = self.listener.smtp.max_session_bytes;
        if self.bytes_in > quota && !self.exempt {
            warn!(
                bytes = self.bytes_in,
                quota, "session byte quota reached; closing"
            );
            let host = self.shared.settings.hostname.clone();
            self.session.close_with(Reply::session_limit(&host, "size"));
        }
    }

    /// The STARTTLS handshake on the same socket (RFC 3207 4.2); the session forgets
    /// everything learned before it, and so does the connection.
    async fn start_tls(&mut self) -> Result<(), &'static str> {
        let Some(store) = self.shared.tls.clone() else {
            return Err("STARTTLS without a certificate");
        };
        let Stream::Plain(plain) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err("STARTTLS on a TLS stream");
        };
        let timeout = self.listener.smtp.timeouts.command;
        match tokio::time::timeout(timeout, store.acceptor().accept(plain)).await {
            Ok(Ok(tls_stream)) => {
                let described = tls::describe(tls_stream.get_ref().1);
                info!(tls = %described, "TLS established (STARTTLS)");
                self.live.update(|v| v.tls = Some(described.clone()));
                self.session
                    .note(format!("TLS established (STARTTLS): {described}"));
                self.tls_info = Some(described);
                self.stream = Stream::Tls(Box::new(tls_stream));
                self.session.tls_established();
                self.auth = None;
                self.user = None;
                Ok(())
            }
            Ok(Err(error)) => {
                crate::metrics::tls_handshake("failed".into());
                info!(%error, "TLS handshake failed");
                Err("TLS handshake failed")
            }
            Err(_) => Err("TLS handshake timed out"),
        }
    }

    /// The client as the relay policy sees it.
    fn client(&self) -> Client<'_> {
        Client {
            user: self.user.as_deref(),
            trusted: self.trusted,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
