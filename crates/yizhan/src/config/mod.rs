//! The configuration file: discovery, parsing, validation, and conversion into
//! [`yizhan_server::settings::Settings`].
//!
//! One TOML file, every table `deny_unknown_fields`. Parsing stops at the first TOML syntax or
//! type error (the `toml` crate names line and column); after that, validation
//! collects every problem at once, each naming the file, the line and column when known, the
//! key (e.g. `mailbox[2].address`, counted from 0) and the reason. Defaults come from
//! [`Settings::default`] only: a key left out keeps the default value.
//!
//! The modules follow the settings tree: [`raw`] is the file as written, [`values`] the value
//! types that parse themselves (durations, sizes, networks, ...), [`check`] the validator that
//! turns a wrong value into a [`Problem`], one validator per section ([`validate`] for the
//! top level, `[tls]` and `[auth]`; [`smtp`], [`delivery`], [`directory`]), [`data_dir`] the
//! default data directory, [`summary`] the human summary.
//!
//! See `docs/configuration.md` for the reference of every key.

mod admin;
mod check;
mod checks;
mod data_dir;
mod delivery;
mod directory;
mod dkim;
mod raw;
mod record;
mod smtp;
mod store;
mod validate;
mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use yizhan_server::settings::{ListenerKind, ListenerSettings, Settings};

pub use data_dir::{Account, SYSTEM_DATA_DIR, data_dir_help, default_data_dir};
pub use yizhan_server::summary::summary;

use check::Validator;
use data_dir::resolve_data_dir;
use raw::RawConfig;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "YIZHAN_CONFIG";

/// The configuration file used when neither `--config` nor `YIZHAN_CONFIG` names one.
pub const SYSTEM_CONFIG: &str = "/etc/yizhan/yizhan.toml";

/// The configuration used when no file is found: it gives exactly [`Settings::default`].
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

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

    /// The same source with an absolute path (the working directory may change later).
    pub fn absolute(self) -> Self {
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        match self {
            Self::Flag(p) => Self::Flag(abs(p)),
            Self::Env(p) => Self::Env(abs(p)),
            Self::System(p) => Self::System(abs(p)),
            Self::Embedded => Self::Embedded,
        }
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
    load_as(source, &Account::current())
}

/// [`load`] for a program that only talks to the server (`sendmail`, `mailq`, `queue`): the
/// private keys (`[[dkim]]`) are not read, so a local user who may not read them can still
/// send; their settings hold no key.
pub fn load_without_keys(source: &Source) -> Result<Settings, ConfigError> {
    read(source, &Account::current(), Keys::Skip)
}

/// Whether the private key files the configuration names are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keys {
    /// Read and checked (the server, `check-config`, `dkim check`).
    Read,
    /// Not read (client programs).
    Skip,
}

/// [`load`] with the default data directory of `account` (a reload after the server dropped
/// its privileges still means the directory it started with).
pub fn load_as(source: &Source, account: &Account) -> Result<Settings, ConfigError> {
    read(source, account, Keys::Read)
}

fn read(source: &Source, account: &Account, keys: Keys) -> Result<Settings, ConfigError> {
    let (mut settings, dir) = match source {
        Source::Embedded => (validate(&source.name(), EMBEDDED_DEFAULT, keys)?, None),
        Source::Flag(path) | Source::Env(path) | Source::System(path) => {
            let file = source.name();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                file: file.clone(),
                source,
            })?;
            let dir = std::path::absolute(path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            (validate(&file, &text, keys)?, dir)
        }
    };
    settings.data_dir = resolve_data_dir(&settings.data_dir, dir.as_deref(), account);
    Ok(settings)
}

/// Parses and validates configuration text; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<Settings, ConfigError> {
    validate(file, text, Keys::Read)
}

fn validate(file: &str, text: &str, keys: Keys) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut v = Validator {
        file,
        text,
        keys,
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

#[cfg(test)]
mod tests;
