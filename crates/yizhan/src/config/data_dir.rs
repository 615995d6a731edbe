//! Where the data lives when the configuration does not say, and a relative `data_dir`.

use std::path::{Path, PathBuf};

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
pub(super) fn resolve_data_dir(given: &Path, base: Option<&Path>, account: &Account) -> PathBuf {
    if given.as_os_str().is_empty() {
        return default_data_dir(account);
    }
    match base {
        Some(base) if given.is_relative() => base.join(given),
        _ => given.to_path_buf(),
    }
}
