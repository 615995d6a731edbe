//! `yizhan serve`: runs the server with validated settings until SIGTERM or SIGINT.

use yizhan_server::settings::Settings;

use crate::config;

/// Logs the settings, then waits for SIGTERM or SIGINT and returns.
///
/// The listeners, connection driver and queue runner are wired in here as they land.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    for line in config::summary(&settings) {
        tracing::info!("{line}");
    }
    // Install the handlers before saying "ready", so a signal sent after it is never lost.
    let mut signals = Signals::install()?;
    tracing::info!(
        grace_secs = settings.shutdown_grace.as_secs(),
        "ready; waiting for SIGTERM or SIGINT"
    );
    let signal = signals.recv().await;
    tracing::info!("{signal} received, shutting down");
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
