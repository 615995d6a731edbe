//! The shared queue's schema, and its migrations: applied at start, in order, by whichever
//! node takes the advisory lock first; a database whose schema is newer than this yizhan
//! knows is refused (an older node must not write into a layout it does not understand).

use tokio_postgres::Client;

use crate::SpoolError;

/// The advisory lock held while the schema is checked and migrated ("yizhan" in ASCII).
const MIGRATION_LOCK: i64 = 0x7969_7a68_616e;

/// Each migration, in order: the schema version after it is its place in this list, plus one.
/// 1: messages and chunked bodies. 2: a body of one chunk or less kept in its message's row
/// (one INSERT commits a message, one DELETE removes it), and bodies stored uncompressed
/// (`STORAGE EXTERNAL`: mail is mostly compressed or base64 already, and compressing it in
/// the database costs CPU on the cluster's one shared machine for little space).
const MIGRATIONS: [&str; 2] = [
    r"
    CREATE TABLE yizhan_messages (
        id          text PRIMARY KEY,
        received_at bigint NOT NULL,
        size        bigint NOT NULL,
        envelope    text NOT NULL,
        next_due    bigint,
        held        boolean NOT NULL DEFAULT false,
        version     bigint NOT NULL DEFAULT 0,
        lease_owner text,
        lease_until timestamptz
    );
    CREATE INDEX yizhan_messages_due ON yizhan_messages (next_due, id)
        WHERE next_due IS NOT NULL AND NOT held;
    CREATE TABLE yizhan_bodies (
        id         text NOT NULL,
        chunk      integer NOT NULL,
        data       bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (id, chunk)
    );
",
    r"
    ALTER TABLE yizhan_messages ADD COLUMN body bytea;
    ALTER TABLE yizhan_messages ALTER COLUMN body SET STORAGE EXTERNAL;
    ALTER TABLE yizhan_bodies ALTER COLUMN data SET STORAGE EXTERNAL;
",
];

/// The schema version this yizhan writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database's schema to [`SCHEMA_VERSION`] under the advisory lock; refuses a
/// newer one.
pub(super) async fn migrate(client: &mut Client) -> Result<i32, SpoolError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(super::db)?;
    let result = migrate_locked(client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<i32, SpoolError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS yizhan_schema (version integer NOT NULL)")
        .await
        .map_err(super::db)?;
    let found: Option<i32> = client
        .query_opt("SELECT max(version) FROM yizhan_schema", &[])
        .await
        .map_err(super::db)?
        .and_then(|row| row.get(0));
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(SpoolError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (n, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i32::try_from(n + 1).unwrap_or(i32::MAX);
        let tx = client.transaction().await.map_err(super::db)?;
        tx.batch_execute(sql).await.map_err(super::db)?;
        tx.execute("DELETE FROM yizhan_schema", &[])
            .await
            .map_err(super::db)?;
        tx.execute(
            "INSERT INTO yizhan_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(super::db)?;
        tx.commit().await.map_err(super::db)?;
        tracing::info!(version, "queue schema migrated");
    }
    Ok(SCHEMA_VERSION)
}
