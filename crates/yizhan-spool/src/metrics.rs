//! The spool's metrics (recorded through the `metrics` facade; a no-op until the server
//! installs a recorder): the names here, described by `yizhan_server::metrics`.

use std::time::Duration;

/// Changes per group commit (how well group commit groups).
pub const COMMIT_BATCH: &str = "yizhan_spool_commit_batch_size";
/// The time of one group commit: the bodies directory fsync, the transaction and its WAL
/// sync (`durable="true"`), or without the sync for lazy removals (`durable="false"`).
pub const COMMIT_SECONDS: &str = "yizhan_spool_commit_seconds";

/// One group commit of `changes` changes took `took`.
pub(crate) fn commit(changes: usize, took: Duration, durable: bool) {
    let durable = if durable { "true" } else { "false" };
    metrics::histogram!(COMMIT_BATCH).record(changes as f64);
    metrics::histogram!(COMMIT_SECONDS, "durable" => durable).record(took.as_secs_f64());
}
