//! Local delivery into Maildir folders.
//!
//! Implements the delivery half of the Maildir format (<https://cr.yp.to/proto/maildir.html>):
//! write into `tmp/<unique>`, sync, rename into `new/<unique>`, and sync `new/` so that the
//! rename itself is durable (the `maildir` crate skips that last step; see
//! shared/research/ecosystem.md). A message is therefore in `new/` completely or not at all.
//!
//! RFC 5321 4.4: the final delivery adds `Return-Path: <reverse-path>` as the first line
//! (`<>` for the null reverse-path). The body is written unchanged after it, CRLF line ends
//! included.
//!
//! Layout: `<root>/<domain>/<local>/{tmp,new,cur}`. Domain and local part are made safe as
//! file names ([`safe_name`]): they can never name `.`, `..`, or a path with `/` in it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counter for unique names, shared by every [`Maildir`] in the process (the `Q<n>` part).
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// The longest file name most file systems take.
const MAX_NAME: usize = 255;

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
        }
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
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(MaildirError::InvalidName {
                what: "delivery key",
                value: key.to_owned(),
                reason: "must be ASCII letters, digits, '.', '_' or '-'",
            });
        }
        let (tmp_dir, new_dir) = self.prepare(domain, local, return_path)?;
        let name = format!("{key}.{}", self.hostname);
        let new = new_dir.join(&name);
        if new.exists() {
            return Ok((new, false));
        }
        let (tmp_name, file) = self.create_unique(&tmp_dir)?;
        let tmp = tmp_dir.join(&tmp_name);
        let result =
            write_message(file, &tmp, return_path, body).and_then(|()| {
                match fs::hard_link(&tmp, &new) {
                    Ok(()) => {
                        sync_dir(&new_dir)?;
                        Ok((new.clone(), true))
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((new.clone(), false)),
                    Err(e) => Err(MaildirError::io(&new, e)),
                }
            });
        // The tmp name is only a staging link: remove it whatever happened.
        let _ = fs::remove_file(&tmp);
        result
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
        let (tmp_dir, new_dir) = self.prepare(domain, local, return_path)?;

        let (name, file) = self.create_unique(&tmp_dir)?;
        let tmp = tmp_dir.join(&name);
        let result = write_message(file, &tmp, return_path, body).and_then(|()| {
            let new = new_dir.join(&name);
            fs::rename(&tmp, &new).map_err(|e| MaildirError::io(&new, e))?;
            sync_dir(&new_dir)?;
            Ok(new)
        });
        if result.is_err() {
            // Best effort: a leftover tmp file is harmless (readers ignore tmp/).
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Checks the return path and makes sure the mailbox's `tmp/`, `new/` and `cur/` exist;
    /// returns `tmp/` and `new/`.
    fn prepare(
        &self,
        domain: &str,
        local: &str,
        return_path: &str,
    ) -> Result<(PathBuf, PathBuf), MaildirError> {
        if return_path.contains(['\r', '\n']) {
            return Err(MaildirError::InvalidName {
                what: "return path",
                value: return_path.to_owned(),
                reason: "contains a line break",
            });
        }
        let mailbox = self.mailbox_path(domain, local)?;
        let tmp_dir = mailbox.join("tmp");
        let new_dir = mailbox.join("new");
        for dir in [&tmp_dir, &new_dir, &mailbox.join("cur")] {
            ensure_dir(dir)?;
        }
        Ok((tmp_dir, new_dir))
    }

    /// Creates `tmp/<unique>`: `<secs>.M<micros>P<pid>Q<counter>.<host>`.
    fn create_unique(&self, tmp_dir: &Path) -> Result<(String, File), MaildirError> {
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
            let path = tmp_dir.join(&name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((name, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10 => tries += 1,
                Err(e) => return Err(MaildirError::io(&path, e)),
            }
        }
    }
}

/// Writes the Return-Path line and the body, then fsyncs the file.
fn write_message(
    file: File,
    path: &Path,
    return_path: &str,
    body: &mut impl Read,
) -> Result<(), MaildirError> {
    let mut file = file;
    file.write_all(format!("Return-Path: <{return_path}>\r\n").as_bytes())
        .map_err(|e| MaildirError::io(path, e))?;
    // io::copy's stack buffer: no allocation per delivery. A read error is the spool's (Body),
    // a write error the mailbox's.
    let mut body = ReadTracked {
        inner: body,
        failed: false,
    };
    if let Err(e) = io::copy(&mut body, &mut file) {
        return Err(if body.failed {
            MaildirError::Body(e)
        } else {
            MaildirError::io(path, e)
        });
    }
    // fdatasync: the file's size is part of what it flushes; its other metadata (times) is not
    // needed to read the message back. The rename into new/ is made durable by the fsync of
    // new/ that follows.
    file.sync_data().map_err(|e| MaildirError::io(path, e))
}

/// A reader that remembers whether it was the one that failed.
struct ReadTracked<'a, R> {
    inner: &'a mut R,
    failed: bool,
}

impl<R: Read> Read for ReadTracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed = true;
            }
        })
    }
}

/// Creates `dir` and any missing parents, fsyncing each parent that gained an entry.
fn ensure_dir(dir: &Path) -> Result<(), MaildirError> {
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
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

fn sync_dir(dir: &Path) -> Result<(), MaildirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MaildirError::io(dir, e))
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
    use std::collections::HashSet;

    use super::*;

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
    fn delivers_byte_exact_with_return_path() {
        // RFC 5321 4.4: Return-Path added at final delivery; `<>` for the null reverse-path.
        let body = b"Received: from x\r\nSubject: t\r\n\r\nbare\nLF and \xff bytes kept\r\n.\r\n";
        let cases = [
            (
                "sender@client.example",
                "Return-Path: <sender@client.example>\r\n",
            ),
            ("", "Return-Path: <>\r\n"),
        ];
        for (return_path, header) in cases {
            let (_dir, md) = maildir();
            let path = md
                .deliver("test.example", "user", return_path, &mut &body[..])
                .unwrap();
            let mut want = header.as_bytes().to_vec();
            want.extend_from_slice(body);
            assert_eq!(fs::read(&path).unwrap(), want);
            let mailbox = md.root().join("test.example").join("user");
            assert_eq!(path.parent().unwrap(), mailbox.join("new"));
            assert_eq!(entries(&mailbox.join("new")), vec![path]);
            assert!(entries(&mailbox.join("tmp")).is_empty());
            assert!(mailbox.join("cur").is_dir());
        }
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
        assert_eq!(fs::read(&first).unwrap(), b"Return-Path: <a@b>\r\none\r\n");
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
}
