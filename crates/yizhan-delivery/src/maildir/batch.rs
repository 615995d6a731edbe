//! Batches of deliveries ([`Maildir::deliver_batch`]): every file written into `tmp/`, then
//! their contents synced, then linked into `new/`, then those names synced, with one
//! `syncfs(2)` per file system where that is cheaper.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::dirs::MailboxDirs;
use super::write::write_message;
use super::{COPY_BUFFER, Maildir, MaildirError, READ_CHUNK};

/// One message for [`Maildir::deliver_batch`].
#[derive(Debug)]
pub struct BatchJob<R> {
    /// The mailbox's domain.
    pub domain: String,
    /// The mailbox's local part.
    pub local: String,
    /// The delivery's identity (see [`Maildir::deliver_once`]).
    pub key: String,
    /// The reverse-path mailbox without brackets, `""` for the null path.
    pub return_path: String,
    /// The message.
    pub body: R,
}

/// How [`Maildir::deliver_batch`] makes a batch of files durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaildirSync {
    /// For more than one file: one `syncfs(2)` per file system for the contents, and one for
    /// the names in `new/`. Cheapest by far under load, but it also flushes whatever else is
    /// waiting to be written on that file system, so it suits a file system that holds mail
    /// (or little else that writes a lot).
    #[default]
    Batch,
    /// `fdatasync(2)` on every file and `fsync(2)` on every `new/` directory, as most MTAs do.
    File,
}

impl Maildir {
    /// Delivers many messages, each at most once per key exactly as
    /// [`deliver_once`](Maildir::deliver_once) does, and makes the whole batch durable with few
    /// flushes. Every file is written into `tmp/` first; then their content is synced; then each
    /// is linked into `new/`; then those directory entries are synced. So a name appears in
    /// `new/` only once its content is on stable storage, which is what lets a retry after a
    /// crash trust the name it finds. With [`MaildirSync::Batch`] and more than one file (or
    /// directory), each sync step is one `syncfs(2)` per file system instead of one
    /// `fdatasync(2)` per file and one `fsync(2)` per directory. Returns one result per job, in
    /// order. Blocking: call it from `spawn_blocking`.
    pub fn deliver_batch<R: Read>(
        &self,
        jobs: &mut [BatchJob<R>],
    ) -> Vec<Result<(PathBuf, bool), MaildirError>> {
        let mut results: Vec<Option<Result<(PathBuf, bool), MaildirError>>> =
            jobs.iter().map(|_| None).collect();
        let mut staged: Vec<(usize, Staged)> = Vec::with_capacity(jobs.len());
        let mut buf = Vec::with_capacity(COPY_BUFFER + READ_CHUNK);
        for (i, job) in jobs.iter_mut().enumerate() {
            match self.stage(job, &mut buf) {
                Ok(s) => staged.push((i, s)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }

        // 1. The content of every file, before any of them gets its name in new/.
        let failed: Vec<(u64, io::Error)> = if self.sync == MaildirSync::Batch && staged.len() > 1 {
            sync_filesystems(staged.iter().map(|(_, s)| (s.dirs.dev, &s.file)))
        } else {
            staged
                .iter()
                .filter_map(|(_, s)| s.file.sync_data().err().map(|e| (s.dirs.dev, e)))
                .collect()
        };
        // 2. The names in new/.
        let mut linked: Vec<(usize, Staged)> = Vec::with_capacity(staged.len());
        for (i, s) in staged {
            let outcome = match failed.iter().find(|(dev, _)| *dev == s.dirs.dev) {
                Some((_, e)) => Err(MaildirError::io(&s.dirs.new, copy_error(e))),
                None => match s.link() {
                    Ok(()) => {
                        linked.push((i, s));
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Ok((s.new.clone(), false))
                    }
                    Err(e) => Err(MaildirError::io(&s.new, e)),
                },
            };
            results[i] = Some(outcome);
            s.remove_tmp();
        }
        // 3. The directory entries made in step 2.
        let mut dirs: Vec<&MailboxDirs> = Vec::new();
        for (_, s) in &linked {
            if !dirs.iter().any(|d| std::ptr::eq(*d, &*s.dirs)) {
                dirs.push(&s.dirs);
            }
        }
        let dir_failures: Vec<(PathBuf, io::Error)> =
            if self.sync == MaildirSync::Batch && dirs.len() > 1 {
                let failed = sync_filesystems(linked.iter().map(|(_, s)| (s.dirs.dev, &s.file)));
                dirs.iter()
                    .filter_map(|dir| {
                        let (_, e) = failed.iter().find(|(d, _)| *d == dir.dev)?;
                        Some((dir.new.clone(), copy_error(e)))
                    })
                    .collect()
            } else {
                dirs.iter()
                    .filter_map(|dir| {
                        let synced = rustix::fs::fsync(&dir.new_fd).map_err(io::Error::from);
                        synced.err().map(|e| (dir.new.clone(), e))
                    })
                    .collect()
            };
        for (i, s) in linked {
            results[i] = Some(match dir_failures.iter().find(|(d, _)| *d == s.dirs.new) {
                // Linked, but maybe not durably: the retry finds the name, or writes it again.
                Some((dir, e)) => Err(MaildirError::io(dir, copy_error(e))),
                None => Ok((s.new.clone(), true)),
            });
            s.remove_tmp();
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(MaildirError::io(&self.root, io::Error::other("lost"))))
            })
            .collect()
    }

    /// Writes one job into a fresh file in its mailbox's `tmp/`, not synced yet.
    fn stage<R: Read>(
        &self,
        job: &mut BatchJob<R>,
        buf: &mut Vec<u8>,
    ) -> Result<Staged, MaildirError> {
        if job.key.is_empty()
            || !job
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(MaildirError::InvalidName {
                what: "delivery key",
                value: job.key.clone(),
                reason: "must be ASCII letters, digits, '.', '_' or '-'",
            });
        }
        let anonymous = self.anonymous.load(Ordering::Relaxed);
        let (dirs, tmp_name, file) =
            self.open_tmp(&job.domain, &job.local, &job.return_path, anonymous)?;
        let shown = tmp_name
            .as_ref()
            .map_or(dirs.tmp.clone(), |n| dirs.tmp.join(n));
        let staged = Staged {
            name: format!("{}.{}", job.key, self.hostname),
            new: PathBuf::new(),
            tmp: tmp_name,
            dirs,
            file,
        };
        if let Err(e) = write_message(&staged.file, &shown, &job.return_path, &mut job.body, buf) {
            staged.remove_tmp();
            return Err(e);
        }
        let new = staged.dirs.new.join(&staged.name);
        Ok(Staged { new, ..staged })
    }
}

/// A message written into `tmp/`, not yet synced or linked.
pub(super) struct Staged {
    /// Its name in `tmp/`, or `None` for an anonymous file (`O_TMPFILE`).
    tmp: Option<String>,
    /// Its name in `new/`.
    name: String,
    /// Its path in `new/` (for messages and the result).
    new: PathBuf,
    dirs: Arc<MailboxDirs>,
    file: File,
}

impl Staged {
    /// Gives the file its name in `new/`; fails with `AlreadyExists` if that name is taken.
    fn link(&self) -> io::Result<()> {
        use rustix::fs::{AtFlags, linkat};
        let new_fd = &self.dirs.new_fd;
        match &self.tmp {
            Some(tmp) => linkat(
                &self.dirs.tmp_fd,
                tmp.as_str(),
                new_fd,
                self.name.as_str(),
                AtFlags::empty(),
            ),
            None => {
                // linkat(2) of an O_TMPFILE file, as open(2) describes it.
                let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                linkat(
                    rustix::fs::CWD,
                    path.as_str(),
                    new_fd,
                    self.name.as_str(),
                    AtFlags::SYMLINK_FOLLOW,
                )
            }
        }
        .map_err(io::Error::from)
    }

    /// Removes the staging name in `tmp/`, if there is one: it was only a staging link.
    fn remove_tmp(&self) {
        if let Some(tmp) = &self.tmp {
            let _ = rustix::fs::unlinkat(
                &self.dirs.tmp_fd,
                tmp.as_str(),
                rustix::fs::AtFlags::empty(),
            );
        }
    }
}

/// `syncfs(2)` once per file system among `files`; returns the file systems that failed.
pub(super) fn sync_filesystems<'a>(
    files: impl Iterator<Item = (u64, &'a File)>,
) -> Vec<(u64, io::Error)> {
    let mut done: Vec<u64> = Vec::new();
    let mut failed = Vec::new();
    for (dev, file) in files {
        if done.contains(&dev) {
            continue;
        }
        done.push(dev);
        if let Err(e) = rustix::fs::syncfs(file) {
            failed.push((dev, io::Error::from(e)));
        }
    }
    failed
}

/// The same error again, for each of the files that one failed sync covered.
pub(super) fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
