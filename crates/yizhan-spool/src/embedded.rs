//! The embedded backend: body files plus a SQLite index, with one group-committing thread.
//!
//! Layout under the spool directory:
//!
//! ```text
//! lock            flock(2)ed while a Spool has the directory open
//! bodies/<id>     one immutable body file per message larger than INLINE_BODY_MAX
//! index.sqlite    WAL mode, synchronous=FULL: a committed row is the commit point;
//!                 tables `queue` (envelopes), `body` (inline bodies), `corrupt`
//! corrupt/<id>    bodies of damaged messages, moved aside at open
//! ```
//!
//! Small bodies (up to [`INLINE_BODY_MAX`] bytes, most mail) are not files at all: they are
//! stored in the index's `body` table, written in the same transaction as the envelope row, so
//! the group commit that makes the row durable makes the body durable too: no file to create,
//! `fdatasync` or unlink, and no inode to allocate and free per message (on ext4 without a
//! journal, freeing inodes fast makes every later file creation scan past them for 30 s). An
//! envelope update does not touch the body.
//!
//! Committing a message (the durability promise of RFC 5321 4.1.1.4 and 6.1: "250" only once
//! the message is safely stored):
//!
//! 1. the session writes the body into memory ([`Incoming::write`]); once it grows past
//!    [`INLINE_BODY_MAX`] it spills to `bodies/<id>` and streams there from then on;
//! 2. for a body file, [`Spool::commit`] flushes and `fdatasync`s it on the blocking pool, so
//!    many sessions sync their bodies in parallel;
//! 3. it sends the row (with the inline body, if any) to the committer thread and waits;
//! 4. the committer takes everything queued, `fsync`s `bodies/` once if the group has a body
//!    file (so every new directory entry is durable), writes all rows in one transaction,
//!    commits, and answers every waiter.
//!
//! One fsync of the directory and one WAL sync cover every message that finished while the
//! previous group was being committed: that is group commit, and it is where the throughput
//! comes from (see shared/research/ecosystem.md, "Spool durability benchmark").
//!
//! Recovery at [`Spool::open`]: a body file without a row was never acknowledged and is
//! deleted; a row whose envelope does not parse, or whose body (inline or file) is missing or has
//! the wrong size, is moved to the `corrupt` table (and its body file, if any, to `corrupt/`),
//! logged, and skipped.
//!
//! Schema version 2 added the `body` columns; an index of version 1 gets them (NULL: every
//! message has a body file) when it is opened. Version 3 moved inline bodies from
//! `queue.body` (now always NULL) to the `body` table; a version 2 index is moved at open.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

use crate::{Envelope, QueueId, SpoolError};

/// The most changes one transaction takes; more simply wait for the next group.
const MAX_GROUP: usize = 1024;

/// How long a SQLite call waits for a lock held by someone else (an operator's `sqlite3`
/// shell, say) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite's page cache per connection, as `PRAGMA cache_size` (negative: KiB; SQLite's default
/// is 2 MiB each, which a busy spool fills). The hot pages are the tail of the table (new ids
/// are time-ordered) and the `next_due` index; the kernel's page cache holds the rest, so a
/// small cache costs a `pread` now and then, not a disk read.
const WRITER_CACHE_KIB: i64 = -512;
/// See [`WRITER_CACHE_KIB`]; the reader loads envelopes and inline bodies by id.
const READER_CACHE_KIB: i64 = -256;

/// How much of the index recovery maps into memory at most (see [`Spool::open`]).
const RECOVERY_MMAP: i64 = 4 << 30;

/// Bodies up to this size are stored in the index (the `body` table) instead of in a body
/// file. Most mail, attachments included, is smaller; a session holds at most this much of a
/// body in memory before it spills to a file.
pub const INLINE_BODY_MAX: u64 = 256 * 1024;

/// 2: the `body` columns (inline bodies); 3: inline bodies in their own `body` table, so that
/// an envelope update does not rewrite the body; 4: envelopes in `yizhan-proto`'s types
/// (paths in their SMTP form, typed DSN parameters). Older indexes are upgraded at open.
const SCHEMA_VERSION: i64 = 4;

/// WAL pages after which the committer itself checkpoints (SQLite's default is 1000, 4 MB): a
/// backstop only. Checkpoints are the checkpointer thread's job, so that copying the WAL back
/// into the database (reading and writing every page again, inline bodies included) runs
/// beside the group commit instead of stalling it.
const WAL_AUTOCHECKPOINT: i64 = 65_536;

/// The longest a lazy removal waits for a group to ride along with.
const LAZY_FLUSH: Duration = Duration::from_millis(100);

/// Bytes written through the committer after which it asks the checkpointer for a (passive)
/// checkpoint.
const CHECKPOINT_EVERY: usize = 4 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id          TEXT NOT NULL PRIMARY KEY,
    received_at INTEGER NOT NULL,
    next_due    INTEGER,
    held        INTEGER NOT NULL DEFAULT 0,
    envelope    TEXT NOT NULL,
    body        BLOB
);
CREATE INDEX IF NOT EXISTS queue_next_due ON queue (next_due, held);
CREATE TABLE IF NOT EXISTS body (
    id   TEXT NOT NULL PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS corrupt (
    id       TEXT,
    moved_at INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    envelope BLOB,
    body     BLOB
);
";

/// What [`Spool::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Messages in the spool after recovery.
    pub messages: usize,
    /// Body files without an index row (never acknowledged), deleted.
    pub orphans_removed: usize,
    /// Damaged messages moved to the `corrupt` table and directory.
    pub corrupt: usize,
}

/// The durable message queue. Cheap to clone: all clones share one index and one committer.
///
/// The API is the contract every backend keeps (this embedded one now, a shared PostgreSQL one
/// later): `create` + `commit` to accept a message, `due`/`load`/`open_body` to deliver it,
/// `update` to record recipient state, `remove` when every recipient is final. Every method that
/// changes state is `async` and returns once the change is durable.
///
/// Reads (`load`, `list`, `due`, `next_due`) are short synchronous SQLite queries on a
/// separate connection; WAL mode lets them run while the committer writes.
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    bodies: PathBuf,
    reader: Mutex<Connection>,
    jobs: Option<mpsc::Sender<Job>>,
    /// Lazy removals ([`Spool::remove_soon`]) waiting to ride along with the next group.
    lazy: Arc<Mutex<Vec<Job>>>,
    committer: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
    // Held (and flock'ed) for as long as the spool is open; after the committer has stopped.
    _lock: File,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("commit_groups", &self.stats.groups.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the committer finish what is queued and stop; wait for it so
        // that the spool can be reopened (and the lock taken) as soon as the last clone is gone.
        drop(self.jobs.take());
        if let Some(handle) = self.committer.take()
            && handle.join().is_err()
        {
            tracing::error!(dir = %self.dir.display(), "spool committer thread panicked");
        }
    }
}

#[derive(Default)]
struct Stats {
    /// Transactions committed by the committer.
    groups: AtomicU64,
    /// Changes submitted to the committer and not answered yet.
    pending: AtomicUsize,
}

/// A message being received: its body, in memory while it is small, else in its body file.
///
/// Dropping an `Incoming` that was not committed deletes the body file, if there is one: the
/// transaction was aborted (RSET, client gone, size exceeded, error) and nothing was
/// acknowledged.
#[derive(Debug)]
pub struct Incoming {
    id: QueueId,
    /// Where the body file is (or would be, once spilled).
    path: PathBuf,
    /// The body while it is at most [`INLINE_BODY_MAX`] bytes; `None` once spilled or handed
    /// off.
    inline: Option<Vec<u8>>,
    /// The body file once spilled; `None` before that, and once handed to the committer (which
    /// then owns the file's fate).
    writer: Option<BufWriter<File>>,
    size: u64,
}

impl Incoming {
    /// The queue id this message will have.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Appends bytes to the body.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let new_size = self.size + bytes.len() as u64;
        if let Some(buf) = self.inline.as_mut() {
            if new_size <= INLINE_BODY_MAX {
                buf.extend_from_slice(bytes);
                self.size = new_size;
                return Ok(());
            }
            self.spill()?;
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| SpoolError::io(&self.path, io::ErrorKind::BrokenPipe.into()))?;
        writer
            .write_all(bytes)
            .map_err(|e| SpoolError::io(&self.path, e))?;
        self.size = new_size;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The body, if it stayed small enough to be kept in memory (no file, nothing blocking);
    /// else the message back, for [`Incoming::into_reader`].
    pub fn take_inline(mut self) -> Result<Vec<u8>, Incoming> {
        match self.inline.take() {
            Some(bytes) => Ok(bytes),
            None => Err(self),
        }
    }

    /// The body written so far, to read from the start, for a store that keeps bodies
    /// elsewhere (the shared queue): in memory if it stayed small, else its file, flushed and
    /// reopened (and deleted when the reader is dropped). Blocking.
    pub fn into_reader(mut self) -> Result<IncomingBody, SpoolError> {
        if let Some(bytes) = self.inline.take() {
            return Ok(IncomingBody::Inline(io::Cursor::new(bytes)));
        }
        if let Some(mut writer) = self.writer.take() {
            writer.flush().map_err(|e| SpoolError::io(&self.path, e))?;
        }
        let path = std::mem::take(&mut self.path);
        let file = File::open(&path).map_err(|e| SpoolError::io(&path, e))?;
        Ok(IncomingBody::File { file, path })
    }

    /// Moves the in-memory body to a new body file, which takes every later write.
    fn spill(&mut self) -> Result<(), SpoolError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)
            .map_err(|e| SpoolError::io(&self.path, e))?;
        // 8 KiB: sessions in flight each hold one; the kernel's page cache does the rest.
        let mut writer = BufWriter::with_capacity(8 * 1024, file);
        let buf = self.inline.take().unwrap_or_default();
        // From here on the file is ours (and deleted on drop), even if this write fails.
        let written = writer.write_all(&buf);
        self.writer = Some(writer);
        written.map_err(|e| SpoolError::io(&self.path, e))
    }

    /// Flushes the buffer and `fdatasync`s the file (blocking).
    fn sync(&mut self) -> Result<(), SpoolError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| SpoolError::io(&self.path, io::ErrorKind::BrokenPipe.into()))?;
        writer.flush().map_err(|e| SpoolError::io(&self.path, e))?;
        writer
            .get_ref()
            .sync_data()
            .map_err(|e| SpoolError::io(&self.path, e))
    }

    /// Closes the file and gives up responsibility for it (the committer deletes it if the
    /// transaction fails).
    fn hand_off(mut self) -> PathBuf {
        self.writer = None;
        std::mem::take(&mut self.path)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            remove_quietly(&self.path);
        }
    }
}

/// A body being received, read back: see [`Incoming::into_reader`].
#[derive(Debug)]
pub enum IncomingBody {
    /// A small body, from memory.
    Inline(io::Cursor<Vec<u8>>),
    /// A larger one, from its file (deleted when this is dropped).
    File {
        /// The file, open for reading.
        file: File,
        /// Its path.
        path: PathBuf,
    },
}

impl Read for IncomingBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            IncomingBody::Inline(c) => c.read(buf),
            IncomingBody::File { file, .. } => file.read(buf),
        }
    }
}

impl Drop for IncomingBody {
    fn drop(&mut self) {
        if let IncomingBody::File { path, .. } = self {
            remove_quietly(path);
        }
    }
}

/// A stored message body, from [`Spool::open_body`]: its file, or the bytes kept inline in the
/// index.
#[derive(Debug)]
pub enum Body {
    /// A body larger than [`INLINE_BODY_MAX`], in its body file.
    File(File),
    /// A small body, read from the index row.
    Inline(io::Cursor<Vec<u8>>),
}

impl Body {
    /// The same body as a tokio [`AsyncRead`] (for outbound SMTP).
    pub fn into_async(self) -> AsyncBody {
        match self {
            Body::File(f) => AsyncBody::File(tokio::fs::File::from_std(f)),
            Body::Inline(c) => AsyncBody::Inline(c),
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::File(f) => f.read(buf),
            Body::Inline(c) => c.read(buf),
        }
    }
}

impl Seek for Body {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Body::File(f) => f.seek(pos),
            Body::Inline(c) => c.seek(pos),
        }
    }
}

/// A stored message body to read asynchronously; see [`Body::into_async`].
#[derive(Debug)]
pub enum AsyncBody {
    /// A body file.
    File(tokio::fs::File),
    /// An inline body.
    Inline(io::Cursor<Vec<u8>>),
}

impl AsyncRead for AsyncBody {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AsyncBody::File(f) => Pin::new(f).poll_read(cx, buf),
            AsyncBody::Inline(c) => Pin::new(c).poll_read(cx, buf),
        }
    }
}

/// Where a new message's body is.
enum NewBody {
    /// Stored in the row.
    Inline(Vec<u8>),
    /// This file, synced; deleted if the transaction fails.
    File(PathBuf),
}

impl NewBody {
    /// Deletes the body file, if any (the insert failed).
    fn discard(&self) {
        if let NewBody::File(path) = self {
            remove_quietly(path);
        }
    }
}

/// One change for the committer.
enum Op {
    /// A new message.
    Insert { row: Row, body: NewBody },
    /// New recipient state for an existing message.
    Update { row: Row },
    /// Delete the row, then (after the commit) the body file if it has one. `lazy`: the
    /// deletion need not be durable at once (see [`Spool::remove_soon`]).
    Remove {
        id: QueueId,
        body: PathBuf,
        lazy: bool,
    },
}

impl Op {
    /// Roughly what the change writes into the WAL.
    fn bytes(&self) -> usize {
        match self {
            Op::Insert { row, body } => {
                row.json.len()
                    + match body {
                        NewBody::Inline(bytes) => bytes.len(),
                        NewBody::File(_) => 0,
                    }
            }
            Op::Update { row } => row.json.len(),
            Op::Remove { .. } => 64,
        }
    }
}

/// A thread that copies the WAL back into the database when the committer asks (SQLite
/// `wal_checkpoint(PASSIVE)`: it never blocks the committer; once it has caught up, the next
/// write starts the WAL from its beginning again).
struct Checkpointer {
    kick: mpsc::SyncSender<()>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    fn start(index: &Path) -> Option<Checkpointer> {
        let conn = match Connection::open(index).and_then(|c| {
            c.busy_timeout(BUSY_TIMEOUT)?;
            Ok(c)
        }) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "spool checkpointer not started; the committer checkpoints");
                return None;
            }
        };
        let (kick, kicks) = mpsc::sync_channel::<()>(1);
        let handle = std::thread::Builder::new()
            .name("yizhan-spool-checkpointer".into())
            .spawn(move || {
                while kicks.recv().is_ok() {
                    while kicks.try_recv().is_ok() {}
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match done {
                        Ok((log, copied)) => {
                            tracing::trace!(log, copied, "spool WAL checkpoint");
                        }
                        Err(e) => tracing::warn!(error = %e, "spool WAL checkpoint failed"),
                    }
                }
            });
        match handle {
            Ok(handle) => Some(Checkpointer { kick, handle }),
            Err(e) => {
                tracing::warn!(error = %e, "spool checkpointer not started; the committer checkpoints");
                None
            }
        }
    }

    /// Asks for a checkpoint (at most one waits; more asks while one runs are one).
    fn kick(&self) {
        let _ = self.kick.try_send(());
    }

    fn stop(self) {
        drop(self.kick);
        if self.handle.join().is_err() {
            tracing::error!("spool checkpointer thread panicked");
        }
    }
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

/// An envelope ready to be written.
struct Row {
    id: QueueId,
    received_at: i64,
    next_due: Option<i64>,
    held: bool,
    json: String,
}

impl Row {
    fn new(envelope: &Envelope) -> Result<Row, SpoolError> {
        let json = serde_json::to_string(envelope).map_err(|e| SpoolError::Corrupt {
            id: envelope.id.to_string(),
            reason: format!("cannot encode envelope: {e}"),
        })?;
        Ok(Row {
            id: envelope.id.clone(),
            received_at: envelope.received_at,
            next_due: envelope.next_due(),
            held: envelope.held,
            json,
        })
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, runs recovery and starts the committer.
    ///
    /// Fails with [`SpoolError::Locked`] if another `Spool` has the directory open, and with
    /// [`SpoolError::Sqlite`] if the index cannot be opened at all (a damaged index is not moved
    /// aside automatically: that would drop every queued message on the floor).
    pub fn open(dir: &Path) -> Result<(Spool, Recovery), SpoolError> {
        let bodies = dir.join("bodies");
        let corrupt_dir = dir.join("corrupt");
        for d in [dir, &bodies, &corrupt_dir] {
            fs::create_dir_all(d).map_err(|e| SpoolError::io(d, e))?;
        }
        sync_dir(dir)?;

        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SpoolError::io(&lock_path, e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(SpoolError::Locked { path: lock_path });
            }
            Err(e) => return Err(SpoolError::io(&lock_path, e.into())),
        }

        let index = dir.join("index.sqlite");
        let mut writer = Connection::open(&index)?;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SpoolError::Corrupt {
                id: index.display().to_string(),
                reason: format!("cannot switch the index to WAL mode (got {mode})"),
            });
        }
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
        writer.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        let version: i64 = writer.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(SpoolError::Corrupt {
                id: index.display().to_string(),
                reason: format!(
                    "index schema version {version} is newer than this yizhan ({SCHEMA_VERSION})"
                ),
            });
        }
        writer.execute_batch(SCHEMA)?;
        // Version 1 had no body columns: add them (NULL: the body is in its file).
        for table in ["queue", "corrupt"] {
            if !has_column(&writer, table, "body")? {
                writer.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN body BLOB"))?;
            }
        }
        if version < 3 {
            // Version 2 kept inline bodies in `queue.body`: move them to the `body` table (the
            // column stays, always NULL from now on).
            let tx = writer.transaction()?;
            tx.execute_batch(
                "INSERT OR REPLACE INTO body (id, data)
                     SELECT id, body FROM queue WHERE typeof(body) = 'blob';
                 UPDATE queue SET body = NULL WHERE typeof(body) = 'blob';",
            )?;
            tx.pragma_update(None, "user_version", 3)?;
            tx.commit()?;
        }
        // (0 is a new index: nothing to upgrade.)
        if (1..4).contains(&version) {
            upgrade_envelopes(&mut writer)?;
        }
        writer.pragma_update(None, "user_version", SCHEMA_VERSION)?;

        // Recovery reads every row once: through a memory map, not a read() per page (a
        // backlog of a million messages opens in about half the time). Unmapped afterwards,
        // so the pages it touched do not stay in the server's memory.
        writer.pragma_update(None, "mmap_size", RECOVERY_MMAP)?;
        let recovery = recover(&mut writer, &bodies, &corrupt_dir)?;
        writer.pragma_update(None, "mmap_size", 0)?;

        let reader = Connection::open(&index)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        reader.pragma_update(None, "query_only", true)?;
        reader.pragma_update(None, "cache_size", READER_CACHE_KIB)?;

        let bodies_handle = File::open(&bodies).map_err(|e| SpoolError::io(&bodies, e))?;
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
        let lazy = Arc::new(Mutex::new(Vec::new()));
        let checkpointer = Checkpointer::start(&index);
        if checkpointer.is_none() {
            writer.pragma_update(None, "wal_autocheckpoint", 1000)?;
        }
        let committer = Committer {
            lazy: lazy.clone(),
            checkpointer,
            written: 0,
            conn: writer,
            bodies: bodies.clone(),
            bodies_handle,
            stats: stats.clone(),
            deferred_unlinks: Vec::new(),
            relaxed: false,
        };
        let handle = std::thread::Builder::new()
            .name("yizhan-spool-committer".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| SpoolError::io(dir, e))?;

        let spool = Spool {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                bodies,
                reader: Mutex::new(reader),
                lazy,
                jobs: Some(tx),
                committer: Some(handle),
                stats,
                _lock: lock,
            }),
        };
        Ok((spool, recovery))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Starts a new message: a fresh [`QueueId`] and an empty body (in memory until it grows
    /// past [`INLINE_BODY_MAX`]).
    pub fn create(&self) -> Result<Incoming, SpoolError> {
        // UUID v7 collisions are practically impossible; should one happen anyway, the spill
        // (`create_new`) or the insert (primary key) fails and the message is not accepted.
        let id = QueueId::generate();
        let path = self.body_path(&id);
        Ok(Incoming {
            id,
            path,
            inline: Some(Vec::new()),
            writer: None,
            size: 0,
        })
    }

    /// Makes the message durable: syncs the body, then commits the envelope row (in a group
    /// with whatever else is ready). Returns the queue id once the row is committed; only then
    /// may the session answer `250`.
    ///
    /// `envelope.id` and `envelope.size` are set from `incoming`. New recipients should be
    /// `Pending` with `next_attempt = received_at` (see [`crate::Recipient::pending`]).
    ///
    /// On error nothing is stored and the body file is deleted (except after
    /// [`SpoolError::Closed`], where recovery at the next start decides). If the returned future
    /// is dropped half way, the message may or may not be stored; it was not acknowledged.
    pub async fn commit(
        &self,
        mut incoming: Incoming,
        mut envelope: Envelope,
    ) -> Result<QueueId, SpoolError> {
        if incoming.path.parent() != Some(self.inner.bodies.as_path()) {
            return Err(SpoolError::io(
                &incoming.path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this Incoming belongs to another spool",
                ),
            ));
        }
        envelope.id = incoming.id.clone();
        envelope.size = incoming.size;
        let row = Row::new(&envelope)?;
        let body = if let Some(bytes) = incoming.inline.take() {
            NewBody::Inline(bytes)
        } else {
            let incoming = tokio::task::spawn_blocking(move || {
                incoming.sync()?;
                Ok::<_, SpoolError>(incoming)
            })
            .await
            .map_err(|e| SpoolError::CommitFailed {
                reason: format!("body sync task failed: {e}"),
            })??;
            NewBody::File(incoming.hand_off())
        };
        self.submit(Op::Insert { row, body }).await?;
        Ok(envelope.id)
    }

    /// Reads one message's envelope.
    pub fn load(&self, id: &QueueId) -> Result<Envelope, SpoolError> {
        let reader = self.reader();
        let json: Option<Option<Vec<u8>>> = reader
            .prepare_cached("SELECT envelope FROM queue WHERE id = ?1")?
            .query_row([id.as_str()], |r| Ok(bytes_of(r.get_ref(0)?)))
            .optional()?;
        match json {
            None => Err(SpoolError::NotFound(id.clone())),
            Some(None) => Err(SpoolError::Corrupt {
                id: id.to_string(),
                reason: "envelope column is not text".into(),
            }),
            Some(Some(json)) => parse_envelope(id.as_str(), &json),
        }
    }

    /// Every message in the spool, oldest first. Rows that do not parse are skipped with a
    /// warning (the next [`Spool::open`] moves them aside).
    pub fn list(&self) -> Result<Vec<Envelope>, SpoolError> {
        self.query_envelopes("SELECT id, envelope FROM queue ORDER BY id", [])
    }

    /// What the runner's schedule needs of every message, from the index columns alone (no
    /// envelope is read or parsed, so a large backlog is cheap to schedule): its id, the
    /// earliest attempt of a pending recipient (`None`: nothing pending, the message is done),
    /// and whether it is held.
    pub fn schedule_index(&self) -> Result<Vec<(QueueId, Option<i64>, bool)>, SpoolError> {
        let reader = self.reader();
        let mut stmt = reader.prepare_cached("SELECT id, next_due, held FROM queue")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                text_of(r.get_ref(0)?),
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, next_due, held) = row?;
            match id.parse() {
                Ok(id) => out.push((id, next_due, held)),
                Err(e) => tracing::warn!(queue_id = %id, error = %e, "skipping damaged spool row"),
            }
        }
        Ok(out)
    }

    /// Up to `limit` messages after `after` (all from the first with `None`), in id order,
    /// which is arrival order: a listing pages through a large queue with this instead of
    /// reading it whole.
    pub fn list_page(
        &self,
        after: Option<&QueueId>,
        limit: usize,
    ) -> Result<Vec<Envelope>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.map_or("", QueueId::as_str);
        self.query_envelopes(
            "SELECT id, envelope FROM queue WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after, limit],
        )
    }

    /// The ids that start with `prefix` (lower-case hex), at most `limit` of them.
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<QueueId>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let reader = self.reader();
        let mut stmt = reader.prepare_cached(
            "SELECT id FROM queue WHERE id >= ?1 AND substr(id, 1, length(?1)) = ?1
             ORDER BY id LIMIT ?2",
        )?;
        let ids = stmt
            .query_map(params![prefix, limit], |r| Ok(text_of(r.get_ref(0)?)))?
            .filter_map(|id| id.ok()?.parse().ok())
            .collect();
        Ok(ids)
    }

    /// Up to `limit` messages that are not held and have a `Pending` recipient with
    /// `next_attempt <= now`, the longest-due first.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<Envelope>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_envelopes(
            "SELECT id, envelope FROM queue
             WHERE held = 0 AND next_due IS NOT NULL AND next_due <= ?1
             ORDER BY next_due, id LIMIT ?2",
            params![now, limit],
        )
    }

    /// Up to `limit` messages in which no recipient is pending any more, oldest first. They
    /// are normally removed at once; this finds those left behind by a crash (or a failed
    /// `remove`) so the runner can finish them.
    pub fn finished(&self, limit: usize) -> Result<Vec<Envelope>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_envelopes(
            "SELECT id, envelope FROM queue WHERE next_due IS NULL ORDER BY id LIMIT ?1",
            [limit],
        )
    }

    /// The earliest `next_attempt` of any pending recipient of a message that is not held.
    pub fn next_due(&self) -> Result<Option<i64>, SpoolError> {
        let reader = self.reader();
        let due = reader
            .prepare_cached("SELECT MIN(next_due) FROM queue WHERE held = 0")?
            .query_row([], |r| r.get(0))?;
        Ok(due)
    }

    /// Opens a message body for reading: the inline bytes, or its body file.
    pub fn open_body(&self, id: &QueueId) -> Result<Body, SpoolError> {
        let inline: Option<Option<Vec<u8>>> = self
            .reader()
            .prepare_cached("SELECT data FROM body WHERE id = ?1")?
            .query_row([id.as_str()], |r| Ok(bytes_of(r.get_ref(0)?)))
            .optional()?;
        if let Some(Some(bytes)) = inline {
            return Ok(Body::Inline(io::Cursor::new(bytes)));
        }
        let path = self.body_path(id);
        File::open(&path)
            .map(Body::File)
            .map_err(|e| SpoolError::io(path, e))
    }

    /// Where a message's body file lives (whether or not it exists: a body of at most
    /// [`INLINE_BODY_MAX`] bytes has none, it is in the index).
    pub fn body_path(&self, id: &QueueId) -> PathBuf {
        self.inner.bodies.join(id.as_str())
    }

    /// Durably replaces a message's envelope (recipient state, `held`). Goes through the
    /// committer like `commit`. Fails with [`SpoolError::NotFound`] if the message is gone.
    pub async fn update(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        let row = Row::new(envelope)?;
        self.submit(Op::Update { row }).await
    }

    /// Durably deletes a message: the row is deleted and committed, then the body unlinked.
    /// Removing a message that is not there is not an error.
    pub async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let body = self.body_path(id);
        self.submit(Op::Remove {
            id: id.clone(),
            body,
            lazy: false,
        })
        .await
    }

    /// Deletes a message like [`remove`](Spool::remove), without waiting for the commit, and
    /// without making the deletion durable at once. It does not even wake the committer: it
    /// joins the next group (within 100 ms at the latest), and a group of nothing but such
    /// removals is committed with `synchronous=NORMAL` (no WAL sync; the next durable commit
    /// covers it).
    /// For a message whose every outcome is recorded, or can be recognised if it is tried
    /// again (the queue runner's Maildir deliveries are idempotent per queue id and
    /// recipient): a crash may bring it back, never lose anything. Should the commit fail, the
    /// error is logged and the message is found again at the next scan. A body file is
    /// unlinked only after a durable commit (else at the next start, as an orphan).
    pub fn remove_soon(&self, id: &QueueId) {
        let Some(jobs) = self.inner.jobs.as_ref() else {
            return;
        };
        let (reply, _) = oneshot::channel();
        self.inner.stats.pending.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            op: Op::Remove {
                id: id.clone(),
                body: self.body_path(id),
                lazy: true,
            },
            reply,
        };
        // Without waking the committer: the removal rides along with the next group (or goes
        // within LAZY_FLUSH), unless enough of them wait to make a group of their own.
        let full = {
            let mut lazy = lock(&self.inner.lazy);
            lazy.push(job);
            lazy.len() >= MAX_GROUP
        };
        if full {
            let batch = std::mem::take(&mut *lock(&self.inner.lazy));
            for job in batch {
                if jobs.send(job).is_err() {
                    self.inner.stats.pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// How many transactions the committer has committed. With concurrent commits this grows
    /// more slowly than the number of changes: that is group commit at work.
    pub fn commit_groups(&self) -> u64 {
        self.inner.stats.groups.load(Ordering::Relaxed)
    }

    /// Changes submitted to the committer and not answered yet (a gauge of its backlog).
    pub fn pending_commits(&self) -> usize {
        self.inner.stats.pending.load(Ordering::Relaxed)
    }

    async fn submit(&self, op: Op) -> Result<(), SpoolError> {
        let jobs = self.inner.jobs.as_ref().ok_or(SpoolError::Closed)?;
        let (reply, answer) = oneshot::channel();
        self.inner.stats.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::SendError(job)) = jobs.send(Job { op, reply }) {
            self.inner.stats.pending.fetch_sub(1, Ordering::Relaxed);
            if let Op::Insert { body, .. } = job.op {
                body.discard();
            }
            return Err(SpoolError::Closed);
        }
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection itself usable.
        self.inner
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn query_envelopes(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Envelope>, SpoolError> {
        let reader = self.reader();
        let mut stmt = reader.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok((text_of(r.get_ref(0)?), bytes_of(r.get_ref(1)?)))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            let parsed = match json {
                Some(json) => parse_envelope(&id, &json),
                None => Err(SpoolError::Corrupt {
                    id: id.clone(),
                    reason: "envelope column is not text".into(),
                }),
            };
            match parsed {
                Ok(env) => out.push(env),
                Err(e) => tracing::warn!(queue_id = %id, error = %e, "skipping damaged spool row"),
            }
        }
        Ok(out)
    }
}

/// One change's result, and whether a removed message's body file is to be unlinked.
type ChangeResult = (Result<(), SpoolError>, bool);

/// The committer thread's state.
struct Committer {
    /// Lazy removals waiting for a group (shared with the spool handles).
    lazy: Arc<Mutex<Vec<Job>>>,
    /// Checkpoints the WAL on its own thread; `None` if it could not start (then SQLite's
    /// automatic checkpoints on this connection do it).
    checkpointer: Option<Checkpointer>,
    /// Bytes written since the checkpointer was last asked.
    written: usize,
    conn: Connection,
    bodies: PathBuf,
    bodies_handle: File,
    stats: Arc<Stats>,
    /// Body files of messages removed by a commit that was not synced yet: unlinked after the
    /// next durable commit (a crash in between leaves orphans, which the next start removes).
    deferred_unlinks: Vec<PathBuf>,
    /// Whether the connection is at `synchronous=NORMAL` (for a group of lazy removals).
    relaxed: bool,
}

impl Committer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        self.commit_all(jobs);
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
    }

    fn commit_all(&mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let mut group = match jobs.recv_timeout(LAZY_FLUSH) {
                Ok(first) => vec![first],
                Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Closing: what is still waiting goes now.
                    let group = std::mem::take(&mut *lock(&self.lazy));
                    if !group.is_empty() {
                        self.commit_group(group);
                    }
                    return;
                }
            };
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            group.append(&mut lock(&self.lazy));
            if !group.is_empty() {
                self.commit_group(group);
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Job>) {
        let lazy = group
            .iter()
            .all(|job| matches!(job.op, Op::Remove { lazy: true, .. }));
        if lazy != self.relaxed {
            let mode = if lazy { "NORMAL" } else { "FULL" };
            match self.conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => self.relaxed = lazy,
                // Still FULL (or NORMAL, for the next group of lazy removals only): the
                // commit stays correct either way; the next group tries again.
                Err(e) => tracing::warn!(error = %e, mode, "cannot set spool sync mode"),
            }
        }
        let mut durable = !self.relaxed;
        let started = std::time::Instant::now();
        let written = self.write_group(&group);
        crate::metrics::commit(group.len(), started.elapsed(), !self.relaxed);
        let results = match written {
            Ok(results) => {
                self.stats.groups.fetch_add(1, Ordering::Relaxed);
                results
            }
            Err(reason) => {
                tracing::error!(changes = group.len(), %reason, "spool group commit failed");
                durable = false;
                group
                    .iter()
                    .map(|job| {
                        if let Op::Insert { body, .. } = &job.op {
                            body.discard();
                        }
                        (
                            Err(SpoolError::CommitFailed {
                                reason: reason.clone(),
                            }),
                            false,
                        )
                    })
                    .collect()
            }
        };
        if durable {
            for body in self.deferred_unlinks.drain(..) {
                remove_quietly(&body);
            }
        }
        self.written += group.iter().map(|job| job.op.bytes()).sum::<usize>();
        if self.written >= CHECKPOINT_EVERY {
            self.written = 0;
            if let Some(checkpointer) = &self.checkpointer {
                checkpointer.kick();
            }
        }
        for (job, (result, unlink)) in group.into_iter().zip(results) {
            if let (Op::Remove { body, .. }, true) = (&job.op, unlink) {
                if !self.relaxed {
                    remove_quietly(body);
                } else {
                    self.deferred_unlinks.push(body.clone());
                }
            }
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            // The waiter may have gone away (its future dropped); the change stands regardless.
            let _ = job.reply.send(result);
        }
    }

    /// One transaction for the whole group. `Err` means nothing was stored; `Ok` holds each
    /// change's own result (an update of a missing row fails alone), and whether a removed
    /// message's body file is to be unlinked after the commit.
    fn write_group(&mut self, group: &[Job]) -> Result<Vec<ChangeResult>, String> {
        if group.iter().any(|j| {
            matches!(
                j.op,
                Op::Insert {
                    body: NewBody::File(_),
                    ..
                }
            )
        }) {
            // Makes the new directory entries of every body in this group durable at once.
            self.bodies_handle
                .sync_all()
                .map_err(|e| format!("fsync {}: {e}", self.bodies.display()))?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let mut results = Vec::with_capacity(group.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO queue (id, received_at, next_due, held, envelope)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| e.to_string())?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE queue SET received_at = ?2, next_due = ?3, held = ?4, envelope = ?5
                     WHERE id = ?1",
                )
                .map_err(|e| e.to_string())?;
            let mut insert_body = tx
                .prepare_cached("INSERT INTO body (id, data) VALUES (?1, ?2)")
                .map_err(|e| e.to_string())?;
            let mut delete_body = tx
                .prepare_cached("DELETE FROM body WHERE id = ?1")
                .map_err(|e| e.to_string())?;
            let mut delete = tx
                .prepare_cached("DELETE FROM queue WHERE id = ?1")
                .map_err(|e| e.to_string())?;
            for job in group {
                let result = match &job.op {
                    Op::Insert { row, body } => {
                        insert
                            .execute(params![
                                row.id.as_str(),
                                row.received_at,
                                row.next_due,
                                row.held,
                                row.json,
                            ])
                            .map_err(|e| format!("insert {}: {e}", row.id))?;
                        if let NewBody::Inline(bytes) = body {
                            insert_body
                                .execute(params![row.id.as_str(), bytes.as_slice()])
                                .map_err(|e| format!("insert body {}: {e}", row.id))?;
                        }
                        (Ok(()), false)
                    }
                    Op::Update { row } => {
                        let changed = update
                            .execute(params![
                                row.id.as_str(),
                                row.received_at,
                                row.next_due,
                                row.held,
                                row.json
                            ])
                            .map_err(|e| format!("update {}: {e}", row.id))?;
                        if changed == 0 {
                            (Err(SpoolError::NotFound(row.id.clone())), false)
                        } else {
                            (Ok(()), false)
                        }
                    }
                    Op::Remove { id, .. } => {
                        // An inline body goes with its row. Otherwise there may be a body
                        // file, even when the row is gone already (a crash between commit and
                        // unlink): unlink it.
                        let inline = delete_body
                            .execute([id.as_str()])
                            .map_err(|e| format!("delete body {id}: {e}"))?;
                        delete
                            .execute([id.as_str()])
                            .map_err(|e| format!("delete {id}: {e}"))?;
                        (Ok(()), inline == 0)
                    }
                };
                results.push(result);
            }
        }
        tx.commit().map_err(|e| format!("commit: {e}"))?;
        Ok(results)
    }
}

/// Checks every row against its body and removes body files that have no row.
fn recover(
    conn: &mut Connection,
    bodies: &Path,
    corrupt_dir: &Path,
) -> Result<Recovery, SpoolError> {
    struct Damaged {
        rowid: i64,
        id: String,
        reason: String,
        envelope: Option<Vec<u8>>,
        body: Option<Vec<u8>>,
    }

    let mut recovery = Recovery::default();
    let mut inline_rows = 0usize;
    // Healthy messages with a body file: every other file in bodies/ is an orphan.
    let mut known = HashSet::new();
    let mut damaged = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT queue.rowid, queue.id, queue.envelope, octet_length(body.data), typeof(body.data)
             FROM queue LEFT JOIN body ON body.id = queue.id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            let id = text_of(row.get_ref(1)?);
            let envelope = bytes_of(row.get_ref(2)?);
            // The inline body's length, not the body: a large backlog opens without reading it.
            let inline: Option<i64> = row.get(3)?;
            inline_rows += usize::from(inline.is_some());
            let kind = text_of(row.get_ref(4)?);
            let checked = if kind == "integer" || kind == "real" {
                Err("body column is neither a blob nor NULL".to_owned())
            } else {
                check_row(&id, envelope.as_deref(), inline, bodies)
            };
            match checked {
                Ok(()) => {
                    recovery.messages += 1;
                    if inline.is_none() {
                        known.insert(id);
                    }
                }
                Err(reason) => damaged.push(Damaged {
                    rowid,
                    id,
                    reason,
                    envelope,
                    body: None,
                }),
            }
        }
    }

    for d in &mut damaged {
        // Kept with the row in the corrupt table.
        d.body = conn
            .query_row("SELECT data FROM body WHERE id = ?1", [&d.id], |r| {
                Ok(bytes_of(r.get_ref(0)?))
            })
            .optional()?
            .flatten();
    }
    if !damaged.is_empty() {
        // Move the bodies first: if we crash before the rows move, the next start finds the
        // rows without bodies and moves them then.
        for d in &damaged {
            if d.id.parse::<QueueId>().is_ok() {
                let from = bodies.join(&d.id);
                if from.exists()
                    && let Err(e) = fs::rename(&from, corrupt_dir.join(&d.id))
                {
                    tracing::warn!(queue_id = %d.id, error = %e, "cannot move damaged body aside");
                }
            }
        }
        sync_dir(corrupt_dir)?;
        sync_dir(bodies)?;
        let moved_at = unix_now();
        let tx = conn.transaction()?;
        for d in &damaged {
            tracing::warn!(
                queue_id = %d.id,
                reason = %d.reason,
                "damaged spool message moved to the corrupt table"
            );
            tx.execute(
                "INSERT INTO corrupt (id, moved_at, reason, envelope, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d.id, moved_at, d.reason, d.envelope, d.body],
            )?;
            tx.execute("DELETE FROM queue WHERE rowid = ?1", [d.rowid])?;
            tx.execute("DELETE FROM body WHERE id = ?1", [&d.id])?;
        }
        tx.commit()?;
        recovery.corrupt = damaged.len();
    }

    // Inline bodies are written in the same transaction as their row, so none should be
    // alone; should one be (an operator's hand edit), it belongs to nothing. Counted first
    // (from the body table's index): the search costs a lookup per body, seconds for a large
    // backlog, and is needed only when there are more bodies than rows that have one.
    let bodies_stored: i64 = conn.query_row("SELECT COUNT(*) FROM body", [], |r| r.get(0))?;
    if usize::try_from(bodies_stored).is_ok_and(|n| n > inline_rows) {
        recovery.orphans_removed += conn.execute(
            "DELETE FROM body WHERE id NOT IN (SELECT id FROM queue)",
            [],
        )?;
    }

    let entries = fs::read_dir(bodies).map_err(|e| SpoolError::io(bodies, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io(bodies, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if known.contains(&name) {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                tracing::warn!(path = %path.display(), "unexpected directory in spool bodies, left alone");
            }
            _ => match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %name, "removed orphan spool body (never acknowledged)");
                    recovery.orphans_removed += 1;
                }
                Err(e) => return Err(SpoolError::io(path, e)),
            },
        }
    }
    if recovery.orphans_removed > 0 {
        sync_dir(bodies)?;
    }
    Ok(recovery)
}

/// Why a row is damaged, or `Ok` if it is fine. `inline` is the row's inline body, if any
/// (else the body is in its file).
fn check_row(
    id: &str,
    envelope: Option<&[u8]>,
    inline: Option<i64>,
    bodies: &Path,
) -> Result<(), String> {
    let qid: QueueId = id.parse().map_err(|e| format!("{e}"))?;
    let json = envelope.ok_or("envelope column is not text")?;
    let env = parse_envelope(id, json).map_err(|e| e.to_string())?;
    if env.id != qid {
        return Err(format!("envelope says it is {}", env.id));
    }
    if let Some(inline) = inline {
        return if u64::try_from(inline).is_ok_and(|n| n == env.size) {
            Ok(())
        } else {
            Err(format!(
                "inline body is {inline} bytes, envelope says {}",
                env.size
            ))
        };
    }
    let body = bodies.join(id);
    match fs::metadata(&body) {
        Ok(m) if m.len() == env.size => Ok(()),
        Ok(m) => Err(format!(
            "body is {} bytes, envelope says {}",
            m.len(),
            env.size
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err("body file is missing".into()),
        Err(e) => Err(format!("cannot stat body: {e}")),
    }
}

/// Schema 3 to 4: every envelope row rewritten with typed fields, in one transaction. A row
/// that does not upgrade is left as it is; the recovery that follows moves it aside.
fn upgrade_envelopes(conn: &mut Connection) -> Result<(), SpoolError> {
    let tx = conn.transaction()?;
    let rows: Vec<(String, Vec<u8>)> = {
        let mut select = tx.prepare("SELECT id, envelope FROM queue")?;
        select
            .query_map([], |r| {
                Ok((
                    text_of(r.get_ref(0)?),
                    bytes_of(r.get_ref(1)?).unwrap_or_default(),
                ))
            })?
            .collect::<Result<_, _>>()?
    };
    let (mut upgraded, mut left) = (0usize, 0usize);
    {
        let mut update = tx.prepare("UPDATE queue SET envelope = ?2 WHERE id = ?1")?;
        for (id, json) in rows {
            let envelope = serde_json::from_slice::<crate::legacy::EnvelopeV3>(&json)
                .map_err(|e| e.to_string())
                .and_then(crate::legacy::EnvelopeV3::upgrade);
            match envelope {
                Ok(envelope) => {
                    let json =
                        serde_json::to_string(&envelope).map_err(|e| SpoolError::CommitFailed {
                            reason: format!("upgrading {id}: {e}"),
                        })?;
                    update.execute(rusqlite::params![id, json])?;
                    upgraded += 1;
                }
                Err(reason) => {
                    tracing::warn!(queue_id = %id, %reason, "envelope cannot be upgraded to schema 4; it will be moved aside");
                    left += 1;
                }
            }
        }
    }
    tx.pragma_update(None, "user_version", 4)?;
    tx.commit()?;
    tracing::info!(
        upgraded,
        left,
        "spool index upgraded to schema 4 (typed envelopes)"
    );
    Ok(())
}

fn parse_envelope(id: &str, json: &[u8]) -> Result<Envelope, SpoolError> {
    serde_json::from_slice(json).map_err(|e| SpoolError::Corrupt {
        id: id.to_owned(),
        reason: format!("envelope does not parse: {e}"),
    })
}

fn text_of(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Null => String::new(),
    }
}

fn bytes_of(value: ValueRef<'_>) -> Option<Vec<u8>> {
    match value {
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(b.to_vec()),
        _ => None,
    }
}

/// Whether `table` has a column called `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, SpoolError> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if text_of(row.get_ref(1)?) == column {
            return Ok(true);
        }
    }
    Ok(false)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io(dir, e))
}

/// Locks a mutex whose holder may have panicked: the data (a list of jobs) stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn remove_quietly(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove spool file"),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::{ClientInfo, LocalMailbox, Recipient, RecipientStatus};

    fn envelope(received_at: i64, due: &[i64]) -> Envelope {
        Envelope {
            id: "00000000000000000000000000000000".parse().unwrap(),
            received_at,
            size: 0,
            reverse_path: "<sender@client.example>".parse().unwrap(),
            envid: Some("env-1".into()),
            ret: None,
            body: Some(yizhan_proto::command::Body::EightBitMime),
            smtputf8: false,
            client: ClientInfo {
                helo: "client.example".parse().ok(),
                origin: crate::Origin::Network {
                    address: "192.0.2.1:40000".parse().unwrap(),
                },
                auth_user: None,
                tls: None,
                recording: None,
            },
            recipients: due
                .iter()
                .enumerate()
                .map(|(i, &at)| {
                    Recipient::to(
                        format!("user{i}@test.example").parse().unwrap(),
                        Some(LocalMailbox {
                            domain: "test.example".into(),
                            local: format!("user{i}"),
                        }),
                        at,
                    )
                })
                .collect(),
            held: false,
        }
    }

    async fn put(spool: &Spool, body: &[u8], env: Envelope) -> QueueId {
        let mut incoming = spool.create().unwrap();
        incoming.write(body).unwrap();
        spool.commit(incoming, env).await.unwrap()
    }

    /// One byte over the inline limit: stored in a body file.
    fn big_body() -> Vec<u8> {
        (0..=INLINE_BODY_MAX)
            .map(|i| b'a' + (i % 26) as u8)
            .collect()
    }

    fn body_of(spool: &Spool, id: &QueueId) -> Vec<u8> {
        let mut out = Vec::new();
        spool.open_body(id).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn commit_then_reopen_finds_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"Subject: hi\r\n\r\nline one\r\n.. dotted\r\n";
        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery, Recovery::default());
        let id = put(&spool, body, envelope(100, &[100])).await;
        let stored = spool.load(&id).unwrap();
        assert_eq!(stored.id, id);
        assert_eq!(stored.size, body.len() as u64);
        drop(spool);

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                messages: 1,
                orphans_removed: 0,
                corrupt: 0
            }
        );
        assert_eq!(spool.load(&id).unwrap(), stored);
        assert_eq!(spool.list().unwrap(), vec![stored]);
        assert_eq!(body_of(&spool, &id), body);
    }

    #[tokio::test]
    async fn a_spool_directory_is_opened_once() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        assert!(matches!(
            Spool::open(dir.path()),
            Err(SpoolError::Locked { .. })
        ));
        drop(spool);
        assert!(Spool::open(dir.path()).is_ok());
    }

    #[tokio::test]
    async fn orphan_bodies_are_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let kept = put(&spool, b"kept\r\n", envelope(1, &[1])).await;
        // A session that was receiving when we crashed: a body, never committed.
        let mut incoming = spool.create().unwrap();
        incoming.write(&big_body()).unwrap();
        let half = spool.body_path(incoming.id());
        assert!(half.exists());
        std::mem::forget(incoming);
        drop(spool);
        let junk = dir.path().join("bodies").join("not-a-queue-id.tmp");
        fs::write(&junk, b"x").unwrap();

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.orphans_removed, 2);
        assert_eq!(recovery.messages, 1);
        assert!(!half.exists());
        assert!(!junk.exists());
        assert_eq!(body_of(&spool, &kept), b"kept\r\n");
    }

    #[tokio::test]
    async fn damaged_messages_are_moved_aside_and_open_succeeds() {
        type Damage = fn(&Path, &QueueId, &Connection);
        // (name, damage, body file moved to corrupt/, bad message has a body file)
        let cases: [(&str, Damage, bool, bool); 8] = [
            (
                "envelope is not JSON",
                |_, id, db| {
                    db.execute(
                        "UPDATE queue SET envelope = '{not json' WHERE id = ?1",
                        [id.as_str()],
                    )
                    .unwrap();
                },
                true,
                true,
            ),
            (
                "envelope is a number",
                |_, id, db| {
                    db.execute(
                        "UPDATE queue SET envelope = 42 WHERE id = ?1",
                        [id.as_str()],
                    )
                    .unwrap();
                },
                true,
                true,
            ),
            (
                "row id is not a queue id",
                |_, id, db| {
                    db.execute("UPDATE queue SET id = '../x' WHERE id = ?1", [id.as_str()])
                        .unwrap();
                },
                // The body then has no row: an orphan, removed.
                false,
                true,
            ),
            (
                "body missing",
                |dir, id, _| fs::remove_file(dir.join("bodies").join(id.as_str())).unwrap(),
                false,
                true,
            ),
            (
                "body truncated",
                |dir, id, _| fs::write(dir.join("bodies").join(id.as_str()), b"half").unwrap(),
                true,
                true,
            ),
            (
                "inline body truncated",
                |_, id, db| {
                    db.execute("UPDATE body SET data = x'00' WHERE id = ?1", [id.as_str()])
                        .unwrap();
                },
                false,
                false,
            ),
            (
                "inline body is a number",
                |_, id, db| {
                    db.execute("UPDATE body SET data = 7 WHERE id = ?1", [id.as_str()])
                        .unwrap();
                },
                false,
                false,
            ),
            (
                "inline body lost (NULL, no file)",
                |_, id, db| {
                    db.execute("DELETE FROM body WHERE id = ?1", [id.as_str()])
                        .unwrap();
                },
                false,
                false,
            ),
        ];
        for (name, damage, body_moved, bad_has_file) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (spool, _) = Spool::open(dir.path()).unwrap();
            let good = put(&spool, b"good\r\n", envelope(1, &[1])).await;
            let bad_body = if bad_has_file {
                big_body()
            } else {
                b"bad message body\r\n".to_vec()
            };
            let bad = put(&spool, &bad_body, envelope(2, &[2])).await;
            assert_eq!(spool.body_path(&bad).exists(), bad_has_file, "{name}");
            drop(spool);
            let db = Connection::open(dir.path().join("index.sqlite")).unwrap();
            damage(dir.path(), &bad, &db);
            drop(db);

            let (spool, recovery) = Spool::open(dir.path()).expect(name);
            assert_eq!(recovery.corrupt, 1, "{name}");
            assert_eq!(recovery.messages, 1, "{name}");
            assert_eq!(spool.list().unwrap().len(), 1, "{name}");
            assert_eq!(spool.load(&good).unwrap().id, good, "{name}");
            assert!(
                matches!(spool.load(&bad), Err(SpoolError::NotFound(_))),
                "{name}"
            );
            assert!(!spool.body_path(&bad).exists(), "{name}");
            assert_eq!(
                dir.path().join("corrupt").join(bad.as_str()).exists(),
                body_moved,
                "{name}"
            );
            let db = Connection::open(dir.path().join("index.sqlite")).unwrap();
            let reason: String = db
                .query_row("SELECT reason FROM corrupt", [], |r| r.get(0))
                .unwrap();
            assert!(!reason.is_empty(), "{name}");
            // Recovery is done: a second open finds nothing more to do.
            drop(spool);
            let (_spool, again) = Spool::open(dir.path()).unwrap();
            assert_eq!(
                again,
                Recovery {
                    messages: 1,
                    orphans_removed: 0,
                    corrupt: 0
                },
                "{name}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_commits_are_grouped_and_durable() {
        const N: usize = 200;
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        // Hold the index's write lock, as a slow commit would: every commit queues up behind it.
        let blocker = Connection::open(dir.path().join("index.sqlite")).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..N {
            let spool = spool.clone();
            tasks.spawn(async move {
                let body = format!("message {i}\r\n");
                put(&spool, body.as_bytes(), envelope(i as i64, &[i as i64])).await
            });
        }
        // Wait (on a condition, not a duration) until all of them wait for the committer.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while spool.pending_commits() < N {
            assert!(
                std::time::Instant::now() < deadline,
                "commits never queued up"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(spool.commit_groups(), 0);
        blocker.execute_batch("COMMIT").unwrap();

        let mut ids = HashSet::new();
        while let Some(id) = tasks.join_next().await {
            ids.insert(id.unwrap());
        }
        assert_eq!(ids.len(), N);
        let groups = spool.commit_groups();
        assert!(groups < N as u64, "{groups} transactions for {N} commits");
        assert!(
            groups <= 2,
            "{groups} transactions: at most the blocked one and the rest"
        );
        assert_eq!(spool.pending_commits(), 0);
        drop(spool);

        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, N);
        assert_eq!(recovery.orphans_removed + recovery.corrupt, 0);
        for id in &ids {
            let env = spool.load(id).unwrap();
            let want = format!("message {}\r\n", env.received_at);
            assert_eq!(body_of(&spool, id), want.as_bytes());
        }
    }

    async fn until_committed(spool: &Spool) {
        for _ in 0..500 {
            if spool.pending_commits() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the committer did not catch up in 5 s");
    }

    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let index = dir.path().join("index.sqlite");
        let before = fs::metadata(&index).unwrap().len();
        // More than CHECKPOINT_EVERY through the committer, in inline bodies.
        let body = vec![b'x'; INLINE_BODY_MAX as usize];
        let count = CHECKPOINT_EVERY / body.len() + 2;
        for i in 0..count {
            put(&spool, &body, envelope(i as i64, &[1])).await;
        }
        // Only a checkpoint moves pages from the WAL into the database file, and the
        // committer's own automatic one is far away (WAL_AUTOCHECKPOINT pages).
        let mut size = before;
        for _ in 0..500 {
            size = fs::metadata(&index).unwrap().len();
            if size >= CHECKPOINT_EVERY as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(size >= CHECKPOINT_EVERY as u64, "{before} -> {size} bytes");
        assert_eq!(spool.list().unwrap().len(), count);
    }

    #[tokio::test]
    async fn remove_soon_is_committed_in_order_with_later_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let small = put(&spool, b"body\r\n", envelope(10, &[10])).await;
        let large = put(&spool, &big_body(), envelope(10, &[10])).await;
        assert!(spool.body_path(&large).exists());
        spool.remove_soon(&small);
        spool.remove_soon(&large);
        // Alone, lazy removals are committed without a sync, so a body file stays until a
        // durable commit follows (a crash in between would bring the row back).
        until_committed(&spool).await;
        assert!(matches!(spool.load(&large), Err(SpoolError::NotFound(_))));
        assert!(spool.body_path(&large).exists());
        // The committer takes changes in order: once a later one is answered, both are done.
        let later = put(&spool, b"later\r\n", envelope(11, &[11])).await;
        for id in [&small, &large] {
            assert!(matches!(spool.load(id), Err(SpoolError::NotFound(_))));
        }
        assert!(!spool.body_path(&large).exists());
        assert_eq!(spool.list().unwrap().len(), 1);
        assert_eq!(spool.pending_commits(), 0);
        spool.remove_soon(&later);
        drop(spool);
        // Still committed when the spool is closed right after.
        let (spool, _) = Spool::open(dir.path()).unwrap();
        assert!(spool.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn update_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let id = put(&spool, b"body\r\n", envelope(10, &[10, 10])).await;
        let mut env = spool.load(&id).unwrap();
        env.recipients[0].status = RecipientStatus::Delivered {
            at: 11,
            detail: "new/1".into(),
        };
        env.recipients[1].attempts = 1;
        env.recipients[1].next_attempt = 310;
        env.recipients[1].last_error = Some("disk full".into());
        spool.update(&env).await.unwrap();
        assert_eq!(spool.load(&id).unwrap(), env);
        assert_eq!(spool.next_due().unwrap(), Some(310));
        assert!(spool.due(309, 10).unwrap().is_empty());
        assert_eq!(spool.due(310, 10).unwrap(), vec![env.clone()]);

        spool.remove(&id).await.unwrap();
        assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))));
        assert!(!spool.body_path(&id).exists());
        assert!(matches!(
            spool.update(&env).await,
            Err(SpoolError::NotFound(_))
        ));
        spool.remove(&id).await.unwrap(); // idempotent
        assert_eq!(spool.next_due().unwrap(), None);
        drop(spool);
        let (_, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery, Recovery::default());
    }

    #[tokio::test]
    async fn due_is_ordered_and_skips_held_and_finished() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let late = put(&spool, b"a", envelope(1, &[50, 70])).await;
        let early = put(&spool, b"b", envelope(2, &[90, 20])).await;
        let mut held_env = envelope(3, &[5]);
        held_env.held = true;
        put(&spool, b"c", held_env).await;
        let mut finished = envelope(4, &[1]);
        finished.recipients[0].status = RecipientStatus::Failed {
            at: 4,
            detail: "550".into(),
        };
        let done = put(&spool, b"d", finished).await;
        let future = put(&spool, b"e", envelope(5, &[1000])).await;

        let ids = |v: Vec<Envelope>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        // (now, limit, expected ids in order)
        let cases = [
            (4, 10, vec![]),
            (20, 10, vec![early.clone()]),
            (50, 10, vec![early.clone(), late.clone()]),
            (50, 1, vec![early.clone()]),
            (1000, 10, vec![early.clone(), late.clone(), future.clone()]),
            (1000, 0, vec![]),
        ];
        for (now, limit, want) in cases {
            assert_eq!(
                ids(spool.due(now, limit).unwrap()),
                want,
                "now {now} limit {limit}"
            );
        }
        assert_eq!(spool.next_due().unwrap(), Some(20));
        assert_eq!(spool.list().unwrap().len(), 5);
        assert_eq!(ids(spool.finished(10).unwrap()), vec![done.clone()]);
        assert!(spool.finished(0).unwrap().is_empty());

        // The schedule's view, from the index columns only.
        let mut index = spool.schedule_index().unwrap();
        index.sort();
        let mut all = ids(spool.list().unwrap());
        all.sort();
        assert_eq!(index.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), all);
        let of = |id: &QueueId| index.iter().find(|e| e.0 == *id).map(|e| (e.1, e.2));
        assert_eq!(of(&early), Some((Some(20), false)));
        assert_eq!(of(&done), Some((None, false)));
        assert_eq!(index.iter().filter(|e| e.2).count(), 1, "one held");

        // Pages in id order, each after the last id of the one before.
        let mut paged = Vec::new();
        let mut after: Option<QueueId> = None;
        for _ in 0..10 {
            let page = ids(spool.list_page(after.as_ref(), 2).unwrap());
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            after = page.last().cloned();
            paged.extend(page);
        }
        assert_eq!(paged, all);

        // Unique prefixes find one id; a common one finds them all (up to the limit).
        let prefix = &early.as_str()[..31];
        assert_eq!(
            spool.ids_with_prefix(prefix, 2).unwrap(),
            vec![early.clone()]
        );
        assert_eq!(spool.ids_with_prefix("", 2).unwrap().len(), 2);
        assert!(spool.ids_with_prefix("zz", 2).unwrap().is_empty());
    }

    #[tokio::test]
    async fn dropping_an_incoming_deletes_its_body() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut incoming = spool.create().unwrap();
        incoming.write(&big_body()).unwrap();
        assert_eq!(incoming.size(), INLINE_BODY_MAX + 1);
        let path = spool.body_path(incoming.id());
        assert!(path.exists());
        drop(incoming);
        assert!(!path.exists());
        assert!(spool.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_incoming_from_another_spool_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (spool_a, _) = Spool::open(a.path()).unwrap();
        let (spool_b, _) = Spool::open(b.path()).unwrap();
        let incoming = spool_a.create().unwrap();
        let path = spool_a.body_path(incoming.id());
        assert!(spool_b.commit(incoming, envelope(1, &[1])).await.is_err());
        assert!(!path.exists());
        assert!(spool_a.list().unwrap().is_empty() && spool_b.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn small_bodies_are_inline_and_large_ones_spill_to_a_file() {
        let limit = usize::try_from(INLINE_BODY_MAX).unwrap();
        // (name, body as written in chunks, stored in a body file)
        let cases: [(&str, Vec<Vec<u8>>, bool); 6] = [
            ("empty", vec![], false),
            ("small", vec![b"Subject: x\r\n\r\nhi\r\n".to_vec()], false),
            ("exactly the limit", vec![vec![b'x'; limit]], false),
            (
                "the limit in pieces",
                vec![vec![b'x'; limit - 1], vec![b'y']],
                false,
            ),
            ("one byte over", vec![vec![b'x'; limit], vec![b'y']], true),
            ("over in one write", vec![vec![b'z'; limit + 10]], true),
        ];
        for (name, chunks, in_file) in cases {
            let dir = tempfile::tempdir().unwrap();
            let want: Vec<u8> = chunks.concat();
            let (spool, _) = Spool::open(dir.path()).unwrap();
            let mut incoming = spool.create().unwrap();
            for chunk in &chunks {
                incoming.write(chunk).unwrap();
            }
            let id = spool.commit(incoming, envelope(1, &[1])).await.unwrap();
            assert_eq!(spool.body_path(&id).exists(), in_file, "{name}");
            assert_eq!(body_of(&spool, &id), want, "{name}");
            assert_eq!(
                matches!(spool.open_body(&id).unwrap(), Body::File(_)),
                in_file,
                "{name}"
            );
            drop(spool);

            // Recovery treats both kinds as healthy.
            let (spool, recovery) = Spool::open(dir.path()).unwrap();
            assert_eq!(
                recovery,
                Recovery {
                    messages: 1,
                    orphans_removed: 0,
                    corrupt: 0
                },
                "{name}"
            );
            assert_eq!(spool.load(&id).unwrap().size, want.len() as u64, "{name}");
            let mut async_body = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(
                &mut spool.open_body(&id).unwrap().into_async(),
                &mut async_body,
            )
            .await
            .unwrap();
            assert_eq!(async_body, want, "{name}");

            spool.remove(&id).await.unwrap();
            assert!(!spool.body_path(&id).exists(), "{name}");
            assert!(spool.open_body(&id).is_err(), "{name}");
            assert!(
                fs::read_dir(dir.path().join("bodies"))
                    .unwrap()
                    .next()
                    .is_none()
            );
        }
    }

    #[tokio::test]
    async fn a_version_1_index_is_upgraded_and_its_messages_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id: QueueId = "0190a5b2c3d47e8f9a0b1c2d3e4f5a6b".parse().unwrap();
        let body = b"Subject: old\r\n\r\nfrom before inline bodies\r\n";
        let mut env = envelope(5, &[5]);
        env.id = id.clone();
        env.size = body.len() as u64;
        fs::create_dir_all(dir.path().join("bodies")).unwrap();
        fs::write(dir.path().join("bodies").join(id.as_str()), body).unwrap();
        {
            // The version 1 schema, verbatim.
            let db = Connection::open(dir.path().join("index.sqlite")).unwrap();
            db.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE queue (
                     id          TEXT NOT NULL PRIMARY KEY,
                     received_at INTEGER NOT NULL,
                     next_due    INTEGER,
                     held        INTEGER NOT NULL DEFAULT 0,
                     envelope    TEXT NOT NULL
                 );
                 CREATE INDEX queue_next_due ON queue (next_due, held);
                 CREATE TABLE corrupt (
                     id       TEXT,
                     moved_at INTEGER NOT NULL,
                     reason   TEXT NOT NULL,
                     envelope BLOB
                 );
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            db.execute(
                "INSERT INTO queue (id, received_at, next_due, held, envelope)
                 VALUES (?1, 5, 5, 0, ?2)",
                params![id.as_str(), serde_json::to_string(&env).unwrap()],
            )
            .unwrap();
        }
        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                messages: 1,
                orphans_removed: 0,
                corrupt: 0
            }
        );
        assert_eq!(spool.load(&id).unwrap(), env);
        assert_eq!(body_of(&spool, &id), body);
        // New messages go inline next to it.
        let new = put(&spool, b"new\r\n", envelope(6, &[6])).await;
        assert_eq!(body_of(&spool, &new), b"new\r\n");
        assert!(!spool.body_path(&new).exists());
        spool.remove(&id).await.unwrap();
        assert!(!spool.body_path(&id).exists());
        drop(spool);
        let db = Connection::open(dir.path().join("index.sqlite")).unwrap();
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(db);
        let (_spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, 1);
    }

    #[tokio::test]
    async fn a_version_2_index_has_its_inline_bodies_moved() {
        let dir = tempfile::tempdir().unwrap();
        let inline: QueueId = "0190a5b2c3d47e8f9a0b1c2d3e4f5a6b".parse().unwrap();
        let filed: QueueId = "0190a5b2c3d47e8f9a0b1c2d3e4f5a6c".parse().unwrap();
        let small = b"Subject: v2\r\n\r\ninline in the queue row\r\n".to_vec();
        let large = b"Subject: v2\r\n\r\nin its body file\r\n".to_vec();
        let mut envs = Vec::new();
        for (id, body) in [(&inline, &small), (&filed, &large)] {
            let mut env = envelope(5, &[5]);
            env.id = id.clone();
            env.size = body.len() as u64;
            envs.push(env);
        }
        fs::create_dir_all(dir.path().join("bodies")).unwrap();
        fs::write(dir.path().join("bodies").join(filed.as_str()), &large).unwrap();
        {
            // The version 2 schema, verbatim.
            let db = Connection::open(dir.path().join("index.sqlite")).unwrap();
            db.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE queue (
                     id          TEXT NOT NULL PRIMARY KEY,
                     received_at INTEGER NOT NULL,
                     next_due    INTEGER,
                     held        INTEGER NOT NULL DEFAULT 0,
                     envelope    TEXT NOT NULL,
                     body        BLOB
                 );
                 CREATE INDEX queue_next_due ON queue (next_due, held);
                 CREATE TABLE corrupt (
                     id       TEXT,
                     moved_at INTEGER NOT NULL,
                     reason   TEXT NOT NULL,
                     envelope BLOB,
                     body     BLOB
                 );
                 PRAGMA user_version = 2;",
            )
            .unwrap();
            for (env, body) in envs.iter().zip([Some(&small), None]) {
                db.execute(
                    "INSERT INTO queue (id, received_at, next_due, held, envelope, body)
                     VALUES (?1, 5, 5, 0, ?2, ?3)",
                    params![env.id.as_str(), serde_json::to_string(env).unwrap(), body],
                )
                .unwrap();
            }
        }
        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!((recovery.messages, recovery.corrupt), (2, 0));
        assert_eq!(body_of(&spool, &inline), small);
        assert_eq!(body_of(&spool, &filed), large);
        // An update leaves the moved body alone; a removal takes it along.
        let mut env = envs[0].clone();
        env.held = true;
        spool.update(&env).await.unwrap();
        assert_eq!(body_of(&spool, &inline), small);
        spool.remove(&inline).await.unwrap();
        assert!(spool.open_body(&inline).is_err());
        drop(spool);
        let db = Connection::open(dir.path().join("index.sqlite")).unwrap();
        let left: i64 = db
            .query_row(
                "SELECT count(*) FROM queue WHERE body IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        let bodies: i64 = db
            .query_row("SELECT count(*) FROM body", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bodies, 0);
        drop(db);
        let (spool, recovery) = Spool::open(dir.path()).unwrap();
        assert_eq!(recovery.messages, 1);
        assert_eq!(body_of(&spool, &filed), large);
    }
}
