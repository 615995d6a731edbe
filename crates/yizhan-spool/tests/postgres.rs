//! The shared queue against a real PostgreSQL (Debian's package): `initdb` and `pg_ctl` in a
//! temporary directory, no system service. Skipped, with the reason, when PostgreSQL's
//! binaries are not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use yizhan_spool::postgres::lease::Control;
use yizhan_spool::postgres::{CHUNK, PgSettings, PgStore};
use yizhan_spool::{ClientInfo, Envelope, LocalMailbox, QueueId, Recipient, SpoolError};

/// A private PostgreSQL server for one test.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// The newest installed PostgreSQL's binaries.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Runs a PostgreSQL tool as the `postgres` account when we are root (initdb refuses root).
fn run(bin: &Path, tool: &str, args: &[&str]) {
    let root = rustix::process::geteuid().is_root();
    let program = bin.join(tool);
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let out = command.args(args).output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    fn start() -> Option<Postgres> {
        Postgres::start_with(|_| String::new())
    }

    /// Started with more server options, which `options` may write files for (in the
    /// server's directory, given; owned by the server's account).
    fn start_with(options: impl FnOnce(&Path) -> String) -> Option<Postgres> {
        let Some(bin) = binaries() else {
            eprintln!("skipped: PostgreSQL is not installed (/usr/lib/postgresql/*/bin)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if rustix::process::geteuid().is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        let (data_s, dir_s) = (data.to_str().unwrap(), dir.path().to_str().unwrap());
        run(
            &bin,
            "initdb",
            &["-D", data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let more = options(dir.path());
        if rustix::process::geteuid().is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let options = format!("-p {port} -k {dir_s} -c listen_addresses=127.0.0.1 {more}");
        let log = dir.path().join("log");
        run(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data_s,
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Some(Postgres { dir, bin, port })
    }

    /// A node on this database, its claims lasting a minute.
    async fn store(&self, node: &str) -> PgStore {
        PgStore::connect(&self.settings(node, MINUTE))
            .await
            .unwrap()
    }

    fn settings(&self, node: &str, lease: Duration) -> PgSettings {
        PgSettings {
            url: format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            password: None,
            pool_size: 4,
            statement_timeout: Duration::from_secs(10),
            node: node.into(),
            lease,
            scan_interval: Duration::from_secs(30),
            ca_certificates: Vec::new(),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        run(
            &self.bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

fn envelope(due: i64) -> Envelope {
    Envelope {
        id: QueueId::nil(),
        received_at: 1_700_000_000,
        size: 0,
        reverse_path: "<sender@client.example>".parse().unwrap(),
        envid: None,
        ret: None,
        body: None,
        smtputf8: false,
        client: ClientInfo::default(),
        recipients: vec![Recipient::to(
            "user@test.example".parse().unwrap(),
            Some(LocalMailbox {
                domain: "test.example".into(),
                local: "user".into(),
            }),
            due,
        )],
        held: false,
    }
}

const NOW: i64 = 1_800_000_000;
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_queue_keeps_claims_outcomes_and_operators_apart() {
    let Some(pg) = Postgres::start() else { return };
    let a = pg.store("node-a").await;
    let b = pg.store("node-b").await;

    // The 250 promise: a body over three chunks and its envelope, read back whole.
    let body: Vec<u8> = (0..CHUNK * 2 + 1000).map(|i| (i % 251) as u8).collect();
    let stored = a.enqueue(&body, envelope(NOW - 10)).await.unwrap();
    assert_eq!(stored.size, body.len() as u64);
    assert_eq!(b.body(&stored.id).await.unwrap(), body);
    // Delivered from a temporary file, never whole in memory; a one-chunk body from memory.
    {
        use std::io::Read as _;
        use yizhan_spool::{Body, QueueStore};
        let mut opened = QueueStore::open_body(&b, &stored.id).await.unwrap();
        assert!(matches!(opened, Body::File(_)));
        let mut read = Vec::new();
        opened.read_to_end(&mut read).unwrap();
        assert_eq!(read, body);
        let small = a.enqueue(b"small", envelope(NOW + 7200)).await.unwrap();
        let opened = QueueStore::open_body(&b, &small.id).await.unwrap();
        assert!(matches!(opened, Body::Inline(_)));
        a.delete(&small.id).await.unwrap();
    }
    assert_eq!(b.load(&stored.id).await.unwrap(), stored);
    let index = b.schedule_index().await.unwrap();
    assert_eq!(index, vec![(stored.id.clone(), Some(NOW - 10), false)]);

    // Due work is claimed by one node only; a later one is not due yet.
    for _ in 0..19 {
        a.enqueue(b"Subject: x\r\n\r\nhi\r\n", envelope(NOW - 5))
            .await
            .unwrap();
    }
    a.enqueue(b"later", envelope(NOW + 3600)).await.unwrap();
    let (ca, cb) = tokio::join!(a.claim_due(NOW, 8), b.claim_due(NOW, 100));
    let (ca, cb) = (ca.unwrap(), cb.unwrap());
    assert_eq!(ca.len() + cb.len(), 20, "every due message claimed once");
    let ids_a: Vec<&QueueId> = ca.iter().map(|c| &c.envelope.id).collect();
    assert!(cb.iter().all(|c| !ids_a.contains(&&c.envelope.id)));
    assert!(
        a.claim_due(NOW, 100).await.unwrap().is_empty(),
        "all leased"
    );

    // The holder records outcomes by compare-and-set; the other node cannot.
    let mine = ca.first().or(cb.first()).unwrap().clone();
    let (holder, other) = if ca.iter().any(|c| c.envelope.id == mine.envelope.id) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let mut done = mine.envelope.clone();
    done.recipients[0].next_attempt = NOW + 600;
    assert!(matches!(
        other.record(&mine, &done).await,
        Err(SpoolError::Conflict(_))
    ));
    let v = holder.record(&mine, &done).await.unwrap();
    assert_eq!(v, mine.version + 1);
    // A second write at the old version is a conflict too.
    assert!(matches!(
        holder.record(&mine, &done).await,
        Err(SpoolError::Conflict(_))
    ));

    // An operator holds it from the other node while it is claimed: the holder's next
    // write conflicts; held, it is never due; released and free, it is claimed again.
    let current = yizhan_spool::postgres::lease::Claimed {
        envelope: done.clone(),
        version: v,
    };
    assert!(other.control(&done.id, Control::Hold).await.unwrap());
    assert!(matches!(
        holder.record(&current, &done).await,
        Err(SpoolError::Conflict(_))
    ));
    assert!(holder.load(&done.id).await.unwrap().held);
    holder.release(&done.id).await.unwrap();
    assert!(
        other
            .claim_due(NOW + 601, 100)
            .await
            .unwrap()
            .iter()
            .all(|c| c.envelope.id != done.id)
    );
    assert!(other.control(&done.id, Control::Release).await.unwrap());
    let again = other.claim_due(NOW + 601, 100).await.unwrap();
    let again = again
        .iter()
        .find(|c| c.envelope.id == done.id)
        .expect("claimable again");

    // Finished: removed with its body, by the holder at its version only.
    assert!(matches!(
        holder.remove_claimed(&done.id, again.version).await,
        Err(SpoolError::Conflict(_))
    ));
    other.remove_claimed(&done.id, again.version).await.unwrap();
    assert!(matches!(
        a.load(&done.id).await,
        Err(SpoolError::NotFound(_))
    ));
    assert!(matches!(
        a.body(&done.id).await,
        Err(SpoolError::NotFound(_))
    ));

    // An operator deletes a claimed message: gone, and the holder's write conflicts.
    let victim = ca
        .iter()
        .chain(cb.iter())
        .find(|c| c.envelope.id != done.id)
        .unwrap()
        .clone();
    assert!(a.delete(&victim.envelope.id).await.unwrap());
    let holder = if ca.iter().any(|c| c.envelope.id == victim.envelope.id) {
        &a
    } else {
        &b
    };
    assert!(matches!(
        holder.record(&victim, &victim.envelope).await,
        Err(SpoolError::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_claims_expire_and_another_takes_over() {
    let Some(pg) = Postgres::start() else { return };
    // Node A's leases end at once: as if it died right after claiming.
    let a = PgStore::connect(&pg.settings("node-a", Duration::ZERO))
        .await
        .unwrap();
    let b = pg.store("node-b").await;
    let stored = a.enqueue(b"x", envelope(NOW - 1)).await.unwrap();
    let claimed_a = a.claim_due(NOW, 10).await.unwrap();
    assert_eq!(claimed_a.len(), 1);
    let claimed_b = b.claim_due(NOW, 10).await.unwrap();
    assert_eq!(claimed_b.len(), 1, "A's lease expired: B takes the message");
    // A, back from the dead, can neither renew nor write.
    assert!(!a.renew(&claimed_a[0]).await.unwrap());
    assert!(matches!(
        a.record(&claimed_a[0], &stored).await,
        Err(SpoolError::Conflict(_))
    ));
    assert!(b.renew(&claimed_b[0]).await.unwrap());
    b.record(&claimed_b[0], &stored).await.unwrap();

    // A message A received and committed is A's from the start; but A, whose claims last no
    // time at all here, does not trust that claim for its first attempt: B has it already.
    use yizhan_spool::QueueStore;
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = yizhan_spool::Spool::open(&dir.path().join("spool")).unwrap();
    let mut incoming = spool.create().unwrap();
    incoming.write(b"Subject: received\r\n\r\nhi\r\n").unwrap();
    let id = a
        .commit_incoming(incoming, envelope(NOW - 1))
        .await
        .unwrap();
    assert!(
        QueueStore::claim(&b, &id).await.unwrap().is_some(),
        "A's claim has expired"
    );
    assert!(
        QueueStore::claim(&a, &id).await.unwrap().is_none(),
        "B holds it now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_migrated_once_and_a_newer_one_refused() {
    let Some(pg) = Postgres::start() else { return };
    let settings = pg.settings("node-a", MINUTE);
    // Three nodes starting at once: one migrates, the others find it done.
    let (x, y, z) = tokio::join!(
        PgStore::connect(&settings),
        PgStore::connect(&settings),
        PgStore::connect(&settings)
    );
    let store = x.unwrap();
    y.unwrap();
    z.unwrap();
    // An orphan chunk (a session that died before its commit) is swept once old enough.
    let (client, conn) = tokio_postgres::connect(&settings.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "INSERT INTO yizhan_bodies (id, chunk, data, created_at)
             VALUES ('orphan', 0, '\\x00', now() - interval '2 hours')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .sweep_orphans(Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    // A queue written by a yizhan of schema 1 (every body in chunks, none in the message's
    // row) is migrated with its mail, which is read and removed as before.
    let small = store
        .enqueue(b"Subject: v1\r\n\r\nhi\r\n", envelope(NOW))
        .await
        .unwrap();
    client
        .batch_execute(
            "UPDATE yizhan_messages SET body = NULL;
             INSERT INTO yizhan_bodies (id, chunk, data)
                 SELECT id, 0, convert_to('Subject: v1' || chr(13) || chr(10) || chr(13)
                     || chr(10) || 'hi' || chr(13) || chr(10), 'UTF8') FROM yizhan_messages;
             ALTER TABLE yizhan_messages DROP COLUMN body;
             UPDATE yizhan_schema SET version = 1",
        )
        .await
        .unwrap();
    let upgraded = PgStore::connect(&settings).await.unwrap();
    assert_eq!(
        upgraded.body(&small.id).await.unwrap(),
        b"Subject: v1\r\n\r\nhi\r\n"
    );
    upgraded.remove_claimed(&small.id, 0).await.unwrap();
    let left: i64 = client
        .query_one("SELECT count(*) FROM yizhan_bodies", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "its chunks went with it");
    client
        .execute("UPDATE yizhan_schema SET version = 99", &[])
        .await
        .unwrap();
    match PgStore::connect(&settings).await {
        Err(e @ SpoolError::SchemaTooNew { found: 99, .. }) => {
            assert!(e.to_string().contains("upgrade yizhan"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_places_are_counted_across_nodes() {
    use yizhan_spool::QueueStore;
    let Some(pg) = Postgres::start() else { return };
    let a = pg.store("node-a").await;
    let b = pg.store("node-b").await;
    // Two places for mx:example.org: one on each node, then none for anybody.
    let first = a.destination_permit("mx:example.org", 2).await.unwrap();
    let second = b.destination_permit("mx:example.org", 2).await.unwrap();
    assert!(first.is_some() && second.is_some());
    assert!(
        a.destination_permit("mx:example.org", 2)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        b.destination_permit("mx:example.org", 2)
            .await
            .unwrap()
            .is_none()
    );
    // Another destination is counted on its own.
    assert!(
        b.destination_permit("mx:other.example", 2)
            .await
            .unwrap()
            .is_some()
    );
    // A place given back is free again (the unlock runs as a task: bounded wait).
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        again = b.destination_permit("mx:example.org", 2).await.unwrap();
        if again.is_some() {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(again.is_some(), "the place given back by node A");
    // A node that dies frees its places with its connections.
    drop(second);
    drop(b);
    let c = pg.store("node-c").await;
    let mut got = None;
    for _ in 0..100 {
        got = c.destination_permit("mx:example.org", 2).await.unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(got.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_messages_are_removed_in_batches_and_only_at_their_version() {
    use yizhan_spool::QueueStore;
    let Some(pg) = Postgres::start() else { return };
    let a = pg.store("node-a").await;
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = yizhan_spool::Spool::open(&dir.path().join("spool")).unwrap();
    // Received and committed by A (small bodies in their rows, one over a chunk), claimed for
    // their first attempt without a read, then finished together.
    let mut ids = Vec::new();
    for n in 0..40 {
        let mut incoming = spool.create().unwrap();
        let body = match n {
            0 => vec![b'x'; CHUNK + 10],
            _ => format!("Subject: {n}\r\n\r\nhi\r\n").into_bytes(),
        };
        incoming.write(&body).unwrap();
        let id = a
            .commit_incoming(incoming, envelope(NOW - 1))
            .await
            .unwrap();
        assert!(QueueStore::claim(&a, &id).await.unwrap().is_some());
        assert_eq!(a.body(&id).await.unwrap(), body);
        ids.push(id);
    }
    // One changed by an operator meanwhile: its removal at the old version must not happen.
    assert!(a.control(&ids[1], Control::Hold).await.unwrap());
    for id in &ids {
        QueueStore::remove_soon(&a, id);
    }
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = QueueStore::schedule_index(&a).await.unwrap().len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left, 1, "all but the changed one removed");
    assert!(a.load(&ids[1]).await.unwrap().held);
    assert!(matches!(
        a.body(&ids[0]).await,
        Err(SpoolError::NotFound(_))
    ));
    // No chunk of the large body is left behind.
    assert_eq!(a.sweep_orphans(Duration::ZERO).await.unwrap(), 0);
}

/// A test CA, and a certificate it signed for 127.0.0.1 and localhost (PEM, with its key).
fn certificates() -> (rustls::pki_types::CertificateDer<'static>, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.der().clone(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_the_database_are_encrypted_and_the_server_verified() {
    let (ca, cert, key) = certificates();
    let Some(pg) = Postgres::start_with(|dir| {
        std::fs::write(dir.join("server.crt"), &cert).unwrap();
        std::fs::write(dir.join("server.key"), &key).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(dir.join("server.key"), mode).unwrap();
        format!(
            "-c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
            dir.display()
        )
    }) else {
        return;
    };
    let plain = pg.settings("node-a", MINUTE);
    let settings = |sslmode: &str, trusted: bool| PgSettings {
        url: format!("{}?sslmode={sslmode}", plain.url),
        ca_certificates: if trusted {
            vec![ca.clone()]
        } else {
            Vec::new()
        },
        ..plain.clone()
    };

    // Trusted (the CA from ca_file): the node's connections are TLS, and mail goes through.
    let mut stores = Vec::new();
    for mode in ["require", "prefer"] {
        let store = PgStore::connect(&settings(mode, true)).await.unwrap();
        let stored = store.enqueue(b"over TLS", envelope(NOW)).await.unwrap();
        assert_eq!(store.body(&stored.id).await.unwrap(), b"over TLS");
        stores.push(store);
    }
    let (client, conn) = tokio_postgres::connect(&plain.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let encrypted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.application_name = 'yizhan node-a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "no encrypted connection of node-a");

    // Not trusted: refused, with what to do, whether TLS is required or only preferred.
    for mode in ["require", "prefer"] {
        match PgStore::connect(&settings(mode, false)).await {
            Err(SpoolError::Database(text)) => {
                assert!(text.contains("certificate"), "{text}");
                assert!(text.contains("ca_file"), "{text}");
            }
            other => panic!("{mode}: {other:?}"),
        }
    }
    // Turned off on purpose: clear text.
    PgStore::connect(&settings("disable", false)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_of_a_server_without_it_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let mut settings = pg.settings("node-a", MINUTE);
    settings.url.push_str("?sslmode=require");
    let e = PgStore::connect(&settings).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("tls"), "{e}");
    // Preferred, it is clear text with a server that has none.
    settings.url = settings.url.replace("require", "prefer");
    PgStore::connect(&settings).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_skips_what_another_holds_or_is_claiming() {
    use yizhan_spool::QueueStore;
    let Some(pg) = Postgres::start() else { return };
    let a = pg.store("node-a").await;
    let b = pg.store("node-b").await;
    // Received by A: claimed by A from its commit, so not in B's schedule at all.
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = yizhan_spool::Spool::open(&dir.path().join("spool")).unwrap();
    let mut incoming = spool.create().unwrap();
    incoming.write(b"Subject: a's\r\n\r\nhi\r\n").unwrap();
    let ours = a
        .commit_incoming(incoming, envelope(NOW - 1))
        .await
        .unwrap();
    let free = a.enqueue(b"free", envelope(NOW - 1)).await.unwrap();
    let seen: Vec<QueueId> = QueueStore::schedule_index(&b)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(seen, vec![free.id.clone()], "A's claim is A's to finish");
    assert_eq!(QueueStore::schedule_index(&a).await.unwrap().len(), 2);
    assert!(
        QueueStore::claim(&b, &ours).await.unwrap().is_none(),
        "nor can B claim it"
    );

    // A row another session is claiming (locked) is skipped at once, not waited for.
    let (client, conn) =
        tokio_postgres::connect(&pg.settings("x", MINUTE).url, tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM yizhan_messages WHERE id = '{}' FOR UPDATE",
            free.id
        ))
        .await
        .unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(5), QueueStore::claim(&b, &free.id))
        .await
        .expect("a locked row is skipped, not waited for");
    assert!(claimed.unwrap().is_none());
    client.batch_execute("ROLLBACK").await.unwrap();
    assert!(QueueStore::claim(&b, &free.id).await.unwrap().is_some());
}
