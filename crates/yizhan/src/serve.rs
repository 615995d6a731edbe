//! `yizhan serve`: runs the server with validated settings until SIGTERM or SIGINT; SIGHUP
//! and `yizhan reload` read the configuration again and apply it (see
//! [`yizhan_server::reload`]).

use tokio_util::sync::CancellationToken;
use yizhan_server::listener::Server;
use yizhan_server::reload::Reloader;
use yizhan_server::settings::Settings;

use yizhan::config::{self, Overrides, Source};

use crate::{private, privileges};

/// Opens the spool, binds the listeners and serves until SIGTERM or SIGINT, then shuts down
/// gracefully (sessions in flight get `shutdown_grace` to finish, then 421).
pub async fn run(settings: Settings, reload: Reload) -> anyhow::Result<()> {
    use anyhow::Context as _;

    for line in config::summary(&settings) {
        tracing::info!("{line}");
    }
    raise_open_files_limit(settings.smtp.max_connections);
    // Install the handlers before saying "ready", so a signal sent after it is never lost.
    let mut signals = Signals::install()?;
    let data_dir = settings.data_dir.clone();
    // Who to become, checked before anything is made (a missing account is an error now,
    // not after the spool exists).
    let account = privileges::account(&settings.user, settings.group.as_deref())?;
    if let Some(account) = &account {
        privileges::check_reachable(&data_dir, account)?;
    }
    private::restrict_umask();
    // Metrics are recorded from here on when the admin listener (which serves them at
    // /metrics) is on; with it off, nothing is recorded and nothing costs.
    if settings.admin.enabled && !yizhan_server::metrics::install() {
        tracing::warn!("cannot install the metrics recorder; /metrics will be empty");
    }
    // Binds first (as root: ports below 1024), then opens (and creates) the spool in
    // data_dir as the service account: a start that fails on a listener leaves nothing
    // behind, and root never works by path inside a directory the account owns.
    let bound = Server::listen(settings).await?;
    make_data_dir(&data_dir)?;
    become_service(&data_dir, account.as_ref())?;
    let server = bound.open().await?;
    let addresses: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    let admin = server
        .admin_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(listen = %addresses.join(" "), data_dir = %data_dir.display(), %admin, "ready");
    tracing::info!("ready; waiting for SIGTERM (stop) or SIGHUP (reload the configuration)");
    let shutdown = CancellationToken::new();
    let mut running = server.start(shutdown.clone())?;
    let reloader = running.reloader();
    let mut requests = running.reload_requests();
    let serving = tokio::spawn(running.wait());
    // Type=notify (dist/yizhan.service): ready once the listeners are bound and privileges
    // dropped. Nothing is sent when not started by systemd ($NOTIFY_SOCKET unset).
    systemd(&[sd_notify::NotifyState::Ready]);
    let signal = loop {
        let asked = async {
            match requests.as_mut() {
                Some(requests) => requests.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = signals.recv() => match signal {
                Signal::Stop(name) => break name,
                Signal::Reload => {
                    let _ = reload.apply(&reloader, "SIGHUP");
                }
            },
            answer = asked => match answer {
                Some(answer) => {
                    let _ = answer.send(reload.apply(&reloader, "yizhan reload"));
                }
                None => requests = None,
            },
        }
    };
    tracing::info!("{signal} received, shutting down");
    systemd(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    serving.await.context("server task failed")??;
    // The recordings of the last sessions reach the disk before the process ends.
    yizhan_server::record::flush();
    Ok(())
}

/// What a reload reads again: the same file, the same command-line overrides, the defaults of
/// the account that started the server.
pub struct Reload {
    /// The configuration file (absolute), or the embedded default.
    pub source: Source,
    /// `--listen`, `--data-dir`.
    pub overrides: Overrides,
    /// Whose default data directory applies.
    pub account: config::Account,
}

impl Reload {
    /// Reads and checks the configuration as at start (the TLS files must load), then makes it
    /// the one in force; logs the outcome. `Ok`: the settings that need a restart; `Err`: why
    /// the file was refused (every problem, one per line), the old configuration stays.
    fn apply(&self, reloader: &Reloader, why: &str) -> Result<Vec<String>, String> {
        systemd(&[sd_notify::NotifyState::Reloading, monotonic_now()]);
        tracing::info!(why, "reloading the configuration: {}", self.source);
        let outcome = self.load().and_then(|settings| {
            reloader
                .apply(settings)
                .map(|reloaded| reloaded.needs_restart)
                .map_err(|e| e.to_string())
        });
        match &outcome {
            Ok(needs_restart) => {
                let current = reloader.current();
                for line in config::summary(&current) {
                    tracing::info!("{line}");
                }
                raise_open_files_limit(current.smtp.max_connections);
                yizhan_server::listener::warn_unusable_submission(&current);
                for setting in needs_restart {
                    tracing::warn!(setting = %setting, "changed in the file, but only a restart applies it; the running value is kept");
                }
                tracing::info!(why, "configuration reloaded");
            }
            Err(problems) => {
                for line in problems.lines() {
                    tracing::error!("{line}");
                }
                tracing::error!(
                    why,
                    "reload refused; the configuration in force is unchanged"
                );
            }
        }
        systemd(&[sd_notify::NotifyState::Ready]);
        outcome
    }

    fn load(&self) -> Result<Settings, String> {
        let mut settings = config::load_as(&self.source, &self.account).map_err(|e| {
            let n = e.count();
            format!(
                "{e}\nconfiguration has {n} problem{}",
                if n == 1 { "" } else { "s" }
            )
        })?;
        self.overrides.apply(&mut settings);
        Ok(settings)
    }
}

/// Creates the data directory if it is missing (as the account that starts the server: its
/// parent is the administrator's).
fn make_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))
}

/// Once the listeners are bound and the keys read (as root): the data directory goes to the
/// service account, every privilege is dropped, and what an earlier umask left open in the
/// data directory is made private.
fn become_service(
    data_dir: &std::path::Path,
    account: Option<&privileges::Account>,
) -> Result<(), privileges::PrivilegeError> {
    if let Some(account) = account {
        let changed = privileges::give(data_dir, account)?;
        privileges::drop_to(account)?;
        tracing::info!(
            user = %account.name,
            uid = account.uid,
            gid = account.gid,
            data_dir_entries_given = changed,
            "privileges dropped"
        );
    }
    match private::tighten(data_dir) {
        Ok(changed) if !changed.is_empty() => tracing::warn!(
            paths = changed.len(),
            first = %changed[0].display(),
            "made files in the data directory private (no access for group or others)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot make the data directory private"),
    }
    Ok(())
}

/// Tells systemd about a state change (a no-op outside systemd); a failure is only logged.
fn systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `MONOTONIC_USEC`, which systemd 253 and later want with `RELOADING=1`.
fn monotonic_now() -> sd_notify::NotifyState<'static> {
    sd_notify::NotifyState::monotonic_usec_now()
        .unwrap_or(sd_notify::NotifyState::Status("reloading"))
}

/// Descriptors needed besides the connections: a delivery batch's files, the open folders of
/// the mailboxes delivered to lately (two each), the spool, outbound connections, listeners,
/// the control and submission sockets.
const SPARE_FILES: u64 = 1024 + 2 * yizhan_delivery::maildir::KNOWN_MAILBOXES as u64;

/// Raises the soft limit on open files up to the hard limit if it is lower than
/// `max_connections` needs (every connection is a descriptor; the usual soft limit is 1024),
/// and says so; warns if even the hard limit is too low.
fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = max_connections as u64 + SPARE_FILES;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let new = wanted.min(hard);
    if new > current {
        let raised = Rlimit {
            current: Some(new),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!("open files: soft limit raised from {current} to {new}"),
            Err(e) => tracing::warn!("open files: cannot raise the soft limit from {current}: {e}"),
        }
    }
    if new < wanted {
        tracing::warn!(
            "open files: the hard limit {hard} is below the {wanted} that max_connections = \
             {max_connections} needs; raise it (LimitNOFILE= in systemd, ulimit -Hn)"
        );
    }
}

/// What a signal asks for.
enum Signal {
    /// Shut down (named for the log).
    Stop(&'static str),
    /// Read the configuration again.
    #[cfg_attr(not(unix), allow(dead_code))]
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP, installed.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use tokio::signal::unix::{SignalKind, signal};

        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Waits for the next of SIGTERM, SIGINT and SIGHUP.
    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Ctrl-C where there are no Unix signals.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) -> Signal {
        // If Ctrl-C cannot be watched, stop rather than run unstoppable.
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop("Ctrl-C")
    }
}
