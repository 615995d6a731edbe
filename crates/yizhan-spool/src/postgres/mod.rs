//! The shared queue on PostgreSQL (issue #17): several yizhan nodes keep one queue in one
//! database, so that a node that dies leaves its mail to the others.
//!
//! | what | how |
//! | --- | --- |
//! | the 250 promise | envelope row and body chunks in one transaction, `synchronous_commit = on` |
//! | bodies | one chunk or less in the message's row (most mail: one INSERT, one DELETE); larger ones in `yizhan_bodies`, in chunks of [`CHUNK`] octets, read back chunk by chunk |
//! | removals | batched: what finished while the last removal ran goes in one statement ([`removals`]) |
//! | due work | claimed with a lease: `FOR UPDATE SKIP LOCKED`, `lease_owner` = the node, `lease_until` on the database's clock ([`lease`]) |
//! | outcomes | compare-and-set on `version` and the lease: a node that lost its lease, or raced an operator's change, writes nothing ([`SpoolError::Conflict`]) |
//! | operators | hold, release, delete from any node: they bump `version`, so the lease holder re-reads |
//! | schema | embedded migrations under an advisory lock; a newer schema is refused ([`schema`]) |

mod fresh;
pub mod lease;
mod queue_store;
mod removals;
pub mod schema;
mod tls;

pub use tls::describe as describe_tls;

use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;

use crate::{Envelope, QueueId, SpoolError};

/// Bodies are stored in chunks of this many octets.
pub const CHUNK: usize = 256 * 1024;

/// How to reach the database and behave in it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// `postgres://user@host:port/db` or `host=... user=...`; a password in it is allowed but
    /// better given in [`PgSettings::password`] (from a file or the environment).
    pub url: String,
    /// The password, kept out of the URL (and out of every log line).
    pub password: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// This node's name in leases (unique per node).
    pub node: String,
    /// How long a claim lasts unless renewed.
    pub lease: Duration,
    /// How often a node reads the whole queue, for messages the other nodes accepted and
    /// did not finish (a node that died).
    pub scan_interval: Duration,
    /// Authorities trusted for the server's certificate besides the system's (`ca_file`).
    pub ca_certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redacted(&self.url))
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("node", &self.node)
            .field("lease", &self.lease)
            .field("scan_interval", &self.scan_interval)
            .field("ca_certificates", &self.ca_certificates.len())
            .finish()
    }
}

/// A connection string with any password in it replaced, for logs: the one in a URL's
/// user information (`postgres://user:secret@host/db`), and any `password=` parameter, in a
/// URL's query (`?password=secret`) or in `key=value` form (`password=secret`,
/// `password='a secret'`).
pub fn redacted(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:(redacted){}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    redact_password_parameters(&url)
}

/// Every `password=` parameter's value replaced (see [`redacted`]).
fn redact_password_parameters(text: &str) -> String {
    const KEY: &str = "password";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find(KEY) {
        let before = match at {
            0 => out.as_bytes().last().copied(),
            _ => Some(rest.as_bytes()[at - 1]),
        };
        let starts_parameter = before.is_none_or(|b| matches!(b, b'?' | b'&' | b' ' | b'\t'));
        let after = rest[at + KEY.len()..].trim_start();
        let Some(value) = after.strip_prefix('=').filter(|_| starts_parameter) else {
            out.push_str(&rest[..at + KEY.len()]);
            rest = &rest[at + KEY.len()..];
            continue;
        };
        let value = value.trim_start();
        let end = match value.strip_prefix('\'') {
            // A quoted value ends at the first quote not escaped by a backslash.
            Some(quoted) => {
                let mut escaped = false;
                quoted
                    .char_indices()
                    .find(|&(_, c)| {
                        let close = c == '\'' && !escaped;
                        escaped = c == '\\' && !escaped;
                        close
                    })
                    .map_or(value.len(), |(i, _)| i + 2)
            }
            None => value
                .find(|c: char| c == '&' || c.is_whitespace())
                .unwrap_or(value.len()),
        };
        out.push_str(&rest[..at]);
        out.push_str("password=(redacted)");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Whether `url` is a connection string the driver takes (`postgres://...` or
/// `host=... user=...`); why not, without repeating any password in it.
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| {
            format!(
                "not a PostgreSQL connection string ({e}): {}",
                redacted(url)
            )
        })
}

/// A database error, as the spool reports it (transient: the client is asked to retry), with
/// its causes: "error connecting to server: Connection refused (os error 111)".
pub(crate) fn db(e: impl std::error::Error) -> SpoolError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    SpoolError::Database(text)
}

/// A connection from the pool; a failure to make one is the database's own error
/// ("error connecting to server: Connection refused"), without the pool's wrapping.
pub(crate) async fn connection(pool: &Pool) -> Result<deadpool_postgres::Object, SpoolError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        other => db(other),
    })
}

/// The shared queue.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    node: String,
    lease: Duration,
    /// The version of each message this node has claimed, as last read or written.
    claims: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<QueueId, i64>>>,
    /// Messages this node committed, claimed from their first moment, until their first
    /// attempt ends ([`fresh`]).
    fresh: std::sync::Arc<fresh::Fresh>,
    /// Finished messages on their way out, removed in batches ([`removals`]).
    removals: tokio::sync::mpsc::UnboundedSender<removals::Removal>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects (the pool), and checks and migrates the schema.
    pub async fn connect(settings: &PgSettings) -> Result<PgStore, SpoolError> {
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(db)?;
        if let Some(password) = &settings.password {
            config.password(password);
        }
        let timeout_ms = settings.statement_timeout.as_millis();
        config.options(format!(
            "-c synchronous_commit=on -c statement_timeout={timeout_ms}"
        ));
        config.application_name(format!("yizhan {}", settings.node));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let may_be_clear = tls::may_fall_back_to_clear_text(&config);
        let manager = match config.get_ssl_mode() {
            SslMode::Disable => Manager::from_config(config, NoTls, manager_config),
            _ => Manager::from_config(
                config,
                tls::connector(&settings.ca_certificates)?,
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(db)?;
        let mut client = connection(&pool).await.map_err(tls::explained)?;
        schema::migrate(&mut client).await?;
        if may_be_clear {
            tls::warn_if_clear_text(&client).await;
        }
        Ok(PgStore {
            removals: removals::spawn(pool.clone(), settings.node.clone()),
            pool,
            node: settings.node.clone(),
            lease: settings.lease,
            claims: Default::default(),
            fresh: std::sync::Arc::new(fresh::Fresh::new(settings.lease)),
        })
    }

    /// This node's name in leases.
    pub fn node(&self) -> &str {
        &self.node
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SpoolError> {
        connection(&self.pool).await
    }

    /// Queues a message: its body (in chunks) and its envelope in one transaction, committed
    /// synchronously before this returns (the 250 promise). The id and size are set here.
    pub async fn enqueue(
        &self,
        body: &[u8],
        mut envelope: Envelope,
    ) -> Result<Envelope, SpoolError> {
        envelope.id = QueueId::generate();
        envelope.size = body.len() as u64;
        let mut client = self.client().await?;
        if body.len() <= CHUNK {
            self.insert_message(&client, &envelope, Some(body), false)
                .await?;
            return Ok(envelope);
        }
        let tx = client.transaction().await.map_err(db)?;
        let insert_chunk = tx.prepare_cached(INSERT_CHUNK).await.map_err(db)?;
        for (n, chunk) in body.chunks(CHUNK).enumerate() {
            let n = i32::try_from(n).map_err(db)?;
            tx.execute(&insert_chunk, &[&envelope.id.as_str(), &n, &chunk])
                .await
                .map_err(db)?;
        }
        self.insert_message(&tx, &envelope, None, false).await?;
        tx.commit().await.map_err(db)?;
        Ok(envelope)
    }

    /// Commits a message received into a local [`Incoming`](crate::Incoming): a small body
    /// (kept in memory while received) with its envelope in one INSERT; a larger one read
    /// back one chunk at a time (never whole in memory) into the same transaction as its
    /// envelope, the local copy deleted afterwards. The id is the one it was received under.
    /// Claimed by this node from the start: it delivers what it accepted, and another node
    /// takes the message only if this one dies before finishing it.
    pub async fn commit_incoming(
        &self,
        incoming: crate::Incoming,
        mut envelope: Envelope,
    ) -> Result<QueueId, SpoolError> {
        envelope.id = incoming.id().clone();
        envelope.size = incoming.size();
        let kept = match incoming.take_inline() {
            Ok(body) if body.len() <= CHUNK => {
                let client = self.client().await?;
                self.insert_message(&client, &envelope, Some(&body), true)
                    .await?;
                Some(body)
            }
            Ok(body) => {
                self.commit_chunks(std::io::Cursor::new(body), &envelope)
                    .await?;
                None
            }
            Err(incoming) => {
                let reader = tokio::task::spawn_blocking(move || incoming.into_reader())
                    .await
                    .map_err(db)??;
                self.commit_chunks(reader, &envelope).await?;
                None
            }
        };
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(envelope.id.clone(), 0);
        let id = envelope.id.clone();
        self.fresh.insert(envelope, kept);
        Ok(id)
    }

    /// A body read from `reader` one chunk at a time, and its claimed envelope, in one
    /// transaction.
    async fn commit_chunks(
        &self,
        mut reader: impl std::io::Read + Send + 'static,
        envelope: &Envelope,
    ) -> Result<(), SpoolError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let insert_chunk = tx.prepare_cached(INSERT_CHUNK).await.map_err(db)?;
        for n in 0i32.. {
            let (back, chunk) = tokio::task::spawn_blocking(move || {
                use std::io::Read as _;
                let mut chunk = Vec::with_capacity(CHUNK);
                let read = (&mut reader).take(CHUNK as u64).read_to_end(&mut chunk);
                (reader, read.map(|_| chunk))
            })
            .await
            .map_err(db)?;
            reader = back;
            let chunk = chunk.map_err(db)?;
            if chunk.is_empty() && n > 0 {
                break;
            }
            tx.execute(&insert_chunk, &[&envelope.id.as_str(), &n, &chunk])
                .await
                .map_err(db)?;
            if chunk.len() < CHUNK {
                break;
            }
        }
        self.insert_message(&tx, envelope, None, true).await?;
        tx.commit().await.map_err(db)
    }

    /// A message's row: with its `body` if that is one chunk or less, else in the transaction
    /// that stores the chunks; with `claim`, claimed by this node from the start (its lease
    /// begins at the commit).
    async fn insert_message(
        &self,
        client: &impl GenericClient,
        envelope: &Envelope,
        body: Option<&[u8]>,
        claim: bool,
    ) -> Result<(), SpoolError> {
        let text = serde_json::to_string(envelope).map_err(db)?;
        let (owner, lease) = match claim {
            true => (Some(self.node.as_str()), Some(self.lease.as_secs_f64())),
            false => (None, None),
        };
        let insert = client
            .prepare_cached(
                "INSERT INTO yizhan_messages
                     (id, received_at, size, envelope, next_due, held, lease_owner, lease_until,
                      body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7,
                         statement_timestamp() + make_interval(secs => $8), $9)",
            )
            .await
            .map_err(db)?;
        client
            .execute(
                &insert,
                &[
                    &envelope.id.as_str(),
                    &envelope.received_at,
                    &i64::try_from(envelope.size).unwrap_or(i64::MAX),
                    &text,
                    &envelope.next_due(),
                    &envelope.held,
                    &owner,
                    &lease,
                    &body,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// One message's envelope.
    pub async fn load(&self, id: &QueueId) -> Result<Envelope, SpoolError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT envelope FROM yizhan_messages WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(db)?
            .ok_or_else(|| SpoolError::NotFound(id.clone()))?;
        parse(id.as_str(), row.get(0))
    }

    /// Up to `limit` envelopes after `after`, in id (arrival) order.
    pub async fn list_page(
        &self,
        after: Option<&QueueId>,
        limit: usize,
    ) -> Result<Vec<Envelope>, SpoolError> {
        let after = after.map_or("", QueueId::as_str);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, envelope FROM yizhan_messages WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &limit],
            )
            .await
            .map_err(db)?;
        rows.iter().map(|r| parse(r.get(0), r.get(1))).collect()
    }

    /// Every message's id, earliest pending attempt and hold (the index columns only), but
    /// those another node holds a live claim on: that node is delivering them, and they come
    /// back in a later scan if its claim ends unfinished (the node died).
    pub async fn schedule_index(&self) -> Result<Vec<(QueueId, Option<i64>, bool)>, SpoolError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, next_due, held FROM yizhan_messages
                 WHERE lease_until IS NULL OR lease_until < now() OR lease_owner = $1",
                &[&self.node],
            )
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get::<_, &str>(0).parse().ok()?, r.get(1), r.get(2))))
            .collect())
    }

    /// A message's body, read chunk by chunk (never more than one chunk in a query).
    pub async fn body(&self, id: &QueueId) -> Result<Vec<u8>, SpoolError> {
        let mut chunks = self.body_chunks(id).await?;
        let mut body = Vec::with_capacity(usize::try_from(chunks.size).unwrap_or(0));
        while let Some(chunk) = chunks.next().await? {
            body.extend_from_slice(&chunk);
        }
        chunks.finish()?;
        Ok(body)
    }

    /// A body's chunks, in order, on one connection (its size read first, with the body
    /// itself when it is kept in the message's row).
    pub(crate) async fn body_chunks(&self, id: &QueueId) -> Result<BodyChunks, SpoolError> {
        let client = self.client().await?;
        let first = client
            .prepare_cached("SELECT size, body FROM yizhan_messages WHERE id = $1")
            .await
            .map_err(db)?;
        let row = client
            .query_opt(&first, &[&id.as_str()])
            .await
            .map_err(db)?
            .ok_or_else(|| SpoolError::NotFound(id.clone()))?;
        let next = client
            .prepare_cached("SELECT data FROM yizhan_bodies WHERE id = $1 AND chunk = $2")
            .await
            .map_err(db)?;
        Ok(BodyChunks {
            client,
            next,
            id: id.clone(),
            size: row.get(0),
            inline: row.get(1),
            read: 0,
            chunk: 0,
        })
    }

    /// Deletes body chunks that belong to no message and are older than `age` (a session
    /// that died between its chunks and its commit).
    pub async fn sweep_orphans(&self, age: Duration) -> Result<u64, SpoolError> {
        let seconds = age.as_secs_f64();
        self.client()
            .await?
            .execute(
                "DELETE FROM yizhan_bodies b
                 WHERE b.created_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM yizhan_messages m WHERE m.id = b.id)",
                &[&seconds],
            )
            .await
            .map_err(db)
    }
}

/// The chunks of one body, read one query at a time (see [`PgStore::body_chunks`]).
pub(crate) struct BodyChunks {
    client: deadpool_postgres::Object,
    next: tokio_postgres::Statement,
    id: QueueId,
    /// The size the envelope row gives.
    pub(crate) size: i64,
    /// The body kept in the message's row, until read.
    inline: Option<Vec<u8>>,
    read: i64,
    chunk: i32,
}

impl BodyChunks {
    /// The next chunk; `None` once the size is read (or the chunks end early).
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>, SpoolError> {
        if let Some(body) = self.inline.take() {
            self.read += body.len() as i64;
            return Ok(Some(body));
        }
        if self.read >= self.size {
            return Ok(None);
        }
        let row = self
            .client
            .query_opt(&self.next, &[&self.id.as_str(), &self.chunk])
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let data: Vec<u8> = row.get(0);
        self.read += data.len() as i64;
        self.chunk += 1;
        Ok(Some(data))
    }

    /// Whether the chunks added up to the size the envelope row gives.
    pub(crate) fn finish(&self) -> Result<(), SpoolError> {
        if self.read == self.size {
            return Ok(());
        }
        Err(SpoolError::Corrupt {
            id: self.id.to_string(),
            reason: format!(
                "body is {} octets, the envelope says {}",
                self.read, self.size
            ),
        })
    }
}

/// The queue ids in the first column of `rows` (one that does not parse is skipped: it is no
/// message of ours).
pub(crate) fn ids(rows: &[tokio_postgres::Row]) -> Vec<QueueId> {
    rows.iter()
        .filter_map(|r| r.get::<_, &str>(0).parse().ok())
        .collect()
}

/// Stores one chunk of a body larger than [`CHUNK`].
const INSERT_CHUNK: &str = "INSERT INTO yizhan_bodies (id, chunk, data) VALUES ($1, $2, $3)";

/// An envelope column parsed, checked against its row's id.
fn parse(id: &str, text: &str) -> Result<Envelope, SpoolError> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| SpoolError::Corrupt {
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    if envelope.id.as_str() != id {
        return Err(SpoolError::Corrupt {
            id: id.to_owned(),
            reason: format!("the envelope says {}", envelope.id),
        });
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn no_password_survives_redaction(tail in "[A-Za-z0-9!#$%*+,./:;<=>@^_`{|}~-]{0,24}") {
            // "Zq" is nowhere else in these strings: finding the secret is finding a leak.
            let secret = format!("Zq{tail}");
            for url in [
                format!("postgres://yizhan:{secret}@db/mail"),
                format!("postgres://yizhan@db/mail?password={secret}"),
                format!("postgres://yizhan@db/mail?sslmode=require&password={secret}&x=1"),
                format!("host=db password={secret} user=yizhan"),
                format!("host=db password='{secret}' user=yizhan"),
            ] {
                let shown = redacted(&url);
                proptest::prop_assert!(!shown.contains(&secret), "{}", shown);
            }
        }
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redacted("postgres://yizhan:hunter2@db.example:5432/mail"),
            "postgres://yizhan:(redacted)@db.example:5432/mail"
        );
        assert_eq!(
            redacted("postgres://yizhan@db/mail"),
            "postgres://yizhan@db/mail"
        );
        assert_eq!(redacted("host=db user=yizhan"), "host=db user=yizhan");
        assert_eq!(
            redacted("postgres://yizhan@db/mail?sslmode=require&password=hunter2&x=1"),
            "postgres://yizhan@db/mail?sslmode=require&password=(redacted)&x=1"
        );
        assert_eq!(
            redacted("host=db password=hunter2 user=yizhan"),
            "host=db password=(redacted) user=yizhan"
        );
        assert_eq!(
            redacted("password = 'a \\' secret' host=db"),
            "password=(redacted) host=db"
        );
        assert_eq!(
            redacted("host=db user=password_keeper dbname=passwords"),
            "host=db user=password_keeper dbname=passwords"
        );
        let settings = PgSettings {
            url: "postgres://u:hunter2@db/mail".into(),
            password: Some("hunter3".into()),
            pool_size: 4,
            statement_timeout: Duration::from_secs(5),
            node: "n1".into(),
            lease: Duration::from_secs(60),
            scan_interval: Duration::from_secs(30),
            ca_certificates: Vec::new(),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
    }
}
