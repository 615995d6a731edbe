//! The fake policy the golden dialogues were first written against, and an in-memory server.
//!
//! The dialogues run on the real server now (`crates/yizhan-server/tests/dialogs.rs`: the real
//! session, policy, directory and spool). This fake still runs every dialogue on the pure
//! [`ServerSession`] (`crates/yizhan-proto/tests/dialogs.rs`, and the fuzz harness), and is the
//! only runner of the two the server cannot take yet (`dsn_parameters`, `binarymime`); it must
//! answer as the server does.
//!
//! [`FakePolicy`] answers a [`ServerSession`]'s questions the way the real server answers them
//! with the test configuration the TCP runner uses, so one `.dialog` file holds for both:
//!
//! - hostname `mx.test.example`; local domain `test.example` with the mailboxes `user` and
//!   `user2` (strict: any other local part is `550 5.1.1`), the alias `list` (to both), the
//!   relocated user `moved` (`551`, try `<moved@elsewhere.example>`); `postmaster` in any case,
//!   with or without the domain, is accepted; any other domain is `550 5.7.1` relaying denied;
//! - SEND to a local recipient is `450` (no terminal session); SOML and SAML behave like MAIL;
//! - VRFY answers `252` (cannot verify), EXPN is switched off (`502`);
//! - DATA is accepted and the end of data answers `250 2.0.0 OK queued as <id>`;
//! - 10485760 octets, 1000 recipients, PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES,
//!   SMTPUTF8, CHUNKING and HELP offered; no STARTTLS, no AUTH.
//!
//! A dialogue marked `! memory-only` may change this with directives
//! ([`FakeSettings::apply_directive`]). AUTH (PLAIN, LOGIN) accepts `user@test.example` with
//! the password `secret`.

use yizhan_proto::address::{ForwardPath, Host};
use yizhan_proto::command::MailKind;
use yizhan_proto::reply::Reply;
use yizhan_proto::server::{Decision, Event, Question, ServerConfig, ServerSession, Transaction};

/// The server's name in every dialogue.
pub const HOSTNAME: &str = "mx.test.example";
/// The one local domain.
pub const LOCAL_DOMAIN: &str = "test.example";
/// The local mailboxes (local parts).
pub const MAILBOXES: &[&str] = &["user", "user2"];
/// The alias `list@test.example` and its members.
pub const LIST: (&str, &[&str]) = ("list", &["user@test.example", "user2@test.example"]);
/// The relocated user and its new address.
pub const RELOCATED: (&str, &str) = ("moved", "moved@elsewhere.example");
/// The AUTH user name.
pub const AUTH_USER: &str = "user@test.example";
/// The AUTH password.
pub const AUTH_PASSWORD: &str = "secret";

/// How VRFY or EXPN is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// The verb is switched off: the session answers 502.
    Disabled,
    /// `252` whatever the argument (the real server's default for VRFY).
    CannotVerify,
    /// Real answers from the fake directory.
    Enabled,
}

/// The configuration of one dialogue: the session's settings and the policy's switches.
#[derive(Debug, Clone)]
pub struct FakeSettings {
    /// What the [`ServerSession`] runs with.
    pub config: ServerConfig,
    /// How VRFY is answered.
    pub vrfy: VerifyMode,
    /// How EXPN is answered.
    pub expn: VerifyMode,
}

impl Default for FakeSettings {
    /// The test configuration described in the module docs.
    fn default() -> Self {
        let mut config = ServerConfig {
            hostname: HOSTNAME.to_string(),
            max_message_size: 10_485_760,
            max_recipients: 1000,
            ..ServerConfig::default()
        };
        config.extensions.starttls = false;
        config.extensions.auth_mechanisms = Vec::new();
        config.verbs.turn = false;
        let mut settings = FakeSettings {
            config,
            vrfy: VerifyMode::CannotVerify,
            expn: VerifyMode::Disabled,
        };
        settings.sync_verbs();
        settings
    }
}

impl FakeSettings {
    /// Applies one `!` directive of a dialogue (without the `!`). Known directives:
    ///
    /// | directive | effect |
    /// | --- | --- |
    /// | `starttls` | offer STARTTLS |
    /// | `tls-active` | the connection starts with TLS (implicit TLS) |
    /// | `auth MECH...` | offer AUTH with these mechanisms (PLAIN and LOGIN are answered) |
    /// | `insecure-auth` | offer AUTH without TLS |
    /// | `max_recipients N`, `max_errors N`, `max_message_size N`, `max_line_length N` | limits |
    /// | `vrfy enabled\|disabled\|cannot-verify`, `expn ...` | VRFY / EXPN answers |
    /// | `help off`, `send-soml-saml off`, `turn on` | verbs |
    /// | `pipelining off`, `size off`, `8bitmime off`, `enhancedstatuscodes off`, `smtputf8 off`, `chunking off`, `binarymime on`, `dsn on`, `etrn on` | extensions |
    ///
    /// `memory-only` is handled by the dialogue parser, not here.
    pub fn apply_directive(&mut self, directive: &str) -> Result<(), String> {
        let mut words = directive.split_whitespace();
        let name = words.next().unwrap_or_default().to_ascii_lowercase();
        let args: Vec<&str> = words.collect();
        let ext = &mut self.config.extensions;
        let verbs = &mut self.config.verbs;
        let number = |args: &[&str]| -> Result<u64, String> {
            match args {
                [n] => n.parse().map_err(|_| format!("{name}: not a number: {n}")),
                _ => Err(format!("{name} takes one number")),
            }
        };
        let switch = |args: &[&str]| -> Result<bool, String> {
            match args {
                [] | ["on"] => Ok(true),
                ["off"] => Ok(false),
                _ => Err(format!("{name} takes on or off")),
            }
        };
        match name.as_str() {
            "starttls" => ext.starttls = switch(&args)?,
            "tls-active" => self.config.tls_active = switch(&args)?,
            "auth" => {
                if args.is_empty() {
                    return Err("auth needs at least one mechanism".to_string());
                }
                ext.auth_mechanisms = args.iter().map(|m| m.to_ascii_uppercase()).collect();
            }
            "insecure-auth" => ext.auth_requires_tls = !switch(&args)?,
            "max_recipients" => self.config.max_recipients = number(&args)? as usize,
            "max_errors" => self.config.max_errors = number(&args)? as u32,
            "max_message_size" => self.config.max_message_size = number(&args)?,
            "max_line_length" => self.config.max_line_length = number(&args)? as usize,
            "vrfy" | "expn" => {
                let mode = match args.as_slice() {
                    ["enabled"] => VerifyMode::Enabled,
                    ["disabled"] => VerifyMode::Disabled,
                    ["cannot-verify"] => VerifyMode::CannotVerify,
                    _ => return Err(format!("{name} takes enabled, disabled or cannot-verify")),
                };
                if name == "vrfy" {
                    self.vrfy = mode;
                } else {
                    self.expn = mode;
                }
            }
            "help" => verbs.help = switch(&args)?,
            "send-soml-saml" => {
                let on = switch(&args)?;
                verbs.send = on;
                verbs.soml = on;
                verbs.saml = on;
            }
            "turn" => verbs.turn = switch(&args)?,
            "pipelining" => ext.pipelining = switch(&args)?,
            "size" => ext.size = switch(&args)?,
            "8bitmime" => ext.eight_bit_mime = switch(&args)?,
            "enhancedstatuscodes" => ext.enhanced_status_codes = switch(&args)?,
            "smtputf8" => ext.smtputf8 = switch(&args)?,
            "chunking" => ext.chunking = switch(&args)?,
            "binarymime" => ext.binarymime = switch(&args)?,
            "dsn" => ext.dsn = switch(&args)?,
            "etrn" => ext.etrn = switch(&args)?,
            _ => return Err(format!("unknown directive: {name}")),
        }
        self.sync_verbs();
        Ok(())
    }

    fn sync_verbs(&mut self) {
        self.config.verbs.vrfy = self.vrfy != VerifyMode::Disabled;
        self.config.verbs.expn = self.expn != VerifyMode::Disabled;
    }
}

/// Where the fake directory sends a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    Mailbox(String),
    List(Vec<String>),
    Relocated(&'static str),
    Unknown,
    NotLocal,
}

/// The progress of an AUTH exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthState {
    Idle,
    Plain,
    LoginUser,
    LoginPassword(Vec<u8>),
}

/// Answers every [`Question`] the way the real server does with the test configuration.
#[derive(Debug)]
pub struct FakePolicy {
    settings: FakeSettings,
    auth: AuthState,
    queued: u64,
}

impl FakePolicy {
    /// A policy for these settings.
    pub fn new(settings: FakeSettings) -> FakePolicy {
        FakePolicy {
            settings,
            auth: AuthState::Idle,
            queued: 0,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &FakeSettings {
        &self.settings
    }

    /// The answer to `question`, asked by `session` (whose transaction tells SEND from MAIL).
    /// [`Question::EndOfData`] gets `250 queued as FAKEnnnn`.
    pub fn answer(&mut self, session: &ServerSession, question: Question) -> Decision {
        match question {
            Question::Helo { .. } | Question::Mail { .. } | Question::Data => Decision::Accept,
            Question::Rcpt { to, .. } => {
                let kind = session.transaction().map_or(MailKind::Mail, |tx| tx.kind);
                self.rcpt(kind, &to)
            }
            Question::Vrfy(query) => self.verify(self.settings.vrfy, &query, false),
            Question::Expn(query) => self.verify(self.settings.expn, &query, true),
            Question::EndOfData { .. } => Decision::Reply(Reply::queued(&self.next_queue_id())),
            Question::Auth { mechanism, initial } => self.auth(&mechanism, initial),
            Question::AuthResponse(bytes) => self.auth_response(bytes),
            // As the server answers (RFC 1985 5.1 allows 250 whatever is waiting).
            Question::Etrn(node) => Decision::Reply(Reply::etrn_started(&node)),
            Question::Turn => Decision::Reply(Reply::turn_needs_auth()),
        }
    }

    /// A new queue id: `FAKE0001`, `FAKE0002`...
    pub fn next_queue_id(&mut self) -> String {
        self.queued += 1;
        format!("FAKE{:04}", self.queued)
    }

    fn rcpt(&self, kind: MailKind, to: &ForwardPath) -> Decision {
        let shown = to.to_string();
        match lookup(to) {
            Lookup::Mailbox(_) | Lookup::List(_) if kind == MailKind::Send => {
                Decision::Reply(Reply::user_not_active(&shown))
            }
            Lookup::Mailbox(_) | Lookup::List(_) => Decision::Accept,
            Lookup::Relocated(new) => Decision::Reply(Reply::user_not_local(&format!("<{new}>"))),
            Lookup::Unknown => Decision::Reply(Reply::no_such_user(&shown)),
            Lookup::NotLocal => Decision::Reply(Reply::relay_denied(&shown)),
        }
    }

    fn verify(&self, mode: VerifyMode, query: &str, expn: bool) -> Decision {
        if mode != VerifyMode::Enabled {
            return Decision::Reply(Reply::vrfy_cannot_verify());
        }
        let trimmed = query.trim();
        let bare = trimmed
            .strip_prefix('<')
            .and_then(|q| q.strip_suffix('>'))
            .unwrap_or(trimmed);
        let (local, domain) = match bare.rsplit_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (bare, None),
        };
        let reply = match lookup_local(local, domain) {
            // The test configuration's `user` has the full name "Test User". EXPN of a mailbox
            // gives the mailbox (a list of one), as the server's directory does.
            Lookup::Mailbox(address) => {
                let name = (address == "user@test.example").then_some("Test User");
                Reply::vrfy_user(&address, name)
            }
            Lookup::List(members) if expn => {
                let members: Vec<String> = members.iter().map(|m| format!("<{m}>")).collect();
                Reply::expn_members(&members)
            }
            Lookup::List(_) => Reply::vrfy_cannot_verify(),
            Lookup::Unknown => Reply::no_such_user(query),
            Lookup::Relocated(new) => Reply::user_not_local(&format!("<{new}>")),
            Lookup::NotLocal => Reply::vrfy_cannot_verify(),
        };
        Decision::Reply(reply)
    }

    fn auth(&mut self, mechanism: &str, initial: Option<Vec<u8>>) -> Decision {
        self.auth = AuthState::Idle;
        match (mechanism, initial) {
            ("PLAIN", Some(response)) => check_plain(&response),
            ("PLAIN", None) => {
                self.auth = AuthState::Plain;
                Decision::Reply(Reply::auth_challenge(""))
            }
            ("LOGIN", Some(user)) => {
                self.auth = AuthState::LoginPassword(user);
                Decision::Reply(Reply::auth_challenge(PASSWORD_PROMPT))
            }
            ("LOGIN", None) => {
                self.auth = AuthState::LoginUser;
                Decision::Reply(Reply::auth_challenge(USERNAME_PROMPT))
            }
            _ => Decision::Reply(Reply::auth_mechanism_unknown()),
        }
    }

    fn auth_response(&mut self, response: Vec<u8>) -> Decision {
        match std::mem::replace(&mut self.auth, AuthState::Idle) {
            AuthState::Plain => check_plain(&response),
            AuthState::LoginUser => {
                self.auth = AuthState::LoginPassword(response);
                Decision::Reply(Reply::auth_challenge(PASSWORD_PROMPT))
            }
            AuthState::LoginPassword(user) => check(&user, &response),
            AuthState::Idle => Decision::Reply(Reply::auth_failed()),
        }
    }
}

/// `Username:` in base64 (the LOGIN mechanism's first prompt).
const USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
/// `Password:` in base64.
const PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// RFC 4616: `[authzid] NUL authcid NUL passwd`.
fn check_plain(response: &[u8]) -> Decision {
    let mut parts = response.split(|&b| b == 0);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(authzid), Some(user), Some(password), None)
            if authzid.is_empty() || authzid == user =>
        {
            check(user, password)
        }
        _ => Decision::Reply(Reply::auth_failed()),
    }
}

fn check(user: &[u8], password: &[u8]) -> Decision {
    if user == AUTH_USER.as_bytes() && password == AUTH_PASSWORD.as_bytes() {
        Decision::Accept
    } else {
        Decision::Reply(Reply::auth_failed())
    }
}

fn lookup(to: &ForwardPath) -> Lookup {
    match to {
        ForwardPath::Postmaster => Lookup::Mailbox(format!("postmaster@{LOCAL_DOMAIN}")),
        ForwardPath::Path(path) => match path.mailbox.host() {
            Host::Domain(domain) => {
                lookup_local(path.mailbox.local_part().as_str(), Some(domain.as_str()))
            }
            Host::Literal(_) => Lookup::NotLocal,
        },
    }
}

fn lookup_local(local: &str, domain: Option<&str>) -> Lookup {
    if domain.is_some_and(|d| !d.eq_ignore_ascii_case(LOCAL_DOMAIN)) {
        return Lookup::NotLocal;
    }
    let local = local.to_ascii_lowercase();
    if local == "postmaster" || MAILBOXES.contains(&local.as_str()) {
        Lookup::Mailbox(format!("{local}@{LOCAL_DOMAIN}"))
    } else if local == LIST.0 {
        Lookup::List(LIST.1.iter().map(|m| m.to_string()).collect())
    } else if local == RELOCATED.0 {
        Lookup::Relocated(RELOCATED.1)
    } else {
        Lookup::Unknown
    }
}

/// A message the in-memory server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The queue id in the `250` reply.
    pub id: String,
    /// The envelope.
    pub transaction: Transaction,
    /// The message data as the session delivered it (dot-unstuffed).
    pub body: Vec<u8>,
}

/// A [`ServerSession`] answered by a [`FakePolicy`], with every side effect recorded. Push the
/// client's bytes with [`InMemoryServer::receive`] and get back what the server wrote; a
/// `ClientSession` can be driven against it the same way it is driven against a socket.
#[derive(Debug)]
pub struct InMemoryServer {
    session: ServerSession,
    policy: FakePolicy,
    body: Vec<u8>,
    /// Messages accepted (`250` after end of data), in order.
    pub messages: Vec<Message>,
    /// How many times the session voided the message data ([`Event::DataAborted`]).
    pub aborted: usize,
    /// How many TLS handshakes were "done" (the session emitted [`Event::StartTls`]).
    pub tls_handshakes: usize,
    /// How many questions were asked (and answered).
    pub questions: usize,
    /// The session emitted [`Event::Close`].
    pub closed: bool,
    /// The session emitted [`Event::Turn`].
    pub turned: bool,
}

impl InMemoryServer {
    /// A server with these settings; its greeting is waiting in [`InMemoryServer::drive`].
    pub fn new(settings: FakeSettings) -> InMemoryServer {
        let session = ServerSession::new(settings.config.clone());
        InMemoryServer {
            session,
            policy: FakePolicy::new(settings),
            body: Vec::new(),
            messages: Vec::new(),
            aborted: 0,
            tls_handshakes: 0,
            questions: 0,
            closed: false,
            turned: false,
        }
    }

    /// The session.
    pub fn session(&self) -> &ServerSession {
        &self.session
    }

    /// Whether the connection is over (closed or turned).
    pub fn is_finished(&self) -> bool {
        self.closed || self.turned
    }

    /// Feeds the client's bytes and returns everything the server wrote in answer.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.session.receive(bytes);
        self.drive()
    }

    /// Runs the session until it needs input; returns the bytes it wrote. A TLS handshake is
    /// simulated at once ([`ServerSession::tls_established`]).
    pub fn drive(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(event) = self.session.next_event() {
            match event {
                Event::Send(bytes) => out.extend_from_slice(&bytes),
                Event::Ask(question) => {
                    self.questions += 1;
                    let decision = match question {
                        Question::Data => {
                            self.body.clear();
                            Decision::Accept
                        }
                        Question::EndOfData { transaction, .. } => {
                            let id = self.policy.next_queue_id();
                            self.messages.push(Message {
                                id: id.clone(),
                                transaction,
                                body: std::mem::take(&mut self.body),
                            });
                            Decision::Reply(Reply::queued(&id))
                        }
                        question => self.policy.answer(&self.session, question),
                    };
                    self.session.decide(decision);
                }
                Event::Body(chunk) => self.body.extend_from_slice(&chunk),
                Event::DataAborted => {
                    self.aborted += 1;
                    self.body.clear();
                }
                Event::StartTls => {
                    self.tls_handshakes += 1;
                    self.session.tls_established();
                }
                Event::Turn => self.turned = true,
                Event::Close => self.closed = true,
            }
        }
        out
    }
}
