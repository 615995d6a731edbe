//! Least privilege (issue #13, like Postfix's `mail_owner` and OpenSMTPD's `_smtpd`): started
//! as root, `yizhan serve` binds its listeners and reads its keys as root, then gives the data
//! directory to the service account and drops every privilege for good, before the first
//! connection is accepted. Started as anyone else, it runs as that user and nothing here
//! applies.
//!
//! `nix` rather than `rustix` (the research note's pick for system calls) for this one job:
//! rustix's `set_thread_*` calls change one thread only, and the server drops privileges with
//! the runtime's threads (and the spool's committer) already running; glibc's `setuid(2)`
//! wrappers, which `nix` calls, change every thread of the process. rustix also has no
//! `getpwnam`.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

/// The account to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's name.
    pub name: String,
    /// Its uid (never 0).
    pub uid: u32,
    /// The group's gid (never 0).
    pub gid: u32,
}

/// Why the server cannot run as the configured account.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The account does not exist.
    #[error(
        "user {0:?} does not exist; create it with `useradd --system --home-dir /nonexistent \
         --shell /usr/sbin/nologin {0}`, or set `user` in the configuration to an existing \
         account"
    )]
    NoUser(String),
    /// The group does not exist.
    #[error("group {0:?} does not exist; create it with `groupadd --system {0}` or set `group`")]
    NoGroup(String),
    /// The account is root in disguise.
    #[error("user {0:?} has uid or gid 0; the server must not keep root's privileges")]
    Root(String),
    /// Looking the account up failed.
    #[error("cannot look up user {0:?}: {1}")]
    Lookup(String, nix::Error),
    /// A system call failed.
    #[error("cannot {0}: {1}")]
    Call(&'static str, nix::Error),
    /// A directory on the way to the data directory is closed to the account.
    #[error(
        "user {user} cannot reach the data directory {data_dir}: {blocked} is mode {mode:04o}, \
         owned by uid {owner}; allow it (`chmod o+x {blocked}`) or choose another data_dir"
    )]
    Unreachable {
        /// The account.
        user: String,
        /// The data directory.
        data_dir: String,
        /// The directory that blocks the way.
        blocked: String,
        /// Its mode.
        mode: u32,
        /// Its owner.
        owner: u32,
    },
    /// After the switch, some id is still 0.
    #[error("privileges were not dropped: real, effective or saved id is still 0")]
    StillRoot,
    /// Handing the data directory to the account failed.
    #[error("cannot give {path} to user {user}: {source}")]
    Chown {
        /// The path.
        path: String,
        /// The account.
        user: String,
        /// Why.
        source: io::Error,
    },
}

/// The account to switch to, when running as root; `None` when running as anyone else.
pub fn account(user: &str, group: Option<&str>) -> Result<Option<Account>, PrivilegeError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let found = User::from_name(user)
        .map_err(|e| PrivilegeError::Lookup(user.to_owned(), e))?
        .ok_or_else(|| PrivilegeError::NoUser(user.to_owned()))?;
    let gid = match group {
        None => found.gid,
        Some(name) => {
            Group::from_name(name)
                .map_err(|e| PrivilegeError::Lookup(name.to_owned(), e))?
                .ok_or_else(|| PrivilegeError::NoGroup(name.to_owned()))?
                .gid
        }
    };
    if found.uid.is_root() || gid.as_raw() == 0 {
        return Err(PrivilegeError::Root(user.to_owned()));
    }
    Ok(Some(Account {
        name: user.to_owned(),
        uid: found.uid.as_raw(),
        gid: gid.as_raw(),
    }))
}

/// Checks that `account` can pass through every existing directory above `data_dir` (search
/// permission), so that the server does not start, drop its privileges and then find its
/// own spool out of reach.
pub fn check_reachable(data_dir: &Path, account: &Account) -> Result<(), PrivilegeError> {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    for dir in absolute.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode();
        let may_search = if meta.uid() == account.uid {
            mode & 0o100 != 0
        } else if meta.gid() == account.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !may_search {
            return Err(PrivilegeError::Unreachable {
                user: account.name.clone(),
                data_dir: data_dir.display().to_string(),
                blocked: dir.display().to_string(),
                mode: mode & 0o7777,
                owner: meta.uid(),
            });
        }
    }
    Ok(())
}

/// The file in the data directory that records the account it was last given to (`uid:gid`).
pub const OWNER_MARKER: &str = ".owner";

/// How deep [`give`] looks once the data directory is known to be the account's: what a
/// root process may have made since (the data directory's own entries, the maildrop's and the
/// spool's), not every mailbox and message.
const SHALLOW_DEPTH: usize = 3;

/// Makes `data_dir` and everything under it owned by `account` (never following a link);
/// returns how many entries changed owner. The whole tree is walked the first time and
/// whenever the account changes ([`OWNER_MARKER`] says which it was given to last); after
/// that only its top levels, so a start does not cost a walk of every stored message.
pub fn give(data_dir: &Path, account: &Account) -> Result<usize, PrivilegeError> {
    let marker = data_dir.join(OWNER_MARKER);
    let stamp = format!("{}:{}\n", account.uid, account.gid);
    let known = fs::read_to_string(&marker).is_ok_and(|text| text == stamp)
        && fs::symlink_metadata(data_dir)
            .is_ok_and(|m| m.uid() == account.uid && m.gid() == account.gid);
    let depth = if known { SHALLOW_DEPTH } else { usize::MAX };
    let changed = give_to_depth(data_dir, account, depth)?;
    if !known {
        // Written last: a walk cut short is done again at the next start.
        let written = fs::write(&marker, &stamp).and_then(|()| {
            std::os::unix::fs::lchown(&marker, Some(account.uid), Some(account.gid))
        });
        if let Err(e) = written {
            tracing::warn!(path = %marker.display(), error = %e, "cannot record the data directory's owner; the next start walks it all again");
        }
    }
    Ok(changed)
}

/// [`give`] down to `depth` levels below `data_dir`.
fn give_to_depth(
    data_dir: &Path,
    account: &Account,
    depth: usize,
) -> Result<usize, PrivilegeError> {
    let chown_error = |path: &Path, source| PrivilegeError::Chown {
        path: path.display().to_string(),
        user: account.name.clone(),
        source,
    };
    let mut changed = 0;
    let mut pending = vec![(data_dir.to_path_buf(), 0)];
    while let Some((path, level)) = pending.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| chown_error(&path, e))?;
        if meta.uid() != account.uid || meta.gid() != account.gid {
            std::os::unix::fs::lchown(&path, Some(account.uid), Some(account.gid))
                .map_err(|e| chown_error(&path, e))?;
            changed += 1;
        }
        if meta.is_dir() && level < depth {
            for entry in fs::read_dir(&path).map_err(|e| chown_error(&path, e))? {
                pending.push((entry.map_err(|e| chown_error(&path, e))?.path(), level + 1));
            }
        }
    }
    Ok(changed)
}

/// Drops to `account` for good: supplementary groups, then the group, then the user (real,
/// effective and saved ids), and checks that no id is 0 afterwards.
pub fn drop_to(account: &Account) -> Result<(), PrivilegeError> {
    let gid = Gid::from_raw(account.gid);
    let uid = Uid::from_raw(account.uid);
    nix::unistd::setgroups(&[gid]).map_err(|e| PrivilegeError::Call("setgroups", e))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| PrivilegeError::Call("setresgid", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| PrivilegeError::Call("setresuid", e))?;
    let u = nix::unistd::getresuid().map_err(|e| PrivilegeError::Call("getresuid", e))?;
    let g = nix::unistd::getresgid().map_err(|e| PrivilegeError::Call("getresgid", e))?;
    let ids = [u.real, u.effective, u.saved].map(Uid::as_raw);
    let gids = [g.real, g.effective, g.saved].map(Gid::as_raw);
    if ids.contains(&0) || gids.contains(&0) {
        return Err(PrivilegeError::StillRoot);
    }
    // And root cannot be had back.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::StillRoot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(path: &Path) -> (u32, u32) {
        let meta = fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid())
    }

    #[test]
    fn the_whole_tree_is_given_once_then_only_its_top() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let deep = data.join("mail/example.test/alice/new");
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("1"), b"").unwrap();
        fs::create_dir_all(data.join("maildrop/new")).unwrap();
        let nobody = Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        let first = give(&data, &nobody).unwrap();
        assert_eq!(first, 8, "every entry (the marker is written after)");
        assert_eq!(owner(&deep.join("1")), (65534, 65534));
        assert_eq!(owner(&data.join(OWNER_MARKER)), (65534, 65534));

        // Known now: root's new maildrop file is given, a deep file is not looked at.
        std::os::unix::fs::lchown(deep.join("1"), Some(0), Some(0)).unwrap();
        fs::write(data.join("maildrop/new/2"), b"").unwrap();
        assert_eq!(give(&data, &nobody).unwrap(), 1);
        assert_eq!(owner(&data.join("maildrop/new/2")), (65534, 65534));
        assert_eq!(owner(&deep.join("1")), (0, 0));

        // Another account (or no record): everything again.
        let other = Account {
            name: "other".into(),
            uid: 65533,
            gid: 65533,
        };
        assert_eq!(give(&data, &other).unwrap(), 10);
        assert_eq!(owner(&deep.join("1")), (65533, 65533));
    }
}
