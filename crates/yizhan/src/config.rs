//! The configuration file: discovery, parsing, validation, and conversion into
//! [`yizhan_server::settings::Settings`].
//!
//! One TOML file, every table `deny_unknown_fields`. Parsing stops at the first TOML syntax or
//! type error (the `toml` crate names line and column); after that, validation
//! collects every problem at once, each naming the file, the line and column when known, the
//! key (e.g. `mailbox[2].address`, counted from 0) and the reason. Defaults come from
//! [`Settings::default`] only: a key left out keeps the default value.
//!
//! See `docs/configuration.md` for the reference of every key.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use yizhan_server::auth::{Credentials, Mechanism};
use yizhan_server::directory::{Directory, DirectoryError, Entry};
use yizhan_server::settings::{
    ListenerKind, ListenerOverrides, ListenerSettings, MIN_LINE_LENGTH, MaildirSync, Settings,
    Smarthost, SmarthostCredentials, TlsPolicy, TlsSettings, VerifyPolicy,
};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "YIZHAN_CONFIG";

/// The configuration file used when neither `--config` nor `YIZHAN_CONFIG` names one.
pub const SYSTEM_CONFIG: &str = "/etc/yizhan/yizhan.toml";

/// The configuration used when no file is found: it gives exactly [`Settings::default`].
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients per message.
const MIN_RECIPIENTS: i64 = 100;

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--config FILE`.
    Flag(PathBuf),
    /// The `YIZHAN_CONFIG` environment variable.
    Env(PathBuf),
    /// `/etc/yizhan/yizhan.toml`, which exists.
    System(PathBuf),
    /// No file: the embedded default.
    Embedded,
}

impl Source {
    /// Picks the source: `--config`, else a non-empty `YIZHAN_CONFIG`, else
    /// [`SYSTEM_CONFIG`] if `exists` says it exists, else the embedded default.
    pub fn discover(
        flag: Option<PathBuf>,
        env: Option<OsString>,
        exists: impl Fn(&Path) -> bool,
    ) -> Self {
        if let Some(path) = flag {
            return Self::Flag(path);
        }
        if let Some(value) = env.filter(|v| !v.is_empty()) {
            return Self::Env(PathBuf::from(value));
        }
        let system = PathBuf::from(SYSTEM_CONFIG);
        if exists(&system) {
            return Self::System(system);
        }
        Self::Embedded
    }

    /// The name used for this source in messages: the path, or `<embedded default>`.
    pub fn name(&self) -> String {
        match self {
            Self::Flag(p) | Self::Env(p) | Self::System(p) => p.display().to_string(),
            Self::Embedded => "<embedded default>".to_owned(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(p) => write!(f, "{} (from --config)", p.display()),
            Self::Env(p) => write!(f, "{} (from ${CONFIG_ENV})", p.display()),
            Self::System(p) => write!(f, "{} (default location)", p.display()),
            Self::Embedded => write!(
                f,
                "the embedded default (no --config, no ${CONFIG_ENV}, no {SYSTEM_CONFIG})"
            ),
        }
    }
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as given.
    pub file: String,
    /// 1-based line and column of the value, when known.
    pub location: Option<(usize, usize)>,
    /// The key, e.g. `mailbox[2].address` (arrays of tables are counted from 0).
    pub key: String,
    /// Why it is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}: {}",
                self.file, self.key, self.reason
            ),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.reason),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file, as given.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a value of the wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The file, as given.
        file: String,
        /// The `toml` crate's message, with line, column and the offending text.
        message: String,
    },
    /// The file parses but some values are wrong: all of them are listed.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// How many problems this error reports.
    pub fn count(&self) -> usize {
        match self {
            Self::Invalid(problems) => problems.len(),
            Self::Read { .. } | Self::Parse { .. } => 1,
        }
    }
}

/// Reads and validates the configuration from `source`. Where the data lives is settled
/// here: the file's `data_dir` (a relative one is relative to the file's directory, never to
/// the current one), else [`default_data_dir`] for the user running the program.
pub fn load(source: &Source) -> Result<Settings, ConfigError> {
    let (mut settings, dir) = match source {
        Source::Embedded => (parse(&source.name(), EMBEDDED_DEFAULT)?, None),
        Source::Flag(path) | Source::Env(path) | Source::System(path) => {
            let file = source.name();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            let dir = std::path::absolute(path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            (parse(&file, &text)?, dir)
        }
    };
    settings.data_dir = resolve_data_dir(&settings.data_dir, dir.as_deref(), &Account::current());
    Ok(settings)
}

/// Who runs the program, as far as the default data directory is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The real user id.
    pub uid: u32,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
}

impl Account {
    /// The account of this process.
    pub fn current() -> Account {
        let var = |name| std::env::var_os(name).map(PathBuf::from);
        Account {
            uid: rustix::process::getuid().as_raw(),
            home: var("HOME"),
            xdg_data_home: var("XDG_DATA_HOME"),
        }
    }
}

/// Where the data lives when the configuration does not say: `/var/lib/yizhan` for root;
/// for anyone else `$XDG_DATA_HOME/yizhan` (if that is absolute, as the XDG base directory
/// specification asks), else `~/.local/share/yizhan`. Never the current directory, so that
/// `serve`, `sendmail`, `mailq` and `queue` started anywhere agree.
pub fn default_data_dir(account: &Account) -> PathBuf {
    if account.uid == 0 {
        return PathBuf::from(SYSTEM_DATA_DIR);
    }
    if let Some(xdg) = account.xdg_data_home.as_ref().filter(|p| p.is_absolute()) {
        return xdg.join("yizhan");
    }
    match account.home.as_ref().filter(|p| p.is_absolute()) {
        Some(home) => home.join(".local/share/yizhan"),
        // No home at all (a service account): the system place, as for root.
        None => PathBuf::from(SYSTEM_DATA_DIR),
    }
}

/// The data directory's paragraph of `--help`, with the default for `account` spelled out.
pub fn data_dir_help(account: &Account) -> String {
    format!(
        "Data directory (spool, maildrop, control socket, mailboxes): the configuration's \
         data_dir, a relative one being relative to the configuration file's directory. \
         Without one: {} for you (uid {}). The rule: {SYSTEM_DATA_DIR} when run as root, \
         else $XDG_DATA_HOME/yizhan if that is absolute, else ~/.local/share/yizhan; never \
         the current directory, so serve, sendmail, mailq and queue agree wherever they are \
         started. `yizhan check-config` prints the one in use.",
        default_data_dir(account).display(),
        account.uid
    )
}

/// The data directory of a system-wide installation.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/yizhan";

/// The data directory to use: `given` by the file (empty: none), made absolute against the
/// file's directory `base`, else the default for `account`.
fn resolve_data_dir(given: &Path, base: Option<&Path>, account: &Account) -> PathBuf {
    if given.as_os_str().is_empty() {
        return default_data_dir(account);
    }
    match base {
        Some(base) if given.is_relative() => base.join(given),
        _ => given.to_path_buf(),
    }
}

/// Parses and validates configuration text; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut v = Validator {
        file,
        text,
        problems: Vec::new(),
    };
    let settings = raw.validate(&mut v);
    if v.problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError::Invalid(v.problems))
    }
}

/// Command-line values that replace the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen ADDR` (repeatable): replaces every listener with SMTP listeners.
    pub listen: Vec<SocketAddr>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
}

impl Overrides {
    /// Applies the overrides to validated settings.
    pub fn apply(&self, settings: &mut Settings) {
        if !self.listen.is_empty() {
            settings.listeners = self
                .listen
                .iter()
                .map(|&address| ListenerSettings::new(address, ListenerKind::Smtp))
                .collect();
        }
        if let Some(dir) = &self.data_dir {
            settings.data_dir.clone_from(dir);
        }
    }
}

/// A human summary of the settings, one line each (for `check-config` and the start-up log).
pub fn summary(settings: &Settings) -> Vec<String> {
    let d = &settings.directory;
    let s = &settings.smtp;
    let secs = |d: Duration| d.as_secs();
    let mut lines = vec![
        format!("hostname: {}", settings.hostname),
        format!("data_dir: {}", settings.data_dir.display()),
        format!(
            "user: {}, group {} (when started as root)",
            settings.user,
            settings.group.as_deref().unwrap_or("the user's own")
        ),
    ];
    for l in &settings.listeners {
        if l.overrides == ListenerOverrides::default() {
            lines.push(format!("listener: {} ({})", l.address, l.kind));
        } else {
            lines.push(format!(
                "listener: {} ({}) with overrides {:?}",
                l.address, l.kind, l.overrides
            ));
        }
    }
    match &settings.tls {
        Some(tls) => lines.push(format!(
            "tls: cert {}, key {}, checked for changes every {}s (SIGHUP reloads at once)",
            tls.cert.display(),
            tls.key.display(),
            tls.reload_interval.as_secs()
        )),
        None => lines.push("tls: off (no [tls] section)".to_owned()),
    }
    let a = &settings.auth;
    let mechanisms: Vec<&str> = a.mechanisms.iter().map(|m| m.as_str()).collect();
    lines.push(format!(
        "auth: {} ({} users with a password), require_tls {}, max_failures {}, failure delay {}ms doubling up to {}ms, sender_must_match {}",
        if mechanisms.is_empty() { "off".to_owned() } else { mechanisms.join(" ") },
        settings.credentials.users().count(),
        a.require_tls,
        a.max_failures,
        a.failure_delay.as_millis(),
        a.failure_delay_max.as_millis(),
        a.sender_must_match
    ));
    let networks: Vec<String> = s.relay_networks.iter().map(ToString::to_string).collect();
    lines.push(format!(
        "relay: authenticated users{}",
        if networks.is_empty() {
            String::new()
        } else {
            format!(" and networks {}", networks.join(", "))
        }
    ));
    let domains: Vec<String> = d
        .domains()
        .iter()
        .map(|name| {
            if d.is_catch_all(name) {
                format!("{name} (catch-all)")
            } else {
                let n = d
                    .mailboxes()
                    .filter(|(a, _)| a.ends_with(&format!("@{name}")))
                    .count();
                format!("{name} ({n} mailboxes)")
            }
        })
        .collect();
    lines.push(format!("domains: {}", domains.join(", ")));
    lines.push(format!(
        "directory: {} mailboxes, {} aliases, {} relocated; postmaster {}",
        d.mailboxes().count(),
        d.aliases().count(),
        d.relocated().count(),
        d.postmaster()
    ));
    lines.push(format!(
        "smtp: max_message_size {} bytes, max_recipients {}, max_line_length {}, max_errors {}",
        s.max_message_size, s.max_recipients, s.max_line_length, s.max_errors
    ));
    lines.push(format!(
        "connections: max {} (max {} per IP); timeouts: command {}s, data block {}s, data termination {}s",
        s.max_connections,
        s.max_connections_per_ip,
        secs(s.timeouts.command),
        secs(s.timeouts.data_block),
        secs(s.timeouts.data_termination)
    ));
    let on = |b: bool| if b { "on" } else { "off" };
    lines.push(format!(
        "commands: VRFY {}, EXPN {}, SEND/SOML/SAML {}, HELP {}, TURN {}, ETRN {}",
        s.vrfy,
        s.expn,
        on(s.send_soml_saml),
        on(s.help),
        on(s.turn),
        on(s.etrn)
    ));
    lines.push(format!(
        "extensions: PIPELINING {}, 8BITMIME {}, SMTPUTF8 {}, CHUNKING {}, ENHANCEDSTATUSCODES {}, DSN {}, BINARYMIME {}",
        on(s.pipelining),
        on(s.eight_bit_mime),
        on(s.smtputf8),
        on(s.chunking),
        on(s.enhanced_status_codes),
        on(s.dsn),
        on(s.binarymime)
    ));
    let q = &settings.queue;
    lines.push(format!(
        "queue: concurrency {}, retry after {}s doubling up to {}s, give up after {}s, maildir sync {}; shutdown grace {}s",
        q.concurrency,
        secs(q.retry_initial),
        secs(q.retry_max_backoff),
        secs(q.give_up_after),
        match q.maildir_sync {
            MaildirSync::Batch => "batch",
            MaildirSync::File => "file",
        },
        secs(settings.shutdown_grace)
    ));
    let dl = &settings.delivery;
    lines.push(format!(
        "delivery: port {}, DNS {}, TLS {}{}, max_mx_hosts {}, per_destination {}, delay warning {}, source routes {}",
        dl.remote_port,
        if dl.dns_servers.is_empty() {
            "system".to_owned()
        } else {
            dl.dns_servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
        },
        dl.tls.as_str(),
        if dl.domain_tls.is_empty() {
            String::new()
        } else {
            format!(" ({} per-domain policies)", dl.domain_tls.len())
        },
        dl.max_mx_hosts,
        dl.per_destination,
        dl.delay_warning.map_or("never".to_owned(), |d| format!("{}s", d.as_secs())),
        if dl.honour_source_routes { "honoured" } else { "ignored" },
    ));
    let relays: Vec<String> = dl
        .smarthosts
        .iter()
        .map(|(domain, h)| format!("{domain} via {}:{}", h.host, h.port))
        .chain(
            dl.default_smarthost
                .iter()
                .map(|h| format!("everything else via {}:{}", h.host, h.port)),
        )
        .collect();
    lines.push(format!(
        "smarthosts: {}",
        if relays.is_empty() {
            "none (MX)".to_owned()
        } else {
            relays.join(", ")
        }
    ));
    if !settings.turn_domains.is_empty() {
        let turn: Vec<String> = settings
            .turn_domains
            .iter()
            .map(|(user, domains)| format!("{user} owns {}", domains.join(" ")))
            .collect();
        lines.push(format!("turn: {}", turn.join("; ")));
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// The file as written. Every value that can be wrong is `Spanned`, so problems name a line.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    postmaster: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<RawDuration>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    listener: Option<Spanned<Vec<RawListener>>>,
    #[serde(default)]
    smtp: RawSmtp,
    #[serde(default)]
    queue: RawQueue,
    tls: Option<RawTls>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    domain: Vec<RawDomain>,
    #[serde(default)]
    mailbox: Vec<RawMailbox>,
    #[serde(default)]
    alias: Vec<RawAlias>,
    #[serde(default)]
    relocated: Vec<RawRelocated>,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    smarthost: Vec<RawSmarthost>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    remote_port: Option<Spanned<i64>>,
    dns_servers: Option<Spanned<Vec<Spanned<String>>>>,
    dns_timeout: Option<Spanned<RawDuration>>,
    connect_timeout: Option<Spanned<RawDuration>>,
    greeting_timeout: Option<Spanned<RawDuration>>,
    command_timeout: Option<Spanned<RawDuration>>,
    data_block_timeout: Option<Spanned<RawDuration>>,
    data_end_timeout: Option<Spanned<RawDuration>>,
    max_mx_hosts: Option<Spanned<i64>>,
    per_destination: Option<Spanned<i64>>,
    connection_idle: Option<Spanned<RawDuration>>,
    delay_warning: Option<Spanned<RawDuration>>,
    honour_source_routes: Option<bool>,
    local_names: Option<Spanned<Vec<Spanned<String>>>>,
    tls: Option<Spanned<String>>,
    #[serde(default)]
    domain_tls: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmarthost {
    domain: Option<Spanned<String>>,
    host: Spanned<String>,
    port: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: Spanned<String>,
    kind: Option<Spanned<String>>,
    // Per-listener overrides of [smtp] and [auth].
    max_message_size: Option<Spanned<i64>>,
    max_recipients: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
    vrfy: Option<Spanned<String>>,
    expn: Option<Spanned<String>>,
    send_soml_saml: Option<bool>,
    turn: Option<bool>,
    etrn: Option<bool>,
    relay_networks: Option<Spanned<Vec<Spanned<String>>>>,
    auth_max_failures: Option<Spanned<i64>>,
    auth_require_tls: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
    reload_interval: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mechanisms: Option<Spanned<Vec<Spanned<String>>>>,
    require_tls: Option<bool>,
    failure_delay: Option<Spanned<RawDuration>>,
    failure_delay_max: Option<Spanned<RawDuration>>,
    max_failures: Option<Spanned<i64>>,
    sender_must_match: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    max_message_size: Option<Spanned<i64>>,
    max_recipients: Option<Spanned<i64>>,
    max_line_length: Option<Spanned<i64>>,
    max_errors: Option<Spanned<i64>>,
    max_hops: Option<Spanned<i64>>,
    soft_error_limit: Option<Spanned<i64>>,
    error_sleep: Option<Spanned<RawDuration>>,
    junk_command_limit: Option<Spanned<i64>>,
    recipient_overshoot_limit: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
    command_timeout: Option<Spanned<RawDuration>>,
    data_block_timeout: Option<Spanned<RawDuration>>,
    data_termination_timeout: Option<Spanned<RawDuration>>,
    vrfy: Option<Spanned<String>>,
    expn: Option<Spanned<String>>,
    send_soml_saml: Option<bool>,
    help: Option<bool>,
    pipelining: Option<bool>,
    eight_bit_mime: Option<bool>,
    smtputf8: Option<bool>,
    chunking: Option<bool>,
    enhanced_status_codes: Option<bool>,
    dsn: Option<bool>,
    binarymime: Option<Spanned<bool>>,
    turn: Option<bool>,
    etrn: Option<bool>,
    relay_networks: Option<Spanned<Vec<Spanned<String>>>>,
    limit_exceptions: Option<Spanned<Vec<Spanned<String>>>>,
    connection_rate_limit: Option<Spanned<i64>>,
    session_lifetime: Option<Spanned<RawDuration>>,
    max_session_bytes: Option<Spanned<i64>>,
    auth_failure_rate_limit: Option<Spanned<i64>>,
    verify_rate_limit: Option<Spanned<i64>>,
    etrn_rate_limit: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    concurrency: Option<Spanned<i64>>,
    retry_initial: Option<Spanned<RawDuration>>,
    retry_max_backoff: Option<Spanned<RawDuration>>,
    give_up_after: Option<Spanned<RawDuration>>,
    maildir_sync: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    address: Spanned<String>,
    full_name: Option<Spanned<String>>,
    /// An argon2 PHC string (`yizhan hash-password`), never a plain password.
    password: Option<Spanned<String>>,
    /// Domains whose queued mail this user collects with TURN.
    turn_domains: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlias {
    address: Spanned<String>,
    members: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelocated {
    address: Spanned<String>,
    new_address: Spanned<String>,
}

/// A duration: integer seconds, or a string with a unit (`"250ms"`, `"90s"`, `"5m"`, `"2h"`,
/// `"5d"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(i64),
    Text(String),
}

impl RawDuration {
    fn to_duration(&self) -> Result<Duration, String> {
        const HINT: &str =
            "expected seconds (e.g. 300) or a number with a unit ms, s, m, h or d (e.g. \"5m\")";
        let millis = match self {
            Self::Seconds(n) => u64::try_from(*n)
                .map_err(|_| format!("{n} is negative"))?
                .checked_mul(1000)
                .ok_or_else(|| format!("{n} is too long"))?,
            Self::Text(text) => {
                let text = text.trim();
                let split = text
                    .find(|c: char| !c.is_ascii_digit())
                    .ok_or_else(|| format!("{text:?} has no unit; {HINT}"))?;
                let (number, unit) = text.split_at(split);
                let number: u64 = number
                    .parse()
                    .map_err(|_| format!("{text:?} is not a duration; {HINT}"))?;
                let factor = match unit.trim() {
                    "ms" => 1,
                    "s" => 1000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    "d" => 86_400_000,
                    _ => return Err(format!("{text:?} is not a duration; {HINT}")),
                };
                number
                    .checked_mul(factor)
                    .ok_or_else(|| format!("{text:?} is too long"))?
            }
        };
        Ok(Duration::from_millis(millis))
    }
}

/// Collects problems with their location.
struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn location(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn problem(&mut self, key: impl Into<String>, span: Option<usize>, reason: impl Into<String>) {
        let location = span.map(|offset| self.location(offset));
        self.problems.push(Problem {
            file: self.file.to_owned(),
            location,
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// An integer at least `min`, converted to `T`; `default` when absent.
    fn integer<T: TryFrom<i64> + Copy>(
        &mut self,
        key: &str,
        value: &Option<Spanned<i64>>,
        min: i64,
        why: &str,
        default: T,
    ) -> T {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        if n < min {
            self.problem(
                key,
                Some(value.span().start),
                format!("{n} is below the minimum {min}{why}"),
            );
            return default;
        }
        match T::try_from(n) {
            Ok(n) => n,
            Err(_) => {
                self.problem(key, Some(value.span().start), format!("{n} is too large"));
                default
            }
        }
    }

    /// A duration; `default` when absent. `positive` refuses zero.
    fn duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<RawDuration>>,
        positive: bool,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else { return default };
        match value.get_ref().to_duration() {
            Ok(d) if positive && d.is_zero() => {
                self.problem(key, Some(value.span().start), "must be more than 0");
                default
            }
            Ok(d) => d,
            Err(reason) => {
                self.problem(key, Some(value.span().start), reason);
                default
            }
        }
    }

    fn policy(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: VerifyPolicy,
    ) -> VerifyPolicy {
        let Some(value) = value else { return default };
        VerifyPolicy::from_name(value.get_ref()).unwrap_or_else(|| {
            self.problem(
                key,
                Some(value.span().start),
                format!(
                    "unknown policy {:?} (expected \"disabled\", \"cannot-verify\" or \"enabled\")",
                    value.get_ref()
                ),
            );
            default
        })
    }
}

impl Validator<'_> {
    /// A TLS policy name (`none`, `opportunistic`, `require`, `verify`); `None` when absent or
    /// wrong (then a problem is recorded).
    fn tls_policy(&mut self, key: &str, value: &Option<Spanned<String>>) -> Option<TlsPolicy> {
        let value = value.as_ref()?;
        let policy = TlsPolicy::from_name(value.get_ref());
        if policy.is_none() {
            self.problem(
                key,
                Some(value.span().start),
                format!(
                    "unknown TLS policy {:?} (expected \"none\", \"opportunistic\", \"require\" or \"verify\")",
                    value.get_ref()
                ),
            );
        }
        policy
    }

    /// A list of CIDR networks (`10.0.0.0/8`, `::1/128`; a bare address means one host).
    fn networks(
        &mut self,
        key: &str,
        value: &Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<Vec<IpNet>> {
        let list = value.as_ref()?;
        let mut out = Vec::new();
        for (i, item) in list.get_ref().iter().enumerate() {
            let text = item.get_ref().trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.problem(
                    format!("{key}[{i}]"),
                    Some(item.span().start),
                    format!("{text:?} is not a network in CIDR notation (e.g. \"10.0.0.0/8\")"),
                ),
            }
        }
        Some(out)
    }
}

impl RawConfig {
    fn validate(&self, v: &mut Validator<'_>) -> Settings {
        let defaults = Settings::default();
        let mut settings = defaults.clone();

        if let Some(hostname) = &self.hostname {
            let name = hostname.get_ref();
            let at = Some(hostname.span().start);
            if name.is_empty() {
                v.problem("hostname", at, "must not be empty");
            } else if let Err(e) = yizhan_server::directory::canonical_domain(name) {
                v.problem(
                    "hostname",
                    at,
                    format!("{name:?} is not a domain name: {e}"),
                );
            } else {
                settings.hostname.clone_from(name);
            }
        }
        if let Some(dir) = &self.data_dir {
            if dir.get_ref().is_empty() {
                v.problem("data_dir", Some(dir.span().start), "must not be empty");
            } else {
                settings.data_dir = PathBuf::from(dir.get_ref());
            }
        }
        settings.shutdown_grace = v.duration(
            "shutdown_grace",
            &self.shutdown_grace,
            false,
            defaults.shutdown_grace,
        );
        if let Some(user) = &self.user {
            match user.get_ref().as_str() {
                "" => v.problem("user", Some(user.span().start), "must not be empty"),
                "root" | "0" => v.problem(
                    "user",
                    Some(user.span().start),
                    "must not be root: the server would keep every privilege (create an \
                     account for it, see the default)",
                ),
                name => settings.user = name.to_owned(),
            }
        }
        if let Some(group) = &self.group {
            match group.get_ref().as_str() {
                "" => v.problem("group", Some(group.span().start), "must not be empty"),
                "root" | "0" => v.problem("group", Some(group.span().start), "must not be root"),
                name => settings.group = Some(name.to_owned()),
            }
        }

        if let Some(listeners) = &self.listener {
            settings.listeners = self.listeners(v, listeners);
        }
        self.smtp(v, &mut settings);
        self.queue(v, &mut settings);
        self.tls(v, &mut settings);
        self.auth(v, &mut settings);
        if let Some(directory) = self.directory(v) {
            settings.directory = directory;
        }
        settings.credentials = self.credentials(v);
        self.delivery(v, &mut settings);
        self.smarthosts(v, &mut settings);
        self.turn_domains(v, &mut settings);
        if settings.tls.is_none()
            && let Some(listeners) = &self.listener
        {
            for (i, l) in listeners.get_ref().iter().enumerate() {
                if let Some(kind) = &l.kind
                    && kind.get_ref() == ListenerKind::Submissions.as_str()
                {
                    v.problem(
                        format!("listener[{i}].kind"),
                        Some(kind.span().start),
                        "a \"submissions\" listener speaks implicit TLS (RFC 8314) and needs a [tls] section with cert and key",
                    );
                }
            }
        }
        settings
    }

    fn tls(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let Some(raw) = &self.tls else { return };
        let mut path = |key: &str, value: &Spanned<String>| {
            if value.get_ref().is_empty() {
                v.problem(key, Some(value.span().start), "must not be empty");
            }
            PathBuf::from(value.get_ref())
        };
        let cert = path("tls.cert", &raw.cert);
        let key = path("tls.key", &raw.key);
        let reload_interval = v.duration(
            "tls.reload_interval",
            &raw.reload_interval,
            true,
            Duration::from_secs(60),
        );
        settings.tls = Some(TlsSettings {
            cert,
            key,
            reload_interval,
        });
    }

    fn auth(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.auth;
        let a = &mut settings.auth;
        let d = a.clone();
        if let Some(list) = &raw.mechanisms {
            let mut mechanisms = Vec::new();
            for (i, name) in list.get_ref().iter().enumerate() {
                match Mechanism::from_name(name.get_ref()) {
                    Some(m) if !mechanisms.contains(&m) => mechanisms.push(m),
                    Some(_) => v.problem(
                        format!("auth.mechanisms[{i}]"),
                        Some(name.span().start),
                        format!("{:?} is listed twice", name.get_ref()),
                    ),
                    None => v.problem(
                        format!("auth.mechanisms[{i}]"),
                        Some(name.span().start),
                        format!(
                            "unknown mechanism {:?} (expected \"PLAIN\" or \"LOGIN\")",
                            name.get_ref()
                        ),
                    ),
                }
            }
            a.mechanisms = mechanisms;
        }
        a.require_tls = raw.require_tls.unwrap_or(d.require_tls);
        a.failure_delay = v.duration(
            "auth.failure_delay",
            &raw.failure_delay,
            false,
            d.failure_delay,
        );
        a.failure_delay_max = v.duration(
            "auth.failure_delay_max",
            &raw.failure_delay_max,
            false,
            d.failure_delay_max,
        );
        a.max_failures = v.integer(
            "auth.max_failures",
            &raw.max_failures,
            1,
            "",
            d.max_failures,
        );
        a.sender_must_match = raw.sender_must_match.unwrap_or(d.sender_must_match);
        if a.failure_delay_max < a.failure_delay
            && let Some(value) = raw
                .failure_delay_max
                .as_ref()
                .or(raw.failure_delay.as_ref())
        {
            v.problem(
                "auth.failure_delay_max",
                Some(value.span().start),
                "is shorter than auth.failure_delay",
            );
        }
    }

    fn delivery(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.delivery;
        let d = &mut settings.delivery;
        let def = d.clone();
        if let Some(port) = &raw.remote_port {
            match u16::try_from(*port.get_ref()) {
                Ok(p) if p > 0 => d.remote_port = p,
                _ => v.problem(
                    "delivery.remote_port",
                    Some(port.span().start),
                    format!("{} is not a TCP port (1 to 65535)", port.get_ref()),
                ),
            }
        }
        if let Some(list) = &raw.dns_servers {
            for (i, item) in list.get_ref().iter().enumerate() {
                let text = item.get_ref().trim();
                let parsed = text.parse::<SocketAddr>().or_else(|_| {
                    text.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                });
                match parsed {
                    Ok(addr) => d.dns_servers.push(addr),
                    Err(_) => v.problem(
                        format!("delivery.dns_servers[{i}]"),
                        Some(item.span().start),
                        format!(
                            "{text:?} is not an IP address with an optional port (e.g. \"192.0.2.53\" or \"127.0.0.1:5353\")"
                        ),
                    ),
                }
            }
        }
        let dur = |v: &mut Validator<'_>, key: &str, value, default| {
            v.duration(&format!("delivery.{key}"), value, true, default)
        };
        d.dns_timeout = dur(v, "dns_timeout", &raw.dns_timeout, def.dns_timeout);
        d.connect_timeout = dur(
            v,
            "connect_timeout",
            &raw.connect_timeout,
            def.connect_timeout,
        );
        d.greeting_timeout = dur(
            v,
            "greeting_timeout",
            &raw.greeting_timeout,
            def.greeting_timeout,
        );
        d.command_timeout = dur(
            v,
            "command_timeout",
            &raw.command_timeout,
            def.command_timeout,
        );
        d.data_block_timeout = dur(
            v,
            "data_block_timeout",
            &raw.data_block_timeout,
            def.data_block_timeout,
        );
        d.data_end_timeout = dur(
            v,
            "data_end_timeout",
            &raw.data_end_timeout,
            def.data_end_timeout,
        );
        d.max_mx_hosts = v.integer(
            "delivery.max_mx_hosts",
            &raw.max_mx_hosts,
            1,
            "",
            def.max_mx_hosts,
        );
        d.per_destination = v.integer(
            "delivery.per_destination",
            &raw.per_destination,
            1,
            "",
            def.per_destination,
        );
        d.connection_idle = v.duration(
            "delivery.connection_idle",
            &raw.connection_idle,
            false,
            def.connection_idle,
        );
        if raw.delay_warning.is_some() {
            let after = v.duration(
                "delivery.delay_warning",
                &raw.delay_warning,
                false,
                Duration::ZERO,
            );
            d.delay_warning = (!after.is_zero()).then_some(after);
        }
        d.honour_source_routes = raw.honour_source_routes.unwrap_or(def.honour_source_routes);
        if let Some(list) = &raw.local_names {
            for (i, item) in list.get_ref().iter().enumerate() {
                match yizhan_server::directory::canonical_domain(item.get_ref()) {
                    Ok(name) => d.local_names.push(name.to_string()),
                    Err(e) => v.problem(
                        format!("delivery.local_names[{i}]"),
                        Some(item.span().start),
                        format!("{:?} is not a domain name: {e}", item.get_ref()),
                    ),
                }
            }
        }
        if let Some(tls) = v.tls_policy("delivery.tls", &raw.tls) {
            d.tls = tls;
        }
        for (domain, policy) in &raw.domain_tls {
            let key = format!("delivery.domain_tls.{domain:?}");
            let name = match yizhan_server::directory::canonical_domain(domain) {
                Ok(name) => name.to_string(),
                Err(e) => {
                    v.problem(
                        key,
                        Some(policy.span().start),
                        format!("{domain:?} is not a domain name: {e}"),
                    );
                    continue;
                }
            };
            if let Some(tls) = v.tls_policy(&key, &Some(policy.clone()))
                && d.domain_tls.insert(name, tls).is_some()
            {
                v.problem(key, Some(policy.span().start), "domain listed twice");
            }
        }
    }

    fn smarthosts(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        for (i, raw) in self.smarthost.iter().enumerate() {
            let key = |k: &str| format!("smarthost[{i}].{k}");
            let host = raw.host.get_ref().trim();
            let host_ok = host.parse::<std::net::IpAddr>().is_ok()
                || yizhan_server::directory::canonical_domain(host).is_ok();
            if !host_ok {
                v.problem(
                    key("host"),
                    Some(raw.host.span().start),
                    format!("{host:?} is not a host name or IP address"),
                );
            }
            let port = match &raw.port {
                None => 25,
                Some(p) => match u16::try_from(*p.get_ref()) {
                    Ok(p) if p > 0 => p,
                    _ => {
                        v.problem(
                            key("port"),
                            Some(p.span().start),
                            format!("{} is not a TCP port (1 to 65535)", p.get_ref()),
                        );
                        25
                    }
                },
            };
            let tls = v
                .tls_policy(&key("tls"), &raw.tls)
                .unwrap_or(TlsPolicy::Opportunistic);
            let auth = match (&raw.user, &raw.password) {
                (None, None) => None,
                (Some(user), Some(password)) => {
                    if !matches!(tls, TlsPolicy::Require | TlsPolicy::Verify) {
                        v.problem(
                            key("user"),
                            Some(user.span().start),
                            "a password is only sent under TLS: set tls = \"require\" or \"verify\"",
                        );
                    }
                    Some(SmarthostCredentials::new(
                        user.get_ref().as_str(),
                        password.get_ref().as_str(),
                    ))
                }
                (Some(user), None) => {
                    v.problem(
                        key("password"),
                        Some(user.span().start),
                        "user without password",
                    );
                    None
                }
                (None, Some(password)) => {
                    v.problem(
                        key("user"),
                        Some(password.span().start),
                        "password without user",
                    );
                    None
                }
            };
            let smarthost = Smarthost {
                host: host.to_owned(),
                port,
                tls,
                auth,
            };
            let d = &mut settings.delivery;
            match &raw.domain {
                None => {
                    if d.default_smarthost.is_some() {
                        v.problem(
                            key("host"),
                            Some(raw.host.span().start),
                            "a second default smarthost (one without domain)",
                        );
                    }
                    d.default_smarthost = Some(smarthost);
                }
                Some(domain) => {
                    match yizhan_server::directory::canonical_domain(domain.get_ref()) {
                        Ok(name) => {
                            let name = name.to_string();
                            if settings.directory.is_local_domain(&name) {
                                v.problem(
                                    key("domain"),
                                    Some(domain.span().start),
                                    format!("{name} is a local domain; its mail is delivered here"),
                                );
                            } else if d.smarthosts.insert(name.clone(), smarthost).is_some() {
                                v.problem(
                                    key("domain"),
                                    Some(domain.span().start),
                                    format!("{name} has a smarthost already"),
                                );
                            }
                        }
                        Err(e) => v.problem(
                            key("domain"),
                            Some(domain.span().start),
                            format!("{:?} is not a domain name: {e}", domain.get_ref()),
                        ),
                    }
                }
            }
        }
    }

    /// `[[mailbox]] turn_domains`: each remote domain owned by one user with a password.
    fn turn_domains(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let mut owners: HashMap<String, usize> = HashMap::new();
        for (i, m) in self.mailbox.iter().enumerate() {
            let Some(list) = &m.turn_domains else {
                continue;
            };
            let key = format!("mailbox[{i}].turn_domains");
            if m.password.is_none() {
                v.problem(
                    &key,
                    Some(list.span().start),
                    "TURN is only for authenticated users: this mailbox needs a password",
                );
            }
            let Ok(user) = yizhan_server::directory::canonical_address(m.address.get_ref()) else {
                continue;
            };
            let mut domains = Vec::new();
            for (j, item) in list.get_ref().iter().enumerate() {
                let at = Some(item.span().start);
                let name = match yizhan_server::directory::canonical_domain(item.get_ref()) {
                    Ok(name) => name.to_string(),
                    Err(e) => {
                        v.problem(
                            format!("{key}[{j}]"),
                            at,
                            format!("{:?} is not a domain name: {e}", item.get_ref()),
                        );
                        continue;
                    }
                };
                if settings.directory.is_local_domain(&name) {
                    v.problem(
                        format!("{key}[{j}]"),
                        at,
                        format!("{name} is a local domain; its mail is delivered here"),
                    );
                } else if let Some(other) = owners.insert(name.clone(), i) {
                    v.problem(
                        format!("{key}[{j}]"),
                        at,
                        format!("{name} is already owned by mailbox[{other}]"),
                    );
                } else {
                    domains.push(name);
                }
            }
            if !domains.is_empty() {
                settings.turn_domains.insert(user.to_string(), domains);
            }
        }
    }

    /// The password hashes of `[[mailbox]]` entries that have one.
    fn credentials(&self, v: &mut Validator<'_>) -> Credentials {
        let mut credentials = Credentials::default();
        for (i, m) in self.mailbox.iter().enumerate() {
            let Some(password) = &m.password else {
                continue;
            };
            if let Err(e) = credentials.insert(m.address.get_ref(), password.get_ref()) {
                // A bad address is reported by the directory already.
                if matches!(e, yizhan_server::auth::CredentialError::BadHash(_)) {
                    v.problem(
                        format!("mailbox[{i}].password"),
                        Some(password.span().start),
                        format!("{e}; make one with `yizhan hash-password`"),
                    );
                }
            }
        }
        credentials
    }

    fn listeners(
        &self,
        v: &mut Validator<'_>,
        listeners: &Spanned<Vec<RawListener>>,
    ) -> Vec<ListenerSettings> {
        if listeners.get_ref().is_empty() {
            v.problem(
                "listener",
                Some(listeners.span().start),
                "at least one listener is needed",
            );
        }
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, l) in listeners.get_ref().iter().enumerate() {
            let address = match l.address.get_ref().parse::<SocketAddr>() {
                Ok(address) => {
                    // Port 0 asks the system for a free port: never a clash.
                    if address.port() != 0
                        && let Some(first) = seen.insert(address, i)
                    {
                        v.problem(
                            format!("listener[{i}].address"),
                            Some(l.address.span().start),
                            format!("{address} is already used by listener[{first}]"),
                        );
                    }
                    Some(address)
                }
                Err(_) => {
                    v.problem(
                        format!("listener[{i}].address"),
                        Some(l.address.span().start),
                        format!(
                            "invalid listener address {:?}: expected IP:port, e.g. \"127.0.0.1:2525\" or \"[::1]:2525\"",
                            l.address.get_ref()
                        ),
                    );
                    None
                }
            };
            let kind = match &l.kind {
                None => Some(ListenerKind::Smtp),
                Some(kind) => {
                    let found = ListenerKind::from_name(kind.get_ref());
                    if found.is_none() {
                        v.problem(
                            format!("listener[{i}].kind"),
                            Some(kind.span().start),
                            format!(
                                "unknown listener kind {:?} (expected \"smtp\", \"submission\" or \"submissions\")",
                                kind.get_ref()
                            ),
                        );
                    }
                    found
                }
            };
            let overrides = Self::overrides(v, i, l);
            if let (Some(address), Some(kind)) = (address, kind) {
                out.push(ListenerSettings {
                    address,
                    kind,
                    overrides,
                });
            }
        }
        out
    }

    /// The `[smtp]` / `[auth]` values a `[[listener]]` replaces.
    fn overrides(v: &mut Validator<'_>, i: usize, l: &RawListener) -> ListenerOverrides {
        let key = |name: &str| format!("listener[{i}].{name}");
        let integer =
            |v: &mut Validator<'_>, name: &str, value: &Option<Spanned<i64>>, min: i64| {
                value.as_ref()?;
                let n: i64 = v.integer(&key(name), value, min, "", -1);
                u64::try_from(n).ok()
            };
        let max_message_size = integer(v, "max_message_size", &l.max_message_size, 1);
        let max_recipients = integer(v, "max_recipients", &l.max_recipients, MIN_RECIPIENTS);
        let max_connections_per_ip =
            integer(v, "max_connections_per_ip", &l.max_connections_per_ip, 1);
        let auth_max_failures = integer(v, "auth_max_failures", &l.auth_max_failures, 1);
        let policy = |v: &mut Validator<'_>, name: &str, value: &Option<Spanned<String>>| {
            value.as_ref()?;
            Some(v.policy(&key(name), value, VerifyPolicy::Disabled))
        };
        ListenerOverrides {
            max_message_size,
            max_recipients: max_recipients.and_then(|n| usize::try_from(n).ok()),
            max_connections_per_ip: max_connections_per_ip.and_then(|n| usize::try_from(n).ok()),
            vrfy: policy(v, "vrfy", &l.vrfy),
            expn: policy(v, "expn", &l.expn),
            send_soml_saml: l.send_soml_saml,
            turn: l.turn,
            etrn: l.etrn,
            relay_networks: v.networks(&key("relay_networks"), &l.relay_networks),
            auth_max_failures: auth_max_failures.and_then(|n| u32::try_from(n).ok()),
            auth_require_tls: l.auth_require_tls,
        }
    }

    fn smtp(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.smtp;
        let s = &mut settings.smtp;
        let d = s.clone();
        s.max_message_size = v.integer(
            "smtp.max_message_size",
            &raw.max_message_size,
            1,
            "",
            d.max_message_size,
        );
        s.max_recipients = v.integer(
            "smtp.max_recipients",
            &raw.max_recipients,
            MIN_RECIPIENTS,
            " (RFC 5321 4.5.3.1.8)",
            d.max_recipients,
        );
        s.max_line_length = v.integer(
            "smtp.max_line_length",
            &raw.max_line_length,
            i64::try_from(MIN_LINE_LENGTH).unwrap_or(512),
            " (RFC 5321 4.5.3.1.4)",
            d.max_line_length,
        );
        s.max_errors = v.integer("smtp.max_errors", &raw.max_errors, 1, "", d.max_errors);
        s.max_hops = v.integer("smtp.max_hops", &raw.max_hops, 1, "", d.max_hops);
        s.soft_error_limit = v.integer(
            "smtp.soft_error_limit",
            &raw.soft_error_limit,
            1,
            "",
            d.soft_error_limit,
        );
        s.error_sleep = v.duration("smtp.error_sleep", &raw.error_sleep, false, d.error_sleep);
        s.junk_command_limit = v.integer(
            "smtp.junk_command_limit",
            &raw.junk_command_limit,
            0,
            "",
            d.junk_command_limit,
        );
        s.recipient_overshoot_limit = v.integer(
            "smtp.recipient_overshoot_limit",
            &raw.recipient_overshoot_limit,
            0,
            "",
            d.recipient_overshoot_limit,
        );
        s.max_connections = v.integer(
            "smtp.max_connections",
            &raw.max_connections,
            1,
            "",
            d.max_connections,
        );
        s.max_connections_per_ip = v.integer(
            "smtp.max_connections_per_ip",
            &raw.max_connections_per_ip,
            1,
            "",
            d.max_connections_per_ip,
        );
        if s.max_connections_per_ip > s.max_connections
            && let Some(value) = &raw.max_connections_per_ip
        {
            v.problem(
                "smtp.max_connections_per_ip",
                Some(value.span().start),
                format!(
                    "{} is more than smtp.max_connections ({})",
                    s.max_connections_per_ip, s.max_connections
                ),
            );
        }
        s.timeouts.command = v.duration(
            "smtp.command_timeout",
            &raw.command_timeout,
            true,
            d.timeouts.command,
        );
        s.timeouts.data_block = v.duration(
            "smtp.data_block_timeout",
            &raw.data_block_timeout,
            true,
            d.timeouts.data_block,
        );
        s.timeouts.data_termination = v.duration(
            "smtp.data_termination_timeout",
            &raw.data_termination_timeout,
            true,
            d.timeouts.data_termination,
        );
        s.vrfy = v.policy("smtp.vrfy", &raw.vrfy, d.vrfy);
        s.expn = v.policy("smtp.expn", &raw.expn, d.expn);
        s.send_soml_saml = raw.send_soml_saml.unwrap_or(d.send_soml_saml);
        s.help = raw.help.unwrap_or(d.help);
        s.pipelining = raw.pipelining.unwrap_or(d.pipelining);
        s.eight_bit_mime = raw.eight_bit_mime.unwrap_or(d.eight_bit_mime);
        s.smtputf8 = raw.smtputf8.unwrap_or(d.smtputf8);
        s.chunking = raw.chunking.unwrap_or(d.chunking);
        s.enhanced_status_codes = raw.enhanced_status_codes.unwrap_or(d.enhanced_status_codes);
        s.dsn = raw.dsn.unwrap_or(d.dsn);
        s.binarymime = raw
            .binarymime
            .as_ref()
            .map_or(d.binarymime, |b| *b.get_ref());
        if let Some(binarymime) = &raw.binarymime
            && s.binarymime
            && !s.chunking
        {
            v.problem(
                "smtp.binarymime",
                Some(binarymime.span().start),
                "needs smtp.chunking (RFC 3030 3: a BINARYMIME body is sent with BDAT)",
            );
        }
        s.turn = raw.turn.unwrap_or(d.turn);
        s.etrn = raw.etrn.unwrap_or(d.etrn);
        if let Some(networks) = v.networks("smtp.relay_networks", &raw.relay_networks) {
            s.relay_networks = networks;
        }
        if let Some(networks) = v.networks("smtp.limit_exceptions", &raw.limit_exceptions) {
            s.limit_exceptions = Some(networks);
        }
        s.session_lifetime = v.duration(
            "smtp.session_lifetime",
            &raw.session_lifetime,
            true,
            d.session_lifetime,
        );
        s.max_session_bytes = v.integer(
            "smtp.max_session_bytes",
            &raw.max_session_bytes,
            1,
            "",
            d.max_session_bytes,
        );
        let r = &mut s.rate_limits;
        let dr = &d.rate_limits;
        for (key, raw, value, default) in [
            (
                "smtp.connection_rate_limit",
                &raw.connection_rate_limit,
                &mut r.connections_per_minute,
                dr.connections_per_minute,
            ),
            (
                "smtp.auth_failure_rate_limit",
                &raw.auth_failure_rate_limit,
                &mut r.auth_failures_per_minute,
                dr.auth_failures_per_minute,
            ),
            (
                "smtp.verify_rate_limit",
                &raw.verify_rate_limit,
                &mut r.verify_per_minute,
                dr.verify_per_minute,
            ),
            (
                "smtp.etrn_rate_limit",
                &raw.etrn_rate_limit,
                &mut r.etrn_per_minute,
                dr.etrn_per_minute,
            ),
        ] {
            *value = v.integer(key, raw, 0, " (per minute; 0: off)", default);
        }
    }

    fn queue(&self, v: &mut Validator<'_>, settings: &mut Settings) {
        let raw = &self.queue;
        let q = &mut settings.queue;
        let d = *q;
        q.concurrency = v.integer("queue.concurrency", &raw.concurrency, 1, "", d.concurrency);
        q.retry_initial = v.duration(
            "queue.retry_initial",
            &raw.retry_initial,
            true,
            d.retry_initial,
        );
        q.retry_max_backoff = v.duration(
            "queue.retry_max_backoff",
            &raw.retry_max_backoff,
            true,
            d.retry_max_backoff,
        );
        q.give_up_after = v.duration(
            "queue.give_up_after",
            &raw.give_up_after,
            true,
            d.give_up_after,
        );
        if let Some(value) = &raw.maildir_sync {
            match value.get_ref().as_str() {
                "batch" => q.maildir_sync = MaildirSync::Batch,
                "file" => q.maildir_sync = MaildirSync::File,
                other => v.problem(
                    "queue.maildir_sync",
                    Some(value.span().start),
                    format!("unknown mode {other:?} (expected \"batch\" or \"file\")"),
                ),
            }
        }
        if q.retry_max_backoff < q.retry_initial {
            let span = raw
                .retry_max_backoff
                .as_ref()
                .or(raw.retry_initial.as_ref())
                .map(|s| s.span().start);
            v.problem(
                "queue.retry_max_backoff",
                span,
                format!(
                    "{}s is shorter than queue.retry_initial ({}s)",
                    q.retry_max_backoff.as_secs(),
                    q.retry_initial.as_secs()
                ),
            );
        }
    }

    /// Builds the directory; `None` (with problems recorded) if it is invalid.
    fn directory(&self, v: &mut Validator<'_>) -> Option<Directory> {
        let mut b = Directory::builder();
        if self.domain.is_empty() {
            for name in Settings::default().directory.domains() {
                b.domain(name.as_str());
            }
        }
        for d in &self.domain {
            b.domain(d.name.get_ref().as_str());
        }
        for m in &self.mailbox {
            let full_name = m.full_name.as_ref().map(|n| n.get_ref().clone());
            b.mailbox(m.address.get_ref().as_str(), full_name);
        }
        for a in &self.alias {
            let members = a.members.get_ref().iter().map(|m| m.get_ref().as_str());
            b.alias(a.address.get_ref().as_str(), members);
        }
        for r in &self.relocated {
            b.relocated(
                r.address.get_ref().as_str(),
                r.new_address.get_ref().as_str(),
            );
        }
        if let Some(p) = &self.postmaster {
            b.postmaster(p.get_ref().as_str());
        }
        match b.build() {
            Ok(directory) => Some(directory),
            Err(errors) => {
                for DirectoryError { entry, problem } in errors {
                    v.problem(entry.to_string(), self.span_of(entry), problem.to_string());
                }
                None
            }
        }
    }

    /// Where a directory entry's value starts in the file.
    fn span_of(&self, entry: Entry) -> Option<usize> {
        let span = match entry {
            Entry::Domain(i) => self.domain.get(i)?.name.span(),
            Entry::Mailbox(i) => self.mailbox.get(i)?.address.span(),
            Entry::MailboxFullName(i) => self.mailbox.get(i)?.full_name.as_ref()?.span(),
            Entry::Alias(i) => self.alias.get(i)?.address.span(),
            Entry::AliasMembers(i) => self.alias.get(i)?.members.span(),
            Entry::AliasMember { alias, member } => {
                self.alias.get(alias)?.members.get_ref().get(member)?.span()
            }
            Entry::Relocated(i) => self.relocated.get(i)?.address.span(),
            Entry::RelocatedNewAddress(i) => self.relocated.get(i)?.new_address.span(),
            Entry::Postmaster => self.postmaster.as_ref()?.span(),
        };
        Some(span.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample from the project brief and docs/configuration.md, unchanged.
    pub(crate) const SAMPLE: &str = r#"hostname = "mx.test.example"
data_dir = "/var/lib/yizhan"

[[listener]]
address = "127.0.0.1:2525"
kind = "smtp"                 # later also "submission" and "submissions"

[smtp]
max_message_size = 10485760   # advertised with SIZE
max_recipients = 1000

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"

[[mailbox]]
address = "user2@test.example"

[[alias]]
address = "list@test.example"
members = ["user@test.example", "user2@test.example"]

[[relocated]]
address = "moved@test.example"
new_address = "moved@elsewhere.example"
"#;

    fn problems(text: &str) -> Vec<Problem> {
        match parse("t.toml", text) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match parse("t.toml", text) {
            Err(e @ ConfigError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn sample_is_accepted_and_gives_the_expected_settings() {
        let settings = parse("sample.toml", SAMPLE).unwrap();
        let mut b = Directory::builder();
        b.domain("test.example")
            .mailbox("user@test.example", None)
            .mailbox("user2@test.example", None)
            .alias(
                "list@test.example",
                ["user@test.example", "user2@test.example"],
            )
            .relocated("moved@test.example", "moved@elsewhere.example");
        let defaults = Settings::default();
        let want = Settings {
            hostname: "mx.test.example".to_owned(),
            data_dir: PathBuf::from("/var/lib/yizhan"),
            listeners: vec![ListenerSettings::new(
                "127.0.0.1:2525".parse().unwrap(),
                ListenerKind::Smtp,
            )],
            smtp: yizhan_server::settings::SmtpSettings {
                max_message_size: 10_485_760,
                max_recipients: 1000,
                ..defaults.smtp.clone()
            },
            directory: b.build().unwrap(),
            ..defaults
        };
        assert_eq!(settings, want);
        assert_eq!(settings.directory.postmaster(), "postmaster@test.example");
    }

    #[test]
    fn the_documented_examples_are_the_tested_ones() {
        let doc = include_str!("../../../docs/configuration.md");
        assert!(
            doc.contains(SAMPLE),
            "docs/configuration.md must show SAMPLE unchanged"
        );
        let body: String = EMBEDDED_DEFAULT
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            doc.contains(&body),
            "docs/configuration.md must show the embedded default"
        );
    }

    /// Issue #12: never the current directory; root, XDG, HOME, in that order.
    #[test]
    fn the_default_data_dir_depends_on_the_account_not_the_directory() {
        let account = |uid, home: Option<&str>, xdg: Option<&str>| Account {
            uid,
            home: home.map(PathBuf::from),
            xdg_data_home: xdg.map(PathBuf::from),
        };
        let cases = [
            (account(0, Some("/root"), Some("/x")), "/var/lib/yizhan"),
            (
                account(1000, Some("/home/ann"), None),
                "/home/ann/.local/share/yizhan",
            ),
            (
                account(1000, Some("/home/ann"), Some("/data/ann")),
                "/data/ann/yizhan",
            ),
            // A relative XDG_DATA_HOME is to be ignored (XDG base directory specification).
            (
                account(1000, Some("/home/ann"), Some("rel")),
                "/home/ann/.local/share/yizhan",
            ),
            // Set but empty (as `XDG_DATA_HOME= yizhan ...`): not absolute, ignored too.
            (
                account(1000, Some("/home/ann"), Some("")),
                "/home/ann/.local/share/yizhan",
            ),
            (account(0, None, None), "/var/lib/yizhan"),
            // No usable home (a service account): the system place.
            (account(1000, None, None), "/var/lib/yizhan"),
            (account(1000, Some("ann"), None), "/var/lib/yizhan"),
        ];
        for (account, want) in cases {
            assert_eq!(
                default_data_dir(&account),
                PathBuf::from(want),
                "{account:?}"
            );
        }
        let ann = account(1000, Some("/home/ann"), None);
        assert!(
            data_dir_help(&ann).contains("/home/ann/.local/share/yizhan for you (uid 1000)"),
            "{}",
            data_dir_help(&ann)
        );
        assert_eq!(
            resolve_data_dir(Path::new(""), Some(Path::new("/etc/yizhan")), &ann),
            PathBuf::from("/home/ann/.local/share/yizhan")
        );
        // A relative data_dir is relative to the file, not to the current directory.
        assert_eq!(
            resolve_data_dir(Path::new("data"), Some(Path::new("/etc/yizhan")), &ann),
            PathBuf::from("/etc/yizhan/data")
        );
        assert_eq!(
            resolve_data_dir(Path::new("/srv/mail"), Some(Path::new("/etc/yizhan")), &ann),
            PathBuf::from("/srv/mail")
        );
    }

    #[test]
    fn embedded_default_is_the_default() {
        assert_eq!(parse("d", EMBEDDED_DEFAULT).unwrap(), Settings::default());
        assert_eq!(parse("d", "").unwrap(), Settings::default());
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
hostname = "MX.Example.org"
data_dir = "/srv/mail"
postmaster = "admin@example.org"
shutdown_grace = "1m"

[[listener]]
address = "[::1]:25"
kind = "smtp"
[[listener]]
address = "0.0.0.0:587"
kind = "submission"
max_message_size = 2000
max_recipients = 200
max_connections_per_ip = 5
vrfy = "disabled"
expn = "disabled"
send_soml_saml = true
turn = false
etrn = false
relay_networks = []
auth_max_failures = 2
auth_require_tls = true
[[listener]]
address = "0.0.0.0:465"
kind = "submissions"
[[listener]]
address = "127.0.0.1:2526"   # kind defaults to smtp

[smtp]
max_message_size = 1000
max_recipients = 100
max_line_length = 512
max_errors = 3
max_connections = 10
max_connections_per_ip = 10
command_timeout = 301
data_block_timeout = "3m"
data_termination_timeout = "1h"
vrfy = "enabled"
expn = "cannot-verify"
send_soml_saml = false
help = false
pipelining = false
eight_bit_mime = false
smtputf8 = false
chunking = false
enhanced_status_codes = false
dsn = true
binarymime = false
turn = true
etrn = true
relay_networks = ["10.0.0.0/8"]

[tls]
cert = "/srv/cert.pem"
key = "/srv/key.pem"
reload_interval = "5m"

[auth]
mechanisms = ["LOGIN"]
require_tls = false
failure_delay = "2s"
failure_delay_max = "4s"
max_failures = 5
sender_must_match = false

[queue]
concurrency = 2
retry_initial = "10s"
retry_max_backoff = "2h"
give_up_after = "2d"
maildir_sync = "file"

[[domain]]
name = "example.org"

[[mailbox]]
address = "admin@example.org"
full_name = "Ada Admin"
password = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$LRbzYPWEbEkM0vJcZVB7l2AgjMC8KjYdyTbcOT4hlQ0"
"#;
        let s = parse("t.toml", text).unwrap();
        assert_eq!(
            s.listeners[1].overrides,
            ListenerOverrides {
                max_message_size: Some(2000),
                max_recipients: Some(200),
                max_connections_per_ip: Some(5),
                vrfy: Some(VerifyPolicy::Disabled),
                expn: Some(VerifyPolicy::Disabled),
                send_soml_saml: Some(true),
                turn: Some(false),
                etrn: Some(false),
                relay_networks: Some(Vec::new()),
                auth_max_failures: Some(2),
                auth_require_tls: Some(true),
            }
        );
        let tls = s.tls.as_ref().unwrap();
        assert_eq!(
            (tls.cert.as_path(), tls.key.as_path(), tls.reload_interval),
            (
                Path::new("/srv/cert.pem"),
                Path::new("/srv/key.pem"),
                Duration::from_secs(300)
            )
        );
        let a = &s.auth;
        assert_eq!(a.mechanisms, [Mechanism::Login]);
        assert!(!a.require_tls && !a.sender_must_match);
        assert_eq!(
            (a.failure_delay, a.failure_delay_max, a.max_failures),
            (Duration::from_secs(2), Duration::from_secs(4), 5)
        );
        assert!(s.smtp.turn && s.smtp.etrn && s.smtp.dsn && !s.smtp.binarymime);
        assert_eq!(s.smtp.relay_networks.len(), 1);
        assert_eq!(s.credentials.users().count(), 1);
        assert_eq!(s.hostname, "MX.Example.org");
        assert_eq!(s.data_dir, PathBuf::from("/srv/mail"));
        assert_eq!(s.shutdown_grace, Duration::from_secs(60));
        let kinds: Vec<_> = s
            .listeners
            .iter()
            .map(|l| (l.address.to_string(), l.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("[::1]:25".to_owned(), ListenerKind::Smtp),
                ("0.0.0.0:587".to_owned(), ListenerKind::Submission),
                ("0.0.0.0:465".to_owned(), ListenerKind::Submissions),
                ("127.0.0.1:2526".to_owned(), ListenerKind::Smtp),
            ]
        );
        let m = &s.smtp;
        assert_eq!(
            (
                m.max_message_size,
                m.max_recipients,
                m.max_line_length,
                m.max_errors
            ),
            (1000, 100, 512, 3)
        );
        assert_eq!((m.max_connections, m.max_connections_per_ip), (10, 10));
        assert_eq!(m.timeouts.command, Duration::from_secs(301));
        assert_eq!(m.timeouts.data_block, Duration::from_secs(180));
        assert_eq!(m.timeouts.data_termination, Duration::from_secs(3600));
        assert_eq!(
            (m.vrfy, m.expn),
            (VerifyPolicy::Enabled, VerifyPolicy::CannotVerify)
        );
        assert!(
            !(m.send_soml_saml
                || m.help
                || m.pipelining
                || m.eight_bit_mime
                || m.smtputf8
                || m.chunking
                || m.enhanced_status_codes)
        );
        let q = &s.queue;
        assert_eq!(q.concurrency, 2);
        assert_eq!(q.retry_initial, Duration::from_secs(10));
        assert_eq!(q.retry_max_backoff, Duration::from_secs(7200));
        assert_eq!(q.give_up_after, Duration::from_secs(172_800));
        assert_eq!(q.maildir_sync, MaildirSync::File);
        assert_eq!(s.directory.postmaster(), "admin@example.org");
        assert_eq!(
            s.directory.mailboxes().collect::<Vec<_>>(),
            [("admin@example.org", Some("Ada Admin"))]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let cases = [
            ("bogus = 1\n", "bogus", 1),
            ("[smtp]\nmax_size = 1\n", "max_size", 2),
            (
                "[[domain]]\nname = \"a.example\"\n[[mailbox]]\naddress = \"u@a.example\"\nhash = \"x\"\n",
                "hash",
                5,
            ),
            (
                "[[listener]]\naddress = \"127.0.0.1:25\"\ntls = true\n",
                "tls",
                3,
            ),
        ];
        for (text, key, line) in cases {
            let e = parse_error(text);
            assert!(e.starts_with("t.toml: "), "{e}");
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
            assert!(e.contains(&format!("line {line}")), "{e}");
        }
    }

    #[test]
    fn syntax_and_type_errors_name_line_and_column() {
        let e = parse_error("hostname = \"a\"\n\n[smtp\n");
        assert!(e.contains("line 3, column"), "{e}");
        let e = parse_error("[smtp]\nmax_recipients = \"many\"\n");
        assert!(e.contains("line 2, column"), "{e}");
        let e = parse_error("[[mailbox]]\nfull_name = \"x\"\n");
        assert!(e.contains("missing field `address`"), "{e}");
    }

    #[test]
    fn several_problems_are_reported_at_once() {
        let text = "hostname = \"\"\n[smtp]\nmax_line_length = 100\nvrfy = \"yes\"\n[[domain]]\nname = \"a.example\"\n[[mailbox]]\naddress = \"bad\"\n";
        let found = problems(text);
        let keys: Vec<(&str, Option<(usize, usize)>)> =
            found.iter().map(|p| (p.key.as_str(), p.location)).collect();
        assert_eq!(
            keys,
            [
                ("hostname", Some((1, 12))),
                ("smtp.max_line_length", Some((3, 19))),
                ("smtp.vrfy", Some((4, 8))),
                ("mailbox[0].address", Some((8, 11))),
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "t.toml:3:19: smtp.max_line_length: 100 is below the minimum 512 (RFC 5321 4.5.3.1.4)"
        );
        let e = ConfigError::Invalid(found);
        assert_eq!(e.count(), 4);
        assert_eq!(e.to_string().lines().count(), 4);
    }

    #[test]
    fn each_validation_rule() {
        const DOM: &str =
            "[[domain]]\nname = \"a.example\"\n[[mailbox]]\naddress = \"u@a.example\"\n";
        // (file text, key, part of the reason)
        let cases: Vec<(String, &str, &str)> = vec![
            ("hostname = \"\"".into(), "hostname", "must not be empty"),
            ("hostname = \"mx example\"".into(), "hostname", "not a domain name"),
            ("data_dir = \"\"".into(), "data_dir", "must not be empty"),
            ("listener = []".into(), "listener", "at least one listener"),
            ("[[listener]]\naddress = \"localhost:25\"".into(), "listener[0].address", "invalid listener address"),
            ("[[listener]]\naddress = \"127.0.0.1:99999\"".into(), "listener[0].address", "invalid listener address"),
            ("[[listener]]\naddress = \"127.0.0.1:25\"\nkind = \"lmtp\"".into(), "listener[0].kind", "unknown listener kind \"lmtp\""),
            ("[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:25\"".into(), "listener[1].address", "already used by listener[0]"),
            ("[smtp]\nmax_message_size = 0".into(), "smtp.max_message_size", "below the minimum 1"),
            // RFC 5321 4.5.3.1.8
            ("[smtp]\nmax_recipients = 99".into(), "smtp.max_recipients", "below the minimum 100"),
            // RFC 5321 4.5.3.1.4
            ("[smtp]\nmax_line_length = 511".into(), "smtp.max_line_length", "below the minimum 512"),
            ("[smtp]\nmax_errors = 0".into(), "smtp.max_errors", "below the minimum 1"),
            ("[smtp]\nmax_errors = 5000000000".into(), "smtp.max_errors", "too large"),
            ("[smtp]\nmax_connections = 0".into(), "smtp.max_connections", "below the minimum 1"),
            ("[smtp]\nmax_connections = 10\nmax_connections_per_ip = 11".into(), "smtp.max_connections_per_ip", "more than smtp.max_connections"),
            ("[smtp]\ncommand_timeout = 0".into(), "smtp.command_timeout", "more than 0"),
            ("[smtp]\ndata_block_timeout = -1".into(), "smtp.data_block_timeout", "negative"),
            ("[smtp]\ndata_termination_timeout = \"10\"".into(), "smtp.data_termination_timeout", "no unit"),
            ("[smtp]\ncommand_timeout = \"5w\"".into(), "smtp.command_timeout", "not a duration"),
            ("[smtp]\nexpn = \"on\"".into(), "smtp.expn", "unknown policy \"on\""),
            // RFC 3030 3
            ("[smtp]\nchunking = false\nbinarymime = true".into(), "smtp.binarymime", "needs smtp.chunking"),
            ("[queue]\nconcurrency = 0".into(), "queue.concurrency", "below the minimum 1"),
            ("[queue]\nretry_initial = \"2h\"\nretry_max_backoff = \"1h\"".into(), "queue.retry_max_backoff", "shorter than queue.retry_initial"),
            ("[queue]\ngive_up_after = 0".into(), "queue.give_up_after", "more than 0"),
            ("[queue]\nmaildir_sync = \"fsync\"".into(), "queue.maildir_sync", "unknown mode \"fsync\" (expected \"batch\" or \"file\")"),
            ("shutdown_grace = \"soon\"".into(), "shutdown_grace", "not a duration"),
            ("[[domain]]\nname = \"a_b.example\"".into(), "domain[0].name", "bad domain name"),
            ("[[domain]]\nname = \"a.example\"\n[[domain]]\nname = \"A.EXAMPLE\"".into(), "domain[1].name", "duplicate domain"),
            (format!("{DOM}[[mailbox]]\naddress = \"u@@a.example\""), "mailbox[1].address", "bad address syntax"),
            (format!("{DOM}[[mailbox]]\naddress = \"u@b.example\""), "mailbox[1].address", "not in a local domain"),
            (format!("{DOM}[[mailbox]]\naddress = \"U@A.example\""), "mailbox[1].address", "already defined as mailbox[0].address"),
            (format!("{DOM}[[mailbox]]\naddress = \"v@a.example\"\nfull_name = \"\""), "mailbox[1].full_name", "full name"),
            (format!("{DOM}[[alias]]\naddress = \"l@a.example\"\nmembers = []"), "alias[0].members", "at least one member"),
            (format!("{DOM}[[alias]]\naddress = \"l@a.example\"\nmembers = [\"u@a.example\", \"<x@y.example>\"]"), "alias[0].members[1]", "bad address syntax"),
            (format!("{DOM}[[alias]]\naddress = \"l@a.example\"\nmembers = [\"ghost@a.example\"]"), "alias[0].members[0]", "is not a mailbox, an alias"),
            (format!("{DOM}[[alias]]\naddress = \"u@a.example\"\nmembers = [\"x@y.example\"]"), "alias[0].address", "already defined as mailbox[0].address"),
            (format!("{DOM}[[relocated]]\naddress = \"u@a.example\"\nnew_address = \"u@b.example\""), "relocated[0].address", "already defined as mailbox[0].address"),
            (format!("{DOM}[[relocated]]\naddress = \"r@b.example\"\nnew_address = \"u@c.example\""), "relocated[0].address", "not in a local domain"),
            (format!("{DOM}[[relocated]]\naddress = \"r@a.example\"\nnew_address = \"nowhere\""), "relocated[0].new_address", "bad address syntax"),
            (format!("postmaster = \"boss@a.example\"\n{DOM}"), "postmaster", "is not a mailbox, an alias"),
            (format!("postmaster = \"boss\"\n{DOM}"), "postmaster", "bad address syntax"),
        ];
        for (text, key, reason) in &cases {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].key, *key, "{text}");
            assert!(
                found[0].reason.contains(reason),
                "{text}: {}",
                found[0].reason
            );
            assert!(found[0].location.is_some(), "{text}: no location");
        }
    }

    #[test]
    fn alias_loops_are_accepted() {
        let text = r#"
[[domain]]
name = "a.example"
[[mailbox]]
address = "u@a.example"
[[alias]]
address = "x@a.example"
members = ["y@a.example", "u@a.example"]
[[alias]]
address = "y@a.example"
members = ["x@a.example", "friend@remote.example"]
"#;
        let s = parse("t.toml", text).unwrap();
        assert_eq!(s.directory.aliases().count(), 2);
    }

    #[test]
    fn discovery_order() {
        let flag = Some(PathBuf::from("/f.toml"));
        let env = Some(OsString::from("/e.toml"));
        let yes = |_: &Path| true;
        let no = |_: &Path| false;
        let system = PathBuf::from(SYSTEM_CONFIG);
        assert_eq!(
            Source::discover(flag.clone(), env.clone(), yes),
            Source::Flag("/f.toml".into())
        );
        assert_eq!(
            Source::discover(None, env.clone(), yes),
            Source::Env("/e.toml".into())
        );
        assert_eq!(
            Source::discover(None, Some(OsString::new()), yes),
            Source::System(system.clone())
        );
        assert_eq!(Source::discover(None, None, yes), Source::System(system));
        assert_eq!(Source::discover(None, None, no), Source::Embedded);
    }

    #[test]
    fn overrides_replace_listeners_and_data_dir() {
        let mut s = parse("s", SAMPLE).unwrap();
        Overrides::default().apply(&mut s);
        assert_eq!(s, parse("s", SAMPLE).unwrap());
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let b: SocketAddr = "[::1]:2525".parse().unwrap();
        Overrides {
            listen: vec![a, b],
            data_dir: Some("/tmp/d".into()),
        }
        .apply(&mut s);
        assert_eq!(
            s.listeners,
            [a, b].map(|address| ListenerSettings::new(address, ListenerKind::Smtp))
        );
        assert_eq!(s.data_dir, PathBuf::from("/tmp/d"));
    }

    #[test]
    fn durations() {
        let cases: &[(RawDuration, Result<u64, &str>)] = &[
            (RawDuration::Seconds(0), Ok(0)),
            (RawDuration::Seconds(300), Ok(300)),
            (RawDuration::Seconds(-1), Err("negative")),
            (RawDuration::Text("90s".into()), Ok(90)),
            (RawDuration::Text("5m".into()), Ok(300)),
            (RawDuration::Text(" 2h ".into()), Ok(7200)),
            (RawDuration::Text("5d".into()), Ok(432_000)),
            (RawDuration::Text("3000ms".into()), Ok(3)),
            (RawDuration::Text("5".into()), Err("no unit")),
            (RawDuration::Text("m".into()), Err("not a duration")),
            (RawDuration::Text("1.5h".into()), Err("not a duration")),
            (
                RawDuration::Text("99999999999999999999d".into()),
                Err("not a duration"),
            ),
            (
                RawDuration::Text("999999999999999999d".into()),
                Err("too long"),
            ),
        ];
        for (raw, want) in cases {
            match (raw.to_duration(), want) {
                (Ok(d), Ok(secs)) => assert_eq!(d.as_millis(), u128::from(*secs) * 1000, "{raw:?}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{raw:?}: {e}"),
                (got, _) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn summary_names_the_essentials() {
        let lines = summary(&parse("s", SAMPLE).unwrap());
        let text = lines.join("\n");
        for part in [
            "hostname: mx.test.example",
            "listener: 127.0.0.1:2525 (smtp)",
            "domains: test.example (2 mailboxes)",
            "2 mailboxes, 1 aliases, 1 relocated; postmaster postmaster@test.example",
        ] {
            assert!(text.contains(part), "{part} missing from\n{text}");
        }
    }

    const TLS_AUTH: &str = r#"hostname = "mx.test.example"

[[listener]]
address = "127.0.0.1:2525"
kind = "smtp"

[[listener]]
address = "127.0.0.1:2587"
kind = "submission"
max_recipients = 100
auth_max_failures = 2
vrfy = "disabled"

[[listener]]
address = "127.0.0.1:2465"
kind = "submissions"

[smtp]
relay_networks = ["10.0.0.0/8", "192.0.2.7"]

[tls]
cert = "/etc/yizhan/cert.pem"
key = "/etc/yizhan/key.pem"
reload_interval = "30s"

[auth]
mechanisms = ["PLAIN", "LOGIN"]
require_tls = true
failure_delay = "500ms"
failure_delay_max = "8s"
max_failures = 3

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"
password = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$LRbzYPWEbEkM0vJcZVB7l2AgjMC8KjYdyTbcOT4hlQ0"
"#;

    #[test]
    fn tls_auth_relay_and_listener_overrides() {
        let s = parse("t.toml", TLS_AUTH).unwrap();
        let tls = s.tls.as_ref().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/yizhan/cert.pem"));
        assert_eq!(tls.reload_interval, Duration::from_secs(30));
        assert_eq!(s.auth.failure_delay, Duration::from_millis(500));
        assert_eq!(s.auth.max_failures, 3);
        assert_eq!(
            s.credentials.users().collect::<Vec<_>>(),
            ["user@test.example"]
        );
        assert_eq!(
            s.smtp.relay_networks,
            vec![
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        let sub = &s.listeners[1];
        assert_eq!(sub.kind, ListenerKind::Submission);
        assert_eq!(s.smtp_for(sub).max_recipients, 100);
        assert_eq!(s.smtp_for(sub).vrfy, VerifyPolicy::Disabled);
        assert_eq!(s.auth_for(sub).max_failures, 2);
        assert_eq!(s.smtp_for(&s.listeners[0]).max_recipients, 1000);
        assert_eq!(s.listeners[2].kind, ListenerKind::Submissions);
        let text = summary(&s).join("\n");
        assert!(
            text.contains("auth: PLAIN LOGIN (1 users with a password)"),
            "{text}"
        );
        assert!(!text.contains("argon2"), "the summary never shows hashes");
    }

    #[test]
    fn tls_auth_problems_are_all_reported() {
        let text = r#"
[[listener]]
address = "127.0.0.1:2465"
kind = "submissions"

[[listener]]
address = "127.0.0.1:2587"
relay_networks = ["10.0.0.0/33"]

[smtp]
relay_networks = ["not-a-network"]

[auth]
mechanisms = ["CRAM-MD5"]
failure_delay = "2s"
failure_delay_max = "1s"

[[mailbox]]
address = "user@localhost"
password = "hunter2"
"#;
        let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
        for want in [
            "listener[0].kind",
            "listener[1].relay_networks[0]",
            "smtp.relay_networks[0]",
            "auth.mechanisms[0]",
            "auth.failure_delay_max",
            "mailbox[0].password",
        ] {
            assert!(
                keys.iter().any(|k| k == want),
                "{want} missing from {keys:?}"
            );
        }
    }

    /// The delivery example of docs/configuration.md, unchanged.
    pub(crate) const DELIVERY_SAMPLE: &str = r#"hostname = "mx.test.example"

[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"

[[mailbox]]
address = "relay-client@test.example"
password = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$LRbzYPWEbEkM0vJcZVB7l2AgjMC8KjYdyTbcOT4hlQ0"
turn_domains = ["client.example"]

[delivery]
remote_port = 25
dns_servers = ["192.0.2.53", "127.0.0.1:5353"]
connect_timeout = "30s"
max_mx_hosts = 5
per_destination = 4
delay_warning = "4h"
tls = "opportunistic"
honour_source_routes = true
local_names = ["mx.test.example", "mail.test.example"]

[delivery.domain_tls]
"bank.example" = "verify"
"legacy.example" = "none"

[[smarthost]]
domain = "partner.example"
host = "relay.partner.example"
port = 587
tls = "require"
user = "yizhan"
password = "secret"

[[smarthost]]
host = "192.0.2.25"
"#;

    #[test]
    fn delivery_keys_are_read() {
        let doc = include_str!("../../../docs/configuration.md");
        assert!(doc.contains(DELIVERY_SAMPLE), "docs show DELIVERY_SAMPLE");
        let s = parse("t.toml", DELIVERY_SAMPLE).unwrap();
        let d = &s.delivery;
        assert_eq!(d.remote_port, 25);
        assert_eq!(
            d.dns_servers,
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
        assert_eq!(d.connect_timeout, Duration::from_secs(30));
        assert_eq!(d.delay_warning, Some(Duration::from_secs(4 * 3600)));
        assert!(d.honour_source_routes);
        assert_eq!(d.local_names, ["mx.test.example", "mail.test.example"]);
        assert_eq!(d.domain_tls.get("bank.example"), Some(&TlsPolicy::Verify));
        assert_eq!(d.domain_tls.get("legacy.example"), Some(&TlsPolicy::None));
        let partner = d.smarthosts.get("partner.example").unwrap();
        assert_eq!(
            (partner.host.as_str(), partner.port, partner.tls),
            ("relay.partner.example", 587, TlsPolicy::Require)
        );
        assert_eq!(partner.auth.as_ref().unwrap().username, "yizhan");
        let default = d.default_smarthost.as_ref().unwrap();
        assert_eq!((default.host.as_str(), default.port), ("192.0.2.25", 25));
        assert_eq!(
            s.turn_owner("CLIENT.example"),
            Some("relay-client@test.example")
        );
        assert!(
            summary(&s)
                .iter()
                .any(|l| l.starts_with("delivery: port 25"))
        );
        // 0 turns delay warnings off.
        let s = parse("t.toml", "[delivery]\ndelay_warning = 0\n").unwrap();
        assert_eq!(s.delivery.delay_warning, None);
    }

    #[test]
    fn delivery_problems_are_all_reported() {
        let text = r#"
[[domain]]
name = "test.example"

[[mailbox]]
address = "user@test.example"
turn_domains = ["test.example", "bad domain"]

[delivery]
remote_port = 70000
dns_servers = ["dns.example"]
max_mx_hosts = 0
command_timeout = 0
tls = "maybe"
local_names = ["not a name"]

[delivery.domain_tls]
"x.example" = "sometimes"

[[smarthost]]
domain = "test.example"
host = "relay.example"
user = "u"
password = "p"

[[smarthost]]
host = "a.example"

[[smarthost]]
host = "b.example"
port = 0
"#;
        let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
        for want in [
            "delivery.remote_port",
            "delivery.dns_servers[0]",
            "delivery.max_mx_hosts",
            "delivery.command_timeout",
            "delivery.tls",
            "delivery.local_names[0]",
            "delivery.domain_tls.\"x.example\"",
            "smarthost[0].domain",
            "smarthost[0].user",
            "smarthost[2].host",
            "smarthost[2].port",
            "mailbox[0].turn_domains",
            "mailbox[0].turn_domains[0]",
            "mailbox[0].turn_domains[1]",
        ] {
            assert!(
                keys.iter().any(|k| k == want),
                "{want} missing from {keys:?}"
            );
        }
    }
}
