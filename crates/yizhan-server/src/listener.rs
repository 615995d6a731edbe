//! Starting the server: the spool, the TLS certificate, the queue runner and one accept loop
//! per listener, with bounded connections (globally and per client address, the latter per
//! listener) and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use yizhan_delivery::maildir::Maildir;
use yizhan_delivery::mx::{DnsError, HickoryResolver, Ourselves};
use yizhan_delivery::route::RoutingTable;
use yizhan_delivery::smtp::{SmtpSettings, TlsClient};
use yizhan_spool::Spool;

use crate::conn::{self, Shared};
use crate::limits::{ConnectionLimits, Slot};
use crate::policy::ListenerPolicy;
use crate::queue::{OutboundSettings, QueueRunner, RunnerSettings, SystemClock};
use crate::reload::Reloader;
use crate::settings::{ListenerKind, ListenerSettings, Settings};
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
    /// The shared queue's database could not be reached or its schema used.
    #[error("cannot use the shared queue at {url}: {source}")]
    SharedQueue {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: yizhan_spool::SpoolError,
    },
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
/// does not serve until [`Server::run`] (or [`Server::start`]).
#[derive(Debug)]
pub struct Server {
    settings: Arc<Settings>,
    /// Each listener with the address it is bound to.
    listeners: Vec<(TcpListener, SocketAddr)>,
    spool: Spool,
    /// The shared queue, when `[store] kind = "postgres"`.
    store: Option<yizhan_spool::postgres::PgStore>,
    tls: Option<Arc<TlsStore>>,
    /// The control socket, bound before the server says it is ready (`None`: it could not
    /// be, logged; mail service goes on without it).
    control: Option<tokio::net::UnixListener>,
    /// The submission socket ([`crate::submit`]), bound before ready too.
    submit: Option<tokio::net::UnixListener>,
    /// The admin HTTP listener ([`crate::admin`]), if on and bound.
    admin: Option<TcpListener>,
}

/// The listeners bound and the TLS files read (what may need root), before anything in the
/// data directory is touched: [`Bound::open`] does that, after the privileges are dropped, so
/// root never works inside a directory the service account owns.
#[derive(Debug)]
pub struct Bound {
    settings: Settings,
    listeners: Vec<(TcpListener, SocketAddr)>,
    tls: Option<Arc<TlsStore>>,
    admin: Option<TcpListener>,
}

impl Server {
    /// Binds every listener and opens the spool (recovering unfinished work): [`Server::listen`]
    /// then [`Bound::open`] in one step, for a server that never changes its account.
    pub async fn bind(settings: Settings) -> Result<Server, ServerError> {
        Self::listen(settings).await?.open().await
    }

    /// Reads the TLS files and binds every listener.
    pub async fn listen(settings: Settings) -> Result<Bound, ServerError> {
        let tls = match &settings.tls {
            Some(tls) => Some(TlsStore::load(tls.clone())?),
            None => None,
        };
        warn_unusable_submission(&settings);
        let mut listeners = Vec::new();
        for listener in &settings.listeners {
            if listener.kind == ListenerKind::Submissions && tls.is_none() {
                return Err(ServerError::NoCertificate {
                    address: listener.address,
                });
            }
            let bind_error = |source| ServerError::Bind {
                address: listener.address,
                source,
            };
            let bound = TcpListener::bind(listener.address)
                .await
                .map_err(bind_error)?;
            let local = bound.local_addr().map_err(bind_error)?;
            listeners.push((bound, local));
        }
        let admin = crate::admin::bind(&settings.admin).await;
        Ok(Bound {
            settings,
            listeners,
            tls,
            admin,
        })
    }
}

impl Bound {
    /// The addresses bound (port 0 in the settings becomes a real port).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, local)| *local).collect()
    }

    /// Opens (and creates) the spool, the maildrop, the control and submission sockets in the
    /// data directory. Only once every listener is bound: a start that fails leaves no spool.
    pub async fn open(self) -> Result<Server, ServerError> {
        let Bound {
            settings,
            listeners,
            tls,
            admin,
        } = self;
        let spool_dir = settings.data_dir.join("spool");
        let (spool, recovery) = tokio::task::spawn_blocking(move || Spool::open(&spool_dir))
            .await
            .map_err(|e| ServerError::Task(e.to_string()))??;
        info!(?recovery, "spool opened");
        let store = match &settings.store {
            crate::settings::StoreSettings::Embedded => None,
            crate::settings::StoreSettings::Postgres(pg) => {
                let store =
                    yizhan_spool::postgres::PgStore::connect(pg)
                        .await
                        .map_err(|source| ServerError::SharedQueue {
                            url: yizhan_spool::postgres::redacted(&pg.url),
                            source,
                        })?;
                info!(url = %yizhan_spool::postgres::redacted(&pg.url), node = %pg.node, "shared queue on PostgreSQL");
                Some(store)
            }
        };
        // The maildrop before anyone is told the server is ready: `sendmail` run just after
        // must find it (a missing maildrop means no server uses this data directory).
        let maildrop = crate::pickup::maildrop_dir(&settings.data_dir);
        if let Err(e) = crate::pickup::make_maildrop(&maildrop) {
            warn!(dir = %maildrop.display(), error = %e, "cannot create the maildrop directory; `sendmail` will not work");
        }
        // The control socket too, so that `yizhan queue` works as soon as the server is ready
        // (binding it later, in a task, raced with a client started right after "ready").
        let socket = crate::control::socket_path(&settings.data_dir);
        let control = match crate::control::bind_control(&socket) {
            Ok(listener) => Some(listener),
            Err(e) => {
                warn!(path = %socket.display(), error = %e, "cannot bind the control socket; `yizhan queue` will not work");
                None
            }
        };
        // The submission socket, for local users who may not write into the maildrop.
        let submit = match crate::submit::bind(&settings.data_dir) {
            Ok(listener) => Some(listener),
            Err(e) => {
                warn!(path = %crate::submit::socket_path(&settings.data_dir).display(), error = %e, "cannot bind the submission socket; only root and the server's account can use `sendmail`");
                None
            }
        };
        Ok(Server {
            settings: Arc::new(settings),
            listeners,
            spool,
            store,
            tls,
            control,
            submit,
            admin,
        })
    }
}

impl Server {
    /// The address the admin listener is bound to, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The TLS certificate store, to reload it (SIGHUP) while the server runs.
    pub fn tls(&self) -> Option<Arc<TlsStore>> {
        self.tls.clone()
    }

    /// The addresses actually bound (port 0 in the settings becomes a real port).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, local)| *local).collect()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets sessions finish (or
    /// answers 421 after the grace period), stops the queue runner and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        self.start(shutdown)?.wait().await
    }

    /// Starts serving (call it inside the tokio runtime): the queue runner, the control socket
    /// and the maildrop pickup, the certificate watcher and one accept loop per listener. Each
    /// listener's [`Connector`] also serves streams that did not come from its socket, so tests
    /// run dialogues over in-memory pipes on the same server the binary runs; there is no other
    /// way to build one.
    pub fn start(self, shutdown: CancellationToken) -> Result<Running, ServerError> {
        let bound = self.local_addrs();
        let settings = self.settings;
        let queue = &settings.queue;
        let mut outbound = outbound_settings(&settings);
        outbound.ourselves.listeners.clone_from(&bound);
        // The system's CA certificates, loaded even when no route verifies yet: a reload may
        // add one, and the server can no longer read them then if the store is private.
        let roots = root_certificates();
        let maildir = Maildir::new(settings.data_dir.join("mail")).with_sync(queue.maildir_sync);
        let (runner_settings, clock) = (runner_settings(&settings), Arc::new(SystemClock));
        let (runner, intake) = match &self.store {
            Some(store) => (
                QueueRunner::new(store.clone(), maildir, runner_settings, clock),
                yizhan_spool::Intake::Shared {
                    spool: self.spool.clone(),
                    store: store.clone(),
                },
            ),
            None => (
                QueueRunner::new(self.spool.clone(), maildir, runner_settings, clock),
                yizhan_spool::Intake::Embedded(self.spool.clone()),
            ),
        };
        let runner = match &settings.store {
            crate::settings::StoreSettings::Postgres(pg) => {
                runner.with_rescan_interval(pg.scan_interval)
            }
            crate::settings::StoreSettings::Embedded => runner,
        };
        let runner = runner
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
            policies: policies(&settings, self.tls.is_some()),
            spool: intake.clone(),
            runner: runner.handle(),
            tls: self.tls.clone(),
            credentials: Arc::new(settings.credentials.clone()),
            password_checks: Arc::new(crate::auth::PasswordChecks::per_core()),
            limits: Arc::new(crate::limits::RateLimits::new(&settings.smtp.rate_limits)),
            checker: checker(&settings),
            held_budget: conn::held_budget(settings.smtp.max_held_bytes),
        });
        let live = Arc::new(ArcSwap::new(shared.clone()));
        let pickup_settings = Arc::new(ArcSwap::new(settings.clone()));
        if let Some(store) = &self.tls {
            tokio::spawn(store.clone().watch(shutdown.clone()));
        }
        let runner_stop = CancellationToken::new();
        let runner_task = tokio::spawn(runner.run(runner_stop.clone()));
        // The control socket (`yizhan queue`) and the maildrop pickup (`sendmail`).
        let (reload_requests, reloads) = tokio::sync::mpsc::channel(4);
        if let Some(admin) = self.admin {
            let queue = intake.queue_store();
            let control = crate::control::Control::new(queue.clone(), shared.runner.clone(), None)
                .with_reload(reload_requests.clone());
            let serving = crate::admin::serve(
                admin,
                pickup_settings.clone(),
                queue,
                control,
                shutdown.clone(),
            );
            tokio::spawn(serving);
        }
        let operations = tokio::spawn(crate::control::run_operations(
            pickup_settings.clone(),
            intake,
            shared.runner.clone(),
            self.control,
            self.submit,
            Some(reload_requests),
            shutdown.clone(),
        ));

        let tracker = TaskTracker::new();
        let limits = Arc::new(ConnectionLimits::new(settings.smtp.max_connections));
        let ids = Arc::new(AtomicU64::new(1));
        let mut connectors = Vec::new();
        for (index, (listener, local)) in self.listeners.into_iter().enumerate() {
            info!(address = %local, kind = %shared.policies[index].kind, "listening");
            let connector = Connector {
                live: live.clone(),
                index,
                local,
                ids: ids.clone(),
                tracker: tracker.clone(),
                shutdown: shutdown.clone(),
            };
            tracker.spawn(crate::accept::accept_loop(
                listener,
                connector.clone(),
                limits.clone(),
            ));
            connectors.push(connector);
        }
        let reloader = Reloader {
            live,
            pickup: pickup_settings,
            connections: limits,
            runner: shared.runner.clone(),
            listeners: bound,
        };
        Ok(Running {
            connectors,
            reloader,
            reloads: Some(reloads),
            shutdown,
            tracker,
            operations,
            runner_stop,
            runner_task,
        })
    }
}

/// A server that serves ([`Server::start`]) until its shutdown token is cancelled.
#[derive(Debug)]
pub struct Running {
    connectors: Vec<Connector>,
    reloader: Reloader,
    /// `reload` requests from the control socket, until taken.
    reloads: Option<tokio::sync::mpsc::Receiver<crate::control::ReloadAnswer>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    operations: JoinHandle<()>,
    runner_stop: CancellationToken,
    runner_task: JoinHandle<()>,
}

impl Running {
    /// One connector per listener, in the order of [`Server::local_addrs`].
    pub fn connectors(&self) -> &[Connector] {
        &self.connectors
    }

    /// What applies a new configuration to this server (SIGHUP, `yizhan reload`).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The `reload` requests of the control socket (`yizhan reload`), for whoever loads the
    /// configuration file; `None` once taken. Not taken, they are answered "unavailable".
    pub fn reload_requests(
        &mut self,
    ) -> Option<tokio::sync::mpsc::Receiver<crate::control::ReloadAnswer>> {
        self.reloads.take()
    }

    /// Waits until the shutdown token is cancelled, then stops accepting, lets sessions finish
    /// (or answers 421 after the grace period), stops the queue runner and returns.
    pub async fn wait(self) -> Result<(), ServerError> {
        // Nobody answers reload requests any more: they fail at once instead of waiting.
        drop(self.reloads);
        self.shutdown.cancelled().await;
        info!("shutting down: no new connections; waiting for sessions in flight");
        self.tracker.close();
        self.tracker.wait().await;
        if let Err(e) = self.operations.await {
            error!(error = %e, "queue operations task failed");
        }
        self.runner_stop.cancel();
        if let Err(e) = self.runner_task.await {
            error!(error = %e, "queue runner task failed");
        }
        info!("shutdown complete");
        Ok(())
    }
}

/// Serves the connections of one listener: the sockets its accept loop takes and any stream
/// handed to [`Connector::serve`], with the same settings, spool, queue and shutdown.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The configuration in force, replaced by a reload.
    pub(crate) live: Arc<ArcSwap<Shared>>,
    /// This listener's place in [`Settings::listeners`] (and [`Shared::policies`]).
    pub(crate) index: usize,
    pub(crate) local: SocketAddr,
    ids: Arc<AtomicU64>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Connector {
    /// The listener's address, which the sessions served here are told they arrived on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves `stream` as a connection from `peer` to this listener, in a task of the server
    /// (shutdown waits for it); e.g. one end of a `tokio::io::duplex` pipe in a test. The
    /// connection limits count only accepted sockets.
    pub fn serve<S>(&self, stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.spawn(stream, peer, self.local, None);
    }

    /// Serves `stream` in a task; `slot` (its place in the limits) is released at the end.
    /// Serves `stream` from `peer`, which connected to `local` (this listener, or the load
    /// balancer's frontend a PROXY header named).
    pub(crate) fn spawn<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        local: SocketAddr,
        slot: Option<Slot>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        // The session keeps this configuration until it ends, whatever a reload does.
        let shared = self.live.load_full();
        let policy = shared.policies[self.index].clone();
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            conn::serve(stream, peer, local, id, shared, policy, shutdown).await;
            drop(slot);
        });
    }
}

/// What one listener offers under `settings`.
pub(crate) fn listener_policy(
    settings: &Settings,
    listener: &ListenerSettings,
    tls_available: bool,
) -> ListenerPolicy {
    ListenerPolicy {
        kind: listener.kind,
        smtp: settings.smtp_for(listener),
        auth: settings.auth_for(listener),
        tls_available,
        has_credentials: !settings.credentials.is_empty(),
        checks: settings.checks_for(listener),
        record: listener.overrides.record,
    }
}

/// Every listener's policy, in order.
pub(crate) fn policies(settings: &Settings, tls_available: bool) -> Vec<Arc<ListenerPolicy>> {
    let policy = |l| Arc::new(listener_policy(settings, l, tls_available));
    settings.listeners.iter().map(policy).collect()
}

/// The runner's schedule from the configuration's `[queue]`.
pub(crate) fn runner_settings(settings: &Settings) -> RunnerSettings {
    RunnerSettings {
        concurrency: settings.queue.concurrency,
        retry: settings.queue.retry,
        hostname: settings.hostname.clone(),
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
            lmtp: d.lmtp.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
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

/// The inbound checks' DNS client, on delivery's name servers (`None`, logged, if it cannot be
/// set up: checked mail is then deferred).
fn checker(settings: &Settings) -> Option<Arc<crate::checks::Checker>> {
    let d = &settings.delivery;
    match crate::checks::Checker::new(&d.dns_servers, d.dns_timeout) {
        Ok(checker) => Some(Arc::new(checker)),
        Err(error) => {
            error!(%error, "inbound checks cannot run; mail they apply to is deferred (451)");
            None
        }
    }
}

/// Warns about each submission listener where AUTH cannot succeed (at start and at each
/// reload: a reload that removes the last password makes one useless).
pub fn warn_unusable_submission(settings: &Settings) {
    for listener in &settings.listeners {
        let policy = listener_policy(settings, listener, settings.tls.is_some());
        if listener.kind != ListenerKind::Smtp
            && !crate::policy::auth_possible(&policy, &settings.credentials)
        {
            warn!(address = %listener.address, "submission listener where AUTH cannot succeed (no passwords, or no TLS while auth.require_tls)");
        }
    }
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
