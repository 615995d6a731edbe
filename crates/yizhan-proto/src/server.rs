//! The receiver-SMTP state machine (RFC 5321 3 and 4.1, RFC 821 4.1, and the extensions yizhan
//! offers).
//!
//! [`ServerSession`] is sans-I/O: the driver pushes bytes with [`ServerSession::receive`] and pulls
//! [`Event`]s with [`ServerSession::next_event`] until it returns `None`, then reads more bytes.
//! Every decision that needs the outside world (is this HELO acceptable, is this recipient ours,
//! is the message stored) is an [`Event::Ask`]; the driver answers it with
//! [`ServerSession::decide`]. While a question is pending the session does not look at further
//! input, it only buffers it: that is how PIPELINING (RFC 2920) works, with replies in order, and
//! how the core never blocks.
//!
//! # The three buffers (RFC 821 4.1.1)
//! The reverse-path, forward-path and mail data buffers live in [`Transaction`]:
//! MAIL, SEND, SOML and SAML start a transaction (clearing all three, filling the reverse-path);
//! RCPT appends to the forward-paths; the end of the mail data hands the whole transaction to the
//! driver and clears it; RSET, HELO and EHLO clear it; VRFY, EXPN, HELP and NOOP touch nothing.
//!
//! # Replies
//! Bad order answers 503 and leaves the state as it was; bad arguments 501; unknown verbs 500;
//! verbs switched off by the configuration 502; unknown or unoffered parameters 555
//! (RFC 5321 4.1.1.11, RFC 1869). After `max_errors` such error replies the session answers 421
//! and closes. Enhanced status codes (RFC 2034) are written once the client has used EHLO and
//! ENHANCEDSTATUSCODES is on.
//!
//! # STARTTLS (RFC 3207)
//! After the `220` to STARTTLS, every byte already received in plaintext is discarded
//! (CVE-2011-0411) and so is anything received until [`ServerSession::tls_established`]; the
//! session then returns to its state before EHLO (no HELO, no transaction, not authenticated).

use std::collections::VecDeque;
use std::fmt;

use base64::Engine as _;

use crate::address::{ForwardPath, Host, ReversePath};
use crate::command::{Body, Command, MailKind, MailParams, RcptParams};
use crate::data::{BdatReader, DataEnd, DataReader};
use crate::ehlo::Capability;
use crate::line::{LineEvent, LineReader};
use crate::reply::Reply;

/// Which ESMTP extensions the session offers (each switchable by the driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870), advertised with `max_message_size`.
    pub size: bool,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// CHUNKING, i.e. BDAT (RFC 3030).
    pub chunking: bool,
    /// BINARYMIME (RFC 3030); only offered together with CHUNKING.
    pub binarymime: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207); offered only while TLS is not active.
    pub starttls: bool,
    /// SASL mechanisms offered with AUTH (RFC 4954); empty means no AUTH.
    pub auth_mechanisms: Vec<String>,
    /// Offer AUTH (and accept the AUTH command) only once TLS is active.
    pub auth_requires_tls: bool,
    /// Also write the `AUTH=LOGIN PLAIN` line that old clients (the seed's JavaMail) look for.
    pub auth_legacy_line: bool,
    /// ETRN (RFC 1985).
    pub etrn: bool,
    /// REQUIRETLS (RFC 8689); offered only while TLS is active.
    pub requiretls: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            pipelining: true,
            size: true,
            eight_bit_mime: true,
            enhanced_status_codes: true,
            smtputf8: true,
            chunking: true,
            binarymime: false,
            dsn: true,
            starttls: false,
            auth_mechanisms: Vec::new(),
            auth_requires_tls: true,
            auth_legacy_line: true,
            etrn: false,
            requiretls: false,
        }
    }
}

/// Which optional verbs the session accepts; a verb switched off is answered 502.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verbs {
    /// VRFY (asked to the driver when on).
    pub vrfy: bool,
    /// EXPN (asked to the driver when on).
    pub expn: bool,
    /// HELP.
    pub help: bool,
    /// SEND (RFC 821).
    pub send: bool,
    /// SOML (RFC 821).
    pub soml: bool,
    /// SAML (RFC 821).
    pub saml: bool,
    /// TURN (RFC 821): asked to the driver when on.
    pub turn: bool,
}

impl Default for Verbs {
    fn default() -> Self {
        Verbs {
            vrfy: true,
            expn: true,
            help: true,
            send: true,
            soml: true,
            saml: true,
            turn: false,
        }
    }
}

/// See [`ServerConfig::max_errors`] (Postfix's `smtpd_hard_error_limit` is 20 too).
pub const DEFAULT_MAX_ERRORS: u32 = 20;
/// See [`ServerConfig::junk_command_limit`].
pub const DEFAULT_JUNK_COMMAND_LIMIT: u32 = 100;
/// See [`ServerConfig::recipient_overshoot_limit`].
pub const DEFAULT_RECIPIENT_OVERSHOOT_LIMIT: usize = 1000;

/// The settings one session runs with (a snapshot taken at accept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The server's name, used in the greeting and replies.
    pub hostname: String,
    /// Longest command line accepted, CRLF included (at least 512, RFC 5321 4.5.3.1.4).
    pub max_line_length: usize,
    /// Largest message accepted, in octets after dot-unstuffing.
    pub max_message_size: u64,
    /// Most recipients in one transaction (RFC 5321 4.5.3.1.8 asks for at least 100).
    pub max_recipients: usize,
    /// Error replies tolerated before the session answers 421 and closes.
    pub max_errors: u32,
    /// NOOP, RSET, VRFY, EXPN, HELP and ETRN commands a session may send before each further
    /// one counts as an error (Postfix's `smtpd_junk_command_limit`).
    pub junk_command_limit: u32,
    /// Recipients a transaction may send past `max_recipients` (each answered 452) before each
    /// further one counts as an error (Postfix's `smtpd_recipient_overshoot_limit`).
    pub recipient_overshoot_limit: usize,
    /// TLS is already active (implicit TLS, RFC 8314).
    pub tls_active: bool,
    /// Extensions offered.
    pub extensions: Extensions,
    /// Optional verbs accepted.
    pub verbs: Verbs,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_string(),
            max_line_length: 2048,
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: DEFAULT_MAX_ERRORS,
            junk_command_limit: DEFAULT_JUNK_COMMAND_LIMIT,
            recipient_overshoot_limit: DEFAULT_RECIPIENT_OVERSHOOT_LIMIT,
            tls_active: false,
            extensions: Extensions::default(),
            verbs: Verbs::default(),
        }
    }
}

/// The current mail transaction: the RFC 821 reverse-path and forward-path buffers (the mail
/// data buffer is streamed to the driver as [`Event::Body`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The verb that started it.
    pub kind: MailKind,
    /// The reverse-path buffer.
    pub from: ReversePath,
    /// MAIL parameters.
    pub params: MailParams,
    /// The forward-path buffer: every recipient the driver accepted, in order.
    pub recipients: Vec<(ForwardPath, RcptParams)>,
    /// Whether any RCPT was tried (to tell 503 "need RCPT" from 554 "no valid recipients").
    rcpt_tried: bool,
    /// Whether BDAT chunks were accepted in this transaction.
    bdat: bool,
    /// Octets of message data received so far (BDAT).
    data_size: u64,
}

/// A decision the session needs from the driver. Answer with [`ServerSession::decide`].
#[derive(Clone, PartialEq, Eq)]
pub enum Question {
    /// HELO (`extended == false`) or EHLO. Accept gives the plain HELO reply or the EHLO
    /// capability list.
    Helo {
        /// The argument.
        host: Host,
        /// EHLO rather than HELO.
        extended: bool,
    },
    /// MAIL, SEND, SOML or SAML. Accept gives 250.
    Mail {
        /// Which verb.
        kind: MailKind,
        /// The reverse-path.
        from: ReversePath,
        /// Its parameters (already checked against the offered extensions).
        params: MailParams,
    },
    /// RCPT. Accept gives 250; a 251 reply also accepts ("will forward"); anything else rejects.
    Rcpt {
        /// The forward-path.
        to: ForwardPath,
        /// Its parameters.
        params: RcptParams,
    },
    /// VRFY with its argument (only asked when VRFY is on).
    Vrfy(String),
    /// EXPN with its argument (only asked when EXPN is on).
    Expn(String),
    /// DATA, or the first BDAT of a transaction: may the message data start? Accept (or, for
    /// DATA, a 3xx reply of the driver's own) gives 354 (DATA) or starts reading the chunk
    /// (BDAT). The driver opens its spool writer here.
    Data,
    /// The message data is complete (every [`Event::Body`] has been delivered). The driver makes
    /// it durable and answers, typically `250 queued as <id>`. The buffers are already cleared.
    EndOfData {
        /// The transaction, moved out of the session.
        transaction: Transaction,
        /// Octets of message data.
        size: u64,
    },
    /// AUTH with a mechanism this session offers and the decoded initial response. Answer with a
    /// 334 challenge to continue, 235 to authenticate, or a failure reply.
    Auth {
        /// The mechanism, upper case.
        mechanism: String,
        /// The decoded initial response, if one was given (`=` is an empty one).
        initial: Option<Vec<u8>>,
    },
    /// The client's decoded answer to a 334 challenge.
    AuthResponse(Vec<u8>),
    /// ETRN with its argument.
    Etrn(String),
    /// TURN (only asked when TURN is on). A 250 makes the session emit [`Event::Turn`].
    Turn,
}

impl Question {
    /// The command that asked it (`EHLO`, `MAIL`, `SEND`, ...; `DATA` for the end of data,
    /// `AUTH` for a SASL answer), for counting.
    pub fn verb(&self) -> &'static str {
        match self {
            Question::Helo { extended: true, .. } => "EHLO",
            Question::Helo { .. } => "HELO",
            Question::Mail { kind, .. } => kind.verb(),
            Question::Rcpt { .. } => "RCPT",
            Question::Vrfy(_) => "VRFY",
            Question::Expn(_) => "EXPN",
            Question::Data | Question::EndOfData { .. } => "DATA",
            Question::Auth { .. } | Question::AuthResponse(_) => "AUTH",
            Question::Etrn(_) => "ETRN",
            Question::Turn => "TURN",
        }
    }
}

impl fmt::Debug for Question {
    // Credentials never reach a log through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Question::Helo { host, extended } => f
                .debug_struct("Helo")
                .field("host", host)
                .field("extended", extended)
                .finish(),
            Question::Mail { kind, from, params } => f
                .debug_struct("Mail")
                .field("kind", kind)
                .field("from", from)
                .field("params", params)
                .finish(),
            Question::Rcpt { to, params } => f
                .debug_struct("Rcpt")
                .field("to", to)
                .field("params", params)
                .finish(),
            Question::Vrfy(s) => f.debug_tuple("Vrfy").field(s).finish(),
            Question::Expn(s) => f.debug_tuple("Expn").field(s).finish(),
            Question::Data => f.write_str("Data"),
            Question::EndOfData { transaction, size } => f
                .debug_struct("EndOfData")
                .field("transaction", transaction)
                .field("size", size)
                .finish(),
            Question::Auth { mechanism, initial } => f
                .debug_struct("Auth")
                .field("mechanism", mechanism)
                .field("initial", &initial.as_ref().map(|_| "<redacted>"))
                .finish(),
            Question::AuthResponse(_) => f.write_str("AuthResponse(<redacted>)"),
            Question::Etrn(s) => f.debug_tuple("Etrn").field(s).finish(),
            Question::Turn => f.write_str("Turn"),
        }
    }
}

/// The driver's answer to a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept with the session's usual positive reply.
    Accept,
    /// Answer with this reply; a 2xx (or 3xx where the question allows one) accepts.
    Reply(Reply),
    /// Answer with this reply and close the connection (for example 421).
    Close(Reply),
}

/// What the driver must do next.
// Events are handled one at a time and never stored in bulk, so the size of the largest
// variant (a question carrying a transaction) costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Answer this question with [`ServerSession::decide`] before anything else happens.
    Ask(Question),
    /// A piece of message data (dot-unstuffed), in order. Written to the spool.
    Body(Vec<u8>),
    /// The message data received so far is void (too big, bare line ending, RSET during BDAT):
    /// the driver discards its spool writer. The session answers the client itself.
    DataAborted,
    /// Do the TLS handshake now (every earlier Send has been emitted), then call
    /// [`ServerSession::tls_established`].
    StartTls,
    /// TURN was accepted: the roles swap; the session is finished with this connection.
    Turn,
    /// Close the connection (every earlier Send has been emitted).
    Close,
}

/// What the session waits for, so the driver can pick the RFC 5321 4.5.3.2 timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a command (5 minutes).
    Command,
    /// Inside DATA or a BDAT chunk (3 minutes per block).
    Data,
    /// Waiting for the driver's decision; no client timeout applies.
    Deciding,
    /// Waiting for the TLS handshake.
    TlsHandshake,
    /// Finished: closed or turned.
    Finished,
}

#[derive(Debug)]
enum State {
    Command,
    AuthResponse,
    Data(DataReader),
    Bdat {
        reader: BdatReader,
        last: bool,
        mode: Chunk,
    },
    TlsPending,
    Finished,
}

/// What happens to the BDAT chunk being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Part of the message.
    Keep,
    /// The message is over the size limit: discarded, answered 552 at the end of the chunk.
    TooBig,
    /// The BDAT command was already refused: consumed silently so it is never read as commands.
    Refused,
}

/// What a pending question was about, with what the session needs to apply the answer.
#[derive(Debug)]
enum Pending {
    Helo {
        host: Host,
        extended: bool,
    },
    Mail {
        kind: MailKind,
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: ForwardPath,
        params: RcptParams,
    },
    Vrfy,
    Expn,
    Data {
        bdat: Option<(u64, bool)>,
    },
    EndOfData {
        /// The message's size, counted in the 221 when accepted.
        size: u64,
    },
    Auth,
    Etrn(String),
    Turn,
}

/// What [`ServerSession::take_commands`] gives for a line that is no command.
pub const UNKNOWN_VERB: &str = "?";

/// The most command verbs kept for [`ServerSession::take_commands`] between two calls.
const MAX_UNTAKEN_COMMANDS: usize = 1024;

/// The receiver-SMTP session. See the module documentation.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    state: State,
    lines: LineReader,
    input: Vec<u8>,
    pos: usize,
    output: Vec<u8>,
    events: VecDeque<Event>,
    /// Emitted once `output` is flushed; ends processing (Close, StartTls, Turn).
    final_event: Option<Event>,
    pending: Option<Pending>,
    helo: Option<Host>,
    extended: bool,
    tls: bool,
    authenticated: bool,
    transaction: Option<Transaction>,
    errors: u32,
    /// Junk commands so far ([`ServerConfig::junk_command_limit`]).
    junk: u32,
    /// RCPT commands of this transaction past `max_recipients`.
    overshoot: usize,
    /// The verbs of the commands read since [`take_commands`](ServerSession::take_commands)
    /// (`"?"` for a line that is no command), for the driver's counts and live view.
    commands: Vec<&'static str>,
    /// Messages accepted (a positive reply at their end) and their octets, for the 221.
    received: (u64, u64),
    /// The dialogue as recorded, when the driver asked for it ([`ServerSession::record`]).
    recorder: crate::transcript::Recorder,
}

impl ServerSession {
    /// A new session; the `220` greeting is the first thing it sends.
    pub fn new(config: ServerConfig) -> Self {
        let greeting = Reply::greeting(&config.hostname);
        Self::with_greeting(config, greeting)
    }

    /// A new session with a greeting chosen by the driver. A greeting that is not 2xx (421 when
    /// too busy, 554 for a refused client) is sent and the connection closed.
    pub fn with_greeting(config: ServerConfig, greeting: Reply) -> Self {
        let lines = LineReader::new(config.max_line_length);
        let tls = config.tls_active;
        let mut session = ServerSession {
            config,
            state: State::Command,
            lines,
            input: Vec::new(),
            pos: 0,
            output: Vec::new(),
            events: VecDeque::new(),
            final_event: None,
            pending: None,
            helo: None,
            extended: false,
            tls,
            authenticated: false,
            transaction: None,
            errors: 0,
            junk: 0,
            overshoot: 0,
            commands: Vec::new(),
            received: (0, 0),
            recorder: crate::transcript::Recorder::default(),
        };
        let refuse = !greeting.is_positive();
        session.reply(&greeting);
        if refuse {
            session.finish(Event::Close);
        }
        session
    }

    /// Push bytes received from the client. Bytes arriving after STARTTLS (before the handshake)
    /// or after the session finished are discarded.
    pub fn receive(&mut self, bytes: &[u8]) {
        if matches!(self.state, State::TlsPending | State::Finished) {
            return;
        }
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next thing the driver must do, or `None` when the session needs more input (or a
    /// decision: an [`Event::Ask`] is emitted once and the session waits for
    /// [`ServerSession::decide`]).
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if self.pending.is_some() || self.final_event.is_some() || !self.step() {
                break;
            }
        }
        if !self.output.is_empty() {
            return Some(Event::Send(std::mem::take(&mut self.output)));
        }
        self.final_event.take()
    }

    /// Answer the pending question. A decision with no question pending is ignored.
    pub fn decide(&mut self, decision: Decision) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let (reply, close) = match decision {
            Decision::Accept => (None, false),
            Decision::Reply(reply) => (Some(reply), false),
            Decision::Close(reply) => (Some(reply), true),
        };
        // A 3xx accepts where the question expects one: 354 for DATA, 334 for AUTH.
        let accepted = match &reply {
            None => true,
            Some(r) => {
                r.is_positive()
                    || (r.is_intermediate()
                        && matches!(pending, Pending::Auth | Pending::Data { bdat: None }))
            }
        };
        match pending {
            Pending::Helo { host, extended } => {
                if accepted {
                    let reply = reply.unwrap_or_else(|| self.helo_reply(&host, extended));
                    self.abort_transaction();
                    self.helo = Some(host);
                    self.extended = extended;
                    self.reply(&reply);
                } else {
                    self.reply_error(reply);
                }
            }
            Pending::Mail { kind, from, params } => {
                if accepted {
                    self.overshoot = 0;
                    self.transaction = Some(Transaction {
                        kind,
                        from,
                        params,
                        recipients: Vec::new(),
                        rcpt_tried: false,
                        bdat: false,
                        data_size: 0,
                    });
                    self.reply(&reply.unwrap_or_else(Reply::sender_ok));
                } else {
                    self.reply_error(reply);
                }
            }
            Pending::Rcpt { to, params } => {
                if let Some(tx) = self.transaction.as_mut() {
                    tx.rcpt_tried = true;
                    if accepted {
                        tx.recipients.push((to, params));
                    }
                }
                if accepted {
                    self.reply(&reply.unwrap_or_else(Reply::recipient_ok));
                } else {
                    self.reply_error(reply);
                }
            }
            Pending::Vrfy | Pending::Expn => {
                let reply = reply.unwrap_or_else(Reply::vrfy_cannot_verify);
                if reply.is_permanent() {
                    self.reply_error(Some(reply));
                } else {
                    self.reply(&reply);
                }
            }
            Pending::Data { bdat } => self.decided_data(bdat, accepted, reply),
            Pending::EndOfData { size } => {
                let reply = reply.unwrap_or_else(Reply::ok);
                if reply.is_positive() {
                    self.received.0 += 1;
                    self.received.1 = self.received.1.saturating_add(size);
                }
                self.reply(&reply);
            }
            Pending::Auth => self.decided_auth(reply),
            Pending::Etrn(node) => {
                let reply = reply.unwrap_or_else(|| Reply::etrn_started(&node));
                self.reply(&reply);
            }
            Pending::Turn => {
                if accepted {
                    self.reply(&reply.unwrap_or_else(Reply::turn_ok));
                    self.finish(Event::Turn);
                } else {
                    self.reply_error(reply);
                }
            }
        }
        if close {
            self.finish(Event::Close);
        }
    }

    /// Call after the TLS handshake that followed [`Event::StartTls`]: the session returns to
    /// its initial state (RFC 3207 4.2) and the client must EHLO again.
    pub fn tls_established(&mut self) {
        if !matches!(self.state, State::TlsPending) {
            return;
        }
        self.tls = true;
        self.state = State::Command;
        self.helo = None;
        self.extended = false;
        self.authenticated = false;
        self.transaction = None;
        self.input.clear();
        self.pos = 0;
        self.lines.reset();
    }

    /// Send `reply` (typically 421, for a shutdown or a timeout) and close. Any transaction in
    /// progress is abandoned ([`Event::DataAborted`] if data had started).
    pub fn close_with(&mut self, reply: Reply) {
        if matches!(self.state, State::Finished) {
            return;
        }
        self.pending = None;
        self.abort_transaction();
        self.reply(&reply);
        self.finish(Event::Close);
    }

    /// What the session is waiting for.
    pub fn phase(&self) -> Phase {
        if self.pending.is_some() {
            return Phase::Deciding;
        }
        match self.state {
            State::Command | State::AuthResponse => Phase::Command,
            State::Data(_) | State::Bdat { .. } => Phase::Data,
            State::TlsPending => Phase::TlsHandshake,
            State::Finished => Phase::Finished,
        }
    }

    /// True between transactions with nothing buffered: a good moment to close for shutdown.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
            && matches!(self.state, State::Command)
            && self.transaction.is_none()
            && self.pos == self.input.len()
            && !self.lines.has_partial()
    }

    /// The HELO/EHLO argument, once accepted.
    pub fn helo(&self) -> Option<&Host> {
        self.helo.as_ref()
    }

    /// Whether the client greeted with EHLO.
    pub fn is_extended(&self) -> bool {
        self.extended
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded on this connection (since the last TLS reset).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The transaction in progress, if any.
    pub fn transaction(&self) -> Option<&Transaction> {
        self.transaction.as_ref()
    }

    /// The configuration this session runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    // ----- processing input -----

    /// Process some buffered input. Returns false when nothing could be done.
    fn step(&mut self) -> bool {
        if self.pos >= self.input.len() {
            return false;
        }
        match std::mem::replace(&mut self.state, State::Command) {
            state @ (State::Command | State::AuthResponse) => {
                self.state = state;
                let (used, line) = self.lines.read(&self.input[self.pos..]);
                self.pos += used;
                match line {
                    Some(LineEvent::Line(line)) => self.handle_line(&line),
                    Some(LineEvent::TooLong) => {
                        if matches!(self.state, State::AuthResponse) {
                            // RFC 4954 4: the exchange is cancelled with 500 5.5.6.
                            self.state = State::Command;
                            self.reply_error(Some(Reply::auth_line_too_long()));
                        } else {
                            self.reply_error(Some(Reply::line_too_long()));
                        }
                    }
                    None => {}
                }
                used > 0
            }
            State::Data(mut reader) => {
                let mut chunk = Vec::new();
                let (used, end) = reader.read(&self.input[self.pos..], &mut chunk);
                self.pos += used;
                if !chunk.is_empty() {
                    if self.recorder.on {
                        self.recorder.body(&chunk);
                    }
                    self.events.push_back(Event::Body(chunk));
                }
                match end {
                    None => self.state = State::Data(reader),
                    Some(end) => {
                        if self.recorder.on {
                            self.recorder.end_of_body(true);
                        }
                        self.data_ended(end, reader.size());
                    }
                }
                true
            }
            State::Bdat {
                mut reader,
                last,
                mode,
            } => {
                let (used, done) = reader.read(&self.input[self.pos..]);
                let chunk = &self.input[self.pos..self.pos + used];
                if mode == Chunk::Keep && !chunk.is_empty() {
                    if self.recorder.on {
                        self.recorder.body(chunk);
                    }
                    self.events.push_back(Event::Body(chunk.to_vec()));
                }
                self.pos += used;
                if done {
                    self.bdat_chunk_done(last, mode);
                } else {
                    self.state = State::Bdat { reader, last, mode };
                }
                true
            }
            state @ (State::TlsPending | State::Finished) => {
                self.state = state;
                false
            }
        }
    }

    fn handle_line(&mut self, line: &[u8]) {
        if matches!(self.state, State::AuthResponse) {
            self.state = State::Command;
            if self.recorder.on {
                self.recorder.auth_answer(line);
            }
            self.auth_line(line);
            return;
        }
        if self.recorder.on {
            self.recorder.command(line);
        }
        let command = Command::parse(line);
        // RFC 2920 3.1: without PIPELINING offered, a client waits for every reply. A BDAT
        // chunk is not a command: it follows its BDAT by definition.
        let bdat = matches!(command, Ok(Command::Bdat { .. }));
        if !bdat && self.input_behind() && !self.pipelining_offered() {
            return self.refuse_pipelining();
        }
        // Bounded for a driver that never takes them: the oldest are dropped.
        if self.commands.len() == MAX_UNTAKEN_COMMANDS {
            self.commands.remove(0);
        }
        self.commands
            .push(command.as_ref().map_or(UNKNOWN_VERB, Command::verb));
        match command {
            Ok(command) => self.command(command),
            Err(error) => self.reply_error(Some(error.reply())),
        }
    }

    /// Whether PIPELINING was offered to this client (it said EHLO and the extension is on).
    fn pipelining_offered(&self) -> bool {
        self.extended && self.config.extensions.pipelining
    }

    /// Whether the client has sent more than what is being processed.
    fn input_behind(&self) -> bool {
        self.pos < self.input.len()
    }

    /// 554 5.5.0 and close: what the client sent without waiting is never run as commands.
    fn refuse_pipelining(&mut self) {
        self.input.clear();
        self.pos = 0;
        let host = self.config.hostname.clone();
        self.close_with(Reply::improper_pipelining(&host));
    }

    /// A refused DATA: with input already behind it (the message text, sent without waiting
    /// for the 354), that input must not be read as commands (RFC 2920 3.1), so the session
    /// ends; otherwise the refusal is an ordinary error reply.
    fn refuse_data(&mut self, reply: Option<Reply>) {
        if self.input_behind() {
            self.refuse_pipelining();
        } else {
            self.reply_error(reply);
        }
    }

    fn command(&mut self, command: Command) {
        let junk = matches!(
            command,
            Command::Noop(_)
                | Command::Rset
                | Command::Vrfy(_)
                | Command::Expn(_)
                | Command::Help(_)
                | Command::Etrn(_)
        );
        if junk {
            self.junk = self.junk.saturating_add(1);
            if self.junk > self.config.junk_command_limit && self.count_error() {
                return;
            }
        }
        match command {
            Command::Helo(host) => self.ask(
                Pending::Helo {
                    host: host.clone(),
                    extended: false,
                },
                Question::Helo {
                    host,
                    extended: false,
                },
            ),
            Command::Ehlo(host) => self.ask(
                Pending::Helo {
                    host: host.clone(),
                    extended: true,
                },
                Question::Helo {
                    host,
                    extended: true,
                },
            ),
            Command::Mail { kind, from, params } => self.mail(kind, from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_transaction();
                self.reply(&Reply::reset_ok());
            }
            Command::Noop(_) => self.reply(&Reply::noop_ok()),
            Command::Quit => {
                self.abort_transaction();
                // As the seed article's server does: what the session carried.
                let (messages, octets) = self.received;
                let reply = Reply::closing(&self.config.hostname, messages, octets);
                self.reply(&reply);
                self.finish(Event::Close);
            }
            Command::Help(topic) => self.help(topic),
            Command::Vrfy(arg) => {
                if self.config.verbs.vrfy {
                    self.ask(Pending::Vrfy, Question::Vrfy(arg));
                } else {
                    self.reply_error(Some(Reply::disabled("VRFY")));
                }
            }
            Command::Expn(arg) => {
                if self.config.verbs.expn {
                    self.ask(Pending::Expn, Question::Expn(arg));
                } else {
                    self.reply_error(Some(Reply::disabled("EXPN")));
                }
            }
            Command::Turn => {
                if !self.config.verbs.turn {
                    self.reply_error(Some(Reply::turn_refused()));
                } else if self.helo.is_none() {
                    self.reply_error(Some(Reply::need_helo()));
                } else if self.transaction.is_some() {
                    self.reply_error(Some(Reply::nested_mail()));
                } else {
                    self.ask(Pending::Turn, Question::Turn);
                }
            }
            Command::Etrn(node) => {
                if !self.config.extensions.etrn {
                    self.reply_error(Some(Reply::disabled("ETRN")));
                } else if self.helo.is_none() {
                    self.reply_error(Some(Reply::need_helo()));
                } else if self.transaction.is_some() {
                    self.reply_error(Some(Reply::nested_mail()));
                } else {
                    self.ask(Pending::Etrn(node.clone()), Question::Etrn(node));
                }
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
        }
    }

    fn mail(&mut self, kind: MailKind, from: ReversePath, params: MailParams) {
        let verbs = &self.config.verbs;
        let (enabled, verb) = match kind {
            MailKind::Mail => (true, "MAIL"),
            MailKind::Send => (verbs.send, "SEND"),
            MailKind::Soml => (verbs.soml, "SOML"),
            MailKind::Saml => (verbs.saml, "SAML"),
        };
        if !enabled {
            return self.reply_error(Some(Reply::disabled(verb)));
        }
        if self.helo.is_none() {
            return self.reply_error(Some(Reply::need_helo()));
        }
        if self.transaction.is_some() {
            return self.reply_error(Some(Reply::nested_mail()));
        }
        if let Err(reply) = self.check_mail_params(&params) {
            return self.reply_error(Some(reply));
        }
        let ascii = match &from {
            ReversePath::Null => true,
            ReversePath::Path(path) => {
                path.mailbox.is_ascii() && path.route.iter().all(|d| d.is_ascii())
            }
        };
        if !ascii && !params.smtputf8 {
            return self.reply_error(Some(Reply::needs_smtputf8()));
        }
        self.ask(
            Pending::Mail {
                kind,
                from: from.clone(),
                params: params.clone(),
            },
            Question::Mail { kind, from, params },
        );
    }

    /// Checks MAIL parameters against what this session offered (RFC 1869 6: a parameter of an
    /// extension that was not offered is not recognised).
    fn check_mail_params(&self, params: &MailParams) -> Result<(), Reply> {
        let ext = &self.config.extensions;
        let esmtp = self.extended;
        if let Some(size) = params.size {
            if !(esmtp && ext.size) {
                return Err(Reply::parameter_not_implemented("SIZE"));
            }
            if size > self.config.max_message_size {
                return Err(Reply::size_exceeds_limit(self.config.max_message_size));
            }
        }
        match params.body {
            None | Some(Body::SevenBit) if esmtp || params.body.is_none() => {}
            Some(Body::EightBitMime) if esmtp && ext.eight_bit_mime => {}
            Some(Body::BinaryMime) if esmtp && ext.chunking && ext.binarymime => {}
            Some(_) => return Err(Reply::parameter_not_implemented("BODY")),
            None => {}
        }
        if params.smtputf8 && !(esmtp && ext.smtputf8) {
            return Err(Reply::parameter_not_implemented("SMTPUTF8"));
        }
        if (params.ret.is_some() || params.envid.is_some()) && !(esmtp && ext.dsn) {
            let name = if params.ret.is_some() { "RET" } else { "ENVID" };
            return Err(Reply::parameter_not_implemented(name));
        }
        if params.auth.is_some() && !(esmtp && self.auth_offered()) {
            return Err(Reply::parameter_not_implemented("AUTH"));
        }
        if params.requiretls && !(esmtp && ext.requiretls && self.tls) {
            return Err(Reply::parameter_not_implemented("REQUIRETLS"));
        }
        Ok(())
    }

    fn rcpt(&mut self, to: ForwardPath, params: RcptParams) {
        let Some(tx) = &self.transaction else {
            return self.reply_error(Some(Reply::need_mail()));
        };
        if tx.bdat {
            return self.reply_error(Some(Reply::mixed_data_bdat()));
        }
        if tx.recipients.len() >= self.config.max_recipients {
            // 452 is not counted as a client error: RFC 5321 4.5.3.1.10 expects clients to
            // send the rest in another transaction. Far past the limit, each one is.
            self.reply(&Reply::too_many_recipients());
            self.overshoot += 1;
            if self.overshoot > self.config.recipient_overshoot_limit {
                self.count_error();
            }
            return;
        }
        if (params.notify.is_some() || params.orcpt.is_some())
            && !(self.extended && self.config.extensions.dsn)
        {
            let name = if params.notify.is_some() {
                "NOTIFY"
            } else {
                "ORCPT"
            };
            return self.reply_error(Some(Reply::parameter_not_implemented(name)));
        }
        let ascii = match &to {
            ForwardPath::Postmaster => true,
            ForwardPath::Path(path) => {
                path.mailbox.is_ascii() && path.route.iter().all(|d| d.is_ascii())
            }
        };
        if !ascii && !tx.params.smtputf8 {
            return self.reply_error(Some(Reply::needs_smtputf8()));
        }
        self.ask(
            Pending::Rcpt {
                to: to.clone(),
                params: params.clone(),
            },
            Question::Rcpt { to, params },
        );
    }

    /// Checks that a transaction can take message data; the reply when it cannot.
    fn data_ready(&self) -> Result<(), Reply> {
        let Some(tx) = &self.transaction else {
            return Err(Reply::need_mail());
        };
        if tx.recipients.is_empty() {
            return Err(if tx.rcpt_tried {
                Reply::no_valid_recipients()
            } else {
                Reply::need_rcpt()
            });
        }
        Ok(())
    }

    fn data(&mut self) {
        if let Err(reply) = self.data_ready() {
            return self.refuse_data(Some(reply));
        }
        let tx = self.transaction.as_ref();
        if tx.is_some_and(|tx| tx.bdat) {
            return self.refuse_data(Some(Reply::mixed_data_bdat()));
        }
        if tx.is_some_and(|tx| tx.params.body == Some(Body::BinaryMime)) {
            return self.refuse_data(Some(Reply::binarymime_needs_bdat()));
        }
        self.ask(Pending::Data { bdat: None }, Question::Data);
    }

    fn bdat(&mut self, size: u64, last: bool) {
        // The chunk follows the command whatever we answer: it is always consumed, never
        // read as commands (RFC 3030 2).
        if !(self.extended && self.config.extensions.chunking) {
            self.discard_chunk(size, last);
            let reply = if self.config.extensions.chunking {
                Reply::needs_ehlo("BDAT")
            } else {
                Reply::disabled("BDAT")
            };
            return self.reply_error(Some(reply));
        }
        if let Err(reply) = self.data_ready() {
            self.discard_chunk(size, last);
            return self.reply_error(Some(reply));
        }
        let started = self.transaction.as_ref().is_some_and(|tx| tx.bdat);
        if started {
            self.start_chunk(size, last);
        } else {
            self.ask(
                Pending::Data {
                    bdat: Some((size, last)),
                },
                Question::Data,
            );
        }
    }

    fn start_chunk(&mut self, size: u64, last: bool) {
        let over = self
            .transaction
            .as_ref()
            .map_or(0, |tx| tx.data_size)
            .saturating_add(size)
            > self.config.max_message_size;
        if let Some(tx) = self.transaction.as_mut() {
            tx.bdat = true;
            tx.data_size = tx.data_size.saturating_add(size);
        }
        let mode = if over { Chunk::TooBig } else { Chunk::Keep };
        self.read_chunk(size, last, mode);
    }

    fn read_chunk(&mut self, size: u64, last: bool, mode: Chunk) {
        if size == 0 {
            // Nothing to read: `BDAT 0 LAST` ends the message at once.
            self.state = State::Command;
            self.bdat_chunk_done(last, mode);
        } else {
            self.state = State::Bdat {
                reader: BdatReader::new(size),
                last,
                mode,
            };
        }
    }

    /// Consumes a refused chunk; its reply has been queued already.
    fn discard_chunk(&mut self, size: u64, last: bool) {
        self.read_chunk(size, last, Chunk::Refused);
    }

    fn bdat_chunk_done(&mut self, last: bool, mode: Chunk) {
        let size = self.transaction.as_ref().map_or(0, |tx| tx.data_size);
        if mode == Chunk::Refused {
            return;
        }
        if mode == Chunk::TooBig {
            self.recorder.drop_body();
            self.events.push_back(Event::DataAborted);
            self.transaction = None;
            self.reply_error(Some(Reply::message_too_big(self.config.max_message_size)));
            return;
        }
        if last {
            if self.recorder.on {
                self.recorder.end_of_body(false);
            }
            if let Some(transaction) = self.transaction.take() {
                self.ask(
                    Pending::EndOfData { size },
                    Question::EndOfData { transaction, size },
                );
            }
        } else {
            self.reply(&Reply::bdat_chunk_ok(size));
        }
    }

    fn decided_data(&mut self, bdat: Option<(u64, bool)>, accepted: bool, reply: Option<Reply>) {
        match (bdat, accepted) {
            (None, true) => {
                self.reply(&reply.unwrap_or_else(Reply::start_data));
                self.state = State::Data(DataReader::new(self.config.max_message_size));
            }
            (None, false) => self.refuse_data(reply),
            (Some((size, last)), true) => self.start_chunk(size, last),
            (Some((size, last)), false) => {
                // The transaction cannot take data: consume the chunk, answer, and end it.
                self.transaction = None;
                self.discard_chunk(size, last);
                self.reply_error(reply);
            }
        }
    }

    fn data_ended(&mut self, end: DataEnd, size: u64) {
        let transaction = self.transaction.take();
        match end {
            DataEnd::Complete => {
                if let Some(transaction) = transaction {
                    self.ask(
                        Pending::EndOfData { size },
                        Question::EndOfData { transaction, size },
                    );
                }
            }
            DataEnd::TooBig => {
                self.recorder.drop_body();
                self.events.push_back(Event::DataAborted);
                self.reply_error(Some(Reply::message_too_big(self.config.max_message_size)));
            }
            DataEnd::BareLineEnding => {
                self.recorder.drop_body();
                self.events.push_back(Event::DataAborted);
                self.reply_error(Some(Reply::bare_line_ending()));
            }
        }
    }

    fn help(&mut self, topic: Option<String>) {
        if !self.config.verbs.help {
            return self.reply_error(Some(Reply::disabled("HELP")));
        }
        match topic {
            None => {
                let verbs = self.enabled_verbs();
                self.reply(&Reply::help_general(&verbs));
            }
            Some(topic) => {
                let upper = topic.trim().to_ascii_uppercase();
                let offered = self.enabled_verbs().contains(&upper.as_str());
                match self.help_syntax(&upper) {
                    Some(syntax) if offered => self.reply(&Reply::help_topic(&syntax)),
                    // A verb yizhan knows but this session does not offer: said so.
                    Some(syntax) => self.reply(&Reply::help_not_offered(&upper, &syntax)),
                    None => self.reply_error(Some(Reply::help_unknown(&topic))),
                }
            }
        }
    }

    /// The syntax of `verb` (upper case) as this session offers it: MAIL and RCPT list only
    /// the parameters of the extensions offered now.
    fn help_syntax(&self, verb: &str) -> Option<String> {
        let e = &self.config.extensions;
        let esmtp = self.extended;
        match verb {
            "MAIL" => {
                let mut text = String::from("MAIL FROM:<reverse-path>");
                let mut param = |on: bool, p: &str| {
                    if on {
                        text.push_str(" [");
                        text.push_str(p);
                        text.push(']');
                    }
                };
                param(esmtp && e.size, "SIZE=n");
                let body = match (e.eight_bit_mime, e.binarymime && e.chunking) {
                    (_, true) => "BODY=7BIT|8BITMIME|BINARYMIME",
                    (true, false) => "BODY=7BIT|8BITMIME",
                    (false, false) => "BODY=7BIT",
                };
                param(esmtp && (e.eight_bit_mime || e.binarymime), body);
                param(esmtp && e.smtputf8, "SMTPUTF8");
                param(esmtp && e.dsn, "RET=FULL|HDRS");
                param(esmtp && e.dsn, "ENVID=id");
                param(esmtp && self.auth_offered(), "AUTH=mailbox");
                param(esmtp && e.requiretls && self.tls, "REQUIRETLS");
                Some(text)
            }
            "RCPT" if esmtp && e.dsn => Some(
                "RCPT TO:<forward-path> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY] [ORCPT=type;address]"
                    .to_owned(),
            ),
            "RCPT" => Some("RCPT TO:<forward-path>".to_owned()),
            other => Reply::help_syntax(other).map(str::to_owned),
        }
    }

    /// The verbs this session accepts, for HELP: the ESMTP ones (BDAT, STARTTLS, AUTH) only
    /// after EHLO, where they can be used.
    fn enabled_verbs(&self) -> Vec<&'static str> {
        let v = &self.config.verbs;
        let e = &self.config.extensions;
        let mut verbs = vec!["HELO", "EHLO", "MAIL", "RCPT", "DATA"];
        if e.chunking && self.extended {
            verbs.push("BDAT");
        }
        verbs.extend(["RSET", "NOOP", "QUIT", "HELP"]);
        for (on, verb) in [
            (v.vrfy, "VRFY"),
            (v.expn, "EXPN"),
            (v.send, "SEND"),
            (v.soml, "SOML"),
            (v.saml, "SAML"),
            (v.turn, "TURN"),
            (e.etrn, "ETRN"),
            (e.starttls && !self.tls && self.extended, "STARTTLS"),
            (self.auth_offered() && self.extended, "AUTH"),
        ] {
            if on {
                verbs.push(verb);
            }
        }
        verbs
    }

    fn starttls(&mut self) {
        if self.tls {
            return self.reply_error(Some(Reply::tls_already_active()));
        }
        if !self.config.extensions.starttls {
            return self.reply_error(Some(Reply::disabled("STARTTLS")));
        }
        if self.transaction.is_some() {
            return self.reply_error(Some(Reply::nested_mail()));
        }
        self.reply(&Reply::starttls_ready());
        // CVE-2011-0411: nothing received in plaintext after STARTTLS may be executed.
        self.input.clear();
        self.pos = 0;
        self.lines.reset();
        self.state = State::TlsPending;
        self.final_event = Some(Event::StartTls);
    }

    fn auth_offered(&self) -> bool {
        let ext = &self.config.extensions;
        !ext.auth_mechanisms.is_empty() && (self.tls || !ext.auth_requires_tls)
    }

    fn auth(&mut self, mechanism: String, initial: Option<String>) {
        let ext = &self.config.extensions;
        if ext.auth_mechanisms.is_empty() {
            return self.reply_error(Some(Reply::disabled("AUTH")));
        }
        if !self.auth_offered() {
            return self.reply_error(Some(Reply::auth_needs_tls()));
        }
        if self.helo.is_none() || !self.extended {
            return self.reply_error(Some(Reply::need_helo()));
        }
        if self.authenticated {
            return self.reply_error(Some(Reply::auth_already()));
        }
        if self.transaction.is_some() {
            return self.reply_error(Some(Reply::auth_in_transaction()));
        }
        if !ext
            .auth_mechanisms
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&mechanism))
        {
            return self.reply_error(Some(Reply::auth_mechanism_unknown()));
        }
        let initial = match initial.as_deref() {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(text) => match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => Some(bytes),
                Err(_) => return self.reply_error(Some(Reply::auth_bad_base64())),
            },
        };
        self.ask(Pending::Auth, Question::Auth { mechanism, initial });
    }

    fn auth_line(&mut self, line: &[u8]) {
        if line == b"*" {
            return self.reply_error(Some(Reply::auth_cancelled()));
        }
        match base64::engine::general_purpose::STANDARD.decode(line) {
            Ok(bytes) => self.ask(Pending::Auth, Question::AuthResponse(bytes)),
            Err(_) => self.reply_error(Some(Reply::auth_bad_base64())),
        }
    }

    fn decided_auth(&mut self, reply: Option<Reply>) {
        let reply = reply.unwrap_or_else(Reply::auth_ok);
        if reply.code == 334 {
            self.state = State::AuthResponse;
            self.reply(&reply);
        } else if reply.is_positive() {
            self.authenticated = true;
            self.reply(&reply);
        } else {
            self.reply_error(Some(reply));
        }
    }

    fn helo_reply(&self, host: &Host, extended: bool) -> Reply {
        if !extended {
            return Reply::helo_ok(&self.config.hostname);
        }
        let lines: Vec<String> = self.capabilities().iter().map(|c| c.to_string()).collect();
        Reply::ehlo_ok(&self.config.hostname, &host.to_string(), &lines)
    }

    /// The EHLO capability list, as this session offers it right now.
    pub fn capabilities(&self) -> Vec<Capability> {
        let ext = &self.config.extensions;
        let mut caps = Vec::new();
        if ext.pipelining {
            caps.push(Capability::Pipelining);
        }
        if ext.size {
            caps.push(Capability::Size(Some(self.config.max_message_size)));
        }
        if ext.eight_bit_mime {
            caps.push(Capability::EightBitMime);
        }
        if ext.enhanced_status_codes {
            caps.push(Capability::EnhancedStatusCodes);
        }
        if ext.smtputf8 {
            caps.push(Capability::SmtpUtf8);
        }
        if ext.chunking {
            caps.push(Capability::Chunking);
            if ext.binarymime {
                caps.push(Capability::BinaryMime);
            }
        }
        if ext.dsn {
            caps.push(Capability::Dsn);
        }
        if ext.starttls && !self.tls {
            caps.push(Capability::StartTls);
        }
        if self.auth_offered() {
            caps.push(Capability::Auth(ext.auth_mechanisms.clone()));
            if ext.auth_legacy_line {
                caps.push(Capability::AuthLegacy(ext.auth_mechanisms.clone()));
            }
        }
        if ext.etrn {
            caps.push(Capability::Etrn);
        }
        if ext.requiretls && self.tls {
            caps.push(Capability::RequireTls);
        }
        if self.config.verbs.help {
            caps.push(Capability::Help);
        }
        caps
    }

    // ----- output -----

    fn ask(&mut self, pending: Pending, question: Question) {
        self.pending = Some(pending);
        self.events.push_back(Event::Ask(question));
    }

    fn reply(&mut self, reply: &Reply) {
        let enhanced = self.extended && self.config.extensions.enhanced_status_codes;
        let start = self.output.len();
        reply.write_to(&mut self.output, enhanced);
        if self.recorder.on {
            let written = self.output[start..].to_vec();
            self.recorder.reply(&written);
        }
    }

    /// Sends a negative reply and counts it; too many errors end the session with 421.
    fn reply_error(&mut self, reply: Option<Reply>) {
        let reply = reply.unwrap_or_else(Reply::local_error);
        self.reply(&reply);
        if reply.is_permanent() {
            self.count_error();
        }
    }

    /// Counts one client error; at `max_errors` the session answers 421 and closes (returns
    /// true then).
    fn count_error(&mut self) -> bool {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_errors && self.final_event.is_none() {
            let host = self.config.hostname.clone();
            self.close_with(Reply::too_many_errors(&host));
        }
        self.final_event.is_some()
    }

    /// The verbs of the commands read since the last call, oldest first (every command,
    /// NOOP, RSET and QUIT too; [`UNKNOWN_VERB`] for a line that is no command).
    pub fn take_commands(&mut self) -> std::vec::Drain<'_, &'static str> {
        self.commands.drain(..)
    }

    /// Records the dialogue from now on (the greeting too, if not sent yet): command and reply
    /// lines, AUTH answers masked, the message text summarised unless `bodies` is given: then
    /// the text itself is kept, up to that many octets of each message (the rest counted, not
    /// held). Take what was recorded with [`take_transcript`](Self::take_transcript).
    pub fn record(&mut self, bodies: Option<usize>) {
        self.recorder.start(bodies);
        if !self.output.is_empty() {
            let output = self.output.clone();
            self.recorder.reply(&output);
        }
    }

    /// What was recorded since the last call (nothing unless [`record`](Self::record) was
    /// called).
    pub fn take_transcript(&mut self) -> Vec<crate::transcript::Said> {
        std::mem::take(&mut self.recorder.said)
    }

    /// Adds the driver's note to the recording (TLS begun, ...).
    pub fn note(&mut self, text: String) {
        if self.recorder.on {
            self.recorder.said.push(crate::transcript::Said::Note(text));
        }
    }

    /// The client errors counted so far (the driver slows its replies down past a soft
    /// limit, as Postfix's `smtpd_soft_error_limit` does).
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Clears the transaction (RSET, HELO, EHLO, QUIT); tells the driver if data had started.
    fn abort_transaction(&mut self) {
        // A refused BDAT chunk is only being skipped: no data was started for the driver.
        let had_data = self.transaction.as_ref().is_some_and(|tx| tx.bdat)
            || matches!(
                self.state,
                State::Data(_)
                    | State::Bdat {
                        mode: Chunk::Keep | Chunk::TooBig,
                        ..
                    }
            );
        if had_data {
            self.recorder.drop_body();
            self.events.push_back(Event::DataAborted);
        }
        if matches!(self.state, State::Data(_) | State::Bdat { .. }) {
            self.state = State::Command;
        }
        self.transaction = None;
    }

    fn finish(&mut self, event: Event) {
        self.state = State::Finished;
        self.final_event = Some(event);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ServerConfig {
        ServerConfig {
            hostname: "mx.test".to_string(),
            ..ServerConfig::default()
        }
    }

    /// Every event until the session needs input, without answering anything.
    fn events(session: &mut ServerSession) -> Vec<Event> {
        std::iter::from_fn(|| session.next_event()).collect()
    }

    fn send(text: &str) -> Event {
        Event::Send(text.as_bytes().to_vec())
    }

    /// Drives `session`, accepting every question (`250 queued as Q` at end of data); returns
    /// what was written and every other event, in order.
    fn drive(session: &mut ServerSession) -> (String, Vec<Event>) {
        let mut out = String::new();
        let mut other = Vec::new();
        while let Some(event) = session.next_event() {
            match event {
                Event::Send(bytes) => out.push_str(&String::from_utf8_lossy(&bytes)),
                Event::Ask(Question::EndOfData { transaction, size }) => {
                    other.push(Event::Ask(Question::EndOfData { transaction, size }));
                    session.decide(Decision::Reply(Reply::queued("Q")));
                }
                Event::Ask(question) => {
                    other.push(Event::Ask(question));
                    session.decide(Decision::Accept);
                }
                Event::StartTls => {
                    other.push(Event::StartTls);
                    session.tls_established();
                }
                event => other.push(event),
            }
        }
        (out, other)
    }

    /// A session past its greeting and EHLO.
    fn greeted(config: ServerConfig) -> ServerSession {
        let mut session = ServerSession::new(config);
        session.receive(b"EHLO client.test\r\n");
        drive(&mut session);
        session
    }

    // ---- events and their order (RFC 2920 3.1: replies in order; RFC 3207 4; RFC 5321 4.1.1.10)

    #[test]
    fn questions_come_before_the_batched_replies() {
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nNOOP\r\n");
        assert!(matches!(
            session.next_event(),
            Some(Event::Ask(Question::Mail { .. }))
        ));
        // Asked once: until the decision only the pending output (none yet) comes out.
        assert_eq!(session.next_event(), None);
        assert_eq!(session.phase(), Phase::Deciding);
        session.decide(Decision::Accept);
        assert!(matches!(
            session.next_event(),
            Some(Event::Ask(Question::Rcpt { .. }))
        ));
        // The 250 to MAIL is written, but held back in the batch while RCPT is pending.
        assert_eq!(
            session.next_event(),
            Some(send("250 2.1.0 Sender OK\r\n")),
            "pending output is flushed while waiting"
        );
        session.decide(Decision::Reply(Reply::no_such_user("<c@d.test>")));
        assert_eq!(
            events(&mut session),
            vec![send(
                "550 5.1.1 No such user: <c@d.test>\r\n250 2.0.0 OK\r\n"
            )]
        );
    }

    #[test]
    fn starttls_comes_after_its_220_and_discards_pipelined_plaintext() {
        let mut cfg = config();
        cfg.extensions.starttls = true;
        let mut session = greeted(cfg);
        session.receive(b"STARTTLS\r\nMAIL FROM:<a@b.test>\r\nNO");
        assert_eq!(
            events(&mut session),
            vec![send("220 2.0.0 Ready to start TLS\r\n"), Event::StartTls]
        );
        assert_eq!(session.phase(), Phase::TlsHandshake);
        // Plaintext arriving before the handshake completes is dropped too.
        session.receive(b"OP\r\nNOOP\r\n");
        assert_eq!(session.next_event(), None);
        session.tls_established();
        assert!(session.is_tls());
        assert!(session.helo().is_none());
        assert!(!session.is_extended());
        assert!(session.is_idle());
        session.receive(b"NOOP\r\n");
        assert_eq!(events(&mut session), vec![send("250 OK\r\n")]);
        // A second call does nothing (only valid right after StartTls).
        session.tls_established();
        assert_eq!(session.phase(), Phase::Command);
    }

    #[test]
    fn close_comes_after_221_and_later_input_is_ignored() {
        let mut session = greeted(config());
        session.receive(b"QUIT\r\nNOOP\r\n");
        assert_eq!(
            events(&mut session),
            vec![
                send("221 2.0.0 mx.test Service closing transmission channel\r\n"),
                Event::Close
            ]
        );
        assert_eq!(session.phase(), Phase::Finished);
        session.receive(b"NOOP\r\n");
        assert_eq!(session.next_event(), None);
        session.close_with(Reply::shutting_down("mx.test"));
        assert_eq!(session.next_event(), None);
    }

    #[test]
    fn decide_without_a_question_is_ignored() {
        let mut session = ServerSession::new(config());
        assert_eq!(
            events(&mut session),
            vec![send("220 mx.test ESMTP yizhan\r\n")]
        );
        session.decide(Decision::Close(Reply::shutting_down("x")));
        assert_eq!(session.next_event(), None);
        assert_eq!(session.phase(), Phase::Command);
    }

    #[test]
    fn refused_greeting_closes() {
        let reply = Reply::too_many_connections("mx.test");
        let mut session = ServerSession::with_greeting(config(), reply);
        assert_eq!(
            events(&mut session),
            vec![
                send("421 mx.test Too many connections, try again later\r\n"),
                Event::Close
            ]
        );
    }

    #[test]
    fn close_decision_answers_then_closes() {
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test>\r\nNOOP\r\n");
        assert!(matches!(session.next_event(), Some(Event::Ask(_))));
        session.decide(Decision::Close(Reply::shutting_down("mx.test")));
        assert_eq!(
            events(&mut session),
            vec![
                send("421 4.3.2 mx.test Service shutting down, closing transmission channel\r\n"),
                Event::Close
            ]
        );
    }

    // ---- phase() and is_idle() (RFC 5321 4.5.3.2 timeouts)

    #[test]
    fn phase_and_idle_follow_the_session() {
        let mut session = ServerSession::new(config());
        events(&mut session);
        assert_eq!((session.phase(), session.is_idle()), (Phase::Command, true));
        session.receive(b"EH");
        assert_eq!(session.next_event(), None);
        assert!(!session.is_idle(), "a partial line is buffered");
        session.receive(b"LO c.test\r\n");
        assert!(matches!(session.next_event(), Some(Event::Ask(_))));
        assert_eq!(
            (session.phase(), session.is_idle()),
            (Phase::Deciding, false)
        );
        session.decide(Decision::Accept);
        drive(&mut session);
        assert!(session.is_idle());
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
        drive(&mut session);
        assert_eq!(
            (session.phase(), session.is_idle()),
            (Phase::Command, false)
        );
        session.receive(b"DATA\r\n");
        drive(&mut session);
        assert_eq!(session.phase(), Phase::Data);
        session.receive(b".\r\n");
        drive(&mut session);
        assert_eq!((session.phase(), session.is_idle()), (Phase::Command, true));
        session.close_with(Reply::timeout("mx.test"));
        assert_eq!(session.phase(), Phase::Finished);
    }

    // ---- the RFC 821 buffers (RFC 821 4.1.1, RFC 5321 4.1.1)

    #[test]
    fn transaction_holds_the_buffers_and_end_of_data_hands_them_over() {
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test> SIZE=10\r\nRCPT TO:<c@d.test>\r\n");
        session.receive(b"RCPT TO:<e@d.test>\r\nVRFY x\r\nNOOP\r\nHELP\r\n");
        drive(&mut session);
        let tx = session.transaction().expect("transaction open");
        assert_eq!(tx.from.to_string(), "<a@b.test>");
        assert_eq!(tx.params.size, Some(10));
        assert_eq!(tx.recipients.len(), 2);
        // RFC 5321 4.5.2: one leading dot removed; only CRLF.CRLF ends the data.
        session.receive(b"DATA\r\n..a\r\n.b\r\n.\r\n");
        let (out, other) = drive(&mut session);
        assert!(
            out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 OK queued as Q\r\n")
        );
        let body: Vec<u8> = other
            .iter()
            .filter_map(|e| match e {
                Event::Body(b) => Some(b.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(body, b".a\r\nb\r\n");
        let Some(Event::Ask(Question::EndOfData { transaction, size })) = other.last() else {
            panic!("no EndOfData: {other:?}");
        };
        assert_eq!(transaction.recipients.len(), 2);
        assert_eq!(*size, 7);
        assert!(session.transaction().is_none(), "buffers cleared");
    }

    #[test]
    fn every_command_read_is_counted_once() {
        let mut session = greeted(config());
        session.receive(b"NOOP\r\nRSET\r\nMAIL FROM:<a@b.test>\r\nFROB\r\nRCPT TO:<c@d.test>\r\n");
        drive(&mut session);
        session.receive(b"DATA\r\nhi\r\n.\r\nQUIT\r\n");
        drive(&mut session);
        let verbs: Vec<&str> = session.take_commands().collect();
        // EHLO was taken by `greeted`'s own driving; DATA's text is no command.
        assert_eq!(
            verbs,
            ["EHLO", "NOOP", "RSET", "MAIL", "?", "RCPT", "DATA", "QUIT"]
        );
        assert_eq!(session.take_commands().count(), 0);
    }

    #[test]
    fn rset_helo_ehlo_clear_the_transaction() {
        for command in ["RSET", "HELO c.test", "EHLO c.test"] {
            let mut session = greeted(config());
            session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
            drive(&mut session);
            assert!(session.transaction().is_some());
            session.receive(format!("{command}\r\n").as_bytes());
            drive(&mut session);
            assert!(session.transaction().is_none(), "{command}");
        }
    }

    #[test]
    fn data_accepts_an_explicit_354() {
        // Question::Data says "Accept gives 354": a driver answering with the 354 itself must
        // start the data phase too (it used to be taken as a refusal).
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
        drive(&mut session);
        session.receive(b"DATA\r\nhello\r\n.\r\n");
        assert_eq!(session.next_event(), Some(Event::Ask(Question::Data)));
        session.decide(Decision::Reply(Reply::new(354, None, "go ahead")));
        assert_eq!(
            session.next_event(),
            Some(Event::Body(b"hello\r\n".to_vec()))
        );
        assert!(matches!(
            session.next_event(),
            Some(Event::Ask(Question::EndOfData { size: 7, .. }))
        ));
    }

    #[test]
    fn data_refused_by_the_driver_leaves_the_transaction() {
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
        drive(&mut session);
        session.receive(b"DATA\r\n");
        assert_eq!(session.next_event(), Some(Event::Ask(Question::Data)));
        session.decide(Decision::Reply(Reply::local_error()));
        assert_eq!(
            events(&mut session),
            vec![send(
                "451 4.3.0 Local error in processing, try again later\r\n"
            )]
        );
        assert_eq!(session.phase(), Phase::Command);
        assert!(session.transaction().is_some());
    }

    #[test]
    fn text_sent_behind_a_refused_data_is_never_run() {
        // RFC 2920 3.1: the client sent its message without waiting for the 354; the driver
        // refuses DATA meanwhile. The text (here a second transaction) must not be commands.
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
        drive(&mut session);
        session.receive(b"DATA\r\n");
        assert_eq!(session.next_event(), Some(Event::Ask(Question::Data)));
        session.receive(b"MAIL FROM:<x@y.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
        session.decide(Decision::Reply(Reply::local_error()));
        let seen = events(&mut session);
        assert_eq!(
            seen,
            vec![
                send("554 5.5.0 mx.test Protocol error: improper command pipelining\r\n"),
                Event::Close
            ]
        );
        session.receive(b"RSET\r\n");
        assert_eq!(session.next_event(), None);
    }

    #[test]
    fn junk_commands_past_the_limit_count_as_errors() {
        let mut cfg = config();
        cfg.junk_command_limit = 5;
        cfg.max_errors = 3;
        let mut session = greeted(cfg);
        let mut replies = Vec::new();
        for _ in 0..20 {
            session.receive(b"NOOP\r\n");
            let (out, _) = drive(&mut session);
            replies.push(out);
            if session.phase() == Phase::Finished {
                break;
            }
        }
        // Five free, then errors 1 and 2 still answered, the third closes the session.
        assert_eq!(replies.len(), 8, "{replies:?}");
        assert!(
            replies[..7].iter().all(|r| r.starts_with("250 ")),
            "{replies:?}"
        );
        assert!(replies[7].starts_with("421 4.7.0"), "{replies:?}");
    }

    #[test]
    fn recipients_far_past_the_limit_count_as_errors() {
        let mut cfg = config();
        cfg.max_recipients = 2;
        cfg.recipient_overshoot_limit = 3;
        cfg.max_errors = 2;
        let mut session = greeted(cfg);
        session.receive(b"MAIL FROM:<a@b.test>\r\n");
        drive(&mut session);
        let mut replies = Vec::new();
        for i in 0..50 {
            session.receive(format!("RCPT TO:<r{i}@d.test>\r\n").as_bytes());
            replies.push(drive(&mut session).0);
            if session.phase() == Phase::Finished {
                break;
            }
        }
        // 2 accepted, 3 overshoot (452, free), then 2 counted errors: the second closes.
        assert_eq!(replies.len(), 7, "{replies:?}");
        assert!(
            replies[2..6].iter().all(|r| r.starts_with("452 ")),
            "{replies:?}"
        );
        assert!(replies[6].contains("421 4.7.0"), "{replies:?}");
        assert_eq!(session.errors(), 2);
    }

    #[test]
    fn pipelining_is_forbidden_until_offered() {
        let mut off = config();
        off.extensions.pipelining = false;
        for (config, hello) in [
            (config(), &b"HELO c.test\r\n"[..]),
            (off, &b"EHLO c.test\r\n"[..]),
        ] {
            let mut session = ServerSession::new(config);
            drive(&mut session);
            session.receive(hello);
            drive(&mut session);
            session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
            let seen = events(&mut session);
            assert!(
                matches!(&seen[..], [Event::Send(s), Event::Close] if s.starts_with(b"554 ")),
                "{seen:?}"
            );
        }
        // One command at a time after HELO is fine.
        let mut session = ServerSession::new(config());
        drive(&mut session);
        for line in [
            &b"HELO c.test\r\n"[..],
            b"MAIL FROM:<a@b.test>\r\n",
            b"NOOP\r\n",
        ] {
            session.receive(line);
            drive(&mut session);
        }
        assert_eq!(session.phase(), Phase::Command);
        assert!(session.transaction().is_some());
    }

    // ---- DataAborted (RFC 3030 2 with RFC 5321 4.1.1.5; RFC 1870 6.2)

    #[test]
    fn rset_between_bdat_chunks_aborts_the_data() {
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 3\r\nabc");
        let (_, other) = drive(&mut session);
        assert_eq!(other.last(), Some(&Event::Body(b"abc".to_vec())));
        session.receive(b"RSET\r\n");
        assert_eq!(
            events(&mut session),
            vec![Event::DataAborted, send("250 2.0.0 Reset OK\r\n")]
        );
    }

    #[test]
    fn too_big_data_is_aborted_and_answered_552() {
        let mut cfg = config();
        cfg.max_message_size = 4;
        let mut session = greeted(cfg);
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
        drive(&mut session);
        session.receive(b"0123456789\r\n.\r\nNOOP\r\n");
        assert_eq!(
            events(&mut session),
            vec![
                Event::Body(b"0123".to_vec()),
                Event::DataAborted,
                send("552 5.3.4 Message too big (limit 4 octets)\r\n250 2.0.0 OK\r\n"),
            ]
        );
        // BDAT: the chunk is consumed and discarded, then 552.
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 5 LAST\r\n01234");
        let (out, other) = drive(&mut session);
        assert_eq!(other.last(), Some(&Event::DataAborted));
        assert!(out.ends_with("552 5.3.4 Message too big (limit 4 octets)\r\n"));
        assert!(session.transaction().is_none());
    }

    #[test]
    fn refused_bdat_chunk_is_not_aborted_data() {
        // A BDAT refused with 503 never started data: closing on too many errors while its
        // chunk is skipped must not emit DataAborted.
        let mut cfg = config();
        cfg.max_errors = 1;
        let mut session = greeted(cfg);
        session.receive(b"BDAT 5\r\n");
        assert_eq!(
            events(&mut session),
            vec![
                send(
                    "503 5.5.1 Need MAIL command first\r\n421 4.7.0 mx.test Too many errors, closing transmission channel\r\n"
                ),
                Event::Close
            ]
        );
    }

    #[test]
    fn close_with_during_data_aborts_it() {
        let mut session = greeted(config());
        session.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\npart");
        drive(&mut session);
        session.close_with(Reply::timeout("mx.test"));
        assert_eq!(
            events(&mut session),
            vec![
                Event::DataAborted,
                send("421 4.4.2 mx.test Timeout exceeded, closing transmission channel\r\n"),
                Event::Close
            ]
        );
    }

    // ---- ETRN (RFC 1985 5.1), AUTH (RFC 4954 4)

    #[test]
    fn etrn_default_reply_names_the_node() {
        let mut cfg = config();
        cfg.extensions.etrn = true;
        let mut session = greeted(cfg);
        session.receive(b"ETRN example.test\r\n");
        let (out, _) = drive(&mut session);
        assert_eq!(out, "250 2.0.0 Queuing for node example.test started\r\n");
    }

    #[test]
    fn auth_exchange_line_too_long_is_500_5_5_6() {
        let mut cfg = config();
        cfg.extensions.auth_mechanisms = vec!["LOGIN".into()];
        cfg.extensions.auth_requires_tls = false;
        let mut session = greeted(cfg);
        session.receive(b"AUTH LOGIN\r\n");
        assert!(matches!(
            session.next_event(),
            Some(Event::Ask(Question::Auth { .. }))
        ));
        session.decide(Decision::Reply(Reply::auth_challenge("VXNlcm5hbWU6")));
        assert_eq!(events(&mut session), vec![send("334 VXNlcm5hbWU6\r\n")]);
        let long = vec![b'A'; 5000];
        session.receive(&long);
        session.receive(b"\r\nNOOP\r\n");
        assert_eq!(
            events(&mut session),
            vec![send(
                "500 5.5.6 Authentication exchange line is too long\r\n250 2.0.0 OK\r\n"
            )]
        );
        assert!(!session.is_authenticated());
    }

    #[test]
    fn auth_success_and_redacted_debug() {
        let mut cfg = config();
        cfg.extensions.auth_mechanisms = vec!["PLAIN".into()];
        cfg.extensions.auth_requires_tls = false;
        let mut session = greeted(cfg);
        session.receive(b"AUTH PLAIN AHUAcA==\r\n");
        let Some(Event::Ask(question)) = session.next_event() else {
            panic!("no question");
        };
        assert_eq!(
            question,
            Question::Auth {
                mechanism: "PLAIN".into(),
                initial: Some(b"\0u\0p".to_vec())
            }
        );
        assert!(
            !format!("{question:?}").contains("\\0u"),
            "credentials in Debug"
        );
        session.decide(Decision::Accept);
        assert_eq!(
            events(&mut session),
            vec![send("235 2.7.0 Authentication successful\r\n")]
        );
        assert!(session.is_authenticated());
    }

    // ---- never panics (RFC 5321 4.1.4: the server must survive any client)

    fn fuzz_config() -> ServerConfig {
        let mut cfg = config();
        cfg.max_message_size = 64;
        cfg.max_recipients = 3;
        cfg.max_errors = 1000;
        cfg.extensions.starttls = true;
        cfg.extensions.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
        cfg.extensions.auth_requires_tls = false;
        cfg.extensions.dsn = true;
        cfg.extensions.binarymime = true;
        cfg.extensions.etrn = true;
        cfg.verbs.turn = true;
        cfg
    }

    /// Feeds `chunks`, answering every question; checks that each question is answered before
    /// the session moves on and that replies are whole CRLF lines.
    fn feed_all(chunks: &[Vec<u8>]) {
        let mut session = ServerSession::new(fuzz_config());
        let mut finished = false;
        for chunk in chunks {
            session.receive(chunk);
            while let Some(event) = session.next_event() {
                assert!(!finished, "event after the end: {event:?}");
                match event {
                    Event::Send(bytes) => {
                        assert!(bytes.ends_with(b"\r\n"));
                        assert!(bytes[..3].iter().all(u8::is_ascii_digit));
                    }
                    Event::Ask(_) => {
                        assert_eq!(session.phase(), Phase::Deciding);
                        session.decide(Decision::Accept);
                    }
                    Event::StartTls => session.tls_established(),
                    Event::Close | Event::Turn => finished = true,
                    Event::Body(_) | Event::DataAborted => {}
                }
            }
            assert_ne!(
                session.phase(),
                Phase::Deciding,
                "a question was left pending"
            );
        }
    }

    fn plausible_line() -> impl Strategy<Value = Vec<u8>> {
        let fixed = prop::sample::select(vec![
            "EHLO c.test",
            "HELO c.test",
            "MAIL FROM:<a@b.test>",
            "MAIL FROM:<>",
            "MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME",
            "MAIL FROM:<a@b.test> BODY=BINARYMIME",
            "SEND FROM:<a@b.test>",
            "SOML FROM:<a@b.test>",
            "SAML FROM:<a@b.test>",
            "RCPT TO:<c@d.test>",
            "RCPT TO:<postmaster>",
            "RCPT TO:<c@d.test> NOTIFY=NEVER",
            "DATA",
            "BDAT 3",
            "BDAT 0 LAST",
            "BDAT 10 LAST",
            "RSET",
            "NOOP",
            "QUIT",
            "HELP",
            "HELP MAIL",
            "VRFY x",
            "EXPN x",
            "TURN",
            "ETRN x.test",
            "STARTTLS",
            "AUTH PLAIN",
            "AUTH LOGIN dXNlcg==",
            "AUTH PLAIN =",
            "*",
            ".",
            "..",
            "hello",
            "FOO",
        ]);
        prop_oneof![
            4 => fixed.prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..40),
        ]
        .prop_map(|mut line| {
            line.extend_from_slice(b"\r\n");
            line
        })
    }

    proptest! {
        #[test]
        fn arbitrary_chunks_never_panic(chunks in prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
            feed_all(&chunks);
        }

        #[test]
        fn plausible_dialogues_never_panic(
            lines in prop::collection::vec(plausible_line(), 0..40),
            cut in 1usize..64,
        ) {
            // The whole dialogue, cut into pieces of `cut` bytes (pipelined and split lines).
            let bytes: Vec<u8> = lines.concat();
            let chunks: Vec<Vec<u8>> = bytes.chunks(cut).map(<[u8]>::to_vec).collect();
            feed_all(&chunks);
        }
    }
}
