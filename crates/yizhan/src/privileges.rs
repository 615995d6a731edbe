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
use std::io::{self, Read as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

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
    let chown_error = |path: &Path, source: io::Error| PrivilegeError::Chown {
        path: path.display().to_string(),
        user: account.name.clone(),
        source,
    };
    // Every step below is relative to a directory opened without following a link: the
    // service account owns this tree and may have put links in it, and root must not be led
    // out of it (a link `.owner -> /etc/shadow` must not be written through, a directory
    // swapped for a link to /etc must not have its entries given away).
    // The data directory itself may be the administrator's link (its parent is theirs, the
    // service account cannot change it): resolved once, then never a link again.
    let resolved = fs::canonicalize(data_dir).map_err(|e| chown_error(data_dir, e))?;
    let data_dir = resolved.as_path();
    let root = open_dir(None, data_dir).map_err(|e| chown_error(data_dir, e))?;
    let stamp = format!("{}:{}\n", account.uid, account.gid);
    let known = read_marker(&root).is_some_and(|text| text == stamp)
        && rustix::fs::fstat(&root)
            .is_ok_and(|m| m.st_uid == account.uid && m.st_gid == account.gid);
    let depth = if known { SHALLOW_DEPTH } else { usize::MAX };
    let changed =
        give_to_depth(root, data_dir, account, depth).map_err(|(path, e)| chown_error(&path, e))?;
    if !known {
        // Written last: a walk cut short is done again at the next start.
        if let Err(e) = write_marker(data_dir, &stamp, account) {
            tracing::warn!(path = %data_dir.join(OWNER_MARKER).display(), error = %e, "cannot record the data directory's owner; the next start walks it all again");
        }
    }
    Ok(changed)
}

/// Opens the directory `name` (in `parent`, or the path itself) without following a link.
fn open_dir(parent: Option<&OwnedFd>, name: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let opened = match parent {
        Some(dir) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        None => rustix::fs::open(name, flags, Mode::empty()),
    };
    opened.map_err(io::Error::from)
}

/// The owner marker's text, if it is a regular file (never read through a link).
fn read_marker(root: &OwnedFd) -> Option<String> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(root, OWNER_MARKER, flags, Mode::empty()).ok()?;
    let mut text = String::new();
    io::Read::read_to_string(&mut fs::File::from(fd).take(64), &mut text).ok()?;
    Some(text)
}

/// Replaces the owner marker: whatever is there is unlinked (a link is removed, not
/// followed), then a new file is made (O_EXCL: never through a link).
fn write_marker(data_dir: &Path, stamp: &str, account: &Account) -> io::Result<()> {
    use io::Write as _;
    let root = open_dir(None, data_dir)?;
    match rustix::fs::unlinkat(&root, OWNER_MARKER, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&root, OWNER_MARKER, flags, Mode::from_raw_mode(0o600))?;
    rustix::fs::fchown(&fd, Some(uid(account)), Some(gid(account)))?;
    fs::File::from(fd).write_all(stamp.as_bytes())
}

fn uid(account: &Account) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw_unchecked(account.uid)
}

fn gid(account: &Account) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw_unchecked(account.gid)
}

/// [`give`] down to `depth` levels below the directory `root` (opened at `data_dir`),
/// depth first, one open directory per level. An entry that vanishes during the walk (a
/// maildrop file imported meanwhile) is skipped; an error names the path.
fn give_to_depth(
    root: OwnedFd,
    data_dir: &Path,
    account: &Account,
    depth: usize,
) -> Result<usize, (PathBuf, io::Error)> {
    let mut changed = 0;
    let meta = rustix::fs::fstat(&root).map_err(|e| (data_dir.to_path_buf(), e.into()))?;
    if meta.st_uid != account.uid || meta.st_gid != account.gid {
        rustix::fs::fchown(&root, Some(uid(account)), Some(gid(account)))
            .map_err(|e| (data_dir.to_path_buf(), e.into()))?;
        changed += 1;
    }
    let reader = |fd: &OwnedFd, path: &Path| {
        rustix::fs::Dir::read_from(fd).map_err(|e| (path.to_path_buf(), io::Error::from(e)))
    };
    let mut stack = vec![(reader(&root, data_dir)?, data_dir.to_path_buf(), root, 0)];
    while let Some((dir, path, fd, level)) = stack.last_mut() {
        let Some(entry) = dir.next() else {
            stack.pop();
            continue;
        };
        let entry = entry.map_err(|e| (path.clone(), e.into()))?;
        let name = entry.file_name().to_owned();
        if name.as_bytes() == b"." || name.as_bytes() == b".." {
            continue;
        }
        let child = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let meta = match rustix::fs::statat(&*fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(meta) => meta,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err((child, e.into())),
        };
        let is_dir =
            rustix::fs::FileType::from_raw_mode(meta.st_mode) == rustix::fs::FileType::Directory;
        // A file with a second name may be another file's hard link put here by the account
        // (`data/x` -> /etc/shadow where hard links to others' files are allowed): never
        // given. Nothing the server makes has two names.
        if !is_dir && meta.st_nlink > 1 {
            tracing::warn!(path = %child.display(), links = meta.st_nlink, "not given to the service account: a file with several names (a hard link)");
            continue;
        }
        if meta.st_uid != account.uid || meta.st_gid != account.gid {
            match rustix::fs::chownat(
                &*fd,
                &name,
                Some(uid(account)),
                Some(gid(account)),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(()) => changed += 1,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err((child, e.into())),
            }
        }
        let is_dir =
            rustix::fs::FileType::from_raw_mode(meta.st_mode) == rustix::fs::FileType::Directory;
        let child_level = *level + 1;
        if !is_dir || child_level >= depth {
            continue;
        }
        let gone = [
            rustix::io::Errno::NOENT,
            rustix::io::Errno::LOOP,
            rustix::io::Errno::NOTDIR,
        ]
        .map(|e| Some(e.raw_os_error()));
        match open_dir(
            Some(&*fd),
            Path::new(std::ffi::OsStr::from_bytes(name.as_bytes())),
        ) {
            Ok(sub) => {
                let dir = reader(&sub, &child)?;
                stack.push((dir, child, sub, child_level));
            }
            // Gone, or swapped for a link since it was looked at: nothing to give.
            Err(e) if gone.contains(&e.raw_os_error()) => {}
            Err(e) => return Err((child, e)),
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

    #[test]
    fn links_left_by_the_service_account_lead_nowhere() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("secret"), b"root's\n").unwrap();
        fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), data.join(OWNER_MARKER)).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("spool")).unwrap();
        let nobody = Account {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        give(&data, &nobody).unwrap();
        // Not written through, not given away; the links themselves belong to the account.
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"root's\n");
        assert_eq!(owner(&outside.join("secret")), (0, 0));
        assert_eq!(owner(&outside.join("sub")), (0, 0));
        assert_eq!(owner(&data.join("spool")), (65534, 65534));
        let marker = fs::symlink_metadata(data.join(OWNER_MARKER)).unwrap();
        assert!(marker.is_file(), "the link was replaced by the marker");
        // A data directory that is itself a link (the administrator's) is followed.
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&outside, &linked).unwrap();
        give(&linked, &nobody).unwrap();
        assert_eq!(owner(&outside.join("sub")), (65534, 65534));
    }
}
