//! Typed settings the server receives.
//!
//! The binary parses and validates its configuration file and hands the server these plain
//! values; this module knows nothing about any file format. Every default lives in exactly one
//! place: the `Default` impls below (the binary's configuration layer starts from
//! [`Settings::default`] and overrides what the file says).
//!
//! RFC sections behind the defaults:
//! - RFC 5321 4.5.3.1.4: a command line is at least 512 octets; [`MIN_LINE_LENGTH`].
//! - RFC 5321 4.5.3.1.8: at least 100 recipients must be buffered; we default to 1000.
//! - RFC 5321 4.5.3.2: the timeouts in [`Timeouts`] (4.5.3.2.7 for commands; the data timeouts
//!   mirror the sender's 4.5.3.2.5 and 4.5.3.2.6).
//! - RFC 1870: the `SIZE` limit advertised from [`SmtpSettings::max_message_size`].
//! - RFC 5321 3.5.3 and 7.3: VRFY / EXPN may be disabled or answered with 252 ([`VerifyPolicy`]).
//! - RFC 3207 / RFC 8314: STARTTLS and implicit TLS from [`TlsSettings`].
//! - RFC 4954: AUTH mechanisms, the TLS requirement and the failure policy in [`AuthSettings`].
//! - RFC 6409 / RFC 5321 3.6.2: submission requires AUTH; relaying only for authenticated
//!   clients and [`SmtpSettings::relay_networks`] (never an open relay).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
pub use yizhan_delivery::maildir::MaildirSync;
pub use yizhan_delivery::route::{Smarthost, TlsPolicy};
/// The user name and password a smarthost asks for (AUTH, RFC 4954).
pub use yizhan_proto::client::Credentials as SmarthostCredentials;

use yizhan_proto::server::ServerConfig;
use yizhan_spool::RetryPolicy;

use crate::auth::{Credentials, Mechanism};
use crate::directory::Directory;

/// The settings in force, replaced whole by a reload; each user reads one snapshot per unit
/// of work (a message picked up, a session), so a reload never changes a rule half-way.
pub type LiveSettings = std::sync::Arc<arc_swap::ArcSwap<Settings>>;

/// `settings` as the settings in force (until a reload replaces them).
pub fn live(settings: std::sync::Arc<Settings>) -> LiveSettings {
    std::sync::Arc::new(arc_swap::ArcSwap::new(settings))
}

/// The smallest line length limit allowed: RFC 5321 4.5.3.1.4 (512 octets including CRLF).
pub const MIN_LINE_LENGTH: usize = 512;

/// Where the queue is kept (`[store]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSettings {
    /// The embedded spool under `data_dir` (SQLite index, body files): nothing to set up.
    #[default]
    Embedded,
    /// A queue shared by several nodes on PostgreSQL.
    Postgres(yizhan_spool::postgres::PgSettings),
}

/// Everything the server needs to run, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The name this server uses for itself in the greeting, `EHLO` reply and `Received:` lines.
    pub hostname: String,
    /// The directory holding the spool and the local mailboxes. Empty in the default: where
    /// it is when the configuration does not say depends on who runs the program, so the
    /// binary decides (`yizhan::config::default_data_dir`), never the current directory.
    pub data_dir: PathBuf,
    /// The sockets to listen on.
    pub listeners: Vec<ListenerSettings>,
    /// The account `serve` runs as when started as root (Postfix's `mail_owner`): it binds the
    /// listeners and reads the keys as root, then gives the data directory to this user and
    /// drops every privilege. Never `root`.
    pub user: String,
    /// The group it runs as; `None`: the user's primary group.
    pub group: Option<String>,
    /// SMTP session limits and extensions.
    pub smtp: SmtpSettings,
    /// Local domains, mailboxes, aliases and relocated users.
    pub directory: Directory,
    /// The outgoing queue's schedule.
    pub queue: QueueSettings,
    /// Time given to sessions in flight on SIGTERM before they are answered 421 and closed.
    pub shutdown_grace: Duration,
    /// The certificate and key for STARTTLS and implicit TLS; `None` means no TLS.
    pub tls: Option<TlsSettings>,
    /// AUTH (RFC 4954): mechanisms, TLS requirement, failure policy.
    pub auth: AuthSettings,
    /// Password hashes of the mailboxes that may authenticate.
    pub credentials: Credentials,
    /// Outbound delivery: DNS, the SMTP client, smarthosts, TLS policy, source routes.
    pub delivery: DeliverySettings,
    /// The domains each authenticated user may collect with `TURN` (canonical user address to
    /// lower-cased domains; ATRN semantics, RFC 2645).
    pub turn_domains: BTreeMap<String, Vec<String>>,
    /// DKIM keys (`[[dkim]]`), loaded: mail our users send from these domains is signed.
    pub dkim: crate::dkim::DkimKeys,
    /// Inbound checks (`[checks]`): SPF, DKIM, ARC, DMARC on `smtp` listeners.
    pub checks: crate::checks::ChecksSettings,
    /// The admin HTTP listener (`[admin]`): metrics, JSON API, console.
    pub admin: AdminSettings,
    /// Recorded sessions (`[record]`).
    pub record: crate::record::RecordSettings,
    /// Where the queue is kept (`[store]`).
    pub store: StoreSettings,
}

/// `[admin]`: the HTTP listener for `/metrics`, `/api/` and the console.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Whether it listens at all.
    pub enabled: bool,
    /// Where. Loopback by default; anything else needs a token.
    pub address: SocketAddr,
    /// The bearer token every request must carry (read from `token_file`); `None`: open, on
    /// loopback only.
    pub token: Option<String>,
}

impl AdminSettings {
    /// The default address: loopback, the port Mailpit's console also uses.
    pub const DEFAULT_ADDRESS: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8025);
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            enabled: true,
            address: Self::DEFAULT_ADDRESS,
            token: None,
        }
    }
}

/// The token never reaches a log.
impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("enabled", &self.enabled)
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hostname: ServerConfig::default().hostname,
            data_dir: PathBuf::new(),
            listeners: vec![ListenerSettings::default()],
            user: "yizhan".to_owned(),
            group: None,
            smtp: SmtpSettings::default(),
            directory: Directory::default(),
            queue: QueueSettings::default(),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            auth: AuthSettings::default(),
            credentials: Credentials::default(),
            delivery: DeliverySettings::default(),
            turn_domains: BTreeMap::new(),
            dkim: crate::dkim::DkimKeys::default(),
            checks: crate::checks::ChecksSettings::default(),
            admin: AdminSettings::default(),
            record: crate::record::RecordSettings::default(),
            store: StoreSettings::Embedded,
        }
    }
}

impl Settings {
    /// The SMTP settings of `listener`: `[smtp]` with the listener's overrides applied.
    pub fn smtp_for(&self, listener: &ListenerSettings) -> SmtpSettings {
        listener.overrides.apply(&self.smtp)
    }

    /// The inbound checks of `listener`: `[checks]` on an `smtp` listener, nothing on a
    /// submission one (its users are authenticated, and signed); the listener's own `checks`
    /// keys on top of either.
    pub fn checks_for(&self, listener: &ListenerSettings) -> crate::checks::Checks {
        let base = match listener.kind {
            ListenerKind::Smtp => self.checks.checks,
            _ => crate::checks::Checks::OFF,
        };
        listener.overrides.checks.apply(base)
    }

    /// The user that owns `domain` for `TURN`, if any.
    pub fn turn_owner(&self, domain: &str) -> Option<&str> {
        let domain = domain.to_ascii_lowercase();
        self.turn_domains
            .iter()
            .find(|(_, domains)| domains.contains(&domain))
            .map(|(user, _)| user.as_str())
    }

    /// The AUTH settings of `listener`: `[auth]` with the listener's overrides applied.
    pub fn auth_for(&self, listener: &ListenerSettings) -> AuthSettings {
        let mut auth = self.auth.clone();
        if let Some(n) = listener.overrides.auth_max_failures {
            auth.max_failures = n;
        }
        if let Some(b) = listener.overrides.auth_require_tls {
            auth.require_tls = b;
        }
        auth
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// The address and port to bind.
    pub address: SocketAddr,
    /// What is spoken on it.
    pub kind: ListenerKind,
    /// Settings that differ from `[smtp]` / `[auth]` on this listener.
    pub overrides: ListenerOverrides,
    /// PROXY protocol (`proxy_protocol = true`): every connection starts with the header,
    /// taken only from these networks (the load balancers); `None`: no header.
    pub proxy_networks: Option<Vec<IpNet>>,
}

impl ListenerSettings {
    /// A listener with no overrides.
    pub fn new(address: SocketAddr, kind: ListenerKind) -> Self {
        Self {
            address,
            kind,
            overrides: ListenerOverrides::default(),
            proxy_networks: None,
        }
    }
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self::new(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 2525)),
            ListenerKind::Smtp,
        )
    }
}

/// Per-listener values that replace the `[smtp]` and `[auth]` ones (`None` keeps them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerOverrides {
    /// [`SmtpSettings::max_message_size`].
    pub max_message_size: Option<u64>,
    /// [`SmtpSettings::max_recipients`].
    pub max_recipients: Option<usize>,
    /// [`SmtpSettings::max_connections_per_ip`].
    pub max_connections_per_ip: Option<usize>,
    /// [`SmtpSettings::vrfy`].
    pub vrfy: Option<VerifyPolicy>,
    /// [`SmtpSettings::expn`].
    pub expn: Option<VerifyPolicy>,
    /// [`SmtpSettings::send_soml_saml`].
    pub send_soml_saml: Option<bool>,
    /// [`SmtpSettings::turn`].
    pub turn: Option<bool>,
    /// [`SmtpSettings::etrn`].
    pub etrn: Option<bool>,
    /// [`SmtpSettings::relay_networks`].
    pub relay_networks: Option<Vec<IpNet>>,
    /// [`AuthSettings::max_failures`].
    pub auth_max_failures: Option<u32>,
    /// [`AuthSettings::require_tls`].
    pub auth_require_tls: Option<bool>,
    /// `[checks]` keys for this listener.
    pub checks: crate::checks::ChecksOverrides,
    /// Record every session on this listener (`record = true`).
    pub record: bool,
}

impl ListenerOverrides {
    /// `base` with these overrides applied.
    pub fn apply(&self, base: &SmtpSettings) -> SmtpSettings {
        let mut s = base.clone();
        if let Some(v) = self.max_message_size {
            s.max_message_size = v;
        }
        if let Some(v) = self.max_recipients {
            s.max_recipients = v;
        }
        if let Some(v) = self.max_connections_per_ip {
            s.max_connections_per_ip = v;
        }
        if let Some(v) = self.vrfy {
            s.vrfy = v;
        }
        if let Some(v) = self.expn {
            s.expn = v;
        }
        if let Some(v) = self.send_soml_saml {
            s.send_soml_saml = v;
        }
        if let Some(v) = self.turn {
            s.turn = v;
        }
        if let Some(v) = self.etrn {
            s.etrn = v;
        }
        if let Some(v) = &self.relay_networks {
            s.relay_networks.clone_from(v);
        }
        s
    }
}

/// The certificate and private key used for TLS (RFC 3207, RFC 8314).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How often the files are checked for a change (a renewed certificate is picked up
    /// without a restart; SIGHUP reloads at once).
    pub reload_interval: Duration,
}

impl TlsSettings {
    /// [`Self::reload_interval`] when the configuration does not say.
    pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
}

/// AUTH (RFC 4954) policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The SASL mechanisms offered, in order; empty disables AUTH.
    pub mechanisms: Vec<Mechanism>,
    /// Offer and accept AUTH only under TLS (RFC 4954 4, RFC 8314). Turn off only for
    /// loopback testing.
    pub require_tls: bool,
    /// The delay after the first failed attempt; it doubles with each further failure.
    pub failure_delay: Duration,
    /// The longest delay after a failed attempt.
    pub failure_delay_max: Duration,
    /// After this many failed attempts the connection is answered 421 and closed.
    pub max_failures: u32,
    /// An authenticated client may use only its own address or its aliases as the sender
    /// (else 553 5.7.1).
    pub sender_must_match: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mechanisms: vec![Mechanism::Plain, Mechanism::Login],
            require_tls: true,
            failure_delay: Duration::from_secs(1),
            failure_delay_max: Duration::from_secs(16),
            max_failures: 3,
            sender_must_match: true,
        }
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Relay / MX service (RFC 5321), usually port 25.
    Smtp,
    /// Message submission (RFC 6409), usually port 587.
    Submission,
    /// Message submission over implicit TLS (RFC 8314), usually port 465.
    Submissions,
}

impl ListenerKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [ListenerKind; 3] = [Self::Smtp, Self::Submission, Self::Submissions];

    /// The name used in the configuration file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::Submission => "submission",
            Self::Submissions => "submissions",
        }
    }

    /// The kind named `name` (exact, lower-case), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SMTP session limits and the extensions offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// The largest message accepted, in octets; advertised with `SIZE` (RFC 1870).
    pub max_message_size: u64,
    /// The most recipients accepted per transaction (RFC 5321 4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// The longest command line accepted, in octets including CRLF (at least
    /// [`MIN_LINE_LENGTH`], RFC 5321 4.5.3.1.4).
    pub max_line_length: usize,
    /// After this many error replies in one session the server answers 421 and closes.
    pub max_errors: u32,
    /// From this many errors on, every reply of the session waits [`Self::error_sleep`] first
    /// (Postfix's `smtpd_soft_error_limit` and `smtpd_error_sleep_time`).
    pub soft_error_limit: u32,
    /// See [`Self::soft_error_limit`].
    pub error_sleep: Duration,
    /// See [`yizhan_proto::server::ServerConfig::junk_command_limit`].
    pub junk_command_limit: u32,
    /// See [`yizhan_proto::server::ServerConfig::recipient_overshoot_limit`].
    pub recipient_overshoot_limit: usize,
    /// The most `Received:` fields a message may have, ours included (RFC 5321 6.3: at least
    /// 100 should be allowed); more is refused at the end of data with `554 5.4.6`.
    pub max_hops: usize,
    /// The most simultaneous connections over all listeners.
    pub max_connections: usize,
    /// The most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// How long the server waits for the client (RFC 5321 4.5.3.2).
    pub timeouts: Timeouts,
    /// How `VRFY` is answered (RFC 5321 3.5.1, 7.3).
    pub vrfy: VerifyPolicy,
    /// How `EXPN` is answered (RFC 5321 3.5.2, 7.3).
    pub expn: VerifyPolicy,
    /// Whether the RFC 821 `SEND`, `SOML` and `SAML` commands are served (else 502).
    pub send_soml_saml: bool,
    /// Whether `HELP` is answered (else 502).
    pub help: bool,
    /// Offer `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// Offer `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// Offer `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// Offer `CHUNKING` / `BDAT` (RFC 3030).
    pub chunking: bool,
    /// Offer `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// Offer `DSN` (RFC 3461): `RET`, `ENVID`, `NOTIFY` and `ORCPT` are accepted, kept in the
    /// envelope and honoured by the queue's reports.
    pub dsn: bool,
    /// Offer `BINARYMIME` (RFC 3030), only together with `CHUNKING`.
    pub binarymime: bool,
    /// Accept `TURN` (RFC 821); still refused to unauthenticated clients.
    pub turn: bool,
    /// Offer `ETRN` (RFC 1985).
    pub etrn: bool,
    /// Client networks that may relay without AUTH (CIDR); empty by default: no open relay.
    pub relay_networks: Vec<IpNet>,
    /// Clients exempt from `max_connections_per_ip` (not from `max_connections`); `None`:
    /// [`Self::relay_networks`] and the loopback addresses, as Postfix exempts `$mynetworks`
    /// (`smtpd_client_event_limit_exceptions`).
    pub limit_exceptions: Option<Vec<IpNet>>,
    /// Rate limits per client address.
    pub rate_limits: RateLimitSettings,
    /// The longest a session may last, whatever it does (then 421).
    pub session_lifetime: Duration,
    /// The most bytes a session may send, all messages and commands together (then 421).
    pub max_session_bytes: u64,
    /// The most message data all sessions together keep in memory while messages are signed
    /// or checked (then a message to be checked gets 451, one to be signed goes unsigned).
    pub max_held_bytes: u64,
}

/// Rate limits per client address, each in events per minute (0: off); see
/// [`crate::limits`]. Clients in [`SmtpSettings::limit_exceptions`] are exempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// New connections (refused with `421 4.7.0` at the greeting).
    pub connections_per_minute: u32,
    /// Failed AUTH attempts (past it, `421 4.7.0` and the connection is closed).
    pub auth_failures_per_minute: u32,
    /// VRFY and EXPN commands (past it, `450 4.7.1`).
    pub verify_per_minute: u32,
    /// ETRN commands (past it, `458`).
    pub etrn_per_minute: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            // Off, as Postfix's smtpd_client_connection_rate_limit: a bulk sender or a load
            // test from one address opens a connection per message. Set it on a public MX.
            connections_per_minute: 0,
            auth_failures_per_minute: 10,
            verify_per_minute: 60,
            etrn_per_minute: 10,
        }
    }
}

impl Default for SmtpSettings {
    /// Where the protocol core has a default (limits, extensions, verbs), it is the one: each
    /// number is written once.
    fn default() -> Self {
        let proto = ServerConfig::default();
        let ext = &proto.extensions;
        Self {
            max_message_size: proto.max_message_size,
            max_recipients: proto.max_recipients,
            max_line_length: proto.max_line_length,
            max_errors: proto.max_errors,
            soft_error_limit: 10,
            error_sleep: Duration::from_secs(1),
            junk_command_limit: proto.junk_command_limit,
            recipient_overshoot_limit: proto.recipient_overshoot_limit,
            max_hops: 100,
            max_connections: 1000,
            max_connections_per_ip: 50,
            timeouts: Timeouts::default(),
            // Answer VRFY honestly-but-uselessly (252) and refuse EXPN: neither leaks the
            // directory to anonymous clients (RFC 5321 7.3), and 252 keeps naive senders happy.
            vrfy: VerifyPolicy::CannotVerify,
            expn: VerifyPolicy::Disabled,
            send_soml_saml: proto.verbs.send,
            help: proto.verbs.help,
            pipelining: ext.pipelining,
            eight_bit_mime: ext.eight_bit_mime,
            smtputf8: ext.smtputf8,
            chunking: ext.chunking,
            enhanced_status_codes: ext.enhanced_status_codes,
            dsn: ext.dsn,
            binarymime: ext.binarymime,
            turn: proto.verbs.turn,
            etrn: ext.etrn,
            relay_networks: Vec::new(),
            limit_exceptions: None,
            rate_limits: RateLimitSettings::default(),
            session_lifetime: Duration::from_secs(3600),
            max_session_bytes: 1 << 30,
            max_held_bytes: 256 << 20,
        }
    }
}

/// Server-side timeouts (RFC 5321 4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the next command (RFC 5321 4.5.3.2.7: 5 minutes).
    pub command: Duration,
    /// Waiting for the next chunk of message data (3 minutes, mirroring the sender's DATA block
    /// timeout of RFC 5321 4.5.3.2.5).
    pub data_block: Duration,
    /// The whole of the message data, up to the final dot (10 minutes, mirroring the sender's
    /// DATA termination timeout of RFC 5321 4.5.3.2.6).
    pub data_termination: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            data_termination: Duration::from_secs(600),
        }
    }
}

/// How `VRFY` or `EXPN` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyPolicy {
    /// `502 5.5.1 VRFY is disabled on this server`.
    Disabled,
    /// `252` cannot verify, but will accept the message and attempt delivery (RFC 5321 3.5.3).
    CannotVerify,
    /// Real answers from the directory.
    Enabled,
}

impl VerifyPolicy {
    /// Every policy, in the order they are documented.
    pub const ALL: [VerifyPolicy; 3] = [Self::Disabled, Self::CannotVerify, Self::Enabled];

    /// The name used in the configuration file and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::CannotVerify => "cannot-verify",
            Self::Enabled => "enabled",
        }
    }

    /// The policy named `name` (exact, lower-case), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.as_str() == name)
    }
}

impl std::fmt::Display for VerifyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outgoing queue's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// The most deliveries in flight at once.
    pub concurrency: usize,
    /// When to retry after a temporary failure, how the wait grows, and when to give up
    /// (RFC 5321 4.5.4.1: 4-5 days).
    pub retry: RetryPolicy,
    /// How a batch of Maildir deliveries is made durable (`[queue] maildir_sync`).
    pub maildir_sync: MaildirSync,
}

impl Default for QueueSettings {
    /// The runner's and the spool's own defaults.
    fn default() -> Self {
        Self {
            concurrency: crate::queue::RunnerSettings::default().concurrency,
            retry: RetryPolicy::default(),
            maildir_sync: MaildirSync::Batch,
        }
    }
}

/// Outbound delivery (the `[delivery]` and `[[smarthost]]` sections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// The TCP port of remote MX hosts (25; tests point it elsewhere).
    pub remote_port: u16,
    /// DNS servers to ask (address and port); empty means the system resolver
    /// (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// The time allowed for one DNS query.
    pub dns_timeout: Duration,
    /// Connecting to a remote host.
    pub connect_timeout: Duration,
    /// Waiting for the remote greeting (RFC 5321 4.5.3.2.1: 5 minutes).
    pub greeting_timeout: Duration,
    /// Waiting for each reply to a command (RFC 5321 4.5.3.2.2-4: 5 minutes).
    pub command_timeout: Duration,
    /// Each write of the message data (RFC 5321 4.5.3.2.5: 3 minutes).
    pub data_block_timeout: Duration,
    /// The reply after the end of the data (RFC 5321 4.5.3.2.6: 10 minutes).
    pub data_end_timeout: Duration,
    /// How many hosts of an MX list are tried per attempt.
    pub max_mx_hosts: usize,
    /// Local domains delivered to a mail store over LMTP (`[[domain]] deliver = "lmtp"`),
    /// by lower-cased name.
    pub lmtp: BTreeMap<String, yizhan_delivery::lmtp::LmtpEndpoint>,
    /// Deliveries at once to one destination (MX domain or smarthost).
    pub per_destination: usize,
    /// How long an idle outbound connection is kept for the next message.
    pub connection_idle: Duration,
    /// After how long an undelivered recipient's sender gets a delay report; `None`: never.
    pub delay_warning: Option<Duration>,
    /// Honour RFC 821 source routes that start with one of our names ([`Self::our_names`]).
    pub honour_source_routes: bool,
    /// Our own names (lower-case): the hostname and any other name hosts use for us.
    pub local_names: Vec<String>,
    /// TLS policy towards MX hosts of domains not in [`Self::domain_tls`].
    pub tls: TlsPolicy,
    /// TLS policy per recipient domain (lower-case) for MX delivery.
    pub domain_tls: BTreeMap<String, TlsPolicy>,
    /// Smarthosts per recipient domain (lower-case).
    pub smarthosts: BTreeMap<String, Smarthost>,
    /// The smarthost for every other remote domain; `None`: delivery by MX.
    pub default_smarthost: Option<Smarthost>,
}

impl Default for DeliverySettings {
    /// The SMTP client's and the runner's own defaults, so that each number is written once.
    fn default() -> Self {
        let client = yizhan_delivery::smtp::SmtpSettings::default();
        let outbound = crate::queue::OutboundSettings::default();
        Self {
            remote_port: client.port,
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(5),
            connect_timeout: client.connect_timeout,
            greeting_timeout: client.greeting_timeout,
            command_timeout: client.command_timeout,
            data_block_timeout: client.data_block_timeout,
            data_end_timeout: client.data_end_timeout,
            max_mx_hosts: client.max_hosts,
            lmtp: BTreeMap::new(),
            per_destination: outbound.per_destination,
            connection_idle: outbound.connection_idle,
            delay_warning: outbound.delay_warning,
            honour_source_routes: false,
            local_names: Vec::new(),
            tls: TlsPolicy::Opportunistic,
            domain_tls: BTreeMap::new(),
            smarthosts: BTreeMap::new(),
            default_smarthost: None,
        }
    }
}

impl DeliverySettings {
    /// Our names for source routes and MX loops: the hostname and every one of
    /// [`Self::local_names`], lower-cased, each once.
    pub fn our_names(&self, hostname: &str) -> Vec<String> {
        let mut names = vec![hostname.to_ascii_lowercase()];
        for name in &self.local_names {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_names_are_the_hostname_and_the_local_names() {
        let mut d = DeliverySettings::default();
        assert_eq!(d.our_names("MX.Example"), ["mx.example"]);
        d.local_names = vec!["relay.example".into(), "mx.example".into()];
        assert_eq!(d.our_names("MX.Example"), ["mx.example", "relay.example"]);
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = Settings::default();
        assert_eq!(s.hostname, "localhost");
        assert_eq!(s.data_dir, PathBuf::new());
        assert_eq!(
            s.listeners,
            vec![ListenerSettings::new(
                "127.0.0.1:2525".parse().unwrap(),
                ListenerKind::Smtp
            )]
        );
        assert_eq!(s.tls, None);
        // RFC 4954 4: AUTH only under TLS unless configured otherwise.
        assert!(s.auth.require_tls);
        assert!(s.smtp.relay_networks.is_empty(), "never an open relay");
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        assert_eq!(s.smtp.max_message_size, 10_485_760);
        // RFC 5321 4.5.3.1.4: never below 512.
        assert!(s.smtp.max_line_length >= MIN_LINE_LENGTH);
        // RFC 5321 4.5.3.1.8: at least 100 recipients.
        assert!(s.smtp.max_recipients >= 100);
        // RFC 5321 4.5.3.2.
        assert_eq!(s.smtp.timeouts.command, Duration::from_secs(300));
        assert_eq!(s.smtp.timeouts.data_block, Duration::from_secs(180));
        assert_eq!(s.smtp.timeouts.data_termination, Duration::from_secs(600));
        assert_eq!(s.smtp.vrfy, VerifyPolicy::CannotVerify);
        assert_eq!(s.smtp.expn, VerifyPolicy::Disabled);
        assert_eq!(s.queue.retry.give_up_after, Duration::from_secs(432_000));
        assert!(s.directory.is_local_domain("localhost"));
    }

    #[test]
    fn names_round_trip() {
        for kind in ListenerKind::ALL {
            assert_eq!(ListenerKind::from_name(kind.as_str()), Some(kind));
        }
        for policy in VerifyPolicy::ALL {
            assert_eq!(VerifyPolicy::from_name(policy.as_str()), Some(policy));
        }
        assert_eq!(ListenerKind::from_name("SMTP"), None);
        assert_eq!(VerifyPolicy::from_name("yes"), None);
    }

    #[test]
    fn listener_overrides_replace_only_what_they_name() {
        let settings = Settings::default();
        let mut listener = ListenerSettings::default();
        listener.overrides.max_recipients = Some(100);
        listener.overrides.auth_max_failures = Some(1);
        let smtp = settings.smtp_for(&listener);
        assert_eq!(smtp.max_recipients, 100);
        assert_eq!(smtp.max_message_size, settings.smtp.max_message_size);
        let auth = settings.auth_for(&listener);
        assert_eq!(auth.max_failures, 1);
        assert_eq!(auth.require_tls, settings.auth.require_tls);
    }
}
