//! Local delivery into Maildir folders.
//!
//! Implements the delivery half of the Maildir format (<https://cr.yp.to/proto/maildir.html>):
//! write into `tmp/<unique>`, sync, link (or rename) into `new/`, and sync `new/` so that the
//! name itself is durable (the `maildir` crate skips that last step; see
//! shared/research/ecosystem.md). A message is therefore in `new/` completely or not at all.
//! Where the system allows, the file in `tmp/` has no name at all (`O_TMPFILE`, then
//! `linkat(2)` through `/proc/self/fd`): the same guarantee with two directory operations
//! fewer per delivery.
//! [`Maildir::deliver_batch`] does the same for many messages at once with one sync per step
//! and file system (`syncfs(2)`) instead of two per message: the queue runner's group commit
//! for mailboxes.
//!
//! RFC 5321 4.4: the final delivery adds `Return-Path: <reverse-path>` as the first line
//! (`<>` for the null reverse-path). The message is written in the local convention every
//! Maildir reader expects (Dovecot, Courier, mutt, notmuch; Postfix's `local` and `virtual`
//! write it so): CRLF on the wire, LF on disk. A CR that is not part of a CRLF is kept as it
//! is (the server refuses bare CR and LF at DATA, so none should come). No file name records a
//! size (no `,S=<size>` as some writers add), so the only size there is is the file's own.
//!
//! Layout: `<root>/<domain>/<local>/{tmp,new,cur}`. Domain and local part are made safe as
//! file names ([`safe_name`]): they can never name `.`, `..`, or a path with `/` in it.

mod batch;
mod dirs;
mod write;

pub use batch::{BatchJob, MaildirSync};

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use dirs::{MailboxDirs, ensure_dir, open_private_dir};
use write::write_message;

/// Counter for unique names, shared by every [`Maildir`] in the process (the `Q<n>` part).
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// The longest file name most file systems take.
const MAX_NAME: usize = 255;

/// Bytes copied per `write(2)`: a message up to this size is written in one.
const COPY_BUFFER: usize = 64 * 1024;

/// Bytes read from the body at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Mailboxes remembered as existing, each with its `tmp/` and `new/` open (two descriptors);
/// past this the memory starts again from empty.
pub const KNOWN_MAILBOXES: usize = 256;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    /// The domain, local part or return path cannot be used (empty, too long as a file name, or
    /// a return path with a line break in it). Permanent: trying again cannot help.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// Which argument: `domain`, `local part` or `return path`.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file system operation failed (disk full, quota, permissions, a file where a directory
    /// should be). Transient: the queue retries.
    #[error("maildir I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Reading the message body (from the spool) failed. Transient.
    #[error("cannot read the message body: {0}")]
    Body(#[source] io::Error),
    /// A folder of the mailbox is a symbolic link, not a directory, or not owned by the user
    /// yizhan runs as: nothing is written through it. Transient (the queue retries, and the
    /// log says which path), so that the operator can repair it without losing the mail.
    #[error("unsafe mailbox path {}: {reason}", path.display())]
    Unsafe {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl MaildirError {
    /// Whether trying again later may succeed. Everything but an invalid name is transient
    /// (ENOSPC, EDQUOT, EACCES and friends can all be fixed by the operator).
    pub fn is_transient(&self) -> bool {
        !matches!(self, MaildirError::InvalidName { .. })
    }

    fn io(path: &Path, source: io::Error) -> Self {
        MaildirError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A tree of Maildir folders, one per local mailbox.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
    hostname: String,
    sync: MaildirSync,
    /// Mailboxes whose directories exist, shared by the clones.
    known: Arc<Mutex<HashMap<PathBuf, Arc<MailboxDirs>>>>,
    /// Whether files are staged without a name (`O_TMPFILE`, linked into `new/` through
    /// `/proc/self/fd`): no `tmp/` entry to create and remove per delivery. Turned off for
    /// good once the file system or kernel says it cannot.
    anonymous: Arc<AtomicBool>,
}

impl Maildir {
    /// Maildirs under `root` (usually `<data_dir>/mail`), unique names using this machine's
    /// host name (from `uname(2)`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let uname = rustix::system::uname();
        let host = uname.nodename().to_string_lossy().into_owned();
        Maildir::with_hostname(root, &host)
    }

    /// Maildirs under `root`, unique names using `hostname`. As the Maildir spec asks, `/` and
    /// `:` in it are written as `\057` and `\072`.
    pub fn with_hostname(root: impl Into<PathBuf>, hostname: &str) -> Self {
        let mut host = String::with_capacity(hostname.len());
        for c in hostname.chars() {
            match c {
                '/' => host.push_str("\\057"),
                ':' => host.push_str("\\072"),
                c if c.is_control() => {}
                c => host.push(c),
            }
        }
        if host.is_empty() {
            host.push_str("localhost");
        }
        Maildir {
            root: root.into(),
            hostname: host,
            sync: MaildirSync::default(),
            known: Arc::default(),
            anonymous: Arc::new(AtomicBool::new(Path::new("/proc/self/fd").is_dir())),
        }
    }

    /// Sets how batches are made durable (default [`MaildirSync::Batch`]).
    pub fn with_sync(mut self, sync: MaildirSync) -> Self {
        self.sync = sync;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Maildir folder of a mailbox: `<root>/<safe domain>/<safe local>`.
    pub fn mailbox_path(&self, domain: &str, local: &str) -> Result<PathBuf, MaildirError> {
        let domain = safe_name(domain).map_err(|reason| MaildirError::InvalidName {
            what: "domain",
            value: domain.to_owned(),
            reason,
        })?;
        let local = safe_name(local).map_err(|reason| MaildirError::InvalidName {
            what: "local part",
            value: local.to_owned(),
            reason,
        })?;
        Ok(self.root.join(domain).join(local))
    }

    /// Delivers a message whose identity is `key` (for the queue runner: the queue id and the
    /// recipient's index) at most once into this mailbox: the file is named
    /// `<key>.<hostname>` and moved into `new/` with `link(2)`, which fails if that name is
    /// already there. A crash between the delivery and the spool recording it therefore does
    /// not deliver the message a second time after restart: the retry finds its own file and
    /// reports it as already delivered (`Ok((path, false))`). `key` must be made of ASCII
    /// letters, digits, '.', '_' and '-'.
    ///
    /// The one case this cannot see is a mail client that moved the first copy into `cur/`
    /// during the few milliseconds between a crash and the restart's retry.
    pub fn deliver_once(
        &self,
        domain: &str,
        local: &str,
        key: &str,
        return_path: &str,
        body: &mut impl Read,
    ) -> Result<(PathBuf, bool), MaildirError> {
        let mut jobs = [BatchJob {
            domain: domain.to_owned(),
            local: local.to_owned(),
            key: key.to_owned(),
            return_path: return_path.to_owned(),
            body,
        }];
        self.deliver_batch(&mut jobs)
            .pop()
            .unwrap_or_else(|| Err(MaildirError::io(&self.root, io::Error::other("no result"))))
    }

    /// Delivers one message: `Return-Path: <return_path>` and then `body` byte for byte, into
    /// `new/` of the mailbox's Maildir (created if missing). Returns the path in `new/`.
    ///
    /// Blocking; call it from `spawn_blocking`. `return_path` is the reverse-path mailbox
    /// without brackets, `""` for the null path.
    pub fn deliver(
        &self,
        domain: &str,
        local: &str,
        return_path: &str,
        body: &mut impl Read,
    ) -> Result<PathBuf, MaildirError> {
        let (dirs, name, file) = self.open_tmp(domain, local, return_path, false)?;
        let name = name.unwrap_or_default();
        let tmp = dirs.tmp.join(&name);
        let mut buf = Vec::with_capacity(COPY_BUFFER + READ_CHUNK);
        let result = write_message(&file, &tmp, return_path, body, &mut buf)
            .and_then(|()| file.sync_data().map_err(|e| MaildirError::io(&tmp, e)))
            .and_then(|()| {
                let new = dirs.new.join(&name);
                rustix::fs::renameat(&dirs.tmp_fd, name.as_str(), &dirs.new_fd, name.as_str())
                    .map_err(|e| MaildirError::io(&new, e.into()))?;
                rustix::fs::fsync(&dirs.new_fd)
                    .map_err(|e| MaildirError::io(&dirs.new, e.into()))?;
                Ok(new)
            });
        if result.is_err() {
            // Best effort: a leftover tmp file is harmless (readers ignore tmp/).
            let _ = rustix::fs::unlinkat(&dirs.tmp_fd, name.as_str(), rustix::fs::AtFlags::empty());
        }
        result
    }

    /// Checks the return path, makes sure the mailbox's `tmp/`, `new/` and `cur/` exist, and
    /// creates a uniquely named file in `tmp/`.
    ///
    /// Mailboxes already seen are remembered with their directories open, so a delivery costs
    /// a `stat` of `tmp/` and `new/` instead of opening the whole path; one renamed, removed or
    /// replaced behind our back is looked at (and made) again from the root.
    fn open_tmp(
        &self,
        domain: &str,
        local: &str,
        return_path: &str,
        anonymous: bool,
    ) -> Result<(Arc<MailboxDirs>, Option<String>, File), MaildirError> {
        if return_path.contains(['\r', '\n']) {
            return Err(MaildirError::InvalidName {
                what: "return path",
                value: return_path.to_owned(),
                reason: "contains a line break",
            });
        }
        let mailbox = self.mailbox_path(domain, local)?;
        let known = self.known_mailbox(&mailbox);
        if let Some(dirs) = known.filter(|dirs| dirs.still_there()) {
            match self.create_tmp(&dirs, anonymous) {
                Ok((name, file)) => return Ok((dirs, name, file)),
                // Removed behind our back (creating in a deleted directory fails, ENOENT or
                // EPERM for O_TMPFILE) or otherwise changed: looked at again from the root.
                Err(_) => {
                    self.lock_known().remove(&mailbox);
                }
            }
        }
        let dirs = self.prepare(&mailbox)?;
        let (name, file) = self.create_tmp(&dirs, anonymous)?;
        Ok((dirs, name, file))
    }

    /// A new file in `tmp/`: without a name if `anonymous` (and the system can), else
    /// [`create_unique`](Self::create_unique).
    fn create_tmp(
        &self,
        dirs: &MailboxDirs,
        anonymous: bool,
    ) -> Result<(Option<String>, File), MaildirError> {
        use rustix::fs::{Mode, OFlags};
        let tmp_dir = &dirs.tmp;
        if anonymous {
            let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
            match rustix::fs::openat(&dirs.tmp_fd, ".", flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((None, File::from(fd))),
                // No O_TMPFILE here (old kernel, or a file system without it): named files
                // from now on.
                Err(
                    rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::ISDIR
                    | rustix::io::Errno::INVAL,
                ) => self.anonymous.store(false, Ordering::Relaxed),
                Err(e) => return Err(MaildirError::io(tmp_dir, e.into())),
            }
        }
        let (name, file) = self.create_unique(dirs)?;
        Ok((Some(name), file))
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<MailboxDirs>>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn known_mailbox(&self, mailbox: &Path) -> Option<Arc<MailboxDirs>> {
        self.lock_known().get(mailbox).cloned()
    }

    /// Makes sure `tmp/`, `new/` and `cur/` exist, opens `tmp/` and `new/`, and remembers the
    /// mailbox.
    ///
    /// Below the root, every folder is opened (and made) relative to the handle of the one
    /// above it, never following a symbolic link, and must belong to the user the server runs
    /// as: a symlinked domain, mailbox or `new/` would let a delivery write anywhere. Files are
    /// then created, linked and renamed relative to the handles of `tmp/` and `new/`.
    fn prepare(&self, mailbox: &Path) -> Result<Arc<MailboxDirs>, MaildirError> {
        use rustix::fs::{Mode, OFlags};
        ensure_dir(&self.root)?;
        let root = rustix::fs::open(
            &self.root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| MaildirError::io(&self.root, e.into()))?;
        let owner = rustix::process::geteuid().as_raw();
        let mut parent = root;
        let mut path = self.root.clone();
        for name in mailbox.strip_prefix(&self.root).unwrap_or(mailbox).iter() {
            path.push(name);
            parent = open_private_dir(parent.as_fd(), &path, owner)?;
        }
        let open = |name: &str| open_private_dir(parent.as_fd(), &mailbox.join(name), owner);
        let (tmp_fd, new_fd) = (open("tmp")?, open("new")?);
        open("cur")?;
        let stat = |fd: &std::os::fd::OwnedFd, name: &str| {
            rustix::fs::fstat(fd).map_err(|e| MaildirError::io(&mailbox.join(name), e.into()))
        };
        let (tmp_stat, new_stat) = (stat(&tmp_fd, "tmp")?, stat(&new_fd, "new")?);
        let dev = new_stat.st_dev;
        let dirs = Arc::new(MailboxDirs {
            tmp: mailbox.join("tmp"),
            new: mailbox.join("new"),
            tmp_fd,
            new_fd,
            dev,
            inodes: (tmp_stat.st_ino, new_stat.st_ino),
        });
        let mut known = self.lock_known();
        if known.len() >= KNOWN_MAILBOXES {
            known.clear();
        }
        known.insert(mailbox.to_path_buf(), dirs.clone());
        Ok(dirs)
    }

    /// Creates `tmp/<unique>`: `<secs>.M<micros>P<pid>Q<counter>.<host>`.
    fn create_unique(&self, dirs: &MailboxDirs) -> Result<(String, File), MaildirError> {
        use rustix::fs::{Mode, OFlags};
        let mut tries = 0;
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let name = format!(
                "{}.M{}P{}Q{}.{}",
                now.as_secs(),
                now.subsec_micros(),
                std::process::id(),
                DELIVERIES.fetch_add(1, Ordering::Relaxed),
                self.hostname
            );
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(
                &dirs.tmp_fd,
                name.as_str(),
                flags,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((name, File::from(fd))),
                Err(rustix::io::Errno::EXIST) if tries < 10 => tries += 1,
                Err(e) => return Err(MaildirError::io(&dirs.tmp.join(&name), e.into())),
            }
        }
    }
}

/// Makes a domain or local part safe as one file name component.
///
/// Keeps ASCII letters, digits, `. _ + = -` and every non-ASCII character (UTF-8 mailboxes,
/// RFC 6531); writes every other byte as `%XX` (upper-case hex), including `/`, `%`, `\` and
/// control characters, and also a leading `.` so that `.` and `..` (or hidden names) cannot
/// result. The mapping is injective, so two mailboxes never share a folder. Fails on an empty
/// name or a result longer than 255 bytes.
pub fn safe_name(name: &str) -> Result<String, &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.char_indices() {
        let keep = match c {
            '.' => i > 0,
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '+' | '=' | '-' => true,
            c => !c.is_ascii(),
        };
        if keep {
            out.push(c);
        } else {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out.len() > MAX_NAME {
        return Err("is too long for a file name");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::write::CrlfToLf;
    use std::fs;

    use std::collections::HashSet;

    use super::*;

    fn lf(chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut c = CrlfToLf::default();
        for chunk in chunks {
            c.convert(chunk, &mut out);
        }
        c.finish(&mut out);
        out
    }

    /// CRLF on the wire, LF on disk, whatever the chunks (every split point of every input);
    /// a CR that is not part of a CRLF stays.
    #[test]
    fn crlf_becomes_lf_at_every_split_point() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\r\nb\r\n", b"a\nb\n"),
            (b"\r\n\r\n.\r\n", b"\n\n.\n"),
            (b"lone\rcr\r\n", b"lone\rcr\n"),
            (b"\r\r\n", b"\r\n"),
            (b"ends with cr\r", b"ends with cr\r"),
            (b"\n\nbare lf\n", b"\n\nbare lf\n"),
            (b"", b""),
        ];
        for (input, want) in cases {
            assert_eq!(lf(&[input]), *want, "{input:?} whole");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(lf(&[a, b]), *want, "{input:?} split at {cut}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(lf(&bytes), *want, "{input:?} byte by byte");
        }
    }

    /// A body handed out in the pieces given, one piece per `read` (a piece larger than the
    /// buffer over several).
    struct Pieces<'a>(std::collections::VecDeque<&'a [u8]>);

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(piece) = self.0.front_mut() else {
                return Ok(0);
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            *piece = &piece[n..];
            if piece.is_empty() {
                self.0.pop_front();
            }
            Ok(n)
        }
    }

    /// The pieces without the empty ones (an empty read is the end of the body).
    fn pieces<'a>(parts: &[&'a [u8]]) -> Pieces<'a> {
        Pieces(parts.iter().copied().filter(|p| !p.is_empty()).collect())
    }

    /// The same through real deliveries: a body read one byte at a time, and one split in two
    /// at every position, give the same file (the Return-Path line with LF too).
    #[test]
    fn a_delivered_file_is_the_same_however_the_body_is_read() {
        let body: &[u8] = b"Received: from x\r\nSubject: t\r\n\r\nlone\rcr\r\n\r\r\nends with cr\r";
        let want: &[u8] =
            b"Return-Path: <a@b>\nReceived: from x\nSubject: t\n\nlone\rcr\n\r\nends with cr\r";
        let (_dir, md) = maildir();
        let deliver = |key: &str, reader: &mut Pieces<'_>| {
            let (path, fresh) = md
                .deliver_once("test.example", "user", key, "a@b", reader)
                .unwrap();
            assert!(fresh, "{key}");
            assert_eq!(fs::metadata(&path).unwrap().len(), want.len() as u64);
            fs::read(path).unwrap()
        };
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(deliver("bytes", &mut pieces(&bytes)), want, "byte by byte");
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            let got = deliver(&format!("cut{cut}"), &mut pieces(&[a, b]));
            assert_eq!(got, want, "split at {cut}");
        }
    }

    /// A large body in which every CR is the last byte of a read and its LF the first of the
    /// next, written in several writes: LF on disk throughout.
    #[test]
    fn a_large_body_with_every_crlf_across_two_reads_has_lf_line_ends() {
        let mut body = vec![b'x'; READ_CHUNK - 1];
        body.push(b'\r');
        for _ in 0..7 {
            body.push(b'\n');
            body.extend(std::iter::repeat_n(b'y', READ_CHUNK - 2));
            body.push(b'\r');
        }
        body.push(b'\n');
        assert!(body.len() > 2 * COPY_BUFFER);
        let (_dir, md) = maildir();
        // A slice reader fills each READ_CHUNK read: every CR ends one.
        let (path, _) = md
            .deliver_once("test.example", "user", "big", "a@b", &mut &body[..])
            .unwrap();
        let mut want = b"Return-Path: <a@b>\n".to_vec();
        want.extend(std::iter::repeat_n(b'x', READ_CHUNK - 1));
        for _ in 0..7 {
            want.push(b'\n');
            want.extend(std::iter::repeat_n(b'y', READ_CHUNK - 2));
        }
        want.push(b'\n');
        let got = fs::read(&path).unwrap();
        assert!(got == want, "{} bytes, want {}", got.len(), want.len());
    }

    fn maildir() -> (tempfile::TempDir, Maildir) {
        let dir = tempfile::tempdir().unwrap();
        let md = Maildir::with_hostname(dir.path().join("mail"), "mx.test.example");
        (dir, md)
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn delivers_with_return_path_and_lf_line_ends() {
        // RFC 5321 4.4: Return-Path added at final delivery; `<>` for the null reverse-path.
        let body = b"Received: from x\r\nSubject: t\r\n\r\nbare\nLF and \xff bytes kept\r\n.\r\n";
        let cases = [
            (
                "sender@client.example",
                "Return-Path: <sender@client.example>\n",
            ),
            ("", "Return-Path: <>\n"),
        ];
        for (return_path, header) in cases {
            let (_dir, md) = maildir();
            let path = md
                .deliver("test.example", "user", return_path, &mut &body[..])
                .unwrap();
            // LF on disk; the bare LF and the other bytes as they came.
            let mut want = header.as_bytes().to_vec();
            want.extend_from_slice(
                b"Received: from x\nSubject: t\n\nbare\nLF and \xff bytes kept\n.\n",
            );
            assert_eq!(fs::read(&path).unwrap(), want);
            let mailbox = md.root().join("test.example").join("user");
            assert_eq!(path.parent().unwrap(), mailbox.join("new"));
            assert_eq!(entries(&mailbox.join("new")), vec![path]);
            assert!(entries(&mailbox.join("tmp")).is_empty());
            assert!(mailbox.join("cur").is_dir());
        }
    }

    /// A body larger than the copy buffer, read in odd chunks: LF line ends throughout.
    #[test]
    fn a_large_body_read_in_odd_chunks_has_lf_line_ends() {
        struct Odd<'a>(&'a [u8]);
        impl Read for Odd<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(4093);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz\r\n";
        let body: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 6000)
            .collect();
        let (_dir, md) = maildir();
        let path = md
            .deliver("test.example", "user", "a@b", &mut Odd(&body))
            .unwrap();
        let mut want = b"Return-Path: <a@b>\n".to_vec();
        for _ in 0..6000 {
            want.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz\n");
        }
        assert_eq!(fs::read(&path).unwrap(), want);
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let (_dir, md) = maildir();
        let mut names = HashSet::new();
        for _ in 0..1000 {
            let path = md
                .deliver("test.example", "user", "a@b", &mut &b"x\r\n"[..])
                .unwrap();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            // <secs>.M<micros>P<pid>Q<counter>.<host>
            let parts: Vec<&str> = name.splitn(3, '.').collect();
            assert!(parts[0].bytes().all(|b| b.is_ascii_digit()), "{name}");
            assert!(
                parts[1].starts_with('M') && parts[1].contains('P'),
                "{name}"
            );
            assert_eq!(parts[2], "mx.test.example", "{name}");
            assert!(!name.contains(['/', ':']));
            assert!(names.insert(name));
        }
        let new = md.root().join("test.example/user/new");
        assert_eq!(entries(&new).len(), 1000);
    }

    #[test]
    fn hostname_is_escaped() {
        let md = Maildir::with_hostname("/r", "a/b:c");
        assert_eq!(md.hostname, "a\\057b\\072c");
        assert_eq!(Maildir::with_hostname("/r", "").hostname, "localhost");
    }

    #[test]
    fn safe_names() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("user", Ok("user")),
            ("First.Last+tag=x_y-z", Ok("First.Last+tag=x_y-z")),
            ("..", Ok("%2E.")),
            (".", Ok("%2E")),
            (".hidden", Ok("%2Ehidden")),
            ("../x", Ok("%2E.%2Fx")),
            ("a/b", Ok("a%2Fb")),
            ("a%2Fb", Ok("a%252Fb")), // '%' itself is escaped: the mapping stays injective
            ("a b\0c\\d", Ok("a%20b%00c%5Cd")),
            ("\"quoted@local\"", Ok("%22quoted%40local%22")),
            ("用户", Ok("用户")),
            ("", Err(())),
        ];
        for (name, want) in cases {
            assert_eq!(
                safe_name(name).map_err(|_| ()),
                want.map(str::to_owned),
                "{name:?}"
            );
        }
        assert!(safe_name(&"a".repeat(255)).is_ok());
        assert!(safe_name(&"a".repeat(256)).is_err());
        assert!(safe_name(&"/".repeat(86)).is_err()); // 258 bytes once escaped
    }

    #[test]
    fn symbolic_links_in_a_mailbox_are_never_followed() {
        // A link at each level of the mailbox: delivery is deferred (transient), the error
        // names the link, and nothing is written where it points.
        let outside = tempfile::tempdir().unwrap();
        for level in ["d", "d/u", "d/u/new", "d/u/tmp"] {
            let (_dir, md) = maildir();
            let link = md.root().join(level);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(outside.path(), &link).unwrap();
            let err = md.deliver("d", "u", "", &mut &b"x\r\n"[..]).unwrap_err();
            assert!(err.is_transient(), "{level}: {err}");
            assert!(
                matches!(&err, MaildirError::Unsafe { path, .. } if *path == link),
                "{level}: {err}"
            );
            assert!(err.to_string().contains("symbolic link"), "{err}");
            assert_eq!(entries(outside.path()), Vec::<PathBuf>::new(), "{level}");
        }
        // A file where a folder should be.
        let (_dir, md) = maildir();
        fs::create_dir_all(md.root().join("d")).unwrap();
        fs::write(md.root().join("d/u"), b"").unwrap();
        let err = md.deliver("d", "u", "", &mut &b"x\r\n"[..]).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn path_traversal_stays_inside_the_root() {
        let (dir, md) = maildir();
        let cases = [
            ("../x", "user"),
            ("a/b", "user"),
            (".", ".."),
            ("..", "../../etc"),
            ("d", "/"),
        ];
        for (domain, local) in cases {
            let path = md.deliver(domain, local, "", &mut &b"x\r\n"[..]).unwrap();
            let depth = path.strip_prefix(md.root()).unwrap().components().count();
            assert_eq!(depth, 4, "{domain:?} {local:?} -> {}", path.display());
            assert!(
                path.components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir)),
                "{}",
                path.display()
            );
        }
        // Nothing was written next to the root.
        assert_eq!(entries(dir.path()), vec![md.root().to_path_buf()]);
    }

    #[test]
    fn errors_are_classified() {
        let (_dir, md) = maildir();
        // A file where the domain directory should be: transient (an operator can fix it).
        fs::create_dir_all(md.root()).unwrap();
        fs::write(md.root().join("test.example"), b"not a dir").unwrap();
        let err = md
            .deliver("test.example", "user", "", &mut &b"x"[..])
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        let err = md.deliver("", "user", "", &mut &b"x"[..]).unwrap_err();
        assert!(!err.is_transient(), "{err}");
        let err = md
            .deliver("d", "u", "a\r\nX-Injected: 1", &mut &b"x"[..])
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }

    #[test]
    fn a_failing_body_leaves_nothing_behind() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("spool read failed"))
            }
        }
        let (_dir, md) = maildir();
        let err = md.deliver("d", "u", "", &mut Broken).unwrap_err();
        assert!(matches!(err, MaildirError::Body(_)) && err.is_transient());
        let mailbox = md.root().join("d/u");
        assert!(entries(&mailbox.join("tmp")).is_empty());
        assert!(entries(&mailbox.join("new")).is_empty());
    }

    #[test]
    fn deliver_once_is_idempotent_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Maildir::with_hostname(dir.path(), "host");
        let (first, fresh) = maildir
            .deliver_once(
                "test.example",
                "user",
                "1700000000.Yabc_0",
                "a@b",
                &mut &b"one\r\n"[..],
            )
            .unwrap();
        assert!(fresh);
        // A retry after a crash: same key, same mailbox, nothing new.
        let (again, fresh) = maildir
            .deliver_once(
                "test.example",
                "user",
                "1700000000.Yabc_0",
                "a@b",
                &mut &b"one\r\n"[..],
            )
            .unwrap();
        assert!(!fresh);
        assert_eq!(first, again);
        let new = dir.path().join("test.example/user/new");
        assert_eq!(fs::read_dir(&new).unwrap().count(), 1);
        assert_eq!(
            fs::read_dir(dir.path().join("test.example/user/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(fs::read(&first).unwrap(), b"Return-Path: <a@b>\none\n");
        // Another key is another message.
        let (_, fresh) = maildir
            .deliver_once(
                "test.example",
                "user",
                "1700000000.Yabc_1",
                "a@b",
                &mut &b"two\r\n"[..],
            )
            .unwrap();
        assert!(fresh);
        assert_eq!(fs::read_dir(&new).unwrap().count(), 2);
        // Keys that could escape or confuse the directory are refused.
        for key in ["", "../x", "a/b", "a:2,S"] {
            assert!(
                maildir
                    .deliver_once("test.example", "user", key, "a@b", &mut &b""[..])
                    .is_err(),
                "{key}"
            );
        }
    }

    fn job<'a>(local: &str, key: &str, body: &'a [u8]) -> BatchJob<&'a [u8]> {
        BatchJob {
            domain: "test.example".into(),
            local: local.into(),
            key: key.into(),
            return_path: "a@b".into(),
            body,
        }
    }

    #[test]
    fn a_batch_delivers_each_job_once_in_either_sync_mode() {
        // Each sync mode, with anonymous (O_TMPFILE) and with named staging files.
        let modes = [
            (MaildirSync::Batch, true),
            (MaildirSync::File, true),
            (MaildirSync::Batch, false),
            (MaildirSync::File, false),
        ];
        for (sync, anonymous) in modes {
            let dir = tempfile::tempdir().unwrap();
            let md = Maildir::with_hostname(dir.path(), "host").with_sync(sync);
            if !anonymous {
                md.anonymous.store(false, Ordering::Relaxed);
            }
            let big = vec![b'x'; COPY_BUFFER * 2 + 7];
            let mut jobs = vec![
                job("ann", "1.Yq1R0", b"one\r\n"),
                job("bob", "1.Yq1R1", b"two\r\n"),
                // The same delivery twice in one batch (a retry racing itself): one file.
                job("ann", "1.Yq1R0", b"one\r\n"),
                job("ann", "bad/key", b"never\r\n"),
                job("cat", "2.Yq2R0", &big),
            ];
            let results = md.deliver_batch(&mut jobs);
            assert_eq!(results.len(), 5, "{sync:?}");
            let fresh: Vec<Option<bool>> = results
                .iter()
                .map(|r| r.as_ref().ok().map(|(_, f)| *f))
                .collect();
            assert_eq!(
                fresh,
                [Some(true), Some(true), Some(false), None, Some(true)],
                "{sync:?}"
            );
            assert!(!results[3].as_ref().unwrap_err().is_transient());
            let read = |r: &Result<(PathBuf, bool), MaildirError>| {
                fs::read(&r.as_ref().unwrap().0).unwrap()
            };
            assert_eq!(read(&results[0]), b"Return-Path: <a@b>\none\n");
            assert_eq!(read(&results[1]), b"Return-Path: <a@b>\ntwo\n");
            let mut want = b"Return-Path: <a@b>\n".to_vec();
            want.extend_from_slice(&big);
            assert_eq!(read(&results[4]), want);
            for user in ["ann", "bob", "cat"] {
                let mailbox = dir.path().join("test.example").join(user);
                assert!(entries(&mailbox.join("tmp")).is_empty(), "{user}");
                assert_eq!(entries(&mailbox.join("new")).len(), 1, "{user}");
            }
            // The next round of the same deliveries finds them all done.
            let again = md.deliver_batch(&mut jobs[..2]);
            assert!(again.iter().all(|r| matches!(r, Ok((_, false)))));
        }
    }

    #[test]
    fn a_failing_body_fails_only_its_own_job() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("spool read failed"))
            }
        }
        let (_dir, md) = maildir();
        let mut jobs: Vec<BatchJob<Box<dyn Read>>> = vec![
            BatchJob {
                domain: "d".into(),
                local: "u".into(),
                key: "k1".into(),
                return_path: String::new(),
                body: Box::new(&b"fine\r\n"[..]),
            },
            BatchJob {
                domain: "d".into(),
                local: "u".into(),
                key: "k2".into(),
                return_path: String::new(),
                body: Box::new(Broken),
            },
        ];
        let results = md.deliver_batch(&mut jobs);
        assert!(matches!(results[0], Ok((_, true))));
        assert!(matches!(results[1], Err(MaildirError::Body(_))));
        let mailbox = md.root().join("d/u");
        assert!(entries(&mailbox.join("tmp")).is_empty());
        assert_eq!(entries(&mailbox.join("new")).len(), 1);
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_the_check_is_never_written_through() {
        // Files are made relative to the handles opened when the mailbox was checked: a `new/`
        // replaced by a link afterwards (a race with the check) gets nothing.
        let outside = tempfile::tempdir().unwrap();
        let (_dir, md) = maildir();
        md.deliver("d", "u", "", &mut &b"1\r\n"[..]).unwrap();
        let new = md.root().join("d/u/new");
        fs::rename(&new, md.root().join("d/u/new.old")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &new).unwrap();
        let jobs = [job("u", "k1", b"2\r\n"), job("u", "k2", b"3\r\n")];
        let mut jobs = jobs.map(|mut j| {
            j.domain = "d".into();
            j
        });
        for result in md.deliver_batch(&mut jobs) {
            let _ = result;
        }
        md.deliver("d", "u", "", &mut &b"4\r\n"[..]).ok();
        assert_eq!(entries(outside.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_folder_owned_by_someone_else_is_refused() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let (_dir, md) = maildir();
        fs::create_dir_all(md.root().join("d/u")).unwrap();
        std::os::unix::fs::chown(md.root().join("d/u"), Some(65534), None).unwrap();
        let err = md.deliver("d", "u", "", &mut &b"x\r\n"[..]).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn a_mailbox_removed_behind_our_back_is_made_again() {
        let (_dir, md) = maildir();
        let first = md
            .deliver("test.example", "user", "", &mut &b"1\r\n"[..])
            .unwrap();
        // An operator removes the mailbox; the remembered directories are gone.
        let mailbox = md.root().join("test.example/user");
        fs::remove_dir_all(&mailbox).unwrap();
        assert!(!first.exists());
        let (second, fresh) = md
            .deliver_once("test.example", "user", "k", "", &mut &b"2\r\n"[..])
            .unwrap();
        assert!(fresh);
        assert_eq!(fs::read(&second).unwrap(), b"Return-Path: <>\n2\n");
        assert!(mailbox.join("cur").is_dir());
    }

    #[test]
    fn a_mailbox_renamed_or_missing_new_is_looked_at_again() {
        let (_dir, md) = maildir();
        md.deliver("test.example", "user", "", &mut &b"1\r\n"[..])
            .unwrap();
        // The operator moves the mailbox aside: new mail goes to the path, not where it went.
        let mailbox = md.root().join("test.example/user");
        let aside = md.root().join("test.example/user.old");
        fs::rename(&mailbox, &aside).unwrap();
        let second = md
            .deliver("test.example", "user", "", &mut &b"2\r\n"[..])
            .unwrap();
        assert!(second.starts_with(&mailbox), "{}", second.display());
        assert_eq!(fs::read_dir(aside.join("new")).unwrap().count(), 1);
        // Only `new/` removed: the next delivery makes it again rather than failing to rename.
        fs::remove_dir_all(mailbox.join("new")).unwrap();
        let third = md
            .deliver("test.example", "user", "", &mut &b"3\r\n"[..])
            .unwrap();
        assert_eq!(fs::read(&third).unwrap(), b"Return-Path: <>\n3\n");
    }
}
