//! Starting the server: the spool, the TLS certificate, the queue runner and one accept loop
//! per listener, with bounded connections (globally and per client address, the latter per
//! listener) and graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use yizhan_delivery::maildir::Maildir;
use yizhan_delivery::mx::{DnsError, HickoryResolver, Ourselves};
use yizhan_delivery::route::{RoutingTable, TlsPolicy};
use yizhan_delivery::smtp::{SmtpSettings, TlsClient};
use yizhan_proto::reply::Reply;
use yizhan_spool::Spool;
use yizhan_spool::schedule::RetryPolicy;

use crate::conn::{self, Shared};
use crate::policy::ListenerPolicy;
use crate::queue::{OutboundSettings, QueueRunner, RunnerSettings, SystemClock};
use crate::settings::{ListenerKind, Settings};
use crate::tls::{TlsError, TlsStore};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address from the configuration.
        address: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The spool could not be opened.
    #[error("cannot open the spool: {0}")]
    Spool(#[from] yizhan_spool::SpoolError),
    /// A background task failed.
    #[error("internal task failed: {0}")]
    Task(String),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The DNS resolver for outbound delivery could not be set up.
    #[error("DNS resolver: {0}")]
    Resolver(#[from] DnsError),
    /// The TLS client for outbound delivery could not be set up.
    #[error("outbound TLS client: {0}")]
    TlsClient(#[from] rustls::Error),
    /// An implicit-TLS listener was configured without a certificate.
    #[error("listener {address} (submissions) needs a [tls] certificate")]
    NoCertificate {
        /// The listener's address.
        address: SocketAddr,
    },
}

/// A server whose listeners are bound (so tests and the CLI know the real addresses) but which
/// does not serve until [`Server::run`].
#[derive(Debug)]
pub struct Server {
    settings: Arc<Settings>,
    listeners: Vec<(TcpListener, Arc<ListenerPolicy>)>,
    spool: Spool,
    tls: Option<Arc<TlsStore>>,
}

impl Server {
    /// Opens the spool (recovering unfinished work) and binds every listener.
    pub async fn bind(settings: Settings) -> Result<Server, ServerError> {
        let tls = match &settings.tls {
            Some(tls) => Some(TlsStore::load(tls.clone())?),
            None => None,
        };
        let spool_dir = settings.data_dir.join("spool");
        let (spool, recovery) = tokio::task::spawn_blocking(move || Spool::open(&spool_dir))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))??;
        info!(?recovery, "spool opened");
        // The maildrop before anyone is told the server is ready: `sendmail` run just after
        // must find it (a missing maildrop means no server uses this data directory).
        let maildrop = crate::pickup::maildrop_dir(&settings.data_dir);
        if let Err(e) = crate::pickup::make_maildrop(&maildrop) {
            warn!(dir = %maildrop.display(), error = %e, "cannot create the maildrop directory; `sendmail` will not work");
        }
        let mut listeners = Vec::new();
        for listener in &settings.listeners {
            if listener.kind == ListenerKind::Submissions && tls.is_none() {
                return Err(ServerError::NoCertificate {
                    address: listener.address,
                });
            }
            let policy = Arc::new(ListenerPolicy {
                kind: listener.kind,
                smtp: settings.smtp_for(listener),
                auth: settings.auth_for(listener),
                tls_available: tls.is_some(),
                has_credentials: !settings.credentials.is_empty(),
            });
            if !crate::policy::auth_possible(&policy, &settings.credentials)
                && listener.kind != ListenerKind::Smtp
            {
                warn!(address = %listener.address, "submission listener where AUTH cannot succeed (no passwords, or no TLS while auth.require_tls)");
            }
            let bound = TcpListener::bind(listener.address)
                .await
                .map_err(|source| ServerError::Bind {
                    address: listener.address,
                    source,
                })?;
            listeners.push((bound, policy));
        }
        Ok(Server {
            settings: Arc::new(settings),
            listeners,
            spool,
            tls,
        })
    }

    /// The TLS certificate store, to reload it (SIGHUP) while the server runs.
    pub fn tls(&self) -> Option<Arc<TlsStore>> {
        self.tls.clone()
    }

    /// The addresses actually bound (port 0 in the settings becomes a real port).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets sessions finish (or
    /// answers 421 after the grace period), stops the queue runner and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        self.run_with(shutdown, None).await
    }

    /// [`Server::run`], and also serves the connections that arrive on `memory`: in-memory
    /// streams (`tokio::io::duplex`) served exactly as a connection to the first listener
    /// from the given peer. Tests run golden dialogues this way on the real session, policy,
    /// directory and spool.
    pub async fn run_with(
        self,
        shutdown: CancellationToken,
        memory: Option<MemoryConnections>,
    ) -> Result<(), ServerError> {
        let bound = self.local_addrs();
        let settings = self.settings;
        let queue = &settings.queue;
        let mut outbound = outbound_settings(&settings);
        outbound.ourselves.listeners = bound;
        // The system's CA certificates (some hundred KiB parsed) only if a policy verifies.
        let roots = if verifies_certificates(&outbound.routing) {
            root_certificates()
        } else {
            debug!(
                "no outbound TLS policy verifies certificates; system CA certificates not loaded"
            );
            rustls::RootCertStore::empty()
        };
        let runner = QueueRunner::new(
            self.spool.clone(),
            Maildir::new(settings.data_dir.join("mail")).with_sync(queue.maildir_sync),
            RunnerSettings {
                concurrency: queue.concurrency,
                retry: RetryPolicy {
                    initial: queue.retry_initial,
                    max_backoff: queue.retry_max_backoff,
                    give_up_after: queue.give_up_after,
                },
                hostname: settings.hostname.clone(),
            },
            Arc::new(SystemClock),
        )
        .with_outbound(outbound)
        .with_directory(settings.directory.clone())
        .with_tls(TlsClient::new(roots)?);
        let delivery = &settings.delivery;
        let runner = if delivery.dns_servers.is_empty() {
            runner
        } else {
            info!(servers = ?delivery.dns_servers, "DNS servers for outbound delivery");
            let resolver =
                HickoryResolver::with_servers(&delivery.dns_servers, delivery.dns_timeout)?;
            runner.with_resolver(Arc::new(resolver))
        };
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            spool: self.spool.clone(),
            runner: runner.handle(),
            tls: self.tls.clone(),
            credentials: Arc::new(settings.credentials.clone()),
        });
        if let Some(store) = &self.tls {
            tokio::spawn(store.clone().watch(shutdown.clone()));
        }
        let runner_stop = CancellationToken::new();
        let runner_task = tokio::spawn(runner.run(runner_stop.clone()));
        // The control socket (`yizhan queue`) and the maildrop pickup (`sendmail`).
        let operations = tokio::spawn(crate::control::run_operations(
            settings.clone(),
            self.spool.clone(),
            shared.runner.clone(),
            shutdown.clone(),
        ));

        let tracker = TaskTracker::new();
        let limits = Arc::new(Limits::new(settings.smtp.max_connections));
        let ids = Arc::new(AtomicU64::new(1));
        if let (Some(memory), Some((_, policy))) = (memory, self.listeners.first()) {
            tracker.spawn(memory_loop(
                memory,
                policy.clone(),
                shared.clone(),
                ids.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        for (listener, policy) in self.listeners {
            if let Ok(address) = listener.local_addr() {
                info!(%address, kind = %policy.kind, "listening");
            }
            tracker.spawn(accept_loop(
                listener,
                policy,
                shared.clone(),
                limits.clone(),
                ids.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        shutdown.cancelled().await;
        info!("shutting down: no new connections; waiting for sessions in flight");
        tracker.close();
        tracker.wait().await;
        if let Err(e) = operations.await {
            error!(error = %e, "queue operations task failed");
        }
        runner_stop.cancel();
        if let Err(e) = runner_task.await {
            error!(error = %e, "queue runner task failed");
        }
        info!("shutdown complete");
        Ok(())
    }
}

/// The runner's outbound settings from the configuration's `[delivery]` and `[[smarthost]]`.
pub fn outbound_settings(settings: &Settings) -> OutboundSettings {
    let d = &settings.delivery;
    let defaults = OutboundSettings::default();
    OutboundSettings {
        routing: RoutingTable {
            local_names: d.our_names(&settings.hostname),
            smarthosts: d
                .smarthosts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            default_smarthost: d.default_smarthost.clone(),
            tls: d.domain_tls.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            default_tls: d.tls,
            honour_source_routes: d.honour_source_routes,
        },
        smtp: SmtpSettings {
            helo_name: settings.hostname.clone(),
            port: d.remote_port,
            connect_timeout: d.connect_timeout,
            greeting_timeout: d.greeting_timeout,
            command_timeout: d.command_timeout,
            data_block_timeout: d.data_block_timeout,
            data_end_timeout: d.data_end_timeout,
            max_hosts: d.max_mx_hosts,
        },
        per_destination: d.per_destination,
        connection_idle: d.connection_idle,
        delay_warning: d.delay_warning,
        held_domains: settings.turn_domains.values().flatten().cloned().collect(),
        ourselves: Ourselves {
            names: d.our_names(&settings.hostname),
            // The listeners' sockets are known once they are bound (`Server::run`).
            listeners: Vec::new(),
        },
        ..defaults
    }
}

/// Whether any outbound route can have [`TlsPolicy::Verify`] (the default or a domain's MX
/// policy, or a smarthost's), i.e. whether the trusted roots are ever consulted.
fn verifies_certificates(routing: &RoutingTable) -> bool {
    routing.default_tls == TlsPolicy::Verify
        || routing.tls.values().any(|t| *t == TlsPolicy::Verify)
        || routing
            .smarthosts
            .values()
            .chain(&routing.default_smarthost)
            .any(|h| h.tls == TlsPolicy::Verify)
}

/// The certificate authorities trusted for `tls = "verify"`: the operating system's store
/// (rustls-native-certs). Certificates that do not parse are skipped; a missing store leaves
/// the set empty, so only verification fails, never opportunistic TLS.
fn root_certificates() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        warn!(%error, "cannot load some system CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    debug!(added, ignored, "system CA certificates loaded");
    roots
}

/// Connection limits: a global semaphore and a count per client address.
#[derive(Debug)]
struct Limits {
    global: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds a connection's place in the limits; released on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    limits: Arc<Limits>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Limits {
    fn new(max: usize) -> Self {
        Limits {
            global: Arc::new(Semaphore::new(max.max(1))),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// A place for a connection from `ip`, unless `ip` already holds `max_per_ip` (the
    /// listener's limit) or the server is full.
    fn acquire(self: &Arc<Self>, ip: IpAddr, max_per_ip: usize) -> Option<Slot> {
        let permit = self.global.clone().try_acquire_owned().ok()?;
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= max_per_ip.max(1) {
            return None;
        }
        *count += 1;
        Some(Slot {
            _permit: permit,
            ip,
            limits: self.clone(),
        })
    }
}

/// In-memory connections for [`Server::run_with`]: a stream and the peer it stands for.
pub type MemoryConnections = tokio::sync::mpsc::Receiver<(tokio::io::DuplexStream, SocketAddr)>;

async fn memory_loop(
    mut memory: MemoryConnections,
    policy: Arc<ListenerPolicy>,
    shared: Arc<Shared>,
    ids: Arc<AtomicU64>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            next = memory.recv() => match next {
                Some(pair) => pair,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tracker.spawn(conn::serve(
            stream,
            peer,
            id,
            shared.clone(),
            policy.clone(),
            shutdown.clone(),
        ));
    }
}

async fn accept_loop(
    listener: TcpListener,
    policy: Arc<ListenerPolicy>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    ids: Arc<AtomicU64>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted: std::io::Result<(TcpStream, SocketAddr)> = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning (mini-redis does the same).
                warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = limits.acquire(peer.ip(), policy.smtp.max_connections_per_ip) else {
            warn!(%peer, "connection refused: too many connections");
            let reply = Reply::too_many_connections(&shared.settings.hostname);
            tracker.spawn(conn::refuse(stream, reply));
            continue;
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let policy = policy.clone();
        tracker.spawn(async move {
            conn::serve(stream, peer, id, shared, policy, shutdown).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use yizhan_delivery::route::Smarthost;

    use super::*;

    fn smarthost(tls: TlsPolicy) -> Smarthost {
        Smarthost {
            host: "smart.example".into(),
            port: 587,
            tls,
            auth: None,
        }
    }

    /// The system roots are loaded only when some route verifies certificates (RFC 3207
    /// STARTTLS with `tls = "verify"`); every place a policy can come from is covered.
    #[test]
    fn verifies_certificates_when_any_route_does() {
        type Setup = fn(&mut RoutingTable);
        let cases: [(&str, Setup, bool); 7] = [
            ("defaults (opportunistic MX)", |_| {}, false),
            (
                "default MX verify",
                |t| t.default_tls = TlsPolicy::Verify,
                true,
            ),
            (
                "one domain's MX verify",
                |t| {
                    t.tls.insert("a.example".into(), TlsPolicy::Require);
                    t.tls.insert("b.example".into(), TlsPolicy::Verify);
                },
                true,
            ),
            (
                "domain MX require only",
                |t| {
                    t.tls.insert("a.example".into(), TlsPolicy::Require);
                },
                false,
            ),
            (
                "domain smarthost verify",
                |t| {
                    let host = smarthost(TlsPolicy::Verify);
                    t.smarthosts.insert("a.example".into(), host);
                },
                true,
            ),
            (
                "default smarthost verify",
                |t| t.default_smarthost = Some(smarthost(TlsPolicy::Verify)),
                true,
            ),
            (
                "smarthosts without verify",
                |t| {
                    t.default_smarthost = Some(smarthost(TlsPolicy::Opportunistic));
                    let host = smarthost(TlsPolicy::None);
                    t.smarthosts.insert("a.example".into(), host);
                },
                false,
            ),
        ];
        for (name, setup, want) in cases {
            let mut table = RoutingTable::default();
            setup(&mut table);
            assert_eq!(verifies_certificates(&table), want, "{name}");
        }
    }
}
