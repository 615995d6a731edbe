//! `yizhan serve`: runs the server with validated settings until SIGTERM or SIGINT.

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
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    let signal = signals.recv().await;
    tracing::info!("{signal} received, shutting down");
    shutdown.cancel();
    serving.await.context("server task failed")??;
    Ok(())
}

/// SIGTERM and SIGINT, installed.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use tokio::signal::unix::{SignalKind, signal};

        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for the first of SIGTERM and SIGINT and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
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

    async fn recv(&mut self) -> &'static str {
        // If Ctrl-C cannot be watched, stop rather than run unstoppable.
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
