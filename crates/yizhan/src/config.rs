//! The configuration file: discovery, parsing, validation, and conversion into
//! [`yizhan_server::settings::Settings`].
//!
//! One TOML file, every table `deny_unknown_fields`. Parsing stops at the first TOML syntax or
//! type error (the `toml` crate names line and column); after that, [`validate`](RawConfig)
//! collects every problem at once, each naming the file, the line and column when known, the
//! key (e.g. `mailbox[2].address`, counted from 0) and the reason. Defaults come from
//! [`Settings::default`] only: a key left out keeps the default value.
//!
//! See `docs/configuration.md` for the reference of every key.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use yizhan_server::directory::{Directory, DirectoryError, Entry};
use yizhan_server::settings::{
    ListenerKind, ListenerSettings, MIN_LINE_LENGTH, Settings, VerifyPolicy,
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

/// Reads and validates the configuration from `source`.
pub fn load(source: &Source) -> Result<Settings, ConfigError> {
    match source {
        Source::Embedded => parse(&source.name(), EMBEDDED_DEFAULT),
        Source::Flag(path) | Source::Env(path) | Source::System(path) => {
            let file = source.name();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            parse(&file, &text)
        }
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
                .map(|&address| ListenerSettings {
                    address,
                    kind: ListenerKind::Smtp,
                })
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
    ];
    for l in &settings.listeners {
        lines.push(format!("listener: {} ({})", l.address, l.kind));
    }
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
        "commands: VRFY {}, EXPN {}, SEND/SOML/SAML {}, HELP {}",
        s.vrfy,
        s.expn,
        on(s.send_soml_saml),
        on(s.help)
    ));
    lines.push(format!(
        "extensions: PIPELINING {}, 8BITMIME {}, SMTPUTF8 {}, CHUNKING {}, ENHANCEDSTATUSCODES {}",
        on(s.pipelining),
        on(s.eight_bit_mime),
        on(s.smtputf8),
        on(s.chunking),
        on(s.enhanced_status_codes)
    ));
    let q = &settings.queue;
    lines.push(format!(
        "queue: concurrency {}, retry after {}s doubling up to {}s, give up after {}s; shutdown grace {}s",
        q.concurrency,
        secs(q.retry_initial),
        secs(q.retry_max_backoff),
        secs(q.give_up_after),
        secs(settings.shutdown_grace)
    ));
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
    listener: Option<Spanned<Vec<RawListener>>>,
    #[serde(default)]
    smtp: RawSmtp,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    domain: Vec<RawDomain>,
    #[serde(default)]
    mailbox: Vec<RawMailbox>,
    #[serde(default)]
    alias: Vec<RawAlias>,
    #[serde(default)]
    relocated: Vec<RawRelocated>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: Spanned<String>,
    kind: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    max_message_size: Option<Spanned<i64>>,
    max_recipients: Option<Spanned<i64>>,
    max_line_length: Option<Spanned<i64>>,
    max_errors: Option<Spanned<i64>>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    concurrency: Option<Spanned<i64>>,
    retry_initial: Option<Spanned<RawDuration>>,
    retry_max_backoff: Option<Spanned<RawDuration>>,
    give_up_after: Option<Spanned<RawDuration>>,
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

/// A duration: integer seconds, or a string with a unit (`"90s"`, `"5m"`, `"2h"`, `"5d"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(i64),
    Text(String),
}

impl RawDuration {
    fn to_duration(&self) -> Result<Duration, String> {
        const HINT: &str =
            "expected seconds (e.g. 300) or a number with a unit s, m, h or d (e.g. \"5m\")";
        let seconds = match self {
            Self::Seconds(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative"))?,
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
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    "d" => 86_400,
                    _ => return Err(format!("{text:?} is not a duration; {HINT}")),
                };
                number
                    .checked_mul(factor)
                    .ok_or_else(|| format!("{text:?} is too long"))?
            }
        };
        Ok(Duration::from_secs(seconds))
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
                self.problem(key, Some(value.span().start), "must be more than 0 seconds");
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

        if let Some(listeners) = &self.listener {
            settings.listeners = self.listeners(v, listeners);
        }
        self.smtp(v, &mut settings);
        self.queue(v, &mut settings);
        if let Some(directory) = self.directory(v) {
            settings.directory = directory;
        }
        settings
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
                    if let Some(first) = seen.insert(address, i) {
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
            if let (Some(address), Some(kind)) = (address, kind) {
                out.push(ListenerSettings { address, kind });
            }
        }
        out
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
