//! A mailbox's folders: made and opened relative to the handle of the folder above, never
//! through a symbolic link, and checked to be the service user's.

use std::fs::{self, File};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::MaildirError;

/// A mailbox's directories, as last checked: their paths (for messages) and open handles
/// (for every operation).
#[derive(Debug)]
pub(super) struct MailboxDirs {
    pub(super) tmp: PathBuf,
    pub(super) new: PathBuf,
    pub(super) tmp_fd: OwnedFd,
    pub(super) new_fd: OwnedFd,
    /// The file system `new/` is on (`st_dev`), to group the syncs of a batch.
    pub(super) dev: u64,
    /// The inodes of `tmp/` and `new/` when they were opened.
    pub(super) inodes: (u64, u64),
}

impl MailboxDirs {
    /// Whether the paths still name the directories held open: one `stat` each, so a mailbox
    /// that an administrator renamed, removed or replaced is looked at again rather than
    /// written into where it went.
    pub(super) fn still_there(&self) -> bool {
        let inode = |path: &Path| rustix::fs::lstat(path).ok().map(|m| (m.st_dev, m.st_ino));
        inode(&self.tmp) == Some((self.dev, self.inodes.0))
            && inode(&self.new) == Some((self.dev, self.inodes.1))
    }
}

/// Creates `dir` and any missing parents, fsyncing each parent that gained an entry.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), MaildirError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Someone else (another delivery) made it meanwhile: fine if it is a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(MaildirError::io(dir, e)),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            sync_dir(parent).map_err(|e| MaildirError::io(parent, e))
        }
        _ => sync_dir(Path::new(".")).map_err(|e| MaildirError::io(dir, e)),
    }
}

/// Opens the directory `path` (its last component, in the directory `parent`), creating it
/// if missing, never following a symbolic link; it must be a directory owned by `owner`
/// (uid). A new directory's entry is synced in `parent`.
pub(super) fn open_private_dir(
    parent: BorrowedFd<'_>,
    path: &Path,
    owner: u32,
) -> Result<OwnedFd, MaildirError> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    let unsafe_path = |reason: String| MaildirError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    let name = path.file_name().unwrap_or(path.as_os_str());
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let open = || rustix::fs::openat(parent, name, flags, Mode::empty());
    let dir = match open() {
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
                // Another delivery made it meanwhile: opened and checked below all the same.
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(MaildirError::io(path, e.into())),
            }
            rustix::fs::fsync(parent).map_err(|e| MaildirError::io(path, e.into()))?;
            open()
        }
        other => other,
    };
    let dir = match dir {
        Ok(dir) => dir,
        Err(Errno::LOOP) => return Err(unsafe_path("a symbolic link, not a directory".into())),
        // O_DIRECTORY with O_NOFOLLOW says ENOTDIR for a link too: which one is it?
        Err(Errno::NOTDIR) => {
            let link = rustix::fs::statat(parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink());
            let what = if link {
                "a symbolic link, not a directory"
            } else {
                "not a directory"
            };
            return Err(unsafe_path(what.into()));
        }
        Err(e) => return Err(MaildirError::io(path, e.into())),
    };
    let stat = rustix::fs::fstat(&dir).map_err(|e| MaildirError::io(path, e.into()))?;
    if stat.st_uid != owner {
        return Err(unsafe_path(format!(
            "owned by uid {}, not by the user yizhan runs as (uid {owner})",
            stat.st_uid
        )));
    }
    Ok(dir)
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}
