//! One connection: the socket on one side, a [`ServerSession`] on the other.
//!
//! This is the only place that writes to a client socket. It reads with the RFC 5321 4.5.3.2
//! timeouts, feeds the session, answers its questions through [`crate::policy`], streams message
//! data into the spool and sends `250` after DATA only once [`Spool::commit`] has made the
//! message durable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use yizhan_proto::address::{ForwardPath, Host, ReversePath};
use yizhan_proto::command::{Body, MailKind, Ret};
use yizhan_proto::reply::Reply;
use yizhan_proto::server::{Decision, Event, Phase, Question, ServerSession, Transaction};
use yizhan_spool::{
    ClientInfo, Envelope, Incoming, LocalMailbox, QueueId, Recipient, RecipientStatus, Spool,
};

use crate::directory::{Resolution, Target};
use crate::policy;
use crate::queue_runner::RunnerHandle;
use crate::settings::Settings;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The settings, snapshotted by each session at accept.
    pub settings: Arc<Settings>,
    /// The spool.
    pub spool: Spool,
    /// Wakes the queue runner after a commit.
    pub runner: RunnerHandle,
}

/// Serves one accepted connection until it closes.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    session_id: u64,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("session", id = session_id, peer = %peer);
    async move {
        info!("connect");
        let mut conn = Connection {
            stream,
            peer,
            session: ServerSession::new(policy::server_config(&shared.settings, false)),
            shared,
            incoming: None,
            write_failed: false,
            shutdown,
        };
        let reason = conn.run().await;
        info!(reason, "disconnect");
    }
    .instrument(span)
    .await
}

/// Answers `421` to a connection refused before a session starts (too many connections).
pub async fn refuse(mut stream: TcpStream, reply: Reply) {
    let mut bytes = Vec::new();
    reply.write_to(&mut bytes, false);
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.write_all(&bytes)).await;
    let _ = stream.shutdown().await;
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    session: ServerSession,
    shared: Arc<Shared>,
    /// The spool writer of the message being received, if data has started.
    incoming: Option<Incoming>,
    /// Writing the body to the spool failed: the end of data answers 451.
    write_failed: bool,
    shutdown: CancellationToken,
}

impl Connection {
    /// Runs the session; returns why it ended, for the log.
    async fn run(&mut self) -> &'static str {
        let mut buf = vec![0u8; 16 * 1024];
        let mut shutting_down = false;
        let mut grace = None;
        loop {
            while let Some(event) = self.session.next_event() {
                match event {
                    Event::Send(bytes) => {
                        let timeout = self.shared.settings.smtp.timeouts.command;
                        match tokio::time::timeout(timeout, self.stream.write_all(&bytes)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) | Err(_) => return "write failed",
                        }
                    }
                    Event::Ask(question) => {
                        let decision = self.answer(question).await;
                        self.session.decide(decision);
                    }
                    Event::Body(chunk) => self.body(&chunk),
                    Event::DataAborted => {
                        self.incoming = None;
                        self.write_failed = false;
                    }
                    Event::StartTls | Event::Turn => {
                        // Not offered by this version; the session never emits them here.
                        return "unsupported";
                    }
                    Event::Close => {
                        let _ = self.stream.shutdown().await;
                        return if shutting_down { "shutdown" } else { "closed" };
                    }
                }
            }
            if shutting_down && self.session.is_idle() {
                let host = self.shared.settings.hostname.clone();
                self.session.close_with(Reply::shutting_down(&host));
                continue;
            }
            let timeouts = &self.shared.settings.smtp.timeouts;
            let timeout = match self.session.phase() {
                Phase::Data => timeouts.data_block,
                _ => timeouts.command,
            };
            tokio::select! {
                read = tokio::time::timeout(timeout, self.stream.read(&mut buf)) => match read {
                    Ok(Ok(0)) => return "client closed the connection",
                    Ok(Ok(n)) => self.session.receive(&buf[..n]),
                    Ok(Err(_)) => return "read failed",
                    Err(_) => {
                        warn!("timeout");
                        let host = self.shared.settings.hostname.clone();
                        self.session.close_with(Reply::timeout(&host));
                    }
                },
                _ = self.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    grace = Some(tokio::time::Instant::now() + self.shared.settings.shutdown_grace);
                }
                _ = sleep_until(grace), if grace.is_some() => {
                    let host = self.shared.settings.hostname.clone();
                    self.session.close_with(Reply::shutting_down(&host));
                    grace = None;
                }
            }
        }
    }

    fn body(&mut self, chunk: &[u8]) {
        if self.write_failed {
            return;
        }
        if let Some(incoming) = self.incoming.as_mut()
            && let Err(error) = incoming.write(chunk)
        {
            warn!(%error, "spool write failed");
            self.write_failed = true;
        }
    }

    async fn answer(&mut self, question: Question) -> Decision {
        let settings = &self.shared.settings;
        let directory = &settings.directory;
        match question {
            Question::Helo { host, extended } => {
                debug!(%host, extended, "helo");
                Decision::Accept
            }
            Question::Mail { kind, from, params } => {
                info!(from = %from, ?kind, size = ?params.size, "mail");
                policy::mail(&from)
            }
            Question::Rcpt { to, .. } => {
                let kind = self
                    .session
                    .transaction()
                    .map_or(MailKind::Mail, |tx| tx.kind);
                let decision = policy::rcpt(directory, kind, &to);
                if let ForwardPath::Path(path) = &to
                    && !path.route.is_empty()
                {
                    info!(route = ?path.route.iter().map(|d| d.to_string()).collect::<Vec<_>>(), "source route given; delivering to the mailbox");
                }
                match &decision {
                    Decision::Accept => info!(to = %to, "rcpt accepted"),
                    Decision::Reply(reply) | Decision::Close(reply) => {
                        info!(to = %to, code = reply.code, "rcpt {}", if reply.is_positive() { "accepted" } else { "rejected" })
                    }
                }
                decision
            }
            Question::Vrfy(query) => policy::vrfy(directory, settings.smtp.vrfy, &query),
            Question::Expn(query) => policy::expn(directory, settings.smtp.expn, &query),
            Question::Data => self.start_data(),
            Question::EndOfData { transaction, size } => self.end_of_data(transaction, size).await,
            Question::Auth { .. } | Question::AuthResponse(_) => {
                Decision::Reply(Reply::not_implemented("AUTH"))
            }
            Question::Etrn(_) => Decision::Reply(Reply::not_implemented("ETRN")),
            Question::Turn => Decision::Reply(Reply::turn_refused()),
        }
    }

    /// Opens the spool writer and writes the `Received:` line (RFC 5321 4.4) first.
    fn start_data(&mut self) -> Decision {
        self.write_failed = false;
        let mut incoming = match self.shared.spool.create() {
            Ok(incoming) => incoming,
            Err(error) => {
                warn!(%error, "cannot create a spool file");
                return Decision::Reply(Reply::local_error());
            }
        };
        let received = self.received_line(incoming.id().as_str());
        if let Err(error) = incoming.write(received.as_bytes()) {
            warn!(%error, "spool write failed");
            return Decision::Reply(Reply::local_error());
        }
        self.incoming = Some(incoming);
        Decision::Accept
    }

    async fn end_of_data(&mut self, transaction: Transaction, size: u64) -> Decision {
        let Some(incoming) = self.incoming.take() else {
            return Decision::Reply(Reply::local_error());
        };
        if std::mem::take(&mut self.write_failed) {
            return Decision::Reply(Reply::local_error());
        }
        let envelope = self.envelope(incoming.id().clone(), &transaction, size);
        let recipients = envelope.recipients.len();
        match self.shared.spool.commit(incoming, envelope).await {
            Ok(id) => {
                info!(queue_id = %id, size, recipients, "queued");
                self.shared.runner.wake();
                Decision::Reply(Reply::queued(id.as_str()))
            }
            Err(error) => {
                warn!(%error, "commit failed; answering 451");
                Decision::Reply(Reply::local_error())
            }
        }
    }

    /// The spool envelope for a finished transaction: aliases expanded, duplicates removed.
    fn envelope(&self, id: QueueId, tx: &Transaction, size: u64) -> Envelope {
        let directory = &self.shared.settings.directory;
        let received_at = jiff::Timestamp::now().as_second();
        let mut recipients: Vec<Recipient> = Vec::new();
        for (to, params) in &tx.recipients {
            let targets = match policy::resolve(directory, to) {
                Resolution::Deliver(targets) => targets,
                // The directory said yes at RCPT time; it is the same directory.
                _ => continue,
            };
            for target in targets {
                let (address, mailbox) = match target {
                    Target::Local(t) => {
                        let mailbox = LocalMailbox {
                            domain: t.domain,
                            local: t.local,
                        };
                        (t.address, Some(mailbox))
                    }
                    Target::Remote(address) => (address, None),
                };
                if recipients.iter().any(|r| r.address == address) {
                    continue;
                }
                recipients.push(Recipient {
                    address,
                    original: to.to_string(),
                    mailbox,
                    notify: params.notify.map(|n| format!("{n:?}")),
                    orcpt: params
                        .orcpt
                        .as_ref()
                        .map(|o| format!("{};{}", o.addr_type, o.addr)),
                    status: RecipientStatus::Pending,
                    attempts: 0,
                    next_attempt: received_at,
                    last_error: None,
                });
            }
        }
        let (reverse_path, reverse_route) = match &tx.from {
            ReversePath::Null => (String::new(), Vec::new()),
            ReversePath::Path(path) => (
                path.mailbox.to_string(),
                path.route.iter().map(|d| d.to_string()).collect(),
            ),
        };
        Envelope {
            id,
            received_at,
            size,
            reverse_path,
            reverse_route,
            envid: tx.params.envid.clone(),
            ret: tx.params.ret.map(|r| match r {
                Ret::Full => "FULL".to_string(),
                Ret::Hdrs => "HDRS".to_string(),
            }),
            body_type: tx.params.body.map(|b| match b {
                Body::SevenBit => "7BIT".to_string(),
                Body::EightBitMime => "8BITMIME".to_string(),
                Body::BinaryMime => "BINARYMIME".to_string(),
            }),
            smtputf8: tx.params.smtputf8,
            client: ClientInfo {
                helo: self
                    .session
                    .helo()
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
                address: self.peer.to_string(),
                auth_user: None,
                tls: None,
            },
            recipients,
            held: false,
        }
    }

    /// The trace line (RFC 5321 4.4): from (HELO name and address) by (us) with (protocol, RFC
    /// 3848) id (queue id) for (the recipient when there is exactly one); date.
    fn received_line(&self, id: &str) -> String {
        let helo = match self.session.helo() {
            Some(Host::Domain(d)) => d.to_string(),
            Some(host @ Host::Literal(_)) => host.to_string(),
            None => "unknown".to_string(),
        };
        let tx = self.session.transaction();
        let utf8 = tx.is_some_and(|tx| tx.params.smtputf8);
        let protocol = match (utf8, self.session.is_extended()) {
            (false, false) => "SMTP",
            (false, true) => "ESMTP",
            (true, _) => "UTF8SMTP",
        };
        let mut line = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (yizhan) with {protocol} id {id}",
            ip = self.peer.ip(),
            host = self.shared.settings.hostname,
        );
        if let Some(tx) = tx
            && tx.recipients.len() == 1
        {
            line.push_str(&format!("\r\n\tfor {}", tx.recipients[0].0));
        }
        let now = jiff::ZonedDateTime::now();
        let date = jiff::fmt::rfc2822::to_string(&now).unwrap_or_else(|_| now.to_string());
        line.push_str(&format!(";\r\n\t{date}\r\n"));
        line
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
