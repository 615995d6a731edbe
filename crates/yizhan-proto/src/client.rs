//! The sender-SMTP state machine (the client role), sans-I/O.
//!
//! [`ClientSession`] plays the part of the SMTP client: it waits for the greeting, introduces
//! itself, upgrades to TLS, authenticates and then sends one transaction after another over the
//! same connection. It never touches a socket or a clock: the driver feeds the bytes it read to
//! [`ClientSession::receive`] and acts on every [`ClientEvent`] that
//! [`ClientSession::next_event`] hands out (write bytes, do the TLS handshake, write the body,
//! close). Timeouts (RFC 5321 4.5.3.2) are the driver's business.
//!
//! ```text
//! greeting 220 -> EHLO (5xx: HELO) -> [STARTTLS -> 220 -> StartTls .. tls_established() -> EHLO]
//!   -> [AUTH PLAIN | AUTH LOGIN] -> Ready
//! Ready -- send(tx) --> MAIL, RCPT.., DATA -> 354 -> SendBody .. body_sent() -> 250
//!   -> Finished(result) -> Ready -- quit() --> QUIT -> 221 -> Closed
//! ```
//!
//! | RFC | what |
//! | --- | --- |
//! | 5321 3.1, 4.3.2 | greeting: 220 to go on, 554 (answered with QUIT) or 421 to fail |
//! | 5321 3.2, 4.1.1.1 | EHLO, and HELO when EHLO is refused with a 5xx (then no extensions) |
//! | 5321 3.3, 4.1.1.2-4.1.1.5 | MAIL, RCPT (one outcome per recipient), DATA, RSET after a failed transaction |
//! | 5321 4.2, 4.2.5 | replies are matched to commands in order; 421 at any time ends the session |
//! | 5321 4.5.2 | the body goes through [`crate::data::DotStuffer`] (the driver does that) |
//! | 1870 | `SIZE=` added when advertised; a message over the advertised limit is not sent |
//! | 2920 | with PIPELINING, MAIL, every RCPT and DATA go in one write |
//! | 3030 | BDAT (`BDAT <n> LAST`) for BINARYMIME messages, or always when asked and offered |
//! | 3207 | STARTTLS; after the handshake every buffered byte is dropped and EHLO is sent again |
//! | 3461 | DSN parameters are dropped when the server does not offer DSN |
//! | 4954 | AUTH PLAIN with an initial response, else AUTH LOGIN as JavaMail does it |
//! | 6152 | `BODY=8BITMIME` when the message has 8-bit data; refused (no downgrade) without 8BITMIME |
//! | 6531 3.4 | `SMTPUTF8` when an address or the message needs it; refused without SMTPUTF8 |
//! | 8689 | REQUIRETLS only over TLS to a server that offers it |
//!
//! A driver loop looks like this:
//!
//! ```text
//! loop {
//!     while let Some(ev) = session.next_event() {
//!         match ev {
//!             Send(bytes) | SendSecret(bytes) => write(bytes),
//!             StartTls => { handshake(); session.tls_established() }
//!             SendBody { bdat: false } => { write(dot_stuffed(body)); session.body_sent() }
//!             SendBody { bdat: true } => { write(bdat_command(len)); write(body); session.body_sent() }
//!             Ready => match next_message() { Some(tx) => session.send(tx)?, None => session.quit() },
//!             Finished(result) => record(result),
//!             Failed(_) | Closed => return close(),
//!         }
//!     }
//!     session.receive(read_with_timeout()?);
//! }
//! ```

use std::collections::VecDeque;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::address::{ForwardPath, Host, ReversePath};
use crate::command::{Body, Command, MailKind, MailParams, RcptParams};
use crate::ehlo::Capabilities;
use crate::reply::{EnhancedCode, Reply, ReplyParser};

/// The default limit for one reply line, CRLF included. RFC 5321 4.5.3.1.5 sets 512 octets;
/// real servers send longer lines, so the client is more lenient.
pub const DEFAULT_MAX_REPLY_LINE: usize = 4096;

/// Whether to use STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never send STARTTLS.
    Never,
    /// Use STARTTLS when the server offers it; carry on in plain text when it does not or when
    /// it refuses.
    #[default]
    Opportunistic,
    /// Fail with [`ClientError::TlsRequired`] unless TLS is active (implicit TLS or STARTTLS).
    Required,
}

/// A username and password for AUTH PLAIN or LOGIN (RFC 4954). The password never appears in
/// `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity.
    pub username: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// A username and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Settings for one client session.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name given in EHLO/HELO (RFC 5321 4.1.1.1: our FQDN or an address literal).
    pub helo_name: Host,
    /// Whether to use STARTTLS.
    pub tls: TlsMode,
    /// TLS is already on (implicit TLS, "submissions" on port 465); STARTTLS is not sent.
    pub tls_active: bool,
    /// Authenticate with these when the server offers AUTH. When it offers no AUTH at all the
    /// session goes on unauthenticated (as JavaMail does); when it offers AUTH but neither PLAIN
    /// nor LOGIN the session fails with [`ClientError::AuthUnsupported`].
    pub credentials: Option<Credentials>,
    /// The longest reply line accepted, CRLF included (at least 512).
    pub max_reply_line: usize,
    /// Send every message with BDAT when the server offers CHUNKING (RFC 3030), not only
    /// BINARYMIME ones.
    pub prefer_chunking: bool,
    /// Speak LMTP (RFC 2033) instead of SMTP: `LHLO` (no HELO fallback), and after the
    /// message one reply per accepted recipient
    /// ([`TransactionResult::per_recipient`]).
    pub lmtp: bool,
}

impl ClientConfig {
    /// Opportunistic TLS, no credentials, [`DEFAULT_MAX_REPLY_LINE`], DATA unless BDAT is needed.
    pub fn new(helo_name: Host) -> ClientConfig {
        ClientConfig {
            helo_name,
            tls: TlsMode::Opportunistic,
            tls_active: false,
            credentials: None,
            max_reply_line: DEFAULT_MAX_REPLY_LINE,
            prefer_chunking: false,
            lmtp: false,
        }
    }
}

/// One message to send: the envelope and what the body needs from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The reverse-path for MAIL FROM.
    pub from: ReversePath,
    /// MAIL parameters. `SIZE`, `BODY` and `SMTPUTF8` are set by the session from the fields
    /// below and the server's capabilities; DSN parameters (`RET`, `ENVID`) and `AUTH=` are
    /// dropped when the server does not offer DSN or AUTH.
    pub params: MailParams,
    /// The recipients, in order, each with its RCPT parameters (`NOTIFY`, `ORCPT` are dropped
    /// without DSN).
    pub recipients: Vec<(ForwardPath, RcptParams)>,
    /// The size of the body in octets (before dot-stuffing), for `SIZE=` (RFC 1870) and BDAT.
    pub size: u64,
    /// The body has 8-bit data: needs 8BITMIME (RFC 6152); never downgraded.
    pub eight_bit: bool,
    /// The message needs SMTPUTF8 (RFC 6531), e.g. UTF-8 headers. Non-ASCII addresses in the
    /// envelope are detected without this flag.
    pub needs_smtputf8: bool,
    /// The body is binary: needs CHUNKING and BINARYMIME (RFC 3030) and is sent with BDAT.
    pub binary: bool,
}

impl Transaction {
    /// A 7-bit ASCII message with default parameters.
    pub fn new(from: ReversePath, recipients: Vec<ForwardPath>, size: u64) -> Transaction {
        Transaction {
            from,
            params: MailParams::default(),
            recipients: recipients
                .into_iter()
                .map(|r| (r, RcptParams::default()))
                .collect(),
            size,
            eight_bit: false,
            needs_smtputf8: false,
            binary: false,
        }
    }
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// The reply to MAIL. When the session refused the message itself (see `error`) or the
    /// connection failed before MAIL was answered, a reply made up by the client with the same
    /// meaning (5xx for a permanent refusal, 451 4.4.2 for a lost connection).
    pub mail: Reply,
    /// One entry per recipient, in the order given: `Ok` with the 2xx reply to RCPT, or `Err`
    /// with the reply that refused it. A recipient never tried (MAIL refused without
    /// PIPELINING, a client-side refusal, a lost connection) gets the reply that ended the
    /// transaction, as in `mail`.
    pub recipients: Vec<(ForwardPath, Result<Reply, Reply>)>,
    /// The reply that decided the fate of the message for the accepted recipients: the reply
    /// after the body (the BDAT LAST reply with CHUNKING), or the refusal of DATA. `None` when
    /// neither happened (no recipient accepted with BDAT or without PIPELINING, or the
    /// connection failed). With LMTP, the refusal of DATA only: the replies after the body
    /// are in [`per_recipient`](Self::per_recipient).
    pub data: Option<Reply>,
    /// LMTP (RFC 2033 4.2): after the body, one reply per recipient accepted by RCPT, in the
    /// order of `recipients` (`None` for one refused at RCPT, or whose reply never came).
    /// Empty for SMTP.
    pub per_recipient: Vec<Option<Reply>>,
    /// Set when the client refused the message before sending anything (size, 8BITMIME,
    /// SMTPUTF8, BINARYMIME, REQUIRETLS) or when the connection failed during the transaction
    /// (then a [`ClientEvent::Failed`] follows).
    pub error: Option<ClientError>,
}

impl TransactionResult {
    /// Whether the server took responsibility for the message (a 2xx after the body) for the
    /// recipients it accepted (with LMTP, for at least one of them).
    pub fn delivered(&self) -> bool {
        (0..self.recipients.len()).any(|i| self.after_body(i).is_some_and(Reply::is_positive))
    }

    /// The reply after the body that concerns recipient `i` (accepted by RCPT): the single
    /// one of SMTP, or its own with LMTP. `None` when it never came, or the recipient was
    /// refused at RCPT.
    pub fn after_body(&self, i: usize) -> Option<&Reply> {
        match self.recipients.get(i) {
            Some((_, Ok(_))) if self.per_recipient.is_empty() => self.data.as_ref(),
            Some((_, Ok(_))) => self
                .per_recipient
                .get(i)
                .and_then(Option::as_ref)
                .or(self.data.as_ref()),
            _ => None,
        }
    }

    /// The recipients whose delivery is done: accepted by RCPT and the message accepted.
    pub fn delivered_recipients(&self) -> impl Iterator<Item = &ForwardPath> {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(i, _)| self.after_body(*i).is_some_and(Reply::is_positive))
            .map(|(_, (fp, _))| fp)
    }
}

/// Why a transaction or the whole session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The greeting was not 220 (554 or 421, RFC 5321 3.1).
    #[error("server refused the connection: {0}")]
    Greeting(Reply),
    /// EHLO and HELO were both refused, or EHLO got a 4xx.
    #[error("server refused EHLO/HELO: {0}")]
    HeloRejected(Reply),
    /// TLS is required but the server does not offer STARTTLS (`None`) or refused it.
    #[error("TLS required but not available{}", .0.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    TlsRequired(Option<Reply>),
    /// The server rejected our credentials (or any step of the SASL exchange).
    #[error("authentication failed: {0}")]
    AuthFailed(Reply),
    /// The server offers AUTH but neither PLAIN nor LOGIN.
    #[error("no SASL mechanism in common with the server")]
    AuthUnsupported,
    /// The server closes the connection (421, RFC 5321 3.8).
    #[error("server closing the connection: {0}")]
    ServiceClosing(Reply),
    /// The server broke the protocol: a malformed reply, a reply when none was expected, or a
    /// reply code that makes no sense for the command.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The message is larger than the server's advertised SIZE (RFC 1870).
    #[error("message of {size} octets exceeds the server's limit of {limit}")]
    SizeExceeded {
        /// The message size.
        size: u64,
        /// The advertised limit.
        limit: u64,
    },
    /// The message needs SMTPUTF8 and the server does not offer it (RFC 6531 3.4).
    #[error("message needs SMTPUTF8, which the server does not offer")]
    Utf8Unsupported,
    /// The message has 8-bit data and the server does not offer 8BITMIME (RFC 6152).
    #[error("message has 8-bit data and the server does not offer 8BITMIME")]
    EightBitUnsupported,
    /// The message is binary and the server lacks CHUNKING or BINARYMIME (RFC 3030).
    #[error("binary message and the server does not offer CHUNKING and BINARYMIME")]
    BinaryUnsupported,
    /// The message asks for REQUIRETLS and the session is not over TLS to a server that offers
    /// it (RFC 8689 4.1).
    #[error("REQUIRETLS not possible on this connection")]
    RequireTlsUnsupported,
    /// [`ClientSession::send`] was called when the session was not ready (a driver bug).
    #[error("session is not ready for a transaction")]
    NotReady,
    /// [`ClientSession::send`] was given a transaction without recipients (a caller bug).
    #[error("transaction has no recipients")]
    NoRecipients,
}

impl ClientError {
    /// Whether retrying the same message later (on this server) is pointless: a 5xx from the
    /// server or a client-side refusal for a missing extension. Everything else is transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Greeting(r)
            | ClientError::HeloRejected(r)
            | ClientError::AuthFailed(r) => r.is_permanent(),
            ClientError::SizeExceeded { .. }
            | ClientError::Utf8Unsupported
            | ClientError::EightBitUnsupported
            | ClientError::BinaryUnsupported
            | ClientError::RequireTlsUnsupported
            | ClientError::NoRecipients => true,
            ClientError::TlsRequired(_)
            | ClientError::AuthUnsupported
            | ClientError::ServiceClosing(_)
            | ClientError::Protocol(_)
            | ClientError::NotReady => false,
        }
    }

    /// The reply a client-side refusal stands for (used in [`TransactionResult`]).
    fn local_reply(&self) -> Reply {
        let (code, e) = match self {
            ClientError::SizeExceeded { .. } => (552, EnhancedCode::new(5, 3, 4)),
            ClientError::Utf8Unsupported => (553, EnhancedCode::new(5, 6, 7)),
            ClientError::EightBitUnsupported | ClientError::BinaryUnsupported => {
                (554, EnhancedCode::new(5, 6, 3))
            }
            ClientError::RequireTlsUnsupported => (550, EnhancedCode::new(5, 7, 30)),
            _ => (451, EnhancedCode::new(4, 4, 2)),
        };
        Reply::new(code, Some(e), format!("(client) {self}"))
    }
}

/// What the driver must do next.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Write these bytes to the server.
    Send(Vec<u8>),
    /// Write these bytes to the server; they carry credentials (AUTH), so never log them.
    /// `Debug` shows only their length.
    SendSecret(Vec<u8>),
    /// Flush, do the TLS handshake, then call [`ClientSession::tls_established`].
    StartTls,
    /// Write the message body, then call [`ClientSession::body_sent`]. With `bdat: false` (after
    /// 354 to DATA) write it through [`crate::data::DotStuffer`] including its `finish` (the
    /// final `.` line); with `bdat: true` write [`bdat_command`] with the body's length and then
    /// the raw body.
    SendBody {
        /// Use BDAT rather than DATA.
        bdat: bool,
    },
    /// The session is idle: call [`ClientSession::send`] or [`ClientSession::quit`].
    Ready,
    /// The outcome of the transaction started by the last [`ClientSession::send`].
    Finished(Box<TransactionResult>),
    /// The connection is unusable; close it. No more events follow.
    Failed(ClientError),
    /// QUIT was answered; close the connection. No more events follow.
    Closed,
}

impl fmt::Debug for ClientEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientEvent::Send(b) => write!(f, "Send({:?})", b.escape_ascii().to_string()),
            ClientEvent::SendSecret(b) => write!(f, "SendSecret(<{} octets>)", b.len()),
            ClientEvent::StartTls => f.write_str("StartTls"),
            ClientEvent::SendBody { bdat } => write!(f, "SendBody {{ bdat: {bdat} }}"),
            ClientEvent::Ready => f.write_str("Ready"),
            ClientEvent::Finished(r) => f.debug_tuple("Finished").field(r).finish(),
            ClientEvent::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            ClientEvent::Closed => f.write_str("Closed"),
        }
    }
}

/// The command line that starts a BDAT body of `size` octets: `BDAT <size> LAST\r\n`
/// (RFC 3030 2). The whole message goes in one chunk.
pub fn bdat_command(size: u64) -> Vec<u8> {
    line(&Command::Bdat { size, last: true })
}

/// A command with its CRLF.
fn line(command: &Command) -> Vec<u8> {
    format!("{command}\r\n").into_bytes()
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO sent.
    Ehlo,
    /// HELO sent (EHLO was refused).
    Helo,
    /// STARTTLS sent.
    StartTls,
    /// Waiting for [`ClientSession::tls_established`]; bytes received now are dropped.
    TlsHandshake,
    /// `AUTH LOGIN` sent; the next 334 asks for the username.
    AuthLoginUser,
    /// Username sent; the next 334 asks for the password.
    AuthLoginPass,
    /// The last SASL step sent; waiting for 235.
    AuthFinal,
    /// Idle.
    Ready,
    /// Commands of a transaction (or the RSET after one) are in flight; see `pending`.
    Transaction,
    /// Waiting for [`ClientSession::body_sent`]; replies stay buffered meanwhile.
    AwaitBody,
    /// QUIT sent.
    Quit,
    /// Closed or failed: nothing more happens.
    Done,
}

/// The reply the next one in the pipeline answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Mail,
    Rcpt(usize),
    Data,
    /// The reply after the body (after the final `.` or the BDAT LAST chunk).
    Body,
    /// LMTP: the reply after the body for recipient `i` (one per accepted recipient).
    RecipientBody(usize),
    /// The reply to the empty body sent after an unwanted 354; ignored.
    EmptyBody,
    Rset,
}

/// A transaction in flight.
#[derive(Debug)]
struct TxState {
    pipelined: bool,
    bdat: bool,
    recipients: Vec<ForwardPath>,
    /// RCPT command lines, for sending one by one without PIPELINING.
    rcpt_lines: Vec<Vec<u8>>,
    mail: Option<Reply>,
    rcpt_replies: Vec<Option<Reply>>,
    data: Option<Reply>,
    /// LMTP: the replies after the body, by recipient.
    per_recipient: Vec<Option<Reply>>,
}

impl TxState {
    fn mail_ok(&self) -> bool {
        self.mail.as_ref().is_some_and(Reply::is_positive)
    }

    fn any_accepted(&self) -> bool {
        self.mail_ok()
            && self
                .rcpt_replies
                .iter()
                .any(|r| r.as_ref().is_some_and(Reply::is_positive))
    }

    fn into_result(self, error: Option<ClientError>) -> TransactionResult {
        let lost = || {
            let text = match &error {
                Some(e) => format!("(client) transaction aborted: {e}"),
                None => "(client) no reply".to_string(),
            };
            Reply::new(451, Some(EnhancedCode::new(4, 4, 2)), text)
        };
        let mail = self.mail.unwrap_or_else(lost);
        let untried = if mail.is_positive() {
            lost()
        } else {
            mail.clone()
        };
        let recipients = self
            .recipients
            .into_iter()
            .zip(self.rcpt_replies)
            .map(|(fp, reply)| {
                let outcome = match reply {
                    Some(r) if r.is_positive() => Ok(r),
                    Some(r) => Err(r),
                    None => Err(untried.clone()),
                };
                (fp, outcome)
            })
            .collect();
        TransactionResult {
            mail,
            recipients,
            data: self.data,
            per_recipient: self.per_recipient,
            error,
        }
    }
}

/// The sender-SMTP session. See the [module docs](self) for the flow and a driver loop.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    parser: ReplyParser,
    phase: Phase,
    pending: VecDeque<Expect>,
    tx: Option<TxState>,
    events: VecDeque<ClientEvent>,
    capabilities: Option<Capabilities>,
    server_name: Option<String>,
    tls_active: bool,
    authenticated: bool,
    quit_requested: bool,
}

impl ClientSession {
    /// A session for a freshly opened connection; it waits for the greeting.
    pub fn new(config: ClientConfig) -> ClientSession {
        ClientSession {
            parser: ReplyParser::new(config.max_reply_line),
            tls_active: config.tls_active,
            config,
            phase: Phase::Greeting,
            pending: VecDeque::new(),
            tx: None,
            events: VecDeque::new(),
            capabilities: None,
            server_name: None,
            authenticated: false,
            quit_requested: false,
        }
    }

    /// Feeds bytes read from the server. Bytes that arrive while the TLS handshake is pending
    /// (after the 220 to STARTTLS) are dropped (RFC 3207 4.2), as is anything after the end.
    pub fn receive(&mut self, bytes: &[u8]) {
        match self.phase {
            Phase::TlsHandshake | Phase::Done => {}
            _ => {
                self.parser.push(bytes);
                self.pump();
            }
        }
    }

    /// The next thing the driver must do, in order.
    pub fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Starts a transaction. Only valid after [`ClientEvent::Ready`]; errors are caller bugs
    /// ([`ClientError::NotReady`], [`ClientError::NoRecipients`]). A message the server cannot
    /// take (too big, needs an extension it lacks) is not sent: a [`ClientEvent::Finished`] with
    /// `error` set and a new [`ClientEvent::Ready`] follow at once.
    pub fn send(&mut self, tx: Transaction) -> Result<(), ClientError> {
        if self.phase != Phase::Ready {
            return Err(ClientError::NotReady);
        }
        if tx.recipients.is_empty() {
            return Err(ClientError::NoRecipients);
        }
        match self.prepare(&tx) {
            Err(e) => {
                let reply = e.local_reply();
                let result = TransactionResult {
                    mail: reply.clone(),
                    recipients: tx
                        .recipients
                        .into_iter()
                        .map(|(fp, _)| (fp, Err(reply.clone())))
                        .collect(),
                    data: None,
                    per_recipient: Vec::new(),
                    error: Some(e),
                };
                self.events
                    .push_back(ClientEvent::Finished(Box::new(result)));
                self.become_ready();
            }
            Ok(prepared) => self.start(tx, prepared),
        }
        Ok(())
    }

    /// The driver wrote the whole body after [`ClientEvent::SendBody`].
    pub fn body_sent(&mut self) {
        if self.phase == Phase::AwaitBody {
            self.phase = Phase::Transaction;
            self.pump();
        }
    }

    /// The TLS handshake after [`ClientEvent::StartTls`] succeeded. Everything learnt before is
    /// forgotten and EHLO is sent again (RFC 3207 4.2). A failed handshake is the driver's to
    /// report; it closes the connection.
    pub fn tls_established(&mut self) {
        if self.phase == Phase::TlsHandshake {
            self.tls_active = true;
            self.parser = ReplyParser::new(self.config.max_reply_line);
            self.capabilities = None;
            self.send_ehlo();
        }
    }

    /// Ends the session: QUIT now when idle, else as soon as the current step is done (instead
    /// of the next [`ClientEvent::Ready`]). Any reply to QUIT gives [`ClientEvent::Closed`].
    pub fn quit(&mut self) {
        match self.phase {
            Phase::Ready => self.send_quit(),
            Phase::Quit | Phase::Done => {}
            _ => self.quit_requested = true,
        }
    }

    /// The capabilities from the last EHLO; `None` before it and after a HELO fallback.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// The name the server gave in its greeting or EHLO reply (the first word).
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether the connection is over TLS (implicit, or after STARTTLS).
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Whether AUTH succeeded.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    // ----- plumbing -----

    fn emit_send(&mut self, bytes: Vec<u8>) {
        self.events.push_back(ClientEvent::Send(bytes));
    }

    fn has(&self, f: impl FnOnce(&Capabilities) -> bool) -> bool {
        self.capabilities.as_ref().is_some_and(f)
    }

    /// Handles buffered replies while the session is waiting for one.
    fn pump(&mut self) {
        while !matches!(
            self.phase,
            Phase::TlsHandshake | Phase::AwaitBody | Phase::Done
        ) {
            match self.parser.next_reply() {
                None => return,
                Some(Ok(reply)) => self.on_reply(reply),
                Some(Err(e)) => self.fail(ClientError::Protocol(format!("malformed reply: {e}"))),
            }
        }
    }

    fn fail(&mut self, error: ClientError) {
        if let Some(tx) = self.tx.take() {
            let result = tx.into_result(Some(error.clone()));
            self.events
                .push_back(ClientEvent::Finished(Box::new(result)));
        }
        self.pending.clear();
        self.phase = Phase::Done;
        self.events.push_back(ClientEvent::Failed(error));
    }

    fn unexpected(&mut self, reply: &Reply, context: &str) {
        self.fail(ClientError::Protocol(format!(
            "unexpected reply {context}: {reply}"
        )));
    }

    fn on_reply(&mut self, reply: Reply) {
        match self.phase {
            Phase::Greeting => return self.on_greeting(reply),
            Phase::Quit => {
                self.phase = Phase::Done;
                self.events.push_back(ClientEvent::Closed);
                return;
            }
            _ => {}
        }
        // RFC 5321 3.8: 421 may answer any command; the server is going away.
        if reply.code == 421 {
            return self.fail(ClientError::ServiceClosing(reply));
        }
        match self.phase {
            Phase::Ehlo => self.on_ehlo(reply),
            Phase::Helo => self.on_helo(reply),
            Phase::StartTls => self.on_starttls(reply),
            Phase::AuthLoginUser | Phase::AuthLoginPass | Phase::AuthFinal => self.on_auth(reply),
            Phase::Transaction => self.on_tx_reply(reply),
            Phase::Ready => self.unexpected(&reply, "while idle"),
            Phase::Greeting
            | Phase::Quit
            | Phase::TlsHandshake
            | Phase::AwaitBody
            | Phase::Done => {}
        }
    }

    // ----- connection set-up -----

    fn on_greeting(&mut self, reply: Reply) {
        if reply.code == 220 {
            self.server_name = first_word(&reply);
            self.send_ehlo();
        } else {
            // RFC 5321 3.1: after a 554 greeting the client should send QUIT; after 421 the
            // server is already closing.
            if reply.code != 421 {
                self.emit_send(line(&Command::Quit));
            }
            self.fail(ClientError::Greeting(reply));
        }
    }

    fn send_ehlo(&mut self) {
        if self.config.lmtp {
            // RFC 2033 4.1: LHLO, answered as EHLO is.
            self.emit_send(format!("LHLO {}\r\n", self.config.helo_name).into_bytes());
        } else {
            self.emit_send(line(&Command::Ehlo(self.config.helo_name.clone())));
        }
        self.phase = Phase::Ehlo;
    }

    fn on_ehlo(&mut self, reply: Reply) {
        if reply.is_positive() {
            if let Some(name) = first_word(&reply) {
                self.server_name = Some(name);
            }
            self.capabilities = Some(Capabilities::from_ehlo_reply(&reply));
            self.after_hello();
        } else if reply.is_permanent() && !self.config.lmtp {
            // RFC 5321 3.2: a server that does not know EHLO answers 500/502/504/550; use HELO.
            self.emit_send(line(&Command::Helo(self.config.helo_name.clone())));
            self.phase = Phase::Helo;
        } else {
            self.fail(ClientError::HeloRejected(reply));
        }
    }

    fn on_helo(&mut self, reply: Reply) {
        if reply.is_positive() {
            self.capabilities = None;
            self.after_hello();
        } else {
            self.fail(ClientError::HeloRejected(reply));
        }
    }

    /// After a successful EHLO/HELO: STARTTLS if wanted, else AUTH if configured, else Ready.
    fn after_hello(&mut self) {
        if !self.tls_active && self.config.tls != TlsMode::Never {
            if self.has(Capabilities::starttls) {
                self.emit_send(line(&Command::StartTls));
                self.phase = Phase::StartTls;
                return;
            }
            if self.config.tls == TlsMode::Required {
                return self.fail(ClientError::TlsRequired(None));
            }
        }
        self.start_auth();
    }

    fn on_starttls(&mut self, reply: Reply) {
        if reply.code == 220 {
            // Whatever else is buffered was sent before the handshake: drop it (RFC 3207 4.2).
            self.parser.reset_buffer();
            self.phase = Phase::TlsHandshake;
            self.events.push_back(ClientEvent::StartTls);
        } else if self.config.tls == TlsMode::Required {
            self.fail(ClientError::TlsRequired(Some(reply)));
        } else if reply.is_transient() || reply.is_permanent() {
            // Opportunistic: carry on in plain text (RFC 3207 4: 454 TLS not available).
            self.start_auth();
        } else {
            self.unexpected(&reply, "to STARTTLS");
        }
    }

    fn start_auth(&mut self) {
        let Some(creds) = self.config.credentials.clone() else {
            return self.become_ready();
        };
        if self.authenticated {
            return self.become_ready();
        }
        let mechanisms: Vec<String> = self
            .capabilities
            .as_ref()
            .map(Capabilities::auth_mechanisms)
            .unwrap_or_default();
        if mechanisms.is_empty() {
            return self.become_ready();
        }
        let offers = |m: &str| mechanisms.iter().any(|x| x.eq_ignore_ascii_case(m));
        if offers("PLAIN") {
            // RFC 4616 2: authzid NUL authcid NUL passwd, with an empty authzid.
            let mut message = Vec::with_capacity(creds.username.len() + creds.password.len() + 2);
            message.push(0);
            message.extend_from_slice(creds.username.as_bytes());
            message.push(0);
            message.extend_from_slice(creds.password.as_bytes());
            let command = Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some(BASE64.encode(message)),
            };
            self.events
                .push_back(ClientEvent::SendSecret(line(&command)));
            self.phase = Phase::AuthFinal;
        } else if offers("LOGIN") {
            let command = Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None,
            };
            self.emit_send(line(&command));
            self.phase = Phase::AuthLoginUser;
        } else {
            self.fail(ClientError::AuthUnsupported);
        }
    }

    fn on_auth(&mut self, reply: Reply) {
        let secret = match (self.phase, &self.config.credentials) {
            (Phase::AuthLoginUser, Some(c)) if reply.code == 334 => &c.username,
            (Phase::AuthLoginPass, Some(c)) if reply.code == 334 => &c.password,
            (Phase::AuthFinal, _) if reply.is_positive() => {
                self.authenticated = true;
                return self.become_ready();
            }
            _ => return self.fail(ClientError::AuthFailed(reply)),
        };
        // The LOGIN challenges are "Username:" and "Password:"; like JavaMail, answer by step.
        let mut bytes = BASE64.encode(secret.as_bytes()).into_bytes();
        bytes.extend_from_slice(b"\r\n");
        self.events.push_back(ClientEvent::SendSecret(bytes));
        self.phase = if self.phase == Phase::AuthLoginUser {
            Phase::AuthLoginPass
        } else {
            Phase::AuthFinal
        };
    }

    fn become_ready(&mut self) {
        if self.quit_requested {
            self.send_quit();
        } else {
            self.phase = Phase::Ready;
            self.events.push_back(ClientEvent::Ready);
        }
    }

    fn send_quit(&mut self) {
        self.emit_send(line(&Command::Quit));
        self.phase = Phase::Quit;
    }

    // ----- transactions -----

    /// Checks the message against the server's capabilities and builds the MAIL and RCPT lines.
    fn prepare(&self, tx: &Transaction) -> Result<Prepared, ClientError> {
        let binary = tx.binary || tx.params.body == Some(Body::BinaryMime);
        let eight_bit = !binary && (tx.eight_bit || tx.params.body == Some(Body::EightBitMime));
        let utf8 = tx.needs_smtputf8
            || tx.params.smtputf8
            || !tx.from.is_ascii()
            || tx.recipients.iter().any(|(r, _)| !r.is_ascii());
        let limit = self.capabilities.as_ref().and_then(Capabilities::size);
        if let Some(limit) = limit
            && limit != 0
            && tx.size > limit
        {
            return Err(ClientError::SizeExceeded {
                size: tx.size,
                limit,
            });
        }
        if utf8 && !self.has(Capabilities::smtputf8) {
            return Err(ClientError::Utf8Unsupported);
        }
        if binary && !(self.has(Capabilities::chunking) && self.has(Capabilities::binarymime)) {
            return Err(ClientError::BinaryUnsupported);
        }
        if eight_bit && !self.has(Capabilities::eight_bit_mime) {
            return Err(ClientError::EightBitUnsupported);
        }
        if tx.params.requiretls && !(self.tls_active && self.has(Capabilities::requiretls)) {
            return Err(ClientError::RequireTlsUnsupported);
        }
        let dsn = self.has(Capabilities::dsn);
        let mut params = tx.params.clone();
        params.size = limit.map(|_| tx.size);
        params.body = if binary {
            Some(Body::BinaryMime)
        } else if eight_bit {
            Some(Body::EightBitMime)
        } else if params.body == Some(Body::SevenBit) && self.has(Capabilities::eight_bit_mime) {
            Some(Body::SevenBit)
        } else {
            None
        };
        params.smtputf8 = utf8;
        if !dsn {
            params.ret = None;
            params.envid = None;
        }
        if !self.has(|c| !c.auth_mechanisms().is_empty()) {
            params.auth = None;
        }
        let mail = line(&Command::Mail {
            kind: MailKind::Mail,
            from: tx.from.clone(),
            params,
        });
        let rcpts = tx
            .recipients
            .iter()
            .map(|(to, params)| {
                let params = if dsn {
                    params.clone()
                } else {
                    RcptParams::default()
                };
                line(&Command::Rcpt {
                    to: to.clone(),
                    params,
                })
            })
            .collect();
        Ok(Prepared {
            mail,
            rcpts,
            bdat: binary || (self.config.prefer_chunking && self.has(Capabilities::chunking)),
            pipelined: self.has(Capabilities::pipelining),
        })
    }

    fn start(&mut self, tx: Transaction, prepared: Prepared) {
        let n = tx.recipients.len();
        let state = TxState {
            pipelined: prepared.pipelined,
            bdat: prepared.bdat,
            recipients: tx.recipients.into_iter().map(|(fp, _)| fp).collect(),
            rcpt_lines: prepared.rcpts,
            mail: None,
            rcpt_replies: vec![None; n],
            data: None,
            per_recipient: if self.config.lmtp {
                vec![None; n]
            } else {
                Vec::new()
            },
        };
        self.pending.clear();
        self.pending.push_back(Expect::Mail);
        if state.pipelined {
            // RFC 2920 3.1: DATA may only be the last command of a group.
            let mut batch = prepared.mail;
            for (i, rcpt) in state.rcpt_lines.iter().enumerate() {
                batch.extend_from_slice(rcpt);
                self.pending.push_back(Expect::Rcpt(i));
            }
            if !state.bdat {
                batch.extend_from_slice(&line(&Command::Data));
                self.pending.push_back(Expect::Data);
            }
            self.emit_send(batch);
        } else {
            self.emit_send(prepared.mail);
        }
        self.tx = Some(state);
        self.phase = Phase::Transaction;
    }

    fn on_tx_reply(&mut self, reply: Reply) {
        let Some(expect) = self.pending.pop_front() else {
            return self.unexpected(&reply, "with no command pending");
        };
        if reply.is_intermediate() && expect != Expect::Data {
            return self.unexpected(&reply, "(intermediate code)");
        }
        match expect {
            Expect::Rset => {
                if self.pending.is_empty() {
                    self.become_ready();
                }
            }
            Expect::EmptyBody => {}
            Expect::Mail => self.on_mail(reply),
            Expect::Rcpt(i) => self.on_rcpt(i, reply),
            Expect::Data => self.on_data(reply),
            Expect::Body => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.data = Some(reply);
                }
                self.finish(false);
            }
            Expect::RecipientBody(i) => {
                if let Some(slot) = self.tx.as_mut().and_then(|tx| tx.per_recipient.get_mut(i)) {
                    *slot = Some(reply);
                }
                if !self
                    .pending
                    .iter()
                    .any(|e| matches!(e, Expect::RecipientBody(_)))
                {
                    self.finish(false);
                }
            }
        }
    }

    fn on_mail(&mut self, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        let ok = reply.is_positive();
        tx.mail = Some(reply);
        if tx.pipelined {
            return;
        }
        if ok {
            let first = tx.rcpt_lines[0].clone();
            self.emit_send(first);
            self.pending.push_back(Expect::Rcpt(0));
        } else {
            self.finish(true);
        }
    }

    fn on_rcpt(&mut self, i: usize, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        if let Some(slot) = tx.rcpt_replies.get_mut(i) {
            *slot = Some(reply);
        }
        let last = i + 1 == tx.rcpt_lines.len();
        if !tx.pipelined && !last {
            let next = tx.rcpt_lines[i + 1].clone();
            self.emit_send(next);
            self.pending.push_back(Expect::Rcpt(i + 1));
        } else if last && (!tx.pipelined || tx.bdat) {
            // All RCPT replies are in; DATA was not sent with them.
            if !tx.any_accepted() {
                self.finish(true);
            } else if tx.bdat {
                self.phase = Phase::AwaitBody;
                self.expect_body();
                self.events.push_back(ClientEvent::SendBody { bdat: true });
            } else {
                self.emit_send(line(&Command::Data));
                self.pending.push_back(Expect::Data);
            }
        }
    }

    fn on_data(&mut self, reply: Reply) {
        let Some(tx) = self.tx.as_mut() else { return };
        if reply.code == 354 {
            if tx.any_accepted() {
                self.phase = Phase::AwaitBody;
                self.expect_body();
                self.events.push_back(ClientEvent::SendBody { bdat: false });
            } else {
                // PIPELINING: DATA got 354 though no recipient was accepted (RFC 2920 3.1).
                // Send an empty message, ignore its reply, and reset.
                self.emit_send(b".\r\n".to_vec());
                self.pending.push_back(Expect::EmptyBody);
                self.finish(true);
            }
        } else if reply.is_intermediate() {
            self.unexpected(&reply, "to DATA");
        } else {
            tx.data = Some(reply);
            self.finish(true);
        }
    }

    /// The replies the body will get: one (SMTP), or one per recipient accepted by RCPT, in
    /// their order (LMTP, RFC 2033 4.2).
    fn expect_body(&mut self) {
        let Some(tx) = self.tx.as_ref() else { return };
        if !self.config.lmtp {
            self.pending.push_back(Expect::Body);
            return;
        }
        let accepted: Vec<usize> = (0..tx.rcpt_replies.len())
            .filter(|&i| tx.rcpt_replies[i].as_ref().is_some_and(Reply::is_positive))
            .collect();
        self.pending
            .extend(accepted.into_iter().map(Expect::RecipientBody));
    }

    /// Reports the transaction; with `reset`, sends RSET and waits for it before Ready.
    fn finish(&mut self, reset: bool) {
        if let Some(tx) = self.tx.take() {
            let result = tx.into_result(None);
            self.events
                .push_back(ClientEvent::Finished(Box::new(result)));
        }
        if reset {
            self.emit_send(line(&Command::Rset));
            self.pending.push_back(Expect::Rset);
        } else if self.pending.is_empty() {
            self.become_ready();
        }
    }
}

/// The MAIL and RCPT lines of a transaction and how to send them.
struct Prepared {
    mail: Vec<u8>,
    rcpts: Vec<Vec<u8>>,
    bdat: bool,
    pipelined: bool,
}

/// The first word of the first line: the server's name in a greeting or EHLO reply.
fn first_word(reply: &Reply) -> Option<String> {
    reply
        .lines
        .first()
        .and_then(|l| l.split_ascii_whitespace().next())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::command::{Notify, Orcpt, Ret};

    // ----- helpers -----

    const SEED_GREETING: &str =
        "220 163.com Anti-spam GT for Coremail System (163com[20141201])\r\n";
    const SEED_EHLO: &str = "250-mail\r\n250-PIPELINING\r\n250-AUTH LOGIN PLAIN\r\n\
        250-AUTH=LOGIN PLAIN\r\n\
        250-coremail 1Uxr2xKj7kG0xkI17xGrU7I0s8FY2U3Uj8Cz28x1UUUUU7Ic2I0Y2UFjiwORUCa0xDrUUUUj\r\n\
        250-STARTTLS\r\n250 8BITMIME\r\n";

    fn config(tls: TlsMode) -> ClientConfig {
        let mut c = ClientConfig::new(Host::parse("client.example").unwrap());
        c.tls = tls;
        c
    }

    fn with_creds(mut c: ClientConfig) -> ClientConfig {
        c.credentials = Some(Credentials::new("yizhan@163.com", "s3cret"));
        c
    }

    fn drain(s: &mut ClientSession) -> Vec<ClientEvent> {
        std::iter::from_fn(|| s.next_event()).collect()
    }

    fn feed(s: &mut ClientSession, server: &str) -> Vec<ClientEvent> {
        s.receive(server.as_bytes());
        drain(s)
    }

    fn send(text: &str) -> ClientEvent {
        ClientEvent::Send(text.as_bytes().to_vec())
    }

    fn secret(text: &str) -> ClientEvent {
        ClientEvent::SendSecret(text.as_bytes().to_vec())
    }

    fn rp(s: &str) -> ReversePath {
        ReversePath::parse(s).unwrap()
    }

    fn fp(s: &str) -> ForwardPath {
        ForwardPath::parse(s).unwrap()
    }

    fn tx(from: &str, to: &[&str], size: u64) -> Transaction {
        Transaction::new(rp(from), to.iter().map(|t| fp(t)).collect(), size)
    }

    /// Greets and answers EHLO with `caps` (one per line); asserts the session is Ready.
    fn ready(caps: &[&str]) -> ClientSession {
        let mut s = ClientSession::new(config(TlsMode::Opportunistic));
        assert_eq!(
            feed(&mut s, "220 mx.example ESMTP\r\n"),
            [send("EHLO client.example\r\n")]
        );
        assert_eq!(feed(&mut s, &ehlo_reply(caps)), [ClientEvent::Ready]);
        s
    }

    fn ehlo_reply(caps: &[&str]) -> String {
        let mut lines = vec!["mx.example hello".to_string()];
        lines.extend(caps.iter().map(|c| c.to_string()));
        let n = lines.len();
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i + 1 == n { ' ' } else { '-' }))
            .collect()
    }

    /// The single Finished event in `events`, or a panic.
    fn finished(events: &[ClientEvent]) -> &TransactionResult {
        let mut it = events.iter().filter_map(|e| match e {
            ClientEvent::Finished(r) => Some(&**r),
            _ => None,
        });
        let r = it.next().expect("a Finished event");
        assert!(it.next().is_none(), "one Finished event");
        r
    }

    fn codes(r: &TransactionResult) -> Vec<Result<u16, u16>> {
        r.recipients
            .iter()
            .map(|(_, o)| o.as_ref().map(|r| r.code).map_err(|r| r.code))
            .collect()
    }

    // ----- the seed capture (JavaMail against 163.com), RFC 5321 3, RFC 4954 -----

    #[test]
    fn seed_dialogue_picks_plain_and_pipelines() {
        let mut c = with_creds(config(TlsMode::Never));
        c.helo_name = Host::parse("ZGC-20120415XGV").unwrap();
        let mut s = ClientSession::new(c);
        assert_eq!(drain(&mut s), []);
        assert_eq!(
            feed(&mut s, SEED_GREETING),
            [send("EHLO ZGC-20120415XGV\r\n")]
        );
        assert_eq!(s.server_name(), Some("163.com"));
        // RFC 4954 4: PLAIN with an initial response (RFC 4616: \0user\0pass).
        assert_eq!(
            feed(&mut s, SEED_EHLO),
            [secret("AUTH PLAIN AHlpemhhbkAxNjMuY29tAHMzY3JldA==\r\n")]
        );
        assert_eq!(s.server_name(), Some("mail"));
        let caps = s.capabilities().unwrap();
        assert!(caps.pipelining() && caps.eight_bit_mime() && caps.starttls());
        assert_eq!(
            feed(&mut s, "235 Authentication successful\r\n"),
            [ClientEvent::Ready]
        );
        assert!(s.authenticated());
        s.send(tx("<yizhan@163.com>", &["<friend@qq.com>"], 300))
            .unwrap();
        // RFC 2920: MAIL, RCPT and DATA in one write.
        assert_eq!(
            drain(&mut s),
            [send(
                "MAIL FROM:<yizhan@163.com>\r\nRCPT TO:<friend@qq.com>\r\nDATA\r\n"
            )]
        );
        assert_eq!(
            feed(
                &mut s,
                "250 Mail OK\r\n250 Mail OK\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
            ),
            [ClientEvent::SendBody { bdat: false }]
        );
        s.body_sent();
        let ev = feed(
            &mut s,
            "250 Mail OK queued as smtp14,EsCowACHBs1 1505288055\r\n",
        );
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1], ClientEvent::Ready);
        let r = finished(&ev);
        assert!(r.delivered() && r.error.is_none());
        assert_eq!(codes(r), [Ok(250)]);
        assert_eq!(
            r.delivered_recipients().collect::<Vec<_>>(),
            [&fp("<friend@qq.com>")]
        );
        s.quit();
        assert_eq!(drain(&mut s), [send("QUIT\r\n")]);
        assert_eq!(feed(&mut s, "221 Bye\r\n"), [ClientEvent::Closed]);
        assert_eq!(feed(&mut s, "250 late\r\n"), []);
    }

    #[test]
    fn auth_login_exactly_as_javamail() {
        let mut s = ClientSession::new(with_creds(config(TlsMode::Never)));
        feed(&mut s, SEED_GREETING);
        assert_eq!(
            feed(&mut s, "250-mail\r\n250-AUTH LOGIN\r\n250 8BITMIME\r\n"),
            [send("AUTH LOGIN\r\n")]
        );
        assert_eq!(
            feed(&mut s, "334 VXNlcm5hbWU6\r\n"),
            [secret("eWl6aGFuQDE2My5jb20=\r\n")]
        );
        assert_eq!(
            feed(&mut s, "334 UGFzc3dvcmQ6\r\n"),
            [secret("czNjcmV0\r\n")]
        );
        assert_eq!(
            feed(&mut s, "235 Authentication successful\r\n"),
            [ClientEvent::Ready]
        );
        assert!(s.authenticated());
    }

    #[test]
    fn auth_failures() {
        // (EHLO capabilities, replies to the SASL steps, expected failure) -- RFC 4954 6.
        let cases: &[(&str, &[&str], ClientError)] = &[
            (
                "250-mail\r\n250 AUTH PLAIN LOGIN\r\n",
                &["535 5.7.8 Error: authentication failed\r\n"],
                ClientError::AuthFailed(Reply::new(
                    535,
                    Some(EnhancedCode::new(5, 7, 8)),
                    "Error: authentication failed",
                )),
            ),
            (
                "250-mail\r\n250 AUTH LOGIN\r\n",
                &[
                    "334 VXNlcm5hbWU6\r\n",
                    "334 UGFzc3dvcmQ6\r\n",
                    "535 bad\r\n",
                ],
                ClientError::AuthFailed(Reply::new(535, None, "bad")),
            ),
            (
                "250-mail\r\n250 AUTH LOGIN\r\n",
                &["504 unrecognized\r\n"],
                ClientError::AuthFailed(Reply::new(504, None, "unrecognized")),
            ),
            (
                "250-mail\r\n250 AUTH CRAM-MD5\r\n",
                &[],
                ClientError::AuthUnsupported,
            ),
        ];
        for (caps, steps, want) in cases {
            let mut s = ClientSession::new(with_creds(config(TlsMode::Never)));
            feed(&mut s, SEED_GREETING);
            let mut ev = feed(&mut s, caps);
            for step in *steps {
                ev = feed(&mut s, step);
            }
            assert_eq!(
                ev.last(),
                Some(&ClientEvent::Failed(want.clone())),
                "{caps}"
            );
            assert!(!s.authenticated());
        }
    }

    #[test]
    fn credentials_without_auth_offered_go_on_unauthenticated() {
        let mut s = ClientSession::new(with_creds(config(TlsMode::Never)));
        feed(&mut s, SEED_GREETING);
        assert_eq!(feed(&mut s, "250 mail\r\n"), [ClientEvent::Ready]);
        assert!(!s.authenticated());
    }

    #[test]
    fn password_never_in_debug_output() {
        let c = with_creds(config(TlsMode::Never));
        assert!(!format!("{c:?}").contains("s3cret"));
        let mut s = ClientSession::new(c);
        feed(&mut s, SEED_GREETING);
        let ev = feed(&mut s, SEED_EHLO);
        let dbg = format!("{ev:?} {s:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("AHlpemhhbkAxNjMuY29tAHMzY3JldA"));
    }

    // ----- greeting and EHLO/HELO, RFC 5321 3.1, 3.2, 4.1.1.1 -----

    #[test]
    fn greeting_refusals() {
        let cases: &[(&str, &[ClientEvent])] = &[
            (
                "554 no service for you\r\n",
                &[
                    ClientEvent::Send(b"QUIT\r\n".to_vec()),
                    ClientEvent::Failed(ClientError::Greeting(Reply::new(
                        554,
                        None,
                        "no service for you",
                    ))),
                ],
            ),
            (
                "421 busy\r\n",
                &[ClientEvent::Failed(ClientError::Greeting(Reply::new(
                    421, None, "busy",
                )))],
            ),
        ];
        for (greeting, want) in cases {
            let mut s = ClientSession::new(config(TlsMode::Never));
            assert_eq!(feed(&mut s, greeting), *want);
            assert_eq!(feed(&mut s, "220 too late\r\n"), []);
        }
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        for code in ["500", "502", "504", "550"] {
            let mut s = ClientSession::new(config(TlsMode::Opportunistic));
            feed(&mut s, "220 old.example\r\n");
            assert_eq!(
                feed(&mut s, &format!("{code} what?\r\n")),
                [send("HELO client.example\r\n")]
            );
            assert_eq!(feed(&mut s, "250 old.example\r\n"), [ClientEvent::Ready]);
            assert!(s.capabilities().is_none());
            // No extensions: one command at a time, no parameters (RFC 5321 3.3).
            s.send(tx("<a@b.example>", &["<c@d.example>"], 10)).unwrap();
            assert_eq!(drain(&mut s), [send("MAIL FROM:<a@b.example>\r\n")]);
        }
    }

    #[test]
    fn helo_refused_or_ehlo_tempfail_fails() {
        let mut s = ClientSession::new(config(TlsMode::Never));
        feed(&mut s, "220 x\r\n");
        feed(&mut s, "502 no\r\n");
        assert_eq!(
            feed(&mut s, "501 go away\r\n"),
            [ClientEvent::Failed(ClientError::HeloRejected(Reply::new(
                501, None, "go away"
            )))]
        );
        let mut s = ClientSession::new(config(TlsMode::Never));
        feed(&mut s, "220 x\r\n");
        assert_eq!(
            feed(&mut s, "451 later\r\n"),
            [ClientEvent::Failed(ClientError::HeloRejected(Reply::new(
                451, None, "later"
            )))]
        );
    }

    // ----- STARTTLS, RFC 3207 -----

    #[test]
    fn starttls_opportunistic_when_offered() {
        let mut s = ClientSession::new(with_creds(config(TlsMode::Opportunistic)));
        feed(&mut s, "220 mx.example\r\n");
        assert_eq!(
            feed(
                &mut s,
                "250-mx.example\r\n250-STARTTLS\r\n250 PIPELINING\r\n"
            ),
            [send("STARTTLS\r\n")]
        );
        // The 220 and an injected reply in the same read: the injection is dropped (4.2).
        assert_eq!(
            feed(&mut s, "220 2.0.0 Ready to start TLS\r\n250 injected\r\n"),
            [ClientEvent::StartTls]
        );
        assert_eq!(feed(&mut s, "535 also injected\r\n"), []);
        assert!(!s.tls_active());
        s.tls_established();
        assert!(s.tls_active());
        assert!(s.capabilities().is_none());
        assert_eq!(drain(&mut s), [send("EHLO client.example\r\n")]);
        // After TLS: AUTH is offered now; no second STARTTLS.
        assert_eq!(
            feed(
                &mut s,
                "250-mx.example\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"
            ),
            [secret("AUTH PLAIN AHlpemhhbkAxNjMuY29tAHMzY3JldA==\r\n")]
        );
        assert_eq!(feed(&mut s, "235 ok\r\n"), [ClientEvent::Ready]);
    }

    #[test]
    fn starttls_modes_table() {
        // (mode, EHLO reply, reply to STARTTLS if sent, expected final events)
        let not_offered = "250-mx.example\r\n250 PIPELINING\r\n";
        let offered = "250-mx.example\r\n250 STARTTLS\r\n";
        let cases: &[(TlsMode, &str, Option<&str>, ClientEvent)] = &[
            (
                TlsMode::Opportunistic,
                not_offered,
                None,
                ClientEvent::Ready,
            ),
            (TlsMode::Never, offered, None, ClientEvent::Ready),
            (
                TlsMode::Required,
                not_offered,
                None,
                ClientEvent::Failed(ClientError::TlsRequired(None)),
            ),
            (
                TlsMode::Opportunistic,
                offered,
                Some("454 4.7.0 TLS not available\r\n"),
                ClientEvent::Ready,
            ),
            (
                TlsMode::Required,
                offered,
                Some("454 TLS not available\r\n"),
                ClientEvent::Failed(ClientError::TlsRequired(Some(Reply::new(
                    454,
                    None,
                    "TLS not available",
                )))),
            ),
        ];
        for (mode, ehlo, starttls, want) in cases {
            let mut s = ClientSession::new(config(*mode));
            feed(&mut s, "220 mx.example\r\n");
            let mut ev = feed(&mut s, ehlo);
            if let Some(reply) = starttls {
                assert_eq!(ev, [send("STARTTLS\r\n")], "{mode:?}");
                ev = feed(&mut s, reply);
            }
            assert_eq!(
                ev.as_slice(),
                std::slice::from_ref(want),
                "{mode:?} {ehlo:?}"
            );
        }
    }

    #[test]
    fn implicit_tls_skips_starttls_and_satisfies_required() {
        let mut c = config(TlsMode::Required);
        c.tls_active = true;
        let mut s = ClientSession::new(c);
        feed(&mut s, "220 mx.example\r\n");
        assert_eq!(
            feed(&mut s, "250-mx.example\r\n250 STARTTLS\r\n"),
            [ClientEvent::Ready]
        );
        assert!(s.tls_active());
    }

    // ----- transactions, RFC 5321 3.3, RFC 2920 -----

    #[test]
    fn pipelined_batch_with_automatic_parameters() {
        // RFC 1870 SIZE=, RFC 6152 BODY=8BITMIME; RFC 3461 parameters dropped without DSN.
        let mut s = ready(&["PIPELINING", "SIZE 10000", "8BITMIME"]);
        let mut t = tx("<a@x.example>", &["<b@y.example>", "<c@y.example>"], 1234);
        t.eight_bit = true;
        t.params.ret = Some(Ret::Hdrs);
        t.params.envid = Some("id1".into());
        t.recipients[0].1.notify = Some(Notify::Never);
        s.send(t).unwrap();
        assert_eq!(
            drain(&mut s),
            [send(
                "MAIL FROM:<a@x.example> SIZE=1234 BODY=8BITMIME\r\n\
                 RCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\nDATA\r\n"
            )]
        );
    }

    #[test]
    fn dsn_parameters_kept_when_offered() {
        let mut s = ready(&["PIPELINING", "DSN", "SMTPUTF8", "CHUNKING"]);
        let mut t = tx("<a@x.example>", &["<b@y.example>"], 5);
        t.params.ret = Some(Ret::Full);
        t.recipients[0].1.notify = Some(Notify::Never);
        t.recipients[0].1.orcpt = Some(Orcpt {
            addr_type: "rfc822".into(),
            addr: "b@y.example".into(),
        });
        s.send(t).unwrap();
        assert_eq!(
            drain(&mut s),
            [send(
                "MAIL FROM:<a@x.example> RET=FULL\r\n\
                 RCPT TO:<b@y.example> NOTIFY=NEVER ORCPT=rfc822;b@y.example\r\nDATA\r\n"
            )]
        );
    }

    #[test]
    fn non_pipelined_one_command_at_a_time_with_mixed_outcomes() {
        let mut s = ready(&["8BITMIME"]);
        s.send(tx(
            "<a@x.example>",
            &["<b@y.example>", "<c@y.example>", "<d@y.example>"],
            5,
        ))
        .unwrap();
        assert_eq!(drain(&mut s), [send("MAIL FROM:<a@x.example>\r\n")]);
        assert_eq!(
            feed(&mut s, "250 ok\r\n"),
            [send("RCPT TO:<b@y.example>\r\n")]
        );
        assert_eq!(
            feed(&mut s, "550 5.1.1 no such user\r\n"),
            [send("RCPT TO:<c@y.example>\r\n")]
        );
        assert_eq!(
            feed(&mut s, "251 will forward\r\n"),
            [send("RCPT TO:<d@y.example>\r\n")]
        );
        assert_eq!(
            feed(&mut s, "452 too many recipients\r\n"),
            [send("DATA\r\n")]
        );
        assert_eq!(
            feed(&mut s, "354 go\r\n"),
            [ClientEvent::SendBody { bdat: false }]
        );
        s.body_sent();
        let ev = feed(&mut s, "250 queued\r\n");
        let r = finished(&ev);
        assert_eq!(codes(r), [Err(550), Ok(251), Err(452)]);
        assert_eq!(r.mail.code, 250);
        assert_eq!(r.data.as_ref().map(|d| d.code), Some(250));
        assert_eq!(
            r.delivered_recipients().collect::<Vec<_>>(),
            [&fp("<c@y.example>")]
        );
        assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    }

    #[test]
    fn pipelined_mixed_recipient_outcomes() {
        let mut s = ready(&["PIPELINING"]);
        s.send(tx("<a@x.example>", &["<b@y.example>", "<c@y.example>"], 5))
            .unwrap();
        drain(&mut s);
        assert_eq!(
            feed(&mut s, "250 ok\r\n450 4.2.1 busy\r\n250 ok\r\n354 go\r\n"),
            [ClientEvent::SendBody { bdat: false }]
        );
        s.body_sent();
        let ev = feed(&mut s, "554 5.6.0 content rejected\r\n");
        let r = finished(&ev);
        assert_eq!(codes(r), [Err(450), Ok(250)]);
        assert!(!r.delivered());
        assert_eq!(r.delivered_recipients().count(), 0);
        // The transaction ended with the reply after the body: no RSET needed.
        assert_eq!(ev.last(), Some(&ClientEvent::Ready));
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn all_recipients_rejected() {
        // (pipelining, server replies, client bytes expected after the replies)
        let cases: &[(&[&str], &str, Vec<ClientEvent>)] = &[
            // Pipelined, DATA refused: RSET.
            (
                &["PIPELINING"],
                "250 ok\r\n550 no\r\n554 no valid recipients\r\n",
                vec![send("RSET\r\n")],
            ),
            // Pipelined, DATA got 354 anyway: empty message, then RSET (RFC 2920 3.1).
            (
                &["PIPELINING"],
                "250 ok\r\n550 no\r\n354 go\r\n",
                vec![send(".\r\n"), send("RSET\r\n")],
            ),
            // Not pipelined: RCPT after MAIL's reply, no DATA at all.
            (
                &[],
                "250 ok\r\n550 no\r\n",
                vec![send("RCPT TO:<b@y.example>\r\n"), send("RSET\r\n")],
            ),
        ];
        for (caps, replies, want) in cases {
            let mut s = ready(caps);
            s.send(tx("<a@x.example>", &["<b@y.example>"], 5)).unwrap();
            drain(&mut s);
            let ev: Vec<_> = replies
                .split_inclusive("\r\n")
                .flat_map(|r| feed(&mut s, r))
                .collect();
            let r = finished(&ev);
            assert_eq!(codes(r), [Err(550)]);
            assert!(!r.delivered());
            let sends: Vec<_> = ev
                .iter()
                .filter(|e| matches!(e, ClientEvent::Send(_)))
                .cloned()
                .collect();
            assert_eq!(sends, *want, "{caps:?}");
            if want[0] == send(".\r\n") {
                assert_eq!(feed(&mut s, "554 no recipients\r\n"), []);
            }
            assert_eq!(feed(&mut s, "250 reset\r\n"), [ClientEvent::Ready]);
        }
    }

    #[test]
    fn mail_rejected_without_pipelining() {
        let mut s = ready(&[]);
        s.send(tx("<a@x.example>", &["<b@y.example>", "<c@y.example>"], 5))
            .unwrap();
        drain(&mut s);
        let ev = feed(&mut s, "553 5.1.8 bad sender\r\n");
        let r = finished(&ev);
        assert_eq!(r.mail.code, 553);
        // Recipients never tried carry the MAIL refusal.
        assert_eq!(codes(r), [Err(553), Err(553)]);
        assert_eq!(r.data, None);
        assert_eq!(ev.last(), Some(&send("RSET\r\n")));
        assert_eq!(feed(&mut s, "250 ok\r\n"), [ClientEvent::Ready]);
    }

    #[test]
    fn client_side_refusals_send_nothing() {
        // (capabilities, transaction tweak, expected error, reply code standing for it)
        type Tweak = fn(&mut Transaction);
        let cases: &[(&[&str], Tweak, ClientError, u16)] = &[
            // RFC 1870 6.1: over the advertised fixed maximum.
            (
                &["SIZE 1000"],
                |_| {},
                ClientError::SizeExceeded {
                    size: 2000,
                    limit: 1000,
                },
                552,
            ),
            // RFC 6531 3.4: non-ASCII mailbox, no SMTPUTF8.
            (
                &["8BITMIME"],
                |t| t.recipients[0].0 = fp("<用户@例子.example>"),
                ClientError::Utf8Unsupported,
                553,
            ),
            (
                &["8BITMIME"],
                |t| t.needs_smtputf8 = true,
                ClientError::Utf8Unsupported,
                553,
            ),
            // RFC 6152: no 8BITMIME, no downgrade.
            (
                &["PIPELINING"],
                |t| t.eight_bit = true,
                ClientError::EightBitUnsupported,
                554,
            ),
            // RFC 3030 3: BINARYMIME needs CHUNKING too.
            (
                &["BINARYMIME"],
                |t| t.binary = true,
                ClientError::BinaryUnsupported,
                554,
            ),
            // RFC 8689 4.1: REQUIRETLS without TLS.
            (
                &["REQUIRETLS"],
                |t| t.params.requiretls = true,
                ClientError::RequireTlsUnsupported,
                550,
            ),
        ];
        for (caps, tweak, error, code) in cases {
            let mut s = ready(caps);
            let mut t = tx("<a@x.example>", &["<b@y.example>"], 2000);
            tweak(&mut t);
            s.send(t).unwrap();
            let ev = drain(&mut s);
            assert_eq!(ev.len(), 2, "{error:?}");
            let r = finished(&ev);
            assert_eq!(r.error.as_ref(), Some(error));
            assert!(error.is_permanent());
            assert_eq!(r.mail.code, *code);
            assert_eq!(codes(r), [Err(*code)]);
            assert_eq!(ev[1], ClientEvent::Ready);
        }
    }

    #[test]
    fn size_zero_means_no_limit_and_smtputf8_added() {
        let mut s = ready(&["SIZE 0", "SMTPUTF8", "8BITMIME"]);
        let mut t = tx("<a@x.example>", &["<用户@例子.example>"], 99_999_999);
        t.eight_bit = true;
        s.send(t).unwrap();
        assert_eq!(
            drain(&mut s),
            [send(
                "MAIL FROM:<a@x.example> SIZE=99999999 BODY=8BITMIME SMTPUTF8\r\n"
            )]
        );
    }

    #[test]
    fn binary_message_goes_with_bdat_after_rcpt_replies() {
        // RFC 3030: BODY=BINARYMIME and BDAT; BDAT is sent after the RCPT replies.
        let mut s = ready(&["PIPELINING", "CHUNKING", "BINARYMIME", "8BITMIME"]);
        let mut t = tx("<a@x.example>", &["<b@y.example>"], 42);
        t.binary = true;
        s.send(t).unwrap();
        assert_eq!(
            drain(&mut s),
            [send(
                "MAIL FROM:<a@x.example> BODY=BINARYMIME\r\nRCPT TO:<b@y.example>\r\n"
            )]
        );
        assert_eq!(
            feed(&mut s, "250 ok\r\n250 ok\r\n"),
            [ClientEvent::SendBody { bdat: true }]
        );
        assert_eq!(bdat_command(42), b"BDAT 42 LAST\r\n");
        s.body_sent();
        let ev = feed(&mut s, "250 2.0.0 42 octets received\r\n");
        assert!(finished(&ev).delivered());
        assert_eq!(ev.last(), Some(&ClientEvent::Ready));
    }

    #[test]
    fn reply_before_body_sent_waits() {
        let mut s = ready(&["PIPELINING"]);
        s.send(tx("<a@x.example>", &["<b@y.example>"], 5)).unwrap();
        drain(&mut s);
        feed(&mut s, "250 ok\r\n250 ok\r\n354 go\r\n");
        // A racing driver reads the final reply before telling the session the body is out.
        assert_eq!(feed(&mut s, "250 queued\r\n"), []);
        s.body_sent();
        let ev = drain(&mut s);
        assert!(finished(&ev).delivered());
    }

    #[test]
    fn two_messages_on_one_connection() {
        let mut s = ready(&["PIPELINING", "8BITMIME"]);
        for (i, to) in ["<b@y.example>", "<c@z.example>"].iter().enumerate() {
            s.send(tx("<a@x.example>", &[to], 5)).unwrap();
            assert_eq!(
                drain(&mut s),
                [send(&format!(
                    "MAIL FROM:<a@x.example>\r\nRCPT TO:{to}\r\nDATA\r\n"
                ))]
            );
            assert_eq!(
                feed(&mut s, "250 ok\r\n250 ok\r\n354 go\r\n"),
                [ClientEvent::SendBody { bdat: false }]
            );
            assert!(
                s.send(tx("<a@x.example>", &[to], 5)).is_err(),
                "not ready mid-transaction"
            );
            s.body_sent();
            let ev = feed(&mut s, &format!("250 queued {i}\r\n"));
            assert!(finished(&ev).delivered());
            assert_eq!(ev.last(), Some(&ClientEvent::Ready));
        }
        s.quit();
        assert_eq!(drain(&mut s), [send("QUIT\r\n")]);
        assert_eq!(feed(&mut s, "221 bye\r\n"), [ClientEvent::Closed]);
    }

    #[test]
    fn send_misuse() {
        let mut s = ClientSession::new(config(TlsMode::Never));
        assert_eq!(
            s.send(tx("<>", &["<b@y.example>"], 1)),
            Err(ClientError::NotReady)
        );
        let mut s = ready(&[]);
        assert_eq!(s.send(tx("<>", &[], 1)), Err(ClientError::NoRecipients));
        assert_eq!(drain(&mut s), []);
    }

    #[test]
    fn quit_requested_during_setup_replaces_ready() {
        let mut s = ClientSession::new(config(TlsMode::Never));
        s.quit();
        assert_eq!(drain(&mut s), []);
        feed(&mut s, "220 mx.example\r\n");
        assert_eq!(feed(&mut s, "250 mx.example\r\n"), [send("QUIT\r\n")]);
        assert_eq!(feed(&mut s, "500 whatever\r\n"), [ClientEvent::Closed]);
    }

    // ----- failures: RFC 5321 3.8 (421), 4.2 (malformed replies) -----

    #[test]
    fn service_closing_mid_transaction() {
        let mut s = ready(&["PIPELINING"]);
        s.send(tx("<a@x.example>", &["<b@y.example>", "<c@y.example>"], 5))
            .unwrap();
        drain(&mut s);
        let ev = feed(&mut s, "250 ok\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
        let closing = ClientError::ServiceClosing(Reply::new(
            421,
            Some(EnhancedCode::new(4, 3, 2)),
            "shutting down",
        ));
        assert_eq!(ev.len(), 2);
        let r = finished(&ev);
        assert_eq!(r.error.as_ref(), Some(&closing));
        // The recipient whose reply was the 421 is unknown: transient (451 4.4.2).
        assert_eq!(codes(r), [Ok(250), Err(451)]);
        assert_eq!(r.data, None);
        assert!(!closing.is_permanent());
        assert_eq!(ev[1], ClientEvent::Failed(closing));
        assert_eq!(feed(&mut s, "250 more\r\n"), []);
        s.quit();
        assert_eq!(drain(&mut s), []);
    }

    #[test]
    fn connection_loss_marks_untried_recipients_transient() {
        let mut s = ready(&[]);
        s.send(tx("<a@x.example>", &["<b@y.example>", "<c@y.example>"], 5))
            .unwrap();
        drain(&mut s);
        feed(&mut s, "250 ok\r\n");
        let ev = feed(&mut s, "garbage\r\n");
        let r = finished(&ev);
        assert_eq!(codes(r), [Err(451), Err(451)]);
        assert!(matches!(
            ev.last(),
            Some(ClientEvent::Failed(ClientError::Protocol(_)))
        ));
    }

    #[test]
    fn protocol_errors() {
        // (capabilities, server bytes after Ready) -- each must end in Failed(Protocol).
        let cases: &[(&[&str], &str)] = &[
            (&[], "250 nobody asked\r\n"),
            (&[], "hello\r\n"),
            (&[], "250-a\r\n251 b\r\n"),
            (&[], "2x0 bad\r\n"),
        ];
        for (caps, bytes) in cases {
            let mut s = ready(caps);
            let ev = feed(&mut s, bytes);
            assert!(
                matches!(
                    ev.as_slice(),
                    [ClientEvent::Failed(ClientError::Protocol(_))]
                ),
                "{bytes:?}: {ev:?}"
            );
        }
        // A 421 while idle is the server going away, not a protocol error.
        let mut s = ready(&[]);
        assert!(matches!(
            feed(&mut s, "421 idle timeout\r\n").as_slice(),
            [ClientEvent::Failed(ClientError::ServiceClosing(_))]
        ));
        // An intermediate reply to MAIL.
        let mut s = ready(&[]);
        s.send(tx("<a@x.example>", &["<b@y.example>"], 5)).unwrap();
        drain(&mut s);
        let ev = feed(&mut s, "354 what\r\n");
        assert!(matches!(
            ev.last(),
            Some(ClientEvent::Failed(ClientError::Protocol(_)))
        ));
    }

    // ----- framing: every split point gives the same events -----

    /// Runs a whole session (no TLS), feeding each server turn in the given pieces; the driver
    /// sends two messages, then quits. Returns every event.
    fn run_script(split: impl Fn(&[u8]) -> Vec<&[u8]>) -> Vec<ClientEvent> {
        let turns: [&str; 7] = [
            SEED_GREETING,
            SEED_EHLO,
            "235 2.7.0 ok\r\n",
            "250 ok\r\n250-first\r\n250 ok\r\n550-no\r\n550 such user\r\n354 go\r\n",
            "250 2.0.0 queued\r\n",
            "250 ok\r\n550 no\r\n550 no\r\n503 no valid recipients\r\n",
            "250 reset\r\n",
        ];
        let mut s = ClientSession::new(with_creds(config(TlsMode::Never)));
        let mut all = Vec::new();
        let mut messages = 2;
        let mut turns = turns.iter().chain(std::iter::once(&"221 bye\r\n"));
        loop {
            while let Some(ev) = s.next_event() {
                match &ev {
                    ClientEvent::Ready if messages > 0 => {
                        messages -= 1;
                        s.send(tx("<a@x.example>", &["<b@y.example>", "<c@y.example>"], 9))
                            .unwrap();
                    }
                    ClientEvent::Ready => s.quit(),
                    ClientEvent::SendBody { .. } => s.body_sent(),
                    _ => {}
                }
                all.push(ev);
            }
            let Some(turn) = turns.next() else { break };
            for piece in split(turn.as_bytes()) {
                s.receive(piece);
            }
        }
        all
    }

    #[test]
    fn replies_split_at_every_byte_boundary() {
        let whole = run_script(|t| vec![t]);
        assert_eq!(whole.last(), Some(&ClientEvent::Closed));
        assert_eq!(
            whole
                .iter()
                .filter(|e| matches!(e, ClientEvent::Finished(_)))
                .count(),
            2
        );
        let bytewise = run_script(|t| t.chunks(1).collect());
        assert_eq!(bytewise, whole);
        for at in 1..64 {
            let split = run_script(|t| {
                let at = at.min(t.len());
                vec![&t[..at], &t[at..]]
            });
            assert_eq!(split, whole, "split at {at}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary server bytes in arbitrary pieces never panic, and after Failed/Closed
        /// nothing more happens.
        #[test]
        fn arbitrary_replies_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            prefix in 0usize..4,
        ) {
            let prefixes = ["", "220 x\r\n", "220 x\r\n250-x\r\n250-PIPELINING\r\n250 AUTH LOGIN\r\n",
                "220 x\r\n250-x\r\n250 STARTTLS\r\n"];
            let mut s = ClientSession::new(with_creds(config(TlsMode::Opportunistic)));
            s.receive(prefixes[prefix].as_bytes());
            let mut ended = false;
            for c in &chunks {
                s.receive(c);
                while let Some(ev) = s.next_event() {
                    prop_assert!(!ended, "event after the end: {ev:?}");
                    match ev {
                        ClientEvent::Ready => {
                            let _ = s.send(tx("<a@x.example>", &["<b@y.example>"], 3));
                        }
                        ClientEvent::SendBody { .. } => s.body_sent(),
                        ClientEvent::StartTls => s.tls_established(),
                        ClientEvent::Failed(_) | ClientEvent::Closed => ended = true,
                        _ => {}
                    }
                }
            }
        }
    }

    // ----- LMTP (RFC 2033) -----

    #[test]
    fn lmtp_says_lhlo_and_reads_one_reply_per_accepted_recipient() {
        let mut c = config(TlsMode::Never);
        c.lmtp = true;
        let mut s = ClientSession::new(c);
        assert_eq!(
            feed(&mut s, "220 store.example LMTP\r\n"),
            [send("LHLO client.example\r\n")]
        );
        assert_eq!(
            feed(
                &mut s,
                "250-store.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            ),
            [ClientEvent::Ready]
        );
        s.send(tx(
            "<a@b.example>",
            &["<u1@s.example>", "<u2@s.example>", "<u3@s.example>"],
            10,
        ))
        .unwrap();
        assert_eq!(
            drain(&mut s),
            [send(
                "MAIL FROM:<a@b.example>\r\nRCPT TO:<u1@s.example>\r\nRCPT TO:<u2@s.example>\r\n\
                 RCPT TO:<u3@s.example>\r\nDATA\r\n"
            )]
        );
        let events = feed(
            &mut s,
            "250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n",
        );
        assert_eq!(events, [ClientEvent::SendBody { bdat: false }]);
        s.body_sent();
        // One reply per accepted recipient (u1, u3), in order: the first is not the end.
        assert!(feed(&mut s, "250 2.0.0 u1 saved\r\n").is_empty());
        let events = feed(&mut s, "452 4.2.2 u3 over quota\r\n");
        let r = finished(&events);
        let codes: Vec<Option<u16>> = r
            .per_recipient
            .iter()
            .map(|r| r.as_ref().map(|r| r.code))
            .collect();
        assert_eq!(codes, [Some(250), None, Some(452)]);
        assert_eq!(r.after_body(0).map(|r| r.code), Some(250));
        assert_eq!(r.after_body(1), None);
        assert_eq!(r.after_body(2).map(|r| r.code), Some(452));
        let delivered: Vec<String> = r.delivered_recipients().map(ToString::to_string).collect();
        assert_eq!(delivered, ["<u1@s.example>"]);
        assert!(r.delivered());
        assert_eq!(events.last(), Some(&ClientEvent::Ready));
    }

    #[test]
    fn lmtp_has_no_helo_fallback() {
        let mut c = config(TlsMode::Never);
        c.lmtp = true;
        let mut s = ClientSession::new(c);
        feed(&mut s, "220 store.example LMTP\r\n");
        let events = feed(&mut s, "500 5.5.1 unknown command\r\n");
        assert!(
            matches!(
                events.last(),
                Some(ClientEvent::Failed(ClientError::HeloRejected(_)))
            ),
            "{events:?}"
        );
    }
}
