//! The spool's error type.

use std::path::PathBuf;

use crate::QueueId;

/// Everything that can go wrong in the spool.
///
/// For a receiving session every variant means the same thing: the message is **not** accepted,
/// answer `451` and let the client try again (RFC 5321 4.2.5, 4.5.4.1). Nothing that was
/// acknowledged earlier is affected by any of them.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file system operation failed: creating, writing, syncing, opening or removing a file
    /// or directory of the spool (disk full, permissions, I/O error). Transient.
    #[error("spool I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite index reported an error (opening it, reading it, or during recovery).
    #[error("spool index error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A group commit failed as a whole: its transaction was rolled back, so none of the changes
    /// in it were stored, and the bodies of the new messages in it were deleted. Transient.
    #[error("spool commit failed, nothing was stored: {reason}")]
    CommitFailed {
        /// What went wrong (the SQLite or I/O error, as text: one failure answers many waiters).
        reason: String,
    },
    /// A stored message could not be read back: its envelope does not parse or does not match
    /// its row, or its body is missing or has the wrong size. [`Spool::open`](crate::Spool::open)
    /// moves such messages aside; at run time this only appears if something outside yizhan
    /// damaged the spool.
    #[error("spool message {id} is damaged: {reason}")]
    Corrupt {
        /// The queue id as stored (possibly not even a valid [`QueueId`]).
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// There is no message with this id in the spool (already removed, or never committed).
    #[error("no message {0} in the spool")]
    NotFound(QueueId),
    /// Another [`Spool`](crate::Spool) (in this or another process) has this spool directory
    /// open. Only one may, because recovery deletes body files that have no index row yet.
    #[error("spool {} is in use by another process", path.display())]
    Locked {
        /// The lock file that is held.
        path: PathBuf,
    },
    /// The committer thread has stopped, so nothing can be made durable any more. Whether a
    /// change submitted just before is stored is unknown; recovery sorts it out at next start.
    #[error("the spool committer has stopped")]
    Closed,
    /// The shared queue's database failed (connecting, a statement, a commit). Transient.
    #[error("queue database error: {0}")]
    Database(String),
    /// The shared queue's schema is newer than this yizhan knows: upgrade yizhan.
    #[error(
        "the queue database has schema version {found}; this yizhan knows up to {known}: upgrade yizhan before pointing it at this database"
    )]
    SchemaTooNew {
        /// The version found.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// A write to the shared queue found the message changed or its claim lost (another node
    /// took it over, or an operator changed it): nothing was written; re-read it.
    #[error("message {0} changed under its claim (lease lost, or changed by an operator)")]
    Conflict(QueueId),
}

impl SpoolError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SpoolError::Io {
            path: path.into(),
            source,
        }
    }
}
