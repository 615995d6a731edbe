//! `yizhan serve`: runs the server with validated settings until SIGTERM or SIGINT; SIGHUP
//! reloads the TLS certificate and key.

use tokio_util::sync::CancellationToken;
use yizhan_server::listener::Server;
use yizhan_server::settings::Settings;

use crate::config;

/// Opens the spool, binds the listeners and serves until SIGTERM or SIGINT, then shuts down
/// gracefully (sessions in flight get `shutdown_grace` to finish, then 421).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    use anyhow::Context as _;

    for line in config::summary(&settings) {
        tracing::info!("{line}");
    }
    // Install the handlers before saying "ready", so a signal sent after it is never lost.
    let mut signals = Signals::install()?;
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let server = Server::bind(settings).await?;
    let addresses: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    tracing::info!(listen = %addresses.join(" "), data_dir = %data_dir.display(), "ready");
    tracing::info!("ready; waiting for SIGTERM (stop) or SIGHUP (reload TLS)");
    let tls = server.tls();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    let signal = loop {
        match signals.recv().await {
            Signal::Stop(name) => break name,
            Signal::Reload => match &tls {
                Some(store) => store.reload_and_log("SIGHUP"),
                None => tracing::info!("SIGHUP received; no [tls] to reload"),
            },
        }
    };
    tracing::info!("{signal} received, shutting down");
    shutdown.cancel();
    serving.await.context("server task failed")??;
    Ok(())
}

/// What a signal asks for.
enum Signal {
    /// Shut down (named for the log).
    Stop(&'static str),
    /// Reload the TLS certificate.
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
